/* PNG encoding into memory with libpng (the report's pictures). */
#include "digits/png.h"

#include "digits/text.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* libpng's output into a growing buffer */
static void sink_write(png_structp png, png_bytep bytes, png_size_t length)
{
    dg_text_put(png_get_io_ptr(png), (const char *)bytes, length);
}

static void sink_flush(png_structp png)
{
    (void)png;
}

/* libpng reports errors by longjmp; its message is kept for dg_error */
static _Thread_local char png_message[160];

static void on_png_error(png_structp png, png_const_charp message)
{
    strncpy(png_message, message ? message : "libpng error", sizeof png_message - 1);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp message)
{
    (void)png, (void)message;
}

enum dg_status dg_png_encode_gray(const uint8_t *pixels, int width, int height,
                                  unsigned char **out, size_t *size)
{
    if (width < 1 || height < 1 || width > 1 << 16 || height > 1 << 16)
        return dg_error(DG_ERR_USAGE, "PNG of %dx%d pixels", width, height);
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        return dg_error(DG_ERR_NOMEM, "out of memory for a PNG");
    }
    /* volatile: read after a longjmp back here */
    struct dg_text sink = {0};
    struct dg_text *volatile t = &sink;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(t->data);
        return dg_error(DG_ERR_RUNTIME, "PNG encoding failed: %s", png_message);
    }
    png_set_write_fn(png, t, sink_write, sink_flush);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        png_write_row(png, (png_const_bytep)(pixels + (size_t)y * (size_t)width));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    if (sink.failed) {
        free(sink.data);
        return dg_error(DG_ERR_NOMEM, "out of memory for a PNG");
    }
    *out = (unsigned char *)sink.data;
    *size = sink.size;
    return DG_OK;
}
