/* Step mode and CUDA Graphs on the CUDA backend (the optional struct dg_backend_ops entries
 * step_begin, step_end, capture_begin, capture_end, graph_launch, graph_free, counters,
 * timer_start, timer_stop).
 *
 * A training step's ops differ from one step to the next only in a few values: the epoch and
 * step of the dropout and augmentation draws, the learning rate, and the batch's rows. In step
 * mode those come from the step block in device memory (struct dg_step_block, launchers.h),
 * uploaded before the step by one asynchronous copy from a ring of pinned slots; every other
 * argument is the same each step. So a step captured once into a graph replays with each
 * step's own values (dg_net_train_step captures and replays; the eager path reads the same
 * block, so both compute the same bytes).
 *
 * Never captured: allocation (the block, the ring, plans and the workspace exist before the
 * capture), host reads and synchronisation (none inside a step), the upload of the block
 * itself (it precedes the graph launch on the stream). A graph remembers the convolution
 * workspace generation and the dataset it read: when the workspace has been replaced or
 * another dataset is attached, graph_launch reports it stale and the net captures again. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

struct cuda_graph {
    cudaGraphExec_t exec;
    unsigned long workspace_generation;
    void *data_handle;
};

static size_t block_bytes(int rows)
{
    return offsetof(struct dg_step_block, rows) + (size_t)(rows > 0 ? rows : 1) * sizeof(uint32_t);
}

/* Makes the device block and the pinned ring hold `rows` rows (outside any capture). */
static enum dg_status step_reserve(struct cuda_backend *cb, int rows)
{
    struct cuda_step *st = &cb->step;
    enum dg_status status = DG_OK;
    if (rows <= st->block_rows)
        return DG_OK;
    for (int r = 0; r < DG_CUDA_STEP_RING; r++)
        if (st->ring_used[r]) {
            DG_TRY(cudaEventSynchronize(st->ring_done[r]));
            cb->counters.host_syncs++;
            st->ring_used[r] = 0;
        }
    dg_cuda_free(&cb->base, st->block);
    st->block = NULL;
    st->block_rows = 0;
    for (int r = 0; r < DG_CUDA_STEP_RING; r++) {
        if (st->ring[r])
            cudaFreeHost(st->ring[r]);
        st->ring[r] = NULL;
    }
    if ((status = dg_cuda_alloc(&cb->base, block_bytes(rows), (void **)&st->block)) != DG_OK)
        return dg_error_prefix(status, "step block");
    for (int r = 0; r < DG_CUDA_STEP_RING; r++) {
        DG_TRY(cudaHostAlloc((void **)&st->ring[r], block_bytes(rows), cudaHostAllocDefault));
        if (!st->ring_done[r])
            DG_TRY(cudaEventCreateWithFlags(&st->ring_done[r], cudaEventDisableTiming));
    }
    st->block_rows = rows;
    return DG_OK;
fail:
    return status;
}

void dg_cuda_step_release(struct cuda_backend *cb)
{
    struct cuda_step *st = &cb->step;
    for (int r = 0; r < DG_CUDA_STEP_RING; r++) {
        if (st->ring[r])
            cudaFreeHost(st->ring[r]);
        if (st->ring_done[r])
            cudaEventDestroy(st->ring_done[r]);
    }
    for (int t = 0; t < 2; t++)
        if (st->timer[t])
            cudaEventDestroy(st->timer[t]);
    if (st->block)
        cudaFree(st->block);
    memset(st, 0, sizeof *st);
}

enum dg_status dg_cuda_step_begin(struct dg_backend *be, void *data_handle,
                                  const struct dg_step_values *values, const uint32_t *rows, int n,
                                  int *capturable)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_step *st = &cb->step;
    enum dg_status status = DG_OK;
    *capturable = 0;
    if (cb->capturing)
        return dg_error(DG_ERR_RUNTIME, "cuda: step_begin inside a capture");
    if (n < 1)
        return dg_error(DG_ERR_RUNTIME, "cuda: a step of %d images", n);
    size_t count = 0;
    int resident = dg_cuda_dataset_info(data_handle, &count);
    for (int i = 0; i < n; i++)
        if (rows[i] >= count)
            return dg_error(DG_ERR_RUNTIME,
                            "cuda: batch row %u is outside the dataset (%zu images)", rows[i],
                            count);
    if ((status = step_reserve(cb, n)) != DG_OK)
        return status;
    int r = st->ring_next;
    st->ring_next = (r + 1) % DG_CUDA_STEP_RING;
    if (st->ring_used[r]) {
        /* the copy from this slot, DG_CUDA_STEP_RING steps ago, has long run unless the host
         * is that far ahead of the device: then this wait is the queue's back-pressure */
        cudaError_t done = cudaEventQuery(st->ring_done[r]);
        if (done == cudaErrorNotReady) {
            cudaGetLastError();
            DG_TRY(cudaEventSynchronize(st->ring_done[r]));
            cb->counters.queue_waits++;
        } else {
            DG_TRY(done);
        }
    }
    struct dg_step_block *host = (struct dg_step_block *)st->ring[r];
    host->epoch = values->epoch;
    host->step = values->step;
    host->lr = values->lr;
    host->n = (uint32_t)n;
    memcpy(host->rows, rows, (size_t)n * sizeof(uint32_t));
    dg_cuda_count_launch(cb);
    DG_TRY(cudaMemcpyAsync(st->block, host, block_bytes(n), cudaMemcpyHostToDevice, cb->stream));
    DG_TRY(cudaEventRecord(st->ring_done[r], cb->stream));
    st->ring_used[r] = 1;
    st->active = 1;
    st->values = *values;
    st->data_handle = data_handle;
    st->rows = rows;
    st->n = n;
    *capturable = resident;
    return DG_OK;
fail:
    return status;
}

void dg_cuda_step_end(struct dg_backend *be)
{
    struct cuda_step *st = &cuda_of(be)->step;
    st->active = 0;
    st->rows = NULL;
    st->n = 0;
}

enum dg_status dg_cuda_step_vars(struct cuda_backend *cb, uint32_t epoch, uint32_t step,
                                 const char *op, const struct dg_step_block **vars)
{
    *vars = NULL;
    if (!cb->step.active)
        return DG_OK;
    if (epoch != cb->step.values.epoch || step != cb->step.values.step)
        return dg_error(DG_ERR_RUNTIME,
                        "cuda: %s of epoch %u step %u inside the step of epoch %u step %u", op,
                        epoch, step, cb->step.values.epoch, cb->step.values.step);
    *vars = cb->step.block;
    return DG_OK;
}

enum dg_status dg_cuda_step_lr(struct cuda_backend *cb, float lr, const struct dg_step_block **vars)
{
    *vars = NULL;
    if (!cb->step.active)
        return DG_OK;
    if (memcmp(&lr, &cb->step.values.lr, sizeof lr) != 0)
        return dg_error(DG_ERR_RUNTIME,
                        "cuda: an optimizer step at learning rate %g inside a step at %g",
                        (double)lr, (double)cb->step.values.lr);
    *vars = cb->step.block;
    return DG_OK;
}

enum dg_status dg_cuda_capture_begin(struct dg_backend *be)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    if (cb->capturing)
        return dg_error(DG_ERR_RUNTIME, "cuda: a capture is already under way");
    /* ThreadLocal: concurrent ensemble members on other threads may allocate meanwhile */
    DG_TRY(cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal));
    cb->capturing = 1;
    return DG_OK;
fail:
    return status;
}

enum dg_status dg_cuda_capture_end(struct dg_backend *be, int discard, void **out)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    *out = NULL;
    if (!cb->capturing)
        return dg_error(DG_ERR_RUNTIME, "cuda: no capture to end");
    cb->capturing = 0;
    cudaError_t ended = cudaStreamEndCapture(cb->stream, &graph);
    if (discard) {
        if (ended != cudaSuccess)
            cudaGetLastError();
        if (graph)
            cudaGraphDestroy(graph);
        return DG_OK;
    }
    DG_TRY(ended);
    DG_TRY(cudaGraphInstantiate(&exec, graph, 0));
    DG_TRY(cudaGraphDestroy(graph));
    graph = NULL;
    struct cuda_graph *g = calloc(1, sizeof *g);
    if (!g) {
        status = dg_error(DG_ERR_NOMEM, "cuda: out of host memory for a graph");
        goto fail;
    }
    g->exec = exec;
    g->workspace_generation = cb->workspace_generation;
    g->data_handle = cb->step.data_handle;
    *out = g;
    return DG_OK;
fail:
    if (exec)
        cudaGraphExecDestroy(exec);
    if (graph)
        cudaGraphDestroy(graph);
    return status;
}

enum dg_status dg_cuda_graph_launch(struct dg_backend *be, void *handle, int *stale)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_graph *g = handle;
    enum dg_status status = DG_OK;
    *stale = 0;
    if (!cb->step.active)
        return dg_error(DG_ERR_RUNTIME, "cuda: a graph launched outside a step");
    if (g->workspace_generation != cb->workspace_generation ||
        g->data_handle != cb->step.data_handle) {
        *stale = 1;
        return DG_OK;
    }
    dg_cuda_count_launch(cb);
    cb->counters.graph_launches++;
    DG_TRY(cudaGraphLaunch(g->exec, cb->stream));
    return DG_OK;
fail:
    return status;
}

void dg_cuda_graph_free(struct dg_backend *be, void *handle)
{
    (void)be;
    struct cuda_graph *g = handle;
    if (!g)
        return;
    if (g->exec)
        cudaGraphExecDestroy(g->exec);
    free(g);
}

void dg_cuda_counters(struct dg_backend *be, struct dg_backend_counters *out)
{
    *out = cuda_of(be)->counters;
}

/* ---- device timing (CUDA events on the compute stream) ---- */

enum dg_status dg_cuda_timer_start(struct dg_backend *be)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_step *st = &cb->step;
    enum dg_status status = DG_OK;
    if (cb->capturing)
        return dg_error(DG_ERR_RUNTIME, "cuda: timer_start inside a capture");
    for (int t = 0; t < 2; t++)
        if (!st->timer[t])
            DG_TRY(cudaEventCreate(&st->timer[t]));
    DG_TRY(cudaEventRecord(st->timer[0], cb->stream));
    st->timer_started = 1;
    return DG_OK;
fail:
    return status;
}

enum dg_status dg_cuda_timer_stop(struct dg_backend *be, double *seconds)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_step *st = &cb->step;
    enum dg_status status = DG_OK;
    float ms = 0;
    if (cb->capturing)
        return dg_error(DG_ERR_RUNTIME, "cuda: timer_stop inside a capture");
    if (!st->timer_started)
        return dg_error(DG_ERR_RUNTIME, "cuda: timer_stop without timer_start");
    st->timer_started = 0;
    DG_TRY(cudaEventRecord(st->timer[1], cb->stream));
    DG_TRY(cudaEventSynchronize(st->timer[1]));
    cb->counters.host_syncs++;
    DG_TRY(cudaEventElapsedTime(&ms, st->timer[0], st->timer[1]));
    *seconds = 1e-3 * (double)ms;
    return DG_OK;
fail:
    return status;
}
