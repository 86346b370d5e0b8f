/* Writes the seeds of the fuzz targets whose valid inputs are too large for the repository
 * (the reference network has 887,530 float parameters: a model file is 3.5 MB, a checkpoint
 * 7.1 or 10.7 MB), with the writers digits itself uses (dg_model_save, dg_ensemble_save,
 * dg_checkpoint_save, dg_export_safetensors[_ensemble]) and settings texts shaped as
 * `digits train` writes them:
 *   fuzz_make_seeds DIR   -> DIR/model/, DIR/checkpoint/, DIR/safetensors/ (files named below)
 * Besides the valid files, the regression inputs of issue 19's parser defects that need a
 * valid CRC: a model with a NaN parameter and a checkpoint with epochs=2000000000.
 * scripts/fuzz (and through it scripts/test) runs it into BUILD/seeds before fuzzing.
 *   fuzz_make_seeds --pictures DIR   -> the small PNG / JPEG / EXIF seeds committed in
 *                                       tests/fuzz/corpus/picture (libpng, libjpeg) */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <png.h>

#include "digits/checkpoint.h"
#include "digits/io.h"
#include "digits/model.h"
#include "digits/train.h"

static const char *dir;

static const char *at(const char *kind, const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, kind);
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", dir, kind, name);
    return path;
}

static void check(enum dg_status status, const char *what)
{
    if (status != DG_OK) {
        fprintf(stderr, "fuzz_make_seeds: %s: %s\n", what, dg_error_message());
        exit(1);
    }
}

static const char MODEL_SETTINGS[] =
    "digits_version=0.1.0\nbackend=cpu\ntrain_file=data/sample/train.csv.gz\nrows=5000\n"
    "data_crc32=1a2b3c4d\nepochs=2\nbatch=86\nlr=0.001\nrho=0.9\neps=1e-08\nval_split=0.1\n"
    "validation_rows=500\nseed=42\nsplit_seed=42\naugment=1\nfinal_val_accuracy=0.912000\n"
    "best_val_accuracy=0.912000\nbest_epoch=2\nseconds=12.5\nepochs_run=2\nsave_best=0\n"
    "early_stop=0\nweights_of_epoch=2\n";

static void build(struct dg_model *m, uint64_t seed)
{
    int n;
    const struct dg_layer_spec *ref = dg_arch_reference(&n);
    memset(m, 0, sizeof *m);
    check(dg_model_build(m, ref, n), "dg_model_build");
    dg_model_init_glorot(m, seed);
}

static void checkpoint(const struct dg_model *m, const char *name, int epochs, int save_best)
{
    struct dg_checkpoint ck;
    memset(&ck, 0, sizeof ck);
    dg_train_options_default(&ck.options);
    ck.options.epochs = 2;
    ck.options.save_best = save_best;
    check(dg_train_state_init(&ck.state, m->param_count, 2, save_best), "dg_train_state_init");
    struct dg_train_state *s = &ck.state;
    s->epoch = 1;
    s->lr = 0.001f;
    s->best_monitor = 0.9;
    s->best_val_accuracy = 0.9;
    s->best_epoch = 1;
    s->seconds = 6.25;
    s->history_count = 1;
    s->history[0] = (struct dg_epoch_report){1, 2, 0.5, 0.85, 0.3, 0.9, 0.001, 0.001, 800.0, 6.25};
    for (size_t i = 0; i < m->param_count; i++) {
        s->params[i] = m->params[i];
        s->rms_acc[i] = (float)(i % 97) * 1e-6f;
        if (s->best_params)
            s->best_params[i] = m->params[i] * 0.5f;
    }
    ck.data_rows = 5000;
    ck.data_crc32 = 0x1a2b3c4d;
    snprintf(ck.output, sizeof ck.output, "model.bin");
    snprintf(ck.train_file, sizeof ck.train_file, "data/sample/train.csv.gz");
    ck.options.epochs = epochs; /* written as is: the reader's range check is the point */
    check(dg_checkpoint_save(at("checkpoint", name), m, &ck), name);
    dg_train_state_free(&ck.state);
}


/* ---- pictures: a dark stroke (a "7") on a light background ---- */

static void draw(uint8_t *gray, int w, int h)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int ink = (y >= h / 5 && y < h / 5 + 2 + h / 14 && x >= w / 4 && x < 3 * w / 4) ||
                      (y >= h / 5 && y < 4 * h / 5 && abs((3 * w / 4 - x) - (y - h / 5) / 2) < 2);
            gray[y * w + x] = (uint8_t)(ink ? 20 + (x * 7 + y) % 30 : 230 - (x + y) % 9);
        }
}

static void png_file(const char *name, int w, int h, int color, int depth, int interlace)
{
    FILE *fp = fopen(at(".", name), "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!fp || !png || !info || setjmp(png_jmpbuf(png))) {
        fprintf(stderr, "fuzz_make_seeds: %s: cannot write\n", name);
        exit(1);
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color palette[16];
        png_byte alpha[16];
        for (int i = 0; i < 16; i++) {
            palette[i].red = (png_byte)(i * 17);
            palette[i].green = (png_byte)(255 - i * 17);
            palette[i].blue = (png_byte)(i * 5);
            alpha[i] = (png_byte)(i < 8 ? 255 : i * 16);
        }
        png_set_PLTE(png, info, palette, 16);
        png_set_tRNS(png, info, alpha, 16, NULL);
    }
    png_write_info(png, info);
    int channels = color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_PALETTE ? 1
                   : color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : color == PNG_COLOR_TYPE_RGB ? 3 : 4;
    uint8_t *gray = malloc((size_t)w * h);
    draw(gray, w, h);
    size_t stride = ((size_t)w * channels * depth + 7) / 8;
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    uint8_t *pixels = calloc((size_t)h, stride);
    for (int y = 0; y < h; y++) {
        rows[y] = pixels + (size_t)y * stride;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                int v = gray[y * w + x];
                if (color == PNG_COLOR_TYPE_PALETTE)
                    v >>= 4;
                else if (c == channels - 1 && (channels == 2 || channels == 4))
                    v = 255 - v / 2; /* alpha */
                size_t bit = ((size_t)x * channels + c) * depth;
                if (depth == 16) {
                    rows[y][bit / 8] = (uint8_t)v;
                    rows[y][bit / 8 + 1] = (uint8_t)(v * 3);
                } else if (depth == 8) {
                    rows[y][bit / 8] = (uint8_t)v;
                } else {
                    int q = v >> (8 - depth);
                    rows[y][bit / 8] |= (uint8_t)(q << (8 - depth - bit % 8));
                }
            }
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(fp);
    free(pixels);
    free(rows);
    free(gray);
}

static size_t tiff_orientation(unsigned char *b, int big, unsigned orientation)
{
    static const unsigned char le[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 1, 3, 0,
                                       1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char be[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 1, 0x12, 0, 3,
                                       0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(b, big ? be : le, sizeof le);
    b[big ? 19 : 18] = (unsigned char)orientation;
    return sizeof le;
}

static void jpeg_file(const char *name, int w, int h, int components, int progressive,
                      unsigned orientation)
{
    FILE *fp = fopen(at(".", name), "wb");
    if (!fp) {
        perror(name);
        exit(1);
    }
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, fp);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = components;
    c.in_color_space = components == 4 ? JCS_CMYK : components == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 75, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    if (orientation) {
        unsigned char app1[64] = "Exif\0\0";
        size_t n = 6 + tiff_orientation(app1 + 6, orientation % 2, orientation);
        jpeg_write_marker(&c, JPEG_APP0 + 1, app1, (unsigned)n);
    }
    uint8_t *gray = malloc((size_t)w * h);
    draw(gray, w, h);
    JSAMPLE *row = malloc((size_t)w * components);
    while (c.next_scanline < c.image_height) {
        for (int x = 0; x < w; x++)
            for (int k = 0; k < components; k++)
                row[x * components + k] =
                    (JSAMPLE)(components == 4 ? 255 - gray[c.next_scanline * w + x] / (k + 1)
                                              : gray[c.next_scanline * w + x] + k * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(fp);
    free(row);
    free(gray);
}

static void pictures(void)
{
    png_file("gray8.png", 28, 28, PNG_COLOR_TYPE_GRAY, 8, 0);
    png_file("gray1.png", 16, 12, PNG_COLOR_TYPE_GRAY, 1, 0);
    png_file("gray16-interlaced.png", 20, 24, PNG_COLOR_TYPE_GRAY, 16, 1);
    png_file("gray-alpha.png", 24, 20, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0);
    png_file("rgb8-interlaced.png", 30, 22, PNG_COLOR_TYPE_RGB, 8, 1);
    png_file("rgba16.png", 18, 18, PNG_COLOR_TYPE_RGB_ALPHA, 16, 0);
    png_file("palette-trns.png", 26, 30, PNG_COLOR_TYPE_PALETTE, 4, 0);
    png_file("one-pixel.png", 1, 1, PNG_COLOR_TYPE_GRAY, 8, 0);
    jpeg_file("gray.jpg", 28, 28, 1, 0, 0);
    jpeg_file("rgb-progressive.jpg", 40, 32, 3, 1, 0);
    jpeg_file("cmyk.jpg", 24, 24, 4, 0, 0);
    jpeg_file("exif-6-be.jpg", 32, 20, 3, 0, 6);
    jpeg_file("exif-3-le.jpg", 20, 28, 1, 0, 3);
    jpeg_file("exif-8-le-progressive.jpg", 22, 34, 1, 1, 8);
    jpeg_file("one-pixel.jpg", 1, 1, 1, 0, 0);
    unsigned char b[64];
    for (int big = 0; big < 2; big++) {
        size_t n = tiff_orientation(b, big, big ? 5 : 7);
        FILE *fp = fopen(at(".", big ? "tiff-be-5" : "tiff-le-7"), "wb");
        if (!fp || fwrite(b, 1, n, fp) != n || fclose(fp) != 0) {
            perror("tiff");
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    int pics = argc == 3 && strcmp(argv[1], "--pictures") == 0;
    if (argc != 2 && !pics) {
        fprintf(stderr, "usage: fuzz_make_seeds DIR | fuzz_make_seeds --pictures DIR\n");
        return 2;
    }
    dir = argv[argc - 1];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    if (pics) {
        pictures();
        return 0;
    }
    struct dg_model m[2];
    build(&m[0], 1);
    build(&m[1], 2);
    check(dg_model_save(at("model", "valid-v1"), &m[0], MODEL_SETTINGS), "valid-v1");
    check(dg_model_save(at("model", "valid-v1-no-settings"), &m[0], NULL), "no settings");
    check(dg_ensemble_save(at("model", "ensemble-2"), m, 2, MODEL_SETTINGS), "ensemble-2");
    /* issue 19: a NaN weight behind a valid CRC was accepted */
    float keep = m[0].params[12345];
    m[0].params[12345] = NAN;
    check(dg_model_save(at("model", "regress-nan-param"), &m[0], MODEL_SETTINGS), "nan");
    m[0].params[12345] = keep;

    checkpoint(&m[0], "valid-2-blocks", 2, 0);
    checkpoint(&m[0], "valid-3-blocks", 2, 1);
    /* issue 19: epochs=2000000000 sized the history from the text before any range check */
    checkpoint(&m[0], "regress-epochs-2000000000", 2000000000, 0);

    check(dg_export_safetensors(at("safetensors", "valid"), &m[0], MODEL_SETTINGS), "st");
    check(dg_export_safetensors_ensemble(at("safetensors", "ensemble-2"), m, 2, MODEL_SETTINGS),
          "st ensemble");
    dg_model_free(&m[0]);
    dg_model_free(&m[1]);

    /* a small network of --net (3,950 parameters: 16 KB files, fast to mutate): model,
     * ensemble, checkpoint and safetensors (with its digits.net metadata) */
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int count;
    check(dg_net_spec_parse("2C3L-P2-D0.5-F-10", specs, &count), "small spec");
    for (int i = 0; i < 2; i++) {
        memset(&m[i], 0, sizeof m[i]);
        check(dg_model_build(&m[i], specs, count), "small build");
        dg_model_init_glorot(&m[i], 3 + (uint64_t)i);
    }
    check(dg_model_save(at("model", "small-net"), &m[0], MODEL_SETTINGS), "small-net");
    check(dg_ensemble_save(at("model", "small-net-ensemble-2"), m, 2, MODEL_SETTINGS),
          "small ensemble");
    checkpoint(&m[0], "small-net", 2, 1);
    check(dg_export_safetensors_ensemble(at("safetensors", "small-net"), m, 2, MODEL_SETTINGS),
          "small st");
    dg_model_free(&m[0]);
    dg_model_free(&m[1]);
    return 0;
}
