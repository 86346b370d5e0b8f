/* The reference augmentation (Keras ImageDataGenerator: rotation 10, zoom 0.1, shifts 0.1)
 * as element math shared by the CPU backend and the CUDA kernel. Images are 28x28, row-major
 * (pixel k = row*28 + col). See ../shared/AUGMENTATION.md for the formulas.
 *
 * Bit-exactness between backends: only +, -, *, / and floorf are used (sin and cos are
 * polynomials, exact enough for |theta| <= pi/4), the C code is compiled with
 * -ffp-contract=off and the CUDA code with --fmad=false, so both round identically. */
#ifndef DG_AUGMENT_H
#define DG_AUGMENT_H

#include "philox.h"

#include <math.h>

#include "digits/data.h" /* DG_IMAGE_SIDE, DG_PIXELS */

/* The affine map from an output pixel to the input position it samples:
 * in_row = m[0]*row + m[1]*col + m[2];  in_col = m[3]*row + m[4]*col + m[5]. */
struct dg_affine {
    float m[6];
};

/* The five parameters of one image, as drawn. */
struct dg_augment_params {
    float theta_deg; /* rotation, degrees */
    float t_row;     /* shift in rows (Keras tx) */
    float t_col;     /* shift in columns (Keras ty) */
    float z_row;     /* zoom along rows (Keras zx) */
    float z_col;     /* zoom along columns (Keras zy) */
};

/* Ranges of the reference recipe. */
struct dg_augment_ranges {
    float rotation_deg; /* 10: theta ~ U(-10, 10) */
    float shift;        /* 0.1: t ~ U(-0.1, 0.1) * 28 */
    float zoom;         /* 0.1: z ~ U(0.9, 1.1) */
};

/* Draws the parameters of image `image` of batch (epoch, step). */
DG_HOSTDEV static inline struct dg_augment_params
dg_augment_draw(struct dg_augment_ranges ranges, uint64_t seed, uint32_t epoch, uint32_t step,
                uint32_t image)
{
    uint64_t base = (uint64_t)image * 8u;
    struct dg_augment_params p;
    p.theta_deg = (2.0f * dg_rng_uniform(seed, DG_RNG_AUGMENT, epoch, step, base + 0) - 1.0f) *
                  ranges.rotation_deg;
    p.t_row = (2.0f * dg_rng_uniform(seed, DG_RNG_AUGMENT, epoch, step, base + 1) - 1.0f) *
              ranges.shift * (float)DG_IMAGE_SIDE;
    p.t_col = (2.0f * dg_rng_uniform(seed, DG_RNG_AUGMENT, epoch, step, base + 2) - 1.0f) *
              ranges.shift * (float)DG_IMAGE_SIDE;
    p.z_row = 1.0f + (2.0f * dg_rng_uniform(seed, DG_RNG_AUGMENT, epoch, step, base + 3) - 1.0f) *
                         ranges.zoom;
    p.z_col = 1.0f + (2.0f * dg_rng_uniform(seed, DG_RNG_AUGMENT, epoch, step, base + 4) - 1.0f) *
                         ranges.zoom;
    return p;
}

/* sin and cos of x (radians, |x| <= pi/4) by their Taylor series to x^13: error below float
 * rounding there, and the same bits on every IEEE machine. */
DG_HOSTDEV static inline void dg_sincos_poly(float x, float *s, float *c)
{
    float x2 = x * x;
    *s = x * (1.0f + x2 * (-1.0f / 6.0f + x2 * (1.0f / 120.0f + x2 * (-1.0f / 5040.0f +
         x2 * (1.0f / 362880.0f + x2 * (-1.0f / 39916800.0f + x2 * (1.0f / 6227020800.0f)))))));
    *c = 1.0f + x2 * (-0.5f + x2 * (1.0f / 24.0f + x2 * (-1.0f / 720.0f + x2 * (1.0f / 40320.0f +
         x2 * (-1.0f / 3628800.0f + x2 * (1.0f / 479001600.0f))))));
}

/* M = R(theta) S(t) Z(z) about the centre (13.5, 13.5), folded into one 2x3 map.
 * sin/cos come from dg_sincos_poly when |theta| <= 45 degrees; exact quarter turns
 * (used by tests) are special-cased so that they are exact. */
DG_HOSTDEV static inline struct dg_affine dg_augment_affine(struct dg_augment_params p)
{
    float s, c;
    if (p.theta_deg == 90.0f) {
        s = 1.0f;
        c = 0.0f;
    } else if (p.theta_deg == -90.0f) {
        s = -1.0f;
        c = 0.0f;
    } else {
        dg_sincos_poly(p.theta_deg * (3.14159265358979f / 180.0f), &s, &c);
    }
    const float centre = 0.5f * (float)(DG_IMAGE_SIDE - 1);
    struct dg_affine a;
    a.m[0] = c * p.z_row;
    a.m[1] = -s * p.z_col;
    a.m[3] = s * p.z_row;
    a.m[4] = c * p.z_col;
    float off_row = c * p.t_row - s * p.t_col;
    float off_col = s * p.t_row + c * p.t_col;
    a.m[2] = centre - a.m[0] * centre - a.m[1] * centre + off_row;
    a.m[5] = centre - a.m[3] * centre - a.m[4] * centre + off_col;
    return a;
}

/* Value of output pixel (row, col): bilinear sampling of `image` (uint8 0..255) at the mapped
 * position, the position clamped to the image first ("nearest" fill), result divided by 255. */
DG_HOSTDEV static inline float dg_augment_pixel(const uint8_t *image, struct dg_affine a, int row,
                                               int col)
{
    const float last = (float)(DG_IMAGE_SIDE - 1);
    float r = a.m[0] * (float)row + a.m[1] * (float)col + a.m[2];
    float q = a.m[3] * (float)row + a.m[4] * (float)col + a.m[5];
    r = r < 0.0f ? 0.0f : (r > last ? last : r);
    q = q < 0.0f ? 0.0f : (q > last ? last : q);
    int r0 = (int)floorf(r);
    int q0 = (int)floorf(q);
    int r1 = r0 + 1 < DG_IMAGE_SIDE ? r0 + 1 : r0;
    int q1 = q0 + 1 < DG_IMAGE_SIDE ? q0 + 1 : q0;
    float fr = r - (float)r0;
    float fq = q - (float)q0;
    float v00 = (float)image[r0 * DG_IMAGE_SIDE + q0];
    float v01 = (float)image[r0 * DG_IMAGE_SIDE + q1];
    float v10 = (float)image[r1 * DG_IMAGE_SIDE + q0];
    float v11 = (float)image[r1 * DG_IMAGE_SIDE + q1];
    float top = v00 + fq * (v01 - v00);
    float bottom = v10 + fq * (v11 - v10);
    return (top + fr * (bottom - top)) / 255.0f;
}

/* Plain conversion, no augmentation: pixel / 255. */
DG_HOSTDEV static inline float dg_pixel_to_float(uint8_t v)
{
    return (float)v / 255.0f;
}

#endif
