/* The emulated device's stand-in for <cuda_runtime.h> when the host C++ compiler compiles
 * the .cu files of kernels/ (translated by cmake/emu_translate.cmake: launches become
 * dg_emu::launch(...).run(kernel, args...), __shared__ declarations DG_EMU_SHARED(...)).
 * It gives the CUDA language what those kernels use: the execution-space keywords (empty),
 * threadIdx / blockIdx / blockDim / gridDim (the running fiber's, tests/emu/launch.c),
 * __syncthreads, __shared__ variables per block, and the launch itself; the runtime API and
 * its types come from the toolkit's own cuda_runtime_api.h. Only for the emulation build. */
#ifndef DG_EMU_CUDA_RUNTIME_H
#define DG_EMU_CUDA_RUNTIME_H

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "the emulated CUDA language needs C++17"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)

#include <cuda_runtime_api.h>

#include <cstddef>
#include <tuple>
#include <type_traits>

#include "../emu_internal.h"

extern "C" {
extern __thread uint3 dg_emu_thread_idx;
extern __thread uint3 dg_emu_block_idx;
extern __thread dim3 dg_emu_block_dim;
extern __thread dim3 dg_emu_grid_dim;
void dg_emu_syncthreads(void);
void dg_emu_shared_use(void *address, size_t bytes);
}

#define threadIdx dg_emu_thread_idx
#define blockIdx dg_emu_block_idx
#define blockDim dg_emu_block_dim
#define gridDim dg_emu_grid_dim
#define __syncthreads() dg_emu_syncthreads()

/* One __shared__ variable: a thread_local static (all threads of the running block see it,
 * since a block's CUDA threads are fibers of one host thread and blocks run one after
 * another; host threads launching at once, as concurrent ensemble members do, each have their
 * own), registered with the scheduler on first use in each block. */
#define DG_EMU_SHARED(type, name, dims)                                                            \
    static thread_local type name dims;                                                            \
    dg_emu_shared_use((void *)&name, sizeof(name))

namespace dg_emu {

template <typename T> inline void collect_pointer(const T &value, const void **out, int *count)
{
    if constexpr (std::is_pointer_v<T>)
        out[(*count)++] = (const void *)value;
    else
        (void)value;
    (void)out;
    (void)count;
}

template <typename... P> struct call {
    void (*kernel)(P...);
    std::tuple<P...> params;
    static void entry(void *ctx)
    {
        call *self = static_cast<call *>(ctx);
        std::apply(self->kernel, self->params); /* each CUDA thread gets its own copies */
    }
    /* a captured launch keeps its own copy of the arguments, as a graph's kernel node does */
    static void *clone(const void *ctx) { return new call(*static_cast<const call *>(ctx)); }
    static void release(void *ctx) { delete static_cast<call *>(ctx); }
};

struct launch {
    const char *name;
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    launch(const char *kernel_name, dim3 g, dim3 b, size_t shared = 0, cudaStream_t s = 0)
        : name(kernel_name), grid(g), block(b), shared_bytes(shared), stream(s)
    {
    }
    /* The arguments convert to the kernel's parameter types, as a launch's do. */
    template <typename... P, typename... A> void run(void (*kernel)(P...), A &&...args)
    {
        call<P...> c{kernel, std::tuple<P...>(static_cast<P>(args)...)};
        const void *pointers[sizeof...(P) + 1];
        int count = 0;
        std::apply([&](const auto &...p) { (collect_pointer(p, pointers, &count), ...); },
                   c.params);
        cudaError_t result =
            dg_emu_launch(name, grid, block, shared_bytes, stream, &call<P...>::entry, &c,
                          &call<P...>::clone, &call<P...>::release, pointers, count);
        dg_emu_set_launch_error(result);
    }
};

} // namespace dg_emu

#endif
