/* Pictures in: PNG and JPEG files decoded to 8-bit luminance (plus alpha when the file has
 * one), told apart by content (their signatures), not by name; and their preparation the way
 * MNIST's digits were made (grayscale, ink bright on black, cropped to the ink, the longer
 * side scaled to 20 pixels, the centre of mass placed at the centre of a 28x28 field).
 *
 * Decoding is src/io/picture.c (libpng, libjpeg-turbo's libjpeg API; every library error is
 * caught and becomes a DG_ERR_INPUT message naming the file, nothing is printed), preparing is
 * src/data/prepare.c. */
#ifndef DIGITS_PICTURE_H
#define DIGITS_PICTURE_H

#include <stddef.h>
#include <stdint.h>

#include "digits/data.h"
#include "digits/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Pictures larger than this are refused from their header, before anything is allocated. */
#define DG_PICTURE_MAX_PIXELS 100000000u /* 100 megapixels */
#define DG_PICTURE_MAX_SIDE 65535u       /* pixels, either side */

enum dg_picture_kind {
    DG_PICTURE_UNKNOWN = 0, /* neither signature */
    DG_PICTURE_PNG,         /* 89 50 4E 47 0D 0A 1A 0A */
    DG_PICTURE_JPEG,        /* FF D8 FF */
};

/* A decoded picture: width x height pixels, row-major, `channels` bytes each: 1 (luminance)
 * or 2 (luminance, then straight, not premultiplied, alpha). */
struct dg_picture {
    uint32_t width, height;
    int channels;
    uint8_t *pixels; /* malloc; width * height * channels bytes */
    enum dg_picture_kind kind;
    int orientation; /* the EXIF orientation (1..8) the picture was turned upright from; 1
                        when the file has none */
};

/* The kind told by the first bytes of a file (`size` of them; 8 are enough). */
enum dg_picture_kind dg_picture_sniff(const unsigned char *bytes, size_t size);

/* The kind of the file at `path` by its first bytes; DG_PICTURE_UNKNOWN for a file too short
 * or without a signature. DG_ERR_IO when it cannot be opened or read. */
enum dg_status dg_picture_kind_of_file(const char *path, enum dg_picture_kind *kind);

/* "PNG", "JPEG", "unknown". */
const char *dg_picture_kind_name(enum dg_picture_kind kind);

/* Decodes the PNG or JPEG file at `path` (any bit depth, palette, grayscale, colour, alpha,
 * interlaced or progressive): a JPEG's EXIF orientation is applied (the picture comes out
 * upright, as viewers show it; PNG's rare eXIf chunk is not read); colour becomes luminance (PNG: libpng's sRGB weights
 * 0.2126 R + 0.7152 G + 0.0722 B; JPEG: its Y channel; CMYK JPEGs are converted), 16-bit
 * samples are scaled to 8 bits, a palette's or tRNS transparency becomes alpha. Refuses, with
 * DG_ERR_INPUT and a message starting with `path`: a file that is neither, zero width or
 * height, more than DG_PICTURE_MAX_PIXELS or DG_PICTURE_MAX_SIDE (checked from the header,
 * before any image memory is allocated), truncated or corrupt data. DG_ERR_IO when the file
 * cannot be read, DG_ERR_NOMEM when memory runs out. `out` is left empty on failure. */
enum dg_status dg_picture_load(const char *path, struct dg_picture *out);

/* The Orientation tag (0x0112) of IFD0 of an EXIF block in TIFF layout (starting "II*\0" or
 * "MM\0*", as after a JPEG APP1's "Exif\0\0"): 1..8, or 1 when absent, out of range or
 * malformed (every offset is checked against size). */
int dg_picture_exif_orientation(const unsigned char *tiff, size_t size);

/* Turns a decoded picture upright from EXIF orientation 2..8 (2 mirrored left-right, 3 turned
 * 180 degrees, 4 mirrored top-bottom, 5 transposed, 6 stored turned 90 degrees
 * counter-clockwise (shown turned clockwise), 7 transversed, 8 stored turned 90 degrees
 * clockwise); 1 leaves it. Orientations 5-8 swap width and height. DG_ERR_NOMEM. */
enum dg_status dg_picture_orient(struct dg_picture *picture, int orientation);

void dg_picture_free(struct dg_picture *picture);

/* ---- preparation (src/data/prepare.c) ---- */

#define DG_PREPARE_BOX 20          /* the longer side of the ink's box in the 28x28 field */
#define DG_PREPARE_MIN_CONTRAST 24 /* ink weaker than this (of 255) against the background: blank */

/* What preparing found, for --show and for tests. */
struct dg_prepare_info {
    int background;          /* the background's luminance (0..255), after alpha compositing */
    int inverted;            /* 1: the ink was darker than the background (turned bright) */
    int contrast;            /* the strongest ink, 0..255 against the background */
    int alpha_background;    /* 0 or 255: what transparent pixels were composited over; -1 when
                                the picture has no transparency */
    uint32_t box_x, box_y, box_width, box_height; /* the ink's box in the picture */
    int scaled_width, scaled_height;              /* the box's size in the 28x28 field */
    int shift_x, shift_y;                         /* where the scaled box's top-left landed */
};

/* Prepares one picture as MNIST's digits were made; `image` receives 784 bytes (row-major,
 * ink bright on 0):
 *  1. transparency is composited over white or black: when most of the picture is
 *     transparent the visible part is the ink, so it goes over the opposite of its mean
 *     luminance; otherwise over the side (white or black) its mean luminance is nearer;
 *  2. the background is the median of the border pixels (the outermost ring, 1/32 of the
 *     shorter side wide, at least 1 pixel); the ink is on whichever side of it (darker or
 *     brighter) holds more of the picture's contrast; ink = |pixel - background| on that side,
 *     0 on the other, scaled so that the strongest ink is 255 (the picture is inverted when
 *     the ink was darker);
 *  3. ink below a quarter of the strongest marks the box (faint noise, JPEG ringing, paper
 *     texture do not); values under 1/8 of it are cleared;
 *  4. the box is resampled so that its longer side is 20 pixels, keeping the aspect ratio
 *     (area average when shrinking, bilinear when enlarging);
 *  5. it is placed in the 28x28 field, moved by whole pixels so that its centre of mass
 *     (pixel centres at 0..27) is at (14, 14) to within half a pixel, as in MNIST.
 * DG_ERR_INPUT "blank: ..." when no ink reaches DG_PREPARE_MIN_CONTRAST (no path in the
 * message: the caller prefixes it). `info` may be NULL. */
enum dg_status dg_picture_prepare(const struct dg_picture *picture, uint8_t image[DG_PIXELS],
                                  struct dg_prepare_info *info);

#ifdef __cplusplus
}
#endif

#endif
