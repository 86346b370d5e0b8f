/* The checkpoint file (format in include/digits/io.h): the whole training state, written
 * atomically (temporary file, fsync, rename) and read back with every field checked.
 * Integers and floats little-endian; the settings and scalar state are "key=value" text with
 * floats printed so that they read back bit for bit (%.9g for float, %.17g for double). */
#define _POSIX_C_SOURCE 200809L
#include "digits/checkpoint.h"
#include "digits/io.h"
#include "digits/text.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io/export.h"
#include "io/io_internal.h"

#define HEADER_BYTES 16 /* magic + version + layer count */
#define MAX_TEXT (4u << 20)

/* ---- the text part ---- */

static void settings_text(struct dg_text *t, const struct dg_checkpoint *ck)
{
    const struct dg_train_options *o = &ck->options;
    const struct dg_train_state *s = &ck->state;
    dg_text_add(t, "digits_version=%s\n", DIGITS_VERSION);
    dg_text_add(t, "output=%s\ntrain_file=%s\nlabels_file=%s\nlimit=%" PRIu64 "\n", ck->output,
        ck->train_file, ck->labels_file, ck->limit);
    dg_text_add(t, "data_rows=%" PRIu64 "\ndata_crc32=%08" PRIx32 "\n", ck->data_rows, ck->data_crc32);
    dg_text_add(t, "epochs=%d\nbatch=%d\nlr=%.9g\nrho=%.9g\neps=%.9g\nval_split=%.9g\n", o->epochs,
        o->batch, (double)o->lr, (double)o->rho, (double)o->eps, (double)o->val_split);
    dg_text_add(t, "seed=%" PRIu64 "\nsplit_seed=%" PRIu64 "\n", o->seed, o->split_seed);
    dg_text_add(t, "augment=%d\nrotation_deg=%.9g\nshift=%.9g\nzoom=%.9g\n", o->augment,
        (double)o->rotation_deg, (double)o->shift, (double)o->zoom);
    dg_text_add(t, "lr_factor=%.9g\nmin_delta=%.9g\nmin_lr=%.9g\npatience=%d\n", (double)o->lr_factor,
        (double)o->min_delta, (double)o->min_lr, o->patience);
    dg_text_add(t, "save_best=%d\nearly_stop=%d\n", o->save_best, o->early_stop);
    if (o->schedule == DG_SCHEDULE_EXP) /* (the default schedule writes nothing) */
        dg_text_add(t, "schedule=exp\ngamma=%.9g\n", (double)o->gamma);
    else if (o->schedule == DG_SCHEDULE_ONECYCLE)
        dg_text_add(t, "schedule=onecycle\nmax_lr=%.9g\n", (double)o->max_lr);
    if (o->ema > 0.0f) /* (none writes nothing) */
        dg_text_add(t, "ema=%.9g\n", (double)o->ema);
    if (o->label_smoothing != 0.0f) /* (none writes nothing) */
        dg_text_add(t, "label_smoothing=%.9g\n", (double)o->label_smoothing);
    if (ck->math[0])
        dg_text_add(t, "math=%s\n", ck->math);
    /* (RMSprop, the default, writes nothing) */
    if (o->optimizer.kind == DG_OPTIMIZER_ADAM)
        dg_text_add(t, "optimizer=adam\nbeta1=%.9g\nbeta2=%.9g\nadam_eps=%.9g\n",
                    (double)o->optimizer.beta1, (double)o->optimizer.beta2,
                    (double)o->optimizer.adam_eps);
    else if (o->optimizer.kind == DG_OPTIMIZER_SGD)
        dg_text_add(t, "optimizer=sgd\nmomentum=%.9g\nnesterov=%d\n", (double)o->optimizer.momentum,
                    o->optimizer.nesterov);
    dg_text_add(t, "state_epoch=%d\nstate_step=%d\nstate_lr=%.9g\nstate_wait=%d\n", s->epoch, s->step,
        (double)s->lr, s->wait);
    dg_text_add(t, "state_best_monitor=%.17g\nstate_best_val_accuracy=%.17g\nstate_best_epoch=%d\n",
        s->best_monitor, s->best_val_accuracy, s->best_epoch);
    dg_text_add(t, "state_since_best=%d\nstate_stopped_early=%d\n", s->since_best, s->stopped_early);
    dg_text_add(t, "state_loss_sum=%.17g\nstate_correct=%.17g\nstate_seconds=%.17g\n", s->loss_sum,
        s->correct, s->seconds);
    if (o->optimizer.kind == DG_OPTIMIZER_ADAM)
        dg_text_add(t, "state_adam_t=%" PRIu64 "\n", s->opt_steps);
    dg_history_text(t, "history", s->history, s->history_count);
}

/* The float blocks of a checkpoint in file order, with the names the finite check says:
 * weights, the optimizer's first state vector, Adam's second moments (Adam only), the moving
 * average of the weights (--ema only), the best epoch's weights (when kept). */
#define MAX_BLOCKS 5
static uint32_t block_list(const struct dg_train_options *o, const struct dg_train_state *s,
                           int has_best, float *block[MAX_BLOCKS], const char *name[MAX_BLOCKS])
{
    int adam = o->optimizer.kind == DG_OPTIMIZER_ADAM;
    float *blocks[MAX_BLOCKS];
    const char *names[MAX_BLOCKS];
    uint32_t k = 0;
    blocks[k] = s->params, names[k++] = "weights";
    blocks[k] = s->rms_acc, names[k++] = adam ? "first moments" : "accumulators";
    if (adam)
        blocks[k] = s->opt_v, names[k++] = "second moments";
    if (o->ema > 0.0f)
        blocks[k] = s->ema_params, names[k++] = "moving average of the weights";
    if (has_best)
        blocks[k] = s->best_params, names[k++] = "best weights";
    for (uint32_t i = 0; i < k; i++) {
        if (block)
            block[i] = blocks[i];
        if (name)
            name[i] = names[i];
    }
    return k;
}

/* The blocks a checkpoint of these settings holds without the best weights. */
static uint32_t blocks_without_best(const struct dg_train_options *o)
{
    return block_list(o, &(struct dg_train_state){0}, 0, NULL, NULL);
}

enum dg_status dg_checkpoint_save(const char *path, const struct dg_model *model,
                                  const struct dg_checkpoint *ck)
{
    const struct dg_train_state *s = &ck->state;
    if (s->param_count != model->param_count)
        return dg_error(DG_ERR_RUNTIME, "%s: the state has %zu parameters, the model %zu", path,
                        s->param_count, model->param_count);
    struct dg_text t = {0};
    settings_text(&t, ck);
    int has_best = s->best_params && s->best_epoch > 0;
    float *block[MAX_BLOCKS];
    uint32_t blocks = block_list(&ck->options, s, has_best, block, NULL);
    struct buffer b = {NULL, 0, 0};
    uint64_t count = model->param_count;
    int failed = t.failed || buffer_put(&b, DG_CHECKPOINT_MAGIC, 8) ||
                 put_u32(&b, DG_CHECKPOINT_VERSION) || dg_io_put_layers(&b, model) ||
                 put_u32(&b, (uint32_t)count) || put_u32(&b, (uint32_t)(count >> 32)) ||
                 put_u32(&b, blocks) || put_u32(&b, (uint32_t)t.size) ||
                 (t.size && buffer_put(&b, t.data, t.size));
    for (uint32_t k = 0; k < blocks && !failed; k++)
        for (size_t i = 0; i < model->param_count && !failed; i++)
            failed = put_f32(&b, block[k][i]);
    free(t.data);
    return dg_io_finish_file(path, "checkpoint", &b, failed);
}

/* ---- reading ---- */

struct reader {
    const char *path;
    const char *text;
    enum dg_status status;
};

static const char *need(struct reader *r, const char *key)
{
    const char *v = dg_settings_value(r->text, key);
    if (!v && r->status == DG_OK)
        r->status = dg_error(DG_ERR_INPUT, "%s: corrupted checkpoint file (no %s)", r->path, key);
    return v;
}

static void bad(struct reader *r, const char *key)
{
    if (r->status == DG_OK)
        r->status = dg_error(DG_ERR_INPUT, "%s: corrupted checkpoint file (bad %s)", r->path, key);
}

static int get_int(struct reader *r, const char *key)
{
    const char *v = need(r, key);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end != '\n' || x < -2147483647L || x > 2147483647L)
        bad(r, key);
    return (int)x;
}

static uint64_t get_u64(struct reader *r, const char *key, int base)
{
    const char *v = need(r, key);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, base);
    if (errno || end == v || *end != '\n')
        bad(r, key);
    return (uint64_t)x;
}

static float get_float(struct reader *r, const char *key)
{
    const char *v = need(r, key);
    if (!v)
        return 0.0f;
    char *end;
    float x = strtof(v, &end);
    if (end == v || *end != '\n')
        bad(r, key);
    return x;
}

static double get_double(struct reader *r, const char *key)
{
    const char *v = need(r, key);
    if (!v)
        return 0.0;
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end != '\n')
        bad(r, key);
    return x;
}

static void get_string(struct reader *r, const char *key, char *out, size_t size)
{
    const char *v = need(r, key);
    out[0] = '\0';
    if (!v)
        return;
    const char *end = strchr(v, '\n');
    size_t n = (size_t)(end - v);
    if (n >= size) {
        bad(r, key);
        return;
    }
    memcpy(out, v, n);
    out[n] = '\0';
}

static void read_history(struct reader *r, struct dg_train_state *s)
{
    if (r->status != DG_OK)
        return;
    int count = dg_history_read(r->text, "history", s->history, s->history_capacity);
    if (count < 0)
        bad(r, "history");
    else
        s->history_count = count;
}

/* The run's settings from the checkpoint's text, checked (r->status says what failed). */
static void read_options(struct reader *r, struct dg_checkpoint *ck, uint32_t blocks)
{
    struct dg_train_options *o = &ck->options;
    dg_train_options_default(o);
    get_string(r, "output", ck->output, sizeof ck->output);
    get_string(r, "train_file", ck->train_file, sizeof ck->train_file);
    get_string(r, "labels_file", ck->labels_file, sizeof ck->labels_file);
    ck->limit = get_u64(r, "limit", 10);
    ck->data_rows = get_u64(r, "data_rows", 10);
    ck->data_crc32 = (uint32_t)get_u64(r, "data_crc32", 16);
    o->epochs = get_int(r, "epochs");
    o->batch = get_int(r, "batch");
    o->lr = get_float(r, "lr");
    o->rho = get_float(r, "rho");
    o->eps = get_float(r, "eps");
    o->val_split = get_float(r, "val_split");
    o->seed = get_u64(r, "seed", 10);
    o->split_seed = get_u64(r, "split_seed", 10);
    o->augment = get_int(r, "augment");
    o->rotation_deg = get_float(r, "rotation_deg");
    o->shift = get_float(r, "shift");
    o->zoom = get_float(r, "zoom");
    o->lr_factor = get_float(r, "lr_factor");
    o->min_delta = get_float(r, "min_delta");
    o->min_lr = get_float(r, "min_lr");
    o->patience = get_int(r, "patience");
    o->save_best = get_int(r, "save_best");
    o->early_stop = get_int(r, "early_stop");
    const char *schedule = dg_settings_value(r->text, "schedule");
    if (schedule && strncmp(schedule, "exp\n", 4) == 0) {
        o->schedule = DG_SCHEDULE_EXP;
        o->gamma = get_float(r, "gamma");
        if (r->status == DG_OK && !(o->gamma > 0.0f && o->gamma <= 1.0f))
            bad(r, "gamma");
    } else if (schedule && strncmp(schedule, "onecycle\n", 9) == 0) {
        o->schedule = DG_SCHEDULE_ONECYCLE;
        o->max_lr = get_float(r, "max_lr");
        if (r->status == DG_OK && !(o->max_lr >= DG_TRAIN_LR_MIN && o->max_lr <= DG_TRAIN_LR_MAX))
            bad(r, "max_lr");
    } else if (schedule) {
        bad(r, "schedule");
    }
    o->ema = 0.0f;
    if (dg_settings_value(r->text, "ema")) {
        o->ema = get_float(r, "ema");
        if (r->status == DG_OK && !(o->ema >= 0.5f && o->ema < 1.0f))
            bad(r, "ema");
    }
    o->label_smoothing = 0.0f;
    if (dg_settings_value(r->text, "label_smoothing")) {
        o->label_smoothing = get_float(r, "label_smoothing");
        if (r->status == DG_OK && !(o->label_smoothing >= 0.0f && o->label_smoothing < 1.0f))
            bad(r, "label_smoothing");
    }
    /* math= only where a run was not fp32 (older checkpoints have none) */
    const char *math = dg_settings_value(r->text, "math");
    ck->math[0] = '\0';
    if (math) {
        size_t len = strcspn(math, "\n");
        enum dg_math m;
        if (len < sizeof ck->math)
            snprintf(ck->math, sizeof ck->math, "%.*s", (int)len, math);
        if (len >= sizeof ck->math || !dg_math_from_name(ck->math, &m) || m == DG_MATH_FP32) {
            ck->math[0] = '\0';
            bad(r, "math");
        }
    }
    /* optimizer= only where it is not RMSprop (older checkpoints have none) */
    const char *optimizer = dg_settings_value(r->text, "optimizer");
    dg_optimizer_default(&o->optimizer, DG_OPTIMIZER_RMSPROP);
    if (optimizer) {
        int kind = DG_OPTIMIZER_RMSPROP;
        char name[16];
        size_t len = strcspn(optimizer, "\n");
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : 0), optimizer);
        if (!dg_optimizer_from_name(name, &kind) || kind == DG_OPTIMIZER_RMSPROP) {
            bad(r, "optimizer");
        } else if (kind == DG_OPTIMIZER_ADAM) {
            o->optimizer.kind = kind;
            o->optimizer.beta1 = get_float(r, "beta1");
            o->optimizer.beta2 = get_float(r, "beta2");
            o->optimizer.adam_eps = get_float(r, "adam_eps");
            if (r->status == DG_OK &&
                !(o->optimizer.beta1 >= 0.0f && o->optimizer.beta1 < 1.0f &&
                  o->optimizer.beta2 >= 0.0f && o->optimizer.beta2 < 1.0f &&
                  o->optimizer.adam_eps > 0.0f && isfinite(o->optimizer.adam_eps)))
                bad(r, "Adam settings");
        } else {
            o->optimizer.kind = kind;
            o->optimizer.momentum = get_float(r, "momentum");
            o->optimizer.nesterov = get_int(r, "nesterov");
            if (r->status == DG_OK &&
                !(o->optimizer.momentum >= 0.0f && o->optimizer.momentum < 1.0f &&
                  (o->optimizer.nesterov == 0 || o->optimizer.nesterov == 1)))
                bad(r, "SGD settings");
        }
    }
    uint32_t plain = blocks_without_best(o);
    /* the settings without an option: finite, and the signs the recipe needs */
    if (r->status == DG_OK &&
        (!isfinite(o->rho) || !isfinite(o->eps) || !isfinite(o->rotation_deg) ||
         !isfinite(o->shift) || !isfinite(o->zoom) || !isfinite(o->lr_factor) ||
         !isfinite(o->min_delta) || !isfinite(o->min_lr) || o->rho < 0.0f || o->rho >= 1.0f ||
         o->eps <= 0.0f || o->patience < 0 || o->patience > DG_TRAIN_EPOCHS_MAX))
        bad(r, "settings");
    if (r->status == DG_OK && (blocks < plain || blocks > plain + 1 ||
                               (blocks == plain + 1 && !o->save_best)))
        bad(r, "settings");
}

/* The scalar state and the history from the text, checked against the settings. */
static void read_state(struct reader *r, struct dg_checkpoint *ck, uint32_t blocks)
{
    const struct dg_train_options *o = &ck->options;
    struct dg_train_state *s = &ck->state;
    s->epoch = get_int(r, "state_epoch");
    s->step = get_int(r, "state_step");
    s->lr = get_float(r, "state_lr");
    s->wait = get_int(r, "state_wait");
    s->best_monitor = get_double(r, "state_best_monitor");
    s->best_val_accuracy = get_double(r, "state_best_val_accuracy");
    s->best_epoch = get_int(r, "state_best_epoch");
    s->since_best = get_int(r, "state_since_best");
    s->stopped_early = get_int(r, "state_stopped_early");
    s->loss_sum = get_double(r, "state_loss_sum");
    s->correct = get_double(r, "state_correct");
    s->seconds = get_double(r, "state_seconds");
    s->opt_steps = o->optimizer.kind == DG_OPTIMIZER_ADAM ? get_u64(r, "state_adam_t", 10) : 0;
    read_history(r, s);
    if (r->status == DG_OK && (s->epoch < 0 || s->epoch > o->epochs || s->step < 0 ||
                              !isfinite(s->lr) || s->lr < 0.0f ||
                              s->history_count != s->epoch ||
                              (blocks == blocks_without_best(o) + 1) !=
                                  (o->save_best && s->best_epoch > 0)))
        bad(r, "state");
}

enum dg_status dg_checkpoint_load(const char *path, struct dg_model *model,
                                  struct dg_checkpoint *ck)
{
    unsigned char *data = NULL;
    size_t size = 0;
    char *text = NULL;
    memset(model, 0, sizeof *model);
    memset(ck, 0, sizeof *ck);
    enum dg_status status = dg_io_read_whole(path, "checkpoint", &data, &size);
    if (status != DG_OK)
        return status;
    if (size >= 8 && memcmp(data, DG_MODEL_MAGIC, 8) == 0) {
        status = dg_error(DG_ERR_INPUT, "%s: a model file, not a checkpoint (resume from the "
                                        "checkpoint written beside it, e.g. %s.ckpt)",
                          path, path);
        goto done;
    }
    if (size < 8 || memcmp(data, DG_CHECKPOINT_MAGIC, 8) != 0) {
        status = dg_error(DG_ERR_INPUT, "%s: not a digits checkpoint file (no DGTCKPT magic)",
                          path);
        goto done;
    }
    if (size < HEADER_BYTES) {
        status = dg_error(DG_ERR_INPUT, "%s: truncated checkpoint file (%zu bytes)", path, size);
        goto done;
    }
    uint32_t version = get_u32(data + 8);
    if (version != DG_CHECKPOINT_VERSION) {
        status = dg_error(DG_ERR_INPUT, "%s: checkpoint format version %u, this digits reads "
                                        "version %u",
                          path, version, DG_CHECKPOINT_VERSION);
        goto done;
    }
    uint32_t layer_count = get_u32(data + 12);
    size_t fixed = HEADER_BYTES + (size_t)layer_count * DG_IO_LAYER_BYTES + 16;
    if (layer_count > DG_MAX_LAYERS || size < fixed + 4) {
        status = dg_error(DG_ERR_INPUT, "%s: truncated or corrupted checkpoint file (%zu bytes)",
                          path, size);
        goto done;
    }
    const unsigned char *p = data + HEADER_BYTES + (size_t)layer_count * DG_IO_LAYER_BYTES;
    uint64_t param_count = (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
    uint32_t blocks = get_u32(p + 8), text_len = get_u32(p + 12);
    if (text_len > MAX_TEXT || param_count > ((uint64_t)1 << 28) || blocks < 2 ||
        blocks > MAX_BLOCKS) {
        status = dg_error(DG_ERR_INPUT, "%s: corrupted checkpoint file (bad header sizes)", path);
        goto done;
    }
    size_t expected = fixed + text_len + (size_t)blocks * (size_t)param_count * 4 + 4;
    if ((status = dg_io_check_size_and_crc(path, "checkpoint", data, size, expected)) != DG_OK)
        goto done;
    if ((status = dg_io_check_layers(path, "checkpoint", data + HEADER_BYTES, layer_count,
                                     param_count, model)) != DG_OK)
        goto done;
    text = malloc((size_t)text_len + 1);
    if (!text) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(text, p + 16, text_len);
    text[text_len] = '\0';

    /* the CLI's ranges first, before anything is sized by them */
    if ((status = dg_io_check_setting_ranges(path, "checkpoint", text)) != DG_OK)
        goto done;
    struct reader r = {path, text, DG_OK};
    struct dg_train_options *o = &ck->options;
    read_options(&r, ck, blocks);
    if (r.status != DG_OK) {
        status = r.status;
        goto done;
    }
    struct dg_train_state *s = &ck->state;
    if ((status = dg_train_state_init(s, model->param_count, o->epochs, o->save_best)) != DG_OK)
        goto done;
    read_state(&r, ck, blocks);
    if (r.status != DG_OK) {
        status = r.status;
        goto done;
    }
    const unsigned char *floats = p + 16 + text_len;
    float *out[MAX_BLOCKS];
    const char *vectors[MAX_BLOCKS];
    int has_best = o->save_best && s->best_epoch > 0;
    block_list(o, s, has_best, out, vectors);
    for (uint32_t k = 0; k < blocks; k++)
        for (size_t i = 0; i < model->param_count; i++)
            out[k][i] = get_f32(floats + ((size_t)k * model->param_count + i) * 4);
    for (uint32_t k = 0; k < blocks; k++)
        if ((status = dg_io_check_finite(path, vectors[k], model, -1, out[k])) != DG_OK)
            goto done;
    memcpy(model->params, s->params, model->param_count * sizeof(float));
done:
    if (status != DG_OK) {
        dg_model_free(model);
        dg_checkpoint_free(ck);
    }
    free(text);
    free(data);
    return status;
}

void dg_checkpoint_free(struct dg_checkpoint *ck)
{
    dg_train_state_free(&ck->state);
}
