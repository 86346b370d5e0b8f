/* The width-generic vector layer of the CPU kernels (src/cpu/isa/kernels.c). That one source
 * is compiled once per instruction set, with exactly one of these defined by the build:
 *   DG_ISA_AVX512   __m512, 16 lanes, FMA          (-mavx512f -mavx2 -mfma)
 *   DG_ISA_AVX2     __m256, 8 lanes, FMA           (-mavx2 -mfma)
 *   DG_ISA_NEON     float32x4_t, 4 lanes, FMA      (aarch64)
 *   DG_ISA_SCALAR   a GCC vector of 4 floats, no FMA: portable C, lowered by the compiler to
 *                   whatever the baseline target has (SSE2 on x86-64, scalar code elsewhere)
 * `vf` is a GCC vector type in every case, so + - * / and lane subscripts work on it; only
 * fused multiply-add and square root need the ISA's intrinsics. Register blocking of the
 * convolution kernels is set here per ISA (how many pixels x vectors one block keeps in
 * registers). Loads and stores are unaligned. */
#ifndef DG_CPU_SIMD_H
#define DG_CPU_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(DG_ISA_AVX512)
#include <immintrin.h>
#define DG_W 16
#define DG_ISA_SUFFIX avx512
typedef __m512 vf;
#define DG_CONV_PIXELS 14 /* 14 x 2 accumulators of 32 zmm */
#define DG_CONV_VECS 2
#elif defined(DG_ISA_AVX2)
#include <immintrin.h>
#define DG_W 8
#define DG_ISA_SUFFIX avx2
typedef __m256 vf;
#define DG_CONV_PIXELS 6 /* 6 x 2 accumulators of 16 ymm */
#define DG_CONV_VECS 2
#elif defined(DG_ISA_NEON)
#include <arm_neon.h>
#define DG_W 4
#define DG_ISA_SUFFIX neon
typedef float32x4_t vf;
#define DG_CONV_PIXELS 6 /* 6 x 4 accumulators of 32 q registers */
#define DG_CONV_VECS 4
#elif defined(DG_ISA_SCALAR)
#define DG_W 4
#define DG_ISA_SUFFIX scalar
typedef float vf __attribute__((vector_size(16)));
#define DG_CONV_PIXELS 4
#define DG_CONV_VECS 2
#else
#error "compile kernels.c with one of DG_ISA_AVX512, DG_ISA_AVX2, DG_ISA_NEON, DG_ISA_SCALAR"
#endif

typedef int32_t vi __attribute__((vector_size(DG_W * 4)));
typedef uint32_t vu __attribute__((vector_size(DG_W * 4)));
typedef uint64_t vu64 __attribute__((vector_size(DG_W * 8)));

#define DG_INLINE __attribute__((always_inline)) static inline

DG_INLINE vf vload(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

DG_INLINE void vstore(float *p, vf v)
{
    memcpy(p, &v, sizeof v);
}

DG_INLINE vf vset1(float s)
{
#if defined(DG_ISA_AVX512)
    return _mm512_set1_ps(s);
#elif defined(DG_ISA_AVX2)
    return _mm256_set1_ps(s);
#elif defined(DG_ISA_NEON)
    return vdupq_n_f32(s);
#else
    return (vf){s, s, s, s};
#endif
}

DG_INLINE vf vzero(void)
{
    return vset1(0.0f);
}

/* a*b + c, fused (one rounding) where the ISA has FMA; two roundings in portable C. */
DG_INLINE vf vfma(vf a, vf b, vf c)
{
#if defined(DG_ISA_AVX512)
    return _mm512_fmadd_ps(a, b, c);
#elif defined(DG_ISA_AVX2)
    return _mm256_fmadd_ps(a, b, c);
#elif defined(DG_ISA_NEON)
    return vfmaq_f32(c, a, b);
#else
    return a * b + c;
#endif
}

/* c - a*b, fused where the ISA has FMA. */
DG_INLINE vf vfnma(vf a, vf b, vf c)
{
#if defined(DG_ISA_AVX512)
    return _mm512_fnmadd_ps(a, b, c);
#elif defined(DG_ISA_AVX2)
    return _mm256_fnmadd_ps(a, b, c);
#elif defined(DG_ISA_NEON)
    return vfmsq_f32(c, a, b);
#else
    return c - a * b;
#endif
}

/* a*b - c, fused where the ISA has FMA. */
DG_INLINE vf vfms(vf a, vf b, vf c)
{
#if defined(DG_ISA_AVX512)
    return _mm512_fmsub_ps(a, b, c);
#elif defined(DG_ISA_AVX2)
    return _mm256_fmsub_ps(a, b, c);
#elif defined(DG_ISA_NEON)
    return vnegq_f32(vfmsq_f32(c, a, b));
#else
    return a * b - c;
#endif
}

/* Correctly rounded square root (IEEE), the same on every ISA. */
DG_INLINE vf vsqrt(vf a)
{
#if defined(DG_ISA_AVX512)
    return _mm512_sqrt_ps(a);
#elif defined(DG_ISA_AVX2)
    return _mm256_sqrt_ps(a);
#elif defined(DG_ISA_NEON)
    return vsqrtq_f32(a);
#else
    vf r;
    for (int i = 0; i < DG_W; i++)
        r[i] = sqrtf(a[i]);
    return r;
#endif
}

/* mask ? a : b, mask lanes all ones or all zeros (a comparison result). */
DG_INLINE vf vselect(vi mask, vf a, vf b)
{
    vi ai, bi;
    memcpy(&ai, &a, sizeof ai);
    memcpy(&bi, &b, sizeof bi);
    vi r = (ai & mask) | (bi & ~mask);
    vf out;
    memcpy(&out, &r, sizeof out);
    return out;
}

/* x > 0 ? x : 0 (NaN gives 0), as the scalar ReLU. */
DG_INLINE vf vrelu(vf x)
{
    return vselect((vi)(x > vzero()), x, vzero());
}

/* Low and high 32 bits of the 64-bit products a*b, lane by lane (even and odd lanes through
 * the 32x32->64 multiply where the ISA has one). */
DG_INLINE void vmulhilo(vu a, vu b, vu *lo, vu *hi)
{
#if defined(DG_ISA_AVX512)
    __m512i ai = (__m512i)a, bi = (__m512i)b;
    __m512i even = _mm512_mul_epu32(ai, bi);
    __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(ai, 32), _mm512_srli_epi64(bi, 32));
    *lo = (vu)_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    *hi = (vu)_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
#elif defined(DG_ISA_AVX2)
    __m256i ai = (__m256i)a, bi = (__m256i)b;
    __m256i even = _mm256_mul_epu32(ai, bi);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(ai, 32), _mm256_srli_epi64(bi, 32));
    *lo = (vu)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = (vu)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
#else
    vu64 p = __builtin_convertvector(a, vu64) * __builtin_convertvector(b, vu64);
    *lo = __builtin_convertvector(p, vu);
    *hi = __builtin_convertvector(p >> 32, vu);
#endif
}

/* Interleaves of two vectors: lo = a0 b0 a1 b1 ... (first halves), hi = the second halves.
 * Constant shuffles: the compiler picks the ISA's permutes (vpermt2ps, vunpck + vperm2f128,
 * zip1/zip2). */
#if DG_W == 16
#define DG_ZIP_LO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define DG_ZIP_HI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#elif DG_W == 8
#define DG_ZIP_LO 0, 8, 1, 9, 2, 10, 3, 11
#define DG_ZIP_HI 4, 12, 5, 13, 6, 14, 7, 15
#else
#define DG_ZIP_LO 0, 4, 1, 5
#define DG_ZIP_HI 2, 6, 3, 7
#endif
/* The even and odd lanes of the pair (a, b): a0 a2 ... b0 b2 ... and a1 a3 ... b1 b3 ... */
#if DG_W == 16
#define DG_UNZIP_EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define DG_UNZIP_ODD 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#elif DG_W == 8
#define DG_UNZIP_EVEN 0, 2, 4, 6, 8, 10, 12, 14
#define DG_UNZIP_ODD 1, 3, 5, 7, 9, 11, 13, 15
#else
#define DG_UNZIP_EVEN 0, 2, 4, 6
#define DG_UNZIP_ODD 1, 3, 5, 7
#endif
#if defined(__clang__)
#define DG_SHUFFLE(a, b, list) __builtin_shufflevector(a, b, list)
#else
#define DG_SHUFFLE(a, b, list) __builtin_shuffle(a, b, (vi){list})
#endif

/* r[i][j] -> r[j][i] for a W x W block: log2(W) rounds of the perfect shuffle. */
DG_INLINE void vtranspose(vf r[DG_W])
{
    for (int round = 1; round < DG_W; round *= 2) {
        vf t[DG_W];
        for (int i = 0; i < DG_W / 2; i++) {
            t[2 * i] = DG_SHUFFLE(r[i], r[i + DG_W / 2], DG_ZIP_LO);
            t[2 * i + 1] = DG_SHUFFLE(r[i], r[i + DG_W / 2], DG_ZIP_HI);
        }
        for (int i = 0; i < DG_W; i++)
            r[i] = t[i];
    }
}

/* The first n (< DG_W) lanes from p, the rest zero; and the inverse (masked moves where the
 * ISA has them, touching no memory beyond the n floats). */
DG_INLINE vf vload_part(const float *p, int n)
{
#if defined(DG_ISA_AVX512)
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
#elif defined(DG_ISA_AVX2)
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes));
#else
    float tmp[DG_W] = {0};
    for (int i = 0; i < n; i++)
        tmp[i] = p[i];
    return vload(tmp);
#endif
}

DG_INLINE void vstore_part(float *p, vf v, int n)
{
#if defined(DG_ISA_AVX512)
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
#elif defined(DG_ISA_AVX2)
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes), v);
#else
    float tmp[DG_W];
    vstore(tmp, v);
    for (int i = 0; i < n; i++)
        p[i] = tmp[i];
#endif
}

/* lo = a0 b0 a1 b1 ... (first halves), hi = the second halves. */
DG_INLINE vf vzip_lo(vf a, vf b)
{
    return DG_SHUFFLE(a, b, DG_ZIP_LO);
}

DG_INLINE vf vzip_hi(vf a, vf b)
{
    return DG_SHUFFLE(a, b, DG_ZIP_HI);
}

#define DG_CAT2(a, b) a##_##b
#define DG_CAT(a, b) DG_CAT2(a, b)
/* The name of this ISA's table: dg_cpu_isa_avx512, dg_cpu_isa_avx2, ... */
#define DG_ISA_TABLE DG_CAT(dg_cpu_isa, DG_ISA_SUFFIX)

#endif
