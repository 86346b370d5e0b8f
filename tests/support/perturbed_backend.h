/* A test-only backend that wraps another one (the CPU backend) and gets one thing wrong on
 * purpose, so that tests can show that `digits compare` (dg_compare_backends) and the
 * tolerances catch a wrong candidate: a nudged output of one op of one layer, a NaN, or every
 * convolution and dense product computed from inputs rounded to fewer mantissa bits (TF32,
 * bf16). Every other op is passed through unchanged. Never part of the product. */
#ifndef DIGITS_PERTURBED_BACKEND_H
#define DIGITS_PERTURBED_BACKEND_H

#include "digits/backend.h"

enum dg_perturb_op {
    DG_PERTURB_NONE,
    DG_PERTURB_CONV_FWD,        /* y of the matching convolution */
    DG_PERTURB_CONV_BWD_DATA,   /* dx of the matching convolution */
    DG_PERTURB_CONV_BWD_FILTER, /* dw of the matching convolution */
    DG_PERTURB_DENSE_FWD,       /* y of the matching dense layer */
    DG_PERTURB_DENSE_BWD_DW,    /* dw of the matching dense layer */
    DG_PERTURB_UPDATE,          /* parameter `in` after every optimizer step (any optimizer) */
};

struct dg_perturbation {
    enum dg_perturb_op op;
    /* the layer: a convolution's (in_channels, out_channels, kernel), a dense layer's (in, out,
     * 0); in the reference network each is unique */
    int in, out, kernel;
    /* one_element != 0: the element of largest magnitude is multiplied by (1 + relative);
     * otherwise the whole output is. nan != 0: that element becomes NaN instead. */
    double relative;
    int one_element;
    int nan;
    /* > 0: the inputs of every convolution and dense op (forward and backward) are rounded
     * to this many explicit mantissa bits first (10: TF32, 7: bf16), to nearest (even) or,
     * with toward_zero, by truncation; accumulation stays FP32. */
    int mantissa_bits;
    int toward_zero;
};

/* Wraps `inner` (ownership passes to the wrapper: destroying it destroys inner). */
enum dg_status dg_test_perturbed_backend(struct dg_backend *inner,
                                         const struct dg_perturbation *how,
                                         struct dg_backend **out);

/* x rounded to `bits` explicit mantissa bits (to nearest even, or toward zero). */
float dg_test_round_mantissa(float x, int bits, int toward_zero);

#endif
