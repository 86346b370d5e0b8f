/* Inverted dropout on the device: the mask of element i is recomputed from Philox
 * (src/math/dropout.h), so it is the CPU's mask bit for bit. Flat float32 arrays. */
#include "math/dropout.h"
#include "common.cuh"
#include "launchers.h"

__global__ void dropout_kernel(size_t count, float rate, struct dg_dropout_key key,
                               const struct dg_step_block *vars, const float *in, float *out)
{
    uint32_t epoch = vars ? vars->epoch : key.epoch;
    uint32_t step = vars ? vars->step : key.step;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = in[i] * dg_dropout_scale(rate, key.seed, key.layer, epoch, step, i);
}

extern "C" cudaError_t dg_launch_dropout(size_t count, float rate, struct dg_dropout_key key,
                                         const struct dg_step_block *vars, const float *in,
                                         float *out, cudaStream_t stream)
{
    if (count == 0)
        return cudaSuccess;
    dropout_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(count, rate, key, vars, in,
                                                                 out);
    return cudaGetLastError();
}
