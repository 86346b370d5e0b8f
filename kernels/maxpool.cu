/* Max-pool 2x2 stride 2 backward with first-maximum routing (the forward is cuDNN's, see
 * src/cuda/backend.c). Tensors are float32 NCHW, row-major; one thread per input element with
 * grid-stride loops. */
#include "common.cuh"
#include "launchers.h"

/* One thread per input element: it receives the window's gradient when it is the window's
 * first maximum in row-major order (strict > scan), else 0. */
__global__ void maxpool_bwd_kernel(const float *x, const float *dy, float *dx, size_t count, int h,
                                   int w)
{
    int out_h = h / 2;
    int out_w = w / 2;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t plane = i / ((size_t)h * (size_t)w);
        int row = (int)((i / (size_t)w) % (size_t)h);
        int col = (int)(i % (size_t)w);
        int out_row = row / 2;
        int out_col = col / 2;
        if (out_row >= out_h || out_col >= out_w) {
            dx[i] = 0.0f;
            continue;
        }
        const float *window =
            x + plane * (size_t)h * (size_t)w + (size_t)(2 * out_row) * w + 2 * out_col;
        float best = window[0];
        int best_at = 0;
        if (window[1] > best) {
            best = window[1];
            best_at = 1;
        }
        if (window[w] > best) {
            best = window[w];
            best_at = 2;
        }
        if (window[w + 1] > best)
            best_at = 3;
        int here = (row - 2 * out_row) * 2 + (col - 2 * out_col);
        dx[i] = here == best_at
                    ? dy[(plane * (size_t)out_h + (size_t)out_row) * (size_t)out_w + out_col]
                    : 0.0f;
    }
}

extern "C" cudaError_t dg_launch_maxpool_bwd(const float *x, const float *dy, float *dx, int n,
                                             int c, int h, int w, cudaStream_t stream)
{
    size_t count = (size_t)n * (size_t)c * (size_t)h * (size_t)w;
    if (count == 0)
        return cudaSuccess;
    maxpool_bwd_kernel<<<dg_grid_for(count), DG_BLOCK, 0, stream>>>(x, dy, dx, count, h, w);
    return cudaGetLastError();
}
