/* Temporary file beside the destination, renamed over it on success, removed on failure. */
#define _POSIX_C_SOURCE 200809L
#include "digits/io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum dg_status dg_atomic_open(struct dg_atomic_file *file, const char *path)
{
    memset(file, 0, sizeof *file);
    if (strcmp(path, "-") == 0) {
        file->fp = stdout;
        return DG_OK;
    }
    if (strlen(path) + 16 > sizeof file->tmp_path)
        return dg_error(DG_ERR_USAGE, "%s: path too long", path);
    snprintf(file->path, sizeof file->path, "%s", path);
    snprintf(file->tmp_path, sizeof file->tmp_path, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(file->tmp_path);
    if (fd < 0) {
        file->tmp_path[0] = '\0';
        return dg_error(DG_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    file->fp = fdopen(fd, "wb");
    if (!file->fp) {
        int saved = errno;
        close(fd);
        unlink(file->tmp_path);
        file->tmp_path[0] = '\0';
        return dg_error(DG_ERR_IO, "%s: cannot open: %s", path, strerror(saved));
    }
    return DG_OK;
}

enum dg_status dg_atomic_commit(struct dg_atomic_file *file)
{
    if (file->fp == stdout) {
        file->fp = NULL;
        if (fflush(stdout) != 0)
            return dg_error(DG_ERR_IO, "stdout: write failed: %s", strerror(errno));
        return DG_OK;
    }
    int failed = ferror(file->fp) || fflush(file->fp) != 0 || fsync(fileno(file->fp)) != 0;
    int saved = errno;
    failed |= fclose(file->fp) != 0;
    file->fp = NULL;
    if (failed) {
        dg_atomic_abort(file);
        return dg_error(DG_ERR_IO, "%s: write failed: %s", file->path, strerror(saved));
    }
    if (rename(file->tmp_path, file->path) != 0) {
        saved = errno;
        dg_atomic_abort(file);
        return dg_error(DG_ERR_IO, "%s: cannot rename into place: %s", file->path,
                        strerror(saved));
    }
    file->tmp_path[0] = '\0';
    return DG_OK;
}

void dg_atomic_abort(struct dg_atomic_file *file)
{
    if (file->fp && file->fp != stdout)
        fclose(file->fp);
    file->fp = NULL;
    if (file->tmp_path[0])
        unlink(file->tmp_path);
    file->tmp_path[0] = '\0';
}
