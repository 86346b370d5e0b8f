/* Softmax + cross-entropy on the device over src/math/softmax_xent.h: logits, probs and
 * dlogits are (batch, 10) row-major. With labels, one block walks every row and sums the
 * losses and hits in doubles through a fixed-shape tree, so the stats are deterministic. */
#include "digits/data.h"
#include "common.cuh"
#include "launchers.h"
#include "math/softmax_xent.h"

__global__ void softmax_kernel(int batch, const float *logits, float *probs)
{
    for (int row = blockIdx.x * blockDim.x + threadIdx.x; row < batch;
         row += gridDim.x * blockDim.x)
        dg_softmax_row(logits + (size_t)row * DG_CLASSES, probs + (size_t)row * DG_CLASSES,
                       DG_CLASSES);
}

__global__ void softmax_xent_kernel(int batch, const float *logits, const uint8_t *labels,
                                    float smoothing, float *probs, float *dlogits, double *stats,
                                    double *trace)
{
    __shared__ double loss_part[DG_BLOCK];
    __shared__ double hit_part[DG_BLOCK];
    float inv_batch = 1.0f / (float)batch;
    double loss = 0.0;
    double hits = 0.0;
    for (int row = threadIdx.x; row < batch; row += DG_BLOCK) {
        size_t at = (size_t)row * DG_CLASSES;
        int correct = 0;
        loss += (double)dg_softmax_xent_row(logits + at, probs + at, dlogits ? dlogits + at : NULL,
                                            DG_CLASSES, labels[row], smoothing, inv_batch,
                                            &correct);
        hits += correct;
    }
    loss_part[threadIdx.x] = loss;
    hit_part[threadIdx.x] = hits;
    __syncthreads();
    for (int half = DG_BLOCK / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) {
            loss_part[threadIdx.x] += loss_part[threadIdx.x + half];
            hit_part[threadIdx.x] += hit_part[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0 && stats) {
        stats[0] += loss_part[0];
        stats[1] += hit_part[0];
        if (trace) {
            size_t k = (size_t)stats[2];
            trace[2 * k] = stats[0];
            trace[2 * k + 1] = stats[1];
            stats[2] += 1.0;
        }
    }
}

extern "C" cudaError_t dg_launch_softmax_xent(int batch, const float *logits, const uint8_t *labels,
                                              float smoothing, float *probs, float *dlogits,
                                              double *stats, double *trace, cudaStream_t stream)
{
    if (batch <= 0)
        return cudaSuccess;
    if (labels)
        softmax_xent_kernel<<<1, DG_BLOCK, 0, stream>>>(batch, logits, labels, smoothing, probs,
                                                        dlogits, stats, trace);
    else
        softmax_kernel<<<dg_grid_for((size_t)batch), DG_BLOCK, 0, stream>>>(batch, logits, probs);
    return cudaGetLastError();
}
