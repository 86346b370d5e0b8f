/* Every kernel of the CPU backend, written once against the width-generic vector layer
 * (simd.h) and compiled once per instruction set (CMakeLists.txt: AVX-512, AVX2+FMA and
 * portable C on x86-64; NEON and portable C on aarch64). Each compilation exports one table,
 * dg_cpu_isa_<isa>, that the backend picks at creation (cpu_internal.h gives every layout).
 *
 *   conv_row / filter_tile   register-blocked direct convolution and its weight-gradient
 *                            tile, NHWC; blocks of DG_CONV_PIXELS x DG_CONV_VECS vectors, each
 *                            a separate function with compile-time sizes so that the
 *                            accumulators live in registers
 *   wino_*                   Winograd F(2x2,5x5) / F(4x4,3x3), alpha 6 (points 0, 1, -1, 2,
 *                            -2, inf): input, output and gradient tile transforms over vectors
 *                            of channels; the weight transform in double
 *   element loops            dropout (Philox for DG_W blocks at once), pooling, RMSprop,
 *                            ReLU backward, bias + ReLU, im2col / col2im, batch assembly
 *
 * Compiled with -ffp-contract=off like the rest of the C code: the only fused operations are
 * the explicit vfma/vfnma/vfms, so element loops round exactly as the shared element math. */
#include "cpu/cpu_internal.h"
#include "cpu/isa/simd.h"

#include "math/augment.h"
#include "math/dropout.h"
#include "math/rmsprop.h"
#include "math/adam.h"
#include "math/sgd.h"

#define DG_TILE 14 /* most pixels (rows) per conv_row (filter_tile) call */

/* [first, first + count) of block `i` of `n` nearly equal blocks of `total`. */
DG_INLINE void even_block(int total, int n, int i, int *first, int *count)
{
    *first = total * i / n;
    *count = total * (i + 1) / n - *first;
}

/* ---- direct convolution ---- */

/* out[b*ldo + v*W ..] = sum over (ky, j) of xrow[ky*row_stride + b*step + j] *
 * wp[(ky*k*cin + j)*ldw + v*W ..] (+ bias, ReLU), for B pixels and V vectors (step: cin, or
 * stride * cin for a strided convolution). */
DG_INLINE void conv_block(const float *xrow, size_t row_stride, int cin, int step, int k,
                          const float *wp, int ldw, const int B, const int V, const float *bias,
                          int relu, float *out, int ldo)
{
    vf acc[DG_CONV_PIXELS][DG_CONV_VECS];
#pragma GCC unroll 16
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            acc[b][v] = vzero();
    const int span = k * cin;
    for (int ky = 0; ky < k; ky++) {
        const float *in = xrow + (size_t)ky * row_stride;
        const float *wk = wp + (size_t)ky * span * ldw;
        for (int j = 0; j < span; j++) {
            vf w[DG_CONV_VECS];
#pragma GCC unroll 4
            for (int v = 0; v < V; v++)
                w[v] = vload(wk + (size_t)j * ldw + v * DG_W);
#pragma GCC unroll 16
            for (int b = 0; b < B; b++) {
                vf s = vset1(in[b * step + j]);
#pragma GCC unroll 4
                for (int v = 0; v < V; v++)
                    acc[b][v] = vfma(s, w[v], acc[b][v]);
            }
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
        vf bv = bias ? vload(bias + v * DG_W) : vzero();
#pragma GCC unroll 16
        for (int b = 0; b < B; b++) {
            vf r = acc[b][v] + bv;
            vstore(out + b * ldo + v * DG_W, relu ? vrelu(r) : r);
        }
    }
}

/* acc[r*lda + v*W ..] += sum over pixels of a[r] * g[v*W ..], R rows and V vectors; with
 * `first`, acc <- 0 + that sum (the floats a zeroed acc would hold, without reading it). */
DG_INLINE void filter_block(const float *xp, size_t row_stride, int cin, const float *dyh, int ldg,
                            int height, int width, const int R, const int V, float *acc_out,
                            int lda, int first)
{
    vf acc[DG_CONV_PIXELS][DG_CONV_VECS];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            acc[r][v] = vzero();
    for (int y = 0; y < height; y++) {
        const float *a = xp + (size_t)y * row_stride;
        const float *g = dyh + (size_t)y * width * ldg;
        for (int x = 0; x < width; x++) {
            vf gv[DG_CONV_VECS];
#pragma GCC unroll 4
            for (int v = 0; v < V; v++)
                gv[v] = vload(g + v * DG_W);
#pragma GCC unroll 16
            for (int r = 0; r < R; r++) {
                vf s = vset1(a[r]);
#pragma GCC unroll 4
                for (int v = 0; v < V; v++)
                    acc[r][v] = vfma(s, gv[v], acc[r][v]);
            }
            a += cin;
            g += ldg;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            float *o = acc_out + r * lda + v * DG_W;
            vstore(o, (first ? vzero() : vload(o)) + acc[r][v]);
        }
}

typedef void (*conv_block_fn)(const float *, size_t, int, int, int, const float *, int,
                              const float *, int, float *, int);
typedef void (*filter_block_fn)(const float *, size_t, int, const float *, int, int, int, float *,
                                int, int);

#define DG_BLOCKS(B, V)                                                                            \
    static void conv_##B##_##V(const float *xrow, size_t row_stride, int cin, int step, int k,     \
                               const float *wp, int ldw, const float *bias, int relu, float *out,  \
                               int ldo)                                                            \
    {                                                                                              \
        conv_block(xrow, row_stride, cin, step, k, wp, ldw, B, V, bias, relu, out, ldo);           \
    }                                                                                              \
    static void filter_##B##_##V(const float *xp, size_t row_stride, int cin, const float *dyh,    \
                                 int ldg, int height, int width, float *acc, int lda, int first)   \
    {                                                                                              \
        filter_block(xp, row_stride, cin, dyh, ldg, height, width, B, V, acc, lda, first);         \
    }

/* Blocks of 1..DG_CONV_PIXELS pixels and 1..DG_CONV_VECS vectors (tables below). */
#define DG_BLOCKS_V(V)                                                                             \
    DG_BLOCKS(1, V)                                                                                \
    DG_BLOCKS(2, V)                                                                                \
    DG_BLOCKS(3, V)                                                                                \
    DG_BLOCKS(4, V)                                                                                \
    DG_BLOCKS_5_(V)
#if DG_CONV_PIXELS > 4
#define DG_BLOCKS_5_(V)                                                                            \
    DG_BLOCKS(5, V)                                                                                \
    DG_BLOCKS(6, V)                                                                                \
    DG_BLOCKS_7_(V)
#else
#define DG_BLOCKS_5_(V)
#endif
#if DG_CONV_PIXELS > 6
#define DG_BLOCKS_7_(V)                                                                            \
    DG_BLOCKS(7, V)                                                                                \
    DG_BLOCKS(8, V)                                                                                \
    DG_BLOCKS(9, V)                                                                                \
    DG_BLOCKS(10, V)                                                                               \
    DG_BLOCKS(11, V)                                                                               \
    DG_BLOCKS(12, V)                                                                               \
    DG_BLOCKS(13, V)                                                                               \
    DG_BLOCKS(14, V)
#else
#define DG_BLOCKS_7_(V)
#endif

#if DG_CONV_PIXELS != 4 && DG_CONV_PIXELS != 6 && DG_CONV_PIXELS != 14
#error "DG_CONV_PIXELS must be 4, 6 or 14"
#endif

DG_BLOCKS_V(1)
DG_BLOCKS_V(2)
#if DG_CONV_VECS > 2
DG_BLOCKS_V(3)
DG_BLOCKS_V(4)
#endif

#define DG_ROW4(p, V) p##1_##V, p##2_##V, p##3_##V, p##4_##V
#if DG_CONV_PIXELS == 4
#define DG_ROW(p, V) {DG_ROW4(p, V)}
#elif DG_CONV_PIXELS == 6
#define DG_ROW(p, V) {DG_ROW4(p, V), p##5_##V, p##6_##V}
#else
#define DG_ROW(p, V)                                                                               \
    {DG_ROW4(p, V), p##5_##V, p##6_##V, p##7_##V, p##8_##V, p##9_##V, p##10_##V, p##11_##V,        \
     p##12_##V, p##13_##V, p##14_##V}
#endif

#if DG_CONV_VECS == 2
static const conv_block_fn conv_blocks[2][DG_CONV_PIXELS] = {DG_ROW(conv_, 1), DG_ROW(conv_, 2)};
static const filter_block_fn filter_blocks[2][DG_CONV_PIXELS] = {DG_ROW(filter_, 1),
                                                                  DG_ROW(filter_, 2)};
#else
static const conv_block_fn conv_blocks[4][DG_CONV_PIXELS] = {
    DG_ROW(conv_, 1), DG_ROW(conv_, 2), DG_ROW(conv_, 3), DG_ROW(conv_, 4)};
static const filter_block_fn filter_blocks[4][DG_CONV_PIXELS] = {
    DG_ROW(filter_, 1), DG_ROW(filter_, 2), DG_ROW(filter_, 3), DG_ROW(filter_, 4)};
#endif

static void conv_row(const float *xrow, size_t row_stride, int cin, int step, int k,
                     const float *wp, int cout_total, int couts, int pixels, const float *bias,
                     int relu, float *out)
{
    int vectors = couts / DG_W;
    int chunks = (pixels + DG_CONV_PIXELS - 1) / DG_CONV_PIXELS;
    for (int v0 = 0; v0 < vectors; v0 += DG_CONV_VECS) {
        int nv = vectors - v0 < DG_CONV_VECS ? vectors - v0 : DG_CONV_VECS;
        for (int c = 0; c < chunks; c++) {
            int b0, nb;
            even_block(pixels, chunks, c, &b0, &nb);
            conv_blocks[nv - 1][nb - 1](xrow + (size_t)b0 * step, row_stride, cin, step, k,
                                        wp + v0 * DG_W, cout_total,
                                        bias ? bias + v0 * DG_W : NULL, relu,
                                        out + (size_t)b0 * couts + v0 * DG_W, couts);
        }
    }
}

static void filter_tile(const float *xp, size_t row_stride, int cin, const float *dyh,
                        int cout_total, int height, int width, int rows, int couts, float *acc,
                        int first)
{
    int vectors = couts / DG_W;
    int chunks = (rows + DG_CONV_PIXELS - 1) / DG_CONV_PIXELS;
    for (int v0 = 0; v0 < vectors; v0 += DG_CONV_VECS) {
        int nv = vectors - v0 < DG_CONV_VECS ? vectors - v0 : DG_CONV_VECS;
        for (int c = 0; c < chunks; c++) {
            int r0, nr;
            even_block(rows, chunks, c, &r0, &nr);
            filter_blocks[nv - 1][nr - 1](xp + r0, row_stride, cin, dyh + v0 * DG_W, cout_total,
                                          height, width, acc + (size_t)r0 * couts + v0 * DG_W,
                                          couts, first);
        }
    }
}

/* ---- Winograd transforms ---- */

/* B^T = [4 0 -5 0 1 0; 0 4 4 -1 -1 0; 0 -4 4 1 -1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] */
DG_INLINE void bt6(const vf d[6], vf t[6])
{
    const vf four = vset1(4.0f), five = vset1(5.0f), two = vset1(2.0f);
    vf s12 = d[1] + d[2], s34 = d[3] + d[4];
    vf d21 = d[2] - d[1], d34 = d[3] - d[4];
    vf d31 = d[3] - d[1], d42 = d[4] - d[2];
    t[0] = vfma(four, d[0], vfnma(five, d[2], d[4]));
    t[1] = vfms(four, s12, s34);
    t[2] = vfma(four, d21, d34);
    t[3] = vfma(two, d31, d42);
    t[4] = vfnma(two, d31, d42);
    t[5] = vfma(four, d[1], vfnma(five, d[3], d[5]));
}

static void wino_input(const float *patch, size_t row_stride, int channels, float *v,
                       size_t xi_stride)
{
    for (int c = 0; c < channels; c += DG_W) {
        vf cols[6][6]; /* [j][i]: column j after B^T */
        for (int j = 0; j < 6; j++) {
            vf d[6];
            for (int i = 0; i < 6; i++)
                d[i] = vload(patch + (size_t)i * row_stride + (size_t)j * channels + c);
            bt6(d, cols[j]);
        }
        for (int i = 0; i < 6; i++) {
            vf row[6], t[6];
            for (int j = 0; j < 6; j++)
                row[j] = cols[j][i];
            bt6(row, t);
            for (int j = 0; j < 6; j++)
                vstore(v + (size_t)(i * 6 + j) * xi_stride + c, t[j]);
        }
    }
}

/* In double, column by column: t = G K, u = t G^T. */
static void wino_weights_col(const double *g, int k, const float *kernels, int cols, int c,
                             float *u, size_t xi_stride)
{
    double kv[5][5], t[6][5];
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++)
            kv[a][b] = kernels[(size_t)(a * k + b) * cols + c];
    for (int i = 0; i < 6; i++)
        for (int b = 0; b < k; b++) {
            double sum = 0.0;
            for (int a = 0; a < k; a++)
                sum += g[i * k + a] * kv[a][b];
            t[i][b] = sum;
        }
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
            double sum = 0.0;
            for (int b = 0; b < k; b++)
                sum += g[j * k + b] * t[i][b];
            u[(size_t)(i * 6 + j) * xi_stride + c] = (float)sum;
        }
}

/* U = G g G^T in double, four columns at a time in vd4 (defined with the batchnorm loops
 * below) with the same operations in the same order as one column (wino_weights_col), so every
 * ISA gives the same floats. */
static void wino_weights(const double *g, int k, const float *kernels, int cols, float *u,
                         size_t xi_stride);

/* A^T for m = 2: [1 1 1 1 1 0; 0 1 -1 2 -2 1] */
DG_INLINE void at2(const vf m[6], vf y[2])
{
    const vf two = vset1(2.0f);
    vf s12 = m[1] + m[2], s34 = m[3] + m[4];
    vf d12 = m[1] - m[2], d34 = m[3] - m[4];
    y[0] = (m[0] + s12) + s34;
    y[1] = vfma(two, d34, d12) + m[5];
}

/* A^T for m = 4: [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] */
DG_INLINE void at4(const vf m[6], vf y[4])
{
    const vf two = vset1(2.0f), four = vset1(4.0f), eight = vset1(8.0f);
    vf s12 = m[1] + m[2], s34 = m[3] + m[4];
    vf d12 = m[1] - m[2], d34 = m[3] - m[4];
    y[0] = (m[0] + s12) + s34;
    y[1] = vfma(two, d34, d12);
    y[2] = vfma(four, s34, s12);
    y[3] = vfma(eight, d34, d12) + m[5];
}

DG_INLINE void output_tile(const int m, const float *mm, size_t xi_stride, const float *bias,
                           int relu, float *out, size_t row_stride, size_t pixel_stride)
{
    for (int c = 0; c < 16; c += DG_W) {
        vf cols[6][4]; /* [j][i]: column j after A^T */
        for (int j = 0; j < 6; j++) {
            vf x[6];
            for (int i = 0; i < 6; i++)
                x[i] = vload(mm + (size_t)(i * 6 + j) * xi_stride + c);
            if (m == 2)
                at2(x, cols[j]);
            else
                at4(x, cols[j]);
        }
        const vf b = bias ? vload(bias + c) : vzero();
        for (int i = 0; i < m; i++) {
            vf row[6], y[4];
            for (int j = 0; j < 6; j++)
                row[j] = cols[j][i];
            if (m == 2)
                at2(row, y);
            else
                at4(row, y);
            for (int j = 0; j < m; j++) {
                vf r = y[j] + b;
                vstore(out + (size_t)i * row_stride + (size_t)j * pixel_stride + c,
                       relu ? vrelu(r) : r);
            }
        }
    }
}

static void wino_output(int m, const float *mm, size_t xi_stride, const float *bias, int relu,
                        float *out, size_t row_stride, size_t pixel_stride)
{
    if (m == 2)
        output_tile(2, mm, xi_stride, bias, relu, out, row_stride, pixel_stride);
    else
        output_tile(4, mm, xi_stride, bias, relu, out, row_stride, pixel_stride);
}

/* E for m = 2: rows [1 0; 1 1; 1 -1; 1 2; 1 -2; 0 1] */
DG_INLINE void e2(const vf g[2], vf z[6])
{
    const vf two = vset1(2.0f);
    z[0] = g[0];
    z[1] = g[0] + g[1];
    z[2] = g[0] - g[1];
    z[3] = vfma(two, g[1], g[0]);
    z[4] = vfnma(two, g[1], g[0]);
    z[5] = g[1];
}

/* E for m = 4: rows [1 0 0 0; 1 1 1 1; 1 -1 1 -1; 1 2 4 8; 1 -2 4 -8; 0 0 0 1] */
DG_INLINE void e4(const vf g[4], vf z[6])
{
    const vf two = vset1(2.0f), four = vset1(4.0f), eight = vset1(8.0f);
    vf even = g[0] + g[2], odd = g[1] + g[3];
    vf even2 = vfma(four, g[2], g[0]);
    vf odd2 = vfma(eight, g[3], two * g[1]);
    z[0] = g[0];
    z[1] = even + odd;
    z[2] = even - odd;
    z[3] = even2 + odd2;
    z[4] = even2 - odd2;
    z[5] = g[3];
}

DG_INLINE void grad_tile(const int m, const float *tile, size_t row_stride, int channels, float *z,
                         size_t xi_stride)
{
    for (int c = 0; c < channels; c += DG_W) {
        vf cols[4][6]; /* [j][i]: column j after E */
        for (int j = 0; j < m; j++) {
            vf g[4];
            for (int i = 0; i < m; i++)
                g[i] = vload(tile + (size_t)i * row_stride + (size_t)j * channels + c);
            if (m == 2)
                e2(g, cols[j]);
            else
                e4(g, cols[j]);
        }
        for (int i = 0; i < 6; i++) {
            vf row[4], t[6];
            for (int j = 0; j < m; j++)
                row[j] = cols[j][i];
            if (m == 2)
                e2(row, t);
            else
                e4(row, t);
            for (int j = 0; j < 6; j++)
                vstore(z + (size_t)(i * 6 + j) * xi_stride + c, t[j]);
        }
    }
}

static void wino_grad(int m, const float *tile, size_t row_stride, int channels, float *z,
                      size_t xi_stride)
{
    if (m == 2)
        grad_tile(2, tile, row_stride, channels, z, xi_stride);
    else
        grad_tile(4, tile, row_stride, channels, z, xi_stride);
}

/* ---- layout changes and sums ---- */

/* Blocks of W channels x W pixels through an in-register transpose (partial blocks of pixels
 * at the end of a row through a zero-padded copy). */
static void to_nhwc(const float *src, size_t plane_stride, int channels, int width, float *dst)
{
    for (int c0 = 0; c0 < channels; c0 += DG_W)
        for (int x0 = 0; x0 < width; x0 += DG_W) {
            int count = width - x0 < DG_W ? width - x0 : DG_W;
            vf r[DG_W];
            for (int i = 0; i < DG_W; i++) {
                const float *in = src + (size_t)(c0 + i) * plane_stride + x0;
                r[i] = count == DG_W ? vload(in) : vload_part(in, count);
            }
            vtranspose(r);
            for (int j = 0; j < count; j++)
                vstore(dst + (size_t)(x0 + j) * channels + c0, r[j]);
        }
}

static void from_nhwc(const float *src, int channels, int count, float *dst, size_t plane_stride)
{
    for (int c0 = 0; c0 < channels; c0 += DG_W)
        for (int x0 = 0; x0 < count; x0 += DG_W) {
            int pixels = count - x0 < DG_W ? count - x0 : DG_W;
            vf r[DG_W];
            for (int i = 0; i < DG_W; i++)
                r[i] = i < pixels ? vload(src + (size_t)(x0 + i) * channels + c0) : vzero();
            vtranspose(r);
            for (int j = 0; j < DG_W; j++) {
                float *out = dst + (size_t)(c0 + j) * plane_stride + x0;
                if (pixels == DG_W)
                    vstore(out, r[j]);
                else
                    vstore_part(out, r[j], pixels);
            }
        }
}

/* Two rounds of zips: (a0 c0 a1 c1 ..) and (b0 d0 b1 d1 ..) zipped give a0 b0 c0 d0 a1 b1 .. */
static void interleave4(const float *const in[4], int channels, float *out)
{
    int c = 0;
    for (; c + DG_W <= channels; c += DG_W) {
        vf r[4];
        for (int k = 0; k < 4; k++)
            r[k] = in[k] ? vload(in[k] + c) : vzero();
        vf ac_lo = vzip_lo(r[0], r[2]), ac_hi = vzip_hi(r[0], r[2]);
        vf bd_lo = vzip_lo(r[1], r[3]), bd_hi = vzip_hi(r[1], r[3]);
        float *o = out + 4 * (size_t)c;
        vstore(o, vzip_lo(ac_lo, bd_lo));
        vstore(o + DG_W, vzip_hi(ac_lo, bd_lo));
        vstore(o + 2 * DG_W, vzip_lo(ac_hi, bd_hi));
        vstore(o + 3 * DG_W, vzip_hi(ac_hi, bd_hi));
    }
    for (; c < channels; c++)
        for (int k = 0; k < 4; k++)
            out[4 * (size_t)c + k] = in[k] ? in[k][c] : 0.0f;
}

/* The inverse: even and odd lanes twice. */
static void deinterleave4(const float *in, int channels, float *const out[4])
{
    int c = 0;
    for (; c + DG_W <= channels; c += DG_W) {
        const float *i = in + 4 * (size_t)c;
        vf r0 = vload(i), r1 = vload(i + DG_W), r2 = vload(i + 2 * DG_W), r3 = vload(i + 3 * DG_W);
        vf even0 = DG_SHUFFLE(r0, r1, DG_UNZIP_EVEN), odd0 = DG_SHUFFLE(r0, r1, DG_UNZIP_ODD);
        vf even1 = DG_SHUFFLE(r2, r3, DG_UNZIP_EVEN), odd1 = DG_SHUFFLE(r2, r3, DG_UNZIP_ODD);
        const vf phase[4] = {DG_SHUFFLE(even0, even1, DG_UNZIP_EVEN),
                             DG_SHUFFLE(odd0, odd1, DG_UNZIP_EVEN),
                             DG_SHUFFLE(even0, even1, DG_UNZIP_ODD),
                             DG_SHUFFLE(odd0, odd1, DG_UNZIP_ODD)};
        for (int k = 0; k < 4; k++)
            if (out[k])
                vstore(out[k] + c, phase[k]);
    }
    for (; c < channels; c++)
        for (int k = 0; k < 4; k++)
            if (out[k])
                out[k][c] = in[4 * (size_t)c + k];
}

static void channel_sums(const float *src, size_t pixels, int channels, float *sums)
{
    for (int c = 0; c < channels; c += DG_W) {
        vf acc[4] = {vzero(), vzero(), vzero(), vzero()};
        size_t i = 0;
        for (; i + 4 <= pixels; i += 4)
            for (int l = 0; l < 4; l++)
                acc[l] = acc[l] + vload(src + (i + l) * channels + c);
        for (; i < pixels; i++)
            acc[0] = acc[0] + vload(src + i * channels + c);
        vstore(sums + c, (acc[0] + acc[1]) + (acc[2] + acc[3]));
    }
}

/* ---- batch normalisation (src/cpu/batchnorm.c): double sums and element loops ----
 * vd4 is a GCC vector of 4 doubles on every ISA (AVX-512 and AVX2: ymm; portable C: what the
 * compiler lowers it to), so the sums below take the same steps everywhere: element i of the
 * first 16 * floor(n / 16) goes to partial sum i % 16 (lane i % 4 of accumulator i / 4 % 4),
 * the partials are added as ((a0 + a1) + (a2 + a3)), lanes ((l0 + l1) + (l2 + l3)), and the
 * tail, summed in order, last. */
typedef double vd4 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));

/* (by pointer: a 32-byte vector by value changes the ABI of the portable build). The
 * conversions are exact (float to double) or round to nearest (double to float) everywhere;
 * on x86 they are single vcvtps2pd / vcvtpd2ps instructions, because GCC lowers the generic
 * __builtin_convertvector in halves with shuffles, which made the batchnorm loops and the
 * Winograd transforms in double conversion-bound. */
DG_INLINE void load4d(const float *p, vd4 *out)
{
#if defined(DG_ISA_AVX512) || defined(DG_ISA_AVX2)
    *out = (vd4)_mm256_cvtps_pd(_mm_loadu_ps(p));
#else
    vf4 v;
    memcpy(&v, p, sizeof v);
    *out = __builtin_convertvector(v, vd4);
#endif
}

DG_INLINE void store4f(float *p, const vd4 *v)
{
#if defined(DG_ISA_AVX512) || defined(DG_ISA_AVX2)
    _mm_storeu_ps(p, _mm256_cvtpd_ps((__m256d)*v));
#else
    vf4 f = __builtin_convertvector(*v, vf4);
    memcpy(p, &f, sizeof f);
#endif
}

DG_INLINE double reduce4d(const vd4 a[4])
{
    vd4 t = (a[0] + a[1]) + (a[2] + a[3]);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* The NHWC element loops take 8 lanes at a time in vd8 (AVX-512: one zmm; elsewhere what the
 * compiler lowers it to), the Winograd transforms in double only on AVX-512 (elsewhere 4 in
 * vd4), then fewer: every lane does the same double operations as the scalar code, so the
 * width changes no bit. */
typedef double vd8 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));

DG_INLINE void load8d(const float *p, vd8 *out)
{
#if defined(DG_ISA_AVX512)
    *out = (vd8)_mm512_cvtps_pd(_mm256_loadu_ps(p));
#elif defined(DG_ISA_AVX2)
    vd4 h[2];
    load4d(p, &h[0]);
    load4d(p + 4, &h[1]);
    memcpy(out, h, sizeof h);
#else
    vf8 v;
    memcpy(&v, p, sizeof v);
    *out = __builtin_convertvector(v, vd8);
#endif
}

DG_INLINE void store8f(float *p, const vd8 *v)
{
#if defined(DG_ISA_AVX512)
    _mm256_storeu_ps(p, _mm512_cvtpd_ps((__m512d)*v));
#elif defined(DG_ISA_AVX2)
    vd4 h[2];
    memcpy(h, v, sizeof h);
    store4f(p, &h[0]);
    store4f(p + 4, &h[1]);
#else
    vf8 f = __builtin_convertvector(*v, vf8);
    memcpy(p, &f, sizeof f);
#endif
}

/* U of `LANES` columns from column c: vd4 or vd8 lanes, each with wino_weights_col's
 * operations in its order. */
#define DG_WINO_WEIGHTS_LANES(NAME, VD, LOAD, STORE)                                              \
    DG_INLINE void NAME(const double *g, int k, const float *kernels, int cols, int c, float *u,  \
                        size_t xi_stride)                                                         \
    {                                                                                             \
        VD kv[5][5], t[6][5];                                                                     \
        for (int a = 0; a < k; a++)                                                               \
            for (int b = 0; b < k; b++)                                                           \
                LOAD(kernels + (size_t)(a * k + b) * cols + c, &kv[a][b]);                        \
        for (int i = 0; i < 6; i++)                                                               \
            for (int b = 0; b < k; b++) {                                                         \
                VD sum = {0.0};                                                                   \
                for (int a = 0; a < k; a++)                                                       \
                    sum += g[i * k + a] * kv[a][b];                                               \
                t[i][b] = sum;                                                                    \
            }                                                                                     \
        for (int i = 0; i < 6; i++)                                                               \
            for (int j = 0; j < 6; j++) {                                                         \
                VD sum = {0.0};                                                                   \
                for (int b = 0; b < k; b++)                                                       \
                    sum += g[j * k + b] * t[i][b];                                                \
                STORE(u + (size_t)(i * 6 + j) * xi_stride + c, &sum);                             \
            }                                                                                     \
    }
#if defined(DG_ISA_AVX512)
DG_WINO_WEIGHTS_LANES(wino_weights8, vd8, load8d, store8f)
#endif
DG_WINO_WEIGHTS_LANES(wino_weights4, vd4, load4d, store4f)

static void wino_weights(const double *g, int k, const float *kernels, int cols, float *u,
                         size_t xi_stride)
{
    int c = 0;
#if defined(DG_ISA_AVX512) /* vd8 in one zmm; elsewhere two halves spilled through GPRs */
    for (; c + 8 <= cols; c += 8)
        wino_weights8(g, k, kernels, cols, c, u, xi_stride);
#endif
    for (; c + 4 <= cols; c += 4)
        wino_weights4(g, k, kernels, cols, c, u, xi_stride);
    for (; c < cols; c++)
        wino_weights_col(g, k, kernels, cols, c, u, xi_stride);
}

/* dw = A^T (scale scale^T .* wsum) A in double for `lanes` kernels side by side: lane l's
 * transformed sums at wsum[xi*xi_stride + l], its k x k kernel at dw + l*lane_stride. Eight
 * lanes at a time in vd8, then four in vd4, then one by one, each lane with the same operations
 * in the same order (products and sums rounded one by one, no fused multiply-add), so every
 * ISA and every lane count give the same floats. */
#define DG_FILTER_OUT_LANES(NAME, VD, WIDTH)                                                      \
    DG_INLINE void NAME(int k, const double *at, const double *scale, const double *wsum,         \
                        size_t xi_stride, int nl, float *dw, size_t lane_stride)                  \
    {                                                                                             \
        VD sum[36], half[5][6];                                                                   \
        for (int xi = 0; xi < 36; xi++) {                                                         \
            VD w = {0.0};                                                                         \
            if (nl == WIDTH)                                                                      \
                memcpy(&w, wsum + (size_t)xi * xi_stride, sizeof w);                              \
            else                                                                                  \
                for (int l = 0; l < nl; l++)                                                      \
                    w[l] = wsum[(size_t)xi * xi_stride + (size_t)l];                              \
            double si = scale[xi / 6], sj = scale[xi % 6];                                        \
            sum[xi] = w * si * sj;                                                                \
        }                                                                                         \
        for (int y = 0; y < k; y++)                                                               \
            for (int j = 0; j < 6; j++) {                                                         \
                VD acc = {0.0};                                                                   \
                for (int i = 0; i < 6; i++)                                                       \
                    acc += at[y * 6 + i] * sum[i * 6 + j];                                        \
                half[y][j] = acc;                                                                 \
            }                                                                                     \
        for (int y = 0; y < k; y++)                                                               \
            for (int x = 0; x < k; x++) {                                                         \
                VD acc = {0.0};                                                                   \
                for (int j = 0; j < 6; j++)                                                       \
                    acc += half[y][j] * at[x * 6 + j];                                            \
                for (int l = 0; l < nl; l++)                                                      \
                    dw[(size_t)l * lane_stride + (size_t)(y * k + x)] = (float)acc[l];            \
            }                                                                                     \
    }
#if defined(DG_ISA_AVX512)
DG_FILTER_OUT_LANES(filter_out_lanes8, vd8, 8)
#endif
DG_FILTER_OUT_LANES(filter_out_lanes, vd4, 4)

static void wino_filter_out(int k, const double *at, const double *scale, const double *wsum,
                            size_t xi_stride, int lanes, float *dw, size_t lane_stride)
{
    int l = 0;
#if defined(DG_ISA_AVX512)
    for (; l + 8 <= lanes; l += 8)
        filter_out_lanes8(k, at, scale, wsum + l, xi_stride, 8, dw + (size_t)l * lane_stride,
                          lane_stride);
#endif
    for (; l + 4 <= lanes; l += 4)
        filter_out_lanes(k, at, scale, wsum + l, xi_stride, 4, dw + (size_t)l * lane_stride,
                         lane_stride);
    for (; l < lanes; l++)
        filter_out_lanes(k, at, scale, wsum + l, xi_stride, 1, dw + (size_t)l * lane_stride,
                         lane_stride);
}

/* sum v[i] (square 0) or sum (v[i] - centre)^2 (square 1) */
DG_INLINE double bn_reduce(const float *v, size_t n, double centre, const int square)
{
    vd4 a[4] = {{0}, {0}, {0}, {0}};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 4; j++) {
            vd4 d;
            load4d(v + i + 4 * j, &d);
            if (square) {
                d = d - centre;
                d = d * d;
            }
            a[j] = a[j] + d;
        }
    double tail = 0.0;
    for (; i < n; i++) {
        double d = square ? (v[i] - centre) * (v[i] - centre) : v[i];
        tail += d;
    }
    return reduce4d(a) + tail;
}

static double bn_sum(const float *v, size_t n)
{
    return bn_reduce(v, n, 0.0, 0);
}

static double bn_squares(const float *v, size_t n, double centre)
{
    return bn_reduce(v, n, centre, 1);
}

/* sums[0] = sum dy[i], sums[1] = sum dy[i] (x[i] - mean) */
static void bn_grad_sums(const float *x, const float *dy, size_t n, double mean, double sums[2])
{
    vd4 a[4] = {{0}, {0}, {0}, {0}}, b[4] = {{0}, {0}, {0}, {0}};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 4; j++) {
            vd4 g, xv;
            load4d(dy + i + 4 * j, &g);
            load4d(x + i + 4 * j, &xv);
            a[j] = a[j] + g;
            b[j] = b[j] + g * (xv - mean);
        }
    double ta = 0.0, tb = 0.0;
    for (; i < n; i++) {
        ta += dy[i];
        tb += dy[i] * (x[i] - mean);
    }
    sums[0] = reduce4d(a) + ta;
    sums[1] = reduce4d(b) + tb;
}

/* y[i] = x[i] * scale + shift, in double, rounded once */
static void bn_affine(const float *x, size_t n, double scale, double shift, float *y)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        vd4 v;
        load4d(x + i, &v);
        v = v * scale + shift;
        store4f(y + i, &v);
    }
    for (; i < n; i++)
        y[i] = (float)((double)x[i] * scale + shift);
}

/* dx[i] = scale (dy[i] - mean_dy - (x[i] - mean) invstd mean_dy_xhat), in double; with
 * `relu`, +0 where x[i] > 0 does not hold (relu_bwd's mask: the double of a float is > 0
 * exactly when the float is, and all-ones or all-zeros keeps the double or makes it +0). */
typedef long long vl4 __attribute__((vector_size(32)));
static void bn_input_grad(const float *x, const float *dy, size_t n, const double k[5], int relu,
                          float *dx)
{
    double mean = k[0], invstd = k[1], scale = k[2], mean_dy = k[3], mean_dy_xhat = k[4];
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        vd4 xv, g;
        load4d(x + i, &xv);
        load4d(dy + i, &g);
        vd4 xhat = (xv - mean) * invstd;
        vd4 out = scale * (g - mean_dy - xhat * mean_dy_xhat);
        if (relu)
            out = (vd4)((vl4)out & (vl4)(xv > 0.0));
        store4f(dx + i, &out);
    }
    for (; i < n; i++) {
        double xhat = (x[i] - mean) * invstd;
        float out = (float)(scale * (dy[i] - mean_dy - xhat * mean_dy_xhat));
        dx[i] = relu && !(x[i] > 0.0f) ? 0.0f : out;
    }
}

/* ---- batch normalisation of NHWC images ----
 * The sums above for `channels` channels of one image (pixel i at x[i * stride]), with the
 * same partial sums per channel added in the same order: channel c's result is bn_sum's (or
 * bn_squares', bn_grad_sums') of its plane, bit for bit. Partial sum j (the pixels i = j mod
 * 16 before the tail) is summed for 4 channels at once in one vd4 lane by lane, pixel after
 * pixel; then the tail, and the partials added as reduce4d adds them. */

/* *out = the 16 partials p[j] added as reduce4d adds them, then *tail. p NULL: partials that
 * were never summed into (fewer than 16 pixels), all +0, whose sum is +0; the caller then
 * need not zero them (16 KB per image and 64 channels: most of a dense layer's batchnorm). */
DG_INLINE void partials_sum4(const vd4 *p, size_t step, const vd4 *tail, vd4 *out)
{
    if (!p) {
        *out = (vd4){0} + *tail;
        return;
    }
    vd4 t[4];
    for (int l = 0; l < 4; l++)
        t[l] = (p[l * step] + p[(4 + l) * step]) + (p[(8 + l) * step] + p[(12 + l) * step]);
    *out = ((t[0] + t[1]) + (t[2] + t[3])) + *tail;
}

/* The same for one channel: partials a[16], then tail */
DG_INLINE double partials_sum1(const double a[16], double tail)
{
    double t[4];
    for (int l = 0; l < 4; l++)
        t[l] = (a[l] + a[4 + l]) + (a[8 + l] + a[12 + l]);
    return ((t[0] + t[1]) + (t[2] + t[3])) + tail;
}

DG_INLINE void load_centred(const float *x, const vd4 *mid, int square, vd4 *d)
{
    load4d(x, d);
    if (square) {
        *d = *d - *mid;
        *d = *d * *d;
    }
}

/* The channels of an image are taken DG_BN_CHUNK at a time (the multiple-of-4 part), pixel
 * after pixel: each pixel's chunk is contiguous, so the image streams through once, and the 16
 * partials of the chunk's channels stay in L1 (part[j][v]: partial j of channels 4v .. 4v + 3;
 * 16 KB for the two of the gradient sums). */
#define DG_BN_CHUNK 64

/* out[0 .. 4 nv) for the channels at x: the pixels in order, pixel i added to partial
 * i mod 16; `square`: the squared deviations from centre */
DG_INLINE void sums_nhwc_chunk(const float *x, size_t n, size_t stride, const double *centre,
                               int nv, const int square, double *out)
{
    vd4 part[16][DG_BN_CHUNK / 4], mid[DG_BN_CHUNK / 4], tail[DG_BN_CHUNK / 4];
    size_t n16 = n / 16 * 16;
    for (int j = 0; j < (n16 ? 16 : 0); j++) /* see partials_sum4 */
        for (int v = 0; v < nv; v++)
            part[j][v] = (vd4){0};
    for (int v = 0; v < nv; v++) {
        tail[v] = (vd4){0};
        mid[v] = square ? (vd4){centre[4 * v], centre[4 * v + 1], centre[4 * v + 2],
                                centre[4 * v + 3]}
                        : (vd4){0};
    }
    for (size_t i = 0; i < n16; i += 16)
        for (int j = 0; j < 16; j++) {
            const float *row = x + (i + (size_t)j) * stride;
            for (int v = 0; v < nv; v++) {
                vd4 d;
                load_centred(row + 4 * v, &mid[v], square, &d);
                part[j][v] = part[j][v] + d;
            }
        }
    for (size_t i = n16; i < n; i++)
        for (int v = 0; v < nv; v++) {
            vd4 d;
            load_centred(x + i * stride + 4 * v, &mid[v], square, &d);
            tail[v] = tail[v] + d;
        }
    for (int v = 0; v < nv; v++) {
        vd4 r;
        partials_sum4(n16 ? &part[0][v] : NULL, DG_BN_CHUNK / 4, &tail[v], &r);
        for (int l = 0; l < 4; l++)
            out[4 * v + l] = r[l];
    }
}

/* sums_nhwc_chunk with or without centre */
DG_INLINE void sums_nhwc_fixed(const float *x, size_t n, size_t stride, const double *centre,
                               int nv, double *out)
{
    if (centre)
        sums_nhwc_chunk(x, n, stride, centre, nv, 1, out);
    else
        sums_nhwc_chunk(x, n, stride, NULL, nv, 0, out);
}

/* One channel (the last channels of a count that is not a multiple of 4). */
static double sums_nhwc_one(const float *x, size_t n, size_t stride, const double *centre)
{
    double a[16] = {0}, tail = 0.0, mid = centre ? *centre : 0.0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            double d = x[(i + (size_t)j) * stride];
            if (centre) {
                d = d - mid;
                d = d * d;
            }
            a[j] = a[j] + d;
        }
    for (; i < n; i++) {
        double v = x[i * stride];
        tail += centre ? (v - mid) * (v - mid) : v;
    }
    return partials_sum1(a, tail);
}

/* out[c] = sum over the pixels of x[c], or with centre of (x[c] - centre[c])^2 */
static void bn_sums_nhwc(const float *x, size_t n, size_t stride, int channels,
                         const double *centre, double *out)
{
    int c4 = channels / 4 * 4;
    for (int c = 0; c < c4; c += DG_BN_CHUNK) {
        int nv = (c4 - c < DG_BN_CHUNK ? c4 - c : DG_BN_CHUNK) / 4;
        const double *mid = centre ? centre + c : NULL;
        if (nv == 16) /* constant counts: the chunk's loops unrolled */
            sums_nhwc_fixed(x + c, n, stride, mid, 16, out + c);
        else if (nv == 8)
            sums_nhwc_fixed(x + c, n, stride, mid, 8, out + c);
        else
            sums_nhwc_fixed(x + c, n, stride, mid, nv, out + c);
    }
    for (int c = c4; c < channels; c++)
        out[c] = sums_nhwc_one(x + c, n, stride, centre ? centre + c : NULL);
}

/* sums[0 .. 4 nv) = sum dy, centred[0 .. 4 nv) = sum dy (x - mean), for the channels at x
 * and dy, the pixels in order as in sums_nhwc_chunk */
DG_INLINE void grad_sums_nhwc_chunk(const float *x, const float *dy, size_t n, size_t stride,
                                    const double *mean, int nv, double *sums, double *centred)
{
    vd4 pa[16][DG_BN_CHUNK / 4], pb[16][DG_BN_CHUNK / 4], mu[DG_BN_CHUNK / 4];
    vd4 ta[DG_BN_CHUNK / 4], tb[DG_BN_CHUNK / 4];
    size_t n16 = n / 16 * 16;
    for (int j = 0; j < (n16 ? 16 : 0); j++) /* see partials_sum4 */
        for (int v = 0; v < nv; v++)
            pa[j][v] = pb[j][v] = (vd4){0};
    for (int v = 0; v < nv; v++) {
        ta[v] = tb[v] = (vd4){0};
        mu[v] = (vd4){mean[4 * v], mean[4 * v + 1], mean[4 * v + 2], mean[4 * v + 3]};
    }
    for (size_t i = 0; i < n16; i += 16)
        for (int j = 0; j < 16; j++) {
            size_t at = (i + (size_t)j) * stride;
            for (int v = 0; v < nv; v++) {
                vd4 g, xv;
                load4d(dy + at + 4 * (size_t)v, &g);
                load4d(x + at + 4 * (size_t)v, &xv);
                pa[j][v] = pa[j][v] + g;
                pb[j][v] = pb[j][v] + g * (xv - mu[v]);
            }
        }
    for (size_t i = n16; i < n; i++)
        for (int v = 0; v < nv; v++) {
            vd4 g, xv;
            load4d(dy + i * stride + 4 * (size_t)v, &g);
            load4d(x + i * stride + 4 * (size_t)v, &xv);
            ta[v] = ta[v] + g;
            tb[v] = tb[v] + g * (xv - mu[v]);
        }
    for (int v = 0; v < nv; v++) {
        vd4 ra, rb;
        partials_sum4(n16 ? &pa[0][v] : NULL, DG_BN_CHUNK / 4, &ta[v], &ra);
        partials_sum4(n16 ? &pb[0][v] : NULL, DG_BN_CHUNK / 4, &tb[v], &rb);
        for (int l = 0; l < 4; l++) {
            sums[4 * v + l] = ra[l];
            centred[4 * v + l] = rb[l];
        }
    }
}

/* sums[c] = sum dy[c], sums[channels + c] = sum dy[c] (x[c] - mean[c]) */
static void bn_grad_sums_nhwc(const float *x, const float *dy, size_t n, size_t stride,
                              int channels, const double *mean, double *sums)
{
    int c4 = channels / 4 * 4;
    for (int c = 0; c < c4; c += DG_BN_CHUNK) {
        int nv = (c4 - c < DG_BN_CHUNK ? c4 - c : DG_BN_CHUNK) / 4;
        double *a = sums + c, *b = sums + channels + c;
        if (nv == 16) /* constant counts: the chunk's loops unrolled */
            grad_sums_nhwc_chunk(x + c, dy + c, n, stride, mean + c, 16, a, b);
        else if (nv == 8)
            grad_sums_nhwc_chunk(x + c, dy + c, n, stride, mean + c, 8, a, b);
        else
            grad_sums_nhwc_chunk(x + c, dy + c, n, stride, mean + c, nv, a, b);
    }
    for (int c = c4; c < channels; c++) {
        double a[16] = {0}, b[16] = {0}, ta = 0.0, tb = 0.0;
        size_t i = 0;
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) {
                double g = dy[(i + (size_t)j) * stride + c];
                double xv = x[(i + (size_t)j) * stride + c];
                a[j] = a[j] + g;
                b[j] = b[j] + g * (xv - mean[c]);
            }
        for (; i < n; i++) {
            ta += dy[i * stride + c];
            tb += dy[i * stride + c] * (x[i * stride + c] - mean[c]);
        }
        sums[c] = partials_sum1(a, ta);
        sums[channels + c] = partials_sum1(b, tb);
    }
}


/* The NHWC element loops take DG_BN_ROWS pixels at a time, channel group by channel group, so a
 * group's per-channel constants are loaded once for those pixels (kept in registers) instead
 * of once a pixel; every element gets the same operations. */
#define DG_BN_ROWS 16

/* y[c] = x[c] scale[c] + shift[c], in double, rounded once */
static void bn_affine_nhwc(const float *x, size_t n, size_t stride, int channels,
                           const double *scale, const double *shift, float *y)
{
    int c8 = channels / 8 * 8;
    for (size_t i0 = 0; i0 < n; i0 += DG_BN_ROWS) {
        size_t i1 = n - i0 < DG_BN_ROWS ? n : i0 + DG_BN_ROWS;
        for (int c = 0; c < c8; c += 8) {
            vd8 sc, sh;
            memcpy(&sc, scale + c, sizeof sc);
            memcpy(&sh, shift + c, sizeof sh);
            for (size_t i = i0; i < i1; i++) {
                vd8 v;
                load8d(x + i * stride + c, &v);
                v = v * sc + sh;
                store8f(y + i * stride + c, &v);
            }
        }
        for (size_t i = i0; i < i1; i++)
            for (int c = c8; c < channels; c++)
                y[i * stride + c] = (float)((double)x[i * stride + c] * scale[c] + shift[c]);
    }
}

typedef long long vl8 __attribute__((vector_size(64)));

/* *out where *x > 0, else +0 (bn_input_grad's mask, 8 lanes; by pointer as load8d). Below
 * AVX-512 it is two 4-lane compares: GCC lowers a 64-byte comparison on 32-byte registers to
 * scalar compares and moves. */
DG_INLINE void relu_mask8(vd8 *out, const vd8 *x)
{
#if defined(DG_ISA_AVX512)
    *out = (vd8)((vl8)*out & (vl8)(*x > 0.0));
#else
    vd4 o[2], xs[2];
    memcpy(o, out, sizeof o);
    memcpy(xs, x, sizeof xs);
    for (int h = 0; h < 2; h++)
        o[h] = (vd4)((vl4)o[h] & (vl4)(xs[h] > 0.0));
    memcpy(out, o, sizeof o);
#endif
}

/* bn_input_grad per channel: k[j * channels + c] is channel c's j-th of (mean, invstd,
 * scale, mean_dy, mean_dy_xhat) */
static void bn_input_grad_nhwc(const float *x, const float *dy, size_t n, size_t stride,
                               int channels, const double *k, int relu, float *dx)
{
    const double *mean = k, *invstd = k + channels, *scale = k + 2 * (size_t)channels;
    const double *mean_dy = k + 3 * (size_t)channels, *mean_dy_xhat = k + 4 * (size_t)channels;
    int c8 = channels / 8 * 8;
    for (size_t i0 = 0; i0 < n; i0 += DG_BN_ROWS) {
        size_t i1 = n - i0 < DG_BN_ROWS ? n : i0 + DG_BN_ROWS;
        for (int c = 0; c < c8; c += 8) {
            vd8 mu, is, sc, md, mx;
            memcpy(&mu, mean + c, sizeof mu);
            memcpy(&is, invstd + c, sizeof is);
            memcpy(&sc, scale + c, sizeof sc);
            memcpy(&md, mean_dy + c, sizeof md);
            memcpy(&mx, mean_dy_xhat + c, sizeof mx);
            for (size_t i = i0; i < i1; i++) {
                vd8 xv, g;
                load8d(x + i * stride + c, &xv);
                load8d(dy + i * stride + c, &g);
                vd8 xhat = (xv - mu) * is;
                vd8 out = sc * (g - md - xhat * mx);
                if (relu)
                    relu_mask8(&out, &xv);
                store8f(dx + i * stride + c, &out);
            }
        }
        for (size_t i = i0; i < i1; i++) {
            const float *xi = x + i * stride, *gi = dy + i * stride;
            float *di = dx + i * stride;
            for (int c = c8; c < channels; c++) {
                double xhat = (xi[c] - mean[c]) * invstd[c];
                float out = (float)(scale[c] * (gi[c] - mean_dy[c] - xhat * mean_dy_xhat[c]));
                di[c] = relu && !(xi[c] > 0.0f) ? 0.0f : out;
            }
        }
    }
}

/* ---- element loops ---- */

/* DG_W Philox blocks (4 * DG_W elements) at a time: block b of an iteration gives elements
 * 4b .. 4b + 3 (its four output words), exactly as dg_rng_bits. */
/* in and out at element `begin` (out[i - begin] for element i) */
DG_INLINE void dropout_core(size_t begin, size_t end, float rate,
                            const struct dg_dropout_key *key, const float *in, float *out)
{
    const vu m0 = (vu){0} + 0xD2511F53u, m1 = (vu){0} + 0xCD9E8D57u;
    const vf keep = vset1(1.0f / (1.0f - rate));
    const vf vrate = vset1(rate);
    const vf unit = vset1(1.0f / 16777216.0f);
    const uint32_t purpose = DG_RNG_DROPOUT + key->layer;
    vu lanes;
    for (int l = 0; l < DG_W; l++)
        lanes[l] = (uint32_t)l;
    size_t i = begin;
    for (; i % 4 && i < end; i++)
        out[i - begin] = in[i - begin] * dg_dropout_scale(rate, key->seed, key->layer,
                                                          key->epoch, key->step, i);
    const size_t group = 4 * DG_W;
    for (; i + group <= end && (i >> 34) == ((i + group - 1) >> 34); i += group) {
        vu c0 = lanes + (uint32_t)(i >> 2);
        vu c1 = (vu){0} + key->step;
        vu c2 = (vu){0} + key->epoch;
        vu c3 = (vu){0} + (purpose | ((uint32_t)(i >> 34) << 8));
        uint32_t k0 = (uint32_t)key->seed, k1 = (uint32_t)(key->seed >> 32);
        for (int round = 0; round < 10; round++) {
            vu lo0, hi0, lo1, hi1;
            vmulhilo(c0, m0, &lo0, &hi0);
            vmulhilo(c2, m1, &lo1, &hi1);
            c0 = hi1 ^ c1 ^ k0;
            c1 = lo1;
            c2 = hi0 ^ c3 ^ k1;
            c3 = lo0;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const vu words[4] = {c0, c1, c2, c3};
        vf scale[4];
        for (int l = 0; l < 4; l++) {
            vf u = __builtin_convertvector((vi)(words[l] >> 8), vf) * unit;
            scale[l] = vselect((vi)(u >= vrate), keep, vzero());
        }
        /* element 4b + l is word l of block b: two rounds of interleaving put them in order */
        vf a = vzip_lo(scale[0], scale[2]), b = vzip_hi(scale[0], scale[2]);
        vf c = vzip_lo(scale[1], scale[3]), d = vzip_hi(scale[1], scale[3]);
        const vf ordered[4] = {vzip_lo(a, c), vzip_hi(a, c), vzip_lo(b, d), vzip_hi(b, d)};
        for (int v = 0; v < 4; v++)
            vstore(out + (i - begin) + (size_t)v * DG_W,
                   vload(in + (i - begin) + (size_t)v * DG_W) * ordered[v]);
    }
    for (; i < end; i++)
        out[i - begin] = in[i - begin] * dg_dropout_scale(rate, key->seed, key->layer,
                                                          key->epoch, key->step, i);
}

static void dropout_at(size_t begin, size_t end, float rate, const struct dg_dropout_key *key,
                       const float *in, float *out)
{
    dropout_core(begin, end, rate, key, in, out);
}

/* 2n floats from p (n <= DG_W) as two vectors, the lanes past them zero. */
DG_INLINE void load_pairs(const float *p, int n, vf *a, vf *b)
{
    if (n == DG_W) {
        *a = vload(p);
        *b = vload(p + DG_W);
    } else {
        *a = 2 * n >= DG_W ? vload(p) : vload_part(p, 2 * n);
        *b = 2 * n > DG_W ? vload_part(p + DG_W, 2 * n - DG_W) : vzero();
    }
}

DG_INLINE void store_pairs(float *p, int n, vf a, vf b)
{
    if (n == DG_W) {
        vstore(p, a);
        vstore(p + DG_W, b);
    } else {
        if (2 * n >= DG_W)
            vstore(p, a);
        else
            vstore_part(p, a, 2 * n);
        if (2 * n > DG_W)
            vstore_part(p + DG_W, b, 2 * n - DG_W);
    }
}

/* Output columns c .. c+n (n <= DG_W) of one window row: the gradient to the first maximum
 * of each window (row-major: top left, top right, bottom left, bottom right; a later one
 * only when strictly greater, so NaN never takes it), zero elsewhere. */
DG_INLINE void maxpool_bwd_columns(const float *top, const float *bottom, const float *dy, int n,
                                   float *dtop, float *dbottom)
{
    vf ta, tb, ba, bb;
    load_pairs(top, n, &ta, &tb);
    load_pairs(bottom, n, &ba, &bb);
    vf v0 = DG_SHUFFLE(ta, tb, DG_UNZIP_EVEN), v1 = DG_SHUFFLE(ta, tb, DG_UNZIP_ODD);
    vf v2 = DG_SHUFFLE(ba, bb, DG_UNZIP_EVEN), v3 = DG_SHUFFLE(ba, bb, DG_UNZIP_ODD);
    vf g = n == DG_W ? vload(dy) : vload_part(dy, n), zero = vzero();
    vi c1 = (vi)(v1 > v0);
    vf m = vselect(c1, v1, v0);
    vi c2 = (vi)(v2 > m);
    m = vselect(c2, v2, m);
    vi c3 = (vi)(v3 > m);
    vf g0 = vselect(c1 | c2 | c3, zero, g), g1 = vselect(c1 & ~c2 & ~c3, g, zero);
    vf g2 = vselect(c2 & ~c3, g, zero), g3 = vselect(c3, g, zero);
    store_pairs(dtop, n, vzip_lo(g0, g1), vzip_hi(g0, g1));
    store_pairs(dbottom, n, vzip_lo(g2, g3), vzip_hi(g2, g3));
}

/* The maximum of each 2x2 window, stride 2 (a later element only when strictly greater, so
 * a NaN first element stays), DG_W windows at a time. */
static void maxpool_fwd(const float *x, int h, int w, float *y)
{
    int oh = h / 2, ow = w / 2;
    for (int r = 0; r < oh; r++) {
        const float *top = x + (size_t)(2 * r) * w, *bottom = top + w;
        float *out = y + (size_t)r * ow;
        for (int c = 0; c < ow; c += DG_W) {
            int n = ow - c < DG_W ? ow - c : DG_W;
            vf ta, tb, ba, bb;
            load_pairs(top + 2 * c, n, &ta, &tb);
            load_pairs(bottom + 2 * c, n, &ba, &bb);
            vf m = DG_SHUFFLE(ta, tb, DG_UNZIP_EVEN), v = DG_SHUFFLE(ta, tb, DG_UNZIP_ODD);
            m = vselect((vi)(v > m), v, m);
            v = DG_SHUFFLE(ba, bb, DG_UNZIP_EVEN);
            m = vselect((vi)(v > m), v, m);
            v = DG_SHUFFLE(ba, bb, DG_UNZIP_ODD);
            m = vselect((vi)(v > m), v, m);
            if (n == DG_W)
                vstore(out + c, m);
            else
                vstore_part(out + c, m, n);
        }
    }
}

static void maxpool_bwd(const float *x, const float *dy, int h, int w, float *dx)
{
    int oh = h / 2, ow = w / 2;
    for (int r = 0; r < oh; r++) {
        const float *top = x + (size_t)(2 * r) * w, *bottom = top + w;
        float *dtop = dx + (size_t)(2 * r) * w, *dbottom = dtop + w;
        const float *g = dy + (size_t)r * ow;
        for (int c = 0; c < ow; c += DG_W) {
            int n = ow - c < DG_W ? ow - c : DG_W;
            maxpool_bwd_columns(top + 2 * c, bottom + 2 * c, g + c, n, dtop + 2 * c,
                                dbottom + 2 * c);
        }
        if (w % 2) {
            dtop[w - 1] = 0.0f;
            dbottom[w - 1] = 0.0f;
        }
    }
    if (h % 2)
        memset(dx + (size_t)(h - 1) * w, 0, sizeof(float) * (size_t)w);
}

/* The operation order of src/math/rmsprop.h, no fused operations. */
static void rmsprop(size_t n, float *w, const float *g, float *acc, float lr, float rho, float eps)
{
    const vf vrho = vset1(rho), vone_minus_rho = vset1(1.0f - rho);
    const vf vlr = vset1(lr), veps = vset1(eps);
    size_t i = 0;
    for (; i + DG_W <= n; i += DG_W) {
        vf gv = vload(g + i);
        vf a = vrho * vload(acc + i) + (vone_minus_rho * gv) * gv;
        vstore(acc + i, a);
        vstore(w + i, vload(w + i) - (vlr * gv) / (vsqrt(a) + veps));
    }
    for (; i < n; i++)
        dg_rmsprop_element(&w[i], &acc[i], g[i], lr, rho, eps);
}

/* The operation order of src/math/adam.h, no fused operations. */
static void adam(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1,
                 float beta2, float eps, float bc1, float bc2)
{
    const vf vb1 = vset1(beta1), vone_minus_b1 = vset1(1.0f - beta1);
    const vf vb2 = vset1(beta2), vone_minus_b2 = vset1(1.0f - beta2);
    const vf vlr = vset1(lr), veps = vset1(eps), vbc1 = vset1(bc1), vbc2 = vset1(bc2);
    size_t i = 0;
    for (; i + DG_W <= n; i += DG_W) {
        vf gv = vload(g + i);
        vf mm = vb1 * vload(m + i) + vone_minus_b1 * gv;
        vf vv = vb2 * vload(v + i) + (vone_minus_b2 * gv) * gv;
        vstore(m + i, mm);
        vstore(v + i, vv);
        vstore(w + i, vload(w + i) - (vlr * (mm / vbc1)) / (vsqrt(vv / vbc2) + veps));
    }
    for (; i < n; i++)
        dg_adam_element(&w[i], &m[i], &v[i], g[i], lr, beta1, beta2, eps, bc1, bc2);
}

/* The operation order of src/math/sgd.h, no fused operations. */
static void sgd(size_t n, float *w, const float *g, float *b, float lr, float momentum,
                int nesterov)
{
    const vf vmu = vset1(momentum), vlr = vset1(lr);
    size_t i = 0;
    for (; i + DG_W <= n; i += DG_W) {
        vf gv = vload(g + i);
        vf bb = vmu * vload(b + i) + gv;
        vstore(b + i, bb);
        vf step = nesterov ? vlr * (gv + vmu * bb) : vlr * bb;
        vstore(w + i, vload(w + i) - step);
    }
    for (; i < n; i++)
        dg_sgd_element(&w[i], &b[i], g[i], lr, momentum, nesterov);
}

static void relu_bwd(size_t n, const float *y, float *dy)
{
    size_t i = 0;
    for (; i + DG_W <= n; i += DG_W)
        vstore(dy + i, vselect((vi)(vload(y + i) > vzero()), vload(dy + i), vzero()));
    for (; i < n; i++)
        dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

static void bias_act(float *y, size_t n, float bias, int relu)
{
    const vf b = vset1(bias);
    size_t i = 0;
    if (relu) {
        for (; i + DG_W <= n; i += DG_W)
            vstore(y + i, vrelu(vload(y + i) + b));
        for (; i < n; i++) {
            float v = y[i] + bias;
            y[i] = v > 0.0f ? v : 0.0f;
        }
        return;
    }
    for (; i + DG_W <= n; i += DG_W)
        vstore(y + i, vload(y + i) + b);
    for (; i < n; i++)
        y[i] = y[i] + bias;
}

/* Row y of the window (ky, kx): col[x] = plane[y + ky - pad][x + kx - pad], zero outside. */
static void im2col(const float *x, int cin, int h, int w, int k, float *col)
{
    int pad = k / 2;
    size_t hw = (size_t)h * w;
    for (int ci = 0; ci < cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *out = col + ((size_t)(ci * k + ky) * k + kx) * hw;
                const float *plane = x + (size_t)ci * hw;
                int x0 = pad - kx > 0 ? pad - kx : 0;
                int x1 = w + pad - kx < w ? w + pad - kx : w;
                for (int y = 0; y < h; y++) {
                    int sy = y + ky - pad;
                    float *row = out + (size_t)y * w;
                    if (sy < 0 || sy >= h || x1 <= x0) {
                        memset(row, 0, sizeof(float) * (size_t)w);
                        continue;
                    }
                    for (int xx = 0; xx < x0; xx++)
                        row[xx] = 0.0f;
                    memcpy(row + x0, plane + (size_t)sy * w + x0 + kx - pad,
                           sizeof(float) * (size_t)(x1 - x0));
                    for (int xx = x1; xx < w; xx++)
                        row[xx] = 0.0f;
                }
            }
}

static void col2im(const float *col, int cin, int h, int w, int k, float *x)
{
    int pad = k / 2;
    size_t hw = (size_t)h * w;
    memset(x, 0, sizeof(float) * (size_t)cin * hw);
    for (int ci = 0; ci < cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *in = col + ((size_t)(ci * k + ky) * k + kx) * hw;
                float *plane = x + (size_t)ci * hw;
                int x0 = pad - kx > 0 ? pad - kx : 0;
                int x1 = w + pad - kx < w ? w + pad - kx : w;
                for (int y = 0; y < h; y++) {
                    int sy = y + ky - pad;
                    if (sy < 0 || sy >= h)
                        continue;
                    float *dst = plane + (size_t)sy * w;
                    const float *src = in + (size_t)y * w;
                    for (int xx = x0; xx < x1; xx++)
                        dst[xx + kx - pad] += src[xx];
                }
            }
}

static void assemble(const uint8_t *image, const struct dg_affine *affine, float *out)
{
    if (!affine) {
        for (int k = 0; k < DG_PIXELS; k++)
            out[k] = dg_pixel_to_float(image[k]);
        return;
    }
    for (int row = 0; row < DG_IMAGE_SIDE; row++)
        for (int col = 0; col < DG_IMAGE_SIDE; col++)
            out[row * DG_IMAGE_SIDE + col] = dg_augment_pixel(image, *affine, row, col);
}

const struct dg_cpu_isa_ops DG_ISA_TABLE = {
#if defined(DG_ISA_AVX512)
    .isa = DG_CPU_ISA_AVX512,
#elif defined(DG_ISA_AVX2)
    .isa = DG_CPU_ISA_AVX2,
#elif defined(DG_ISA_NEON)
    .isa = DG_CPU_ISA_NEON,
#else
    .isa = DG_CPU_ISA_SCALAR,
#endif
    .lanes = DG_W,
    .conv_row = conv_row,
    .filter_tile = filter_tile,
    .wino_weights = wino_weights,
    .wino_input = wino_input,
    .wino_output = wino_output,
    .wino_grad = wino_grad,
    .wino_filter_out = wino_filter_out,
    .to_nhwc = to_nhwc,
    .from_nhwc = from_nhwc,
    .interleave4 = interleave4,
    .deinterleave4 = deinterleave4,
    .channel_sums = channel_sums,
    .bn_sum = bn_sum,
    .bn_squares = bn_squares,
    .bn_grad_sums = bn_grad_sums,
    .bn_affine = bn_affine,
    .bn_input_grad = bn_input_grad,
    .bn_sums_nhwc = bn_sums_nhwc,
    .bn_grad_sums_nhwc = bn_grad_sums_nhwc,
    .bn_affine_nhwc = bn_affine_nhwc,
    .bn_input_grad_nhwc = bn_input_grad_nhwc,
    .dropout_at = dropout_at,
    .maxpool_fwd = maxpool_fwd,
    .maxpool_bwd = maxpool_bwd,
    .rmsprop = rmsprop,
    .adam = adam,
    .sgd = sgd,
    .relu_bwd = relu_bwd,
    .bias_act = bias_act,
    .im2col = im2col,
    .col2im = col2im,
    .assemble = assemble,
};
