/* Shared by predict and eval: load a model and a dataset on a backend and compute the class
 * probabilities (count, 10) of every image. */
#include "cli/scoring.h"

#include "digits/io.h"
#include "digits/train.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

void dg_scoring_args_default(struct dg_scoring_args *args)
{
    memset(args, 0, sizeof *args);
    args->batch = 256;
    args->device.spec = "auto";
    args->device.math = DG_CUDA_MATH_FP32;
}

int dg_scoring_option(const char *command, int opt, const char *arg, struct dg_scoring_args *args)
{
    long value;
    switch (opt) {
    case 'm':
        args->model_path = arg;
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
        args->device.spec = arg;
        return 1;
    default:
        return 0;
    }
}

int dg_scoring_check_operands(const char *command, const char *what, int argc,
                              const struct dg_scoring_args *args)
{
    if (!args->model_path)
        return dg_cli_usage_error(command, "missing -m MODEL");
    if (optind >= argc)
        return dg_cli_usage_error(command, "missing the %s file", what);
    if (optind != argc - 1)
        return dg_cli_usage_error(command, "expects one %s file", what);
    return 0;
}

enum dg_status dg_scoring_run(struct dg_scoring *s, const struct dg_scoring_args *args,
                              const char *data_path)
{
    enum dg_status status;
    memset(s, 0, sizeof *s);
    if ((status = dg_model_load(args->model_path, &s->model, s->settings, sizeof s->settings)) !=
        DG_OK)
        return status;
    if ((status = dg_cli_open_backend(&args->device, 0, &s->be)) != DG_OK)
        return status;
    if ((status = dg_dataset_load_threads(data_path, args->labels_path, &s->be->host_allocator,
                                          args->device.threads, &s->dataset)) != DG_OK)
        return status;
    s->probs = malloc(s->dataset.count * DG_CLASSES * sizeof(float));
    s->predicted = malloc(s->dataset.count);
    if (!s->probs || !s->predicted)
        return dg_error(DG_ERR_NOMEM, "out of memory for %zu predictions", s->dataset.count);
    if ((status = dg_predict(s->be, &s->model, &s->dataset, (int)args->batch, s->probs)) != DG_OK)
        return status;
    for (size_t i = 0; i < s->dataset.count; i++) {
        const float *p = s->probs + i * DG_CLASSES;
        int best = 0;
        for (int k = 1; k < DG_CLASSES; k++)
            if (p[k] > p[best])
                best = k;
        s->predicted[i] = (uint8_t)best;
    }
    return DG_OK;
}

void dg_scoring_free(struct dg_scoring *s)
{
    free(s->probs);
    free(s->predicted);
    dg_dataset_free(&s->dataset);
    dg_model_free(&s->model);
    if (s->be)
        dg_backend_destroy(s->be);
    memset(s, 0, sizeof *s);
}
