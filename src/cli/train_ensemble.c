/* digits train --ensemble K: the members, one after another on the command's backend or
 * several at a time, each on its own backend from its own thread (and over MPI ranks); every
 * member is bit-identical to its own single run. */
#define _POSIX_C_SOURCE 200809L
#include "cli/train_cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Members trained at the same time on the CPU when --concurrent is not given, for `threads`
 * threads in all: one per thread (clamped to the members there are). scripts/bench-ensemble
 * on the 2-core machine: 2 members at 1 thread each beat one after another at 2 threads (the
 * pool's per-op synchronisation and the serial parts of a step are paid once per member, not
 * shared); measured only there. --concurrent 1 restores one after another. */
static int cpu_default_concurrent(int threads)
{
    return threads > 0 ? threads : 1;
}

void train_ensemble_plan(const struct train_request *req, const struct dg_backend *be, int here,
                         struct ensemble_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    plan->device = req->device;
    plan->device_count = req->device_count;
    memcpy(plan->devices, req->devices, sizeof plan->devices);
    if (strcmp(be->name, "cpu") == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int threads = req->device.threads > 0 ? req->device.threads : (cores > 0 ? (int)cores : 1);
        plan->workers = req->concurrent ? req->concurrent : cpu_default_concurrent(threads);
        if (plan->workers > here)
            plan->workers = here;
        if (plan->workers < 1)
            plan->workers = 1;
        plan->cpu_threads = threads / plan->workers > 0 ? threads / plan->workers : 1;
    } else {
        /* CUDA: unmeasured, so one member per device unless --concurrent says more */
        int per_device = req->concurrent ? req->concurrent : 1;
        plan->workers = per_device * (plan->device_count ? plan->device_count : 1);
        if (plan->workers > here)
            plan->workers = here;
        if (plan->workers < 1)
            plan->workers = 1;
    }
}

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
    char **histories;                  /* [count]: each member's "memberM_history=" lines */
    double *seconds;                   /* [count]: each member's training time */
    int queue[DG_MAX_MEMBERS], queued; /* this rank's members, in order */
    pthread_mutex_t lock;              /* the fields below, backend creation and stderr */
    pthread_cond_t ready_cond;
    int next;   /* queue[next] is the next member to start */
    int ready;  /* workers that have opened their backend (or failed to) */
    int go;     /* every worker is ready: members may start */
    int failed; /* the first failure is recorded: no further member starts */
    enum dg_status status;
    char message[1024];
    atomic_int stop; /* a member failed: the others stop at the end of their epoch */
};

struct ensemble_worker {
    struct ensemble_work *work;
    struct dg_backend *be; /* the command's backend (one worker), else opened by the worker */
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
    struct train_progress progress;
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
    options.on_epoch = train_on_epoch;
    options.on_step = work->concurrent ? NULL : train_on_step;
    options.on_checkpoint = work->concurrent ? train_on_member_epoch_end : NULL;
    options.ctx = &progress;
    options.stop = NULL;
    options.resume = NULL;
    enum dg_status status = DG_OK;
    char path[4200] = "";
    if (work->log_path) {
        train_member_log_path(work->log_path, m + 1, path, sizeof path);
        if ((status = train_log_open(&progress, path)) != DG_OK)
            return status;
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

/* plan->workers workers, each on its own thread: started, then (once every backend is open)
 * let go, then joined. */
static void run_workers(struct ensemble_work *work, struct ensemble_worker *workers,
                        const struct ensemble_plan *plan)
{
    int started = 0;
    for (int w = 0; w < plan->workers; w++) {
        if (pthread_create(&workers[w].thread, NULL, ensemble_worker_main, &workers[w]) != 0) {
            record_failure(work, dg_error(DG_ERR_RUNTIME,
                                          "cannot start the thread of "
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

/* This rank's members one after another on `be`, or plan->workers at a time, each on its own
 * backend (its share of the CPU threads, or its own CUDA backend instance on its device) from
 * its own host thread; then every member's parameters go to rank 0, which writes the file. */
enum dg_status train_ensemble(struct dg_backend *be, const struct dg_dataset *dataset,
                              const struct train_request *req, struct train_progress *progress,
                              const struct dg_mpi_job *job, const struct ensemble_plan *plan)
{
    const struct dg_train_options *base = &req->options;
    const int count = req->ensemble, member_splits = req->member_splits;
    const char *output = req->output;
    struct ensemble_work *work = calloc(1, sizeof *work);
    struct ensemble_worker *workers = calloc((size_t)plan->workers, sizeof *workers);
    struct dg_model *members = calloc((size_t)count, sizeof *members);
    char *histories[DG_MAX_MEMBERS] = {NULL};
    double member_seconds[DG_MAX_MEMBERS] = {0};
    enum dg_status status =
        work && workers && members ? DG_OK : dg_error(DG_ERR_NOMEM, "out of memory");
    int built = 0, locks = 0;
    double wall_start = train_wall_seconds();
    for (int m = 0; m < count && status == DG_OK; m++) {
        if ((status = dg_model_build(&members[m], req->net, req->net_count)) != DG_OK)
            break;
        built = m + 1;
        dg_model_init_glorot(&members[m], base->seed + (uint64_t)m);
    }
    if (status == DG_OK) {
        work->dataset = dataset;
        work->base = base;
        work->count = count;
        work->member_splits = member_splits;
        work->log_path = req->log_path;
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
        run_workers(work, workers, plan);
    }
    if (status == DG_OK && work->failed)
        status = dg_error(work->status, "%s", work->message);
    double seconds = 0.0;
    for (int m = 0; m < count; m++)
        seconds += member_seconds[m];
    double wall = train_wall_seconds() - wall_start;
    /* every rank: all members trained, or the first failure everywhere; then rank 0 gets them */
    status = dg_mpi_agree(job, status);
    for (int m = 0; m < count && status == DG_OK; m++)
        if ((status = dg_mpi_collect(job, m, members[m].params, members[m].param_count)) == DG_OK)
            status = dg_mpi_collect_text(job, m, &histories[m]);
    status = dg_mpi_agree(job, status);
    if (status == DG_OK && job->rank == 0) {
        char split_text[32];
        if (member_splits)
            snprintf(split_text, sizeof split_text, "per member");
        else
            snprintf(split_text, sizeof split_text, "%llu", (unsigned long long)base->split_seed);
        struct dg_text t = {0};
        struct train_record record = {be->name, req->train_path, req->data_rows, req->data_crc,
                                      base,     count,           split_text,     -1,
                                      train_math_name(&req->device, be)};
        train_settings_text(&t, &record);
        dg_text_add(&t, "mpi_ranks=%d\nseconds=%.1f\n", job->size, seconds);
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
                fprintf(stderr, "digits: wrote %s (an ensemble of %d members, %.1f s%s)\n", output,
                        count, seconds, job->size > 1 ? " on rank 0" : "");
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
