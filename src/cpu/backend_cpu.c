/* The CPU backend: the vtable over host memory (malloc), with the element loops run on the
 * backend's thread pool through the ISA table chosen at creation (src/cpu/isa/kernels.c,
 * bit-identical to the shared element math on every ISA) and dense layers as OpenBLAS sgemm
 * (single-threaded calls, one per pool thread, so that one set of threads does all the
 * work). Tensors are float32 NCHW, row-major; dense weights (in, out). Convolutions are in
 * conv.c (plans, dispatch) and conv_im2col.c, conv_direct.c, conv_winograd.c; the threads in
 * threads.c. */
#include "cpu/bf16.h"
#include "cpu/cpu_internal.h"
#include "digits/cpu_features.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "math/augment.h"
#include "math/ema.h"
#include "math/gap.h"
#include "math/dropout.h"
#include "math/rmsprop.h"
#include "math/softmax_xent.h"

/* ---- memory ---- */

static void cpu_destroy(struct dg_backend *be)
{
    struct dg_cpu *cpu = be->impl;
    if (cpu) {
        dg_cpu_threads_destroy(cpu->pool);
        free(cpu->scratch);
        for (int i = 0; i < DG_CPU_DROPOUT_MEMOS; i++)
            free(cpu->dropout_memo[i].scale);
        free(cpu);
    }
    free(be);
}

static enum dg_status cpu_alloc(struct dg_backend *be, size_t bytes, void **ptr)
{
    (void)be;
    *ptr = calloc(1, bytes ? bytes : 1);
    if (!*ptr)
        return dg_error(DG_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
    return DG_OK;
}

static void cpu_free(struct dg_backend *be, void *ptr)
{
    (void)be;
    free(ptr);
}

static enum dg_status cpu_copy(struct dg_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memmove(dst, src, bytes);
    return DG_OK;
}

static enum dg_status cpu_sync(struct dg_backend *be)
{
    (void)be;
    return DG_OK;
}

/* ---- data ---- */

static enum dg_status cpu_dataset_attach(struct dg_backend *be, const struct dg_dataset *dataset,
                                         void **handle)
{
    (void)be;
    *handle = (void *)dataset;
    return DG_OK;
}

static void cpu_dataset_detach(struct dg_backend *be, void *handle)
{
    (void)be;
    (void)handle;
}

struct assemble_job {
    const struct dg_cpu_isa_ops *isa;
    const struct dg_dataset *dataset;
    const uint32_t *rows;
    int n;
    const struct dg_augment_key *augment;
    float *x;
};

static void assemble_task(void *ctx, int thread, int threads)
{
    const struct assemble_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split((size_t)job->n, 1, thread, threads, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        const uint8_t *image = job->dataset->images + (size_t)job->rows[i] * DG_PIXELS;
        float *out = job->x + i * DG_PIXELS;
        if (!job->augment) {
            job->isa->assemble(image, NULL, out);
            continue;
        }
        const struct dg_augment_key *key = job->augment;
        struct dg_augment_ranges ranges = {key->rotation_deg, key->shift, key->zoom};
        struct dg_affine affine = dg_augment_affine(
            dg_augment_draw(ranges, key->seed, key->epoch, key->step, (uint32_t)i));
        job->isa->assemble(image, &affine, out);
    }
}

static enum dg_status cpu_batch_assemble(struct dg_backend *be, void *handle, const uint32_t *rows,
                                         int n, const struct dg_augment_key *augment, float *x,
                                         uint8_t *labels)
{
    struct dg_cpu *cpu = be->impl;
    const struct dg_dataset *dataset = handle;
    if (n < 0)
        return dg_error(DG_ERR_RUNTIME, "cpu batch: negative batch size %d", n);
    for (int i = 0; i < n; i++)
        if (rows[i] >= dataset->count)
            return dg_error(DG_ERR_RUNTIME, "cpu batch: row %u outside the dataset of %zu images",
                            rows[i], dataset->count);
    struct assemble_job job = {cpu->isa, dataset, rows, n, augment, x};
    dg_cpu_threads_run(cpu->pool, assemble_task, &job);
    if (labels && dataset->labels)
        for (int i = 0; i < n; i++)
            labels[i] = dataset->labels[rows[i]];
    return DG_OK;
}

/* ---- element ops ---- */

struct relu_job {
    const struct dg_cpu_isa_ops *isa;
    size_t n;
    const float *y;
    float *dy;
};

static void relu_bwd_task(void *ctx, int thread, int threads)
{
    const struct relu_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split(job->n, 1024, thread, threads, &i0, &i1);
    if (i1 > i0)
        job->isa->relu_bwd(i1 - i0, job->y + i0, job->dy + i0);
}

static enum dg_status cpu_relu_bwd(struct dg_backend *be, size_t n, const float *y, float *dy)
{
    struct dg_cpu *cpu = be->impl;
    struct relu_job job = {cpu->isa, n, y, dy};
    dg_cpu_threads_run(cpu->pool, relu_bwd_task, &job);
    return DG_OK;
}

struct gap_job {
    size_t rows;
    int spatial;
    const float *in;
    float *out;
};

static void gap_fwd_task(void *ctx, int thread, int threads)
{
    const struct gap_job *job = ctx;
    size_t r0, r1;
    dg_cpu_split(job->rows, 64, thread, threads, &r0, &r1);
    for (size_t r = r0; r < r1; r++)
        job->out[r] = dg_gap_mean(job->in + r * (size_t)job->spatial, job->spatial);
}

static void gap_bwd_task(void *ctx, int thread, int threads)
{
    const struct gap_job *job = ctx;
    size_t r0, r1;
    dg_cpu_split(job->rows, 64, thread, threads, &r0, &r1);
    for (size_t r = r0; r < r1; r++) {
        float g = dg_gap_grad(job->in[r], job->spatial);
        float *dx = job->out + r * (size_t)job->spatial;
        for (int s = 0; s < job->spatial; s++)
            dx[s] = g;
    }
}

static enum dg_status run_gap(struct dg_backend *be, void (*task)(void *, int, int), size_t rows,
                              int spatial, const float *in, float *out)
{
    struct dg_cpu *cpu = be->impl;
    struct gap_job job = {rows, spatial, in, out};
    dg_cpu_threads_run(cpu->pool, task, &job);
    return DG_OK;
}

static enum dg_status cpu_gap_fwd(struct dg_backend *be, size_t rows, int spatial, const float *x,
                                  float *y)
{
    return run_gap(be, gap_fwd_task, rows, spatial, x, y);
}

static enum dg_status cpu_gap_bwd(struct dg_backend *be, size_t rows, int spatial, const float *dy,
                                  float *dx)
{
    return run_gap(be, gap_bwd_task, rows, spatial, dy, dx);
}

/* NHWC (batch, spatial, channels): the same sums (src/math/gap.h's order), per channel. */
struct gap_nhwc_job {
    int batch, channels, spatial;
    const float *in;
    float *out;
};

static void gap_nhwc_fwd_task(void *ctx, int thread, int threads)
{
    const struct gap_nhwc_job *job = ctx;
    size_t c = (size_t)job->channels, r0, r1;
    dg_cpu_split((size_t)job->batch * c, 64, thread, threads, &r0, &r1);
    for (size_t r = r0; r < r1; r++) {
        const float *x = job->in + r / c * c * (size_t)job->spatial + r % c;
        double sum = 0.0;
        for (int s = 0; s < job->spatial; s++)
            sum += (double)x[(size_t)s * c];
        job->out[r] = (float)(sum / (double)job->spatial);
    }
}

static void gap_nhwc_bwd_task(void *ctx, int thread, int threads)
{
    const struct gap_nhwc_job *job = ctx;
    size_t c = (size_t)job->channels, n0, n1;
    dg_cpu_split((size_t)job->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++)
        for (int s = 0; s < job->spatial; s++)
            for (size_t ch = 0; ch < c; ch++)
                job->out[(n * (size_t)job->spatial + (size_t)s) * c + ch] =
                    dg_gap_grad(job->in[n * c + ch], job->spatial);
}

static enum dg_status cpu_gap_nhwc(struct dg_backend *be, void (*task)(void *, int, int),
                                   int batch, int channels, int spatial, const float *in,
                                   float *out)
{
    struct dg_cpu *cpu = be->impl;
    if (batch < 1 || channels < 1 || spatial < 1)
        return dg_error(DG_ERR_RUNTIME, "cpu gap: bad shape %d x %d x %d", batch, channels,
                        spatial);
    struct gap_nhwc_job job = {batch, channels, spatial, in, out};
    dg_cpu_threads_run(cpu->pool, task, &job);
    return DG_OK;
}

static enum dg_status cpu_gap_nhwc_fwd(struct dg_backend *be, int batch, int channels,
                                       int spatial, const float *x, float *y)
{
    return cpu_gap_nhwc(be, gap_nhwc_fwd_task, batch, channels, spatial, x, y);
}

static enum dg_status cpu_gap_nhwc_bwd(struct dg_backend *be, int batch, int channels,
                                       int spatial, const float *dy, float *dx)
{
    return cpu_gap_nhwc(be, gap_nhwc_bwd_task, batch, channels, spatial, dy, dx);
}

void *dg_cpu_scratch(struct dg_cpu *cpu, size_t bytes)
{
    if (bytes > cpu->scratch_bytes) {
        void *grown = realloc(cpu->scratch, bytes);
        if (!grown)
            return NULL;
        cpu->scratch = grown;
        cpu->scratch_bytes = bytes;
    }
    return cpu->scratch;
}

struct transpose_job {
    const struct dg_cpu_isa_ops *isa;
    int batch, a, b;
    const float *x;
    float *y;
};

static void transpose_task(void *ctx, int thread, int threads)
{
    const struct transpose_job *job = ctx;
    size_t a = (size_t)job->a, b = (size_t)job->b, n0, n1;
    dg_cpu_split((size_t)job->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        const float *x = job->x + n * a * b;
        float *y = job->y + n * a * b;
        if (b % 16 == 0) /* NHWC (a pixels, b channels) to NCHW */
            job->isa->from_nhwc(x, (int)b, (int)a, y, a);
        else if (a % 16 == 0) /* NCHW (a channels, b pixels) to NHWC */
            job->isa->to_nhwc(x, b, (int)a, (int)b, y);
        else
            for (size_t i = 0; i < a; i++)
                for (size_t j = 0; j < b; j++)
                    y[j * a + i] = x[i * b + j];
    }
}

void dg_cpu_transpose(struct dg_cpu *cpu, int batch, int a, int b, const float *x, float *y)
{
    struct transpose_job job = {cpu->isa, batch, a, b, x, y};
    dg_cpu_threads_run(cpu->pool, transpose_task, &job);
}

static enum dg_status cpu_transpose(struct dg_backend *be, int batch, int a, int b,
                                    const float *x, float *y)
{
    if (batch < 1 || a < 1 || b < 1)
        return dg_error(DG_ERR_RUNTIME, "cpu transpose: bad shape %d x %d x %d", batch, a, b);
    dg_cpu_transpose(be->impl, batch, a, b, x, y);
    return DG_OK;
}

/* NHWC activations unless DIGITS_CPU_LAYOUT=nchw (or dg_backend_cpu_set_layout) says NCHW,
 * or the math is bf16, or DIGITS_CPU_KERNELS=generic: their convolutions work in NCHW */
static int cpu_nhwc(struct dg_backend *be)
{
    const struct dg_cpu *cpu = be->impl;
    return !cpu->nchw && !cpu->bf16 && cpu->kernels != DG_CPU_KERNELS_GENERIC;
}

struct pool_job {
    const struct dg_cpu_isa_ops *isa;
    struct dg_pool_shape s;
    const float *x, *dy;
    float *y, *dx;
};

/* NHWC (shape nhwc): the same windows and rules as the ISA's maxpool_fwd and maxpool_bwd
 * (a later element only when strictly greater; the gradient to the first maximum, zero
 * elsewhere and in an odd last row or column), images split across threads. */
static void maxpool_nhwc_fwd_task(void *ctx, int thread, int threads)
{
    const struct pool_job *job = ctx;
    int h = job->s.height, w = job->s.width, oh = h / 2, ow = w / 2, c = job->s.channels;
    size_t n0, n1;
    dg_cpu_split((size_t)job->s.batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++)
        for (int r = 0; r < oh; r++)
            for (int q = 0; q < ow; q++) {
                const float *tl = job->x + ((n * h + 2 * (size_t)r) * w + 2 * (size_t)q) * c;
                const float *bl = tl + (size_t)w * c;
                float *out = job->y + ((n * oh + (size_t)r) * ow + (size_t)q) * c;
                for (int ch = 0; ch < c; ch++) {
                    float m = tl[ch];
                    if (tl[c + ch] > m)
                        m = tl[c + ch];
                    if (bl[ch] > m)
                        m = bl[ch];
                    if (bl[c + ch] > m)
                        m = bl[c + ch];
                    out[ch] = m;
                }
            }
}

static void maxpool_nhwc_bwd_task(void *ctx, int thread, int threads)
{
    const struct pool_job *job = ctx;
    int h = job->s.height, w = job->s.width, oh = h / 2, ow = w / 2, c = job->s.channels;
    size_t n0, n1;
    dg_cpu_split((size_t)job->s.batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        memset(job->dx + n * (size_t)h * w * c, 0, sizeof(float) * (size_t)h * w * c);
        for (int r = 0; r < oh; r++)
            for (int q = 0; q < ow; q++) {
                size_t at = ((n * h + 2 * (size_t)r) * w + 2 * (size_t)q) * c;
                const float *win[4] = {job->x + at, job->x + at + c, job->x + at + (size_t)w * c,
                                       job->x + at + (size_t)w * c + c};
                float *dwin[4] = {job->dx + at, job->dx + at + c, job->dx + at + (size_t)w * c,
                                  job->dx + at + (size_t)w * c + c};
                const float *g = job->dy + ((n * oh + (size_t)r) * ow + (size_t)q) * c;
                for (int ch = 0; ch < c; ch++) {
                    int k = 0;
                    float m = win[0][ch];
                    for (int j = 1; j < 4; j++)
                        if (win[j][ch] > m)
                            m = win[j][ch], k = j;
                    dwin[k][ch] = g[ch];
                }
            }
    }
}

static void maxpool_fwd_task(void *ctx, int thread, int threads)
{
    const struct pool_job *job = ctx;
    int h = job->s.height, w = job->s.width;
    size_t p0, p1;
    dg_cpu_split((size_t)job->s.batch * job->s.channels, 1, thread, threads, &p0, &p1);
    for (size_t plane = p0; plane < p1; plane++)
        job->isa->maxpool_fwd(job->x + plane * h * w, h, w, job->y + plane * (h / 2) * (w / 2));
}

static void maxpool_bwd_task(void *ctx, int thread, int threads)
{
    const struct pool_job *job = ctx;
    int h = job->s.height, w = job->s.width;
    size_t p0, p1;
    dg_cpu_split((size_t)job->s.batch * job->s.channels, 1, thread, threads, &p0, &p1);
    for (size_t plane = p0; plane < p1; plane++)
        job->isa->maxpool_bwd(job->x + plane * h * w, job->dy + plane * (h / 2) * (w / 2), h, w,
                              job->dx + plane * h * w);
}

static enum dg_status cpu_maxpool_fwd(struct dg_backend *be, const struct dg_pool_shape *shape,
                                      const float *x, float *y)
{
    struct dg_cpu *cpu = be->impl;
    struct pool_job job = {cpu->isa, *shape, x, NULL, y, NULL};
    dg_cpu_threads_run(cpu->pool, shape->nhwc ? maxpool_nhwc_fwd_task : maxpool_fwd_task, &job);
    return DG_OK;
}

static enum dg_status cpu_maxpool_bwd(struct dg_backend *be, const struct dg_pool_shape *shape,
                                      const float *x, const float *y, const float *dy, float *dx)
{
    struct dg_cpu *cpu = be->impl;
    (void)y;
    struct pool_job job = {cpu->isa, *shape, x, dy, NULL, dx};
    dg_cpu_threads_run(cpu->pool, shape->nhwc ? maxpool_nhwc_bwd_task : maxpool_bwd_task, &job);
    return DG_OK;
}

struct dropout_job {
    const struct dg_cpu_isa_ops *isa;
    size_t n;
    float rate;
    struct dg_dropout_key key;
    const float *in;
    float *out;
    float *scratch; /* per thread 2 images (ones, scales), or 1024 ones */
    float *scale;   /* the masks' scales, written (a miss) or read (a hit) */
};

/* NHWC keys (channels > 0): per image, the masks of its NCHW indices (the ISA's dropout of
 * ones: exactly the scales) into the thread's scratch, then kept at the NHWC places and
 * in * scale there. */
static void dropout_nhwc_task(void *ctx, int thread, int threads)
{
    const struct dropout_job *job = ctx;
    size_t c = (size_t)job->key.channels, sp = (size_t)job->key.spatial, image = c * sp;
    float *ones = job->scratch + 2 * image * (size_t)thread, *nchw = ones + image;
    for (size_t i = 0; i < image; i++)
        ones[i] = 1.0f;
    size_t n0, n1;
    dg_cpu_split(job->n / image, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        job->isa->dropout_at(n * image, (n + 1) * image, job->rate, &job->key, ones, nchw);
        float *scale = job->scale + n * image;
        const float *in = job->in + n * image;
        float *out = job->out + n * image;
        for (size_t p = 0; p < sp; p++)
            for (size_t ch = 0; ch < c; ch++) {
                float v = nchw[ch * sp + p];
                scale[p * c + ch] = v;
                out[p * c + ch] = in[p * c + ch] * v;
            }
    }
}

/* Flat keys: ranges of 256 elements (whole Philox blocks) per thread, the scales drawn 1024
 * at a time from ones, kept, and in * scale. */
static void dropout_task(void *ctx, int thread, int threads)
{
    const struct dropout_job *job = ctx;
    float *ones = job->scratch + 1024 * (size_t)thread;
    for (int i = 0; i < 1024; i++)
        ones[i] = 1.0f;
    size_t i0, i1;
    dg_cpu_split(job->n, 256, thread, threads, &i0, &i1);
    for (size_t b = i0; b < i1; b += 1024) {
        size_t e = i1 - b < 1024 ? i1 : b + 1024;
        job->isa->dropout_at(b, e, job->rate, &job->key, ones, job->scale + b);
        for (size_t i = b; i < e; i++)
            job->out[i] = job->in[i] * job->scale[i];
    }
}

/* A hit: out = in * the kept scales (the same products as drawing them again). */
static void dropout_scale_task(void *ctx, int thread, int threads)
{
    const struct dropout_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split(job->n, 64, thread, threads, &i0, &i1);
    const float *in = job->in, *scale = job->scale;
    float *out = job->out;
    for (size_t i = i0; i < i1; i++)
        out[i] = in[i] * scale[i];
}

static int same_dropout(const struct dg_cpu_dropout_memo *m, size_t n, float rate,
                        const struct dg_dropout_key *key)
{
    return m->scale && m->n == n && m->rate == rate && m->key.seed == key->seed &&
           m->key.layer == key->layer && m->key.epoch == key->epoch &&
           m->key.step == key->step && m->key.channels == key->channels &&
           m->key.spatial == key->spatial;
}

static enum dg_status run_dropout(struct dg_backend *be, size_t n, float rate,
                                  const struct dg_dropout_key *key, const float *in, float *out)
{
    struct dg_cpu *cpu = be->impl;
    if (!(rate >= 0.0f && rate < 1.0f))
        return dg_error(DG_ERR_RUNTIME, "cpu dropout: rate %g outside [0, 1)", (double)rate);
    size_t image = 0;
    if (key->channels > 0) {
        image = (size_t)key->channels * (size_t)(key->spatial > 0 ? key->spatial : 0);
        if (key->spatial < 1 || n % image)
            return dg_error(DG_ERR_RUNTIME,
                            "cpu dropout: %zu elements are not images of %d x %d (NHWC)", n,
                            key->channels, key->spatial);
    }
    struct dropout_job job = {cpu->isa, n, rate, *key, in, out, NULL, NULL};
    for (int i = 0; i < DG_CPU_DROPOUT_MEMOS; i++)
        if (same_dropout(&cpu->dropout_memo[i], n, rate, key)) {
            job.scale = cpu->dropout_memo[i].scale;
            dg_cpu_threads_run(cpu->pool, dropout_scale_task, &job);
            return DG_OK;
        }
    struct dg_cpu_dropout_memo *m = &cpu->dropout_memo[cpu->dropout_next];
    if (m->capacity < n) {
        free(m->scale);
        m->scale = malloc(sizeof(float) * (n ? n : 1));
        m->capacity = m->scale ? n : 0;
        if (!m->scale)
            return dg_error(DG_ERR_NOMEM, "cpu dropout: out of memory for %zu masks", n);
    }
    m->n = 0; /* empty until drawn */
    job.scale = m->scale;
    job.scratch = dg_cpu_scratch(cpu, sizeof(float) * (size_t)cpu->threads *
                                          (image ? 2 * image : 1024));
    if (!job.scratch)
        return dg_error(DG_ERR_NOMEM, "cpu dropout: out of memory");
    dg_cpu_threads_run(cpu->pool, image ? dropout_nhwc_task : dropout_task, &job);
    m->key = *key;
    m->rate = rate;
    m->n = n;
    cpu->dropout_next = (cpu->dropout_next + 1) % DG_CPU_DROPOUT_MEMOS;
    return DG_OK;
}

static enum dg_status cpu_dropout_fwd(struct dg_backend *be, size_t n, float rate,
                                      const struct dg_dropout_key *key, const float *x, float *y)
{
    return run_dropout(be, n, rate, key, x, y);
}

static enum dg_status cpu_dropout_bwd(struct dg_backend *be, size_t n, float rate,
                                      const struct dg_dropout_key *key, const float *dy, float *dx)
{
    return run_dropout(be, n, rate, key, dy, dx);
}

/* ---- dense ---- */

struct dense_job {
    const struct dg_cpu_isa_ops *isa;
    int batch, in, out, relu;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw, *db;
    const float *dy_mul; /* dy as the products take it (bf16-rounded at --math bf16) */
};

/* Dense layers run as sgemm calls on tiles of a fixed shape (DENSE_ROWS x DENSE_COLS of the
 * output; DENSE_IN-row slices of the weight gradient), handed out to the threads: OpenBLAS'
 * rounding can depend on the shape of a call (its edge kernels), so tiles that do not depend on
 * the thread count keep every result bit-identical for any number of threads. */
#define DENSE_ROWS 32
#define DENSE_COLS 64
#define DENSE_IN 64

static size_t blocks_of(size_t count, size_t block)
{
    return (count + block - 1) / block;
}

/* y = x w + b (then ReLU) on tiles of DENSE_ROWS x DENSE_COLS. */
static void dense_fwd_task(void *ctx, int thread, int threads)
{
    const struct dense_job *job = ctx;
    size_t col_blocks = blocks_of((size_t)job->out, DENSE_COLS);
    size_t tiles = blocks_of((size_t)job->batch, DENSE_ROWS) * col_blocks;
    size_t t0, t1;
    dg_cpu_split(tiles, 1, thread, threads, &t0, &t1);
    for (size_t t = t0; t < t1; t++) {
        size_t r0 = t / col_blocks * DENSE_ROWS, c0 = t % col_blocks * DENSE_COLS;
        size_t r1 = r0 + DENSE_ROWS < (size_t)job->batch ? r0 + DENSE_ROWS : (size_t)job->batch;
        size_t c1 = c0 + DENSE_COLS < (size_t)job->out ? c0 + DENSE_COLS : (size_t)job->out;
        for (size_t r = r0; r < r1; r++)
            memcpy(job->y + r * job->out + c0, job->b + c0, sizeof(float) * (c1 - c0));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)(c1 - c0),
                    job->in, 1.0f, job->x + r0 * job->in, job->in, job->w + c0, job->out, 1.0f,
                    job->y + r0 * job->out + c0, job->out);
        if (job->relu)
            for (size_t r = r0; r < r1; r++)
                job->isa->bias_act(job->y + r * job->out + c0, c1 - c0, 0.0f, 1);
    }
}

/* --math bf16: the dense layers' operands rounded to bf16 (as float32 values) in the backend's
 * scratch, then the same sgemm tiles: products of bf16 values are exact in float32, so this is
 * "bf16 operands, float32 accumulation" (src/cpu/bf16.h). */
struct round_job {
    const float *src;
    float *dst;
    size_t n;
};

static void round_task(void *ctx, int thread, int threads)
{
    const struct round_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split(job->n, 4096, thread, threads, &i0, &i1);
    for (size_t i = i0; i < i1; i++)
        job->dst[i] = dg_bf16_value(job->src[i]);
}

static enum dg_status bf16_scratch(struct dg_cpu *cpu, size_t floats, float **out)
{
    if (!(*out = dg_cpu_scratch(cpu, floats * sizeof(float))))
        return dg_error(DG_ERR_NOMEM, "cpu dense: out of memory for the bf16 operands");
    return DG_OK;
}

/* dst <- src rounded to bf16; returns dst. */
static const float *round_into(struct dg_cpu *cpu, const float *src, size_t n, float *dst)
{
    struct round_job job = {src, dst, n};
    dg_cpu_threads_run(cpu->pool, round_task, &job);
    return dst;
}

static enum dg_status cpu_dense_fwd(struct dg_backend *be, int batch, int in, int out,
                                    const float *x, const float *w, const float *b, float *y,
                                    int relu)
{
    struct dg_cpu *cpu = be->impl;
    if (batch < 1 || in < 1 || out < 1)
        return dg_error(DG_ERR_RUNTIME, "cpu dense: bad shape %d x %d -> %d", batch, in, out);
    if (cpu->bf16) {
        size_t nx = (size_t)batch * in, nw = (size_t)in * out;
        float *scratch = NULL;
        enum dg_status status = bf16_scratch(cpu, nx + nw, &scratch);
        if (status != DG_OK)
            return status;
        x = round_into(cpu, x, nx, scratch);
        w = round_into(cpu, w, nw, scratch + nx);
    }
    struct dense_job job = {cpu->isa, batch, in,   out,  relu != 0, x,   w,
                            b,        NULL,  y,    NULL, NULL,      NULL, NULL};
    dg_cpu_threads_run(cpu->pool, dense_fwd_task, &job);
    return DG_OK;
}

/* dw = x^T dy and dx = dy w^T in slices of DENSE_IN input units (rows of dw, columns of dx),
 * db = column sums in batch order. */
static void dense_bwd_task(void *ctx, int thread, int threads)
{
    const struct dense_job *job = ctx;
    size_t slices = blocks_of((size_t)job->in, DENSE_IN);
    size_t s0, s1;
    dg_cpu_split(slices, 1, thread, threads, &s0, &s1);
    for (size_t slice = s0; slice < s1; slice++) {
        size_t i0 = slice * DENSE_IN;
        size_t i1 = i0 + DENSE_IN < (size_t)job->in ? i0 + DENSE_IN : (size_t)job->in;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(i1 - i0), job->out, job->batch,
                    1.0f, job->x + i0, job->in, job->dy_mul, job->out, 0.0f,
                    job->dw + i0 * job->out, job->out);
        if (job->dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, job->batch, (int)(i1 - i0),
                        job->out, 1.0f, job->dy_mul, job->out, job->w + i0 * job->out, job->out, 0.0f,
                        job->dx + i0, job->in);
    }
    size_t c0, c1;
    dg_cpu_split((size_t)job->out, 16, thread, threads, &c0, &c1);
    for (size_t c = c0; c < c1; c++) {
        float sum = 0.0f;
        for (int r = 0; r < job->batch; r++)
            sum += job->dy[(size_t)r * job->out + c];
        job->db[c] = sum;
    }
}

static enum dg_status cpu_dense_bwd(struct dg_backend *be, int batch, int in, int out,
                                    const float *x, const float *w, const float *dy, float *dx,
                                    float *dw, float *db)
{
    struct dg_cpu *cpu = be->impl;
    if (batch < 1 || in < 1 || out < 1)
        return dg_error(DG_ERR_RUNTIME, "cpu dense: bad shape %d x %d -> %d", batch, in, out);
    const float *dy_mul = dy; /* the products' dy; db sums the float32 dy */
    if (cpu->bf16) {
        size_t nx = (size_t)batch * in, nw = (size_t)in * out, ny = (size_t)batch * out;
        float *scratch = NULL;
        enum dg_status status = bf16_scratch(cpu, nx + nw + ny, &scratch);
        if (status != DG_OK)
            return status;
        x = round_into(cpu, x, nx, scratch);
        if (dx)
            w = round_into(cpu, w, nw, scratch + nx);
        dy_mul = round_into(cpu, dy, ny, scratch + nx + nw);
    }
    struct dense_job job = {cpu->isa, batch, in,   out, 0,  x,  w,
                            NULL,     dy,    NULL, dx,  dw, db, dy_mul};
    dg_cpu_threads_run(cpu->pool, dense_bwd_task, &job);
    return DG_OK;
}

/* ---- softmax + cross-entropy, RMSprop ---- */

static enum dg_status cpu_softmax_xent(struct dg_backend *be, int batch, const float *logits,
                                       const uint8_t *labels, float smoothing, float *probs,
                                       float *dlogits, double *stats, double *trace)
{
    (void)be;
    if (batch < 1)
        return dg_error(DG_ERR_RUNTIME, "cpu softmax: batch of %d", batch);
    if (!labels) {
        for (int r = 0; r < batch; r++)
            dg_softmax_row(logits + (size_t)r * DG_CLASSES, probs + (size_t)r * DG_CLASSES,
                           DG_CLASSES);
        return DG_OK;
    }
    for (int r = 0; r < batch; r++)
        if (labels[r] >= DG_CLASSES)
            return dg_error(DG_ERR_RUNTIME, "cpu softmax: label %d of row %d is not a class",
                            labels[r], r);
    const float inv_batch = 1.0f / (float)batch;
    double loss_sum = 0.0, correct_sum = 0.0;
    for (int r = 0; r < batch; r++) {
        int correct;
        float loss =
            dg_softmax_xent_row(logits + (size_t)r * DG_CLASSES, probs + (size_t)r * DG_CLASSES,
                                dlogits ? dlogits + (size_t)r * DG_CLASSES : NULL, DG_CLASSES,
                                labels[r], smoothing, inv_batch, &correct);
        loss_sum += (double)loss;
        correct_sum += correct;
    }
    if (stats) {
        stats[0] += loss_sum;
        stats[1] += correct_sum;
        if (trace) {
            size_t k = (size_t)stats[2];
            trace[2 * k] = stats[0];
            trace[2 * k + 1] = stats[1];
            stats[2] += 1.0;
        }
    }
    return DG_OK;
}

struct rmsprop_job {
    const struct dg_cpu_isa_ops *isa;
    size_t n;
    float *w, *acc;
    const float *g;
    float lr, rho, eps;
};

static void rmsprop_task(void *ctx, int thread, int threads)
{
    const struct rmsprop_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split(job->n, 4096, thread, threads, &i0, &i1);
    if (i1 > i0)
        job->isa->rmsprop(i1 - i0, job->w + i0, job->g + i0, job->acc + i0, job->lr, job->rho,
                          job->eps);
}

static enum dg_status cpu_rmsprop(struct dg_backend *be, size_t n, float *w, const float *g,
                                  float *acc, float lr, float rho, float eps)
{
    struct dg_cpu *cpu = be->impl;
    struct rmsprop_job job = {cpu->isa, n, w, acc, g, lr, rho, eps};
    dg_cpu_threads_run(cpu->pool, rmsprop_task, &job);
    return DG_OK;
}

struct adam_job {
    const struct dg_cpu_isa_ops *isa;
    size_t n;
    float *w, *m, *v;
    const float *g;
    float lr, beta1, beta2, eps, bc1, bc2;
};

static void adam_task(void *ctx, int thread, int threads)
{
    const struct adam_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split(job->n, 4096, thread, threads, &i0, &i1);
    if (i1 > i0)
        job->isa->adam(i1 - i0, job->w + i0, job->g + i0, job->m + i0, job->v + i0, job->lr,
                       job->beta1, job->beta2, job->eps, job->bc1, job->bc2);
}

static enum dg_status cpu_adam(struct dg_backend *be, size_t n, float *w, const float *g, float *m,
                               float *v, float *pow, float lr, float beta1, float beta2, float eps)
{
    struct dg_cpu *cpu = be->impl;
    pow[0] *= beta1;
    pow[1] *= beta2;
    struct adam_job job = {cpu->isa, n, w,   m,   v,   g, lr, beta1, beta2, eps,
                           1.0f - pow[0], 1.0f - pow[1]};
    dg_cpu_threads_run(cpu->pool, adam_task, &job);
    return DG_OK;
}

struct sgd_job {
    const struct dg_cpu_isa_ops *isa;
    size_t n;
    float *w, *b;
    const float *g;
    float lr, momentum;
    int nesterov;
};

static void sgd_task(void *ctx, int thread, int threads)
{
    const struct sgd_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split(job->n, 4096, thread, threads, &i0, &i1);
    if (i1 > i0)
        job->isa->sgd(i1 - i0, job->w + i0, job->g + i0, job->b + i0, job->lr, job->momentum,
                      job->nesterov);
}

static enum dg_status cpu_sgd(struct dg_backend *be, size_t n, float *w, const float *g, float *b,
                              float lr, float momentum, int nesterov)
{
    struct dg_cpu *cpu = be->impl;
    struct sgd_job job = {cpu->isa, n, w, b, g, lr, momentum, nesterov};
    dg_cpu_threads_run(cpu->pool, sgd_task, &job);
    return DG_OK;
}

struct ema_job {
    size_t n;
    float *shadow;
    const float *w;
    float decay;
};

static void ema_task(void *ctx, int thread, int threads)
{
    const struct ema_job *job = ctx;
    size_t i0, i1;
    dg_cpu_split(job->n, 4096, thread, threads, &i0, &i1);
    for (size_t i = i0; i < i1; i++)
        dg_ema_element(&job->shadow[i], job->w[i], job->decay);
}

static enum dg_status cpu_ema(struct dg_backend *be, size_t n, float *shadow, const float *w,
                              float decay)
{
    struct dg_cpu *cpu = be->impl;
    struct ema_job job = {n, shadow, w, decay};
    dg_cpu_threads_run(cpu->pool, ema_task, &job);
    return DG_OK;
}

/* ---- construction ---- */

static const struct dg_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .dataset_attach = cpu_dataset_attach,
    .dataset_detach = cpu_dataset_detach,
    .batch_assemble = cpu_batch_assemble,
    .conv_plan_create = dg_cpu_conv_plan_create,
    .conv_plan_free = dg_cpu_conv_plan_free,
    .conv_algo_name = dg_cpu_conv_describe,
    .conv_fwd = dg_cpu_conv_fwd,
    .conv_bwd_data = dg_cpu_conv_bwd_data,
    .conv_bwd_filter = dg_cpu_conv_bwd_filter,
    .batchnorm_fwd_train = dg_cpu_batchnorm_fwd_train,
    .batchnorm_fwd_infer = dg_cpu_batchnorm_fwd_infer,
    .batchnorm_bwd = dg_cpu_batchnorm_bwd,
    .batchnorm_bwd_relu = dg_cpu_batchnorm_bwd_relu,
    .relu_bwd = cpu_relu_bwd,
    .gap_fwd = cpu_gap_fwd,
    .gap_bwd = cpu_gap_bwd,
    .nhwc = cpu_nhwc,
    .transpose = cpu_transpose,
    .gap_nhwc_fwd = cpu_gap_nhwc_fwd,
    .gap_nhwc_bwd = cpu_gap_nhwc_bwd,
    .maxpool_fwd = cpu_maxpool_fwd,
    .maxpool_bwd = cpu_maxpool_bwd,
    .dropout_fwd = cpu_dropout_fwd,
    .dropout_bwd = cpu_dropout_bwd,
    .dense_fwd = cpu_dense_fwd,
    .dense_bwd = cpu_dense_bwd,
    .softmax_xent = cpu_softmax_xent,
    .rmsprop = cpu_rmsprop,
    .adam = cpu_adam,
    .sgd = cpu_sgd,
    .ema = cpu_ema,
};

/* DIGITS_CPU_KERNELS=auto|generic|direct|winograd chooses the convolution algorithms. */
static enum dg_status kernels_from_env(enum dg_cpu_kernels *kernels)
{
    static const struct {
        const char *name;
        enum dg_cpu_kernels kernels;
    } names[] = {{"auto", DG_CPU_KERNELS_AUTO},
                 {"generic", DG_CPU_KERNELS_GENERIC},
                 {"direct", DG_CPU_KERNELS_DIRECT},
                 {"winograd", DG_CPU_KERNELS_WINOGRAD}};
    const char *value = getenv("DIGITS_CPU_KERNELS");
    *kernels = DG_CPU_KERNELS_AUTO;
    if (!value || !*value)
        return DG_OK;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(value, names[i].name) == 0) {
            *kernels = names[i].kernels;
            return DG_OK;
        }
    return dg_error(DG_ERR_USAGE,
                    "DIGITS_CPU_KERNELS=%s: expected auto, generic, direct or winograd", value);
}

/* DIGITS_CPU_LAYOUT=nhwc|nchw: the activations' layout (nhwc, the default, where cpu_nhwc
 * allows it; the results are the same bits either way). */
static enum dg_status layout_from_env(int *nchw)
{
    const char *value = getenv("DIGITS_CPU_LAYOUT");
    *nchw = 0;
    if (!value || !*value || strcmp(value, "nhwc") == 0)
        return DG_OK;
    if (strcmp(value, "nchw") == 0) {
        *nchw = 1;
        return DG_OK;
    }
    return dg_error(DG_ERR_USAGE, "DIGITS_CPU_LAYOUT=%s: expected nhwc or nchw", value);
}

static void describe(struct dg_backend *be)
{
    struct dg_cpu *cpu = be->impl;
    static const char *const requests[] = {"", ", im2col+sgemm only", ", direct kernels", ""};
    char math[64] = "";
    if (cpu->bf16)
        snprintf(math, sizeof math, ", bf16 math (%s)", cpu->bf16->name);
    /* "OpenBLAS 0.3.21": the name and version of the build string (`digits info` has it all) */
    const char *config = openblas_get_config();
    int name = 0;
    for (int words = 0; config && config[name] && words < 2; name++)
        words += config[name + 1] == ' ' || config[name + 1] == '\0';
    snprintf(be->description, sizeof be->description, "cpu: %d thread%s, %s%s%s, %.*s",
             cpu->threads, cpu->threads == 1 ? "" : "s", dg_cpu_isa_label(cpu->isa->isa),
             requests[cpu->kernels], math, config ? name : 8, config ? config : "OpenBLAS");
}

enum dg_status dg_backend_cpu_create(int threads, struct dg_backend **out)
{
    *out = NULL;
    if (threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)cores : 1;
    }
    struct dg_backend *be = calloc(1, sizeof *be);
    struct dg_cpu *cpu = calloc(1, sizeof *cpu);
    enum dg_status status;
    enum dg_cpu_isa isa;
    if (!be || !cpu) {
        status = dg_error(DG_ERR_NOMEM, "cpu backend: out of memory");
        goto fail;
    }
    cpu->threads = threads;
    if ((status = dg_cpu_isa_from_env(&isa)) != DG_OK)
        goto fail;
    cpu->isa = dg_cpu_isa_table(isa);
    if ((status = kernels_from_env(&cpu->kernels)) != DG_OK)
        goto fail;
    if ((status = layout_from_env(&cpu->nchw)) != DG_OK)
        goto fail;
    if ((status = dg_cpu_threads_create(threads, &cpu->pool)) != DG_OK)
        goto fail;
    openblas_set_num_threads(1);
    be->ops = &cpu_ops;
    be->impl = cpu;
    be->host_allocator = *dg_allocator_default();
    snprintf(be->name, sizeof be->name, "cpu");
    describe(be);
    *out = be;
    return DG_OK;
fail:
    free(cpu);
    free(be);
    return status;
}

enum dg_status dg_backend_cpu_set_kernels(struct dg_backend *be, enum dg_cpu_kernels kernels)
{
    if (!be || be->ops != &cpu_ops)
        return dg_error(DG_ERR_RUNTIME, "not a cpu backend");
    struct dg_cpu *cpu = be->impl;
    cpu->kernels = kernels;
    describe(be);
    return DG_OK;
}

enum dg_status dg_backend_cpu_set_layout(struct dg_backend *be, int nhwc)
{
    if (!be || be->ops != &cpu_ops)
        return dg_error(DG_ERR_RUNTIME, "not a cpu backend");
    struct dg_cpu *cpu = be->impl;
    cpu->nchw = !nhwc;
    return DG_OK;
}

enum dg_status dg_backend_cpu_set_isa(struct dg_backend *be, enum dg_cpu_isa isa)
{
    if (!be || be->ops != &cpu_ops)
        return dg_error(DG_ERR_RUNTIME, "not a cpu backend");
    const struct dg_cpu_isa_ops *table = dg_cpu_isa_table(isa);
    if (!table)
        return dg_error(DG_ERR_DEVICE, "cpu backend: %s kernels cannot run here (%s)",
                        dg_cpu_isa_label(isa),
                        isa < DG_CPU_ISA_COUNT ? "not built for this architecture or missing "
                                                 "from this CPU"
                                               : "no such ISA");
    struct dg_cpu *cpu = be->impl;
    cpu->isa = table;
    if (cpu->bf16 && cpu->bf16 != &dg_cpu_bf16_portable && isa != DG_CPU_ISA_AVX512)
        cpu->bf16 = NULL; /* the bf16 unit's kernels are AVX-512 ones */
    describe(be);
    return DG_OK;
}

/* The bf16 unit of a backend at its ISA; NULL with `missing` saying why where there is none. */
static const struct dg_cpu_bf16_ops *bf16_unit(const struct dg_cpu *cpu, char *missing,
                                               size_t size)
{
    const struct dg_cpu_features *f = dg_cpu_features();
#if defined(__x86_64__)
    if (f->avx512_bf16 && cpu->isa->isa == DG_CPU_ISA_AVX512)
        return &dg_cpu_bf16_avx512;
    if (f->avx512_bf16)
        snprintf(missing, size,
                 "this CPU's AVX512-BF16 unit runs with the AVX-512 kernels, and "
                 "DIGITS_CPU_ISA=%s holds them back",
                 dg_cpu_isa_name(cpu->isa->isa));
    else
        snprintf(missing, size,
                 "this CPU has no AVX512-BF16 (vdpbf16ps; Intel Cooper Lake, Sapphire Rapids and "
                 "later, AMD Zen 4 and later have it)");
#else
    (void)cpu;
    snprintf(missing, size, "this build has no bf16 kernels for this architecture%s",
             f->arm_bf16 ? " (the CPU has BF16: BFDOT/BFMMLA are not used yet)" : "");
#endif
    return NULL;
}

enum dg_status dg_backend_cpu_set_math(struct dg_backend *be, enum dg_math math)
{
    if (!be || be->ops != &cpu_ops)
        return dg_error(DG_ERR_RUNTIME, "not a cpu backend");
    struct dg_cpu *cpu = be->impl;
    if (math == DG_MATH_TF32)
        return dg_error(DG_ERR_USAGE, "--math tf32 is for CUDA; the CPU computes fp32 or bf16");
    const struct dg_cpu_bf16_ops *unit = NULL;
    if (math == DG_MATH_BF16) {
        char missing[256] = "";
        if (!(unit = bf16_unit(cpu, missing, sizeof missing)))
            return dg_error(DG_ERR_USAGE, "--math bf16: %s; use --math fp32", missing);
    }
    cpu->bf16 = unit;
    describe(be);
    return DG_OK;
}

enum dg_status dg_backend_cpu_set_bf16_portable(struct dg_backend *be)
{
    if (!be || be->ops != &cpu_ops)
        return dg_error(DG_ERR_RUNTIME, "not a cpu backend");
    struct dg_cpu *cpu = be->impl;
    cpu->bf16 = &dg_cpu_bf16_portable;
    describe(be);
    return DG_OK;
}

const char *dg_backend_cpu_bf16_unit(const struct dg_backend *be)
{
    if (!be || be->ops != &cpu_ops)
        return NULL;
    const struct dg_cpu *cpu = be->impl;
    return cpu->bf16 ? cpu->bf16->name : NULL;
}

enum dg_cpu_isa dg_backend_cpu_isa(const struct dg_backend *be)
{
    if (!be || be->ops != &cpu_ops)
        return DG_CPU_ISA_COUNT;
    const struct dg_cpu *cpu = be->impl;
    return cpu->isa->isa;
}
