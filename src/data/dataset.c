/* The data layer: Kaggle CSV (train / test layouts) and MNIST IDX, plain or gzip, told apart
 * by content. Streams the file through one bounded buffer (no whole-file copy, no per-row
 * allocation) into one uint8 image store (N x 784, row-major, pixel k = row*28 + col) and a
 * label array, both from the caller's allocator. Every malformed input is refused with
 * "FILE:LINE:COL: message" (text) or "FILE: byte OFFSET: message" (binary). */
#define _POSIX_C_SOURCE 200809L
#include "digits/data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CHUNK_BYTES (1u << 20)    /* the bounded read buffer */
#define GZ_IN_BYTES (256u << 10)  /* compressed input buffer */
#define MIN_ROW_BYTES (2 * DG_PIXELS) /* "0,0,...,0\n": bounds the row count from the size */
#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u

/* ---- allocator ---- */

static void *malloc_hook(size_t bytes, void *ctx)
{
    (void)ctx;
    return malloc(bytes ? bytes : 1);
}

static void free_hook(void *ptr, void *ctx)
{
    (void)ctx;
    free(ptr);
}

static const struct dg_allocator default_allocator = {malloc_hook, free_hook, NULL};

const struct dg_allocator *dg_allocator_default(void)
{
    return &default_allocator;
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

/* ---- a byte source: a plain file or a gzip stream, read in chunks ---- */

struct source {
    const char *path;
    int fd;
    int gzipped;
    int gz_done;         /* the last gzip member ended and no input follows */
    z_stream z;
    int z_ready;
    unsigned char *in;   /* compressed input (gzip only) */
    size_t in_offset;    /* compressed bytes consumed so far, for messages */
    size_t disk_bytes;
    size_t produced;     /* uncompressed bytes delivered */
    size_t size_hint;    /* expected uncompressed size (0: unknown) */
};

static enum dg_status source_open(struct source *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->fd = open(path, O_RDONLY);
    if (s->fd < 0)
        return dg_error(DG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(s->fd, &st) == 0 && S_ISDIR(st.st_mode))
        return dg_error(DG_ERR_IO, "%s: cannot read: Is a directory", path);
    s->disk_bytes = fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size : 0;
    unsigned char magic[2];
    ssize_t got = pread(s->fd, magic, 2, 0);
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        s->gzipped = 1;
        s->in = malloc(GZ_IN_BYTES);
        if (!s->in)
            return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        if (inflateInit2(&s->z, 15 + 16) != Z_OK)
            return dg_error(DG_ERR_NOMEM, "%s: cannot start zlib", path);
        s->z_ready = 1;
        unsigned char tail[4];
        if (s->disk_bytes >= 18 && pread(s->fd, tail, 4, (off_t)s->disk_bytes - 4) == 4)
            s->size_hint = (size_t)tail[0] | (size_t)tail[1] << 8 | (size_t)tail[2] << 16 |
                           (size_t)tail[3] << 24;
    } else {
        s->size_hint = s->disk_bytes;
    }
    return DG_OK;
}

static void source_close(struct source *s)
{
    if (s->z_ready)
        inflateEnd(&s->z);
    free(s->in);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->in = NULL;
    s->z_ready = 0;
}

/* Reads up to cap uncompressed bytes into buf; *got = 0 at the end. */
static enum dg_status source_read(struct source *s, unsigned char *buf, size_t cap, size_t *got)
{
    *got = 0;
    if (!s->gzipped) {
        while (*got < cap) {
            ssize_t n = read(s->fd, buf + *got, cap - *got);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return dg_error(DG_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
            }
            if (n == 0)
                break;
            *got += (size_t)n;
        }
        s->produced += *got;
        return DG_OK;
    }
    s->z.next_out = buf;
    s->z.avail_out = (uInt)cap;
    while (s->z.avail_out > 0 && !s->gz_done) {
        if (s->z.avail_in == 0) {
            ssize_t n;
            do
                n = read(s->fd, s->in, GZ_IN_BYTES);
            while (n < 0 && errno == EINTR);
            if (n < 0)
                return dg_error(DG_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
            if (n == 0)
                return dg_error(DG_ERR_INPUT, "%s: byte %zu: truncated gzip stream (the "
                                              "compressed data ends early)",
                                s->path, s->in_offset);
            s->z.next_in = s->in;
            s->z.avail_in = (uInt)n;
        }
        uInt before = s->z.avail_in;
        int rc = inflate(&s->z, Z_NO_FLUSH);
        s->in_offset += before - s->z.avail_in;
        if (rc == Z_STREAM_END) {
            /* another gzip member may follow (concatenated .gz); anything else is garbage */
            if (s->z.avail_in == 0) {
                ssize_t n;
                do
                    n = read(s->fd, s->in, GZ_IN_BYTES);
                while (n < 0 && errno == EINTR);
                if (n < 0)
                    return dg_error(DG_ERR_IO, "%s: read failed: %s", s->path,
                                    strerror(errno));
                s->z.next_in = s->in;
                s->z.avail_in = (uInt)n;
            }
            if (s->z.avail_in == 0) {
                s->gz_done = 1;
            } else if (s->z.avail_in >= 2 && s->z.next_in[0] == 0x1f &&
                       s->z.next_in[1] == 0x8b) {
                inflateReset(&s->z);
                s->size_hint = 0;
            } else {
                return dg_error(DG_ERR_INPUT, "%s: byte %zu: trailing garbage after the gzip "
                                              "stream",
                                s->path, s->in_offset);
            }
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            return dg_error(DG_ERR_INPUT, "%s: byte %zu: corrupt gzip data (%s)", s->path,
                            s->in_offset, s->z.msg ? s->z.msg : "inflate failed");
        }
    }
    *got = cap - s->z.avail_out;
    s->produced += *got;
    return DG_OK;
}

/* ---- the growing image store ---- */

struct store {
    struct dg_allocator alloc;
    uint8_t *images;
    uint8_t *labels;
    size_t count, capacity;
    int labelled;
};

static enum dg_status store_reserve(struct store *st, size_t rows, const char *path)
{
    if (rows <= st->capacity)
        return DG_OK;
    size_t capacity = st->capacity ? st->capacity * 2 : 1024;
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

static void store_release(struct store *st)
{
    if (st->images)
        st->alloc.free(st->images, st->alloc.ctx);
    if (st->labels)
        st->alloc.free(st->labels, st->alloc.ctx);
    st->images = st->labels = NULL;
    st->count = st->capacity = 0;
}

/* ---- CSV ---- */

struct csv {
    const char *path;
    size_t line;    /* 1-based line number of the row being parsed */
    int labelled;   /* train layout */
    int fields;     /* 785 or 784 */
};

/* Describes a field for a message: at most 24 printable characters. */
static void field_text(const unsigned char *p, const unsigned char *end, char *out, size_t size)
{
    size_t n = 0;
    while (p < end && *p != ',' && *p != '\n' && *p != '\r' && n + 4 < size) {
        out[n++] = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
        p++;
        if (n == 24 && p < end && *p != ',' && *p != '\n') {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
    }
    out[n] = '\0';
}

/* The careful path for one field starting at p (inside a complete line ending at `eol`, which
 * points at '\n' or the end of the data): parses it or produces the exact error. */
static enum dg_status csv_slow_field(const struct csv *c, const unsigned char *line,
                                     const unsigned char *p, const unsigned char *eol,
                                     int is_label, int field_index, unsigned *value,
                                     const unsigned char **next)
{
    size_t col = (size_t)(p - line) + 1;
    const char *what = is_label ? "label" : "pixel value";
    const unsigned char *q = p;
    const unsigned char *content_end = eol;
    if (content_end > line && content_end[-1] == '\r')
        content_end--;
    if (q == content_end || *q == ',') {
        if (q == content_end && field_index > 0)
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: too few fields: %d, expected %d", c->path,
                            c->line, col, field_index, c->fields);
        return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: empty field (expected a %s)", c->path,
                        c->line, col, is_label ? "label 0..9" : "pixel value 0..255");
    }
    unsigned long long v = 0;
    int digits = 0, overflow = 0;
    while (q < content_end && *q >= '0' && *q <= '9') {
        if (v > 1000000ull)
            overflow = 1;
        else
            v = v * 10 + (unsigned)(*q - '0');
        q++;
        digits++;
    }
    if (q < content_end && *q != ',') {
        char text[32];
        if (*q == '\0')
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: NUL byte", c->path, c->line,
                            (size_t)(q - line) + 1);
        if (*q == '\r')
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: carriage return inside a line", c->path,
                            c->line, (size_t)(q - line) + 1);
        if (*q >= 0x80 || (*q < 0x20 && *q != '\t'))
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: unexpected byte 0x%02x (binary data?)",
                            c->path, c->line, (size_t)(q - line) + 1, *q);
        field_text(p, content_end, text, sizeof text);
        return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: %s '%s' is not a decimal integer %s", c->path,
                        c->line, col, what, text, is_label ? "0..9" : "0..255");
    }
    unsigned limit = is_label ? 9u : 255u;
    if (overflow || v > limit) {
        char text[32];
        field_text(p, content_end, text, sizeof text);
        return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: %s '%s' out of range 0..%u", c->path, c->line,
                        col, what, text, limit);
    }
    (void)digits;
    *value = (unsigned)v;
    *next = q;
    return DG_OK;
}

/* Parses one complete data line [line, eol) (eol at '\n' or the end of data) into image (and
 * label). Fast path: runs of "0,0,0,0," 8 bytes at a time, then 1-3 digit fields. */
static enum dg_status csv_parse_row(const struct csv *c, const unsigned char *line,
                                    const unsigned char *eol, uint8_t *image, uint8_t *label)
{
    const unsigned char *p = line;
    const unsigned char *end = eol;
    if (end > line && end[-1] == '\r')
        end--;
    int field = 0;
    enum dg_status status;
    if (c->labelled) {
        unsigned v;
        if (p + 1 < end && p[0] >= '0' && p[0] <= '9' && p[1] == ',') {
            v = (unsigned)(p[0] - '0');
            p += 1;
        } else {
            const unsigned char *next;
            if ((status = csv_slow_field(c, line, p, eol, 1, 0, &v, &next)) != DG_OK)
                return status;
            p = next;
        }
        *label = (uint8_t)v;
        field = 1;
        if (p == end)
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: too few fields: 1, expected %d", c->path,
                            c->line, (size_t)(p - line) + 1, c->fields);
        p++; /* the comma */
    }
    static const unsigned char zeros4[8] = {'0', ',', '0', ',', '0', ',', '0', ','};
    uint64_t zeros_word;
    memcpy(&zeros_word, zeros4, 8);
    int k = 0;
    while (k < DG_PIXELS) {
        /* four "0," at once while at least five fields remain (the last one ends the line) */
        while (k + 4 < DG_PIXELS && end - p >= 8) {
            uint64_t word;
            memcpy(&word, p, 8);
            if (word != zeros_word)
                break;
            memset(image + k, 0, 4);
            k += 4;
            p += 8;
        }
        unsigned v;
        const unsigned char *q = p;
        if (q < end && (unsigned)(*q - '0') <= 9u) {
            v = (unsigned)(*q++ - '0');
            if (q < end && (unsigned)(*q - '0') <= 9u) {
                v = v * 10 + (unsigned)(*q++ - '0');
                if (q < end && (unsigned)(*q - '0') <= 9u) {
                    v = v * 10 + (unsigned)(*q++ - '0');
                    if (v > 255 || (q < end && (unsigned)(*q - '0') <= 9u))
                        q = NULL;
                }
            }
            if (q && q < end && *q != ',')
                q = NULL;
        } else {
            q = NULL;
        }
        if (!q) {
            const unsigned char *next;
            if ((status = csv_slow_field(c, line, p, eol, 0, field + k, &v, &next)) != DG_OK)
                return status;
            q = next;
        }
        image[k++] = (uint8_t)v;
        if (k < DG_PIXELS) {
            if (q == end)
                return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: too few fields: %d, expected %d",
                                c->path, c->line, (size_t)(q - line) + 1, field + k, c->fields);
            p = q + 1;
        } else {
            p = q;
        }
    }
    if (p != end) {
        if (*p == ',')
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: too many fields (expected %d)", c->path,
                            c->line, (size_t)(p - line) + 2, c->fields);
        return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: unexpected byte 0x%02x", c->path, c->line,
                        (size_t)(p - line) + 1, *p);
    }
    return DG_OK;
}

/* Checks the header line [line, eol) and sets the layout. */
static enum dg_status csv_header(struct csv *c, const unsigned char *line,
                                 const unsigned char *eol)
{
    const unsigned char *end = eol;
    if (end > line && end[-1] == '\r')
        end--;
    const unsigned char *p = line;
    c->labelled = (size_t)(end - p) >= 6 && memcmp(p, "label,", 6) == 0;
    c->fields = c->labelled ? DG_PIXELS + 1 : DG_PIXELS;
    if (c->labelled)
        p += 6;
    for (int k = 0; k < DG_PIXELS; k++) {
        char expected[16];
        int n = snprintf(expected, sizeof expected, "pixel%d%s", k, k + 1 < DG_PIXELS ? "," : "");
        size_t have = (size_t)(end - p);
        size_t match = 0;
        while (match < (size_t)n && match < have && p[match] == (unsigned char)expected[match])
            match++;
        if (match < (size_t)n) {
            for (const unsigned char *q = line; q < end; q++)
                if (*q >= 0x80 || (*q < 0x20 && *q != '\t'))
                    return dg_error(DG_ERR_INPUT, "%s:1:%zu: byte 0x%02x: binary data, not a "
                                                  "Kaggle CSV or MNIST IDX file",
                                    c->path, (size_t)(q - line) + 1, *q);
            return dg_error(DG_ERR_INPUT, "%s:1:%zu: wrong header (expected "
                                          "'label,pixel0,...,pixel783' for the train layout or "
                                          "'pixel0,...,pixel783' for the test layout)",
                            c->path, (size_t)(p + match - line) + 1);
        }
        p += n;
    }
    if (p != end)
        return dg_error(DG_ERR_INPUT, "%s:1:%zu: wrong header: unexpected text after pixel783",
                        c->path, (size_t)(p - line) + 1);
    return DG_OK;
}

/* Parses the CSV whose first `have` bytes are already in buf. */
static enum dg_status load_csv(struct source *src, unsigned char *buf, size_t have,
                               struct store *st, enum dg_data_format *format)
{
    struct csv c = {src->path, 1, 0, 0};
    enum dg_status status;
    int header_done = 0;
    int eof = 0;
    int empty_line_seen = 0; /* an empty line was seen: only allowed as the very last line */
    size_t empty_line_no = 0;
    if (have == 0)
        return dg_error(DG_ERR_INPUT, "%s:1:1: empty file", src->path);
    for (;;) {
        unsigned char *p = buf;
        unsigned char *data_end = buf + have;
        for (;;) {
            unsigned char *nl = memchr(p, '\n', (size_t)(data_end - p));
            unsigned char *eol;
            if (nl) {
                eol = nl;
            } else if (eof && p < data_end) {
                eol = data_end; /* a missing final newline */
            } else {
                break;
            }
            if (empty_line_seen)
                return dg_error(DG_ERR_INPUT, "%s:%zu:1: empty line", src->path, empty_line_no);
            size_t len = (size_t)(eol - p);
            if (len == 0 || (len == 1 && p[0] == '\r')) {
                if (!header_done)
                    return dg_error(DG_ERR_INPUT, "%s:1:1: empty header line", src->path);
                empty_line_seen = 1;
                empty_line_no = c.line;
            } else if (!header_done) {
                if ((status = csv_header(&c, p, eol)) != DG_OK)
                    return status;
                header_done = 1;
                st->labelled = c.labelled;
                *format = c.labelled ? DG_FORMAT_CSV_TRAIN : DG_FORMAT_CSV_TEST;
                size_t bound = src->size_hint ? src->size_hint / MIN_ROW_BYTES + 1 : 0;
                if (bound && (status = store_reserve(st, bound, src->path)) != DG_OK)
                    return status;
            } else {
                if (st->count == st->capacity &&
                    (status = store_reserve(st, st->count + 1, src->path)) != DG_OK)
                    return status;
                if ((status = csv_parse_row(&c, p, eol, st->images + st->count * DG_PIXELS,
                                            st->labelled ? st->labels + st->count : NULL)) !=
                    DG_OK)
                    return status;
                st->count++;
            }
            c.line++;
            p = nl ? nl + 1 : data_end;
        }
        size_t rest = (size_t)(data_end - p);
        if (eof)
            break;
        if (rest == CHUNK_BYTES)
            return dg_error(DG_ERR_INPUT, "%s:%zu:1: line longer than %u bytes (not a digits "
                                          "CSV row)",
                            src->path, c.line, CHUNK_BYTES);
        memmove(buf, p, rest);
        size_t got;
        if ((status = source_read(src, buf + rest, CHUNK_BYTES - rest, &got)) != DG_OK)
            return status;
        have = rest + got;
        if (got == 0)
            eof = 1;
    }
    if (!header_done)
        return dg_error(DG_ERR_INPUT, "%s:1:1: empty file", src->path);
    if (st->count == 0)
        return dg_error(DG_ERR_INPUT, "%s:2:1: no data rows after the header", src->path);
    return DG_OK;
}

/* ---- IDX ---- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Copies exactly `bytes` from the source (buf holds `have` already-read bytes starting at
 * offset `offset` of the stream) to dst; refuses a short body or trailing bytes. */
static enum dg_status idx_body(struct source *src, unsigned char *buf, size_t have,
                               size_t header, uint8_t *dst, size_t bytes, const char *what)
{
    enum dg_status status;
    size_t copied = have > header ? have - header : 0;
    if (copied > bytes)
        return dg_error(DG_ERR_INPUT, "%s: byte %zu: trailing bytes after the %s the header "
                                      "declares",
                        src->path, header + bytes, what);
    memcpy(dst, buf + header, copied);
    while (copied < bytes) {
        size_t got;
        if ((status = source_read(src, dst + copied, bytes - copied, &got)) != DG_OK)
            return status;
        if (got == 0)
            return dg_error(DG_ERR_INPUT, "%s: byte %zu: body shorter than its header says (%zu "
                                          "bytes of %s declared, %zu present)",
                            src->path, header + copied, bytes, what, copied);
        copied += got;
    }
    size_t extra;
    unsigned char probe[1];
    if ((status = source_read(src, probe, 1, &extra)) != DG_OK)
        return status;
    if (extra)
        return dg_error(DG_ERR_INPUT, "%s: byte %zu: trailing bytes after the %s the header "
                                      "declares",
                        src->path, header + bytes, what);
    return DG_OK;
}

static enum dg_status load_idx_images(struct source *src, unsigned char *buf, size_t have,
                                      struct store *st)
{
    if (have < 16)
        return dg_error(DG_ERR_INPUT, "%s: byte %zu: truncated IDX header (16 bytes expected)",
                        src->path, have);
    uint32_t count = be32(buf + 4), rows = be32(buf + 8), cols = be32(buf + 12);
    if (rows != 28 || cols != 28)
        return dg_error(DG_ERR_INPUT, "%s: byte 8: images are %ux%u, expected 28x28", src->path,
                        rows, cols);
    if (count == 0)
        return dg_error(DG_ERR_INPUT, "%s: byte 4: the IDX file holds no images", src->path);
    enum dg_status status = store_reserve(st, count, src->path);
    if (status != DG_OK)
        return status;
    if ((status = idx_body(src, buf, have, 16, st->images, (size_t)count * DG_PIXELS,
                           "images")) != DG_OK)
        return status;
    st->count = count;
    return DG_OK;
}

/* Reads an IDX1 label file into st->labels (allocated here); count must match. */
static enum dg_status load_idx_labels(const char *path, struct store *st)
{
    struct source src;
    unsigned char *buf = NULL;
    enum dg_status status = source_open(&src, path);
    if (status != DG_OK)
        goto done;
    buf = malloc(4096);
    if (!buf) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t have;
    if ((status = source_read(&src, buf, 8, &have)) != DG_OK)
        goto done;
    if (have < 8) {
        status = dg_error(DG_ERR_INPUT, "%s: byte %zu: %s", path, have,
                          have == 0 ? "empty file" : "truncated IDX header (8 bytes expected)");
        goto done;
    }
    uint32_t magic = be32(buf);
    if (magic != IDX_LABELS_MAGIC) {
        status = dg_error(DG_ERR_INPUT, "%s: byte 0: not an IDX label file (magic 0x%08x, "
                                        "expected 0x%08x)",
                          path, magic, IDX_LABELS_MAGIC);
        goto done;
    }
    uint32_t count = be32(buf + 4);
    if (count != st->count) {
        status = dg_error(DG_ERR_INPUT, "%s: byte 4: %u labels for %zu images", path, count,
                          st->count);
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
    source_close(&src);
    return status;
}

/* ---- entry points ---- */

enum dg_status dg_dataset_load(const char *path, const char *labels_path,
                               const struct dg_allocator *allocator, struct dg_dataset *out)
{
    struct source src;
    struct store st;
    unsigned char *buf = NULL;
    enum dg_data_format format = DG_FORMAT_CSV_TRAIN;
    memset(out, 0, sizeof *out);
    memset(&st, 0, sizeof st);
    st.alloc = allocator ? *allocator : default_allocator;
    enum dg_status status = source_open(&src, path);
    if (status != DG_OK)
        goto fail;
    buf = malloc(CHUNK_BYTES);
    if (!buf) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    size_t have;
    if ((status = source_read(&src, buf, CHUNK_BYTES, &have)) != DG_OK)
        goto fail;
    if (have >= 4 && be32(buf) == IDX_IMAGES_MAGIC) {
        format = DG_FORMAT_IDX;
        if ((status = load_idx_images(&src, buf, have, &st)) != DG_OK)
            goto fail;
        if (labels_path && (status = load_idx_labels(labels_path, &st)) != DG_OK)
            goto fail;
    } else if (have >= 4 && buf[0] == 0 && buf[1] == 0 && buf[2] == 8) {
        status = dg_error(DG_ERR_INPUT, "%s: byte 0: IDX magic 0x%08x is not an image file "
                                        "(expected 0x%08x%s)",
                          path, be32(buf), IDX_IMAGES_MAGIC,
                          be32(buf) == IDX_LABELS_MAGIC ? "; label files go with --labels" : "");
        goto fail;
    } else {
        if (labels_path) {
            status = dg_error(DG_ERR_USAGE, "%s: --labels is for MNIST IDX images, but this is "
                                            "a CSV file (its labels are its first column)",
                              path);
            goto fail;
        }
        if ((status = load_csv(&src, buf, have, &st, &format)) != DG_OK)
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
    source_close(&src);
    return DG_OK;
fail:
    free(buf);
    source_close(&src);
    store_release(&st);
    return status;
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
