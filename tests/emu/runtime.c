/* The emulated CUDA runtime: device and pinned memory, copies, memsets, streams, events,
 * errors and device properties, each behaving as NVIDIA's runtime API reference says for the
 * calls Digits makes. Work runs at issue time on the calling thread (issue order is stream
 * order). See emu_internal.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "emu_internal.h"

#define EMU_DEFAULT_MEMORY_MIB 16384
#define EMU_ALIGN 8 /* the emulated allocations end flush against an unmapped page */

struct allocation {
    char *base;     /* what cudaMalloc returned */
    size_t bytes;   /* what was asked */
    char *map;      /* the mapping: [map, map + map_bytes), its last page unmapped (guard) */
    size_t map_bytes;
    int kind;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct allocation *allocations;
static size_t allocation_count, allocation_capacity;
static size_t device_bytes_in_use;
static cudaError_t sticky = cudaSuccess;
static struct dg_emu_stats stats;

static __thread cudaError_t last_error = cudaSuccess;
static __thread int current_device = 0;

/* ---- reporting ---- */

void dg_emu_report(const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "emulated device: %s\n", text);
}

void dg_emu_fault(cudaError_t error, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "emulated device: %s (now sticky: %s)\n", text, cudaGetErrorName(error));
    pthread_mutex_lock(&lock);
    if (sticky == cudaSuccess)
        sticky = error;
    stats.faults++;
    pthread_mutex_unlock(&lock);
    last_error = error;
}

cudaError_t dg_emu_sticky(void)
{
    pthread_mutex_lock(&lock);
    cudaError_t e = sticky;
    pthread_mutex_unlock(&lock);
    return e;
}

void dg_emu_get_stats(struct dg_emu_stats *out)
{
    pthread_mutex_lock(&lock);
    *out = stats;
    pthread_mutex_unlock(&lock);
}

void dg_emu_count(enum dg_emu_event event)
{
    pthread_mutex_lock(&lock);
    if (event == DG_EMU_LAUNCHED)
        stats.launches++;
    else if (event == DG_EMU_RACE)
        stats.races++;
    else
        stats.barrier_errors++;
    pthread_mutex_unlock(&lock);
}

/* Every runtime entry point returns through here: a failure becomes the thread's last error;
 * a sticky error wins over success. */
static cudaError_t ret(cudaError_t error)
{
    return dg_emu_return(error);
}

cudaError_t dg_emu_return(cudaError_t error)
{
    if (error == cudaSuccess) {
        cudaError_t s = dg_emu_sticky();
        if (s != cudaSuccess)
            error = s;
    }
    if (error != cudaSuccess)
        last_error = error;
    return error;
}

/* ---- the allocation table ---- */

static struct allocation *find_locked(const void *p)
{
    const char *c = p;
    for (size_t i = 0; i < allocation_count; i++) {
        struct allocation *a = &allocations[i];
        if (c >= a->base && c < a->base + (a->bytes ? a->bytes : 1))
            return a;
    }
    return NULL;
}

int dg_emu_find(const void *p, void **base, size_t *bytes, int *kind)
{
    pthread_mutex_lock(&lock);
    struct allocation *a = find_locked(p);
    if (a) {
        if (base)
            *base = a->base;
        if (bytes)
            *bytes = a->bytes;
        if (kind)
            *kind = a->kind;
    }
    pthread_mutex_unlock(&lock);
    return a != NULL;
}

int dg_emu_range_ok(const void *p, size_t bytes, int kinds)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&lock);
    struct allocation *a = find_locked(p);
    int ok = a && (a->kind & kinds) && (size_t)((const char *)p - a->base) <= a->bytes &&
             bytes <= a->bytes - (size_t)((const char *)p - a->base);
    pthread_mutex_unlock(&lock);
    return ok;
}

static size_t memory_limit(void)
{
    const char *text = getenv("DIGITS_EMU_MEMORY_MIB");
    long mib = text && *text ? strtol(text, NULL, 10) : EMU_DEFAULT_MEMORY_MIB;
    if (mib <= 0)
        mib = EMU_DEFAULT_MEMORY_MIB;
    return (size_t)mib << 20;
}

static cudaError_t map_allocation(size_t bytes, int kind, void **out)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t rounded = (bytes + EMU_ALIGN - 1) / EMU_ALIGN * EMU_ALIGN;
    size_t body = (rounded + page - 1) / page * page;
    if (body == 0)
        body = page;
    size_t map_bytes = body + page;
    pthread_mutex_lock(&lock);
    if (kind == DG_EMU_DEVICE && device_bytes_in_use + bytes > memory_limit()) {
        pthread_mutex_unlock(&lock);
        return cudaErrorMemoryAllocation;
    }
    if (allocation_count == allocation_capacity) {
        size_t capacity = allocation_capacity ? allocation_capacity * 2 : 64;
        struct allocation *grown = realloc(allocations, capacity * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&lock);
            return cudaErrorMemoryAllocation;
        }
        allocations = grown;
        allocation_capacity = capacity;
    }
    char *map = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        pthread_mutex_unlock(&lock);
        return cudaErrorMemoryAllocation;
    }
    mprotect(map + body, page, PROT_NONE);
    struct allocation *a = &allocations[allocation_count++];
    a->map = map;
    a->map_bytes = map_bytes;
    a->base = map + body - rounded;
    a->bytes = bytes;
    a->kind = kind;
    if (kind == DG_EMU_DEVICE)
        device_bytes_in_use += bytes;
    /* fresh device memory is not zero on a GPU: make reading it before writing visible */
    if (kind == DG_EMU_DEVICE)
        memset(a->base, 0xff, rounded);
    *out = a->base;
    pthread_mutex_unlock(&lock);
    return cudaSuccess;
}

static cudaError_t unmap_allocation(void *p, int kind, const char *call)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < allocation_count; i++) {
        struct allocation *a = &allocations[i];
        if (a->base != p)
            continue;
        if (a->kind != kind) {
            pthread_mutex_unlock(&lock);
            dg_emu_report("%s(%p): %s memory, not %s", call, p,
                          a->kind == DG_EMU_DEVICE ? "device" : "pinned host",
                          kind == DG_EMU_DEVICE ? "device memory (cudaFree)"
                                                : "pinned memory (cudaFreeHost)");
            return cudaErrorInvalidValue;
        }
        if (a->kind == DG_EMU_DEVICE)
            device_bytes_in_use -= a->bytes;
        munmap(a->map, a->map_bytes);
        *a = allocations[--allocation_count];
        pthread_mutex_unlock(&lock);
        return cudaSuccess;
    }
    struct allocation *inside = find_locked(p);
    pthread_mutex_unlock(&lock);
    if (inside)
        dg_emu_report("%s(%p): not the start of an allocation (%zu bytes into one)", call, p,
                      (size_t)((char *)p - inside->base));
    else
        dg_emu_report("%s(%p): no such allocation (freed twice, or never allocated)", call, p);
    return cudaErrorInvalidValue;
}

/* ---- devices ---- */

static int device_total(void)
{
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (visible && !*visible)
        return 0;
    const char *text = getenv("DIGITS_EMU_DEVICES");
    long n = text && *text ? strtol(text, NULL, 10) : 1;
    return n < 0 ? 0 : n > 8 ? 8 : (int)n;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count)
        return ret(cudaErrorInvalidValue);
    *count = device_total();
    return ret(*count ? cudaSuccess : cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= device_total())
        return ret(cudaErrorInvalidDevice);
    current_device = device;
    return ret(cudaSuccess);
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device)
        return ret(cudaErrorInvalidValue);
    *device = current_device;
    return ret(cudaSuccess);
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    if (!prop)
        return ret(cudaErrorInvalidValue);
    if (device < 0 || device >= device_total())
        return ret(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "Digits emulated device (test fixture, host CPU)");
    prop->totalGlobalMem = memory_limit();
    prop->sharedMemPerBlock = 48 * 1024;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = 1024;
    prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff;
    prop->maxGridSize[1] = 65535;
    prop->maxGridSize[2] = 65535;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    return ret(cudaSuccess);
}

cudaError_t cudaDriverGetVersion(int *version)
{
    if (!version)
        return ret(cudaErrorInvalidValue);
    *version = CUDART_VERSION;
    return ret(cudaSuccess);
}

cudaError_t cudaRuntimeGetVersion(int *version)
{
    if (!version)
        return ret(cudaErrorInvalidValue);
    *version = CUDART_VERSION;
    return ret(cudaSuccess);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    if (!free_bytes || !total_bytes)
        return ret(cudaErrorInvalidValue);
    pthread_mutex_lock(&lock);
    size_t total = memory_limit();
    *total_bytes = total;
    *free_bytes = total - device_bytes_in_use;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}

/* ---- errors ---- */

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    cudaError_t s = dg_emu_sticky();
    return s != cudaSuccess ? s : e;
}

void dg_emu_set_launch_error(cudaError_t error)
{
    if (error != cudaSuccess)
        last_error = error;
}

cudaError_t cudaPeekAtLastError(void)
{
    cudaError_t s = dg_emu_sticky();
    return s != cudaSuccess ? s : last_error;
}

struct error_text {
    cudaError_t error;
    const char *name;
    const char *text;
};

/* The runtime's own words for the errors the emulation returns. */
static const struct error_text error_texts[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
     "invalid configuration argument"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress",
     "an illegal memory access was encountered"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources",
     "too many resources requested for launch"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction",
     "invalid device function"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection",
     "invalid copy direction for memcpy"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalState, "cudaErrorIllegalState", "the operation is not permitted in the "
                                                     "current state"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureIsolation, "cudaErrorStreamCaptureIsolation",
     "dependency created on uncaptured work in another stream"},
    {cudaErrorStreamCaptureWrongThread, "cudaErrorStreamCaptureWrongThread",
     "attempt to terminate a thread-local capture sequence from another thread"},
};

static const struct error_text *error_text(cudaError_t error)
{
    for (size_t i = 0; i < sizeof error_texts / sizeof error_texts[0]; i++)
        if (error_texts[i].error == error)
            return &error_texts[i];
    return NULL;
}

const char *cudaGetErrorString(cudaError_t error)
{
    const struct error_text *t = error_text(error);
    return t ? t->text : "unrecognized error code";
}

const char *cudaGetErrorName(cudaError_t error)
{
    const struct error_text *t = error_text(error);
    return t ? t->name : "cudaErrorUnknown";
}

/* ---- memory ---- */

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    if (!ptr)
        return ret(cudaErrorInvalidValue);
    *ptr = NULL;
    cudaError_t s = dg_emu_sticky();
    if (s != cudaSuccess)
        return ret(s);
    if ((s = dg_emu_capture_unsafe("cudaMalloc")) != cudaSuccess)
        return ret(s);
    if (bytes == 0)
        return ret(cudaSuccess);
    return ret(map_allocation(bytes, DG_EMU_DEVICE, ptr));
}

cudaError_t cudaFree(void *ptr)
{
    cudaError_t s = dg_emu_capture_unsafe("cudaFree");
    if (s != cudaSuccess)
        return ret(s);
    if (!ptr)
        return ret(cudaSuccess);
    return ret(unmap_allocation(ptr, DG_EMU_DEVICE, "cudaFree"));
}

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned int flags)
{
    if (!ptr)
        return ret(cudaErrorInvalidValue);
    *ptr = NULL;
    if (flags & ~(unsigned)(cudaHostAllocPortable | cudaHostAllocMapped | cudaHostAllocWriteCombined))
        return ret(cudaErrorInvalidValue);
    cudaError_t s = dg_emu_capture_unsafe("cudaHostAlloc");
    if (s != cudaSuccess)
        return ret(s);
    if (bytes == 0)
        return ret(cudaSuccess);
    return ret(map_allocation(bytes, DG_EMU_PINNED, ptr));
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes)
{
    return cudaHostAlloc(ptr, bytes, cudaHostAllocDefault);
}

cudaError_t cudaFreeHost(void *ptr)
{
    cudaError_t s = dg_emu_capture_unsafe("cudaFreeHost");
    if (s != cudaSuccess)
        return ret(s);
    if (!ptr)
        return ret(cudaSuccess);
    return ret(unmap_allocation(ptr, DG_EMU_PINNED, "cudaFreeHost"));
}

static const char *kind_name(enum cudaMemcpyKind kind)
{
    switch (kind) {
    case cudaMemcpyHostToHost: return "HostToHost";
    case cudaMemcpyHostToDevice: return "HostToDevice";
    case cudaMemcpyDeviceToHost: return "DeviceToHost";
    case cudaMemcpyDeviceToDevice: return "DeviceToDevice";
    default: return "Default";
    }
}

/* A device-side operand of a copy or memset: inside one device allocation, whole. */
static int device_operand_ok(const char *call, const char *what, const void *p, size_t bytes)
{
    if (dg_emu_range_ok(p, bytes, DG_EMU_DEVICE))
        return 1;
    void *base = NULL;
    size_t size = 0;
    int kind = 0;
    if (dg_emu_find(p, &base, &size, &kind) && kind == DG_EMU_DEVICE)
        dg_emu_report("%s: %s %p + %zu bytes runs past its allocation (%zu bytes at %p, %zu "
                      "bytes from its start)",
                      call, what, p, bytes, size, base, (size_t)((const char *)p - (char *)base));
    else if (kind == DG_EMU_PINNED)
        dg_emu_report("%s: %s %p is pinned host memory, not device memory", call, what, p);
    else
        dg_emu_report("%s: %s %p is not device memory (no live cudaMalloc holds it)", call, what,
                      p);
    return 0;
}

static int host_operand_ok(const char *call, const char *what, const void *p, size_t bytes)
{
    void *base = NULL;
    size_t size = 0;
    int kind = 0;
    if (!p) {
        dg_emu_report("%s: %s is NULL", call, what);
        return 0;
    }
    if (!dg_emu_find(p, &base, &size, &kind))
        return 1; /* ordinary host memory: its extent is not known here */
    if (kind == DG_EMU_DEVICE) {
        dg_emu_report("%s: %s %p is device memory, not host memory", call, what, p);
        return 0;
    }
    if (!dg_emu_range_ok(p, bytes, DG_EMU_PINNED)) {
        dg_emu_report("%s: %s %p + %zu bytes runs past its pinned allocation (%zu bytes)", call,
                      what, p, bytes, size);
        return 0;
    }
    return 1;
}

static cudaError_t copy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                        const char *call)
{
    if (bytes == 0)
        return cudaSuccess;
    if (kind == cudaMemcpyDefault) {
        int dk = 0, sk = 0;
        dg_emu_find(dst, NULL, NULL, &dk);
        dg_emu_find(src, NULL, NULL, &sk);
        kind = dk == DG_EMU_DEVICE ? (sk == DG_EMU_DEVICE ? cudaMemcpyDeviceToDevice
                                                          : cudaMemcpyHostToDevice)
                                   : (sk == DG_EMU_DEVICE ? cudaMemcpyDeviceToHost
                                                          : cudaMemcpyHostToHost);
    }
    int ok;
    switch (kind) {
    case cudaMemcpyHostToDevice:
        ok = device_operand_ok(call, "destination", dst, bytes) &&
             host_operand_ok(call, "source", src, bytes);
        break;
    case cudaMemcpyDeviceToHost:
        ok = host_operand_ok(call, "destination", dst, bytes) &&
             device_operand_ok(call, "source", src, bytes);
        break;
    case cudaMemcpyDeviceToDevice:
        ok = device_operand_ok(call, "destination", dst, bytes) &&
             device_operand_ok(call, "source", src, bytes);
        break;
    case cudaMemcpyHostToHost:
        ok = host_operand_ok(call, "destination", dst, bytes) &&
             host_operand_ok(call, "source", src, bytes);
        break;
    default:
        dg_emu_report("%s: bad copy kind %d", call, (int)kind);
        return cudaErrorInvalidMemcpyDirection;
    }
    if (!ok) {
        dg_emu_report("%s (%s, %zu bytes) refused", call, kind_name(kind), bytes);
        return cudaErrorInvalidValue;
    }
    memmove(dst, src, bytes);
    return cudaSuccess;
}

static void count_stat(long *counter)
{
    pthread_mutex_lock(&lock);
    (*counter)++;
    pthread_mutex_unlock(&lock);
}

struct copy_work {
    void *dst;
    const void *src;
    size_t bytes;
    enum cudaMemcpyKind kind;
};

static int copy_run(void *ctx)
{
    struct copy_work *w = ctx;
    return (int)copy(w->dst, w->src, w->bytes, w->kind, "cudaMemcpyAsync");
}

/* 1 when p is host memory that is not pinned (a capture would read it at replay time). */
static int pageable(const void *p)
{
    int kind = 0;
    return !dg_emu_find(p, NULL, NULL, &kind);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    if (!dg_emu_stream_ok(stream))
        return ret(cudaErrorInvalidResourceHandle);
    cudaError_t s = dg_emu_sticky();
    if (s != cudaSuccess)
        return ret(s);
    count_stat(&stats.copies);
    if (bytes && dg_emu_stream_capturing(stream) && (pageable(dst) || pageable(src))) {
        dg_emu_report("cudaMemcpyAsync of %zu bytes to or from pageable host memory while the "
                      "stream captures: the emulation captures copies of pinned and device "
                      "memory only",
                      bytes);
        return ret(cudaErrorStreamCaptureUnsupported);
    }
    struct copy_work w = {dst, src, bytes, kind};
    int result = 0;
    s = dg_emu_enqueue(stream, "cudaMemcpyAsync", copy_run, &w, sizeof w, NULL, NULL, &result);
    return ret(s != cudaSuccess ? s : (cudaError_t)result);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
    cudaError_t s = dg_emu_sticky();
    if (s != cudaSuccess)
        return ret(s);
    if ((s = dg_emu_capture_unsafe("cudaMemcpy")) != cudaSuccess)
        return ret(s);
    count_stat(&stats.syncs);
    return ret(copy(dst, src, bytes, kind, "cudaMemcpy"));
}

struct set_work {
    void *ptr;
    int value;
    size_t bytes;
};

static int set_run(void *ctx)
{
    struct set_work *w = ctx;
    if (dg_emu_sticky() != cudaSuccess)
        return 0;
    if (!device_operand_ok("cudaMemsetAsync", "destination", w->ptr, w->bytes))
        return (int)cudaErrorInvalidValue;
    memset(w->ptr, w->value, w->bytes);
    return 0;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream)
{
    if (!dg_emu_stream_ok(stream))
        return ret(cudaErrorInvalidResourceHandle);
    cudaError_t s = dg_emu_sticky();
    if (s != cudaSuccess)
        return ret(s);
    count_stat(&stats.copies);
    if (bytes == 0)
        return ret(cudaSuccess);
    struct set_work w = {ptr, value, bytes};
    int result = 0;
    s = dg_emu_enqueue(stream, "cudaMemsetAsync", set_run, &w, sizeof w, NULL, NULL, &result);
    return ret(s != cudaSuccess ? s : (cudaError_t)result);
}

cudaError_t cudaMemset(void *ptr, int value, size_t bytes)
{
    cudaError_t s = dg_emu_capture_unsafe("cudaMemset");
    if (s != cudaSuccess)
        return ret(s);
    count_stat(&stats.syncs);
    return cudaMemsetAsync(ptr, value, bytes, 0);
}

/* ---- streams and events: handles checked, work already done at issue ---- */

#define EMU_STREAM_MAGIC 0x5354524du
#define EMU_EVENT_MAGIC 0x4556454eu

struct emu_handle {
    unsigned magic;
    int alive;
    int recorded;            /* events */
    cudaStream_t captured_on; /* events: recorded into that stream's capture */
    int timing;               /* events: created without cudaEventDisableTiming */
    double recorded_at;       /* events: the host clock (seconds) at the last record outside a
                                 capture: the emulated device runs work as it is issued, so
                                 that is when the work before the event completed */
};

/* Handles are never returned to malloc, so a destroyed one stays recognisable. */
static int handle_ok(const void *h, unsigned magic)
{
    const struct emu_handle *e = h;
    return e && e->magic == magic && e->alive;
}

int dg_emu_stream_ok(cudaStream_t stream)
{
    if (stream == 0 || stream == cudaStreamLegacy || stream == cudaStreamPerThread)
        return 1;
    pthread_mutex_lock(&lock);
    int ok = handle_ok(stream, EMU_STREAM_MAGIC);
    pthread_mutex_unlock(&lock);
    if (!ok)
        dg_emu_report("stream %p is not a live stream (destroyed, or never created)",
                      (void *)stream);
    return ok;
}

static void *handle_new(unsigned magic)
{
    struct emu_handle *h = calloc(1, sizeof *h);
    if (h) {
        h->magic = magic;
        h->alive = 1;
    }
    return h;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    if (!stream || (flags & ~(unsigned)cudaStreamNonBlocking))
        return ret(cudaErrorInvalidValue);
    *stream = handle_new(EMU_STREAM_MAGIC);
    return ret(*stream ? cudaSuccess : cudaErrorMemoryAllocation);
}

cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    pthread_mutex_lock(&lock);
    int ok = stream && handle_ok(stream, EMU_STREAM_MAGIC);
    if (ok)
        ((struct emu_handle *)stream)->alive = 0;
    pthread_mutex_unlock(&lock);
    if (!ok)
        dg_emu_report("cudaStreamDestroy(%p): not a live stream", (void *)stream);
    return ret(ok ? cudaSuccess : cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    if (!dg_emu_stream_ok(stream))
        return ret(cudaErrorInvalidResourceHandle);
    cudaError_t s = dg_emu_capture_sync("cudaStreamSynchronize", stream);
    if (s != cudaSuccess)
        return ret(s);
    count_stat(&stats.syncs);
    return ret(cudaSuccess);
}

cudaError_t cudaDeviceSynchronize(void)
{
    cudaError_t s = dg_emu_capture_unsafe("cudaDeviceSynchronize");
    if (s != cudaSuccess)
        return ret(s);
    count_stat(&stats.syncs);
    return ret(cudaSuccess);
}

static int event_ok(cudaEvent_t event, const char *call)
{
    pthread_mutex_lock(&lock);
    int ok = handle_ok(event, EMU_EVENT_MAGIC);
    pthread_mutex_unlock(&lock);
    if (!ok)
        dg_emu_report("%s(%p): not a live event", call, (void *)event);
    return ok;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    if (!event || (flags & ~(unsigned)(cudaEventBlockingSync | cudaEventDisableTiming |
                                       cudaEventInterprocess)))
        return ret(cudaErrorInvalidValue);
    *event = handle_new(EMU_EVENT_MAGIC);
    if (*event)
        ((struct emu_handle *)*event)->timing = !(flags & cudaEventDisableTiming);
    return ret(*event ? cudaSuccess : cudaErrorMemoryAllocation);
}

cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    if (!event_ok(event, "cudaEventDestroy"))
        return ret(cudaErrorInvalidResourceHandle);
    pthread_mutex_lock(&lock);
    ((struct emu_handle *)event)->alive = 0;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    if (!event_ok(event, "cudaEventRecord") || !dg_emu_stream_ok(stream))
        return ret(cudaErrorInvalidResourceHandle);
    struct emu_handle *e = (struct emu_handle *)event;
    int capturing = dg_emu_stream_capturing(stream);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&lock);
    e->recorded = 1;
    e->captured_on = capturing ? stream : NULL;
    if (!capturing)
        e->recorded_at = (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
    pthread_mutex_unlock(&lock);
    return ret(cudaSuccess);
}

/* As the driver: both events recorded outside a capture (else cudaErrorInvalidResourceHandle
 * for a captured one, cudaErrorInvalidValue for one never recorded), both created with timing
 * (else cudaErrorInvalidResourceHandle); the time between the two records in milliseconds. */
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!ms)
        return ret(cudaErrorInvalidValue);
    if (!event_ok(start, "cudaEventElapsedTime") || !event_ok(end, "cudaEventElapsedTime"))
        return ret(cudaErrorInvalidResourceHandle);
    const struct emu_handle *a = (const struct emu_handle *)start;
    const struct emu_handle *b = (const struct emu_handle *)end;
    pthread_mutex_lock(&lock);
    cudaError_t s = cudaSuccess;
    if (!a->recorded || !b->recorded)
        s = cudaErrorInvalidValue;
    else if (!a->timing || !b->timing || a->captured_on || b->captured_on)
        s = cudaErrorInvalidResourceHandle;
    else
        *ms = (float)((b->recorded_at - a->recorded_at) * 1e3);
    pthread_mutex_unlock(&lock);
    if (s != cudaSuccess)
        dg_emu_report("cudaEventElapsedTime: %s",
                      s == cudaErrorInvalidValue ? "an event that was never recorded"
                                                 : "an event without timing or recorded in a "
                                                   "capture");
    return ret(s);
}

/* A host wait on an event: not while the event belongs to a capture, nor on a capturing
 * thread. */
static cudaError_t event_wait(cudaEvent_t event, const char *call)
{
    if (!event_ok(event, call))
        return ret(cudaErrorInvalidResourceHandle);
    pthread_mutex_lock(&lock);
    cudaStream_t captured = ((struct emu_handle *)event)->captured_on;
    pthread_mutex_unlock(&lock);
    cudaError_t s = captured ? dg_emu_capture_sync(call, captured) : cudaSuccess;
    if (s == cudaSuccess)
        s = dg_emu_capture_unsafe(call);
    return ret(s);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    cudaError_t s = event_wait(event, "cudaEventSynchronize");
    if (s == cudaSuccess)
        count_stat(&stats.syncs);
    return s;
}

cudaError_t cudaEventQuery(cudaEvent_t event)
{
    return event_wait(event, "cudaEventQuery");
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
{
    if (flags != 0 && flags != cudaEventWaitExternal)
        return ret(cudaErrorInvalidValue);
    if (!dg_emu_stream_ok(stream) || !event_ok(event, "cudaStreamWaitEvent"))
        return ret(cudaErrorInvalidResourceHandle);
    if (dg_emu_stream_capturing(stream)) {
        pthread_mutex_lock(&lock);
        int inside = ((struct emu_handle *)event)->captured_on == stream;
        pthread_mutex_unlock(&lock);
        if (!inside) {
            dg_emu_capture_sync("cudaStreamWaitEvent on an event recorded outside the capture",
                                stream);
            return ret(cudaErrorStreamCaptureIsolation);
        }
    }
    return ret(cudaSuccess);
}

/* ---- TF32 ---- */

float dg_emu_round_tf32(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u)
        return value; /* Inf, NaN */
    uint32_t lsb = (bits >> 13) & 1u;
    bits += 0xfffu + lsb;
    bits &= ~0x1fffu;
    memcpy(&value, &bits, sizeof bits);
    return value;
}

/* ---- bf16 ---- */

uint16_t dg_emu_round_bf16(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return 0x7fffu; /* NaN: the canonical one, as __float2bfloat16_rn gives */
    bits += 0x7fffu + ((bits >> 16) & 1u); /* nearest even; denormals stay denormal */
    return (uint16_t)(bits >> 16);
}

float dg_emu_bf16_value(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
