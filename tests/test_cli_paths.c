/* Paths through the CLI a user takes that need their own check: MNIST IDX files with --labels
 * for train, eval and predict (the same model as from the equivalent CSV), --val-split 0 (no
 * validation columns, no learning-rate reduction), --limit's row count, a learning-rate
 * reduction by the plateau rule, and a model file of another format version. Real `digits`
 * runs on small synthetic or sample data, each naming --device cpu: the comparisons are bit for
 * bit (the IDX and CSV models, the eval reports) or follow the CPU's exact trajectory (the plateau
 * rule on 10 held-out rows, eval --held-out against the log), which a CUDA run under the default
 * --device auto on a GPU machine would not reproduce. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"

static char dir[256];
static char sample[1024];

static void setup(void)
{
    dg_test_dir_create(dir, sizeof dir, "paths");
    const char *source = getenv("DIGITS_SOURCE_DIR");
    ck_assert_ptr_nonnull(source);
    snprintf(sample, sizeof sample, "%s/data/sample/train.csv.gz", source);
}

static void teardown(void)
{
    dg_test_dir_remove(dir);
}

/* DIR/name; `digits ARGS` in DIR (stderr into err when not NULL), its exit code */
#define at(name) dg_test_dir_path(dir, name)
#define run(err, ...) dg_test_run_digits(dir, NULL, err, __VA_ARGS__)

static void put_be32(FILE *fp, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    ck_assert_uint_eq(fwrite(b, 1, 4, fp), 4);
}

/* n images of "digit-like" strokes (label k: a bar at row 2 + 2k) with noise, written as an
 * IDX image file, an IDX label file and the equivalent Kaggle CSV. */
static void write_dataset(int n)
{
    FILE *images = fopen(at("images.idx"), "wb"), *labels = fopen(at("labels.idx"), "wb");
    FILE *csv = fopen(at("same.csv"), "w");
    ck_assert(images && labels && csv);
    put_be32(images, 0x00000803);
    put_be32(images, (uint32_t)n);
    put_be32(images, 28);
    put_be32(images, 28);
    put_be32(labels, 0x00000801);
    put_be32(labels, (uint32_t)n);
    fputs("label", csv);
    for (int k = 0; k < 784; k++)
        fprintf(csv, ",pixel%d", k);
    fputc('\n', csv);
    uint64_t state = 12345;
    for (int i = 0; i < n; i++) {
        unsigned char label = (unsigned char)(i % 10), pixels[784];
        for (int k = 0; k < 784; k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            int row = k / 28;
            int value = (int)(state >> 59) * 4;
            if (row == 2 + 2 * label || row == 3 + 2 * label)
                value = 200 + (int)(state >> 58);
            pixels[k] = (unsigned char)value;
        }
        ck_assert_uint_eq(fwrite(pixels, 1, 784, images), 784);
        ck_assert_uint_eq(fwrite(&label, 1, 1, labels), 1);
        fprintf(csv, "%d", label);
        for (int k = 0; k < 784; k++)
            fprintf(csv, ",%d", pixels[k]);
        fputc('\n', csv);
    }
    ck_assert_int_eq(fclose(images), 0);
    ck_assert_int_eq(fclose(labels), 0);
    ck_assert_int_eq(fclose(csv), 0);
}

static char *slurp(const char *name)
{
    return dg_test_slurp(at(name));
}

/* The parameters of a model file (the bytes after the settings text). */
static unsigned char *model_params(const char *name, size_t *size)
{
    FILE *fp = fopen(at(name), "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n);
    ck_assert_uint_eq(fread(data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    uint32_t layers = (uint32_t)data[12] | (uint32_t)data[13] << 8 | (uint32_t)data[14] << 16 |
                      (uint32_t)data[15] << 24;
    size_t off = 16 + 20 * (size_t)layers;
    uint32_t settings = (uint32_t)data[off + 8] | (uint32_t)data[off + 9] << 8 |
                        (uint32_t)data[off + 10] << 16 | (uint32_t)data[off + 11] << 24;
    size_t start = off + 12 + settings;
    *size = (size_t)n - 4 - start;
    unsigned char *params = malloc(*size);
    memcpy(params, data + start, *size);
    free(data);
    return params;
}

START_TEST(idx_with_labels_through_the_cli)
{
    write_dataset(300);
    char err[512];
    ck_assert_int_eq(run(err, "train images.idx --labels labels.idx --epochs 2 --threads 2 "
                              "--device cpu -o idx.dgt --no-checkpoint -q"),
                     0);
    ck_assert_int_eq(run(err, "train same.csv --epochs 2 --threads 2 --device cpu -o csv.dgt "
                              "--no-checkpoint -q"),
                     0);
    size_t na, nb;
    unsigned char *a = model_params("idx.dgt", &na), *b = model_params("csv.dgt", &nb);
    ck_assert_uint_eq(na, 887530 * 4);
    ck_assert(na == nb && memcmp(a, b, na) == 0);
    printf("ok   IDX and CSV of the same images train the same model\n");
    free(a);
    free(b);
    /* eval on the IDX pair and on the CSV: the same report */
    ck_assert_int_eq(run(err, "eval -m idx.dgt images.idx --labels labels.idx --device cpu"), 0);
    char *idx_eval = slurp("stdout");
    ck_assert_int_eq(run(err, "eval -m idx.dgt same.csv --device cpu"), 0);
    char *csv_eval = slurp("stdout");
    ck_assert_ptr_nonnull(strstr(idx_eval, "accuracy"));
    ck_assert_str_eq(idx_eval, csv_eval);
    free(idx_eval);
    free(csv_eval);
    /* predict on the IDX images: 300 rows + header, ImageId from 1 */
    ck_assert_int_eq(run(err, "predict -m idx.dgt images.idx --device cpu -o sub.csv"), 0);
    char *sub = slurp("sub.csv");
    int lines = 0;
    for (char *p = sub; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    ck_assert_int_eq(lines, 301);
    ck_assert(strncmp(sub, "ImageId,Label\n1,", 16) == 0);
    ck_assert_ptr_nonnull(strstr(sub, "\n300,"));
    free(sub);
    /* an IDX image file without --labels cannot train */
    ck_assert_int_eq(run(err, "train images.idx -o x.dgt --no-checkpoint -q"), 2);
    dg_test_expect_in(err, "has no labels");
}
END_TEST

START_TEST(val_split_zero_and_limit)
{
    char err[512];
    ck_assert_int_eq(run(err, "train %s --limit 300 --val-split 0 --epochs 4 --threads 2 "
                              "--device cpu -o v.dgt --log v.csv --no-checkpoint",
                         sample),
                     0);
    dg_test_expect_in(err, "training on 300 images");
    dg_test_expect_in(err, "epoch 4/4: loss");
    char *log = slurp("v.csv");
    /* four epochs, empty validation fields, the learning rate never reduced */
    for (int epoch = 1; epoch <= 4; epoch++) {
        char line[16];
        snprintf(line, sizeof line, "\n%d,", epoch);
        char *p = strstr(log, line);
        ck_assert_ptr_nonnull(p);
        int commas = 0;
        for (p++; *p != '\n'; p++)
            if (*p == ',' && ++commas == 3)
                ck_assert_msg(p[1] == ',', "epoch %d has validation values", epoch);
    }
    ck_assert_ptr_null(strstr(log, "nan"));
    ck_assert_ptr_null(strstr(log, "0.0005"));
    free(log);
    ck_assert_int_eq(run(err, "info --model=v.dgt"), 0);
    char *info = slurp("stdout");
    ck_assert_ptr_nonnull(strstr(info, "rows=300\n"));
    ck_assert_ptr_nonnull(strstr(info, "validation_rows=0\n"));
    ck_assert_ptr_null(strstr(info, "val_accuracy"));
    free(info);
    /* --limit beyond the file: all rows (of a small file: the count is what is checked) */
    write_dataset(120);
    ck_assert_int_eq(run(err, "train same.csv --limit 100000 --epochs 1 --threads 2 --device cpu "
                              "-o all.dgt --no-checkpoint --no-augment -q"),
                     0);
    ck_assert_int_eq(run(err, "info --model=all.dgt"), 0);
    dg_test_expect_in(at("stdout"), "rows=120\n");
}
END_TEST

/* 200 rows, 10 held out: validation accuracy 0.2 at epoch 1, no better for epochs 2-4, so the
 * learning rate halves from epoch 5 on (patience 3, min_delta 1e-4), and the log shows it. The
 * check derives the expected reduction from the logged accuracies by the rule itself. */
START_TEST(learning_rate_reduction_happens)
{
    char err[512];
    ck_assert_int_eq(run(err, "train %s --limit 200 --val-split 0.05 --epochs 8 --threads 2 "
                              "--device cpu -o lr.dgt --log lr.csv --no-checkpoint",
                         sample),
                     0);
    char *log = slurp("lr.csv");
    double val[9], lr[9];
    int epochs = 0;
    char *line = strchr(log, '\n') + 1;
    while (*line && epochs < 8) {
        int epoch;
        double loss, acc, val_loss;
        ck_assert_int_eq(sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf", &epoch, &loss, &acc, &val_loss,
                                &val[epochs], &lr[epochs]),
                         6);
        epochs++;
        line = strchr(line, '\n') + 1;
    }
    ck_assert_int_eq(epochs, 8);
    double best = -INFINITY, expect = 1e-3;
    int wait = 0, reductions = 0;
    for (int e = 0; e < epochs; e++) {
        ck_assert_msg(fabs(lr[e] - expect) < 1e-9, "epoch %d: lr %g, the rule gives %g", e + 1,
                      lr[e], expect);
        if (val[e] > best + 1e-4) {
            best = val[e];
            wait = 0;
        } else if (++wait >= 3) {
            expect = expect * 0.5 > 1e-5 ? expect * 0.5 : 1e-5;
            wait = 0;
            reductions++;
        }
    }
    ck_assert_int_ge(reductions, 1);
    dg_test_expect_in(err, "(learning rate reduced)");
    free(log);
}
END_TEST

START_TEST(model_of_another_format_version)
{
    char err[512];
    ck_assert_int_eq(run(err, "train %s --limit 200 --epochs 1 --threads 2 --device cpu "
                              "-o m.dgt --no-checkpoint -q",
                         sample),
                     0);
    FILE *fp = fopen(at("m.dgt"), "r+b");
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fseek(fp, 8, SEEK_SET), 0);
    ck_assert_int_eq(fputc(3, fp), 3);
    ck_assert_int_eq(fclose(fp), 0);
    const char *commands[3] = {"predict -m m.dgt %s -o s.csv", "eval -m m.dgt %s",
                               "info --model=m.dgt"};
    for (int c = 0; c < 3; c++) {
        char command[2048];
        snprintf(command, sizeof command, commands[c], sample);
        ck_assert_int_eq(run(err, "%s", command), 2);
        dg_test_expect_in(err, "m.dgt: model format version 3, this digits reads versions 1 and 2");
    }
    ck_assert(access(at("s.csv"), F_OK) != 0);
}
END_TEST

/* eval --held-out on the training file scores exactly the rows the run held out: its accuracy
 * is the log's last val_accuracy. */
START_TEST(eval_held_out_is_the_validation_set)
{
    char err[512];
    ck_assert_int_eq(run(err, "train %s --limit 500 --epochs 1 --threads 2 --device cpu "
                              "-o h.dgt --log h.csv --no-checkpoint -q",
                         sample),
                     0);
    char *log = slurp("h.csv");
    double loss, acc, val_loss, val_acc;
    int epoch;
    ck_assert_int_eq(sscanf(strchr(log, '\n') + 1, "%d,%lf,%lf,%lf,%lf", &epoch, &loss, &acc,
                            &val_loss, &val_acc),
                     5);
    free(log);
    ck_assert_int_eq(run(err, "eval -m h.dgt %s --held-out --device cpu", sample), 0);
    char want[64];
    snprintf(want, sizeof want, "images: 50\naccuracy: %.4f", val_acc);
    dg_test_expect_in(at("stdout"), want);
    char *held_out = slurp("stdout");
    /* the default on the training file is the held-out rows too, as report's; it says so */
    ck_assert_int_eq(run(err, "eval -m h.dgt %s --device cpu", sample), 0);
    char *by_default = slurp("stdout");
    ck_assert_str_eq(by_default, held_out);
    ck_assert(strncmp(by_default,
                      "rows: the 50 validation rows held out in training (of its 500 rows: "
                      "val_split 0.1, split seed 42)\nimages: 50\n",
                      109) == 0);
    free(by_default);
    free(held_out);
    /* --all: every row of the file; with --held-out refused */
    ck_assert_int_eq(run(err, "eval -m h.dgt %s --all --device cpu", sample), 0);
    dg_test_expect_in(at("stdout"), "rows: all 5000 rows\nimages: 5000\n");
    ck_assert_int_eq(run(err, "eval -m h.dgt %s --all --held-out --device cpu", sample), 2);
    dg_test_expect_in(err, "digits: eval: --all scores every row, --held-out only the held-out "
                           "ones: give one of them\n");
}
END_TEST

/* --val-split values with more digits than %g keeps: the model file must say the very float
 * training split with, or --held-out rebuilds another split. 1000 rows at 0.1004999 hold out
 * 100 (1000 x 0.1004999 rounds down); read back as "0.1005" it would be 101. */
START_TEST(held_out_rows_survive_awkward_val_splits)
{
    static const struct {
        const char *split;
        int held;
    } cases[] = {{"0.1004999", 100}, {"0.0504999", 50}};
    char err[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ck_assert_int_eq(run(err, "train %s --limit 1000 --epochs 1 --threads 2 --device cpu "
                                  "--val-split %s --no-augment -o v.dgt --log v.csv "
                                  "--no-checkpoint -q",
                             sample, cases[c].split),
                         0);
        char *log = slurp("v.csv");
        double loss, acc, val_loss, val_acc;
        int epoch;
        ck_assert_int_eq(sscanf(strchr(log, '\n') + 1, "%d,%lf,%lf,%lf,%lf", &epoch, &loss,
                                &acc, &val_loss, &val_acc),
                         5);
        free(log);
        ck_assert_int_eq(run(err, "info --model=v.dgt"), 0);
        char want[96];
        snprintf(want, sizeof want, "val_split=%s\n", cases[c].split);
        dg_test_expect_in(at("stdout"), want);
        snprintf(want, sizeof want, "validation_rows=%d\n", cases[c].held);
        dg_test_expect_in(at("stdout"), want);
        ck_assert_int_eq(run(err, "eval -m v.dgt %s --held-out --device cpu", sample), 0);
        snprintf(want, sizeof want, "images: %d\naccuracy: %.4f", cases[c].held, val_acc);
        dg_test_expect_in(at("stdout"), want);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cli paths");
    TCase *tc = tcase_create("paths");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, idx_with_labels_through_the_cli);
    tcase_add_test(tc, val_split_zero_and_limit);
    tcase_add_test(tc, learning_rate_reduction_happens);
    tcase_add_test(tc, model_of_another_format_version);
    tcase_add_test(tc, eval_held_out_is_the_validation_set);
    tcase_add_test(tc, held_out_rows_survive_awkward_val_splits);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
