/* Shared by predict and eval: a model scored over a dataset. */
#ifndef DIGITS_CLI_SCORING_H
#define DIGITS_CLI_SCORING_H

#include "cli/cli.h"
#include "digits/data.h"
#include "digits/model.h"

struct dg_scoring {
    struct dg_backend *be;
    struct dg_model model;
    struct dg_dataset dataset;
    char settings[4096];
    float *probs;       /* (count, 10) */
    uint8_t *predicted; /* (count) first argmax */
};

enum dg_status dg_scoring_run(struct dg_scoring *s, const char *model_path, const char *data_path,
                              const char *labels_path, const struct dg_cli_device *device,
                              int batch);
void dg_scoring_free(struct dg_scoring *s);

#endif
