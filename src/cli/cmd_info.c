/* digits info: version, build options, BLAS, the CUDA runtime / cuDNN / cuBLAS and devices;
 * with --model the layer table of the network (of a model file when one is given). */
#include "cli/cli.h"
#include "cli/mpi_job.h"

#include "digits/backend.h"
#include "digits/cpu_features.h"
#include "digits/io.h"
#include "digits/model.h"
#include "digits/net.h"
#include "cpu/cpu.h"

#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text = "usage: digits info [--model [FILE] | -m FILE | --net SPEC]\n"
                                "\n"
                                "Prints the version, build options, the BLAS library, the CUDA\n"
                                "runtime, cuDNN and cuBLAS versions and the CUDA devices found.\n"
                                "\n"
                                "options:\n"
                                "  -m, --model [FILE]  the layer table of the network (of FILE, with its settings;\n"
                                "                      --model alone: the reference network's; -m needs FILE)\n"
                                "      --net SPEC      the layer table of a network spec or preset (as train's --net)\n"
                                "  -h, --help          this text\n"
    "\n"
    "examples:\n"
    "  digits info\n"
    "  digits info --model model.dgt\n"
    "  digits info --net 32C3-P2-32C3-P2-F-128-10\n";

static void print_line(const char *line, void *ctx)
{
    (void)ctx;
    printf("%s\n", line);
}

/* What bf16 hardware the CPU has and whether --math bf16 runs here (or why not). */
static void print_bf16_units(struct dg_backend *cpu)
{
    const struct dg_cpu_features *f = dg_cpu_features();
#if defined(__x86_64__)
    printf("bf16 units: AVX512-BF16 %s, AMX-BF16 %s (not used)\n", f->avx512_bf16 ? "yes" : "no",
           f->amx_bf16 ? "yes" : "no");
#elif defined(__aarch64__)
    printf("bf16 units: BF16 (BFDOT/BFMMLA) %s (not used)\n", f->arm_bf16 ? "yes" : "no");
#else
    (void)f;
    printf("bf16 units: none known on this architecture\n");
#endif
    if (dg_backend_cpu_set_math(cpu, DG_MATH_BF16) == DG_OK)
        printf("--math bf16: runs here (%s: bf16 products, float32 sums)\n",
               dg_backend_cpu_bf16_unit(cpu));
    else
        printf("%s\n", dg_error_message());
    dg_error_clear();
    dg_backend_cpu_set_math(cpu, DG_MATH_FP32);
}

int dg_cmd_info(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"model", optional_argument, NULL, 'm'},
        {"net", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int show_model = 0;
    const char *model_path = NULL, *net = NULL;
    int opt;
    static const char short_options[] = "m:h";
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        switch (opt) {
        case 'm':
            show_model = 1;
            model_path = optarg;
            break;
        case 'n':
            show_model = 1;
            net = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return dg_cli_bad_option("info", argv, short_options, long_options);
        }
    }
    /* --model FILE as every other command takes it (and --model=FILE, -m FILE); --model alone
     * is the reference network's table */
    if (show_model && !model_path && optind == argc - 1)
        model_path = argv[optind++];
    if (optind != argc)
        return dg_cli_usage_error("info", "unexpected argument '%s'", argv[optind]);
    if (net && model_path)
        return dg_cli_usage_error("info", "--net and --model FILE: one network at a time");
    if (show_model) {
        struct dg_model model;
        enum dg_status status;
        if (model_path) {
            /* the whole settings text (with the training history), any member count */
            size_t size = 1u << 20;
            char *settings = malloc(size);
            struct dg_model *members = calloc(DG_MAX_MEMBERS, sizeof *members);
            int count = 0;
            status = settings && members ? dg_ensemble_load(model_path, members, DG_MAX_MEMBERS,
                                                            &count, settings, size)
                                         : dg_error(DG_ERR_NOMEM, "out of memory");
            if (status == DG_OK) {
                printf("model file: %s", model_path);
                if (count > 1)
                    printf(" (an ensemble of %d members)", count);
                printf("\n%s\n", settings);
                model = members[0];
                memset(&members[0], 0, sizeof members[0]);
            }
            for (int m = 1; m < count; m++)
                dg_model_free(&members[m]);
            free(members);
            free(settings);
        } else {
            struct dg_layer_spec specs[DG_MAX_LAYERS];
            int count;
            if (dg_net_spec_parse(net ? net : "reference", specs, &count) != DG_OK)
                return dg_cli_usage_error("info", "%s", dg_error_message());
            status = dg_model_build(&model, specs, count);
        }
        if (status != DG_OK)
            return dg_cli_fail(status);
        dg_model_print_summary(&model, print_line, NULL);
        dg_model_free(&model);
        return 0;
    }
    printf("digits %s\n", DIGITS_VERSION);
    printf("build: %s, C11, %s, CUDA backend %s\n", DIGITS_BUILD_TYPE,
#ifdef __VERSION__
           "gcc " __VERSION__,
#else
           "unknown compiler",
#endif
           dg_cuda_emulated() ? "built, on the emulated device (a test fixture, not a GPU)"
           : dg_cuda_built()  ? "built"
                              : "not built");
    printf("BLAS: OpenBLAS (%s), %d threads\n", openblas_get_config(),
           openblas_get_num_threads());
    char usable[64];
    dg_cpu_isa_list(usable, sizeof usable);
    printf("CPU kernels: %s usable (best first; DIGITS_CPU_ISA caps them)\n", usable);
    struct dg_backend *cpu = NULL;
    struct dg_model model;
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    enum dg_status status = dg_backend_cpu_create(0, &cpu);
    if (status == DG_OK && (status = dg_model_build(&model, specs, count)) == DG_OK) {
        char described[512];
        dg_backend_describe_for(cpu, &model, 86, described, sizeof described);
        printf("%s\n", described);
        dg_model_free(&model);
        print_bf16_units(cpu);
    }
    dg_backend_destroy(cpu);
    if (status != DG_OK)
        return dg_cli_fail(status);
    printf("MPI: %s\n", dg_mpi_built() ? "built (digits train --ensemble under mpirun/srun "
                                          "spreads the members over the ranks)"
                                        : "not built");
    dg_cuda_describe(print_line, NULL);
    return 0;
}
