/* The bf16 kernels (src/cpu/bf16.h gives the layouts), one source compiled twice: with
 * DG_BF16_AVX512 (flags -mavx512f -mavx512bf16) the dot products are vdpbf16ps on 16-lane zmm
 * vectors, blocks of up to 14 pixels (rows) x 2 vectors held in registers; without it, portable
 * C that adds each pair's products to a float32 in the instruction's order (odd, then even),
 * for tests on machines without bf16 units. */
#include "cpu/bf16.h"

#if defined(DG_BF16_AVX512)
#include <immintrin.h>
#endif

#define DG_BF16_TILE 14

static void round_all(const float *src, size_t n, uint16_t *dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = dg_bf16_round(src[i]);
}

#if defined(DG_BF16_AVX512)

static inline __m512bh pair_at(const uint16_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return (__m512bh)_mm512_set1_epi32((int)v);
}

static inline __m512bh vec_at(const uint16_t *p)
{
    return (__m512bh)_mm512_loadu_si512((const void *)p);
}

static inline __attribute__((always_inline)) void
conv_block(const uint16_t *xrow, size_t row_stride, int cin2, int k, const uint16_t *wp,
           size_t ldw, const int B, const int V, const float *bias, int relu, float *out)
{
    __m512 acc[DG_BF16_TILE][2];
#pragma GCC unroll 16
    for (int b = 0; b < B; b++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            acc[b][v] = _mm512_setzero_ps();
    int pairs = cin2 / 2;
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
            const uint16_t *in = xrow + (size_t)ky * row_stride + (size_t)kx * cin2;
            const uint16_t *wk = wp + (size_t)(ky * k + kx) * pairs * ldw;
            for (int q = 0; q < pairs; q++) {
                __m512bh w[2];
#pragma GCC unroll 2
                for (int v = 0; v < V; v++)
                    w[v] = vec_at(wk + (size_t)q * ldw + 32 * v);
#pragma GCC unroll 16
                for (int b = 0; b < B; b++) {
                    __m512bh s = pair_at(in + (size_t)b * cin2 + 2 * q);
#pragma GCC unroll 2
                    for (int v = 0; v < V; v++)
                        acc[b][v] = _mm512_dpbf16_ps(acc[b][v], s, w[v]);
                }
            }
        }
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int b = 0; b < B; b++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) {
            __m512 r = acc[b][v];
            if (bias)
                r = _mm512_add_ps(r, _mm512_loadu_ps(bias + 16 * v));
            if (relu)
                r = _mm512_max_ps(r, zero); /* NaN -> 0 (max returns its second operand) */
            _mm512_storeu_ps(out + (size_t)b * 16 * V + 16 * v, r);
        }
}

static inline __attribute__((always_inline)) void
filter_block(const uint16_t *xs, size_t row_stride, int cin, const uint16_t *gs, size_t ldg,
             int height, int pairs, const int R, const int V, float *acc)
{
    __m512 a[DG_BF16_TILE][2];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            a[r][v] = _mm512_loadu_ps(acc + (size_t)r * 16 * V + 16 * v);
    for (int y = 0; y < height; y++) {
        const uint16_t *xrow = xs + (size_t)y * row_stride;
        const uint16_t *grow = gs + (size_t)y * pairs * ldg;
        for (int j = 0; j < pairs; j++) {
            __m512bh g[2];
#pragma GCC unroll 2
            for (int v = 0; v < V; v++)
                g[v] = vec_at(grow + (size_t)j * ldg + 32 * v);
            const uint16_t *xp = xrow + (size_t)2 * j * cin * 2;
#pragma GCC unroll 16
            for (int r = 0; r < R; r++) {
                __m512bh s = pair_at(xp + (size_t)r * 2);
#pragma GCC unroll 2
                for (int v = 0; v < V; v++)
                    a[r][v] = _mm512_dpbf16_ps(a[r][v], s, g[v]);
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            _mm512_storeu_ps(acc + (size_t)r * 16 * V + 16 * v, a[r][v]);
}

typedef void (*conv_fn)(const uint16_t *, size_t, int, int, const uint16_t *, size_t,
                        const float *, int, float *);
typedef void (*filter_fn)(const uint16_t *, size_t, int, const uint16_t *, size_t, int, int,
                          float *);

#define DG_BF16_BLOCKS(B)                                                                          \
    static void conv_##B##_1(const uint16_t *x, size_t rs, int c2, int k, const uint16_t *w,      \
                             size_t ldw, const float *bias, int relu, float *out)                  \
    {                                                                                              \
        conv_block(x, rs, c2, k, w, ldw, B, 1, bias, relu, out);                                   \
    }                                                                                              \
    static void conv_##B##_2(const uint16_t *x, size_t rs, int c2, int k, const uint16_t *w,      \
                             size_t ldw, const float *bias, int relu, float *out)                  \
    {                                                                                              \
        conv_block(x, rs, c2, k, w, ldw, B, 2, bias, relu, out);                                   \
    }                                                                                              \
    static void filter_##B##_1(const uint16_t *x, size_t rs, int cin, const uint16_t *g,          \
                               size_t ldg, int h, int pairs, float *acc)                           \
    {                                                                                              \
        filter_block(x, rs, cin, g, ldg, h, pairs, B, 1, acc);                                     \
    }                                                                                              \
    static void filter_##B##_2(const uint16_t *x, size_t rs, int cin, const uint16_t *g,          \
                               size_t ldg, int h, int pairs, float *acc)                           \
    {                                                                                              \
        filter_block(x, rs, cin, g, ldg, h, pairs, B, 2, acc);                                     \
    }

DG_BF16_BLOCKS(1)
DG_BF16_BLOCKS(2)
DG_BF16_BLOCKS(3)
DG_BF16_BLOCKS(4)
DG_BF16_BLOCKS(5)
DG_BF16_BLOCKS(6)
DG_BF16_BLOCKS(7)
DG_BF16_BLOCKS(8)
DG_BF16_BLOCKS(9)
DG_BF16_BLOCKS(10)
DG_BF16_BLOCKS(11)
DG_BF16_BLOCKS(12)
DG_BF16_BLOCKS(13)
DG_BF16_BLOCKS(14)

#define DG_BF16_ROW(prefix, v)                                                                     \
    {prefix##1_##v,  prefix##2_##v,  prefix##3_##v,  prefix##4_##v,  prefix##5_##v,                \
     prefix##6_##v,  prefix##7_##v,  prefix##8_##v,  prefix##9_##v,  prefix##10_##v,               \
     prefix##11_##v, prefix##12_##v, prefix##13_##v, prefix##14_##v}

static const conv_fn conv_blocks[2][DG_BF16_TILE] = {DG_BF16_ROW(conv_, 1), DG_BF16_ROW(conv_, 2)};
static const filter_fn filter_blocks[2][DG_BF16_TILE] = {DG_BF16_ROW(filter_, 1),
                                                         DG_BF16_ROW(filter_, 2)};

static void conv_row(const uint16_t *xrow, size_t row_stride, int cin2, int k, const uint16_t *wp,
                     size_t ldw, int vecs, int pixels, const float *bias, int relu, float *out)
{
    conv_blocks[vecs - 1][pixels - 1](xrow, row_stride, cin2, k, wp, ldw, bias, relu, out);
}

static void filter_tile(const uint16_t *xs, size_t row_stride, int cin, const uint16_t *gs,
                        size_t ldg, int height, int pairs, int rows, int vecs, float *acc)
{
    filter_blocks[vecs - 1][rows - 1](xs, row_stride, cin, gs, ldg, height, pairs, acc);
}

const struct dg_cpu_bf16_ops dg_cpu_bf16_avx512 = {
    .name = "AVX512-BF16",
    .conv_row = conv_row,
    .filter_tile = filter_tile,
    .round = round_all,
};

#else /* portable C */

/* acc + a . b for the pairs a, b: the odd products first, then the even ones, each added in
 * float32 (each product is exact). */
static inline float dot2(float acc, const uint16_t *a, const uint16_t *b)
{
    acc += dg_bf16_to_float(a[1]) * dg_bf16_to_float(b[1]);
    acc += dg_bf16_to_float(a[0]) * dg_bf16_to_float(b[0]);
    return acc;
}

/* (The loops keep one output's sum in a scalar, summed in the kernel's order; GCC 12 at -O3
 * vectorised an earlier form of them across outputs wrongly, hence the plain shape.) */
static void conv_row(const uint16_t *xrow, size_t row_stride, int cin2, int k, const uint16_t *wp,
                     size_t ldw, int vecs, int pixels, const float *bias, int relu, float *out)
{
    int couts = 16 * vecs, pairs = cin2 / 2;
    for (int b = 0; b < pixels; b++) {
        float acc[32];
        for (int c = 0; c < couts; c++)
            acc[c] = 0.0f;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const uint16_t *in = xrow + (size_t)ky * row_stride + (size_t)(b + kx) * cin2;
                const uint16_t *wk = wp + (size_t)(ky * k + kx) * pairs * ldw;
                for (int q = 0; q < pairs; q++)
                    for (int c = 0; c < couts; c++)
                        acc[c] = dot2(acc[c], in + 2 * q, wk + (size_t)q * ldw + 2 * c);
            }
        for (int c = 0; c < couts; c++) {
            float v = acc[c];
            if (bias)
                v += bias[c];
            if (relu)
                v = v > 0.0f ? v : 0.0f;
            out[(size_t)b * couts + c] = v;
        }
    }
}

static void filter_tile(const uint16_t *xs, size_t row_stride, int cin, const uint16_t *gs,
                        size_t ldg, int height, int pairs, int rows, int vecs, float *acc)
{
    int couts = 16 * vecs;
    for (int y = 0; y < height; y++)
        for (int j = 0; j < pairs; j++) {
            const uint16_t *g = gs + ((size_t)y * pairs + j) * ldg;
            const uint16_t *x = xs + (size_t)y * row_stride + (size_t)2 * j * cin * 2;
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < couts; c++)
                    acc[(size_t)r * couts + c] =
                        dot2(acc[(size_t)r * couts + c], x + (size_t)r * 2, g + 2 * c);
        }
}

const struct dg_cpu_bf16_ops dg_cpu_bf16_portable = {
    .name = "portable C (emulated vdpbf16ps)",
    .conv_row = conv_row,
    .filter_tile = filter_tile,
    .round = round_all,
};

#endif
