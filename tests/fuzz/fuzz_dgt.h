/* The structure-aware mutator of the two formats behind a CRC32 (include/digits/io.h): the
 * model / ensemble file ("DGTMODEL", version 1 or 2) and the checkpoint ("DGTCKPT\0").
 *
 *   magic(8) version(4) layers(4) table(layers x 20) params(u64)
 *   [model v2: members(u32) | checkpoint: blocks(u32)] text_len(u32) text floats CRC32
 *
 * A mutation takes the file apart, changes one piece (a header field, the settings text, one
 * or a few floats, the member / block count with the float area resized to match, or any byte
 * at all), puts it together with the length fields it implies and appends a correct CRC32 of
 * everything before it (zlib's crc32, as src/io/model_file.c and checkpoint.c compute it), so
 * that the readers get past their CRC check to the fields behind it. An input that does not
 * parse is mutated as bytes and given a correct CRC three times out of four. */
#ifndef DIGITS_FUZZ_DGT_H
#define DIGITS_FUZZ_DGT_H

#include <math.h>
#include <zlib.h>

#include "digits/model.h"
#include "fuzz_common.h"

static inline uint32_t dgt_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void dgt_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void dgt_fix_crc(uint8_t *d, size_t n)
{
    if (n >= 4)
        dgt_put32(d + n - 4, (uint32_t)crc32(0L, d, (uInt)(n - 4)));
}

struct dgt {
    int checkpoint;
    uint32_t version, layers;
    const uint8_t *table; /* layers x 20 bytes */
    uint64_t params;
    int has_count; /* a member (model v2) or block (checkpoint) count is stored */
    uint32_t count;
    const uint8_t *text;
    uint32_t text_len;
    const uint8_t *floats;
    size_t float_bytes;
};

static inline int dgt_parse(int checkpoint, const uint8_t *d, size_t n, struct dgt *f)
{
    memset(f, 0, sizeof *f);
    f->checkpoint = checkpoint;
    if (n < 24)
        return 0;
    f->version = dgt_get32(d + 8);
    f->layers = dgt_get32(d + 12);
    if (f->layers > DG_MAX_LAYERS)
        return 0;
    size_t at = 16 + (size_t)f->layers * 20;
    f->table = d + 16;
    f->has_count = checkpoint || f->version == 2;
    if (at + 12 + (f->has_count ? 4 : 0) + 4 > n)
        return 0;
    f->params = (uint64_t)dgt_get32(d + at) | (uint64_t)dgt_get32(d + at + 4) << 32;
    at += 8;
    f->count = 1;
    if (f->has_count) {
        f->count = dgt_get32(d + at);
        at += 4;
    }
    f->text_len = dgt_get32(d + at);
    at += 4;
    if (f->text_len > n - 4 - at)
        return 0;
    f->text = d + at;
    f->floats = f->text + f->text_len;
    f->float_bytes = n - 4 - (size_t)(f->floats - d);
    return 1;
}

/* Writes the pieces (floats tiled or cut to float_bytes) with a CRC over d (cap bytes); the
 * new size, or 0 (d unchanged) when it does not fit. */
static inline size_t dgt_emit(const uint8_t *magic, const struct dgt *f, const uint8_t *text,
                              uint32_t text_len, const uint8_t *floats, size_t have_floats,
                              size_t float_bytes, uint8_t *d, size_t cap)
{
    size_t need = 16 + (size_t)f->layers * 20 + 8 + (f->has_count ? 4 : 0) + 4 + text_len +
                  float_bytes + 4;
    if (need > cap)
        return 0;
    uint8_t *out = malloc(need), *p = out;
    if (!out)
        return 0;
    memcpy(p, magic, 8);
    dgt_put32(p + 8, f->version);
    dgt_put32(p + 12, f->layers);
    memmove(p + 16, f->table, (size_t)f->layers * 20);
    p += 16 + (size_t)f->layers * 20;
    dgt_put32(p, (uint32_t)f->params);
    dgt_put32(p + 4, (uint32_t)(f->params >> 32));
    p += 8;
    if (f->has_count) {
        dgt_put32(p, f->count);
        p += 4;
    }
    dgt_put32(p, text_len);
    p += 4;
    memcpy(p, text, text_len);
    p += text_len;
    if (have_floats == 0)
        memset(p, 0, float_bytes);
    for (size_t done = 0; have_floats && done < float_bytes;) {
        size_t k = float_bytes - done < have_floats ? float_bytes - done : have_floats;
        memcpy(p + done, floats, k);
        done += k;
    }
    dgt_fix_crc(out, need);
    memcpy(d, out, need);
    free(out);
    return need;
}

static inline size_t dgt_mutate(int checkpoint, uint8_t *d, size_t n, size_t max, unsigned seed)
{
    uint64_t rng = (uint64_t)seed * 0x9E3779B97F4A7C15ull | 1;
    struct dgt f;
    if (!dgt_parse(checkpoint, d, n, &f)) {
        n = LLVMFuzzerMutate(d, n, max);
        if (fuzz_next(&rng) % 4)
            dgt_fix_crc(d, n);
        return n;
    }
    uint8_t magic[8];
    memcpy(magic, d, 8);
    unsigned op = (unsigned)(fuzz_next(&rng) % 16);
    if (op < 3) {
        /* a header field: version, layer table, counts (the lengths they imply are not fixed) */
        size_t head = (size_t)(f.text - d) - 8;
        uint8_t *tmp = malloc(head);
        memcpy(tmp, d + 8, head);
        size_t got = LLVMFuzzerMutate(tmp, head, head);
        memcpy(d + 8, tmp, got);
        free(tmp);
        dgt_fix_crc(d, n);
        return n;
    }
    if (op < 8) {
        /* the settings text, its length field following it */
        size_t rest = n - f.text_len;
        if (rest >= max)
            return n;
        size_t cap = f.text_len + 1024;
        if (cap > max - rest)
            cap = max - rest;
        uint8_t *text = malloc(cap + 1);
        memcpy(text, f.text, f.text_len);
        size_t len = LLVMFuzzerMutate(text, f.text_len, cap);
        size_t m = dgt_emit(magic, &f, text, (uint32_t)len, f.floats, f.float_bytes,
                            f.float_bytes, d, max);
        free(text);
        return m ? m : n;
    }
    if (op < 12) {
        /* a float: a special value or a few mutated bytes */
        if (f.float_bytes < 4)
            return n;
        uint8_t *floats = d + (f.floats - d);
        size_t at = (size_t)(fuzz_next(&rng) % (f.float_bytes / 4)) * 4;
        static const float specials[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f,
                                         1e-45f, 3.4028235e38f, -3.4028235e38f, 1.0f};
        if (op < 10) {
            float v = specials[fuzz_next(&rng) % (sizeof specials / sizeof specials[0])];
            memcpy(floats + at, &v, 4);
        } else {
            size_t w = f.float_bytes - at < 32 ? f.float_bytes - at : 32;
            uint8_t tmp[32];
            memcpy(tmp, floats + at, w);
            size_t got = LLVMFuzzerMutate(tmp, w, w);
            memcpy(floats + at, tmp, got);
        }
        dgt_fix_crc(d, n);
        return n;
    }
    if (op < 14) {
        /* the member / block count, and the float area resized to what the header says */
        struct dgt g = f;
        uint32_t r = (uint32_t)(fuzz_next(&rng) % 8);
        if (checkpoint) {
            g.count = r < 3 ? 2 : r < 6 ? 3 : r; /* 2 and 3 are valid */
        } else if (f.version == 1 || r == 0) {
            g.version = 2;
            g.has_count = 1;
            g.count = r < 2 ? 1 + r : 2 + (uint32_t)(fuzz_next(&rng) % 3);
        } else {
            g.count = r == 1 ? 1 : 1 + (uint32_t)(fuzz_next(&rng) % 3);
            if (r == 2) {
                g.version = 1;
                g.has_count = 0;
                g.count = 1;
            }
        }
        if (g.params > ((uint64_t)1 << 28))
            return n;
        uint64_t want = (uint64_t)g.count * g.params * 4;
        if (want > max)
            return n;
        size_t one = (size_t)f.params * 4 < f.float_bytes ? (size_t)f.params * 4 : f.float_bytes;
        size_t m = dgt_emit(magic, &g, f.text, f.text_len, f.floats, one, (size_t)want, d, max);
        return m ? m : n;
    }
    /* any byte, the size kept at most */
    n = LLVMFuzzerMutate(d, n, n);
    if (op == 14)
        dgt_fix_crc(d, n);
    return n;
}

#endif
