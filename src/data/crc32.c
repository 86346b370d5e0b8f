/* CRC-32 (gzip's; the value of zlib's crc32): zlib's, or folded with carry-less multiplies
 * where the CPU has them. zlib checks a gzip member's CRC-32 on the thread that inflates, where
 * it costs a sixth of the inflate time; the PCLMULQDQ folding (Gopal et al., "Fast CRC
 * Computation for Generic Polynomials Using PCLMULQDQ Instruction", Intel 2009; the constants
 * of its bit-reflected CRC-32) is several times faster. */
#include "data/data_internal.h"
#include "digits/cpu_features.h"

#include <stdlib.h>
#include <zlib.h>

static uint32_t crc32_zlib(uint32_t crc, const unsigned char *p, size_t n)
{
    return (uint32_t)crc32_z(crc, p, n);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DATA_CLMUL __attribute__((target("pclmul,sse4.1")))

/* The bit-reflected CRC register (crc not inverted) after len bytes; len >= 64, a multiple
 * of 16. */
DATA_CLMUL static uint32_t crc32_fold(uint32_t crc, const unsigned char *p, size_t len)
{
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124);
    const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);
    const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(const void *)(p + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    p += 64;
    len -= 64;
    for (; len >= 64; p += 64, len -= 64) { /* four lanes folded 64 bytes on */
        __m128i y1 = _mm_clmulepi64_si128(x1, k1k2, 0x00),
                z1 = _mm_clmulepi64_si128(x1, k1k2, 0x11);
        __m128i y2 = _mm_clmulepi64_si128(x2, k1k2, 0x00),
                z2 = _mm_clmulepi64_si128(x2, k1k2, 0x11);
        __m128i y3 = _mm_clmulepi64_si128(x3, k1k2, 0x00),
                z3 = _mm_clmulepi64_si128(x3, k1k2, 0x11);
        __m128i y4 = _mm_clmulepi64_si128(x4, k1k2, 0x00),
                z4 = _mm_clmulepi64_si128(x4, k1k2, 0x11);
        x1 =
            _mm_xor_si128(_mm_xor_si128(y1, z1), _mm_loadu_si128((const __m128i *)(const void *)p));
        x2 = _mm_xor_si128(_mm_xor_si128(y2, z2),
                           _mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
        x3 = _mm_xor_si128(_mm_xor_si128(y3, z3),
                           _mm_loadu_si128((const __m128i *)(const void *)(p + 32)));
        x4 = _mm_xor_si128(_mm_xor_si128(y4, z4),
                           _mm_loadu_si128((const __m128i *)(const void *)(p + 48)));
    }
    /* the four lanes into one, then 16 bytes at a time */
    __m128i lanes[3] = {x2, x3, x4};
    for (int i = 0; i < 3; i++)
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x00),
                                         _mm_clmulepi64_si128(x1, k3k4, 0x11)),
                           lanes[i]);
    for (; len >= 16; p += 16, len -= 16)
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x00),
                                         _mm_clmulepi64_si128(x1, k3k4, 0x11)),
                           _mm_loadu_si128((const __m128i *)(const void *)p));
    /* 128 bits to 64, then Barrett reduction to 32 */
    x2 = _mm_clmulepi64_si128(x1, k3k4, 0x10);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5k0, 0x00), x2);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, low32), poly, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

static uint32_t crc32_clmul(uint32_t crc, const unsigned char *p, size_t n)
{
    if (n >= 64) {
        size_t folded = n & ~(size_t)15;
        crc = ~crc32_fold(~crc, p, folded);
        p += folded;
        n -= folded;
    }
    return n ? crc32_zlib(crc, p, n) : crc;
}
#endif

/* The fastest this CPU has. */
static dg_data_crc32_fn crc32_best(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const struct dg_cpu_features *cpu = dg_cpu_features();
    if (cpu->pclmul && cpu->sse4_1)
        return crc32_clmul;
#endif
    return crc32_zlib;
}

uint32_t dg_crc32(uint32_t crc, const unsigned char *p, size_t n)
{
    if (!p)
        return 0; /* as zlib's crc32(crc, Z_NULL, n) */
    return crc32_best()(crc, p, n);
}

/* Carry-less multiplies where the CPU has them; DIGITS_DATA_GENERIC=1 keeps zlib's. */
dg_data_crc32_fn dg_data_crc32_choose(void)
{
    const char *generic = getenv("DIGITS_DATA_GENERIC");
    if (generic && generic[0] == '1')
        return crc32_zlib;
    return crc32_best();
}
