/* Internals of the CPU backend shared by its files: the thread pool, the backend state, the
 * convolution entry points and the AVX-512 kernels. Tensors are float32 NCHW, row-major;
 * the AVX-512 convolution works internally on padded NHWC copies (see conv.c). */
#ifndef DIGITS_CPU_INTERNAL_H
#define DIGITS_CPU_INTERNAL_H

#include <stddef.h>

#include "cpu/cpu.h"
#include "digits/backend.h"

/* ---- thread pool: the caller is thread 0, threads - 1 workers ---- */

struct dg_cpu_pool;

typedef void (*dg_cpu_task)(void *ctx, int thread, int threads);

enum dg_status dg_cpu_pool_create(int threads, struct dg_cpu_pool **out);
void dg_cpu_pool_destroy(struct dg_cpu_pool *pool);
int dg_cpu_pool_threads(const struct dg_cpu_pool *pool);
/* Runs task(ctx, t, threads) for every t on its own thread and returns when all are done. */
void dg_cpu_pool_run(struct dg_cpu_pool *pool, dg_cpu_task task, void *ctx);

/* [begin, end) of thread `thread`'s share of `count` items, in blocks of `grain`. */
void dg_cpu_split(size_t count, size_t grain, int thread, int threads, size_t *begin, size_t *end);

/* ---- backend state ---- */

struct dg_cpu {
    struct dg_cpu_pool *pool;
    int threads;
    int avx512_available; /* the machine has AVX-512F */
    enum dg_cpu_kernels kernels;
};

/* 1 when the AVX-512 kernels (direct convolution, vector loops) are to be used. */
static inline int dg_cpu_use_avx512(const struct dg_cpu *cpu)
{
    return cpu->kernels == DG_CPU_KERNELS_AVX512 || cpu->kernels == DG_CPU_KERNELS_WINOGRAD ||
           (cpu->kernels == DG_CPU_KERNELS_AUTO && cpu->avx512_available);
}

/* 1 when the Winograd convolutions are to be used where the shape allows. */
static inline int dg_cpu_use_winograd(const struct dg_cpu *cpu)
{
    return cpu->kernels == DG_CPU_KERNELS_WINOGRAD ||
           (cpu->kernels == DG_CPU_KERNELS_AUTO && cpu->avx512_available);
}

/* ---- convolution (conv.c) ---- */

enum dg_status dg_cpu_conv_plan_create(struct dg_backend *be, const struct dg_conv_shape *shape,
                                       void **plan);
void dg_cpu_conv_plan_free(struct dg_backend *be, void *plan);
enum dg_status dg_cpu_conv_fwd(struct dg_backend *be, void *plan, const float *x, const float *w,
                               const float *bias, float *y, int relu);
enum dg_status dg_cpu_conv_bwd_data(struct dg_backend *be, void *plan, const float *dy,
                                    const float *w, float *dx);
enum dg_status dg_cpu_conv_bwd_filter(struct dg_backend *be, void *plan, const float *x,
                                      const float *dy, float *dw, float *db);

/* ---- AVX-512 kernels (conv_avx512.c), only called when AVX-512F is present ---- */

/* One output row segment of a "same" convolution on padded NHWC input:
 *   xrow   padded input (Hp, Wp, cin) at (row, x0): the window of output pixel b, tap (ky, kx)
 *          starts at xrow + ky*row_stride + (b + kx)*cin
 *   wp     packed weights (k, k, cin, cout_total) offset to the first of this segment's couts
 *   out    (pixels, cout) results for `pixels` (1..14) output pixels and `couts` (16 or 32)
 *          channels, bias added and ReLU applied when bias / relu are given; row stride cout. */
void dg_cpu_avx512_conv_row(const float *xrow, size_t row_stride, int cin, int k, const float *wp,
                            int cout_total, int couts, int pixels, const float *bias, int relu,
                            float *out);

/* Weight-gradient tile: acc (rows, couts) += sum over the pixels of one image of
 *   a[pixel][r] * g[pixel][c], where for pixel (y, x) a = xp + y*row_stride + x*cin and
 *   g = dyh + (y*width + x)*cout_total (both already offset to the tile's first row / cout).
 * rows 1..14, couts 16 or 32. */
void dg_cpu_avx512_filter_tile(const float *xp, size_t row_stride, int cin, const float *dyh,
                               int cout_total, int height, int width, int rows, int couts,
                               float *acc);

/* Winograd tile transforms, alpha = 6 (winograd_avx512.c); xi = i*6 + j indexes the 6x6
 * transformed tile, `xi_stride` floats apart; 16 channels per vector, channels % 16 == 0.
 *   input   V[xi] <- (B^T d B)[xi] for the 6x6 patch d (rows row_stride floats apart, pixels
 *           `channels` floats apart)
 *   output  out[i*row_stride + j*pixel_stride + c] <- (A^T M A)[i][j] (+ bias, ReLU) for
 *           i, j < m (2 or 4) and 16 channels c
 *   grad    Z[xi] <- (E g E^T)[xi] for an m x m gradient tile g, E = the evaluation at the
 *           points (rows 1, p, p^2, ...; inf: the last coefficient) */
/* One row of transformed weights: u[xi*xi_stride + c] = (G K_c G^T)[xi] in double for the
 * k x k kernels K_c, c < cols, stored kernels[(a*k + b)*cols + c]; g is G (6, k) row-major. */
void dg_cpu_avx512_wino_weights(const double *g, int k, const float *kernels, int cols, float *u,
                                size_t xi_stride);
void dg_cpu_avx512_wino_input(const float *patch, size_t row_stride, int channels, float *v,
                              size_t xi_stride);
void dg_cpu_avx512_wino_output(int m, const float *mm, size_t xi_stride, const float *bias,
                               int relu, float *out, size_t row_stride, size_t pixel_stride);
void dg_cpu_avx512_wino_grad(int m, const float *tile, size_t row_stride, int channels, float *z,
                             size_t xi_stride);

/* One row of an NCHW tensor to NHWC: dst[x*channels + c] = src[c*plane_stride + x] for
 * x < width, c < channels (a multiple of 16). */
void dg_cpu_avx512_to_nhwc(const float *src, size_t plane_stride, int channels, int width,
                           float *dst);

/* The inverse: dst[c*plane_stride + x] = src[x*channels + c] for x < count, c < channels
 * (a multiple of 16). */
void dg_cpu_avx512_from_nhwc(const float *src, int channels, int count, float *dst,
                             size_t plane_stride);

/* sums[c] = sum over pixels of src[pixel*channels + c], channels a multiple of 16. */
void dg_cpu_avx512_channel_sums(const float *src, size_t pixels, int channels, float *sums);

/* out[i] = in[i] * dg_dropout_scale(rate, key, i) for i in [begin, end), bit-identical to
 * the element math. */
void dg_cpu_avx512_dropout(size_t begin, size_t end, float rate, const struct dg_dropout_key *key,
                           const float *in, float *out);

/* 2x2 max-pool of one (h, w) plane into (h/2, w/2), and its backward: dy to the first
 * maximum of each window (row-major, strict >), zero elsewhere, including an odd last row or
 * column. Bit-identical to the scalar loops. */
void dg_cpu_avx512_maxpool_fwd(const float *x, int h, int w, float *y);
void dg_cpu_avx512_maxpool_bwd(const float *x, const float *dy, int h, int w, float *dx);

/* w -= lr*g / (sqrt(a) + eps) with a = rho*a + (1-rho)*g^2, in the operation order of
 * kernels/rmsprop.cuh (bit-identical to it). */
void dg_cpu_avx512_rmsprop(size_t n, float *w, const float *g, float *acc, float lr, float rho,
                           float eps);

#endif
