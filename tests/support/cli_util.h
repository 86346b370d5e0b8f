/* Test helpers for suites that run the digits executable ($DIGITS_BIN) or read files it
 * wrote, and the one Check runner every suite's main() uses. */
#ifndef DIGITS_CLI_UTIL_H
#define DIGITS_CLI_UTIL_H

#include <check.h>
#include <stdarg.h>

/* The digits executable under test: $DIGITS_BIN, or "digits" on the PATH. */
const char *dg_test_bin(void);

/* Runs `digits ARGS` (printf-style) in `dir` with TMPDIR=dir, stdout to DIR/stdout and stderr
 * to DIR/stderr (their paths copied into out_path / err_path when not NULL, 512 bytes each);
 * returns the exit code (the test fails when the command did not exit normally). */
int dg_test_run_digits(const char *dir, char *out_path, char *err_path, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 4, 5)))
#endif
    ;

int dg_test_run_digits_v(const char *dir, char *out_path, char *err_path, const char *fmt,
                         va_list args);

/* A fresh directory /tmp/digits-test-NAME-XXXXXX into dir (the test fails when it cannot be
 * made); dg_test_dir_remove deletes it with everything in it. */
void dg_test_dir_create(char *dir, size_t size, const char *name);
void dg_test_dir_remove(const char *dir);
/* "DIR/NAME", in one of 8 rotating buffers (valid for the next 7 calls). */
const char *dg_test_dir_path(const char *dir, const char *name);

/* The whole file as a NUL-terminated string (malloc); the test fails when it cannot be read. */
char *dg_test_slurp(const char *path);

/* Fails the test unless the file contains `needle`. */
void dg_test_expect_in(const char *path, const char *needle);

/* Runs every test of the suite; EXIT_SUCCESS when none failed. */
int dg_test_run_suite(Suite *suite);

#endif
