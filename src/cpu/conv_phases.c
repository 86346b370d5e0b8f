/* Stride-2 convolutions as four phases: with x' the zero-padded input and its phases
 * x_ab[c][i][j] = x'[c][2i + a][2j + b] (a, b in {0, 1}), a stride-2 convolution of kernel k is
 *   y[o][oy][ox] = sum over c, a, b, u, v of w[o][c][2u + a][2v + b] x_ab[c][oy + u][ox + v],
 * a stride-1 "valid" convolution of the 4 cin phase channels (channel 4c + 2a + b) with a
 * kernel of side K = ceil(k / 2) (made odd with a zero tap), whose taps 2u + a >= k are zero.
 * That convolution runs on the plan `sub` (the direct kernels where its channels allow); here
 * are the copies into and out of the phase layout: the input and its gradient, the weights and
 * theirs. Each copy moves values and adds nothing, so the sums are the sub plan's: the result
 * is as deterministic as it is. */
#include "cpu/conv_internal.h"

#include <stdlib.h>
#include <string.h>

/* The phases' kernel side: ceil(k / 2), odd. */
int dg_cpu_phases_kernel(int kernel)
{
    int side = (kernel + 1) / 2;
    return side % 2 ? side : side + 1;
}

/* The sub plan's shape: the phases of a stride-2 convolution, stride 1, "valid". */
struct dg_conv_shape dg_cpu_phases_shape(const struct dg_conv_shape *s)
{
    int side = dg_cpu_phases_kernel(s->kernel);
    struct dg_conv_shape sub = {s->batch,
                                4 * s->in_channels,
                                s->out_channels,
                                dg_conv_out_height(s) + side - 1,
                                dg_conv_out_width(s) + side - 1,
                                side,
                                1,
                                1,
                                s->nhwc};
    return sub;
}

void dg_cpu_phases_window(const struct dg_conv_shape *s, int *lo, int *h, int *w)
{
    /* input row y is phase row (y + pad) / 2 */
    int pad = dg_conv_pad(s);
    *lo = pad / 2;
    *h = (s->height - 1 + pad) / 2 - *lo + 1;
    *w = (s->width - 1 + pad) / 2 - *lo + 1;
}

struct phase_job {
    const struct conv_plan *p;
    const float *src;
    float *dst;
};

/* The phase-column copies of one row: phase column j of a row holds input column 2 j + b - pad
 * (b the column phase); col0 is the first input column of phase b (0 or 1), j0 its phase
 * column, count how many input columns the phase holds. */
struct phase_cols {
    int col0, j0, count;
};

static struct phase_cols phase_cols_of(int b, int pad, int lo, int w)
{
    struct phase_cols pc;
    pc.col0 = ((b - pad) % 2 + 2) % 2;
    pc.j0 = (pc.col0 + pad - b) / 2 - lo;
    pc.count = (w - pc.col0 + 1) / 2;
    return pc;
}

/* xs (batch, 4 cin, H, W) <- the phases of x (zero outside x). */
static void pack_input_task(void *ctx, int thread, int threads)
{
    const struct phase_job *job = ctx;
    const struct dg_conv_shape *s = &job->p->s, *t = &job->p->sub->s;
    int pad = dg_conv_pad(s), h = s->height, w = s->width, width = t->width;
    size_t plane = (size_t)t->height * width;
    struct phase_cols pc[2] = {phase_cols_of(0, pad, 0, w), phase_cols_of(1, pad, 0, w)};
    for (int b = 0; b < 2; b++) /* input columns past the phases' width are never read */
        if (pc[b].count > width - pc[b].j0)
            pc[b].count = width - pc[b].j0;
    struct dg_cpu_claims images = dg_cpu_claims((size_t)s->batch, 1, thread, threads);
    for (size_t n; dg_cpu_claim(&images, &n);)
        for (int c = 0; c < s->in_channels; c++) {
            const float *x = job->src + (n * s->in_channels + (size_t)c) * h * w;
            float *out = job->dst + (n * t->in_channels + (size_t)(4 * c)) * plane;
            for (int ab = 0; ab < 4; ab++) {
                int a = ab / 2, b = ab % 2;
                const struct phase_cols *cols = &pc[b];
                for (int i = 0; i < t->height; i++) {
                    int y = 2 * i + a - pad;
                    float *row = out + (size_t)ab * plane + (size_t)i * width;
                    if (y < 0 || y >= h) {
                        memset(row, 0, sizeof(float) * (size_t)width);
                        continue;
                    }
                    const float *in = x + (size_t)y * w + cols->col0;
                    memset(row, 0, sizeof(float) * (size_t)cols->j0);
                    for (int j = 0; j < cols->count; j++)
                        row[cols->j0 + j] = in[2 * j];
                    memset(row + cols->j0 + cols->count, 0,
                           sizeof(float) * (size_t)(width - cols->j0 - cols->count));
                }
            }
        }
}

/* The same copies for NHWC plans: xs (batch, H, W, 4 cin) <- the phases of x (batch, h, w,
 * cin), phase pixel (i, j) of phase (a, b) holding input pixel (2 i + a - pad, 2 j + b - pad). */
void dg_cpu_phases_pack_image(const struct conv_plan *p, const float *x, float *out)
{
    const struct dg_conv_shape *s = &p->s, *t = &p->sub->s;
    int pad = dg_conv_pad(s), h = s->height, w = s->width, cin = s->in_channels;
    for (int i = 0; i < t->height; i++)
        for (int j = 0; j < t->width; j++, out += t->in_channels) {
            const float *in[4];
            for (int ab = 0; ab < 4; ab++) {
                int y = 2 * i + ab / 2 - pad, col = 2 * j + ab % 2 - pad;
                in[ab] = y < 0 || y >= h || col < 0 || col >= w
                             ? NULL
                             : x + ((size_t)y * w + (size_t)col) * cin;
            }
            p->isa->interleave4(in, cin, out);
        }
}

static void pack_input_nhwc_task(void *ctx, int thread, int threads)
{
    const struct phase_job *job = ctx;
    const struct dg_conv_shape *s = &job->p->s, *t = &job->p->sub->s;
    size_t image = (size_t)s->height * s->width * s->in_channels;
    size_t phases = (size_t)t->height * t->width * t->in_channels;
    struct dg_cpu_claims images = dg_cpu_claims((size_t)s->batch, 1, thread, threads);
    for (size_t n; dg_cpu_claim(&images, &n);)
        dg_cpu_phases_pack_image(job->p, job->src + n * image, job->dst + n * phases);
}

/* dx (batch, h, w, cin) <- its phases' gradient (batch, window, 4 cin), NHWC plans. */
static void unpack_input_nhwc_task(void *ctx, int thread, int threads)
{
    const struct phase_job *job = ctx;
    const struct dg_conv_shape *s = &job->p->s;
    const struct conv_plan *sub = job->p->sub;
    int pad = dg_conv_pad(s), h = s->height, w = s->width, cin = s->in_channels;
    int lo = sub->bwd_lo, phase_channels = sub->s.in_channels;
    struct dg_cpu_claims images = dg_cpu_claims((size_t)s->batch, 1, thread, threads);
    for (size_t n; dg_cpu_claim(&images, &n);) {
        float *dx = job->dst + n * (size_t)h * w * cin;
        const float *in =
            job->src + n * (size_t)sub->bwd_h * sub->bwd_w * (size_t)phase_channels;
        /* phase pixel (i, j) of the window holds input pixels (2 (i + lo) + a - pad,
         * 2 (j + lo) + b - pad), those inside the input */
        for (int i = 0; i < sub->bwd_h; i++)
            for (int j = 0; j < sub->bwd_w; j++, in += phase_channels) {
                float *out[4];
                for (int ab = 0; ab < 4; ab++) {
                    int y = 2 * (i + lo) + ab / 2 - pad, col = 2 * (j + lo) + ab % 2 - pad;
                    out[ab] = y < 0 || y >= h || col < 0 || col >= w
                                  ? NULL
                                  : dx + ((size_t)y * w + (size_t)col) * cin;
                }
                job->p->isa->deinterleave4(in, cin, out);
            }
    }
}

/* dx (batch, cin, h, w) <- its phases' gradient dxs, the sub plan's backward-data window
 * (every input pixel is in one phase, inside the window: dg_cpu_phases_window). */
static void unpack_input_task(void *ctx, int thread, int threads)
{
    const struct phase_job *job = ctx;
    const struct dg_conv_shape *s = &job->p->s, *t = &job->p->sub->s;
    const struct conv_plan *sub = job->p->sub;
    int pad = dg_conv_pad(s), h = s->height, w = s->width, lo = sub->bwd_lo;
    size_t plane = (size_t)sub->bwd_h * sub->bwd_w;
    struct phase_cols pc[2] = {phase_cols_of(0, pad, lo, w), phase_cols_of(1, pad, lo, w)};
    struct dg_cpu_claims images = dg_cpu_claims((size_t)s->batch, 1, thread, threads);
    for (size_t n; dg_cpu_claim(&images, &n);)
        for (int c = 0; c < s->in_channels; c++) {
            float *dx = job->dst + (n * s->in_channels + (size_t)c) * h * w;
            const float *phases = job->src + (n * t->in_channels + (size_t)(4 * c)) * plane;
            for (int y = 0; y < h; y++) {
                int i = (y + pad) / 2 - lo, a = (y + pad) % 2;
                for (int b = 0; b < 2; b++) {
                    const struct phase_cols *cols = &pc[b];
                    const float *in = phases + (size_t)(2 * a + b) * plane +
                                      (size_t)i * sub->bwd_w + cols->j0;
                    float *row = dx + (size_t)y * w + cols->col0;
                    for (int j = 0; j < cols->count; j++)
                        row[2 * j] = in[j];
                }
            }
        }
}

/* ws (cout, 4 cin, K, K) <- w (cout, cin, k, k) at the phases' taps, zero elsewhere; or, with
 * `back`, w <- ws at those taps (the weight gradient); output channels split across threads. */
struct weights_job {
    const struct conv_plan *p;
    float *w, *ws;
    int back;
};

static void weights_task(void *ctx, int thread, int threads)
{
    const struct weights_job *job = ctx;
    const struct conv_plan *p = job->p;
    const struct dg_conv_shape *s = &p->s;
    int k = s->kernel, side = p->sub->s.kernel, cin = s->in_channels;
    size_t taps = 4 * (size_t)side * side;
    size_t o0, o1;
    dg_cpu_split((size_t)s->out_channels, 1, thread, threads, &o0, &o1);
    for (size_t o = o0; o < o1; o++)
        for (int c = 0; c < cin; c++) {
            /* one (o, c)'s 4 phase kernels, entry (ab, u, v) in order: tap (2u + a, 2v + b) */
            float *phase = job->ws + (o * (size_t)cin + (size_t)c) * taps;
            float *orig = job->w + (o * (size_t)cin + (size_t)c) * (size_t)(k * k);
            for (int ab = 0; ab < 4; ab++)
                for (int u = 0; u < side; u++)
                    for (int v = 0; v < side; v++, phase++) {
                        int tap = dg_cpu_phase_tap(k, ab, u, v);
                        if (job->back) {
                            if (tap >= 0)
                                orig[tap] = *phase;
                        } else {
                            *phase = tap >= 0 ? orig[tap] : 0.0f;
                        }
                    }
        }
}

static void weights_between(struct dg_cpu *cpu, const struct conv_plan *p, float *w, float *ws,
                            int back)
{
    struct weights_job job = {p, w, ws, back};
    dg_cpu_threads_run(cpu->pool, weights_task, &job);
}

enum dg_status dg_cpu_phases_ensure(struct dg_backend *be, struct conv_plan *p)
{
    struct dg_conv_shape sub = dg_cpu_phases_shape(&p->s);
    void *plan = NULL;
    int lo, h, w;
    dg_cpu_phases_window(&p->s, &lo, &h, &w);
    enum dg_status status = dg_cpu_conv_plan_create_window(be, &sub, lo, h, w, &plan);
    if (status != DG_OK)
        return status;
    p->sub = plan;
    p->sub->parent = p;
    size_t image = (size_t)sub.in_channels * sub.height * sub.width;
    size_t weights = (size_t)sub.out_channels * sub.in_channels * sub.kernel * sub.kernel;
    p->ph_x = malloc(sizeof(float) * image * (size_t)sub.batch);
    p->ph_w = malloc(sizeof(float) * weights);
    p->ph_dw = malloc(sizeof(float) * weights);
    if (!p->ph_x || !p->ph_w || !p->ph_dw)
        return dg_error(DG_ERR_NOMEM, "cpu conv: out of memory for the stride-2 phases");
    return DG_OK;
}

/* 1 where the sub plan's kernels copy the phases of each input image themselves
 * (dg_cpu_conv_input), so that no pass writes and reads back the whole ph_x: NHWC Winograd
 * sub plans, which read ph_x in place (a "valid" sub plan, pad 0) and so find an image's
 * phases in their buffer exactly as they would find them in ph_x. */
static int packs_per_image(const struct conv_plan *p, int filter)
{
    const struct conv_plan *sub = p->sub;
    int winograd = filter ? sub->bwd_filter == dg_cpu_winograd_bwd_filter
                          : sub->fwd == dg_cpu_winograd_fwd;
    return winograd && dg_cpu_conv_reads_in_place(sub, sub->s.height, sub->s.width, sub->pad,
                                                  sub->hp, sub->wp);
}

/* The sub plan's weights for a forward or backward-data pass: w itself where the sub plan is
 * Winograd, whose weight transform gathers the phase taps from it (phase_weights, the same
 * floats as ph_w holds), else ph_w, written here. Ends with phase_weights 0 again (after
 * the pass). */
static const float *sub_weights(struct dg_cpu *cpu, struct conv_plan *p, const float *w,
                                int backward)
{
    int winograd = backward ? p->sub->bwd_data == dg_cpu_winograd_bwd_data
                            : p->sub->fwd == dg_cpu_winograd_fwd;
    if (winograd && p->sub->s.kernel * p->sub->s.kernel <= 5 * 5) {
        p->sub->phase_weights = 1;
        return w;
    }
    weights_between(cpu, p, (float *)w, p->ph_w, 0);
    return p->ph_w;
}

void dg_cpu_phases_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, int relu)
{
    const float *ws = sub_weights(cpu, p, w, 0);
    if (packs_per_image(p, 0)) {
        p->sub->phase_src = x;
        p->sub->fwd(cpu, p->sub, NULL, ws, bias, y, relu);
        p->sub->phase_src = NULL;
    } else {
        struct phase_job job = {p, x, p->ph_x};
        dg_cpu_threads_run(cpu->pool, p->s.nhwc ? pack_input_nhwc_task : pack_input_task, &job);
        p->sub->fwd(cpu, p->sub, p->ph_x, ws, bias, y, relu);
    }
    p->sub->phase_weights = 0;
}

void dg_cpu_phases_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                            const float *w, const float *bias, float *dx, int relu)
{
    (void)bias, (void)relu;
    const float *ws = sub_weights(cpu, p, w, 1);
    p->sub->bwd_data(cpu, p->sub, dy, ws, NULL, p->ph_x, 0);
    p->sub->phase_weights = 0;
    struct phase_job job = {p, p->ph_x, dx};
    dg_cpu_threads_run(cpu->pool, p->s.nhwc ? unpack_input_nhwc_task : unpack_input_task, &job);
}

void dg_cpu_phases_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                              const float *dy, float *dw, float *db)
{
    if (packs_per_image(p, 1)) {
        p->sub->phase_src = x;
        p->sub->bwd_filter(cpu, p->sub, NULL, dy, p->ph_dw, db);
        p->sub->phase_src = NULL;
    } else {
        struct phase_job job = {p, x, p->ph_x};
        dg_cpu_threads_run(cpu->pool, p->s.nhwc ? pack_input_nhwc_task : pack_input_task, &job);
        p->sub->bwd_filter(cpu, p->sub, p->ph_x, dy, p->ph_dw, db);
    }
    weights_between(cpu, p, dw, p->ph_dw, 1);
}
