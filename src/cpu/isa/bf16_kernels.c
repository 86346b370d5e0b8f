/* The bf16 kernels (src/cpu/bf16.h gives the layouts), one source compiled twice: with
 * DG_BF16_AVX512 (flags -mavx512f -mavx512bf16) the dot products are vdpbf16ps on 16-lane zmm
 * vectors, blocks held in registers (conv_plane: up to 8 channels x 3 vectors of 16 pixels;
 * filter_plane: up to 4 gradient planes x 5 taps, vectors of 32 pixels); without it, portable
 * C that adds each pair's products to a float32 in the instruction's order (odd, then even),
 * for tests on machines without bf16 units. */
#include "cpu/bf16.h"

#if defined(DG_BF16_AVX512)
#include <immintrin.h>
#endif

#define DG_BF16_ROWS 8  /* most output channels per conv_plane call */
#define DG_BF16_VECS 3  /* most 16-pixel vectors per conv_plane call */
#define DG_BF16_FCOUTS 8 /* most gradient planes per filter_plane call (couts x taps <= 24) */
#define DG_BF16_FTAPS 5  /* most taps per filter_plane call */

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

/* vcvtneps2bf16 rounds as dg_bf16_round (nearest even, denormals to zero, NaN quiet); the
 * tests compare the two over every class of input. AVX-512F and AVX512-BF16 only. */
static void round_all(const float *src, size_t n, uint16_t *dst)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m256bh r = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm512_mask_cvtepi32_storeu_epi16(dst + i, m, _mm512_cvtepu16_epi32((__m256i)r));
    }
}

static void store(const float *src, size_t n, float bias, int relu, float *dst)
{
    const __m512 b = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    size_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src + i), b);
        if (relu)
            v = _mm512_max_ps(v, zero); /* NaN -> 0: max returns its second operand */
        _mm512_mask_storeu_ps(dst + i, m, v);
    }
}

static inline __m512i pairs16(__m512 a, __m512 b)
{
    __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
    __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

static void pairs_of(const float *a, const float *b, size_t n, uint16_t *dst)
{
    size_t i = 0;
    const __m512 zero = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_si512((void *)(dst + 2 * i),
                            pairs16(_mm512_loadu_ps(a + i), b ? _mm512_loadu_ps(b + i) : zero));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 va = _mm512_maskz_loadu_ps(m, a + i);
        __m512 vb = b ? _mm512_maskz_loadu_ps(m, b + i) : zero;
        _mm512_mask_storeu_epi32(dst + 2 * i, m, pairs16(va, vb));
    }
}

static inline __attribute__((always_inline)) void
plane_block(const uint16_t *x2, size_t plane_stride, int pairs, int k, int wp, const uint16_t *wt,
            int ldc, const int C, const int V, float *out)
{
    __m512 acc[DG_BF16_ROWS][DG_BF16_VECS];
#pragma GCC unroll 8
    for (int c = 0; c < C; c++)
#pragma GCC unroll 3
        for (int v = 0; v < V; v++)
            acc[c][v] = _mm512_setzero_ps();
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
            const uint16_t *in = x2 + (size_t)2 * (ky * wp + kx);
            const uint16_t *wk = wt + (size_t)(ky * k + kx) * pairs * ldc * 2;
            for (int q = 0; q < pairs; q++) {
                __m512bh xv[DG_BF16_VECS];
#pragma GCC unroll 3
                for (int v = 0; v < V; v++)
                    xv[v] = vec_at(in + (size_t)q * plane_stride + 32 * v);
                const uint16_t *wq = wk + (size_t)q * ldc * 2;
#pragma GCC unroll 8
                for (int c = 0; c < C; c++) {
                    __m512bh s = pair_at(wq + 2 * c);
#pragma GCC unroll 3
                    for (int v = 0; v < V; v++)
                        acc[c][v] = _mm512_dpbf16_ps(acc[c][v], s, xv[v]);
                }
            }
        }
#pragma GCC unroll 8
    for (int c = 0; c < C; c++)
#pragma GCC unroll 3
        for (int v = 0; v < V; v++)
            _mm512_storeu_ps(out + (size_t)c * 16 * V + 16 * v, acc[c][v]);
}

static inline __attribute__((always_inline)) void
fplane_block(const uint16_t *g, size_t g_plane, size_t g_image, const uint16_t *x, size_t x_image,
             int images, int steps, const int C, const int T, float *out)
{
    __m512 acc[DG_BF16_FCOUTS][DG_BF16_FTAPS];
#pragma GCC unroll 8
    for (int c = 0; c < C; c++)
#pragma GCC unroll 5
        for (int t = 0; t < T; t++)
            acc[c][t] = _mm512_setzero_ps();
    for (int n = 0; n < images; n++) {
        const uint16_t *gn = g + (size_t)n * g_image, *xn = x + (size_t)n * x_image;
        for (int j = 0; j < steps; j++) {
            __m512bh gv[DG_BF16_FCOUTS], xv[DG_BF16_FTAPS];
#pragma GCC unroll 8
            for (int c = 0; c < C; c++)
                gv[c] = vec_at(gn + (size_t)c * g_plane + 32 * (size_t)j);
#pragma GCC unroll 5
            for (int t = 0; t < T; t++)
                xv[t] = vec_at(xn + 32 * (size_t)j + t);
#pragma GCC unroll 8
            for (int c = 0; c < C; c++)
#pragma GCC unroll 5
                for (int t = 0; t < T; t++)
                    acc[c][t] = _mm512_dpbf16_ps(acc[c][t], gv[c], xv[t]);
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; c++)
#pragma GCC unroll 5
        for (int t = 0; t < T; t++)
            out[c * T + t] = _mm512_reduce_add_ps(acc[c][t]);
}

typedef void (*plane_fn)(const uint16_t *, size_t, int, int, int, const uint16_t *, int, float *);
typedef void (*fplane_fn)(const uint16_t *, size_t, size_t, const uint16_t *, size_t, int, int,
                          float *);

#define DG_PLANE_BLOCKS(C)                                                                         \
    static void plane_##C##_1(const uint16_t *x, size_t ps, int pairs, int k, int wp,             \
                              const uint16_t *wt, int ldc, float *out)                             \
    {                                                                                              \
        plane_block(x, ps, pairs, k, wp, wt, ldc, C, 1, out);                                      \
    }                                                                                              \
    static void plane_##C##_2(const uint16_t *x, size_t ps, int pairs, int k, int wp,             \
                              const uint16_t *wt, int ldc, float *out)                             \
    {                                                                                              \
        plane_block(x, ps, pairs, k, wp, wt, ldc, C, 2, out);                                      \
    }                                                                                              \
    static void plane_##C##_3(const uint16_t *x, size_t ps, int pairs, int k, int wp,             \
                              const uint16_t *wt, int ldc, float *out)                             \
    {                                                                                              \
        plane_block(x, ps, pairs, k, wp, wt, ldc, C, 3, out);                                      \
    }

#define DG_FPLANE_BLOCK(C, T)                                                                      \
    static void fplane_##C##_##T(const uint16_t *g, size_t gp, size_t gi, const uint16_t *x,       \
                                 size_t xi, int images, int steps, float *out)                     \
    {                                                                                              \
        fplane_block(g, gp, gi, x, xi, images, steps, C, T, out);                                  \
    }
#define DG_FPLANE_BLOCKS(C)                                                                        \
    DG_FPLANE_BLOCK(C, 1)                                                                          \
    DG_FPLANE_BLOCK(C, 2) DG_FPLANE_BLOCK(C, 3) DG_FPLANE_BLOCK(C, 4) DG_FPLANE_BLOCK(C, 5)

DG_PLANE_BLOCKS(1)
DG_PLANE_BLOCKS(2)
DG_PLANE_BLOCKS(3)
DG_PLANE_BLOCKS(4)
DG_PLANE_BLOCKS(5)
DG_PLANE_BLOCKS(6)
DG_PLANE_BLOCKS(7)
DG_PLANE_BLOCKS(8)
DG_FPLANE_BLOCKS(1)
DG_FPLANE_BLOCKS(2)
DG_FPLANE_BLOCKS(3)
DG_FPLANE_BLOCKS(4)
DG_FPLANE_BLOCKS(5)
DG_FPLANE_BLOCKS(6)
DG_FPLANE_BLOCKS(7)
DG_FPLANE_BLOCKS(8)

#define DG_PLANE_ROW(c) {plane_##c##_1, plane_##c##_2, plane_##c##_3}
#define DG_FPLANE_ROW(c) {fplane_##c##_1, fplane_##c##_2, fplane_##c##_3, fplane_##c##_4, fplane_##c##_5}

static const plane_fn plane_blocks[DG_BF16_ROWS][DG_BF16_VECS] = {
    DG_PLANE_ROW(1), DG_PLANE_ROW(2), DG_PLANE_ROW(3), DG_PLANE_ROW(4),
    DG_PLANE_ROW(5), DG_PLANE_ROW(6), DG_PLANE_ROW(7), DG_PLANE_ROW(8)};
static const fplane_fn fplane_blocks[DG_BF16_FCOUTS][DG_BF16_FTAPS] = {
    DG_FPLANE_ROW(1), DG_FPLANE_ROW(2), DG_FPLANE_ROW(3), DG_FPLANE_ROW(4),
    DG_FPLANE_ROW(5), DG_FPLANE_ROW(6), DG_FPLANE_ROW(7), DG_FPLANE_ROW(8)};

static void conv_plane(const uint16_t *x2, size_t plane_stride, int pairs, int k, int wp,
                       const uint16_t *wt, int ldc, int couts, int vecs, float *out)
{
    plane_blocks[couts - 1][vecs - 1](x2, plane_stride, pairs, k, wp, wt, ldc, out);
}

static void filter_plane(const uint16_t *g, size_t g_plane, size_t g_image, const uint16_t *x,
                         size_t x_image, int images, int steps, int couts, int taps, float *out)
{
    fplane_blocks[couts - 1][taps - 1](g, g_plane, g_image, x, x_image, images, steps, out);
}

const struct dg_cpu_bf16_ops dg_cpu_bf16_avx512 = {
    .name = "AVX512-BF16",
    .conv_plane = conv_plane,
    .filter_plane = filter_plane,
    .round = round_all,
    .pairs = pairs_of,
    .store = store,
};

#else /* portable C */

static void round_all(const float *src, size_t n, uint16_t *dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = dg_bf16_round(src[i]);
}

static void store(const float *src, size_t n, float bias, int relu, float *dst)
{
    for (size_t i = 0; i < n; i++) {
        float v = src[i] + bias;
        dst[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

static void pairs_of(const float *a, const float *b, size_t n, uint16_t *dst)
{
    if (!b) {
        for (size_t i = 0; i < n; i++) {
            dst[2 * i] = dg_bf16_round(a[i]);
            dst[2 * i + 1] = 0;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = dg_bf16_round(a[i]);
        dst[2 * i + 1] = dg_bf16_round(b[i]);
    }
}


/* acc + a . b for the pairs a, b: the odd products first, then the even ones, each added in
 * float32 (each product is exact). */
static inline float dot2(float acc, const uint16_t *a, const uint16_t *b)
{
    acc += dg_bf16_to_float(a[1]) * dg_bf16_to_float(b[1]);
    acc += dg_bf16_to_float(a[0]) * dg_bf16_to_float(b[0]);
    return acc;
}

/* (One output's sum is kept in the kernel's order; GCC 12 at -O3 vectorised an earlier form of
 * these loops across outputs into wrong sums, hence the plain shape.) */
static void conv_plane(const uint16_t *x2, size_t plane_stride, int pairs, int k, int wp,
                       const uint16_t *wt, int ldc, int couts, int vecs, float *out)
{
    int n = 16 * vecs;
    for (int c = 0; c < couts; c++) {
        float acc[48];
        for (int o = 0; o < n; o++)
            acc[o] = 0.0f;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const uint16_t *in = x2 + (size_t)2 * (ky * wp + kx);
                const uint16_t *wk = wt + ((size_t)(ky * k + kx) * pairs * ldc + c) * 2;
                for (int q = 0; q < pairs; q++)
                    for (int o = 0; o < n; o++)
                        acc[o] = dot2(acc[o], wk + (size_t)q * ldc * 2,
                                      in + (size_t)q * plane_stride + 2 * o);
            }
        for (int o = 0; o < n; o++)
            out[(size_t)c * n + o] = acc[o];
    }
}

/* The lanes of vdpbf16ps kept apart as the vector code keeps them, then added in order. */
static void filter_plane(const uint16_t *g, size_t g_plane, size_t g_image, const uint16_t *x,
                         size_t x_image, int images, int steps, int couts, int taps, float *out)
{
    for (int c = 0; c < couts; c++)
        for (int t = 0; t < taps; t++) {
            float lanes[16];
            for (int i = 0; i < 16; i++)
                lanes[i] = 0.0f;
            for (int n = 0; n < images; n++) {
                const uint16_t *gn = g + (size_t)n * g_image + (size_t)c * g_plane;
                const uint16_t *xn = x + (size_t)n * x_image + t;
                for (int j = 0; j < steps; j++)
                    for (int i = 0; i < 16; i++)
                        lanes[i] = dot2(lanes[i], gn + 32 * (size_t)j + 2 * i,
                                        xn + 32 * (size_t)j + 2 * i);
            }
            float sum = 0.0f;
            for (int i = 0; i < 16; i++)
                sum += lanes[i];
            out[c * taps + t] = sum;
        }
}

const struct dg_cpu_bf16_ops dg_cpu_bf16_portable = {
    .name = "portable C (emulated vdpbf16ps)",
    .conv_plane = conv_plane,
    .filter_plane = filter_plane,
    .round = round_all,
    .pairs = pairs_of,
    .store = store,
};

#endif
