/* digits bench: CSV parse speed, training and inference throughput on each backend, a
 * per-layer breakdown of a training step and memory use; warm-up, then the median (with min
 * and max) of repetitions, printed as a table or as JSON. Image stores are uint8 N x 784
 * (row-major); activations float32 NCHW in backend memory. */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include "digits/bench.h"
#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/train.h"
#include "philox.cuh"

#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BATCHES 8
#define MAX_SCALING 8
#define MAX_BACKENDS 2
#define PATH_SIZE 1024
#define BENCH_SEED 42
#define BENCH_LR 1e-3f
#define BENCH_RHO 0.9f
#define BENCH_EPS 1e-8f

static const char *usage_text =
    "usage: digits bench [options]\n"
    "\n"
    "Measures CSV parse speed (dg_dataset_load), training throughput (assemble + forward +\n"
    "backward + RMSprop, images/s), inference throughput, a per-layer breakdown of one\n"
    "training step and memory, on the CPU and on the GPU when one is usable. Each figure is\n"
    "the median of --reps repetitions after warm-up, with min and max.\n"
    "\n"
    "options:\n"
    "      --data FILE        file to time loading, and the training images (default\n"
    "                         data/sample/train.csv.gz from the working or source directory;\n"
    "                         synthetic images when there is none)\n"
    "      --csv FILE         a second file to time loading (e.g. the uncompressed CSV)\n"
    "      --no-parse         skip the parse timing\n"
    "      --device D         all (CPU, and CUDA when usable), cpu, cuda or cuda:N (all)\n"
    "      --threads N        CPU threads (all cores)\n"
    "      --math M           CUDA math: fp32 or tf32 (fp32)\n"
    "      --batch LIST       training batch sizes (86,256)\n"
    "      --infer-batch N    inference batch size (256)\n"
    "      --layer-batch N    batch of the per-layer breakdown, 0 for none (256; 86 quick)\n"
    "      --steps N          training steps per repetition (enough for 1024 images, 512\n"
    "                         quick)\n"
    "      --infer-steps N    inference batches per repetition (enough for 2048 images,\n"
    "                         1024 quick)\n"
    "      --reps N           repetitions (5; 3 quick)\n"
    "      --warmup N         warm-up steps (or loads) before timing (2; 1 quick)\n"
    "      --augment          training steps with the recipe's augmentation\n"
    "      --scaling          training at batch 32,86,256,1024 (unless --batch is given) and\n"
    "                         parse time of 10000, 60000 and 600000 rows (written to $TMPDIR)\n"
    "      --scaling-rows L   row counts of the parse scaling study\n"
    "      --quick            a short run (under 30 s on two cores)\n"
    "      --json             JSON on stdout instead of the table\n"
    "  -q, --quiet            no progress on stderr\n"
    "  -h, --help             this text\n";

struct settings {
    const char *data_path;
    int data_explicit;
    const char *csv_path;
    int parse;
    const char *device_spec;
    struct dg_cli_device device;
    long batches[MAX_BATCHES];
    int batch_count;
    int batch_explicit;
    int infer_batch;
    int layer_batch;
    int layer_batch_explicit;
    int steps, infer_steps;
    int reps, warmup;
    int augment;
    int scaling;
    long scaling_rows[MAX_SCALING];
    int scaling_count;
    int quick;
    int json;
    int quiet;
};

struct parse_result {
    char path[PATH_SIZE];
    const char *role; /* "data", "csv" or "scaling" */
    size_t rows;
    size_t bytes_parsed;
    size_t bytes_on_disk;
    int gzipped;
    enum dg_data_format format;
    struct dg_bench_stats seconds;
    struct dg_bench_stats mb_per_s;
};

struct rate_result {
    int batch;
    int steps;
    struct dg_bench_stats images_per_second;
};

struct layer_result {
    char name[24];
    struct dg_bench_stats forward_ms;
    struct dg_bench_stats backward_ms;
};

struct backend_result {
    char name[16];
    char description[512];
    struct rate_result train[MAX_BATCHES];
    int train_count;
    struct rate_result infer;
    int have_infer;
    int layer_batch; /* 0 when no breakdown */
    struct layer_result layers[DG_MAX_LAYERS];
    int layer_count;
    struct dg_bench_stats assemble_ms, softmax_ms, update_ms, step_ms;
    size_t net_peak_bytes;
    int have_device_memory;
    size_t device_used_bytes, device_baseline_bytes, device_total_bytes;
};

struct report {
    char data_source[PATH_SIZE];
    int synthetic;
    size_t image_count;
    struct parse_result parse[2];
    int parse_count;
    struct parse_result scaling[MAX_SCALING];
    int scaling_count;
    struct backend_result backends[MAX_BACKENDS];
    int backend_count;
    char skipped[MAX_BACKENDS][320];
    int skipped_count;
    size_t peak_rss_bytes;
    double seconds;
};

static void note(const struct settings *s, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void note(const struct settings *s, const char *fmt, ...)
{
    if (s->quiet)
        return;
    va_list args;
    fputs("bench: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
}

static int file_exists(const char *path)
{
    return access(path, R_OK) == 0;
}

/* data/sample/train.csv.gz from the working directory, else from the source tree that holds
 * the executable's build directory (BUILD/digits -> BUILD/../data/sample). */
static int find_default_data(char *out, size_t size)
{
    const char *relative = "data/sample/train.csv.gz";
    if (file_exists(relative)) {
        snprintf(out, size, "%s", relative);
        return 1;
    }
    char exe[PATH_SIZE];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    for (int up = 1; up <= 2; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash)
            return 0;
        *slash = '\0';
        char candidate[PATH_SIZE + 32];
        snprintf(candidate, sizeof candidate, "%s/%s", exe, relative);
        if (file_exists(candidate) && strlen(candidate) < size) {
            snprintf(out, size, "%s", candidate);
            return 1;
        }
    }
    return 0;
}

static void rate_stats(const double *seconds, int count, double amount, struct dg_bench_stats *out)
{
    double rates[1024];
    for (int i = 0; i < count; i++)
        rates[i] = seconds[i] > 0 ? amount / seconds[i] : 0.0;
    dg_bench_stats_compute(rates, count, out);
}

/* ---- parsing ---- */

/* Times `loads` loads of path after `warmup` untimed ones. When keep is not NULL the last
 * load is kept there. */
static enum dg_status time_parse(const char *path, const char *role, int warmup, int loads,
                                 struct parse_result *result, struct dg_dataset *keep)
{
    double seconds[1024];
    enum dg_status status;
    memset(result, 0, sizeof *result);
    snprintf(result->path, sizeof result->path, "%s", path);
    result->role = role;
    for (int i = 0; i < warmup + loads; i++) {
        struct dg_dataset dataset;
        double start = dg_bench_now();
        if ((status = dg_dataset_load(path, NULL, NULL, &dataset)) != DG_OK)
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

static enum dg_status time_parse_scaling(const struct settings *s, const struct dg_dataset *source,
                                         struct report *report)
{
    const char *tmpdir = getenv("TMPDIR");
    if (!tmpdir || !*tmpdir)
        tmpdir = "/tmp";
    int loads = s->reps < 3 ? s->reps : 3;
    for (int i = 0; i < s->scaling_count; i++) {
        char path[PATH_SIZE];
        snprintf(path, sizeof path, "%s/digits-bench-XXXXXX", tmpdir);
        int fd = mkstemp(path);
        if (fd < 0)
            return dg_error(DG_ERR_IO, "%s: cannot create a temporary file", path);
        close(fd);
        size_t rows = (size_t)s->scaling_rows[i];
        note(s, "writing %zu rows to %s", rows, path);
        enum dg_status status = dg_bench_write_csv(path, source, rows);
        if (status == DG_OK) {
            note(s, "parse %zu rows", rows);
            status = time_parse(path, "scaling", 0, loads, &report->scaling[i], NULL);
        }
        remove(path);
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

/* Runs `warmup` untimed then `reps` timed repetitions of `steps` steps; fills result. */
static enum dg_status time_throughput(const struct settings *s, struct dg_backend *be,
                                      const struct dg_model *model, void *handle,
                                      struct row_source *source, int batch, int steps, int training,
                                      struct rate_result *result)
{
    enum dg_status status;
    struct dg_net *net = NULL;
    uint32_t *rows = malloc((size_t)batch * sizeof *rows);
    float *host_probs = malloc((size_t)batch * DG_CLASSES * sizeof *host_probs);
    double seconds[1024];
    uint32_t step_counter = 0;
    if (!rows || !host_probs) {
        status = dg_error(DG_ERR_NOMEM, "bench: out of memory");
        goto fail;
    }
    if ((status = dg_net_create(be, model, batch, &net)) != DG_OK ||
        (status = dg_net_upload_params(net, model->params, 1)) != DG_OK)
        goto fail;
    if (training)
        status = train_steps(net, handle, source, rows, s->warmup, s->augment, &step_counter);
    else
        status = infer_steps(net, handle, source, rows, s->warmup, host_probs);
    if (status != DG_OK)
        goto fail;
    for (int rep = 0; rep < s->reps; rep++) {
        if ((status = be->ops->sync(be)) != DG_OK)
            goto fail;
        double start = dg_bench_now();
        if (training)
            status = train_steps(net, handle, source, rows, steps, s->augment, &step_counter);
        else
            status = infer_steps(net, handle, source, rows, steps, host_probs);
        if (status == DG_OK)
            status = be->ops->sync(be);
        if (status != DG_OK)
            goto fail;
        seconds[rep] = dg_bench_now() - start;
    }
    result->batch = batch;
    result->steps = steps;
    rate_stats(seconds, s->reps, (double)batch * steps, &result->images_per_second);
fail:
    dg_net_free(net);
    free(rows);
    free(host_probs);
    return status;
}

static enum dg_status time_layers(const struct settings *s, struct dg_backend *be,
                                  const struct dg_model *model, void *handle,
                                  struct row_source *source, struct backend_result *result)
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
        struct layer_result *layer = &result->layers[l];
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

static enum dg_status bench_backend(const struct settings *s, const char *spec,
                                    const struct dg_dataset *dataset, struct backend_result *result)
{
    enum dg_status status;
    struct dg_backend *be = NULL;
    struct dg_bench_memory *tracker = NULL;
    struct dg_model model = {0};
    void *handle = NULL;
    uint32_t *order = NULL;
    struct dg_cli_device device = s->device;
    device.spec = spec;
    memset(result, 0, sizeof *result);

    size_t free_bytes = 0, total = 0;
    if ((status = dg_cli_open_backend(&device, 1, &be)) != DG_OK)
        return status;
    snprintf(result->name, sizeof result->name, "%s", be->name);
    if (be->ops->device_memory) {
        if (be->ops->device_memory(be, &free_bytes, &total) == DG_OK) {
            result->have_device_memory = 1;
            result->device_baseline_bytes = total - free_bytes;
            result->device_total_bytes = total;
        } else {
            dg_error_clear();
        }
    }
    if ((status = dg_bench_memory_attach(be, &tracker)) != DG_OK)
        goto fail;
    int layer_count;
    const struct dg_layer_spec *specs = dg_arch_reference(&layer_count);
    if ((status = dg_model_build(&model, specs, layer_count)) != DG_OK)
        goto fail;
    dg_model_init_glorot(&model, BENCH_SEED);
    dg_backend_describe_for(be, &model, s->batch_count ? (int)s->batches[0] : 86, result->description,
                            sizeof result->description);
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
        status =
            time_throughput(s, be, &model, handle, &source, batch, steps, 1, &result->train[i]);
        if (status != DG_OK)
            goto fail;
        result->train_count = i + 1;
    }
    if (s->infer_batch > 0) {
        int steps = steps_for(s->infer_steps, s->quick ? 1024 : 2048, s->infer_batch);
        note(s, "%s: inference, batch %d, %d steps x %d reps", be->name, s->infer_batch, steps,
             s->reps);
        status = time_throughput(s, be, &model, handle, &source, s->infer_batch, steps, 0,
                                 &result->infer);
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
        if (be->ops->sync(be) == DG_OK &&
            be->ops->device_memory(be, &free_bytes, &total) == DG_OK) {
            result->device_used_bytes = total - free_bytes;
        } else {
            result->have_device_memory = 0;
            dg_error_clear();
        }
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

/* ---- output ---- */

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

static void json_string(FILE *out, const char *text)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void json_number(FILE *out, double value)
{
    if (isfinite(value))
        fprintf(out, "%.6g", value);
    else
        fputs("null", out);
}

static void json_stats(FILE *out, const struct dg_bench_stats *stats)
{
    fputs("{\"median\": ", out);
    json_number(out, stats->median);
    fputs(", \"min\": ", out);
    json_number(out, stats->min);
    fputs(", \"max\": ", out);
    json_number(out, stats->max);
    fprintf(out, ", \"count\": %d}", stats->count);
}

static void json_parse(FILE *out, const struct parse_result *p)
{
    fputs("{\"file\": ", out);
    json_string(out, p->path);
    fputs(", \"role\": ", out);
    json_string(out, p->role);
    fputs(", \"format\": ", out);
    json_string(out, dg_data_format_name(p->format));
    fprintf(out, ", \"gzipped\": %s, \"rows\": %zu, \"bytes_parsed\": %zu, \"bytes_on_disk\": %zu",
            p->gzipped ? "true" : "false", p->rows, p->bytes_parsed, p->bytes_on_disk);
    fputs(", \"seconds\": ", out);
    json_stats(out, &p->seconds);
    fputs(", \"mb_per_s\": ", out);
    json_stats(out, &p->mb_per_s);
    fputc('}', out);
}

static void json_rate(FILE *out, const struct rate_result *r)
{
    fprintf(out, "{\"batch\": %d, \"steps\": %d, \"images_per_s\": ", r->batch, r->steps);
    json_stats(out, &r->images_per_second);
    fputc('}', out);
}

static void print_json(FILE *out, const struct settings *s, const struct report *r)
{
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    double memory_gib = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) /
                        (1024.0 * 1024.0 * 1024.0);
    fprintf(out, "{\n  \"digits_version\": ");
    json_string(out, DIGITS_VERSION);
    fputs(",\n  \"build_type\": ", out);
    json_string(out, DIGITS_BUILD_TYPE);
    fputs(",\n  \"machine\": {\"cpu\": ", out);
    json_string(out, cpu);
    char load[64];
    load_average(load, sizeof load);
    fprintf(out, ", \"logical_cpus\": %ld, \"memory_gib\": %.1f, \"load_average\": ", cpus,
            memory_gib);
    json_string(out, load);
    fputs("},\n", out);
    fprintf(out,
            "  \"settings\": {\"reps\": %d, \"warmup\": %d, \"quick\": %s, \"augment\": %s, "
            "\"threads\": %d, \"device\": ",
            s->reps, s->warmup, s->quick ? "true" : "false", s->augment ? "true" : "false",
            s->device.threads);
    json_string(out, s->device_spec);
    fprintf(out, ", \"math\": \"%s\"},\n", s->device.math == DG_CUDA_MATH_TF32 ? "tf32" : "fp32");
    fputs("  \"data\": {\"source\": ", out);
    json_string(out, r->data_source);
    fprintf(out, ", \"synthetic\": %s, \"images\": %zu},\n", r->synthetic ? "true" : "false",
            r->image_count);
    fputs("  \"parse\": [", out);
    for (int i = 0; i < r->parse_count; i++) {
        fputs(i ? ",\n    " : "\n    ", out);
        json_parse(out, &r->parse[i]);
    }
    fputs(r->parse_count ? "\n  ],\n" : "],\n", out);
    fputs("  \"parse_scaling\": [", out);
    for (int i = 0; i < r->scaling_count; i++) {
        fputs(i ? ",\n    " : "\n    ", out);
        json_parse(out, &r->scaling[i]);
    }
    fputs(r->scaling_count ? "\n  ],\n" : "],\n", out);
    fputs("  \"backends\": [", out);
    for (int b = 0; b < r->backend_count; b++) {
        const struct backend_result *be = &r->backends[b];
        fputs(b ? ",\n    {" : "\n    {", out);
        fputs("\"name\": ", out);
        json_string(out, be->name);
        fputs(", \"description\": ", out);
        json_string(out, be->description);
        fputs(",\n     \"train\": [", out);
        for (int i = 0; i < be->train_count; i++) {
            fputs(i ? ", " : "", out);
            json_rate(out, &be->train[i]);
        }
        fputs("],\n     \"inference\": ", out);
        if (be->have_infer)
            json_rate(out, &be->infer);
        else
            fputs("null", out);
        fputs(",\n     \"layers\": ", out);
        if (be->layer_batch > 0) {
            fprintf(out, "{\"batch\": %d, \"assemble_ms\": ", be->layer_batch);
            json_stats(out, &be->assemble_ms);
            fputs(", \"softmax_xent_ms\": ", out);
            json_stats(out, &be->softmax_ms);
            fputs(", \"update_ms\": ", out);
            json_stats(out, &be->update_ms);
            fputs(", \"step_ms\": ", out);
            json_stats(out, &be->step_ms);
            fputs(", \"rows\": [", out);
            for (int l = 0; l < be->layer_count; l++) {
                fputs(l ? ",\n       " : "\n       ", out);
                fputs("{\"name\": ", out);
                json_string(out, be->layers[l].name);
                fputs(", \"forward_ms\": ", out);
                json_stats(out, &be->layers[l].forward_ms);
                fputs(", \"backward_ms\": ", out);
                json_stats(out, &be->layers[l].backward_ms);
                fputc('}', out);
            }
            fputs("]}", out);
        } else {
            fputs("null", out);
        }
        fprintf(out, ",\n     \"net_peak_bytes\": %zu, \"device_memory\": ", be->net_peak_bytes);
        if (be->have_device_memory)
            fprintf(out, "{\"used_bytes\": %zu, \"baseline_bytes\": %zu, \"total_bytes\": %zu}",
                    be->device_used_bytes, be->device_baseline_bytes, be->device_total_bytes);
        else
            fputs("null", out);
        fputc('}', out);
    }
    fputs(r->backend_count ? "\n  ],\n" : "],\n", out);
    fputs("  \"skipped\": [", out);
    for (int i = 0; i < r->skipped_count; i++) {
        fputs(i ? ", " : "", out);
        json_string(out, r->skipped[i]);
    }
    fprintf(out, "],\n  \"peak_rss_bytes\": %zu,\n  \"seconds\": ", r->peak_rss_bytes);
    json_number(out, r->seconds);
    fputs("\n}\n", out);
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* "median (min..max)" with each number in `format`. */
static void format_range(char *text, size_t size, const char *format,
                         const struct dg_bench_stats *stats)
{
    char median[24], min[24], max[24];
    snprintf(median, sizeof median, format, stats->median);
    snprintf(min, sizeof min, format, stats->min);
    snprintf(max, sizeof max, format, stats->max);
    snprintf(text, size, "%s (%s..%s)", median, min, max);
}

static void print_parse_rows(FILE *out, const struct parse_result *rows, int count)
{
    fprintf(out, "  %-28s %8s %9s  %-24s %s\n", "file", "rows", "MB", "seconds", "MB/s");
    for (int i = 0; i < count; i++) {
        const struct parse_result *p = &rows[i];
        char name[64], seconds[96], rate[96];
        snprintf(name, sizeof name, "%s%s", base_name(p->path), p->gzipped ? " (gzip)" : "");
        format_range(seconds, sizeof seconds, "%.3f", &p->seconds);
        format_range(rate, sizeof rate, "%.0f", &p->mb_per_s);
        fprintf(out, "  %-28s %8zu %9.1f  %-24s %s\n", name, p->rows, (double)p->bytes_parsed / 1e6,
                seconds, rate);
    }
}

static void print_table(FILE *out, const struct settings *s, const struct report *r)
{
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    fprintf(out, "digits bench %s (%s build) on %s, %ld logical CPUs\n", DIGITS_VERSION,
            DIGITS_BUILD_TYPE, cpu, sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(out,
            "median (min..max) of %d repetitions after %d warm-up%s; training %s "
            "augmentation\n",
            s->reps, s->warmup, s->warmup == 1 ? "" : "s", s->augment ? "with" : "without");
    char load[64];
    load_average(load, sizeof load);
    fprintf(out, "images: %s%s (%zu); load average at the end: %s\n\n", r->data_source,
            r->synthetic ? " (synthetic)" : "", r->image_count, load);
    if (r->parse_count) {
        fprintf(out, "CSV parse (dg_dataset_load; MB = 1e6 bytes of uncompressed text)\n");
        print_parse_rows(out, r->parse, r->parse_count);
        fputc('\n', out);
    }
    if (r->scaling_count) {
        fprintf(out, "parse scaling (temporary plain CSV files)\n");
        print_parse_rows(out, r->scaling, r->scaling_count);
        for (int i = 0; i < r->scaling_count; i++)
            fprintf(out, "  %zu rows: %.2f us per row\n", r->scaling[i].rows,
                    r->scaling[i].rows
                        ? r->scaling[i].seconds.median * 1e6 / (double)r->scaling[i].rows
                        : 0.0);
        fputc('\n', out);
    }
    for (int b = 0; b < r->backend_count; b++) {
        const struct backend_result *be = &r->backends[b];
        fprintf(out, "%s\n", be->description);
        fprintf(out, "  %-24s %6s  %s\n", "", "steps", "images/s");
        for (int i = 0; i < be->train_count + be->have_infer; i++) {
            const struct rate_result *rate = i < be->train_count ? &be->train[i] : &be->infer;
            char what[48], range[96];
            snprintf(what, sizeof what, "%s, batch %d",
                     i < be->train_count ? "training" : "inference", rate->batch);
            format_range(range, sizeof range, "%.0f", &rate->images_per_second);
            fprintf(out, "  %-24s %6d  %s\n", what, rate->steps, range);
        }
        if (be->layer_batch > 0) {
            fprintf(out, "\n  one training step, batch %d, op by op (ms, median of %d)\n",
                    be->layer_batch, be->step_ms.count);
            fprintf(out, "  %-12s %10s %10s\n", "layer", "forward", "backward");
            fprintf(out, "  %-12s %10.3f\n", "assemble", be->assemble_ms.median);
            double forward = 0.0, backward = 0.0;
            for (int l = 0; l < be->layer_count; l++) {
                fprintf(out, "  %-12s %10.3f %10.3f\n", be->layers[l].name,
                        be->layers[l].forward_ms.median, be->layers[l].backward_ms.median);
                forward += be->layers[l].forward_ms.median;
                backward += be->layers[l].backward_ms.median;
            }
            fprintf(out, "  %-12s %10.3f\n", "softmax_xent", be->softmax_ms.median);
            fprintf(out, "  %-12s %10s %10.3f\n", "rmsprop", "", be->update_ms.median);
            fprintf(out, "  %-12s %10.3f %10.3f\n", "layers", forward, backward);
            fprintf(out, "  step %.3f ms (%.0f images/s with a sync after every op)\n",
                    be->step_ms.median,
                    be->step_ms.median > 0 ? be->layer_batch / (be->step_ms.median * 1e-3) : 0.0);
        }
        fprintf(out,
                "  memory: %.1f MiB peak in net buffers (allocated through the backend "
                "interface; workspaces not included)\n",
                (double)be->net_peak_bytes / (1024.0 * 1024.0));
        if (be->have_device_memory)
            fprintf(out,
                    "  device memory in use: %.1f MiB after the runs, %.1f MiB before "
                    "(whole device, every process), of %.1f MiB\n",
                    (double)be->device_used_bytes / (1024.0 * 1024.0),
                    (double)be->device_baseline_bytes / (1024.0 * 1024.0),
                    (double)be->device_total_bytes / (1024.0 * 1024.0));
        fputc('\n', out);
    }
    for (int i = 0; i < r->skipped_count; i++)
        fprintf(out, "skipped %s\n", r->skipped[i]);
    fprintf(out, "peak host memory (RSS): %.1f MiB; %.1f s in all\n",
            (double)r->peak_rss_bytes / (1024.0 * 1024.0), r->seconds);
}

/* ---- options ---- */

static int parse_options(int argc, char **argv, struct settings *s)
{
    static const struct option long_options[] = {
        {"data", required_argument, NULL, 'D'},
        {"csv", required_argument, NULL, 'C'},
        {"no-parse", no_argument, NULL, 'P'},
        {"device", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'},
        {"math", required_argument, NULL, 'M'},
        {"batch", required_argument, NULL, 'b'},
        {"infer-batch", required_argument, NULL, 'i'},
        {"layer-batch", required_argument, NULL, 'l'},
        {"steps", required_argument, NULL, 's'},
        {"infer-steps", required_argument, NULL, 'I'},
        {"reps", required_argument, NULL, 'r'},
        {"warmup", required_argument, NULL, 'w'},
        {"augment", no_argument, NULL, 'A'},
        {"scaling", no_argument, NULL, 'S'},
        {"scaling-rows", required_argument, NULL, 'R'},
        {"quick", no_argument, NULL, 'Q'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long value;
    int reps = 0, warmup = -1, opt;
    enum dg_status status;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "qh", long_options, NULL)) != -1) {
        switch (opt) {
        case 'D':
            s->data_path = optarg;
            s->data_explicit = 1;
            break;
        case 'C':
            s->csv_path = optarg;
            break;
        case 'P':
            s->parse = 0;
            break;
        case 'd':
            s->device_spec = optarg;
            break;
        case 't':
            if (!dg_cli_parse_int("bench", "--threads", optarg, 1, 1024, &value))
                return 2;
            s->device.threads = (int)value;
            break;
        case 'M':
            if (!dg_cli_parse_math("bench", optarg, &s->device.math))
                return 2;
            break;
        case 'b':
            status = dg_bench_parse_list("--batch", optarg, 1, 65536, s->batches, MAX_BATCHES,
                                         &s->batch_count);
            if (status != DG_OK)
                return dg_cli_usage_error("bench", "%s", dg_error_message());
            s->batch_explicit = 1;
            break;
        case 'i':
            if (!dg_cli_parse_int("bench", "--infer-batch", optarg, 0, 65536, &value))
                return 2;
            s->infer_batch = (int)value;
            break;
        case 'l':
            if (!dg_cli_parse_int("bench", "--layer-batch", optarg, 0, 65536, &value))
                return 2;
            s->layer_batch = (int)value;
            s->layer_batch_explicit = 1;
            break;
        case 's':
            if (!dg_cli_parse_int("bench", "--steps", optarg, 1, 1000000, &value))
                return 2;
            s->steps = (int)value;
            break;
        case 'I':
            if (!dg_cli_parse_int("bench", "--infer-steps", optarg, 1, 1000000, &value))
                return 2;
            s->infer_steps = (int)value;
            break;
        case 'r':
            if (!dg_cli_parse_int("bench", "--reps", optarg, 1, 1000, &value))
                return 2;
            reps = (int)value;
            break;
        case 'w':
            if (!dg_cli_parse_int("bench", "--warmup", optarg, 0, 1000, &value))
                return 2;
            warmup = (int)value;
            break;
        case 'A':
            s->augment = 1;
            break;
        case 'S':
            s->scaling = 1;
            break;
        case 'R':
            status = dg_bench_parse_list("--scaling-rows", optarg, 1, 100000000, s->scaling_rows,
                                         MAX_SCALING, &s->scaling_count);
            if (status != DG_OK)
                return dg_cli_usage_error("bench", "%s", dg_error_message());
            s->scaling = 1;
            break;
        case 'Q':
            s->quick = 1;
            break;
        case 'j':
            s->json = 1;
            break;
        case 'q':
            s->quiet = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("(see `digits bench --help`)\n", stderr);
            return 2;
        }
    }
    if (optind != argc)
        return dg_cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    const char *spec = s->device_spec;
    if (strcmp(spec, "all") != 0 && strcmp(spec, "auto") != 0 && strcmp(spec, "cpu") != 0 &&
        !(strncmp(spec, "cuda", 4) == 0 && (spec[4] == '\0' || spec[4] == ':')))
        return dg_cli_usage_error("bench",
                                  "--device expects all, auto, cpu, cuda or cuda:N, "
                                  "got '%s'",
                                  spec);
    s->reps = reps ? reps : (s->quick ? 3 : 5);
    s->warmup = warmup >= 0 ? warmup : (s->quick ? 1 : 2);
    if (!s->batch_explicit) {
        static const long normal[] = {86, 256}, scaling[] = {32, 86, 256, 1024};
        const long *list = s->scaling ? scaling : normal;
        s->batch_count = s->scaling ? 4 : 2;
        memcpy(s->batches, list, (size_t)s->batch_count * sizeof *list);
    }
    if (!s->layer_batch_explicit)
        s->layer_batch = s->quick ? 86 : 256;
    if (s->scaling && s->scaling_count == 0) {
        static const long rows[] = {10000, 60000, 600000};
        s->scaling_count = 3;
        memcpy(s->scaling_rows, rows, sizeof rows);
    }
    return -1;
}

/* The backend specs to run: "all" is the CPU plus CUDA when usable, "auto" the one train would
 * pick. Unusable CUDA under "all" is recorded as skipped. */
static int backend_specs(const struct settings *s, struct report *report,
                         const char *specs[MAX_BACKENDS])
{
    const char *spec = s->device_spec;
    if (strcmp(spec, "all") != 0 && strcmp(spec, "auto") != 0) {
        specs[0] = spec;
        return 1;
    }
    char reason[256] = "";
    int usable = dg_cuda_probe(reason, sizeof reason) == DG_OK;
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

int dg_cmd_bench(int argc, char **argv)
{
    struct settings s;
    memset(&s, 0, sizeof s);
    s.parse = 1;
    s.device_spec = "all";
    s.device.math = DG_CUDA_MATH_FP32;
    s.infer_batch = 256;
    int code = parse_options(argc, argv, &s);
    if (code >= 0)
        return code;

    struct report *report = calloc(1, sizeof *report);
    if (!report)
        return dg_cli_fail(dg_error(DG_ERR_NOMEM, "bench: out of memory"));
    struct dg_dataset dataset = {0};
    int have_dataset = 0;
    enum dg_status status = DG_OK;
    double start = dg_bench_now();
    char default_path[PATH_SIZE];
    if (!s.data_path && find_default_data(default_path, sizeof default_path))
        s.data_path = default_path;

    if (s.data_path) {
        if (s.parse) {
            note(&s, "parse %s", s.data_path);
            status = time_parse(s.data_path, "data", s.warmup > 0 ? 1 : 0, s.reps,
                                &report->parse[report->parse_count], &dataset);
            if (status != DG_OK)
                goto fail;
            report->parse_count++;
        } else if ((status = dg_dataset_load(s.data_path, NULL, NULL, &dataset)) != DG_OK) {
            goto fail;
        }
        have_dataset = 1;
        snprintf(report->data_source, sizeof report->data_source, "%s", s.data_path);
    }
    if (s.csv_path && s.parse) {
        note(&s, "parse %s", s.csv_path);
        status = time_parse(s.csv_path, "csv", s.warmup > 0 ? 1 : 0, s.reps,
                            &report->parse[report->parse_count], have_dataset ? NULL : &dataset);
        if (status != DG_OK)
            goto fail;
        report->parse_count++;
        if (!have_dataset) {
            have_dataset = 1;
            snprintf(report->data_source, sizeof report->data_source, "%s", s.csv_path);
        }
    }
    if (!have_dataset || dataset.count == 0) {
        if (have_dataset)
            dg_dataset_free(&dataset);
        note(&s, "no data file (pass --data FILE): synthetic images");
        if ((status = dg_bench_synthetic_dataset(10000, BENCH_SEED, &dataset)) != DG_OK)
            goto fail;
        have_dataset = 1;
        report->synthetic = 1;
        snprintf(report->data_source, sizeof report->data_source, "seeded noise");
    }
    report->image_count = dataset.count;
    if (s.scaling && s.parse && (status = time_parse_scaling(&s, &dataset, report)) != DG_OK)
        goto fail;

    const char *specs[MAX_BACKENDS];
    int spec_count = backend_specs(&s, report, specs);
    for (int i = 0; i < spec_count; i++) {
        if ((status = bench_backend(&s, specs[i], &dataset, &report->backends[i])) != DG_OK)
            goto fail;
        report->backend_count = i + 1;
    }
    report->peak_rss_bytes = dg_bench_peak_rss_bytes();
    report->seconds = dg_bench_now() - start;
    if (s.json)
        print_json(stdout, &s, report);
    else
        print_table(stdout, &s, report);
    if (fflush(stdout) != 0)
        status = dg_error(DG_ERR_IO, "bench: writing the results failed");
fail:
    code = status == DG_OK ? 0 : dg_cli_fail(status);
    if (have_dataset)
        dg_dataset_free(&dataset);
    free(report);
    return code;
}
