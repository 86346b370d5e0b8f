/* digits import: a safetensors file (written by `digits export`, or by PyTorch for a network of
 * this architecture or an ensemble of them) into a model or ensemble file. Every tensor's name,
 * dtype, shape and place in the file is checked first; the message of a refusal names the
 * tensor and what is wrong. */
#include "cli/cli.h"

#include "digits/io.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: digits import WEIGHTS.safetensors -o model.dgt\n"
    "\n"
    "Reads the weights of the reference network from a safetensors file (F32, PyTorch's names\n"
    "and layouts, as `digits export` writes them) and writes a model file.\n"
    "Tensors: conv1.weight (32, 1, 5, 5), conv1.bias (32), conv2.weight (32, 32, 5, 5),\n"
    "conv2.bias, conv3.weight (64, 32, 3, 3), conv3.bias, conv4.weight (64, 64, 3, 3),\n"
    "conv4.bias, dense1.weight (256, 3136), dense1.bias, dense2.weight (10, 256), dense2.bias;\n"
    "fc1 / fc2 are taken for dense1 / dense2. Nothing else may be in the file.\n"
    "An ensemble: every tensor as members.M.NAME (M = 0, 1, ... without gaps, at most 64\n"
    "members; the state_dict of an nn.ModuleList named members), each member complete; it is\n"
    "written as an ensemble model file (one member: a plain model file). A metadata\n"
    "digits.members, if any, must be the member count.\n"
    "The model's settings are those in the file's metadata (digits.settings), if any, and a\n"
    "line imported_from=WEIGHTS.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE    model file to write (required)\n"
    "  -q, --quiet          no line saying what was written\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits import model.safetensors -o model.dgt\n"
    "  digits import pytorch_weights.safetensors -o model.dgt -q\n";

int dg_cmd_import(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"output", required_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *output = NULL;
    int quiet = 0, opt;
    static const char short_options[] = "o:qh";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        switch (opt) {
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
            return dg_cli_bad_option("import", argv, short_options, long_options);
        }
    }
    if (optind >= argc)
        return dg_cli_usage_error("import", "missing the WEIGHTS.safetensors file to read");
    if (optind != argc - 1)
        return dg_cli_usage_error("import", "unexpected argument '%s'", argv[optind + 1]);
    if (!output)
        return dg_cli_usage_error("import", "missing -o FILE (the model file to write)");
    const char *input = argv[optind];
    const struct dg_cli_file files[2] = {{output, "-o", 1}, {input, "the WEIGHTS file", 0}};
    int code = dg_cli_check_outputs("import", files, 2);
    if (code)
        return code;

    struct dg_model *members = calloc(DG_MAX_MEMBERS, sizeof *members);
    if (!members)
        return dg_cli_fail(dg_error(DG_ERR_NOMEM, "out of memory"));
    char *stored = NULL, *settings = NULL;
    int count = 0;
    enum dg_status status =
        dg_import_safetensors_ensemble(input, members, DG_MAX_MEMBERS, &count, &stored);
    if (status != DG_OK) {
        free(members);
        return dg_cli_fail(status);
    }
    size_t n = (stored ? strlen(stored) : 0) + strlen(input) + 32;
    settings = malloc(n);
    if (!settings) {
        status = dg_error(DG_ERR_NOMEM, "out of memory");
    } else {
        const char *before = stored ? stored : "";
        size_t len = strlen(before);
        snprintf(settings, n, "%s%simported_from=%s\n", before,
                 len && before[len - 1] != '\n' ? "\n" : "", input);
        status = dg_ensemble_save(output, members, count, settings);
    }
    if (status == DG_OK && !quiet) {
        if (count == 1)
            fprintf(stderr, "digits: wrote %s (%zu parameters from %s)\n", output,
                    members[0].param_count, input);
        else
            fprintf(stderr,
                    "digits: wrote %s (an ensemble of %d members, %zu parameters each, from "
                    "%s)\n",
                    output, count, members[0].param_count, input);
    }
    free(settings);
    free(stored);
    for (int m = 0; m < count; m++)
        dg_model_free(&members[m]);
    free(members);
    return status == DG_OK ? 0 : dg_cli_fail(status);
}
