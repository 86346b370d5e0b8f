/* The Winograd family of the CPU convolution, for 3x3 and 5x5 kernels, alpha = 6 (points 0, 1,
 * -1, 2, -2, inf): F(4x4, 3x3) and F(2x2, 5x5) for forward and backward data, F(3x3, 4x4) and
 * F(5x5, 2x2) for the weight gradient. Tiles of one image are processed up to 14 (28) at a time:
 * input transform (36, tiles, c), one small GEMM per transformed position with the
 * register-blocked kernel, output transform. Weight transforms and the final weight-gradient
 * transform are done in double. The weight gradient sums the batch in 12 fixed slots of images,
 * then the slots in order: like every other output, it does not depend on the thread count. */
#include "cpu/conv_internal.h"

#include <string.h>

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

/* Row `row`'s kernels gathered (k, k, cols) for the transform: forward rows are input
 * channels, columns output channels; backward data the other way round, flipped. */
static void gather_row(const struct wino_weights_job *job, size_t row, float *gathered)
{
    const struct dg_conv_shape *s = &job->p->s;
    int k = s->kernel, cin = s->in_channels;
    int cols = job->flip ? cin : s->out_channels;
    for (int col = 0; col < cols; col++) {
        int co = job->flip ? (int)row : col, ci = job->flip ? col : (int)row;
        const float *kernel = job->w + ((size_t)co * cin + ci) * k * k;
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++) {
                int from = job->flip ? (k - 1 - a) * k + (k - 1 - b) : a * k + b;
                gathered[(size_t)(a * k + b) * cols + col] = kernel[from];
            }
    }
}

/* The same for a Winograd sub plan of phases given its parent's kernels (phase_weights): sub
 * channel 4 c + ab's tap t is the parent's tap tap_of[ab][t] of channel c, 0 where that is -1
 * (the floats weights_task in conv_phases.c writes into ph_w). */
static void gather_phase_row(const struct wino_weights_job *job, size_t row,
                             int tap_of[4][5 * 5], float *gathered)
{
    const struct dg_conv_shape *s = &job->p->s;
    int k = s->kernel, cols = job->flip ? s->in_channels : s->out_channels;
    int pk = job->p->parent->s.kernel;
    size_t pkk = (size_t)pk * pk, per_co = (size_t)(s->in_channels / 4) * pkk;
    for (int t = 0; t < k * k; t++) {
        /* gathered tap t of every column: the sub kernel's tap t, or flipped */
        int st = job->flip ? k * k - 1 - t : t;
        float *dst = gathered + (size_t)t * cols;
        if (!job->flip) { /* row: sub input channel 4 c + ab; col: output channel */
            int from = tap_of[row % 4][st];
            const float *src = job->w + row / 4 * pkk + (size_t)(from < 0 ? 0 : from);
            for (int col = 0; col < cols; col++)
                dst[col] = from >= 0 ? src[(size_t)col * per_co] : 0.0f;
        } else { /* row: output channel; col: sub input channel 4 c + ab */
            const float *src = job->w + row * per_co;
            int from[4];
            for (int ab = 0; ab < 4; ab++)
                from[ab] = tap_of[ab][st];
            for (int c = 0; c < cols / 4; c++, src += pkk)
                for (int ab = 0; ab < 4; ab++)
                    dst[4 * c + ab] = from[ab] >= 0 ? src[from[ab]] : 0.0f;
        }
    }
}

/* U[xi][row][col] = (G g G^T)[xi] in double, g the kernel of (row, col) (gather_row's rows and
 * columns). The kernels of one row are gathered (k, k, cols) into the thread's tile buffer
 * first. */
static void wino_weights_task(void *ctx, int thread, int threads)
{
    const struct wino_weights_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel;
    int rows = job->flip ? s->out_channels : s->in_channels;
    int cols = job->flip ? s->in_channels : s->out_channels;
    double g[6 * 5];
    for (int i = 0; i < 6; i++)
        for (int a = 0; a < k; a++)
            g[i * k + a] = wino_scale[i] * wino_eval(i, a, k);
    float *gathered = p->wout + p->wout_floats * (size_t)thread;
    int tap_of[4][5 * 5];
    for (int ab = 0; ab < (p->phase_weights ? 4 : 0); ab++)
        for (int t = 0; t < k * k; t++)
            tap_of[ab][t] = dg_cpu_phase_tap(p->parent->s.kernel, ab, t / k, t % k);
    size_t r0, r1;
    dg_cpu_split((size_t)rows, 1, thread, threads, &r0, &r1);
    for (size_t row = r0; row < r1; row++) {
        if (p->phase_weights)
            gather_phase_row(job, row, tap_of, gathered);
        else
            gather_row(job, row, gathered);
        p->isa->wino_weights(g, k, gathered, cols, p->u + row * cols, (size_t)rows * cols);
    }
}

static void wino_weights(struct dg_cpu *cpu, const struct conv_plan *p, const float *w, int flip)
{
    struct wino_weights_job job = {p, w, flip};
    dg_cpu_threads_run(cpu->pool, wino_weights_task, &job);
}

/* Work units of the Winograd forward pass: whole tile rows of one image (as many as fit in 14
 * tiles, spread evenly), or segments of at most 14 tiles of one tile row; or, where an image
 * has at most 7 tiles, as many whole images as fit in 14 tiles (every tile is computed on its
 * own, so the grouping does not change a bit of the result). */
struct wino_units {
    int rows;     /* tile rows per unit */
    int groups;   /* row groups per image */
    int segments; /* column segments per tile row */
    int images;   /* whole images per unit (1: the unit is part of one image) */
};

static struct wino_units wino_units_of(int th, int tw)
{
    struct wino_units u;
    int most = tw >= DG_TILE_PIXELS ? 1 : DG_TILE_PIXELS / tw;
    u.groups = (th + most - 1) / most;
    u.rows = (th + u.groups - 1) / u.groups;
    u.segments = (tw + DG_TILE_PIXELS - 1) / DG_TILE_PIXELS;
    u.images = th * tw <= DG_TILE_PIXELS / 2 ? DG_TILE_PIXELS / (th * tw) : 1;
    return u;
}

/* Forward (or backward data) over tiles: in NCHW (batch, cin, ih, iw), copied image by image
 * into the thread's padded NHWC buffer (hp, wp) at (pad, pad); U from wino_weights; out NCHW
 * (batch, cout, oh, ow), ceil(oh / m) x ceil(ow / m) tiles. Uses direct_job's fields. Per
 * unit: input transforms V (36, tiles, cin), products M (36, cout / 32, 14, 32), output tiles
 * gathered into NHWC rows (rows*m, cols*m, cout) per image, then transposed into NCHW. */
static void wino_conv_task(void *ctx, int thread, int threads)
{
    const struct direct_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int m = p->wm, cin = job->cin, cout = job->cout, h = job->oh, w = job->ow;
    int th = (h + m - 1) / m, tw = (w + m - 1) / m;
    size_t row_stride = (size_t)job->wp * cin;
    size_t hw = (size_t)h * w;
    size_t xi_v = (size_t)DG_TILE_PIXELS * cin, xi_m = (size_t)DG_TILE_PIXELS * cout;
    float *v = p->wv + p->wv_floats * (size_t)thread;
    float *prod = p->wz + p->wv_floats * (size_t)thread;
    float *rows_out = p->wout + p->wout_floats * (size_t)thread;
    float *image = p->xpriv + p->priv_floats * (size_t)thread;
    struct wino_units units = wino_units_of(th, tw);
    size_t per_image = (size_t)units.groups * units.segments;
    size_t total = units.images > 1 ? ((size_t)s->batch + units.images - 1) / units.images
                                    : (size_t)s->batch * per_image;
    /* a thread takes all the units of an image at once where there are images enough, and
     * copies the image (where it is not read in place) once for them */
    struct dg_cpu_claims units_left = dg_cpu_claims(
        total, units.images == 1 && s->batch >= 2 * threads ? per_image : 1, thread, threads);
    size_t packed = (size_t)-1;
    const float *img = image;
    for (size_t unit; dg_cpu_claim(&units_left, &unit);) {
        /* the unit's pieces: images n0 .. n0 + pieces - 1, each its tiles [tr0, tr0 + rows) x
         * [tc0, tc0 + cols) */
        size_t n0;
        int pieces, tr0, tc0, rows, cols;
        if (units.images > 1) {
            n0 = unit * (size_t)units.images;
            pieces = s->batch - (int)n0 < units.images ? s->batch - (int)n0 : units.images;
            tr0 = tc0 = 0, rows = th, cols = tw;
        } else {
            n0 = unit / per_image;
            pieces = 1;
            int group = (int)(unit % per_image / (size_t)units.segments);
            int segment = (int)(unit % (size_t)units.segments);
            tr0 = group * units.rows, tc0 = segment * DG_TILE_PIXELS;
            rows = th - tr0 < units.rows ? th - tr0 : units.rows;
            cols = tw - tc0 < DG_TILE_PIXELS ? tw - tc0 : DG_TILE_PIXELS;
        }
        int per_piece = rows * cols, count = pieces * per_piece;
        for (int piece = 0; piece < pieces; piece++) {
            if (pieces > 1 || n0 != packed)
                img = dg_cpu_conv_input(p, job->in, n0 + (size_t)piece, cin, job->ih, job->iw,
                                        job->pad, job->hp, job->wp, image);
            packed = pieces > 1 ? (size_t)-1 : n0;
            for (int t = 0; t < per_piece; t++) {
                int tr = tr0 + t / cols, tc = tc0 + t % cols;
                p->isa->wino_input(img + (size_t)tr * m * row_stride + (size_t)tc * m * cin,
                                   row_stride, cin, v + (size_t)(piece * per_piece + t) * cin,
                                   xi_v);
            }
        }
        for (int xi = 0; xi < DG_WINO_XI; xi++)
            for (int co = 0; co < cout; co += 32)
                p->isa->conv_row(v + xi * xi_v, 0, cin, cin, 1,
                                 job->wpack + (size_t)xi * cin * cout + co, cout, 32, count, NULL,
                                 0, prod + xi * xi_m + (size_t)co * DG_TILE_PIXELS);
        int y0 = tr0 * m, x0 = tc0 * m;
        int valid_cols = w - x0 < cols * m ? w - x0 : cols * m;
        /* NHWC outputs whose tiles lie inside the image take the tiles where they belong */
        int in_place = s->nhwc && y0 + rows * m <= h && x0 + cols * m <= w;
        size_t out_row = in_place ? (size_t)w * cout : (size_t)cols * m * cout;
        for (int piece = 0; piece < pieces; piece++) {
            float *out = job->out + (n0 + (size_t)piece) * cout * hw;
            float *tiles = in_place ? out + ((size_t)y0 * w + (size_t)x0) * cout : rows_out;
            for (int t = 0; t < per_piece; t++) {
                float *dst =
                    tiles + (size_t)(t / cols) * m * out_row + (size_t)(t % cols) * m * cout;
                size_t at = (size_t)(piece * per_piece + t) * 32;
                for (int co = 0; co < cout; co += 16)
                    p->isa->wino_output(m, prod + (size_t)(co / 32) * 32 * DG_TILE_PIXELS + at +
                                               co % 32,
                                        xi_m, job->bias ? job->bias + co : NULL, job->relu,
                                        dst + co, out_row, (size_t)cout);
            }
            if (in_place)
                continue;
            int last = y0 + rows * m < h ? y0 + rows * m : h;
            if (x0 == 0 && valid_cols == w && cols * m == w) {
                /* whole rows, as wide as the image: one run of pixels, as in NCHW */
                dg_cpu_conv_store_pixels(p, rows_out, cout, (last - y0) * w, out,
                                         (size_t)y0 * w, hw, 0, cout);
                continue;
            }
            for (int y = y0; y < last; y++)
                dg_cpu_conv_store_pixels(p, rows_out + (size_t)(y - y0) * out_row, cout,
                                         valid_cols, out, (size_t)y * w + x0, hw, 0, cout);
        }
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
 * taken up to 28 at a time: from one image for "same" plans (the chunks the reference network's
 * stored results were summed in), across the slot's images for "valid" ones (small images of a
 * few tiles each). The thread that handles an image also sums its gradient per channel into
 * db_part[n]. */
static void wino_filter_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int m = p->wm, cin = s->in_channels, cout = s->out_channels, h = s->height, w = s->width;
    int oh = dg_conv_out_height(s), ow = dg_conv_out_width(s);
    size_t ohw = (size_t)oh * ow;
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
    struct dg_cpu_claims slots_left = dg_cpu_claims((size_t)slots, 1, thread, threads);
    for (size_t slot; dg_cpu_claim(&slots_left, &slot);) {
        /* the slot's first chunk writes every sum (0 + its products), the others add */
        float *sums = p->ws + p->ws_floats * slot;
        size_t n0 = slot * (size_t)s->batch / (size_t)slots;
        size_t n1 = (slot + 1) * (size_t)s->batch / (size_t)slots;
        /* the slot's tiles in order, (image, tile row, tile column); a chunk ends at an image's
         * end for "same" plans */
        size_t span = (n1 - n0) * tiles, packed = (size_t)-1;
        const float *ximg = image, *gimg = grad;
        for (size_t q0 = 0; q0 < span;) {
            size_t q1 = span - q0 < DG_WINO_FILTER_CHUNK ? span : q0 + DG_WINO_FILTER_CHUNK;
            if (!s->valid && q1 > (q0 / tiles + 1) * tiles)
                q1 = (q0 / tiles + 1) * tiles;
            int count = (int)(q1 - q0);
            for (int t = 0; t < count; t++) {
                size_t n = n0 + (q0 + (size_t)t) / tiles, in_image = (q0 + (size_t)t) % tiles;
                if (n != packed) {
                    ximg = dg_cpu_conv_input(p, job->x, n, cin, h, w, p->pad, p->hp, p->wp,
                                             image);
                    gimg = dg_cpu_conv_image(p, job->dy + n * cout * ohw, cout, oh, ow, 0,
                                             p->th * m, p->tw * m, grad);
                    p->isa->channel_sums(gimg, (size_t)p->th * m * p->tw * m, cout,
                                         p->db_part + n * cout);
                    packed = n;
                }
                int tr = (int)(in_image / (size_t)p->tw), tc = (int)(in_image % (size_t)p->tw);
                p->isa->wino_input(ximg + (size_t)tr * m * row_stride + (size_t)tc * m * cin,
                                   row_stride, cin, v + (size_t)t * cin, xi_v);
                p->isa->wino_grad(m, gimg + (size_t)tr * m * grow + (size_t)tc * m * cout, grow,
                                  cout, z + (size_t)t * cout, xi_z);
            }
            for (int xi = 0; xi < DG_WINO_XI; xi++)
                for (int co = 0; co < cout; co += 32)
                    for (int b = 0; b < ci_blocks; b++) {
                        int ci0, rows;
                        row_block(cin, b, &ci0, &rows);
                        p->isa->filter_tile(v + xi * xi_v + ci0, 0, cin, z + xi * xi_z + co, cout,
                                            1, count, rows, 32,
                                            sums + (size_t)xi * cin * cout + (size_t)co * cin +
                                                (size_t)ci0 * 32,
                                            q0 == 0);
                    }
            q0 = q1;
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

/* dw[co][ci] = A^T (scale scale^T .* wsum) A, in double: units of 32 output channels (one
 * block of wsum, side by side) at one input channel. */
static void wino_filter_out_task(void *ctx, int thread, int threads)
{
    const struct filter_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, cin = s->in_channels, cout = s->out_channels;
    double at[5 * 6];
    for (int y = 0; y < k; y++)
        for (int i = 0; i < 6; i++)
            at[y * 6 + i] = wino_eval(i, y, k);
    size_t blocks = (size_t)(cout + 31) / 32, r0, r1;
    dg_cpu_split(blocks * (size_t)cin, 1, thread, threads, &r0, &r1);
    for (size_t unit = r0; unit < r1; unit++) {
        int co0 = (int)(unit / (size_t)cin) * 32, ci = (int)(unit % (size_t)cin);
        int lanes = cout - co0 < 32 ? cout - co0 : 32;
        p->isa->wino_filter_out(k, at, wino_scale,
                                p->wsum + (size_t)co0 * cin + (size_t)ci * 32,
                                (size_t)cin * cout, lanes,
                                job->dw + ((size_t)co0 * cin + (size_t)ci) * k * k,
                                (size_t)cin * k * k);
    }
}

/* ---- the passes ---- */

void dg_cpu_winograd_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                         const float *bias, float *y, int relu)
{
    wino_weights(cpu, p, w, 0);
    const struct dg_conv_shape *s = &p->s;
    struct direct_job job = {p,         x,        p->u,   bias,  y,     s->in_channels,
                             s->out_channels, relu, s->height, s->width, p->pad, p->hp,
                             p->wp,     dg_conv_out_height(s), dg_conv_out_width(s), 1};
    dg_cpu_threads_run(cpu->pool, wino_conv_task, &job);
}

void dg_cpu_winograd_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                              const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    wino_weights(cpu, p, w, 1);
    const struct dg_conv_shape *s = &p->s;
    struct direct_job job = {p,          dy,       p->u,   NULL,  dx,    s->out_channels,
                             s->in_channels, 0,    dg_conv_out_height(s), dg_conv_out_width(s),
                             p->pad_b,   p->hp_b,  p->wp_b, p->bwd_h, p->bwd_w, 1};
    dg_cpu_threads_run(cpu->pool, wino_conv_task, &job);
}

void dg_cpu_winograd_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                                const float *dy, float *dw, float *db)
{
    struct filter_job job = {p, x, dy, dw, db};
    dg_cpu_threads_run(cpu->pool, wino_filter_task, &job);
    dg_cpu_threads_run(cpu->pool, wino_slot_sum_task, &job);
    dg_cpu_threads_run(cpu->pool, wino_filter_out_task, &job);
    dg_cpu_threads_run(cpu->pool, wino_bias_task, &job);
}
