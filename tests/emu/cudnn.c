/* The emulated cuDNN: handles, tensor / filter / convolution / pooling descriptors, the
 * algorithm queries (cudnnFind*AlgorithmEx, cudnnGet*Algorithm_v7), workspace sizes, and
 * convolution forward, backward-data and backward-filter, pooling forward / backward and batch
 * normalisation (forward training / inference, backward; spatial mode) with
 * alpha / beta blending (beta 0: the output is not read), for float NCHW tensors with any
 * padding, stride and dilation, cross-correlation or convolution. Written from NVIDIA's cuDNN
 * API reference, independently of Digits' CPU backend: im2col per image with OpenBLAS's sgemm.
 *
 * Bad arguments get the documented codes: NULL or destroyed descriptors, non-positive
 * dimensions, shapes that disagree, an output descriptor that is not the convolution's
 * output: CUDNN_STATUS_BAD_PARAM; an algorithm out of range or one that does not apply to the
 * shape (FFT with stride, Winograd beyond 3x3 / 5x5, the unimplemented ones), a data type other
 * than float: CUDNN_STATUS_NOT_SUPPORTED; a workspace smaller than the algorithm's:
 * CUDNN_STATUS_BAD_PARAM. Tensor pointers must lie in device memory, else the call faults
 * (sticky cudaErrorIllegalAddress), as a device would.
 *
 * The algorithm queries return several candidates per direction in a fixed order (the
 * emulation's "timings"), among them CUDNN_DEFAULT_MATH entries, non-deterministic ones and
 * FFT / Winograd ones, as real cuDNN does, so that a backend's filter over them is exercised.
 * A convolution run with a math type other than CUDNN_FMA_MATH rounds its inputs to TF32 as
 * Ampere-and-later tensor cores do (the emulated device is compute capability 9.0). */
#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cudnn.h>

#include "emu_internal.h"

#define MAGIC_HANDLE 0x444e4e48u
#define MAGIC_TENSOR 0x444e4e54u
#define MAGIC_FILTER 0x444e4e46u
#define MAGIC_CONV 0x444e4e43u
#define MAGIC_POOL 0x444e4e50u

struct cudnnContext {
    unsigned magic;
    int alive;
    cudaStream_t stream;
};

struct cudnnTensorStruct {
    unsigned magic;
    int alive, set;
    cudnnDataType_t type;
    cudnnTensorFormat_t format;
    int n, c, h, w;
};

struct cudnnFilterStruct {
    unsigned magic;
    int alive, set;
    cudnnDataType_t type;
    cudnnTensorFormat_t format;
    int k, c, h, w;
};

struct cudnnConvolutionStruct {
    unsigned magic;
    int alive, set;
    int pad_h, pad_w, stride_h, stride_w, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

struct cudnnPoolingStruct {
    unsigned magic;
    int alive, set;
    cudnnPoolingMode_t mode;
    cudnnNanPropagation_t nan;
    int win_h, win_w, pad_h, pad_w, stride_h, stride_w;
};

static __thread char last_message[512];

static cudnnStatus_t fail(cudnnStatus_t status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static cudnnStatus_t fail(cudnnStatus_t status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    dg_emu_report("cuDNN: %s", last_message);
    return status;
}

/* ---- library ---- */

size_t cudnnGetVersion(void)
{
    return CUDNN_VERSION;
}

const char *cudnnGetErrorString(cudnnStatus_t status)
{
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    case CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED:
        return "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED";
    default: return "CUDNN_STATUS_UNKNOWN";
    }
}

void cudnnGetLastErrorString(char *message, size_t max_size)
{
    if (!message || max_size == 0)
        return;
    snprintf(message, max_size, "%s", last_message);
    last_message[0] = '\0';
}

static int handle_ok(cudnnHandle_t h)
{
    return h && h->magic == MAGIC_HANDLE && h->alive;
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle)
{
    if (!handle)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreate: NULL handle pointer");
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        cudaGetLastError();
        return fail(CUDNN_STATUS_NOT_INITIALIZED, "cudnnCreate: no device");
    }
    struct cudnnContext *h = calloc(1, sizeof *h);
    if (!h)
        return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    h->magic = MAGIC_HANDLE;
    h->alive = 1;
    *handle = h;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle)
{
    if (!handle_ok(handle))
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy: not a live handle");
    handle->alive = 0;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream)
{
    if (!handle_ok(handle))
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: not a live handle");
    if (!dg_emu_stream_ok(stream))
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: not a live stream");
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- descriptors ---- */

#define DESCRIPTOR_LIFETIME(Kind, Struct, MAGIC)                                                   \
    cudnnStatus_t cudnnCreate##Kind##Descriptor(Struct **desc)                                     \
    {                                                                                              \
        if (!desc)                                                                                 \
            return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreate" #Kind "Descriptor: NULL pointer");   \
        Struct *d = calloc(1, sizeof *d);                                                          \
        if (!d)                                                                                    \
            return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;                             \
        d->magic = MAGIC;                                                                          \
        d->alive = 1;                                                                              \
        *desc = d;                                                                                 \
        return CUDNN_STATUS_SUCCESS;                                                               \
    }                                                                                              \
    cudnnStatus_t cudnnDestroy##Kind##Descriptor(Struct *desc)                                     \
    {                                                                                              \
        if (!desc)                                                                                 \
            return CUDNN_STATUS_SUCCESS;                                                           \
        if (desc->magic != MAGIC || !desc->alive)                                                  \
            return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy" #Kind "Descriptor: not a live "     \
                                                "descriptor (destroyed twice?)");                  \
        desc->alive = 0; /* kept, so that a later use is recognised */                             \
        return CUDNN_STATUS_SUCCESS;                                                               \
    }

DESCRIPTOR_LIFETIME(Tensor, struct cudnnTensorStruct, MAGIC_TENSOR)
DESCRIPTOR_LIFETIME(Filter, struct cudnnFilterStruct, MAGIC_FILTER)
DESCRIPTOR_LIFETIME(Convolution, struct cudnnConvolutionStruct, MAGIC_CONV)
DESCRIPTOR_LIFETIME(Pooling, struct cudnnPoolingStruct, MAGIC_POOL)

static int type_known(cudnnDataType_t t)
{
    return t == CUDNN_DATA_FLOAT || t == CUDNN_DATA_HALF || t == CUDNN_DATA_BFLOAT16 ||
           t == CUDNN_DATA_DOUBLE;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w)
{
    if (!d || d->magic != MAGIC_TENSOR || !d->alive)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetTensor4dDescriptor: not a live descriptor");
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnSetTensor4dDescriptor: dimensions %d x %d x %d x %d (all must be > 0)",
                    n, c, h, w);
    if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetTensor4dDescriptor: format %d", format);
    if (!type_known(type))
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetTensor4dDescriptor: data type %d", type);
    if ((double)n * c * h * w > 2147483647.0)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "cudnnSetTensor4dDescriptor: over 2^31 elements");
    d->format = format;
    d->type = type;
    d->n = n;
    d->c = c;
    d->h = h;
    d->w = w;
    d->set = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w)
{
    if (!d || d->magic != MAGIC_FILTER || !d->alive)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetFilter4dDescriptor: not a live descriptor");
    if (k <= 0 || c <= 0 || h <= 0 || w <= 0)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnSetFilter4dDescriptor: dimensions %d x %d x %d x %d (all must be > 0)",
                    k, c, h, w);
    if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetFilter4dDescriptor: format %d", format);
    if (!type_known(type))
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetFilter4dDescriptor: data type %d", type);
    d->type = type;
    d->format = format;
    d->k = k;
    d->c = c;
    d->h = h;
    d->w = w;
    d->set = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute)
{
    if (!d || d->magic != MAGIC_CONV || !d->alive)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnSetConvolution2dDescriptor: not a live descriptor");
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnSetConvolution2dDescriptor: padding %d,%d (>= 0), stride %d,%d and "
                    "dilation %d,%d (> 0)",
                    pad_h, pad_w, u, v, dilation_h, dilation_w);
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolution2dDescriptor: mode %d", mode);
    if (!type_known(compute))
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolution2dDescriptor: compute type %d",
                    compute);
    d->pad_h = pad_h;
    d->pad_w = pad_w;
    d->stride_h = u;
    d->stride_w = v;
    d->dil_h = dilation_h;
    d->dil_w = dilation_w;
    d->mode = mode;
    d->compute = compute;
    d->set = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math)
{
    if (!d || d->magic != MAGIC_CONV || !d->alive)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: not a live descriptor");
    if (math != CUDNN_DEFAULT_MATH && math != CUDNN_TENSOR_OP_MATH &&
        math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && math != CUDNN_FMA_MATH)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: math type %d", math);
    d->math = math;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t *math)
{
    if (!d || d->magic != MAGIC_CONV || !d->alive || !math)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetConvolutionMathType: bad arguments");
    *math = d->math;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetPooling2dDescriptor(cudnnPoolingDescriptor_t d, cudnnPoolingMode_t mode,
                                          cudnnNanPropagation_t nan, int win_h, int win_w,
                                          int pad_h, int pad_w, int stride_h, int stride_w)
{
    if (!d || d->magic != MAGIC_POOL || !d->alive)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetPooling2dDescriptor: not a live descriptor");
    if (win_h <= 0 || win_w <= 0 || pad_h < 0 || pad_w < 0 || stride_h <= 0 || stride_w <= 0)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnSetPooling2dDescriptor: window %dx%d, padding %d,%d, stride %d,%d", win_h,
                    win_w, pad_h, pad_w, stride_h, stride_w);
    if (mode != CUDNN_POOLING_MAX && mode != CUDNN_POOLING_MAX_DETERMINISTIC &&
        mode != CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING &&
        mode != CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetPooling2dDescriptor: mode %d", mode);
    d->mode = mode;
    d->nan = nan;
    d->win_h = win_h;
    d->win_w = win_w;
    d->pad_h = pad_h;
    d->pad_w = pad_w;
    d->stride_h = stride_h;
    d->stride_w = stride_w;
    d->set = 1;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- shapes ---- */

static int tensor_ok(cudnnTensorDescriptor_t t)
{
    return t && t->magic == MAGIC_TENSOR && t->alive && t->set;
}

static int filter_ok(cudnnFilterDescriptor_t f)
{
    return f && f->magic == MAGIC_FILTER && f->alive && f->set;
}

static int conv_ok(cudnnConvolutionDescriptor_t c)
{
    return c && c->magic == MAGIC_CONV && c->alive && c->set;
}

static int out_dim(int in, int pad, int kernel, int dil, int stride)
{
    int span = (kernel - 1) * dil + 1;
    return (in + 2 * pad - span) / stride + 1;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t conv,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int *n,
                                                    int *c, int *h, int *wd)
{
    if (!conv_ok(conv) || !tensor_ok(x) || !filter_ok(w) || !n || !c || !h || !wd)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnGetConvolution2dForwardOutputDim: a descriptor is not live and set, "
                    "or an output pointer is NULL");
    if (x->c != w->c)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnGetConvolution2dForwardOutputDim: input has %d channels, filter %d",
                    x->c, w->c);
    int oh = out_dim(x->h, conv->pad_h, w->h, conv->dil_h, conv->stride_h);
    int ow = out_dim(x->w, conv->pad_w, w->w, conv->dil_w, conv->stride_w);
    if (oh <= 0 || ow <= 0)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnGetConvolution2dForwardOutputDim: the filter is larger than the padded "
                    "input");
    *n = x->n;
    *c = w->k;
    *h = oh;
    *wd = ow;
    return CUDNN_STATUS_SUCCESS;
}

/* The problem of one convolution call, checked: x (n, c, h, w), w (k, c, r, s), y (n, k, oh,
 * ow) the exact output of the descriptor; float NCHW only. */
struct problem {
    int n, c, h, w, k, r, s, oh, ow;
    int pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, flip;
    int tf32;
    int bf16; /* PSEUDO_BFLOAT16: x, w, y bf16, float compute */
};

static cudnnStatus_t problem_make(const char *call, cudnnTensorDescriptor_t x,
                                  cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                                  cudnnTensorDescriptor_t y, struct problem *p)
{
    if (!tensor_ok(x) || !tensor_ok(y) || !filter_ok(w) || !conv_ok(conv))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: a descriptor is NULL, destroyed or never set",
                    call);
    if (x->c != w->c)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: input has %d channels, filter %d", call, x->c,
                    w->c);
    int oh = out_dim(x->h, conv->pad_h, w->h, conv->dil_h, conv->stride_h);
    int ow = out_dim(x->w, conv->pad_w, w->w, conv->dil_w, conv->stride_w);
    if (y->n != x->n || y->c != w->k || y->h != oh || y->w != ow)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "%s: output descriptor %dx%dx%dx%d is not the convolution's output "
                    "%dx%dx%dx%d (input %dx%dx%dx%d, filter %dx%dx%dx%d, padding %d,%d, stride "
                    "%d,%d)",
                    call, y->n, y->c, y->h, y->w, x->n, w->k, oh, ow, x->n, x->c, x->h, x->w,
                    w->k, w->c, w->h, w->w, conv->pad_h, conv->pad_w, conv->stride_h,
                    conv->stride_w);
    /* the FLOAT configuration, or PSEUDO_BFLOAT16 (bf16 tensors and filter, float compute) */
    int bf16 = x->type == CUDNN_DATA_BFLOAT16;
    cudnnDataType_t data = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    if (x->type != data || y->type != data || w->type != data || conv->compute != CUDNN_DATA_FLOAT)
        return fail(CUDNN_STATUS_NOT_SUPPORTED,
                    "%s: data types x %d, w %d, y %d, compute %d: the emulation computes the "
                    "FLOAT and PSEUDO_BFLOAT16 configurations (x, w, y all float or all bf16, "
                    "float compute)",
                    call, (int)x->type, (int)w->type, (int)y->type, (int)conv->compute);
    if (x->format != CUDNN_TENSOR_NCHW || y->format != CUDNN_TENSOR_NCHW ||
        w->format != CUDNN_TENSOR_NCHW)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: the emulation computes NCHW only", call);
    *p = (struct problem){x->n, x->c, x->h, x->w, w->k, w->h, w->w, oh, ow, conv->pad_h,
                          conv->pad_w, conv->stride_h, conv->stride_w, conv->dil_h, conv->dil_w,
                          conv->mode == CUDNN_CONVOLUTION, conv->math != CUDNN_FMA_MATH, bf16};
    return CUDNN_STATUS_SUCCESS;
}

/* ---- algorithms: which apply, and their workspace ---- */

enum direction { FWD, BWD_DATA, BWD_FILTER };

static const char *direction_call[3] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                        "cudnnConvolutionBackwardFilter"};

static int is_fft(enum direction d, int algo)
{
    if (d == FWD)
        return algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT || algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING;
    if (d == BWD_DATA)
        return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING;
    return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
           algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING;
}

static int is_winograd(enum direction d, int algo, int *fused)
{
    *fused = 0;
    if (d == FWD) {
        *fused = algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD;
        return algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
    }
    if (d == BWD_DATA) {
        *fused = algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD;
        return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
    }
    *fused = algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD;
    return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD ||
           algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

static int algo_count(enum direction d)
{
    return d == FWD ? CUDNN_CONVOLUTION_FWD_ALGO_COUNT
           : d == BWD_DATA ? CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT
                           : CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
}

/* CUDNN_STATUS_SUCCESS with the workspace when `algo` runs this problem. */
static cudnnStatus_t algo_workspace(enum direction d, int algo, const struct problem *p,
                                    size_t *bytes, const char **why)
{
    *bytes = 0;
    *why = "";
    if (algo < 0 || algo >= algo_count(d)) {
        *why = "no such algorithm";
        return CUDNN_STATUS_BAD_PARAM;
    }
    int fused = 0;
    int unit = p->stride_h == 1 && p->stride_w == 1 && p->dil_h == 1 && p->dil_w == 1;
    size_t image = (size_t)p->h * p->w, out = (size_t)p->oh * p->ow;
    if (d == FWD && algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT) {
        *why = "DIRECT is not implemented by cuDNN";
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (d == BWD_FILTER && algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD) {
        *why = "backward-filter WINOGRAD is not implemented by cuDNN";
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (is_fft(d, algo)) {
        if (!unit) {
            *why = "FFT needs stride 1 and no dilation";
            return CUDNN_STATUS_NOT_SUPPORTED;
        }
        size_t tile = (size_t)(p->h + p->r) * (p->w + p->s);
        *bytes = (size_t)p->n * (p->c + p->k) * tile * 8 + (size_t)p->k * p->c * tile * 8;
        return CUDNN_STATUS_SUCCESS;
    }
    if (is_winograd(d, algo, &fused)) {
        if (!unit || p->r != p->s || (p->r != 3 && (fused || p->r != 5))) {
            *why = fused ? "WINOGRAD needs 3x3 filters, stride 1"
                         : "WINOGRAD_NONFUSED needs 3x3 or 5x5 filters, stride 1";
            return CUDNN_STATUS_NOT_SUPPORTED;
        }
        *bytes = fused ? 0 : (size_t)(p->n * p->c + p->n * p->k + p->k * p->c) * 36 *
                                 ((image + 15) / 16) * 4;
        return CUDNN_STATUS_SUCCESS;
    }
    if (d == FWD && algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM)
        *bytes = (size_t)p->c * p->r * p->s * out * 4;
    else if (d == FWD && algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
        *bytes = (size_t)p->c * p->r * p->s * 8;
    else if (d == BWD_FILTER && algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3)
        *bytes = (size_t)p->k * p->c * p->r * p->s * 4;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t workspace_query(enum direction d, cudnnHandle_t handle,
                                     cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                                     cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y,
                                     int algo, size_t *bytes, const char *call)
{
    struct problem p;
    if (!handle_ok(handle))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: not a live handle", call);
    if (!bytes)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: NULL sizeInBytes", call);
    cudnnStatus_t st = problem_make(call, x, w, conv, y, &p);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    const char *why = "";
    st = algo_workspace(d, algo, &p, bytes, &why);
    if (st != CUDNN_STATUS_SUCCESS)
        return fail(st, "%s: algorithm %d: %s", call, algo, why);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle,
                                                      const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t conv,
                                                      const cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes)
{
    return workspace_query(FWD, handle, x, w, conv, y, (int)algo, bytes,
                           "cudnnGetConvolutionForwardWorkspaceSize");
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes)
{
    return workspace_query(BWD_DATA, handle, dx, w, conv, dy, (int)algo, bytes,
                           "cudnnGetConvolutionBackwardDataWorkspaceSize");
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes)
{
    return workspace_query(BWD_FILTER, handle, x, dw, conv, dy, (int)algo, bytes,
                           "cudnnGetConvolutionBackwardFilterWorkspaceSize");
}

/* ---- the algorithm queries ---- */

struct candidate {
    int algo;
    cudnnMathType_t math;
    cudnnDeterminism_t determinism;
    float time; /* ms, the emulation's fixed "measurement" */
};

/* Per direction, fastest first. The fastest entries are ones an FP32 run must refuse: TF32
 * math (CUDNN_DEFAULT_MATH on compute capability >= 8.0), FFT / Winograd, non-deterministic. */
static const struct candidate fwd_candidates[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_DEFAULT_MATH, CUDNN_DETERMINISTIC,
     0.010f},
    {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.015f},
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.020f},
    {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.025f},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.030f},
    {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.040f},
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.050f},
    {CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.060f},
};

static const struct candidate bwd_data_candidates[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_FMA_MATH, CUDNN_NON_DETERMINISTIC, 0.010f},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_DEFAULT_MATH, CUDNN_DETERMINISTIC, 0.012f},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC,
     0.015f},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.020f},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.025f},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.030f},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.050f},
};

static const struct candidate bwd_filter_candidates[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_DEFAULT_MATH, CUDNN_DETERMINISTIC, 0.010f},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_FMA_MATH, CUDNN_NON_DETERMINISTIC, 0.012f},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC,
     0.015f},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.020f},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, CUDNN_FMA_MATH, CUDNN_NON_DETERMINISTIC, 0.025f},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.030f},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.050f},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC, 0.060f},
};

struct perf {
    int algo;
    cudnnStatus_t status;
    float time;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
};

/* Fills the list: applicable candidates first in their order (those needing more workspace
 * than `workspace_limit` marked as failing to allocate), then the rest as NOT_SUPPORTED. */
static int candidates_list(enum direction d, const struct problem *p, size_t workspace_limit,
                           int measured, struct perf *out, int requested)
{
    const struct candidate *list = d == FWD        ? fwd_candidates
                                   : d == BWD_DATA ? bwd_data_candidates
                                                   : bwd_filter_candidates;
    int count = d == FWD        ? (int)(sizeof fwd_candidates / sizeof fwd_candidates[0])
                : d == BWD_DATA ? (int)(sizeof bwd_data_candidates / sizeof bwd_data_candidates[0])
                                : (int)(sizeof bwd_filter_candidates /
                                        sizeof bwd_filter_candidates[0]);
    int n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < count && n < requested; i++) {
            size_t bytes = 0;
            const char *why = "";
            int ok = algo_workspace(d, list[i].algo, p, &bytes, &why) == CUDNN_STATUS_SUCCESS;
            if (ok != (pass == 0))
                continue;
            struct perf e = {list[i].algo, CUDNN_STATUS_SUCCESS, measured ? list[i].time : -1.0f,
                             bytes, list[i].determinism, list[i].math};
            if (!ok) {
                e.status = CUDNN_STATUS_NOT_SUPPORTED;
                e.time = -1.0f;
                e.memory = 0;
            } else if (measured && bytes > workspace_limit) {
                e.status = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
                e.time = -1.0f;
            }
            out[n++] = e;
        }
    last_message[0] = '\0';
    return n;
}

static int device_ok(const void *p, size_t bytes)
{
    return bytes == 0 || dg_emu_range_ok(p, bytes, DG_EMU_DEVICE);
}

static size_t type_bytes(cudnnDataType_t t)
{
    return t == CUDNN_DATA_DOUBLE ? 8 : t == CUDNN_DATA_FLOAT ? 4 : 2;
}

static size_t tensor_bytes(cudnnTensorDescriptor_t t)
{
    return (size_t)t->n * t->c * t->h * t->w * type_bytes(t->type);
}

static size_t filter_bytes(cudnnFilterDescriptor_t f)
{
    return (size_t)f->k * f->c * f->h * f->w * type_bytes(f->type);
}

/* What every query checks; for Find also the buffers and the workspace. */
static cudnnStatus_t query(enum direction d, const char *call, cudnnHandle_t handle,
                           cudnnTensorDescriptor_t x, const void *xp, cudnnFilterDescriptor_t w,
                           const void *wp, cudnnConvolutionDescriptor_t conv,
                           cudnnTensorDescriptor_t y, void *yp, int requested, int *returned,
                           struct perf *perf, void *workspace, size_t workspace_bytes,
                           int measured)
{
    struct problem p;
    if (!handle_ok(handle))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: not a live handle", call);
    if (requested <= 0 || !returned || !perf)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "%s: requestedAlgoCount %d (> 0), returnedAlgoCount and perfResults must be "
                    "given",
                    call, requested);
    cudnnStatus_t st = problem_make(call, x, w, conv, y, &p);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (measured) {
        if (dg_emu_capture_unsafe(call) != cudaSuccess)
            return fail(CUDNN_STATUS_EXECUTION_FAILED,
                        "%s: the algorithm search allocates and synchronises: not during a "
                        "stream capture",
                        call);
        if (!device_ok(xp, tensor_bytes(x)) || !device_ok(wp, filter_bytes(w)) ||
            !device_ok(yp, tensor_bytes(y))) {
            dg_emu_fault(cudaErrorIllegalAddress,
                         "%s: a tensor or filter buffer is not inside device memory of its "
                         "descriptor's size",
                         call);
            return CUDNN_STATUS_EXECUTION_FAILED;
        }
        if (workspace_bytes && !device_ok(workspace, workspace_bytes)) {
            dg_emu_fault(cudaErrorIllegalAddress,
                         "%s: the workspace (%p, %zu bytes) is not inside device memory", call,
                         workspace, workspace_bytes);
            return CUDNN_STATUS_EXECUTION_FAILED;
        }
        /* Find runs the algorithms on these buffers: their previous contents are gone */
        void *out = d == FWD ? yp : d == BWD_DATA ? (void *)xp : (void *)wp;
        size_t out_bytes = d == FWD ? tensor_bytes(y) : d == BWD_DATA ? tensor_bytes(x)
                                                                      : filter_bytes(w);
        memset(out, 0xff, out_bytes);
    }
    *returned = candidates_list(d, &p, workspace_bytes, measured, perf, requested);
    return CUDNN_STATUS_SUCCESS;
}

#define COPY_PERF(dst, src, n, Algo)                                                               \
    for (int i_ = 0; i_ < (n); i_++) {                                                             \
        memset(&(dst)[i_], 0, sizeof (dst)[i_]);                                                   \
        (dst)[i_].algo = (Algo)(src)[i_].algo;                                                     \
        (dst)[i_].status = (src)[i_].status;                                                       \
        (dst)[i_].time = (src)[i_].time;                                                           \
        (dst)[i_].memory = (src)[i_].memory;                                                       \
        (dst)[i_].determinism = (src)[i_].determinism;                                             \
        (dst)[i_].mathType = (src)[i_].math;                                                       \
    }

#define EMU_MAX_PERF 16

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const void *xp,
    const cudnnFilterDescriptor_t w, const void *wp, const cudnnConvolutionDescriptor_t conv,
    const cudnnTensorDescriptor_t y, void *yp, const int requested, int *returned,
    cudnnConvolutionFwdAlgoPerf_t *results, void *workspace, size_t workspace_bytes)
{
    struct perf perf[EMU_MAX_PERF];
    int limit = requested < EMU_MAX_PERF ? requested : EMU_MAX_PERF;
    cudnnStatus_t st = query(FWD, "cudnnFindConvolutionForwardAlgorithmEx", handle, x, xp, w, wp,
                             conv, y, yp, limit, returned, results ? perf : NULL, workspace,
                             workspace_bytes, 1);
    if (st == CUDNN_STATUS_SUCCESS)
        COPY_PERF(results, perf, *returned, cudnnConvolutionFwdAlgo_t);
    return st;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t handle,
                                                     const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t conv,
                                                     const cudnnTensorDescriptor_t y,
                                                     const int requested, int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *results)
{
    struct perf perf[EMU_MAX_PERF];
    int limit = requested < EMU_MAX_PERF ? requested : EMU_MAX_PERF;
    cudnnStatus_t st = query(FWD, "cudnnGetConvolutionForwardAlgorithm_v7", handle, x, NULL, w,
                             NULL, conv, y, NULL, limit, returned, results ? perf : NULL, NULL,
                             0, 0);
    if (st == CUDNN_STATUS_SUCCESS)
        COPY_PERF(results, perf, *returned, cudnnConvolutionFwdAlgo_t);
    return st;
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t w, const void *wp,
    const cudnnTensorDescriptor_t dy, const void *dyp, const cudnnConvolutionDescriptor_t conv,
    const cudnnTensorDescriptor_t dx, void *dxp, const int requested, int *returned,
    cudnnConvolutionBwdDataAlgoPerf_t *results, void *workspace, size_t workspace_bytes)
{
    struct perf perf[EMU_MAX_PERF];
    int limit = requested < EMU_MAX_PERF ? requested : EMU_MAX_PERF;
    cudnnStatus_t st = query(BWD_DATA, "cudnnFindConvolutionBackwardDataAlgorithmEx", handle, dx,
                             dxp, w, wp, conv, dy, (void *)dyp, limit, returned,
                             results ? perf : NULL, workspace, workspace_bytes, 1);
    if (st == CUDNN_STATUS_SUCCESS)
        COPY_PERF(results, perf, *returned, cudnnConvolutionBwdDataAlgo_t);
    return st;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx, const int requested,
    int *returned, cudnnConvolutionBwdDataAlgoPerf_t *results)
{
    struct perf perf[EMU_MAX_PERF];
    int limit = requested < EMU_MAX_PERF ? requested : EMU_MAX_PERF;
    cudnnStatus_t st = query(BWD_DATA, "cudnnGetConvolutionBackwardDataAlgorithm_v7", handle, dx,
                             NULL, w, NULL, conv, dy, NULL, limit, returned,
                             results ? perf : NULL, NULL, 0, 0);
    if (st == CUDNN_STATUS_SUCCESS)
        COPY_PERF(results, perf, *returned, cudnnConvolutionBwdDataAlgo_t);
    return st;
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const void *xp,
    const cudnnTensorDescriptor_t dy, const void *dyp, const cudnnConvolutionDescriptor_t conv,
    const cudnnFilterDescriptor_t dw, void *dwp, const int requested, int *returned,
    cudnnConvolutionBwdFilterAlgoPerf_t *results, void *workspace, size_t workspace_bytes)
{
    struct perf perf[EMU_MAX_PERF];
    int limit = requested < EMU_MAX_PERF ? requested : EMU_MAX_PERF;
    cudnnStatus_t st = query(BWD_FILTER, "cudnnFindConvolutionBackwardFilterAlgorithmEx", handle,
                             x, xp, dw, dwp, conv, dy, (void *)dyp, limit, returned,
                             results ? perf : NULL, workspace, workspace_bytes, 1);
    if (st == CUDNN_STATUS_SUCCESS)
        COPY_PERF(results, perf, *returned, cudnnConvolutionBwdFilterAlgo_t);
    return st;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
    const int requested, int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *results)
{
    struct perf perf[EMU_MAX_PERF];
    int limit = requested < EMU_MAX_PERF ? requested : EMU_MAX_PERF;
    cudnnStatus_t st = query(BWD_FILTER, "cudnnGetConvolutionBackwardFilterAlgorithm_v7", handle,
                             x, NULL, dw, NULL, conv, dy, NULL, limit, returned,
                             results ? perf : NULL, NULL, 0, 0);
    if (st == CUDNN_STATUS_SUCCESS)
        COPY_PERF(results, perf, *returned, cudnnConvolutionBwdFilterAlgo_t);
    return st;
}

/* ---- the convolutions: im2col per image, OpenBLAS sgemm ---- */

/* col (c*r*s, oh*ow) of image x (c, h, w); zero outside the padded input. */
static void im2col(const struct problem *p, const float *x, float *col)
{
    size_t out = (size_t)p->oh * p->ow;
    for (int c = 0; c < p->c; c++)
        for (int i = 0; i < p->r; i++)
            for (int j = 0; j < p->s; j++) {
                int fi = p->flip ? p->r - 1 - i : i, fj = p->flip ? p->s - 1 - j : j;
                float *row = col + (((size_t)c * p->r + i) * p->s + j) * out;
                for (int oy = 0; oy < p->oh; oy++) {
                    int iy = oy * p->stride_h - p->pad_h + fi * p->dil_h;
                    for (int ox = 0; ox < p->ow; ox++) {
                        int ix = ox * p->stride_w - p->pad_w + fj * p->dil_w;
                        row[(size_t)oy * p->ow + ox] =
                            iy >= 0 && iy < p->h && ix >= 0 && ix < p->w
                                ? x[((size_t)c * p->h + iy) * p->w + ix]
                                : 0.0f;
                    }
                }
            }
}

/* dx (c, h, w) += the columns' contributions. */
static void col2im(const struct problem *p, const float *col, float *dx)
{
    size_t out = (size_t)p->oh * p->ow;
    for (int c = 0; c < p->c; c++)
        for (int i = 0; i < p->r; i++)
            for (int j = 0; j < p->s; j++) {
                int fi = p->flip ? p->r - 1 - i : i, fj = p->flip ? p->s - 1 - j : j;
                const float *row = col + (((size_t)c * p->r + i) * p->s + j) * out;
                for (int oy = 0; oy < p->oh; oy++) {
                    int iy = oy * p->stride_h - p->pad_h + fi * p->dil_h;
                    if (iy < 0 || iy >= p->h)
                        continue;
                    for (int ox = 0; ox < p->ow; ox++) {
                        int ix = ox * p->stride_w - p->pad_w + fj * p->dil_w;
                        if (ix >= 0 && ix < p->w)
                            dx[((size_t)c * p->h + iy) * p->w + ix] += row[(size_t)oy * p->ow + ox];
                    }
                }
            }
}

/* An operand as floats: bf16 widened (exact), float rounded to TF32 when the math allows it
 * (a bf16 value is already a TF32 one). */
static float *copy_rounded(const void *src, size_t n, const struct problem *p)
{
    float *out = malloc((n ? n : 1) * sizeof *out);
    if (out)
        for (size_t i = 0; i < n; i++)
            out[i] = p->bf16  ? dg_emu_bf16_value(((const uint16_t *)src)[i])
                     : p->tf32 ? dg_emu_round_tf32(((const float *)src)[i])
                               : ((const float *)src)[i];
    return out;
}

/* out = alpha * result + beta * out (beta 0: out is not read), computed in float and stored
 * in the output's type (bf16: rounded to nearest even). */
static void blend(void *out, size_t offset, const float *result, size_t n, float alpha,
                  float beta, const struct problem *p)
{
    for (size_t i = 0; i < n; i++) {
        if (p->bf16) {
            uint16_t *o = (uint16_t *)out + offset + i;
            float v = beta == 0.0f ? alpha * result[i]
                                   : alpha * result[i] + beta * dg_emu_bf16_value(*o);
            *o = dg_emu_round_bf16(v);
        } else {
            float *o = (float *)out + offset + i;
            *o = beta == 0.0f ? alpha * result[i] : alpha * result[i] + beta * *o;
        }
    }
}

struct call_args {
    enum direction d;
    const char *call;
    cudnnHandle_t handle;
    const float *alpha, *beta;
    cudnnTensorDescriptor_t x_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv;
    cudnnTensorDescriptor_t y_desc;
    int algo;
    void *workspace;
    size_t workspace_bytes;
};

/* A convolution, checked and with its arguments by value: x, w and y are the descriptors'
 * buffers (forward: in, filter, out; backward data: dx out, filter, dy in; backward filter: in,
 * dw out, dy in). */
struct conv_work {
    enum direction d;
    const char *call;
    struct problem p;
    float alpha, beta;
    const void *x, *w, *y;
    void *workspace;
    size_t need;
    size_t x_bytes, w_bytes, y_bytes;
    cudnnStatus_t status;
};

static cudnnStatus_t prepare(const struct call_args *a, struct problem *p, const void *x,
                             const void *w, const void *y, struct conv_work *work)
{
    if (!handle_ok(a->handle))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: not a live handle", a->call);
    if (!a->alpha || !a->beta)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: alpha and beta must be given", a->call);
    cudnnStatus_t st = problem_make(a->call, a->x_desc, a->w_desc, a->conv, a->y_desc, p);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    size_t need = 0;
    const char *why = "";
    st = algo_workspace(a->d, a->algo, p, &need, &why);
    if (st != CUDNN_STATUS_SUCCESS)
        return fail(st, "%s: algorithm %d: %s", a->call, a->algo, why);
    if (a->workspace_bytes < need)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "%s: algorithm %d needs %zu bytes of workspace, %zu given", a->call, a->algo,
                    need, a->workspace_bytes);
    if (dg_emu_sticky() != cudaSuccess)
        return CUDNN_STATUS_EXECUTION_FAILED;
    *work = (struct conv_work){a->d,
                               a->call,
                               *p,
                               *(const float *)a->alpha,
                               *(const float *)a->beta,
                               x,
                               w,
                               y,
                               a->workspace,
                               need,
                               tensor_bytes(a->x_desc),
                               filter_bytes(a->w_desc),
                               tensor_bytes(a->y_desc),
                               CUDNN_STATUS_SUCCESS};
    return CUDNN_STATUS_SUCCESS;
}

static void conv_fwd_compute(const struct conv_work *c);
static void conv_bwd_data_compute(const struct conv_work *c);
static void conv_bwd_filter_compute(const struct conv_work *c);

/* A convolution as run (now or from a graph): its buffers checked in device memory, the
 * workspace scribbled over, then the computation. */
static int conv_run(void *ctx)
{
    struct conv_work *c = ctx;
    if (dg_emu_sticky() != cudaSuccess)
        return 0;
    if ((c->need && !device_ok(c->workspace, c->need)) || !device_ok(c->x, c->x_bytes) ||
        !device_ok(c->w, c->w_bytes) || !device_ok(c->y, c->y_bytes)) {
        dg_emu_fault(cudaErrorIllegalAddress,
                     "%s: a tensor, filter or workspace buffer is not inside device memory of "
                     "its descriptor's size",
                     c->call);
        return 0;
    }
    if (c->need)
        memset(c->workspace, 0xff, c->need); /* the algorithm's scratch */
    c->status = CUDNN_STATUS_SUCCESS;
    if (c->d == FWD)
        conv_fwd_compute(c);
    else if (c->d == BWD_DATA)
        conv_bwd_data_compute(c);
    else
        conv_bwd_filter_compute(c);
    return (int)c->status;
}

/* Enqueues a prepared convolution on the handle's stream. */
static cudnnStatus_t conv_submit(cudnnHandle_t handle, struct conv_work *work)
{
    int result = 0;
    if (dg_emu_enqueue(handle->stream, work->call, conv_run, work, sizeof *work, NULL, NULL,
                       &result) != cudaSuccess)
        return CUDNN_STATUS_EXECUTION_FAILED;
    return (cudnnStatus_t)result;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha,
                                      const cudnnTensorDescriptor_t x_desc, const void *x,
                                      const cudnnFilterDescriptor_t w_desc, const void *w,
                                      const cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void *workspace,
                                      size_t workspace_bytes, const void *beta,
                                      const cudnnTensorDescriptor_t y_desc, void *y)
{
    struct call_args a = {FWD, direction_call[FWD], handle, alpha, beta, x_desc, w_desc, conv,
                          y_desc, (int)algo, workspace, workspace_bytes};
    struct problem p;
    struct conv_work work;
    cudnnStatus_t st = prepare(&a, &p, x, w, y, &work);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    return conv_submit(handle, &work);
}

static void conv_fwd_compute(const struct conv_work *c)
{
    struct problem p = c->p;
    void *y = (void *)c->y;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    size_t crs = (size_t)p.c * p.r * p.s, out = (size_t)p.oh * p.ow;
    size_t x_image = (size_t)p.c * p.h * p.w, y_image = (size_t)p.k * out;
    float *wt = copy_rounded(c->w, (size_t)p.k * crs, &p);
    float *xt = copy_rounded(c->x, (size_t)p.n * x_image, &p);
    float *col = malloc(crs * out * sizeof *col);
    float *result = malloc(y_image * sizeof *result);
    if (!wt || !xt || !col || !result) {
        st = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        goto done;
    }
    for (int n = 0; n < p.n; n++) {
        im2col(&p, xt + n * x_image, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p.k, (int)out, (int)crs, 1.0f, wt,
                    (int)crs, col, (int)out, 0.0f, result, (int)out);
        blend(y, n * y_image, result, y_image, c->alpha, c->beta, &p);
    }
done:
    free(wt);
    free(xt);
    free(col);
    free(result);
    ((struct conv_work *)c)->status = st;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha,
                                           const cudnnFilterDescriptor_t w_desc, const void *w,
                                           const cudnnTensorDescriptor_t dy_desc, const void *dy,
                                           const cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *workspace,
                                           size_t workspace_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dx_desc, void *dx)
{
    struct call_args a = {BWD_DATA, direction_call[BWD_DATA], handle, alpha, beta, dx_desc,
                          w_desc, conv, dy_desc, (int)algo, workspace, workspace_bytes};
    struct problem p;
    struct conv_work work;
    cudnnStatus_t st = prepare(&a, &p, dx, w, dy, &work);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    return conv_submit(handle, &work);
}

static void conv_bwd_data_compute(const struct conv_work *c)
{
    struct problem p = c->p;
    void *dx = (void *)c->x;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    size_t crs = (size_t)p.c * p.r * p.s, out = (size_t)p.oh * p.ow;
    size_t x_image = (size_t)p.c * p.h * p.w, y_image = (size_t)p.k * out;
    float *wt = copy_rounded(c->w, (size_t)p.k * crs, &p);
    float *dyt = copy_rounded(c->y, (size_t)p.n * y_image, &p);
    float *col = malloc(crs * out * sizeof *col);
    float *result = malloc(x_image * sizeof *result);
    if (!wt || !dyt || !col || !result) {
        st = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        goto done;
    }
    for (int n = 0; n < p.n; n++) {
        /* col (crs, out) = w^T (crs, k) dy_n (k, out) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)crs, (int)out, p.k, 1.0f, wt,
                    (int)crs, dyt + n * y_image, (int)out, 0.0f, col, (int)out);
        memset(result, 0, x_image * sizeof *result);
        col2im(&p, col, result);
        blend(dx, n * x_image, result, x_image, c->alpha, c->beta, &p);
    }
done:
    free(wt);
    free(dyt);
    free(col);
    free(result);
    ((struct conv_work *)c)->status = st;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha,
                                             const cudnnTensorDescriptor_t x_desc, const void *x,
                                             const cudnnTensorDescriptor_t dy_desc, const void *dy,
                                             const cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *workspace,
                                             size_t workspace_bytes, const void *beta,
                                             const cudnnFilterDescriptor_t dw_desc, void *dw)
{
    struct call_args a = {BWD_FILTER, direction_call[BWD_FILTER], handle, alpha, beta, x_desc,
                          dw_desc, conv, dy_desc, (int)algo, workspace, workspace_bytes};
    struct problem p;
    struct conv_work work;
    cudnnStatus_t st = prepare(&a, &p, x, dw, dy, &work);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    return conv_submit(handle, &work);
}

static void conv_bwd_filter_compute(const struct conv_work *c)
{
    struct problem p = c->p;
    void *dw = (void *)c->w;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    size_t crs = (size_t)p.c * p.r * p.s, out = (size_t)p.oh * p.ow;
    size_t x_image = (size_t)p.c * p.h * p.w, y_image = (size_t)p.k * out;
    float *xt = copy_rounded(c->x, (size_t)p.n * x_image, &p);
    float *dyt = copy_rounded(c->y, (size_t)p.n * y_image, &p);
    float *col = malloc(crs * out * sizeof *col);
    float *result = calloc((size_t)p.k * crs, sizeof *result);
    if (!xt || !dyt || !col || !result) {
        st = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        goto done;
    }
    for (int n = 0; n < p.n; n++) {
        im2col(&p, xt + n * x_image, col);
        /* result (k, crs) += dy_n (k, out) col^T (out, crs) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.k, (int)crs, (int)out, 1.0f,
                    dyt + n * y_image, (int)out, col, (int)out, 1.0f, result, (int)crs);
    }
    blend(dw, 0, result, (size_t)p.k * crs, c->alpha, c->beta, &p);
done:
    free(xt);
    free(dyt);
    free(col);
    free(result);
    ((struct conv_work *)c)->status = st;
}

/* ---- pooling ---- */

static cudnnStatus_t pool_check(const char *call, cudnnHandle_t handle,
                                const cudnnPoolingDescriptor_t pd,
                                const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t y)
{
    if (!handle_ok(handle))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: not a live handle", call);
    if (!pd || pd->magic != MAGIC_POOL || !pd->alive || !pd->set || !tensor_ok(x) || !tensor_ok(y))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: a descriptor is NULL, destroyed or never set",
                    call);
    int oh = (x->h + 2 * pd->pad_h - pd->win_h) / pd->stride_h + 1;
    int ow = (x->w + 2 * pd->pad_w - pd->win_w) / pd->stride_w + 1;
    if (oh <= 0 || ow <= 0 || y->n != x->n || y->c != x->c || y->h != oh || y->w != ow)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "%s: output descriptor %dx%dx%dx%d is not the pooling's output %dx%dx%dx%d",
                    call, y->n, y->c, y->h, y->w, x->n, x->c, oh, ow);
    if (x->type != CUDNN_DATA_FLOAT || y->type != CUDNN_DATA_FLOAT ||
        x->format != CUDNN_TENSOR_NCHW || y->format != CUDNN_TENSOR_NCHW)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: the emulation pools float NCHW only", call);
    return CUDNN_STATUS_SUCCESS;
}

/* The window's result and, for max, the index (in the plane) of its first maximum. */
static float pool_window(const cudnnPoolingDescriptor_t pd, const float *plane, int h, int w,
                         int oy, int ox, long *arg)
{
    int y0 = oy * pd->stride_h - pd->pad_h, x0 = ox * pd->stride_w - pd->pad_w;
    int is_max = pd->mode == CUDNN_POOLING_MAX || pd->mode == CUDNN_POOLING_MAX_DETERMINISTIC;
    float best = -INFINITY, sum = 0.0f;
    int inside = 0, nan = 0;
    *arg = -1;
    for (int i = 0; i < pd->win_h; i++)
        for (int j = 0; j < pd->win_w; j++) {
            int yy = y0 + i, xx = x0 + j;
            if (yy < 0 || yy >= h || xx < 0 || xx >= w)
                continue;
            float v = plane[(size_t)yy * w + xx];
            inside++;
            sum += v;
            if (v != v) {
                nan = 1;
                continue;
            }
            if (*arg < 0 || v > best) { /* strictly greater: the first maximum stays */
                best = v;
                *arg = (long)yy * w + xx;
            }
        }
    if (is_max)
        return nan && pd->nan == CUDNN_PROPAGATE_NAN ? NAN : best;
    int count = pd->mode == CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING ? pd->win_h * pd->win_w
                                                                         : inside;
    return count ? sum / (float)count : 0.0f;
}

struct pool_work {
    struct cudnnPoolingStruct pd;
    struct cudnnTensorStruct x_desc, y_desc;
    float alpha, beta;
    const void *x;
    void *y;
};

static int pool_fwd_run(void *ctx);

cudnnStatus_t cudnnPoolingForward(cudnnHandle_t handle, const cudnnPoolingDescriptor_t pd,
                                  const void *alpha, const cudnnTensorDescriptor_t x_desc,
                                  const void *x, const void *beta,
                                  const cudnnTensorDescriptor_t y_desc, void *y)
{
    cudnnStatus_t st = pool_check("cudnnPoolingForward", handle, pd, x_desc, y_desc);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (!alpha || !beta)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnPoolingForward: alpha and beta must be given");
    if (dg_emu_sticky() != cudaSuccess)
        return CUDNN_STATUS_EXECUTION_FAILED;
    /* the descriptors by value: a graph replays what they said at the call */
    struct pool_work work = {*pd, *x_desc, *y_desc, *(const float *)alpha, *(const float *)beta,
                             x, y};
    int result = 0;
    if (dg_emu_enqueue(handle->stream, "cudnnPoolingForward", pool_fwd_run, &work, sizeof work,
                       NULL, NULL, &result) != cudaSuccess)
        return CUDNN_STATUS_EXECUTION_FAILED;
    return (cudnnStatus_t)result;
}

static int pool_fwd_run(void *ctx)
{
    struct pool_work *work = ctx;
    const cudnnPoolingDescriptor_t pd = &work->pd;
    const cudnnTensorDescriptor_t x_desc = &work->x_desc, y_desc = &work->y_desc;
    const void *x = work->x;
    void *y = work->y;
    if (dg_emu_sticky() != cudaSuccess)
        return 0;
    if (!device_ok(x, tensor_bytes(x_desc)) || !device_ok(y, tensor_bytes(y_desc))) {
        dg_emu_fault(cudaErrorIllegalAddress, "cudnnPoolingForward: x or y is not inside device "
                                              "memory of its descriptor's size");
        return 0;
    }
    float a = work->alpha, b = work->beta;
    size_t planes = (size_t)x_desc->n * x_desc->c;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = (const float *)x + pl * x_desc->h * x_desc->w;
        float *out = (float *)y + pl * y_desc->h * y_desc->w;
        for (int oy = 0; oy < y_desc->h; oy++)
            for (int ox = 0; ox < y_desc->w; ox++) {
                long arg;
                float v = pool_window(pd, in, x_desc->h, x_desc->w, oy, ox, &arg);
                float *o = &out[(size_t)oy * y_desc->w + ox];
                *o = b == 0.0f ? a * v : a * v + b * *o;
            }
    }
    return CUDNN_STATUS_SUCCESS;
}

/* Max: the gradient goes to the window's first maximum (cuDNN leaves ties unspecified). */
cudnnStatus_t cudnnPoolingBackward(cudnnHandle_t handle, const cudnnPoolingDescriptor_t pd,
                                   const void *alpha, const cudnnTensorDescriptor_t y_desc,
                                   const void *y, const cudnnTensorDescriptor_t dy_desc,
                                   const void *dy, const cudnnTensorDescriptor_t x_desc,
                                   const void *x, const void *beta,
                                   const cudnnTensorDescriptor_t dx_desc, void *dx)
{
    (void)y;
    cudnnStatus_t st = pool_check("cudnnPoolingBackward", handle, pd, x_desc, y_desc);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (!tensor_ok(dy_desc) || !tensor_ok(dx_desc) || dy_desc->n != y_desc->n ||
        dy_desc->c != y_desc->c || dy_desc->h != y_desc->h || dy_desc->w != y_desc->w ||
        dx_desc->n != x_desc->n || dx_desc->c != x_desc->c || dx_desc->h != x_desc->h ||
        dx_desc->w != x_desc->w)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnPoolingBackward: dy must match y and dx must match x");
    if (!alpha || !beta)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnPoolingBackward: alpha and beta must be given");
    if (dg_emu_sticky() != cudaSuccess)
        return CUDNN_STATUS_EXECUTION_FAILED;
    if (dg_emu_stream_capturing(handle->stream))
        return fail(CUDNN_STATUS_NOT_SUPPORTED,
                    "cudnnPoolingBackward: the emulation does not capture it into a graph");
    if (!device_ok(x, tensor_bytes(x_desc)) || !device_ok(dy, tensor_bytes(dy_desc)) ||
        !device_ok(dx, tensor_bytes(dx_desc))) {
        dg_emu_fault(cudaErrorIllegalAddress, "cudnnPoolingBackward: x, dy or dx is not inside "
                                              "device memory of its descriptor's size");
        return CUDNN_STATUS_EXECUTION_FAILED;
    }
    float a = *(const float *)alpha, b = *(const float *)beta;
    size_t planes = (size_t)x_desc->n * x_desc->c, in_plane = (size_t)x_desc->h * x_desc->w;
    float *grad = calloc(in_plane, sizeof *grad);
    if (!grad)
        return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    int is_max = pd->mode == CUDNN_POOLING_MAX || pd->mode == CUDNN_POOLING_MAX_DETERMINISTIC;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = (const float *)x + pl * in_plane;
        const float *g = (const float *)dy + pl * y_desc->h * y_desc->w;
        memset(grad, 0, in_plane * sizeof *grad);
        for (int oy = 0; oy < y_desc->h; oy++)
            for (int ox = 0; ox < y_desc->w; ox++) {
                float gv = g[(size_t)oy * y_desc->w + ox];
                if (is_max) {
                    long arg;
                    pool_window(pd, in, x_desc->h, x_desc->w, oy, ox, &arg);
                    if (arg >= 0)
                        grad[arg] += gv;
                    continue;
                }
                int y0 = oy * pd->stride_h - pd->pad_h, x0 = ox * pd->stride_w - pd->pad_w;
                int inside = 0;
                for (int i = 0; i < pd->win_h; i++)
                    for (int j = 0; j < pd->win_w; j++)
                        inside += y0 + i >= 0 && y0 + i < x_desc->h && x0 + j >= 0 &&
                                  x0 + j < x_desc->w;
                int count = pd->mode == CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
                                ? pd->win_h * pd->win_w
                                : inside;
                for (int i = 0; i < pd->win_h; i++)
                    for (int j = 0; j < pd->win_w; j++) {
                        int yy = y0 + i, xx = x0 + j;
                        if (yy >= 0 && yy < x_desc->h && xx >= 0 && xx < x_desc->w && count)
                            grad[(size_t)yy * x_desc->w + xx] += gv / (float)count;
                    }
            }
        const struct problem floats = {0};
        blend(dx, pl * in_plane, grad, in_plane, a, b, &floats);
    }
    free(grad);
    return CUDNN_STATUS_SUCCESS;
}

/* ---- batch normalisation (the legacy API: spatial mode, per channel over N x H x W) ----
 * Statistics in double, one fixed order (image, then position). Forward training blends the
 * running mean and the unbiased variance with exponentialAverageFactor and saves the batch
 * mean and 1 / sqrt(var + epsilon); backward uses the saved pair when given, else
 * recomputes it from x. */

enum bn_call { BN_FWD_TRAIN, BN_FWD_INFER, BN_BWD };

static const char *bn_call_name[3] = {"cudnnBatchNormalizationForwardTraining",
                                      "cudnnBatchNormalizationForwardInference",
                                      "cudnnBatchNormalizationBackward"};

struct bn_work {
    enum bn_call call;
    struct cudnnTensorStruct x_desc;
    float alpha, beta, alpha_param, beta_param;
    const float *x, *dy, *scale, *bias, *mean_in, *var_in;
    float *y, *run_mean, *run_var, *save_mean, *save_invstd, *dscale, *dbias;
    double factor, eps;
};

static cudnnStatus_t bn_check(const char *call, cudnnHandle_t handle, cudnnBatchNormMode_t mode,
                              const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t y,
                              const cudnnTensorDescriptor_t param, double eps)
{
    if (!handle_ok(handle))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: not a live handle", call);
    if (!tensor_ok(x) || !tensor_ok(y) || !tensor_ok(param))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: a descriptor is NULL, destroyed or never set",
                    call);
    if (mode != CUDNN_BATCHNORM_SPATIAL)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: the emulation runs the spatial mode only",
                    call);
    if (y->n != x->n || y->c != x->c || y->h != x->h || y->w != x->w)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: x %dx%dx%dx%d and y %dx%dx%dx%d differ", call,
                    x->n, x->c, x->h, x->w, y->n, y->c, y->h, y->w);
    if (param->n != 1 || param->c != x->c || param->h != 1 || param->w != 1)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "%s: the scale/bias/mean/var descriptor %dx%dx%dx%d is not 1x%dx1x1", call,
                    param->n, param->c, param->h, param->w, x->c);
    if (x->type != CUDNN_DATA_FLOAT || y->type != CUDNN_DATA_FLOAT ||
        param->type != CUDNN_DATA_FLOAT || x->format != CUDNN_TENSOR_NCHW ||
        y->format != CUDNN_TENSOR_NCHW)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: the emulation normalises float NCHW only",
                    call);
    if (!(eps >= CUDNN_BN_MIN_EPSILON))
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: epsilon %g below CUDNN_BN_MIN_EPSILON", call,
                    eps);
    return CUDNN_STATUS_SUCCESS;
}

static void bn_blend(float *out, double value, float alpha, float beta)
{
    *out = beta == 0.0f ? (float)(alpha * value) : (float)(alpha * value + beta * *out);
}

/* The channel's mean and 1 / sqrt(biased var + eps), and its unbiased variance. */
static void bn_stats(const struct bn_work *w, int c, double *mean, double *invstd,
                     double *unbiased)
{
    const struct cudnnTensorStruct *d = &w->x_desc;
    size_t plane = (size_t)d->h * d->w;
    double count = (double)d->n * plane, sum = 0.0, squares = 0.0;
    for (int n = 0; n < d->n; n++) {
        const float *x = w->x + ((size_t)n * d->c + c) * plane;
        for (size_t i = 0; i < plane; i++)
            sum += x[i];
    }
    *mean = sum / count;
    for (int n = 0; n < d->n; n++) {
        const float *x = w->x + ((size_t)n * d->c + c) * plane;
        for (size_t i = 0; i < plane; i++)
            squares += (x[i] - *mean) * (x[i] - *mean);
    }
    *invstd = 1.0 / sqrt(squares / count + w->eps);
    *unbiased = count > 1.0 ? squares / (count - 1.0) : squares / count;
}

static int bn_run(void *ctx)
{
    struct bn_work *w = ctx;
    const struct cudnnTensorStruct *d = &w->x_desc;
    size_t plane = (size_t)d->h * d->w, bytes = tensor_bytes(&w->x_desc);
    size_t param_bytes = (size_t)d->c * sizeof(float);
    if (dg_emu_sticky() != cudaSuccess)
        return 0;
    const void *tensors[] = {w->x, w->y, w->dy};
    const void *params[] = {w->scale,     w->bias,     w->mean_in, w->var_in,
                            w->run_mean,  w->run_var,  w->save_mean, w->save_invstd,
                            w->dscale,    w->dbias};
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++)
        if (tensors[i] && !device_ok(tensors[i], bytes)) {
            dg_emu_fault(cudaErrorIllegalAddress, "%s: a tensor is not inside device memory of "
                                                  "its descriptor's size",
                         bn_call_name[w->call]);
            return 0;
        }
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        if (params[i] && !device_ok(params[i], param_bytes)) {
            dg_emu_fault(cudaErrorIllegalAddress, "%s: a per-channel vector is not inside "
                                                  "device memory of %zu bytes",
                         bn_call_name[w->call], param_bytes);
            return 0;
        }
    double count = (double)d->n * plane;
    for (int c = 0; c < d->c; c++) {
        double mean, invstd, unbiased = 0.0;
        if (w->call == BN_FWD_INFER) {
            mean = w->mean_in[c];
            invstd = 1.0 / sqrt((double)w->var_in[c] + w->eps);
        } else if (w->call == BN_BWD && w->save_mean) {
            mean = w->save_mean[c];
            invstd = w->save_invstd[c];
        } else {
            bn_stats(w, c, &mean, &invstd, &unbiased);
        }
        if (w->call != BN_BWD) {
            double scale = w->scale[c] * invstd, shift = w->bias[c] - mean * scale;
            for (int n = 0; n < d->n; n++) {
                size_t at = ((size_t)n * d->c + c) * plane;
                for (size_t i = 0; i < plane; i++)
                    bn_blend(&w->y[at + i], w->x[at + i] * scale + shift, w->alpha, w->beta);
            }
            if (w->call == BN_FWD_TRAIN) {
                if (w->run_mean) {
                    w->run_mean[c] =
                        (float)((1.0 - w->factor) * w->run_mean[c] + w->factor * mean);
                    w->run_var[c] =
                        (float)((1.0 - w->factor) * w->run_var[c] + w->factor * unbiased);
                }
                if (w->save_mean) {
                    w->save_mean[c] = (float)mean;
                    w->save_invstd[c] = (float)invstd;
                }
            }
            continue;
        }
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int n = 0; n < d->n; n++) {
            size_t at = ((size_t)n * d->c + c) * plane;
            for (size_t i = 0; i < plane; i++) {
                sum_dy += w->dy[at + i];
                sum_dy_xhat += w->dy[at + i] * ((w->x[at + i] - mean) * invstd);
            }
        }
        double k = w->scale[c] * invstd;
        for (int n = 0; n < d->n; n++) {
            size_t at = ((size_t)n * d->c + c) * plane;
            for (size_t i = 0; i < plane; i++) {
                double xhat = (w->x[at + i] - mean) * invstd;
                bn_blend(&w->y[at + i],
                         k * (w->dy[at + i] - sum_dy / count - xhat * sum_dy_xhat / count),
                         w->alpha, w->beta);
            }
        }
        bn_blend(&w->dscale[c], sum_dy_xhat, w->alpha_param, w->beta_param);
        bn_blend(&w->dbias[c], sum_dy, w->alpha_param, w->beta_param);
    }
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t bn_submit(cudnnHandle_t handle, struct bn_work *work)
{
    if (dg_emu_sticky() != cudaSuccess)
        return CUDNN_STATUS_EXECUTION_FAILED;
    int result = 0;
    if (dg_emu_enqueue(handle->stream, bn_call_name[work->call], bn_run, work, sizeof *work, NULL,
                       NULL, &result) != cudaSuccess)
        return CUDNN_STATUS_EXECUTION_FAILED;
    return (cudnnStatus_t)result;
}

cudnnStatus_t cudnnBatchNormalizationForwardTraining(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void *alpha, const void *beta,
    const cudnnTensorDescriptor_t xDesc, const void *x, const cudnnTensorDescriptor_t yDesc,
    void *y, const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc, const void *bnScale,
    const void *bnBias, double exponentialAverageFactor, void *resultRunningMean,
    void *resultRunningVariance, double epsilon, void *resultSaveMean,
    void *resultSaveInvVariance)
{
    const char *call = bn_call_name[BN_FWD_TRAIN];
    cudnnStatus_t st = bn_check(call, handle, mode, xDesc, yDesc, bnScaleBiasMeanVarDesc, epsilon);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (!alpha || !beta || !x || !y || !bnScale || !bnBias)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: alpha, beta, x, y, scale and bias must be given",
                    call);
    if (!resultRunningMean != !resultRunningVariance || !resultSaveMean != !resultSaveInvVariance)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "%s: the running mean and variance (and the saved mean and inverse "
                    "variance) are given both or neither",
                    call);
    struct bn_work work = {0};
    work.call = BN_FWD_TRAIN;
    work.x_desc = *xDesc;
    work.alpha = *(const float *)alpha, work.beta = *(const float *)beta;
    work.x = x, work.y = y, work.scale = bnScale, work.bias = bnBias;
    work.run_mean = resultRunningMean, work.run_var = resultRunningVariance;
    work.save_mean = resultSaveMean, work.save_invstd = resultSaveInvVariance;
    work.factor = exponentialAverageFactor, work.eps = epsilon;
    return bn_submit(handle, &work);
}

cudnnStatus_t cudnnBatchNormalizationForwardInference(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void *alpha, const void *beta,
    const cudnnTensorDescriptor_t xDesc, const void *x, const cudnnTensorDescriptor_t yDesc,
    void *y, const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc, const void *bnScale,
    const void *bnBias, const void *estimatedMean, const void *estimatedVariance, double epsilon)
{
    const char *call = bn_call_name[BN_FWD_INFER];
    cudnnStatus_t st = bn_check(call, handle, mode, xDesc, yDesc, bnScaleBiasMeanVarDesc, epsilon);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (!alpha || !beta || !x || !y || !bnScale || !bnBias || !estimatedMean ||
        !estimatedVariance)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: every tensor and alpha, beta must be given",
                    call);
    struct bn_work work = {0};
    work.call = BN_FWD_INFER;
    work.x_desc = *xDesc;
    work.alpha = *(const float *)alpha, work.beta = *(const float *)beta;
    work.x = x, work.y = y, work.scale = bnScale, work.bias = bnBias;
    work.mean_in = estimatedMean, work.var_in = estimatedVariance;
    work.eps = epsilon;
    return bn_submit(handle, &work);
}

cudnnStatus_t cudnnBatchNormalizationBackward(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void *alphaDataDiff,
    const void *betaDataDiff, const void *alphaParamDiff, const void *betaParamDiff,
    const cudnnTensorDescriptor_t xDesc, const void *x, const cudnnTensorDescriptor_t dyDesc,
    const void *dy, const cudnnTensorDescriptor_t dxDesc, void *dx,
    const cudnnTensorDescriptor_t dBnScaleBiasDesc, const void *bnScale, void *dBnScaleResult,
    void *dBnBiasResult, double epsilon, const void *savedMean, const void *savedInvVariance)
{
    const char *call = bn_call_name[BN_BWD];
    cudnnStatus_t st = bn_check(call, handle, mode, xDesc, dxDesc, dBnScaleBiasDesc, epsilon);
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (!tensor_ok(dyDesc) || dyDesc->n != xDesc->n || dyDesc->c != xDesc->c ||
        dyDesc->h != xDesc->h || dyDesc->w != xDesc->w)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: dy must match x", call);
    if (!alphaDataDiff || !betaDataDiff || !alphaParamDiff || !betaParamDiff || !x || !dy ||
        !dx || !bnScale || !dBnScaleResult || !dBnBiasResult)
        return fail(CUDNN_STATUS_BAD_PARAM, "%s: the blend factors and tensors must be given",
                    call);
    if (!savedMean != !savedInvVariance)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "%s: the saved mean and inverse variance are given both or neither", call);
    struct bn_work work = {0};
    work.call = BN_BWD;
    work.x_desc = *xDesc;
    work.alpha = *(const float *)alphaDataDiff, work.beta = *(const float *)betaDataDiff;
    work.alpha_param = *(const float *)alphaParamDiff;
    work.beta_param = *(const float *)betaParamDiff;
    work.x = x, work.dy = dy, work.y = dx, work.scale = bnScale;
    work.dscale = dBnScaleResult, work.dbias = dBnBiasResult;
    work.save_mean = (float *)savedMean, work.save_invstd = (float *)savedInvVariance;
    work.eps = epsilon;
    return bn_submit(handle, &work);
}
