/* Tests on the real MNIST files in ../shared/data/mnist ($DIGITS_SHARED_DATA): the Kaggle CSV
 * and the original IDX files give byte-identical stores and the known label histogram (also
 * through `digits check-data`), and scripts/get-data --from rebuilds the Kaggle-layout CSVs byte
 * for byte. Without those files the whole suite reports itself skipped (exit 77, which CTest
 * shows as "Skipped"), so that a clean clone shows what did not run. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "digits/data.h"
#include "test_util.h"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/digits-test-shared-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
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


static const char *shared(const char *name)
{
    static char paths[4][1024];
    static int next;
    const char *dir = getenv("DIGITS_SHARED_DATA");
    char *path = paths[next++ % 4];
    snprintf(path, 1024, "%s/%s", dir ? dir : "/nonexistent", name);
    return access(path, R_OK) == 0 ? path : NULL;
}

START_TEST(shared_csv_equals_shared_idx)
{
    const char *csv_path = shared("train.csv.gz");
    const char *images = shared("train-images-idx3-ubyte.gz");
    const char *labels = shared("train-labels-idx1-ubyte.gz");
    ck_assert_msg(csv_path && images && labels, "the shared MNIST files are incomplete");
    struct dg_dataset a, b;
    ck_assert_int_eq(dg_dataset_load(csv_path, NULL, NULL, &a), DG_OK);
    ck_assert_int_eq(dg_dataset_load(images, labels, NULL, &b), DG_OK);
    ck_assert_uint_eq(a.count, 60000);
    ck_assert_uint_eq(b.count, 60000);
    ck_assert_int_eq(memcmp(a.images, b.images, 60000 * DG_PIXELS), 0);
    ck_assert_int_eq(memcmp(a.labels, b.labels, 60000), 0);
    static const size_t expected[10] = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
    size_t histogram[10] = {0};
    for (size_t i = 0; i < a.count; i++)
        histogram[a.labels[i]]++;
    for (int k = 0; k < 10; k++)
        ck_assert_uint_eq(histogram[k], expected[k]);
    dg_dataset_free(&a);
    dg_dataset_free(&b);
    const char *test_path = shared("test.csv.gz");
    if (test_path) {
        ck_assert_int_eq(dg_dataset_load(test_path, NULL, NULL, &a), DG_OK);
        ck_assert_uint_eq(a.count, 10000);
        ck_assert_ptr_null(a.labels);
        dg_dataset_free(&a);
    }
    /* the same through the command */
    if (dg_test_reduced()) {
        printf("SKIP shared_csv_equals_shared_idx through digits check-data: DIGITS_TEST_REDUCED "
               "is set (the command parses the same files again; check_data_command covers it "
               "on the sample)\n");
        return;
    }
    char out[8192], args[4096];
    snprintf(args, sizeof args, "'%s' --labels '%s'", images, labels);
    ck_assert_int_eq(run(args, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "format: idx, gzip\nlayout: idx (images + labels)\n"
                                      "rows: 60000\nlabels: 0:5923 1:6742 2:5958 3:6131 "
                                      "4:5842 5:5421 6:5918 7:6265 8:5851 9:5949\n"));
    snprintf(args, sizeof args, "'%s'", csv_path);
    ck_assert_int_eq(run(args, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "layout: train\nrows: 60000\nlabels: 0:5923 1:6742 "
                                      "2:5958 3:6131 4:5842 5:5421 6:5918 7:6265 8:5851 "
                                      "9:5949\npixel mean: 33.3184 (of 0..255)\n"));
    if (test_path) {
        snprintf(args, sizeof args, "'%s'", test_path);
        ck_assert_int_eq(run(args, out, sizeof out), 0);
        ck_assert_ptr_nonnull(strstr(out, "layout: test\nrows: 10000\n"));
    }
}
END_TEST



/* scripts/get-data --from on the shared MNIST files writes CSVs byte-identical to the shared
 * Kaggle-layout ones. */
START_TEST(get_data_on_the_shared_mnist)
{
    const char *root = getenv("DIGITS_SOURCE_DIR");
    char command[4096];
    const char *dir = getenv("DIGITS_SHARED_DATA");
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
    snprintf(command, sizeof command,
             "'%s/scripts/get-data' --from '%s' --out '%s/out' >/dev/null && "
             "zcat '%s/train.csv.gz' | cmp -s - '%s/out/train.csv' && "
             "zcat '%s/test.csv.gz' | cmp -s - '%s/out/test.csv'",
             root ? root : ".", dir, tmpdir, dir, tmpdir, dir, tmpdir);
    ck_assert_int_eq(system(command), 0);
}
END_TEST

int main(void)
{
    static const char *const files[] = {"train.csv.gz", "test.csv.gz", "train-images-idx3-ubyte.gz",
                                        "train-labels-idx1-ubyte.gz"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (!shared(files[i])) {
            printf("SKIP test_shared_data: %s not found in DIGITS_SHARED_DATA=%s (the real MNIST "
                   "beside the checkout, ../shared/data/mnist)\n",
                   files[i], getenv("DIGITS_SHARED_DATA") ? getenv("DIGITS_SHARED_DATA") : "");
            return 77;
        }
    Suite *suite = suite_create("shared data");
    TCase *tc = tcase_create("shared data");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, shared_csv_equals_shared_idx);
    tcase_add_test(tc, get_data_on_the_shared_mnist);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
