/* ONNX export without a protobuf library: the few messages needed (ModelProto, GraphProto,
 * NodeProto, AttributeProto, TensorProto, ValueInfoProto) are encoded by hand, varints and
 * length-delimited fields, field numbers from onnx/onnx.proto. Each layer of the table becomes
 * nodes (Conv [+ Relu], MaxPool, Flatten, Gemm [+ Relu]; Dropout is the identity at inference
 * and left out), then Softmax. Tensors: NCHW; the input (N, 1, 28, 28) float32 pixel / 255
 * with a symbolic batch "N"; initializers in PyTorch's layouts (src/io/export.h), raw_data
 * little-endian float32; dense layers as Gemm with transB = 1. An ensemble: each member's
 * subgraph on the same input, its names behind "members.M.", and a Mean node of their softmax
 * outputs (include/digits/io.h). */
#include "digits/io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/export.h"
#include "io/io_internal.h"
#include "io/json.h"

/* wire types */
#define WIRE_VARINT 0
#define WIRE_LEN 2
#define WIRE_FIXED32 5

/* onnx.proto field numbers */
#define MODEL_IR_VERSION 1
#define MODEL_PRODUCER_NAME 2
#define MODEL_PRODUCER_VERSION 3
#define MODEL_DOC_STRING 6
#define MODEL_GRAPH 7
#define MODEL_OPSET_IMPORT 8
#define MODEL_METADATA_PROPS 14
#define OPSET_DOMAIN 1
#define OPSET_VERSION 2
#define ENTRY_KEY 1
#define ENTRY_VALUE 2
#define GRAPH_NODE 1
#define GRAPH_NAME 2
#define GRAPH_INITIALIZER 5
#define GRAPH_INPUT 11
#define GRAPH_OUTPUT 12
#define NODE_INPUT 1
#define NODE_OUTPUT 2
#define NODE_NAME 3
#define NODE_OP_TYPE 4
#define NODE_ATTRIBUTE 5
#define ATTR_NAME 1
#define ATTR_F 2
#define ATTR_I 3
#define ATTR_INTS 8
#define ATTR_TYPE 20
#define ATTR_TYPE_FLOAT 1
#define ATTR_TYPE_INT 2
#define ATTR_TYPE_INTS 7
#define TENSOR_DIMS 1
#define TENSOR_DATA_TYPE 2
#define TENSOR_NAME 8
#define TENSOR_RAW_DATA 9
#define TENSOR_FLOAT 1
#define VALUE_NAME 1
#define VALUE_TYPE 2
#define TYPE_TENSOR 1
#define TYPE_TENSOR_ELEM_TYPE 1
#define TYPE_TENSOR_SHAPE 2
#define SHAPE_DIM 1
#define DIM_VALUE 1
#define DIM_PARAM 2

/* A message being built; `failed` sticks after the first allocation failure. */
struct pb {
    struct buffer b;
    int failed;
};

static void pb_raw(struct pb *m, const void *data, size_t n)
{
    if (!m->failed && buffer_put(&m->b, data, n))
        m->failed = 1;
}

static void pb_varint(struct pb *m, uint64_t v)
{
    unsigned char bytes[10];
    size_t n = 0;
    do {
        bytes[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            bytes[n] |= 0x80;
        n++;
    } while (v);
    pb_raw(m, bytes, n);
}

static void pb_tag(struct pb *m, int field, int wire)
{
    pb_varint(m, (uint64_t)field << 3 | (uint64_t)wire);
}

/* int64 / int32 / enum fields: negative values are ten-byte two's complement varints */
static void pb_int(struct pb *m, int field, int64_t v)
{
    pb_tag(m, field, WIRE_VARINT);
    pb_varint(m, (uint64_t)v);
}

static void pb_bytes(struct pb *m, int field, const void *data, size_t n)
{
    pb_tag(m, field, WIRE_LEN);
    pb_varint(m, n);
    pb_raw(m, data, n);
}

static void pb_string(struct pb *m, int field, const char *s)
{
    pb_bytes(m, field, s, strlen(s));
}

static void pb_float(struct pb *m, int field, float f)
{
    pb_tag(m, field, WIRE_FIXED32);
    if (!m->failed && put_f32(&m->b, f))
        m->failed = 1;
}

/* Appends `sub` as field `field` of m and frees it. */
static void pb_message(struct pb *m, int field, struct pb *sub)
{
    if (sub->failed)
        m->failed = 1;
    pb_bytes(m, field, sub->b.data, sub->b.size);
    free(sub->b.data);
    memset(sub, 0, sizeof *sub);
}

static void pb_string_entry(struct pb *m, int field, const char *key, const char *value)
{
    struct pb entry = {{NULL, 0, 0}, 0};
    pb_string(&entry, ENTRY_KEY, key);
    pb_string(&entry, ENTRY_VALUE, value);
    pb_message(m, field, &entry);
}

static void attr_int(struct pb *node, const char *name, int64_t v)
{
    struct pb a = {{NULL, 0, 0}, 0};
    pb_string(&a, ATTR_NAME, name);
    pb_int(&a, ATTR_TYPE, ATTR_TYPE_INT);
    pb_int(&a, ATTR_I, v);
    pb_message(node, NODE_ATTRIBUTE, &a);
}

static void attr_float(struct pb *node, const char *name, float v)
{
    struct pb a = {{NULL, 0, 0}, 0};
    pb_string(&a, ATTR_NAME, name);
    pb_int(&a, ATTR_TYPE, ATTR_TYPE_FLOAT);
    pb_float(&a, ATTR_F, v);
    pb_message(node, NODE_ATTRIBUTE, &a);
}

static void attr_ints(struct pb *node, const char *name, const int64_t *v, int n)
{
    struct pb a = {{NULL, 0, 0}, 0};
    pb_string(&a, ATTR_NAME, name);
    pb_int(&a, ATTR_TYPE, ATTR_TYPE_INTS);
    for (int i = 0; i < n; i++) /* proto2 repeated int64: one field per value */
        pb_int(&a, ATTR_INTS, v[i]);
    pb_message(node, NODE_ATTRIBUTE, &a);
}

/* A node with up to three inputs (NULL ends the list early) and one output; the attributes
 * are added by the caller, then node_finish appends it to the graph. */
static void node_start_n(struct pb *node, const char *op_type, const char *name,
                         const char *const *inputs, int count, const char *out)
{
    memset(node, 0, sizeof *node);
    for (int i = 0; i < count && inputs[i]; i++)
        pb_string(node, NODE_INPUT, inputs[i]);
    pb_string(node, NODE_OUTPUT, out);
    pb_string(node, NODE_NAME, name);
    pb_string(node, NODE_OP_TYPE, op_type);
}

static void node_start(struct pb *node, const char *op_type, const char *name, const char *in1,
                       const char *in2, const char *in3, const char *out)
{
    const char *inputs[3] = {in1, in2, in3};
    node_start_n(node, op_type, name, inputs, 3, out);
}

static void node_finish(struct pb *graph, struct pb *node)
{
    pb_message(graph, GRAPH_NODE, node);
}

static void simple_node(struct pb *graph, const char *op_type, const char *name, const char *in,
                        const char *out)
{
    struct pb node;
    node_start(&node, op_type, name, in, NULL, NULL, out);
    node_finish(graph, &node);
}

static void initializer(struct pb *graph, const struct dg_model *model,
                        const struct dg_export_tensor *t)
{
    struct pb tensor = {{NULL, 0, 0}, 0};
    for (int d = 0; d < t->rank; d++)
        pb_int(&tensor, TENSOR_DIMS, t->shape[d]);
    pb_int(&tensor, TENSOR_DATA_TYPE, TENSOR_FLOAT);
    pb_string(&tensor, TENSOR_NAME, t->name);
    pb_tag(&tensor, TENSOR_RAW_DATA, WIRE_LEN);
    pb_varint(&tensor, (uint64_t)t->count * 4);
    for (size_t i = 0; i < t->count && !tensor.failed; i++)
        if (put_f32(&tensor.b, model->params[dg_export_index(t, i)]))
            tensor.failed = 1;
    pb_message(graph, GRAPH_INITIALIZER, &tensor);
}

/* A float tensor's ValueInfoProto; dims[i] < 0 is the symbolic batch "N". */
static void value_info(struct pb *graph, int field, const char *name, const int64_t *dims, int rank)
{
    struct pb shape = {{NULL, 0, 0}, 0}, tensor_type = {{NULL, 0, 0}, 0};
    struct pb type = {{NULL, 0, 0}, 0}, value = {{NULL, 0, 0}, 0};
    for (int d = 0; d < rank; d++) {
        struct pb dim = {{NULL, 0, 0}, 0};
        if (dims[d] < 0)
            pb_string(&dim, DIM_PARAM, "N");
        else
            pb_int(&dim, DIM_VALUE, dims[d]);
        pb_message(&shape, SHAPE_DIM, &dim);
    }
    pb_int(&tensor_type, TYPE_TENSOR_ELEM_TYPE, TENSOR_FLOAT);
    pb_message(&tensor_type, TYPE_TENSOR_SHAPE, &shape);
    pb_message(&type, TYPE_TENSOR, &tensor_type);
    pb_string(&value, VALUE_NAME, name);
    pb_message(&value, VALUE_TYPE, &type);
    pb_message(graph, field, &value);
}

/* One network's nodes: named after the layers behind `prefix` ("" for one model, "members.M."
 * for member M of an ensemble), each value named after the node that makes it; the softmax
 * node is prefix + "softmax", its output `output`. */
static enum dg_status member_nodes(struct pb *graph, const struct dg_model *model,
                                   const struct dg_export_tensor *tensors, const char *prefix,
                                   const char *output)
{
    char current[64] = DG_ONNX_INPUT, next[64], relu_name[64], name[64];
    int t = 0;
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        const struct dg_layer_spec *spec = &layer->spec;
        struct pb node;
        snprintf(name, sizeof name, "%s%s", prefix, layer->name);
        snprintf(next, sizeof next, "%s", name);
        switch (spec->kind) {
        case DG_LAYER_CONV: {
            int64_t k[2] = {spec->kernel, spec->kernel}, one[2] = {1, 1};
            int64_t stride = spec->stride == 2 ? 2 : 1, strides[2] = {stride, stride};
            int64_t pad = spec->valid ? 0 : spec->kernel / 2, pads[4] = {pad, pad, pad, pad};
            node_start(&node, "Conv", name, current, tensors[t].name, tensors[t + 1].name, next);
            attr_ints(&node, "kernel_shape", k, 2);
            attr_ints(&node, "pads", pads, 4);
            attr_ints(&node, "strides", strides, 2);
            attr_ints(&node, "dilations", one, 2);
            attr_int(&node, "group", 1);
            node_finish(graph, &node);
            t += 2;
            break;
        }
        case DG_LAYER_MAXPOOL: {
            int64_t two[2] = {2, 2};
            node_start(&node, "MaxPool", name, current, NULL, NULL, next);
            attr_ints(&node, "kernel_shape", two, 2);
            attr_ints(&node, "strides", two, 2);
            node_finish(graph, &node);
            break;
        }
        case DG_LAYER_BATCHNORM: {
            /* inference: the running statistics (X, scale, B, mean, var) */
            const char *inputs[5] = {current, tensors[t].name, tensors[t + 1].name,
                                     tensors[t + 2].name, tensors[t + 3].name};
            node_start_n(&node, "BatchNormalization", name, inputs, 5, next);
            attr_float(&node, "epsilon", (float)DG_BN_EPSILON);
            attr_float(&node, "momentum", (float)DG_BN_MOMENTUM);
            node_finish(graph, &node);
            t += 5; /* and num_batches_tracked, which inference does not read */
            break;
        }
        case DG_LAYER_GAP: {
            /* GlobalAveragePool gives (N, C, 1, 1); Digits' layer is flat: (N, C) */
            char pooled[80];
            snprintf(pooled, sizeof pooled, "%s_pool", name);
            simple_node(graph, "GlobalAveragePool", pooled, current, pooled);
            node_start(&node, "Flatten", name, pooled, NULL, NULL, next);
            attr_int(&node, "axis", 1);
            node_finish(graph, &node);
            break;
        }
        case DG_LAYER_DROPOUT:
            continue; /* the identity at inference */
        case DG_LAYER_FLATTEN:
            /* (N, C, H, W) -> (N, C*H*W), index c*h*w + y*w + x: Digits' flatten */
            node_start(&node, "Flatten", name, current, NULL, NULL, next);
            attr_int(&node, "axis", 1);
            node_finish(graph, &node);
            break;
        case DG_LAYER_DENSE:
            /* y = x B^T + C with B the (out, in) weight */
            node_start(&node, "Gemm", name, current, tensors[t].name, tensors[t + 1].name, next);
            attr_float(&node, "alpha", 1.0f);
            attr_float(&node, "beta", 1.0f);
            attr_int(&node, "transA", 0);
            attr_int(&node, "transB", 1);
            node_finish(graph, &node);
            t += 2;
            break;
        default:
            return dg_error(DG_ERR_INPUT, "onnx export: layer %s of unknown kind %d", layer->name,
                            (int)spec->kind);
        }
        snprintf(current, sizeof current, "%s", next);
        if ((spec->kind == DG_LAYER_CONV || spec->kind == DG_LAYER_DENSE) && spec->relu) {
            snprintf(relu_name, sizeof relu_name, "%s%s_relu", prefix, layer->name);
            simple_node(graph, "Relu", relu_name, current, relu_name);
            snprintf(current, sizeof current, "%s", relu_name);
        }
    }
    struct pb softmax;
    snprintf(name, sizeof name, "%ssoftmax", prefix);
    node_start(&softmax, "Softmax", name, current, NULL, NULL, output);
    attr_int(&softmax, "axis", 1);
    node_finish(graph, &softmax);
    return DG_OK;
}

/* The graph of members[0..count): one model as it always was; several as their subgraphs on
 * the same input, then Mean of their probabilities (in member order). */
static enum dg_status build_graph(struct pb *graph, const struct dg_model *members, int count)
{
    struct dg_export_tensor tensors[DG_EXPORT_MAX_TENSORS];
    int tensor_count;
    char prefix[24] = "", output[64] = DG_ONNX_OUTPUT;
    for (int m = 0; m < count; m++) {
        if (count > 1) {
            snprintf(prefix, sizeof prefix, "%s%d.", DG_EXPORT_MEMBER_PREFIX, m);
            snprintf(output, sizeof output, "%s%s", prefix, DG_ONNX_OUTPUT);
        }
        dg_export_member_tensors(&members[m], count > 1 ? m : -1, tensors, &tensor_count);
        enum dg_status status = member_nodes(graph, &members[m], tensors, prefix, output);
        if (status != DG_OK)
            return status;
    }
    if (count > 1) {
        /* Mean: variadic inputs, one output */
        struct pb mean = {{NULL, 0, 0}, 0};
        for (int m = 0; m < count; m++) {
            snprintf(output, sizeof output, "%s%d.%s", DG_EXPORT_MEMBER_PREFIX, m, DG_ONNX_OUTPUT);
            pb_string(&mean, NODE_INPUT, output);
        }
        pb_string(&mean, NODE_OUTPUT, DG_ONNX_OUTPUT);
        pb_string(&mean, NODE_NAME, "mean");
        pb_string(&mean, NODE_OP_TYPE, "Mean");
        node_finish(graph, &mean);
    }

    pb_string(graph, GRAPH_NAME, "digits");
    for (int m = 0; m < count; m++) {
        dg_export_member_tensors(&members[m], count > 1 ? m : -1, tensors, &tensor_count);
        for (int i = 0; i < tensor_count; i++)
            if (!tensors[i].is_counter)
                initializer(graph, &members[m], &tensors[i]);
    }
    const struct dg_model *model = &members[0];
    int64_t input_dims[4] = {-1, model->layers[0].in_c, model->layers[0].in_h,
                             model->layers[0].in_w};
    int64_t output_dims[2] = {-1, model->layers[model->layer_count - 1].out_c};
    value_info(graph, GRAPH_INPUT, DG_ONNX_INPUT, input_dims, 4);
    value_info(graph, GRAPH_OUTPUT, DG_ONNX_OUTPUT, output_dims, 2);
    return DG_OK;
}

enum dg_status dg_export_onnx(const char *path, const struct dg_model *model, const char *settings)
{
    return dg_export_onnx_ensemble(path, model, 1, settings);
}

enum dg_status dg_export_onnx_ensemble(const char *path, const struct dg_model *members, int count,
                                       const char *settings)
{
    enum dg_status checked = dg_io_check_members(path, members, count);
    if (checked != DG_OK)
        return checked;
    const struct dg_model *model = &members[0];
    struct pb graph = {{NULL, 0, 0}, 0}, file = {{NULL, 0, 0}, 0}, opset = {{NULL, 0, 0}, 0};
    enum dg_status status = build_graph(&graph, members, count);
    if (status != DG_OK) {
        free(graph.b.data);
        return dg_error_prefix(status, "%s", path);
    }
    int arch_len = dg_export_architecture(model, NULL, 0);
    char *arch = malloc((size_t)arch_len + 1);
    if (arch)
        dg_export_architecture(model, arch, (size_t)arch_len + 1);

    pb_int(&file, MODEL_IR_VERSION, DG_ONNX_IR_VERSION);
    pb_string(&file, MODEL_PRODUCER_NAME, "digits");
    pb_string(&file, MODEL_PRODUCER_VERSION, DIGITS_VERSION);
    if (count == 1) {
        pb_string(&file, MODEL_DOC_STRING,
                  "Digits MNIST network. Input " DG_ONNX_INPUT " (N, 1, 28, 28) float32: pixel / "
                  "255 (0 background, 1 ink), NCHW. Output " DG_ONNX_OUTPUT
                  " (N, 10): the softmax probabilities of the digits 0-9.");
    } else {
        char doc[512];
        snprintf(doc, sizeof doc,
                 "Digits MNIST ensemble of %d networks (nodes and initializers of member M "
                 "named members.M.*). Input " DG_ONNX_INPUT " (N, 1, 28, 28) float32: pixel / "
                 "255 (0 background, 1 ink), NCHW. Output " DG_ONNX_OUTPUT
                 " (N, 10): the mean of the members' softmax probabilities of the digits 0-9.",
                 count);
        pb_string(&file, MODEL_DOC_STRING, doc);
    }
    pb_message(&file, MODEL_GRAPH, &graph);
    pb_string(&opset, OPSET_DOMAIN, "");
    pb_int(&opset, OPSET_VERSION, DG_ONNX_OPSET);
    pb_message(&file, MODEL_OPSET_IMPORT, &opset);
    pb_string_entry(&file, MODEL_METADATA_PROPS, "digits.architecture", arch ? arch : "");
    char net[DG_NET_SPEC_MAX + 1];
    dg_export_net_spec(model, net, sizeof net);
    if (net[0])
        pb_string_entry(&file, MODEL_METADATA_PROPS, DG_EXPORT_NET_KEY, net);
    if (count > 1) {
        char text[16];
        snprintf(text, sizeof text, "%d", count);
        pb_string_entry(&file, MODEL_METADATA_PROPS, DG_EXPORT_MEMBERS_KEY, text);
    }
    /* protobuf strings are UTF-8 */
    char *clean_settings = settings && settings[0] ? dg_json_utf8_clean(settings) : NULL;
    if (clean_settings)
        pb_string_entry(&file, MODEL_METADATA_PROPS, "digits.settings", clean_settings);
    if (file.failed || !arch || (settings && settings[0] && !clean_settings)) {
        free(file.b.data);
        free(arch);
        free(clean_settings);
        return dg_error(DG_ERR_NOMEM, "%s: out of memory while writing the ONNX model", path);
    }
    free(arch);
    free(clean_settings);
    status = dg_io_write_atomic(path, file.b.data, file.b.size);
    free(file.b.data);
    return status;
}
