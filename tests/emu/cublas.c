/* The emulated cuBLAS: handles, streams, math modes and the column-major GEMMs Digits calls
 * (cublasSgemm_v2, cublasGemmEx with float or bf16 inputs and float output), with the
 * argument checks of NVIDIA's cuBLAS reference: m, n, k >= 0; lda >= max(1, rows of op(A) as
 * stored), ldb likewise, ldc >= max(1, m), else CUBLAS_STATUS_INVALID_VALUE; a NULL or
 * destroyed handle is CUBLAS_STATUS_NOT_INITIALIZED. Every operand's whole extent
 * (ld * (columns - 1) + rows elements) must lie in device memory, else the call faults as the
 * device would (sticky cudaErrorIllegalAddress). When beta is 0, C is not read. TF32 math
 * (CUBLAS_TF32_TENSOR_OP_MATH or CUBLAS_COMPUTE_32F_FAST_TF32) rounds A and B to TF32 first.
 * The product itself is OpenBLAS's column-major sgemm. */
#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>

#include "emu_internal.h"

#define EMU_CUBLAS_MAGIC 0x43424c53u

struct cublasContext {
    unsigned magic;
    int alive;
    cudaStream_t stream;
    cublasMath_t math;
    void *workspace; /* cublasSetWorkspace's (the emulation's GEMMs need none) */
    size_t workspace_bytes;
};

static int handle_ok(cublasHandle_t h)
{
    return h && h->magic == EMU_CUBLAS_MAGIC && h->alive;
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle)
{
    if (!handle)
        return CUBLAS_STATUS_INVALID_VALUE;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        cudaGetLastError();
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    struct cublasContext *h = calloc(1, sizeof *h);
    if (!h)
        return CUBLAS_STATUS_ALLOC_FAILED;
    h->magic = EMU_CUBLAS_MAGIC;
    h->alive = 1;
    h->math = CUBLAS_DEFAULT_MATH;
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle)
{
    if (!handle_ok(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->alive = 0; /* kept, so that a later use is recognised */
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream)
{
    if (!handle_ok(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!dg_emu_stream_ok(stream))
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t bytes)
{
    if (!handle_ok(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes && !dg_emu_range_ok(workspace, bytes, DG_EMU_DEVICE)) {
        dg_emu_report("cublasSetWorkspace: %p + %zu bytes is not inside one device allocation",
                      workspace, bytes);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    handle->workspace = workspace;
    handle->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    if (!handle_ok(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    unsigned base = (unsigned)mode & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH &&
        base != CUBLAS_PEDANTIC_MATH && base != CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value)
{
    if (!value)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (type) {
    case MAJOR_VERSION: *value = CUBLAS_VER_MAJOR; break;
    case MINOR_VERSION: *value = CUBLAS_VER_MINOR; break;
    case PATCH_LEVEL: *value = CUBLAS_VER_PATCH; break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "unknown error";
    }
}

static size_t extent(int rows, int cols, int ld)
{
    if (rows == 0 || cols == 0)
        return 0;
    return (size_t)ld * (size_t)(cols - 1) + (size_t)rows;
}

static int operand_ok(const char *call, const char *name, const void *p, size_t elements,
                      size_t element_bytes)
{
    if (elements == 0)
        return 1;
    if (dg_emu_range_ok(p, elements * element_bytes, DG_EMU_DEVICE))
        return 1;
    dg_emu_fault(cudaErrorIllegalAddress,
                 "%s: operand %s (%p, %zu elements as its dimensions and leading dimension "
                 "reach) is not inside one device allocation",
                 call, name, p, elements);
    return 0;
}

/* A column-major operand as floats (rounded to TF32 when asked), rows x cols with ld. */
static float *operand_copy(const void *p, int bf16, int rows, int cols, int ld, int tf32)
{
    size_t n = extent(rows, cols, ld);
    float *out = malloc((n ? n : 1) * sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        float v = bf16 ? dg_emu_bf16_value(((const uint16_t *)p)[i]) : ((const float *)p)[i];
        out[i] = tf32 ? dg_emu_round_tf32(v) : v;
    }
    return out;
}

/* A GEMM as run (now or from a graph): the operands' extents checked in device memory, then
 * the product. */
struct gemm_work {
    const char *call;
    int ta, tb, m, n, k;
    float alpha;
    const void *A;
    int a_bf16, lda;
    const void *B;
    int b_bf16, ldb;
    float beta;
    float *C;
    int ldc, tf32;
};

static int gemm_run(void *ctx)
{
    const struct gemm_work *g = ctx;
    const char *call = g->call;
    int ta = g->ta, tb = g->tb, m = g->m, n = g->n, k = g->k, lda = g->lda, ldb = g->ldb,
        ldc = g->ldc, tf32 = g->tf32, a_bf16 = g->a_bf16, b_bf16 = g->b_bf16;
    float alpha = g->alpha, beta = g->beta;
    const void *A = g->A, *B = g->B;
    float *C = g->C;
    int a_rows = ta ? k : m, a_cols = ta ? m : k;
    int b_rows = tb ? n : k, b_cols = tb ? k : n;
    if (dg_emu_sticky() != cudaSuccess)
        return CUBLAS_STATUS_SUCCESS;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    size_t a_bytes = a_bf16 ? 2 : 4, b_bytes = b_bf16 ? 2 : 4;
    if (!operand_ok(call, "A", A, k ? extent(a_rows, a_cols, lda) : 0, a_bytes) ||
        !operand_ok(call, "B", B, k ? extent(b_rows, b_cols, ldb) : 0, b_bytes) ||
        !operand_ok(call, "C", C, extent(m, n, ldc), 4))
        return CUBLAS_STATUS_SUCCESS; /* asynchronous: the fault shows at the next sync */
    if (beta == 0.0f)
        for (int j = 0; j < n; j++)
            memset(C + (size_t)j * ldc, 0, (size_t)m * sizeof(float));
    if (k == 0 || alpha == 0.0f) {
        if (beta != 0.0f && beta != 1.0f)
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++)
                    C[(size_t)j * ldc + i] *= beta;
        return CUBLAS_STATUS_SUCCESS;
    }
    float *a = operand_copy(A, a_bf16, a_rows, a_cols, lda, tf32);
    float *b = operand_copy(B, b_bf16, b_rows, b_cols, ldb, tf32);
    if (!a || !b) {
        free(a);
        free(b);
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, alpha, a, lda, b, ldb, beta == 0.0f ? 0.0f : beta, C, ldc);
    free(a);
    free(b);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t gemm(const char *call, cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, float alpha,
                           const void *A, int a_bf16, int lda, const void *B, int b_bf16,
                           int ldb, float beta, float *C, int ldc, int tf32)
{
    if (!handle_ok(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    int ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T && transa != CUBLAS_OP_C) ||
        (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T && transb != CUBLAS_OP_C))
        return CUBLAS_STATUS_INVALID_VALUE;
    int a_rows = ta ? k : m;
    int b_rows = tb ? n : k;
    if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) ||
        ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1)) {
        dg_emu_report("%s: m %d n %d k %d lda %d ldb %d ldc %d (op(A) %s, op(B) %s): a leading "
                      "dimension is below its operand's stored rows, or a size is negative",
                      call, m, n, k, lda, ldb, ldc, ta ? "T" : "N", tb ? "T" : "N");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (dg_emu_sticky() != cudaSuccess)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    struct gemm_work w = {call, ta, tb, m, n, k, alpha, A, a_bf16, lda, B, b_bf16, ldb,
                          beta, C, ldc, tf32};
    int result = 0;
    if (dg_emu_enqueue(handle->stream, call, gemm_run, &w, sizeof w, NULL, NULL, &result) !=
        cudaSuccess)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    return (cublasStatus_t)result;
}

static int math_is_tf32(cublasHandle_t handle)
{
    unsigned base =
        (unsigned)handle->math & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    return base == CUBLAS_TF32_TENSOR_OP_MATH;
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const float *alpha,
                              const float *A, int lda, const float *B, int ldb, const float *beta,
                              float *C, int ldc)
{
    if (!handle_ok(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    return gemm("cublasSgemm", handle, transa, transb, m, n, k, *alpha, A, 0, lda, B, 0, ldb,
                *beta, C, ldc, math_is_tf32(handle));
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!handle_ok(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (Ctype != CUDA_R_32F || (Atype != CUDA_R_32F && Atype != CUDA_R_16BF) || Btype != Atype)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_PEDANTIC &&
        computeType != CUBLAS_COMPUTE_32F_FAST_TF32)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    int tf32 = Atype == CUDA_R_32F && (computeType == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                                       (computeType == CUBLAS_COMPUTE_32F && math_is_tf32(handle)));
    int bf16 = Atype == CUDA_R_16BF;
    return gemm("cublasGemmEx", handle, transa, transb, m, n, k, *(const float *)alpha, A, bf16,
                lda, B, bf16, ldb, *(const float *)beta, C, ldc, tf32);
}
