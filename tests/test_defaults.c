/* The defaults stay bit-identical as features are added: the reference network, Glorot weights
 * of seed 42, trained with every default option (augmentation, batch 86, 10% validation,
 * RMSprop, the learning-rate schedule) for 2 epochs on the first 600 rows of the bundled
 * sample, must end with exactly the parameters of a stored FNV-1a hash, for each instruction set
 * (their convolutions round differently; each is bit-identical for any thread count, which is
 * checked too).
 *
 * What else the numbers depend on is held fixed: OpenBLAS' sgemm kernel (the dense layers) is
 * chosen per CPU model by its DYNAMIC_ARCH build, so the suite re-executes itself with
 * OPENBLAS_CORETYPE=Haswell (every x86-64 CPU with AVX2 runs it); glibc's expf / logf take the
 * same FMA path on every such CPU. On other architectures the hashes are not stored: SKIP.
 *
 * A change that moves these hashes changes what `digits train` computes by default: it must be
 * deliberate, said in the commit, and the hashes updated with the new values printed here. The
 * deotte preset's recipe (Adam, exponential decay) is pinned the same way, for its own kernels. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "cpu/cpu.h"
#include "digits/model.h"
#include "digits/train.h"
#include "test_util.h"

#if defined(__x86_64__)
static uint64_t fnv1a(const void *data, size_t size)
{
    const unsigned char *p = data;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < size; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The hash of the parameters after the default recipe's short run on `isa` (deotte: the
 * deotte preset's recipe instead, shorter). */
static uint64_t default_run(enum dg_cpu_isa isa, int threads, int deotte)
{
    struct dg_backend *be = dg_test_cpu_backend_isa(threads, isa, DG_CPU_KERNELS_AUTO);
    ck_assert_ptr_nonnull(be);
    struct dg_dataset dataset;
    ck_assert_int_eq(dg_dataset_load(dg_test_sample_path(), NULL, NULL, &dataset), DG_OK);
    dg_dataset_truncate(&dataset, deotte ? 400 : 600);
    int count;
    struct dg_layer_spec deotte_specs[DG_MAX_LAYERS];
    const struct dg_layer_spec *specs = deotte_specs;
    if (deotte)
        ck_assert_int_eq(dg_net_spec_parse("deotte", deotte_specs, &count), DG_OK);
    else
        specs = dg_arch_reference(&count);
    struct dg_model model;
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    dg_model_init_glorot(&model, 42);
    struct dg_train_options options;
    dg_train_options_default(&options);
    options.epochs = 2;
    if (deotte) { /* the recipe of docs/ACCURACY.md: Adam, lr * 0.95^epoch */
        options.epochs = 1;
        dg_optimizer_default(&options.optimizer, DG_OPTIMIZER_ADAM);
        options.schedule = DG_SCHEDULE_EXP;
        options.gamma = 0.95f;
    }
    struct dg_train_result result;
    ck_assert_int_eq(dg_train(be, &model, &dataset, &options, &result), DG_OK);
    uint64_t h = fnv1a(model.params, model.param_count * sizeof(float));
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
    return h;
}

/* The stored hashes: the default recipe on the reference network, then the deotte preset's
 * (its batchnorm, strided and "valid" kernels and Adam are in no default run), so that a
 * change meant to keep its bits (a faster kernel) is checked too: one epoch on 400 rows. */
static const struct {
    enum dg_cpu_isa isa;
    int deotte;
    uint64_t hash;
} stored[] = {
    {DG_CPU_ISA_SCALAR, 0, 0xb3ff0e26dcffbe54ull}, /* no FMA: a separate multiply and add */
    {DG_CPU_ISA_AVX2, 0, 0x9906a8f08a0e316aull},
    {DG_CPU_ISA_AVX512, 0, 0x9906a8f08a0e316aull}, /* the same numbers as AVX2 */
    {DG_CPU_ISA_SCALAR, 1, 0x0eaf02fc69532065ull},
    {DG_CPU_ISA_AVX2, 1, 0xdf96088a72c40968ull},
    {DG_CPU_ISA_AVX512, 1, 0xdf96088a72c40968ull},
};
#define STORED ((int)(sizeof stored / sizeof stored[0]))

START_TEST(defaults_train_as_stored)
{
    enum dg_cpu_isa isa = stored[_i].isa;
    int deotte = stored[_i].deotte;
    const char *what = deotte ? "the deotte preset's short run" : "the default recipe";
    if (!dg_test_isa_available(isa))
        return;
    if (getenv("DIGITS_TEST_SANITIZED") && isa != dg_cpu_isa_best()) {
        /* the plain passes check every ISA's hash; test_ops runs every ISA's kernels under the
         * sanitizers */
        printf("SKIP %s, %s: sanitizer pass (DIGITS_TEST_SANITIZED): the best ISA only\n",
               dg_cpu_isa_name(isa), what);
        return;
    }
    uint64_t h = default_run(isa, 2, deotte);
    printf("%s: parameters after %s hash to 0x%016llxull (stored 0x%016llxull)\n",
           dg_cpu_isa_name(isa), what, (unsigned long long)h, (unsigned long long)stored[_i].hash);
    ck_assert_msg(h == stored[_i].hash,
                  "%s: %s no longer trains as it did (hash 0x%016llx, stored 0x%016llx): a "
                  "change of its numbers must be deliberate",
                  dg_cpu_isa_name(isa), what, (unsigned long long)h,
                  (unsigned long long)stored[_i].hash);
    /* and with another thread count */
    ck_assert_msg(default_run(isa, 3, deotte) == h, "%s: %s: 3 threads train differently from 2",
                  dg_cpu_isa_name(isa), what);
}
END_TEST
#endif

int main(int argc, char **argv)
{
#if defined(__x86_64__)
    (void)argc;
    const char *core = getenv("OPENBLAS_CORETYPE");
    if (!core || strcmp(core, "Haswell") != 0) {
        /* OpenBLAS reads it when it loads: run again with it set */
        setenv("OPENBLAS_CORETYPE", "Haswell", 1);
        execv("/proc/self/exe", argv);
        perror("test_defaults: re-executing with OPENBLAS_CORETYPE=Haswell");
        return EXIT_FAILURE;
    }
    Suite *suite = suite_create("defaults");
    TCase *tc = tcase_create("defaults");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, defaults_train_as_stored, 0, STORED);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
#else
    (void)argc, (void)argv;
    printf("SKIP the stored hashes of the default recipe are for x86-64 (OpenBLAS' Haswell "
           "kernels); this build is for another architecture\n");
    return 77;
#endif
}
