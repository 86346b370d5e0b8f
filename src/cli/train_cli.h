/* The parts of `digits train` (src/cli/cmd_train.c reads as the page that joins them):
 *   train_args.c      the options, their checks and the settings of a resumed run
 *   train_progress.c  progress lines, the log, the history, checkpoints and the stop signals
 *   train_ensemble.c  --ensemble K: members one after another or several at a time
 *   train_settings.c  the settings text the model file keeps */
#ifndef DIGITS_CLI_TRAIN_H
#define DIGITS_CLI_TRAIN_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/cli.h"
#include "cli/mpi_job.h"
#include "digits/checkpoint.h"
#include "digits/io.h"
#include "digits/text.h"
#include "digits/train.h"

/* ---- the command line (train_args.c) ---- */

/* Options given on the command line (a contradiction with --resume is refused). */
enum train_given {
    GIVEN_EPOCHS = 1 << 0,
    GIVEN_BATCH = 1 << 1,
    GIVEN_LR = 1 << 2,
    GIVEN_VAL_SPLIT = 1 << 3,
    GIVEN_SEED = 1 << 4,
    GIVEN_NO_AUGMENT = 1 << 5,
    GIVEN_SAVE_BEST = 1 << 6,
    GIVEN_EARLY_STOP = 1 << 7,
    GIVEN_OUTPUT = 1 << 8,
    GIVEN_MATH = 1 << 9,
    GIVEN_ROTATE = 1 << 10,
    GIVEN_ZOOM = 1 << 11,
    GIVEN_SHIFT = 1 << 12,
    GIVEN_SCHEDULE = 1 << 13,
    GIVEN_NET = 1 << 14,
    GIVEN_LABEL_SMOOTHING = 1 << 15,
    GIVEN_OPTIMIZER = 1 << 16,
    GIVEN_MOMENTUM = 1 << 17,
    GIVEN_NESTEROV = 1 << 18,
    GIVEN_BETA1 = 1 << 19,
    GIVEN_BETA2 = 1 << 20,
    GIVEN_ADAM_EPS = 1 << 21,
    GIVEN_EMA = 1 << 22,
};

/* The math a run computes with, as the model file and the checkpoint name it: "bf16", "tf32"
 * (on CUDA; the CPU ignores tf32), NULL for fp32 (the default, not written: default runs'
 * files stay as they were). */
const char *train_math_name(const struct dg_backend_spec *device, const struct dg_backend *be);

/* Everything `digits train` was asked, as parsed and checked. */
struct train_request {
    struct dg_train_options options;
    struct dg_backend_spec device;
    const char *train_path, *output, *labels, *log_path;
    const char *checkpoint_path, *resume_path; /* NULL: none */
    /* --net: the layer table (the reference network unless given) and the text given */
    struct dg_layer_spec net[DG_MAX_LAYERS];
    int net_count;
    const char *net_text;
    int no_checkpoint, checkpoint_given;
    int restart; /* --restart: a fresh run may replace an interrupted run's checkpoint */
    int ensemble, member_splits;
    int concurrent;           /* members at a time per device; 0: the default */
    const char *devices_text; /* --devices as given, NULL when not */
    int devices[DG_MAX_MEMBERS], device_count;
    char device_name[32]; /* "cuda:N" for --devices */
    unsigned given;       /* enum train_given */
    long limit;
    int quiet;
    /* the training data's fingerprint (dg_dataset_fingerprint), once it is loaded */
    uint64_t data_rows;
    uint32_t data_crc;
};

/* Parses and checks the command line into req; -1 to go on, else the exit code (0 after
 * --help, 2 after a usage message). */
int train_parse_args(int argc, char **argv, struct train_request *req);

/* The settings of a resumed run: the checkpoint's, with --epochs possibly raised; any other
 * option given that differs from the checkpoint is refused, naming it. */
enum dg_status train_resume_settings(const char *path, const struct dg_checkpoint *ck,
                                     unsigned given, struct dg_train_options *options);

/* ---- progress, log, history, checkpoints, signals (train_progress.c) ---- */

struct train_progress {
    int tty;
    int quiet;
    FILE *log;
    int log_failed;
    int batch;
    /* checkpoints */
    const char *checkpoint_path;     /* NULL: none */
    struct dg_checkpoint checkpoint; /* settings and fingerprint; state filled per call */
    const struct dg_model *model;
    int checkpoints_written;
    double checkpoint_seconds;
    long checkpoint_bytes;
    /* the epochs reported (a resumed run's earlier ones first), stored in the model file */
    struct dg_epoch_report *history;
    int history_count, history_capacity;
    int history_failed; /* out of memory */
    /* an ensemble's members trained several at a time: epoch lines say "member M: " and are
     * printed under print_lock; *members_stop set: stop at the end of the epoch */
    int member;
    pthread_mutex_t *print_lock;
    atomic_int *members_stop;
};

double train_wall_seconds(void);
/* Keeps one epoch's report for the model file. */
void train_keep_history(struct train_progress *progress, const struct dg_epoch_report *r);
/* dg_train's callbacks, ctx a struct train_progress. */
void train_on_step(int epoch, int step, int steps, double seconds, void *ctx);
void train_on_epoch(const struct dg_epoch_report *r, void *ctx);
enum dg_status train_on_checkpoint(const struct dg_train_state *state, void *ctx);
/* A member trained beside others: stops at the end of an epoch once another member failed. */
enum dg_status train_on_member_epoch_end(const struct dg_train_state *state, void *ctx);
/* Creates the history log at path with its header line; DG_ERR_IO when it cannot. */
enum dg_status train_log_open(struct train_progress *progress, const char *path);
/* One history line; the validation fields are empty when there is no validation set. */
void train_log_line(FILE *log, const struct dg_epoch_report *r);
/* LOG.csv -> LOG.memberM.csv (M from 1); a path without an extension gets .memberM. */
void train_member_log_path(const char *log_path, int member, char *out, size_t size);

/* SIGINT and SIGTERM while training: the first sets train_stop_signal (dg_train finishes the
 * step, a checkpoint is written); the handler then resets to the temporaries' handler
 * (src/io/temporaries.c), so a second one stops at once, open temporary files removed. */
extern volatile sig_atomic_t train_stop_signal;
void train_catch_stop_signals(void);
void train_release_stop_signals(void);

/* ---- --ensemble K (train_ensemble.c) ---- */

/* How an ensemble's members are trained in this process (or MPI rank): `workers` members at a
 * time, each on its own backend and host thread; 1 means one after another on the command's
 * backend. */
struct ensemble_plan {
    int workers;                   /* members trained at the same time here (>= 1) */
    int cpu_threads;               /* CPU: threads of each worker's backend */
    int devices[DG_MAX_MEMBERS];   /* CUDA: worker w runs on devices[w % device_count] */
    int device_count;              /* 0: the command's device */
    struct dg_backend_spec device; /* the command's settings (math, deterministic, ...) */
};

/* The plan for `here` members on `be` (the command's backend) as req asks. */
void train_ensemble_plan(const struct train_request *req, const struct dg_backend *be, int here,
                         struct ensemble_plan *plan);

/* K = req->ensemble members, member m exactly `digits train --seed SEED+m --split-seed S`
 * (S = SEED, or SEED+m with --member-splits), into one ensemble file (req->output). */
enum dg_status train_ensemble(struct dg_backend *be, const struct dg_dataset *dataset,
                              const struct train_request *req, struct train_progress *progress,
                              const struct dg_mpi_job *job, const struct ensemble_plan *plan);

/* ---- the settings text of the model file (train_settings.c) ---- */

/* What the settings text says of a run. */
struct train_record {
    const char *backend, *train_file;
    uint64_t rows; /* the training data's fingerprint (train_request's) */
    uint32_t data_crc;
    const struct dg_train_options *options;
    int members;            /* an ensemble's member count; 0: one model */
    const char *split_seed; /* NULL: options->split_seed; else this text ("per member") */
    long validation_rows;   /* < 0: not said (an ensemble) */
    const char *math;       /* "bf16", "tf32" (CUDA): written as math=; NULL: fp32, not written */
};

/* Writes the lines every model file starts with: the version, the data, the recipe. Floats are
 * written with the fewest digits that read back as the same float (dg_text_add_float), so
 * val_split rebuilds the very split training used. */
void train_settings_text(struct dg_text *t, const struct train_record *record);

#endif
