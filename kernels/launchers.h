/* Launchers of the custom CUDA kernels (the .cu files in kernels/), callable from C
 * (src/cuda/).
 * Every pointer is device memory unless said otherwise; tensors are float32 NCHW, row-major.
 * Each launcher enqueues its kernel on `stream` and returns cudaGetLastError() (the launch
 * status; execution errors surface at the next synchronising call). */
#ifndef DG_LAUNCHERS_H
#define DG_LAUNCHERS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "digits/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The values that change from one training step to the next, in device memory: the CUDA
 * backend's step block (src/cuda/step.c), uploaded before each step, so that a step captured
 * into a CUDA Graph once replays with each step's own dropout and augmentation counters,
 * learning rate and batch rows. A kernel given `vars` (NULL: the by-value arguments hold)
 * reads its epoch, step or learning rate there. */
struct dg_step_block {
    uint32_t epoch;
    uint32_t step;
    float lr;
    uint32_t n;       /* images in the batch */
    uint32_t rows[1]; /* n row indices (the block is allocated for the largest batch) */
};

/* ---- bias + ReLU, ReLU backward (kernels/bias_relu.cu) ---- */

/* y (n, c, hw) += bias (c) (bias may be NULL), then ReLU when relu != 0. Dense layers use
 * hw = 1: y (batch, out). */
cudaError_t dg_launch_bias_act(float *y, const float *bias, int n, int c, int hw, int relu,
                               cudaStream_t stream);

/* dy (count) *= (y > 0). */
/* global average pooling (src/math/gap.h): one thread per output forward, per input backward */
cudaError_t dg_launch_gap_fwd(size_t rows, int spatial, const float *x, float *y,
                              cudaStream_t stream);
cudaError_t dg_launch_gap_bwd(size_t rows, int spatial, const float *dy, float *dx,
                              cudaStream_t stream);
cudaError_t dg_launch_relu_bwd(size_t count, const float *y, float *dy, cudaStream_t stream);

/* ---- bf16 conversions of --math bf16 (kernels/bf16.cu) ---- */

/* out (count) <- in rounded to bf16 (dg_bf16_round of src/math/bf16.h: nearest even,
 * denormals to zero; the CPU's rounding). */
cudaError_t dg_launch_to_bf16(size_t count, const float *in, uint16_t *out, cudaStream_t stream);

/* out (n, c, hw) <- in widened to float32, + bias (c) (may be NULL), then ReLU when relu != 0. */
cudaError_t dg_launch_from_bf16(const uint16_t *in, float *out, const float *bias, int n, int c,
                                int hw, int relu, cudaStream_t stream);

/* ---- bias gradients (kernels/bias_grad.cu) ---- */

/* sum (c) = sum over n and hw of x (n, c, hw), in a fixed order (deterministic): the conv
 * bias gradient, and with hw = 1 the column sums of a (batch, out) dense gradient. */
cudaError_t dg_launch_channel_sum(const float *x, int n, int c, int hw, float *sum,
                                  cudaStream_t stream);

/* ---- max-pool backward (kernels/maxpool.cu) ---- */

/* Max-pool 2x2 stride 2 backward: dx (n, c, h, w) gets dy (n, c, h/2, w/2) at the first
 * maximum (row-major) of each window of x, 0 elsewhere (rows / columns outside every window
 * included). */
cudaError_t dg_launch_maxpool_bwd(const float *x, const float *dy, float *dx, int n, int c, int h,
                                  int w, cudaStream_t stream);

/* ---- dropout (kernels/dropout.cu) ---- */

/* out (count) = in * dg_dropout_scale(rate, key, flat index): forward (x -> y) and backward
 * (dy -> dx) are the same map. `in` may equal `out`. */
cudaError_t dg_launch_dropout(size_t count, float rate, struct dg_dropout_key key,
                              const struct dg_step_block *vars, const float *in, float *out,
                              cudaStream_t stream);

/* ---- softmax + cross-entropy (kernels/softmax_xent.cu) ---- */

/* probs (batch, 10) = softmax(logits). When labels != NULL: dlogits (may be NULL) = gradient of
 * the batch-mean loss, stats[0] += loss sum, stats[1] += correct count (stats: 2 doubles,
 * summed in a fixed order); with trace (stats then 3 doubles): trace[2k], trace[2k + 1] = the
 * new stats[0], stats[1] for k = stats[2], then stats[2] += 1. smoothing: label smoothing
 * (src/math/softmax_xent.h; 0 for none). */
cudaError_t dg_launch_softmax_xent(int batch, const float *logits, const uint8_t *labels,
                                   float smoothing, float *probs, float *dlogits, double *stats,
                                   double *trace, cudaStream_t stream);

/* ---- RMSprop (kernels/rmsprop.cu) ---- */

/* The learning rate is vars->lr when vars is not NULL. */
cudaError_t dg_launch_rmsprop(size_t count, float *w, const float *g, float *acc, float lr,
                              float rho, float eps, const struct dg_step_block *vars,
                              cudaStream_t stream);

/* ---- Adam (kernels/adam.cu) ---- */

/* pow[0] *= beta1, pow[1] *= beta2 (device, 2 floats): the step's beta1^t, beta2^t. */
cudaError_t dg_launch_adam_powers(float *pow, float beta1, float beta2, cudaStream_t stream);
/* src/math/adam.h over count parameters with bias corrections 1 - pow[0], 1 - pow[1]; the
 * learning rate is vars->lr when vars is not NULL. */
cudaError_t dg_launch_adam(size_t count, float *w, const float *g, float *m, float *v,
                           const float *pow, float lr, float beta1, float beta2, float eps,
                           const struct dg_step_block *vars, cudaStream_t stream);

/* ---- SGD with momentum (kernels/sgd.cu) ---- */

/* src/math/sgd.h over count parameters; the learning rate is vars->lr when vars is not NULL. */
cudaError_t dg_launch_sgd(size_t count, float *w, const float *g, float *b, float lr,
                          float momentum, int nesterov, const struct dg_step_block *vars,
                          cudaStream_t stream);

/* ---- the moving average of the weights (kernels/ema.cu) ---- */

/* src/math/ema.h over count parameters: shadow = decay shadow + (1 - decay) w. */
cudaError_t dg_launch_ema(size_t count, float *shadow, const float *w, float decay,
                          cudaStream_t stream);

/* ---- batch assembly (kernels/assemble.cu) ---- */

/* x (n, 1, 28, 28) <- images[rows[i]] / 255 (rows == NULL: image i), warped with the draws of
 * batch index i when augment != NULL (a host pointer, passed by value to the kernel; its epoch
 * and step are vars' when vars is not NULL); labels_out[i] <- labels_in[rows[i]] (or
 * labels_in[i]) when both label pointers are set. images (count, 784) uint8; rows (n) uint32,
 * device. */
cudaError_t dg_launch_assemble(const uint8_t *images, const uint8_t *labels_in,
                               const uint32_t *rows, int n, const struct dg_augment_key *augment,
                               const struct dg_step_block *vars, float *x, uint8_t *labels_out,
                               cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
