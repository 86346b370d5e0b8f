/* Softmax + cross-entropy for one row of logits (numerically stable: the row maximum is
 * subtracted first, so large logits never overflow). Writes probabilities and the gradient
 * of the batch-mean loss with respect to the logits: (p - onehot(label)) / batch. */
#ifndef DG_SOFTMAX_XENT_H
#define DG_SOFTMAX_XENT_H

#include "hostdev.h"
#include <math.h>

/* Probabilities of one row of `classes` logits; returns log(sum(exp(z - max))) + max,
 * the log-partition, so that loss = logz - z[label]. */
DG_HOSTDEV static inline float dg_softmax_row(const float *logits, float *probs, int classes)
{
    float max = logits[0];
    for (int k = 1; k < classes; k++)
        max = logits[k] > max ? logits[k] : max;
    float sum = 0.0f;
    for (int k = 0; k < classes; k++) {
        probs[k] = expf(logits[k] - max);
        sum += probs[k];
    }
    float inv = 1.0f / sum;
    for (int k = 0; k < classes; k++)
        probs[k] *= inv;
    return logf(sum) + max;
}

/* Loss of one row, its gradient (scaled by 1/batch) and whether argmax == label.
 * The argmax takes the first maximum. `dlogits` may be NULL (inference). With label smoothing
 * s > 0 the target is (1 - s) onehot(label) + s / classes (Keras' label_smoothing): loss
 * logz - sum_k t_k z_k, gradient (p - t) / batch; s = 0 is the plain cross-entropy, computed as
 * it always was. */
DG_HOSTDEV static inline float dg_softmax_xent_row(const float *logits, float *probs, float *dlogits,
                                                  int classes, int label, float smoothing,
                                                  float inv_batch, int *correct)
{
    float logz = dg_softmax_row(logits, probs, classes);
    int best = 0;
    for (int k = 1; k < classes; k++)
        if (logits[k] > logits[best])
            best = k;
    *correct = best == label;
    if (smoothing == 0.0f) {
        if (dlogits)
            for (int k = 0; k < classes; k++)
                dlogits[k] = (probs[k] - (k == label ? 1.0f : 0.0f)) * inv_batch;
        return logz - logits[label];
    }
    float off = smoothing / (float)classes;
    float on = 1.0f - smoothing + off;
    float target_dot = 0.0f;
    for (int k = 0; k < classes; k++)
        target_dot += (k == label ? on : off) * logits[k];
    if (dlogits)
        for (int k = 0; k < classes; k++)
            dlogits[k] = (probs[k] - (k == label ? on : off)) * inv_batch;
    return logz - target_dot;
}

#endif
