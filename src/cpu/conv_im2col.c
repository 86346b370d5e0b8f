/* The generic family of the CPU convolution: per image im2col (cin*k*k, h*w) + OpenBLAS sgemm,
 * images split across threads. */
#include "cpu/conv_internal.h"

#include <cblas.h>
#include <string.h>

/* ---- generic family: im2col + sgemm ---- */

struct conv_job {
    struct conv_plan *p;
    const float *x, *w, *bias, *dy;
    float *y, *dx, *dw;
    int relu;
};

static void generic_fwd_task(void *ctx, int thread, int threads)
{
    const struct conv_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)s->height * s->width, kdim = conv_kdim(s);
    float *col = p->col + kdim * hw * (size_t)thread;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        float *y = job->y + n * s->out_channels * hw;
        p->isa->im2col(job->x + n * s->in_channels * hw, s->in_channels, s->height, s->width,
                       s->kernel, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->out_channels, (int)hw, (int)kdim,
                    1.0f, job->w, (int)kdim, col, (int)hw, 0.0f, y, (int)hw);
        for (int c = 0; c < s->out_channels; c++)
            p->isa->bias_act(y + (size_t)c * hw, hw, job->bias[c], job->relu);
    }
}

static void generic_bwd_data_task(void *ctx, int thread, int threads)
{
    const struct conv_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)s->height * s->width, kdim = conv_kdim(s);
    float *col = p->col + kdim * hw * (size_t)thread;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kdim, (int)hw, s->out_channels,
                    1.0f, job->w, (int)kdim, job->dy + n * s->out_channels * hw, (int)hw, 0.0f, col,
                    (int)hw);
        p->isa->col2im(col, s->in_channels, s->height, s->width, s->kernel,
                       job->dx + n * s->in_channels * hw);
    }
}

static void generic_bwd_filter_task(void *ctx, int thread, int threads)
{
    const struct conv_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)s->height * s->width, kdim = conv_kdim(s);
    float *col = p->col + kdim * hw * (size_t)thread;
    float *part = p->dw_part + (size_t)s->out_channels * kdim * (size_t)thread;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    memset(part, 0, sizeof(float) * (size_t)s->out_channels * kdim);
    for (size_t n = n0; n < n1; n++) {
        p->isa->im2col(job->x + n * s->in_channels * hw, s->in_channels, s->height, s->width,
                       s->kernel, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->out_channels, (int)kdim, (int)hw,
                    1.0f, job->dy + n * s->out_channels * hw, (int)hw, col, (int)hw, 1.0f, part,
                    (int)kdim);
    }
}

/* dw = sum of the per-thread partial gradients, in thread order. */
static void generic_reduce_task(void *ctx, int thread, int threads)
{
    const struct conv_job *job = ctx;
    const struct conv_plan *p = job->p;
    size_t count = (size_t)p->s.out_channels * conv_kdim(&p->s);
    size_t i0, i1;
    dg_cpu_split(count, 64, thread, threads, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        float sum = p->dw_part[i];
        for (int t = 1; t < p->threads; t++)
            sum += p->dw_part[(size_t)t * count + i];
        job->dw[i] = sum;
    }
}

/* ---- the passes ---- */

void dg_cpu_im2col_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, int relu)
{
    struct conv_job job = {p, x, w, bias, NULL, y, NULL, NULL, relu};
    dg_cpu_threads_run(cpu->pool, generic_fwd_task, &job);
}

void dg_cpu_im2col_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                            const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    struct conv_job job = {p, NULL, w, NULL, dy, NULL, dx, NULL, 0};
    dg_cpu_threads_run(cpu->pool, generic_bwd_data_task, &job);
}

void dg_cpu_im2col_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                              const float *dy, float *dw, float *db)
{
    struct conv_job job = {p, x, NULL, NULL, dy, NULL, NULL, dw, 0};
    dg_cpu_threads_run(cpu->pool, generic_bwd_filter_task, &job);
    dg_cpu_threads_run(cpu->pool, generic_reduce_task, &job);
    dg_cpu_conv_bias_grad(cpu, p, dy, db);
}
