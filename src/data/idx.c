/* MNIST IDX files (raw or gzip): idx3 images of 28x28 unsigned bytes, idx1 labels 0..9,
 * bodies exactly as long as their headers declare; refusals say "FILE: byte OFFSET: message". */
#include "data/data_internal.h"

#include <stdlib.h>
#include <string.h>

static enum dg_status idx_short(const struct source *src, size_t header, size_t declared,
                                size_t present, const char *what)
{
    return dg_error(DG_ERR_INPUT,
                    "%s: byte %zu: body shorter than its header says (%zu bytes of "
                    "%s declared, %zu present)",
                    src->path, header + present, declared, what, present);
}

static enum dg_status idx_trailing(const struct source *src, size_t header, size_t declared,
                                   const char *what)
{
    return dg_error(DG_ERR_INPUT, "%s: byte %zu: trailing bytes after the %s the header declares",
                    src->path, header + declared, what);
}

/* Copies exactly `bytes` from the source (buf holds `have` already-read bytes starting at
 * offset `offset` of the stream) to dst; refuses a short body or trailing bytes. */
static enum dg_status idx_body(struct source *src, unsigned char *buf, size_t have, size_t header,
                               uint8_t *dst, size_t bytes, const char *what)
{
    enum dg_status status;
    size_t copied = have > header ? have - header : 0;
    if (copied > bytes)
        return idx_trailing(src, header, bytes, what);
    memcpy(dst, buf + header, copied);
    while (copied < bytes) {
        size_t got;
        if ((status = dg_data_source_read(src, dst + copied, bytes - copied, &got)) != DG_OK)
            return status;
        if (got == 0)
            return idx_short(src, header, bytes, copied, what);
        copied += got;
    }
    size_t extra;
    unsigned char probe[1];
    if ((status = dg_data_source_read(src, probe, 1, &extra)) != DG_OK)
        return status;
    if (extra)
        return idx_trailing(src, header, bytes, what);
    return DG_OK;
}

enum dg_status dg_data_load_idx_images(struct source *src, unsigned char *buf, size_t have,
                                       struct store *st)
{
    if (have < 16)
        return dg_error(DG_ERR_INPUT, "%s: byte %zu: truncated IDX header (16 bytes expected)",
                        src->path, have);
    uint32_t count = dg_data_be32(buf + 4), rows = dg_data_be32(buf + 8),
             cols = dg_data_be32(buf + 12);
    if (rows != 28 || cols != 28)
        return dg_error(DG_ERR_INPUT, "%s: byte 8: images are %ux%u, expected 28x28", src->path,
                        rows, cols);
    if (count == 0)
        return dg_error(DG_ERR_INPUT, "%s: byte 4: the IDX file holds no images", src->path);
    size_t body = (size_t)count * DG_PIXELS;
    enum dg_status status;
    /* a body that cannot be there is refused before the store is allocated */
    if (!src->gzipped && src->disk_bytes) {
        if (src->disk_bytes < 16 + body)
            return idx_short(src, 16, body, src->disk_bytes - 16, "images");
        if (src->disk_bytes > 16 + body)
            return idx_trailing(src, 16, body, "images");
    }
    if (src->gzipped && (16 + body) / MAX_DEFLATE_RATIO > src->disk_bytes) {
        size_t present = have - 16, got;
        do {
            if ((status = dg_data_source_read(src, buf, CHUNK_BYTES, &got)) != DG_OK)
                return status;
            present += got;
        } while (got);
        return idx_short(src, 16, body, present, "images");
    }
    status = dg_data_store_reserve(st, count, src->path);
    if (status != DG_OK)
        return status;
    if ((status = idx_body(src, buf, have, 16, st->images, (size_t)count * DG_PIXELS, "images")) !=
        DG_OK)
        return status;
    st->count = count;
    return DG_OK;
}

/* Reads an IDX1 label file into st->labels (allocated here); count must match. */
enum dg_status dg_data_load_idx_labels(const char *path, struct store *st)
{
    struct source src;
    unsigned char *buf = NULL;
    enum dg_status status = dg_data_source_open(&src, path);
    if (status != DG_OK)
        goto done;
    buf = malloc(4096);
    if (!buf) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t have;
    if ((status = dg_data_source_read(&src, buf, 8, &have)) != DG_OK)
        goto done;
    if (have < 8) {
        status = dg_error(DG_ERR_INPUT, "%s: byte %zu: %s", path, have,
                          have == 0 ? "empty file" : "truncated IDX header (8 bytes expected)");
        goto done;
    }
    uint32_t magic = dg_data_be32(buf);
    if (magic != IDX_LABELS_MAGIC) {
        status = dg_error(DG_ERR_INPUT,
                          "%s: byte 0: not an IDX label file (magic 0x%08x, "
                          "expected 0x%08x)",
                          path, magic, IDX_LABELS_MAGIC);
        goto done;
    }
    uint32_t count = dg_data_be32(buf + 4);
    if (count != st->count) {
        status =
            dg_error(DG_ERR_INPUT, "%s: byte 4: %u labels for %zu images", path, count, st->count);
        goto done;
    }
    st->labels = st->alloc.alloc(count, st->alloc.ctx);
    if (!st->labels) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    st->labelled = 1;
    if ((status = idx_body(&src, buf, 8, 8, st->labels, count, "labels")) != DG_OK)
        goto done;
    for (uint32_t i = 0; i < count; i++)
        if (st->labels[i] > 9) {
            status = dg_error(DG_ERR_INPUT, "%s: byte %u: label %u outside 0..9", path, 8 + i,
                              st->labels[i]);
            goto done;
        }
done:
    free(buf);
    dg_data_source_close(&src);
    return status;
}
