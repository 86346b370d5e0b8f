/* NHWC activations on the CPU give the same bits as NCHW. Every op with an NHWC form (the
 * convolution passes of every family: direct, Winograd, the stride-2 phases and the im2col and
 * bf16 passes on NCHW copies; batchnorm; max-pool; global average pooling; dropout; the
 * transpose of flatten) is run in both layouts on the same data, for every instruction set
 * this machine runs, and its NHWC results, transposed, must equal the NCHW ones exactly.
 * Then whole nets: training steps of the deotte preset, of a max-pool + GAP network and of the
 * reference network give identical weights and statistics in both layouts, and
 * DIGITS_CPU_LAYOUT is read and refused as documented. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"
#include "test_util.h"

static const enum dg_cpu_isa isas[] = {DG_CPU_ISA_SCALAR, DG_CPU_ISA_NEON, DG_CPU_ISA_AVX2,
                                       DG_CPU_ISA_AVX512};
static const enum dg_cpu_kernels kernel_sets[] = {DG_CPU_KERNELS_AUTO, DG_CPU_KERNELS_DIRECT,
                                                  DG_CPU_KERNELS_GENERIC};
#define ISAS ((int)(sizeof isas / sizeof isas[0]))

static void check_ok(enum dg_status status)
{
    ck_assert_msg(status == DG_OK, "backend op failed: %s", dg_error_message());
}

/* dst (batch, pixels, c) <- src (batch, c, pixels), or back with `back` */
static void to_nhwc(const float *src, int batch, int c, size_t pixels, int back, float *dst)
{
    for (int n = 0; n < batch; n++)
        for (size_t p = 0; p < pixels; p++)
            for (int ch = 0; ch < c; ch++) {
                size_t nhwc = ((size_t)n * pixels + p) * c + ch;
                size_t nchw = ((size_t)n * c + ch) * pixels + p;
                if (back)
                    dst[nchw] = src[nhwc];
                else
                    dst[nhwc] = src[nchw];
            }
}

/* 1 when the NHWC tensor got, in NCHW order, is want bit for bit */
static int same_nchw(const char *what, const float *got, const float *want, int batch, int c,
                     size_t pixels)
{
    size_t n = (size_t)batch * c * pixels;
    float *back = dg_test_floats(n);
    to_nhwc(got, batch, c, pixels, 1, back);
    int ok = dg_test_equal(what, back, want, n);
    free(back);
    return ok;
}

/* ---- convolutions ---- */

/* Shapes that reach every pass: direct with an im2col backward data (1 input channel), "same"
 * and "valid" Winograd, stride 2 in phases on Winograd, strided direct with backward data in
 * phases, odd channel counts (direct forward, im2col backward data), a stride-2 "valid" im2col
 * convolution, deotte's first layer, and Winograd outputs whose last tiles overhang the image
 * ("valid" 12 -> 10, "same" 10x10: the tiles not written in place), and stride-2 direct
 * forwards of small images, run as groups of images side by side (7 images: a whole group of 5
 * and a partial one; an odd width). */
static const struct dg_conv_shape conv_shapes[] = {
    {3, 1, 32, 28, 28, 5, 1, 0, 0},  {3, 32, 32, 12, 12, 3, 1, 0, 0},
    {3, 32, 32, 26, 26, 3, 1, 1, 0}, {3, 32, 32, 24, 24, 5, 2, 0, 0},
    {3, 64, 64, 8, 8, 5, 2, 0, 0},   {2, 3, 16, 9, 7, 3, 1, 0, 0},
    {2, 16, 8, 7, 7, 3, 2, 1, 0},    {3, 1, 32, 28, 28, 3, 1, 1, 0},
    {3, 32, 64, 12, 12, 3, 1, 1, 0}, {2, 16, 32, 10, 10, 3, 1, 0, 0},
    {7, 16, 32, 8, 8, 5, 2, 0, 0},   {7, 16, 32, 7, 7, 3, 2, 0, 0},
};
#define CONV_SHAPES ((int)(sizeof conv_shapes / sizeof conv_shapes[0]))

/* The three passes of shape s on be in both layouts: outputs compared after transposing. */
static void conv_both_layouts(struct dg_backend *be, const struct dg_conv_shape *s,
                              const char *family)
{
    size_t in_px = (size_t)s->height * s->width;
    size_t out_px = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    size_t nx = (size_t)s->batch * s->in_channels * in_px;
    size_t ny = (size_t)s->batch * s->out_channels * out_px;
    size_t nw = (size_t)s->out_channels * s->in_channels * s->kernel * s->kernel;
    size_t nb = (size_t)s->out_channels;
    struct dg_test_rng rng = {31 + (uint64_t)s->kernel * 7 + (uint64_t)s->in_channels};
    float *x = dg_test_floats(nx), *w = dg_test_floats(nw), *b = dg_test_floats(nb);
    float *dy = dg_test_floats(ny), *xt = dg_test_floats(nx), *dyt = dg_test_floats(ny);
    dg_test_fill(&rng, x, nx, -1, 1);
    dg_test_fill(&rng, w, nw, -0.2f, 0.2f);
    dg_test_fill(&rng, b, nb, -0.5f, 0.5f);
    dg_test_fill(&rng, dy, ny, -1, 1);
    to_nhwc(x, s->batch, s->in_channels, in_px, 0, xt);
    to_nhwc(dy, s->batch, s->out_channels, out_px, 0, dyt);
    float *y[2], *dx[2], *dw[2], *db[2];
    for (int layout = 0; layout < 2; layout++) {
        struct dg_conv_shape shape = *s;
        shape.nhwc = layout;
        void *plan;
        y[layout] = dg_test_floats(ny), dx[layout] = dg_test_floats(nx);
        dw[layout] = dg_test_floats(nw), db[layout] = dg_test_floats(nb);
        check_ok(be->ops->conv_plan_create(be, &shape, &plan));
        check_ok(be->ops->conv_fwd(be, plan, layout ? xt : x, w, b, y[layout], 1));
        check_ok(be->ops->conv_bwd_data(be, plan, layout ? dyt : dy, w, dx[layout]));
        check_ok(be->ops->conv_bwd_filter(be, plan, layout ? xt : x, layout ? dyt : dy,
                                          dw[layout], db[layout]));
        be->ops->conv_plan_free(be, plan);
    }
    char name[128];
    be->ops->conv_algo_name(be, s, 1, name, sizeof name);
    printf("%s: conv %d x %d -> %d, %dx%d, k %d, stride %d, valid %d (%s)\n", family, s->batch,
           s->in_channels, s->out_channels, s->height, s->width, s->kernel, dg_conv_stride(s),
           s->valid, name);
    ck_assert(same_nchw("forward", y[1], y[0], s->batch, s->out_channels, out_px));
    ck_assert(same_nchw("backward data", dx[1], dx[0], s->batch, s->in_channels, in_px));
    ck_assert(dg_test_equal("weight gradient", dw[1], dw[0], nw));
    ck_assert(dg_test_equal("bias gradient", db[1], db[0], nb));
    for (int layout = 0; layout < 2; layout++)
        free(y[layout]), free(dx[layout]), free(dw[layout]), free(db[layout]);
    free(x), free(w), free(b), free(dy), free(xt), free(dyt);
}

/* _i: an ISA; every kernel set, 1 and 2 threads (the layouts' splits differ) */
START_TEST(conv_layouts_agree)
{
    for (int k = 0; k < (int)(sizeof kernel_sets / sizeof kernel_sets[0]); k++)
        for (int threads = 1; threads <= 2; threads++) {
            struct dg_backend *be = dg_test_cpu_backend_isa(threads, isas[_i], kernel_sets[k]);
            if (!be)
                return;
            char family[64];
            snprintf(family, sizeof family, "%s, kernels %d, %d thread%s",
                     dg_cpu_isa_name(isas[_i]), (int)kernel_sets[k], threads,
                     threads == 1 ? "" : "s");
            for (int i = 0; i < CONV_SHAPES; i++)
                conv_both_layouts(be, &conv_shapes[i], family);
            dg_backend_destroy(be);
        }
}
END_TEST

/* The bf16 passes (the portable emulation of the bf16 unit) on their NCHW copies. */
START_TEST(conv_layouts_agree_bf16)
{
    struct dg_backend *be = dg_test_cpu_backend(2, DG_CPU_KERNELS_AUTO);
    check_ok(dg_backend_cpu_set_bf16_portable(be));
    conv_both_layouts(be, &conv_shapes[1], "portable bf16");
    conv_both_layouts(be, &conv_shapes[5], "portable bf16");
    dg_backend_destroy(be);
}
END_TEST

/* ---- batchnorm, max-pool, GAP, dropout, transpose ---- */

/* Channel counts with and without a multiple of 4, 8 or 16 (the element loops take 8 channels,
 * then one at a time; the sums 16, then 4, then one), pixel counts with and without a tail
 * after the 16 partial sums, and with only a tail (under 16 pixels). One pixel (a dense layer's
 * batchnorm) takes the NHWC passes in both layouts (batchnorm.c, layout_of): that shape checks
 * only that an NCHW caller gets them too. */
static const struct dg_bn_shape bn_shapes[] = {{5, 32, 144, 0}, {3, 21, 37, 0}, {4, 64, 16, 0},
                                               {2, 6, 15, 0},   {3, 16, 676, 0}, {3, 12, 20, 0},
                                               {7, 40, 1, 0},   {3, 36, 9, 0},   {7, 40, 3, 0}};

START_TEST(batchnorm_layouts_agree)
{
    for (int t = 1; t <= 2; t++) {
        struct dg_backend *be = dg_test_cpu_backend_isa(t, isas[_i], DG_CPU_KERNELS_AUTO);
        if (!be)
            return;
        for (size_t k = 0; k < sizeof bn_shapes / sizeof bn_shapes[0]; k++) {
            struct dg_bn_shape s = bn_shapes[k];
            size_t c = (size_t)s.channels, sp = (size_t)s.spatial, n = (size_t)s.batch * c * sp;
            struct dg_test_rng rng = {400 + k};
            float *x = dg_test_floats(n), *dy = dg_test_floats(n), *xt = dg_test_floats(n);
            float *dyt = dg_test_floats(n), *gamma = dg_test_floats(c), *beta = dg_test_floats(c);
            dg_test_fill(&rng, x, n, -2, 3);
            dg_test_fill(&rng, dy, n, -1, 1);
            dg_test_fill(&rng, gamma, c, 0.5f, 1.5f);
            dg_test_fill(&rng, beta, c, -0.5f, 0.5f);
            to_nhwc(x, s.batch, s.channels, sp, 0, xt);
            to_nhwc(dy, s.batch, s.channels, sp, 0, dyt);
            float *y[2], *yi[2], *dx[2], *stats[2], *save[2], *grads[2];
            for (int layout = 0; layout < 2; layout++) {
                s.nhwc = layout;
                y[layout] = dg_test_floats(n), yi[layout] = dg_test_floats(n);
                dx[layout] = dg_test_floats(n), stats[layout] = dg_test_floats(2 * c);
                save[layout] = dg_test_floats(2 * c), grads[layout] = dg_test_floats(2 * c);
                for (size_t i = 0; i < c; i++)
                    stats[layout][i] = 0.1f * (float)i, stats[layout][c + i] = 1.0f;
                const float *in = layout ? xt : x, *g = layout ? dyt : dy;
                check_ok(be->ops->batchnorm_fwd_train(be, &s, in, gamma, beta, stats[layout],
                                                      stats[layout] + c, 0.99, 1e-3, y[layout],
                                                      save[layout], save[layout] + c));
                check_ok(be->ops->batchnorm_fwd_infer(be, &s, in, gamma, beta, stats[layout],
                                                      stats[layout] + c, 1e-3, yi[layout]));
                check_ok(be->ops->batchnorm_bwd(be, &s, in, g, gamma, save[layout],
                                                save[layout] + c, dx[layout], grads[layout],
                                                grads[layout] + c));
            }
            printf("%s, %d thread%s: batchnorm %d x %d x %d\n", dg_cpu_isa_name(isas[_i]), t,
                   t == 1 ? "" : "s", s.batch, s.channels, s.spatial);
            ck_assert(same_nchw("train forward", y[1], y[0], s.batch, s.channels, sp));
            ck_assert(same_nchw("inference forward", yi[1], yi[0], s.batch, s.channels, sp));
            ck_assert(same_nchw("input gradient", dx[1], dx[0], s.batch, s.channels, sp));
            ck_assert(dg_test_equal("running statistics", stats[1], stats[0], 2 * c));
            ck_assert(dg_test_equal("saved mean, invstd", save[1], save[0], 2 * c));
            ck_assert(dg_test_equal("dgamma, dbeta", grads[1], grads[0], 2 * c));
            for (int layout = 0; layout < 2; layout++)
                free(y[layout]), free(yi[layout]), free(dx[layout]), free(stats[layout]),
                    free(save[layout]), free(grads[layout]);
            free(x), free(dy), free(xt), free(dyt), free(gamma), free(beta);
        }
        dg_backend_destroy(be);
    }
}
END_TEST

/* Max-pool with ties (values on a coarse grid) and odd sides, GAP, dropout and the transpose,
 * against the NCHW ops. */
START_TEST(element_ops_layouts_agree)
{
    struct dg_backend *be = dg_test_cpu_backend_isa(2, isas[_i], DG_CPU_KERNELS_AUTO);
    if (!be)
        return;
    const struct dg_pool_shape pools[] = {{3, 16, 6, 8, 0}, {2, 5, 7, 9, 0}};
    for (size_t k = 0; k < 2; k++) {
        struct dg_pool_shape s = pools[k];
        size_t px = (size_t)s.height * s.width, opx = (size_t)(s.height / 2) * (s.width / 2);
        size_t n = (size_t)s.batch * s.channels * px, m = (size_t)s.batch * s.channels * opx;
        struct dg_test_rng rng = {500 + k};
        float *x = dg_test_floats(n), *xt = dg_test_floats(n), *dy = dg_test_floats(m);
        float *dyt = dg_test_floats(m);
        for (size_t i = 0; i < n; i++)
            x[i] = (float)dg_test_below(&rng, 4);
        dg_test_fill(&rng, dy, m, -1, 1);
        to_nhwc(x, s.batch, s.channels, px, 0, xt);
        to_nhwc(dy, s.batch, s.channels, opx, 0, dyt);
        float *y[2] = {dg_test_floats(m), dg_test_floats(m)};
        float *dx[2] = {dg_test_floats(n), dg_test_floats(n)};
        for (int layout = 0; layout < 2; layout++) {
            s.nhwc = layout;
            check_ok(be->ops->maxpool_fwd(be, &s, layout ? xt : x, y[layout]));
            check_ok(be->ops->maxpool_bwd(be, &s, layout ? xt : x, y[layout],
                                          layout ? dyt : dy, dx[layout]));
        }
        ck_assert(same_nchw("max-pool forward", y[1], y[0], s.batch, s.channels, opx));
        ck_assert(same_nchw("max-pool backward", dx[1], dx[0], s.batch, s.channels, px));
        free(x), free(xt), free(dy), free(dyt), free(y[0]), free(y[1]), free(dx[0]), free(dx[1]);
    }
    /* GAP, dropout and the transpose on (batch 3, 32 channels or 5, 7x7) */
    for (int c = 5; c <= 32; c += 27) {
        const int batch = 3, sp = 49;
        size_t n = (size_t)batch * c * sp;
        struct dg_test_rng rng = {600 + (uint64_t)c};
        float *x = dg_test_floats(n), *xt = dg_test_floats(n), *t = dg_test_floats(n);
        float *g = dg_test_floats((size_t)batch * c), *gt = dg_test_floats((size_t)batch * c);
        float *dx = dg_test_floats(n), *dxt = dg_test_floats(n);
        dg_test_fill(&rng, x, n, -1, 1);
        to_nhwc(x, batch, c, (size_t)sp, 0, xt);
        check_ok(be->ops->transpose(be, batch, sp, c, xt, t));
        ck_assert(dg_test_equal("transpose to NCHW", t, x, n));
        check_ok(be->ops->transpose(be, batch, c, sp, x, t));
        ck_assert(dg_test_equal("transpose to NHWC", t, xt, n));
        check_ok(be->ops->gap_fwd(be, (size_t)batch * c, sp, x, g));
        check_ok(be->ops->gap_nhwc_fwd(be, batch, c, sp, xt, gt));
        ck_assert(dg_test_equal("GAP forward", gt, g, (size_t)batch * c));
        check_ok(be->ops->gap_bwd(be, (size_t)batch * c, sp, g, dx));
        check_ok(be->ops->gap_nhwc_bwd(be, batch, c, sp, g, dxt));
        ck_assert(same_nchw("GAP backward", dxt, dx, batch, c, (size_t)sp));
        struct dg_dropout_key key = {0xabcdef12345ull, 2, 4, 17, 0, 0};
        check_ok(be->ops->dropout_fwd(be, n, 0.4f, &key, x, dx));
        key.channels = c, key.spatial = sp;
        check_ok(be->ops->dropout_fwd(be, n, 0.4f, &key, xt, dxt));
        ck_assert(same_nchw("dropout forward", dxt, dx, batch, c, (size_t)sp));
        size_t dropped = 0;
        for (size_t i = 0; i < n; i++)
            dropped += dx[i] == 0.0f;
        ck_assert(dropped > n / 5 && dropped < n * 3 / 5);
        key.spatial = 50; /* not images of c x 50 */
        ck_assert_int_eq(be->ops->dropout_bwd(be, n, 0.4f, &key, xt, dxt), DG_ERR_RUNTIME);
        free(x), free(xt), free(t), free(g), free(gt), free(dx), free(dxt);
    }
    dg_backend_destroy(be);
}
END_TEST

/* ---- whole nets ---- */

/* The CPU's ops with batchnorm_bwd_relu counted (train_net_ops). */
static const struct dg_backend_ops *counted_ops;
static int fused_calls;

static enum dg_status counted_bn_relu(struct dg_backend *be, const struct dg_bn_shape *shape,
                                      const float *x, const float *dy, const float *gamma,
                                      const float *save_mean, const float *save_invstd,
                                      float *dx, float *dgamma, float *dbeta)
{
    fused_calls++;
    return counted_ops->batchnorm_bwd_relu(be, shape, x, dy, gamma, save_mean, save_invstd, dx,
                                           dgamma, dbeta);
}

/* Steps training steps of a net of `spec` (NULL: the reference) at batch 24 on the bundled
 * sample, with Adam for the spec nets, on a 2-thread backend of the given layout; returns the
 * parameters (weights, biases and running statistics) afterwards and the validation
 * probabilities of the first 16 rows. With `separate`, the net runs every op on its own
 * (dg_net.separate_ops); the fused batchnorm + ReLU backward calls are counted in fused_calls. */
static void train_net_ops(const char *spec, int nhwc, int separate, int steps, float **params,
                          size_t *count, float *probs)
{
    struct dg_backend *be = dg_test_cpu_backend(2, DG_CPU_KERNELS_AUTO);
    check_ok(dg_backend_cpu_set_layout(be, nhwc));
    static struct dg_backend_ops ops;
    counted_ops = be->ops;
    ops = *be->ops;
    ck_assert(ops.batchnorm_bwd_relu != NULL);
    ops.batchnorm_bwd_relu = counted_bn_relu;
    be->ops = &ops;
    struct dg_model model;
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int layers;
    if (spec) {
        ck_assert_int_eq(dg_net_spec_parse(spec, specs, &layers), DG_OK);
        ck_assert_int_eq(dg_model_build(&model, specs, layers), DG_OK);
    } else {
        const struct dg_layer_spec *ref = dg_arch_reference(&layers);
        ck_assert_int_eq(dg_model_build(&model, ref, layers), DG_OK);
    }
    dg_model_init_glorot(&model, 21);
    enum { N = 24 };
    struct dg_dataset data;
    ck_assert_int_eq(dg_dataset_load(dg_test_sample_path(), NULL, NULL, &data), DG_OK);
    struct dg_net *net;
    ck_assert_int_eq(dg_net_create(be, &model, N, &net), DG_OK);
    ck_assert_int_eq(net->nhwc, nhwc);
    net->separate_ops = separate;
    ck_assert_int_eq(dg_net_upload_params(net, model.params, 1), DG_OK);
    if (spec) {
        struct dg_optimizer opt;
        dg_optimizer_default(&opt, DG_OPTIMIZER_ADAM);
        ck_assert_int_eq(dg_net_set_optimizer(net, &opt), DG_OK);
    }
    void *handle;
    ck_assert_int_eq(be->ops->dataset_attach(be, &data, &handle), DG_OK);
    struct dg_augment_key augment = {7, 0, 0, 10.0f, 0.1f, 0.1f};
    for (uint32_t step = 0; step < (uint32_t)steps; step++) {
        uint32_t rows[N];
        for (int i = 0; i < N; i++)
            rows[i] = (step * 37 + (uint32_t)i * 11) % (uint32_t)data.count;
        struct dg_net_mode mode = {1, 7, 0, step};
        augment.step = step;
        ck_assert_int_eq(dg_net_train_step(net, handle, rows, N, &mode, &augment, 1e-3f, 0.9f,
                                           1e-7f),
                         DG_OK);
    }
    uint32_t rows[16];
    for (int i = 0; i < 16; i++)
        rows[i] = (uint32_t)(data.count - 1 - (size_t)i);
    ck_assert_int_eq(dg_net_infer(net, handle, rows, 16, 0), DG_OK);
    ck_assert_int_eq(be->ops->download(be, probs, net->probs, 16 * DG_CLASSES * sizeof(float)),
                     DG_OK);
    *count = model.param_count;
    *params = malloc(model.param_count * sizeof(float));
    ck_assert_int_eq(dg_net_download_params(net, *params), DG_OK);
    be->ops->dataset_detach(be, handle);
    dg_net_free(net);
    dg_dataset_free(&data);
    dg_model_free(&model);
    be->ops = counted_ops;
    dg_backend_destroy(be);
}

static void train_net(const char *spec, int nhwc, int steps, float **params, size_t *count,
                      float *probs)
{
    train_net_ops(spec, nhwc, 0, steps, params, count, probs);
}

/* _i: deotte, max-pool + GAP + batchnorm, the reference network */
START_TEST(nets_train_the_same_in_both_layouts)
{
    static const char *const specs[] = {"deotte", "16C3-B-P2-D0.3-32C3S2-B-32C3V-G-B-10", NULL};
    const char *spec = specs[_i];
    float *p[2], probs[2][16 * DG_CLASSES];
    size_t count[2];
    for (int layout = 0; layout < 2; layout++)
        train_net(spec, layout, 4, &p[layout], &count[layout], probs[layout]);
    printf("%s: %zu parameters after 4 steps\n", spec ? spec : "reference", count[0]);
    ck_assert_uint_eq(count[0], count[1]);
    ck_assert(dg_test_equal("parameters", p[1], p[0], count[0]));
    ck_assert(dg_test_equal("probabilities", probs[1], probs[0], 16 * DG_CLASSES));
    free(p[0]), free(p[1]);
}
END_TEST

/* The batchnorm after a ReLU layer takes the ReLU's backward (batchnorm_bwd_relu, once per
 * such batchnorm and step); the net trains to the same floats as with every op on its own.
 * _i: deotte (7 batchnorms after ReLU layers), a net whose batchnorms follow a dense ReLU, a
 * linear conv and a dropout (1 fused). */
START_TEST(fused_batchnorm_relu_trains_the_same)
{
    static const char *const specs[] = {"deotte", "8C3L-B-P2-D0.2-B-F-32-B-10"};
    static const int fused_per_step[] = {7, 1};
    enum { STEPS = 3 };
    for (int layout = 0; layout < 2; layout++) {
        float *p[2], probs[2][16 * DG_CLASSES];
        size_t count[2];
        int calls[2];
        for (int separate = 0; separate < 2; separate++) {
            fused_calls = 0;
            train_net_ops(specs[_i], layout, separate, STEPS, &p[separate], &count[separate],
                          probs[separate]);
            calls[separate] = fused_calls;
        }
        printf("%s, %s: %d fused batchnorm + ReLU backward calls in %d steps\n", specs[_i],
               layout ? "NHWC" : "NCHW", calls[0], STEPS);
        ck_assert_int_eq(calls[0], STEPS * fused_per_step[_i]);
        ck_assert_int_eq(calls[1], 0);
        ck_assert_uint_eq(count[0], count[1]);
        ck_assert(dg_test_equal("parameters", p[0], p[1], count[0]));
        ck_assert(dg_test_equal("probabilities", probs[0], probs[1], 16 * DG_CLASSES));
        free(p[0]), free(p[1]);
    }
}
END_TEST

START_TEST(layout_from_environment)
{
    struct dg_backend *be = NULL;
    setenv("DIGITS_CPU_LAYOUT", "nhcw", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_ERR_USAGE);
    ck_assert_ptr_null(be);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "DIGITS_CPU_LAYOUT=nhcw"));
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "expected nhwc or nchw"));
    setenv("DIGITS_CPU_LAYOUT", "nchw", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    ck_assert_int_eq(be->ops->nhwc(be), 0);
    dg_backend_destroy(be);
    setenv("DIGITS_CPU_LAYOUT", "nhwc", 1);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    ck_assert_int_eq(be->ops->nhwc(be), 1);
    /* bf16 math and the im2col-only kernels keep NCHW */
    check_ok(dg_backend_cpu_set_bf16_portable(be));
    ck_assert_int_eq(be->ops->nhwc(be), 0);
    dg_backend_destroy(be);
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    check_ok(dg_backend_cpu_set_kernels(be, DG_CPU_KERNELS_GENERIC));
    ck_assert_int_eq(be->ops->nhwc(be), 0);
    dg_backend_destroy(be);
    unsetenv("DIGITS_CPU_LAYOUT");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("layout");
    TCase *ops = tcase_create("ops");
    tcase_set_timeout(ops, 300);
    tcase_add_loop_test(ops, conv_layouts_agree, 0, ISAS);
    tcase_add_test(ops, conv_layouts_agree_bf16);
    tcase_add_loop_test(ops, batchnorm_layouts_agree, 0, ISAS);
    tcase_add_loop_test(ops, element_ops_layouts_agree, 0, ISAS);
    tcase_add_test(ops, layout_from_environment);
    suite_add_tcase(s, ops);
    TCase *nets = tcase_create("nets");
    tcase_set_timeout(nets, 300);
    tcase_add_loop_test(nets, nets_train_the_same_in_both_layouts, 0, 3);
    tcase_add_loop_test(nets, fused_batchnorm_relu_trains_the_same, 0, 2);
    suite_add_tcase(s, nets);
    SRunner *runner = srunner_create(s);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
