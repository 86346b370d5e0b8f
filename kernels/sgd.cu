/* SGD with momentum on the device: one thread per parameter over src/math/sgd.h (flat float32
 * arrays w, g, b of the same layout). */
#include "common.cuh"
#include "launchers.h"
#include "math/sgd.h"

__global__ void sgd_kernel(size_t count, float *w, const float *g, float *b, float lr,
                           float momentum, int nesterov, const struct dg_step_block *vars)
{
    if (vars)
        lr = vars->lr;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        dg_sgd_element(&w[i], &b[i], g[i], lr, momentum, nesterov);
}

extern "C" cudaError_t dg_launch_sgd(size_t count, float *w, const float *g, float *b, float lr,
                                     float momentum, int nesterov,
                                     const struct dg_step_block *vars, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    sgd_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, w, g, b, lr, momentum,
                                                             nesterov, vars);
    return cudaGetLastError();
}
