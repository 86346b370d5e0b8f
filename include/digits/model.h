/* The network: a table of layers (the reference Keras kernel's architecture), their shapes,
 * and one contiguous float parameter vector. Per layer the weights come first, then the bias:
 *   conv  w (out_c, in_c, k, k), b (out_c)
 *   dense w (in, out) row-major, b (out)
 *   batchnorm gamma (c), beta (c), running mean (c), running variance (c)
 * Activations are NCHW; flatten keeps NCHW order (index c*h*w + y*w + x). */
#ifndef DIGITS_MODEL_H
#define DIGITS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DG_MAX_LAYERS 32
#define DG_MAX_UNITS 65536     /* conv filters, dense units */
#define DG_MAX_KERNEL 15       /* conv kernel side (odd) */
#define DG_MAX_PARAMS (1 << 28) /* the parameters of one network (1 GiB of floats) */

enum dg_layer_kind {
    DG_LAYER_CONV = 1,    /* convolution: stride 1 or 2, "same" or "valid" padding, optional ReLU */
    DG_LAYER_MAXPOOL = 2, /* 2x2, stride 2 */
    DG_LAYER_DROPOUT = 3,
    DG_LAYER_FLATTEN = 4,
    DG_LAYER_DENSE = 5,   /* optional ReLU; the last dense layer feeds softmax */
    DG_LAYER_BATCHNORM = 6, /* per channel (per unit after flatten), Keras' defaults below */
    DG_LAYER_GAP = 7,       /* global average pooling: the mean of each channel; flat after */
};

/* Batch normalisation's constants, Keras' BatchNormalization defaults: running statistics
 * r = DG_BN_MOMENTUM r + (1 - DG_BN_MOMENTUM) batch statistic, and y = gamma (x - mean) /
 * sqrt(var + DG_BN_EPSILON) + beta. */
#define DG_BN_MOMENTUM 0.99
#define DG_BN_EPSILON 1e-3

struct dg_layer_spec {
    enum dg_layer_kind kind;
    int units;   /* conv: out channels; dense: outputs */
    int kernel;  /* conv only */
    int relu;    /* conv, dense */
    float rate;  /* dropout only */
    int stride;  /* conv: 1 or 2 (0 is read as 1) */
    int valid;   /* conv: 0 "same" padding (kernel/2 each side), 1 none ("valid") */
};

struct dg_layer {
    struct dg_layer_spec spec;
    char name[24];           /* "conv1", "pool1", "dropout1", "flatten", "dense1" */
    int in_c, in_h, in_w;    /* input shape (per image) */
    int out_c, out_h, out_w; /* output shape (per image); dense/flatten use out_c only */
    size_t weight_offset;    /* into the parameter vector */
    size_t weight_count;
    size_t bias_offset;
    size_t bias_count;
    /* batchnorm: gamma at weight_offset, beta at bias_offset (out_c each), then the running
     * mean and variance at stat_offset (2 x out_c): parameters the optimiser never moves
     * (their gradients are zero), 0 elsewhere */
    size_t stat_offset;
    size_t stat_count;
    int dropout_ordinal;     /* 0, 1, 2 for dropout layers, -1 otherwise */
};

struct dg_model {
    int layer_count;
    struct dg_layer layers[DG_MAX_LAYERS];
    size_t param_count;
    float *params; /* host, param_count floats */
};

/* The reference architecture (887,530 parameters). */
const struct dg_layer_spec *dg_arch_reference(int *layer_count);

/* Builds the layer table from specs for 1x28x28 inputs and 10 classes, checking every shape;
 * allocates zeroed params. DG_ERR_INPUT when the specs do not make a valid network. */
enum dg_status dg_model_build(struct dg_model *model, const struct dg_layer_spec *specs,
                              int layer_count);

/* dg_model_build without the parameters (params NULL, nothing to free): the table, its shapes
 * and param_count, so that a reader can check a file's parameter count before allocating.
 * On DG_ERR_INPUT *bad_layer (may be NULL) is the index of the layer at fault, else -1. */
enum dg_status dg_model_layout(struct dg_model *model, const struct dg_layer_spec *specs,
                               int layer_count, int *bad_layer);

/* ---- the text form of a layer table (`digits train --net`) ----
 * Layers separated by '-', letters in either case:
 *   NcK     convolution: N filters, K x K ("same" padding, stride 1, ReLU), then in this
 *           order optionally S2 (stride 2), V ("valid": no padding) and L (no ReLU), e.g.
 *           32C5S2, 32C3V, 64C3VL. Output side (side + 2 pad - K) / stride + 1, pad K/2
 *           ("same", both sides, as PyTorch's padding=K//2) or 0 ("valid")
 *   B       batch normalisation (per channel; per unit after flatten)
 *   p2      2x2 max-pooling, stride 2
 *   g       global average pooling: the mean of each channel; the tensor is flat after it
 *           (a dense or batchnorm layer may follow, no flatten)
 *   dR      dropout at rate R (0 <= R < 1), e.g. d0.25
 *   f       flatten (written before the first dense layer when left out)
 *   N       dense: N units with ReLU; Nl: no ReLU. The last layer is the dense layer of 10
 *           classes that feeds softmax (no ReLU, whether or not written "10l").
 * The presets: "reference" (the default network, 887,530 parameters):
 *   32C5-32C5-P2-D0.25-64C3-64C3-P2-D0.25-F-256-D0.5-10
 * and "deotte" (Chris Deotte's Kaggle CNN: batch normalisation after every layer, strided
 * convolutions instead of pooling):
 *   32C3V-B-32C3V-B-32C5S2-B-D0.4-64C3V-B-64C3V-B-64C5S2-B-D0.4-F-128-B-D0.4-10 */
#define DG_NET_SPEC_MAX 1024

/* Parses a preset name or a spec into specs (DG_MAX_LAYERS entries) and checks that it makes
 * a network for 28x28 images (dg_model_layout). DG_ERR_USAGE on any fault, with a message
 * naming the character position in `text` (1-based) and what was expected there, or the layer
 * whose shape does not fit. */
enum dg_status dg_net_spec_parse(const char *text, struct dg_layer_spec *specs, int *layer_count);

/* The spec of a layer table in the canonical spelling above (upper case, F written out);
 * returns what snprintf returns. */
int dg_net_spec_format(const struct dg_layer_spec *specs, int layer_count, char *out, size_t size);

/* dg_net_spec_format of a model's layer table. */
int dg_model_net_spec(const struct dg_model *model, char *out, size_t size);

/* The spec text of a named preset, NULL when `name` is none. */
const char *dg_net_preset(const char *name);

/* "reference": the names of the presets, comma separated. */
const char *dg_net_preset_names(void);

/* Glorot-uniform weights (limit sqrt(6 / (fan_in + fan_out)), fans including the kernel
 * area), zero biases; a pure function of seed (Philox, purpose DG_RNG_INIT). */
void dg_model_init_glorot(struct dg_model *model, uint64_t seed);

void dg_model_free(struct dg_model *model);

/* Prints the layer table (name, output shape, parameters) and the total. */
void dg_model_print_summary(const struct dg_model *model, void (*print_line)(const char *, void *),
                            void *ctx);

/* The largest per-image activation size (floats) over all layers, input included. */
size_t dg_model_max_activation(const struct dg_model *model);

#ifdef __cplusplus
}
#endif

#endif
