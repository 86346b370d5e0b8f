/* Batch normalisation on the CPU (include/digits/backend.h): per channel, over the batch and
 * the spatial positions, channels split across threads. Every sum is in double, per image
 * plane in the ISA's bn_* loops (16 interleaved partial sums in one fixed order, the same on
 * every ISA), planes added in image order, so the result does not depend on the thread count
 * or the ISA; the statistics are two-pass (the mean, then the squared deviations from it).
 * NHWC tensors take the same sums per channel in the same order (bit-identical results). */
#include "cpu/cpu_internal.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

struct bn_job {
    const struct dg_cpu_isa_ops *isa;
    const struct dg_bn_shape *s;
    const float *x, *dy, *gamma, *beta;
    float *running_mean, *running_var; /* fwd train: updated; fwd infer: read */
    const float *save_mean, *save_invstd;
    double momentum, eps;
    float *y, *out_mean, *out_invstd;
    float *dx, *dgamma, *dbeta;
    int relu; /* bwd: x is a ReLU's output, dx the gradient of its input (dx = 0 where x <= 0) */
};

static const float *plane_of(const float *base, const struct dg_bn_shape *s, int n, size_t c)
{
    return base + ((size_t)n * s->channels + c) * (size_t)s->spatial;
}

/* y = x * scale + shift over channel c of every image, in double, rounded once. */
static void normalise(const struct bn_job *job, size_t c, double scale, double shift)
{
    const struct dg_bn_shape *s = job->s;
    for (int n = 0; n < s->batch; n++) {
        const float *x = plane_of(job->x, s, n, c);
        job->isa->bn_affine(x, (size_t)s->spatial, scale, shift, job->y + (x - job->x));
    }
}

static void fwd_train_task(void *ctx, int thread, int threads)
{
    const struct bn_job *job = ctx;
    const struct dg_bn_shape *s = job->s;
    double count = (double)s->batch * s->spatial;
    size_t c0, c1;
    dg_cpu_split((size_t)s->channels, 1, thread, threads, &c0, &c1);
    for (size_t c = c0; c < c1; c++) {
        double sum = 0.0;
        for (int n = 0; n < s->batch; n++)
            sum += job->isa->bn_sum(plane_of(job->x, s, n, c), (size_t)s->spatial);
        double mean = sum / count, squares = 0.0;
        for (int n = 0; n < s->batch; n++)
            squares += job->isa->bn_squares(plane_of(job->x, s, n, c), (size_t)s->spatial, mean);
        double var = squares / count;
        double invstd = 1.0 / sqrt(var + job->eps);
        double scale = job->gamma[c] * invstd;
        normalise(job, c, scale, job->beta[c] - mean * scale);
        double unbiased = count > 1.0 ? squares / (count - 1.0) : var;
        job->running_mean[c] =
            (float)(job->momentum * job->running_mean[c] + (1.0 - job->momentum) * mean);
        job->running_var[c] =
            (float)(job->momentum * job->running_var[c] + (1.0 - job->momentum) * unbiased);
        job->out_mean[c] = (float)mean;
        job->out_invstd[c] = (float)invstd;
    }
}

static void fwd_infer_task(void *ctx, int thread, int threads)
{
    const struct bn_job *job = ctx;
    size_t c0, c1;
    dg_cpu_split((size_t)job->s->channels, 1, thread, threads, &c0, &c1);
    for (size_t c = c0; c < c1; c++) {
        double scale = job->gamma[c] / sqrt((double)job->running_var[c] + job->eps);
        normalise(job, c, scale, job->beta[c] - job->running_mean[c] * scale);
    }
}

static void bwd_task(void *ctx, int thread, int threads)
{
    const struct bn_job *job = ctx;
    const struct dg_bn_shape *s = job->s;
    double count = (double)s->batch * s->spatial;
    size_t c0, c1;
    dg_cpu_split((size_t)s->channels, 1, thread, threads, &c0, &c1);
    for (size_t c = c0; c < c1; c++) {
        double mean = job->save_mean[c], invstd = job->save_invstd[c];
        double sum_dy = 0.0, sum_dy_centred = 0.0;
        for (int n = 0; n < s->batch; n++) {
            double sums[2];
            job->isa->bn_grad_sums(plane_of(job->x, s, n, c), plane_of(job->dy, s, n, c),
                                   (size_t)s->spatial, mean, sums);
            sum_dy += sums[0];
            sum_dy_centred += sums[1];
        }
        double sum_dy_xhat = sum_dy_centred * invstd;
        double scale = job->gamma[c] * invstd;
        double k[5] = {mean, invstd, scale, sum_dy / count, sum_dy_xhat / count};
        for (int n = 0; n < s->batch; n++) {
            const float *x = plane_of(job->x, s, n, c), *dy = plane_of(job->dy, s, n, c);
            job->isa->bn_input_grad(x, dy, (size_t)s->spatial, k, job->relu,
                                   job->dx + (x - job->x));
        }
        job->dgamma[c] = (float)sum_dy_xhat;
        job->dbeta[c] = (float)sum_dy;
    }
}

static enum dg_status check_shape(const struct dg_bn_shape *s)
{
    if (s->batch < 1 || s->channels < 1 || s->spatial < 1 || s->nhwc < 0 || s->nhwc > 1)
        return dg_error(DG_ERR_RUNTIME, "cpu batchnorm: bad shape %d x %d x %d (nhwc %d)",
                        s->batch, s->channels, s->spatial, s->nhwc);
    return DG_OK;
}

/* Runs `task` over the channels of a checked shape. */
static enum dg_status run(struct dg_backend *be, void (*task)(void *, int, int),
                          struct bn_job *job)
{
    enum dg_status status = check_shape(job->s);
    if (status != DG_OK)
        return status;
    struct dg_cpu *cpu = be->impl;
    job->isa = cpu->isa;
    dg_cpu_threads_run(cpu->pool, task, job);
    return DG_OK;
}

/* ---- NHWC (shape nhwc) ----
 * Every (image, channel) plane's sum is the NCHW one (the ISA's bn_*_nhwc), so the images are
 * split across threads, each plane's sums kept (planes: batch x channels doubles, or twice
 * that), and the planes added per channel in image order as above: the same bits. The
 * elementwise passes split the images too, so each thread streams whole pixels. */

enum bn_nhwc_pass { BN_SUMS, BN_GRAD_SUMS, BN_AFFINE, BN_INPUT_GRAD };

struct bn_nhwc_job {
    const struct bn_job *job;
    enum bn_nhwc_pass pass;
    const double *centre; /* sums: NULL, or the means (squares); grad sums: the means */
    double *planes;
    const double *scale, *shift; /* affine */
    const double *k;             /* input grad: 5 planes of channels */
};

/* One pass over the images split across threads. */
static void nhwc_task(void *ctx, int thread, int threads)
{
    const struct bn_nhwc_job *nj = ctx;
    const struct bn_job *job = nj->job;
    const struct dg_cpu_isa_ops *isa = job->isa;
    const struct dg_bn_shape *s = job->s;
    size_t c = (size_t)s->channels, sp = (size_t)s->spatial, image = sp * c;
    struct dg_cpu_claims images = dg_cpu_claims((size_t)s->batch, 1, thread, threads);
    for (size_t n; dg_cpu_claim(&images, &n);) {
        const float *x = job->x + n * image;
        switch (nj->pass) {
        case BN_SUMS:
            isa->bn_sums_nhwc(x, sp, c, (int)c, nj->centre, nj->planes + n * c);
            break;
        case BN_GRAD_SUMS:
            isa->bn_grad_sums_nhwc(x, job->dy + n * image, sp, c, (int)c, nj->centre,
                                   nj->planes + 2 * n * c);
            break;
        case BN_AFFINE:
            isa->bn_affine_nhwc(x, sp, c, (int)c, nj->scale, nj->shift, job->y + n * image);
            break;
        case BN_INPUT_GRAD:
            isa->bn_input_grad_nhwc(x, job->dy + n * image, sp, c, (int)c, nj->k, job->relu,
                                    job->dx + n * image);
            break;
        }
    }
}

static void nhwc_run(struct dg_cpu *cpu, struct bn_nhwc_job *nj, enum bn_nhwc_pass pass)
{
    nj->pass = pass;
    dg_cpu_threads_run(cpu->pool, nhwc_task, nj);
}

/* out[c] = the sum over images, in order, of planes[n * stride + c] */
static void add_planes(const double *planes, int batch, int channels, size_t stride,
                       double *out)
{
    for (int c = 0; c < channels; c++)
        out[c] = 0.0;
    for (int n = 0; n < batch; n++)
        for (int c = 0; c < channels; c++)
            out[c] += planes[(size_t)n * stride + (size_t)c];
}

/* The scratch of the NHWC passes: the planes (2 batch channels), then 8 channels. */
static double *nhwc_scratch(struct dg_cpu *cpu, const struct dg_bn_shape *s)
{
    return dg_cpu_scratch(cpu, sizeof(double) * (2 * (size_t)s->batch + 8) * (size_t)s->channels);
}

static void nhwc_fwd_train(struct dg_cpu *cpu, struct bn_job *job, double *scratch)
{
    const struct dg_bn_shape *s = job->s;
    int channels = s->channels;
    double count = (double)s->batch * s->spatial;
    double *planes = scratch, *mean = planes + 2 * (size_t)s->batch * channels;
    double *squares = mean + channels, *scale = squares + channels, *shift = scale + channels;
    struct bn_nhwc_job nj = {job, BN_SUMS, NULL, planes, scale, shift, NULL};
    nhwc_run(cpu, &nj, BN_SUMS);
    add_planes(planes, s->batch, channels, (size_t)channels, mean);
    for (int c = 0; c < channels; c++)
        mean[c] = mean[c] / count;
    nj.centre = mean;
    nhwc_run(cpu, &nj, BN_SUMS);
    add_planes(planes, s->batch, channels, (size_t)channels, squares);
    for (int c = 0; c < channels; c++) {
        double var = squares[c] / count;
        double invstd = 1.0 / sqrt(var + job->eps);
        scale[c] = job->gamma[c] * invstd;
        shift[c] = job->beta[c] - mean[c] * scale[c];
        double unbiased = count > 1.0 ? squares[c] / (count - 1.0) : var;
        job->running_mean[c] =
            (float)(job->momentum * job->running_mean[c] + (1.0 - job->momentum) * mean[c]);
        job->running_var[c] =
            (float)(job->momentum * job->running_var[c] + (1.0 - job->momentum) * unbiased);
        job->out_mean[c] = (float)mean[c];
        job->out_invstd[c] = (float)invstd;
    }
    nhwc_run(cpu, &nj, BN_AFFINE);
}

static void nhwc_fwd_infer(struct dg_cpu *cpu, struct bn_job *job, double *scratch)
{
    const struct dg_bn_shape *s = job->s;
    double *scale = scratch, *shift = scale + s->channels;
    for (int c = 0; c < s->channels; c++) {
        scale[c] = job->gamma[c] / sqrt((double)job->running_var[c] + job->eps);
        shift[c] = job->beta[c] - job->running_mean[c] * scale[c];
    }
    struct bn_nhwc_job nj = {job, BN_AFFINE, NULL, NULL, scale, shift, NULL};
    nhwc_run(cpu, &nj, BN_AFFINE);
}

static void nhwc_bwd(struct dg_cpu *cpu, struct bn_job *job, double *scratch)
{
    const struct dg_bn_shape *s = job->s;
    size_t channels = (size_t)s->channels;
    double count = (double)s->batch * s->spatial;
    double *planes = scratch, *mean = planes + 2 * (size_t)s->batch * channels;
    double *sum_dy = mean + channels, *centred = sum_dy + channels, *k = centred + channels;
    for (size_t c = 0; c < channels; c++)
        mean[c] = job->save_mean[c];
    struct bn_nhwc_job nj = {job, BN_GRAD_SUMS, mean, planes, NULL, NULL, k};
    nhwc_run(cpu, &nj, BN_GRAD_SUMS);
    add_planes(planes, s->batch, s->channels, 2 * channels, sum_dy);
    add_planes(planes + channels, s->batch, s->channels, 2 * channels, centred);
    for (size_t c = 0; c < channels; c++) {
        double invstd = job->save_invstd[c];
        double sum_dy_xhat = centred[c] * invstd;
        k[c] = mean[c];
        k[channels + c] = invstd;
        k[2 * channels + c] = job->gamma[c] * invstd;
        k[3 * channels + c] = sum_dy[c] / count;
        k[4 * channels + c] = sum_dy_xhat / count;
        job->dgamma[c] = (float)sum_dy_xhat;
        job->dbeta[c] = (float)sum_dy[c];
    }
    nhwc_run(cpu, &nj, BN_INPUT_GRAD);
}

/* Runs one of the NHWC passes above on a checked shape. */
static enum dg_status run_nhwc(struct dg_backend *be,
                               void (*pass)(struct dg_cpu *, struct bn_job *, double *),
                               struct bn_job *job)
{
    enum dg_status status = check_shape(job->s);
    if (status != DG_OK)
        return status;
    struct dg_cpu *cpu = be->impl;
    double *scratch = nhwc_scratch(cpu, job->s);
    if (!scratch)
        return dg_error(DG_ERR_NOMEM, "cpu batchnorm: out of memory");
    job->isa = cpu->isa;
    pass(cpu, job, scratch);
    return DG_OK;
}

/* One pixel an image (a dense layer's batchnorm): NCHW and NHWC are the same memory, and the
 * NHWC passes take all channels of an image at once where the NCHW ones would make one call
 * per element (the same bits either way). */
static struct dg_bn_shape layout_of(const struct dg_bn_shape *shape)
{
    struct dg_bn_shape s = *shape;
    if (s.spatial == 1 && s.nhwc == 0)
        s.nhwc = 1;
    return s;
}

enum dg_status dg_cpu_batchnorm_fwd_train(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          float *running_mean, float *running_var,
                                          double momentum, double eps, float *y,
                                          float *save_mean, float *save_invstd)
{
    struct dg_bn_shape s = layout_of(shape);
    struct bn_job job = {.s = &s, .x = x, .gamma = gamma, .beta = beta,
                         .running_mean = running_mean, .running_var = running_var,
                         .momentum = momentum, .eps = eps, .y = y, .out_mean = save_mean,
                         .out_invstd = save_invstd};
    return s.nhwc ? run_nhwc(be, nhwc_fwd_train, &job) : run(be, fwd_train_task, &job);
}

enum dg_status dg_cpu_batchnorm_fwd_infer(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var,
                                          double eps, float *y)
{
    /* the running statistics are only read here */
    struct dg_bn_shape s = layout_of(shape);
    struct bn_job job = {.s = &s, .x = x, .gamma = gamma, .beta = beta,
                         .running_mean = (float *)running_mean,
                         .running_var = (float *)running_var, .eps = eps, .y = y};
    return s.nhwc ? run_nhwc(be, nhwc_fwd_infer, &job) : run(be, fwd_infer_task, &job);
}

/* The training-mode backward; with `relu`, dx masked where x > 0 does not hold. */
static enum dg_status batchnorm_bwd(struct dg_backend *be, const struct dg_bn_shape *shape,
                                    const float *x, const float *dy, const float *gamma,
                                    const float *save_mean, const float *save_invstd, float *dx,
                                    float *dgamma, float *dbeta, int relu)
{
    struct dg_bn_shape s = layout_of(shape);
    struct bn_job job = {.s = &s, .x = x, .dy = dy, .gamma = gamma, .save_mean = save_mean,
                         .save_invstd = save_invstd, .dx = dx, .dgamma = dgamma, .dbeta = dbeta,
                         .relu = relu};
    return s.nhwc ? run_nhwc(be, nhwc_bwd, &job) : run(be, bwd_task, &job);
}

enum dg_status dg_cpu_batchnorm_bwd(struct dg_backend *be, const struct dg_bn_shape *shape,
                                    const float *x, const float *dy, const float *gamma,
                                    const float *save_mean, const float *save_invstd, float *dx,
                                    float *dgamma, float *dbeta)
{
    return batchnorm_bwd(be, shape, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, 0);
}

/* batchnorm_bwd with x the output of a ReLU: dx is the gradient of the ReLU's input, the floats
 * batchnorm_bwd then relu_bwd (y = x) would leave, in the same pass. */
enum dg_status dg_cpu_batchnorm_bwd_relu(struct dg_backend *be, const struct dg_bn_shape *shape,
                                         const float *x, const float *dy, const float *gamma,
                                         const float *save_mean, const float *save_invstd,
                                         float *dx, float *dgamma, float *dbeta)
{
    return batchnorm_bwd(be, shape, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, 1);
}
