/* The "ImageId,Label" reader of include/digits/io.h (eval --answers). */
#include "digits/io.h"

#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

#define MAX_IMAGES 100000000u /* far beyond any digit set; bounds the allocation */

enum dg_status dg_answers_load(const char *path, uint8_t **labels_out, size_t *count_out)
{
    unsigned char *text = NULL;
    size_t size = 0;
    enum dg_status status = dg_io_read_whole(path, "answers", &text, &size);
    if (status != DG_OK)
        return status;
    const char *header = "ImageId,Label";
    size_t header_length = strlen(header);
    size_t line = 1;
    const char *p = (const char *)text, *end = p + size;
    if (size >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* a UTF-8 byte order mark, as spreadsheets write */
    size_t left = (size_t)(end - p);
    if (left <= header_length || memcmp(p, header, header_length) != 0 ||
        !(p[header_length] == '\n' ||
          (p[header_length] == '\r' && left > header_length + 1 && p[header_length + 1] == '\n'))) {
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
