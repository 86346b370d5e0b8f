/* The layer table of the network, its shapes and parameter offsets, Glorot initialisation.
 * Parameters: one float vector; per layer weights then bias (conv w (out_c, in_c, k, k),
 * dense w (in, out) row-major). Inputs 1x28x28, NCHW. */
#include "digits/model.h"

#include "digits/backend.h"
#include "digits/data.h"
#include "math/philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct dg_layer_spec reference_arch[] = {
    {DG_LAYER_CONV, 32, 5, 1, 0.0f, 1, 0},   {DG_LAYER_CONV, 32, 5, 1, 0.0f, 1, 0},
    {DG_LAYER_MAXPOOL, 0, 0, 0, 0.0f, 0, 0}, {DG_LAYER_DROPOUT, 0, 0, 0, 0.25f, 0, 0},
    {DG_LAYER_CONV, 64, 3, 1, 0.0f, 1, 0},   {DG_LAYER_CONV, 64, 3, 1, 0.0f, 1, 0},
    {DG_LAYER_MAXPOOL, 0, 0, 0, 0.0f, 0, 0}, {DG_LAYER_DROPOUT, 0, 0, 0, 0.25f, 0, 0},
    {DG_LAYER_FLATTEN, 0, 0, 0, 0.0f, 0, 0}, {DG_LAYER_DENSE, 256, 0, 1, 0.0f, 0, 0},
    {DG_LAYER_DROPOUT, 0, 0, 0, 0.5f, 0, 0}, {DG_LAYER_DENSE, 10, 0, 0, 0.0f, 0, 0},
};

const struct dg_layer_spec *dg_arch_reference(int *layer_count)
{
    *layer_count = (int)(sizeof reference_arch / sizeof reference_arch[0]);
    return reference_arch;
}

static const char *kind_name(enum dg_layer_kind kind)
{
    switch (kind) {
    case DG_LAYER_CONV:
        return "conv";
    case DG_LAYER_MAXPOOL:
        return "pool";
    case DG_LAYER_DROPOUT:
        return "dropout";
    case DG_LAYER_FLATTEN:
        return "flatten";
    case DG_LAYER_DENSE:
        return "dense";
    case DG_LAYER_BATCHNORM:
        return "batchnorm";
    case DG_LAYER_GAP:
        return "gap";
    }
    return "?";
}

enum dg_status dg_model_layout(struct dg_model *model, const struct dg_layer_spec *specs,
                               int layer_count, int *bad_layer)
{
    memset(model, 0, sizeof *model);
    int bad = -1;
    if (!bad_layer)
        bad_layer = &bad;
    *bad_layer = -1;
    if (layer_count < 1 || layer_count > DG_MAX_LAYERS)
        return dg_error(DG_ERR_INPUT, "architecture: %d layers (1..%d allowed)", layer_count,
                        DG_MAX_LAYERS);
    int c = 1, h = 28, w = 28, flat = 0, dropouts = 0;
    int ordinal[DG_LAYER_GAP + 1] = {0};
    size_t offset = 0;
    for (int i = 0; i < layer_count; i++) {
        struct dg_layer *layer = &model->layers[i];
        *bad_layer = i;
        layer->spec = specs[i];
        layer->in_c = c;
        layer->in_h = h;
        layer->in_w = w;
        layer->dropout_ordinal = -1;
        int kind = specs[i].kind;
        if (kind < DG_LAYER_CONV || kind > DG_LAYER_GAP)
            return dg_error(DG_ERR_INPUT, "architecture: layer %d has unknown kind %d", i + 1,
                            kind);
        snprintf(layer->name, sizeof layer->name, "%s%d", kind_name(specs[i].kind),
                 ++ordinal[kind]);
        switch (specs[i].kind) {
        case DG_LAYER_CONV:
            if (flat)
                return dg_error(DG_ERR_INPUT,
                                "architecture: %s: a convolution after flatten (its input is "
                                "flat)",
                                layer->name);
            if (specs[i].units < 1 || specs[i].units > DG_MAX_UNITS)
                return dg_error(DG_ERR_INPUT, "architecture: %s: %d filters (1..%d allowed)",
                                layer->name, specs[i].units, DG_MAX_UNITS);
            if (specs[i].kernel < 1 || specs[i].kernel > DG_MAX_KERNEL || specs[i].kernel % 2 == 0)
                return dg_error(DG_ERR_INPUT,
                                "architecture: %s: kernel %d (an odd size 1..%d: \"same\" "
                                "padding is kernel/2 each side)",
                                layer->name, specs[i].kernel, DG_MAX_KERNEL);
            if (specs[i].stride < 0 || specs[i].stride > 2 || specs[i].valid < 0 ||
                specs[i].valid > 1)
                return dg_error(DG_ERR_INPUT, "architecture: %s: stride %d, valid %d (stride 1 "
                                              "or 2, valid 0 or 1)",
                                layer->name, specs[i].stride, specs[i].valid);
            {
                struct dg_conv_shape shape = {1, c, specs[i].units, h, w, specs[i].kernel,
                                              specs[i].stride, specs[i].valid, 0};
                if (!dg_conv_fits(&shape))
                    return dg_error(DG_ERR_INPUT,
                                    "architecture: %s: its input is %dx%d, smaller than the "
                                    "%dx%d kernel without padding",
                                    layer->name, h, w, specs[i].kernel, specs[i].kernel);
                h = dg_conv_out_height(&shape);
                w = dg_conv_out_width(&shape);
            }
            layer->weight_count = (size_t)specs[i].units * c * specs[i].kernel * specs[i].kernel;
            layer->bias_count = (size_t)specs[i].units;
            c = specs[i].units;
            break;
        case DG_LAYER_BATCHNORM:
            layer->weight_count = (size_t)c;
            layer->bias_count = (size_t)c;
            layer->stat_count = 2 * (size_t)c;
            break;
        case DG_LAYER_MAXPOOL:
            if (flat)
                return dg_error(DG_ERR_INPUT,
                                "architecture: %s: pooling after flatten (its input is flat)",
                                layer->name);
            if (h < 2 || w < 2)
                return dg_error(DG_ERR_INPUT,
                                "architecture: %s: its input is %dx%d, too small for a 2x2 "
                                "window",
                                layer->name, h, w);
            h /= 2;
            w /= 2;
            break;
        case DG_LAYER_DROPOUT:
            if (!(specs[i].rate >= 0.0f && specs[i].rate < 1.0f))
                return dg_error(DG_ERR_INPUT, "architecture: %s: rate %g outside [0, 1)",
                                layer->name, specs[i].rate);
            layer->dropout_ordinal = dropouts++;
            break;
        case DG_LAYER_GAP:
            if (flat)
                return dg_error(DG_ERR_INPUT,
                                "architecture: %s: global average pooling after flatten (its "
                                "input is flat)",
                                layer->name);
            h = w = 1;
            flat = 1;
            break;
        case DG_LAYER_FLATTEN:
            if (flat)
                return dg_error(DG_ERR_INPUT, "architecture: %s: already flat", layer->name);
            c = c * h * w;
            h = w = 1;
            flat = 1;
            break;
        case DG_LAYER_DENSE:
            if (!flat)
                return dg_error(DG_ERR_INPUT,
                                "architecture: %s: a dense layer before flatten (its input is "
                                "%dx%dx%d)",
                                layer->name, c, h, w);
            if (specs[i].units < 1 || specs[i].units > DG_MAX_UNITS)
                return dg_error(DG_ERR_INPUT, "architecture: %s: %d units (1..%d allowed)",
                                layer->name, specs[i].units, DG_MAX_UNITS);
            layer->weight_count = (size_t)c * specs[i].units;
            layer->bias_count = (size_t)specs[i].units;
            c = specs[i].units;
            break;
        }
        size_t layer_params = layer->weight_count + layer->bias_count + layer->stat_count;
        if (offset + layer_params > DG_MAX_PARAMS)
            return dg_error(DG_ERR_INPUT,
                            "architecture: %s: more than %d parameters up to this layer (%zu)",
                            layer->name, DG_MAX_PARAMS, offset + layer_params);
        layer->weight_offset = offset;
        offset += layer->weight_count;
        layer->bias_offset = offset;
        offset += layer->bias_count;
        layer->stat_offset = offset;
        offset += layer->stat_count;
        layer->out_c = c;
        layer->out_h = h;
        layer->out_w = w;
    }
    *bad_layer = layer_count - 1;
    const struct dg_layer *last = &model->layers[layer_count - 1];
    if (last->spec.kind != DG_LAYER_DENSE || last->out_c != DG_CLASSES || last->spec.relu)
        return dg_error(DG_ERR_INPUT, "architecture: the last layer must be a dense layer of %d "
                                      "units without ReLU (it feeds softmax)",
                        DG_CLASSES);
    *bad_layer = -1;
    model->layer_count = layer_count;
    model->param_count = offset;
    return DG_OK;
}

enum dg_status dg_model_build(struct dg_model *model, const struct dg_layer_spec *specs,
                              int layer_count)
{
    enum dg_status status = dg_model_layout(model, specs, layer_count, NULL);
    if (status != DG_OK)
        return status;
    size_t offset = model->param_count;
    model->params = calloc(offset, sizeof(float));
    if (!model->params)
        return dg_error(DG_ERR_NOMEM, "model: cannot allocate %zu parameters", offset);
    return DG_OK;
}

void dg_model_init_glorot(struct dg_model *model, uint64_t seed)
{
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        if (layer->weight_count == 0)
            continue;
        if (layer->spec.kind == DG_LAYER_BATCHNORM) {
            /* gamma 1, beta 0, running mean 0, running variance 1 (Keras, PyTorch) */
            float *p = model->params + layer->weight_offset;
            size_t c = (size_t)layer->out_c;
            for (size_t k = 0; k < c; k++) {
                p[k] = 1.0f;
                p[c + k] = 0.0f;
                p[2 * c + k] = 0.0f;
                p[3 * c + k] = 1.0f;
            }
            continue;
        }
        double fan_in, fan_out;
        if (layer->spec.kind == DG_LAYER_CONV) {
            double area = (double)layer->spec.kernel * layer->spec.kernel;
            fan_in = layer->in_c * area;
            fan_out = layer->out_c * area;
        } else {
            fan_in = layer->in_c;
            fan_out = layer->out_c;
        }
        float limit = (float)sqrt(6.0 / (fan_in + fan_out));
        float *w = model->params + layer->weight_offset;
        for (size_t k = 0; k < layer->weight_count; k++) {
            float u = dg_rng_uniform(seed, DG_RNG_INIT, (uint32_t)i, 0, k);
            w[k] = (2.0f * u - 1.0f) * limit;
        }
        memset(model->params + layer->bias_offset, 0, layer->bias_count * sizeof(float));
    }
}

void dg_model_free(struct dg_model *model)
{
    free(model->params);
    model->params = NULL;
}

int dg_model_net_spec(const struct dg_model *model, char *out, size_t size)
{
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    for (int i = 0; i < model->layer_count; i++)
        specs[i] = model->layers[i].spec;
    return dg_net_spec_format(specs, model->layer_count, out, size);
}

void dg_model_print_summary(const struct dg_model *model, void (*print_line)(const char *, void *),
                            void *ctx)
{
    char line[128];
    int length = dg_model_net_spec(model, NULL, 0);
    char *text = malloc((size_t)length + 16);
    if (text) {
        memcpy(text, "network: ", 9);
        dg_model_net_spec(model, text + 9, (size_t)length + 1);
        print_line(text, ctx);
        free(text);
    }
    print_line("layer       output shape     parameters", ctx);
    snprintf(line, sizeof line, "%-11s %-16s %10d", "input", "(1, 28, 28)", 0);
    print_line(line, ctx);
    /* flat from the first flatten, dense or global average pooling on: a convolution's 1x1
     * output is still (channels, 1, 1) */
    int flat = 0;
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        char shape[32];
        flat |= layer->spec.kind == DG_LAYER_DENSE || layer->spec.kind == DG_LAYER_FLATTEN ||
                layer->spec.kind == DG_LAYER_GAP;
        if (flat)
            snprintf(shape, sizeof shape, "(%d)", layer->out_c);
        else
            snprintf(shape, sizeof shape, "(%d, %d, %d)", layer->out_c, layer->out_h,
                     layer->out_w);
        snprintf(line, sizeof line, "%-11s %-16s %10zu", layer->name, shape,
                 layer->weight_count + layer->bias_count + layer->stat_count);
        print_line(line, ctx);
    }
    snprintf(line, sizeof line, "total parameters: %zu", model->param_count);
    print_line(line, ctx);
}

size_t dg_model_max_activation(const struct dg_model *model)
{
    size_t best = DG_PIXELS;
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        size_t size = (size_t)layer->out_c * layer->out_h * layer->out_w;
        if (size > best)
            best = size;
    }
    return best;
}
