/* digits train: load a labelled file, train the reference network with the reference recipe
 * (each setting a flag), write the model file; progress on stderr, history with --log.
 * A checkpoint is written atomically at the end of every epoch (and on SIGINT/SIGTERM, after
 * the step in progress); --resume continues from one, bit for bit. This file is the page that
 * joins the parts declared in src/cli/train_cli.h: the command line, the outputs, the backend
 * and the data, then one model (train_one) or an ensemble (train_ensemble.c). */
#define _POSIX_C_SOURCE 200809L
#include "cli/train_cli.h"

#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Refuses an output (the model file, the checkpoint, the log or the members' logs) that is an
 * input (TRAIN, --labels, --resume) or another output; 0, or the exit code. The checkpoint
 * being resumed may be the checkpoint written: it is continued in place. */
static int check_outputs(const char *train_path, const char *labels, const char *resume_path,
                         const char *output, int output_given, const char *checkpoint_path,
                         int checkpoint_given, const char *log_path, int ensemble)
{
    struct dg_cli_file files[DG_MAX_MEMBERS + 8];
    char(*member_logs)[4200] = NULL;
    size_t n = 0;
    files[n++] = (struct dg_cli_file){output, output_given ? "-o" : "the model file", 1};
    files[n++] = (struct dg_cli_file){checkpoint_path,
                                      checkpoint_given                 ? "--checkpoint"
                                      : checkpoint_path == resume_path ? "the checkpoint (--resume)"
                                                                       : "the checkpoint",
                                      1};
    if (log_path && ensemble > 1) {
        if (!(member_logs = calloc((size_t)ensemble, sizeof *member_logs)))
            return dg_cli_fail(dg_error(DG_ERR_NOMEM, "out of memory"));
        for (int m = 0; m < ensemble && m < DG_MAX_MEMBERS; m++) {
            train_member_log_path(log_path, m + 1, member_logs[m], sizeof member_logs[m]);
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

/* A fresh run (neither --resume nor --restart) would write over the checkpoint of an
 * interrupted run, losing that run's progress: refused, naming both ways on. 0 to go on, else
 * the exit code. A file that is not a checkpoint, or one of a finished run, is replaced. */
static int protect_checkpoint(const struct train_request *req)
{
    struct stat st;
    if (req->resume_path || req->restart || !req->checkpoint_path ||
        stat(req->checkpoint_path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    struct dg_model model = {0};
    struct dg_checkpoint ck;
    if (dg_checkpoint_load(req->checkpoint_path, &model, &ck) != DG_OK) {
        dg_error_clear();
        dg_model_free(&model);
        return 0;
    }
    int done = ck.state.epoch, planned = ck.options.epochs, step = ck.state.step;
    int interrupted = !ck.state.stopped_early && (done < planned);
    char train_file[4096];
    snprintf(train_file, sizeof train_file, "%s", ck.train_file);
    dg_checkpoint_free(&ck);
    dg_model_free(&model);
    if (!interrupted)
        return 0;
    char at[64] = "";
    if (step > 0)
        snprintf(at, sizeof at, " and %d steps", step);
    return dg_cli_usage_error("train",
                              "%s: the checkpoint of an interrupted run (%d of %d epochs%s "
                              "done, on %s) would be replaced; continue it with `digits train "
                              "%s --resume %s`, or start over with --restart",
                              req->checkpoint_path, done, planned, at, train_file, train_file,
                              req->checkpoint_path);
}

/* Fails before training, not after, when the model or the checkpoint cannot be written. */
static enum dg_status probe_outputs(const struct train_request *req)
{
    struct dg_atomic_file probe;
    enum dg_status status = dg_atomic_open(&probe, req->output);
    if (status != DG_OK)
        return status;
    dg_atomic_abort(&probe);
    if (req->checkpoint_path) {
        if ((status = dg_atomic_open(&probe, req->checkpoint_path)) != DG_OK)
            return status;
        dg_atomic_abort(&probe);
    }
    return DG_OK;
}

/* The checkpoint's fixed part: the run's settings, the data's fingerprint and its files. */
static void checkpoint_settings(const struct train_request *req, const struct dg_backend *be,
                                struct dg_checkpoint *ck)
{
    ck->options = req->options;
    ck->options.on_epoch = NULL;
    ck->options.on_step = NULL;
    ck->options.on_checkpoint = NULL;
    ck->options.resume = NULL;
    ck->options.stop = NULL;
    ck->data_rows = req->data_rows;
    ck->data_crc32 = req->data_crc;
    snprintf(ck->output, sizeof ck->output, "%s", req->output);
    snprintf(ck->train_file, sizeof ck->train_file, "%s", req->train_path);
    snprintf(ck->labels_file, sizeof ck->labels_file, "%s", req->labels ? req->labels : "");
    ck->limit = req->limit > 0 ? (uint64_t)req->limit : 0;
    const char *math = train_math_name(&req->device, be);
    snprintf(ck->math, sizeof ck->math, "%s", math ? math : "");
}

/* The end of a run stopped by a signal or by divergence: what is kept, said on stderr; the
 * exit code. */
static int stopped(const struct train_request *req, const struct train_progress *progress,
                   enum dg_status status)
{
    if (progress->tty && !progress->quiet)
        fprintf(stderr, "\r\033[K");
    if (status == DG_ERR_INTERRUPTED) {
        int signo = train_stop_signal ? (int)train_stop_signal : SIGINT;
        const char *name = signo == SIGTERM ? "SIGTERM" : "SIGINT";
        /* (--limit and --labels are kept in the checkpoint and applied on --resume) */
        if (req->checkpoint_path)
            fprintf(stderr,
                    "digits: %s by %s; checkpoint written to %s\n"
                    "digits: resume with: digits train %s --resume %s\n",
                    dg_error_message(), name, req->checkpoint_path, req->train_path,
                    req->checkpoint_path);
        else
            fprintf(stderr, "digits: %s by %s; no checkpoint (--no-checkpoint), nothing kept\n",
                    dg_error_message(), name);
        return 128 + signo;
    }
    dg_error_prefix(status, "%s", req->train_path);
    int code = dg_cli_fail(status);
    if (req->checkpoint_path && progress->checkpoints_written)
        fprintf(stderr,
                "digits: no model written; the last checkpoint, %s, is from before "
                "the divergence\n",
                req->checkpoint_path);
    else
        fprintf(stderr, "digits: no model written\n");
    return code;
}

/* The last lines of a run that wrote its model. */
static void say_written(const struct train_request *req, const struct train_progress *progress,
                        const struct dg_train_result *result)
{
    const char *output = req->output;
    if (result->stopped_early)
        fprintf(stderr,
                "digits: stopped early after epoch %d: no better val_accuracy for "
                "%d epochs\n",
                result->epochs_run, req->options.early_stop);
    if (result->val_count && req->options.save_best)
        fprintf(stderr,
                "digits: wrote %s with the weights of epoch %d (best val_accuracy %.4f; "
                "last epoch %d: %.4f; %.1f s)\n",
                output, result->best_epoch, result->best_val_accuracy, result->epochs_run,
                result->final_val_accuracy, result->seconds);
    else if (result->val_count)
        fprintf(stderr, "digits: wrote %s (val_accuracy %.4f, best %.4f at epoch %d, %.1f s)\n",
                output, result->final_val_accuracy, result->best_val_accuracy, result->best_epoch,
                result->seconds);
    else
        fprintf(stderr, "digits: wrote %s (%.1f s)\n", output, result->seconds);
    if (progress->checkpoints_written)
        fprintf(stderr,
                "digits: checkpoint %s: %d written, %.1f MB, %.0f ms each on average; kept: "
                "--resume %s --epochs N trains on from epoch %d\n",
                req->checkpoint_path, progress->checkpoints_written,
                (double)progress->checkpoint_bytes / 1e6,
                1e3 * progress->checkpoint_seconds / progress->checkpoints_written,
                req->checkpoint_path, result->epochs_run);
}

/* 1 when the model's layer table is the one --net asked for. */
static int same_net(const struct train_request *req, const struct dg_model *model)
{
    if (model->layer_count != req->net_count)
        return 0;
    for (int i = 0; i < req->net_count; i++) {
        const struct dg_layer_spec *a = &req->net[i], *b = &model->layers[i].spec;
        int stride_a = a->stride > 1 ? a->stride : 1, stride_b = b->stride > 1 ? b->stride : 1;
        if (a->kind != b->kind || a->units != b->units || a->kernel != b->kernel ||
            a->relu != b->relu || a->rate != b->rate ||
            (a->kind == DG_LAYER_CONV && (stride_a != stride_b || a->valid != b->valid)))
            return 0;
    }
    return 1;
}

/* The model file's settings: the run's, its outcome and its history. */
static enum dg_status save_model(const struct train_request *req, const struct dg_backend *be,
                                 const struct dg_model *model,
                                 const struct train_progress *progress,
                                 const struct dg_train_result *result)
{
    const struct dg_train_options *o = &req->options;
    struct dg_text settings = {0};
    struct train_record record = {
        be->name, req->train_path,        req->data_rows, req->data_crc, o, 0,
        NULL,     (long)result->val_count, train_math_name(&req->device, be)};
    train_settings_text(&settings, &record);
    if (result->val_count)
        dg_text_add(&settings, "final_val_accuracy=%.6f\nbest_val_accuracy=%.6f\nbest_epoch=%d\n",
                    result->final_val_accuracy, result->best_val_accuracy, result->best_epoch);
    dg_text_add(&settings,
                "seconds=%.1f\nepochs_run=%d\nsave_best=%d\nearly_stop=%d\nweights_of_epoch=%d\n",
                result->seconds, result->epochs_run, o->save_best, o->early_stop,
                o->save_best && result->best_epoch > 0 ? result->best_epoch : result->epochs_run);
    dg_history_text(&settings, "history", progress->history, progress->history_count);
    enum dg_status status = settings.failed
                                ? dg_error(DG_ERR_NOMEM, "out of memory for the model's settings")
                                : dg_model_save(req->output, model, settings.data);
    free(settings.data);
    return status;
}

/* One model on `be`: from `resumed` (NULL: a fresh model, built here), its log, its
 * checkpoints, then the model file. The exit code (after the message, when not 0). */
static int train_one(struct train_request *req, struct dg_backend *be,
                     const struct dg_dataset *dataset, struct dg_model *model,
                     struct dg_checkpoint *resumed, struct train_progress *progress)
{
    struct dg_train_options *options = &req->options;
    enum dg_status status;
    if (!resumed) {
        if ((status = dg_model_build(model, req->net, req->net_count)) != DG_OK)
            return dg_cli_fail(status);
        dg_model_init_glorot(model, options->seed);
    }
    if (req->log_path) {
        if ((status = train_log_open(progress, req->log_path)) != DG_OK)
            return dg_cli_fail(status);
        for (int i = 0; resumed && i < resumed->state.history_count; i++)
            train_log_line(progress->log, &resumed->state.history[i]);
        if (fflush(progress->log) != 0)
            progress->log_failed = 1;
    }
    if (!progress->quiet) {
        char described[512];
        dg_backend_describe_for(be, model, options->batch, described, sizeof described);
        if (resumed && resumed->state.epoch >= options->epochs && resumed->state.step == 0)
            fprintf(stderr,
                    "digits: %s: its run has trained all %d epochs, so nothing is left to train: "
                    "its model is written again (raise --epochs to train on)\n",
                    req->resume_path, resumed->state.epoch);
        else if (resumed)
            fprintf(stderr, "digits: resuming %s at epoch %d, step %d (of %d epochs)\n",
                    req->resume_path, resumed->state.epoch + 1, resumed->state.step,
                    options->epochs);
        fprintf(stderr, "digits: training on %zu images of %s (%s), %d epoch%s, batch %d, %s\n",
                dataset->count, req->train_path, dataset->labels ? "labelled" : "unlabelled",
                options->epochs, options->epochs == 1 ? "" : "s", options->batch, described);
    }
    options->on_epoch = train_on_epoch;
    options->on_step = train_on_step;
    options->on_checkpoint = train_on_checkpoint;
    options->ctx = progress;
    options->stop = &train_stop_signal;
    options->resume = resumed ? &resumed->state : NULL;
    for (int i = 0; resumed && i < resumed->state.history_count; i++)
        train_keep_history(progress, &resumed->state.history[i]);
    progress->batch = options->batch;
    progress->model = model;
    progress->checkpoint_path = req->checkpoint_path;
    checkpoint_settings(req, be, &progress->checkpoint);

    struct dg_train_result result;
    train_stop_signal = 0;
    train_catch_stop_signals();
    status = dg_train(be, model, dataset, options, &result);
    train_release_stop_signals();
    if (status == DG_ERR_INTERRUPTED ||
        (status == DG_ERR_RUNTIME && strstr(dg_error_message(), "training diverged")))
        return stopped(req, progress, status);
    if (status == DG_OK && progress->log_failed)
        status = dg_error(DG_ERR_IO, "%s: writing the log failed", req->log_path);
    if (status == DG_OK && progress->history_failed)
        status = dg_error(DG_ERR_NOMEM, "out of memory for the training history");
    if (status == DG_OK)
        status = save_model(req, be, model, progress, &result);
    if (status != DG_OK)
        return dg_cli_fail(status);
    if (!progress->quiet)
        say_written(req, progress, &result);
    return 0;
}

/* --resume: the checkpoint's settings, files and limit where the command line left them out. */
static enum dg_status resume_from(struct train_request *req, const struct dg_checkpoint *resumed)
{
    enum dg_status status =
        train_resume_settings(req->resume_path, resumed, req->given, &req->options);
    if (status != DG_OK)
        return status;
    if (!(req->given & GIVEN_OUTPUT) && resumed->output[0])
        req->output = resumed->output;
    if (req->limit == 0)
        req->limit = (long)resumed->limit;
    if (!req->labels && resumed->labels_file[0])
        req->labels = resumed->labels_file;
    if (!req->checkpoint_path)
        req->checkpoint_path = req->resume_path;
    /* the run's math: the checkpoint's, unless --math says otherwise (refused: bit-exact
     * resumption needs the same arithmetic) */
    enum dg_math math = DG_MATH_FP32; /* "" (not written) is fp32 */
    if (resumed->math[0] && !dg_math_from_name(resumed->math, &math))
        return dg_error(DG_ERR_INPUT, "%s: corrupted checkpoint file (bad math)", req->resume_path);
    if ((req->given & GIVEN_MATH) && req->device.math != math &&
        !(req->device.math == DG_MATH_TF32 && math == DG_MATH_FP32))
        return dg_error(DG_ERR_USAGE,
                        "%s: --math contradicts the checkpoint (its run computed with %s); leave "
                        "it out to use the checkpoint's setting",
                        req->resume_path, resumed->math[0] ? resumed->math : "fp32");
    if (!(req->given & GIVEN_MATH))
        req->device.math = math;
    return DG_OK;
}

/* The training data: loaded (onto the backend's host memory), labelled, cut to --limit, and
 * the checkpoint's data when resuming. */
static enum dg_status load_data(struct train_request *req, struct dg_backend *be,
                                const struct dg_checkpoint *resumed, struct dg_dataset *dataset)
{
    enum dg_status status = dg_dataset_load_threads(
        req->train_path, req->labels, &be->host_allocator, req->device.threads, dataset);
    if (status != DG_OK)
        return status;
    if (!dataset->labels)
        return dg_error(DG_ERR_INPUT,
                        "%s: has no labels (test layout); training needs the "
                        "train layout or --labels",
                        req->train_path);
    if (req->limit > 0)
        dg_dataset_truncate(dataset, (size_t)req->limit);
    dg_dataset_fingerprint(dataset, &req->data_rows, &req->data_crc);
    uint64_t rows = req->data_rows;
    uint32_t crc = req->data_crc;
    if (resumed && (rows != resumed->data_rows || crc != resumed->data_crc32))
        return dg_error(DG_ERR_INPUT,
                        "%s: a checkpoint of other data (%llu rows, CRC32 %08x, from %s); %s%s "
                        "has %llu rows, CRC32 %08x",
                        req->resume_path, (unsigned long long)resumed->data_rows,
                        resumed->data_crc32, resumed->train_file, req->train_path,
                        req->limit > 0 ? " with --limit" : "", (unsigned long long)rows, crc);
    return DG_OK;
}

int dg_cmd_train(int argc, char **argv)
{
    struct train_request req;
    int code = train_parse_args(argc, argv, &req);
    if (code >= 0)
        return code;
    struct train_progress progress;
    memset(&progress, 0, sizeof progress);
    progress.tty = isatty(STDERR_FILENO);
    progress.quiet = req.quiet;
    struct dg_mpi_job job = {0, 1, 0, 1};
    if (req.ensemble > 1) {
        req.no_checkpoint = 1;
        dg_mpi_start(NULL, NULL, &job);
        if (job.size > 1) {
            /* each rank its share of this machine's cores, and one voice on stderr */
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            if (req.device.threads == 0 && cores > 0)
                req.device.threads = cores / job.local_size > 0 ? (int)(cores / job.local_size) : 1;
            if (job.rank > 0)
                progress.quiet = 1;
        }
    }

    struct dg_backend *be = NULL;
    struct dg_dataset dataset = {0};
    struct dg_model model = {0};
    struct dg_checkpoint resumed;
    int have_resumed = 0;
    enum dg_status status = DG_OK;
    char default_checkpoint[4200];
    code = -1; /* -1: report status */

    if (req.resume_path) {
        if ((status = dg_checkpoint_load(req.resume_path, &model, &resumed)) != DG_OK)
            return dg_cli_fail(status);
        have_resumed = 1;
        status = resume_from(&req, &resumed);
        if (status == DG_OK && (req.given & GIVEN_NET) && !same_net(&req, &model)) {
            char theirs[DG_NET_SPEC_MAX + 1];
            dg_model_net_spec(&model, theirs, sizeof theirs);
            status = dg_error(DG_ERR_USAGE,
                              "%s: --net %s contradicts the checkpoint (its network is %s); "
                              "leave it out to use the checkpoint's",
                              req.resume_path, req.net_text, theirs);
        }
    }
    if (status == DG_OK && req.options.val_split == 0.0f &&
        (req.options.save_best || req.options.early_stop))
        status = dg_error(DG_ERR_USAGE, "--save-best and --early-stop need validation rows "
                                        "(--val-split above 0)");
    if (!req.no_checkpoint && !req.checkpoint_path) {
        snprintf(default_checkpoint, sizeof default_checkpoint, "%s.ckpt", req.output);
        req.checkpoint_path = default_checkpoint;
    }
    if (req.no_checkpoint)
        req.checkpoint_path = NULL;
    /* no output may be an input or another output (before anything is written) */
    if (status == DG_OK)
        code = protect_checkpoint(&req);
    if (status == DG_OK && code == 0)
        code = check_outputs(req.train_path, req.labels, req.resume_path, req.output,
                             req.given & GIVEN_OUTPUT, req.checkpoint_path, req.checkpoint_given,
                             req.log_path, req.ensemble);
    if (code == 0)
        code = -1;
    if (code < 0 && status == DG_OK)
        status = probe_outputs(&req);
    if (code < 0 && status == DG_OK)
        status = dg_cli_open_backend(&req.device, progress.quiet, &be);
    if (code < 0 && status == DG_OK)
        status = load_data(&req, be, have_resumed ? &resumed : NULL, &dataset);
    if (code < 0 && status == DG_OK) {
        if (req.ensemble > 1) {
            int here = 0; /* this rank's members */
            for (int m = job.rank; m < req.ensemble; m += job.size)
                here++;
            struct ensemble_plan plan;
            train_ensemble_plan(&req, be, here, &plan);
            status = train_ensemble(be, &dataset, &req, &progress, &job, &plan);
            if (status == DG_OK)
                code = 0;
        } else {
            code = train_one(&req, be, &dataset, &model, have_resumed ? &resumed : NULL, &progress);
        }
    }
    if (code < 0)
        code = dg_cli_fail(status);
    if (progress.log && fclose(progress.log) != 0 && code == 0)
        code = dg_cli_fail(dg_error(DG_ERR_IO, "%s: writing the log failed", req.log_path));
    if (have_resumed)
        dg_checkpoint_free(&resumed);
    free(progress.history);
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
    dg_mpi_stop();
    return code;
}
