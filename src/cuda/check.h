/* The one check used at every CUDA runtime, cuDNN and cuBLAS call of the CUDA backend (and
 * at every kernel launcher, which returns cudaError_t): DG_TRY(call) evaluates `call` once,
 * and on failure records "file:line: function: library: message" as DG_ERR_DEVICE in
 * `status` and jumps to the enclosing function's `fail` label. No memory layout involved. */
#ifndef DG_CUDA_CHECK_H
#define DG_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <string.h>

#include "digits/status.h"

/* "backend.c" from a full path; the call text up to its '('. */
static inline const char *dg_check_file(const char *file)
{
    const char *slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

static inline int dg_check_name_length(const char *call)
{
    const char *paren = strchr(call, '(');
    return paren ? (int)(paren - call) : (int)strlen(call);
}

static inline enum dg_status dg_check_runtime(cudaError_t result, const char *file, int line,
                                              const char *call)
{
    if (result == cudaSuccess)
        return DG_OK;
    cudaGetLastError(); /* clears a non-sticky error so that later launch checks are not stale */
    return dg_error(DG_ERR_DEVICE, "%s:%d: %.*s: CUDA: %s (%s)", dg_check_file(file), line,
                    dg_check_name_length(call), call, cudaGetErrorString(result),
                    cudaGetErrorName(result));
}

static inline enum dg_status dg_check_cudnn(cudnnStatus_t result, const char *file, int line,
                                            const char *call)
{
    if (result == CUDNN_STATUS_SUCCESS)
        return DG_OK;
    char detail[256];
    cudnnGetLastErrorString(detail, sizeof detail);
    return dg_error(DG_ERR_DEVICE, "%s:%d: %.*s: cuDNN: %s%s%s", dg_check_file(file), line,
                    dg_check_name_length(call), call, cudnnGetErrorString(result),
                    detail[0] ? ": " : "", detail);
}

static inline enum dg_status dg_check_cublas(cublasStatus_t result, const char *file, int line,
                                             const char *call)
{
    if (result == CUBLAS_STATUS_SUCCESS)
        return DG_OK;
    return dg_error(DG_ERR_DEVICE, "%s:%d: %.*s: cuBLAS: %s (%s)", dg_check_file(file), line,
                    dg_check_name_length(call), call, cublasGetStatusString(result),
                    cublasGetStatusName(result));
}

/* The controlling expression of _Generic is not evaluated: `call` runs once. */
/* clang-format off */
#define DG_CHECK_RESULT(call)                                                                      \
    _Generic((call), cudaError_t: dg_check_runtime, cudnnStatus_t: dg_check_cudnn,                 \
             cublasStatus_t: dg_check_cublas)((call), __FILE__, __LINE__, #call)
/* clang-format on */

#define DG_TRY(call)                                                                               \
    do {                                                                                           \
        enum dg_status dg_try_status_ = DG_CHECK_RESULT(call);                                     \
        if (dg_try_status_ != DG_OK) {                                                             \
            status = dg_try_status_;                                                               \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#endif
