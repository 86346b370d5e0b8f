/* One table of op cases, in the manner of ggml's test-backend-ops: every shape the op suites
 * run, written once. tests/test_ops.c runs a case against the double reference on every CPU
 * family (DG_OP_VS_REF), tests/gpu_ops.c runs it on the CUDA backend, real or emulated,
 * against the CPU (DG_OP_VS_CPU); the other "where" tags name the suites' determinism,
 * algorithm and gradient checks.
 *
 * A case is either a shape written out (odd and edge sizes) or a layer of the reference
 * network (dg_arch_reference, built by dg_model_build: the model that dg_net runs and
 * `digits bench` times layer by layer), at a fixed batch or at "the network batch", which
 * the caller passes (the suites 86, the training batch; the bench --batch). So the
 * network's shapes have one definition: the layer table.
 *
 * Tensors NCHW; dense (batch, in) x (in, out). */
#ifndef DIGITS_NN_OP_CASES_H
#define DIGITS_NN_OP_CASES_H

#include <stddef.h>

#include "digits/backend.h"
#include "digits/model.h"

#ifdef __cplusplus
extern "C" {
#endif

enum dg_op_kind {
    DG_OP_CONV,         /* conv fwd (with and without ReLU), bwd-data, bwd-filter */
    DG_OP_MAXPOOL,      /* 2x2 max-pool fwd and bwd */
    DG_OP_DENSE,        /* dense fwd and bwd */
    DG_OP_SOFTMAX_XENT, /* softmax + cross-entropy over a batch of DG_CLASSES logits */
    DG_OP_DROPOUT,      /* dropout fwd and bwd over count elements */
    DG_OP_RELU_BWD,     /* ReLU backward over count elements */
    DG_OP_RMSPROP,      /* RMSprop over count parameters */
    DG_OP_ASSEMBLE,     /* batch assembly of batch images */
    DG_OP_BATCHNORM,    /* batch normalisation fwd (training, inference) and bwd */
    DG_OP_KIND_COUNT
};

/* Where a case runs (a query asks for all the bits it names) ... */
#define DG_OP_VS_REF (1u << 0)  /* test_ops: every CPU family against the double reference */
#define DG_OP_VS_CPU (1u << 1)  /* gpu_ops: the CUDA backend (FP32, deterministic, TF32) vs CPU */
#define DG_OP_THREADS (1u << 2) /* test_ops: bit-identical with 1, 2 and 3 threads */
#define DG_OP_RERUN (1u << 3)   /* gpu_ops: the deterministic backend's reruns bit-identical */
#define DG_OP_ALGO (1u << 4)    /* gpu_ops: the convolution algorithms chosen, by name */
#define DG_OP_GRAD (1u << 5)    /* test_ops: finite differences of the float fast path */
/* ... and what it is. */
#define DG_OP_NETWORK (1u << 8) /* a layer of the reference network at the network batch */
#define DG_OP_ODD (1u << 9)     /* an odd or edge size (vector tails, tiny, wider kernel) */
#define DG_OP_TIES (1u << 10)   /* max-pool: also on small integers, windows full of ties */
#define DG_OP_FULL (1u << 11)   /* left out of a reduced run (DIGITS_TEST_REDUCED: qemu) */

/* Dense layer shape; relu is the fused epilogue test_ops applies (gpu_ops runs both). */
struct dg_op_dense_shape {
    int batch, in, out, relu;
};

/* A case as the suites see it: the shape resolved for one network batch and one mode. */
struct dg_op_case {
    enum dg_op_kind kind;
    const char *name; /* short, unique within its kind */
    unsigned tags;
    const char *layer; /* the reference network's layer it is, or NULL */
    union {
        struct dg_conv_shape conv;      /* DG_OP_CONV */
        struct dg_pool_shape pool;      /* DG_OP_MAXPOOL */
        struct dg_op_dense_shape dense; /* DG_OP_DENSE */
        struct dg_bn_shape bn;          /* DG_OP_BATCHNORM */
        int batch;                      /* DG_OP_SOFTMAX_XENT, DG_OP_ASSEMBLE */
        size_t count;                   /* DG_OP_DROPOUT, DG_OP_RELU_BWD, DG_OP_RMSPROP */
    };
};

/* The network batch of the op suites (the training batch). */
#define DG_OP_TEST_BATCH 86

/* The most cases of one kind in the table. */
#define DG_OP_MAX_CASES 32

/* The cases of `kind` whose tags include every bit of `want`, in table order, into out
 * (capacity entries): layer cases resolved on the reference network, "the network batch"
 * being network_batch (> 0). With `reduced` (DIGITS_TEST_REDUCED), DG_OP_FULL cases are left
 * out and the others take their reduced batch (today: convolutions against the reference at
 * most 2 images, dense ones at most 7, the 29-image determinism case 5). Returns the count,
 * or -1 (dg_error set) when the reference network cannot be built or capacity is short. */
int dg_op_cases(enum dg_op_kind kind, unsigned want, int network_batch, int reduced,
                struct dg_op_case *out, int capacity);

/* The op of `kind` that layer `layer` of `model` runs on a batch of `batch` images: its conv,
 * pool or dense shape, a dropout layer's element count, the element count of a conv or dense
 * layer's ReLU output (DG_OP_RELU_BWD). DG_ERR_INPUT when the layer runs no such op. */
enum dg_status dg_op_layer_case(const struct dg_model *model, int layer, enum dg_op_kind kind,
                                int batch, struct dg_op_case *out);

/* "conv 86 x 32 -> 64, 14x14, k 3", "pool 7 x 64 x 14x14", "dense 86 x 3136 -> 256",
 * "batch 86", "n 1037". */
void dg_op_case_describe(const struct dg_op_case *c, char *text, size_t size);

#ifdef __cplusplus
}
#endif

#endif
