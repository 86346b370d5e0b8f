/* digits check-data: validate a dataset and summarise it (layout, rows, label histogram,
 * pixel mean, load speed). Any bad input: the parser's FILE:LINE:COL message and exit 2. */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include "digits/data.h"

#include <getopt.h>
#include <stdio.h>
#include <time.h>

static const char *usage_text =
    "usage: digits check-data FILE [--labels FILE] [--threads N] [--json]\n"
    "\n"
    "Validates FILE (Kaggle train.csv / test.csv, plain or .gz, or MNIST IDX images with\n"
    "--labels) and prints its layout, rows, label histogram, pixel mean and load speed.\n"
    "Exit 0 when the file is valid, 2 on any bad input (with FILE:LINE:COL) or a path\n"
    "that names no file, 1 when reading it fails.\n"
    "\n"
    "options:\n"
    "      --labels FILE    IDX label file for IDX images\n"
    "      --threads N      threads parsing a CSV (all cores; gzip: one inflates, the\n"
    "                       others parse)\n"
    "      --json           one JSON object instead of the text summary\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits check-data train.csv\n"
    "  digits check-data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz --json\n";

int dg_cmd_check_data(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"labels", required_argument, NULL, 'L'},
        {"threads", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *labels = NULL;
    int json = 0, threads = 0, opt;
    long value;
    static const char short_options[] = "h";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        switch (opt) {
        case 'L':
            labels = optarg;
            break;
        case 't':
            if (!dg_cli_parse_int("check-data", "--threads", optarg, 1, 1024, &value))
                return 2;
            threads = (int)value;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return dg_cli_bad_option("check-data", argv, short_options, long_options);
        }
    }
    if (optind != argc - 1)
        return dg_cli_usage_error("check-data", optind >= argc ? "missing the FILE to check"
                                                               : "expects one FILE");
    const char *path = argv[optind];
    struct dg_dataset dataset;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    enum dg_status status = dg_dataset_load_threads(path, labels, NULL, threads, &dataset);
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (status != DG_OK)
        return dg_cli_fail(status);
    double seconds =
        (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) * 1e-9;
    size_t histogram[DG_CLASSES] = {0};
    if (dataset.labels)
        for (size_t i = 0; i < dataset.count; i++)
            histogram[dataset.labels[i]]++;
    uint64_t pixel_sum = 0;
    size_t pixels = dataset.count * DG_PIXELS;
    for (size_t i = 0; i < pixels; i++)
        pixel_sum += dataset.images[i];
    double mean = pixels ? (double)pixel_sum / (double)pixels : 0.0;
    double mb = (double)dataset.bytes_parsed / 1e6;
    double mb_per_second = seconds > 0 ? mb / seconds : 0.0;
    const char *layout = dataset.format == DG_FORMAT_IDX
                             ? (dataset.labels ? "idx (images + labels)" : "idx (images only)")
                             : (dataset.format == DG_FORMAT_CSV_TRAIN ? "train" : "test");
    if (json) {
        printf("{\"file\": ");
        dg_cli_json_string(stdout, path);
        printf(", \"format\": \"%s\", \"layout\": \"%s\", \"gzip\": %s, \"rows\": %zu, "
               "\"labelled\": %s, ",
               dataset.format == DG_FORMAT_IDX ? "idx" : "csv", layout,
               dataset.gzipped ? "true" : "false", dataset.count,
               dataset.labels ? "true" : "false");
        if (dataset.labels) {
            printf("\"label_histogram\": [");
            for (int k = 0; k < DG_CLASSES; k++)
                printf("%s%zu", k ? ", " : "", histogram[k]);
            printf("], ");
        }
        printf("\"pixel_mean\": %.4f, \"bytes_parsed\": %zu, \"seconds\": %.6f, "
               "\"mb_per_second\": %.1f}\n",
               mean, dataset.bytes_parsed, seconds, mb_per_second);
    } else {
        printf("file: %s\n", path);
        printf("format: %s%s\n", dg_data_format_name(dataset.format),
               dataset.gzipped ? ", gzip" : "");
        printf("layout: %s\n", layout);
        printf("rows: %zu\n", dataset.count);
        if (dataset.labels) {
            printf("labels:");
            for (int k = 0; k < DG_CLASSES; k++)
                printf(" %d:%zu", k, histogram[k]);
            printf("\n");
        }
        printf("pixel mean: %.4f (of 0..255)\n", mean);
        printf("load: %.1f MB%s in %.3f s = %.0f MB/s\n", mb,
               dataset.gzipped ? " uncompressed" : "", seconds, mb_per_second);
    }
    dg_dataset_free(&dataset);
    return 0;
}
