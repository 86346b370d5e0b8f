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

#include "cli_util.h"
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

/* The last lines of a long output (Check limits the size of a failure message). */
static const char *tail_of(const char *text)
{
    size_t n = strlen(text);
    return n > 2000 ? text + n - 2000 : text;
}

static void expect_success(int code, const char *out_path, const char *err_path)
{
    if (code == 0)
        return;
    char *out = dg_test_slurp(out_path);
    char *err = dg_test_slurp(err_path);
    ck_abort_msg("compare exited %d; stderr: %s; its output ends:\n%s", code, err, tail_of(out));
}

START_TEST(cpu_against_itself_passes)
{
    char dir[] = "/tmp/digits-compare-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char out[512], err[512];
    const char *root = getenv("DIGITS_SOURCE_DIR");
    int code = dg_test_run_digits(dir, out, err,
                                  "compare --device cpu --candidate-threads 1 --batch 7 "
                                  "--steps 3 --data %s/data/sample/train.csv.gz",
                                  root ? root : ".");
    expect_success(code, out, err);
    dg_test_expect_in(out, "conv2      output");
    dg_test_expect_in(out, "conv1      grad_w");
    dg_test_expect_in(out, "dense2     grad_b");
    dg_test_expect_in(out, "final weights after 3 steps");
    dg_test_expect_in(out, "PASS: 0 comparisons outside tolerance");
    char *text = dg_test_slurp(out);
    ck_assert_ptr_null(strstr(text, "FAIL"));
    free(text);
    /* synthetic data and no augmentation also work */
    code = dg_test_run_digits(dir, out, err, "compare --device cpu --batch 5 --no-augment");
    expect_success(code, out, err);
    dg_test_expect_in(out, "synthetic");
    ck_assert_int_eq(dg_test_run_digits(dir, out, err, "compare --steps -1"), 2);
    dg_test_expect_in(err, "--steps expects an integer");
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
    return dg_test_run_suite(suite);
}
