/* The direct family of the CPU convolution ("same" or "valid"; stride 1, or the forward and
 * weight gradient of stride 2, whose backward data runs in phases): each thread copies the
 * images it works on into a private padded NHWC buffer (hp, wp, c); a direct register-blocked
 * kernel computes up to 14
 * pixels x 32 channels per call (conv_row). Backward data is the same kernel on the padded
 * gradient with the weights transposed and flipped. The weight gradient copies the batch into
 * NHWC once, is tiled over (ky, kx*cin + ci) x cout, its tiles split across threads, every tile
 * summing the images in order (the result does not depend on the thread count). */
#include "cpu/conv_internal.h"

#include <string.h>

/* The weight gradient's batch copies: xpad <- x padded, gpad <- dy in NHWC (NHWC plans read
 * dy itself). */
struct pack_job {
    struct conv_plan *p;
    const float *x, *dy;
};

/* NHWC plans without padding read x itself (the copy would be the same floats). */
static int direct_x(const struct conv_plan *p)
{
    return dg_cpu_conv_reads_in_place(p, p->s.height, p->s.width, p->pad, p->hp, p->wp);
}

static void pack_task(void *ctx, int thread, int threads)
{
    const struct pack_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int oh = dg_conv_out_height(s), ow = dg_conv_out_width(s);
    size_t hw = (size_t)s->height * s->width, ohw = (size_t)oh * ow;
    size_t padded = (size_t)p->hp * p->wp;
    struct dg_cpu_claims images = dg_cpu_claims((size_t)s->batch, 1, thread, threads);
    for (size_t n; dg_cpu_claim(&images, &n);) {
        if (!direct_x(p))
            dg_cpu_conv_pack_image(p, job->x + n * s->in_channels * hw, s->in_channels,
                                   s->height, s->width, p->pad, p->hp, p->wp,
                                   p->xpad + n * padded * s->in_channels);
        if (!s->nhwc)
            dg_cpu_conv_pack_image(p, job->dy + n * s->out_channels * ohw, s->out_channels, oh,
                                   ow, 0, oh, ow, p->gpad + n * ohw * s->out_channels);
    }
}

static void direct_task(void *ctx, int thread, int threads)
{
    const struct direct_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, oh = job->oh, ow = job->ow, stride = job->stride;
    size_t row_stride = (size_t)job->wp * job->cin;
    size_t ihw = (size_t)job->ih * job->iw, ohw = (size_t)oh * ow;
    float *tile = p->tiles + p->tiles_per_thread * (size_t)thread;
    float *image = p->xpriv + p->priv_floats * (size_t)thread;
    const float *img = image;
    size_t packed = (size_t)-1;
    struct dg_cpu_claims rows =
        dg_cpu_claims((size_t)s->batch * oh,
                      s->batch >= 2 * threads ? (size_t)oh : 1, thread, threads);
    for (size_t unit; dg_cpu_claim(&rows, &unit);) {
        size_t n = unit / (size_t)oh;
        int y = (int)(unit % (size_t)oh);
        if (n != packed) {
            img = dg_cpu_conv_image(p, job->in + n * job->cin * ihw, job->cin, job->ih, job->iw,
                                    job->pad, job->hp, job->wp, image);
            packed = n;
        }
        const float *row = img + (size_t)y * stride * row_stride;
        float *out_image = job->out + n * job->cout * ohw;
        for (int c0 = 0; c0 < job->cout; c0 += 32) {
            int couts = job->cout - c0 < 32 ? job->cout - c0 : 32;
            for (int x0 = 0; x0 < ow; x0 += DG_TILE_PIXELS) {
                int pixels = ow - x0 < DG_TILE_PIXELS ? ow - x0 : DG_TILE_PIXELS;
                p->isa->conv_row(row + (size_t)x0 * stride * job->cin, row_stride, job->cin,
                                 stride * job->cin, k,
                                 job->wpack + c0, job->cout, couts, pixels,
                                 job->bias ? job->bias + c0 : NULL, job->relu, tile);
                dg_cpu_conv_store_pixels(p, tile, couts, pixels, out_image,
                                         (size_t)y * ow + x0, ohw, c0, job->cout);
            }
        }
    }
}

struct direct_group dg_cpu_direct_group(const struct conv_plan *p, int ow, int iw, int pad,
                                        int wp, int stride)
{
    struct direct_group g = {0, 0, 0, 0};
    /* stride 1 (backward data of the phases) measured slower grouped: conv6's 2.29-2.69 ms
     * backward against 2.14-2.48 one by one; its forward (stride 2) 1.01-1.08 against
     * 1.08-1.27 */
    if (!p->s.nhwc || ow >= DG_TILE_PIXELS || stride < 2)
        return g;
    /* the slot holds the left padding and the data, and the last kept pixel's window ends
     * inside the next slot's left padding */
    int k = p->s.kernel, slot = iw + pad, reach = (ow - 1) * stride + k - pad;
    if (reach > slot)
        slot = reach;
    slot = (slot + stride - 1) / stride * stride;
    g.q = slot / stride;
    g.images = (2 * DG_TILE_PIXELS - ow) / g.q + 1;
    if (g.images > p->s.batch)
        g.images = p->s.batch;
    if (g.images < 2) {
        g.images = 0;
        return g;
    }
    g.slot = slot;
    g.row = g.images * slot + wp;
    return g;
}

/* The rows of a group: images n0 .. n0 + count - 1 (NHWC (ih, iw, cin)) side by side, image
 * i's padded row r from column i * slot of wide row r, zeros elsewhere. */
static void pack_group(const struct direct_job *job, const struct direct_group *g, size_t n0,
                       int count, float *wide)
{
    size_t cin = (size_t)job->cin, line = (size_t)job->iw * cin, row = (size_t)g->row * cin;
    for (int r = 0; r < job->hp; r++) {
        float *dst = wide + (size_t)r * row;
        memset(dst, 0, sizeof(float) * row);
        int y = r - job->pad;
        if (y < 0 || y >= job->ih)
            continue;
        for (int i = 0; i < count; i++)
            memcpy(dst + ((size_t)i * g->slot + (size_t)job->pad) * cin,
                   job->in + ((n0 + (size_t)i) * job->ih + (size_t)y) * line,
                   sizeof(float) * line);
    }
}

/* direct_task over groups of images side by side (dg_cpu_direct_group): units (group, output
 * row), split across threads. */
static void direct_group_task(void *ctx, int thread, int threads)
{
    const struct direct_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    struct direct_group g =
        dg_cpu_direct_group(p, job->ow, job->iw, job->pad, job->wp, job->stride);
    int per = g.images, q = g.q;
    int k = s->kernel, oh = job->oh, ow = job->ow, stride = job->stride, cin = job->cin;
    size_t wide_row = (size_t)g.row * cin;
    size_t ohw = (size_t)oh * ow, groups = ((size_t)s->batch + per - 1) / (size_t)per;
    float *tile = p->tiles + p->tiles_per_thread * (size_t)thread;
    float *wide = p->xpriv + p->priv_floats * (size_t)thread;
    size_t packed = (size_t)-1;
    struct dg_cpu_claims rows =
        dg_cpu_claims(groups * (size_t)oh,
                      groups >= 2 * (size_t)threads ? (size_t)oh : 1, thread, threads);
    for (size_t unit; dg_cpu_claim(&rows, &unit);) {
        size_t group = unit / (size_t)oh, n0 = group * (size_t)per;
        int y = (int)(unit % (size_t)oh);
        int count = s->batch - (int)n0 < per ? s->batch - (int)n0 : per;
        if (group != packed) {
            pack_group(job, &g, n0, count, wide);
            packed = group;
        }
        const float *row = wide + (size_t)y * stride * wide_row;
        int pixels = (count - 1) * q + ow;
        for (int c0 = 0; c0 < job->cout; c0 += 32) {
            int couts = job->cout - c0 < 32 ? job->cout - c0 : 32;
            for (int x0 = 0; x0 < pixels; x0 += DG_TILE_PIXELS) {
                int block = pixels - x0 < DG_TILE_PIXELS ? pixels - x0 : DG_TILE_PIXELS;
                p->isa->conv_row(row + (size_t)x0 * stride * cin, wide_row, cin, stride * cin, k,
                                 job->wpack + c0, job->cout, couts, block,
                                 job->bias ? job->bias + c0 : NULL, job->relu, tile);
                for (int j = 0; j < block; j++) {
                    int image = (x0 + j) / q, x = (x0 + j) % q;
                    if (x >= ow)
                        continue;
                    float *out = job->out + ((n0 + (size_t)image) * ohw + (size_t)y * ow +
                                             (size_t)x) * job->cout + c0;
                    memcpy(out, tile + (size_t)j * couts, sizeof(float) * couts);
                }
            }
        }
    }
}

static void filter_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    int oh = dg_conv_out_height(s), ow = dg_conv_out_width(s), stride = dg_conv_stride(s);
    size_t row_stride = (size_t)p->wp * cin;
    size_t image_stride = (size_t)p->hp * row_stride;
    size_t ohw = (size_t)oh * ow;
    float *acc = p->tiles + p->tiles_per_thread * (size_t)thread;
    size_t t0, t1;
    dg_cpu_split(filter_tile_count(s), 1, thread, threads, &t0, &t1);
    if (s->batch == 0)
        memset(acc, 0, sizeof(float) * (t1 - t0) * DG_TILE_ROWS * 32);
    for (int n = 0; n < s->batch; n++) { /* the first image's sums start the tiles */
        const float *xp = (direct_x(p) ? job->x : p->xpad) + (size_t)n * image_stride;
        const float *g = (s->nhwc ? job->dy : p->gpad) + (size_t)n * ohw * cout;
        for (size_t t = t0; t < t1; t++) {
            int ky, row0, rows, cout0, couts;
            filter_tile_at(s, t, &ky, &row0, &rows, &cout0, &couts);
            p->isa->filter_tile(xp + (size_t)ky * row_stride + row0, stride * row_stride,
                                stride * cin, g + cout0, cout, oh, ow, rows, couts,
                                acc + (t - t0) * DG_TILE_ROWS * 32, n == 0);
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

/* ---- the passes ---- */

static void run_direct(struct dg_cpu *cpu, const struct direct_job *job)
{
    int grouped =
        dg_cpu_direct_group(job->p, job->ow, job->iw, job->pad, job->wp, job->stride).images > 0;
    dg_cpu_threads_run(cpu->pool, grouped ? direct_group_task : direct_task, (void *)job);
}

struct pack_weights_job {
    struct conv_plan *p;
    const float *w;
    int flip;
};

/* wpack (k, k, cin, cout) <- w (cout, cin, k, k), or flipped (k, k, cout, cin) for backward
 * data; output channels split across threads. */
static void pack_weights_task(void *ctx, int thread, int threads)
{
    const struct pack_weights_job *job = ctx;
    struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    size_t c0, c1;
    dg_cpu_split((size_t)cout, 1, thread, threads, &c0, &c1);
    for (int co = (int)c0; co < (int)c1; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    float v = job->w[(((size_t)co * cin + ci) * k + ky) * k + kx];
                    if (job->flip)
                        p->wpack[((size_t)((k - 1 - ky) * k + (k - 1 - kx)) * cout + co) * cin +
                                 ci] = v;
                    else
                        p->wpack[((size_t)(ky * k + kx) * cin + ci) * cout + co] = v;
                }
}

static void direct_pack_weights(struct dg_cpu *cpu, struct conv_plan *p, const float *w,
                                int flip)
{
    struct pack_weights_job job = {p, w, flip};
    dg_cpu_threads_run(cpu->pool, pack_weights_task, &job);
}

void dg_cpu_direct_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, int relu)
{
    const struct dg_conv_shape *s = &p->s;
    direct_pack_weights(cpu, p, w, 0);
    struct direct_job job = {p,     x,     p->wpack, bias,  y,     s->in_channels,
                             s->out_channels, relu, s->height, s->width, p->pad, p->hp,
                             p->wp, dg_conv_out_height(s), dg_conv_out_width(s),
                             dg_conv_stride(s)};
    run_direct(cpu, &job);
}

void dg_cpu_direct_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                            const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    const struct dg_conv_shape *s = &p->s;
    direct_pack_weights(cpu, p, w, 1);
    struct direct_job job = {p,
                             dy,
                             p->wpack,
                             NULL,
                             dx,
                             s->out_channels,
                             s->in_channels,
                             0,
                             dg_conv_out_height(s),
                             dg_conv_out_width(s),
                             p->pad_b,
                             p->hp_b,
                             p->wp_b,
                             p->bwd_h,
                             p->bwd_w,
                             1};
    run_direct(cpu, &job);
}

void dg_cpu_direct_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                              const float *dy, float *dw, float *db)
{
    struct pack_job pack = {p, x, dy};
    dg_cpu_threads_run(cpu->pool, pack_task, &pack);
    struct filter_job job = {p, x, dy, dw, db};
    dg_cpu_threads_run(cpu->pool, filter_task, &job);
    dg_cpu_conv_bias_grad(cpu, p, dy, db);
}
