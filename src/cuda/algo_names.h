/* Short names of cuDNN's convolution algorithms, for the `conv_algo_name` vtable entry of the
 * CUDA backend (what `digits train`, `bench` and `compare` print). A name is the suffix of
 * cuDNN's enum value: CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM is
 * "IMPLICIT_PRECOMP_GEMM", CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 is "ALGO_1", so each can be looked
 * up in cuDNN's documentation as it is. Needs no CUDA header: the tables are indexed by cuDNN's
 * values (src/cuda/conv.c asserts that they match cudnn.h), so every build and its tests can
 * call these. */
#ifndef DG_CUDA_ALGO_NAMES_H
#define DG_CUDA_ALGO_NAMES_H

#include <stddef.h>

/* The three passes of a convolution, in the order of src/cuda/conv.c's enum conv_direction. */
enum dg_cuda_conv_pass {
    DG_CUDA_PASS_FWD,        /* cudnnConvolutionFwdAlgo_t */
    DG_CUDA_PASS_BWD_DATA,   /* cudnnConvolutionBwdDataAlgo_t */
    DG_CUDA_PASS_BWD_FILTER, /* cudnnConvolutionBwdFilterAlgo_t */
};

/* The name of algorithm value `algo` of `pass`; NULL for a value cuDNN 9 does not define. */
const char *dg_cuda_conv_algo_name(enum dg_cuda_conv_pass pass, int algo);

/* One convolution's algorithms as the CPU backend words them: the forward algorithm, then the
 * backward ones in parentheses, "IMPLICIT_PRECOMP_GEMM (bwd-data ALGO_1, bwd-filter ALGO_1)";
 * with_bwd_data = 0 (the first layer) leaves backward-data out: "IMPLICIT_GEMM (bwd-filter
 * ALGO_1)". An undefined value reads "algo N". Truncated to `size` like snprintf. */
void dg_cuda_conv_algos_text(int fwd, int bwd_data, int bwd_filter, int with_bwd_data, char *out,
                             size_t size);

#endif
