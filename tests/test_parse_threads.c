/* The parallel CSV load (dg_dataset_load_threads): 1, 2, 3 and 7 threads give byte-identical
 * stores (the bundled sample, plain and gzip; synthetic files whose row count is no multiple of
 * the thread count; a pipe, where the store grows; the portable masks), and exactly the serial
 * message for errors wherever they are: the first row, the middle, the last row, two errors in
 * different 1 MiB chunks (the earlier one wins even when its chunk is parsed last), an empty
 * line that ends a chunk, a line longer than a chunk, truncated and corrupt gzip. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cli_util.h"
#include "digits/data.h"

/* the messages of an empty line inside a file (after its line number) and of a gzip stream cut
 * short (after its byte offset) */
#define EMPTY_LINE ":1: empty line (remove it: only the file's last line may be empty)"
#define GZIP_CUT                                                                                   \
    ": truncated gzip stream (the compressed data ends early: the file is incomplete; download "   \
    "or copy it again)"

#define CHUNK (1u << 20) /* the loader's buffer size */

static const int thread_counts[] = {1, 2, 3, 7};
#define THREAD_COUNTS ((int)(sizeof thread_counts / sizeof thread_counts[0]))

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/digits-test-threads-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", tmpdir);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static const char *tmp_path(const char *name)
{
    static char paths[8][512];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, 512, "%s/%s", tmpdir, name);
    return path;
}

static int sanitized(void)
{
    const char *s = getenv("DIGITS_TEST_SANITIZED");
    return s && s[0] == '1';
}

/* DIGITS_TEST_REDUCED (set for runs under an emulator): smaller files, still spanning several
 * 1 MiB chunks. */
static int reduced(void)
{
    const char *s = getenv("DIGITS_TEST_REDUCED");
    return s && s[0] != '\0' && strcmp(s, "0") != 0;
}

static int rows_for(int full, int small)
{
    return reduced() ? small : full;
}

/* ---- synthetic files ---- */

struct text {
    char *data;
    size_t size, capacity;
};

static void put(struct text *t, const char *s, size_t n)
{
    if (n >> 40) /* (a plain check: a Check assertion per call records its location) */
        abort();
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

static int pixel(int row, int k)
{
    return (k * 7 + row * 31) % 3 == 0 ? 0 : (k * 13 + row * 101) % 256;
}

/* A planted field: data line `line` (the file line number, 2 = the first row) has field
 * `field` (0 = the label) replaced by `value`; `column` receives its 1-based column. */
struct plant {
    int line, field;
    const char *value;
    size_t column;
};

/* A train-layout file of `rows` rows (about 2.3 KB each), with the plants. */
static struct text synthetic(int rows, struct plant *plants, int plant_count)
{
    struct text t = {0};
    puts_text(&t, "label");
    char field[16];
    for (int k = 0; k < DG_PIXELS; k++) {
        snprintf(field, sizeof field, ",pixel%d", k);
        puts_text(&t, field);
    }
    puts_text(&t, "\n");
    for (int i = 0; i < rows; i++) {
        size_t line_start = t.size;
        for (int k = 0; k <= DG_PIXELS; k++) {
            const char *text = NULL;
            for (int p = 0; p < plant_count; p++)
                if (plants[p].line == i + 2 && plants[p].field == k) {
                    text = plants[p].value;
                    plants[p].column = t.size - line_start + 1;
                }
            if (!text) {
                snprintf(field, sizeof field, "%d", k == 0 ? i % 10 : pixel(i, k - 1));
                text = field;
            }
            puts_text(&t, text);
            puts_text(&t, k < DG_PIXELS ? "," : "\n");
        }
    }
    return t;
}

static const char *write_file(const char *name, const void *data, size_t size)
{
    const char *path = tmp_path(name);
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    ck_assert_int_eq(fclose(fp), 0);
    return path;
}

static const char *write_gz(const char *name, const void *data, size_t size)
{
    const char *path = tmp_path(name);
    gzFile gz = gzopen(path, "wb1");
    ck_assert_ptr_nonnull(gz);
    ck_assert_int_eq(gzwrite(gz, data, (unsigned)size), (int)size);
    ck_assert_int_eq(gzclose(gz), Z_OK);
    return path;
}

/* The file line number of the last line that ends inside the first `bytes` bytes. */
static int line_ending_before(const struct text *t, size_t bytes)
{
    int line = 0;
    for (size_t i = 0; i < bytes && i < t->size; i++)
        if (t->data[i] == '\n')
            line++;
    return line;
}

/* ---- loading ---- */

static void expect_same(const struct dg_dataset *a, const struct dg_dataset *b, int threads)
{
    if (a->count != b->count)
        ck_abort_msg("%d threads: %zu rows, serial %zu", threads, b->count, a->count);
    ck_assert_int_eq(a->format, b->format);
    ck_assert_int_eq(a->gzipped, b->gzipped);
    ck_assert_uint_eq(a->bytes_parsed, b->bytes_parsed);
    ck_assert_uint_eq(a->bytes_on_disk, b->bytes_on_disk);
    if (memcmp(a->images, b->images, a->count * DG_PIXELS) != 0)
        ck_abort_msg("%d threads: images differ from the serial load", threads);
    ck_assert((a->labels == NULL) == (b->labels == NULL));
    if (a->labels && memcmp(a->labels, b->labels, a->count) != 0)
        ck_abort_msg("%d threads: labels differ from the serial load", threads);
}

/* Loads path with every thread count; all must succeed with the same store. Returns the
 * row count. */
static size_t expect_identical(const char *path)
{
    struct dg_dataset serial;
    if (dg_dataset_load_threads(path, NULL, NULL, 1, &serial) != DG_OK)
        ck_abort_msg("%s: %s", path, dg_error_message());
    for (int i = 1; i < THREAD_COUNTS; i++) {
        struct dg_dataset d;
        if (dg_dataset_load_threads(path, NULL, NULL, thread_counts[i], &d) != DG_OK)
            ck_abort_msg("%d threads: %s", thread_counts[i], dg_error_message());
        expect_same(&serial, &d, thread_counts[i]);
        dg_dataset_free(&d);
    }
    size_t rows = serial.count;
    dg_dataset_free(&serial);
    return rows;
}

/* Loads path with every thread count; each must be refused with `status` and exactly
 * "PATH:" + `message` (message NULL: whatever one thread says, the same for all). */
static void expect_message(const char *path, enum dg_status status, const char *message)
{
    char expected[1024] = "";
    if (message)
        snprintf(expected, sizeof expected, "%s:%s", path, message);
    for (int i = 0; i < THREAD_COUNTS; i++) {
        struct dg_dataset d;
        enum dg_status got = dg_dataset_load_threads(path, NULL, NULL, thread_counts[i], &d);
        if (got != status)
            ck_abort_msg("%d threads: status %d, expected %d (%s)", thread_counts[i], got, status,
                         dg_error_message());
        ck_assert_ptr_null(d.images);
        if (!expected[0])
            snprintf(expected, sizeof expected, "%s", dg_error_message());
        if (strcmp(dg_error_message(), expected) != 0)
            ck_abort_msg("%d threads:\ngot      '%s'\nexpected '%s'", thread_counts[i],
                         dg_error_message(), expected);
    }
}

/* The plants' file, plain and gzip: every thread count refuses it with the first plant's
 * "LINE:COL: pixel value 'VALUE' out of range 0..255" (plants in file order). */
static void expect_first_plant(int rows, struct plant *plants, int count, const char *name)
{
    struct text t = synthetic(rows, plants, count);
    int first = 0;
    for (int p = 1; p < count; p++)
        if (plants[p].line < plants[first].line)
            first = p;
    char message[512];
    snprintf(message, sizeof message, "%d:%zu: pixel value '%s' out of range 0..255",
             plants[first].line, plants[first].column, plants[first].value);
    char file[128];
    snprintf(file, sizeof file, "%s.csv", name);
    expect_message(write_file(file, t.data, t.size), DG_ERR_INPUT, message);
    snprintf(file, sizeof file, "%s.csv.gz", name);
    expect_message(write_gz(file, t.data, t.size), DG_ERR_INPUT, message);
    free(t.data);
}

/* ---- identical stores ---- */

START_TEST(sample_plain_and_gzip)
{
    const char *root = getenv("DIGITS_SOURCE_DIR");
    char gz[1024], command[4096];
    snprintf(gz, sizeof gz, "%s/data/sample/train.csv.gz", root ? root : ".");
    ck_assert_uint_eq(expect_identical(gz), 5000);
    const char *plain = tmp_path("sample.csv");
    snprintf(command, sizeof command, "gzip -dc '%s' > '%s'", gz, plain);
    ck_assert_int_eq(system(command), 0);
    ck_assert_uint_eq(expect_identical(plain), 5000);
    /* the gzip and the plain copy load to the same store */
    struct dg_dataset a, b;
    ck_assert_int_eq(dg_dataset_load_threads(gz, NULL, NULL, 3, &a), DG_OK);
    ck_assert_int_eq(dg_dataset_load_threads(plain, NULL, NULL, 7, &b), DG_OK);
    ck_assert_uint_eq(a.count, b.count);
    ck_assert_int_eq(memcmp(a.images, b.images, a.count * DG_PIXELS), 0);
    ck_assert_int_eq(memcmp(a.labels, b.labels, a.count), 0);
    dg_dataset_free(&a);
    dg_dataset_free(&b);
    snprintf(gz, sizeof gz, "%s/data/sample/test.csv.gz", root ? root : ".");
    ck_assert_uint_eq(expect_identical(gz), 1000);
}
END_TEST

START_TEST(row_counts_no_multiple_of_the_threads)
{
    /* 4001 rows (about 9 MiB: 9 chunks) and 2143 = 3 * 7 * 102 + 1 (reduced: 1403 and 1303);
     * no final newline, a trailing empty line */
    const int rows[] = {rows_for(4001, 1403), rows_for(2143, 1303)};
    for (int r = 0; r < 2; r++) {
        struct text t = synthetic(rows[r], NULL, 0);
        ck_assert_uint_eq(expect_identical(write_file("n.csv", t.data, t.size)), (size_t)rows[r]);
        ck_assert_uint_eq(expect_identical(write_gz("n.csv.gz", t.data, t.size)), (size_t)rows[r]);
        t.size--; /* no final newline */
        ck_assert_uint_eq(expect_identical(write_file("nofinal.csv", t.data, t.size)),
                          (size_t)rows[r]);
        puts_text(&t, "\n\n"); /* one trailing empty line */
        ck_assert_uint_eq(expect_identical(write_file("trail.csv", t.data, t.size)),
                          (size_t)rows[r]);
        free(t.data);
    }
    /* CRLF line ends */
    const int crlf_rows = rows_for(1501, 1003);
    struct text t = synthetic(crlf_rows, NULL, 0), crlf = {0};
    for (size_t i = 0; i < t.size; i++)
        if (t.data[i] == '\n')
            put(&crlf, "\r\n", 2);
        else
            put(&crlf, t.data + i, 1);
    ck_assert_uint_eq(expect_identical(write_file("crlf.csv", crlf.data, crlf.size)),
                      (size_t)crlf_rows);
    free(crlf.data);
    free(t.data);
    /* the portable masks give the same */
    setenv("DIGITS_DATA_GENERIC", "1", 1);
    t = synthetic(rows[1], NULL, 0);
    ck_assert_uint_eq(expect_identical(write_file("generic.csv", t.data, t.size)), (size_t)rows[1]);
    unsetenv("DIGITS_DATA_GENERIC");
    struct dg_dataset a, b;
    ck_assert_int_eq(dg_dataset_load_threads(tmp_path("generic.csv"), NULL, NULL, 1, &a), DG_OK);
    setenv("DIGITS_DATA_GENERIC", "1", 1);
    ck_assert_int_eq(dg_dataset_load_threads(tmp_path("generic.csv"), NULL, NULL, 7, &b), DG_OK);
    unsetenv("DIGITS_DATA_GENERIC");
    expect_same(&a, &b, 7);
    dg_dataset_free(&a);
    dg_dataset_free(&b);
    free(t.data);
}
END_TEST

/* The allocator is only ever called from the loading thread (the CUDA backend's pinned
 * allocator needs its device current there). */
static pthread_t loading_thread;
static int hook_allocs, hook_frees, hook_foreign;

static void *hook_alloc(size_t bytes, void *ctx)
{
    (void)ctx;
    hook_allocs++;
    hook_foreign += !pthread_equal(pthread_self(), loading_thread);
    return malloc(bytes);
}

static void hook_free(void *ptr, void *ctx)
{
    (void)ctx;
    hook_frees++;
    hook_foreign += !pthread_equal(pthread_self(), loading_thread);
    free(ptr);
}

/* Writes `size` bytes of data into a new FIFO from a child process; returns its path. */
static const char *fifo_with(const char *name, const void *data, size_t size, pid_t *child)
{
    const char *path = tmp_path(name);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    *child = fork();
    ck_assert_int_ge(*child, 0);
    if (*child == 0) {
        FILE *fp = fopen(path, "wb");
        size_t written = fp ? fwrite(data, 1, size, fp) : 0;
        _exit(fp && written == size && fclose(fp) == 0 ? 0 : 1);
    }
    return path;
}

START_TEST(pipe_grows_the_store_on_the_calling_thread)
{
    const int rows = rows_for(3001, 1201);
    struct text t = synthetic(rows, NULL, 0);
    int stores = 1; /* no size to go by: 1024 rows, then doubled until all fit */
    for (int capacity = 1024; capacity < rows; capacity *= 2)
        stores++;
    const struct dg_allocator hook = {hook_alloc, hook_free, NULL};
    struct dg_dataset serial;
    ck_assert_int_eq(
        dg_dataset_load_threads(write_file("p.csv", t.data, t.size), NULL, NULL, 1, &serial),
        DG_OK);
    loading_thread = pthread_self();
    for (int i = 0; i < THREAD_COUNTS; i++) {
        for (int gz = 0; gz < 2; gz++) {
            const char *source = gz ? write_gz("p.gz", t.data, t.size) : NULL;
            struct text bytes = {0};
            if (gz) {
                FILE *fp = fopen(source, "rb");
                char block[65536];
                size_t n;
                while ((n = fread(block, 1, sizeof block, fp)) > 0)
                    put(&bytes, block, n);
                fclose(fp);
            }
            pid_t child;
            char name[32];
            snprintf(name, sizeof name, "fifo%d%d", i, gz);
            const char *fifo = gz ? fifo_with(name, bytes.data, bytes.size, &child)
                                  : fifo_with(name, t.data, t.size, &child);
            hook_allocs = hook_frees = hook_foreign = 0;
            struct dg_dataset d;
            if (dg_dataset_load_threads(fifo, NULL, &hook, thread_counts[i], &d) != DG_OK)
                ck_abort_msg("%d threads: %s", thread_counts[i], dg_error_message());
            int status;
            ck_assert_int_eq(waitpid(child, &status, 0), child);
            ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
            ck_assert_int_eq(d.gzipped, gz);
            ck_assert_uint_eq(d.bytes_parsed, t.size);
            ck_assert_uint_eq(d.count, serial.count);
            ck_assert_int_eq(memcmp(d.images, serial.images, d.count * DG_PIXELS), 0);
            ck_assert_int_eq(memcmp(d.labels, serial.labels, d.count), 0);
            ck_assert_int_eq(hook_allocs, 2 * stores); /* images and labels each */
            dg_dataset_free(&d);
            ck_assert_int_eq(hook_frees, hook_allocs);
            ck_assert_int_eq(hook_foreign, 0);
            free(bytes.data);
        }
    }
    dg_dataset_free(&serial);
    free(t.data);
}
END_TEST

START_TEST(shared_mnist)
{
    const char *dir = getenv("DIGITS_SHARED_DATA");
    char path[1024], plain[1024], command[4096];
    snprintf(path, sizeof path, "%s/train.csv.gz", dir ? dir : "/nonexistent");
    if (access(path, R_OK) != 0 || sanitized() || reduced()) {
        printf("SKIP shared_mnist: %s\n", access(path, R_OK) != 0 ? "no shared MNIST data"
                                          : sanitized()           ? "left out under the sanitizers"
                                                        : "left out (DIGITS_TEST_REDUCED)");
        return;
    }
    snprintf(plain, sizeof plain, "%s", tmp_path("train.csv"));
    snprintf(command, sizeof command, "gzip -dc '%s' > '%s'", path, plain);
    ck_assert_int_eq(system(command), 0);
    ck_assert_uint_eq(expect_identical(path), 60000);
    ck_assert_uint_eq(expect_identical(plain), 60000);
}
END_TEST

/* ---- errors: the serial message whichever thread finds them ---- */

START_TEST(error_in_the_first_middle_and_last_row)
{
    int rows = rows_for(4001, 1403);
    struct plant first = {2, 1, "256", 0};
    expect_first_plant(rows, &first, 1, "first");
    struct plant middle = {rows / 2, 400, "999", 0};
    expect_first_plant(rows, &middle, 1, "middle");
    struct plant last = {rows + 1, DG_PIXELS, "300", 0};
    expect_first_plant(rows, &last, 1, "last");
    /* the last row without a final newline */
    struct text t = synthetic(rows, &last, 1);
    t.size--;
    char message[256];
    snprintf(message, sizeof message, "%d:%zu: pixel value '300' out of range 0..255", rows + 1,
             last.column);
    expect_message(write_file("last-nofinal.csv", t.data, t.size), DG_ERR_INPUT, message);
    free(t.data);
}
END_TEST

START_TEST(two_errors_in_different_chunks)
{
    int rows = rows_for(4001, 1403);
    struct text clean = synthetic(rows, NULL, 0);
    /* the last line of the first chunk and the first line of the third: the third chunk is
     * parsed (and fails) before the first one is done when there are threads to spare */
    int end_of_first = line_ending_before(&clean, CHUNK);
    int start_of_third = line_ending_before(&clean, 2 * (size_t)CHUNK) + 2;
    free(clean.data);
    struct plant pair[2] = {{start_of_third, 3, "777", 0}, {end_of_first, 700, "256", 0}};
    expect_first_plant(rows, pair, 2, "pair");
    /* errors in every chunk: the first wins */
    struct plant many[9];
    for (int p = 0; p < 9; p++)
        many[p] = (struct plant){rows - p * (rows / 10), 1 + p * 80, "1000", 0};
    expect_first_plant(rows, many, 9, "many");
    /* an error early and one late: the late one's chunk is never needed */
    struct plant far[2] = {{3, 5, "400", 0}, {rows - 1, 5, "500", 0}};
    expect_first_plant(rows, far, 2, "far");
}
END_TEST

START_TEST(other_errors_in_later_chunks)
{
    int rows = rows_for(3001, 1403);
    struct text t = synthetic(rows, NULL, 0);
    /* a text field: the serial wording */
    struct plant word = {rows - 7, 12, "12a", 0};
    struct text w = synthetic(rows, &word, 1);
    char message[512];
    snprintf(message, sizeof message, "%d:%zu: pixel value '12a' is not a decimal integer 0..255",
             word.line, word.column);
    expect_message(write_file("word.csv", w.data, w.size), DG_ERR_INPUT, message);
    free(w.data);
    /* an empty line that is the last line of a chunk: only the next chunk tells it is not the
     * last line of the file */
    size_t cut = 0;
    for (size_t i = 0; i < CHUNK - 1; i++)
        if (t.data[i] == '\n')
            cut = i + 1;
    ck_assert_uint_lt(cut, CHUNK - 1);
    struct text e = {0};
    put(&e, t.data, cut);
    puts_text(&e, "\n");
    put(&e, t.data + cut, t.size - cut);
    int empty_line = line_ending_before(&t, cut) + 1;
    snprintf(message, sizeof message, "%d" EMPTY_LINE, empty_line);
    expect_message(write_file("empty-at-cut.csv", e.data, e.size), DG_ERR_INPUT, message);
    expect_message(write_gz("empty-at-cut.csv.gz", e.data, e.size), DG_ERR_INPUT, message);
    free(e.data);
    /* an empty line in the middle of a later chunk */
    size_t mid = t.size / 2;
    while (t.data[mid - 1] != '\n')
        mid++;
    e = (struct text){0};
    put(&e, t.data, mid);
    puts_text(&e, "\r\n");
    put(&e, t.data + mid, t.size - mid);
    snprintf(message, sizeof message, "%d" EMPTY_LINE, line_ending_before(&t, mid) + 1);
    expect_message(write_file("empty-mid.csv", e.data, e.size), DG_ERR_INPUT, message);
    free(e.data);
    /* a line longer than a chunk, after several chunks of good rows */
    e = (struct text){0};
    put(&e, t.data, mid);
    char *long_line = malloc(CHUNK + 100);
    memset(long_line, '1', CHUNK + 99);
    long_line[CHUNK + 99] = '\n';
    put(&e, long_line, CHUNK + 100);
    put(&e, t.data + mid, t.size - mid);
    snprintf(message, sizeof message, "%d:1: line longer than %u bytes (not a digits CSV row)",
             line_ending_before(&t, mid) + 1, CHUNK);
    expect_message(write_file("long.csv", e.data, e.size), DG_ERR_INPUT, message);
    free(long_line);
    free(e.data);
    /* two trailing empty lines after many chunks */
    e = (struct text){0};
    put(&e, t.data, t.size);
    puts_text(&e, "\n\n");
    snprintf(message, sizeof message, "%d" EMPTY_LINE, rows + 2);
    expect_message(write_file("two-trailing.csv", e.data, e.size), DG_ERR_INPUT, message);
    free(e.data);
    free(t.data);
}
END_TEST

static struct text slurp(const char *path)
{
    struct text t = {0};
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    char block[65536];
    size_t n;
    while ((n = fread(block, 1, sizeof block, fp)) > 0)
        put(&t, block, n);
    fclose(fp);
    return t;
}

START_TEST(truncated_and_corrupt_gzip)
{
    int rows = rows_for(4001, 1403);
    struct text t = synthetic(rows, NULL, 0);
    struct text gz = slurp(write_gz("whole.csv.gz", t.data, t.size));
    /* cut in the middle: the serial message, with the compressed size read */
    const char *cut = write_file("cut.csv.gz", gz.data, gz.size / 2);
    char message[256];
    snprintf(message, sizeof message,
             " byte %zu" GZIP_CUT, gz.size / 2);
    expect_message(cut, DG_ERR_INPUT, message);
    /* cut inside the 8-byte trailer: every row is there, the stream still ends early */
    const char *trailer = write_file("trailer.csv.gz", gz.data, gz.size - 3);
    snprintf(message, sizeof message,
             " byte %zu" GZIP_CUT, gz.size - 3);
    expect_message(trailer, DG_ERR_INPUT, message);
    /* a bad row before the cut wins over the cut */
    struct plant bad = {rows / 5, 9, "256", 0};
    struct text b = synthetic(rows, &bad, 1);
    struct text bgz = slurp(write_gz("bad.csv.gz", b.data, b.size));
    const char *bad_cut = write_file("bad-cut.csv.gz", bgz.data, bgz.size * 3 / 4);
    snprintf(message, sizeof message, "%d:%zu: pixel value '256' out of range 0..255", bad.line,
             bad.column);
    expect_message(bad_cut, DG_ERR_INPUT, message);
    /* corrupt deflate data in the middle: whatever the serial load says, every count says */
    gz.data[gz.size / 2] ^= 0xff;
    gz.data[gz.size / 2 + 1] ^= 0x5a;
    gz.data[gz.size / 2 + 7] ^= 0x33;
    expect_message(write_file("corrupt.csv.gz", gz.data, gz.size), DG_ERR_INPUT, NULL);
    free(bgz.data);
    free(b.data);
    free(gz.data);
    free(t.data);
}
END_TEST

/* ---- gzip members by hand ---- */

static void put_le(struct text *t, uint32_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        char b = (char)(v >> (8 * i));
        put(t, &b, 1);
    }
}

/* Appends a gzip member of data[0, size): FLG `flg` (FEXTRA 300 bytes, FNAME, FCOMMENT and
 * FHCRC as it says; the header CRC off by one when bad_hcrc), compression method `cm`, raw
 * deflate at `level`, the trailer's CRC and length xor'ed with crc_xor and size_xor. */
static void gz_member(struct text *out, const char *data, size_t size, unsigned flg, int cm,
                      int level, int bad_hcrc, uint32_t crc_xor, uint32_t size_xor)
{
    size_t start = out->size;
    char head[10] = {0x1f, (char)0x8b, (char)cm, (char)flg, 0, 0, 0, 0, 0, 3};
    put(out, head, 10);
    if (flg & 4) {
        put_le(out, 300, 2);
        for (int i = 0; i < 100; i++)
            puts_text(out, "xyz");
    }
    if (flg & 8)
        put(out, "train.csv", 10);
    if (flg & 16)
        put(out, "a comment", 10);
    if (flg & 2) {
        uLong crc = crc32(0, (const Bytef *)out->data + start, (uInt)(out->size - start));
        put_le(out, (uint32_t)(crc & 0xffff) ^ (uint32_t)bad_hcrc, 2);
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    ck_assert_int_eq(deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t bound = deflateBound(&z, (uLong)size);
    char *body = malloc(bound);
    ck_assert_ptr_nonnull(body);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)size;
    z.next_out = (Bytef *)body;
    z.avail_out = (uInt)bound;
    ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    put(out, body, bound - z.avail_out);
    deflateEnd(&z);
    free(body);
    put_le(out, (uint32_t)crc32(0, (const Bytef *)data, (uInt)size) ^ crc_xor, 4);
    put_le(out, (uint32_t)size ^ size_xor, 4);
}

/* The byte offset message of a gzip refusal. */
static const char *gz_message(size_t byte, const char *what)
{
    static char message[256];
    snprintf(message, sizeof message, " byte %zu: corrupt gzip data (%s)", byte, what);
    return message;
}

/* Every refusal of the gzip framing says what zlib's inflate() in gzip mode said, at the same
 * byte (the members are framed by the loader so that their CRC-32 can be a fast one). */
START_TEST(gzip_framing_as_zlib)
{
    const int rows = rows_for(2101, 1103);
    struct text t = synthetic(rows, NULL, 0);
    struct dg_dataset plain;
    ck_assert_int_eq(
        dg_dataset_load_threads(write_file("f.csv", t.data, t.size), NULL, NULL, 1, &plain), DG_OK);
    for (int generic = 0; generic < 2; generic++) {
        if (generic)
            setenv("DIGITS_DATA_GENERIC", "1", 1);
        /* every optional header field, valid: the same store */
        struct text g = {0};
        gz_member(&g, t.data, t.size, 2 | 4 | 8 | 16, 8, 6, 0, 0, 0);
        const char *path = write_file("all.gz", g.data, g.size);
        ck_assert_uint_eq(expect_identical(path), (size_t)rows);
        struct dg_dataset d;
        ck_assert_int_eq(dg_dataset_load_threads(path, NULL, NULL, 2, &d), DG_OK);
        expect_same(&(struct dg_dataset){.count = plain.count,
                                         .images = plain.images,
                                         .labels = plain.labels,
                                         .format = plain.format,
                                         .gzipped = 1,
                                         .bytes_parsed = plain.bytes_parsed,
                                         .bytes_on_disk = g.size},
                    &d, 2);
        dg_dataset_free(&d);
        free(g.data);
        /* header refusals */
        g = (struct text){0};
        gz_member(&g, t.data, t.size, 0x20, 8, 6, 0, 0, 0);
        expect_message(write_file("flags.gz", g.data, g.size), DG_ERR_INPUT,
                       gz_message(4, "unknown header flags set"));
        free(g.data);
        g = (struct text){0};
        gz_member(&g, t.data, t.size, 0, 7, 6, 0, 0, 0);
        expect_message(write_file("cm.gz", g.data, g.size), DG_ERR_INPUT,
                       gz_message(4, "unknown compression method"));
        free(g.data);
        g = (struct text){0};
        gz_member(&g, t.data, t.size, 2 | 8, 8, 6, 1, 0, 0);
        expect_message(write_file("hcrc.gz", g.data, g.size), DG_ERR_INPUT,
                       gz_message(22, "header crc mismatch"));
        free(g.data);
        /* trailer refusals: the CRC after its 4 bytes, the length after its 4 */
        g = (struct text){0};
        gz_member(&g, t.data, t.size, 0, 8, 6, 0, 1, 0);
        expect_message(write_file("crc.gz", g.data, g.size), DG_ERR_INPUT,
                       gz_message(g.size - 4, "incorrect data check"));
        /* ... also when the file ends right after the bad CRC */
        expect_message(write_file("crc-cut.gz", g.data, g.size - 4), DG_ERR_INPUT,
                       gz_message(g.size - 4, "incorrect data check"));
        char cut[128];
        snprintf(cut, sizeof cut,
                 " byte %zu" GZIP_CUT, g.size - 6);
        expect_message(write_file("crc-cut2.gz", g.data, g.size - 6), DG_ERR_INPUT, cut);
        free(g.data);
        g = (struct text){0};
        gz_member(&g, t.data, t.size, 0, 8, 0, 0, 1, 0); /* stored blocks */
        expect_message(write_file("stored.gz", g.data, g.size), DG_ERR_INPUT,
                       gz_message(g.size - 4, "incorrect data check"));
        free(g.data);
        g = (struct text){0};
        gz_member(&g, t.data, t.size, 0, 8, 6, 0, 0, 1);
        expect_message(write_file("size.gz", g.data, g.size), DG_ERR_INPUT,
                       gz_message(g.size, "incorrect length check"));
        free(g.data);
        /* two members (the second starts mid-row): a bad CRC in either, a bad second header */
        size_t half = t.size / 2;
        for (int bad = 0; bad < 3; bad++) {
            g = (struct text){0};
            gz_member(&g, t.data, half, 0, 8, 6, 0, bad == 0, 0);
            size_t first = g.size;
            gz_member(&g, t.data + half, t.size - half, 0, 8, 1, 0, bad == 1, 0);
            if (bad == 2)
                g.data[first + 2] = 9;
            expect_message(write_file("two.gz", g.data, g.size), DG_ERR_INPUT,
                           bad == 0   ? gz_message(first - 4, "incorrect data check")
                           : bad == 1 ? gz_message(g.size - 4, "incorrect data check")
                                      : gz_message(first + 4, "unknown compression method"));
            free(g.data);
        }
        unsetenv("DIGITS_DATA_GENERIC");
    }
    dg_dataset_free(&plain);
    free(t.data);
}
END_TEST

START_TEST(default_thread_count)
{
    /* DIGITS_DATA_THREADS sets the default; 0 means the online CPUs; all give the same */
    struct text t = synthetic(rows_for(2143, 1303), NULL, 0);
    const char *path = write_file("default.csv", t.data, t.size);
    struct dg_dataset a, b;
    ck_assert_int_eq(dg_dataset_load_threads(path, NULL, NULL, 1, &a), DG_OK);
    setenv("DIGITS_DATA_THREADS", "5", 1);
    ck_assert_int_eq(dg_dataset_load(path, NULL, NULL, &b), DG_OK);
    expect_same(&a, &b, 5);
    dg_dataset_free(&b);
    unsetenv("DIGITS_DATA_THREADS");
    ck_assert_int_eq(dg_dataset_load_threads(path, NULL, NULL, 0, &b), DG_OK);
    expect_same(&a, &b, 0);
    dg_dataset_free(&b);
    ck_assert_int_eq(dg_dataset_load_threads(path, NULL, NULL, 1000, &b), DG_OK);
    expect_same(&a, &b, 1000);
    dg_dataset_free(&b);
    dg_dataset_free(&a);
    free(t.data);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("parse_threads");
    TCase *tc = tcase_create("parse_threads");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, sample_plain_and_gzip);
    tcase_add_test(tc, row_counts_no_multiple_of_the_threads);
    tcase_add_test(tc, pipe_grows_the_store_on_the_calling_thread);
    tcase_add_test(tc, shared_mnist);
    tcase_add_test(tc, error_in_the_first_middle_and_last_row);
    tcase_add_test(tc, two_errors_in_different_chunks);
    tcase_add_test(tc, other_errors_in_later_chunks);
    tcase_add_test(tc, truncated_and_corrupt_gzip);
    tcase_add_test(tc, gzip_framing_as_zlib);
    tcase_add_test(tc, default_thread_count);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
