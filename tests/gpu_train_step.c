/* Whole training steps of the reference network through the dg_net API on the CUDA backend
 * against the CPU backend: the same Glorot weights, the same batch rows, the same Philox
 * dropout masks and augmentation draws. Tensors NCHW, row-major (include/digits/net.h).
 *
 * - one step: the assembled (augmented) batch is bit-identical; every layer's forward output
 *   and the probabilities within the forward tolerance (1e-5 + 1e-4 |cpu|), the loss sum
 *   within rtol 1e-5 and the correct count exact. The backward is then run on the GPU from the
 *   CPU's forward state (activations, probabilities and dlogits copied over), so that both
 *   backends route every max-pool gradient to the same element, and every activation and
 *   parameter gradient is compared with the FP32 backward tolerance (max |gpu - cpu| <= 5e-5
 *   max |cpu|, dg_tol_backward_fp32). Without that copy a window whose two largest inputs
 *   differ only by rounding could route its gradient to a different element on each backend;
 *   such windows are counted and printed, and must be at most 1 + 1e-4 of all windows.
 * - several steps along the CPU's trajectory: before each step the GPU takes the CPU's weights
 *   and RMSprop accumulators (trained apart, two correct FP32 implementations diverge within a
 *   few steps, docs/DEVELOPING.md); each step's loss within rtol 1e-5, the weights it leaves
 *   with NMSE <= 1e-6 (dg_tol_weights), and the GPU's RMSprop update bit-identical to the
 *   element math on its own gradient: the same bounds as `digits compare --steps`.
 * - inference: the validation pass (forward without dropout, with labels: loss and correct
 *   count, no gradient), dg_evaluate over every row (batches of 86 and a partial one) and
 *   dg_predict (batches of 64 and a partial one) on the GPU against the CPU: every layer and
 *   the probabilities within the forward tolerance, the loss within rtol 1e-5, and the same
 *   predicted label for every image except where the CPU's two largest probabilities are
 *   within the forward tolerance of each other (a tie up to rounding; counted and printed).
 * - the deterministic CUDA backend reruns those steps bit for bit on a second instance.
 * Bounds: include/digits/compare.h; a failure is a finding, not a reason to loosen one.
 *
 * Exits 77 (skipped) when no CUDA device is usable; runs without fork. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits/backend.h"
#include "digits/compare.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/train.h"
#include "math/rmsprop.h"
#include "test_util.h"

#define MAX_BATCH 86
#define IMAGES 300
#define SEED 42u

static struct dg_backend *cpu;
static struct dg_backend *gpu;
static struct dg_model model;
static struct dg_dataset dataset;

struct side {
    struct dg_backend *be;
    struct dg_net *net;
    void *handle;
};

static void check_ok(enum dg_status status)
{
    ck_assert_msg(status == DG_OK, "failed: %s", dg_error_message());
}

static void side_open(struct side *s, struct dg_backend *be)
{
    s->be = be;
    check_ok(dg_net_create(be, &model, MAX_BATCH, &s->net));
    check_ok(dg_net_upload_params(s->net, model.params, 1));
    check_ok(be->ops->dataset_attach(be, &dataset, &s->handle));
}

static void side_close(struct side *s)
{
    s->be->ops->dataset_detach(s->be, s->handle);
    dg_net_free(s->net);
}

static float *fetch(struct dg_backend *be, const float *ptr, size_t n)
{
    float *host = dg_test_floats(n);
    check_ok(be->ops->download(be, host, ptr, n * sizeof(float)));
    return host;
}

static void batch_rows(uint32_t *rows, int n, uint32_t step)
{
    for (int i = 0; i < n; i++)
        rows[i] = (uint32_t)((step * 131u + (uint32_t)i * 7u) % IMAGES);
}

static struct dg_net_mode train_mode(uint32_t step)
{
    struct dg_net_mode mode = {1, SEED, 1, step};
    return mode;
}

/* Assembles the batch (augmented) and runs the forward pass with labels. */
static void side_forward(struct side *s, const uint32_t *rows, int n, uint32_t step)
{
    struct dg_augment_key key = {SEED, 1, step, 10.0f, 0.1f, 0.1f};
    struct dg_net_mode mode = train_mode(step);
    check_ok(s->be->ops->batch_assemble(s->be, s->handle, rows, n, &key, s->net->act[0],
                                        s->net->labels));
    check_ok(dg_net_stats_reset(s->net));
    check_ok(dg_net_forward(s->net, n, &mode, s->net->labels));
}

static double side_loss(struct side *s, double *correct)
{
    double loss_sum = 0.0;
    check_ok(dg_net_stats_read(s->net, &loss_sum, correct));
    return loss_sum;
}

/* Compares a tensor of both sides; prints the result line and the first (gpu, cpu) pairs. */
static int compare(const char *layer, const char *what, struct side *g, const float *g_ptr,
                   struct side *c, const float *c_ptr, size_t n, const struct dg_tolerance *tol)
{
    float *a = fetch(g->be, g_ptr, n), *b = fetch(c->be, c_ptr, n);
    struct dg_diff diff;
    dg_diff_compute(a, b, n, tol, &diff);
    printf("  %-9s %-8s n=%-8zu max_abs %-10.3g max_rel %-10.3g nmse %-10.3g %s", layer, what, n,
           diff.max_abs, diff.max_rel, diff.nmse, diff.pass ? "pass" : "FAIL");
    printf("  first (gpu, cpu):");
    for (size_t i = 0; i < n && i < 2; i++)
        printf(" (%.8g, %.8g)", (double)a[i], (double)b[i]);
    if (!diff.pass)
        printf("  worst [%zu] (%.9g, %.9g), %zu outside", diff.worst, (double)a[diff.worst],
               (double)b[diff.worst], diff.failures);
    printf("\n");
    free(a);
    free(b);
    return diff.pass;
}

static size_t layer_out_count(const struct dg_layer *layer, int n)
{
    return (size_t)n * layer->out_c * layer->out_h * layer->out_w;
}

static size_t layer_in_count(const struct dg_layer *layer, int n)
{
    return (size_t)n * layer->in_c * layer->in_h * layer->in_w;
}

/* Windows of a max-pool layer whose first maximum is at a different element on each side. */
static size_t routing_differences(const struct dg_layer *layer, const float *a, const float *b,
                                  int n, size_t *windows)
{
    int h = layer->in_h, w = layer->in_w;
    size_t planes = (size_t)n * layer->in_c, differ = 0;
    *windows = planes * (size_t)(h / 2) * (size_t)(w / 2);
    for (size_t p = 0; p < planes; p++)
        for (int r = 0; r + 1 < h; r += 2)
            for (int q = 0; q + 1 < w; q += 2) {
                size_t at[4] = {p * h * w + (size_t)r * w + q, p * h * w + (size_t)r * w + q + 1,
                                p * h * w + (size_t)(r + 1) * w + q,
                                p * h * w + (size_t)(r + 1) * w + q + 1};
                int best_a = 0, best_b = 0;
                for (int k = 1; k < 4; k++) {
                    if (a[at[k]] > a[at[best_a]])
                        best_a = k;
                    if (b[at[k]] > b[at[best_b]])
                        best_b = k;
                }
                differ += best_a != best_b;
            }
    return differ;
}

/* Copies the CPU's forward state into the GPU net (n images). */
static void copy_forward_state(struct side *g, struct side *c, int n)
{
    const struct dg_model *m = c->net->model;
    for (int i = 0; i <= m->layer_count; i++) {
        size_t count = i == 0 ? (size_t)n * DG_PIXELS : layer_out_count(&m->layers[i - 1], n);
        float *host = fetch(c->be, c->net->out[i], count);
        check_ok(g->be->ops->upload(g->be, g->net->out[i], host, count * sizeof(float)));
        free(host);
    }
    float *probs = fetch(c->be, c->net->probs, (size_t)n * DG_CLASSES);
    float *dlogits = fetch(c->be, c->net->dlogits, (size_t)n * DG_CLASSES);
    check_ok(g->be->ops->upload(g->be, g->net->probs, probs, (size_t)n * DG_CLASSES * 4));
    check_ok(g->be->ops->upload(g->be, g->net->dlogits, dlogits, (size_t)n * DG_CLASSES * 4));
    free(probs);
    free(dlogits);
}

static const int step_batches[] = {37, 86, 1, 13};

START_TEST(one_training_step)
{
    int n = step_batches[_i];
    uint32_t step = 3 + (uint32_t)_i;
    uint32_t rows[MAX_BATCH];
    batch_rows(rows, n, step);
    struct side c, g;
    side_open(&c, cpu);
    side_open(&g, gpu);
    printf("one training step, batch %d (augmented, dropout on)\n", n);
    side_forward(&c, rows, n, step);
    side_forward(&g, rows, n, step);

    ck_assert(compare("input", "x", &g, g.net->act[0], &c, c.net->act[0], (size_t)n * DG_PIXELS,
                      &dg_tol_exact));
    for (int i = 0; i < model.layer_count; i++) {
        const struct dg_layer *layer = &model.layers[i];
        if (c.net->out[i + 1] != c.net->out[i])
            ck_assert(compare(layer->name, "output", &g, g.net->out[i + 1], &c, c.net->out[i + 1],
                              layer_out_count(layer, n), &dg_tol_forward));
    }
    ck_assert(compare("softmax", "probs", &g, g.net->probs, &c, c.net->probs,
                      (size_t)n * DG_CLASSES, &dg_tol_forward));
    ck_assert(compare("softmax", "dlogits", &g, g.net->dlogits, &c, c.net->dlogits,
                      (size_t)n * DG_CLASSES, &dg_tol_backward_fp32));
    double g_correct = 0.0, c_correct = 0.0;
    double g_loss = side_loss(&g, &g_correct), c_loss = side_loss(&c, &c_correct);
    printf("  loss sum (gpu, cpu) (%.12g, %.12g), correct (%g, %g)\n", g_loss, c_loss, g_correct,
           c_correct);
    ck_assert(fabs(g_loss - c_loss) <= DG_TOL_LOSS_RTOL * fabs(c_loss));
    ck_assert(g_correct == c_correct);

    for (int i = 0; i < model.layer_count; i++) {
        const struct dg_layer *layer = &model.layers[i];
        if (layer->spec.kind != DG_LAYER_MAXPOOL)
            continue;
        size_t count = layer_in_count(layer, n), windows = 0;
        float *a = fetch(g.be, g.net->out[i], count), *b = fetch(c.be, c.net->out[i], count);
        size_t differ = routing_differences(layer, a, b, n, &windows);
        printf("  %s: %zu of %zu windows have their first maximum elsewhere on the GPU\n",
               layer->name, differ, windows);
        ck_assert(differ <= 1 + windows / 10000);
        free(a);
        free(b);
    }

    struct dg_net_mode mode = train_mode(step);
    copy_forward_state(&g, &c, n);
    check_ok(dg_net_backward(c.net, n, &mode));
    check_ok(dg_net_backward(g.net, n, &mode));
    for (int i = model.layer_count - 1; i >= 0; i--) {
        const struct dg_layer *layer = &model.layers[i];
        if (i > 0 && c.net->dout[i] != c.net->dout[i + 1])
            ck_assert(compare(layer->name, "grad_in", &g, g.net->dout[i], &c, c.net->dout[i],
                              layer_in_count(layer, n), &dg_tol_backward_fp32));
        if (layer->weight_count) {
            ck_assert(compare(layer->name, "grad_w", &g, g.net->grads + layer->weight_offset, &c,
                              c.net->grads + layer->weight_offset, layer->weight_count,
                              &dg_tol_backward_fp32));
            ck_assert(compare(layer->name, "grad_b", &g, g.net->grads + layer->bias_offset, &c,
                              c.net->grads + layer->bias_offset, layer->bias_count,
                              &dg_tol_backward_fp32));
        }
    }
    side_close(&g);
    side_close(&c);
}
END_TEST

/* K steps (forward, backward, RMSprop update) on one side; losses[k] = loss sum of step k. */
static void train_steps(struct side *s, int n, int steps, double *losses)
{
    uint32_t rows[MAX_BATCH];
    for (int k = 0; k < steps; k++) {
        struct dg_net_mode mode = train_mode((uint32_t)k);
        batch_rows(rows, n, (uint32_t)k);
        side_forward(s, rows, n, (uint32_t)k);
        check_ok(dg_net_backward(s->net, n, &mode));
        check_ok(dg_net_update(s->net, 1e-3f, 0.9f, 1e-8f));
        double correct;
        losses[k] = side_loss(s, &correct);
    }
}

/* STEPS training steps along the CPU's trajectory: before each step the GPU takes the CPU's
 * weights and RMSprop accumulators, then both run the step on the same batch (the same bounds
 * as `digits compare --steps`, src/train/compare_run.c). Trained apart, two correct FP32
 * implementations diverge within a few steps (docs/DEVELOPING.md, "Tolerances"). */
START_TEST(several_training_steps)
{
    enum { STEPS = 6 };
    int n = _i == 0 ? 86 : 37;
    size_t count = model.param_count;
    struct side c, g;
    side_open(&c, cpu);
    side_open(&g, gpu);
    printf("%d training steps along the CPU's trajectory, batch %d\n", STEPS, n);
    uint32_t rows[MAX_BATCH];
    for (int k = 0; k < STEPS; k++) {
        float *w0 = fetch(c.be, c.net->params, count), *a0 = fetch(c.be, c.net->rms_acc, count);
        check_ok(g.be->ops->upload(g.be, g.net->params, w0, count * sizeof(float)));
        check_ok(g.be->ops->upload(g.be, g.net->rms_acc, a0, count * sizeof(float)));
        struct dg_net_mode mode = train_mode((uint32_t)k);
        batch_rows(rows, n, (uint32_t)k);
        side_forward(&c, rows, n, (uint32_t)k);
        side_forward(&g, rows, n, (uint32_t)k);
        check_ok(dg_net_backward(c.net, n, &mode));
        check_ok(dg_net_backward(g.net, n, &mode));
        float *grad = fetch(g.be, g.net->grads, count);
        check_ok(dg_net_update(c.net, 1e-3f, 0.9f, 1e-8f));
        check_ok(dg_net_update(g.net, 1e-3f, 0.9f, 1e-8f));
        double correct;
        double c_loss = side_loss(&c, &correct), g_loss = side_loss(&g, &correct);
        float *w1 = fetch(g.be, g.net->params, count), *a1 = fetch(g.be, g.net->rms_acc, count);
        float *wc = fetch(c.be, c.net->params, count);
        struct dg_diff weights;
        dg_diff_compute(w1, wc, count, &dg_tol_weights, &weights);
        /* the GPU's update against the element math on its own gradient: bit-identical */
        size_t wrong = 0, first = 0;
        for (size_t i = 0; i < count; i++) {
            float w = w0[i], a = a0[i];
            dg_rmsprop_element(&w, &a, grad[i], 1e-3f, 0.9f, 1e-8f);
            if (memcmp(&w, &w1[i], sizeof w) != 0 || memcmp(&a, &a1[i], sizeof a) != 0)
                first = wrong++ ? first : i;
        }
        double rel = fabs(g_loss - c_loss) / fabs(c_loss);
        printf("  step %d mean loss (gpu, cpu) (%.9f, %.9f) rel %.3g; weights nmse %.3g; %zu "
               "updates differ from the element math\n",
               k, g_loss / n, c_loss / n, rel, weights.nmse, wrong);
        if (wrong)
            printf("    the first: parameter %zu, gpu w %.9g a %.9g\n", first, (double)w1[first],
                   (double)a1[first]);
        ck_assert(rel <= DG_TOL_LOSS_RTOL);
        ck_assert(weights.pass);
        ck_assert_uint_eq(wrong, 0);
        free(w0), free(a0), free(grad), free(w1), free(a1), free(wc);
    }
    side_close(&g);
    side_close(&c);
}
END_TEST

/* The first and second largest of ten probabilities. */
static int top_two(const float *p, float *gap)
{
    int best = 0;
    for (int k = 1; k < DG_CLASSES; k++)
        if (p[k] > p[best])
            best = k;
    float second = -1.0f;
    for (int k = 0; k < DG_CLASSES; k++)
        if (k != best && p[k] > second)
            second = p[k];
    *gap = p[best] - second;
    return best;
}

/* Images whose predicted label differs between gpu and cpu probabilities; `ties` counts the
 * images where the CPU's top two are within the forward tolerance (a label may differ only
 * there). */
static size_t label_differences(const float *g, const float *c, size_t images, size_t *ties)
{
    size_t differ = 0;
    *ties = 0;
    for (size_t i = 0; i < images; i++) {
        float g_gap, c_gap;
        int gl = top_two(g + i * DG_CLASSES, &g_gap), cl = top_two(c + i * DG_CLASSES, &c_gap);
        float top = c[i * DG_CLASSES + cl];
        int tie = c_gap <= 2.0f * (float)(dg_tol_forward.atol + dg_tol_forward.rtol * top);
        *ties += (size_t)tie;
        if (gl != cl && !tie)
            differ++;
    }
    return differ;
}

START_TEST(inference_matches_cpu)
{
    const int n = MAX_BATCH;
    uint32_t rows[MAX_BATCH];
    batch_rows(rows, n, 11);
    struct side c, g;
    side_open(&c, cpu);
    side_open(&g, gpu);
    printf("inference: validation pass of %d images, evaluate and predict over %d\n", n, IMAGES);

    /* the validation pass: no dropout, no augmentation, labels, no gradient */
    struct dg_net_mode mode = {0, SEED, 0, 0};
    float *poison = dg_test_floats((size_t)n * DG_CLASSES);
    for (size_t i = 0; i < (size_t)n * DG_CLASSES; i++)
        poison[i] = NAN;
    check_ok(g.be->ops->upload(g.be, g.net->dlogits, poison, (size_t)n * DG_CLASSES * 4));
    struct side *sides[2] = {&c, &g};
    for (int s = 0; s < 2; s++) {
        struct side *x = sides[s];
        check_ok(x->be->ops->batch_assemble(x->be, x->handle, rows, n, NULL, x->net->act[0],
                                            x->net->labels));
        check_ok(dg_net_stats_reset(x->net));
        check_ok(dg_net_forward(x->net, n, &mode, x->net->labels));
    }
    ck_assert(compare("input", "x", &g, g.net->act[0], &c, c.net->act[0], (size_t)n * DG_PIXELS,
                      &dg_tol_exact));
    for (int i = 0; i < model.layer_count; i++) {
        const struct dg_layer *layer = &model.layers[i];
        if (c.net->out[i + 1] != c.net->out[i])
            ck_assert(compare(layer->name, "output", &g, g.net->out[i + 1], &c, c.net->out[i + 1],
                              layer_out_count(layer, n), &dg_tol_forward));
    }
    ck_assert(compare("softmax", "probs", &g, g.net->probs, &c, c.net->probs,
                      (size_t)n * DG_CLASSES, &dg_tol_forward));
    double g_correct = 0.0, c_correct = 0.0;
    double g_loss = side_loss(&g, &g_correct), c_loss = side_loss(&c, &c_correct);
    printf("  validation loss sum (gpu, cpu) (%.12g, %.12g), correct (%g, %g)\n", g_loss, c_loss,
           g_correct, c_correct);
    ck_assert(isfinite(c_loss) && c_loss > 0.0);
    ck_assert(fabs(g_loss - c_loss) <= DG_TOL_LOSS_RTOL * fabs(c_loss));
    float *vg = fetch(g.be, g.net->probs, (size_t)n * DG_CLASSES);
    float *vc = fetch(c.be, c.net->probs, (size_t)n * DG_CLASSES);
    size_t vties = 0, vdiffer = label_differences(vg, vc, (size_t)n, &vties);
    printf("  validation labels differ on %zu images (%zu ties excepted)\n", vdiffer, vties);
    ck_assert_uint_eq(vdiffer, 0);
    ck_assert(fabs(g_correct - c_correct) <= (double)vties + 0.5);
    free(vg);
    free(vc);
    float *dlogits = fetch(g.be, g.net->dlogits, (size_t)n * DG_CLASSES);
    for (size_t i = 0; i < (size_t)n * DG_CLASSES; i++)
        ck_assert_msg(isnan(dlogits[i]), "the validation pass wrote dlogits[%zu]", i);
    free(dlogits);
    free(poison);

    /* dg_evaluate over every row: batches of 86 and a partial last one */
    uint32_t all[IMAGES];
    for (uint32_t i = 0; i < IMAGES; i++)
        all[i] = i;
    double losses[2], accuracies[2];
    for (int s = 0; s < 2; s++)
        check_ok(
            dg_evaluate(sides[s]->net, sides[s]->handle, all, IMAGES, &losses[s], &accuracies[s]));
    printf("  evaluate (gpu, cpu): loss (%.12g, %.12g) accuracy (%.6f, %.6f)\n", losses[1],
           losses[0], accuracies[1], accuracies[0]);
    ck_assert(fabs(losses[1] - losses[0]) <= DG_TOL_LOSS_RTOL * fabs(losses[0]));

    /* dg_predict: batches of 64 and a partial last one */
    float *gp = dg_test_floats((size_t)IMAGES * DG_CLASSES);
    float *cp = dg_test_floats((size_t)IMAGES * DG_CLASSES);
    check_ok(dg_predict(gpu, &model, &dataset, 64, gp));
    check_ok(dg_predict(cpu, &model, &dataset, 64, cp));
    struct dg_diff diff;
    dg_diff_compute(gp, cp, (size_t)IMAGES * DG_CLASSES, &dg_tol_forward, &diff);
    size_t ties = 0, differ = label_differences(gp, cp, IMAGES, &ties);
    printf("  predict: probabilities max_abs %.3g max_rel %.3g %s; labels differ on %zu images "
           "(%zu ties within the tolerance excepted)\n",
           diff.max_abs, diff.max_rel, diff.pass ? "pass" : "FAIL", differ, ties);
    ck_assert(diff.pass);
    ck_assert_uint_eq(differ, 0);
    /* accuracy: a count of correct labels, the same up to the ties */
    ck_assert(fabs(accuracies[1] - accuracies[0]) * IMAGES <= (double)ties + 0.5);
    free(gp);
    free(cp);
    side_close(&g);
    side_close(&c);
}
END_TEST

START_TEST(deterministic_reruns)
{
    enum { STEPS = 4 };
    struct dg_cuda_options options = {0, DG_MATH_FP32, 1, 0};
    double losses[2][STEPS];
    float *params[2];
    for (int run = 0; run < 2; run++) {
        struct dg_backend *be = NULL;
        check_ok(dg_backend_cuda_create(&options, &be));
        struct side s;
        side_open(&s, be);
        train_steps(&s, 37, STEPS, losses[run]);
        params[run] = dg_test_floats(model.param_count);
        check_ok(dg_net_download_params(s.net, params[run]));
        side_close(&s);
        dg_backend_destroy(be);
    }
    printf("deterministic backend, two instances: losses");
    for (int k = 0; k < STEPS; k++) {
        printf(" (%.17g, %.17g)", losses[0][k], losses[1][k]);
        ck_assert(losses[0][k] == losses[1][k]);
    }
    printf("\n");
    ck_assert(dg_test_equal("params after reruns", params[1], params[0], model.param_count));
    free(params[0]);
    free(params[1]);
}
END_TEST

static Suite *gpu_train_suite(void)
{
    Suite *suite = suite_create("gpu_train_step");
    TCase *tc = tcase_create("steps");
    tcase_add_loop_test(tc, one_training_step, 0,
                        (int)(sizeof step_batches / sizeof step_batches[0]));
    tcase_add_loop_test(tc, several_training_steps, 0, 2);
    tcase_add_test(tc, inference_matches_cpu);
    tcase_add_test(tc, deterministic_reruns);
    tcase_set_timeout(tc, 600);
    suite_add_tcase(suite, tc);
    return suite;
}

/* Sparse strokes: about a fifth of the pixels lit, labels 0..9. */
static void synthetic_dataset(void)
{
    struct dg_test_rng rng = {2024};
    memset(&dataset, 0, sizeof dataset);
    dataset.count = IMAGES;
    dataset.images = dg_test_bytes((size_t)IMAGES * DG_PIXELS);
    dataset.labels = dg_test_bytes(IMAGES);
    dg_test_sparse_pixels(&rng, dataset.images, (size_t)IMAGES * DG_PIXELS);
    for (size_t i = 0; i < IMAGES; i++)
        dataset.labels[i] = (uint8_t)dg_test_below(&rng, DG_CLASSES);
}

int main(void)
{
    char reason[256];
    if (dg_cuda_probe(reason, sizeof reason) != DG_OK) {
        printf("gpu_train_step: skipped: %s\n", reason);
        return 77;
    }
    struct dg_cuda_options options = {0, DG_MATH_FP32, 0, 0};
    int layer_count = 0;
    const struct dg_layer_spec *specs = dg_arch_reference(&layer_count);
    /* the CPU nets in NCHW, as the GPU's: the steps compare and copy activations between
     * the two sides as they lie in memory (NHWC CPU nets give the same bits, test_layout) */
    if (dg_backend_cpu_create(0, &cpu) != DG_OK || dg_backend_cpu_set_layout(cpu, 0) != DG_OK ||
        dg_backend_cuda_create(&options, &gpu) != DG_OK ||
        dg_model_build(&model, specs, layer_count) != DG_OK) {
        fprintf(stderr, "gpu_train_step: %s\n", dg_error_message());
        return EXIT_FAILURE;
    }
    dg_model_init_glorot(&model, SEED);
    synthetic_dataset();
    printf("reference: %s\ncandidate: %s\n", cpu->description, gpu->description);

    SRunner *runner = srunner_create(gpu_train_suite());
    srunner_set_fork_status(runner, CK_NOFORK);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    free(dataset.images);
    free(dataset.labels);
    dg_model_free(&model);
    dg_backend_destroy(gpu);
    dg_backend_destroy(cpu);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
