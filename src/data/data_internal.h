/* What the files of the data layer share: the byte source (source.c), the growing image store
 * (store.c), the CSV row parser (csv.c) and its parallel load (csv_load.c), IDX (idx.c), the
 * fast CRC-32 (crc32.c); dataset.c holds the entry points. */
#ifndef DIGITS_DATA_INTERNAL_H
#define DIGITS_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "digits/data.h"

#define CHUNK_BYTES (1u << 20)        /* the bounded read buffer */
#define CHUNK_PAD 128                 /* readable bytes past the data (word-at-a-time parsing) */
#define MIN_ROW_BYTES (2 * DG_PIXELS) /* "0,0,...,0\n": bounds the row count from the size */
#define MAX_DEFLATE_RATIO 1032u       /* deflate expands at most about 1032:1 */
/* an empty line inside the file (PATH, LINE): the serial parse's words and the loader's */
#define DG_EMPTY_LINE_FORMAT                                                                       \
    "%s:%zu:1: empty line (remove it: only the file's last line may be empty)"
#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u

/* ---- CRC-32 (crc32.c) ---- */

typedef uint32_t (*dg_data_crc32_fn)(uint32_t crc, const unsigned char *p, size_t n);

/* dg_crc32 where the CPU has carry-less multiplies; DIGITS_DATA_GENERIC=1 keeps zlib's. */
dg_data_crc32_fn dg_data_crc32_choose(void);

/* ---- a byte source: a plain file or a gzip stream, read in chunks (source.c) ---- */

struct source {
    const char *path;
    int fd;
    int gzipped;
    int gz_done; /* the last gzip member ended and no input follows */
    z_stream z;  /* raw deflate */
    int z_ready;
    unsigned char *in; /* compressed input (gzip only) */
    size_t in_offset;  /* compressed bytes consumed so far, for messages */
    size_t disk_bytes;
    size_t produced;       /* uncompressed bytes delivered */
    size_t size_hint;      /* expected uncompressed size (0: unknown) */
    unsigned char peek[2]; /* the first bytes of a plain file, read to tell gzip apart */
    size_t peek_len;
    /* the gzip member being read */
    int gz_phase, gz_step; /* GZ_*, and the H_* or T_* field within it */
    unsigned gz_have;      /* bytes of a fixed-size field taken so far */
    uint32_t gz_hold;      /* their little-endian value */
    unsigned gz_flags;     /* CM | FLG << 8 */
    uint32_t gz_extra;     /* FEXTRA bytes still to skip */
    uint32_t gz_hcrc;      /* CRC-32 of the header so far (for FHCRC) */
    uint32_t gz_crc;       /* CRC-32 of the member's data so far */
    uint32_t gz_size;      /* its length mod 2^32 */
    dg_data_crc32_fn crc32;
};

enum dg_status dg_data_source_open(struct source *s, const char *path);
void dg_data_source_close(struct source *s);
/* Reads up to cap uncompressed bytes into buf; *got = 0 at the end. */
enum dg_status dg_data_source_read(struct source *s, unsigned char *buf, size_t cap, size_t *got);

/* ---- the growing image store (store.c) ---- */

struct store {
    struct dg_allocator alloc;
    uint8_t *images;
    uint8_t *labels;
    size_t count, capacity;
    int labelled;
};

/* Room for at least `rows` images: exactly that many at first, at least double after. */
enum dg_status dg_data_store_reserve(struct store *st, size_t rows, const char *path);
void dg_data_store_release(struct store *st);

/* ---- CSV rows (csv.c) ---- */

typedef int (*dg_data_block_pixels_fn)(const unsigned char *p0, const unsigned char *end,
                                       uint8_t *image);

struct csv {
    const char *path;
    size_t line;  /* 1-based line number of the row being parsed */
    int labelled; /* train layout */
    int fields;   /* 785 or 784 */
    dg_data_block_pixels_fn block_pixels;
};

/* The block parser: AVX2 where the CPU has it; DIGITS_DATA_GENERIC=1 forces the portable
 * masks (the tests run both). */
dg_data_block_pixels_fn dg_data_csv_choose_block_pixels(void);
/* One data row, the complete line [line, eol): *eol is '\n' and 64 bytes past it are
 * readable. Parses it into image (and label), or names the exact error. */
enum dg_status dg_data_csv_row(const struct csv *c, const unsigned char *line,
                               const unsigned char *eol, uint8_t *image, uint8_t *label);
/* Checks the header line [line, eol) and sets the layout. */
enum dg_status dg_data_csv_header(struct csv *c, const unsigned char *line,
                                  const unsigned char *eol);

/* ---- loads (csv_load.c, idx.c) ---- */

/* Parses the CSV whose first `have` bytes are already in buf (CHUNK_BYTES + CHUNK_PAD) with
 * `threads` threads (<= 0: DIGITS_DATA_THREADS or the online CPUs). */
enum dg_status dg_data_load_csv(struct source *src, unsigned char *buf, size_t have,
                                struct store *st, enum dg_data_format *format, int threads);
/* IDX3 images whose first `have` bytes (the header among them) are already in buf. */
enum dg_status dg_data_load_idx_images(struct source *src, unsigned char *buf, size_t have,
                                       struct store *st);
/* Reads an IDX1 label file into st->labels (allocated here); count must match. */
enum dg_status dg_data_load_idx_labels(const char *path, struct store *st);

static inline uint32_t dg_data_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

#endif
