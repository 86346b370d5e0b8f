/* Kernel launches on the emulated device: every CUDA thread of a block runs as a fiber
 * (ucontext) on the calling host thread, and __syncthreads is the only switch point, so a
 * block's threads run phase by phase, one after another within a phase. Checks:
 *   - the launch limits (threads per block, block and grid dimensions, shared memory);
 *   - every pointer argument is NULL or inside live device / pinned memory;
 *   - a barrier reached by some threads of a block while others have exited is an error;
 *   - each launch runs twice, threads and blocks in ascending and then descending order, from
 *     the same memory: a kernel whose result depends on thread order (a race, a missing
 *     barrier) leaves different bytes and fails;
 *   - an access outside every allocation (one byte past an allocation's end is an unmapped
 *     page) is caught as the sticky cudaErrorIllegalAddress.
 * Threads whose block never reaches a barrier are run without a fiber (the first thread of
 * the block tells: a barrier must be reached by all threads or none). */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "emu_internal.h"

#define EMU_MAX_THREADS 1024
#define EMU_SHARED_LIMIT (48 * 1024)
#define EMU_STACK_BYTES (128 * 1024)
#define EMU_MAX_SHARED_VARS 32

/* The builtin variables of the running CUDA thread (cuda_lang.h maps threadIdx etc. here). */
__thread uint3 dg_emu_thread_idx;
__thread uint3 dg_emu_block_idx;
__thread dim3 dg_emu_block_dim;
__thread dim3 dg_emu_grid_dim;

enum fiber_state { FIBER_IDLE, FIBER_AT_BARRIER, FIBER_DONE };

/* The switch between fibers: on x86-64 a few instructions saving the callee-saved registers
 * and the stack pointer (swapcontext also saves the signal mask, a system call each time,
 * which made barrier-heavy kernels spend most of their time in the kernel); elsewhere
 * ucontext. */
#if defined(__x86_64__)
#define EMU_FAST_SWITCH 1
void dg_emu_switch(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".globl dg_emu_switch\n"
        ".type dg_emu_switch,@function\n"
        "dg_emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size dg_emu_switch, .-dg_emu_switch\n");
struct context {
    void *sp;
};
#else
struct context {
    ucontext_t uc;
};
#endif

struct fiber {
    struct context context;
    enum fiber_state state;
};

struct scheduler {
    int ready;
    struct context main;
    struct fiber *fibers;
    char *stacks; /* EMU_MAX_THREADS stacks, each below a guard page */
    size_t stack_stride;
    int current;    /* running fiber, -1 when a thread runs without one */
    int in_kernel;
    int direct;     /* threads run without fibers: a barrier there is an error */
    unsigned first_tid; /* the thread of the block run first */
    void (*entry)(void *);
    void *ctx;
    const char *kernel;
    char error[512]; /* first barrier / shared-memory error of this launch */
    sigjmp_buf fault_jump;
    void *fault_address;
    char *altstack;
    /* shared variables met in the current block */
    const void *shared_vars[EMU_MAX_SHARED_VARS];
    int shared_count;
    size_t shared_bytes;
};

static __thread struct scheduler S;

static void context_switch(struct context *save, struct context *load)
{
#ifdef EMU_FAST_SWITCH
    dg_emu_switch(&save->sp, load->sp);
#else
    swapcontext(&save->uc, &load->uc);
#endif
}

/* Records the launch's first barrier or shared-memory error. */
static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
    if (S.error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S.error, sizeof S.error, fmt, ap);
    va_end(ap);
}

/* ---- faults ---- */

static void segv_handler(int sig, siginfo_t *info, void *unused)
{
    (void)unused;
    if (S.in_kernel) {
        S.fault_address = info->si_addr;
        S.in_kernel = 0;
        siglongjmp(S.fault_jump, 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

static void install_handler(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install);
}

static int scheduler_init(void)
{
    if (S.ready)
        return 1;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    S.stack_stride = EMU_STACK_BYTES + page;
    S.stacks = mmap(NULL, S.stack_stride * EMU_MAX_THREADS, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (S.stacks == MAP_FAILED)
        return 0;
    for (int t = 0; t < EMU_MAX_THREADS; t++)
        mprotect(S.stacks + (size_t)t * S.stack_stride, page, PROT_NONE);
    S.fibers = calloc(EMU_MAX_THREADS, sizeof *S.fibers);
    S.altstack = malloc(SIGSTKSZ * 4);
    if (!S.fibers || !S.altstack)
        return 0;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = S.altstack;
    ss.ss_size = SIGSTKSZ * 4;
    sigaltstack(&ss, NULL);
    install_handler();
    S.ready = 1;
    return 1;
}

/* ---- builtins ---- */

static void set_thread(unsigned tid)
{
    dim3 b = dg_emu_block_dim;
    dg_emu_thread_idx.x = tid % b.x;
    dg_emu_thread_idx.y = (tid / b.x) % b.y;
    dg_emu_thread_idx.z = tid / (b.x * b.y);
}

void dg_emu_syncthreads(void);
void dg_emu_syncthreads(void)
{
    if (S.direct || S.current < 0) {
        set_error("kernel %s: thread %u reached __syncthreads after thread %u of its block had "
                  "exited without reaching it (a barrier every thread must reach)",
                  S.kernel, dg_emu_thread_idx.x, S.first_tid);
        return;
    }
    struct fiber *f = &S.fibers[S.current];
    f->state = FIBER_AT_BARRIER;
    context_switch(&f->context, &S.main);
}

/* __shared__ variables (cuda_lang.h): registered on first use in each block, counted against
 * the 48 KiB limit and filled with 0xff, since shared memory starts undefined. */
void dg_emu_shared_use(void *address, size_t bytes);
void dg_emu_shared_use(void *address, size_t bytes)
{
    for (int i = 0; i < S.shared_count; i++)
        if (S.shared_vars[i] == address)
            return;
    if (S.shared_count < EMU_MAX_SHARED_VARS)
        S.shared_vars[S.shared_count++] = address;
    S.shared_bytes += bytes;
    if (S.shared_bytes > EMU_SHARED_LIMIT)
        set_error("kernel %s: %zu bytes of __shared__ memory per block (limit 49152)", S.kernel,
                  S.shared_bytes);
    memset(address, 0xff, bytes);
}

static void fiber_main(void)
{
    struct fiber *f = &S.fibers[S.current];
    S.entry(S.ctx);
    f->state = FIBER_DONE;
    context_switch(&f->context, &S.main); /* never resumed */
    abort();
}

static void fiber_start(unsigned tid)
{
    struct fiber *f = &S.fibers[tid];
    char *stack = S.stacks + (size_t)tid * S.stack_stride + (S.stack_stride - EMU_STACK_BYTES);
    f->state = FIBER_IDLE;
#ifdef EMU_FAST_SWITCH
    /* as if fiber_main had been called and had pushed the six registers dg_emu_switch pops */
    uintptr_t top = ((uintptr_t)stack + EMU_STACK_BYTES) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;                  /* fiber_main's own return address: never used */
    *--sp = (void *)fiber_main;    /* where dg_emu_switch's ret goes */
    for (int r = 0; r < 6; r++)
        *--sp = NULL;
    f->context.sp = sp;
#else
    getcontext(&f->context.uc);
    f->context.uc.uc_stack.ss_sp = stack;
    f->context.uc.uc_stack.ss_size = EMU_STACK_BYTES;
    f->context.uc.uc_link = NULL;
    makecontext(&f->context.uc, fiber_main, 0);
#endif
}

static void fiber_resume(unsigned tid)
{
    S.current = (int)tid;
    set_thread(tid);
    context_switch(&S.main, &S.fibers[tid].context);
    S.current = -1;
}

/* Runs one block with its threads in ascending (order 0) or descending order. 0 on an error
 * (S.error says which). */
static int run_block(unsigned threads, int order)
{
    S.shared_count = 0;
    S.shared_bytes = 0;
    unsigned first = order == 0 ? 0 : threads - 1;
    S.first_tid = first;
    fiber_start(first);
    fiber_resume(first);
    if (S.error[0])
        return 0;
    if (S.fibers[first].state == FIBER_DONE) {
        /* no barrier in this block: the other threads run without fibers */
        S.direct = 1;
        for (unsigned k = 1; k < threads; k++) {
            unsigned tid = order == 0 ? k : threads - 1 - k;
            set_thread(tid);
            S.entry(S.ctx);
            if (S.error[0])
                break;
        }
        S.direct = 0;
        return !S.error[0];
    }
    for (unsigned k = 1; k < threads; k++) {
        unsigned tid = order == 0 ? k : threads - 1 - k;
        fiber_start(tid);
        fiber_resume(tid);
        if (S.error[0])
            return 0;
    }
    for (;;) {
        /* (which __syncthreads call each thread waits at is not compared: the compiler may
         * duplicate one call site when it unrolls a loop) */
        unsigned waiting = 0, done = 0;
        for (unsigned t = 0; t < threads; t++) {
            if (S.fibers[t].state == FIBER_DONE)
                done++;
            else
                waiting++;
        }
        if (waiting == 0)
            return 1;
        if (done > 0) {
            set_error("kernel %s: %u threads of a block wait at __syncthreads while %u have "
                      "exited without reaching it",
                      S.kernel, waiting, done);
            return 0;
        }
        for (unsigned k = 0; k < threads; k++) {
            unsigned tid = order == 0 ? k : threads - 1 - k;
            S.fibers[tid].state = FIBER_IDLE;
            fiber_resume(tid);
            if (S.error[0])
                return 0;
        }
    }
}

/* Runs the whole grid in one order; 0 on a barrier error or a fault (reported). */
static int run_grid(dim3 grid, dim3 block, int order)
{
    unsigned threads = block.x * block.y * block.z;
    size_t blocks = (size_t)grid.x * grid.y * grid.z;
    dg_emu_block_dim = block;
    dg_emu_grid_dim = grid;
    S.error[0] = '\0';
    if (sigsetjmp(S.fault_jump, 1)) {
        void *base = NULL;
        size_t bytes = 0;
        int kind = 0;
        char where[200];
        char *a = S.fault_address;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        if (a >= S.stacks && a < S.stacks + S.stack_stride * EMU_MAX_THREADS)
            snprintf(where, sizeof where, "the thread's stack overflowed (%d KiB)",
                     EMU_STACK_BYTES / 1024);
        else if (dg_emu_find(a - page, &base, &bytes, &kind) || dg_emu_find(a - 1, &base, &bytes,
                                                                            &kind))
            snprintf(where, sizeof where, "%zu bytes past the end of an allocation of %zu bytes "
                     "at %p", (size_t)(a - ((char *)base + bytes)), bytes, base);
        else
            snprintf(where, sizeof where, "in no live allocation");
        dg_emu_fault(cudaErrorIllegalAddress,
                     "kernel %s: block (%u,%u,%u) thread (%u,%u,%u) accessed address %p: %s",
                     S.kernel, dg_emu_block_idx.x, dg_emu_block_idx.y, dg_emu_block_idx.z,
                     dg_emu_thread_idx.x, dg_emu_thread_idx.y, dg_emu_thread_idx.z,
                     S.fault_address, where);
        S.in_kernel = 0;
        S.direct = 0;
        S.current = -1;
        return 0;
    }
    S.in_kernel = 1;
    for (size_t k = 0; k < blocks; k++) {
        size_t b = order == 0 ? k : blocks - 1 - k;
        dg_emu_block_idx.x = (unsigned)(b % grid.x);
        dg_emu_block_idx.y = (unsigned)((b / grid.x) % grid.y);
        dg_emu_block_idx.z = (unsigned)(b / ((size_t)grid.x * grid.y));
        if (!run_block(threads, order)) {
            S.in_kernel = 0;
            dg_emu_count(DG_EMU_BARRIER_ERROR);
            dg_emu_fault(cudaErrorLaunchFailure, "%s (block %u,%u,%u)", S.error,
                         dg_emu_block_idx.x, dg_emu_block_idx.y, dg_emu_block_idx.z);
            return 0;
        }
    }
    S.in_kernel = 0;
    return 1;
}

struct region {
    char *base;
    size_t bytes;
    char *before; /* the bytes before the launch */
    char *first;  /* after the first order */
};

static int orders_wanted(void)
{
    const char *text = getenv("DIGITS_EMU_ORDERS");
    return text && strcmp(text, "1") == 0 ? 1 : 2;
}

#define EMU_MAX_POINTERS 64

/* One launch, as run now or recorded into a graph. */
struct kernel_work {
    const char *kernel;
    dim3 grid, block;
    void (*entry)(void *ctx);
    void *ctx;
    void (*release)(void *ctx);
    const void *pointers[EMU_MAX_POINTERS];
    int pointer_count;
};

static int kernel_run(void *arg);

static void kernel_release(void *arg)
{
    struct kernel_work *w = arg;
    if (w->release)
        w->release(w->ctx);
    free(w);
}

cudaError_t dg_emu_launch(const char *kernel, dim3 grid, dim3 block, size_t shared_bytes,
                          cudaStream_t stream, void (*entry)(void *ctx), void *ctx,
                          void *(*clone)(const void *ctx), void (*release)(void *ctx),
                          const void *const *pointers, int pointer_count)
{
    cudaError_t sticky = dg_emu_sticky();
    if (sticky != cudaSuccess)
        return sticky;
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0 || threads > EMU_MAX_THREADS || block.x > 1024 || block.y > 1024 ||
        block.z > 64 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        dg_emu_report("kernel %s: launch <<<(%u,%u,%u), (%u,%u,%u)>>> outside the limits (at "
                      "most 1024 threads a block, block z <= 64, grid y and z <= 65535, none 0)",
                      kernel, grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return cudaErrorInvalidConfiguration;
    }
    if (shared_bytes > EMU_SHARED_LIMIT) {
        dg_emu_report("kernel %s: %zu bytes of dynamic shared memory (limit 49152)", kernel,
                      shared_bytes);
        return cudaErrorInvalidValue;
    }
    if (!dg_emu_stream_ok(stream))
        return cudaErrorInvalidResourceHandle;
    if (!scheduler_init()) {
        dg_emu_report("kernel %s: no memory for the thread stacks", kernel);
        return cudaErrorMemoryAllocation;
    }
    if (pointer_count > EMU_MAX_POINTERS) {
        dg_emu_report("kernel %s: %d pointer arguments (the emulation takes %d)", kernel,
                      pointer_count, EMU_MAX_POINTERS);
        return cudaErrorInvalidValue;
    }
    struct kernel_work w;
    memset(&w, 0, sizeof w);
    w.kernel = kernel;
    w.grid = grid;
    w.block = block;
    w.entry = entry;
    w.ctx = ctx;
    w.pointer_count = pointer_count;
    for (int i = 0; i < pointer_count; i++)
        w.pointers[i] = pointers[i];
    if (!dg_emu_stream_capturing(stream)) {
        kernel_run(&w);
        return cudaSuccess;
    }
    /* recorded: the graph owns a copy of the arguments, as a kernel node does */
    if (!clone) {
        dg_emu_report("kernel %s: launched on a capturing stream without a way to copy its "
                      "arguments",
                      kernel);
        return cudaErrorStreamCaptureUnsupported;
    }
    struct kernel_work *copy = malloc(sizeof *copy);
    if (!copy)
        return cudaErrorMemoryAllocation;
    *copy = w;
    copy->ctx = clone(ctx);
    copy->release = release;
    if (!copy->ctx) {
        free(copy);
        return cudaErrorMemoryAllocation;
    }
    int result = 0;
    cudaError_t captured =
        dg_emu_enqueue(stream, kernel, kernel_run, copy, 0, NULL, kernel_release, &result);
    if (captured != cudaSuccess)
        kernel_release(copy);
    return captured;
}

/* Runs a launch: the memory it can reach found, the grid run in one or two orders. Returns 0
 * (execution errors are sticky faults). */
static int kernel_run(void *arg)
{
    const struct kernel_work *w = arg;
    const char *kernel = w->kernel;
    dim3 grid = w->grid, block = w->block;
    const void *const *pointers = w->pointers;
    int pointer_count = w->pointer_count;
    if (dg_emu_sticky() != cudaSuccess)
        return 0;

    /* the memory the kernel can reach: the allocations its pointer arguments point into */
    struct region regions[32];
    int region_count = 0;
    for (int i = 0; i < pointer_count; i++) {
        if (!pointers[i])
            continue;
        void *base = NULL;
        size_t bytes = 0;
        int kind = 0;
        if (!dg_emu_find(pointers[i], &base, &bytes, &kind)) {
            dg_emu_fault(cudaErrorIllegalAddress,
                         "kernel %s: pointer argument %d (%p) is not device memory (no live "
                         "cudaMalloc or cudaHostAlloc holds it)",
                         kernel, i + 1, pointers[i]);
            return 0; /* the launch itself succeeds; the access faults */
        }
        int seen = 0;
        for (int r = 0; r < region_count; r++)
            seen |= regions[r].base == base;
        if (!seen && region_count < 32)
            regions[region_count++] = (struct region){base, bytes, NULL, NULL};
    }

    S.kernel = kernel;
    S.entry = w->entry;
    S.ctx = w->ctx;
    S.current = -1;
    int orders = orders_wanted();
    int ok = 1;
    if (orders == 2)
        for (int r = 0; r < region_count; r++) {
            regions[r].before = malloc(regions[r].bytes ? regions[r].bytes : 1);
            regions[r].first = malloc(regions[r].bytes ? regions[r].bytes : 1);
            if (!regions[r].before || !regions[r].first) {
                orders = 1;
                break;
            }
            memcpy(regions[r].before, regions[r].base, regions[r].bytes);
        }
    ok = run_grid(grid, block, 0);
    if (ok && orders == 2) {
        for (int r = 0; r < region_count; r++) {
            memcpy(regions[r].first, regions[r].base, regions[r].bytes);
            memcpy(regions[r].base, regions[r].before, regions[r].bytes);
        }
        ok = run_grid(grid, block, 1);
        for (int r = 0; ok && r < region_count; r++) {
            if (memcmp(regions[r].first, regions[r].base, regions[r].bytes) == 0)
                continue;
            size_t at = 0;
            while (regions[r].first[at] == regions[r].base[at])
                at++;
            dg_emu_count(DG_EMU_RACE);
            dg_emu_fault(cudaErrorLaunchFailure,
                         "kernel %s: its result depends on the order its threads run in (a "
                         "race, or a missing __syncthreads): the allocation of %zu bytes at %p "
                         "differs first at byte %zu between ascending and descending thread "
                         "order",
                         kernel, regions[r].bytes, (void *)regions[r].base, at);
            ok = 0;
        }
    }
    for (int r = 0; r < region_count; r++) {
        free(regions[r].before);
        free(regions[r].first);
    }
    if (ok)
        dg_emu_count(DG_EMU_LAUNCHED);
    return 0;
}
