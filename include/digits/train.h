/* The training loop (backend-agnostic) and batched inference.
 * Recipe defaults are the reference Keras kernel's: RMSprop(lr 1e-3, rho 0.9, eps 1e-8),
 * batch 86, 30 epochs, 10% seeded validation split, ReduceLROnPlateau on validation accuracy
 * (patience 3, factor 0.5, min_delta 1e-4, min_lr 1e-5), augmentation rotation 10 degrees,
 * zoom 0.1, shifts 0.1. */
#ifndef DIGITS_TRAIN_H
#define DIGITS_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "digits/backend.h"
#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"

#ifdef __cplusplus
extern "C" {
#endif

struct dg_epoch_report {
    int epoch; /* 1-based */
    int epochs;
    double loss, accuracy;         /* training, with dropout and augmentation */
    double val_loss, val_accuracy; /* NaN when there is no validation set */
    double lr;                     /* learning rate used during this epoch */
    double next_lr;                /* after ReduceLROnPlateau */
    double images_per_second;      /* training images / training seconds */
    double seconds;                /* whole epoch, validation included */
};

struct dg_train_state;

/* The ranges `digits train` accepts for its options (--epochs, --batch, --lr, --val-split,
 * --early-stop) and that the checkpoint reader applies to the settings a checkpoint carries. */
#define DG_TRAIN_EPOCHS_MIN 1
#define DG_TRAIN_EPOCHS_MAX 100000
#define DG_TRAIN_BATCH_MIN 1
#define DG_TRAIN_BATCH_MAX 65536
#define DG_TRAIN_LR_MIN 1e-12
#define DG_TRAIN_LR_MAX 1e6
#define DG_TRAIN_VAL_SPLIT_MIN 0.0
#define DG_TRAIN_VAL_SPLIT_MAX 0.99
#define DG_TRAIN_EARLY_STOP_MIN 1 /* a checkpoint also holds 0: never */
#define DG_TRAIN_EARLY_STOP_MAX 100000

enum dg_lr_schedule { DG_SCHEDULE_PLATEAU, DG_SCHEDULE_EXP, DG_SCHEDULE_ONECYCLE };

/* The one-cycle learning rate of step `step` (0-based, counted over the whole run) of `total`
 * steps, PyTorch's OneCycleLR with its defaults and cycle_momentum=False: cosine from
 * max_lr / 25 up to max_lr over the first 30% of the steps (the peak at step 0.3 total - 1),
 * then cosine down to max_lr / 25 / 1e4 at the last step. Computed in double, rounded once. */
float dg_onecycle_lr(float max_lr, long step, long total);

struct dg_train_options {
    int epochs;
    int batch;
    float lr, rho, eps;
    float val_split; /* fraction held out, 0 for none */
    uint64_t seed;
    uint64_t split_seed; /* the validation split's seed (dg_train_options_default: 42, like
                            seed; ensemble members share it unless each gets its own) */
    int augment;
    float rotation_deg, shift, zoom;
    float lr_factor, min_delta, min_lr;
    int patience;
    int save_best;  /* keep the weights of the best validation epoch (Keras save_best_only) */
    int early_stop; /* stop after this many epochs without a better val_accuracy (0: never) */
    /* The learning-rate schedule: DG_SCHEDULE_PLATEAU (the default: ReduceLROnPlateau with
     * lr_factor, patience, min_delta, min_lr, on val_accuracy) or DG_SCHEDULE_EXP (after each
     * epoch lr *= gamma, in float: epoch e runs at lr * gamma^e, as Keras'
     * LearningRateScheduler(lambda e: lr * gamma ** e)) or DG_SCHEDULE_ONECYCLE (per step,
     * dg_onecycle_lr). */
    int schedule;
    float gamma;
    /* DG_SCHEDULE_ONECYCLE: the learning rate of every step is dg_onecycle_lr(max_lr, ...)
     * (lr is not used) */
    float max_lr;
    /* Label smoothing (Keras' CategoricalCrossentropy(label_smoothing)): targets (1 - s)
     * onehot + s / 10, in the training and validation losses; 0 (the default): none. */
    float label_smoothing;
    /* A moving average of the weights, ema = decay ema + (1 - decay) w after every step
     * (Keras' use_ema / ema_momentum; 0, the default: none). With it, validation (the
     * schedule, --save-best, --early-stop) and the model written use the average. */
    float ema;
    /* The optimizer: RMSprop (the default, with lr, rho, eps above), Adam or SGD with momentum
     * (their constants here; dg_train_options_default fills every optimizer's defaults). */
    struct dg_optimizer optimizer;
    /* On a backend with graphs (CUDA): run every step eagerly instead of replaying the captured
     * full-batch step (--no-graphs; the results are the same bytes). */
    int no_graphs;
    /* optional callbacks */
    void (*on_epoch)(const struct dg_epoch_report *report, void *ctx);
    void (*on_step)(int epoch, int step, int steps, double seconds, void *ctx);
    /* At the end of every epoch (after on_epoch) and when stopped by *stop: the whole state;
     * a status other than DG_OK stops training and is returned. */
    enum dg_status (*on_checkpoint)(const struct dg_train_state *state, void *ctx);
    void *ctx;
    /* When non-NULL and nonzero after a step: the step is finished, on_checkpoint is called
     * with the state (epoch, next step) and dg_train returns DG_ERR_INTERRUPTED. */
    const volatile sig_atomic_t *stop;
    /* Continue from this state (NULL: start from model->params). */
    const struct dg_train_state *resume;
};

/* Everything a run needs to continue exactly where it stopped: resuming from it gives the
 * same final weights, bit for bit, as the run left alone (every random draw is a function of
 * the seed, the epoch and the step; the shuffle order is replayed). */
struct dg_train_state {
    int epoch;            /* epochs completed: the epoch to run next (0-based) */
    int step;             /* steps of `epoch` already done (0 at an epoch boundary) */
    float lr;             /* the learning rate now */
    int wait;             /* epochs without improvement, ReduceLROnPlateau's counter */
    double best_monitor;  /* ReduceLROnPlateau's best val_accuracy (-inf before any) */
    double best_val_accuracy; /* NaN before any validation */
    int best_epoch;       /* 1-based, 0 before any */
    int since_best;       /* epochs since best_val_accuracy improved (early stop) */
    int stopped_early;    /* training ended by --early-stop */
    double loss_sum, correct; /* the partial epoch's statistics (step > 0) */
    double seconds;       /* training time so far */
    int history_count;    /* epochs reported in history */
    struct dg_epoch_report *history; /* history_capacity entries */
    int history_capacity;
    size_t param_count;
    float *params;        /* the weights now */
    float *rms_acc;       /* the optimizer's first state vector: RMSprop's accumulators,
                             Adam's first moments, SGD's momentum buffer */
    float *opt_v;         /* Adam's second moments (allocated for every optimizer) */
    uint64_t opt_steps;   /* optimizer steps taken (Adam's t) */
    float *ema_params;    /* the moving average of the weights (allocated for every run) */
    float *best_params;   /* the weights of best_epoch (with save_best; NULL otherwise) */
};

/* Allocates the arrays of a state for param_count parameters and `epochs` history entries
 * (best_params only when save_best); zeroes the rest. */
enum dg_status dg_train_state_init(struct dg_train_state *state, size_t param_count, int epochs,
                                   int save_best);
void dg_train_state_free(struct dg_train_state *state);

struct dg_train_result {
    int epochs_run;
    int stopped_early; /* --early-stop ended the run */
    double final_val_accuracy, best_val_accuracy;
    int best_epoch;
    double final_loss, final_accuracy;
    double seconds;
    size_t train_count, val_count;
};

/* Fills the reference recipe. */
void dg_train_options_default(struct dg_train_options *options);

/* The seeded split: a permutation of 0..count-1 whose first val_count entries are the
 * validation rows and the rest the training rows (`rows` has `count` entries). */
void dg_train_split(uint64_t seed, size_t count, float val_split, uint32_t *rows,
                    size_t *val_count);

/* Shuffles rows[0..count) for an epoch (Philox, purpose DG_RNG_SHUFFLE). */
void dg_shuffle(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t *rows, size_t count);

/* A step whose mean loss per image is above this has diverged: the logits of a classifier are
 * then thousands apart (float32 probabilities of exactly 0); the numerically stable
 * cross-entropy stays finite there, so NaN alone would not catch it. */
#define DG_TRAIN_DIVERGED_LOSS 1e4

/* The history as text ("history=" lines of checkpoints and model files): the fields of one
 * epoch, "epoch,epochs,loss,accuracy,val_loss,val_accuracy,lr,next_lr,images_per_second,
 * seconds", floats with 17 significant digits (read back bit for bit); returns what snprintf
 * returns. */
int dg_history_format(const struct dg_epoch_report *report, char *out, size_t size);
/* Parses those fields (ended by '\n' or the text's end); 1 when well formed. */
int dg_history_parse(const char *text, struct dg_epoch_report *report);
/* Appends "KEY=fields\n" for each of history[0..count) (dg_history_format). */
struct dg_text;
void dg_history_text(struct dg_text *t, const char *key, const struct dg_epoch_report *history,
                     int count);
/* Every "KEY=" line of a "key=value\n" text, parsed into out[0..max): the count, or -1 when a
 * line is malformed, out of order (epochs 1, 2, ...) or more than max. */
int dg_history_read(const char *text, const char *key, struct dg_epoch_report *out, int max);

/* Trains model->params in place (initialise them first) on the labelled dataset. With
 * options->save_best the model ends with the best epoch's weights. A step whose loss is NaN,
 * infinite or above DG_TRAIN_DIVERGED_LOSS per image stops training there (DG_ERR_RUNTIME
 * naming the epoch and step). */
enum dg_status dg_train(struct dg_backend *be, struct dg_model *model,
                        const struct dg_dataset *dataset, const struct dg_train_options *options,
                        struct dg_train_result *result);

/* Class probabilities (dataset->count, 10) of every image, in batches of `batch`. */
enum dg_status dg_predict(struct dg_backend *be, const struct dg_model *model,
                          const struct dg_dataset *dataset, int batch, float *probs);

/* Evaluation of one pass of `net` over rows (no dropout, no augmentation): mean loss and
 * accuracy (labels required). */
enum dg_status dg_evaluate(struct dg_net *net, void *data_handle, const uint32_t *rows,
                           size_t count, double *loss, double *accuracy);

#ifdef __cplusplus
}
#endif

#endif
