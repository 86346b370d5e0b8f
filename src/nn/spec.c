/* The text form of a layer table (`digits train --net`, include/digits/model.h): parsed with
 * the position of every fault, printed in one canonical spelling, and the named presets. */
#include "digits/model.h"

#include "digits/data.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    const char *spec;
} presets[] = {
    {"reference", "32C5-32C5-P2-D0.25-64C3-64C3-P2-D0.25-F-256-D0.5-10"},
    {"deotte", "32C3V-B-32C3V-B-32C5S2-B-D0.4-64C3V-B-64C3V-B-64C5S2-B-D0.4-F-128-B-D0.4-10"},
};

const char *dg_net_preset(const char *name)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcasecmp(name, presets[i].name) == 0)
            return presets[i].spec;
    return NULL;
}

const char *dg_net_preset_names(void)
{
    return "reference, deotte";
}

/* What the parser looks at: the text, and where the current layer began. */
struct cursor {
    const char *text;
    const char *p;
};

static enum dg_status fault(const struct cursor *c, const char *at, const char *expected)
{
    size_t column = (size_t)(at - c->text) + 1;
    if (*at == '\0')
        return dg_error(DG_ERR_USAGE, "--net '%s': at character %zu (the end): expected %s",
                        c->text, column, expected);
    return dg_error(DG_ERR_USAGE, "--net '%s': at character %zu ('%c'): expected %s", c->text,
                    column, *at, expected);
}

/* A decimal count 1..max at c->p (digits only, no sign, no leading zero); advances. */
static enum dg_status count_at(struct cursor *c, int max, const char *what, int *out)
{
    const char *start = c->p;
    if (!isdigit((unsigned char)*c->p) || *c->p == '0') {
        char text[160];
        snprintf(text, sizeof text, "%s (1..%d)", what, max);
        return fault(c, c->p, text);
    }
    long value = 0;
    while (isdigit((unsigned char)*c->p)) {
        value = value * 10 + (*c->p - '0');
        if (value > max) {
            char text[160];
            snprintf(text, sizeof text, "%s (at most %d)", what, max);
            return fault(c, start, text);
        }
        c->p++;
    }
    *out = (int)value;
    return DG_OK;
}

/* The end of a layer: '-' (another follows) or the end of the text. */
static int layer_end(const char *p)
{
    return *p == '-' || *p == '\0';
}

static enum dg_status parse_layer(struct cursor *c, struct dg_layer_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    const char *start = c->p;
    int letter = tolower((unsigned char)*c->p);
    enum dg_status status;
    if (letter == 'p') {
        c->p++;
        if (*c->p != '2' || !layer_end(c->p + 1))
            return fault(c, c->p, "'2' ending the layer (P2: 2x2 max-pooling, the one pooling)");
        c->p++;
        spec->kind = DG_LAYER_MAXPOOL;
        return DG_OK;
    }
    if (letter == 'b') {
        c->p++;
        if (!layer_end(c->p))
            return fault(c, c->p, "'-' or the end after B (batch normalisation)");
        spec->kind = DG_LAYER_BATCHNORM;
        return DG_OK;
    }
    if (letter == 'g') {
        c->p++;
        if (!layer_end(c->p))
            return fault(c, c->p, "'-' or the end after G (global average pooling)");
        spec->kind = DG_LAYER_GAP;
        return DG_OK;
    }
    if (letter == 'f') {
        c->p++;
        if (!layer_end(c->p))
            return fault(c, c->p, "'-' or the end after F (flatten)");
        spec->kind = DG_LAYER_FLATTEN;
        return DG_OK;
    }
    if (letter == 'd') {
        c->p++;
        const char *number = c->p;
        if (!isdigit((unsigned char)*number) && *number != '.')
            return fault(c, number, "a dropout rate after D, 0 <= rate < 1 (e.g. D0.25)");
        while (isdigit((unsigned char)*c->p) || *c->p == '.')
            c->p++;
        char text[32];
        size_t length = (size_t)(c->p - number);
        if (length >= sizeof text)
            return fault(c, number, "a dropout rate of at most 31 characters");
        memcpy(text, number, length);
        text[length] = '\0';
        char *end;
        errno = 0;
        float rate = strtof(text, &end);
        if (*end != '\0' || errno != 0 || !(rate >= 0.0f && rate < 1.0f))
            return fault(c, number, "a dropout rate 0 <= rate < 1 (e.g. D0.25)");
        if (!layer_end(c->p))
            return fault(c, c->p, "'-' or the end after the dropout rate");
        spec->kind = DG_LAYER_DROPOUT;
        spec->rate = rate;
        return DG_OK;
    }
    if (!isdigit((unsigned char)*c->p))
        return fault(c, start,
                     "a layer: NcK (convolution), B (batch normalisation), P2 (pooling), G "
                     "(global average pooling), DR (dropout), F (flatten) or N (dense)");
    int units;
    if ((status = count_at(c, DG_MAX_UNITS, "a filter or unit count", &units)) != DG_OK)
        return status;
    spec->units = units;
    spec->relu = 1;
    if (tolower((unsigned char)*c->p) == 'c') {
        c->p++;
        int kernel;
        const char *at = c->p;
        if ((status = count_at(c, DG_MAX_KERNEL, "the kernel size after C (e.g. 32C5)",
                               &kernel)) != DG_OK)
            return status;
        if (kernel % 2 == 0)
            return fault(c, at, "an odd kernel size (\"same\" padding is kernel/2 each side)");
        spec->kind = DG_LAYER_CONV;
        spec->kernel = kernel;
        spec->stride = 1;
        if (tolower((unsigned char)*c->p) == 's') {
            c->p++;
            if ((*c->p != '1' && *c->p != '2') || isdigit((unsigned char)c->p[1]))
                return fault(c, c->p, "a stride of 1 or 2 after S (e.g. 32C5S2)");
            spec->stride = *c->p - '0';
            c->p++;
        }
        if (tolower((unsigned char)*c->p) == 'v') {
            spec->valid = 1;
            c->p++;
        }
    } else {
        spec->kind = DG_LAYER_DENSE;
    }
    if (tolower((unsigned char)*c->p) == 'l') {
        spec->relu = 0;
        c->p++;
    }
    if (!layer_end(c->p))
        return fault(c, c->p,
                     spec->kind == DG_LAYER_CONV
                         ? "'-', the end, or S2 (stride 2), V (no padding), L (no ReLU) in this "
                           "order after the convolution"
                         : "'-', the end, C (a convolution: NcK) or L (no ReLU) after the count");
    return DG_OK;
}

enum dg_status dg_net_spec_parse(const char *text, struct dg_layer_spec *specs, int *layer_count)
{
    *layer_count = 0;
    const char *preset = dg_net_preset(text);
    const char *spec = preset ? preset : text;
    if (strlen(spec) > DG_NET_SPEC_MAX)
        return dg_error(DG_ERR_USAGE, "--net: a spec of %zu characters (at most %d)",
                        strlen(spec), DG_NET_SPEC_MAX);
    struct cursor c = {spec, spec};
    const char *starts[DG_MAX_LAYERS];
    int count = 0, flat = 0;
    if (*spec == '\0')
        return dg_error(DG_ERR_USAGE,
                        "--net '': expected a preset (%s) or a layer spec such as "
                        "32C5-P2-F-128-10",
                        dg_net_preset_names());
    for (;;) {
        struct dg_layer_spec layer;
        const char *start = c.p;
        enum dg_status status = parse_layer(&c, &layer);
        if (status != DG_OK) {
            /* a word: no spec is without digits (it ends in the classifier's 10), so this is
             * a preset misspelt rather than a spec */
            if (!preset && count == 0 && isalpha((unsigned char)*spec) &&
                (!strchr(spec, '-') || !strpbrk(spec, "0123456789")))
                return dg_error(DG_ERR_USAGE,
                                "--net '%s': not a preset (%s) nor a layer spec (such as "
                                "32C5-P2-F-128-10)",
                                spec, dg_net_preset_names());
            return status;
        }
        /* flatten before the first dense layer when the spec leaves it out */
        if (layer.kind == DG_LAYER_DENSE && !flat) {
            if (count == DG_MAX_LAYERS)
                return fault(&c, start, "fewer layers (at most 32, flatten included)");
            starts[count] = start;
            memset(&specs[count], 0, sizeof specs[count]);
            specs[count].kind = DG_LAYER_FLATTEN;
            count++;
            flat = 1;
        }
        if (layer.kind == DG_LAYER_FLATTEN || layer.kind == DG_LAYER_GAP)
            flat = 1;
        if (count == DG_MAX_LAYERS)
            return fault(&c, start, "fewer layers (at most 32, flatten included)");
        starts[count] = start;
        specs[count++] = layer;
        if (*c.p == '\0')
            break;
        c.p++; /* '-' */
        if (*c.p == '\0')
            return fault(&c, c.p, "a layer after '-'");
    }
    /* the classifier: the last dense layer feeds softmax, whether or not written with L */
    if (specs[count - 1].kind == DG_LAYER_DENSE && specs[count - 1].units == DG_CLASSES)
        specs[count - 1].relu = 0;
    else
        return fault(&c, starts[count - 1],
                     "the last layer to be the classifier: dense 10 (the 10 classes softmax "
                     "reads)");
    struct dg_model model;
    int bad = -1;
    if (dg_model_layout(&model, specs, count, &bad) != DG_OK) {
        const char *why = dg_error_message();
        const char *colon = strstr(why, ": ");
        char reason[256];
        snprintf(reason, sizeof reason, "%s", colon ? colon + 2 : why);
        const char *at = bad >= 0 ? starts[bad] : spec;
        return dg_error(DG_ERR_USAGE, "--net '%s': the layer at character %zu: %s", spec,
                        (size_t)(at - spec) + 1, reason);
    }
    *layer_count = count;
    return DG_OK;
}

/* The shortest decimal that reads back as the same float. */
static void format_rate(float rate, char *out, size_t size)
{
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(out, size, "%.*g", digits, (double)rate);
        if (strtof(out, NULL) == rate)
            return;
    }
}

int dg_net_spec_format(const struct dg_layer_spec *specs, int layer_count, char *out, size_t size)
{
    size_t used = 0;
    int total = 0;
    if (size)
        out[0] = '\0';
    for (int i = 0; i < layer_count; i++) {
        char layer[48];
        const struct dg_layer_spec *s = &specs[i];
        switch (s->kind) {
        case DG_LAYER_CONV:
            snprintf(layer, sizeof layer, "%dC%d%s%s%s", s->units, s->kernel,
                     s->stride == 2 ? "S2" : "", s->valid ? "V" : "", s->relu ? "" : "L");
            break;
        case DG_LAYER_BATCHNORM:
            snprintf(layer, sizeof layer, "B");
            break;
        case DG_LAYER_MAXPOOL:
            snprintf(layer, sizeof layer, "P2");
            break;
        case DG_LAYER_DROPOUT: {
            char rate[24];
            format_rate(s->rate, rate, sizeof rate);
            snprintf(layer, sizeof layer, "D%s", rate);
            break;
        }
        case DG_LAYER_FLATTEN:
            snprintf(layer, sizeof layer, "F");
            break;
        case DG_LAYER_GAP:
            snprintf(layer, sizeof layer, "G");
            break;
        case DG_LAYER_DENSE:
            snprintf(layer, sizeof layer, "%d%s", s->units,
                     s->relu || i == layer_count - 1 ? "" : "L");
            break;
        default:
            snprintf(layer, sizeof layer, "?");
            break;
        }
        int n = snprintf(used < size ? out + used : NULL, used < size ? size - used : 0, "%s%s",
                         i ? "-" : "", layer);
        total += n;
        used += (size_t)n;
    }
    return total;
}
