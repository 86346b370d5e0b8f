/* SIGINT/SIGTERM remove the open temporary files (src/io/temporaries.c): the list itself
 * (register, clean up, full list refused, the real handler in a child), then the real
 * `digits predict`, `report` and `export` stopped while they write (the temporary
 * OUTPUT.tmp.XXXXXX beside a destination that exists already) and then signalled, and
 * `digits train` signalled a second time while it writes the checkpoint that the first signal
 * asked for. Each must die by the signal, leave no *.tmp.* file and leave the destination
 * byte-identical.
 *
 * Catching the write: an inotify watch on the folder reports the temporary's creation, the
 * process is stopped at once (SIGSTOP) and the temporary looked for; when it is there the
 * process is still writing (the temporary is listed from before it can be seen until after
 * the rename), so the signal (sent while it is stopped, delivered at SIGCONT) reaches it in
 * the middle of the write, deterministically. When the write ended before the stop, the run
 * is repeated, and after a few misses the case prints a SKIP line instead of passing.
 *
 * The signal goes to the main thread, the one that writes (tgkill), as the kernel most often
 * delivers a SIGINT/SIGTERM to a running process: to its main thread when that one can take it
 * at once. Sent to the stopped process instead (kill), any thread may take it at SIGCONT, and
 * the main thread may finish the rename while the handler runs on another one, or even finish
 * the command first; then an output is the whole new file, never part of one: one case checks
 * that (each output as before or byte-identical to an uninterrupted run's), and the list's own
 * cases check the rename claimed against a handler on another thread. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "digits/io.h"

static char dir[256];
static char train[1024], test_file[1024];

static void setup(void)
{
    dg_test_dir_create(dir, sizeof dir, "signals");
    const char *source = getenv("DIGITS_SOURCE_DIR");
    ck_assert_ptr_nonnull(source);
    snprintf(train, sizeof train, "%s/data/sample/train.csv.gz", source);
    snprintf(test_file, sizeof test_file, "%s/data/sample/test.csv.gz", source);
}

static void teardown(void)
{
    dg_test_dir_remove(dir);
}

#define run(...) dg_test_run_digits(dir, NULL, NULL, __VA_ARGS__)
#define at(name) dg_test_dir_path(dir, name)

static void write_text(const char *name, const char *text)
{
    FILE *fp = fopen(at(name), "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fputs(text, fp) >= 0, 1);
    ck_assert_int_eq(fclose(fp), 0);
}

/* The number of "*.tmp.*" entries in the folder (their names printed). */
static int temporaries_left(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) {
            printf("temporary in the folder: %s\n", e->d_name);
            count++;
        }
    closedir(d);
    return count;
}

static void remove_temporaries(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp."))
            unlink(at(e->d_name));
    closedir(d);
}

/* ---- the list itself ---- */

START_TEST(list_cleans_up_what_it_holds)
{
    int slots[5];
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d.tmp.abcdef", i);
        write_text(name, "x");
        slots[i] = dg_temporary_add(at(name));
        ck_assert_int_ge(slots[i], 0);
    }
    ck_assert_int_eq(dg_temporaries_count(), 5);
    /* one taken off (committed) is not removed */
    write_text("kept", "x");
    int kept = dg_temporary_add(at("kept"));
    ck_assert_int_ge(kept, 0);
    dg_temporary_remove(kept);
    ck_assert_int_eq(dg_temporaries_count(), 5);
    dg_temporaries_unlink_all();
    ck_assert_int_eq(temporaries_left(), 0);
    ck_assert_int_eq(access(at("kept"), F_OK), 0);
    ck_assert_int_eq(dg_temporaries_count(), 0);
    /* the cleaned slots are free again once taken off */
    for (int i = 0; i < 5; i++)
        dg_temporary_remove(slots[i]);
    dg_temporary_remove(-1);
    int again = dg_temporary_add(at("again"));
    ck_assert_int_ge(again, 0);
    dg_temporary_remove(again);
}
END_TEST

START_TEST(full_list_is_refused)
{
    int slots[DG_TEMPORARIES_MAX];
    for (int i = 0; i < DG_TEMPORARIES_MAX; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%d", i);
        slots[i] = dg_temporary_add(at(name));
        ck_assert_int_ge(slots[i], 0);
    }
    ck_assert_int_eq(dg_temporary_add(at("one-more")), -1);
    /* dg_atomic_open refuses too, and leaves nothing behind */
    struct dg_atomic_file file;
    ck_assert_int_ne(dg_atomic_open(&file, at("out.csv")), DG_OK);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "temporary files"));
    ck_assert_int_eq(temporaries_left(), 0);
    ck_assert_int_eq(access(at("out.csv"), F_OK), -1);
    /* a free slot makes room */
    dg_temporary_remove(slots[7]);
    ck_assert_int_eq(dg_atomic_open(&file, at("out.csv")), DG_OK);
    ck_assert_int_eq(temporaries_left(), 1);
    dg_atomic_abort(&file);
    ck_assert_int_eq(temporaries_left(), 0);
    ck_assert_int_eq(dg_temporaries_count(), DG_TEMPORARIES_MAX - 1);
    for (int i = 0; i < DG_TEMPORARIES_MAX; i++)
        dg_temporary_remove(slots[i]);
    ck_assert_int_eq(dg_temporaries_count(), 0);
}
END_TEST

/* An atomic file opened, then the real handler: the child dies by the signal, the temporary
 * is gone and the destination kept. */
START_TEST(handler_removes_open_atomic_files)
{
    static const int signals[2] = {SIGTERM, SIGINT};
    int signo = signals[_i];
    write_text("dest.csv", "before\n");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dg_temporaries_install();
        struct dg_atomic_file a, b;
        if (dg_atomic_open(&a, at("dest.csv")) != DG_OK ||
            dg_atomic_open(&b, at("other.csv")) != DG_OK)
            _exit(3);
        fputs("after\n", a.fp);
        fflush(a.fp);
        raise(signo);
        _exit(4);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == signo, "status %#x", status);
    ck_assert_int_eq(temporaries_left(), 0);
    char *text = dg_test_slurp(at("dest.csv"));
    ck_assert_str_eq(text, "before\n");
    free(text);
    ck_assert_int_eq(access(at("other.csv"), F_OK), -1);
}
END_TEST

/* ---- the rename into place against a handler on another thread ---- */

static void *unlink_all_thread(void *done)
{
    dg_temporaries_unlink_all();
    atomic_store((atomic_int *)done, 1);
    return NULL;
}

/* A handler on another thread while the rename is claimed waits for it and removes nothing:
 * the file ends up in place, whole. */
START_TEST(handler_waits_for_a_claimed_rename)
{
    write_text("dest.csv", "before\n");
    write_text("dest.csv.tmp.abcdef", "after\n");
    int slot = dg_temporary_add(at("dest.csv.tmp.abcdef"));
    ck_assert_int_ge(slot, 0);
    ck_assert_int_eq(dg_temporary_commit_begin(slot), 1);
    atomic_int done = 0;
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, unlink_all_thread, &done), 0);
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    ck_assert_msg(!atomic_load(&done), "the handler did not wait for the claimed rename");
    ck_assert_int_eq(access(at("dest.csv.tmp.abcdef"), F_OK), 0);
    ck_assert_int_eq(rename(at("dest.csv.tmp.abcdef"), at("dest.csv")), 0);
    dg_temporary_commit_end(slot, 1);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    ck_assert_int_eq(atomic_load(&done), 1);
    char *text = dg_test_slurp(at("dest.csv"));
    ck_assert_str_eq(text, "after\n");
    free(text);
    ck_assert_int_eq(temporaries_left(), 0);
    ck_assert_int_eq(dg_temporaries_count(), 0);
    /* the slot is free again */
    int again = dg_temporary_add(at("again"));
    ck_assert_int_eq(again, slot);
    dg_temporary_remove(again);
}
END_TEST

/* A handler that interrupts the committing thread itself cannot wait for it: it removes the
 * temporary at once (the rename never comes), and a rename that failed lists it again. */
START_TEST(handler_on_the_committing_thread_removes_it)
{
    write_text("a.tmp.abcdef", "x");
    int slot = dg_temporary_add(at("a.tmp.abcdef"));
    ck_assert_int_ge(slot, 0);
    ck_assert_int_eq(dg_temporary_commit_begin(slot), 1);
    ck_assert_int_eq(dg_temporaries_count(), 0);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    dg_temporaries_unlink_all(); /* as from a handler on this thread */
    clock_gettime(CLOCK_MONOTONIC, &end);
    ck_assert_int_eq(access(at("a.tmp.abcdef"), F_OK), -1);
    /* its 5 s wait for other threads' renames was not taken */
    ck_assert_int_lt(end.tv_sec - start.tv_sec, 3);
    /* the end of the commit leaves the handler's slot as the handler left it (cleaned, never
     * reused before it is taken off) */
    dg_temporary_commit_end(slot, 1);
    write_text("c.tmp.abcdef", "x");
    int other = dg_temporary_add(at("c.tmp.abcdef"));
    ck_assert_int_ne(other, slot);
    dg_temporary_remove(other);
    dg_temporary_remove(slot);
    /* a failed rename: listed again, and removed by the next handler */
    write_text("b.tmp.abcdef", "x");
    slot = dg_temporary_add(at("b.tmp.abcdef"));
    ck_assert_int_eq(dg_temporary_commit_begin(slot), 1);
    dg_temporary_commit_end(slot, 0);
    ck_assert_int_eq(dg_temporaries_count(), 1);
    dg_temporaries_unlink_all();
    ck_assert_int_eq(access(at("b.tmp.abcdef"), F_OK), -1);
    dg_temporary_remove(slot);
    ck_assert_int_eq(dg_temporaries_count(), 0);
}
END_TEST

/* Removed by a handler (on another thread) before the commit: dg_atomic_commit leaves the
 * rename undone, says why, and the destination is as it was. */
START_TEST(commit_after_the_handler_is_refused)
{
    write_text("dest.csv", "before\n");
    struct dg_atomic_file file;
    ck_assert_int_eq(dg_atomic_open(&file, at("dest.csv")), DG_OK);
    fputs("after\n", file.fp);
    dg_temporaries_unlink_all();
    ck_assert_int_eq(temporaries_left(), 0);
    ck_assert_int_ne(dg_atomic_commit(&file), DG_OK);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "ending on a signal"));
    char *text = dg_test_slurp(at("dest.csv"));
    ck_assert_str_eq(text, "before\n");
    free(text);
    ck_assert_int_eq(temporaries_left(), 0);
    dg_atomic_abort(&file);
    ck_assert_int_eq(access(at("dest.csv"), F_OK), 0);
    /* for an open file, commit_begin says so too */
    write_text("c.tmp.abcdef", "x");
    int slot = dg_temporary_add(at("c.tmp.abcdef"));
    dg_temporaries_unlink_all();
    ck_assert_int_eq(dg_temporary_commit_begin(slot), 0);
    dg_temporary_remove(slot);
}
END_TEST

/* A rename claimed once the handler has begun (its pass over the list may have gone by the
 * slot while it was still open) is given up, and the temporary removed by the claim itself. */
START_TEST(claim_after_the_handler_began_removes_it)
{
    dg_temporaries_stop();
    write_text("late.tmp.abcdef", "after\n");
    int slot = dg_temporary_add(at("late.tmp.abcdef")); /* listed after the pass */
    ck_assert_int_ge(slot, 0);
    ck_assert_int_eq(dg_temporary_commit_begin(slot), 0);
    ck_assert_int_eq(access(at("late.tmp.abcdef"), F_OK), -1);
    ck_assert_int_eq(dg_temporaries_count(), 0);
    dg_temporary_remove(slot);
    ck_assert_int_eq(temporaries_left(), 0);
}
END_TEST

/* Once the handler has begun (on any thread), no temporary is made: a thread that goes on
 * meanwhile gets a clear refusal and leaves nothing that the handler's pass would miss. */
START_TEST(no_temporary_after_the_handler_began)
{
    write_text("x.tmp.abcdef", "x");
    int slot = dg_temporary_add(at("x.tmp.abcdef"));
    ck_assert_int_ge(slot, 0);
    ck_assert_int_eq(dg_temporaries_ending(), 0);
    dg_temporaries_stop();
    ck_assert_int_eq(dg_temporaries_ending(), 1);
    ck_assert_int_eq(access(at("x.tmp.abcdef"), F_OK), -1);
    ck_assert_int_eq(dg_temporary_begin(), -1);
    struct dg_atomic_file file;
    ck_assert_int_ne(dg_atomic_open(&file, at("out.csv")), DG_OK);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "out.csv: not written: the process is ending"));
    ck_assert_int_eq(temporaries_left(), 0);
    ck_assert_int_eq(access(at("out.csv"), F_OK), -1);
    /* and the signal mask is as it was */
    sigset_t mask;
    ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, NULL, &mask), 0);
    ck_assert_int_eq(sigismember(&mask, SIGINT), 0);
    ck_assert_int_eq(sigismember(&mask, SIGTERM), 0);
    dg_temporary_remove(slot);
}
END_TEST

/* ---- the real commands ---- */

/* `digits ARGS` in the folder, started in the background (stdout and stderr to files). */
static pid_t start(const char *args)
{
    char command[4096];
    snprintf(command, sizeof command, "cd '%s' && exec '%s' %s >'%s' 2>'%s'", dir, dg_test_bin(),
             args, at("run.out"), at("run.err"));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int watch_folder(void)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(inotify_add_watch(fd, dir, IN_CREATE), 0);
    return fd;
}

static void drain(int fd)
{
    char buffer[4096];
    while (read(fd, buffer, sizeof buffer) > 0)
        continue;
}

/* Waits (up to five minutes) for a temporary of `dest` to be created, stops the process and
 * checks that the temporary is still there: 1 when so (the process is left stopped in the
 * middle of the write), 0 when the process ended first (*ended set to its wait status). */
static int stop_while_writing(int fd, pid_t pid, const char *dest, int *ended)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s.tmp.", dest);
    for (int waited = 0; waited < 300 * 1000;) {
        struct pollfd p = {fd, POLLIN, 0};
        int ready = poll(&p, 1, 50);
        if (ready == 0) {
            waited += 50;
            if (waitpid(pid, ended, WNOHANG) == pid)
                return 0;
            continue;
        }
        char buffer[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n = read(fd, buffer, sizeof buffer);
        for (ssize_t off = 0; off < n;) {
            const struct inotify_event *e = (const struct inotify_event *)(buffer + off);
            off += (ssize_t)(sizeof *e + e->len);
            if (!e->len || strncmp(e->name, prefix, strlen(prefix)) != 0)
                continue;
            char name[600];
            snprintf(name, sizeof name, "%s", e->name);
            kill(pid, SIGSTOP);
            int status;
            ck_assert_int_eq(waitpid(pid, &status, WUNTRACED), pid);
            if (!WIFSTOPPED(status)) {
                *ended = status;
                return 0;
            }
            if (access(at(name), F_OK) == 0)
                return 1;
            kill(pid, SIGCONT); /* missed that one: the next */
        }
    }
    ck_abort_msg("no temporary of %s appeared", dest);
    return 0;
}

/* Whether signal signo is pending (not yet delivered) for the stopped process. */
static int signal_pending(pid_t pid, int signo)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    unsigned long long mask = 0;
    while (fgets(line, sizeof line, fp)) {
        unsigned long long bits;
        if ((sscanf(line, "SigPnd: %llx", &bits) == 1) ||
            (sscanf(line, "ShdPnd: %llx", &bits) == 1))
            mask |= bits;
    }
    fclose(fp);
    return (mask >> (signo - 1)) & 1;
}

/* `digits ARGS`, signalled with signo while it writes a temporary of `dest` (a file that
 * exists before, with `dest_text`; `other`, when not NULL, exists too with `other_text`): it
 * must die by the signal, leave no temporary and both files as they were. `first`, when not
 * 0, is sent once before the watch, after `ready` exists (train's graceful stop); then the
 * destination is what was in place when the process was stopped. 1 when
 * checked, 0 when the write was missed every time (SKIP printed). */
static int signal_while_writing_to(const char *what, const char *args, const char *dest,
                                   const char *other, int first, const char *ready, int signo,
                                   int to_process, const char *whole_dest,
                                   const char *whole_other)
{
    static const char dest_text[] = "the destination before\n";
    static const char other_text[] = "the other output before\n";
    for (int attempt = 0; attempt < 6; attempt++) {
        if (!first) {
            write_text(dest, dest_text);
            if (other)
                write_text(other, other_text);
        }
        int fd = watch_folder();
        pid_t pid = start(args);
        if (first) {
            for (int i = 0; access(at(ready), F_OK) != 0; i++) {
                int status;
                ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "%s ended before %s", what,
                              ready);
                ck_assert_msg(i < 30000, "no %s", ready);
                struct timespec pause = {0, 10 * 1000 * 1000};
                nanosleep(&pause, NULL);
            }
            kill(pid, first);
            drain(fd); /* from here on every creation comes after the first signal */
        }
        int ended = 0;
        int caught = stop_while_writing(fd, pid, dest, &ended);
        close(fd);
        if (!caught) {
            printf("%s: the write of %s ended before the stop (attempt %d), again\n", what, dest,
                   attempt + 1);
            continue;
        }
        if (first && signal_pending(pid, first)) {
            /* stopped before it took the first signal: the second would merge with it */
            kill(pid, SIGKILL);
            waitpid(pid, &ended, 0);
            remove_temporaries(); /* SIGKILL cannot be cleaned up after */
            printf("%s: stopped before the first signal was taken (attempt %d), again\n", what,
                   attempt + 1);
            continue;
        }
        /* what is in place while it is stopped must stay (train: the last checkpoint) */
        char *before = dg_test_slurp(at(dest));
        if (!first)
            ck_assert_str_eq(before, dest_text);
        if (to_process)
            ck_assert_int_eq(kill(pid, signo), 0);
        else /* to the main thread, the writer */
            ck_assert_int_eq(syscall(SYS_tgkill, (int)pid, (int)pid, signo), 0);
        ck_assert_int_eq(kill(pid, SIGCONT), 0);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        /* signalled as a process: the command may also have finished (exit 0, every output
         * whole) before any of its threads took the signal */
        int completed = to_process && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        ck_assert_msg((WIFSIGNALED(status) && WTERMSIG(status) == signo) || completed,
                      "%s: not ended by signal %d (status %#x)", what, signo, status);
        ck_assert_msg(temporaries_left() == 0, "%s: temporary files left behind", what);
        char *text = dg_test_slurp(at(dest));
        int unchanged = strcmp(text, before) == 0;
        ck_assert_msg(!completed || !unchanged, "%s: exited 0 with %s as before", what, dest);
        if (whole_dest && !unchanged) {
            /* renamed into place by the main thread while the handler ran on another */
            char *whole = dg_test_slurp(at(whole_dest));
            ck_assert_msg(strcmp(text, whole) == 0, "%s: %s neither as before nor whole", what,
                          dest);
            free(whole);
        } else {
            ck_assert_msg(unchanged, "%s: %s changed", what, dest);
        }
        free(text);
        free(before);
        if (other) {
            text = dg_test_slurp(at(other));
            int other_unchanged = strcmp(text, other_text) == 0;
            ck_assert_msg(!completed || !other_unchanged, "%s: exited 0 with %s as before",
                          what, other);
            if (whole_other && !other_unchanged) {
                char *whole = dg_test_slurp(at(whole_other));
                ck_assert_msg(strcmp(text, whole) == 0, "%s: %s neither as before nor whole",
                              what, other);
                free(whole);
            } else {
                ck_assert_msg(other_unchanged, "%s: %s changed", what, other);
            }
            free(text);
        }
        printf("ok   %s: signal %d (to the %s) in the middle of writing %s: %s, no "
               "temporary left, %s %s\n",
               what, signo, to_process ? "process" : "main thread", dest,
               completed ? "exited 0" : "died by it", dest, unchanged ? "unchanged"
               : completed ? "whole (the command finished first)"
                           : "whole (renamed before the handler ran)");
        return 1;
    }
    printf("SKIP %s: the write of %s ended before the process could be stopped, 6 times\n", what,
           dest);
    return 0;
}

static int signal_while_writing(const char *what, const char *args, const char *dest,
                                const char *other, int first, const char *ready, int signo)
{
    return signal_while_writing_to(what, args, dest, other, first, ready, signo, 0, NULL, NULL);
}

static void make_model(void)
{
    ck_assert_int_eq(run("train %s --limit 300 --epochs 1 --batch 32 --threads 2 --device cpu -q "
                         "--no-checkpoint -o m.dgt",
                         train),
                     0);
}

static const int test_signals[2] = {SIGTERM, SIGINT};

/* big.csv: 10000 rows (the sample's test file ten times; 3000 under the sanitizers), a
 * submission and a 1 MB --probs file to write */
static void make_big_csv(void)
{
    char command[4096];
    int rows = getenv("DIGITS_TEST_SANITIZED") ? 3 : 10;
    snprintf(command, sizeof command,
             "cd '%s' && (gzip -dc '%s' | head -n 1; i=0; while [ $i -lt %d ]; do "
             "gzip -dc '%s' | tail -n +2; i=$((i+1)); done) > big.csv",
             dir, test_file, rows, test_file);
    ck_assert_int_eq(system(command), 0);
}

START_TEST(predict_signalled_while_writing)
{
    make_model();
    make_big_csv();
    signal_while_writing("predict",
                         "predict -m m.dgt big.csv --device cpu --threads 2 -o sub.csv --probs "
                         "probs.csv",
                         "sub.csv", "probs.csv", 0, NULL, test_signals[_i]);
}
END_TEST

/* The signal to the stopped process: whichever thread takes it, each output is as before or
 * whole, and no temporary is left. */
START_TEST(predict_process_signalled_while_writing)
{
    make_model();
    make_big_csv();
    static const char args[] =
        "predict -m m.dgt big.csv --device cpu --threads 2 -o sub.csv --probs probs.csv";
    ck_assert_int_eq(run("%s -q", args), 0);
    ck_assert_int_eq(rename(at("sub.csv"), at("whole-sub.csv")), 0);
    ck_assert_int_eq(rename(at("probs.csv"), at("whole-probs.csv")), 0);
    signal_while_writing_to("predict", args, "sub.csv", "probs.csv", 0, NULL, test_signals[_i],
                            1, "whole-sub.csv", "whole-probs.csv");
}
END_TEST

START_TEST(report_signalled_while_writing)
{
    make_model();
    char args[2048];
    snprintf(args, sizeof args,
             "report -m m.dgt %s --all --top 1000 --device cpu --threads 2 -o page.html", train);
    signal_while_writing("report", args, "page.html", NULL, 0, NULL, test_signals[_i]);
}
END_TEST

START_TEST(export_signalled_while_writing)
{
    make_model();
    signal_while_writing("export", "export -m m.dgt -o m.onnx", "m.onnx", NULL, 0, NULL,
                         test_signals[_i]);
}
END_TEST

/* The first signal stops training and asks for a checkpoint; a second one while it is being
 * written ends the process at once, by the signal, and its temporary goes too. */
START_TEST(train_second_signal_while_checkpointing)
{
    int signo = test_signals[_i];
    char args[2048];
    snprintf(args, sizeof args,
             "train %s --limit 500 --epochs 1000 --batch 32 --threads 2 --device cpu -q "
             "-o t.dgt --checkpoint t.ckpt",
             train);
    signal_while_writing("train", args, "t.ckpt", NULL, signo, "t.ckpt", signo);
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    Suite *suite = suite_create("signals");
    TCase *tc = tcase_create("signals");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, list_cleans_up_what_it_holds);
    tcase_add_test(tc, full_list_is_refused);
    tcase_add_loop_test(tc, handler_removes_open_atomic_files, 0, 2);
    tcase_add_test(tc, handler_waits_for_a_claimed_rename);
    tcase_add_test(tc, handler_on_the_committing_thread_removes_it);
    tcase_add_test(tc, commit_after_the_handler_is_refused);
    tcase_add_test(tc, no_temporary_after_the_handler_began);
    tcase_add_test(tc, claim_after_the_handler_began_removes_it);
    tcase_add_loop_test(tc, predict_signalled_while_writing, 0, 2);
    tcase_add_loop_test(tc, predict_process_signalled_while_writing, 0, 2);
    tcase_add_loop_test(tc, report_signalled_while_writing, 0, 2);
    tcase_add_loop_test(tc, export_signalled_while_writing, 0, 2);
    tcase_add_loop_test(tc, train_second_signal_while_checkpointing, 0, 2);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
