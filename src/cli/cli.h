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

/* Prints "digits: <message>" for `status` to stderr and returns its exit code. */
int dg_cli_fail(enum dg_status status);

/* Prints "digits: <command>: <message>" and a hint to stderr; returns 2. */
int dg_cli_usage_error(const char *command, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
