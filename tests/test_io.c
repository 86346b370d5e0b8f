/* Output files: the permissions atomic outputs get (0666 less the umask for a new file, the old
 * mode for a replaced one, as a plain open(O_CREAT, 0666) + truncate would give), finishing
 * several outputs before renaming any, and `digits predict` writing the submission and the
 * probabilities both or neither. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "digits/io.h"
#include "digits/model.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/digits-test-io-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void in_dir(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

/* Writes `text` to path through dg_atomic_open / commit under `mask`; returns the file's mode. */
static mode_t write_with_umask(const char *path, const char *text, mode_t mask)
{
    mode_t old = umask(mask);
    struct dg_atomic_file file;
    ck_assert_msg(dg_atomic_open(&file, path) == DG_OK, "%s", dg_error_message());
    fputs(text, file.fp);
    ck_assert_msg(dg_atomic_commit(&file) == DG_OK, "%s", dg_error_message());
    umask(old);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* Files in dir other than the listed ones (temporaries left behind). */
static int stray_files(const char *const *expected, int count)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int stray = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int known = 0;
        for (int i = 0; i < count; i++)
            known |= strcmp(e->d_name, expected[i]) == 0;
        if (!known) {
            printf("stray file: %s\n", e->d_name);
            stray++;
        }
    }
    closedir(d);
    return stray;
}

START_TEST(new_outputs_follow_the_umask)
{
    char path[512];
    in_dir(path, sizeof path, "a.csv");
    ck_assert_uint_eq(write_with_umask(path, "a\n", 022), 0644);
    in_dir(path, sizeof path, "b.csv");
    ck_assert_uint_eq(write_with_umask(path, "b\n", 077), 0600);
    in_dir(path, sizeof path, "c.csv");
    ck_assert_uint_eq(write_with_umask(path, "c\n", 002), 0664);
    const char *files[] = {"a.csv", "b.csv", "c.csv"};
    ck_assert_int_eq(stray_files(files, 3), 0);
}
END_TEST

START_TEST(a_replaced_output_keeps_its_mode)
{
    char path[512];
    in_dir(path, sizeof path, "model.dgt");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("old\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(path, 0640), 0);
    ck_assert_uint_eq(write_with_umask(path, "new\n", 022), 0640);
    ck_assert_uint_eq(write_with_umask(path, "newer\n", 077), 0640);
    char *text = dg_test_slurp(path);
    ck_assert_str_eq(text, "newer\n");
    free(text);
    /* a read-only output is replaced too (the directory allows it) and stays read-only */
    ck_assert_int_eq(chmod(path, 0444), 0);
    ck_assert_uint_eq(write_with_umask(path, "again\n", 022), 0444);
    const char *files[] = {"model.dgt"};
    ck_assert_int_eq(stray_files(files, 1), 0);
}
END_TEST

/* dg_atomic_finish completes a file without putting it in place; abort then removes it. */
START_TEST(finish_then_commit_or_abort)
{
    char kept[512], dropped[512];
    in_dir(kept, sizeof kept, "kept.csv");
    in_dir(dropped, sizeof dropped, "dropped.csv");
    struct dg_atomic_file a, b;
    ck_assert_int_eq(dg_atomic_open(&a, kept), DG_OK);
    ck_assert_int_eq(dg_atomic_open(&b, dropped), DG_OK);
    fputs("kept\n", a.fp);
    fputs("dropped\n", b.fp);
    ck_assert_int_eq(dg_atomic_finish(&a), DG_OK);
    ck_assert_int_eq(dg_atomic_finish(&b), DG_OK);
    ck_assert_int_ne(access(kept, F_OK), 0); /* not in place before the commit */
    ck_assert_int_eq(dg_atomic_commit(&a), DG_OK);
    dg_atomic_abort(&b);
    ck_assert_int_eq(access(kept, F_OK), 0);
    ck_assert_int_ne(access(dropped, F_OK), 0);
    const char *files[] = {"kept.csv"};
    ck_assert_int_eq(stray_files(files, 1), 0);
}
END_TEST

static int run(const char *fmt, const char *a, const char *b)
{
    return dg_test_run_digits(dir, NULL, NULL, fmt, a, b);
}

/* `digits predict` with --probs to a writable file and -o where it cannot be written: a
 * failure, and no probabilities file either (before, the probabilities were written first). */
START_TEST(predict_writes_both_outputs_or_neither)
{
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    struct dg_model model = {0};
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    dg_model_init_glorot(&model, 7);
    char model_path[512], test_csv[1024];
    in_dir(model_path, sizeof model_path, "m.dgt");
    ck_assert_int_eq(dg_model_save(model_path, &model, "seed=7\n"), DG_OK);
    dg_model_free(&model);
    const char *root = getenv("DIGITS_SOURCE_DIR");
    snprintf(test_csv, sizeof test_csv, "%s/data/sample/test.csv.gz", root ? root : ".");

    /* -o inside a directory that does not exist */
    int code = run("predict -m m.dgt %s -o missing/sub.csv --probs probs.csv --device cpu "
                   "--threads 1",
                   test_csv, NULL);
    ck_assert_int_ne(code, 0);
    char err[512];
    in_dir(err, sizeof err, "stderr");
    dg_test_expect_in(err, "missing/sub.csv");
    const char *left[] = {"m.dgt", "stdout", "stderr"};
    ck_assert_int_eq(stray_files(left, 3), 0);
    /* -o naming a directory: the rename fails after both files were complete */
    char subdir[512];
    in_dir(subdir, sizeof subdir, "out.d");
    ck_assert_int_eq(mkdir(subdir, 0755), 0);
    code = run("predict -m m.dgt %s -o out.d --probs probs.csv --device cpu --threads 1", test_csv,
               NULL);
    ck_assert_int_ne(code, 0);
    const char *left2[] = {"m.dgt", "stdout", "stderr", "out.d"};
    ck_assert_int_eq(stray_files(left2, 4), 0);
    /* both writable: both appear */
    code = run("predict -m m.dgt %s -o sub.csv --probs probs.csv --device cpu --threads 1",
               test_csv, NULL);
    ck_assert_int_eq(code, 0);
    char sub[512], probs[512];
    in_dir(sub, sizeof sub, "sub.csv");
    in_dir(probs, sizeof probs, "probs.csv");
    dg_test_expect_in(sub, "ImageId,Label\n1,");
    dg_test_expect_in(probs, "ImageId,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9\n1,");
    const char *left3[] = {"m.dgt", "stdout", "stderr", "out.d", "sub.csv", "probs.csv"};
    ck_assert_int_eq(stray_files(left3, 6), 0);
}
END_TEST

/* Outputs that are not regular files: /dev/full (every write fails with ENOSPC) is written in
 * place, not replaced by a rename, and the failure is an error (exit 1, no "wrote" line);
 * /dev/full as stdout the same; a closed pipe on stdout gives "Broken pipe", exit 1. */
START_TEST(writes_to_devices_and_closed_pipes_are_checked)
{
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    struct dg_model model = {0};
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    dg_model_init_glorot(&model, 7);
    char model_path[512], test_csv[1024], err[512];
    in_dir(model_path, sizeof model_path, "m.dgt");
    ck_assert_int_eq(dg_model_save(model_path, &model, "seed=7\n"), DG_OK);
    dg_model_free(&model);
    const char *root = getenv("DIGITS_SOURCE_DIR");
    snprintf(test_csv, sizeof test_csv, "%s/data/sample/test.csv.gz", root ? root : ".");
    in_dir(err, sizeof err, "stderr");
    struct stat before, after;
    ck_assert_int_eq(stat("/dev/full", &before), 0);
    ck_assert(S_ISCHR(before.st_mode));
    ck_assert_int_eq(run("predict -m m.dgt %s -o /dev/full --device cpu --threads 1", test_csv,
                         NULL),
                     1);
    dg_test_expect_in(err, "/dev/full: write failed: No space left on device");
    char *text = dg_test_slurp(err);
    ck_assert_ptr_null(strstr(text, "wrote"));
    free(text);
    ck_assert_int_eq(stat("/dev/full", &after), 0);
    ck_assert(S_ISCHR(after.st_mode) && after.st_rdev == before.st_rdev);
    /* the model file too, and --probs to /dev/full with a good -o: neither is kept */
    ck_assert_int_eq(run("predict -m m.dgt %s -o sub.csv --probs /dev/full --device cpu", test_csv,
                         NULL),
                     1);
    char sub[512];
    in_dir(sub, sizeof sub, "sub.csv");
    ck_assert(access(sub, F_OK) != 0);
    /* stdout redirected to /dev/full */
    char command[2048];
    snprintf(command, sizeof command,
             "cd '%s' && '%s' predict -m m.dgt '%s' --device cpu >/dev/full 2>stderr", dir,
             dg_test_bin(), test_csv);
    int status = system(command);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 1);
    dg_test_expect_in(err, "stdout: write failed: No space left on device");
    /* a pipe whose reader is gone */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        FILE *log = freopen(err, "w", stderr);
        (void)log;
        execl(dg_test_bin(), dg_test_bin(), "predict", "-m", model_path, test_csv, "--device",
              "cpu", (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    close(fds[1]);
    int child;
    ck_assert_int_eq(waitpid(pid, &child, 0), pid);
    ck_assert_msg(WIFEXITED(child), "digits died of signal %d", WTERMSIG(child));
    ck_assert_int_eq(WEXITSTATUS(child), 1);
    dg_test_expect_in(err, "stdout: write failed: Broken pipe");
}
END_TEST

/* A model file with a NaN (loop 0) or +Inf (loop 1) weight and a valid CRC, written by the
 * library's writer: predict, eval, info and compare refuse it with exit 2 and a message naming
 * the tensor and the index, and write nothing. Before, predict scored it (exit 0, every row
 * label 0) and compare passed it (ReLU's max turns a NaN in conv1 into 0). */
START_TEST(commands_refuse_non_finite_weights)
{
    const float value = _i == 0 ? NAN : INFINITY;
    const char *name = _i == 0 ? "NaN" : "+Inf";
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    struct dg_model model = {0};
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    dg_model_init_glorot(&model, 7);
    model.params[model.layers[0].weight_offset + 3] = value;
    char model_path[512], test_csv[1024], train_csv[1024], err[512], want[128];
    in_dir(model_path, sizeof model_path, "bad.dgt");
    ck_assert_int_eq(dg_model_save(model_path, &model, "seed=7\n"), DG_OK);
    dg_model_free(&model);
    const char *root = getenv("DIGITS_SOURCE_DIR");
    snprintf(test_csv, sizeof test_csv, "%s/data/sample/test.csv.gz", root ? root : ".");
    snprintf(train_csv, sizeof train_csv, "%s/data/sample/train.csv.gz", root ? root : ".");
    in_dir(err, sizeof err, "stderr");
    snprintf(want, sizeof want, "bad.dgt: non-finite value in the weights: conv1.weight[3] is %s",
             name);
    ck_assert_int_eq(run("predict -m bad.dgt %s -o sub.csv --device cpu --threads 1", test_csv,
                         NULL),
                     2);
    dg_test_expect_in(err, want);
    ck_assert_int_eq(run("eval -m bad.dgt %s --device cpu --threads 1", train_csv, NULL), 2);
    dg_test_expect_in(err, want);
    ck_assert_int_eq(run("info --model=bad.dgt", NULL, NULL), 2);
    dg_test_expect_in(err, want);
    ck_assert_int_eq(run("compare --model bad.dgt --device cpu --threads 1 --batch 8", NULL,
                         NULL),
                     2);
    dg_test_expect_in(err, want);
    const char *left[] = {"bad.dgt", "stdout", "stderr"};
    ck_assert_int_eq(stray_files(left, 3), 0);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("io");
    TCase *tc = tcase_create("io");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, new_outputs_follow_the_umask);
    tcase_add_test(tc, a_replaced_output_keeps_its_mode);
    tcase_add_test(tc, finish_then_commit_or_abort);
    tcase_add_test(tc, predict_writes_both_outputs_or_neither);
    tcase_add_test(tc, writes_to_devices_and_closed_pipes_are_checked);
    tcase_add_loop_test(tc, commands_refuse_non_finite_weights, 0, 2);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
