/* digits bench: options in, the report of dg_bench_run (src/bench/runner.c) out, printed as a
 * table or as JSON. The measuring (CSV parse speed, training and inference throughput on each
 * backend, a per-layer breakdown of a training step, memory) lives in src/bench/; image stores
 * are uint8 N x 784 (row-major), activations float32 NCHW in backend memory. */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include "digits/bench.h"
#include "digits/data.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    "      --synthetic        train on 10000 images of seeded noise, even when a data file is\n"
    "                         at hand (--data and --csv are still timed)\n"
    "      --csv FILE         a second file to time loading (e.g. the uncompressed CSV)\n"
    "      --no-parse         skip the parse timing\n"
    "      --device D         all (CPU, and CUDA when usable), cpu, cuda or cuda:N (all)\n"
    "      --threads N        CPU threads (all cores)\n"
    "      --math M           fp32, tf32 (CUDA) or bf16 (bf16 CPUs, CUDA 8.0+) (fp32)\n"
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
    "      --net SPEC         the network, as train's --net (reference)\n"
    "      --epoch-rows N     CUDA: images of the 2-epoch training run whose second epoch's\n"
    "                         launches and host syncs are counted, 0 for none (4300;\n"
    "                         860 quick)\n"
    "      --scaling          training at batch 32,86,256,1024 (unless --batch is given) and\n"
    "                         parse time of 10000, 60000 and 600000 rows (written to $TMPDIR)\n"
    "      --scaling-rows L   row counts of the parse scaling study\n"
    "      --quick            a short run (under 30 s on two cores)\n"
    "      --json             JSON on stdout instead of the table\n"
    "  -q, --quiet            no progress on stderr\n"
    "  -h, --help             this text\n"
    "\n"
    "examples:\n"
    "  digits bench --quick\n"
    "  digits bench --data train.csv --device cpu --json > bench.json\n";

struct options {
    struct dg_bench_settings bench;
    char default_data[DG_BENCH_PATH_SIZE];
    int json;
    int quiet;
};

static void print_progress(void *ctx, const char *message)
{
    (void)ctx;
    fprintf(stderr, "bench: %s\n", message);
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
    char exe[DG_BENCH_PATH_SIZE];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    for (int up = 1; up <= 2; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash)
            return 0;
        *slash = '\0';
        char candidate[DG_BENCH_PATH_SIZE + 32];
        snprintf(candidate, sizeof candidate, "%s/%s", exe, relative);
        if (file_exists(candidate) && strlen(candidate) < size) {
            snprintf(out, size, "%s", candidate);
            return 1;
        }
    }
    return 0;
}

/* ---- output ---- */

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

static void json_parse(FILE *out, const struct dg_bench_parse *p)
{
    fputs("{\"file\": ", out);
    dg_cli_json_string(out, p->path);
    fputs(", \"role\": ", out);
    dg_cli_json_string(out, p->role);
    fputs(", \"format\": ", out);
    dg_cli_json_string(out, dg_data_format_name(p->format));
    fprintf(out, ", \"gzipped\": %s, \"rows\": %zu, \"bytes_parsed\": %zu, \"bytes_on_disk\": %zu",
            p->gzipped ? "true" : "false", p->rows, p->bytes_parsed, p->bytes_on_disk);
    fputs(", \"seconds\": ", out);
    json_stats(out, &p->seconds);
    fputs(", \"mb_per_s\": ", out);
    json_stats(out, &p->mb_per_s);
    fputc('}', out);
}

static void json_rate(FILE *out, const struct dg_bench_rate *r)
{
    fprintf(out, "{\"batch\": %d, \"steps\": %d, \"images_per_s\": ", r->batch, r->steps);
    json_stats(out, &r->images_per_second);
    if (r->have_counters)
        fprintf(out,
                ", \"launches_per_step\": %.2f, \"graph_launches_per_step\": %.2f, "
                "\"host_syncs_per_step\": %.2f",
                r->launches_per_step, r->graph_launches_per_step, r->syncs_per_step);
    if (r->have_eager) {
        fputs(", \"eager\": {\"images_per_s\": ", out);
        json_stats(out, &r->eager_images_per_second);
        fprintf(out, ", \"launches_per_step\": %.2f, \"host_syncs_per_step\": %.2f}",
                r->eager_launches_per_step, r->eager_syncs_per_step);
    }
    fputc('}', out);
}

static void print_json(FILE *out, const struct dg_bench_report *r)
{
    const struct dg_bench_settings *s = &r->settings;
    fprintf(out, "{\n  \"digits_version\": ");
    dg_cli_json_string(out, DIGITS_VERSION);
    fputs(",\n  \"build_type\": ", out);
    dg_cli_json_string(out, DIGITS_BUILD_TYPE);
    fputs(",\n  \"machine\": {\"cpu\": ", out);
    dg_cli_json_string(out, r->cpu_model);
    fprintf(out,
            ", \"logical_cpus\": %ld, \"memory_gib\": %.1f, \"load_average\": ", r->logical_cpus,
            r->memory_gib);
    dg_cli_json_string(out, r->load_average);
    fputs("},\n", out);
    fprintf(out,
            "  \"settings\": {\"reps\": %d, \"warmup\": %d, \"quick\": %s, \"augment\": %s, "
            "\"threads\": %d, \"device\": ",
            s->reps, s->warmup, s->quick ? "true" : "false", s->augment ? "true" : "false",
            s->threads);
    dg_cli_json_string(out, s->device_spec);
    fprintf(out, ", \"math\": \"%s\", \"net\": ", dg_math_name(s->math));
    dg_cli_json_string(out, s->net ? s->net : "reference");
    fputs("},\n", out);
    fputs("  \"data\": {\"source\": ", out);
    dg_cli_json_string(out, r->data_source);
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
        const struct dg_bench_backend_result *be = &r->backends[b];
        fputs(b ? ",\n    {" : "\n    {", out);
        fputs("\"name\": ", out);
        dg_cli_json_string(out, be->name);
        fputs(", \"description\": ", out);
        dg_cli_json_string(out, be->description);
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
        fprintf(out, ",\n     \"clock\": \"%s\"", be->device_timed ? "device" : "host");
        fputs(",\n     \"epoch\": ", out);
        if (be->have_epoch) {
            const struct dg_bench_epoch *e = &be->epoch;
            fprintf(out,
                    "{\"rows\": %d, \"train_rows\": %d, \"val_rows\": %d, \"batch\": %d, "
                    "\"steps\": %d, \"launches\": %ld, \"graph_launches\": %ld, "
                    "\"host_syncs\": %ld, \"seconds\": %.6f}",
                    e->rows, e->train_rows, e->val_rows, e->batch, e->steps, e->launches,
                    e->graph_launches, e->host_syncs, e->seconds);
        } else {
            fputs("null", out);
        }
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
                dg_cli_json_string(out, be->layers[l].name);
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
        dg_cli_json_string(out, r->skipped[i]);
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

static void print_parse_rows(FILE *out, const struct dg_bench_parse *rows, int count)
{
    fprintf(out, "  %-28s %8s %9s  %-24s %s\n", "file", "rows", "MB", "seconds", "MB/s");
    for (int i = 0; i < count; i++) {
        const struct dg_bench_parse *p = &rows[i];
        char name[64], seconds[96], rate[96];
        snprintf(name, sizeof name, "%s%s", base_name(p->path), p->gzipped ? " (gzip)" : "");
        format_range(seconds, sizeof seconds, "%.3f", &p->seconds);
        format_range(rate, sizeof rate, "%.0f", &p->mb_per_s);
        fprintf(out, "  %-28s %8zu %9.1f  %-24s %s\n", name, p->rows, (double)p->bytes_parsed / 1e6,
                seconds, rate);
    }
}

static void print_table(FILE *out, const struct dg_bench_report *r)
{
    const struct dg_bench_settings *s = &r->settings;
    fprintf(out, "digits bench %s (%s build) on %s, %ld logical CPUs\n", DIGITS_VERSION,
            DIGITS_BUILD_TYPE, r->cpu_model, r->logical_cpus);
    fprintf(out,
            "median (min..max) of %d repetitions after %d warm-up%s; training %s "
            "augmentation\n",
            s->reps, s->warmup, s->warmup == 1 ? "" : "s", s->augment ? "with" : "without");
    if (s->net)
        fprintf(out, "network: --net %s\n", s->net);
    fprintf(out, "images: %s%s (%zu); load average at the end: %s\n\n", r->data_source,
            r->synthetic ? " (synthetic)" : "", r->image_count, r->load_average);
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
        const struct dg_bench_backend_result *be = &r->backends[b];
        fprintf(out, "%s\n", be->description);
        fprintf(out, "  %-24s %6s  %s\n", "", "steps", "images/s");
        for (int i = 0; i < be->train_count + be->have_infer; i++) {
            const struct dg_bench_rate *rate = i < be->train_count ? &be->train[i] : &be->infer;
            char what[48], range[96];
            snprintf(what, sizeof what, "%s, batch %d",
                     i < be->train_count ? "training" : "inference", rate->batch);
            format_range(range, sizeof range, "%.0f", &rate->images_per_second);
            fprintf(out, "  %-24s %6d  %s", what, rate->steps, range);
            if (rate->have_counters)
                fprintf(out, "  (%.1f launches, %.1f graph launches, %.2f host syncs a step)",
                        rate->launches_per_step, rate->graph_launches_per_step,
                        rate->syncs_per_step);
            fputc('\n', out);
            if (rate->have_eager) {
                char eager[96];
                format_range(eager, sizeof eager, "%.0f", &rate->eager_images_per_second);
                fprintf(out, "  %-24s %6d  %s  (%.1f launches, %.2f host syncs a step)\n",
                        "  without graphs", rate->steps, eager, rate->eager_launches_per_step,
                        rate->eager_syncs_per_step);
                if (rate->eager_images_per_second.median > 0)
                    fprintf(out, "  %-24s %6s  %.2fx the eager step\n", "  graphs", "",
                            rate->images_per_second.median / rate->eager_images_per_second.median);
            }
        }
        if (be->device_timed)
            fprintf(out, "  (timed by the device's clock: CUDA events around each repetition)\n");
        if (be->have_epoch) {
            const struct dg_bench_epoch *e = &be->epoch;
            fprintf(out,
                    "  one epoch of dg_train (the 2nd of 2 on %d images: %d steps of %d, %d "
                    "validation images):\n    %ld launches, %ld graph launches, %ld host syncs, "
                    "%.3f s\n",
                    e->rows, e->steps, e->batch, e->val_rows, e->launches, e->graph_launches,
                    e->host_syncs, e->seconds);
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

/* Fills o->bench from the command line; returns -1 to run, else the exit code. */
static int parse_options(int argc, char **argv, struct options *o)
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
        {"net", required_argument, NULL, 'N'},
        {"epoch-rows", required_argument, NULL, 'E'},
        {"synthetic", no_argument, NULL, 'Y'},
        {"scaling", no_argument, NULL, 'S'},
        {"scaling-rows", required_argument, NULL, 'R'},
        {"quick", no_argument, NULL, 'Q'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_bench_settings *s = &o->bench;
    long value;
    int opt;
    enum dg_status status;
    static const char short_options[] = "qh";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        switch (opt) {
        case 'D':
            s->data_path = optarg;
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
            s->threads = (int)value;
            break;
        case 'M':
            if (!dg_cli_parse_math("bench", optarg, &s->math))
                return 2;
            break;
        case 'b':
            status = dg_bench_parse_list("--batch", optarg, 1, 65536, s->batches,
                                         DG_BENCH_MAX_BATCHES, &s->batch_count);
            if (status != DG_OK)
                return dg_cli_usage_error("bench", "%s", dg_error_message());
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
        case 'N': {
            struct dg_layer_spec specs[DG_MAX_LAYERS];
            int count;
            if (dg_net_spec_parse(optarg, specs, &count) != DG_OK)
                return dg_cli_usage_error("bench", "%s", dg_error_message());
            s->net = optarg;
            break;
        }
        case 'E':
            if (!dg_cli_parse_int("bench", "--epoch-rows", optarg, 0, 100000000, &value))
                return 2;
            if (value != 0 && value < 20)
                return dg_cli_usage_error("bench",
                                          "--epoch-rows %ld: the run needs at least 20 images "
                                          "(a training and a validation part), or 0 for none",
                                          value);
            s->epoch_rows = value ? (int)value : -1;
            break;
        case 'r':
            if (!dg_cli_parse_int("bench", "--reps", optarg, 1, DG_BENCH_MAX_REPS, &value))
                return 2;
            s->reps = (int)value;
            break;
        case 'w':
            if (!dg_cli_parse_int("bench", "--warmup", optarg, 0, 1000, &value))
                return 2;
            s->warmup = (int)value;
            break;
        case 'A':
            s->augment = 1;
            break;
        case 'Y':
            s->synthetic = 1;
            break;
        case 'S':
            s->scaling = 1;
            break;
        case 'R':
            status = dg_bench_parse_list("--scaling-rows", optarg, 1, 100000000, s->scaling_rows,
                                         DG_BENCH_MAX_SCALING, &s->scaling_count);
            if (status != DG_OK)
                return dg_cli_usage_error("bench", "%s", dg_error_message());
            s->scaling = 1;
            break;
        case 'Q':
            s->quick = 1;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return dg_cli_bad_option("bench", argv, short_options, long_options);
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
    if (!s->data_path && !s->synthetic &&
        find_default_data(o->default_data, sizeof o->default_data))
        s->data_path = o->default_data;
    if (!o->quiet)
        s->progress = print_progress;
    return -1;
}

int dg_cmd_bench(int argc, char **argv)
{
    struct options o;
    memset(&o, 0, sizeof o);
    dg_bench_settings_init(&o.bench);
    int code = parse_options(argc, argv, &o);
    if (code >= 0)
        return code;
    struct dg_bench_report *report = NULL;
    enum dg_status status = dg_bench_run(&o.bench, &report);
    if (status == DG_OK) {
        if (o.json)
            print_json(stdout, report);
        else
            print_table(stdout, report);
        if (fflush(stdout) != 0)
            status = dg_error(DG_ERR_IO, "bench: writing the results failed");
    }
    dg_bench_report_free(report);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
