/* Batch normalisation on the CPU (include/digits/backend.h): per channel, over the batch and
 * the spatial positions, channels split across threads. Every sum is in double, per image
 * plane in the ISA's bn_* loops (16 interleaved partial sums in one fixed order, the same on
 * every ISA), planes added in image order, so the result does not depend on the thread count
 * or the ISA; the statistics are two-pass (the mean, then the squared deviations from it). */
#include "cpu/cpu_internal.h"

#include <math.h>
#include <stddef.h>

struct bn_job {
    const struct dg_cpu_isa_ops *isa;
    const struct dg_bn_shape *s;
    const float *x, *dy, *gamma, *beta;
    float *running_mean, *running_var; /* fwd train: updated; fwd infer: read */
    const float *save_mean, *save_invstd;
    double momentum, eps;
    float *y, *out_mean, *out_invstd;
    float *dx, *dgamma, *dbeta;
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
            job->isa->bn_input_grad(x, dy, (size_t)s->spatial, k, job->dx + (x - job->x));
        }
        job->dgamma[c] = (float)sum_dy_xhat;
        job->dbeta[c] = (float)sum_dy;
    }
}

static enum dg_status check_shape(const struct dg_bn_shape *s)
{
    if (s->batch < 1 || s->channels < 1 || s->spatial < 1)
        return dg_error(DG_ERR_RUNTIME, "cpu batchnorm: bad shape %d x %d x %d", s->batch,
                        s->channels, s->spatial);
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

enum dg_status dg_cpu_batchnorm_fwd_train(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          float *running_mean, float *running_var,
                                          double momentum, double eps, float *y,
                                          float *save_mean, float *save_invstd)
{
    struct bn_job job = {.s = shape, .x = x, .gamma = gamma, .beta = beta,
                         .running_mean = running_mean, .running_var = running_var,
                         .momentum = momentum, .eps = eps, .y = y, .out_mean = save_mean,
                         .out_invstd = save_invstd};
    return run(be, fwd_train_task, &job);
}

enum dg_status dg_cpu_batchnorm_fwd_infer(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var,
                                          double eps, float *y)
{
    /* the running statistics are only read here */
    struct bn_job job = {.s = shape, .x = x, .gamma = gamma, .beta = beta,
                         .running_mean = (float *)running_mean,
                         .running_var = (float *)running_var, .eps = eps, .y = y};
    return run(be, fwd_infer_task, &job);
}

enum dg_status dg_cpu_batchnorm_bwd(struct dg_backend *be, const struct dg_bn_shape *shape,
                                    const float *x, const float *dy, const float *gamma,
                                    const float *save_mean, const float *save_invstd, float *dx,
                                    float *dgamma, float *dbeta)
{
    struct bn_job job = {.s = shape, .x = x, .dy = dy, .gamma = gamma, .save_mean = save_mean,
                         .save_invstd = save_invstd, .dx = dx, .dgamma = dgamma, .dbeta = dbeta};
    return run(be, bwd_task, &job);
}
