/* Shared by predict and eval: a model scored over a dataset. */
#ifndef DIGITS_CLI_SCORING_H
#define DIGITS_CLI_SCORING_H

#include "cli/cli.h"
#include "digits/data.h"
#include "digits/model.h"

#include "digits/io.h"

/* Test-time augmentation: the image and these whole-pixel shifts (rows, columns; the border
 * repeated, as the training augmentation's "nearest" fill), probabilities averaged. */
#define DG_TTA_COPIES 5

struct dg_scoring {
    struct dg_backend *be;
    struct dg_model members[DG_MAX_MEMBERS]; /* every member of every -m file, in order */
    int member_count;
    struct dg_dataset dataset;
    char *settings[DG_MAX_MEMBERS];   /* each -m file's whole settings text (malloc) */
    int file_members[DG_MAX_MEMBERS]; /* how many members each -m file holds */
    float *probs;                     /* (count, 10): the members' (and copies') mean */
    uint8_t *predicted;               /* (count) first argmax of probs */
    uint8_t *member_predicted; /* (member_count, count): each member alone (with its copies) */
    uint32_t *row_numbers;     /* (count) the 1-based row of the data file each image is */
    char selection[512];       /* which rows were scored, in words */
};

/* --held-out: no; yes (an error when the data is not the model's training data or the model
 * held out nothing); auto (report: the held-out rows when they can be told, else every row,
 * and `selection` says why). */
enum { DG_HELD_OUT_NO = 0, DG_HELD_OUT_YES = 1, DG_HELD_OUT_AUTO = 2 };

/* The options predict and eval share: -m/--model (repeatable), --labels, --batch, --threads,
 * --device, --tta. */
struct dg_scoring_args {
    const char *model_paths[DG_MAX_MEMBERS];
    int model_path_count;
    const char *labels_path;
    long batch;
    int tta;
    int held_out; /* DG_HELD_OUT_*: only the validation rows the (first) model was trained
                     without */
    long limit;   /* --limit: the file's first rows only (0: all) */
    int quiet;    /* -q: no notes on stderr (the results still go where they go) */
    struct dg_backend_spec device;
};

#define DG_SCORING_LONG_OPTIONS                                                                    \
    {"model", required_argument, NULL, 'm'}, {"labels", required_argument, NULL, 'L'},             \
        {"batch", required_argument, NULL, 'b'}, {"threads", required_argument, NULL, 't'},        \
        {"device", required_argument, NULL, 'd'}, {"tta", no_argument, NULL, 'T'},                 \
        {"limit", required_argument, NULL, 'l'}, {"quiet", no_argument, NULL, 'q'},                \
        {"verbose", no_argument, NULL, 'v'}, {"math", required_argument, NULL, 'M'},               \
    {                                                                                              \
        "held-out", no_argument, NULL, 'H'                                                         \
    }

/* The help lines of the shared options about the data and stderr. */
#define DG_SCORING_DATA_HELP                                                                       \
    "      --limit N        only the first N rows of the file\n"                                  \
    "  -q, --quiet          no notes on stderr\n"                                                  \
    "  -v, --verbose        more notes on stderr (the backend, why not the GPU)\n"

/* The help lines of the shared options about models. */
#define DG_SCORING_MODEL_HELP                                                                      \
    "  -m, --model FILE     model or ensemble file (required); give it several times to\n"         \
    "                       average the probabilities of all their members\n"                      \
    "      --tta            test-time augmentation: average each image with its copies\n"          \
    "                       shifted by one pixel up, down, left and right\n"                       \
    "      --held-out       FILE is the model's training file: score only the validation\n"        \
    "                       rows it held out (its seeded split and row count, as stored\n"         \
    "                       in the model; --limit's first rows)\n"

void dg_scoring_args_default(struct dg_scoring_args *args);

/* One getopt result: 1 when it was a shared option (taken), 0 when it is not one, -1 when its
 * value is bad (the usage message is printed). */

int dg_scoring_option(const char *command, int opt, const char *arg, struct dg_scoring_args *args);

/* After the options: -m given and exactly one FILE operand named `what`; 0 or exit code 2. */
int dg_scoring_check_operands(const char *command, const char *what, int argc,
                              const struct dg_scoring_args *args);

enum dg_status dg_scoring_run(struct dg_scoring *s, const struct dg_scoring_args *args,
                              const char *data_path);
/* dg_scoring_run over images already in memory (picture mode): `dataset` is moved into
 * s->dataset (and emptied), whatever the outcome, so dg_scoring_free frees it; its labels are
 * ignored. --held-out is refused (DG_ERR_USAGE); --labels is not read. */
enum dg_status dg_scoring_run_dataset(struct dg_scoring *s, const struct dg_scoring_args *args,
                                      struct dg_dataset *dataset);
void dg_scoring_free(struct dg_scoring *s);

#endif
