/* digits compare: the same batch, the same weights and the same dropout and augmentation draws
 * through a reference backend (the CPU fast path) and a candidate (CUDA by default), with a
 * table per layer of forward outputs, activation gradients and weight / bias gradients;
 * --steps K trains K steps on both from the same start and compares the losses and the final
 * weights. Exit 0 when everything is within tolerance, 1 otherwise. */
#include "cli/cli.h"

#include "digits/compare.h"
#include "digits/data.h"
#include "digits/io.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/train.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: digits compare [--data FILE] [--model FILE] [--steps K] [options]\n"
    "\n"
    "Runs one training batch through the CPU backend (the reference) and the CUDA backend\n"
    "with the same weights, dropout masks and augmentation, and prints per layer the max\n"
    "absolute and relative error, NMSE, worst index and pass/fail of: the forward output,\n"
    "the gradient of the activations, and the weight and bias gradients.\n"
    "\n"
    "options:\n"
    "      --data FILE      labelled data for the batch (default: a deterministic synthetic\n"
    "                       batch); --labels FILE for IDX images\n"
    "      --model FILE     start from trained weights (default: Glorot init of --seed)\n"
    "      --steps K        also train K steps on both and compare losses and final weights\n"
    "      --batch N        batch size (86)\n"
    "      --seed N         seed of init, dropout and augmentation (42)\n"
    "      --no-augment     no augmentation of the batch\n"
    "      --device D       the candidate: cuda, cuda:N, or cpu (CPU against itself with\n"
    "                       --candidate-threads, a check of this command) (cuda)\n"
    "      --candidate-threads N  CPU threads of a cpu candidate (1)\n"
    "      --math M         fp32 or tf32 (fp32; tf32 is expected to fail the tolerances)\n"
    "      --threads N      threads of the CPU reference (all cores)\n"
    "  -h, --help           this text\n";

struct side {
    struct dg_backend *be;
    struct dg_net *net;
    void *handle;
};

static int failures;

static void print_header(void)
{
    printf("%-10s %-9s %10s %10s %10s %9s  %s\n", "layer", "tensor", "max_abs", "max_rel",
           "nmse", "worst", "result");
}

static enum dg_status compare_tensor(struct side *ref, struct side *cand, const char *layer,
                                     const char *what, const float *ref_ptr,
                                     const float *cand_ptr, size_t count,
                                     const struct dg_tolerance *tol)
{
    float *a = malloc(count * sizeof(float));
    float *b = malloc(count * sizeof(float));
    enum dg_status status = DG_OK;
    if (!a || !b) {
        status = dg_error(DG_ERR_NOMEM, "compare: out of memory");
        goto done;
    }
    if ((status = ref->be->ops->download(ref->be, b, ref_ptr, count * sizeof(float))) != DG_OK ||
        (status = cand->be->ops->download(cand->be, a, cand_ptr, count * sizeof(float))) !=
            DG_OK)
        goto done;
    struct dg_diff diff;
    dg_diff_compute(a, b, count, tol, &diff);
    printf("%-10s %-9s %10.3g %10.3g %10.3g %9zu  %s", layer, what, diff.max_abs, diff.max_rel,
           diff.nmse, diff.worst, diff.pass ? "pass" : "FAIL");
    if (!diff.pass) {
        failures++;
        printf(" (%zu outside, cpu %.9g vs candidate %.9g)", diff.failures,
               (double)b[diff.worst], (double)a[diff.worst]);
    }
    printf("\n");
done:
    free(a);
    free(b);
    return status;
}

static enum dg_status side_open(struct side *s, struct dg_backend *be, const struct dg_model *model,
                                const struct dg_dataset *dataset, int batch)
{
    enum dg_status status;
    s->be = be;
    if ((status = dg_net_create(be, model, batch, &s->net)) != DG_OK)
        return status;
    if ((status = dg_net_upload_params(s->net, model->params, 1)) != DG_OK)
        return status;
    return be->ops->dataset_attach(be, dataset, &s->handle);
}

static void side_close(struct side *s)
{
    if (s->handle)
        s->be->ops->dataset_detach(s->be, s->handle);
    dg_net_free(s->net);
    if (s->be)
        dg_backend_destroy(s->be);
}

/* One training step on one side: assemble, forward (loss into stats), backward. */
static enum dg_status side_step(struct side *s, const uint32_t *rows, int n,
                                const struct dg_net_mode *mode, const struct dg_augment_key *aug,
                                double *loss)
{
    enum dg_status status;
    double loss_sum, correct;
    if ((status = s->be->ops->batch_assemble(s->be, s->handle, rows, n, aug, s->net->act[0],
                                             s->net->labels)) != DG_OK ||
        (status = dg_net_stats_reset(s->net)) != DG_OK ||
        (status = dg_net_forward(s->net, n, mode, s->net->labels)) != DG_OK ||
        (status = dg_net_backward(s->net, n, mode)) != DG_OK ||
        (status = dg_net_stats_read(s->net, &loss_sum, &correct)) != DG_OK)
        return status;
    *loss = loss_sum / n;
    return DG_OK;
}

static enum dg_status compare_layers(struct side *ref, struct side *cand, int n)
{
    const struct dg_model *model = ref->net->model;
    enum dg_status status;
    print_header();
    if ((status = compare_tensor(ref, cand, "input", "output", ref->net->act[0],
                                 cand->net->act[0], (size_t)n * DG_PIXELS, &dg_tol_forward)) !=
        DG_OK)
        return status;
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *layer = &model->layers[i];
        size_t count = (size_t)n * layer->out_c * layer->out_h * layer->out_w;
        if (ref->net->out[i + 1] != ref->net->out[i] &&
            (status = compare_tensor(ref, cand, layer->name, "output", ref->net->out[i + 1],
                                     cand->net->out[i + 1], count, &dg_tol_forward)) != DG_OK)
            return status;
    }
    if ((status = compare_tensor(ref, cand, "softmax", "output", ref->net->probs,
                                 cand->net->probs, (size_t)n * DG_CLASSES, &dg_tol_forward)) !=
        DG_OK)
        return status;
    if ((status = compare_tensor(ref, cand, "softmax", "grad", ref->net->dlogits,
                                 cand->net->dlogits, (size_t)n * DG_CLASSES, &dg_tol_backward)) !=
        DG_OK)
        return status;
    for (int i = model->layer_count - 1; i >= 0; i--) {
        const struct dg_layer *layer = &model->layers[i];
        size_t in_count = (size_t)n * layer->in_c * layer->in_h * layer->in_w;
        if (i > 0 && ref->net->dout[i] != ref->net->dout[i + 1] &&
            (status = compare_tensor(ref, cand, layer->name, "grad_in", ref->net->dout[i],
                                     cand->net->dout[i], in_count, &dg_tol_backward)) != DG_OK)
            return status;
        if (layer->weight_count &&
            ((status = compare_tensor(ref, cand, layer->name, "grad_w",
                                      ref->net->grads + layer->weight_offset,
                                      cand->net->grads + layer->weight_offset,
                                      layer->weight_count, &dg_tol_backward)) != DG_OK ||
             (status = compare_tensor(ref, cand, layer->name, "grad_b",
                                      ref->net->grads + layer->bias_offset,
                                      cand->net->grads + layer->bias_offset, layer->bias_count,
                                      &dg_tol_backward)) != DG_OK))
            return status;
    }
    return DG_OK;
}

/* A deterministic synthetic labelled batch when no --data is given: strokes of varying
 * brightness, labels 0..9 in turn. */
static enum dg_status synthetic_dataset(struct dg_dataset *d, size_t count)
{
    memset(d, 0, sizeof *d);
    d->allocator = *dg_allocator_default();
    d->images = d->allocator.alloc(count * DG_PIXELS, d->allocator.ctx);
    d->labels = d->allocator.alloc(count, d->allocator.ctx);
    if (!d->images || !d->labels)
        return dg_error(DG_ERR_NOMEM, "compare: out of memory");
    for (size_t i = 0; i < count; i++) {
        for (int k = 0; k < DG_PIXELS; k++) {
            int r = k / 28, c = k % 28;
            int on = (r > 4 && r < 24 && (c + r + (int)i) % 9 < 3);
            d->images[i * DG_PIXELS + k] = (uint8_t)(on ? 128 + (k * 37 + i * 11) % 128 : 0);
        }
        d->labels[i] = (uint8_t)(i % 10);
    }
    d->count = count;
    d->format = DG_FORMAT_CSV_TRAIN;
    return DG_OK;
}

int dg_cmd_compare(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"data", required_argument, NULL, 'D'},   {"labels", required_argument, NULL, 'L'},
        {"model", required_argument, NULL, 'm'},  {"steps", required_argument, NULL, 'k'},
        {"batch", required_argument, NULL, 'b'},  {"seed", required_argument, NULL, 's'},
        {"no-augment", no_argument, NULL, 'A'},   {"device", required_argument, NULL, 'd'},
        {"math", required_argument, NULL, 'M'},   {"threads", required_argument, NULL, 't'},
        {"candidate-threads", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *data_path = NULL, *labels_path = NULL, *model_path = NULL;
    long steps = 0, batch = 86, value;
    uint64_t seed = 42;
    int augment = 1;
    struct dg_cli_device ref_device = {"cpu", 0, DG_CUDA_MATH_FP32, 1, 0};
    struct dg_cli_device cand_device = {"cuda", 1, DG_CUDA_MATH_FP32, 1, 0};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (opt) {
        case 'D':
            data_path = optarg;
            break;
        case 'L':
            labels_path = optarg;
            break;
        case 'm':
            model_path = optarg;
            break;
        case 'k':
            if (!dg_cli_parse_int("compare", "--steps", optarg, 0, 100000, &steps))
                return 2;
            break;
        case 'b':
            if (!dg_cli_parse_int("compare", "--batch", optarg, 1, 65536, &batch))
                return 2;
            break;
        case 's':
            if (!dg_cli_parse_u64("compare", "--seed", optarg, &seed))
                return 2;
            break;
        case 'A':
            augment = 0;
            break;
        case 'd':
            if (strcmp(optarg, "auto") == 0)
                return dg_cli_usage_error("compare", "--device must name the candidate: cuda, "
                                                     "cuda:N or cpu");
            cand_device.spec = optarg;
            break;
        case 'M':
            if (!dg_cli_parse_math("compare", optarg, &cand_device.math))
                return 2;
            break;
        case 't':
            if (!dg_cli_parse_int("compare", "--threads", optarg, 1, 1024, &value))
                return 2;
            ref_device.threads = (int)value;
            break;
        case 'c':
            if (!dg_cli_parse_int("compare", "--candidate-threads", optarg, 1, 1024, &value))
                return 2;
            cand_device.threads = (int)value;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("(see `digits compare --help`)\n", stderr);
            return 2;
        }
    }
    if (optind != argc)
        return dg_cli_usage_error("compare", "unexpected argument '%s'", argv[optind]);

    struct side ref = {0}, cand = {0};
    struct dg_backend *ref_be = NULL, *cand_be = NULL;
    struct dg_dataset dataset = {0};
    struct dg_model model = {0};
    uint32_t *rows = NULL;
    enum dg_status status;
    failures = 0;

    if ((status = dg_cli_open_backend(&cand_device, 1, &cand_be)) != DG_OK) {
        dg_error_prefix(status, "compare needs the candidate backend '%s'", cand_device.spec);
        goto fail;
    }
    if ((status = dg_cli_open_backend(&ref_device, 1, &ref_be)) != DG_OK)
        goto fail;
    if (model_path)
        status = dg_model_load(model_path, &model, NULL, 0);
    else {
        int count;
        const struct dg_layer_spec *specs = dg_arch_reference(&count);
        if ((status = dg_model_build(&model, specs, count)) == DG_OK)
            dg_model_init_glorot(&model, seed);
    }
    if (status != DG_OK)
        goto fail;
    size_t needed = (size_t)batch * (size_t)(steps > 0 ? steps : 1);
    if (data_path)
        status = dg_dataset_load(data_path, labels_path, NULL, &dataset);
    else
        status = synthetic_dataset(&dataset, needed < 4096 ? needed : 4096);
    if (status != DG_OK)
        goto fail;
    if (!dataset.labels) {
        status = dg_error(DG_ERR_INPUT, "%s: has no labels; compare needs labelled data",
                          data_path);
        goto fail;
    }
    int n = (int)((size_t)batch < dataset.count ? (size_t)batch : dataset.count);
    rows = malloc(dataset.count * sizeof *rows);
    if (!rows) {
        status = dg_error(DG_ERR_NOMEM, "compare: out of memory");
        goto fail;
    }
    size_t val_count;
    dg_train_split(seed, dataset.count, 0.0f, rows, &val_count);
    status = side_open(&ref, ref_be, &model, &dataset, n);
    ref_be = NULL;
    if (status != DG_OK)
        goto fail;
    status = side_open(&cand, cand_be, &model, &dataset, n);
    cand_be = NULL;
    if (status != DG_OK)
        goto fail;
    printf("reference: %s\ncandidate: %s\nbatch %d of %s, %s weights, augmentation %s\n\n",
           ref.be->description, cand.be->description, n, data_path ? data_path : "synthetic",
           model_path ? model_path : "Glorot", augment ? "on" : "off");

    struct dg_net_mode mode = {1, seed, 0, 0};
    struct dg_augment_key aug = {seed, 0, 0, 10.0f, 0.1f, 0.1f};
    double ref_loss, cand_loss;
    if ((status = side_step(&ref, rows, n, &mode, augment ? &aug : NULL, &ref_loss)) != DG_OK ||
        (status = side_step(&cand, rows, n, &mode, augment ? &aug : NULL, &cand_loss)) != DG_OK)
        goto fail;
    if ((status = compare_layers(&ref, &cand, n)) != DG_OK)
        goto fail;
    double loss_rel = fabs(cand_loss - ref_loss) / fabs(ref_loss);
    int loss_ok = loss_rel <= 1e-5;
    failures += !loss_ok;
    printf("\nloss: cpu %.9g candidate %.9g relative error %.3g  %s\n", ref_loss, cand_loss,
           loss_rel, loss_ok ? "pass" : "FAIL");

    if (steps > 0) {
        printf("\n%d training steps (RMSprop lr 1e-3) from the same start:\n", (int)steps);
        printf("%5s %14s %14s %10s  %s\n", "step", "cpu loss", "candidate", "rel_err", "result");
        if ((status = dg_net_upload_params(ref.net, model.params, 1)) != DG_OK ||
            (status = dg_net_upload_params(cand.net, model.params, 1)) != DG_OK)
            goto fail;
        for (long k = 0; k < steps; k++) {
            size_t first = ((size_t)k * (size_t)n) % (dataset.count - (size_t)n + 1);
            struct dg_net_mode step_mode = {1, seed, 0, (uint32_t)k};
            struct dg_augment_key step_aug = {seed, 0, (uint32_t)k, 10.0f, 0.1f, 0.1f};
            const struct dg_augment_key *a = augment ? &step_aug : NULL;
            if ((status = side_step(&ref, rows + first, n, &step_mode, a, &ref_loss)) != DG_OK ||
                (status = side_step(&cand, rows + first, n, &step_mode, a, &cand_loss)) !=
                    DG_OK ||
                (status = dg_net_update(ref.net, 1e-3f, 0.9f, 1e-8f)) != DG_OK ||
                (status = dg_net_update(cand.net, 1e-3f, 0.9f, 1e-8f)) != DG_OK)
                goto fail;
            /* errors compound through training: the bound grows with the step */
            double rel = fabs(cand_loss - ref_loss) / fabs(ref_loss);
            double bound = 1e-5 * (double)(k + 1);
            printf("%5ld %14.9g %14.9g %10.3g  %s\n", k + 1, ref_loss, cand_loss, rel,
                   rel <= bound ? "pass" : "FAIL");
            failures += rel > bound;
        }
        printf("\nfinal weights after %ld steps:\n", steps);
        print_header();
        for (int i = 0; i < model.layer_count; i++) {
            const struct dg_layer *layer = &model.layers[i];
            if (layer->weight_count &&
                ((status = compare_tensor(&ref, &cand, layer->name, "weights",
                                          ref.net->params + layer->weight_offset,
                                          cand.net->params + layer->weight_offset,
                                          layer->weight_count, &dg_tol_weights)) != DG_OK ||
                 (status = compare_tensor(&ref, &cand, layer->name, "bias",
                                          ref.net->params + layer->bias_offset,
                                          cand.net->params + layer->bias_offset,
                                          layer->bias_count, &dg_tol_weights)) != DG_OK))
                goto fail;
        }
    }
    printf("\n%s: %d comparison%s outside tolerance\n", failures ? "FAIL" : "PASS", failures,
           failures == 1 ? "" : "s");
fail:
    side_close(&cand);
    side_close(&ref);
    if (ref_be)
        dg_backend_destroy(ref_be);
    if (cand_be)
        dg_backend_destroy(cand_be);
    free(rows);
    dg_dataset_free(&dataset);
    dg_model_free(&model);
    if (status != DG_OK)
        return dg_cli_fail(status);
    return failures ? 1 : 0;
}
