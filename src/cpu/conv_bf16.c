/* The bf16 convolution (`--math bf16`, src/cpu/bf16.h): every pass multiplies bf16 operands and
 * accumulates in float32 with the plan's bf16 unit, on bf16 copies made while packing (the
 * float32 tensors at the interface are never changed).
 *   forward, backward data  the direct scheme of conv_direct.c: each thread copies its image
 *       into a padded NHWC float32 buffer, rounds it to bf16 with the channels padded to an even
 *       count (channel pairs are the dot product's pairs), and conv_row computes up to 14
 *       pixels x 32 channels per call from weights packed (k, k, cin2/2, cout16, 2), output
 *       channels padded to a multiple of 16 with zeros; bias and ReLU in float32 on the way out.
 *       Backward data is the same on the gradient with the weights transposed and flipped.
 *   weight gradient  the sum runs over pixels, so pixels are the pairs: the batch is copied as
 *       "sliding pairs" xs (hp, wp, cin, 2) = (x[y][x][c], x[y][x+1][c]) and the gradient as
 *       gs (h, w/2 rounded up, cout16, 2) = (dy[y][2j][c], dy[y][2j+1][c]) (an odd last pixel
 *       paired with zero); tiles of (ky, kx*cin + ci) x cout as in the direct family, each
 *       summing the images in order, so the result does not depend on the thread count. The bias
 *       gradient is a float32 sum of dy (dg_cpu_conv_bias_grad). */
#include "cpu/conv_internal.h"

#include <stdlib.h>
#include <string.h>

static int even_up(int c)
{
    return c + (c & 1);
}

static int pad16(int c)
{
    return (c + 15) / 16 * 16;
}

enum dg_status dg_cpu_bf16_ensure(struct conv_plan *p)
{
    if (p->bw)
        return DG_OK;
    const struct dg_conv_shape *s = &p->s;
    int cin = s->in_channels, cout = s->out_channels, k = s->kernel;
    size_t maxc = (size_t)(cin > cout ? cin : cout);
    size_t maxc2 = (size_t)even_up((int)maxc), maxc16 = (size_t)pad16((int)maxc);
    size_t t = (size_t)p->threads, hw = (size_t)s->height * s->width;
    size_t pairs = (size_t)(s->width + 1) / 2;
    p->b_image = (size_t)p->hp * p->wp * maxc2;
    p->b_tiles = filter_tile_count_padded(s, pad16(cout)) * DG_TILE_ROWS * 32;
    if (p->b_tiles < (size_t)DG_TILE_PIXELS * 32)
        p->b_tiles = (size_t)DG_TILE_PIXELS * 32;
    p->bw = calloc((size_t)k * k * maxc2 * maxc16, sizeof(uint16_t));
    p->bbias = calloc(maxc16, sizeof(float));
    p->bx32 = calloc(p->b_image * t, sizeof(float));
    p->bx = calloc(p->b_image * t, sizeof(uint16_t));
    p->bacc = calloc(p->b_tiles * t, sizeof(float));
    p->bxs = calloc((size_t)s->batch * p->hp * p->wp * cin * 2, sizeof(uint16_t));
    p->bgs = calloc((size_t)s->batch * s->height * pairs * pad16(cout) * 2, sizeof(uint16_t));
    p->bzero = calloc(maxc16 > hw ? maxc16 : hw, sizeof(float));
    if (!p->bw || !p->bbias || !p->bx32 || !p->bx || !p->bacc || !p->bxs || !p->bgs ||
        !p->bzero)
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the bf16 workspace");
    return DG_OK;
}

/* The image `src` (c, h, w) float32 as bf16 (hp, wp, c2) NHWC, c2 = c rounded up to even, the
 * padding and the extra channel zero; x32 is the float32 padded copy on the way. */
static void pack_image(const struct conv_plan *p, const float *src, int c, float *x32,
                       uint16_t *dst)
{
    const struct dg_conv_shape *s = &p->s;
    size_t pixels = (size_t)p->hp * p->wp;
    int c2 = even_up(c);
    dg_cpu_conv_pack_padded(p->isa, src, c, s->height, s->width, p->pad, p->hp, p->wp, x32);
    if (c2 == c) {
        p->bf16->round(x32, pixels * c, dst);
        return;
    }
    for (size_t i = 0; i < pixels; i++) {
        for (int ch = 0; ch < c; ch++)
            dst[i * c2 + ch] = dg_bf16_round(x32[i * c + ch]);
        dst[i * c2 + c] = 0;
    }
}

struct bf16_job {
    const struct conv_plan *p;
    const float *in;
    const float *bias;
    float *out;
    int cin, cout, relu;
};

static void bf16_conv_task(void *ctx, int thread, int threads)
{
    const struct bf16_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, h = s->height, w = s->width;
    int cin2 = even_up(job->cin), cout16 = pad16(job->cout);
    size_t row_stride = (size_t)p->wp * cin2, hw = (size_t)h * w;
    float *x32 = p->bx32 + p->b_image * (size_t)thread;
    uint16_t *image = p->bx + p->b_image * (size_t)thread;
    float *tile = p->bacc + p->b_tiles * (size_t)thread;
    size_t packed = (size_t)-1, r0, r1;
    dg_cpu_split((size_t)s->batch * h, 1, thread, threads, &r0, &r1);
    for (size_t unit = r0; unit < r1; unit++) {
        size_t n = unit / (size_t)h;
        int y = (int)(unit % (size_t)h);
        if (n != packed) {
            pack_image(p, job->in + n * job->cin * hw, job->cin, x32, image);
            packed = n;
        }
        const uint16_t *row = image + (size_t)y * row_stride;
        float *out_image = job->out + n * job->cout * hw + (size_t)y * w;
        for (int c0 = 0; c0 < cout16; c0 += 32) {
            int vecs = cout16 - c0 >= 32 ? 2 : 1, couts = 16 * vecs;
            int real = job->cout - c0 < couts ? job->cout - c0 : couts;
            for (int x0 = 0; x0 < w; x0 += DG_TILE_PIXELS) {
                int pixels = w - x0 < DG_TILE_PIXELS ? w - x0 : DG_TILE_PIXELS;
                p->bf16->conv_row(row + (size_t)x0 * cin2, row_stride, cin2, k,
                                  p->bw + (size_t)c0 * 2, (size_t)cout16 * 2, vecs, pixels,
                                  job->bias ? job->bias + c0 : NULL, job->relu, tile);
                float *dst = out_image + (size_t)c0 * hw + x0;
                if (real == couts) {
                    p->isa->from_nhwc(tile, couts, pixels, dst, hw);
                    continue;
                }
                for (int c = 0; c < real; c++)
                    for (int b = 0; b < pixels; b++)
                        dst[(size_t)c * hw + b] = tile[(size_t)b * couts + c];
            }
        }
    }
}

/* bw <- w (cout, cin, k, k) as bf16 pairs: forward (k, k, cin2/2, cout16, 2), or with `flip`
 * the backward-data weights (k, k, cout2/2, cin16, 2), taps flipped. */
static void pack_weights(struct conv_plan *p, const float *w, int flip)
{
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    int ins = flip ? cout : cin, outs = flip ? cin : cout;
    int pairs = even_up(ins) / 2;
    size_t ldw = (size_t)pad16(outs) * 2;
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
    if (bias)
        memcpy(p->bbias, bias, sizeof(float) * (size_t)p->s.out_channels);
    struct bf16_job job = {p, x, bias ? p->bbias : NULL, y, p->s.in_channels, p->s.out_channels,
                           relu};
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

/* xs and gs of the images this thread packs. */
static void bf16_pack_task(void *ctx, int thread, int threads)
{
    const struct bf16_filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int cin = s->in_channels, cout = s->out_channels, h = s->height, w = s->width;
    int cout16 = pad16(cout), pairs = (w + 1) / 2;
    size_t hw = (size_t)h * w, xs_image = (size_t)p->hp * p->wp * cin * 2;
    size_t gs_image = (size_t)h * pairs * cout16 * 2;
    float *x32 = p->bx32 + p->b_image * (size_t)thread;
    size_t n0, n1;
    dg_cpu_split((size_t)s->batch, 1, thread, threads, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        dg_cpu_conv_pack_padded(p->isa, job->x + n * cin * hw, cin, h, w, p->pad, p->hp, p->wp,
                                x32);
        uint16_t *xs = p->bxs + n * xs_image;
        for (int yp = 0; yp < p->hp; yp++)
            for (int xp = 0; xp < p->wp; xp++) {
                const float *a = x32 + ((size_t)yp * p->wp + xp) * cin;
                const float *b = xp + 1 < p->wp ? a + cin : p->bzero;
                uint16_t *d = xs + ((size_t)yp * p->wp + xp) * cin * 2;
                for (int c = 0; c < cin; c++) {
                    d[2 * c] = dg_bf16_round(a[c]);
                    d[2 * c + 1] = dg_bf16_round(b[c]);
                }
            }
        /* the gradient in NHWC, then its pixel pairs */
        dg_cpu_conv_pack_padded(p->isa, job->dy + n * cout * hw, cout, h, w, 0, h, w, x32);
        uint16_t *gs = p->bgs + n * gs_image;
        for (int y = 0; y < h; y++)
            for (int j = 0; j < pairs; j++) {
                const float *a = x32 + ((size_t)y * w + 2 * j) * cout;
                const float *b = 2 * j + 1 < w ? a + cout : p->bzero;
                uint16_t *d = gs + ((size_t)y * pairs + j) * cout16 * 2;
                for (int c = 0; c < cout; c++) {
                    d[2 * c] = dg_bf16_round(a[c]);
                    d[2 * c + 1] = dg_bf16_round(b[c]);
                }
                memset(d + 2 * cout, 0, sizeof(uint16_t) * 2 * (size_t)(cout16 - cout));
            }
    }
}

static void bf16_filter_task(void *ctx, int thread, int threads)
{
    const struct bf16_filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels, w = s->width;
    int cout16 = pad16(cout), pairs = (w + 1) / 2;
    size_t row_stride = (size_t)p->wp * cin * 2, xs_image = (size_t)p->hp * row_stride;
    size_t gs_image = (size_t)s->height * pairs * cout16 * 2;
    float *acc = p->bacc + p->b_tiles * (size_t)thread;
    size_t t0, t1, tiles = filter_tile_count_padded(s, cout16);
    dg_cpu_split(tiles, 1, thread, threads, &t0, &t1);
    memset(acc, 0, sizeof(float) * (t1 - t0) * DG_TILE_ROWS * 32);
    for (int n = 0; n < s->batch; n++) {
        const uint16_t *xs = p->bxs + (size_t)n * xs_image;
        const uint16_t *gs = p->bgs + (size_t)n * gs_image;
        for (size_t t = t0; t < t1; t++) {
            int ky, row0, rows, cout0, couts;
            filter_tile_at_padded(s, cout16, t, &ky, &row0, &rows, &cout0, &couts);
            p->bf16->filter_tile(xs + (size_t)ky * row_stride + (size_t)row0 * 2, row_stride, cin,
                                 gs + (size_t)cout0 * 2, (size_t)cout16 * 2, s->height, pairs,
                                 rows, couts / 16, acc + (t - t0) * DG_TILE_ROWS * 32);
        }
    }
    for (size_t t = t0; t < t1; t++) {
        int ky, row0, rows, cout0, couts;
        filter_tile_at_padded(s, cout16, t, &ky, &row0, &rows, &cout0, &couts);
        const float *tile = acc + (t - t0) * DG_TILE_ROWS * 32;
        for (int r = 0; r < rows; r++) {
            int kx = (row0 + r) / cin, ci = (row0 + r) % cin;
            for (int c = 0; c < couts && cout0 + c < cout; c++)
                job->dw[(((size_t)(cout0 + c) * cin + ci) * k + ky) * k + kx] = tile[r * couts + c];
        }
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
