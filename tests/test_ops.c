/* Every op of the CPU backend, called through the vtable, against the naive double-precision
 * reference (tests/support/ref_ops.c), for every kernel family: each instruction set this
 * machine runs (portable C always; AVX2+FMA and AVX-512 on x86-64 CPUs that have them, NEON on
 * aarch64) times each convolution algorithm (im2col + sgemm, direct, Winograd), odd batch
 * sizes included. The shapes are the DG_OP_VS_REF cases of the op table (src/nn/op_cases.c;
 * the thread-determinism and finite-difference shapes too). A family the machine cannot run
 * prints a SKIP line (a failure when DIGITS_REQUIRE_ISA names its ISA).
 * DIGITS_TEST_REDUCED=1 (emulators) and the sanitizer pass shrink the largest batches (each
 * case's reduced batch in the table; dg_test_reduced_batches). Plus
 * finite-difference gradient checks of the reference (double) and of the fast path (float).
 * Tensors NCHW, row-major.
 *
 * Tolerances (docs/DESIGN): forward |got - ref| <= 1e-5 + 1e-4 |ref| per element; backward
 * max |got - ref| <= 1e-3 max |ref| over the tensor; loss sums rtol 1e-5; finite differences
 * max |fd - analytic| <= 1e-2 max |analytic| with a float forward, 1e-6 with the double one.
 * Data movement (pooling routes, dropout masks, ReLU masks, batch assembly) is exact. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_util.h"
#include "cpu/cpu_internal.h"
#include "digits/model.h"
#include "digits/net.h"
#include "math/augment.h"
#include "math/dropout.h"
#include "ref_ops.h"
#include "math/rmsprop.h"
#include "math/adam.h"
#include "math/sgd.h"
#include "nn/op_cases.h"
#include "test_util.h"

struct family {
    enum dg_cpu_isa isa;
    enum dg_cpu_kernels kernels;
    const char *name;
};

static const struct family families[] = {
    {DG_CPU_ISA_SCALAR, DG_CPU_KERNELS_GENERIC, "scalar im2col+sgemm"},
    {DG_CPU_ISA_SCALAR, DG_CPU_KERNELS_DIRECT, "scalar direct"},
    {DG_CPU_ISA_SCALAR, DG_CPU_KERNELS_WINOGRAD, "scalar Winograd"},
    {DG_CPU_ISA_NEON, DG_CPU_KERNELS_GENERIC, "NEON im2col+sgemm"},
    {DG_CPU_ISA_NEON, DG_CPU_KERNELS_DIRECT, "NEON direct"},
    {DG_CPU_ISA_NEON, DG_CPU_KERNELS_WINOGRAD, "NEON Winograd"},
    {DG_CPU_ISA_AVX2, DG_CPU_KERNELS_GENERIC, "AVX2 im2col+sgemm"},
    {DG_CPU_ISA_AVX2, DG_CPU_KERNELS_DIRECT, "AVX2 direct"},
    {DG_CPU_ISA_AVX2, DG_CPU_KERNELS_WINOGRAD, "AVX2 Winograd"},
    {DG_CPU_ISA_AVX512, DG_CPU_KERNELS_GENERIC, "AVX-512 im2col+sgemm"},
    {DG_CPU_ISA_AVX512, DG_CPU_KERNELS_DIRECT, "AVX-512 direct"},
    {DG_CPU_ISA_AVX512, DG_CPU_KERNELS_WINOGRAD, "AVX-512 Winograd"},
};
#define FAMILIES ((int)(sizeof families / sizeof families[0]))
/* Every family sums its convolutions in an order that does not depend on the thread count
 * (the weight gradients of im2col + sgemm and Winograd add fixed image slots). */
#define DETERMINISTIC_FAMILIES FAMILIES

/* The backend of family f, or NULL (after a SKIP line) when its ISA cannot run here. */
static struct dg_backend *family_backend(int f, int threads)
{
    struct dg_backend *be = dg_test_cpu_backend_isa(threads, families[f].isa, families[f].kernels);
    if (be)
        printf("-- %s, %d thread%s\n", families[f].name, threads, threads == 1 ? "" : "s");
    return be;
}

/* Element ops do not depend on the convolution algorithm: one family per ISA runs them. */
static int element_family(int f)
{
    return families[f].kernels == DG_CPU_KERNELS_WINOGRAD;
}

/* Fill with NaN so that an op that leaves an output element unwritten fails its comparison. */
static void poison(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
}

static float *to_float(const double *x, size_t n)
{
    float *f = dg_test_floats(n);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)x[i];
    return f;
}

static void check_ok(enum dg_status status)
{
    ck_assert_msg(status == DG_OK, "backend op failed: %s", dg_error_message());
}

/* ---- the cases: src/nn/op_cases.c, read once in main (before Check forks) ---- */

struct case_list {
    struct dg_op_case at[DG_OP_MAX_CASES];
    int count;
};

/* Against the double reference (shapes as reduced runs shrink them) */
static struct case_list conv_cases, pool_cases, dense_cases, softmax_cases, relu_cases;
static struct case_list dropout_cases, rmsprop_cases, assemble_cases, bn_cases;
/* bit-identical with 1, 2 and 3 threads; finite differences */
static struct case_list conv_thread_cases, dense_thread_cases, conv_grad_cases;
static struct case_list bn_thread_cases, bn_grad_cases;

static void load_cases(struct case_list *list, enum dg_op_kind kind, unsigned want)
{
    list->count = dg_op_cases(kind, want, DG_OP_TEST_BATCH, dg_test_reduced_batches(), list->at,
                              DG_OP_MAX_CASES);
    if (list->count <= 0) {
        fprintf(stderr, "test_ops: no op cases of kind %d: %s\n", (int)kind, dg_error_message());
        exit(EXIT_FAILURE);
    }
}

/* ---- convolution ---- */

struct conv_case {
    int batch, cin, cout, h, w, k;
};

START_TEST(conv_vs_reference)
{
    const struct dg_conv_shape shape = conv_cases.at[_i].conv;
    const struct conv_case the_case = {shape.batch,  shape.in_channels, shape.out_channels,
                                       shape.height, shape.width,       shape.kernel};
    const struct conv_case *c = &the_case;
    printf("conv case \"%s\"\n", conv_cases.at[_i].name);
    size_t hw = (size_t)c->h * c->w;
    size_t nx = (size_t)c->batch * c->cin * hw;
    size_t ny = (size_t)c->batch * c->cout * dg_conv_out_height(&shape) * dg_conv_out_width(&shape);
    size_t nw = (size_t)c->cout * c->cin * c->k * c->k;
    struct dg_test_rng rng = {1000 + (uint64_t)_i};
    float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats(c->cout);
    float *dy = dg_test_floats(ny);
    float scale = 1.0f / sqrtf((float)(c->cin * c->k * c->k));
    dg_test_fill(&rng, x, nx, -1.0f, 1.0f);
    dg_test_fill(&rng, w, nw, -scale, scale);
    dg_test_fill(&rng, b, (size_t)c->cout, -0.5f, 0.5f);
    dg_test_fill(&rng, dy, ny, -1.0f, 1.0f);
    double *xd = dg_test_to_double(x, nx), *wd = dg_test_to_double(w, nw);
    double *bd = dg_test_to_double(b, (size_t)c->cout), *dyd = dg_test_to_double(dy, ny);
    double *y_ref = dg_test_doubles(ny), *y_relu_ref = dg_test_doubles(ny);
    double *dx_ref = dg_test_doubles(nx), *dw_ref = dg_test_doubles(nw);
    double *db_ref = dg_test_doubles((size_t)c->cout);
    dg_ref_conv_fwd(&shape, xd, wd, bd, y_ref, 0);
    for (size_t i = 0; i < ny; i++)
        y_relu_ref[i] = y_ref[i] > 0.0 ? y_ref[i] : 0.0;
    dg_ref_conv_bwd_data(&shape, dyd, wd, dx_ref);
    dg_ref_conv_bwd_filter(&shape, xd, dyd, dw_ref, db_ref);

    float *y = dg_test_floats(ny), *dx = dg_test_floats(nx), *dw = dg_test_floats(nw);
    float *db = dg_test_floats((size_t)c->cout);
    for (int f = 0; f < FAMILIES; f++) {
        struct dg_backend *be = family_backend(f, 3);
        if (!be)
            continue;
        printf("conv %d x %d -> %d, %dx%d, k %d, stride %d%s, %s (%s)\n", c->batch, c->cin,
               c->cout, c->h, c->w, c->k, dg_conv_stride(&shape), shape.valid ? ", valid" : "",
               families[f].name, be->description);
        void *plan = NULL;
        check_ok(be->ops->conv_plan_create(be, &shape, &plan));
        for (int repeat = 0; repeat < 2; repeat++) {
            poison(y, ny);
            check_ok(be->ops->conv_fwd(be, plan, x, w, b, y, 0));
            ck_assert(dg_test_close("conv fwd", y, y_ref, ny, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
            poison(y, ny);
            check_ok(be->ops->conv_fwd(be, plan, x, w, b, y, 1));
            ck_assert(dg_test_close("conv fwd relu", y, y_relu_ref, ny, DG_TEST_FWD_ATOL,
                                    DG_TEST_FWD_RTOL));
            poison(dx, nx);
            check_ok(be->ops->conv_bwd_data(be, plan, dy, w, dx));
            ck_assert(dg_test_close_max("conv bwd data", dx, dx_ref, nx, DG_TEST_BWD_RTOL));
            poison(dw, nw);
            poison(db, (size_t)c->cout);
            check_ok(be->ops->conv_bwd_filter(be, plan, x, dy, dw, db));
            ck_assert(dg_test_close_max("conv bwd filter dw", dw, dw_ref, nw, DG_TEST_BWD_RTOL));
            ck_assert(dg_test_close_max("conv bwd filter db", db, db_ref, (size_t)c->cout,
                                        DG_TEST_BWD_RTOL));
        }
        be->ops->conv_plan_free(be, plan);
        dg_backend_destroy(be);
    }
    free(x), free(w), free(b), free(dy), free(xd), free(wd), free(bd), free(dyd);
    free(y_ref), free(y_relu_ref), free(dx_ref), free(dw_ref), free(db_ref);
    free(y), free(dx), free(dw), free(db);
}
END_TEST

/* The same convolution with 1, 2 and 3 threads: every output of the direct and the Winograd
 * kernels is summed in one fixed order whatever the thread count, so all three runs are
 * bit-identical. */
START_TEST(conv_deterministic)
{
    const int f = _i;
    for (int si = 0; si < conv_thread_cases.count; si++) {
        const struct dg_conv_shape *s = &conv_thread_cases.at[si].conv;
        size_t hw = (size_t)s->height * s->width;
        size_t nx = (size_t)s->batch * s->in_channels * hw;
        size_t ny = (size_t)s->batch * s->out_channels * dg_conv_out_height(s) *
                    dg_conv_out_width(s);
        size_t nw = (size_t)s->out_channels * s->in_channels * s->kernel * s->kernel;
        size_t nb = (size_t)s->out_channels;
        struct dg_test_rng rng = {77};
        float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats(nb);
        float *dy = dg_test_floats(ny);
        dg_test_fill(&rng, x, nx, -1, 1);
        dg_test_fill(&rng, w, nw, -0.1f, 0.1f);
        dg_test_fill(&rng, b, nb, -1, 1);
        dg_test_fill(&rng, dy, ny, -1, 1);
        float *out[3][4];
        for (int run = 0; run < 3; run++) {
            struct dg_backend *be = family_backend(f, run + 1);
            if (!be) {
                free(x), free(w), free(b), free(dy);
                return;
            }
            void *plan;
            out[run][0] = dg_test_floats(ny), out[run][1] = dg_test_floats(nx);
            out[run][2] = dg_test_floats(nw), out[run][3] = dg_test_floats(nb);
            check_ok(be->ops->conv_plan_create(be, s, &plan));
            check_ok(be->ops->conv_fwd(be, plan, x, w, b, out[run][0], 1));
            check_ok(be->ops->conv_bwd_data(be, plan, dy, w, out[run][1]));
            check_ok(be->ops->conv_bwd_filter(be, plan, x, dy, out[run][2], out[run][3]));
            be->ops->conv_plan_free(be, plan);
            dg_backend_destroy(be);
        }
        printf("%s, k %d:\n", families[f].name, s->kernel);
        ck_assert(dg_test_equal("fwd 1 vs 2 threads", out[0][0], out[1][0], ny));
        ck_assert(dg_test_equal("bwd data 1 vs 2 threads", out[0][1], out[1][1], nx));
        ck_assert(dg_test_equal("bias grad 1 vs 2 threads", out[0][3], out[1][3], nb));
        ck_assert(dg_test_equal("bwd filter 1 vs 2 threads", out[0][2], out[1][2], nw));
        ck_assert(dg_test_equal("fwd 1 vs 3 threads", out[0][0], out[2][0], ny));
        ck_assert(dg_test_equal("bwd data 1 vs 3 threads", out[0][1], out[2][1], nx));
        ck_assert(dg_test_equal("bwd filter 1 vs 3 threads", out[0][2], out[2][2], nw));
        for (int run = 0; run < 3; run++)
            for (int k = 0; k < 4; k++)
                free(out[run][k]);
        free(x), free(w), free(b), free(dy);
    }
}
END_TEST

/* A 3x3 image through a 3x3 kernel, worked by hand. Output channel c uses (c+1) times the
 * kernel, so 1 channel runs the generic path and 16 channels the vector path.
 *   x = 1 2 3    w = 0 1 0     y(r,c) = x(r-1,c) + 2 x(r,c+1) - x(r+1,c-1)  (+ bias 0.5)
 *       4 5 6        0 0 2
 *       7 8 9       -1 0 0 */
START_TEST(conv_by_hand)
{
    static const float image[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    static const float kernel[9] = {0, 1, 0, 0, 0, 2, -1, 0, 0};
    static const float expect[9] = {4, 2, -5, 11, 7, -5, 20, 23, 6};
    static const int couts[2] = {1, 16};
    for (int f = 0; f < FAMILIES; f++) {
        struct dg_backend *be = family_backend(f, 2);
        if (!be)
            continue;
        for (int cc = 0; cc < 2; cc++) {
            int cout = couts[cc];
            struct dg_conv_shape shape = {1, 1, cout, 3, 3, 3, 1, 0, 0};
            float w[16 * 9], bias[16], y[16 * 9];
            for (int c = 0; c < cout; c++) {
                bias[c] = 0.5f;
                for (int k = 0; k < 9; k++)
                    w[c * 9 + k] = kernel[k] * (float)(c + 1);
            }
            void *plan;
            check_ok(be->ops->conv_plan_create(be, &shape, &plan));
            for (int relu = 0; relu < 2; relu++) {
                poison(y, (size_t)cout * 9);
                check_ok(be->ops->conv_fwd(be, plan, image, w, bias, y, relu));
                for (int c = 0; c < cout; c++)
                    for (int k = 0; k < 9; k++) {
                        float want = expect[k] * (float)(c + 1) + 0.5f;
                        if (relu && want < 0.0f)
                            want = 0.0f;
                        ck_assert_msg(y[c * 9 + k] == want,
                                      "%s cout %d relu %d: y[%d][%d] = %g, "
                                      "want %g",
                                      families[f].name, cout, relu, c, k, (double)y[c * 9 + k],
                                      (double)want);
                    }
            }
            be->ops->conv_plan_free(be, plan);
        }
        dg_backend_destroy(be);
    }
}
END_TEST

/* ---- ReLU, pooling, dropout ---- */

START_TEST(relu_bwd_exact)
{
    const size_t n = relu_cases.at[_i].count;
    struct dg_test_rng rng = {5 + (uint64_t)_i};
    float *y = dg_test_floats(n), *dy = dg_test_floats(n), *dy0 = dg_test_floats(n);
    dg_test_fill(&rng, y, n, -1, 1);
    for (size_t i = 0; i < n; i += 7)
        y[i] = 0.0f;
    dg_test_fill(&rng, dy0, n, -1, 1);
    double *yd = dg_test_to_double(y, n), *ref = dg_test_to_double(dy0, n);
    dg_ref_relu_bwd(n, yd, ref);
    float *want = to_float(ref, n);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 2);
        if (!be)
            continue;
        memcpy(dy, dy0, n * sizeof(float));
        check_ok(be->ops->relu_bwd(be, n, y, dy));
        ck_assert(dg_test_equal("relu bwd", dy, want, n));
        dg_backend_destroy(be);
    }
    free(y), free(dy), free(dy0), free(yd), free(ref), free(want);
}
END_TEST

/* Global average pooling against the mean in double (within half an ulp of it, and a hair for
 * the double sum), the gradient against dy / spatial in double, the same floats for 1 and 3
 * threads, and the backward the transpose of the forward (<gap_fwd(x), g> = <x, gap_bwd(g)>
 * in double, within the rounding of both). Odd and edge sizes: one value per plane, one plane. */
START_TEST(gap_vs_reference)
{
    static const struct {
        size_t rows;
        int spatial;
    } cases[] = {{86 * 64, 16}, {3 * 5, 49}, {7, 1}, {1, 784}, {2 * 33, 169}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t rows = cases[k].rows, n = rows * (size_t)cases[k].spatial;
        int spatial = cases[k].spatial;
        struct dg_test_rng rng = {700 + (uint64_t)k};
        float *x = dg_test_floats(n), *dx = dg_test_floats(n), *dx3 = dg_test_floats(n);
        float *y = dg_test_floats(rows), *y3 = dg_test_floats(rows), *g = dg_test_floats(rows);
        dg_test_fill(&rng, x, n, -1.0f, 1.0f);
        dg_test_fill(&rng, g, rows, -1.0f, 1.0f);
        struct dg_backend *one = dg_test_cpu_backend(1, DG_CPU_KERNELS_AUTO);
        struct dg_backend *three = dg_test_cpu_backend(3, DG_CPU_KERNELS_AUTO);
        check_ok(one->ops->gap_fwd(one, rows, spatial, x, y));
        check_ok(three->ops->gap_fwd(three, rows, spatial, x, y3));
        check_ok(one->ops->gap_bwd(one, rows, spatial, g, dx));
        check_ok(three->ops->gap_bwd(three, rows, spatial, g, dx3));
        ck_assert(dg_test_equal("gap fwd, 1 and 3 threads", y3, y, rows));
        ck_assert(dg_test_equal("gap bwd, 1 and 3 threads", dx3, dx, n));
        double forward = 0.0, backward = 0.0, scale = 0.0;
        for (size_t r = 0; r < rows; r++) {
            double mean = 0.0;
            for (int i = 0; i < spatial; i++)
                mean += x[r * (size_t)spatial + (size_t)i];
            mean /= spatial;
            ck_assert_msg(fabs(y[r] - mean) <= 0.5 * 0x1p-23 * fabs(mean) + 1e-15,
                          "gap fwd row %zu: %.9g, mean %.17g", r, (double)y[r], mean);
            double grad = g[r] / (double)spatial;
            for (int i = 0; i < spatial; i++) {
                float got = dx[r * (size_t)spatial + (size_t)i];
                ck_assert_msg(fabs(got - grad) <= 0.5 * 0x1p-23 * fabs(grad),
                              "gap bwd row %zu: %.9g, dy / spatial %.17g", r, (double)got, grad);
                backward += (double)x[r * (size_t)spatial + (size_t)i] * got;
                scale += fabs((double)x[r * (size_t)spatial + (size_t)i] * got);
            }
            forward += (double)y[r] * g[r];
        }
        ck_assert_msg(fabs(forward - backward) <= 2.0 * 0x1p-24 * scale + 1e-12,
                      "gap: <fwd x, g> %.17g, <x, bwd g> %.17g", forward, backward);
        dg_backend_destroy(one);
        dg_backend_destroy(three);
        free(x), free(dx), free(dx3), free(y), free(y3), free(g);
    }
}
END_TEST

START_TEST(maxpool_vs_reference)
{
    const struct dg_pool_shape *s = &pool_cases.at[_i].pool;
    size_t nx = (size_t)s->batch * s->channels * s->height * s->width;
    size_t ny = (size_t)s->batch * s->channels * (s->height / 2) * (s->width / 2);
    struct dg_test_rng rng = {300 + (uint64_t)_i};
    float *x = dg_test_floats(nx), *dy = dg_test_floats(ny), *y = dg_test_floats(ny + 1);
    float *dx = dg_test_floats(nx);
    /* values from {0, 1, 2, 3}: most windows have ties */
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)dg_test_below(&rng, 4);
    dg_test_fill(&rng, dy, ny, -1, 1);
    double *xd = dg_test_to_double(x, nx), *dyd = dg_test_to_double(dy, ny);
    double *y_ref = dg_test_doubles(ny + 1), *dx_ref = dg_test_doubles(nx);
    dg_ref_maxpool_fwd(s, xd, y_ref);
    dg_ref_maxpool_bwd(s, xd, dyd, dx_ref);
    float *y_want = to_float(y_ref, ny), *dx_want = to_float(dx_ref, nx);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 2);
        if (!be)
            continue;
        poison(y, ny);
        check_ok(be->ops->maxpool_fwd(be, s, x, y));
        ck_assert(dg_test_equal("maxpool fwd", y, y_want, ny));
        poison(dx, nx);
        check_ok(be->ops->maxpool_bwd(be, s, x, y, dy, dx));
        ck_assert(dg_test_equal("maxpool bwd (first maximum)", dx, dx_want, nx));
        dg_backend_destroy(be);
    }
    free(x), free(dy), free(y), free(dx), free(xd), free(dyd), free(y_ref), free(dx_ref);
    free(y_want), free(dx_want);
}
END_TEST

/* Ties resolved by hand: window (a b / c d) routes to the first maximum in row-major order. */
START_TEST(maxpool_ties_by_hand)
{
    const struct dg_pool_shape s = {1, 1, 2, 8, 0};
    const float x[16] = {1, 1, 0, 2, 5, 3, 0, 0, /* row 0 */
                         1, 0, 2, 2, 5, 5, 0, 0 /* row 1 */};
    const float dy[4] = {10, 20, 30, 40};
    const float want[16] = {10, 0, 0, 20, 30, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 1);
        if (!be)
            continue;
        float y[4], dx[16];
        check_ok(be->ops->maxpool_fwd(be, &s, x, y));
        ck_assert(y[0] == 1 && y[1] == 2 && y[2] == 5 && y[3] == 0);
        check_ok(be->ops->maxpool_bwd(be, &s, x, y, dy, dx));
        ck_assert(dg_test_equal("maxpool ties", dx, want, 16));
        dg_backend_destroy(be);
    }
}
END_TEST

START_TEST(dropout_masks)
{
    const float rates[] = {0.25f, 0.5f};
    struct dg_dropout_key key = {0x1234567890ull, 1, 3, 41, 0, 0};
    for (int si = 0; si < dropout_cases.count; si++)
        for (size_t ri = 0; ri < 2; ri++) {
            size_t n = dropout_cases.at[si].count;
            float rate = rates[ri];
            struct dg_test_rng rng = {n};
            float *x = dg_test_floats(n), *y = dg_test_floats(n), *want = dg_test_floats(n);
            dg_test_fill(&rng, x, n, -2, 2);
            for (size_t i = 0; i < n; i++)
                want[i] =
                    x[i] * dg_dropout_scale(rate, key.seed, key.layer, key.epoch, key.step, i);
            double *xd = dg_test_to_double(x, n), *ref = dg_test_doubles(n);
            dg_ref_dropout(n, rate, &key, xd, ref);
            for (int f = 0; f < FAMILIES; f++) {
                if (!element_family(f))
                    continue;
                struct dg_backend *be = family_backend(f, 2);
                if (!be)
                    continue;
                poison(y, n);
                check_ok(be->ops->dropout_fwd(be, n, rate, &key, x, y));
                ck_assert(dg_test_equal("dropout fwd = element math", y, want, n));
                ck_assert(
                    dg_test_close("dropout fwd", y, ref, n, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
                poison(y, n);
                check_ok(be->ops->dropout_bwd(be, n, rate, &key, x, y));
                ck_assert(dg_test_equal("dropout bwd = element math", y, want, n));
                /* in place */
                memcpy(y, x, n * sizeof(float));
                check_ok(be->ops->dropout_fwd(be, n, rate, &key, y, y));
                ck_assert(dg_test_equal("dropout in place", y, want, n));
                dg_backend_destroy(be);
            }
            free(x), free(y), free(want), free(xd), free(ref);
        }
}
END_TEST

/* The CPU keeps the last DG_CPU_DROPOUT_MEMOS ops' masks: a backward with the forward's key
 * multiplies by them. Every result is the element math's, whether the masks were kept, drawn
 * again after being pushed out, or drawn for another rate; flat and NHWC keys. */
enum { DROP_IMAGES = 3, DROP_C = 5, DROP_SP = 7, DROP_FLAT = 3000 };

/* One dropout pass (forward or backward) of v into y, against the element math: element i
 * takes the scale of its index (NHWC: of its NCHW index). */
static void check_dropout(struct dg_backend *be, int backward, const float *v, size_t n, int nhwc,
                          float rate, const struct dg_dropout_key *k, float *y, float *want,
                          const char *what)
{
    for (size_t i = 0; i < n; i++) {
        size_t at = i;
        if (nhwc) {
            size_t b = i / (DROP_C * DROP_SP), p = i % (DROP_C * DROP_SP) / DROP_C;
            at = (b * DROP_C + i % DROP_C) * DROP_SP + p;
        }
        want[i] = v[i] * dg_dropout_scale(rate, k->seed, k->layer, k->epoch, k->step, at);
    }
    poison(y, n);
    check_ok((backward ? be->ops->dropout_bwd : be->ops->dropout_fwd)(be, n, rate, k, v, y));
    ck_assert_msg(dg_test_equal(what, y, want, n), "%s", what);
}

START_TEST(dropout_backward_takes_the_forward_masks)
{
    for (int nhwc = 0; nhwc < 2; nhwc++) {
        size_t n = nhwc ? (size_t)DROP_IMAGES * DROP_C * DROP_SP : DROP_FLAT;
        struct dg_test_rng rng = {77 + (uint64_t)nhwc};
        float *x = dg_test_floats(n), *dy = dg_test_floats(n), *y = dg_test_floats(n);
        float *want = dg_test_floats(n);
        dg_test_fill(&rng, x, n, -2, 2);
        dg_test_fill(&rng, dy, n, -2, 2);
        for (int f = 0; f < FAMILIES; f++) {
            if (!element_family(f))
                continue;
            struct dg_backend *be = family_backend(f, 2);
            if (!be)
                continue;
            struct dg_cpu *cpu = be->impl;
            struct dg_dropout_key first = {99, 2, 1, 5, nhwc ? DROP_C : 0, nhwc ? DROP_SP : 0};
            check_dropout(be, 0, x, n, nhwc, 0.4f, &first, y, want, "dropout fwd");
            int kept = 0;
            for (int m = 0; m < DG_CPU_DROPOUT_MEMOS; m++)
                kept += cpu->dropout_memo[m].scale && cpu->dropout_memo[m].n == n &&
                        cpu->dropout_memo[m].key.step == first.step;
            ck_assert_int_eq(kept, 1);
            check_dropout(be, 1, dy, n, nhwc, 0.4f, &first, y, want, "dropout bwd, kept masks");
            /* the same key at another rate is drawn anew */
            check_dropout(be, 1, dy, n, nhwc, 0.25f, &first, y, want, "dropout bwd, another rate");
            /* more ops than kept masks: the first is pushed out and drawn again */
            for (uint32_t step = 6; step < 6 + DG_CPU_DROPOUT_MEMOS + 1; step++) {
                struct dg_dropout_key other = first;
                other.step = step;
                check_dropout(be, 0, x, n, nhwc, 0.4f, &other, y, want,
                              "dropout fwd, another step");
            }
            check_dropout(be, 1, dy, n, nhwc, 0.4f, &first, y, want, "dropout bwd, drawn again");
            dg_backend_destroy(be);
        }
        free(x), free(dy), free(y), free(want);
    }
}
END_TEST

/* ---- dense ---- */

START_TEST(dense_vs_reference)
{
    const struct dg_op_dense_shape *c = &dense_cases.at[_i].dense;
    size_t nx = (size_t)c->batch * c->in, ny = (size_t)c->batch * c->out;
    size_t nw = (size_t)c->in * c->out;
    struct dg_test_rng rng = {500 + (uint64_t)_i};
    float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats(c->out);
    float *dy = dg_test_floats(ny);
    float scale = 1.0f / sqrtf((float)c->in);
    dg_test_fill(&rng, x, nx, -1, 1);
    dg_test_fill(&rng, w, nw, -scale, scale);
    dg_test_fill(&rng, b, (size_t)c->out, -0.5f, 0.5f);
    dg_test_fill(&rng, dy, ny, -1, 1);
    double *xd = dg_test_to_double(x, nx), *wd = dg_test_to_double(w, nw);
    double *bd = dg_test_to_double(b, (size_t)c->out), *dyd = dg_test_to_double(dy, ny);
    double *y_ref = dg_test_doubles(ny), *dx_ref = dg_test_doubles(nx);
    double *dw_ref = dg_test_doubles(nw), *db_ref = dg_test_doubles((size_t)c->out);
    dg_ref_dense_fwd(c->batch, c->in, c->out, xd, wd, bd, y_ref, c->relu);
    dg_ref_dense_bwd(c->batch, c->in, c->out, xd, wd, dyd, dx_ref, dw_ref, db_ref);
    float *y = dg_test_floats(ny), *dx = dg_test_floats(nx), *dw = dg_test_floats(nw);
    float *db = dg_test_floats((size_t)c->out);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 3);
        if (!be)
            continue;
        printf("dense %d x %d -> %d relu %d, %s\n", c->batch, c->in, c->out, c->relu,
               dg_cpu_isa_label(families[f].isa));
        poison(y, ny);
        check_ok(be->ops->dense_fwd(be, c->batch, c->in, c->out, x, w, b, y, c->relu));
        ck_assert(dg_test_close("dense fwd", y, y_ref, ny, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        poison(dx, nx);
        poison(dw, nw);
        poison(db, (size_t)c->out);
        check_ok(be->ops->dense_bwd(be, c->batch, c->in, c->out, x, w, dy, dx, dw, db));
        ck_assert(dg_test_close_max("dense dx", dx, dx_ref, nx, DG_TEST_BWD_RTOL));
        ck_assert(dg_test_close_max("dense dw", dw, dw_ref, nw, DG_TEST_BWD_RTOL));
        ck_assert(dg_test_close_max("dense db", db, db_ref, (size_t)c->out, DG_TEST_BWD_RTOL));
        poison(dw, nw);
        poison(db, (size_t)c->out);
        check_ok(be->ops->dense_bwd(be, c->batch, c->in, c->out, x, w, dy, NULL, dw, db));
        ck_assert(dg_test_close_max("dense dw (dx NULL)", dw, dw_ref, nw, DG_TEST_BWD_RTOL));
        ck_assert(
            dg_test_close_max("dense db (dx NULL)", db, db_ref, (size_t)c->out, DG_TEST_BWD_RTOL));
        dg_backend_destroy(be);
    }
    free(x), free(w), free(b), free(dy), free(xd), free(wd), free(bd), free(dyd);
    free(y_ref), free(dx_ref), free(dw_ref), free(db_ref), free(y), free(dx), free(dw), free(db);
}
END_TEST

/* Dense forward and backward with 1, 2 and 3 threads, full and small batches: bit-identical
 * (sgemm calls of a fixed shape; OpenBLAS' rounding can depend on the shape of a call). */
START_TEST(dense_deterministic)
{
    const int in = dense_thread_cases.at[0].dense.in, out = dense_thread_cases.at[0].dense.out;
    struct dg_test_rng rng = {808};
    size_t max_batch = 0;
    for (int bi = 0; bi < dense_thread_cases.count; bi++) {
        const struct dg_op_dense_shape *d = &dense_thread_cases.at[bi].dense;
        ck_assert(d->in == in && d->out == out);
        if ((size_t)d->batch > max_batch)
            max_batch = (size_t)d->batch;
    }
    float *x = dg_test_floats(max_batch * in), *w = dg_test_floats((size_t)in * out);
    float *b = dg_test_floats(out), *dy = dg_test_floats(max_batch * out);
    dg_test_fill(&rng, x, max_batch * in, -1, 1);
    dg_test_fill(&rng, w, (size_t)in * out, -0.02f, 0.02f);
    dg_test_fill(&rng, b, out, -0.5f, 0.5f);
    dg_test_fill(&rng, dy, max_batch * out, -1, 1);
    for (int bi = 0; bi < dense_thread_cases.count; bi++) {
        int batch = dense_thread_cases.at[bi].dense.batch;
        float *got[3][4];
        for (int run = 0; run < 3; run++) {
            struct dg_backend *be = dg_test_cpu_backend(run + 1, DG_CPU_KERNELS_AUTO);
            got[run][0] = dg_test_floats((size_t)batch * out);
            got[run][1] = dg_test_floats((size_t)batch * in);
            got[run][2] = dg_test_floats((size_t)in * out);
            got[run][3] = dg_test_floats(out);
            check_ok(be->ops->dense_fwd(be, batch, in, out, x, w, b, got[run][0], 1));
            check_ok(be->ops->dense_bwd(be, batch, in, out, x, w, dy, got[run][1], got[run][2],
                                        got[run][3]));
            dg_backend_destroy(be);
        }
        printf("dense batch %d:\n", batch);
        for (int run = 1; run < 3; run++) {
            ck_assert(dg_test_equal("dense fwd", got[run][0], got[0][0], (size_t)batch * out));
            ck_assert(dg_test_equal("dense dx", got[run][1], got[0][1], (size_t)batch * in));
            ck_assert(dg_test_equal("dense dw", got[run][2], got[0][2], (size_t)in * out));
            ck_assert(dg_test_equal("dense db", got[run][3], got[0][3], out));
        }
        for (int run = 0; run < 3; run++)
            for (int k = 0; k < 4; k++)
                free(got[run][k]);
    }
    free(x), free(w), free(b), free(dy);
}
END_TEST

/* ---- softmax + cross-entropy, RMSprop ---- */

START_TEST(softmax_xent_vs_reference)
{
    int batch = softmax_cases.at[_i].batch;
    size_t n = (size_t)batch * DG_CLASSES;
    struct dg_test_rng rng = {700 + (uint64_t)_i};
    float *logits = dg_test_floats(n), *probs = dg_test_floats(n), *grad = dg_test_floats(n);
    uint8_t *labels = dg_test_bytes((size_t)batch);
    dg_test_fill(&rng, logits, n, -6, 6);
    for (int r = 0; r < batch; r++)
        labels[r] = (uint8_t)dg_test_below(&rng, DG_CLASSES);
    /* a row with a tie for the maximum: the first one is the prediction */
    logits[3] = logits[7] = 50.0f;
    labels[0] = 7;
    double *ld = dg_test_to_double(logits, n), *p_ref = dg_test_doubles(n);
    double *g_ref = dg_test_doubles(n);
    /* without and with label smoothing (0.1, Keras' usual value) */
    for (int smoothed = 0; smoothed < 2; smoothed++) {
    const float smoothing = smoothed ? 0.1f : 0.0f;
    double loss_ref = 0.0, correct_ref = 0.0;
    dg_ref_softmax_xent(batch, ld, labels, (double)smoothing, p_ref, g_ref, &loss_ref,
                        &correct_ref);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 2);
        if (!be)
            continue;
        double stats[2] = {1.5, 2.0};
        poison(probs, n);
        poison(grad, n);
        check_ok(
            be->ops->softmax_xent(be, batch, logits, labels, smoothing, probs, grad, stats, NULL));
        ck_assert(
            dg_test_close("softmax probs", probs, p_ref, n, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        ck_assert(
            dg_test_close("xent dlogits", grad, g_ref, n, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        ck_assert_double_le(fabs(stats[0] - 1.5 - loss_ref), DG_TEST_LOSS_RTOL * fabs(loss_ref));
        ck_assert_double_eq(stats[1], 2.0 + correct_ref);
        /* inference: probabilities only, the gradient and the stats left alone */
        poison(probs, n);
        poison(grad, n);
        double before[2] = {stats[0], stats[1]};
        check_ok(be->ops->softmax_xent(be, batch, logits, NULL, smoothing, probs, grad, stats, NULL));
        ck_assert(dg_test_close("softmax probs (no labels)", probs, p_ref, n, DG_TEST_FWD_ATOL,
                                DG_TEST_FWD_RTOL));
        ck_assert(isnan(grad[0]) && isnan(grad[n - 1]));
        ck_assert(stats[0] == before[0] && stats[1] == before[1]);
        /* labels without a gradient buffer */
        check_ok(be->ops->softmax_xent(be, batch, logits, labels, smoothing, probs, NULL, stats,
                                       NULL));
        ck_assert_double_eq(stats[1], 2.0 + 2.0 * correct_ref);
        dg_backend_destroy(be);
    }
    }
    free(logits), free(probs), free(grad), free(labels), free(ld), free(p_ref), free(g_ref);
}
END_TEST

START_TEST(rmsprop_vs_element_math)
{
    const size_t n = rmsprop_cases.at[_i].count;
    const float lr = 0.001f, rho = 0.9f, eps = 1e-7f;
    struct dg_test_rng rng = {9 + (uint64_t)_i};
    float *w0 = dg_test_floats(n), *g = dg_test_floats(n), *a0 = dg_test_floats(n);
    dg_test_fill(&rng, w0, n, -1, 1);
    dg_test_fill(&rng, g, n, -0.1f, 0.1f);
    dg_test_fill(&rng, a0, n, 0, 0.01f);
    for (size_t i = 0; i < n; i += 101)
        g[i] = 0.0f;
    float *w_want = dg_test_floats(n), *a_want = dg_test_floats(n);
    memcpy(w_want, w0, n * sizeof(float));
    memcpy(a_want, a0, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        dg_rmsprop_element(&w_want[i], &a_want[i], g[i], lr, rho, eps);
    double *w_ref = dg_test_to_double(w0, n), *a_ref = dg_test_to_double(a0, n);
    double *gd = dg_test_to_double(g, n);
    dg_ref_rmsprop(n, w_ref, gd, a_ref, lr, rho, eps);
    float *w = dg_test_floats(n), *a = dg_test_floats(n);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 3);
        if (!be)
            continue;
        memcpy(w, w0, n * sizeof(float));
        memcpy(a, a0, n * sizeof(float));
        check_ok(be->ops->rmsprop(be, n, w, g, a, lr, rho, eps));
        ck_assert(dg_test_equal("rmsprop w = element math", w, w_want, n));
        ck_assert(dg_test_equal("rmsprop acc = element math", a, a_want, n));
        ck_assert(dg_test_close("rmsprop w", w, w_ref, n, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        ck_assert(dg_test_close("rmsprop acc", a, a_ref, n, 1e-9, DG_TEST_FWD_RTOL));
        dg_backend_destroy(be);
    }
    free(w0), free(g), free(a0), free(w_want), free(a_want), free(w_ref), free(a_ref), free(gd);
    free(w), free(a);
}
END_TEST

/* ---- data ---- */

/* The float warp against the double one: sampling positions differ by float rounding of the
 * affine map (|position| <= 28, relative 6e-8: about 2e-6 pixel) and sin/cos by the
 * polynomial's error (below 2.4e-7); the bilinear value moves at most 1 (a full 0..1 step)
 * per pixel of position, so 2e-5 leaves a margin of ten. */
#define AUGMENT_ATOL 2e-5

START_TEST(batch_assemble_vs_element_math)
{
    const size_t images = 50;
    struct dg_test_rng rng = {11};
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
    const struct dg_augment_key augment = {0xfeedull, 2, 5, 10.0f, 0.1f, 0.1f};
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 2);
        if (!be)
            continue;
        void *handle = NULL, *handle_unlabelled = NULL;
        check_ok(be->ops->dataset_attach(be, &dataset, &handle));
        check_ok(be->ops->dataset_attach(be, &unlabelled, &handle_unlabelled));
        for (int ci = 0; ci < assemble_cases.count; ci++) {
            int n = assemble_cases.at[ci].batch;
            uint32_t *rows = dg_test_bytes((size_t)n * sizeof(uint32_t));
            for (int i = 0; i < n; i++)
                rows[i] = dg_test_below(&rng, (uint32_t)images);
            float *x = dg_test_floats((size_t)n * DG_PIXELS);
            float *want = dg_test_floats((size_t)n * DG_PIXELS);
            uint8_t *labels = dg_test_bytes((size_t)n), *want_labels = dg_test_bytes((size_t)n);
            for (int aug = 0; aug < 2; aug++) {
                const struct dg_augment_key *key = aug ? &augment : NULL;
                dg_ref_batch_assemble(&dataset, rows, n, key, want, want_labels);
                poison(x, (size_t)n * DG_PIXELS);
                memset(labels, 0xee, (size_t)n);
                check_ok(be->ops->batch_assemble(be, handle, rows, n, key, x, labels));
                ck_assert(dg_test_equal(aug ? "augmented batch" : "plain batch", x, want,
                                        (size_t)n * DG_PIXELS));
                /* the independent double warp (libm sin/cos, its own Philox) */
                double *ref = dg_test_doubles((size_t)n * DG_PIXELS);
                dg_ref_batch_assemble_double(&dataset, rows, n, key, ref);
                ck_assert(
                    dg_test_close(aug ? "augmented batch vs double warp" : "plain batch vs double",
                                  x, ref, (size_t)n * DG_PIXELS, AUGMENT_ATOL, 0.0));
                free(ref);
                ck_assert_mem_eq(labels, want_labels, (size_t)n);
                /* no labels in the dataset: the label buffer is left alone */
                memset(labels, 0xee, (size_t)n);
                check_ok(be->ops->batch_assemble(be, handle_unlabelled, rows, n, key, x, labels));
                ck_assert(dg_test_equal("unlabelled batch", x, want, (size_t)n * DG_PIXELS));
                for (int i = 0; i < n; i++)
                    ck_assert_uint_eq(labels[i], 0xee);
                check_ok(be->ops->batch_assemble(be, handle, rows, n, key, x, NULL));
            }
            /* the warp really moves pixels */
            int moved = 0;
            for (size_t i = 0; i < (size_t)n * DG_PIXELS; i++)
                moved +=
                    want[i] != dg_pixel_to_float(
                                   store[(size_t)rows[i / DG_PIXELS] * DG_PIXELS + i % DG_PIXELS]);
            ck_assert_int_gt(moved, n * 100);
            free(rows), free(x), free(want), free(labels), free(want_labels);
        }
        uint32_t bad_row = (uint32_t)images;
        float x[DG_PIXELS];
        ck_assert_int_ne(be->ops->batch_assemble(be, handle, &bad_row, 1, NULL, x, NULL), DG_OK);
        be->ops->dataset_detach(be, handle);
        be->ops->dataset_detach(be, handle_unlabelled);
        dg_backend_destroy(be);
    }
    free(store), free(store_labels);
}
END_TEST

/* The polynomial sine and cosine of the augmentation against libm over +-45 degrees (the
 * contract of dg_sincos_poly; training uses +-10): within 1.2e-7 (one float ulp near 1). */
START_TEST(sincos_polynomial_accuracy)
{
    double worst_s = 0.0, worst_c = 0.0, at_s = 0.0, at_c = 0.0;
    for (int i = -45000; i <= 45000; i++) {
        float degrees = (float)i * 0.001f;
        float x = degrees * (3.14159265358979f / 180.0f);
        float s, c;
        dg_sincos_poly(x, &s, &c);
        double es = fabs((double)s - sin((double)x)), ec = fabs((double)c - cos((double)x));
        if (es > worst_s)
            worst_s = es, at_s = degrees;
        if (ec > worst_c)
            worst_c = ec, at_c = degrees;
    }
    printf("sin: worst error %.3g at %.3f degrees; cos: %.3g at %.3f degrees\n", worst_s, at_s,
           worst_c, at_c);
    ck_assert_double_le(worst_s, 1.2e-7);
    ck_assert_double_le(worst_c, 1.2e-7);
}
END_TEST

/* The reference's Philox against the Random123 known-answer vectors (philox4x32_10). */
START_TEST(reference_philox_known_answers)
{
    static const uint32_t counters[3][4] = {{0, 0, 0, 0},
                                            {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                                            {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}};
    static const uint64_t keys[3] = {0, 0xffffffffffffffffull, 0x299f31d0a4093822ull};
    static const uint32_t want[3][4] = {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
                                        {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
                                        {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}};
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        dg_ref_philox(counters[v], keys[v], out);
        for (int k = 0; k < 4; k++)
            ck_assert_uint_eq(out[k], want[v][k]);
    }
}
END_TEST

/* ---- backend basics ---- */

START_TEST(backend_identity_and_memory)
{
    struct dg_backend *be = NULL;
    ck_assert_int_eq(dg_backend_cpu_create(0, &be), DG_OK);
    ck_assert_str_eq(be->name, "cpu");
    ck_assert_ptr_nonnull(strstr(be->description, "cpu: "));
    ck_assert_ptr_nonnull(strstr(be->description, "OpenBLAS"));
    printf("%s\n", be->description);
    void *p = NULL;
    check_ok(be->ops->alloc(be, 1000, &p));
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(((unsigned char *)p)[i], 0);
    const char text[] = "digits";
    char back[sizeof text];
    check_ok(be->ops->upload(be, p, text, sizeof text));
    check_ok(be->ops->download(be, back, p, sizeof text));
    check_ok(be->ops->sync(be));
    ck_assert_str_eq(back, text);
    be->ops->free(be, p);
    void *host = be->host_allocator.alloc(64, be->host_allocator.ctx);
    ck_assert_ptr_nonnull(host);
    be->host_allocator.free(host, be->host_allocator.ctx);
    /* the best ISA, or the one DIGITS_CPU_ISA caps it to (the suite runs under both) */
    enum dg_cpu_isa chosen;
    check_ok(dg_cpu_isa_from_env(&chosen));
    ck_assert_int_eq(dg_backend_cpu_isa(be), chosen);
    ck_assert_ptr_nonnull(strstr(be->description, dg_cpu_isa_label(chosen)));
    for (int isa = 0; isa < DG_CPU_ISA_COUNT; isa++)
        if (!dg_cpu_isa_supported((enum dg_cpu_isa)isa)) {
            ck_assert_int_eq(dg_backend_cpu_set_isa(be, (enum dg_cpu_isa)isa), DG_ERR_DEVICE);
            ck_assert_int_eq(dg_backend_cpu_isa(be), chosen);
        }
    ck_assert_int_eq(dg_backend_cpu_set_isa(be, DG_CPU_ISA_COUNT), DG_ERR_DEVICE);
    ck_assert(dg_cpu_isa_supported(DG_CPU_ISA_SCALAR));
#if defined(__x86_64__)
    ck_assert(!dg_cpu_isa_supported(DG_CPU_ISA_NEON));
#elif defined(__aarch64__)
    ck_assert(dg_cpu_isa_supported(DG_CPU_ISA_NEON));
    ck_assert(!dg_cpu_isa_supported(DG_CPU_ISA_AVX2) && !dg_cpu_isa_supported(DG_CPU_ISA_AVX512));
#endif
    dg_backend_destroy(be);
    dg_backend_destroy(NULL);
}
END_TEST

START_TEST(kernels_from_environment)
{
    struct dg_backend *be = NULL;
    setenv("DIGITS_CPU_KERNELS", "fastest", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_ERR_USAGE);
    ck_assert_ptr_null(be);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "DIGITS_CPU_KERNELS=fastest"));
    setenv("DIGITS_CPU_KERNELS", "generic", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    ck_assert_ptr_nonnull(strstr(be->description, "im2col+sgemm only"));
    dg_backend_destroy(be);
    setenv("DIGITS_CPU_KERNELS", "direct", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    ck_assert_ptr_nonnull(strstr(be->description, "direct kernels"));
    dg_backend_destroy(be);
    unsetenv("DIGITS_CPU_KERNELS");
}
END_TEST

/* DIGITS_CPU_ISA caps the instruction set; a name this machine cannot run is refused with a
 * message naming it (never a crash, never a silent fallback). */
START_TEST(isa_from_environment)
{
    struct dg_backend *be = NULL;
    for (int isa = 0; isa < DG_CPU_ISA_COUNT; isa++) {
        const char *name = dg_cpu_isa_name((enum dg_cpu_isa)isa);
        setenv("DIGITS_CPU_ISA", name, 1);
        enum dg_status status = dg_backend_cpu_create(1, &be);
        if (dg_cpu_isa_supported((enum dg_cpu_isa)isa)) {
            ck_assert_int_eq(status, DG_OK);
            ck_assert_int_eq(dg_backend_cpu_isa(be), isa);
            ck_assert_ptr_nonnull(strstr(be->description, dg_cpu_isa_label((enum dg_cpu_isa)isa)));
            printf("DIGITS_CPU_ISA=%s: %s\n", name, be->description);
            dg_backend_destroy(be);
        } else {
            ck_assert_int_eq(status, DG_ERR_USAGE);
            ck_assert_ptr_null(be);
            printf("DIGITS_CPU_ISA=%s: %s\n", name, dg_error_message());
            char want[64];
            snprintf(want, sizeof want, "DIGITS_CPU_ISA=%s: ", name);
            ck_assert_ptr_nonnull(strstr(dg_error_message(), want));
            ck_assert_ptr_nonnull(strstr(dg_error_message(), "can use: "));
        }
    }
    setenv("DIGITS_CPU_ISA", "sse9", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_ERR_USAGE);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "expected avx512, avx2, neon or scalar"));
    setenv("DIGITS_CPU_ISA", "", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    ck_assert_int_eq(dg_backend_cpu_isa(be), dg_cpu_isa_best());
    dg_backend_destroy(be);
    unsetenv("DIGITS_CPU_ISA");
}
END_TEST

/* The reference network names its convolution algorithms per layer: Winograd where the
 * channels allow it (conv2-4), direct for conv1 (one input channel), im2col everywhere when
 * asked. */
START_TEST(net_describes_algorithms)
{
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    struct dg_model model;
    check_ok(dg_model_build(&model, specs, count));
    static const struct {
        enum dg_cpu_kernels kernels;
        const char *want;
    } cases[] = {
        {DG_CPU_KERNELS_AUTO, "; direct conv1, Winograd conv2-4"},
        {DG_CPU_KERNELS_DIRECT, "; direct conv1-4"},
        {DG_CPU_KERNELS_GENERIC, "; im2col+sgemm conv1-4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dg_backend *be = dg_test_cpu_backend(1, cases[i].kernels);
        struct dg_net *net = NULL;
        check_ok(dg_net_create(be, &model, 4, &net));
        char text[512], text_for[512];
        dg_net_describe(net, text, sizeof text);
        dg_backend_describe_for(be, &model, 86, text_for, sizeof text_for);
        printf("%s\n", text);
        ck_assert_str_eq(text, text_for);
        ck_assert_ptr_nonnull(strstr(text, be->description));
        const char *tail = text + strlen(text) - strlen(cases[i].want);
        ck_assert_str_eq(tail, cases[i].want);
        dg_net_free(net);
        dg_backend_destroy(be);
    }
    /* a layer whose passes differ says so: 1 input channel, 16 outputs, kernel 5 */
    struct dg_backend *be = dg_test_cpu_backend(1, DG_CPU_KERNELS_AUTO);
    char name[96];
    struct dg_conv_shape shape = {4, 1, 16, 9, 9, 5, 1, 0, 0};
    be->ops->conv_algo_name(be, &shape, 1, name, sizeof name);
    ck_assert_str_eq(name, "direct (bwd-data im2col+sgemm, bwd-filter direct)");
    be->ops->conv_algo_name(be, &shape, 0, name, sizeof name);
    ck_assert_str_eq(name, "direct");
    struct dg_conv_shape odd = {4, 32, 16, 9, 9, 3, 1, 0, 0};
    be->ops->conv_algo_name(be, &odd, 1, name, sizeof name);
    ck_assert_str_eq(name, "direct (bwd-data Winograd, bwd-filter direct)");
    /* stride 2 on 8x8 (deotte's conv6): one tile an image in phases, so Winograd forward and
     * backward data where the batch has 4 tiles or more, the strided direct weight gradient */
    struct dg_conv_shape strided = {86, 64, 64, 8, 8, 5, 2, 0, 0};
    be->ops->conv_algo_name(be, &strided, 1, name, sizeof name);
    ck_assert_str_eq(name, "Winograd in 4 phases (bwd-filter direct)");
    be->ops->conv_algo_name(be, &strided, 0, name, sizeof name);
    ck_assert_str_eq(name, "Winograd in 4 phases (bwd-filter direct)");
    strided.batch = 3;
    be->ops->conv_algo_name(be, &strided, 1, name, sizeof name);
    ck_assert_str_eq(name, "direct (bwd-data direct in 4 phases, bwd-filter direct)");
    /* 24x24 (deotte's conv3): every pass in phases on Winograd */
    struct dg_conv_shape large = {86, 32, 32, 24, 24, 5, 2, 0, 0};
    be->ops->conv_algo_name(be, &large, 1, name, sizeof name);
    ck_assert_str_eq(name, "Winograd in 4 phases");
    dg_backend_destroy(be);
    dg_model_free(&model);
}
END_TEST

/* ---- batch normalisation ---- */

/* Inputs of a batchnorm case: x off centre (mean 1, so that the centring matters), gamma,
 * beta, running statistics away from their initial 0 / 1, and an upstream gradient. */
struct bn_inputs {
    size_t n, c;
    float *x, *gamma, *beta, *mean, *var, *dy;
};

static struct bn_inputs bn_inputs_make(const struct dg_bn_shape *s, uint64_t seed)
{
    struct bn_inputs in;
    struct dg_test_rng rng = {seed};
    in.n = (size_t)s->batch * s->channels * s->spatial;
    in.c = (size_t)s->channels;
    in.x = dg_test_floats(in.n), in.dy = dg_test_floats(in.n);
    in.gamma = dg_test_floats(in.c), in.beta = dg_test_floats(in.c);
    in.mean = dg_test_floats(in.c), in.var = dg_test_floats(in.c);
    dg_test_fill(&rng, in.x, in.n, -1.0f, 3.0f);
    dg_test_fill(&rng, in.dy, in.n, -1.0f, 1.0f);
    dg_test_fill(&rng, in.gamma, in.c, 0.5f, 1.5f);
    dg_test_fill(&rng, in.beta, in.c, -0.5f, 0.5f);
    dg_test_fill(&rng, in.mean, in.c, -0.2f, 0.2f);
    dg_test_fill(&rng, in.var, in.c, 0.5f, 2.0f);
    return in;
}

static void bn_inputs_free(struct bn_inputs *in)
{
    free(in->x), free(in->dy), free(in->gamma), free(in->beta), free(in->mean), free(in->var);
}

/* Training forward (output, running statistics, saved statistics), inference forward and the
 * backward against the double reference, on every ISA. */
START_TEST(batchnorm_vs_reference)
{
    const struct dg_bn_shape s = bn_cases.at[_i].bn;
    printf("batchnorm case \"%s\"\n", bn_cases.at[_i].name);
    struct bn_inputs in = bn_inputs_make(&s, 3000 + (uint64_t)_i);
    size_t n = in.n, c = in.c;
    double *xd = dg_test_to_double(in.x, n), *dyd = dg_test_to_double(in.dy, n);
    double *gd = dg_test_to_double(in.gamma, c), *bd = dg_test_to_double(in.beta, c);
    double *md = dg_test_to_double(in.mean, c), *vd = dg_test_to_double(in.var, c);
    double *y_ref = dg_test_doubles(n), *yi_ref = dg_test_doubles(n), *dx_ref = dg_test_doubles(n);
    double *sm_ref = dg_test_doubles(c), *si_ref = dg_test_doubles(c);
    double *dg_ref = dg_test_doubles(c), *db_ref = dg_test_doubles(c);
    dg_ref_batchnorm_fwd_infer(&s, xd, gd, bd, md, vd, DG_BN_EPSILON, yi_ref);
    /* md, vd: the running statistics after one training step from in.mean, in.var */
    dg_ref_batchnorm_fwd_train(&s, xd, gd, bd, md, vd, DG_BN_MOMENTUM, DG_BN_EPSILON, y_ref,
                               sm_ref, si_ref);
    dg_ref_batchnorm_bwd(&s, xd, dyd, gd, sm_ref, si_ref, dx_ref, dg_ref, db_ref);
    float *y = dg_test_floats(n), *dx = dg_test_floats(n), *rm = dg_test_floats(c);
    float *rv = dg_test_floats(c), *sm = dg_test_floats(c), *si = dg_test_floats(c);
    float *dgm = dg_test_floats(c), *dbt = dg_test_floats(c);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 3);
        if (!be)
            continue;
        poison(y, n);
        check_ok(be->ops->batchnorm_fwd_infer(be, &s, in.x, in.gamma, in.beta, in.mean, in.var,
                                              DG_BN_EPSILON, y));
        ck_assert(dg_test_close("bn infer y", y, yi_ref, n, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        memcpy(rm, in.mean, c * sizeof(float));
        memcpy(rv, in.var, c * sizeof(float));
        poison(y, n), poison(sm, c), poison(si, c);
        check_ok(be->ops->batchnorm_fwd_train(be, &s, in.x, in.gamma, in.beta, rm, rv,
                                              DG_BN_MOMENTUM, DG_BN_EPSILON, y, sm, si));
        ck_assert(dg_test_close("bn train y", y, y_ref, n, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        ck_assert(dg_test_close("bn running mean", rm, md, c, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        ck_assert(dg_test_close("bn running var", rv, vd, c, DG_TEST_FWD_ATOL, DG_TEST_FWD_RTOL));
        ck_assert(dg_test_close("bn saved mean", sm, sm_ref, c, DG_TEST_FWD_ATOL,
                                DG_TEST_FWD_RTOL));
        ck_assert(dg_test_close("bn saved invstd", si, si_ref, c, DG_TEST_FWD_ATOL,
                                DG_TEST_FWD_RTOL));
        poison(dx, n), poison(dgm, c), poison(dbt, c);
        check_ok(be->ops->batchnorm_bwd(be, &s, in.x, in.dy, in.gamma, sm, si, dx, dgm, dbt));
        ck_assert(dg_test_close_max("bn bwd dx", dx, dx_ref, n, DG_TEST_BWD_RTOL));
        ck_assert(dg_test_close_max("bn bwd dgamma", dgm, dg_ref, c, DG_TEST_BWD_RTOL));
        ck_assert(dg_test_close_max("bn bwd dbeta", dbt, db_ref, c, DG_TEST_BWD_RTOL));
        dg_backend_destroy(be);
    }
    bn_inputs_free(&in);
    free(xd), free(dyd), free(gd), free(bd), free(md), free(vd), free(y_ref), free(yi_ref);
    free(dx_ref), free(sm_ref), free(si_ref), free(dg_ref), free(db_ref);
    free(y), free(dx), free(rm), free(rv), free(sm), free(si), free(dgm), free(dbt);
}
END_TEST

/* batchnorm_bwd_relu (the net's fused batchnorm + ReLU backward) against batchnorm_bwd then
 * relu_bwd with y = x: the same floats, bit for bit, in both layouts on every ISA; x has exact
 * zeros of both signs and negatives, so the mask takes values away. */
START_TEST(batchnorm_bwd_relu_is_bn_then_relu)
{
    const struct dg_bn_shape base = bn_cases.at[_i].bn;
    printf("batchnorm + ReLU backward case \"%s\"\n", bn_cases.at[_i].name);
    struct bn_inputs in = bn_inputs_make(&base, 3200 + (uint64_t)_i);
    size_t n = in.n, c = in.c, masked = 0;
    for (size_t i = 0; i < n; i += 7)
        in.x[i] = i % 2 ? -0.0f : 0.0f;
    for (size_t i = 0; i < n; i++)
        masked += !(in.x[i] > 0.0f);
    ck_assert(masked > 0 && masked < n);
    float *dx = dg_test_floats(n), *fused = dg_test_floats(n);
    float *sm = dg_test_floats(c), *si = dg_test_floats(c), *rm = dg_test_floats(c);
    float *rv = dg_test_floats(c), *y = dg_test_floats(n);
    float *dgm = dg_test_floats(c), *dbt = dg_test_floats(c);
    float *dgm_f = dg_test_floats(c), *dbt_f = dg_test_floats(c);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        for (int layout = 0; layout < 2; layout++) {
            struct dg_backend *be = family_backend(f, 3);
            if (!be)
                continue;
            ck_assert(be->ops->batchnorm_bwd_relu != NULL);
            struct dg_bn_shape s = base;
            s.nhwc = layout && be->ops->nhwc && be->ops->nhwc(be);
            memcpy(rm, in.mean, c * sizeof(float));
            memcpy(rv, in.var, c * sizeof(float));
            check_ok(be->ops->batchnorm_fwd_train(be, &s, in.x, in.gamma, in.beta, rm, rv,
                                                  DG_BN_MOMENTUM, DG_BN_EPSILON, y, sm, si));
            poison(dx, n), poison(fused, n), poison(dgm_f, c), poison(dbt_f, c);
            check_ok(be->ops->batchnorm_bwd(be, &s, in.x, in.dy, in.gamma, sm, si, dx, dgm, dbt));
            size_t nonzero = 0;
            for (size_t i = 0; i < n; i++)
                nonzero += !(in.x[i] > 0.0f) && dx[i] != 0.0f;
            ck_assert_msg(nonzero > 0, "the unfused gradient is already zero where x <= 0");
            check_ok(be->ops->relu_bwd(be, n, in.x, dx));
            check_ok(be->ops->batchnorm_bwd_relu(be, &s, in.x, in.dy, in.gamma, sm, si, fused,
                                                 dgm_f, dbt_f));
            ck_assert(dg_test_equal("bn+relu dx", fused, dx, n));
            ck_assert(dg_test_equal("bn+relu dgamma", dgm_f, dgm, c));
            ck_assert(dg_test_equal("bn+relu dbeta", dbt_f, dbt, c));
            for (size_t i = 0; i < n; i++)
                if (!(in.x[i] > 0.0f))
                    ck_assert_msg(fused[i] == 0.0f && !signbit(fused[i]),
                                  "element %zu: %g where x = %g", i, (double)fused[i],
                                  (double)in.x[i]);
            dg_backend_destroy(be);
        }
    }
    bn_inputs_free(&in);
    free(dx), free(fused), free(sm), free(si), free(rm), free(rv), free(y);
    free(dgm), free(dbt), free(dgm_f), free(dbt_f);
}
END_TEST

/* Hand-worked: one channel of 4 values 1, 2, 3, 6 (mean 3, biased var 3.5, unbiased 14/3),
 * gamma 2, beta 1, eps 1e-3, momentum 0.99 from running (0, 1). */
START_TEST(batchnorm_by_hand)
{
    const struct dg_bn_shape s = {2, 1, 2, 0};
    const float x[4] = {1, 2, 3, 6}, gamma = 2.0f, beta = 1.0f;
    double invstd = 1.0 / sqrt(3.5 + 1e-3);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 2);
        if (!be)
            continue;
        float y[4], rm = 0.0f, rv = 1.0f, sm, si;
        check_ok(be->ops->batchnorm_fwd_train(be, &s, x, &gamma, &beta, &rm, &rv, 0.99, 1e-3, y,
                                              &sm, &si));
        for (int i = 0; i < 4; i++)
            ck_assert_msg(fabs(y[i] - (2.0 * (x[i] - 3.0) * invstd + 1.0)) < 1e-6, "y[%d] = %.9g",
                          i, (double)y[i]);
        ck_assert(fabs(rm - 0.03) < 1e-7);
        ck_assert(fabs(rv - (0.99 + 0.01 * 14.0 / 3.0)) < 1e-6);
        ck_assert(fabs(sm - 3.0) < 1e-7 && fabs(si - invstd) < 1e-7);
        /* dy = 1 everywhere: dbeta = 4, dgamma = sum xhat = 0, dx = 0 */
        const float dy[4] = {1, 1, 1, 1};
        float dx[4], dgm, dbt;
        check_ok(be->ops->batchnorm_bwd(be, &s, x, dy, &gamma, &sm, &si, dx, &dgm, &dbt));
        ck_assert(dbt == 4.0f && fabs(dgm) < 1e-6);
        for (int i = 0; i < 4; i++)
            ck_assert(fabs(dx[i]) < 1e-6);
        dg_backend_destroy(be);
    }
}
END_TEST

/* Every channel is summed by one thread in one order: 1, 2 and 3 threads bit-identical. */
START_TEST(batchnorm_deterministic)
{
    for (int k = 0; k < bn_thread_cases.count; k++) {
        const struct dg_bn_shape s = bn_thread_cases.at[k].bn;
        struct bn_inputs in = bn_inputs_make(&s, 3100 + (uint64_t)k);
        size_t n = in.n, c = in.c;
        float *out[3][6];
        for (int run = 0; run < 3; run++) {
            struct dg_backend *be = dg_test_cpu_backend(run + 1, DG_CPU_KERNELS_AUTO);
            for (int j = 0; j < 6; j++)
                out[run][j] = dg_test_floats(j < 2 ? n : c);
            float *rm = out[run][2], *rv = out[run][3];
            memcpy(rm, in.mean, c * sizeof(float));
            memcpy(rv, in.var, c * sizeof(float));
            float sm[256], si[256];
            ck_assert(c <= 256);
            check_ok(be->ops->batchnorm_fwd_train(be, &s, in.x, in.gamma, in.beta, rm, rv,
                                                  DG_BN_MOMENTUM, DG_BN_EPSILON, out[run][0], sm,
                                                  si));
            check_ok(be->ops->batchnorm_bwd(be, &s, in.x, in.dy, in.gamma, sm, si, out[run][1],
                                            out[run][4], out[run][5]));
            dg_backend_destroy(be);
        }
        static const char *names[6] = {"y", "dx", "running mean", "running var", "dgamma",
                                       "dbeta"};
        for (int run = 1; run < 3; run++)
            for (int j = 0; j < 6; j++)
                ck_assert_msg(dg_test_equal(names[j], out[0][j], out[run][j], j < 2 ? n : c),
                              "batchnorm %s: 1 vs %d threads differ", names[j], run + 1);
        for (int run = 0; run < 3; run++)
            for (int j = 0; j < 6; j++)
                free(out[run][j]);
        bn_inputs_free(&in);
    }
}
END_TEST

/* ---- finite differences ---- */

/* A scalar loss of a layer, L = sum(f(theta) * r); evaluated with the current parameters. */
typedef double (*loss_fn)(void *ctx);

/* Central differences on `samples` random elements of `param` (all when fewer) against the
 * analytic `grad`: max |fd - grad| <= rtol * max |grad| (over the whole tensor). */
static int fd_check_double(const char *what, loss_fn loss, void *ctx, double *param, size_t n,
                           const double *grad, double h, double rtol, int samples,
                           struct dg_test_rng *rng)
{
    double scale = 0.0, worst = -1.0;
    for (size_t i = 0; i < n; i++)
        scale = fabs(grad[i]) > scale ? fabs(grad[i]) : scale;
    size_t worst_i = 0;
    double worst_fd = 0.0;
    for (int s = 0; s < samples && (size_t)s < n * 4; s++) {
        size_t i = n <= (size_t)samples ? (size_t)s % n : dg_test_below(rng, (uint32_t)n);
        double saved = param[i];
        param[i] = saved + h;
        double up = loss(ctx);
        param[i] = saved - h;
        double down = loss(ctx);
        param[i] = saved;
        double fd = (up - down) / (2.0 * h);
        if (fabs(fd - grad[i]) > worst || isnan(fd)) {
            worst = isnan(fd) ? INFINITY : fabs(fd - grad[i]);
            worst_i = i;
            worst_fd = fd;
        }
    }
    int ok = worst <= rtol * scale;
    printf("%s fd %s: worst [%zu] fd %.9g analytic %.9g, error %.3g of max %.6g (limit %g)\n",
           ok ? "ok  " : "FAIL", what, worst_i, worst_fd, grad[worst_i],
           scale > 0 ? worst / scale : worst, scale, rtol);
    return ok && scale > 0.0;
}

static int fd_check_float(const char *what, loss_fn loss, void *ctx, float *param, size_t n,
                          const float *grad, float h, double rtol, int samples,
                          struct dg_test_rng *rng)
{
    double scale = 0.0, worst = -1.0;
    for (size_t i = 0; i < n; i++)
        scale = fabs(grad[i]) > scale ? fabs(grad[i]) : scale;
    size_t worst_i = 0;
    double worst_fd = 0.0;
    for (int s = 0; s < samples && (size_t)s < n * 4; s++) {
        size_t i = n <= (size_t)samples ? (size_t)s % n : dg_test_below(rng, (uint32_t)n);
        float saved = param[i];
        float up_value = saved + h, down_value = saved - h;
        param[i] = up_value;
        double up = loss(ctx);
        param[i] = down_value;
        double down = loss(ctx);
        param[i] = saved;
        double fd = (up - down) / ((double)up_value - (double)down_value);
        if (fabs(fd - grad[i]) > worst || isnan(fd)) {
            worst = isnan(fd) ? INFINITY : fabs(fd - grad[i]);
            worst_i = i;
            worst_fd = fd;
        }
    }
    int ok = worst <= rtol * scale;
    printf("%s fd %s: worst [%zu] fd %.9g analytic %.9g, error %.3g of max %.6g (limit %g)\n",
           ok ? "ok  " : "FAIL", what, worst_i, worst_fd, (double)grad[worst_i],
           scale > 0 ? worst / scale : worst, scale, rtol);
    return ok && scale > 0.0;
}

#define FD_SAMPLES 40
#define FD_DOUBLE_H 1e-5
#define FD_DOUBLE_RTOL 1e-6
#define FD_FLOAT_H 1e-2f
#define FD_FLOAT_RTOL 1e-2

static double dot_double(const double *a, const double *r, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += a[i] * r[i];
    return sum;
}

static double dot_float(const float *a, const float *r, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += (double)a[i] * (double)r[i];
    return sum;
}

/* -- the double reference -- */

struct ref_conv_ctx {
    struct dg_conv_shape s;
    double *x, *w, *b, *r, *y;
    int relu;
};

static double ref_conv_loss(void *opaque)
{
    struct ref_conv_ctx *c = opaque;
    dg_ref_conv_fwd(&c->s, c->x, c->w, c->b, c->y, c->relu);
    return dot_double(c->y, c->r,
                      (size_t)c->s.batch * c->s.out_channels * dg_conv_out_height(&c->s) *
                          dg_conv_out_width(&c->s));
}

START_TEST(fd_reference_conv)
{
    struct dg_test_rng rng = {21};
    /* "same" stride 1, stride 2, "valid", "valid" stride 2 */
    for (int variant = 0; variant < 8; variant++) {
        int relu = variant & 1, stride = variant & 2 ? 2 : 1, valid = variant >> 2;
        struct ref_conv_ctx c = {{2, 3, 4, 5, 6, 3, stride, valid, 0}, 0, 0, 0, 0, 0, relu};
        size_t nx = 2 * 3 * 30, nw = 4 * 3 * 9;
        size_t ny = (size_t)2 * 4 * dg_conv_out_height(&c.s) * dg_conv_out_width(&c.s);
        c.x = dg_test_doubles(nx), c.w = dg_test_doubles(nw), c.b = dg_test_doubles(4);
        c.r = dg_test_doubles(ny), c.y = dg_test_doubles(ny);
        for (size_t i = 0; i < nx; i++)
            c.x[i] = dg_test_uniform(&rng) * 2 - 1;
        for (size_t i = 0; i < nw; i++)
            c.w[i] = dg_test_uniform(&rng) - 0.5;
        for (size_t i = 0; i < 4; i++)
            c.b[i] = dg_test_uniform(&rng) - 0.5;
        for (size_t i = 0; i < ny; i++)
            c.r[i] = dg_test_uniform(&rng) * 2 - 1;
        double *g = dg_test_doubles(ny), *dx = dg_test_doubles(nx), *dw = dg_test_doubles(nw);
        double *db = dg_test_doubles(4);
        ref_conv_loss(&c);
        memcpy(g, c.r, ny * sizeof(double));
        if (relu)
            dg_ref_relu_bwd(ny, c.y, g);
        dg_ref_conv_bwd_data(&c.s, g, c.w, dx);
        dg_ref_conv_bwd_filter(&c.s, c.x, g, dw, db);
        ck_assert(fd_check_double("ref conv x", ref_conv_loss, &c, c.x, nx, dx, FD_DOUBLE_H,
                                  FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_double("ref conv w", ref_conv_loss, &c, c.w, nw, dw, FD_DOUBLE_H,
                                  FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_double("ref conv b", ref_conv_loss, &c, c.b, 4, db, FD_DOUBLE_H,
                                  FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        free(c.x), free(c.w), free(c.b), free(c.r), free(c.y), free(g), free(dx), free(dw),
            free(db);
    }
}
END_TEST

struct ref_bn_ctx {
    struct dg_bn_shape s;
    double *x, *gamma, *beta, *mean, *var, *y, *r, *save_mean, *save_invstd;
};

static double ref_bn_loss(void *opaque)
{
    struct ref_bn_ctx *c = opaque;
    dg_ref_batchnorm_fwd_train(&c->s, c->x, c->gamma, c->beta, c->mean, c->var, DG_BN_MOMENTUM,
                               DG_BN_EPSILON, c->y, c->save_mean, c->save_invstd);
    return dot_double(c->y, c->r, (size_t)c->s.batch * c->s.channels * c->s.spatial);
}

/* The double reference's batchnorm gradient against its own forward, per-channel and per-unit
 * shapes. */
START_TEST(fd_reference_batchnorm)
{
    static const struct dg_bn_shape shapes[2] = {{3, 4, 5, 0}, {6, 3, 1, 0}};
    struct dg_test_rng rng = {23};
    for (int k = 0; k < 2; k++) {
        struct ref_bn_ctx c = {shapes[k], 0, 0, 0, 0, 0, 0, 0, 0, 0};
        size_t n = (size_t)c.s.batch * c.s.channels * c.s.spatial, ch = (size_t)c.s.channels;
        c.x = dg_test_doubles(n), c.r = dg_test_doubles(n), c.y = dg_test_doubles(n);
        c.gamma = dg_test_doubles(ch), c.beta = dg_test_doubles(ch), c.mean = dg_test_doubles(ch);
        c.var = dg_test_doubles(ch), c.save_mean = dg_test_doubles(ch);
        c.save_invstd = dg_test_doubles(ch);
        for (size_t i = 0; i < n; i++) {
            c.x[i] = dg_test_uniform(&rng) * 4 - 1;
            c.r[i] = dg_test_uniform(&rng) * 2 - 1;
        }
        for (size_t i = 0; i < ch; i++) {
            c.gamma[i] = 0.5 + dg_test_uniform(&rng);
            c.beta[i] = dg_test_uniform(&rng) - 0.5;
            c.var[i] = 1.0;
        }
        double *dx = dg_test_doubles(n), *dgm = dg_test_doubles(ch), *dbt = dg_test_doubles(ch);
        ref_bn_loss(&c);
        dg_ref_batchnorm_bwd(&c.s, c.x, c.r, c.gamma, c.save_mean, c.save_invstd, dx, dgm, dbt);
        ck_assert(fd_check_double("ref batchnorm x", ref_bn_loss, &c, c.x, n, dx, FD_DOUBLE_H,
                                  FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_double("ref batchnorm gamma", ref_bn_loss, &c, c.gamma, ch, dgm,
                                  FD_DOUBLE_H, FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_double("ref batchnorm beta", ref_bn_loss, &c, c.beta, ch, dbt,
                                  FD_DOUBLE_H, FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        free(c.x), free(c.r), free(c.y), free(c.gamma), free(c.beta), free(c.mean), free(c.var);
        free(c.save_mean), free(c.save_invstd), free(dx), free(dgm), free(dbt);
    }
}
END_TEST

struct ref_dense_ctx {
    int batch, in, out, relu;
    double *x, *w, *b, *r, *y;
};

static double ref_dense_loss(void *opaque)
{
    struct ref_dense_ctx *c = opaque;
    dg_ref_dense_fwd(c->batch, c->in, c->out, c->x, c->w, c->b, c->y, c->relu);
    return dot_double(c->y, c->r, (size_t)c->batch * c->out);
}

START_TEST(fd_reference_dense)
{
    struct dg_test_rng rng = {22};
    for (int relu = 0; relu < 2; relu++) {
        struct ref_dense_ctx c = {3, 11, 7, relu, 0, 0, 0, 0, 0};
        size_t nx = 33, ny = 21, nw = 77;
        c.x = dg_test_doubles(nx), c.w = dg_test_doubles(nw), c.b = dg_test_doubles(7);
        c.r = dg_test_doubles(ny), c.y = dg_test_doubles(ny);
        for (size_t i = 0; i < nx; i++)
            c.x[i] = dg_test_uniform(&rng) * 2 - 1;
        for (size_t i = 0; i < nw; i++)
            c.w[i] = dg_test_uniform(&rng) - 0.5;
        for (size_t i = 0; i < 7; i++)
            c.b[i] = dg_test_uniform(&rng) - 0.5;
        for (size_t i = 0; i < ny; i++)
            c.r[i] = dg_test_uniform(&rng) * 2 - 1;
        double *g = dg_test_doubles(ny), *dx = dg_test_doubles(nx), *dw = dg_test_doubles(nw);
        double *db = dg_test_doubles(7);
        ref_dense_loss(&c);
        memcpy(g, c.r, ny * sizeof(double));
        if (relu)
            dg_ref_relu_bwd(ny, c.y, g);
        dg_ref_dense_bwd(c.batch, c.in, c.out, c.x, c.w, g, dx, dw, db);
        ck_assert(fd_check_double("ref dense x", ref_dense_loss, &c, c.x, nx, dx, FD_DOUBLE_H,
                                  FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_double("ref dense w", ref_dense_loss, &c, c.w, nw, dw, FD_DOUBLE_H,
                                  FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_double("ref dense b", ref_dense_loss, &c, c.b, 7, db, FD_DOUBLE_H,
                                  FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
        free(c.x), free(c.w), free(c.b), free(c.r), free(c.y), free(g), free(dx), free(dw),
            free(db);
    }
}
END_TEST

struct ref_elementwise_ctx {
    struct dg_pool_shape pool;
    struct dg_dropout_key key;
    float rate;
    int batch;
    uint8_t *labels;
    double *x, *r, *y;
    size_t n;
};

static double ref_pool_loss(void *opaque)
{
    struct ref_elementwise_ctx *c = opaque;
    dg_ref_maxpool_fwd(&c->pool, c->x, c->y);
    return dot_double(c->y, c->r, c->n / 4);
}

static double ref_dropout_loss(void *opaque)
{
    struct ref_elementwise_ctx *c = opaque;
    dg_ref_dropout(c->n, c->rate, &c->key, c->x, c->y);
    return dot_double(c->y, c->r, c->n);
}

static double ref_xent_loss(void *opaque)
{
    struct ref_elementwise_ctx *c = opaque;
    double loss = 0.0, correct = 0.0;
    dg_ref_softmax_xent(c->batch, c->x, c->labels, 0.0, c->y, NULL, &loss, &correct);
    return loss / c->batch;
}

/* Distinct values at least 0.05 apart (a shuffled ramp): no perturbation changes a maximum. */
static void fill_separated(struct dg_test_rng *rng, double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 0.05 * (double)i - 0.025 * (double)n;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = dg_test_below(rng, (uint32_t)(i + 1));
        double t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

START_TEST(fd_reference_pool_dropout_xent)
{
    struct dg_test_rng rng = {23};
    struct ref_elementwise_ctx c = {{2, 3, 6, 4, 0}, {5, 0, 1, 2, 0, 0}, 0.5f, 0, NULL, 0, 0, 0, 144};
    c.x = dg_test_doubles(c.n), c.r = dg_test_doubles(c.n), c.y = dg_test_doubles(c.n);
    double *dx = dg_test_doubles(c.n);
    fill_separated(&rng, c.x, c.n);
    for (size_t i = 0; i < c.n; i++)
        c.r[i] = dg_test_uniform(&rng) * 2 - 1;
    dg_ref_maxpool_bwd(&c.pool, c.x, c.r, dx);
    ck_assert(fd_check_double("ref maxpool x", ref_pool_loss, &c, c.x, c.n, dx, FD_DOUBLE_H,
                              FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
    dg_ref_dropout(c.n, c.rate, &c.key, c.r, dx);
    ck_assert(fd_check_double("ref dropout x", ref_dropout_loss, &c, c.x, c.n, dx, FD_DOUBLE_H,
                              FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
    c.batch = 5;
    c.n = 50;
    uint8_t labels[5] = {3, 0, 9, 9, 4};
    c.labels = labels;
    for (size_t i = 0; i < c.n; i++)
        c.x[i] = dg_test_uniform(&rng) * 6 - 3;
    double loss = 0.0, correct = 0.0;
    dg_ref_softmax_xent(c.batch, c.x, labels, 0.0, c.y, dx, &loss, &correct);
    ck_assert(fd_check_double("ref softmax-xent logits", ref_xent_loss, &c, c.x, c.n, dx,
                              FD_DOUBLE_H, FD_DOUBLE_RTOL, FD_SAMPLES, &rng));
    free(c.x), free(c.r), free(c.y), free(dx);
}
END_TEST

/* -- the float fast path, through the vtable -- */

struct fast_ctx {
    struct dg_backend *be;
    void *plan;
    struct dg_conv_shape conv;
    struct dg_pool_shape pool;
    struct dg_dropout_key key;
    float rate;
    int batch, in, out, relu;
    uint8_t *labels;
    float *x, *w, *b, *r, *y;
    size_t ny;
};

static double fast_conv_loss(void *opaque)
{
    struct fast_ctx *c = opaque;
    check_ok(c->be->ops->conv_fwd(c->be, c->plan, c->x, c->w, c->b, c->y, c->relu));
    return dot_float(c->y, c->r, c->ny);
}

static double fast_dense_loss(void *opaque)
{
    struct fast_ctx *c = opaque;
    check_ok(
        c->be->ops->dense_fwd(c->be, c->batch, c->in, c->out, c->x, c->w, c->b, c->y, c->relu));
    return dot_float(c->y, c->r, c->ny);
}

static double fast_pool_loss(void *opaque)
{
    struct fast_ctx *c = opaque;
    check_ok(c->be->ops->maxpool_fwd(c->be, &c->pool, c->x, c->y));
    return dot_float(c->y, c->r, c->ny);
}

static double fast_dropout_loss(void *opaque)
{
    struct fast_ctx *c = opaque;
    check_ok(c->be->ops->dropout_fwd(c->be, c->ny, c->rate, &c->key, c->x, c->y));
    return dot_float(c->y, c->r, c->ny);
}

static double fast_xent_loss(void *opaque)
{
    struct fast_ctx *c = opaque;
    double stats[2] = {0, 0};
    check_ok(c->be->ops->softmax_xent(c->be, c->batch, c->x, c->labels, 0.0f, c->y, NULL, stats,
                                      NULL));
    return stats[0] / c->batch;
}

START_TEST(fd_fast_conv)
{
    struct dg_test_rng rng = {31 + (uint64_t)_i};
    struct fast_ctx c = {0};
    c.conv = conv_grad_cases.at[_i].conv;
    const struct dg_conv_shape *s = &c.conv;
    size_t hw = (size_t)s->height * s->width, nx = (size_t)s->batch * s->in_channels * hw;
    size_t nw = (size_t)s->out_channels * s->in_channels * s->kernel * s->kernel;
    c.ny = (size_t)s->batch * s->out_channels * dg_conv_out_height(s) * dg_conv_out_width(s);
    c.x = dg_test_floats(nx), c.w = dg_test_floats(nw), c.b = dg_test_floats(s->out_channels);
    c.r = dg_test_floats(c.ny), c.y = dg_test_floats(c.ny);
    float *dx = dg_test_floats(nx), *dw = dg_test_floats(nw), *db = dg_test_floats(s->out_channels);
    dg_test_fill(&rng, c.x, nx, -1, 1);
    dg_test_fill(&rng, c.w, nw, -0.5f, 0.5f);
    dg_test_fill(&rng, c.b, (size_t)s->out_channels, -0.5f, 0.5f);
    dg_test_fill(&rng, c.r, c.ny, -1, 1);
    for (int f = 0; f < FAMILIES; f++) {
        if (!(c.be = family_backend(f, 2)))
            continue;
        printf("fd conv %s\n", families[f].name);
        check_ok(c.be->ops->conv_plan_create(c.be, s, &c.plan));
        check_ok(c.be->ops->conv_bwd_data(c.be, c.plan, c.r, c.w, dx));
        check_ok(c.be->ops->conv_bwd_filter(c.be, c.plan, c.x, c.r, dw, db));
        ck_assert(fd_check_float("conv x", fast_conv_loss, &c, c.x, nx, dx, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_float("conv w", fast_conv_loss, &c, c.w, nw, dw, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_float("conv b", fast_conv_loss, &c, c.b, (size_t)s->out_channels, db,
                                 FD_FLOAT_H, FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        c.be->ops->conv_plan_free(c.be, c.plan);
        dg_backend_destroy(c.be);
    }
    free(c.x), free(c.w), free(c.b), free(c.r), free(c.y), free(dx), free(dw), free(db);
}
END_TEST

struct bn_fast_ctx {
    struct dg_backend *be;
    struct dg_bn_shape s;
    float *x, *gamma, *beta, *mean, *var, *y, *r, *save_mean, *save_invstd;
};

static double fast_bn_loss(void *opaque)
{
    struct bn_fast_ctx *c = opaque;
    check_ok(c->be->ops->batchnorm_fwd_train(c->be, &c->s, c->x, c->gamma, c->beta, c->mean,
                                             c->var, DG_BN_MOMENTUM, DG_BN_EPSILON, c->y,
                                             c->save_mean, c->save_invstd));
    return dot_float(c->y, c->r, (size_t)c->s.batch * c->s.channels * c->s.spatial);
}

/* The training-mode gradient (through the batch statistics) by central differences. */
START_TEST(fd_fast_batchnorm)
{
    struct bn_fast_ctx c = {0};
    c.s = bn_grad_cases.at[_i].bn;
    struct bn_inputs in = bn_inputs_make(&c.s, 3200 + (uint64_t)_i);
    struct dg_test_rng rng = {3300 + (uint64_t)_i};
    size_t n = in.n, ch = in.c;
    c.x = in.x, c.gamma = in.gamma, c.beta = in.beta, c.mean = in.mean, c.var = in.var;
    c.r = in.dy, c.y = dg_test_floats(n);
    c.save_mean = dg_test_floats(ch), c.save_invstd = dg_test_floats(ch);
    float *dx = dg_test_floats(n), *dgm = dg_test_floats(ch), *dbt = dg_test_floats(ch);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f) || !(c.be = family_backend(f, 2)))
            continue;
        printf("fd batchnorm %s\n", families[f].name);
        fast_bn_loss(&c);
        check_ok(c.be->ops->batchnorm_bwd(c.be, &c.s, c.x, c.r, c.gamma, c.save_mean,
                                          c.save_invstd, dx, dgm, dbt));
        ck_assert(fd_check_float("batchnorm x", fast_bn_loss, &c, c.x, n, dx, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_float("batchnorm gamma", fast_bn_loss, &c, c.gamma, ch, dgm,
                                 FD_FLOAT_H, FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_float("batchnorm beta", fast_bn_loss, &c, c.beta, ch, dbt, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        dg_backend_destroy(c.be);
    }
    bn_inputs_free(&in);
    free(c.y), free(c.save_mean), free(c.save_invstd), free(dx), free(dgm), free(dbt);
}
END_TEST

/* ReLU through the fused convolution epilogue: an identity 1x1 convolution of inputs at
 * least 0.1 away from zero, so that no perturbation crosses the kink. */
START_TEST(fd_fast_relu)
{
    struct dg_test_rng rng = {41};
    struct fast_ctx c = {0};
    c.conv = (struct dg_conv_shape){2, 16, 16, 5, 6, 1, 1, 0, 0};
    c.relu = 1;
    size_t n = 2 * 16 * 30;
    c.ny = n;
    c.x = dg_test_floats(n), c.w = dg_test_floats(256), c.b = dg_test_floats(16);
    c.r = dg_test_floats(n), c.y = dg_test_floats(n);
    float *g = dg_test_floats(n), *dx = dg_test_floats(n);
    for (size_t i = 0; i < n; i++) {
        float magnitude = 0.1f + 0.9f * (float)dg_test_uniform(&rng);
        c.x[i] = dg_test_uniform(&rng) < 0.5 ? -magnitude : magnitude;
    }
    for (int i = 0; i < 16; i++)
        c.w[i * 16 + i] = 1.0f;
    dg_test_fill(&rng, c.r, n, -1, 1);
    for (int f = 0; f < FAMILIES; f++) {
        if (!(c.be = family_backend(f, 2)))
            continue;
        check_ok(c.be->ops->conv_plan_create(c.be, &c.conv, &c.plan));
        fast_conv_loss(&c);
        memcpy(g, c.r, n * sizeof(float));
        check_ok(c.be->ops->relu_bwd(c.be, n, c.y, g));
        check_ok(c.be->ops->conv_bwd_data(c.be, c.plan, g, c.w, dx));
        ck_assert(fd_check_float("relu x", fast_conv_loss, &c, c.x, n, dx, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        c.be->ops->conv_plan_free(c.be, c.plan);
        dg_backend_destroy(c.be);
    }
    free(c.x), free(c.w), free(c.b), free(c.r), free(c.y), free(g), free(dx);
}
END_TEST

START_TEST(fd_fast_dense)
{
    struct dg_test_rng rng = {51};
    struct fast_ctx c = {0};
    c.batch = 3, c.in = 37, c.out = 13;
    size_t nx = 3 * 37, nw = 37 * 13;
    c.ny = 3 * 13;
    c.x = dg_test_floats(nx), c.w = dg_test_floats(nw), c.b = dg_test_floats(13);
    c.r = dg_test_floats(c.ny), c.y = dg_test_floats(c.ny);
    float *dx = dg_test_floats(nx), *dw = dg_test_floats(nw), *db = dg_test_floats(13);
    dg_test_fill(&rng, c.x, nx, -1, 1);
    dg_test_fill(&rng, c.w, nw, -0.3f, 0.3f);
    dg_test_fill(&rng, c.b, 13, -0.5f, 0.5f);
    dg_test_fill(&rng, c.r, c.ny, -1, 1);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f) || !(c.be = family_backend(f, 2)))
            continue;
        check_ok(c.be->ops->dense_bwd(c.be, c.batch, c.in, c.out, c.x, c.w, c.r, dx, dw, db));
        ck_assert(fd_check_float("dense x", fast_dense_loss, &c, c.x, nx, dx, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_float("dense w", fast_dense_loss, &c, c.w, nw, dw, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        ck_assert(fd_check_float("dense b", fast_dense_loss, &c, c.b, 13, db, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        dg_backend_destroy(c.be);
    }
    free(c.x), free(c.w), free(c.b), free(c.r), free(c.y), free(dx), free(dw), free(db);
}
END_TEST

START_TEST(fd_fast_pool_dropout_xent)
{
    struct dg_test_rng rng = {61};
    struct fast_ctx c = {0};
    c.pool = (struct dg_pool_shape){2, 3, 6, 8, 0};
    size_t n = 2 * 3 * 6 * 8;
    c.x = dg_test_floats(n), c.r = dg_test_floats(n), c.y = dg_test_floats(n);
    float *dx = dg_test_floats(n);
    double *separated = dg_test_doubles(n);
    fill_separated(&rng, separated, n);
    for (size_t i = 0; i < n; i++)
        c.x[i] = (float)separated[i];
    dg_test_fill(&rng, c.r, n, -1, 1);
    uint8_t labels[5] = {1, 8, 2, 2, 0};
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f) || !(c.be = family_backend(f, 2)))
            continue;
        c.ny = n / 4;
        check_ok(c.be->ops->maxpool_fwd(c.be, &c.pool, c.x, c.y));
        check_ok(c.be->ops->maxpool_bwd(c.be, &c.pool, c.x, c.y, c.r, dx));
        ck_assert(fd_check_float("maxpool x", fast_pool_loss, &c, c.x, n, dx, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        c.ny = n;
        c.rate = 0.25f;
        c.key = (struct dg_dropout_key){8, 2, 0, 3, 0, 0};
        check_ok(c.be->ops->dropout_bwd(c.be, n, c.rate, &c.key, c.r, dx));
        ck_assert(fd_check_float("dropout x", fast_dropout_loss, &c, c.x, n, dx, FD_FLOAT_H,
                                 FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        c.batch = 5;
        c.labels = labels;
        float logits[50], grad[50], probs[50];
        dg_test_fill(&rng, logits, 50, -3, 3);
        float *saved_x = c.x;
        c.x = logits;
        check_ok(c.be->ops->softmax_xent(c.be, 5, logits, labels, 0.0f, probs, grad, NULL, NULL));
        ck_assert(fd_check_float("softmax-xent logits", fast_xent_loss, &c, logits, 50, grad,
                                 FD_FLOAT_H, FD_FLOAT_RTOL, FD_SAMPLES, &rng));
        c.x = saved_x;
        dg_backend_destroy(c.be);
    }
    free(c.x), free(c.r), free(c.y), free(dx), free(separated);
}
END_TEST

/* |got - ref| <= bound[i] for every element; prints the largest ratio to the bound. */
static int within_bounds(const char *what, const float *got, const double *ref,
                         const double *bound, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]);
        if (!(err <= bound[i])) {
            printf("FAIL %s: [%zu] got %.9g ref %.17g, |diff| %.3g above the bound %.3g\n", what,
                   i, (double)got[i], ref[i], err, bound[i]);
            return 0;
        }
        if (bound[i] > 0.0 && err / bound[i] > worst)
            worst = err / bound[i];
    }
    printf("ok   %s: %zu values within the derived bound (worst %.2f of it)\n", what, n, worst);
    return 1;
}

#define U32 (1.0 / 16777216.0) /* 2^-24, float's unit roundoff */

/* Adam from random moments at step t (1 and 10): every family's op bit-identical to the
 * element math (the bias corrections from the float powers the state holds), and within
 * bounds derived from float's rounding of the double reference. Bounds (first order, then
 * doubled): m: 3u (|b1 m0| + |(1-b1) g|); v: 5u v (every term positive); w: u |w| for the
 * subtraction, lr (3u M + |m| (u + e1)) / (bc1 D) for the numerator (M the sum above, e1 the
 * relative error of the float bias correction 1 - fl(b1^t), computed here), and
 * |dw| (8u + e2 / 2) for the roundings of the quotients, the sqrt, the eps addition and the
 * float 1 - fl(b2^t) (e2), D = sqrt(vhat) + eps. */
START_TEST(adam_vs_element_math)
{
    const size_t n = rmsprop_cases.at[_i / 2].count;
    const unsigned long long t = _i % 2 ? 10 : 1;
    const float lr = 0.001f, b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
    struct dg_test_rng rng = {19 + (uint64_t)_i};
    float *w0 = dg_test_floats(n), *g = dg_test_floats(n), *m0 = dg_test_floats(n);
    float *v0 = dg_test_floats(n);
    dg_test_fill(&rng, w0, n, -1, 1);
    dg_test_fill(&rng, g, n, -0.1f, 0.1f);
    dg_test_fill(&rng, m0, n, -0.01f, 0.01f);
    dg_test_fill(&rng, v0, n, 0, 1e-4f);
    for (size_t i = 0; i < n; i += 101)
        g[i] = 0.0f;
    if (t == 1)
        for (size_t i = 0; i < n; i++)
            m0[i] = v0[i] = 0.0f; /* the first step starts from zero moments */
    float pow_before[2], pow_after[2];
    dg_adam_powers(t - 1, b1, b2, pow_before);
    dg_adam_powers(t, b1, b2, pow_after);
    const float bc1 = 1.0f - pow_after[0], bc2 = 1.0f - pow_after[1];
    float *w_want = dg_test_floats(n), *m_want = dg_test_floats(n), *v_want = dg_test_floats(n);
    memcpy(w_want, w0, n * sizeof(float));
    memcpy(m_want, m0, n * sizeof(float));
    memcpy(v_want, v0, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        dg_adam_element(&w_want[i], &m_want[i], &v_want[i], g[i], lr, b1, b2, eps, bc1, bc2);
    double *w_ref = dg_test_to_double(w0, n), *m_ref = dg_test_to_double(m0, n);
    double *v_ref = dg_test_to_double(v0, n), *gd = dg_test_to_double(g, n);
    dg_ref_adam(n, w_ref, gd, m_ref, v_ref, lr, b1, b2, eps, t);
    const double bc1_ref = 1.0 - pow((double)b1, (double)t);
    const double bc2_ref = 1.0 - pow((double)b2, (double)t);
    const double e1 = fabs((double)bc1 - bc1_ref) / bc1_ref;
    const double e2 = fabs((double)bc2 - bc2_ref) / bc2_ref;
    double *wb = calloc(n, sizeof(double)), *mb = calloc(n, sizeof(double));
    double *vb = calloc(n, sizeof(double));
    ck_assert(wb && mb && vb);
    for (size_t i = 0; i < n; i++) {
        double big_m = fabs((double)b1 * m0[i]) + fabs((1.0 - (double)b1) * g[i]);
        double denom = sqrt(v_ref[i] / bc2_ref) + (double)eps;
        double dw = fabs(w_ref[i] - (double)w0[i]);
        mb[i] = 2.0 * 3.0 * U32 * big_m;
        vb[i] = 2.0 * 5.0 * U32 * v_ref[i];
        wb[i] = 2.0 * (U32 * fabs(w_ref[i]) +
                       (double)lr * (3.0 * U32 * big_m + fabs(m_ref[i]) * (U32 + e1)) /
                           (bc1_ref * denom) +
                       dw * (8.0 * U32 + e2 / 2.0));
    }
    printf("adam n %zu t %llu: bias corrections' relative errors %.3g, %.3g\n", n, t, e1, e2);
    float *w = dg_test_floats(n), *m = dg_test_floats(n), *v = dg_test_floats(n);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 3);
        if (!be)
            continue;
        memcpy(w, w0, n * sizeof(float));
        memcpy(m, m0, n * sizeof(float));
        memcpy(v, v0, n * sizeof(float));
        float state_pow[2] = {pow_before[0], pow_before[1]};
        check_ok(be->ops->adam(be, n, w, g, m, v, state_pow, lr, b1, b2, eps));
        ck_assert(memcmp(state_pow, pow_after, sizeof state_pow) == 0);
        ck_assert(dg_test_equal("adam w = element math", w, w_want, n));
        ck_assert(dg_test_equal("adam m = element math", m, m_want, n));
        ck_assert(dg_test_equal("adam v = element math", v, v_want, n));
        ck_assert(within_bounds("adam w", w, w_ref, wb, n));
        ck_assert(within_bounds("adam m", m, m_ref, mb, n));
        ck_assert(within_bounds("adam v", v, v_ref, vb, n));
        dg_backend_destroy(be);
    }
    free(w0), free(g), free(m0), free(v0), free(w_want), free(m_want), free(v_want);
    free(w_ref), free(m_ref), free(v_ref), free(gd), free(wb), free(mb), free(vb);
    free(w), free(m), free(v);
}
END_TEST

/* SGD with momentum 0.9, plain and Nesterov, and momentum 0: every family's op bit-identical
 * to the element math and within bounds derived from float's rounding of the double
 * reference (first order, doubled): b: 2u B, B = |mu b0| + |g|; w: u |w| + lr (2u B (1 + mu)
 * + 3u (|g| + mu |b| + |b|)). */
START_TEST(sgd_vs_element_math)
{
    const size_t n = rmsprop_cases.at[_i / 3].count;
    const float lr = 0.01f, mu = _i % 3 == 2 ? 0.0f : 0.9f;
    const int nesterov = _i % 3 == 1;
    struct dg_test_rng rng = {29 + (uint64_t)_i};
    float *w0 = dg_test_floats(n), *g = dg_test_floats(n), *b0 = dg_test_floats(n);
    dg_test_fill(&rng, w0, n, -1, 1);
    dg_test_fill(&rng, g, n, -0.1f, 0.1f);
    dg_test_fill(&rng, b0, n, -0.5f, 0.5f);
    for (size_t i = 0; i < n; i += 101)
        g[i] = 0.0f;
    float *w_want = dg_test_floats(n), *b_want = dg_test_floats(n);
    memcpy(w_want, w0, n * sizeof(float));
    memcpy(b_want, b0, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        dg_sgd_element(&w_want[i], &b_want[i], g[i], lr, mu, nesterov);
    double *w_ref = dg_test_to_double(w0, n), *b_ref = dg_test_to_double(b0, n);
    double *gd = dg_test_to_double(g, n);
    dg_ref_sgd(n, w_ref, gd, b_ref, lr, mu, nesterov);
    double *wb = calloc(n, sizeof(double)), *bb = calloc(n, sizeof(double));
    ck_assert(wb && bb);
    for (size_t i = 0; i < n; i++) {
        double big_b = fabs((double)mu * b0[i]) + fabs((double)g[i]);
        bb[i] = 2.0 * 2.0 * U32 * big_b;
        wb[i] = 2.0 * (U32 * fabs(w_ref[i]) +
                       (double)lr * (2.0 * U32 * big_b * (1.0 + (double)mu) +
                                     3.0 * U32 *
                                         (fabs((double)g[i]) + (double)mu * fabs(b_ref[i]) +
                                          fabs(b_ref[i]))));
    }
    float *w = dg_test_floats(n), *b = dg_test_floats(n);
    for (int f = 0; f < FAMILIES; f++) {
        if (!element_family(f))
            continue;
        struct dg_backend *be = family_backend(f, 3);
        if (!be)
            continue;
        memcpy(w, w0, n * sizeof(float));
        memcpy(b, b0, n * sizeof(float));
        check_ok(be->ops->sgd(be, n, w, g, b, lr, mu, nesterov));
        ck_assert(dg_test_equal("sgd w = element math", w, w_want, n));
        ck_assert(dg_test_equal("sgd b = element math", b, b_want, n));
        ck_assert(within_bounds("sgd w", w, w_ref, wb, n));
        ck_assert(within_bounds("sgd b", b, b_ref, bb, n));
        dg_backend_destroy(be);
    }
    free(w0), free(g), free(b0), free(w_want), free(b_want), free(w_ref), free(b_ref), free(gd);
    free(wb), free(bb), free(w), free(b);
}
END_TEST

/* dg_cpu_claim: every item of a run is taken by exactly one thread, in blocks of the grain,
 * the counter starts again at each run, and a thread the machine slows takes fewer items. */
struct claim_job {
    size_t count, grain;
    int slow_thread;
    int taken[1000];
    int by_thread[4];
    int blocks_ok;
};

static void claim_task(void *ctx, int thread, int threads)
{
    struct claim_job *job = ctx;
    struct dg_cpu_claims c = dg_cpu_claims(job->count, job->grain, thread, threads);
    size_t last = (size_t)-1;
    for (size_t item; dg_cpu_claim(&c, &item);) {
        /* within a block the items come one after the other; a new block starts on a
         * multiple of the grain */
        if (item != last + 1 && item % (job->grain ? job->grain : 1) != 0)
            __atomic_store_n(&job->blocks_ok, 0, __ATOMIC_RELAXED);
        last = item;
        __atomic_fetch_add(&job->taken[item], 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&job->by_thread[thread], 1, __ATOMIC_RELAXED);
        if (thread == job->slow_thread) {
            struct timespec pause = {0, 2000000};
            nanosleep(&pause, NULL);
        }
    }
}

START_TEST(threads_claim_each_item_once)
{
    struct dg_cpu_threads *pool;
    ck_assert_int_eq(dg_cpu_threads_create(3, &pool), DG_OK);
    static struct claim_job job;
    const size_t counts[] = {0, 1, 5, 999, 1000}, grains[] = {0, 1, 7, 64, 2000};
    for (size_t a = 0; a < sizeof counts / sizeof *counts; a++)
        for (size_t b = 0; b < sizeof grains / sizeof *grains; b++)
            for (int run = 0; run < 2; run++) { /* the second run starts from item 0 again */
                memset(&job, 0, sizeof job);
                job.count = counts[a], job.grain = grains[b], job.slow_thread = -1;
                job.blocks_ok = 1;
                dg_cpu_threads_run(pool, claim_task, &job);
                for (size_t i = 0; i < 1000; i++)
                    ck_assert_msg(job.taken[i] == (i < job.count),
                                  "count %zu grain %zu: item %zu taken %d times", job.count,
                                  job.grain, i, job.taken[i]);
                ck_assert_int_eq(job.by_thread[0] + job.by_thread[1] + job.by_thread[2],
                                 (int)job.count);
                ck_assert(job.blocks_ok);
            }
    dg_cpu_threads_destroy(pool);
    /* two threads, thread 1 slowed by 2 ms an item: thread 0 takes most of the 200 items
     * (thread 1 would need 200 ms for half of them) */
    ck_assert_int_eq(dg_cpu_threads_create(2, &pool), DG_OK);
    memset(&job, 0, sizeof job);
    job.count = 200, job.grain = 1, job.slow_thread = 1, job.blocks_ok = 1;
    dg_cpu_threads_run(pool, claim_task, &job);
    ck_assert_int_eq(job.by_thread[0] + job.by_thread[1], 200);
    ck_assert_msg(job.by_thread[1] < 100, "the slowed thread took %d of 200 items",
                  job.by_thread[1]);
    dg_cpu_threads_destroy(pool);
    /* one thread: the caller takes every item */
    ck_assert_int_eq(dg_cpu_threads_create(1, &pool), DG_OK);
    memset(&job, 0, sizeof job);
    job.count = 10, job.grain = 3, job.slow_thread = -1, job.blocks_ok = 1;
    dg_cpu_threads_run(pool, claim_task, &job);
    ck_assert_int_eq(job.by_thread[0], 10);
    dg_cpu_threads_destroy(pool);
}
END_TEST

/* The stride-2 phase copies of every ISA this CPU runs: out[4c + k] = in[k][c] with the
 * pixels outside the input (NULL) as zeros, and back, at channel counts around each vector
 * width (the vector loop and the tail). */
/* The Winograd transforms done in double (the weights: U = G g G^T; the weight gradient's last
 * step: dw = A^T (s s^T .* W) A) take 8, then 4 lanes at a time, then one: on every ISA and at
 * every lane count each lane's floats are those of the plain double loops below, bit for bit. */
START_TEST(winograd_double_transforms_by_lanes)
{
    struct dg_test_rng rng = {4242};
    const int widths[] = {1, 3, 4, 5, 8, 9, 12, 13, 17, 32};
    enum { MOST = 32 };
    for (int k = 3; k <= 5; k += 2) {
        double g[6 * 5], at[5 * 6], scale[6];
        for (int i = 0; i < 6 * k; i++)
            g[i] = dg_test_uniform(&rng) * 2.0 - 1.0;
        for (int i = 0; i < 6 * k; i++)
            at[i] = dg_test_uniform(&rng) * 4.0 - 2.0;
        for (int i = 0; i < 6; i++)
            scale[i] = dg_test_uniform(&rng) + 0.25;
        for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
            int cols = widths[wi];
            float kernels[5 * 5 * MOST], want_u[36 * MOST], want_dw[MOST * 25];
            double wsum[36 * MOST];
            for (int i = 0; i < k * k * cols; i++)
                kernels[i] = (float)(dg_test_uniform(&rng) * 2.0 - 1.0);
            for (int i = 0; i < 36 * cols; i++)
                wsum[i] = dg_test_uniform(&rng) * 2.0 - 1.0;
            for (int c = 0; c < cols; c++) {
                double t[6][5], sum[36], half[5][6];
                for (int i = 0; i < 6; i++)
                    for (int b = 0; b < k; b++) {
                        double acc = 0.0;
                        for (int a = 0; a < k; a++)
                            acc += g[i * k + a] * (double)kernels[(a * k + b) * cols + c];
                        t[i][b] = acc;
                    }
                for (int i = 0; i < 6; i++)
                    for (int j = 0; j < 6; j++) {
                        double acc = 0.0;
                        for (int b = 0; b < k; b++)
                            acc += g[j * k + b] * t[i][b];
                        want_u[(i * 6 + j) * cols + c] = (float)acc;
                    }
                for (int xi = 0; xi < 36; xi++)
                    sum[xi] = wsum[xi * cols + c] * scale[xi / 6] * scale[xi % 6];
                for (int y = 0; y < k; y++)
                    for (int j = 0; j < 6; j++) {
                        double acc = 0.0;
                        for (int i = 0; i < 6; i++)
                            acc += at[y * 6 + i] * sum[i * 6 + j];
                        half[y][j] = acc;
                    }
                for (int y = 0; y < k; y++)
                    for (int x = 0; x < k; x++) {
                        double acc = 0.0;
                        for (int j = 0; j < 6; j++)
                            acc += half[y][j] * at[x * 6 + j];
                        want_dw[c * 25 + y * k + x] = (float)acc;
                    }
            }
            for (int isa = 0; isa < DG_CPU_ISA_COUNT; isa++) {
                const struct dg_cpu_isa_ops *ops = dg_cpu_isa_table((enum dg_cpu_isa)isa);
                if (!ops)
                    continue;
                float u[36 * MOST], dw[MOST * 25];
                ops->wino_weights(g, k, kernels, cols, u, (size_t)cols);
                ops->wino_filter_out(k, at, scale, wsum, (size_t)cols, cols, dw, 25);
                for (int i = 0; i < 36 * cols; i++)
                    ck_assert_msg(memcmp(&u[i], &want_u[i], sizeof(float)) == 0,
                                  "%s, k %d, %d columns: U[%d] %a, want %a",
                                  dg_cpu_isa_name((enum dg_cpu_isa)isa), k, cols, i,
                                  (double)u[i], (double)want_u[i]);
                for (int c = 0; c < cols; c++)
                    for (int i = 0; i < k * k; i++)
                        ck_assert_msg(memcmp(&dw[c * 25 + i], &want_dw[c * 25 + i],
                                             sizeof(float)) == 0,
                                      "%s, k %d, %d lanes: dw[%d][%d] %a, want %a",
                                      dg_cpu_isa_name((enum dg_cpu_isa)isa), k, cols, c, i,
                                      (double)dw[c * 25 + i], (double)want_dw[c * 25 + i]);
            }
        }
    }
}
END_TEST

START_TEST(phase_interleave_by_hand)
{
    enum { MOST = 70 };
    float src[4][MOST], packed[4 * MOST + 4], back[4][MOST + 1];
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < MOST; c++)
            src[k][c] = (float)(1000 * (k + 1) + c) + 0.25f;
    for (int isa = 0; isa < DG_CPU_ISA_COUNT; isa++) {
        const struct dg_cpu_isa_ops *ops = dg_cpu_isa_table((enum dg_cpu_isa)isa);
        if (!ops)
            continue;
        const int counts[] = {1, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 64, 70};
        for (size_t n = 0; n < sizeof counts / sizeof *counts; n++)
            for (int missing = 0; missing < 16; missing++) { /* bit k: in[k] is outside */
                int channels = counts[n];
                const float *in[4];
                float *out[4];
                for (int k = 0; k < 4; k++) {
                    in[k] = missing >> k & 1 ? NULL : src[k];
                    out[k] = missing >> k & 1 ? NULL : back[k];
                }
                for (int i = 0; i < 4 * MOST + 4; i++)
                    packed[i] = -1.0f;
                ops->interleave4(in, channels, packed);
                for (int c = 0; c < channels; c++)
                    for (int k = 0; k < 4; k++)
                        ck_assert_msg(packed[4 * c + k] == (in[k] ? src[k][c] : 0.0f),
                                      "%s, %d channels, missing %#x: lane %d of channel %d",
                                      dg_cpu_isa_name((enum dg_cpu_isa)isa), channels, missing,
                                      k, c);
                ck_assert(packed[4 * channels] == -1.0f); /* nothing past the channels */
                for (int k = 0; k < 4; k++)
                    for (int c = 0; c <= MOST; c++)
                        back[k][c] = -2.0f;
                ops->deinterleave4(packed, channels, out);
                for (int k = 0; k < 4; k++)
                    for (int c = 0; c <= MOST; c++) {
                        float want = in[k] && c < channels ? src[k][c] : -2.0f;
                        ck_assert_msg(back[k][c] == want,
                                      "%s, %d channels, missing %#x: back %d of channel %d",
                                      dg_cpu_isa_name((enum dg_cpu_isa)isa), channels, missing,
                                      k, c);
                    }
            }
    }
}
END_TEST

int main(void)
{
    load_cases(&conv_cases, DG_OP_CONV, DG_OP_VS_REF);
    load_cases(&conv_thread_cases, DG_OP_CONV, DG_OP_THREADS);
    load_cases(&conv_grad_cases, DG_OP_CONV, DG_OP_GRAD);
    load_cases(&pool_cases, DG_OP_MAXPOOL, DG_OP_VS_REF);
    load_cases(&dense_cases, DG_OP_DENSE, DG_OP_VS_REF);
    load_cases(&dense_thread_cases, DG_OP_DENSE, DG_OP_THREADS);
    load_cases(&softmax_cases, DG_OP_SOFTMAX_XENT, DG_OP_VS_REF);
    load_cases(&relu_cases, DG_OP_RELU_BWD, DG_OP_VS_REF);
    load_cases(&dropout_cases, DG_OP_DROPOUT, DG_OP_VS_REF);
    load_cases(&rmsprop_cases, DG_OP_RMSPROP, DG_OP_VS_REF);
    load_cases(&assemble_cases, DG_OP_ASSEMBLE, DG_OP_VS_REF);
    load_cases(&bn_cases, DG_OP_BATCHNORM, DG_OP_VS_REF);
    load_cases(&bn_thread_cases, DG_OP_BATCHNORM, DG_OP_THREADS);
    load_cases(&bn_grad_cases, DG_OP_BATCHNORM, DG_OP_GRAD);
    Suite *suite = suite_create("ops");
    TCase *conv = tcase_create("conv");
    tcase_set_timeout(conv, 300);
    tcase_add_loop_test(conv, conv_vs_reference, 0, conv_cases.count);
    tcase_add_loop_test(conv, conv_deterministic, 0, DETERMINISTIC_FAMILIES);
    tcase_add_test(conv, conv_by_hand);
    suite_add_tcase(suite, conv);
    TCase *elementwise = tcase_create("elementwise");
    tcase_set_timeout(elementwise, 120);
    tcase_add_loop_test(elementwise, relu_bwd_exact, 0, relu_cases.count);
    tcase_add_test(elementwise, gap_vs_reference);
    tcase_add_loop_test(elementwise, maxpool_vs_reference, 0, pool_cases.count);
    tcase_add_test(elementwise, maxpool_ties_by_hand);
    tcase_add_test(elementwise, dropout_masks);
    tcase_add_test(elementwise, dropout_backward_takes_the_forward_masks);
    tcase_add_loop_test(elementwise, dense_vs_reference, 0, dense_cases.count);
    tcase_add_test(elementwise, dense_deterministic);
    tcase_add_loop_test(elementwise, softmax_xent_vs_reference, 0, softmax_cases.count);
    tcase_add_loop_test(elementwise, rmsprop_vs_element_math, 0, rmsprop_cases.count);
    tcase_add_loop_test(elementwise, batchnorm_vs_reference, 0, bn_cases.count);
    tcase_add_loop_test(elementwise, batchnorm_bwd_relu_is_bn_then_relu, 0, bn_cases.count);
    tcase_add_test(elementwise, batchnorm_by_hand);
    tcase_add_test(elementwise, batchnorm_deterministic);
    tcase_add_loop_test(elementwise, adam_vs_element_math, 0, 2 * rmsprop_cases.count);
    tcase_add_loop_test(elementwise, sgd_vs_element_math, 0, 3 * rmsprop_cases.count);
    tcase_add_test(elementwise, batch_assemble_vs_element_math);
    tcase_add_test(elementwise, sincos_polynomial_accuracy);
    tcase_add_test(elementwise, reference_philox_known_answers);
    tcase_add_test(elementwise, backend_identity_and_memory);
    tcase_add_test(elementwise, threads_claim_each_item_once);
    tcase_add_test(elementwise, phase_interleave_by_hand);
    tcase_add_test(elementwise, winograd_double_transforms_by_lanes);
    tcase_add_test(elementwise, kernels_from_environment);
    tcase_add_test(elementwise, isa_from_environment);
    tcase_add_test(elementwise, net_describes_algorithms);
    suite_add_tcase(suite, elementwise);
    TCase *fd = tcase_create("finite differences");
    tcase_set_timeout(fd, 120);
    tcase_add_test(fd, fd_reference_conv);
    tcase_add_test(fd, fd_reference_dense);
    tcase_add_test(fd, fd_reference_batchnorm);
    tcase_add_loop_test(fd, fd_fast_batchnorm, 0, bn_grad_cases.count);
    tcase_add_test(fd, fd_reference_pool_dropout_xent);
    tcase_add_loop_test(fd, fd_fast_conv, 0, conv_grad_cases.count);
    tcase_add_test(fd, fd_fast_relu);
    tcase_add_test(fd, fd_fast_dense);
    tcase_add_test(fd, fd_fast_pool_dropout_xent);
    suite_add_tcase(suite, fd);
    return dg_test_run_suite(suite);
}
