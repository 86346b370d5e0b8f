/* The bias + ReLU epilogue of the convolutions and dense layers and the ReLU backward.
 * Tensors are float32 NCHW, row-major; one thread per element with grid-stride loops. */
#include "common.cuh"
#include "launchers.h"

__global__ void bias_act_kernel(float *y, const float *bias, size_t count, int c, int hw, int relu)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        y[i] = dg_bias_act_value(y[i], bias, i, c, hw, relu);
    }
}

extern "C" cudaError_t dg_launch_bias_act(float *y, const float *bias, int n, int c, int hw,
                                          int relu, cudaStream_t stream)
{
    size_t count = (size_t)n * (size_t)c * (size_t)hw;
    if (count == 0 || (!bias && !relu))
        return cudaSuccess;
    bias_act_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(y, bias, count, c, hw, relu);
    return cudaGetLastError();
}

__global__ void relu_bwd_kernel(size_t count, const float *y, float *dy)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        if (!(y[i] > 0.0f))
            dy[i] = 0.0f;
}

extern "C" cudaError_t dg_launch_relu_bwd(size_t count, const float *y, float *dy,
                                          cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    relu_bwd_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, y, dy);
    return cudaGetLastError();
}
