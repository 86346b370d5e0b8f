/* Output files that appear whole or not at all (temporary file + rename), and the model file:
 *   "DGTMODEL" magic (8 bytes), u32 format version, u32 layer count, per layer
 *   (u32 kind, u32 units, u32 kernel, u32 relu, f32 rate), u64 parameter count,
 *   u32 settings length + settings text ("key=value\n" lines), the parameters as
 *   little-endian float32 in dg_model order, then the CRC32 (zlib) of everything before it. */
#ifndef DIGITS_IO_H
#define DIGITS_IO_H

#include <stddef.h>
#include <stdio.h>

#include "digits/model.h"
#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DG_MODEL_MAGIC "DGTMODEL"
#define DG_MODEL_VERSION 1u

struct dg_atomic_file {
    FILE *fp;
    char path[4096];
    char tmp_path[4096];
};

/* Opens a temporary file beside `path` ("-" is stdout, written directly). */
enum dg_status dg_atomic_open(struct dg_atomic_file *file, const char *path);
/* Flushes, syncs and renames it over `path`. On failure the temporary file is removed. */
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

#ifdef __cplusplus
}
#endif

#endif
