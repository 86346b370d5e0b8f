/* The model's parameters as PyTorch-named tensors (conv weights (out, in, k, k) as Digits
 * keeps them, dense weights transposed from Digits' (in, out) to PyTorch's (out, in)), and
 * the architecture in PyTorch's words; shared by the ONNX and safetensors writers. */
#include "io/export.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "digits/io.h"

void dg_export_tensors(const struct dg_model *model, struct dg_export_tensor *tensors, int *count)
{
    dg_export_member_tensors(model, -1, tensors, count);
}

void dg_export_member_tensors(const struct dg_model *model, int member,
                              struct dg_export_tensor *tensors, int *count)
{
    char prefix[24] = "";
    if (member >= 0)
        snprintf(prefix, sizeof prefix, "%s%d.", DG_EXPORT_MEMBER_PREFIX, member);
    int n = 0;
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        if (layer->weight_count == 0)
            continue;
        struct dg_export_tensor *w = &tensors[n++], *b = &tensors[n++];
        w->is_counter = b->is_counter = 0;
        snprintf(w->name, sizeof w->name, "%s%s.weight", prefix, layer->name);
        snprintf(b->name, sizeof b->name, "%s%s.bias", prefix, layer->name);
        w->layer = b->layer = i;
        w->is_bias = 0;
        b->is_bias = 1;
        b->transposed = 0;
        b->rank = 1;
        b->shape[0] = layer->out_c;
        b->count = layer->bias_count;
        b->offset = layer->bias_offset;
        w->count = layer->weight_count;
        w->offset = layer->weight_offset;
        if (layer->spec.kind == DG_LAYER_BATCHNORM) {
            w->transposed = 0;
            w->rank = 1;
            w->shape[0] = layer->out_c;
            static const char *const stats[2] = {"running_mean", "running_var"};
            for (int k = 0; k < 2; k++) {
                struct dg_export_tensor *r = &tensors[n++];
                *r = *b;
                snprintf(r->name, sizeof r->name, "%s%s.%s", prefix, layer->name, stats[k]);
                r->is_bias = 0;
                r->offset = layer->stat_offset + (size_t)k * layer->out_c;
                r->count = (size_t)layer->out_c;
            }
            /* PyTorch's step counter, which its momentum=None (cumulative) mode reads and the
             * exponential mode Digits runs does not: written 0 */
            struct dg_export_tensor *counter = &tensors[n++];
            memset(counter, 0, sizeof *counter);
            snprintf(counter->name, sizeof counter->name, "%s%s.num_batches_tracked", prefix,
                     layer->name);
            counter->layer = i;
            counter->is_counter = 1;
        } else if (layer->spec.kind == DG_LAYER_CONV) {
            w->transposed = 0;
            w->rank = 4;
            w->shape[0] = layer->out_c;
            w->shape[1] = layer->in_c;
            w->shape[2] = w->shape[3] = layer->spec.kernel;
        } else {
            /* dense: in = the flattened input, c*h*w */
            w->transposed = 1;
            w->rank = 2;
            w->shape[0] = layer->out_c;
            w->shape[1] = (int64_t)layer->in_c * layer->in_h * layer->in_w;
        }
    }
    *count = n;
}

enum dg_status dg_io_check_finite(const char *path, const char *what, const struct dg_model *model,
                                  int member, const float *values)
{
    size_t bad = 0;
    while (bad < model->param_count && isfinite(values[bad]))
        bad++;
    if (bad == model->param_count)
        return DG_OK;
    const char *value = isnan(values[bad]) ? "NaN" : values[bad] > 0 ? "+Inf" : "-Inf";
    struct dg_export_tensor tensors[DG_EXPORT_MAX_TENSORS];
    int count;
    dg_export_member_tensors(model, member, tensors, &count);
    for (int t = 0; t < count; t++) {
        const struct dg_export_tensor *tensor = &tensors[t];
        if (bad < tensor->offset || bad - tensor->offset >= tensor->count)
            continue;
        size_t at = bad - tensor->offset;
        if (tensor->transposed) {
            /* Digits' (in, out) element (j, o) is exported (out, in) element (o, j) */
            size_t out = (size_t)tensor->shape[0], in = (size_t)tensor->shape[1];
            at = (at % out) * in + at / out;
        }
        return dg_error(DG_ERR_INPUT, "%s: non-finite value in the %s: %s[%zu] is %s", path, what,
                        tensor->name, at, value);
    }
    return dg_error(DG_ERR_INPUT, "%s: non-finite value in the %s: parameter %zu is %s", path, what,
                    bad, value);
}

int dg_export_architecture(const struct dg_model *model, char *text, size_t size)
{
    size_t used = 0;
    int total = 0;
#define SAY(...)                                                                                   \
    do {                                                                                           \
        int n_ = used < size ? snprintf(text + used, size - used, __VA_ARGS__)                     \
                             : snprintf(NULL, 0, __VA_ARGS__);                                     \
        total += n_;                                                                               \
        used = (size_t)total;                                                                      \
    } while (0)
    if (size)
        text[0] = '\0';
    SAY("input (N, 1, 28, 28) float32 = pixel / 255, NCHW");
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        const struct dg_layer_spec *spec = &layer->spec;
        switch (spec->kind) {
        case DG_LAYER_CONV:
            SAY("; %s Conv2d(%d, %d, kernel_size=%d, %spadding=%d)", layer->name, layer->in_c,
                layer->out_c, spec->kernel, spec->stride == 2 ? "stride=2, " : "",
                spec->valid ? 0 : spec->kernel / 2);
            break;
        case DG_LAYER_BATCHNORM:
            SAY("; %s BatchNorm%dd(%d, eps=%g, momentum=%g)", layer->name,
                layer->out_h == 1 && layer->out_w == 1 && layer->in_h == 1 ? 1 : 2, layer->out_c,
                DG_BN_EPSILON, 1.0 - DG_BN_MOMENTUM);
            break;
        case DG_LAYER_MAXPOOL:
            SAY("; %s MaxPool2d(2)", layer->name);
            break;
        case DG_LAYER_DROPOUT:
            SAY("; %s Dropout(%g)", layer->name, (double)spec->rate);
            break;
        case DG_LAYER_FLATTEN:
            SAY("; %s Flatten(1)", layer->name);
            break;
        case DG_LAYER_GAP:
            SAY("; %s AdaptiveAvgPool2d(1) Flatten(1)", layer->name);
            break;
        case DG_LAYER_DENSE:
            SAY("; %s Linear(%d, %d)", layer->name, layer->in_c * layer->in_h * layer->in_w,
                layer->out_c);
            break;
        }
        if ((spec->kind == DG_LAYER_CONV || spec->kind == DG_LAYER_DENSE) && spec->relu)
            SAY(" ReLU");
    }
    SAY("; Softmax(dim=1)");
#undef SAY
    return total;
}

void dg_export_net_spec(const struct dg_model *model, char *text, size_t size)
{
    dg_model_net_spec(model, text, size);
    if (size && strcmp(text, dg_net_preset("reference")) == 0)
        text[0] = '\0';
}
