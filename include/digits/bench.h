/* `digits bench` as a library: the runner (dg_bench_run: parse speed, training and inference
 * throughput per backend, a per-layer breakdown of one training step, memory) returning a
 * report that the CLI only prints, and its helpers: summary statistics of repeated
 * measurements, integer-list options, one training step timed op by op over a net, a wrapper
 * that counts the memory a backend allocates through its vtable, CSV writing for the parse
 * scaling study, synthetic image stores, and the process's peak memory. Tensors are the net's:
 * float32 NCHW in backend memory; image stores uint8 (N x 784), row-major. */
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

/* ---- the runner ---- */

#define DG_BENCH_MAX_BATCHES 8
#define DG_BENCH_MAX_SCALING 8
#define DG_BENCH_MAX_BACKENDS 2
#define DG_BENCH_MAX_REPS 1000
#define DG_BENCH_PATH_SIZE 1024
#define DG_BENCH_SYNTHETIC_IMAGES 10000

/* What to measure. dg_bench_settings_init sets the defaults; the fields marked "unset" are
 * resolved by dg_bench_run (into report->settings) from quick and scaling. */
struct dg_bench_settings {
    const char *data_path; /* loads timed, and the training images; NULL: none */
    const char *csv_path;  /* a second file whose loads are timed; NULL: none */
    int parse;             /* time the loads (else data_path is loaded once, untimed) */
    /* Train on DG_BENCH_SYNTHETIC_IMAGES images of seeded noise even when a file is given
     * (its loads are still timed). Without it, synthetic images stand in when no file gives
     * any. */
    int synthetic;
    /* "all" (the CPU, and CUDA when usable), "auto", "cpu", "cuda" or "cuda:N" */
    const char *device_spec;
    int threads;                        /* CPU threads, 0 = all cores */
    const char *net;                    /* the network (--net spec or preset); NULL: reference */
    enum dg_math math;             /* CUDA math */
    long batches[DG_BENCH_MAX_BATCHES]; /* training batch sizes */
    int batch_count;                    /* 0 (unset): 86,256; 32,86,256,1024 with scaling */
    int infer_batch;                    /* inference batch, 0 for none (256) */
    int layer_batch; /* batch of the per-layer breakdown, 0 for none; -1 (unset): 256, 86 quick */
    int steps;       /* training steps per repetition; 0 (unset): 1024 images' worth, 512 quick */
    int infer_steps; /* inference batches per repetition; 0 (unset): 2048 images, 1024 quick */
    int reps;        /* repetitions, 1..DG_BENCH_MAX_REPS; 0 (unset): 5, 3 quick */
    int warmup;      /* untimed steps (or loads) first; -1 (unset): 2, 1 quick */
    int augment;     /* training steps with the recipe's augmentation */
    /* On a backend with step mode (CUDA): rows of the training run whose second epoch is
     * counted (dg_train, 2 epochs, 10% validation, the first training batch); 0 (unset):
     * 4300, 860 quick (at most the images there are); -1: no such run. */
    int epoch_rows;
    int scaling;     /* the parse scaling study (temporary CSV files in $TMPDIR) */
    long scaling_rows[DG_BENCH_MAX_SCALING]; /* its row counts */
    int scaling_count;                       /* 0 (unset) with scaling: 10000,60000,600000 */
    int quick;
    /* Progress notes ("cpu: training, batch 86, 6 steps x 3 reps"); NULL for none. */
    void (*progress)(void *ctx, const char *message);
    void *progress_ctx;
};

/* One file's load times (dg_dataset_load). */
struct dg_bench_parse {
    char path[DG_BENCH_PATH_SIZE]; /* the file, or "N rows (temp CSV)" in the scaling study */
    const char *role;              /* "data", "csv" or "scaling" */
    size_t rows;
    size_t bytes_parsed; /* uncompressed text */
    size_t bytes_on_disk;
    int gzipped;
    enum dg_data_format format;
    struct dg_bench_stats seconds;
    struct dg_bench_stats mb_per_s; /* MB = 1e6 bytes of uncompressed text */
};

/* Images per second of `steps` steps of `batch` images (training or inference). */
struct dg_bench_rate {
    int batch;
    int steps;
    struct dg_bench_stats images_per_second;
    /* Training on a backend with graphs (CUDA; the backend's counters over the timed steps):
     * units of work issued per step (kernels, library calls, copies, graph launches), graph
     * launches per step and host synchronisations per step; and the same steps run eagerly
     * (--no-graphs), timed and counted alike. */
    int have_counters;
    double launches_per_step, graph_launches_per_step, syncs_per_step;
    int have_eager;
    struct dg_bench_stats eager_images_per_second;
    double eager_launches_per_step, eager_syncs_per_step;
};

/* A whole epoch as dg_train runs it (the second of a 2-epoch run: its steps, the epoch-end
 * read of the training statistics, the validation pass), on a backend with counters. */
struct dg_bench_epoch {
    int rows, train_rows, val_rows, batch, steps;
    long launches, graph_launches, host_syncs;
    double seconds; /* the epoch's wall time (host clock), validation included */
};

struct dg_bench_layer {
    char name[24];
    struct dg_bench_stats forward_ms; /* 0 for layers that issue no op */
    struct dg_bench_stats backward_ms;
};

struct dg_bench_backend_result {
    char name[16];         /* "cpu", "cuda" */
    char description[512]; /* dg_backend_describe_for at the first training batch */
    struct dg_bench_rate train[DG_BENCH_MAX_BATCHES];
    int train_count;
    struct dg_bench_rate infer;
    int have_infer;
    /* The backend's device clock (CUDA events) timed the training and inference rates, not the
     * host's. */
    int device_timed;
    struct dg_bench_epoch epoch;
    int have_epoch;
    int layer_batch; /* 0 when there is no per-layer breakdown */
    struct dg_bench_layer layers[DG_MAX_LAYERS];
    int layer_count;
    struct dg_bench_stats assemble_ms, softmax_ms, update_ms, step_ms;
    size_t net_peak_bytes; /* allocated through the vtable (workspaces not included) */
    /* From the backend's device_memory entry (whole device, every process): before the runs
     * and after them. */
    int have_device_memory;
    size_t device_used_bytes, device_baseline_bytes, device_total_bytes;
};

struct dg_bench_report {
    struct dg_bench_settings settings;    /* as run: every unset field resolved */
    char data_source[DG_BENCH_PATH_SIZE]; /* the file the images came from, or "seeded noise" */
    int synthetic;
    size_t image_count;
    struct dg_bench_parse parse[2]; /* data, then csv */
    int parse_count;
    struct dg_bench_parse scaling[DG_BENCH_MAX_SCALING];
    int scaling_count;
    struct dg_bench_backend_result backends[DG_BENCH_MAX_BACKENDS];
    int backend_count;
    char skipped[DG_BENCH_MAX_BACKENDS][320]; /* "cuda: why" for backends "all" could not use */
    int skipped_count;
    /* the machine, read at the end of the run */
    char cpu_model[256];
    long logical_cpus;
    double memory_gib;
    char load_average[64]; /* "1-min 5-min 15-min", or "unknown" */
    size_t peak_rss_bytes;
    double seconds; /* the whole run */
};

/* Parse on, device "all", 0 threads (all cores), FP32, inference batch 256, the rest unset. */
void dg_bench_settings_init(struct dg_bench_settings *settings);

/* Fills the unset fields (from quick and scaling) and checks the ranges and the device spec:
 * DG_ERR_USAGE naming what is wrong. dg_bench_run does this on its copy. */
enum dg_status dg_bench_settings_resolve(struct dg_bench_settings *settings);

/* Runs everything the settings ask for and returns the report (dg_bench_report_free). Each
 * figure is the median (with min and max) of settings->reps repetitions after warm-up.
 * DG_ERR_USAGE for settings out of range or a bad device spec; load, backend and step errors
 * as they come. */
enum dg_status dg_bench_run(const struct dg_bench_settings *settings, struct dg_bench_report **out);
void dg_bench_report_free(struct dg_bench_report *report);

#ifdef __cplusplus
}
#endif

#endif
