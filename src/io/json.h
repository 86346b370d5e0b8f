/* A small strict JSON parser (RFC 8259) for the safetensors header: the whole text must be one
 * value, optionally surrounded by whitespace; strings must be valid UTF-8 without raw control
 * characters; escapes and surrogate pairs are decoded; duplicate object keys are refused;
 * nesting is limited to DG_JSON_MAX_DEPTH and the values to DG_JSON_MAX_VALUES. Numbers keep
 * whether they are a non-negative integer that fits in 64 bits (the only numbers safetensors has).
 */
#ifndef DIGITS_IO_JSON_H
#define DIGITS_IO_JSON_H

#include <stddef.h>
#include <stdint.h>

#define DG_JSON_MAX_DEPTH 16
/* Values (of any type, keys not counted) a text may hold. The tree costs about 100 bytes a
 * value plus its strings, so this bounds the memory a hostile header can claim (about 100 MB)
 * while leaving far more room than a header needs (a tensor takes 6 + its dimensions). */
#define DG_JSON_MAX_VALUES (1 << 20)

enum dg_json_type {
    DG_JSON_NULL,
    DG_JSON_FALSE,
    DG_JSON_TRUE,
    DG_JSON_NUMBER,
    DG_JSON_STRING,
    DG_JSON_ARRAY,
    DG_JSON_OBJECT,
};

struct dg_json {
    enum dg_json_type type;
    size_t offset;     /* byte of the text where the value starts */
    size_t key_offset; /* a member of an object: byte where its key starts */
    char *string;      /* DG_JSON_STRING: decoded UTF-8, NUL-terminated */
    size_t length;     /* its length in bytes (it may contain NUL) */
    int is_uint;       /* DG_JSON_NUMBER: an integer 0..2^64-1 without fraction or exponent */
    uint64_t uint_value;
    size_t count; /* array / object: elements */
    char **keys;  /* object: decoded keys (NUL-terminated) */
    size_t *key_lengths;
    struct dg_json *items;
};

/* Parses text[0..length); 0 on success (*value filled, free with dg_json_free), otherwise -1
 * with "byte K: what was expected" in error (error_size bytes); -2 when out of memory. */
int dg_json_parse(const char *text, size_t length, struct dg_json *value, char *error,
                  size_t error_size);

void dg_json_free(struct dg_json *value);

/* The member `key` of an object, or NULL. */
const struct dg_json *dg_json_get(const struct dg_json *object, const char *key);

/* Length of the valid UTF-8 sequence at s (n >= 1 bytes available), 0 when it is not valid
 * UTF-8 (overlong forms, surrogates and code points above U+10FFFF are not). */
size_t dg_json_utf8_length(const unsigned char *s, size_t n);

/* A copy of text (malloc; NULL when out of memory) in which every byte that does not start a
 * valid UTF-8 sequence is replaced by U+FFFD. */
char *dg_json_utf8_clean(const char *text);

/* The name of a type for messages ("a string", "an object", ...). */
const char *dg_json_type_name(enum dg_json_type type);

#endif
