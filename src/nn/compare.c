/* Tensor comparison with the project's tolerances (include/digits/compare.h). Flat float
 * arrays; the layout does not matter, the worst index is a flat index. */
#include "digits/compare.h"

#include <math.h>

/* The bounds and why: include/digits/compare.h and docs/DEVELOPING.md, "Tolerances". */
const struct dg_tolerance dg_tol_forward = {DG_TOL_ELEMENTWISE, 1e-5, 1e-4};
const struct dg_tolerance dg_tol_backward_fp32 = {DG_TOL_NORMWISE, 0.0, 5e-5};
const struct dg_tolerance dg_tol_forward_winograd = {DG_TOL_NORMWISE, 0.0, 5e-5};
const struct dg_tolerance dg_tol_forward_tf32 = {DG_TOL_NORMWISE, 0.0, 1.5e-3};
const struct dg_tolerance dg_tol_backward_tf32 = {DG_TOL_NORMWISE, 0.0, 1.5e-3};
const struct dg_tolerance dg_tol_exact = {DG_TOL_ELEMENTWISE, 0.0, 0.0};
const struct dg_tolerance dg_tol_batchnorm = {DG_TOL_NORMWISE, 0.0, 5e-5};
const struct dg_tolerance dg_tol_weights = {DG_TOL_NMSE, 0.0, 1e-6};
const struct dg_tolerance dg_tol_weights_tf32 = {DG_TOL_NMSE, 0.0, 1e-3};
const struct dg_tolerance dg_tol_forward_bf16 = {DG_TOL_NORMWISE, 0.0, 1e-2};
const struct dg_tolerance dg_tol_backward_bf16 = {DG_TOL_NORMWISE, 0.0, 1e-2};
const struct dg_tolerance dg_tol_weights_bf16 = {DG_TOL_NMSE, 0.0, 4e-3};

void dg_diff_compute(const float *a, const float *b, size_t n, const struct dg_tolerance *tol,
                     struct dg_diff *out)
{
    double max_abs = 0.0, max_rel = 0.0, err_sq = 0.0, ref_sq = 0.0, ref_max = 0.0;
    size_t worst = 0, failures = 0, nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        /* A NaN or an infinity on either side is a failure, even where both sides agree: the
         * reference is a computation too, and NaN == NaN would hide a broken op on both. */
        if (!isfinite(x) || !isfinite(y)) {
            if (!nonfinite)
                worst = i;
            nonfinite++;
            max_abs = INFINITY;
            continue;
        }
        double d = fabs(x - y);
        if (!nonfinite && !(d <= max_abs)) {
            max_abs = d;
            worst = i;
        }
        if (y != 0.0 && d / fabs(y) > max_rel)
            max_rel = d / fabs(y);
        err_sq += d * d;
        ref_sq += y * y;
        if (fabs(y) > ref_max)
            ref_max = fabs(y);
        if (tol->kind == DG_TOL_ELEMENTWISE && d > tol->atol + tol->rtol * fabs(y))
            failures++;
    }
    if (tol->kind == DG_TOL_NORMWISE) {
        double bound = tol->atol + tol->rtol * ref_max;
        for (size_t i = 0; i < n; i++)
            if (isfinite(a[i]) && isfinite(b[i]) && fabs((double)a[i] - (double)b[i]) > bound)
                failures++;
    }
    double nmse = ref_sq > 0.0 ? err_sq / ref_sq : (err_sq > 0.0 ? INFINITY : 0.0);
    if (nonfinite)
        nmse = INFINITY;
    if (tol->kind == DG_TOL_NMSE && !(nmse <= tol->rtol))
        failures = n;
    else
        failures += nonfinite;
    out->max_abs = max_abs;
    out->max_rel = nonfinite ? INFINITY : max_rel;
    out->nmse = nmse;
    out->ref_max = ref_max;
    out->worst = worst;
    out->failures = failures;
    out->nonfinite = nonfinite != 0;
    out->pass = !nonfinite && failures == 0;
}
