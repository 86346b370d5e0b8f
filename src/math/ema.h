/* An exponential moving average of the weights (Keras' use_ema, timm's ModelEma):
 * e = decay * e + (1 - decay) * w, after every optimizer step. */
#ifndef DG_EMA_H
#define DG_EMA_H

#include "hostdev.h"

DG_HOSTDEV static inline void dg_ema_element(float *e, float w, float decay)
{
    *e = decay * *e + (1.0f - decay) * w;
}

#endif
