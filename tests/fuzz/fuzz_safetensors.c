/* libFuzzer target: safetensors import (src/io/safetensors.c, dg_import_safetensors_ensemble:
 * the 8-byte length, the JSON header, plain and "members.M." names, dtypes, shapes, data
 * offsets, __metadata__ with digits.architecture / digits.settings / digits.members, the
 * settings' ranges, the tensors' finiteness). A header that passes the JSON parser builds the
 * reference model per member before its tensors are checked, so those inputs cost a 3.5 MB
 * allocation each; a complete file is 3.5 MB per member. */
#include "fuzz_common.h"

#include "digits/io.h"

static struct dg_model members[DG_MAX_MEMBERS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    int count = -1;
    char *settings = (char *)1;
    enum dg_status status =
        dg_import_safetensors_ensemble(path, members, DG_MAX_MEMBERS, &count, &settings);
    if (status != DG_OK) {
        if (settings != NULL || count != 0)
            abort();
        return 0;
    }
    if (count < 1 || count > DG_MAX_MEMBERS)
        abort();
    for (int m = 0; m < count; m++) {
        fuzz_require_finite(members[m].params, members[m].param_count);
        dg_model_free(&members[m]);
    }
    free(settings);
    return 0;
}
