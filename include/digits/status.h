/* Status codes and the thread-local error message. Library code never exits: it returns a
 * dg_status and records "what: why" (with file:line:col for input errors) here; only main()
 * turns a status into an exit code. */
#ifndef DIGITS_STATUS_H
#define DIGITS_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

enum dg_status {
    DG_OK = 0,
    DG_ERR_USAGE,       /* bad command line: exit 2 */
    DG_ERR_INPUT,       /* bad input data or model file: exit 2 */
    DG_ERR_IO,          /* reading or writing a file failed (dg_error_path: a bad path is
                           DG_ERR_USAGE): exit 1 */
    DG_ERR_NOMEM,       /* out of host memory: exit 1 */
    DG_ERR_DEVICE,      /* CUDA / cuDNN / cuBLAS failure or no usable device: exit 1 */
    DG_ERR_RUNTIME,     /* anything else at run time: exit 1 */
    DG_ERR_INTERRUPTED, /* stopped on request (a signal): exit 1, the CLI uses 128 + signal */
};

/* Records a printf-style message and returns `status`. */
enum dg_status dg_error(enum dg_status status, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prepends "prefix: " to the current message (context on the way up); returns `status`. */
enum dg_status dg_error_prefix(enum dg_status status, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* "PATH: cannot VERB: strerror(err) (what to do)" for a file the user named that could not be
 * opened for reading (to_write 0) or created or written in place (to_write 1). The errors
 * of the path itself, which the user fixes (no such file or directory, not a directory, a
 * directory, no permission, a read-only file system, a loop of links, a name too long), are
 * DG_ERR_USAGE (exit 2); ENOMEM is DG_ERR_NOMEM, anything else DG_ERR_IO (exit 1). */
enum dg_status dg_error_path(const char *path, const char *verb, int to_write, int err);

/* The message recorded by the last failing call on this thread ("" if none). */
const char *dg_error_message(void);

/* Clears the message. */
void dg_error_clear(void);

/* 0 for DG_OK, 2 for usage and input errors, 1 otherwise. */
int dg_status_exit_code(enum dg_status status);

/* A short name of the status ("input error", ...). */
const char *dg_status_name(enum dg_status status);

#ifdef __cplusplus
}
#endif

#endif
