/* digits train: the settings text a model file starts with, for one model and for an ensemble
 * alike. The held-out rows of `eval`/`report` are rebuilt from rows, val_split and split_seed,
 * so val_split is written to read back as the very float training split with. */
#include "cli/train_cli.h"

#include <string.h>

void train_settings_text(struct dg_text *t, const struct train_record *record)
{
    const struct dg_train_options *o = record->options;
    dg_text_add(t, "digits_version=%s\nbackend=%s\ntrain_file=%s\nrows=%llu\ndata_crc32=%08x\n",
                DIGITS_VERSION, record->backend, record->train_file,
                (unsigned long long)record->rows, (unsigned)record->data_crc);
    if (record->members)
        dg_text_add(t, "members=%d\n", record->members);
    dg_text_add(t, "epochs=%d\nbatch=%d\nlr=", o->epochs, o->batch);
    dg_text_add_float(t, o->lr);
    dg_text_add(t, "\nrho=");
    dg_text_add_float(t, o->rho);
    dg_text_add(t, "\neps=");
    dg_text_add_float(t, o->eps);
    dg_text_add(t, "\nval_split=");
    dg_text_add_float(t, o->val_split);
    dg_text_add(t, "\n");
    if (record->validation_rows >= 0)
        dg_text_add(t, "validation_rows=%ld\n", record->validation_rows);
    dg_text_add(t, "seed=%llu\n", (unsigned long long)o->seed);
    if (record->split_seed)
        dg_text_add(t, "split_seed=%s\n", record->split_seed);
    else
        dg_text_add(t, "split_seed=%llu\n", (unsigned long long)o->split_seed);
    dg_text_add(t, "augment=%d\n", o->augment);
    /* the augmentation's strength where it is not the default's (default files stay as they
     * were) */
    struct dg_train_options defaults;
    dg_train_options_default(&defaults);
    if (o->augment && (o->rotation_deg != defaults.rotation_deg || o->zoom != defaults.zoom ||
                       o->shift != defaults.shift)) {
        dg_text_add(t, "rotation_deg=");
        dg_text_add_float(t, o->rotation_deg);
        dg_text_add(t, "\nzoom=");
        dg_text_add_float(t, o->zoom);
        dg_text_add(t, "\nshift=");
        dg_text_add_float(t, o->shift);
        dg_text_add(t, "\n");
    }
    if (o->schedule == DG_SCHEDULE_EXP) {
        dg_text_add(t, "schedule=exp:");
        dg_text_add_float(t, o->gamma);
        dg_text_add(t, "\n");
    } else if (o->schedule == DG_SCHEDULE_ONECYCLE) {
        dg_text_add(t, "schedule=onecycle:");
        dg_text_add_float(t, o->max_lr);
        dg_text_add(t, "\n");
    }
    if (o->ema > 0.0f) {
        dg_text_add(t, "ema=");
        dg_text_add_float(t, o->ema);
        dg_text_add(t, "\n");
    }
    if (o->label_smoothing != 0.0f) {
        dg_text_add(t, "label_smoothing=");
        dg_text_add_float(t, o->label_smoothing);
        dg_text_add(t, "\n");
    }
    if (record->math)
        dg_text_add(t, "math=%s\n", record->math);
    /* the optimizer where it is not RMSprop (default files stay as they were) */
    if (o->optimizer.kind == DG_OPTIMIZER_ADAM) {
        dg_text_add(t, "optimizer=adam\nbeta1=");
        dg_text_add_float(t, o->optimizer.beta1);
        dg_text_add(t, "\nbeta2=");
        dg_text_add_float(t, o->optimizer.beta2);
        dg_text_add(t, "\nadam_eps=");
        dg_text_add_float(t, o->optimizer.adam_eps);
        dg_text_add(t, "\n");
    } else if (o->optimizer.kind == DG_OPTIMIZER_SGD) {
        dg_text_add(t, "optimizer=sgd\nmomentum=");
        dg_text_add_float(t, o->optimizer.momentum);
        dg_text_add(t, "\nnesterov=%d\n", o->optimizer.nesterov);
    }
}

const char *train_math_name(const struct dg_backend_spec *device, const struct dg_backend *be)
{
    if (device->math == DG_MATH_BF16 ||
        (device->math == DG_MATH_TF32 && be && strcmp(be->name, "cuda") == 0))
        return dg_math_name(device->math);
    return NULL;
}
