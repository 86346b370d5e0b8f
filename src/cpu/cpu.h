/* CPU backend controls beyond the vtable, for tests, benchmarks and the CLI: which instruction
 * set the kernels use and which algorithm runs the convolutions. Tensors are float32 NCHW,
 * row-major. */
#ifndef DIGITS_CPU_H
#define DIGITS_CPU_H

#include <stddef.h>

#include "digits/backend.h"

/* Instruction sets, lowest first. Every kernel (convolutions and element loops) is one source
 * compiled once per ISA (src/cpu/isa/kernels.c); the backend uses the best the CPU has, capped
 * by DIGITS_CPU_ISA=avx512|avx2|neon|scalar. */
enum dg_cpu_isa {
    DG_CPU_ISA_SCALAR, /* portable C: always built, runs everywhere */
    DG_CPU_ISA_NEON,   /* aarch64 Advanced SIMD (128-bit, FMA) */
    DG_CPU_ISA_AVX2,   /* x86-64 AVX2 + FMA (256-bit) */
    DG_CPU_ISA_AVX512, /* x86-64 AVX-512F (512-bit, FMA) */
    DG_CPU_ISA_COUNT
};

/* "scalar", "neon", "avx2", "avx512" (the DIGITS_CPU_ISA spelling). */
const char *dg_cpu_isa_name(enum dg_cpu_isa isa);
/* "portable C", "NEON", "AVX2+FMA", "AVX-512" (for people). */
const char *dg_cpu_isa_label(enum dg_cpu_isa isa);
/* 1 when this build has the ISA's kernels and this CPU can run them. */
int dg_cpu_isa_supported(enum dg_cpu_isa isa);
/* "avx512, avx2, scalar": the DIGITS_CPU_ISA names usable here, best first. */
void dg_cpu_isa_list(char *out, size_t size);
/* The best supported ISA. */
enum dg_cpu_isa dg_cpu_isa_best(void);
/* DIGITS_CPU_ISA: the best supported ISA at or below the cap it names (unset or empty: the
 * best there is). DG_ERR_USAGE when the value is not an ISA name, or names one this build
 * lacks or this CPU cannot run (the message says which and what the CPU has). */
enum dg_status dg_cpu_isa_from_env(enum dg_cpu_isa *isa);

/* Convolution algorithms. */
enum dg_cpu_conv_algo {
    DG_CPU_CONV_GENERIC,  /* per-image im2col + OpenBLAS sgemm: any shape */
    DG_CPU_CONV_DIRECT,   /* register-blocked direct convolution on padded NHWC copies:
                             output channels (input channels for backward data) % 16 == 0 */
    DG_CPU_CONV_WINOGRAD, /* F(2x2,5x5) / F(4x4,3x3), alpha 6: kernels 3 and 5, stride 1,
                             input channels % 16 and output channels % 32 == 0 (the other way
                             round for backward data); "valid" where the pass has 4 tiles or
                             more */
    DG_CPU_CONV_BF16,     /* --math bf16: the direct scheme on bf16 operands, any shape
                             (conv_bf16.c) */
    DG_CPU_CONV_PHASES,   /* stride 2 as a stride-1 convolution of the input's four phases
                             (conv_phases.c), on Winograd or the direct kernels: output
                             channels % 16 */
};
/* "im2col+sgemm", "direct", "Winograd", "bf16 direct", "4 phases" (dg_cpu_conv_describe names
 * the phases' sub-plan algorithm: "Winograd in 4 phases"). */
const char *dg_cpu_conv_algo_name(enum dg_cpu_conv_algo algo);

/* The algorithm request: DIGITS_CPU_KERNELS=auto|generic|direct|winograd. */
enum dg_cpu_kernels {
    DG_CPU_KERNELS_AUTO,     /* Winograd where the shape allows, else direct, else generic */
    DG_CPU_KERNELS_GENERIC,  /* im2col + sgemm for every convolution */
    DG_CPU_KERNELS_DIRECT,   /* direct where the shape allows, else generic */
    DG_CPU_KERNELS_WINOGRAD, /* Winograd where the shape allows, else direct, else generic
                                (the same as auto) */
};

/* Every CPU backend created reads DIGITS_CPU_ISA and DIGITS_CPU_KERNELS; dg_backend_cpu_create
 * fails with DG_ERR_USAGE on a bad value. The direct kernels are the most exact (errors ~1e-7
 * relative); Winograd trades about an order of magnitude of that for speed (still within the
 * forward tolerance atol 1e-5 + rtol 1e-4 on unit-scale data).
 *
 * Chooses the algorithms of a CPU backend (for plans created afterwards). DG_ERR_RUNTIME when
 * `be` is not a CPU backend. */
enum dg_status dg_backend_cpu_set_kernels(struct dg_backend *be, enum dg_cpu_kernels kernels);

/* Chooses the activations' layout of nets created afterwards on a CPU backend: NHWC (nhwc 1,
 * the default, where the math and kernels allow it) or NCHW (0; DIGITS_CPU_LAYOUT=nchw at
 * creation). The results are the same bits either way. DG_ERR_RUNTIME when `be` is not a CPU
 * backend. */
enum dg_status dg_backend_cpu_set_layout(struct dg_backend *be, int nhwc);

/* Chooses the instruction set of a CPU backend (for plans created afterwards). DG_ERR_DEVICE
 * when this build or CPU lacks it, DG_ERR_RUNTIME when `be` is not a CPU backend. */
enum dg_status dg_backend_cpu_set_isa(struct dg_backend *be, enum dg_cpu_isa isa);

/* For tests: bf16 math through the portable emulation of the bf16 dot product, on any CPU (the
 * bf16 algorithms checked where no bf16 unit is; `--math bf16` itself refuses such CPUs). */
enum dg_status dg_backend_cpu_set_bf16_portable(struct dg_backend *be);

/* The bf16 unit a CPU backend's bf16 plans use (NULL at float32). */
const char *dg_backend_cpu_bf16_unit(const struct dg_backend *be);

/* The ISA a CPU backend uses (DG_CPU_ISA_COUNT when `be` is not a CPU backend). */
enum dg_cpu_isa dg_backend_cpu_isa(const struct dg_backend *be);

#endif
