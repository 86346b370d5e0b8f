/* Helpers shared by the commands: strict option parsing, backend selection, and the check that
 * no output is an input or another output. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "cli/cli.h"

#include <cblas.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int dg_cli_parse_int(const char *command, const char *option, const char *text, long min, long max,
                     long *value)
{
    char *end = NULL;
    errno = 0;
    long parsed = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || parsed < min || parsed > max) {
        dg_cli_usage_error(command, "%s expects an integer in %ld..%ld, got '%s'", option, min, max,
                           text);
        return 0;
    }
    *value = parsed;
    return 1;
}

int dg_cli_parse_float(const char *command, const char *option, const char *text, double min,
                       double max, double *value)
{
    char *end = NULL;
    errno = 0;
    double parsed = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(parsed) || parsed < min || parsed > max) {
        dg_cli_usage_error(command, "%s expects a number in [%g, %g], got '%s'", option, min, max,
                           text);
        return 0;
    }
    *value = parsed;
    return 1;
}

int dg_cli_parse_u64(const char *command, const char *option, const char *text, uint64_t *value)
{
    char *end = NULL;
    errno = 0;
    unsigned long long parsed = strtoull(text, &end, 10);
    if (errno || end == text || *end != '\0' || text[0] == '-' || text[0] == '+') {
        dg_cli_usage_error(command, "%s expects a non-negative integer, got '%s'", option, text);
        return 0;
    }
    *value = (uint64_t)parsed;
    return 1;
}

int dg_cli_parse_math(const char *command, const char *text, enum dg_math *math)
{
    if (!dg_math_from_name(text, math)) {
        dg_cli_usage_error(command, "--math expects fp32, tf32 or bf16, got '%s'", text);
        return 0;
    }
    return 1;
}

int dg_cli_verbose;

int dg_cli_check_quiet_verbose(const char *command, int quiet)
{
    if (quiet && dg_cli_verbose)
        return dg_cli_usage_error(command, "-q (--quiet) asks for fewer notes and -v (--verbose) "
                                           "for more: give one of them");
    return 0;
}

enum dg_status dg_cli_open_backend(const struct dg_backend_spec *device, int quiet,
                                   struct dg_backend **out)
{
    char fallback[256];
    enum dg_status status = dg_backend_open(device, fallback, sizeof fallback, out);
    /* said where a GPU was to be expected (a driver is loaded), not on every CPU-only machine */
    if (status == DG_OK && fallback[0] && !quiet && (dg_cuda_driver_present() || dg_cli_verbose))
        fprintf(stderr, "digits: no usable GPU (%s): running on the CPU\n", fallback);
    if (status == DG_OK && dg_cli_verbose && !quiet)
        fprintf(stderr, "digits: backend: %s; BLAS: %s\n", (*out)->description,
                openblas_get_config());
    if (status == DG_ERR_DEVICE) {
        char message[1024];
        snprintf(message, sizeof message, "%s", dg_error_message());
        status = dg_error(status, "%s; --device cpu runs on the CPU", message);
    }
    return status;
}

static void count_device_line(const char *line, void *ctx)
{
    if (strncmp(line, "CUDA device ", 12) == 0 && isdigit((unsigned char)line[12]))
        ++*(int *)ctx;
}

int dg_cli_cuda_device_count(char *reason, size_t reason_size)
{
    if (reason_size)
        reason[0] = '\0';
    if (dg_cuda_probe(reason, reason_size) != DG_OK) {
        dg_error_clear();
        return 0;
    }
    int count = 0;
    dg_cuda_describe(count_device_line, &count);
    if (count == 0)
        snprintf(reason, reason_size, "the driver reports no CUDA device");
    return count;
}

/* ---- an output may not be an input or another output ---- */

/* What identifies a file for the check: an existing regular file by device and inode; an
 * output that does not exist yet by its resolved path (the real path of its directory, then
 * its name). Nothing else is compared (kind 0). */
struct file_key {
    int kind; /* 0: not compared, 1: dev/ino, 2: resolved path */
    dev_t dev;
    ino_t ino;
    char *resolved; /* kind 2 (malloc) */
};

/* The resolved path of a file that does not exist (yet): realpath(its directory) "/" its name;
 * the path as given when the directory cannot be resolved (the write will fail anyway). NULL
 * when out of memory. */
static char *resolve_new(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    size_t dir_len = slash ? (size_t)(slash - path) : 0;
    char *dir = malloc(dir_len + 2);
    if (!dir)
        return NULL;
    if (!slash)
        strcpy(dir, ".");
    else if (dir_len == 0)
        strcpy(dir, "/");
    else {
        memcpy(dir, path, dir_len);
        dir[dir_len] = '\0';
    }
    char *real = realpath(dir, NULL);
    free(dir);
    if (!real)
        return strdup(path);
    size_t n = strlen(real);
    char *resolved = malloc(n + strlen(name) + 2);
    if (resolved)
        sprintf(resolved, n > 0 && real[n - 1] == '/' ? "%s%s" : "%s/%s", real, name);
    free(real);
    return resolved;
}

/* 0, or -1 when out of memory. */
static int make_key(const char *path, int output, struct file_key *key)
{
    memset(key, 0, sizeof *key);
    if (!path || !path[0] || strcmp(path, "-") == 0)
        return 0; /* not given, or standard input / output */
    struct stat st;
    if (stat(path, &st) == 0) {
        /* a device (/dev/null, /dev/stdout), a FIFO: written in place, never replaced; a
         * directory is no output (dg_atomic_open refuses it) and no input file */
        if (S_ISREG(st.st_mode)) {
            key->kind = 1;
            key->dev = st.st_dev;
            key->ino = st.st_ino;
        }
        return 0;
    }
    size_t n = strlen(path);
    if (!output || path[n - 1] == '/')
        return 0; /* an input that is not there fails when it is read */
    if (!(key->resolved = resolve_new(path)))
        return -1;
    key->kind = 2;
    return 0;
}

static int same_key(const struct file_key *a, const struct file_key *b)
{
    if (a->kind == 0 || a->kind != b->kind)
        return 0;
    if (a->kind == 1)
        return a->dev == b->dev && a->ino == b->ino;
    return strcmp(a->resolved, b->resolved) == 0;
}

int dg_cli_same_file(const char *a, const char *b)
{
    struct file_key ka, kb;
    if (make_key(a, 1, &ka) != 0)
        return 0;
    if (make_key(b, 1, &kb) != 0) {
        free(ka.resolved);
        return 0;
    }
    int same = same_key(&ka, &kb);
    free(ka.resolved);
    free(kb.resolved);
    return same;
}

int dg_cli_check_outputs(const char *command, const struct dg_cli_file *files, size_t count)
{
    struct file_key *keys = calloc(count + 1, sizeof *keys);
    int code = 0;
    if (!keys) {
        fprintf(stderr, "digits: %s: out of memory\n", command);
        return 1;
    }
    for (size_t i = 0; i < count && code == 0; i++)
        if (make_key(files[i].path, files[i].output, &keys[i]) != 0) {
            fprintf(stderr, "digits: %s: out of memory\n", command);
            code = 1;
        }
    /* each output against every input first, then against the outputs named before it */
    for (size_t i = 0; i < count && code == 0; i++) {
        if (!files[i].output || keys[i].kind == 0)
            continue;
        for (size_t j = 0; j < count && code == 0; j++)
            if (!files[j].output && same_key(&keys[i], &keys[j]))
                code =
                    dg_cli_usage_error(command,
                                       "%s %s is the same file as %s %s: an output may not "
                                       "overwrite an input (nothing was written)",
                                       files[i].what, files[i].path, files[j].what, files[j].path);
        for (size_t j = 0; j < i && code == 0; j++)
            if (files[j].output && same_key(&keys[i], &keys[j]))
                code =
                    dg_cli_usage_error(command,
                                       "%s %s is the same file as %s %s: two outputs may not "
                                       "be one file (nothing was written)",
                                       files[i].what, files[i].path, files[j].what, files[j].path);
    }
    for (size_t i = 0; i < count; i++)
        free(keys[i].resolved);
    free(keys);
    return code;
}

/* ---- "did you mean" ---- */

/* The optimal-string-alignment distance of a and b (insertions, deletions, substitutions and
 * swaps of neighbours each cost 1), at most 64 characters each; 99 beyond that. */
static int edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64)
        return 99;
    int d[65][65];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

const char *dg_cli_closest(const char *word, const char *const *candidates, size_t count)
{
    const char *best = NULL;
    int best_distance = 99;
    size_t length = strlen(word);
    /* a slip, not another word: at most 2 edits, and fewer than half of the word */
    int limit = length <= 3 ? 1 : 2;
    for (size_t i = 0; i < count; i++) {
        int d = edit_distance(word, candidates[i]);
        if (d <= limit && d < best_distance && 2 * (size_t)d < length) {
            best = candidates[i];
            best_distance = d;
        }
    }
    return best;
}

int dg_cli_bad_option(const char *command, char **argv, const char *shorts,
                      const struct option *options)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    int long_form = strncmp(arg, "--", 2) == 0;
    /* optopt names a known option that lacks its value (or has one it takes none) when that
     * option came as --NAME, or as a letter of `shorts` that takes a value; any other letter
     * is no option of the command, whatever long option shares it as its internal code */
    const char *letter = optopt > 0 && optopt != ':' ? strchr(shorts, optopt) : NULL;
    int short_with_value = letter && letter[1] == ':';
    const struct option *known = NULL;
    for (const struct option *o = options; optopt && o->name; o++)
        if (o->val == optopt && (long_form || short_with_value))
            known = o;
    if (known) {
        /* a known option without its value, or a value on one that takes none */
        const char *equals = strchr(arg, '=');
        if (known->has_arg == no_argument && equals)
            return dg_cli_usage_error(command, "--%s takes no value (got '%s')", known->name,
                                      arg);
        if (strncmp(arg, "--", 2) == 0)
            return dg_cli_usage_error(command, "%s needs a value", arg);
        return dg_cli_usage_error(command, "-%c (--%s) needs a value", optopt, known->name);
    }
    if (short_with_value)
        return dg_cli_usage_error(command, "-%c needs a value", optopt);
    if (optopt) {
        /* a letter that begins exactly one long option's name: that option, presumably */
        const struct option *guess = NULL;
        int guesses = 0;
        for (const struct option *o = options; o->name; o++)
            if (o->name[0] == optopt && strlen(o->name) > 1)
                guess = o, guesses++;
        if (guesses == 1)
            return dg_cli_usage_error(command, "unknown option '-%c' (did you mean --%s?)",
                                      optopt, guess->name);
        return dg_cli_usage_error(command, "unknown option '-%c'", optopt);
    }
    /* an unknown or ambiguous long option: its name without "--" and any "=VALUE" */
    char name[96];
    const char *start = strncmp(arg, "--", 2) == 0 ? arg + 2 : arg;
    snprintf(name, sizeof name, "%.*s", (int)strcspn(start, "="), start);
    const char *names[128];
    size_t count = 0, prefixed = 0;
    char matches[512] = "";
    for (const struct option *o = options; o->name && count < 128; o++) {
        names[count++] = o->name;
        if (name[0] && strncmp(o->name, name, strlen(name)) == 0) {
            size_t used = strlen(matches);
            snprintf(matches + used, sizeof matches - used, "%s--%s", prefixed ? " or " : "",
                     o->name);
            prefixed++;
        }
    }
    if (prefixed > 1)
        return dg_cli_usage_error(command, "'--%s' is ambiguous: %s", name, matches);
    const char *closest = dg_cli_closest(name, names, count);
    if (closest)
        return dg_cli_usage_error(command, "unknown option '--%s' (did you mean --%s?)", name,
                                  closest);
    return dg_cli_usage_error(command, "unknown option '--%s'", name);
}

/* ---- JSON strings ---- */

/* The length of the well-formed UTF-8 sequence at p (1..4, Unicode's table 3-7: no overlong
 * forms, surrogates or code points above U+10FFFF), or 0 when it is not one; *bad is then the
 * length of its maximal subpart (1..3), the bytes one U+FFFD replaces. */
static size_t utf8_sequence(const unsigned char *p, size_t *bad)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        /* the string's NUL is below 0x80: it ends a truncated sequence */
        if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf)) {
            *bad = i;
            return 0;
        }
    }
    return n;
}

void dg_cli_json_string(FILE *fp, const char *text)
{
    fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        size_t bad = 0, n = utf8_sequence(p, &bad);
        if (n == 0) {
            fputs("\xef\xbf\xbd", fp);
            p += bad;
            continue;
        }
        if (*p == '"' || *p == '\\')
            fprintf(fp, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(fp, "\\u%04x", *p);
        else
            fwrite(p, 1, n, fp);
        p += n;
    }
    fputc('"', fp);
}
