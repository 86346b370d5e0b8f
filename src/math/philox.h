/* Philox4x32-10 counter-based generator (Salmon et al., SC11, "Random123").
 * Every random number in Digits is a pure function of (seed, purpose, epoch, step, index):
 * key = seed (64 bits), counter = (index / 4, step, epoch, purpose), lane = index % 4.
 * Usable from C and CUDA; no state. */
#ifndef DG_PHILOX_H
#define DG_PHILOX_H

#include "hostdev.h"
#include <stdint.h>

struct dg_philox_ctr {
    uint32_t v[4];
};

DG_HOSTDEV static inline uint32_t dg_philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t product = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(product >> 32);
    return (uint32_t)product;
}

/* One Philox4x32 block with 10 rounds: counter ctr, key (k0, k1). */
DG_HOSTDEV static inline struct dg_philox_ctr dg_philox4x32_10(struct dg_philox_ctr ctr, uint32_t k0,
                                                              uint32_t k1)
{
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = dg_philox_mulhilo(0xD2511F53u, ctr.v[0], &hi0);
        uint32_t lo1 = dg_philox_mulhilo(0xCD9E8D57u, ctr.v[2], &hi1);
        struct dg_philox_ctr next;
        next.v[0] = hi1 ^ ctr.v[1] ^ k0;
        next.v[1] = lo1;
        next.v[2] = hi0 ^ ctr.v[3] ^ k1;
        next.v[3] = lo0;
        ctr = next;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return ctr;
}

/* What a random number is for; part of the counter so that streams never overlap. */
enum dg_rng_purpose {
    DG_RNG_INIT = 1,
    DG_RNG_SPLIT = 2,
    DG_RNG_SHUFFLE = 3,
    DG_RNG_DROPOUT = 4, /* + dropout layer ordinal (0, 1, 2) */
    DG_RNG_AUGMENT = 8,
};

/* 32 random bits for (seed, purpose, epoch, step, index). */
DG_HOSTDEV static inline uint32_t dg_rng_bits(uint64_t seed, uint32_t purpose, uint32_t epoch,
                                             uint32_t step, uint64_t index)
{
    struct dg_philox_ctr ctr;
    ctr.v[0] = (uint32_t)(index >> 2);
    ctr.v[1] = step;
    ctr.v[2] = epoch;
    ctr.v[3] = purpose | ((uint32_t)(index >> 34) << 8);
    struct dg_philox_ctr out = dg_philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
    return out.v[index & 3];
}

/* Uniform float in [0, 1) with 24 random bits: exact in float on every backend. */
DG_HOSTDEV static inline float dg_rng_uniform(uint64_t seed, uint32_t purpose, uint32_t epoch,
                                             uint32_t step, uint64_t index)
{
    return (float)(dg_rng_bits(seed, purpose, epoch, step, index) >> 8) * (1.0f / 16777216.0f);
}

#endif
