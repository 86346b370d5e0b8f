/* Output files that appear whole or not at all (temporary file + rename), and the model file:
 *   "DGTMODEL" magic (8 bytes), u32 format version, u32 layer count, per layer
 *   (u32 kind, u32 units, u32 kernel, u32 relu, f32 rate), u64 parameter count,
 *   u32 settings length + settings text ("key=value\n" lines), the parameters as
 *   little-endian float32 in dg_model order, then the CRC32 (zlib) of everything before it. */
#ifndef DIGITS_IO_H
#define DIGITS_IO_H

#include <stddef.h>
#include <stdio.h>

#include "digits/data.h"
#include "digits/model.h"
#include "digits/status.h"
#include "digits/train.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DG_MODEL_MAGIC "DGTMODEL"
#define DG_MODEL_VERSION 1u

struct dg_atomic_file {
    FILE *fp;
    char path[4096];
    char tmp_path[4096];
    int finished; /* dg_atomic_finish succeeded: only the rename is left */
    int direct;   /* written in place: stdout, or an existing non-regular file (a device,
                     a FIFO), which cannot be replaced by a rename */
};

/* Opens a temporary file beside `path` ("-" is stdout, written directly). The file gets the
 * mode a plain create would give it, 0666 less the umask; when `path` exists, its mode. An
 * existing path that is not a regular file (/dev/stdout, /dev/full, a FIFO) is opened and
 * written in place, every write still checked at finish; a directory is refused. */
enum dg_status dg_atomic_open(struct dg_atomic_file *file, const char *path);
/* Flushes, syncs and closes the temporary file, leaving the rename to dg_atomic_commit (so
 * that several outputs can be completed first and then put in place together). On failure the
 * temporary file is removed. For stdout: flushes it. */
enum dg_status dg_atomic_finish(struct dg_atomic_file *file);
/* Finishes it (unless done) and renames it over `path`. On failure the temporary file is
 * removed. */
enum dg_status dg_atomic_commit(struct dg_atomic_file *file);
/* Closes and removes the temporary file (safe after a failed commit or twice). */
void dg_atomic_abort(struct dg_atomic_file *file);

/* Writes model (layer table + params) and the settings text. */
enum dg_status dg_model_save(const char *path, const struct dg_model *model,
                             const char *settings);

/* Reads a model file: refuses (DG_ERR_INPUT, saying which) a file that is truncated,
 * corrupted (CRC), of another format version or of another architecture than the
 * reference. `settings` (may be NULL) receives the settings text. */
enum dg_status dg_model_load(const char *path, struct dg_model *model, char *settings,
                             size_t settings_size);

/* ---- checkpoints ----
 * "DGTCKPT\0" magic (8 bytes), u32 format version, u32 layer count, the layer table (as in the
 * model file), u64 parameter count, u32 block count (2: weights and RMSprop accumulators; 3:
 * also the best epoch's weights), u32 text length + text ("key=value\n": every training
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
    char output[4096];     /* the model file the run writes */
    char train_file[4096]; /* as given (informational) */
    char labels_file[4096]; /* --labels as given ("" when none) */
    uint64_t limit;        /* --limit (0: all rows) */
};

/* Rows and CRC32 of the images (N x 784) then the labels. */
void dg_dataset_fingerprint(const struct dg_dataset *dataset, uint64_t *rows, uint32_t *crc);

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
