/* Internals of the CPU backend shared by its files: the worker threads, the table of
 * per-instruction-set kernels, the backend state and the convolution entry points. Tensors
 * are float32 NCHW, row-major; the direct and Winograd convolutions work internally on padded
 * NHWC copies (see conv_direct.c, conv_winograd.c). */
#ifndef DIGITS_CPU_INTERNAL_H
#define DIGITS_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/cpu.h"
#include "digits/backend.h"

/* ---- worker threads (threads.c): the caller is thread 0, threads - 1 workers ---- */

struct dg_cpu_threads;

typedef void (*dg_cpu_task)(void *ctx, int thread, int threads);

enum dg_status dg_cpu_threads_create(int threads, struct dg_cpu_threads **out);
void dg_cpu_threads_destroy(struct dg_cpu_threads *pool);
int dg_cpu_threads_count(const struct dg_cpu_threads *pool);
/* Runs task(ctx, t, threads) for every t on its own thread and returns when all are done. */
void dg_cpu_threads_run(struct dg_cpu_threads *pool, dg_cpu_task task, void *ctx);

/* [begin, end) of thread `thread`'s share of `count` items, in blocks of `grain`. */
void dg_cpu_split(size_t count, size_t grain, int thread, int threads, size_t *begin, size_t *end);

/* Items split across the threads of a run as dg_cpu_split does, with work stealing: inside a
 * task that dg_cpu_threads_run is running, each thread takes the blocks (`grain` items) of its
 * own share from the front, and when that is done takes the other threads' last blocks from
 * the back. So each thread keeps touching the images it touched in the ops before (its cache
 * holds them), and a thread that the machine slows does less of the work. For items that are
 * independent of each other and of the thread that runs them (per-thread scratch used only
 * within an item): they give the same bits as the static split. One claimed loop per run,
 * every thread of the run with the same count and grain:
 *     struct dg_cpu_claims c = dg_cpu_claims(count, grain, thread, threads);
 *     for (size_t item; dg_cpu_claim(&c, &item);) ... */
struct dg_cpu_claims {
    size_t count, grain;
    int thread, threads;
    size_t next, end; /* the block this thread holds */
};

static inline struct dg_cpu_claims dg_cpu_claims(size_t count, size_t grain, int thread,
                                                 int threads)
{
    struct dg_cpu_claims c = {count, grain < 1 ? 1 : grain, thread, threads, 0, 0};
    return c;
}

/* The next item of this thread's block, or of the next block it takes; 0 when every item is
 * taken. */
int dg_cpu_claim(struct dg_cpu_claims *c, size_t *item);

/* ---- the per-instruction-set kernels (src/cpu/isa/kernels.c, compiled once per ISA) ---- */

struct dg_dropout_key;
struct dg_affine;
struct dg_cpu_bf16_ops;

/* One table per ISA, filled by kernels.c; the backend picks one at creation. Layouts:
 *   conv_row      one output row segment of a convolution on padded NHWC input:
 *                 xrow   padded input (Hp, Wp, cin) at (row, x0): the window of output pixel b,
 *                        tap (ky, kx) starts at xrow + ky*row_stride + b*step + kx*cin (step
 *                        cin, or stride*cin; the rows of a strided one: row_stride apart)
 *                 wp     packed weights (k, k, cin, cout_total) offset to the segment's couts
 *                 out    (pixels, couts) results for 1..14 pixels and 16 or 32 channels, bias
 *                        added and ReLU applied when bias / relu are given; row stride couts.
 *   filter_tile   acc (rows, couts) += sum over the pixels of one image of a[pixel][r] *
 *                 g[pixel][c], where for pixel (y, x) a = xp + y*row_stride + x*cin and
 *                 (cin: the pixel step, stride*cin for a strided convolution, whose
 *                 row_stride is then stride rows)
 *                 g = dyh + (y*width + x)*cout_total; rows 1..14, couts 16 or 32. With
 *                 `first`, acc (rows, couts) <- 0 + that sum: the floats a zeroed acc would
 *                 hold, acc not read.
 *   wino_*        Winograd tile transforms, alpha = 6; xi = i*6 + j indexes the 6x6 transformed
 *                 tile, `xi_stride` floats apart; channels multiples of 16.
 *                 input   V[xi] <- (B^T d B)[xi] for the 6x6 patch d (rows row_stride floats
 *                         apart, pixels `channels` floats apart)
 *                 output  out[i*row_stride + j*pixel_stride + c] <- (A^T M A)[i][j] (+ bias,
 *                         ReLU) for i, j < m (2 or 4) and 16 channels c
 *                 grad    Z[xi] <- (E g E^T)[xi] for an m x m gradient tile g, E the
 *                         evaluation at the points
 *                 weights u[xi*xi_stride + c] = (G K_c G^T)[xi] in double for the k x k
 *                         kernels K_c, c < cols, stored kernels[(a*k + b)*cols + c]; g is G
 *                         (6, k) row-major
 *   to_nhwc       dst[x*channels + c] = src[c*plane_stride + x], x < width, channels % 16 == 0
 *   from_nhwc     dst[c*plane_stride + x] = src[x*channels + c], x < count, channels % 16 == 0
 *   interleave4   out[4*c + k] = in[k][c] for c < channels, k < 4 (0 where in[k] is NULL): the
 *                 four phases of a stride-2 convolution's input pixel, channel by channel
 *   deinterleave4 out[k][c] = in[4*c + k] for c < channels and the k whose out[k] is not NULL
 *   channel_sums  sums[c] = sum over pixels of src[pixel*channels + c], channels % 16 == 0,
 *                 four interleaved partial sums per channel (the same order on every ISA)
 *   bn_*          batch normalisation over one (image, channel) plane of n values, in double:
 *                 bn_sum (sum v), bn_squares (sum (v - centre)^2), bn_grad_sums (sum dy,
 *                 sum dy (x - mean)), each in 16 interleaved partial sums added in one fixed
 *                 order, then the tail (the same steps on every ISA); bn_affine (y = x scale +
 *                 shift), bn_input_grad (k = mean, invstd, scale, mean_dy, mean_dy_xhat:
 *                 dx = scale (dy - mean_dy - (x - mean) invstd mean_dy_xhat); with `relu`,
 *                 then 0 where x > 0 does not hold, as relu_bwd with y = x), each rounded
 *                 to float once
 *   bn_*_nhwc     the same for `channels` channels of one NHWC image of n pixels (pixel i at
 *                 x[i*stride]): per channel the same partial sums and additions, so channel
 *                 c's result is bn_*'s of its plane, bit for bit (bn_sums_nhwc: bn_sum, or
 *                 bn_squares with centre[c]; bn_grad_sums_nhwc: sums[c], sums[channels + c];
 *                 bn_input_grad_nhwc: k[j*channels + c], j < 5, per channel)
 *   dropout_at    out[i - begin] = in[i - begin] * dg_dropout_scale(rate, key, i), i in
 *                 [begin, end): in and out at element `begin` (backend_cpu.c draws the scales
 *                 from ones and keeps them)
 *   maxpool_*     2x2 max-pool of one (h, w) plane into (h/2, w/2); backward routes dy to the
 *                 first maximum of each window (row-major, strict >), zero elsewhere,
 *                 including an odd last row or column
 *   rmsprop       src/math/rmsprop.h over n elements
 *   adam, sgd     src/math/adam.h, src/math/sgd.h over n elements (bc1, bc2: the bias
 *                 corrections of the step)
 *   relu_bwd      dy[i] = y[i] > 0 ? dy[i] : 0
 *   bias_act      y[i] = y[i] + bias, then ReLU when relu (NaN gives 0)
 *   im2col        col (cin*k*k, h*w) <- the "same"-padded windows of x (cin, h, w)
 *   col2im        x (cin, h, w) <- the sum of col's windows (the adjoint of im2col)
 *   assemble      out (784) <- image / 255, or the augmentation warp of it when affine != NULL
 * Element loops (dropout, pooling, RMSprop, Adam, SGD, ReLU, assembly) are bit-identical to the shared
 * element math on every ISA; convolutions agree with the double reference within the
 * tolerances (FMA on AVX-512, AVX2 and NEON; separate multiply and add in portable C). */
struct dg_cpu_isa_ops {
    enum dg_cpu_isa isa;
    int lanes; /* floats per vector */
    void (*conv_row)(const float *xrow, size_t row_stride, int cin, int step, int k,
                     const float *wp, int cout_total, int couts, int pixels, const float *bias,
                     int relu, float *out);
    void (*filter_tile)(const float *xp, size_t row_stride, int cin, const float *dyh,
                        int cout_total, int height, int width, int rows, int couts, float *acc,
                        int first);
    void (*wino_weights)(const double *g, int k, const float *kernels, int cols, float *u,
                         size_t xi_stride);
    void (*wino_input)(const float *patch, size_t row_stride, int channels, float *v,
                       size_t xi_stride);
    void (*wino_output)(int m, const float *mm, size_t xi_stride, const float *bias, int relu,
                        float *out, size_t row_stride, size_t pixel_stride);
    void (*wino_grad)(int m, const float *tile, size_t row_stride, int channels, float *z,
                      size_t xi_stride);
    void (*wino_filter_out)(int k, const double *at, const double *scale, const double *wsum,
                            size_t xi_stride, int lanes, float *dw, size_t lane_stride);
    void (*to_nhwc)(const float *src, size_t plane_stride, int channels, int width, float *dst);
    void (*from_nhwc)(const float *src, int channels, int count, float *dst, size_t plane_stride);
    void (*interleave4)(const float *const in[4], int channels, float *out);
    void (*deinterleave4)(const float *in, int channels, float *const out[4]);
    void (*channel_sums)(const float *src, size_t pixels, int channels, float *sums);
    double (*bn_sum)(const float *v, size_t n);
    double (*bn_squares)(const float *v, size_t n, double centre);
    void (*bn_grad_sums)(const float *x, const float *dy, size_t n, double mean, double sums[2]);
    void (*bn_affine)(const float *x, size_t n, double scale, double shift, float *y);
    void (*bn_input_grad)(const float *x, const float *dy, size_t n, const double k[5], int relu,
                          float *dx);
    void (*bn_sums_nhwc)(const float *x, size_t n, size_t stride, int channels,
                         const double *centre, double *out);
    void (*bn_grad_sums_nhwc)(const float *x, const float *dy, size_t n, size_t stride,
                              int channels, const double *mean, double *sums);
    void (*bn_affine_nhwc)(const float *x, size_t n, size_t stride, int channels,
                           const double *scale, const double *shift, float *y);
    void (*bn_input_grad_nhwc)(const float *x, const float *dy, size_t n, size_t stride,
                               int channels, const double *k, int relu, float *dx);
    void (*dropout_at)(size_t begin, size_t end, float rate, const struct dg_dropout_key *key,
                       const float *in, float *out);
    void (*maxpool_fwd)(const float *x, int h, int w, float *y);
    void (*maxpool_bwd)(const float *x, const float *dy, int h, int w, float *dx);
    void (*rmsprop)(size_t n, float *w, const float *g, float *acc, float lr, float rho, float eps);
    void (*adam)(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1,
                 float beta2, float eps, float bc1, float bc2);
    void (*sgd)(size_t n, float *w, const float *g, float *b, float lr, float momentum,
                int nesterov);
    void (*relu_bwd)(size_t n, const float *y, float *dy);
    void (*bias_act)(float *y, size_t n, float bias, int relu);
    void (*im2col)(const float *x, int cin, int h, int w, int k, float *col);
    void (*col2im)(const float *col, int cin, int h, int w, int k, float *x);
    void (*assemble)(const uint8_t *image, const struct dg_affine *affine, float *out);
};

extern const struct dg_cpu_isa_ops dg_cpu_isa_scalar;
#if defined(__x86_64__)
extern const struct dg_cpu_isa_ops dg_cpu_isa_avx2;
extern const struct dg_cpu_isa_ops dg_cpu_isa_avx512;
#endif
#if defined(__aarch64__)
extern const struct dg_cpu_isa_ops dg_cpu_isa_neon;
#endif

/* The table of an ISA this build has and this CPU runs; NULL otherwise. */
const struct dg_cpu_isa_ops *dg_cpu_isa_table(enum dg_cpu_isa isa);

/* ---- backend state ---- */

#define DG_CPU_DROPOUT_MEMOS 4 /* dropout layers of one step whose masks are kept */

struct dg_cpu {
    struct dg_cpu_threads *pool;
    int threads;
    const struct dg_cpu_isa_ops *isa; /* chosen once, at creation (or by set_isa) */
    enum dg_cpu_kernels kernels;      /* convolution algorithm request */
    int nchw;                         /* 1: NCHW activations (DIGITS_CPU_LAYOUT=nchw) */
    const struct dg_cpu_bf16_ops *bf16; /* --math bf16: the unit; NULL at float32 */
    /* the scratch of one op at a time (dg_cpu_scratch): the dense layers' bf16-rounded
     * operands, NHWC batchnorm's per-image sums, NHWC dropout's masks */
    void *scratch;
    size_t scratch_bytes;
    /* The last dropout masks (backend_cpu.c): each op's scales (0 or 1 / (1 - rate)) in the
     * tensor's own order, a pure function of (key, rate, n), so the backward of a training
     * step multiplies by the forward's instead of drawing them again. */
    struct dg_cpu_dropout_memo {
        struct dg_dropout_key key;
        float rate;
        size_t n;
        float *scale; /* NULL: empty */
        size_t capacity;
    } dropout_memo[DG_CPU_DROPOUT_MEMOS];
    int dropout_next; /* the entry a miss replaces */
};

/* The backend's scratch, grown to at least `bytes` (aligned for doubles); NULL when out of
 * memory. One op uses it at a time: its contents do not outlive the op. */
void *dg_cpu_scratch(struct dg_cpu *cpu, size_t bytes);

/* y (batch, b, a) = x (batch, a, b), each image's matrix transposed, images split across
 * threads: the ISA's blocked transposes where b or a is a multiple of 16. */
void dg_cpu_transpose(struct dg_cpu *cpu, int batch, int a, int b, const float *x, float *y);

/* ---- convolution (conv.c, the algorithms in conv_im2col.c, conv_direct.c, conv_winograd.c) */

/* The algorithm a convolution of this shape gets for each of its three passes. */
struct dg_cpu_conv_algos {
    enum dg_cpu_conv_algo fwd, bwd_data, bwd_filter;
};
struct dg_cpu_conv_algos dg_cpu_conv_choose(enum dg_cpu_kernels kernels,
                                            const struct dg_conv_shape *shape);

enum dg_status dg_cpu_conv_plan_create(struct dg_backend *be, const struct dg_conv_shape *shape,
                                       void **plan);
void dg_cpu_conv_plan_free(struct dg_backend *be, void *plan);
void dg_cpu_conv_describe(struct dg_backend *be, const struct dg_conv_shape *shape,
                          int with_bwd_data, char *out, size_t size);
enum dg_status dg_cpu_conv_fwd(struct dg_backend *be, void *plan, const float *x, const float *w,
                               const float *bias, float *y, int relu);
enum dg_status dg_cpu_conv_bwd_data(struct dg_backend *be, void *plan, const float *dy,
                                    const float *w, float *dx);
enum dg_status dg_cpu_conv_bwd_filter(struct dg_backend *be, void *plan, const float *x,
                                      const float *dy, float *dw, float *db);

/* ---- batch normalisation (batchnorm.c), the vtable entries of include/digits/backend.h ---- */
enum dg_status dg_cpu_batchnorm_fwd_train(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          float *running_mean, float *running_var,
                                          double momentum, double eps, float *y,
                                          float *save_mean, float *save_invstd);
enum dg_status dg_cpu_batchnorm_fwd_infer(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var,
                                          double eps, float *y);
enum dg_status dg_cpu_batchnorm_bwd(struct dg_backend *be, const struct dg_bn_shape *shape,
                                    const float *x, const float *dy, const float *gamma,
                                    const float *save_mean, const float *save_invstd, float *dx,
                                    float *dgamma, float *dbeta);
enum dg_status dg_cpu_batchnorm_bwd_relu(struct dg_backend *be, const struct dg_bn_shape *shape,
                                         const float *x, const float *dy, const float *gamma,
                                         const float *save_mean, const float *save_invstd,
                                         float *dx, float *dgamma, float *dbeta);

#endif
