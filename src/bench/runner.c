/* The benchmark runner behind `digits bench`: CSV parse speed (dg_dataset_load), training and
 * inference throughput on each backend (dg_net_train_step / dg_net_infer), a per-layer
 * breakdown of one training step (dg_bench_timed_step) and memory; warm-up, then the median
 * (with min and max) of repetitions, gathered into a report that the CLI prints. Image stores
 * are uint8 N x 784 (row-major); activations float32 NCHW in backend memory. */
#define _POSIX_C_SOURCE 200809L
#include "digits/bench.h"

#include "digits/data.h"
#include "digits/io.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/train.h"
#include "math/philox.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BENCH_SEED 42
#define BENCH_LR 1e-3f
#define BENCH_RHO 0.9f
#define BENCH_EPS 1e-8f

static void note(const struct dg_bench_settings *s, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void note(const struct dg_bench_settings *s, const char *fmt, ...)
{
    if (!s->progress)
        return;
    char message[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    s->progress(s->progress_ctx, message);
}

static void rate_stats(const double *seconds, int count, double amount, struct dg_bench_stats *out)
{
    double rates[DG_BENCH_MAX_REPS];
    for (int i = 0; i < count; i++)
        rates[i] = seconds[i] > 0 ? amount / seconds[i] : 0.0;
    dg_bench_stats_compute(rates, count, out);
}

/* ---- settings ---- */

void dg_bench_settings_init(struct dg_bench_settings *s)
{
    memset(s, 0, sizeof *s);
    s->parse = 1;
    s->device_spec = "all";
    s->math = DG_MATH_FP32;
    s->infer_batch = 256;
    s->layer_batch = -1;
    s->warmup = -1;
}

static int device_spec_valid(const char *spec)
{
    return strcmp(spec, "all") == 0 || dg_backend_name_valid(spec);
}

enum dg_status dg_bench_settings_resolve(struct dg_bench_settings *s)
{
    if (!s->device_spec)
        s->device_spec = "all";
    if (!device_spec_valid(s->device_spec))
        return dg_error(DG_ERR_USAGE, "--device expects all, auto, cpu, cuda or cuda:N, got '%s'",
                        s->device_spec);
    if (s->reps == 0)
        s->reps = s->quick ? 3 : 5;
    if (s->warmup < 0)
        s->warmup = s->quick ? 1 : 2;
    if (s->batch_count == 0) {
        static const long normal[] = {86, 256}, scaling[] = {32, 86, 256, 1024};
        s->batch_count = s->scaling ? 4 : 2;
        memcpy(s->batches, s->scaling ? scaling : normal, (size_t)s->batch_count * sizeof(long));
    }
    if (s->layer_batch < 0)
        s->layer_batch = s->quick ? 86 : 256;
    if (s->epoch_rows == 0)
        s->epoch_rows = s->quick ? 860 : 4300;
    if (s->scaling && s->scaling_count == 0) {
        static const long rows[] = {10000, 60000, 600000};
        s->scaling_count = 3;
        memcpy(s->scaling_rows, rows, sizeof rows);
    }
    if (s->reps < 1 || s->reps > DG_BENCH_MAX_REPS)
        return dg_error(DG_ERR_USAGE, "bench: reps %d outside 1..%d", s->reps, DG_BENCH_MAX_REPS);
    if (s->batch_count < 0 || s->batch_count > DG_BENCH_MAX_BATCHES || s->scaling_count < 0 ||
        s->scaling_count > DG_BENCH_MAX_SCALING)
        return dg_error(DG_ERR_USAGE, "bench: too many batch sizes or scaling rows");
    for (int i = 0; i < s->batch_count; i++)
        if (s->batches[i] < 1 || s->batches[i] > 65536)
            return dg_error(DG_ERR_USAGE, "bench: batch %ld outside 1..65536", s->batches[i]);
    for (int i = 0; i < s->scaling_count; i++)
        if (s->scaling_rows[i] < 1)
            return dg_error(DG_ERR_USAGE, "bench: scaling rows %ld below 1", s->scaling_rows[i]);
    if (s->infer_batch < 0 || s->infer_batch > 65536 || s->layer_batch > 65536 || s->steps < 0 ||
        s->infer_steps < 0 || s->threads < 0)
        return dg_error(DG_ERR_USAGE, "bench: a batch, step or thread count out of range");
    return DG_OK;
}

/* ---- parsing ---- */

/* Times `loads` loads of path with `threads` parsing threads (0: all cores) after `warmup`
 * untimed ones. When keep is not NULL the last load is kept there. */
static enum dg_status time_parse(const char *path, const char *role, int threads, int warmup,
                                 int loads, struct dg_bench_parse *result, struct dg_dataset *keep)
{
    double seconds[DG_BENCH_MAX_REPS];
    enum dg_status status;
    memset(result, 0, sizeof *result);
    snprintf(result->path, sizeof result->path, "%s", path);
    result->role = role;
    for (int i = 0; i < warmup + loads; i++) {
        struct dg_dataset dataset;
        double start = dg_bench_now();
        if ((status = dg_dataset_load_threads(path, NULL, NULL, threads, &dataset)) != DG_OK)
            return status;
        double elapsed = dg_bench_now() - start;
        result->rows = dataset.count;
        result->bytes_parsed = dataset.bytes_parsed;
        result->bytes_on_disk = dataset.bytes_on_disk;
        result->gzipped = dataset.gzipped;
        result->format = dataset.format;
        if (i >= warmup)
            seconds[i - warmup] = elapsed;
        if (keep && i + 1 == warmup + loads)
            *keep = dataset;
        else
            dg_dataset_free(&dataset);
    }
    dg_bench_stats_compute(seconds, loads, &result->seconds);
    rate_stats(seconds, loads, (double)result->bytes_parsed / 1e6, &result->mb_per_s);
    return DG_OK;
}

static enum dg_status time_parse_scaling(const struct dg_bench_settings *s,
                                         const struct dg_dataset *source,
                                         struct dg_bench_report *report)
{
    const char *tmpdir = getenv("TMPDIR");
    if (!tmpdir || !*tmpdir)
        tmpdir = "/tmp";
    int loads = s->reps < 3 ? s->reps : 3;
    for (int i = 0; i < s->scaling_count; i++) {
        char path[DG_BENCH_PATH_SIZE];
        snprintf(path, sizeof path, "%s/digits-bench-XXXXXX", tmpdir);
        /* listed (before it exists, signals held off) so that SIGINT/SIGTERM removes it */
        int slot = dg_temporary_begin();
        if (slot < 0 && dg_temporaries_ending())
            return dg_error(DG_ERR_IO, "%s: not made: the process is ending on a signal", path);
        if (slot < 0)
            return dg_error(DG_ERR_IO, "%s: more than %d temporary files open at once", path,
                            DG_TEMPORARIES_MAX);
        int fd = mkstemp(path);
        dg_temporary_end(slot, fd >= 0 ? path : NULL);
        if (fd < 0)
            return dg_error(DG_ERR_IO, "%s: cannot create a temporary file", path);
        close(fd);
        size_t rows = (size_t)s->scaling_rows[i];
        note(s, "writing %zu rows to %s", rows, path);
        enum dg_status status = dg_bench_write_csv(path, source, rows);
        if (status == DG_OK) {
            note(s, "parse %zu rows", rows);
            status = time_parse(path, "scaling", s->threads, 0, loads, &report->scaling[i], NULL);
        }
        remove(path);
        dg_temporary_remove(slot);
        if (status != DG_OK)
            return status;
        snprintf(report->scaling[i].path, sizeof report->scaling[i].path, "%zu rows (temp CSV)",
                 rows);
        report->scaling_count = i + 1;
    }
    return DG_OK;
}

/* ---- throughput ---- */

struct row_source {
    const uint32_t *order; /* a permutation of the store's rows */
    size_t count;
    size_t cursor;
};

static void next_rows(struct row_source *source, uint32_t *rows, int n)
{
    for (int i = 0; i < n; i++) {
        rows[i] = source->order[source->cursor];
        source->cursor = (source->cursor + 1) % source->count;
    }
}

static int steps_for(int fixed, int images, int batch)
{
    if (fixed > 0)
        return fixed;
    int steps = (images + batch - 1) / batch;
    return steps > 0 ? steps : 1;
}

static enum dg_status train_steps(struct dg_net *net, void *handle, struct row_source *source,
                                  uint32_t *rows, int steps, int augment, uint32_t *step_counter)
{
    int n = net->max_batch;
    enum dg_status status = DG_OK;
    for (int i = 0; i < steps && status == DG_OK; i++) {
        uint32_t step = (*step_counter)++;
        struct dg_net_mode mode = {1, BENCH_SEED, 0, step};
        struct dg_augment_key key = {BENCH_SEED, 0, step, 10.0f, 0.1f, 0.1f};
        next_rows(source, rows, n);
        status = dg_net_train_step(net, handle, rows, n, &mode, augment ? &key : NULL, BENCH_LR,
                                   BENCH_RHO, BENCH_EPS);
    }
    return status;
}

static enum dg_status infer_steps(struct dg_net *net, void *handle, struct row_source *source,
                                  uint32_t *rows, int steps, float *host_probs)
{
    struct dg_backend *be = net->be;
    int n = net->max_batch;
    enum dg_status status = DG_OK;
    for (int i = 0; i < steps && status == DG_OK; i++) {
        next_rows(source, rows, n);
        status = dg_net_infer(net, handle, rows, n, 0);
        if (status == DG_OK)
            status = be->ops->download(be, host_probs, net->probs,
                                       (size_t)n * DG_CLASSES * sizeof(float));
    }
    return status;
}

/* What the backend's counters moved by, per step, over `steps` steps. */
struct step_counts {
    double launches, graph_launches, syncs;
};

static void counters_read(struct dg_backend *be, struct dg_backend_counters *c)
{
    memset(c, 0, sizeof *c);
    if (be->ops->counters)
        be->ops->counters(be, c);
}

/* Runs `warmup` untimed then `reps` timed repetitions of `steps` steps; fills the rate (and
 * the per-step counts over the timed steps, between the syncs that bracket each repetition).
 * no_graphs: training steps run eagerly. */
static enum dg_status time_throughput(const struct dg_bench_settings *s, struct dg_backend *be,
                                      const struct dg_model *model, void *handle,
                                      struct row_source *source, int batch, int steps, int training,
                                      int no_graphs, struct dg_bench_stats *rate,
                                      struct step_counts *counts)
{
    enum dg_status status;
    struct dg_net *net = NULL;
    uint32_t *rows = malloc((size_t)batch * sizeof *rows);
    float *host_probs = malloc((size_t)batch * DG_CLASSES * sizeof *host_probs);
    double seconds[DG_BENCH_MAX_REPS];
    uint32_t step_counter = 0;
    if (!rows || !host_probs) {
        status = dg_error(DG_ERR_NOMEM, "bench: out of memory");
        goto fail;
    }
    if ((status = dg_net_create(be, model, batch, &net)) != DG_OK ||
        (status = dg_net_upload_params(net, model->params, 1)) != DG_OK)
        goto fail;
    net->no_graphs = no_graphs;
    struct dg_backend_counters total;
    memset(&total, 0, sizeof total);
    if (training)
        status = train_steps(net, handle, source, rows, s->warmup, s->augment, &step_counter);
    else
        status = infer_steps(net, handle, source, rows, s->warmup, host_probs);
    if (status != DG_OK)
        goto fail;
    int device_timed = be->ops->timer_start && be->ops->timer_stop;
    for (int rep = 0; rep < s->reps; rep++) {
        if ((status = be->ops->sync(be)) != DG_OK)
            goto fail;
        double start = dg_bench_now();
        struct dg_backend_counters before, after;
        counters_read(be, &before);
        if (device_timed && (status = be->ops->timer_start(be)) != DG_OK)
            goto fail;
        if (training)
            status = train_steps(net, handle, source, rows, steps, s->augment, &step_counter);
        else
            status = infer_steps(net, handle, source, rows, steps, host_probs);
        counters_read(be, &after);
        if (status == DG_OK)
            status = device_timed ? be->ops->timer_stop(be, &seconds[rep]) : be->ops->sync(be);
        if (status != DG_OK)
            goto fail;
        if (!device_timed)
            seconds[rep] = dg_bench_now() - start;
        total.launches += after.launches - before.launches;
        total.graph_launches += after.graph_launches - before.graph_launches;
        total.host_syncs += after.host_syncs - before.host_syncs;
    }
    rate_stats(seconds, s->reps, (double)batch * steps, rate);
    if (counts) {
        double all = (double)steps * s->reps;
        counts->launches = (double)total.launches / all;
        counts->graph_launches = (double)total.graph_launches / all;
        counts->syncs = (double)total.host_syncs / all;
    }
fail:
    dg_net_free(net);
    free(rows);
    free(host_probs);
    return status;
}

static enum dg_status time_layers(const struct dg_bench_settings *s, struct dg_backend *be,
                                  const struct dg_model *model, void *handle,
                                  struct row_source *source, struct dg_bench_backend_result *result)
{
    enum dg_status status;
    struct dg_net *net = NULL;
    int batch = s->layer_batch;
    int reps = s->reps;
    uint32_t *rows = malloc((size_t)batch * sizeof *rows);
    struct dg_bench_op_times *times = calloc((size_t)reps, sizeof *times);
    double *samples = malloc((size_t)reps * sizeof *samples);
    if (!rows || !times || !samples) {
        status = dg_error(DG_ERR_NOMEM, "bench: out of memory");
        goto fail;
    }
    if ((status = dg_net_create(be, model, batch, &net)) != DG_OK ||
        (status = dg_net_upload_params(net, model->params, 1)) != DG_OK)
        goto fail;
    struct dg_augment_key key = {BENCH_SEED, 0, 0, 10.0f, 0.1f, 0.1f};
    for (int i = 0; i < s->warmup + reps; i++) {
        struct dg_net_mode mode = {1, BENCH_SEED, 0, (uint32_t)i};
        struct dg_bench_op_times scratch;
        key.step = (uint32_t)i;
        next_rows(source, rows, batch);
        status = dg_bench_timed_step(net, handle, rows, batch, &mode, s->augment ? &key : NULL,
                                     BENCH_LR, BENCH_RHO, BENCH_EPS,
                                     i < s->warmup ? &scratch : &times[i - s->warmup]);
        if (status != DG_OK)
            goto fail;
    }
    result->layer_batch = batch;
    result->layer_count = model->layer_count;
    for (int l = 0; l < model->layer_count; l++) {
        struct dg_bench_layer *layer = &result->layers[l];
        snprintf(layer->name, sizeof layer->name, "%s", model->layers[l].name);
        for (int r = 0; r < reps; r++)
            samples[r] = times[r].forward[l] * 1e3;
        dg_bench_stats_compute(samples, reps, &layer->forward_ms);
        for (int r = 0; r < reps; r++)
            samples[r] = times[r].backward[l] * 1e3;
        dg_bench_stats_compute(samples, reps, &layer->backward_ms);
    }
    for (int r = 0; r < reps; r++)
        samples[r] = times[r].assemble * 1e3;
    dg_bench_stats_compute(samples, reps, &result->assemble_ms);
    for (int r = 0; r < reps; r++)
        samples[r] = times[r].softmax * 1e3;
    dg_bench_stats_compute(samples, reps, &result->softmax_ms);
    for (int r = 0; r < reps; r++)
        samples[r] = times[r].update * 1e3;
    dg_bench_stats_compute(samples, reps, &result->update_ms);
    for (int r = 0; r < reps; r++) {
        double total = times[r].assemble + times[r].softmax + times[r].update;
        for (int l = 0; l < model->layer_count; l++)
            total += times[r].forward[l] + times[r].backward[l];
        samples[r] = total * 1e3;
    }
    dg_bench_stats_compute(samples, reps, &result->step_ms);
fail:
    dg_net_free(net);
    free(rows);
    free(times);
    free(samples);
    return status;
}

/* ---- backends ---- */

/* The backend named by spec ("cpu", "cuda", "cuda:N"). */
static enum dg_status open_backend(const struct dg_bench_settings *s, const char *spec,
                                   struct dg_backend **out)
{
    struct dg_backend_spec backend = {spec, s->threads, s->math, 0, 0};
    return dg_backend_open(&backend, NULL, 0, out);
}

/* Device memory in use (whole device, every process) and its total, through the backend's
 * optional device_memory entry; 0 when the backend has none or it fails. */
static int device_memory_used(struct dg_backend *be, size_t *used_bytes, size_t *total_bytes)
{
    size_t free_bytes = 0, total = 0;
    if (!be->ops->device_memory)
        return 0;
    if (be->ops->device_memory(be, &free_bytes, &total) != DG_OK) {
        dg_error_clear();
        return 0;
    }
    *used_bytes = total - free_bytes;
    *total_bytes = total;
    return 1;
}

struct epoch_count {
    struct dg_backend *be;
    struct dg_backend_counters at[2]; /* at the end of epochs 1 and 2 */
    double seconds;
};

static void epoch_counted(const struct dg_epoch_report *report, void *ctx)
{
    struct epoch_count *c = ctx;
    if (report->epoch >= 1 && report->epoch <= 2)
        counters_read(c->be, &c->at[report->epoch - 1]);
    if (report->epoch == 2)
        c->seconds = report->seconds;
}

/* A 2-epoch dg_train on the first s->epoch_rows images (a copy of `model`), its second epoch
 * counted between the two on_epoch reports: what one epoch issues and waits for once the run
 * is set up. */
static enum dg_status count_epoch(const struct dg_bench_settings *s, struct dg_backend *be,
                                  const struct dg_model *model, const struct dg_dataset *dataset,
                                  struct dg_bench_epoch *out)
{
    enum dg_status status;
    struct dg_model copy = {0};
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    for (int i = 0; i < model->layer_count; i++)
        specs[i] = model->layers[i].spec;
    if ((status = dg_model_build(&copy, specs, model->layer_count)) != DG_OK)
        return status;
    memcpy(copy.params, model->params, model->param_count * sizeof *copy.params);
    struct dg_dataset part = *dataset;
    if (part.count > (size_t)s->epoch_rows)
        part.count = (size_t)s->epoch_rows;
    struct dg_train_options options;
    dg_train_options_default(&options);
    options.epochs = 2;
    options.batch = s->batch_count ? (int)s->batches[0] : 86;
    options.seed = BENCH_SEED;
    options.augment = s->augment;
    struct epoch_count count = {.be = be};
    options.on_epoch = epoch_counted;
    options.ctx = &count;
    struct dg_train_result result;
    note(s, "%s: a 2-epoch training run on %zu images, the second epoch counted", be->name,
         part.count);
    if ((status = dg_train(be, &copy, &part, &options, &result)) == DG_OK) {
        memset(out, 0, sizeof *out);
        out->rows = (int)part.count;
        out->train_rows = (int)result.train_count;
        out->val_rows = (int)result.val_count;
        out->batch = options.batch;
        out->steps = (int)((result.train_count + (size_t)options.batch - 1) / (size_t)options.batch);
        out->launches = count.at[1].launches - count.at[0].launches;
        out->graph_launches = count.at[1].graph_launches - count.at[0].graph_launches;
        out->host_syncs = count.at[1].host_syncs - count.at[0].host_syncs;
        out->seconds = count.seconds;
    }
    dg_model_free(&copy);
    return status;
}

static enum dg_status bench_backend(const struct dg_bench_settings *s, const char *spec,
                                    const struct dg_dataset *dataset,
                                    struct dg_bench_backend_result *result)
{
    enum dg_status status;
    struct dg_backend *be = NULL;
    struct dg_bench_memory *tracker = NULL;
    struct dg_model model = {0};
    void *handle = NULL;
    uint32_t *order = NULL;
    memset(result, 0, sizeof *result);

    size_t baseline = 0, total = 0;
    if ((status = open_backend(s, spec, &be)) != DG_OK)
        return status;
    snprintf(result->name, sizeof result->name, "%s", be->name);
    if (device_memory_used(be, &baseline, &total)) {
        result->have_device_memory = 1;
        result->device_baseline_bytes = baseline;
        result->device_total_bytes = total;
    }
    if ((status = dg_bench_memory_attach(be, &tracker)) != DG_OK)
        goto fail;
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int layer_count;
    if ((status = dg_net_spec_parse(s->net ? s->net : "reference", specs, &layer_count)) !=
            DG_OK ||
        (status = dg_model_build(&model, specs, layer_count)) != DG_OK)
        goto fail;
    dg_model_init_glorot(&model, BENCH_SEED);
    dg_backend_describe_for(be, &model, s->batch_count ? (int)s->batches[0] : 86,
                            result->description, sizeof result->description);
    note(s, "%s", result->description);
    if ((status = be->ops->dataset_attach(be, dataset, &handle)) != DG_OK)
        goto fail;
    order = malloc(dataset->count * sizeof *order);
    if (!order) {
        status = dg_error(DG_ERR_NOMEM, "bench: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < dataset->count; i++)
        order[i] = (uint32_t)i;
    dg_shuffle(BENCH_SEED, DG_RNG_SHUFFLE, 0, order, dataset->count);
    struct row_source source = {order, dataset->count, 0};

    for (int i = 0; i < s->batch_count; i++) {
        int batch = (int)s->batches[i];
        int steps = steps_for(s->steps, s->quick ? 512 : 1024, batch);
        note(s, "%s: training, batch %d, %d steps x %d reps", be->name, batch, steps, s->reps);
        struct dg_bench_rate *rate = &result->train[i];
        struct step_counts counts;
        rate->batch = batch;
        rate->steps = steps;
        status = time_throughput(s, be, &model, handle, &source, batch, steps, 1, 0,
                                 &rate->images_per_second, &counts);
        if (status != DG_OK)
            goto fail;
        if (be->ops->counters) {
            rate->have_counters = 1;
            rate->launches_per_step = counts.launches;
            rate->graph_launches_per_step = counts.graph_launches;
            rate->syncs_per_step = counts.syncs;
        }
        if (be->ops->capture_begin) {
            note(s, "%s: training without graphs, batch %d, %d steps x %d reps", be->name, batch,
                 steps, s->reps);
            status = time_throughput(s, be, &model, handle, &source, batch, steps, 1, 1,
                                     &rate->eager_images_per_second, &counts);
            if (status != DG_OK)
                goto fail;
            rate->have_eager = 1;
            rate->eager_launches_per_step = counts.launches;
            rate->eager_syncs_per_step = counts.syncs;
        }
        result->train_count = i + 1;
    }
    result->device_timed = be->ops->timer_start && be->ops->timer_stop;
    if (be->ops->counters && be->ops->step_begin && s->epoch_rows > 0 && dataset->labels) {
        if ((status = count_epoch(s, be, &model, dataset, &result->epoch)) != DG_OK)
            goto fail;
        result->have_epoch = 1;
    }
    if (s->infer_batch > 0) {
        int steps = steps_for(s->infer_steps, s->quick ? 1024 : 2048, s->infer_batch);
        note(s, "%s: inference, batch %d, %d steps x %d reps", be->name, s->infer_batch, steps,
             s->reps);
        result->infer.batch = s->infer_batch;
        result->infer.steps = steps;
        status = time_throughput(s, be, &model, handle, &source, s->infer_batch, steps, 0, 0,
                                 &result->infer.images_per_second, NULL);
        if (status != DG_OK)
            goto fail;
        result->have_infer = 1;
    }
    if (s->layer_batch > 0) {
        note(s, "%s: per-layer breakdown, batch %d", be->name, s->layer_batch);
        if ((status = time_layers(s, be, &model, handle, &source, result)) != DG_OK)
            goto fail;
    }
    struct dg_bench_memory_stats memory;
    dg_bench_memory_read(tracker, &memory);
    result->net_peak_bytes = memory.peak_bytes;
    if (result->have_device_memory) {
        size_t used = 0;
        if (be->ops->sync(be) == DG_OK && device_memory_used(be, &used, &total))
            result->device_used_bytes = used;
        else
            result->have_device_memory = 0;
        dg_error_clear();
    }
fail:
    if (handle)
        be->ops->dataset_detach(be, handle);
    free(order);
    dg_model_free(&model);
    if (tracker)
        dg_bench_memory_detach(be, tracker);
    dg_backend_destroy(be);
    return status;
}

/* The backend specs to run: "all" is the CPU plus CUDA when usable, "auto" the one train would
 * pick. Unusable CUDA under "all" is recorded as skipped. */
static int backend_specs(const struct dg_bench_settings *s, struct dg_bench_report *report,
                         const char *specs[DG_BENCH_MAX_BACKENDS])
{
    const char *spec = s->device_spec;
    if (strcmp(spec, "all") != 0 && strcmp(spec, "auto") != 0) {
        specs[0] = spec;
        return 1;
    }
    char reason[256] = "";
    int usable = 0;
    if (dg_cuda_emulated())
        snprintf(reason, sizeof reason, "the emulated test device (--device cuda measures it)");
    else
        usable = dg_cuda_probe(reason, sizeof reason) == DG_OK;
    dg_error_clear();
    if (strcmp(spec, "auto") == 0) {
        specs[0] = usable ? "cuda" : "cpu";
        return 1;
    }
    specs[0] = "cpu";
    if (usable) {
        specs[1] = "cuda";
        return 2;
    }
    snprintf(report->skipped[report->skipped_count++], sizeof report->skipped[0], "cuda: %s",
             reason[0] ? reason : "no usable device");
    return 1;
}

/* ---- the machine ---- */

static void cpu_model(char *out, size_t size)
{
    snprintf(out, size, "unknown CPU");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp)
        return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t')
                    colon++;
                colon[strcspn(colon, "\n")] = '\0';
                snprintf(out, size, "%s", colon);
            }
            break;
        }
    }
    fclose(fp);
}

/* "1-min 5-min 15-min" from /proc/loadavg, or "unknown": other work on a shared machine. */
static void load_average(char *out, size_t size)
{
    double one, five, fifteen;
    FILE *fp = fopen("/proc/loadavg", "r");
    if (fp && fscanf(fp, "%lf %lf %lf", &one, &five, &fifteen) == 3)
        snprintf(out, size, "%.2f %.2f %.2f", one, five, fifteen);
    else
        snprintf(out, size, "unknown");
    if (fp)
        fclose(fp);
}

static void describe_machine(struct dg_bench_report *report)
{
    cpu_model(report->cpu_model, sizeof report->cpu_model);
    report->logical_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    report->memory_gib = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) /
                         (1024.0 * 1024.0 * 1024.0);
    load_average(report->load_average, sizeof report->load_average);
}

/* ---- the run ---- */

/* Loads (and times) the files; leaves the training images in *dataset. */
static enum dg_status load_images(const struct dg_bench_settings *s, struct dg_bench_report *report,
                                  struct dg_dataset *dataset, int *have_dataset)
{
    enum dg_status status;
    int train_on_file = !s->synthetic;
    if (s->data_path) {
        if (s->parse) {
            note(s, "parse %s", s->data_path);
            status =
                time_parse(s->data_path, "data", s->threads, s->warmup > 0 ? 1 : 0, s->reps,
                           &report->parse[report->parse_count], train_on_file ? dataset : NULL);
            if (status != DG_OK)
                return status;
            report->parse_count++;
        } else if (train_on_file && (status = dg_dataset_load_threads(
                                         s->data_path, NULL, NULL, s->threads, dataset)) != DG_OK) {
            return status;
        }
        if (train_on_file) {
            *have_dataset = 1;
            snprintf(report->data_source, sizeof report->data_source, "%s", s->data_path);
        }
    }
    if (s->csv_path && s->parse) {
        int keep = train_on_file && !*have_dataset;
        note(s, "parse %s", s->csv_path);
        status = time_parse(s->csv_path, "csv", s->threads, s->warmup > 0 ? 1 : 0, s->reps,
                            &report->parse[report->parse_count], keep ? dataset : NULL);
        if (status != DG_OK)
            return status;
        report->parse_count++;
        if (keep) {
            *have_dataset = 1;
            snprintf(report->data_source, sizeof report->data_source, "%s", s->csv_path);
        }
    }
    if (!*have_dataset || dataset->count == 0) {
        if (*have_dataset)
            dg_dataset_free(dataset);
        *have_dataset = 0;
        if (s->synthetic)
            note(s, "synthetic images");
        else
            note(s, "no data file (pass --data FILE): synthetic images");
        if ((status = dg_bench_synthetic_dataset(DG_BENCH_SYNTHETIC_IMAGES, BENCH_SEED, dataset)) !=
            DG_OK)
            return status;
        *have_dataset = 1;
        report->synthetic = 1;
        snprintf(report->data_source, sizeof report->data_source, "seeded noise");
    }
    report->image_count = dataset->count;
    return DG_OK;
}

enum dg_status dg_bench_run(const struct dg_bench_settings *settings, struct dg_bench_report **out)
{
    enum dg_status status;
    struct dg_dataset dataset = {0};
    int have_dataset = 0;
    *out = NULL;
    struct dg_bench_report *report = calloc(1, sizeof *report);
    if (!report)
        return dg_error(DG_ERR_NOMEM, "bench: out of memory");
    double start = dg_bench_now();
    report->settings = *settings;
    const struct dg_bench_settings *s = &report->settings;
    if ((status = dg_bench_settings_resolve(&report->settings)) != DG_OK)
        goto fail;
    if ((status = load_images(s, report, &dataset, &have_dataset)) != DG_OK)
        goto fail;
    if (s->scaling && s->parse && (status = time_parse_scaling(s, &dataset, report)) != DG_OK)
        goto fail;

    const char *specs[DG_BENCH_MAX_BACKENDS];
    int spec_count = backend_specs(s, report, specs);
    for (int i = 0; i < spec_count; i++) {
        if ((status = bench_backend(s, specs[i], &dataset, &report->backends[i])) != DG_OK)
            goto fail;
        report->backend_count = i + 1;
    }
    report->peak_rss_bytes = dg_bench_peak_rss_bytes();
    describe_machine(report);
    report->seconds = dg_bench_now() - start;
    *out = report;
    report = NULL;
fail:
    if (have_dataset)
        dg_dataset_free(&dataset);
    free(report);
    return status;
}

void dg_bench_report_free(struct dg_bench_report *report)
{
    free(report);
}
