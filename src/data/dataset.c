/* The data layer's entry points: Kaggle CSV (train / test layouts) and MNIST IDX, plain or
 * gzip, told apart by content. Streams the file through one bounded buffer (1 MiB plus
 * padding; no whole-file copy, no per-row allocation) into one uint8 image store (N x 784,
 * row-major, pixel k = row*28 + col) and a label array, both from the caller's allocator,
 * sized once from the (uncompressed) file size or grown geometrically. The pieces:
 *   source.c    the byte source (plain file or gzip stream; crc32.c the CRC-32 it checks)
 *   store.c     the growing image store, truncation, the fingerprint, freeing
 *   csv.c       CSV rows: the branch-free block path, the careful parser and its messages
 *   csv_load.c  the parallel CSV load (the calling thread reads, workers parse)
 *   idx.c       MNIST IDX images and labels
 * Errors name the problem: "FILE:LINE:COL: message" (text) or "FILE: byte OFFSET: message"
 * (binary). */
#include "data/data_internal.h"
#include "data/data_zip.h"

#include <stdlib.h>
#include <string.h>

enum dg_status dg_dataset_load(const char *path, const char *labels_path,
                               const struct dg_allocator *allocator, struct dg_dataset *out)
{
    return dg_dataset_load_threads(path, labels_path, allocator, 0, out);
}

enum dg_status dg_dataset_load_threads(const char *path, const char *labels_path,
                                       const struct dg_allocator *allocator, int threads,
                                       struct dg_dataset *out)
{
    struct source src;
    struct store st;
    unsigned char *buf = NULL;
    enum dg_data_format format = DG_FORMAT_CSV_TRAIN;
    memset(out, 0, sizeof *out);
    memset(&st, 0, sizeof st);
    st.alloc = allocator ? *allocator : *dg_allocator_default();
    enum dg_status status = dg_data_source_open(&src, path);
    if (status != DG_OK)
        goto fail;
    buf = calloc(1, CHUNK_BYTES + CHUNK_PAD);
    if (!buf) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    size_t have;
    if ((status = dg_data_source_read(&src, buf, CHUNK_BYTES, &have)) != DG_OK)
        goto fail;
    if (!src.gzipped && dg_zip_is_archive(buf, have)) {
        /* Kaggle's digit-recognizer.zip as downloaded: say what it holds and to unzip it */
        status = dg_zip_refuse(path);
        goto fail;
    }
    if (have >= 4 && dg_data_be32(buf) == IDX_IMAGES_MAGIC) {
        format = DG_FORMAT_IDX;
        if ((status = dg_data_load_idx_images(&src, buf, have, &st)) != DG_OK)
            goto fail;
        if (labels_path && (status = dg_data_load_idx_labels(labels_path, &st)) != DG_OK)
            goto fail;
    } else if (have >= 2 && buf[0] == 0 && buf[1] == 0) {
        /* no text starts with NUL bytes: an IDX file of another kind, or a broken one */
        if (have < 4)
            status = dg_error(DG_ERR_INPUT,
                              "%s: byte %zu: truncated IDX header (16 bytes "
                              "expected)",
                              path, have);
        else
            status = dg_error(
                DG_ERR_INPUT,
                "%s: byte 0: IDX magic 0x%08x is not an image file "
                "(expected 0x%08x: 28x28 unsigned bytes%s)",
                path, dg_data_be32(buf), IDX_IMAGES_MAGIC,
                dg_data_be32(buf) == IDX_LABELS_MAGIC ? "; label files go with --labels" : "");
        goto fail;
    } else {
        if (labels_path) {
            status = dg_error(DG_ERR_USAGE,
                              "%s: --labels is for MNIST IDX images, but this is "
                              "a CSV file (its labels are its first column)",
                              path);
            goto fail;
        }
        if ((status = dg_data_load_csv(&src, buf, have, &st, &format, threads)) != DG_OK)
            goto fail;
    }
    out->count = st.count;
    out->images = st.images;
    out->labels = st.labelled ? st.labels : NULL;
    out->format = format;
    out->gzipped = src.gzipped;
    out->bytes_parsed = src.produced;
    out->bytes_on_disk = src.disk_bytes;
    out->allocator = st.alloc;
    free(buf);
    dg_data_source_close(&src);
    return DG_OK;
fail:
    free(buf);
    dg_data_source_close(&src);
    dg_data_store_release(&st);
    return status;
}
