/* `digits report`: one self-contained HTML page about a model and a labelled dataset: the
 * learning curves from the history stored in the model file, the confusion matrix as a heat
 * map, per-class precision / recall / F1, the most confidently wrong images, a sheet of
 * training images beside their augmented versions, the layer table, the run's settings and
 * speed. Pictures are inline SVG and PNG data URIs (libpng); nothing is fetched from anywhere
 * (a Content-Security-Policy of default-src 'none' says so to the browser). */
#ifndef DIGITS_REPORT_H
#define DIGITS_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "digits/data.h"
#include "digits/model.h"
#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One model file of the report (an ensemble file holds several members). */
struct dg_report_model {
    const char *path;
    const char *settings; /* its whole settings text ("key=value\n" lines) */
    int member_count;
};

struct dg_report_input {
    const struct dg_report_model *models;
    int model_count;
    const struct dg_model *architecture; /* the (first) member: the layer table */
    int member_count;                    /* over all model files */
    const char *data_path;
    const char *selection;   /* which rows were scored, in words */
    const uint8_t *images;   /* (count, 784) the scored rows */
    const uint8_t *labels;   /* (count) */
    const uint32_t *row_numbers; /* (count) 1-based row of each in the data file, or NULL */
    size_t count;
    const float *probs;          /* (count, 10): the mean over members (and TTA copies) */
    const uint8_t *predicted;    /* (count) */
    const uint8_t *member_predicted; /* (member_count, count) each member alone */
    int tta;
    int top;                     /* how many of the most confidently wrong images to show */
    /* the augmentation sheet: sheet_count images (28x28, 0..255) and, after each,
     * sheet_copies augmented versions of it (floats in [0,1]); sheet_count 0 leaves it out */
    const uint8_t *sheet_images;       /* (sheet_count, 784) */
    const float *sheet_augmented;      /* (sheet_count * sheet_copies, 784) */
    int sheet_count, sheet_copies;
    const char *augmentation;          /* the ranges in words */
    const char *device;                /* the backend that scored, in words */
    double scoring_seconds;
};

/* Writes the page to `path` atomically ("-": standard output). */
enum dg_status dg_report_write(const char *path, const struct dg_report_input *in);

#ifdef __cplusplus
}
#endif

#endif
