/* The CUDA backend: struct dg_backend_ops over cuDNN (convolutions, max-pool forward), cuBLAS
 * (dense layers, row-major through the operand swap) and the custom kernels in kernels/
 * (bias + ReLU, ReLU / max-pool backward, dropout, softmax-xent, RMSprop, batch assembly).
 * Tensors are float32 NCHW, row-major, in device memory; dense weights (in, out) row-major.
 * All work is queued on one compute stream; batch uploads use a second (copy) stream. */
#include "digits/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/check.h"
#include "launchers.h"

#define DG_CUDA_DEFAULT_DATASET_BUDGET ((size_t)1 << 30)
/* The most workspace one convolution algorithm may use (and the scratch for the search). */
#define DG_CUDA_WORKSPACE_LIMIT ((size_t)256 << 20)
#define DG_CUDA_MAX_ALGOS 16
#define DG_CUDA_CHOICE_CACHE 32
#define DG_MIB (1024.0 * 1024.0)

/* The algorithm and math type chosen for each direction of one convolution shape: a plan
 * created again for a shape seen before (the net recreates plans for partial batches) reuses
 * them instead of searching again. Index 0 forward, 1 backward-data, 2 backward-filter. */
enum conv_direction { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER };

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

/* One convolution shape: descriptors and the algorithms chosen for it with the workspace each
 * needs; one convolution descriptor per direction (enum conv_direction) so that each carries
 * the math type its algorithm runs with. */
struct cuda_conv_plan {
    struct dg_conv_shape shape;
    cudnnTensorDescriptor_t x_desc; /* (batch, in_channels, height, width) */
    cudnnTensorDescriptor_t y_desc; /* (batch, out_channels, height, width) */
    cudnnFilterDescriptor_t w_desc; /* (out_channels, in_channels, kernel, kernel) */
    cudnnConvolutionDescriptor_t desc[3];
    int algo[3];
    size_t workspace[3];
};

/* A batch staging slot: pinned host bytes -> device bytes on the copy stream. */
struct cuda_slot {
    uint8_t *host;   /* resident store: rows (n) uint32; streamed: images (n, 784), labels (n) */
    uint8_t *device; /* the same bytes on the device */
    size_t capacity;
    cudaEvent_t copied;   /* copy stream: the upload of this slot finished */
    cudaEvent_t consumed; /* compute stream: the assembly that read this slot finished */
    int used;
};

struct cuda_dataset {
    const struct dg_dataset *dataset;
    int resident;
    uint8_t *images; /* device (count, 784) when resident */
    uint8_t *labels; /* device (count) when resident and labelled */
    struct cuda_slot slots[2];
    int next_slot;
};

static struct cuda_backend *cuda_of(struct dg_backend *be)
{
    return (struct cuda_backend *)be->impl;
}

/* ---- memory ---- */

static enum dg_status cuda_alloc(struct dg_backend *be, size_t bytes, void **ptr)
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
    DG_TRY(cudaMemsetAsync(*ptr, 0, bytes, cb->stream));
    return DG_OK;
fail:
    if (*ptr)
        cudaFree(*ptr);
    *ptr = NULL;
    return status;
}

static void cuda_free(struct dg_backend *be, void *ptr)
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
    DG_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->stream));
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
    DG_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
    DG_TRY(cudaStreamSynchronize(cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_sync(struct dg_backend *be)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
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

/* Grows the shared convolution workspace (nothing runs on it while it is replaced). */
static enum dg_status workspace_reserve(struct cuda_backend *cb, size_t bytes)
{
    enum dg_status status = DG_OK;
    if (bytes <= cb->workspace_bytes)
        return DG_OK;
    DG_TRY(cudaStreamSynchronize(cb->stream));
    if (cb->workspace)
        cudaFree(cb->workspace);
    cb->workspace = NULL;
    cb->workspace_bytes = 0;
    if ((status = cuda_alloc(&cb->base, bytes, &cb->workspace)) != DG_OK)
        return dg_error_prefix(status, "convolution workspace");
    cb->workspace_bytes = bytes;
    return DG_OK;
fail:
    return status;
}

/* ---- pinned host memory for image stores ---- */

static void *pinned_alloc(size_t bytes, void *ctx)
{
    (void)ctx;
    void *ptr = NULL;
    if (cudaHostAlloc(&ptr, bytes ? bytes : 1, cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return ptr;
}

static void pinned_free(void *ptr, void *ctx)
{
    (void)ctx;
    if (ptr)
        cudaFreeHost(ptr);
}

/* ---- data ---- */

static void slot_release(struct cuda_slot *slot)
{
    if (slot->host)
        cudaFreeHost(slot->host);
    if (slot->device)
        cudaFree(slot->device);
    if (slot->copied)
        cudaEventDestroy(slot->copied);
    if (slot->consumed)
        cudaEventDestroy(slot->consumed);
    memset(slot, 0, sizeof *slot);
}

static void cuda_dataset_detach(struct dg_backend *be, void *handle)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_dataset *cd = handle;
    if (!cd)
        return;
    cudaStreamSynchronize(cb->copy_stream);
    cudaStreamSynchronize(cb->stream);
    for (int s = 0; s < 2; s++)
        slot_release(&cd->slots[s]);
    if (cd->images)
        cudaFree(cd->images);
    if (cd->labels)
        cudaFree(cd->labels);
    free(cd);
}

static enum dg_status cuda_dataset_attach(struct dg_backend *be, const struct dg_dataset *dataset,
                                          void **handle)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    *handle = NULL;
    struct cuda_dataset *cd = calloc(1, sizeof *cd);
    if (!cd)
        return dg_error(DG_ERR_NOMEM, "cuda: out of host memory attaching a dataset");
    cd->dataset = dataset;
    for (int s = 0; s < 2; s++) {
        DG_TRY(cudaEventCreateWithFlags(&cd->slots[s].copied, cudaEventDisableTiming));
        DG_TRY(cudaEventCreateWithFlags(&cd->slots[s].consumed, cudaEventDisableTiming));
    }
    size_t budget = cb->options.dataset_budget_bytes ? cb->options.dataset_budget_bytes
                                                     : DG_CUDA_DEFAULT_DATASET_BUDGET;
    size_t image_bytes = dataset->count * (size_t)DG_PIXELS;
    size_t label_bytes = dataset->labels ? dataset->count : 0;
    if (image_bytes + label_bytes <= budget) {
        cd->resident = 1;
        if (cuda_alloc(be, image_bytes, (void **)&cd->images) != DG_OK ||
            cuda_alloc(be, label_bytes, (void **)&cd->labels) != DG_OK) {
            /* within the budget but not in the free memory: stream it instead */
            cuda_free(be, cd->images);
            cuda_free(be, cd->labels);
            cd->images = NULL;
            cd->labels = NULL;
            cd->resident = 0;
            dg_error_clear();
        }
    }
    if (cd->resident) {
        if (image_bytes)
            DG_TRY(cudaMemcpyAsync(cd->images, dataset->images, image_bytes, cudaMemcpyHostToDevice,
                                   cb->stream));
        if (label_bytes)
            DG_TRY(cudaMemcpyAsync(cd->labels, dataset->labels, label_bytes, cudaMemcpyHostToDevice,
                                   cb->stream));
        DG_TRY(cudaStreamSynchronize(cb->stream));
    }
    *handle = cd;
    return DG_OK;
fail:
    cuda_dataset_detach(be, cd);
    return status;
}

/* Makes `slot` hold at least `bytes` (host and device), once its last use is over. */
static enum dg_status slot_reserve(struct cuda_slot *slot, size_t bytes)
{
    enum dg_status status = DG_OK;
    if (bytes <= slot->capacity)
        return DG_OK;
    if (slot->used)
        DG_TRY(cudaEventSynchronize(slot->consumed));
    if (slot->host)
        cudaFreeHost(slot->host);
    if (slot->device)
        cudaFree(slot->device);
    slot->host = NULL;
    slot->device = NULL;
    slot->capacity = 0;
    DG_TRY(cudaHostAlloc((void **)&slot->host, bytes, cudaHostAllocDefault));
    DG_TRY(cudaMalloc((void **)&slot->device, bytes));
    slot->capacity = bytes;
    return DG_OK;
fail:
    return status;
}

/* Resident store: the row indices go up (4n bytes) and the kernel gathers on the device.
 * Streamed store: the rows are gathered on the host into pinned memory and go up as one copy.
 * Either way the copy runs on the copy stream into one of two slots, so the upload of this
 * batch overlaps the compute still queued for the previous one. */
static enum dg_status cuda_batch_assemble(struct dg_backend *be, void *handle, const uint32_t *rows,
                                          int n, const struct dg_augment_key *augment, float *x,
                                          uint8_t *labels)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_dataset *cd = handle;
    const struct dg_dataset *dataset = cd->dataset;
    enum dg_status status = DG_OK;
    if (n < 0)
        return dg_error(DG_ERR_RUNTIME, "cuda: batch of %d images", n);
    if (n == 0)
        return DG_OK;
    for (int i = 0; i < n; i++)
        if (rows[i] >= dataset->count)
            return dg_error(DG_ERR_RUNTIME,
                            "cuda: batch row %u is outside the dataset (%zu images)", rows[i],
                            dataset->count);

    struct cuda_slot *slot = &cd->slots[cd->next_slot];
    cd->next_slot ^= 1;
    size_t count = (size_t)n;
    size_t bytes = cd->resident ? count * sizeof(uint32_t) : count * (DG_PIXELS + 1);
    if (slot->used)
        DG_TRY(cudaEventSynchronize(slot->copied));
    if ((status = slot_reserve(slot, bytes)) != DG_OK)
        return dg_error_prefix(status, "batch staging buffer of %zu bytes", bytes);

    if (cd->resident) {
        memcpy(slot->host, rows, count * sizeof(uint32_t));
    } else {
        uint8_t *label_part = slot->host + count * DG_PIXELS;
        for (size_t i = 0; i < count; i++) {
            memcpy(slot->host + i * DG_PIXELS, dataset->images + (size_t)rows[i] * DG_PIXELS,
                   DG_PIXELS);
            label_part[i] = dataset->labels ? dataset->labels[rows[i]] : 0;
        }
    }
    if (slot->used)
        DG_TRY(cudaStreamWaitEvent(cb->copy_stream, slot->consumed, 0));
    DG_TRY(
        cudaMemcpyAsync(slot->device, slot->host, bytes, cudaMemcpyHostToDevice, cb->copy_stream));
    DG_TRY(cudaEventRecord(slot->copied, cb->copy_stream));
    DG_TRY(cudaStreamWaitEvent(cb->stream, slot->copied, 0));

    uint8_t *labels_out = dataset->labels ? labels : NULL;
    if (cd->resident)
        DG_TRY(dg_launch_assemble(cd->images, cd->labels, (const uint32_t *)slot->device, n,
                                  augment, x, labels_out, cb->stream));
    else
        DG_TRY(dg_launch_assemble(slot->device, slot->device + count * DG_PIXELS, NULL, n, augment,
                                  x, labels_out, cb->stream));
    DG_TRY(cudaEventRecord(slot->consumed, cb->stream));
    slot->used = 1;
    return DG_OK;
fail:
    return status;
}

/* ---- convolution ---- */

/* One algorithm as reported by a cuDNN search, whatever the direction. */
struct algo_candidate {
    int algo;
    cudnnStatus_t status;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
};

static const char *direction_name(enum conv_direction direction)
{
    return direction == CONV_FWD        ? "forward"
           : direction == CONV_BWD_DATA ? "backward-data"
                                        : "backward-filter";
}

static cudnnStatus_t workspace_size(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                    enum conv_direction direction, int algo, size_t *bytes)
{
    cudnnConvolutionDescriptor_t desc = plan->desc[direction];
    switch (direction) {
    case CONV_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(cb->cudnn, plan->x_desc, plan->w_desc, desc,
                                                       plan->y_desc,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    case CONV_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            cb->cudnn, plan->w_desc, plan->y_desc, desc, plan->x_desc,
            (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            cb->cudnn, plan->x_desc, plan->y_desc, desc, plan->w_desc,
            (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
    }
}

/* Lists the candidates of one direction, best first: measured (cudnnFind*AlgorithmEx, on
 * scratch tensors) for speed, or the heuristic order (_v7) when options.deterministic asks for
 * the same choice on every run. */
static enum dg_status conv_candidates(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                      enum conv_direction direction, int measure, float *x,
                                      float *y, float *w, void *scratch, size_t scratch_bytes,
                                      struct algo_candidate *out, int *count)
{
    enum dg_status status = DG_OK;
    int returned = 0;
    *count = 0;
    if (direction == CONV_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[DG_CUDA_MAX_ALGOS];
        if (measure)
            DG_TRY(cudnnFindConvolutionForwardAlgorithmEx(
                cb->cudnn, plan->x_desc, x, plan->w_desc, w, plan->desc[CONV_FWD], plan->y_desc, y,
                DG_CUDA_MAX_ALGOS, &returned, perf, scratch, scratch_bytes));
        else
            DG_TRY(cudnnGetConvolutionForwardAlgorithm_v7(cb->cudnn, plan->x_desc, plan->w_desc,
                                                          plan->desc[CONV_FWD], plan->y_desc,
                                                          DG_CUDA_MAX_ALGOS, &returned, perf));
        for (int i = 0; i < returned; i++)
            out[i] = (struct algo_candidate){(int)perf[i].algo, perf[i].status, perf[i].determinism,
                                             perf[i].mathType};
    } else if (direction == CONV_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[DG_CUDA_MAX_ALGOS];
        if (measure)
            DG_TRY(cudnnFindConvolutionBackwardDataAlgorithmEx(
                cb->cudnn, plan->w_desc, w, plan->y_desc, y, plan->desc[CONV_BWD_DATA],
                plan->x_desc, x, DG_CUDA_MAX_ALGOS, &returned, perf, scratch, scratch_bytes));
        else
            DG_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                cb->cudnn, plan->w_desc, plan->y_desc, plan->desc[CONV_BWD_DATA], plan->x_desc,
                DG_CUDA_MAX_ALGOS, &returned, perf));
        for (int i = 0; i < returned; i++)
            out[i] = (struct algo_candidate){(int)perf[i].algo, perf[i].status, perf[i].determinism,
                                             perf[i].mathType};
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[DG_CUDA_MAX_ALGOS];
        if (measure)
            DG_TRY(cudnnFindConvolutionBackwardFilterAlgorithmEx(
                cb->cudnn, plan->x_desc, x, plan->y_desc, y, plan->desc[CONV_BWD_FILTER],
                plan->w_desc, w, DG_CUDA_MAX_ALGOS, &returned, perf, scratch, scratch_bytes));
        else
            DG_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                cb->cudnn, plan->x_desc, plan->y_desc, plan->desc[CONV_BWD_FILTER], plan->w_desc,
                DG_CUDA_MAX_ALGOS, &returned, perf));
        for (int i = 0; i < returned; i++)
            out[i] = (struct algo_candidate){(int)perf[i].algo, perf[i].status, perf[i].determinism,
                                             perf[i].mathType};
    }
    *count = returned;
    return DG_OK;
fail:
    return status;
}

/* Sets the math type of a direction's descriptor and the algorithm it runs, with the workspace
 * that algorithm needs. DG_ERR_DEVICE when cuDNN cannot size it or it is over the limit. */
static enum dg_status plan_apply(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                 enum conv_direction direction, int algo, cudnnMathType_t math)
{
    enum dg_status status = DG_OK;
    size_t bytes = 0;
    DG_TRY(cudnnSetConvolutionMathType(plan->desc[direction], math));
    DG_TRY(workspace_size(cb, plan, direction, algo, &bytes));
    if (bytes > DG_CUDA_WORKSPACE_LIMIT)
        return dg_error(DG_ERR_DEVICE,
                        "cuda: %s convolution algorithm %d needs %zu MiB of "
                        "workspace (limit %zu MiB)",
                        direction_name(direction), algo, bytes >> 20,
                        DG_CUDA_WORKSPACE_LIMIT >> 20);
    plan->algo[direction] = algo;
    plan->workspace[direction] = bytes;
    return DG_OK;
fail:
    return status;
}

/* Picks the first usable candidate: supported, within the workspace limit, deterministic when
 * the options ask for it or for FP32, and without tensor-op math in FP32 mode (which then runs
 * with CUDNN_FMA_MATH); applies it to the plan and reports the choice. */
static enum dg_status conv_choose(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                  enum conv_direction direction, int measure, float *x, float *y,
                                  float *w, void *scratch, size_t scratch_bytes,
                                  struct conv_choice *choice)
{
    enum dg_status status = DG_OK;
    int fp32 = cb->options.math == DG_CUDA_MATH_FP32;
    int need_deterministic = fp32 || cb->options.deterministic;
    struct algo_candidate candidates[DG_CUDA_MAX_ALGOS];
    int count = 0;

    DG_TRY(cudnnSetConvolutionMathType(plan->desc[direction],
                                       fp32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
    if ((status = conv_candidates(cb, plan, direction, measure, x, y, w, scratch, scratch_bytes,
                                  candidates, &count)) != DG_OK)
        return status;
    for (int i = 0; i < count; i++) {
        const struct algo_candidate *c = &candidates[i];
        if (c->status != CUDNN_STATUS_SUCCESS)
            continue;
        if (need_deterministic && c->determinism != CUDNN_DETERMINISTIC)
            continue;
        if (fp32 && c->math != CUDNN_FMA_MATH && c->math != CUDNN_DEFAULT_MATH)
            continue;
        cudnnMathType_t math = fp32 ? CUDNN_FMA_MATH : c->math;
        if (plan_apply(cb, plan, direction, c->algo, math) != DG_OK)
            continue;
        choice->algo[direction] = c->algo;
        choice->math[direction] = math;
        dg_error_clear();
        return DG_OK;
    }
    return dg_error(DG_ERR_DEVICE,
                    "cuDNN offers no usable %s convolution algorithm (%s%s, workspace <= %zu MiB) "
                    "for batch %d, %d -> %d channels, %dx%d, kernel %d",
                    direction_name(direction), fp32 ? "FP32 FMA math" : "TF32 allowed",
                    need_deterministic ? ", deterministic" : "", DG_CUDA_WORKSPACE_LIMIT >> 20,
                    plan->shape.batch, plan->shape.in_channels, plan->shape.out_channels,
                    plan->shape.height, plan->shape.width, plan->shape.kernel);
fail:
    return status;
}

static const struct conv_choice *choice_find(const struct cuda_backend *cb,
                                             const struct dg_conv_shape *shape)
{
    for (int i = 0; i < cb->choice_count; i++) {
        const struct dg_conv_shape *c = &cb->choices[i].shape;
        if (c->batch == shape->batch && c->in_channels == shape->in_channels &&
            c->out_channels == shape->out_channels && c->height == shape->height &&
            c->width == shape->width && c->kernel == shape->kernel)
            return &cb->choices[i];
    }
    return NULL;
}

static void choice_store(struct cuda_backend *cb, const struct conv_choice *choice)
{
    if (cb->choice_count < DG_CUDA_CHOICE_CACHE) {
        cb->choices[cb->choice_count++] = *choice;
        return;
    }
    cb->choices[cb->choice_next] = *choice;
    cb->choice_next = (cb->choice_next + 1) % DG_CUDA_CHOICE_CACHE;
}

/* Chooses the three algorithms of a new shape: measured on zeroed scratch tensors unless the
 * options ask for deterministic (reproducible) choices. */
static enum dg_status plan_search(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                  struct conv_choice *choice)
{
    const struct dg_conv_shape *shape = &plan->shape;
    struct dg_backend *be = &cb->base;
    enum dg_status status = DG_OK;
    float *x = NULL, *y = NULL, *w = NULL;
    void *scratch = NULL;
    size_t scratch_bytes = 0;
    int measure = !cb->options.deterministic;
    if (measure) {
        size_t x_count = (size_t)shape->batch * shape->in_channels * shape->height * shape->width;
        size_t y_count = (size_t)shape->batch * shape->out_channels * shape->height * shape->width;
        size_t w_count =
            (size_t)shape->out_channels * shape->in_channels * shape->kernel * shape->kernel;
        size_t free_bytes = 0, total_bytes = 0;
        DG_TRY(cudaMemGetInfo(&free_bytes, &total_bytes));
        scratch_bytes =
            free_bytes / 4 < DG_CUDA_WORKSPACE_LIMIT ? free_bytes / 4 : DG_CUDA_WORKSPACE_LIMIT;
        if ((status = cuda_alloc(be, x_count * sizeof(float), (void **)&x)) != DG_OK ||
            (status = cuda_alloc(be, y_count * sizeof(float), (void **)&y)) != DG_OK ||
            (status = cuda_alloc(be, w_count * sizeof(float), (void **)&w)) != DG_OK ||
            (status = cuda_alloc(be, scratch_bytes, &scratch)) != DG_OK) {
            status = dg_error_prefix(status, "scratch for the convolution algorithm search");
            goto fail;
        }
        DG_TRY(cudaStreamSynchronize(cb->stream));
    }
    choice->shape = *shape;
    for (int d = CONV_FWD; d <= CONV_BWD_FILTER; d++)
        if ((status = conv_choose(cb, plan, (enum conv_direction)d, measure, x, y, w, scratch,
                                  scratch_bytes, choice)) != DG_OK)
            goto fail;
fail:
    cuda_free(be, x);
    cuda_free(be, y);
    cuda_free(be, w);
    cuda_free(be, scratch);
    return status;
}

static void cuda_conv_plan_free(struct dg_backend *be, void *handle)
{
    (void)be;
    struct cuda_conv_plan *plan = handle;
    if (!plan)
        return;
    if (plan->x_desc)
        cudnnDestroyTensorDescriptor(plan->x_desc);
    if (plan->y_desc)
        cudnnDestroyTensorDescriptor(plan->y_desc);
    if (plan->w_desc)
        cudnnDestroyFilterDescriptor(plan->w_desc);
    for (int d = 0; d < 3; d++)
        if (plan->desc[d])
            cudnnDestroyConvolutionDescriptor(plan->desc[d]);
    free(plan);
}

static enum dg_status cuda_conv_plan_create(struct dg_backend *be,
                                            const struct dg_conv_shape *shape, void **out)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    *out = NULL;
    if (shape->batch <= 0 || shape->in_channels <= 0 || shape->out_channels <= 0 ||
        shape->height <= 0 || shape->width <= 0 || shape->kernel <= 0 || shape->kernel % 2 == 0)
        return dg_error(DG_ERR_RUNTIME,
                        "cuda: bad convolution shape: batch %d, %d -> %d channels, %dx%d, "
                        "kernel %d",
                        shape->batch, shape->in_channels, shape->out_channels, shape->height,
                        shape->width, shape->kernel);
    struct cuda_conv_plan *plan = calloc(1, sizeof *plan);
    if (!plan)
        return dg_error(DG_ERR_NOMEM, "cuda: out of host memory for a convolution plan");
    plan->shape = *shape;
    int pad = shape->kernel / 2;
    DG_TRY(cudnnCreateTensorDescriptor(&plan->x_desc));
    DG_TRY(cudnnCreateTensorDescriptor(&plan->y_desc));
    DG_TRY(cudnnCreateFilterDescriptor(&plan->w_desc));
    DG_TRY(cudnnSetTensor4dDescriptor(plan->x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                      shape->batch, shape->in_channels, shape->height,
                                      shape->width));
    DG_TRY(cudnnSetTensor4dDescriptor(plan->y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                      shape->batch, shape->out_channels, shape->height,
                                      shape->width));
    DG_TRY(cudnnSetFilter4dDescriptor(plan->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                      shape->out_channels, shape->in_channels, shape->kernel,
                                      shape->kernel));
    for (int d = 0; d < 3; d++) {
        DG_TRY(cudnnCreateConvolutionDescriptor(&plan->desc[d]));
        DG_TRY(cudnnSetConvolution2dDescriptor(plan->desc[d], pad, pad, 1, 1, 1, 1,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    }
    int out_n = 0, out_c = 0, out_h = 0, out_w = 0;
    DG_TRY(cudnnGetConvolution2dForwardOutputDim(plan->desc[CONV_FWD], plan->x_desc, plan->w_desc,
                                                 &out_n, &out_c, &out_h, &out_w));
    if (out_n != shape->batch || out_c != shape->out_channels || out_h != shape->height ||
        out_w != shape->width) {
        status = dg_error(DG_ERR_RUNTIME,
                          "cuda: cuDNN convolution output %dx%dx%dx%d is not "
                          "the \"same\" shape %dx%dx%dx%d",
                          out_n, out_c, out_h, out_w, shape->batch, shape->out_channels,
                          shape->height, shape->width);
        goto fail;
    }

    const struct conv_choice *known = choice_find(cb, shape);
    if (known) {
        for (int d = CONV_FWD; d <= CONV_BWD_FILTER; d++)
            if ((status = plan_apply(cb, plan, (enum conv_direction)d, known->algo[d],
                                     known->math[d])) != DG_OK)
                goto fail;
    } else {
        struct conv_choice choice;
        memset(&choice, 0, sizeof choice);
        if ((status = plan_search(cb, plan, &choice)) != DG_OK)
            goto fail;
        choice_store(cb, &choice);
    }
    size_t need = 0;
    for (int d = 0; d < 3; d++)
        need = plan->workspace[d] > need ? plan->workspace[d] : need;
    if ((status = workspace_reserve(cb, need)) != DG_OK)
        goto fail;
    *out = plan;
    return DG_OK;
fail:
    cuda_conv_plan_free(be, plan);
    return status;
}

static const float one = 1.0f;
static const float zero = 0.0f;

static enum dg_status cuda_conv_fwd(struct dg_backend *be, void *handle, const float *x,
                                    const float *w, const float *bias, float *y, int relu)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_conv_plan *plan = handle;
    const struct dg_conv_shape *s = &plan->shape;
    enum dg_status status = DG_OK;
    DG_TRY(cudnnConvolutionForward(cb->cudnn, &one, plan->x_desc, x, plan->w_desc, w,
                                   plan->desc[CONV_FWD],
                                   (cudnnConvolutionFwdAlgo_t)plan->algo[CONV_FWD], cb->workspace,
                                   plan->workspace[CONV_FWD], &zero, plan->y_desc, y));
    DG_TRY(dg_launch_bias_act(y, bias, s->batch, s->out_channels, s->height * s->width, relu,
                              cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_conv_bwd_data(struct dg_backend *be, void *handle, const float *dy,
                                         const float *w, float *dx)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_conv_plan *plan = handle;
    enum dg_status status = DG_OK;
    DG_TRY(cudnnConvolutionBackwardData(
        cb->cudnn, &one, plan->w_desc, w, plan->y_desc, dy, plan->desc[CONV_BWD_DATA],
        (cudnnConvolutionBwdDataAlgo_t)plan->algo[CONV_BWD_DATA], cb->workspace,
        plan->workspace[CONV_BWD_DATA], &zero, plan->x_desc, dx));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_conv_bwd_filter(struct dg_backend *be, void *handle, const float *x,
                                           const float *dy, float *dw, float *db)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_conv_plan *plan = handle;
    const struct dg_conv_shape *s = &plan->shape;
    enum dg_status status = DG_OK;
    DG_TRY(cudnnConvolutionBackwardFilter(
        cb->cudnn, &one, plan->x_desc, x, plan->y_desc, dy, plan->desc[CONV_BWD_FILTER],
        (cudnnConvolutionBwdFilterAlgo_t)plan->algo[CONV_BWD_FILTER], cb->workspace,
        plan->workspace[CONV_BWD_FILTER], &zero, plan->w_desc, dw));
    if (db)
        DG_TRY(dg_launch_channel_sum(dy, s->batch, s->out_channels, s->height * s->width, db,
                                     cb->stream));
    return DG_OK;
fail:
    return status;
}

/* ---- element-wise and pooling ---- */

static enum dg_status cuda_relu_bwd(struct dg_backend *be, size_t n, const float *y, float *dy)
{
    enum dg_status status = DG_OK;
    DG_TRY(dg_launch_relu_bwd(n, y, dy, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_maxpool_fwd(struct dg_backend *be, const struct dg_pool_shape *shape,
                                       const float *x, float *y)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    if (shape->height < 2 || shape->width < 2)
        return dg_error(DG_ERR_RUNTIME, "cuda: max-pool input %dx%d is smaller than its window",
                        shape->height, shape->width);
    DG_TRY(cudnnSetTensor4dDescriptor(cb->pool_in_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                      shape->batch, shape->channels, shape->height, shape->width));
    DG_TRY(cudnnSetTensor4dDescriptor(cb->pool_out_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                      shape->batch, shape->channels, shape->height / 2,
                                      shape->width / 2));
    DG_TRY(cudnnPoolingForward(cb->cudnn, cb->pool_desc, &one, cb->pool_in_desc, x, &zero,
                               cb->pool_out_desc, y));
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
    DG_TRY(dg_launch_maxpool_bwd(x, dy, dx, shape->batch, shape->channels, shape->height,
                                 shape->width, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_dropout_fwd(struct dg_backend *be, size_t n, float rate,
                                       const struct dg_dropout_key *key, const float *x, float *y)
{
    enum dg_status status = DG_OK;
    DG_TRY(dg_launch_dropout(n, rate, *key, x, y, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_dropout_bwd(struct dg_backend *be, size_t n, float rate,
                                       const struct dg_dropout_key *key, const float *dy, float *dx)
{
    enum dg_status status = DG_OK;
    DG_TRY(dg_launch_dropout(n, rate, *key, dy, dx, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

/* ---- dense (cuBLAS is column-major: a row-major (r, c) matrix is its transpose there) ---- */

static enum dg_status cuda_dense_fwd(struct dg_backend *be, int batch, int in, int out,
                                     const float *x, const float *w, const float *b, float *y,
                                     int relu)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    /* y^T (out, batch) = w^T (out, in) x^T (in, batch) */
    DG_TRY(cublasSgemm(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_N, out, batch, in, &one, w, out, x, in,
                       &zero, y, out));
    DG_TRY(dg_launch_bias_act(y, b, batch, out, 1, relu, cb->stream));
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
    /* dx^T (in, batch) = w (in, out) dy^T (out, batch) */
    if (dx)
        DG_TRY(cublasSgemm(cb->cublas, CUBLAS_OP_T, CUBLAS_OP_N, in, batch, out, &one, w, out, dy,
                           out, &zero, dx, in));
    /* dw^T (out, in) = dy^T (out, batch) x (batch, in) */
    DG_TRY(cublasSgemm(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_T, out, in, batch, &one, dy, out, x, in,
                       &zero, dw, out));
    if (db)
        DG_TRY(dg_launch_channel_sum(dy, batch, out, 1, db, cb->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_softmax_xent(struct dg_backend *be, int batch, const float *logits,
                                        const uint8_t *labels, float *probs, float *dlogits,
                                        double *stats)
{
    enum dg_status status = DG_OK;
    DG_TRY(
        dg_launch_softmax_xent(batch, logits, labels, probs, dlogits, stats, cuda_of(be)->stream));
    return DG_OK;
fail:
    return status;
}

static enum dg_status cuda_rmsprop(struct dg_backend *be, size_t n, float *w, const float *g,
                                   float *acc, float lr, float rho, float eps)
{
    enum dg_status status = DG_OK;
    DG_TRY(dg_launch_rmsprop(n, w, g, acc, lr, rho, eps, cuda_of(be)->stream));
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
    if (cb->workspace)
        cudaFree(cb->workspace);
    if (cb->pool_desc)
        cudnnDestroyPoolingDescriptor(cb->pool_desc);
    if (cb->pool_in_desc)
        cudnnDestroyTensorDescriptor(cb->pool_in_desc);
    if (cb->pool_out_desc)
        cudnnDestroyTensorDescriptor(cb->pool_out_desc);
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
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .sync = cuda_sync,
    .dataset_attach = cuda_dataset_attach,
    .dataset_detach = cuda_dataset_detach,
    .batch_assemble = cuda_batch_assemble,
    .conv_plan_create = cuda_conv_plan_create,
    .conv_plan_free = cuda_conv_plan_free,
    .conv_fwd = cuda_conv_fwd,
    .conv_bwd_data = cuda_conv_bwd_data,
    .conv_bwd_filter = cuda_conv_bwd_filter,
    .relu_bwd = cuda_relu_bwd,
    .maxpool_fwd = cuda_maxpool_fwd,
    .maxpool_bwd = cuda_maxpool_bwd,
    .dropout_fwd = cuda_dropout_fwd,
    .dropout_bwd = cuda_dropout_bwd,
    .dense_fwd = cuda_dense_fwd,
    .dense_bwd = cuda_dense_bwd,
    .softmax_xent = cuda_softmax_xent,
    .rmsprop = cuda_rmsprop,
    .device_memory = cuda_device_memory,
};

int dg_cuda_built(void)
{
    return 1;
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
    be->host_allocator.alloc = pinned_alloc;
    be->host_allocator.free = pinned_free;
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
    DG_TRY(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
    DG_TRY(cudaStreamCreateWithFlags(&cb->copy_stream, cudaStreamNonBlocking));
    DG_TRY(cudnnCreate(&cb->cudnn));
    DG_TRY(cudnnSetStream(cb->cudnn, cb->stream));
    DG_TRY(cublasCreate(&cb->cublas));
    DG_TRY(cublasSetStream(cb->cublas, cb->stream));
    /* FP32: plain FP32 GEMMs (cuBLAS uses TF32 only when asked); TF32: tensor cores allowed. */
    DG_TRY(cublasSetMathMode(cb->cublas, cb->options.math == DG_CUDA_MATH_TF32
                                             ? CUBLAS_TF32_TENSOR_OP_MATH
                                             : CUBLAS_DEFAULT_MATH));
    DG_TRY(cudnnCreatePoolingDescriptor(&cb->pool_desc));
    DG_TRY(cudnnSetPooling2dDescriptor(cb->pool_desc, CUDNN_POOLING_MAX_DETERMINISTIC,
                                       CUDNN_NOT_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2));
    DG_TRY(cudnnCreateTensorDescriptor(&cb->pool_in_desc));
    DG_TRY(cudnnCreateTensorDescriptor(&cb->pool_out_desc));

    char cudnn_text[32];
    cudnn_version_text(cudnnGetVersion(), cudnn_text, sizeof cudnn_text);
    snprintf(be->description, sizeof be->description,
             "cuda: %.96s (cc %d.%d, %.1f GiB), cuDNN %s, %s math%s", prop.name, prop.major,
             prop.minor, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), cudnn_text,
             cb->options.math == DG_CUDA_MATH_TF32 ? "TF32" : "FP32",
             cb->options.deterministic ? ", deterministic" : "");
    *out = be;
    return DG_OK;
fail:
    cuda_destroy(be);
    return status;
}
