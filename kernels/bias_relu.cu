/* Layer kernels beside cuDNN and cuBLAS: bias + ReLU, ReLU backward, per-channel sums (bias
 * gradients) and the max-pool backward with first-maximum routing. Tensors are float32 NCHW,
 * row-major; one thread per element with grid-stride loops. */
#include "launchers.h"

#define DG_BLOCK 256
#define DG_MAX_BLOCKS 65535

static unsigned grid_for(size_t count)
{
    size_t blocks = (count + DG_BLOCK - 1) / DG_BLOCK;
    if (blocks == 0)
        blocks = 1;
    return (unsigned)(blocks < DG_MAX_BLOCKS ? blocks : DG_MAX_BLOCKS);
}

__global__ void bias_act_kernel(float *y, const float *bias, size_t count, int c, int hw, int relu)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = y[i];
        if (bias)
            v = v + bias[(i / (size_t)hw) % (size_t)c];
        if (relu)
            v = v > 0.0f ? v : 0.0f;
        y[i] = v;
    }
}

extern "C" cudaError_t dg_launch_bias_act(float *y, const float *bias, int n, int c, int hw,
                                          int relu, cudaStream_t stream)
{
    size_t count = (size_t)n * (size_t)c * (size_t)hw;
    if (count == 0 || (!bias && !relu))
        return cudaSuccess;
    bias_act_kernel<<<grid_for(count), DG_BLOCK, 0, stream>>>(y, bias, count, c, hw, relu);
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
    relu_bwd_kernel<<<grid_for(count), DG_BLOCK, 0, stream>>>(count, y, dy);
    return cudaGetLastError();
}

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
    maxpool_bwd_kernel<<<grid_for(count), DG_BLOCK, 0, stream>>>(x, dy, dx, count, h, w);
    return cudaGetLastError();
}
