/* The model's parameters as PyTorch-named tensors (conv weights (out, in, k, k) as Digits
 * keeps them, dense weights transposed from Digits' (in, out) to PyTorch's (out, in)), and
 * the architecture in PyTorch's words; shared by the ONNX and safetensors writers. */
#include "io/export.h"

#include <stdio.h>

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
        if (layer->spec.kind == DG_LAYER_CONV) {
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

int dg_export_architecture(const struct dg_model *model, char *text, size_t size)
{
    size_t used = 0;
    int total = 0;
#define SAY(...)                                                                                   \
    do {                                                                                           \
        int n_ = snprintf(text + used, used < size ? size - used : 0, __VA_ARGS__);                \
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
            SAY("; %s Conv2d(%d, %d, kernel_size=%d, padding=%d)", layer->name, layer->in_c,
                layer->out_c, spec->kernel, spec->kernel / 2);
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
