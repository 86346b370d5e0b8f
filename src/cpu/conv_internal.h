/* What the CPU convolution's files share: the plan (struct conv_plan, one per shape, created in
 * conv.c), the tile sizes, the small index helpers, the job structures the direct and Winograd
 * families both use, the shared pieces of conv.c and the passes each algorithm file exports
 * (conv_im2col.c, conv_direct.c, conv_winograd.c), which the plan calls through its function
 * pointers. */
#ifndef DIGITS_CPU_CONV_INTERNAL_H
#define DIGITS_CPU_CONV_INTERNAL_H

#include <stddef.h>

#include "cpu/bf16.h"
#include "cpu/cpu_internal.h"

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
    /* backward data (direct): the padding of dy and its padded sides; "same": pad, hp, wp;
     * "valid": k - 1 each side (the full correlation that gives back h x w) */
    int pad_b, hp_b, wp_b;
    int threads;
    int wm;     /* Winograd tile side m (k = 3: 4, k = 5: 2), 0 for other kernels */
    int th, tw;     /* Winograd tiles per column, per row of the output (forward, filter) */
    int th_b, tw_b; /* those of backward data's output */
    /* backward data's output window: rows [bwd_lo, bwd_lo + bwd_h) and columns [bwd_lo,
     * bwd_lo + bwd_w) of the input's gradient, written as (batch, cin, bwd_h, bwd_w); the
     * whole input (0, height, width) but in the sub plan of stride-2 phases, whose phase rows
     * and columns outside the input (the padding) are not computed */
    int bwd_lo, bwd_h, bwd_w;
    /* generic */
    float *col;     /* per thread (cin*k*k, h*w) */
    float *dw_part; /* per image slot (wino_slots) (cout, cin*k*k) */
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
    /* stride 2 in four phases (conv_phases.c): the stride-1 plan of the phases, the phase
     * copies of the input (or its gradient), the weights and the weight gradient */
    struct conv_plan *sub;
    float *ph_x, *ph_w, *ph_dw;
    /* in a sub plan of phases: its parent, and, while one of the parent's passes runs the sub
     * plan with the input NULL, the parent's input, whose phases the kernels then copy image
     * by image into their own buffers (dg_cpu_conv_input) instead of reading ph_x */
    const struct conv_plan *parent;
    const float *phase_src;
    /* in a Winograd sub plan of phases, while the parent's forward or backward data runs it:
     * 1 when its weights argument is the parent's own (cout, cin, k, k) kernels, whose phase
     * taps the weight transform gathers itself instead of reading ph_w */
    int phase_weights;
    /* NHWC plans (s.nhwc) whose algorithm works on NCHW (im2col + sgemm, bf16): the passes
     * themselves, run on the NCHW copies t_in, t_out (batch x the larger of the input and
     * the output) that the wrappers in conv.c transpose */
    conv_pass_fn nchw_fwd, nchw_bwd_data;
    filter_pass_fn nchw_bwd_filter;
    float *t_in, *t_out;
    /* bf16 (conv_bf16.c): NULL bf16 for a float32 plan */
    const struct dg_cpu_bf16_ops *bf16;
    uint16_t *bw;      /* packed weights (k, k, in pairs, outs, 2) */
    uint16_t *bx;      /* per thread: the pair-planar bf16 image (channel pairs, hp x wp) */
    float *bacc;       /* per thread: output tile or filter accumulators */
    uint16_t *bxp;     /* weight gradient: (batch, cin) padded planes hp x wp (+ slack) */
    uint16_t *bgp;     /* weight gradient: (batch, cout) gradient planes h x wp (+ slack) */
    size_t b_image, b_tiles; /* elements per thread of bx, of bacc */
};

/* Image slots of the Winograd and the im2col weight gradients: slot j sums the images
 * [j*batch/slots, (j+1)*batch/slots) into its own S, whole slots go to threads, and the slots
 * are added in order at the end, so the result does not depend on the thread count. */
static inline int wino_slots(const struct conv_plan *p)
{
    return p->s.batch < DG_WINO_SLOTS ? p->s.batch : DG_WINO_SLOTS;
}

static inline size_t conv_kdim(const struct dg_conv_shape *s)
{
    return (size_t)s->in_channels * s->kernel * s->kernel;
}

/* Filter-gradient tiles of the direct family: (ky, first row of the k*cin slice, first cout). */
static inline size_t filter_tile_count(const struct dg_conv_shape *s)
{
    size_t span = (size_t)s->kernel * s->in_channels;
    size_t row_tiles = (span + DG_TILE_ROWS - 1) / DG_TILE_ROWS;
    size_t cout_tiles = ((size_t)s->out_channels + 31) / 32;
    return (size_t)s->kernel * row_tiles * cout_tiles;
}

static inline void filter_tile_at(const struct dg_conv_shape *s, size_t t, int *ky, int *row0,
                                  int *rows, int *cout0, int *couts)
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

/* The tap ky * k + kx of a stride-2 kernel of side k that phase ab's tap (u, v) stands for
 * (ky = 2u + ab / 2, kx = 2v + ab % 2), or -1 where that is outside the kernel (conv_phases.c). */
static inline int dg_cpu_phase_tap(int k, int ab, int u, int v)
{
    int ky = 2 * u + ab / 2, kx = 2 * v + ab % 2;
    return ky < k && kx < k ? ky * k + kx : -1;
}

/* ---- jobs of the direct and Winograd families ---- */

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
    int ih, iw, pad, hp, wp; /* the input's sides, its padding and padded sides */
    int oh, ow;              /* the output's sides */
    int stride;              /* 1, or 2 (the forward of a strided convolution) */
};

struct filter_job {
    const struct conv_plan *p;
    const float *x, *dy;
    float *dw, *db;
};

/* Images side by side in the rows of the direct kernels: an NHWC pass whose output rows (ow
 * pixels) are shorter than a tile packs `images` images into one wide padded row, image i's
 * columns from i * slot on (its left padding and data; its right padding is the next image's
 * left padding, or the row's end), and the kernels run across the whole row: q = slot /
 * stride output columns per image, of which the first ow are kept (every pixel's sum is the
 * same as alone). row: the wide row's columns. */
struct direct_group {
    int images, q, slot, row;
};

/* The grouping of a pass (output width ow, input width iw, left padding pad, padded width wp);
 * images 0 where the images go one by one. */
struct direct_group dg_cpu_direct_group(const struct conv_plan *p, int ow, int iw, int pad,
                                        int wp, int stride);

/* ---- shared pieces (conv.c) ---- */

/* db[c] = sum over images and pixels of dy[n][c] (the bias gradient of the generic and direct
 * weight-gradient passes). */
void dg_cpu_conv_bias_grad(struct dg_cpu *cpu, const struct conv_plan *p, const float *dy,
                           float *db);

/* dst (hp, wp, c) NHWC <- the image src in the plan's layout (s.nhwc: (h, w, c), else
 * (c, h, w)) placed at row `pad`, column `pad`; the rest zero. */
void dg_cpu_conv_pack_image(const struct conv_plan *p, const float *src, int c, int h, int w,
                            int pad, int hp, int wp, float *dst);

/* 1 when the plan is NHWC and the image needs no padding (pad 0, hp = h, wp = w): the copy
 * dg_cpu_conv_pack_image would make is the image itself, read where it lies. */
int dg_cpu_conv_reads_in_place(const struct conv_plan *p, int h, int w, int pad, int hp, int wp);

/* The image src as dg_cpu_conv_pack_image would copy it into dst: src itself where
 * dg_cpu_conv_reads_in_place, else dst after the copy. */
const float *dg_cpu_conv_image(const struct conv_plan *p, const float *src, int c, int h, int w,
                               int pad, int hp, int wp, float *dst);

/* Image n of a pass's input `in` (batch of (c, h, w) images in the plan's layout) as the
 * kernels read it: dg_cpu_conv_image of image n; or, with `in` NULL (a sub plan of phases
 * whose parent passed its own input, p->phase_src), image n's phases copied into dst, which
 * holds them as the sub plan reads ph_x in place (pad 0, hp = h, wp = w). */
const float *dg_cpu_conv_input(const struct conv_plan *p, const float *in, size_t n, int c, int h,
                               int w, int pad, int hp, int wp, float *dst);

/* Pixels [at, at + count) of the image `out` (`plane` pixels of `channels` channels, in the
 * plan's layout), channels [c0, c0 + couts) <- src (count, couts) NHWC. */
void dg_cpu_conv_store_pixels(const struct conv_plan *p, const float *src, int couts, int count,
                              float *out, size_t at, size_t plane, int c0, int channels);

/* ---- the passes of each algorithm (conv_pass_fn, filter_pass_fn) ---- */

/* conv_im2col.c */
void dg_cpu_im2col_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, int relu);
void dg_cpu_im2col_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                            const float *w, const float *bias, float *dx, int relu);
void dg_cpu_im2col_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                              const float *dy, float *dw, float *db);
/* conv_direct.c */
void dg_cpu_direct_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, int relu);
void dg_cpu_direct_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                            const float *w, const float *bias, float *dx, int relu);
void dg_cpu_direct_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                              const float *dy, float *dw, float *db);
/* conv_winograd.c */
void dg_cpu_winograd_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                         const float *bias, float *y, int relu);
void dg_cpu_winograd_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                              const float *w, const float *bias, float *dx, int relu);
void dg_cpu_winograd_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                                const float *dy, float *dw, float *db);

/* A plan whose backward data writes only the window (lo, h, w) of the input's gradient
 * (struct conv_plan's bwd_*): "valid" stride-1 shapes, lo <= kernel - 1; im2col + sgemm
 * backward data ignores the window (the whole input). */
enum dg_status dg_cpu_conv_plan_create_window(struct dg_backend *be,
                                              const struct dg_conv_shape *shape, int lo, int h,
                                              int w, void **plan);
/* The algorithms of such a plan. */
struct dg_cpu_conv_algos dg_cpu_conv_choose_window(enum dg_cpu_kernels kernels,
                                                   const struct dg_conv_shape *shape, int h,
                                                   int w);

/* conv_phases.c (stride 2) */
int dg_cpu_phases_kernel(int kernel);
struct dg_conv_shape dg_cpu_phases_shape(const struct dg_conv_shape *s);
/* The phase rows and columns that hold the input (the window of the sub plan's backward
 * data): first *lo, then *h rows and *w columns. */
void dg_cpu_phases_window(const struct dg_conv_shape *s, int *lo, int *h, int *w);
enum dg_status dg_cpu_phases_ensure(struct dg_backend *be, struct conv_plan *p);
/* out (H, W, 4 cin): the phases of one NHWC input image x (h, w, cin) of the plan p (the
 * parent), as the sub plan's input image. */
void dg_cpu_phases_pack_image(const struct conv_plan *p, const float *x, float *out);
void dg_cpu_phases_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, int relu);
void dg_cpu_phases_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                            const float *w, const float *bias, float *dx, int relu);
void dg_cpu_phases_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                              const float *dy, float *dw, float *db);

/* conv_bf16.c (plans with a bf16 unit) */
enum dg_status dg_cpu_bf16_ensure(struct conv_plan *p);
void dg_cpu_bf16_fwd(struct dg_cpu *cpu, struct conv_plan *p, const float *x, const float *w,
                     const float *bias, float *y, int relu);
void dg_cpu_bf16_bwd_data(struct dg_cpu *cpu, struct conv_plan *p, const float *dy,
                          const float *w, const float *bias, float *dx, int relu);
void dg_cpu_bf16_bwd_filter(struct dg_cpu *cpu, struct conv_plan *p, const float *x,
                            const float *dy, float *dw, float *db);

#endif
