/* The CPU's bf16 math (`--math bf16`): convolutions and dense layers multiply operands rounded
 * to bfloat16 and accumulate in float32, as PyTorch's CPU autocast does; everything else
 * (activations between ops, master weights, gradients, RMSprop state, softmax, loss) stays
 * float32.
 *
 * bf16 keeps the sign, the 8 exponent bits and the top 7 mantissa bits of a float32. A product
 * of two bf16 values is exact in float32 (8 + 8 significant bits), so "bf16 operands, float32
 * accumulation" is one number per summation order whichever unit runs it: the bf16 dot-product
 * instruction (AVX512-BF16 vdpbf16ps: two products added to a float32 lane, the odd one first)
 * or a float32 multiply and add on bf16 values.
 *
 * The kernels (src/cpu/isa/bf16_kernels.c) are compiled for AVX512-BF16 and in portable C;
 * the portable table emulates vdpbf16ps and runs only in tests (so that the bf16 algorithms
 * are checked on machines without bf16 units); the backend refuses `--math bf16` where the
 * CPU has no bf16 unit this build uses. */
#ifndef DIGITS_CPU_BF16_H
#define DIGITS_CPU_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "math/bf16.h" /* dg_bf16_round, dg_bf16_to_float, dg_bf16_value */

/* One table per bf16 unit. Operands are bf16 bit patterns (uint16_t) in pairs: a pair is two
 * consecutive uint16_t (the first is the even element of vdpbf16ps, the second the odd one),
 * and its dot product with another pair is added to a float32 as odd * odd, then even * even.
 *   conv_plane   out[c][o] = sum over (ky, kx, channel pair q) of the pair
 *                wt[((ky*k + kx)*pairs + q)*ldc*2 + 2c ..] . x2[q*plane_stride + 2(o + ky*wp + kx) ..]
 *                for channels c < couts (1..8) and outputs o < 16*vecs (vecs 1..3), summed in that
 *                order; x2 is a padded image "pair-planar" (plane q holds the pairs of channels
 *                2q, 2q+1, pixel by pixel, rows wp pixels apart) offset to the first output, so an
 *                output o is the pixel o of the flattened plane. out (couts, 16*vecs).
 *   filter_plane out[c*taps + t] = sum over images n < images, steps j < steps, lanes i < 16 of
 *                the pair g[n*g_image + c*g_plane + 32j + 2i ..] . x[n*x_image + 32j + 2i + t ..]
 *                for c < couts (1..8), t < taps (1..5), couts x taps <= 24: per lane in (n, j) order, then the 16
 *                lanes added (in the vector unit's reduction order); g and x are flattened bf16
 *                planes (gradient and padded input), so a pair is two neighbouring pixels.
 *   round        dst[i] = dg_bf16_round(src[i]), i < n.
 *   pairs        dst[2i] = dg_bf16_round(a[i]), dst[2i + 1] = dg_bf16_round(b[i]), i < n (b NULL:
 *                zeros): the pair-planar images.
 *   store        dst[i] = src[i] + bias, then ReLU when relu (NaN gives 0), i < n: a float32
 *                add, the same on every unit. */
struct dg_cpu_bf16_ops {
    const char *name; /* "AVX512-BF16", "portable C (emulated vdpbf16ps)" */
    void (*conv_plane)(const uint16_t *x2, size_t plane_stride, int pairs, int k, int wp,
                       const uint16_t *wt, int ldc, int couts, int vecs, float *out);
    void (*filter_plane)(const uint16_t *g, size_t g_plane, size_t g_image, const uint16_t *x,
                         size_t x_image, int images, int steps, int couts, int taps, float *out);
    void (*round)(const float *src, size_t n, uint16_t *dst);
    void (*pairs)(const float *a, const float *b, size_t n, uint16_t *dst);
    void (*store)(const float *src, size_t n, float bias, int relu, float *dst);
};

extern const struct dg_cpu_bf16_ops dg_cpu_bf16_portable;
#if defined(__x86_64__)
extern const struct dg_cpu_bf16_ops dg_cpu_bf16_avx512;
#endif

#endif
