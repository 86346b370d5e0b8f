/* The training loop on the CPU backend: the seeded split and shuffle, a whole-network
 * finite-difference gradient check through dg_net, a short training on the bundled sample
 * (the loss falls, validation accuracy beats 90%), bit-identical weights for one seed, and
 * prediction. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "digits/backend.h"
#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/train.h"
#include "test_util.h"

static void build_reference(struct dg_model *model, uint64_t seed)
{
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    ck_assert_int_eq(dg_model_build(model, specs, count), DG_OK);
    dg_model_init_glorot(model, seed);
}

START_TEST(split_and_shuffle_are_seeded_permutations)
{
    enum { N = 1000 };
    uint32_t a[N], b[N];
    size_t val_a, val_b;
    dg_train_split(5, N, 0.1f, a, &val_a);
    dg_train_split(5, N, 0.1f, b, &val_b);
    ck_assert_uint_eq(val_a, 100);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    int seen[N] = {0};
    for (int i = 0; i < N; i++)
        seen[a[i]]++;
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(seen[i], 1);
    dg_train_split(6, N, 0.1f, b, &val_b);
    ck_assert_int_ne(memcmp(a, b, sizeof a), 0);
    memcpy(b, a, sizeof a);
    dg_shuffle(5, 3, 0, a, N);
    dg_shuffle(5, 3, 1, b, N);
    ck_assert_int_ne(memcmp(a, b, sizeof a), 0);
    size_t none;
    dg_train_split(5, N, 0.0f, a, &none);
    ck_assert_uint_eq(none, 0);
}
END_TEST

/* Mean cross-entropy of the batch in act[0] with the net's current parameters (dropout masks
 * of `mode`: a fixed function of the key, so the loss is a smooth function of the weights
 * away from ReLU and max-pool switches). */
static double batch_loss(struct dg_net *net, int n, const struct dg_net_mode *mode)
{
    double loss_sum, correct;
    ck_assert_int_eq(dg_net_stats_reset(net), DG_OK);
    ck_assert_int_eq(dg_net_forward(net, n, mode, net->labels), DG_OK);
    ck_assert_int_eq(dg_net_stats_read(net, &loss_sum, &correct), DG_OK);
    return loss_sum / n;
}

/* The whole network's gradient by central differences: the reference network (_i 0) and one
 * with batchnorm after a "valid", a stride-2 convolution and a dense layer (_i 1; training
 * mode, so through the batch statistics). */
START_TEST(whole_network_gradient_check)
{
    struct dg_backend *be;
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    struct dg_model model;
    int expected_layers = 6;
    if (_i == 0) {
        build_reference(&model, 11);
    } else {
        struct dg_layer_spec specs[DG_MAX_LAYERS];
        int count;
        ck_assert_int_eq(dg_net_spec_parse("8C3V-B-8C5S2-B-D0.2-16-B-10", specs, &count), DG_OK);
        ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
        dg_model_init_glorot(&model, 11);
        expected_layers = 7;
        /* gamma and beta off their initial 1 and 0 */
        for (int i = 0; i < model.layer_count; i++)
            if (model.layers[i].spec.kind == DG_LAYER_BATCHNORM)
                for (size_t k = 0; k < model.layers[i].weight_count; k++)
                    model.params[model.layers[i].weight_offset + k] = 0.8f + 0.05f * (float)(k % 5);
    }
    /* non-zero biases so that their gradients are exercised from a generic point */
    for (int i = 0; i < model.layer_count; i++)
        for (size_t k = 0; k < model.layers[i].bias_count; k++)
            model.params[model.layers[i].bias_offset + k] = 0.01f * (float)((k % 7) + 1);
    enum { N = 3 };
    struct dg_net *net;
    ck_assert_int_eq(dg_net_create(be, &model, N, &net), DG_OK);
    ck_assert_int_eq(dg_net_upload_params(net, model.params, 1), DG_OK);
    float images[N * DG_PIXELS];
    uint8_t labels[N] = {3, 7, 1};
    /* smooth blobs (few ReLU / max-pool switches near the evaluation point) */
    for (int n = 0; n < N; n++)
        for (int r = 0; r < 28; r++)
            for (int c = 0; c < 28; c++) {
                double dr = r - (10.0 + 4 * n), dc = c - (16.0 - 3 * n);
                images[n * DG_PIXELS + r * 28 + c] = (float)exp(-(dr * dr + dc * dc) / 30.0);
            }
    ck_assert_int_eq(be->ops->upload(be, net->act[0], images, sizeof images), DG_OK);
    ck_assert_int_eq(be->ops->upload(be, net->labels, labels, sizeof labels), DG_OK);
    struct dg_net_mode mode = {1, 99, 0, 0};
    batch_loss(net, N, &mode);
    ck_assert_int_eq(dg_net_backward(net, N, &mode), DG_OK);
    float *grads = malloc(model.param_count * sizeof(float));
    float *params = malloc(model.param_count * sizeof(float));
    ck_assert_int_eq(be->ops->download(be, grads, net->grads, model.param_count * sizeof(float)),
                     DG_OK);
    memcpy(params, model.params, model.param_count * sizeof(float));
    int checked = 0;
    for (int i = 0; i < model.layer_count; i++) {
        const struct dg_layer *layer = &model.layers[i];
        if (layer->weight_count == 0)
            continue;
        /* the three largest weight gradients and the largest bias gradient of the layer */
        size_t picks[4] = {0, 0, 0, 0};
        for (int p = 0; p < 3; p++) {
            float best = -1.0f;
            for (size_t k = 0; k < layer->weight_count; k++) {
                size_t index = layer->weight_offset + k;
                int taken = 0;
                for (int q = 0; q < p; q++)
                    taken |= picks[q] == index;
                if (!taken && fabsf(grads[index]) > best) {
                    best = fabsf(grads[index]);
                    picks[p] = index;
                }
            }
        }
        float best = -1.0f;
        for (size_t k = 0; k < layer->bias_count; k++)
            if (fabsf(grads[layer->bias_offset + k]) > best) {
                best = fabsf(grads[layer->bias_offset + k]);
                picks[3] = layer->bias_offset + k;
            }
        for (int p = 0; p < 4; p++) {
            size_t index = picks[p];
            /* ReLU and max-pool switches make the loss piecewise smooth: a kink inside
             * [w - h, w + h] spoils one step size, so the best of three is taken */
            static const float steps[3] = {1e-3f, 3e-4f, 1e-4f};
            double analytic = grads[index], best_error = INFINITY, best_numeric = 0.0;
            for (int s = 0; s < 3; s++) {
                float h = steps[s];
                float saved = params[index];
                params[index] = saved + h;
                ck_assert_int_eq(dg_net_upload_params(net, params, 0), DG_OK);
                double up = batch_loss(net, N, &mode);
                params[index] = saved - h;
                ck_assert_int_eq(dg_net_upload_params(net, params, 0), DG_OK);
                double down = batch_loss(net, N, &mode);
                params[index] = saved;
                double numeric = (up - down) / (2.0 * (double)h);
                double error = fabs(numeric - analytic) / fmax(fabs(numeric), fabs(analytic));
                if (error < best_error) {
                    best_error = error;
                    best_numeric = numeric;
                }
            }
            if (best_error > 1e-2)
                ck_abort_msg("%s param %zu: analytic %.6g numeric %.6g (relative error %.3g)",
                             layer->name, index, analytic, best_numeric, best_error);
            checked++;
        }
    }
    ck_assert_int_eq(checked, expected_layers * 4);
    free(grads);
    free(params);
    dg_net_free(net);
    dg_model_free(&model);
    dg_backend_destroy(be);
}
END_TEST

struct history {
    double first_loss, last_loss, last_val_accuracy;
    int epochs;
};

static void record_epoch(const struct dg_epoch_report *report, void *ctx)
{
    struct history *h = ctx;
    if (report->epoch == 1)
        h->first_loss = report->loss;
    h->last_loss = report->loss;
    h->last_val_accuracy = report->val_accuracy;
    h->epochs = report->epoch;
}

/* --ema: after every training step the net's average is decay e + (1 - decay) w of the weights
 * that step left (computed here on the host from the weights downloaded after each step, bit
 * for bit; the average starts at the initial weights); dg_net_swap_ema exchanges the two. */
START_TEST(ema_follows_the_weights)
{
    struct dg_backend *be;
    ck_assert_int_eq(dg_backend_cpu_create(2, &be), DG_OK);
    struct dg_model model;
    build_reference(&model, 5);
    enum { N = 8 };
    struct dg_dataset data;
    ck_assert_int_eq(dg_dataset_load(dg_test_sample_path(), NULL, NULL, &data), DG_OK);
    struct dg_net *net;
    ck_assert_int_eq(dg_net_create(be, &model, N, &net), DG_OK);
    ck_assert_int_eq(dg_net_upload_params(net, model.params, 1), DG_OK);
    const float decay = 0.75f;
    ck_assert_int_eq(dg_net_set_ema(net, decay, model.params), DG_OK);
    void *handle;
    ck_assert_int_eq(be->ops->dataset_attach(be, &data, &handle), DG_OK);
    size_t count = model.param_count;
    float *expect = malloc(count * sizeof(float)), *w = malloc(count * sizeof(float));
    float *got = malloc(count * sizeof(float));
    memcpy(expect, model.params, count * sizeof(float));
    for (uint32_t step = 0; step < 4; step++) {
        uint32_t rows[N];
        for (int i = 0; i < N; i++)
            rows[i] = step * N + (uint32_t)i;
        struct dg_net_mode mode = {1, 7, 0, step};
        ck_assert_int_eq(dg_net_train_step(net, handle, rows, N, &mode, NULL, 1e-3f, 0.9f, 1e-8f),
                         DG_OK);
        ck_assert_int_eq(dg_net_download_params(net, w), DG_OK);
        for (size_t i = 0; i < count; i++)
            expect[i] = decay * expect[i] + (1.0f - decay) * w[i];
    }
    ck_assert_int_eq(dg_net_download_ema(net, got), DG_OK);
    ck_assert_int_eq(memcmp(got, expect, count * sizeof(float)), 0);
    ck_assert_int_ne(memcmp(got, w, count * sizeof(float)), 0);
    /* swapped, the weights the net evaluates are the average; swapped back, the weights */
    dg_net_swap_ema(net);
    ck_assert_int_eq(dg_net_download_params(net, got), DG_OK);
    ck_assert_int_eq(memcmp(got, expect, count * sizeof(float)), 0);
    dg_net_swap_ema(net);
    ck_assert_int_eq(dg_net_download_params(net, got), DG_OK);
    ck_assert_int_eq(memcmp(got, w, count * sizeof(float)), 0);
    free(expect), free(w), free(got);
    be->ops->dataset_detach(be, handle);
    dg_net_free(net);
    dg_dataset_free(&data);
    dg_model_free(&model);
    dg_backend_destroy(be);
}
END_TEST

/* --schedule onecycle:MAX_LR against PyTorch's OneCycleLR (defaults, cycle_momentum=False),
 * its formula written out: the ends, the peak, and points on both cosines. */
START_TEST(onecycle_learning_rates)
{
    const double pi = 3.14159265358979323846;
    const float max_lr = 0.01f;
    const long total = 1000;
    const double initial = 0.01 / 25.0, final = initial / 1e4, peak = 0.3 * total - 1.0;
    ck_assert(fabs(dg_onecycle_lr(max_lr, 0, total) - initial) <= 1e-7 * initial);
    ck_assert(fabs(dg_onecycle_lr(max_lr, 299, total) - 0.01) <= 1e-7 * 0.01);
    ck_assert(fabs(dg_onecycle_lr(max_lr, total - 1, total) - final) <= 1e-7 * final);
    for (long step = 0; step < total; step += 37) {
        double want;
        if (step <= peak)
            want = 0.01 + (initial - 0.01) / 2.0 * (cos(pi * step / peak) + 1.0);
        else
            want = final + (0.01 - final) / 2.0 * (cos(pi * (step - peak) / (total - 1 - peak)) + 1.0);
        ck_assert_msg(fabs(dg_onecycle_lr(max_lr, step, total) - want) <= 1e-6 * want,
                      "step %ld: %.9g, want %.9g", step, (double)dg_onecycle_lr(max_lr, step, total),
                      want);
    }
    /* rising, then falling */
    for (long step = 1; step < total; step++) {
        float a = dg_onecycle_lr(max_lr, step - 1, total), b = dg_onecycle_lr(max_lr, step, total);
        ck_assert(step <= 299 ? b >= a : b <= a);
    }
}
END_TEST

START_TEST(short_training_on_sample_learns)
{
    struct dg_backend *be;
    ck_assert_int_eq(dg_backend_cpu_create(0, &be), DG_OK);
    struct dg_dataset dataset;
    ck_assert_int_eq(dg_dataset_load(dg_test_sample_path(), NULL, NULL, &dataset), DG_OK);
    dg_dataset_truncate(&dataset, 3000);
    struct dg_model model;
    build_reference(&model, 42);
    struct dg_train_options options;
    dg_train_options_default(&options);
    options.epochs = 3;
    options.val_split = 0.2f;
    struct history history = {0};
    options.on_epoch = record_epoch;
    options.ctx = &history;
    struct dg_train_result result;
    ck_assert_int_eq(dg_train(be, &model, &dataset, &options, &result), DG_OK);
    ck_assert_int_eq(history.epochs, options.epochs);
    printf("sample training: loss %.4f -> %.4f, val_accuracy %.4f\n", history.first_loss,
           history.last_loss, history.last_val_accuracy);
    ck_assert(history.last_loss < 0.7 * history.first_loss);
    ck_assert(result.final_val_accuracy > 0.90);
    /* predictions of the trained model agree with its validation accuracy */
    float *probs = malloc(dataset.count * DG_CLASSES * sizeof(float));
    ck_assert_int_eq(dg_predict(be, &model, &dataset, 64, probs), DG_OK);
    size_t correct = 0;
    for (size_t i = 0; i < dataset.count; i++) {
        const float *p = probs + i * DG_CLASSES;
        int best = 0;
        double sum = 0.0;
        for (int k = 0; k < DG_CLASSES; k++) {
            sum += p[k];
            if (p[k] > p[best])
                best = k;
        }
        ck_assert(fabs(sum - 1.0) < 1e-5);
        correct += best == dataset.labels[i];
    }
    ck_assert((double)correct / (double)dataset.count > 0.90);
    free(probs);
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
}
END_TEST

static void train_once(uint64_t seed, float *out_params, size_t *count)
{
    struct dg_backend *be;
    ck_assert_int_eq(dg_backend_cpu_create(0, &be), DG_OK);
    struct dg_dataset dataset;
    ck_assert_int_eq(dg_dataset_load(dg_test_sample_path(), NULL, NULL, &dataset), DG_OK);
    dg_dataset_truncate(&dataset, 300);
    struct dg_model model;
    build_reference(&model, seed);
    struct dg_train_options options;
    dg_train_options_default(&options);
    options.epochs = 2;
    options.seed = seed;
    struct dg_train_result result;
    ck_assert_int_eq(dg_train(be, &model, &dataset, &options, &result), DG_OK);
    memcpy(out_params, model.params, model.param_count * sizeof(float));
    *count = model.param_count;
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
}

START_TEST(same_seed_gives_bit_identical_weights)
{
    float *a = malloc(887530 * sizeof(float));
    float *b = malloc(887530 * sizeof(float));
    size_t count_a, count_b;
    train_once(17, a, &count_a);
    train_once(17, b, &count_b);
    ck_assert_uint_eq(count_a, count_b);
    ck_assert_int_eq(memcmp(a, b, count_a * sizeof(float)), 0);
    train_once(18, b, &count_b);
    ck_assert_int_ne(memcmp(a, b, count_a * sizeof(float)), 0);
    free(a);
    free(b);
}
END_TEST

START_TEST(training_refuses_unlabelled_data)
{
    struct dg_backend *be;
    ck_assert_int_eq(dg_backend_cpu_create(1, &be), DG_OK);
    struct dg_dataset dataset;
    ck_assert_int_eq(dg_dataset_load(dg_test_sample_path(), NULL, NULL, &dataset), DG_OK);
    uint8_t *labels = dataset.labels;
    dataset.labels = NULL;
    struct dg_model model;
    build_reference(&model, 1);
    struct dg_train_options options;
    dg_train_options_default(&options);
    struct dg_train_result result;
    ck_assert_int_eq(dg_train(be, &model, &dataset, &options, &result), DG_ERR_INPUT);
    dataset.labels = labels;
    dg_model_free(&model);
    dg_dataset_free(&dataset);
    dg_backend_destroy(be);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, split_and_shuffle_are_seeded_permutations);
    tcase_add_loop_test(tc, whole_network_gradient_check, 0, 2);
    tcase_add_test(tc, onecycle_learning_rates);
    tcase_add_test(tc, ema_follows_the_weights);
    tcase_add_test(tc, short_training_on_sample_learns);
    tcase_add_test(tc, same_seed_gives_bit_identical_weights);
    tcase_add_test(tc, training_refuses_unlabelled_data);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
