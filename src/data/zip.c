/* ZIP archives given as data (Kaggle's digit-recognizer.zip): named for what they are, with the
 * files they hold, and the user told to unzip them. Only the central directory is read (at the
 * end of the file), never the compressed data. */
#define _POSIX_C_SOURCE 200809L
#include "data/data_zip.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EOCD_BYTES 22                   /* end of central directory record, without comment */
#define EOCD_SEARCH (EOCD_BYTES + 65535) /* the comment is at most 65535 bytes */
#define MAX_DIRECTORY (4u << 20)         /* the central directory read at most */
#define MAX_LISTED 8                     /* names said in the message */

static unsigned le16(const unsigned char *p)
{
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int dg_zip_is_archive(const unsigned char *bytes, size_t size)
{
    return size >= 4 && bytes[0] == 'P' && bytes[1] == 'K' &&
           ((bytes[2] == 3 && bytes[3] == 4) || (bytes[2] == 5 && bytes[3] == 6));
}

/* The names of the files in the archive at path ("train.csv, test.csv, ..."), into names;
 * the count of entries, or -1 when the directory cannot be read (a truncated archive). */
static int list_names(const char *path, char *names, size_t size)
{
    names[0] = '\0';
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    int count = -1;
    unsigned char *tail = NULL, *dir = NULL;
    if (fseek(fp, 0, SEEK_END) != 0)
        goto done;
    long file_size = ftell(fp);
    if (file_size < EOCD_BYTES)
        goto done;
    long tail_size = file_size < EOCD_SEARCH ? file_size : EOCD_SEARCH;
    tail = malloc((size_t)tail_size);
    if (!tail || fseek(fp, file_size - tail_size, SEEK_SET) != 0 ||
        fread(tail, 1, (size_t)tail_size, fp) != (size_t)tail_size)
        goto done;
    long at = tail_size - EOCD_BYTES;
    while (at >= 0 && le32(tail + at) != 0x06054b50u)
        at--;
    if (at < 0)
        goto done;
    unsigned entries = le16(tail + at + 10);
    uint32_t dir_size = le32(tail + at + 12), dir_offset = le32(tail + at + 16);
    if (dir_size > MAX_DIRECTORY || (long)dir_offset + (long)dir_size > file_size)
        goto done;
    dir = malloc(dir_size ? dir_size : 1);
    if (!dir || fseek(fp, (long)dir_offset, SEEK_SET) != 0 ||
        fread(dir, 1, dir_size, fp) != dir_size)
        goto done;
    size_t pos = 0, used = 0;
    count = 0;
    for (unsigned e = 0; e < entries && pos + 46 <= dir_size; e++) {
        if (le32(dir + pos) != 0x02014b50u)
            break;
        unsigned name_length = le16(dir + pos + 28), extra = le16(dir + pos + 30),
                 comment = le16(dir + pos + 32);
        if (pos + 46 + name_length > dir_size)
            break;
        const unsigned char *name = dir + pos + 46;
        count++;
        if (count <= MAX_LISTED && used + name_length + 8 < size) {
            used += (size_t)snprintf(names + used, size - used, "%s", count > 1 ? ", " : "");
            for (unsigned i = 0; i < name_length; i++)
                names[used++] = name[i] >= 0x20 && name[i] < 0x7f ? (char)name[i] : '?';
            names[used] = '\0';
        }
        pos += 46 + (size_t)name_length + extra + comment;
    }
    if (count > MAX_LISTED && used + 8 < size)
        snprintf(names + used, size - used, ", ...");
done:
    free(tail);
    free(dir);
    fclose(fp);
    return count;
}

enum dg_status dg_zip_refuse(const char *path)
{
    char names[512];
    int count = list_names(path, names, sizeof names);
    if (count > 0)
        return dg_error(DG_ERR_INPUT,
                        "%s: a ZIP archive holding %s, not a CSV or IDX file; unzip it first "
                        "(unzip %s) and give the file inside: train.csv to train, eval or "
                        "report, test.csv to predict",
                        path, names, path);
    return dg_error(DG_ERR_INPUT,
                    "%s: a ZIP archive (its directory could not be read: truncated?), not a CSV "
                    "or IDX file; unzip it and give the file inside",
                    path);
}
