/* digits train: load a labelled file, train the reference network with the reference recipe
 * (each setting a flag), write the model file; progress on stderr, history with --log. */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include "digits/data.h"
#include "digits/io.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/train.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    "      --log FILE.csv    per-epoch history (written as training goes)\n"
    "  -q, --quiet           no progress output\n"
    "  -h, --help            this text\n";

struct progress {
    int tty;
    int quiet;
    FILE *log;
    int log_failed;
    int batch;
};

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
    if (!progress->quiet) {
        if (progress->tty)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr,
                "epoch %d/%d: loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f "
                "lr %.3g images/s %.0f seconds %.1f%s\n",
                r->epoch, r->epochs, r->loss, r->accuracy, r->val_loss, r->val_accuracy, r->lr,
                r->images_per_second, r->seconds,
                r->next_lr < r->lr ? " (learning rate reduced)" : "");
    }
    if (progress->log) {
        fprintf(progress->log, "%d,%.6f,%.6f,%.6f,%.6f,%.6g,%.1f,%.3f\n", r->epoch, r->loss,
                r->accuracy, r->val_loss, r->val_accuracy, r->lr, r->images_per_second,
                r->seconds);
        if (fflush(progress->log) != 0)
            progress->log_failed = 1;
    }
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
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_train_options options;
    dg_train_options_default(&options);
    struct dg_cli_device device = {"auto", 0, DG_CUDA_MATH_FP32, 0, 0};
    const char *output = "model.dgt", *labels = NULL, *log_path = NULL;
    long limit = 0;
    struct progress progress = {isatty(STDERR_FILENO), 0, NULL, 0, 0};
    int opt;
    long value;
    double real;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "o:qh", long_options, NULL)) != -1) {
        switch (opt) {
        case 'o':
            output = optarg;
            break;
        case 'L':
            labels = optarg;
            break;
        case 'e':
            if (!dg_cli_parse_int("train", "--epochs", optarg, 1, 100000, &value))
                return 2;
            options.epochs = (int)value;
            break;
        case 'b':
            if (!dg_cli_parse_int("train", "--batch", optarg, 1, 65536, &value))
                return 2;
            options.batch = (int)value;
            break;
        case 'r':
            if (!dg_cli_parse_float("train", "--lr", optarg, 1e-12, 10.0, &real))
                return 2;
            options.lr = (float)real;
            break;
        case 'v':
            if (!dg_cli_parse_float("train", "--val-split", optarg, 0.0, 0.99, &real))
                return 2;
            options.val_split = (float)real;
            break;
        case 's':
            if (!dg_cli_parse_u64("train", "--seed", optarg, &options.seed))
                return 2;
            break;
        case 'A':
            options.augment = 0;
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
            device.spec = optarg;
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
    const char *train_path = argv[optind];

    struct dg_backend *be = NULL;
    struct dg_dataset dataset = {0};
    struct dg_model model = {0};
    struct dg_atomic_file probe;
    enum dg_status status;
    int code = 1;

    /* Fail before training, not after, when the model cannot be written. */
    if ((status = dg_atomic_open(&probe, output)) != DG_OK)
        return dg_cli_fail(status);
    dg_atomic_abort(&probe);

    if ((status = dg_cli_open_backend(&device, progress.quiet, &be)) != DG_OK)
        return dg_cli_fail(status);
    if ((status = dg_dataset_load(train_path, labels, &be->host_allocator, &dataset)) != DG_OK)
        goto fail;
    if (!dataset.labels) {
        status = dg_error(DG_ERR_INPUT, "%s: has no labels (test layout); training needs the "
                                        "train layout or --labels",
                          train_path);
        goto fail;
    }
    if (limit > 0)
        dg_dataset_truncate(&dataset, (size_t)limit);
    int layer_count;
    const struct dg_layer_spec *specs = dg_arch_reference(&layer_count);
    if ((status = dg_model_build(&model, specs, layer_count)) != DG_OK)
        goto fail;
    dg_model_init_glorot(&model, options.seed);

    if (log_path) {
        progress.log = fopen(log_path, "w");
        if (!progress.log) {
            status = dg_error(DG_ERR_IO, "%s: cannot create the log file", log_path);
            goto fail;
        }
        fprintf(progress.log,
                "epoch,loss,accuracy,val_loss,val_accuracy,lr,images_per_second,seconds\n");
    }
    if (!progress.quiet) {
        char described[512];
        dg_backend_describe_for(be, &model, options.batch, described, sizeof described);
        fprintf(stderr, "digits: training on %zu images of %s (%s), %d epochs, batch %d, %s\n",
                dataset.count, train_path, dataset.labels ? "labelled" : "unlabelled",
                options.epochs, options.batch, described);
    }
    options.on_epoch = on_epoch;
    options.on_step = on_step;
    options.ctx = &progress;
    progress.batch = options.batch;
    struct dg_train_result result;
    if ((status = dg_train(be, &model, &dataset, &options, &result)) != DG_OK)
        goto fail;
    if (progress.log_failed) {
        status = dg_error(DG_ERR_IO, "%s: writing the log failed", log_path);
        goto fail;
    }

    char settings[1024];
    snprintf(settings, sizeof settings,
             "digits_version=%s\nbackend=%s\ntrain_file=%s\nrows=%zu\nepochs=%d\nbatch=%d\n"
             "lr=%g\nrho=%g\neps=%g\nval_split=%g\nseed=%llu\naugment=%d\n"
             "final_val_accuracy=%.6f\nbest_val_accuracy=%.6f\nbest_epoch=%d\nseconds=%.1f\n",
             DIGITS_VERSION, be->name, train_path, dataset.count, options.epochs,
             options.batch, options.lr, options.rho, options.eps, options.val_split,
             (unsigned long long)options.seed, options.augment, result.final_val_accuracy,
             result.best_val_accuracy, result.best_epoch, result.seconds);
    if ((status = dg_model_save(output, &model, settings)) != DG_OK)
        goto fail;
    if (!progress.quiet) {
        if (result.val_count)
            fprintf(stderr,
                    "digits: wrote %s (val_accuracy %.4f, best %.4f at epoch %d, %.1f s)\n",
                    output, result.final_val_accuracy, result.best_val_accuracy,
                    result.best_epoch, result.seconds);
        else
            fprintf(stderr, "digits: wrote %s (%.1f s)\n", output, result.seconds);
    }
    code = 0;
fail:
    if (code != 0)
        code = dg_cli_fail(status);
    if (progress.log && fclose(progress.log) != 0 && code == 0)
        code = dg_cli_fail(dg_error(DG_ERR_IO, "%s: writing the log failed", log_path));
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
    return code;
}
