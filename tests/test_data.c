/* The data layer: happy paths (CSV train/test layouts, gzip, IDX raw and gzip, CRLF, missing
 * final newline, one trailing empty line), a catalogue of every refusal with its exact line and
 * column, the allocator hook, and the cross-check of the shared CSV against the shared IDX. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cli_util.h"
#include "digits/data.h"
#include "test_util.h"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/digits-test-data-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tmp_path(const char *name)
{
    static char paths[4][512];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, 512, "%s/%s", tmpdir, name);
    return path;
}

/* ---- fixtures ---- */

struct text {
    char *data;
    size_t size, capacity;
};

static void put(struct text *t, const char *s, size_t n)
{
    if (t->size + n + 1 > t->capacity) {
        t->capacity = (t->size + n + 1) * 2;
        t->data = realloc(t->data, t->capacity);
        ck_assert_ptr_nonnull(t->data);
    }
    memcpy(t->data + t->size, s, n);
    t->size += n;
    t->data[t->size] = '\0';
}

static void puts_text(struct text *t, const char *s)
{
    put(t, s, strlen(s));
}

static void header(struct text *t, int labelled, const char *eol)
{
    if (labelled)
        puts_text(t, "label,");
    char field[16];
    for (int k = 0; k < DG_PIXELS; k++) {
        snprintf(field, sizeof field, "pixel%d%s", k, k + 1 < DG_PIXELS ? "," : "");
        puts_text(t, field);
    }
    puts_text(t, eol);
}

/* The pixel value of image `row` at k: a deterministic pattern using 0..255. */
static int pixel(int row, int k)
{
    return (k * 7 + row * 31) % 3 == 0 ? 0 : (k * 13 + row * 101) % 256;
}

static void row(struct text *t, int labelled, int index, const char *eol)
{
    char field[16];
    if (labelled) {
        snprintf(field, sizeof field, "%d,", index % 10);
        puts_text(t, field);
    }
    for (int k = 0; k < DG_PIXELS; k++) {
        snprintf(field, sizeof field, "%d%s", pixel(index, k), k + 1 < DG_PIXELS ? "," : "");
        puts_text(t, field);
    }
    puts_text(t, eol);
}

static struct text csv(int labelled, int rows, const char *eol)
{
    struct text t = {0};
    header(&t, labelled, eol);
    for (int i = 0; i < rows; i++)
        row(&t, labelled, i, eol);
    return t;
}

static const char *write_file(const char *name, const void *data, size_t size)
{
    const char *path = tmp_path(name);
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
    return path;
}

static const char *write_gz(const char *name, const void *data, size_t size)
{
    const char *path = tmp_path(name);
    gzFile gz = gzopen(path, "wb6");
    ck_assert_ptr_nonnull(gz);
    ck_assert_int_eq(gzwrite(gz, data, (unsigned)size), (int)size);
    gzclose(gz);
    return path;
}

/* Asserts once per store, not per value: Check records every passing assertion (a write to
 * its message file), which dominated the large fixtures under qemu-user. */
static void check_pattern(const struct dg_dataset *d, int rows, int labelled)
{
    ck_assert_uint_eq(d->count, (size_t)rows);
    for (int i = 0; i < rows; i++)
        for (int k = 0; k < DG_PIXELS; k++)
            if (d->images[(size_t)i * DG_PIXELS + k] != pixel(i, k))
                ck_abort_msg("row %d pixel %d: got %d, expected %d", i, k,
                             d->images[(size_t)i * DG_PIXELS + k], pixel(i, k));
    if (labelled) {
        ck_assert_ptr_nonnull(d->labels);
        for (int i = 0; i < rows; i++)
            if (d->labels[i] != i % 10)
                ck_abort_msg("row %d: label %d, expected %d", i, d->labels[i], i % 10);
    } else {
        ck_assert_ptr_null(d->labels);
    }
}

/* ---- happy paths ---- */

START_TEST(csv_train_layout)
{
    struct text t = csv(1, 25, "\n");
    struct dg_dataset d;
    ck_assert_int_eq(dg_dataset_load(write_file("a.csv", t.data, t.size), NULL, NULL, &d), DG_OK);
    ck_assert_int_eq(d.format, DG_FORMAT_CSV_TRAIN);
    ck_assert_int_eq(d.gzipped, 0);
    ck_assert_uint_eq(d.bytes_parsed, t.size);
    check_pattern(&d, 25, 1);
    dg_dataset_free(&d);
    free(t.data);
}
END_TEST

START_TEST(csv_test_layout_gzip_named_anything)
{
    struct text t = csv(0, 13, "\n");
    struct dg_dataset d;
    /* the name says .csv, the content is gzip: content decides */
    ck_assert_int_eq(dg_dataset_load(write_gz("plain-looking.csv", t.data, t.size), NULL, NULL, &d),
                     DG_OK);
    ck_assert_int_eq(d.format, DG_FORMAT_CSV_TEST);
    ck_assert_int_eq(d.gzipped, 1);
    ck_assert_uint_eq(d.bytes_parsed, t.size);
    check_pattern(&d, 13, 0);
    dg_dataset_free(&d);
    free(t.data);
}
END_TEST

START_TEST(crlf_missing_final_newline_trailing_empty_line)
{
    struct dg_dataset d;
    struct text t = csv(1, 4, "\r\n");
    ck_assert_int_eq(dg_dataset_load(write_file("crlf.csv", t.data, t.size), NULL, NULL, &d),
                     DG_OK);
    check_pattern(&d, 4, 1);
    dg_dataset_free(&d);
    t.size -= 2; /* no final CRLF */
    ck_assert_int_eq(dg_dataset_load(write_file("nofinal.csv", t.data, t.size), NULL, NULL, &d),
                     DG_OK);
    check_pattern(&d, 4, 1);
    dg_dataset_free(&d);
    free(t.data);
    t = csv(0, 3, "\n");
    puts_text(&t, "\n"); /* one trailing empty line */
    ck_assert_int_eq(dg_dataset_load(write_file("trail.csv", t.data, t.size), NULL, NULL, &d),
                     DG_OK);
    check_pattern(&d, 3, 0);
    dg_dataset_free(&d);
    free(t.data);
}
END_TEST

/* Rows of the "large" fixtures: about 5 MB, several 1 MiB read chunks; reduced (emulators),
 * about 2.2 MB, still three chunks. */
static int large_rows(void)
{
    return dg_test_reduced() ? 1100 : 2500;
}

START_TEST(large_file_spans_many_buffers)
{
    const int rows = large_rows();
    struct text t = csv(1, rows, "\n");
    ck_assert_uint_gt(t.size, (size_t)2 << 20);
    struct dg_dataset d;
    ck_assert_int_eq(dg_dataset_load(write_file("big.csv", t.data, t.size), NULL, NULL, &d), DG_OK);
    check_pattern(&d, rows, 1);
    dg_dataset_free(&d);
    ck_assert_int_eq(dg_dataset_load(write_gz("big.csv.gz", t.data, t.size), NULL, NULL, &d),
                     DG_OK);
    check_pattern(&d, rows, 1);
    dg_dataset_free(&d);
    free(t.data);
}
END_TEST

static void be32(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX images (magic 2051, count, 28, 28) + body, and labels (2049, count) + body. */
static unsigned char *idx_images(int count, size_t *size)
{
    *size = 16 + (size_t)count * DG_PIXELS;
    unsigned char *data = malloc(*size);
    be32(data, 2051);
    be32(data + 4, (unsigned)count);
    be32(data + 8, 28);
    be32(data + 12, 28);
    for (int i = 0; i < count; i++)
        for (int k = 0; k < DG_PIXELS; k++)
            data[16 + (size_t)i * DG_PIXELS + k] = (unsigned char)pixel(i, k);
    return data;
}

static unsigned char *idx_labels(int count, size_t *size)
{
    *size = 8 + (size_t)count;
    unsigned char *data = malloc(*size);
    be32(data, 2049);
    be32(data + 4, (unsigned)count);
    for (int i = 0; i < count; i++)
        data[8 + i] = (unsigned char)(i % 10);
    return data;
}

START_TEST(idx_raw_and_gzip)
{
    size_t isize, lsize;
    unsigned char *images = idx_images(17, &isize);
    unsigned char *labels = idx_labels(17, &lsize);
    struct dg_dataset d;
    const char *ip = write_file("images.idx", images, isize);
    const char *lp = write_file("labels.idx", labels, lsize);
    ck_assert_int_eq(dg_dataset_load(ip, lp, NULL, &d), DG_OK);
    ck_assert_int_eq(d.format, DG_FORMAT_IDX);
    check_pattern(&d, 17, 1);
    dg_dataset_free(&d);
    ck_assert_int_eq(dg_dataset_load(ip, NULL, NULL, &d), DG_OK);
    check_pattern(&d, 17, 0);
    dg_dataset_free(&d);
    ip = write_gz("images.gz", images, isize);
    lp = write_gz("labels.gz", labels, lsize);
    ck_assert_int_eq(dg_dataset_load(ip, lp, NULL, &d), DG_OK);
    ck_assert_int_eq(d.gzipped, 1);
    check_pattern(&d, 17, 1);
    dg_dataset_free(&d);
    free(images);
    free(labels);
}
END_TEST

static int alloc_calls, free_calls;

static void *counting_alloc(size_t bytes, void *ctx)
{
    ck_assert_ptr_eq(ctx, &alloc_calls);
    alloc_calls++;
    return malloc(bytes);
}

static void counting_free(void *ptr, void *ctx)
{
    ck_assert_ptr_eq(ctx, &alloc_calls);
    free_calls++;
    free(ptr);
}

START_TEST(allocator_hook_and_truncate)
{
    struct dg_allocator hook = {counting_alloc, counting_free, &alloc_calls};
    struct text t = csv(1, 40, "\n");
    struct dg_dataset d;
    alloc_calls = free_calls = 0;
    ck_assert_int_eq(dg_dataset_load(write_file("h.csv", t.data, t.size), NULL, &hook, &d), DG_OK);
    /* images and labels sized once from the file size: no regrowth */
    ck_assert_int_eq(alloc_calls, 2);
    check_pattern(&d, 40, 1);
    dg_dataset_truncate(&d, 7);
    ck_assert_uint_eq(d.count, 7);
    dg_dataset_truncate(&d, 100);
    ck_assert_uint_eq(d.count, 7);
    dg_dataset_free(&d);
    ck_assert_int_eq(free_calls, 2);
    /* on a refusal everything allocated is given back */
    alloc_calls = free_calls = 0;
    t.data[t.size - 5] = 'x';
    ck_assert_int_eq(dg_dataset_load(write_file("h2.csv", t.data, t.size), NULL, &hook, &d),
                     DG_ERR_INPUT);
    ck_assert_int_eq(alloc_calls, free_calls);
    ck_assert_ptr_null(d.images);
    free(t.data);
}
END_TEST

/* ---- refusals ---- */

/* Loads `t` (as a file, and gzipped) and expects DG_ERR_INPUT with exactly `message` after
 * the "PATH:" prefix. */
static void expect_refusal(const struct text *t, const char *message)
{
    const char *variants[2];
    variants[0] = write_file("bad.csv", t->data, t->size);
    variants[1] = write_gz("bad.csv.gz", t->data, t->size);
    for (int v = 0; v < 2; v++) {
        struct dg_dataset d;
        ck_assert_int_eq(dg_dataset_load(variants[v], NULL, NULL, &d), DG_ERR_INPUT);
        char expected[1024];
        snprintf(expected, sizeof expected, "%s:%s", variants[v], message);
        if (strcmp(dg_error_message(), expected) != 0)
            ck_abort_msg("got      '%s'\nexpected '%s'", dg_error_message(), expected);
        ck_assert_ptr_null(d.images);
    }
}

/* A valid train file of 3 rows whose row `line` (2-based file line) has field `field`
 * (0 = label) replaced by `value`. */
static struct text with_field(int line, int field, const char *value)
{
    struct text t = {0};
    header(&t, 1, "\n");
    for (int i = 0; i < 3; i++) {
        if (i + 2 != line) {
            row(&t, 1, i, "\n");
            continue;
        }
        char f[16];
        for (int k = 0; k <= DG_PIXELS; k++) {
            const char *text = value;
            if (k != field) {
                snprintf(f, sizeof f, "%d", k == 0 ? i % 10 : pixel(i, k - 1));
                text = f;
            }
            puts_text(&t, text);
            puts_text(&t, k < DG_PIXELS ? "," : "\n");
        }
    }
    return t;
}

/* The 1-based column of field `field` of line `line` in with_field's text. */
static size_t column_of(const struct text *t, int line, int field)
{
    const char *p = t->data;
    for (int l = 1; l < line; l++)
        p = strchr(p, '\n') + 1;
    const char *start = p;
    for (int f = 0; f < field; f++)
        p = strchr(p, ',') + 1;
    return (size_t)(p - start) + 1;
}

static void expect_field_refusal(int line, int field, const char *value, const char *what)
{
    struct text t = with_field(line, field, value);
    char message[512];
    snprintf(message, sizeof message, "%d:%zu: %s", line, column_of(&t, line, field), what);
    expect_refusal(&t, message);
    free(t.data);
}

START_TEST(refuses_empty_and_header_only)
{
    struct text t = {calloc(1, 1), 0, 1};
    expect_refusal(&t, "1:1: empty file");
    free(t.data);
    t = (struct text){0};
    header(&t, 1, "\n");
    expect_refusal(&t, "2:1: no data rows after the header");
    free(t.data);
}
END_TEST

START_TEST(refuses_wrong_header)
{
    struct text t = csv(1, 2, "\n");
    memcpy(t.data + 6 + 7 + 2, "X", 1); /* "label,pixel0,pi" -> "label,pixel0,piXel1" */
    expect_refusal(&t, "1:16: wrong header (expected 'label,pixel0,...,pixel783' for the train "
                       "layout or 'pixel0,...,pixel783' for the test layout)");
    free(t.data);
    t = csv(0, 1, "\n");
    struct text bom = {0};
    puts_text(&bom, "\xef\xbb\xbf");
    put(&bom, t.data, t.size);
    expect_refusal(&bom, "1:1: a UTF-8 byte order mark before the header (expected plain ASCII "
                         "'label,pixel0,...' or 'pixel0,...': save the file without the mark)");
    free(bom.data);
    free(t.data);
    t = (struct text){0};
    puts_text(&t, "id,value\n1,2\n");
    expect_refusal(&t, "1:1: wrong header (expected 'label,pixel0,...,pixel783' for the train "
                       "layout or 'pixel0,...,pixel783' for the test layout)");
    free(t.data);
}
END_TEST

START_TEST(refuses_field_counts)
{
    /* too few: the row ends after pixel 500 */
    struct text t = {0};
    header(&t, 1, "\n");
    row(&t, 1, 0, "\n");
    size_t line_start = t.size;
    puts_text(&t, "3");
    for (int k = 0; k < 500; k++)
        puts_text(&t, ",1");
    size_t col = t.size - line_start + 1;
    puts_text(&t, "\n");
    char message[256];
    snprintf(message, sizeof message, "3:%zu: too few fields: 501, expected 785", col);
    expect_refusal(&t, message);
    free(t.data);
    /* too many: one extra field */
    t = (struct text){0};
    header(&t, 0, "\n");
    row(&t, 0, 0, "");
    col = t.size - (strchr(t.data, '\n') + 1 - t.data) + 2;
    puts_text(&t, ",7\n");
    snprintf(message, sizeof message, "2:%zu: too many fields (expected 784)", col);
    expect_refusal(&t, message);
    free(t.data);
}
END_TEST

START_TEST(refuses_bad_pixels)
{
    expect_field_refusal(3, 5, "", "empty field (expected a pixel value 0..255)");
    expect_field_refusal(2, 100, "-1", "pixel value '-1' is not a decimal integer 0..255");
    expect_field_refusal(2, 100, "+1", "pixel value '+1' is not a decimal integer 0..255");
    expect_field_refusal(4, 784, "2.5", "pixel value '2.5' is not a decimal integer 0..255");
    expect_field_refusal(2, 1, "abc", "pixel value 'abc' is not a decimal integer 0..255");
    expect_field_refusal(2, 1, "1e2", "pixel value '1e2' is not a decimal integer 0..255");
    expect_field_refusal(3, 300, "256", "pixel value '256' out of range 0..255");
    expect_field_refusal(3, 300, "1000", "pixel value '1000' out of range 0..255");
    /* values that would wrap a 32- or 64-bit integer into range stay out of range */
    expect_field_refusal(2, 2, "4294967296", "pixel value '4294967296' out of range 0..255");
    expect_field_refusal(2, 2, "18446744073709551617",
                         "pixel value '18446744073709551617' out of range 0..255");
}
END_TEST

START_TEST(refuses_bad_labels)
{
    expect_field_refusal(2, 0, "10", "label '10' out of range 0..9");
    expect_field_refusal(3, 0, "-1", "label '-1' is not a decimal integer 0..9");
    expect_field_refusal(4, 0, "", "empty field (expected a label 0..9)");
}
END_TEST

START_TEST(refuses_nul_and_binary)
{
    struct text t = with_field(3, 10, "1");
    size_t col = column_of(&t, 3, 10);
    const char *p = t.data;
    for (int l = 1; l < 3; l++)
        p = strchr(p, '\n') + 1;
    t.data[(size_t)(p - t.data) + col - 1] = '\0';
    char message[128];
    snprintf(message, sizeof message, "3:%zu: NUL byte", col);
    expect_refusal(&t, message);
    t.data[(size_t)(p - t.data) + col - 1] = (char)0xc3;
    snprintf(message, sizeof message, "3:%zu: unexpected byte 0xc3 (binary data?)", col);
    expect_refusal(&t, message);
    free(t.data);
    unsigned char garbage[4096];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (unsigned char)((i * 2654435761u) >> 13);
    garbage[0] = 'Q';
    struct text g = {0};
    put(&g, (const char *)garbage, sizeof garbage);
    snprintf(message, sizeof message,
             "1:2: byte 0x%02x: binary data, not a Kaggle CSV or MNIST "
             "IDX file",
             garbage[1]);
    if (garbage[1] >= 0x20 && garbage[1] < 0x7f)
        ck_abort_msg("fixture: second byte should not be printable");
    expect_refusal(&g, message);
    free(g.data);
}
END_TEST

START_TEST(refuses_empty_line_inside)
{
    struct text t = {0};
    header(&t, 1, "\n");
    row(&t, 1, 0, "\n");
    puts_text(&t, "\n");
    row(&t, 1, 1, "\n");
    expect_refusal(&t, "3:1: empty line (remove it: only the file's last line may be "
                       "empty)");
    free(t.data);
    t = csv(1, 2, "\n");
    puts_text(&t, "\n\n"); /* two trailing empty lines */
    expect_refusal(&t, "4:1: empty line (remove it: only the file's last line may be "
                       "empty)");
    free(t.data);
}
END_TEST

START_TEST(refuses_truncated_and_corrupt_gzip)
{
    struct text t = csv(1, 50, "\n");
    const char *path = write_gz("t.gz", t.data, t.size);
    FILE *fp = fopen(path, "rb");
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    ck_assert_uint_lt(n, sizeof buf);
    struct dg_dataset d;
    const char *cut = write_file("cut.gz", buf, n / 2);
    ck_assert_int_eq(dg_dataset_load(cut, NULL, NULL, &d), DG_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "truncated gzip stream"));
    ck_assert_ptr_nonnull(strstr(dg_error_message(), cut));
    buf[n / 2] ^= 0xff;
    buf[n / 2 + 1] ^= 0x5a;
    const char *bad = write_file("bad.gz", buf, n);
    ck_assert_int_eq(dg_dataset_load(bad, NULL, NULL, &d), DG_ERR_INPUT);
    /* "FILE: byte N: corrupt gzip data (zlib's reason)": the path, the offset and the reason */
    char want[1200];
    snprintf(want, sizeof want, "%s: byte ", bad);
    ck_assert_msg(strncmp(dg_error_message(), want, strlen(want)) == 0 &&
                      strstr(dg_error_message(), ": corrupt gzip data (") != NULL,
                  "unexpected message %s", dg_error_message());
    free(t.data);
}
END_TEST

START_TEST(refuses_bad_idx)
{
    size_t isize, lsize;
    unsigned char *images = idx_images(5, &isize);
    unsigned char *labels = idx_labels(5, &lsize);
    struct dg_dataset d;
    char expected[512];
    const char *lp = write_file("l.idx", labels, lsize);

    const char *short_body = write_file("short.idx", images, isize - 100);
    ck_assert_int_eq(dg_dataset_load(short_body, lp, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected,
             "%s: byte %zu: body shorter than its header says (3920 "
             "bytes of images declared, 3820 present)",
             short_body, isize - 100);
    ck_assert_str_eq(dg_error_message(), expected);

    unsigned char *longer = malloc(isize + 3);
    memcpy(longer, images, isize);
    memset(longer + isize, 0, 3);
    const char *long_body = write_file("long.idx", longer, isize + 3);
    ck_assert_int_eq(dg_dataset_load(long_body, NULL, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected,
             "%s: byte 3936: trailing bytes after the images the header declares", long_body);
    ck_assert_str_eq(dg_error_message(), expected);

    be32(images + 8, 27);
    const char *dims = write_file("dims.idx", images, isize);
    ck_assert_int_eq(dg_dataset_load(dims, NULL, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected, "%s: byte 8: images are 27x28, expected 28x28", dims);
    ck_assert_str_eq(dg_error_message(), expected);
    be32(images + 8, 28);

    /* a label file given as the images */
    ck_assert_int_eq(dg_dataset_load(lp, NULL, NULL, &d), DG_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "label files go with --labels"));

    const char *ip = write_file("i.idx", images, isize);
    unsigned char wrong_magic[8];
    memcpy(wrong_magic, labels, 8);
    be32(wrong_magic, 2051);
    unsigned char *bad_labels = malloc(lsize);
    memcpy(bad_labels, labels, lsize);
    memcpy(bad_labels, wrong_magic, 8);
    const char *bm = write_file("bm.idx", bad_labels, lsize);
    ck_assert_int_eq(dg_dataset_load(ip, bm, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected,
             "%s: byte 0: not an IDX label file (magic 0x00000803, expected 0x00000801)", bm);
    ck_assert_str_eq(dg_error_message(), expected);

    unsigned char *six = idx_labels(6, &lsize);
    const char *count = write_file("six.idx", six, lsize);
    ck_assert_int_eq(dg_dataset_load(ip, count, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected, "%s: byte 4: 6 labels for 5 images", count);
    ck_assert_str_eq(dg_error_message(), expected);

    memcpy(bad_labels, labels, 8 + 5);
    bad_labels[8 + 3] = 12;
    const char *range = write_file("range.idx", bad_labels, 8 + 5);
    ck_assert_int_eq(dg_dataset_load(ip, range, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected, "%s: byte 11: label 12 outside 0..9", range);
    ck_assert_str_eq(dg_error_message(), expected);

    /* --labels with a CSV is a usage error */
    struct text t = csv(1, 2, "\n");
    const char *csv_path = write_file("c.csv", t.data, t.size);
    ck_assert_int_eq(dg_dataset_load(csv_path, lp, NULL, &d), DG_ERR_USAGE);
    free(t.data);
    free(images);
    free(labels);
    free(longer);
    free(bad_labels);
    free(six);
}
END_TEST

/* A file compressed with something other than gzip, or gzip twice, is named as such with
 * what to do (plain and gzip files are read as they are); lines ending in CR alone are named
 * at the header's end. */
START_TEST(other_compressions_and_cr_lines_are_named)
{
    static const struct {
        const char *magic;
        size_t length;
        const char *message;
    } kinds[] = {
        {"BZh91AY&SY\x01\x02", 12, "a bzip2 file, not a Kaggle CSV or MNIST IDX file: decompress "
                                    "it (bunzip2) (digits reads plain and gzip files)"},
        {"\xfd" "7zXZ\x00\x00\x04", 9, "an xz file, not a Kaggle CSV or MNIST IDX file: "
                                       "decompress it (unxz)"},
        {"\x28\xb5\x2f\xfd\x24\x00", 6, "a zstd file, not a Kaggle CSV or MNIST IDX file: "
                                        "decompress it (unzstd)"},
    };
    char message[256];
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        static const char tail[] = "\x80\x81 more compressed bytes\n";
        unsigned char bytes[64];
        memcpy(bytes, kinds[i].magic, kinds[i].length);
        memcpy(bytes + kinds[i].length, tail, sizeof tail - 1);
        snprintf(message, sizeof message, "1:1: %s", kinds[i].message);
        struct dg_dataset d;
        ck_assert_int_eq(dg_dataset_load(write_file("k.bin", bytes,
                                                    kinds[i].length + sizeof tail - 1),
                                         NULL, NULL, &d),
                         DG_ERR_INPUT);
        ck_assert_msg(strstr(dg_error_message(), message) != NULL, "%s", dg_error_message());
    }
    /* zlib data (deflate with zlib's header, not gzip's) */
    struct text t = csv(1, 3, "\n");
    unsigned char packed[65536];
    uLongf packed_size = sizeof packed;
    ck_assert_int_eq(compress(packed, &packed_size, (const Bytef *)t.data, t.size), Z_OK);
    struct dg_dataset d;
    ck_assert_int_eq(dg_dataset_load(write_file("z.bin", packed, packed_size), NULL, NULL, &d),
                     DG_ERR_INPUT);
    ck_assert_msg(strstr(dg_error_message(), ":1:1: zlib data (not gzip), not a Kaggle CSV or "
                                             "MNIST IDX file: decompress it, or recompress it "
                                             "with gzip") != NULL,
                  "%s", dg_error_message());
    /* gzip inside gzip */
    const char *once = write_gz("once.csv.gz", t.data, t.size);
    FILE *fp = fopen(once, "rb");
    ck_assert_ptr_nonnull(fp);
    size_t once_size = fread(packed, 1, sizeof packed, fp);
    fclose(fp);
    ck_assert_int_eq(dg_dataset_load(write_gz("twice.csv.gz", packed, once_size), NULL, NULL,
                                     &d),
                     DG_ERR_INPUT);
    ck_assert_msg(strstr(dg_error_message(), ":1:1: gzip inside gzip (compressed twice), not a "
                                             "Kaggle CSV or MNIST IDX file: gunzip it once") !=
                      NULL,
                  "%s", dg_error_message());
    free(t.data);
    /* lines that end in CR alone: the header's end is where the CR is */
    struct text cr = csv(1, 3, "\r");
    size_t header_length = strcspn(cr.data, "\r");
    snprintf(message, sizeof message,
             "1:%zu: a carriage return ending the header, with no line feed: lines that end in "
             "CR alone (old Mac text); convert them to LF or CRLF",
             header_length + 1);
    expect_refusal(&cr, message);
    free(cr.data);
}
END_TEST

START_TEST(missing_file_is_a_path_error)
{
    struct dg_dataset d;
    ck_assert_int_eq(dg_dataset_load("/nonexistent/train.csv", NULL, NULL, &d), DG_ERR_USAGE);
    ck_assert_str_eq(dg_error_message(),
                     "/nonexistent/train.csv: cannot open: No such file or directory (check the "
                     "path)");
}
END_TEST

/* ---- more refusals and corner cases ---- */

START_TEST(leading_zeros_and_crlf_refusal)
{
    /* "007" and "000" are decimal integers 0..255 (the careful path takes them) */
    struct text t = with_field(3, 9, "007");
    struct dg_dataset d;
    ck_assert_int_eq(dg_dataset_load(write_file("lz.csv", t.data, t.size), NULL, NULL, &d), DG_OK);
    ck_assert_int_eq(d.images[DG_PIXELS + 8], 7);
    ck_assert_int_eq(d.images[DG_PIXELS + 9], pixel(1, 9));
    dg_dataset_free(&d);
    free(t.data);
    t = with_field(3, 0, "000");
    ck_assert_int_eq(dg_dataset_load(write_file("lz0.csv", t.data, t.size), NULL, NULL, &d), DG_OK);
    ck_assert_int_eq(d.labels[1], 0);
    dg_dataset_free(&d);
    free(t.data);
    /* CRLF rows: the column counts bytes of the line, the '\r' is not part of a field */
    t = (struct text){0};
    header(&t, 0, "\r\n");
    row(&t, 0, 0, "\r\n");
    size_t line_start = t.size;
    row(&t, 0, 1, "");
    size_t col = t.size - line_start + 1;
    puts_text(&t, ",\r\n");
    char message[128];
    snprintf(message, sizeof message, "3:%zu: too many fields (expected 784)", col + 1);
    expect_refusal(&t, message);
    free(t.data);
}
END_TEST

START_TEST(refuses_bad_last_field_without_final_newline)
{
    struct text t = with_field(4, DG_PIXELS, "256");
    t.size--; /* drop the final newline */
    t.data[t.size] = '\0';
    char message[128];
    snprintf(message, sizeof message, "4:%zu: pixel value '256' out of range 0..255",
             column_of(&t, 4, DG_PIXELS));
    expect_refusal(&t, message);
    free(t.data);
    t = with_field(4, DG_PIXELS, "");
    t.size--;
    t.data[t.size] = '\0';
    snprintf(message, sizeof message, "4:%zu: empty field (expected a pixel value 0..255)",
             column_of(&t, 4, DG_PIXELS));
    expect_refusal(&t, message);
    free(t.data);
}
END_TEST

START_TEST(refuses_other_idx_kinds)
{
    size_t isize;
    unsigned char *images = idx_images(3, &isize);
    struct dg_dataset d;
    char expected[512];
    be32(images, 0x00000d03); /* IDX of floats */
    const char *floats = write_file("floats.idx", images, isize);
    ck_assert_int_eq(dg_dataset_load(floats, NULL, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected,
             "%s: byte 0: IDX magic 0x00000d03 is not an image file (expected 0x00000803: "
             "28x28 unsigned bytes)",
             floats);
    ck_assert_str_eq(dg_error_message(), expected);
    be32(images, 2051);
    const char *header_only = write_file("hdr.idx", images, 10);
    ck_assert_int_eq(dg_dataset_load(header_only, NULL, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected, "%s: byte 10: truncated IDX header (16 bytes expected)",
             header_only);
    ck_assert_str_eq(dg_error_message(), expected);
    /* a count no file of this size can hold: refused before any store is allocated */
    struct dg_allocator hook = {counting_alloc, counting_free, &alloc_calls};
    be32(images + 4, 4000000000u);
    const char *huge = write_file("huge.idx", images, isize);
    alloc_calls = 0;
    ck_assert_int_eq(dg_dataset_load(huge, NULL, &hook, &d), DG_ERR_INPUT);
    ck_assert_int_eq(alloc_calls, 0);
    snprintf(expected, sizeof expected,
             "%s: byte %zu: body shorter than its header says (3136000000000 bytes of images "
             "declared, %zu present)",
             huge, isize, isize - 16);
    ck_assert_str_eq(dg_error_message(), expected);
    const char *huge_gz = write_gz("huge.idx.gz", images, isize);
    ck_assert_int_eq(dg_dataset_load(huge_gz, NULL, &hook, &d), DG_ERR_INPUT);
    ck_assert_int_eq(alloc_calls, 0);
    snprintf(expected, sizeof expected,
             "%s: byte %zu: body shorter than its header says (3136000000000 bytes of images "
             "declared, %zu present)",
             huge_gz, isize, isize - 16);
    ck_assert_str_eq(dg_error_message(), expected);
    /* a gzip body shorter than declared, found while reading */
    be32(images + 4, 4);
    const char *short_gz = write_gz("short.idx.gz", images, isize);
    ck_assert_int_eq(dg_dataset_load(short_gz, NULL, NULL, &d), DG_ERR_INPUT);
    snprintf(expected, sizeof expected,
             "%s: byte %zu: body shorter than its header says (3136 bytes of images declared, "
             "2352 present)",
             short_gz, isize);
    ck_assert_str_eq(dg_error_message(), expected);
    free(images);
}
END_TEST

/* Concatenated gzip members: the size in the trailer describes only the last one, so the store
 * starts too small and grows (alloc new, copy, free old) through the allocator. */
START_TEST(store_grows_through_the_allocator)
{
    const int rows = dg_test_reduced() ? 600 : 3000; /* the last member holds 10 rows */
    struct text t = csv(1, rows, "\n");
    size_t split = 0;
    for (int l = 0; l < rows - 10 + 1; l++)
        split += (size_t)(strchr(t.data + split, '\n') - (t.data + split)) + 1;
    const char *first = write_gz("m1.gz", t.data, split);
    const char *second = write_gz("m2.gz", t.data + split, t.size - split);
    char command[2048];
    snprintf(command, sizeof command, "cat '%s' '%s' > '%s/multi.gz'", first, second, tmpdir);
    ck_assert_int_eq(system(command), 0);
    struct dg_allocator hook = {counting_alloc, counting_free, &alloc_calls};
    struct dg_dataset d;
    alloc_calls = free_calls = 0;
    ck_assert_int_eq(dg_dataset_load(tmp_path("multi.gz"), NULL, &hook, &d), DG_OK);
    ck_assert_uint_eq(d.bytes_parsed, t.size);
    check_pattern(&d, rows, 1);
    /* sized from the last member's size (at least 2 bytes a pixel), then doubled until all
     * rows fit; images and labels each time, every old pair freed */
    size_t capacity = (t.size - split) / (2 * DG_PIXELS) + 1;
    int stores = 1;
    for (; capacity < (size_t)rows; capacity *= 2)
        stores++;
    ck_assert_int_ge(stores, 3);
    ck_assert_int_eq(alloc_calls, 2 * stores);
    ck_assert_int_eq(free_calls, 2 * (stores - 1));
    dg_dataset_free(&d);
    ck_assert_int_eq(free_calls, alloc_calls);
    free(t.data);
}
END_TEST

/* ---- a differential test against a plain reference parser ---- */

/* What the loader must do with a train-layout text whose header is valid: 0 and the values
 * when every data row is 785 decimal integers (label 0..9, pixels 0..255; LF or CRLF, a
 * missing final newline or one trailing empty line), otherwise the 1-based line of the first
 * bad row. */
static int reference_parse(const char *text, size_t size, uint8_t *images, uint8_t *labels,
                           int *rows)
{
    size_t pos = (size_t)(strchr(text, '\n') - text) + 1;
    int line = 2;
    *rows = 0;
    while (pos < size) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - start) : size - pos;
        pos += len + 1;
        if (len > 0 && start[len - 1] == '\r')
            len--;
        if (len == 0) {
            if (pos >= size)
                return 0; /* one trailing empty line */
            return line;
        }
        int field = 0;
        size_t i = 0;
        for (;;) {
            size_t field_start = i;
            unsigned long value = 0;
            while (i < len && start[i] >= '0' && start[i] <= '9') {
                if (value < 100000)
                    value = value * 10 + (unsigned long)(start[i] - '0');
                i++;
            }
            if (i == field_start || value > (field == 0 ? 9u : 255u) || field > DG_PIXELS)
                return line;
            if (field == 0)
                labels[*rows] = (uint8_t)value;
            else
                images[(size_t)*rows * DG_PIXELS + (size_t)field - 1] = (uint8_t)value;
            field++;
            if (i == len)
                break;
            if (start[i] != ',')
                return line;
            i++;
        }
        if (field != DG_PIXELS + 1)
            return line;
        (*rows)++;
        line++;
    }
    return *rows ? 0 : 2;
}

/* A value as MNIST has them: mostly 0, sometimes 1..3 digits. */
static void random_value(struct dg_test_rng *rng, char *out)
{
    uint32_t kind = dg_test_below(rng, 10);
    unsigned value = kind < 7    ? 0
                     : kind == 7 ? dg_test_below(rng, 10)
                     : kind == 8 ? 10 + dg_test_below(rng, 90)
                                 : 100 + dg_test_below(rng, 156);
    snprintf(out, 8, "%u", value);
}

static void differential_round(int generic)
{
    static const char noise[] = ",,,0123456789 x-+.\r\t\0\xff\n";
    struct dg_test_rng rng = {generic ? 7 : 11};
    int bad_files = 0;
    if (generic)
        setenv("DIGITS_DATA_GENERIC", "1", 1);
    const int rounds = dg_test_reduced() ? 200 : 600;
    for (int round = 0; round < rounds; round++) {
        int rows = 1 + (int)dg_test_below(&rng, 4);
        const char *eol = dg_test_below(&rng, 4) == 0 ? "\r\n" : "\n";
        struct text t = {0};
        header(&t, 1, eol);
        size_t *row_start = malloc(sizeof *row_start * (size_t)rows);
        for (int r = 0; r < rows; r++) {
            char field[8];
            row_start[r] = t.size;
            snprintf(field, sizeof field, "%u", dg_test_below(&rng, 10));
            puts_text(&t, field);
            for (int k = 0; k < DG_PIXELS; k++) {
                random_value(&rng, field);
                puts_text(&t, ",");
                puts_text(&t, field);
            }
            puts_text(&t, eol);
        }
        /* most files get one to three changes: a byte replaced, inserted or deleted, a field
         * rewritten with up to five digits, or the line ending changed */
        int changes = round % 5 == 0 ? 0 : 1 + (int)dg_test_below(&rng, 3);
        for (int m = 0; m < changes; m++) {
            int r = (int)dg_test_below(&rng, (uint32_t)rows);
            size_t row_end = r + 1 < rows ? row_start[r + 1] : t.size;
            size_t at = row_start[r] + dg_test_below(&rng, (uint32_t)(row_end - row_start[r]));
            char byte = noise[dg_test_below(&rng, sizeof noise - 1)];
            switch (dg_test_below(&rng, 5)) {
            case 0:
                t.data[at] = byte;
                break;
            case 1:
                put(&t, " ", 1);
                memmove(t.data + at + 1, t.data + at, t.size - at - 1);
                t.data[at] = byte;
                for (int s = r + 1; s < rows; s++)
                    row_start[s]++;
                break;
            case 2:
                memmove(t.data + at, t.data + at + 1, t.size - at - 1);
                t.size--;
                for (int s = r + 1; s < rows; s++)
                    row_start[s]--;
                break;
            case 3: {
                while (at > row_start[r] && t.data[at - 1] != ',')
                    at--;
                size_t len = 0;
                while (at + len < t.size && t.data[at + len] >= '0' && t.data[at + len] <= '9')
                    len++;
                char digits[6];
                size_t n = 1 + dg_test_below(&rng, 5);
                for (size_t i = 0; i < n; i++)
                    digits[i] = (char)('0' + dg_test_below(&rng, i == 0 ? 3 : 10));
                size_t rest = t.size - at - len;
                char *joined = malloc(at + n + rest + 1);
                ck_assert_ptr_nonnull(joined);
                memcpy(joined, t.data, at);
                memcpy(joined + at, digits, n);
                memcpy(joined + at + n, t.data + at + len, rest);
                free(t.data);
                t.data = joined;
                t.size = t.capacity = at + n + rest;
                t.capacity++;
                for (int s = r + 1; s < rows; s++)
                    row_start[s] = row_start[s] + n - len;
                break;
            }
            default:
                if (t.size > 0 && t.data[t.size - 1] == '\n') {
                    t.size--; /* no final newline */
                } else {
                    puts_text(&t, "\n");
                }
                break;
            }
            t.data[t.size] = '\0';
        }
        uint8_t *images = calloc((size_t)rows + 1, DG_PIXELS);
        uint8_t *labels = calloc((size_t)rows + 1, 1);
        int expected_rows;
        int bad_line = reference_parse(t.data, t.size, images, labels, &expected_rows);
        const char *path = write_file("diff.csv", t.data, t.size);
        struct dg_dataset d;
        enum dg_status status = dg_dataset_load(path, NULL, NULL, &d);
        if (bad_line == 0) {
            if (status != DG_OK)
                ck_abort_msg("round %d: refused a valid file: %s", round, dg_error_message());
            ck_assert_int_eq((int)d.count, expected_rows);
            ck_assert_int_eq(memcmp(d.images, images, d.count * DG_PIXELS), 0);
            ck_assert_int_eq(memcmp(d.labels, labels, d.count), 0);
            dg_dataset_free(&d);
        } else {
            bad_files++;
            if (status != DG_ERR_INPUT)
                ck_abort_msg("round %d: accepted a file bad at line %d", round, bad_line);
            const char *message = dg_error_message() + strlen(path);
            int line = 0, column = 0;
            if (sscanf(message, ":%d:%d:", &line, &column) != 2 || line != bad_line || column < 1)
                ck_abort_msg("round %d: expected line %d, got '%s'", round, bad_line,
                             dg_error_message());
        }
        free(images);
        free(labels);
        free(row_start);
        free(t.data);
    }
    /* the mix must hold both kinds in numbers */
    ck_assert_int_gt(bad_files, rounds / 3);
    ck_assert_int_lt(bad_files, rounds * 11 / 12);
    unsetenv("DIGITS_DATA_GENERIC");
}

START_TEST(matches_a_reference_parser)
{
    differential_round(0);
}
END_TEST

START_TEST(matches_a_reference_parser_portable_path)
{
    differential_round(1);
}
END_TEST

/* ---- the command ---- */

static const char *digits_bin(void)
{
    const char *bin = getenv("DIGITS_BIN");
    return bin ? bin : "digits";
}

/* Runs a shell command; returns its exit code with its output in out. */
static int run_command(const char *command, char *out, size_t out_size)
{
    FILE *p = popen(command, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, out_size - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* `digits check-data ARGS` with stderr in the output. */
static int run(const char *args, char *out, size_t out_size)
{
    char command[8192];
    snprintf(command, sizeof command, "'%s' check-data %s 2>&1", digits_bin(), args);
    return run_command(command, out, out_size);
}

START_TEST(check_data_command)
{
    char out[8192], args[1024];
    const char *root = getenv("DIGITS_SOURCE_DIR");
    snprintf(args, sizeof args, "%s/data/sample/train.csv.gz", root ? root : ".");
    ck_assert_int_eq(run(args, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "rows: 5000\n"));
    ck_assert_ptr_nonnull(
        strstr(out, "labels: 0:479 1:563 2:488 3:493 4:535 5:434 6:501 7:550 8:462 9:495\n"));
    ck_assert_ptr_nonnull(strstr(out, "layout: train\n"));
    ck_assert_ptr_nonnull(strstr(out, "MB/s"));
    snprintf(args, sizeof args, "%s/data/sample/test.csv.gz --json", root ? root : ".");
    ck_assert_int_eq(run(args, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"layout\": \"test\", \"gzip\": true, \"rows\": 1000,"));
    struct text t = with_field(3, 7, "300");
    snprintf(args, sizeof args, "%s", write_file("cmd.csv", t.data, t.size));
    ck_assert_int_eq(run(args, out, sizeof out), 2);
    char expected[2048];
    snprintf(expected, sizeof expected, "digits: %s:3:%zu: pixel value '300' out of range 0..255\n",
             args, column_of(&t, 3, 7));
    ck_assert_str_eq(out, expected);
    free(t.data);
    /* a pipe: no size to go by (the store grows), gzip told by the bytes read */
    const int rows = large_rows();
    struct text big = csv(1, rows, "\n");
    const char *files[2] = {write_file("pipe.csv", big.data, big.size),
                            write_gz("pipe.csv.gz", big.data, big.size)};
    for (int i = 0; i < 2; i++) {
        char command[2048];
        snprintf(command, sizeof command, "cat '%s' | '%s' check-data /dev/stdin 2>&1", files[i],
                 digits_bin());
        ck_assert_int_eq(run_command(command, out, sizeof out), 0);
        ck_assert_ptr_nonnull(
            strstr(out, i ? "format: csv (train layout), gzip\n" : "format: csv (train layout)\n"));
        char expected_rows[32];
        snprintf(expected_rows, sizeof expected_rows, "rows: %d\n", rows);
        ck_assert_ptr_nonnull(strstr(out, expected_rows));
    }
    free(big.data);
    ck_assert_int_eq(run("/nonexistent.csv", out, sizeof out), 2);
    ck_assert_str_eq(out, "digits: /nonexistent.csv: cannot open: No such file or directory "
                          "(check the path)\n");
    ck_assert_int_eq(run("", out, sizeof out), 2);
    ck_assert_int_eq(run("--bogus x", out, sizeof out), 2);
}
END_TEST

START_TEST(get_data_script)
{
    /* a file that is not what its MD5 says is refused (the real data: test_shared_data) */
    const char *root = getenv("DIGITS_SOURCE_DIR");
    char command[4096];
    const char *fake = write_file("train-images-idx3-ubyte.gz", "not mnist", 9);
    (void)fake;
    snprintf(command, sizeof command,
             "'%s/scripts/get-data' --from '%s' --out '%s/out' >'%s/log' 2>&1", root ? root : ".",
             tmpdir, tmpdir, tmpdir);
    int status = system(command);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    snprintf(command, sizeof command, "grep -q 'train-images-idx3-ubyte.gz: MD5' '%s/log'", tmpdir);
    ck_assert_int_eq(system(command), 0);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("data");
    TCase *tc = tcase_create("data");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, csv_train_layout);
    tcase_add_test(tc, csv_test_layout_gzip_named_anything);
    tcase_add_test(tc, crlf_missing_final_newline_trailing_empty_line);
    tcase_add_test(tc, large_file_spans_many_buffers);
    tcase_add_test(tc, idx_raw_and_gzip);
    tcase_add_test(tc, allocator_hook_and_truncate);
    tcase_add_test(tc, refuses_empty_and_header_only);
    tcase_add_test(tc, refuses_wrong_header);
    tcase_add_test(tc, refuses_field_counts);
    tcase_add_test(tc, refuses_bad_pixels);
    tcase_add_test(tc, refuses_bad_labels);
    tcase_add_test(tc, refuses_nul_and_binary);
    tcase_add_test(tc, refuses_empty_line_inside);
    tcase_add_test(tc, refuses_truncated_and_corrupt_gzip);
    tcase_add_test(tc, refuses_bad_idx);
    tcase_add_test(tc, missing_file_is_a_path_error);
    tcase_add_test(tc, leading_zeros_and_crlf_refusal);
    tcase_add_test(tc, refuses_bad_last_field_without_final_newline);
    tcase_add_test(tc, refuses_other_idx_kinds);
    tcase_add_test(tc, store_grows_through_the_allocator);
    tcase_add_test(tc, matches_a_reference_parser);
    tcase_add_test(tc, matches_a_reference_parser_portable_path);
    tcase_add_test(tc, other_compressions_and_cr_lines_are_named);
    tcase_add_test(tc, check_data_command);
    tcase_add_test(tc, get_data_script);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
