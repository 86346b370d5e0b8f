/* Short names of cuDNN's convolution algorithms (src/cuda/algo_names.h). Built into every
 * build, with or without CUDA: no cuDNN header here; src/cuda/conv.c checks the indices
 * against cudnn.h. */
#include "cuda/algo_names.h"

#include <stdio.h>

/* clang-format off */
/* Indexed by cudnnConvolutionFwdAlgo_t (cuDNN 9: 0..7). */
static const char *const fwd_names[] = {
    [0] = "IMPLICIT_GEMM",
    [1] = "IMPLICIT_PRECOMP_GEMM",
    [2] = "GEMM",
    [3] = "DIRECT",
    [4] = "FFT",
    [5] = "FFT_TILING",
    [6] = "WINOGRAD",
    [7] = "WINOGRAD_NONFUSED",
};

/* Indexed by cudnnConvolutionBwdDataAlgo_t (0..5). */
static const char *const bwd_data_names[] = {
    [0] = "ALGO_0",
    [1] = "ALGO_1",
    [2] = "FFT",
    [3] = "FFT_TILING",
    [4] = "WINOGRAD",
    [5] = "WINOGRAD_NONFUSED",
};

/* Indexed by cudnnConvolutionBwdFilterAlgo_t (0..6). */
static const char *const bwd_filter_names[] = {
    [0] = "ALGO_0",
    [1] = "ALGO_1",
    [2] = "FFT",
    [3] = "ALGO_3",
    [4] = "WINOGRAD",
    [5] = "WINOGRAD_NONFUSED",
    [6] = "FFT_TILING",
};
/* clang-format on */

#define DG_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

const char *dg_cuda_conv_algo_name(enum dg_cuda_conv_pass pass, int algo)
{
    if (algo < 0)
        return NULL;
    switch (pass) {
    case DG_CUDA_PASS_FWD:
        return algo < DG_COUNT(fwd_names) ? fwd_names[algo] : NULL;
    case DG_CUDA_PASS_BWD_DATA:
        return algo < DG_COUNT(bwd_data_names) ? bwd_data_names[algo] : NULL;
    case DG_CUDA_PASS_BWD_FILTER:
        return algo < DG_COUNT(bwd_filter_names) ? bwd_filter_names[algo] : NULL;
    }
    return NULL;
}

/* The name, or "algo N" in `spare` for a value without one. */
static const char *name_or_number(enum dg_cuda_conv_pass pass, int algo, char *spare, size_t size)
{
    const char *name = dg_cuda_conv_algo_name(pass, algo);
    if (name)
        return name;
    snprintf(spare, size, "algo %d", algo);
    return spare;
}

void dg_cuda_conv_algos_text(int fwd, int bwd_data, int bwd_filter, int with_bwd_data, char *out,
                             size_t size)
{
    char spare[3][24];
    const char *f = name_or_number(DG_CUDA_PASS_FWD, fwd, spare[0], sizeof spare[0]);
    const char *d = name_or_number(DG_CUDA_PASS_BWD_DATA, bwd_data, spare[1], sizeof spare[1]);
    const char *w = name_or_number(DG_CUDA_PASS_BWD_FILTER, bwd_filter, spare[2], sizeof spare[2]);
    if (with_bwd_data)
        snprintf(out, size, "%s (bwd-data %s, bwd-filter %s)", f, d, w);
    else
        snprintf(out, size, "%s (bwd-filter %s)", f, w);
}
