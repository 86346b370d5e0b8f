/* The data layer: Kaggle digit-recognizer CSV (train and test layouts, plain or gzip) and
 * MNIST IDX files (raw or gzip), told apart by content, parsed strictly into one contiguous
 * uint8 image store of N x 784 (row-major, pixel k = row*28 + col) plus labels. */
#ifndef DIGITS_DATA_H
#define DIGITS_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "digits/alloc.h"
#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The images: DG_IMAGE_SIDE x DG_IMAGE_SIDE pixels, DG_PIXELS in all. */
#define DG_IMAGE_SIDE 28
#define DG_PIXELS (DG_IMAGE_SIDE * DG_IMAGE_SIDE)
#define DG_CLASSES 10

/* ---- datasets ---- */

enum dg_data_format {
    DG_FORMAT_CSV_TRAIN, /* header label,pixel0..pixel783 */
    DG_FORMAT_CSV_TEST,  /* header pixel0..pixel783 */
    DG_FORMAT_IDX,       /* idx3 images (+ idx1 labels via labels_path) */
};

struct dg_dataset {
    size_t count;    /* number of images */
    uint8_t *images; /* (count, 784), from `allocator` */
    uint8_t *labels; /* (count) 0..9, or NULL when unlabelled; from `allocator` */
    enum dg_data_format format;
    int gzipped;          /* the images file was gzip-compressed */
    size_t bytes_parsed;  /* uncompressed bytes of the images file */
    size_t bytes_on_disk; /* size of the images file as stored */
    struct dg_allocator allocator;
};

/* Loads `path` (CSV or IDX, plain or gzip). `labels_path` (may be NULL) names an IDX1 label
 * file, required for labels with IDX images and refused with CSV. `allocator` may be NULL
 * (malloc). On an input error returns DG_ERR_INPUT with "FILE:LINE:COL: message" (for binary
 * files "FILE: byte OFFSET: message"); `out` is then left empty. */
enum dg_status dg_dataset_load(const char *path, const char *labels_path,
                               const struct dg_allocator *allocator, struct dg_dataset *out);

/* dg_dataset_load with `threads` threads parsing a CSV (<= 0: $DIGITS_DATA_THREADS when set,
 * else the online CPUs; at most 16, and no more than the file has 1 MiB buffers). Gzip input
 * is inflated by the calling thread while the others parse. The store, the labels and every
 * error message are the same for every thread count; the allocator is only called from the
 * calling thread. */
enum dg_status dg_dataset_load_threads(const char *path, const char *labels_path,
                                       const struct dg_allocator *allocator, int threads,
                                       struct dg_dataset *out);

/* Keeps only the first `count` images (no-op when count >= out->count). */
void dg_dataset_truncate(struct dg_dataset *dataset, size_t count);

void dg_dataset_free(struct dg_dataset *dataset);

/* "csv (train layout)", "csv (test layout)", "idx". */
const char *dg_data_format_name(enum dg_data_format format);

/* Rows and CRC32 of the images (N x 784) then the labels. */
void dg_dataset_fingerprint(const struct dg_dataset *dataset, uint64_t *rows, uint32_t *crc);

/* CRC-32 (gzip's; the same value as zlib's crc32(crc, p, n)), with carry-less multiplies
 * where the CPU has them. */
uint32_t dg_crc32(uint32_t crc, const unsigned char *p, size_t n);

#ifdef __cplusplus
}
#endif

#endif
