/* The CPU backend's worker threads, a fixed thread pool (max-pooling is in backend_cpu.c):
 * run(task) executes task(ctx, t, threads) on every thread (the caller is thread 0) and returns
 * when all are done. Workers spin briefly on the generation counter before sleeping on a condition
 * variable, so back-to-back ops of a training step do not pay a wake-up each. */
#include "cpu/cpu_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define DG_THREADS_SPINS 20000

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
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *opaque)
{
    struct worker_arg *arg = opaque;
    struct dg_cpu_threads *pool = arg->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned generation = atomic_load(&pool->generation);
        for (int spin = 0; generation == seen && spin < DG_THREADS_SPINS; spin++) {
            cpu_relax();
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
    free(pool);
}

int dg_cpu_threads_count(const struct dg_cpu_threads *pool)
{
    return pool->threads;
}

void dg_cpu_threads_run(struct dg_cpu_threads *pool, dg_cpu_task task, void *ctx)
{
    if (pool->threads == 1) {
        task(ctx, 0, 1);
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
        cpu_relax();
    if (atomic_load(&pool->pending) != 0) {
        pthread_mutex_lock(&pool->mutex);
        while (atomic_load(&pool->pending) != 0)
            pthread_cond_wait(&pool->done_cond, &pool->mutex);
        pthread_mutex_unlock(&pool->mutex);
    }
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
