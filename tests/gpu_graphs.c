/* The CUDA training step as a graph (src/cuda/step.c, dg_net_train_step), on one backend:
 *
 * - graph replay against the eager path: two nets from the same weights take the same steps
 *   (full batches and a partial one, two epochs, augmentation and dropout, a learning rate
 *   that changes every step), one replaying the captured full-batch step, one running every
 *   op (no_graphs); the weights, RMSprop accumulators and the per-step statistics (the trace)
 *   must be the same bytes, at FP32 and at --math bf16. The counters: a replayed step issues two
 * units of work (the step block's upload and the graph launch) and no host synchronisation; a step
 * is captured once.
 * - dg_train with and without graphs: the same weights bit for bit, no host synchronisation
 *   between the first and the last step of an epoch.
 * - a graph captured with one dataset is stale with another (graph_launch says so, runs
 *   nothing); the net captures again.
 * - a capture refuses a host read (download) and is thrown away; the backend then trains as
 *   before.
 * The graph's kernels and library calls are the eager path's, so these hold bit for bit on a
 * GPU as on the emulated device. Exits 77 (skipped) when no CUDA device is usable. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits/backend.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/train.h"
#include "math/adam.h"
#include "test_util.h"

/* A batch smaller than the recipe's 86: the emulated device computes every op on one core, and
 * what is checked (replay against eager, the counters) does not depend on the size. */
#define BATCH 32
#define IMAGES 116
#define SEED 7u

static struct dg_backend *gpu;         /* the backend the test at hand runs on */
static struct dg_backend *backends[2]; /* FP32, --math bf16 */
static struct dg_model model;
static struct dg_dataset dataset, other_dataset;

static void check_ok(enum dg_status status)
{
    ck_assert_msg(status == DG_OK, "failed: %s", dg_error_message());
}

static struct dg_backend_counters counters(void)
{
    struct dg_backend_counters c;
    gpu->ops->counters(gpu, &c);
    return c;
}

static struct dg_net *net_open(int no_graphs)
{
    struct dg_net *net = NULL;
    check_ok(dg_net_create(gpu, &model, BATCH, &net));
    check_ok(dg_net_upload_params(net, model.params, 1));
    net->no_graphs = no_graphs;
    return net;
}

/* Steps per epoch: 3 full batches and one of 116 - 96 = 20 images. */
#define STEPS 4

static int step_images(int step)
{
    return step < 3 ? BATCH : IMAGES - 3 * BATCH;
}

static void step_rows(uint32_t *rows, int epoch, int step)
{
    for (int i = 0; i < step_images(step); i++)
        rows[i] = (uint32_t)((epoch * 977 + step * 131 + i * 7) % IMAGES);
}

/* Two epochs of STEPS steps; the trace of each epoch into trace[epoch]. */
static void train_two_epochs(struct dg_net *net, void *handle, double trace[2][2 * STEPS],
                             struct dg_backend_counters *replayed_step)
{
    check_ok(dg_net_trace_reserve(net, STEPS));
    uint32_t rows[BATCH];
    for (int epoch = 0; epoch < 2; epoch++) {
        check_ok(dg_net_stats_reset(net));
        for (int step = 0; step < STEPS; step++) {
            step_rows(rows, epoch, step);
            struct dg_net_mode mode = {1, SEED, (uint32_t)epoch, (uint32_t)step};
            struct dg_augment_key augment = {SEED, (uint32_t)epoch, (uint32_t)step, 10.0f, 0.1f,
                                             0.1f};
            float lr = 1e-3f * (1.0f + 0.25f * (float)(epoch * STEPS + step));
            struct dg_backend_counters before = counters();
            check_ok(dg_net_train_step(net, handle, rows, step_images(step), &mode, &augment, lr,
                                       0.9f, 1e-8f));
            struct dg_backend_counters after = counters();
            if (epoch == 1 && step == 1 && replayed_step) {
                replayed_step->launches = after.launches - before.launches;
                replayed_step->graph_launches = after.graph_launches - before.graph_launches;
                replayed_step->captured = after.captured - before.captured;
                replayed_step->host_syncs = after.host_syncs - before.host_syncs;
            }
        }
        check_ok(dg_net_trace_read(net, 0, STEPS, trace[epoch]));
    }
}

static float *download_floats(const float *ptr)
{
    float *host = dg_test_floats(model.param_count);
    check_ok(gpu->ops->download(gpu, host, ptr, model.param_count * sizeof(float)));
    return host;
}

START_TEST(graph_replay_is_the_eager_step)
{
    gpu = backends[_i];
    printf("graph replay against eager on %s\n", gpu->description);
    void *handle = NULL;
    check_ok(gpu->ops->dataset_attach(gpu, &dataset, &handle));
    struct dg_net *graphs = net_open(0), *eager = net_open(1);
    double trace_g[2][2 * STEPS], trace_e[2][2 * STEPS];
    struct dg_backend_counters start = counters(), replayed, eager_step;
    train_two_epochs(graphs, handle, trace_g, &replayed);
    struct dg_backend_counters mid = counters();
    train_two_epochs(eager, handle, trace_e, &eager_step);
    struct dg_backend_counters end = counters();
    printf("  graphs: %ld graph launches, %ld units captured; a replayed step: %ld launches, "
           "%ld host syncs; an eager step: %ld launches, %ld host syncs\n",
           mid.graph_launches - start.graph_launches, mid.captured - start.captured,
           replayed.launches, replayed.host_syncs, eager_step.launches, eager_step.host_syncs);
    /* 3 full steps per epoch replayed; the partial ones run eagerly */
    ck_assert_int_eq(mid.graph_launches - start.graph_launches, 6);
    ck_assert_int_eq(end.graph_launches - mid.graph_launches, 0);
    ck_assert_int_eq(replayed.launches, 2); /* the step block's upload and the graph */
    ck_assert_int_eq(replayed.graph_launches, 1);
    ck_assert_int_eq(replayed.captured, 0);
    ck_assert_int_eq(replayed.host_syncs, 0);
    ck_assert_int_eq(eager_step.host_syncs, 0);
    ck_assert_int_eq(end.captured - mid.captured, 0);
    /* the one capture holds an eager step's work, less the block upload */
    ck_assert_int_eq(mid.captured - start.captured, eager_step.launches - 1);
    ck_assert_mem_eq(trace_g, trace_e, sizeof trace_g);
    float *pg = download_floats(graphs->params), *pe = download_floats(eager->params);
    float *ag = download_floats(graphs->rms_acc), *ae = download_floats(eager->rms_acc);
    ck_assert_mem_eq(pg, pe, model.param_count * sizeof(float));
    ck_assert_mem_eq(ag, ae, model.param_count * sizeof(float));
    /* and it learned something: the parameters moved from the start */
    ck_assert_int_ne(memcmp(pg, model.params, model.param_count * sizeof(float)), 0);
    free(pg), free(pe), free(ag), free(ae);
    dg_net_free(graphs);
    dg_net_free(eager);
    gpu->ops->dataset_detach(gpu, handle);
    gpu = backends[0];
}
END_TEST

/* Adam (its beta powers advanced inside the captured step) and SGD with Nesterov momentum:
 * replay against eager over two epochs, the parameters and every state vector bit for bit,
 * and Adam's powers after the 8 steps those of dg_adam_powers(8). */
START_TEST(graph_replay_with_adam_and_sgd)
{
    gpu = backends[0];
    struct dg_optimizer opt;
    dg_optimizer_default(&opt, _i == 0 ? DG_OPTIMIZER_ADAM : DG_OPTIMIZER_SGD);
    opt.nesterov = _i == 1;
    printf("graph replay against eager with %s\n", dg_optimizer_name(opt.kind));
    void *handle = NULL;
    check_ok(gpu->ops->dataset_attach(gpu, &dataset, &handle));
    struct dg_net *graphs = net_open(0), *eager = net_open(1);
    check_ok(dg_net_set_optimizer(graphs, &opt));
    check_ok(dg_net_set_optimizer(eager, &opt));
    double trace_g[2][2 * STEPS], trace_e[2][2 * STEPS];
    struct dg_backend_counters start = counters();
    train_two_epochs(graphs, handle, trace_g, NULL);
    ck_assert_int_eq(counters().graph_launches - start.graph_launches, 6);
    train_two_epochs(eager, handle, trace_e, NULL);
    ck_assert_mem_eq(trace_g, trace_e, sizeof trace_g);
    float *pg = download_floats(graphs->params), *pe = download_floats(eager->params);
    float *ag = download_floats(graphs->rms_acc), *ae = download_floats(eager->rms_acc);
    ck_assert_mem_eq(pg, pe, model.param_count * sizeof(float));
    ck_assert_mem_eq(ag, ae, model.param_count * sizeof(float));
    ck_assert_int_ne(memcmp(pg, model.params, model.param_count * sizeof(float)), 0);
    if (opt.kind == DG_OPTIMIZER_ADAM) {
        float *vg = download_floats(graphs->opt_v), *ve = download_floats(eager->opt_v);
        ck_assert_mem_eq(vg, ve, model.param_count * sizeof(float));
        float powg[2], powe[2], want[2];
        check_ok(gpu->ops->download(gpu, powg, graphs->opt_pow, sizeof powg));
        check_ok(gpu->ops->download(gpu, powe, eager->opt_pow, sizeof powe));
        dg_adam_powers(2 * STEPS, opt.beta1, opt.beta2, want);
        ck_assert_mem_eq(powg, want, sizeof want);
        ck_assert_mem_eq(powe, want, sizeof want);
        free(vg), free(ve);
    }
    free(pg), free(pe), free(ag), free(ae);
    dg_net_free(graphs);
    dg_net_free(eager);
    gpu->ops->dataset_detach(gpu, handle);
}
END_TEST

/* Batchnorm after a "valid", a stride-2 convolution and a dense layer (the deotte preset's
 * layers, smaller: cuDNN's batch normalisation inside the captured step, its running statistics
 * written by it) with --ema's moving average (an op after the update): replay against eager,
 * the parameters, the running statistics and the average bit for bit. */
START_TEST(graph_replay_of_batchnorm_and_ema)
{
    gpu = backends[0];
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int count;
    check_ok(dg_net_spec_parse("16C3V-B-16C5S2-B-D0.4-32-B-D0.4-10", specs, &count));
    struct dg_model small;
    check_ok(dg_model_build(&small, specs, count));
    dg_model_init_glorot(&small, SEED);
    void *handle = NULL;
    check_ok(gpu->ops->dataset_attach(gpu, &dataset, &handle));
    struct dg_net *nets[2];
    for (int k = 0; k < 2; k++) {
        check_ok(dg_net_create(gpu, &small, BATCH, &nets[k]));
        check_ok(dg_net_upload_params(nets[k], small.params, 1));
        check_ok(dg_net_set_ema(nets[k], 0.9f, small.params));
        nets[k]->no_graphs = k;
    }
    double trace_g[2][2 * STEPS], trace_e[2][2 * STEPS];
    struct dg_backend_counters start = counters();
    train_two_epochs(nets[0], handle, trace_g, NULL);
    ck_assert_int_eq(counters().graph_launches - start.graph_launches, 6);
    train_two_epochs(nets[1], handle, trace_e, NULL);
    ck_assert_mem_eq(trace_g, trace_e, sizeof trace_g);
    size_t bytes = small.param_count * sizeof(float);
    float *pg = dg_test_floats(small.param_count), *pe = dg_test_floats(small.param_count);
    float *eg = dg_test_floats(small.param_count), *ee = dg_test_floats(small.param_count);
    check_ok(dg_net_download_params(nets[0], pg));
    check_ok(dg_net_download_params(nets[1], pe));
    check_ok(dg_net_download_ema(nets[0], eg));
    check_ok(dg_net_download_ema(nets[1], ee));
    ck_assert_mem_eq(pg, pe, bytes);
    ck_assert_mem_eq(eg, ee, bytes);
    /* the running statistics moved off their start (mean 0, variance 1), the average lags */
    const struct dg_layer *bn = &small.layers[1];
    ck_assert(pg[bn->stat_offset] != 0.0f && pg[bn->stat_offset + 16] != 1.0f);
    ck_assert_int_ne(memcmp(pg, eg, bytes), 0);
    free(pg), free(pe), free(eg), free(ee);
    dg_net_free(nets[0]);
    dg_net_free(nets[1]);
    gpu->ops->dataset_detach(gpu, handle);
    dg_model_free(&small);
}
END_TEST

struct run_watch {
    struct dg_backend_counters first, last;
    int steps;
};

static void on_step(int epoch, int step, int steps, double seconds, void *ctx)
{
    (void)epoch, (void)seconds;
    struct run_watch *w = ctx;
    if (step == 1)
        w->first = counters();
    if (step == steps)
        w->last = counters();
    w->steps = steps;
}

static float *train_once(int no_graphs, struct run_watch *watch)
{
    struct dg_model m;
    int layer_count = 0;
    const struct dg_layer_spec *specs = dg_arch_reference(&layer_count);
    check_ok(dg_model_build(&m, specs, layer_count));
    dg_model_init_glorot(&m, SEED);
    struct dg_train_options options;
    dg_train_options_default(&options);
    options.epochs = 2;
    options.batch = BATCH;
    options.no_graphs = no_graphs;
    options.on_step = on_step;
    options.ctx = watch;
    struct dg_train_result result;
    check_ok(dg_train(gpu, &m, &dataset, &options, &result));
    float *params = dg_test_floats(m.param_count);
    memcpy(params, m.params, m.param_count * sizeof(float));
    dg_model_free(&m);
    return params;
}

START_TEST(training_with_graphs_is_training_without)
{
    struct run_watch with, without;
    memset(&with, 0, sizeof with);
    memset(&without, 0, sizeof without);
    long graphs_before = counters().graph_launches;
    float *a = train_once(0, &with);
    long graphs_used = counters().graph_launches - graphs_before;
    float *b = train_once(1, &without);
    printf("  dg_train: %d steps an epoch, %ld graph launches in 2 epochs; host syncs from the "
           "first to the last step of the last epoch: %ld (graphs), %ld (eager)\n",
           with.steps, graphs_used, with.last.host_syncs - with.first.host_syncs,
           without.last.host_syncs - without.first.host_syncs);
    ck_assert_int_eq(with.steps, 4); /* 104 training rows: 3 full batches and 8 */
    ck_assert_int_eq(graphs_used, 6);
    ck_assert_int_eq(with.last.host_syncs - with.first.host_syncs, 0);
    ck_assert_int_eq(without.last.host_syncs - without.first.host_syncs, 0);
    ck_assert_mem_eq(a, b, model.param_count * sizeof(float));
    free(a);
    free(b);
}
END_TEST

START_TEST(a_graph_of_another_dataset_is_stale)
{
    void *h1 = NULL, *h2 = NULL;
    check_ok(gpu->ops->dataset_attach(gpu, &dataset, &h1));
    check_ok(gpu->ops->dataset_attach(gpu, &other_dataset, &h2));
    struct dg_net *net = net_open(0);
    uint32_t rows[BATCH];
    step_rows(rows, 0, 0);
    struct dg_step_values values = {0, 0, 1e-3f};
    struct dg_net_mode mode = {1, SEED, 0, 0};
    int capturable = 0;
    /* captured with h1 */
    check_ok(gpu->ops->step_begin(gpu, h1, &values, rows, BATCH, &capturable));
    ck_assert_int_eq(capturable, 1);
    check_ok(gpu->ops->capture_begin(gpu));
    check_ok(gpu->ops->batch_assemble(gpu, h1, rows, BATCH, NULL, net->act[0], net->labels));
    check_ok(dg_net_forward(net, BATCH, &mode, net->labels));
    void *graph = NULL;
    check_ok(gpu->ops->capture_end(gpu, 0, &graph));
    gpu->ops->step_end(gpu);
    /* launched in a step with h2: stale, nothing run */
    long launched = counters().graph_launches;
    int stale = -1;
    check_ok(gpu->ops->step_begin(gpu, h2, &values, rows, BATCH, &capturable));
    check_ok(gpu->ops->graph_launch(gpu, graph, &stale));
    gpu->ops->step_end(gpu);
    ck_assert_int_eq(stale, 1);
    ck_assert_int_eq(counters().graph_launches, launched);
    /* with h1 it runs */
    check_ok(gpu->ops->step_begin(gpu, h1, &values, rows, BATCH, &capturable));
    check_ok(gpu->ops->graph_launch(gpu, graph, &stale));
    gpu->ops->step_end(gpu);
    ck_assert_int_eq(stale, 0);
    ck_assert_int_eq(counters().graph_launches, launched + 1);
    gpu->ops->graph_free(gpu, graph);
    /* the net's own graph follows the dataset: one capture per dataset switch */
    long captured = counters().captured;
    struct dg_augment_key augment = {SEED, 0, 0, 10.0f, 0.1f, 0.1f};
    for (int k = 0; k < 3; k++)
        check_ok(dg_net_train_step(net, k == 1 ? h2 : h1, rows, BATCH, &mode, &augment, 1e-3f, 0.9f,
                                   1e-8f));
    long captures = counters().captured - captured;
    struct dg_net *eager = net_open(1);
    long eager_launches = counters().launches;
    check_ok(dg_net_train_step(eager, h1, rows, BATCH, &mode, &augment, 1e-3f, 0.9f, 1e-8f));
    long per_step = counters().launches - eager_launches - 1;
    ck_assert_int_eq(captures, 3 * per_step); /* h1, then h2, then h1 again */
    dg_net_free(eager);
    dg_net_free(net);
    gpu->ops->dataset_detach(gpu, h2);
    gpu->ops->dataset_detach(gpu, h1);
}
END_TEST

START_TEST(a_capture_refuses_host_reads)
{
    void *handle = NULL;
    check_ok(gpu->ops->dataset_attach(gpu, &dataset, &handle));
    struct dg_net *net = net_open(0);
    double stats[3];
    check_ok(gpu->ops->capture_begin(gpu));
    enum dg_status read = gpu->ops->download(gpu, stats, net->stats, sizeof stats);
    printf("  a download inside a capture: %s\n", dg_error_message());
    ck_assert_int_eq(read, DG_ERR_DEVICE);
    void *graph = (void *)1;
    check_ok(gpu->ops->capture_end(gpu, 1, &graph));
    ck_assert_ptr_null(graph);
    /* the backend goes on: a graph step and an eager step from the same weights agree */
    struct dg_net *eager = net_open(1);
    uint32_t rows[BATCH];
    step_rows(rows, 0, 0);
    struct dg_net_mode mode = {1, SEED, 0, 0};
    check_ok(dg_net_train_step(net, handle, rows, BATCH, &mode, NULL, 1e-3f, 0.9f, 1e-8f));
    check_ok(dg_net_train_step(eager, handle, rows, BATCH, &mode, NULL, 1e-3f, 0.9f, 1e-8f));
    float *a = download_floats(net->params), *b = download_floats(eager->params);
    ck_assert_mem_eq(a, b, model.param_count * sizeof(float));
    free(a), free(b);
    dg_net_free(eager);
    dg_net_free(net);
    gpu->ops->dataset_detach(gpu, handle);
}
END_TEST

static Suite *graphs_suite(void)
{
    Suite *s = suite_create("gpu graphs");
    TCase *tc = tcase_create("graphs");
    tcase_set_timeout(tc, 1200);
    tcase_add_loop_test(tc, graph_replay_is_the_eager_step, 0, 2);
    tcase_add_loop_test(tc, graph_replay_with_adam_and_sgd, 0, 2);
    tcase_add_test(tc, graph_replay_of_batchnorm_and_ema);
    tcase_add_test(tc, training_with_graphs_is_training_without);
    tcase_add_test(tc, a_graph_of_another_dataset_is_stale);
    tcase_add_test(tc, a_capture_refuses_host_reads);
    suite_add_tcase(s, tc);
    return s;
}

static void synthetic(struct dg_dataset *d, uint64_t seed)
{
    struct dg_test_rng rng = {seed};
    memset(d, 0, sizeof *d);
    d->count = IMAGES;
    d->images = dg_test_bytes((size_t)IMAGES * DG_PIXELS);
    d->labels = dg_test_bytes(IMAGES);
    dg_test_sparse_pixels(&rng, d->images, (size_t)IMAGES * DG_PIXELS);
    for (size_t i = 0; i < IMAGES; i++)
        d->labels[i] = (uint8_t)dg_test_below(&rng, DG_CLASSES);
}

int main(void)
{
    char reason[256];
    if (dg_cuda_probe(reason, sizeof reason) != DG_OK) {
        printf("gpu_graphs: skipped: %s\n", reason);
        return 77;
    }
    struct dg_cuda_options options = {0, DG_MATH_FP32, 0, 0};
    struct dg_cuda_options options_bf16 = {0, DG_MATH_BF16, 0, 0};
    int layer_count = 0;
    const struct dg_layer_spec *specs = dg_arch_reference(&layer_count);
    if (dg_backend_cuda_create(&options, &backends[0]) != DG_OK ||
        dg_backend_cuda_create(&options_bf16, &backends[1]) != DG_OK ||
        dg_model_build(&model, specs, layer_count) != DG_OK) {
        fprintf(stderr, "gpu_graphs: %s\n", dg_error_message());
        return EXIT_FAILURE;
    }
    gpu = backends[0];
    dg_model_init_glorot(&model, SEED);
    synthetic(&dataset, 2024);
    synthetic(&other_dataset, 77);
    printf("device: %s\n", gpu->description);
    SRunner *runner = srunner_create(graphs_suite());
    srunner_set_fork_status(runner, CK_NOFORK);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    free(dataset.images);
    free(dataset.labels);
    free(other_dataset.images);
    free(other_dataset.labels);
    dg_model_free(&model);
    dg_backend_destroy(backends[1]);
    dg_backend_destroy(backends[0]);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
