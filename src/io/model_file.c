/* The model file (format in include/digits/io.h): built in memory, written atomically, and
 * read back with every field checked. All integers and floats little-endian. */
#define _POSIX_C_SOURCE 200809L
#include "digits/checkpoint.h"
#include "digits/io.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "digits/train.h"
#include "io/export.h"
#include "io/io_internal.h"

#define HEADER_BYTES 16 /* magic + version + layer count */
#define LAYER_BYTES DG_IO_LAYER_BYTES
#define MAX_SETTINGS (1u << 20)

int dg_io_put_layers(struct buffer *b, const struct dg_model *model)
{
    int failed = put_u32(b, (uint32_t)model->layer_count);
    for (int i = 0; i < model->layer_count && !failed; i++) {
        const struct dg_layer_spec *spec = &model->layers[i].spec;
        /* the kernel word: the side in the low byte, bit 8 stride 2, bit 9 "valid" (0 for the
         * stride-1 "same" convolutions, so files of such networks read as they always did) */
        uint32_t kernel = (uint32_t)spec->kernel | (spec->stride == 2 ? 1u << 8 : 0u) |
                          (spec->valid ? 1u << 9 : 0u);
        failed = put_u32(b, (uint32_t)spec->kind) || put_u32(b, (uint32_t)spec->units) ||
                 put_u32(b, kernel) || put_u32(b, (uint32_t)spec->relu) ||
                 put_f32(b, spec->rate);
    }
    return failed;
}

enum dg_status dg_io_check_layers(const char *path, const char *kind, const unsigned char *table,
                                  uint32_t layer_count, uint64_t param_count,
                                  struct dg_model *model)
{
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    memset(model, 0, sizeof *model);
    if (layer_count < 1 || layer_count > DG_MAX_LAYERS)
        return dg_error(DG_ERR_INPUT, "%s: corrupted %s file (%u layers)", path, kind,
                        layer_count);
    for (uint32_t i = 0; i < layer_count; i++) {
        const unsigned char *q = table + (size_t)i * LAYER_BYTES;
        uint32_t kind_value = get_u32(q), units = get_u32(q + 4), word = get_u32(q + 8),
                 relu = get_u32(q + 12);
        uint32_t kernel = word & 0xffu;
        if (kind_value < DG_LAYER_CONV || kind_value > DG_LAYER_GAP ||
            units > DG_MAX_UNITS || kernel > DG_MAX_KERNEL || (word & ~0x3ffu) != 0 ||
            (kind_value != DG_LAYER_CONV && word != kernel) || relu > 1)
            return dg_error(DG_ERR_INPUT,
                            "%s: corrupted %s file (layer %u: kind %u, units %u, kernel %u, "
                            "relu %u)",
                            path, kind, i + 1, kind_value, units, kernel, relu);
        specs[i].kind = (enum dg_layer_kind)kind_value;
        specs[i].units = (int)units;
        specs[i].kernel = (int)kernel;
        specs[i].stride = kind_value == DG_LAYER_CONV ? (word & (1u << 8) ? 2 : 1) : 0;
        specs[i].valid = (word >> 9) & 1u;
        specs[i].relu = (int)relu;
        specs[i].rate = get_f32(q + 16);
    }
    /* the table first, without parameters: a file's count must match before anything is
     * allocated */
    enum dg_status status = dg_model_layout(model, specs, (int)layer_count, NULL);
    if (status != DG_OK)
        return dg_error_prefix(DG_ERR_INPUT, "%s: corrupted %s file", path, kind);
    if (model->param_count != param_count)
        return dg_error(DG_ERR_INPUT, "%s: corrupted %s file (%llu parameters, the "
                                      "architecture has %zu)",
                        path, kind, (unsigned long long)param_count, model->param_count);
    if ((status = dg_model_build(model, specs, (int)layer_count)) != DG_OK)
        return dg_error_prefix(status, "%s", path);
    return DG_OK;
}

enum dg_status dg_io_write_atomic(const char *path, const void *data, size_t size)
{
    struct dg_atomic_file file;
    enum dg_status status = dg_atomic_open(&file, path);
    if (status != DG_OK)
        return status;
    if (fwrite(data, 1, size, file.fp) != size) {
        status = dg_error(DG_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        dg_atomic_abort(&file);
        return status;
    }
    return dg_atomic_commit(&file);
}

enum dg_status dg_io_finish_file(const char *path, const char *what, struct buffer *b, int failed)
{
    if (!failed)
        failed = put_u32(b, (uint32_t)crc32(0L, b->data, (uInt)b->size));
    enum dg_status status =
        failed ? dg_error(DG_ERR_NOMEM, "%s: out of memory while writing the %s", path, what)
               : dg_io_write_atomic(path, b->data, b->size);
    free(b->data);
    b->data = NULL;
    return status;
}

/* A model file that ends before its header does. */
static enum dg_status truncated(const char *path, size_t size)
{
    return dg_error(DG_ERR_INPUT,
                    "%s: truncated model file (%zu bytes): the copy is incomplete; copy it again",
                    path, size);
}

enum dg_status dg_io_check_size_and_crc(const char *path, const char *kind,
                                        const unsigned char *data, size_t size, size_t expected)
{
    if (size != expected)
        return dg_error(DG_ERR_INPUT, "%s: %s %s file (%zu bytes, expected %zu): %s", path,
                        size < expected ? "truncated" : "corrupted", kind, size, expected,
                        size < expected ? "the copy is incomplete; copy it again"
                                        : "it was changed or is another file; copy it again");
    uint32_t stored_crc = get_u32(data + size - 4);
    uint32_t actual_crc = (uint32_t)crc32(0L, data, (uInt)(size - 4));
    if (stored_crc != actual_crc)
        return dg_error(DG_ERR_INPUT,
                        "%s: corrupted %s file (CRC32 %08x, expected %08x): its bytes changed "
                        "since it was written; copy it again",
                        path, kind, actual_crc, stored_crc);
    return DG_OK;
}

enum dg_status dg_io_check_members(const char *path, const struct dg_model *members, int count)
{
    if (count < 1 || count > DG_MAX_MEMBERS)
        return dg_error(DG_ERR_USAGE, "%s: an ensemble of %d members (1..%d)", path, count,
                        DG_MAX_MEMBERS);
    /* one layer table for all the members: a file records it once */
    char first[DG_NET_SPEC_MAX + 1], other[DG_NET_SPEC_MAX + 1];
    dg_model_net_spec(&members[0], first, sizeof first);
    for (int m = 1; m < count; m++) {
        dg_model_net_spec(&members[m], other, sizeof other);
        if (strcmp(first, other) != 0 || members[m].param_count != members[0].param_count)
            return dg_error(DG_ERR_USAGE,
                            "%s: the members are of different networks (member 1: %s; member "
                            "%d: %s), and one file holds members of one network; write each "
                            "network's models to a file of their own (digits predict and "
                            "report combine files: -m A -m B)",
                            path, first, m + 1, other);
    }
    return DG_OK;
}

enum dg_status dg_ensemble_save(const char *path, const struct dg_model *members, int count,
                                const char *settings)
{
    enum dg_status checked = dg_io_check_members(path, members, count);
    if (checked != DG_OK)
        return checked;
    struct buffer b = {NULL, 0, 0};
    size_t settings_len = settings ? strlen(settings) : 0;
    /* one model: version 1, which every digits reads; several: version 2 with a member count */
    int failed = buffer_put(&b, DG_MODEL_MAGIC, 8) ||
                 put_u32(&b, count == 1 ? DG_MODEL_VERSION : DG_ENSEMBLE_VERSION) ||
                 dg_io_put_layers(&b, &members[0]);
    uint64_t params = members[0].param_count;
    failed = failed || put_u32(&b, (uint32_t)params) || put_u32(&b, (uint32_t)(params >> 32)) ||
             (count > 1 && put_u32(&b, (uint32_t)count)) ||
             put_u32(&b, (uint32_t)settings_len) ||
             (settings_len && buffer_put(&b, settings, settings_len));
    for (int m = 0; m < count && !failed; m++)
        for (size_t i = 0; i < members[m].param_count && !failed; i++)
            failed = put_f32(&b, members[m].params[i]);
    return dg_io_finish_file(path, "model", &b, failed);
}

enum dg_status dg_model_save(const char *path, const struct dg_model *model, const char *settings)
{
    return dg_ensemble_save(path, model, 1, settings);
}

enum dg_status dg_io_check_setting_ranges(const char *path, const char *kind, const char *text)
{
    static const struct {
        const char *key, *option;
        int integer, zero_means_never;
        double min, max;
    } bounds[] = {
        {"epochs", "--epochs", 1, 0, DG_TRAIN_EPOCHS_MIN, DG_TRAIN_EPOCHS_MAX},
        {"batch", "--batch", 1, 0, DG_TRAIN_BATCH_MIN, DG_TRAIN_BATCH_MAX},
        {"lr", "--lr", 0, 0, DG_TRAIN_LR_MIN, DG_TRAIN_LR_MAX},
        {"val_split", "--val-split", 0, 0, DG_TRAIN_VAL_SPLIT_MIN, DG_TRAIN_VAL_SPLIT_MAX},
        {"early_stop", "--early-stop", 1, 1, DG_TRAIN_EARLY_STOP_MIN, DG_TRAIN_EARLY_STOP_MAX},
    };
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        const char *v = dg_settings_value(text, bounds[b].key);
        if (!v)
            continue;
        size_t len = strcspn(v, "\n");
        char *end = NULL;
        int ok;
        errno = 0;
        if (bounds[b].integer) {
            long x = strtol(v, &end, 10);
            ok = !errno && end != v && end == v + len &&
                 ((x >= (long)bounds[b].min && x <= (long)bounds[b].max) ||
                  (bounds[b].zero_means_never && x == 0));
        } else {
            /* the CLI checks the double it parsed and keeps a float: compare as floats */
            float x = strtof(v, &end);
            ok = end != v && end == v + len && isfinite(x) && x >= (float)bounds[b].min &&
                 x <= (float)bounds[b].max;
        }
        if (ok)
            continue;
        int shown = len > 40 ? 40 : (int)len;
        if (bounds[b].integer)
            return dg_error(DG_ERR_INPUT,
                            "%s: corrupted %s file (%s=%.*s: %s expects an integer in %ld..%ld)",
                            path, kind, bounds[b].key, shown, v, bounds[b].option,
                            (long)bounds[b].min, (long)bounds[b].max);
        return dg_error(DG_ERR_INPUT,
                        "%s: corrupted %s file (%s=%.*s: %s expects a number in [%g, %g])", path,
                        kind, bounds[b].key, shown, v, bounds[b].option, bounds[b].min,
                        bounds[b].max);
    }
    return DG_OK;
}

/* What a file that is not a model file is, by its first bytes, and the command that takes it:
 * for the refusal of `-m FILE`. */
const char *dg_io_what_file_is(const char *path, const unsigned char *data, size_t size)
{
    static char text[4400];
    if (size >= 8 && memcmp(data, DG_CHECKPOINT_MAGIC, 8) == 0)
        snprintf(text, sizeof text,
                 "it is a training checkpoint; it continues training with `digits train TRAIN "
                 "--resume %s`, and the model file is what that run writes",
                 path);
    else if (size >= 9 && data[8] == '{' && get_u32(data + 4) == 0)
        snprintf(text, sizeof text,
                 "it is a safetensors file; `digits import %s -o model.dgt` makes a model of it",
                 path);
    else if (size >= 8 && memcmp(data, "\x89HDF\r\n\x1a\n", 8) == 0)
        snprintf(text, sizeof text,
                 "it is an HDF5 (Keras .h5) file, which digits does not read; save the weights "
                 "as safetensors (PyTorch names) and `digits import` them");
    else if (size >= 4 && memcmp(data, "PK\x03\x04", 4) == 0)
        snprintf(text, sizeof text,
                 "it is a ZIP archive (a PyTorch torch.save file is one): digits does not read "
                 "it; save a PyTorch state_dict with safetensors.torch.save_file and `digits "
                 "import` that");
    else if (size >= 2 && data[0] == 0x80 && data[1] >= 2 && data[1] <= 5)
        snprintf(text, sizeof text,
                 "it is a Python pickle (an old PyTorch .pt file?), which digits does not read; "
                 "save the state_dict with safetensors.torch.save_file and `digits import` that");
    else if (size >= 2 && data[0] == 0x08 && data[1] >= 3 && data[1] <= 12)
        snprintf(text, sizeof text,
                 "it looks like an ONNX model, which digits writes (`digits export`) but does "
                 "not read back; -m takes the .dgt model file it was exported from");
    else if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b)
        snprintf(text, sizeof text,
                 "it is gzip-compressed (data? -m takes a model file, the data goes after the "
                 "options)");
    else
        snprintf(text, sizeof text,
                 "-m takes a model file written by `digits train` (or `digits import`)");
    return text;
}

/* Reads a model (version 1) or ensemble (version 2) file into members[0..*count). */
static enum dg_status load_members(const char *path, struct dg_model *members, int max_members,
                                   int one_model, int *count, char *settings,
                                   size_t settings_size)
{
    unsigned char *data = NULL;
    size_t size = 0;
    *count = 0;
    enum dg_status status = dg_io_read_whole(path, "model", &data, &size);
    if (status != DG_OK)
        return status;
    if (size < 8 || memcmp(data, DG_MODEL_MAGIC, 8) != 0) {
        status = dg_error(DG_ERR_INPUT, "%s: not a digits model file (no %s magic): %s", path,
                          DG_MODEL_MAGIC, dg_io_what_file_is(path, data, size));
        goto done;
    }
    if (size < HEADER_BYTES) {
        status = truncated(path, size);
        goto done;
    }
    uint32_t version = get_u32(data + 8);
    if (version != DG_MODEL_VERSION && version != DG_ENSEMBLE_VERSION) {
        status = dg_error(DG_ERR_INPUT, "%s: model format version %u, this digits reads "
                                        "versions %u and %u",
                          path, version, DG_MODEL_VERSION, DG_ENSEMBLE_VERSION);
        goto done;
    }
    uint32_t layer_count = get_u32(data + 12);
    if (layer_count < 1 || layer_count > DG_MAX_LAYERS) {
        status = dg_error(DG_ERR_INPUT, "%s: corrupted model file (%u layers)", path,
                          layer_count);
        goto done;
    }
    size_t counts = version == DG_ENSEMBLE_VERSION ? 16 : 12;
    size_t fixed = HEADER_BYTES + (size_t)layer_count * LAYER_BYTES + counts;
    if (size < fixed + 4) {
        status = truncated(path, size);
        goto done;
    }
    const unsigned char *p = data + HEADER_BYTES + (size_t)layer_count * LAYER_BYTES;
    uint64_t param_count = (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
    uint32_t member_count = version == DG_ENSEMBLE_VERSION ? get_u32(p + 8) : 1;
    uint32_t settings_len = get_u32(p + counts - 4);
    if (settings_len > MAX_SETTINGS || param_count > ((uint64_t)1 << 28) || member_count < 1 ||
        member_count > DG_MAX_MEMBERS) {
        status = dg_error(DG_ERR_INPUT, "%s: corrupted model file (bad header sizes)", path);
        goto done;
    }
    size_t expected = fixed + settings_len + (size_t)member_count * (size_t)param_count * 4 + 4;
    if ((status = dg_io_check_size_and_crc(path, "model", data, size, expected)) != DG_OK)
        goto done;
    if ((int)member_count > max_members) {
        if (one_model)
            status = dg_error(DG_ERR_INPUT,
                              "%s: an ensemble of %u members; this command takes one model "
                              "(predict and eval take ensembles)",
                              path, member_count);
        else
            status = dg_error(DG_ERR_INPUT,
                              "%s: %u more members would make more than %d in all (the most "
                              "one run combines; %d are already loaded)",
                              path, member_count, DG_MAX_MEMBERS, DG_MAX_MEMBERS - max_members);
        goto done;
    }
    char *text = malloc((size_t)settings_len + 1);
    if (!text) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(text, p + counts, settings_len);
    text[settings_len] = '\0';
    status = dg_io_check_setting_ranges(path, "model", text);
    free(text);
    if (status != DG_OK)
        goto done;
    const unsigned char *params = p + counts + settings_len;
    for (uint32_t m = 0; m < member_count; m++) {
        struct dg_model *model = &members[m];
        memset(model, 0, sizeof *model);
        status = dg_io_check_layers(path, "model", data + HEADER_BYTES, layer_count, param_count,
                                    model);
        if (model->params)
            *count = (int)m + 1; /* built: freed below on failure */
        if (status != DG_OK)
            goto done;
        for (size_t i = 0; i < model->param_count; i++)
            model->params[i] = get_f32(params + ((size_t)m * param_count + i) * 4);
        status = dg_io_check_finite(path, "weights", model, member_count > 1 ? (int)m : -1,
                                    model->params);
        if (status != DG_OK)
            goto done;
    }
    if (settings && settings_size) {
        size_t n = settings_len < settings_size - 1 ? settings_len : settings_size - 1;
        memcpy(settings, p + counts, n);
        settings[n] = '\0';
    }
done:
    if (status != DG_OK) {
        for (int m = 0; m < *count; m++)
            dg_model_free(&members[m]);
        *count = 0;
    }
    free(data);
    return status;
}

enum dg_status dg_model_load(const char *path, struct dg_model *model, char *settings,
                             size_t settings_size)
{
    int count;
    memset(model, 0, sizeof *model);
    return load_members(path, model, 1, 1, &count, settings, settings_size);
}

enum dg_status dg_ensemble_load(const char *path, struct dg_model *members, int max_members,
                                int *count, char *settings, size_t settings_size)
{
    return load_members(path, members, max_members, 0, count, settings, settings_size);
}

enum dg_status dg_io_read_whole(const char *path, const char *kind, unsigned char **data,
                                size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return dg_error_path(path, "open", 0, errno);
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        return dg_error_path(path, "read", 0, EISDIR);
    }
    struct buffer b = {NULL, 0, 0};
    unsigned char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (buffer_put(&b, chunk, got)) {
            fclose(fp);
            free(b.data);
            return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        }
        if (b.size > (size_t)1 << 31) {
            fclose(fp);
            free(b.data);
            return dg_error(DG_ERR_INPUT, "%s: not a digits %s file (larger than 2 GiB)", path,
                            kind);
        }
    }
    int error = ferror(fp) ? (errno ? errno : EIO) : 0;
    fclose(fp);
    if (error) {
        free(b.data);
        return dg_error(DG_ERR_IO, "%s: read failed: %s", path, strerror(error));
    }
    *data = b.data;
    *size = b.size;
    return DG_OK;
}

const char *dg_settings_value(const char *text, const char *key)
{
    size_t len = strlen(key);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, key, len) == 0 && line[len] == '=')
            return line + len + 1;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NULL;
}
