/* The "ImageId,Label" reader of src/cli/answers.h. */
#include "cli/answers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IMAGES 100000000u /* far beyond any digit set; bounds the allocation */

/* A whole file into memory (NUL-terminated). */
static enum dg_status slurp(const char *path, char **text, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return dg_error(DG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t capacity = 1 << 16, used = 0;
    char *buf = malloc(capacity + 1);
    while (buf) {
        size_t got = fread(buf + used, 1, capacity - used, fp);
        used += got;
        if (used < capacity)
            break;
        char *grown = capacity > ((size_t)1 << 33) ? NULL : realloc(buf, 2 * capacity + 1);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        capacity *= 2;
    }
    int failed = ferror(fp);
    fclose(fp);
    if (!buf)
        return dg_error(DG_ERR_NOMEM, "%s: out of memory reading it", path);
    if (failed) {
        free(buf);
        return dg_error(DG_ERR_IO, "%s: read error", path);
    }
    buf[used] = '\0';
    *text = buf;
    *size = used;
    return DG_OK;
}

enum dg_status dg_answers_load(const char *path, uint8_t **labels_out, size_t *count_out)
{
    char *text = NULL;
    size_t size = 0;
    enum dg_status status = slurp(path, &text, &size);
    if (status != DG_OK)
        return status;
    const char *header = "ImageId,Label";
    size_t header_length = strlen(header);
    size_t line = 1;
    const char *p = text, *end = text + size;
    if (size >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* a UTF-8 byte order mark, as spreadsheets write */
    if ((size_t)(end - p) < header_length || memcmp(p, header, header_length) != 0 ||
        !(p[header_length] == '\n' || (p[header_length] == '\r' && p[header_length + 1] == '\n'))) {
        free(text);
        return dg_error(DG_ERR_INPUT,
                        "%s:1:1: expected the header 'ImageId,Label' (a Kaggle submission or "
                        "answers file)",
                        path);
    }
    p += header_length + (p[header_length] == '\r' ? 2 : 1);
    /* the rows: at most one per 4 bytes ("1,2\n") */
    size_t capacity = (size_t)(end - p) / 4 + 1, count = 0, max_id = 0;
    uint8_t *labels = malloc(capacity);
    uint8_t *seen = calloc(capacity, 1);
    if (!labels || !seen) {
        free(labels);
        free(seen);
        free(text);
        return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
    }
    while (p < end && status == DG_OK) {
        line++;
        const char *start = p;
        size_t id = 0;
        while (p < end && *p >= '0' && *p <= '9' && id <= MAX_IMAGES)
            id = id * 10 + (size_t)(*p++ - '0');
        if (p == start || id == 0 || id > MAX_IMAGES || *start == '0') {
            status =
                dg_error(DG_ERR_INPUT, "%s:%zu:1: expected an ImageId (1, 2, ...)", path, line);
            break;
        }
        if (p >= end || *p != ',') {
            status = dg_error(DG_ERR_INPUT, "%s:%zu:%zu: expected ',' after the ImageId", path,
                              line, (size_t)(p - start) + 1);
            break;
        }
        p++;
        if (p >= end || *p < '0' || *p > '9' || (p + 1 < end && p[1] != '\n' && p[1] != '\r')) {
            status = dg_error(DG_ERR_INPUT, "%s:%zu:%zu: expected a Label 0..9", path, line,
                              (size_t)(p - start) + 1);
            break;
        }
        uint8_t label = (uint8_t)(*p++ - '0');
        if (p < end && *p == '\r')
            p++;
        if (p < end && *p != '\n') {
            status = dg_error(DG_ERR_INPUT, "%s:%zu:%zu: expected the end of the line", path, line,
                              (size_t)(p - start) + 1);
            break;
        }
        if (p < end)
            p++;
        if (id > capacity) {
            status = dg_error(DG_ERR_INPUT,
                              "%s:%zu:1: ImageId %zu, but the file has room for at most %zu "
                              "rows: the ImageIds must be 1..N",
                              path, line, id, capacity);
            break;
        }
        if (seen[id - 1]) {
            status = dg_error(DG_ERR_INPUT, "%s:%zu:1: ImageId %zu appears twice", path, line, id);
            break;
        }
        seen[id - 1] = 1;
        labels[id - 1] = label;
        count++;
        if (id > max_id)
            max_id = id;
    }
    if (status == DG_OK && count == 0)
        status = dg_error(DG_ERR_INPUT, "%s: no rows after the header", path);
    if (status == DG_OK && max_id != count) {
        size_t missing = 0;
        while (seen[missing])
            missing++;
        status = dg_error(DG_ERR_INPUT,
                          "%s: ImageId %zu is missing (the ImageIds must be 1..%zu, each once)",
                          path, missing + 1, max_id);
    }
    free(seen);
    free(text);
    if (status != DG_OK) {
        free(labels);
        return status;
    }
    *labels_out = labels;
    *count_out = count;
    return DG_OK;
}
