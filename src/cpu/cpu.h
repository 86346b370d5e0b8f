/* CPU backend controls beyond the vtable, for tests and benchmarks: which kernel family runs
 * the convolutions and element loops. Tensors are float32 NCHW, row-major. */
#ifndef DIGITS_CPU_H
#define DIGITS_CPU_H

#include "digits/backend.h"

enum dg_cpu_kernels {
    DG_CPU_KERNELS_AUTO,     /* Winograd when the machine has AVX-512, else generic */
    DG_CPU_KERNELS_GENERIC,  /* im2col + OpenBLAS sgemm, portable C loops */
    DG_CPU_KERNELS_AVX512,   /* direct convolution and vector loops with AVX-512F */
    DG_CPU_KERNELS_WINOGRAD, /* AVX-512F Winograd F(2x2,5x5) / F(4x4,3x3) where the shape
                                allows it (channels multiples of 16 and 32), else direct */
};

/* The environment variable DIGITS_CPU_KERNELS (auto, generic, direct, winograd) sets the
 * kernels of every CPU backend created; dg_backend_cpu_create fails with DG_ERR_USAGE on any
 * other value. The direct kernels are the most exact (errors ~1e-7 relative); Winograd
 * trades about an order of magnitude of that for speed (still within the forward tolerance
 * atol 1e-5 + rtol 1e-4 on unit-scale data).
 *
 * Chooses the kernels of a CPU backend. DG_ERR_DEVICE when AVX-512 (or Winograd) is asked for
 * on a machine without AVX-512F, DG_ERR_RUNTIME when `be` is not a CPU backend. */
enum dg_status dg_backend_cpu_set_kernels(struct dg_backend *be, enum dg_cpu_kernels kernels);

/* 1 when this machine can run the AVX-512 kernels. */
int dg_cpu_has_avx512(void);

#endif
