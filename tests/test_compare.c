/* The comparison helpers (tolerances, worst index, NMSE, non-finite values), the bounds'
 * reasoning checked on real arithmetic (include/digits/compare.h), and the compare machinery
 * (dg_compare_backends, what `digits compare` prints) against candidates that are right (the
 * CPU itself, the CPU with other convolution algorithms) and deliberately wrong (a test-only
 * backend that nudges one op, writes a NaN or rounds its products' inputs to TF32 / bf16:
 * tests/support/perturbed_backend.h). `digits compare --device cpu` runs end to end too. The
 * CUDA candidate is exercised by scripts/gpu-check on a machine with a GPU. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli_util.h"
#include "cpu/cpu.h"
#include "digits/compare.h"
#include "digits/data.h"
#include "digits/model.h"
#include "perturbed_backend.h"
#include "test_util.h"

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

START_TEST(normwise_and_nmse_tolerance)
{
    float ref[3] = {10.0f, 0.0f, -5.0f};
    float cand[3] = {10.0f, 4.9e-4f, -5.0f};
    struct dg_diff d;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward_fp32, &d); /* bound 5e-5 * 10 = 5e-4 */
    ck_assert(d.pass);
    ck_assert_uint_eq(d.worst, 1);
    cand[1] = 5.1e-4f;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward_fp32, &d);
    ck_assert(!d.pass);
    ck_assert_uint_eq(d.failures, 1);
    /* the TF32 bound: 1.5e-3 * 10 = 0.015 */
    cand[1] = 0.0149f;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward_tf32, &d);
    ck_assert(d.pass);
    cand[1] = 0.0151f;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward_tf32, &d);
    ck_assert(!d.pass);
    cand[1] = 0.011f;
    dg_diff_compute(cand, ref, 3, &dg_tol_backward_tf32, &d);
    ck_assert(fabs(d.nmse - (0.011 * 0.011) / 125.0) < 1e-9);
    /* NMSE: 0.011^2 / 125 ~ 9.7e-7 is within 1e-6; 0.02^2 / 125 is not */
    dg_diff_compute(cand, ref, 3, &dg_tol_weights, &d);
    ck_assert(d.pass);
    cand[1] = 0.02f;
    dg_diff_compute(cand, ref, 3, &dg_tol_weights, &d);
    ck_assert(!d.pass);
}
END_TEST

/* Any NaN or infinity fails, on either side, for every kind of tolerance: a NaN in the
 * candidate only, in the reference only, on both sides at the same index, +Inf on both sides,
 * -Inf against +Inf. (Before, only a non-finite candidate with a finite reference failed.) */
START_TEST(nonfinite_on_either_side_fails)
{
    static const struct {
        const char *what;
        float cand, ref;
    } cases[] = {
        {"NaN in the candidate only", NAN, 1.0f},
        {"NaN in the reference only", 1.0f, NAN},
        {"NaN on both sides", NAN, NAN},
        {"+Inf on both sides", INFINITY, INFINITY},
        {"-Inf against +Inf", -INFINITY, INFINITY},
    };
    const struct dg_tolerance *tols[] = {&dg_tol_forward, &dg_tol_exact, &dg_tol_backward_fp32,
                                         &dg_tol_backward_tf32, &dg_tol_weights};
    const char *tol_names[] = {"elementwise (forward)", "elementwise (exact)",
                               "normwise (FP32 backward)", "normwise (TF32)", "NMSE (weights)"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t t = 0; t < sizeof tols / sizeof tols[0]; t++) {
            float ref[5] = {0.5f, -2.0f, 3.0f, 0.25f, 1.0f};
            float cand[5] = {0.5f, -2.0f, 3.0f, 0.25f, 1.0f};
            cand[2] = cases[c].cand;
            ref[2] = cases[c].ref;
            struct dg_diff d;
            dg_diff_compute(cand, ref, 5, tols[t], &d);
            ck_assert_msg(!d.pass && d.nonfinite, "%s passed with the %s tolerance", cases[c].what,
                          tol_names[t]);
            ck_assert_msg(d.worst == 2, "%s, %s: worst %zu, not 2", cases[c].what, tol_names[t],
                          d.worst);
            ck_assert_msg(d.failures >= 1, "%s, %s: no failure counted", cases[c].what,
                          tol_names[t]);
            ck_assert(isinf(d.max_abs));
        }
    /* a non-finite value later than a large finite difference is still the worst */
    float ref[3] = {0.0f, 1.0f, 1.0f};
    float cand[3] = {100.0f, 1.0f, NAN};
    struct dg_diff d;
    dg_diff_compute(cand, ref, 3, &dg_tol_forward, &d);
    ck_assert(!d.pass && d.nonfinite);
    ck_assert_uint_eq(d.worst, 2);
    ck_assert_uint_eq(d.failures, 2);
}
END_TEST

/* ---- the bounds against real arithmetic ---- */

enum summation { SEQUENTIAL, BLOCKED };

/* sum_k a[k * sa] b[k * sb] in FP32 with the inputs rounded to `bits` mantissa bits (23: none),
 * summed sequentially or in blocks of 32 (as BLAS and GPU kernels do). */
static float dot(const float *a, size_t sa, const float *b, size_t sb, size_t k, int bits,
                 int toward_zero, enum summation order)
{
    float total = 0.0f;
    size_t block = order == SEQUENTIAL ? k : 32;
    for (size_t start = 0; start < k; start += block) {
        float s = 0.0f;
        for (size_t i = start; i < k && i < start + block; i++) {
            float x = dg_test_round_mantissa(a[i * sa], bits, toward_zero);
            float y = dg_test_round_mantissa(b[i * sb], bits, toward_zero);
            s += x * y;
        }
        total += s;
    }
    return total;
}

struct product {
    const char *what;
    const float *a, *b;
    size_t a_row, a_k, b_k, b_col; /* C[m][n] = sum_k a[m a_row + k a_k] b[k b_k + n b_col] */
    size_t m, n, k;
};

/* C computed with the given arithmetic against C in FP32 summed sequentially (the other side
 * of a comparison): returns the normwise error max |c - ref| / max |ref|; pass_fp32 and
 * pass_tf32 say whether it is within the FP32 and the TF32 backward bounds. */
static double normwise_error(const struct product *p, int bits, int toward_zero,
                             enum summation order, int *pass_fp32, int *pass_tf32)
{
    size_t count = p->m * p->n;
    float *c = dg_test_floats(count), *ref = dg_test_floats(count);
    double ref_max = 0.0;
    for (size_t i = 0; i < p->m; i++)
        for (size_t j = 0; j < p->n; j++) {
            const float *a = p->a + i * p->a_row, *b = p->b + j * p->b_col;
            ref[i * p->n + j] = dot(a, p->a_k, b, p->b_k, p->k, 23, 0, SEQUENTIAL);
            c[i * p->n + j] = dot(a, p->a_k, b, p->b_k, p->k, bits, toward_zero, order);
            ref_max = fmax(ref_max, fabs(ref[i * p->n + j]));
        }
    struct dg_diff d;
    dg_diff_compute(c, ref, count, &dg_tol_backward_fp32, &d);
    *pass_fp32 = d.pass;
    dg_diff_compute(c, ref, count, &dg_tol_backward_tf32, &d);
    *pass_tf32 = d.pass;
    free(c);
    free(ref);
    return d.max_abs / ref_max;
}

/* For each product: FP32 with another summation order passes the FP32 bound with a margin of
 * 5 at least; inputs rounded to TF32 (to nearest or truncated) fail the FP32 bound and pass
 * the TF32 bound; inputs rounded to bf16 fail the TF32 bound. */
static void check_bounds(const struct product *p)
{
    int fp32_ok, tf32_ok;
    double fp32 = normwise_error(p, 23, 0, BLOCKED, &fp32_ok, &tf32_ok);
    printf("%-36s K=%-6zu FP32 blocked %.2g (bound %.2g)", p->what, p->k, fp32,
           dg_tol_backward_fp32.rtol);
    ck_assert_msg(fp32_ok && fp32 * 5.0 <= dg_tol_backward_fp32.rtol,
                  "%s: FP32 in another order %.3g, not 5x within %.3g", p->what, fp32,
                  dg_tol_backward_fp32.rtol);
    static const struct {
        const char *name;
        int bits, toward_zero;
    } kinds[] = {{"TF32 nearest", 10, 0}, {"TF32 truncated", 10, 1}};
    for (int t = 0; t < 2; t++) {
        double e =
            normwise_error(p, kinds[t].bits, kinds[t].toward_zero, BLOCKED, &fp32_ok, &tf32_ok);
        printf(", %s %.2g", kinds[t].name, e);
        ck_assert_msg(!fp32_ok, "%s: %s inputs pass the FP32 bound (error %.3g)", p->what,
                      kinds[t].name, e);
        ck_assert_msg(tf32_ok, "%s: %s inputs fail the TF32 bound (error %.3g, bound %.3g)",
                      p->what, kinds[t].name, e, dg_tol_backward_tf32.rtol);
    }
    double bf16 = normwise_error(p, 7, 0, BLOCKED, &fp32_ok, &tf32_ok);
    printf(", bf16 nearest %.2g (TF32 bound %.2g)\n", bf16, dg_tol_backward_tf32.rtol);
    ck_assert_msg(!tf32_ok, "%s: bf16 inputs pass the TF32 bound (error %.3g)", p->what, bf16);
}

START_TEST(bounds_separate_fp32_tf32_bf16)
{
    struct dg_test_rng rng = {9009};
    /* dense1 forward, K = 3136: x after ReLU and dropout (half zeros), Glorot weights */
    const size_t batch = 86, in = 3136, out = 64;
    float *x = dg_test_floats(batch * in), *w = dg_test_floats(in * out);
    for (size_t i = 0; i < batch * in; i++)
        x[i] = dg_test_uniform(&rng) < 0.5 ? 0.0f : (float)(dg_test_uniform(&rng) * 2.0 / 0.75);
    float glorot = (float)sqrt(6.0 / (3136.0 + 256.0));
    dg_test_fill(&rng, w, in * out, -glorot, glorot);
    struct product dense1 = {"dense1 forward y = x w", x, w, in, 1, out, 1, batch, out, in};
    check_bounds(&dense1);

    /* conv2's weight gradient, K = 86 * 28 * 28 = 67,424 products per weight: the input
     * (conv1's ReLU output) times the output gradient (half masked by the ReLU) */
    const size_t k = 86 * 28 * 28, rows = 32, cols = 8;
    float *act = dg_test_floats(k * rows), *grad = dg_test_floats(k * cols);
    for (size_t i = 0; i < k * rows; i++)
        act[i] = dg_test_uniform(&rng) < 0.5 ? 0.0f : (float)dg_test_uniform(&rng);
    for (size_t i = 0; i < k * cols; i++)
        grad[i] = dg_test_uniform(&rng) < 0.5 ? 0.0f
                                              : (float)((2.0 * dg_test_uniform(&rng) - 1.0) * 1e-3);
    struct product conv2 = {
        "conv2 weight gradient dw = x^T dy", act, grad, 1, rows, cols, 1, rows, cols, k};
    check_bounds(&conv2);
    free(x), free(w), free(act), free(grad);
}
END_TEST

/* ---- the compare machinery ---- */

static struct dg_model model;
static struct dg_dataset dataset;

static void load_fixture(void)
{
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    dg_model_init_glorot(&model, 42);
    ck_assert_msg(dg_dataset_load(dg_test_sample_path(), NULL, NULL, &dataset) == DG_OK, "%s",
                  dg_error_message());
}

static void free_fixture(void)
{
    dg_dataset_free(&dataset);
    dg_model_free(&model);
}

static int sanitized(void)
{
    const char *s = getenv("DIGITS_TEST_SANITIZED");
    return s && *s && strcmp(s, "0") != 0;
}

/* Runs the comparison; returns its printed table (malloc) and the failure count. */
static char *run_compare_math(struct dg_backend *ref, struct dg_backend *cand, long steps,
                              int tf32, int bf16, int *failures);

/* the optimizer of the steps of run_compare (zero: RMSprop) */
static struct dg_optimizer steps_optimizer;

static char *run_compare(struct dg_backend *ref, struct dg_backend *cand, long steps, int tf32,
                         int *failures)
{
    return run_compare_math(ref, cand, steps, tf32, 0, failures);
}

static char *run_compare_math(struct dg_backend *ref, struct dg_backend *cand, long steps,
                              int tf32, int bf16, int *failures)
{
    struct dg_compare_setup setup = {
        .model = &model,
        .dataset = &dataset,
        .data_name = "data/sample/train.csv.gz",
        .model_name = "Glorot",
        .batch = sanitized() ? 24 : 86,
        .steps = steps,
        .seed = 42,
        .augment = 1,
        .tf32 = tf32,
        .bf16 = bf16,
        .optimizer = steps_optimizer,
    };
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    ck_assert_ptr_nonnull(out);
    enum dg_status status = dg_compare_backends(ref, cand, &setup, out, failures);
    fclose(out);
    ck_assert_msg(status == DG_OK, "compare failed: %s", dg_error_message());
    printf("%s\n", text);
    return text;
}

/* The table's lines that end in a result: "layer tensor ... pass|FAIL". Fails the test unless
 * exactly the lines naming (layer, tensor) in `failing` (NULL-terminated pairs) say FAIL and
 * there is at least `min_rows` lines. */
static void expect_failing(const char *text, const char *const *failing, int min_rows)
{
    int rows = 0, fails_seen = 0, expected = 0;
    while (failing[2 * expected])
        expected++;
    const char *line = text;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        char layer[64], tensor[64];
        int is_fail = strstr(buf, "  FAIL") != NULL, is_pass = strstr(buf, "  pass") != NULL;
        if ((is_fail || is_pass) && sscanf(buf, "%63s %63s", layer, tensor) == 2 &&
            strcmp(layer, "loss") != 0) {
            rows++;
            int want_fail = 0;
            for (int i = 0; i < expected; i++)
                if (strcmp(layer, failing[2 * i]) == 0 && strcmp(tensor, failing[2 * i + 1]) == 0)
                    want_fail = 1;
            ck_assert_msg(want_fail == is_fail, "unexpected result: %s", buf);
            fails_seen += is_fail;
        }
        line = end ? end + 1 : NULL;
    }
    ck_assert_int_ge(rows, min_rows);
    ck_assert_int_eq(fails_seen, expected);
}

/* input + 11 layer outputs that are not pass-through + softmax output and grad + backward */
enum { ROWS = 30 };

static struct dg_backend *cpu_ref(void)
{
    return dg_test_cpu_backend(2, DG_CPU_KERNELS_AUTO);
}

static struct dg_backend *perturbed(const struct dg_perturbation *how)
{
    struct dg_backend *be = NULL;
    ck_assert_int_eq(
        dg_test_perturbed_backend(dg_test_cpu_backend(1, DG_CPU_KERNELS_AUTO), how, &be), DG_OK);
    return be;
}

/* FP32 in another summation order passes: the reference runs Winograd convolutions on 2
 * threads, the candidate im2col+sgemm (then the direct kernels) on 1, the batch op by op and
 * 20 training steps along the reference's trajectory (the --steps bounds). */
START_TEST(other_fp32_algorithms_pass)
{
    load_fixture();
    const enum dg_cpu_kernels kinds[] = {DG_CPU_KERNELS_GENERIC, DG_CPU_KERNELS_DIRECT};
    for (int i = 0; i < 2; i++) {
        struct dg_backend *ref = cpu_ref(), *cand = dg_test_cpu_backend(1, kinds[i]);
        int failures = -1;
        char *text = run_compare(ref, cand, sanitized() ? 3 : 20, 0, &failures);
        ck_assert_int_eq(failures, 0);
        const char *none[] = {NULL};
        expect_failing(text, none, ROWS);
        ck_assert_ptr_nonnull(strstr(text, "PASS: 0 comparisons outside tolerance"));
        ck_assert_ptr_nonnull(strstr(text, "weights after step"));
        free(text);
        dg_backend_destroy(cand);
        dg_backend_destroy(ref);
    }
    free_fixture();
}
END_TEST

/* One op of one layer nudged: exactly that line fails, every other line passes, the run
 * reports failures (digits compare exits 1 on them). */
START_TEST(a_nudged_op_fails_its_own_line)
{
    load_fixture();
    static const struct {
        struct dg_perturbation how;
        const char *layer, *tensor;
    } cases[] = {
        /* one element of conv2's output 1e-3 (relative) off: 10x the forward rtol */
        {{DG_PERTURB_CONV_FWD, 32, 32, 5, 1e-3, 1, 0, 0, 0}, "conv2", "output"},
        /* one element of conv3's input gradient 1e-3 off (normwise error 1e-3: 20x the bound) */
        {{DG_PERTURB_CONV_BWD_DATA, 32, 64, 3, 1e-3, 1, 0, 0, 0}, "conv3", "grad_in"},
        /* one weight gradient of conv1 off by 1e-3 */
        {{DG_PERTURB_CONV_BWD_FILTER, 1, 32, 5, 1e-3, 1, 0, 0, 0}, "conv1", "grad_w"},
        /* dense1's whole weight gradient 0.05% too large: within the old backward bound
         * (1e-3), 10x the FP32 bound */
        {{DG_PERTURB_DENSE_BWD_DW, 3136, 256, 0, 5e-4, 0, 0, 0, 0}, "dense1", "grad_w"},
        /* dense2's forward (the logits) */
        {{DG_PERTURB_DENSE_FWD, 256, 10, 0, 1e-3, 1, 0, 0, 0}, "dense2", "output"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct dg_backend *ref = cpu_ref(), *cand = perturbed(&cases[c].how);
        int failures = 0;
        char *text = run_compare(ref, cand, 0, 0, &failures);
        const char *failing[] = {cases[c].layer, cases[c].tensor, NULL};
        expect_failing(text, failing, ROWS);
        ck_assert_int_ge(failures, 1);
        ck_assert_ptr_nonnull(strstr(text, "\nFAIL: "));
        free(text);
        dg_backend_destroy(cand);
        dg_backend_destroy(ref);
    }
    free_fixture();
}
END_TEST

/* A NaN fails, in the candidate and in the reference. */
START_TEST(a_nan_fails_on_either_side)
{
    load_fixture();
    /* the candidate's logits: dense2's output fails, and so does the loss of the batch */
    struct dg_perturbation logits = {DG_PERTURB_DENSE_FWD, 256, 10, 0, 0.0, 1, 1, 0, 0};
    struct dg_backend *ref = cpu_ref(), *cand = perturbed(&logits);
    int failures = 0;
    char *text = run_compare(ref, cand, 0, 0, &failures);
    const char *failing[] = {"dense2", "output", NULL};
    expect_failing(text, failing, ROWS);
    ck_assert_ptr_nonnull(strstr(text, "not finite"));
    ck_assert_int_eq(failures, 2); /* dense2 output and the loss */
    const char *loss = strstr(text, "loss of the batch");
    ck_assert_ptr_nonnull(loss);
    ck_assert_ptr_nonnull(strstr(loss, "FAIL"));
    free(text);
    dg_backend_destroy(cand);
    dg_backend_destroy(ref);

    /* the reference's conv4 input gradient: a NaN there is a failure too */
    struct dg_perturbation grad = {DG_PERTURB_CONV_BWD_DATA, 64, 64, 3, 0.0, 1, 1, 0, 0};
    ref = perturbed(&grad);
    cand = cpu_ref();
    text = run_compare(ref, cand, 0, 0, &failures);
    const char *failing_ref[] = {"conv4", "grad_in", NULL};
    expect_failing(text, failing_ref, ROWS);
    ck_assert_int_eq(failures, 1);
    free(text);
    dg_backend_destroy(cand);
    dg_backend_destroy(ref);
    free_fixture();
}
END_TEST

/* The network's convolutions and dense layers computed from TF32 inputs: every one of their
 * lines fails the FP32 bounds (TF32 leaking into an FP32 run is caught) and passes the TF32
 * bounds; from bf16 inputs they fail the TF32 bounds. */
START_TEST(tf32_and_bf16_candidates)
{
    load_fixture();
    const char *matmul_lines[] = {"conv1",  "output",  "conv2",  "output",  "conv3",  "output",
                                  "conv4",  "output",  "dense1", "output",  "dense2", "output",
                                  "dense2", "grad_in", "dense2", "grad_w",  "dense1", "grad_in",
                                  "dense1", "grad_w",  "conv4",  "grad_in", "conv4",  "grad_w",
                                  "conv3",  "grad_in", "conv3",  "grad_w",  "conv2",  "grad_in",
                                  "conv2",  "grad_w",  "conv1",  "grad_w",  NULL};
    struct dg_perturbation tf32 = {DG_PERTURB_NONE, 0, 0, 0, 0.0, 0, 0, 10, 0};
    for (int toward_zero = 0; toward_zero < 2; toward_zero++) {
        tf32.toward_zero = toward_zero;
        struct dg_backend *ref = cpu_ref(), *cand = perturbed(&tf32);
        int failures = 0;
        char *text = run_compare(ref, cand, 0, 0, &failures);
        /* the FP32 bounds: every product fails except possibly bias gradients (plain FP32
         * sums of dy here, as on a GPU) */
        int caught = 0;
        for (int i = 0; matmul_lines[2 * i]; i++) {
            char needle[64];
            snprintf(needle, sizeof needle, "\n%-10s %-9s", matmul_lines[2 * i],
                     matmul_lines[2 * i + 1]);
            const char *at = strstr(text, needle);
            ck_assert_msg(at != NULL, "no line %s", needle + 1);
            const char *eol = strchr(at + 1, '\n');
            const char *fail = strstr(at + 1, "  FAIL");
            int failed = fail && (!eol || fail < eol);
            ck_assert_msg(failed, "TF32 inputs (%s) pass the FP32 bound on %s",
                          toward_zero ? "truncated" : "to nearest", needle + 1);
            caught++;
        }
        ck_assert_int_ge(failures, caught);
        free(text);
        /* the TF32 bounds: all pass, training steps included */
        text = run_compare(ref, cand, sanitized() ? 2 : 5, 1, &failures);
        const char *none[] = {NULL};
        expect_failing(text, none, ROWS);
        free(text);
        dg_backend_destroy(cand);
        dg_backend_destroy(ref);
    }
    struct dg_perturbation bf16 = {DG_PERTURB_NONE, 0, 0, 0, 0.0, 0, 0, 7, 0};
    struct dg_backend *ref = cpu_ref(), *cand = perturbed(&bf16);
    int failures = 0;
    char *text = run_compare(ref, cand, 0, 1, &failures);
    printf("bf16 inputs against the TF32 bounds: %d lines fail\n", failures);
    ck_assert_int_ge(failures, 6);
    free(text);
    dg_backend_destroy(cand);
    dg_backend_destroy(ref);
    free_fixture();
}
END_TEST

/* The CPU's --math bf16 (the portable emulation everywhere, AVX512-BF16 where the CPU has it)
 * as the candidate: it fails the FP32 bounds on the products (it did round to bf16) and passes
 * the bf16 bounds op by op and along 20 training steps; inputs rounded to 4 mantissa bits (an
 * 8x coarser rounding than bf16's) fail the bf16 bounds. */
START_TEST(bf16_candidate)
{
    load_fixture();
    for (int unit = 0; unit < 2; unit++) {
        struct dg_backend *cand = NULL;
        if (unit == 0) {
            cand = dg_test_cpu_backend(1, DG_CPU_KERNELS_AUTO);
            ck_assert_int_eq(dg_backend_cpu_set_bf16_portable(cand), DG_OK);
        } else {
            struct dg_backend_spec spec = {"cpu", 1, DG_MATH_BF16, 0, 0};
            if (dg_backend_open(&spec, NULL, 0, &cand) != DG_OK) {
                printf("SKIP the bf16 unit: %s\n", dg_error_message());
                continue;
            }
        }
        printf("-- candidate %s\n", cand->description);
        struct dg_backend *ref = cpu_ref();
        int failures = 0;
        char *text = run_compare_math(ref, cand, 0, 0, 0, &failures);
        printf("bf16 against the FP32 bounds: %d lines fail\n", failures);
        ck_assert_int_ge(failures, 16); /* 17 conv / dense lines; a bias gradient is a sum */
        free(text);
        text = run_compare_math(ref, cand, sanitized() ? 3 : 20, 0, 1, &failures);
        const char *none[] = {NULL};
        expect_failing(text, none, ROWS);
        free(text);
        dg_backend_destroy(cand);
        dg_backend_destroy(ref);
    }
    struct dg_perturbation coarse = {DG_PERTURB_NONE, 0, 0, 0, 0.0, 0, 0, 4, 0};
    struct dg_backend *ref = cpu_ref(), *cand = perturbed(&coarse);
    int failures = 0;
    char *text = run_compare_math(ref, cand, 0, 0, 1, &failures);
    printf("4-bit inputs against the bf16 bounds: %d lines fail\n", failures);
    ck_assert_int_ge(failures, 6);
    free(text);
    dg_backend_destroy(cand);
    dg_backend_destroy(ref);
    free_fixture();
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

/* The steps with each optimizer: the candidate's update is checked against the element math,
 * bit for bit, so one parameter nudged by 1e-6 (relative) after the update, far below any
 * weights bound, fails the step as one wrong update, named; a correct candidate passes. */
START_TEST(each_optimizer_steps_and_a_wrong_update_fails)
{
    load_fixture();
    static const struct {
        int kind, nesterov;
        const char *words;
    } cases[] = {
        {DG_OPTIMIZER_RMSPROP, 0, "(RMSprop lr 1e-3)"},
        {DG_OPTIMIZER_ADAM, 0, "(Adam lr 1e-3, betas 0.9 0.999, eps 1e-07)"},
        {DG_OPTIMIZER_SGD, 0, "(SGD lr 1e-3, momentum 0.9)"},
        {DG_OPTIMIZER_SGD, 1, "(SGD lr 1e-3, momentum 0.9, Nesterov)"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dg_optimizer_default(&steps_optimizer, cases[c].kind);
        steps_optimizer.nesterov = cases[c].nesterov;
        for (int wrong = 0; wrong < 2; wrong++) {
            struct dg_perturbation how = {wrong ? DG_PERTURB_UPDATE : DG_PERTURB_NONE,
                                          1000, 0, 0, 1e-6, 1, 0, 0, 0};
            struct dg_backend *ref = cpu_ref(), *cand = perturbed(&how);
            int failures = 0;
            char *text = run_compare(ref, cand, 2, 0, &failures);
            ck_assert_ptr_nonnull(strstr(text, cases[c].words));
            if (wrong) {
                ck_assert_int_eq(failures, 2);
                ck_assert_ptr_nonnull(
                    strstr(text, "1 WRONG  FAIL (first wrong update at parameter 1000)"));
            } else {
                ck_assert_int_eq(failures, 0);
                ck_assert_ptr_null(strstr(text, "WRONG"));
                ck_assert_ptr_nonnull(strstr(text, "    2 "));
            }
            free(text);
            dg_backend_destroy(cand);
            dg_backend_destroy(ref);
        }
    }
    memset(&steps_optimizer, 0, sizeof steps_optimizer);
    free_fixture();
}
END_TEST

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
    dg_test_expect_in(out, "weights after step 3, per layer");
    dg_test_expect_in(out, "PASS: 0 comparisons outside tolerance");
    char *text = dg_test_slurp(out);
    ck_assert_ptr_null(strstr(text, "FAIL"));
    free(text);
    /* synthetic data and no augmentation also work */
    code = dg_test_run_digits(dir, out, err, "compare --device cpu --batch 5 --no-augment");
    expect_success(code, out, err);
    dg_test_expect_in(out, "synthetic");
    /* the steps with Adam and with SGD */
    code = dg_test_run_digits(dir, out, err,
                              "compare --device cpu --batch 7 --steps 2 --optimizer sgd "
                              "--nesterov --net 8C5S2-B-16C3V-10");
    expect_success(code, out, err);
    dg_test_expect_in(out, "2 training steps (SGD lr 1e-3, momentum 0.9, Nesterov)");
    code = dg_test_run_digits(dir, out, err,
                              "compare --device cpu --batch 7 --steps 2 --optimizer adam "
                              "--net 8C5S2-B-16C3V-10");
    expect_success(code, out, err);
    dg_test_expect_in(out, "(biases: within 2 lr A(t) = 0.002, the most two Adam updates differ");
    ck_assert_int_eq(dg_test_run_digits(dir, out, err, "compare --optimizer adam"), 2);
    dg_test_expect_in(err, "--optimizer is the optimizer of --steps");
    ck_assert_int_eq(dg_test_run_digits(dir, out, err, "compare --steps 1 --nesterov"), 2);
    dg_test_expect_in(err, "--nesterov is for --optimizer sgd");
    ck_assert_int_eq(dg_test_run_digits(dir, out, err, "compare --steps 1 --optimizer nadam"), 2);
    dg_test_expect_in(err, "--optimizer expects rmsprop, adam or sgd, got 'nadam'");
    ck_assert_int_eq(dg_test_run_digits(dir, out, err, "compare --steps -1"), 2);
    dg_test_expect_in(err, "--steps expects an integer");
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("compare");
    TCase *tc = tcase_create("compare");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, elementwise_tolerance);
    tcase_add_test(tc, normwise_and_nmse_tolerance);
    tcase_add_test(tc, nonfinite_on_either_side_fails);
    tcase_add_test(tc, bounds_separate_fp32_tf32_bf16);
    tcase_add_test(tc, other_fp32_algorithms_pass);
    tcase_add_test(tc, a_nudged_op_fails_its_own_line);
    tcase_add_test(tc, a_nan_fails_on_either_side);
    tcase_add_test(tc, tf32_and_bf16_candidates);
    tcase_add_test(tc, bf16_candidate);
    tcase_add_test(tc, each_optimizer_steps_and_a_wrong_update_fails);
    tcase_add_test(tc, cpu_against_itself_passes);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
