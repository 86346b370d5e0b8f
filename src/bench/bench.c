/* Measurement helpers of `digits bench`: statistics, list options, clocks, peak memory, and
 * the data used by the parse scaling study (Kaggle CSV text written from a uint8 store of
 * N x 784 images, row-major; synthetic stores when no data file is at hand). */
#define _POSIX_C_SOURCE 200809L
#include "digits/bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void dg_bench_stats_compute(const double *samples, int count, struct dg_bench_stats *out)
{
    memset(out, 0, sizeof *out);
    if (count <= 0)
        return;
    double sorted_small[64];
    double *sorted = count <= 64 ? sorted_small : malloc((size_t)count * sizeof *sorted);
    if (!sorted) {
        /* No memory for a copy: min and max still come out exact, the median from them. */
        out->count = count;
        out->min = out->max = samples[0];
        for (int i = 1; i < count; i++) {
            out->min = samples[i] < out->min ? samples[i] : out->min;
            out->max = samples[i] > out->max ? samples[i] : out->max;
        }
        out->median = 0.5 * (out->min + out->max);
        return;
    }
    memcpy(sorted, samples, (size_t)count * sizeof *sorted);
    qsort(sorted, (size_t)count, sizeof *sorted, compare_doubles);
    out->count = count;
    out->min = sorted[0];
    out->max = sorted[count - 1];
    out->median = count % 2 ? sorted[count / 2] : 0.5 * (sorted[count / 2 - 1] + sorted[count / 2]);
    if (sorted != sorted_small)
        free(sorted);
}

double dg_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

enum dg_status dg_bench_parse_list(const char *option, const char *text, long min, long max,
                                   long *values, int capacity, int *count)
{
    *count = 0;
    const char *p = text;
    if (!*p)
        return dg_error(DG_ERR_USAGE, "%s expects a comma-separated list of integers, got ''",
                        option);
    for (;;) {
        char *end = NULL;
        errno = 0;
        long value = strtol(p, &end, 10);
        if (end == p || errno || (*end != ',' && *end != '\0') || *p == ' ' || *p == '+')
            return dg_error(DG_ERR_USAGE, "%s expects a comma-separated list of integers, got '%s'",
                            option, text);
        if (value < min || value > max)
            return dg_error(DG_ERR_USAGE, "%s: %ld is outside %ld..%ld", option, value, min, max);
        if (*count == capacity)
            return dg_error(DG_ERR_USAGE, "%s: at most %d values", option, capacity);
        values[(*count)++] = value;
        if (*end == '\0')
            return DG_OK;
        p = end + 1;
    }
}

size_t dg_bench_peak_rss_bytes(void)
{
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0)
        return 0;
    return (size_t)usage.ru_maxrss * 1024u; /* Linux reports KiB */
}

/* "0".."255" with their lengths, for writing pixels without printf. */
struct decimal_table {
    char text[256][4];
    unsigned char length[256];
};

static void decimal_table_init(struct decimal_table *table)
{
    for (int v = 0; v < 256; v++)
        table->length[v] = (unsigned char)snprintf(table->text[v], 4, "%d", v);
}

enum dg_status dg_bench_write_csv(const char *path, const struct dg_dataset *dataset, size_t rows)
{
    enum dg_status status = DG_OK;
    if (rows > 0 && dataset->count == 0)
        return dg_error(DG_ERR_RUNTIME, "%s: no images to repeat", path);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return dg_error_path(path, "create", 1, errno);
    struct decimal_table table;
    decimal_table_init(&table);
    int labelled = dataset->labels != NULL;
    char line[8 + DG_PIXELS * 4 + 2];
    size_t length = 0;
    if (labelled)
        length += (size_t)snprintf(line, sizeof line, "label,");
    for (int k = 0; k < DG_PIXELS; k++) {
        length += (size_t)snprintf(line + length, sizeof line - length, "pixel%d%s", k,
                                   k + 1 < DG_PIXELS ? "," : "\n");
        if (length + 16 > sizeof line) {
            if (fwrite(line, 1, length, fp) != length)
                goto write_error;
            length = 0;
        }
    }
    if (fwrite(line, 1, length, fp) != length)
        goto write_error;
    for (size_t r = 0; r < rows; r++) {
        size_t image = r % dataset->count;
        const uint8_t *pixels = dataset->images + image * DG_PIXELS;
        length = 0;
        if (labelled) {
            line[length++] = (char)('0' + dataset->labels[image] % 10);
            line[length++] = ',';
        }
        for (int k = 0; k < DG_PIXELS; k++) {
            memcpy(line + length, table.text[pixels[k]], 4);
            length += table.length[pixels[k]];
            line[length++] = ',';
        }
        line[length - 1] = '\n';
        if (fwrite(line, 1, length, fp) != length)
            goto write_error;
    }
    if (fclose(fp) != 0) {
        fp = NULL;
        goto write_error;
    }
    return DG_OK;
write_error:
    status = dg_error(DG_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (fp)
        fclose(fp);
    remove(path);
    return status;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

enum dg_status dg_bench_synthetic_dataset(size_t count, uint64_t seed, struct dg_dataset *out)
{
    memset(out, 0, sizeof *out);
    const struct dg_allocator *allocator = dg_allocator_default();
    uint8_t *images = allocator->alloc(count * DG_PIXELS, allocator->ctx);
    uint8_t *labels = allocator->alloc(count ? count : 1, allocator->ctx);
    if (!images || !labels) {
        if (images)
            allocator->free(images, allocator->ctx);
        if (labels)
            allocator->free(labels, allocator->ctx);
        return dg_error(DG_ERR_NOMEM, "bench: out of memory for %zu synthetic images", count);
    }
    uint64_t state = seed;
    for (size_t i = 0; i < count; i++) {
        uint8_t *pixels = images + i * DG_PIXELS;
        for (int k = 0; k < DG_PIXELS; k++) {
            uint64_t bits = splitmix64(&state);
            pixels[k] = (bits & 0xFF) < 51 ? (uint8_t)(bits >> 8) : 0;
        }
        labels[i] = (uint8_t)(splitmix64(&state) % DG_CLASSES);
    }
    out->count = count;
    out->images = images;
    out->labels = labels;
    out->format = DG_FORMAT_CSV_TRAIN;
    out->allocator = *allocator;
    return DG_OK;
}
