/* The deliberately wrong test backend (perturbed_backend.h). The wrapped backend must keep its
 * tensors in host memory (the CPU backend): the wrapper reads and writes them directly. */
#include "perturbed_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct perturbed {
    struct dg_backend be; /* first: the wrapper's face */
    struct dg_backend *inner;
    struct dg_perturbation how;
};

struct perturbed_plan {
    void *inner;
    struct dg_conv_shape shape;
};

static struct perturbed *self(struct dg_backend *be)
{
    return (struct perturbed *)be;
}

float dg_test_round_mantissa(float x, int bits, int toward_zero)
{
    if (!isfinite(x) || bits >= 23)
        return x;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    int drop = 23 - bits;
    uint32_t mask = (1u << drop) - 1u;
    if (!toward_zero) {
        uint32_t half = 1u << (drop - 1);
        uint32_t odd = (u >> drop) & 1u;
        u += half - 1u + odd; /* to nearest, ties to even; a carry moves the exponent */
    }
    u &= ~mask;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* A rounded copy of x (n floats), or x itself when nothing is rounded; NULL on no memory. */
static const float *rounded(const struct perturbed *p, const float *x, size_t n, float **owned)
{
    *owned = NULL;
    if (p->how.mantissa_bits <= 0 || !x)
        return x;
    float *copy = malloc(n * sizeof(float));
    if (!copy)
        return NULL;
    for (size_t i = 0; i < n; i++)
        copy[i] = dg_test_round_mantissa(x[i], p->how.mantissa_bits, p->how.toward_zero);
    *owned = copy;
    return copy;
}

static void nudge(const struct perturbed *p, float *y, size_t n)
{
    if (!y || n == 0)
        return;
    if (!p->how.one_element && !p->how.nan) {
        for (size_t i = 0; i < n; i++)
            y[i] = (float)(y[i] * (1.0 + p->how.relative));
        return;
    }
    size_t at = 0;
    for (size_t i = 1; i < n; i++)
        if (fabsf(y[i]) > fabsf(y[at]))
            at = i;
    y[at] = p->how.nan ? NAN : (float)(y[at] * (1.0 + p->how.relative));
}

static int conv_targeted(const struct perturbed *p, enum dg_perturb_op op,
                         const struct dg_conv_shape *s)
{
    return p->how.op == op && s->in_channels == p->how.in && s->out_channels == p->how.out &&
           s->kernel == p->how.kernel;
}

static int dense_targeted(const struct perturbed *p, enum dg_perturb_op op, int in, int out)
{
    return p->how.op == op && in == p->how.in && out == p->how.out && p->how.kernel == 0;
}

static enum dg_status no_memory(void)
{
    return dg_error(DG_ERR_NOMEM, "perturbed backend: out of memory");
}

/* ---- passed through ---- */

static void p_destroy(struct dg_backend *be)
{
    struct perturbed *p = self(be);
    dg_backend_destroy(p->inner);
    free(p);
}

static enum dg_status p_alloc(struct dg_backend *be, size_t bytes, void **ptr)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->alloc(in, bytes, ptr);
}

static void p_free(struct dg_backend *be, void *ptr)
{
    struct dg_backend *in = self(be)->inner;
    in->ops->free(in, ptr);
}

static enum dg_status p_upload(struct dg_backend *be, void *dst, const void *src, size_t bytes)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->upload(in, dst, src, bytes);
}

static enum dg_status p_download(struct dg_backend *be, void *dst, const void *src, size_t bytes)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->download(in, dst, src, bytes);
}

static enum dg_status p_sync(struct dg_backend *be)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->sync(in);
}

static enum dg_status p_dataset_attach(struct dg_backend *be, const struct dg_dataset *dataset,
                                       void **handle)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->dataset_attach(in, dataset, handle);
}

static void p_dataset_detach(struct dg_backend *be, void *handle)
{
    struct dg_backend *in = self(be)->inner;
    in->ops->dataset_detach(in, handle);
}

static enum dg_status p_batch_assemble(struct dg_backend *be, void *handle, const uint32_t *rows,
                                       int n, const struct dg_augment_key *augment, float *x,
                                       uint8_t *labels)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->batch_assemble(in, handle, rows, n, augment, x, labels);
}

static enum dg_status p_gap_fwd(struct dg_backend *be, size_t rows, int spatial, const float *x,
                                float *y)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->gap_fwd(in, rows, spatial, x, y);
}

static enum dg_status p_gap_bwd(struct dg_backend *be, size_t rows, int spatial, const float *dy,
                                float *dx)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->gap_bwd(in, rows, spatial, dy, dx);
}

static enum dg_status p_relu_bwd(struct dg_backend *be, size_t n, const float *y, float *dy)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->relu_bwd(in, n, y, dy);
}

static enum dg_status p_maxpool_fwd(struct dg_backend *be, const struct dg_pool_shape *shape,
                                    const float *x, float *y)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->maxpool_fwd(in, shape, x, y);
}

static enum dg_status p_maxpool_bwd(struct dg_backend *be, const struct dg_pool_shape *shape,
                                    const float *x, const float *y, const float *dy, float *dx)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->maxpool_bwd(in, shape, x, y, dy, dx);
}

static enum dg_status p_dropout_fwd(struct dg_backend *be, size_t n, float rate,
                                    const struct dg_dropout_key *key, const float *x, float *y)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->dropout_fwd(in, n, rate, key, x, y);
}

static enum dg_status p_dropout_bwd(struct dg_backend *be, size_t n, float rate,
                                    const struct dg_dropout_key *key, const float *dy, float *dx)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->dropout_bwd(in, n, rate, key, dy, dx);
}

static enum dg_status p_softmax_xent(struct dg_backend *be, int batch, const float *logits,
                                     const uint8_t *labels, float smoothing, float *probs,
                                     float *dlogits, double *stats, double *trace)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->softmax_xent(in, batch, logits, labels, smoothing, probs, dlogits, stats,
                                 trace);
}

/* DG_PERTURB_UPDATE: parameter `in` of w nudged by `relative` (or NaN) after the update; the
 * inner backend is the CPU's, whose memory is the host's. */
static enum dg_status nudge_update(struct dg_backend *be, size_t n, float *w, enum dg_status status)
{
    const struct dg_perturbation *how = &self(be)->how;
    if (status != DG_OK || how->op != DG_PERTURB_UPDATE || (size_t)how->in >= n)
        return status;
    w[how->in] = how->nan ? NAN : (float)(w[how->in] * (1.0 + how->relative));
    return DG_OK;
}

static enum dg_status p_rmsprop(struct dg_backend *be, size_t n, float *w, const float *g,
                                float *acc, float lr, float rho, float eps)
{
    struct dg_backend *in = self(be)->inner;
    return nudge_update(be, n, w, in->ops->rmsprop(in, n, w, g, acc, lr, rho, eps));
}

static enum dg_status p_adam(struct dg_backend *be, size_t n, float *w, const float *g, float *m,
                             float *v, float *pow, float lr, float beta1, float beta2, float eps)
{
    struct dg_backend *in = self(be)->inner;
    return nudge_update(be, n, w, in->ops->adam(in, n, w, g, m, v, pow, lr, beta1, beta2, eps));
}

static enum dg_status p_sgd(struct dg_backend *be, size_t n, float *w, const float *g, float *b,
                            float lr, float momentum, int nesterov)
{
    struct dg_backend *in = self(be)->inner;
    return nudge_update(be, n, w, in->ops->sgd(in, n, w, g, b, lr, momentum, nesterov));
}

static enum dg_status p_ema(struct dg_backend *be, size_t n, float *shadow, const float *w,
                            float decay)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->ema(in, n, shadow, w, decay);
}

/* ---- convolution ---- */

static enum dg_status p_conv_plan_create(struct dg_backend *be, const struct dg_conv_shape *shape,
                                         void **plan)
{
    struct dg_backend *in = self(be)->inner;
    struct perturbed_plan *pp = calloc(1, sizeof *pp);
    if (!pp)
        return no_memory();
    pp->shape = *shape;
    enum dg_status status = in->ops->conv_plan_create(in, shape, &pp->inner);
    if (status != DG_OK) {
        free(pp);
        return status;
    }
    *plan = pp;
    return DG_OK;
}

static void p_conv_plan_free(struct dg_backend *be, void *plan)
{
    struct dg_backend *in = self(be)->inner;
    struct perturbed_plan *pp = plan;
    if (!pp)
        return;
    in->ops->conv_plan_free(in, pp->inner);
    free(pp);
}

static void p_conv_algo_name(struct dg_backend *be, const struct dg_conv_shape *shape,
                             int with_bwd_data, char *out, size_t size)
{
    struct dg_backend *in = self(be)->inner;
    in->ops->conv_algo_name(in, shape, with_bwd_data, out, size);
}

static size_t conv_x(const struct dg_conv_shape *s)
{
    return (size_t)s->batch * s->in_channels * s->height * s->width;
}

static size_t conv_y(const struct dg_conv_shape *s)
{
    return (size_t)s->batch * s->out_channels * s->height * s->width;
}

static size_t conv_w(const struct dg_conv_shape *s)
{
    return (size_t)s->out_channels * s->in_channels * s->kernel * s->kernel;
}

static enum dg_status p_conv_fwd(struct dg_backend *be, void *plan, const float *x, const float *w,
                                 const float *bias, float *y, int relu)
{
    struct perturbed *p = self(be);
    struct perturbed_plan *pp = plan;
    float *ox, *ow;
    const float *rx = rounded(p, x, conv_x(&pp->shape), &ox);
    const float *rw = rounded(p, w, conv_w(&pp->shape), &ow);
    enum dg_status status =
        !rx || !rw ? no_memory()
                   : p->inner->ops->conv_fwd(p->inner, pp->inner, rx, rw, bias, y, relu);
    free(ox);
    free(ow);
    if (status == DG_OK && conv_targeted(p, DG_PERTURB_CONV_FWD, &pp->shape))
        nudge(p, y, conv_y(&pp->shape));
    return status;
}

static enum dg_status p_conv_bwd_data(struct dg_backend *be, void *plan, const float *dy,
                                      const float *w, float *dx)
{
    struct perturbed *p = self(be);
    struct perturbed_plan *pp = plan;
    float *ody, *ow;
    const float *rdy = rounded(p, dy, conv_y(&pp->shape), &ody);
    const float *rw = rounded(p, w, conv_w(&pp->shape), &ow);
    enum dg_status status =
        !rdy || !rw ? no_memory() : p->inner->ops->conv_bwd_data(p->inner, pp->inner, rdy, rw, dx);
    free(ody);
    free(ow);
    if (status == DG_OK && conv_targeted(p, DG_PERTURB_CONV_BWD_DATA, &pp->shape))
        nudge(p, dx, conv_x(&pp->shape));
    return status;
}

static enum dg_status p_conv_bwd_filter(struct dg_backend *be, void *plan, const float *x,
                                        const float *dy, float *dw, float *db)
{
    struct perturbed *p = self(be);
    struct perturbed_plan *pp = plan;
    struct dg_backend *in = p->inner;
    enum dg_status status;
    if (p->how.mantissa_bits > 0) {
        /* the bias gradient is a plain FP32 reduction of dy, as on a GPU: from the unrounded
         * dy; the weight gradient is the tensor-core product */
        float *scratch_w = malloc(conv_w(&pp->shape) * sizeof(float));
        float *scratch_b = malloc((size_t)pp->shape.out_channels * sizeof(float));
        float *ox, *ody;
        const float *rx = rounded(p, x, conv_x(&pp->shape), &ox);
        const float *rdy = rounded(p, dy, conv_y(&pp->shape), &ody);
        if (!scratch_w || !scratch_b || !rx || !rdy)
            status = no_memory();
        else if ((status = in->ops->conv_bwd_filter(in, pp->inner, x, dy, scratch_w, db)) == DG_OK)
            status = in->ops->conv_bwd_filter(in, pp->inner, rx, rdy, dw, scratch_b);
        free(scratch_w);
        free(scratch_b);
        free(ox);
        free(ody);
    } else {
        status = in->ops->conv_bwd_filter(in, pp->inner, x, dy, dw, db);
    }
    if (status == DG_OK && conv_targeted(p, DG_PERTURB_CONV_BWD_FILTER, &pp->shape))
        nudge(p, dw, conv_w(&pp->shape));
    return status;
}

/* ---- dense ---- */

static enum dg_status p_dense_fwd(struct dg_backend *be, int batch, int in_n, int out_n,
                                  const float *x, const float *w, const float *b, float *y,
                                  int relu)
{
    struct perturbed *p = self(be);
    float *ox, *ow;
    const float *rx = rounded(p, x, (size_t)batch * in_n, &ox);
    const float *rw = rounded(p, w, (size_t)in_n * out_n, &ow);
    enum dg_status status =
        !rx || !rw ? no_memory()
                   : p->inner->ops->dense_fwd(p->inner, batch, in_n, out_n, rx, rw, b, y, relu);
    free(ox);
    free(ow);
    if (status == DG_OK && dense_targeted(p, DG_PERTURB_DENSE_FWD, in_n, out_n))
        nudge(p, y, (size_t)batch * out_n);
    return status;
}

static enum dg_status p_dense_bwd(struct dg_backend *be, int batch, int in_n, int out_n,
                                  const float *x, const float *w, const float *dy, float *dx,
                                  float *dw, float *db)
{
    struct perturbed *p = self(be);
    struct dg_backend *in = p->inner;
    enum dg_status status;
    if (p->how.mantissa_bits > 0) {
        float *scratch_w = malloc((size_t)in_n * out_n * sizeof(float));
        float *scratch_b = malloc((size_t)out_n * sizeof(float));
        float *ox, *ow, *ody;
        const float *rx = rounded(p, x, (size_t)batch * in_n, &ox);
        const float *rw = rounded(p, w, (size_t)in_n * out_n, &ow);
        const float *rdy = rounded(p, dy, (size_t)batch * out_n, &ody);
        if (!scratch_w || !scratch_b || !rx || !rw || !rdy)
            status = no_memory();
        else if ((status = in->ops->dense_bwd(in, batch, in_n, out_n, x, w, dy, NULL, scratch_w,
                                              db)) == DG_OK)
            status = in->ops->dense_bwd(in, batch, in_n, out_n, rx, rw, rdy, dx, dw, scratch_b);
        free(scratch_w);
        free(scratch_b);
        free(ox);
        free(ow);
        free(ody);
    } else {
        status = in->ops->dense_bwd(in, batch, in_n, out_n, x, w, dy, dx, dw, db);
    }
    if (status == DG_OK && dense_targeted(p, DG_PERTURB_DENSE_BWD_DW, in_n, out_n))
        nudge(p, dw, (size_t)in_n * out_n);
    return status;
}

static enum dg_status p_bn_fwd_train(struct dg_backend *be, const struct dg_bn_shape *shape,
                                     const float *x, const float *gamma, const float *beta,
                                     float *running_mean, float *running_var, double momentum,
                                     double eps, float *y, float *save_mean, float *save_invstd)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->batchnorm_fwd_train(in, shape, x, gamma, beta, running_mean, running_var,
                                        momentum, eps, y, save_mean, save_invstd);
}

static enum dg_status p_bn_fwd_infer(struct dg_backend *be, const struct dg_bn_shape *shape,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *running_mean, const float *running_var,
                                     double eps, float *y)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->batchnorm_fwd_infer(in, shape, x, gamma, beta, running_mean, running_var,
                                        eps, y);
}

static enum dg_status p_bn_bwd(struct dg_backend *be, const struct dg_bn_shape *shape,
                               const float *x, const float *dy, const float *gamma,
                               const float *save_mean, const float *save_invstd, float *dx,
                               float *dgamma, float *dbeta)
{
    struct dg_backend *in = self(be)->inner;
    return in->ops->batchnorm_bwd(in, shape, x, dy, gamma, save_mean, save_invstd, dx, dgamma,
                                  dbeta);
}

static const struct dg_backend_ops perturbed_ops = {
    .destroy = p_destroy,
    .alloc = p_alloc,
    .free = p_free,
    .upload = p_upload,
    .download = p_download,
    .sync = p_sync,
    .dataset_attach = p_dataset_attach,
    .dataset_detach = p_dataset_detach,
    .batch_assemble = p_batch_assemble,
    .conv_plan_create = p_conv_plan_create,
    .conv_plan_free = p_conv_plan_free,
    .conv_algo_name = p_conv_algo_name,
    .conv_fwd = p_conv_fwd,
    .conv_bwd_data = p_conv_bwd_data,
    .conv_bwd_filter = p_conv_bwd_filter,
    .batchnorm_fwd_train = p_bn_fwd_train,
    .batchnorm_fwd_infer = p_bn_fwd_infer,
    .batchnorm_bwd = p_bn_bwd,
    .relu_bwd = p_relu_bwd,
    .gap_fwd = p_gap_fwd,
    .gap_bwd = p_gap_bwd,
    .maxpool_fwd = p_maxpool_fwd,
    .maxpool_bwd = p_maxpool_bwd,
    .dropout_fwd = p_dropout_fwd,
    .dropout_bwd = p_dropout_bwd,
    .dense_fwd = p_dense_fwd,
    .dense_bwd = p_dense_bwd,
    .softmax_xent = p_softmax_xent,
    .rmsprop = p_rmsprop,
    .adam = p_adam,
    .sgd = p_sgd,
    .ema = p_ema,
};

/* Without a conv_algo_name in the inner backend the wrapper has none either. */
static const struct dg_backend_ops perturbed_ops_unnamed = {
    .destroy = p_destroy,
    .alloc = p_alloc,
    .free = p_free,
    .upload = p_upload,
    .download = p_download,
    .sync = p_sync,
    .dataset_attach = p_dataset_attach,
    .dataset_detach = p_dataset_detach,
    .batch_assemble = p_batch_assemble,
    .conv_plan_create = p_conv_plan_create,
    .conv_plan_free = p_conv_plan_free,
    .conv_algo_name = NULL,
    .conv_fwd = p_conv_fwd,
    .conv_bwd_data = p_conv_bwd_data,
    .conv_bwd_filter = p_conv_bwd_filter,
    .batchnorm_fwd_train = p_bn_fwd_train,
    .batchnorm_fwd_infer = p_bn_fwd_infer,
    .batchnorm_bwd = p_bn_bwd,
    .relu_bwd = p_relu_bwd,
    .gap_fwd = p_gap_fwd,
    .gap_bwd = p_gap_bwd,
    .maxpool_fwd = p_maxpool_fwd,
    .maxpool_bwd = p_maxpool_bwd,
    .dropout_fwd = p_dropout_fwd,
    .dropout_bwd = p_dropout_bwd,
    .dense_fwd = p_dense_fwd,
    .dense_bwd = p_dense_bwd,
    .softmax_xent = p_softmax_xent,
    .rmsprop = p_rmsprop,
    .adam = p_adam,
    .sgd = p_sgd,
    .ema = p_ema,
};

enum dg_status dg_test_perturbed_backend(struct dg_backend *inner,
                                         const struct dg_perturbation *how, struct dg_backend **out)
{
    struct perturbed *p = calloc(1, sizeof *p);
    if (!p) {
        dg_backend_destroy(inner);
        return no_memory();
    }
    p->inner = inner;
    p->how = *how;
    p->be.ops = inner->ops->conv_algo_name ? &perturbed_ops : &perturbed_ops_unnamed;
    p->be.impl = p;
    p->be.host_allocator = inner->host_allocator;
    snprintf(p->be.name, sizeof p->be.name, "%s", inner->name);
    static const char *const ops[] = {"none",      "conv_fwd",     "conv_bwd_data",
                                      "conv_bwd_filter", "dense_fwd", "dense_bwd dw",
                                      "update of parameter"};
    _Static_assert(sizeof ops / sizeof ops[0] == DG_PERTURB_UPDATE + 1,
                   "a name for every perturbation");
    if (how->mantissa_bits > 0)
        snprintf(p->be.description, sizeof p->be.description,
                 "test candidate, conv/dense inputs rounded to %d mantissa bits (%s) over %.150s",
                 how->mantissa_bits, how->toward_zero ? "toward zero" : "to nearest",
                 inner->description);
    else
        snprintf(p->be.description, sizeof p->be.description,
                 "test candidate, %s (%d, %d, %d) %s over %.150s", ops[how->op], how->in, how->out,
                 how->kernel, how->nan ? "NaN" : "nudged", inner->description);
    *out = &p->be;
    return DG_OK;
}
