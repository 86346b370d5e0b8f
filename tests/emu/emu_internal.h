/* The emulated CUDA device: what its runtime (runtime.c), cuBLAS (cublas.c), cuDNN (cudnn.c)
 * and kernel scheduler (launch.c) share. A test fixture, never a product device: the CUDA
 * backend (src/cuda) and the kernels (the .cu files of kernels/, compiled by the host C++ compiler through
 * cuda_lang.h) link against it unchanged, so every suite that runs on "cuda" exercises the
 * backend's real calls on any machine.
 *
 * Everything runs on the calling host thread at the moment it is issued (streams are issue
 * order); device memory is host memory mapped so that one byte past the end of an allocation
 * is an unmapped page, and every pointer handed to the runtime, cuBLAS, cuDNN or a kernel is
 * checked against the table of live allocations. Misuse is reported as the real libraries
 * report it (the status code), with the detail on stderr ("emulated device: ..."). Faults
 * inside kernels and library calls become the sticky cudaErrorIllegalAddress that every later
 * call returns, as on a real device. */
#ifndef DG_EMU_INTERNAL_H
#define DG_EMU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dg_emu_kind { DG_EMU_DEVICE = 1, DG_EMU_PINNED = 2 };

/* 1 when [p, p + bytes) lies inside one live allocation of the given kinds (a mask). */
int dg_emu_range_ok(const void *p, size_t bytes, int kinds);

/* The live allocation holding p (any kind), or 0; base and size through the pointers. */
int dg_emu_find(const void *p, void **base, size_t *bytes, int *kind);

/* Prints "emulated device: <message>" on stderr (every misuse is also a status code). */
void dg_emu_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Makes cudaErrorIllegalAddress (or another error) sticky: every later runtime call returns
 * it, as after a device fault. Reports the message. */
void dg_emu_fault(cudaError_t error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The sticky error (cudaSuccess when none). */
cudaError_t dg_emu_sticky(void);

/* 1 when the stream handle is 0 or a live stream. */
int dg_emu_stream_ok(cudaStream_t stream);

/* Rounds a float to TF32 (10 explicit mantissa bits, nearest-even), as tensor cores read
 * their inputs; used by cuBLAS and cuDNN when their math mode allows TF32. */
float dg_emu_round_tf32(float value);

/* float -> bf16 bits, nearest even, denormals kept, NaN the canonical 0x7fff (as a GPU's
 * conversion and cuDNN's bf16 outputs round); and bf16 bits -> float (exact). */
uint16_t dg_emu_round_bf16(float value);
float dg_emu_bf16_value(uint16_t h);

/* Kernel launches (launch.c). `entry(ctx)` runs one CUDA thread; `pointers` are the kernel's
 * pointer arguments (checked: NULL or inside device / pinned memory). Returns the launch
 * status (cudaErrorInvalidConfiguration and the like); execution errors become sticky. On a
 * capturing stream the launch is recorded: `clone` copies ctx for the graph, `release` frees
 * the copy. */
cudaError_t dg_emu_launch(const char *kernel, dim3 grid, dim3 block, size_t shared_bytes,
                          cudaStream_t stream, void (*entry)(void *ctx), void *ctx,
                          void *(*clone)(const void *ctx), void (*release)(void *ctx),
                          const void *const *pointers, int pointer_count);

/* ---- stream capture (graph.c) ---- */

/* Work on a stream: returns 0 when done, else a status of its library (reported at a graph
 * launch as a failed node). */
typedef int (*dg_emu_work_fn)(void *ctx);

/* Runs run(ctx) now (its status in *result), or, when `stream` is capturing, records it as a
 * node of the capture with a copy of ctx (clone(ctx) when clone is given, else ctx_bytes
 * copied, or ctx itself when ctx_bytes is 0: the graph takes it over; release, or free,
 * disposes of it with the graph) and sets *result to 0. Returns
 * cudaErrorStreamCaptureInvalidated when the capture was invalidated, cudaSuccess otherwise. */
cudaError_t dg_emu_enqueue(cudaStream_t stream, const char *what, dg_emu_work_fn run, void *ctx,
                           size_t ctx_bytes, void *(*clone)(const void *ctx),
                           void (*release)(void *ctx), int *result);

/* 1 when `stream` (not the legacy stream) is capturing. */
int dg_emu_stream_capturing(cudaStream_t stream);

/* For a call that may not be made while capturing (allocation, freeing, synchronous copies
 * and memsets, device synchronisation, cuDNN's algorithm search): when this thread captures
 * (modes Global and ThreadLocal) or a Global-mode capture runs anywhere, invalidates those
 * captures, reports it and returns cudaErrorStreamCaptureUnsupported; else cudaSuccess. */
cudaError_t dg_emu_capture_unsafe(const char *call);

/* For a wait on `stream` (cudaStreamSynchronize): unsafe as above when the stream is
 * capturing, or is the legacy stream; a wait on another stream is allowed. */
cudaError_t dg_emu_capture_sync(const char *call, cudaStream_t stream);

/* Graph launches, nodes run by them and nodes captured so far, process-wide. */
void dg_emu_graph_counts(long *launches, long *replayed, long *captured);

/* The runtime's return path (runtime.c): a failure becomes the thread's last error, a sticky
 * error wins over success. */
cudaError_t dg_emu_return(cudaError_t error);

/* Records a launch's status as the thread's last error (what cudaGetLastError returns). */
void dg_emu_set_launch_error(cudaError_t error);

/* Counters for the suites (emulated device only). */
struct dg_emu_stats {
    long launches;        /* kernels launched successfully */
    long races;           /* launches whose two thread orders disagreed */
    long barrier_errors;  /* barriers not reached by every thread of a block */
    long faults;          /* sticky faults raised */
    long syncs;           /* host waits: cudaStreamSynchronize, cudaEventSynchronize,
                             cudaDeviceSynchronize and synchronous cudaMemcpy / cudaMemset */
    long copies;          /* cudaMemcpyAsync / cudaMemsetAsync calls */
};
void dg_emu_get_stats(struct dg_emu_stats *out);

/* Counts one event into those counters (launch.c reports, runtime.c keeps them). */
enum dg_emu_event { DG_EMU_LAUNCHED, DG_EMU_RACE, DG_EMU_BARRIER_ERROR };
void dg_emu_count(enum dg_emu_event event);

#ifdef __cplusplus
}
#endif

#endif
