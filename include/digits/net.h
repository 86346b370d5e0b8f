/* A model instantiated on a backend: parameters, gradients, RMSprop accumulators and
 * per-layer activation buffers in the backend's memory, and forward / backward / update
 * over the layer table. Backend-agnostic: used by train, predict, eval, compare and bench.
 *
 * Buffers (backend memory, NCHW):
 *   act[0]           input (max_batch, 1, 28, 28)
 *   act[i + 1]       output of layer i (max_batch, out_c, out_h, out_w)
 *   dact[i]          dL/d act[i] (same shape; dact[0] is not computed, except as the scratch
 *                    gradient of a first batchnorm layer)
 *   probs, dlogits   (max_batch, 10)
 *   params, grads, rms_acc   param_count floats, same layout as dg_model.params
 *   labels           (max_batch) uint8, stats 3 doubles (loss sum, correct count, the trace
 *                    entries written)
 *   trace            2 doubles per training step (dg_net_trace_reserve): the running stats
 *                    after each step, read once per epoch instead of after every step */
#ifndef DIGITS_NET_H
#define DIGITS_NET_H

#include <stddef.h>
#include <stdint.h>

#include "digits/backend.h"
#include "digits/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The optimizer a net's update runs (dg_net_set_optimizer; RMSprop after dg_net_create, with
 * the rho and eps dg_net_update is given). */
enum dg_optimizer_kind { DG_OPTIMIZER_RMSPROP, DG_OPTIMIZER_ADAM, DG_OPTIMIZER_SGD };

struct dg_optimizer {
    int kind;                     /* enum dg_optimizer_kind */
    float beta1, beta2, adam_eps; /* Adam (src/math/adam.h): 0.9, 0.999, 1e-7 (Keras') */
    float momentum;               /* SGD (src/math/sgd.h): 0.9 */
    int nesterov;                 /* SGD: Nesterov momentum (0) */
};

/* The defaults of every optimizer's constants, kind set to `kind`. */
void dg_optimizer_default(struct dg_optimizer *opt, int kind);
/* "rmsprop", "adam", "sgd"; dg_optimizer_from_name returns 0 for any other name. */
const char *dg_optimizer_name(int kind);
int dg_optimizer_from_name(const char *name, int *kind);

/* Training mode draws dropout masks from (seed, dropout ordinal, epoch, step). */
struct dg_net_mode {
    int training;
    uint64_t seed;
    uint32_t epoch;
    uint32_t step;
};

struct dg_net {
    struct dg_backend *be;
    const struct dg_model *model;
    int max_batch;
    float *params;
    float *grads;
    float *rms_acc;
    float *act[DG_MAX_LAYERS + 1];
    float *dact[DG_MAX_LAYERS + 1];
    /* What the last forward/backward actually used: out[i] is the input of layer i (out[0] =
     * act[0]), out[layer_count] the logits. Flatten, and dropout outside training, pass their
     * input through, so out[i + 1] == out[i] there; dout[i] likewise for gradients, with
     * dout[layer_count] == dlogits. After backward, dout[i + 1] of a ReLU layer holds the
     * gradient with respect to its pre-activation (relu_bwd works in place). */
    float *out[DG_MAX_LAYERS + 1];
    float *dout[DG_MAX_LAYERS + 1];
    /* 1 when the backend runs activations in NHWC (its nhwc op): the tensors of layers with
     * more than one pixel are (batch, h, w, c) from the input to flatten (which transposes to
     * the NCHW order of the dense layers) or global average pooling; act[0] (one channel) and
     * the flat tensors are the same either way (dg_net_nhwc_at tells which are NHWC). */
    int nhwc;
    float *probs;
    float *dlogits;
    /* batchnorm layers: the training forward's batch mean and 1 / sqrt(var + eps) per channel
     * (2 x out_c), which the backward pass reads */
    float *bn_save[DG_MAX_LAYERS];
    uint8_t *labels;
    double *stats;
    double *trace;
    int trace_capacity; /* steps (0: no trace) */
    int trace_used;     /* steps traced since the stats were last reset or set */
    /* Graphs (backends with step mode, CUDA): the full-batch training step, captured once and
     * replayed (graph_key: what it was captured with); no_graphs runs every step eagerly. */
    int no_graphs;
    /* Label smoothing of the loss wherever labels are given (training and validation; 0, the
     * default: none), set by dg_train from its options. */
    float label_smoothing;
    /* The optimizer (dg_net_set_optimizer). Its state: rms_acc (RMSprop's accumulators, Adam's
     * first moments m, SGD's momentum buffer), opt_v (Adam's second moments v, param_count
     * floats) and opt_pow (Adam's beta1^t, beta2^t: 2 floats), both NULL for the others. */
    struct dg_optimizer optimizer;
    float *opt_v;
    float *opt_pow;
    /* The moving average of the weights (dg_net_set_ema; NULL: none): param_count floats,
     * ema = ema_decay ema + (1 - ema_decay) params after every update. dg_net_swap_ema
     * exchanges it with params (evaluation on the averaged weights). */
    float *ema;
    float ema_decay;
    void *graph;
    unsigned char graph_key[128];
    void *plans[DG_MAX_LAYERS]; /* conv plans for plan_batch images */
    int plan_batch;
    void *plans_alt[DG_MAX_LAYERS]; /* conv plans for the last other batch size */
    int plan_alt_batch;
    /* Optional observer (benchmarks): called with end = 0 before and end = 1 after the ops of
     * layer `layer` (layer_count: softmax-xent) in forward (backward = 0) or backward
     * (backward = 1), after out / dout of the layer are set; dg_net_train_step also calls it
     * around the batch assembly (layer -1) and the RMSprop update (layer layer_count + 1,
     * backward = 1). A status other than DG_OK stops the pass and is returned. */
    enum dg_status (*layer_hook)(void *ctx, int layer, int backward, int end);
    void *layer_hook_ctx;
    /* 1: every layer runs its own ops (digits compare, which checks and replaces each layer's
     * output and gradient). 0 (the default): where the backend has the fused op, a batchnorm
     * whose input is a ReLU's output takes the ReLU's backward into its own
     * (batchnorm_bwd_relu); the results are the same floats, but the batchnorm's gradient is
     * then already the one with respect to the ReLU's input when its hook is called. */
    int separate_ops;
};

enum dg_status dg_net_create(struct dg_backend *be, const struct dg_model *model, int max_batch,
                             struct dg_net **out);
void dg_net_free(struct dg_net *net);

/* Copies model->params to the backend (and zeroes the optimizer's state when reset_rms). */
/* 1 when the output (input: 0) or the input (1) of layer `layer`, and its gradient, are NHWC
 * in this net (struct dg_net's nhwc), 0 when they are NCHW or flat. */
int dg_net_nhwc_at(const struct dg_net *net, int layer, int input);

enum dg_status dg_net_upload_params(struct dg_net *net, const float *host_params, int reset_rms);
enum dg_status dg_net_download_params(struct dg_net *net, float *host_params);
/* The RMSprop accumulators (param_count floats), for checkpoints. */
enum dg_status dg_net_upload_rms(struct dg_net *net, const float *host_rms);
enum dg_status dg_net_download_rms(struct dg_net *net, float *host_rms);

/* Sets the optimizer of every later update (allocating Adam's state, zeroed, with t = 0; call
 * it before the first step, never inside one). */
enum dg_status dg_net_set_optimizer(struct dg_net *net, const struct dg_optimizer *opt);
/* Adam's second moments (param_count floats) and step count t, for checkpoints: the upload
 * sets beta1^t, beta2^t as dg_adam_powers computes them (the products the steps make). */
enum dg_status dg_net_upload_adam(struct dg_net *net, const float *host_v, uint64_t t);
enum dg_status dg_net_download_adam_v(struct dg_net *net, float *host_v);

/* Keeps a moving average of the weights from now on (0 < decay < 1), starting at host_init
 * (param_count floats: the weights at the start, or a checkpoint's average). */
enum dg_status dg_net_set_ema(struct dg_net *net, float decay, const float *host_init);
enum dg_status dg_net_download_ema(struct dg_net *net, float *host);
/* Exchanges the weights and their average (both in backend memory, nothing copied): called
 * twice around an evaluation, it runs that evaluation on the average. Never across a training
 * step (a captured step holds the pointers it was captured with). */
void dg_net_swap_ema(struct dg_net *net);

/* Forward of n <= max_batch images in act[0]; leaves logits in out[layer_count] and the
 * softmax in probs. When labels != NULL (backend memory, n entries) adds the loss sum and
 * correct count to stats, and in training mode also computes dlogits. */
enum dg_status dg_net_forward(struct dg_net *net, int n, const struct dg_net_mode *mode,
                              const uint8_t *labels);

/* Backward from dlogits through every layer: fills grads and dact. */
enum dg_status dg_net_backward(struct dg_net *net, int n, const struct dg_net_mode *mode);

/* The one training step every caller uses (train, bench, compare, tests): assemble rows
 * (augmented when augment != NULL) with their labels, forward (adding the batch's loss and
 * correct count to stats), backward, the optimizer step (dg_net_update). */
enum dg_status dg_net_train_step(struct dg_net *net, void *data_handle, const uint32_t *rows, int n,
                                 const struct dg_net_mode *mode,
                                 const struct dg_augment_key *augment, float lr, float rho,
                                 float eps);

/* The one inference pass: assemble rows (no augmentation), forward without dropout; with
 * labels the loss and correct count are added to stats. Probabilities in net->probs. */
enum dg_status dg_net_infer(struct dg_net *net, void *data_handle, const uint32_t *rows, int n,
                            int with_labels);

/* One optimizer step over all parameters: RMSprop with rho and eps, or the net's optimizer
 * (Adam, SGD) with its own constants. */
enum dg_status dg_net_update(struct dg_net *net, float lr, float rho, float eps);

/* Zeroes stats; sets them (a resumed partial epoch); reads them back (loss sum, correct
 * count). Reset and set also restart the trace. */
enum dg_status dg_net_stats_reset(struct dg_net *net);
enum dg_status dg_net_stats_set(struct dg_net *net, double loss_sum, double correct);
enum dg_status dg_net_stats_read(struct dg_net *net, double *loss_sum, double *correct);

/* Makes every training step record the running stats after it (the loss sum and correct count
 * so far) in the trace, for up to `steps` steps between resets of the stats; a step past that
 * is an error. steps = 0 turns the trace off. */
enum dg_status dg_net_trace_reserve(struct dg_net *net, int steps);
/* Entries first .. first + count - 1 (within trace_used): out[2k], out[2k + 1] = the loss sum
 * and correct count after step first + k since the stats were reset or set. One read. */
enum dg_status dg_net_trace_read(struct dg_net *net, int first, int count, double *out);

/* The convolution that conv layer `layer` runs on a batch of `batch` images. */
struct dg_conv_shape dg_layer_conv_shape(const struct dg_layer *layer, int batch);

/* The backend's description and, where the backend names its convolution algorithms, which
 * convolution of the model runs which: "cpu: 2 threads, AVX2+FMA, OpenBLAS ...; direct conv1,
 * Winograd conv2-4". */
void dg_backend_describe_for(struct dg_backend *be, const struct dg_model *model, int batch,
                             char *out, size_t size);
void dg_net_describe(const struct dg_net *net, char *out, size_t size);

#ifdef __cplusplus
}
#endif

#endif
