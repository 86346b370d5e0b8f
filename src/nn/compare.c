/* Tensor comparison with the project's tolerances (include/digits/compare.h). Flat float
 * arrays; the layout does not matter, the worst index is a flat index. */
#include "digits/compare.h"

#include <math.h>

const struct dg_tolerance dg_tol_forward = {DG_TOL_ELEMENTWISE, 1e-5, 1e-4};
const struct dg_tolerance dg_tol_backward = {DG_TOL_NORMWISE, 0.0, 1e-3};
const struct dg_tolerance dg_tol_exact = {DG_TOL_ELEMENTWISE, 0.0, 0.0};
const struct dg_tolerance dg_tol_weights = {DG_TOL_NMSE, 0.0, 1e-6};

void dg_diff_compute(const float *a, const float *b, size_t n, const struct dg_tolerance *tol,
                     struct dg_diff *out)
{
    double max_abs = 0.0, max_rel = 0.0, err_sq = 0.0, ref_sq = 0.0, ref_max = 0.0;
    size_t worst = 0, failures = 0;
    int nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        if (!isfinite(x) && isfinite(y)) {
            nonfinite = 1;
            worst = i;
            max_abs = INFINITY;
            continue;
        }
        double d = fabs(x - y);
        if (!(d <= max_abs)) {
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
            if (fabs((double)a[i] - (double)b[i]) > bound)
                failures++;
    }
    double nmse = ref_sq > 0.0 ? err_sq / ref_sq : (err_sq > 0.0 ? INFINITY : 0.0);
    if (tol->kind == DG_TOL_NMSE && !(nmse <= tol->rtol))
        failures = n;
    out->max_abs = max_abs;
    out->max_rel = max_rel;
    out->nmse = nmse;
    out->worst = worst;
    out->failures = failures;
    out->nonfinite = nonfinite;
    out->pass = !nonfinite && failures == 0;
}
