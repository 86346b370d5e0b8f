/* Convolutions of the CUDA backend on cuDNN: one plan per shape (descriptors, one convolution
 * descriptor per direction carrying its math type), the algorithm search per direction
 * (cudnnFind*AlgorithmEx timings, or the _v7 heuristics in deterministic mode), the choices
 * cached by shape, one workspace shared by every plan, and the forward / backward ops (the
 * bias + ReLU epilogue by kernels/bias_relu.cu, the bias gradient by kernels/bias_grad.cu).
 * Under --math bf16 the operands are rounded to bf16 copies (kernels/bf16.cu), cuDNN
 * convolves them with float compute into bf16 results, and those are widened back (with the
 * bias + ReLU epilogue fused in the forward pass). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/algo_names.h"
#include "cuda/cuda_internal.h"

/* The most workspace one convolution algorithm may use (and the scratch for the search). */
#define DG_CUDA_WORKSPACE_LIMIT ((size_t)256 << 20)
#define DG_CUDA_MAX_ALGOS 16

/* One convolution shape: descriptors and the algorithms chosen for it with the workspace each
 * needs; one convolution descriptor per direction (enum conv_direction) so that each carries
 * the math type its algorithm runs with. */
struct cuda_conv_plan {
    struct dg_conv_shape shape;
    cudnnTensorDescriptor_t x_desc; /* (batch, in_channels, height, width) */
    cudnnTensorDescriptor_t y_desc; /* (batch, out_channels, out height, out width) */
    cudnnFilterDescriptor_t w_desc; /* (out_channels, in_channels, kernel, kernel) */
    cudnnConvolutionDescriptor_t desc[3];
    int algo[3];
    size_t workspace[3];
    size_t x_count, y_count, w_count; /* elements of x, y and w */
    /* --math bf16: the descriptors are bf16 (cuDNN's PSEUDO_BFLOAT16 configuration: bf16 data,
     * float compute) and the float32 tensors pass through these bf16 copies, made with the
     * plan so that a captured step allocates nothing */
    int bf16;
    uint16_t *xh; /* x or dx */
    uint16_t *yh; /* y or dy */
    uint16_t *wh; /* w or dw */
};

/* Grows the shared convolution workspace (nothing runs on it while it is replaced). */
static enum dg_status workspace_reserve(struct cuda_backend *cb, size_t bytes)
{
    return dg_cuda_scratch_grow(cb, &cb->workspace, &cb->workspace_bytes, bytes,
                                "convolution workspace");
}

/* algo_names.c names the algorithms by cuDNN's values without cudnn.h: they must match. */
_Static_assert(CONV_FWD == (int)DG_CUDA_PASS_FWD && CONV_BWD_DATA == (int)DG_CUDA_PASS_BWD_DATA &&
                   CONV_BWD_FILTER == (int)DG_CUDA_PASS_BWD_FILTER,
               "enum conv_direction and enum dg_cuda_conv_pass differ");
_Static_assert(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM == 0 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM == 1 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_GEMM == 2 && CUDNN_CONVOLUTION_FWD_ALGO_DIRECT == 3 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_FFT == 4 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING == 5 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD == 6 &&
                   CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED == 7,
               "cuDNN's forward algorithm values differ from algo_names.c");
_Static_assert(CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 == 0 && CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 == 1 &&
                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT == 2 &&
                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING == 3 &&
                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD == 4 &&
                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED == 5,
               "cuDNN's backward-data algorithm values differ from algo_names.c");
_Static_assert(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 == 0 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 == 1 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT == 2 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 == 3 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD == 4 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED == 5 &&
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING == 6,
               "cuDNN's backward-filter algorithm values differ from algo_names.c");

/* ---- the algorithm search ---- */

/* One algorithm as reported by a cuDNN search, whatever the direction. */
struct algo_candidate {
    int algo;
    cudnnStatus_t status;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
};

static const char *direction_name(enum conv_direction direction)
{
    return direction == CONV_FWD        ? "forward"
           : direction == CONV_BWD_DATA ? "backward-data"
                                        : "backward-filter";
}

static cudnnStatus_t workspace_size(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                    enum conv_direction direction, int algo, size_t *bytes)
{
    cudnnConvolutionDescriptor_t desc = plan->desc[direction];
    switch (direction) {
    case CONV_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(cb->cudnn, plan->x_desc, plan->w_desc, desc,
                                                       plan->y_desc,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    case CONV_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            cb->cudnn, plan->w_desc, plan->y_desc, desc, plan->x_desc,
            (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            cb->cudnn, plan->x_desc, plan->y_desc, desc, plan->w_desc,
            (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
    }
}

/* Lists the candidates of one direction, best first: measured (cudnnFind*AlgorithmEx, on
 * scratch tensors) for speed, or the heuristic order (_v7) when options.deterministic asks for
 * the same choice on every run. */
static enum dg_status conv_candidates(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                      enum conv_direction direction, int measure, float *x,
                                      float *y, float *w, void *scratch, size_t scratch_bytes,
                                      struct algo_candidate *out, int *count)
{
    enum dg_status status = DG_OK;
    int returned = 0;
    *count = 0;
    if (direction == CONV_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[DG_CUDA_MAX_ALGOS];
        if (measure)
            DG_TRY(cudnnFindConvolutionForwardAlgorithmEx(
                cb->cudnn, plan->x_desc, x, plan->w_desc, w, plan->desc[CONV_FWD], plan->y_desc, y,
                DG_CUDA_MAX_ALGOS, &returned, perf, scratch, scratch_bytes));
        else
            DG_TRY(cudnnGetConvolutionForwardAlgorithm_v7(cb->cudnn, plan->x_desc, plan->w_desc,
                                                          plan->desc[CONV_FWD], plan->y_desc,
                                                          DG_CUDA_MAX_ALGOS, &returned, perf));
        for (int i = 0; i < returned; i++)
            out[i] = (struct algo_candidate){(int)perf[i].algo, perf[i].status, perf[i].determinism,
                                             perf[i].mathType};
    } else if (direction == CONV_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[DG_CUDA_MAX_ALGOS];
        if (measure)
            DG_TRY(cudnnFindConvolutionBackwardDataAlgorithmEx(
                cb->cudnn, plan->w_desc, w, plan->y_desc, y, plan->desc[CONV_BWD_DATA],
                plan->x_desc, x, DG_CUDA_MAX_ALGOS, &returned, perf, scratch, scratch_bytes));
        else
            DG_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                cb->cudnn, plan->w_desc, plan->y_desc, plan->desc[CONV_BWD_DATA], plan->x_desc,
                DG_CUDA_MAX_ALGOS, &returned, perf));
        for (int i = 0; i < returned; i++)
            out[i] = (struct algo_candidate){(int)perf[i].algo, perf[i].status, perf[i].determinism,
                                             perf[i].mathType};
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[DG_CUDA_MAX_ALGOS];
        if (measure)
            DG_TRY(cudnnFindConvolutionBackwardFilterAlgorithmEx(
                cb->cudnn, plan->x_desc, x, plan->y_desc, y, plan->desc[CONV_BWD_FILTER],
                plan->w_desc, w, DG_CUDA_MAX_ALGOS, &returned, perf, scratch, scratch_bytes));
        else
            DG_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                cb->cudnn, plan->x_desc, plan->y_desc, plan->desc[CONV_BWD_FILTER], plan->w_desc,
                DG_CUDA_MAX_ALGOS, &returned, perf));
        for (int i = 0; i < returned; i++)
            out[i] = (struct algo_candidate){(int)perf[i].algo, perf[i].status, perf[i].determinism,
                                             perf[i].mathType};
    }
    *count = returned;
    return DG_OK;
fail:
    return status;
}

/* Sets the math type of a direction's descriptor and the algorithm it runs, with the workspace
 * that algorithm needs. DG_ERR_DEVICE when cuDNN cannot size it or it is over the limit. */
static enum dg_status plan_apply(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                 enum conv_direction direction, int algo, cudnnMathType_t math)
{
    enum dg_status status = DG_OK;
    size_t bytes = 0;
    DG_TRY(cudnnSetConvolutionMathType(plan->desc[direction], math));
    DG_TRY(workspace_size(cb, plan, direction, algo, &bytes));
    if (bytes > DG_CUDA_WORKSPACE_LIMIT)
        return dg_error(DG_ERR_DEVICE,
                        "cuda: %s convolution algorithm %d needs %zu MiB of "
                        "workspace (limit %zu MiB)",
                        direction_name(direction), algo, bytes >> 20,
                        DG_CUDA_WORKSPACE_LIMIT >> 20);
    plan->algo[direction] = algo;
    plan->workspace[direction] = bytes;
    return DG_OK;
fail:
    return status;
}

/* The FFT and Winograd algorithms of each direction. They are deterministic, but their
 * rounding is not that of a sum of products: a transform's error scales with the largest
 * values of its tile (of the whole plane for FFT), not with each output, so outputs near zero
 * may miss the elementwise FP32 forward bound of include/digits/compare.h (1e-5 + 1e-4 |b|).
 * cuDNN documents neither their transforms nor their accuracy and no GPU has measured them
 * here, so FP32 mode never runs them (instead of a bound derived for them); TF32 mode, judged
 * normwise at 1.5e-3, may. bf16 mode does not either: its contract (the CPU's) is sums of
 * products of bf16 operands, and a transform would round transformed values instead. */
static int fft_or_winograd(enum conv_direction direction, int algo)
{
    switch (direction) {
    case CONV_FWD:
        return algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
    case CONV_BWD_DATA:
        return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
    default:
        return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
    }
}

/* Whether a candidate's math type is one the mode asked for. The Find and _v7 queries report
 * each algorithm with the math type it was timed or ranked with, and they also return
 * CUDNN_DEFAULT_MATH entries when the descriptor says CUDNN_FMA_MATH; DEFAULT permits TF32 on
 * Ampere and newer, so its timing is not the FMA kernel's, and forcing FMA onto that algorithm
 * afterwards may run slower or not at all.
 *   FP32: exactly CUDNN_FMA_MATH (no tensor cores, no TF32).
 *   TF32 and bf16: CUDNN_FMA_MATH, CUDNN_DEFAULT_MATH or CUDNN_TENSOR_OP_MATH (TF32 tensor
 *         cores for float data, bf16 ones for bf16 data), run with the math type reported; never
 *         CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which may convert the float tensors down to
 *         half precision, outside the TF32 bound. */
static int math_accepted(int fp32, cudnnMathType_t math)
{
    if (fp32)
        return math == CUDNN_FMA_MATH;
    return math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH || math == CUDNN_TENSOR_OP_MATH;
}

/* Picks the first usable candidate (the search lists them best first): supported, within the
 * workspace limit, deterministic when the options ask for it or for FP32, with a math type the
 * mode accepts (math_accepted), and in FP32 and bf16 mode neither FFT nor Winograd
 * (fft_or_winograd);
 * applies it to the plan with the math type it was reported with and records the choice. */
static enum dg_status conv_choose(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                  enum conv_direction direction, int measure, float *x, float *y,
                                  float *w, void *scratch, size_t scratch_bytes,
                                  struct conv_choice *choice)
{
    enum dg_status status = DG_OK;
    /* a float32 plan under --math bf16 (strided, "valid") is held to the FP32 rules */
    int bf16 = plan->bf16;
    int fp32 = cb->options.math == DG_MATH_FP32 || (cb->options.math == DG_MATH_BF16 && !bf16);
    int need_deterministic = fp32 || cb->options.deterministic;
    struct algo_candidate candidates[DG_CUDA_MAX_ALGOS];
    int count = 0;

    DG_TRY(cudnnSetConvolutionMathType(plan->desc[direction],
                                       fp32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
    if ((status = conv_candidates(cb, plan, direction, measure, x, y, w, scratch, scratch_bytes,
                                  candidates, &count)) != DG_OK)
        return status;
    for (int i = 0; i < count; i++) {
        const struct algo_candidate *c = &candidates[i];
        if (c->status != CUDNN_STATUS_SUCCESS)
            continue;
        if (need_deterministic && c->determinism != CUDNN_DETERMINISTIC)
            continue;
        if (!math_accepted(fp32, c->math))
            continue;
        if ((fp32 || bf16) && fft_or_winograd(direction, c->algo))
            continue;
        if (plan_apply(cb, plan, direction, c->algo, c->math) != DG_OK)
            continue;
        choice->algo[direction] = c->algo;
        choice->math[direction] = c->math;
        dg_error_clear();
        return DG_OK;
    }
    return dg_error(DG_ERR_DEVICE,
                    "cuDNN offers no usable %s convolution algorithm (%s%s, workspace <= %zu MiB) "
                    "for batch %d, %d -> %d channels, %dx%d, kernel %d",
                    direction_name(direction),
                    fp32   ? "FP32 FMA math, no FFT or Winograd"
                    : bf16 ? "bf16 data, float compute, no FFT or Winograd"
                           : "TF32 allowed",
                    need_deterministic ? ", deterministic" : "", DG_CUDA_WORKSPACE_LIMIT >> 20,
                    plan->shape.batch, plan->shape.in_channels, plan->shape.out_channels,
                    plan->shape.height, plan->shape.width, plan->shape.kernel);
fail:
    return status;
}

static const struct conv_choice *choice_find(const struct cuda_backend *cb,
                                             const struct dg_conv_shape *shape)
{
    for (int i = 0; i < cb->choice_count; i++) {
        const struct dg_conv_shape *c = &cb->choices[i].shape;
        if (c->batch == shape->batch && c->in_channels == shape->in_channels &&
            c->out_channels == shape->out_channels && c->height == shape->height &&
            c->width == shape->width && c->kernel == shape->kernel &&
            dg_conv_stride(c) == dg_conv_stride(shape) && c->valid == shape->valid)
            return &cb->choices[i];
    }
    return NULL;
}

static void choice_store(struct cuda_backend *cb, const struct conv_choice *choice)
{
    if (cb->choice_count < DG_CUDA_CHOICE_CACHE) {
        cb->choices[cb->choice_count++] = *choice;
        return;
    }
    cb->choices[cb->choice_next] = *choice;
    cb->choice_next = (cb->choice_next + 1) % DG_CUDA_CHOICE_CACHE;
}

/* Chooses the three algorithms of a new shape: measured on zeroed scratch tensors unless the
 * options ask for deterministic (reproducible) choices. */
static enum dg_status plan_search(struct cuda_backend *cb, struct cuda_conv_plan *plan,
                                  struct conv_choice *choice)
{
    const struct dg_conv_shape *shape = &plan->shape;
    struct dg_backend *be = &cb->base;
    enum dg_status status = DG_OK;
    float *x = NULL, *y = NULL, *w = NULL;
    void *scratch = NULL;
    size_t scratch_bytes = 0;
    int measure = !cb->options.deterministic;
    if (measure) {
        size_t x_count = plan->x_count, y_count = plan->y_count, w_count = plan->w_count;
        size_t free_bytes = 0, total_bytes = 0;
        DG_TRY(cudaMemGetInfo(&free_bytes, &total_bytes));
        scratch_bytes =
            free_bytes / 4 < DG_CUDA_WORKSPACE_LIMIT ? free_bytes / 4 : DG_CUDA_WORKSPACE_LIMIT;
        if ((status = dg_cuda_alloc(be, x_count * sizeof(float), (void **)&x)) != DG_OK ||
            (status = dg_cuda_alloc(be, y_count * sizeof(float), (void **)&y)) != DG_OK ||
            (status = dg_cuda_alloc(be, w_count * sizeof(float), (void **)&w)) != DG_OK ||
            (status = dg_cuda_alloc(be, scratch_bytes, &scratch)) != DG_OK) {
            status = dg_error_prefix(status, "scratch for the convolution algorithm search");
            goto fail;
        }
        DG_TRY(cudaStreamSynchronize(cb->stream));
    }
    choice->shape = *shape;
    for (int d = CONV_FWD; d <= CONV_BWD_FILTER; d++)
        if ((status = conv_choose(cb, plan, (enum conv_direction)d, measure, x, y, w, scratch,
                                  scratch_bytes, choice)) != DG_OK)
            goto fail;
fail:
    dg_cuda_free(be, x);
    dg_cuda_free(be, y);
    dg_cuda_free(be, w);
    dg_cuda_free(be, scratch);
    return status;
}

/* ---- plans ---- */

void dg_cuda_conv_plan_free(struct dg_backend *be, void *handle)
{
    struct cuda_conv_plan *plan = handle;
    if (!plan)
        return;
    if (plan->x_desc)
        cudnnDestroyTensorDescriptor(plan->x_desc);
    if (plan->y_desc)
        cudnnDestroyTensorDescriptor(plan->y_desc);
    if (plan->w_desc)
        cudnnDestroyFilterDescriptor(plan->w_desc);
    for (int d = 0; d < 3; d++)
        if (plan->desc[d])
            cudnnDestroyConvolutionDescriptor(plan->desc[d]);
    dg_cuda_free(be, plan->xh);
    dg_cuda_free(be, plan->yh);
    dg_cuda_free(be, plan->wh);
    free(plan);
}

enum dg_status dg_cuda_conv_plan_create(struct dg_backend *be, const struct dg_conv_shape *shape,
                                        void **out)
{
    struct cuda_backend *cb = cuda_of(be);
    enum dg_status status = DG_OK;
    *out = NULL;
    if (shape->batch <= 0 || shape->in_channels <= 0 || shape->out_channels <= 0 ||
        shape->height <= 0 || shape->width <= 0 || shape->kernel <= 0 || shape->kernel % 2 == 0 ||
        shape->stride < 0 || shape->stride > 2 || shape->valid < 0 || shape->valid > 1 ||
        shape->nhwc != 0 || !dg_conv_fits(shape))
        return dg_error(DG_ERR_RUNTIME,
                        "cuda: bad convolution shape: batch %d, %d -> %d channels, %dx%d, "
                        "kernel %d, stride %d, valid %d, nhwc %d (this backend's tensors are "
                        "NCHW)",
                        shape->batch, shape->in_channels, shape->out_channels, shape->height,
                        shape->width, shape->kernel, shape->stride, shape->valid, shape->nhwc);
    struct cuda_conv_plan *plan = calloc(1, sizeof *plan);
    if (!plan)
        return dg_error(DG_ERR_NOMEM, "cuda: out of host memory for a convolution plan");
    plan->shape = *shape;
    /* strided and "valid" convolutions stay float32 under --math bf16, as on the CPU */
    plan->bf16 = cb->options.math == DG_MATH_BF16 && dg_conv_is_same_stride1(shape);
    cudnnDataType_t data = plan->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    int pad = dg_conv_pad(shape), stride = dg_conv_stride(shape);
    int oh = dg_conv_out_height(shape), ow = dg_conv_out_width(shape);
    plan->x_count = (size_t)shape->batch * shape->in_channels * shape->height * shape->width;
    plan->y_count = (size_t)shape->batch * shape->out_channels * oh * ow;
    plan->w_count =
        (size_t)shape->out_channels * shape->in_channels * shape->kernel * shape->kernel;
    if (plan->bf16 &&
        ((status = dg_cuda_alloc(be, plan->x_count * sizeof(uint16_t), (void **)&plan->xh)) !=
             DG_OK ||
         (status = dg_cuda_alloc(be, plan->y_count * sizeof(uint16_t), (void **)&plan->yh)) !=
             DG_OK ||
         (status = dg_cuda_alloc(be, plan->w_count * sizeof(uint16_t), (void **)&plan->wh)) !=
             DG_OK)) {
        status = dg_error_prefix(status, "bf16 copies of a convolution's tensors");
        goto fail;
    }
    DG_TRY(cudnnCreateTensorDescriptor(&plan->x_desc));
    DG_TRY(cudnnCreateTensorDescriptor(&plan->y_desc));
    DG_TRY(cudnnCreateFilterDescriptor(&plan->w_desc));
    DG_TRY(cudnnSetTensor4dDescriptor(plan->x_desc, CUDNN_TENSOR_NCHW, data, shape->batch,
                                      shape->in_channels, shape->height, shape->width));
    DG_TRY(cudnnSetTensor4dDescriptor(plan->y_desc, CUDNN_TENSOR_NCHW, data, shape->batch,
                                      shape->out_channels, oh, ow));
    DG_TRY(cudnnSetFilter4dDescriptor(plan->w_desc, data, CUDNN_TENSOR_NCHW, shape->out_channels,
                                      shape->in_channels, shape->kernel, shape->kernel));
    for (int d = 0; d < 3; d++) {
        DG_TRY(cudnnCreateConvolutionDescriptor(&plan->desc[d]));
        DG_TRY(cudnnSetConvolution2dDescriptor(plan->desc[d], pad, pad, stride, stride, 1, 1,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    }
    int out_n = 0, out_c = 0, out_h = 0, out_w = 0;
    DG_TRY(cudnnGetConvolution2dForwardOutputDim(plan->desc[CONV_FWD], plan->x_desc, plan->w_desc,
                                                 &out_n, &out_c, &out_h, &out_w));
    if (out_n != shape->batch || out_c != shape->out_channels || out_h != oh || out_w != ow) {
        status = dg_error(DG_ERR_RUNTIME,
                          "cuda: cuDNN convolution output %dx%dx%dx%d is not "
                          "the layer's shape %dx%dx%dx%d",
                          out_n, out_c, out_h, out_w, shape->batch, shape->out_channels, oh, ow);
        goto fail;
    }

    const struct conv_choice *known = choice_find(cb, shape);
    if (known) {
        for (int d = CONV_FWD; d <= CONV_BWD_FILTER; d++)
            if ((status = plan_apply(cb, plan, (enum conv_direction)d, known->algo[d],
                                     known->math[d])) != DG_OK)
                goto fail;
    } else {
        struct conv_choice choice;
        memset(&choice, 0, sizeof choice);
        if ((status = plan_search(cb, plan, &choice)) != DG_OK)
            goto fail;
        choice_store(cb, &choice);
    }
    size_t need = 0;
    for (int d = 0; d < 3; d++)
        need = plan->workspace[d] > need ? plan->workspace[d] : need;
    if ((status = workspace_reserve(cb, need)) != DG_OK)
        goto fail;
    *out = plan;
    return DG_OK;
fail:
    dg_cuda_conv_plan_free(be, plan);
    return status;
}

/* The conv_algo_name entry: the algorithms a plan of this shape runs, named by
 * dg_cuda_conv_algos_text. A shape not searched yet is searched now (a plan created and freed:
 * the choice stays in the cache, so the plan the net creates for that shape later runs exactly
 * these); when the search fails the text says so and the error is left to that later plan. */
void dg_cuda_conv_describe(struct dg_backend *be, const struct dg_conv_shape *shape,
                           int with_bwd_data, char *out, size_t size)
{
    struct cuda_backend *cb = cuda_of(be);
    const struct conv_choice *known = choice_find(cb, shape);
    if (!known) {
        void *plan = NULL;
        if (dg_cuda_conv_plan_create(be, shape, &plan) == DG_OK)
            dg_cuda_conv_plan_free(be, plan);
        else
            dg_error_clear();
        known = choice_find(cb, shape);
    }
    if (!known) {
        snprintf(out, size, "no algorithm (search failed)");
        return;
    }
    dg_cuda_conv_algos_text(known->algo[CONV_FWD], known->algo[CONV_BWD_DATA],
                            known->algo[CONV_BWD_FILTER], with_bwd_data, out, size);
}

/* ---- the ops ---- */

static const float one = 1.0f;
static const float zero = 0.0f;

/* Under bf16 each op rounds its float32 inputs into the plan's bf16 copies, cuDNN runs on the
 * copies (x_op, w_op, y_op: the buffers it reads and writes, the copies or the caller's
 * tensors), and the bf16 result is widened into the caller's output. */

enum dg_status dg_cuda_conv_fwd(struct dg_backend *be, void *handle, const float *x, const float *w,
                                const float *bias, float *y, int relu)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_conv_plan *plan = handle;
    const struct dg_conv_shape *s = &plan->shape;
    enum dg_status status = DG_OK;
    int hw = dg_conv_out_height(s) * dg_conv_out_width(s);
    const void *x_op = x, *w_op = w;
    void *y_op = y;
    if (plan->bf16) {
        DG_LAUNCH(cb, dg_launch_to_bf16(plan->x_count, x, plan->xh, cb->stream));
        DG_LAUNCH(cb, dg_launch_to_bf16(plan->w_count, w, plan->wh, cb->stream));
        x_op = plan->xh, w_op = plan->wh, y_op = plan->yh;
    }
    DG_LAUNCH(cb, cudnnConvolutionForward(
                      cb->cudnn, &one, plan->x_desc, x_op, plan->w_desc, w_op, plan->desc[CONV_FWD],
                      (cudnnConvolutionFwdAlgo_t)plan->algo[CONV_FWD], cb->workspace,
                      plan->workspace[CONV_FWD], &zero, plan->y_desc, y_op));
    if (plan->bf16)
        DG_LAUNCH(cb, dg_launch_from_bf16(plan->yh, y, bias, s->batch, s->out_channels, hw, relu,
                                          cb->stream));
    else
        DG_LAUNCH(cb, dg_launch_bias_act(y, bias, s->batch, s->out_channels, hw, relu, cb->stream));
    return DG_OK;
fail:
    return status;
}

enum dg_status dg_cuda_conv_bwd_data(struct dg_backend *be, void *handle, const float *dy,
                                     const float *w, float *dx)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_conv_plan *plan = handle;
    const struct dg_conv_shape *s = &plan->shape;
    enum dg_status status = DG_OK;
    const void *y_op = dy, *w_op = w;
    void *x_op = dx;
    if (plan->bf16) {
        DG_LAUNCH(cb, dg_launch_to_bf16(plan->y_count, dy, plan->yh, cb->stream));
        DG_LAUNCH(cb, dg_launch_to_bf16(plan->w_count, w, plan->wh, cb->stream));
        x_op = plan->xh, w_op = plan->wh, y_op = plan->yh;
    }
    DG_LAUNCH(cb, cudnnConvolutionBackwardData(
                      cb->cudnn, &one, plan->w_desc, w_op, plan->y_desc, y_op,
                      plan->desc[CONV_BWD_DATA],
                      (cudnnConvolutionBwdDataAlgo_t)plan->algo[CONV_BWD_DATA], cb->workspace,
                      plan->workspace[CONV_BWD_DATA], &zero, plan->x_desc, x_op));
    if (plan->bf16)
        DG_LAUNCH(cb, dg_launch_from_bf16(plan->xh, dx, NULL, s->batch, s->in_channels,
                                          s->height * s->width, 0, cb->stream));
    return DG_OK;
fail:
    return status;
}

enum dg_status dg_cuda_conv_bwd_filter(struct dg_backend *be, void *handle, const float *x,
                                       const float *dy, float *dw, float *db)
{
    struct cuda_backend *cb = cuda_of(be);
    struct cuda_conv_plan *plan = handle;
    const struct dg_conv_shape *s = &plan->shape;
    enum dg_status status = DG_OK;
    const void *x_op = x, *y_op = dy;
    void *w_op = dw;
    if (plan->bf16) {
        DG_LAUNCH(cb, dg_launch_to_bf16(plan->x_count, x, plan->xh, cb->stream));
        DG_LAUNCH(cb, dg_launch_to_bf16(plan->y_count, dy, plan->yh, cb->stream));
        x_op = plan->xh, w_op = plan->wh, y_op = plan->yh;
    }
    DG_LAUNCH(cb, cudnnConvolutionBackwardFilter(
                      cb->cudnn, &one, plan->x_desc, x_op, plan->y_desc, y_op,
                      plan->desc[CONV_BWD_FILTER],
                      (cudnnConvolutionBwdFilterAlgo_t)plan->algo[CONV_BWD_FILTER], cb->workspace,
                      plan->workspace[CONV_BWD_FILTER], &zero, plan->w_desc, w_op));
    /* the filter (out_channels * in_channels, taps) widened to float32 */
    if (plan->bf16)
        DG_LAUNCH(cb, dg_launch_from_bf16(plan->wh, dw, NULL, s->out_channels * s->in_channels, 1,
                                          s->kernel * s->kernel, 0, cb->stream));
    if (db)
        DG_LAUNCH(cb, dg_launch_channel_sum(dy, s->batch, s->out_channels,
                                            dg_conv_out_height(s) * dg_conv_out_width(s), db,
                                            cb->stream));
    return DG_OK;
fail:
    return status;
}
