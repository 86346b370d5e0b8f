/* The table of op cases (op_cases.h): each shape the op suites run, once, with where it runs
 * and what it is. A layer case names a layer of the reference network and a batch (0: the
 * network batch the caller passes); its shape comes from the layer table (dg_model_build),
 * as dg_net's and therefore the bench's do. The order within a kind is the order each suite
 * runs (and seeds) its cases. */
#include "nn/op_cases.h"

#include "digits/data.h"
#include "digits/net.h"

#include <stdio.h>
#include <string.h>

struct entry {
    enum dg_op_kind kind;
    const char *name;
    unsigned tags;
    const char *layer; /* a layer case: the layer's shape at `batch` */
    int batch;         /* a layer case's batch; 0: the network batch */
    int reduced_batch; /* the batch of a reduced run; 0: the same */
    union {            /* a written-out case */
        struct dg_conv_shape conv;
        struct dg_pool_shape pool;
        struct dg_op_dense_shape dense;
        struct dg_bn_shape bn;
        int images; /* softmax, assembly (0 with DG_OP_NETWORK: the network batch) */
        size_t count;
    } shape;
};

#define REF DG_OP_VS_REF
#define CPU DG_OP_VS_CPU
#define ODD DG_OP_ODD
#define TIES DG_OP_TIES
#define FULL DG_OP_FULL

/* Layer `lay` of the reference network at the network batch. */
#define NET(k, lay, t, red)                                                                        \
    {                                                                                              \
        .kind = k, .name = lay, .tags = (t) | DG_OP_NETWORK, .layer = lay, .reduced_batch = red    \
    }
/* Layer `lay` at a fixed batch. */
#define AT(k, nm, lay, b, t, red)                                                                  \
    {                                                                                              \
        .kind = k, .name = nm, .tags = t, .layer = lay, .batch = b, .reduced_batch = red           \
    }
#define CONV(nm, t, red, ...)                                                                      \
    {                                                                                              \
        .kind = DG_OP_CONV, .name = nm, .tags = t, .reduced_batch = red, .shape.conv = {           \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    }
#define BN(nm, t, ...)                                                                             \
    {                                                                                              \
        .kind = DG_OP_BATCHNORM, .name = nm, .tags = t, .shape.bn = { __VA_ARGS__ }                \
    }
#define POOL(nm, t, ...)                                                                           \
    {                                                                                              \
        .kind = DG_OP_MAXPOOL, .name = nm, .tags = t, .shape.pool = { __VA_ARGS__ }                \
    }
#define DENSE(nm, t, red, ...)                                                                     \
    {                                                                                              \
        .kind = DG_OP_DENSE, .name = nm, .tags = t, .reduced_batch = red, .shape.dense = {         \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    }
#define IMAGES(k, nm, t, n)                                                                        \
    {                                                                                              \
        .kind = k, .name = nm, .tags = t, .shape.images = n                                        \
    }
#define COUNT(k, nm, t, n)                                                                         \
    {                                                                                              \
        .kind = k, .name = nm, .tags = t, .shape.count = n                                         \
    }

/* Reduced runs (qemu) keep convolutions against the reference at 2 images at most and dense
 * ones at 7: the reduced batch is written where it differs. */
static const struct entry table[] = {
    /* ---- convolution ---- */
    AT(DG_OP_CONV, "conv1 x1", "conv1", 1, REF | CPU, 0),
    AT(DG_OP_CONV, "conv1 x3", "conv1", 3, REF | CPU, 2),
    AT(DG_OP_CONV, "conv2 x7", "conv2", 7, REF | CPU, 2),
    NET(DG_OP_CONV, "conv2", REF | DG_OP_RERUN | DG_OP_ALGO, 2),
    NET(DG_OP_CONV, "conv3", REF | CPU | DG_OP_ALGO, 2),
    AT(DG_OP_CONV, "conv4 x3", "conv4", 3, REF | CPU, 2),
    NET(DG_OP_CONV, "conv1", REF | DG_OP_ALGO, 2),
    AT(DG_OP_CONV, "conv4 x1", "conv4", 1, REF, 0),
    CONV("32 + 16 outputs, short rows", REF | CPU | ODD, 0, 2, 16, 48, 9, 11, 3, 1, 0),
    CONV("1x1, channels off the vector width", REF | CPU | ODD, 2, 3, 3, 5, 6, 7, 1, 1, 0),
    CONV("3 -> 7 channels, 13x11", REF | CPU | ODD, 2, 5, 3, 7, 13, 11, 3, 1, 0),
    CONV("kernel wider than the image", REF | CPU | ODD, 0, 1, 2, 16, 4, 4, 7, 1, 0),
    CONV("kernel wider than the image, 2 images", REF | CPU | ODD, 0, 2, 2, 16, 4, 4, 7, 1, 0),
    CONV("rows of 14 + 14 + 3 pixels", REF | CPU | ODD, 0, 1, 5, 16, 30, 31, 3, 1, 0),
    NET(DG_OP_CONV, "conv4", DG_OP_ALGO, 0),
    AT(DG_OP_CONV, "conv4 x7", "conv4", 7, DG_OP_ALGO, 0),
    AT(DG_OP_CONV, "conv3 x29", "conv3", 29, DG_OP_THREADS, 5),
    AT(DG_OP_CONV, "conv2 x3", "conv2", 3, DG_OP_THREADS, 0),
    CONV("threads 32C5S2, 29 images", DG_OP_THREADS | ODD, 5, 29, 32, 32, 12, 12, 5, 2, 0),
    CONV("threads 64C3V, 29 images", DG_OP_THREADS | ODD, 5, 29, 32, 64, 10, 10, 3, 1, 1),
    CONV("grad 4 -> 16, 8x9", DG_OP_GRAD | ODD, 0, 2, 4, 16, 8, 9, 3, 1, 0),
    CONV("grad 3 -> 32, 6x5, k 5", DG_OP_GRAD | ODD, 0, 2, 3, 32, 6, 5, 5, 1, 0),
    CONV("grad 16 -> 3, 7x7", DG_OP_GRAD | ODD, 0, 1, 16, 3, 7, 7, 3, 1, 0),
    /* strided and "valid" convolutions (on the CPU: Winograd, direct, four phases or im2col, as
     * their channels and sizes allow): the deotte preset's layers and odd sizes around them */
    CONV("32C3V, 28x28", REF | CPU | ODD, 2, 3, 1, 32, 28, 28, 3, 1, 1),
    CONV("32C5S2, 24x24", REF | CPU | ODD, 2, 3, 32, 32, 24, 24, 5, 2, 0),
    CONV("64C5S2, 8x8", REF | CPU | ODD, 2, 5, 64, 64, 8, 8, 5, 2, 0),
    CONV("stride 2, odd 13x11, k 3", REF | CPU | ODD, 0, 2, 3, 7, 13, 11, 3, 2, 0),
    CONV("valid stride 2, 9x12, k 5", REF | CPU | ODD, 0, 2, 4, 5, 9, 12, 5, 2, 1),
    CONV("valid, kernel as wide as the image", REF | CPU | ODD, 0, 2, 3, 4, 5, 5, 5, 1, 1),
    CONV("valid 1x1 stride 2", REF | CPU | ODD, 0, 2, 3, 4, 7, 6, 1, 2, 1),
    CONV("64C3V, 10x10 (Winograd)", REF | CPU | ODD, 2, 3, 32, 64, 10, 10, 3, 1, 1),
    CONV("32C3V, 26x26 (Winograd)", REF | CPU | ODD, 0, 2, 32, 32, 26, 26, 3, 1, 1),
    CONV("32 -> 32 valid 5x5, 11x9 (Winograd)", REF | CPU | ODD, 0, 3, 32, 32, 11, 9, 5, 1, 1),
    CONV("64C3V, 6x6: one tile (direct), bwd data Winograd", REF | CPU | ODD, 2, 3, 32, 64, 6, 6,
         3, 1, 1),
    CONV("16 -> 32 valid 5x5, 9x17 (direct)", REF | CPU | ODD, 0, 2, 16, 32, 9, 17, 5, 1, 1),
    CONV("3 -> 16 stride 2, 13x10, k 3 (phases)", REF | CPU | ODD, 0, 2, 3, 16, 13, 10, 3, 2, 0),
    CONV("8 -> 32 valid stride 2, 11x12, k 5 (phases)", REF | CPU | ODD, 0, 2, 8, 32, 11, 12, 5, 2,
         1),
    CONV("16 -> 16 stride 2, 7x7, k 7 (phases)", REF | CPU | ODD, 0, 1, 16, 16, 7, 7, 7, 2, 0),
    CONV("grad stride 2, 3 -> 8, 9x8, k 5", DG_OP_GRAD | ODD, 0, 2, 3, 8, 9, 8, 5, 2, 0),
    CONV("grad valid, 4 -> 6, 8x7, k 3", DG_OP_GRAD | ODD, 0, 2, 4, 6, 8, 7, 3, 1, 1),
    CONV("grad valid stride 2, 2 -> 5, 9x9", DG_OP_GRAD | ODD, 0, 2, 2, 5, 9, 9, 3, 2, 1),
    CONV("grad valid direct, 16 -> 16, 7x8", DG_OP_GRAD | ODD, 0, 2, 16, 16, 7, 8, 3, 1, 1),
    CONV("grad valid Winograd, 16 -> 32, 9x7", DG_OP_GRAD | ODD, 0, 2, 16, 32, 9, 7, 3, 1, 1),
    CONV("grad stride 2 phases, 4 -> 16, 9x8, k 5", DG_OP_GRAD | ODD, 0, 2, 4, 16, 9, 8, 5, 2, 0),

    /* ---- max-pool (every case also with ties on the CUDA backend) ---- */
    POOL("1 x 1 x 4x4", REF | CPU | ODD | TIES, 1, 1, 4, 4),
    POOL("odd 7x7", REF | CPU | ODD | TIES, 3, 5, 7, 7),
    AT(DG_OP_MAXPOOL, "pool1 x3", "pool1", 3, REF | TIES, 0),
    AT(DG_OP_MAXPOOL, "pool2 x7", "pool2", 7, REF | CPU | TIES, 0),
    NET(DG_OP_MAXPOOL, "pool1", REF | CPU | TIES, 0),
    POOL("odd 13x9", REF | CPU | ODD | TIES, 2, 3, 13, 9),
    POOL("one window", REF | CPU | ODD | TIES, 1, 1, 2, 2),
    POOL("odd 7x9", REF | CPU | ODD | TIES, 2, 3, 7, 9),
    POOL("one row: no output", REF | ODD | TIES, 1, 2, 1, 5),
    POOL("rows of a vector and a part", REF | CPU | ODD | TIES, 1, 2, 6, 40),
    POOL("rows of two vectors and a part", REF | CPU | ODD | TIES, 2, 1, 4, 67),

    /* ---- dense ---- */
    AT(DG_OP_DENSE, "dense1 x1", "dense1", 1, REF | DG_OP_THREADS, 0),
    DENSE("3 x 5 -> 7", REF | CPU | ODD, 0, 3, 5, 7, 0),
    AT(DG_OP_DENSE, "dense2 x7", "dense2", 7, REF, 0),
    AT(DG_OP_DENSE, "dense1 x37", "dense1", 37, CPU, 0),
    NET(DG_OP_DENSE, "dense1", REF | CPU, 7),
    NET(DG_OP_DENSE, "dense2", REF | CPU, 7),
    DENSE("1 -> 1", REF | CPU | ODD, 0, 2, 1, 1, 1),
    DENSE("13 x 40 -> 33", REF | CPU | ODD, 7, 13, 40, 33, 0),
    DENSE("129 -> 7", REF | CPU | ODD, 0, 1, 129, 7, 0),
    DENSE("7 -> 300", REF | CPU | ODD, 0, 5, 7, 300, 0),
    AT(DG_OP_DENSE, "dense1 x2", "dense1", 2, DG_OP_THREADS, 0),
    AT(DG_OP_DENSE, "dense1 x5", "dense1", 5, DG_OP_THREADS, 0),
    AT(DG_OP_DENSE, "dense1 x33", "dense1", 33, DG_OP_THREADS | FULL, 0),
    AT(DG_OP_DENSE, "dense1, threads", "dense1", 0, DG_OP_THREADS | DG_OP_NETWORK | FULL, 0),

    /* ---- batch normalisation (batch, channels, spatial) ---- */
    BN("2 x 3 x 25", REF | CPU | ODD, 2, 3, 25),
    BN("1 image, 4 x 7", REF | CPU | ODD, 1, 4, 7),
    BN("5 x 128 units", REF | CPU | ODD, 5, 128, 1),
    BN("86 x 32 x 24x24", REF | CPU, 86, 32, 576),
    BN("86 x 64 x 4x4", REF | CPU, 86, 64, 16),
    BN("86 x 128 units", REF | CPU, 86, 128, 1),
    BN("3 x 17 x 1037", REF | CPU | ODD, 3, 17, 1037),
    BN("grad 3 x 4 x 6", DG_OP_GRAD | ODD, 3, 4, 6),
    BN("grad 7 x 5 units", DG_OP_GRAD | ODD, 7, 5, 1),
    BN("grad 2 x 3 x 17", DG_OP_GRAD | ODD, 2, 3, 17),
    BN("threads 86 x 32 x 144", DG_OP_THREADS, 86, 32, 144),

    /* ---- softmax + cross-entropy ---- */
    IMAGES(DG_OP_SOFTMAX_XENT, "1 image", REF | CPU | ODD, 1),
    IMAGES(DG_OP_SOFTMAX_XENT, "3 images", REF | CPU | ODD, 3),
    IMAGES(DG_OP_SOFTMAX_XENT, "7 images", REF | CPU | ODD, 7),
    IMAGES(DG_OP_SOFTMAX_XENT, "37 images", REF | CPU | ODD, 37),
    NET(DG_OP_SOFTMAX_XENT, "dense2", REF | CPU, 0),
    IMAGES(DG_OP_SOFTMAX_XENT, "300 images", REF | CPU, 300),

    /* ---- dropout ---- */
    COUNT(DG_OP_DROPOUT, "1", REF | CPU | ODD, 1),
    COUNT(DG_OP_DROPOUT, "5", REF | CPU | ODD, 5),
    COUNT(DG_OP_DROPOUT, "1003", REF | CPU | ODD, 1003),
    COUNT(DG_OP_DROPOUT, "1037", REF | CPU | ODD, 1037),
    COUNT(DG_OP_DROPOUT, "dropout1 x86 + 3", REF | ODD, (size_t)86 * 6272 + 3),
    NET(DG_OP_DROPOUT, "dropout2", CPU, 0),

    /* ---- ReLU backward ---- */
    COUNT(DG_OP_RELU_BWD, "1", CPU | ODD, 1),
    COUNT(DG_OP_RELU_BWD, "1037", CPU | ODD, 1037),
    NET(DG_OP_RELU_BWD, "conv2", CPU, 0),
    COUNT(DG_OP_RELU_BWD, "dropout1 x86 + 5", REF | ODD, (size_t)86 * 6272 + 5),

    /* ---- RMSprop ---- */
    COUNT(DG_OP_RMSPROP, "100003", REF | ODD, 100003),
    COUNT(DG_OP_RMSPROP, "10007", CPU | ODD, 10007),

    /* ---- batch assembly (gpu_ops queues its batches back to back, in this order) ---- */
    IMAGES(DG_OP_ASSEMBLE, "1 image", REF | CPU | ODD, 1),
    IMAGES(DG_OP_ASSEMBLE, "3 images", REF | CPU | ODD, 3),
    IMAGES(DG_OP_ASSEMBLE, "7 images", REF | CPU | ODD, 7),
    IMAGES(DG_OP_ASSEMBLE, "network batch", REF | CPU | DG_OP_NETWORK, 0),
    IMAGES(DG_OP_ASSEMBLE, "13 images", REF | CPU | ODD, 13),
    IMAGES(DG_OP_ASSEMBLE, "network batch again (a reused staging slot)", CPU | DG_OP_NETWORK, 0),
};

static int layer_index(const struct dg_model *model, const char *name)
{
    for (int l = 0; l < model->layer_count; l++)
        if (strcmp(model->layers[l].name, name) == 0)
            return l;
    return -1;
}

enum dg_status dg_op_layer_case(const struct dg_model *model, int layer, enum dg_op_kind kind,
                                int batch, struct dg_op_case *out)
{
    memset(out, 0, sizeof *out);
    if (layer < 0 || layer >= model->layer_count || batch <= 0)
        return dg_error(DG_ERR_INPUT, "op cases: no layer %d or batch %d", layer, batch);
    const struct dg_layer *l = &model->layers[layer];
    out->kind = kind;
    out->name = l->name;
    out->layer = l->name;
    enum dg_layer_kind lk = l->spec.kind;
    size_t in_count = (size_t)batch * l->in_c * l->in_h * l->in_w;
    switch (kind) {
    case DG_OP_CONV:
        if (lk != DG_LAYER_CONV)
            break;
        out->conv = dg_layer_conv_shape(l, batch);
        return DG_OK;
    case DG_OP_BATCHNORM:
        if (lk != DG_LAYER_BATCHNORM)
            break;
        out->bn = (struct dg_bn_shape){batch, l->out_c, l->out_h * l->out_w, 0};
        return DG_OK;
    case DG_OP_MAXPOOL:
        if (lk != DG_LAYER_MAXPOOL)
            break;
        out->pool = (struct dg_pool_shape){batch, l->in_c, l->in_h, l->in_w, 0};
        return DG_OK;
    case DG_OP_DENSE:
        if (lk != DG_LAYER_DENSE)
            break;
        out->dense =
            (struct dg_op_dense_shape){batch, l->in_c * l->in_h * l->in_w, l->out_c, l->spec.relu};
        return DG_OK;
    case DG_OP_DROPOUT:
        if (lk != DG_LAYER_DROPOUT)
            break;
        out->count = in_count;
        return DG_OK;
    case DG_OP_RELU_BWD:
        if ((lk != DG_LAYER_CONV && lk != DG_LAYER_DENSE) || !l->spec.relu)
            break;
        out->count = (size_t)batch * l->out_c * (lk == DG_LAYER_CONV ? l->out_h * l->out_w : 1);
        return DG_OK;
    case DG_OP_SOFTMAX_XENT:
        if (layer != model->layer_count - 1 || lk != DG_LAYER_DENSE || l->out_c != DG_CLASSES)
            break;
        out->batch = batch;
        return DG_OK;
    default:
        break;
    }
    return dg_error(DG_ERR_INPUT, "op cases: layer %s runs no op of kind %d", l->name, (int)kind);
}

/* The batch field every kind with images has, or NULL (element counts). */
static int *batch_of(struct dg_op_case *c)
{
    switch (c->kind) {
    case DG_OP_CONV:
        return &c->conv.batch;
    case DG_OP_MAXPOOL:
        return &c->pool.batch;
    case DG_OP_DENSE:
        return &c->dense.batch;
    case DG_OP_BATCHNORM:
        return &c->bn.batch;
    case DG_OP_SOFTMAX_XENT:
    case DG_OP_ASSEMBLE:
        return &c->batch;
    default:
        return NULL;
    }
}

int dg_op_cases(enum dg_op_kind kind, unsigned want, int network_batch, int reduced,
                struct dg_op_case *out, int capacity)
{
    if (network_batch <= 0) {
        dg_error(DG_ERR_INPUT, "op cases: network batch %d", network_batch);
        return -1;
    }
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    struct dg_model model;
    if (dg_model_build(&model, specs, count) != DG_OK)
        return -1;
    int n = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const struct entry *e = &table[i];
        if (e->kind != kind || (e->tags & want) != want || (reduced && (e->tags & FULL)))
            continue;
        if (n == capacity) {
            dg_error(DG_ERR_INPUT, "op cases: more than %d cases of kind %d", capacity, (int)kind);
            n = -1;
            break;
        }
        struct dg_op_case *c = &out[n];
        int batch = e->batch > 0 ? e->batch : network_batch;
        if (e->layer) {
            if (dg_op_layer_case(&model, layer_index(&model, e->layer), kind, batch, c) != DG_OK) {
                n = -1;
                break;
            }
        } else {
            memset(c, 0, sizeof *c);
            c->kind = kind;
            switch (kind) {
            case DG_OP_CONV:
                c->conv = e->shape.conv;
                break;
            case DG_OP_MAXPOOL:
                c->pool = e->shape.pool;
                break;
            case DG_OP_DENSE:
                c->dense = e->shape.dense;
                break;
            case DG_OP_BATCHNORM:
                c->bn = e->shape.bn;
                break;
            case DG_OP_SOFTMAX_XENT:
            case DG_OP_ASSEMBLE:
                c->batch = e->shape.images > 0 ? e->shape.images : network_batch;
                break;
            default:
                c->count = e->shape.count;
                break;
            }
        }
        c->name = e->name; /* static, unlike the names in the model freed below */
        c->layer = e->layer;
        c->tags = e->tags;
        int *b = batch_of(c);
        if (reduced && e->reduced_batch > 0 && b)
            *b = e->reduced_batch;
        n++;
    }
    dg_model_free(&model);
    return n;
}

void dg_op_case_describe(const struct dg_op_case *c, char *text, size_t size)
{
    switch (c->kind) {
    case DG_OP_CONV:
        snprintf(text, size, "conv %d x %d -> %d, %dx%d, k %d%s%s", c->conv.batch,
                 c->conv.in_channels, c->conv.out_channels, c->conv.height, c->conv.width,
                 c->conv.kernel, dg_conv_stride(&c->conv) == 2 ? ", stride 2" : "",
                 c->conv.valid ? ", valid" : "");
        break;
    case DG_OP_BATCHNORM:
        snprintf(text, size, "batchnorm %d x %d x %d", c->bn.batch, c->bn.channels,
                 c->bn.spatial);
        break;
    case DG_OP_MAXPOOL:
        snprintf(text, size, "pool %d x %d x %dx%d", c->pool.batch, c->pool.channels,
                 c->pool.height, c->pool.width);
        break;
    case DG_OP_DENSE:
        snprintf(text, size, "dense %d x %d -> %d", c->dense.batch, c->dense.in, c->dense.out);
        break;
    case DG_OP_SOFTMAX_XENT:
    case DG_OP_ASSEMBLE:
        snprintf(text, size, "batch %d", c->batch);
        break;
    default:
        snprintf(text, size, "n %zu", c->count);
        break;
    }
}
