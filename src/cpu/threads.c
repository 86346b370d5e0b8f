/* The CPU backend's worker threads, a fixed thread pool (max-pooling is in backend_cpu.c):
 * run(task) executes task(ctx, t, threads) on every thread (the caller is thread 0) and returns
 * when all are done. Workers spin briefly on the generation counter before sleeping on a condition
 * variable, so back-to-back ops of a training step do not pay a wake-up each. A task either
 * splits its items statically (dg_cpu_split) or claims them (dg_cpu_claim): its own share
 * first, then blocks stolen from the others' shares, through per-thread counters of the run
 * that the claiming thread finds through a thread-local pointer. */
#include "cpu/cpu_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

/* A waiting thread first spins (pause), then yields its core (sched_yield: where another
 * thread is runnable on it, often the pool's own thread that the waiter waits for, that one
 * runs), then sleeps on the condition variable. */
#define DG_THREADS_PAUSES 2000
#define DG_THREADS_SPINS (DG_THREADS_PAUSES + 400)

struct worker_arg {
    struct dg_cpu_threads *pool;
    int thread;
};

struct dg_cpu_threads {
    int threads;
    int started; /* workers running */
    pthread_t *workers;
    struct worker_arg *args;
    pthread_mutex_t mutex;
    pthread_cond_t start_cond;
    pthread_cond_t done_cond;
    atomic_uint generation;
    atomic_int pending;
    atomic_int stopping;
    dg_cpu_task task;
    void *ctx;
    struct claim_slot *slots; /* per thread: blocks of its share taken (dg_cpu_claim) */
};

/* Blocks taken of one thread's share in this run: from the front by the thread itself (low 32
 * bits), from the back by the others (high 32 bits); one cache line each. */
struct claim_slot {
    _Alignas(64) atomic_uint_least64_t taken;
};

/* the pool whose run this thread is in (dg_cpu_claim) */
static _Thread_local struct dg_cpu_threads *running_pool;

/* One wait step: `spin` is the number of steps taken so far. */
static inline void wait_step(int spin)
{
    if (spin >= DG_THREADS_PAUSES) {
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *opaque)
{
    struct worker_arg *arg = opaque;
    struct dg_cpu_threads *pool = arg->pool;
    unsigned seen = 0;
    running_pool = pool;
    for (;;) {
        unsigned generation = atomic_load(&pool->generation);
        for (int spin = 0; generation == seen && spin < DG_THREADS_SPINS; spin++) {
            wait_step(spin);
            generation = atomic_load(&pool->generation);
        }
        if (generation == seen) {
            pthread_mutex_lock(&pool->mutex);
            while ((generation = atomic_load(&pool->generation)) == seen &&
                   !atomic_load(&pool->stopping))
                pthread_cond_wait(&pool->start_cond, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->stopping))
            return NULL;
        seen = generation;
        pool->task(pool->ctx, arg->thread, pool->threads);
        if (atomic_fetch_sub(&pool->pending, 1) == 1) {
            pthread_mutex_lock(&pool->mutex);
            pthread_cond_signal(&pool->done_cond);
            pthread_mutex_unlock(&pool->mutex);
        }
    }
}

enum dg_status dg_cpu_threads_create(int threads, struct dg_cpu_threads **out)
{
    *out = NULL;
    struct dg_cpu_threads *pool = calloc(1, sizeof *pool);
    if (!pool)
        return dg_error(DG_ERR_NOMEM, "cpu backend: out of memory for the thread pool");
    pool->threads = threads < 1 ? 1 : threads;
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->stopping, 0);
    pool->slots = aligned_alloc(64, sizeof *pool->slots * (size_t)pool->threads);
    if (!pool->slots) {
        free(pool);
        return dg_error(DG_ERR_NOMEM, "cpu backend: out of memory for the thread pool");
    }
    for (int t = 0; t < pool->threads; t++)
        atomic_init(&pool->slots[t].taken, 0);
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->start_cond, NULL);
    pthread_cond_init(&pool->done_cond, NULL);
    int worker_count = pool->threads - 1;
    if (worker_count > 0) {
        pool->workers = calloc((size_t)worker_count, sizeof *pool->workers);
        pool->args = calloc((size_t)worker_count, sizeof *pool->args);
        if (!pool->workers || !pool->args) {
            dg_cpu_threads_destroy(pool);
            return dg_error(DG_ERR_NOMEM, "cpu backend: out of memory for the thread pool");
        }
    }
    for (int i = 0; i < worker_count; i++) {
        pool->args[i].pool = pool;
        pool->args[i].thread = i + 1;
        if (pthread_create(&pool->workers[i], NULL, worker_main, &pool->args[i]) != 0) {
            dg_cpu_threads_destroy(pool);
            return dg_error(DG_ERR_RUNTIME, "cpu backend: cannot start worker thread %d of %d",
                            i + 1, worker_count);
        }
        pool->started++;
    }
    *out = pool;
    return DG_OK;
}

void dg_cpu_threads_destroy(struct dg_cpu_threads *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stopping, 1);
    pthread_cond_broadcast(&pool->start_cond);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 0; i < pool->started; i++)
        pthread_join(pool->workers[i], NULL);
    pthread_cond_destroy(&pool->done_cond);
    pthread_cond_destroy(&pool->start_cond);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->args);
    free(pool->workers);
    free(pool->slots);
    free(pool);
}

int dg_cpu_threads_count(const struct dg_cpu_threads *pool)
{
    return pool->threads;
}

void dg_cpu_threads_run(struct dg_cpu_threads *pool, dg_cpu_task task, void *ctx)
{
    struct dg_cpu_threads *outer = running_pool;
    running_pool = pool;
    for (int t = 0; t < pool->threads; t++)
        atomic_store(&pool->slots[t].taken, 0);
    if (pool->threads == 1) {
        task(ctx, 0, 1);
        running_pool = outer;
        return;
    }
    pool->task = task;
    pool->ctx = ctx;
    atomic_store(&pool->pending, pool->threads - 1);
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add(&pool->generation, 1u);
    pthread_cond_broadcast(&pool->start_cond);
    pthread_mutex_unlock(&pool->mutex);
    task(ctx, 0, pool->threads);
    for (int spin = 0; atomic_load(&pool->pending) != 0 && spin < DG_THREADS_SPINS; spin++)
        wait_step(spin);
    if (atomic_load(&pool->pending) != 0) {
        pthread_mutex_lock(&pool->mutex);
        while (atomic_load(&pool->pending) != 0)
            pthread_cond_wait(&pool->done_cond, &pool->mutex);
        pthread_mutex_unlock(&pool->mutex);
    }
    running_pool = outer;
}

/* Takes a block of thread t's share: from the front when t is the caller, else from the
 * back; SIZE_MAX when the share is used up. */
static size_t take_block(struct dg_cpu_threads *pool, size_t blocks, int t, int own, int threads)
{
    size_t lo, hi;
    dg_cpu_split(blocks, 1, t, threads, &lo, &hi);
    atomic_uint_least64_t *slot = &pool->slots[t].taken;
    uint_least64_t old = atomic_load(slot);
    for (;;) {
        size_t front = (size_t)(old & 0xffffffffu), back = (size_t)(old >> 32);
        if (lo + front + back >= hi)
            return SIZE_MAX;
        uint_least64_t taken = own ? old + 1 : old + ((uint_least64_t)1 << 32);
        if (atomic_compare_exchange_weak(slot, &old, taken))
            return own ? lo + front : hi - back - 1;
    }
}

int dg_cpu_claim(struct dg_cpu_claims *c, size_t *item)
{
    if (c->next >= c->end) {
        struct dg_cpu_threads *pool = running_pool;
        size_t blocks = (c->count + c->grain - 1) / c->grain, block = SIZE_MAX;
        for (int k = 0; k < c->threads && block == SIZE_MAX; k++)
            block = take_block(pool, blocks, (c->thread + k) % c->threads, k == 0, c->threads);
        if (block == SIZE_MAX)
            return 0;
        c->next = block * c->grain;
        c->end = c->count - c->next < c->grain ? c->count : c->next + c->grain;
    }
    *item = c->next++;
    return 1;
}

void dg_cpu_split(size_t count, size_t grain, int thread, int threads, size_t *begin, size_t *end)
{
    if (grain < 1)
        grain = 1;
    size_t blocks = (count + grain - 1) / grain;
    size_t first = blocks * (size_t)thread / (size_t)threads;
    size_t last = blocks * (size_t)(thread + 1) / (size_t)threads;
    *begin = first * grain < count ? first * grain : count;
    *end = last * grain < count ? last * grain : count;
}
