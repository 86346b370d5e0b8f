/* The moving average of the weights on the device: one thread per parameter over
 * src/math/ema.h (flat float32 arrays of the same layout). */
#include "common.cuh"
#include "launchers.h"
#include "math/ema.h"

__global__ void ema_kernel(size_t count, float *shadow, const float *w, float decay)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        dg_ema_element(&shadow[i], w[i], decay);
}

extern "C" cudaError_t dg_launch_ema(size_t count, float *shadow, const float *w, float decay,
                                     cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    ema_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, shadow, w, decay);
    return cudaGetLastError();
}
