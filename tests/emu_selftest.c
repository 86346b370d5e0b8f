#define _POSIX_C_SOURCE 200809L
/* The emulated CUDA device says no: each case does what a real GPU would let pass silently or
 * report, and checks that the emulation reports it with the right status (tests/emu). Also the
 * emulated cuBLAS and cuDNN against naive double-precision references written here. Each case
 * runs in its own process (Check's fork mode), since a fault is sticky for the process, as on
 * a device. Built only with -DDIGITS_CUDA_EMULATE=ON. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "../tests/emu/emu_internal.h"

cudaError_t selftest_neighbour(float *x, int n);
cudaError_t selftest_tree_sum(const float *in, float *out, int blocks, int barriers);
cudaError_t selftest_divergent(float *x);
cudaError_t selftest_past_end(float *x, int n);
cudaError_t selftest_big_shared(float *x);
cudaError_t selftest_index(unsigned *out, unsigned gx, unsigned gy, unsigned bx, unsigned by);
cudaError_t selftest_axpb(float *x, int n, float a, float b, cudaStream_t stream);

static float *device_floats(const float *host, size_t n)
{
    float *d = NULL;
    ck_assert_int_eq(cudaMalloc((void **)&d, n * sizeof(float)), cudaSuccess);
    if (host)
        ck_assert_int_eq(cudaMemcpy(d, host, n * sizeof(float), cudaMemcpyHostToDevice),
                         cudaSuccess);
    return d;
}

static void download(float *host, const float *d, size_t n)
{
    ck_assert_int_eq(cudaMemcpy(host, d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
}

static float pattern(size_t i)
{
    return (float)((i * 7919u) % 1000u) / 500.0f - 1.0f;
}

/* ---- runtime ---- */

START_TEST(double_free_is_refused)
{
    void *p = NULL;
    ck_assert_int_eq(cudaMalloc(&p, 100), cudaSuccess);
    ck_assert_int_eq(cudaFree(p), cudaSuccess);
    ck_assert_int_eq(cudaFree(p), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaGetLastError(), cudaSuccess); /* not sticky */
}
END_TEST

START_TEST(copies_past_an_allocation_are_refused)
{
    float host[64] = {0};
    float *d = device_floats(NULL, 16);
    ck_assert_int_eq(cudaMemcpy(d, host, 17 * sizeof(float), cudaMemcpyHostToDevice),
                     cudaErrorInvalidValue);
    ck_assert_int_eq(cudaMemcpy(host, d + 8, 9 * sizeof(float), cudaMemcpyDeviceToHost),
                     cudaErrorInvalidValue);
    ck_assert_int_eq(cudaMemsetAsync(d + 1, 0, 16 * sizeof(float), 0), cudaErrorInvalidValue);
    /* a device pointer given as host memory, and host memory as device memory */
    ck_assert_int_eq(cudaMemcpy(d, d, 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaMemcpy(host, host + 1, 4, cudaMemcpyDeviceToHost),
                     cudaErrorInvalidValue);
    ck_assert_int_eq(cudaMemcpy(d, host, 16 * sizeof(float), cudaMemcpyHostToDevice),
                     cudaSuccess);
    void *pinned = NULL;
    ck_assert_int_eq(cudaHostAlloc(&pinned, 64, cudaHostAllocDefault), cudaSuccess);
    ck_assert_int_eq(cudaFree(pinned), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaFreeHost(d), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaFreeHost(pinned), cudaSuccess);
    ck_assert_int_eq(cudaFree(d), cudaSuccess);
}
END_TEST

START_TEST(memory_is_counted_and_limited)
{
    setenv("DIGITS_EMU_MEMORY_MIB", "64", 1);
    size_t free0 = 0, total = 0;
    ck_assert_int_eq(cudaMemGetInfo(&free0, &total), cudaSuccess);
    ck_assert_uint_eq(total, (size_t)64 << 20);
    void *a = NULL, *b = NULL;
    ck_assert_int_eq(cudaMalloc(&a, (size_t)40 << 20), cudaSuccess);
    size_t free1 = 0;
    ck_assert_int_eq(cudaMemGetInfo(&free1, &total), cudaSuccess);
    ck_assert_uint_eq(free0 - free1, (size_t)40 << 20);
    ck_assert_int_eq(cudaMalloc(&b, (size_t)40 << 20), cudaErrorMemoryAllocation);
    ck_assert_ptr_null(b);
    ck_assert_int_eq(cudaFree(a), cudaSuccess);
}
END_TEST

START_TEST(fresh_device_memory_is_not_zero)
{
    float *d = device_floats(NULL, 4), host[4];
    download(host, d, 4);
    for (int i = 0; i < 4; i++)
        ck_assert(isnan(host[i]));
}
END_TEST

START_TEST(destroyed_handles_are_refused)
{
    cudaStream_t s;
    cudaEvent_t e;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(e, s), cudaSuccess);
    ck_assert_int_eq(cudaStreamWaitEvent(s, e, 0), cudaSuccess);
    ck_assert_int_eq(cudaStreamDestroy(s), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
    ck_assert_int_eq(cudaEventSynchronize(e), cudaErrorInvalidResourceHandle);
}
END_TEST

/* cudaEventElapsedTime as the driver has it: the time between two timing events recorded
 * outside a capture; an event made with cudaEventDisableTiming, or never recorded, is refused. */
START_TEST(events_time_the_work_between_them)
{
    cudaStream_t s;
    cudaEvent_t a, b, untimed, fresh;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaEventCreate(&a), cudaSuccess);
    ck_assert_int_eq(cudaEventCreate(&b), cudaSuccess);
    ck_assert_int_eq(cudaEventCreate(&fresh), cudaSuccess);
    ck_assert_int_eq(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(a, s), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(untimed, s), cudaSuccess);
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    ck_assert_int_eq(cudaEventRecord(b, s), cudaSuccess);
    ck_assert_int_eq(cudaEventSynchronize(b), cudaSuccess);
    float ms = -1.0f;
    ck_assert_int_eq(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
    ck_assert_msg(ms >= 20.0f && ms < 5000.0f, "elapsed %g ms around a 20 ms pause", (double)ms);
    ck_assert_int_eq(cudaEventElapsedTime(&ms, a, untimed), cudaErrorInvalidResourceHandle);
    ck_assert_int_eq(cudaEventElapsedTime(&ms, a, fresh), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaEventElapsedTime(NULL, a, b), cudaErrorInvalidValue);
    cudaEvent_t events[] = {a, b, untimed, fresh};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(cudaEventDestroy(events[i]), cudaSuccess);
    ck_assert_int_eq(cudaStreamDestroy(s), cudaSuccess);
}
END_TEST

START_TEST(no_device_when_none_is_visible)
{
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    int count = -1;
    ck_assert_int_eq(cudaGetDeviceCount(&count), cudaErrorNoDevice);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(cudaSetDevice(0), cudaErrorInvalidDevice);
}
END_TEST

/* ---- kernels ---- */

START_TEST(thread_and_block_indices)
{
    const unsigned gx = 3, gy = 2, bx = 8, by = 4, total = gx * gy * bx * by;
    unsigned *d = NULL, host[3 * 2 * 8 * 4];
    ck_assert_int_eq(cudaMalloc((void **)&d, total * sizeof(unsigned)), cudaSuccess);
    ck_assert_int_eq(selftest_index(d, gx, gy, bx, by), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost), cudaSuccess);
    for (unsigned b = 0; b < gx * gy; b++)
        for (unsigned t = 0; t < bx * by; t++)
            ck_assert_uint_eq(host[b * bx * by + t], b * 1000u + t);
}
END_TEST

START_TEST(a_correct_reduction_passes)
{
    enum { blocks = 5, n = blocks * 64 };
    float in[n], out[blocks];
    for (int i = 0; i < n; i++)
        in[i] = (float)(i % 17); /* small integers: every order sums them exactly */
    float *d_in = device_floats(in, n), *d_out = device_floats(NULL, blocks);
    ck_assert_int_eq(selftest_tree_sum(d_in, d_out, blocks, 1), cudaSuccess);
    download(out, d_out, blocks);
    for (int b = 0; b < blocks; b++) {
        double want = 0;
        for (int i = 0; i < 64; i++)
            want += in[b * 64 + i];
        ck_assert_double_eq(out[b], want);
    }
    struct dg_emu_stats stats;
    dg_emu_get_stats(&stats);
    ck_assert_int_eq(stats.races, 0);
    ck_assert_int_eq(stats.launches, 1);
}
END_TEST

/* Host threads launching at once (concurrent ensemble members do) each have their own
 * __shared__ memory and their own fibers: a reduction in each, many times, stays exact. */
struct host_run {
    int seed;
    int bad;
};

static void *host_thread(void *arg)
{
    struct host_run *run = arg;
    enum { blocks = 8, n = blocks * 64 };
    float in[n], out[blocks];
    for (int i = 0; i < n; i++)
        in[i] = (float)((i * (run->seed + 3)) % 23);
    float *d_in = NULL, *d_out = NULL;
    if (cudaMalloc((void **)&d_in, sizeof in) != cudaSuccess ||
        cudaMalloc((void **)&d_out, sizeof out) != cudaSuccess ||
        cudaMemcpy(d_in, in, sizeof in, cudaMemcpyHostToDevice) != cudaSuccess) {
        run->bad = 1;
        return NULL;
    }
    for (int rep = 0; rep < 40 && !run->bad; rep++) {
        if (selftest_tree_sum(d_in, d_out, blocks, 1) != cudaSuccess ||
            cudaMemcpy(out, d_out, sizeof out, cudaMemcpyDeviceToHost) != cudaSuccess) {
            run->bad = 1;
            break;
        }
        for (int b = 0; b < blocks; b++) {
            float want = 0;
            for (int i = 0; i < 64; i++)
                want += in[b * 64 + i];
            run->bad |= out[b] != want;
        }
    }
    cudaFree(d_in);
    cudaFree(d_out);
    return NULL;
}

START_TEST(host_threads_launch_at_once)
{
    pthread_t threads[3];
    struct host_run runs[3] = {{1, 0}, {2, 0}, {3, 0}};
    for (int t = 0; t < 3; t++)
        ck_assert_int_eq(pthread_create(&threads[t], NULL, host_thread, &runs[t]), 0);
    for (int t = 0; t < 3; t++) {
        pthread_join(threads[t], NULL);
        ck_assert_msg(!runs[t].bad, "host thread %d saw a wrong sum or an error", t);
    }
    ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
}
END_TEST

START_TEST(a_race_fails)
{
    float host[64];
    for (int i = 0; i < 64; i++)
        host[i] = (float)i;
    float *d = device_floats(host, 64);
    /* the work runs at the launch: its launcher's cudaGetLastError may already say so (on a
     * GPU the next synchronising call would) */
    selftest_neighbour(d, 64);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    struct dg_emu_stats stats;
    dg_emu_get_stats(&stats);
    ck_assert_int_eq(stats.races, 1);
}
END_TEST

START_TEST(a_missing_barrier_fails)
{
    float in[128], out[2];
    for (int i = 0; i < 128; i++)
        in[i] = 1.0f;
    float *d_in = device_floats(in, 128), *d_out = device_floats(NULL, 2);
    selftest_tree_sum(d_in, d_out, 2, 0);
    ck_assert_int_eq(cudaMemcpy(out, d_out, sizeof out, cudaMemcpyDeviceToHost),
                     cudaErrorLaunchFailure);
}
END_TEST

START_TEST(a_divergent_barrier_fails)
{
    float *d = device_floats(NULL, 64);
    selftest_divergent(d);
    ck_assert_int_eq(cudaStreamSynchronize(0), cudaErrorLaunchFailure);
    struct dg_emu_stats stats;
    dg_emu_get_stats(&stats);
    ck_assert_int_eq(stats.barrier_errors, 1);
}
END_TEST

START_TEST(an_access_past_the_end_faults)
{
    float *d = device_floats(NULL, 100);
    ck_assert_int_eq(selftest_past_end(d, 100), cudaErrorIllegalAddress);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
    /* sticky: every later call says so, as after a device fault */
    void *p = NULL;
    ck_assert_int_eq(cudaMalloc(&p, 4), cudaErrorIllegalAddress);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorIllegalAddress);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorIllegalAddress);
}
END_TEST

START_TEST(a_host_pointer_argument_faults)
{
    float host[64];
    ck_assert_int_eq(selftest_neighbour(host, 64), cudaErrorIllegalAddress);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
}
END_TEST

START_TEST(launch_limits)
{
    unsigned *d = NULL;
    ck_assert_int_eq(cudaMalloc((void **)&d, 4096 * sizeof(unsigned)), cudaSuccess);
    ck_assert_int_eq(selftest_index(d, 1, 1, 1025, 1), cudaErrorInvalidConfiguration);
    ck_assert_int_eq(selftest_index(d, 1, 1, 64, 17), cudaErrorInvalidConfiguration);
    ck_assert_int_eq(selftest_index(d, 1, 65536, 1, 1), cudaErrorInvalidConfiguration);
    ck_assert_int_eq(selftest_index(d, 0, 1, 1, 1), cudaErrorInvalidConfiguration);
    /* a launch error is not sticky */
    ck_assert_int_eq(selftest_index(d, 2, 1, 32, 32), cudaSuccess);
}
END_TEST

START_TEST(too_much_shared_memory_fails)
{
    float *d = device_floats(NULL, 64);
    selftest_big_shared(d);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
}
END_TEST

/* ---- cuBLAS ---- */

/* C (m, n) = alpha op(A) op(B) + beta C, column-major, in double */
static void ref_gemm(int ta, int tb, int m, int n, int k, double alpha, const float *A, int lda,
                     const float *B, int ldb, double beta, const float *C0, int ldc, double *out)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
                double a = ta ? A[(size_t)i * lda + p] : A[(size_t)p * lda + i];
                double b = tb ? B[(size_t)p * ldb + j] : B[(size_t)j * ldb + p];
                s += a * b;
            }
            out[(size_t)j * m + i] = alpha * s + (beta != 0 ? beta * C0[(size_t)j * ldc + i] : 0);
        }
}

START_TEST(sgemm_against_the_reference)
{
    cublasHandle_t h;
    ck_assert_int_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    const int m = 13, n = 7, k = 29;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bz = 0; bz < 2; bz++) {
                int lda = (ta ? k : m) + 3, ldb = (tb ? n : k) + 2, ldc = m + 1;
                size_t na = (size_t)lda * (ta ? m : k), nb = (size_t)ldb * (tb ? k : n);
                size_t nc = (size_t)ldc * n;
                float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4);
                double *want = malloc((size_t)m * n * 8);
                for (size_t i = 0; i < na; i++)
                    A[i] = pattern(i);
                for (size_t i = 0; i < nb; i++)
                    B[i] = pattern(i + 11);
                for (size_t i = 0; i < nc; i++)
                    C[i] = bz ? NAN : pattern(i + 5); /* beta 0: C is not read */
                float alpha = 0.75f, beta = bz ? 0.0f : -0.5f;
                ref_gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, want);
                float *dA = device_floats(A, na), *dB = device_floats(B, nb);
                float *dC = device_floats(C, nc);
                ck_assert_int_eq(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA,
                                             lda, dB, ldb, &beta, dC, ldc),
                                 CUBLAS_STATUS_SUCCESS);
                download(C, dC, nc);
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < m; i++)
                        ck_assert_msg(fabs(C[(size_t)j * ldc + i] - want[(size_t)j * m + i]) <=
                                          1e-5 + 1e-5 * fabs(want[(size_t)j * m + i]),
                                      "ta %d tb %d beta0 %d (%d,%d): %g vs %g", ta, tb, bz, i,
                                      j, (double)C[(size_t)j * ldc + i], want[(size_t)j * m + i]);
                cudaFree(dA), cudaFree(dB), cudaFree(dC);
                free(A), free(B), free(C), free(want);
            }
    cublasDestroy(h);
}
END_TEST

START_TEST(sgemm_refuses_bad_leading_dimensions)
{
    cublasHandle_t h;
    ck_assert_int_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    float *d = device_floats(NULL, 1024), one = 1, zero = 0;
    /* op(A) = A (m x k) needs lda >= m; op(A) = A^T needs lda >= k; ldc >= m */
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 4, 6, &one, d, 7, d, 6, &zero,
                                 d, 8),
                     CUBLAS_STATUS_INVALID_VALUE);
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 8, 4, 6, &one, d, 5, d, 6, &zero,
                                 d, 8),
                     CUBLAS_STATUS_INVALID_VALUE);
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 4, 6, &one, d, 8, d, 6, &zero,
                                 d, 7),
                     CUBLAS_STATUS_INVALID_VALUE);
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 4, 6, &one, d, 8, d, 6, &zero,
                                 d, 8),
                     CUBLAS_STATUS_INVALID_VALUE);
    ck_assert_int_eq(cublasSgemm(NULL, CUBLAS_OP_N, CUBLAS_OP_N, 8, 4, 6, &one, d, 8, d, 6,
                                 &zero, d, 8),
                     CUBLAS_STATUS_NOT_INITIALIZED);
    ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
    /* a valid call whose B reaches past its allocation faults */
    float *small = device_floats(NULL, 10);
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 4, 6, &one, d, 8, small, 6,
                                 &zero, d, 8),
                     CUBLAS_STATUS_SUCCESS);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
}
END_TEST

START_TEST(tf32_math_rounds_the_inputs)
{
    cublasHandle_t h;
    ck_assert_int_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    /* 1 + 2^-12 is not a TF32 number (10 mantissa bits): rounded to 1 */
    float a = 1.0f + 1.0f / 4096.0f, b = 1.0f, c = 0, one = 1, zero = 0;
    float *dA = device_floats(&a, 1), *dB = device_floats(&b, 1), *dC = device_floats(&c, 1);
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dA, 1, dB, 1, &zero,
                                 dC, 1),
                     CUBLAS_STATUS_SUCCESS);
    download(&c, dC, 1);
    ck_assert_float_eq(c, a);
    ck_assert_int_eq(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dA, 1, dB, 1, &zero,
                                 dC, 1),
                     CUBLAS_STATUS_SUCCESS);
    download(&c, dC, 1);
    ck_assert_float_eq(c, 1.0f);
    ck_assert_float_eq(dg_emu_round_tf32(1.0f + 3.0f / 4096.0f), 1.0f + 1.0f / 1024.0f);
}
END_TEST

/* ---- cuDNN ---- */

struct conv_case {
    int n, c, h, w, k, r, s, pad, stride, dil;
};

static int conv_out(int in, int pad, int r, int dil, int stride)
{
    return (in + 2 * pad - ((r - 1) * dil + 1)) / stride + 1;
}

static double ref_x(const struct conv_case *q, const float *x, int n, int c, int y, int xx)
{
    if (y < 0 || y >= q->h || xx < 0 || xx >= q->w)
        return 0;
    return x[(((size_t)n * q->c + c) * q->h + y) * q->w + xx];
}

START_TEST(convolutions_against_the_reference)
{
    const struct conv_case cases[] = {
        {2, 3, 9, 8, 4, 3, 3, 1, 1, 1}, /* same */
        {2, 2, 11, 10, 3, 5, 5, 2, 2, 1}, /* strided */
        {1, 2, 10, 9, 2, 3, 3, 2, 1, 2}, /* dilated */
        {3, 1, 7, 7, 2, 3, 3, 0, 1, 1}, /* valid */
    };
    cudnnHandle_t h;
    ck_assert_int_eq(cudnnCreate(&h), CUDNN_STATUS_SUCCESS);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const struct conv_case *q = &cases[ci];
        int oh = conv_out(q->h, q->pad, q->r, q->dil, q->stride);
        int ow = conv_out(q->w, q->pad, q->s, q->dil, q->stride);
        size_t nx = (size_t)q->n * q->c * q->h * q->w, nw = (size_t)q->k * q->c * q->r * q->s;
        size_t ny = (size_t)q->n * q->k * oh * ow;
        float *x = malloc(nx * 4), *w = malloc(nw * 4), *dy = malloc(ny * 4);
        float *y = malloc(ny * 4), *dx = malloc(nx * 4), *dw = malloc(nw * 4);
        for (size_t i = 0; i < nx; i++)
            x[i] = pattern(i);
        for (size_t i = 0; i < nw; i++)
            w[i] = pattern(i + 3);
        for (size_t i = 0; i < ny; i++)
            dy[i] = pattern(i + 7);
        cudnnTensorDescriptor_t xd, yd;
        cudnnFilterDescriptor_t wd;
        cudnnConvolutionDescriptor_t cd;
        cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd);
        cudnnCreateFilterDescriptor(&wd), cudnnCreateConvolutionDescriptor(&cd);
        ck_assert_int_eq(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, q->n,
                                                    q->c, q->h, q->w),
                         CUDNN_STATUS_SUCCESS);
        ck_assert_int_eq(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, q->k,
                                                    q->c, q->r, q->s),
                         CUDNN_STATUS_SUCCESS);
        ck_assert_int_eq(cudnnSetConvolution2dDescriptor(cd, q->pad, q->pad, q->stride, q->stride,
                                                         q->dil, q->dil, CUDNN_CROSS_CORRELATION,
                                                         CUDNN_DATA_FLOAT),
                         CUDNN_STATUS_SUCCESS);
        cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH);
        int dn, dc, dh, dww;
        ck_assert_int_eq(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &dn, &dc, &dh, &dww),
                         CUDNN_STATUS_SUCCESS);
        ck_assert_int_eq(dh, oh);
        ck_assert_int_eq(dww, ow);
        cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, q->n, q->k, oh, ow);
        float *d_x = device_floats(x, nx), *d_w = device_floats(w, nw);
        float *d_dy = device_floats(dy, ny), *d_y = device_floats(NULL, ny);
        float *d_dx = device_floats(NULL, nx), *d_dw = device_floats(NULL, nw);
        float one = 1, zero = 0;
        ck_assert_int_eq(cudnnConvolutionForward(h, &one, xd, d_x, wd, d_w, cd,
                                                 CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL,
                                                 0, &zero, yd, d_y),
                         CUDNN_STATUS_SUCCESS);
        ck_assert_int_eq(cudnnConvolutionBackwardData(h, &one, wd, d_w, yd, d_dy, cd,
                                                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, NULL, 0,
                                                      &zero, xd, d_dx),
                         CUDNN_STATUS_SUCCESS);
        ck_assert_int_eq(cudnnConvolutionBackwardFilter(h, &one, xd, d_x, yd, d_dy, cd,
                                                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, NULL,
                                                        0, &zero, wd, d_dw),
                         CUDNN_STATUS_SUCCESS);
        download(y, d_y, ny), download(dx, d_dx, nx), download(dw, d_dw, nw);
        double *rdx = calloc(nx, 8), *rdw = calloc(nw, 8);
        for (int n = 0; n < q->n; n++)
            for (int k = 0; k < q->k; k++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        double s = 0;
                        size_t yi = (((size_t)n * q->k + k) * oh + oy) * ow + ox;
                        for (int c = 0; c < q->c; c++)
                            for (int i = 0; i < q->r; i++)
                                for (int j = 0; j < q->s; j++) {
                                    int iy = oy * q->stride - q->pad + i * q->dil;
                                    int ix = ox * q->stride - q->pad + j * q->dil;
                                    size_t wi = (((size_t)k * q->c + c) * q->r + i) * q->s + j;
                                    s += ref_x(q, x, n, c, iy, ix) * w[wi];
                                    rdw[wi] += ref_x(q, x, n, c, iy, ix) * dy[yi];
                                    if (iy >= 0 && iy < q->h && ix >= 0 && ix < q->w)
                                        rdx[(((size_t)n * q->c + c) * q->h + iy) * q->w + ix] +=
                                            w[wi] * dy[yi];
                                }
                        ck_assert_msg(fabs(y[yi] - s) <= 1e-5 + 1e-5 * fabs(s),
                                      "case %zu forward [%zu]: %g vs %g", ci, yi, (double)y[yi], s);
                    }
        for (size_t i = 0; i < nx; i++)
            ck_assert_msg(fabs(dx[i] - rdx[i]) <= 1e-5 + 1e-5 * fabs(rdx[i]),
                          "case %zu bwd data [%zu]: %g vs %g", ci, i, (double)dx[i], rdx[i]);
        for (size_t i = 0; i < nw; i++)
            ck_assert_msg(fabs(dw[i] - rdw[i]) <= 1e-5 + 1e-5 * fabs(rdw[i]),
                          "case %zu bwd filter [%zu]: %g vs %g", ci, i, (double)dw[i], rdw[i]);
        cudaFree(d_x), cudaFree(d_w), cudaFree(d_dy), cudaFree(d_y), cudaFree(d_dx),
            cudaFree(d_dw);
        free(x), free(w), free(dy), free(y), free(dx), free(dw), free(rdx), free(rdw);
        cudnnDestroyTensorDescriptor(xd), cudnnDestroyTensorDescriptor(yd);
        cudnnDestroyFilterDescriptor(wd), cudnnDestroyConvolutionDescriptor(cd);
    }
    cudnnDestroy(h);
}
END_TEST

START_TEST(cudnn_refuses_bad_arguments)
{
    cudnnHandle_t h;
    ck_assert_int_eq(cudnnCreate(&h), CUDNN_STATUS_SUCCESS);
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd);
    cudnnCreateFilterDescriptor(&wd), cudnnCreateConvolutionDescriptor(&cd);
    ck_assert_int_eq(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 0, 1, 8,
                                                8),
                     CUDNN_STATUS_BAD_PARAM);
    ck_assert_int_eq(cudnnSetConvolution2dDescriptor(cd, -1, 0, 1, 1, 1, 1,
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                     CUDNN_STATUS_BAD_PARAM);
    cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 3, 8, 8);
    cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 4, 3, 3, 3);
    cudnnSetConvolution2dDescriptor(cd, 0, 0, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                    CUDNN_DATA_FLOAT);
    /* padding 0 makes a 6x6 output: an 8x8 ("same") output descriptor is refused */
    cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 4, 8, 8);
    size_t bytes = 0;
    ck_assert_int_eq(cudnnGetConvolutionForwardWorkspaceSize(
                         h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, &bytes),
                     CUDNN_STATUS_BAD_PARAM);
    char message[256];
    cudnnGetLastErrorString(message, sizeof message);
    ck_assert_ptr_nonnull(strstr(message, "not the convolution's output"));
    cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 4, 6, 6);
    /* the algorithms that do not exist or do not apply */
    ck_assert_int_eq(cudnnGetConvolutionForwardWorkspaceSize(
                         h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, &bytes),
                     CUDNN_STATUS_NOT_SUPPORTED);
    ck_assert_int_eq(cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, yd,
                                                             (cudnnConvolutionFwdAlgo_t)99, &bytes),
                     CUDNN_STATUS_BAD_PARAM);
    /* GEMM needs a workspace: less than it is refused */
    ck_assert_int_eq(cudnnGetConvolutionForwardWorkspaceSize(
                         h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &bytes),
                     CUDNN_STATUS_SUCCESS);
    ck_assert_uint_gt(bytes, 0);
    float *d = device_floats(NULL, 4096), one = 1, zero = 0;
    ck_assert_int_eq(cudnnConvolutionForward(h, &one, xd, d, wd, d, cd,
                                             CUDNN_CONVOLUTION_FWD_ALGO_GEMM, d, bytes - 1, &zero,
                                             yd, d),
                     CUDNN_STATUS_BAD_PARAM);
    /* stride 2: no FFT */
    cudnnSetConvolution2dDescriptor(cd, 0, 0, 2, 2, 1, 1, CUDNN_CROSS_CORRELATION,
                                    CUDNN_DATA_FLOAT);
    cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 4, 3, 3);
    ck_assert_int_eq(cudnnGetConvolutionForwardWorkspaceSize(
                         h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_FFT, &bytes),
                     CUDNN_STATUS_NOT_SUPPORTED);
    /* a destroyed descriptor */
    cudnnDestroyFilterDescriptor(wd);
    ck_assert_int_eq(cudnnGetConvolutionForwardWorkspaceSize(
                         h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, &bytes),
                     CUDNN_STATUS_BAD_PARAM);
}
END_TEST

START_TEST(find_offers_what_fp32_must_refuse)
{
    cudnnHandle_t h;
    ck_assert_int_eq(cudnnCreate(&h), CUDNN_STATUS_SUCCESS);
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd);
    cudnnCreateFilterDescriptor(&wd), cudnnCreateConvolutionDescriptor(&cd);
    cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 4, 16, 14, 14);
    cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 4, 32, 14, 14);
    cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 32, 16, 3, 3);
    cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                    CUDNN_DATA_FLOAT);
    cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH);
    cudnnConvolutionFwdAlgoPerf_t perf[16];
    int returned = 0;
    ck_assert_int_eq(cudnnGetConvolutionForwardAlgorithm_v7(h, xd, wd, cd, yd, 16, &returned,
                                                            perf),
                     CUDNN_STATUS_SUCCESS);
    ck_assert_int_ge(returned, 4);
    /* the first offer is TF32-capable math, then FFT / Winograd ones, before plain FP32 */
    ck_assert_int_eq(perf[0].status, CUDNN_STATUS_SUCCESS);
    ck_assert_int_eq(perf[0].mathType, CUDNN_DEFAULT_MATH);
    int fma_gemm_at = -1, winograd_at = -1;
    for (int i = 0; i < returned; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS)
            continue;
        if (perf[i].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM &&
            perf[i].mathType == CUDNN_FMA_MATH && fma_gemm_at < 0)
            fma_gemm_at = i;
        if (perf[i].algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED && winograd_at < 0)
            winograd_at = i;
    }
    ck_assert_int_gt(fma_gemm_at, 0);
    ck_assert_int_ge(winograd_at, 0);
    ck_assert_int_lt(winograd_at, fma_gemm_at);
    /* Find wants device buffers and overwrites its output */
    float *dx = device_floats(NULL, 4 * 16 * 196), *dw = device_floats(NULL, 32 * 16 * 9);
    float *dy = device_floats(NULL, 4 * 32 * 196);
    float host[4];
    ck_assert_int_eq(cudnnFindConvolutionForwardAlgorithmEx(h, xd, dx, wd, dw, cd, yd, dy, 16,
                                                            &returned, perf, NULL, 0),
                     CUDNN_STATUS_SUCCESS);
    download(host, dy, 4);
    ck_assert(isnan(host[0]));
    /* with no workspace, the algorithms that need one are reported as failing */
    for (int i = 0; i < returned; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS)
            ck_assert_uint_eq(perf[i].memory, 0);
}
END_TEST

START_TEST(pooling_routes_to_the_first_maximum)
{
    cudnnHandle_t h;
    ck_assert_int_eq(cudnnCreate(&h), CUDNN_STATUS_SUCCESS);
    cudnnPoolingDescriptor_t pd;
    cudnnTensorDescriptor_t xd, yd;
    cudnnCreatePoolingDescriptor(&pd);
    cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd);
    cudnnSetPooling2dDescriptor(pd, CUDNN_POOLING_MAX_DETERMINISTIC, CUDNN_NOT_PROPAGATE_NAN, 2,
                                2, 0, 0, 2, 2);
    cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 2, 5);
    cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 1, 2);
    const float x[10] = {1, 3, 0, 0, 9, 3, 2, 0, 0, 9}; /* the 5th column is outside every window */
    float *d_x = device_floats(x, 10), *d_y = device_floats(NULL, 2);
    float y[2], one = 1, zero = 0;
    ck_assert_int_eq(cudnnPoolingForward(h, pd, &one, xd, d_x, &zero, yd, d_y),
                     CUDNN_STATUS_SUCCESS);
    download(y, d_y, 2);
    ck_assert_float_eq(y[0], 3.0f);
    ck_assert_float_eq(y[1], 0.0f);
    const float dy[2] = {5, 7};
    float *d_dy = device_floats(dy, 2), *d_dx = device_floats(NULL, 10), dx[10];
    ck_assert_int_eq(cudnnPoolingBackward(h, pd, &one, yd, d_y, yd, d_dy, xd, d_x, &zero, xd,
                                          d_dx),
                     CUDNN_STATUS_SUCCESS);
    download(dx, d_dx, 10);
    const float want[10] = {0, 5, 7, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 10; i++)
        ck_assert_float_eq(dx[i], want[i]);
    /* a 1x1 output descriptor is not this pooling's output */
    cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 1, 1);
    ck_assert_int_eq(cudnnPoolingForward(h, pd, &one, xd, d_x, &zero, yd, d_y),
                     CUDNN_STATUS_BAD_PARAM);
}
END_TEST

/* ---- stream capture and graphs ---- */

/* A pinned upload, a kernel and a GEMM captured on a stream: nothing runs at capture; each
 * launch of the graph runs them with the values the pinned buffer holds then, and the
 * arguments given at capture (alpha, the kernel's a and b) */
START_TEST(a_graph_replays_what_was_captured)
{
    enum { N = 64 };
    cudaStream_t s;
    cublasHandle_t h;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    ck_assert_int_eq(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
    float *pinned = NULL;
    ck_assert_int_eq(cudaHostAlloc((void **)&pinned, N * sizeof(float), 0), cudaSuccess);
    float *x = device_floats(NULL, N), *y = device_floats(NULL, 1);
    float fresh[N], got[N], dot = 0.0f;
    download(fresh, x, N);
    long launches0, replayed0, captured0;
    dg_emu_graph_counts(&launches0, &replayed0, &captured0);

    ck_assert_int_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    enum cudaStreamCaptureStatus capturing;
    ck_assert_int_eq(cudaStreamIsCapturing(s, &capturing), cudaSuccess);
    ck_assert_int_eq(capturing, cudaStreamCaptureStatusActive);
    ck_assert_int_eq(cudaMemcpyAsync(x, pinned, N * sizeof(float), cudaMemcpyHostToDevice, s),
                     cudaSuccess);
    ck_assert_int_eq(selftest_axpb(x, N, 2.0f, 1.0f, s), cudaSuccess);
    float alpha = 0.5f, beta = 0.0f;
    ck_assert_int_eq(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 1, 1, N, &alpha, x, N, x, N, &beta,
                                 y, 1),
                     CUBLAS_STATUS_SUCCESS);
    alpha = 7.0f; /* read at the call: the graph keeps 0.5 */
    cudaGraph_t graph = NULL;
    ck_assert_int_eq(cudaStreamEndCapture(s, &graph), cudaSuccess);
    ck_assert_ptr_nonnull(graph);
    download(got, x, N);
    ck_assert_mem_eq(got, fresh, sizeof got); /* nothing ran */
    cudaGraphExec_t exec = NULL;
    ck_assert_int_eq(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ck_assert_int_eq(cudaGraphDestroy(graph), cudaSuccess); /* the executable lives on */

    for (int round = 0; round < 2; round++) {
        double want_dot = 0.0;
        for (int i = 0; i < N; i++) {
            pinned[i] = pattern((size_t)(i + 17 * round));
            float v = 2.0f * pinned[i] + 1.0f;
            want_dot += (double)v * v;
        }
        ck_assert_int_eq(cudaGraphLaunch(exec, s), cudaSuccess);
        ck_assert_int_eq(cudaStreamSynchronize(s), cudaSuccess);
        download(got, x, N);
        for (int i = 0; i < N; i++)
            ck_assert_float_eq(got[i], 2.0f * pinned[i] + 1.0f);
        download(&dot, y, 1);
        ck_assert_double_eq_tol(dot, 0.5 * want_dot, 1e-4 * want_dot);
    }
    long launches, replayed, captured;
    dg_emu_graph_counts(&launches, &replayed, &captured);
    ck_assert_int_eq(launches - launches0, 2);
    ck_assert_int_eq(captured - captured0, 3);
    ck_assert_int_eq(replayed - replayed0, 6);
    ck_assert_int_eq(cudaGraphExecDestroy(exec), cudaSuccess);
    ck_assert_int_eq(cudaGraphExecDestroy(exec), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidValue);
    cublasDestroy(h);
}
END_TEST

/* What may not happen during a capture (allocation, a wait for the device) invalidates it: the
 * call fails, later work on the stream fails, and ending the capture gives no graph. */
START_TEST(unsafe_calls_invalidate_a_capture)
{
    cudaStream_t s;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    float *x = device_floats(NULL, 32);
    const char *calls[] = {"cudaMalloc", "cudaStreamSynchronize", "cudaMemcpy",
                           "pageable cudaMemcpyAsync"};
    for (int c = 0; c < 4; c++) {
        ck_assert_int_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal),
                         cudaSuccess);
        ck_assert_int_eq(selftest_axpb(x, 32, 1.0f, 1.0f, s), cudaSuccess);
        float host[32];
        void *p = NULL;
        cudaError_t got = c == 0   ? cudaMalloc(&p, 64)
                          : c == 1 ? cudaStreamSynchronize(s)
                          : c == 2 ? cudaMemcpy(host, x, sizeof host, cudaMemcpyDeviceToHost)
                                   : cudaMemcpyAsync(host, x, sizeof host,
                                                     cudaMemcpyDeviceToHost, s);
        ck_assert_msg(got == cudaErrorStreamCaptureUnsupported, "%s during a capture: %s",
                      calls[c], cudaGetErrorName(got));
        if (c != 3) { /* the pageable copy is refused without invalidating */
            ck_assert_int_eq(selftest_axpb(x, 32, 1.0f, 1.0f, s),
                             cudaErrorStreamCaptureInvalidated);
            cudaGraph_t graph = (cudaGraph_t)1;
            ck_assert_int_eq(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
            ck_assert_ptr_null(graph);
        } else {
            cudaGraph_t graph = NULL;
            ck_assert_int_eq(cudaStreamEndCapture(s, &graph), cudaSuccess);
            ck_assert_int_eq(cudaGraphDestroy(graph), cudaSuccess);
        }
        cudaGetLastError();
    }
    /* after all that the stream works as before */
    ck_assert_int_eq(cudaMemsetAsync(x, 0, 32 * sizeof(float), s), cudaSuccess);
    ck_assert_int_eq(selftest_axpb(x, 32, 1.0f, 3.0f, s), cudaSuccess);
    float out[32];
    download(out, x, 32);
    ck_assert_float_eq(out[31], 3.0f);
}
END_TEST

static void *allocate_elsewhere(void *arg)
{
    void *p = NULL;
    *(cudaError_t *)arg = cudaMalloc(&p, 256);
    if (p)
        cudaFree(p);
    return NULL;
}

/* A ThreadLocal capture leaves other threads free to allocate (concurrent ensemble members);
 * a Global one does not. */
START_TEST(capture_modes_reach_other_threads_as_documented)
{
    cudaStream_t s;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    enum cudaStreamCaptureMode modes[2] = {cudaStreamCaptureModeThreadLocal,
                                           cudaStreamCaptureModeGlobal};
    cudaError_t want[2] = {cudaSuccess, cudaErrorStreamCaptureUnsupported};
    for (int m = 0; m < 2; m++) {
        ck_assert_int_eq(cudaStreamBeginCapture(s, modes[m]), cudaSuccess);
        cudaError_t got = cudaErrorUnknown;
        pthread_t t;
        pthread_create(&t, NULL, allocate_elsewhere, &got);
        pthread_join(t, NULL);
        ck_assert_msg(got == want[m], "mode %d: cudaMalloc on another thread: %s", (int)modes[m],
                      cudaGetErrorName(got));
        cudaGraph_t graph = NULL;
        cudaError_t ended = cudaStreamEndCapture(s, &graph);
        ck_assert_int_eq(ended, m == 0 ? cudaSuccess : cudaErrorStreamCaptureInvalidated);
        if (graph)
            cudaGraphDestroy(graph);
        cudaGetLastError();
    }
}
END_TEST

/* A graph whose memory was freed since the capture faults when it runs, as a device would. */
START_TEST(a_graph_over_freed_memory_faults)
{
    cudaStream_t s;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    float *x = device_floats(NULL, 32);
    ck_assert_int_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    ck_assert_int_eq(selftest_axpb(x, 32, 1.0f, 1.0f, s), cudaSuccess);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    ck_assert_int_eq(cudaStreamEndCapture(s, &graph), cudaSuccess);
    ck_assert_int_eq(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ck_assert_int_eq(cudaFree(x), cudaSuccess);
    cudaGraphLaunch(exec, s);
    ck_assert_int_eq(cudaStreamSynchronize(s), cudaErrorIllegalAddress);
}
END_TEST

static Suite *emu_suite(void)
{
    Suite *s = suite_create("emulated device");
    TCase *rt = tcase_create("runtime");
    tcase_add_test(rt, double_free_is_refused);
    tcase_add_test(rt, copies_past_an_allocation_are_refused);
    tcase_add_test(rt, memory_is_counted_and_limited);
    tcase_add_test(rt, fresh_device_memory_is_not_zero);
    tcase_add_test(rt, destroyed_handles_are_refused);
    tcase_add_test(rt, events_time_the_work_between_them);
    tcase_add_test(rt, no_device_when_none_is_visible);
    suite_add_tcase(s, rt);
    TCase *k = tcase_create("kernels");
    tcase_add_test(k, thread_and_block_indices);
    tcase_add_test(k, a_correct_reduction_passes);
    tcase_add_test(k, host_threads_launch_at_once);
    tcase_add_test(k, a_race_fails);
    tcase_add_test(k, a_missing_barrier_fails);
    tcase_add_test(k, a_divergent_barrier_fails);
    tcase_add_test(k, an_access_past_the_end_faults);
    tcase_add_test(k, a_host_pointer_argument_faults);
    tcase_add_test(k, launch_limits);
    tcase_add_test(k, too_much_shared_memory_fails);
    suite_add_tcase(s, k);
    TCase *lib = tcase_create("libraries");
    tcase_add_test(lib, sgemm_against_the_reference);
    tcase_add_test(lib, sgemm_refuses_bad_leading_dimensions);
    tcase_add_test(lib, tf32_math_rounds_the_inputs);
    tcase_add_test(lib, convolutions_against_the_reference);
    tcase_add_test(lib, cudnn_refuses_bad_arguments);
    tcase_add_test(lib, find_offers_what_fp32_must_refuse);
    tcase_add_test(lib, pooling_routes_to_the_first_maximum);
    suite_add_tcase(s, lib);
    TCase *g = tcase_create("graphs");
    tcase_add_test(g, a_graph_replays_what_was_captured);
    tcase_add_test(g, unsafe_calls_invalidate_a_capture);
    tcase_add_test(g, capture_modes_reach_other_threads_as_documented);
    tcase_add_test(g, a_graph_over_freed_memory_faults);
    suite_add_tcase(s, g);
    return s;
}

int main(void)
{
    SRunner *runner = srunner_create(emu_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? 1 : 0;
}
