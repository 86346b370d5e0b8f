/* The default allocator (include/digits/alloc.h): malloc/free, large blocks on huge pages. */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "digits/alloc.h"

#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define HUGE_STORE_BYTES ((size_t)8 << 20)

/* Large stores are 2 MiB aligned and marked for transparent huge pages: the image store is
 * written once front to back, and 4 KiB page faults would cost as much as parsing it. */
static void *malloc_hook(size_t bytes, void *ctx)
{
    (void)ctx;
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_STORE_BYTES) {
        size_t rounded = (bytes + HUGE_PAGE_BYTES - 1) & ~(size_t)(HUGE_PAGE_BYTES - 1);
        void *ptr;
        if (posix_memalign(&ptr, HUGE_PAGE_BYTES, rounded) != 0)
            return NULL;
        madvise(ptr, rounded, MADV_HUGEPAGE);
        return ptr;
    }
#endif
    return malloc(bytes ? bytes : 1);
}

static void free_hook(void *ptr, void *ctx)
{
    (void)ctx;
    free(ptr);
}

static const struct dg_allocator default_allocator = {malloc_hook, free_hook, NULL};

const struct dg_allocator *dg_allocator_default(void)
{
    return &default_allocator;
}
