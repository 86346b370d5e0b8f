/* Stream capture and CUDA Graphs on the emulated device, as NVIDIA's runtime reference describes
 * them for the calls Digits makes: cudaStreamBeginCapture / cudaStreamEndCapture /
 * cudaStreamIsCapturing, cudaGraphInstantiate, cudaGraphLaunch, cudaGraphExecDestroy,
 * cudaGraphDestroy, cudaThreadExchangeStreamCaptureMode.
 *
 * Work issued to a capturing stream (kernel launches, cudaMemcpyAsync / cudaMemsetAsync, cuBLAS
 * and cuDNN calls on a handle bound to it) is not run: it becomes a node of the capture's graph,
 * its arguments copied as they are at the call (host scalars and descriptors by value, device
 * pointers as pointers), and a launch of the instantiated graph runs the nodes in order through
 * the same checks as an eager call (pointers inside live allocations, the two thread orders).
 * A capture is invalidated, as on a GPU, by a call that is unsafe while capturing (allocation,
 * a free, a synchronous copy or memset, a synchronisation, cuDNN's algorithm search) made on
 * the capturing thread (modes Global and ThreadLocal; Global also from any other thread); the
 * call returns cudaErrorStreamCaptureUnsupported, later work on the stream
 * cudaErrorStreamCaptureInvalidated, and cudaStreamEndCapture gives no graph. Stricter than a
 * GPU where a GPU would record something the emulation does not: copies to or from pageable
 * host memory and waits on events recorded outside the capture are refused inside a capture. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "emu_internal.h"

#define EMU_GRAPH_MAGIC 0x47524150u
#define EMU_EXEC_MAGIC 0x47455845u
#define EMU_MAX_CAPTURES 64

struct node {
    char what[64];
    dg_emu_work_fn run;
    void *ctx;
    void (*release)(void *ctx);
};

/* The nodes, shared by a graph and the executables instantiated from it (reference counted:
 * a graph may be destroyed while its executable lives on). */
struct nodes {
    struct node *items;
    size_t count, capacity;
    int refs;
};

struct CUgraph_st {
    unsigned magic;
    int alive;
    struct nodes *nodes;
};

struct CUgraphExec_st {
    unsigned magic;
    int alive;
    struct nodes *nodes;
};

struct capture {
    cudaStream_t stream;
    pthread_t thread;
    enum cudaStreamCaptureMode mode;
    struct nodes *nodes;
    int invalidated;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct capture captures[EMU_MAX_CAPTURES];
static int capture_count;
static int global_captures; /* captures in cudaStreamCaptureModeGlobal, any thread */
static long graph_launches, nodes_replayed, nodes_captured;
static __thread enum cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;

static void nodes_release(struct nodes *n)
{
    if (!n || --n->refs > 0)
        return;
    for (size_t i = 0; i < n->count; i++)
        if (n->items[i].release)
            n->items[i].release(n->items[i].ctx);
        else
            free(n->items[i].ctx);
    free(n->items);
    free(n);
}

/* The capture of `stream` (lock held), or NULL. */
static struct capture *capture_of(cudaStream_t stream)
{
    for (int i = 0; i < capture_count; i++)
        if (captures[i].stream == stream)
            return &captures[i];
    return NULL;
}

int dg_emu_stream_capturing(cudaStream_t stream)
{
    pthread_mutex_lock(&lock);
    int capturing = stream && capture_of(stream) != NULL;
    pthread_mutex_unlock(&lock);
    return capturing;
}

/* Invalidates the captures `hit` selects (lock held); 1 when there was one. */
static int invalidate(const char *call, cudaStream_t stream)
{
    pthread_t self = pthread_self();
    int hit = 0;
    for (int i = 0; i < capture_count; i++) {
        struct capture *c = &captures[i];
        int match;
        if (stream) {
            match = c->stream == stream;
        } else {
            int own = pthread_equal(c->thread, self) && c->mode != cudaStreamCaptureModeRelaxed;
            int global = c->mode == cudaStreamCaptureModeGlobal &&
                         thread_mode != cudaStreamCaptureModeRelaxed;
            match = own || global;
        }
        if (match) {
            c->invalidated = 1;
            hit = 1;
        }
    }
    if (hit)
        dg_emu_report("%s while a stream capture is under way: not allowed during capture (it "
                      "would allocate, free or wait for the device outside the graph); the "
                      "capture is invalidated",
                      call);
    return hit;
}

cudaError_t dg_emu_capture_unsafe(const char *call)
{
    pthread_mutex_lock(&lock);
    int hit = invalidate(call, NULL);
    pthread_mutex_unlock(&lock);
    return hit ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

cudaError_t dg_emu_capture_sync(const char *call, cudaStream_t stream)
{
    if (stream == 0 || stream == cudaStreamLegacy || stream == cudaStreamPerThread)
        return dg_emu_capture_unsafe(call);
    pthread_mutex_lock(&lock);
    int hit = invalidate(call, stream);
    pthread_mutex_unlock(&lock);
    return hit ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

cudaError_t dg_emu_enqueue(cudaStream_t stream, const char *what, dg_emu_work_fn run, void *ctx,
                           size_t ctx_bytes, void *(*clone)(const void *ctx),
                           void (*release)(void *ctx), int *result)
{
    *result = 0;
    pthread_mutex_lock(&lock);
    struct capture *c = stream ? capture_of(stream) : NULL;
    if (!c) {
        pthread_mutex_unlock(&lock);
        *result = run(ctx);
        return cudaSuccess;
    }
    if (c->invalidated) {
        pthread_mutex_unlock(&lock);
        dg_emu_report("%s: the stream's capture was invalidated earlier", what);
        return cudaErrorStreamCaptureInvalidated;
    }
    struct nodes *n = c->nodes;
    void *copy = NULL;
    if (n->count == n->capacity) {
        size_t capacity = n->capacity ? 2 * n->capacity : 64;
        struct node *items = realloc(n->items, capacity * sizeof *items);
        if (!items) {
            pthread_mutex_unlock(&lock);
            return cudaErrorMemoryAllocation;
        }
        n->items = items;
        n->capacity = capacity;
    }
    if (clone) {
        copy = clone(ctx);
    } else if (ctx_bytes == 0) {
        copy = ctx; /* handed over */
    } else {
        copy = malloc(ctx_bytes ? ctx_bytes : 1);
        if (copy)
            memcpy(copy, ctx, ctx_bytes);
    }
    if (!copy) {
        pthread_mutex_unlock(&lock);
        return cudaErrorMemoryAllocation;
    }
    struct node *node = &n->items[n->count++];
    snprintf(node->what, sizeof node->what, "%s", what);
    node->run = run;
    node->ctx = copy;
    node->release = release;
    nodes_captured++;
    pthread_mutex_unlock(&lock);
    return cudaSuccess;
}

void dg_emu_graph_counts(long *launches, long *replayed, long *captured)
{
    pthread_mutex_lock(&lock);
    *launches = graph_launches;
    *replayed = nodes_replayed;
    *captured = nodes_captured;
    pthread_mutex_unlock(&lock);
}

/* ---- the API ---- */

static cudaError_t ret(cudaError_t error)
{
    return dg_emu_return(error);
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode)
{
    if (!mode ||
        (*mode != cudaStreamCaptureModeGlobal && *mode != cudaStreamCaptureModeThreadLocal &&
         *mode != cudaStreamCaptureModeRelaxed))
        return ret(cudaErrorInvalidValue);
    enum cudaStreamCaptureMode old = thread_mode;
    thread_mode = *mode;
    *mode = old;
    return ret(cudaSuccess);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
        mode != cudaStreamCaptureModeRelaxed)
        return ret(cudaErrorInvalidValue);
    if (stream == 0 || stream == cudaStreamLegacy || stream == cudaStreamPerThread) {
        dg_emu_report("cudaStreamBeginCapture: the legacy stream cannot be captured");
        return ret(cudaErrorStreamCaptureUnsupported);
    }
    if (!dg_emu_stream_ok(stream))
        return ret(cudaErrorInvalidResourceHandle);
    cudaError_t s = dg_emu_sticky();
    if (s != cudaSuccess)
        return ret(s);
    struct nodes *n = calloc(1, sizeof *n);
    if (!n)
        return ret(cudaErrorMemoryAllocation);
    n->refs = 1;
    pthread_mutex_lock(&lock);
    if (capture_of(stream) || capture_count == EMU_MAX_CAPTURES) {
        int already = capture_of(stream) != NULL;
        pthread_mutex_unlock(&lock);
        free(n);
        dg_emu_report("cudaStreamBeginCapture: %s",
                      already ? "the stream is already capturing" : "too many captures at once");
        return ret(already ? cudaErrorIllegalState : cudaErrorMemoryAllocation);
    }
    captures[capture_count++] = (struct capture){stream, pthread_self(), mode, n, 0};
    if (mode == cudaStreamCaptureModeGlobal)
        global_captures++;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    if (!graph)
        return ret(cudaErrorInvalidValue);
    *graph = NULL;
    pthread_mutex_lock(&lock);
    struct capture *c = capture_of(stream);
    if (!c) {
        pthread_mutex_unlock(&lock);
        dg_emu_report("cudaStreamEndCapture: the stream is not capturing");
        return ret(cudaErrorIllegalState);
    }
    if (c->mode != cudaStreamCaptureModeRelaxed && !pthread_equal(c->thread, pthread_self())) {
        pthread_mutex_unlock(&lock);
        dg_emu_report("cudaStreamEndCapture: called from another thread than the capture's");
        return ret(cudaErrorStreamCaptureWrongThread);
    }
    struct capture ended = *c;
    *c = captures[--capture_count];
    if (ended.mode == cudaStreamCaptureModeGlobal)
        global_captures--;
    pthread_mutex_unlock(&lock);
    if (ended.invalidated) {
        nodes_release(ended.nodes);
        return ret(cudaErrorStreamCaptureInvalidated);
    }
    struct CUgraph_st *g = calloc(1, sizeof *g);
    if (!g) {
        nodes_release(ended.nodes);
        return ret(cudaErrorMemoryAllocation);
    }
    g->magic = EMU_GRAPH_MAGIC;
    g->alive = 1;
    g->nodes = ended.nodes;
    *graph = g;
    return ret(cudaSuccess);
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status)
{
    if (!status)
        return ret(cudaErrorInvalidValue);
    if (!dg_emu_stream_ok(stream))
        return ret(cudaErrorInvalidResourceHandle);
    pthread_mutex_lock(&lock);
    struct capture *c = stream ? capture_of(stream) : NULL;
    *status = !c               ? cudaStreamCaptureStatusNone
              : c->invalidated ? cudaStreamCaptureStatusInvalidated
                               : cudaStreamCaptureStatusActive;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}

static int graph_ok(cudaGraph_t g)
{
    return g && g->magic == EMU_GRAPH_MAGIC && g->alive;
}

static int exec_ok(cudaGraphExec_t e)
{
    return e && e->magic == EMU_EXEC_MAGIC && e->alive;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    if (!exec || flags != 0)
        return ret(cudaErrorInvalidValue);
    *exec = NULL;
    if (!graph_ok(graph)) {
        dg_emu_report("cudaGraphInstantiate(%p): not a live graph", (void *)graph);
        return ret(cudaErrorInvalidValue);
    }
    struct CUgraphExec_st *e = calloc(1, sizeof *e);
    if (!e)
        return ret(cudaErrorMemoryAllocation);
    e->magic = EMU_EXEC_MAGIC;
    e->alive = 1;
    pthread_mutex_lock(&lock);
    e->nodes = graph->nodes;
    e->nodes->refs++;
    pthread_mutex_unlock(&lock);
    *exec = e;
    return ret(cudaSuccess);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    if (!exec_ok(exec)) {
        dg_emu_report("cudaGraphLaunch(%p): not a live executable graph", (void *)exec);
        return ret(cudaErrorInvalidValue);
    }
    if (!dg_emu_stream_ok(stream))
        return ret(cudaErrorInvalidResourceHandle);
    if (dg_emu_stream_capturing(stream)) {
        dg_emu_report("cudaGraphLaunch: the emulation does not capture graph launches");
        return ret(cudaErrorStreamCaptureUnsupported);
    }
    cudaError_t s = dg_emu_sticky();
    if (s != cudaSuccess)
        return ret(s);
    struct nodes *n = exec->nodes;
    for (size_t i = 0; i < n->count; i++) {
        int result = n->items[i].run(n->items[i].ctx);
        if (dg_emu_sticky() != cudaSuccess)
            break;
        if (result != 0) {
            dg_emu_fault(cudaErrorLaunchFailure, "graph node %zu of %zu (%s) failed with status %d",
                         i + 1, n->count, n->items[i].what, result);
            break;
        }
    }
    pthread_mutex_lock(&lock);
    graph_launches++;
    nodes_replayed += (long)n->count;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    if (!exec_ok(exec))
        return ret(cudaErrorInvalidValue);
    pthread_mutex_lock(&lock);
    exec->alive = 0; /* kept, so that a later use is recognised */
    nodes_release(exec->nodes);
    exec->nodes = NULL;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    if (!graph_ok(graph))
        return ret(cudaErrorInvalidValue);
    pthread_mutex_lock(&lock);
    graph->alive = 0;
    nodes_release(graph->nodes);
    graph->nodes = NULL;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}
