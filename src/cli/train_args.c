/* digits train: the command line. Every option, its range and the combinations refused, and
 * the settings of a resumed run (the checkpoint's, checked against what was given). */
#define _POSIX_C_SOURCE 200809L
#include "cli/train_cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: digits train TRAIN [options] [-o model.dgt]\n"
    "\n"
    "Trains a network (the reference network unless --net says otherwise) on TRAIN (Kaggle\n"
    "train.csv[.gz], or MNIST IDX images with --labels) and writes the model file.\n"
    "\n"
    "options (defaults: the reference Keras recipe):\n"
    "  -o, --output FILE     model file to write (default model.dgt)\n"
    "      --net SPEC        the network: a preset (reference, deotte) or layers joined by\n"
    "                        '-': NcK convolution of N filters KxK (same padding, stride 1,\n"
    "                        ReLU), then optionally S2 (stride 2), V (valid: no padding), L\n"
    "                        (no ReLU), in that order; B batch normalisation (momentum 0.99,\n"
    "                        eps 1e-3); P2 2x2 max-pooling; G global average pooling (the\n"
    "                        mean of each channel, flat after); DR dropout at rate R; F\n"
    "                        flatten (implied before the first dense layer); N dense with\n"
    "                        ReLU (NL without); the last layer is 10, the classifier.\n"
    "                        reference = 32C5-32C5-P2-D0.25-64C3-64C3-P2-D0.25-F-256-D0.5-10\n"
    "                        deotte = 32C3V-B-32C3V-B-32C5S2-B-D0.4-64C3V-B-64C3V-B-64C5S2-B-\n"
    "                        D0.4-F-128-B-D0.4-10 (with --optimizer adam --schedule exp:0.95)\n"
    ;

/* (the options go on in literals of their own: C11 promises 4095 characters per literal) */
static const char *usage_text_options =
    "      --labels FILE     IDX label file, when TRAIN is an IDX image file\n"
    "      --epochs N        epochs (30)\n"
    "      --batch N         batch size (86)\n"
    "      --optimizer O     rmsprop (rho 0.9, eps 1e-8; the default), adam (Keras'\n"
    "                        defaults: beta1 0.9, beta2 0.999, eps 1e-7, bias-corrected) or\n"
    "                        sgd (momentum 0.9; PyTorch's form: b = M b + g, w -= lr b)\n"
    "      --lr X            learning rate, every optimizer (0.001)\n"
    "      --momentum M      sgd: the momentum, 0 <= M < 1 (0.9; 0: plain SGD)\n"
    "      --nesterov        sgd: Nesterov momentum (w -= lr (g + M b))\n"
    "      --beta1 B, --beta2 B  adam: the moments' decay rates, 0 <= B < 1 (0.9, 0.999)\n"
    "      --adam-eps E      adam: eps of the denominator, in [1e-12, 1] (1e-7)\n"
    "      --schedule S      the learning rate over epochs: plateau (halved after 3 epochs\n"
    "                        without a better val_accuracy, down to 1e-5; the default) or\n"
    "                        exp:GAMMA (multiplied by GAMMA, in (0, 1], after every epoch)\n"
    "                        or onecycle:MAX_LR (every step: PyTorch's OneCycleLR, cosine\n"
    "                        from MAX_LR/25 up to MAX_LR over the first 30% of the steps,\n"
    "                        then down to MAX_LR/25e4; it sets the rate: not with --lr)\n"
    "      --label-smoothing S  targets (1 - S) onehot + S/10 in the loss, 0 <= S < 1 (0)\n"
    "      --ema DECAY       keep a moving average of the weights, e = DECAY e + (1 - DECAY) w\n"
    "                        after every step (0.5..0.999999, e.g. 0.999); validation, the\n"
    "                        best epoch and the model file use the average (none)\n"
    "      --val-split X     fraction held out for validation, seeded (0.1)\n"
    "      --seed N          seed of every random draw (42)\n"
    "      --no-augment      no augmentation (default: rotation 10, zoom 0.1, shifts 0.1)\n"
    "      --rotate DEG      augmentation: rotations drawn from [-DEG, DEG] degrees (10;\n"
    "                        0..180)\n"
    "      --zoom F          augmentation: scales drawn from [1 - F, 1 + F] (0.1; 0..0.9)\n"
    "      --shift F         augmentation: shifts drawn from [-F, F] of the side, each axis\n"
    "                        (0.1; 0..0.5)\n"
    "      --limit N         use only the first N rows\n"
    "      --threads N       CPU threads (all cores)\n"
    "      --device D        auto, cpu, cuda or cuda:N (auto)\n"
    "      --math M          fp32, tf32 (CUDA: tensor cores) or bf16 (bf16 products, float32\n"
    "                        sums and weights: the CPU's AVX512-BF16, or CUDA's bf16 tensor\n"
    "                        cores, compute capability 8.0+) (fp32)\n"
    "      --deterministic   bit-identical reruns on the same GPU\n"
    "      --no-graphs       CUDA: run each training step's ops one call at a time instead\n"
    "                        of replaying the step captured once as a CUDA Graph (the same\n"
    "                        results, bit for bit; for debugging and profiling)\n"
    "      --log FILE.csv    per-epoch history (written as training goes; continued\n"
    "                        on --resume)\n"
    "      --checkpoint FILE the training state, written atomically after every epoch\n"
    "                        and on SIGINT/SIGTERM (default: the model file + .ckpt)\n"
    "      --no-checkpoint   write no checkpoint\n"
    "      --restart         start over where an interrupted run's checkpoint is (a fresh\n"
    "                        run refuses to replace it: --resume continues it)\n"
    "      --resume FILE     continue from a checkpoint, bit for bit; the settings, --limit\n"
    "                        and --labels come from it, and -o unless given; options that\n"
    "                        contradict it are refused; --epochs may be raised to train\n"
    "                        longer\n"
    ;

/* (the options continued: C11 promises 4095 characters per literal) */
static const char *usage_text_more =
    "      --save-best       the model file gets the weights of the best validation epoch\n"
    "      --split-seed N    seed of the validation split (default: --seed)\n"
    "      --ensemble K      train K members, member m with seed SEED+m (its own\n"
    "                        initialisation, dropout and augmentation; the split of\n"
    "                        --split-seed), into one ensemble file; no checkpoints;\n"
    "                        --log FILE writes FILE.memberM.csv per member\n"
    "      --member-splits   each member its own validation split (seed SEED+m)\n"
    "      --concurrent N    train N members at a time (per device with --devices), each\n"
    "                        on its own backend from its own thread: on the CPU each gets\n"
    "                        threads/N threads (at least 1), on CUDA its own streams and\n"
    "                        handles on the same device; at most the members there are.\n"
    "                        Every member is bit-identical whatever N. Default on the\n"
    "                        CPU: one member per thread (faster than one after another\n"
    "                        with all threads, measured on 2 cores); --concurrent 1: one\n"
    "                        after another. On CUDA: 1 per device (not measured on a GPU)\n"
    "      --devices LIST    spread the members over these CUDA devices (e.g. 0,1), in one\n"
    "                        process; with MPI, over each rank's members\n"
    "      --early-stop N    stop after N epochs without a better val_accuracy\n"
    "  -q, --quiet           no progress output\n"
    "  -v, --verbose         more notes (the backend in full, why not the GPU)\n"
    "  -h, --help            this text\n"
    "\n";

/* (the rest of the help, a string of its own: C11 promises 4095 characters per literal) */
static const char *usage_notes =
    "Ctrl-C (SIGINT) or SIGTERM: the step in progress finishes, a checkpoint is written and the\n"
    "command to resume is printed (exit 130 / 143); a second Ctrl-C stops at once. A loss that\n"
    "turns NaN, infinite or above 1e4 per image (diverged) stops training (exit 1) with the\n"
    "last checkpoint kept and no model written.\n"
    "With --val-split 0 there is no validation: no learning-rate reduction, --save-best and\n"
    "--early-stop are unavailable.\n"
    "\n"
    "examples:\n"
    "  digits train train.csv                                (the reference recipe: model.dgt)\n"
    "  digits train train.csv --epochs 5 --device cpu -o quick.dgt\n"
    "  digits train train.csv --ensemble 5 -o ensemble.dgt\n"
    "  digits train train.csv --rotate 15 --zoom 0.15 --shift 0.1   (stronger augmentation)\n"
    "  digits train train.csv --device cpu --math bf16     (on a CPU with AVX512-BF16)\n"
    "  digits train train.csv --optimizer adam\n"
    "  digits train train.csv --optimizer sgd --lr 0.01 --momentum 0.9 --nesterov\n";

/* A number in [0, 1) as a float (a value that rounds to 1.0f is refused too); 0 after the
 * usage message otherwise. */
static int parse_unit_interval(const char *option, const char *text, float *out)
{
    char *end = NULL;
    errno = 0;
    double real = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !(real >= 0.0) || (float)real >= 1.0f) {
        dg_cli_usage_error("train", "%s expects a number in [0, 1), got '%s'", option, text);
        return 0;
    }
    *out = (float)real;
    return 1;
}

/* "--devices 0,2": distinct CUDA ordinals 0..1023, at most DG_MAX_MEMBERS of them; a usage
 * message and 0 otherwise. */
static int parse_devices(const char *text, int *devices, int *count)
{
    const char *p = text;
    *count = 0;
    for (;;) {
        char *end = NULL;
        long ordinal = -1;
        if (*p >= '0' && *p <= '9') {
            errno = 0;
            ordinal = strtol(p, &end, 10);
            if (errno)
                ordinal = -1;
        }
        if (ordinal < 0 || ordinal > 1023 || (*end != ',' && *end != '\0')) {
            dg_cli_usage_error("train",
                               "--devices expects CUDA device numbers separated by "
                               "commas (e.g. 0,1), got '%s'",
                               text);
            return 0;
        }
        for (int d = 0; d < *count; d++)
            if (devices[d] == (int)ordinal) {
                dg_cli_usage_error("train",
                                   "--devices %s names device %ld twice (--concurrent "
                                   "N runs N members per device)",
                                   text, ordinal);
                return 0;
            }
        if (*count == DG_MAX_MEMBERS) {
            dg_cli_usage_error("train", "--devices %s: at most %d devices", text, DG_MAX_MEMBERS);
            return 0;
        }
        devices[(*count)++] = (int)ordinal;
        if (*end == '\0')
            return 1;
        p = end + 1;
    }
}

/* Long options without a letter of their own. */
enum { OPTION_EMA = 1000 };

/* Applies one option of getopt_long to req; -1 to go on, else the exit code. */
static int apply_option(int opt, struct train_request *req, uint64_t *split_seed,
                        int *split_seed_given)
{
    struct dg_train_options *options = &req->options;
    long value;
    double real;
    switch (opt) {
    case 'o':
        req->output = optarg;
        req->given |= GIVEN_OUTPUT;
        break;
    case 'L':
        req->labels = optarg;
        break;
    case 'e':
        if (!dg_cli_parse_int("train", "--epochs", optarg, DG_TRAIN_EPOCHS_MIN, DG_TRAIN_EPOCHS_MAX,
                              &value))
            return 2;
        options->epochs = (int)value;
        req->given |= GIVEN_EPOCHS;
        break;
    case 'b':
        if (!dg_cli_parse_int("train", "--batch", optarg, DG_TRAIN_BATCH_MIN, DG_TRAIN_BATCH_MAX,
                              &value))
            return 2;
        options->batch = (int)value;
        req->given |= GIVEN_BATCH;
        break;
    case 'r':
        if (!dg_cli_parse_float("train", "--lr", optarg, DG_TRAIN_LR_MIN, DG_TRAIN_LR_MAX, &real))
            return 2;
        options->lr = (float)real;
        req->given |= GIVEN_LR;
        break;
    case 'y':
        if (!dg_cli_parse_float("train", "--val-split", optarg, DG_TRAIN_VAL_SPLIT_MIN,
                                DG_TRAIN_VAL_SPLIT_MAX, &real))
            return 2;
        options->val_split = (float)real;
        req->given |= GIVEN_VAL_SPLIT;
        break;
    case 's':
        if (!dg_cli_parse_u64("train", "--seed", optarg, &options->seed))
            return 2;
        req->given |= GIVEN_SEED;
        break;
    case 'A':
        options->augment = 0;
        req->given |= GIVEN_NO_AUGMENT;
        break;
    case 'G':
        options->no_graphs = 1;
        break;
    case OPTION_EMA:
        if (!dg_cli_parse_float("train", "--ema", optarg, 0.5, 0.999999, &real))
            return 2;
        options->ema = (float)real;
        if (!(options->ema < 1.0f))
            return dg_cli_usage_error("train", "--ema %s rounds to 1 in float (no averaging)",
                                      optarg);
        req->given |= GIVEN_EMA;
        break;
    case 'H':
        if (!dg_cli_parse_float("train", "--label-smoothing", optarg, 0.0, 0.999, &real))
            return 2;
        options->label_smoothing = (float)real;
        req->given |= GIVEN_LABEL_SMOOTHING;
        break;
    case 'Q': {
        int kind;
        if (!dg_optimizer_from_name(optarg, &kind)) {
            const char *names[] = {dg_optimizer_name(DG_OPTIMIZER_RMSPROP),
                                   dg_optimizer_name(DG_OPTIMIZER_ADAM),
                                   dg_optimizer_name(DG_OPTIMIZER_SGD)};
            const char *near = dg_cli_closest(optarg, names, 3);
            return dg_cli_usage_error("train",
                                      "--optimizer expects rmsprop, adam or sgd, got '%s'%s%s%s",
                                      optarg, near ? " (did you mean " : "", near ? near : "",
                                      near ? "?)" : "");
        }
        options->optimizer.kind = kind;
        req->given |= GIVEN_OPTIMIZER;
        break;
    }
    case 'U':
        if (!parse_unit_interval("--momentum", optarg, &options->optimizer.momentum))
            return 2;
        req->given |= GIVEN_MOMENTUM;
        break;
    case 'J':
        options->optimizer.nesterov = 1;
        req->given |= GIVEN_NESTEROV;
        break;
    case '1':
        if (!parse_unit_interval("--beta1", optarg, &options->optimizer.beta1))
            return 2;
        req->given |= GIVEN_BETA1;
        break;
    case '2':
        if (!parse_unit_interval("--beta2", optarg, &options->optimizer.beta2))
            return 2;
        req->given |= GIVEN_BETA2;
        break;
    case '3':
        if (!dg_cli_parse_float("train", "--adam-eps", optarg, 1e-12, 1.0, &real))
            return 2;
        options->optimizer.adam_eps = (float)real;
        req->given |= GIVEN_ADAM_EPS;
        break;
    case 'T':
        if (dg_net_spec_parse(optarg, req->net, &req->net_count) != DG_OK)
            return dg_cli_usage_error("train", "%s", dg_error_message());
        req->net_text = optarg;
        req->given |= GIVEN_NET;
        break;
    case 'W':
        if (strcmp(optarg, "plateau") == 0) {
            options->schedule = DG_SCHEDULE_PLATEAU;
        } else if (strncmp(optarg, "exp:", 4) == 0) {
            if (!dg_cli_parse_float("train", "--schedule exp:GAMMA", optarg + 4, 1e-6, 1.0, &real))
                return 2;
            options->schedule = DG_SCHEDULE_EXP;
            options->gamma = (float)real;
        } else if (strncmp(optarg, "onecycle:", 9) == 0) {
            if (!dg_cli_parse_float("train", "--schedule onecycle:MAX_LR", optarg + 9,
                                    DG_TRAIN_LR_MIN, DG_TRAIN_LR_MAX, &real))
                return 2;
            options->schedule = DG_SCHEDULE_ONECYCLE;
            options->max_lr = (float)real;
        } else {
            static const char *const names[] = {"plateau", "exp", "onecycle"};
            const char *near = dg_cli_closest(optarg, names, 3);
            return dg_cli_usage_error("train",
                                      "--schedule expects plateau, exp:GAMMA or onecycle:MAX_LR, "
                                      "got '%s'%s%s%s",
                                      optarg, near ? " (did you mean " : "", near ? near : "",
                                      near ? "?)" : "");
        }
        req->given |= GIVEN_SCHEDULE;
        break;
    case 'O':
        if (!dg_cli_parse_float("train", "--rotate", optarg, 0.0, 180.0, &real))
            return 2;
        options->rotation_deg = (float)real;
        req->given |= GIVEN_ROTATE;
        break;
    case 'Z':
        if (!dg_cli_parse_float("train", "--zoom", optarg, 0.0, 0.9, &real))
            return 2;
        options->zoom = (float)real;
        req->given |= GIVEN_ZOOM;
        break;
    case 'F':
        if (!dg_cli_parse_float("train", "--shift", optarg, 0.0, 0.5, &real))
            return 2;
        options->shift = (float)real;
        req->given |= GIVEN_SHIFT;
        break;
    case 'l':
        if (!dg_cli_parse_int("train", "--limit", optarg, 1, 1L << 40, &req->limit))
            return 2;
        break;
    case 't':
        if (!dg_cli_parse_int("train", "--threads", optarg, 1, 1024, &value))
            return 2;
        req->device.threads = (int)value;
        break;
    case 'd':
        req->device.device = optarg;
        break;
    case 'M':
        if (!dg_cli_parse_math("train", optarg, &req->device.math))
            return 2;
        req->given |= GIVEN_MATH;
        break;
    case 'D':
        req->device.deterministic = 1;
        break;
    case 'g':
        req->log_path = optarg;
        break;
    case 'c':
        req->checkpoint_path = optarg;
        req->checkpoint_given = 1;
        break;
    case 'C':
        req->no_checkpoint = 1;
        break;
    case 'X':
        req->restart = 1;
        break;
    case 'R':
        req->resume_path = optarg;
        break;
    case 'B':
        options->save_best = 1;
        req->given |= GIVEN_SAVE_BEST;
        break;
    case 'E':
        if (!dg_cli_parse_int("train", "--early-stop", optarg, DG_TRAIN_EARLY_STOP_MIN,
                              DG_TRAIN_EARLY_STOP_MAX, &value))
            return 2;
        options->early_stop = (int)value;
        req->given |= GIVEN_EARLY_STOP;
        break;
    case 'S':
        if (!dg_cli_parse_u64("train", "--split-seed", optarg, split_seed))
            return 2;
        *split_seed_given = 1;
        break;
    case 'K':
        if (!dg_cli_parse_int("train", "--ensemble", optarg, 1, DG_MAX_MEMBERS, &value))
            return 2;
        req->ensemble = (int)value;
        break;
    case 'P':
        req->member_splits = 1;
        break;
    case 'N':
        if (!dg_cli_parse_int("train", "--concurrent", optarg, 1, DG_MAX_MEMBERS, &value))
            return 2;
        req->concurrent = (int)value;
        break;
    case 'V':
        req->devices_text = optarg;
        if (!parse_devices(optarg, req->devices, &req->device_count))
            return 2;
        break;
    case 'q':
        req->quiet = 1;
        break;
    case 'v':
        dg_cli_verbose = 1;
        break;
    case 'h':
        fputs(usage_text, stdout);
        fputs(usage_text_options, stdout);
        fputs(usage_text_more, stdout);
        fputs(usage_notes, stdout);
        return 0;
    default:
        fputs("(see `digits train --help`)\n", stderr);
        return 2;
    }
    return -1;
}

/* The combinations refused, --devices against the devices there are, and the split seed; -1
 * to go on, else the exit code. */
static int check_request(struct train_request *req, uint64_t split_seed, int split_seed_given)
{
    struct dg_train_options *options = &req->options;
    if (req->no_checkpoint && req->checkpoint_path)
        return dg_cli_usage_error("train", "--checkpoint and --no-checkpoint together");
    if (req->restart && req->resume_path)
        return dg_cli_usage_error("train", "--restart starts over and --resume continues: "
                                           "give one of them");
    if (req->ensemble > 1 && (req->resume_path || req->checkpoint_path))
        return dg_cli_usage_error("train", "--ensemble writes no checkpoints: --resume and "
                                           "--checkpoint do not apply");
    if (req->member_splits && req->ensemble == 1)
        return dg_cli_usage_error("train", "--member-splits needs --ensemble K");
    if ((req->concurrent || req->devices_text) && req->ensemble == 1)
        return dg_cli_usage_error("train", "%s needs --ensemble K",
                                  req->concurrent ? "--concurrent" : "--devices");
    if (req->devices_text) {
        /* the members go to these CUDA devices: --device may only say CUDA */
        if (strcmp(req->device.device, "auto") != 0 && strcmp(req->device.device, "cuda") != 0)
            return dg_cli_usage_error("train",
                                      "--devices %s spreads the members over CUDA "
                                      "devices; it does not go with --device %s",
                                      req->devices_text, req->device.device);
        char reason[256] = "";
        int available = dg_cli_cuda_device_count(reason, sizeof reason);
        for (int d = 0; d < req->device_count; d++)
            if (req->devices[d] >= available) {
                if (available == 0)
                    return dg_cli_usage_error("train",
                                              "--devices %s: there is no CUDA device "
                                              "%d (%s)",
                                              req->devices_text, req->devices[d], reason);
                return dg_cli_usage_error("train",
                                          "--devices %s: there is no CUDA device %d "
                                          "(this machine has %d: 0..%d)",
                                          req->devices_text, req->devices[d], available,
                                          available - 1);
            }
        snprintf(req->device_name, sizeof req->device_name, "cuda:%d", req->devices[0]);
        req->device.device = req->device_name;
    }
    if ((req->given & GIVEN_NO_AUGMENT) && (req->given & (GIVEN_ROTATE | GIVEN_ZOOM | GIVEN_SHIFT)))
        return dg_cli_usage_error("train", "%s sets the augmentation that --no-augment turns off",
                                  (req->given & GIVEN_ROTATE) ? "--rotate"
                                  : (req->given & GIVEN_ZOOM) ? "--zoom"
                                                              : "--shift");
    if ((req->given & GIVEN_LR) && (req->given & GIVEN_SCHEDULE) &&
        options->schedule == DG_SCHEDULE_ONECYCLE)
        return dg_cli_usage_error("train", "--lr and --schedule onecycle:MAX_LR both set the "
                                           "learning rate: give MAX_LR alone");
    /* an optimizer's constants only with that optimizer (on --resume, with the checkpoint's:
     * train_resume_settings) */
    if (!req->resume_path || (req->given & GIVEN_OPTIMIZER)) {
        int kind = options->optimizer.kind;
        const char *sgd_only = (req->given & GIVEN_MOMENTUM)   ? "--momentum"
                               : (req->given & GIVEN_NESTEROV) ? "--nesterov"
                                                               : NULL;
        const char *adam_only = (req->given & GIVEN_BETA1)      ? "--beta1"
                                : (req->given & GIVEN_BETA2)    ? "--beta2"
                                : (req->given & GIVEN_ADAM_EPS) ? "--adam-eps"
                                                                : NULL;
        if (sgd_only && kind != DG_OPTIMIZER_SGD)
            return dg_cli_usage_error("train", "%s is for --optimizer sgd (the optimizer is %s)",
                                      sgd_only, dg_optimizer_name(kind));
        if (adam_only && kind != DG_OPTIMIZER_ADAM)
            return dg_cli_usage_error("train", "%s is for --optimizer adam (the optimizer is %s)",
                                      adam_only, dg_optimizer_name(kind));
    }
    if (split_seed_given && req->resume_path)
        return dg_cli_usage_error("train", "--split-seed comes from the checkpoint on --resume");
    if (split_seed_given && options->val_split == 0.0f)
        return dg_cli_usage_error("train", "--split-seed chooses the validation rows, and "
                                           "--val-split 0 holds none out: give one of them");
    if (dg_cli_check_quiet_verbose("train", req->quiet))
        return 2;
    options->split_seed = split_seed_given ? split_seed : options->seed;
    return -1;
}

int train_parse_args(int argc, char **argv, struct train_request *req)
{
    static const struct option long_options[] = {
        {"output", required_argument, NULL, 'o'},
        {"labels", required_argument, NULL, 'L'},
        {"epochs", required_argument, NULL, 'e'},
        {"batch", required_argument, NULL, 'b'},
        {"lr", required_argument, NULL, 'r'},
        {"val-split", required_argument, NULL, 'y'},
        {"seed", required_argument, NULL, 's'},
        {"no-augment", no_argument, NULL, 'A'},
        {"rotate", required_argument, NULL, 'O'},
        {"schedule", required_argument, NULL, 'W'},
        {"net", required_argument, NULL, 'T'},
        {"label-smoothing", required_argument, NULL, 'H'},
        {"ema", required_argument, NULL, OPTION_EMA},
        {"optimizer", required_argument, NULL, 'Q'},
        {"momentum", required_argument, NULL, 'U'},
        {"nesterov", no_argument, NULL, 'J'},
        {"beta1", required_argument, NULL, '1'},
        {"beta2", required_argument, NULL, '2'},
        {"adam-eps", required_argument, NULL, '3'},
        {"zoom", required_argument, NULL, 'Z'},
        {"shift", required_argument, NULL, 'F'},
        {"limit", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"device", required_argument, NULL, 'd'},
        {"math", required_argument, NULL, 'M'},
        {"deterministic", no_argument, NULL, 'D'},
        {"no-graphs", no_argument, NULL, 'G'},
        {"log", required_argument, NULL, 'g'},
        {"checkpoint", required_argument, NULL, 'c'},
        {"no-checkpoint", no_argument, NULL, 'C'},
        {"restart", no_argument, NULL, 'X'},
        {"resume", required_argument, NULL, 'R'},
        {"save-best", no_argument, NULL, 'B'},
        {"early-stop", required_argument, NULL, 'E'},
        {"split-seed", required_argument, NULL, 'S'},
        {"ensemble", required_argument, NULL, 'K'},
        {"member-splits", no_argument, NULL, 'P'},
        {"concurrent", required_argument, NULL, 'N'},
        {"devices", required_argument, NULL, 'V'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(req, 0, sizeof *req);
    dg_train_options_default(&req->options);
    req->device = (struct dg_backend_spec){"auto", 0, DG_MATH_FP32, 0, 0};
    req->output = "model.dgt";
    req->ensemble = 1;
    const struct dg_layer_spec *reference = dg_arch_reference(&req->net_count);
    memcpy(req->net, reference, (size_t)req->net_count * sizeof *reference);
    int split_seed_given = 0;
    uint64_t split_seed = 0;
    int opt, code;
    static const char short_options[] = "o:qvh";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        if (opt == '?')
            return dg_cli_bad_option("train", argv, short_options, long_options);
        if ((code = apply_option(opt, req, &split_seed, &split_seed_given)) >= 0)
            return code;
    }
    if (optind != argc - 1)
        return dg_cli_usage_error("train", optind >= argc ? "missing the TRAIN file"
                                                          : "expects one TRAIN file");
    if ((code = check_request(req, split_seed, split_seed_given)) >= 0)
        return code;
    req->train_path = argv[optind];
    return -1;
}

enum dg_status train_resume_settings(const char *path, const struct dg_checkpoint *ck,
                                     unsigned given, struct dg_train_options *options)
{
    const struct dg_train_options *c = &ck->options;
    char what[160] = "";
    if ((given & GIVEN_BATCH) && options->batch != c->batch)
        snprintf(what, sizeof what, "--batch %d (the checkpoint's is %d)", options->batch,
                 c->batch);
    else if ((given & GIVEN_LR) && options->lr != c->lr)
        snprintf(what, sizeof what, "--lr %g (the checkpoint's is %g)", (double)options->lr,
                 (double)c->lr);
    else if ((given & GIVEN_VAL_SPLIT) && options->val_split != c->val_split)
        snprintf(what, sizeof what, "--val-split %g (the checkpoint's is %g)",
                 (double)options->val_split, (double)c->val_split);
    else if ((given & GIVEN_SEED) && options->seed != c->seed)
        snprintf(what, sizeof what, "--seed %llu (the checkpoint's is %llu)",
                 (unsigned long long)options->seed, (unsigned long long)c->seed);
    else if ((given & GIVEN_NO_AUGMENT) && c->augment)
        snprintf(what, sizeof what, "--no-augment (the checkpoint's run augments)");
    else if ((given & GIVEN_SCHEDULE) &&
             (options->schedule != c->schedule ||
              (options->schedule == DG_SCHEDULE_EXP && options->gamma != c->gamma) ||
              (options->schedule == DG_SCHEDULE_ONECYCLE && options->max_lr != c->max_lr)))
    {
        char theirs[32] = "plateau";
        if (c->schedule == DG_SCHEDULE_EXP)
            snprintf(theirs, sizeof theirs, "exp:%g", (double)c->gamma);
        else if (c->schedule == DG_SCHEDULE_ONECYCLE)
            snprintf(theirs, sizeof theirs, "onecycle:%g", (double)c->max_lr);
        snprintf(what, sizeof what, "--schedule (the checkpoint's is %s)", theirs);
    }
    else if ((given & GIVEN_EMA) && options->ema != c->ema)
        snprintf(what, sizeof what, "--ema %g (the checkpoint's is %s%g)", (double)options->ema,
                 c->ema > 0.0f ? "" : "none: ", (double)c->ema);
    else if ((given & GIVEN_LABEL_SMOOTHING) && options->label_smoothing != c->label_smoothing)
        snprintf(what, sizeof what, "--label-smoothing %g (the checkpoint's is %g)",
                 (double)options->label_smoothing, (double)c->label_smoothing);
    else if ((given & GIVEN_OPTIMIZER) && options->optimizer.kind != c->optimizer.kind)
        snprintf(what, sizeof what, "--optimizer %s (the checkpoint's is %s)",
                 dg_optimizer_name(options->optimizer.kind), dg_optimizer_name(c->optimizer.kind));
    else if ((given & (GIVEN_MOMENTUM | GIVEN_NESTEROV)) && c->optimizer.kind != DG_OPTIMIZER_SGD)
        snprintf(what, sizeof what, "%s (the checkpoint's optimizer is %s)",
                 (given & GIVEN_MOMENTUM) ? "--momentum" : "--nesterov",
                 dg_optimizer_name(c->optimizer.kind));
    else if ((given & GIVEN_MOMENTUM) && options->optimizer.momentum != c->optimizer.momentum)
        snprintf(what, sizeof what, "--momentum %g (the checkpoint's is %g)",
                 (double)options->optimizer.momentum, (double)c->optimizer.momentum);
    else if ((given & GIVEN_NESTEROV) && !c->optimizer.nesterov)
        snprintf(what, sizeof what, "--nesterov (the checkpoint's run has plain momentum)");
    else if ((given & (GIVEN_BETA1 | GIVEN_BETA2 | GIVEN_ADAM_EPS)) &&
             c->optimizer.kind != DG_OPTIMIZER_ADAM)
        snprintf(what, sizeof what, "%s (the checkpoint's optimizer is %s)",
                 (given & GIVEN_BETA1)   ? "--beta1"
                 : (given & GIVEN_BETA2) ? "--beta2"
                                         : "--adam-eps",
                 dg_optimizer_name(c->optimizer.kind));
    else if ((given & GIVEN_BETA1) && options->optimizer.beta1 != c->optimizer.beta1)
        snprintf(what, sizeof what, "--beta1 %g (the checkpoint's is %g)",
                 (double)options->optimizer.beta1, (double)c->optimizer.beta1);
    else if ((given & GIVEN_BETA2) && options->optimizer.beta2 != c->optimizer.beta2)
        snprintf(what, sizeof what, "--beta2 %g (the checkpoint's is %g)",
                 (double)options->optimizer.beta2, (double)c->optimizer.beta2);
    else if ((given & GIVEN_ADAM_EPS) && options->optimizer.adam_eps != c->optimizer.adam_eps)
        snprintf(what, sizeof what, "--adam-eps %g (the checkpoint's is %g)",
                 (double)options->optimizer.adam_eps, (double)c->optimizer.adam_eps);
    else if ((given & GIVEN_ROTATE) && options->rotation_deg != c->rotation_deg)
        snprintf(what, sizeof what, "--rotate %g (the checkpoint's is %g)",
                 (double)options->rotation_deg, (double)c->rotation_deg);
    else if ((given & GIVEN_ZOOM) && options->zoom != c->zoom)
        snprintf(what, sizeof what, "--zoom %g (the checkpoint's is %g)", (double)options->zoom,
                 (double)c->zoom);
    else if ((given & GIVEN_SHIFT) && options->shift != c->shift)
        snprintf(what, sizeof what, "--shift %g (the checkpoint's is %g)", (double)options->shift,
                 (double)c->shift);
    else if ((given & GIVEN_SAVE_BEST) && !c->save_best)
        snprintf(what, sizeof what, "--save-best (the checkpoint's run keeps the last weights)");
    else if ((given & GIVEN_EARLY_STOP) && options->early_stop != c->early_stop)
        snprintf(what, sizeof what, "--early-stop %d (the checkpoint's is %d)", options->early_stop,
                 c->early_stop);
    else if ((given & GIVEN_EPOCHS) && options->epochs < ck->state.epoch)
        snprintf(what, sizeof what, "--epochs %d (the checkpoint has done %d epochs already)",
                 options->epochs, ck->state.epoch);
    else if ((given & GIVEN_EPOCHS) && c->schedule == DG_SCHEDULE_ONECYCLE &&
             options->epochs != c->epochs)
        snprintf(what, sizeof what,
                 "--epochs %d (the checkpoint's one-cycle schedule spans its %d epochs)",
                 options->epochs, c->epochs);
    if (what[0])
        return dg_error(DG_ERR_USAGE,
                        "%s: %s contradicts the checkpoint; leave it out to use "
                        "the checkpoint's setting",
                        path, what);
    int epochs = (given & GIVEN_EPOCHS) ? options->epochs : c->epochs;
    void (*on_epoch_fn)(const struct dg_epoch_report *, void *) = options->on_epoch;
    void (*on_step_fn)(int, int, int, double, void *) = options->on_step;
    int no_graphs = options->no_graphs; /* how to run, not what: not in the checkpoint */
    *options = *c;
    options->epochs = epochs;
    options->on_epoch = on_epoch_fn;
    options->on_step = on_step_fn;
    options->no_graphs = no_graphs;
    return DG_OK;
}
