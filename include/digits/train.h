/* The training loop (backend-agnostic) and batched inference.
 * Recipe defaults are the reference Keras kernel's: RMSprop(lr 1e-3, rho 0.9, eps 1e-8),
 * batch 86, 30 epochs, 10% seeded validation split, ReduceLROnPlateau on validation accuracy
 * (patience 3, factor 0.5, min_delta 1e-4, min_lr 1e-5), augmentation rotation 10 degrees,
 * zoom 0.1, shifts 0.1. */
#ifndef DIGITS_TRAIN_H
#define DIGITS_TRAIN_H

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

struct dg_train_options {
    int epochs;
    int batch;
    float lr, rho, eps;
    float val_split; /* fraction held out, 0 for none */
    uint64_t seed;
    int augment;
    float rotation_deg, shift, zoom;
    float lr_factor, min_delta, min_lr;
    int patience;
    /* optional callbacks */
    void (*on_epoch)(const struct dg_epoch_report *report, void *ctx);
    void (*on_step)(int epoch, int step, int steps, double seconds, void *ctx);
    void *ctx;
};

struct dg_train_result {
    int epochs_run;
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

/* Trains model->params in place (initialise them first) on the labelled dataset. */
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
