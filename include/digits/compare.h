/* Element-wise comparison of a candidate tensor against a reference one, with the
 * tolerances of the project (docs/DEVELOPING.md, "Tolerances"):
 *   forward   |a - b| <= atol + rtol * |b| for every element (atol 1e-5, rtol 1e-4)
 *   backward  max |a - b| <= rtol * max |b| (norm-wise, rtol 1e-3)
 *   weights   NMSE <= 1e-6 (after training steps; see dg_tol_weights)
 * Used by `digits compare` and the GPU suites. */
#ifndef DIGITS_COMPARE_H
#define DIGITS_COMPARE_H

#include <stddef.h>

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

extern const struct dg_tolerance dg_tol_forward;  /* elementwise, 1e-5 + 1e-4 */
extern const struct dg_tolerance dg_tol_backward; /* normwise, 1e-3 */
extern const struct dg_tolerance dg_tol_exact;    /* elementwise, 0 + 0 (bit-identical) */
/* Parameters after several RMSprop steps: NMSE <= 1e-6. Elementwise bounds cannot hold there:
 * RMSprop's first steps move a weight by about lr / sqrt(1 - rho) whatever the gradient's
 * size, so a gradient that is zero up to rounding moves it either way on the two sides. */
extern const struct dg_tolerance dg_tol_weights;

struct dg_diff {
    double max_abs;  /* max |a - b| */
    double max_rel;  /* max |a - b| / |b| over elements with b != 0 */
    double nmse;     /* sum (a - b)^2 / sum b^2 (0 when both are 0) */
    size_t worst;    /* index of the largest |a - b| */
    size_t failures; /* elements outside the tolerance */
    int nonfinite;   /* a NaN or Inf appeared in a where b is finite */
    int pass;
};

/* Compares candidate `a` with reference `b` (n elements). */
void dg_diff_compute(const float *a, const float *b, size_t n, const struct dg_tolerance *tol,
                     struct dg_diff *out);

#ifdef __cplusplus
}
#endif

#endif
