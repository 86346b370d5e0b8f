/* float32 <-> bfloat16 element math shared by the CPU's bf16 kernels (src/cpu/bf16.h) and the
 * CUDA backend's conversion kernels (kernels/bf16.cu), so that both sides round an operand to
 * the same bf16 value.
 *
 * bf16 keeps the sign, the 8 exponent bits and the top 7 mantissa bits of a float32. */
#ifndef DG_MATH_BF16_H
#define DG_MATH_BF16_H

#include <stdint.h>
#include <string.h>

#include "hostdev.h"

/* float32 -> bf16, rounding to nearest even as vcvtneps2bf16 does: denormal inputs become a
 * zero of their sign (the instruction treats them as zero), NaN stays a quiet NaN, a value that
 * rounds past the largest bf16 becomes infinity. Branch-free, so loops over it vectorise. */
DG_HOSTDEV static inline uint16_t dg_bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t zero = (u >> 16) & 0x8000u;
    uint32_t nan = (u >> 16) | 0x40u;
    uint32_t out = (u & 0x7f800000u) == 0 ? zero : rounded;
    out = (u & 0x7fffffffu) > 0x7f800000u ? nan : out;
    return (uint16_t)out;
}

DG_HOSTDEV static inline float dg_bf16_to_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* f rounded to bf16 and back: the value a bf16 operand carries. */
DG_HOSTDEV static inline float dg_bf16_value(float f)
{
    return dg_bf16_to_float(dg_bf16_round(f));
}

#endif
