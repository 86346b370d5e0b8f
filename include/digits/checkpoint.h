/* Checkpoints (src/io/checkpoint.c): everything a stopped run needs to resume bit for bit.
 * Written by `digits train` every epoch and on a signal, read by `train --resume`. */
#ifndef DIGITS_CHECKPOINT_H
#define DIGITS_CHECKPOINT_H

#include <stdint.h>

#include "digits/model.h"
#include "digits/status.h"
#include "digits/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The file: "DGTCKPT\0" magic (8 bytes), u32 format version, u32 layer count, the layer table (as
 * in the model file), u64 parameter count, u32 block count (2: weights and the optimizer's first
 * state vector (RMSprop's accumulators, Adam's m, SGD's momentum buffer); then Adam's v under
 * optimizer=adam; then the best epoch's weights with --save-best), u32 text length + text ("key=value\n": every training
 * setting, the data fingerprint, the scalar state, one "history=" line per epoch, floats
 * printed to read back bit for bit), the blocks as little-endian float32, then the CRC32 of
 * everything before it. */
#define DG_CHECKPOINT_MAGIC "DGTCKPT\0"
#define DG_CHECKPOINT_VERSION 1u

struct dg_checkpoint {
    struct dg_train_options options; /* the run's settings (callbacks unused) */
    struct dg_train_state state;     /* owned: dg_checkpoint_free */
    uint64_t data_rows;              /* the training data's fingerprint */
    uint32_t data_crc32;
    char output[4096];      /* the model file the run writes */
    char train_file[4096];  /* as given (informational) */
    char labels_file[4096]; /* --labels as given ("" when none) */
    uint64_t limit;         /* --limit (0: all rows) */
    char math[8];           /* the run's math: "bf16", "tf32", or "" for fp32 (not written) */
};

/* Writes the checkpoint atomically (temporary file, fsync, rename): a failure leaves any
 * previous file at `path` as it was. */
enum dg_status dg_checkpoint_save(const char *path, const struct dg_model *model,
                                  const struct dg_checkpoint *ck);

/* Reads a checkpoint: refuses (DG_ERR_INPUT, saying which) a model file, a truncated or
 * corrupted file, another format version or another architecture. Builds `model` (its params
 * = the state's weights) and fills ck. */
enum dg_status dg_checkpoint_load(const char *path, struct dg_model *model,
                                  struct dg_checkpoint *ck);
void dg_checkpoint_free(struct dg_checkpoint *ck);

#ifdef __cplusplus
}
#endif

#endif
