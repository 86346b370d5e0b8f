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

/* The options predict and eval share: -m/--model, --labels, --batch, --threads, --device. */
struct dg_scoring_args {
    const char *model_path;
    const char *labels_path;
    long batch;
    struct dg_cli_device device;
};

#define DG_SCORING_LONG_OPTIONS                                                                    \
    {"model", required_argument, NULL, 'm'}, {"labels", required_argument, NULL, 'L'},             \
        {"batch", required_argument, NULL, 'b'}, {"threads", required_argument, NULL, 't'},        \
        {"device", required_argument, NULL, 'd'}

void dg_scoring_args_default(struct dg_scoring_args *args);

/* One getopt result: 1 when it was a shared option (taken), 0 when it is not one, -1 when its
 * value is bad (the usage message is printed). */
int dg_scoring_option(const char *command, int opt, const char *arg, struct dg_scoring_args *args);

/* After the options: -m given and exactly one FILE operand named `what`; 0 or exit code 2. */
int dg_scoring_check_operands(const char *command, const char *what, int argc,
                              const struct dg_scoring_args *args);

enum dg_status dg_scoring_run(struct dg_scoring *s, const struct dg_scoring_args *args,
                              const char *data_path);
void dg_scoring_free(struct dg_scoring *s);

#endif
