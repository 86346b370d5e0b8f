/* Test helpers: seeded test data, comparisons with tolerances, CPU backend construction.
 * Arrays are flat (NCHW / row-major). */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t dg_test_next(struct dg_test_rng *rng)
{
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double dg_test_uniform(struct dg_test_rng *rng)
{
    return (double)(dg_test_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

uint32_t dg_test_below(struct dg_test_rng *rng, uint32_t bound)
{
    return (uint32_t)(dg_test_uniform(rng) * bound);
}

void dg_test_fill(struct dg_test_rng *rng, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * dg_test_uniform(rng));
}

void dg_test_sparse_pixels(struct dg_test_rng *rng, uint8_t *pixels, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pixels[i] = dg_test_below(rng, 5) == 0 ? (uint8_t)dg_test_below(rng, 256) : 0;
}

void *dg_test_bytes(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "test: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

float *dg_test_floats(size_t n)
{
    return dg_test_bytes(n * sizeof(float));
}

double *dg_test_doubles(size_t n)
{
    return dg_test_bytes(n * sizeof(double));
}

double *dg_test_to_double(const float *x, size_t n)
{
    double *d = dg_test_doubles(n);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

int dg_test_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                  double rtol)
{
    size_t worst = 0;
    double worst_ratio = -1.0;
    for (size_t i = 0; i < n && !isnan(worst_ratio); i++) {
        double err = fabs((double)got[i] - ref[i]);
        double ratio = err / (atol + rtol * fabs(ref[i]));
        if (!(ratio <= worst_ratio)) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    int ok = n == 0 || worst_ratio <= 1.0;
    printf("%s %s: %zu values, worst [%zu] got %.9g ref %.9g (%.3g of atol %g + rtol %g)\n",
           ok ? "ok  " : "FAIL", what, n, worst, n ? (double)got[worst] : 0.0, n ? ref[worst] : 0.0,
           worst_ratio, atol, rtol);
    return ok;
}

int dg_test_close_max(const char *what, const float *got, const double *ref, size_t n, double rtol)
{
    double scale = 0.0, worst_err = -1.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
        double err = fabs((double)got[i] - ref[i]);
        if (!isnan(worst_err) && !(err <= worst_err)) {
            worst_err = err;
            worst = i;
        }
    }
    int ok = n == 0 || worst_err <= rtol * scale;
    printf("%s %s: %zu values, worst [%zu] got %.9g ref %.9g, error %.3g of max |ref| %.6g "
           "(limit rtol %g)\n",
           ok ? "ok  " : "FAIL", what, n, worst, n ? (double)got[worst] : 0.0, n ? ref[worst] : 0.0,
           scale > 0.0 ? worst_err / scale : worst_err, scale, rtol);
    return ok;
}

int dg_test_equal(const char *what, const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            printf("FAIL %s: [%zu] got %.9g want %.9g (not bit-identical)\n", what, i,
                   (double)got[i], (double)want[i]);
            return 0;
        }
    printf("ok   %s: %zu values bit-identical\n", what, n);
    return 1;
}

/* DIGITS_REQUIRE_ISA=avx2,avx512 (names as DIGITS_CPU_ISA): a missing one of these fails the
 * test instead of being skipped. */
static int isa_required(enum dg_cpu_isa isa)
{
    const char *list = getenv("DIGITS_REQUIRE_ISA");
    const char *name = dg_cpu_isa_name(isa);
    size_t len = strlen(name);
    for (const char *at = list; at && (at = strstr(at, name)) != NULL; at += len)
        if ((at == list || at[-1] == ',') && (at[len] == '\0' || at[len] == ','))
            return 1;
    return 0;
}

int dg_test_isa_available(enum dg_cpu_isa isa)
{
    if (dg_cpu_isa_supported(isa))
        return 1;
    if (isa_required(isa)) {
        printf("FAIL: %s kernels required (DIGITS_REQUIRE_ISA) but not usable here\n",
               dg_cpu_isa_label(isa));
        abort();
    }
    printf("SKIP %s kernels: %s\n", dg_cpu_isa_label(isa),
           isa == DG_CPU_ISA_NEON ? "not an aarch64 build"
           : isa == DG_CPU_ISA_AVX2 || isa == DG_CPU_ISA_AVX512
               ? "this CPU lacks them or this is not an x86-64 build"
               : "not built");
    return 0;
}

struct dg_backend *dg_test_cpu_backend_isa(int threads, enum dg_cpu_isa isa,
                                           enum dg_cpu_kernels kernels)
{
    if (!dg_test_isa_available(isa))
        return NULL;
    struct dg_backend *be = NULL;
    if (dg_backend_cpu_create(threads, &be) != DG_OK) {
        printf("cpu backend: %s\n", dg_error_message());
        abort();
    }
    if (dg_backend_cpu_set_isa(be, isa) != DG_OK || dg_backend_cpu_set_kernels(be, kernels) != DG_OK) {
        printf("cpu backend: %s\n", dg_error_message());
        dg_backend_destroy(be);
        abort();
    }
    return be;
}

struct dg_backend *dg_test_cpu_backend(int threads, enum dg_cpu_kernels kernels)
{
    return dg_test_cpu_backend_isa(threads, dg_cpu_isa_best(), kernels);
}

const char *dg_test_sample_path(void)
{
    static char path[1024];
    const char *root = getenv("DIGITS_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/data/sample/train.csv.gz", root ? root : ".");
    return path;
}

int dg_test_reduced(void)
{
    const char *value = getenv("DIGITS_TEST_REDUCED");
    return value && value[0] != '\0' && strcmp(value, "0") != 0;
}

int dg_test_reduced_batches(void)
{
    return dg_test_reduced() || getenv("DIGITS_TEST_SANITIZED") != NULL;
}
