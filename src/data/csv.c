/* The CSV rows of the data layer: the header, and each data row, which takes a branch-free
 * block path (bitmasks of separators, 64 bytes at a time); anything unusual goes to a careful
 * parser that names the problem: "FILE:LINE:COL: message". */
#include "data/data_internal.h"
#include "digits/cpu_features.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* AVX2 where the CPU has it; DIGITS_DATA_GENERIC=1 forces the portable masks (the tests run
 * both). */
dg_data_block_pixels_fn dg_data_csv_choose_block_pixels(void)
{
    const char *generic = getenv("DIGITS_DATA_GENERIC");
    if (generic && generic[0] == '1')
        return block_pixels_generic;
#if defined(__x86_64__) && defined(__GNUC__)
    const struct dg_cpu_features *cpu = dg_cpu_features();
    if (cpu->avx2 && cpu->bmi2 && cpu->popcnt)
        return block_pixels_avx2;
#endif
    return block_pixels_generic;
}

/* One data row: the block path, or csv_parse_row when the row is anything but plain. */
enum dg_status dg_data_csv_row(const struct csv *c, const unsigned char *line,
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

/* The compressed format that a file's first bytes name, and how to undo it; NULL for none
 * (gzip is read as is: one here is gzip inside gzip). */
static const char *compressed_kind(const unsigned char *p, size_t n, const char **undo)
{
    static const struct {
        const char *magic;
        size_t length;
        const char *name, *undo;
    } kinds[] = {
        {"BZh", 3, "a bzip2 file", "decompress it (bunzip2)"},
        {"\xfd" "7zXZ", 6, "an xz file", "decompress it (unxz)"},
        {"\x28\xb5\x2f\xfd", 4, "a zstd file", "decompress it (unzstd)"},
        {"\x1f\x8b", 2, "gzip inside gzip (compressed twice)", "gunzip it once"},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (n >= kinds[i].length && memcmp(p, kinds[i].magic, kinds[i].length) == 0) {
            *undo = kinds[i].undo;
            return kinds[i].name;
        }
    /* zlib: CMF 0x78 (deflate, 32 KB window), FLG making the pair a multiple of 31 */
    if (n >= 2 && p[0] == 0x78 && (p[0] * 256 + p[1]) % 31 == 0) {
        *undo = "decompress it, or recompress it with gzip";
        return "zlib data (not gzip)";
    }
    return NULL;
}

/* Checks the header line [line, eol) and sets the layout. */
enum dg_status dg_data_csv_header(struct csv *c, const unsigned char *line,
                                  const unsigned char *eol)
{
    const unsigned char *end = eol;
    if (end > line && end[-1] == '\r')
        end--;
    const unsigned char *p = line;
    const char *undo, *kind = compressed_kind(p, (size_t)(end - p), &undo);
    if (kind)
        return dg_error(DG_ERR_INPUT,
                        "%s:1:1: %s, not a Kaggle CSV or MNIST IDX file: %s (digits reads "
                        "plain and gzip files)",
                        c->path, kind, undo);
    if ((size_t)(end - p) >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        return dg_error(DG_ERR_INPUT,
                        "%s:1:1: a UTF-8 byte order mark before the header "
                        "(expected plain ASCII 'label,pixel0,...' or 'pixel0,...': save the "
                        "file without the mark)",
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
    if (p != end && *p == '\r')
        return dg_error(DG_ERR_INPUT,
                        "%s:1:%zu: a carriage return ending the header, with no line feed: "
                        "lines that end in CR alone (old Mac text); convert them to LF or CRLF",
                        c->path, (size_t)(p - line) + 1);
    if (p != end)
        return dg_error(DG_ERR_INPUT, "%s:1:%zu: wrong header: unexpected text after pixel783",
                        c->path, (size_t)(p - line) + 1);
    return DG_OK;
}
