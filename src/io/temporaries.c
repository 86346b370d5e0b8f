/* The process-wide list of open temporary files, removed by the SIGINT/SIGTERM handler.
 *
 * Fixed-size static storage, no locks and no malloc: a slot is claimed (FREE -> WRITING) with a
 * compare-and-swap, its path written, and only then published (-> OPEN) with a release store,
 * so a handler (on any thread) never reads a half-written path. The handler moves each OPEN
 * slot to CLEANING before reading its path and to CLEANED after the unlink(); a slot that is
 * CLEANING is never freed or reused, so the path cannot change under the handler.
 *
 * A file created by the program is listed in two steps, with SIGINT/SIGTERM blocked in the
 * creating thread between them: dg_temporary_begin reserves a slot (RESERVED) before the file
 * exists, dg_temporary_end publishes its path once it does. A signal delivered meanwhile goes
 * to another thread (the creating one blocks it), whose handler waits until no slot is
 * RESERVED any more (bounded: an open() or mkstemp() in progress), so that the file just
 * created is listed, and removed, too.
 *
 * The rename into place is claimed the same way (OPEN -> COMMITTING, dg_temporary_commit_begin):
 * a handler on another thread that sees the claim waits until the rename is over (the file is
 * then in place and the name gone); a committing thread that finds its slot taken by a handler
 * first (CLEANING, CLEANED), or the process ending once it has claimed it, leaves the rename
 * undone (and removes the file itself in the second case, which the handler's pass may have
 * gone by). So a temporary is either removed or renamed into place, never both half-way (the
 * rename failing on a name just unlinked). A handler that
 * interrupts the committing thread itself (no other thread can finish that rename) unlinks the
 * temporary as when it is open: interrupted before the rename, the rename never happens;
 * after it, the name is gone already.
 *
 * The handler first marks the process as ending (dg_temporaries_stop): from then on no slot is
 * reserved and no rename claimed, so a thread that goes on while the handler runs elsewhere
 * makes no temporary that the handler's one pass over the list would miss, and renames nothing
 * into place; `main` then waits for the signal (dg_temporaries_await) rather than exit with
 * the status of a command that ran into the refusal. */
#define _POSIX_C_SOURCE 200809L
#include "digits/io.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#if ATOMIC_INT_LOCK_FREE != 2
#error "the list of temporaries needs lock-free atomic ints (used from a signal handler)"
#endif

enum {
    SLOT_FREE,
    SLOT_RESERVED,
    SLOT_WRITING,
    SLOT_OPEN,
    SLOT_COMMITTING,
    SLOT_CLEANING,
    SLOT_CLEANED
};

static atomic_int slot_state[DG_TEMPORARIES_MAX];
/* set by the handler before it looks at the list: no temporary is made nor renamed into place
 * after that */
static atomic_int ending;
static char slot_path[DG_TEMPORARIES_MAX][DG_TEMPORARY_PATH_MAX];

int dg_temporary_add(const char *path)
{
    size_t length = strlen(path);
    if (length >= DG_TEMPORARY_PATH_MAX)
        return -1;
    for (int i = 0; i < DG_TEMPORARIES_MAX; i++) {
        int expected = SLOT_FREE;
        if (!atomic_compare_exchange_strong(&slot_state[i], &expected, SLOT_WRITING))
            continue;
        memcpy(slot_path[i], path, length + 1);
        atomic_store_explicit(&slot_state[i], SLOT_OPEN, memory_order_release);
        return i;
    }
    return -1;
}

/* the creating thread's signal mask between dg_temporary_begin and dg_temporary_end */
static _Thread_local sigset_t saved_mask;

int dg_temporaries_ending(void)
{
    return atomic_load(&ending);
}

void dg_temporaries_await(void)
{
    /* the handler, on another thread, raises the signal once its pass is over (at most
     * about 5 s of waiting for other threads' files, then the unlinks) */
    for (int waited = 0; atomic_load(&ending) && waited < 10000; waited += 10)
        poll(NULL, 0, 10);
}

int dg_temporary_begin(void)
{
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &saved_mask);
    for (int i = 0; i < DG_TEMPORARIES_MAX; i++) {
        int expected = SLOT_FREE;
        if (!atomic_compare_exchange_strong(&slot_state[i], &expected, SLOT_RESERVED))
            continue;
        /* reserved, then the flag read (both sequentially consistent): a handler that set
         * the flag after this read sees the reservation and waits for it to be listed */
        if (!atomic_load(&ending))
            return i;
        atomic_store(&slot_state[i], SLOT_FREE);
        break;
    }
    pthread_sigmask(SIG_SETMASK, &saved_mask, NULL);
    return -1;
}

int dg_temporary_end(int slot, const char *path)
{
    int listed = -1;
    if (path && strlen(path) < DG_TEMPORARY_PATH_MAX) {
        memcpy(slot_path[slot], path, strlen(path) + 1);
        atomic_store_explicit(&slot_state[slot], SLOT_OPEN, memory_order_release);
        listed = slot;
    } else {
        atomic_store(&slot_state[slot], SLOT_FREE);
    }
    pthread_sigmask(SIG_SETMASK, &saved_mask, NULL);
    return listed;
}

/* Removes slot i's file when the slot is in state `from` (async-signal-safe): from -> CLEANING,
 * unlink, CLEANED. */
static void clean_slot(int i, int from)
{
    if (!atomic_compare_exchange_strong(&slot_state[i], &from, SLOT_CLEANING))
        return;
    unlink(slot_path[i]);
    atomic_store(&slot_state[i], SLOT_CLEANED);
}

/* the slot this thread is renaming into place (-1: none), for a handler on this thread (a
 * lock-free atomic: what a handler may read) */
static _Thread_local atomic_int committing_here = -1;

int dg_temporary_commit_begin(int slot)
{
    if (slot < 0 || slot >= DG_TEMPORARIES_MAX)
        return 1;
    /* set before the claim: a handler on this thread that sees the claim sees this too */
    atomic_store(&committing_here, slot);
    int expected = SLOT_OPEN;
    if (!atomic_compare_exchange_strong(&slot_state[slot], &expected, SLOT_COMMITTING)) {
        atomic_store(&committing_here, -1);
        return 0;
    }
    /* claimed, then the flag read (both sequentially consistent): a handler that set the
     * flag after this read sees the claim and waits for the rename; one that set it before
     * may have passed this slot already, so the claim is given up and the file removed here */
    if (atomic_load(&ending)) {
        clean_slot(slot, SLOT_COMMITTING);
        atomic_store(&committing_here, -1);
        return 0;
    }
    return 1;
}

void dg_temporary_commit_end(int slot, int renamed)
{
    if (slot < 0 || slot >= DG_TEMPORARIES_MAX)
        return;
    /* from COMMITTING only: a handler on this thread may have taken it (CLEANING, CLEANED) */
    int expected = SLOT_COMMITTING;
    atomic_compare_exchange_strong(&slot_state[slot], &expected,
                                   renamed ? SLOT_FREE : SLOT_OPEN);
    atomic_store(&committing_here, -1);
}

void dg_temporary_remove(int slot)
{
    if (slot < 0 || slot >= DG_TEMPORARIES_MAX)
        return;
    int expected = SLOT_OPEN;
    if (atomic_compare_exchange_strong(&slot_state[slot], &expected, SLOT_FREE))
        return;
    /* removed by the handler already: free it; CLEANING (the handler is reading the path on
     * another thread, the process is about to end) is left alone */
    if (expected == SLOT_CLEANED)
        atomic_compare_exchange_strong(&slot_state[slot], &expected, SLOT_FREE);
}

int dg_temporaries_count(void)
{
    int count = 0;
    for (int i = 0; i < DG_TEMPORARIES_MAX; i++)
        count += atomic_load(&slot_state[i]) == SLOT_OPEN;
    return count;
}

/* Async-signal-safe: lock-free atomics and unlink() only. */
void dg_temporaries_unlink_all(void)
{
    /* a file being created, or renamed into place, on another thread: wait until it is
     * listed or in place (poll() as a 1 ms sleep, both async-signal-safe; at most about 5 s,
     * in case that thread is stuck) */
    int mine = atomic_load(&committing_here);
    for (int waited = 0; waited < 5000; waited++) {
        int busy = 0;
        for (int i = 0; i < DG_TEMPORARIES_MAX && !busy; i++) {
            int state = atomic_load(&slot_state[i]);
            busy = state == SLOT_RESERVED || (state == SLOT_COMMITTING && i != mine);
        }
        if (!busy)
            break;
        poll(NULL, 0, 1);
    }
    for (int i = 0; i < DG_TEMPORARIES_MAX; i++) {
        /* open, or being renamed into place by the thread this handler interrupted */
        clean_slot(i, SLOT_OPEN);
        if (i == mine)
            clean_slot(i, SLOT_COMMITTING);
    }
}

void dg_temporaries_stop(void)
{
    atomic_store(&ending, 1);
    dg_temporaries_unlink_all();
}

void dg_temporaries_on_signal(int signo)
{
    int saved = errno;
    dg_temporaries_stop();
    /* die by the signal, as without a handler: it is blocked while the handler runs, so the
     * raised one is delivered, with the default action, when the handler returns */
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    sigaction(signo, &action, NULL);
    raise(signo);
    errno = saved;
}

/* SIGINT and SIGTERM ignored when the process started (`nohup`, `cmd &` in a script) stay
 * ignored */
static volatile sig_atomic_t ignored_at_start[2];

static int signal_index(int signo)
{
    return signo == SIGINT ? 0 : signo == SIGTERM ? 1 : -1;
}

void dg_temporaries_catch(int signo)
{
    int index = signal_index(signo);
    if (index < 0)
        return;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = ignored_at_start[index] ? SIG_IGN : dg_temporaries_on_signal;
    sigemptyset(&action.sa_mask);
    sigaddset(&action.sa_mask, SIGINT);
    sigaddset(&action.sa_mask, SIGTERM);
    sigaction(signo, &action, NULL);
}

void dg_temporaries_install(void)
{
    static const int signals[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        struct sigaction old;
        if (sigaction(signals[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            ignored_at_start[i] = 1;
    }
    dg_temporaries_catch(SIGINT);
    dg_temporaries_catch(SIGTERM);
}
