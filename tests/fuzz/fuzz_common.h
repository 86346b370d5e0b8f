/* Shared by the libFuzzer targets (tests/fuzz/fuzz_*.c): the readers under test take a path,
 * so every input is written to a memfd and read back through /proc/self/fd/N (no file system
 * traffic, no temporary files left behind by a crash). */
#ifndef DIGITS_FUZZ_COMMON_H
#define DIGITS_FUZZ_COMMON_H

#define _GNU_SOURCE
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);

/* The path of a file holding data[0..size) (slot 0 or 1: two files at once). */
static inline const char *fuzz_file(int slot, const uint8_t *data, size_t size)
{
    static int fds[2] = {-1, -1};
    static char paths[2][64];
    if (fds[slot] < 0) {
        fds[slot] = memfd_create(slot ? "digits-fuzz-1" : "digits-fuzz-0", 0);
        if (fds[slot] < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(paths[slot], sizeof paths[slot], "/proc/self/fd/%d", fds[slot]);
    }
    if (ftruncate(fds[slot], 0) != 0) {
        perror("ftruncate");
        abort();
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(fds[slot], data + done, size - done, (off_t)done);
        if (n <= 0) {
            perror("pwrite");
            abort();
        }
        done += (size_t)n;
    }
    return paths[slot];
}

/* A loaded model's parameters are all finite (issue 19: a NaN weight behind a valid CRC was
 * accepted; regress-nan-param in the seeds). */
static inline void fuzz_require_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            abort();
}

/* A small deterministic generator for the custom mutators. */
static inline uint64_t fuzz_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

#endif
