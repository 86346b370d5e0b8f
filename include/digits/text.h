/* A growing text buffer written with printf formats (settings texts, the report's HTML). */
#ifndef DIGITS_TEXT_H
#define DIGITS_TEXT_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Zero-initialise ({0}); data is NUL-terminated once anything was added; free(data) after. An
 * allocation failure sets `failed` and makes later additions no-ops. */
struct dg_text {
    char *data;
    size_t size, capacity;
    int failed;
};

void dg_text_add(struct dg_text *t, const char *format, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void dg_text_addv(struct dg_text *t, const char *format, va_list args);
/* Appends bytes as they are. */
void dg_text_put(struct dg_text *t, const char *bytes, size_t size);

#ifdef __cplusplus
}
#endif

#endif
