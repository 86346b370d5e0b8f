/* Internals of src/io: a growable byte buffer with little-endian writers and readers, and
 * whole-file reading, shared by the model file and the checkpoint file. */
#ifndef DIGITS_IO_INTERNAL_H
#define DIGITS_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "digits/status.h"

struct buffer {
    unsigned char *data;
    size_t size, capacity;
};

static inline int buffer_put(struct buffer *b, const void *src, size_t n)
{
    if (b->size + n > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->size + n)
            capacity *= 2;
        unsigned char *data = realloc(b->data, capacity);
        if (!data)
            return -1;
        b->data = data;
        b->capacity = capacity;
    }
    memcpy(b->data + b->size, src, n);
    b->size += n;
    return 0;
}

static inline int put_u32(struct buffer *b, uint32_t v)
{
    unsigned char bytes[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                              (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    return buffer_put(b, bytes, 4);
}

static inline int put_f32(struct buffer *b, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    return put_u32(b, v);
}

static inline uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline float get_f32(const unsigned char *p)
{
    uint32_t v = get_u32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

#include "digits/model.h"

#define DG_IO_LAYER_BYTES 20 /* u32 kind, units, kernel, relu, f32 rate */

/* Appends the layer count and table; nonzero when out of memory. */
int dg_io_put_layers(struct buffer *b, const struct dg_model *model);
/* Checks a stored layer table (layer_count entries at `table`) against the reference network
 * and the stored parameter count against it, and builds `model` from it; DG_ERR_INPUT saying
 * which when they differ ("corrupted KIND file"). */
enum dg_status dg_io_check_layers(const char *path, const char *kind, const unsigned char *table,
                                  uint32_t layer_count, uint64_t param_count,
                                  struct dg_model *model);
/* Writes size bytes to path atomically (dg_atomic_open / commit). */
enum dg_status dg_io_write_atomic(const char *path, const void *data, size_t size);
/* 1..DG_MAX_MEMBERS members of one network (the same layer table), or an error naming path. */
enum dg_status dg_io_check_members(const char *path, const struct dg_model *members, int count);

/* The settings `text` ("key=value" lines) of a KIND file against the CLI's ranges for the
 * settings it has an option for (epochs, batch, lr, val_split, a nonzero early_stop; the
 * DG_TRAIN_* bounds of digits/train.h): DG_OK when each is absent or in range, otherwise
 * DG_ERR_INPUT "PATH: corrupted KIND file (epochs=2000000000: --epochs expects an integer in
 * 1..100000)", the CLI's own words. */
enum dg_status dg_io_check_setting_ranges(const char *path, const char *kind, const char *text);

/* Reads all of `path` (at most 2 GiB) into a malloc'ed buffer; `kind` names the file in
 * messages ("model", "checkpoint"). */
/* Appends the CRC32 of everything in b (unless failed: out of memory already), writes b
 * atomically to path and frees it; "out of memory while writing the WHAT" on failure. */
enum dg_status dg_io_finish_file(const char *path, const char *what, struct buffer *b, int failed);

/* A whole file of `kind` ("model", "checkpoint") read back: `expected` bytes (a shorter one is
 * truncated, a longer one corrupted), its last four the CRC32 of the rest. */
enum dg_status dg_io_check_size_and_crc(const char *path, const char *kind,
                                        const unsigned char *data, size_t size, size_t expected);

/* What a file that is not a model file is (a checkpoint, safetensors, HDF5, a ZIP or pickle,
 * ONNX, gzip) and the command that takes it, in words for a message (a static buffer). */
const char *dg_io_what_file_is(const char *path, const unsigned char *data, size_t size);

enum dg_status dg_io_read_whole(const char *path, const char *kind, unsigned char **data,
                                size_t *size);

#endif
