/* What every kernel file shares: the block size and the grid of a grid-stride launch (host
 * side, for the launchers; the kernels themselves use blockDim / gridDim), and the bias + ReLU
 * epilogue of one element. */
#ifndef DG_KERNELS_COMMON_CUH
#define DG_KERNELS_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>

/* Threads per block of every kernel (the shared-memory reductions assume it: a power of 2). */
#define DG_BLOCK 256
/* The most blocks a grid-stride launch uses; each thread then loops over the rest. */
#define DG_MAX_BLOCKS 65535

/* Blocks for a grid-stride loop over `count` elements: one thread per element, at least one
 * block, at most DG_MAX_BLOCKS. */
static inline unsigned dg_grid_for(size_t count)
{
    size_t blocks = (count + DG_BLOCK - 1) / DG_BLOCK;
    if (blocks == 0)
        blocks = 1;
    return (unsigned)(blocks < DG_MAX_BLOCKS ? blocks : DG_MAX_BLOCKS);
}

/* The bias + ReLU epilogue of element i of an (n, c, hw) tensor: v + bias[channel] (bias may be
 * NULL), then ReLU when relu != 0 (kernels/bias_relu.cu, kernels/bf16.cu). */
static __device__ inline float dg_bias_act_value(float v, const float *bias, size_t i, int c,
                                                 int hw, int relu)
{
    if (bias)
        v = v + bias[(i / (size_t)hw) % (size_t)c];
    if (relu)
        v = v > 0.0f ? v : 0.0f;
    return v;
}

#endif
