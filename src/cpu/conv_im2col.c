/* The generic family of the CPU convolution: per image im2col (cin*k*k, out_h*out_w) + OpenBLAS
 * sgemm, images split across threads. The one family for strided and "valid" convolutions:
 * their windows are gathered here in portable C (data movement only, the same on every ISA);
 * the stride-1 "same" windows come from the ISA table's im2col / col2im. */
#include "cpu/conv_internal.h"

#include <cblas.h>
#include <string.h>

/* ---- generic family: im2col + sgemm ---- */

/* col (cin*k*k, oh*ow) <- the windows of x (cin, h, w) at stride `stride`, zero padding `pad`
 * each side. */
static void im2col_strided(const float *x, const struct dg_conv_shape *s, float *col)
{
    int k = s->kernel, stride = dg_conv_stride(s), pad = dg_conv_pad(s);
    int h = s->height, w = s->width, oh = dg_conv_out_height(s), ow = dg_conv_out_width(s);
    size_t ohw = (size_t)oh * ow;
    for (int c = 0; c < s->in_channels; c++) {
        const float *plane = x + (size_t)c * h * w;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(c * k + ky) * k + kx) * ohw;
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * stride + ky - pad;
                    float *out = row + (size_t)oy * ow;
                    if (iy < 0 || iy >= h) {
                        memset(out, 0, sizeof(float) * (size_t)ow);
                        continue;
                    }
                    const float *in = plane + (size_t)iy * w;
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * stride + kx - pad;
                        out[ox] = ix >= 0 && ix < w ? in[ix] : 0.0f;
                    }
                }
            }
    }
}

/* x (cin, h, w) <- the sum of col's windows (the adjoint of im2col_strided), added in the order
 * (channel, ky, kx, output row, output column). */
static void col2im_strided(const float *col, const struct dg_conv_shape *s, float *x)
{
    int k = s->kernel, stride = dg_conv_stride(s), pad = dg_conv_pad(s);
    int h = s->height, w = s->width, oh = dg_conv_out_height(s), ow = dg_conv_out_width(s);
    size_t ohw = (size_t)oh * ow;
    memset(x, 0, sizeof(float) * (size_t)s->in_channels * h * w);
    for (int c = 0; c < s->in_channels; c++) {
        float *plane = x + (size_t)c * h * w;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = col + ((size_t)(c * k + ky) * k + kx) * ohw;
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * stride + ky - pad;
                    if (iy < 0 || iy >= h)
                        continue;
                    const float *in = row + (size_t)oy * ow;
                    float *out = plane + (size_t)iy * w;
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * stride + kx - pad;
                        if (ix >= 0 && ix < w)
                            out[ix] += in[ox];
                    }
                }
            }
    }
}

static void gather(const struct conv_plan *p, const float *x, float *col)
{
    const struct dg_conv_shape *s = &p->s;
    if (dg_conv_is_same_stride1(s))
        p->isa->im2col(x, s->in_channels, s->height, s->width, s->kernel, col);
    else
        im2col_strided(x, s, col);
}

static void scatter(const struct conv_plan *p, const float *col, float *x)
{
    const struct dg_conv_shape *s = &p->s;
    if (dg_conv_is_same_stride1(s))
        p->isa->col2im(col, s->in_channels, s->height, s->width, s->kernel, x);
    else
        col2im_strided(col, s, x);
}

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
    size_t ihw = (size_t)s->height * s->width, kdim = conv_kdim(s);
    size_t hw = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    float *col = p->col + kdim * hw * (size_t)thread;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        float *y = job->y + n * s->out_channels * hw;
        gather(p, job->x + n * s->in_channels * ihw, col);
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
    size_t ihw = (size_t)s->height * s->width, kdim = conv_kdim(s);
    size_t hw = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    float *col = p->col + kdim * hw * (size_t)thread;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kdim, (int)hw, s->out_channels,
                    1.0f, job->w, (int)kdim, job->dy + n * s->out_channels * hw, (int)hw, 0.0f, col,
                    (int)hw);
        scatter(p, col, job->dx + n * s->in_channels * ihw);
    }
}

/* The weight gradient in image slots (wino_slots: the images [j*batch/slots,
 * (j+1)*batch/slots) of slot j summed into its own partial gradient, whole slots to threads),
 * the slots added in order after: the result does not depend on the thread count. */
static void generic_bwd_filter_task(void *ctx, int thread, int threads)
{
    const struct conv_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    size_t ihw = (size_t)s->height * s->width, kdim = conv_kdim(s);
    size_t hw = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    float *col = p->col + kdim * hw * (size_t)thread;
    int slots = wino_slots(p);
    size_t j0, j1;
    dg_cpu_split((size_t)slots, 1, thread, threads, &j0, &j1);
    for (size_t j = j0; j < j1; j++) {
        float *part = p->dw_part + (size_t)s->out_channels * kdim * j;
        size_t n0 = j * (size_t)s->batch / (size_t)slots;
        size_t n1 = (j + 1) * (size_t)s->batch / (size_t)slots;
        memset(part, 0, sizeof(float) * (size_t)s->out_channels * kdim);
        for (size_t n = n0; n < n1; n++) {
            gather(p, job->x + n * s->in_channels * ihw, col);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->out_channels, (int)kdim,
                        (int)hw, 1.0f, job->dy + n * s->out_channels * hw, (int)hw, col, (int)hw,
                        1.0f, part, (int)kdim);
        }
    }
}

/* dw = sum of the slots' partial gradients, in slot order. */
static void generic_reduce_task(void *ctx, int thread, int threads)
{
    const struct conv_job *job = ctx;
    const struct conv_plan *p = job->p;
    size_t count = (size_t)p->s.out_channels * conv_kdim(&p->s);
    int slots = wino_slots(p);
    size_t i0, i1;
    dg_cpu_split(count, 64, thread, threads, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        float sum = p->dw_part[i];
        for (int t = 1; t < slots; t++)
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
