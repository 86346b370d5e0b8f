/* Tests on the real MNIST: the Kaggle training CSV has 60,000 rows and the known label histogram
 * (also through `digits check-data`), the original IDX files give a byte-identical store, the
 * Kaggle test CSV has 10,000 unlabelled rows, and scripts/get-data --from rebuilds the
 * Kaggle-layout CSVs byte for byte.
 *
 * Where the files come from, the first that has a training CSV:
 *   $DIGITS_DATA         the labelled training file itself (train.csv.gz or train.csv, MNIST's
 *                        60,000 rows), as scripts/gpu-check takes it; the other files are looked
 *                        for beside it under their usual names (test.csv.gz or test.csv,
 *                        train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
 *                        t10k-images-idx3-ubyte.gz). Set but unreadable, or a folder: the suite
 *                        fails, saying so.
 *   $DIGITS_SHARED_DATA  a folder (CMake sets ../shared/data/mnist beside the checkout)
 *   $DIGITS_SOURCE_DIR/.gpu-deps/data  the folder scripts/gpu-deps fills to carry to a GPU
 *                        machine (train.csv.gz and test.csv.gz; the IDX files too with
 *                        scripts/gpu-deps --with-idx)
 * A check whose files are not there prints a SKIP line naming them and passes; the others run.
 * Without any training CSV the whole suite reports itself skipped (exit 77, which CTest shows
 * as "Skipped"), so that a clean clone shows what did not run. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "digits/data.h"
#include "test_util.h"

static char tmpdir[256];

/* Set by main() before the tests (forked by Check) run. */
static char train_csv[1024]; /* the labelled training CSV */
static char data_dir[1024];  /* where the other files are looked for */
static char origin[1200];    /* where both came from, for messages */

static const size_t expected_labels[10] = {5923, 6742, 5958, 6131, 5842,
                                           5421, 5918, 6265, 5851, 5949};

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/digits-test-shared-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", tmpdir);
    if (system(command) != 0)
        printf("note: could not remove %s\n", tmpdir);
}

/* `digits check-data ARGS` with stdout and stderr into out; the exit code. */
static int run(const char *args, char *out, size_t out_size)
{
    char command[8192];
    snprintf(command, sizeof command, "'%s' check-data %s 2>&1", dg_test_bin(), args);
    FILE *pipe = popen(command, "r");
    ck_assert_ptr_nonnull(pipe);
    size_t n = fread(out, 1, out_size - 1, pipe);
    out[n] = '\0';
    int status = pclose(pipe);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int readable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* DATA_DIR/NAME when it is a readable file, else NULL (4 rotating buffers). */
static const char *in_data(const char *name)
{
    static char paths[4][2048];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", data_dir, name);
    return readable_file(path) ? path : NULL;
}

/* The Kaggle test CSV beside the training one, compressed or not; NULL when absent. */
static const char *test_csv(void)
{
    const char *path = in_data("test.csv.gz");
    return path ? path : in_data("test.csv");
}

/* A file of the data folder by name; "test.csv(.gz)" is the test CSV either way. */
static const char *lookup(const char *name)
{
    return strcmp(name, "test.csv(.gz)") == 0 ? test_csv() : in_data(name);
}

/* 1 when every one of the NULL-terminated names is in the data folder; otherwise prints
 * "SKIP WHAT: NAME, ... not in DATA_DIR (ORIGIN)" and returns 0. */
static int have_files(const char *what, const char *const *names)
{
    char missing[1024] = "";
    for (int i = 0; names[i]; i++)
        if (!lookup(names[i]))
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s",
                     missing[0] ? ", " : "", names[i]);
    if (!missing[0])
        return 1;
    printf("SKIP %s: %s not in %s (%s)\n", what, missing, data_dir, origin);
    return 0;
}

/* Finds the data (see the comment at the top). 1: found; 0: none anywhere (reasons in `why`);
 * -1: DIGITS_DATA is set but does not name a readable file (the message in `why`). */
static int find_data(char *why, size_t why_size)
{
    const char *env = getenv("DIGITS_DATA");
    if (env && env[0]) {
        struct stat st;
        if (stat(env, &st) != 0) {
            char cwd[1024];
            snprintf(why, why_size,
                     "DIGITS_DATA=%s: %s (it names the labelled training file, train.csv.gz or "
                     "train.csv; a relative path is taken from %s)",
                     env, strerror(errno), getcwd(cwd, sizeof cwd) ? cwd : "the working folder");
            return -1;
        }
        if (S_ISDIR(st.st_mode)) {
            snprintf(why, why_size,
                     "DIGITS_DATA=%s is a folder: it names the labelled training file itself "
                     "(e.g. %s/train.csv.gz), and the other MNIST files are looked for beside it",
                     env, env);
            return -1;
        }
        if (!readable_file(env)) {
            snprintf(why, why_size, "DIGITS_DATA=%s: not a readable file", env);
            return -1;
        }
        snprintf(train_csv, sizeof train_csv, "%s", env);
        snprintf(data_dir, sizeof data_dir, "%s", env);
        char *slash = strrchr(data_dir, '/');
        if (!slash)
            snprintf(data_dir, sizeof data_dir, ".");
        else if (slash == data_dir)
            slash[1] = '\0';
        else
            *slash = '\0';
        snprintf(origin, sizeof origin, "DIGITS_DATA=%s", env);
        return 1;
    }
    const char *shared = getenv("DIGITS_SHARED_DATA");
    const char *source = getenv("DIGITS_SOURCE_DIR");
    char carried[1024];
    snprintf(carried, sizeof carried, "%s/.gpu-deps/data", source ? source : ".");
    const char *folders[2] = {shared && shared[0] ? shared : NULL, carried};
    for (int i = 0; i < 2; i++) {
        if (!folders[i])
            continue;
        snprintf(data_dir, sizeof data_dir, "%s", folders[i]);
        const char *path = in_data("train.csv.gz");
        if (!path)
            path = in_data("train.csv");
        if (path) {
            snprintf(train_csv, sizeof train_csv, "%s", path);
            if (i == 0)
                snprintf(origin, sizeof origin, "DIGITS_SHARED_DATA=%s", folders[i]);
            else
                snprintf(origin, sizeof origin, "carried in %s by scripts/gpu-deps", folders[i]);
            return 1;
        }
    }
    snprintf(why, why_size,
             "no MNIST train.csv(.gz): DIGITS_DATA is not set, none in DIGITS_SHARED_DATA=%s "
             "(the real MNIST beside the checkout, ../shared/data/mnist) nor in %s "
             "(scripts/gpu-deps)",
             shared ? shared : "(unset)", carried);
    data_dir[0] = '\0';
    return 0;
}

/* The training CSV: 60,000 labelled rows, MNIST's label histogram; the same through
 * `digits check-data`. */
START_TEST(shared_train_csv)
{
    struct dg_dataset a;
    ck_assert_int_eq(dg_dataset_load(train_csv, NULL, NULL, &a), DG_OK);
    ck_assert_msg(a.count == 60000,
                  "%s (%s): %zu rows, not the 60000 of MNIST's training set (this suite needs "
                  "the real MNIST)",
                  train_csv, origin, a.count);
    ck_assert_ptr_nonnull(a.labels);
    size_t histogram[10] = {0};
    for (size_t i = 0; i < a.count; i++)
        histogram[a.labels[i]]++;
    for (int k = 0; k < 10; k++)
        ck_assert_uint_eq(histogram[k], expected_labels[k]);
    dg_dataset_free(&a);
    if (dg_test_reduced()) {
        printf("SKIP shared_train_csv through digits check-data: DIGITS_TEST_REDUCED is set (the "
               "command parses the same file again; check_data_command covers it on the "
               "sample)\n");
        return;
    }
    char out[8192], args[4096];
    snprintf(args, sizeof args, "'%s'", train_csv);
    ck_assert_int_eq(run(args, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "layout: train\nrows: 60000\nlabels: 0:5923 1:6742 "
                                      "2:5958 3:6131 4:5842 5:5421 6:5918 7:6265 8:5851 "
                                      "9:5949\npixel mean: 33.3184 (of 0..255)\n"));
}
END_TEST

/* The original IDX training files give the same store as the CSV, byte for byte. */
START_TEST(shared_csv_equals_shared_idx)
{
    static const char *const needed[] = {"train-images-idx3-ubyte.gz",
                                         "train-labels-idx1-ubyte.gz", NULL};
    if (!have_files("shared_csv_equals_shared_idx", needed))
        return;
    const char *images = in_data("train-images-idx3-ubyte.gz");
    const char *labels = in_data("train-labels-idx1-ubyte.gz");
    struct dg_dataset a, b;
    ck_assert_int_eq(dg_dataset_load(train_csv, NULL, NULL, &a), DG_OK);
    ck_assert_int_eq(dg_dataset_load(images, labels, NULL, &b), DG_OK);
    ck_assert_uint_eq(a.count, 60000);
    ck_assert_uint_eq(b.count, 60000);
    ck_assert_int_eq(memcmp(a.images, b.images, 60000 * DG_PIXELS), 0);
    ck_assert_int_eq(memcmp(a.labels, b.labels, 60000), 0);
    dg_dataset_free(&a);
    dg_dataset_free(&b);
    if (dg_test_reduced()) {
        printf("SKIP shared_csv_equals_shared_idx through digits check-data: "
               "DIGITS_TEST_REDUCED is set (the command parses the same files again; "
               "check_data_command covers it on the sample)\n");
        return;
    }
    char out[8192], args[4096];
    snprintf(args, sizeof args, "'%s' --labels '%s'", images, labels);
    ck_assert_int_eq(run(args, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "format: idx, gzip\nlayout: idx (images + labels)\n"
                                      "rows: 60000\nlabels: 0:5923 1:6742 2:5958 3:6131 "
                                      "4:5842 5:5421 6:5918 7:6265 8:5851 9:5949\n"));
}
END_TEST

/* The Kaggle test CSV: 10,000 rows without labels. */
START_TEST(shared_test_csv)
{
    static const char *const needed[] = {"test.csv(.gz)", NULL};
    if (!have_files("shared_test_csv", needed))
        return;
    const char *path = test_csv();
    struct dg_dataset a;
    ck_assert_int_eq(dg_dataset_load(path, NULL, NULL, &a), DG_OK);
    ck_assert_uint_eq(a.count, 10000);
    ck_assert_ptr_null(a.labels);
    dg_dataset_free(&a);
    if (dg_test_reduced()) {
        printf("SKIP shared_test_csv through digits check-data: DIGITS_TEST_REDUCED is set\n");
        return;
    }
    char out[8192], args[4096];
    snprintf(args, sizeof args, "'%s'", path);
    ck_assert_int_eq(run(args, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "layout: test\nrows: 10000\n"));
}
END_TEST

/* scripts/get-data --from on the MNIST IDX files writes CSVs byte-identical to the
 * Kaggle-layout ones. */
START_TEST(get_data_on_the_shared_mnist)
{
    const char *root = getenv("DIGITS_SOURCE_DIR");
    char command[8192];
    if (getenv("DIGITS_TEST_SANITIZED")) {
        printf("SKIP get_data_on_the_shared_mnist: a sanitizer run (scripts/get-data is host "
               "Python, no code of this build; the plain pass runs it)\n");
        return;
    }
    if (dg_test_reduced()) {
        printf("SKIP get_data_script on the shared MNIST: DIGITS_TEST_REDUCED is set, and "
               "scripts/get-data is host Python (no code of this build; the native pass runs "
               "it)\n");
        return;
    }
    static const char *const needed[] = {"train-images-idx3-ubyte.gz",
                                         "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "test.csv(.gz)", NULL};
    if (!have_files("get_data_on_the_shared_mnist", needed))
        return;
    /* gzip -dcf: the CSVs may be compressed or not */
    snprintf(command, sizeof command,
             "'%s/scripts/get-data' --from '%s' --out '%s/out' >/dev/null && "
             "gzip -dcf '%s' | cmp -s - '%s/out/train.csv' && "
             "gzip -dcf '%s' | cmp -s - '%s/out/test.csv'",
             root ? root : ".", data_dir, tmpdir, train_csv, tmpdir, test_csv(), tmpdir);
    ck_assert_int_eq(system(command), 0);
}
END_TEST

int main(void)
{
    char why[4096];
    int found = find_data(why, sizeof why);
    if (found < 0) {
        printf("test_shared_data: %s\n", why);
        return EXIT_FAILURE;
    }
    if (found == 0) {
        printf("SKIP test_shared_data: %s\n", why);
        return 77;
    }
    printf("data: %s (%s), the other files looked for in %s\n", train_csv, origin, data_dir);
    fflush(stdout);
    Suite *suite = suite_create("shared data");
    TCase *tc = tcase_create("shared data");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, shared_train_csv);
    tcase_add_test(tc, shared_csv_equals_shared_idx);
    tcase_add_test(tc, shared_test_csv);
    tcase_add_test(tc, get_data_on_the_shared_mnist);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
