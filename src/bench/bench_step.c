/* A training step timed op by op, and a memory-counting wrapper around a backend's vtable.
 * The step issues the vtable calls of src/nn/net.c in the same order on the same buffers
 * (activations NCHW in backend memory, net->out / net->dout as net.c sets them), with a
 * backend sync before and after each call so that its time is its own. */
#include "digits/bench.h"

#include <stdlib.h>
#include <string.h>

static size_t layer_out_size(const struct dg_layer *layer)
{
    return (size_t)layer->out_c * layer->out_h * layer->out_w;
}

/* Seconds since *mark after a sync; moves *mark to now. */
static enum dg_status lap(struct dg_backend *be, double *mark, double *seconds)
{
    enum dg_status status = be->ops->sync(be);
    double now = dg_bench_now();
    *seconds += now - *mark;
    *mark = now;
    return status;
}

enum dg_status dg_bench_timed_step(struct dg_net *net, void *data_handle, const uint32_t *rows,
                                   int n, const struct dg_net_mode *mode,
                                   const struct dg_augment_key *augment, float lr, float rho,
                                   float eps, struct dg_bench_op_times *times)
{
    struct dg_backend *be = net->be;
    const struct dg_model *model = net->model;
    enum dg_status status;
    memset(times, 0, sizeof *times);
    if (n != net->plan_batch)
        return dg_error(DG_ERR_RUNTIME, "bench: timed step of %d images on a net planned for %d", n,
                        net->plan_batch);
    if ((status = be->ops->sync(be)) != DG_OK)
        return status;
    double mark = dg_bench_now();

    status = be->ops->batch_assemble(be, data_handle, rows, n, augment, net->act[0], net->labels);
    if (status != DG_OK || (status = lap(be, &mark, &times->assemble)) != DG_OK)
        return dg_error_prefix(status, "assemble");

    net->out[0] = net->act[0];
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        const float *x = net->out[i];
        float *y = net->act[i + 1];
        const float *w = net->params + layer->weight_offset;
        const float *b = net->params + layer->bias_offset;
        switch (layer->spec.kind) {
        case DG_LAYER_CONV:
            status = be->ops->conv_fwd(be, net->plans[i], x, w, b, y, layer->spec.relu);
            break;
        case DG_LAYER_MAXPOOL: {
            struct dg_pool_shape shape = {n, layer->in_c, layer->in_h, layer->in_w};
            status = be->ops->maxpool_fwd(be, &shape, x, y);
            break;
        }
        case DG_LAYER_DROPOUT:
            if (mode->training && layer->spec.rate > 0.0f) {
                struct dg_dropout_key key = {mode->seed, (uint32_t)layer->dropout_ordinal,
                                             mode->epoch, mode->step};
                status = be->ops->dropout_fwd(be, (size_t)n * layer_out_size(layer),
                                              layer->spec.rate, &key, x, y);
            } else {
                y = (float *)x;
            }
            break;
        case DG_LAYER_FLATTEN:
            y = (float *)x;
            break;
        case DG_LAYER_DENSE:
            status =
                be->ops->dense_fwd(be, n, layer->in_c, layer->out_c, x, w, b, y, layer->spec.relu);
            break;
        }
        if (status != DG_OK || (status = lap(be, &mark, &times->forward[i])) != DG_OK)
            return dg_error_prefix(status, "%s forward", layer->name);
        net->out[i + 1] = y;
    }
    status = be->ops->softmax_xent(be, n, net->out[model->layer_count], net->labels, net->probs,
                                   mode->training ? net->dlogits : NULL, net->stats);
    if (status != DG_OK || (status = lap(be, &mark, &times->softmax)) != DG_OK)
        return dg_error_prefix(status, "softmax forward");

    net->dout[model->layer_count] = net->dlogits;
    for (int i = model->layer_count - 1; i >= 0; i--) {
        const struct dg_layer *layer = &model->layers[i];
        const float *x = net->out[i];
        const float *y = net->out[i + 1];
        float *dy = net->dout[i + 1];
        float *dx = i > 0 ? net->dact[i] : NULL;
        const float *w = net->params + layer->weight_offset;
        float *dw = net->grads + layer->weight_offset;
        float *db = net->grads + layer->bias_offset;
        size_t out_count = (size_t)n * layer_out_size(layer);
        status = DG_OK;
        switch (layer->spec.kind) {
        case DG_LAYER_CONV:
            if (layer->spec.relu && (status = be->ops->relu_bwd(be, out_count, y, dy)) != DG_OK)
                break;
            if ((status = be->ops->conv_bwd_filter(be, net->plans[i], x, dy, dw, db)) != DG_OK)
                break;
            if (dx)
                status = be->ops->conv_bwd_data(be, net->plans[i], dy, w, dx);
            break;
        case DG_LAYER_MAXPOOL: {
            struct dg_pool_shape shape = {n, layer->in_c, layer->in_h, layer->in_w};
            if (dx)
                status = be->ops->maxpool_bwd(be, &shape, x, y, dy, dx);
            break;
        }
        case DG_LAYER_DROPOUT:
            if (mode->training && layer->spec.rate > 0.0f) {
                struct dg_dropout_key key = {mode->seed, (uint32_t)layer->dropout_ordinal,
                                             mode->epoch, mode->step};
                if (dx)
                    status = be->ops->dropout_bwd(be, out_count, layer->spec.rate, &key, dy, dx);
            } else {
                dx = dy;
            }
            break;
        case DG_LAYER_FLATTEN:
            dx = dy;
            break;
        case DG_LAYER_DENSE:
            if (layer->spec.relu && (status = be->ops->relu_bwd(be, out_count, y, dy)) != DG_OK)
                break;
            status = be->ops->dense_bwd(be, n, layer->in_c, layer->out_c, x, w, dy, dx, dw, db);
            break;
        }
        if (status != DG_OK || (status = lap(be, &mark, &times->backward[i])) != DG_OK)
            return dg_error_prefix(status, "%s backward", layer->name);
        net->dout[i] = dx;
    }

    status = dg_net_update(net, lr, rho, eps);
    if (status != DG_OK || (status = lap(be, &mark, &times->update)) != DG_OK)
        return dg_error_prefix(status, "update");
    return DG_OK;
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
