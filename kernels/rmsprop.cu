/* RMSprop on the device: one thread per parameter over src/math/rmsprop.h (flat float32
 * arrays w, g, acc of the same layout). */
#include "common.cuh"
#include "launchers.h"
#include "math/rmsprop.h"

__global__ void rmsprop_kernel(size_t count, float *w, const float *g, float *acc, float lr,
                               float rho, float eps, const struct dg_step_block *vars)
{
    if (vars)
        lr = vars->lr;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        dg_rmsprop_element(&w[i], &acc[i], g[i], lr, rho, eps);
}

extern "C" cudaError_t dg_launch_rmsprop(size_t count, float *w, const float *g, float *acc,
                                         float lr, float rho, float eps,
                                         const struct dg_step_block *vars, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    rmsprop_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, w, g, acc, lr, rho, eps,
                                                                 vars);
    return cudaGetLastError();
}
