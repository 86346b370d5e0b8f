/* Helpers shared by the commands: strict option parsing and backend selection. */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dg_cli_parse_int(const char *command, const char *option, const char *text, long min,
                     long max, long *value)
{
    char *end = NULL;
    errno = 0;
    long parsed = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || parsed < min || parsed > max) {
        dg_cli_usage_error(command, "%s expects an integer in %ld..%ld, got '%s'", option, min,
                           max, text);
        return 0;
    }
    *value = parsed;
    return 1;
}

int dg_cli_parse_float(const char *command, const char *option, const char *text, double min,
                       double max, double *value)
{
    char *end = NULL;
    errno = 0;
    double parsed = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(parsed) || parsed < min ||
        parsed > max) {
        dg_cli_usage_error(command, "%s expects a number in [%g, %g], got '%s'", option, min,
                           max, text);
        return 0;
    }
    *value = parsed;
    return 1;
}

int dg_cli_parse_u64(const char *command, const char *option, const char *text, uint64_t *value)
{
    char *end = NULL;
    errno = 0;
    unsigned long long parsed = strtoull(text, &end, 10);
    if (errno || end == text || *end != '\0' || text[0] == '-' || text[0] == '+') {
        dg_cli_usage_error(command, "%s expects a non-negative integer, got '%s'", option, text);
        return 0;
    }
    *value = (uint64_t)parsed;
    return 1;
}

int dg_cli_parse_math(const char *command, const char *text, enum dg_cuda_math *math)
{
    if (strcmp(text, "fp32") == 0)
        *math = DG_CUDA_MATH_FP32;
    else if (strcmp(text, "tf32") == 0)
        *math = DG_CUDA_MATH_TF32;
    else {
        dg_cli_usage_error(command, "--math expects fp32 or tf32, got '%s'", text);
        return 0;
    }
    return 1;
}

enum dg_status dg_cli_open_backend(const struct dg_cli_device *device, int quiet,
                                   struct dg_backend **out)
{
    const char *spec = device->spec ? device->spec : "auto";
    struct dg_cuda_options cuda = {0, device->math, device->deterministic,
                                   device->dataset_budget_bytes};
    if (strcmp(spec, "cpu") == 0)
        return dg_backend_cpu_create(device->threads, out);
    if (strncmp(spec, "cuda", 4) == 0 && (spec[4] == '\0' || spec[4] == ':')) {
        if (spec[4] == ':') {
            char *end = NULL;
            errno = 0;
            long ordinal = strtol(spec + 5, &end, 10);
            if (errno || end == spec + 5 || *end != '\0' || ordinal < 0 || ordinal > 1023)
                return dg_error(DG_ERR_USAGE, "--device: bad CUDA device '%s' (cuda:N)", spec);
            cuda.device = (int)ordinal;
        }
        return dg_backend_cuda_create(&cuda, out);
    }
    if (strcmp(spec, "auto") == 0) {
        char reason[256] = "";
        if (dg_cuda_emulated())
            snprintf(reason, sizeof reason, "the CUDA device of this build is the emulated test "
                                            "device; --device cuda uses it");
        else if (dg_cuda_probe(reason, sizeof reason) == DG_OK &&
                 dg_backend_cuda_create(&cuda, out) == DG_OK)
            return DG_OK;
        if (!reason[0])
            snprintf(reason, sizeof reason, "%s", dg_error_message());
        if (!quiet)
            fprintf(stderr, "digits: no usable GPU (%s): running on the CPU\n", reason);
        dg_error_clear();
        return dg_backend_cpu_create(device->threads, out);
    }
    return dg_error(DG_ERR_USAGE, "--device expects auto, cpu, cuda or cuda:N, got '%s'", spec);
}

static void count_device_line(const char *line, void *ctx)
{
    if (strncmp(line, "CUDA device ", 12) == 0 && isdigit((unsigned char)line[12]))
        ++*(int *)ctx;
}

int dg_cli_cuda_device_count(char *reason, size_t reason_size)
{
    if (reason_size)
        reason[0] = '\0';
    if (dg_cuda_probe(reason, reason_size) != DG_OK) {
        dg_error_clear();
        return 0;
    }
    int count = 0;
    dg_cuda_describe(count_device_line, &count);
    if (count == 0)
        snprintf(reason, reason_size, "the driver reports no CUDA device");
    return count;
}
