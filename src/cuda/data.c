/* Data on the CUDA backend: pinned host memory for image stores, datasets uploaded once when
 * they fit the budget (else streamed), and batch assembly through two staging slots on the
 * copy stream, gathered (and augmented) on the device by kernels/assemble.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

#define DG_CUDA_DEFAULT_DATASET_BUDGET ((size_t)1 << 30)

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

/* ---- pinned host memory for image stores ---- */

void *dg_cuda_pinned_alloc(size_t bytes, void *ctx)
{
    (void)ctx;
    void *ptr = NULL;
    if (cudaHostAlloc(&ptr, bytes ? bytes : 1, cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return ptr;
}

void dg_cuda_pinned_free(void *ptr, void *ctx)
{
    (void)ctx;
    if (ptr)
        cudaFreeHost(ptr);
}

/* ---- datasets and batches ---- */

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

void dg_cuda_dataset_detach(struct dg_backend *be, void *handle)
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

enum dg_status dg_cuda_dataset_attach(struct dg_backend *be, const struct dg_dataset *dataset,
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
        if (dg_cuda_alloc(be, image_bytes, (void **)&cd->images) != DG_OK ||
            dg_cuda_alloc(be, label_bytes, (void **)&cd->labels) != DG_OK) {
            /* within the budget but not in the free memory: stream it instead */
            dg_cuda_free(be, cd->images);
            dg_cuda_free(be, cd->labels);
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
        cb->counters.host_syncs++;
        DG_TRY(cudaStreamSynchronize(cb->stream));
    }
    *handle = cd;
    return DG_OK;
fail:
    dg_cuda_dataset_detach(be, cd);
    return status;
}

int dg_cuda_dataset_info(void *handle, size_t *count)
{
    const struct cuda_dataset *cd = handle;
    *count = cd->dataset->count;
    return cd->resident;
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
enum dg_status dg_cuda_batch_assemble(struct dg_backend *be, void *handle, const uint32_t *rows,
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
    uint8_t *labels_out = dataset->labels ? labels : NULL;
    if (cb->step.active && cd->resident && handle == cb->step.data_handle) {
        /* step mode: the rows and the augmentation's epoch and step from the step block (the
         * host's were checked and uploaded by step_begin) */
        const struct dg_step_block *vars = cb->step.block;
        if (rows != cb->step.rows || n != cb->step.n)
            return dg_error(DG_ERR_RUNTIME, "cuda: a batch of other rows inside a step");
        if (augment && (status = dg_cuda_step_vars(cb, augment->epoch, augment->step,
                                                   "augmentation", &vars)) != DG_OK)
            return status;
        DG_LAUNCH(cb, dg_launch_assemble(cd->images, cd->labels, cb->step.block->rows, n, augment,
                                         vars, x, labels_out, cb->stream));
        return DG_OK;
    }
    for (int i = 0; i < n; i++)
        if (rows[i] >= dataset->count)
            return dg_error(DG_ERR_RUNTIME,
                            "cuda: batch row %u is outside the dataset (%zu images)", rows[i],
                            dataset->count);
    /* outside step mode the augmentation's counters are the key's; a streamed store inside a
     * step takes them from the key too, checked against the step's */
    if (augment && cb->step.active) {
        const struct dg_step_block *unused = NULL;
        if ((status = dg_cuda_step_vars(cb, augment->epoch, augment->step, "augmentation",
                                        &unused)) != DG_OK)
            return status;
    }

    struct cuda_slot *slot = &cd->slots[cd->next_slot];
    cd->next_slot ^= 1;
    size_t count = (size_t)n;
    size_t bytes = cd->resident ? count * sizeof(uint32_t) : count * (DG_PIXELS + 1);
    if (slot->used) {
        cb->counters.host_syncs++;
        DG_TRY(cudaEventSynchronize(slot->copied));
    }
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
    DG_LAUNCH(cb, cudaMemcpyAsync(slot->device, slot->host, bytes, cudaMemcpyHostToDevice,
                                  cb->copy_stream));
    DG_TRY(cudaEventRecord(slot->copied, cb->copy_stream));
    DG_TRY(cudaStreamWaitEvent(cb->stream, slot->copied, 0));

    if (cd->resident)
        DG_LAUNCH(cb, dg_launch_assemble(cd->images, cd->labels, (const uint32_t *)slot->device, n,
                                         augment, NULL, x, labels_out, cb->stream));
    else
        DG_LAUNCH(cb, dg_launch_assemble(slot->device, slot->device + count * DG_PIXELS, NULL, n,
                                         augment, NULL, x, labels_out, cb->stream));
    DG_TRY(cudaEventRecord(slot->consumed, cb->stream));
    slot->used = 1;
    return DG_OK;
fail:
    return status;
}
