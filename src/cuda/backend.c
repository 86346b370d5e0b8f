/* The CUDA backend: struct dg_backend_ops over cuDNN (convolutions, max-pool forward), cuBLAS
 * (dense layers, row-major through the operand swap) and the custom kernels in kernels/
 * (bias + ReLU, ReLU / max-pool backward, dropout, softmax-xent, RMSprop, Adam, SGD, batch assembly).
 * Tensors are float32 NCHW, row-major, in device memory; dense weights (in, out) row-major.
 * All work is queued on one compute stream; batch uploads use a second (copy) stream.
 * This file: the vtable, memory, the element-wise, pooling and dense ops, devices and the
 * backend's lifetime; convolutions are in conv.c, datasets and batches in data.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

#define DG_MIB (1024.0 * 1024.0)
#define DG_CUDA_CUBLAS_WORKSPACE ((size_t)32 << 20)

/* ---- memory ---- */

enum dg_status dg_cuda_alloc(struct dg_backend *be, size_t bytes, void **ptr)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    *ptr = NULL;
    if (bytes == 0)
        return DG_OK;
    cudaError_t result = cudaMalloc(ptr, bytes);
    if (result == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        *ptr = NULL;
        return dg_error(DG_ERR_DEVICE,
                        "cuda: out of device memory: asked for %zu bytes (%.1f MiB), %.1f MiB "
                        "free of %.1f MiB on device %d",
                        bytes, (double)bytes / DG_MIB, (double)free_bytes / DG_MIB,
                        (double)total_bytes / DG_MIB, cb->options.device);
    }
    if ((status = dg_check_runtime(result, __FILE__, __LINE__, "cudaMalloc")) != DG_OK)
        goto fail;
    DG_LAUNCH(cb, cudaMemsetAsync(*ptr, 0, bytes, cb->stream));
    return DG_OK;
fail:
    if (*ptr)
        cudaFree(*ptr);
    *ptr = NULL;
    return status;
}

void dg_cuda_free(struct dg_backend *be, void *ptr)
{
    (void)be;
    if (ptr)
        cudaFree(ptr);
}

static enum dg_status cuda_upload(struct dg_backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    if (bytes == 0)
        return DG_OK;
    DG_LAUNCH(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->stream));
    cb->counters.host_syncs++;
    DG_TRY(cudaStreamSynchronize(cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_download(struct dg_backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    if (bytes == 0)
        return DG_OK;
    DG_LAUNCH(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
    cb->counters.host_syncs++;
    DG_TRY(cudaStreamSynchronize(cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_sync(struct dg_backend *be)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    cb->counters.host_syncs++;
    DG_TRY(cudaStreamSynchronize(cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_device_memory(struct dg_backend *be, size_t *free_bytes,
                                         size_t *total_bytes)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    *free_bytes = 0;
    *total_bytes = 0;
    DG_TRY(cudaSetDevice(cb->options.device));
    DG_TRY(cudaMemGetInfo(free_bytes, total_bytes));
    return DG_OK;
fail:
    return status;
}

static const float one = 1.0f;
static const float zero = 0.0f;

enum dg_status dg_cuda_scratch_grow(struct cuda_backend *cb, void **ptr, size_t *have_bytes,
                                    size_t bytes, const char *what)
{
    enum dg_status status = DG_OK;
    if (bytes <= *have_bytes)
        return DG_OK;
    if (cb->capturing)
        return dg_error(DG_ERR_RUNTIME,
                        "cuda: the %s would grow to %zu bytes inside a capture (it must be made "
                        "before the capture)",
                        what, bytes);
    cb->counters.host_syncs++;
    DG_TRY(cudaStreamSynchronize(cb->stream));
    dg_cuda_free(&cb->base, *ptr);
    *ptr = NULL;
    *have_bytes = 0;
    cb->workspace_generation++;
    if ((status = dg_cuda_alloc(&cb->base, bytes, ptr)) != DG_OK)
        return dg_error_prefix(status, "%s", what);
    *have_bytes = bytes;
    return DG_OK;
fail:
    return status;
}

/* ---- element-wise and pooling ---- */

static enum dg_status cuda_gap_fwd(struct dg_backend *be, size_t rows, int spatial, const float *x,
                                   float *y)
{
    enum dg_status status = DG_OK;
    DG_LAUNCH(cuda_of(be), dg_launch_gap_fwd(rows, spatial, x, y, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_gap_bwd(struct dg_backend *be, size_t rows, int spatial,
                                   const float *dy, float *dx)
{
    enum dg_status status = DG_OK;
    DG_LAUNCH(cuda_of(be), dg_launch_gap_bwd(rows, spatial, dy, dx, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_relu_bwd(struct dg_backend *be, size_t n, const float *y, float *dy)
{
    enum dg_status status = DG_OK;
    DG_LAUNCH(cuda_of(be), dg_launch_relu_bwd(n, y, dy, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

/* The CUDA backend's activations are NCHW (it has no nhwc op; dg_net never asks it for NHWC). */
static enum dg_status nchw_only(const char *op)
{
    return dg_error(DG_ERR_RUNTIME, "cuda: %s of NHWC tensors: this backend's tensors are NCHW",
                    op);
}

static enum dg_status cuda_maxpool_fwd(struct dg_backend *be, const struct dg_pool_shape *shape,
                                       const float *x, float *y)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    if (shape->nhwc)
        return nchw_only("max-pool");
    if (shape->height < 2 || shape->width < 2)
        return dg_error(DG_ERR_RUNTIME, "cuda: max-pool input %dx%d is smaller than its window",
                        shape->height, shape->width);
    DG_TRY(cudnnSetTensor4dDescriptor(cb->pool_in_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                      shape->batch, shape->channels, shape->height, shape->width));
    DG_TRY(cudnnSetTensor4dDescriptor(cb->pool_out_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                      shape->batch, shape->channels, shape->height / 2,
                                      shape->width / 2));
    DG_LAUNCH(cb, cudnnPoolingForward(cb->cudnn, cb->pool_desc, &one, cb->pool_in_desc, x, &zero,
                                      cb->pool_out_desc, y));
    return DG_OK;
fail:
    return status;
}

/* ---- batch normalisation: cuDNN's spatial mode (statistics per channel over the batch and
 * the positions; a tensor (batch, c, spatial, 1), so that the per-unit normalisation after a
 * dense layer is the spatial mode with spatial 1). cuDNN's running averages blend with
 * factor 1 - momentum and keep the unbiased variance, as the interface asks. ---- */

static enum dg_status bn_describe(struct cuda_backend *cb, const struct dg_bn_shape *shape,
                                  double eps)
{
    enum dg_status status = DG_OK;
    if (shape->batch < 1 || shape->channels < 1 || shape->spatial < 1)
        return dg_error(DG_ERR_RUNTIME, "cuda: bad batchnorm shape %d x %d x %d", shape->batch,
                        shape->channels, shape->spatial);
    if (shape->nhwc)
        return nchw_only("batchnorm");
    if (eps < CUDNN_BN_MIN_EPSILON)
        return dg_error(DG_ERR_RUNTIME, "cuda: batchnorm epsilon %g below cuDNN's least, %g", eps,
                        (double)CUDNN_BN_MIN_EPSILON);
    DG_TRY(cudnnSetTensor4dDescriptor(cb->bn_x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                      shape->batch, shape->channels, shape->spatial, 1));
    DG_TRY(cudnnSetTensor4dDescriptor(cb->bn_param_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                                      shape->channels, 1, 1));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_bn_fwd_train(struct dg_backend *be, const struct dg_bn_shape *shape,
                                        const float *x, const float *gamma, const float *beta,
                                        float *running_mean, float *running_var, double momentum,
                                        double eps, float *y, float *save_mean,
                                        float *save_invstd)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = bn_describe(cb, shape, eps);
    if (status != DG_OK)
        return status;
    DG_LAUNCH(cb, cudnnBatchNormalizationForwardTraining(
                      cb->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, cb->bn_x_desc, x,
                      cb->bn_x_desc, y, cb->bn_param_desc, gamma, beta, 1.0 - momentum,
                      running_mean, running_var, eps, save_mean, save_invstd));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_bn_fwd_infer(struct dg_backend *be, const struct dg_bn_shape *shape,
                                        const float *x, const float *gamma, const float *beta,
                                        const float *running_mean, const float *running_var,
                                        double eps, float *y)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = bn_describe(cb, shape, eps);
    if (status != DG_OK)
        return status;
    DG_LAUNCH(cb, cudnnBatchNormalizationForwardInference(
                      cb->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, cb->bn_x_desc, x,
                      cb->bn_x_desc, y, cb->bn_param_desc, gamma, beta, running_mean, running_var,
                      eps));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_bn_bwd(struct dg_backend *be, const struct dg_bn_shape *shape,
                                  const float *x, const float *dy, const float *gamma,
                                  const float *save_mean, const float *save_invstd, float *dx,
                                  float *dgamma, float *dbeta)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = bn_describe(cb, shape, CUDNN_BN_MIN_EPSILON);
    if (status != DG_OK)
        return status;
    /* epsilon is not used with the saved statistics, but cuDNN checks it */
    DG_LAUNCH(cb, cudnnBatchNormalizationBackward(
                      cb->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, cb->bn_x_desc,
                      x, cb->bn_x_desc, dy, cb->bn_x_desc, dx, cb->bn_param_desc, gamma, dgamma,
                      dbeta, CUDNN_BN_MIN_EPSILON, save_mean, save_invstd));
    return DG_OK;
fail:
    return status;
}

/* Not cudnnPoolingBackward: cuDNN does not document which of several equal maxima receives the
 * gradient, and windows of equal values are common after ReLU (all zeros); the interface
 * promises the first maximum in row-major order, which this kernel implements. */
static enum dg_status cuda_maxpool_bwd(struct dg_backend *be, const struct dg_pool_shape *shape,
                                       const float *x, const float *y, const float *dy, float *dx)
{
    (void)y;
    enum dg_status status = DG_OK;
    if (shape->nhwc)
        return nchw_only("max-pool");
    DG_LAUNCH(cuda_of(be), dg_launch_maxpool_bwd(x, dy, dx, shape->batch, shape->channels,
                                                 shape->height, shape->width, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_dropout_fwd(struct dg_backend *be, size_t n, float rate,
                                       const struct dg_dropout_key *key, const float *x, float *y)
{
    struct cuda_backend *cb = cuda_of(be);
    const struct dg_step_block *vars = NULL;
    if (key->channels)
        return nchw_only("dropout");
    enum dg_status status = dg_cuda_step_vars(cb, key->epoch, key->step, "dropout", &vars);
    if (status != DG_OK)
        return status;
    DG_LAUNCH(cb, dg_launch_dropout(n, rate, *key, vars, x, y, cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_dropout_bwd(struct dg_backend *be, size_t n, float rate,
                                       const struct dg_dropout_key *key, const float *dy, float *dx)
{
    struct cuda_backend *cb = cuda_of(be);
    const struct dg_step_block *vars = NULL;
    if (key->channels)
        return nchw_only("dropout");
    enum dg_status status = dg_cuda_step_vars(cb, key->epoch, key->step, "dropout", &vars);
    if (status != DG_OK)
        return status;
    DG_LAUNCH(cb, dg_launch_dropout(n, rate, *key, vars, dy, dx, cb->stream));
    return DG_OK;
fail:
    return status;
}

/* ---- dense (cuBLAS is column-major: a row-major (r, c) matrix is its transpose there) ---- */

/* The bf16 scratch of the dense ops (--math bf16): x (batch, in), w (in, out) and dy (batch,
 * out) rounded to bf16, one region each. Grown outside a capture only (dense_reserve makes it
 * before the net's first step). */
static enum dg_status cuda_dense_reserve(struct dg_backend *be, int batch, int in, int out)
{
    struct cuda_backend *cb = cuda_of(be);
    if (cb->options.math != DG_MATH_BF16)
        return DG_OK;
    size_t elements = (size_t)batch * in + (size_t)in * out + (size_t)batch * out;
    return dg_cuda_scratch_grow(cb, (void **)&cb->dense_bf16, &cb->dense_bf16_bytes,
                                elements * sizeof(uint16_t), "bf16 scratch of the dense layers");
}

/* A GEMM of bf16 operands summed in float32 into float32 C (cublasGemmEx, CUBLAS_COMPUTE_32F:
 * tensor cores, fp32 accumulation). */
static cublasStatus_t gemm_bf16(struct cuda_backend *cb, cublasOperation_t ta, cublasOperation_t tb,
                                int m, int n, int k, const uint16_t *a, int lda, const uint16_t *b,
                                int ldb, float *c, int ldc)
{
    return cublasGemmEx(cb->cublas, ta, tb, m, n, k, &one, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb,
                        &zero, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

static enum dg_status cuda_dense_fwd(struct dg_backend *be, int batch, int in, int out,
                                     const float *x, const float *w, const float *b, float *y,
                                     int relu)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    if (cb->options.math == DG_MATH_BF16) {
        if ((status = cuda_dense_reserve(be, batch, in, out)) != DG_OK)
            return status;
        uint16_t *xh = cb->dense_bf16, *wh = xh + (size_t)batch * in;
        DG_LAUNCH(cb, dg_launch_to_bf16((size_t)batch * in, x, xh, cb->stream));
        DG_LAUNCH(cb, dg_launch_to_bf16((size_t)in * out, w, wh, cb->stream));
        DG_LAUNCH(cb,
                  gemm_bf16(cb, CUBLAS_OP_N, CUBLAS_OP_N, out, batch, in, wh, out, xh, in, y, out));
    } else {
        /* y^T (out, batch) = w^T (out, in) x^T (in, batch) */
        DG_LAUNCH(cb, cublasSgemm(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_N, out, batch, in, &one, w,
                                  out, x, in, &zero, y, out));
    }
    DG_LAUNCH(cb, dg_launch_bias_act(y, b, batch, out, 1, relu, cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_dense_bwd(struct dg_backend *be, int batch, int in, int out,
                                     const float *x, const float *w, const float *dy, float *dx,
                                     float *dw, float *db)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    if (cb->options.math == DG_MATH_BF16) {
        if ((status = cuda_dense_reserve(be, batch, in, out)) != DG_OK)
            return status;
        uint16_t *xh = cb->dense_bf16, *wh = xh + (size_t)batch * in, *dyh = wh + (size_t)in * out;
        DG_LAUNCH(cb, dg_launch_to_bf16((size_t)batch * out, dy, dyh, cb->stream));
        if (dx) {
            DG_LAUNCH(cb, dg_launch_to_bf16((size_t)in * out, w, wh, cb->stream));
            DG_LAUNCH(cb, gemm_bf16(cb, CUBLAS_OP_T, CUBLAS_OP_N, in, batch, out, wh, out, dyh, out,
                                    dx, in));
        }
        DG_LAUNCH(cb, dg_launch_to_bf16((size_t)batch * in, x, xh, cb->stream));
        DG_LAUNCH(
            cb, gemm_bf16(cb, CUBLAS_OP_N, CUBLAS_OP_T, out, in, batch, dyh, out, xh, in, dw, out));
    } else {
        /* dx^T (in, batch) = w (in, out) dy^T (out, batch) */
        if (dx)
            DG_LAUNCH(cb, cublasSgemm(cb->cublas, CUBLAS_OP_T, CUBLAS_OP_N, in, batch, out, &one, w,
                                      out, dy, out, &zero, dx, in));
        /* dw^T (out, in) = dy^T (out, batch) x (batch, in) */
        DG_LAUNCH(cb, cublasSgemm(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_T, out, in, batch, &one, dy,
                                  out, x, in, &zero, dw, out));
    }
    if (db)
        DG_LAUNCH(cb, dg_launch_channel_sum(dy, batch, out, 1, db, cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_softmax_xent(struct dg_backend *be, int batch, const float *logits,
                                        const uint8_t *labels, float smoothing, float *probs,
                                        float *dlogits, double *stats, double *trace)
{
    enum dg_status status = DG_OK;
    DG_LAUNCH(cuda_of(be), dg_launch_softmax_xent(batch, logits, labels, smoothing, probs,
                                                  dlogits, stats, trace, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_rmsprop(struct dg_backend *be, size_t n, float *w, const float *g,
                                   float *acc, float lr, float rho, float eps)
{
    struct cuda_backend *cb = cuda_of(be);
    const struct dg_step_block *vars = NULL;
    enum dg_status status = dg_cuda_step_lr(cb, lr, &vars);
    if (status != DG_OK)
        return status;
    DG_LAUNCH(cb, dg_launch_rmsprop(n, w, g, acc, lr, rho, eps, vars, cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_adam(struct dg_backend *be, size_t n, float *w, const float *g,
                                float *m, float *v, float *pow, float lr, float beta1,
                                float beta2, float eps)
{
    struct cuda_backend *cb = cuda_of(be);
    const struct dg_step_block *vars = NULL;
    enum dg_status status = dg_cuda_step_lr(cb, lr, &vars);
    if (status != DG_OK)
        return status;
    DG_LAUNCH(cb, dg_launch_adam_powers(pow, beta1, beta2, cb->stream));
    DG_LAUNCH(cb, dg_launch_adam(n, w, g, m, v, pow, lr, beta1, beta2, eps, vars, cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_sgd(struct dg_backend *be, size_t n, float *w, const float *g,
                               float *b, float lr, float momentum, int nesterov)
{
    struct cuda_backend *cb = cuda_of(be);
    const struct dg_step_block *vars = NULL;
    enum dg_status status = dg_cuda_step_lr(cb, lr, &vars);
    if (status != DG_OK)
        return status;
    DG_LAUNCH(cb, dg_launch_sgd(n, w, g, b, lr, momentum, nesterov, vars, cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_ema(struct dg_backend *be, size_t n, float *shadow, const float *w,
                               float decay)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    DG_LAUNCH(cb, dg_launch_ema(n, shadow, w, decay, cb->stream));
    return DG_OK;
fail:
    return status;
}

/* ---- lifetime ---- */

static void cuda_destroy(struct dg_backend *be)
{
    if (!be)
        return;
    struct cuda_backend *cb = cuda_of(be);
    if (cb->stream)
        cudaStreamSynchronize(cb->stream);
    if (cb->copy_stream)
        cudaStreamSynchronize(cb->copy_stream);
    dg_cuda_step_release(cb);
    if (cb->dense_bf16)
        cudaFree(cb->dense_bf16);
    if (cb->cublas_workspace)
        cudaFree(cb->cublas_workspace);
    if (cb->workspace)
        cudaFree(cb->workspace);
    if (cb->pool_desc)
        cudnnDestroyPoolingDescriptor(cb->pool_desc);
    if (cb->pool_in_desc)
        cudnnDestroyTensorDescriptor(cb->pool_in_desc);
    if (cb->pool_out_desc)
        cudnnDestroyTensorDescriptor(cb->pool_out_desc);
    if (cb->bn_x_desc)
        cudnnDestroyTensorDescriptor(cb->bn_x_desc);
    if (cb->bn_param_desc)
        cudnnDestroyTensorDescriptor(cb->bn_param_desc);
    if (cb->cudnn)
        cudnnDestroy(cb->cudnn);
    if (cb->cublas)
        cublasDestroy(cb->cublas);
    if (cb->copy_stream)
        cudaStreamDestroy(cb->copy_stream);
    if (cb->stream)
        cudaStreamDestroy(cb->stream);
    free(cb);
}

static const struct dg_backend_ops cuda_ops = {
    .destroy = cuda_destroy,
    .alloc = dg_cuda_alloc,
    .free = dg_cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .sync = cuda_sync,
    .dataset_attach = dg_cuda_dataset_attach,
    .dataset_detach = dg_cuda_dataset_detach,
    .batch_assemble = dg_cuda_batch_assemble,
    .conv_plan_create = dg_cuda_conv_plan_create,
    .conv_plan_free = dg_cuda_conv_plan_free,
    .conv_algo_name = dg_cuda_conv_describe,
    .conv_fwd = dg_cuda_conv_fwd,
    .conv_bwd_data = dg_cuda_conv_bwd_data,
    .conv_bwd_filter = dg_cuda_conv_bwd_filter,
    .batchnorm_fwd_train = cuda_bn_fwd_train,
    .batchnorm_fwd_infer = cuda_bn_fwd_infer,
    .batchnorm_bwd = cuda_bn_bwd,
    .relu_bwd = cuda_relu_bwd,
    .gap_fwd = cuda_gap_fwd,
    .gap_bwd = cuda_gap_bwd,
    .maxpool_fwd = cuda_maxpool_fwd,
    .maxpool_bwd = cuda_maxpool_bwd,
    .dropout_fwd = cuda_dropout_fwd,
    .dropout_bwd = cuda_dropout_bwd,
    .dense_fwd = cuda_dense_fwd,
    .dense_bwd = cuda_dense_bwd,
    .dense_reserve = cuda_dense_reserve,
    .softmax_xent = cuda_softmax_xent,
    .rmsprop = cuda_rmsprop,
    .adam = cuda_adam,
    .sgd = cuda_sgd,
    .ema = cuda_ema,
    .device_memory = cuda_device_memory,
    .step_begin = dg_cuda_step_begin,
    .step_end = dg_cuda_step_end,
    .capture_begin = dg_cuda_capture_begin,
    .capture_end = dg_cuda_capture_end,
    .graph_launch = dg_cuda_graph_launch,
    .graph_free = dg_cuda_graph_free,
    .counters = dg_cuda_counters,
    .timer_start = dg_cuda_timer_start,
    .timer_stop = dg_cuda_timer_stop,
};

int dg_cuda_built(void)
{
    return 1;
}

int dg_cuda_driver_present(void)
{
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return driver > 0;
}

/* The number of CUDA devices, or 0 with the reason there is none usable. */
static int device_count(char *reason, size_t reason_size)
{
    int count = 0;
    cudaError_t result = cudaGetDeviceCount(&count);
    if (result != cudaSuccess) {
        cudaGetLastError();
        int driver = 0;
        cudaDriverGetVersion(&driver);
        if (driver == 0)
            snprintf(reason, reason_size, "no NVIDIA driver is loaded");
        else
            snprintf(reason, reason_size, "%s", cudaGetErrorString(result));
        return 0;
    }
    if (count == 0)
        snprintf(reason, reason_size, "the driver reports no CUDA device");
    return count;
}

enum dg_status dg_cuda_probe(char *reason, size_t reason_size)
{
    char why[200];
    if (device_count(why, sizeof why) == 0) {
        snprintf(reason, reason_size, "no usable CUDA device: %s", why);
        return dg_error(DG_ERR_DEVICE, "no usable CUDA device: %s", why);
    }
    if (reason_size)
        reason[0] = '\0';
    return DG_OK;
}

static void version_text(int version, char *text, size_t size)
{
    snprintf(text, size, "%d.%d", version / 1000, (version % 1000) / 10);
}

/* cuDNN 9 encodes its version as major*10000 + minor*100 + patch. */
static void cudnn_version_text(size_t version, char *text, size_t size)
{
    snprintf(text, size, "%zu.%zu.%zu", version / 10000, (version % 10000) / 100, version % 100);
}

void dg_cuda_describe(void (*print_line)(const char *line, void *ctx), void *ctx)
{
    char line[512];
    char runtime_text[32], driver_text[32], cudnn_run[32], cudnn_built[32];
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    version_text(runtime, runtime_text, sizeof runtime_text);
    version_text(driver, driver_text, sizeof driver_text);
    snprintf(line, sizeof line, "CUDA runtime %s, driver %s", runtime_text,
             driver ? driver_text : "none (no NVIDIA driver loaded)");
    print_line(line, ctx);

    cudnn_version_text(cudnnGetVersion(), cudnn_run, sizeof cudnn_run);
    cudnn_version_text((size_t)CUDNN_VERSION, cudnn_built, sizeof cudnn_built);
    snprintf(line, sizeof line, "cuDNN %s (built against %s)", cudnn_run, cudnn_built);
    print_line(line, ctx);

    int major = 0, minor = 0, patch = 0;
    cublasGetProperty(MAJOR_VERSION, &major);
    cublasGetProperty(MINOR_VERSION, &minor);
    cublasGetProperty(PATCH_LEVEL, &patch);
    snprintf(line, sizeof line, "cuBLAS %d.%d.%d", major, minor, patch);
    print_line(line, ctx);

    char why[200];
    int count = device_count(why, sizeof why);
    if (count == 0) {
        snprintf(line, sizeof line, "CUDA devices: none (%s)", why);
        print_line(line, ctx);
        return;
    }
    for (int d = 0; d < count; d++) {
        struct cudaDeviceProp prop;
        cudaError_t result = cudaGetDeviceProperties(&prop, d);
        if (result != cudaSuccess) {
            cudaGetLastError();
            snprintf(line, sizeof line, "CUDA device %d: unavailable (%s)", d,
                     cudaGetErrorString(result));
        } else {
            snprintf(
                line, sizeof line, "CUDA device %d: %s, compute capability %d.%d, %.1f GiB, %d SMs",
                d, prop.name, prop.major, prop.minor,
                (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), prop.multiProcessorCount);
        }
        print_line(line, ctx);
    }
}

enum dg_status dg_backend_cuda_create(const struct dg_cuda_options *options,
                                      struct dg_backend **out)
{
    enum dg_status status = DG_OK;
    char reason[256];
    *out = NULL;
    if ((status = dg_cuda_probe(reason, sizeof reason)) != DG_OK)
        return dg_error(status, "cuda: %s", reason);
    struct cuda_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return dg_error(DG_ERR_NOMEM, "cuda: out of host memory");
    if (options)
        cb->options = *options;
    struct dg_backend *be = &cb->base;
    be->ops = &cuda_ops;
    be->impl = cb;
    be->host_allocator.alloc = dg_cuda_pinned_alloc;
    be->host_allocator.free = dg_cuda_pinned_free;
    be->host_allocator.ctx = NULL;
    snprintf(be->name, sizeof be->name, "cuda");

    int count = 0;
    DG_TRY(cudaGetDeviceCount(&count));
    if (cb->options.device < 0 || cb->options.device >= count) {
        status = dg_error(DG_ERR_DEVICE, "cuda: no device %d (this machine has %d)",
                          cb->options.device, count);
        goto fail;
    }
    struct cudaDeviceProp prop;
    DG_TRY(cudaSetDevice(cb->options.device));
    DG_TRY(cudaGetDeviceProperties(&prop, cb->options.device));
    if (cb->options.math == DG_MATH_BF16 && prop.major < 8) {
        status = dg_error(DG_ERR_USAGE,
                          "--math bf16 on CUDA needs compute capability 8.0 or newer (bf16 tensor "
                          "cores); device %d (%.96s) is %d.%d: use --math fp32 or tf32, or "
                          "--device cpu",
                          cb->options.device, prop.name, prop.major, prop.minor);
        goto fail;
    }
    DG_TRY(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
    DG_TRY(cudaStreamCreateWithFlags(&cb->copy_stream, cudaStreamNonBlocking));
    DG_TRY(cudnnCreate(&cb->cudnn));
    DG_TRY(cudnnSetStream(cb->cudnn, cb->stream));
    DG_TRY(cublasCreate(&cb->cublas));
    DG_TRY(cublasSetStream(cb->cublas, cb->stream));
    /* FP32: plain FP32 GEMMs (cuBLAS uses TF32 only when asked); TF32: tensor cores allowed;
     * BF16: the dense layers' GemmEx on bf16 operands (tensor cores, float32 sums). */
    DG_TRY(cublasSetMathMode(cb->cublas, cb->options.math == DG_MATH_TF32
                                             ? CUBLAS_TF32_TENSOR_OP_MATH
                                             : CUBLAS_DEFAULT_MATH));
    /* cuBLAS' own workspace: a GEMM captured into a graph must not allocate (32 MiB, what
     * cuBLAS documents for Hopper) */
    DG_TRY(cudaMalloc(&cb->cublas_workspace, DG_CUDA_CUBLAS_WORKSPACE));
    DG_TRY(cublasSetWorkspace(cb->cublas, cb->cublas_workspace, DG_CUDA_CUBLAS_WORKSPACE));
    DG_TRY(cudnnCreatePoolingDescriptor(&cb->pool_desc));
    DG_TRY(cudnnSetPooling2dDescriptor(cb->pool_desc, CUDNN_POOLING_MAX_DETERMINISTIC,
                                       CUDNN_NOT_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2));
    DG_TRY(cudnnCreateTensorDescriptor(&cb->pool_in_desc));
    DG_TRY(cudnnCreateTensorDescriptor(&cb->pool_out_desc));
    DG_TRY(cudnnCreateTensorDescriptor(&cb->bn_x_desc));
    DG_TRY(cudnnCreateTensorDescriptor(&cb->bn_param_desc));

    char cudnn_text[32];
    cudnn_version_text(cudnnGetVersion(), cudnn_text, sizeof cudnn_text);
    snprintf(be->description, sizeof be->description,
             "cuda: %.96s (cc %d.%d, %.1f GiB), cuDNN %s, %s math%s", prop.name, prop.major,
             prop.minor, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), cudnn_text,
             cb->options.math == DG_MATH_TF32   ? "TF32"
             : cb->options.math == DG_MATH_BF16 ? "BF16"
                                                : "FP32",
             cb->options.deterministic ? ", deterministic" : "");
    *out = be;
    return DG_OK;
fail:
    cuda_destroy(be);
    return status;
}
