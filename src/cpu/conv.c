/* "Same" convolution (stride 1, odd kernel) on the CPU, NCHW float32 at the interface.
 * Three algorithms, chosen per pass when the plan is created (dg_cpu_conv_choose) and called
 * through the plan's function pointers; the kernels come from the backend's ISA table
 * (src/cpu/isa/kernels.c, one source compiled per instruction set):
 *   generic   per image im2col (cin*k*k, h*w) + OpenBLAS sgemm, images split across threads;
 *   direct    each thread copies the images it works on into a private padded NHWC buffer
 *             (hp, wp, c); a direct register-blocked kernel computes up to 14 pixels x 32
 *             channels per call (conv_row). Backward data is the same kernel on the padded
 *             gradient with the weights transposed and flipped. The weight gradient copies the
 *             batch into NHWC once, is tiled over (ky, kx*cin + ci) x cout, its tiles split
 *             across threads, every tile summing the images in order (the result does not
 *             depend on the thread count);
 *   winograd  for 3x3 and 5x5 kernels, alpha = 6 (points 0, 1, -1, 2, -2, inf): F(4x4, 3x3)
 *             and F(2x2, 5x5) for forward and backward data, F(3x3, 4x4) and F(5x5, 2x2) for
 *             the weight gradient. Tiles of one image are processed up to 14 (28) at a time:
 *             input transform (36, tiles, c), one small GEMM per transformed position with the
 *             register-blocked kernel, output transform. Weight transforms and the final
 *             weight-gradient transform are done in double. The weight gradient sums the
 *             batch in 12 fixed slots of images, then the slots in order: like every other
 *             output, it does not depend on the thread count.
 * Buffers are sized once per plan (per family, on first use) and reused across calls. */
#include "cpu/cpu_internal.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DG_TILE_PIXELS 14
#define DG_TILE_ROWS 14
#define DG_WINO_XI 36           /* alpha * alpha */
#define DG_WINO_FILTER_CHUNK 28 /* tiles per weight-gradient chunk */
#define DG_WINO_SLOTS 12        /* weight-gradient partial sums (divisible by 2, 3, 4, 6) */

struct conv_plan;
typedef void (*conv_pass_fn)(struct dg_cpu *cpu, struct conv_plan *p, const float *in,
                             const float *w, const float *bias, float *out, int relu);
typedef void (*filter_pass_fn)(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                               const float *dy, float *dw, float *db);

struct conv_plan {
    struct dg_conv_shape s;
    const struct dg_cpu_isa_ops *isa;
    struct dg_cpu_conv_algos algos;
    conv_pass_fn fwd, bwd_data;
    filter_pass_fn bwd_filter;
    int pad;
    int hp, wp; /* padded height, width: (tile rows) * m + k - 1 with Winograd tiles */
    int threads;
    int wm;     /* Winograd tile side m (k = 3: 4, k = 5: 2), 0 for other kernels */
    int th, tw; /* Winograd tiles per column, per row */
    /* generic */
    float *col;     /* per thread (cin*k*k, h*w) */
    float *dw_part; /* per thread (cout, cin*k*k) */
    /* direct */
    float *xpad;    /* weight gradient: (batch, hp, wp, cin) */
    float *gpad;    /* weight gradient: (batch, h, w, cout) */
    float *xpriv;   /* per thread (hp, wp, max channels): one padded NHWC image */
    float *gpriv;   /* per thread (hp, wp, cout): one gradient image (weight gradient) */
    float *db_part; /* (batch, cout): per-image bias-gradient sums (Winograd weight gradient) */
    size_t priv_floats;
    float *wpack;            /* (k, k, cin, cout) forward or (k, k, cout, cin) backward data */
    float *tiles;            /* per thread: forward output tiles (14, 32); filter accumulators */
    size_t tiles_per_thread; /* floats */
    /* winograd */
    float *u;     /* (36, cin, cout) forward or (36, cout, cin) backward data */
    float *wv;    /* per thread (36, tiles, max channels): transformed inputs */
    float *wz;    /* per thread (36, tiles, max channels): products or gradient tiles */
    float *ws;    /* per slot (36, cout / 32, cin, 32): weight-gradient sums */
    double *wsum; /* (36, cout / 32, cin, 32): the slots' total */
    float *wout;  /* per thread (14 * m * m, max channels): output rows of one unit */
    size_t wv_floats, ws_floats, wout_floats;
};

/* Image slots of the Winograd weight gradient: slot j sums the images
 * [j*batch/slots, (j+1)*batch/slots) into its own S, whole slots go to threads, and the slots
 * are added in order at the end, so the result does not depend on the thread count. */
static int wino_slots(const struct conv_plan *p)
{
    return p->s.batch < DG_WINO_SLOTS ? p->s.batch : DG_WINO_SLOTS;
}

static size_t conv_kdim(const struct dg_conv_shape *s)
{
    return (size_t)s->in_channels * s->kernel * s->kernel;
}

/* Filter-gradient tiles of the direct family: (ky, first row of the k*cin slice, first cout). */
static size_t filter_tile_count(const struct dg_conv_shape *s)
{
    size_t span = (size_t)s->kernel * s->in_channels;
    size_t row_tiles = (span + DG_TILE_ROWS - 1) / DG_TILE_ROWS;
    size_t cout_tiles = ((size_t)s->out_channels + 31) / 32;
    return (size_t)s->kernel * row_tiles * cout_tiles;
}

static void filter_tile_at(const struct dg_conv_shape *s, size_t t, int *ky, int *row0, int *rows,
                           int *cout0, int *couts)
{
    int span = s->kernel * s->in_channels;
    int row_tiles = (span + DG_TILE_ROWS - 1) / DG_TILE_ROWS;
    int cout_tiles = (s->out_channels + 31) / 32;
    int c = (int)(t % (size_t)cout_tiles);
    int r = (int)(t / (size_t)cout_tiles % (size_t)row_tiles);
    *ky = (int)(t / ((size_t)cout_tiles * row_tiles));
    *row0 = r * DG_TILE_ROWS;
    *rows = span - *row0 < DG_TILE_ROWS ? span - *row0 : DG_TILE_ROWS;
    *cout0 = c * 32;
    *couts = s->out_channels - *cout0 < 32 ? s->out_channels - *cout0 : 32;
}

static void *alloc_floats(size_t count)
{
    return calloc(count ? count : 1, sizeof(float));
}

static enum dg_status ensure_generic(struct conv_plan *p)
{
    if (p->col)
        return DG_OK;
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)s->height * s->width;
    p->col = alloc_floats(conv_kdim(s) * hw * (size_t)p->threads);
    p->dw_part = alloc_floats((size_t)s->out_channels * conv_kdim(s) * (size_t)p->threads);
    if (!p->col || !p->dw_part) {
        free(p->col);
        free(p->dw_part);
        p->col = p->dw_part = NULL;
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the im2col workspace");
    }
    return DG_OK;
}

static enum dg_status ensure_direct(struct conv_plan *p)
{
    if (p->xpriv)
        return DG_OK;
    const struct dg_conv_shape *s = &p->s;
    size_t channels = (size_t)(s->in_channels > s->out_channels ? s->in_channels : s->out_channels);
    size_t tile_floats = (size_t)DG_TILE_PIXELS * 32;
    size_t acc_floats = filter_tile_count(s) * DG_TILE_ROWS * 32;
    p->tiles_per_thread = acc_floats > tile_floats ? acc_floats : tile_floats;
    p->priv_floats = (size_t)p->hp * p->wp * channels;
    p->xpriv = alloc_floats(p->priv_floats * (size_t)p->threads);
    p->gpriv = alloc_floats(p->priv_floats * (size_t)p->threads);
    p->db_part = alloc_floats((size_t)s->batch * s->out_channels);
    p->wpack = alloc_floats(conv_kdim(s) * channels);
    p->tiles = alloc_floats(p->tiles_per_thread * (size_t)p->threads);
    if (!p->xpriv || !p->gpriv || !p->db_part || !p->wpack || !p->tiles) {
        free(p->xpriv);
        free(p->gpriv);
        free(p->db_part);
        free(p->wpack);
        free(p->tiles);
        p->xpriv = p->gpriv = p->db_part = p->wpack = p->tiles = NULL;
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the packed images");
    }
    return DG_OK;
}

/* The direct weight gradient's NHWC copies of the whole batch. */
static enum dg_status ensure_direct_filter(struct conv_plan *p)
{
    enum dg_status status = ensure_direct(p);
    if (status != DG_OK || p->xpad)
        return status;
    const struct dg_conv_shape *s = &p->s;
    p->xpad = alloc_floats((size_t)s->batch * p->hp * p->wp * s->in_channels);
    p->gpad = alloc_floats((size_t)s->batch * s->height * s->width * s->out_channels);
    if (!p->xpad || !p->gpad) {
        free(p->xpad);
        free(p->gpad);
        p->xpad = p->gpad = NULL;
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the packed batch");
    }
    return DG_OK;
}

/* The direct kernels compute blocks of 16 or 32 output channels. */
static int direct_fits(int couts)
{
    return couts % 16 == 0;
}

/* Winograd applies to 3x3 and 5x5 kernels with 16-multiple input and 32-multiple output
 * channels. */
static int winograd_fits(int kernel, int in_channels, int out_channels)
{
    return (kernel == 3 || kernel == 5) && in_channels % 16 == 0 && out_channels % 32 == 0;
}

static enum dg_cpu_conv_algo choose(enum dg_cpu_kernels kernels, int kernel, int cin, int cout)
{
    if (kernels != DG_CPU_KERNELS_GENERIC && kernels != DG_CPU_KERNELS_DIRECT &&
        winograd_fits(kernel, cin, cout))
        return DG_CPU_CONV_WINOGRAD;
    if (kernels != DG_CPU_KERNELS_GENERIC && direct_fits(cout))
        return DG_CPU_CONV_DIRECT;
    return DG_CPU_CONV_GENERIC;
}

struct dg_cpu_conv_algos dg_cpu_conv_choose(enum dg_cpu_kernels kernels,
                                            const struct dg_conv_shape *shape)
{
    int k = shape->kernel, cin = shape->in_channels, cout = shape->out_channels;
    struct dg_cpu_conv_algos a;
    a.fwd = choose(kernels, k, cin, cout);
    a.bwd_data = choose(kernels, k, cout, cin);
    a.bwd_filter = choose(kernels, k, cin, cout);
    return a;
}

const char *dg_cpu_conv_algo_name(enum dg_cpu_conv_algo algo)
{
    switch (algo) {
    case DG_CPU_CONV_WINOGRAD:
        return "Winograd";
    case DG_CPU_CONV_DIRECT:
        return "direct";
    default:
        return "im2col+sgemm";
    }
}

static enum dg_status ensure_winograd(struct conv_plan *p)
{
    enum dg_status status = ensure_direct(p);
    if (status != DG_OK || p->u)
        return status;
    const struct dg_conv_shape *s = &p->s;
    size_t channels = (size_t)(s->in_channels > s->out_channels ? s->in_channels : s->out_channels);
    size_t t = (size_t)p->threads;
    p->wv_floats = (size_t)DG_WINO_XI * DG_WINO_FILTER_CHUNK * channels;
    p->ws_floats = (size_t)DG_WINO_XI * s->in_channels * s->out_channels;
    p->u = alloc_floats(p->ws_floats);
    p->wv = alloc_floats(p->wv_floats * t);
    p->wz = alloc_floats(p->wv_floats * t);
    p->ws = alloc_floats(p->ws_floats * (size_t)wino_slots(p));
    p->wsum = calloc(p->ws_floats, sizeof(double));
    p->wout_floats = (size_t)DG_TILE_PIXELS * p->wm * p->wm * channels;
    p->wout = alloc_floats(p->wout_floats * t);
    if (!p->u || !p->wv || !p->wz || !p->ws || !p->wsum || !p->wout) {
        free(p->u);
        free(p->wv);
        free(p->wz);
        free(p->ws);
        free(p->wsum);
        free(p->wout);
        p->u = p->wv = p->wz = p->ws = p->wout = NULL;
        p->wsum = NULL;
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the Winograd workspace");
    }
    return DG_OK;
}

void dg_cpu_conv_plan_free(struct dg_backend *be, void *plan)
{
    (void)be;
    struct conv_plan *p = plan;
    if (!p)
        return;
    free(p->col);
    free(p->dw_part);
    free(p->xpad);
    free(p->gpad);
    free(p->xpriv);
    free(p->gpriv);
    free(p->db_part);
    free(p->wpack);
    free(p->tiles);
    free(p->u);
    free(p->wv);
    free(p->wz);
    free(p->ws);
    free(p->wsum);
    free(p->wout);
    free(p);
}

/* ---- shared pieces ---- */

/* db[c] = sum over images and pixels of dy[n][c]: per (n, c) plane a sum in 8 interleaved
 * partial sums, planes added in image order. */
struct bias_grad_job {
    const float *dy;
    float *db;
    int batch, channels;
    size_t plane;
};

static void bias_grad_task(void *ctx, int thread, int threads)
{
    const struct bias_grad_job *job = ctx;
    size_t c0, c1;
    dg_cpu_split((size_t)job->channels, 1, thread, threads, &c0, &c1);
    for (size_t c = c0; c < c1; c++) {
        float total = 0.0f;
        for (int n = 0; n < job->batch; n++) {
            const float *v = job->dy + ((size_t)n * job->channels + c) * job->plane;
            float part[8] = {0};
            size_t i = 0;
            for (; i + 8 <= job->plane; i += 8)
                for (int l = 0; l < 8; l++)
                    part[l] += v[i + l];
            for (; i < job->plane; i++)
                part[0] += v[i];
            total += ((part[0] + part[1]) + (part[2] + part[3])) +
                     ((part[4] + part[5]) + (part[6] + part[7]));
        }
        job->db[c] = total;
    }
}

static void bias_grad(struct dg_cpu *cpu, const struct conv_plan *p, const float *dy, float *db)
{
    struct bias_grad_job job = {dy, db, p->s.batch, p->s.out_channels,
                                (size_t)p->s.height * p->s.width};
    dg_cpu_pool_run(cpu->pool, bias_grad_task, &job);
}

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

/* ---- direct family ---- */

/* dst (hp, wp, c) NHWC <- src (c, h, w) placed at row `pad`, column `pad`; the rest zero.
 * Channels that are a multiple of 16 go through the ISA's blocked transpose. */
static void pack_padded(const struct dg_cpu_isa_ops *isa, const float *src, int c, int h, int w, int pad, int hp, int wp, float *dst)
{
    size_t row = (size_t)wp * c;
    size_t plane = (size_t)h * w;
    memset(dst, 0, sizeof(float) * row * pad);
    memset(dst + row * (size_t)(pad + h), 0, sizeof(float) * row * (size_t)(hp - pad - h));
    for (int y = 0; y < h; y++) {
        float *out = dst + row * (size_t)(y + pad);
        memset(out, 0, sizeof(float) * (size_t)pad * c);
        memset(out + (size_t)(pad + w) * c, 0, sizeof(float) * (size_t)(wp - pad - w) * c);
        out += (size_t)pad * c;
        if (c % 16 == 0) {
            isa->to_nhwc(src + (size_t)y * w, plane, c, w, out);
            continue;
        }
        for (int ch = 0; ch < c; ch++) {
            const float *in = src + ch * plane + (size_t)y * w;
            for (int x = 0; x < w; x++)
                out[(size_t)x * c + ch] = in[x];
        }
    }
}

/* dst (h, w, c) NHWC <- src (c, h, w). */
static void pack_nhwc(const struct dg_cpu_isa_ops *isa, const float *src, int c, int h, int w,
                      float *dst)
{
    pack_padded(isa, src, c, h, w, 0, h, w, dst);
}

/* The weight gradient's batch copies: xpad <- x padded, gpad <- dy in NHWC. */
struct pack_job {
    struct conv_plan *p;
    const float *x, *dy;
};

static void pack_task(void *ctx, int thread, int threads)
{
    const struct pack_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)s->height * s->width, padded = (size_t)p->hp * p->wp;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        pack_padded(p->isa, job->x + n * s->in_channels * hw, s->in_channels, s->height, s->width, p->pad,
                    p->hp, p->wp, p->xpad + n * padded * s->in_channels);
        pack_nhwc(p->isa, job->dy + n * s->out_channels * hw, s->out_channels, s->height, s->width,
                  p->gpad + n * hw * s->out_channels);
    }
}

/* Rows (image, y) of a direct convolution of the NCHW batch `in` (cin channels), copied image
 * by image into the thread's padded buffer, with packed weights (k, k, cin, cout) into NCHW
 * `out`. */
struct direct_job {
    const struct conv_plan *p;
    const float *in;
    const float *wpack;
    const float *bias;
    float *out;
    int cin, cout, relu;
};

static void direct_task(void *ctx, int thread, int threads)
{
    const struct direct_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, h = s->height, w = s->width;
    size_t row_stride = (size_t)p->wp * job->cin;
    size_t hw = (size_t)h * w;
    float *tile = p->tiles + p->tiles_per_thread * (size_t)thread;
    float *image = p->xpriv + p->priv_floats * (size_t)thread;
    size_t packed = (size_t)-1;
    size_t r0, r1;
    dg_cpu_split((size_t)s->batch * h, 1, thread, threads, &r0, &r1);
    for (size_t unit = r0; unit < r1; unit++) {
        size_t n = unit / (size_t)h;
        int y = (int)(unit % (size_t)h);
        if (n != packed) {
            pack_padded(p->isa, job->in + n * job->cin * hw, job->cin, h, w, p->pad, p->hp, p->wp, image);
            packed = n;
        }
        const float *row = image + (size_t)y * row_stride;
        float *out_image = job->out + n * job->cout * hw + (size_t)y * w;
        for (int c0 = 0; c0 < job->cout; c0 += 32) {
            int couts = job->cout - c0 < 32 ? job->cout - c0 : 32;
            for (int x0 = 0; x0 < w; x0 += DG_TILE_PIXELS) {
                int pixels = w - x0 < DG_TILE_PIXELS ? w - x0 : DG_TILE_PIXELS;
                p->isa->conv_row(row + (size_t)x0 * job->cin, row_stride, job->cin, k,
                                       job->wpack + c0, job->cout, couts, pixels,
                                       job->bias ? job->bias + c0 : NULL, job->relu, tile);
                p->isa->from_nhwc(tile, couts, pixels, out_image + (size_t)c0 * hw + x0, hw);
            }
        }
    }
}

struct filter_job {
    const struct conv_plan *p;
    const float *x, *dy;
    float *dw, *db;
};

static void filter_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    size_t row_stride = (size_t)p->wp * cin;
    size_t image_stride = (size_t)p->hp * row_stride;
    size_t hw = (size_t)s->height * s->width;
    float *acc = p->tiles + p->tiles_per_thread * (size_t)thread;
    size_t t0, t1;
    dg_cpu_split(filter_tile_count(s), 1, thread, threads, &t0, &t1);
    memset(acc, 0, sizeof(float) * (t1 - t0) * DG_TILE_ROWS * 32);
    for (int n = 0; n < s->batch; n++) {
        const float *xp = p->xpad + (size_t)n * image_stride;
        const float *g = p->gpad + (size_t)n * hw * cout;
        for (size_t t = t0; t < t1; t++) {
            int ky, row0, rows, cout0, couts;
            filter_tile_at(s, t, &ky, &row0, &rows, &cout0, &couts);
            p->isa->filter_tile(xp + (size_t)ky * row_stride + row0, row_stride, cin,
                                      g + cout0, cout, s->height, s->width, rows, couts,
                                      acc + (t - t0) * DG_TILE_ROWS * 32);
        }
    }
    for (size_t t = t0; t < t1; t++) {
        int ky, row0, rows, cout0, couts;
        filter_tile_at(s, t, &ky, &row0, &rows, &cout0, &couts);
        const float *tile = acc + (t - t0) * DG_TILE_ROWS * 32;
        for (int r = 0; r < rows; r++) {
            int kx = (row0 + r) / cin, ci = (row0 + r) % cin;
            for (int c = 0; c < couts; c++)
                job->dw[(((size_t)(cout0 + c) * cin + ci) * k + ky) * k + kx] = tile[r * couts + c];
        }
    }
}

/* ---- winograd family ---- */

/* E_n[j][k]: row j of the evaluation of a degree < n polynomial at the points 0, 1, -1, 2, -2
 * (coefficient k times p_j^k) and at infinity (its last coefficient). */
static double wino_eval(int j, int k, int n)
{
    static const double points[5] = {0.0, 1.0, -1.0, 2.0, -2.0};
    if (j == 5)
        return k == n - 1 ? 1.0 : 0.0;
    double v = 1.0;
    for (int i = 0; i < k; i++)
        v *= points[j];
    return v;
}

/* Row scales of G = diag(scale) E_k that keep B^T integral (1 / prod of point differences). */
static const double wino_scale[6] = {1.0 / 4, 1.0 / 6, 1.0 / 6, 1.0 / 24, 1.0 / 24, 1.0};

struct wino_weights_job {
    const struct conv_plan *p;
    const float *w;
    int flip; /* backward data: U[xi][co][ci] of the flipped kernel */
};

/* U[xi][row][col] = (G g G^T)[xi] in double, g the kernel of (row, col): forward rows are
 * input channels, columns output channels; backward data the other way round, flipped. The
 * kernels of one row are gathered (k, k, cols) into the thread's tile buffer first. */
static void wino_weights_task(void *ctx, int thread, int threads)
{
    const struct wino_weights_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    int rows = job->flip ? cout : cin, cols = job->flip ? cin : cout;
    double g[6 * 5];
    for (int i = 0; i < 6; i++)
        for (int a = 0; a < k; a++)
            g[i * k + a] = wino_scale[i] * wino_eval(i, a, k);
    float *gathered = p->wout + p->wout_floats * (size_t)thread;
    size_t r0, r1;
    dg_cpu_split((size_t)rows, 1, thread, threads, &r0, &r1);
    for (size_t row = r0; row < r1; row++) {
        for (int col = 0; col < cols; col++) {
            int co = job->flip ? (int)row : col, ci = job->flip ? col : (int)row;
            const float *kernel = job->w + ((size_t)co * cin + ci) * k * k;
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++) {
                    int from = job->flip ? (k - 1 - a) * k + (k - 1 - b) : a * k + b;
                    gathered[(size_t)(a * k + b) * cols + col] = kernel[from];
                }
        }
        p->isa->wino_weights(g, k, gathered, cols, p->u + row * cols, (size_t)rows * cols);
    }
}

static void wino_weights(struct dg_cpu *cpu, const struct conv_plan *p, const float *w, int flip)
{
    struct wino_weights_job job = {p, w, flip};
    dg_cpu_pool_run(cpu->pool, wino_weights_task, &job);
}

/* Work units of the Winograd forward pass: whole tile rows of one image (as many as fit in 14
 * tiles, spread evenly), or segments of at most 14 tiles of one tile row. */
struct wino_units {
    int rows;     /* tile rows per unit */
    int groups;   /* row groups per image */
    int segments; /* column segments per tile row */
};

static struct wino_units wino_units_of(const struct conv_plan *p)
{
    struct wino_units u;
    int most = p->tw >= DG_TILE_PIXELS ? 1 : DG_TILE_PIXELS / p->tw;
    u.groups = (p->th + most - 1) / most;
    u.rows = (p->th + u.groups - 1) / u.groups;
    u.segments = (p->tw + DG_TILE_PIXELS - 1) / DG_TILE_PIXELS;
    return u;
}

/* Forward (or backward data) over tiles: in NCHW (batch, cin, h, w), copied image by image
 * into the thread's padded NHWC buffer; U from wino_weights; out NCHW (batch, cout, h, w).
 * Uses direct_job's fields. Per unit: input transforms V (36, tiles, cin), products
 * M (36, cout / 32, 14, 32), output tiles gathered into NHWC rows (rows*m, cols*m, cout), then
 * transposed into NCHW. */
static void wino_conv_task(void *ctx, int thread, int threads)
{
    const struct direct_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int m = p->wm, cin = job->cin, cout = job->cout, h = s->height, w = s->width;
    size_t row_stride = (size_t)p->wp * cin;
    size_t hw = (size_t)h * w;
    size_t xi_v = (size_t)DG_TILE_PIXELS * cin, xi_m = (size_t)DG_TILE_PIXELS * cout;
    float *v = p->wv + p->wv_floats * (size_t)thread;
    float *prod = p->wz + p->wv_floats * (size_t)thread;
    float *rows_out = p->wout + p->wout_floats * (size_t)thread;
    float *image = p->xpriv + p->priv_floats * (size_t)thread;
    size_t packed = (size_t)-1;
    struct wino_units units = wino_units_of(p);
    size_t per_image = (size_t)units.groups * units.segments;
    size_t u0, u1;
    dg_cpu_split((size_t)s->batch * per_image, 1, thread, threads, &u0, &u1);
    for (size_t unit = u0; unit < u1; unit++) {
        size_t n = unit / per_image;
        int group = (int)(unit % per_image / (size_t)units.segments);
        int segment = (int)(unit % (size_t)units.segments);
        int tr0 = group * units.rows, tc0 = segment * DG_TILE_PIXELS;
        int rows = p->th - tr0 < units.rows ? p->th - tr0 : units.rows;
        int cols = p->tw - tc0 < DG_TILE_PIXELS ? p->tw - tc0 : DG_TILE_PIXELS;
        int count = rows * cols;
        if (n != packed) {
            pack_padded(p->isa, job->in + n * cin * hw, cin, h, w, p->pad, p->hp, p->wp, image);
            packed = n;
        }
        for (int t = 0; t < count; t++) {
            int tr = tr0 + t / cols, tc = tc0 + t % cols;
            p->isa->wino_input(image + (size_t)tr * m * row_stride + (size_t)tc * m * cin,
                                     row_stride, cin, v + (size_t)t * cin, xi_v);
        }
        for (int xi = 0; xi < DG_WINO_XI; xi++)
            for (int co = 0; co < cout; co += 32)
                p->isa->conv_row(v + xi * xi_v, 0, cin, 1,
                                       job->wpack + (size_t)xi * cin * cout + co, cout, 32, count,
                                       NULL, 0, prod + xi * xi_m + (size_t)co * DG_TILE_PIXELS);
        size_t out_row = (size_t)cols * m * cout;
        for (int t = 0; t < count; t++) {
            float *dst =
                rows_out + (size_t)(t / cols) * m * out_row + (size_t)(t % cols) * m * cout;
            for (int co = 0; co < cout; co += 16)
                p->isa->wino_output(
                    m, prod + (size_t)(co / 32) * 32 * DG_TILE_PIXELS + (size_t)t * 32 + co % 32,
                    xi_m, job->bias ? job->bias + co : NULL, job->relu, dst + co, out_row,
                    (size_t)cout);
        }
        int y0 = tr0 * m, x0 = tc0 * m;
        int valid_cols = w - x0 < cols * m ? w - x0 : cols * m;
        for (int y = y0; y < y0 + rows * m && y < h; y++)
            p->isa->from_nhwc(rows_out + (size_t)(y - y0) * out_row, cout, valid_cols,
                                    job->out + n * cout * hw + (size_t)y * w + x0, hw);
    }
}

/* Split of `total` rows into blocks of at most DG_TILE_ROWS, as even as possible. */
static void row_block(int total, int block, int *first, int *rows)
{
    int blocks = (total + DG_TILE_ROWS - 1) / DG_TILE_ROWS;
    *first = total * block / blocks;
    *rows = total * (block + 1) / blocks - *first;
}

/* S[slot][xi][co/32][ci][32] = sum over the slot's tiles of V[xi][t][ci] Z[xi][t][co], tiles
 * taken up to 28 at a time from one image. The thread that handles an image also sums its
 * gradient per channel into db_part[n]. */
static void wino_filter_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int m = p->wm, cin = s->in_channels, cout = s->out_channels, h = s->height, w = s->width;
    size_t hw = (size_t)h * w;
    size_t row_stride = (size_t)p->wp * cin;
    size_t grow = (size_t)p->tw * m * cout;
    size_t xi_v = (size_t)DG_WINO_FILTER_CHUNK * cin, xi_z = (size_t)DG_WINO_FILTER_CHUNK * cout;
    float *v = p->wv + p->wv_floats * (size_t)thread;
    float *z = p->wz + p->wv_floats * (size_t)thread;
    float *image = p->xpriv + p->priv_floats * (size_t)thread;
    float *grad = p->gpriv + p->priv_floats * (size_t)thread;
    int ci_blocks = (cin + DG_TILE_ROWS - 1) / DG_TILE_ROWS;
    size_t tiles = (size_t)p->th * p->tw;
    int slots = wino_slots(p);
    size_t j0, j1;
    dg_cpu_split((size_t)slots, 1, thread, threads, &j0, &j1);
    for (size_t slot = j0; slot < j1; slot++) {
        float *sums = p->ws + p->ws_floats * slot;
        memset(sums, 0, sizeof(float) * p->ws_floats);
        size_t n0 = slot * (size_t)s->batch / (size_t)slots;
        size_t n1 = (slot + 1) * (size_t)s->batch / (size_t)slots;
        for (size_t n = n0; n < n1; n++) {
            pack_padded(p->isa, job->x + n * cin * hw, cin, h, w, p->pad, p->hp, p->wp, image);
            pack_padded(p->isa, job->dy + n * cout * hw, cout, h, w, 0, p->th * m, p->tw * m, grad);
            p->isa->channel_sums(grad, (size_t)p->th * m * p->tw * m, cout,
                                       p->db_part + n * cout);
            for (size_t q0 = 0; q0 < tiles; q0 += DG_WINO_FILTER_CHUNK) {
                int count =
                    tiles - q0 < DG_WINO_FILTER_CHUNK ? (int)(tiles - q0) : DG_WINO_FILTER_CHUNK;
                for (int t = 0; t < count; t++) {
                    int tr = (int)((q0 + (size_t)t) / (size_t)p->tw);
                    int tc = (int)((q0 + (size_t)t) % (size_t)p->tw);
                    p->isa->wino_input(image + (size_t)tr * m * row_stride +
                                                 (size_t)tc * m * cin,
                                             row_stride, cin, v + (size_t)t * cin, xi_v);
                    p->isa->wino_grad(m, grad + (size_t)tr * m * grow + (size_t)tc * m * cout,
                                            grow, cout, z + (size_t)t * cout, xi_z);
                }
                for (int xi = 0; xi < DG_WINO_XI; xi++)
                    for (int co = 0; co < cout; co += 32)
                        for (int b = 0; b < ci_blocks; b++) {
                            int ci0, rows;
                            row_block(cin, b, &ci0, &rows);
                            p->isa->filter_tile(v + xi * xi_v + ci0, 0, cin,
                                                      z + xi * xi_z + co, cout, 1, count, rows, 32,
                                                      sums + (size_t)xi * cin * cout +
                                                          (size_t)co * cin + (size_t)ci0 * 32);
                        }
            }
        }
    }
}

/* db[co] = sum over images of db_part[n][co], in image order. */
static void wino_bias_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    size_t c0, c1;
    dg_cpu_split((size_t)p->s.out_channels, 1, thread, threads, &c0, &c1);
    for (size_t c = c0; c < c1; c++) {
        float sum = 0.0f;
        for (int n = 0; n < p->s.batch; n++)
            sum += p->db_part[(size_t)n * p->s.out_channels + c];
        job->db[c] = sum;
    }
}

/* wsum = the sum of the slots' S in slot order, in double (one streaming pass, so that the
 * transform below reads one L2-sized buffer instead of every slot). */
static void wino_slot_sum_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    int slots = wino_slots(p);
    size_t i0, i1;
    dg_cpu_split(p->ws_floats, 64, thread, threads, &i0, &i1);
    for (size_t i = i0; i < i1; i++)
        p->wsum[i] = p->ws[i];
    for (int slot = 1; slot < slots; slot++) {
        const float *part = p->ws + p->ws_floats * (size_t)slot;
        for (size_t i = i0; i < i1; i++)
            p->wsum[i] += part[i];
    }
}

/* dw[co][ci] = A^T (scale scale^T .* wsum) A, in double. */
static void wino_filter_out_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    double at[5][6];
    for (int y = 0; y < k; y++)
        for (int i = 0; i < 6; i++)
            at[y][i] = wino_eval(i, y, k);
    size_t r0, r1;
    dg_cpu_split((size_t)cout * cin, 1, thread, threads, &r0, &r1);
    for (size_t pair = r0; pair < r1; pair++) {
        int co = (int)(pair / (size_t)cin), ci = (int)(pair % (size_t)cin);
        size_t offset = (size_t)(co / 32) * 32 * cin + (size_t)ci * 32 + (size_t)(co % 32);
        double sum[36], half[5][6];
        for (int xi = 0; xi < DG_WINO_XI; xi++)
            sum[xi] =
                p->wsum[(size_t)xi * cin * cout + offset] * wino_scale[xi / 6] * wino_scale[xi % 6];
        for (int y = 0; y < k; y++)
            for (int j = 0; j < 6; j++) {
                double acc = 0.0;
                for (int i = 0; i < 6; i++)
                    acc += at[y][i] * sum[i * 6 + j];
                half[y][j] = acc;
            }
        float *out = job->dw + pair * k * k;
        for (int y = 0; y < k; y++)
            for (int x = 0; x < k; x++) {
                double acc = 0.0;
                for (int j = 0; j < 6; j++)
                    acc += half[y][j] * at[x][j];
                out[y * k + x] = (float)acc;
            }
    }
}

/* ---- the passes of each algorithm ---- */

static void direct_pack_weights(struct conv_plan *p, const float *w, int flip)
{
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    float v = w[(((size_t)co * cin + ci) * k + ky) * k + kx];
                    if (flip)
                        p->wpack[((size_t)((k - 1 - ky) * k + (k - 1 - kx)) * cout + co) * cin +
                                 ci] = v;
                    else
                        p->wpack[((size_t)(ky * k + kx) * cin + ci) * cout + co] = v;
                }
}

static void fwd_winograd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                         const float *bias, float *y, int relu)
{
    wino_weights(cpu, p, w, 0);
    struct direct_job job = {p, x, p->u, bias, y, p->s.in_channels, p->s.out_channels, relu};
    dg_cpu_pool_run(cpu->pool, wino_conv_task, &job);
}

static void fwd_direct(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, int relu)
{
    direct_pack_weights(p, w, 0);
    struct direct_job job = {p, x, p->wpack, bias, y, p->s.in_channels, p->s.out_channels, relu};
    dg_cpu_pool_run(cpu->pool, direct_task, &job);
}

static void fwd_generic(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                        const float *bias, float *y, int relu)
{
    struct conv_job job = {p, x, w, bias, NULL, y, NULL, NULL, relu};
    dg_cpu_pool_run(cpu->pool, generic_fwd_task, &job);
}

static void bwd_data_winograd(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                              const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    wino_weights(cpu, p, w, 1);
    struct direct_job job = {p, dy, p->u, NULL, dx, p->s.out_channels, p->s.in_channels, 0};
    dg_cpu_pool_run(cpu->pool, wino_conv_task, &job);
}

static void bwd_data_direct(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                            const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    direct_pack_weights(p, w, 1);
    struct direct_job job = {p, dy, p->wpack, NULL, dx, p->s.out_channels, p->s.in_channels, 0};
    dg_cpu_pool_run(cpu->pool, direct_task, &job);
}

static void bwd_data_generic(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                             const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    struct conv_job job = {p, NULL, w, NULL, dy, NULL, dx, NULL, 0};
    dg_cpu_pool_run(cpu->pool, generic_bwd_data_task, &job);
}

static void bwd_filter_winograd(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                                const float *dy, float *dw, float *db)
{
    struct filter_job job = {p, x, dy, dw, db};
    dg_cpu_pool_run(cpu->pool, wino_filter_task, &job);
    dg_cpu_pool_run(cpu->pool, wino_slot_sum_task, &job);
    dg_cpu_pool_run(cpu->pool, wino_filter_out_task, &job);
    dg_cpu_pool_run(cpu->pool, wino_bias_task, &job);
}

static void bwd_filter_direct(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                              const float *dy, float *dw, float *db)
{
    struct pack_job pack = {p, x, dy};
    dg_cpu_pool_run(cpu->pool, pack_task, &pack);
    struct filter_job job = {p, x, dy, dw, db};
    dg_cpu_pool_run(cpu->pool, filter_task, &job);
    bias_grad(cpu, p, dy, db);
}

static void bwd_filter_generic(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                               const float *dy, float *dw, float *db)
{
    struct conv_job job = {p, x, NULL, NULL, dy, NULL, NULL, dw, 0};
    dg_cpu_pool_run(cpu->pool, generic_bwd_filter_task, &job);
    dg_cpu_pool_run(cpu->pool, generic_reduce_task, &job);
    bias_grad(cpu, p, dy, db);
}

/* ---- plans ---- */

static enum dg_status plan_workspaces(struct conv_plan *p)
{
    const struct dg_cpu_conv_algos *a = &p->algos;
    enum dg_status status = DG_OK;
    int any_generic = a->fwd == DG_CPU_CONV_GENERIC || a->bwd_data == DG_CPU_CONV_GENERIC ||
                      a->bwd_filter == DG_CPU_CONV_GENERIC;
    int any_winograd = a->fwd == DG_CPU_CONV_WINOGRAD || a->bwd_data == DG_CPU_CONV_WINOGRAD ||
                       a->bwd_filter == DG_CPU_CONV_WINOGRAD;
    int any_direct = a->fwd == DG_CPU_CONV_DIRECT || a->bwd_data == DG_CPU_CONV_DIRECT;
    if (any_generic && (status = ensure_generic(p)) != DG_OK)
        return status;
    if (any_winograd && (status = ensure_winograd(p)) != DG_OK)
        return status;
    if (any_direct && (status = ensure_direct(p)) != DG_OK)
        return status;
    if (a->bwd_filter == DG_CPU_CONV_DIRECT && (status = ensure_direct_filter(p)) != DG_OK)
        return status;
    return DG_OK;
}

enum dg_status dg_cpu_conv_plan_create(struct dg_backend *be, const struct dg_conv_shape *shape,
                                       void **plan)
{
    static const conv_pass_fn fwd_of[3] = {fwd_generic, fwd_direct, fwd_winograd};
    static const conv_pass_fn bwd_data_of[3] = {bwd_data_generic, bwd_data_direct,
                                                bwd_data_winograd};
    static const filter_pass_fn bwd_filter_of[3] = {bwd_filter_generic, bwd_filter_direct,
                                                    bwd_filter_winograd};
    struct dg_cpu *cpu = be->impl;
    *plan = NULL;
    if (shape->batch < 1 || shape->in_channels < 1 || shape->out_channels < 1 ||
        shape->height < 1 || shape->width < 1 || shape->kernel < 1 || shape->kernel % 2 == 0)
        return dg_error(DG_ERR_RUNTIME,
                        "cpu conv: bad shape batch %d, channels %d -> %d, %dx%d, kernel %d",
                        shape->batch, shape->in_channels, shape->out_channels, shape->height,
                        shape->width, shape->kernel);
    struct conv_plan *p = calloc(1, sizeof *p);
    if (!p)
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for a plan");
    p->s = *shape;
    p->isa = cpu->isa;
    p->pad = shape->kernel / 2;
    p->threads = cpu->threads;
    p->wm = shape->kernel == 3 ? 4 : shape->kernel == 5 ? 2 : 0;
    if (p->wm) {
        p->th = (shape->height + p->wm - 1) / p->wm;
        p->tw = (shape->width + p->wm - 1) / p->wm;
        p->hp = p->th * p->wm + shape->kernel - 1;
        p->wp = p->tw * p->wm + shape->kernel - 1;
    } else {
        p->hp = shape->height + 2 * p->pad;
        p->wp = shape->width + 2 * p->pad;
    }
    p->algos = dg_cpu_conv_choose(cpu->kernels, shape);
    p->fwd = fwd_of[p->algos.fwd];
    p->bwd_data = bwd_data_of[p->algos.bwd_data];
    p->bwd_filter = bwd_filter_of[p->algos.bwd_filter];
    enum dg_status status = plan_workspaces(p);
    if (status != DG_OK) {
        dg_cpu_conv_plan_free(be, p);
        return status;
    }
    *plan = p;
    return DG_OK;
}

void dg_cpu_conv_describe(struct dg_backend *be, const struct dg_conv_shape *shape,
                           int with_bwd_data, char *out, size_t size)
{
    struct dg_cpu *cpu = be->impl;
    struct dg_cpu_conv_algos a = dg_cpu_conv_choose(cpu->kernels, shape);
    const char *fwd = dg_cpu_conv_algo_name(a.fwd);
    int same_data = !with_bwd_data || a.bwd_data == a.fwd;
    if (same_data && a.bwd_filter == a.fwd)
        snprintf(out, size, "%s", fwd);
    else if (same_data)
        snprintf(out, size, "%s (bwd-filter %s)", fwd, dg_cpu_conv_algo_name(a.bwd_filter));
    else
        snprintf(out, size, "%s (bwd-data %s, bwd-filter %s)", fwd,
                 dg_cpu_conv_algo_name(a.bwd_data), dg_cpu_conv_algo_name(a.bwd_filter));
}

/* ---- the ops ---- */

enum dg_status dg_cpu_conv_fwd(struct dg_backend *be, void *plan, const float *x, const float *w,
                               const float *bias, float *y, int relu)
{
    struct conv_plan *p = plan;
    p->fwd(be->impl, p, x, w, bias, y, relu != 0);
    return DG_OK;
}

enum dg_status dg_cpu_conv_bwd_data(struct dg_backend *be, void *plan, const float *dy,
                                    const float *w, float *dx)
{
    struct conv_plan *p = plan;
    p->bwd_data(be->impl, p, dy, w, NULL, dx, 0);
    return DG_OK;
}

enum dg_status dg_cpu_conv_bwd_filter(struct dg_backend *be, void *plan, const float *x,
                                      const float *dy, float *dw, float *db)
{
    struct conv_plan *p = plan;
    p->bwd_filter(be->impl, p, x, dy, dw, db);
    return DG_OK;
}
