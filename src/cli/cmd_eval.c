/* digits eval: accuracy, per-class precision and recall, and the 10x10 confusion matrix
 * (rows: true label, columns: predicted) of a model on a labelled file. */
#include "cli/cli.h"
#include "cli/scoring.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char *usage_text =
    "usage: digits eval -m model.dgt LABELLED [--labels FILE] [--all]\n"
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
    "      --labels FILE    IDX label file, when LABELLED is an IDX image file\n"
    "      --batch N        images per forward pass (256)\n"
    "      --threads N      CPU threads (all cores)\n"
    "      --device D       auto, cpu, cuda or cuda:N (auto)\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits eval -m model.dgt train.csv          (the rows training held out)\n"
    "  digits eval -m model.dgt train.csv --all\n"
    "  digits eval -m a.dgt -m b.dgt mnist-test.csv --tta\n";

static void print_report(const struct dg_scoring *s)
{
    size_t confusion[DG_CLASSES][DG_CLASSES];
    memset(confusion, 0, sizeof confusion);
    size_t correct = 0;
    for (size_t i = 0; i < s->dataset.count; i++) {
        confusion[s->dataset.labels[i]][s->predicted[i]]++;
        correct += s->dataset.labels[i] == s->predicted[i];
    }
    printf("rows: %s\n", s->selection);
    printf("images: %zu\naccuracy: %.4f (%zu correct, %zu wrong)\n\n", s->dataset.count,
           s->dataset.count ? (double)correct / (double)s->dataset.count : 0.0, correct,
           s->dataset.count - correct);
    if (s->member_count > 1) {
        printf("members of the ensemble (the ensemble averages their probabilities):\n");
        for (int m = 0; m < s->member_count; m++) {
            size_t member_correct = 0;
            const uint8_t *predicted = s->member_predicted + (size_t)m * s->dataset.count;
            for (size_t i = 0; i < s->dataset.count; i++)
                member_correct += s->dataset.labels[i] == predicted[i];
            printf("  member %d: accuracy %.4f\n", m + 1,
                   s->dataset.count ? (double)member_correct / (double)s->dataset.count : 0.0);
        }
        printf("  ensemble of %d: accuracy %.4f\n\n", s->member_count,
               s->dataset.count ? (double)correct / (double)s->dataset.count : 0.0);
    }
    printf("class  precision  recall  support\n");
    for (int k = 0; k < DG_CLASSES; k++) {
        size_t predicted = 0, actual = 0;
        for (int j = 0; j < DG_CLASSES; j++) {
            predicted += confusion[j][k];
            actual += confusion[k][j];
        }
        printf("%5d  %9.4f  %6.4f  %7zu\n", k,
               predicted ? (double)confusion[k][k] / (double)predicted : 0.0,
               actual ? (double)confusion[k][k] / (double)actual : 0.0, actual);
    }
    printf("\nconfusion matrix (rows: true label, columns: predicted)\n      ");
    for (int k = 0; k < DG_CLASSES; k++)
        printf("%6d", k);
    printf("\n");
    for (int j = 0; j < DG_CLASSES; j++) {
        printf("%6d", j);
        for (int k = 0; k < DG_CLASSES; k++)
            printf("%6zu", confusion[j][k]);
        printf("\n");
    }
}

int dg_cmd_eval(int argc, char **argv)
{
    static const struct option long_options[] = {
        DG_SCORING_LONG_OPTIONS,
        {"all", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_scoring_args args;
    dg_scoring_args_default(&args);
    int opt, taken, all = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:h", long_options, NULL)) != -1) {
        if ((taken = dg_scoring_option("eval", opt, optarg, &args)) != 0) {
            if (taken < 0)
                return 2;
            continue;
        }
        if (opt == 'h') {
            fputs(usage_text, stdout);
            return 0;
        }
        if (opt == 'a') {
            all = 1;
            continue;
        }
        return dg_cli_bad_option("eval", argv, long_options);
    }
    int code = dg_scoring_check_operands("eval", "LABELLED", argc, &args);
    if (code)
        return code;
    if (all && args.held_out)
        return dg_cli_usage_error("eval", "--all scores every row, --held-out only the held-out "
                                          "ones: give one of them");
    /* the training file: its held-out rows, as report scores them (say so), unless --all */
    if (!all && !args.held_out)
        args.held_out = DG_HELD_OUT_AUTO;
    struct dg_scoring scoring;
    enum dg_status status =
        dg_scoring_run(&scoring, &args, argv[optind]);
    if (status == DG_OK && !scoring.dataset.labels)
        status = dg_error(DG_ERR_INPUT, "%s: has no labels (test layout); eval needs the train "
                                        "layout or --labels",
                          argv[optind]);
    if (status == DG_OK)
        print_report(&scoring);
    dg_scoring_free(&scoring);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
