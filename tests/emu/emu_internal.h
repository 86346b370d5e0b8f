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

/* Kernel launches (launch.c). `entry(ctx)` runs one CUDA thread; `pointers` are the kernel's
 * pointer arguments (checked: NULL or inside device / pinned memory). Returns the launch
 * status (cudaErrorInvalidConfiguration and the like); execution errors become sticky. */
cudaError_t dg_emu_launch(const char *kernel, dim3 grid, dim3 block, size_t shared_bytes,
                          cudaStream_t stream, void (*entry)(void *ctx), void *ctx,
                          const void *const *pointers, int pointer_count);

/* Records a launch's status as the thread's last error (what cudaGetLastError returns). */
void dg_emu_set_launch_error(cudaError_t error);

/* Counters for the suites (emulated device only). */
struct dg_emu_stats {
    long launches;        /* kernels launched successfully */
    long races;           /* launches whose two thread orders disagreed */
    long barrier_errors;  /* barriers not reached by every thread of a block */
    long faults;          /* sticky faults raised */
};
void dg_emu_get_stats(struct dg_emu_stats *out);

/* Counts one event into those counters (launch.c reports, runtime.c keeps them). */
enum dg_emu_event { DG_EMU_LAUNCHED, DG_EMU_RACE, DG_EMU_BARRIER_ERROR };
void dg_emu_count(enum dg_emu_event event);

#ifdef __cplusplus
}
#endif

#endif
