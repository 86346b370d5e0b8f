/* The allocator hook for large host buffers (the image store): malloc/free by default, with
 * transparent huge pages for large blocks; the CUDA backend swaps in pinned host memory. */
#ifndef DIGITS_ALLOC_H
#define DIGITS_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dg_allocator {
    void *(*alloc)(size_t bytes, void *ctx); /* NULL on failure */
    void (*free)(void *ptr, void *ctx);
    void *ctx;
};

/* malloc/free. */
const struct dg_allocator *dg_allocator_default(void);

#ifdef __cplusplus
}
#endif

#endif
