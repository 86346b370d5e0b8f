/* The bf16 convolution (`--math bf16`, src/cpu/bf16.h): every pass multiplies bf16 operands and
 * accumulates in float32 with the plan's bf16 unit, on bf16 copies made while packing (the
 * float32 tensors at the interface are never changed).
 *   forward, backward data  each thread copies its image "pair-planar" (plane q: the pairs of
 *       channels 2q, 2q+1 over the padded image, row by row from NCHW, no transpose); an output
 *       is a pixel of the flattened padded plane, every tap a shift of it, and conv_plane
 *       computes CONV_COUTS channels x BLOCK outputs per call from weights packed (k, k,
 *       in pairs, outs, 2); the outputs past column w are dropped, bias and ReLU added in
 *       float32 on the way to NCHW. Backward data is the same on dy with the weights
 *       transposed and flipped.
 *   weight gradient  x (padded) and dy as flattened bf16 planes of one grid, pixels being the
 *       pairs; tiles of (input channel, ky, taps, output channels), images in groups whose lane
 *       sums are reduced and added in group order, so the result does not depend on the thread
 *       count. The bias gradient is a float32 sum of dy (dg_cpu_conv_bias_grad). */
#include "cpu/conv_internal.h"

#include <stdlib.h>
#include <string.h>

static int even_up(int c)
{
    return c + (c & 1);
}

/* Extra pixels after each plane, so that the last block's vectors read zeros. */
#define PLANE_SLACK 48

static size_t plane_stride(const struct conv_plan *p)
{
    return (size_t)2 * ((size_t)p->hp * p->wp + PLANE_SLACK);
}

/* Outputs per conv_plane call: 3 vectors of 16 pixels of the flattened padded plane; output
 * channels per call (the unit's most: 8 x 3 vectors in registers). */
#define BLOCK 48
#define CONV_COUTS 8

/* Images per group: each group's 16 lane sums are reduced, then added to the totals in group
 * order. The grouping depends on the shape alone (never on the thread count): enough images
 * for about 96 vector steps per reduction (4 for 28x28 planes, 14 for 14x14), at most 32. */
#define FCOUTS 8 /* most gradient planes per kernel call */
#define FTAPS 5  /* most taps per kernel call */
#define FACCS 24 /* couts x taps per call: the accumulators held in registers */

static int fsteps(const struct conv_plan *p)
{
    return (int)(((size_t)p->s.height * p->wp + 31) / 32);
}

static int group_images(const struct conv_plan *p)
{
    int g = (96 + fsteps(p) - 1) / fsteps(p);
    return g < 4 ? 4 : g > 32 ? 32 : g;
}

/* Output channels per call for a run of `taps` taps. */
static int fcouts(int taps)
{
    int c = FACCS / taps;
    return c > FCOUTS ? FCOUTS : c;
}

static size_t xplane(const struct conv_plan *p)
{
    return (size_t)p->hp * p->wp + PLANE_SLACK;
}

static size_t gplane(const struct conv_plan *p)
{
    return (size_t)p->s.height * p->wp + PLANE_SLACK;
}

/* Tile t: input channel, ky, a run of up to FTAPS taps kx, FCOUTS output channels. */
struct ftile {
    int ci, ky, kx0, taps, co0, couts;
};

/* Tap runs are of FTAPS (the last shorter); a kernel of k <= 5 is one run of k taps. The
 * channel blocks take fcouts() of the first run's length. */
static int fblock(const struct dg_conv_shape *s)
{
    return fcouts(s->kernel < FTAPS ? s->kernel : FTAPS);
}

static size_t ftile_count(const struct dg_conv_shape *s)
{
    int chunks = (s->kernel + FTAPS - 1) / FTAPS;
    int blocks = (s->out_channels + fblock(s) - 1) / fblock(s);
    return (size_t)s->in_channels * s->kernel * chunks * blocks;
}

static struct ftile ftile_at(const struct dg_conv_shape *s, size_t t)
{
    int k = s->kernel, chunks = (k + FTAPS - 1) / FTAPS, per = fblock(s);
    int blocks = (s->out_channels + per - 1) / per;
    struct ftile f;
    int b = (int)(t % (size_t)blocks), c = (int)(t / (size_t)blocks % (size_t)chunks);
    f.ky = (int)(t / ((size_t)blocks * chunks) % (size_t)k);
    f.ci = (int)(t / ((size_t)blocks * chunks * k));
    f.kx0 = c * FTAPS;
    f.taps = k - f.kx0 < FTAPS ? k - f.kx0 : FTAPS;
    f.co0 = b * per;
    f.couts = s->out_channels - f.co0 < per ? s->out_channels - f.co0 : per;
    return f;
}

enum dg_status dg_cpu_bf16_ensure(struct conv_plan *p)
{
    if (p->bw)
        return DG_OK;
    const struct dg_conv_shape *s = &p->s;
    int cin = s->in_channels, cout = s->out_channels, k = s->kernel;
    size_t maxc = (size_t)(cin > cout ? cin : cout);
    size_t maxc2 = (size_t)even_up((int)maxc);
    size_t t = (size_t)p->threads;
    p->b_image = maxc2 / 2 * plane_stride(p);
    /* per thread: an output tile, or the weight gradient's totals (at most all its tiles) */
    p->b_tiles = ftile_count(s) * FACCS;
    if (p->b_tiles < (size_t)CONV_COUTS * BLOCK)
        p->b_tiles = (size_t)CONV_COUTS * BLOCK;
    /* (k, k, in pairs, outs, 2), the larger of the two passes' */
    p->bw = calloc((size_t)k * k * maxc2 * maxc, sizeof(uint16_t));
    p->bx = calloc(p->b_image * t, sizeof(uint16_t));
    p->bacc = calloc(p->b_tiles * t, sizeof(float));
    p->bxp = calloc((size_t)s->batch * cin * xplane(p), sizeof(uint16_t));
    p->bgp = calloc((size_t)s->batch * cout * gplane(p), sizeof(uint16_t));
    if (!p->bw || !p->bx || !p->bacc || !p->bxp || !p->bgp)
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the bf16 workspace");
    return DG_OK;
}

/* The image `src` (c, h, w) float32 into the thread's pair-planar bf16 image: plane q holds the
 * pairs (channel 2q, channel 2q + 1; zero past the last channel) at (y + pad, x + pad). Only the
 * interior is written: the borders and the slack were zeroed when the buffer was made and stay
 * so (the same plan writes the same interior). */
static void pack_planar(const struct conv_plan *p, const float *src, int c, uint16_t *dst)
{
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)s->height * s->width, ps = plane_stride(p);
    for (int q = 0; q < (c + 1) / 2; q++)
        for (int y = 0; y < s->height; y++) {
            const float *a = src + (size_t)2 * q * hw + (size_t)y * s->width;
            uint16_t *d = dst + q * ps + (size_t)2 * ((size_t)(y + p->pad) * p->wp + p->pad);
            p->bf16->pairs(a, 2 * q + 1 < c ? a + hw : NULL, (size_t)s->width, d);
        }
}

struct bf16_job {
    const struct conv_plan *p;
    const float *in;
    const float *bias;
    float *out;
    int cin, cout, relu;
};

/* The outputs o of the flattened plane (row y = o / wp, column x = o % wp, kept where x < w),
 * the block's tile rows (c, 16*vecs) into the NCHW image `out` (channels planes of h x w), with
 * bias and ReLU. */
static void scatter(const struct conv_plan *p, const float *tile, int couts, int vecs, size_t o0,
                    size_t end, const float *bias, int relu, float *out)
{
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)s->height * s->width, wp = (size_t)p->wp, n = (size_t)16 * vecs;
    for (int c = 0; c < couts; c++) {
        const float *t = tile + (size_t)c * n;
        float b = bias ? bias[c] : 0.0f;
        float *plane = out + (size_t)c * hw;
        for (size_t o = o0; o < end;) {
            size_t y = o / wp, x = o % wp, row_end = y * wp + (size_t)s->width;
            size_t stop = row_end < end ? row_end : end;
            if (x < (size_t)s->width)
                p->bf16->store(t + (o - o0), stop - o, b, relu, plane + y * s->width + x);
            o = (y + 1) * wp;
        }
    }
}

static void bf16_conv_task(void *ctx, int thread, int threads)
{
    const struct bf16_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, h = s->height, w = s->width, pairs = (job->cin + 1) / 2;
    size_t hw = (size_t)h * w, ps = plane_stride(p);
    size_t total = (size_t)(h - 1) * p->wp + (size_t)w, blocks = (total + BLOCK - 1) / BLOCK;
    uint16_t *image = p->bx + p->b_image * (size_t)thread;
    float *tile = p->bacc + p->b_tiles * (size_t)thread;
    size_t packed = (size_t)-1, u0, u1;
    dg_cpu_split((size_t)s->batch * blocks, 1, thread, threads, &u0, &u1);
    for (size_t unit = u0; unit < u1; unit++) {
        size_t n = unit / blocks, o0 = unit % blocks * BLOCK;
        if (n != packed) {
            pack_planar(p, job->in + n * job->cin * hw, job->cin, image);
            packed = n;
        }
        size_t end = o0 + BLOCK < total ? o0 + BLOCK : total;
        int vecs = (int)((end - o0 + 15) / 16);
        /* output o reads the padded plane from pixel o on (tap (0, 0)) */
        const uint16_t *x2 = image + 2 * o0;
        float *out_image = job->out + n * job->cout * hw;
        for (int c0 = 0; c0 < job->cout; c0 += CONV_COUTS) {
            int couts = job->cout - c0 < CONV_COUTS ? job->cout - c0 : CONV_COUTS;
            p->bf16->conv_plane(x2, ps, pairs, k, p->wp, p->bw + (size_t)c0 * 2, job->cout, couts,
                                vecs, tile);
            scatter(p, tile, couts, vecs, o0, end, job->bias ? job->bias + c0 : NULL, job->relu,
                    out_image + (size_t)c0 * hw);
        }
    }
}

/* bw <- w (cout, cin, k, k) as bf16 pairs: forward (k, k, cin2/2, cout, 2), or with `flip`
 * the backward-data weights (k, k, cout2/2, cin, 2), taps flipped. */
static void pack_weights(struct conv_plan *p, const float *w, int flip)
{
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    int ins = flip ? cout : cin, outs = flip ? cin : cout;
    int pairs = even_up(ins) / 2;
    size_t ldw = (size_t)outs * 2;
    memset(p->bw, 0, sizeof(uint16_t) * (size_t)k * k * pairs * ldw);
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    uint16_t v = dg_bf16_round(w[(((size_t)co * cin + ci) * k + ky) * k + kx]);
                    int tap = flip ? (k - 1 - ky) * k + (k - 1 - kx) : ky * k + kx;
                    int i = flip ? co : ci, o = flip ? ci : co;
                    p->bw[((size_t)tap * pairs + i / 2) * ldw + (size_t)o * 2 + (i & 1)] = v;
                }
}

void dg_cpu_bf16_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                     const float *bias, float *y, int relu)
{
    pack_weights(p, w, 0);
    struct bf16_job job = {p, x, bias, y, p->s.in_channels, p->s.out_channels, relu};
    dg_cpu_threads_run(cpu->pool, bf16_conv_task, &job);
}

void dg_cpu_bf16_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                          const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    pack_weights(p, w, 1);
    struct bf16_job job = {p, dy, NULL, dx, p->s.out_channels, p->s.in_channels, 0};
    dg_cpu_threads_run(cpu->pool, bf16_conv_task, &job);
}

/* ---- weight gradient ---- */

struct bf16_filter_job {
    const struct conv_plan *p;
    const float *x, *dy;
    float *dw;
};

/* The batch as flattened bf16 planes: x padded (hp x wp), dy on the same grid (h x wp, the
 * columns past w zero). Only interiors are written; the rest was zeroed with the buffers. */
static void bf16_pack_task(void *ctx, int thread, int threads)
{
    const struct bf16_filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int cin = s->in_channels, cout = s->out_channels, h = s->height, w = s->width;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        for (int c = 0; c < cin; c++)
            for (int y = 0; y < h; y++)
                p->bf16->round(job->x + (((n * cin) + c) * h + y) * w, (size_t)w,
                               p->bxp + (n * cin + c) * xplane(p) +
                                   (size_t)(y + p->pad) * p->wp + p->pad);
        for (int c = 0; c < cout; c++)
            for (int y = 0; y < h; y++)
                p->bf16->round(job->dy + (((n * cout) + c) * h + y) * w, (size_t)w,
                               p->bgp + (n * cout + c) * gplane(p) + (size_t)y * p->wp);
    }
}

static void bf16_filter_task(void *ctx, int thread, int threads)
{
    const struct bf16_filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels;
    size_t xp = xplane(p), gp = gplane(p);
    size_t x_image = xp * cin, g_image = gp * s->out_channels;
    int steps = fsteps(p), group = group_images(p);
    size_t t0, t1;
    dg_cpu_split(ftile_count(s), 1, thread, threads, &t0, &t1);
    /* the totals of this thread's tiles, FACCS floats each */
    float *acc = p->bacc + p->b_tiles * (size_t)thread;
    memset(acc, 0, sizeof(float) * (t1 - t0) * FACCS);
    for (int g0 = 0; g0 < s->batch; g0 += group) {
        int images = s->batch - g0 < group ? s->batch - g0 : group;
        const uint16_t *xg = p->bxp + (size_t)g0 * x_image;
        const uint16_t *gg = p->bgp + (size_t)g0 * g_image;
        for (size_t t = t0; t < t1; t++) {
            struct ftile f = ftile_at(s, t);
            float part[FACCS];
            p->bf16->filter_plane(gg + (size_t)f.co0 * gp, gp, g_image,
                                  xg + (size_t)f.ci * xp + (size_t)f.ky * p->wp + f.kx0, x_image,
                                  images, steps, f.couts, f.taps, part);
            float *total = acc + (t - t0) * FACCS;
            for (int i = 0; i < f.couts * f.taps; i++)
                total[i] += part[i];
        }
    }
    for (size_t t = t0; t < t1; t++) {
        struct ftile f = ftile_at(s, t);
        const float *total = acc + (t - t0) * FACCS;
        for (int c = 0; c < f.couts; c++)
            for (int i = 0; i < f.taps; i++)
                job->dw[(((size_t)(f.co0 + c) * cin + f.ci) * k + f.ky) * k + f.kx0 + i] =
                    total[c * f.taps + i];
    }
}

void dg_cpu_bf16_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                            const float *dy, float *dw, float *db)
{
    struct bf16_filter_job job = {p, x, dy, dw};
    dg_cpu_threads_run(cpu->pool, bf16_pack_task, &job);
    dg_cpu_threads_run(cpu->pool, bf16_filter_task, &job);
    dg_cpu_conv_bias_grad(cpu, p, dy, db);
}
