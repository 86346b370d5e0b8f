/* The digits command line end to end: help and version, train -> predict -> eval on the
 * bundled sample, the submission format, exit codes of usage and input errors, that a
 * failing command leaves no partial output, and that no output may be an input or another
 * output. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cli_util.h"
#include "digits/train.h"
#include "cpu/cpu.h"
#include "digits/backend.h"

static char tmpdir[256];
static char out_path[512], err_path[512];

static const char *source_dir(void)
{
    const char *dir = getenv("DIGITS_SOURCE_DIR");
    return dir ? dir : ".";
}

/* Runs `digits ARGS` in tmpdir with stdout and stderr captured; returns the exit code. */
static int run(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int code = dg_test_run_digits_v(tmpdir, out_path, err_path, fmt, ap);
    va_end(ap);
    return code;
}

static int exists(const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return access(path, F_OK) == 0;
}

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/digits-test-cli-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

START_TEST(help_version_and_unknown_command)
{
    ck_assert_int_eq(run("--help"), 0);
    dg_test_expect_in(out_path, "usage: digits <command>");
    ck_assert_int_eq(run("--version"), 0);
    dg_test_expect_in(out_path, "digits " DIGITS_VERSION);
    ck_assert_int_eq(run("frobnicate"), 2);
    dg_test_expect_in(err_path, "unknown command 'frobnicate'");
    ck_assert_int_eq(run(""), 2);
    const char *commands[] = {"train", "predict", "eval", "check-data", "info"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        ck_assert_int_eq(run("%s --help", commands[i]), 0);
        dg_test_expect_in(out_path, "usage: digits");
    }
}
END_TEST

/* Mistakes get a message that says what to do, in one form ("digits: CMD: what"): the command
 * or option most likely meant, an ambiguous prefix's candidates, a missing or unwanted value;
 * `digits help CMD` is CMD's help, and every command's help has examples. */
START_TEST(did_you_mean_and_help)
{
    static const struct {
        const char *args, *message;
    } cases[] = {
        {"trian", "digits: unknown command 'trian' (did you mean train?)\n"},
        {"evl -m m.dgt x.csv", "digits: unknown command 'evl' (did you mean eval?)\n"},
        {"train x.csv --epocs 3",
         "digits: train: unknown option '--epocs' (did you mean --epochs?)\n"
         "(see `digits train --help`)\n"},
        {"predict -m m.dgt x.csv --porbs p.csv",
         "digits: predict: unknown option '--porbs' (did you mean --probs?)\n"},
        {"compare --stesp 3", "digits: compare: unknown option '--stesp' (did you mean --steps?)\n"},
        {"report -m m.dgt x.csv --tpo 5",
         "digits: report: unknown option '--tpo' (did you mean --top?)\n"},
        {"train x.csv --frobnicate", "digits: train: unknown option '--frobnicate'\n"},
        {"train x.csv --de cuda",
         "digits: train: '--de' is ambiguous: --device or --deterministic or --devices\n"},
        {"predict x.csv -m", "digits: predict: -m (--model) needs a value\n"},
        {"eval x.csv --model", "digits: eval: --model needs a value\n"},
        {"train x.csv --no-augment=1",
         "digits: train: --no-augment takes no value (got '--no-augment=1')\n"},
        {"check-data -x x.csv", "digits: check-data: unknown option '-x'\n"},
        /* a letter that is no short option of the command, though a long option's internal
         * code: unknown, not "needs a value" */
        {"train x.csv -e 1", "digits: train: unknown option '-e'\n"},
        {"eval -a x.csv", "digits: eval: unknown option '-a'\n"},
        {"train x.csv -q1", "digits: train: unknown option '-1'\n"},
        {"predict -m m.dgt x.csv -n 3", "digits: predict: unknown option '-n'\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_msg(run("%s", cases[i].args) == 2, "%s: not exit 2", cases[i].args);
        dg_test_expect_in(err_path, cases[i].message);
    }
    const char *commands[] = {"train",   "predict", "eval",   "report", "check-data",
                              "compare", "bench",   "export", "import", "info"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        ck_assert_int_eq(run("%s --help", commands[i]), 0);
        char *help = dg_test_slurp(out_path);
        ck_assert_int_eq(run("help %s", commands[i]), 0);
        char *via_help = dg_test_slurp(out_path);
        ck_assert_str_eq(via_help, help);
        char usage[64], example[64];
        snprintf(usage, sizeof usage, "usage: digits %s", commands[i]);
        snprintf(example, sizeof example, "\nexamples:\n  digits %s", commands[i]);
        ck_assert_msg(strncmp(help, usage, strlen(usage)) == 0, "%s --help: %.40s", commands[i],
                      help);
        const char *examples = strstr(help, example);
        ck_assert_msg(examples, "%s --help has no examples", commands[i]);
        int count = 0;
        for (const char *p = examples; (p = strstr(p + 1, "\n  digits ")) != NULL;)
            count++;
        ck_assert_msg(count >= 2, "%s --help: %d examples", commands[i], count);
        free(help);
        free(via_help);
    }
    ck_assert_int_eq(run("help frobnicate"), 2);
    dg_test_expect_in(err_path, "digits: unknown command 'frobnicate'");
}
END_TEST

/* -m given another kind of file: the message names what the file is and what takes it. */
START_TEST(model_option_names_other_files)
{
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --limit 100 --epochs 1 --no-augment "
                         "--device cpu -o m.dgt -q",
                         source_dir()),
                     0);
    ck_assert_int_eq(run("export -m m.dgt -o m.safetensors -q"), 0);
    ck_assert_int_eq(run("export -m m.dgt -o m.onnx -q"), 0);
    static const struct {
        const char *name, *bytes;
        size_t size;
    } raw[] = {
        {"keras.h5", "\x89HDF\r\n\x1a\n\0\0\0\0", 12},
        {"torch.pt", "PK\x03\x04\x14\0\0\0\0\0", 10},
        {"old.pt", "\x80\x02\x8a\x0a\x6c\xfc", 6},
        {"data.gz", "\x1f\x8b\x08\0\0\0\0\0", 8},
        {"notes.txt", "hello, world\n", 13},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", tmpdir, raw[i].name);
        FILE *fp = fopen(path, "wb");
        ck_assert_ptr_nonnull(fp);
        ck_assert_uint_eq(fwrite(raw[i].bytes, 1, raw[i].size, fp), raw[i].size);
        fclose(fp);
    }
    static const struct {
        const char *file, *says;
    } cases[] = {
        {"m.dgt.ckpt", "m.dgt.ckpt: not a digits model file (no DGTMODEL magic): it is a training "
                       "checkpoint; it continues training with `digits train TRAIN --resume "
                       "m.dgt.ckpt`, and the model file is what that run writes\n"},
        {"m.safetensors", "m.safetensors: not a digits model file (no DGTMODEL magic): it is a "
                          "safetensors file; `digits import m.safetensors -o model.dgt` makes a "
                          "model of it\n"},
        {"m.onnx", "it looks like an ONNX model, which digits writes (`digits export`) but does "
                   "not read back; -m takes the .dgt model file it was exported from\n"},
        {"keras.h5", "it is an HDF5 (Keras .h5) file, which digits does not read"},
        {"torch.pt", "it is a ZIP archive (a PyTorch torch.save file is one)"},
        {"old.pt", "it is a Python pickle (an old PyTorch .pt file?)"},
        {"data.gz", "it is gzip-compressed (data? -m takes a model file, the data goes after "
                    "the options)\n"},
        {"notes.txt", "notes.txt: not a digits model file (no DGTMODEL magic): -m takes a model "
                      "file written by `digits train` (or `digits import`)\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(run("predict -m %s %s/data/sample/test.csv.gz --device cpu -o s.csv",
                             cases[i].file, source_dir()),
                         2);
        dg_test_expect_in(err_path, cases[i].says);
        ck_assert(!exists("s.csv"));
        ck_assert_int_eq(run("eval -m %s %s/data/sample/train.csv.gz --device cpu",
                             cases[i].file, source_dir()),
                         2);
        dg_test_expect_in(err_path, cases[i].says);
    }
}
END_TEST

/* The options several commands share, each everywhere it makes sense, with one meaning: every
 * command's help lists them and its parser takes them. */
START_TEST(shared_options_everywhere)
{
    static const struct {
        const char *option, *value;
        const char *commands[8];
    } shared[] = {
        {"-m", "m.dgt", {"predict", "eval", "report", "export", "compare", "info"}},
        {"--model", "m.dgt", {"predict", "eval", "report", "export", "compare", "info"}},
        {"-o", "out", {"train", "predict", "eval", "report", "export", "import"}},
        {"-q", NULL, {"train", "predict", "eval", "report", "export", "import", "bench"}},
        {"-v", NULL, {"train", "predict", "eval", "report"}},
        {"--json", NULL, {"predict", "eval", "check-data", "bench"}},
        {"--limit", "5", {"train", "predict", "eval", "report"}},
        {"--device", "cpu", {"train", "predict", "eval", "report", "compare", "bench"}},
        {"--threads", "1",
         {"train", "predict", "eval", "report", "check-data", "compare", "bench"}},
    };
    for (size_t o = 0; o < sizeof shared / sizeof shared[0]; o++)
        for (int c = 0; c < 8 && shared[o].commands[c]; c++) {
            const char *command = shared[o].commands[c];
            ck_assert_int_eq(run("%s --help", command), 0);
            char *help = dg_test_slurp(out_path);
            char listed[64];
            snprintf(listed, sizeof listed, "%s%s", shared[o].option,
                     shared[o].option[1] == '-' ? " " : ",");
            int found = strstr(help, listed) != NULL;
            if (!found && shared[o].value == NULL) { /* a flag: "  -q, --quiet" or "--json\n" */
                snprintf(listed, sizeof listed, "%s\n", shared[o].option);
                found = strstr(help, listed) || strstr(help, "--json  ") || strstr(help, "--json ");
            }
            ck_assert_msg(found, "%s --help does not list %s", command, shared[o].option);
            free(help);
            ck_assert_msg(run("%s %s %s --help", command, shared[o].option,
                              shared[o].value ? shared[o].value : "") == 0,
                          "%s does not take %s", command, shared[o].option);
        }
}
END_TEST

/* eval -o FILE holds what eval prints, --json the same numbers as one object, --limit the first
 * rows; predict --limit, -q (silent) and its note on a labelled file. */
START_TEST(eval_and_predict_outputs)
{
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --limit 300 --epochs 1 --no-augment "
                         "--device cpu --no-checkpoint -o m.dgt -q",
                         source_dir()),
                     0);
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz --all --limit 1000 --device "
                         "cpu",
                         source_dir()),
                     0);
    char *printed = dg_test_slurp(out_path);
    ck_assert_ptr_nonnull(strstr(printed, "rows: all 1000 rows\nimages: 1000\n"));
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz --all --limit 1000 --device "
                         "cpu -o e.txt",
                         source_dir()),
                     0);
    dg_test_expect_in(err_path, "digits: wrote e.txt (the results)\n");
    char path[600];
    snprintf(path, sizeof path, "%s/e.txt", tmpdir);
    char *written = dg_test_slurp(path);
    ck_assert_str_eq(written, printed);
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz --all --limit 1000 --device "
                         "cpu --json",
                         source_dir()),
                     0);
    char *json = dg_test_slurp(out_path);
    const char *acc = strstr(printed, "accuracy: ");
    ck_assert_ptr_nonnull(acc);
    char want[128];
    snprintf(want, sizeof want, "{\"rows\": \"all 1000 rows\", \"images\": 1000, \"correct\": %d, "
             "\"accuracy\": %.4s",
             atoi(strchr(acc, '(') + 1), acc + 10);
    ck_assert_msg(strncmp(json, want, strlen(want)) == 0, "%s\nnot\n%s", json, want);
    ck_assert_ptr_nonnull(strstr(json, "\"confusion\": [["));
    free(printed);
    free(written);
    free(json);
    /* -o may not be the data */
    ck_assert_int_eq(run("eval -m m.dgt %s/e.txt --all -o %s/e.txt", tmpdir, tmpdir), 2);
    dg_test_expect_in(err_path, "digits: eval: ");
    /* predict: --limit rows, the note on a labelled file, -q silent */
    ck_assert_int_eq(run("predict -m m.dgt %s/data/sample/train.csv.gz --limit 10 --device cpu "
                         "-o s.csv",
                         source_dir()),
                     0);
    snprintf(path, sizeof path, "%s/s.csv", tmpdir);
    char *submission = dg_test_slurp(path);
    int lines = 0;
    for (char *p = submission; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    ck_assert_int_eq(lines, 11);
    free(submission);
    dg_test_expect_in(err_path, "digits: wrote 10 predictions to s.csv\n");
    dg_test_expect_in(err_path, "is labelled (the train layout), so these are predictions of its "
                                "10 rows, not a Kaggle submission of test.csv; `digits eval` "
                                "scores a labelled file\n");
    ck_assert_int_eq(run("predict -m m.dgt %s/data/sample/train.csv.gz --limit 10 --device cpu "
                         "-o s.csv -q",
                         source_dir()),
                     0);
    char *err = dg_test_slurp(err_path);
    ck_assert_str_eq(err, "");
    free(err);
    ck_assert_int_eq(run("predict -m m.dgt %s/data/sample/test.csv.gz --limit 10 --device cpu "
                         "-o s.csv",
                         source_dir()),
                     0);
    err = dg_test_slurp(err_path);
    ck_assert_ptr_null(strstr(err, "is labelled"));
    free(err);
}
END_TEST

static void write_text(const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(text, fp);
    fclose(fp);
}

/* eval --answers: a submission scored against ImageId,Label answers, or a model on TEST against
 * them; both agree with eval of the labelled rows themselves. Bad answer files are named with
 * their line and column. */
START_TEST(eval_against_answers)
{
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --limit 300 --epochs 1 --no-augment "
                         "--device cpu --no-checkpoint -o m.dgt -q",
                         source_dir()),
                     0);
    /* the answers: the first 200 labels of the sample */
    char path[600];
    snprintf(path, sizeof path, "%s/data/sample/train.csv.gz", source_dir());
    gzFile gz = gzopen(path, "rb");
    ck_assert_ptr_nonnull(gz);
    static char line[8192];
    ck_assert_ptr_nonnull(gzgets(gz, line, sizeof line)); /* the header */
    char *answers = malloc(200 * 8 + 32);
    ck_assert_ptr_nonnull(answers);
    size_t used = (size_t)sprintf(answers, "ImageId,Label\n");
    for (int i = 0; i < 200; i++) {
        ck_assert_ptr_nonnull(gzgets(gz, line, sizeof line));
        used += (size_t)sprintf(answers + used, "%d,%c\n", i + 1, line[0]);
    }
    gzclose(gz);
    write_text("answers.csv", answers);
    free(answers);
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz --all --limit 200 --device cpu",
                         source_dir()),
                     0);
    char *direct = dg_test_slurp(out_path);
    const char *body = strstr(direct, "images: 200\n");
    ck_assert_ptr_nonnull(body);
    /* the model on the rows, against the answers */
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz --limit 200 --answers "
                         "answers.csv --device cpu",
                         source_dir()),
                     0);
    char *model = dg_test_slurp(out_path);
    ck_assert_ptr_nonnull(strstr(model, "rows: all 200 rows against answers.csv\n"));
    ck_assert_str_eq(strstr(model, "images: 200\n"), body);
    /* its submission, against the answers */
    ck_assert_int_eq(run("predict -m m.dgt %s/data/sample/train.csv.gz --limit 200 --device cpu "
                         "-o sub.csv -q",
                         source_dir()),
                     0);
    ck_assert_int_eq(run("eval --answers answers.csv sub.csv"), 0);
    char *submission = dg_test_slurp(out_path);
    ck_assert_ptr_nonnull(
        strstr(submission, "rows: the 200 rows of sub.csv against answers.csv\n"));
    ck_assert_str_eq(strstr(submission, "images: 200\n"), body);
    free(direct);
    free(model);
    free(submission);
    /* bad answer or submission files */
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"ImageId,Lable\n1,2\n", "bad.csv:1:1: expected the header 'ImageId,Label'"},
        {"ImageId,Label\n1,2\n1,3\n", "bad.csv:3:1: ImageId 1 appears twice"},
        {"ImageId,Label\n1,12\n", "bad.csv:2:3: expected a Label 0..9"},
        {"ImageId,Label\n1;2\n", "bad.csv:2:2: expected ',' after the ImageId"},
        {"ImageId,Label\n0,2\n", "bad.csv:2:1: expected an ImageId (1, 2, ...)"},
        {"ImageId,Label\n1,2\n3,4\n4,4\n5,5\n", "bad.csv: ImageId 2 is missing"},
        {"ImageId,Label\n", "bad.csv: no rows after the header"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text("bad.csv", bad[i].text);
        ck_assert_int_eq(run("eval --answers answers.csv bad.csv"), 2);
        dg_test_expect_in(err_path, bad[i].says);
        ck_assert_int_eq(run("eval --answers bad.csv sub.csv"), 2);
        dg_test_expect_in(err_path, bad[i].says);
    }
    /* counts that differ; --held-out does not go with --answers */
    write_text("short.csv", "ImageId,Label\n1,2\n2,3\n");
    ck_assert_int_eq(run("eval --answers answers.csv short.csv"), 2);
    dg_test_expect_in(err_path, "digits: short.csv: 2 rows, the answers (answers.csv) have 200\n");
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz --limit 300 --answers "
                         "answers.csv --device cpu",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "answers.csv: 200 answers, ");
    ck_assert_int_eq(run("eval -m m.dgt x.csv --answers answers.csv --held-out"), 2);
    dg_test_expect_in(err_path, "--answers scores every row of TEST: --held-out does not apply");
    ck_assert_int_eq(run("eval --answers answers.csv"), 2);
    dg_test_expect_in(err_path, "--answers without -m needs the SUBMISSION file to score");
}
END_TEST

static void put16(FILE *fp, unsigned v)
{
    fputc((int)(v & 0xff), fp);
    fputc((int)(v >> 8 & 0xff), fp);
}

static void put32(FILE *fp, uint32_t v)
{
    put16(fp, v & 0xffff);
    put16(fp, v >> 16);
}

/* A ZIP archive of stored entries (as Kaggle's download is, but not compressed). */
static void write_zip(const char *name, const char *const *entries, int count)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    long offsets[8];
    for (int e = 0; e < count; e++) {
        offsets[e] = ftell(fp);
        put32(fp, 0x04034b50u);
        put16(fp, 20), put16(fp, 0), put16(fp, 0), put16(fp, 0), put16(fp, 0);
        put32(fp, 0), put32(fp, 2), put32(fp, 2);
        put16(fp, (unsigned)strlen(entries[e])), put16(fp, 0);
        fputs(entries[e], fp);
        fputs("1\n", fp);
    }
    long directory = ftell(fp);
    for (int e = 0; e < count; e++) {
        put32(fp, 0x02014b50u);
        put16(fp, 20), put16(fp, 20), put16(fp, 0), put16(fp, 0), put16(fp, 0), put16(fp, 0);
        put32(fp, 0), put32(fp, 2), put32(fp, 2);
        put16(fp, (unsigned)strlen(entries[e])), put16(fp, 0), put16(fp, 0), put16(fp, 0);
        put16(fp, 0), put32(fp, 0), put32(fp, (uint32_t)offsets[e]);
        fputs(entries[e], fp);
    }
    long end = ftell(fp);
    put32(fp, 0x06054b50u);
    put16(fp, 0), put16(fp, 0), put16(fp, (unsigned)count), put16(fp, (unsigned)count);
    put32(fp, (uint32_t)(end - directory)), put32(fp, (uint32_t)directory), put16(fp, 0);
    fclose(fp);
}

/* Kaggle's download given as data: named a ZIP archive with what it holds, and to unzip it,
 * by every command that reads data (it was "byte 0x03: binary data"). */
START_TEST(a_zip_archive_is_named)
{
    const char *kaggle[] = {"sample_submission.csv", "test.csv", "train.csv"};
    write_zip("digit-recognizer.zip", kaggle, 3);
    const char *want = "digits: digit-recognizer.zip: a ZIP archive holding sample_submission.csv, "
                       "test.csv, train.csv, not a CSV or IDX file; unzip it first (unzip "
                       "digit-recognizer.zip) and give the file inside: train.csv to train, eval "
                       "or report, test.csv to predict\n";
    ck_assert_int_eq(run("train digit-recognizer.zip --device cpu -o m.dgt"), 2);
    dg_test_expect_in(err_path, want);
    ck_assert(!exists("m.dgt"));
    ck_assert_int_eq(run("check-data digit-recognizer.zip"), 2);
    dg_test_expect_in(err_path, want);
    /* a cut archive: its directory unreadable, still named */
    char path[600];
    snprintf(path, sizeof path, "%s/digit-recognizer.zip", tmpdir);
    ck_assert_int_eq(truncate(path, 60), 0);
    ck_assert_int_eq(run("check-data digit-recognizer.zip"), 2);
    dg_test_expect_in(err_path, "digit-recognizer.zip: a ZIP archive (its directory could not be "
                                "read: truncated?), not a CSV or IDX file; unzip it");
}
END_TEST

START_TEST(info_prints_the_model_table)
{
    ck_assert_int_eq(run("info --model"), 0);
    dg_test_expect_in(out_path, "total parameters: 887530");
    dg_test_expect_in(out_path, "conv2       (32, 28, 28)          25632");
    dg_test_expect_in(out_path, "dense1      (256)                803072");
    /* a convolution's 1x1 output keeps its three dimensions; flat from flatten on */
    ck_assert_int_eq(run("info --net 8C3S2-8C3S2-8C3S2-8C3S2-8C3S2-8C3S2-F-10"), 0);
    dg_test_expect_in(out_path, "conv5       (8, 1, 1)");
    dg_test_expect_in(out_path, "conv6       (8, 1, 1)");
    dg_test_expect_in(out_path, "flatten1    (8)");
    ck_assert_int_eq(run("info"), 0);
    dg_test_expect_in(out_path, "BLAS: OpenBLAS");
    dg_test_expect_in(out_path, "CUDA");
}
END_TEST

START_TEST(train_predict_eval_on_the_sample)
{
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --limit 600 --epochs 1 --device cpu "
                         "--log hist.csv -o m.dgt",
                         source_dir()),
                     0);
    dg_test_expect_in(err_path, "epoch 1/1: loss");
    dg_test_expect_in(err_path, "wrote m.dgt");
    ck_assert(exists("m.dgt"));
    char path[600];
    snprintf(path, sizeof path, "%s/hist.csv", tmpdir);
    dg_test_expect_in(path, "epoch,loss,accuracy,val_loss,val_accuracy,lr,images_per_second,seconds\n1,");

    ck_assert_int_eq(run("predict -m m.dgt %s/data/sample/test.csv.gz -o sub.csv --probs p.csv "
                         "--device cpu",
                         source_dir()),
                     0);
    snprintf(path, sizeof path, "%s/sub.csv", tmpdir);
    FILE *fp = fopen(path, "r");
    ck_assert_ptr_nonnull(fp);
    char line[256];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, fp));
    ck_assert_str_eq(line, "ImageId,Label\n");
    int rows = 0, id, label;
    static int labels[1000];
    while (fgets(line, sizeof line, fp)) {
        ck_assert_int_eq(sscanf(line, "%d,%d", &id, &label), 2);
        ck_assert_int_lt(rows, 1000);
        ck_assert_int_eq(id, ++rows);
        labels[rows - 1] = label;
    }
    fclose(fp);
    ck_assert_int_eq(rows, 1000);
    snprintf(path, sizeof path, "%s/p.csv", tmpdir);
    dg_test_expect_in(path, "ImageId,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9\n1,");
    /* every submitted label is the first argmax of its probabilities, which sum to 1 */
    fp = fopen(path, "r");
    ck_assert_ptr_nonnull(fp);
    ck_assert_ptr_nonnull(fgets(line, sizeof line, fp));
    int seen[10] = {0};
    for (int r = 0; r < 1000; r++) {
        double p[10], sum = 0.0;
        ck_assert_ptr_nonnull(fgets(line, sizeof line, fp));
        ck_assert_int_eq(sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &id, &p[0],
                                &p[1], &p[2], &p[3], &p[4], &p[5], &p[6], &p[7], &p[8], &p[9]),
                         11);
        ck_assert_int_eq(id, r + 1);
        int best = 0;
        for (int k = 0; k < 10; k++) {
            sum += p[k];
            if (p[k] > p[best])
                best = k;
        }
        ck_assert_msg(fabs(sum - 1.0) < 1e-4, "row %d: probabilities sum to %g", r + 1, sum);
        ck_assert_msg(labels[r] == best, "row %d: label %d, argmax %d", r + 1, labels[r], best);
        seen[best]++;
    }
    fclose(fp);
    int classes = 0;
    for (int k = 0; k < 10; k++)
        classes += seen[k] > 0;
    /* not a constant prediction (one epoch on 600 rows: 4 to 6 classes, by ISA rounding) */
    ck_assert_int_ge(classes, 3);

    /* to standard output by default; a labelled file is accepted (gzip'd: the sample's first
     * LABELLED rows) */
    enum { LABELLED = 1000 };
    char command[1024];
    snprintf(command, sizeof command,
             "gzip -dc '%s/data/sample/train.csv.gz' | head -n %d | gzip > '%s/head.csv.gz'",
             source_dir(), LABELLED + 1, tmpdir);
    ck_assert_int_eq(system(command), 0);
    ck_assert_int_eq(run("predict -m m.dgt head.csv.gz --device cpu"), 0);
    dg_test_expect_in(out_path, "ImageId,Label\n1,");
    dg_test_expect_in(out_path, "\n1000,");

    /* eval's accuracy is the fraction of predict's labels that equal the true labels */
    int correct = 0;
    {
        char *submission = dg_test_slurp(out_path);
        snprintf(command, sizeof command,
                 "gzip -dc '%s/head.csv.gz' | tail -n +2 | cut -d, -f1 > '%s/truth'", tmpdir,
                 tmpdir);
        ck_assert_int_eq(system(command), 0);
        snprintf(path, sizeof path, "%s/truth", tmpdir);
        FILE *truth = fopen(path, "r");
        ck_assert_ptr_nonnull(truth);
        char *p = strchr(submission, '\n') + 1;
        for (int r = 0; r < LABELLED; r++) {
            int want, got_id, got;
            ck_assert_int_eq(fscanf(truth, "%d", &want), 1);
            ck_assert_int_eq(sscanf(p, "%d,%d", &got_id, &got), 2);
            correct += got == want;
            p = strchr(p, '\n') + 1;
        }
        fclose(truth);
        free(submission);
    }
    ck_assert_int_eq(run("eval -m m.dgt head.csv.gz --all --device cpu"), 0);
    char want_accuracy[64];
    snprintf(want_accuracy, sizeof want_accuracy, "images: %d\naccuracy: %.4f", LABELLED,
             correct / (double)LABELLED);
    printf("predict agrees with the labels on %d of %d rows\n", correct, LABELLED);
    dg_test_expect_in(out_path, want_accuracy);
    ck_assert_int_gt(correct, 200); /* well above chance (100) after one epoch on 600 rows */
    dg_test_expect_in(out_path, "class  precision  recall  support");
    dg_test_expect_in(out_path, "confusion matrix (rows: true label, columns: predicted)");
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/test.csv.gz --device cpu", source_dir()),
                     2);
    dg_test_expect_in(err_path, "has no labels");

    ck_assert_int_eq(run("info --model=m.dgt"), 0);
    dg_test_expect_in(out_path, "epochs=1");
    dg_test_expect_in(out_path, "total parameters: 887530");
    /* -m FILE and --model FILE, as every other command takes a model */
    char *with_equals = dg_test_slurp(out_path);
    ck_assert_int_eq(run("info --model m.dgt"), 0);
    char *spaced = dg_test_slurp(out_path);
    ck_assert_str_eq(spaced, with_equals);
    ck_assert_int_eq(run("info -m m.dgt"), 0);
    char *short_option = dg_test_slurp(out_path);
    ck_assert_str_eq(short_option, with_equals);
    free(with_equals);
    free(spaced);
    free(short_option);
    ck_assert_int_eq(run("info -m m.dgt extra"), 2);
    dg_test_expect_in(err_path, "digits: info: unexpected argument 'extra'");
    /* compare takes -m as well */
    ck_assert_int_eq(run("compare -m m.dgt --device cpu --candidate-threads 1 --threads 1"), 0);
}
END_TEST

START_TEST(usage_errors_exit_2)
{
    const char *sample = "data/sample/train.csv.gz";
    const struct {
        const char *args;
        const char *message;
    } cases[] = {
        {"train", "missing the TRAIN file"},
        {"train %s/%s --epochs 0", "--epochs expects an integer in 1..100000, got '0'"},
        {"train %s/%s --lr abc", "--lr expects a number"},
        {"train %s/%s --val-split 1.5", "--val-split expects a number"},
        {"train %s/%s --batch 12x", "--batch expects an integer"},
        {"train %s/%s --seed -3", "--seed expects a non-negative integer"},
        {"train %s/%s --device tpu", "--device expects auto, cpu, cuda or cuda:N, got 'tpu'"},
        {"train %s/%s --device cuda:x", "--device: bad CUDA device 'cuda:x' (cuda:N)"},
        {"bench --synthetic --device cuda:x",
         "--device expects all, auto, cpu, cuda or cuda:N, got 'cuda:x'"},
        {"train %s/%s --math fp16", "--math expects fp32, tf32 or bf16"},
        {"predict -m %s/%s --math bf32", "--math expects fp32, tf32 or bf16"},
        {"train %s/%s --rotate 200", "--rotate expects a number in [0, 180], got '200'"},
        {"train %s/%s --zoom 1", "--zoom expects a number in [0, 0.9], got '1'"},
        {"train %s/%s --shift -0.1", "--shift expects a number in [0, 0.5], got '-0.1'"},
        {"train %s/%s --schedule expo", "--schedule expects plateau, exp:GAMMA or "
                                        "onecycle:MAX_LR, got 'expo' (did you mean exp?)"},
        {"train %s/%s --ema 1", "--ema expects a number in [0.5, 0.999999], got '1'"},
        {"train %s/%s --ema x", "--ema expects a number in [0.5, 0.999999], got 'x'"},
        {"train %s/%s --schedule onecycle", "--schedule expects plateau, exp:GAMMA or "
                                            "onecycle:MAX_LR, got 'onecycle'"},
        {"train %s/%s --schedule onecycle:0", "--schedule onecycle:MAX_LR expects a number in "
                                              "[1e-12, 1e+06], got '0'"},
        {"train %s/%s --schedule onecycle:0.01 --lr 0.1", "--lr and --schedule onecycle:MAX_LR "
                                                          "both set the learning rate"},
        {"train %s/%s --schedule exp:0", "--schedule exp:GAMMA expects a number in"},
        {"train %s/%s --label-smoothing 1", "--label-smoothing expects a number in [0, 0.999], "
                                            "got '1'"},
        {"train %s/%s --optimizer adma", "digits: train: --optimizer expects rmsprop, adam or "
                                         "sgd, got 'adma' (did you mean adam?)"},
        {"train %s/%s --optimizer lbfgs", "--optimizer expects rmsprop, adam or sgd, got 'lbfgs'"},
        {"train %s/%s --optimizer sgd --momentum 1", "--momentum expects a number in [0, 1), got "
                                                     "'1'"},
        {"train %s/%s --optimizer sgd --momentum 0.99999999", "--momentum expects a number in "
                                                              "[0, 1), got '0.99999999'"},
        {"train %s/%s --optimizer sgd --momentum -0.1", "--momentum expects a number in [0, 1), "
                                                        "got '-0.1'"},
        {"train %s/%s --momentum 0.5", "--momentum is for --optimizer sgd (the optimizer is "
                                       "rmsprop)"},
        {"train %s/%s --optimizer adam --nesterov", "--nesterov is for --optimizer sgd (the "
                                                    "optimizer is adam)"},
        {"train %s/%s --optimizer sgd --beta1 0.8", "--beta1 is for --optimizer adam (the "
                                                    "optimizer is sgd)"},
        {"train %s/%s --optimizer adam --beta2 1", "--beta2 expects a number in [0, 1), got '1'"},
        {"train %s/%s --optimizer adam --adam-eps 0", "--adam-eps expects a number in [1e-12, 1], "
                                                      "got '0'"},
        {"train %s/%s --net 32C4-10", "digits: train: --net '32C4-10': at character 4 ('4'): "
                                      "expected an odd kernel size"},
        {"train %s/%s --net 32C5-P2-P2-P2-P2-P2-10",
         "--net '32C5-P2-P2-P2-P2-P2-10': the layer at character 18: pool5: its input is 1x1"},
        {"info --net 32C5-P2", "digits: info: --net '32C5-P2': at character 6 ('P'): expected the "
                               "last layer to be the classifier"},
        {"info --net 10 --model %s/%s", "--net and --model FILE: one network at a time"},
        {"train %s/%s --zoom 0.2 --no-augment",
         "--zoom sets the augmentation that --no-augment turns off"},
        {"train %s/%s --bogus", "see `digits train --help`"},
        {"train %s/%s --split-seed 3 --val-split 0", "--split-seed chooses the validation "
                                                      "rows, and --val-split 0 holds none out"},
        {"train %s/%s -q -v", "-q (--quiet) asks for fewer notes and -v (--verbose) for more"},
        {"predict -m m.dgt %s/%s -q -v", "digits: predict: -q (--quiet) asks for fewer notes"},
        {"predict %s/%s", "missing -m MODEL"},
        {"eval %s/%s", "missing -m MODEL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(run(cases[i].args, source_dir(), sample), 2);
        dg_test_expect_in(err_path, cases[i].message);
    }
    ck_assert(!exists("model.dgt"));
}
END_TEST

START_TEST(bad_inputs_leave_no_output)
{
    /* a test-layout file cannot be trained on */
    ck_assert_int_eq(run("train %s/data/sample/test.csv.gz --device cpu -o m.dgt", source_dir()),
                     2);
    dg_test_expect_in(err_path, "has no labels");
    ck_assert(!exists("m.dgt"));
    /* a corrupted model: exit 2, and no submission appears */
    char path[600];
    snprintf(path, sizeof path, "%s/bad.dgt", tmpdir);
    FILE *fp = fopen(path, "wb");
    fputs("DGTMODEL garbage", fp);
    fclose(fp);
    ck_assert_int_eq(run("predict -m bad.dgt %s/data/sample/test.csv.gz -o sub.csv --device cpu",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "bad.dgt: ");
    ck_assert(!exists("sub.csv"));
    /* a model that cannot be written is reported before any training: a path of the user's
     * to fix, so exit 2, with what to do */
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --device cpu -o /nonexistent/m.dgt",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "digits: /nonexistent/m.dgt: cannot create: No such file or "
                                "directory (its directory does not exist: create it, or choose "
                                "another path)\n");
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --device cpu -o bad.dgt/m.dgt",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "bad.dgt/m.dgt: cannot create: Not a directory (a part of the "
                                "path is a file, not a directory: check the path)");
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --device cpu -o .", source_dir()), 2);
    dg_test_expect_in(err_path, "digits: .: cannot write: Is a directory (name a file, not a "
                                "directory)");
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --device cpu -o m.dgt --log "
                         "/nonexistent/log.csv",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "/nonexistent/log.csv: cannot create the log file: No such file");
    /* a missing data file, model or checkpoint; a directory where a file is expected */
    ck_assert_int_eq(run("train missing.csv --device cpu -o m.dgt"), 2);
    dg_test_expect_in(err_path, "digits: missing.csv: cannot open: No such file or directory "
                                "(check the path)\n");
    ck_assert_int_eq(run("predict -m missing.dgt missing.csv -o sub.csv"), 2);
    dg_test_expect_in(err_path, "missing.dgt: cannot open: No such file or directory (check the "
                                "path)");
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --resume missing.ckpt",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "missing.ckpt: cannot open: No such file or directory");
    ck_assert_int_eq(run("check-data ."), 2);
    dg_test_expect_in(err_path, "digits: .: cannot read: Is a directory (name a file in it)");
    ck_assert_int_eq(run("predict -m . %s/data/sample/test.csv.gz -o sub.csv", source_dir()), 2);
    dg_test_expect_in(err_path, "digits: .: cannot read: Is a directory (name a file in it)");
    ck_assert(!exists("sub.csv"));
    ck_assert(!exists("m.dgt"));
    /* only the files this test wrote are in the directory */
    ck_assert_int_eq(run("--version"), 0);
    char command[700];
    snprintf(command, sizeof command, "test $(ls -A %s | wc -l) -eq 3", tmpdir);
    ck_assert_int_eq(system(command), 0);
}
END_TEST

/* Everything in tmpdir but stdout and stderr (which run() rewrites): each entry's name, type,
 * modification time and bytes (a symlink: its target), in name order, as one block. */
static char *snapshot(size_t *size)
{
    char command[700], path[1024];
    snprintf(command, sizeof command, "ls -A '%s' | LC_ALL=C sort", tmpdir);
    FILE *list = popen(command, "r");
    ck_assert_ptr_nonnull(list);
    char *block = NULL;
    size_t n = 0;
    FILE *out = open_memstream(&block, &n);
    ck_assert_ptr_nonnull(out);
    char name[512];
    while (fgets(name, sizeof name, list)) {
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, "stdout") == 0 || strcmp(name, "stderr") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", tmpdir, name);
        struct stat st;
        ck_assert_int_eq(lstat(path, &st), 0);
        fprintf(out, "%s %o %lld.%09ld %lld\n", name, (unsigned)st.st_mode,
                (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long long)st.st_size);
        if (S_ISLNK(st.st_mode)) {
            char target[512];
            ssize_t len = readlink(path, target, sizeof target);
            ck_assert_int_gt(len, 0);
            fwrite(target, 1, (size_t)len, out);
        } else if (S_ISREG(st.st_mode)) {
            char *bytes = dg_test_slurp(path);
            fwrite(bytes, 1, (size_t)st.st_size, out);
            free(bytes);
        }
    }
    ck_assert_int_eq(pclose(list), 0);
    ck_assert_int_eq(fclose(out), 0);
    *size = n;
    return block;
}

/* An output that is an input, or another output, is refused before anything is done: exit 2,
 * both paths named, the directory exactly as it was (bytes, modification times, no temporary
 * files). Existing files compare by device and inode (symlinks, hard links, ./x/../ spellings),
 * new ones by the resolved directory and name; /dev/null and - stay allowed. */
START_TEST(an_output_is_never_an_input)
{
    char command[1024];
    snprintf(command, sizeof command,
             "cd '%s' && gzip -dc '%s/data/sample/test.csv.gz' | head -n 101 > test.csv && "
             "gzip -dc '%s/data/sample/train.csv.gz' | head -n 301 > train.csv && mkdir sub",
             tmpdir, source_dir(), source_dir());
    ck_assert_int_eq(system(command), 0);
    ck_assert_int_eq(run("train train.csv --epochs 1 --device cpu -q -o m.dgt"), 0);
    ck_assert(exists("m.dgt") && exists("m.dgt.ckpt"));
    ck_assert_int_eq(run("export -m m.dgt -o m.safetensors -q"), 0);
    snprintf(command, sizeof command,
             "cd '%s' && ln -s test.csv link.csv && ln test.csv hard.csv && ln m.dgt m.onnx",
             tmpdir);
    ck_assert_int_eq(system(command), 0);
    const char *input = "an output may not overwrite an input (nothing was written)";
    const char *outputs = "two outputs may not be one file (nothing was written)";
    const struct {
        const char *args, *message, *why;
    } cases[] = {
        {"predict -m m.dgt test.csv -o test.csv", "-o test.csv is the same file as the TEST "
                                                  "file test.csv: ", input},
        {"predict -m m.dgt test.csv -o ./sub/../test.csv",
         "-o ./sub/../test.csv is the same file as the TEST file test.csv: ", input},
        {"predict -m m.dgt test.csv -o link.csv", "-o link.csv is the same file as the TEST file "
                                                  "test.csv: ", input},
        {"predict -m m.dgt test.csv --probs hard.csv", "--probs hard.csv is the same file as the "
                                                       "TEST file test.csv: ", input},
        {"predict -m m.dgt test.csv -o m.dgt", "-o m.dgt is the same file as the model -m m.dgt: ",
         input},
        {"predict -m m.dgt test.csv -o out.csv --probs out.csv",
         "--probs out.csv is the same file as -o out.csv: ", outputs},
        {"predict -m m.dgt test.csv -o ./out.csv --probs sub/../out.csv",
         "--probs sub/../out.csv is the same file as -o ./out.csv: ", outputs},
        {"train train.csv --epochs 1 -o train.csv", "-o train.csv is the same file as the TRAIN "
                                                    "file train.csv: ", input},
        {"train train.csv --epochs 1 -o m2.dgt --log train.csv",
         "--log train.csv is the same file as the TRAIN file train.csv: ", input},
        {"train train.csv --epochs 1 -o m2.dgt --checkpoint m2.dgt",
         "--checkpoint m2.dgt is the same file as -o m2.dgt: ", outputs},
        {"train train.csv --epochs 1 -o m2.dgt --log m2.dgt.ckpt",
         "--log m2.dgt.ckpt is the same file as the checkpoint m2.dgt.ckpt: ", outputs},
        {"train train.csv --resume m.dgt.ckpt --log m.dgt.ckpt",
         "--log m.dgt.ckpt is the same file as the checkpoint (--resume) m.dgt.ckpt: ", outputs},
        {"train train.csv --resume m.dgt.ckpt -o train.csv",
         "-o train.csv is the same file as the TRAIN file train.csv: ", input},
        {"train train.csv --epochs 1 --ensemble 2 --log l.csv -o l.member2.csv",
         "the member's log (--log) l.member2.csv is the same file as -o l.member2.csv: ",
         outputs},
        {"report -m m.dgt train.csv -o train.csv",
         "-o train.csv is the same file as the LABELLED file train.csv: ", input},
        {"report -m m.dgt train.csv -o m.dgt", "-o m.dgt is the same file as the model -m m.dgt: ",
         input},
        {"export -m m.dgt -o m.onnx", "-o m.onnx is the same file as the model -m m.dgt: ", input},
        {"import m.safetensors -o m.safetensors",
         "-o m.safetensors is the same file as the WEIGHTS file m.safetensors: ", input},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t before_size, after_size;
        char *before = snapshot(&before_size);
        int device = strncmp(cases[i].args, "export", 6) != 0 &&
                     strncmp(cases[i].args, "import", 6) != 0;
        int code = run("%s%s", cases[i].args, device ? " --device cpu" : "");
        char *err = dg_test_slurp(err_path);
        ck_assert_msg(code == 2, "%s: exit %d: %s", cases[i].args, code, err);
        ck_assert_msg(strstr(err, cases[i].message) && strstr(err, cases[i].why),
                      "%s: want \"%s%s\", got: %s", cases[i].args, cases[i].message,
                      cases[i].why, err);
        free(err);
        char *after = snapshot(&after_size);
        ck_assert_msg(before_size == after_size && memcmp(before, after, before_size) == 0,
                      "%s: the directory changed", cases[i].args);
        free(before);
        free(after);
        printf("ok   %s: exit 2, \"%s\"\n", cases[i].args, cases[i].message);
    }
    /* /dev/null and standard output are no files of the command's: allowed */
    ck_assert_int_eq(run("predict -m m.dgt test.csv -o /dev/null --probs /dev/null --device cpu"),
                     0);
    ck_assert_int_eq(run("predict -m m.dgt test.csv --probs /dev/null --device cpu"), 0);
    dg_test_expect_in(out_path, "ImageId,Label\n1,");
}
END_TEST

/* --math bf16 on the CPU: where a bf16 unit runs, train / predict / eval take it, the model file
 * says math=bf16, and held below AVX-512 (DIGITS_CPU_ISA) it is refused with exit 2 and no
 * output; where none runs, the refusal (naming what is missing) is what is checked. Default
 * runs write no math= line. */
START_TEST(bf16_math_on_the_cpu)
{
    struct dg_backend_spec spec = {"cpu", 1, DG_MATH_BF16, 0, 0};
    struct dg_backend *be = NULL;
    int usable = dg_backend_open(&spec, NULL, 0, &be) == DG_OK;
    char why[512];
    snprintf(why, sizeof why, "%s", usable ? "" : dg_error_message());
    dg_backend_destroy(be);
    const char *train = "train %s/data/sample/train.csv.gz --limit 300 --epochs 1 --no-augment "
                        "--device cpu --no-checkpoint -q";
    char cmd[512];
    if (usable) {
        snprintf(cmd, sizeof cmd, "%s --math bf16 -o m.dgt", train);
        ck_assert_int_eq(run(cmd, source_dir()), 0);
        ck_assert_int_eq(run("info -m m.dgt"), 0);
        dg_test_expect_in(out_path, "\nmath=bf16\n");
        ck_assert_int_eq(run("predict -m m.dgt %s/data/sample/test.csv.gz --device cpu --math bf16 "
                             "-o p.csv -q",
                             source_dir()),
                         0);
        ck_assert(exists("p.csv"));
        ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz --limit 300 --device cpu "
                             "--math bf16 --json -o e.json",
                             source_dir()),
                         0);
        dg_test_expect_in(dg_test_dir_path(tmpdir, "e.json"), "\"accuracy\"");
        setenv("DIGITS_CPU_ISA", dg_cpu_isa_supported(DG_CPU_ISA_AVX2) ? "avx2" : "scalar", 1);
    } else {
        printf("--math bf16 cannot run here (%s): its refusal is checked\n", why);
    }
    snprintf(cmd, sizeof cmd, "%s --math bf16 -o m2.dgt", train);
    ck_assert_int_eq(run(cmd, source_dir()), 2);
    dg_test_expect_in(err_path, "digits: --math bf16: ");
    dg_test_expect_in(err_path, "use --math fp32");
    ck_assert(!exists("m2.dgt"));
    unsetenv("DIGITS_CPU_ISA");
    snprintf(cmd, sizeof cmd, "%s -o m3.dgt", train);
    ck_assert_int_eq(run(cmd, source_dir()), 0);
    ck_assert_int_eq(run("info -m m3.dgt"), 0);
    char *text = dg_test_slurp(out_path);
    ck_assert_ptr_nonnull(strstr(text, "\naugment=0\n"));
    ck_assert_ptr_null(strstr(text, "math="));
    ck_assert_ptr_null(strstr(text, "rotation_deg="));
    free(text);
}
END_TEST

/* 1 when the last `n` bytes of the two files of tmpdir are the same. */
static int same_tail(const char *x, const char *y, long n)
{
    FILE *f = fopen(dg_test_dir_path(tmpdir, x), "rb"), *g = fopen(dg_test_dir_path(tmpdir, y), "rb");
    int same = f && g && fseek(f, -n, SEEK_END) == 0 && fseek(g, -n, SEEK_END) == 0;
    while (same) {
        int a = fgetc(f), b = fgetc(g);
        same = a == b;
        if (a == EOF || b == EOF)
            break;
    }
    if (f)
        fclose(f);
    if (g)
        fclose(g);
    return same;
}

/* --schedule exp:GAMMA: epoch e runs at lr * GAMMA^e (in float), the model file and the
 * checkpoint say so, and a run resumed after epoch 1 ends with the weights of the run left
 * alone. */
START_TEST(exponential_schedule)
{
    const char *train = "train %s/data/sample/train.csv.gz --limit 300 --device cpu --threads 1 "
                        "--schedule exp:0.5 --log h%d.csv";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --epochs 3 --no-checkpoint -q -o whole.dgt", train);
    ck_assert_int_eq(run(cmd, source_dir(), 1), 0);
    char *log = dg_test_slurp(dg_test_dir_path(tmpdir, "h1.csv"));
    printf("%s", log);
    /* lr per epoch: 0.001, 0.0005, 0.00025 */
    ck_assert_ptr_nonnull(strstr(log, ",0.001,"));
    ck_assert_ptr_nonnull(strstr(log, ",0.0005,"));
    ck_assert_ptr_nonnull(strstr(log, ",0.00025,"));
    free(log);
    ck_assert_int_eq(run("info -m whole.dgt"), 0);
    dg_test_expect_in(out_path, "\nschedule=exp:0.5\n");
    snprintf(cmd, sizeof cmd, "%s --epochs 1 -q -o part.dgt", train);
    ck_assert_int_eq(run(cmd, source_dir(), 2), 0);
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --resume part.dgt.ckpt --epochs 3 -q "
                         "--schedule plateau",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "--schedule (the checkpoint's is exp:0.5) contradicts");
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --resume part.dgt.ckpt --epochs 3 -q",
                         source_dir()),
                     0);
    /* the weights, bit for bit: safetensors ends with the 887,530 float32 parameters (its
     * header holds the settings, which differ in the time taken) */
    ck_assert_int_eq(run("export -m whole.dgt -o whole.safetensors -q"), 0);
    ck_assert_int_eq(run("export -m part.dgt -o part.safetensors -q"), 0);
    ck_assert(same_tail("whole.safetensors", "part.safetensors", 887530L * 4));
    ck_assert_int_eq(run("eval -m whole.dgt %s/data/sample/train.csv.gz --limit 300 --all --json "
                         "-o a.json",
                         source_dir()),
                     0);
    ck_assert_int_eq(run("eval -m part.dgt %s/data/sample/train.csv.gz --limit 300 --all --json "
                         "-o b.json",
                         source_dir()),
                     0);
    char *a = dg_test_slurp(dg_test_dir_path(tmpdir, "a.json"));
    char *b = dg_test_slurp(dg_test_dir_path(tmpdir, "b.json"));
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}
END_TEST

/* --schedule onecycle:MAX_LR: the learning rate moves every step (the log shows each epoch's
 * first step's: epoch 1 at MAX_LR / 25), the files say it, a resume refuses another schedule
 * and another --epochs (the cycle spans the run). Resumed bit for bit: test_checkpoint. */
START_TEST(onecycle_schedule)
{
    const char *train = "train %s/data/sample/train.csv.gz --limit 300 --device cpu --threads 1 "
                        "--optimizer adam --schedule onecycle:0.01 --log c%d.csv";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --epochs 3 -q -o cwhole.dgt", train);
    ck_assert_int_eq(run(cmd, source_dir(), 1), 0);
    char *log = dg_test_slurp(dg_test_dir_path(tmpdir, "c1.csv"));
    printf("%s", log);
    /* 270 training rows: 4 steps an epoch, 12 in all; epoch 2 starts at step 4 of 12 */
    char second[64];
    snprintf(second, sizeof second, ",%g,", (double)dg_onecycle_lr(0.01f, 4, 12));
    ck_assert_ptr_nonnull(strstr(log, ",0.0004,"));
    ck_assert_msg(strstr(log, second) != NULL, "no %s in the log", second);
    free(log);
    ck_assert_int_eq(run("info -m cwhole.dgt"), 0);
    dg_test_expect_in(out_path, "\nschedule=onecycle:0.01\n");
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --resume cwhole.dgt.ckpt --epochs 3 "
                         "-q --schedule onecycle:0.02",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "--schedule (the checkpoint's is onecycle:0.01) contradicts");
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --resume cwhole.dgt.ckpt --epochs 4 -q",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "--epochs 4 (the checkpoint's one-cycle schedule spans its 3 "
                                "epochs) contradicts");
}
END_TEST

/* --rotate / --zoom / --shift: the model file says them, they change what is trained, a
 * resumed run keeps the checkpoint's and refuses others. */
START_TEST(augmentation_strength)
{
    const char *train = "train %s/data/sample/train.csv.gz --limit 300 --epochs 1 --device cpu "
                        "--threads 1 -q";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --no-checkpoint -o default.dgt", train);
    ck_assert_int_eq(run(cmd, source_dir()), 0);
    snprintf(cmd, sizeof cmd, "%s --rotate 25 --zoom 0.2 --shift 0.05 -o strong.dgt", train);
    ck_assert_int_eq(run(cmd, source_dir()), 0);
    ck_assert_int_eq(run("info -m strong.dgt"), 0);
    dg_test_expect_in(out_path, "\naugment=1\nrotation_deg=25\nzoom=0.2\nshift=0.05\n");
    ck_assert_int_eq(run("eval -m default.dgt %s/data/sample/train.csv.gz --limit 300 --all "
                         "--json -o a.json",
                         source_dir()),
                     0);
    ck_assert_int_eq(run("eval -m strong.dgt %s/data/sample/train.csv.gz --limit 300 --all "
                         "--json -o b.json",
                         source_dir()),
                     0);
    char *a = dg_test_slurp(dg_test_dir_path(tmpdir, "a.json"));
    char *b = dg_test_slurp(dg_test_dir_path(tmpdir, "b.json"));
    ck_assert_msg(strcmp(a, b) != 0, "the stronger augmentation trained the same model");
    free(a);
    free(b);
    /* the checkpoint keeps them: another value on --resume is refused */
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --resume strong.dgt.ckpt --rotate 10 "
                         "--epochs 2 -q",
                         source_dir()),
                     2);
    dg_test_expect_in(err_path, "--rotate 10 (the checkpoint's is 25) contradicts the checkpoint");
}
END_TEST

START_TEST(cuda_device_without_gpu_fails_cleanly)
{
    char reason[256];
    if (dg_cuda_probe(reason, sizeof reason) == DG_OK) {
        printf("a CUDA device is usable here: the no-GPU behaviour is not exercised\n");
        return;
    }
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --limit 100 --epochs 1 --device cuda "
                         "-o m.dgt",
                         source_dir()),
                     1);
    dg_test_expect_in(err_path, "digits: ");
    dg_test_expect_in(err_path, "; --device cpu runs on the CPU\n");
    ck_assert(!exists("m.dgt"));
    /* auto falls back to the CPU: one line saying why where a driver is loaded (a GPU was to be
     * expected), none on a machine without one; the start line names OpenBLAS' version, not
     * its whole build string; "1 epoch" */
    ck_assert_int_eq(run("train %s/data/sample/train.csv.gz --limit 200 --epochs 1 --no-augment "
                         "-o m.dgt",
                         source_dir()),
                     0);
    char *err = dg_test_slurp(err_path);
    ck_assert_ptr_nonnull(err);
    if (dg_cuda_driver_present())
        ck_assert_ptr_nonnull(strstr(err, "running on the CPU"));
    else
        ck_assert_msg(!strstr(err, "no usable GPU"), "a note without a driver: %s", err);
    ck_assert_ptr_nonnull(strstr(err, "(labelled), 1 epoch, batch 86, cpu: "));
    const char *blas = strstr(err, "OpenBLAS ");
    ck_assert_ptr_nonnull(blas);
    size_t version = strspn(blas + 9, "0123456789.");
    ck_assert_msg(version > 0 && (blas[9 + version] == '\n' || blas[9 + version] == ';'),
                  "more than OpenBLAS' version: %s", blas);
    free(err);
    /* -v: the fallback note whatever the driver, and the backend with BLAS' whole build string */
    ck_assert_int_eq(run("eval -m m.dgt %s/data/sample/train.csv.gz -v", source_dir()), 0);
    dg_test_expect_in(err_path, "digits: no usable GPU (");
    dg_test_expect_in(err_path, "): running on the CPU\ndigits: backend: cpu: ");
    dg_test_expect_in(err_path, "; BLAS: OpenBLAS ");
}
END_TEST

/* Standard output is one stream: two outputs may not both go there (the submission and
 * --probs), and output that did not all get written (a full disk: /dev/full) fails the
 * command, exit 1, whatever it printed; --version takes no operands. */
START_TEST(standard_output_is_one_stream)
{
    ck_assert_int_eq(run("predict -m m.dgt x.csv -o - --probs -"), 2);
    dg_test_expect_in(err_path, "digits: predict: --probs - and the predictions (-o, standard "
                                "output unless given) would both go to standard output; give "
                                "one of them a file (nothing was written)\n");
    ck_assert_int_eq(run("predict -m m.dgt x.csv --probs -"), 2);
    dg_test_expect_in(err_path, "would both go to standard output");
    ck_assert_int_eq(run("--version extra"), 2);
    dg_test_expect_in(err_path, "digits: --version takes no arguments (got 'extra')\n");
    if (access("/dev/full", W_OK) != 0) {
        printf("SKIP the writes to /dev/full: there is none\n");
        return;
    }
    static const char *const commands[] = {"--version", "--help", "help train", "info",
                                            "info --net deotte", "check-data --help"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char command[1024];
        snprintf(command, sizeof command, "cd '%s' && '%s' %s >/dev/full 2>'%s'", tmpdir,
                 dg_test_bin(), commands[i], err_path);
        int status = system(command);
        ck_assert(WIFEXITED(status));
        ck_assert_msg(WEXITSTATUS(status) == 1, "%s >/dev/full: exit %d", commands[i],
                      WEXITSTATUS(status));
        dg_test_expect_in(err_path, "digits: stdout: write failed: No space left on device\n");
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, help_version_and_unknown_command);
    tcase_add_test(tc, info_prints_the_model_table);
    tcase_add_test(tc, did_you_mean_and_help);
    tcase_add_test(tc, model_option_names_other_files);
    tcase_add_test(tc, shared_options_everywhere);
    tcase_add_test(tc, eval_and_predict_outputs);
    tcase_add_test(tc, eval_against_answers);
    tcase_add_test(tc, a_zip_archive_is_named);
    tcase_add_test(tc, train_predict_eval_on_the_sample);
    tcase_add_test(tc, usage_errors_exit_2);
    tcase_add_test(tc, bad_inputs_leave_no_output);
    tcase_add_test(tc, an_output_is_never_an_input);
    tcase_add_test(tc, standard_output_is_one_stream);
    tcase_add_test(tc, bf16_math_on_the_cpu);
    tcase_add_test(tc, augmentation_strength);
    tcase_add_test(tc, exponential_schedule);
    tcase_add_test(tc, onecycle_schedule);
    tcase_add_test(tc, cuda_device_without_gpu_fails_cleanly);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
