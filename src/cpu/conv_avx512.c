/* AVX-512F kernels of the CPU backend: a register-blocked direct convolution over padded NHWC
 * input (up to 14 output pixels x 32 output channels in 28 zmm accumulators), the matching
 * weight-gradient tile, NCHW <-> NHWC transposes, channel sums, dropout (Philox for 16
 * blocks at once) and RMSprop. Compiled for any x86-64 with target attributes; callers check
 * __builtin_cpu_supports("avx512f") first. Layouts are described in cpu_internal.h. */
#include "cpu/cpu_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include "dropout.cuh"
#include "rmsprop.cuh"

#define DG_AVX512 __attribute__((target("avx512f")))
#define DG_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) static inline

/* acc[b][v] = sum over (ky, j) of xrow[ky*row_stride + b*cin + j] * wp[(ky*k*cin + j)*ldw + 16v]
 * for B pixels and V vectors of 16 channels; B and V are compile-time constants at each call. */
DG_AVX512_INLINE void conv_row_tile(const float *xrow, size_t row_stride, int cin, int k,
                                    const float *wp, int ldw, const int B, const int V,
                                    const float *bias, int relu, float *out)
{
    __m512 acc[14][2];
#pragma GCC unroll 16
    for (int b = 0; b < B; b++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            acc[b][v] = _mm512_setzero_ps();
    const int span = k * cin;
    for (int ky = 0; ky < k; ky++) {
        const float *in = xrow + (size_t)ky * row_stride;
        const float *wk = wp + (size_t)ky * span * ldw;
        for (int j = 0; j < span; j++) {
            __m512 w0 = _mm512_loadu_ps(wk + (size_t)j * ldw);
            __m512 w1 = V > 1 ? _mm512_loadu_ps(wk + (size_t)j * ldw + 16) : w0;
#pragma GCC unroll 16
            for (int b = 0; b < B; b++) {
                __m512 s = _mm512_set1_ps(in[b * cin + j]);
                acc[b][0] = _mm512_fmadd_ps(s, w0, acc[b][0]);
                if (V > 1)
                    acc[b][1] = _mm512_fmadd_ps(s, w1, acc[b][1]);
            }
        }
    }
    __m512 bias0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    __m512 bias1 = bias && V > 1 ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
    __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int b = 0; b < B; b++) {
        __m512 r0 = _mm512_add_ps(acc[b][0], bias0);
        if (relu)
            r0 = _mm512_max_ps(r0, zero);
        _mm512_storeu_ps(out + b * 16 * V, r0);
        if (V > 1) {
            __m512 r1 = _mm512_add_ps(acc[b][1], bias1);
            if (relu)
                r1 = _mm512_max_ps(r1, zero);
            _mm512_storeu_ps(out + b * 32 + 16, r1);
        }
    }
}

typedef void (*conv_row_fn)(const float *, size_t, int, int, const float *, int, const float *, int,
                            float *);

#define DG_CONV_ROW(B, V)                                                                          \
    DG_AVX512 static void conv_row_##B##_##V(const float *xrow, size_t row_stride, int cin, int k, \
                                             const float *wp, int ldw, const float *bias,          \
                                             int relu, float *out)                                 \
    {                                                                                              \
        conv_row_tile(xrow, row_stride, cin, k, wp, ldw, B, V, bias, relu, out);                   \
    }
#define DG_CONV_ROWS(V)                                                                            \
    DG_CONV_ROW(1, V)                                                                              \
    DG_CONV_ROW(2, V)                                                                              \
    DG_CONV_ROW(3, V)                                                                              \
    DG_CONV_ROW(4, V)                                                                              \
    DG_CONV_ROW(5, V)                                                                              \
    DG_CONV_ROW(6, V)                                                                              \
    DG_CONV_ROW(7, V)                                                                              \
    DG_CONV_ROW(8, V)                                                                              \
    DG_CONV_ROW(9, V)                                                                              \
    DG_CONV_ROW(10, V)                                                                             \
    DG_CONV_ROW(11, V)                                                                             \
    DG_CONV_ROW(12, V)                                                                             \
    DG_CONV_ROW(13, V)                                                                             \
    DG_CONV_ROW(14, V)
DG_CONV_ROWS(1)
DG_CONV_ROWS(2)

#define DG_ROW_TABLE(V)                                                                            \
    {                                                                                              \
        conv_row_1_##V, conv_row_2_##V, conv_row_3_##V, conv_row_4_##V, conv_row_5_##V,            \
            conv_row_6_##V, conv_row_7_##V, conv_row_8_##V, conv_row_9_##V, conv_row_10_##V,       \
            conv_row_11_##V, conv_row_12_##V, conv_row_13_##V, conv_row_14_##V                     \
    }
static const conv_row_fn conv_row_v1[14] = DG_ROW_TABLE(1);
static const conv_row_fn conv_row_v2[14] = DG_ROW_TABLE(2);

void dg_cpu_avx512_conv_row(const float *xrow, size_t row_stride, int cin, int k, const float *wp,
                            int cout_total, int couts, int pixels, const float *bias, int relu,
                            float *out)
{
    const conv_row_fn *table = couts == 32 ? conv_row_v2 : conv_row_v1;
    table[pixels - 1](xrow, row_stride, cin, k, wp, cout_total, bias, relu, out);
}

/* acc[r][v] += sum over pixels of a[r] * g[16v..], R rows and V vectors constant per call. */
DG_AVX512_INLINE void filter_tile(const float *xp, size_t row_stride, int cin, const float *dyh,
                                  int ldg, int height, int width, const int R, const int V,
                                  float *acc_out)
{
    __m512 acc[14][2];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < V; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (int y = 0; y < height; y++) {
        const float *a = xp + (size_t)y * row_stride;
        const float *g = dyh + (size_t)y * width * ldg;
        for (int x = 0; x < width; x++) {
            __m512 g0 = _mm512_loadu_ps(g);
            __m512 g1 = V > 1 ? _mm512_loadu_ps(g + 16) : g0;
#pragma GCC unroll 16
            for (int r = 0; r < R; r++) {
                __m512 s = _mm512_set1_ps(a[r]);
                acc[r][0] = _mm512_fmadd_ps(s, g0, acc[r][0]);
                if (V > 1)
                    acc[r][1] = _mm512_fmadd_ps(s, g1, acc[r][1]);
            }
            a += cin;
            g += ldg;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        float *o = acc_out + r * 16 * V;
        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc[r][0]));
        if (V > 1)
            _mm512_storeu_ps(o + 16, _mm512_add_ps(_mm512_loadu_ps(o + 16), acc[r][1]));
    }
}

typedef void (*filter_tile_fn)(const float *, size_t, int, const float *, int, int, int, float *);

#define DG_FILTER_TILE(R, V)                                                                       \
    DG_AVX512 static void filter_tile_##R##_##V(const float *xp, size_t row_stride, int cin,       \
                                                const float *dyh, int ldg, int height, int width,  \
                                                float *acc)                                        \
    {                                                                                              \
        filter_tile(xp, row_stride, cin, dyh, ldg, height, width, R, V, acc);                      \
    }
#define DG_FILTER_TILES(V)                                                                         \
    DG_FILTER_TILE(1, V)                                                                           \
    DG_FILTER_TILE(2, V)                                                                           \
    DG_FILTER_TILE(3, V)                                                                           \
    DG_FILTER_TILE(4, V)                                                                           \
    DG_FILTER_TILE(5, V)                                                                           \
    DG_FILTER_TILE(6, V)                                                                           \
    DG_FILTER_TILE(7, V)                                                                           \
    DG_FILTER_TILE(8, V)                                                                           \
    DG_FILTER_TILE(9, V)                                                                           \
    DG_FILTER_TILE(10, V)                                                                          \
    DG_FILTER_TILE(11, V)                                                                          \
    DG_FILTER_TILE(12, V)                                                                          \
    DG_FILTER_TILE(13, V)                                                                          \
    DG_FILTER_TILE(14, V)
DG_FILTER_TILES(1)
DG_FILTER_TILES(2)

#define DG_TILE_TABLE(V)                                                                           \
    {                                                                                              \
        filter_tile_1_##V, filter_tile_2_##V, filter_tile_3_##V, filter_tile_4_##V,                \
            filter_tile_5_##V, filter_tile_6_##V, filter_tile_7_##V, filter_tile_8_##V,            \
            filter_tile_9_##V, filter_tile_10_##V, filter_tile_11_##V, filter_tile_12_##V,         \
            filter_tile_13_##V, filter_tile_14_##V                                                 \
    }
static const filter_tile_fn filter_tile_v1[14] = DG_TILE_TABLE(1);
static const filter_tile_fn filter_tile_v2[14] = DG_TILE_TABLE(2);

void dg_cpu_avx512_filter_tile(const float *xp, size_t row_stride, int cin, const float *dyh,
                               int cout_total, int height, int width, int rows, int couts,
                               float *acc)
{
    const filter_tile_fn *table = couts == 32 ? filter_tile_v2 : filter_tile_v1;
    table[rows - 1](xp, row_stride, cin, dyh, cout_total, height, width, acc);
}

/* In-register transpose of 16 vectors: r[i][j] -> r[j][i]. */
DG_AVX512_INLINE void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        __m512 a = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
        __m512 b = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
        __m512 c = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        __m512 d = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
        t[k] = _mm512_shuffle_f32x4(a, c, 0x88);
        t[k + 8] = _mm512_shuffle_f32x4(a, c, 0xDD);
        t[k + 4] = _mm512_shuffle_f32x4(b, d, 0x88);
        t[k + 12] = _mm512_shuffle_f32x4(b, d, 0xDD);
    }
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

DG_AVX512 void dg_cpu_avx512_to_nhwc(const float *src, size_t plane_stride, int channels, int width,
                                     float *dst)
{
    for (int c0 = 0; c0 < channels; c0 += 16)
        for (int x0 = 0; x0 < width; x0 += 16) {
            int count = width - x0 < 16 ? width - x0 : 16;
            __mmask16 mask = (__mmask16)((1u << count) - 1u);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = _mm512_maskz_loadu_ps(mask, src + (size_t)(c0 + i) * plane_stride + x0);
            transpose16(r);
            for (int j = 0; j < count; j++)
                _mm512_storeu_ps(dst + (size_t)(x0 + j) * channels + c0, r[j]);
        }
}

DG_AVX512 void dg_cpu_avx512_from_nhwc(const float *src, int channels, int count, float *dst,
                                       size_t plane_stride)
{
    for (int c0 = 0; c0 < channels; c0 += 16)
        for (int x0 = 0; x0 < count; x0 += 16) {
            int pixels = count - x0 < 16 ? count - x0 : 16;
            __mmask16 mask = (__mmask16)((1u << pixels) - 1u);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < pixels ? _mm512_loadu_ps(src + (size_t)(x0 + i) * channels + c0)
                                  : _mm512_setzero_ps();
            transpose16(r);
            for (int j = 0; j < 16; j++)
                _mm512_mask_storeu_ps(dst + (size_t)(c0 + j) * plane_stride + x0, mask, r[j]);
        }
}

DG_AVX512 void dg_cpu_avx512_channel_sums(const float *src, size_t pixels, int channels,
                                          float *sums)
{
    for (int c = 0; c < channels; c += 16) {
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                         _mm512_setzero_ps()};
        size_t i = 0;
        for (; i + 4 <= pixels; i += 4)
            for (int l = 0; l < 4; l++)
                acc[l] = _mm512_add_ps(acc[l], _mm512_loadu_ps(src + (i + l) * channels + c));
        for (; i < pixels; i++)
            acc[0] = _mm512_add_ps(acc[0], _mm512_loadu_ps(src + i * channels + c));
        _mm512_storeu_ps(
            sums + c, _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
    }
}

/* lo and hi halves of a * b for 16 lanes of 32 bits. */
DG_AVX512_INLINE void mulhilo16(__m512i a, __m512i b, __m512i *lo, __m512i *hi)
{
    __m512i even = _mm512_mul_epu32(a, b);
    __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), b);
    *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

DG_AVX512 void dg_cpu_avx512_dropout(size_t begin, size_t end, float rate,
                                     const struct dg_dropout_key *key, const float *in, float *out)
{
    const __m512i m0 = _mm512_set1_epi64(0xD2511F53), m1 = _mm512_set1_epi64(0xCD9E8D57);
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 keep = _mm512_set1_ps(1.0f / (1.0f - rate));
    const __m512 vrate = _mm512_set1_ps(rate);
    const __m512 unit = _mm512_set1_ps(1.0f / 16777216.0f);
    const uint32_t purpose = DG_RNG_DROPOUT + key->layer;
    size_t i = begin;
    /* 64 elements = 16 Philox blocks whose counters share the high word */
    for (; i + 64 <= end && (i >> 34) == ((i + 63) >> 34); i += 64) {
        __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)(i >> 2)), lanes);
        __m512i c1 = _mm512_set1_epi32((int)key->step);
        __m512i c2 = _mm512_set1_epi32((int)key->epoch);
        __m512i c3 = _mm512_set1_epi32((int)(purpose | ((uint32_t)(i >> 34) << 8)));
        uint32_t k0 = (uint32_t)key->seed, k1 = (uint32_t)(key->seed >> 32);
        for (int round = 0; round < 10; round++) {
            __m512i lo0, hi0, lo1, hi1;
            mulhilo16(c0, m0, &lo0, &hi0);
            mulhilo16(c2, m1, &lo1, &hi1);
            c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
            c1 = lo1;
            c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
            c3 = lo0;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        __m512 scale[4];
        __m512i lane_bits[4] = {c0, c1, c2, c3};
        for (int l = 0; l < 4; l++) {
            __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(lane_bits[l], 8)), unit);
            scale[l] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, vrate, _CMP_GE_OQ), keep);
        }
        /* element 4b + l is lane l of block b: interleave into element order */
        __m512 a = _mm512_unpacklo_ps(scale[0], scale[1]),
               b = _mm512_unpackhi_ps(scale[0], scale[1]);
        __m512 c = _mm512_unpacklo_ps(scale[2], scale[3]),
               d = _mm512_unpackhi_ps(scale[2], scale[3]);
        __m512 e0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
        __m512 e1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
        __m512 e2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
        __m512 e3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
        __m512 t0 = _mm512_shuffle_f32x4(e0, e1, 0x88), t1 = _mm512_shuffle_f32x4(e0, e1, 0xDD);
        __m512 t2 = _mm512_shuffle_f32x4(e2, e3, 0x88), t3 = _mm512_shuffle_f32x4(e2, e3, 0xDD);
        __m512 ordered[4] = {_mm512_shuffle_f32x4(t0, t2, 0x88), _mm512_shuffle_f32x4(t1, t3, 0x88),
                             _mm512_shuffle_f32x4(t0, t2, 0xDD),
                             _mm512_shuffle_f32x4(t1, t3, 0xDD)};
        for (int v = 0; v < 4; v++)
            _mm512_storeu_ps(out + i + 16 * v,
                             _mm512_mul_ps(_mm512_loadu_ps(in + i + 16 * v), ordered[v]));
    }
    for (; i < end; i++)
        out[i] = in[i] * dg_dropout_scale(rate, key->seed, key->layer, key->epoch, key->step, i);
}

/* The four values of 16 consecutive 2x2 windows of a row pair, and which is the first
 * maximum (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) as masks. */
struct pool16 {
    __m512 best;
    __mmask16 is1, is2, is3; /* the maximum is value 1, 2, 3 (else 0) */
};

DG_AVX512_INLINE struct pool16 pool_windows(const float *top, const float *bottom, int count)
{
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    __mmask16 lo_mask = (__mmask16)(count >= 8 ? 0xFFFFu : (1u << (2 * count)) - 1u);
    __mmask16 hi_mask = (__mmask16)(count <= 8 ? 0u : (1u << (2 * (count - 8))) - 1u);
    __m512 t0 = _mm512_maskz_loadu_ps(lo_mask, top), t1 = _mm512_maskz_loadu_ps(hi_mask, top + 16);
    __m512 b0 = _mm512_maskz_loadu_ps(lo_mask, bottom);
    __m512 b1 = _mm512_maskz_loadu_ps(hi_mask, bottom + 16);
    __m512 v[4] = {_mm512_permutex2var_ps(t0, even, t1), _mm512_permutex2var_ps(t0, odd, t1),
                   _mm512_permutex2var_ps(b0, even, b1), _mm512_permutex2var_ps(b0, odd, b1)};
    struct pool16 r;
    r.best = v[0];
    __mmask16 gt1 = _mm512_cmp_ps_mask(v[1], r.best, _CMP_GT_OQ);
    r.best = _mm512_mask_mov_ps(r.best, gt1, v[1]);
    __mmask16 gt2 = _mm512_cmp_ps_mask(v[2], r.best, _CMP_GT_OQ);
    r.best = _mm512_mask_mov_ps(r.best, gt2, v[2]);
    __mmask16 gt3 = _mm512_cmp_ps_mask(v[3], r.best, _CMP_GT_OQ);
    r.best = _mm512_mask_mov_ps(r.best, gt3, v[3]);
    r.is3 = gt3;
    r.is2 = (__mmask16)(gt2 & ~gt3);
    r.is1 = (__mmask16)(gt1 & ~gt2 & ~gt3);
    return r;
}

DG_AVX512 void dg_cpu_avx512_maxpool_fwd(const float *x, int h, int w, float *y)
{
    int oh = h / 2, ow = w / 2;
    for (int r = 0; r < oh; r++) {
        const float *top = x + (size_t)(2 * r) * w;
        for (int c = 0; c < ow; c += 16) {
            int count = ow - c < 16 ? ow - c : 16;
            struct pool16 p = pool_windows(top + 2 * c, top + w + 2 * c, count);
            _mm512_mask_storeu_ps(y + (size_t)r * ow + c, (__mmask16)((1u << count) - 1u), p.best);
        }
    }
}

DG_AVX512 void dg_cpu_avx512_maxpool_bwd(const float *x, const float *dy, int h, int w, float *dx)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    int oh = h / 2, ow = w / 2;
    for (int r = 0; r < oh; r++) {
        const float *top = x + (size_t)(2 * r) * w;
        float *dtop = dx + (size_t)(2 * r) * w;
        for (int c = 0; c < ow; c += 16) {
            int count = ow - c < 16 ? ow - c : 16;
            __mmask16 valid = (__mmask16)((1u << count) - 1u);
            struct pool16 p = pool_windows(top + 2 * c, top + w + 2 * c, count);
            __m512 g = _mm512_maskz_loadu_ps(valid, dy + (size_t)r * ow + c);
            __mmask16 is0 = (__mmask16) ~(p.is1 | p.is2 | p.is3);
            __m512 d[4] = {_mm512_maskz_mov_ps(is0, g), _mm512_maskz_mov_ps(p.is1, g),
                           _mm512_maskz_mov_ps(p.is2, g), _mm512_maskz_mov_ps(p.is3, g)};
            __mmask16 lo_mask = (__mmask16)(count >= 8 ? 0xFFFFu : (1u << (2 * count)) - 1u);
            __mmask16 hi_mask = (__mmask16)(count <= 8 ? 0u : (1u << (2 * (count - 8))) - 1u);
            for (int row = 0; row < 2; row++) {
                float *out = dtop + (size_t)row * w + 2 * c;
                __m512 a = d[2 * row], b = d[2 * row + 1];
                _mm512_mask_storeu_ps(out, lo_mask, _mm512_permutex2var_ps(a, lo, b));
                _mm512_mask_storeu_ps(out + 16, hi_mask, _mm512_permutex2var_ps(a, hi, b));
            }
        }
        if (w % 2) {
            dtop[w - 1] = 0.0f;
            dtop[w + w - 1] = 0.0f;
        }
    }
    if (h % 2)
        for (int c = 0; c < w; c++)
            dx[(size_t)(h - 1) * w + c] = 0.0f;
}

DG_AVX512 void dg_cpu_avx512_rmsprop(size_t n, float *w, const float *g, float *acc, float lr,
                                     float rho, float eps)
{
    const __m512 vrho = _mm512_set1_ps(rho);
    const __m512 vone_minus_rho = _mm512_set1_ps(1.0f - rho);
    const __m512 vlr = _mm512_set1_ps(lr);
    const __m512 veps = _mm512_set1_ps(eps);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i);
        __m512 a = _mm512_add_ps(_mm512_mul_ps(vrho, _mm512_loadu_ps(acc + i)),
                                 _mm512_mul_ps(_mm512_mul_ps(vone_minus_rho, gv), gv));
        _mm512_storeu_ps(acc + i, a);
        __m512 step = _mm512_div_ps(_mm512_mul_ps(vlr, gv), _mm512_add_ps(_mm512_sqrt_ps(a), veps));
        _mm512_storeu_ps(w + i, _mm512_sub_ps(_mm512_loadu_ps(w + i), step));
    }
    for (; i < n; i++)
        dg_rmsprop_element(&w[i], &acc[i], g[i], lr, rho, eps);
}

#else

void dg_cpu_avx512_maxpool_fwd(const float *x, int h, int w, float *y)
{
    (void)x, (void)h, (void)w, (void)y;
}

void dg_cpu_avx512_maxpool_bwd(const float *x, const float *dy, int h, int w, float *dx)
{
    (void)x, (void)dy, (void)h, (void)w, (void)dx;
}

void dg_cpu_avx512_dropout(size_t begin, size_t end, float rate, const struct dg_dropout_key *key,
                           const float *in, float *out)
{
    (void)begin, (void)end, (void)rate, (void)key, (void)in, (void)out;
}

void dg_cpu_avx512_channel_sums(const float *src, size_t pixels, int channels, float *sums)
{
    (void)src, (void)pixels, (void)channels, (void)sums;
}

void dg_cpu_avx512_from_nhwc(const float *src, int channels, int count, float *dst,
                             size_t plane_stride)
{
    (void)src, (void)channels, (void)count, (void)dst, (void)plane_stride;
}

void dg_cpu_avx512_to_nhwc(const float *src, size_t plane_stride, int channels, int width,
                           float *dst)
{
    (void)src, (void)plane_stride, (void)channels, (void)width, (void)dst;
}

void dg_cpu_avx512_conv_row(const float *xrow, size_t row_stride, int cin, int k, const float *wp,
                            int cout_total, int couts, int pixels, const float *bias, int relu,
                            float *out)
{
    (void)xrow, (void)row_stride, (void)cin, (void)k, (void)wp, (void)cout_total, (void)couts;
    (void)pixels, (void)bias, (void)relu, (void)out;
}

void dg_cpu_avx512_filter_tile(const float *xp, size_t row_stride, int cin, const float *dyh,
                               int cout_total, int height, int width, int rows, int couts,
                               float *acc)
{
    (void)xp, (void)row_stride, (void)cin, (void)dyh, (void)cout_total, (void)height;
    (void)width, (void)rows, (void)couts, (void)acc;
}

void dg_cpu_avx512_rmsprop(size_t n, float *w, const float *g, float *acc, float lr, float rho,
                           float eps)
{
    (void)n, (void)w, (void)g, (void)acc, (void)lr, (void)rho, (void)eps;
}

#endif
