/* The op-level backend interface: one training loop, two implementations (CPU, CUDA).
 * All tensors are float32 NCHW (batch, channels, height, width), row-major, in the
 * backend's memory (host for CPU, device for CUDA). Backend state (plans, cuDNN descriptors,
 * chosen algorithms, workspaces) hides behind `void *`.
 *
 * Shapes used here:
 *   conv weights  (out_channels, in_channels, kernel, kernel), bias (out_channels);
 *                 zero padding kernel/2 each side ("same") or none ("valid"), stride 1 or 2:
 *                 output side (side + 2 pad - kernel) / stride + 1 (dg_conv_out_height).
 *   max-pool      2x2 window, stride 2; output (height/2, width/2), floor.
 *   dense weights (in, out) row-major so that y = x W + b; bias (out).
 * Every op overwrites its outputs (gradients are not accumulated across calls), except
 * softmax_xent's `stats`, which is a running sum. */
#ifndef DIGITS_BACKEND_H
#define DIGITS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "digits/data.h"
#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct dg_backend;

struct dg_conv_shape {
    int batch;
    int in_channels;
    int out_channels;
    int height; /* input height and width */
    int width;
    int kernel; /* odd */
    int stride; /* 1 or 2; 0 is read as 1 */
    int valid;  /* 0: "same" padding (kernel / 2 each side), 1: no padding */
    int nhwc;   /* 0: x, y and their gradients are NCHW; 1: NHWC (batch, height, width,
                   channels), on backends whose nhwc op says so (dg_backend_ops.nhwc) */
};

static inline int dg_conv_stride(const struct dg_conv_shape *s)
{
    return s->stride > 1 ? s->stride : 1;
}

static inline int dg_conv_pad(const struct dg_conv_shape *s)
{
    return s->valid ? 0 : s->kernel / 2;
}

static inline int dg_conv_out_height(const struct dg_conv_shape *s)
{
    return (s->height + 2 * dg_conv_pad(s) - s->kernel) / dg_conv_stride(s) + 1;
}

static inline int dg_conv_out_width(const struct dg_conv_shape *s)
{
    return (s->width + 2 * dg_conv_pad(s) - s->kernel) / dg_conv_stride(s) + 1;
}

/* 1 when the kernel fits the padded input (so every output side is at least 1). */
static inline int dg_conv_fits(const struct dg_conv_shape *s)
{
    return s->height + 2 * dg_conv_pad(s) >= s->kernel &&
           s->width + 2 * dg_conv_pad(s) >= s->kernel;
}

/* The shape of the plain "same", stride-1 convolution, which every fast CPU kernel serves. */
static inline int dg_conv_is_same_stride1(const struct dg_conv_shape *s)
{
    return dg_conv_stride(s) == 1 && !s->valid;
}

/* Batch normalisation of (batch, channels, spatial) tensors: statistics per channel over the
 * batch and the `spatial` (= height * width, 1 after a dense layer) positions. */
struct dg_bn_shape {
    int batch;
    int channels;
    int spatial;
    int nhwc; /* 1: the tensors are (batch, spatial, channels), as struct dg_conv_shape's */
};

struct dg_pool_shape {
    int batch;
    int channels;
    int height; /* input height; output is height / 2 */
    int width;
    int nhwc; /* 1: NHWC tensors, as struct dg_conv_shape's */
};

/* Which dropout mask: layer is the dropout layer's ordinal (0, 1, 2). */
struct dg_dropout_key {
    uint64_t seed;
    uint32_t layer;
    uint32_t epoch;
    uint32_t step;
    /* NHWC tensors (channels > 0, on backends whose nhwc op says so): the element at flat
     * index (b * spatial + p) * channels + c takes the mask of its NCHW index
     * (b * channels + c) * spatial + p, so both layouts drop the same values; 0: the flat
     * index is the element index */
    int channels, spatial;
};

/* Which augmentation draws, and their ranges (rotation in degrees, shift as a fraction of the
 * side, zoom as the half-width of the range around 1). */
struct dg_augment_key {
    uint64_t seed;
    uint32_t epoch;
    uint32_t step;
    float rotation_deg;
    float shift;
    float zoom;
};

/* The values of one training step that change from step to step (step mode, below). */
struct dg_step_values {
    uint32_t epoch;
    uint32_t step;
    float lr;
};

/* What a backend has issued, for `digits bench` and the suites (step mode, below). */
struct dg_backend_counters {
    long launches;       /* work issued to the device one call at a time: kernels, library
                            calls, copies and memsets, graph launches (captured work excluded) */
    long graph_launches; /* of those, graph launches */
    long captured;       /* work recorded into graphs */
    long host_syncs;     /* host waits for the device's results: stream and event
                            synchronisations, copies that wait */
    long queue_waits;    /* waits because the host ran DG_CUDA_STEP_RING steps ahead of the
                            device (back-pressure, not a round trip) */
};

/* ---- the vtable ---- */

struct dg_backend_ops {
    void (*destroy)(struct dg_backend *be);

    /* memory: alloc returns zeroed memory of the backend */
    enum dg_status (*alloc)(struct dg_backend *be, size_t bytes, void **ptr);
    void (*free)(struct dg_backend *be, void *ptr);
    enum dg_status (*upload)(struct dg_backend *be, void *dst, const void *src, size_t bytes);
    enum dg_status (*download)(struct dg_backend *be, void *dst, const void *src, size_t bytes);
    enum dg_status (*sync)(struct dg_backend *be);

    /* data: a host image store made visible to the backend (uploaded when it fits) */
    enum dg_status (*dataset_attach)(struct dg_backend *be, const struct dg_dataset *dataset,
                                     void **handle);
    void (*dataset_detach)(struct dg_backend *be, void *handle);
    /* x (n, 1, 28, 28) <- images rows[0..n) / 255, warped when `augment` is not NULL (image i
     * of the batch uses the draws of index i); labels (n) <- their labels (if the dataset has
     * labels and `labels` is not NULL). `rows` is a host array. */
    enum dg_status (*batch_assemble)(struct dg_backend *be, void *handle, const uint32_t *rows,
                                     int n, const struct dg_augment_key *augment, float *x,
                                     uint8_t *labels);

    /* convolution */
    enum dg_status (*conv_plan_create)(struct dg_backend *be, const struct dg_conv_shape *shape,
                                       void **plan);
    void (*conv_plan_free)(struct dg_backend *be, void *plan);
    /* Optional (NULL when the backend has nothing to say): the algorithm a plan of this shape
     * runs, e.g. "Winograd" or "direct (bwd-filter im2col+sgemm)", into out; with_bwd_data = 0
     * leaves out the backward-data pass (the first layer never runs it). CUDA names cuDNN's
     * algorithms ("IMPLICIT_PRECOMP_GEMM (bwd-data ALGO_1, bwd-filter ALGO_1)") and runs the
     * algorithm search for a shape it has not seen, whose plans then reuse that choice. */
    void (*conv_algo_name)(struct dg_backend *be, const struct dg_conv_shape *shape,
                           int with_bwd_data, char *out, size_t size);
    /* y = conv(x, w) + bias, then ReLU when relu != 0 */
    enum dg_status (*conv_fwd)(struct dg_backend *be, void *plan, const float *x, const float *w,
                               const float *bias, float *y, int relu);
    enum dg_status (*conv_bwd_data)(struct dg_backend *be, void *plan, const float *dy,
                                    const float *w, float *dx);
    /* dw = dL/dw, db = dL/dbias (sum of dy over batch, height, width) */
    enum dg_status (*conv_bwd_filter)(struct dg_backend *be, void *plan, const float *x,
                                      const float *dy, float *dw, float *db);

    /* Batch normalisation, training mode: per channel c the batch mean m and the biased
     * variance v over batch x spatial values; y = gamma (x - m) / sqrt(v + eps) + beta;
     * running_mean = momentum running_mean + (1 - momentum) m, running_var likewise with
     * the unbiased variance v M / (M - 1) (M = batch x spatial, as cuDNN and PyTorch);
     * save_mean = m, save_invstd = 1 / sqrt(v + eps) for the backward pass. */
    enum dg_status (*batchnorm_fwd_train)(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          float *running_mean, float *running_var,
                                          double momentum, double eps, float *y,
                                          float *save_mean, float *save_invstd);
    /* Inference mode: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta. */
    enum dg_status (*batchnorm_fwd_infer)(struct dg_backend *be, const struct dg_bn_shape *shape,
                                          const float *x, const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var,
                                          double eps, float *y);
    /* The training-mode gradient with the forward's save_mean / save_invstd: with
     * xhat = (x - m) invstd, dbeta = sum dy, dgamma = sum dy xhat and
     * dx = gamma invstd (dy - dbeta / M - xhat dgamma / M). */
    enum dg_status (*batchnorm_bwd)(struct dg_backend *be, const struct dg_bn_shape *shape,
                                    const float *x, const float *dy, const float *gamma,
                                    const float *save_mean, const float *save_invstd, float *dx,
                                    float *dgamma, float *dbeta);
    /* Optional (NULL: batchnorm_bwd, then relu_bwd): batchnorm_bwd where x is the output of a
     * ReLU, dx the gradient of that ReLU's input: exactly the floats of batchnorm_bwd followed
     * by relu_bwd(y = x) on dx, in one pass. */
    enum dg_status (*batchnorm_bwd_relu)(struct dg_backend *be, const struct dg_bn_shape *shape,
                                         const float *x, const float *dy, const float *gamma,
                                         const float *save_mean, const float *save_invstd,
                                         float *dx, float *dgamma, float *dbeta);

    /* dy *= (y > 0), in place: the ReLU backward given the ReLU output y */
    enum dg_status (*relu_bwd)(struct dg_backend *be, size_t n, const float *y, float *dy);

    /* Global average pooling over `rows` (batch x channels) planes of `spatial` values, NCHW:
     * y[r] = the mean of x[r*spatial ..] (src/math/gap.h: summed in order in double, rounded
     * once); backward dx[r*spatial + s] = dy[r] / spatial. */
    enum dg_status (*gap_fwd)(struct dg_backend *be, size_t rows, int spatial, const float *x,
                              float *y);
    enum dg_status (*gap_bwd)(struct dg_backend *be, size_t rows, int spatial, const float *dy,
                              float *dx);

    /* Optional (NULL: NCHW only). 1 when the backend runs activations in NHWC: dg_net then
     * gives its conv, batchnorm and pool ops NHWC shapes (the nhwc fields), its dropout ops
     * NHWC keys, and uses the three ops below; every result is the same as in NCHW, bit for
     * bit, only the order of the elements in memory differs. */
    int (*nhwc)(struct dg_backend *be);
    /* y (batch, b, a) = x (batch, a, b), each image's matrix transposed: NHWC (a = spatial,
     * b = channels) to NCHW, the flatten of an NHWC tensor, and back for its gradient */
    enum dg_status (*transpose)(struct dg_backend *be, int batch, int a, int b, const float *x,
                                float *y);
    /* gap_fwd and gap_bwd of NHWC (batch, spatial, channels) tensors: y (batch, channels),
     * the same values */
    enum dg_status (*gap_nhwc_fwd)(struct dg_backend *be, int batch, int channels, int spatial,
                                   const float *x, float *y);
    enum dg_status (*gap_nhwc_bwd)(struct dg_backend *be, int batch, int channels, int spatial,
                                   const float *dy, float *dx);

    /* max-pool; backward routes each dy to the first maximum of its window (row-major) */
    enum dg_status (*maxpool_fwd)(struct dg_backend *be, const struct dg_pool_shape *shape,
                                  const float *x, float *y);
    enum dg_status (*maxpool_bwd)(struct dg_backend *be, const struct dg_pool_shape *shape,
                                  const float *x, const float *y, const float *dy, float *dx);

    /* inverted dropout with Philox masks (src/math/dropout.h); element index = flat index */
    enum dg_status (*dropout_fwd)(struct dg_backend *be, size_t n, float rate,
                                  const struct dg_dropout_key *key, const float *x, float *y);
    enum dg_status (*dropout_bwd)(struct dg_backend *be, size_t n, float rate,
                                  const struct dg_dropout_key *key, const float *dy, float *dx);

    /* dense: y (batch, out) = x (batch, in) w (in, out) + b, then ReLU when relu != 0 */
    enum dg_status (*dense_fwd)(struct dg_backend *be, int batch, int in, int out, const float *x,
                                const float *w, const float *b, float *y, int relu);
    /* dx (may be NULL) = dy w^T; dw = x^T dy; db = column sums of dy */
    enum dg_status (*dense_bwd)(struct dg_backend *be, int batch, int in, int out, const float *x,
                                const float *w, const float *dy, float *dx, float *dw, float *db);
    /* Optional (NULL when the dense ops need nothing beforehand): makes whatever scratch the
     * dense ops of up to (batch, in, out) need now, so that a step captured later allocates
     * nothing (CUDA --math bf16: the bf16 copies of the operands). dg_net_create calls it for
     * every dense layer; without it the ops make their scratch at their first call. */
    enum dg_status (*dense_reserve)(struct dg_backend *be, int batch, int in, int out);

    /* softmax of logits (batch, 10) into probs; when labels != NULL also the gradient of the
     * batch-mean cross-entropy into dlogits (may be NULL) and stats[0] += sum of losses,
     * stats[1] += number of rows whose first argmax equals the label (stats: 2 doubles). With
     * trace (may be NULL; stats then 3 doubles): trace[2k], trace[2k + 1] = the new stats[0],
     * stats[1] for k = stats[2], then stats[2] += 1 — the running statistics after every
     * training step, read once per epoch instead of after each step. smoothing (0 <= s < 1):
     * label smoothing of the loss and its gradient (src/math/softmax_xent.h), 0 for none. */
    enum dg_status (*softmax_xent)(struct dg_backend *be, int batch, const float *logits,
                                   const uint8_t *labels, float smoothing, float *probs,
                                   float *dlogits, double *stats, double *trace);

    /* RMSprop over n parameters (src/math/rmsprop.h) */
    enum dg_status (*rmsprop)(struct dg_backend *be, size_t n, float *w, const float *g, float *acc,
                              float lr, float rho, float eps);
    /* Adam over n parameters (src/math/adam.h): m, v its moments (n each); pow (2 floats)
     * beta1^t, beta2^t of the steps taken, first multiplied by beta1, beta2 (this step's t),
     * then the update divides by the bias corrections 1 - pow[0], 1 - pow[1]. Starting state:
     * m = v = 0, pow = {1, 1}. In step mode lr is the step's, as for rmsprop. */
    enum dg_status (*adam)(struct dg_backend *be, size_t n, float *w, const float *g, float *m,
                           float *v, float *pow, float lr, float beta1, float beta2, float eps);
    /* SGD with momentum over n parameters (src/math/sgd.h): b the momentum buffer (n). */
    enum dg_status (*sgd)(struct dg_backend *be, size_t n, float *w, const float *g, float *b,
                          float lr, float momentum, int nesterov);
    /* The moving average of the weights over n parameters (src/math/ema.h): shadow = decay
     * shadow + (1 - decay) w, elementwise, bit-identical on every backend. */
    enum dg_status (*ema)(struct dg_backend *be, size_t n, float *shadow, const float *w,
                          float decay);

    /* Optional (NULL when the backend has no device memory of its own, as the CPU): free and
     * total bytes of the backend's device, as the driver counts them (every process). */
    enum dg_status (*device_memory)(struct dg_backend *be, size_t *free_bytes, size_t *total_bytes);

    /* ---- Optional: step mode and graphs (NULL where every op runs as it is called: the
     * CPU). dg_net_train_step uses them; docs/DEVELOPING.md "Graphs". ---- */

    /* The step's values (epoch, step, learning rate) and its batch rows (host, n) uploaded to
     * where the step's ops read them on the device: dropout and augmentation take their epoch
     * and step, RMSprop its learning rate, batch assembly its rows from there (the keys,
     * learning rate and rows passed to those ops until step_end must equal these). Runs
     * asynchronously. *capturable = 1 when the step can be captured (the dataset is resident on
     * the device). */
    enum dg_status (*step_begin)(struct dg_backend *be, void *data_handle,
                                 const struct dg_step_values *values, const uint32_t *rows, int n,
                                 int *capturable);
    void (*step_end)(struct dg_backend *be);
    /* Between capture_begin and capture_end the ops are recorded into a graph, not run (no
     * allocation, host read or synchronisation may happen there). capture_end with discard = 0
     * returns the graph, else throws the capture away (*graph NULL). */
    enum dg_status (*capture_begin)(struct dg_backend *be);
    enum dg_status (*capture_end)(struct dg_backend *be, int discard, void **graph);
    /* Runs a captured graph with the values of the current step_begin. *stale = 1, nothing
     * run, when memory it captured has moved since (the convolution workspace grew, another
     * dataset is attached): capture again. */
    enum dg_status (*graph_launch)(struct dg_backend *be, void *graph, int *stale);
    void (*graph_free)(struct dg_backend *be, void *graph);
    void (*counters)(struct dg_backend *be, struct dg_backend_counters *out);

    /* Optional (NULL where the host clock times the work: the CPU runs every op as it is
     * called): time measured by the device. timer_start marks the device's queue (a CUDA
     * event on the compute stream); timer_stop marks it again, waits for that mark (one host
     * sync, counted) and returns the seconds the device took between the two marks. Refused
     * inside a capture; timer_stop without a timer_start is DG_ERR_RUNTIME. */
    enum dg_status (*timer_start)(struct dg_backend *be);
    enum dg_status (*timer_stop)(struct dg_backend *be, double *seconds);
};

struct dg_backend {
    const struct dg_backend_ops *ops;
    void *impl;
    /* host memory for image stores: malloc on the CPU, pinned (cudaHostAlloc) on CUDA */
    struct dg_allocator host_allocator;
    char name[16];         /* "cpu", "cuda" */
    char description[256]; /* e.g. "cpu: 2 threads, OpenBLAS 0.3.21" */
};

/* ---- constructors ---- */

/* threads <= 0: all cores. */
enum dg_status dg_backend_cpu_create(int threads, struct dg_backend **out);

/* The arithmetic of convolutions and dense layers (`--math`). */
enum dg_math {
    DG_MATH_FP32, /* float32 throughout (CUDA: CUDNN_FMA_MATH, no TF32 anywhere) */
    DG_MATH_TF32, /* CUDA: tensor-op math allowed (opt-in, training speed); the CPU ignores it */
    DG_MATH_BF16, /* convolution and dense operands rounded to bf16, float32 accumulation:
                     CPU (src/cpu/bf16.h) on a CPU with bf16 units (dg_backend_cpu_set_math);
                     CUDA through cuDNN's bf16 convolutions (bf16 results) and cublasGemmEx */
};

/* "fp32", "tf32", "bf16": the `--math` spelling (and the model file's `math=`). */
const char *dg_math_name(enum dg_math math);
/* 1 and *math set when `name` is one of those spellings, else 0. */
int dg_math_from_name(const char *name, enum dg_math *math);

/* The math of a CPU backend's convolutions and dense layers, for plans created afterwards:
 * DG_MATH_FP32 (the default) or DG_MATH_BF16. bf16 needs a bf16 unit this build uses
 * (AVX512-BF16, with the kernels at AVX-512: DIGITS_CPU_ISA below it holds it back); without
 * one it is DG_ERR_USAGE with a message naming what is missing. DG_MATH_TF32 is DG_ERR_USAGE
 * (a CUDA mode). DG_ERR_RUNTIME when `be` is not a CPU backend. */
enum dg_status dg_backend_cpu_set_math(struct dg_backend *be, enum dg_math math);

struct dg_cuda_options {
    int device; /* CUDA device ordinal */
    enum dg_math math;
    int deterministic;           /* deterministic algorithms: bit-identical reruns */
    size_t dataset_budget_bytes; /* upload the store when it fits (default 1 GiB) */
};

/* DG_ERR_DEVICE with the reason when CUDA is not built in or no device is usable. */
enum dg_status dg_backend_cuda_create(const struct dg_cuda_options *options,
                                      struct dg_backend **out);

/* 1 when this build has the CUDA backend. */
int dg_cuda_built(void);

/* 1 when the CUDA backend runs on the emulated device (tests/emu: the digits-emulated
 * executable and the gpu_*_emulated suites), a test fixture: `--device auto` and `bench
 * --device all` never pick it; `--device cuda` names it. */
int dg_cuda_emulated(void);

/* 1 when an NVIDIA driver is loaded (whether or not a device is usable): where `--device auto`
 * falling back to the CPU is worth a word. 0 in a build without CUDA. */
int dg_cuda_driver_present(void);

/* Why CUDA is unusable right now ("" when a device is usable); for --device auto. */
enum dg_status dg_cuda_probe(char *reason, size_t reason_size);

/* Writes a human-readable description of the CUDA runtime, cuDNN, cuBLAS and each device
 * to `out` (for `digits info`). */
void dg_cuda_describe(void (*print_line)(const char *line, void *ctx), void *ctx);

void dg_backend_destroy(struct dg_backend *be);

/* ---- opening a backend by name (the CLI's and the benchmark's --device) ---- */

struct dg_backend_spec {
    const char *device; /* "auto" (or NULL), "cpu", "cuda", "cuda:N" */
    int threads;        /* CPU threads, 0 = all cores */
    enum dg_math math;
    int deterministic;
    size_t dataset_budget_bytes;
};

/* 1 when `device` is a name dg_backend_open takes (NULL counts as "auto"). */
int dg_backend_name_valid(const char *device);

/* Opens the backend spec->device names. "auto" opens CUDA when a device is usable (never the
 * emulated one), otherwise the CPU, with why in `fallback` (fallback_size bytes; "" when CUDA
 * was opened or the name was not "auto"; NULL when not wanted). A name that is not valid is
 * DG_ERR_USAGE; an explicit "cuda" that cannot open is DG_ERR_DEVICE with the reason. */
enum dg_status dg_backend_open(const struct dg_backend_spec *spec, char *fallback,
                               size_t fallback_size, struct dg_backend **out);

#ifdef __cplusplus
}
#endif

#endif
