/* SGD with momentum, PyTorch's form (dampening 0): b = mu*b + g; w -= lr*(g + mu*b) with
 * Nesterov momentum, else w -= lr*b. mu = 0 is plain SGD (b = g). */
#ifndef DG_SGD_H
#define DG_SGD_H

#include "hostdev.h"

DG_HOSTDEV static inline void dg_sgd_element(float *w, float *b, float g, float lr, float momentum,
                                            int nesterov)
{
    float bb = momentum * *b + g;
    *b = bb;
    *w -= nesterov ? lr * (g + momentum * bb) : lr * bb;
}

#endif
