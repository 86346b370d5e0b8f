/* Bias gradients: per-channel sums of an NCHW gradient (conv bias) or column sums of a
 * (batch, out) one (dense bias), each channel summed by one block in a fixed order. */
#include "common.cuh"
#include "launchers.h"

/* One block per channel; each thread sums a strided subset, then a shared-memory tree. */
__global__ void channel_sum_kernel(const float *x, int n, int c, int hw, float *sum)
{
    __shared__ float partial[DG_BLOCK];
    int channel = blockIdx.x;
    size_t per_channel = (size_t)n * (size_t)hw;
    float acc = 0.0f;
    for (size_t k = threadIdx.x; k < per_channel; k += DG_BLOCK) {
        size_t image = k / (size_t)hw;
        size_t pixel = k % (size_t)hw;
        acc += x[(image * (size_t)c + (size_t)channel) * (size_t)hw + pixel];
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int half = DG_BLOCK / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        sum[channel] = partial[0];
}

extern "C" cudaError_t dg_launch_channel_sum(const float *x, int n, int c, int hw, float *sum,
                                             cudaStream_t stream)
{
    if (c <= 0)
        return cudaSuccess;
    channel_sum_kernel<<<(unsigned)c, DG_BLOCK, 0, stream>>>(x, n, c, hw, sum);
    return cudaGetLastError();
}
