/* The conversions of `--math bf16` on the GPU: float32 operands rounded to bf16 before a cuDNN
 * convolution or a cuBLAS GemmEx (the rounding of src/math/bf16.h, the CPU's), and bf16
 * results widened back to float32, with the bias + ReLU epilogue of the forward pass fused.
 * One thread per element with grid-stride loops. */
#include "math/bf16.h"
#include "common.cuh"
#include "launchers.h"

__global__ void to_bf16_kernel(size_t count, const float *in, uint16_t *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = dg_bf16_round(in[i]);
}

extern "C" cudaError_t dg_launch_to_bf16(size_t count, const float *in, uint16_t *out,
                                         cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    to_bf16_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, in, out);
    return cudaGetLastError();
}

__global__ void from_bf16_kernel(const uint16_t *in, float *out, const float *bias, size_t count,
                                 int c, int hw, int relu)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = dg_bias_act_value(dg_bf16_to_float(in[i]), bias, i, c, hw, relu);
}

extern "C" cudaError_t dg_launch_from_bf16(const uint16_t *in, float *out, const float *bias, int n,
                                           int c, int hw, int relu, cudaStream_t stream)
{
    size_t count = (size_t)n * (size_t)c * (size_t)hw;
    if (count == 0)
        return cudaSuccess;
    from_bf16_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(in, out, bias, count, c, hw,
                                                                  relu);
    return cudaGetLastError();
}
