/* libFuzzer target: checkpoints (src/io/checkpoint.c, "DGTCKPT\0") through dg_checkpoint_load,
 * with the structure-aware mutator of fuzz_dgt.h (CRC32 and length fields rewritten after each
 * mutation, so that the key=value text and the blocks behind the CRC are reached).
 *
 * Slow by nature, as the model file: only the reference network is accepted, so a checkpoint
 * that passes the header carries 2 or 3 blocks of 887,530 floats (7.1 or 10.7 MB). */
#include "fuzz_common.h"
#include "fuzz_dgt.h"

#include "digits/checkpoint.h"
#include "digits/io.h"
#include "digits/train.h"

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    return dgt_mutate(1, data, size, max_size, seed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    struct dg_model model;
    struct dg_checkpoint ck;
    enum dg_status status = dg_checkpoint_load(path, &model, &ck);
    if (status != DG_OK)
        return 0;
    const struct dg_train_state *s = &ck.state;
    if (s->param_count != model.param_count || !s->params || !s->rms_acc ||
        s->history_count < 0 || s->history_count > s->history_capacity ||
        ck.options.epochs < DG_TRAIN_EPOCHS_MIN || ck.options.epochs > DG_TRAIN_EPOCHS_MAX ||
        ck.options.batch < DG_TRAIN_BATCH_MIN || ck.options.batch > DG_TRAIN_BATCH_MAX)
        abort();
    fuzz_require_finite(s->params, s->param_count);
    fuzz_require_finite(s->rms_acc, s->param_count);
    if (s->best_params)
        fuzz_require_finite(s->best_params, s->param_count);
    dg_model_free(&model);
    dg_checkpoint_free(&ck);
    return 0;
}
