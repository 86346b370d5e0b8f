/* PNG encoding into memory (src/io/png_write.c, libpng): the report's pictures. */
#ifndef DIGITS_PNG_H
#define DIGITS_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A grayscale image (width x height, one byte per pixel, rows top to bottom) as PNG bytes
 * (malloc'd into *png, *size), encoded by libpng. */
enum dg_status dg_png_encode_gray(const uint8_t *pixels, int width, int height,
                                  unsigned char **png, size_t *size);

#ifdef __cplusplus
}
#endif

#endif
