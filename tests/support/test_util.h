/* Test helpers: a seeded generator for test data, float/double conversions, comparisons with
 * stated tolerances that print the worst index, and CPU backend construction.
 * Tensors are plain arrays in NCHW / row-major order, as everywhere in Digits. */
#ifndef DIGITS_TEST_UTIL_H
#define DIGITS_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/cpu.h"
#include "digits/backend.h"

/* splitmix64: test data only (the product's randomness is Philox). */
struct dg_test_rng {
    uint64_t state;
};

uint64_t dg_test_next(struct dg_test_rng *rng);
/* Uniform double in [0, 1). */
double dg_test_uniform(struct dg_test_rng *rng);
/* Uniform integer in [0, bound). */
uint32_t dg_test_below(struct dg_test_rng *rng, uint32_t bound);
/* x[i] ~ U(lo, hi). */
void dg_test_fill(struct dg_test_rng *rng, float *x, size_t n, float lo, float hi);

/* n bytes of digit-like noise: each pixel 0, or with probability 1/5 uniform in 0..255. */
void dg_test_sparse_pixels(struct dg_test_rng *rng, uint8_t *pixels, size_t n);

/* calloc that aborts the test on failure. */
float *dg_test_floats(size_t n);
double *dg_test_doubles(size_t n);
void *dg_test_bytes(size_t n);
double *dg_test_to_double(const float *x, size_t n);

/* Elementwise |got - ref| <= atol + rtol * |ref| (the forward tolerance). Prints the worst
 * element (index, got, ref) and returns 1 when all pass. */
int dg_test_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                  double rtol);

/* max |got - ref| <= rtol * max |ref| (the backward tolerance: relative to the largest
 * reference magnitude). Prints the worst element and returns 1 when it holds. */
int dg_test_close_max(const char *what, const float *got, const double *ref, size_t n, double rtol);

/* Bit-for-bit equality; prints the first difference and returns 1 when equal. */
int dg_test_equal(const char *what, const float *got, const float *want, size_t n);

/* 1 when the ISA's kernels run here; otherwise prints a SKIP line saying why and returns 0,
 * or fails (abort) when DIGITS_REQUIRE_ISA (a comma-separated list of DIGITS_CPU_ISA names)
 * names it. */
int dg_test_isa_available(enum dg_cpu_isa isa);

/* A CPU backend with `threads` threads, the given ISA and convolution algorithms; NULL (with a
 * SKIP line) when that ISA cannot run here, see dg_test_isa_available. */
struct dg_backend *dg_test_cpu_backend_isa(int threads, enum dg_cpu_isa isa,
                                           enum dg_cpu_kernels kernels);

/* The same with the best ISA this machine has (never NULL). */
struct dg_backend *dg_test_cpu_backend(int threads, enum dg_cpu_kernels kernels);

/* "$DIGITS_SOURCE_DIR/data/sample/train.csv.gz" (the bundled sample; "." without the
 * variable), in a static buffer. */
const char *dg_test_sample_path(void);

/* 1 when DIGITS_TEST_REDUCED is set to a non-empty value other than "0": the suites shrink
 * their problem sizes (scripts/test-aarch64 sets it: qemu-user runs float vector code 20-70x
 * slower than native) and print a SKIP line, saying why, for what they leave out. */
int dg_test_reduced(void);

/* 1 where the op table's cases take their reduced batches (dg_op_cases' `reduced`): with
 * dg_test_reduced, and in the sanitizer pass (DIGITS_TEST_SANITIZED), whose instrumented scalar
 * code is several times slower and checks memory at the same shapes; the plain passes run the
 * full batches. */
int dg_test_reduced_batches(void);

/* Standard tolerances (docs/DESIGN): forward atol + rtol, backward rtol, loss rtol. */
#define DG_TEST_FWD_ATOL 1e-5
#define DG_TEST_FWD_RTOL 1e-4
#define DG_TEST_BWD_RTOL 1e-3
#define DG_TEST_LOSS_RTOL 1e-5

#endif
