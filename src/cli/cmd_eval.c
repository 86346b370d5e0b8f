/* digits eval: accuracy, per-class precision and recall, and the 10x10 confusion matrix
 * (rows: true label, columns: predicted) of a model on a labelled file. */
#include "cli/cli.h"
#include "cli/scoring.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: digits eval -m model.dgt LABELLED [--labels FILE] [--all]\n"
    "       digits eval -m model.dgt TEST --answers ANSWERS.csv\n"
    "       digits eval --answers ANSWERS.csv SUBMISSION.csv\n"
    "\n"
    "Prints accuracy, per-class precision and recall and the confusion matrix of the model on\n"
    "LABELLED (Kaggle train.csv[.gz] layout, or MNIST IDX images with --labels).\n"
    "When LABELLED is the model's training file (the same rows, by their fingerprint, as\n"
    "the model records), only the validation rows it held out are scored, as `digits report`\n"
    "does; otherwise, or with --all, every row. The first line says which.\n"
    "\n"
    "options:\n"
    DG_SCORING_MODEL_HELP
    "      --all            score every row, even of the training file\n"
    "      --answers FILE   the true labels as ImageId,Label (as scripts/get-data writes\n"
    "                       test_labels.csv): score the model on TEST against them, or,\n"
    "                       without -m, a SUBMISSION file (ImageId,Label) itself\n"
    "  -o, --output FILE    write the results to FILE (default: standard output)\n"
    "      --json           the results as one JSON object\n"
    DG_SCORING_DATA_HELP
    "      --labels FILE    IDX label file, when LABELLED is an IDX image file\n"
    "      --batch N        images per forward pass (256)\n"
    "      --threads N      CPU threads (all cores)\n"
    "      --device D       auto, cpu, cuda or cuda:N (auto)\n"
    "      --math M         fp32, tf32 (CUDA) or bf16 (AVX512-BF16 CPUs, CUDA cc 8.0+)\n"
    "                       (fp32)\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits eval -m model.dgt train.csv          (the rows training held out)\n"
    "  digits eval -m model.dgt train.csv --all\n"
    "  digits eval -m a.dgt -m b.dgt mnist-test.csv --tta\n"
    "  digits eval --answers test_labels.csv submission.csv\n";

/* What is scored: true labels against predictions (a model's, or a submission's). */
struct eval_view {
    const uint8_t *labels, *predicted;
    size_t count;
    int member_count;                /* > 1: an ensemble, each member's predictions below */
    const uint8_t *member_predicted; /* (member_count, count) */
    const char *selection;           /* which rows, in words */
};

/* The results: text (the default) or one JSON object, to `out`. */
static void print_report(FILE *out, const struct eval_view *s, int json)
{
    size_t confusion[DG_CLASSES][DG_CLASSES];
    memset(confusion, 0, sizeof confusion);
    size_t correct = 0, count = s->count;
    for (size_t i = 0; i < count; i++) {
        confusion[s->labels[i]][s->predicted[i]]++;
        correct += s->labels[i] == s->predicted[i];
    }
    double accuracy = count ? (double)correct / (double)count : 0.0;
    double member_accuracy[DG_MAX_MEMBERS];
    for (int m = 0; s->member_count > 1 && m < s->member_count; m++) {
        size_t member_correct = 0;
        const uint8_t *predicted = s->member_predicted + (size_t)m * count;
        for (size_t i = 0; i < count; i++)
            member_correct += s->labels[i] == predicted[i];
        member_accuracy[m] = count ? (double)member_correct / (double)count : 0.0;
    }
    double precision[DG_CLASSES], recall[DG_CLASSES];
    size_t support[DG_CLASSES];
    for (int k = 0; k < DG_CLASSES; k++) {
        size_t predicted = 0, actual = 0;
        for (int j = 0; j < DG_CLASSES; j++) {
            predicted += confusion[j][k];
            actual += confusion[k][j];
        }
        precision[k] = predicted ? (double)confusion[k][k] / (double)predicted : 0.0;
        recall[k] = actual ? (double)confusion[k][k] / (double)actual : 0.0;
        support[k] = actual;
    }
    if (json) {
        fputs("{\"rows\": ", out);
        dg_cli_json_string(out, s->selection);
        fprintf(out, ", \"images\": %zu, \"correct\": %zu, \"accuracy\": %.6f", count, correct,
                accuracy);
        if (s->member_count > 1) {
            fputs(", \"members\": [", out);
            for (int m = 0; m < s->member_count; m++)
                fprintf(out, "%s%.6f", m ? ", " : "", member_accuracy[m]);
            fputs("]", out);
        }
        fputs(", \"classes\": [", out);
        for (int k = 0; k < DG_CLASSES; k++)
            fprintf(out,
                    "%s{\"class\": %d, \"precision\": %.6f, \"recall\": %.6f, \"support\": %zu}",
                    k ? ", " : "", k, precision[k], recall[k], support[k]);
        fputs("], \"confusion\": [", out);
        for (int j = 0; j < DG_CLASSES; j++) {
            fputs(j ? ", [" : "[", out);
            for (int k = 0; k < DG_CLASSES; k++)
                fprintf(out, "%s%zu", k ? ", " : "", confusion[j][k]);
            fputs("]", out);
        }
        fputs("]}\n", out);
        return;
    }
    fprintf(out, "rows: %s\n", s->selection);
    fprintf(out, "images: %zu\naccuracy: %.4f (%zu correct, %zu wrong)\n\n", count, accuracy,
            correct, count - correct);
    if (s->member_count > 1) {
        fprintf(out, "members of the ensemble (the ensemble averages their probabilities):\n");
        for (int m = 0; m < s->member_count; m++)
            fprintf(out, "  member %d: accuracy %.4f\n", m + 1, member_accuracy[m]);
        fprintf(out, "  ensemble of %d: accuracy %.4f\n\n", s->member_count, accuracy);
    }
    fprintf(out, "class  precision  recall  support\n");
    for (int k = 0; k < DG_CLASSES; k++)
        fprintf(out, "%5d  %9.4f  %6.4f  %7zu\n", k, precision[k], recall[k], support[k]);
    fprintf(out, "\nconfusion matrix (rows: true label, columns: predicted)\n      ");
    for (int k = 0; k < DG_CLASSES; k++)
        fprintf(out, "%6d", k);
    fprintf(out, "\n");
    for (int j = 0; j < DG_CLASSES; j++) {
        fprintf(out, "%6d", j);
        for (int k = 0; k < DG_CLASSES; k++)
            fprintf(out, "%6zu", confusion[j][k]);
        fprintf(out, "\n");
    }
}

/* The results to `output` ("-": standard output), whole or not at all; a file written is said
 * on stderr unless quiet. */
static enum dg_status write_report(const char *output, const struct eval_view *s, int json,
                                   int quiet)
{
    struct dg_atomic_file file;
    enum dg_status status = dg_atomic_open(&file, output);
    if (status != DG_OK)
        return status;
    print_report(file.fp, s, json);
    status = dg_atomic_commit(&file);
    if (status == DG_OK && strcmp(output, "-") != 0 && !quiet)
        fprintf(stderr, "digits: wrote %s (%s)\n", output, json ? "JSON" : "the results");
    return status;
}

/* eval --answers ANSWERS SUBMISSION: a submission file scored against the answers, no model. */
static enum dg_status score_submission(const char *answers_path, const char *submission_path,
                                       const char *output, int json, int quiet)
{
    uint8_t *truth = NULL, *predicted = NULL;
    size_t truth_count = 0, predicted_count = 0;
    enum dg_status status = dg_answers_load(answers_path, &truth, &truth_count);
    if (status == DG_OK)
        status = dg_answers_load(submission_path, &predicted, &predicted_count);
    if (status == DG_OK && predicted_count != truth_count)
        status = dg_error(DG_ERR_INPUT, "%s: %zu rows, the answers (%s) have %zu",
                          submission_path, predicted_count, answers_path, truth_count);
    char selection[4400];
    snprintf(selection, sizeof selection, "the %zu rows of %s against %s", truth_count,
             submission_path, answers_path);
    struct eval_view view = {truth, predicted, truth_count, 1, NULL, selection};
    if (status == DG_OK)
        status = write_report(output, &view, json, quiet);
    free(truth);
    free(predicted);
    return status;
}

int dg_cmd_eval(int argc, char **argv)
{
    static const struct option long_options[] = {
        DG_SCORING_LONG_OPTIONS,
        {"all", no_argument, NULL, 'a'},
        {"output", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'J'},
        {"answers", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_scoring_args args;
    dg_scoring_args_default(&args);
    int opt, taken, all = 0;
    static const char short_options[] = "m:o:qvh";
    optind = 1;
    const char *output = "-", *answers = NULL;
    int json = 0;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        if ((taken = dg_scoring_option("eval", opt, optarg, &args)) != 0) {
            if (taken < 0)
                return 2;
            continue;
        }
        if (opt == 'h') {
            fputs(usage_text, stdout);
            return 0;
        }
        if (opt == 'a' || opt == 'o' || opt == 'J' || opt == 'W') {
            all |= opt == 'a';
            json |= opt == 'J';
            if (opt == 'o')
                output = optarg;
            if (opt == 'W')
                answers = optarg;
            continue;
        }
        return dg_cli_bad_option("eval", argv, short_options, long_options);
    }
    int code;
    if (answers && args.model_path_count == 0) {
        /* a submission against the answers: no model, one SUBMISSION operand */
        if (optind != argc - 1)
            return dg_cli_usage_error("eval", optind >= argc
                                                  ? "--answers without -m needs the SUBMISSION "
                                                    "file to score"
                                                  : "expects one SUBMISSION file");
        struct dg_cli_file files[] = {{output, "-o", 1},
                                      {answers, "--answers", 0},
                                      {argv[optind], "the SUBMISSION file", 0}};
        if ((code = dg_cli_check_outputs("eval", files, 3)) != 0)
            return code;
        enum dg_status status = score_submission(answers, argv[optind], output, json, args.quiet);
        return status == DG_OK ? 0 : dg_cli_fail(status);
    }
    code = dg_scoring_check_operands("eval", answers ? "TEST" : "LABELLED", argc, &args);
    if (code)
        return code;
    struct dg_cli_file files[DG_MAX_MEMBERS + 4];
    size_t n = 0;
    files[n++] = (struct dg_cli_file){output, "-o", 1};
    for (int m = 0; m < args.model_path_count; m++)
        files[n++] = (struct dg_cli_file){args.model_paths[m], "the model -m", 0};
    files[n++] = (struct dg_cli_file){args.labels_path, "--labels", 0};
    files[n++] = (struct dg_cli_file){answers, "--answers", 0};
    files[n++] = (struct dg_cli_file){argv[optind], answers ? "the TEST file" : "the LABELLED file",
                                      0};
    if ((code = dg_cli_check_outputs("eval", files, n)) != 0)
        return code;
    if (all && args.held_out)
        return dg_cli_usage_error("eval", "--all scores every row, --held-out only the held-out "
                                          "ones: give one of them");
    if (answers && args.held_out)
        return dg_cli_usage_error("eval", "--answers scores every row of TEST: --held-out does "
                                          "not apply");
    /* the training file: its held-out rows, as report scores them (say so), unless --all; with
     * --answers, every row of TEST */
    if (!all && !args.held_out && !answers)
        args.held_out = DG_HELD_OUT_AUTO;
    uint8_t *truth = NULL;
    size_t truth_count = 0;
    enum dg_status status = DG_OK;
    if (answers)
        status = dg_answers_load(answers, &truth, &truth_count);
    struct dg_scoring scoring;
    memset(&scoring, 0, sizeof scoring);
    if (status == DG_OK)
        status = dg_scoring_run(&scoring, &args, argv[optind]);
    const uint8_t *labels = answers ? truth : scoring.dataset.labels;
    /* as many answers as rows; with --limit, the first answers go with the first rows */
    if (status == DG_OK && answers && truth_count != scoring.dataset.count &&
        !(args.limit && truth_count > scoring.dataset.count))
        status = dg_error(DG_ERR_INPUT, "%s: %zu answers, %s has %zu rows", answers, truth_count,
                          argv[optind], scoring.dataset.count);
    if (status == DG_OK && !labels)
        status = dg_error(DG_ERR_INPUT, "%s: has no labels (test layout); eval needs the train "
                                        "layout, --labels, or --answers ImageId,Label",
                          argv[optind]);
    char selection[4600];
    if (answers)
        snprintf(selection, sizeof selection, "%s against %s", scoring.selection, answers);
    else
        snprintf(selection, sizeof selection, "%s", scoring.selection);
    struct eval_view view = {labels,
                             scoring.predicted,
                             scoring.dataset.count,
                             scoring.member_count,
                             scoring.member_predicted,
                             selection};
    if (status == DG_OK)
        status = write_report(output, &view, json, args.quiet);
    dg_scoring_free(&scoring);
    free(truth);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
