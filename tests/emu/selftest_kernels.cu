// Kernels with planted faults for tests/emu_selftest.c: each launcher runs one, so the suite
// can show that the emulated device refuses what a real GPU would get wrong silently (races,
// missing or divergent barriers, accesses past an allocation, launch limits, shared memory).
// Only the emulated build compiles this file.
#include <cuda_runtime.h>

#define SELFTEST_BLOCK 64

// x[i] = x[i + 1] + 1 for every thread: reads a neighbour another thread writes (a race).
__global__ void neighbour_kernel(float *x, int n)
{
    int i = threadIdx.x;
    if (i + 1 < n)
        x[i] = x[i + 1] + 1.0f;
}

// A shared-memory tree sum; `barriers` = 0 leaves out the __syncthreads of the tree.
__global__ void tree_sum_kernel(const float *in, float *out, int barriers)
{
    __shared__ float part[SELFTEST_BLOCK];
    part[threadIdx.x] = in[blockIdx.x * SELFTEST_BLOCK + threadIdx.x];
    if (barriers)
        __syncthreads();
    for (int half = SELFTEST_BLOCK / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            part[threadIdx.x] += part[threadIdx.x + half];
        if (barriers)
            __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = part[0];
}

// Only the first half of the block reaches the barrier.
__global__ void divergent_kernel(float *x)
{
    if (threadIdx.x < SELFTEST_BLOCK / 2)
        __syncthreads();
    x[threadIdx.x] = 1.0f;
}

// Writes one element past the end (thread n-1 writes x[n]).
__global__ void past_end_kernel(float *x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i + 1] = 2.0f;
}

// 13,000 floats of shared memory: over the 48 KiB a block may have.
__global__ void big_shared_kernel(float *x)
{
    __shared__ float big[13000];
    big[threadIdx.x] = 1.0f;
    __syncthreads();
    x[threadIdx.x] = big[(threadIdx.x + 1) % SELFTEST_BLOCK];
}

// Every thread of a 2-D block writes its own linear index (checks threadIdx / blockIdx).
__global__ void index_kernel(unsigned *out)
{
    unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
    unsigned b = blockIdx.y * gridDim.x + blockIdx.x;
    out[b * blockDim.x * blockDim.y + t] = b * 1000u + t;
}

// x[i] = a * x[i] + b: a correct kernel, for the captures.
__global__ void axpb_kernel(float *x, int n, float a, float b)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = a * x[i] + b;
}

extern "C" {
cudaError_t selftest_axpb(float *x, int n, float a, float b, cudaStream_t stream)
{
    axpb_kernel<<<(n + 31) / 32, 32, 0, stream>>>(x, n, a, b);
    return cudaGetLastError();
}
cudaError_t selftest_neighbour(float *x, int n)
{
    neighbour_kernel<<<1, n>>>(x, n);
    return cudaGetLastError();
}
cudaError_t selftest_tree_sum(const float *in, float *out, int blocks, int barriers)
{
    tree_sum_kernel<<<blocks, SELFTEST_BLOCK>>>(in, out, barriers);
    return cudaGetLastError();
}
cudaError_t selftest_divergent(float *x)
{
    divergent_kernel<<<1, SELFTEST_BLOCK>>>(x);
    return cudaGetLastError();
}
cudaError_t selftest_past_end(float *x, int n)
{
    past_end_kernel<<<(n + 31) / 32, 32>>>(x, n);
    return cudaGetLastError();
}
cudaError_t selftest_big_shared(float *x)
{
    big_shared_kernel<<<1, SELFTEST_BLOCK>>>(x);
    return cudaGetLastError();
}
cudaError_t selftest_index(unsigned *out, unsigned gx, unsigned gy, unsigned bx, unsigned by)
{
    index_kernel<<<dim3(gx, gy), dim3(bx, by)>>>(out);
    return cudaGetLastError();
}
}
