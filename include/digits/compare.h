/* Comparison of a candidate tensor against a reference one with the project's tolerances, and
 * the comparison of two backends on the reference network that `digits compare` prints.
 *
 * The tolerances (docs/DEVELOPING.md, "Tolerances", has the same reasoning with the measured
 * numbers). u = 2^-24 = 6.0e-8 is FP32's unit roundoff; TF32 keeps 10 mantissa bits (u_tf32 =
 * 2^-11 = 4.9e-4), bf16 7 (u_bf16 = 2^-8 = 3.9e-3). Each output of a convolution or dense op
 * is a sum of K products; K per layer of the reference network (batch 86):
 *   forward   conv1 25, conv2 800, conv3 288, conv4 576, dense1 3136, dense2 256
 *   grad_in   conv2 800, conv3 576, conv4 576, dense1 256, dense2 10
 *   grad_w/b  conv1, conv2 86*28*28 = 67,424; conv3, conv4 86*14*14 = 16,856; dense 86
 * - Two FP32 computations of the same sum in different orders: the worst case K u (4.0e-3 at
 *   K = 67,424) is never reached; rounding errors behave like a random walk, so each side's
 *   error is about u sqrt(K) of the output's scale even for sequential summation (1.5e-5 at the
 *   largest K; blocked or pairwise summation, what BLAS, cuDNN and the CPU kernels do, is
 *   smaller still), and two sides differ by at most twice that: 3.1e-5. Winograd transforms
 *   add their own rounding: the CPU's measured worst backward error against the double
 *   reference is 8e-6 of max |ref|, the CPU's convolution algorithms against each other on
 *   the network 6.4e-6. FP32 backward bound: max |a - b| <= 5e-5 max |b|.
 * - A matrix product whose inputs were rounded to TF32 (tensor cores) errs per product by up to
 *   2 u_tf32, independently per term, so its error does not shrink relative to the output:
 *   2.0e-4..4.7e-4 of max |ref| when rounding to nearest, 6.4e-4..1.06e-3 when truncating
 *   (measured on dot products and on the real network: test_compare). That is 3.9x the FP32
 *   bound at least, so TF32 leaking into an FP32 run fails it; the old 1e-3 let it pass.
 * - TF32 bound (a TF32 candidate, per op): 1.5e-3 (~3 u_tf32) covers both TF32 roundings;
 *   bf16 inputs err by 1.4e-3..4.5e-3 (rounding to nearest; 16 of the network's 17 conv /
 *   dense lines fail), while the old 1e-2 let bf16 pass.
 * - Forward (FP32) stays elementwise 1e-5 + 1e-4 |b|: the forward sums are short (K <= 3136,
 *   u sqrt(K) = 3.3e-6), and TF32's per-element relative error (~4e-4) fails it.
 * - Training steps are compared along the reference's trajectory (dg_compare_backends): two
 *   correct FP32 implementations trained apart diverge within a few steps.
 * The first GPU run confirms these bounds; it must not loosen them without a written reason
 * (docs/DEVELOPING.md). */
#ifndef DIGITS_COMPARE_H
#define DIGITS_COMPARE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "digits/backend.h"
#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"

#ifdef __cplusplus
extern "C" {
#endif

enum dg_tolerance_kind {
    DG_TOL_ELEMENTWISE, /* atol + rtol * |reference| per element */
    DG_TOL_NORMWISE,    /* rtol * max |reference| for all elements */
    DG_TOL_NMSE,        /* sum (a - b)^2 / sum b^2 <= rtol (parameters after training) */
};

struct dg_tolerance {
    enum dg_tolerance_kind kind;
    double atol;
    double rtol;
};

/* FP32 forward: elementwise 1e-5 + 1e-4 |b| */
extern const struct dg_tolerance dg_tol_forward;
/* FP32 backward: normwise 5e-5 */
extern const struct dg_tolerance dg_tol_backward_fp32;
/* FP32 forward of a convolution that either side runs as Winograd: normwise 5e-5, the backward
 * bound. Winograd's transforms round values as large as the tile's largest, so its error
 * scales with max |y|, not with each |y|: on the deotte preset's "valid" 3x3 layers (inputs
 * batch-normalised, 288..576 terms) the CPU's Winograd forward differs from direct sums by up
 * to 3.9e-5 absolute on outputs of 0.1..3 (normwise 4e-6..7e-6), outside the elementwise
 * 1e-5 + 1e-4 |b| at a few elements in 10^5. TF32 (normwise >= 2e-4) still fails it. */
extern const struct dg_tolerance dg_tol_forward_winograd;
/* a TF32 candidate's convolutions and dense layers, forward and backward: normwise 1.5e-3 */
extern const struct dg_tolerance dg_tol_forward_tf32;
extern const struct dg_tolerance dg_tol_backward_tf32;
/* a bf16 candidate's (--math bf16: operands rounded to bf16, float32 sums) convolutions and
 * dense layers, forward and backward: normwise 1e-2, ~2.6 u_bf16 (measured 1.4e-3..4.5e-3 on
 * the network; docs/DEVELOPING.md "Tolerances") */
extern const struct dg_tolerance dg_tol_forward_bf16;
extern const struct dg_tolerance dg_tol_backward_bf16;
/* Batch normalisation, forward and backward, at every math mode (it runs float32 on both
 * backends): normwise 5e-5. Its outputs are (x - mean) / std scaled, with the mean, the
 * variance and the gradient's two per-channel sums taken over M = batch x positions values
 * (up to 86 x 26 x 26 = 58,136 in the deotte preset); a float32 sum of M terms errs by about
 * u sqrt(M) = 1.4e-5 of the normalised scale, so two sides differ by at most ~2.9e-5 of
 * max |y| (the CPU sums in double and errs by one rounding). */
extern const struct dg_tolerance dg_tol_batchnorm;
/* elementwise 0 + 0: bit-identical */
extern const struct dg_tolerance dg_tol_exact;
/* Parameters after a training step from the same weights: NMSE <= 1e-6 (measured 4.4e-7 after
 * the first step, 2e-9 later). Elementwise bounds cannot hold there: RMSprop's first steps
 * move a weight by about lr / sqrt(1 - rho) whatever the gradient's size, so a gradient that
 * is zero up to rounding moves it either way on the two sides. */
extern const struct dg_tolerance dg_tol_weights;
/* The same after one step of a TF32 candidate: NMSE <= 1e-3 (RMSprop's first step turns TF32's
 * gradient errors into weight differences of NMSE 5e-5 rounding to nearest, 1e-4 truncating,
 * measured; the per-op lines, not this, tell TF32 from bf16). */
extern const struct dg_tolerance dg_tol_weights_tf32;
/* The same after one step of a bf16 candidate: NMSE <= 4e-3 (measured 3.9e-4 after the first
 * step, 3.2e-5 at most in the 19 after it). */
extern const struct dg_tolerance dg_tol_weights_bf16;

/* The mean loss of one batch from the same weights (each step of `digits compare --steps` and
 * of gpu_train_step starts the candidate from the reference's weights): relative 1e-5 in FP32;
 * a TF32 candidate's loss goes through every layer's TF32 rounding: relative 1.5e-3, the TF32
 * bound (measured 2e-6..8e-6; the loss does not tell bf16 from TF32, the per-op lines do). */
#define DG_TOL_LOSS_RTOL 1e-5
#define DG_TOL_LOSS_RTOL_TF32 1.5e-3
/* a bf16 candidate's loss: relative 3e-3 (measured 3.2e-4 at most over 20 steps) */
#define DG_TOL_LOSS_RTOL_BF16 3e-3

struct dg_diff {
    double max_abs;  /* max |a - b| (infinite when a value is not finite) */
    double max_rel;  /* max |a - b| / |b| over elements with b != 0 */
    double nmse;     /* sum (a - b)^2 / sum b^2 (0 when both are 0) */
    double ref_max;  /* max |b| over the finite elements (normwise error = max_abs / ref_max) */
    size_t worst;    /* index of the largest |a - b|, or of the first non-finite value */
    size_t failures; /* elements outside the tolerance (non-finite ones included) */
    int nonfinite;   /* a NaN or Inf appeared in a or in b (even on both sides at once) */
    int pass;
};

/* Compares candidate `a` with reference `b` (n elements). Any NaN or infinity, on either
 * side, fails. */
void dg_diff_compute(const float *a, const float *b, size_t n, const struct dg_tolerance *tol,
                     struct dg_diff *out);

/* ---- two backends on the reference network (digits compare) ---- */

struct dg_compare_setup {
    const struct dg_model *model;     /* the starting weights */
    const struct dg_dataset *dataset; /* labelled images */
    const char *data_name;            /* for the header line */
    const char *model_name;
    int batch;     /* images per batch (at most dataset->count are used) */
    long steps;    /* > 0: also train that many steps on both and compare losses and weights */
    uint64_t seed; /* dropout and augmentation draws, and the order of the rows */
    int augment;
    int tf32; /* the candidate may use TF32: its conv / dense ops get the TF32 bounds */
    int bf16; /* the candidate computes with bf16 operands: the bf16 bounds (over tf32) */
    /* the optimizer of the steps: kind DG_OPTIMIZER_RMSPROP (zero) is the recipe's RMSprop
     * (lr 1e-3, rho 0.9, eps 1e-8, whatever the other fields hold); Adam and SGD take their
     * constants from here (dg_optimizer_default), Adam with beta1^2 < beta2 (the bound of a
     * bias after the steps needs it). The learning rate is 1e-3 for every kind. */
    struct dg_optimizer optimizer;
};

/* Runs one training batch through `ref` and `cand` and prints to `out` one line per tensor:
 * every layer's output, the gradient of its input and its weight and bias gradients, each
 * with max_abs, max_rel, NMSE, worst index and pass / FAIL. Each line compares one op on the
 * same inputs: after each layer the candidate continues from the reference's result (forward
 * and backward), so a difference shows at the op that makes it and nowhere else. Then the
 * loss of the batch with both sides run end to end, and with setup->steps, the per-step
 * losses and the final weights of both sides trained independently. *failures receives the
 * number of comparisons outside tolerance; the status is about errors (memory, backend). */
enum dg_status dg_compare_backends(struct dg_backend *ref, struct dg_backend *cand,
                                   const struct dg_compare_setup *setup, FILE *out, int *failures);

#ifdef __cplusplus
}
#endif

#endif
