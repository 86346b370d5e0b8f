/* RMSprop update, Keras 2 form: a = rho*a + (1-rho)*g^2; w -= lr*g / (sqrt(a) + eps). */
#ifndef DG_RMSPROP_H
#define DG_RMSPROP_H

#include "hostdev.h"
#include <math.h>

DG_HOSTDEV static inline void dg_rmsprop_element(float *w, float *a, float g, float lr, float rho,
                                                float eps)
{
    float acc = rho * *a + (1.0f - rho) * g * g;
    *a = acc;
    *w -= lr * g / (sqrtf(acc) + eps);
}

#endif
