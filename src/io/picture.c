/* Decoding PNG (libpng) and JPEG (libjpeg-turbo's libjpeg API) pictures into 8-bit luminance
 * (plus alpha), see include/digits/picture.h.
 *
 * Both libraries report errors through callbacks that must not return: ours record the
 * library's message and longjmp back to the decode function, which frees what it holds and
 * returns DG_ERR_INPUT naming the file. Warnings are never printed: libpng's are ignored
 * (harmless ones such as a known-incorrect sRGB profile are common); libjpeg's corrupt-data
 * warnings (premature end of file, bad Huffman code, ...) are errors, except "extraneous
 * bytes before marker", which some cameras write. The state a longjmp comes back to lives in
 * a job struct owned by the caller of the function that calls setjmp, so no local variable of
 * that function is modified between setjmp and longjmp. */
#include "digits/picture.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

static const unsigned char png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

enum dg_picture_kind dg_picture_sniff(const unsigned char *bytes, size_t size)
{
    if (size >= sizeof png_signature && memcmp(bytes, png_signature, sizeof png_signature) == 0)
        return DG_PICTURE_PNG;
    if (size >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
        return DG_PICTURE_JPEG;
    return DG_PICTURE_UNKNOWN;
}

const char *dg_picture_kind_name(enum dg_picture_kind kind)
{
    switch (kind) {
    case DG_PICTURE_PNG:
        return "PNG";
    case DG_PICTURE_JPEG:
        return "JPEG";
    default:
        return "unknown";
    }
}

enum dg_status dg_picture_kind_of_file(const char *path, enum dg_picture_kind *kind)
{
    unsigned char head[8];
    *kind = DG_PICTURE_UNKNOWN;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return dg_error_path(path, "open", 0, errno);
    size_t got = fread(head, 1, sizeof head, fp);
    int failed = ferror(fp);
    fclose(fp);
    if (failed)
        return dg_error(DG_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    *kind = dg_picture_sniff(head, got);
    return DG_OK;
}

/* DG_ERR_INPUT when width x height is empty or over the limits (nothing allocated yet). */
static enum dg_status check_size(const char *path, const char *kind, uint32_t width,
                                 uint32_t height)
{
    if (width == 0 || height == 0)
        return dg_error(DG_ERR_INPUT, "%s: the %s header declares %ux%u pixels: an empty picture",
                        path, kind, (unsigned)width, (unsigned)height);
    if (width > DG_PICTURE_MAX_SIDE || height > DG_PICTURE_MAX_SIDE ||
        (uint64_t)width * height > DG_PICTURE_MAX_PIXELS)
        return dg_error(DG_ERR_INPUT,
                        "%s: the %s header declares %ux%u pixels: too large (the limit is %u "
                        "megapixels and %u pixels a side)",
                        path, kind, (unsigned)width, (unsigned)height,
                        DG_PICTURE_MAX_PIXELS / 1000000u, DG_PICTURE_MAX_SIDE);
    return DG_OK;
}

/* ---- PNG ---- */

struct png_job {
    const char *path;
    FILE *fp;
    png_structp png;
    png_infop info;
    png_bytep *rows;
    struct dg_picture *out;
    jmp_buf jump;
    char message[200];
};

static void png_on_error(png_structp png, png_const_charp message)
{
    struct png_job *job = png_get_error_ptr(png);
    snprintf(job->message, sizeof job->message, "%s", message);
    longjmp(job->jump, 1);
}

static void png_on_warning(png_structp png, png_const_charp message)
{
    (void)png;
    (void)message;
}

/* fread through libpng; a short read is the file's end (truncation), an error. */
static void png_on_read(png_structp png, png_bytep data, size_t size)
{
    struct png_job *job = png_get_io_ptr(png);
    if (fread(data, 1, size, job->fp) != size)
        png_error(png, ferror(job->fp) ? "read error" : "the file ends early (truncated)");
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The size in the IHDR chunk (which must come first), checked before libpng reads anything;
 * the file is rewound. */
static enum dg_status png_check_header(const char *path, FILE *fp)
{
    unsigned char head[24];
    size_t got = fread(head, 1, sizeof head, fp);
    if (got < sizeof head)
        return dg_error(DG_ERR_INPUT, "%s: truncated PNG: %zu bytes, not even a header", path,
                        got);
    if (memcmp(head + 12, "IHDR", 4) != 0)
        return dg_error(DG_ERR_INPUT, "%s: corrupt PNG: the first chunk is not IHDR", path);
    enum dg_status status = check_size(path, "PNG", be32(head + 16), be32(head + 20));
    if (status == DG_OK && fseek(fp, 0, SEEK_SET) != 0)
        return dg_error(DG_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
    return status;
}

/* libpng's transformations to 8-bit luminance, with alpha when the file has any. */
static void png_set_gray8(png_structp png, png_infop info)
{
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (depth == 16)
        png_set_scale_16(png);
    if (color & PNG_COLOR_MASK_COLOR)
        png_set_rgb_to_gray_fixed(png, PNG_ERROR_ACTION_NONE, -1, -1);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

/* The decode proper; every libpng error comes back here through the longjmp. */
static enum dg_status png_decode(struct png_job *job)
{
    if (setjmp(job->jump))
        return dg_error(DG_ERR_INPUT, "%s: truncated or corrupt PNG: %s", job->path,
                        job->message);
    job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job, png_on_error, png_on_warning);
    if (!job->png || !(job->info = png_create_info_struct(job->png)))
        return dg_error(DG_ERR_NOMEM, "%s: out of memory for the PNG decoder", job->path);
    png_set_read_fn(job->png, job, png_on_read);
    png_read_info(job->png, job->info);
    png_set_gray8(job->png, job->info);
    struct dg_picture *out = job->out;
    out->width = png_get_image_width(job->png, job->info);
    out->height = png_get_image_height(job->png, job->info);
    out->channels = png_get_channels(job->png, job->info);
    size_t stride = png_get_rowbytes(job->png, job->info);
    if ((out->channels != 1 && out->channels != 2) ||
        stride != (size_t)out->width * (size_t)out->channels)
        return dg_error(DG_ERR_RUNTIME, "%s: unexpected PNG layout (%d channels)", job->path,
                        out->channels);
    out->pixels = malloc(stride * out->height);
    job->rows = malloc(out->height * sizeof *job->rows);
    if (!out->pixels || !job->rows)
        return dg_error(DG_ERR_NOMEM, "%s: out of memory for %ux%u pixels", job->path,
                        (unsigned)out->width, (unsigned)out->height);
    for (uint32_t y = 0; y < out->height; y++)
        job->rows[y] = out->pixels + (size_t)y * stride;
    png_read_image(job->png, job->rows);
    png_read_end(job->png, NULL);
    return DG_OK;
}

static enum dg_status load_png(const char *path, FILE *fp, struct dg_picture *out)
{
    enum dg_status status = png_check_header(path, fp);
    if (status != DG_OK)
        return status;
    struct png_job job;
    memset(&job, 0, sizeof job);
    job.path = path;
    job.fp = fp;
    job.out = out;
    status = png_decode(&job);
    png_destroy_read_struct(job.png ? &job.png : NULL, job.info ? &job.info : NULL, NULL);
    free(job.rows);
    return status;
}

/* ---- JPEG ---- */

struct jpeg_job {
    struct jpeg_error_mgr err; /* first: libjpeg hands callbacks cinfo->err */
    struct jpeg_decompress_struct cinfo;
    const char *path;
    FILE *fp;
    JSAMPLE *row; /* one CMYK row */
    struct dg_picture *out;
    jmp_buf jump;
    int code; /* the library's message code */
    char message[JMSG_LENGTH_MAX];
    int orientation; /* EXIF, 1 when none */
};

static void jpeg_on_error(j_common_ptr cinfo)
{
    struct jpeg_job *job = (struct jpeg_job *)cinfo->err;
    job->code = cinfo->err->msg_code;
    cinfo->err->format_message(cinfo, job->message);
    longjmp(job->jump, 1);
}

/* Warnings (level -1) about corrupt data are errors, except extraneous bytes before a marker;
 * trace messages (level >= 0) are dropped. Nothing is printed. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    if (level < 0 && cinfo->err->msg_code != JWRN_EXTRANEOUS_DATA)
        jpeg_on_error(cinfo);
}

static void jpeg_on_output(j_common_ptr cinfo)
{
    (void)cinfo;
}

/* Luminance of an Adobe (inverted) CMYK row, or of a plain one when `inverted` is 0. */
static void cmyk_to_gray(const JSAMPLE *cmyk, uint32_t width, int inverted, uint8_t *gray)
{
    for (uint32_t x = 0; x < width; x++) {
        const JSAMPLE *p = cmyk + 4 * (size_t)x;
        double c = inverted ? p[0] : 255 - p[0], m = inverted ? p[1] : 255 - p[1];
        double y = inverted ? p[2] : 255 - p[2], k = inverted ? p[3] : 255 - p[3];
        double lum = (0.299 * c + 0.587 * m + 0.114 * y) * k / 255.0;
        gray[x] = (uint8_t)(lum + 0.5);
    }
}

/* The decode proper; every libjpeg error (and corrupt-data warning) comes back here. */
static enum dg_status jpeg_decode(struct jpeg_job *job)
{
    struct jpeg_decompress_struct *cinfo = &job->cinfo;
    if (setjmp(job->jump)) {
        if (job->code == JWRN_JPEG_EOF)
            return dg_error(DG_ERR_INPUT, "%s: truncated JPEG: %s", job->path, job->message);
        return dg_error(DG_ERR_INPUT, "%s: corrupt JPEG: %s", job->path, job->message);
    }
    jpeg_create_decompress(cinfo);
    jpeg_stdio_src(cinfo, job->fp);
    jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF); /* EXIF */
    jpeg_read_header(cinfo, TRUE);
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0) {
            job->orientation = dg_picture_exif_orientation(m->data + 6, m->data_length - 6);
            break;
        }
    enum dg_status status = check_size(job->path, "JPEG", cinfo->image_width,
                                       cinfo->image_height);
    if (status != DG_OK)
        return status;
    int cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
    cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_GRAYSCALE;
    jpeg_start_decompress(cinfo);
    struct dg_picture *out = job->out;
    out->width = cinfo->output_width;
    out->height = cinfo->output_height;
    out->channels = 1;
    out->pixels = malloc((size_t)out->width * out->height);
    job->row = cmyk ? malloc((size_t)out->width * 4) : NULL;
    if (!out->pixels || (cmyk && !job->row))
        return dg_error(DG_ERR_NOMEM, "%s: out of memory for %ux%u pixels", job->path,
                        (unsigned)out->width, (unsigned)out->height);
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *dest = out->pixels + (size_t)cinfo->output_scanline * out->width;
        JSAMPROW row = cmyk ? job->row : dest;
        jpeg_read_scanlines(cinfo, &row, 1);
        if (cmyk)
            cmyk_to_gray(job->row, out->width, cinfo->saw_Adobe_marker, dest);
    }
    jpeg_finish_decompress(cinfo);
    return DG_OK;
}

static enum dg_status load_jpeg(const char *path, FILE *fp, struct dg_picture *out)
{
    struct jpeg_job *job = calloc(1, sizeof *job);
    if (!job)
        return dg_error(DG_ERR_NOMEM, "%s: out of memory for the JPEG decoder", path);
    job->cinfo.err = jpeg_std_error(&job->err);
    job->err.error_exit = jpeg_on_error;
    job->err.emit_message = jpeg_on_message;
    job->err.output_message = jpeg_on_output;
    job->path = path;
    job->fp = fp;
    job->out = out;
    job->orientation = 1;
    enum dg_status status = jpeg_decode(job);
    jpeg_destroy_decompress(&job->cinfo);
    if (status == DG_OK)
        status = dg_picture_orient(out, job->orientation);
    free(job->row);
    free(job);
    return status;
}

/* ---- EXIF orientation ---- */

static uint32_t tiff_u16(const unsigned char *p, int big)
{
    return big ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

static uint32_t tiff_u32(const unsigned char *p, int big)
{
    return big ? be32(p)
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

int dg_picture_exif_orientation(const unsigned char *tiff, size_t size)
{
    if (!tiff || size < 8)
        return 1;
    int big;
    if (memcmp(tiff, "II*\0", 4) == 0)
        big = 0;
    else if (memcmp(tiff, "MM\0*", 4) == 0)
        big = 1;
    else
        return 1;
    uint32_t ifd = tiff_u32(tiff + 4, big);
    if (ifd < 8 || ifd > size || size - ifd < 2)
        return 1;
    uint32_t entries = tiff_u16(tiff + ifd, big);
    if ((size - ifd - 2) / 12 < entries)
        return 1;
    for (uint32_t i = 0; i < entries; i++) {
        const unsigned char *e = tiff + ifd + 2 + 12 * (size_t)i;
        if (tiff_u16(e, big) != 0x0112)
            continue;
        /* SHORT (type 3), one value, held in the first two bytes of the value field */
        if (tiff_u16(e + 2, big) != 3 || tiff_u32(e + 4, big) != 1)
            return 1;
        uint32_t value = tiff_u16(e + 8, big);
        return value >= 1 && value <= 8 ? (int)value : 1;
    }
    return 1;
}

enum dg_status dg_picture_orient(struct dg_picture *p, int orientation)
{
    if (orientation <= 1 || orientation > 8)
        return DG_OK;
    uint32_t w = p->width, h = p->height;
    int swap = orientation >= 5;
    uint32_t ow = swap ? h : w, oh = swap ? w : h;
    size_t ch = (size_t)p->channels;
    uint8_t *out = malloc((size_t)w * h * ch);
    if (!out)
        return dg_error(DG_ERR_NOMEM, "out of memory to turn a %ux%u picture upright",
                        (unsigned)w, (unsigned)h);
    for (uint32_t y = 0; y < oh; y++)
        for (uint32_t x = 0; x < ow; x++) {
            uint32_t sx, sy; /* the stored pixel shown at (x, y) */
            switch (orientation) {
            case 2: sx = w - 1 - x, sy = y; break;
            case 3: sx = w - 1 - x, sy = h - 1 - y; break;
            case 4: sx = x, sy = h - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = h - 1 - x; break;
            case 7: sx = w - 1 - y, sy = h - 1 - x; break;
            default: sx = w - 1 - y, sy = x; break; /* 8 */
            }
            memcpy(out + ((size_t)y * ow + x) * ch, p->pixels + ((size_t)sy * w + sx) * ch, ch);
        }
    free(p->pixels);
    p->pixels = out;
    p->width = ow;
    p->height = oh;
    p->orientation = orientation;
    return DG_OK;
}

/* ---- both ---- */

enum dg_status dg_picture_load(const char *path, struct dg_picture *out)
{
    memset(out, 0, sizeof *out);
    out->orientation = 1;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return dg_error_path(path, "open", 0, errno);
    unsigned char head[8];
    size_t got = fread(head, 1, sizeof head, fp);
    enum dg_status status = DG_OK;
    out->kind = dg_picture_sniff(head, got);
    if (ferror(fp))
        status = dg_error(DG_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    else if (out->kind == DG_PICTURE_UNKNOWN)
        status = dg_error(DG_ERR_INPUT, "%s: not a PNG or JPEG picture (%s)", path,
                          got == 0 ? "an empty file" : "its first bytes are neither signature");
    else if (fseek(fp, 0, SEEK_SET) != 0)
        status = dg_error(DG_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
    else if (out->kind == DG_PICTURE_PNG)
        status = load_png(path, fp, out);
    else
        status = load_jpeg(path, fp, out);
    fclose(fp);
    if (status != DG_OK)
        dg_picture_free(out);
    return status;
}

void dg_picture_free(struct dg_picture *picture)
{
    free(picture->pixels);
    memset(picture, 0, sizeof *picture);
}
