/* Thread-local error message behind enum dg_status. */
#include "digits/status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DG_ERROR_CAPACITY 1024

static _Thread_local char error_message[DG_ERROR_CAPACITY];

enum dg_status dg_error(enum dg_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    return status;
}

enum dg_status dg_error_prefix(enum dg_status status, const char *fmt, ...)
{
    char prefix[DG_ERROR_CAPACITY];
    char previous[DG_ERROR_CAPACITY];
    va_list args;
    va_start(args, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, args);
    va_end(args);
    memcpy(previous, error_message, sizeof previous);
    size_t used = strlen(prefix);
    if (used > sizeof error_message - 3)
        used = sizeof error_message - 3;
    memcpy(error_message, prefix, used);
    memcpy(error_message + used, ": ", 2);
    size_t room = sizeof error_message - used - 2;
    size_t rest = strlen(previous);
    if (rest > room - 1)
        rest = room - 1;
    memcpy(error_message + used + 2, previous, rest);
    error_message[used + 2 + rest] = '\0';
    return status;
}

enum dg_status dg_error_path(const char *path, const char *verb, int to_write, int err)
{
    const char *advice = NULL;
    switch (err) {
    case ENOENT:
        advice = to_write ? "its directory does not exist: create it, or choose another path"
                          : "check the path";
        break;
    case ENOTDIR:
        advice = "a part of the path is a file, not a directory: check the path";
        break;
    case EISDIR:
        advice = to_write ? "name a file, not a directory" : "name a file in it";
        break;
    case EACCES:
    case EPERM:
        advice = to_write ? "choose a directory you may write to"
                          : "check the file's permissions";
        break;
    case EROFS:
        advice = "a read-only file system: choose another directory";
        break;
    case ELOOP:
        advice = "too many symbolic links: check the path";
        break;
    case ENAMETOOLONG:
        advice = "shorten the path";
        break;
    default:
        break;
    }
    if (advice)
        return dg_error(DG_ERR_USAGE, "%s: cannot %s: %s (%s)", path, verb, strerror(err), advice);
    return dg_error(err == ENOMEM ? DG_ERR_NOMEM : DG_ERR_IO, "%s: cannot %s: %s", path, verb,
                    strerror(err));
}

const char *dg_error_message(void)
{
    return error_message;
}

void dg_error_clear(void)
{
    error_message[0] = '\0';
}

int dg_status_exit_code(enum dg_status status)
{
    switch (status) {
    case DG_OK:
        return 0;
    case DG_ERR_USAGE:
    case DG_ERR_INPUT:
        return 2;
    default:
        return 1;
    }
}

const char *dg_status_name(enum dg_status status)
{
    switch (status) {
    case DG_OK:
        return "ok";
    case DG_ERR_USAGE:
        return "usage error";
    case DG_ERR_INPUT:
        return "input error";
    case DG_ERR_IO:
        return "i/o error";
    case DG_ERR_NOMEM:
        return "out of memory";
    case DG_ERR_DEVICE:
        return "device error";
    case DG_ERR_RUNTIME:
        return "runtime error";
    case DG_ERR_INTERRUPTED:
        return "interrupted";
    }
    return "unknown error";
}
