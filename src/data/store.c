/* The growing image store of a load (N x 784 images and the labels, from the caller's
 * allocator), and what is done with a loaded dataset: its format's name, truncation, its
 * fingerprint and freeing it. */
#include "data/data_internal.h"

#include <string.h>

/* Room for at least `rows` images: exactly that many at first, at least double after. */
enum dg_status dg_data_store_reserve(struct store *st, size_t rows, const char *path)
{
    if (rows <= st->capacity)
        return DG_OK;
    size_t capacity = st->capacity * 2;
    if (capacity < rows)
        capacity = rows;
    uint8_t *images = st->alloc.alloc(capacity * DG_PIXELS, st->alloc.ctx);
    uint8_t *labels = st->labelled ? st->alloc.alloc(capacity, st->alloc.ctx) : NULL;
    if (!images || (st->labelled && !labels)) {
        if (images)
            st->alloc.free(images, st->alloc.ctx);
        if (labels)
            st->alloc.free(labels, st->alloc.ctx);
        return dg_error(DG_ERR_NOMEM, "%s: out of memory for %zu images", path, capacity);
    }
    if (st->count) {
        memcpy(images, st->images, st->count * DG_PIXELS);
        if (labels)
            memcpy(labels, st->labels, st->count);
    }
    if (st->images)
        st->alloc.free(st->images, st->alloc.ctx);
    if (st->labels)
        st->alloc.free(st->labels, st->alloc.ctx);
    st->images = images;
    st->labels = labels;
    st->capacity = capacity;
    return DG_OK;
}

void dg_data_store_release(struct store *st)
{
    if (st->images)
        st->alloc.free(st->images, st->alloc.ctx);
    if (st->labels)
        st->alloc.free(st->labels, st->alloc.ctx);
    st->images = st->labels = NULL;
    st->count = st->capacity = 0;
}

const char *dg_data_format_name(enum dg_data_format format)
{
    switch (format) {
    case DG_FORMAT_CSV_TRAIN:
        return "csv (train layout)";
    case DG_FORMAT_CSV_TEST:
        return "csv (test layout)";
    case DG_FORMAT_IDX:
        return "idx";
    }
    return "unknown";
}

void dg_dataset_truncate(struct dg_dataset *dataset, size_t count)
{
    if (count < dataset->count)
        dataset->count = count;
}

void dg_dataset_free(struct dg_dataset *dataset)
{
    if (dataset->images)
        dataset->allocator.free(dataset->images, dataset->allocator.ctx);
    if (dataset->labels)
        dataset->allocator.free(dataset->labels, dataset->allocator.ctx);
    memset(dataset, 0, sizeof *dataset);
}

void dg_dataset_fingerprint(const struct dg_dataset *dataset, uint64_t *rows, uint32_t *crc)
{
    uint32_t c = 0; /* zlib's crc32(0, Z_NULL, 0) */
    size_t bytes = dataset->count * (size_t)DG_PIXELS;
    if (bytes)
        c = dg_crc32(c, dataset->images, bytes);
    if (dataset->labels)
        c = dg_crc32(c, dataset->labels, dataset->count);
    *rows = dataset->count;
    *crc = c;
}
