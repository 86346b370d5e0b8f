/* Preparing a decoded picture as MNIST's digits were made (see dg_picture_prepare in
 * include/digits/picture.h for the steps and their thresholds): alpha compositing, the
 * background's level and the ink's polarity, the ink map (a 256-entry table from luminance),
 * the ink's box, a separable resampling of the box to 20 pixels on its longer side, and the
 * whole-pixel placement of its centre of mass at (14, 14) of the 28x28 field. */
#include "digits/picture.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIELD 28
#define CENTRE 14.0          /* MNIST's centre of mass, pixel centres at 0..27 */
#define BOX_THRESHOLD 64     /* of 255 (normalised ink): what marks the box */
#define CLEAR_THRESHOLD 32   /* of 255: fainter ink is cleared */
#define BORDER_FRACTION 32   /* the border ring is 1/32 of the shorter side wide */

/* ---- alpha ---- */

/* 255 (white) or 0 (black): what the transparent parts of a 2-channel picture go over (see
 * the header); -1 when every pixel is opaque. */
static int alpha_background(const struct dg_picture *p)
{
    size_t n = (size_t)p->width * p->height;
    uint64_t alpha = 0, weighted = 0;
    int transparent = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned g = p->pixels[2 * i], a = p->pixels[2 * i + 1];
        alpha += a;
        weighted += (uint64_t)a * g;
        transparent |= a != 255;
    }
    if (!transparent)
        return -1;
    if (alpha == 0)
        return 255; /* nothing visible: blank either way */
    int light = weighted >= (uint64_t)128 * alpha; /* alpha-weighted mean luminance >= 128 */
    int mostly_transparent = alpha * 2 < (uint64_t)255 * n;
    /* mostly transparent: the visible part is ink, composite over its opposite */
    return mostly_transparent ? (light ? 0 : 255) : (light ? 255 : 0);
}

/* Luminance composited over `background` (straight alpha), into a new plane. */
static uint8_t *composite(const struct dg_picture *p, int background)
{
    size_t n = (size_t)p->width * p->height;
    uint8_t *gray = malloc(n ? n : 1);
    if (!gray)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned g = p->pixels[2 * i], a = p->pixels[2 * i + 1];
        gray[i] = (uint8_t)((a * g + (255 - a) * (unsigned)background + 127) / 255);
    }
    return gray;
}

/* ---- background and ink ---- */

/* The median luminance of the outer ring of the picture. */
static int border_median(const uint8_t *gray, uint32_t width, uint32_t height)
{
    uint32_t shorter = width < height ? width : height;
    uint32_t ring = shorter / BORDER_FRACTION ? shorter / BORDER_FRACTION : 1;
    uint64_t histogram[256] = {0}, count = 0;
    for (uint32_t y = 0; y < height; y++) {
        const uint8_t *row = gray + (size_t)y * width;
        int full = y < ring || y >= height - ring;
        for (uint32_t x = 0; x < width; x++) {
            if (!full && x == ring && width > 2 * ring)
                x = width - ring; /* skip the inside of the row */
            histogram[row[x]]++;
            count++;
        }
    }
    uint64_t seen = 0;
    for (int v = 0; v < 256; v++)
        if ((seen += histogram[v]) * 2 >= count)
            return v;
    return 255;
}

/* Fills info->inverted and info->contrast: which side of the background holds more of the
 * contrast (summed over the picture's luminance histogram), and its strongest value. */
static void find_ink(const uint64_t histogram[256], int background, struct dg_prepare_info *info)
{
    uint64_t darker = 0, brighter = 0;
    int darkest = background, brightest = background;
    for (int v = 0; v < 256; v++) {
        if (!histogram[v])
            continue;
        if (v < background) {
            darker += histogram[v] * (uint64_t)(background - v);
            darkest = v < darkest ? v : darkest;
        } else if (v > background) {
            brighter += histogram[v] * (uint64_t)(v - background);
            brightest = v;
        }
    }
    info->inverted = darker > brighter;
    info->contrast = info->inverted ? background - darkest : brightest - background;
}

/* The ink map: luminance -> ink 0..255 (the strongest ink 255, faint ink cleared). */
static void ink_table(const struct dg_prepare_info *info, uint8_t table[256])
{
    for (int v = 0; v < 256; v++) {
        int ink = info->inverted ? info->background - v : v - info->background;
        int scaled = ink <= 0 ? 0 : (ink * 255 + info->contrast / 2) / info->contrast;
        table[v] = (uint8_t)(scaled < CLEAR_THRESHOLD ? 0 : scaled > 255 ? 255 : scaled);
    }
}

/* The smallest box holding every pixel whose ink reaches BOX_THRESHOLD (one exists: the
 * strongest ink maps to 255). */
static void ink_box(const uint8_t *gray, uint32_t width, uint32_t height,
                    const uint8_t table[256], struct dg_prepare_info *info)
{
    uint32_t x0 = width, y0 = height, x1 = 0, y1 = 0;
    for (uint32_t y = 0; y < height; y++) {
        const uint8_t *row = gray + (size_t)y * width;
        for (uint32_t x = 0; x < width; x++)
            if (table[row[x]] >= BOX_THRESHOLD) {
                x0 = x < x0 ? x : x0;
                x1 = x > x1 ? x : x1;
                y0 = y < y0 ? y : y0;
                y1 = y;
            }
    }
    info->box_x = x0;
    info->box_y = y0;
    info->box_width = x1 - x0 + 1;
    info->box_height = y1 - y0 + 1;
}

/* ---- resampling ---- */

/* The weights of one axis: output o takes taps[o * span + j] of source first[o] + j. */
struct axis {
    int out;
    uint32_t span;
    uint32_t *first;
    float *taps;
};

static void axis_free(struct axis *a)
{
    free(a->first);
    free(a->taps);
}

/* Weights taking `in` source pixels to `out` output pixels: the area each output pixel covers
 * when shrinking (box filter with fractional overlaps), bilinear when enlarging. */
static int axis_weights(uint32_t in, int out, struct axis *a)
{
    double f = (double)out / in; /* output pixels per source pixel */
    a->out = out;
    a->span = f < 1.0 ? (uint32_t)ceil(1.0 / f) + 1 : 2;
    a->first = calloc((size_t)out, sizeof *a->first);
    a->taps = calloc((size_t)out * a->span, sizeof *a->taps);
    if (!a->first || !a->taps)
        return 0;
    for (int o = 0; o < out; o++) {
        float *w = a->taps + (size_t)o * a->span;
        if (f < 1.0) {
            double lo = o / f, hi = (o + 1) / f;
            uint32_t i = (uint32_t)floor(lo);
            a->first[o] = i;
            for (uint32_t j = 0; j < a->span && i + j < in; j++) {
                double s = fmax(lo, i + j), e = fmin(hi, i + j + 1.0);
                w[j] = e > s ? (float)((e - s) * f) : 0.0f;
            }
        } else {
            double s = (o + 0.5) / f - 0.5;
            double i = floor(s), t = s - i;
            uint32_t i0 = s <= 0 ? 0 : (uint32_t)i;
            a->first[o] = i0 + 1 < in ? i0 : in - 1;
            w[0] = s <= 0 || i0 + 1 >= in ? 1.0f : (float)(1.0 - t);
            w[1] = s <= 0 || i0 + 1 >= in ? 0.0f : (float)t;
        }
    }
    return 1;
}

/* The box's ink resampled to xs.out x ys.out (row-major floats into out): rows first into
 * a (box height) x xs.out buffer, then columns. */
static int resample_box(const uint8_t *gray, uint32_t width, const uint8_t table[256],
                        const struct dg_prepare_info *info, const struct axis *xs,
                        const struct axis *ys, float *out)
{
    float *rows = calloc((size_t)info->box_height * xs->out, sizeof *rows);
    if (!rows)
        return 0;
    for (uint32_t y = 0; y < info->box_height; y++) {
        const uint8_t *src = gray + (size_t)(info->box_y + y) * width + info->box_x;
        for (int o = 0; o < xs->out; o++) {
            const float *w = xs->taps + (size_t)o * xs->span;
            double sum = 0;
            for (uint32_t j = 0; j < xs->span && xs->first[o] + j < info->box_width; j++)
                sum += w[j] * table[src[xs->first[o] + j]];
            rows[(size_t)y * xs->out + o] = (float)sum;
        }
    }
    for (int o = 0; o < ys->out; o++) {
        const float *w = ys->taps + (size_t)o * ys->span;
        for (int x = 0; x < xs->out; x++) {
            double sum = 0;
            for (uint32_t j = 0; j < ys->span && ys->first[o] + j < info->box_height; j++)
                sum += w[j] * rows[(size_t)(ys->first[o] + j) * xs->out + x];
            out[o * xs->out + x] = (float)sum;
        }
    }
    free(rows);
    return 1;
}

/* ---- placement ---- */

/* The scaled box (w x h floats) into the 28x28 field, moved by whole pixels so that its centre
 * of mass lands at (CENTRE, CENTRE); what falls outside the field is lost, as in MNIST. */
static void place(const float *scaled, int w, int h, uint8_t image[DG_PIXELS],
                  struct dg_prepare_info *info)
{
    double mass = 0, mx = 0, my = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double v = scaled[y * w + x];
            mass += v;
            mx += v * x;
            my += v * y;
        }
    info->shift_x = mass > 0 ? (int)lround(CENTRE - mx / mass) : (FIELD - w) / 2;
    info->shift_y = mass > 0 ? (int)lround(CENTRE - my / mass) : (FIELD - h) / 2;
    memset(image, 0, DG_PIXELS);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int fx = x + info->shift_x, fy = y + info->shift_y;
            if (fx < 0 || fy < 0 || fx >= FIELD || fy >= FIELD)
                continue;
            double v = scaled[y * w + x] + 0.5;
            image[fy * FIELD + fx] = (uint8_t)(v >= 255 ? 255 : v < 0 ? 0 : v);
        }
}

/* The box's size in the field: its longer side DG_PREPARE_BOX, the aspect ratio kept. */
static void scaled_size(struct dg_prepare_info *info)
{
    uint32_t longer = info->box_width > info->box_height ? info->box_width : info->box_height;
    double f = (double)DG_PREPARE_BOX / longer;
    long w = lround(info->box_width * f), h = lround(info->box_height * f);
    info->scaled_width = w < 1 ? 1 : (int)w;
    info->scaled_height = h < 1 ? 1 : (int)h;
}

/* Box -> scaled float image -> field. */
static enum dg_status scale_and_place(const uint8_t *gray, uint32_t width,
                                      const uint8_t table[256], struct dg_prepare_info *info,
                                      uint8_t image[DG_PIXELS])
{
    scaled_size(info);
    struct axis xs = {0}, ys = {0};
    float scaled[DG_PREPARE_BOX * DG_PREPARE_BOX];
    int ok = axis_weights(info->box_width, info->scaled_width, &xs) &&
             axis_weights(info->box_height, info->scaled_height, &ys) &&
             resample_box(gray, width, table, info, &xs, &ys, scaled);
    axis_free(&xs);
    axis_free(&ys);
    if (!ok)
        return dg_error(DG_ERR_NOMEM, "out of memory resampling a %ux%u box",
                        (unsigned)info->box_width, (unsigned)info->box_height);
    place(scaled, info->scaled_width, info->scaled_height, image, info);
    return DG_OK;
}

enum dg_status dg_picture_prepare(const struct dg_picture *picture, uint8_t image[DG_PIXELS],
                                  struct dg_prepare_info *info)
{
    struct dg_prepare_info local;
    info = info ? info : &local;
    memset(info, 0, sizeof *info);
    info->alpha_background = picture->channels == 2 ? alpha_background(picture) : -1;
    const uint8_t *gray = picture->pixels;
    uint8_t *owned = NULL;
    if (picture->channels == 2) {
        /* opaque: the luminance plane still has to be taken out of the pairs */
        gray = owned = composite(picture, info->alpha_background < 0 ? 0 : info->alpha_background);
        if (!owned)
            return dg_error(DG_ERR_NOMEM, "out of memory for %ux%u pixels",
                            (unsigned)picture->width, (unsigned)picture->height);
    }
    uint32_t w = picture->width, h = picture->height;
    uint64_t histogram[256] = {0};
    for (size_t i = 0; i < (size_t)w * h; i++)
        histogram[gray[i]]++;
    info->background = border_median(gray, w, h);
    find_ink(histogram, info->background, info);
    enum dg_status status = DG_OK;
    if (info->contrast < DG_PREPARE_MIN_CONTRAST) {
        status = dg_error(DG_ERR_INPUT,
                          "blank: no ink (the strongest contrast with the background, %d, is "
                          "under %d of 255)",
                          info->contrast, DG_PREPARE_MIN_CONTRAST);
    } else {
        uint8_t table[256];
        ink_table(info, table);
        ink_box(gray, w, h, table, info);
        status = scale_and_place(gray, w, table, info, image);
    }
    free(owned);
    return status;
}
