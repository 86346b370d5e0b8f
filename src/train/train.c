/* The one training loop: seeded split, per-epoch shuffle, batches assembled (and augmented)
 * by the backend, forward / backward / RMSprop, validation, ReduceLROnPlateau. It calls the
 * backend only through include/digits/net.h and the vtable, so it runs unchanged on CPU and
 * CUDA. Images are rows of the dataset's uint8 store (N x 784). */
#define _POSIX_C_SOURCE 200809L
#include "digits/train.h"

#include "philox.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void dg_train_options_default(struct dg_train_options *options)
{
    memset(options, 0, sizeof *options);
    options->epochs = 30;
    options->batch = 86;
    options->lr = 1e-3f;
    options->rho = 0.9f;
    options->eps = 1e-8f;
    options->val_split = 0.1f;
    options->seed = 42;
    options->augment = 1;
    options->rotation_deg = 10.0f;
    options->shift = 0.1f;
    options->zoom = 0.1f;
    options->lr_factor = 0.5f;
    options->min_delta = 1e-4f;
    options->min_lr = 1e-5f;
    options->patience = 3;
}

/* Uniform integer in [0, bound) from 32 random bits (multiply-shift). */
static uint32_t bounded(uint32_t bits, uint32_t bound)
{
    return (uint32_t)(((uint64_t)bits * bound) >> 32);
}

void dg_shuffle(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t *rows, size_t count)
{
    for (size_t i = count; i > 1; i--) {
        uint32_t j = bounded(dg_rng_bits(seed, purpose, epoch, 0, i - 1), (uint32_t)i);
        uint32_t t = rows[i - 1];
        rows[i - 1] = rows[j];
        rows[j] = t;
    }
}

void dg_train_split(uint64_t seed, size_t count, float val_split, uint32_t *rows,
                    size_t *val_count)
{
    for (size_t i = 0; i < count; i++)
        rows[i] = (uint32_t)i;
    dg_shuffle(seed, DG_RNG_SPLIT, 0, rows, count);
    size_t held = (size_t)floor((double)count * val_split + 0.5);
    if (held > count)
        held = count;
    *val_count = held;
}

enum dg_status dg_evaluate(struct dg_net *net, void *data_handle, const uint32_t *rows,
                           size_t count, double *loss, double *accuracy)
{
    struct dg_backend *be = net->be;
    struct dg_net_mode mode = {0, 0, 0, 0};
    enum dg_status status = dg_net_stats_reset(net);
    for (size_t start = 0; status == DG_OK && start < count; start += (size_t)net->max_batch) {
        int n = (int)(count - start < (size_t)net->max_batch ? count - start
                                                              : (size_t)net->max_batch);
        status = be->ops->batch_assemble(be, data_handle, rows + start, n, NULL, net->act[0],
                                         net->labels);
        if (status == DG_OK)
            status = dg_net_forward(net, n, &mode, net->labels);
    }
    double loss_sum = 0.0, correct = 0.0;
    if (status == DG_OK)
        status = dg_net_stats_read(net, &loss_sum, &correct);
    if (status != DG_OK)
        return status;
    *loss = count ? loss_sum / (double)count : NAN;
    *accuracy = count ? correct / (double)count : NAN;
    return DG_OK;
}

enum dg_status dg_train(struct dg_backend *be, struct dg_model *model,
                        const struct dg_dataset *dataset, const struct dg_train_options *options,
                        struct dg_train_result *result)
{
    enum dg_status status;
    struct dg_net *net = NULL;
    void *handle = NULL;
    uint32_t *rows = NULL;
    memset(result, 0, sizeof *result);
    if (!dataset->labels)
        return dg_error(DG_ERR_INPUT, "training needs labels: the file has the test layout "
                                      "(no label column)");
    if (options->epochs < 1 || options->batch < 1)
        return dg_error(DG_ERR_USAGE, "epochs and batch must be at least 1");
    if (!(options->val_split >= 0.0f && options->val_split < 1.0f))
        return dg_error(DG_ERR_USAGE, "validation split %g outside [0, 1)", options->val_split);
    rows = malloc(dataset->count * sizeof *rows);
    if (!rows)
        return dg_error(DG_ERR_NOMEM, "train: out of memory");
    size_t val_count = 0;
    dg_train_split(options->seed, dataset->count, options->val_split, rows, &val_count);
    uint32_t *val_rows = rows;
    uint32_t *train_rows = rows + val_count;
    size_t train_count = dataset->count - val_count;
    if (train_count == 0) {
        status = dg_error(DG_ERR_INPUT, "no training rows left after holding out %zu of %zu "
                                        "for validation",
                          val_count, dataset->count);
        goto fail;
    }
    result->train_count = train_count;
    result->val_count = val_count;

    if ((status = dg_net_create(be, model, options->batch, &net)) != DG_OK)
        goto fail;
    if ((status = dg_net_upload_params(net, model->params, 1)) != DG_OK)
        goto fail;
    if ((status = be->ops->dataset_attach(be, dataset, &handle)) != DG_OK)
        goto fail;

    float lr = options->lr;
    double best_monitor = -INFINITY;
    int wait = 0;
    int steps = (int)((train_count + (size_t)options->batch - 1) / (size_t)options->batch);
    double start_all = now_seconds();
    result->best_val_accuracy = NAN;
    result->final_val_accuracy = NAN;
    for (int epoch = 0; epoch < options->epochs; epoch++) {
        double start = now_seconds();
        dg_shuffle(options->seed, DG_RNG_SHUFFLE, (uint32_t)epoch, train_rows, train_count);
        if ((status = dg_net_stats_reset(net)) != DG_OK)
            goto fail;
        for (int step = 0; step < steps; step++) {
            size_t first = (size_t)step * (size_t)options->batch;
            int n = (int)(train_count - first < (size_t)options->batch ? train_count - first
                                                                       : (size_t)options->batch);
            struct dg_net_mode mode = {1, options->seed, (uint32_t)epoch, (uint32_t)step};
            struct dg_augment_key augment = {options->seed,  (uint32_t)epoch, (uint32_t)step,
                                             options->rotation_deg, options->shift,
                                             options->zoom};
            status = be->ops->batch_assemble(be, handle, train_rows + first, n,
                                             options->augment ? &augment : NULL, net->act[0],
                                             net->labels);
            if (status == DG_OK)
                status = dg_net_forward(net, n, &mode, net->labels);
            if (status == DG_OK)
                status = dg_net_backward(net, n, &mode);
            if (status == DG_OK)
                status = dg_net_update(net, lr, options->rho, options->eps);
            if (status != DG_OK)
                goto fail;
            if (options->on_step)
                options->on_step(epoch + 1, step + 1, steps, now_seconds() - start,
                                 options->ctx);
        }
        double loss_sum, correct;
        if ((status = dg_net_stats_read(net, &loss_sum, &correct)) != DG_OK)
            goto fail;
        double train_seconds = now_seconds() - start;
        struct dg_epoch_report report;
        memset(&report, 0, sizeof report);
        report.epoch = epoch + 1;
        report.epochs = options->epochs;
        report.loss = loss_sum / (double)train_count;
        report.accuracy = correct / (double)train_count;
        report.lr = lr;
        report.val_loss = NAN;
        report.val_accuracy = NAN;
        if (val_count > 0) {
            status = dg_evaluate(net, handle, val_rows, val_count, &report.val_loss,
                                 &report.val_accuracy);
            if (status != DG_OK)
                goto fail;
            /* ReduceLROnPlateau(monitor=val_accuracy, mode=max, cooldown=0) */
            if (report.val_accuracy > best_monitor + options->min_delta) {
                best_monitor = report.val_accuracy;
                wait = 0;
            } else if (++wait >= options->patience) {
                if (lr > options->min_lr) {
                    float reduced = lr * options->lr_factor;
                    lr = reduced > options->min_lr ? reduced : options->min_lr;
                }
                wait = 0;
            }
            if (isnan(result->best_val_accuracy) ||
                report.val_accuracy > result->best_val_accuracy) {
                result->best_val_accuracy = report.val_accuracy;
                result->best_epoch = epoch + 1;
            }
        }
        report.next_lr = lr;
        report.images_per_second = (double)train_count / train_seconds;
        report.seconds = now_seconds() - start;
        result->epochs_run = epoch + 1;
        result->final_loss = report.loss;
        result->final_accuracy = report.accuracy;
        result->final_val_accuracy = report.val_accuracy;
        if (options->on_epoch)
            options->on_epoch(&report, options->ctx);
    }
    result->seconds = now_seconds() - start_all;
    status = dg_net_download_params(net, model->params);
fail:
    if (handle)
        be->ops->dataset_detach(be, handle);
    dg_net_free(net);
    free(rows);
    return status;
}

enum dg_status dg_predict(struct dg_backend *be, const struct dg_model *model,
                          const struct dg_dataset *dataset, int batch, float *probs)
{
    enum dg_status status;
    struct dg_net *net = NULL;
    void *handle = NULL;
    uint32_t *rows = malloc((size_t)batch * sizeof *rows);
    if (!rows)
        return dg_error(DG_ERR_NOMEM, "predict: out of memory");
    if ((status = dg_net_create(be, model, batch, &net)) != DG_OK)
        goto fail;
    if ((status = dg_net_upload_params(net, model->params, 0)) != DG_OK)
        goto fail;
    if ((status = be->ops->dataset_attach(be, dataset, &handle)) != DG_OK)
        goto fail;
    struct dg_net_mode mode = {0, 0, 0, 0};
    for (size_t start = 0; start < dataset->count; start += (size_t)batch) {
        int n = (int)(dataset->count - start < (size_t)batch ? dataset->count - start
                                                             : (size_t)batch);
        for (int i = 0; i < n; i++)
            rows[i] = (uint32_t)(start + (size_t)i);
        if ((status = be->ops->batch_assemble(be, handle, rows, n, NULL, net->act[0], NULL)) !=
                DG_OK ||
            (status = dg_net_forward(net, n, &mode, NULL)) != DG_OK ||
            (status = be->ops->download(be, probs + start * DG_CLASSES, net->probs,
                                        (size_t)n * DG_CLASSES * sizeof(float))) != DG_OK)
            goto fail;
    }
fail:
    if (handle)
        be->ops->dataset_detach(be, handle);
    dg_net_free(net);
    free(rows);
    return status;
}
