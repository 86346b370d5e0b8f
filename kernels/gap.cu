/* Global average pooling (src/math/gap.h): forward one thread per output (batch x channel),
 * backward one thread per input element; grid-stride loops. */
#include "common.cuh"
#include "launchers.h"
#include "math/gap.h"

__global__ void gap_fwd_kernel(size_t rows, int spatial, const float *x, float *y)
{
    for (size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x; r < rows;
         r += (size_t)gridDim.x * blockDim.x)
        y[r] = dg_gap_mean(x + r * (size_t)spatial, spatial);
}

__global__ void gap_bwd_kernel(size_t count, int spatial, const float *dy, float *dx)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] = dg_gap_grad(dy[i / (size_t)spatial], spatial);
}

extern "C" cudaError_t dg_launch_gap_fwd(size_t rows, int spatial, const float *x, float *y,
                                         cudaStream_t stream)
{
    if (rows == 0)
        return cudaSuccess;
    gap_fwd_kernel<<<dg_grid_for(rows), DG_BLOCK, 0, stream>>>(rows, spatial, x, y);
    return cudaGetLastError();
}

extern "C" cudaError_t dg_launch_gap_bwd(size_t rows, int spatial, const float *dy, float *dx,
                                         cudaStream_t stream)
{
    size_t count = rows * (size_t)spatial;
    if (count == 0)
        return cudaSuccess;
    gap_bwd_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, spatial, dy, dx);
    return cudaGetLastError();
}
