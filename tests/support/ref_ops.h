/* The naive double-precision reference of every backend op (tests only): plain loops in
 * double, written from the definitions in include/digits/backend.h, the judge of the fast
 * CPU path. Tensors NCHW, row-major; conv weights (out, in, k, k); dense weights (in, out).
 * Randomness has its own Philox4x32-10 here (written from the Random123 paper, not from
 * src/math/philox.h) and the augmentation its own double-precision warp (libm sin/cos), so
 * that the product's element math is checked against something it does not share.
 * dg_ref_batch_assemble alone reproduces the element math bit for bit (the float contract
 * that CPU and GPU share). */
#ifndef DIGITS_REF_OPS_H
#define DIGITS_REF_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "digits/backend.h"

/* y = conv(x, w) + b (the shape's padding and stride), ReLU when relu != 0. */
void dg_ref_conv_fwd(const struct dg_conv_shape *s, const double *x, const double *w,
                     const double *b, double *y, int relu);
void dg_ref_conv_bwd_data(const struct dg_conv_shape *s, const double *dy, const double *w,
                          double *dx);
void dg_ref_conv_bwd_filter(const struct dg_conv_shape *s, const double *x, const double *dy,
                            double *dw, double *db);

/* Batch normalisation as include/digits/backend.h defines it, in double: training mode
 * (batch statistics; running statistics updated; save_mean, save_invstd), inference mode
 * (running statistics), and the training-mode gradient. */
void dg_ref_batchnorm_fwd_train(const struct dg_bn_shape *s, const double *x, const double *gamma,
                                const double *beta, double *running_mean, double *running_var,
                                double momentum, double eps, double *y, double *save_mean,
                                double *save_invstd);
void dg_ref_batchnorm_fwd_infer(const struct dg_bn_shape *s, const double *x, const double *gamma,
                                const double *beta, const double *running_mean,
                                const double *running_var, double eps, double *y);
void dg_ref_batchnorm_bwd(const struct dg_bn_shape *s, const double *x, const double *dy,
                          const double *gamma, const double *save_mean, const double *save_invstd,
                          double *dx, double *dgamma, double *dbeta);

/* dy *= (y > 0). */
void dg_ref_relu_bwd(size_t n, const double *y, double *dy);

void dg_ref_maxpool_fwd(const struct dg_pool_shape *s, const double *x, double *y);
/* Each dy to the first maximum (row-major) of its window; the rest of dx is zero. */
void dg_ref_maxpool_bwd(const struct dg_pool_shape *s, const double *x, const double *dy,
                        double *dx);

/* Philox4x32-10 of a counter with key (low, high 32 bits of seed). */
void dg_ref_philox(const uint32_t counter[4], uint64_t seed, uint32_t out[4]);

/* The uniform draw of (seed, purpose, epoch, step, index): 24 bits of Philox4x32-10 word
 * index % 4 of counter (index / 4, step, epoch, purpose | (index >> 34) << 8), over 2^24. */
double dg_ref_uniform(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t step,
                      uint64_t index);

/* out = in / (1 - rate) where the element's uniform (purpose 4 + layer) is >= rate, else 0
 * (forward and backward alike). */
void dg_ref_dropout(size_t n, float rate, const struct dg_dropout_key *key, const double *in,
                    double *out);

void dg_ref_dense_fwd(int batch, int in, int out, const double *x, const double *w, const double *b,
                      double *y, int relu);
/* dx may be NULL. */
void dg_ref_dense_bwd(int batch, int in, int out, const double *x, const double *w,
                      const double *dy, double *dx, double *dw, double *db);

/* Softmax of (batch, 10) logits; with labels also dlogits (may be NULL) of the batch-mean
 * cross-entropy, *loss_sum (sum of row losses) and *correct (rows whose first argmax is the
 * label); smoothing s: the targets (1 - s) onehot + s / 10 (label smoothing). */
void dg_ref_softmax_xent(int batch, const double *logits, const uint8_t *labels,
                         double smoothing, double *probs, double *dlogits, double *loss_sum,
                         double *correct);

/* a = rho*a + (1-rho)*g^2; w -= lr*g / (sqrt(a) + eps). */
void dg_ref_rmsprop(size_t n, double *w, const double *g, double *acc, double lr, double rho,
                    double eps);

/* The five augmentation parameters of image `image` of a batch (theta in degrees, t_row,
 * t_col in pixels, z_row, z_col), drawn with dg_ref_uniform (purpose 8, index image*8 + k). */
void dg_ref_augment_params(const struct dg_augment_key *key, uint32_t image, double params[5]);
/* The warp of ../shared/AUGMENTATION.md in double: out (784) in [0, 1]. */
void dg_ref_augment_image(const uint8_t *image, const double params[5], double *out);
/* The batch in double: pixel / 255, or the double warp of the augmentation. */
void dg_ref_batch_assemble_double(const struct dg_dataset *dataset, const uint32_t *rows, int n,
                                  const struct dg_augment_key *augment, double *x);

/* The batch as the element math defines it: pixel / 255, or the augmented warp. */
void dg_ref_batch_assemble(const struct dg_dataset *dataset, const uint32_t *rows, int n,
                           const struct dg_augment_key *augment, float *x, uint8_t *labels);

/* Adam at step t (1-based), PyTorch's form: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
void dg_ref_adam(size_t n, double *w, const double *g, double *m, double *v, double lr,
                 double beta1, double beta2, double eps, unsigned long long t);
/* SGD with momentum, PyTorch's form: b = mu b + g; w -= lr (g + mu b) (nesterov) or lr b. */
void dg_ref_sgd(size_t n, double *w, const double *g, double *b, double lr, double momentum,
                int nesterov);

#endif
