/* What this CPU has, asked once: the one place that decides CPU features, for the kernels'
 * instruction sets (src/cpu/isa.c) and the data layer's fast paths (src/data) alike. */
#ifndef DIGITS_CPU_FEATURES_H
#define DIGITS_CPU_FEATURES_H

#ifdef __cplusplus
extern "C" {
#endif

/* 1 where the CPU has the feature, else 0 (always 0 for another architecture's features). */
struct dg_cpu_features {
    /* x86-64 (cpuid through __builtin_cpu_supports) */
    int sse4_1;
    int pclmul;
    int popcnt;
    int avx2;
    int fma;
    int bmi2;
    int avx512f;
    int avx512_bf16; /* vdpbf16ps, vcvtneps2bf16 (Cooper Lake, Sapphire Rapids, Zen 4 on) */
    int amx_bf16;    /* AMX tiles with bf16 (Sapphire Rapids on); reported, not used */
    /* aarch64: part of every aarch64 */
    int neon;
    int arm_bf16; /* BFDOT / BFMMLA (Armv8.6 on: Graviton 3, Grace); reported, not used */
};

/* The flags, filled on the first call (thread-safe) and the same for the process's life. */
const struct dg_cpu_features *dg_cpu_features(void);

#ifdef __cplusplus
}
#endif

#endif
