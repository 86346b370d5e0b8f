/* A training step timed layer by layer, and a memory-counting wrapper around a backend's
 * vtable. The step is dg_net_train_step itself with the net's layer hook set, which syncs the
 * backend before and after the assembly, each layer's ops and the update so that their time is
 * their own (activations NCHW in backend memory). */
#include "digits/bench.h"

#include <stdlib.h>
#include <string.h>

/* Seconds since *mark after a sync; moves *mark to now. */
static enum dg_status lap(struct dg_backend *be, double *mark, double *seconds)
{
    enum dg_status status = be->ops->sync(be);
    double now = dg_bench_now();
    *seconds += now - *mark;
    *mark = now;
    return status;
}

struct step_timer {
    struct dg_net *net;
    struct dg_bench_op_times *times;
    double mark;
};

/* The net's layer hook: a sync and a time stamp around each layer's ops. Pass-through layers
 * (flatten, dropout outside training) issue no op and keep a time of 0. */
static enum dg_status time_layer(void *ctx, int layer, int backward, int end)
{
    struct step_timer *timer = ctx;
    struct dg_net *net = timer->net;
    struct dg_backend *be = net->be;
    if (!end) {
        enum dg_status status = be->ops->sync(be);
        timer->mark = dg_bench_now();
        return status;
    }
    double *slot;
    if (layer < 0)
        slot = &timer->times->assemble;
    else if (layer > net->model->layer_count)
        slot = &timer->times->update;
    else if (layer == net->model->layer_count)
        slot = &timer->times->softmax;
    else if (!backward)
        slot = net->out[layer + 1] == net->out[layer] ? NULL : &timer->times->forward[layer];
    else
        slot = net->dout[layer] == net->dout[layer + 1] ? NULL : &timer->times->backward[layer];
    double ignored = 0.0;
    return lap(be, &timer->mark, slot ? slot : &ignored);
}

enum dg_status dg_bench_timed_step(struct dg_net *net, void *data_handle, const uint32_t *rows,
                                   int n, const struct dg_net_mode *mode,
                                   const struct dg_augment_key *augment, float lr, float rho,
                                   float eps, struct dg_bench_op_times *times)
{
        enum dg_status status;
    memset(times, 0, sizeof *times);
    if (n != net->plan_batch)
        return dg_error(DG_ERR_RUNTIME, "bench: timed step of %d images on a net planned for %d", n,
                        net->plan_batch);
    struct step_timer timer = {net, times, dg_bench_now()};
    net->layer_hook = time_layer;
    net->layer_hook_ctx = &timer;
    status = dg_net_train_step(net, data_handle, rows, n, mode, augment, lr, rho, eps);
    net->layer_hook = NULL;
    net->layer_hook_ctx = NULL;
    return status;
}

/* ---- memory tracking ---- */

struct allocation {
    void *ptr;
    size_t bytes;
};

struct dg_bench_memory {
    struct dg_backend_ops ops; /* first: be->ops points here */
    const struct dg_backend_ops *inner;
    struct allocation *live;
    size_t live_count, live_capacity;
    struct dg_bench_memory_stats stats;
};

static struct dg_bench_memory *tracker_of(struct dg_backend *be)
{
    return (struct dg_bench_memory *)(void *)be->ops;
}

static enum dg_status tracked_alloc(struct dg_backend *be, size_t bytes, void **ptr)
{
    struct dg_bench_memory *tracker = tracker_of(be);
    if (tracker->live_count == tracker->live_capacity) {
        size_t capacity = tracker->live_capacity ? 2 * tracker->live_capacity : 64;
        struct allocation *live = realloc(tracker->live, capacity * sizeof *live);
        if (!live)
            return dg_error(DG_ERR_NOMEM, "bench: out of memory tracking allocations");
        tracker->live = live;
        tracker->live_capacity = capacity;
    }
    enum dg_status status = tracker->inner->alloc(be, bytes, ptr);
    if (status != DG_OK)
        return status;
    tracker->live[tracker->live_count].ptr = *ptr;
    tracker->live[tracker->live_count].bytes = bytes;
    tracker->live_count++;
    tracker->stats.allocations++;
    tracker->stats.current_bytes += bytes;
    if (tracker->stats.current_bytes > tracker->stats.peak_bytes)
        tracker->stats.peak_bytes = tracker->stats.current_bytes;
    return DG_OK;
}

static void tracked_free(struct dg_backend *be, void *ptr)
{
    struct dg_bench_memory *tracker = tracker_of(be);
    for (size_t i = tracker->live_count; i-- > 0;) {
        if (tracker->live[i].ptr == ptr) {
            tracker->stats.current_bytes -= tracker->live[i].bytes;
            tracker->live[i] = tracker->live[--tracker->live_count];
            break;
        }
    }
    tracker->inner->free(be, ptr);
}

enum dg_status dg_bench_memory_attach(struct dg_backend *be, struct dg_bench_memory **out)
{
    struct dg_bench_memory *tracker = calloc(1, sizeof *tracker);
    if (!tracker)
        return dg_error(DG_ERR_NOMEM, "bench: out of memory");
    tracker->inner = be->ops;
    tracker->ops = *be->ops;
    tracker->ops.alloc = tracked_alloc;
    tracker->ops.free = tracked_free;
    be->ops = &tracker->ops;
    *out = tracker;
    return DG_OK;
}

void dg_bench_memory_read(const struct dg_bench_memory *tracker, struct dg_bench_memory_stats *out)
{
    *out = tracker->stats;
}

void dg_bench_memory_reset_peak(struct dg_bench_memory *tracker)
{
    tracker->stats.peak_bytes = tracker->stats.current_bytes;
}

void dg_bench_memory_detach(struct dg_backend *be, struct dg_bench_memory *tracker)
{
    if (!tracker)
        return;
    if (be->ops == &tracker->ops)
        be->ops = tracker->inner;
    free(tracker->live);
    free(tracker);
}
