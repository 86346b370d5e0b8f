/* Which instruction sets this build has (the tables of src/cpu/isa/kernels.c compiled per
 * ISA), which of them this CPU runs, and the DIGITS_CPU_ISA cap. What the CPU has comes from
 * dg_cpu_features (src/base/cpu_features.c), asked once. */
#include "cpu/cpu_internal.h"
#include "digits/cpu_features.h"

#include <stdlib.h>
#include <string.h>

static const char *const isa_names[DG_CPU_ISA_COUNT] = {"scalar", "neon", "avx2", "avx512"};
static const char *const isa_labels[DG_CPU_ISA_COUNT] = {"portable C", "NEON", "AVX2+FMA",
                                                         "AVX-512"};

const char *dg_cpu_isa_name(enum dg_cpu_isa isa)
{
    return isa < DG_CPU_ISA_COUNT ? isa_names[isa] : "?";
}

const char *dg_cpu_isa_label(enum dg_cpu_isa isa)
{
    return isa < DG_CPU_ISA_COUNT ? isa_labels[isa] : "?";
}

/* The table compiled for `isa` in this build, whether or not the CPU runs it. */
static const struct dg_cpu_isa_ops *built_table(enum dg_cpu_isa isa)
{
    switch (isa) {
    case DG_CPU_ISA_SCALAR:
        return &dg_cpu_isa_scalar;
#if defined(__aarch64__)
    case DG_CPU_ISA_NEON:
        return &dg_cpu_isa_neon;
#endif
#if defined(__x86_64__)
    case DG_CPU_ISA_AVX2:
        return &dg_cpu_isa_avx2;
    case DG_CPU_ISA_AVX512:
        return &dg_cpu_isa_avx512;
#endif
    default:
        return NULL;
    }
}

/* 1 when the CPU can run code compiled for `isa` (the flags in CMakeLists.txt). */
static int cpu_runs(enum dg_cpu_isa isa)
{
    const struct dg_cpu_features *cpu = dg_cpu_features();
    switch (isa) {
    case DG_CPU_ISA_SCALAR:
        return 1;
    case DG_CPU_ISA_NEON:
        return cpu->neon;
    case DG_CPU_ISA_AVX2:
        return cpu->avx2 && cpu->fma;
    case DG_CPU_ISA_AVX512:
        return cpu->avx512f && cpu->avx2 && cpu->fma;
    default:
        return 0;
    }
}

int dg_cpu_isa_supported(enum dg_cpu_isa isa)
{
    return isa < DG_CPU_ISA_COUNT && built_table(isa) && cpu_runs(isa);
}

const struct dg_cpu_isa_ops *dg_cpu_isa_table(enum dg_cpu_isa isa)
{
    return dg_cpu_isa_supported(isa) ? built_table(isa) : NULL;
}

enum dg_cpu_isa dg_cpu_isa_best(void)
{
    for (int isa = DG_CPU_ISA_COUNT - 1; isa > DG_CPU_ISA_SCALAR; isa--)
        if (dg_cpu_isa_supported((enum dg_cpu_isa)isa))
            return (enum dg_cpu_isa)isa;
    return DG_CPU_ISA_SCALAR;
}

void dg_cpu_isa_list(char *out, size_t size)
{
    out[0] = '\0';
    for (int isa = DG_CPU_ISA_COUNT - 1; isa >= 0; isa--)
        if (dg_cpu_isa_supported((enum dg_cpu_isa)isa)) {
            if (out[0])
                strncat(out, ", ", size - strlen(out) - 1);
            strncat(out, isa_names[isa], size - strlen(out) - 1);
        }
}

enum dg_status dg_cpu_isa_from_env(enum dg_cpu_isa *isa)
{
    const char *value = getenv("DIGITS_CPU_ISA");
    *isa = dg_cpu_isa_best();
    if (!value || !*value)
        return DG_OK;
    char usable[64];
    dg_cpu_isa_list(usable, sizeof usable);
    for (int i = 0; i < DG_CPU_ISA_COUNT; i++) {
        if (strcmp(value, isa_names[i]) != 0)
            continue;
        if (!built_table((enum dg_cpu_isa)i))
            return dg_error(DG_ERR_USAGE,
                            "DIGITS_CPU_ISA=%s: this build has no %s kernels (%s is for %s "
                            "machines); this machine can use: %s",
                            value, isa_labels[i], isa_labels[i],
                            i == DG_CPU_ISA_NEON ? "aarch64" : "x86-64", usable);
        if (!cpu_runs((enum dg_cpu_isa)i))
            return dg_error(DG_ERR_USAGE, "DIGITS_CPU_ISA=%s: this CPU has no %s; it can use: %s",
                            value, isa_labels[i], usable);
        *isa = (enum dg_cpu_isa)i;
        return DG_OK;
    }
    return dg_error(DG_ERR_USAGE,
                    "DIGITS_CPU_ISA=%s: expected avx512, avx2, neon or scalar "
                    "(this machine can use: %s)",
                    value, usable);
}
