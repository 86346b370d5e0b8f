/* safetensors export and import (format in include/digits/io.h): the parameters under
 * PyTorch's names and layouts (src/io/export.h), F32 little-endian, in layer order. The reader
 * parses the JSON header strictly (src/io/json.c) and checks every tensor's name, dtype, shape
 * and data offsets before it copies a single value. */
#include "digits/checkpoint.h"
#include "digits/io.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/export.h"
#include "io/io_internal.h"
#include "io/json.h"

#define MAX_SETTINGS_TEXT ((size_t)1 << 19) /* the model file takes up to 1 MiB of settings */

static int put_text(struct buffer *b, const char *s)
{
    return buffer_put(b, s, strlen(s));
}

/* A JSON string: quotes, backslashes and control characters escaped; bytes that are not
 * valid UTF-8 become U+FFFD (JSON text must be UTF-8). */
static int put_json_string(struct buffer *b, const char *s)
{
    char *clean = dg_json_utf8_clean(s);
    if (!clean)
        return -1;
    int failed = put_text(b, "\"");
    for (const unsigned char *p = (const unsigned char *)clean; *p && !failed; p++) {
        char escape[8];
        if (*p == '"' || *p == '\\') {
            escape[0] = '\\';
            escape[1] = (char)*p;
            failed = buffer_put(b, escape, 2);
        } else if (*p == '\n') {
            failed = put_text(b, "\\n");
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(escape, sizeof escape, "\\u%04x", *p);
            failed = put_text(b, escape);
        } else {
            failed = buffer_put(b, p, 1);
        }
    }
    free(clean);
    return failed || put_text(b, "\"");
}

static int put_json_pair(struct buffer *b, const char *key, const char *value, int comma)
{
    return (comma && put_text(b, ",")) || put_json_string(b, key) || put_text(b, ":") ||
           put_json_string(b, value);
}

enum dg_status dg_export_safetensors(const char *path, const struct dg_model *model,
                                     const char *settings)
{
    return dg_export_safetensors_ensemble(path, model, 1, settings);
}

enum dg_status dg_export_safetensors_ensemble(const char *path, const struct dg_model *members,
                                              int count, const char *settings)
{
    enum dg_status checked = dg_io_check_members(path, members, count);
    if (checked != DG_OK)
        return checked;
    const struct dg_model *model = &members[0];
    struct dg_export_tensor tensors[DG_EXPORT_MAX_TENSORS];
    int count_per_member;
    int arch_len = dg_export_architecture(model, NULL, 0);
    char *arch = malloc((size_t)arch_len + 1);
    struct buffer header = {NULL, 0, 0}, file = {NULL, 0, 0};
    int failed = !arch;
    char net[DG_NET_SPEC_MAX + 1];
    dg_export_net_spec(model, net, sizeof net);
    if (arch) {
        char producer[64], member_count[16];
        dg_export_architecture(model, arch, (size_t)arch_len + 1);
        snprintf(producer, sizeof producer, "digits %s", DIGITS_VERSION);
        snprintf(member_count, sizeof member_count, "%d", count);
        int one = count == 1;
        failed =
            put_text(&header, "{\"__metadata__\":{") || put_json_pair(&header, "format", "pt", 0) ||
            put_json_pair(&header, "producer", producer, 1) ||
            put_json_pair(&header, "digits.architecture", arch, 1) ||
            (net[0] && put_json_pair(&header, DG_EXPORT_NET_KEY, net, 1)) ||
            (!one && put_json_pair(&header, DG_EXPORT_MEMBERS_KEY, member_count, 1)) ||
            put_json_pair(&header, "input",
                          "(N, 1, 28, 28) float32 = pixel / 255 (0 background, 1 ink), NCHW", 1) ||
            put_json_pair(&header, "output",
                          one ? "(N, 10) logits of the last layer; softmax(dim=1) gives the "
                                "probabilities of the digits 0-9"
                              : "each member: (N, 10) logits of its last layer; the ensemble's "
                                "probabilities of the digits 0-9 are the mean over the members "
                                "of softmax(dim=1)",
                          1) ||
            put_json_pair(&header, "layout",
                          one ? "PyTorch: Conv2d weight (out, in, kh, kw), Linear weight (out, "
                                "in); flatten in NCHW order, as torch.flatten(x, 1)"
                              : "PyTorch: member M's tensors are members.M.NAME (an "
                                "nn.ModuleList named members); Conv2d weight (out, in, kh, "
                                "kw), Linear weight (out, in); flatten in NCHW order, as "
                                "torch.flatten(x, 1)",
                          1) ||
            (settings && settings[0] && put_json_pair(&header, "digits.settings", settings, 1)) ||
            put_text(&header, "}");
    }
    uint64_t offset = 0;
    for (int m = 0; m < count && !failed; m++) {
        dg_export_member_tensors(&members[m], count > 1 ? m : -1, tensors, &count_per_member);
        for (int i = 0; i < count_per_member && !failed; i++) {
            const struct dg_export_tensor *t = &tensors[i];
            char entry[256];
            uint64_t bytes = t->is_counter ? 8 : (uint64_t)t->count * 4;
            int n = snprintf(entry, sizeof entry, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                             t->name, t->is_counter ? "I64" : "F32");
            for (int d = 0; d < t->rank; d++)
                n += snprintf(entry + n, sizeof entry - (size_t)n, "%s%" PRId64, d ? "," : "",
                              t->shape[d]);
            snprintf(entry + n, sizeof entry - (size_t)n,
                     "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset, offset + bytes);
            offset += bytes;
            failed = put_text(&header, entry);
        }
    }
    failed = failed || put_text(&header, "}");
    /* the data starts 8-byte aligned, as the safetensors library writes it */
    while (!failed && header.size % 8 != 0)
        failed = put_text(&header, " ");
    uint64_t header_length = header.size;
    failed = failed || put_u32(&file, (uint32_t)header_length) ||
             put_u32(&file, (uint32_t)(header_length >> 32)) ||
             buffer_put(&file, header.data, header.size);
    for (int m = 0; m < count && !failed; m++) {
        dg_export_member_tensors(&members[m], count > 1 ? m : -1, tensors, &count_per_member);
        for (int i = 0; i < count_per_member && !failed; i++) {
            if (tensors[i].is_counter)
                failed = put_u32(&file, 0) || put_u32(&file, 0);
            for (size_t k = 0; k < tensors[i].count && !failed; k++)
                failed = put_f32(&file, members[m].params[dg_export_index(&tensors[i], k)]);
        }
    }
    free(arch);
    free(header.data);
    if (failed) {
        free(file.data);
        return dg_error(DG_ERR_NOMEM, "%s: out of memory while writing safetensors", path);
    }
    enum dg_status status = dg_io_write_atomic(path, file.data, file.size);
    free(file.data);
    return status;
}

/* ---- import ---- */

struct found {
    const char *name; /* as in the file */
    uint64_t begin, end;
};

static int format_shape(char *text, size_t size, const int64_t *dims, const struct dg_json *json,
                        int rank)
{
    int n = snprintf(text, size, "[");
    for (int d = 0; d < rank && (size_t)n < size; d++) {
        if (d == 8 && rank > 9) {
            n += snprintf(text + n, size - (size_t)n, ", ... (%d dimensions)", rank);
            break;
        }
        const char *sep = d ? ", " : "";
        if (dims)
            n += snprintf(text + n, size - (size_t)n, "%s%" PRId64, sep, dims[d]);
        else
            n += snprintf(text + n, size - (size_t)n, "%s%" PRIu64, sep, json->items[d].uint_value);
    }
    if ((size_t)n < size)
        n += snprintf(text + n, size - (size_t)n, "]");
    return n;
}

/* The names this digits reads, for the unknown-tensor message. */
static void known_names(char *text, size_t size, const struct dg_export_tensor *tensors, int count)
{
    size_t used = 0;
    text[0] = '\0';
    for (int i = 0; i < count && used < size; i++)
        used += (size_t)snprintf(text + used, size - used, "%s%s", i ? ", " : "", tensors[i].name);
}

/* "denseK.weight" -> "fcK.weight"; "" for other layers. */
static void alias_of(const char *name, char *alias, size_t size)
{
    if (strncmp(name, "dense", 5) == 0)
        snprintf(alias, size, "fc%s", name + 5);
    else
        alias[0] = '\0';
}

static int compare_found(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* The form of the file: every tensor named plainly (one model: *members 1, *prefixed 0), or
 * every tensor "members.M.NAME" with M = 0..K-1, no gaps (*members K, *prefixed 1). */
static enum dg_status scan_members(const char *path, const struct dg_json *root, int *members,
                                   int *prefixed)
{
    const size_t prefix_len = strlen(DG_EXPORT_MEMBER_PREFIX);
    const char *plain = NULL, *member = NULL;
    uint64_t present = 0;
    int max = -1;
    *members = 1;
    *prefixed = 0;
    _Static_assert(DG_MAX_MEMBERS <= 64, "one bit per member in a uint64_t");
    for (size_t e = 0; e < root->count; e++) {
        const char *name = root->keys[e];
        if (strcmp(name, "__metadata__") == 0)
            continue;
        if (strncmp(name, DG_EXPORT_MEMBER_PREFIX, prefix_len) != 0) {
            if (!plain)
                plain = name;
            continue;
        }
        const char *p = name + prefix_len;
        int ok = *p >= '0' && *p <= '9' && !(p[0] == '0' && p[1] >= '0' && p[1] <= '9');
        unsigned long index = 0;
        while (ok && *p >= '0' && *p <= '9') {
            index = index * 10 + (unsigned long)(*p++ - '0');
            if (index >= DG_MAX_MEMBERS)
                return dg_error(DG_ERR_INPUT,
                                "%s: tensor '%s': a member index beyond the %d members "
                                "digits takes (members.0 .. members.%d)",
                                path, name, DG_MAX_MEMBERS, DG_MAX_MEMBERS - 1);
        }
        if (!ok || p[0] != '.' || p[1] == '\0')
            return dg_error(DG_ERR_INPUT,
                            "%s: tensor '%s': a member's tensor is named members.M.NAME with "
                            "M = 0, 1, 2, ... (decimal, no leading zeros)",
                            path, name);
        present |= (uint64_t)1 << index;
        if ((int)index > max)
            max = (int)index;
        if (!member)
            member = name;
    }
    if (plain && member)
        return dg_error(DG_ERR_INPUT,
                        "%s: tensors of ensemble members ('%s') and of one model ('%s') in one "
                        "file: an ensemble names every tensor members.M.NAME",
                        path, member, plain);
    *prefixed = member != NULL;
    *members = member ? max + 1 : 1;
    for (int m = 0; member && m < *members; m++)
        if (!(present >> m & 1))
            return dg_error(DG_ERR_INPUT,
                            "%s: member %d has no tensors, but member %d has (the members of "
                            "an ensemble are numbered 0, 1, 2, ... without gaps)",
                            path, m, max);
    return DG_OK;
}

/* "members.M." + the name, or the name alone (one model). */
static void full_name(char *text, size_t size, int prefixed, int member, const char *name)
{
    if (prefixed)
        snprintf(text, size, "%s%d.%s", DG_EXPORT_MEMBER_PREFIX, member, name);
    else
        snprintf(text, size, "%s", name);
}

/* The tensors' data must tile the data section: no overlap, no hole, nothing after them. */
static enum dg_status check_tiling(const char *path, const struct found *found, int total,
                                   uint64_t data_size)
{
    struct found *sorted = malloc((size_t)(total ? total : 1) * sizeof *sorted);
    if (!sorted)
        return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
    /* the tensors present (an optional step counter may be absent) */
    int present = 0;
    for (int t = 0; t < total; t++)
        if (found[t].name)
            sorted[present++] = found[t];
    total = present;
    qsort(sorted, (size_t)total, sizeof *sorted, compare_found);
    uint64_t at = 0;
    enum dg_status status = DG_OK;
    for (int t = 0; t < total && status == DG_OK; t++) {
        if (sorted[t].begin < at)
            status = dg_error(DG_ERR_INPUT,
                              "%s: bad safetensors file: the data of tensors '%s' "
                              "and '%s' overlap",
                              path, sorted[t - 1].name, sorted[t].name);
        else if (sorted[t].begin > at)
            status = dg_error(DG_ERR_INPUT,
                              "%s: bad safetensors file: bytes %" PRIu64 "..%" PRIu64
                              " of the data belong to no tensor",
                              path, at, sorted[t].begin - 1);
        at = sorted[t].end;
    }
    if (status == DG_OK && at != data_size)
        status = dg_error(DG_ERR_INPUT,
                          "%s: bad safetensors file: %" PRIu64 " bytes after the "
                          "last tensor's data",
                          path, data_size - at);
    free(sorted);
    return status;
}

/* Checks the header of the file (parsed into `root`) against the model's tensors, `members`
 * times (`prefixed`: names "members.M.NAME", as scan_members found): fills found[m * count + t]
 * in the model's tensor order. */
static enum dg_status check_tensors(const char *path, const struct dg_json *root,
                                    const struct dg_export_tensor *tensors, int count, int members,
                                    int prefixed, uint64_t data_size, int assumed,
                                    struct found *found)
{
    char names[512], canonical[96];
    const int total = members * count;
    for (size_t e = 0; e < root->count; e++) {
        const char *name = root->keys[e];
        const struct dg_json *info = &root->items[e];
        if (strcmp(name, "__metadata__") == 0) {
            if (info->type != DG_JSON_OBJECT)
                return dg_error(DG_ERR_INPUT,
                                "%s: bad safetensors header: __metadata__ is %s, "
                                "not an object",
                                path, dg_json_type_name(info->type));
            for (size_t m = 0; m < info->count; m++)
                if (info->items[m].type != DG_JSON_STRING)
                    return dg_error(DG_ERR_INPUT,
                                    "%s: bad safetensors header: __metadata__ "
                                    "\"%s\" is %s, not a string",
                                    path, info->keys[m], dg_json_type_name(info->items[m].type));
            continue;
        }
        if (root->key_lengths[e] != strlen(name))
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: a tensor name contains "
                            "a NUL character",
                            path);
        if (info->type != DG_JSON_OBJECT)
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: tensor '%s' is %s, not "
                            "an object",
                            path, name, dg_json_type_name(info->type));
        const struct dg_json *dtype = NULL, *shape = NULL, *offsets = NULL;
        for (size_t f = 0; f < info->count; f++) {
            const char *field = info->keys[f];
            if (strcmp(field, "dtype") == 0)
                dtype = &info->items[f];
            else if (strcmp(field, "shape") == 0)
                shape = &info->items[f];
            else if (strcmp(field, "data_offsets") == 0)
                offsets = &info->items[f];
            else
                return dg_error(DG_ERR_INPUT,
                                "%s: bad safetensors header: tensor '%s' has an "
                                "unknown field \"%s\"",
                                path, name, field);
        }
        if (!dtype || !shape || !offsets)
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: tensor '%s' has no "
                            "\"%s\"",
                            path, name,
                            !dtype   ? "dtype"
                            : !shape ? "shape"
                                     : "data_offsets");
        if (dtype->type != DG_JSON_STRING)
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: tensor '%s': dtype is "
                            "%s, not a string",
                            path, name, dg_json_type_name(dtype->type));
        int shape_ok = shape->type == DG_JSON_ARRAY;
        for (size_t d = 0; shape_ok && d < shape->count; d++)
            shape_ok = shape->items[d].type == DG_JSON_NUMBER && shape->items[d].is_uint;
        if (!shape_ok)
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: tensor '%s': shape is "
                            "not an array of non-negative integers",
                            path, name);
        if (offsets->type != DG_JSON_ARRAY || offsets->count != 2 ||
            offsets->items[0].type != DG_JSON_NUMBER || !offsets->items[0].is_uint ||
            offsets->items[1].type != DG_JSON_NUMBER || !offsets->items[1].is_uint)
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: tensor '%s': "
                            "data_offsets is not [begin, end] (two non-negative "
                            "integers)",
                            path, name);

        /* which member (scan_members checked the form) and which parameter */
        int member = 0;
        const char *rest = name;
        if (prefixed) {
            char *end;
            member = (int)strtol(name + strlen(DG_EXPORT_MEMBER_PREFIX), &end, 10);
            rest = end + 1;
        }
        int which = -1;
        for (int t = 0; t < count && which < 0; t++) {
            char alias[48];
            alias_of(tensors[t].name, alias, sizeof alias);
            if (strcmp(rest, tensors[t].name) == 0 || (alias[0] && strcmp(rest, alias) == 0))
                which = t;
        }
        if (which < 0) {
            known_names(names, sizeof names, tensors, count);
            return dg_error(DG_ERR_INPUT,
                            "%s: unknown tensor '%s' (digits reads %s%s; fcK.weight "
                            "and fcK.bias are taken for denseK)",
                            path, name, prefixed ? "members.M. followed by " : "", names);
        }
        const struct dg_export_tensor *t = &tensors[which];
        struct found *slot = &found[member * count + which];
        full_name(canonical, sizeof canonical, prefixed, member, t->name);
        if (slot->name)
            return dg_error(DG_ERR_INPUT, "%s: tensors '%s' and '%s' are the same parameter (%s)",
                            path, slot->name, name, canonical);
        const char *want_dtype = t->is_counter ? "I64" : "F32";
        if (strcmp(dtype->string, want_dtype) != 0 || dtype->length != 3)
            return dg_error(DG_ERR_INPUT, "%s: tensor '%s' has dtype %s; digits reads %s", path,
                            name, dtype->string,
                            t->is_counter ? "I64 there (a step counter)" : "F32 only");
        int same = (int)shape->count == t->rank;
        for (int d = 0; same && d < t->rank; d++)
            same = shape->items[d].uint_value == (uint64_t)t->shape[d];
        if (!same) {
            char have[160], want[80];
            format_shape(have, sizeof have, NULL, shape, (int)shape->count);
            format_shape(want, sizeof want, t->shape, NULL, t->rank);
            int transposed = t->rank == 2 && (int)shape->count == 2 &&
                             shape->items[0].uint_value == (uint64_t)t->shape[1] &&
                             shape->items[1].uint_value == (uint64_t)t->shape[0];
            return dg_error(DG_ERR_INPUT, "%s: tensor '%s' has shape %s, expected %s%s", path,
                            name, have, want,
                            transposed ? " (transposed: a dense weight is (out, in), as "
                                         "PyTorch's Linear; Keras' Dense kernel is (in, out))"
                            : assumed  ? " (the file has no " DG_EXPORT_NET_KEY " metadata, so "
                                         "its tensors were read as the reference network's; a "
                                         "file of another network needs its --net spec there)"
                                       : "");
        }
        uint64_t begin = offsets->items[0].uint_value, end = offsets->items[1].uint_value;
        if (t->is_counter && (end < begin || end - begin != 8))
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: tensor '%s': "
                            "data_offsets [%" PRIu64 ", %" PRIu64 "] do not hold "
                            "its one I64 value (8 bytes)",
                            path, name, begin, end);
        if (!t->is_counter && (end < begin || end - begin != (uint64_t)t->count * 4))
            return dg_error(DG_ERR_INPUT,
                            "%s: bad safetensors header: tensor '%s': "
                            "data_offsets [%" PRIu64 ", %" PRIu64 "] do not hold "
                            "its %zu F32 values (%zu bytes)",
                            path, name, begin, end, t->count, t->count * 4);
        if (end > data_size)
            return dg_error(DG_ERR_INPUT,
                            "%s: truncated safetensors file: tensor '%s' ends at "
                            "byte %" PRIu64 " of the data, which has %" PRIu64 " bytes",
                            path, name, end, data_size);
        slot->name = name;
        slot->begin = begin;
        slot->end = end;
    }
    for (int i = 0; i < total; i++)
        if (!found[i].name && !tensors[i % count].is_counter) {
            full_name(canonical, sizeof canonical, prefixed, i / count, tensors[i % count].name);
            return dg_error(DG_ERR_INPUT, "%s: tensor '%s' is missing", path, canonical);
        }

    return check_tiling(path, found, total, data_size);
}

/* The network the file's tensors are for: its metadata's digits.net (a --net spec), else the
 * reference network (files written before the key, or by other tools). */
static enum dg_status metadata_net(const char *path, const struct dg_json *root,
                                   struct dg_layer_spec *specs, int *layer_count, int *assumed)
{
    const struct dg_json *meta = dg_json_get(root, "__metadata__");
    const struct dg_json *net = meta ? dg_json_get(meta, DG_EXPORT_NET_KEY) : NULL;
    *assumed = !net;
    if (!net) {
        const struct dg_layer_spec *ref = dg_arch_reference(layer_count);
        memcpy(specs, ref, (size_t)*layer_count * sizeof *ref);
        return DG_OK;
    }
    if (net->type != DG_JSON_STRING || net->length > DG_NET_SPEC_MAX ||
        strlen(net->string) != net->length)
        return dg_error(DG_ERR_INPUT, "%s: metadata " DG_EXPORT_NET_KEY " is not a network spec",
                        path);
    if (dg_net_spec_parse(net->string, specs, layer_count) != DG_OK)
        return dg_error_prefix(DG_ERR_INPUT, "%s: metadata " DG_EXPORT_NET_KEY, path);
    return DG_OK;
}

/* The metadata: a "digits.architecture" must be this digits' one, a "digits.members" the
 * number of members the tensors make; "digits.settings" is returned (malloc) when present. */
static enum dg_status check_metadata(const char *path, const struct dg_json *root,
                                     const struct dg_model *model, int members, char **settings)
{
    const struct dg_json *meta = dg_json_get(root, "__metadata__");
    if (!meta)
        return DG_OK;
    const struct dg_json *said = dg_json_get(meta, DG_EXPORT_MEMBERS_KEY);
    if (said) {
        char count[16];
        snprintf(count, sizeof count, "%d", members);
        if (said->length != strlen(count) || strcmp(said->string, count) != 0)
            return dg_error(DG_ERR_INPUT,
                            "%s: metadata " DG_EXPORT_MEMBERS_KEY " is \"%.40s\", but the "
                            "tensors are those of %d member%s",
                            path, said->string, members, members == 1 ? "" : "s");
    }
    const struct dg_json *arch = dg_json_get(meta, "digits.architecture");
    if (arch) {
        int len = dg_export_architecture(model, NULL, 0);
        char *ours = malloc((size_t)len + 1);
        if (!ours)
            return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        dg_export_architecture(model, ours, (size_t)len + 1);
        int same = arch->length == (size_t)len && memcmp(arch->string, ours, (size_t)len) == 0;
        free(ours);
        if (!same)
            return dg_error(DG_ERR_INPUT,
                            "%s: another architecture than this digits' (metadata "
                            "digits.architecture: \"%.200s\")",
                            path, arch->string);
    }
    const struct dg_json *text = dg_json_get(meta, "digits.settings");
    if (text && settings) {
        if (text->length > MAX_SETTINGS_TEXT)
            return dg_error(DG_ERR_INPUT,
                            "%s: metadata digits.settings is too long (%zu bytes, "
                            "at most %zu)",
                            path, text->length, MAX_SETTINGS_TEXT);
        *settings = malloc(text->length + 1);
        if (!*settings)
            return dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        memcpy(*settings, text->string, text->length + 1);
    }
    return DG_OK;
}

enum dg_status dg_import_safetensors(const char *path, struct dg_model *model, char **settings)
{
    int count;
    return dg_import_safetensors_ensemble(path, model, 1, &count, settings);
}

enum dg_status dg_import_safetensors_ensemble(const char *path, struct dg_model *members,
                                              int max_members, int *member_count, char **settings)
{
    unsigned char *data = NULL;
    size_t size = 0;
    struct dg_json root;
    int have_root = 0, built = 0;
    struct found *found = NULL;
    *member_count = 0;
    if (max_members > 0)
        memset(&members[0], 0, sizeof members[0]);
    if (settings)
        *settings = NULL;
    enum dg_status status = dg_io_read_whole(path, "safetensors", &data, &size);
    if (status != DG_OK)
        return status;
    if (size >= 8 &&
        (memcmp(data, DG_MODEL_MAGIC, 8) == 0 || memcmp(data, DG_CHECKPOINT_MAGIC, 8) == 0)) {
        status = dg_error(DG_ERR_INPUT, "%s: a digits %s file, not safetensors", path,
                          data[3] == 'M' ? "model" : "checkpoint");
        goto fail;
    }
    if (size < 8) {
        status = dg_error(DG_ERR_INPUT,
                          "%s: not a safetensors file (%zu bytes, less than the "
                          "8-byte header length)",
                          path, size);
        goto fail;
    }
    uint64_t header_length = (uint64_t)get_u32(data) | (uint64_t)get_u32(data + 4) << 32;
    if (header_length > size - 8) {
        status = dg_error(DG_ERR_INPUT,
                          "%s: not a safetensors file or truncated: the header "
                          "length (%" PRIu64 " bytes) goes beyond the end of the "
                          "file (%zu bytes)",
                          path, header_length, size);
        goto fail;
    }
    if (header_length > DG_SAFETENSORS_MAX_HEADER) {
        status = dg_error(DG_ERR_INPUT,
                          "%s: bad safetensors header: %" PRIu64 " bytes, more "
                          "than the limit of %u",
                          path, header_length, DG_SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (header_length == 0 || data[8] != '{') {
        status = dg_error(DG_ERR_INPUT,
                          "%s: bad safetensors header: it does not start with "
                          "'{'",
                          path);
        goto fail;
    }
    char error[256];
    int parsed =
        dg_json_parse((const char *)data + 8, (size_t)header_length, &root, error, sizeof error);
    if (parsed == -2) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory reading the header", path);
        goto fail;
    }
    if (parsed != 0) {
        status = dg_error(DG_ERR_INPUT, "%s: bad safetensors header: %s", path, error);
        goto fail;
    }
    have_root = 1;

    int count = 1, prefixed = 0;
    if ((status = scan_members(path, &root, &count, &prefixed)) != DG_OK)
        goto fail;
    if (count > max_members) {
        if (max_members == 1)
            status = dg_error(DG_ERR_INPUT, "%s: an ensemble of %d members; this reads one model",
                              path, count);
        else
            status = dg_error(DG_ERR_INPUT, "%s: an ensemble of %d members, more than %d", path,
                              count, max_members);
        goto fail;
    }
    struct dg_layer_spec specs[DG_MAX_LAYERS];
    int layer_count, assumed;
    if ((status = metadata_net(path, &root, specs, &layer_count, &assumed)) != DG_OK)
        goto fail;
    for (; built < count; built++) {
        memset(&members[built], 0, sizeof members[built]);
        if ((status = dg_model_build(&members[built], specs, layer_count)) != DG_OK)
            goto fail;
    }
    struct dg_export_tensor tensors[DG_EXPORT_MAX_TENSORS];
    int tensor_count;
    dg_export_tensors(&members[0], tensors, &tensor_count);
    found = calloc((size_t)count * (size_t)tensor_count, sizeof *found);
    if (!found) {
        status = dg_error(DG_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    const unsigned char *tensor_data = data + 8 + header_length;
    uint64_t data_size = size - 8 - header_length;
    if ((status = check_tensors(path, &root, tensors, tensor_count, count, prefixed, data_size,
                                assumed, found)) != DG_OK ||
        (status = check_metadata(path, &root, &members[0], count, settings)) != DG_OK ||
        (settings && *settings &&
         (status = dg_io_check_setting_ranges(path, "safetensors", *settings)) != DG_OK))
        goto fail;
    for (int m = 0; m < count; m++)
        for (int t = 0; t < tensor_count; t++) {
            const unsigned char *src = tensor_data + found[m * tensor_count + t].begin;
            for (size_t i = 0; i < tensors[t].count; i++)
                members[m].params[dg_export_index(&tensors[t], i)] = get_f32(src + 4 * i);
        }
    for (int m = 0; m < count; m++)
        if ((status = dg_io_check_finite(path, "weights", &members[m], prefixed ? m : -1,
                                         members[m].params)) != DG_OK)
            goto fail;
    *member_count = count;
    free(found);
    dg_json_free(&root);
    free(data);
    return DG_OK;
fail:
    if (have_root)
        dg_json_free(&root);
    free(found);
    free(data);
    for (int m = 0; m < built; m++)
        dg_model_free(&members[m]);
    if (built == 0 && max_members > 0)
        dg_model_free(&members[0]);
    if (settings) {
        free(*settings);
        *settings = NULL;
    }
    return status;
}
