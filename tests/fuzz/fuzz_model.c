/* libFuzzer target: model and ensemble files (src/io/model_file.c, "DGTMODEL" versions 1 and
 * 2) through dg_ensemble_load (the reader of dg_model_load too), with the structure-aware
 * mutator of fuzz_dgt.h: the CRC32 and the length fields are rewritten after each mutation.
 *
 * Slow by nature: the reader accepts only the reference network (its layer table is checked
 * against dg_arch_reference before anything is built), so a file that gets past the header is
 * 887,530 floats = 3.5 MB (an ensemble of K members K times that), CRC'd, copied into a model
 * and checked finite, under ASan. */
#include "fuzz_common.h"
#include "fuzz_dgt.h"

#include "digits/io.h"

static struct dg_model members[DG_MAX_MEMBERS];

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    return dgt_mutate(0, data, size, max_size, seed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    char settings[4096];
    int count = -1;
    enum dg_status status =
        dg_ensemble_load(path, members, DG_MAX_MEMBERS, &count, settings, sizeof settings);
    if (status != DG_OK) {
        if (count != 0)
            abort();
        return 0;
    }
    if (count < 1 || count > DG_MAX_MEMBERS || strnlen(settings, sizeof settings) == sizeof settings)
        abort();
    for (int m = 0; m < count; m++) {
        fuzz_require_finite(members[m].params, members[m].param_count);
        dg_model_free(&members[m]);
    }
    if (count == 1 && data[size - 4] % 8 == 0) {
        /* one model: the single-model reader takes it the same way (checked for one input in
         * eight, by the CRC's low byte: the second read doubles the cost) */
        if (dg_model_load(path, &members[0], NULL, 0) != DG_OK)
            abort();
        dg_model_free(&members[0]);
    }
    return 0;
}
