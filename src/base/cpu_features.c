/* CPU feature detection (include/digits/cpu_features.h): cpuid through __builtin_cpu_supports
 * on x86-64, NEON on every aarch64; asked once, under pthread_once. */
#define _POSIX_C_SOURCE 200809L
#include "digits/cpu_features.h"

#include <pthread.h>

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
#endif
#if defined(__aarch64__)
    features.neon = 1;
#endif
}

const struct dg_cpu_features *dg_cpu_features(void)
{
    pthread_once(&features_once, detect);
    return &features;
}
