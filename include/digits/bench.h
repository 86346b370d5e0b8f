/* Helpers of `digits bench`: summary statistics of repeated measurements, integer-list
 * options, one training step timed op by op over a net (the same vtable calls as
 * src/nn/net.c, each between backend syncs), a wrapper that counts the memory a backend
 * allocates through its vtable, CSV writing for the parse scaling study, synthetic image
 * stores, and the process's peak memory. Tensors are the net's: float32 NCHW in backend
 * memory; image stores uint8 (N x 784), row-major. */
#ifndef DIGITS_BENCH_H
#define DIGITS_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "digits/backend.h"
#include "digits/data.h"
#include "digits/model.h"
#include "digits/net.h"
#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- statistics and timing ---- */

struct dg_bench_stats {
    int count;
    double median; /* the middle sample, or the mean of the two middle ones */
    double min;
    double max;
};

/* Summarises samples[0..count) (left unchanged); all fields 0 when count is 0. */
void dg_bench_stats_compute(const double *samples, int count, struct dg_bench_stats *out);

/* Monotonic seconds. */
double dg_bench_now(void);

/* Parses a comma-separated list of integers in [min, max] ("32,86,256") into values (at most
 * capacity entries). DG_ERR_USAGE naming `option` on an empty list, a bad or out-of-range
 * entry, or too many entries. */
enum dg_status dg_bench_parse_list(const char *option, const char *text, long min, long max,
                                   long *values, int capacity, int *count);

/* ---- one training step timed op by op ---- */

/* Seconds spent in each part of a step (each op call between two backend syncs). */
struct dg_bench_op_times {
    double assemble;                /* batch_assemble */
    double forward[DG_MAX_LAYERS];  /* per layer; 0 for pass-through layers */
    double softmax;                 /* softmax + cross-entropy and its gradient */
    double backward[DG_MAX_LAYERS]; /* per layer, ReLU backward included */
    double update;                  /* RMSprop over all parameters */
};

/* One training step of n = net->max_batch images (rows: host indices into the attached
 * store): assemble, then dg_net_forward / dg_net_backward / dg_net_update themselves (so the
 * parameters end up bit-identical to a training step), each layer timed through the net's
 * layer hook. augment may be NULL. */
enum dg_status dg_bench_timed_step(struct dg_net *net, void *data_handle, const uint32_t *rows,
                                   int n, const struct dg_net_mode *mode,
                                   const struct dg_augment_key *augment, float lr, float rho,
                                   float eps, struct dg_bench_op_times *times);

/* ---- memory ---- */

struct dg_bench_memory_stats {
    size_t current_bytes; /* allocated through the vtable and not yet freed */
    size_t peak_bytes;    /* the most at any time since attach (or the last reset) */
    size_t allocations;   /* alloc calls that succeeded */
};

struct dg_bench_memory;

/* Replaces be->ops by a copy whose alloc/free count bytes, then forward to the backend.
 * Backend-internal allocations (workspaces, uploaded image stores) are not seen. */
enum dg_status dg_bench_memory_attach(struct dg_backend *be, struct dg_bench_memory **out);
void dg_bench_memory_read(const struct dg_bench_memory *tracker, struct dg_bench_memory_stats *out);
/* Sets the peak to the current amount. */
void dg_bench_memory_reset_peak(struct dg_bench_memory *tracker);
/* Restores be->ops and frees the tracker (buffers still allocated stay valid). */
void dg_bench_memory_detach(struct dg_backend *be, struct dg_bench_memory *tracker);

/* Peak resident set size of this process so far (getrusage), bytes. */
size_t dg_bench_peak_rss_bytes(void);

/* ---- data ---- */

/* Writes `rows` rows in the Kaggle CSV layout (train layout when the dataset has labels,
 * else test layout), cycling through the dataset's images: row r is image r % count. */
enum dg_status dg_bench_write_csv(const char *path, const struct dg_dataset *dataset, size_t rows);

/* `count` labelled images of seeded noise (about a fifth of the pixels non-zero, as in MNIST),
 * malloc'd (dg_dataset_free releases them). */
enum dg_status dg_bench_synthetic_dataset(size_t count, uint64_t seed, struct dg_dataset *out);

#ifdef __cplusplus
}
#endif

#endif
