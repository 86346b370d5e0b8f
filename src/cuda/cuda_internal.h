/* What the files of the CUDA backend (src/cuda/) share: the backend state, the algorithms
 * chosen per convolution shape, and the functions one file gives the others and the vtable.
 *   backend.c  the vtable, memory, element ops, dense layers, devices and lifetime
 *   conv.c     convolution plans, the cuDNN algorithm search, the convolution ops
 *   data.c     pinned host memory, datasets on the device, batch assembly
 *   step.c     step mode (the step block), CUDA Graphs, the counters
 * Tensors are float32 NCHW, row-major, in device memory. Every CUDA, cuDNN and cuBLAS call
 * goes through DG_TRY (check.h); the custom kernels are called through kernels/launchers.h. */
#ifndef DG_CUDA_INTERNAL_H
#define DG_CUDA_INTERNAL_H

#include "digits/backend.h"

#include "cuda/check.h"
#include "launchers.h" /* kernels/launchers.h */

#define DG_CUDA_CHOICE_CACHE 32

/* The three passes of a convolution, the index of every per-direction array. */
enum conv_direction { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER };

/* The algorithm and math type chosen for each direction of one convolution shape: a plan
 * created again for a shape seen before (the net recreates plans for partial batches) reuses
 * them instead of searching again. */
struct conv_choice {
    struct dg_conv_shape shape;
    int algo[3];
    cudnnMathType_t math[3];
};

#define DG_CUDA_STEP_RING 4

/* Step mode (step.c): the step block on the device and the pinned ring it is uploaded from. */
struct cuda_step {
    int active; /* between step_begin and step_end */
    struct dg_step_values values;
    void *data_handle;
    const uint32_t *rows; /* the host rows step_begin was given (batch assembly checks them) */
    int n;
    struct dg_step_block *block; /* device */
    int block_rows;
    uint8_t *ring[DG_CUDA_STEP_RING]; /* pinned */
    cudaEvent_t ring_done[DG_CUDA_STEP_RING];
    int ring_used[DG_CUDA_STEP_RING];
    int ring_next;
    cudaEvent_t timer[2]; /* timer_start's and timer_stop's events (with timing) */
    int timer_started;
};

struct cuda_backend {
    struct dg_backend base;
    struct dg_cuda_options options;
    cudaStream_t stream;      /* compute: every op */
    cudaStream_t copy_stream; /* host -> device batch copies */
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    cudnnPoolingDescriptor_t pool_desc;
    cudnnTensorDescriptor_t pool_in_desc;
    cudnnTensorDescriptor_t pool_out_desc;
    cudnnTensorDescriptor_t bn_x_desc;     /* batch normalisation: (batch, c, spatial, 1) */
    cudnnTensorDescriptor_t bn_param_desc; /* (1, c, 1, 1) */
    void *workspace; /* shared by every conv plan: the largest workspace any plan chose */
    size_t workspace_bytes;
    struct conv_choice choices[DG_CUDA_CHOICE_CACHE]; /* algorithms already chosen, by shape */
    int choice_count;
    int choice_next; /* the entry replaced when the cache is full */
    unsigned long workspace_generation; /* counts replacements of `workspace` and `dense_bf16`
                                           (graphs check it) */
    void *cublas_workspace; /* cublasSetWorkspace's, so that captured GEMMs allocate nothing */
    uint16_t *dense_bf16;   /* --math bf16: the dense ops' bf16 operand copies (backend.c) */
    size_t dense_bf16_bytes;
    int capturing;          /* the compute stream is capturing (step.c) */
    struct cuda_step step;
    struct dg_backend_counters counters;
};

/* One unit of work issued to the device: counted as launched, or as captured. */
static inline void dg_cuda_count_launch(struct cuda_backend *cb)
{
    if (cb->capturing)
        cb->counters.captured++;
    else
        cb->counters.launches++;
}

/* DG_TRY for a call that issues work (a kernel launcher, a cuDNN / cuBLAS computation, an
 * asynchronous copy), counted. */
#define DG_LAUNCH(cb, call)                                                                        \
    do {                                                                                           \
        dg_cuda_count_launch(cb);                                                                  \
        DG_TRY(call);                                                                              \
    } while (0)

static inline struct cuda_backend *cuda_of(struct dg_backend *be)
{
    return (struct cuda_backend *)be->impl;
}

/* ---- backend.c ---- */

/* Zeroed device memory; out of memory reports the bytes asked for and free. */
enum dg_status dg_cuda_alloc(struct dg_backend *be, size_t bytes, void **ptr);
void dg_cuda_free(struct dg_backend *be, void *ptr);
/* Grows a scratch buffer the ops share (*ptr of *have_bytes) to at least `bytes`: waits for the
 * stream (a host sync, counted), replaces the buffer (contents lost) and bumps
 * workspace_generation, since a graph may have captured the old one. Refused inside a
 * capture. */
enum dg_status dg_cuda_scratch_grow(struct cuda_backend *cb, void **ptr, size_t *have_bytes,
                                    size_t bytes, const char *what);

/* ---- conv.c (struct dg_backend_ops entries) ---- */

enum dg_status dg_cuda_conv_plan_create(struct dg_backend *be, const struct dg_conv_shape *shape,
                                        void **out);
void dg_cuda_conv_plan_free(struct dg_backend *be, void *handle);
void dg_cuda_conv_describe(struct dg_backend *be, const struct dg_conv_shape *shape,
                           int with_bwd_data, char *out, size_t size);
enum dg_status dg_cuda_conv_fwd(struct dg_backend *be, void *handle, const float *x, const float *w,
                                const float *bias, float *y, int relu);
enum dg_status dg_cuda_conv_bwd_data(struct dg_backend *be, void *handle, const float *dy,
                                     const float *w, float *dx);
enum dg_status dg_cuda_conv_bwd_filter(struct dg_backend *be, void *handle, const float *x,
                                       const float *dy, float *dw, float *db);

/* ---- step.c ---- */

enum dg_status dg_cuda_step_begin(struct dg_backend *be, void *data_handle,
                                  const struct dg_step_values *values, const uint32_t *rows,
                                  int n, int *capturable);
void dg_cuda_step_end(struct dg_backend *be);
enum dg_status dg_cuda_capture_begin(struct dg_backend *be);
enum dg_status dg_cuda_capture_end(struct dg_backend *be, int discard, void **graph);
enum dg_status dg_cuda_graph_launch(struct dg_backend *be, void *graph, int *stale);
void dg_cuda_graph_free(struct dg_backend *be, void *graph);
enum dg_status dg_cuda_timer_start(struct dg_backend *be);
enum dg_status dg_cuda_timer_stop(struct dg_backend *be, double *seconds);
void dg_cuda_counters(struct dg_backend *be, struct dg_backend_counters *out);
void dg_cuda_step_release(struct cuda_backend *cb);
/* Inside a step: *vars = the step block, after checking that the op's epoch and step (or
 * learning rate) are the step's; outside one: *vars = NULL (the by-value arguments hold). */
enum dg_status dg_cuda_step_vars(struct cuda_backend *cb, uint32_t epoch, uint32_t step,
                                 const char *op, const struct dg_step_block **vars);
enum dg_status dg_cuda_step_lr(struct cuda_backend *cb, float lr,
                               const struct dg_step_block **vars);

/* ---- data.c ---- */

/* 1 when the dataset is resident on the device; its image count in *count. */
int dg_cuda_dataset_info(void *handle, size_t *count);

/* The backend's host allocator (struct dg_allocator): pinned memory, NULL when it fails. */
void *dg_cuda_pinned_alloc(size_t bytes, void *ctx);
void dg_cuda_pinned_free(void *ptr, void *ctx);
/* struct dg_backend_ops entries */
enum dg_status dg_cuda_dataset_attach(struct dg_backend *be, const struct dg_dataset *dataset,
                                      void **handle);
void dg_cuda_dataset_detach(struct dg_backend *be, void *handle);
enum dg_status dg_cuda_batch_assemble(struct dg_backend *be, void *handle, const uint32_t *rows,
                                      int n, const struct dg_augment_key *augment, float *x,
                                      uint8_t *labels);

#endif
