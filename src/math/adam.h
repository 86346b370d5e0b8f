/* Adam update (Kingma & Ba; PyTorch's and Keras' moments, PyTorch's placement of eps):
 *   m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *   w -= lr * (m / bc1) / (sqrt(v / bc2) + eps), bc1 = 1 - b1^t, bc2 = 1 - b2^t.
 * The bias corrections are the caller's: 1 - p where p is b^t as a float product of t factors
 * (dg_adam_powers), so both backends and a resumed run divide by the same floats. */
#ifndef DG_ADAM_H
#define DG_ADAM_H

#include "hostdev.h"
#include <math.h>

DG_HOSTDEV static inline void dg_adam_element(float *w, float *m, float *v, float g, float lr,
                                             float beta1, float beta2, float eps, float bc1,
                                             float bc2)
{
    float mm = beta1 * *m + (1.0f - beta1) * g;
    float vv = beta2 * *v + (1.0f - beta2) * g * g;
    *m = mm;
    *v = vv;
    *w -= lr * (mm / bc1) / (sqrtf(vv / bc2) + eps);
}

/* pow[0] = beta1^t, pow[1] = beta2^t as t float multiplications from 1 (what the optimizer
 * state holds after t steps; it stops multiplying once both reach 0). */
DG_HOSTDEV static inline void dg_adam_powers(unsigned long long t, float beta1, float beta2,
                                            float *pow)
{
    pow[0] = 1.0f;
    pow[1] = 1.0f;
    for (unsigned long long k = 0; k < t && (pow[0] != 0.0f || pow[1] != 0.0f); k++) {
        pow[0] *= beta1;
        pow[1] *= beta2;
    }
}

#endif
