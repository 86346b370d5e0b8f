/* The one training loop: seeded split, per-epoch shuffle, batches assembled (and augmented)
 * by the backend, forward / backward / RMSprop, validation, ReduceLROnPlateau. It calls the
 * backend only through include/digits/net.h and the vtable, so it runs unchanged on CPU and
 * CUDA. Images are rows of the dataset's uint8 store (N x 784). */
#define _POSIX_C_SOURCE 200809L
#include "digits/train.h"

#include "math/philox.h"

#include <math.h>
#include <stdio.h>
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
    dg_optimizer_default(&options->optimizer, DG_OPTIMIZER_RMSPROP);
    options->val_split = 0.1f;
    options->seed = 42;
    options->split_seed = 42;
    options->augment = 1;
    options->rotation_deg = 10.0f;
    options->shift = 0.1f;
    options->zoom = 0.1f;
    options->lr_factor = 0.5f;
    options->min_delta = 1e-4f;
    options->min_lr = 1e-5f;
    options->patience = 3;
    options->schedule = DG_SCHEDULE_PLATEAU;
    options->gamma = 1.0f;
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
    enum dg_status status = dg_net_stats_reset(net);
    for (size_t start = 0; status == DG_OK && start < count; start += (size_t)net->max_batch) {
        int n = (int)(count - start < (size_t)net->max_batch ? count - start
                                                              : (size_t)net->max_batch);
        status = dg_net_infer(net, data_handle, rows + start, n, 1);
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

enum dg_status dg_train_state_init(struct dg_train_state *state, size_t param_count, int epochs,
                                   int save_best)
{
    memset(state, 0, sizeof *state);
    state->param_count = param_count;
    state->best_monitor = -INFINITY;
    state->best_val_accuracy = NAN;
    state->history_capacity = epochs > 0 ? epochs : 1;
    state->history = calloc((size_t)state->history_capacity, sizeof *state->history);
    state->params = malloc(param_count * sizeof(float));
    state->rms_acc = calloc(param_count, sizeof(float));
    state->opt_v = calloc(param_count, sizeof(float));
    state->ema_params = calloc(param_count, sizeof(float));
    state->best_params = save_best ? malloc(param_count * sizeof(float)) : NULL;
    if (!state->history || !state->params || !state->rms_acc || !state->opt_v ||
        !state->ema_params || (save_best && !state->best_params)) {
        dg_train_state_free(state);
        return dg_error(DG_ERR_NOMEM, "train: out of memory for the training state");
    }
    return DG_OK;
}

void dg_train_state_free(struct dg_train_state *state)
{
    free(state->history);
    free(state->params);
    free(state->rms_acc);
    free(state->opt_v);
    free(state->ema_params);
    free(state->best_params);
    memset(state, 0, sizeof *state);
}

/* Copies `from` into `to` (initialised for at least as many parameters and epochs). */
static void state_copy(struct dg_train_state *to, const struct dg_train_state *from)
{
    struct dg_epoch_report *history = to->history;
    int capacity = to->history_capacity;
    float *params = to->params, *rms = to->rms_acc, *v = to->opt_v, *best = to->best_params;
    float *ema = to->ema_params;
    *to = *from;
    to->ema_params = ema;
    to->history = history;
    to->history_capacity = capacity;
    to->params = params;
    to->rms_acc = rms;
    to->opt_v = v;
    to->best_params = best;
    int count = from->history_count < capacity ? from->history_count : capacity;
    memcpy(history, from->history, (size_t)count * sizeof *history);
    to->history_count = count;
    memcpy(params, from->params, from->param_count * sizeof(float));
    memcpy(rms, from->rms_acc, from->param_count * sizeof(float));
    if (from->opt_v)
        memcpy(v, from->opt_v, from->param_count * sizeof(float));
    if (from->ema_params)
        memcpy(ema, from->ema_params, from->param_count * sizeof(float));
    if (best && from->best_params)
        memcpy(best, from->best_params, from->param_count * sizeof(float));
}

/* The weights and the optimizer's state from the device into the state, then the callback. */
static enum dg_status checkpoint(struct dg_net *net, struct dg_train_state *state,
                                 const struct dg_train_options *options)
{
    if (!options->on_checkpoint)
        return DG_OK;
    enum dg_status status = dg_net_download_params(net, state->params);
    if (status == DG_OK)
        status = dg_net_download_rms(net, state->rms_acc);
    if (status == DG_OK && net->optimizer.kind == DG_OPTIMIZER_ADAM)
        status = dg_net_download_adam_v(net, state->opt_v);
    if (status == DG_OK && net->ema)
        status = dg_net_download_ema(net, state->ema_params);
    if (status == DG_OK)
        status = options->on_checkpoint(state, options->ctx);
    return status;
}

/* DG_ERR_RUNTIME "training diverged" when the loss so far is not finite or the step's loss per
 * image is above DG_TRAIN_DIVERGED_LOSS (or NaN); DG_OK otherwise. */
static enum dg_status check_divergence(double loss_sum, double step_loss, int epoch, int step,
                                       int steps, float lr)
{
    if (isfinite(loss_sum) && step_loss <= DG_TRAIN_DIVERGED_LOSS)
        return DG_OK;
    char what[64];
    if (isnan(loss_sum))
        snprintf(what, sizeof what, "NaN");
    else if (!isfinite(loss_sum))
        snprintf(what, sizeof what, "infinite");
    else
        snprintf(what, sizeof what, "%.3g per image (above %g)", step_loss,
                 DG_TRAIN_DIVERGED_LOSS);
    return dg_error(DG_ERR_RUNTIME,
                    "training diverged: the loss is %s at epoch %d, step %d of %d "
                    "(learning rate %g); a lower learning rate (--lr, or onecycle:MAX_LR) usually "
                    "keeps it finite",
                    what, epoch + 1, step + 1, steps, (double)lr);
}

/* The running stats after the steps first_step .. first_step + count - 1 of an epoch (trace
 * entries `entry` onwards: the trace restarts where the epoch's stats were reset or set), in
 * one read: each step checked for divergence in order, as if read after it, and the last
 * step's loss sum and correct count returned (unchanged when count is 0). loss_sum holds the
 * stats before first_step on entry. */
static enum dg_status trace_check(struct dg_net *net, int entry, int count, int first_step,
                                  int steps, int epoch, size_t train_count, int batch, float lr,
                                  double *trace, double *loss_sum, double *correct)
{
    if (count == 0)
        return DG_OK;
    enum dg_status status = dg_net_trace_read(net, entry, count, trace);
    if (status != DG_OK)
        return status;
    double before = *loss_sum;
    for (int k = 0; k < count; k++) {
        int step = first_step + k;
        size_t first = (size_t)step * (size_t)batch;
        int n = (int)(train_count - first < (size_t)batch ? train_count - first : (size_t)batch);
        double after = trace[2 * k];
        if ((status = check_divergence(after, (after - before) / n, epoch, step, steps, lr)) !=
            DG_OK)
            return status;
        before = after;
    }
    *loss_sum = trace[2 * (count - 1)];
    *correct = trace[2 * (count - 1) + 1];
    return DG_OK;
}

float dg_onecycle_lr(float max_lr, long step, long total)
{
    const double pi = 3.14159265358979323846;
    double initial = (double)max_lr / 25.0, final = initial / 1e4;
    double peak = 0.3 * (double)total - 1.0, end = (double)total - 1.0;
    double start_lr = initial, end_lr = max_lr, pct;
    if ((double)step <= peak) {
        pct = peak > 0.0 ? (double)step / peak : 1.0;
    } else {
        start_lr = max_lr;
        end_lr = final;
        pct = end > peak ? ((double)step - peak) / (end - peak) : 1.0;
    }
    return (float)(end_lr + (start_lr - end_lr) / 2.0 * (cos(pi * pct) + 1.0));
}

/* One-cycle's learning rate at step `step` of epoch `epoch` (steps an epoch), over the run. */
static float onecycle_at(const struct dg_train_options *options, int epoch, int step, int steps)
{
    return dg_onecycle_lr(options->max_lr, (long)epoch * steps + step,
                          (long)options->epochs * steps);
}

/* The end of an epoch with validation rows: their loss and accuracy into the report, then the
 * schedule (ReduceLROnPlateau), the best epoch (its weights kept with --save-best) and the
 * early stop, in the state. */
static enum dg_status validate(struct dg_net *net, void *handle, const uint32_t *val_rows,
                               size_t val_count, const struct dg_train_options *options,
                               int epoch, struct dg_train_state *state,
                               struct dg_epoch_report *report)
{
    enum dg_status status = dg_evaluate(net, handle, val_rows, val_count, &report->val_loss,
                                        &report->val_accuracy);
    if (status != DG_OK)
        return status;
    /* ReduceLROnPlateau(monitor=val_accuracy, mode=max, cooldown=0); another schedule sets the
     * learning rate itself (dg_train), and the monitor is not kept */
    if (options->schedule == DG_SCHEDULE_PLATEAU) {
        if (report->val_accuracy > state->best_monitor + options->min_delta) {
            state->best_monitor = report->val_accuracy;
            state->wait = 0;
        } else if (++state->wait >= options->patience) {
            if (state->lr > options->min_lr) {
                float reduced = state->lr * options->lr_factor;
                state->lr = reduced > options->min_lr ? reduced : options->min_lr;
            }
            state->wait = 0;
        }
    }
    /* best epoch, EarlyStopping(monitor=val_accuracy, min_delta=0) */
    if (isnan(state->best_val_accuracy) || report->val_accuracy > state->best_val_accuracy) {
        state->best_val_accuracy = report->val_accuracy;
        state->best_epoch = epoch + 1;
        state->since_best = 0;
        if (state->best_params &&
            (status = dg_net_download_params(net, state->best_params)) != DG_OK)
            return status;
    } else {
        state->since_best++;
    }
    if (options->early_stop > 0 && state->since_best >= options->early_stop)
        state->stopped_early = 1;
    return DG_OK;
}

/* The run's outcome from its final state. */
static void fill_result(const struct dg_train_state *state, struct dg_train_result *result)
{
    result->epochs_run = state->epoch;
    result->stopped_early = state->stopped_early;
    result->best_val_accuracy = state->best_val_accuracy;
    result->best_epoch = state->best_epoch;
    result->seconds = state->seconds;
    result->final_val_accuracy = NAN;
    if (state->history_count > 0) {
        const struct dg_epoch_report *last = &state->history[state->history_count - 1];
        result->final_loss = last->loss;
        result->final_accuracy = last->accuracy;
        result->final_val_accuracy = last->val_accuracy;
    }
}

enum dg_status dg_train(struct dg_backend *be, struct dg_model *model,
                        const struct dg_dataset *dataset, const struct dg_train_options *options,
                        struct dg_train_result *result)
{
    enum dg_status status;
    struct dg_net *net = NULL;
    void *handle = NULL;
    uint32_t *rows = NULL;
    double *trace = NULL;
    struct dg_train_state state;
    memset(&state, 0, sizeof state);
    memset(result, 0, sizeof *result);
    if (!dataset->labels)
        return dg_error(DG_ERR_INPUT, "training needs labels: the file has the test layout "
                                      "(no label column)");
    if (options->epochs < 1 || options->batch < 1)
        return dg_error(DG_ERR_USAGE, "epochs and batch must be at least 1");
    if (!(options->val_split >= 0.0f && options->val_split < 1.0f))
        return dg_error(DG_ERR_USAGE, "validation split %g outside [0, 1)", options->val_split);
    const struct dg_train_state *resume = options->resume;
    if (resume && (resume->param_count != model->param_count || resume->epoch > options->epochs))
        return dg_error(DG_ERR_USAGE, "the state to resume from has %zu parameters and %d epochs "
                                      "done, the run %zu and %d epochs",
                        resume->param_count, resume->epoch, model->param_count, options->epochs);
    rows = malloc(dataset->count * sizeof *rows);
    if (!rows)
        return dg_error(DG_ERR_NOMEM, "train: out of memory");
    size_t val_count = 0;
    dg_train_split(options->split_seed, dataset->count, options->val_split, rows, &val_count);
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

    if ((status = dg_train_state_init(&state, model->param_count, options->epochs,
                                      options->save_best)) != DG_OK)
        goto fail;
    if ((status = dg_net_create(be, model, options->batch, &net)) != DG_OK ||
        (status = dg_net_set_optimizer(net, &options->optimizer)) != DG_OK)
        goto fail;
    if (resume) {
        state_copy(&state, resume);
        if ((status = dg_net_upload_params(net, state.params, 0)) != DG_OK ||
            (status = dg_net_upload_rms(net, state.rms_acc)) != DG_OK ||
            (options->optimizer.kind == DG_OPTIMIZER_ADAM &&
             (status = dg_net_upload_adam(net, state.opt_v, state.opt_steps)) != DG_OK) ||
            (options->ema > 0.0f &&
             (status = dg_net_set_ema(net, options->ema, state.ema_params)) != DG_OK))
            goto fail;
    } else {
        state.lr = options->lr;
        if ((status = dg_net_upload_params(net, model->params, 1)) != DG_OK ||
            (options->ema > 0.0f &&
             (status = dg_net_set_ema(net, options->ema, model->params)) != DG_OK))
            goto fail;
    }
    if ((status = be->ops->dataset_attach(be, dataset, &handle)) != DG_OK)
        goto fail;

    int steps = (int)((train_count + (size_t)options->batch - 1) / (size_t)options->batch);
    /* The stats after each step go to the trace on the backend, read when the epoch ends, at
     * an interruption, and after every step only where reading costs nothing (a backend
     * without step mode runs its ops on the host as they are called): no host sync inside an
     * epoch on a GPU. */
    net->no_graphs = options->no_graphs;
    net->label_smoothing = options->label_smoothing;
    int read_every_step = be->ops->step_begin == NULL;
    if ((status = dg_net_trace_reserve(net, steps)) != DG_OK)
        goto fail;
    trace = malloc((size_t)steps * 2 * sizeof *trace);
    if (!trace) {
        status = dg_error(DG_ERR_NOMEM, "train: out of memory");
        goto fail;
    }
    /* each epoch shuffles the previous epoch's order: replay the epochs already done */
    for (int epoch = 0; epoch < state.epoch; epoch++)
        dg_shuffle(options->seed, DG_RNG_SHUFFLE, (uint32_t)epoch, train_rows, train_count);
    int first_step = state.step;
    for (int epoch = state.epoch; epoch < options->epochs && !state.stopped_early; epoch++) {
        double start = now_seconds();
        dg_shuffle(options->seed, DG_RNG_SHUFFLE, (uint32_t)epoch, train_rows, train_count);
        status = first_step > 0 ? dg_net_stats_set(net, state.loss_sum, state.correct)
                                : dg_net_stats_reset(net);
        if (status != DG_OK)
            goto fail;
        double loss_sum = state.loss_sum, correct = state.correct;
        int traced_from = first_step; /* the first step whose stats are not read yet */
        /* the epoch's first step's (one-cycle: it moves per step) */
        float epoch_lr = options->schedule == DG_SCHEDULE_ONECYCLE
                             ? onecycle_at(options, epoch, first_step, steps)
                             : state.lr;
        for (int step = first_step; step < steps; step++) {
            size_t first = (size_t)step * (size_t)options->batch;
            int n = (int)(train_count - first < (size_t)options->batch ? train_count - first
                                                                       : (size_t)options->batch);
            if (options->schedule == DG_SCHEDULE_ONECYCLE)
                state.lr = onecycle_at(options, epoch, step, steps);
            struct dg_net_mode mode = {1, options->seed, (uint32_t)epoch, (uint32_t)step};
            struct dg_augment_key augment = {options->seed,  (uint32_t)epoch, (uint32_t)step,
                                             options->rotation_deg, options->shift,
                                             options->zoom};
            status = dg_net_train_step(net, handle, train_rows + first, n, &mode,
                                       options->augment ? &augment : NULL, state.lr, options->rho,
                                       options->eps);
            if (status != DG_OK)
                goto fail;
            state.opt_steps++;
            int stopping = options->stop && *options->stop;
            if (read_every_step || stopping) {
                if ((status = trace_check(net, traced_from - first_step, step + 1 - traced_from,
                                          traced_from, steps, epoch, train_count,
                                          options->batch, state.lr, trace, &loss_sum,
                                          &correct)) != DG_OK)
                    goto fail;
                traced_from = step + 1;
            }
            if (options->on_step)
                options->on_step(epoch + 1, step + 1, steps, now_seconds() - start,
                                 options->ctx);
            if (stopping) {
                state.epoch = epoch;
                state.step = step + 1;
                state.loss_sum = loss_sum;
                state.correct = correct;
                state.seconds += now_seconds() - start;
                if ((status = checkpoint(net, &state, options)) == DG_OK)
                    status = dg_error(DG_ERR_INTERRUPTED,
                                      "interrupted at epoch %d, step %d of %d", epoch + 1,
                                      step + 1, steps);
                goto fail;
            }
        }
        if ((status = trace_check(net, traced_from - first_step, steps - traced_from, traced_from,
                                  steps, epoch, train_count, options->batch, state.lr, trace,
                                  &loss_sum, &correct)) != DG_OK)
            goto fail;
        int images = (int)(train_count - (size_t)first_step * (size_t)options->batch);
        first_step = 0;
        double train_seconds = now_seconds() - start;
        struct dg_epoch_report report;
        memset(&report, 0, sizeof report);
        report.epoch = epoch + 1;
        report.epochs = options->epochs;
        report.loss = loss_sum / (double)train_count;
        report.accuracy = correct / (double)train_count;
        report.lr = epoch_lr;
        report.val_loss = NAN;
        report.val_accuracy = NAN;
        /* with --ema, the averaged weights are what is validated (and kept as the best) */
        if (val_count > 0) {
            if (net->ema)
                dg_net_swap_ema(net);
            status = validate(net, handle, val_rows, val_count, options, epoch, &state, &report);
            if (net->ema)
                dg_net_swap_ema(net);
            if (status != DG_OK)
                goto fail;
        }
        if (options->schedule == DG_SCHEDULE_EXP)
            state.lr *= options->gamma;
        else if (options->schedule == DG_SCHEDULE_ONECYCLE && epoch + 1 < options->epochs)
            state.lr = onecycle_at(options, epoch + 1, 0, steps);
        report.next_lr = state.lr;
        report.images_per_second = (double)images / train_seconds;
        report.seconds = now_seconds() - start;
        state.epoch = epoch + 1;
        state.step = 0;
        state.loss_sum = state.correct = 0.0;
        state.seconds += report.seconds;
        if (state.history_count < state.history_capacity)
            state.history[state.history_count++] = report;
        if (options->on_epoch)
            options->on_epoch(&report, options->ctx);
        if ((status = checkpoint(net, &state, options)) != DG_OK)
            goto fail;
    }
    fill_result(&state, result);
    if (state.best_params && state.best_epoch > 0)
        memcpy(model->params, state.best_params, model->param_count * sizeof(float));
    else if (net->ema)
        status = dg_net_download_ema(net, model->params);
    else
        status = dg_net_download_params(net, model->params);
fail:
    if (handle)
        be->ops->dataset_detach(be, handle);
    dg_net_free(net);
    dg_train_state_free(&state);
    free(rows);
    free(trace);
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
    for (size_t start = 0; start < dataset->count; start += (size_t)batch) {
        int n = (int)(dataset->count - start < (size_t)batch ? dataset->count - start
                                                             : (size_t)batch);
        for (int i = 0; i < n; i++)
            rows[i] = (uint32_t)(start + (size_t)i);
        if ((status = dg_net_infer(net, handle, rows, n, 0)) != DG_OK ||
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
