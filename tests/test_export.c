/* digits export / import: the safetensors round trip is bit-identical, the layouts are
 * PyTorch's, every malformed file is refused with a message that says which, the strict JSON
 * parser; and outside tools read what was written (tests/export_check.py): onnxruntime runs the
 * ONNX model, numpy and PyTorch rebuild the network from the safetensors file, the safetensors
 * package writes files that `digits import` reads. Those print SKIP and return when the
 * package cannot be had (onnxruntime, onnx, numpy and safetensors go into a virtual
 * environment in the build directory, made on first use; PyTorch is looked for in python3 and
 * /usr/bin/python3). One model, trained on 500 sample rows for one epoch, serves every case;
 * an ensemble of two (--ensemble 2, the same rows and epoch) serves the ensemble cases: one ONNX
 * graph averaging its members, "members.M." safetensors names, the round trip, the refusals,
 * several -m combined, and the same outside checks against `digits predict` of the ensemble. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "io/json.h"

#define PARAMS 887530
#define VENV_PACKAGES "onnxruntime onnx numpy safetensors"

static char dir[256];
static char sample_test[1024];
static char script[1024];

static const char *at(const char *name)
{
    static char paths[4][1024];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", dir, name);
    return path;
}

static int run(char *err, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int run(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int code = dg_test_run_digits_v(dir, NULL, err, fmt, ap);
    va_end(ap);
    return code;
}

static int exists(const char *name)
{
    struct stat st;
    return stat(at(name), &st) == 0;
}

static unsigned char *read_file(const char *name, size_t *size)
{
    FILE *fp = fopen(at(name), "rb");
    ck_assert_msg(fp != NULL, "cannot open %s", name);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(fread(data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    data[n] = '\0';
    *size = (size_t)n;
    return data;
}

static void write_file(const char *name, const void *data, size_t size)
{
    FILE *fp = fopen(at(name), "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, size, fp), size);
    ck_assert_int_eq(fclose(fp), 0);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float le_f32(const unsigned char *p)
{
    uint32_t v = le32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* A model file's settings text (malloc) and parameter bytes (malloc, 4 * PARAMS). */
static void model_parts(const char *name, char **settings, unsigned char **params)
{
    size_t n;
    unsigned char *data = read_file(name, &n);
    uint32_t layers = le32(data + 12);
    size_t off = 16 + 20 * (size_t)layers;
    ck_assert_uint_eq(le32(data + off), PARAMS);
    uint32_t settings_len = le32(data + off + 8);
    size_t start = off + 12 + settings_len;
    ck_assert_uint_eq(n - 4 - start, (size_t)PARAMS * 4);
    *settings = malloc(settings_len + 1);
    memcpy(*settings, data + off + 12, settings_len);
    (*settings)[settings_len] = '\0';
    *params = malloc((size_t)PARAMS * 4);
    memcpy(*params, data + start, (size_t)PARAMS * 4);
    free(data);
}

/* A model (version 1) or ensemble (version 2) file: its member count, settings text (malloc)
 * and every member's parameter bytes one after another (malloc, 4 * PARAMS each). */
static int ensemble_parts(const char *name, char **settings, unsigned char **params)
{
    size_t n;
    unsigned char *data = read_file(name, &n);
    uint32_t version = le32(data + 8), layers = le32(data + 12);
    size_t off = 16 + 20 * (size_t)layers, counts = version == 2 ? 16 : 12;
    ck_assert_uint_eq(le32(data + off), PARAMS);
    uint32_t members = version == 2 ? le32(data + off + 8) : 1;
    uint32_t settings_len = le32(data + off + counts - 4);
    size_t start = off + counts + settings_len;
    ck_assert_uint_eq(n - 4 - start, (size_t)members * PARAMS * 4);
    *settings = malloc(settings_len + 1);
    memcpy(*settings, data + off + counts, settings_len);
    (*settings)[settings_len] = '\0';
    *params = malloc((size_t)members * PARAMS * 4);
    memcpy(*params, data + start, (size_t)members * PARAMS * 4);
    free(data);
    return (int)members;
}

static int contains(const unsigned char *data, size_t size, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(data + i, needle, n) == 0)
            return 1;
    return 0;
}

/* ---- the shared model: trained once for the whole suite (an unchecked fixture) ---- */

static void suite_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/digits-test-export-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *source = getenv("DIGITS_SOURCE_DIR");
    ck_assert_ptr_nonnull(source);
    snprintf(sample_test, sizeof sample_test, "%s/data/sample/test.csv.gz", source);
    snprintf(script, sizeof script, "%s/tests/export_check.py", source);
    char err[512];
    ck_assert_int_eq(run(err,
                         "train '%s/data/sample/train.csv.gz' --limit 500 --epochs 1 -o m.dgt "
                         "--no-checkpoint -q --threads 2",
                         source),
                     0);
    ck_assert_int_eq(run(err,
                         "predict -m m.dgt '%s' -o sub.csv --probs probs.csv --device cpu "
                         "--threads 2",
                         sample_test),
                     0);
    ck_assert_int_eq(run(err, "export -m m.dgt -o m.onnx"), 0);
    dg_test_expect_in(err, "digits: wrote m.onnx (ONNX opset 13, 887530 parameters)");
    ck_assert_int_eq(run(err, "export -m m.dgt -o m.safetensors"), 0);
    dg_test_expect_in(err, "digits: wrote m.safetensors (safetensors F32, 887530 parameters)");
    /* the ensemble: two members, its predictions, its exports */
    ck_assert_int_eq(run(err,
                         "train '%s/data/sample/train.csv.gz' --limit 500 --epochs 1 --ensemble 2 "
                         "-o e.dgt -q --threads 2",
                         source),
                     0);
    ck_assert_int_eq(run(err,
                         "predict -m e.dgt '%s' -o e_sub.csv --probs e_probs.csv --device cpu "
                         "--threads 2",
                         sample_test),
                     0);
    ck_assert_int_eq(run(err, "export -m e.dgt -o e.onnx"), 0);
    dg_test_expect_in(err, "digits: wrote e.onnx (ONNX opset 13, an ensemble of 2 members, "
                           "887530 parameters each)");
    ck_assert_int_eq(run(err, "export -m e.dgt -o e.safetensors"), 0);
    dg_test_expect_in(err, "digits: wrote e.safetensors (safetensors F32, an ensemble of 2 "
                           "members, 887530 parameters each)");
}

static void suite_teardown(void)
{
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(command), 0);
}

/* ---- safetensors files edited in their header ---- */

struct st_file {
    unsigned char *data;
    size_t size;
    char *header; /* NUL-terminated copy */
    size_t header_length;
};

static struct st_file st_read(const char *name)
{
    struct st_file f;
    f.data = read_file(name, &f.size);
    ck_assert_uint_ge(f.size, 8);
    ck_assert_uint_eq(le32(f.data + 4), 0);
    f.header_length = le32(f.data);
    ck_assert_uint_le(f.header_length, f.size - 8);
    f.header = malloc(f.header_length + 1);
    memcpy(f.header, f.data + 8, f.header_length);
    f.header[f.header_length] = '\0';
    return f;
}

static void st_free(struct st_file *f)
{
    free(f->data);
    free(f->header);
}

/* Writes `name`: `header` (its length in the first 8 bytes) and the data of f. */
static void st_write(const struct st_file *f, const char *name, const char *header)
{
    size_t n = strlen(header), data_size = f->size - 8 - f->header_length;
    unsigned char *out = malloc(8 + n + data_size);
    uint64_t length = n;
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(length >> (8 * i));
    memcpy(out + 8, header, n);
    memcpy(out + 8 + n, f->data + 8 + f->header_length, data_size);
    write_file(name, out, 8 + n + data_size);
    free(out);
}

/* The header with the first occurrence of `from` replaced by `to` (malloc). */
static char *replace(const char *text, const char *from, const char *to)
{
    const char *hit = strstr(text, from);
    ck_assert_msg(hit != NULL, "'%s' not in the header", from);
    size_t n = strlen(text) - strlen(from) + strlen(to);
    char *out = malloc(n + 1);
    size_t before = (size_t)(hit - text);
    memcpy(out, text, before);
    strcpy(out + before, to);
    strcat(out, hit + strlen(from));
    return out;
}

/* The header without the entry of tensor `name` (malloc). */
static char *drop(const char *text, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, ",\"%s\":{", name);
    const char *hit = strstr(text, key);
    ck_assert_ptr_nonnull(hit);
    const char *end = strchr(hit + strlen(key), '}');
    ck_assert_ptr_nonnull(end);
    size_t n = strlen(text);
    char *out = malloc(n + 1);
    memcpy(out, text, (size_t)(hit - text));
    strcpy(out + (hit - text), end + 1);
    return out;
}

/* `digits import FILE -o out.dgt` fails with exit 2 and exactly this message, and writes no
 * model. */
static void expect_refused(const char *file, const char *message)
{
    char err[512], expected[2048];
    ck_assert_int_eq(run(err, "import %s -o out.dgt", file), 2);
    snprintf(expected, sizeof expected, "digits: %s: %s\n", file, message);
    char *text = dg_test_slurp(err);
    ck_assert_str_eq(text, expected);
    free(text);
    ck_assert(!exists("out.dgt"));
    printf("ok   refused: %s", expected);
}

static void expect_refused_with(const char *file, const char *needle)
{
    char err[512];
    ck_assert_int_eq(run(err, "import %s -o out.dgt", file), 2);
    dg_test_expect_in(err, needle);
    ck_assert(!exists("out.dgt"));
}

/* ---- the tests ---- */

START_TEST(export_refuses_other_formats_and_bad_usage)
{
    char err[512];
    ck_assert_int_eq(run(err, "export -m m.dgt -o m.bin"), 2);
    char *text = dg_test_slurp(err);
    ck_assert_str_eq(text, "digits: export: cannot tell the format of 'm.bin': the output's name "
                           "must end in .onnx or .safetensors\n(see `digits export --help`)\n");
    free(text);
    ck_assert(!exists("m.bin"));
    ck_assert_int_eq(run(err, "export -m m.dgt"), 2);
    dg_test_expect_in(err, "missing -o FILE");
    ck_assert_int_eq(run(err, "export -o x.onnx"), 2);
    dg_test_expect_in(err, "missing -m MODEL");
    ck_assert_int_eq(run(err, "export -m missing.dgt -o x.onnx"), 2);
    dg_test_expect_in(err, "digits: missing.dgt: cannot open: No such file or directory (check "
                           "the path)\n");
    ck_assert(!exists("x.onnx"));
    ck_assert_int_eq(run(err, "import m.safetensors"), 2);
    dg_test_expect_in(err, "missing -o FILE");
    ck_assert_int_eq(run(err, "import -o out.dgt"), 2);
    dg_test_expect_in(err, "missing the WEIGHTS.safetensors file");
    ck_assert_int_eq(run(err, "export --help"), 0);
    ck_assert_int_eq(run(err, "import --help"), 0);
}
END_TEST

START_TEST(safetensors_round_trip_is_bit_identical)
{
    char err[512];
    ck_assert_int_eq(run(err, "import m.safetensors -o back.dgt"), 0);
    dg_test_expect_in(err, "digits: wrote back.dgt (887530 parameters from m.safetensors)");
    char *settings, *back_settings;
    unsigned char *params, *back_params;
    model_parts("m.dgt", &settings, &params);
    model_parts("back.dgt", &back_settings, &back_params);
    ck_assert(memcmp(params, back_params, (size_t)PARAMS * 4) == 0);
    printf("ok   safetensors round trip: all %d parameters byte-equal\n", PARAMS);
    /* the settings travel in the metadata; import says where the weights came from */
    char expected[8192];
    snprintf(expected, sizeof expected, "%simported_from=m.safetensors\n", settings);
    ck_assert_str_eq(back_settings, expected);
    /* the imported model predicts the same, and exports the same tensor bytes */
    ck_assert_int_eq(run(err,
                         "predict -m back.dgt '%s' -o back.csv --probs back_probs.csv "
                         "--device cpu --threads 2",
                         sample_test),
                     0);
    char *a = dg_test_slurp(at("probs.csv")), *b = dg_test_slurp(at("back_probs.csv"));
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    ck_assert_int_eq(run(err, "export -m back.dgt -o back.safetensors"), 0);
    struct st_file one = st_read("m.safetensors"), two = st_read("back.safetensors");
    ck_assert_uint_eq(one.size - 8 - one.header_length, (size_t)PARAMS * 4);
    ck_assert_uint_eq(two.size - 8 - two.header_length, (size_t)PARAMS * 4);
    ck_assert(memcmp(one.data + 8 + one.header_length, two.data + 8 + two.header_length,
                     (size_t)PARAMS * 4) == 0);
    /* the data starts 8-byte aligned, the header is padded with spaces */
    ck_assert_uint_eq(one.header_length % 8, 0);
    st_free(&one);
    st_free(&two);
    free(settings);
    free(back_settings);
    free(params);
    free(back_params);
}
END_TEST

/* The tensor entries, their order and PyTorch's layouts: conv weights as Digits keeps them,
 * dense weights transposed. */
START_TEST(safetensors_names_and_layouts)
{
    struct st_file f = st_read("m.safetensors");
    static const char *const entries[] = {
        "\"conv1.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,5,5],\"data_offsets\":[0,3200]}",
        "\"conv1.bias\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[3200,3328]}",
        "\"conv2.weight\":{\"dtype\":\"F32\",\"shape\":[32,32,5,5],",
        "\"conv3.weight\":{\"dtype\":\"F32\",\"shape\":[64,32,3,3],",
        "\"conv4.weight\":{\"dtype\":\"F32\",\"shape\":[64,64,3,3],",
        "\"dense1.weight\":{\"dtype\":\"F32\",\"shape\":[256,3136],",
        "\"dense1.bias\":{\"dtype\":\"F32\",\"shape\":[256],",
        "\"dense2.weight\":{\"dtype\":\"F32\",\"shape\":[10,256],",
        "\"dense2.bias\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":[3550080,3550120]}",
        "\"format\":\"pt\"",
        "\"digits.architecture\":\"input (N, 1, 28, 28) float32 = pixel / 255, NCHW; conv1 "
        "Conv2d(1, 32, kernel_size=5, padding=2) ReLU; conv2 Conv2d(32, 32, kernel_size=5, "
        "padding=2) ReLU; pool1 MaxPool2d(2); dropout1 Dropout(0.25); conv3 Conv2d(32, 64, "
        "kernel_size=3, padding=1) ReLU; conv4 Conv2d(64, 64, kernel_size=3, padding=1) ReLU; "
        "pool2 MaxPool2d(2); dropout2 Dropout(0.25); flatten1 Flatten(1); dense1 Linear(3136, "
        "256) ReLU; dropout3 Dropout(0.5); dense2 Linear(256, 10); Softmax(dim=1)\"",
        "\"digits.settings\":\"digits_version=",
    };
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        ck_assert_msg(strstr(f.header, entries[i]) != NULL, "'%s' not in the header:\n%.3000s",
                      entries[i], f.header);
    char *settings;
    unsigned char *params;
    model_parts("m.dgt", &settings, &params);
    const unsigned char *data = f.data + 8 + f.header_length;
    /* conv1.weight: the same order */
    ck_assert(memcmp(data, params, 3200) == 0);
    /* dense2.weight (10, 256) at the end, before its bias; Digits: (256, 10) at the same place */
    size_t dense2_w = (size_t)PARAMS * 4 - 40 - 10240;
    for (int o = 0; o < 10; o++)
        for (int i = 0; i < 256; i++) {
            float exported = le_f32(data + dense2_w + 4 * ((size_t)o * 256 + i));
            float digits = le_f32(params + dense2_w + 4 * ((size_t)i * 10 + o));
            ck_assert_msg(memcmp(&exported, &digits, 4) == 0, "dense2.weight[%d][%d]", o, i);
        }
    printf("ok   safetensors names, shapes, offsets, metadata; dense weights transposed\n");
    free(settings);
    free(params);
    st_free(&f);
}
END_TEST

START_TEST(import_refuses_malformed_files)
{
    struct st_file f = st_read("m.safetensors");
    size_t data_size = f.size - 8 - f.header_length;
    char message[1024], *h;

    h = replace(f.header, "\"conv1.weight\"", "\"conv9.weight\"");
    st_write(&f, "name.safetensors", h);
    free(h);
    expect_refused("name.safetensors",
                   "unknown tensor 'conv9.weight' (digits reads conv1.weight, conv1.bias, "
                   "conv2.weight, conv2.bias, conv3.weight, conv3.bias, conv4.weight, conv4.bias, "
                   "dense1.weight, dense1.bias, dense2.weight, dense2.bias; fcK.weight and "
                   "fcK.bias are taken for denseK)");

    h = replace(f.header, "[32,1,5,5]", "[32,1,3,3]");
    st_write(&f, "shape.safetensors", h);
    free(h);
    expect_refused("shape.safetensors",
                   "tensor 'conv1.weight' has shape [32, 1, 3, 3], expected [32, 1, 5, 5] (the "
                   "file has no digits.net metadata, so its tensors were read as the reference "
                   "network's; a file of another network needs its --net spec there)");

    h = replace(f.header, "[256,3136]", "[3136,256]");
    st_write(&f, "layout.safetensors", h);
    free(h);
    expect_refused("layout.safetensors",
                   "tensor 'dense1.weight' has shape [3136, 256], expected [256, 3136] "
                   "(transposed: a dense weight is (out, in), as PyTorch's Linear; Keras' Dense "
                   "kernel is (in, out))");

    h = replace(f.header, "\"F32\"", "\"F64\"");
    st_write(&f, "dtype.safetensors", h);
    free(h);
    expect_refused("dtype.safetensors", "tensor 'conv1.weight' has dtype F64; digits reads F32 "
                                        "only");

    h = drop(f.header, "dense2.bias");
    st_write(&f, "missing.safetensors", h);
    free(h);
    expect_refused("missing.safetensors", "tensor 'dense2.bias' is missing");

    h = replace(f.header, "\"dense1.weight\"", "\"fc1.weight\"");
    char *h2 = replace(h, "\"dense1.bias\"", "\"dense1.weight\"");
    st_write(&f, "twice.safetensors", h2);
    free(h);
    free(h2);
    expect_refused("twice.safetensors", "tensors 'fc1.weight' and 'dense1.weight' are the same "
                                        "parameter (dense1.weight)");

    /* the file cut short in the data (dense2.bias is the last 40 bytes) */
    write_file("truncated.safetensors", f.data, f.size - 20);
    snprintf(message, sizeof message,
             "truncated safetensors file: tensor 'dense2.bias' ends at byte %zu of the data, "
             "which has %zu bytes",
             data_size, data_size - 20);
    expect_refused("truncated.safetensors", message);

    /* a header length beyond the end of the file (cut short in the header) */
    write_file("cut.safetensors", f.data, 1000);
    snprintf(message, sizeof message,
             "not a safetensors file or truncated: the header length (%zu bytes) goes beyond the "
             "end of the file (1000 bytes)",
             f.header_length);
    expect_refused("cut.safetensors", message);
    unsigned char *huge = malloc(f.size);
    memcpy(huge, f.data, f.size);
    for (int i = 0; i < 8; i++)
        huge[i] = (unsigned char)((uint64_t)f.size >> (8 * i));
    write_file("length.safetensors", huge, f.size);
    snprintf(message, sizeof message,
             "not a safetensors file or truncated: the header length (%zu bytes) goes beyond the "
             "end of the file (%zu bytes)",
             f.size, f.size);
    expect_refused("length.safetensors", message);
    memset(huge, 0xff, 8);
    write_file("length2.safetensors", huge, f.size);
    snprintf(message, sizeof message,
             "not a safetensors file or truncated: the header length (18446744073709551615 "
             "bytes) goes beyond the end of the file (%zu bytes)",
             f.size);
    expect_refused("length2.safetensors", message);
    free(huge);
    write_file("short.safetensors", f.data, 5);
    expect_refused("short.safetensors",
                   "not a safetensors file (5 bytes, less than the 8-byte header length)");

    /* bad JSON, with the byte where it goes wrong */
    h = replace(f.header, "{\"__metadata__\":{", "{\"__metadata__\":{,");
    st_write(&f, "json.safetensors", h);
    free(h);
    expect_refused("json.safetensors",
                   "bad safetensors header: byte 17: expected a key (a string), found ','");
    h = replace(f.header, "[32,1,5,5]", "[32,1,5,05]");
    st_write(&f, "zero.safetensors", h);
    free(h);
    expect_refused_with("zero.safetensors", "bad safetensors header: byte ");
    expect_refused_with("zero.safetensors", ": a number with a leading zero");
    h = replace(f.header, "\"format\":\"pt\"", "\"format\":\"pt\",\"format\":\"pt\"");
    st_write(&f, "dup.safetensors", h);
    free(h);
    expect_refused_with("dup.safetensors", ": the key \"format\" appears twice");
    h = replace(f.header, "\"format\":\"pt\"", "\"format\":1");
    st_write(&f, "meta.safetensors", h);
    free(h);
    expect_refused("meta.safetensors", "bad safetensors header: __metadata__ \"format\" is a "
                                       "number, not a string");
    h = replace(f.header, "{", " {");
    st_write(&f, "space.safetensors", h);
    free(h);
    expect_refused("space.safetensors", "bad safetensors header: it does not start with '{'");
    h = replace(f.header, "\"dtype\":\"F32\",", "\"dtype\":\"F32\",\"extra\":1,");
    st_write(&f, "field.safetensors", h);
    free(h);
    expect_refused("field.safetensors", "bad safetensors header: tensor 'conv1.weight' has an "
                                        "unknown field \"extra\"");

    /* offsets: beside the size, overlapping, extra bytes */
    h = replace(f.header, "[0,3200]", "[0,3204]");
    st_write(&f, "size.safetensors", h);
    free(h);
    expect_refused("size.safetensors", "bad safetensors header: tensor 'conv1.weight': "
                                       "data_offsets [0, 3204] do not hold its 800 F32 values "
                                       "(3200 bytes)");
    h = replace(f.header, "[3550080,3550120]", "[0,40]");
    st_write(&f, "overlap.safetensors", h);
    free(h);
    expect_refused_with("overlap.safetensors", "bad safetensors file: the data of tensors '");
    expect_refused_with("overlap.safetensors", "' overlap");
    unsigned char *longer = malloc(f.size + 16);
    memcpy(longer, f.data, f.size);
    memset(longer + f.size, 0, 16);
    write_file("longer.safetensors", longer, f.size + 16);
    free(longer);
    expect_refused("longer.safetensors",
                   "bad safetensors file: 16 bytes after the last tensor's data");

    /* another architecture in the metadata */
    h = replace(f.header, "Dropout(0.5)", "Dropout(0.4)");
    st_write(&f, "arch.safetensors", h);
    free(h);
    expect_refused_with("arch.safetensors", "arch.safetensors: another architecture than this "
                                            "digits' (metadata digits.architecture: \"input");

    /* other files */
    expect_refused("m.dgt", "a digits model file, not safetensors");
    size_t onnx_size;
    unsigned char *onnx = read_file("m.onnx", &onnx_size);
    snprintf(message, sizeof message,
             "not a safetensors file or truncated: the header length (%llu bytes) goes beyond "
             "the end of the file (%zu bytes)",
             (unsigned long long)le32(onnx) | (unsigned long long)le32(onnx + 4) << 32, onnx_size);
    expect_refused("m.onnx", message);
    free(onnx);
    st_free(&f);
}
END_TEST

/* fc1 / fc2 are taken for dense1 / dense2, and a file without digits' metadata is read (its
 * settings are then only where it came from). */
/* `from` with element `index` of tensor `tensor` (the file's own layout) set to `value`,
 * written as `name`. */
static void st_poison(const char *from, const char *name, const char *tensor, size_t index,
                      float value)
{
    struct st_file f = st_read(from);
    char key[96];
    snprintf(key, sizeof key, "\"%s\":{", tensor);
    const char *entry = strstr(f.header, key);
    ck_assert_ptr_nonnull(entry);
    const char *offsets = strstr(entry, "\"data_offsets\":[");
    ck_assert_ptr_nonnull(offsets);
    size_t begin = (size_t)strtoull(offsets + strlen("\"data_offsets\":["), NULL, 10);
    unsigned char *at_value = f.data + 8 + f.header_length + begin + 4 * index;
    ck_assert(at_value + 4 <= f.data + f.size);
    uint32_t bits;
    memcpy(&bits, &value, 4);
    for (int i = 0; i < 4; i++)
        at_value[i] = (unsigned char)(bits >> (8 * i));
    st_write(&f, name, f.header);
    st_free(&f);
}

/* A NaN or infinite weight in a safetensors file: import refuses it with exit 2, naming the
 * tensor and the element (the file's own index), and writes no model. Before, it was
 * imported. */
START_TEST(import_refuses_non_finite_weights)
{
    st_poison("m.safetensors", "nan.safetensors", "conv1.weight", 7, NAN);
    expect_refused("nan.safetensors", "non-finite value in the weights: conv1.weight[7] is NaN");
    st_poison("m.safetensors", "inf.safetensors", "dense1.weight", 15682, INFINITY);
    expect_refused("inf.safetensors",
                   "non-finite value in the weights: dense1.weight[15682] is +Inf");
    st_poison("m.safetensors", "bias.safetensors", "dense2.bias", 9, -INFINITY);
    expect_refused("bias.safetensors", "non-finite value in the weights: dense2.bias[9] is -Inf");
    st_poison("e.safetensors", "e_nan.safetensors", "members.1.conv2.bias", 3, NAN);
    expect_refused("e_nan.safetensors",
                   "non-finite value in the weights: members.1.conv2.bias[3] is NaN");
    /* and the settings it carries, against the CLI's ranges */
    struct st_file f = st_read("m.safetensors");
    char *h = replace(f.header, "\\nepochs=1\\n", "\\nepochs=2000000000\\n");
    st_write(&f, "epochs.safetensors", h);
    free(h);
    st_free(&f);
    expect_refused("epochs.safetensors",
                   "corrupted safetensors file (epochs=2000000000: --epochs expects an integer "
                   "in 1..100000)");
}
END_TEST

START_TEST(import_accepts_fc_names_and_no_metadata)
{
    struct st_file f = st_read("m.safetensors");
    const char *end_of_meta = strstr(f.header, "},\"conv1.weight\"");
    ck_assert_ptr_nonnull(end_of_meta);
    char *h = malloc(strlen(f.header) + 1);
    snprintf(h, strlen(f.header) + 1, "{%s", end_of_meta + 2);
    char *a = replace(h, "\"dense1.weight\"", "\"fc1.weight\"");
    char *b = replace(a, "\"dense1.bias\"", "\"fc1.bias\"");
    char *c = replace(b, "\"dense2.weight\"", "\"fc2.weight\"");
    char *d = replace(c, "\"dense2.bias\"", "\"fc2.bias\"");
    st_write(&f, "fc.safetensors", d);
    char err[512];
    ck_assert_int_eq(run(err, "import fc.safetensors -o fc.dgt"), 0);
    char *settings, *fc_settings;
    unsigned char *params, *fc_params;
    model_parts("m.dgt", &settings, &params);
    model_parts("fc.dgt", &fc_settings, &fc_params);
    ck_assert(memcmp(params, fc_params, (size_t)PARAMS * 4) == 0);
    ck_assert_str_eq(fc_settings, "imported_from=fc.safetensors\n");
    printf("ok   fc1/fc2 names, no metadata: the same parameters\n");
    free(h);
    free(a);
    free(b);
    free(c);
    free(d);
    free(settings);
    free(fc_settings);
    free(params);
    free(fc_params);
    st_free(&f);
}
END_TEST

START_TEST(onnx_file_structure)
{
    size_t n, n2;
    unsigned char *onnx = read_file("m.onnx", &n);
    /* field 1 (ir_version) = 7 first */
    ck_assert_uint_eq(onnx[0], 0x08);
    ck_assert_uint_eq(onnx[1], 7);
    static const char *const strings[] = {"Conv",           "Relu",
                                          "MaxPool",        "Flatten",
                                          "Gemm",           "Softmax",
                                          "conv1.weight",   "dense2.bias",
                                          "transB",         "kernel_shape",
                                          "pads",           "input",
                                          "probabilities",  "digits.architecture",
                                          "digits.settings"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        ck_assert_msg(contains(onnx, n, strings[i]), "no '%s'", strings[i]);
    /* no Dropout node (NodeProto.op_type is field 4): it is the identity at inference */
    ck_assert(contains(onnx, n, "\x22\x04Gemm"));
    ck_assert(!contains(onnx, n,
                        "\x22\x07"
                        "Dropout"));
    /* the same model gives the same bytes */
    char err[512];
    ck_assert_int_eq(run(err, "export -m m.dgt -o again.onnx -q"), 0);
    unsigned char *again = read_file("again.onnx", &n2);
    ck_assert(n == n2 && memcmp(onnx, again, n) == 0);
    free(onnx);
    free(again);
}
END_TEST

/* ---- one model exports exactly as before ensembles ---- */

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

#define FNV_START 0xcbf29ce484222325ull

/* pattern.dgt: a model whose parameters are a fixed pattern (exact float arithmetic), made by
 * importing a safetensors file without metadata, so that its settings are only
 * "imported_from=pattern.safetensors": the same model, and so the same exported bytes, on every
 * machine (a trained model differs between CPU ISAs by rounding). */
static void make_pattern_model(void)
{
    if (exists("pattern.dgt"))
        return;
    struct st_file f = st_read("m.safetensors");
    const char *end_of_meta = strstr(f.header, "},\"conv1.weight\"");
    ck_assert_ptr_nonnull(end_of_meta);
    char *h = malloc(strlen(f.header) + 1);
    snprintf(h, strlen(f.header) + 1, "{%s", end_of_meta + 2);
    unsigned char *data = f.data + 8 + f.header_length;
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < (size_t)PARAMS; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        float v = ((float)((x >> 8) & 0xffff) - 32768.0f) * (1.0f / 65536.0f) * 0.25f;
        uint32_t bits;
        memcpy(&bits, &v, 4);
        for (int b = 0; b < 4; b++)
            data[4 * i + (size_t)b] = (unsigned char)(bits >> (8 * b));
    }
    st_write(&f, "pattern.safetensors", h);
    free(h);
    st_free(&f);
    char err[512];
    ck_assert_int_eq(run(err, "import pattern.safetensors -o pattern.dgt -q"), 0);
}

/* The exported ONNX file of one model, hashed without ModelProto.producer_version (field 3,
 * the digits version: the third field, after ir_version 7 and producer_name "digits"). */
static uint64_t onnx_hash(const char *name, size_t *size)
{
    unsigned char *d = read_file(name, size);
    ck_assert_uint_ge(*size, 12);
    ck_assert(d[0] == 0x08 && d[1] == 7 && d[2] == 0x12 && d[3] == 6 && d[10] == 0x1a &&
              d[11] < 0x80);
    uint64_t h = fnv1a(FNV_START, d, 10);
    h = fnv1a(h, d + 12 + d[11], *size - 12 - d[11]);
    free(d);
    return h;
}

/* The exported safetensors file of one model, hashed without the "producer" metadata pair
 * (it holds the digits version) and the header's padding. */
static uint64_t safetensors_hash(const char *name, size_t *size)
{
    struct st_file f = st_read(name);
    char *producer = strstr(f.header, ",\"producer\":\"digits ");
    ck_assert_ptr_nonnull(producer);
    char *end = strchr(producer + 20, '"');
    ck_assert_ptr_nonnull(end);
    memmove(producer, end + 1, strlen(end + 1) + 1);
    size_t n = strlen(f.header);
    while (n && f.header[n - 1] == ' ')
        n--;
    uint64_t h = fnv1a(FNV_START, (const unsigned char *)f.header, n);
    h = fnv1a(h, f.data + 8 + f.header_length, f.size - 8 - f.header_length);
    *size = f.size;
    st_free(&f);
    return h;
}

/* The bytes digits wrote for this model before ensembles could be exported (the version
 * string left out of the hash); a one-member export must not change by a byte. */
#define PATTERN_ONNX_HASH 0xe4bffd5cda7e72fbull
#define PATTERN_SAFETENSORS_HASH 0xdc77cb392ee0be99ull

START_TEST(one_model_exports_as_before)
{
    make_pattern_model();
    char err[512];
    ck_assert_int_eq(run(err, "export -m pattern.dgt -o pattern.onnx -q"), 0);
    ck_assert_int_eq(run(err, "export -m pattern.dgt -o pattern_out.safetensors -q"), 0);
    size_t onnx_size, st_size;
    uint64_t onnx = onnx_hash("pattern.onnx", &onnx_size);
    uint64_t st = safetensors_hash("pattern_out.safetensors", &st_size);
    printf("one model: ONNX %zu bytes, hash %#018llx (expected %#018llx); safetensors %zu bytes, "
           "hash %#018llx (expected %#018llx)\n",
           onnx_size, (unsigned long long)onnx, (unsigned long long)PATTERN_ONNX_HASH, st_size,
           (unsigned long long)st, (unsigned long long)PATTERN_SAFETENSORS_HASH);
    fflush(stdout);
    ck_assert_msg(onnx == PATTERN_ONNX_HASH, "the ONNX export of one model changed");
    ck_assert_msg(st == PATTERN_SAFETENSORS_HASH, "the safetensors export of one model changed");
    /* no member count in a one-model file */
    unsigned char *d = read_file("pattern.onnx", &onnx_size);
    ck_assert(!contains(d, onnx_size, "digits.members"));
    free(d);
    d = read_file("pattern_out.safetensors", &st_size);
    ck_assert(!contains(d, st_size, "digits.members") && !contains(d, st_size, "members."));
    free(d);
}
END_TEST

/* ---- ensembles ---- */

/* The data bytes (after the header) of a safetensors file (malloc), their size into *size. */
static unsigned char *st_data(const char *name, size_t *size)
{
    struct st_file f = st_read(name);
    *size = f.size - 8 - f.header_length;
    unsigned char *data = malloc(*size);
    memcpy(data, f.data + 8 + f.header_length, *size);
    st_free(&f);
    return data;
}

START_TEST(ensemble_safetensors_round_trip_is_bit_identical)
{
    char err[512];
    ck_assert_int_eq(run(err, "import e.safetensors -o e_back.dgt"), 0);
    dg_test_expect_in(err, "digits: wrote e_back.dgt (an ensemble of 2 members, 887530 "
                           "parameters each, from e.safetensors)");
    char *settings, *back_settings;
    unsigned char *params, *back_params;
    ck_assert_int_eq(ensemble_parts("e.dgt", &settings, &params), 2);
    ck_assert_int_eq(ensemble_parts("e_back.dgt", &back_settings, &back_params), 2);
    ck_assert(memcmp(params, back_params, (size_t)2 * PARAMS * 4) == 0);
    printf("ok   ensemble safetensors round trip: both members' %d parameters byte-equal\n",
           PARAMS);
    char expected[65536];
    snprintf(expected, sizeof expected, "%simported_from=e.safetensors\n", settings);
    ck_assert_str_eq(back_settings, expected);
    /* the same predictions, and the same tensor bytes exported again */
    ck_assert_int_eq(run(err,
                         "predict -m e_back.dgt '%s' -o e_back.csv --probs e_back_probs.csv "
                         "--device cpu --threads 2",
                         sample_test),
                     0);
    char *a = dg_test_slurp(at("e_probs.csv")), *b = dg_test_slurp(at("e_back_probs.csv"));
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    ck_assert_int_eq(run(err, "export -m e_back.dgt -o e_back.safetensors -q"), 0);
    size_t n1, n2;
    unsigned char *d1 = st_data("e.safetensors", &n1), *d2 = st_data("e_back.safetensors", &n2);
    ck_assert_uint_eq(n1, (size_t)2 * PARAMS * 4);
    ck_assert(n1 == n2 && memcmp(d1, d2, n1) == 0);
    free(d1);
    free(d2);
    free(settings);
    free(back_settings);
    free(params);
    free(back_params);
}
END_TEST

/* members.M.NAME in member order, each member in layer order and layout as one model; the
 * member count in the metadata; no plain names. */
START_TEST(ensemble_safetensors_names_and_layouts)
{
    struct st_file f = st_read("e.safetensors");
    static const char *const entries[] = {
        "\"members.0.conv1.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,5,5],\"data_offsets\":"
        "[0,3200]}",
        "\"members.0.dense2.bias\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":"
        "[3550080,3550120]}",
        "\"members.1.conv1.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,5,5],\"data_offsets\":"
        "[3550120,3553320]}",
        "\"members.1.dense1.weight\":{\"dtype\":\"F32\",\"shape\":[256,3136],",
        "\"members.1.dense2.bias\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":"
        "[7100200,7100240]}",
        "\"digits.members\":\"2\"",
        "\"format\":\"pt\"",
        "\"layout\":\"PyTorch: member M's tensors are members.M.NAME (an nn.ModuleList named "
        "members);",
    };
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        ck_assert_msg(strstr(f.header, entries[i]) != NULL, "'%s' not in the header:\n%.3000s",
                      entries[i], f.header);
    ck_assert_ptr_null(strstr(f.header, "\"conv1.weight\""));
    ck_assert_uint_eq(f.header_length % 8, 0);
    /* each member's data is what that member alone exports */
    char *settings;
    unsigned char *params;
    ck_assert_int_eq(ensemble_parts("e.dgt", &settings, &params), 2);
    const unsigned char *data = f.data + 8 + f.header_length;
    size_t one = (size_t)PARAMS * 4;
    for (int m = 0; m < 2; m++) {
        ck_assert(memcmp(data + m * one, params + m * one, 3200) == 0); /* conv1.weight */
        size_t dense2_w = one - 40 - 10240;
        for (int o = 0; o < 10; o++)
            for (int i = 0; i < 256; i++)
                ck_assert(memcmp(data + m * one + dense2_w + 4 * ((size_t)o * 256 + i),
                                 params + m * one + dense2_w + 4 * ((size_t)i * 10 + o), 4) == 0);
    }
    printf("ok   ensemble safetensors: members.M. names, member order, layouts, "
           "digits.members\n");
    free(settings);
    free(params);
    st_free(&f);
}
END_TEST

START_TEST(ensemble_onnx_file_structure)
{
    size_t n, n2;
    unsigned char *onnx = read_file("e.onnx", &n);
    static const char *const strings[] = {
        "members.0.conv1.weight", "members.1.dense2.bias",   "members.0.conv1",
        "members.1.softmax",      "members.0.probabilities", "members.1.probabilities",
        "\x22\x04Mean",           "digits.members",          "digits.architecture",
        "digits.settings",        "ensemble of 2 networks"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        ck_assert_msg(contains(onnx, n, strings[i]), "no '%s'", strings[i]);
    ck_assert(!contains(onnx, n,
                        "\x42\x0c"
                        "conv1.weight")); /* no unprefixed initializer */
    /* the same ensemble gives the same bytes */
    char err[512];
    ck_assert_int_eq(run(err, "export -m e.dgt -o e_again.onnx -q"), 0);
    unsigned char *again = read_file("e_again.onnx", &n2);
    ck_assert(n == n2 && memcmp(onnx, again, n) == 0);
    free(onnx);
    free(again);
}
END_TEST

/* -m given several times: the files' members in order, one exported ensemble; the first
 * file's settings and where the members came from. */
START_TEST(export_combines_several_model_files)
{
    char err[512];
    ck_assert_int_eq(run(err, "export -m m.dgt -m e.dgt -o c.safetensors"), 0);
    dg_test_expect_in(err, "digits: wrote c.safetensors (safetensors F32, an ensemble of 3 "
                           "members, 887530 parameters each)");
    size_t nm, ne, nc;
    unsigned char *dm = st_data("m.safetensors", &nm), *de = st_data("e.safetensors", &ne);
    unsigned char *dc = st_data("c.safetensors", &nc);
    ck_assert_uint_eq(nc, nm + ne);
    ck_assert(memcmp(dc, dm, nm) == 0 && memcmp(dc + nm, de, ne) == 0);
    free(dm);
    free(de);
    free(dc);
    struct st_file f = st_read("c.safetensors");
    ck_assert_ptr_nonnull(strstr(f.header, "\"digits.members\":\"3\""));
    ck_assert_ptr_nonnull(strstr(f.header, "\\ncombined_from=m.dgt\\ncombined_from=e.dgt\\n\""));
    st_free(&f);
    /* back in: the three members, m's then e's */
    ck_assert_int_eq(run(err, "import c.safetensors -o c.dgt -q"), 0);
    char *sm, *se, *sc;
    unsigned char *pm, *pe, *pc;
    ck_assert_int_eq(ensemble_parts("m.dgt", &sm, &pm), 1);
    ck_assert_int_eq(ensemble_parts("e.dgt", &se, &pe), 2);
    ck_assert_int_eq(ensemble_parts("c.dgt", &sc, &pc), 3);
    ck_assert(memcmp(pc, pm, (size_t)PARAMS * 4) == 0);
    ck_assert(memcmp(pc + (size_t)PARAMS * 4, pe, (size_t)2 * PARAMS * 4) == 0);
    free(sm), free(se), free(sc), free(pm), free(pe), free(pc);
    /* ONNX the same way; one -m of a one-model file is the plain export */
    ck_assert_int_eq(run(err, "export -m e.dgt -m m.dgt -o c.onnx"), 0);
    dg_test_expect_in(err, "digits: wrote c.onnx (ONNX opset 13, an ensemble of 3 members");
    size_t n;
    unsigned char *onnx = read_file("c.onnx", &n);
    ck_assert(contains(onnx, n, "members.2.dense2.bias") && !contains(onnx, n, "members.3.") &&
              contains(onnx, n, "\x22\x04Mean"));
    free(onnx);
    /* a file that is not a model among them: nothing written */
    ck_assert_int_eq(run(err, "export -m m.dgt -m e.safetensors -o bad.onnx"), 2);
    dg_test_expect_in(err, "digits: e.safetensors: not a digits model file");
    ck_assert(!exists("bad.onnx"));
    printf("ok   export -m m.dgt -m e.dgt: one ensemble of 3, members in order\n");
}
END_TEST

START_TEST(import_refuses_malformed_ensembles)
{
    struct st_file f = st_read("e.safetensors");
    char *h, *h2;

    h = replace(f.header, "\"members.1.dense2.bias\"", "\"dense2.bias\"");
    st_write(&f, "e_mixed.safetensors", h);
    free(h);
    expect_refused("e_mixed.safetensors",
                   "tensors of ensemble members ('members.0.conv1.weight') and of one model "
                   "('dense2.bias') in one file: an ensemble names every tensor members.M.NAME");

    /* every members.1. renamed members.2.: member 1 is missing */
    h = strdup(f.header);
    for (char *p = strstr(h, "\"members.1."); p; p = strstr(p, "\"members.1."))
        p[9] = '2';
    st_write(&f, "e_gap.safetensors", h);
    free(h);
    expect_refused("e_gap.safetensors", "member 1 has no tensors, but member 2 has (the members "
                                        "of an ensemble are numbered 0, 1, 2, ... without gaps)");

    h = replace(f.header, "\"members.1.conv1.weight\"", "\"members.01.conv1.weight\"");
    st_write(&f, "e_zero.safetensors", h);
    free(h);
    expect_refused("e_zero.safetensors",
                   "tensor 'members.01.conv1.weight': a member's tensor is named members.M.NAME "
                   "with M = 0, 1, 2, ... (decimal, no leading zeros)");
    h = replace(f.header, "\"members.1.conv1.weight\"", "\"members.x.conv1.weight\"");
    st_write(&f, "e_name.safetensors", h);
    free(h);
    expect_refused_with("e_name.safetensors", "tensor 'members.x.conv1.weight': a member's "
                                              "tensor is named members.M.NAME");
    h = replace(f.header, "\"members.1.conv1.weight\"", "\"members.64.conv1.weight\"");
    st_write(&f, "e_big.safetensors", h);
    free(h);
    expect_refused("e_big.safetensors", "tensor 'members.64.conv1.weight': a member index "
                                        "beyond the 64 members digits takes (members.0 .. "
                                        "members.63)");

    h = drop(f.header, "members.1.dense2.bias");
    st_write(&f, "e_missing.safetensors", h);
    free(h);
    expect_refused("e_missing.safetensors", "tensor 'members.1.dense2.bias' is missing");

    h = replace(f.header, "\"members.1.conv1.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,5,5]",
                "\"members.1.conv1.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,3,3]");
    st_write(&f, "e_shape.safetensors", h);
    free(h);
    expect_refused("e_shape.safetensors", "tensor 'members.1.conv1.weight' has shape [32, 1, 3, "
                                          "3], expected [32, 1, 5, 5] (the file has no "
                                          "digits.net metadata, so its tensors were read as the "
                                          "reference network's; a file of another network needs "
                                          "its --net spec there)");

    h = replace(f.header, "\"members.1.conv1.weight\"", "\"members.1.conv9.weight\"");
    st_write(&f, "e_unknown.safetensors", h);
    free(h);
    expect_refused("e_unknown.safetensors",
                   "unknown tensor 'members.1.conv9.weight' (digits reads members.M. followed by "
                   "conv1.weight, conv1.bias, conv2.weight, conv2.bias, conv3.weight, conv3.bias, "
                   "conv4.weight, conv4.bias, dense1.weight, dense1.bias, dense2.weight, "
                   "dense2.bias; fcK.weight and fcK.bias are taken for denseK)");

    h = replace(f.header, "\"members.1.dense1.weight\"", "\"members.1.fc1.weight\"");
    h2 = replace(h, "\"members.1.dense1.bias\"", "\"members.1.dense1.weight\"");
    st_write(&f, "e_twice.safetensors", h2);
    free(h);
    free(h2);
    expect_refused("e_twice.safetensors", "tensors 'members.1.fc1.weight' and "
                                          "'members.1.dense1.weight' are the same parameter "
                                          "(members.1.dense1.weight)");

    h = replace(f.header, "\"digits.members\":\"2\"", "\"digits.members\":\"3\"");
    st_write(&f, "e_count.safetensors", h);
    free(h);
    expect_refused("e_count.safetensors", "metadata digits.members is \"3\", but the tensors are "
                                          "those of 2 members");
    st_free(&f);

    /* a one-model file that says it holds more */
    struct st_file g = st_read("m.safetensors");
    h = replace(g.header, "\"format\":\"pt\"", "\"format\":\"pt\",\"digits.members\":\"2\"");
    st_write(&g, "m_count.safetensors", h);
    free(h);
    expect_refused("m_count.safetensors", "metadata digits.members is \"2\", but the tensors are "
                                          "those of 1 member");
    st_free(&g);
}
END_TEST

/* ---- the JSON parser ---- */

static void json_ok(const char *text, enum dg_json_type type)
{
    struct dg_json v;
    char error[256];
    int r = dg_json_parse(text, strlen(text), &v, error, sizeof error);
    ck_assert_msg(r == 0, "'%s' refused: %s", text, error);
    ck_assert_int_eq(v.type, type);
    dg_json_free(&v);
}

static void json_bad(const char *text, size_t length, const char *message)
{
    struct dg_json v;
    char error[256];
    int r = dg_json_parse(text, length, &v, error, sizeof error);
    ck_assert_msg(r == -1, "'%s' accepted", text);
    ck_assert_str_eq(error, message);
}

START_TEST(json_parser_is_strict)
{
    json_ok("{}", DG_JSON_OBJECT);
    json_ok(" [1, 2.5, -3e2, true, false, null, \"x\", {\"a\": []}] ", DG_JSON_ARRAY);
    json_ok("\"\\u00e9\\ud83d\\ude00\\\"\\\\\\/\\b\\f\\n\\r\\t\"", DG_JSON_STRING);
    struct dg_json v;
    char error[256];
    const char *text = "{\"k\": \"\\u00e9\\ud83d\\ude00 \xc3\xa9\", \"n\": 18446744073709551615, "
                       "\"big\": 18446744073709551616, \"neg\": -1, \"f\": 1.0}";
    ck_assert_int_eq(dg_json_parse(text, strlen(text), &v, error, sizeof error), 0);
    ck_assert_str_eq(dg_json_get(&v, "k")->string, "\xc3\xa9\xf0\x9f\x98\x80 \xc3\xa9");
    ck_assert(dg_json_get(&v, "n")->is_uint);
    ck_assert(dg_json_get(&v, "n")->uint_value == UINT64_MAX);
    ck_assert(!dg_json_get(&v, "big")->is_uint);
    ck_assert(!dg_json_get(&v, "neg")->is_uint);
    ck_assert(!dg_json_get(&v, "f")->is_uint);
    ck_assert_ptr_null(dg_json_get(&v, "missing"));
    dg_json_free(&v);

    json_bad("", 0, "byte 0: expected a value, found the end of the header");
    json_bad("{\"a\":1,}", 8, "byte 7: expected a key (a string), found '}'");
    json_bad("[1,]", 4, "byte 3: expected a value, found ']'");
    json_bad("{\"a\" 1}", 7, "byte 5: expected ':', found '1'");
    json_bad("{\"a\":1} x", 9, "byte 8: text after the end of the value");
    json_bad("{\"a\":1,\"a\":2}", 13, "byte 7: the key \"a\" appears twice");
    json_bad("[01]", 4, "byte 1: a number with a leading zero");
    json_bad("[1.]", 4, "byte 3: expected a digit after '.', found ']'");
    json_bad("[-]", 3, "byte 2: expected a digit, found ']'");
    json_bad("[tru]", 5, "byte 1: expected a value, found 't'");
    json_bad("[\"a\\x\"]", 7, "byte 3: an unknown escape '\\x'");
    json_bad("[\"\\ud800\"]", 10, "byte 2: a high surrogate without its low surrogate");
    json_bad("[\"\\udc00\"]", 10, "byte 2: a lone low surrogate");
    json_bad("[\"\\u12g4\"]", 10, "byte 6: expected four hex digits after \\u, found 'g'");
    json_bad("[\"a\nb\"]", 7, "byte 3: a control character (0x0a) in a string");
    json_bad("[\"\xc3\x28\"]", 6, "byte 2: invalid UTF-8 in a string");
    json_bad("[\"\xc0\xaf\"]", 6, "byte 2: invalid UTF-8 in a string");     /* overlong */
    json_bad("[\"\xed\xa0\x80\"]", 7, "byte 2: invalid UTF-8 in a string"); /* surrogate */
    json_bad("[\"abc", 5, "byte 1: a string without its closing '\"'");
    json_bad("[1] \0", 5, "byte 4: text after the end of the value");
    json_bad("[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]", 35, "byte 16: nested deeper than 16 levels");
    json_bad("{\"a\":1", 6, "byte 6: expected ',' or '}', found the end of the header");
}
END_TEST

/* 1M keys: accepted when distinct, refused naming the repeat otherwise; n log n either way. */
START_TEST(json_parser_handles_a_million_keys)
{
    const size_t keys = 1000000, per = 13; /* "k0000000":0, */
    size_t size = 2 + keys * per + 32;
    char *text = malloc(size);
    ck_assert_ptr_nonnull(text);
    size_t n = 0;
    text[n++] = '{';
    for (size_t i = 0; i < keys; i++)
        n += (size_t)sprintf(text + n, "%s\"k%07zu\":0", i ? "," : "", i);
    size_t closed = n;
    text[n++] = '}';
    struct dg_json v;
    char error[256];
    ck_assert_int_eq(dg_json_parse(text, n, &v, error, sizeof error), 0);
    ck_assert_uint_eq(v.count, keys);
    ck_assert_str_eq(v.keys[keys - 1], "k0999999");
    ck_assert_ptr_nonnull(dg_json_get(&v, "k0999999"));
    dg_json_free(&v);

    /* the same keys, then one of them again: the repeat is named at its byte */
    n = closed;
    n += (size_t)sprintf(text + n, ",\"k0500000\":1}");
    char expect[96];
    snprintf(expect, sizeof expect, "byte %zu: the key \"k0500000\" appears twice", closed + 1);
    json_bad(text, n, expect);
    /* the first repeat in text order is the one named, whatever the sort order */
    memcpy(text + 1 + 3 * per, "\"k0000002\"", 10); /* key 3 becomes a second k0000002 */
    snprintf(expect, sizeof expect, "byte %zu: the key \"k0000002\" appears twice", 1 + 3 * per);
    json_bad(text, n, expect);
    free(text);
}
END_TEST

/* A 100 MB array is refused at the value cap, long before its end, and the tree it built on
 * the way stays bounded (the parser once claimed 42 bytes for every byte of such a header). */
START_TEST(json_parser_bounds_a_100mb_array)
{
    const size_t size = 100u << 20;
    char *text = malloc(size);
    ck_assert_ptr_nonnull(text);
    text[0] = '[';
    for (size_t i = 1; i + 1 < size; i += 2)
        memcpy(text + i, "0,", 2);
    text[size - 2] = ' '; /* [0,0,...,0 ] */
    text[size - 1] = ']';
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    char expect[96];
    snprintf(expect, sizeof expect, "byte %zu: more than %d values (the limit of a header)",
             (size_t)1 + 2 * ((size_t)DG_JSON_MAX_VALUES - 1), DG_JSON_MAX_VALUES);
    json_bad(text, size, expect);
    getrusage(RUSAGE_SELF, &after);
    long grown_kb = after.ru_maxrss - before.ru_maxrss;
    printf("json: a 100 MB array refused; peak memory grew by %ld KiB\n", grown_kb);
    if (!getenv("DIGITS_TEST_SANITIZED")) /* ASan's shadow and quarantine are not the parser's */
        ck_assert_msg(grown_kb < 256 * 1024, "the parser's peak grew by %ld KiB", grown_kb);

    /* exactly the cap is accepted: the array and DG_JSON_MAX_VALUES - 1 zeros */
    size_t n = 1 + 2 * ((size_t)DG_JSON_MAX_VALUES - 1);
    text[n - 1] = ']';
    struct dg_json v;
    char error[256];
    ck_assert_msg(dg_json_parse(text, n, &v, error, sizeof error) == 0, "%s", error);
    ck_assert_uint_eq(v.count, (size_t)DG_JSON_MAX_VALUES - 1);
    dg_json_free(&v);
    free(text);
}
END_TEST

/* ---- outside tools (Python) ---- */

/* Runs a shell command; its output into DIR/NAME, printed; returns the exit status. */
static int shell(const char *log_name, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int shell(const char *log_name, const char *fmt, ...)
{
    char command[4096], full[4600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(command, sizeof command, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "cd '%s' && (%s) >'%s' 2>&1", dir, command, at(log_name));
    int status = system(full);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void print_log(const char *log_name)
{
    char *text = dg_test_slurp(at(log_name));
    fputs(text, stdout);
    fflush(stdout);
    free(text);
}

/* The virtual environment with onnxruntime, onnx, numpy and safetensors: .venv-export beside
 * the digits executable (the build directory), made when not there; or $DIGITS_EXPORT_VENV,
 * an environment someone made, used as it is (never made or removed here). 0 and the reason in
 * `why` when it cannot be had (no python3 -m venv, no network for pip). */
static int export_venv(char *python, size_t size, char *why, size_t why_size)
{
    char venv[1024], ready[1100], failed_marker[1100];
    const char *env = getenv("DIGITS_EXPORT_VENV");
    if (env && env[0]) {
        snprintf(python, size, "%s/bin/python", env);
        if (access(python, X_OK) == 0)
            return 1;
        snprintf(why, why_size, "DIGITS_EXPORT_VENV=%s has no bin/python", env);
        return 0;
    } else {
        const char *bin = dg_test_bin();
        const char *slash = strrchr(bin, '/');
        if (slash)
            snprintf(venv, sizeof venv, "%.*s/.venv-export", (int)(slash - bin), bin);
        else
            snprintf(venv, sizeof venv, "%s/.venv-export", dir);
    }
    snprintf(python, size, "%s/bin/python", venv);
    snprintf(ready, sizeof ready, "%s/.digits-ready", venv);
    snprintf(failed_marker, sizeof failed_marker, "%s/venv-failed", dir);
    struct stat st;
    if (stat(ready, &st) == 0)
        return 1;
    if (stat(failed_marker, &st) == 0) { /* an earlier test of this run tried */
        char *text = dg_test_slurp(failed_marker);
        snprintf(why, why_size, "%s", text);
        free(text);
        return 0;
    }
    printf("test_export: making a Python virtual environment for the export checks: python3 -m "
           "venv %s, then pip install " VENV_PACKAGES " (the first time takes a minute or "
           "two; log in %s.log)\n",
           venv, venv);
    fflush(stdout);
    int code = shell("venv.out",
                     "rm -rf '%s' && python3 -m venv '%s' >'%s.log' 2>&1 && '%s' -m pip install "
                     "--disable-pip-version-check --retries 1 --timeout 30 " VENV_PACKAGES
                     " >>'%s.log' 2>&1 && touch '%s'",
                     venv, venv, venv, python, venv, ready);
    if (code == 0) {
        printf("test_export: %s is ready\n", venv);
        return 1;
    }
    char tail[2400];
    snprintf(tail, sizeof tail,
             "(grep '^ERROR' '%s.log' || tail -n 2 '%s.log') 2>/dev/null | tail -n 2 | tr '\\n' "
             "' '",
             venv, venv);
    FILE *p = popen(tail, "r");
    char last[600] = "";
    if (p) {
        size_t got = fread(last, 1, sizeof last - 1, p);
        last[got] = '\0';
        pclose(p);
    }
    snprintf(why, why_size,
             "cannot make the virtual environment %s with " VENV_PACKAGES
             " (no network for pip?): %s",
             venv, last);
    FILE *marker = fopen(failed_marker, "w");
    if (marker) {
        fputs(why, marker);
        fclose(marker);
    }
    return 0;
}

/* Runs export_check.py MODE ARGS with `python` (its output into DIR/TAGMODE.out): 0 passes, 77
 * skips (prints the script's SKIP line), anything else fails with the script's output. Returns
 * 1 when it ran. */
static int check_script(const char *python, const char *mode, const char *tag, const char *args)
{
    char log_name[64];
    snprintf(log_name, sizeof log_name, "%s%s.out", tag, mode);
    int code = shell(log_name, "'%s' '%s' %s %s", python, script, mode, args);
    print_log(log_name);
    if (code == 77)
        return 0;
    ck_assert_msg(code == 0, "export_check.py %s %s failed (exit %d): %s", mode, args, code,
                  dg_test_slurp(at(log_name)));
    return 1;
}

/* The agreement checks run Python on the files digits wrote: nothing of digits runs in them,
 * so the sanitizer pass (which only slows them down) leaves them to the plain pass. */
static int sanitized_skip(const char *what)
{
    if (!getenv("DIGITS_TEST_SANITIZED"))
        return 0;
    printf("SKIP %s: sanitizer pass (DIGITS_TEST_SANITIZED); the Python side runs in the plain "
           "pass\n",
           what);
    return 1;
}

/* The one model ("m") or the ensemble ("e"): FILE_OPTION TAG.EXTENSION, checked against
 * `digits predict` of the same model file (m: probs.csv, sub.csv; e: e_probs.csv, e_sub.csv). */
static void agreement_args(char *args, size_t size, const char *file_option, const char *tag,
                           const char *extension)
{
    const char *outputs = strcmp(tag, "m") == 0 ? "" : "e_";
    snprintf(args, size, "%s %s.%s --test '%s' --probs %sprobs.csv --submission %ssub.csv",
             file_option, tag, extension, sample_test, outputs, outputs);
}

static const char *const models[2] = {"m", "e"};
static const char *const model_words[2] = {"the model", "the ensemble of 2"};

/* A network of --net (a convolution without ReLU, another kernel, dropout, a hidden dense
 * layer): the safetensors and ONNX files carry its spec as metadata digits.net; import builds
 * that network and predicts the same bytes; onnxruntime runs the ONNX graph and agrees with
 * predict; a spec in the metadata that does not parse is refused, naming the key. */
START_TEST(another_network_exports_and_imports)
{
    const char *source = getenv("DIGITS_SOURCE_DIR");
    const char *spec = "8C3L-P2-16C5-P2-D0.3-32-10";
    char err[512];
    ck_assert_int_eq(run(err,
                         "train '%s/data/sample/train.csv.gz' --limit 300 --epochs 1 --net %s "
                         "-o n.dgt --no-checkpoint -q --threads 2 --device cpu",
                         source, spec),
                     0);
    ck_assert_int_eq(run(err,
                         "predict -m n.dgt '%s' -o n_sub.csv --probs n_probs.csv --device cpu "
                         "--threads 2",
                         sample_test),
                     0);
    ck_assert_int_eq(run(err, "export -m n.dgt -o n.onnx"), 0);
    dg_test_expect_in(err, "digits: wrote n.onnx (ONNX opset 13, 28746 parameters)");
    ck_assert_int_eq(run(err, "export -m n.dgt -o n.safetensors"), 0);
    struct st_file f = st_read("n.safetensors");
    ck_assert_msg(strstr(f.header, "\"digits.net\":\"8C3L-P2-16C5-P2-D0.3-F-32-10\"") != NULL,
                  "%s", f.header);
    ck_assert_int_eq(run(err, "import n.safetensors -o n_back.dgt"), 0);
    ck_assert_int_eq(run(err,
                         "predict -m n_back.dgt '%s' -o n_back_sub.csv --probs n_back_probs.csv "
                         "--device cpu --threads 2",
                         sample_test),
                     0);
    char *a = dg_test_slurp(at("n_probs.csv")), *b = dg_test_slurp(at("n_back_probs.csv"));
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    ck_assert_int_eq(run(err, "info --model n_back.dgt"), 0);
    /* a network of as many parameters but another layer table (ReLU after the first
     * convolution): one file cannot hold both, however the members are given */
    ck_assert_int_eq(run(err,
                         "train '%s/data/sample/train.csv.gz' --limit 300 --epochs 1 --net "
                         "8C3-P2-16C5-P2-D0.3-32-10 -o r.dgt --no-checkpoint -q --threads 2 "
                         "--device cpu",
                         source),
                     0);
    static const char *const mixed[] = {"mix.safetensors", "mix.onnx"};
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(run(err, "export -m n.dgt -m r.dgt -o %s", mixed[i]), 2);
        char expected[512];
        snprintf(expected, sizeof expected,
                 "digits: %s: the members are of different networks (member 1: "
                 "8C3L-P2-16C5-P2-D0.3-F-32-10; member 2: 8C3-P2-16C5-P2-D0.3-F-32-10), and one "
                 "file holds members of one network; write each network's models to a file of "
                 "their own (digits predict and report combine files: -m A -m B)\n",
                 mixed[i]);
        char *text = dg_test_slurp(err);
        ck_assert_str_eq(text, expected);
        free(text);
        ck_assert(!exists(mixed[i]));
    }
    /* without digits.net the tensors are read as the reference network's, and the refusal
     * says so */
    char *unnamed = replace(f.header, "\"digits.net\"", "\"digits.nxt\"");
    st_write(&f, "n_unnamed.safetensors", unnamed);
    free(unnamed);
    expect_refused("n_unnamed.safetensors",
                   "tensor 'conv1.weight' has shape [8, 1, 3, 3], expected [32, 1, 5, 5] (the "
                   "file has no digits.net metadata, so its tensors were read as the reference "
                   "network's; a file of another network needs its --net spec there)");
    char *h = replace(f.header, "8C3L-P2-16C5", "8C4L-P2-16C5");
    st_write(&f, "n_bad.safetensors", h);
    free(h);
    expect_refused("n_bad.safetensors",
                   "metadata digits.net: --net '8C4L-P2-16C5-P2-D0.3-F-32-10': at character 3 "
                   "('4'): expected an odd kernel size (\"same\" padding is kernel/2 each side)");
    st_free(&f);
    if (sanitized_skip("onnxruntime agreement of the --net model"))
        return;
    char python[1100], why[2048], args[2048];
    if (!export_venv(python, sizeof python, why, sizeof why)) {
        printf("SKIP onnxruntime agreement of the --net model: %s\n", why);
        return;
    }
    snprintf(args, sizeof args,
             "--model n.onnx --test '%s' --probs n_probs.csv --submission n_sub.csv",
             sample_test);
    if (check_script(python, "onnx", "n", args))
        printf("ok   onnxruntime runs the %s network exported as ONNX and agrees with digits "
               "predict\n",
               spec);
}
END_TEST

/* Global average pooling (G), then batchnorm per unit: ONNX GlobalAveragePool + Flatten, the
 * architecture text, import predicting the same bytes; onnxruntime and numpy (the spec rebuilt
 * from the safetensors file) agree with predict. */
START_TEST(gap_network_exports_and_agrees)
{
    const char *source = getenv("DIGITS_SOURCE_DIR");
    char err[512];
    ck_assert_int_eq(run(err,
                         "train '%s/data/sample/train.csv.gz' --limit 300 --epochs 2 --net "
                         "16C3-B-32C3S2-G-B-10 -o g.dgt --no-checkpoint -q --threads 2 --device cpu",
                         source),
                     0);
    ck_assert_int_eq(run(err,
                         "predict -m g.dgt '%s' -o g_sub.csv --probs g_probs.csv --device cpu "
                         "--threads 2",
                         sample_test),
                     0);
    ck_assert_int_eq(run(err, "export -m g.dgt -o g.onnx"), 0);
    dg_test_expect_in(err, "digits: wrote g.onnx (ONNX opset 13, 5322 parameters)");
    ck_assert_int_eq(run(err, "export -m g.dgt -o g.safetensors"), 0);
    struct st_file f = st_read("g.safetensors");
    static const char *const names[] = {
        "\"digits.net\":\"16C3-B-32C3S2-G-B-10\"",
        "gap1 AdaptiveAvgPool2d(1) Flatten(1); batchnorm2 BatchNorm1d(32, eps=0.001",
        "\"dense1.weight\":{\"dtype\":\"F32\",\"shape\":[10,32]",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ck_assert_msg(strstr(f.header, names[i]) != NULL, "no %s in %s", names[i], f.header);
    st_free(&f);
    ck_assert_int_eq(run(err, "import g.safetensors -o g_back.dgt"), 0);
    ck_assert_int_eq(run(err,
                         "predict -m g_back.dgt '%s' -o g_back_sub.csv --probs g_back_probs.csv "
                         "--device cpu --threads 2",
                         sample_test),
                     0);
    char *a = dg_test_slurp(at("g_probs.csv")), *b = dg_test_slurp(at("g_back_probs.csv"));
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    if (sanitized_skip("onnxruntime and numpy agreement of the pooled model"))
        return;
    char python[1100], why[2048], args[2048];
    if (!export_venv(python, sizeof python, why, sizeof why)) {
        printf("SKIP onnxruntime and numpy agreement of the pooled model: %s\n", why);
        return;
    }
    snprintf(args, sizeof args,
             "--model g.onnx --test '%s' --probs g_probs.csv --submission g_sub.csv", sample_test);
    if (check_script(python, "onnx", "g", args))
        printf("ok   onnxruntime runs the global-average-pooled model and agrees with predict\n");
    snprintf(args, sizeof args,
             "--weights g.safetensors --test '%s' --probs g_probs.csv --submission g_sub.csv",
             sample_test);
    if (check_script(python, "numpy", "g", args))
        printf("ok   numpy rebuilds the global-average-pooled model and agrees with predict\n");
}
END_TEST

/* The deotte preset (batchnorm after every layer, "valid" and stride-2 convolutions): ONNX
 * BatchNormalization nodes with the running statistics and Conv pads / strides; safetensors
 * tensors in nn.BatchNorm2d's names; import predicts the same bytes; onnxruntime, and numpy
 * rebuilding the network from its spec, agree with predict. */
START_TEST(deotte_exports_and_agrees)
{
    const char *source = getenv("DIGITS_SOURCE_DIR");
    char err[512];
    ck_assert_int_eq(run(err,
                         "train '%s/data/sample/train.csv.gz' --limit 300 --epochs 2 --net deotte "
                         "-o d.dgt --no-checkpoint -q --threads 2 --device cpu",
                         source),
                     0);
    ck_assert_int_eq(run(err,
                         "predict -m d.dgt '%s' -o d_sub.csv --probs d_probs.csv --device cpu "
                         "--threads 2",
                         sample_test),
                     0);
    ck_assert_int_eq(run(err, "export -m d.dgt -o d.onnx"), 0);
    dg_test_expect_in(err, "digits: wrote d.onnx (ONNX opset 13, 327242 parameters)");
    ck_assert_int_eq(run(err, "export -m d.dgt -o d.safetensors"), 0);
    struct st_file f = st_read("d.safetensors");
    static const char *const names[] = {
        "\"batchnorm1.weight\":{\"dtype\":\"F32\",\"shape\":[32]",
        "\"batchnorm1.running_mean\":{\"dtype\":\"F32\",\"shape\":[32]",
        "\"batchnorm7.running_var\":{\"dtype\":\"F32\",\"shape\":[128]",
        "\"conv3.weight\":{\"dtype\":\"F32\",\"shape\":[32,32,5,5]",
        "\"dense1.weight\":{\"dtype\":\"F32\",\"shape\":[128,1024]",
        "conv3 Conv2d(32, 32, kernel_size=5, stride=2, padding=2) ReLU",
        "conv1 Conv2d(1, 32, kernel_size=3, padding=0) ReLU",
        "batchnorm1 BatchNorm2d(32, eps=0.001, momentum=0.01)",
        "\"batchnorm1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[]",
        "batchnorm7 BatchNorm1d(128, eps=0.001, momentum=0.01)",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ck_assert_msg(strstr(f.header, names[i]) != NULL, "no %s in %s", names[i], f.header);
    /* the step counter is an I64 there, nothing else */
    char *h = replace(f.header, "\"batchnorm3.num_batches_tracked\":{\"dtype\":\"I64\"",
                      "\"batchnorm3.num_batches_tracked\":{\"dtype\":\"F64\"");
    st_write(&f, "d_bad.safetensors", h);
    free(h);
    expect_refused("d_bad.safetensors", "tensor 'batchnorm3.num_batches_tracked' has dtype F64; "
                                        "digits reads I64 there (a step counter)");
    st_free(&f);
    ck_assert_int_eq(run(err, "import d.safetensors -o d_back.dgt"), 0);
    ck_assert_int_eq(run(err,
                         "predict -m d_back.dgt '%s' -o d_back_sub.csv --probs d_back_probs.csv "
                         "--device cpu --threads 2",
                         sample_test),
                     0);
    char *a = dg_test_slurp(at("d_probs.csv")), *b = dg_test_slurp(at("d_back_probs.csv"));
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    if (sanitized_skip("onnxruntime and numpy agreement of the deotte model"))
        return;
    char python[1100], why[2048], args[2048];
    if (!export_venv(python, sizeof python, why, sizeof why)) {
        printf("SKIP onnxruntime and numpy agreement of the deotte model: %s\n", why);
        return;
    }
    snprintf(args, sizeof args,
             "--model d.onnx --test '%s' --probs d_probs.csv --submission d_sub.csv", sample_test);
    if (check_script(python, "onnx", "d", args))
        printf("ok   onnxruntime runs the deotte model exported as ONNX and agrees with digits "
               "predict\n");
    snprintf(args, sizeof args,
             "--weights d.safetensors --test '%s' --probs d_probs.csv --submission d_sub.csv",
             sample_test);
    if (check_script(python, "numpy", "d", args))
        printf("ok   numpy rebuilds the deotte model from its spec and agrees with digits "
               "predict\n");
}
END_TEST

START_TEST(onnxruntime_agrees_with_predict)
{
    if (sanitized_skip("onnxruntime agreement"))
        return;
    char python[1100], why[2048], args[2048];
    if (!export_venv(python, sizeof python, why, sizeof why)) {
        printf("SKIP onnxruntime agreement: %s\n", why);
        return;
    }
    for (int i = 0; i < 2; i++) {
        agreement_args(args, sizeof args, "--model", models[i], "onnx");
        if (check_script(python, "onnx", models[i], args))
            printf("ok   onnxruntime runs %s exported as ONNX on %s and agrees with digits "
                   "predict\n",
                   model_words[i], sample_test);
    }
}
END_TEST

START_TEST(numpy_reproduces_predict)
{
    if (sanitized_skip("numpy agreement"))
        return;
    char python[1100], why[2048], args[2048];
    if (!export_venv(python, sizeof python, why, sizeof why)) {
        printf("SKIP numpy agreement: %s\n", why);
        return;
    }
    for (int i = 0; i < 2; i++) {
        agreement_args(args, sizeof args, "--weights", models[i], "safetensors");
        if (check_script(python, "numpy", models[i], args))
            printf("ok   numpy rebuilds %s from the safetensors file\n", model_words[i]);
    }
}
END_TEST

START_TEST(torch_reproduces_predict)
{
    if (sanitized_skip("PyTorch agreement"))
        return;
    const char *env = getenv("DIGITS_TEST_TORCH_PYTHON");
    const char *candidates[] = {env && env[0] ? env : "python3", "python3", "/usr/bin/python3"};
    const char *python = NULL;
    for (size_t i = 0; i < 3 && !python; i++)
        if (shell("torch-probe.out", "'%s' -c 'import torch, numpy'", candidates[i]) == 0)
            python = candidates[i];
    if (!python) {
        printf("SKIP PyTorch agreement: no python3 with torch and numpy (tried "
               "$DIGITS_TEST_TORCH_PYTHON, python3, /usr/bin/python3; Debian: python3-torch)\n");
        return;
    }
    char args[2048];
    for (int i = 0; i < 2; i++) {
        agreement_args(args, sizeof args, "--weights", models[i], "safetensors");
        if (check_script(python, "torch", models[i], args))
            printf("ok   PyTorch (%s) loads %s from the safetensors file (%s, strict) and "
                   "agrees\n",
                   python, model_words[i], i == 0 ? "nn.Module" : "an nn.ModuleList named members");
    }
}
END_TEST

/* Files written by the safetensors package itself (its own layout and tensor order, only
 * {"format": "pt"} as metadata) are read back into the same parameters: one model, with
 * dense or fc names, and the ensemble. */
START_TEST(import_reads_files_of_the_safetensors_package)
{
    char python[1100], why[2048];
    if (!export_venv(python, sizeof python, why, sizeof why)) {
        printf("SKIP import of the safetensors package's files: %s\n", why);
        return;
    }
    if (!check_script(python, "rewrite", "", "--weights m.safetensors --out pkg.safetensors"))
        return;
    if (!check_script(python, "rewrite", "fc",
                      "--weights m.safetensors --out pkg_fc.safetensors "
                      "--alias"))
        return;
    if (!check_script(python, "rewrite", "e", "--weights e.safetensors --out pkg_e.safetensors"))
        return;
    const char *files[] = {"pkg", "pkg_fc", "pkg_e"};
    const char *originals[] = {"m.dgt", "m.dgt", "e.dgt"};
    for (int i = 0; i < 3; i++) {
        char err[512], *s, *settings;
        unsigned char *p, *params;
        char name[64];
        ck_assert_int_eq(run(err, "import %s.safetensors -o %s.dgt", files[i], files[i]), 0);
        snprintf(name, sizeof name, "%s.dgt", files[i]);
        int members = ensemble_parts(originals[i], &settings, &params);
        ck_assert_int_eq(ensemble_parts(name, &s, &p), members);
        ck_assert(memcmp(params, p, (size_t)members * PARAMS * 4) == 0);
        free(s);
        free(p);
        free(settings);
        free(params);
    }
    printf("ok   files written by the safetensors package import to the same parameters (one "
           "model, fc names, the ensemble)\n");
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("export");
    TCase *tc = tcase_create("export");
    tcase_set_timeout(tc, 600);
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, export_refuses_other_formats_and_bad_usage);
    tcase_add_test(tc, safetensors_round_trip_is_bit_identical);
    tcase_add_test(tc, safetensors_names_and_layouts);
    tcase_add_test(tc, import_refuses_malformed_files);
    tcase_add_test(tc, import_refuses_non_finite_weights);
    tcase_add_test(tc, import_accepts_fc_names_and_no_metadata);
    tcase_add_test(tc, onnx_file_structure);
    tcase_add_test(tc, one_model_exports_as_before);
    tcase_add_test(tc, ensemble_safetensors_round_trip_is_bit_identical);
    tcase_add_test(tc, ensemble_safetensors_names_and_layouts);
    tcase_add_test(tc, ensemble_onnx_file_structure);
    tcase_add_test(tc, export_combines_several_model_files);
    tcase_add_test(tc, import_refuses_malformed_ensembles);
    tcase_add_test(tc, json_parser_is_strict);
    tcase_add_test(tc, json_parser_handles_a_million_keys);
    tcase_add_test(tc, json_parser_bounds_a_100mb_array);
    tcase_add_test(tc, another_network_exports_and_imports);
    tcase_add_test(tc, gap_network_exports_and_agrees);
    tcase_add_test(tc, deotte_exports_and_agrees);
    tcase_add_test(tc, onnxruntime_agrees_with_predict);
    tcase_add_test(tc, numpy_reproduces_predict);
    tcase_add_test(tc, torch_reproduces_predict);
    tcase_add_test(tc, import_reads_files_of_the_safetensors_package);
    suite_add_tcase(suite, tc);
    return dg_test_run_suite(suite);
}
