/* `--math bf16` on the CPU (src/cpu/bf16.h): convolutions and dense layers multiply operands
 * rounded to bf16 and sum in float32. Checked for each bf16 unit: the portable emulation of
 * vdpbf16ps (every machine, with the portable kernels around it) and AVX512-BF16 (where the CPU
 * has it; a SKIP line saying why elsewhere), over the DG_OP_VS_REF convolution and dense cases
 * of the op table:
 *   - against the double reference computed on the same bf16-rounded operands, with the FP32
 *     bounds (forward elementwise 1e-5 + 1e-4 |ref|, backward normwise 5e-5): what is left is
 *     float32 summation, so an operand that was not rounded (an error of ~u_bf16 = 3.9e-3 per
 *     product) or a wrong index fails;
 *   - against the double reference on the float32 operands, with the bf16 bound (normwise
 *     1e-2, include/digits/compare.h);
 *   - bit-identical results for 1, 2 and 3 threads;
 * plus the rounding itself (nearest even, denormals, NaN, infinity, on both units), the
 * refusal of `--math bf16` where no unit can run (naming what is missing), and a training
 * step of the network at bf16 against fp32. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "cpu/bf16.h"
#include "cpu/cpu.h"
#include "digits/compare.h"
#include "digits/cpu_features.h"
#include "digits/model.h"
#include "digits/net.h"
#include "nn/op_cases.h"
#include "ref_ops.h"
#include "test_util.h"

#define FP32_FWD_ATOL 1e-5
#define FP32_FWD_RTOL 1e-4
#define FP32_BWD 5e-5 /* dg_tol_backward_fp32 */

enum unit { UNIT_PORTABLE, UNIT_AVX512, UNITS };
static const char *const unit_names[UNITS] = {"portable (emulated vdpbf16ps)", "AVX512-BF16"};

/* The CPU backend of a unit, or NULL after a SKIP line saying why it cannot run here. */
static struct dg_backend *unit_backend(enum unit u, int threads)
{
    struct dg_backend *be = NULL;
    if (u == UNIT_PORTABLE) {
        be = dg_test_cpu_backend_isa(threads, DG_CPU_ISA_SCALAR, DG_CPU_KERNELS_AUTO);
        ck_assert_int_eq(dg_backend_cpu_set_bf16_portable(be), DG_OK);
        return be;
    }
#if defined(__x86_64__)
    if (!dg_cpu_isa_supported(DG_CPU_ISA_AVX512)) {
        printf("SKIP %s: no AVX-512 here\n", unit_names[u]);
        return NULL;
    }
    be = dg_test_cpu_backend_isa(threads, DG_CPU_ISA_AVX512, DG_CPU_KERNELS_AUTO);
    if (!be)
        return NULL;
    if (dg_backend_cpu_set_math(be, DG_MATH_BF16) != DG_OK) {
        printf("SKIP %s: %s\n", unit_names[u], dg_error_message());
        dg_backend_destroy(be);
        return NULL;
    }
    return be;
#else
    printf("SKIP %s: not an x86-64 build\n", unit_names[u]);
    return NULL;
#endif
}

static struct case_list {
    struct dg_op_case at[DG_OP_MAX_CASES];
    int count;
} conv_cases, dense_cases, thread_cases;

static void load(struct case_list *list, enum dg_op_kind kind, unsigned want)
{
    list->count = dg_op_cases(kind, want, DG_OP_TEST_BATCH, dg_test_reduced_batches(), list->at,
                              DG_OP_MAX_CASES);
    if (list->count <= 0) {
        fprintf(stderr, "test_bf16: no op cases of kind %d: %s\n", (int)kind, dg_error_message());
        exit(EXIT_FAILURE);
    }
}

/* doubles of x, rounded to bf16 first when `round` */
static double *doubles(const float *x, size_t n, int round)
{
    double *d = dg_test_doubles(n);
    for (size_t i = 0; i < n; i++)
        d[i] = round ? (double)dg_bf16_value(x[i]) : (double)x[i];
    return d;
}

static void check(enum dg_status status)
{
    ck_assert_msg(status == DG_OK, "backend call failed: %s", dg_error_message());
}

/* normwise max |got - ref| / max |ref| */
static double normwise(const float *got, const double *ref, size_t n)
{
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        worst = d > worst || isnan(d) ? d : worst;
        scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    }
    return scale > 0.0 ? worst / scale : worst;
}

static void expect_bf16_bound(const char *what, const float *got, const double *ref, size_t n)
{
    double e = normwise(got, ref, n);
    printf("   %-28s normwise %.3g against float32 operands (bf16 bound %.3g)\n", what, e,
           dg_tol_forward_bf16.rtol);
    ck_assert_msg(e <= dg_tol_forward_bf16.rtol, "%s: %.3g outside the bf16 bound", what, e);
}

/* ---- rounding ---- */

START_TEST(rounding_by_hand)
{
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1 */
        {0x3f808000u, 0x3f80}, /* a tie: to the even 0x3f80 */
        {0x3f818000u, 0x3f82}, /* a tie: to the even 0x3f82 */
        {0x3f808001u, 0x3f81}, /* above the tie */
        {0x3f807fffu, 0x3f80}, /* below it */
        {0xbf808001u, 0xbf81}, /* negative */
        {0x00000001u, 0x0000}, /* denormals become zeros of their sign */
        {0x807fffffu, 0x8000},
        {0x00800000u, 0x0080}, /* the smallest normal stays */
        {0x7f800000u, 0x7f80}, /* infinity */
        {0xff800000u, 0xff80},
        {0x7f7fffffu, 0x7f80}, /* the largest float rounds past the largest bf16 */
        {0x7fc00001u, 0x7fc0}, /* NaN stays NaN, quiet */
        {0x7f800001u, 0x7fc0}, /* a signalling NaN turns quiet, never infinity */
        {0xffffffffu, 0xffff},
        {0x80000000u, 0x8000}, /* -0 */
    };
    for (int u = 0; u < UNITS; u++) {
        struct dg_backend *be = unit_backend((enum unit)u, 1);
        if (!be && u != UNIT_PORTABLE)
            continue;
        const struct dg_cpu_bf16_ops *ops =
            u == UNIT_PORTABLE ? &dg_cpu_bf16_portable :
#if defined(__x86_64__)
                               &dg_cpu_bf16_avx512;
#else
                               &dg_cpu_bf16_portable;
#endif
        dg_backend_destroy(be);
        size_t n = sizeof cases / sizeof cases[0];
        float in[64];
        uint16_t out[64];
        for (size_t i = 0; i < n; i++)
            memcpy(&in[i], &cases[i].in, sizeof(float));
        ops->round(in, n, out);
        for (size_t i = 0; i < n; i++) {
            ck_assert_msg(out[i] == cases[i].out, "%s: 0x%08x -> 0x%04x, want 0x%04x",
                          unit_names[u], cases[i].in, out[i], cases[i].out);
            ck_assert_uint_eq(dg_bf16_round(in[i]), cases[i].out);
        }
        /* random bit patterns: the unit's loop agrees with the scalar function */
        struct dg_test_rng rng = {7};
        enum { N = 1 << 16 };
        float *x = dg_test_floats(N);
        uint16_t *y = malloc(N * sizeof *y);
        for (size_t i = 0; i < N; i++) {
            uint32_t bits = (uint32_t)dg_test_next(&rng);
            memcpy(&x[i], &bits, sizeof bits);
        }
        ops->round(x, N, y);
        for (size_t i = 0; i < N; i++)
            ck_assert_uint_eq(y[i], dg_bf16_round(x[i]));
        free(x);
        free(y);
    }
}
END_TEST

/* ---- convolutions ---- */

START_TEST(conv_vs_reference)
{
    const struct dg_op_case *oc = &conv_cases.at[_i];
    struct dg_conv_shape s = oc->conv;
    size_t nx = (size_t)s.batch * s.in_channels * s.height * s.width;
    size_t ny = (size_t)s.batch * s.out_channels * dg_conv_out_height(&s) * dg_conv_out_width(&s);
    size_t nw = (size_t)s.out_channels * s.in_channels * s.kernel * s.kernel;
    struct dg_test_rng rng = {1000u + (uint64_t)_i};
    float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats(s.out_channels);
    float *dy = dg_test_floats(ny);
    dg_test_fill(&rng, x, nx, -1, 1);
    dg_test_fill(&rng, w, nw, -0.3f, 0.3f);
    dg_test_fill(&rng, b, s.out_channels, -0.1f, 0.1f);
    dg_test_fill(&rng, dy, ny, -1, 1);
    double *xr = doubles(x, nx, 1), *wr = doubles(w, nw, 1), *dyr = doubles(dy, ny, 1);
    double *xf = doubles(x, nx, 0), *wf = doubles(w, nw, 0), *dyf = doubles(dy, ny, 0);
    double *bd = doubles(b, s.out_channels, 0);
    double *yr = dg_test_doubles(ny), *yf = dg_test_doubles(ny), *dxr = dg_test_doubles(nx);
    double *dxf = dg_test_doubles(nx), *dwr = dg_test_doubles(nw), *dwf = dg_test_doubles(nw);
    double *dbr = dg_test_doubles(s.out_channels), *dbf = dg_test_doubles(s.out_channels);
    int relu = _i % 2;
    dg_ref_conv_fwd(&s, xr, wr, bd, yr, relu);
    dg_ref_conv_fwd(&s, xf, wf, bd, yf, relu);
    dg_ref_conv_bwd_data(&s, dyr, wr, dxr);
    dg_ref_conv_bwd_data(&s, dyf, wf, dxf);
    dg_ref_conv_bwd_filter(&s, xr, dyr, dwr, dbr);
    dg_ref_conv_bwd_filter(&s, xf, dyf, dwf, dbf);
    float *y = dg_test_floats(ny), *dx = dg_test_floats(nx), *dw = dg_test_floats(nw);
    float *db = dg_test_floats(s.out_channels);
    for (int u = 0; u < UNITS; u++) {
        struct dg_backend *be = unit_backend((enum unit)u, 2);
        if (!be)
            continue;
        printf("-- %s: %s (batch %d, %d -> %d, %dx%d, k %d%s)\n", unit_names[u], oc->name,
               s.batch, s.in_channels, s.out_channels, s.height, s.width, s.kernel,
               relu ? ", ReLU" : "");
        void *plan = NULL;
        check(be->ops->conv_plan_create(be, &s, &plan));
        check(be->ops->conv_fwd(be, plan, x, w, b, y, relu));
        if (!dg_conv_is_same_stride1(&s)) {
            /* strided and "valid" convolutions stay float32 under --math bf16, on Winograd where
             * the shape allows: its rounding error scales with the output's largest values
             * (these weights are not scaled by the fan-in), so the bound is normwise */
            ck_assert(dg_test_close_max("forward (float32)", y, yf, ny, FP32_BWD));
            check(be->ops->conv_bwd_data(be, plan, dy, w, dx));
            check(be->ops->conv_bwd_filter(be, plan, x, dy, dw, db));
            ck_assert(dg_test_close_max("bwd data (float32)", dx, dxf, nx, FP32_BWD));
            ck_assert(dg_test_close_max("bwd filter (float32)", dw, dwf, nw, FP32_BWD));
            ck_assert(dg_test_close_max("bias gradient", db, dbf, s.out_channels, FP32_BWD));
            be->ops->conv_plan_free(be, plan);
            dg_backend_destroy(be);
            continue;
        }
        ck_assert(dg_test_close("forward (bf16 operands)", y, yr, ny, FP32_FWD_ATOL, FP32_FWD_RTOL));
        check(be->ops->conv_bwd_data(be, plan, dy, w, dx));
        check(be->ops->conv_bwd_filter(be, plan, x, dy, dw, db));
        ck_assert(dg_test_close_max("bwd data (bf16 operands)", dx, dxr, nx, FP32_BWD));
        ck_assert(dg_test_close_max("bwd filter (bf16 operands)", dw, dwr, nw, FP32_BWD));
        ck_assert(dg_test_close_max("bias gradient (float32 dy)", db, dbf, s.out_channels,
                                    FP32_BWD));
        expect_bf16_bound("forward", y, yf, ny);
        expect_bf16_bound("bwd data", dx, dxf, nx);
        expect_bf16_bound("bwd filter", dw, dwf, nw);
        be->ops->conv_plan_free(be, plan);
        dg_backend_destroy(be);
    }
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    free(xr), free(wr), free(dyr), free(xf), free(wf), free(dyf), free(bd), free(yr), free(yf);
    free(dxr), free(dxf), free(dwr), free(dwf), free(dbr), free(dbf);
}
END_TEST

/* The same outputs, bit for bit, with 1, 2 and 3 threads. */
START_TEST(conv_deterministic)
{
    const struct dg_op_case *oc = &thread_cases.at[_i];
    struct dg_conv_shape s = oc->conv;
    size_t nx = (size_t)s.batch * s.in_channels * s.height * s.width;
    size_t ny = (size_t)s.batch * s.out_channels * dg_conv_out_height(&s) * dg_conv_out_width(&s);
    size_t nw = (size_t)s.out_channels * s.in_channels * s.kernel * s.kernel;
    struct dg_test_rng rng = {77};
    float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats(s.out_channels);
    float *dy = dg_test_floats(ny);
    dg_test_fill(&rng, x, nx, -1, 1);
    dg_test_fill(&rng, w, nw, -0.3f, 0.3f);
    dg_test_fill(&rng, b, s.out_channels, -0.1f, 0.1f);
    dg_test_fill(&rng, dy, ny, -1, 1);
    for (int u = 0; u < UNITS; u++) {
        float *out[3][4];
        int ran = 0;
        for (int t = 1; t <= 3; t++) {
            struct dg_backend *be = unit_backend((enum unit)u, t);
            if (!be)
                break;
            float **o = out[t - 1];
            o[0] = dg_test_floats(ny), o[1] = dg_test_floats(nx), o[2] = dg_test_floats(nw);
            o[3] = dg_test_floats(s.out_channels);
            void *plan = NULL;
            check(be->ops->conv_plan_create(be, &s, &plan));
            check(be->ops->conv_fwd(be, plan, x, w, b, o[0], 1));
            check(be->ops->conv_bwd_data(be, plan, dy, w, o[1]));
            check(be->ops->conv_bwd_filter(be, plan, x, dy, o[2], o[3]));
            be->ops->conv_plan_free(be, plan);
            dg_backend_destroy(be);
            ran = t;
        }
        if (ran == 3) {
            printf("-- %s: %s, 1/2/3 threads\n", unit_names[u], oc->name);
            size_t counts[4] = {ny, nx, nw, (size_t)s.out_channels};
            const char *what[4] = {"forward", "bwd data", "bwd filter", "bias gradient"};
            for (int t = 1; t < 3; t++)
                for (int k = 0; k < 4; k++)
                    ck_assert(dg_test_equal(what[k], out[t][k], out[0][k], counts[k]));
        }
        for (int t = 0; t < ran; t++)
            for (int k = 0; k < 4; k++)
                free(out[t][k]);
    }
    free(x), free(w), free(b), free(dy);
}
END_TEST

/* ---- dense ---- */

START_TEST(dense_vs_reference)
{
    const struct dg_op_case *oc = &dense_cases.at[_i];
    int batch = oc->dense.batch, in = oc->dense.in, out = oc->dense.out;
    size_t nx = (size_t)batch * in, nw = (size_t)in * out, ny = (size_t)batch * out;
    struct dg_test_rng rng = {2000u + (uint64_t)_i};
    float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats(out);
    float *dy = dg_test_floats(ny);
    dg_test_fill(&rng, x, nx, -1, 1);
    dg_test_fill(&rng, w, nw, -0.1f, 0.1f);
    dg_test_fill(&rng, b, out, -0.1f, 0.1f);
    dg_test_fill(&rng, dy, ny, -1, 1);
    double *xr = doubles(x, nx, 1), *wr = doubles(w, nw, 1), *dyr = doubles(dy, ny, 1);
    double *xf = doubles(x, nx, 0), *wf = doubles(w, nw, 0), *dyf = doubles(dy, ny, 0);
    double *bd = doubles(b, out, 0);
    double *yr = dg_test_doubles(ny), *yf = dg_test_doubles(ny), *dxr = dg_test_doubles(nx);
    double *dxf = dg_test_doubles(nx), *dwr = dg_test_doubles(nw), *dwf = dg_test_doubles(nw);
    double *dbr = dg_test_doubles(out), *dbf = dg_test_doubles(out);
    int relu = _i % 2;
    dg_ref_dense_fwd(batch, in, out, xr, wr, bd, yr, relu);
    dg_ref_dense_fwd(batch, in, out, xf, wf, bd, yf, relu);
    dg_ref_dense_bwd(batch, in, out, xr, wr, dyr, dxr, dwr, dbr);
    dg_ref_dense_bwd(batch, in, out, xf, wf, dyf, dxf, dwf, dbf);
    float *y = dg_test_floats(ny), *dx = dg_test_floats(nx), *dw = dg_test_floats(nw);
    float *db = dg_test_floats(out);
    for (int u = 0; u < UNITS; u++) {
        struct dg_backend *be = unit_backend((enum unit)u, 2);
        if (!be)
            continue;
        printf("-- %s: dense %s (%d x %d -> %d%s)\n", unit_names[u], oc->name, batch, in, out,
               relu ? ", ReLU" : "");
        check(be->ops->dense_fwd(be, batch, in, out, x, w, b, y, relu));
        check(be->ops->dense_bwd(be, batch, in, out, x, w, dy, dx, dw, db));
        ck_assert(dg_test_close("forward (bf16 operands)", y, yr, ny, FP32_FWD_ATOL, FP32_FWD_RTOL));
        ck_assert(dg_test_close_max("dx (bf16 operands)", dx, dxr, nx, FP32_BWD));
        ck_assert(dg_test_close_max("dw (bf16 operands)", dw, dwr, nw, FP32_BWD));
        ck_assert(dg_test_close_max("db (float32 dy)", db, dbf, out, FP32_BWD));
        expect_bf16_bound("forward", y, yf, ny);
        expect_bf16_bound("dx", dx, dxf, nx);
        expect_bf16_bound("dw", dw, dwf, nw);
        dg_backend_destroy(be);
    }
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    free(xr), free(wr), free(dyr), free(xf), free(wf), free(dyf), free(bd), free(yr), free(yf);
    free(dxr), free(dxf), free(dwr), free(dwf), free(dbr), free(dbf);
}
END_TEST

/* ---- where no unit can run ---- */

START_TEST(refused_without_a_unit)
{
    /* held to AVX2 (or portable C), no bf16 unit of this build can run */
    enum dg_cpu_isa low = dg_cpu_isa_supported(DG_CPU_ISA_AVX2) ? DG_CPU_ISA_AVX2 : DG_CPU_ISA_SCALAR;
    struct dg_backend *be = dg_test_cpu_backend_isa(1, low, DG_CPU_KERNELS_AUTO);
    ck_assert_int_eq(dg_backend_cpu_set_math(be, DG_MATH_BF16), DG_ERR_USAGE);
    const char *msg = dg_error_message();
    printf("held to %s: %s\n", dg_cpu_isa_name(low), msg);
    ck_assert_msg(strstr(msg, "--math bf16") && strstr(msg, "use --math fp32"), "%s", msg);
#if defined(__x86_64__)
    ck_assert_msg(strstr(msg, "AVX512-BF16"), "the message names the unit: %s", msg);
    if (dg_cpu_features()->avx512_bf16)
        ck_assert_msg(strstr(msg, "DIGITS_CPU_ISA"), "the message names the cap: %s", msg);
#endif
    ck_assert_ptr_null(dg_backend_cpu_bf16_unit(be));
    ck_assert_int_eq(dg_backend_cpu_set_math(be, DG_MATH_TF32), DG_ERR_USAGE);
    ck_assert_int_eq(dg_backend_cpu_set_math(be, DG_MATH_FP32), DG_OK);
    dg_backend_destroy(be);
    /* the same through dg_backend_open, as the commands open it */
    struct dg_backend_spec spec = {"cpu", 1, DG_MATH_BF16, 0, 0};
    struct dg_backend *opened = NULL;
    enum dg_cpu_isa isa = DG_CPU_ISA_SCALAR;
    ck_assert_int_eq(dg_cpu_isa_from_env(&isa), DG_OK); /* DIGITS_CPU_ISA may hold it back */
    if (!dg_cpu_features()->avx512_bf16 || isa != DG_CPU_ISA_AVX512) {
        ck_assert_int_eq(dg_backend_open(&spec, NULL, 0, &opened), DG_ERR_USAGE);
        ck_assert_ptr_null(opened);
    } else {
        ck_assert_int_eq(dg_backend_open(&spec, NULL, 0, &opened), DG_OK);
        ck_assert_str_eq(dg_backend_cpu_bf16_unit(opened), "AVX512-BF16");
        ck_assert_ptr_nonnull(strstr(opened->description, "bf16 math"));
        dg_backend_destroy(opened);
    }
}
END_TEST

/* ---- the network ---- */

/* One training step of the reference network at bf16 and at fp32 from the same weights: the
 * losses agree within the bf16 loss bound, and they are not the same number (bf16 ran). */
START_TEST(network_step)
{
    for (int u = 0; u < UNITS; u++) {
        struct dg_backend *be = unit_backend((enum unit)u, 2);
        if (!be)
            continue;
        struct dg_backend *ref = dg_test_cpu_backend(2, DG_CPU_KERNELS_AUTO);
        int count;
        const struct dg_layer_spec *specs = dg_arch_reference(&count);
        struct dg_model model = {0};
        ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
        dg_model_init_glorot(&model, 5);
        int batch = 16;
        float *x = dg_test_floats((size_t)batch * 784);
        uint8_t labels[16];
        struct dg_test_rng rng = {9};
        dg_test_fill(&rng, x, (size_t)batch * 784, 0, 1);
        for (int i = 0; i < batch; i++)
            labels[i] = (uint8_t)(i % 10);
        double loss[2];
        struct dg_backend *sides[2] = {ref, be};
        for (int side = 0; side < 2; side++) {
            struct dg_net *net = NULL;
            ck_assert_int_eq(dg_net_create(sides[side], &model, batch, &net), DG_OK);
            ck_assert_int_eq(dg_net_upload_params(net, model.params, 1), DG_OK);
            /* CPU backend memory is host memory */
            memcpy(net->act[0], x, sizeof(float) * (size_t)batch * 784);
            memcpy(net->labels, labels, (size_t)batch);
            struct dg_net_mode mode = {1, 3, 0, 0};
            ck_assert_int_eq(dg_net_stats_reset(net), DG_OK);
            ck_assert_int_eq(dg_net_forward(net, batch, &mode, net->labels), DG_OK);
            ck_assert_int_eq(dg_net_backward(net, batch, &mode), DG_OK);
            double correct;
            ck_assert_int_eq(dg_net_stats_read(net, &loss[side], &correct), DG_OK);
            loss[side] /= batch;
            dg_net_free(net);
        }
        double rel = fabs(loss[1] - loss[0]) / fabs(loss[0]);
        printf("-- %s: network loss fp32 %.9g, bf16 %.9g, relative %.3g (bound %.3g)\n",
               unit_names[u], loss[0], loss[1], rel, DG_TOL_LOSS_RTOL_BF16);
        ck_assert(rel <= DG_TOL_LOSS_RTOL_BF16);
        ck_assert(loss[1] != loss[0]);
        free(x);
        dg_model_free(&model);
        dg_backend_destroy(ref);
        dg_backend_destroy(be);
    }
}
END_TEST

int main(void)
{
    load(&conv_cases, DG_OP_CONV, DG_OP_VS_REF);
    load(&thread_cases, DG_OP_CONV, DG_OP_THREADS);
    load(&dense_cases, DG_OP_DENSE, DG_OP_VS_REF);
    Suite *suite = suite_create("bf16");
    TCase *ops = tcase_create("ops");
    tcase_set_timeout(ops, 300);
    tcase_add_test(ops, rounding_by_hand);
    tcase_add_loop_test(ops, conv_vs_reference, 0, conv_cases.count);
    tcase_add_loop_test(ops, conv_deterministic, 0, thread_cases.count);
    tcase_add_loop_test(ops, dense_vs_reference, 0, dense_cases.count);
    tcase_add_test(ops, refused_without_a_unit);
    tcase_add_test(ops, network_step);
    suite_add_tcase(suite, ops);
    return dg_test_run_suite(suite);
}
