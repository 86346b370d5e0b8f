/* `digits <command> [options]`: dispatch to the commands of src/cli/cmd_*.c. */
#include "cli/cli.h"
#include "digits/io.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"train", dg_cmd_train, "train the network on a labelled file, write a model"},
    {"predict", dg_cmd_predict, "score a file with a model, write a Kaggle submission"},
    {"eval", dg_cmd_eval, "accuracy, per-class precision/recall and confusion matrix"},
    {"report", dg_cmd_report, "an HTML page: learning curves, confusion matrix, worst errors"},
    {"check-data", dg_cmd_check_data, "validate and summarise a dataset"},
    {"compare", dg_cmd_compare, "run the same batch through CPU and CUDA, layer by layer"},
    {"bench", dg_cmd_bench, "measure parse speed, training and inference throughput"},
    {"export", dg_cmd_export, "write a model as ONNX or safetensors (PyTorch names and layouts)"},
    {"import", dg_cmd_import, "read safetensors weights (from export or PyTorch) into a model"},
    {"info", dg_cmd_info, "version, build options, BLAS, CUDA devices, the model table"},
};

static void print_usage(FILE *out)
{
    fprintf(out, "usage: digits <command> [options]\n\n"
                 "Trains and runs the Kaggle digit-recognizer (MNIST) convolutional network\n"
                 "on the CPU or an NVIDIA GPU.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`digits <command> --help` describes a command's options.\n"
                 "options: --help, --version\n"
                 "exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input\n");
}

int dg_cli_fail(enum dg_status status)
{
    const char *message = dg_error_message();
    fprintf(stderr, "digits: %s\n", message[0] ? message : dg_status_name(status));
    return dg_status_exit_code(status);
}

int dg_cli_usage_error(const char *command, const char *fmt, ...)
{
    va_list args;
    fprintf(stderr, "digits: %s: ", command);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\n(see `digits %s --help`)\n", command);
    return 2;
}

/* The command's exit code, or 1 where it succeeded but what it printed on standard output
 * (tables, JSON, help) did not all get written: a full disk, a closed pipe (EPIPE, SIGPIPE
 * being ignored), /dev/full. */
static int stdout_written(int code)
{
    errno = 0;
    int flushed = fflush(stdout) == 0, err = errno;
    if (code == 0 && (!flushed || ferror(stdout))) {
        if (!flushed && err)
            fprintf(stderr, "digits: stdout: write failed: %s\n", strerror(err));
        else
            fprintf(stderr, "digits: stdout: write failed\n");
        return 1;
    }
    return code;
}

int main(int argc, char **argv)
{
    /* a closed pipe on an output makes the write fail (EPIPE), reported like any write error,
     * instead of killing the process without a word */
    signal(SIGPIPE, SIG_IGN);
    /* SIGINT and SIGTERM remove the open temporary files (the atomic outputs' PATH.tmp.XXXXXX)
     * and then end the process by the signal; `digits train` catches them itself while it
     * trains (a checkpoint first) */
    dg_temporaries_install();
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    /* the commands word their own messages about options (dg_cli_bad_option) */
    opterr = 0;
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 && argc > 2) {
        /* `digits help CMD` is `digits CMD --help` */
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            if (strcmp(argv[2], commands[i].name) == 0) {
                char *help_argv[] = {argv[2], "--help", NULL};
                return stdout_written(commands[i].run(2, help_argv));
            }
        name = argv[2];
    } else if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 ||
               strcmp(name, "help") == 0) {
        print_usage(stdout);
        return stdout_written(0);
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        if (argc > 2) {
            fprintf(stderr, "digits: %s takes no arguments (got '%s')\n", name, argv[2]);
            return 2;
        }
        printf("digits %s\n", DIGITS_VERSION);
        return stdout_written(0);
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i].name) == 0) {
            int code = commands[i].run(argc - 1, argv + 1);
            /* a SIGINT/SIGTERM being handled on another thread (whose removals may have made
             * the command fail) ends the process by the signal, not with this status */
            dg_temporaries_await();
            return stdout_written(code);
        }
    const char *names[sizeof commands / sizeof commands[0]];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        names[i] = commands[i].name;
    const char *closest = dg_cli_closest(name, names, sizeof names / sizeof names[0]);
    if (closest)
        fprintf(stderr, "digits: unknown command '%s' (did you mean %s?)\n"
                        "(see `digits --help`)\n",
                name, closest);
    else {
        fprintf(stderr, "digits: unknown command '%s'\n\n", name);
        print_usage(stderr);
    }
    return 2;
}
