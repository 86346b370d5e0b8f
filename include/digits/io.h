/* Output files that appear whole or not at all (temporary file + rename), and the model file:
 *   "DGTMODEL" magic (8 bytes), u32 format version, u32 layer count, per layer
 *   (u32 kind, u32 units, u32 kernel, u32 relu, f32 rate; the kernel word of a convolution
 *   also holds bit 8 = stride 2 and bit 9 = "valid" padding), u64 parameter count,
 *   u32 settings length + settings text ("key=value\n" lines), the parameters as
 *   little-endian float32 in dg_model order, then the CRC32 (zlib) of everything before it. */
#ifndef DIGITS_IO_H
#define DIGITS_IO_H

#include <stddef.h>
#include <stdio.h>

#include "digits/data.h"
#include "digits/model.h"
#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DG_MODEL_MAGIC "DGTMODEL"
#define DG_MODEL_VERSION 1u    /* one model */
#define DG_ENSEMBLE_VERSION 2u /* several: a u32 member count follows the parameter count, and
                                  the members' parameters follow each other */
#define DG_MAX_MEMBERS 64

struct dg_atomic_file {
    FILE *fp;
    char path[4096];
    char tmp_path[4096];
    int finished; /* dg_atomic_finish succeeded: only the rename is left */
    int direct;   /* written in place: stdout, or an existing non-regular file (a device,
                     a FIFO), which cannot be replaced by a rename */
    int slot;     /* tmp_path's place in the list of open temporaries + 1; 0: not listed */
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

/* The process-wide list of open temporary files (src/io/temporaries.c): fixed-size, static,
 * lock-free, read by the SIGINT/SIGTERM handler, which unlinks every listed path before the
 * process dies by the signal. dg_atomic_open lists its temporary; commit and abort take it
 * off. A temporary made elsewhere is listed the same way (signals blocked between creating
 * and listing it, so that none is missed). */
#define DG_TEMPORARIES_MAX 64
#define DG_TEMPORARY_PATH_MAX 4096
/* Lists `path` (a file that exists already): its slot, or -1 when the list is full or the
 * path too long (nothing listed). */
int dg_temporary_add(const char *path);
/* Before creating a temporary file: blocks SIGINT and SIGTERM in this thread and reserves a
 * slot; -1 when the list is full or the process is ending on a signal (mask restored;
 * dg_temporaries_ending() tells which). */
int dg_temporary_begin(void);
/* After creating it (slot from dg_temporary_begin): lists `path` in it (NULL: nothing was
 * created; the slot is freed) and restores the thread's signal mask. The slot, or -1 when
 * nothing was listed. */
int dg_temporary_end(int slot, const char *path);
/* Before renaming a listed temporary into place: 1 when the rename may go ahead (until
 * dg_temporary_commit_end, a handler on another thread waits for it), 0 when the SIGINT/SIGTERM
 * handler has begun (the temporary removed, by it or here: leave the rename undone). A slot
 * of -1 gives 1. */
int dg_temporary_commit_begin(int slot);
/* After the rename: off the list when renamed, listed again (to be removed) when not. */
void dg_temporary_commit_end(int slot, int renamed);
/* Takes slot (from dg_temporary_add or dg_temporary_end; -1 is ignored) off the list. */
void dg_temporary_remove(int slot);
/* How many paths are listed. */
int dg_temporaries_count(void);
/* Unlinks every listed path (async-signal-safe). */
void dg_temporaries_unlink_all(void);
/* The handler's work before it raises the signal again (async-signal-safe): from now on
 * dg_temporary_begin and dg_temporary_commit_begin refuse, then every listed path is unlinked.
 * (dg_temporary_add, for files that exist already, does not look.) */
void dg_temporaries_stop(void);
/* Whether dg_temporaries_stop has begun (the process is ending on a signal). */
int dg_temporaries_ending(void);
/* When dg_temporaries_stop has begun on another thread: waits (up to about 10 s) for its
 * handler to end the process by the signal; returns at once otherwise. For `main`, before it
 * returns a command's status. */
void dg_temporaries_await(void);
/* The handler: dg_temporaries_stop, restores the default action of signo and raises
 * it, so that the process ends by the signal (128 + signo from a shell). */
void dg_temporaries_on_signal(int signo);
/* Installs the handler for SIGINT and SIGTERM, once at start (src/cli/main.c). A signal that
 * was ignored when the process started stays ignored. */
void dg_temporaries_install(void);
/* Installs the handler for signo (SIGINT or SIGTERM) again, e.g. after a command caught it
 * itself (async-signal-safe: may be called from that command's handler). */
void dg_temporaries_catch(int signo);

/* Writes an ensemble of `count` members of the same architecture: a one-member ensemble is a
 * plain version-1 model file; more members make a version-2 file. */
enum dg_status dg_ensemble_save(const char *path, const struct dg_model *members, int count,
                                const char *settings);
/* Reads a model or ensemble file into members[0..*count) (at most max_members; each built
 * with dg_model_build, free each with dg_model_free), with the checks of dg_model_load. */
enum dg_status dg_ensemble_load(const char *path, struct dg_model *members, int max_members,
                                int *count, char *settings, size_t settings_size);

/* The value of `key` in a settings text of "key=value\n" lines (a model's, a checkpoint's):
 * a pointer into the text, ended by '\n' (or the text's end); NULL when absent. */
const char *dg_settings_value(const char *text, const char *key);

/* Writes model (layer table + params) and the settings text. */
enum dg_status dg_model_save(const char *path, const struct dg_model *model,
                             const char *settings);

/* Reads a model file: refuses (DG_ERR_INPUT, saying which) a file that is truncated,
 * corrupted (CRC), of another format version or of another architecture than the
 * reference, or an ensemble of several members. `settings` (may be NULL) receives the
 * settings text. */
enum dg_status dg_model_load(const char *path, struct dg_model *model, char *settings,
                             size_t settings_size);

/* ---- export and import (src/io/export.c, onnx.c, safetensors.c) ----
 * Parameters leave Digits under PyTorch's names and layouts: "conv1.weight" (out, in, k, k),
 * "conv1.bias" (out), ..., "dense1.weight" (out, in) (Digits keeps (in, out): transposed on
 * the way out and back), "dense1.bias" (out); K in convK / denseK counts the layers of a kind.
 *
 * ONNX (opset DG_ONNX_OPSET, IR DG_ONNX_IR_VERSION, encoded by hand): input "input"
 * (N, 1, 28, 28) float32 pixel / 255 with a symbolic batch N, output "probabilities" (N, 10);
 * Conv (pads "same") [+ Relu], MaxPool 2x2/2, Flatten (NCHW order, as Digits), Gemm
 * (transB = 1) [+ Relu], Softmax (axis 1); dropout is left out (identity at inference).
 * Metadata: "digits.architecture" (dg_export_architecture's text), "digits.settings".
 *
 * safetensors: u64 little-endian header length, the JSON header ({"name": {"dtype": "F32",
 * "shape": [...], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}, padded with
 * spaces to a multiple of 8), then the tensors' little-endian bytes, in layer order.
 * __metadata__: "format": "pt", "producer", "digits.architecture", "digits.settings", and the
 * input, output and layout in words.
 *
 * Ensembles (several members, as dg_ensemble_load reads them). One member is written exactly as
 * one model (nothing below appears). With K > 1 members:
 *   ONNX: one model, the same input; member m's nodes, values and initializers named with the
 *   prefix "members.m." ("members.0.conv1.weight", node "members.0.conv1", its softmax output
 *   "members.0.probabilities"), then one Mean node ("mean") of the K softmax outputs in member
 *   order gives "probabilities" (N, 10), as `digits predict` averages (there in double, here in
 *   float32: the two differ by float rounding, ~1e-7). Metadata adds "digits.members" = "K";
 *   "digits.architecture" is each member's.
 *   safetensors: member m's tensors as "members.m.conv1.weight", ..., members in order, each in
 *   layer order: the state_dict names of a PyTorch module holding the networks in an
 *   nn.ModuleList attribute named `members` (load_state_dict(strict=True) takes the file as it
 *   is). __metadata__ adds "digits.members" = "K".
 * Import reads either form: every tensor named plainly (one model), or every tensor under
 * "members.M." with M = 0..K-1 (decimal, no leading zeros, K <= DG_MAX_MEMBERS), each member
 * complete. A file mixing the two, a member index with a gap before it, a malformed or too large
 * index, a member with a missing, unknown, repeated or differently shaped tensor, or a
 * "digits.members" that is not the member count found is refused, saying which. */
#define DG_ONNX_OPSET 13
#define DG_ONNX_IR_VERSION 7
#define DG_ONNX_INPUT "input"
#define DG_ONNX_OUTPUT "probabilities"
#define DG_SAFETENSORS_MAX_HEADER 100000000u /* bytes, as the safetensors library */
#define DG_EXPORT_MEMBER_PREFIX "members."   /* + "M." + the tensor's name */
#define DG_EXPORT_MEMBERS_KEY "digits.members"

/* Writes the model as ONNX (atomically); settings (may be NULL) goes into the metadata. */
enum dg_status dg_export_onnx(const char *path, const struct dg_model *model,
                              const char *settings);
/* Writes members[0..count) (1..DG_MAX_MEMBERS, one architecture) as one ONNX model averaging
 * their probabilities; count 1 is dg_export_onnx. */
enum dg_status dg_export_onnx_ensemble(const char *path, const struct dg_model *members,
                                       int count, const char *settings);

/* Writes the model's parameters as safetensors (atomically); settings (may be NULL) goes
 * into __metadata__ as "digits.settings". */
enum dg_status dg_export_safetensors(const char *path, const struct dg_model *model,
                                     const char *settings);
/* Writes members[0..count) as safetensors, "members.M." names when count > 1; count 1 is
 * dg_export_safetensors. */
enum dg_status dg_export_safetensors_ensemble(const char *path, const struct dg_model *members,
                                              int count, const char *settings);

/* Reads a safetensors file into a reference-architecture model (built here). Tensor names:
 * convK.weight / convK.bias, denseK.weight / denseK.bias, and fcK.weight / fcK.bias as another
 * name of denseK. Refuses (DG_ERR_INPUT, saying which) a bad header, an unknown, missing or
 * repeated tensor, another dtype than F32, another shape, data offsets outside the file,
 * overlapping or with holes, a "digits.architecture" other than this digits', and an ensemble
 * of several members. *settings (may be NULL) receives the "digits.settings" text (malloc), or
 * NULL when there is none. */
enum dg_status dg_import_safetensors(const char *path, struct dg_model *model, char **settings);
/* The same for a file of one model or of an ensemble ("members.M." names): members[0..*count)
 * built here (free each with dg_model_free); more than max_members members are refused. */
enum dg_status dg_import_safetensors_ensemble(const char *path, struct dg_model *members,
                                              int max_members, int *count, char **settings);

/* ---- answers (eval --answers) ----
 * Kaggle-layout answer and submission files: "ImageId,Label" then one "ID,LABEL" row per image
 * (`digits predict` writes them; `scripts/get-data` writes test_labels.csv).
 * Reads `path` strictly: the header, then rows with ImageId 1..N each exactly once (any order)
 * and Label 0..9, optional "\r" before "\n", nothing else. labels[id - 1] (malloc) and N.
 * A bad file is DG_ERR_INPUT with "FILE:LINE:COL: what was expected". */
enum dg_status dg_answers_load(const char *path, uint8_t **labels, size_t *count);

#ifdef __cplusplus
}
#endif

#endif
