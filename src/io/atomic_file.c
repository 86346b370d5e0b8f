/* Temporary file beside the destination, renamed over it on success, removed on failure. The
 * temporary file is created with open(..., O_CREAT | O_EXCL, 0666), so the umask applies as it
 * would to a plain create (mkstemp would make it 0600 whatever the umask); when the
 * destination exists, its mode is kept. The temporary is listed in the process-wide list of
 * open temporaries (src/io/temporaries.c) from its creation until the rename or the abort, so
 * that SIGINT/SIGTERM removes it. */
#define _POSIX_C_SOURCE 200809L
#include "digits/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A fresh "PATH.tmp.XXXXXX" opened with O_EXCL; -1 with errno set when none can be made. */
static int create_temporary(char *tmp_path, size_t size, const char *path)
{
    static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t state = (uint64_t)now.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)now.tv_sec ^
                     ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)tmp_path;
    for (int attempt = 0; attempt < 100; attempt++) {
        char suffix[7];
        for (int i = 0; i < 6; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            suffix[i] = letters[(state >> 33) % (sizeof letters - 1)];
        }
        suffix[6] = '\0';
        snprintf(tmp_path, size, "%s.tmp.%s", path, suffix);
        int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

static void unlist(struct dg_atomic_file *file)
{
    if (file->slot > 0)
        dg_temporary_remove(file->slot - 1);
    file->slot = 0;
}

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
    struct stat target;
    if (stat(path, &target) == 0 && S_ISDIR(target.st_mode))
        return dg_error_path(path, "write", 1, EISDIR);
    if (stat(path, &target) == 0 && !S_ISREG(target.st_mode)) {
        /* a device or a FIFO: renaming over it would replace it; write it in place */
        file->fp = fopen(path, "wb");
        if (!file->fp)
            return dg_error_path(path, "open", 1, errno);
        file->direct = 1;
        return DG_OK;
    }
    /* listed before the file exists (signals held off in this thread until it is), so that
     * SIGINT/SIGTERM finds every temporary there is */
    int slot = dg_temporary_begin();
    if (slot < 0 && dg_temporaries_ending())
        return dg_error(DG_ERR_IO, "%s: not written: the process is ending on a signal", path);
    if (slot < 0)
        return dg_error(DG_ERR_IO,
                        "%s: cannot create: more than %d temporary files open at once (the "
                        "list that SIGINT/SIGTERM cleans up is full)",
                        path, DG_TEMPORARIES_MAX);
    int fd = create_temporary(file->tmp_path, sizeof file->tmp_path, path);
    int saved = errno;
    int listed = dg_temporary_end(slot, fd >= 0 ? file->tmp_path : NULL);
    if (fd >= 0 && listed < 0) {
        close(fd);
        unlink(file->tmp_path);
        fd = -1;
        saved = ENAMETOOLONG;
    }
    if (fd < 0) {
        file->tmp_path[0] = '\0';
        return dg_error_path(path, "create", 1, saved);
    }
    file->slot = listed + 1;
    /* replacing a file: keep its permissions */
    struct stat existing;
    if (stat(path, &existing) == 0 && S_ISREG(existing.st_mode) &&
        fchmod(fd, existing.st_mode & 07777) != 0) {
        saved = errno;
        close(fd);
        unlink(file->tmp_path);
        file->tmp_path[0] = '\0';
        unlist(file);
        return dg_error(DG_ERR_IO, "%s: cannot keep its mode: %s", path, strerror(saved));
    }
    file->fp = fdopen(fd, "wb");
    if (!file->fp) {
        saved = errno;
        close(fd);
        unlink(file->tmp_path);
        file->tmp_path[0] = '\0';
        unlist(file);
        return dg_error(DG_ERR_IO, "%s: cannot open: %s", path, strerror(saved));
    }
    return DG_OK;
}

enum dg_status dg_atomic_finish(struct dg_atomic_file *file)
{
    if (file->finished)
        return DG_OK;
    if (file->fp == stdout) {
        file->fp = NULL;
        file->finished = 1;
        if (ferror(stdout) || fflush(stdout) != 0)
            return dg_error(DG_ERR_IO, "stdout: write failed: %s", strerror(errno ? errno : EIO));
        return DG_OK;
    }
    if (!file->fp)
        return dg_error(DG_ERR_IO, "%s: not open", file->path);
    if (file->direct) {
        int failed = ferror(file->fp) || fflush(file->fp) != 0;
        int saved = errno;
        failed |= fclose(file->fp) != 0;
        file->fp = NULL;
        if (failed)
            return dg_error(DG_ERR_IO, "%s: write failed: %s", file->path,
                            strerror(saved ? saved : EIO));
        file->finished = 1;
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
    file->finished = 1;
    return DG_OK;
}

enum dg_status dg_atomic_commit(struct dg_atomic_file *file)
{
    enum dg_status status = dg_atomic_finish(file);
    if (status != DG_OK)
        return status;
    if (!file->tmp_path[0]) /* stdout */
        return DG_OK;
    int slot = file->slot - 1;
    if (!dg_temporary_commit_begin(slot)) {
        /* the SIGINT/SIGTERM handler, on another thread, removed the temporary: the process
         * ends by the signal, the destination as it was */
        file->tmp_path[0] = '\0';
        unlist(file);
        return dg_error(DG_ERR_IO, "%s: not written: the process is ending on a signal",
                        file->path);
    }
    if (rename(file->tmp_path, file->path) != 0) {
        int saved = errno;
        dg_temporary_commit_end(slot, 0);
        dg_atomic_abort(file);
        return dg_error(DG_ERR_IO, "%s: cannot rename into place: %s", file->path, strerror(saved));
    }
    file->slot = 0;
    dg_temporary_commit_end(slot, 1);
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
    unlist(file);
}
