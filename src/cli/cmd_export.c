/* digits export: a model file as ONNX (run it with onnxruntime and the like) or as safetensors
 * (the weights under PyTorch's names and layouts); the format is told by the output's name. */
#include "cli/cli.h"

#include "digits/io.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *usage_text =
    "usage: digits export -m model.dgt -o FILE.onnx|FILE.safetensors\n"
    "\n"
    "Writes the model as ONNX or as safetensors, told by the output's extension.\n"
    "  .onnx         ONNX opset 13: input \"input\" (N, 1, 28, 28) float32 = pixel / 255,\n"
    "                output \"probabilities\" (N, 10), softmax included; dropout left out\n"
    "  .safetensors  the weights, F32, PyTorch's names and layouts: conv1.weight (out, in, k,\n"
    "                k), conv1.bias, ..., conv4, dense1.weight (out, in), dense1.bias, dense2;\n"
    "                the architecture and the training settings in __metadata__\n"
    "`digits import` reads such a safetensors file back.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE     model file (required)\n"
    "  -o, --output FILE    the file to write (required)\n"
    "  -q, --quiet          no line saying what was written\n"
    "  -h, --help           this text\n";

enum format { FORMAT_ONNX, FORMAT_SAFETENSORS, FORMAT_UNKNOWN };

static enum format format_of(const char *path)
{
    size_t n = strlen(path);
    if (n > 5 && strcasecmp(path + n - 5, ".onnx") == 0)
        return FORMAT_ONNX;
    if (n > 12 && strcasecmp(path + n - 12, ".safetensors") == 0)
        return FORMAT_SAFETENSORS;
    return FORMAT_UNKNOWN;
}

int dg_cmd_export(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"model", required_argument, NULL, 'm'},
        {"output", required_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_path = NULL, *output = NULL;
    int quiet = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:o:qh", long_options, NULL)) != -1) {
        switch (opt) {
        case 'm':
            model_path = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("(see `digits export --help`)\n", stderr);
            return 2;
        }
    }
    if (optind != argc)
        return dg_cli_usage_error("export", "unexpected argument '%s'", argv[optind]);
    if (!model_path)
        return dg_cli_usage_error("export", "missing -m MODEL (the model file to export)");
    if (!output)
        return dg_cli_usage_error("export", "missing -o FILE (FILE.onnx or FILE.safetensors)");
    enum format format = format_of(output);
    if (format == FORMAT_UNKNOWN)
        return dg_cli_usage_error("export",
                                  "cannot tell the format of '%s': the output's name "
                                  "must end in .onnx or .safetensors",
                                  output);

    /* the model file holds at most 1 MiB of settings */
    size_t settings_size = ((size_t)1 << 20) + 1;
    char *settings = malloc(settings_size);
    if (!settings)
        return dg_cli_fail(dg_error(DG_ERR_NOMEM, "out of memory"));
    struct dg_model model;
    enum dg_status status = dg_model_load(model_path, &model, settings, settings_size);
    if (status == DG_OK) {
        status = format == FORMAT_ONNX ? dg_export_onnx(output, &model, settings)
                                       : dg_export_safetensors(output, &model, settings);
        if (status == DG_OK && !quiet)
            fprintf(stderr, "digits: wrote %s (%s, %zu parameters)\n", output,
                    format == FORMAT_ONNX ? "ONNX opset 13" : "safetensors F32", model.param_count);
        dg_model_free(&model);
    }
    free(settings);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
