/* digits predict: score a file with a model and write a Kaggle submission (ImageId,Label,
 * ImageId from 1) and optionally the ten class probabilities per image. */
#include "cli/cli.h"
#include "cli/scoring.h"

#include "digits/io.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char *usage_text =
    "usage: digits predict -m model.dgt TEST [-o submission.csv] [--probs FILE]\n"
    "\n"
    "Writes the Kaggle submission (ImageId,Label; ImageId from 1) for every image of TEST\n"
    "(Kaggle test.csv[.gz]; a labelled file works too, its labels are ignored; MNIST IDX).\n"
    "\n"
    "options:\n"
    DG_SCORING_MODEL_HELP
    "  -o, --output FILE    submission to write (default: standard output)\n"
    "      --probs FILE     also write ImageId,p0..p9 (class probabilities)\n"
    "      --labels FILE    IDX label file (accepted for symmetry, ignored)\n"
    "      --batch N        images per forward pass (256)\n"
    "      --threads N      CPU threads (all cores)\n"
    "      --device D       auto, cpu, cuda or cuda:N (auto)\n"
    "  -h, --help           this text\n";

/* Writes the submission (probs = 0) or the probabilities (probs = 1) into an open output. */
static enum dg_status write_csv(struct dg_atomic_file *file, const struct dg_scoring *s,
                                int probs)
{
    if (probs)
        fputs("ImageId,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9\n", file->fp);
    else
        fputs("ImageId,Label\n", file->fp);
    for (size_t i = 0; i < s->dataset.count; i++) {
        if (probs) {
            const float *p = s->probs + i * DG_CLASSES;
            fprintf(file->fp, "%zu", i + 1);
            for (int k = 0; k < DG_CLASSES; k++)
                fprintf(file->fp, ",%.6g", p[k]);
            fputc('\n', file->fp);
        } else {
            fprintf(file->fp, "%zu,%d\n", i + 1, s->predicted[i]);
        }
    }
    if (ferror(file->fp))
        return dg_error(DG_ERR_IO, "%s: write failed: %s",
                        file->fp == stdout ? "stdout" : file->path, strerror(errno));
    return DG_OK;
}

/* The submission and, when asked for, the probabilities: both or neither. Each is written to a
 * temporary file and completed (flushed, synced) before either is renamed into place; when the
 * second rename fails the message says that the first output was written. */
static enum dg_status write_outputs(const char *output, const char *probs_path,
                                    const struct dg_scoring *s)
{
    struct dg_atomic_file sub, probs;
    enum dg_status status;
    memset(&probs, 0, sizeof probs);
    if ((status = dg_atomic_open(&sub, output)) != DG_OK)
        return status;
    if (probs_path && (status = dg_atomic_open(&probs, probs_path)) != DG_OK) {
        dg_atomic_abort(&sub);
        return status;
    }
    if ((probs_path && (status = write_csv(&probs, s, 1)) != DG_OK) ||
        (probs_path && (status = dg_atomic_finish(&probs)) != DG_OK) ||
        (status = write_csv(&sub, s, 0)) != DG_OK || (status = dg_atomic_commit(&sub)) != DG_OK) {
        dg_atomic_abort(&sub);
        dg_atomic_abort(&probs);
        return status;
    }
    if (probs_path && (status = dg_atomic_commit(&probs)) != DG_OK)
        return dg_error_prefix(status, "%s was written, but the probabilities were not",
                               strcmp(output, "-") == 0 ? "the submission (stdout)" : output);
    return DG_OK;
}

int dg_cmd_predict(int argc, char **argv)
{
    static const struct option long_options[] = {
        DG_SCORING_LONG_OPTIONS,
        {"output", required_argument, NULL, 'o'},
        {"probs", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_scoring_args args;
    dg_scoring_args_default(&args);
    const char *output = "-", *probs_path = NULL;
    int opt, taken;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:o:h", long_options, NULL)) != -1) {
        if ((taken = dg_scoring_option("predict", opt, optarg, &args)) != 0) {
            if (taken < 0)
                return 2;
            continue;
        }
        switch (opt) {
        case 'o':
            output = optarg;
            break;
        case 'p':
            probs_path = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("(see `digits predict --help`)\n", stderr);
            return 2;
        }
    }
    int code = dg_scoring_check_operands("predict", "TEST", argc, &args);
    if (code)
        return code;
    struct dg_scoring scoring;
    enum dg_status status =
        dg_scoring_run(&scoring, &args, argv[optind]);
    if (status == DG_OK)
        status = write_outputs(output, probs_path, &scoring);
    if (status == DG_OK && strcmp(output, "-") != 0)
        fprintf(stderr, "digits: wrote %zu predictions to %s\n", scoring.dataset.count, output);
    dg_scoring_free(&scoring);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
