/* Shared by predict and eval: load a model and a dataset on a backend and compute the class
 * probabilities (count, 10) of every image. */
#define _POSIX_C_SOURCE 200809L
#include "cli/scoring.h"

#include "digits/io.h"
#include "digits/train.h"

#include "math/augment.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dg_scoring_args_default(struct dg_scoring_args *args)
{
    memset(args, 0, sizeof *args);
    args->batch = 256;
    args->device.device = "auto";
    args->device.math = DG_MATH_FP32;
}

int dg_scoring_option(const char *command, int opt, const char *arg, struct dg_scoring_args *args)
{
    long value;
    switch (opt) {
    case 'm':
        if (args->model_path_count >= DG_MAX_MEMBERS) {
            dg_cli_usage_error(command, "more than %d -m files", DG_MAX_MEMBERS);
            return -1;
        }
        args->model_paths[args->model_path_count++] = arg;
        return 1;
    case 'T':
        args->tta = 1;
        return 1;
    case 'H':
        args->held_out = 1;
        return 1;
    case 'L':
        args->labels_path = arg;
        return 1;
    case 'b':
        return dg_cli_parse_int(command, "--batch", arg, 1, 65536, &args->batch) ? 1 : -1;
    case 't':
        if (!dg_cli_parse_int(command, "--threads", arg, 1, 1024, &value))
            return -1;
        args->device.threads = (int)value;
        return 1;
    case 'd':
        args->device.device = arg;
        return 1;
    case 'M':
        return dg_cli_parse_math(command, arg, &args->device.math) ? 1 : -1;
    case 'l':
        return dg_cli_parse_int(command, "--limit", arg, 1, 1L << 40, &args->limit) ? 1 : -1;
    case 'q':
        args->quiet = 1;
        return 1;
    case 'v':
        dg_cli_verbose = 1;
        return 1;
    default:
        return 0;
    }
}

int dg_scoring_check_operands(const char *command, const char *what, int argc,
                              const struct dg_scoring_args *args)
{
    if (dg_cli_check_quiet_verbose(command, args->quiet))
        return 2;
    if (args->model_path_count == 0)
        return dg_cli_usage_error(command, "missing -m MODEL");
    if (optind >= argc)
        return dg_cli_usage_error(command, "missing the %s file", what);
    if (optind != argc - 1)
        return dg_cli_usage_error(command, "expects one %s file", what);
    return 0;
}

/* The shifts of test-time augmentation (rows, columns); the first is the image itself. */
static const int tta_shifts[DG_TTA_COPIES][2] = {{0, 0}, {-1, 0}, {1, 0}, {0, -1}, {0, 1}};

/* dst = src moved by (dr, dc) whole pixels, the border repeated ("nearest" fill). */
static void shift_images(const uint8_t *src, size_t count, int dr, int dc, uint8_t *dst)
{
    for (size_t n = 0; n < count; n++) {
        const uint8_t *in = src + n * DG_PIXELS;
        uint8_t *out = dst + n * DG_PIXELS;
        for (int r = 0; r < DG_IMAGE_SIDE; r++)
            for (int c = 0; c < DG_IMAGE_SIDE; c++) {
                int sr = r - dr, sc = c - dc;
                sr = sr < 0 ? 0 : (sr >= DG_IMAGE_SIDE ? DG_IMAGE_SIDE - 1 : sr);
                sc = sc < 0 ? 0 : (sc >= DG_IMAGE_SIDE ? DG_IMAGE_SIDE - 1 : sc);
                out[r * DG_IMAGE_SIDE + c] = in[sr * DG_IMAGE_SIDE + sc];
            }
    }
}

static void argmax_rows(const float *probs, size_t count, uint8_t *out)
{
    for (size_t i = 0; i < count; i++) {
        const float *p = probs + i * DG_CLASSES;
        int best = 0;
        for (int k = 1; k < DG_CLASSES; k++)
            if (p[k] > p[best])
                best = k;
        out[i] = (uint8_t)best;
    }
}

/* Every row, numbered from 1, as scored when no split applies. */
static enum dg_status number_rows(struct dg_scoring *s)
{
    size_t count = s->dataset.count;
    s->row_numbers = malloc((count ? count : 1) * sizeof *s->row_numbers);
    if (!s->row_numbers)
        return dg_error(DG_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < count; i++)
        s->row_numbers[i] = (uint32_t)(i + 1);
    return DG_OK;
}

/* Why the held-out rows cannot be told: an error with DG_HELD_OUT_YES; with DG_HELD_OUT_AUTO
 * every row is kept and s->selection says why. */
static enum dg_status no_split(struct dg_scoring *s, int mode, const char *why, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static enum dg_status no_split(struct dg_scoring *s, int mode, const char *why, ...)
{
    char reason[400];
    va_list args;
    va_start(args, why);
    vsnprintf(reason, sizeof reason, why, args);
    va_end(args);
    if (mode == DG_HELD_OUT_YES)
        return dg_error(DG_ERR_INPUT, "%s", reason);
    snprintf(s->selection, sizeof s->selection, "all %zu rows (%.400s)", s->dataset.count, reason);
    return DG_OK;
}

/* Keeps only the validation rows of the model's split (rows, val_split and the split seed as
 * its settings record them), in split order; the data must be the model's training data (its
 * first `rows` rows, by the fingerprint the model records, when it records one). */
static enum dg_status keep_held_out(struct dg_scoring *s, const char *model_path,
                                    const char *data_path, int mode)
{
    const char *rows = dg_settings_value(s->settings[0], "rows"),
               *split = dg_settings_value(s->settings[0], "val_split");
    const char *seed = dg_settings_value(s->settings[0], "split_seed");
    const char *crc = dg_settings_value(s->settings[0], "data_crc32");
    if (seed && strncmp(seed, "per member", 10) == 0)
        return no_split(s, mode,
                        "%s: each member held out its own rows (--member-splits): "
                        "there is no one held-out set",
                        model_path);
    if (!seed || !strchr("0123456789", *seed))
        seed = dg_settings_value(s->settings[0],
                                 "seed"); /* models from before split_seed ("shared") */
    if (!rows || !split || !seed)
        return no_split(s, mode,
                        "%s: the model does not record its split (rows, val_split, "
                        "seed): --held-out cannot tell its validation rows",
                        model_path);
    size_t count = (size_t)strtoull(rows, NULL, 10);
    if (count > s->dataset.count || count == 0)
        return no_split(s, mode,
                        "%s: %zu rows, the model was trained on %zu: not its "
                        "training file",
                        data_path, s->dataset.count, count);
    if (crc) {
        struct dg_dataset first = s->dataset;
        first.count = count;
        uint64_t fingerprint_rows;
        uint32_t fingerprint;
        dg_dataset_fingerprint(&first, &fingerprint_rows, &fingerprint);
        if (fingerprint != (uint32_t)strtoul(crc, NULL, 16))
            return no_split(s, mode,
                            "%s: not the model's training data (its first %zu rows "
                            "have CRC32 %08x, the model's %.8s)",
                            data_path, count, (unsigned)fingerprint, crc);
    }
    if (strtod(split, NULL) <= 0.0)
        return no_split(s, mode, "%s: trained without validation rows (val_split %.*s)", model_path,
                        (int)strcspn(split, "\n"), split);
    uint32_t *order = malloc(count * sizeof *order);
    if (!order)
        return dg_error(DG_ERR_NOMEM, "out of memory");
    size_t held = 0;
    dg_train_split(strtoull(seed, NULL, 10), count, strtof(split, NULL), order, &held);
    if (held == 0) {
        free(order);
        return no_split(s, mode, "%s: trained without validation rows (val_split %.*s)", model_path,
                        (int)strcspn(split, "\n"), split);
    }
    /* gathered into fresh buffers from the dataset's allocator */
    struct dg_allocator *a = &s->dataset.allocator;
    uint8_t *images = a->alloc(held * DG_PIXELS, a->ctx);
    uint8_t *labels = s->dataset.labels ? a->alloc(held, a->ctx) : NULL;
    if (!images || (s->dataset.labels && !labels)) {
        free(order);
        if (images)
            a->free(images, a->ctx);
        return dg_error(DG_ERR_NOMEM, "out of memory for %zu held-out rows", held);
    }
    for (size_t i = 0; i < held; i++) {
        memcpy(images + i * DG_PIXELS, s->dataset.images + (size_t)order[i] * DG_PIXELS, DG_PIXELS);
        if (labels)
            labels[i] = s->dataset.labels[order[i]];
        s->row_numbers[i] = order[i] + 1;
    }
    free(order);
    a->free(s->dataset.images, a->ctx);
    if (s->dataset.labels)
        a->free(s->dataset.labels, a->ctx);
    snprintf(s->selection, sizeof s->selection,
             "the %zu validation rows held out in training (of its %zu rows: val_split %.*s, "
             "split seed %.*s)",
             held, count, (int)strcspn(split, "\n"), split, (int)strcspn(seed, "\n"), seed);
    s->dataset.images = images;
    s->dataset.labels = labels;
    s->dataset.count = held;
    return DG_OK;
}

/* The models of every -m file (in order) and the backend. */
static enum dg_status open_models(struct dg_scoring *s, const struct dg_scoring_args *args)
{
    enum dg_status status = DG_OK;
    const size_t size = (size_t)1 << 20; /* the largest settings text a model file holds */
    char *text = malloc(size);
    if (!text)
        return dg_error(DG_ERR_NOMEM, "out of memory");
    for (int f = 0; f < args->model_path_count && status == DG_OK; f++) {
        int got = 0;
        status = dg_ensemble_load(args->model_paths[f], s->members + s->member_count,
                                  DG_MAX_MEMBERS - s->member_count, &got, text, size);
        s->member_count += got;
        s->file_members[f] = got;
        if (status == DG_OK && !(s->settings[f] = strdup(text)))
            status = dg_error(DG_ERR_NOMEM, "out of memory");
    }
    free(text);
    return status == DG_OK ? dg_cli_open_backend(&args->device, args->quiet, &s->be) : status;
}

static enum dg_status score(struct dg_scoring *s, const struct dg_scoring_args *args);

enum dg_status dg_scoring_run(struct dg_scoring *s, const struct dg_scoring_args *args,
                              const char *data_path)
{
    enum dg_status status;
    memset(s, 0, sizeof *s);
    if ((status = open_models(s, args)) != DG_OK)
        return status;
    if ((status = dg_dataset_load_threads(data_path, args->labels_path, &s->be->host_allocator,
                                          args->device.threads, &s->dataset)) != DG_OK)
        return status;
    if (args->limit > 0)
        dg_dataset_truncate(&s->dataset, (size_t)args->limit);
    snprintf(s->selection, sizeof s->selection, "all %zu rows", s->dataset.count);
    if ((status = number_rows(s)) != DG_OK)
        return status;
    if (args->held_out &&
        (status = keep_held_out(s, args->model_paths[0], data_path, args->held_out)) != DG_OK)
        return status;
    return score(s, args);
}

enum dg_status dg_scoring_run_dataset(struct dg_scoring *s, const struct dg_scoring_args *args,
                                      struct dg_dataset *dataset)
{
    memset(s, 0, sizeof *s);
    s->dataset = *dataset;
    memset(dataset, 0, sizeof *dataset);
    if (args->held_out)
        return dg_error(DG_ERR_USAGE, "--held-out needs the model's training file");
    snprintf(s->selection, sizeof s->selection, "all %zu images", s->dataset.count);
    enum dg_status status = number_rows(s);
    if (status == DG_OK)
        status = open_models(s, args);
    return status == DG_OK ? score(s, args) : status;
}

/* Every member on every copy (TTA) of every image of s->dataset: s->probs, s->predicted,
 * s->member_predicted. */
static enum dg_status score(struct dg_scoring *s, const struct dg_scoring_args *args)
{
    enum dg_status status = DG_OK;
    size_t count = s->dataset.count, values = count * DG_CLASSES;
    int copies = args->tta ? DG_TTA_COPIES : 1;
    s->probs = calloc(values ? values : 1, sizeof(float));
    s->predicted = malloc(count ? count : 1);
    s->member_predicted = malloc((size_t)s->member_count * count + 1);
    float *one = malloc((values ? values : 1) * sizeof(float));
    float *member = calloc(values ? values : 1, sizeof(float));
    double *sum = calloc(values ? values : 1, sizeof(double));
    double *member_sum = calloc(values ? values : 1, sizeof(double));
    uint8_t *shifted = args->tta ? malloc(count * DG_PIXELS + 1) : NULL;
    if (!s->probs || !s->predicted || !s->member_predicted || !one || !member || !sum ||
        !member_sum || (args->tta && !shifted)) {
        status = dg_error(DG_ERR_NOMEM, "out of memory for %zu predictions", count);
        goto done;
    }
    /* every member on every copy; sums in double, in a fixed order (member, then copy) */
    for (int m = 0; m < s->member_count; m++) {
        memset(member_sum, 0, values * sizeof(double));
        for (int c = 0; c < copies; c++) {
            struct dg_dataset view = s->dataset;
            if (c > 0) {
                shift_images(s->dataset.images, count, tta_shifts[c][0], tta_shifts[c][1], shifted);
                view.images = shifted;
            }
            if ((status = dg_predict(s->be, &s->members[m], &view, (int)args->batch, one)) != DG_OK)
                goto done;
            for (size_t i = 0; i < values; i++)
                member_sum[i] += one[i];
        }
        for (size_t i = 0; i < values; i++) {
            sum[i] += member_sum[i];
            member[i] = (float)(member_sum[i] / copies);
        }
        argmax_rows(member, count, s->member_predicted + (size_t)m * count);
    }
    /* one model, no copies: its probabilities exactly as dg_predict gave them */
    for (size_t i = 0; i < values; i++)
        s->probs[i] = s->member_count * copies == 1
                          ? one[i]
                          : (float)(sum[i] / ((double)s->member_count * copies));
    argmax_rows(s->probs, count, s->predicted);
done:
    free(one);
    free(member);
    free(sum);
    free(member_sum);
    free(shifted);
    return status;
}

void dg_scoring_free(struct dg_scoring *s)
{
    free(s->row_numbers);
    for (int f = 0; f < DG_MAX_MEMBERS; f++)
        free(s->settings[f]);
    free(s->probs);
    free(s->predicted);
    free(s->member_predicted);
    dg_dataset_free(&s->dataset);
    for (int m = 0; m < s->member_count; m++)
        dg_model_free(&s->members[m]);
    if (s->be)
        dg_backend_destroy(s->be);
    memset(s, 0, sizeof *s);
}
