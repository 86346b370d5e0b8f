/* The comparison helpers (tolerances, worst index, NMSE) and `digits compare` run with the
 * CPU as its own candidate, which must pass (the CUDA candidate is exercised by
 * scripts/gpu-check on a machine with a GPU). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "digits/compare.h"

START_TEST(elementwise_tolerance)
{
    float ref[4] = {1.0f, -2.0f, 0.0f, 100.0f};
    float same[4] = {1.0f, -2.0f, 0.0f, 100.0f};
    struct dg_diff d;
    dg_diff_compute(same, ref, 4, &dg_tol_forward, &d);
    ck_assert(d.pass);
    ck_assert(d.max_abs == 0.0 && d.nmse == 0.0 && d.failures == 0);
    /* 100 + 0.009 is within 1e-5 + 1e-4 * 100 = 0.01001; 0 + 2e-5 is not within 1e-5 */
    float cand[4] = {1.0f, -2.0f, 2e-5f, 100.009f};
    dg_diff_compute(cand, ref, 4, &dg_tol_forward, &d);
    ck_assert(!d.pass);
    ck_assert_uint_eq(d.failures, 1);
    ck_assert_uint_eq(d.worst, 3);
    ck_assert(fabs(d.max_abs - 0.009) < 1e-5);
    dg_diff_compute(cand, ref, 4, &dg_tol_exact, &d);
    ck_assert_uint_eq(d.failures, 2);
}
END_TEST

START_TEST(normwise_tolerance_and_nonfinite)
{
    float ref[3] = {10.0f, 0.0f, -5.0f};
    float cand[3] = {10.0f, 0.0099f, -5.0f};
    struct dg_diff d;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward, &d); /* bound 1e-3 * 10 = 0.01 */
    ck_assert(d.pass);
    ck_assert_uint_eq(d.worst, 1);
    cand[1] = 0.011f;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward, &d);
    ck_assert(!d.pass);
    ck_assert(fabs(d.nmse - (0.011 * 0.011) / 125.0) < 1e-9);
    /* NMSE: 0.011^2 / 125 ~ 9.7e-7 is within 1e-6; 0.02^2 / 125 is not */
    dg_diff_compute(cand, ref, 3, &dg_tol_weights, &d);
    ck_assert(d.pass);
    cand[1] = 0.02f;
    dg_diff_compute(cand, ref, 3, &dg_tol_weights, &d);
    ck_assert(!d.pass);
    cand[1] = NAN;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward, &d);
    ck_assert(!d.pass);
    ck_assert(d.nonfinite);
    ck_assert_uint_eq(d.worst, 1);
}
END_TEST

static int run_compare(const char *args, const char *out_path)
{
    char command[2048];
    const char *bin = getenv("DIGITS_BIN");
    snprintf(command, sizeof command, "'%s' compare %s >'%s' 2>&1", bin ? bin : "digits", args,
             out_path);
    int status = system(command);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    text[n] = '\0';
    fclose(fp);
    return text;
}

/* The last lines of a long output (Check limits the size of a failure message). */
static const char *tail_of(const char *text)
{
    size_t n = strlen(text);
    return n > 2000 ? text + n - 2000 : text;
}

START_TEST(cpu_against_itself_passes)
{
    char out[] = "/tmp/digits-compare-XXXXXX";
    int fd = mkstemp(out);
    ck_assert_int_ge(fd, 0);
    char args[1024];
    const char *root = getenv("DIGITS_SOURCE_DIR");
    snprintf(args, sizeof args,
             "--device cpu --candidate-threads 1 --batch 7 --steps 3 --data "
             "%s/data/sample/train.csv.gz",
             root ? root : ".");
    int code = run_compare(args, out);
    char *text = slurp(out);
    if (code != 0)
        ck_abort_msg("compare exited %d; its output ends:\n%s", code, tail_of(text));
    ck_assert_ptr_nonnull(strstr(text, "conv2      output"));
    ck_assert_ptr_nonnull(strstr(text, "conv1      grad_w"));
    ck_assert_ptr_nonnull(strstr(text, "dense2     grad_b"));
    ck_assert_ptr_nonnull(strstr(text, "final weights after 3 steps"));
    ck_assert_ptr_nonnull(strstr(text, "PASS: 0 comparisons outside tolerance"));
    ck_assert_ptr_null(strstr(text, "FAIL"));
    /* synthetic data and no augmentation also work */
    code = run_compare("--device cpu --batch 5 --no-augment", out);
    text = slurp(out);
    if (code != 0)
        ck_abort_msg("compare exited %d; its output ends:\n%s", code, tail_of(text));
    ck_assert_ptr_nonnull(strstr(text, "synthetic"));
    ck_assert_int_eq(run_compare("--steps -1", out), 2);
    remove(out);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("compare");
    TCase *tc = tcase_create("compare");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, elementwise_tolerance);
    tcase_add_test(tc, normwise_tolerance_and_nonfinite);
    tcase_add_test(tc, cpu_against_itself_passes);
    suite_add_tcase(suite, tc);
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
