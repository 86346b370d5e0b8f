/* Global average pooling's element math, shared by both backends: an output is the mean of its
 * `spatial` inputs, summed in order in double and rounded once (so both backends give the same
 * float, and it is the correctly rounded mean up to the double sum's rounding); its input
 * gradient is dy / spatial in float. */
#ifndef DG_GAP_H
#define DG_GAP_H

#include "hostdev.h"

DG_HOSTDEV static inline float dg_gap_mean(const float *x, int spatial)
{
    double sum = 0.0;
    for (int s = 0; s < spatial; s++)
        sum += (double)x[s];
    return (float)(sum / (double)spatial);
}

DG_HOSTDEV static inline float dg_gap_grad(float dy, int spatial)
{
    return dy / (float)spatial;
}

#endif
