/* The data layer: Kaggle CSV (train / test layouts) and MNIST IDX, plain or gzip, told apart
 * by content. Streams the file through one bounded buffer (1 MiB plus padding; no whole-file
 * copy, no per-row allocation) into one uint8 image store (N x 784, row-major, pixel k =
 * row*28 + col) and a label array, both from the caller's allocator, sized once from the
 * (uncompressed) file size or grown geometrically. CSV rows take a branch-free block path
 * (bitmasks of separators, 64 bytes at a time); anything unusual goes to a careful parser that
 * names the problem: "FILE:LINE:COL: message" (text) or "FILE: byte OFFSET: message" (binary).
 *
 * CSV loads are parallel (see "the parallel CSV load" below): the calling thread reads or
 * inflates the file in those same 1 MiB buffers, cuts each after its last newline, numbers its
 * lines and queues it; worker threads parse queued buffers straight into the store. Errors are
 * keyed by line number and the earliest wins, so the message is the one a serial parse gives. */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "digits/data.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define CHUNK_BYTES (1u << 20)        /* the bounded read buffer */
#define CHUNK_PAD 128                 /* readable bytes past the data (word-at-a-time parsing) */
#define GZ_IN_BYTES (256u << 10)      /* compressed input buffer */
#define MIN_ROW_BYTES (2 * DG_PIXELS) /* "0,0,...,0\n": bounds the row count from the size */
#define MAX_DEFLATE_RATIO 1032u       /* deflate expands at most about 1032:1 */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define HUGE_STORE_BYTES ((size_t)8 << 20)
#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u

/* ---- allocator ---- */

/* Large stores are 2 MiB aligned and marked for transparent huge pages: the image store is
 * written once front to back, and 4 KiB page faults would cost as much as parsing it. */
static void *malloc_hook(size_t bytes, void *ctx)
{
    (void)ctx;
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_STORE_BYTES) {
        size_t rounded = (bytes + HUGE_PAGE_BYTES - 1) & ~(size_t)(HUGE_PAGE_BYTES - 1);
        void *ptr;
        if (posix_memalign(&ptr, HUGE_PAGE_BYTES, rounded) != 0)
            return NULL;
        madvise(ptr, rounded, MADV_HUGEPAGE);
        return ptr;
    }
#endif
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

/* ---- CRC-32 (gzip's): zlib's, or folded with carry-less multiplies where the CPU has them ----
 * zlib checks a gzip member's CRC-32 on the thread that inflates, where it costs a sixth of
 * the inflate time; the PCLMULQDQ folding (Gopal et al., "Fast CRC Computation for Generic
 * Polynomials Using PCLMULQDQ Instruction", Intel 2009; the constants of its bit-reflected
 * CRC-32) is several times faster. */

typedef uint32_t (*crc32_fn)(uint32_t crc, const unsigned char *p, size_t n);

static uint32_t crc32_zlib(uint32_t crc, const unsigned char *p, size_t n)
{
    return (uint32_t)crc32_z(crc, p, n);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DATA_CLMUL __attribute__((target("pclmul,sse4.1")))

/* The bit-reflected CRC register (crc not inverted) after len bytes; len >= 64, a multiple
 * of 16. */
DATA_CLMUL static uint32_t crc32_fold(uint32_t crc, const unsigned char *p, size_t len)
{
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124);
    const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);
    const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(const void *)(p + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    p += 64;
    len -= 64;
    for (; len >= 64; p += 64, len -= 64) { /* four lanes folded 64 bytes on */
        __m128i y1 = _mm_clmulepi64_si128(x1, k1k2, 0x00),
                z1 = _mm_clmulepi64_si128(x1, k1k2, 0x11);
        __m128i y2 = _mm_clmulepi64_si128(x2, k1k2, 0x00),
                z2 = _mm_clmulepi64_si128(x2, k1k2, 0x11);
        __m128i y3 = _mm_clmulepi64_si128(x3, k1k2, 0x00),
                z3 = _mm_clmulepi64_si128(x3, k1k2, 0x11);
        __m128i y4 = _mm_clmulepi64_si128(x4, k1k2, 0x00),
                z4 = _mm_clmulepi64_si128(x4, k1k2, 0x11);
        x1 =
            _mm_xor_si128(_mm_xor_si128(y1, z1), _mm_loadu_si128((const __m128i *)(const void *)p));
        x2 = _mm_xor_si128(_mm_xor_si128(y2, z2),
                           _mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
        x3 = _mm_xor_si128(_mm_xor_si128(y3, z3),
                           _mm_loadu_si128((const __m128i *)(const void *)(p + 32)));
        x4 = _mm_xor_si128(_mm_xor_si128(y4, z4),
                           _mm_loadu_si128((const __m128i *)(const void *)(p + 48)));
    }
    /* the four lanes into one, then 16 bytes at a time */
    __m128i lanes[3] = {x2, x3, x4};
    for (int i = 0; i < 3; i++)
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x00),
                                         _mm_clmulepi64_si128(x1, k3k4, 0x11)),
                           lanes[i]);
    for (; len >= 16; p += 16, len -= 16)
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x00),
                                         _mm_clmulepi64_si128(x1, k3k4, 0x11)),
                           _mm_loadu_si128((const __m128i *)(const void *)p));
    /* 128 bits to 64, then Barrett reduction to 32 */
    x2 = _mm_clmulepi64_si128(x1, k3k4, 0x10);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5k0, 0x00), x2);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, low32), poly, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

static uint32_t crc32_clmul(uint32_t crc, const unsigned char *p, size_t n)
{
    if (n >= 64) {
        size_t folded = n & ~(size_t)15;
        crc = ~crc32_fold(~crc, p, folded);
        p += folded;
        n -= folded;
    }
    return n ? crc32_zlib(crc, p, n) : crc;
}
#endif

/* Carry-less multiplies where the CPU has them; DIGITS_DATA_GENERIC=1 keeps zlib's. */
static crc32_fn choose_crc32(void)
{
    const char *generic = getenv("DIGITS_DATA_GENERIC");
    if (generic && generic[0] == '1')
        return crc32_zlib;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1"))
        return crc32_clmul;
#endif
    return crc32_zlib;
}

/* ---- a byte source: a plain file or a gzip stream, read in chunks ----
 * gzip members are framed here (header, raw deflate through zlib, CRC-32 and length trailer)
 * so that the CRC can be the fast one; the framing follows zlib's inflate() for gzip byte for
 * byte (fields taken as the input arrives, each checked once complete), so every refusal names
 * the byte offset and zlib's words that inflate() in gzip mode gave. */

enum { GZ_HEADER, GZ_DATA, GZ_TRAILER };
enum { H_MAGIC, H_FLAGS, H_TIME, H_OS, H_EXLEN, H_EXTRA, H_NAME, H_COMMENT, H_HCRC };
enum { T_CRC, T_LENGTH };
#define GZ_FHCRC 0x0200u /* of CM | FLG << 8 */
#define GZ_FEXTRA 0x0400u
#define GZ_FNAME 0x0800u
#define GZ_FCOMMENT 0x1000u

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
    crc32_fn crc32;
};

/* read() until cap bytes or the end; -1 on an error (errno set). */
static ssize_t read_fully(int fd, unsigned char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

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
    /* read, not pread: pipes and other streams are told apart the same way */
    ssize_t got = read_fully(s->fd, s->peek, 2);
    if (got < 0)
        return dg_error(DG_ERR_IO, "%s: read failed: %s", path, strerror(errno));
    s->peek_len = (size_t)got;
    if (got == 2 && s->peek[0] == 0x1f && s->peek[1] == 0x8b) {
        s->gzipped = 1;
        s->in = malloc(GZ_IN_BYTES);
        if (!s->in)
            return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        if (inflateInit2(&s->z, -15) != Z_OK)
            return dg_error(DG_ERR_NOMEM, "%s: cannot start zlib", path);
        s->z_ready = 1;
        s->gz_phase = GZ_HEADER;
        s->gz_step = H_MAGIC;
        s->crc32 = choose_crc32();
        memcpy(s->in, s->peek, 2);
        s->z.next_in = s->in;
        s->z.avail_in = 2;
        s->peek_len = 0;
        unsigned char tail[4];
        if (s->disk_bytes >= 18 && pread(s->fd, tail, 4, (off_t)s->disk_bytes - 4) == 4)
            s->size_hint = (size_t)tail[0] | (size_t)tail[1] << 8 | (size_t)tail[2] << 16 |
                           (size_t)tail[3] << 24;
        if (s->size_hint / MAX_DEFLATE_RATIO > s->disk_bytes)
            s->size_hint = 0;
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

/* Takes the bytes of an n-byte little-endian field as far as the input goes: 1 when it is
 * complete (in s->gz_hold). */
static int gz_field(struct source *s, unsigned n)
{
    while (s->gz_have < n && s->z.avail_in > 0) {
        s->gz_hold |= (uint32_t)*s->z.next_in << (8 * s->gz_have);
        s->z.next_in++;
        s->z.avail_in--;
        s->in_offset++;
        s->gz_have++;
    }
    return s->gz_have == n;
}

/* The next field: the one just completed counts in the header CRC when `crc`. */
static void gz_next(struct source *s, int step, int crc)
{
    if (crc) {
        unsigned char bytes[4] = {(unsigned char)s->gz_hold, (unsigned char)(s->gz_hold >> 8),
                                  (unsigned char)(s->gz_hold >> 16),
                                  (unsigned char)(s->gz_hold >> 24)};
        s->gz_hcrc = (uint32_t)crc32(s->gz_hcrc, bytes, s->gz_have);
    }
    s->gz_step = step;
    s->gz_have = 0;
    s->gz_hold = 0;
}

/* Skips a NUL-terminated header string as far as the input goes: 1 when it ended. */
static int gz_string(struct source *s)
{
    size_t n = 0;
    int ended = 0;
    while (n < s->z.avail_in && !ended)
        ended = s->z.next_in[n++] == 0;
    if (s->gz_flags & GZ_FHCRC)
        s->gz_hcrc = (uint32_t)crc32(s->gz_hcrc, s->z.next_in, (uInt)n);
    s->z.next_in += n;
    s->z.avail_in -= (uInt)n;
    s->in_offset += n;
    return ended;
}

static enum dg_status gz_corrupt(const struct source *s, const char *what)
{
    return dg_error(DG_ERR_INPUT, "%s: byte %zu: corrupt gzip data (%s)", s->path, s->in_offset,
                    what);
}

/* Reads the member header as far as the input goes (s->gz_phase becomes GZ_DATA once it is
 * complete), refusing it as zlib does. */
static enum dg_status gz_read_header(struct source *s)
{
    unsigned flags = s->gz_flags;
    switch (s->gz_step) {
    case H_MAGIC:
        if (!gz_field(s, 2))
            return DG_OK;
        if (s->gz_hold != 0x8b1f)
            return gz_corrupt(s, "incorrect header check");
        s->gz_hcrc = (uint32_t)crc32(0, NULL, 0);
        gz_next(s, H_FLAGS, 1);
        /* fall through */
    case H_FLAGS:
        if (!gz_field(s, 2))
            return DG_OK;
        flags = s->gz_flags = s->gz_hold;
        if ((flags & 0xff) != Z_DEFLATED)
            return gz_corrupt(s, "unknown compression method");
        if (flags & 0xe000)
            return gz_corrupt(s, "unknown header flags set");
        gz_next(s, H_TIME, flags & GZ_FHCRC);
        /* fall through */
    case H_TIME:
        if (!gz_field(s, 4))
            return DG_OK;
        gz_next(s, H_OS, flags & GZ_FHCRC);
        /* fall through */
    case H_OS:
        if (!gz_field(s, 2))
            return DG_OK;
        gz_next(s, H_EXLEN, flags & GZ_FHCRC);
        /* fall through */
    case H_EXLEN:
        if (flags & GZ_FEXTRA) {
            if (!gz_field(s, 2))
                return DG_OK;
            s->gz_extra = s->gz_hold;
        }
        gz_next(s, H_EXTRA, (flags & GZ_FEXTRA) && (flags & GZ_FHCRC));
        /* fall through */
    case H_EXTRA:
        if (flags & GZ_FEXTRA) {
            uInt n = s->gz_extra < s->z.avail_in ? (uInt)s->gz_extra : s->z.avail_in;
            if (flags & GZ_FHCRC)
                s->gz_hcrc = (uint32_t)crc32(s->gz_hcrc, s->z.next_in, n);
            s->z.next_in += n;
            s->z.avail_in -= n;
            s->in_offset += n;
            s->gz_extra -= n;
            if (s->gz_extra)
                return DG_OK;
        }
        s->gz_step = H_NAME;
        /* fall through */
    case H_NAME:
        if ((flags & GZ_FNAME) && !gz_string(s))
            return DG_OK;
        s->gz_step = H_COMMENT;
        /* fall through */
    case H_COMMENT:
        if ((flags & GZ_FCOMMENT) && !gz_string(s))
            return DG_OK;
        s->gz_step = H_HCRC;
        /* fall through */
    case H_HCRC:
        if (flags & GZ_FHCRC) {
            if (!gz_field(s, 2))
                return DG_OK;
            if (s->gz_hold != (s->gz_hcrc & 0xffff))
                return gz_corrupt(s, "header crc mismatch");
        }
        gz_next(s, T_CRC, 0);
        s->gz_phase = GZ_DATA;
        s->gz_crc = (uint32_t)crc32(0, NULL, 0);
        s->gz_size = 0;
    }
    return DG_OK;
}

/* Reads the member trailer as far as the input goes: *done once both fields are checked. */
static enum dg_status gz_read_trailer(struct source *s, int *done)
{
    *done = 0;
    if (s->gz_step == T_CRC) {
        if (!gz_field(s, 4))
            return DG_OK;
        if (s->gz_hold != s->gz_crc)
            return gz_corrupt(s, "incorrect data check");
        gz_next(s, T_LENGTH, 0);
    }
    if (!gz_field(s, 4))
        return DG_OK;
    if (s->gz_hold != s->gz_size)
        return gz_corrupt(s, "incorrect length check");
    *done = 1;
    return DG_OK;
}

/* Refills the compressed input (all of it consumed); 0 bytes at the end of the file. */
static enum dg_status gz_refill(struct source *s, ssize_t *n)
{
    do
        *n = read(s->fd, s->in, GZ_IN_BYTES);
    while (*n < 0 && errno == EINTR);
    if (*n < 0)
        return dg_error(DG_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
    s->z.next_in = s->in;
    s->z.avail_in = (uInt)*n;
    return DG_OK;
}

/* Reads up to cap uncompressed bytes into buf; *got = 0 at the end. */
static enum dg_status source_read(struct source *s, unsigned char *buf, size_t cap, size_t *got)
{
    *got = 0;
    if (!s->gzipped) {
        size_t peeked = s->peek_len < cap ? s->peek_len : cap;
        memcpy(buf, s->peek, peeked);
        memmove(s->peek, s->peek + peeked, s->peek_len - peeked);
        s->peek_len -= peeked;
        ssize_t n = read_fully(s->fd, buf + peeked, cap - peeked);
        if (n < 0)
            return dg_error(DG_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
        *got = peeked + (size_t)n;
        s->produced += *got;
        return DG_OK;
    }
    enum dg_status status;
    ssize_t n;
    s->z.next_out = buf;
    s->z.avail_out = (uInt)cap;
    while (s->z.avail_out > 0 && !s->gz_done) {
        if (s->z.avail_in == 0) {
            if ((status = gz_refill(s, &n)) != DG_OK)
                return status;
            if (n == 0)
                return dg_error(DG_ERR_INPUT,
                                "%s: byte %zu: truncated gzip stream (the "
                                "compressed data ends early)",
                                s->path, s->in_offset);
        }
        if (s->gz_phase == GZ_HEADER && (status = gz_read_header(s)) != DG_OK)
            return status;
        if (s->gz_phase == GZ_DATA && s->z.avail_in > 0) {
            unsigned char *out = s->z.next_out;
            uInt before = s->z.avail_in;
            int rc = inflate(&s->z, Z_NO_FLUSH);
            s->in_offset += before - s->z.avail_in;
            size_t made = (size_t)(s->z.next_out - out);
            s->gz_crc = s->crc32(s->gz_crc, out, made);
            s->gz_size += (uint32_t)made;
            if (rc == Z_STREAM_END)
                s->gz_phase = GZ_TRAILER;
            else if (rc != Z_OK && rc != Z_BUF_ERROR)
                return gz_corrupt(s, s->z.msg ? s->z.msg : "inflate failed");
        }
        int done = 0;
        if (s->gz_phase == GZ_TRAILER && (status = gz_read_trailer(s, &done)) != DG_OK)
            return status;
        if (done) {
            /* another gzip member may follow (concatenated .gz); anything else is garbage */
            if (s->z.avail_in == 0 && (status = gz_refill(s, &n)) != DG_OK)
                return status;
            if (s->z.avail_in == 0) {
                s->gz_done = 1;
            } else if (s->z.avail_in >= 2 && s->z.next_in[0] == 0x1f && s->z.next_in[1] == 0x8b) {
                inflateReset(&s->z);
                s->size_hint = 0;
                s->gz_phase = GZ_HEADER;
                gz_next(s, H_MAGIC, 0);
            } else {
                return dg_error(DG_ERR_INPUT,
                                "%s: byte %zu: trailing garbage after the gzip "
                                "stream",
                                s->path, s->in_offset);
            }
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

/* Room for at least `rows` images: exactly that many at first, at least double after. */
static enum dg_status store_reserve(struct store *st, size_t rows, const char *path)
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
    size_t line;  /* 1-based line number of the row being parsed */
    int labelled; /* train layout */
    int fields;   /* 785 or 784 */
    int (*block_pixels)(const unsigned char *p0, const unsigned char *end, uint8_t *image);
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
                                     const unsigned char *p, const unsigned char *eol, int is_label,
                                     unsigned *value, const unsigned char **next)
{
    size_t col = (size_t)(p - line) + 1;
    const char *what = is_label ? "label" : "pixel value";
    const unsigned char *q = p;
    const unsigned char *content_end = eol;
    if (content_end > line && content_end[-1] == '\r')
        content_end--;
    if (q == content_end || *q == ',')
        return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: empty field (expected a %s)", c->path, c->line,
                        col, is_label ? "label 0..9" : "pixel value 0..255");
    unsigned long long v = 0;
    int overflow = 0;
    while (q < content_end && *q >= '0' && *q <= '9') {
        if (v > 1000000ull)
            overflow = 1;
        else
            v = v * 10 + (unsigned)(*q - '0');
        q++;
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
    *value = (unsigned)v;
    *next = q;
    return DG_OK;
}

/* ---- the fast path: fields decoded from 8-byte little-endian words ---- */

#define BYTES_OF(x) (0x0101010101010101ull * (uint64_t)(x))

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t word;
    memcpy(&word, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word = __builtin_bswap64(word);
#endif
    return word;
}

/* The digits at p (8 bytes readable): returns the index of the first non-digit (0..7), sets
 * *value to the number its first three digits spell and *word to the 8 bytes. No branches. */
static inline unsigned leading_digits(const unsigned char *p, uint64_t *word, unsigned *value)
{
    uint64_t w = load_le64(p);
    uint64_t low7 = w & BYTES_OF(0x7f);
    uint64_t nondigit = ((low7 + BYTES_OF(0x46)) | ~(low7 + BYTES_OF(0x50)) | w) & BYTES_OF(0x80);
    unsigned len = (unsigned)__builtin_ctzll(nondigit | 1ull << 63) >> 3;
    /* a digit byte never borrows, so the bytes before the first non-digit are exact */
    uint64_t digits = (w - BYTES_OF(0x30)) & 0x0f0f0f;
    uint64_t aligned = (digits << (8 * ((3 - len) & 3))) & 0x0f0f0f;
    *value = (unsigned)(aligned & 0xff) * 100 + (unsigned)((aligned >> 8) & 0xff) * 10 +
             (unsigned)(aligned >> 16);
    *word = w;
    return len;
}

/* "d,", "dd," or "ddd," with a value 0..255 at p: returns its length with the comma, or 0 for
 * anything else (the careful path decides). */
static inline size_t fast_field(const unsigned char *p, unsigned *value)
{
    uint64_t word;
    unsigned len = leading_digits(p, &word, value);
    unsigned separator = (unsigned)(word >> (8 * len)) & 0xff;
    return ((len - 1u < 3u) & (separator == ',') & (*value <= 255)) ? len + 1 : 0;
}

/* How many "0," fields start at p (0..8; 16 bytes readable). */
static inline unsigned zero_fields(const unsigned char *p)
{
#ifdef __SSE2__
    __m128i bytes = _mm_loadu_si128((const __m128i *)(const void *)p);
    unsigned match = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi16(0x2c30)));
    return (unsigned)__builtin_ctz(~match) >> 1;
#else
    uint64_t diff = load_le64(p) ^ BYTES_OF(0x30) ^ 0x1c001c001c001c00ull;
    unsigned lo = diff ? (unsigned)__builtin_ctzll(diff) >> 4 : 4;
    if (lo < 4)
        return lo;
    diff = load_le64(p + 8) ^ BYTES_OF(0x30) ^ 0x1c001c001c001c00ull;
    return 4 + (diff ? (unsigned)__builtin_ctzll(diff) >> 4 : 4);
#endif
}

/* The careful path for pixel k (the label when k < 0) at p, in a line whose content ends at
 * `end`: the exact error, or the value of an unusual but valid field (leading zeros); *next is
 * set past the field's comma (to `end` for the last pixel). */
static enum dg_status careful_field(const struct csv *c, const unsigned char *line,
                                    const unsigned char *p, const unsigned char *end,
                                    const unsigned char *eol, int k, unsigned *value,
                                    const unsigned char **next)
{
    int field = k + c->labelled;
    const unsigned char *q = p;
    enum dg_status status = csv_slow_field(c, line, p, eol, k < 0, value, &q);
    if (status != DG_OK)
        return status;
    if (k < DG_PIXELS - 1) {
        if (q == end)
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: too few fields: %d, expected %d", c->path,
                            c->line, (size_t)(q - line) + 1, field + 1, c->fields);
        *next = q + 1;
    } else {
        if (q != end)
            return dg_error(DG_ERR_INPUT, "%s:%zu:%zu: too many fields (expected %d)", c->path,
                            c->line, (size_t)(q - line) + 2, c->fields);
        *next = q;
    }
    return DG_OK;
}

/* The serial row parser, the block path's fallback: parses one complete data line [line, eol)
 * into image (and label), or names the exact error. *eol is '\n' (a sentinel at the end of
 * the data) and 16 bytes past it are readable. Runs of "0," are skipped 8 at a time; other
 * fields go through fast_field, and the careful path only on a surprise. */
static enum dg_status csv_parse_row(const struct csv *c, const unsigned char *line,
                                    const unsigned char *eol, uint8_t *image, uint8_t *label)
{
    const unsigned char *p = line;
    const unsigned char *end = eol;
    if (end > line && end[-1] == '\r')
        end--;
    enum dg_status status;
    unsigned value;
    size_t len;
    if (c->labelled) {
        if (fast_field(p, &value) == 2 && value <= 9)
            p += 2;
        else if ((status = careful_field(c, line, p, end, eol, -1, &value, &p)) != DG_OK)
            return status;
        *label = (uint8_t)value;
    }
    int k = 0;
    while (k < DG_PIXELS - 9) {
        unsigned zeros = zero_fields(p);
        memset(image + k, 0, 8);
        k += (int)zeros;
        p += 2 * zeros;
        if (zeros == 8)
            continue;
        if ((len = fast_field(p, &value)) != 0)
            p += len;
        else if ((status = careful_field(c, line, p, end, eol, k, &value, &p)) != DG_OK)
            return status;
        image[k++] = (uint8_t)value;
    }
    while (k < DG_PIXELS - 1) {
        if ((len = fast_field(p, &value)) != 0)
            p += len;
        else if ((status = careful_field(c, line, p, end, eol, k, &value, &p)) != DG_OK)
            return status;
        image[k++] = (uint8_t)value;
    }
    uint64_t word;
    len = leading_digits(p, &word, &value);
    if (!((len - 1u < 3u) & (p + len == end) & (value <= 255)) &&
        (status = careful_field(c, line, p, end, eol, k, &value, &p)) != DG_OK)
        return status;
    image[k] = (uint8_t)value;
    return DG_OK;
}

/* ---- the block path: a whole row from bitmasks ----
 * A row's pixel fields are found from 64-byte masks of ',', '0' and digits: every byte must be
 * a digit or a separator, fields start after separators and are 1..3 bytes long, "0" fields
 * (most of MNIST) are left to the row's memset, and only the other fields are decoded, each
 * independently of the others (no serial chain through a read position). Any surprise sends
 * the row to csv_parse_row, which finds the exact error. */

#define ROW_BLOCKS (4 * DG_PIXELS / 64 + 1) /* "ddd," x 784 at most */

struct row_masks {
    uint64_t commas, zeros, digits;
};

typedef struct row_masks (*block_masks_fn)(const unsigned char *p);

static struct row_masks block_masks_generic(const unsigned char *p)
{
    struct row_masks m = {0, 0, 0};
#ifdef __SSE2__
    const __m128i comma = _mm_set1_epi8(','), zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
    for (int i = 0; i < 4; i++) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i));
        __m128i digit = _mm_sub_epi8(bytes, zero);
        m.commas |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, comma)) << (16 * i);
        m.zeros |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, zero)) << (16 * i);
        m.digits |=
            (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(digit, nine), digit))
            << (16 * i);
    }
#else
    for (int i = 0; i < 64; i++) {
        m.commas |= (uint64_t)(p[i] == ',') << i;
        m.zeros |= (uint64_t)(p[i] == '0') << i;
        m.digits |= (uint64_t)(p[i] >= '0' && p[i] <= '9') << i;
    }
#endif
    return m;
}

/* The pixels of one row, [p0, end) with *end the line end: 1 when all 784 are plain fields
 * (1..3 digits, 0..255) and stored in image, 0 when the row needs the careful path. 64 bytes
 * past end must be readable. */
__attribute__((always_inline)) static inline int block_pixels(const unsigned char *p0,
                                                              const unsigned char *end,
                                                              uint8_t *image,
                                                              block_masks_fn block_masks)
{
    size_t n = (size_t)(end - p0) + 1; /* the line end counts as the last separator */
    if (n < 2 * DG_PIXELS || n > 4 * DG_PIXELS)
        return 0;
    size_t blocks = (n + 63) / 64;
    unsigned tail = (unsigned)(n - 64 * (blocks - 1));
    uint64_t last_valid = tail == 64 ? ~0ull : (1ull << tail) - 1;
    uint64_t separators[ROW_BLOCKS + 1], zeros[ROW_BLOCKS];
    uint64_t bad = 0;
    unsigned separator_count = 0;
    for (size_t b = 0; b < blocks; b++) {
        struct row_masks m = block_masks(p0 + 64 * b);
        uint64_t valid = b + 1 < blocks ? ~0ull : last_valid;
        uint64_t seps = b + 1 < blocks ? m.commas : (m.commas & valid) | 1ull << (tail - 1);
        bad |= valid & ~(m.digits | seps);
        separators[b] = seps;
        zeros[b] = m.zeros;
        separator_count += (unsigned)__builtin_popcountll(seps);
    }
    separators[blocks] = 0;
    if (bad || separator_count != DG_PIXELS)
        return 0;
    memset(image, 0, DG_PIXELS);
    unsigned k_base = 0, too_big = 0;
    uint64_t carry = 1; /* a field starts at p0 */
    for (size_t b = 0; b < blocks; b++) {
        uint64_t seps = separators[b], next = separators[b + 1];
        uint64_t starts = seps << 1 | carry;
        carry = seps >> 63;
        if (b + 1 == blocks)
            starts &= last_valid;
        uint64_t after1 = seps >> 1 | next << 63; /* a separator 1, 2, 3 bytes on */
        uint64_t after2 = seps >> 2 | next << 62;
        uint64_t after3 = seps >> 3 | next << 61;
        uint64_t long2 = starts & ~after1; /* fields of 2 or 3 digits */
        uint64_t long3 = long2 & ~after2;  /* fields of 3 digits */
        bad |= (starts & seps) | (long3 & ~after3);
        uint64_t others = starts & ~(after1 & zeros[b]);
        while (others) {
            unsigned pos = (unsigned)__builtin_ctzll(others);
            unsigned k = k_base + (unsigned)__builtin_popcountll(starts & ((1ull << pos) - 1));
            uint64_t digits = (load_le64(p0 + 64 * b + pos) - 0x303030) & 0x0f0f0f;
            unsigned shift = 16 - 8 * (unsigned)(((long2 >> pos) & 1) + ((long3 >> pos) & 1));
            uint64_t aligned = (digits << shift) & 0x0f0f0f; /* 0 0 d, 0 d d or d d d */
            unsigned value = (unsigned)(aligned & 0xff) * 100 +
                             (unsigned)((aligned >> 8) & 0xff) * 10 + (unsigned)(aligned >> 16);
            too_big |= value;
            image[k] = (uint8_t)value;
            others &= others - 1;
        }
        k_base += (unsigned)__builtin_popcountll(starts);
    }
    return !bad && too_big <= 255;
}

static int block_pixels_generic(const unsigned char *p0, const unsigned char *end, uint8_t *image)
{
    return block_pixels(p0, end, image, block_masks_generic);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DATA_AVX2 __attribute__((target("avx2,bmi,bmi2,popcnt")))

DATA_AVX2 static inline struct row_masks block_masks_avx2(const unsigned char *p)
{
    const __m256i comma = _mm256_set1_epi8(','), zero = _mm256_set1_epi8('0');
    const __m256i nine = _mm256_set1_epi8(9);
    struct row_masks m = {0, 0, 0};
    for (int i = 0; i < 2; i++) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32 * i));
        __m256i digit = _mm256_sub_epi8(bytes, zero);
        m.commas |= (uint64_t)(unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(bytes, comma))
                    << (32 * i);
        m.zeros |= (uint64_t)(unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(bytes, zero))
                   << (32 * i);
        m.digits |= (uint64_t)(unsigned)_mm256_movemask_epi8(
                        _mm256_cmpeq_epi8(_mm256_min_epu8(digit, nine), digit))
                    << (32 * i);
    }
    return m;
}

DATA_AVX2 static int block_pixels_avx2(const unsigned char *p0, const unsigned char *end,
                                       uint8_t *image)
{
    return block_pixels(p0, end, image, block_masks_avx2);
}
#endif

typedef int (*block_pixels_fn)(const unsigned char *p0, const unsigned char *end, uint8_t *image);

/* AVX2 where the CPU has it; DIGITS_DATA_GENERIC=1 forces the portable masks (the tests run
 * both). */
static block_pixels_fn choose_block_pixels(void)
{
    const char *generic = getenv("DIGITS_DATA_GENERIC");
    if (generic && generic[0] == '1')
        return block_pixels_generic;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") &&
        __builtin_cpu_supports("popcnt"))
        return block_pixels_avx2;
#endif
    return block_pixels_generic;
}

/* One data row: the block path, or csv_parse_row when the row is anything but plain. */
static enum dg_status csv_row(const struct csv *c, const unsigned char *line,
                              const unsigned char *eol, uint8_t *image, uint8_t *label)
{
    const unsigned char *end = eol;
    if (end > line && end[-1] == '\r')
        end--;
    const unsigned char *pixels = line;
    if (c->labelled) {
        unsigned value;
        if (fast_field(line, &value) != 2 || value > 9)
            return csv_parse_row(c, line, eol, image, label);
        *label = (uint8_t)value;
        pixels += 2;
    }
    if (c->block_pixels(pixels, end, image))
        return DG_OK;
    return csv_parse_row(c, line, eol, image, label);
}

/* Checks the header line [line, eol) and sets the layout. */
static enum dg_status csv_header(struct csv *c, const unsigned char *line, const unsigned char *eol)
{
    const unsigned char *end = eol;
    if (end > line && end[-1] == '\r')
        end--;
    const unsigned char *p = line;
    if ((size_t)(end - p) >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        return dg_error(DG_ERR_INPUT,
                        "%s:1:1: a UTF-8 byte order mark before the header "
                        "(expected plain ASCII 'label,pixel0,...' or 'pixel0,...')",
                        c->path);
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
                    return dg_error(DG_ERR_INPUT,
                                    "%s:1:%zu: byte 0x%02x: binary data, not a "
                                    "Kaggle CSV or MNIST IDX file",
                                    c->path, (size_t)(q - line) + 1, *q);
            return dg_error(DG_ERR_INPUT,
                            "%s:1:%zu: wrong header (expected "
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

/* ---- the parallel CSV load ----
 * The calling thread is the producer: it reads (or inflates) the file into 1 MiB buffers
 * exactly as the serial parse did (the partial last line carried over to the next buffer),
 * checks the header, counts the lines of each buffer so that each knows the file line and
 * store row of its first line, grows the store when needed (only this thread calls the
 * allocator, which may be the CUDA backend's pinned memory), and queues the buffer as a chunk.
 * Worker threads parse queued chunks straight into the store, each row into its own slot; the
 * producer parses one itself whenever it has no free buffer to read into, so with one thread
 * the load is the serial parse. Every error is recorded with its line number (source errors
 * with the first line not yet read) and the earliest wins: chunks are queued in file order and
 * no chunk is queued after an error, so every line before the winning one has been parsed,
 * and the message is exactly the serial one. */

#define MAX_LOAD_THREADS 16
#define LOAD_BUFFERS (MAX_LOAD_THREADS + 2)

#define CHUNK_ENDS 1024 /* newlines remembered per chunk (a valid row is >= 1568 bytes) */

struct chunk {
    unsigned char *buf;       /* CHUNK_BYTES + CHUNK_PAD */
    size_t start, stop;       /* complete lines [start, stop); buf[stop] = '\n' */
    size_t first_line;        /* file line number of the line at start */
    uint8_t *images, *labels; /* the store slots of that line (labels NULL: test layout) */
    /* where the first `ends` lines end (found while counting them: the parse does not look
     * for them again) */
    uint32_t end[CHUNK_ENDS];
    size_t ends;
};

struct loader {
    struct csv csv; /* path, layout, block parser (line: set per chunk) */
    pthread_mutex_t mutex;
    pthread_cond_t work; /* workers: a chunk was queued, or no more will be */
    pthread_cond_t idle; /* producer: a chunk was finished */
    struct chunk chunks[LOAD_BUFFERS];
    int buffers, allocated; /* buffers allowed, allocated so far (chunks[0].buf: the caller's) */
    int free_list[LOAD_BUFFERS], free_count;
    /* queued chunks: a ring of indices */
    int queue[LOAD_BUFFERS], queue_head, queue_count;
    int busy; /* queued or being parsed */
    int done; /* nothing more will be queued */
    pthread_t workers[MAX_LOAD_THREADS];
    int worker_count;
    /* the earliest error */
    int failed;
    size_t error_line;
    enum dg_status error_status;
    char error_message[1024];
};

/* Threads for a load: `requested`, else DIGITS_DATA_THREADS, else the online CPUs; at most
 * MAX_LOAD_THREADS and no more than the file has buffers (when its size is known). */
static int load_threads(int requested, size_t size_hint)
{
    long n = requested;
    if (n <= 0) {
        const char *env = getenv("DIGITS_DATA_THREADS");
        n = env ? strtol(env, NULL, 10) : 0;
        if (n <= 0)
            n = sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (n < 1)
        n = 1;
    if (n > MAX_LOAD_THREADS)
        n = MAX_LOAD_THREADS;
    if (size_hint && (size_t)n > size_hint / CHUNK_BYTES + 1)
        n = (long)(size_hint / CHUNK_BYTES + 1);
    return (int)n;
}

/* Records an error at `line` with this thread's message, unless an earlier one is recorded.
 * Called with the mutex held. */
static void loader_fail_locked(struct loader *ld, size_t line, enum dg_status status)
{
    if (ld->failed && ld->error_line <= line)
        return;
    ld->failed = 1;
    ld->error_line = line;
    ld->error_status = status;
    snprintf(ld->error_message, sizeof ld->error_message, "%s", dg_error_message());
}

static void loader_fail(struct loader *ld, size_t line, enum dg_status status)
{
    pthread_mutex_lock(&ld->mutex);
    loader_fail_locked(ld, line, status);
    pthread_mutex_unlock(&ld->mutex);
}

/* Parses the lines of one chunk into the store; on an error sets *line to its line number. An
 * empty line is an error unless it is the chunk's last line (the producer decides that one:
 * only the very last line of a file may be empty). */
static enum dg_status parse_chunk(const struct loader *ld, const struct chunk *ch, size_t *line)
{
    struct csv c = ld->csv;
    c.line = ch->first_line;
    const unsigned char *p = ch->buf + ch->start;
    const unsigned char *stop = ch->buf + ch->stop;
    uint8_t *image = ch->images;
    uint8_t *label = ch->labels;
    for (size_t i = 0; p < stop; i++) {
        /* past the remembered ends, the next newline (buf[stop] is one) */
        const unsigned char *eol =
            i < ch->ends ? ch->buf + ch->end[i] : memchr(p, '\n', (size_t)(stop - p) + 1);
        size_t len = (size_t)(eol - p);
        if (len == 0 || (len == 1 && p[0] == '\r')) {
            if (eol + 1 < stop) {
                *line = c.line;
                return dg_error(DG_ERR_INPUT, "%s:%zu:1: empty line", c.path, c.line);
            }
        } else {
            enum dg_status status = csv_row(&c, p, eol, image, label);
            if (status != DG_OK) {
                *line = c.line;
                return status;
            }
        }
        image += DG_PIXELS;
        if (label)
            label++;
        c.line++;
        p = eol + 1;
    }
    return DG_OK;
}

/* Takes the oldest queued chunk, parses it (unless an earlier error makes it moot) and frees
 * its buffer. Called with the mutex held and a chunk queued; returns with it held. */
static void loader_run_one_locked(struct loader *ld)
{
    int index = ld->queue[ld->queue_head];
    ld->queue_head = (ld->queue_head + 1) % LOAD_BUFFERS;
    ld->queue_count--;
    const struct chunk *ch = &ld->chunks[index]; /* this thread's until it is given back */
    int moot = ld->failed && ld->error_line < ch->first_line;
    pthread_mutex_unlock(&ld->mutex);
    size_t line = 0;
    enum dg_status status = moot ? DG_OK : parse_chunk(ld, ch, &line);
    pthread_mutex_lock(&ld->mutex);
    if (status != DG_OK)
        loader_fail_locked(ld, line, status);
    ld->free_list[ld->free_count++] = index;
    ld->busy--;
    pthread_cond_signal(&ld->idle);
}

static void *loader_worker(void *arg)
{
    struct loader *ld = arg;
    pthread_mutex_lock(&ld->mutex);
    for (;;) {
        while (ld->queue_count == 0 && !ld->done)
            pthread_cond_wait(&ld->work, &ld->mutex);
        if (ld->queue_count == 0)
            break;
        loader_run_one_locked(ld);
    }
    pthread_mutex_unlock(&ld->mutex);
    return NULL;
}

/* A free buffer for the producer (-1: out of memory): a new one while fewer than `buffers`
 * exist, else one given back, parsing queued chunks itself while it waits. Mutex held. */
static int loader_take_buffer_locked(struct loader *ld)
{
    for (;;) {
        if (ld->free_count > 0)
            return ld->free_list[--ld->free_count];
        if (ld->allocated < ld->buffers) {
            unsigned char *buf = calloc(1, CHUNK_BYTES + CHUNK_PAD);
            if (buf) {
                ld->chunks[ld->allocated].buf = buf;
                return ld->allocated++;
            }
            if (ld->busy == 0)
                return -1;
            ld->buffers = ld->allocated; /* make do with what there is */
        }
        if (ld->queue_count > 0)
            loader_run_one_locked(ld);
        else
            pthread_cond_wait(&ld->idle, &ld->mutex);
    }
}

/* Waits until every queued chunk is parsed, helping. Mutex held. */
static void loader_drain_locked(struct loader *ld)
{
    while (ld->busy > 0) {
        if (ld->queue_count > 0)
            loader_run_one_locked(ld);
        else
            pthread_cond_wait(&ld->idle, &ld->mutex);
    }
}

static void loader_give_back(struct loader *ld, int index)
{
    pthread_mutex_lock(&ld->mutex);
    ld->free_list[ld->free_count++] = index;
    pthread_mutex_unlock(&ld->mutex);
}

/* The newlines in buf[start, stop); the first CHUNK_ENDS are remembered in ch. */
static size_t count_newlines(struct chunk *ch, size_t start, size_t stop)
{
    const unsigned char *p = ch->buf + start, *end = ch->buf + stop;
    size_t n = 0;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (n < CHUNK_ENDS)
            ch->end[n] = (uint32_t)(p - ch->buf);
        n++;
        p++;
    }
    ch->ends = n < CHUNK_ENDS ? n : CHUNK_ENDS;
    return n;
}

/* Parses the CSV whose first `have` bytes are already in buf (CHUNK_BYTES + CHUNK_PAD). */
static enum dg_status load_csv(struct source *src, unsigned char *buf, size_t have,
                               struct store *st, enum dg_data_format *format, int threads)
{
    if (have == 0)
        return dg_error(DG_ERR_INPUT, "%s:1:1: empty file", src->path);
    unsigned char *carry = malloc(CHUNK_BYTES);
    struct loader *ld = calloc(1, sizeof *ld);
    if (!carry || !ld) {
        free(carry);
        free(ld);
        return dg_error(DG_ERR_NOMEM, "%s: out of memory", src->path);
    }
    threads = load_threads(threads, src->size_hint);
    ld->csv = (struct csv){src->path, 1, 0, 0, choose_block_pixels()};
    pthread_mutex_init(&ld->mutex, NULL);
    pthread_cond_init(&ld->work, NULL);
    pthread_cond_init(&ld->idle, NULL);
    /* one thread: one buffer, read and parse in turn, as a serial parse; else one per
     * thread, one to read into and one queued */
    ld->buffers = threads == 1 ? 1 : threads + 2;
    ld->chunks[0].buf = buf;
    ld->allocated = 1;

    struct csv *c = &ld->csv;
    enum dg_status status;
    size_t next_line = 1;     /* file line number of the next line to queue */
    size_t rows = 0;          /* rows queued so far */
    size_t rest = 0;          /* bytes in carry: the start of a line */
    size_t pending_empty = 0; /* line number of an empty last line of the last chunk */
    int header_done = 0, eof = 0;
    for (int index = 0, first = 1;; first = 0) {
        unsigned char *data;
        if (!first) {
            pthread_mutex_lock(&ld->mutex);
            index = eof || ld->failed ? -2 : loader_take_buffer_locked(ld);
            pthread_mutex_unlock(&ld->mutex);
            if (index == -2)
                break;
            if (index < 0) {
                loader_fail(ld, next_line, dg_error(DG_ERR_NOMEM, "%s: out of memory", c->path));
                break;
            }
            data = ld->chunks[index].buf;
            memcpy(data, carry, rest);
            size_t got;
            if ((status = source_read(src, data + rest, CHUNK_BYTES - rest, &got)) != DG_OK) {
                loader_give_back(ld, index);
                loader_fail(ld, next_line, status);
                break;
            }
            have = rest + got;
            if (got == 0)
                eof = 1;
        } else {
            data = buf;
        }
        /* complete lines [0, stop): all of it at the end, else up to the last newline */
        size_t stop = have;
        if (!eof) {
            while (stop > 0 && data[stop - 1] != '\n')
                stop--;
            if (stop == 0 && have == CHUNK_BYTES) {
                loader_give_back(ld, index);
                loader_fail(ld, next_line,
                            dg_error(DG_ERR_INPUT,
                                     "%s:%zu:1: line longer than %u bytes (not a digits "
                                     "CSV row)",
                                     c->path, next_line, CHUNK_BYTES));
                break;
            }
        }
        rest = have - stop;
        memcpy(carry, data + stop, rest);
        if (stop == 0) {
            loader_give_back(ld, index);
            continue;
        }
        if (pending_empty) {
            loader_give_back(ld, index);
            loader_fail(ld, pending_empty,
                        dg_error(DG_ERR_INPUT, "%s:%zu:1: empty line", c->path, pending_empty));
            break;
        }
        data[stop] = '\n'; /* ends a last line that has no newline */
        size_t start = 0;
        if (!header_done) {
            unsigned char *eol = memchr(data, '\n', stop + 1);
            size_t len = (size_t)(eol - data);
            if (len == 0 || (len == 1 && data[0] == '\r'))
                status = dg_error(DG_ERR_INPUT, "%s:1:1: empty header line", c->path);
            else
                status = csv_header(c, data, eol);
            if (status != DG_OK) {
                loader_give_back(ld, index);
                loader_fail(ld, 1, status);
                break;
            }
            header_done = 1;
            st->labelled = c->labelled;
            *format = c->labelled ? DG_FORMAT_CSV_TRAIN : DG_FORMAT_CSV_TEST;
            /* sized once from the (uncompressed) size when known; a wrong gzip size hint that
             * cannot be met leaves the store to grow instead */
            size_t bound = src->size_hint ? src->size_hint / MIN_ROW_BYTES + 1 : 0;
            if (bound && store_reserve(st, bound, c->path) != DG_OK)
                dg_error_clear();
            next_line = 2;
            start = len + 1 < stop ? len + 1 : stop;
            if (start == stop) {
                loader_give_back(ld, index);
                continue;
            }
        }
        /* the lines of [start, stop), and whether the last one is empty */
        size_t lines = count_newlines(&ld->chunks[index], start, stop) + (data[stop - 1] != '\n');
        size_t last_end = data[stop - 1] == '\n' ? stop - 1 : stop;
        int last_empty =
            last_end == start || data[last_end - 1] == '\n' ||
            (data[last_end - 1] == '\r' && (last_end - 1 == start || data[last_end - 2] == '\n'));
        size_t chunk_rows = lines - (size_t)last_empty;
        if (rows + chunk_rows > st->capacity) {
            /* grown as the serial parse grows it (doubling), once every queued row is in */
            pthread_mutex_lock(&ld->mutex);
            loader_drain_locked(ld);
            int failed = ld->failed;
            pthread_mutex_unlock(&ld->mutex);
            status = DG_OK;
            st->count = rows;
            while (!failed && status == DG_OK && st->capacity < rows + chunk_rows)
                status = store_reserve(st, st->capacity ? st->capacity + 1 : 1024, c->path);
            if (failed || status != DG_OK) {
                loader_give_back(ld, index);
                if (status != DG_OK)
                    loader_fail(ld, next_line, status);
                break;
            }
        }
        if (chunk_rows > 0) {
            struct chunk *ch = &ld->chunks[index];
            ch->start = start;
            ch->stop = stop;
            ch->first_line = next_line;
            ch->images = st->images + rows * DG_PIXELS;
            ch->labels = st->labelled ? st->labels + rows : NULL;
            pthread_mutex_lock(&ld->mutex);
            ld->queue[(ld->queue_head + ld->queue_count) % LOAD_BUFFERS] = index;
            ld->queue_count++;
            ld->busy++;
            pthread_cond_signal(&ld->work);
            pthread_mutex_unlock(&ld->mutex);
        } else {
            loader_give_back(ld, index);
        }
        rows += chunk_rows;
        next_line += lines;
        if (last_empty)
            pending_empty = next_line - 1;
        /* a full buffer, so more may follow: start the workers (a failure only means fewer) */
        if (have == CHUNK_BYTES && ld->worker_count < threads - 1) {
            while (ld->worker_count < threads - 1 &&
                   pthread_create(&ld->workers[ld->worker_count], NULL, loader_worker, ld) == 0)
                ld->worker_count++;
            threads = ld->worker_count + 1;
        }
    }
    pthread_mutex_lock(&ld->mutex);
    ld->done = 1;
    pthread_cond_broadcast(&ld->work);
    loader_drain_locked(ld);
    pthread_mutex_unlock(&ld->mutex);
    for (int i = 0; i < ld->worker_count; i++)
        pthread_join(ld->workers[i], NULL);
    for (int i = 1; i < ld->allocated; i++)
        free(ld->chunks[i].buf);
    if (ld->failed)
        status = dg_error(ld->error_status, "%s", ld->error_message);
    else if (!header_done)
        status = dg_error(DG_ERR_INPUT, "%s:1:1: empty file", src->path);
    else if (rows == 0)
        status = dg_error(DG_ERR_INPUT, "%s:2:1: no data rows after the header", src->path);
    else
        status = DG_OK;
    st->count = rows;
    pthread_cond_destroy(&ld->idle);
    pthread_cond_destroy(&ld->work);
    pthread_mutex_destroy(&ld->mutex);
    free(ld);
    free(carry);
    return status;
}

/* ---- IDX ---- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

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
        if ((status = source_read(src, dst + copied, bytes - copied, &got)) != DG_OK)
            return status;
        if (got == 0)
            return idx_short(src, header, bytes, copied, what);
        copied += got;
    }
    size_t extra;
    unsigned char probe[1];
    if ((status = source_read(src, probe, 1, &extra)) != DG_OK)
        return status;
    if (extra)
        return idx_trailing(src, header, bytes, what);
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
            if ((status = source_read(src, buf, CHUNK_BYTES, &got)) != DG_OK)
                return status;
            present += got;
        } while (got);
        return idx_short(src, 16, body, present, "images");
    }
    status = store_reserve(st, count, src->path);
    if (status != DG_OK)
        return status;
    if ((status = idx_body(src, buf, have, 16, st->images, (size_t)count * DG_PIXELS, "images")) !=
        DG_OK)
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
        status = dg_error(DG_ERR_INPUT,
                          "%s: byte 0: not an IDX label file (magic 0x%08x, "
                          "expected 0x%08x)",
                          path, magic, IDX_LABELS_MAGIC);
        goto done;
    }
    uint32_t count = be32(buf + 4);
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
    source_close(&src);
    return status;
}

/* ---- entry points ---- */

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
    st.alloc = allocator ? *allocator : default_allocator;
    enum dg_status status = source_open(&src, path);
    if (status != DG_OK)
        goto fail;
    buf = calloc(1, CHUNK_BYTES + CHUNK_PAD);
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
    } else if (have >= 2 && buf[0] == 0 && buf[1] == 0) {
        /* no text starts with NUL bytes: an IDX file of another kind, or a broken one */
        if (have < 4)
            status = dg_error(DG_ERR_INPUT,
                              "%s: byte %zu: truncated IDX header (16 bytes "
                              "expected)",
                              path, have);
        else
            status =
                dg_error(DG_ERR_INPUT,
                         "%s: byte 0: IDX magic 0x%08x is not an image file "
                         "(expected 0x%08x: 28x28 unsigned bytes%s)",
                         path, be32(buf), IDX_IMAGES_MAGIC,
                         be32(buf) == IDX_LABELS_MAGIC ? "; label files go with --labels" : "");
        goto fail;
    } else {
        if (labels_path) {
            status = dg_error(DG_ERR_USAGE,
                              "%s: --labels is for MNIST IDX images, but this is "
                              "a CSV file (its labels are its first column)",
                              path);
            goto fail;
        }
        if ((status = load_csv(&src, buf, have, &st, &format, threads)) != DG_OK)
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
