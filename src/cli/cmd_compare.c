/* digits compare: the same batch, the same weights and the same dropout and augmentation draws
 * through a reference backend (the CPU fast path) and a candidate (CUDA by default), with a
 * table per layer of forward outputs, activation gradients and weight / bias gradients, each
 * line one op on the same inputs; --steps K trains K steps on both from the same start and
 * compares the losses and the final weights. The comparison itself is dg_compare_backends
 * (src/train/compare_run.c); this file parses the options and opens the backends and the data.
 * Exit 0 when everything is within tolerance, 1 otherwise. */
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
    "usage: digits compare [--data FILE] [--model FILE | --net SPEC] [--steps K] [options]\n"
    "\n"
    "Runs one training batch through the CPU backend (the reference) and the CUDA backend\n"
    "with the same weights, dropout masks and augmentation, and prints per layer the max\n"
    "absolute and relative error, NMSE, worst index and pass/fail of: the forward output,\n"
    "the gradient of the activations, and the weight and bias gradients. Each line is one op\n"
    "on the same inputs (after each layer the candidate continues from the reference's\n"
    "result), so a difference shows at the op that makes it. Bounds: docs/DEVELOPING.md,\n"
    "\"Tolerances\" (FP32 backward 5e-5 of max |reference|; with --math tf32, 1.5e-3 for\n"
    "convolutions and dense layers; with --math bf16, 1e-2).\n"
    "\n"
    "options:\n"
    "      --data FILE      labelled data for the batch (default: a deterministic synthetic\n"
    "                       batch); --labels FILE for IDX images\n"
    "  -m, --model FILE     start from trained weights (default: Glorot init of --seed)\n"
    "      --net SPEC       the network, as train's --net (default: reference)\n"
    "      --steps K        also train K steps on both and compare losses and final weights\n"
    "      --optimizer O    the steps' optimizer, lr 1e-3: rmsprop (rho 0.9, eps 1e-8; the\n"
    "                       default), adam (beta1 0.9, beta2 0.999, eps 1e-7) or sgd\n"
    "                       (momentum 0.9), as train's defaults\n"
    "      --nesterov       with --optimizer sgd: Nesterov momentum\n"
    "      --batch N        batch size (86)\n"
    "      --seed N         seed of init, dropout and augmentation (42)\n"
    "      --no-augment     no augmentation of the batch\n"
    "      --device D       the candidate: cuda, cuda:N, or cpu (CPU against itself with\n"
    "                       --candidate-threads, a check of this command) (cuda)\n"
    "      --candidate-threads N  CPU threads of a cpu candidate (1)\n"
    "      --math M         fp32, tf32 or bf16 (fp32): the candidate's math; tf32 (cuda) and\n"
    "                       bf16 (cuda, or cpu on a CPU with bf16 units) judge convolutions\n"
    "                       and dense layers by their bounds\n"
    "      --threads N      threads of the CPU reference (all cores)\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  digits compare --data train.csv --steps 5\n"
    "  digits compare --model model.dgt --math tf32\n"
    "  digits compare --net 16C7-P2-32C1L-P2-D0.2-64-10 --steps 3\n"
    "  digits compare --math bf16 --steps 5\n"
    "  digits compare --net deotte --optimizer adam --steps 3\n"
    "  digits compare --device cpu --math bf16 --steps 20\n";

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
        {"data", required_argument, NULL, 'D'},
        {"labels", required_argument, NULL, 'L'},
        {"model", required_argument, NULL, 'm'},
        {"net", required_argument, NULL, 'n'},
        {"steps", required_argument, NULL, 'k'},
        {"batch", required_argument, NULL, 'b'},
        {"seed", required_argument, NULL, 's'},
        {"no-augment", no_argument, NULL, 'A'},
        {"device", required_argument, NULL, 'd'},
        {"math", required_argument, NULL, 'M'},
        {"threads", required_argument, NULL, 't'},
        {"candidate-threads", required_argument, NULL, 'c'},
        {"optimizer", required_argument, NULL, 'O'},
        {"nesterov", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data_path = NULL, *labels_path = NULL, *model_path = NULL, *net = NULL;
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int layer_count = 0;
    long steps = 0, batch = 86, value;
    uint64_t seed = 42;
    int augment = 1, optimizer = DG_OPTIMIZER_RMSPROP, nesterov = 0;
    struct dg_backend_spec ref_device = {"cpu", 0, DG_MATH_FP32, 1, 0};
    struct dg_backend_spec cand_device = {"cuda", 1, DG_MATH_FP32, 1, 0};
    int opt;
    static const char short_options[] = "m:h";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
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
        case 'n':
            if (dg_net_spec_parse(optarg, specs, &layer_count) != DG_OK)
                return dg_cli_usage_error("compare", "%s", dg_error_message());
            net = optarg;
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
            cand_device.device = optarg;
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
        case 'O':
            if (!dg_optimizer_from_name(optarg, &optimizer))
                return dg_cli_usage_error("compare",
                                          "--optimizer expects rmsprop, adam or sgd, got '%s'",
                                          optarg);
            break;
        case 'N':
            nesterov = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return dg_cli_bad_option("compare", argv, short_options, long_options);
        }
    }
    if (optind != argc)
        return dg_cli_usage_error("compare", "unexpected argument '%s'", argv[optind]);
    if (nesterov && optimizer != DG_OPTIMIZER_SGD)
        return dg_cli_usage_error("compare", "--nesterov is for --optimizer sgd (the optimizer "
                                             "is %s)",
                                  dg_optimizer_name(optimizer));
    if (optimizer != DG_OPTIMIZER_RMSPROP && steps == 0)
        return dg_cli_usage_error("compare", "--optimizer is the optimizer of --steps; give "
                                             "--steps K");
    if (net && model_path)
        return dg_cli_usage_error("compare", "--net and --model: the model file has its network");
    if (!net) {
        const struct dg_layer_spec *ref = dg_arch_reference(&layer_count);
        memcpy(specs, ref, (size_t)layer_count * sizeof *ref);
    }

    struct dg_backend *ref_be = NULL, *cand_be = NULL;
    struct dg_dataset dataset = {0};
    struct dg_model model = {0};
    enum dg_status status;
    int failures = 0;

    if ((status = dg_cli_open_backend(&cand_device, 1, &cand_be)) != DG_OK) {
        dg_error_prefix(status, "compare needs the candidate backend '%s'", cand_device.device);
        goto fail;
    }
    if ((status = dg_cli_open_backend(&ref_device, 1, &ref_be)) != DG_OK)
        goto fail;
    if (model_path)
        status = dg_model_load(model_path, &model, NULL, 0);
    else if ((status = dg_model_build(&model, specs, layer_count)) == DG_OK)
        dg_model_init_glorot(&model, seed);
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
        status =
            dg_error(DG_ERR_INPUT, "%s: has no labels; compare needs labelled data", data_path);
        goto fail;
    }
    struct dg_compare_setup setup = {
        .model = &model,
        .dataset = &dataset,
        .data_name = data_path ? data_path : "synthetic",
        .model_name = model_path ? model_path : "Glorot",
        .batch = (int)batch,
        .steps = steps,
        .seed = seed,
        .augment = augment,
        .tf32 =
            cand_device.math == DG_MATH_TF32 && strncmp(cand_device.device, "cuda", 4) == 0,
        .bf16 = cand_device.math == DG_MATH_BF16,
    };
    dg_optimizer_default(&setup.optimizer, optimizer);
    setup.optimizer.nesterov = nesterov;
    status = dg_compare_backends(ref_be, cand_be, &setup, stdout, &failures);
fail:
    if (cand_be)
        dg_backend_destroy(cand_be);
    if (ref_be)
        dg_backend_destroy(ref_be);
    dg_dataset_free(&dataset);
    dg_model_free(&model);
    if (status != DG_OK)
        return dg_cli_fail(status);
    return failures ? 1 : 0;
}
