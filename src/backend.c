/* Backend-independent helpers over the op vtable (include/digits/backend.h), and opening a
 * backend by its name. */
#include "digits/backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dg_backend_destroy(struct dg_backend *be)
{
    if (be)
        be->ops->destroy(be);
}

static const char *const math_names[] = {"fp32", "tf32", "bf16"};

const char *dg_math_name(enum dg_math math)
{
    return (unsigned)math < sizeof math_names / sizeof math_names[0] ? math_names[math] : "?";
}

int dg_math_from_name(const char *name, enum dg_math *math)
{
    for (unsigned i = 0; i < sizeof math_names / sizeof math_names[0]; i++)
        if (strcmp(name, math_names[i]) == 0) {
            *math = (enum dg_math)i;
            return 1;
        }
    return 0;
}

/* The ordinal of "cuda" (0) or "cuda:N"; -1 when name is neither. */
static long cuda_ordinal(const char *name)
{
    if (strncmp(name, "cuda", 4) != 0)
        return -1;
    if (name[4] == '\0')
        return 0;
    if (name[4] != ':')
        return -1;
    char *end = NULL;
    errno = 0;
    long ordinal = strtol(name + 5, &end, 10);
    if (errno || end == name + 5 || *end != '\0' || ordinal < 0 || ordinal > 1023)
        return -1;
    return ordinal;
}

int dg_backend_name_valid(const char *device)
{
    return !device || strcmp(device, "auto") == 0 || strcmp(device, "cpu") == 0 ||
           cuda_ordinal(device) >= 0;
}

/* The CPU backend with the spec's math: bf16 where the CPU has a bf16 unit (refused, saying
 * what is missing, where it has not); tf32 is CUDA's and leaves the CPU at fp32. */
static enum dg_status open_cpu(const struct dg_backend_spec *spec, struct dg_backend **out)
{
    enum dg_status status = dg_backend_cpu_create(spec->threads, out);
    if (status != DG_OK || spec->math != DG_MATH_BF16)
        return status;
    if ((status = dg_backend_cpu_set_math(*out, DG_MATH_BF16)) != DG_OK) {
        dg_backend_destroy(*out);
        *out = NULL;
    }
    return status;
}

enum dg_status dg_backend_open(const struct dg_backend_spec *spec, char *fallback,
                               size_t fallback_size, struct dg_backend **out)
{
    const char *name = spec->device ? spec->device : "auto";
    struct dg_cuda_options cuda = {0, spec->math, spec->deterministic, spec->dataset_budget_bytes};
    if (fallback && fallback_size)
        fallback[0] = '\0';
    if (strcmp(name, "cpu") == 0)
        return open_cpu(spec, out);
    if (strncmp(name, "cuda", 4) == 0 && (name[4] == '\0' || name[4] == ':')) {
        long ordinal = cuda_ordinal(name);
        if (ordinal < 0)
            return dg_error(DG_ERR_USAGE, "--device: bad CUDA device '%s' (cuda:N)", name);
        cuda.device = (int)ordinal;
        return dg_backend_cuda_create(&cuda, out);
    }
    if (strcmp(name, "auto") != 0)
        return dg_error(DG_ERR_USAGE, "--device expects auto, cpu, cuda or cuda:N, got '%s'", name);
    char reason[256] = "";
    if (dg_cuda_emulated())
        snprintf(reason, sizeof reason,
                 "the CUDA device of this build is the emulated test "
                 "device; --device cuda uses it");
    else if (dg_cuda_probe(reason, sizeof reason) == DG_OK &&
             dg_backend_cuda_create(&cuda, out) == DG_OK)
        return DG_OK;
    if (!reason[0])
        snprintf(reason, sizeof reason, "%s", dg_error_message());
    dg_error_clear();
    if (fallback && fallback_size)
        snprintf(fallback, fallback_size, "%s", reason);
    return open_cpu(spec, out);
}
