/* Dropout element math (inverted dropout, Keras semantics): an element is kept with
 * probability 1 - rate and then scaled by 1 / (1 - rate). The mask is never stored: it is
 * recomputed from Philox for (seed, DG_RNG_DROPOUT + layer, epoch, step, element index),
 * so CPU and GPU masks are identical and backward needs no saved state. */
#ifndef DG_DROPOUT_H
#define DG_DROPOUT_H

#include "philox.h"

/* The multiplier (0 or 1 / (1 - rate)) for element `index` of a dropout layer's tensor. */
DG_HOSTDEV static inline float dg_dropout_scale(float rate, uint64_t seed, uint32_t layer,
                                               uint32_t epoch, uint32_t step, uint64_t index)
{
    float u = dg_rng_uniform(seed, DG_RNG_DROPOUT + layer, epoch, step, index);
    return u >= rate ? 1.0f / (1.0f - rate) : 0.0f;
}

#endif
