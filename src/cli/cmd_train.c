/* digits train: load a labelled file, train the reference network with the reference recipe
 * (each setting a flag), write the model file; progress on stderr, history with --log.
 * A checkpoint is written atomically at the end of every epoch (and on SIGINT/SIGTERM, after
 * the step in progress); --resume continues from one, bit for bit. */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"
#include "cli/mpi_job.h"

#include "digits/data.h"
#include "digits/checkpoint.h"
#include "digits/io.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/text.h"
#include "digits/train.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *usage_text =
    "usage: digits train TRAIN [options] [-o model.dgt]\n"
    "\n"
    "Trains the reference network on TRAIN (Kaggle train.csv[.gz], or MNIST IDX images with\n"
    "--labels) and writes the model file.\n"
    "\n"
    "options (defaults: the reference Keras recipe):\n"
    "  -o, --output FILE     model file to write (default model.dgt)\n"
    "      --labels FILE     IDX label file, when TRAIN is an IDX image file\n"
    "      --epochs N        epochs (30)\n"
    "      --batch N         batch size (86)\n"
    "      --lr X            RMSprop learning rate (0.001)\n"
    "      --val-split X     fraction held out for validation, seeded (0.1)\n"
    "      --seed N          seed of every random draw (42)\n"
    "      --no-augment      no augmentation (default: rotation 10, zoom 0.1, shifts 0.1)\n"
    "      --limit N         use only the first N rows\n"
    "      --threads N       CPU threads (all cores)\n"
    "      --device D        auto, cpu, cuda or cuda:N (auto)\n"
    "      --math M          CUDA math: fp32 or tf32 (fp32)\n"
    "      --deterministic   bit-identical reruns on the same GPU\n"
    "      --log FILE.csv    per-epoch history (written as training goes; continued\n"
    "                        on --resume)\n"
    "      --checkpoint FILE the training state, written atomically after every epoch\n"
    "                        and on SIGINT/SIGTERM (default: the model file + .ckpt)\n"
    "      --no-checkpoint   write no checkpoint\n"
    "      --resume FILE     continue from a checkpoint, bit for bit; the settings (and\n"
    "                        --limit, --labels, -o) come from it; options that contradict\n"
    "                        it are refused; --epochs may be raised to train longer\n"
    "      --save-best       the model file gets the weights of the best validation epoch\n"
    "      --split-seed N    seed of the validation split (default: --seed)\n"
    "      --ensemble K      train K members, member m with seed SEED+m (its own\n"
    "                        initialisation, dropout and augmentation; the split of\n"
    "                        --split-seed), into one ensemble file; no checkpoints;\n"
    "                        --log FILE writes FILE.memberM.csv per member\n"
    "      --member-splits   each member its own validation split (seed SEED+m)\n"
    "      --concurrent N    train N members at a time (per device with --devices), each\n"
    "                        on its own backend from its own thread: on the CPU each gets\n"
    "                        threads/N threads (at least 1), on CUDA its own streams and\n"
    "                        handles on the same device; at most the members there are.\n"
    "                        Every member is bit-identical whatever N. Default on the\n"
    "                        CPU: one member per thread (faster than one after another\n"
    "                        with all threads, measured on 2 cores); --concurrent 1: one\n"
    "                        after another. On CUDA: 1 per device (not measured on a GPU)\n"
    "      --devices LIST    spread the members over these CUDA devices (e.g. 0,1), in one\n"
    "                        process; with MPI, over each rank's members\n"
    "      --early-stop N    stop after N epochs without a better val_accuracy\n"
    "  -q, --quiet           no progress output\n"
    "  -h, --help            this text\n"
    "\n"
    "Ctrl-C (SIGINT) or SIGTERM: the step in progress finishes, a checkpoint is written and the\n"
    "command to resume is printed (exit 130 / 143); a second Ctrl-C stops at once. A loss that\n"
    "turns NaN, infinite or above 1e4 per image (diverged) stops training (exit 1) with the\n"
    "last checkpoint kept and no model written.\n"
    "With --val-split 0 there is no validation: no learning-rate reduction, --save-best and\n"
    "--early-stop are unavailable.\n";

struct progress {
    int tty;
    int quiet;
    FILE *log;
    int log_failed;
    int batch;
    /* checkpoints */
    const char *checkpoint_path; /* NULL: none */
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

/* Keeps one epoch's report for the model file. */
static void keep_history(struct progress *progress, const struct dg_epoch_report *r)
{
    if (progress->history_count == progress->history_capacity) {
        int capacity = progress->history_capacity ? 2 * progress->history_capacity : 32;
        struct dg_epoch_report *grown =
            realloc(progress->history, (size_t)capacity * sizeof *grown);
        if (!grown) {
            progress->history_failed = 1;
            return;
        }
        progress->history = grown;
        progress->history_capacity = capacity;
    }
    progress->history[progress->history_count++] = *r;
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int signo)
{
    stop_signal = signo;
    /* SA_RESETHAND made it SIG_DFL: the temporaries' handler instead, which removes the open
     * temporary files (a checkpoint being written) before dying by the signal */
    dg_temporaries_catch(signo);
}

/* SIGINT and SIGTERM set stop_signal once; the handler then resets to the temporaries'
 * handler (src/io/temporaries.c), so a second one acts as the default (stops at once), open
 * temporary files removed. */
static void catch_stop_signals(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = (int)SA_RESETHAND;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
}

static void release_stop_signals(void)
{
    dg_temporaries_catch(SIGINT);
    dg_temporaries_catch(SIGTERM);
}

static enum dg_status on_checkpoint(const struct dg_train_state *state, void *ctx)
{
    struct progress *progress = ctx;
    if (!progress->checkpoint_path)
        return DG_OK;
    double start = wall_seconds();
    progress->checkpoint.state = *state;
    enum dg_status status =
        dg_checkpoint_save(progress->checkpoint_path, progress->model, &progress->checkpoint);
    memset(&progress->checkpoint.state, 0, sizeof progress->checkpoint.state);
    if (status != DG_OK)
        return dg_error_prefix(status, "writing the checkpoint (the previous one is kept)");
    progress->checkpoints_written++;
    progress->checkpoint_seconds += wall_seconds() - start;
    struct stat st;
    if (stat(progress->checkpoint_path, &st) == 0)
        progress->checkpoint_bytes = (long)st.st_size;
    return DG_OK;
}

/* One history line; the validation fields are empty when there is no validation set. */
static void log_line(FILE *log, const struct dg_epoch_report *r)
{
    if (isnan(r->val_loss))
        fprintf(log, "%d,%.6f,%.6f,,,%.6g,%.1f,%.3f\n", r->epoch, r->loss, r->accuracy, r->lr,
                r->images_per_second, r->seconds);
    else
        fprintf(log, "%d,%.6f,%.6f,%.6f,%.6f,%.6g,%.1f,%.3f\n", r->epoch, r->loss, r->accuracy,
                r->val_loss, r->val_accuracy, r->lr, r->images_per_second, r->seconds);
}

static void on_step(int epoch, int step, int steps, double seconds, void *ctx)
{
    struct progress *progress = ctx;
    if (progress->quiet || !progress->tty)
        return;
    if (step != steps && step % 8 != 0)
        return;
    int width = 30;
    int filled = (int)((double)step / steps * width);
    double steps_per_second = seconds > 0 ? step / seconds : 0.0;
    double eta = steps_per_second > 0 ? (steps - step) / steps_per_second : 0.0;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[width] = '\0';
    fprintf(stderr, "\repoch %d [%s] %d/%d  %.0f images/s  ETA %.0fs   ", epoch, bar, step,
            steps, steps_per_second * progress->batch, eta);
    fflush(stderr);
}

static void on_epoch(const struct dg_epoch_report *r, void *ctx)
{
    struct progress *progress = ctx;
    keep_history(progress, r);
    if (!progress->quiet) {
        char validation[96] = "", member[32] = "";
        if (!isnan(r->val_loss))
            snprintf(validation, sizeof validation, " val_loss %.4f val_accuracy %.4f",
                     r->val_loss, r->val_accuracy);
        if (progress->member > 0)
            snprintf(member, sizeof member, "member %d: ", progress->member);
        if (progress->print_lock)
            pthread_mutex_lock(progress->print_lock);
        if (progress->tty)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr,
                "%sepoch %d/%d: loss %.4f accuracy %.4f%s lr %.3g images/s %.0f seconds %.1f%s\n",
                member, r->epoch, r->epochs, r->loss, r->accuracy, validation, r->lr,
                r->images_per_second, r->seconds,
                r->next_lr < r->lr ? " (learning rate reduced)" : "");
        if (progress->print_lock)
            pthread_mutex_unlock(progress->print_lock);
    }
    if (progress->log) {
        log_line(progress->log, r);
        if (fflush(progress->log) != 0)
            progress->log_failed = 1;
    }
}

/* A member trained beside others: training stops at the end of an epoch once another member
 * has failed (checked per epoch, through the checkpoint hook, which writes nothing here). */
static enum dg_status on_member_epoch_end(const struct dg_train_state *state, void *ctx)
{
    (void)state;
    struct progress *progress = ctx;
    if (progress->members_stop && atomic_load(progress->members_stop))
        return dg_error(DG_ERR_INTERRUPTED, "stopped: another member failed");
    return DG_OK;
}

/* LOG.csv -> LOG.memberM.csv (M from 1); a path without an extension gets .memberM. */
static void member_log_path(const char *log_path, int member, char *out, size_t size)
{
    const char *slash = strrchr(log_path, '/');
    const char *dot = strrchr(log_path, '.');
    if (dot && (!slash || dot > slash))
        snprintf(out, size, "%.*s.member%d%s", (int)(dot - log_path), log_path, member, dot);
    else
        snprintf(out, size, "%s.member%d", log_path, member);
}

/* Refuses an output (the model file, the checkpoint, the log or the members' logs) that is an
 * input (TRAIN, --labels, --resume) or another output; 0, or the exit code. The checkpoint
 * being resumed may be the checkpoint written: it is continued in place. */
static int check_outputs(const char *train_path, const char *labels, const char *resume_path,
                         const char *output, int output_given, const char *checkpoint_path,
                         int checkpoint_given, const char *log_path, int ensemble)
{
    struct dg_cli_file files[DG_MAX_MEMBERS + 8];
    char (*member_logs)[4200] = NULL;
    size_t n = 0;
    files[n++] = (struct dg_cli_file){output, output_given ? "-o" : "the model file", 1};
    files[n++] = (struct dg_cli_file){checkpoint_path,
                                      checkpoint_given ? "--checkpoint"
                                      : checkpoint_path == resume_path
                                          ? "the checkpoint (--resume)"
                                          : "the checkpoint",
                                      1};
    if (log_path && ensemble > 1) {
        if (!(member_logs = calloc((size_t)ensemble, sizeof *member_logs)))
            return dg_cli_fail(dg_error(DG_ERR_NOMEM, "out of memory"));
        for (int m = 0; m < ensemble && m < DG_MAX_MEMBERS; m++) {
            member_log_path(log_path, m + 1, member_logs[m], sizeof member_logs[m]);
            files[n++] = (struct dg_cli_file){member_logs[m], "the member's log (--log)", 1};
        }
    } else
        files[n++] = (struct dg_cli_file){log_path, "--log", 1};
    files[n++] = (struct dg_cli_file){train_path, "the TRAIN file", 0};
    files[n++] = (struct dg_cli_file){labels, "--labels", 0};
    if (resume_path && !(checkpoint_path && dg_cli_same_file(resume_path, checkpoint_path)))
        files[n++] = (struct dg_cli_file){resume_path, "--resume", 0};
    int code = dg_cli_check_outputs("train", files, n);
    free(member_logs);
    return code;
}

/* How an ensemble's members are trained in this process (or MPI rank): `workers` members at a
 * time, each on its own backend and host thread; 1 means one after another on the command's
 * backend, as before. */
struct ensemble_plan {
    int workers;           /* members trained at the same time here (>= 1) */
    int cpu_threads;       /* CPU: threads of each worker's backend */
    int devices[DG_MAX_MEMBERS]; /* CUDA: worker w runs on devices[w % device_count] */
    int device_count;      /* 0: the command's device */
    struct dg_backend_spec device; /* the command's settings (math, deterministic, ...) */
};

/* Everything the workers share while members train. */
struct ensemble_work {
    const struct dg_dataset *dataset;
    const struct dg_train_options *base;
    int count, member_splits;
    const char *log_path;
    const struct dg_mpi_job *job;
    int quiet, tty;
    int concurrent; /* several workers: no progress bar, epoch lines prefixed by the member */
    struct dg_model *members;
    char **histories;  /* [count]: each member's "memberM_history=" lines */
    double *seconds;   /* [count]: each member's training time */
    int queue[DG_MAX_MEMBERS], queued; /* this rank's members, in order */
    pthread_mutex_t lock; /* the fields below, backend creation and stderr */
    pthread_cond_t ready_cond;
    int next;      /* queue[next] is the next member to start */
    int ready;     /* workers that have opened their backend (or failed to) */
    int go;        /* every worker is ready: members may start */
    int failed;    /* the first failure is recorded: no further member starts */
    enum dg_status status;
    char message[1024];
    atomic_int stop; /* a member failed: the others stop at the end of their epoch */
};

struct ensemble_worker {
    struct ensemble_work *work;
    struct dg_backend *be;  /* the command's backend (one worker), else opened by the worker */
    struct dg_backend_spec device;
    char spec[32];
    char description[256];
    pthread_t thread;
};

/* Records the first failure (this thread's message) and stops the other members. */
static void record_failure(struct ensemble_work *work, enum dg_status status)
{
    pthread_mutex_lock(&work->lock);
    if (!work->failed) {
        work->failed = 1;
        work->status = status;
        snprintf(work->message, sizeof work->message, "%s", dg_error_message());
    }
    atomic_store(&work->stop, 1);
    pthread_mutex_unlock(&work->lock);
}

/* Member m, exactly `digits train --seed SEED+m --split-seed S` (S = SEED, or SEED+m with
 * --member-splits): its own progress, log file and history. */
static enum dg_status train_member(struct ensemble_work *work, struct dg_backend *be,
                                   const char *where, int m)
{
    const struct dg_train_options *base = work->base;
    struct progress progress;
    memset(&progress, 0, sizeof progress);
    progress.quiet = work->quiet;
    progress.tty = work->concurrent ? 0 : work->tty;
    progress.batch = base->batch;
    progress.member = work->concurrent ? m + 1 : 0;
    progress.print_lock = work->concurrent ? &work->lock : NULL;
    progress.members_stop = &work->stop;
    struct dg_train_options options = *base;
    options.seed = base->seed + (uint64_t)m;
    options.split_seed = work->member_splits ? options.seed : base->split_seed;
    options.on_epoch = on_epoch;
    options.on_step = work->concurrent ? NULL : on_step;
    options.on_checkpoint = work->concurrent ? on_member_epoch_end : NULL;
    options.ctx = &progress;
    options.stop = NULL;
    options.resume = NULL;
    enum dg_status status = DG_OK;
    char path[4200] = "";
    if (work->log_path) {
        member_log_path(work->log_path, m + 1, path, sizeof path);
        progress.log = fopen(path, "w");
        if (!progress.log)
            return dg_error(DG_ERR_IO, "%s: cannot create the log file", path);
        fprintf(progress.log,
                "epoch,loss,accuracy,val_loss,val_accuracy,lr,images_per_second,seconds\n");
    }
    if (!progress.quiet) {
        if (progress.print_lock)
            pthread_mutex_lock(progress.print_lock);
        fprintf(stderr, "digits: member %d of %d (seed %llu, split seed %llu)%s%s\n", m + 1,
                work->count, (unsigned long long)options.seed,
                (unsigned long long)options.split_seed, work->job->size > 1 ? " on rank 0" : "",
                where);
        if (progress.print_lock)
            pthread_mutex_unlock(progress.print_lock);
    }
    struct dg_train_result result;
    memset(&result, 0, sizeof result);
    status = dg_train(be, &work->members[m], work->dataset, &options, &result);
    if (status == DG_OK && progress.history_failed)
        status = dg_error(DG_ERR_NOMEM, "out of memory for the training history");
    if (status == DG_OK) {
        struct dg_text t = {0};
        char key[32];
        snprintf(key, sizeof key, "member%d_history", m + 1);
        dg_history_text(&t, key, progress.history, progress.history_count);
        work->histories[m] = t.data;
        if (t.failed)
            status = dg_error(DG_ERR_NOMEM, "out of memory for the training history");
    }
    if (progress.log && (fclose(progress.log) != 0 || progress.log_failed) && status == DG_OK)
        status = dg_error(DG_ERR_IO, "%s: writing the member's log failed", path);
    work->seconds[m] = result.seconds;
    free(progress.history);
    return status;
}

/* A worker: opens its backend (when it has none; CUDA binds the device to this thread), waits
 * until every worker has, then trains members from the queue until it is empty or a member
 * has failed anywhere. */
static void *ensemble_worker_main(void *arg)
{
    struct ensemble_worker *worker = arg;
    struct ensemble_work *work = worker->work;
    struct dg_backend *own = NULL, *be = worker->be;
    enum dg_status status = DG_OK;
    if (!be) {
        /* one at a time: the CPU backend sets OpenBLAS' (process-wide) thread count, and no
         * member trains before every backend is open */
        pthread_mutex_lock(&work->lock);
        status = dg_cli_open_backend(&worker->device, 1, &own);
        pthread_mutex_unlock(&work->lock);
        if (status != DG_OK) {
            dg_error_prefix(status, "opening the backend for %s", worker->spec);
            record_failure(work, status);
        } else {
            be = own;
            snprintf(worker->description, sizeof worker->description, "%s", be->description);
        }
        pthread_mutex_lock(&work->lock);
        work->ready++;
        pthread_cond_broadcast(&work->ready_cond);
        while (!work->go)
            pthread_cond_wait(&work->ready_cond, &work->lock);
        pthread_mutex_unlock(&work->lock);
    }
    char where[64] = "";
    if (work->concurrent && be)
        snprintf(where, sizeof where, " on %s", worker->spec);
    while (status == DG_OK) {
        pthread_mutex_lock(&work->lock);
        int m = work->failed || work->next >= work->queued ? -1 : work->queue[work->next++];
        pthread_mutex_unlock(&work->lock);
        if (m < 0)
            break;
        status = train_member(work, be, where, m);
        if (status == DG_ERR_INTERRUPTED && atomic_load(&work->stop))
            break; /* stopped because another member failed: that one is reported */
        if (status != DG_OK) {
            dg_error_prefix(status, "member %d", m + 1);
            record_failure(work, status);
        }
    }
    dg_backend_destroy(own);
    return NULL;
}

/* K members, member m exactly `digits train --seed SEED+m --split-seed S` (S = SEED, or
 * SEED+m with --member-splits), into one ensemble file: this rank's members one after another
 * on `be`, or plan->workers at a time, each on its own backend (its share of the CPU threads,
 * or its own CUDA backend instance on its device) from its own host thread. */
static enum dg_status train_ensemble(struct dg_backend *be, const struct dg_dataset *dataset,
                                     const struct dg_train_options *base, int count,
                                     int member_splits, const char *output, const char *log_path,
                                     struct progress *progress, const char *train_path,
                                     const struct dg_mpi_job *job,
                                     const struct ensemble_plan *plan)
{
    struct ensemble_work *work = calloc(1, sizeof *work);
    struct ensemble_worker *workers = calloc((size_t)plan->workers, sizeof *workers);
    struct dg_model *members = calloc((size_t)count, sizeof *members);
    char *histories[DG_MAX_MEMBERS] = {NULL};
    double member_seconds[DG_MAX_MEMBERS] = {0};
    enum dg_status status =
        work && workers && members ? DG_OK : dg_error(DG_ERR_NOMEM, "out of memory");
    int built = 0, started = 0, locks = 0;
    double wall_start = wall_seconds();
    for (int m = 0; m < count && status == DG_OK; m++) {
        int layer_count;
        const struct dg_layer_spec *specs = dg_arch_reference(&layer_count);
        if ((status = dg_model_build(&members[m], specs, layer_count)) != DG_OK)
            break;
        built = m + 1;
        dg_model_init_glorot(&members[m], base->seed + (uint64_t)m);
    }
    if (status == DG_OK) {
        work->dataset = dataset;
        work->base = base;
        work->count = count;
        work->member_splits = member_splits;
        work->log_path = log_path;
        work->job = job;
        work->quiet = progress->quiet;
        work->tty = progress->tty;
        work->concurrent = plan->workers > 1;
        work->members = members;
        work->histories = histories;
        work->seconds = member_seconds;
        for (int m = job->rank; m < count; m += job->size)
            work->queue[work->queued++] = m; /* other ranks' members are received below */
        atomic_init(&work->stop, 0);
        pthread_mutex_init(&work->lock, NULL);
        pthread_cond_init(&work->ready_cond, NULL);
        locks = 1;
        for (int w = 0; w < plan->workers; w++) {
            struct ensemble_worker *worker = &workers[w];
            worker->work = work;
            worker->device = plan->device;
            if (strcmp(be->name, "cpu") == 0) {
                snprintf(worker->spec, sizeof worker->spec, "cpu");
                worker->device.threads = plan->cpu_threads;
            } else {
                int ordinal = 0;
                if (plan->device_count > 0)
                    ordinal = plan->devices[w % plan->device_count];
                else if (strncmp(plan->device.device, "cuda:", 5) == 0)
                    ordinal = atoi(plan->device.device + 5);
                snprintf(worker->spec, sizeof worker->spec, "cuda:%d", ordinal);
            }
            worker->device.device = worker->spec;
        }
    }
    if (status == DG_OK && plan->workers == 1) {
        /* one after another on the command's backend, in this thread */
        workers[0].be = be;
        ensemble_worker_main(&workers[0]);
    } else if (status == DG_OK) {
        for (int w = 0; w < plan->workers; w++) {
            if (pthread_create(&workers[w].thread, NULL, ensemble_worker_main, &workers[w]) != 0) {
                record_failure(work, dg_error(DG_ERR_RUNTIME, "cannot start the thread of "
                                                              "worker %d of %d",
                                              w + 1, plan->workers));
                break;
            }
            started++;
        }
        pthread_mutex_lock(&work->lock);
        while (work->ready < started)
            pthread_cond_wait(&work->ready_cond, &work->lock);
        if (!work->quiet && !work->failed) {
            fprintf(stderr, "digits: %d members here, %d at a time, each on its own backend:\n",
                    work->queued, plan->workers);
            for (int w = 0; w < started; w++) {
                int same = 0;
                for (int v = 0; v < w; v++)
                    same |= strcmp(workers[v].description, workers[w].description) == 0;
                if (!same)
                    fprintf(stderr, "digits:   %s\n", workers[w].description);
            }
        }
        work->go = 1;
        pthread_cond_broadcast(&work->ready_cond);
        pthread_mutex_unlock(&work->lock);
        for (int w = 0; w < started; w++)
            pthread_join(workers[w].thread, NULL);
    }
    if (status == DG_OK && work->failed)
        status = dg_error(work->status, "%s", work->message);
    double seconds = 0.0;
    for (int m = 0; m < count; m++)
        seconds += member_seconds[m];
    double wall = wall_seconds() - wall_start;
    /* every rank: all members trained, or the first failure everywhere; then rank 0 gets them */
    status = dg_mpi_agree(job, status);
    for (int m = 0; m < count && status == DG_OK; m++)
        if ((status = dg_mpi_collect(job, m, members[m].params, members[m].param_count)) ==
            DG_OK)
            status = dg_mpi_collect_text(job, m, &histories[m]);
    status = dg_mpi_agree(job, status);
    if (status == DG_OK && job->rank == 0) {
        char split_text[32];
        if (member_splits)
            snprintf(split_text, sizeof split_text, "per member");
        else
            snprintf(split_text, sizeof split_text, "%llu",
                     (unsigned long long)base->split_seed);
        uint64_t data_rows;
        uint32_t data_crc;
        dg_dataset_fingerprint(dataset, &data_rows, &data_crc);
        struct dg_text t = {0};
        dg_text_add(&t,
                 "digits_version=%s\nbackend=%s\ntrain_file=%s\nrows=%zu\ndata_crc32=%08x\n"
                 "members=%d\nepochs=%d\nbatch=%d\nlr=%g\nrho=%g\neps=%g\nval_split=%g\n"
                 "seed=%llu\nsplit_seed=%s\naugment=%d\nmpi_ranks=%d\nseconds=%.1f\n",
                 DIGITS_VERSION, be->name, train_path, dataset->count, (unsigned)data_crc, count,
                 base->epochs, base->batch, base->lr, base->rho, base->eps, base->val_split,
                 (unsigned long long)base->seed, split_text, base->augment, job->size, seconds);
        if (plan->workers > 1)
            dg_text_add(&t, "concurrent=%d\n", plan->workers);
        for (int d = 0; d < plan->device_count; d++)
            dg_text_add(&t, d ? ",%d" : "devices=%d", plan->devices[d]);
        if (plan->device_count)
            dg_text_add(&t, "\n");
        for (int m = 0; m < count; m++)
            dg_text_add(&t, "member%d_seed=%llu\n", m + 1,
                     (unsigned long long)(base->seed + (uint64_t)m));
        for (int m = 0; m < count; m++)
            dg_text_add(&t, "%s", histories[m] ? histories[m] : "");
        const char *settings = t.data;
        if (t.failed)
            status = dg_error(DG_ERR_NOMEM, "out of memory for the model's settings");
        if (status == DG_OK)
            status = dg_ensemble_save(output, members, count, settings);
        free(t.data);
        if (status == DG_OK && !progress->quiet) {
            if (plan->workers > 1)
                fprintf(stderr,
                        "digits: wrote %s (an ensemble of %d members, %.1f s of training, "
                        "%.1f s wall, %d at a time%s)\n",
                        output, count, seconds, wall, plan->workers,
                        job->size > 1 ? " per rank" : "");
            else
                fprintf(stderr, "digits: wrote %s (an ensemble of %d members, %.1f s%s)\n",
                        output, count, seconds, job->size > 1 ? " on rank 0" : "");
        }
    }
    if (locks) {
        pthread_cond_destroy(&work->ready_cond);
        pthread_mutex_destroy(&work->lock);
    }
    for (int m = 0; m < count; m++)
        free(histories[m]);
    for (int m = 0; m < built; m++)
        dg_model_free(&members[m]);
    free(members);
    free(workers);
    free(work);
    return status;
}

/* "--devices 0,2": distinct CUDA ordinals 0..1023, at most DG_MAX_MEMBERS of them; a usage
 * message and 0 otherwise. */
static int parse_devices(const char *text, int *devices, int *count)
{
    const char *p = text;
    *count = 0;
    for (;;) {
        char *end = NULL;
        long ordinal = -1;
        if (*p >= '0' && *p <= '9') {
            errno = 0;
            ordinal = strtol(p, &end, 10);
            if (errno)
                ordinal = -1;
        }
        if (ordinal < 0 || ordinal > 1023 || (*end != ',' && *end != '\0')) {
            dg_cli_usage_error("train", "--devices expects CUDA device numbers separated by "
                                        "commas (e.g. 0,1), got '%s'",
                               text);
            return 0;
        }
        for (int d = 0; d < *count; d++)
            if (devices[d] == (int)ordinal) {
                dg_cli_usage_error("train", "--devices %s names device %ld twice (--concurrent "
                                            "N runs N members per device)",
                                   text, ordinal);
                return 0;
            }
        if (*count == DG_MAX_MEMBERS) {
            dg_cli_usage_error("train", "--devices %s: at most %d devices", text,
                               DG_MAX_MEMBERS);
            return 0;
        }
        devices[(*count)++] = (int)ordinal;
        if (*end == '\0')
            return 1;
        p = end + 1;
    }
}

/* Members trained at the same time on the CPU when --concurrent is not given, for `threads`
 * threads in all: one per thread (clamped to the members there are). scripts/bench-ensemble
 * on the 2-core machine: 2 members at 1 thread each beat one after another at 2 threads (the
 * pool's per-op synchronisation and the serial parts of a step are paid once per member, not
 * shared); measured only there. --concurrent 1 restores one after another. */
static int cpu_default_concurrent(int threads)
{
    return threads > 0 ? threads : 1;
}

/* Options given on the command line (a contradiction with --resume is refused). */
enum given {
    GIVEN_EPOCHS = 1 << 0,
    GIVEN_BATCH = 1 << 1,
    GIVEN_LR = 1 << 2,
    GIVEN_VAL_SPLIT = 1 << 3,
    GIVEN_SEED = 1 << 4,
    GIVEN_NO_AUGMENT = 1 << 5,
    GIVEN_SAVE_BEST = 1 << 6,
    GIVEN_EARLY_STOP = 1 << 7,
    GIVEN_OUTPUT = 1 << 8,
};

/* The settings of a resumed run: the checkpoint's, with --epochs possibly raised; any other
 * option given that differs from the checkpoint is refused, naming it. */
static enum dg_status resume_settings(const char *path, const struct dg_checkpoint *ck,
                                      unsigned given, struct dg_train_options *options)
{
    const struct dg_train_options *c = &ck->options;
    char what[160] = "";
    if ((given & GIVEN_BATCH) && options->batch != c->batch)
        snprintf(what, sizeof what, "--batch %d (the checkpoint's is %d)", options->batch,
                 c->batch);
    else if ((given & GIVEN_LR) && options->lr != c->lr)
        snprintf(what, sizeof what, "--lr %g (the checkpoint's is %g)", (double)options->lr,
                 (double)c->lr);
    else if ((given & GIVEN_VAL_SPLIT) && options->val_split != c->val_split)
        snprintf(what, sizeof what, "--val-split %g (the checkpoint's is %g)",
                 (double)options->val_split, (double)c->val_split);
    else if ((given & GIVEN_SEED) && options->seed != c->seed)
        snprintf(what, sizeof what, "--seed %llu (the checkpoint's is %llu)",
                 (unsigned long long)options->seed, (unsigned long long)c->seed);
    else if ((given & GIVEN_NO_AUGMENT) && c->augment)
        snprintf(what, sizeof what, "--no-augment (the checkpoint's run augments)");
    else if ((given & GIVEN_SAVE_BEST) && !c->save_best)
        snprintf(what, sizeof what, "--save-best (the checkpoint's run keeps the last weights)");
    else if ((given & GIVEN_EARLY_STOP) && options->early_stop != c->early_stop)
        snprintf(what, sizeof what, "--early-stop %d (the checkpoint's is %d)",
                 options->early_stop, c->early_stop);
    else if ((given & GIVEN_EPOCHS) && options->epochs < ck->state.epoch)
        snprintf(what, sizeof what, "--epochs %d (the checkpoint has done %d epochs already)",
                 options->epochs, ck->state.epoch);
    if (what[0])
        return dg_error(DG_ERR_USAGE, "%s: %s contradicts the checkpoint; leave it out to use "
                                      "the checkpoint's setting",
                        path, what);
    int epochs = (given & GIVEN_EPOCHS) ? options->epochs : c->epochs;
    void (*on_epoch_fn)(const struct dg_epoch_report *, void *) = options->on_epoch;
    void (*on_step_fn)(int, int, int, double, void *) = options->on_step;
    *options = *c;
    options->epochs = epochs;
    options->on_epoch = on_epoch_fn;
    options->on_step = on_step_fn;
    return DG_OK;
}

int dg_cmd_train(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"output", required_argument, NULL, 'o'},
        {"labels", required_argument, NULL, 'L'},
        {"epochs", required_argument, NULL, 'e'},
        {"batch", required_argument, NULL, 'b'},
        {"lr", required_argument, NULL, 'r'},
        {"val-split", required_argument, NULL, 'v'},
        {"seed", required_argument, NULL, 's'},
        {"no-augment", no_argument, NULL, 'A'},
        {"limit", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"device", required_argument, NULL, 'd'},
        {"math", required_argument, NULL, 'M'},
        {"deterministic", no_argument, NULL, 'D'},
        {"log", required_argument, NULL, 'g'},
        {"checkpoint", required_argument, NULL, 'c'},
        {"no-checkpoint", no_argument, NULL, 'C'},
        {"resume", required_argument, NULL, 'R'},
        {"save-best", no_argument, NULL, 'B'},
        {"early-stop", required_argument, NULL, 'E'},
        {"split-seed", required_argument, NULL, 'S'},
        {"ensemble", required_argument, NULL, 'K'},
        {"member-splits", no_argument, NULL, 'P'},
        {"concurrent", required_argument, NULL, 'N'},
        {"devices", required_argument, NULL, 'V'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_train_options options;
    dg_train_options_default(&options);
    struct dg_backend_spec device = {"auto", 0, DG_CUDA_MATH_FP32, 0, 0};
    const char *output = "model.dgt", *labels = NULL, *log_path = NULL;
    const char *checkpoint_path = NULL, *resume_path = NULL;
    int no_checkpoint = 0, ensemble = 1, member_splits = 0, split_seed_given = 0;
    int checkpoint_given = 0;
    int concurrent = 0; /* members at a time per device; 0: the default */
    const char *devices_text = NULL;
    char device_spec[32];
    struct ensemble_plan plan;
    memset(&plan, 0, sizeof plan);
    uint64_t split_seed = 0;
    unsigned given = 0;
    long limit = 0;
    struct progress progress;
    memset(&progress, 0, sizeof progress);
    progress.tty = isatty(STDERR_FILENO);
    int opt;
    long value;
    double real;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "o:qh", long_options, NULL)) != -1) {
        switch (opt) {
        case 'o':
            output = optarg;
            given |= GIVEN_OUTPUT;
            break;
        case 'L':
            labels = optarg;
            break;
        case 'e':
            if (!dg_cli_parse_int("train", "--epochs", optarg, DG_TRAIN_EPOCHS_MIN,
                                  DG_TRAIN_EPOCHS_MAX, &value))
                return 2;
            options.epochs = (int)value;
            given |= GIVEN_EPOCHS;
            break;
        case 'b':
            if (!dg_cli_parse_int("train", "--batch", optarg, DG_TRAIN_BATCH_MIN,
                                  DG_TRAIN_BATCH_MAX, &value))
                return 2;
            options.batch = (int)value;
            given |= GIVEN_BATCH;
            break;
        case 'r':
            if (!dg_cli_parse_float("train", "--lr", optarg, DG_TRAIN_LR_MIN,
                                    DG_TRAIN_LR_MAX, &real))
                return 2;
            options.lr = (float)real;
            given |= GIVEN_LR;
            break;
        case 'v':
            if (!dg_cli_parse_float("train", "--val-split", optarg,
                                    DG_TRAIN_VAL_SPLIT_MIN, DG_TRAIN_VAL_SPLIT_MAX, &real))
                return 2;
            options.val_split = (float)real;
            given |= GIVEN_VAL_SPLIT;
            break;
        case 's':
            if (!dg_cli_parse_u64("train", "--seed", optarg, &options.seed))
                return 2;
            given |= GIVEN_SEED;
            break;
        case 'A':
            options.augment = 0;
            given |= GIVEN_NO_AUGMENT;
            break;
        case 'l':
            if (!dg_cli_parse_int("train", "--limit", optarg, 1, 1L << 40, &limit))
                return 2;
            break;
        case 't':
            if (!dg_cli_parse_int("train", "--threads", optarg, 1, 1024, &value))
                return 2;
            device.threads = (int)value;
            break;
        case 'd':
            device.device = optarg;
            break;
        case 'M':
            if (!dg_cli_parse_math("train", optarg, &device.math))
                return 2;
            break;
        case 'D':
            device.deterministic = 1;
            break;
        case 'g':
            log_path = optarg;
            break;
        case 'c':
            checkpoint_path = optarg;
            checkpoint_given = 1;
            break;
        case 'C':
            no_checkpoint = 1;
            break;
        case 'R':
            resume_path = optarg;
            break;
        case 'B':
            options.save_best = 1;
            given |= GIVEN_SAVE_BEST;
            break;
        case 'E':
            if (!dg_cli_parse_int("train", "--early-stop", optarg,
                                  DG_TRAIN_EARLY_STOP_MIN, DG_TRAIN_EARLY_STOP_MAX, &value))
                return 2;
            options.early_stop = (int)value;
            given |= GIVEN_EARLY_STOP;
            break;
        case 'S':
            if (!dg_cli_parse_u64("train", "--split-seed", optarg, &split_seed))
                return 2;
            split_seed_given = 1;
            break;
        case 'K':
            if (!dg_cli_parse_int("train", "--ensemble", optarg, 1, DG_MAX_MEMBERS, &value))
                return 2;
            ensemble = (int)value;
            break;
        case 'P':
            member_splits = 1;
            break;
        case 'N':
            if (!dg_cli_parse_int("train", "--concurrent", optarg, 1, DG_MAX_MEMBERS, &value))
                return 2;
            concurrent = (int)value;
            break;
        case 'V':
            devices_text = optarg;
            if (!parse_devices(optarg, plan.devices, &plan.device_count))
                return 2;
            break;
        case 'q':
            progress.quiet = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("(see `digits train --help`)\n", stderr);
            return 2;
        }
    }
    if (optind != argc - 1)
        return dg_cli_usage_error("train", optind >= argc ? "missing the TRAIN file"
                                                          : "expects one TRAIN file");
    if (no_checkpoint && checkpoint_path)
        return dg_cli_usage_error("train", "--checkpoint and --no-checkpoint together");
    if (ensemble > 1 && (resume_path || checkpoint_path))
        return dg_cli_usage_error("train", "--ensemble writes no checkpoints: --resume and "
                                           "--checkpoint do not apply");
    if (member_splits && ensemble == 1)
        return dg_cli_usage_error("train", "--member-splits needs --ensemble K");
    if ((concurrent || devices_text) && ensemble == 1)
        return dg_cli_usage_error("train", "%s needs --ensemble K",
                                  concurrent ? "--concurrent" : "--devices");
    if (devices_text) {
        /* the members go to these CUDA devices: --device may only say CUDA */
        if (strcmp(device.device, "auto") != 0 && strcmp(device.device, "cuda") != 0)
            return dg_cli_usage_error("train", "--devices %s spreads the members over CUDA "
                                               "devices; it does not go with --device %s",
                                      devices_text, device.device);
        char reason[256] = "";
        int available = dg_cli_cuda_device_count(reason, sizeof reason);
        for (int d = 0; d < plan.device_count; d++)
            if (plan.devices[d] >= available) {
                if (available == 0)
                    return dg_cli_usage_error("train", "--devices %s: there is no CUDA device "
                                                       "%d (%s)",
                                              devices_text, plan.devices[d], reason);
                return dg_cli_usage_error("train", "--devices %s: there is no CUDA device %d "
                                                   "(this machine has %d: 0..%d)",
                                          devices_text, plan.devices[d], available,
                                          available - 1);
            }
        snprintf(device_spec, sizeof device_spec, "cuda:%d", plan.devices[0]);
        device.device = device_spec;
    }
    if (split_seed_given && resume_path)
        return dg_cli_usage_error("train", "--split-seed comes from the checkpoint on --resume");
    options.split_seed = split_seed_given ? split_seed : options.seed;
    struct dg_mpi_job job = {0, 1, 0, 1};
    if (ensemble > 1) {
        no_checkpoint = 1;
        dg_mpi_start(NULL, NULL, &job);
        if (job.size > 1) {
            /* each rank its share of this machine's cores, and one voice on stderr */
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            if (device.threads == 0 && cores > 0)
                device.threads = cores / job.local_size > 0 ? (int)(cores / job.local_size) : 1;
            if (job.rank > 0)
                progress.quiet = 1;
        }
    }
    const char *train_path = argv[optind];

    struct dg_backend *be = NULL;
    struct dg_dataset dataset = {0};
    struct dg_model model = {0};
    struct dg_checkpoint resumed;
    int have_resumed = 0;
    struct dg_atomic_file probe;
    enum dg_status status;
    int code = 1, reported = 0;
    char default_checkpoint[4200];

    if (resume_path) {
        if ((status = dg_checkpoint_load(resume_path, &model, &resumed)) != DG_OK)
            return dg_cli_fail(status);
        have_resumed = 1;
        if ((status = resume_settings(resume_path, &resumed, given, &options)) != DG_OK)
            goto fail;
        if (!(given & GIVEN_OUTPUT) && resumed.output[0])
            output = resumed.output;
        if (limit == 0)
            limit = (long)resumed.limit;
        if (!labels && resumed.labels_file[0])
            labels = resumed.labels_file;
        if (!checkpoint_path)
            checkpoint_path = resume_path;
    }
    if (options.val_split == 0.0f && (options.save_best || options.early_stop)) {
        status = dg_error(DG_ERR_USAGE, "--save-best and --early-stop need validation rows "
                                        "(--val-split above 0)");
        goto fail;
    }
    if (!no_checkpoint && !checkpoint_path) {
        snprintf(default_checkpoint, sizeof default_checkpoint, "%s.ckpt", output);
        checkpoint_path = default_checkpoint;
    }
    if (no_checkpoint)
        checkpoint_path = NULL;

    /* No output may be an input or another output (before anything is written). */
    if ((code = check_outputs(train_path, labels, resume_path, output, given & GIVEN_OUTPUT,
                              checkpoint_path, checkpoint_given, log_path, ensemble)) != 0) {
        reported = 1; /* said on stderr */
        goto fail;
    }
    code = 1;

    /* Fail before training, not after, when the model or the checkpoint cannot be written. */
    if ((status = dg_atomic_open(&probe, output)) != DG_OK)
        goto fail;
    dg_atomic_abort(&probe);
    if (checkpoint_path) {
        if ((status = dg_atomic_open(&probe, checkpoint_path)) != DG_OK)
            goto fail;
        dg_atomic_abort(&probe);
    }

    if ((status = dg_cli_open_backend(&device, progress.quiet, &be)) != DG_OK)
        goto fail;
    if ((status = dg_dataset_load_threads(train_path, labels, &be->host_allocator, device.threads,
                                          &dataset)) != DG_OK)
        goto fail;
    if (!dataset.labels) {
        status = dg_error(DG_ERR_INPUT, "%s: has no labels (test layout); training needs the "
                                        "train layout or --labels",
                          train_path);
        goto fail;
    }
    if (limit > 0)
        dg_dataset_truncate(&dataset, (size_t)limit);
    uint64_t data_rows;
    uint32_t data_crc;
    dg_dataset_fingerprint(&dataset, &data_rows, &data_crc);
    if (have_resumed && (data_rows != resumed.data_rows || data_crc != resumed.data_crc32)) {
        status = dg_error(DG_ERR_INPUT,
                          "%s: a checkpoint of other data (%llu rows, CRC32 %08x, from %s); %s%s "
                          "has %llu rows, CRC32 %08x",
                          resume_path, (unsigned long long)resumed.data_rows, resumed.data_crc32,
                          resumed.train_file, train_path, limit > 0 ? " with --limit" : "",
                          (unsigned long long)data_rows, data_crc);
        goto fail;
    }
    if (ensemble > 1) {
        options.on_epoch = on_epoch;
        options.on_step = on_step;
        options.ctx = &progress;
        progress.batch = options.batch;
        int here = 0; /* this rank's members */
        for (int m = job.rank; m < ensemble; m += job.size)
            here++;
        plan.device = device;
        if (strcmp(be->name, "cpu") == 0) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            int threads = device.threads > 0 ? device.threads : (cores > 0 ? (int)cores : 1);
            plan.workers = concurrent ? concurrent : cpu_default_concurrent(threads);
            if (plan.workers > here)
                plan.workers = here;
            if (plan.workers < 1)
                plan.workers = 1;
            plan.cpu_threads = threads / plan.workers > 0 ? threads / plan.workers : 1;
        } else {
            /* CUDA: unmeasured, so one member per device unless --concurrent says more */
            int per_device = concurrent ? concurrent : 1;
            plan.workers = per_device * (plan.device_count ? plan.device_count : 1);
            if (plan.workers > here)
                plan.workers = here;
            if (plan.workers < 1)
                plan.workers = 1;
        }
        status = train_ensemble(be, &dataset, &options, ensemble, member_splits, output, log_path,
                                &progress, train_path, &job, &plan);
        if (status == DG_OK)
            code = 0;
        goto fail;
    }
    if (!have_resumed) {
        int layer_count;
        const struct dg_layer_spec *specs = dg_arch_reference(&layer_count);
        if ((status = dg_model_build(&model, specs, layer_count)) != DG_OK)
            goto fail;
        dg_model_init_glorot(&model, options.seed);
    }

    if (log_path) {
        progress.log = fopen(log_path, "w");
        if (!progress.log) {
            status = dg_error(DG_ERR_IO, "%s: cannot create the log file", log_path);
            goto fail;
        }
        fprintf(progress.log,
                "epoch,loss,accuracy,val_loss,val_accuracy,lr,images_per_second,seconds\n");
        for (int i = 0; have_resumed && i < resumed.state.history_count; i++)
            log_line(progress.log, &resumed.state.history[i]);
        if (fflush(progress.log) != 0)
            progress.log_failed = 1;
    }
    if (!progress.quiet) {
        char described[512];
        dg_backend_describe_for(be, &model, options.batch, described, sizeof described);
        if (have_resumed)
            fprintf(stderr, "digits: resuming %s at epoch %d, step %d (of %d epochs)\n",
                    resume_path, resumed.state.epoch + 1, resumed.state.step, options.epochs);
        fprintf(stderr, "digits: training on %zu images of %s (%s), %d epochs, batch %d, %s\n",
                dataset.count, train_path, dataset.labels ? "labelled" : "unlabelled",
                options.epochs, options.batch, described);
    }
    options.on_epoch = on_epoch;
    options.on_step = on_step;
    options.on_checkpoint = on_checkpoint;
    options.ctx = &progress;
    options.stop = &stop_signal;
    options.resume = have_resumed ? &resumed.state : NULL;
    for (int i = 0; have_resumed && i < resumed.state.history_count; i++)
        keep_history(&progress, &resumed.state.history[i]);
    progress.batch = options.batch;
    progress.model = &model;
    progress.checkpoint_path = checkpoint_path;
    progress.checkpoint.options = options;
    progress.checkpoint.options.on_epoch = NULL;
    progress.checkpoint.options.on_step = NULL;
    progress.checkpoint.options.on_checkpoint = NULL;
    progress.checkpoint.options.resume = NULL;
    progress.checkpoint.options.stop = NULL;
    progress.checkpoint.data_rows = data_rows;
    progress.checkpoint.data_crc32 = data_crc;
    snprintf(progress.checkpoint.output, sizeof progress.checkpoint.output, "%s", output);
    snprintf(progress.checkpoint.train_file, sizeof progress.checkpoint.train_file, "%s",
             train_path);
    snprintf(progress.checkpoint.labels_file, sizeof progress.checkpoint.labels_file, "%s",
             labels ? labels : "");
    progress.checkpoint.limit = limit > 0 ? (uint64_t)limit : 0;
    struct dg_train_result result;
    stop_signal = 0;
    catch_stop_signals();
    status = dg_train(be, &model, &dataset, &options, &result);
    release_stop_signals();
    if (status == DG_ERR_INTERRUPTED) {
        int signo = stop_signal ? (int)stop_signal : SIGINT;
        if (progress.tty && !progress.quiet)
            fprintf(stderr, "\r\033[K");
        if (checkpoint_path)
            fprintf(stderr,
                    "digits: %s by %s; checkpoint written to %s\n"
                    "digits: resume with: digits train %s --resume %s\n",
                    dg_error_message(), signo == SIGTERM ? "SIGTERM" : "SIGINT", checkpoint_path,
                    train_path, checkpoint_path);
        /* (--limit and --labels are kept in the checkpoint and applied on --resume) */
        else
            fprintf(stderr, "digits: %s by %s; no checkpoint (--no-checkpoint), nothing kept\n",
                    dg_error_message(), signo == SIGTERM ? "SIGTERM" : "SIGINT");
        code = 128 + signo;
        goto fail;
    }
    if (status == DG_ERR_RUNTIME && strstr(dg_error_message(), "training diverged")) {
        dg_error_prefix(status, "%s", train_path);
        if (progress.tty && !progress.quiet)
            fprintf(stderr, "\r\033[K");
        code = dg_cli_fail(status);
        reported = 1;
        if (checkpoint_path && progress.checkpoints_written)
            fprintf(stderr, "digits: no model written; the last checkpoint, %s, is from before "
                            "the divergence\n",
                    checkpoint_path);
        else
            fprintf(stderr, "digits: no model written\n");
        goto fail;
    }
    if (status != DG_OK)
        goto fail;
    if (progress.log_failed) {
        status = dg_error(DG_ERR_IO, "%s: writing the log failed", log_path);
        goto fail;
    }

    if (progress.history_failed) {
        status = dg_error(DG_ERR_NOMEM, "out of memory for the training history");
        goto fail;
    }
    struct dg_text settings = {0};
    dg_text_add(&settings,
             "digits_version=%s\nbackend=%s\ntrain_file=%s\nrows=%zu\ndata_crc32=%08x\n"
             "epochs=%d\nbatch=%d\nlr=%g\nrho=%g\neps=%g\nval_split=%g\nvalidation_rows=%zu\n"
             "seed=%llu\nsplit_seed=%llu\naugment=%d\n",
             DIGITS_VERSION, be->name, train_path, dataset.count, (unsigned)data_crc,
             options.epochs, options.batch, options.lr, options.rho, options.eps,
             options.val_split, result.val_count, (unsigned long long)options.seed,
             (unsigned long long)options.split_seed, options.augment);
    if (result.val_count)
        dg_text_add(&settings, "final_val_accuracy=%.6f\nbest_val_accuracy=%.6f\nbest_epoch=%d\n",
                 result.final_val_accuracy, result.best_val_accuracy, result.best_epoch);
    dg_text_add(&settings,
             "seconds=%.1f\nepochs_run=%d\nsave_best=%d\nearly_stop=%d\nweights_of_epoch=%d\n",
             result.seconds, result.epochs_run, options.save_best, options.early_stop,
             options.save_best && result.best_epoch > 0 ? result.best_epoch : result.epochs_run);
    dg_history_text(&settings, "history", progress.history, progress.history_count);
    if (settings.failed)
        status = dg_error(DG_ERR_NOMEM, "out of memory for the model's settings");
    else
        status = dg_model_save(output, &model, settings.data);
    free(settings.data);
    if (status != DG_OK)
        goto fail;
    if (!progress.quiet) {
        if (result.stopped_early)
            fprintf(stderr, "digits: stopped early after epoch %d: no better val_accuracy for "
                            "%d epochs\n",
                    result.epochs_run, options.early_stop);
        if (result.val_count && options.save_best)
            fprintf(stderr,
                    "digits: wrote %s with the weights of epoch %d (best val_accuracy %.4f; "
                    "last epoch %d: %.4f; %.1f s)\n",
                    output, result.best_epoch, result.best_val_accuracy, result.epochs_run,
                    result.final_val_accuracy, result.seconds);
        else if (result.val_count)
            fprintf(stderr,
                    "digits: wrote %s (val_accuracy %.4f, best %.4f at epoch %d, %.1f s)\n",
                    output, result.final_val_accuracy, result.best_val_accuracy,
                    result.best_epoch, result.seconds);
        else
            fprintf(stderr, "digits: wrote %s (%.1f s)\n", output, result.seconds);
        if (progress.checkpoints_written)
            fprintf(stderr,
                    "digits: checkpoint %s: %d written, %.1f MB, %.0f ms each on average\n",
                    checkpoint_path, progress.checkpoints_written,
                    (double)progress.checkpoint_bytes / 1e6,
                    1e3 * progress.checkpoint_seconds / progress.checkpoints_written);
    }
    code = 0;
fail:
    if (code == 1 && !reported)
        code = dg_cli_fail(status);
    if (progress.log && fclose(progress.log) != 0 && code == 0)
        code = dg_cli_fail(dg_error(DG_ERR_IO, "%s: writing the log failed", log_path));
    if (have_resumed)
        dg_checkpoint_free(&resumed);
    free(progress.history);
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
    dg_mpi_stop();
    return code;
}
