/* The benchmark's untimed parts: summary statistics, list options, the memory-counting
 * wrapper, the op-by-op timed step (bit-identical parameters to the dg_net path), CSV writing
 * for the parse scaling study, synthetic stores, the runner's settings and report
 * (dg_bench_run: counts, names, what is left out, synthetic images), and `digits bench` end to
 * end on a small CSV (valid JSON with the expected keys and exact counts, the table, synthetic
 * images, usage errors). No test looks at a timing. Images are uint8 N x 784, activations
 * float32 NCHW. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "digits/bench.h"
#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"
#include "cli_util.h"
#include "test_util.h"

/* ---- a small JSON reader for checking the command's output ---- */

enum json_kind { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
    enum json_kind kind;
    char *key;          /* the member name, inside an object */
    double number;      /* numbers; booleans as 0 or 1 */
    char *string;       /* strings */
    struct json *items; /* array elements or object members */
    int count;
};

struct json_reader {
    const char *p;
    int depth;
};

static void json_free(struct json *value)
{
    for (int i = 0; i < value->count; i++)
        json_free(&value->items[i]);
    free(value->items);
    free(value->string);
    free(value->key);
    memset(value, 0, sizeof *value);
}

static void skip_space(struct json_reader *r)
{
    while (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r')
        r->p++;
}

static int read_string(struct json_reader *r, char **out)
{
    if (*r->p != '"')
        return 0;
    r->p++;
    size_t capacity = 16, length = 0;
    char *text = malloc(capacity);
    for (;;) {
        unsigned char c = (unsigned char)*r->p++;
        if (c == '\0' || c < 0x20) {
            free(text);
            return 0;
        }
        if (c == '"')
            break;
        if (c == '\\') {
            char e = *r->p++;
            if (e == 'u') {
                for (int i = 0; i < 4; i++) {
                    if (!isxdigit((unsigned char)*r->p++)) {
                        free(text);
                        return 0;
                    }
                }
                c = '?';
            } else if (e && strchr("\"\\/bfnrt", e)) {
                c = (unsigned char)(e == 'n' ? '\n' : e == 't' ? '\t' : e);
            } else {
                free(text);
                return 0;
            }
        }
        if (length + 2 > capacity)
            text = realloc(text, capacity *= 2);
        text[length++] = (char)c;
    }
    text[length] = '\0';
    *out = text;
    return 1;
}

static int read_value(struct json_reader *r, struct json *out);

static int read_items(struct json_reader *r, struct json *out, char close, int members)
{
    r->p++;
    skip_space(r);
    if (*r->p == close) {
        r->p++;
        return 1;
    }
    for (;;) {
        out->items = realloc(out->items, (size_t)(out->count + 1) * sizeof *out->items);
        struct json *entry = &out->items[out->count++];
        memset(entry, 0, sizeof *entry);
        skip_space(r);
        if (members) {
            if (!read_string(r, &entry->key))
                return 0;
            skip_space(r);
            if (*r->p++ != ':')
                return 0;
        }
        if (!read_value(r, entry))
            return 0;
        skip_space(r);
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        if (*r->p == close) {
            r->p++;
            return 1;
        }
        return 0;
    }
}

static int read_value(struct json_reader *r, struct json *out)
{
    skip_space(r);
    if (++r->depth > 64)
        return 0;
    int ok = 0;
    const char *p = r->p;
    if (*p == '{') {
        out->kind = JSON_OBJECT;
        ok = read_items(r, out, '}', 1);
    } else if (*p == '[') {
        out->kind = JSON_ARRAY;
        ok = read_items(r, out, ']', 0);
    } else if (*p == '"') {
        out->kind = JSON_STRING;
        ok = read_string(r, &out->string);
    } else if (strncmp(p, "null", 4) == 0) {
        out->kind = JSON_NULL;
        r->p += 4;
        ok = 1;
    } else if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0) {
        out->kind = JSON_BOOL;
        out->number = p[0] == 't';
        r->p += p[0] == 't' ? 4 : 5;
        ok = 1;
    } else if (*p == '-' || isdigit((unsigned char)*p)) {
        const char *digits = p + (*p == '-');
        if (!isdigit((unsigned char)*digits) ||
            (*digits == '0' && isdigit((unsigned char)digits[1])))
            return 0;
        char *end = NULL;
        out->kind = JSON_NUMBER;
        out->number = strtod(p, &end);
        r->p = end;
        ok = end > p;
    }
    r->depth--;
    return ok;
}

/* Parses the whole text as one JSON value; 0 on any syntax error or trailing text. */
static int json_parse(const char *text, struct json *out)
{
    struct json_reader r = {text, 0};
    memset(out, 0, sizeof *out);
    if (!read_value(&r, out)) {
        json_free(out);
        return 0;
    }
    skip_space(&r);
    if (*r.p != '\0') {
        json_free(out);
        return 0;
    }
    return 1;
}

static const struct json *member(const struct json *object, const char *key)
{
    ck_assert_msg(object && object->kind == JSON_OBJECT, "not an object looking for '%s'", key);
    for (int i = 0; i < object->count; i++)
        if (strcmp(object->items[i].key, key) == 0)
            return &object->items[i];
    ck_abort_msg("no member '%s'", key);
    return NULL;
}

static const struct json *item(const struct json *array, int index)
{
    ck_assert_msg(array && array->kind == JSON_ARRAY && index < array->count, "no array item %d",
                  index);
    return &array->items[index];
}

static const char *string_of(const struct json *value)
{
    ck_assert_msg(value && value->kind == JSON_STRING, "not a string");
    return value->string;
}

static double number_of(const struct json *value)
{
    ck_assert_msg(value && value->kind == JSON_NUMBER, "not a number");
    return value->number;
}

/* A {median, min, max, count} object with min <= median <= max and the given count. */
static void expect_stats(const struct json *value, int count)
{
    ck_assert_ptr_nonnull(value);
    ck_assert_int_eq(value->kind, JSON_OBJECT);
    double median = number_of(member(value, "median"));
    double min = number_of(member(value, "min"));
    double max = number_of(member(value, "max"));
    ck_assert(min <= median && median <= max);
    ck_assert(min >= 0.0);
    ck_assert_int_eq((int)number_of(member(value, "count")), count);
}

START_TEST(json_reader_accepts_and_rejects)
{
    struct json value;
    ck_assert(
        json_parse("{\"a\": [1, 2.5e3, -0.5], \"b\": {\"c\": \"x\\\"y\"}, \"d\": null}", &value));
    ck_assert_int_eq(value.count, 3);
    ck_assert_double_eq(number_of(item(member(&value, "a"), 1)), 2500.0);
    ck_assert_str_eq(string_of(member(member(&value, "b"), "c")), "x\"y");
    ck_assert_int_eq(member(&value, "d")->kind, JSON_NULL);
    json_free(&value);
    const char *bad[] = {"{",      "{\"a\" 1}", "[1,]", "{\"a\": 1} x", "[01]", "\"\t\"",
                         "{a: 1}", "[nan]",     ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!json_parse(bad[i], &value), "accepted '%s'", bad[i]);
}
END_TEST

/* ---- statistics and options ---- */

START_TEST(stats_median_min_max)
{
    struct dg_bench_stats stats;
    const double odd[] = {5.0, 1.0, 4.0, 2.0, 3.0};
    dg_bench_stats_compute(odd, 5, &stats);
    ck_assert_int_eq(stats.count, 5);
    ck_assert_double_eq(stats.median, 3.0);
    ck_assert_double_eq(stats.min, 1.0);
    ck_assert_double_eq(stats.max, 5.0);
    ck_assert_double_eq(odd[0], 5.0); /* input left unsorted */

    const double even[] = {10.0, 2.0, 8.0, 4.0};
    dg_bench_stats_compute(even, 4, &stats);
    ck_assert_double_eq(stats.median, 6.0);
    ck_assert_double_eq(stats.min, 2.0);
    ck_assert_double_eq(stats.max, 10.0);

    const double one[] = {0.25};
    dg_bench_stats_compute(one, 1, &stats);
    ck_assert_double_eq(stats.median, 0.25);
    ck_assert_double_eq(stats.min, 0.25);
    ck_assert_double_eq(stats.max, 0.25);

    dg_bench_stats_compute(one, 0, &stats);
    ck_assert_int_eq(stats.count, 0);
    ck_assert_double_eq(stats.median, 0.0);

    enum { N = 101 };
    double *many = malloc(N * sizeof *many);
    for (int i = 0; i < N; i++)
        many[i] = (double)((i * 37) % N);
    dg_bench_stats_compute(many, N, &stats);
    ck_assert_double_eq(stats.median, 50.0);
    ck_assert_double_eq(stats.min, 0.0);
    ck_assert_double_eq(stats.max, 100.0);
    free(many);
}
END_TEST

START_TEST(list_option_parsing)
{
    long values[4];
    int count = -1;
    ck_assert_int_eq(dg_bench_parse_list("--batch", "32,86,256,1024", 1, 65536, values, 4, &count),
                     DG_OK);
    ck_assert_int_eq(count, 4);
    ck_assert_int_eq(values[0], 32);
    ck_assert_int_eq(values[1], 86);
    ck_assert_int_eq(values[2], 256);
    ck_assert_int_eq(values[3], 1024);
    ck_assert_int_eq(dg_bench_parse_list("--batch", "7", 1, 10, values, 4, &count), DG_OK);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(values[0], 7);
    const char *bad[] = {"",   ",",  "3,", ",3", "3,,4", "3;4",       "x",
                         "3x", " 3", "+3", "0",  "11",   "1,2,3,4,5", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(dg_bench_parse_list("--batch", bad[i], 1, 10, values, 4, &count) ==
                          DG_ERR_USAGE,
                      "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(dg_error_message(), "--batch"));
    }
}
END_TEST

/* ---- memory ---- */

START_TEST(memory_wrapper_counts_vtable_allocations)
{
    struct dg_backend *be = dg_test_cpu_backend(1, DG_CPU_KERNELS_GENERIC);
    const struct dg_backend_ops *inner = be->ops;
    struct dg_bench_memory *tracker = NULL;
    struct dg_bench_memory_stats stats;
    ck_assert_int_eq(dg_bench_memory_attach(be, &tracker), DG_OK);
    ck_assert_ptr_ne(be->ops, inner);
    /* the CPU has no device memory; the wrapper forwards the entry as it is */
    ck_assert(inner->device_memory == NULL);
    ck_assert(be->ops->device_memory == inner->device_memory);

    void *a = NULL, *b = NULL, *c = NULL;
    ck_assert_int_eq(be->ops->alloc(be, 1000, &a), DG_OK);
    ck_assert_int_eq(be->ops->alloc(be, 24, &b), DG_OK);
    ck_assert_int_eq(be->ops->alloc(be, 3, &c), DG_OK);
    ck_assert_uint_eq(((unsigned char *)a)[999], 0); /* still the backend's zeroed memory */
    dg_bench_memory_read(tracker, &stats);
    ck_assert_uint_eq(stats.current_bytes, 1027);
    ck_assert_uint_eq(stats.peak_bytes, 1027);
    ck_assert_uint_eq(stats.allocations, 3);
    be->ops->free(be, a);
    dg_bench_memory_read(tracker, &stats);
    ck_assert_uint_eq(stats.current_bytes, 27);
    ck_assert_uint_eq(stats.peak_bytes, 1027);
    dg_bench_memory_reset_peak(tracker);
    dg_bench_memory_read(tracker, &stats);
    ck_assert_uint_eq(stats.peak_bytes, 27);

    /* A net allocates through the vtable and gives it all back. */
    struct dg_model model;
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    struct dg_net *net = NULL;
    ck_assert_int_eq(dg_net_create(be, &model, 2, &net), DG_OK);
    dg_bench_memory_read(tracker, &stats);
    /* at least params, grads and RMSprop accumulators */
    ck_assert_uint_ge(stats.current_bytes, 27 + 3 * model.param_count * sizeof(float));
    size_t with_net = stats.current_bytes;
    dg_net_free(net);
    dg_bench_memory_read(tracker, &stats);
    ck_assert_uint_eq(stats.current_bytes, 27);
    ck_assert_uint_eq(stats.peak_bytes, with_net);

    be->ops->free(be, b);
    dg_bench_memory_detach(be, tracker);
    ck_assert_ptr_eq(be->ops, inner);
    be->ops->free(be, c); /* allocated while tracked, freed after: still valid */
    dg_model_free(&model);
    dg_backend_destroy(be);
}
END_TEST

/* ---- the timed step ---- */

START_TEST(timed_step_matches_the_net_path)
{
    enum { BATCH = 8, STEPS = 3 };
    struct dg_backend *be = dg_test_cpu_backend(2, DG_CPU_KERNELS_AUTO);
    struct dg_dataset dataset;
    ck_assert_int_eq(dg_bench_synthetic_dataset(40, 3, &dataset), DG_OK);
    struct dg_model model;
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    dg_model_init_glorot(&model, 9);
    void *handle = NULL;
    ck_assert_int_eq(be->ops->dataset_attach(be, &dataset, &handle), DG_OK);
    struct dg_net *plain = NULL, *timed = NULL;
    ck_assert_int_eq(dg_net_create(be, &model, BATCH, &plain), DG_OK);
    ck_assert_int_eq(dg_net_create(be, &model, BATCH, &timed), DG_OK);
    ck_assert_int_eq(dg_net_upload_params(plain, model.params, 1), DG_OK);
    ck_assert_int_eq(dg_net_upload_params(timed, model.params, 1), DG_OK);
    ck_assert_int_eq(dg_net_stats_reset(plain), DG_OK);
    ck_assert_int_eq(dg_net_stats_reset(timed), DG_OK);

    for (uint32_t step = 0; step < STEPS; step++) {
        uint32_t rows[BATCH];
        for (int i = 0; i < BATCH; i++)
            rows[i] = (uint32_t)((step * 13 + (uint32_t)i * 5) % dataset.count);
        struct dg_net_mode mode = {1, 77, 2, step};
        struct dg_augment_key key = {77, 2, step, 10.0f, 0.1f, 0.1f};
        const struct dg_augment_key *augment = step == 1 ? &key : NULL;
        ck_assert_int_eq(
            be->ops->batch_assemble(be, handle, rows, BATCH, augment, plain->act[0], plain->labels),
            DG_OK);
        ck_assert_int_eq(dg_net_forward(plain, BATCH, &mode, plain->labels), DG_OK);
        ck_assert_int_eq(dg_net_backward(plain, BATCH, &mode), DG_OK);
        ck_assert_int_eq(dg_net_update(plain, 1e-3f, 0.9f, 1e-8f), DG_OK);

        struct dg_bench_op_times times;
        ck_assert_int_eq(dg_bench_timed_step(timed, handle, rows, BATCH, &mode, augment, 1e-3f,
                                             0.9f, 1e-8f, &times),
                         DG_OK);
    }
    float *want = dg_test_floats(model.param_count);
    float *got = dg_test_floats(model.param_count);
    ck_assert_int_eq(dg_net_download_params(plain, want), DG_OK);
    ck_assert_int_eq(dg_net_download_params(timed, got), DG_OK);
    ck_assert(dg_test_equal("params after 3 steps", got, want, model.param_count));
    double loss_want, loss_got, correct_want, correct_got;
    ck_assert_int_eq(dg_net_stats_read(plain, &loss_want, &correct_want), DG_OK);
    ck_assert_int_eq(dg_net_stats_read(timed, &loss_got, &correct_got), DG_OK);
    ck_assert_double_eq(loss_got, loss_want);
    ck_assert_double_eq(correct_got, correct_want);
    ck_assert(loss_want > 0.0);

    /* a batch other than the net's planned one is refused */
    uint32_t rows[BATCH] = {0};
    struct dg_net_mode mode = {1, 77, 0, 0};
    struct dg_bench_op_times times;
    ck_assert_int_eq(dg_bench_timed_step(timed, handle, rows, BATCH - 1, &mode, NULL, 1e-3f, 0.9f,
                                         1e-8f, &times),
                     DG_ERR_RUNTIME);

    free(want);
    free(got);
    dg_net_free(plain);
    dg_net_free(timed);
    be->ops->dataset_detach(be, handle);
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
}
END_TEST

/* ---- data ---- */

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/digits-test-bench-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

START_TEST(synthetic_store_is_seeded_and_sparse)
{
    struct dg_dataset a, b, c;
    ck_assert_int_eq(dg_bench_synthetic_dataset(500, 7, &a), DG_OK);
    ck_assert_int_eq(dg_bench_synthetic_dataset(500, 7, &b), DG_OK);
    ck_assert_int_eq(dg_bench_synthetic_dataset(500, 8, &c), DG_OK);
    ck_assert_uint_eq(a.count, 500);
    ck_assert_ptr_nonnull(a.labels);
    ck_assert_int_eq(memcmp(a.images, b.images, 500 * DG_PIXELS), 0);
    ck_assert_int_eq(memcmp(a.labels, b.labels, 500), 0);
    ck_assert_int_ne(memcmp(a.images, c.images, 500 * DG_PIXELS), 0);
    size_t nonzero = 0;
    int label_seen[DG_CLASSES] = {0};
    for (size_t i = 0; i < 500 * (size_t)DG_PIXELS; i++)
        nonzero += a.images[i] != 0;
    for (int i = 0; i < 500; i++) {
        ck_assert_uint_lt(a.labels[i], DG_CLASSES);
        label_seen[a.labels[i]] = 1;
    }
    for (int k = 0; k < DG_CLASSES; k++)
        ck_assert(label_seen[k]);
    /* 51/256 of the pixels are drawn non-zero (minus the 1/256 that draw 0): 19.5% +- 1% */
    double fraction = (double)nonzero / (500.0 * DG_PIXELS);
    ck_assert_msg(fabs(fraction - 0.1985) < 0.01, "non-zero fraction %.4f", fraction);
    dg_dataset_free(&a);
    dg_dataset_free(&b);
    dg_dataset_free(&c);
}
END_TEST

START_TEST(written_csv_loads_back_cycling_the_store)
{
    make_tmpdir();
    struct dg_dataset source, loaded;
    ck_assert_int_eq(dg_bench_synthetic_dataset(5, 11, &source), DG_OK);
    source.images[0] = 255;
    source.images[1] = 10;
    char path[512];
    snprintf(path, sizeof path, "%s/repeat.csv", tmpdir);
    ck_assert_int_eq(dg_bench_write_csv(path, &source, 12), DG_OK);
    if (dg_dataset_load(path, NULL, NULL, &loaded) != DG_OK)
        ck_abort_msg("load: %s", dg_error_message());
    ck_assert_int_eq(loaded.format, DG_FORMAT_CSV_TRAIN);
    ck_assert_uint_eq(loaded.count, 12);
    ck_assert_ptr_nonnull(loaded.labels);
    for (size_t r = 0; r < 12; r++) {
        ck_assert_int_eq(
            memcmp(loaded.images + r * DG_PIXELS, source.images + (r % 5) * DG_PIXELS, DG_PIXELS),
            0);
        ck_assert_uint_eq(loaded.labels[r], source.labels[r % 5]);
    }
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    ck_assert_uint_eq((size_t)ftell(fp), loaded.bytes_parsed);
    fclose(fp);
    dg_dataset_free(&loaded);

    /* without labels: the test layout */
    source.allocator.free(source.labels, source.allocator.ctx);
    source.labels = NULL;
    ck_assert_int_eq(dg_bench_write_csv(path, &source, 3), DG_OK);
    if (dg_dataset_load(path, NULL, NULL, &loaded) != DG_OK)
        ck_abort_msg("load: %s", dg_error_message());
    ck_assert_int_eq(loaded.format, DG_FORMAT_CSV_TEST);
    ck_assert_uint_eq(loaded.count, 3);
    ck_assert_ptr_null(loaded.labels);
    ck_assert_int_eq(memcmp(loaded.images, source.images, 3 * DG_PIXELS), 0);
    dg_dataset_free(&loaded);

    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.csv", tmpdir);
    ck_assert_int_eq(dg_bench_write_csv(bad, &source, 3), DG_ERR_USAGE);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), bad));
    dg_dataset_free(&source);
    remove(path);
    rmdir(tmpdir);
}
END_TEST

/* ---- the command ---- */

static char out_path[512], err_path[512], csv_path[512];

static int run(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int code = dg_test_run_digits_v(tmpdir, out_path, err_path, fmt, ap);
    va_end(ap);
    return code;
}

/* A 20-row train-layout CSV written by hand; returns its size in bytes. */
static long write_small_csv(void)
{
    snprintf(csv_path, sizeof csv_path, "%s/small.csv", tmpdir);
    FILE *fp = fopen(csv_path, "w");
    ck_assert_ptr_nonnull(fp);
    fprintf(fp, "label");
    for (int k = 0; k < DG_PIXELS; k++)
        fprintf(fp, ",pixel%d", k);
    fprintf(fp, "\n");
    for (int r = 0; r < 20; r++) {
        fprintf(fp, "%d", r % 10);
        for (int k = 0; k < DG_PIXELS; k++)
            fprintf(fp, ",%d", (k * 7 + r * 31) % 5 == 0 ? (k + r) % 256 : 0);
        fprintf(fp, "\n");
    }
    long size = ftell(fp);
    fclose(fp);
    return size;
}

static struct json read_json_output(void)
{
    char *text = dg_test_slurp(out_path);
    struct json value;
    if (!json_parse(text, &value))
        ck_abort_msg("not valid JSON:\n%s", text);
    free(text);
    return value;
}

static void expect_backend(const struct json *backend, const int *batches, int batch_count,
                           int steps, int infer_batch, int layer_batch, int reps)
{
    ck_assert_str_eq(string_of(member(backend, "name")), "cpu");
    ck_assert_ptr_nonnull(strstr(string_of(member(backend, "description")), "cpu"));
    const struct json *train = member(backend, "train");
    ck_assert_int_eq(train->kind, JSON_ARRAY);
    ck_assert_int_eq(train->count, batch_count);
    for (int i = 0; i < batch_count; i++) {
        ck_assert_int_eq((int)number_of(member(item(train, i), "batch")), batches[i]);
        if (steps > 0)
            ck_assert_int_eq((int)number_of(member(item(train, i), "steps")), steps);
        expect_stats(member(item(train, i), "images_per_s"), reps);
    }
    const struct json *infer = member(backend, "inference");
    ck_assert_int_eq((int)number_of(member(infer, "batch")), infer_batch);
    expect_stats(member(infer, "images_per_s"), reps);
    const struct json *layers = member(backend, "layers");
    ck_assert_int_eq((int)number_of(member(layers, "batch")), layer_batch);
    const char *names[] = {"conv1", "conv2",    "pool1",    "dropout1", "conv3",    "conv4",
                           "pool2", "dropout2", "flatten1", "dense1",   "dropout3", "dense2"};
    const struct json *rows = member(layers, "rows");
    ck_assert_int_eq(rows->count, 12);
    for (int l = 0; l < 12; l++) {
        ck_assert_str_eq(string_of(member(item(rows, l), "name")), names[l]);
        expect_stats(member(item(rows, l), "forward_ms"), reps);
        expect_stats(member(item(rows, l), "backward_ms"), reps);
    }
    expect_stats(member(layers, "assemble_ms"), reps);
    expect_stats(member(layers, "softmax_xent_ms"), reps);
    expect_stats(member(layers, "update_ms"), reps);
    expect_stats(member(layers, "step_ms"), reps);
    /* at least params, grads, RMSprop accumulators (887,530 floats each) */
    ck_assert(number_of(member(backend, "net_peak_bytes")) >= 3.0 * 887530 * 4);
    ck_assert_int_eq(member(backend, "device_memory")->kind, JSON_NULL);
}

START_TEST(bench_quick_json_has_the_expected_keys)
{
    make_tmpdir();
    long size = write_small_csv();
    int sanitized = getenv("DIGITS_TEST_SANITIZED") != NULL;
    /* --quick as a user runs it (the sanitized build with smaller batches: it is slower) */
    ck_assert_int_eq(run("bench --quick --json --data %s --device cpu %s", csv_path,
                         sanitized ? "--batch 8,16 --infer-batch 16 --layer-batch 8 --steps 2 "
                                     "--infer-steps 2"
                                   : ""),
                     0);
    struct json value = read_json_output();
    ck_assert_str_eq(string_of(member(&value, "digits_version")), DIGITS_VERSION);
    ck_assert_ptr_nonnull(string_of(member(member(&value, "machine"), "cpu")));
    ck_assert((int)number_of(member(member(&value, "machine"), "logical_cpus")) >= 1);
    ck_assert_ptr_nonnull(string_of(member(member(&value, "machine"), "load_average")));
    const struct json *settings = member(&value, "settings");
    ck_assert_int_eq((int)number_of(member(settings, "reps")), 3);
    ck_assert_int_eq((int)number_of(member(settings, "warmup")), 1);
    ck_assert_int_eq(member(settings, "quick")->kind, JSON_BOOL);
    ck_assert_str_eq(string_of(member(settings, "device")), "cpu");
    ck_assert_int_eq(member(member(&value, "data"), "synthetic")->number, 0);
    ck_assert_int_eq((int)number_of(member(member(&value, "data"), "images")), 20);

    const struct json *parse = member(&value, "parse");
    ck_assert_int_eq(parse->count, 1);
    const struct json *p = item(parse, 0);
    ck_assert_str_eq(string_of(member(p, "file")), csv_path);
    ck_assert_str_eq(string_of(member(p, "format")), "csv (train layout)");
    ck_assert_int_eq(member(p, "gzipped")->kind, JSON_BOOL);
    ck_assert_int_eq((int)member(p, "gzipped")->number, 0);
    ck_assert_int_eq((int)number_of(member(p, "rows")), 20);
    ck_assert_int_eq((long)number_of(member(p, "bytes_parsed")), size);
    ck_assert_int_eq((long)number_of(member(p, "bytes_on_disk")), size);
    expect_stats(member(p, "seconds"), 3);
    expect_stats(member(p, "mb_per_s"), 3);
    ck_assert_int_eq(member(&value, "parse_scaling")->count, 0);

    const struct json *backends = member(&value, "backends");
    ck_assert_int_eq(backends->count, 1);
    int quick_batches[] = {86, 256}, sanitized_batches[] = {8, 16};
    expect_backend(item(backends, 0), sanitized ? sanitized_batches : quick_batches, 2, 0,
                   sanitized ? 16 : 256, sanitized ? 8 : 86, 3);
    ck_assert_int_eq(member(&value, "skipped")->kind, JSON_ARRAY);
    ck_assert(number_of(member(&value, "peak_rss_bytes")) > 0);
    json_free(&value);
}
END_TEST

START_TEST(bench_options_steps_and_scaling)
{
    make_tmpdir();
    write_small_csv();
    ck_assert_int_eq(run("bench --json -q --data %s --csv %s --device cpu --threads 1 --reps 2 "
                         "--warmup 0 --batch 4,6,5 --steps 2 --infer-batch 3 --infer-steps 2 "
                         "--layer-batch 2 --scaling-rows 7,30 --augment",
                         csv_path, csv_path),
                     0);
    struct json value = read_json_output();
    ck_assert_int_eq(member(member(&value, "settings"), "augment")->number, 1);
    ck_assert_int_eq((int)number_of(member(member(&value, "settings"), "threads")), 1);
    const struct json *parse = member(&value, "parse");
    ck_assert_int_eq(parse->count, 2);
    ck_assert_str_eq(string_of(member(item(parse, 0), "role")), "data");
    ck_assert_str_eq(string_of(member(item(parse, 1), "role")), "csv");
    const struct json *scaling = member(&value, "parse_scaling");
    ck_assert_int_eq(scaling->count, 2);
    ck_assert_int_eq((int)number_of(member(item(scaling, 0), "rows")), 7);
    ck_assert_int_eq((int)number_of(member(item(scaling, 1), "rows")), 30);
    expect_stats(member(item(scaling, 1), "mb_per_s"), 2);
    const struct json *backend = item(member(&value, "backends"), 0);
    int batches[] = {4, 6, 5};
    expect_backend(backend, batches, 3, 2, 3, 2, 2);
    ck_assert_int_eq((int)number_of(member(member(backend, "inference"), "steps")), 2);
    ck_assert_ptr_nonnull(strstr(string_of(member(backend, "description")), "1 thread"));
    json_free(&value);
    DIR *dir = opendir(tmpdir);
    ck_assert_ptr_nonnull(dir);
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        ck_assert_msg(strncmp(entry->d_name, "digits-bench-", 13) != 0,
                      "a temporary file was left: %s", entry->d_name);
    closedir(dir);

    /* the table */
    ck_assert_int_eq(run("bench --data %s --device cpu --reps 1 --warmup 0 --batch 4 --steps 1 "
                         "--infer-batch 4 --infer-steps 1 --layer-batch 4",
                         csv_path),
                     0);
    dg_test_expect_in(out_path, "CSV parse (dg_dataset_load");
    dg_test_expect_in(out_path, "small.csv");
    dg_test_expect_in(out_path, "training, batch 4");
    dg_test_expect_in(out_path, "inference, batch 4");
    dg_test_expect_in(out_path, "one training step, batch 4, op by op");
    dg_test_expect_in(out_path, "conv2");
    dg_test_expect_in(out_path, "rmsprop");
    dg_test_expect_in(out_path, "peak host memory (RSS)");
    dg_test_expect_in(err_path, "bench: cpu: training, batch 4, 1 steps x 1 reps");

    /* --synthetic: the seeded-noise images, no parse rows, no per-layer breakdown */
    ck_assert_int_eq(run("bench --json -q --synthetic --device cpu --reps 1 --warmup 0 --batch 2 "
                         "--steps 1 --infer-batch 2 --infer-steps 1 --layer-batch 0 --no-parse"),
                     0);
    value = read_json_output();
    const struct json *data = member(&value, "data");
    ck_assert_int_eq(member(data, "synthetic")->kind, JSON_BOOL);
    ck_assert_int_eq((int)member(data, "synthetic")->number, 1);
    ck_assert_str_eq(string_of(member(data, "source")), "seeded noise");
    ck_assert_int_eq((int)number_of(member(data, "images")), DG_BENCH_SYNTHETIC_IMAGES);
    ck_assert_int_eq(member(&value, "parse")->count, 0);
    backend = item(member(&value, "backends"), 0);
    ck_assert_int_eq((int)number_of(member(item(member(backend, "train"), 0), "batch")), 2);
    expect_stats(member(item(member(backend, "train"), 0), "images_per_s"), 1);
    expect_stats(member(member(backend, "inference"), "images_per_s"), 1);
    ck_assert_int_eq(member(backend, "layers")->kind, JSON_NULL);
    json_free(&value);

    /* --synthetic with a data file: the file's loads are timed, training uses the noise */
    ck_assert_int_eq(run("bench --synthetic --data %s --device cpu --reps 1 --warmup 0 --batch 2 "
                         "--steps 1 --infer-batch 0 --layer-batch 2",
                         csv_path),
                     0);
    dg_test_expect_in(out_path, "images: seeded noise (synthetic) (10000)");
    dg_test_expect_in(out_path, "small.csv");
    dg_test_expect_in(out_path, "training, batch 2");
    dg_test_expect_in(out_path, "one training step, batch 2, op by op");
    dg_test_expect_in(err_path, "bench: synthetic images");

    /* --net: that network's layers are timed, the spec is in the table and the JSON */
    ck_assert_int_eq(run("bench --data %s --device cpu --reps 1 --warmup 0 --batch 4 --steps 1 "
                         "--infer-batch 4 --infer-steps 1 --layer-batch 4 --no-parse "
                         "--net 4C3-P2-F-16-10",
                         csv_path),
                     0);
    dg_test_expect_in(out_path, "network: --net 4C3-P2-F-16-10\n");
    dg_test_expect_in(out_path, "  dense2 ");
    char *table = dg_test_slurp(out_path);
    ck_assert_msg(strstr(table, "conv2") == NULL, "the 1-convolution network timed a conv2");
    free(table);
    ck_assert_int_eq(run("bench --json -q --data %s --device cpu --reps 1 --warmup 0 --batch 2 "
                         "--steps 1 --infer-batch 0 --layer-batch 0 --no-parse --net 4C3-P2-F-16-10",
                         csv_path),
                     0);
    value = read_json_output();
    ck_assert_str_eq(string_of(member(member(&value, "settings"), "net")), "4C3-P2-F-16-10");
    json_free(&value);
}
END_TEST

/* ---- the runner ---- */

struct progress_log {
    int count;
    char text[4096];
};

static void log_progress(void *ctx, const char *message)
{
    struct progress_log *log = ctx;
    size_t used = strlen(log->text);
    snprintf(log->text + used, sizeof log->text - used, "%s\n", message);
    log->count++;
}

START_TEST(settings_resolve_defaults_and_refuse_bad_values)
{
    struct dg_bench_settings s;
    dg_bench_settings_init(&s);
    ck_assert_int_eq(s.parse, 1);
    ck_assert_str_eq(s.device_spec, "all");
    ck_assert_int_eq(s.infer_batch, 256);
    ck_assert_int_eq(dg_bench_settings_resolve(&s), DG_OK);
    ck_assert_int_eq(s.reps, 5);
    ck_assert_int_eq(s.warmup, 2);
    ck_assert_int_eq(s.batch_count, 2);
    ck_assert_int_eq(s.batches[0], 86);
    ck_assert_int_eq(s.batches[1], 256);
    ck_assert_int_eq(s.layer_batch, 256);
    ck_assert_int_eq(s.scaling_count, 0);
    ck_assert_int_eq(dg_bench_settings_resolve(&s), DG_OK); /* idempotent */
    ck_assert_int_eq(s.reps, 5);

    dg_bench_settings_init(&s);
    s.quick = 1;
    s.scaling = 1;
    ck_assert_int_eq(dg_bench_settings_resolve(&s), DG_OK);
    ck_assert_int_eq(s.reps, 3);
    ck_assert_int_eq(s.warmup, 1);
    ck_assert_int_eq(s.layer_batch, 86);
    ck_assert_int_eq(s.batch_count, 4);
    ck_assert_int_eq(s.batches[0], 32);
    ck_assert_int_eq(s.batches[3], 1024);
    ck_assert_int_eq(s.scaling_count, 3);
    ck_assert_int_eq(s.scaling_rows[2], 600000);

    /* given values stay; 0 warm-ups and no breakdown are values, not "unset" */
    dg_bench_settings_init(&s);
    s.quick = 1;
    s.reps = 7;
    s.warmup = 0;
    s.layer_batch = 0;
    s.batches[0] = 5;
    s.batch_count = 1;
    ck_assert_int_eq(dg_bench_settings_resolve(&s), DG_OK);
    ck_assert_int_eq(s.reps, 7);
    ck_assert_int_eq(s.warmup, 0);
    ck_assert_int_eq(s.layer_batch, 0);
    ck_assert_int_eq(s.batch_count, 1);
    ck_assert_int_eq(s.batches[0], 5);

    dg_bench_settings_init(&s);
    s.device_spec = "gpu";
    ck_assert_int_eq(dg_bench_settings_resolve(&s), DG_ERR_USAGE);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "'gpu'"));
    dg_bench_settings_init(&s);
    s.reps = DG_BENCH_MAX_REPS + 1;
    ck_assert_int_eq(dg_bench_settings_resolve(&s), DG_ERR_USAGE);
    dg_bench_settings_init(&s);
    s.batches[0] = 0;
    s.batch_count = 1;
    ck_assert_int_eq(dg_bench_settings_resolve(&s), DG_ERR_USAGE);

    /* dg_bench_run refuses them before measuring anything */
    struct dg_bench_report *stale = calloc(1, sizeof *stale), *report = stale;
    dg_bench_settings_init(&s);
    s.device_spec = "gpu";
    s.data_path = "/nonexistent/never-read.csv";
    ck_assert_int_eq(dg_bench_run(&s, &report), DG_ERR_USAGE);
    ck_assert_ptr_null(report);
    free(stale);
}
END_TEST

/* A small run through the API: batch sizes, step counts and names as asked. */
START_TEST(runner_reports_what_the_settings_ask)
{
    make_tmpdir();
    write_small_csv();
    struct progress_log log = {0};
    struct dg_bench_settings s;
    dg_bench_settings_init(&s);
    s.data_path = csv_path;
    s.device_spec = "cpu";
    s.threads = 1;
    s.reps = 2;
    s.warmup = 0;
    s.batches[0] = 4;
    s.batches[1] = 3;
    s.batch_count = 2;
    s.steps = 1;
    s.infer_batch = 5;
    s.infer_steps = 2;
    s.layer_batch = 2;
    s.scaling_rows[0] = 6;
    s.scaling_count = 1;
    s.scaling = 1;
    s.progress = log_progress;
    s.progress_ctx = &log;
    struct dg_bench_report *report = NULL;
    if (dg_bench_run(&s, &report) != DG_OK)
        ck_abort_msg("dg_bench_run: %s", dg_error_message());
    ck_assert_ptr_nonnull(report);

    ck_assert_int_eq(report->settings.reps, 2);
    ck_assert_int_eq(report->settings.warmup, 0);
    ck_assert_str_eq(report->data_source, csv_path);
    ck_assert_int_eq(report->synthetic, 0);
    ck_assert_uint_eq(report->image_count, 20);
    ck_assert_int_eq(report->parse_count, 1);
    ck_assert_str_eq(report->parse[0].role, "data");
    ck_assert_uint_eq(report->parse[0].rows, 20);
    ck_assert_int_eq(report->parse[0].seconds.count, 2);
    ck_assert_int_eq(report->scaling_count, 1);
    ck_assert_uint_eq(report->scaling[0].rows, 6);
    ck_assert_str_eq(report->scaling[0].path, "6 rows (temp CSV)");

    ck_assert_int_eq(report->backend_count, 1);
    ck_assert_int_eq(report->skipped_count, 0);
    const struct dg_bench_backend_result *cpu = &report->backends[0];
    ck_assert_str_eq(cpu->name, "cpu");
    ck_assert_ptr_nonnull(strstr(cpu->description, "1 thread"));
    ck_assert_int_eq(cpu->train_count, 2);
    ck_assert_int_eq(cpu->train[0].batch, 4);
    ck_assert_int_eq(cpu->train[1].batch, 3);
    ck_assert_int_eq(cpu->train[1].steps, 1);
    ck_assert_int_eq(cpu->train[1].images_per_second.count, 2);
    ck_assert(cpu->train[1].images_per_second.median > 0.0);
    ck_assert_int_eq(cpu->have_infer, 1);
    ck_assert_int_eq(cpu->infer.batch, 5);
    ck_assert_int_eq(cpu->infer.steps, 2);
    ck_assert_int_eq(cpu->layer_batch, 2);
    ck_assert_int_eq(cpu->layer_count, 12);
    ck_assert_str_eq(cpu->layers[0].name, "conv1");
    ck_assert_str_eq(cpu->layers[11].name, "dense2");
    ck_assert_int_eq(cpu->layers[0].forward_ms.count, 2);
    /* flatten of the CPU's NHWC net transposes to NCHW and back: timed both ways (in an
     * NCHW net it passes its tensor through, and the timer leaves such layers at 0) */
    ck_assert_str_eq(cpu->layers[8].name, "flatten1");
    ck_assert(cpu->layers[8].forward_ms.max > 0.0);
    ck_assert(cpu->layers[8].backward_ms.max > 0.0);
    ck_assert(cpu->step_ms.median > 0.0);
    ck_assert(cpu->net_peak_bytes >= 3u * 887530u * sizeof(float));
    ck_assert_int_eq(cpu->have_device_memory, 0); /* no device_memory entry on the CPU */
    ck_assert(report->logical_cpus >= 1);
    ck_assert(report->peak_rss_bytes > 0);
    ck_assert(report->seconds > 0.0);

    ck_assert_ptr_nonnull(strstr(log.text, "cpu: training, batch 3, 1 steps x 2 reps\n"));
    ck_assert_ptr_nonnull(strstr(log.text, "cpu: inference, batch 5, 2 steps x 2 reps\n"));
    ck_assert_ptr_nonnull(strstr(log.text, "cpu: per-layer breakdown, batch 2\n"));
    dg_bench_report_free(report);
    remove(csv_path);
    rmdir(tmpdir);
}
END_TEST

/* No file: the seeded-noise store, the same one dg_bench_synthetic_dataset makes; with
 * synthetic set, a file is timed but not trained on. */
START_TEST(runner_falls_back_to_synthetic_images)
{
    make_tmpdir();
    write_small_csv();
    struct dg_bench_settings s;
    dg_bench_settings_init(&s);
    s.device_spec = "cpu";
    s.threads = 1;
    s.reps = 1;
    s.warmup = 0;
    s.batches[0] = 2;
    s.batch_count = 1;
    s.steps = 1;
    s.infer_batch = 0;
    s.layer_batch = 0;
    struct dg_bench_report *report = NULL;
    ck_assert_int_eq(dg_bench_run(&s, &report), DG_OK);
    ck_assert_int_eq(report->synthetic, 1);
    ck_assert_str_eq(report->data_source, "seeded noise");
    ck_assert_uint_eq(report->image_count, DG_BENCH_SYNTHETIC_IMAGES);
    ck_assert_int_eq(report->parse_count, 0);
    ck_assert_int_eq(report->backends[0].train_count, 1);
    ck_assert_int_eq(report->backends[0].have_infer, 0);
    ck_assert_int_eq(report->backends[0].layer_batch, 0);
    dg_bench_report_free(report);

    s.synthetic = 1;
    s.data_path = csv_path;
    s.csv_path = csv_path;
    ck_assert_int_eq(dg_bench_run(&s, &report), DG_OK);
    ck_assert_int_eq(report->synthetic, 1);
    ck_assert_uint_eq(report->image_count, DG_BENCH_SYNTHETIC_IMAGES);
    ck_assert_int_eq(report->parse_count, 2);
    ck_assert_uint_eq(report->parse[0].rows, 20);
    ck_assert_str_eq(report->parse[1].role, "csv");
    dg_bench_report_free(report);

    remove(csv_path);
    rmdir(tmpdir);
}
END_TEST

START_TEST(bench_usage_and_input_errors)
{
    make_tmpdir();
    ck_assert_int_eq(run("bench --help"), 0);
    dg_test_expect_in(out_path, "usage: digits bench");
    ck_assert_int_eq(run("bench --batch 0"), 2);
    dg_test_expect_in(err_path, "--batch");
    ck_assert_int_eq(run("bench --batch 8,x"), 2);
    dg_test_expect_in(err_path, "--batch");
    ck_assert_int_eq(run("bench --reps 0"), 2);
    dg_test_expect_in(err_path, "--reps");
    ck_assert_int_eq(run("bench --device gpu"), 2);
    dg_test_expect_in(err_path, "--device");
    ck_assert_int_eq(run("bench --frobnicate"), 2);
    ck_assert_int_eq(run("bench --net 8C3-P3-10"), 2);
    dg_test_expect_in(err_path, "--net '8C3-P3-10': at character 6 ('3'): expected '2'");
    ck_assert_int_eq(run("bench extra"), 2);
    dg_test_expect_in(err_path, "unexpected argument 'extra'");
    ck_assert_int_eq(run("bench --data %s/missing.csv --device cpu", tmpdir), 2);
    dg_test_expect_in(err_path, "missing.csv");
    char reason[256];
    if (dg_cuda_probe(reason, sizeof reason) != DG_OK) {
        write_small_csv();
        ck_assert_int_eq(run("bench --data %s --device cuda --reps 1", csv_path), 1);
        dg_test_expect_in(err_path, "digits: ");
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("bench");
    TCase *tc = tcase_create("bench");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, json_reader_accepts_and_rejects);
    tcase_add_test(tc, stats_median_min_max);
    tcase_add_test(tc, list_option_parsing);
    tcase_add_test(tc, memory_wrapper_counts_vtable_allocations);
    tcase_add_test(tc, timed_step_matches_the_net_path);
    tcase_add_test(tc, synthetic_store_is_seeded_and_sparse);
    tcase_add_test(tc, written_csv_loads_back_cycling_the_store);
    tcase_add_test(tc, bench_quick_json_has_the_expected_keys);
    tcase_add_test(tc, bench_options_steps_and_scaling);
    tcase_add_test(tc, bench_usage_and_input_errors);
    tcase_add_test(tc, settings_resolve_defaults_and_refuse_bad_values);
    tcase_add_test(tc, runner_reports_what_the_settings_ask);
    tcase_add_test(tc, runner_falls_back_to_synthetic_images);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
