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
/* Appends a float with the fewest significant digits (%g) that read back (strtof) as the very
 * same float: 0.001f is "0.001", 0.1000119f is "0.1000119", never "0.100012". */
void dg_text_add_float(struct dg_text *t, float value);

#ifdef __cplusplus
}
#endif

#endif
