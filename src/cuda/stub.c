/* The CUDA entry points of a build without the CUDA backend: each says so. */
#include "digits/backend.h"

#include <stdio.h>

int dg_cuda_built(void)
{
    return 0;
}

int dg_cuda_emulated(void)
{
    return 0;
}

int dg_cuda_driver_present(void)
{
    return 0;
}

enum dg_status dg_cuda_probe(char *reason, size_t reason_size)
{
    snprintf(reason, reason_size, "this build of digits has no CUDA backend");
    return DG_ERR_DEVICE;
}

enum dg_status dg_backend_cuda_create(const struct dg_cuda_options *options,
                                      struct dg_backend **out)
{
    (void)options;
    *out = NULL;
    return dg_error(DG_ERR_DEVICE, "this build of digits has no CUDA backend "
                                   "(configure with the CUDA toolkit and cuDNN installed)");
}

void dg_cuda_describe(void (*print_line)(const char *line, void *ctx), void *ctx)
{
    print_line("CUDA: not built (configure with the CUDA toolkit and cuDNN installed)", ctx);
}
