/* Batch normalisation on the CPU (include/digits/backend.h): per channel, over the batch and
 * the spatial positions, channels split across threads. Every sum is in double, in four
 * interleaved partial sums per image plane added in one fixed order (image, then position),
 * so the result does not depend on the thread count or the ISA; the statistics are two-pass
 * (the mean, then the squared deviations from it). */
#include "cpu/cpu_internal.h"

#include <math.h>
#include <stddef.h>

struct bn_job {
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

/* sum v[i], in four partial sums */
static double plane_sum(const float *v, int count)
{
    double p0 = 0.0, p1 = 0.0, p2 = 0.0, p3 = 0.0;
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        p0 += v[i];
        p1 += v[i + 1];
        p2 += v[i + 2];
        p3 += v[i + 3];
    }
    for (; i < count; i++)
        p0 += v[i];
    return (p0 + p1) + (p2 + p3);
}

/* sum (v[i] - centre)^2, in four partial sums */
static double plane_squares(const float *v, int count, double centre)
{
    double p0 = 0.0, p1 = 0.0, p2 = 0.0, p3 = 0.0;
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        double d0 = v[i] - centre, d1 = v[i + 1] - centre;
        double d2 = v[i + 2] - centre, d3 = v[i + 3] - centre;
        p0 += d0 * d0;
        p1 += d1 * d1;
        p2 += d2 * d2;
        p3 += d3 * d3;
    }
    for (; i < count; i++) {
        double d = v[i] - centre;
        p0 += d * d;
    }
    return (p0 + p1) + (p2 + p3);
}

/* sum dy and sum dy (x - mean) (times invstd after) of one plane, four partial sums each */
static void plane_grad_sums(const float *x, const float *dy, int count, double mean,
                            double *sum_dy, double *sum_dy_centred)
{
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, b0 = 0.0, b1 = 0.0, b2 = 0.0, b3 = 0.0;
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        a0 += dy[i];
        a1 += dy[i + 1];
        a2 += dy[i + 2];
        a3 += dy[i + 3];
        b0 += dy[i] * (x[i] - mean);
        b1 += dy[i + 1] * (x[i + 1] - mean);
        b2 += dy[i + 2] * (x[i + 2] - mean);
        b3 += dy[i + 3] * (x[i + 3] - mean);
    }
    for (; i < count; i++) {
        a0 += dy[i];
        b0 += dy[i] * (x[i] - mean);
    }
    *sum_dy += (a0 + a1) + (a2 + a3);
    *sum_dy_centred += (b0 + b1) + (b2 + b3);
}

/* y = x * scale + shift over channel c of every image, in double, rounded once. */
static void normalise(const struct bn_job *job, size_t c, double scale, double shift)
{
    const struct dg_bn_shape *s = job->s;
    for (int n = 0; n < s->batch; n++) {
        const float *x = plane_of(job->x, s, n, c);
        float *y = job->y + (x - job->x);
        for (int i = 0; i < s->spatial; i++)
            y[i] = (float)((double)x[i] * scale + shift);
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
            sum += plane_sum(plane_of(job->x, s, n, c), s->spatial);
        double mean = sum / count, squares = 0.0;
        for (int n = 0; n < s->batch; n++)
            squares += plane_squares(plane_of(job->x, s, n, c), s->spatial, mean);
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
        for (int n = 0; n < s->batch; n++)
            plane_grad_sums(plane_of(job->x, s, n, c), plane_of(job->dy, s, n, c), s->spatial,
                            mean, &sum_dy, &sum_dy_centred);
        double sum_dy_xhat = sum_dy_centred * invstd;
        double scale = job->gamma[c] * invstd;
        double mean_dy = sum_dy / count, mean_dy_xhat = sum_dy_xhat / count;
        for (int n = 0; n < s->batch; n++) {
            const float *x = plane_of(job->x, s, n, c), *dy = plane_of(job->dy, s, n, c);
            float *dx = job->dx + (x - job->x);
            for (int i = 0; i < s->spatial; i++) {
                double xhat = (x[i] - mean) * invstd;
                dx[i] = (float)(scale * (dy[i] - mean_dy - xhat * mean_dy_xhat));
            }
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
