/* A model on a backend: buffers in backend memory and forward / backward / update over the
 * layer table, calling only the backend vtable (no backend-specific code here).
 * Activations NCHW (batch, c, h, w), or NHWC (batch, h, w, c) where the backend says it runs
 * them faster (its nhwc op: the CPU); flatten gives the NCHW order either way. */
#include "digits/net.h"

#include "math/adam.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum dg_status hook(struct dg_net *net, int layer, int backward, int end)
{
    return net->layer_hook ? net->layer_hook(net->layer_hook_ctx, layer, backward, end) : DG_OK;
}

static size_t layer_out_size(const struct dg_layer *layer)
{
    return (size_t)layer->out_c * layer->out_h * layer->out_w;
}

static enum dg_status alloc_floats(struct dg_net *net, size_t count, float **ptr)
{
    void *mem = NULL;
    enum dg_status status = net->be->ops->alloc(net->be, count * sizeof(float), &mem);
    *ptr = mem;
    return status;
}

struct dg_conv_shape dg_layer_conv_shape(const struct dg_layer *layer, int batch)
{
    struct dg_conv_shape shape = {batch,       layer->in_c, layer->out_c,       layer->in_h,
                                  layer->in_w, layer->spec.kernel, layer->spec.stride,
                                  layer->spec.valid, 0};
    return shape;
}

/* 1 when layer's output (its input for `input`) is NHWC in this net: an image of more than
 * one pixel and more than one channel (flat tensors are 1x1, and one channel lies the same in
 * both layouts). */
static int nhwc_out(const struct dg_net *net, const struct dg_layer *layer, int input)
{
    int c = input ? layer->in_c : layer->out_c;
    int pixels = input ? layer->in_h * layer->in_w : layer->out_h * layer->out_w;
    return net->nhwc && pixels > 1 && c > 1;
}

int dg_net_nhwc_at(const struct dg_net *net, int layer, int input)
{
    if (layer < 0 || layer >= net->model->layer_count)
        return 0;
    return nhwc_out(net, &net->model->layers[layer], input);
}

static struct dg_dropout_key dropout_key(const struct dg_net *net, const struct dg_layer *layer,
                                         const struct dg_net_mode *mode)
{
    struct dg_dropout_key key = {mode->seed, (uint32_t)layer->dropout_ordinal, mode->epoch,
                                 mode->step, 0, 0};
    if (nhwc_out(net, layer, 0)) {
        key.channels = layer->out_c;
        key.spatial = layer->out_h * layer->out_w;
    }
    return key;
}

static void free_plans(struct dg_net *net, void **plans)
{
    for (int i = 0; i < net->model->layer_count; i++) {
        if (plans[i])
            net->be->ops->conv_plan_free(net->be, plans[i]);
        plans[i] = NULL;
    }
}

static enum dg_status create_plans(struct dg_net *net, int batch, void **plans)
{
    for (int i = 0; i < net->model->layer_count; i++) {
        const struct dg_layer *layer = &net->model->layers[i];
        if (layer->spec.kind != DG_LAYER_CONV)
            continue;
        struct dg_conv_shape shape = dg_layer_conv_shape(layer, batch);
        shape.nhwc = net->nhwc;
        enum dg_status status = net->be->ops->conv_plan_create(net->be, &shape, &plans[i]);
        if (status != DG_OK) {
            free_plans(net, plans);
            return status;
        }
    }
    return DG_OK;
}

/* The conv plans for a batch of n images (the full batch, or the epoch's last partial one). */
static enum dg_status plans_for(struct dg_net *net, int n, void ***plans)
{
    if (n == net->plan_batch) {
        *plans = net->plans;
        return DG_OK;
    }
    if (n != net->plan_alt_batch) {
        free_plans(net, net->plans_alt);
        net->plan_alt_batch = 0;
        enum dg_status status = create_plans(net, n, net->plans_alt);
        if (status != DG_OK)
            return status;
        net->plan_alt_batch = n;
    }
    *plans = net->plans_alt;
    return DG_OK;
}

enum dg_status dg_net_create(struct dg_backend *be, const struct dg_model *model, int max_batch,
                             struct dg_net **out)
{
    enum dg_status status;
    *out = NULL;
    if (max_batch < 1)
        return dg_error(DG_ERR_USAGE, "batch size must be at least 1 (got %d)", max_batch);
    struct dg_net *net = calloc(1, sizeof *net);
    if (!net)
        return dg_error(DG_ERR_NOMEM, "net: out of memory");
    net->be = be;
    net->model = model;
    net->max_batch = max_batch;
    net->nhwc = be->ops->nhwc && be->ops->nhwc(be) && be->ops->transpose &&
                be->ops->gap_nhwc_fwd && be->ops->gap_nhwc_bwd;
    size_t batch = (size_t)max_batch;
    if ((status = alloc_floats(net, model->param_count, &net->params)) != DG_OK ||
        (status = alloc_floats(net, model->param_count, &net->grads)) != DG_OK ||
        (status = alloc_floats(net, model->param_count, &net->rms_acc)) != DG_OK ||
        (status = alloc_floats(net, batch * DG_PIXELS, &net->act[0])) != DG_OK ||
        (status = alloc_floats(net, batch * DG_CLASSES, &net->probs)) != DG_OK ||
        (status = alloc_floats(net, batch * DG_CLASSES, &net->dlogits)) != DG_OK)
        goto fail;
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        size_t size = batch * layer_out_size(layer);
        if ((status = alloc_floats(net, size, &net->act[i + 1])) != DG_OK)
            goto fail;
        if (i + 1 < model->layer_count &&
            (status = alloc_floats(net, size, &net->dact[i + 1])) != DG_OK)
            goto fail;
        if (layer->spec.kind == DG_LAYER_BATCHNORM &&
            ((status = alloc_floats(net, 2 * (size_t)layer->out_c, &net->bn_save[i])) != DG_OK ||
             (i == 0 && (status = alloc_floats(net, batch * DG_PIXELS, &net->dact[0])) != DG_OK)))
            goto fail;
    }
    /* grads comes zeroed from alloc, and the gradients of what the optimiser must not move
     * (batchnorm's running statistics) stay zero: no backward pass writes them */
    void *mem = NULL;
    if ((status = be->ops->alloc(be, batch, &mem)) != DG_OK)
        goto fail;
    net->labels = mem;
    if ((status = be->ops->alloc(be, 3 * sizeof(double), &mem)) != DG_OK)
        goto fail;
    net->stats = mem;
    if ((status = create_plans(net, max_batch, net->plans)) != DG_OK)
        goto fail;
    net->plan_batch = max_batch;
    for (int i = 0; i < model->layer_count && be->ops->dense_reserve; i++) {
        const struct dg_layer *layer = &model->layers[i];
        if (layer->spec.kind == DG_LAYER_DENSE &&
            (status = be->ops->dense_reserve(be, max_batch, layer->in_c, layer->out_c)) != DG_OK)
            goto fail;
    }
    *out = net;
    return DG_OK;
fail:
    dg_net_free(net);
    return status;
}

void dg_net_free(struct dg_net *net)
{
    if (!net)
        return;
    struct dg_backend *be = net->be;
    if (net->graph)
        be->ops->graph_free(be, net->graph);
    if (net->trace)
        be->ops->free(be, net->trace);
    free_plans(net, net->plans);
    free_plans(net, net->plans_alt);
    float *buffers[] = {net->params,  net->grads,  net->rms_acc, net->probs,
                        net->dlogits, net->opt_v, net->opt_pow, net->ema};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
        if (buffers[i])
            be->ops->free(be, buffers[i]);
    for (int i = 0; i <= DG_MAX_LAYERS; i++) {
        if (net->act[i])
            be->ops->free(be, net->act[i]);
        if (net->dact[i])
            be->ops->free(be, net->dact[i]);
        if (i < DG_MAX_LAYERS && net->bn_save[i])
            be->ops->free(be, net->bn_save[i]);
    }
    if (net->labels)
        be->ops->free(be, net->labels);
    if (net->stats)
        be->ops->free(be, net->stats);
    free(net);
}

enum dg_status dg_net_upload_params(struct dg_net *net, const float *host_params, int reset_rms)
{
    size_t bytes = net->model->param_count * sizeof(float);
    enum dg_status status = net->be->ops->upload(net->be, net->params, host_params, bytes);
    if (status != DG_OK || !reset_rms)
        return status;
    float *zeros = calloc(net->model->param_count, sizeof(float));
    if (!zeros)
        return dg_error(DG_ERR_NOMEM, "net: out of memory");
    status = net->be->ops->upload(net->be, net->rms_acc, zeros, bytes);
    if (status == DG_OK && net->opt_v)
        status = dg_net_upload_adam(net, zeros, 0);
    free(zeros);
    return status;
}

void dg_optimizer_default(struct dg_optimizer *opt, int kind)
{
    memset(opt, 0, sizeof *opt);
    opt->kind = kind;
    opt->beta1 = 0.9f;
    opt->beta2 = 0.999f;
    opt->adam_eps = 1e-7f;
    opt->momentum = 0.9f;
    opt->nesterov = 0;
}

static const char *const optimizer_names[] = {"rmsprop", "adam", "sgd"};

const char *dg_optimizer_name(int kind)
{
    return kind >= 0 && kind < 3 ? optimizer_names[kind] : "unknown";
}

int dg_optimizer_from_name(const char *name, int *kind)
{
    for (int k = 0; k < 3; k++)
        if (strcmp(name, optimizer_names[k]) == 0) {
            *kind = k;
            return 1;
        }
    return 0;
}

enum dg_status dg_net_set_optimizer(struct dg_net *net, const struct dg_optimizer *opt)
{
    enum dg_status status;
    net->optimizer = *opt;
    if (opt->kind != DG_OPTIMIZER_ADAM)
        return DG_OK;
    if (!net->opt_v && (status = alloc_floats(net, net->model->param_count, &net->opt_v)) != DG_OK)
        return status;
    if (!net->opt_pow && (status = alloc_floats(net, 2, &net->opt_pow)) != DG_OK)
        return status;
    float *zeros = calloc(net->model->param_count, sizeof(float));
    if (!zeros)
        return dg_error(DG_ERR_NOMEM, "net: out of memory");
    status = dg_net_upload_adam(net, zeros, 0);
    free(zeros);
    return status;
}

enum dg_status dg_net_set_ema(struct dg_net *net, float decay, const float *host_init)
{
    enum dg_status status;
    if (!(decay > 0.0f && decay < 1.0f))
        return dg_error(DG_ERR_RUNTIME, "net: a moving average of decay %g", (double)decay);
    if (!net->ema && (status = alloc_floats(net, net->model->param_count, &net->ema)) != DG_OK)
        return status;
    net->ema_decay = decay;
    return net->be->ops->upload(net->be, net->ema, host_init,
                                net->model->param_count * sizeof(float));
}

enum dg_status dg_net_download_ema(struct dg_net *net, float *host)
{
    if (!net->ema)
        return dg_error(DG_ERR_RUNTIME, "net: no moving average of the weights");
    return net->be->ops->download(net->be, host, net->ema,
                                  net->model->param_count * sizeof(float));
}

void dg_net_swap_ema(struct dg_net *net)
{
    float *params = net->params;
    net->params = net->ema;
    net->ema = params;
}

enum dg_status dg_net_upload_adam(struct dg_net *net, const float *host_v, uint64_t t)
{
    if (!net->opt_v)
        return dg_error(DG_ERR_RUNTIME, "net: Adam's state on a net without Adam");
    float pow[2];
    dg_adam_powers(t, net->optimizer.beta1, net->optimizer.beta2, pow);
    enum dg_status status = net->be->ops->upload(net->be, net->opt_v, host_v,
                                                 net->model->param_count * sizeof(float));
    if (status == DG_OK)
        status = net->be->ops->upload(net->be, net->opt_pow, pow, sizeof pow);
    return status;
}

enum dg_status dg_net_download_adam_v(struct dg_net *net, float *host_v)
{
    if (!net->opt_v)
        return dg_error(DG_ERR_RUNTIME, "net: Adam's state on a net without Adam");
    return net->be->ops->download(net->be, host_v, net->opt_v,
                                  net->model->param_count * sizeof(float));
}

enum dg_status dg_net_download_params(struct dg_net *net, float *host_params)
{
    return net->be->ops->download(net->be, host_params, net->params,
                                  net->model->param_count * sizeof(float));
}

enum dg_status dg_net_upload_rms(struct dg_net *net, const float *host_rms)
{
    return net->be->ops->upload(net->be, net->rms_acc, host_rms,
                                net->model->param_count * sizeof(float));
}

enum dg_status dg_net_download_rms(struct dg_net *net, float *host_rms)
{
    return net->be->ops->download(net->be, host_rms, net->rms_acc,
                                  net->model->param_count * sizeof(float));
}

enum dg_status dg_net_forward(struct dg_net *net, int n, const struct dg_net_mode *mode,
                              const uint8_t *labels)
{
    struct dg_backend *be = net->be;
    const struct dg_model *model = net->model;
    enum dg_status status;
    void **plans;
    if (n < 1 || n > net->max_batch)
        return dg_error(DG_ERR_RUNTIME, "net: batch of %d outside 1..%d", n, net->max_batch);
    if ((status = plans_for(net, n, &plans)) != DG_OK)
        return status;
    net->out[0] = net->act[0];
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        const float *x = net->out[i];
        float *y = net->act[i + 1];
        const float *w = net->params + layer->weight_offset;
        const float *b = net->params + layer->bias_offset;
        if ((status = hook(net, i, 0, 0)) != DG_OK)
            return status;
        switch (layer->spec.kind) {
        case DG_LAYER_CONV:
            status = be->ops->conv_fwd(be, plans[i], x, w, b, y, layer->spec.relu);
            break;
        case DG_LAYER_MAXPOOL: {
            struct dg_pool_shape shape = {n, layer->in_c, layer->in_h, layer->in_w,
                                          nhwc_out(net, layer, 1)};
            status = be->ops->maxpool_fwd(be, &shape, x, y);
            break;
        }
        case DG_LAYER_DROPOUT:
            if (mode->training && layer->spec.rate > 0.0f) {
                struct dg_dropout_key key = dropout_key(net, layer, mode);
                status = be->ops->dropout_fwd(be, (size_t)n * layer_out_size(layer),
                                              layer->spec.rate, &key, x, y);
            } else {
                y = (float *)x;
            }
            break;
        case DG_LAYER_FLATTEN:
            if (nhwc_out(net, layer, 1))
                status = be->ops->transpose(be, n, layer->in_h * layer->in_w, layer->in_c, x, y);
            else
                y = (float *)x;
            break;
        case DG_LAYER_GAP:
            if (nhwc_out(net, layer, 1))
                status = be->ops->gap_nhwc_fwd(be, n, layer->in_c, layer->in_h * layer->in_w, x,
                                               y);
            else
                status = be->ops->gap_fwd(be, (size_t)n * layer->in_c,
                                          layer->in_h * layer->in_w, x, y);
            break;
        case DG_LAYER_DENSE:
            status = be->ops->dense_fwd(be, n, layer->in_c, layer->out_c, x, w, b, y,
                                        layer->spec.relu);
            break;
        case DG_LAYER_BATCHNORM: {
            struct dg_bn_shape shape = {n, layer->out_c, layer->out_h * layer->out_w,
                                        nhwc_out(net, layer, 0)};
            float *stats = net->params + layer->stat_offset;
            if (mode->training)
                status = be->ops->batchnorm_fwd_train(
                    be, &shape, x, w, b, stats, stats + layer->out_c, DG_BN_MOMENTUM,
                    DG_BN_EPSILON, y, net->bn_save[i], net->bn_save[i] + layer->out_c);
            else
                status = be->ops->batchnorm_fwd_infer(be, &shape, x, w, b, stats,
                                                      stats + layer->out_c, DG_BN_EPSILON, y);
            break;
        }
        }
        if (status != DG_OK)
            return dg_error_prefix(status, "%s forward", layer->name);
        net->out[i + 1] = y;
        if ((status = hook(net, i, 0, 1)) != DG_OK)
            return status;
    }
    if ((status = hook(net, model->layer_count, 0, 0)) != DG_OK)
        return status;
    int traced = labels && mode->training && net->trace;
    status = be->ops->softmax_xent(be, n, net->out[model->layer_count], labels,
                                   labels ? net->label_smoothing : 0.0f, net->probs,
                                   labels && mode->training ? net->dlogits : NULL,
                                   labels ? net->stats : NULL, traced ? net->trace : NULL);
    if (status != DG_OK)
        return dg_error_prefix(status, "softmax forward");
    return hook(net, model->layer_count, 0, 1);
}

enum dg_status dg_net_backward(struct dg_net *net, int n, const struct dg_net_mode *mode)
{
    struct dg_backend *be = net->be;
    const struct dg_model *model = net->model;
    enum dg_status status = DG_OK;
    void **plans;
    if ((status = plans_for(net, n, &plans)) != DG_OK)
        return status;
    net->dout[model->layer_count] = net->dlogits;
    int relu_taken = 0; /* by the batchnorm after layer i: layer i's ReLU backward is done */
    for (int i = model->layer_count - 1; i >= 0; i--) {
        int relu_done = relu_taken;
        relu_taken = 0;
        const struct dg_layer *layer = &model->layers[i];
        const float *x = net->out[i];
        const float *y = net->out[i + 1];
        float *dy = net->dout[i + 1];
        float *dx = i > 0 ? net->dact[i] : NULL;
        const float *w = net->params + layer->weight_offset;
        float *dw = net->grads + layer->weight_offset;
        float *db = net->grads + layer->bias_offset;
        size_t out_count = (size_t)n * layer_out_size(layer);
        if ((status = hook(net, i, 1, 0)) != DG_OK)
            return status;
        switch (layer->spec.kind) {
        case DG_LAYER_CONV:
            if (layer->spec.relu && !relu_done &&
                (status = be->ops->relu_bwd(be, out_count, y, dy)) != DG_OK)
                break;
            if ((status = be->ops->conv_bwd_filter(be, plans[i], x, dy, dw, db)) != DG_OK)
                break;
            if (dx)
                status = be->ops->conv_bwd_data(be, plans[i], dy, w, dx);
            break;
        case DG_LAYER_MAXPOOL: {
            struct dg_pool_shape shape = {n, layer->in_c, layer->in_h, layer->in_w,
                                          nhwc_out(net, layer, 1)};
            if (dx)
                status = be->ops->maxpool_bwd(be, &shape, x, y, dy, dx);
            break;
        }
        case DG_LAYER_DROPOUT:
            if (mode->training && layer->spec.rate > 0.0f) {
                struct dg_dropout_key key = dropout_key(net, layer, mode);
                if (dx)
                    status = be->ops->dropout_bwd(be, out_count, layer->spec.rate, &key, dy, dx);
            } else {
                dx = dy;
            }
            break;
        case DG_LAYER_FLATTEN:
            if (!nhwc_out(net, layer, 1))
                dx = dy;
            else if (dx)
                status = be->ops->transpose(be, n, layer->in_c, layer->in_h * layer->in_w, dy, dx);
            break;
        case DG_LAYER_GAP:
            if (dx && nhwc_out(net, layer, 1))
                status = be->ops->gap_nhwc_bwd(be, n, layer->in_c, layer->in_h * layer->in_w, dy,
                                               dx);
            else if (dx)
                status = be->ops->gap_bwd(be, (size_t)n * layer->in_c, layer->in_h * layer->in_w,
                                          dy, dx);
            break;
        case DG_LAYER_DENSE:
            if (layer->spec.relu && !relu_done &&
                (status = be->ops->relu_bwd(be, out_count, y, dy)) != DG_OK)
                break;
            status = be->ops->dense_bwd(be, n, layer->in_c, layer->out_c, x, w, dy, dx, dw, db);
            break;
        case DG_LAYER_BATCHNORM: {
            struct dg_bn_shape shape = {n, layer->out_c, layer->out_h * layer->out_w,
                                        nhwc_out(net, layer, 0)};
            /* the ReLU of the layer before (whose output x is) in the same pass */
            const struct dg_layer *before = i > 0 ? &model->layers[i - 1] : NULL;
            int fuse = dx && !net->separate_ops && be->ops->batchnorm_bwd_relu && before &&
                       (before->spec.kind == DG_LAYER_CONV ||
                        before->spec.kind == DG_LAYER_DENSE) &&
                       before->spec.relu;
            status = (fuse ? be->ops->batchnorm_bwd_relu : be->ops->batchnorm_bwd)(
                be, &shape, x, dy, w, net->bn_save[i], net->bn_save[i] + layer->out_c,
                dx ? dx : net->dact[0], dw, db);
            relu_taken = fuse;
            break;
        }
        }
        if (status != DG_OK)
            return dg_error_prefix(status, "%s backward", layer->name);
        net->dout[i] = dx;
        if ((status = hook(net, i, 1, 1)) != DG_OK)
            return status;
    }
    return DG_OK;
}

enum dg_status dg_net_update(struct dg_net *net, float lr, float rho, float eps)
{
    struct dg_backend *be = net->be;
    const struct dg_optimizer *opt = &net->optimizer;
    size_t n = net->model->param_count;
    switch (opt->kind) {
    case DG_OPTIMIZER_ADAM:
        if (!net->opt_v || !net->opt_pow)
            return dg_error(DG_ERR_RUNTIME, "net: Adam without its state (dg_net_set_optimizer)");
        return be->ops->adam(be, n, net->params, net->grads, net->rms_acc, net->opt_v,
                             net->opt_pow, lr, opt->beta1, opt->beta2, opt->adam_eps);
    case DG_OPTIMIZER_SGD:
        return be->ops->sgd(be, n, net->params, net->grads, net->rms_acc, lr, opt->momentum,
                            opt->nesterov);
    default:
        return be->ops->rmsprop(be, n, net->params, net->grads, net->rms_acc, lr, rho, eps);
    }
}

/* The ops of one training step, as they run (or are captured). */
static enum dg_status step_ops(struct dg_net *net, void *data_handle, const uint32_t *rows, int n,
                               const struct dg_net_mode *mode,
                               const struct dg_augment_key *augment, float lr, float rho,
                               float eps)
{
    struct dg_backend *be = net->be;
    int update_layer = net->model->layer_count + 1;
    enum dg_status status;
    if ((status = hook(net, -1, 0, 0)) != DG_OK ||
        (status = be->ops->batch_assemble(be, data_handle, rows, n, augment, net->act[0],
                                          net->labels)) != DG_OK ||
        (status = hook(net, -1, 0, 1)) != DG_OK)
        return status;
    if ((status = dg_net_forward(net, n, mode, net->labels)) != DG_OK ||
        (status = dg_net_backward(net, n, mode)) != DG_OK)
        return status;
    if ((status = hook(net, update_layer, 1, 0)) != DG_OK ||
        (status = dg_net_update(net, lr, rho, eps)) != DG_OK)
        return status;
    if (net->ema && (status = be->ops->ema(be, net->model->param_count, net->ema, net->params,
                                           net->ema_decay)) != DG_OK)
        return dg_error_prefix(status, "the moving average of the weights");
    return hook(net, update_layer, 1, 1);
}

/* What a captured step was captured with besides the step's values (those come from the step
 * block): a step that differs in any of these is captured again. */
struct graph_key {
    void *data_handle;
    int n;
    int augment;
    float rotation_deg, shift, zoom;
    uint64_t augment_seed;
    uint64_t seed;
    float rho, eps;
    float label_smoothing;
    struct dg_optimizer optimizer;
    double *trace;
    float *params, *ema;
    float ema_decay;
};

_Static_assert(sizeof(struct graph_key) <= sizeof(((struct dg_net *)0)->graph_key),
               "dg_net.graph_key holds a struct graph_key");

static void graph_key_make(const struct dg_net *net, void *data_handle, int n,
                           const struct dg_net_mode *mode, const struct dg_augment_key *augment,
                           float rho, float eps, unsigned char *out)
{
    struct graph_key key;
    memset(&key, 0, sizeof key);
    key.data_handle = data_handle;
    key.n = n;
    key.augment = augment != NULL;
    if (augment) {
        key.rotation_deg = augment->rotation_deg;
        key.shift = augment->shift;
        key.zoom = augment->zoom;
        key.augment_seed = augment->seed;
    }
    key.seed = mode->seed;
    key.rho = rho;
    key.eps = eps;
    key.label_smoothing = net->label_smoothing;
    key.optimizer = net->optimizer;
    key.trace = net->trace;
    key.params = net->params;
    key.ema = net->ema;
    key.ema_decay = net->ema_decay;
    memset(out, 0, sizeof net->graph_key);
    memcpy(out, &key, sizeof key);
}

static void graph_drop(struct dg_net *net)
{
    if (net->graph)
        net->be->ops->graph_free(net->be, net->graph);
    net->graph = NULL;
}

/* Captures the step's ops into net->graph (nothing runs). */
static enum dg_status graph_capture(struct dg_net *net, void *data_handle, const uint32_t *rows,
                                    int n, const struct dg_net_mode *mode,
                                    const struct dg_augment_key *augment, float lr, float rho,
                                    float eps)
{
    struct dg_backend *be = net->be;
    void *graph = NULL;
    enum dg_status status = be->ops->capture_begin(be);
    if (status != DG_OK)
        return status;
    status = step_ops(net, data_handle, rows, n, mode, augment, lr, rho, eps);
    enum dg_status ended = be->ops->capture_end(be, status != DG_OK, &graph);
    if (status != DG_OK)
        return dg_error_prefix(status, "capturing the training step");
    if (ended != DG_OK)
        return ended;
    net->graph = graph;
    return DG_OK;
}

/* A step on a backend with step mode: the step's values uploaded, then the captured graph
 * replayed (captured first when there is none, or it is stale), or the ops run eagerly (the
 * epoch's partial batch, a streamed dataset, --no-graphs). */
static enum dg_status train_step_device(struct dg_net *net, void *data_handle,
                                        const uint32_t *rows, int n,
                                        const struct dg_net_mode *mode,
                                        const struct dg_augment_key *augment, float lr, float rho,
                                        float eps)
{
    struct dg_backend *be = net->be;
    struct dg_step_values values = {mode->epoch, mode->step, lr};
    int capturable = 0;
    enum dg_status status = be->ops->step_begin(be, data_handle, &values, rows, n, &capturable);
    if (status != DG_OK)
        return status;
    if (!capturable || net->no_graphs || n != net->max_batch || !be->ops->capture_begin) {
        status = step_ops(net, data_handle, rows, n, mode, augment, lr, rho, eps);
        be->ops->step_end(be);
        return status;
    }
    unsigned char key[sizeof net->graph_key];
    graph_key_make(net, data_handle, n, mode, augment, rho, eps, key);
    if (net->graph && memcmp(key, net->graph_key, sizeof key) != 0)
        graph_drop(net);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!net->graph) {
            void **plans = NULL; /* made now: creating plans may allocate and synchronise */
            if ((status = plans_for(net, n, &plans)) != DG_OK ||
                (status = graph_capture(net, data_handle, rows, n, mode, augment, lr, rho, eps)) !=
                    DG_OK)
                break;
            memcpy(net->graph_key, key, sizeof key);
        }
        int stale = 0;
        if ((status = be->ops->graph_launch(be, net->graph, &stale)) != DG_OK || !stale)
            break;
        graph_drop(net);
        if (attempt == 1)
            status = dg_error(DG_ERR_RUNTIME, "net: a graph captured just now is stale");
    }
    be->ops->step_end(be);
    return status;
}

enum dg_status dg_net_train_step(struct dg_net *net, void *data_handle, const uint32_t *rows, int n,
                                 const struct dg_net_mode *mode,
                                 const struct dg_augment_key *augment, float lr, float rho,
                                 float eps)
{
    if (n < 1 || n > net->max_batch)
        return dg_error(DG_ERR_RUNTIME, "net: batch of %d outside 1..%d", n, net->max_batch);
    if (net->trace) {
        if (net->trace_used >= net->trace_capacity)
            return dg_error(DG_ERR_RUNTIME,
                            "net: %d training steps since the stats were reset, the trace holds "
                            "%d",
                            net->trace_used + 1, net->trace_capacity);
        net->trace_used++;
    }
    if (net->be->ops->step_begin && !net->layer_hook)
        return train_step_device(net, data_handle, rows, n, mode, augment, lr, rho, eps);
    return step_ops(net, data_handle, rows, n, mode, augment, lr, rho, eps);
}

enum dg_status dg_net_infer(struct dg_net *net, void *data_handle, const uint32_t *rows, int n,
                            int with_labels)
{
    struct dg_backend *be = net->be;
    const struct dg_net_mode inference = {0, 0, 0, 0};
    enum dg_status status = be->ops->batch_assemble(be, data_handle, rows, n, NULL, net->act[0],
                                                    with_labels ? net->labels : NULL);
    if (status == DG_OK)
        status = dg_net_forward(net, n, &inference, with_labels ? net->labels : NULL);
    return status;
}

enum dg_status dg_net_stats_reset(struct dg_net *net)
{
    return dg_net_stats_set(net, 0.0, 0.0);
}

enum dg_status dg_net_stats_set(struct dg_net *net, double loss_sum, double correct)
{
    const double values[3] = {loss_sum, correct, 0.0};
    net->trace_used = 0;
    return net->be->ops->upload(net->be, net->stats, values, sizeof values);
}

enum dg_status dg_net_trace_reserve(struct dg_net *net, int steps)
{
    struct dg_backend *be = net->be;
    if (steps < 0)
        return dg_error(DG_ERR_RUNTIME, "net: a trace of %d steps", steps);
    if (steps <= net->trace_capacity && steps > 0)
        return DG_OK;
    graph_drop(net); /* a captured step writes to the old trace */
    if (net->trace)
        be->ops->free(be, net->trace);
    net->trace = NULL;
    net->trace_capacity = 0;
    if (steps == 0)
        return DG_OK;
    void *mem = NULL;
    enum dg_status status = be->ops->alloc(be, (size_t)steps * 2 * sizeof(double), &mem);
    if (status != DG_OK)
        return dg_error_prefix(status, "the training trace");
    net->trace = mem;
    net->trace_capacity = steps;
    return DG_OK;
}

enum dg_status dg_net_trace_read(struct dg_net *net, int first, int count, double *out)
{
    if (first < 0 || count < 0 || first + count > net->trace_used)
        return dg_error(DG_ERR_RUNTIME, "net: trace entries %d..%d asked for, %d written", first,
                        first + count - 1, net->trace_used);
    if (count == 0)
        return DG_OK;
    return net->be->ops->download(net->be, out, net->trace + 2 * (size_t)first,
                                  (size_t)count * 2 * sizeof(double));
}

enum dg_status dg_net_stats_read(struct dg_net *net, double *loss_sum, double *correct)
{
    double values[2];
    enum dg_status status = net->be->ops->download(net->be, values, net->stats, sizeof values);
    if (status != DG_OK)
        return status;
    *loss_sum = values[0];
    *correct = values[1];
    return DG_OK;
}

/* Appends "direct conv1, Winograd conv2-4": each distinct algorithm in order of first use,
 * with the convolutions (numbered from 1) that run it, runs of consecutive ones as a-b. */
void dg_backend_describe_for(struct dg_backend *be, const struct dg_model *model, int batch,
                             char *out, size_t size)
{
    size_t used = (size_t)snprintf(out, size, "%s", be->description);
    if (!be->ops->conv_algo_name || used >= size)
        return;
    char names[DG_MAX_LAYERS][96];
    int conv_count = 0;
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        if (layer->spec.kind != DG_LAYER_CONV)
            continue;
        struct dg_conv_shape shape = dg_layer_conv_shape(layer, batch);
        be->ops->conv_algo_name(be, &shape, i > 0, names[conv_count], sizeof names[0]);
        conv_count++;
    }
    int done[DG_MAX_LAYERS] = {0};
    const char *sep = "; ";
    for (int c = 0; c < conv_count; c++) {
        if (done[c])
            continue;
        used += (size_t)snprintf(out + used, used < size ? size - used : 0, "%s%s conv", sep,
                                 names[c]);
        sep = ", ";
        const char *list_sep = "";
        for (int d = c; d < conv_count; d++) {
            if (done[d] || strcmp(names[d], names[c]) != 0)
                continue;
            int last = d;
            while (last + 1 < conv_count && strcmp(names[last + 1], names[c]) == 0)
                last++;
            for (int e = d; e <= last; e++)
                done[e] = 1;
            if (last > d)
                used += (size_t)snprintf(out + used, used < size ? size - used : 0, "%s%d-%d",
                                         list_sep, d + 1, last + 1);
            else
                used += (size_t)snprintf(out + used, used < size ? size - used : 0, "%s%d",
                                         list_sep, d + 1);
            list_sep = ",";
            d = last;
        }
        if (used >= size)
            return;
    }
}

void dg_net_describe(const struct dg_net *net, char *out, size_t size)
{
    dg_backend_describe_for(net->be, net->model, net->max_batch, out, size);
}
