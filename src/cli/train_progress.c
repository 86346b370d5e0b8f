/* digits train: what a run says and keeps as it goes: the progress bar and epoch lines, the
 * history (for the model file) and its CSV log, the checkpoint after every epoch, and the
 * stop signals (the first finishes the step and writes a checkpoint). */
#define _POSIX_C_SOURCE 200809L
#include "cli/train_cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Keeps one epoch's report for the model file. */
void train_keep_history(struct train_progress *progress, const struct dg_epoch_report *r)
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

double train_wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

volatile sig_atomic_t train_stop_signal;

static void on_signal(int signo)
{
    train_stop_signal = signo;
    /* SA_RESETHAND made it SIG_DFL: the temporaries' handler instead, which removes the open
     * temporary files (a checkpoint being written) before dying by the signal */
    dg_temporaries_catch(signo);
}

/* SIGINT and SIGTERM set train_stop_signal once; the handler then resets to the temporaries'
 * handler (src/io/temporaries.c), so a second one acts as the default (stops at once), open
 * temporary files removed. */
void train_catch_stop_signals(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = (int)SA_RESETHAND;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
}

void train_release_stop_signals(void)
{
    dg_temporaries_catch(SIGINT);
    dg_temporaries_catch(SIGTERM);
}

enum dg_status train_on_checkpoint(const struct dg_train_state *state, void *ctx)
{
    struct train_progress *progress = ctx;
    if (!progress->checkpoint_path)
        return DG_OK;
    double start = train_wall_seconds();
    progress->checkpoint.state = *state;
    enum dg_status status =
        dg_checkpoint_save(progress->checkpoint_path, progress->model, &progress->checkpoint);
    memset(&progress->checkpoint.state, 0, sizeof progress->checkpoint.state);
    if (status != DG_OK)
        return dg_error_prefix(status, "writing the checkpoint (the previous one is kept)");
    progress->checkpoints_written++;
    progress->checkpoint_seconds += train_wall_seconds() - start;
    struct stat st;
    if (stat(progress->checkpoint_path, &st) == 0)
        progress->checkpoint_bytes = (long)st.st_size;
    return DG_OK;
}

/* One history line; the validation fields are empty when there is no validation set. */
void train_log_line(FILE *log, const struct dg_epoch_report *r)
{
    if (isnan(r->val_loss))
        fprintf(log, "%d,%.6f,%.6f,,,%.6g,%.1f,%.3f\n", r->epoch, r->loss, r->accuracy, r->lr,
                r->images_per_second, r->seconds);
    else
        fprintf(log, "%d,%.6f,%.6f,%.6f,%.6f,%.6g,%.1f,%.3f\n", r->epoch, r->loss, r->accuracy,
                r->val_loss, r->val_accuracy, r->lr, r->images_per_second, r->seconds);
}

void train_on_step(int epoch, int step, int steps, double seconds, void *ctx)
{
    struct train_progress *progress = ctx;
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
    fprintf(stderr, "\repoch %d [%s] %d/%d  %.0f images/s  ETA %.0fs   ", epoch, bar, step, steps,
            steps_per_second * progress->batch, eta);
    fflush(stderr);
}

void train_on_epoch(const struct dg_epoch_report *r, void *ctx)
{
    struct train_progress *progress = ctx;
    train_keep_history(progress, r);
    if (!progress->quiet) {
        char validation[96] = "", member[32] = "";
        if (!isnan(r->val_loss))
            snprintf(validation, sizeof validation, " val_loss %.4f val_accuracy %.4f", r->val_loss,
                     r->val_accuracy);
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
        train_log_line(progress->log, r);
        if (fflush(progress->log) != 0)
            progress->log_failed = 1;
    }
}

/* A member trained beside others: training stops at the end of an epoch once another member
 * has failed (checked per epoch, through the checkpoint hook, which writes nothing here). */
enum dg_status train_on_member_epoch_end(const struct dg_train_state *state, void *ctx)
{
    (void)state;
    struct train_progress *progress = ctx;
    if (progress->members_stop && atomic_load(progress->members_stop))
        return dg_error(DG_ERR_INTERRUPTED, "stopped: another member failed");
    return DG_OK;
}

/* LOG.csv -> LOG.memberM.csv (M from 1); a path without an extension gets .memberM. */
void train_member_log_path(const char *log_path, int member, char *out, size_t size)
{
    const char *slash = strrchr(log_path, '/');
    const char *dot = strrchr(log_path, '.');
    if (dot && (!slash || dot > slash))
        snprintf(out, size, "%.*s.member%d%s", (int)(dot - log_path), log_path, member, dot);
    else
        snprintf(out, size, "%s.member%d", log_path, member);
}

enum dg_status train_log_open(struct train_progress *progress, const char *path)
{
    progress->log = fopen(path, "w");
    if (!progress->log)
        return dg_error_path(path, "create the log file", 1, errno);
    fprintf(progress->log,
            "epoch,loss,accuracy,val_loss,val_accuracy,lr,images_per_second,seconds\n");
    return DG_OK;
}
