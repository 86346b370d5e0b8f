/* The network: a table of layers (the reference Keras kernel's architecture), their shapes,
 * and one contiguous float parameter vector. Per layer the weights come first, then the bias:
 *   conv  w (out_c, in_c, k, k), b (out_c)
 *   dense w (in, out) row-major, b (out)
 * Activations are NCHW; flatten keeps NCHW order (index c*h*w + y*w + x). */
#ifndef DIGITS_MODEL_H
#define DIGITS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DG_MAX_LAYERS 16

enum dg_layer_kind {
    DG_LAYER_CONV = 1,    /* "same" convolution, stride 1, optional ReLU */
    DG_LAYER_MAXPOOL = 2, /* 2x2, stride 2 */
    DG_LAYER_DROPOUT = 3,
    DG_LAYER_FLATTEN = 4,
    DG_LAYER_DENSE = 5,   /* optional ReLU; the last dense layer feeds softmax */
};

struct dg_layer_spec {
    enum dg_layer_kind kind;
    int units;   /* conv: out channels; dense: outputs */
    int kernel;  /* conv only */
    int relu;    /* conv, dense */
    float rate;  /* dropout only */
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
