/* digits report: one self-contained HTML page about a model (or ensemble) on labelled data:
 * learning curves, confusion heat map, per-class figures, the most confidently wrong images,
 * an augmentation sheet, the layer table, the settings and speed (src/io/report.c). */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"
#include "cli/scoring.h"

#include "digits/io.h"
#include "digits/report.h"
#include "digits/train.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHEET_IMAGES 6
#define SHEET_COPIES 5

static const char *usage_text =
    "usage: digits report -m model.dgt LABELLED [-o report.html]\n"
    "\n"
    "Writes one self-contained HTML page (inline SVG and PNG; nothing is fetched from\n"
    "anywhere, it opens offline in any browser): the learning curves stored in the model\n"
    "file (loss and accuracy per epoch, training and validation, learning-rate reductions\n"
    "marked), the confusion matrix as a heat map, per-class precision, recall and F1, the\n"
    "most confidently wrong images, training images beside augmented versions of them, the\n"
    "layer table, and the run's settings and speed.\n"
    "\n"
    "When LABELLED is the model's training file (the same rows, by their fingerprint, as\n"
    "the model records), only the validation rows it held out are scored; otherwise, or with\n"
    "--all, every row.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE     model or ensemble file (required); give it several times to\n"
    "                       average the probabilities of all their members\n"
    "  -o, --output FILE    the page to write (report.html; - for standard output)\n"
    "      --all            score every row, even of the training file\n"
    "      --top N          show the N most confidently wrong images (48; 0: none)\n"
    "      --tta            test-time augmentation: average each image with its copies\n"
    "                       shifted by one pixel up, down, left and right\n"
    "      --labels FILE    IDX label file, when LABELLED is an IDX image file\n"
    DG_SCORING_DATA_HELP
    "      --batch N        images per forward pass (256)\n"
    "      --threads N      CPU threads (all cores)\n"
    "      --device D       auto, cpu, cuda or cuda:N (auto)\n"
    "      --math M         fp32, tf32 (CUDA) or bf16 (AVX512-BF16 CPUs, CUDA cc 8.0+)\n"
    "                       (fp32)\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits report -m model.dgt train.csv -o report.html\n"
    "  digits report -m model.dgt mnist-test.csv --top 100 -o test.html\n";

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* SHEET_IMAGES rows spread over the data, each assembled SHEET_COPIES times with the
 * training augmentation (the model's seed, its first epoch's draws) by the backend. */
static enum dg_status augmentation_sheet(struct dg_scoring *s, const char *settings,
                                         uint8_t *images, float *augmented, int *sheet_count,
                                         char *words, size_t words_size)
{
    *sheet_count = 0;
    size_t count = s->dataset.count;
    int n = count < SHEET_IMAGES ? (int)count : SHEET_IMAGES;
    if (n == 0)
        return DG_OK;
    struct dg_backend *be = s->be;
    uint32_t rows[SHEET_IMAGES * SHEET_COPIES];
    for (int i = 0; i < n; i++) {
        uint32_t row = (uint32_t)((size_t)i * count / (size_t)n);
        memcpy(images + (size_t)i * DG_PIXELS, s->dataset.images + (size_t)row * DG_PIXELS,
               DG_PIXELS);
        for (int c = 0; c < SHEET_COPIES; c++)
            rows[i * SHEET_COPIES + c] = row;
    }
    const char *seed = settings ? dg_settings_value(settings, "seed") : NULL;
    const char *augment = settings ? dg_settings_value(settings, "augment") : NULL;
    struct dg_train_options recipe;
    dg_train_options_default(&recipe);
    /* the model's own strengths where it was trained with others (train --rotate ...) */
    const char *rotation = settings ? dg_settings_value(settings, "rotation_deg") : NULL;
    const char *zoom = settings ? dg_settings_value(settings, "zoom") : NULL;
    const char *shift = settings ? dg_settings_value(settings, "shift") : NULL;
    struct dg_augment_key key = {seed ? strtoull(seed, NULL, 10) : recipe.seed, 0, 0,
                                 rotation ? strtof(rotation, NULL) : recipe.rotation_deg,
                                 shift ? strtof(shift, NULL) : recipe.shift,
                                 zoom ? strtof(zoom, NULL) : recipe.zoom};
    snprintf(words, words_size,
             "rotation up to %g degrees, zoom %g to %g on each axis, shifts up to %g%% of the "
             "side, bilinear, nearest fill%s",
             (double)key.rotation_deg, 1.0 - (double)key.zoom, 1.0 + (double)key.zoom,
             100.0 * (double)key.shift,
             augment && *augment == '0' ? "; this model was trained without augmentation" : "");
    int total = n * SHEET_COPIES;
    size_t bytes = (size_t)total * DG_PIXELS * sizeof(float);
    void *handle = NULL, *x = NULL;
    enum dg_status status = be->ops->dataset_attach(be, &s->dataset, &handle);
    if (status == DG_OK)
        status = be->ops->alloc(be, bytes, &x);
    if (status == DG_OK)
        status = be->ops->batch_assemble(be, handle, rows, total, &key, x, NULL);
    if (status == DG_OK)
        status = be->ops->download(be, augmented, x, bytes);
    if (x)
        be->ops->free(be, x);
    if (handle)
        be->ops->dataset_detach(be, handle);
    if (status == DG_OK)
        *sheet_count = n;
    return status;
}

int dg_cmd_report(int argc, char **argv)
{
    static const struct option long_options[] = {
        DG_SCORING_LONG_OPTIONS,
        {"output", required_argument, NULL, 'o'},
        {"all", no_argument, NULL, 'A'},
        {"top", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dg_scoring_args args;
    dg_scoring_args_default(&args);
    const char *output = "report.html";
    int all = 0;
    long top = 48;
    int opt, taken;
    static const char short_options[] = "m:o:qvh";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        if (opt != 'H' && (taken = dg_scoring_option("report", opt, optarg, &args)) != 0) {
            if (taken < 0)
                return 2;
            continue;
        }
        switch (opt) {
        case 'o':
            output = optarg;
            break;
        case 'A':
            all = 1;
            break;
        case 'N':
            if (!dg_cli_parse_int("report", "--top", optarg, 0, 1000, &top))
                return 2;
            break;
        case 'H':
            return dg_cli_usage_error("report", "--held-out is what report does by default on "
                                                "the training file (--all scores every row)");
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return dg_cli_bad_option("report", argv, short_options, long_options);
        }
    }
    int code = dg_scoring_check_operands("report", "LABELLED", argc, &args);
    if (code)
        return code;
    const char *data_path = argv[optind];
    {
        /* the page may not replace an input */
        struct dg_cli_file files[DG_MAX_MEMBERS + 3];
        size_t n = 0;
        files[n++] = (struct dg_cli_file){output, "-o", 1};
        files[n++] = (struct dg_cli_file){data_path, "the LABELLED file", 0};
        files[n++] = (struct dg_cli_file){args.labels_path, "--labels", 0};
        for (int m = 0; m < args.model_path_count; m++)
            files[n++] = (struct dg_cli_file){args.model_paths[m], "the model -m", 0};
        if ((code = dg_cli_check_outputs("report", files, n)) != 0)
            return code;
    }
    struct dg_report_model models[DG_MAX_MEMBERS];
    memset(models, 0, sizeof models);
    struct dg_scoring scoring;
    memset(&scoring, 0, sizeof scoring);
    uint8_t *sheet_images = malloc((size_t)SHEET_IMAGES * DG_PIXELS);
    float *sheet_augmented = malloc((size_t)SHEET_IMAGES * SHEET_COPIES * DG_PIXELS * sizeof(float));
    enum dg_status status =
        sheet_images && sheet_augmented ? DG_OK : dg_error(DG_ERR_NOMEM, "out of memory");
    char selection[512] = "";
    args.held_out = all ? DG_HELD_OUT_NO : DG_HELD_OUT_AUTO;
    double start = now_seconds();
    if (status == DG_OK)
        status = dg_scoring_run(&scoring, &args, data_path);
    double seconds = now_seconds() - start;
    if (status == DG_OK && !scoring.dataset.labels)
        status = dg_error(DG_ERR_INPUT, "%s: has no labels (test layout); a report needs the "
                                        "train layout or --labels",
                          data_path);
    if (status == DG_OK)
        snprintf(selection, sizeof selection, "%s", scoring.selection);
    for (int f = 0; status == DG_OK && f < args.model_path_count; f++)
        models[f] = (struct dg_report_model){args.model_paths[f], scoring.settings[f],
                                             scoring.file_members[f]};
    int sheet_count = 0;
    char augmentation[256] = "";
    if (status == DG_OK)
        status = augmentation_sheet(&scoring, scoring.settings[0], sheet_images, sheet_augmented,
                                    &sheet_count, augmentation, sizeof augmentation);
    if (status == DG_OK) {
        struct dg_report_input in = {
            .models = models,
            .model_count = args.model_path_count,
            .architecture = &scoring.members[0],
            .member_count = scoring.member_count,
            .data_path = data_path,
            .selection = selection,
            .images = scoring.dataset.images,
            .labels = scoring.dataset.labels,
            .row_numbers = scoring.row_numbers,
            .count = scoring.dataset.count,
            .probs = scoring.probs,
            .predicted = scoring.predicted,
            .member_predicted = scoring.member_predicted,
            .tta = args.tta,
            .top = (int)top,
            .sheet_images = sheet_images,
            .sheet_augmented = sheet_augmented,
            .sheet_count = sheet_count,
            .sheet_copies = SHEET_COPIES,
            .augmentation = augmentation,
            .device = scoring.be->description,
            .scoring_seconds = seconds,
        };
        status = dg_report_write(output, &in);
    }
    if (status == DG_OK && strcmp(output, "-") != 0 && !args.quiet)
        fprintf(stderr, "digits: wrote %s (%zu images, %s)\n", output, scoring.dataset.count,
                selection);
    dg_scoring_free(&scoring);
    free(sheet_images);
    free(sheet_augmented);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
