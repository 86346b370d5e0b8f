/* Two backends on the reference network, op by op (include/digits/compare.h): the machinery of
 * `digits compare`, here rather than in the command so that tests can run it on any pair of
 * backends (tests/test_compare.c runs it against deliberately wrong candidates).
 *
 * One batch: both sides assemble it and run forward and backward with the same weights,
 * dropout masks and augmentation draws. The reference runs alone first; then the candidate
 * runs with a layer hook that, after each layer, compares the layer's result with the
 * reference's and replaces it with the reference's, so the next op of the candidate starts from
 * the same inputs as the reference's did. Each line therefore judges one op: no compounding of
 * rounding through layers, the same ReLU and max-pool decisions on both sides, and a wrong op
 * fails its own line and no other. The loss of the batch is compared end to end (a separate
 * forward pass of the candidate without the hook). */
#include "digits/compare.h"

#include "digits/net.h"
#include "digits/train.h"
#include "math/adam.h"
#include "math/rmsprop.h"
#include "math/sgd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* the recipe's RMSprop */
#define DG_COMPARE_LR 1e-3f
#define DG_COMPARE_RHO 0.9f
#define DG_COMPARE_EPS 1e-8f

struct side {
    struct dg_backend *be;
    struct dg_net *net;
    void *handle;
};

struct run {
    FILE *out;
    int failures;
    int n;
    int tf32, bf16;
    struct dg_optimizer opt; /* the steps' optimizer (kind RMSprop: the recipe's) */
    struct side *ref, *cand;
    /* the reference's gradient of each layer's input right after that layer's backward (the
     * next layer's ReLU backward masks it in place later), host copies */
    float *snap[DG_MAX_LAYERS];
};

static void print_header(FILE *out)
{
    fprintf(out, "%-10s %-9s %10s %10s %10s %10s %9s  %s\n", "layer", "tensor", "max_abs",
            "normwise", "max_rel", "nmse", "worst", "result");
}

static void print_row(struct run *r, const char *layer, const char *what, const float *a,
                      const float *b, size_t count, const struct dg_tolerance *tol)
{
    struct dg_diff diff;
    dg_diff_compute(a, b, count, tol, &diff);
    double normwise =
        diff.ref_max > 0.0 ? diff.max_abs / diff.ref_max : (diff.max_abs > 0.0 ? INFINITY : 0.0);
    fprintf(r->out, "%-10s %-9s %10.3g %10.3g %10.3g %10.3g %9zu  %s", layer, what, diff.max_abs,
            normwise, diff.max_rel, diff.nmse, diff.worst, diff.pass ? "pass" : "FAIL");
    if (!diff.pass) {
        r->failures++;
        fprintf(r->out, " (%zu outside%s, reference %.9g vs candidate %.9g)", diff.failures,
                diff.nonfinite ? ", not finite" : "", (double)b[diff.worst], (double)a[diff.worst]);
    }
    fprintf(r->out, "\n");
}

/* The layouts of a compared tensor: NHWC on either side (dg_net_nhwc_at) of images of
 * `channels` x `spatial`; NULL: flat or NCHW on both. */
struct layout {
    int ref_nhwc, cand_nhwc;
    int channels, spatial;
};

/* t, `count` floats of images (channels, spatial), NHWC to NCHW (to_nhwc 0) or back. */
static enum dg_status relayout(float *t, size_t count, int channels, int spatial, int to_nhwc)
{
    size_t c = (size_t)channels, sp = (size_t)spatial, image = c * sp;
    float *copy = malloc(count * sizeof(float));
    if (!copy)
        return dg_error(DG_ERR_NOMEM, "compare: out of memory");
    memcpy(copy, t, count * sizeof(float));
    for (size_t n = 0; n < count / image; n++)
        for (size_t p = 0; p < sp; p++)
            for (size_t ch = 0; ch < c; ch++) {
                size_t nhwc = n * image + p * c + ch, nchw = n * image + ch * sp + p;
                if (to_nhwc)
                    t[nhwc] = copy[nchw];
                else
                    t[nchw] = copy[nhwc];
            }
    free(copy);
    return DG_OK;
}

/* Compares `count` floats of the candidate (cand_ptr) with the reference's (host copy
 * `ref_host`, or ref_ptr downloaded when ref_host is NULL), both in NCHW order whatever each
 * side's layout (lay); with `adopt`, then overwrites the candidate's with the reference's. */
static enum dg_status compare_tensor_in(struct run *r, const char *layer, const char *what,
                                        const float *ref_ptr, const float *ref_host,
                                        float *cand_ptr, size_t count,
                                        const struct dg_tolerance *tol, int adopt,
                                        const struct layout *lay)
{
    struct dg_backend *rb = r->ref->be, *cb = r->cand->be;
    float *a = malloc(count * sizeof(float));
    float *b = malloc(count * sizeof(float));
    enum dg_status status = DG_OK;
    if (!a || !b) {
        status = dg_error(DG_ERR_NOMEM, "compare: out of memory");
        goto done;
    }
    if (ref_host)
        memcpy(b, ref_host, count * sizeof(float));
    else if ((status = rb->ops->download(rb, b, ref_ptr, count * sizeof(float))) != DG_OK)
        goto done;
    if ((status = cb->ops->download(cb, a, cand_ptr, count * sizeof(float))) != DG_OK)
        goto done;
    if (lay && lay->ref_nhwc &&
        (status = relayout(b, count, lay->channels, lay->spatial, 0)) != DG_OK)
        goto done;
    if (lay && lay->cand_nhwc &&
        (status = relayout(a, count, lay->channels, lay->spatial, 0)) != DG_OK)
        goto done;
    print_row(r, layer, what, a, b, count, tol);
    if (adopt && memcmp(a, b, count * sizeof(float)) != 0) {
        if (lay && lay->cand_nhwc &&
            (status = relayout(b, count, lay->channels, lay->spatial, 1)) != DG_OK)
            goto done;
        status = cb->ops->upload(cb, cand_ptr, b, count * sizeof(float));
    }
done:
    free(a);
    free(b);
    return status;
}

static enum dg_status compare_tensor(struct run *r, const char *layer, const char *what,
                                     const float *ref_ptr, const float *ref_host, float *cand_ptr,
                                     size_t count, const struct dg_tolerance *tol, int adopt)
{
    return compare_tensor_in(r, layer, what, ref_ptr, ref_host, cand_ptr, count, tol, adopt,
                             NULL);
}

/* The layouts of layer i's output (input 0) or input (1) in the two nets. */
static struct layout layout_at(const struct run *r, int i, int input)
{
    const struct dg_layer *layer = &r->ref->net->model->layers[i];
    struct layout lay = {dg_net_nhwc_at(r->ref->net, i, input),
                         dg_net_nhwc_at(r->cand->net, i, input),
                         input ? layer->in_c : layer->out_c,
                         input ? layer->in_h * layer->in_w : layer->out_h * layer->out_w};
    return lay;
}

static int is_matmul(const struct dg_layer *layer)
{
    return layer->spec.kind == DG_LAYER_CONV || layer->spec.kind == DG_LAYER_DENSE;
}

/* Whether `be` runs the forward pass of conv layer `layer` at batch n as Winograd (the CPU's
 * "Winograd", cuDNN's WINOGRAD and WINOGRAD_NONFUSED name their forward algorithm first). */
static int runs_winograd(struct dg_backend *be, const struct dg_layer *layer, int n)
{
    if (!be->ops->conv_algo_name)
        return 0;
    char name[128] = "";
    struct dg_conv_shape shape = dg_layer_conv_shape(layer, n);
    be->ops->conv_algo_name(be, &shape, 0, name, sizeof name);
    return strncasecmp(name, "winograd", 8) == 0;
}

/* Max-pool and dropout are exact (the same element math on both sides, given the same
 * inputs); convolutions and dense layers round differently; batch normalisation sums its
 * statistics differently (float32 at every math mode). */
static const struct dg_tolerance *forward_tolerance(const struct run *r,
                                                    const struct dg_layer *layer)
{
    if (layer->spec.kind == DG_LAYER_BATCHNORM)
        return &dg_tol_batchnorm;
    if (!is_matmul(layer))
        return &dg_tol_exact;
    if (r->bf16)
        return &dg_tol_forward_bf16;
    if (r->tf32)
        return &dg_tol_forward_tf32;
    return layer->spec.kind == DG_LAYER_CONV && (runs_winograd(r->ref->be, layer, r->n) ||
                                                 runs_winograd(r->cand->be, layer, r->n))
               ? &dg_tol_forward_winograd
               : &dg_tol_forward;
}

static const struct dg_tolerance *backward_tolerance(const struct run *r,
                                                     const struct dg_layer *layer)
{
    if (layer->spec.kind == DG_LAYER_BATCHNORM)
        return &dg_tol_batchnorm;
    if (!is_matmul(layer))
        return &dg_tol_exact;
    if (r->bf16)
        return &dg_tol_backward_bf16;
    return r->tf32 ? &dg_tol_backward_tf32 : &dg_tol_backward_fp32;
}

/* The loss of a batch from the same weights: FP32 DG_TOL_LOSS_RTOL; a TF32 candidate's goes
 * through every layer's TF32 rounding: the TF32 bound. */
static double loss_bound(const struct run *r)
{
    if (r->bf16)
        return DG_TOL_LOSS_RTOL_BF16;
    return r->tf32 ? DG_TOL_LOSS_RTOL_TF32 : DG_TOL_LOSS_RTOL;
}

static const struct dg_tolerance *weights_tolerance(const struct run *r)
{
    if (r->bf16)
        return &dg_tol_weights_bf16;
    return r->tf32 ? &dg_tol_weights_tf32 : &dg_tol_weights;
}

/* The bound of a bias after the steps under TF32 or bf16, and in a network with batch
 * normalisation. Biases start at zero, so after a few steps they are nothing but RMSprop
 * updates, and an update amplifies a gradient's error without limit where the accumulator is
 * still small (a gradient near zero may change sign): NMSE against such a tensor is no bound a
 * correct candidate keeps (the CPU's own bf16 path misses 4e-3 on dense1's bias for some
 * seeds). Batch normalisation makes that so at FP32 too: the bias of a layer it follows has a
 * gradient of exactly zero in exact arithmetic (the normalisation subtracts the mean), and the
 * biases upstream of one get differences of nearly equal sums, so what two correct sides
 * compute there is mostly their rounding (the deotte preset's conv1, conv2 and batchnorm2
 * biases: NMSE 1.1e-6..5.9e-6 after 3 steps, with gradients within 4e-7 normwise). What does
 * hold: one RMSprop update is at most lr / sqrt(1 - rho) in size (the accumulator holds at
 * least (1 - rho) g^2), and each step starts from the reference's state, so the two sides
 * differ by at most twice that. The per-step weights line and the gradient lines above keep
 * their tight bounds. */
static int has_batchnorm(const struct dg_model *model)
{
    for (int i = 0; i < model->layer_count; i++)
        if (model->layers[i].spec.kind == DG_LAYER_BATCHNORM)
            return 1;
    return 0;
}

/* The bound of the biases of one layer after step t (the last), where the note above says
 * NMSE is none, else dg_tol_weights. Both sides start the step from the same weights and
 * state, so they differ by the difference of their last updates:
 * - RMSprop: each is at most lr / sqrt(1 - rho) in size, so 2 lr / sqrt(1 - rho).
 * - Adam (from zero moments, as here): |m_t| <= (1 - b1) sum b1^(t-i) |g_i| and, by
 *   Cauchy-Schwarz with r = b1^2 / b2 < 1, |m_t| <= (1 - b1) sqrt((1 - r^t) / (1 - r))
 *   sqrt(v_t / (1 - b2)); with the bias corrections an update is at most lr A(t),
 *   A(t) = (1 - b1) / sqrt(1 - b2) sqrt((1 - r^t) / (1 - r)) sqrt(1 - b2^t) / (1 - b1^t)
 *   (A(1) = 1: the first step moves every parameter by at most lr; A grows to 7.3 with
 *   Keras' constants), so 2 lr A(t).
 * - SGD: lr (mu b + g) (Nesterov lr (g + mu (mu b + g))) from the same buffer b: they differ
 *   by lr (1 + mu [Nesterov]) |g - g'|, at most that times max |g| + max |g'| over the layer's
 *   biases (both sides' gradients of the step).
 * The factor 1 + 1e-5 covers the rounding of the updates themselves. */
static double adam_update_bound(const struct dg_optimizer *opt, long t)
{
    double b1 = opt->beta1, b2 = opt->beta2, ratio = b1 * b1 / b2;
    return (1.0 - b1) / sqrt(1.0 - b2) * sqrt((1.0 - pow(ratio, (double)t)) / (1.0 - ratio)) *
           sqrt(1.0 - pow(b2, (double)t)) / (1.0 - pow(b1, (double)t));
}

static int biases_elementwise(const struct run *r, const struct dg_model *model)
{
    return r->bf16 || r->tf32 || has_batchnorm(model);
}

static double max_abs(const float *x, size_t n)
{
    double most = 0.0;
    for (size_t i = 0; i < n; i++)
        most = fabs(x[i]) > most ? fabs(x[i]) : most;
    return most;
}

static struct dg_tolerance bias_after_steps_tolerance(const struct run *r,
                                                      const struct dg_model *model,
                                                      const struct dg_layer *layer, long t,
                                                      const float *g_ref, const float *g_cand)
{
    if (!biases_elementwise(r, model))
        return dg_tol_weights;
    const struct dg_optimizer *opt = &r->opt;
    double lr = DG_COMPARE_LR, bound;
    switch (opt->kind) {
    case DG_OPTIMIZER_ADAM:
        bound = 2.0 * lr * adam_update_bound(opt, t);
        break;
    case DG_OPTIMIZER_SGD:
        bound = lr * (1.0 + (opt->nesterov ? opt->momentum : 0.0)) *
                (max_abs(g_ref + layer->bias_offset, layer->bias_count) +
                 max_abs(g_cand + layer->bias_offset, layer->bias_count));
        break;
    default:
        bound = 2.0 * lr / sqrt(1.0 - DG_COMPARE_RHO);
    }
    return (struct dg_tolerance){DG_TOL_ELEMENTWISE, bound * (1.0 + 1e-5), 0.0};
}

static size_t out_count(const struct dg_layer *layer, int n)
{
    return (size_t)n * layer->out_c * layer->out_h * layer->out_w;
}

static size_t in_count(const struct dg_layer *layer, int n)
{
    return (size_t)n * layer->in_c * layer->in_h * layer->in_w;
}

/* The reference's backward: keeps a host copy of each layer's input gradient. */
static enum dg_status snapshot_hook(void *ctx, int i, int backward, int end)
{
    struct run *r = ctx;
    struct dg_net *net = r->ref->net;
    /* every layer's, also where the reference passes the gradient through (flatten of an
     * NCHW net): the candidate may not (flatten of an NHWC net transposes it) */
    if (!backward || !end || i <= 0 || i >= net->model->layer_count)
        return DG_OK;
    size_t count = in_count(&net->model->layers[i], r->n);
    if (!r->snap[i] && !(r->snap[i] = malloc(count * sizeof(float))))
        return dg_error(DG_ERR_NOMEM, "compare: out of memory");
    return net->be->ops->download(net->be, r->snap[i], net->dout[i], count * sizeof(float));
}

/* The candidate's forward and backward: after each layer, compare and adopt the reference's. */
static enum dg_status compare_hook(void *ctx, int i, int backward, int end)
{
    struct run *r = ctx;
    struct dg_net *rn = r->ref->net, *cn = r->cand->net;
    const struct dg_model *model = rn->model;
    enum dg_status status = DG_OK;
    if (!end)
        return DG_OK;
    if (i == model->layer_count) {
        if ((status = compare_tensor(r, "softmax", "output", rn->probs, NULL, cn->probs,
                                     (size_t)r->n * DG_CLASSES, &dg_tol_forward, 1)) != DG_OK)
            return status;
        /* the gradient of the mean cross-entropy: element math on the probabilities */
        return compare_tensor(r, "softmax", "grad", rn->dlogits, NULL, cn->dlogits,
                              (size_t)r->n * DG_CLASSES, &dg_tol_backward_fp32, 1);
    }
    const struct dg_layer *layer = &model->layers[i];
    if (!backward) {
        if (cn->out[i + 1] == cn->out[i])
            return DG_OK;
        struct layout lay = layout_at(r, i, 0);
        return compare_tensor_in(r, layer->name, "output", rn->out[i + 1], NULL, cn->out[i + 1],
                                 out_count(layer, r->n), forward_tolerance(r, layer), 1, &lay);
    }
    struct layout lay = layout_at(r, i, 1);
    if (i > 0 && cn->dout[i] != cn->dout[i + 1] &&
        (status = compare_tensor_in(r, layer->name, "grad_in", NULL, r->snap[i], cn->dout[i],
                                    in_count(layer, r->n), backward_tolerance(r, layer), 1,
                                    &lay)) != DG_OK)
        return status;
    if (layer->weight_count &&
        ((status = compare_tensor(r, layer->name, "grad_w", rn->grads + layer->weight_offset, NULL,
                                  cn->grads + layer->weight_offset, layer->weight_count,
                                  backward_tolerance(r, layer), 0)) != DG_OK ||
         (status = compare_tensor(r, layer->name, "grad_b", rn->grads + layer->bias_offset, NULL,
                                  cn->grads + layer->bias_offset, layer->bias_count,
                                  backward_tolerance(r, layer), 0)) != DG_OK))
        return status;
    return DG_OK;
}

static enum dg_status side_open(struct side *s, struct dg_backend *be,
                                const struct dg_compare_setup *setup, int batch)
{
    enum dg_status status;
    s->be = be;
    if ((status = dg_net_create(be, setup->model, batch, &s->net)) != DG_OK ||
        (status = dg_net_upload_params(s->net, setup->model->params, 1)) != DG_OK ||
        (setup->optimizer.kind != DG_OPTIMIZER_RMSPROP &&
         (status = dg_net_set_optimizer(s->net, &setup->optimizer)) != DG_OK))
        return status;
    /* each layer's own output and gradient are checked and replaced: no fused ops */
    s->net->separate_ops = 1;
    return be->ops->dataset_attach(be, setup->dataset, &s->handle);
}

static void side_close(struct side *s)
{
    if (s->handle)
        s->be->ops->dataset_detach(s->be, s->handle);
    dg_net_free(s->net);
}

static enum dg_status side_assemble(struct side *s, const uint32_t *rows, int n,
                                    const struct dg_augment_key *aug)
{
    return s->be->ops->batch_assemble(s->be, s->handle, rows, n, aug, s->net->act[0],
                                      s->net->labels);
}

/* Forward with labels (the loss into *loss, a batch mean) and, with `backward`, backward. */
static enum dg_status side_pass(struct side *s, int n, const struct dg_net_mode *mode, int backward,
                                double *loss)
{
    enum dg_status status;
    double loss_sum, correct;
    if ((status = dg_net_stats_reset(s->net)) != DG_OK ||
        (status = dg_net_forward(s->net, n, mode, s->net->labels)) != DG_OK ||
        (backward && (status = dg_net_backward(s->net, n, mode)) != DG_OK) ||
        (status = dg_net_stats_read(s->net, &loss_sum, &correct)) != DG_OK)
        return status;
    *loss = loss_sum / n;
    return DG_OK;
}

/* The batch, op by op (see the top of this file), then the loss end to end. */
static enum dg_status compare_batch(struct run *r, const uint32_t *rows,
                                    const struct dg_compare_setup *setup)
{
    struct side *ref = r->ref, *cand = r->cand;
    int n = r->n;
    struct dg_net_mode mode = {1, setup->seed, 0, 0};
    struct dg_augment_key aug = {setup->seed, 0, 0, 10.0f, 0.1f, 0.1f};
    const struct dg_augment_key *a = setup->augment ? &aug : NULL;
    double ref_loss, cand_loss, ignored;
    enum dg_status status;
    if ((status = side_assemble(ref, rows, n, a)) != DG_OK ||
        (status = side_assemble(cand, rows, n, a)) != DG_OK)
        return status;
    /* the candidate end to end first (its activations are replaced below) */
    if ((status = side_pass(cand, n, &mode, 0, &cand_loss)) != DG_OK)
        return status;
    ref->net->layer_hook = snapshot_hook;
    ref->net->layer_hook_ctx = r;
    status = side_pass(ref, n, &mode, 1, &ref_loss);
    ref->net->layer_hook = NULL;
    if (status != DG_OK)
        return status;

    print_header(r->out);
    if ((status = compare_tensor(r, "input", "output", ref->net->act[0], NULL, cand->net->act[0],
                                 (size_t)n * DG_PIXELS, &dg_tol_exact, 1)) != DG_OK)
        return status;
    cand->net->layer_hook = compare_hook;
    cand->net->layer_hook_ctx = r;
    status = side_pass(cand, n, &mode, 1, &ignored);
    cand->net->layer_hook = NULL;
    if (status != DG_OK)
        return status;

    double loss_rel = fabs(cand_loss - ref_loss) / fabs(ref_loss);
    int loss_ok = loss_rel <= loss_bound(r);
    r->failures += !loss_ok;
    fprintf(r->out,
            "\nloss of the batch, end to end: reference %.9g candidate %.9g relative error "
            "%.3g  %s\n",
            ref_loss, cand_loss, loss_rel, loss_ok ? "pass" : "FAIL");
    return DG_OK;
}

/* Elements where the candidate's update differs from the RMSprop element math
 * (src/math/rmsprop.h) applied to the weights and accumulators it started from and its own
 * gradient: the update is element math, bit-identical on every backend. */
/* The optimizer's state: the first vector (rms_acc: RMSprop's accumulators, Adam's m, SGD's
 * buffer) and Adam's v and powers. */
struct opt_state {
    float *a, *v;
    float pow[2];
};

/* The candidate's update against the element math on its own gradient g, from the state s0 the
 * step started from (w0 its weights after the forward pass): the mismatching parameters (Adam's
 * powers, when wrong, count as one more). */
static size_t update_mismatches(const struct dg_optimizer *opt, const float *w0,
                                const struct opt_state *s0, const float *g, const float *w1,
                                const struct opt_state *s1, size_t n, size_t *first)
{
    size_t bad = 0;
    float pow1[2] = {s0->pow[0] * opt->beta1, s0->pow[1] * opt->beta2};
    if (opt->kind == DG_OPTIMIZER_ADAM && memcmp(pow1, s1->pow, sizeof pow1) != 0) {
        *first = n;
        bad++;
    }
    for (size_t i = 0; i < n; i++) {
        float w = w0[i], a = s0->a[i], v = 0.0f;
        switch (opt->kind) {
        case DG_OPTIMIZER_ADAM:
            v = s0->v[i];
            dg_adam_element(&w, &a, &v, g[i], DG_COMPARE_LR, opt->beta1, opt->beta2,
                            opt->adam_eps, 1.0f - pow1[0], 1.0f - pow1[1]);
            break;
        case DG_OPTIMIZER_SGD:
            dg_sgd_element(&w, &a, g[i], DG_COMPARE_LR, opt->momentum, opt->nesterov);
            break;
        default:
            dg_rmsprop_element(&w, &a, g[i], DG_COMPARE_LR, DG_COMPARE_RHO, DG_COMPARE_EPS);
        }
        if (memcmp(&w, &w1[i], sizeof w) != 0 || memcmp(&a, &s1->a[i], sizeof a) != 0 ||
            (opt->kind == DG_OPTIMIZER_ADAM && memcmp(&v, &s1->v[i], sizeof v) != 0)) {
            if (!bad)
                *first = i;
            bad++;
        }
    }
    return bad;
}

static enum dg_status download(struct side *s, float *host, const float *ptr, size_t n)
{
    return s->be->ops->download(s->be, host, ptr, n * sizeof(float));
}

/* setup->steps training steps along the reference's trajectory: before each step the candidate
 * takes the reference's weights and optimizer state, then both run the step (forward,
 * backward, update) on the same batch. Each step is judged alone: its loss (the same weights:
 * DG_TOL_LOSS_RTOL), the weights it leaves against the reference's (dg_tol_weights), and the
 * candidate's update against the element math on its own gradient (exact). Two correct FP32
 * implementations trained apart diverge within a few steps (docs/DEVELOPING.md,
 * "Tolerances"): independent trajectories cannot be judged by a tight bound. */

/* The optimizer's state of one side to host (or from host). */
static enum dg_status state_move(struct side *s, struct opt_state *st, size_t count, int up)
{
    struct dg_backend *be = s->be;
    struct dg_net *net = s->net;
    enum dg_status status;
    if (up) {
        if ((status = be->ops->upload(be, net->rms_acc, st->a, count * sizeof(float))) != DG_OK ||
            (net->opt_v &&
             (status = be->ops->upload(be, net->opt_v, st->v, count * sizeof(float))) != DG_OK))
            return status;
        return net->opt_pow ? be->ops->upload(be, net->opt_pow, st->pow, sizeof st->pow) : DG_OK;
    }
    if ((status = be->ops->download(be, st->a, net->rms_acc, count * sizeof(float))) != DG_OK ||
        (net->opt_v &&
         (status = be->ops->download(be, st->v, net->opt_v, count * sizeof(float))) != DG_OK))
        return status;
    return net->opt_pow ? be->ops->download(be, st->pow, net->opt_pow, sizeof st->pow) : DG_OK;
}

static void optimizer_words(const struct dg_optimizer *opt, char *text, size_t size)
{
    switch (opt->kind) {
    case DG_OPTIMIZER_ADAM:
        snprintf(text, size, "Adam lr 1e-3, betas %.7g %.7g, eps %.7g", opt->beta1,
                 opt->beta2, opt->adam_eps);
        break;
    case DG_OPTIMIZER_SGD:
        snprintf(text, size, "SGD lr 1e-3, momentum %.7g%s", opt->momentum,
                 opt->nesterov ? ", Nesterov" : "");
        break;
    default:
        snprintf(text, size, "RMSprop lr 1e-3");
    }
}

static enum dg_status compare_steps(struct run *r, const uint32_t *rows,
                                    const struct dg_compare_setup *setup)
{
    struct side *ref = r->ref, *cand = r->cand;
    const struct dg_model *model = setup->model;
    const struct dg_dataset *dataset = setup->dataset;
    const struct dg_optimizer *opt = &r->opt;
    size_t count = model->param_count;
    int n = r->n, adam = opt->kind == DG_OPTIMIZER_ADAM;
    enum dg_status status = DG_OK;
    float *w0 = malloc(count * sizeof(float)), *g = malloc(count * sizeof(float));
    float *gr = malloc(count * sizeof(float)), *w1 = malloc(count * sizeof(float));
    float *wr = malloc(count * sizeof(float));
    /* the candidate's parameters after its forward pass, before the update: batchnorm's
     * running statistics (parameters the update leaves alone) move in the forward pass */
    float *wp = malloc(count * sizeof(float));
    struct opt_state s0 = {malloc(count * sizeof(float)),
                           adam ? malloc(count * sizeof(float)) : NULL,
                           {0.0f, 0.0f}};
    struct opt_state s1 = {malloc(count * sizeof(float)),
                           adam ? malloc(count * sizeof(float)) : NULL,
                           {0.0f, 0.0f}};
    if (!w0 || !g || !gr || !w1 || !wr || !wp || !s0.a || !s1.a || (adam && (!s0.v || !s1.v))) {
        status = dg_error(DG_ERR_NOMEM, "compare: out of memory");
        goto done;
    }
    char words[128];
    optimizer_words(opt, words, sizeof words);
    fprintf(r->out,
            "\n%ld training steps (%s) along the reference's\ntrajectory; before each "
            "step the candidate takes the reference's weights and optimizer state.\nupdate: the "
            "candidate's step against the element math on its own gradient (exact).\n",
            setup->steps, words);
    fprintf(r->out, "%5s %14s %14s %10s %12s %8s  %s\n", "step", "reference", "candidate",
            "loss_rel", "weights_nmse", "update", "result");
    if ((status = dg_net_upload_params(ref->net, model->params, 1)) != DG_OK)
        goto done;
    for (long k = 0; k < setup->steps; k++) {
        size_t first = ((size_t)k * (size_t)n) % (dataset->count - (size_t)n + 1);
        struct dg_net_mode mode = {1, setup->seed, 0, (uint32_t)k};
        struct dg_augment_key aug = {setup->seed, 0, (uint32_t)k, 10.0f, 0.1f, 0.1f};
        const struct dg_augment_key *aug_key = setup->augment ? &aug : NULL;
        double ref_loss, cand_loss;
        struct dg_backend *cb = cand->be;
        if ((status = download(ref, w0, ref->net->params, count)) != DG_OK ||
            (status = state_move(ref, &s0, count, 0)) != DG_OK ||
            (status = cb->ops->upload(cb, cand->net->params, w0, count * sizeof(float))) != DG_OK ||
            (status = state_move(cand, &s0, count, 1)) != DG_OK ||
            (status = side_assemble(ref, rows + first, n, aug_key)) != DG_OK ||
            (status = side_assemble(cand, rows + first, n, aug_key)) != DG_OK ||
            (status = side_pass(ref, n, &mode, 1, &ref_loss)) != DG_OK ||
            (status = side_pass(cand, n, &mode, 1, &cand_loss)) != DG_OK ||
            (status = download(cand, g, cand->net->grads, count)) != DG_OK ||
            (status = download(ref, gr, ref->net->grads, count)) != DG_OK ||
            (status = download(cand, wp, cand->net->params, count)) != DG_OK ||
            (status = dg_net_update(ref->net, DG_COMPARE_LR, DG_COMPARE_RHO, DG_COMPARE_EPS)) !=
                DG_OK ||
            (status = dg_net_update(cand->net, DG_COMPARE_LR, DG_COMPARE_RHO, DG_COMPARE_EPS)) !=
                DG_OK ||
            (status = download(cand, w1, cand->net->params, count)) != DG_OK ||
            (status = state_move(cand, &s1, count, 0)) != DG_OK ||
            (status = download(ref, wr, ref->net->params, count)) != DG_OK)
            goto done;
        struct dg_diff weights;
        dg_diff_compute(w1, wr, count, weights_tolerance(r), &weights);
        size_t at = 0, wrong = update_mismatches(opt, wp, &s0, g, w1, &s1, count, &at);
        double rel = fabs(cand_loss - ref_loss) / fabs(ref_loss);
        int ok = rel <= loss_bound(r) && weights.pass && wrong == 0;
        char update[32];
        snprintf(update, sizeof update, wrong ? "%zu WRONG" : "exact", wrong);
        fprintf(r->out, "%5ld %14.9g %14.9g %10.3g %12.3g %8s  %s", k + 1, ref_loss, cand_loss, rel,
                weights.nmse, update, ok ? "pass" : "FAIL");
        if (wrong && at == count)
            fprintf(r->out, " (Adam's powers beta^t)");
        else if (wrong)
            fprintf(r->out, " (first wrong update at parameter %zu)", at);
        fprintf(r->out, "\n");
        r->failures += !ok;
    }
    fprintf(r->out, "\nweights after step %ld, per layer:\n", setup->steps);
    if (biases_elementwise(r, model)) {
        switch (opt->kind) {
        case DG_OPTIMIZER_ADAM:
            fprintf(r->out,
                    "(biases: within 2 lr A(t) = %.3g, the most two Adam updates differ at step "
                    "%ld)\n",
                    2.0 * DG_COMPARE_LR * adam_update_bound(opt, setup->steps), setup->steps);
            break;
        case DG_OPTIMIZER_SGD:
            fprintf(r->out, "(biases: within lr (1 + mu [Nesterov]) (max |g| + max |g'|) of the "
                            "layer's last step, the most two SGD updates differ)\n");
            break;
        default:
            fprintf(r->out,
                    "(biases: within 2 lr / sqrt(1 - rho) = %.3g, the most two RMSprop updates "
                    "differ)\n",
                    2.0 * DG_COMPARE_LR / sqrt(1.0 - DG_COMPARE_RHO));
        }
    }
    print_header(r->out);
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        struct dg_tolerance bias_tol =
            bias_after_steps_tolerance(r, model, layer, setup->steps, gr, g);
        if (layer->weight_count &&
            ((status =
                  compare_tensor(r, layer->name, "weights", ref->net->params + layer->weight_offset,
                                 NULL, cand->net->params + layer->weight_offset,
                                 layer->weight_count, weights_tolerance(r), 0)) != DG_OK ||
             (status = compare_tensor(r, layer->name, "bias", ref->net->params + layer->bias_offset,
                                      NULL, cand->net->params + layer->bias_offset,
                                      layer->bias_count, &bias_tol, 0)) != DG_OK))
            goto done;
        /* the running mean and variance: blends of batch statistics of the candidate's own
         * forward pass from the same weights at each step, so within the forward bound of its
         * math (the convolutions before them round as TF32 or bf16 there) */
        const struct dg_tolerance *running_tol = r->bf16   ? &dg_tol_forward_bf16
                                                 : r->tf32 ? &dg_tol_forward_tf32
                                                           : &dg_tol_forward;
        if (layer->stat_count &&
            (status = compare_tensor(r, layer->name, "running",
                                     ref->net->params + layer->stat_offset, NULL,
                                     cand->net->params + layer->stat_offset, layer->stat_count,
                                     running_tol, 0)) != DG_OK)
            goto done;
    }
done:
    free(wp);
    free(w0);
    free(g);
    free(gr);
    free(w1);
    free(wr);
    free(s0.a);
    free(s0.v);
    free(s1.a);
    free(s1.v);
    return status;
}

enum dg_status dg_compare_backends(struct dg_backend *ref_be, struct dg_backend *cand_be,
                                   const struct dg_compare_setup *setup, FILE *out, int *failures)
{
    const struct dg_dataset *dataset = setup->dataset;
    struct side ref = {0}, cand = {0};
    struct run r;
    memset(&r, 0, sizeof r);
    uint32_t *rows = NULL;
    enum dg_status status;
    *failures = 0;
    if (!dataset->labels || dataset->count == 0)
        return dg_error(DG_ERR_INPUT, "compare needs labelled data");
    int n = (int)((size_t)setup->batch < dataset->count ? (size_t)setup->batch : dataset->count);
    if (n < 1)
        return dg_error(DG_ERR_USAGE, "compare: batch of %d", setup->batch);
    const struct dg_optimizer *opt = &setup->optimizer;
    if (opt->kind == DG_OPTIMIZER_ADAM &&
        !((double)opt->beta1 * opt->beta1 < opt->beta2 && opt->beta2 < 1.0f))
        return dg_error(DG_ERR_USAGE,
                        "compare: Adam with beta1^2 >= beta2 (%g, %g): the bound of the biases "
                        "after the steps needs beta1^2 < beta2 < 1",
                        opt->beta1, opt->beta2);
    if (!(rows = malloc(dataset->count * sizeof *rows)))
        return dg_error(DG_ERR_NOMEM, "compare: out of memory");
    size_t val_count;
    dg_train_split(setup->seed, dataset->count, 0.0f, rows, &val_count);
    if ((status = side_open(&ref, ref_be, setup, n)) != DG_OK ||
        (status = side_open(&cand, cand_be, setup, n)) != DG_OK)
        goto done;
    char ref_desc[512], cand_desc[512];
    dg_net_describe(ref.net, ref_desc, sizeof ref_desc);
    dg_net_describe(cand.net, cand_desc, sizeof cand_desc);
    fprintf(out,
            "reference: %s\ncandidate: %s\nbatch %d of %s, %s weights, augmentation %s; %s "
            "bounds\n\n",
            ref_desc, cand_desc, n, setup->data_name ? setup->data_name : "(unnamed)",
            setup->model_name ? setup->model_name : "Glorot", setup->augment ? "on" : "off",
            setup->bf16 ? "bf16" : setup->tf32 ? "TF32" : "FP32");
    r.out = out;
    r.n = n;
    r.tf32 = setup->tf32;
    r.bf16 = setup->bf16;
    r.opt = setup->optimizer;
    r.ref = &ref;
    r.cand = &cand;
    if ((status = compare_batch(&r, rows, setup)) != DG_OK)
        goto done;
    if (setup->steps > 0 && (status = compare_steps(&r, rows, setup)) != DG_OK)
        goto done;
    fprintf(out, "\n%s: %d comparison%s outside tolerance\n", r.failures ? "FAIL" : "PASS",
            r.failures, r.failures == 1 ? "" : "s");
done:
    *failures = r.failures;
    side_close(&cand);
    side_close(&ref);
    for (int i = 0; i < DG_MAX_LAYERS; i++)
        free(r.snap[i]);
    free(rows);
    return status;
}
