/* What the files of the CUDA backend (src/cuda/) share: the backend state, the algorithms
 * chosen per convolution shape, and the functions one file gives the others and the vtable.
 *   backend.c  the vtable, memory, element ops, dense layers, devices and lifetime
 *   conv.c     convolution plans, the cuDNN algorithm search, the convolution ops
 *   data.c     pinned host memory, datasets on the device, batch assembly
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
    void *workspace; /* shared by every conv plan: the largest workspace any plan chose */
    size_t workspace_bytes;
    struct conv_choice choices[DG_CUDA_CHOICE_CACHE]; /* algorithms already chosen, by shape */
    int choice_count;
    int choice_next; /* the entry replaced when the cache is full */
};

static inline struct cuda_backend *cuda_of(struct dg_backend *be)
{
    return (struct cuda_backend *)be->impl;
}

/* ---- backend.c ---- */

/* Zeroed device memory; out of memory reports the bytes asked for and free. */
enum dg_status dg_cuda_alloc(struct dg_backend *be, size_t bytes, void **ptr);
void dg_cuda_free(struct dg_backend *be, void *ptr);

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

/* ---- data.c ---- */

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
