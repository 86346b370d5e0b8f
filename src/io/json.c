/* The strict JSON parser of src/io/json.h: recursive descent over a byte buffer, values into a
 * malloc'ed tree. Linear in the text: every byte is looked at a bounded number of times (a
 * string twice: once to size its buffer, once to decode it), object keys are checked for
 * repeats by sorting, and the tree holds at most DG_JSON_MAX_VALUES values. */
#include "io/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
    const unsigned char *text;
    size_t length, pos;
    int depth;
    long values; /* values begun so far, against DG_JSON_MAX_VALUES */
    int out_of_memory;
    char *error;
    size_t error_size;
};

static int fail_at(struct parser *p, size_t pos, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int fail_at(struct parser *p, size_t pos, const char *fmt, ...)
{
    if (p->error_size && !p->error[0] && !p->out_of_memory) {
        int n = snprintf(p->error, p->error_size, "byte %zu: ", pos);
        va_list args;
        va_start(args, fmt);
        if (n >= 0 && (size_t)n < p->error_size)
            vsnprintf(p->error + n, p->error_size - (size_t)n, fmt, args);
        va_end(args);
    }
    return -1;
}

static int out_of_memory(struct parser *p)
{
    p->out_of_memory = 1;
    return -1;
}

/* "'x'", "byte 0x81" or "the end" for the byte at p->pos. */
static const char *describe(const struct parser *p, char *buf, size_t size)
{
    if (p->pos >= p->length)
        return "the end of the header";
    unsigned char c = p->text[p->pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, size, "'%c'", c);
    else
        snprintf(buf, size, "byte 0x%02x", c);
    return buf;
}

static int expected(struct parser *p, const char *what)
{
    char buf[16];
    return fail_at(p, p->pos, "expected %s, found %s", what, describe(p, buf, sizeof buf));
}

static void skip_space(struct parser *p)
{
    while (p->pos < p->length && (p->text[p->pos] == ' ' || p->text[p->pos] == '\t' ||
                                  p->text[p->pos] == '\n' || p->text[p->pos] == '\r'))
        p->pos++;
}

static int literal(struct parser *p, const char *word, enum dg_json_type type, struct dg_json *v)
{
    size_t n = strlen(word);
    if (p->length - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
        return expected(p, "a value");
    v->type = type;
    p->pos += n;
    return 0;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int number(struct parser *p, struct dg_json *v)
{
    size_t start = p->pos;
    int negative = 0, integer = 1;
    uint64_t value = 0;
    int overflow = 0;
    if (p->text[p->pos] == '-') {
        negative = 1;
        p->pos++;
    }
    if (p->pos >= p->length || !is_digit(p->text[p->pos]))
        return expected(p, "a digit");
    if (p->text[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->length && is_digit(p->text[p->pos]))
            return fail_at(p, start, "a number with a leading zero");
    } else {
        while (p->pos < p->length && is_digit(p->text[p->pos])) {
            unsigned digit = (unsigned)(p->text[p->pos++] - '0');
            if (value > (UINT64_MAX - digit) / 10)
                overflow = 1;
            else
                value = value * 10 + digit;
        }
    }
    if (p->pos < p->length && p->text[p->pos] == '.') {
        integer = 0;
        p->pos++;
        if (p->pos >= p->length || !is_digit(p->text[p->pos]))
            return expected(p, "a digit after '.'");
        while (p->pos < p->length && is_digit(p->text[p->pos]))
            p->pos++;
    }
    if (p->pos < p->length && (p->text[p->pos] == 'e' || p->text[p->pos] == 'E')) {
        integer = 0;
        p->pos++;
        if (p->pos < p->length && (p->text[p->pos] == '+' || p->text[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->length || !is_digit(p->text[p->pos]))
            return expected(p, "a digit in the exponent");
        while (p->pos < p->length && is_digit(p->text[p->pos]))
            p->pos++;
    }
    v->type = DG_JSON_NUMBER;
    v->is_uint = integer && !negative && !overflow;
    v->uint_value = v->is_uint ? value : 0;
    return 0;
}

static int hex4(struct parser *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        if (p->pos >= p->length)
            return expected(p, "four hex digits after \\u");
        unsigned char c = p->text[p->pos];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return expected(p, "four hex digits after \\u");
        v = v * 16 + d;
        p->pos++;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t dg_json_utf8_length(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp, min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        len = 2;
        cp = c & 0x1fu;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        cp = c & 0x0fu;
        min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        cp = c & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A string at p->pos (the opening quote), decoded into a malloc'ed buffer. */
static int string(struct parser *p, char **out, size_t *out_length)
{
    size_t start = p->pos;
    if (p->pos >= p->length || p->text[p->pos] != '"')
        return expected(p, "'\"'");
    p->pos++;
    /* decoded text is never longer than the source */
    size_t end = p->pos;
    unsigned char *buf = NULL;
    size_t n = 0;
    while (end < p->length && p->text[end] != '"') {
        if (p->text[end] == '\\' && end + 1 < p->length)
            end++;
        end++;
    }
    buf = malloc(end - p->pos + 1);
    if (!buf)
        return out_of_memory(p);
    for (;;) {
        if (p->pos >= p->length) {
            free(buf);
            return fail_at(p, start, "a string without its closing '\"'");
        }
        unsigned char c = p->text[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            free(buf);
            return fail_at(p, p->pos, "a control character (0x%02x) in a string", c);
        }
        if (c != '\\') {
            size_t len = dg_json_utf8_length(p->text + p->pos, p->length - p->pos);
            if (!len) {
                free(buf);
                return fail_at(p, p->pos, "invalid UTF-8 in a string");
            }
            memcpy(buf + n, p->text + p->pos, len);
            n += len;
            p->pos += len;
            continue;
        }
        p->pos++;
        if (p->pos >= p->length) {
            free(buf);
            return fail_at(p, start, "a string without its closing '\"'");
        }
        unsigned char e = p->text[p->pos++];
        static const char plain_in[] = "\"\\/bfnrt", plain_out[] = "\"\\/\b\f\n\r\t";
        const char *hit = e ? strchr(plain_in, e) : NULL;
        if (hit) {
            buf[n++] = (unsigned char)plain_out[hit - plain_in];
            continue;
        }
        if (e != 'u') {
            free(buf);
            return fail_at(p, p->pos - 2, "an unknown escape '\\%c'",
                           e >= 0x20 && e < 0x7f ? e : '?');
        }
        size_t escape_at = p->pos - 2;
        unsigned cp = 0;
        if (hex4(p, &cp)) {
            free(buf);
            return -1;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            unsigned low = 0;
            if (p->length - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u') {
                free(buf);
                return fail_at(p, escape_at, "a high surrogate without its low surrogate");
            }
            p->pos += 2;
            if (hex4(p, &low)) {
                free(buf);
                return -1;
            }
            if (low < 0xdc00 || low > 0xdfff) {
                free(buf);
                return fail_at(p, escape_at, "a high surrogate without its low surrogate");
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            free(buf);
            return fail_at(p, escape_at, "a lone low surrogate");
        }
        n += put_utf8(buf + n, cp);
    }
    buf[n] = '\0';
    *out = (char *)buf;
    *out_length = n;
    return 0;
}

static int value(struct parser *p, struct dg_json *v);

static int grow(struct parser *p, struct dg_json *v, size_t *capacity, int object)
{
    if (v->count < *capacity)
        return 0;
    size_t cap = *capacity ? *capacity * 2 : 8;
    struct dg_json *items = realloc(v->items, cap * sizeof *items);
    if (!items)
        return out_of_memory(p);
    v->items = items;
    if (object) {
        char **keys = realloc(v->keys, cap * sizeof *keys);
        if (!keys)
            return out_of_memory(p);
        v->keys = keys;
        size_t *lengths = realloc(v->key_lengths, cap * sizeof *lengths);
        if (!lengths)
            return out_of_memory(p);
        v->key_lengths = lengths;
    }
    *capacity = cap;
    return 0;
}

static int array(struct parser *p, struct dg_json *v)
{
    size_t capacity = 0;
    v->type = DG_JSON_ARRAY;
    p->pos++; /* '[' */
    skip_space(p);
    if (p->pos < p->length && p->text[p->pos] == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (grow(p, v, &capacity, 0))
            return -1;
        struct dg_json *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        v->count++;
        skip_space(p);
        if (value(p, item))
            return -1;
        skip_space(p);
        if (p->pos < p->length && p->text[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->length && p->text[p->pos] == ']') {
            p->pos++;
            return 0;
        }
        return expected(p, "',' or ']'");
    }
}

struct key_ref {
    const char *key;
    size_t length;
    size_t index;
};

static int key_order(const void *a, const void *b)
{
    const struct key_ref *x = a, *y = b;
    if (x->length != y->length)
        return x->length < y->length ? -1 : 1;
    int c = memcmp(x->key, y->key, x->length);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Refuses an object whose keys are not distinct, naming the key whose second occurrence comes
 * first in the text (as a scan in order would). Sorting keeps it O(n log n) whatever the keys
 * are: no hash an adversary could flood. */
static int distinct_keys(struct parser *p, const struct dg_json *v)
{
    if (v->count < 2)
        return 0;
    struct key_ref *refs = malloc(v->count * sizeof *refs);
    if (!refs)
        return out_of_memory(p);
    for (size_t i = 0; i < v->count; i++)
        refs[i] = (struct key_ref){v->keys[i], v->key_lengths[i], i};
    qsort(refs, v->count, sizeof *refs, key_order);
    size_t first_repeat = v->count;
    for (size_t i = 1; i < v->count; i++)
        if (refs[i].length == refs[i - 1].length &&
            memcmp(refs[i].key, refs[i - 1].key, refs[i].length) == 0 &&
            refs[i].index < first_repeat)
            first_repeat = refs[i].index;
    free(refs);
    if (first_repeat == v->count)
        return 0;
    return fail_at(p, v->items[first_repeat].key_offset, "the key \"%s\" appears twice",
                   v->keys[first_repeat]);
}

static int object(struct parser *p, struct dg_json *v)
{
    size_t capacity = 0;
    v->type = DG_JSON_OBJECT;
    p->pos++; /* '{' */
    skip_space(p);
    if (p->pos < p->length && p->text[p->pos] == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_space(p);
        size_t key_at = p->pos;
        char *key;
        size_t key_length;
        if (p->pos >= p->length || p->text[p->pos] != '"')
            return expected(p, "a key (a string)");
        if (string(p, &key, &key_length))
            return -1;
        if (grow(p, v, &capacity, 1)) {
            free(key);
            return -1;
        }
        struct dg_json *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        item->key_offset = key_at;
        v->keys[v->count] = key;
        v->key_lengths[v->count] = key_length;
        v->count++;
        skip_space(p);
        if (p->pos >= p->length || p->text[p->pos] != ':')
            return expected(p, "':'");
        p->pos++;
        skip_space(p);
        if (value(p, item))
            return -1;
        skip_space(p);
        if (p->pos < p->length && p->text[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->length && p->text[p->pos] == '}') {
            p->pos++;
            return distinct_keys(p, v);
        }
        return expected(p, "',' or '}'");
    }
}

static int value(struct parser *p, struct dg_json *v)
{
    v->offset = p->pos;
    if (p->pos >= p->length)
        return expected(p, "a value");
    if (++p->values > DG_JSON_MAX_VALUES)
        return fail_at(p, p->pos, "more than %d values (the limit of a header)",
                       DG_JSON_MAX_VALUES);
    unsigned char c = p->text[p->pos];
    if (c == '{' || c == '[') {
        if (p->depth >= DG_JSON_MAX_DEPTH)
            return fail_at(p, p->pos, "nested deeper than %d levels", DG_JSON_MAX_DEPTH);
        p->depth++;
        int result = c == '{' ? object(p, v) : array(p, v);
        p->depth--;
        return result;
    }
    if (c == '"') {
        v->type = DG_JSON_STRING;
        return string(p, &v->string, &v->length);
    }
    if (c == '-' || is_digit(c))
        return number(p, v);
    if (c == 't')
        return literal(p, "true", DG_JSON_TRUE, v);
    if (c == 'f')
        return literal(p, "false", DG_JSON_FALSE, v);
    if (c == 'n')
        return literal(p, "null", DG_JSON_NULL, v);
    return expected(p, "a value");
}

int dg_json_parse(const char *text, size_t length, struct dg_json *v, char *error,
                  size_t error_size)
{
    struct parser p = {(const unsigned char *)text, length, 0, 0, 0, 0, error, error_size};
    if (error_size)
        error[0] = '\0';
    memset(v, 0, sizeof *v);
    skip_space(&p);
    int result = value(&p, v);
    if (result == 0) {
        skip_space(&p);
        if (p.pos != p.length)
            result = fail_at(&p, p.pos, "text after the end of the value");
    }
    if (result != 0) {
        dg_json_free(v);
        return p.out_of_memory ? -2 : -1;
    }
    return 0;
}

void dg_json_free(struct dg_json *v)
{
    if (!v)
        return;
    free(v->string);
    for (size_t i = 0; i < v->count; i++) {
        dg_json_free(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lengths);
    memset(v, 0, sizeof *v);
}

const struct dg_json *dg_json_get(const struct dg_json *object, const char *key)
{
    if (object->type != DG_JSON_OBJECT)
        return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < object->count; i++)
        if (object->key_lengths[i] == n && memcmp(object->keys[i], key, n) == 0)
            return &object->items[i];
    return NULL;
}

const char *dg_json_type_name(enum dg_json_type type)
{
    switch (type) {
    case DG_JSON_NULL:
        return "null";
    case DG_JSON_FALSE:
    case DG_JSON_TRUE:
        return "a boolean";
    case DG_JSON_NUMBER:
        return "a number";
    case DG_JSON_STRING:
        return "a string";
    case DG_JSON_ARRAY:
        return "an array";
    case DG_JSON_OBJECT:
        return "an object";
    }
    return "?";
}

char *dg_json_utf8_clean(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = strlen(text);
    char *out = malloc(3 * n + 1); /* U+FFFD is 3 bytes */
    if (!out)
        return NULL;
    size_t used = 0;
    while (*p) {
        size_t len = dg_json_utf8_length(p, n - (size_t)(p - (const unsigned char *)text));
        if (len) {
            memcpy(out + used, p, len);
            used += len;
            p += len;
        } else {
            memcpy(out + used, "\xef\xbf\xbd", 3);
            used += 3;
            p++;
        }
    }
    out[used] = '\0';
    return out;
}
