/* Internals of the export formats (src/io/export.c, onnx.c, safetensors.c): the model's
 * parameters as named tensors in PyTorch's names and layouts, and the architecture in words.
 *   conv  "convK.weight" (out, in, k, k) (Digits' layout), "convK.bias" (out)
 *   dense "denseK.weight" (out, in) (Digits stores (in, out): transposed), "denseK.bias" (out)
 *   batchnorm "batchnormK.weight", ".bias", ".running_mean", ".running_var" (c each) and
 *         ".num_batches_tracked" (I64, shape []), as PyTorch's nn.BatchNorm2d / BatchNorm1d
 *         name them
 * K counts the layers of a kind from 1, as the layer table names them. Member m of an
 * ensemble of several: the same names behind "members.m." (PyTorch's nn.ModuleList named
 * `members`), e.g. "members.0.conv1.weight". */
#ifndef DIGITS_IO_EXPORT_H
#define DIGITS_IO_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "digits/model.h"
#include "digits/status.h"

#define DG_EXPORT_MAX_TENSORS (5 * DG_MAX_LAYERS)

struct dg_export_tensor {
    char name[48]; /* "conv1.weight", "members.12.conv1.weight" */
    int layer;     /* index into model->layers */
    int is_bias;
    int transposed; /* dense weight: stored (in, out) by Digits, (out, in) here */
    int is_counter; /* batchnorm's num_batches_tracked: an I64 scalar, no parameters (count 0;
                       written 0, ignored on import, optional there) */
    int rank;
    int64_t shape[4];
    size_t count;  /* elements */
    size_t offset; /* into model->params */
};

/* The tensors of model in layer order (weight, then bias; then a batchnorm layer's running mean
 * and variance), count into *count. */
void dg_export_tensors(const struct dg_model *model, struct dg_export_tensor *tensors, int *count);
/* The same, named as member `member` of an ensemble ("members.M." before each name); member < 0:
 * no prefix (one model), as dg_export_tensors. */
void dg_export_member_tensors(const struct dg_model *model, int member,
                              struct dg_export_tensor *tensors, int *count);

/* Element i (row-major in the exported shape) of tensor t, read from Digits' parameters. */
static inline size_t dg_export_index(const struct dg_export_tensor *t, size_t i)
{
    if (!t->transposed)
        return t->offset + i;
    /* exported (out, in) element (o, j) is Digits' (in, out) element (j, o) */
    size_t out = (size_t)t->shape[0], in = (size_t)t->shape[1];
    return t->offset + (i % in) * out + i / in;
}

/* DG_OK when every one of `values` (model->param_count floats laid out as model->params: the
 * weights, or a checkpoint's accumulators or best weights) is finite; otherwise DG_ERR_INPUT
 * naming the first non-finite one: "PATH: non-finite value in the WHAT: NAME[I] is NaN" with
 * NAME the tensor as exported (member >= 0: "members.M." before it) and I the flat index
 * in its exported (PyTorch, row-major) layout. Every reader of parameters calls it. */
enum dg_status dg_io_check_finite(const char *path, const char *what, const struct dg_model *model,
                                  int member, const float *values);

/* The architecture in PyTorch's words, one layer after another ("conv1 Conv2d(1, 32,
 * kernel_size=5, padding=2) ReLU; ..."). Returns the length (as snprintf). */
int dg_export_architecture(const struct dg_model *model, char *text, size_t size);

/* The metadata key of the network's --net spec (safetensors and ONNX): what the importer builds
 * the tensors' network from (the reference network when a file has none). */
#define DG_EXPORT_NET_KEY "digits.net"

/* The --net spec of model's layer table (dg_net_spec_format) into text; "" for the reference
 * network, whose files carry no such key (they stay byte for byte as before the key). */
void dg_export_net_spec(const struct dg_model *model, char *text, size_t size);

#endif
