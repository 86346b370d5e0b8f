/* Every op of the CUDA backend against the CPU backend (the fast path, itself checked against
 * the double reference by test_ops) on the same inputs: odd batch sizes, sizes that are not
 * multiples of the block size, pooling windows full of ties: the DG_OP_VS_CPU cases of the op
 * table (src/nn/op_cases.c), at network batch 86, never reduced. Tensors NCHW, row-major; conv
 * weights (out, in, k, k); dense weights (in, out).
 *
 * Tolerances (include/digits/compare.h, where they are derived): forward |gpu - cpu| <= 1e-5 +
 * 1e-4 |cpu| per element; backward (FP32) max |gpu - cpu| <= 5e-5 max |cpu|; loss sums rtol
 * 1e-5. Exact (bit for bit): ReLU backward, max-pool forward and backward, dropout, RMSprop,
 * Adam, SGD (the same element math under --fmad=false / -ffp-contract=off), batch assembly with and
 * without augmentation, and reruns of the deterministic backend. TF32 convolutions use the
 * normwise TF32 bound 1.5e-3 (forward and backward). bf16 (--math bf16) is checked against the
 * CPU's bf16 math on the same bf16 operands: the FP32 bounds plus, for cuDNN's bf16 results,
 * one bf16 rounding (conv_bf16). A failure here is a finding, not a
 * reason to loosen a bound (docs/DEVELOPING.md, "Tolerances").
 *
 * Exits 77 (skipped) when no CUDA device is usable. Runs without fork (a CUDA context does
 * not survive fork()). The first pairs of each comparison are printed as (gpu, cpu). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits/backend.h"
#include "digits/compare.h"
#include "cpu/cpu.h"
#include "math/bf16.h"
#include "nn/op_cases.h"
#include "test_util.h"

static struct dg_backend *cpu;
static struct dg_backend *gpu;          /* FP32, algorithms measured (cudnnFind) */
static struct dg_backend *gpu_det;      /* FP32, deterministic: heuristic algorithm order */
static struct dg_backend *gpu_tf32;     /* TF32 allowed */
static struct dg_backend *gpu_streamed; /* dataset budget of 1 byte: batches stream from host */
static struct dg_backend *gpu_bf16;     /* --math bf16 */
static struct dg_backend *cpu_bf16;     /* the CPU's bf16 math (its unit, else the portable one) */

static void check_ok(enum dg_status status)
{
    ck_assert_msg(status == DG_OK, "backend op failed: %s", dg_error_message());
}

/* ---- the cases: src/nn/op_cases.c (never reduced: this suite does not shrink) ---- */

struct case_list {
    struct dg_op_case at[DG_OP_MAX_CASES];
    int count;
};

/* CUDA against the CPU */
static struct case_list conv_cases, pool_cases, dense_cases, softmax_cases, relu_cases;
static struct case_list dropout_cases, rmsprop_cases, assemble_cases, bn_cases;
/* the deterministic backend's reruns; the algorithms chosen */
static struct case_list conv_rerun_cases, conv_algo_cases;

static void load_cases(struct case_list *list, enum dg_op_kind kind, unsigned want)
{
    list->count = dg_op_cases(kind, want, DG_OP_TEST_BATCH, 0, list->at, DG_OP_MAX_CASES);
    if (list->count <= 0) {
        fprintf(stderr, "gpu_ops: no op cases of kind %d: %s\n", (int)kind, dg_error_message());
        exit(EXIT_FAILURE);
    }
}

static void poison(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
}

/* Device copy of `host` (n floats); NaN-filled when host is NULL, so that an op that leaves an
 * output element unwritten fails its comparison. */
static float *dev_floats(struct dg_backend *be, const float *host, size_t n)
{
    void *p = NULL;
    check_ok(be->ops->alloc(be, n * sizeof(float), &p));
    if (host) {
        check_ok(be->ops->upload(be, p, host, n * sizeof(float)));
    } else {
        float *nan_fill = dg_test_floats(n);
        poison(nan_fill, n);
        check_ok(be->ops->upload(be, p, nan_fill, n * sizeof(float)));
        free(nan_fill);
    }
    return p;
}

static void *dev_bytes(struct dg_backend *be, const void *host, size_t bytes)
{
    void *p = NULL;
    check_ok(be->ops->alloc(be, bytes, &p));
    check_ok(be->ops->upload(be, p, host, bytes));
    return p;
}

static float *fetch(struct dg_backend *be, const float *dev, size_t n)
{
    float *host = dg_test_floats(n);
    check_ok(be->ops->download(be, host, dev, n * sizeof(float)));
    return host;
}

/* Compares gpu (candidate) with cpu (reference), prints the first pairs and the worst. */
static int agree(const char *what, const float *gpu_values, const float *cpu_values, size_t n,
                 const struct dg_tolerance *tol)
{
    struct dg_diff diff;
    dg_diff_compute(gpu_values, cpu_values, n, tol, &diff);
    printf("  %-28s n=%-8zu max_abs %.3g max_rel %.3g worst [%zu] (gpu %.9g, cpu %.9g) %s\n", what,
           n, diff.max_abs, diff.max_rel, diff.worst, (double)gpu_values[diff.worst],
           (double)cpu_values[diff.worst], diff.pass ? "pass" : "FAIL");
    printf("    first (gpu, cpu):");
    for (size_t i = 0; i < n && i < 3; i++)
        printf(" (%.9g, %.9g)", (double)gpu_values[i], (double)cpu_values[i]);
    printf("\n");
    return diff.pass;
}

/* Fetches a device tensor and compares it with the CPU's. */
static int agree_dev(const char *what, struct dg_backend *be, const float *dev,
                     const float *cpu_values, size_t n, const struct dg_tolerance *tol)
{
    float *host = fetch(be, dev, n);
    int pass = agree(what, host, cpu_values, n, tol);
    free(host);
    return pass;
}

/* ---- convolution ---- */

struct conv_case {
    int batch, cin, cout, h, w, k;
};

/* The inputs of one conv case, seeded: x and dy in [-1, 1), w within 1 / sqrt(fan-in), the
 * bias in [-0.5, 0.5). */
struct conv_inputs {
    size_t nx, ny, nw, nb;
    float *x, *w, *b, *dy;
};

static struct conv_inputs conv_inputs_make(const struct dg_conv_shape *s, uint64_t seed)
{
    struct conv_inputs in;
    size_t hw = (size_t)s->height * s->width;
    in.nx = (size_t)s->batch * s->in_channels * hw;
    in.ny = (size_t)s->batch * s->out_channels * dg_conv_out_height(s) * dg_conv_out_width(s);
    in.nw = (size_t)s->out_channels * s->in_channels * s->kernel * s->kernel;
    in.nb = (size_t)s->out_channels;
    struct dg_test_rng rng = {seed};
    in.x = dg_test_floats(in.nx), in.w = dg_test_floats(in.nw), in.b = dg_test_floats(in.nb);
    in.dy = dg_test_floats(in.ny);
    float scale = 1.0f / sqrtf((float)(s->in_channels * s->kernel * s->kernel));
    dg_test_fill(&rng, in.x, in.nx, -1.0f, 1.0f);
    dg_test_fill(&rng, in.w, in.nw, -scale, scale);
    dg_test_fill(&rng, in.b, in.nb, -0.5f, 0.5f);
    dg_test_fill(&rng, in.dy, in.ny, -1.0f, 1.0f);
    return in;
}

static void conv_inputs_free(struct conv_inputs *in)
{
    free(in->x), free(in->w), free(in->b), free(in->dy);
}

/* Runs one conv case on `be` and compares every output with the CPU backend. */
static void conv_compare(struct dg_backend *be, const struct dg_op_case *the_case,
                         const struct dg_tolerance *fwd_tol, const struct dg_tolerance *bwd_tol,
                         uint64_t seed)
{
    const struct dg_conv_shape shape = the_case->conv;
    const struct conv_case cc = {shape.batch,  shape.in_channels, shape.out_channels,
                                 shape.height, shape.width,       shape.kernel};
    const struct conv_case *c = &cc;
    struct conv_inputs in = conv_inputs_make(&shape, seed);
    size_t nx = in.nx, ny = in.ny, nw = in.nw, nb = in.nb;
    float *x = in.x, *w = in.w, *b = in.b, *dy = in.dy;
    printf("conv \"%s\": %d x %d -> %d, %dx%d, k %d, stride %d%s on %s\n", the_case->name,
           c->batch, c->cin, c->cout, c->h, c->w, c->k, dg_conv_stride(&shape),
           shape.valid ? ", valid" : "", be->description);

    float *y = dg_test_floats(ny), *y_relu = dg_test_floats(ny), *dx = dg_test_floats(nx);
    float *dw = dg_test_floats(nw), *db = dg_test_floats(nb);
    void *cpu_plan = NULL;
    check_ok(cpu->ops->conv_plan_create(cpu, &shape, &cpu_plan));
    check_ok(cpu->ops->conv_fwd(cpu, cpu_plan, x, w, b, y, 0));
    check_ok(cpu->ops->conv_fwd(cpu, cpu_plan, x, w, b, y_relu, 1));
    check_ok(cpu->ops->conv_bwd_data(cpu, cpu_plan, dy, w, dx));
    check_ok(cpu->ops->conv_bwd_filter(cpu, cpu_plan, x, dy, dw, db));
    cpu->ops->conv_plan_free(cpu, cpu_plan);

    float *d_x = dev_floats(be, x, nx), *d_w = dev_floats(be, w, nw), *d_b = dev_floats(be, b, nb);
    float *d_dy = dev_floats(be, dy, ny), *d_y = dev_floats(be, NULL, ny);
    float *d_dx = dev_floats(be, NULL, nx), *d_dw = dev_floats(be, NULL, nw);
    float *d_db = dev_floats(be, NULL, nb);
    void *plan = NULL;
    check_ok(be->ops->conv_plan_create(be, &shape, &plan));
    check_ok(be->ops->conv_fwd(be, plan, d_x, d_w, d_b, d_y, 0));
    ck_assert(agree_dev("conv fwd", be, d_y, y, ny, fwd_tol));
    check_ok(be->ops->conv_fwd(be, plan, d_x, d_w, d_b, d_y, 1));
    ck_assert(agree_dev("conv fwd relu", be, d_y, y_relu, ny, fwd_tol));
    check_ok(be->ops->conv_bwd_data(be, plan, d_dy, d_w, d_dx));
    ck_assert(agree_dev("conv bwd data", be, d_dx, dx, nx, bwd_tol));
    check_ok(be->ops->conv_bwd_filter(be, plan, d_x, d_dy, d_dw, d_db));
    ck_assert(agree_dev("conv bwd filter dw", be, d_dw, dw, nw, bwd_tol));
    ck_assert(agree_dev("conv bwd filter db", be, d_db, db, nb, bwd_tol));
    be->ops->conv_plan_free(be, plan);

    float *bufs[] = {d_x, d_w, d_b, d_dy, d_y, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        be->ops->free(be, bufs[i]);
    conv_inputs_free(&in);
    free(y), free(y_relu), free(dx), free(dw), free(db);
}

START_TEST(conv_fp32_measured)
{
    conv_compare(gpu, &conv_cases.at[_i], &dg_tol_forward, &dg_tol_backward_fp32,
                 100 + (uint64_t)_i);
}
END_TEST

START_TEST(conv_fp32_deterministic)
{
    conv_compare(gpu_det, &conv_cases.at[_i], &dg_tol_forward, &dg_tol_backward_fp32,
                 200 + (uint64_t)_i);
}
END_TEST

START_TEST(conv_tf32)
{
    conv_compare(gpu_tf32, &conv_cases.at[_i], &dg_tol_forward_tf32, &dg_tol_backward_tf32,
                 300 + (uint64_t)_i);
}
END_TEST

/* ---- bf16 (--math bf16) against the CPU's bf16 math on the same bf16 operands ----
 *
 * Both sides round the operands with dg_bf16_round (src/math/bf16.h) and sum their products
 * (exact in float32) in float32, so they differ only by summation order (the FP32 bounds),
 * except that cuDNN's bf16 configuration stores its results in bf16: each convolution output
 * (y before the bias, dx, dw) is then one rounding of the float32 sum, at most 2^-8 of its
 * size (unit roundoff of bf16's 8 significant bits). So, per element:
 *   |gpu - cpu| <= 2^-8 |cpu| + the FP32 bound,
 * and every such GPU value is a bf16 value (its low 16 bits zero). */
static int agree_bf16_rounded(const char *what, struct dg_backend *be, const float *dev,
                              const float *cpu_values, size_t n, const struct dg_tolerance *fp32)
{
    float *g = fetch(be, dev, n);
    double ref_max = 0.0;
    for (size_t i = 0; i < n; i++)
        ref_max = fmax(ref_max, fabs((double)cpu_values[i]));
    size_t bad = 0, not_bf16 = 0, worst = 0;
    double worst_excess = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double c = cpu_values[i], d = fabs((double)g[i] - c);
        double fp32_part = fp32->kind == DG_TOL_ELEMENTWISE ? fp32->atol + fp32->rtol * fabs(c)
                                                            : fp32->atol + fp32->rtol * ref_max;
        double bound = ldexp(fabs(c), -8) + fp32_part;
        if (!(d <= bound))
            bad++;
        if (dg_bf16_value(g[i]) != g[i] || !isfinite(g[i]))
            not_bf16++;
        if (d - bound > worst_excess) {
            worst_excess = d - bound;
            worst = i;
        }
    }
    printf("  %-28s n=%-8zu outside %zu, not bf16 %zu, worst [%zu] (gpu %.9g, cpu %.9g) %s\n", what,
           n, bad, not_bf16, worst, (double)g[worst], (double)cpu_values[worst],
           bad || not_bf16 ? "FAIL" : "pass");
    free(g);
    return !bad && !not_bf16;
}

START_TEST(conv_bf16)
{
    const struct dg_conv_shape shape = conv_cases.at[_i].conv;
    if (!dg_conv_is_same_stride1(&shape)) {
        /* strided and "valid" convolutions stay float32 under --math bf16, on both backends */
        printf("conv bf16 \"%s\": strided or valid, float32 on both backends\n",
               conv_cases.at[_i].name);
        conv_compare(gpu_bf16, &conv_cases.at[_i], &dg_tol_forward, &dg_tol_backward_fp32,
                     400 + (uint64_t)_i);
        return;
    }
    struct conv_inputs in = conv_inputs_make(&shape, 400 + (uint64_t)_i);
    size_t nx = in.nx, ny = in.ny, nw = in.nw, nb = in.nb;
    float *x = in.x, *w = in.w, *b = in.b, *dy = in.dy;
    float *zero_b = dg_test_floats(nb); /* zeroed */
    printf("conv bf16 \"%s\": %d x %d -> %d, %dx%d, k %d\n", conv_cases.at[_i].name, shape.batch,
           shape.in_channels, shape.out_channels, shape.height, shape.width, shape.kernel);

    float *y = dg_test_floats(ny), *y_relu = dg_test_floats(ny), *dx = dg_test_floats(nx);
    float *dw = dg_test_floats(nw), *db = dg_test_floats(nb);
    void *cpu_plan = NULL;
    check_ok(cpu_bf16->ops->conv_plan_create(cpu_bf16, &shape, &cpu_plan));
    check_ok(cpu_bf16->ops->conv_fwd(cpu_bf16, cpu_plan, x, w, zero_b, y, 0));
    check_ok(cpu_bf16->ops->conv_fwd(cpu_bf16, cpu_plan, x, w, b, y_relu, 1));
    check_ok(cpu_bf16->ops->conv_bwd_data(cpu_bf16, cpu_plan, dy, w, dx));
    check_ok(cpu_bf16->ops->conv_bwd_filter(cpu_bf16, cpu_plan, x, dy, dw, db));
    cpu_bf16->ops->conv_plan_free(cpu_bf16, cpu_plan);

    struct dg_backend *be = gpu_bf16;
    float *d_x = dev_floats(be, x, nx), *d_w = dev_floats(be, w, nw), *d_b = dev_floats(be, b, nb);
    float *d_zero_b = dev_floats(be, zero_b, nb), *d_dy = dev_floats(be, dy, ny);
    float *d_y = dev_floats(be, NULL, ny), *d_dx = dev_floats(be, NULL, nx);
    float *d_dw = dev_floats(be, NULL, nw), *d_db = dev_floats(be, NULL, nb);
    void *plan = NULL;
    check_ok(be->ops->conv_plan_create(be, &shape, &plan));
    check_ok(be->ops->conv_fwd(be, plan, d_x, d_w, d_zero_b, d_y, 0));
    ck_assert(agree_bf16_rounded("conv fwd (bias 0)", be, d_y, y, ny, &dg_tol_forward));
    /* with the bias and ReLU: (bf16 sum) + bias, so the rounding is of the sum, not of y */
    check_ok(be->ops->conv_fwd(be, plan, d_x, d_w, d_b, d_y, 1));
    ck_assert(agree_dev("conv fwd relu", be, d_y, y_relu, ny, &dg_tol_forward_bf16));
    check_ok(be->ops->conv_bwd_data(be, plan, d_dy, d_w, d_dx));
    ck_assert(agree_bf16_rounded("conv bwd data", be, d_dx, dx, nx, &dg_tol_backward_fp32));
    check_ok(be->ops->conv_bwd_filter(be, plan, d_x, d_dy, d_dw, d_db));
    ck_assert(agree_bf16_rounded("conv bwd filter dw", be, d_dw, dw, nw, &dg_tol_backward_fp32));
    /* the bias gradient sums float32 dy on both sides */
    ck_assert(agree_dev("conv bwd filter db", be, d_db, db, nb, &dg_tol_backward_fp32));
    be->ops->conv_plan_free(be, plan);

    float *bufs[] = {d_x, d_w, d_b, d_zero_b, d_dy, d_y, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        be->ops->free(be, bufs[i]);
    conv_inputs_free(&in);
    free(zero_b), free(y), free(y_relu), free(dx), free(dw), free(db);
}
END_TEST

/* The deterministic backend gives the same bits on a rerun, with a new plan, and on a second
 * backend instance (as a new process would). */
START_TEST(conv_deterministic_reruns)
{
    const struct dg_conv_shape shape = conv_rerun_cases.at[_i].conv;
    size_t nx = (size_t)shape.batch * shape.in_channels * shape.height * shape.width;
    size_t ny = (size_t)shape.batch * shape.out_channels * dg_conv_out_height(&shape) *
                dg_conv_out_width(&shape);
    size_t nw = (size_t)shape.out_channels * shape.in_channels * shape.kernel * shape.kernel;
    size_t nb = (size_t)shape.out_channels;
    struct dg_test_rng rng = {400 + (uint64_t)_i};
    float *x = dg_test_floats(nx), *dy = dg_test_floats(ny), *w = dg_test_floats(nw);
    dg_test_fill(&rng, x, nx, -1.0f, 1.0f);
    dg_test_fill(&rng, dy, ny, -1.0f, 1.0f);
    dg_test_fill(&rng, w, nw, -0.05f, 0.05f);
    printf("deterministic reruns: conv \"%s\"\n", conv_rerun_cases.at[_i].name);
    struct dg_cuda_options options = {0, DG_MATH_FP32, 1, 0};
    struct dg_backend *second = NULL;
    check_ok(dg_backend_cuda_create(&options, &second));
    struct dg_backend *runs[3] = {gpu_det, gpu_det, second};
    float *dw[3], *dx[3];
    for (int r = 0; r < 3; r++) {
        struct dg_backend *be = runs[r];
        float *d_x = dev_floats(be, x, nx), *d_dy = dev_floats(be, dy, ny);
        float *d_w = dev_floats(be, w, nw), *d_dw = dev_floats(be, NULL, nw);
        float *d_dx = dev_floats(be, NULL, nx), *d_db = dev_floats(be, NULL, nb);
        void *plan = NULL;
        check_ok(be->ops->conv_plan_create(be, &shape, &plan));
        check_ok(be->ops->conv_bwd_filter(be, plan, d_x, d_dy, d_dw, d_db));
        check_ok(be->ops->conv_bwd_data(be, plan, d_dy, d_w, d_dx));
        dw[r] = fetch(be, d_dw, nw);
        dx[r] = fetch(be, d_dx, nx);
        be->ops->conv_plan_free(be, plan);
        float *bufs[] = {d_x, d_dy, d_w, d_dw, d_dx, d_db};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            be->ops->free(be, bufs[i]);
    }
    for (int r = 1; r < 3; r++) {
        ck_assert(dg_test_equal("deterministic dw rerun", dw[r], dw[0], nw));
        ck_assert(dg_test_equal("deterministic dx rerun", dx[r], dx[0], nx));
    }
    printf("deterministic reruns: dw[0..2] %.9g %.9g %.9g identical in 3 runs\n", (double)dw[0][0],
           (double)dw[0][1], (double)dw[0][2]);
    for (int r = 0; r < 3; r++)
        free(dw[r]), free(dx[r]);
    dg_backend_destroy(second);
    free(x), free(dy), free(w);
}
END_TEST

/* The algorithms each backend chose, by name (conv_algo_name, what train, bench and compare
 * print). FP32 on any device: never FFT or Winograd (their error is not bounded by the FP32
 * forward bound) and never an algorithm cuDNN offered only with TF32-capable math. On the
 * emulated device the candidate lists are known (tests/emu/cudnn.c): the fastest forward
 * entry is IMPLICIT_PRECOMP_GEMM with CUDNN_DEFAULT_MATH, then Winograd and FFT ones, then
 * IMPLICIT_GEMM with CUDNN_FMA_MATH, so FP32 must name IMPLICIT_GEMM (a choice that accepted
 * the DEFAULT_MATH timing would name IMPLICIT_PRECOMP_GEMM) and TF32 IMPLICIT_PRECOMP_GEMM. */
START_TEST(algorithm_choice)
{
    int emulated = dg_cuda_emulated();
    for (int i = 0; i < conv_algo_cases.count; i++) {
        const struct dg_conv_shape *shape = &conv_algo_cases.at[i].conv;
        struct dg_backend *fp32[2] = {gpu, gpu_det};
        for (int b = 0; b < 2; b++) {
            char name[256];
            ck_assert(fp32[b]->ops->conv_algo_name != NULL);
            fp32[b]->ops->conv_algo_name(fp32[b], shape, 1, name, sizeof name);
            printf("  FP32 %s, %s: %s\n", b ? "deterministic" : "measured",
                   conv_algo_cases.at[i].name, name);
            ck_assert_msg(!strstr(name, "FFT") && !strstr(name, "WINOGRAD") &&
                              !strstr(name, "search failed"),
                          "FP32 %s chose %s", conv_algo_cases.at[i].name, name);
            if (emulated)
                ck_assert_str_eq(name, "IMPLICIT_GEMM (bwd-data ALGO_1, bwd-filter ALGO_1)");
        }
        char name[256];
        gpu_tf32->ops->conv_algo_name(gpu_tf32, shape, 0, name, sizeof name);
        printf("  TF32, %s: %s\n", conv_algo_cases.at[i].name, name);
        if (emulated)
            ck_assert_str_eq(name, "IMPLICIT_PRECOMP_GEMM (bwd-filter ALGO_1)");
    }
}
END_TEST

/* ---- element-wise ops and pooling ---- */

START_TEST(relu_bwd_exact)
{
    for (int s = 0; s < relu_cases.count; s++) {
        size_t n = relu_cases.at[s].count;
        struct dg_test_rng rng = {500 + (uint64_t)s};
        float *y = dg_test_floats(n), *dy = dg_test_floats(n);
        dg_test_fill(&rng, y, n, -1.0f, 1.0f);
        for (size_t i = 0; i < n; i += 3)
            y[i] = 0.0f;
        dg_test_fill(&rng, dy, n, -1.0f, 1.0f);
        float *d_y = dev_floats(gpu, y, n), *d_dy = dev_floats(gpu, dy, n);
        check_ok(cpu->ops->relu_bwd(cpu, n, y, dy));
        check_ok(gpu->ops->relu_bwd(gpu, n, d_y, d_dy));
        ck_assert(agree_dev("relu bwd", gpu, d_dy, dy, n, &dg_tol_exact));
        gpu->ops->free(gpu, d_y), gpu->ops->free(gpu, d_dy);
        free(y), free(dy);
    }
}
END_TEST

/* Global average pooling: the same element math (src/math/gap.h), so the same floats. */
START_TEST(gap_exact)
{
    static const struct {
        size_t rows;
        int spatial;
    } cases[] = {{86 * 64, 16}, {3 * 5, 49}, {7, 1}, {1, 784}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t rows = cases[k].rows, n = rows * (size_t)cases[k].spatial;
        int spatial = cases[k].spatial;
        struct dg_test_rng rng = {800 + (uint64_t)k};
        float *x = dg_test_floats(n), *dx = dg_test_floats(n);
        float *y = dg_test_floats(rows), *g = dg_test_floats(rows);
        dg_test_fill(&rng, x, n, -1.0f, 1.0f);
        dg_test_fill(&rng, g, rows, -1.0f, 1.0f);
        float *d_x = dev_floats(gpu, x, n), *d_dx = dev_floats(gpu, dx, n);
        float *d_y = dev_floats(gpu, y, rows), *d_g = dev_floats(gpu, g, rows);
        check_ok(cpu->ops->gap_fwd(cpu, rows, spatial, x, y));
        check_ok(gpu->ops->gap_fwd(gpu, rows, spatial, d_x, d_y));
        check_ok(cpu->ops->gap_bwd(cpu, rows, spatial, g, dx));
        check_ok(gpu->ops->gap_bwd(gpu, rows, spatial, d_g, d_dx));
        ck_assert(agree_dev("gap fwd", gpu, d_y, y, rows, &dg_tol_exact));
        ck_assert(agree_dev("gap bwd", gpu, d_dx, dx, n, &dg_tol_exact));
        gpu->ops->free(gpu, d_x), gpu->ops->free(gpu, d_dx), gpu->ops->free(gpu, d_y);
        gpu->ops->free(gpu, d_g);
        free(x), free(dx), free(y), free(g);
    }
}
END_TEST

/* Continuous inputs (_i even) and, for DG_OP_TIES cases, small integers (_i odd: windows full
 * of ties, like the zeros after a ReLU): both directions bit-identical to the CPU, first
 * maximum included. */
START_TEST(maxpool_exact)
{
    const struct dg_op_case *the_case = &pool_cases.at[_i / 2];
    const struct dg_pool_shape *s = &the_case->pool;
    int ties = _i % 2;
    if (ties && !(the_case->tags & DG_OP_TIES))
        return;
    size_t nx = (size_t)s->batch * s->channels * s->height * s->width;
    size_t ny = (size_t)s->batch * s->channels * (s->height / 2) * (s->width / 2);
    struct dg_test_rng rng = {600 + (uint64_t)_i};
    float *x = dg_test_floats(nx), *y = dg_test_floats(ny), *dy = dg_test_floats(ny);
    float *dx = dg_test_floats(nx);
    if (ties)
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)dg_test_below(&rng, 3);
    else
        dg_test_fill(&rng, x, nx, -1.0f, 1.0f);
    dg_test_fill(&rng, dy, ny, -1.0f, 1.0f);
    printf("maxpool %d x %d x %dx%d%s\n", s->batch, s->channels, s->height, s->width,
           ties ? " (ties)" : "");
    check_ok(cpu->ops->maxpool_fwd(cpu, s, x, y));
    check_ok(cpu->ops->maxpool_bwd(cpu, s, x, y, dy, dx));
    float *d_x = dev_floats(gpu, x, nx), *d_y = dev_floats(gpu, NULL, ny);
    float *d_dy = dev_floats(gpu, dy, ny), *d_dx = dev_floats(gpu, NULL, nx);
    check_ok(gpu->ops->maxpool_fwd(gpu, s, d_x, d_y));
    ck_assert(agree_dev("maxpool fwd", gpu, d_y, y, ny, &dg_tol_exact));
    check_ok(gpu->ops->maxpool_bwd(gpu, s, d_x, d_y, d_dy, d_dx));
    ck_assert(agree_dev("maxpool bwd", gpu, d_dx, dx, nx, &dg_tol_exact));
    float *bufs[] = {d_x, d_y, d_dy, d_dx};
    for (size_t i = 0; i < 4; i++)
        gpu->ops->free(gpu, bufs[i]);
    free(x), free(y), free(dy), free(dx);
}
END_TEST

START_TEST(dropout_exact)
{
    const float rates[] = {0.25f, 0.5f};
    for (size_t s = 0; s < (size_t)dropout_cases.count; s++) {
        for (int r = 0; r < 2; r++) {
            size_t n = dropout_cases.at[s].count;
            struct dg_dropout_key key = {0x5eed0000ull + s, (uint32_t)r, 3, 17 + (uint32_t)s,
                                         0, 0};
            struct dg_test_rng rng = {700 + s};
            float *x = dg_test_floats(n), *y = dg_test_floats(n), *dx = dg_test_floats(n);
            float *dy = dg_test_floats(n);
            dg_test_fill(&rng, x, n, -1.0f, 1.0f);
            /* a gradient unlike x (another range and draw), so that a backward that leaves
             * the forward result in place, or masks x instead of dy, cannot pass */
            dg_test_fill(&rng, dy, n, 2.0f, 4.0f);
            check_ok(cpu->ops->dropout_fwd(cpu, n, rates[r], &key, x, y));
            check_ok(cpu->ops->dropout_bwd(cpu, n, rates[r], &key, dy, dx));
            float *d_x = dev_floats(gpu, x, n), *d_y = dev_floats(gpu, NULL, n);
            check_ok(gpu->ops->dropout_fwd(gpu, n, rates[r], &key, d_x, d_y));
            ck_assert(agree_dev("dropout fwd", gpu, d_y, y, n, &dg_tol_exact));
            /* backward into a fresh NaN-filled buffer: an element it does not write fails */
            float *d_dy = dev_floats(gpu, dy, n), *d_dx = dev_floats(gpu, NULL, n);
            check_ok(gpu->ops->dropout_bwd(gpu, n, rates[r], &key, d_dy, d_dx));
            ck_assert(agree_dev("dropout bwd", gpu, d_dx, dx, n, &dg_tol_exact));
            /* the CPU's backward keeps exactly the forward's elements, scaled by 1/(1-rate) */
            for (size_t i = 0; i < n; i++)
                ck_assert_msg((y[i] == 0.0f && x[i] != 0.0f) == (dx[i] == 0.0f),
                              "dropout bwd mask differs from the forward's at %zu", i);
            size_t dropped = 0;
            for (size_t i = 0; i < n; i++)
                dropped += y[i] == 0.0f;
            /* the dropped count is binomial(n, rate): within 5 standard deviations (a fixed
             * 0.02 was 1.5 of them at n = 1037 and failed on the emulated device's first run) */
            double sigma = sqrt((double)rates[r] * (1.0 - rates[r]) / (double)n);
            if (n > 1000)
                ck_assert_msg(fabs((double)dropped / (double)n - rates[r]) < 5.0 * sigma,
                              "dropped %zu of %zu at rate %g (5 sigma: %g)", dropped, n,
                              (double)rates[r], 5.0 * sigma);
            gpu->ops->free(gpu, d_x), gpu->ops->free(gpu, d_y);
            gpu->ops->free(gpu, d_dy), gpu->ops->free(gpu, d_dx);
            free(x), free(y), free(dx), free(dy);
        }
    }
}
END_TEST

/* ---- dense ---- */

/* Both epilogues (the case's relu flag is test_ops' choice). */
/* One dense case on `gpu_be` against `cpu_be`: the FP32 bounds, both for FP32 and for bf16
 * (cublasGemmEx sums products of the same bf16 operands in float32 into float32 results, as
 * the CPU's bf16 math does). */
static void dense_compare(struct dg_backend *ref, struct dg_backend *cand, int i)
{
    const struct dg_op_dense_shape *c = &dense_cases.at[i].dense;
    size_t nx = (size_t)c->batch * c->in, ny = (size_t)c->batch * c->out;
    size_t nw = (size_t)c->in * c->out;
    struct dg_test_rng rng = {800 + (uint64_t)i};
    float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats((size_t)c->out);
    float *dy = dg_test_floats(ny);
    float scale = 1.0f / sqrtf((float)c->in);
    dg_test_fill(&rng, x, nx, -1.0f, 1.0f);
    dg_test_fill(&rng, w, nw, -scale, scale);
    dg_test_fill(&rng, b, (size_t)c->out, -0.5f, 0.5f);
    dg_test_fill(&rng, dy, ny, -1.0f, 1.0f);
    printf("dense %d x %d -> %d on %s\n", c->batch, c->in, c->out, cand->description);
    float *y = dg_test_floats(ny), *y_relu = dg_test_floats(ny), *dx = dg_test_floats(nx);
    float *dw = dg_test_floats(nw), *db = dg_test_floats((size_t)c->out);
    check_ok(ref->ops->dense_fwd(ref, c->batch, c->in, c->out, x, w, b, y, 0));
    check_ok(ref->ops->dense_fwd(ref, c->batch, c->in, c->out, x, w, b, y_relu, 1));
    check_ok(ref->ops->dense_bwd(ref, c->batch, c->in, c->out, x, w, dy, dx, dw, db));

    float *d_x = dev_floats(cand, x, nx), *d_w = dev_floats(cand, w, nw);
    float *d_b = dev_floats(cand, b, (size_t)c->out), *d_dy = dev_floats(cand, dy, ny);
    float *d_y = dev_floats(cand, NULL, ny), *d_dx = dev_floats(cand, NULL, nx);
    float *d_dw = dev_floats(cand, NULL, nw), *d_db = dev_floats(cand, NULL, (size_t)c->out);
    check_ok(cand->ops->dense_fwd(cand, c->batch, c->in, c->out, d_x, d_w, d_b, d_y, 0));
    ck_assert(agree_dev("dense fwd", cand, d_y, y, ny, &dg_tol_forward));
    check_ok(cand->ops->dense_fwd(cand, c->batch, c->in, c->out, d_x, d_w, d_b, d_y, 1));
    ck_assert(agree_dev("dense fwd relu", cand, d_y, y_relu, ny, &dg_tol_forward));
    check_ok(cand->ops->dense_bwd(cand, c->batch, c->in, c->out, d_x, d_w, d_dy, d_dx, d_dw, d_db));
    ck_assert(agree_dev("dense bwd dx", cand, d_dx, dx, nx, &dg_tol_backward_fp32));
    ck_assert(agree_dev("dense bwd dw", cand, d_dw, dw, nw, &dg_tol_backward_fp32));
    ck_assert(agree_dev("dense bwd db", cand, d_db, db, (size_t)c->out, &dg_tol_backward_fp32));
    /* dx = NULL: only the parameter gradients */
    float *d_dw2 = dev_floats(cand, NULL, nw);
    check_ok(
        cand->ops->dense_bwd(cand, c->batch, c->in, c->out, d_x, d_w, d_dy, NULL, d_dw2, d_db));
    ck_assert(agree_dev("dense bwd dw (no dx)", cand, d_dw2, dw, nw, &dg_tol_backward_fp32));
    float *bufs[] = {d_x, d_w, d_b, d_dy, d_y, d_dx, d_dw, d_db, d_dw2};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        cand->ops->free(cand, bufs[k]);
    free(x), free(w), free(b), free(dy), free(y), free(y_relu), free(dx), free(dw), free(db);
}

START_TEST(dense_vs_cpu)
{
    dense_compare(cpu, gpu, _i);
}
END_TEST

START_TEST(dense_bf16)
{
    dense_compare(cpu_bf16, gpu_bf16, _i);
}
END_TEST

/* ---- softmax + cross-entropy ---- */

START_TEST(softmax_xent_vs_cpu)
{
    int batch = softmax_cases.at[_i].batch;
    size_t n = (size_t)batch * DG_CLASSES;
    struct dg_test_rng rng = {900 + (uint64_t)_i};
    float *logits = dg_test_floats(n), *probs = dg_test_floats(n), *dlogits = dg_test_floats(n);
    uint8_t *labels = dg_test_bytes((size_t)batch);
    dg_test_fill(&rng, logits, n, -8.0f, 8.0f);
    logits[0] += 80.0f; /* a large logit: the row maximum must be subtracted */
    for (int i = 0; i < batch; i++)
        labels[i] = (uint8_t)dg_test_below(&rng, DG_CLASSES);
    labels[0] = 0; /* a sure hit, so that the count is never trivially zero */
    float *d_logits = dev_floats(gpu, logits, n), *d_probs = dev_floats(gpu, NULL, n);
    float *d_dlogits = dev_floats(gpu, NULL, n);
    uint8_t *d_labels = dev_bytes(gpu, labels, (size_t)batch);
    double cpu_stats[2] = {0.5, 2.0}, gpu_stats[2] = {0.5, 2.0};
    double *d_stats = dev_bytes(gpu, gpu_stats, sizeof gpu_stats);
    /* without and with label smoothing (0.1) */
    for (int smoothed = 0; smoothed < 2; smoothed++) {
        const float smoothing = smoothed ? 0.1f : 0.0f;
        cpu_stats[0] = gpu_stats[0] = 0.5;
        cpu_stats[1] = gpu_stats[1] = 2.0;
        printf("softmax-xent batch %d, label smoothing %g\n", batch, (double)smoothing);
        for (int twice = 0; twice < 2; twice++)
            check_ok(cpu->ops->softmax_xent(cpu, batch, logits, labels, smoothing, probs, dlogits,
                                            cpu_stats, NULL));
        check_ok(gpu->ops->upload(gpu, d_stats, gpu_stats, sizeof gpu_stats));
        for (int twice = 0; twice < 2; twice++)
            check_ok(gpu->ops->softmax_xent(gpu, batch, d_logits, d_labels, smoothing, d_probs,
                                            d_dlogits, d_stats, NULL));
        ck_assert(agree_dev("softmax probs", gpu, d_probs, probs, n, &dg_tol_forward));
        ck_assert(agree_dev("softmax dlogits", gpu, d_dlogits, dlogits, n, &dg_tol_backward_fp32));
        check_ok(gpu->ops->download(gpu, gpu_stats, d_stats, sizeof gpu_stats));
        printf("  stats (gpu, cpu): loss sum (%.12g, %.12g) correct (%g, %g)\n", gpu_stats[0],
               cpu_stats[0], gpu_stats[1], cpu_stats[1]);
        ck_assert(fabs(gpu_stats[0] - cpu_stats[0]) <= DG_TOL_LOSS_RTOL * fabs(cpu_stats[0]));
        ck_assert(gpu_stats[1] == cpu_stats[1]);
        ck_assert(cpu_stats[1] >= 4.0);
    }

    /* inference: probabilities only, dlogits and stats untouched */
    float *d_probs2 = dev_floats(gpu, NULL, n);
    check_ok(
        gpu->ops->softmax_xent(gpu, batch, d_logits, NULL, 0.0f, d_probs2, NULL, NULL, NULL));
    ck_assert(agree_dev("softmax probs (no labels)", gpu, d_probs2, probs, n, &dg_tol_forward));
    double after[2];
    check_ok(gpu->ops->download(gpu, after, d_stats, sizeof after));
    ck_assert(after[0] == gpu_stats[0] && after[1] == gpu_stats[1]);

    gpu->ops->free(gpu, d_logits), gpu->ops->free(gpu, d_probs), gpu->ops->free(gpu, d_dlogits);
    gpu->ops->free(gpu, d_labels), gpu->ops->free(gpu, d_stats), gpu->ops->free(gpu, d_probs2);
    free(logits), free(probs), free(dlogits), free(labels);
}
END_TEST

/* Batch normalisation through cuDNN (training forward, inference forward, backward) against the
 * CPU within dg_tol_batchnorm, on the float32, deterministic and TF32 backends (it runs float32
 * on each). The running statistics are a blend of the old value and a batch statistic: FP32
 * forward bounds. */
START_TEST(batchnorm_vs_cpu)
{
    const struct dg_bn_shape s = bn_cases.at[_i].bn;
    struct dg_backend *backends[4] = {gpu, gpu_det, gpu_tf32, gpu_bf16};
    struct dg_test_rng rng = {1200 + (uint64_t)_i};
    size_t n = (size_t)s.batch * s.channels * s.spatial, c = (size_t)s.channels;
    printf("batchnorm \"%s\": %d x %d x %d\n", bn_cases.at[_i].name, s.batch, s.channels,
           s.spatial);
    float *x = dg_test_floats(n), *dy = dg_test_floats(n), *gamma = dg_test_floats(c);
    float *beta = dg_test_floats(c), *mean0 = dg_test_floats(c), *var0 = dg_test_floats(c);
    dg_test_fill(&rng, x, n, -1.0f, 3.0f);
    dg_test_fill(&rng, dy, n, -1.0f, 1.0f);
    dg_test_fill(&rng, gamma, c, 0.5f, 1.5f);
    dg_test_fill(&rng, beta, c, -0.5f, 0.5f);
    dg_test_fill(&rng, mean0, c, -0.2f, 0.2f);
    dg_test_fill(&rng, var0, c, 0.5f, 2.0f);
    float *y = dg_test_floats(n), *yi = dg_test_floats(n), *dx = dg_test_floats(n);
    float *rm = dg_test_floats(c), *rv = dg_test_floats(c), *sm = dg_test_floats(c);
    float *si = dg_test_floats(c), *dgm = dg_test_floats(c), *dbt = dg_test_floats(c);
    memcpy(rm, mean0, c * sizeof(float));
    memcpy(rv, var0, c * sizeof(float));
    check_ok(cpu->ops->batchnorm_fwd_infer(cpu, &s, x, gamma, beta, mean0, var0, DG_BN_EPSILON,
                                           yi));
    check_ok(cpu->ops->batchnorm_fwd_train(cpu, &s, x, gamma, beta, rm, rv, DG_BN_MOMENTUM,
                                           DG_BN_EPSILON, y, sm, si));
    check_ok(cpu->ops->batchnorm_bwd(cpu, &s, x, dy, gamma, sm, si, dx, dgm, dbt));
    for (int b = 0; b < 4; b++) {
        struct dg_backend *be = backends[b];
        printf(" on %s\n", be->description);
        float *d_x = dev_floats(be, x, n), *d_dy = dev_floats(be, dy, n);
        float *d_g = dev_floats(be, gamma, c), *d_b = dev_floats(be, beta, c);
        float *d_rm = dev_floats(be, mean0, c), *d_rv = dev_floats(be, var0, c);
        float *d_y = dev_floats(be, NULL, n), *d_dx = dev_floats(be, NULL, n);
        float *d_sm = dev_floats(be, NULL, c), *d_si = dev_floats(be, NULL, c);
        float *d_dg = dev_floats(be, NULL, c), *d_db = dev_floats(be, NULL, c);
        check_ok(be->ops->batchnorm_fwd_infer(be, &s, d_x, d_g, d_b, d_rm, d_rv, DG_BN_EPSILON,
                                              d_y));
        ck_assert(agree_dev("batchnorm infer y", be, d_y, yi, n, &dg_tol_batchnorm));
        check_ok(be->ops->batchnorm_fwd_train(be, &s, d_x, d_g, d_b, d_rm, d_rv, DG_BN_MOMENTUM,
                                              DG_BN_EPSILON, d_y, d_sm, d_si));
        ck_assert(agree_dev("batchnorm train y", be, d_y, y, n, &dg_tol_batchnorm));
        ck_assert(agree_dev("batchnorm running mean", be, d_rm, rm, c, &dg_tol_forward));
        ck_assert(agree_dev("batchnorm running var", be, d_rv, rv, c, &dg_tol_forward));
        ck_assert(agree_dev("batchnorm saved mean", be, d_sm, sm, c, &dg_tol_forward));
        ck_assert(agree_dev("batchnorm saved invstd", be, d_si, si, c, &dg_tol_forward));
        check_ok(be->ops->batchnorm_bwd(be, &s, d_x, d_dy, d_g, d_sm, d_si, d_dx, d_dg, d_db));
        ck_assert(agree_dev("batchnorm bwd dx", be, d_dx, dx, n, &dg_tol_batchnorm));
        ck_assert(agree_dev("batchnorm bwd dgamma", be, d_dg, dgm, c, &dg_tol_batchnorm));
        ck_assert(agree_dev("batchnorm bwd dbeta", be, d_db, dbt, c, &dg_tol_batchnorm));
        float *bufs[] = {d_x, d_dy, d_g, d_b, d_rm, d_rv, d_y, d_dx, d_sm, d_si, d_dg, d_db};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            be->ops->free(be, bufs[i]);
    }
    free(x), free(dy), free(gamma), free(beta), free(mean0), free(var0), free(y), free(yi);
    free(dx), free(rm), free(rv), free(sm), free(si), free(dgm), free(dbt);
}
END_TEST

START_TEST(rmsprop_exact)
{
    const size_t n = rmsprop_cases.at[_i].count;
    struct dg_test_rng rng = {1000 + (uint64_t)_i};
    float *w = dg_test_floats(n), *g = dg_test_floats(n), *acc = dg_test_floats(n);
    dg_test_fill(&rng, w, n, -0.1f, 0.1f);
    float *d_w = dev_floats(gpu, w, n), *d_acc = dev_floats(gpu, acc, n);
    float *d_g = dev_floats(gpu, NULL, n);
    for (int step = 0; step < 3; step++) {
        dg_test_fill(&rng, g, n, -1.0f, 1.0f);
        check_ok(gpu->ops->upload(gpu, d_g, g, n * sizeof(float)));
        check_ok(cpu->ops->rmsprop(cpu, n, w, g, acc, 1e-3f, 0.9f, 1e-8f));
        check_ok(gpu->ops->rmsprop(gpu, n, d_w, d_g, d_acc, 1e-3f, 0.9f, 1e-8f));
    }
    ck_assert(agree_dev("rmsprop w", gpu, d_w, w, n, &dg_tol_exact));
    ck_assert(agree_dev("rmsprop acc", gpu, d_acc, acc, n, &dg_tol_exact));
    gpu->ops->free(gpu, d_w), gpu->ops->free(gpu, d_acc), gpu->ops->free(gpu, d_g);
    free(w), free(g), free(acc);
}
END_TEST

/* Adam over three steps from zero moments (t = 1, 2, 3: the bias corrections from the powers
 * each side keeps in its own memory), then the powers themselves: bit for bit. */
START_TEST(adam_exact)
{
    const size_t n = rmsprop_cases.at[_i].count;
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
    struct dg_test_rng rng = {1100 + (uint64_t)_i};
    float *w = dg_test_floats(n), *g = dg_test_floats(n), *m = dg_test_floats(n);
    float *v = dg_test_floats(n);
    dg_test_fill(&rng, w, n, -0.1f, 0.1f);
    float pow[2] = {1.0f, 1.0f};
    float *d_w = dev_floats(gpu, w, n), *d_m = dev_floats(gpu, m, n), *d_v = dev_floats(gpu, v, n);
    float *d_pow = dev_floats(gpu, pow, 2), *d_g = dev_floats(gpu, NULL, n);
    for (int step = 0; step < 3; step++) {
        dg_test_fill(&rng, g, n, -1.0f, 1.0f);
        check_ok(gpu->ops->upload(gpu, d_g, g, n * sizeof(float)));
        check_ok(cpu->ops->adam(cpu, n, w, g, m, v, pow, 1e-3f, b1, b2, eps));
        check_ok(gpu->ops->adam(gpu, n, d_w, d_g, d_m, d_v, d_pow, 1e-3f, b1, b2, eps));
    }
    ck_assert(agree_dev("adam w", gpu, d_w, w, n, &dg_tol_exact));
    ck_assert(agree_dev("adam m", gpu, d_m, m, n, &dg_tol_exact));
    ck_assert(agree_dev("adam v", gpu, d_v, v, n, &dg_tol_exact));
    ck_assert(agree_dev("adam powers", gpu, d_pow, pow, 2, &dg_tol_exact));
    gpu->ops->free(gpu, d_w), gpu->ops->free(gpu, d_m), gpu->ops->free(gpu, d_v);
    gpu->ops->free(gpu, d_pow), gpu->ops->free(gpu, d_g);
    free(w), free(g), free(m), free(v);
}
END_TEST

/* SGD with momentum 0.9, plain (even cases) and Nesterov (odd), three steps: bit for bit. */
START_TEST(sgd_exact)
{
    const size_t n = rmsprop_cases.at[_i / 2].count;
    const int nesterov = _i % 2;
    struct dg_test_rng rng = {1200 + (uint64_t)_i};
    float *w = dg_test_floats(n), *g = dg_test_floats(n), *b = dg_test_floats(n);
    dg_test_fill(&rng, w, n, -0.1f, 0.1f);
    float *d_w = dev_floats(gpu, w, n), *d_b = dev_floats(gpu, b, n);
    float *d_g = dev_floats(gpu, NULL, n);
    for (int step = 0; step < 3; step++) {
        dg_test_fill(&rng, g, n, -1.0f, 1.0f);
        check_ok(gpu->ops->upload(gpu, d_g, g, n * sizeof(float)));
        check_ok(cpu->ops->sgd(cpu, n, w, g, b, 1e-2f, 0.9f, nesterov));
        check_ok(gpu->ops->sgd(gpu, n, d_w, d_g, d_b, 1e-2f, 0.9f, nesterov));
    }
    ck_assert(agree_dev("sgd w", gpu, d_w, w, n, &dg_tol_exact));
    ck_assert(agree_dev("sgd b", gpu, d_b, b, n, &dg_tol_exact));
    gpu->ops->free(gpu, d_w), gpu->ops->free(gpu, d_b), gpu->ops->free(gpu, d_g);
    free(w), free(g), free(b);
}
END_TEST

/* The moving average of the weights: bit-identical to the CPU over three steps. */
START_TEST(ema_exact)
{
    const size_t n = rmsprop_cases.at[_i].count;
    struct dg_test_rng rng = {1300 + (uint64_t)_i};
    float *e = dg_test_floats(n), *w = dg_test_floats(n);
    dg_test_fill(&rng, e, n, -0.1f, 0.1f);
    float *d_e = dev_floats(gpu, e, n), *d_w = dev_floats(gpu, NULL, n);
    static const float decays[3] = {0.999f, 0.9f, 0.5f};
    for (int step = 0; step < 3; step++) {
        dg_test_fill(&rng, w, n, -1.0f, 1.0f);
        check_ok(gpu->ops->upload(gpu, d_w, w, n * sizeof(float)));
        check_ok(cpu->ops->ema(cpu, n, e, w, decays[step]));
        check_ok(gpu->ops->ema(gpu, n, d_e, d_w, decays[step]));
    }
    ck_assert(agree_dev("ema", gpu, d_e, e, n, &dg_tol_exact));
    gpu->ops->free(gpu, d_e), gpu->ops->free(gpu, d_w);
    free(e), free(w);
}
END_TEST

/* ---- data ---- */

/* Batches of odd sizes, plain and augmented, queued back to back before any download (so the
 * two staging slots are reused while earlier batches may still be in flight), on the resident
 * store (_i == 0) and the streamed one (_i == 1): bit-identical to the CPU. */
START_TEST(batch_assemble_exact)
{
    struct dg_backend *be = _i == 0 ? gpu : gpu_streamed;
    enum { BATCHES = DG_OP_MAX_CASES };
    const int batches = assemble_cases.count;
    int counts[BATCHES], largest = 0;
    for (int b = 0; b < batches; b++) {
        counts[b] = assemble_cases.at[b].batch;
        largest = counts[b] > largest ? counts[b] : largest;
    }
    /* the unlabelled store assembles the third batch (7 images) again */
    const int again = batches > 2 ? 2 : 0;
    const size_t images = 211;
    struct dg_test_rng rng = {1100};
    uint8_t *store = dg_test_bytes(images * DG_PIXELS), *store_labels = dg_test_bytes(images);
    for (size_t i = 0; i < images * DG_PIXELS; i++)
        store[i] = (uint8_t)dg_test_below(&rng, 256);
    for (size_t i = 0; i < images; i++)
        store_labels[i] = (uint8_t)dg_test_below(&rng, 10);
    struct dg_dataset dataset = {0};
    dataset.count = images;
    dataset.images = store;
    dataset.labels = store_labels;
    struct dg_dataset unlabelled = dataset;
    unlabelled.labels = NULL;
    printf("batch assembly on %s store\n", _i == 0 ? "a resident" : "a streamed");

    void *handle = NULL, *cpu_handle = NULL, *handle_unlabelled = NULL;
    check_ok(be->ops->dataset_attach(be, &dataset, &handle));
    check_ok(be->ops->dataset_attach(be, &unlabelled, &handle_unlabelled));
    check_ok(cpu->ops->dataset_attach(cpu, &dataset, &cpu_handle));
    for (int aug = 0; aug < 2; aug++) {
        uint32_t *rows[BATCHES];
        float *d_x[BATCHES];
        uint8_t *d_labels[BATCHES];
        struct dg_augment_key keys[BATCHES];
        uint8_t *label_fill = dg_test_bytes((size_t)largest);
        memset(label_fill, 0, (size_t)largest);
        for (int b = 0; b < batches; b++) {
            int n = counts[b];
            rows[b] = dg_test_bytes((size_t)n * sizeof(uint32_t));
            for (int i = 0; i < n; i++)
                rows[b][i] = dg_test_below(&rng, (uint32_t)images);
            rows[b][n - 1] = (uint32_t)images - 1;
            keys[b] = (struct dg_augment_key){0xfeedull, 2, (uint32_t)b, 10.0f, 0.1f, 0.1f};
            d_x[b] = dev_floats(be, NULL, (size_t)n * DG_PIXELS);
            d_labels[b] = dev_bytes(be, label_fill, (size_t)n);
            check_ok(be->ops->batch_assemble(be, handle, rows[b], n, aug ? &keys[b] : NULL, d_x[b],
                                             d_labels[b]));
        }
        free(label_fill);
        for (int b = 0; b < batches; b++) {
            int n = counts[b];
            size_t count = (size_t)n * DG_PIXELS;
            float *want = dg_test_floats(count);
            uint8_t *want_labels = dg_test_bytes((size_t)n), *labels = dg_test_bytes((size_t)n);
            check_ok(cpu->ops->batch_assemble(cpu, cpu_handle, rows[b], n, aug ? &keys[b] : NULL,
                                              want, want_labels));
            char what[64];
            snprintf(what, sizeof what, "%s batch of %d", aug ? "augmented" : "plain", n);
            ck_assert(agree_dev(what, be, d_x[b], want, count, &dg_tol_exact));
            check_ok(be->ops->download(be, labels, d_labels[b], (size_t)n));
            ck_assert_mem_eq(labels, want_labels, (size_t)n);
            free(want), free(want_labels), free(labels);
        }
        /* an unlabelled store leaves the label buffer alone */
        const int n_again = counts[again];
        uint8_t *marks = dg_test_bytes((size_t)n_again);
        memset(marks, 0xee, (size_t)n_again);
        uint8_t *d_marks = dev_bytes(be, marks, (size_t)n_again);
        check_ok(be->ops->batch_assemble(be, handle_unlabelled, rows[again], n_again,
                                         aug ? &keys[again] : NULL, d_x[again], d_marks));
        check_ok(be->ops->download(be, marks, d_marks, (size_t)n_again));
        for (int i = 0; i < n_again; i++)
            ck_assert_uint_eq(marks[i], 0xee);
        be->ops->free(be, d_marks);
        free(marks);
        for (int b = 0; b < batches; b++) {
            be->ops->free(be, d_x[b]);
            be->ops->free(be, d_labels[b]);
            free(rows[b]);
        }
    }
    uint32_t bad_row = (uint32_t)images;
    float *d_one = dev_floats(be, NULL, DG_PIXELS);
    ck_assert_int_ne(be->ops->batch_assemble(be, handle, &bad_row, 1, NULL, d_one, NULL), DG_OK);
    printf("  row out of range: %s\n", dg_error_message());
    be->ops->free(be, d_one);
    be->ops->dataset_detach(be, handle);
    be->ops->dataset_detach(be, handle_unlabelled);
    cpu->ops->dataset_detach(cpu, cpu_handle);
    free(store), free(store_labels);
}
END_TEST

/* ---- backend basics ---- */

static void count_lines(const char *line, void *ctx)
{
    printf("  describe: %s\n", line);
    if (strncmp(line, "CUDA device 0: ", 15) == 0)
        (*(int *)ctx)++;
}

START_TEST(identity_memory_errors)
{
    ck_assert_int_eq(dg_cuda_built(), 1);
    ck_assert_str_eq(gpu->name, "cuda");
    ck_assert_ptr_nonnull(strstr(gpu->description, "cuda: "));
    ck_assert_ptr_nonnull(strstr(gpu->description, "FP32 math"));
    ck_assert_ptr_nonnull(strstr(gpu_tf32->description, "TF32 math"));
    ck_assert_ptr_nonnull(strstr(gpu_det->description, "deterministic"));
    printf("%s\n%s\n", gpu->description, gpu_tf32->description);
    int devices = 0;
    dg_cuda_describe(count_lines, &devices);
    ck_assert_int_eq(devices, 1);

    unsigned char *p = NULL;
    check_ok(gpu->ops->alloc(gpu, 100003, (void **)&p));
    unsigned char *back = dg_test_bytes(100003);
    memset(back, 0xab, 100003);
    check_ok(gpu->ops->download(gpu, back, p, 100003));
    for (size_t i = 0; i < 100003; i++)
        ck_assert_uint_eq(back[i], 0);
    const char text[] = "digits";
    check_ok(gpu->ops->upload(gpu, p + 5, text, sizeof text));
    check_ok(gpu->ops->download(gpu, back, p + 5, sizeof text));
    check_ok(gpu->ops->sync(gpu));
    ck_assert_str_eq((char *)back, text);
    gpu->ops->free(gpu, p);
    gpu->ops->free(gpu, NULL);
    free(back);

    void *host = gpu->host_allocator.alloc(1 << 20, gpu->host_allocator.ctx);
    ck_assert_ptr_nonnull(host);
    memset(host, 1, 1 << 20);
    gpu->host_allocator.free(host, gpu->host_allocator.ctx);

    /* far more than any device has: a clean DG_ERR_DEVICE that says what was asked and free */
    void *huge = NULL;
    ck_assert_int_eq(gpu->ops->alloc(gpu, (size_t)1 << 50, &huge), DG_ERR_DEVICE);
    ck_assert_ptr_null(huge);
    printf("  huge alloc: %s\n", dg_error_message());
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "asked for"));
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "free"));
    /* the backend still works afterwards (the error was not sticky) */
    float *q = dev_floats(gpu, NULL, 1037);
    check_ok(gpu->ops->relu_bwd(gpu, 1037, q, q));
    check_ok(gpu->ops->sync(gpu));
    gpu->ops->free(gpu, q);

    struct dg_cuda_options bad = {999, DG_MATH_FP32, 0, 0};
    struct dg_backend *none = NULL;
    ck_assert_int_eq(dg_backend_cuda_create(&bad, &none), DG_ERR_DEVICE);
    ck_assert_ptr_null(none);
    printf("  device 999: %s\n", dg_error_message());
}
END_TEST

static Suite *gpu_ops_suite(void)
{
    load_cases(&conv_cases, DG_OP_CONV, DG_OP_VS_CPU);
    load_cases(&conv_rerun_cases, DG_OP_CONV, DG_OP_RERUN);
    load_cases(&conv_algo_cases, DG_OP_CONV, DG_OP_ALGO);
    load_cases(&pool_cases, DG_OP_MAXPOOL, DG_OP_VS_CPU);
    load_cases(&dense_cases, DG_OP_DENSE, DG_OP_VS_CPU);
    load_cases(&softmax_cases, DG_OP_SOFTMAX_XENT, DG_OP_VS_CPU);
    load_cases(&relu_cases, DG_OP_RELU_BWD, DG_OP_VS_CPU);
    load_cases(&dropout_cases, DG_OP_DROPOUT, DG_OP_VS_CPU);
    load_cases(&rmsprop_cases, DG_OP_RMSPROP, DG_OP_VS_CPU);
    load_cases(&assemble_cases, DG_OP_ASSEMBLE, DG_OP_VS_CPU);
    load_cases(&bn_cases, DG_OP_BATCHNORM, DG_OP_VS_CPU);
    Suite *suite = suite_create("gpu_ops");
    TCase *conv = tcase_create("conv");
    int conv_count = conv_cases.count;
    tcase_add_loop_test(conv, conv_fp32_measured, 0, conv_count);
    tcase_add_loop_test(conv, conv_fp32_deterministic, 0, conv_count);
    tcase_add_loop_test(conv, conv_tf32, 0, conv_count);
    tcase_add_loop_test(conv, conv_bf16, 0, conv_count);
    tcase_add_loop_test(conv, conv_deterministic_reruns, 0, conv_rerun_cases.count);
    tcase_add_test(conv, algorithm_choice);
    tcase_set_timeout(conv, 300);
    suite_add_tcase(suite, conv);

    TCase *elementwise = tcase_create("elementwise");
    tcase_add_test(elementwise, relu_bwd_exact);
    tcase_add_test(elementwise, gap_exact);
    tcase_add_loop_test(elementwise, maxpool_exact, 0, 2 * pool_cases.count);
    tcase_add_test(elementwise, dropout_exact);
    tcase_add_loop_test(elementwise, dense_vs_cpu, 0, dense_cases.count);
    tcase_add_loop_test(elementwise, dense_bf16, 0, dense_cases.count);
    tcase_add_loop_test(elementwise, softmax_xent_vs_cpu, 0, softmax_cases.count);
    tcase_add_loop_test(elementwise, rmsprop_exact, 0, rmsprop_cases.count);
    tcase_add_loop_test(elementwise, batchnorm_vs_cpu, 0, bn_cases.count);
    tcase_add_loop_test(elementwise, ema_exact, 0, rmsprop_cases.count);
    tcase_add_loop_test(elementwise, adam_exact, 0, rmsprop_cases.count);
    tcase_add_loop_test(elementwise, sgd_exact, 0, 2 * rmsprop_cases.count);
    tcase_set_timeout(elementwise, 300);
    suite_add_tcase(suite, elementwise);

    TCase *data = tcase_create("data");
    tcase_add_loop_test(data, batch_assemble_exact, 0, 2);
    tcase_add_test(data, identity_memory_errors);
    tcase_set_timeout(data, 300);
    suite_add_tcase(suite, data);
    return suite;
}

static struct dg_backend *cuda_or_die(int math, int deterministic, size_t budget)
{
    struct dg_cuda_options options = {0, (enum dg_math)math, deterministic, budget};
    struct dg_backend *be = NULL;
    if (dg_backend_cuda_create(&options, &be) != DG_OK) {
        fprintf(stderr, "gpu_ops: %s\n", dg_error_message());
        exit(EXIT_FAILURE);
    }
    return be;
}

int main(void)
{
    char reason[256];
    if (dg_cuda_probe(reason, sizeof reason) != DG_OK) {
        printf("gpu_ops: skipped: %s\n", reason);
        return 77;
    }
    if (dg_backend_cpu_create(0, &cpu) != DG_OK) {
        fprintf(stderr, "gpu_ops: %s\n", dg_error_message());
        return EXIT_FAILURE;
    }
    gpu = cuda_or_die(DG_MATH_FP32, 0, 0);
    gpu_det = cuda_or_die(DG_MATH_FP32, 1, 0);
    gpu_tf32 = cuda_or_die(DG_MATH_TF32, 0, 0);
    gpu_streamed = cuda_or_die(DG_MATH_FP32, 0, 1);
    gpu_bf16 = cuda_or_die(DG_MATH_BF16, 0, 0);
    if (dg_backend_cpu_create(0, &cpu_bf16) != DG_OK ||
        (dg_backend_cpu_set_math(cpu_bf16, DG_MATH_BF16) != DG_OK &&
         dg_backend_cpu_set_bf16_portable(cpu_bf16) != DG_OK)) {
        fprintf(stderr, "gpu_ops: the CPU's bf16 reference: %s\n", dg_error_message());
        return EXIT_FAILURE;
    }
    dg_error_clear();
    printf("reference: %s\ncandidate: %s\n", cpu->description, gpu->description);

    SRunner *runner = srunner_create(gpu_ops_suite());
    srunner_set_fork_status(runner, CK_NOFORK);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    dg_backend_destroy(cpu_bf16);
    dg_backend_destroy(gpu_bf16);
    dg_backend_destroy(gpu_streamed);
    dg_backend_destroy(gpu_tf32);
    dg_backend_destroy(gpu_det);
    dg_backend_destroy(gpu);
    dg_backend_destroy(cpu);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
