/* Adam on the device: the step's powers of beta1, beta2 (one thread), then one thread per
 * parameter over src/math/adam.h (flat float32 arrays w, g, m, v of the same layout). */
#include "common.cuh"
#include "launchers.h"
#include "math/adam.h"

__global__ void adam_powers_kernel(float *pow, float beta1, float beta2)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        pow[0] *= beta1;
        pow[1] *= beta2;
    }
}

__global__ void adam_kernel(size_t count, float *w, const float *g, float *m, float *v,
                            const float *pow, float lr, float beta1, float beta2, float eps,
                            const struct dg_step_block *vars)
{
    if (vars)
        lr = vars->lr;
    const float bc1 = 1.0f - pow[0], bc2 = 1.0f - pow[1];
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        dg_adam_element(&w[i], &m[i], &v[i], g[i], lr, beta1, beta2, eps, bc1, bc2);
}

extern "C" cudaError_t dg_launch_adam_powers(float *pow, float beta1, float beta2,
                                             cudaStream_t stream)
{
    adam_powers_kernel<<<1, 1, 0, stream>>>(pow, beta1, beta2);
    return cudaGetLastError();
}

extern "C" cudaError_t dg_launch_adam(size_t count, float *w, const float *g, float *m, float *v,
                                      const float *pow, float lr, float beta1, float beta2,
                                      float eps, const struct dg_step_block *vars,
                                      cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    adam_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, w, g, m, v, pow, lr, beta1,
                                                              beta2, eps, vars);
    return cudaGetLastError();
}
