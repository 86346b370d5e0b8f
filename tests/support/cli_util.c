/* Running the digits executable from tests, reading what it wrote, running a Check suite. */
#define _POSIX_C_SOURCE 200809L
#include "cli_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

const char *dg_test_bin(void)
{
    const char *path = getenv("DIGITS_BIN");
    return path ? path : "digits";
}

int dg_test_run_digits(const char *dir, char *out_path, char *err_path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int code = dg_test_run_digits_v(dir, out_path, err_path, fmt, ap);
    va_end(ap);
    return code;
}

int dg_test_run_digits_v(const char *dir, char *out_path, char *err_path, const char *fmt,
                         va_list ap)
{
    char args[2048], command[4096], out[512], err[512];
    vsnprintf(args, sizeof args, fmt, ap);
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    snprintf(command, sizeof command, "cd '%s' && TMPDIR='%s' '%s' %s >'%s' 2>'%s'", dir, dir,
             dg_test_bin(), args, out, err);
    if (out_path)
        memcpy(out_path, out, sizeof out);
    if (err_path)
        memcpy(err_path, err, sizeof err);
    int status = system(command);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

void dg_test_dir_create(char *dir, size_t size, const char *name)
{
    snprintf(dir, size, "/tmp/digits-test-%s-XXXXXX", name);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

void dg_test_dir_remove(const char *dir)
{
    char command[1024];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(command), 0);
}

const char *dg_test_dir_path(const char *dir, const char *name)
{
    static char paths[8][1024];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, sizeof paths[0], "%s/%s", dir, name);
    return path;
}

char *dg_test_slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        ck_abort_msg("cannot read %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(text);
    size_t got = fread(text, 1, (size_t)n, fp);
    text[got] = '\0';
    fclose(fp);
    return text;
}

void dg_test_expect_in(const char *path, const char *needle)
{
    char *text = dg_test_slurp(path);
    if (!strstr(text, needle)) {
        size_t n = strlen(text);
        /* Check limits the size of a failure message: show the end of long outputs */
        ck_abort_msg("'%s' not found in:\n%s", needle, n > 2000 ? text + n - 2000 : text);
    }
    free(text);
}

int dg_test_run_suite(Suite *suite)
{
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
