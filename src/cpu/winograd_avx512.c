/* AVX-512F tile transforms of the Winograd convolutions, alpha = 6 (points 0, 1, -1, 2, -2, inf):
 * F(2x2, 5x5) and F(4x4, 3x3) forward, F(5x5, 2x2) and F(3x3, 4x4) for the weight gradient.
 * Every transform works on 16 channels at once (NHWC: a pixel's channels are contiguous).
 *   input  V = B^T d B for a 6x6 patch (B^T below, the same for all four)
 *   output Y = A^T M A for m = 2 or 4
 *   grad   Z = E g E^T for an m x m gradient tile, E the evaluation at the points
 *          (the weight-gradient G without its row scales, which conv.c applies in double).
 * Layouts are given with each function in cpu_internal.h. */
#include "cpu/cpu_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#define DG_AVX512 __attribute__((target("avx512f")))
#define DG_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) static inline

/* B^T = [4 0 -5 0 1 0; 0 4 4 -1 -1 0; 0 -4 4 1 -1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] */
DG_AVX512_INLINE void bt6(const __m512 d[6], __m512 t[6])
{
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    const __m512 two = _mm512_set1_ps(2.0f);
    __m512 s12 = _mm512_add_ps(d[1], d[2]), s34 = _mm512_add_ps(d[3], d[4]);
    __m512 d21 = _mm512_sub_ps(d[2], d[1]), d34 = _mm512_sub_ps(d[3], d[4]);
    __m512 d31 = _mm512_sub_ps(d[3], d[1]), d42 = _mm512_sub_ps(d[4], d[2]);
    t[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
    t[1] = _mm512_fmsub_ps(four, s12, s34);
    t[2] = _mm512_fmadd_ps(four, d21, d34);
    t[3] = _mm512_fmadd_ps(two, d31, d42);
    t[4] = _mm512_fnmadd_ps(two, d31, d42);
    t[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

DG_AVX512 void dg_cpu_avx512_wino_input(const float *patch, size_t row_stride, int channels,
                                        float *v, size_t xi_stride)
{
    for (int c = 0; c < channels; c += 16) {
        __m512 cols[6][6]; /* [j][i]: column j after B^T */
        for (int j = 0; j < 6; j++) {
            __m512 d[6];
            for (int i = 0; i < 6; i++)
                d[i] = _mm512_loadu_ps(patch + (size_t)i * row_stride + (size_t)j * channels + c);
            bt6(d, cols[j]);
        }
        for (int i = 0; i < 6; i++) {
            __m512 row[6], t[6];
            for (int j = 0; j < 6; j++)
                row[j] = cols[j][i];
            bt6(row, t);
            for (int j = 0; j < 6; j++)
                _mm512_storeu_ps(v + (size_t)(i * 6 + j) * xi_stride + c, t[j]);
        }
    }
}

DG_AVX512 void dg_cpu_avx512_wino_weights(const double *g, int k, const float *kernels, int cols,
                                          float *u, size_t xi_stride)
{
    for (int c = 0; c < cols; c += 8) {
        __mmask16 mask = (__mmask16)(cols - c < 8 ? (1u << (cols - c)) - 1u : 0xFFu);
        __m512d kv[5][5], t[6][5];
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++)
                kv[a][b] = _mm512_cvtps_pd(_mm512_castps512_ps256(
                    _mm512_maskz_loadu_ps(mask, kernels + (size_t)(a * k + b) * cols + c)));
        for (int i = 0; i < 6; i++)
            for (int b = 0; b < k; b++) {
                __m512d sum = _mm512_setzero_pd();
                for (int a = 0; a < k; a++)
                    if (g[i * k + a] != 0.0)
                        sum = _mm512_fmadd_pd(_mm512_set1_pd(g[i * k + a]), kv[a][b], sum);
                t[i][b] = sum;
            }
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++) {
                __m512d sum = _mm512_setzero_pd();
                for (int b = 0; b < k; b++)
                    if (g[j * k + b] != 0.0)
                        sum = _mm512_fmadd_pd(_mm512_set1_pd(g[j * k + b]), t[i][b], sum);
                _mm512_mask_storeu_ps(u + (size_t)(i * 6 + j) * xi_stride + c, mask,
                                      _mm512_castps256_ps512(_mm512_cvtpd_ps(sum)));
            }
    }
}

/* A^T for m = 2: [1 1 1 1 1 0; 0 1 -1 2 -2 1] */
DG_AVX512_INLINE void at2(const __m512 m[6], __m512 y[2])
{
    const __m512 two = _mm512_set1_ps(2.0f);
    __m512 s12 = _mm512_add_ps(m[1], m[2]), s34 = _mm512_add_ps(m[3], m[4]);
    __m512 d12 = _mm512_sub_ps(m[1], m[2]), d34 = _mm512_sub_ps(m[3], m[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
    y[1] = _mm512_add_ps(_mm512_fmadd_ps(two, d34, d12), m[5]);
}

/* A^T for m = 4: [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] */
DG_AVX512_INLINE void at4(const __m512 m[6], __m512 y[4])
{
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
    const __m512 eight = _mm512_set1_ps(8.0f);
    __m512 s12 = _mm512_add_ps(m[1], m[2]), s34 = _mm512_add_ps(m[3], m[4]);
    __m512 d12 = _mm512_sub_ps(m[1], m[2]), d34 = _mm512_sub_ps(m[3], m[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
    y[1] = _mm512_fmadd_ps(two, d34, d12);
    y[2] = _mm512_fmadd_ps(four, s34, s12);
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(eight, d34, d12), m[5]);
}

DG_AVX512_INLINE void output_tile(const int m, const float *mm, size_t xi_stride, const float *bias,
                                  int relu, float *out, size_t row_stride, size_t pixel_stride)
{
    __m512 cols[6][4]; /* [j][i]: column j after A^T */
    for (int j = 0; j < 6; j++) {
        __m512 x[6];
        for (int i = 0; i < 6; i++)
            x[i] = _mm512_loadu_ps(mm + (size_t)(i * 6 + j) * xi_stride);
        if (m == 2)
            at2(x, cols[j]);
        else
            at4(x, cols[j]);
    }
    const __m512 b = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < m; i++) {
        __m512 row[6], y[4];
        for (int j = 0; j < 6; j++)
            row[j] = cols[j][i];
        if (m == 2)
            at2(row, y);
        else
            at4(row, y);
        for (int j = 0; j < m; j++) {
            __m512 r = _mm512_add_ps(y[j], b);
            if (relu)
                r = _mm512_max_ps(r, zero);
            _mm512_storeu_ps(out + (size_t)i * row_stride + (size_t)j * pixel_stride, r);
        }
    }
}

DG_AVX512 void dg_cpu_avx512_wino_output(int m, const float *mm, size_t xi_stride,
                                         const float *bias, int relu, float *out, size_t row_stride,
                                         size_t pixel_stride)
{
    if (m == 2)
        output_tile(2, mm, xi_stride, bias, relu, out, row_stride, pixel_stride);
    else
        output_tile(4, mm, xi_stride, bias, relu, out, row_stride, pixel_stride);
}

/* E for m = 2: rows [1 0; 1 1; 1 -1; 1 2; 1 -2; 0 1] */
DG_AVX512_INLINE void e2(const __m512 g[2], __m512 z[6])
{
    const __m512 two = _mm512_set1_ps(2.0f);
    z[0] = g[0];
    z[1] = _mm512_add_ps(g[0], g[1]);
    z[2] = _mm512_sub_ps(g[0], g[1]);
    z[3] = _mm512_fmadd_ps(two, g[1], g[0]);
    z[4] = _mm512_fnmadd_ps(two, g[1], g[0]);
    z[5] = g[1];
}

/* E for m = 4: rows [1 0 0 0; 1 1 1 1; 1 -1 1 -1; 1 2 4 8; 1 -2 4 -8; 0 0 0 1] */
DG_AVX512_INLINE void e4(const __m512 g[4], __m512 z[6])
{
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
    const __m512 eight = _mm512_set1_ps(8.0f);
    __m512 even = _mm512_add_ps(g[0], g[2]), odd = _mm512_add_ps(g[1], g[3]);
    __m512 even2 = _mm512_fmadd_ps(four, g[2], g[0]);
    __m512 odd2 = _mm512_fmadd_ps(eight, g[3], _mm512_mul_ps(two, g[1]));
    z[0] = g[0];
    z[1] = _mm512_add_ps(even, odd);
    z[2] = _mm512_sub_ps(even, odd);
    z[3] = _mm512_add_ps(even2, odd2);
    z[4] = _mm512_sub_ps(even2, odd2);
    z[5] = g[3];
}

DG_AVX512_INLINE void grad_tile(const int m, const float *tile, size_t row_stride, int channels,
                                float *z, size_t xi_stride)
{
    for (int c = 0; c < channels; c += 16) {
        __m512 cols[4][6]; /* [j][i]: column j after E */
        for (int j = 0; j < m; j++) {
            __m512 g[4];
            for (int i = 0; i < m; i++)
                g[i] = _mm512_loadu_ps(tile + (size_t)i * row_stride + (size_t)j * channels + c);
            if (m == 2)
                e2(g, cols[j]);
            else
                e4(g, cols[j]);
        }
        for (int i = 0; i < 6; i++) {
            __m512 row[4], t[6];
            for (int j = 0; j < m; j++)
                row[j] = cols[j][i];
            if (m == 2)
                e2(row, t);
            else
                e4(row, t);
            for (int j = 0; j < 6; j++)
                _mm512_storeu_ps(z + (size_t)(i * 6 + j) * xi_stride + c, t[j]);
        }
    }
}

DG_AVX512 void dg_cpu_avx512_wino_grad(int m, const float *tile, size_t row_stride, int channels,
                                       float *z, size_t xi_stride)
{
    if (m == 2)
        grad_tile(2, tile, row_stride, channels, z, xi_stride);
    else
        grad_tile(4, tile, row_stride, channels, z, xi_stride);
}

#else

void dg_cpu_avx512_wino_weights(const double *g, int k, const float *kernels, int cols, float *u,
                                size_t xi_stride)
{
    (void)g, (void)k, (void)kernels, (void)cols, (void)u, (void)xi_stride;
}

void dg_cpu_avx512_wino_input(const float *patch, size_t row_stride, int channels, float *v,
                              size_t xi_stride)
{
    (void)patch, (void)row_stride, (void)channels, (void)v, (void)xi_stride;
}

void dg_cpu_avx512_wino_output(int m, const float *mm, size_t xi_stride, const float *bias,
                               int relu, float *out, size_t row_stride, size_t pixel_stride)
{
    (void)m, (void)mm, (void)xi_stride, (void)bias, (void)relu, (void)out, (void)row_stride;
    (void)pixel_stride;
}

void dg_cpu_avx512_wino_grad(int m, const float *tile, size_t row_stride, int channels, float *z,
                             size_t xi_stride)
{
    (void)m, (void)tile, (void)row_stride, (void)channels, (void)z, (void)xi_stride;
}

#endif
