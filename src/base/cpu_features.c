/* CPU feature detection (include/digits/cpu_features.h): cpuid through __builtin_cpu_supports
 * on x86-64, NEON on every aarch64; asked once, under pthread_once. */
#define _POSIX_C_SOURCE 200809L
#include "digits/cpu_features.h"

#include <pthread.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

static struct dg_cpu_features features;
static pthread_once_t features_once = PTHREAD_ONCE_INIT;

static void detect(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    features.sse4_1 = __builtin_cpu_supports("sse4.1") != 0;
    features.pclmul = __builtin_cpu_supports("pclmul") != 0;
    features.popcnt = __builtin_cpu_supports("popcnt") != 0;
    features.avx2 = __builtin_cpu_supports("avx2") != 0;
    features.fma = __builtin_cpu_supports("fma") != 0;
    features.bmi2 = __builtin_cpu_supports("bmi2") != 0;
    features.avx512f = __builtin_cpu_supports("avx512f") != 0;
    unsigned a = 0, b = 0, c = 0, d = 0;
    /* leaf 7: subleaf 0 EDX bit 22 AMX-BF16; subleaf 1 EAX bit 5 AVX512_BF16 (the AVX-512
     * state is the OS's to enable, which avx512f above has checked) */
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        features.amx_bf16 = (d >> 22) & 1u;
        unsigned subleaves = a;
        if (subleaves >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
            features.avx512_bf16 = features.avx512f && ((a >> 5) & 1u);
    }
#endif
#if defined(__aarch64__)
    features.neon = 1;
#if defined(__linux__) && defined(AT_HWCAP2)
    features.arm_bf16 = (getauxval(AT_HWCAP2) & (1ul << 14)) != 0; /* HWCAP2_BF16 */
#endif
#endif
}

const struct dg_cpu_features *dg_cpu_features(void)
{
    pthread_once(&features_once, detect);
    return &features;
}
