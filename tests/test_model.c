/* The layer table (shapes, the 887,530 parameters), Glorot initialisation, and the model
 * file: round trip and every refusal (truncated, corrupted, other version, other
 * architecture, not a model). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cli_util.h"
#include "digits/io.h"
#include "digits/model.h"
#include "digits/text.h"

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/digits-test-model-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void build_reference(struct dg_model *model)
{
    int count;
    const struct dg_layer_spec *specs = dg_arch_reference(&count);
    ck_assert_int_eq(dg_model_build(model, specs, count), DG_OK);
}

START_TEST(reference_shapes_and_count)
{
    struct dg_model model;
    build_reference(&model);
    ck_assert_uint_eq(model.param_count, 887530);
    ck_assert_int_eq(model.layer_count, 12);
    static const struct {
        const char *name;
        int c, h, w;
        size_t params;
    } expected[] = {
        {"conv1", 32, 28, 28, 832},    {"conv2", 32, 28, 28, 25632}, {"pool1", 32, 14, 14, 0},
        {"dropout1", 32, 14, 14, 0},   {"conv3", 64, 14, 14, 18496}, {"conv4", 64, 14, 14, 36928},
        {"pool2", 64, 7, 7, 0},        {"dropout2", 64, 7, 7, 0},    {"flatten1", 3136, 1, 1, 0},
        {"dense1", 256, 1, 1, 803072}, {"dropout3", 256, 1, 1, 0},   {"dense2", 10, 1, 1, 2570},
    };
    for (int i = 0; i < 12; i++) {
        const struct dg_layer *layer = &model.layers[i];
        ck_assert_str_eq(layer->name, expected[i].name);
        ck_assert_int_eq(layer->out_c, expected[i].c);
        ck_assert_int_eq(layer->out_h, expected[i].h);
        ck_assert_int_eq(layer->out_w, expected[i].w);
        ck_assert_uint_eq(layer->weight_count + layer->bias_count, expected[i].params);
    }
    ck_assert_int_eq(model.layers[3].dropout_ordinal, 0);
    ck_assert_int_eq(model.layers[7].dropout_ordinal, 1);
    ck_assert_int_eq(model.layers[10].dropout_ordinal, 2);
    ck_assert_uint_eq(dg_model_max_activation(&model), 32 * 28 * 28);
    dg_model_free(&model);
}
END_TEST

START_TEST(bad_architectures_refused)
{
    struct dg_model model;
    struct dg_layer_spec dense_first[] = {{DG_LAYER_DENSE, 10, 0, 0, 0.0f, 0, 0}};
    ck_assert_int_eq(dg_model_build(&model, dense_first, 1), DG_ERR_INPUT);
    struct dg_layer_spec even_kernel[] = {{DG_LAYER_CONV, 8, 4, 1, 0.0f, 0, 0},
                                          {DG_LAYER_FLATTEN, 0, 0, 0, 0.0f, 0, 0},
                                          {DG_LAYER_DENSE, 10, 0, 0, 0.0f, 0, 0}};
    ck_assert_int_eq(dg_model_build(&model, even_kernel, 3), DG_ERR_INPUT);
    struct dg_layer_spec wrong_classes[] = {{DG_LAYER_FLATTEN, 0, 0, 0, 0.0f, 0, 0},
                                            {DG_LAYER_DENSE, 9, 0, 0, 0.0f, 0, 0}};
    ck_assert_int_eq(dg_model_build(&model, wrong_classes, 2), DG_ERR_INPUT);
    struct dg_layer_spec bad_rate[] = {{DG_LAYER_FLATTEN, 0, 0, 0, 0.0f, 0, 0},
                                       {DG_LAYER_DROPOUT, 0, 0, 0, 1.0f, 0, 0},
                                       {DG_LAYER_DENSE, 10, 0, 0, 0.0f, 0, 0}};
    ck_assert_int_eq(dg_model_build(&model, bad_rate, 3), DG_ERR_INPUT);
}
END_TEST

START_TEST(glorot_limits_zero_bias_and_determinism)
{
    struct dg_model a, b;
    build_reference(&a);
    build_reference(&b);
    dg_model_init_glorot(&a, 7);
    dg_model_init_glorot(&b, 7);
    ck_assert_int_eq(memcmp(a.params, b.params, a.param_count * sizeof(float)), 0);
    dg_model_init_glorot(&b, 8);
    ck_assert_int_ne(memcmp(a.params, b.params, a.param_count * sizeof(float)), 0);
    /* conv2: fan_in = 32*25, fan_out = 32*25 -> limit sqrt(6/1600) */
    const struct dg_layer *conv2 = &a.layers[1];
    /* one assertion per property, not per weight: Check records every passing assertion (a
     * write to its message file), which dominated this test under qemu-user */
    double limit = sqrt(6.0 / 1600.0), max_abs = 0.0, sum = 0.0;
    size_t outside = 0;
    for (size_t k = 0; k < conv2->weight_count; k++) {
        double w = a.params[conv2->weight_offset + k];
        outside += !(fabs(w) <= limit);
        max_abs = fmax(max_abs, fabs(w));
        sum += w;
    }
    ck_assert_uint_eq(outside, 0);
    ck_assert(max_abs > 0.99 * limit);
    ck_assert(fabs(sum / (double)conv2->weight_count) < 0.02 * limit);
    size_t nonzero_bias = 0;
    for (size_t k = 0; k < conv2->bias_count; k++)
        nonzero_bias += a.params[conv2->bias_offset + k] != 0.0f;
    ck_assert_uint_eq(nonzero_bias, 0);
    /* dense1: fan_in 3136, fan_out 256 */
    const struct dg_layer *dense1 = &a.layers[9];
    double dense_limit = sqrt(6.0 / (3136.0 + 256.0));
    for (size_t k = 0; k < dense1->weight_count; k++)
        outside += !(fabs(a.params[dense1->weight_offset + k]) <= dense_limit);
    ck_assert_uint_eq(outside, 0);
    dg_model_free(&a);
    dg_model_free(&b);
}
END_TEST

static char *path_in_tmp(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n);
    ck_assert_uint_eq(fread(data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *size = (size_t)n;
    return data;
}

static void write_file(const char *path, const unsigned char *data, size_t size)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
}

START_TEST(model_file_round_trip)
{
    make_tmpdir();
    struct dg_model model, loaded;
    build_reference(&model);
    dg_model_init_glorot(&model, 3);
    model.params[model.param_count - 1] = 0.125f;
    const char *path = path_in_tmp("m.dgt");
    ck_assert_int_eq(dg_model_save(path, &model, "epochs=2\nseed=3\n"), DG_OK);
    char settings[256];
    ck_assert_int_eq(dg_model_load(path, &loaded, settings, sizeof settings), DG_OK);
    ck_assert_str_eq(settings, "epochs=2\nseed=3\n");
    ck_assert_uint_eq(loaded.param_count, model.param_count);
    ck_assert_int_eq(memcmp(loaded.params, model.params, model.param_count * sizeof(float)), 0);
    size_t size;
    unsigned char *data = read_file(path, &size);
    ck_assert_uint_eq(size,
                      8 + 4 + 4 + 12 * 20 + 12 + strlen("epochs=2\nseed=3\n") + 887530 * 4 + 4);
    ck_assert_int_eq(memcmp(data, "DGTMODEL", 8), 0);
    free(data);
    /* nothing but the model itself is left in the directory */
    char command[600];
    snprintf(command, sizeof command, "test $(ls -A %s | wc -l) -eq 1", tmpdir);
    ck_assert_int_eq(system(command), 0);
    dg_model_free(&model);
    dg_model_free(&loaded);
}
END_TEST

/* Saves a reference model, applies `mutate` to its bytes and expects a refusal whose message
 * contains `needle`. */
static void expect_refusal(void (*mutate)(unsigned char *data, size_t *size), const char *needle)
{
    make_tmpdir();
    struct dg_model model, loaded;
    build_reference(&model);
    dg_model_init_glorot(&model, 1);
    const char *path = path_in_tmp("m.dgt");
    ck_assert_int_eq(dg_model_save(path, &model, "a=1\n"), DG_OK);
    size_t size;
    unsigned char *data = read_file(path, &size);
    mutate(data, &size);
    write_file(path, data, size);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_ERR_INPUT);
    if (!strstr(dg_error_message(), needle))
        ck_abort_msg("message '%s' lacks '%s'", dg_error_message(), needle);
    ck_assert_ptr_null(loaded.params);
    free(data);
    dg_model_free(&model);
}

static void truncate_tail(unsigned char *data, size_t *size)
{
    (void)data;
    *size -= 1000;
}
static void truncate_header(unsigned char *data, size_t *size)
{
    (void)data;
    *size = 30;
}
static void flip_param_bit(unsigned char *data, size_t *size)
{
    data[*size / 2] ^= 0x10;
}
static void bump_version(unsigned char *data, size_t *size)
{
    (void)size;
    data[8] = 3;
}
static void bad_magic(unsigned char *data, size_t *size)
{
    (void)size;
    memcpy(data, "NOTMODEL", 8);
}
static void extra_bytes(unsigned char *data, size_t *size)
{
    data[*size] = 0;
    *size += 1;
}

START_TEST(refuses_truncated)
{
    expect_refusal(truncate_tail, "truncated model file");
    expect_refusal(truncate_header, "truncated model file");
}
END_TEST

START_TEST(refuses_corrupted)
{
    expect_refusal(flip_param_bit, "corrupted model file (CRC32");
}
END_TEST

START_TEST(refuses_other_version)
{
    expect_refusal(bump_version, "model format version 3, this digits reads versions 1 and 2");
}
END_TEST

START_TEST(refuses_not_a_model)
{
    expect_refusal(bad_magic, "not a digits model file");
}
END_TEST

START_TEST(refuses_trailing_bytes)
{
    make_tmpdir();
    struct dg_model model, loaded;
    build_reference(&model);
    const char *path = path_in_tmp("m.dgt");
    ck_assert_int_eq(dg_model_save(path, &model, ""), DG_OK);
    size_t size;
    unsigned char *data = read_file(path, &size);
    data = realloc(data, size + 1);
    extra_bytes(data, &size);
    write_file(path, data, size);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_ERR_INPUT);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "corrupted model file"));
    free(data);
    dg_model_free(&model);
}
END_TEST

/* Another network than the reference: saved and loaded with its table and parameters. */
START_TEST(other_architectures_round_trip)
{
    make_tmpdir();
    struct dg_layer_spec small[] = {{DG_LAYER_CONV, 4, 3, 1, 0.0f, 0, 0},
                                    {DG_LAYER_MAXPOOL, 0, 0, 0, 0.0f, 0, 0},
                                    {DG_LAYER_DROPOUT, 0, 0, 0, 0.125f, 0, 0},
                                    {DG_LAYER_FLATTEN, 0, 0, 0, 0.0f, 0, 0},
                                    {DG_LAYER_DENSE, 10, 0, 0, 0.0f, 0, 0}};
    struct dg_model model, loaded;
    ck_assert_int_eq(dg_model_build(&model, small, 5), DG_OK);
    ck_assert_uint_eq(model.param_count, 4 * 9 + 4 + 4 * 14 * 14 * 10 + 10);
    dg_model_init_glorot(&model, 5);
    const char *path = path_in_tmp("small.dgt");
    ck_assert_int_eq(dg_model_save(path, &model, ""), DG_OK);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_OK);
    ck_assert_int_eq(loaded.layer_count, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(loaded.layers[i].spec.kind, small[i].kind);
        ck_assert_int_eq(loaded.layers[i].spec.units, small[i].units);
        ck_assert(loaded.layers[i].spec.rate == small[i].rate);
    }
    ck_assert_uint_eq(loaded.param_count, model.param_count);
    ck_assert_int_eq(memcmp(loaded.params, model.params, model.param_count * sizeof(float)), 0);
    dg_model_free(&loaded);

    /* a table that builds no network (the last layer made 9 units, the CRC written back) is
     * refused as corrupted before anything is allocated */
    size_t size;
    unsigned char *data = read_file(path, &size);
    unsigned char *units = data + 16 + 4 * 20 + 4; /* layer 5's units */
    units[0] = 9;
    uint32_t crc = (uint32_t)crc32(0L, data, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        data[size - 4 + (size_t)i] = (unsigned char)(crc >> (8 * i));
    const char *bad = path_in_tmp("nine.dgt");
    FILE *fp = fopen(bad, "wb");
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
    ck_assert_int_eq(dg_model_load(bad, &loaded, NULL, 0), DG_ERR_INPUT);
    ck_assert_msg(strstr(dg_error_message(), "nine.dgt: corrupted model file: architecture: the "
                                             "last layer must be a dense layer of 10 units") !=
                      NULL,
                  "%s", dg_error_message());
    /* a table of more parameters than the file holds */
    units[0] = 10;
    data[16 + 4] = 5; /* conv1: 5 filters */
    crc = (uint32_t)crc32(0L, data, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        data[size - 4 + (size_t)i] = (unsigned char)(crc >> (8 * i));
    fp = fopen(bad, "wb");
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
    ck_assert_int_eq(dg_model_load(bad, &loaded, NULL, 0), DG_ERR_INPUT);
    ck_assert_msg(strstr(dg_error_message(), "(7890 parameters, the architecture has 9860)") !=
                      NULL,
                  "%s", dg_error_message());
    free(data);
    dg_model_free(&model);
}
END_TEST

/* --net: the reference preset is the reference table; specs read back in canonical form. */
START_TEST(net_spec_parses_and_formats)
{
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int count, ref_count;
    const struct dg_layer_spec *ref = dg_arch_reference(&ref_count);
    ck_assert_int_eq(dg_net_spec_parse("reference", specs, &count), DG_OK);
    ck_assert_int_eq(count, ref_count);
    for (int i = 0; i < count; i++) {
        ck_assert_int_eq(specs[i].kind, ref[i].kind);
        ck_assert_int_eq(specs[i].units, ref[i].units);
        ck_assert_int_eq(specs[i].kernel, ref[i].kernel);
        ck_assert_int_eq(specs[i].relu, ref[i].relu);
        ck_assert(specs[i].rate == ref[i].rate);
    }
    char text[DG_NET_SPEC_MAX + 1];
    dg_net_spec_format(ref, ref_count, text, sizeof text);
    ck_assert_str_eq(text, dg_net_preset("reference"));
    ck_assert_str_eq(text, "32C5-32C5-P2-D0.25-64C3-64C3-P2-D0.25-F-256-D0.5-10");
    /* lower case, flatten implied, L (no ReLU), the classifier's L optional */
    static const struct {
        const char *given, *canonical;
        int layers;
    } cases[] = {
        {"32c3-p2-64-10", "32C3-P2-F-64-10", 5},
        {"8C1L-D0.1-10L", "8C1L-D0.1-F-10", 4},
        {"F-10", "F-10", 2},
        {"10", "F-10", 2},
        {"16C7-P2-P2-P2-F-D.5-128L-10", "16C7-P2-P2-P2-F-D0.5-128L-10", 8},
        /* global average pooling leaves the tensor flat: no flatten is implied after it */
        {"16c3-g-b-10", "16C3-G-B-10", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_msg(dg_net_spec_parse(cases[i].given, specs, &count) == DG_OK, "%s: %s",
                      cases[i].given, dg_error_message());
        ck_assert_int_eq(count, cases[i].layers);
        ck_assert_int_eq(specs[count - 1].relu, 0);
        dg_net_spec_format(specs, count, text, sizeof text);
        ck_assert_str_eq(text, cases[i].canonical);
        struct dg_layer_spec again[DG_MAX_LAYERS];
        int again_count;
        ck_assert_int_eq(dg_net_spec_parse(text, again, &again_count), DG_OK);
        ck_assert_int_eq(memcmp(again, specs, (size_t)count * sizeof *specs), 0);
    }
    /* 32 layers fit, 33 do not */
    char many[DG_NET_SPEC_MAX + 1] = "";
    for (int i = 0; i < 30; i++)
        strcat(many, "1C1-");
    strcat(many, "F-10");
    ck_assert_int_eq(dg_net_spec_parse(many, specs, &count), DG_OK);
    ck_assert_int_eq(count, 32);
    char more[DG_NET_SPEC_MAX + 8];
    snprintf(more, sizeof more, "1C1-%s", many);
    ck_assert_int_eq(dg_net_spec_parse(more, specs, &count), DG_ERR_USAGE);
    ck_assert_msg(strstr(dg_error_message(), "at character 127 ('1'): expected fewer layers (at "
                                             "most 32, flatten included)") != NULL,
                  "%s", dg_error_message());
}
END_TEST

/* The deotte preset: Deotte's Keras CNN, its shapes (valid 3x3 convolutions 28 -> 26 -> 24,
 * the stride-2 5x5 "same" one 24 -> 12, then 12 -> 10 -> 8 -> 4), batchnorm after every
 * layer (four parameters per channel: gamma, beta, running mean and variance). */
START_TEST(deotte_preset_layout)
{
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int count;
    ck_assert_int_eq(dg_net_spec_parse("deotte", specs, &count), DG_OK);
    /* preset names in any case, as the layer letters */
    struct dg_layer_spec upper[DG_MAX_LAYERS];
    int upper_count;
    ck_assert_int_eq(dg_net_spec_parse("DEOTTE", upper, &upper_count), DG_OK);
    char lower_text[DG_NET_SPEC_MAX + 1], upper_text[DG_NET_SPEC_MAX + 1];
    dg_net_spec_format(specs, count, lower_text, sizeof lower_text);
    dg_net_spec_format(upper, upper_count, upper_text, sizeof upper_text);
    ck_assert_str_eq(upper_text, lower_text);
    struct dg_model model;
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    static const struct {
        const char *name;
        int c, h;
        size_t params;
    } want[] = {
        {"conv1", 32, 26, 32 * 9 + 32},           {"batchnorm1", 32, 26, 4 * 32},
        {"conv2", 32, 24, 32 * 32 * 9 + 32},      {"batchnorm2", 32, 24, 4 * 32},
        {"conv3", 32, 12, 32 * 32 * 25 + 32},     {"batchnorm3", 32, 12, 4 * 32},
        {"dropout1", 32, 12, 0},                  {"conv4", 64, 10, 64 * 32 * 9 + 64},
        {"batchnorm4", 64, 10, 4 * 64},           {"conv5", 64, 8, 64 * 64 * 9 + 64},
        {"batchnorm5", 64, 8, 4 * 64},            {"conv6", 64, 4, 64 * 64 * 25 + 64},
        {"batchnorm6", 64, 4, 4 * 64},            {"dropout2", 64, 4, 0},
        {"flatten1", 1024, 1, 0},                 {"dense1", 128, 1, 1024 * 128 + 128},
        {"batchnorm7", 128, 1, 4 * 128},          {"dropout3", 128, 1, 0},
        {"dense2", 10, 1, 128 * 10 + 10},
    };
    ck_assert_int_eq(count, (int)(sizeof want / sizeof want[0]));
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        const struct dg_layer *l = &model.layers[i];
        size_t params = l->weight_count + l->bias_count + l->stat_count;
        ck_assert_str_eq(l->name, want[i].name);
        ck_assert_int_eq(l->out_c, want[i].c);
        ck_assert_int_eq(l->out_h, want[i].h);
        ck_assert_int_eq(l->out_w, want[i].h);
        ck_assert_uint_eq(params, want[i].params);
        total += params;
    }
    ck_assert_uint_eq(model.param_count, total);
    ck_assert_uint_eq(model.param_count, 327242); /* Keras' model.summary() total for it */
    /* batchnorm starts as the identity: gamma 1, beta 0, running mean 0, variance 1 */
    dg_model_init_glorot(&model, 42);
    const struct dg_layer *bn = &model.layers[1];
    ck_assert_uint_eq(bn->bias_offset, bn->weight_offset + 32);
    ck_assert_uint_eq(bn->stat_offset, bn->bias_offset + 32);
    for (int k = 0; k < 32; k++) {
        ck_assert(model.params[bn->weight_offset + (size_t)k] == 1.0f);
        ck_assert(model.params[bn->bias_offset + (size_t)k] == 0.0f);
        ck_assert(model.params[bn->stat_offset + (size_t)k] == 0.0f);
        ck_assert(model.params[bn->stat_offset + 32 + (size_t)k] == 1.0f);
    }
    char text[DG_NET_SPEC_MAX + 1];
    dg_net_spec_format(specs, count, text, sizeof text);
    ck_assert_str_eq(text, dg_net_preset("deotte"));
    dg_model_free(&model);
}
END_TEST

/* Strides, "valid" padding and batchnorm survive the model file (the kernel word's bits 8 and
 * 9), and a kernel word with other bits set is refused as corrupted. */
START_TEST(strided_batchnorm_round_trip)
{
    make_tmpdir();
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int count;
    ck_assert_int_eq(dg_net_spec_parse("8C5S2-B-8C3V-8C3S2VL-B-F-16-B-10", specs, &count), DG_OK);
    struct dg_model model, loaded;
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    ck_assert_int_eq(model.layers[0].out_h, 14); /* (28 + 4 - 5) / 2 + 1 */
    ck_assert_int_eq(model.layers[2].out_h, 12);
    ck_assert_int_eq(model.layers[3].out_h, 5); /* (12 - 3) / 2 + 1 */
    ck_assert_int_eq(model.layers[6].in_c, 8 * 5 * 5);
    dg_model_init_glorot(&model, 9);
    for (size_t i = 0; i < model.param_count; i++)
        model.params[i] += 0.001f * (float)(i % 7); /* running statistics away from 0 / 1 */
    const char *path = path_in_tmp("strided.dgt");
    ck_assert_int_eq(dg_model_save(path, &model, ""), DG_OK);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_OK);
    ck_assert_int_eq(loaded.layer_count, count);
    for (int i = 0; i < count; i++) {
        const struct dg_layer_spec *a = &loaded.layers[i].spec, *b = &specs[i];
        ck_assert_int_eq(a->kind, b->kind);
        ck_assert_int_eq(a->kernel, b->kernel);
        ck_assert_int_eq(a->relu, b->relu);
        ck_assert_int_eq(a->valid, b->valid);
        if (a->kind == DG_LAYER_CONV)
            ck_assert_int_eq(a->stride, b->stride);
    }
    ck_assert_int_eq(memcmp(loaded.params, model.params, model.param_count * sizeof(float)), 0);
    dg_model_free(&loaded);
    /* bit 10 of conv1's kernel word */
    size_t size;
    unsigned char *data = read_file(path, &size);
    data[16 + 4 + 8 + 1] |= 0x04;
    uint32_t crc = (uint32_t)crc32(0L, data, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        data[size - 4 + (size_t)i] = (unsigned char)(crc >> (8 * i));
    const char *bad = path_in_tmp("bits.dgt");
    FILE *fp = fopen(bad, "wb");
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    fclose(fp);
    ck_assert_int_eq(dg_model_load(bad, &loaded, NULL, 0), DG_ERR_INPUT);
    ck_assert_msg(strstr(dg_error_message(), "bits.dgt: corrupted model file (layer 1: kind 1, "
                                             "units 8, kernel 5,") != NULL,
                  "%s", dg_error_message());
    free(data);
    dg_model_free(&model);
}
END_TEST

/* Every refusal names the character and what was expected there, or the layer whose shape
 * does not fit 28x28. */
/* Global average pooling: the mean of each channel, flat after (a dense or batchnorm layer
 * follows directly), no parameters of its own; the model file keeps it. */
START_TEST(gap_layout_and_round_trip)
{
    make_tmpdir();
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int count;
    ck_assert_int_eq(dg_net_spec_parse("16C3S2-G-B-10", specs, &count), DG_OK);
    ck_assert_int_eq(count, 4);
    struct dg_model model, loaded;
    ck_assert_int_eq(dg_model_build(&model, specs, count), DG_OK);
    ck_assert_str_eq(model.layers[1].name, "gap1");
    ck_assert_int_eq(model.layers[1].in_c, 16);
    ck_assert_int_eq(model.layers[1].in_h, 14);
    ck_assert_int_eq(model.layers[1].out_c, 16);
    ck_assert_int_eq(model.layers[1].out_h, 1);
    ck_assert_int_eq(model.layers[1].out_w, 1);
    ck_assert_uint_eq(model.layers[1].weight_count + model.layers[1].bias_count, 0);
    ck_assert_uint_eq(model.layers[2].stat_count, 2 * 16);
    ck_assert_int_eq(model.layers[3].in_c, 16);
    ck_assert_uint_eq(model.param_count, 16 * 9 + 16 + 4 * 16 + 16 * 10 + 10);
    dg_model_init_glorot(&model, 3);
    const char *path = path_in_tmp("gap.dgt");
    ck_assert_int_eq(dg_model_save(path, &model, ""), DG_OK);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_OK);
    ck_assert_int_eq(loaded.layer_count, count);
    ck_assert_int_eq(loaded.layers[1].spec.kind, DG_LAYER_GAP);
    ck_assert_int_eq(memcmp(loaded.params, model.params, model.param_count * sizeof(float)), 0);
    dg_model_free(&loaded);
    dg_model_free(&model);
}
END_TEST

START_TEST(net_spec_refusals)
{
    static const struct {
        const char *spec, *message;
    } cases[] = {
        {"", "--net '': expected a preset (reference, deotte) or a layer spec such as 32C5-P2-F-128-10"},
        {"referense", "--net 'referense': not a preset (reference, deotte) nor a layer spec"},
        {"32C4-10", "--net '32C4-10': at character 4 ('4'): expected an odd kernel size"},
        {"32C-10", "at character 4 ('-'): expected the kernel size after C (e.g. 32C5)"},
        {"32C17-10", "at character 4 ('1'): expected the kernel size after C (e.g. 32C5) (at "
                     "most 15)"},
        {"0C3-10", "at character 1 ('0'): expected a filter or unit count (1..65536)"},
        {"32C5-0-10", "at character 6 ('0'): expected a filter or unit count (1..65536)"},
        /* a word with hyphens is a preset misspelt (no spec is without digits) */
        {"deotte-x", "--net 'deotte-x': not a preset (reference, deotte) nor a layer spec"},
        {"ref-net", "--net 'ref-net': not a preset (reference, deotte) nor a layer spec"},
        {"70000-10", "at character 1 ('7'): expected a filter or unit count (at most 65536)"},
        {"32C5-P3-10", "at character 7 ('3'): expected '2' ending the layer (P2"},
        {"32C5-P2-", "at character 9 (the end): expected a layer after '-'"},
        {"32C5--10", "at character 6 ('-'): expected a layer: NcK (convolution), B (batch "
                     "normalisation), P2 (pooling), G (global average pooling), DR (dropout)"},
        {"32C5-D1.5-10", "at character 7 ('1'): expected a dropout rate 0 <= rate < 1"},
        {"32C5-D-10", "at character 7 ('-'): expected a dropout rate after D"},
        {"32C5-D0.2.1-10", "at character 7 ('0'): expected a dropout rate 0 <= rate < 1"},
        {"32C5x-10", "at character 5 ('x'): expected '-', the end, or S2 (stride 2), V (no "
                     "padding), L (no ReLU) in this order after the convolution"},
        {"32C5S3-10", "at character 6 ('3'): expected a stride of 1 or 2 after S (e.g. 32C5S2)"},
        {"32C5S-10", "at character 6 ('-'): expected a stride of 1 or 2 after S"},
        {"32C5S22-10", "at character 6 ('2'): expected a stride of 1 or 2 after S"},
        {"32C5LV-10", "at character 6 ('V'): expected '-', the end, or S2 (stride 2)"},
        {"32C5VS2-10", "at character 6 ('S'): expected '-', the end, or S2 (stride 2)"},
        {"32C5-B2-10", "at character 7 ('2'): expected '-' or the end after B (batch "
                       "normalisation)"},
        {"32C5V-32C5V-32C5V-32C5V-32C5V-32C5V-32C5V-10",
         "the layer at character 37: conv7: its input is 4x4, smaller than the 5x5 kernel "
         "without padding"},
        {"32C15V-32C15V-10", "the layer at character 8: conv2: its input is 14x14, smaller than "
                             "the 15x15 kernel without padding"},
        {"32C5-128", "at character 6 ('1'): expected the last layer to be the classifier: "
                     "dense 10"},
        {"32C5-Fx-10", "at character 7 ('x'): expected '-' or the end after F (flatten)"},
        {"32C5-P2-P2-P2-P2-P2-10", "--net '32C5-P2-P2-P2-P2-P2-10': the layer at character 18: "
                                   "pool5: its input is 1x1, too small for a 2x2 window"},
        {"32C5-10-P2-10", "the layer at character 9: pool1: pooling after flatten"},
        {"64-F-10", "the layer at character 4: flatten2: already flat"},
        {"32C5-G2-10", "at character 7 ('2'): expected '-' or the end after G (global average "
                       "pooling)"},
        {"32C5-G-F-10", "the layer at character 8: flatten1: already flat"},
        {"32C5-F-G-10", "the layer at character 8: gap1: global average pooling after flatten"},
        {"32C5-G-P2-10", "the layer at character 8: pool1: pooling after flatten"},
        {"32C5-G-32C3-10", "the layer at character 8: conv2: a convolution after flatten"},
        {"10-32C3-10", "the layer at character 4: conv1: a convolution after flatten"},
        {"4096C15-4096C15-4096-10", "the layer at character 9: conv2: more than 268435456 "
                                    "parameters up to this layer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dg_layer_spec specs[DG_MAX_LAYERS];
        int count = 99;
        ck_assert_int_eq(dg_net_spec_parse(cases[i].spec, specs, &count), DG_ERR_USAGE);
        ck_assert_int_eq(count, 0);
        ck_assert_msg(strstr(dg_error_message(), cases[i].message) != NULL,
                      "'%s': got \"%s\", expected \"%s\"", cases[i].spec, dg_error_message(),
                      cases[i].message);
    }
}
END_TEST

START_TEST(missing_file_is_a_path_error)
{
    struct dg_model loaded;
    ck_assert_int_eq(dg_model_load("/nonexistent/m.dgt", &loaded, NULL, 0), DG_ERR_USAGE);
    ck_assert_ptr_nonnull(strstr(dg_error_message(), "/nonexistent/m.dgt: cannot open"));
}
END_TEST

START_TEST(save_into_missing_directory_fails_cleanly)
{
    struct dg_model model;
    build_reference(&model);
    ck_assert_int_eq(dg_model_save("/nonexistent/dir/m.dgt", &model, ""), DG_ERR_USAGE);
    dg_model_free(&model);
}
END_TEST

/* A NaN, +Inf or -Inf parameter with a valid CRC (written by the library's own writer): the
 * reader refuses it as an input error naming the tensor as exported and the flat index in
 * its exported layout; dense weights are exported transposed (out, in), so Digits' (in, out)
 * element (2, 5) of dense1 is dense1.weight[5 * 3136 + 2]. An ensemble's member is named
 * "members.M.". Before, every such file loaded. */
START_TEST(refuses_non_finite_parameters)
{
    static const char *const names[3] = {"NaN", "+Inf", "-Inf"};
    const float values[3] = {NAN, INFINITY, -INFINITY};
    int v = _i;
    make_tmpdir();
    struct dg_model model, loaded;
    build_reference(&model);
    dg_model_init_glorot(&model, 3);
    const char *path = path_in_tmp("bad.dgt");
    char want[768];
    /* conv1.weight[7] */
    model.params[model.layers[0].weight_offset + 7] = values[v];
    ck_assert_int_eq(dg_model_save(path, &model, "seed=3\n"), DG_OK);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_ERR_INPUT);
    snprintf(want, sizeof want, "%s: non-finite value in the weights: conv1.weight[7] is %s", path,
             names[v]);
    ck_assert_str_eq(dg_error_message(), want);
    model.params[model.layers[0].weight_offset + 7] = 0.0f;
    /* dense1's weight (in, out) element (2, 5), exported (out, in) */
    ck_assert_str_eq(model.layers[9].name, "dense1");
    model.params[model.layers[9].weight_offset + 2 * 256 + 5] = values[v];
    ck_assert_int_eq(dg_model_save(path, &model, "seed=3\n"), DG_OK);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_ERR_INPUT);
    snprintf(want, sizeof want, "%s: non-finite value in the weights: dense1.weight[%d] is %s",
             path, 5 * 3136 + 2, names[v]);
    ck_assert_str_eq(dg_error_message(), want);
    model.params[model.layers[9].weight_offset + 2 * 256 + 5] = 0.0f;
    /* a bias: dense2.bias[9], the last parameter */
    model.params[model.param_count - 1] = values[v];
    ck_assert_int_eq(dg_model_save(path, &model, "seed=3\n"), DG_OK);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_ERR_INPUT);
    snprintf(want, sizeof want, "%s: non-finite value in the weights: dense2.bias[9] is %s", path,
             names[v]);
    ck_assert_str_eq(dg_error_message(), want);
    model.params[model.param_count - 1] = 0.0f;
    /* member 1 of an ensemble of 2 */
    struct dg_model members[2] = {model, {0}}, got[2];
    build_reference(&members[1]);
    dg_model_init_glorot(&members[1], 4);
    members[1].params[model.layers[1].bias_offset + 3] = values[v];
    ck_assert_int_eq(dg_ensemble_save(path, members, 2, "members=2\n"), DG_OK);
    int count = -1;
    ck_assert_int_eq(dg_ensemble_load(path, got, 2, &count, NULL, 0), DG_ERR_INPUT);
    ck_assert_int_eq(count, 0);
    snprintf(want, sizeof want,
             "%s: non-finite value in the weights: members.1.conv2.bias[3] is %s", path, names[v]);
    ck_assert_str_eq(dg_error_message(), want);
    /* finite again: loads */
    members[1].params[model.layers[1].bias_offset + 3] = 1e30f;
    ck_assert_int_eq(dg_ensemble_save(path, members, 2, "members=2\n"), DG_OK);
    ck_assert_int_eq(dg_ensemble_load(path, got, 2, &count, NULL, 0), DG_OK);
    ck_assert_int_eq(count, 2);
    dg_model_free(&got[0]);
    dg_model_free(&got[1]);
    dg_model_free(&members[1]);
    dg_model_free(&model);
    unlink(path);
    rmdir(tmpdir);
}
END_TEST

/* A model whose settings text declares a value the CLI would refuse (written by the library's
 * writer, so the CRC is valid): the reader refuses it with the CLI's range message; a setting
 * the CLI has no option for, or early_stop=0 (never), is taken. Before, every such file
 * loaded. */
START_TEST(refuses_settings_beyond_the_cli_ranges)
{
    static const struct {
        const char *settings, *want;
    } cases[] = {
        {"epochs=2000000000\n", "(epochs=2000000000: --epochs expects an integer in 1..100000)"},
        {"seed=1\nbatch=2000000000\n",
         "(batch=2000000000: --batch expects an integer in 1..65536)"},
        {"batch=0\n", "(batch=0: --batch expects an integer in 1..65536)"},
        {"lr=nan\n", "(lr=nan: --lr expects a number in [1e-12, 1e+06])"},
        {"val_split=2\n", "(val_split=2: --val-split expects a number in [0, 0.99])"},
        {"epochs=12x\n", "(epochs=12x: --epochs expects an integer in 1..100000)"},
        {"early_stop=-1\n", "(early_stop=-1: --early-stop expects an integer in 1..100000)"},
    };
    make_tmpdir();
    struct dg_model model, loaded;
    build_reference(&model);
    dg_model_init_glorot(&model, 3);
    const char *path = path_in_tmp("s.dgt");
    char want[768];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ck_assert_int_eq(dg_model_save(path, &model, cases[c].settings), DG_OK);
        ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_ERR_INPUT);
        snprintf(want, sizeof want, "%s: corrupted model file %s", path, cases[c].want);
        ck_assert_str_eq(dg_error_message(), want);
    }
    ck_assert_int_eq(dg_model_save(path, &model,
                                   "epochs=100000\nbatch=65536\nlr=1e-12\nval_split=0.99\n"
                                   "early_stop=0\nrows=99999999999\n"),
                     DG_OK);
    ck_assert_int_eq(dg_model_load(path, &loaded, NULL, 0), DG_OK);
    dg_model_free(&loaded);
    dg_model_free(&model);
    unlink(path);
    rmdir(tmpdir);
}
END_TEST

/* Settings floats: the fewest digits that read back as the same float. */
START_TEST(settings_floats_read_back_exactly)
{
    static const struct {
        float value;
        const char *text;
    } cases[] = {{0.001f, "0.001"},
                 {0.9f, "0.9"},
                 {1e-8f, "1e-08"},
                 {0.1f, "0.1"},
                 {0.1000119f, "0.1000119"},
                 {0.1004999f, "0.1004999"},
                 {0.0f, "0"},
                 {1.0f, "1"},
                 {16777217.0f, "16777216"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dg_text t = {0};
        dg_text_add_float(&t, cases[i].value);
        ck_assert_str_eq(t.data, cases[i].text);
        free(t.data);
    }
    /* every finite float of a sweep over all magnitudes and both signs reads back bit for bit */
    uint32_t bits = 0x3a000000u, failures = 0;
    for (int i = 0; i < 200000; i++, bits += 0x00003fa1u) {
        float v;
        memcpy(&v, &bits, sizeof v);
        if (!isfinite(v))
            continue;
        struct dg_text t = {0};
        dg_text_add_float(&t, v);
        float back = strtof(t.data, NULL);
        failures += memcmp(&back, &v, sizeof v) != 0 || strlen(t.data) > 15;
        free(t.data);
    }
    ck_assert_uint_eq(failures, 0);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reference_shapes_and_count);
    tcase_add_test(tc, settings_floats_read_back_exactly);
    tcase_add_test(tc, bad_architectures_refused);
    tcase_add_test(tc, glorot_limits_zero_bias_and_determinism);
    tcase_add_test(tc, model_file_round_trip);
    tcase_add_test(tc, refuses_truncated);
    tcase_add_test(tc, refuses_corrupted);
    tcase_add_test(tc, refuses_other_version);
    tcase_add_test(tc, refuses_not_a_model);
    tcase_add_test(tc, refuses_trailing_bytes);
    tcase_add_test(tc, other_architectures_round_trip);
    tcase_add_test(tc, net_spec_parses_and_formats);
    tcase_add_test(tc, net_spec_refusals);
    tcase_add_test(tc, gap_layout_and_round_trip);
    tcase_add_test(tc, deotte_preset_layout);
    tcase_add_test(tc, strided_batchnorm_round_trip);
    tcase_add_loop_test(tc, refuses_non_finite_parameters, 0, 3);
    tcase_add_test(tc, refuses_settings_beyond_the_cli_ranges);
    tcase_add_test(tc, missing_file_is_a_path_error);
    tcase_add_test(tc, save_into_missing_directory_fails_cleanly);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
