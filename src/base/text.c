#include "digits/text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for `more` bytes and the NUL; 0 when that failed. */
static int reserve(struct dg_text *t, size_t more)
{
    if (t->failed)
        return 0;
    if (t->data && t->size + more < t->capacity)
        return 1;
    size_t capacity = t->capacity ? 2 * t->capacity : 4096;
    while (capacity < t->size + more + 1)
        capacity *= 2;
    char *grown = realloc(t->data, capacity);
    if (!grown) {
        t->failed = 1;
        return 0;
    }
    t->data = grown;
    t->capacity = capacity;
    return 1;
}

void dg_text_addv(struct dg_text *t, const char *format, va_list args)
{
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(NULL, 0, format, copy);
    va_end(copy);
    if (n < 0) {
        t->failed = 1;
        return;
    }
    if (!reserve(t, (size_t)n))
        return;
    vsnprintf(t->data + t->size, (size_t)n + 1, format, args);
    t->size += (size_t)n;
}

void dg_text_add(struct dg_text *t, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    dg_text_addv(t, format, args);
    va_end(args);
}

void dg_text_put(struct dg_text *t, const char *bytes, size_t size)
{
    if (!reserve(t, size))
        return;
    memcpy(t->data + t->size, bytes, size);
    t->size += size;
    t->data[t->size] = '\0';
}

void dg_text_add_float(struct dg_text *t, float value)
{
    char buf[32];
    if (!isfinite(value)) {
        dg_text_add(t, "%g", (double)value);
        return;
    }
    /* %.9g always reads back as the same float; fewer digits usually do, and read better */
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)value);
        if (strtof(buf, NULL) == value || digits == 9)
            break;
    }
    dg_text_add(t, "%s", buf);
}
