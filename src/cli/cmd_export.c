/* digits export: a model or ensemble file (or several, combined) as ONNX (run it with onnxruntime
 * and the like) or as safetensors (the weights under PyTorch's names and layouts); the format is
 * told by the output's name. */
#include "cli/cli.h"

#include "digits/io.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *usage_text =
    "usage: digits export -m model.dgt [-m model2.dgt ...] -o FILE.onnx|FILE.safetensors\n"
    "\n"
    "Writes the model, or the ensemble, as ONNX or as safetensors, told by the output's\n"
    "extension.\n"
    "  .onnx         ONNX opset 13: input \"input\" (N, 1, 28, 28) float32 = pixel / 255,\n"
    "                output \"probabilities\" (N, 10), softmax included; dropout left out\n"
    "  .safetensors  the weights, F32, PyTorch's names and layouts: conv1.weight (out, in, k,\n"
    "                k), conv1.bias, ..., conv4, dense1.weight (out, in), dense1.bias, dense2;\n"
    "                the architecture and the training settings in __metadata__\n"
    "An ensemble (a file of several members, or several -m: their members in order, as\n"
    "`digits predict` combines them) is written as one file: ONNX, one model that runs every\n"
    "member on the input (names members.M.*) and outputs the mean of their probabilities;\n"
    "safetensors, member M's tensors as members.M.conv1.weight, ... (an nn.ModuleList named\n"
    "members). Both record the member count as metadata digits.members. One model is written\n"
    "without either. The settings are the first file's (plus a combined_from= line per file\n"
    "when -m is given several times).\n"
    "`digits import` reads such a safetensors file back.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE     model or ensemble file (required; repeat to combine, at most 64\n"
    "                       members in all)\n"
    "  -o, --output FILE    the file to write (required)\n"
    "  -q, --quiet          no line saying what was written\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits export -m model.dgt -o model.onnx\n"
    "  digits export -m model.dgt -o model.safetensors\n"
    "  digits export -m a.dgt -m b.dgt -o ensemble.onnx\n";

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
    const char *model_paths[DG_MAX_MEMBERS];
    int model_path_count = 0;
    const char *output = NULL;
    int quiet = 0, opt;
    static const char short_options[] = "m:o:qh";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        switch (opt) {
        case 'm':
            if (model_path_count >= DG_MAX_MEMBERS)
                return dg_cli_usage_error("export", "more than %d -m files", DG_MAX_MEMBERS);
            model_paths[model_path_count++] = optarg;
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
            return dg_cli_bad_option("export", argv, short_options, long_options);
        }
    }
    if (optind != argc)
        return dg_cli_usage_error("export", "unexpected argument '%s'", argv[optind]);
    if (model_path_count == 0)
        return dg_cli_usage_error("export", "missing -m MODEL (the model file to export)");
    if (!output)
        return dg_cli_usage_error("export", "missing -o FILE (FILE.onnx or FILE.safetensors)");
    enum format format = format_of(output);
    if (format == FORMAT_UNKNOWN)
        return dg_cli_usage_error("export",
                                  "cannot tell the format of '%s': the output's name "
                                  "must end in .onnx or .safetensors",
                                  output);
    struct dg_cli_file files[DG_MAX_MEMBERS + 1];
    files[0] = (struct dg_cli_file){output, "-o", 1};
    for (int f = 0; f < model_path_count; f++)
        files[f + 1] = (struct dg_cli_file){model_paths[f], "the model -m", 0};
    int code = dg_cli_check_outputs("export", files, (size_t)model_path_count + 1);
    if (code)
        return code;

    /* the model file holds at most 1 MiB of settings; several -m add a line each */
    size_t settings_size = ((size_t)1 << 20) + 1, extra = 0;
    if (model_path_count > 1)
        for (int f = 0; f < model_path_count; f++)
            extra += strlen(model_paths[f]) + 32;
    char *settings = malloc(settings_size + extra);
    struct dg_model *members = calloc(DG_MAX_MEMBERS, sizeof *members);
    if (!settings || !members) {
        free(settings);
        free(members);
        return dg_cli_fail(dg_error(DG_ERR_NOMEM, "out of memory"));
    }
    /* every file's members in order, as predict combines them; the first file's settings */
    int count = 0;
    enum dg_status status = DG_OK;
    for (int f = 0; f < model_path_count && status == DG_OK; f++) {
        int got = 0;
        status = dg_ensemble_load(model_paths[f], members + count, DG_MAX_MEMBERS - count, &got,
                                  f == 0 ? settings : NULL, f == 0 ? settings_size : 0);
        count += got;
    }
    if (status == DG_OK && model_path_count > 1) {
        size_t len = strlen(settings);
        if (len && settings[len - 1] != '\n')
            settings[len++] = '\n';
        for (int f = 0; f < model_path_count; f++)
            len += (size_t)snprintf(settings + len, settings_size + extra - len,
                                    "combined_from=%s\n", model_paths[f]);
    }
    if (status == DG_OK) {
        status = format == FORMAT_ONNX
                     ? dg_export_onnx_ensemble(output, members, count, settings)
                     : dg_export_safetensors_ensemble(output, members, count, settings);
        if (status == DG_OK && !quiet) {
            const char *what = format == FORMAT_ONNX ? "ONNX opset 13" : "safetensors F32";
            if (count == 1)
                fprintf(stderr, "digits: wrote %s (%s, %zu parameters)\n", output, what,
                        members[0].param_count);
            else
                fprintf(stderr,
                        "digits: wrote %s (%s, an ensemble of %d members, %zu parameters "
                        "each)\n",
                        output, what, count, members[0].param_count);
        }
    }
    for (int m = 0; m < count; m++)
        dg_model_free(&members[m]);
    free(members);
    free(settings);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
