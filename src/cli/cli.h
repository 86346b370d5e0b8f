/* The `digits` commands: each takes argc/argv from its own name on and returns the exit
 * code (0 ok, 1 runtime failure, 2 bad usage or input). */
#ifndef DIGITS_CLI_H
#define DIGITS_CLI_H

#include "digits/status.h"

int dg_cmd_check_data(int argc, char **argv);
int dg_cmd_info(int argc, char **argv);
int dg_cmd_train(int argc, char **argv);
int dg_cmd_predict(int argc, char **argv);
int dg_cmd_eval(int argc, char **argv);
int dg_cmd_compare(int argc, char **argv);
int dg_cmd_bench(int argc, char **argv);
int dg_cmd_export(int argc, char **argv);
int dg_cmd_import(int argc, char **argv);
int dg_cmd_report(int argc, char **argv);

/* Prints "digits: <message>" for `status` to stderr and returns its exit code. */
int dg_cli_fail(enum dg_status status);

/* Prints "digits: <command>: <message>" and a hint to stderr; returns 2. */
int dg_cli_usage_error(const char *command, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- shared helpers of the commands (src/cli/common.c) ---- */

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "digits/backend.h"

/* Strict numbers for options: the whole string must parse and lie in [min, max];
 * otherwise a usage message naming the option, and 0 is returned. */
int dg_cli_parse_int(const char *command, const char *option, const char *text, long min, long max,
                     long *value);
int dg_cli_parse_float(const char *command, const char *option, const char *text, double min,
                       double max, double *value);
int dg_cli_parse_u64(const char *command, const char *option, const char *text, uint64_t *value);

/* -v, --verbose (train, predict, eval, report): the notes left out by default. */
extern int dg_cli_verbose;

/* 0, or 2 after refusing -q with -v (fewer notes and more at once). */
int dg_cli_check_quiet_verbose(const char *command, int quiet);

/* Opens the backend named by device->device (dg_backend_open). "auto" picks CUDA when usable,
 * otherwise the CPU after one line on stderr saying why (unless quiet). Usage errors (bad
 * name) are DG_ERR_USAGE. */
enum dg_status dg_cli_open_backend(const struct dg_backend_spec *device, int quiet,
                                   struct dg_backend **out);

/* The number of CUDA devices this process sees (as `digits info` lists them); 0 with the
 * reason in `reason` when there is none (no driver, no device, no CUDA backend built). */
int dg_cli_cuda_device_count(char *reason, size_t reason_size);

/* Parses "--math" values. */
int dg_cli_parse_math(const char *command, const char *text, enum dg_math *math);

/* A file a command reads (output 0) or writes (output 1), for dg_cli_check_outputs. */
struct dg_cli_file {
    const char *path; /* NULL: not given (skipped) */
    const char *what; /* how the message names it: "-o", "--probs", "the TEST file", ... */
    int output;
};

/* An output may not be an input or another output. Called once the command knows every file
 * it will read and write, before any work: refuses (a usage message naming both paths, exit
 * code 2 returned) when an output is the same file as an input, or as another output. An
 * existing file is compared by device and inode (so symlinks, hard links and any spelling of
 * the path count as the same file); an output that does not exist yet by the real path of its
 * directory and its name. "-" (stdout, stdin) and existing files that are not regular files
 * (/dev/null, /dev/stdout, a FIFO: written in place, never replaced) are not compared.
 * Returns 0 when the files are fine (1 when out of memory, said on stderr). */
int dg_cli_check_outputs(const char *command, const struct dg_cli_file *files, size_t count);

/* 1 when paths a and b name the same file by the rule of dg_cli_check_outputs. */
int dg_cli_same_file(const char *a, const char *b);

/* `text` as a JSON string: quotes, backslashes and control characters escaped; valid UTF-8 as
 * it is; each ill-formed sequence (a file name's raw bytes, not UTF-8) replaced by U+FFFD (its
 * maximal subpart, as Unicode recommends), so the output is always valid JSON. */
void dg_cli_json_string(FILE *fp, const char *text);

/* The candidate a mistyped word most likely meant (at most two edits away, fewer than half its
 * length), or NULL. */
const char *dg_cli_closest(const char *word, const char *const *candidates, size_t count);

/* After getopt_long returned '?' (opterr is 0: main sets it): "digits: COMMAND: unknown option
 * '--epocs' (did you mean --epochs?)", "'--de' is ambiguous: --device or --deterministic" or
 * "--epochs needs a value", and the --help hint; returns 2. `shorts` is the command's getopt
 * string: a letter outside it is an unknown option, even where a long option's code is that
 * letter. */
struct option;
int dg_cli_bad_option(const char *command, char **argv, const char *shorts,
                      const struct option *options);

#endif
