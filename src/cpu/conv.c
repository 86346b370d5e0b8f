/* Convolution on the CPU (odd kernel; stride 1 or 2, "same" or "valid": which family serves
 * which shape is dg_cpu_conv_choose's), NCHW float32 at the interface: the plan,
 * the choice of algorithm and the ops. Three algorithms, chosen per pass when the plan is created
 * (dg_cpu_conv_choose) and called through the plan's function pointers; the kernels come from the
 * backend's ISA table (src/cpu/isa/kernels.c, one source compiled per instruction set):
 *   generic   im2col + OpenBLAS sgemm (conv_im2col.c);
 *   direct    a register-blocked kernel on padded NHWC copies (conv_direct.c);
 *   winograd  for 3x3 and 5x5 kernels, Winograd tiles with alpha = 6 (conv_winograd.c);
 * and stride 2 as the four phases of its input on a stride-1 sub plan (conv_phases.c).
 * Shared here: the bias gradient (generic, direct) and the padded NHWC copy (direct, Winograd).
 * Buffers are sized once per plan (per family, on first use) and reused across calls. */
#include "cpu/conv_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *alloc_floats(size_t count)
{
    return calloc(count ? count : 1, sizeof(float));
}

static enum dg_status ensure_generic(struct conv_plan *p)
{
    if (p->col)
        return DG_OK;
    const struct dg_conv_shape *s = &p->s;
    size_t hw = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    p->col = alloc_floats(conv_kdim(s) * hw * (size_t)p->threads);
    p->dw_part = alloc_floats((size_t)s->out_channels * conv_kdim(s) * (size_t)wino_slots(p));
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
    size_t padded = (size_t)p->hp * p->wp, padded_b = (size_t)p->hp_b * p->wp_b;
    p->priv_floats = (padded > padded_b ? padded : padded_b) * channels;
    /* groups of images side by side (NHWC passes with short output rows) */
    struct direct_group g = dg_cpu_direct_group(p, dg_conv_out_width(s), s->width, p->pad,
                                                p->wp, dg_conv_stride(s));
    struct direct_group g_b = dg_cpu_direct_group(p, p->bwd_w, dg_conv_out_width(s), p->pad_b,
                                                  p->wp_b, 1);
    size_t wide = g.images ? (size_t)p->hp * g.row * s->in_channels : 0;
    size_t wide_b = g_b.images ? (size_t)p->hp_b * g_b.row * s->out_channels : 0;
    if (wide > p->priv_floats)
        p->priv_floats = wide;
    if (wide_b > p->priv_floats)
        p->priv_floats = wide_b;
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
    p->gpad = alloc_floats((size_t)s->batch * dg_conv_out_height(s) * dg_conv_out_width(s) *
                           s->out_channels);
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

/* The Winograd tile side m of a kernel: F(4x4, 3x3), F(2x2, 5x5); 0 for other kernels. */
static int wino_tile(int kernel)
{
    return kernel == 3 ? 4 : kernel == 5 ? 2 : 0;
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
    return dg_cpu_conv_choose_window(kernels, shape, shape->height, shape->width);
}

struct dg_cpu_conv_algos dg_cpu_conv_choose_window(enum dg_cpu_kernels kernels,
                                                   const struct dg_conv_shape *shape, int bwd_h,
                                                   int bwd_w)
{
    int k = shape->kernel, cin = shape->in_channels, cout = shape->out_channels;
    struct dg_cpu_conv_algos a;
    if (!dg_conv_is_same_stride1(shape)) {
        /* "valid" stride 1: Winograd or the direct kernels, as for "same", on unpadded
         * (forward, weight gradient) and k - 1 padded (backward data) copies; stride 2: its
         * four phases on a stride-1 "valid" plan where the output channels suit the direct
         * kernels, and each pass of it that plan would run direct (too few Winograd tiles),
         * forward or weight gradient, on the strided direct kernels instead (the phases'
         * kernel of ceil(k / 2), made odd, has 36 taps for 25 of a 5x5 kernel); else im2col
         * + sgemm */
        if (dg_conv_stride(shape) == 2 && kernels != DG_CPU_KERNELS_GENERIC && direct_fits(cout)) {
            struct dg_conv_shape sub = dg_cpu_phases_shape(shape);
            int lo, h, w;
            dg_cpu_phases_window(shape, &lo, &h, &w);
            struct dg_cpu_conv_algos in_phases = dg_cpu_conv_choose_window(kernels, &sub, h, w);
            a.fwd = in_phases.fwd == DG_CPU_CONV_DIRECT ? DG_CPU_CONV_DIRECT : DG_CPU_CONV_PHASES;
            a.bwd_filter = in_phases.bwd_filter == DG_CPU_CONV_DIRECT ? DG_CPU_CONV_DIRECT
                                                                      : DG_CPU_CONV_PHASES;
            a.bwd_data = DG_CPU_CONV_PHASES;
            return a;
        }
        if (dg_conv_stride(shape) == 1) {
            /* Winograd's useful work grows with the tiles, its overheads with cin * cout: the
             * weight transform, once a pass, which the batch's tiles share (forward and
             * backward data run Winograd where the batch has 4 tiles or more), and in the
             * weight gradient the slot sums, which each slot's tiles share (images of fewer
             * than 4 tiles, such as the phases of an 8x8 stride-2 layer, keep the direct
             * weight gradient). Measured on deotte's conv6 (its phases: one tile an image,
             * 256 x 64 channels, batch 86): forward 1.43-1.49 ms against 1.86-1.91 direct,
             * backward data 1.55-1.59 against 2.70-2.79 */
            int m = wino_tile(k) ? wino_tile(k) : 1;
            int out_tiles = ((dg_conv_out_height(shape) + m - 1) / m) *
                            ((dg_conv_out_width(shape) + m - 1) / m);
            int in_tiles = ((bwd_h + m - 1) / m) * ((bwd_w + m - 1) / m);
            long batch = shape->batch;
            enum dg_cpu_kernels few = kernels == DG_CPU_KERNELS_GENERIC ? kernels
                                                                        : DG_CPU_KERNELS_DIRECT;
            a.fwd = choose(batch * out_tiles < 4 ? few : kernels, k, cin, cout);
            a.bwd_filter = choose(out_tiles < 4 ? few : kernels, k, cin, cout);
            a.bwd_data = choose(batch * in_tiles < 4 ? few : kernels, k, cout, cin);
        } else {
            a.fwd = a.bwd_data = a.bwd_filter = DG_CPU_CONV_GENERIC;
        }
        return a;
    }
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
    case DG_CPU_CONV_BF16:
        return "bf16 direct";
    case DG_CPU_CONV_PHASES:
        return "4 phases";
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
    free(p->bw);
    free(p->bx);
    free(p->bacc);
    free(p->bxp);
    free(p->bgp);
    if (p->sub)
        dg_cpu_conv_plan_free(be, p->sub);
    free(p->ph_x);
    free(p->ph_w);
    free(p->ph_dw);
    free(p->t_in);
    free(p->t_out);
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

/* The same sums of NHWC dy: per channel the same additions in the same order, blocks of 16
 * channels (a cache line of each pixel; split across threads) advancing together across the
 * pixels. */
#define DG_BIAS_BLOCK 16
static void bias_grad_nhwc_task(void *ctx, int thread, int threads)
{
    const struct bias_grad_job *job = ctx;
    size_t b0, b1, channels = (size_t)job->channels;
    size_t blocks = (channels + DG_BIAS_BLOCK - 1) / DG_BIAS_BLOCK;
    dg_cpu_split(blocks, 1, thread, threads, &b0, &b1);
    for (size_t b = b0; b < b1; b++) {
        size_t c0 = b * DG_BIAS_BLOCK, cn = channels - c0 < DG_BIAS_BLOCK ? channels - c0
                                                                         : DG_BIAS_BLOCK;
        float total[DG_BIAS_BLOCK] = {0};
        for (int n = 0; n < job->batch; n++) {
            const float *v = job->dy + (size_t)n * channels * job->plane + c0;
            float part[8][DG_BIAS_BLOCK] = {{0}};
            size_t i = 0;
            for (; i + 8 <= job->plane; i += 8)
                for (int l = 0; l < 8; l++)
                    for (size_t c = 0; c < cn; c++)
                        part[l][c] += v[(i + l) * channels + c];
            for (; i < job->plane; i++)
                for (size_t c = 0; c < cn; c++)
                    part[0][c] += v[i * channels + c];
            for (size_t c = 0; c < cn; c++)
                total[c] += ((part[0][c] + part[1][c]) + (part[2][c] + part[3][c])) +
                            ((part[4][c] + part[5][c]) + (part[6][c] + part[7][c]));
        }
        memcpy(job->db + c0, total, sizeof(float) * cn);
    }
}

void dg_cpu_conv_bias_grad(struct dg_cpu *cpu, const struct conv_plan *p, const float *dy,
                           float *db)
{
    struct bias_grad_job job = {dy, db, p->s.batch, p->s.out_channels,
                                (size_t)dg_conv_out_height(&p->s) * dg_conv_out_width(&p->s)};
    dg_cpu_threads_run(cpu->pool, p->s.nhwc ? bias_grad_nhwc_task : bias_grad_task, &job);
}

int dg_cpu_conv_reads_in_place(const struct conv_plan *p, int h, int w, int pad, int hp, int wp)
{
    return p->s.nhwc && pad == 0 && hp == h && wp == w;
}

const float *dg_cpu_conv_image(const struct conv_plan *p, const float *src, int c, int h, int w,
                               int pad, int hp, int wp, float *dst)
{
    if (dg_cpu_conv_reads_in_place(p, h, w, pad, hp, wp))
        return src;
    dg_cpu_conv_pack_image(p, src, c, h, w, pad, hp, wp, dst);
    return dst;
}

const float *dg_cpu_conv_input(const struct conv_plan *p, const float *in, size_t n, int c, int h,
                               int w, int pad, int hp, int wp, float *dst)
{
    if (!in) {
        const struct dg_conv_shape *s = &p->parent->s;
        dg_cpu_phases_pack_image(p->parent,
                                 p->phase_src + n * (size_t)s->height * s->width * s->in_channels,
                                 dst);
        return dst;
    }
    return dg_cpu_conv_image(p, in + n * (size_t)c * h * w, c, h, w, pad, hp, wp, dst);
}

void dg_cpu_conv_store_pixels(const struct conv_plan *p, const float *src, int couts, int count,
                              float *out, size_t at, size_t plane, int c0, int channels)
{
    if (!p->s.nhwc) {
        p->isa->from_nhwc(src, couts, count, out + (size_t)c0 * plane + at, plane);
        return;
    }
    float *dst = out + at * (size_t)channels + c0;
    if (couts == channels) {
        memcpy(dst, src, sizeof(float) * (size_t)count * couts);
        return;
    }
    for (int j = 0; j < count; j++)
        memcpy(dst + (size_t)j * channels, src + (size_t)j * couts, sizeof(float) * couts);
}

/* dst (hp, wp, c) NHWC <- the image src placed at row `pad`, column `pad`; the rest zero. An
 * NCHW image (c, h, w) is transposed (channels that are a multiple of 16 through the ISA's
 * blocked transpose), an NHWC one (h, w, c) copied row by row. */
void dg_cpu_conv_pack_image(const struct conv_plan *p, const float *src, int c, int h, int w,
                            int pad, int hp, int wp, float *dst)
{
    const struct dg_cpu_isa_ops *isa = p->isa;
    int nhwc = p->s.nhwc;
    size_t row = (size_t)wp * c, line = (size_t)w * c;
    size_t plane = (size_t)h * w;
    if (pad == 0 && wp == w && (nhwc || c % 16 == 0)) {
        /* rows without padding: the image is one run of h * w pixels, copied (or transposed)
         * as one (fewer partial blocks than row by row), then the rows below it zeroed */
        if (nhwc)
            memcpy(dst, src, sizeof(float) * line * (size_t)h);
        else
            isa->to_nhwc(src, plane, c, h * w, dst);
        memset(dst + row * (size_t)h, 0, sizeof(float) * row * (size_t)(hp - h));
        return;
    }
    memset(dst, 0, sizeof(float) * row * pad);
    memset(dst + row * (size_t)(pad + h), 0, sizeof(float) * row * (size_t)(hp - pad - h));
    for (int y = 0; y < h; y++) {
        float *out = dst + row * (size_t)(y + pad);
        memset(out, 0, sizeof(float) * (size_t)pad * c);
        memset(out + (size_t)(pad + w) * c, 0, sizeof(float) * (size_t)(wp - pad - w) * c);
        out += (size_t)pad * c;
        if (nhwc) {
            memcpy(out, src + (size_t)y * line, sizeof(float) * line);
        } else if (c % 16 == 0) {
            isa->to_nhwc(src + (size_t)y * w, plane, c, w, out);
        } else {
            for (int ch = 0; ch < c; ch++) {
                const float *in = src + ch * plane + (size_t)y * w;
                for (int x = 0; x < w; x++)
                    out[(size_t)x * c + ch] = in[x];
            }
        }
    }
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

/* ---- NHWC plans on the NCHW passes (im2col + sgemm, bf16) ---- */

/* dst <- src, each of the batch's images (c, pixels) NCHW to (pixels, c) NHWC, or back. */
static void relayout(struct dg_cpu *cpu, const float *src, int batch, int c, size_t pixels,
                     int to_nhwc, float *dst)
{
    if (to_nhwc)
        dg_cpu_transpose(cpu, batch, c, (int)pixels, src, dst);
    else
        dg_cpu_transpose(cpu, batch, (int)pixels, c, src, dst);
}

/* The wrapped pass runs as the NCHW plan it is on NCHW copies of its tensors. */
static void nhwc_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                     const float *bias, float *y, int relu)
{
    const struct dg_conv_shape *s = &p->s;
    size_t out = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    relayout(cpu, x, s->batch, s->in_channels, (size_t)s->height * s->width, 0, p->t_in);
    p->s.nhwc = 0;
    p->nchw_fwd(cpu, p, p->t_in, w, bias, p->t_out, relu);
    p->s.nhwc = 1;
    relayout(cpu, p->t_out, s->batch, s->out_channels, out, 1, y);
}

static void nhwc_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                          const float *w, const float *bias, float *dx, int relu)
{
    const struct dg_conv_shape *s = &p->s;
    size_t out = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    relayout(cpu, dy, s->batch, s->out_channels, out, 0, p->t_in);
    p->s.nhwc = 0;
    p->nchw_bwd_data(cpu, p, p->t_in, w, bias, p->t_out, relu);
    p->s.nhwc = 1;
    relayout(cpu, p->t_out, s->batch, s->in_channels, (size_t)p->bwd_h * p->bwd_w, 1, dx);
}

static void nhwc_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                            const float *dy, float *dw, float *db)
{
    const struct dg_conv_shape *s = &p->s;
    size_t out = (size_t)dg_conv_out_height(s) * dg_conv_out_width(s);
    relayout(cpu, x, s->batch, s->in_channels, (size_t)s->height * s->width, 0, p->t_in);
    relayout(cpu, dy, s->batch, s->out_channels, out, 0, p->t_out);
    p->s.nhwc = 0;
    p->nchw_bwd_filter(cpu, p, p->t_in, p->t_out, dw, db);
    p->s.nhwc = 1;
}

static int nchw_only(enum dg_cpu_conv_algo algo)
{
    return algo == DG_CPU_CONV_GENERIC || algo == DG_CPU_CONV_BF16;
}

/* An NHWC plan: its NCHW-only passes wrapped, with their copies. */
static enum dg_status nhwc_wrap(struct conv_plan *p)
{
    const struct dg_cpu_conv_algos *a = &p->algos;
    if (!nchw_only(a->fwd) && !nchw_only(a->bwd_data) && !nchw_only(a->bwd_filter))
        return DG_OK;
    const struct dg_conv_shape *s = &p->s;
    size_t in = (size_t)s->in_channels * s->height * s->width;
    size_t out = (size_t)s->out_channels * dg_conv_out_height(s) * dg_conv_out_width(s);
    size_t most = (in > out ? in : out) * (size_t)s->batch;
    p->t_in = alloc_floats(most);
    p->t_out = alloc_floats(most);
    if (!p->t_in || !p->t_out)
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the NCHW copies");
    if (nchw_only(a->fwd))
        p->nchw_fwd = p->fwd, p->fwd = nhwc_fwd;
    if (nchw_only(a->bwd_data))
        p->nchw_bwd_data = p->bwd_data, p->bwd_data = nhwc_bwd_data;
    if (nchw_only(a->bwd_filter))
        p->nchw_bwd_filter = p->bwd_filter, p->bwd_filter = nhwc_bwd_filter;
    return DG_OK;
}

enum dg_status dg_cpu_conv_plan_create(struct dg_backend *be, const struct dg_conv_shape *shape,
                                       void **plan)
{
    return dg_cpu_conv_plan_create_window(be, shape, 0, shape->height, shape->width, plan);
}

enum dg_status dg_cpu_conv_plan_create_window(struct dg_backend *be,
                                              const struct dg_conv_shape *shape, int bwd_lo,
                                              int bwd_h, int bwd_w, void **plan)
{
    static const conv_pass_fn fwd_of[3] = {dg_cpu_im2col_fwd, dg_cpu_direct_fwd,
                                           dg_cpu_winograd_fwd};
    static const conv_pass_fn bwd_data_of[3] = {dg_cpu_im2col_bwd_data, dg_cpu_direct_bwd_data,
                                                dg_cpu_winograd_bwd_data};
    static const filter_pass_fn bwd_filter_of[3] = {
        dg_cpu_im2col_bwd_filter, dg_cpu_direct_bwd_filter, dg_cpu_winograd_bwd_filter};
    struct dg_cpu *cpu = be->impl;
    *plan = NULL;
    if (shape->batch < 1 || shape->in_channels < 1 || shape->out_channels < 1 ||
        shape->height < 1 || shape->width < 1 || shape->kernel < 1 || shape->kernel % 2 == 0 ||
        shape->stride < 0 || shape->stride > 2 || shape->valid < 0 || shape->valid > 1 ||
        shape->nhwc < 0 || shape->nhwc > 1 || !dg_conv_fits(shape))
        return dg_error(DG_ERR_RUNTIME,
                        "cpu conv: bad shape batch %d, channels %d -> %d, %dx%d, kernel %d, "
                        "stride %d, valid %d",
                        shape->batch, shape->in_channels, shape->out_channels, shape->height,
                        shape->width, shape->kernel, shape->stride, shape->valid);
    int whole = bwd_lo == 0 && bwd_h == shape->height && bwd_w == shape->width;
    if (!whole && (!shape->valid || dg_conv_stride(shape) != 1 || bwd_lo < 0 ||
                   bwd_lo > shape->kernel - 1 || bwd_h < 1 || bwd_w < 1 ||
                   bwd_lo + bwd_h > shape->height || bwd_lo + bwd_w > shape->width))
        return dg_error(DG_ERR_RUNTIME, "cpu conv: bad backward-data window %d, %dx%d", bwd_lo,
                        bwd_h, bwd_w);
    struct dg_cpu_conv_algos algos = dg_cpu_conv_choose_window(cpu->kernels, shape, bwd_h, bwd_w);
    if (algos.bwd_data == DG_CPU_CONV_GENERIC)
        /* im2col + sgemm writes the whole input's gradient (the window changes no choice
         * then: it only weighs Winograd against direct) */
        bwd_lo = 0, bwd_h = shape->height, bwd_w = shape->width;
    struct conv_plan *p = calloc(1, sizeof *p);
    if (!p)
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for a plan");
    p->s = *shape;
    p->bwd_lo = bwd_lo, p->bwd_h = bwd_h, p->bwd_w = bwd_w;
    p->isa = cpu->isa;
    p->pad = dg_conv_pad(shape);
    p->threads = cpu->threads;
    /* strided and "valid" convolutions run the generic float32 family under --math bf16 too */
    p->bf16 = dg_conv_is_same_stride1(shape) ? cpu->bf16 : NULL;
    p->wm = p->bf16 || dg_conv_stride(shape) != 1 ? 0 : wino_tile(shape->kernel);
    int oh = dg_conv_out_height(shape), ow = dg_conv_out_width(shape);
    if (p->wm) {
        /* Winograd tiles: of the output (forward, weight gradient), of the input (backward
         * data); "same" the two agree */
        p->th = (oh + p->wm - 1) / p->wm;
        p->tw = (ow + p->wm - 1) / p->wm;
        p->hp = p->th * p->wm + shape->kernel - 1;
        p->wp = p->tw * p->wm + shape->kernel - 1;
        p->th_b = (bwd_h + p->wm - 1) / p->wm;
        p->tw_b = (bwd_w + p->wm - 1) / p->wm;
    } else {
        p->hp = shape->height + 2 * p->pad;
        p->wp = shape->width + 2 * p->pad;
    }
    p->pad_b = p->pad, p->hp_b = p->hp, p->wp_b = p->wp;
    if (shape->valid) {
        /* the full correlation of dy, padded by k - 1, from window row bwd_lo on: dy at
         * k - 1 - bwd_lo, the padded sides covering the window's rows (or tiles) and dy */
        int k = shape->kernel;
        p->pad_b = k - 1 - bwd_lo;
        p->hp_b = p->wm ? p->th_b * p->wm + k - 1 : bwd_h + k - 1;
        p->wp_b = p->wm ? p->tw_b * p->wm + k - 1 : bwd_w + k - 1;
        if (p->hp_b < p->pad_b + oh)
            p->hp_b = p->pad_b + oh;
        if (p->wp_b < p->pad_b + ow)
            p->wp_b = p->pad_b + ow;
    }
    enum dg_status status;
    if (p->bf16) {
        p->algos.fwd = p->algos.bwd_data = p->algos.bwd_filter = DG_CPU_CONV_BF16;
        p->fwd = dg_cpu_bf16_fwd;
        p->bwd_data = dg_cpu_bf16_bwd_data;
        p->bwd_filter = dg_cpu_bf16_bwd_filter;
        status = dg_cpu_bf16_ensure(p);
    } else {
        p->algos = algos;
        if (p->algos.bwd_data == DG_CPU_CONV_PHASES) {
            /* the forward and the weight gradient each in phases too, or strided direct */
            int fwd_phases = p->algos.fwd == DG_CPU_CONV_PHASES;
            int filter_phases = p->algos.bwd_filter == DG_CPU_CONV_PHASES;
            p->fwd = fwd_phases ? dg_cpu_phases_fwd : dg_cpu_direct_fwd;
            p->bwd_data = dg_cpu_phases_bwd_data;
            p->bwd_filter = filter_phases ? dg_cpu_phases_bwd_filter : dg_cpu_direct_bwd_filter;
            status = dg_cpu_phases_ensure(be, p);
            if (status == DG_OK && (!fwd_phases || !filter_phases))
                status = plan_workspaces(p);
        } else {
            p->fwd = fwd_of[p->algos.fwd];
            p->bwd_data = bwd_data_of[p->algos.bwd_data];
            p->bwd_filter = bwd_filter_of[p->algos.bwd_filter];
            status = plan_workspaces(p);
        }
    }
    if (status == DG_OK && shape->nhwc)
        status = nhwc_wrap(p);
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
    if (cpu->bf16 && dg_conv_is_same_stride1(shape)) {
        snprintf(out, size, "%s", dg_cpu_conv_algo_name(DG_CPU_CONV_BF16));
        return;
    }
    struct dg_cpu_conv_algos a = dg_cpu_conv_choose(cpu->kernels, shape);
    /* each pass: its algorithm, or for a stride-2 pass in phases the algorithm of the stride-1
     * plan of the phases and " in 4 phases" */
    char pass[3][64];
    enum dg_cpu_conv_algo algo[3] = {a.fwd, a.bwd_data, a.bwd_filter};
    if (a.bwd_data == DG_CPU_CONV_PHASES) {
        struct dg_conv_shape sub = dg_cpu_phases_shape(shape);
        int lo, h, w;
        dg_cpu_phases_window(shape, &lo, &h, &w);
        struct dg_cpu_conv_algos in_phases = dg_cpu_conv_choose_window(cpu->kernels, &sub, h, w);
        enum dg_cpu_conv_algo sub_algo[3] = {in_phases.fwd, in_phases.bwd_data,
                                             in_phases.bwd_filter};
        for (int i = 0; i < 3; i++)
            if (algo[i] == DG_CPU_CONV_PHASES)
                snprintf(pass[i], sizeof pass[i], "%s in 4 phases",
                         dg_cpu_conv_algo_name(sub_algo[i]));
            else
                snprintf(pass[i], sizeof pass[i], "%s", dg_cpu_conv_algo_name(algo[i]));
    } else {
        for (int i = 0; i < 3; i++)
            snprintf(pass[i], sizeof pass[i], "%s", dg_cpu_conv_algo_name(algo[i]));
    }
    /* the forward's, then the backward passes where they differ from it: both where backward
     * data does (as the CUDA backend names cuDNN's) */
    int data_differs = with_bwd_data && strcmp(pass[1], pass[0]) != 0;
    int filter_differs = strcmp(pass[2], pass[0]) != 0;
    if (data_differs)
        snprintf(out, size, "%s (bwd-data %s, bwd-filter %s)", pass[0], pass[1], pass[2]);
    else if (filter_differs)
        snprintf(out, size, "%s (bwd-filter %s)", pass[0], pass[2]);
    else
        snprintf(out, size, "%s", pass[0]);
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
