/* The report page (include/digits/report.h): HTML with inline SVG charts and PNG data URIs. */
#include "digits/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits/io.h"
#include "digits/png.h"
#include "digits/text.h"
#include "digits/train.h"
#include "io/io_internal.h"

#define MAX_HISTORY 1000 /* epochs read per member */
#define CHART_W 560
#define CHART_H 300

static const char *palette[10] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

/* ---- text helpers ---- */

static void put_escaped(struct dg_text *t, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            dg_text_add(t, "&amp;");
            break;
        case '<':
            dg_text_add(t, "&lt;");
            break;
        case '>':
            dg_text_add(t, "&gt;");
            break;
        case '"':
            dg_text_add(t, "&quot;");
            break;
        case '\'':
            dg_text_add(t, "&#39;");
            break;
        default:
            dg_text_put(t, s, 1);
        }
    }
}

static void put_base64(struct dg_text *t, const unsigned char *data, size_t size)
{
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < size; i += 3) {
        unsigned v = (unsigned)data[i] << 16;
        if (i + 1 < size)
            v |= (unsigned)data[i + 1] << 8;
        if (i + 2 < size)
            v |= data[i + 2];
        char out[4] = {digits[v >> 18 & 63], digits[v >> 12 & 63],
                       i + 1 < size ? digits[v >> 6 & 63] : '=', i + 2 < size ? digits[v & 63] : '='};
        dg_text_put(t, out, 4);
    }
}

/* <img> of a 28x28 image shown at 3x with crisp pixels. */
static enum dg_status put_digit(struct dg_text *t, const uint8_t *pixels, const char *alt)
{
    unsigned char *png = NULL;
    size_t size = 0;
    enum dg_status status = dg_png_encode_gray(pixels, 28, 28, &png, &size);
    if (status != DG_OK)
        return status;
    dg_text_add(t, "<img class=\"digit\" width=\"84\" height=\"84\" alt=\"");
    put_escaped(t, alt);
    dg_text_add(t, "\" src=\"data:image/png;base64,");
    put_base64(t, png, size);
    dg_text_add(t, "\">");
    free(png);
    return DG_OK;
}

/* The value of key in settings as an escaped table cell, or an empty one. */
static void put_setting_value(struct dg_text *t, const char *settings, const char *key)
{
    const char *v = dg_settings_value(settings, key);
    if (!v)
        return;
    size_t n = strcspn(v, "\n");
    char value[512];
    snprintf(value, sizeof value, "%.*s", (int)(n < sizeof value - 1 ? n : sizeof value - 1), v);
    put_escaped(t, value);
}

/* ---- learning curves ---- */

struct curve {
    struct dg_epoch_report *history;
    int count;
    int model;      /* the model file's index in the input */
    char name[160]; /* "member 2 of e.dgt" or the model's path */
};

static void free_curves(struct curve *curves, int count)
{
    for (int c = 0; c < count; c++)
        free(curves[c].history);
}

struct axis {
    double min, max; /* data range */
    double left, right, top, bottom; /* plot area in pixels */
};

static double px(const struct axis *a, double x, double x_min, double x_max)
{
    return a->left + (x - x_min) / (x_max - x_min) * (a->right - a->left);
}

static double py(const struct axis *a, double y)
{
    return a->bottom - (y - a->min) / (a->max - a->min) * (a->bottom - a->top);
}

/* One polyline (+ dots) of field `which` (0 loss, 1 accuracy, 2 val_loss, 3 val_accuracy). */
static void put_series(struct dg_text *t, const struct axis *a, double x_max,
                       const struct curve *c, int which, const char *color, int dashed)
{
    dg_text_add(t, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color,
                dashed ? " stroke-dasharray=\"6 4\"" : "");
    for (int i = 0; i < c->count; i++) {
        const struct dg_epoch_report *r = &c->history[i];
        double v = which == 0 ? r->loss : which == 1 ? r->accuracy
                                                     : which == 2 ? r->val_loss : r->val_accuracy;
        if (isfinite(v))
            dg_text_add(t, "%.1f,%.1f ", px(a, r->epoch, 0.5, x_max + 0.5), py(a, v));
    }
    dg_text_add(t, "\"/>\n");
    for (int i = 0; i < c->count; i++) {
        const struct dg_epoch_report *r = &c->history[i];
        double v = which == 0 ? r->loss : which == 1 ? r->accuracy
                                                     : which == 2 ? r->val_loss : r->val_accuracy;
        if (isfinite(v))
            dg_text_add(t, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                        px(a, r->epoch, 0.5, x_max + 0.5), py(a, v), color);
    }
}

/* A chart of loss (accuracy = 0) or accuracy (accuracy = 1) per epoch, training dashed and
 * validation solid, one colour per curve (training blue and validation red for one model);
 * learning-rate reductions as dotted vertical lines after the epoch that made them. */
static void put_chart(struct dg_text *t, const struct curve *curves, int count, int accuracy)
{
    double lo = INFINITY, hi = -INFINITY;
    int epochs = 1;
    for (int c = 0; c < count; c++)
        for (int i = 0; i < curves[c].count; i++) {
            const struct dg_epoch_report *r = &curves[c].history[i];
            double v[2] = {accuracy ? r->accuracy : r->loss,
                           accuracy ? r->val_accuracy : r->val_loss};
            for (int k = 0; k < 2; k++)
                if (isfinite(v[k])) {
                    lo = fmin(lo, v[k]);
                    hi = fmax(hi, v[k]);
                }
            if (r->epoch > epochs)
                epochs = r->epoch;
        }
    if (!isfinite(lo)) {
        lo = 0.0;
        hi = 1.0;
    }
    struct axis a = {0, 0, 60, CHART_W - 20, 30, CHART_H - 45};
    /* ticks at a round step (1, 2, 2.5 or 5 times a power of ten), about five of them */
    double low = accuracy ? lo : 0.0, high = accuracy ? 1.0 : hi;
    double span = high > low ? high - low : 1.0, unit = pow(10.0, floor(log10(span / 5.0)));
    static const double multiples[5] = {1.0, 2.0, 2.5, 5.0, 10.0};
    int pick = 0;
    while (pick < 4 && span / (multiples[pick] * unit) > 6.0)
        pick++;
    double step = multiples[pick] * unit;
    a.min = floor(low / step + 1e-9) * step;
    a.max = ceil(high / step - 1e-9) * step;
    if (a.max <= a.min)
        a.max = a.min + step;
    int ticks = (int)lround((a.max - a.min) / step);
    int decimals = (int)fmax(0.0, -floor(log10(unit) + 1e-9)) + (pick == 2); /* 2.5: one more */
    dg_text_add(t,
                "<svg class=\"chart\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                "role=\"img\" aria-label=\"%s per epoch\">\n"
                "<text x=\"%d\" y=\"18\" class=\"title\">%s per epoch</text>\n",
                CHART_W, CHART_H, CHART_W, CHART_H, accuracy ? "accuracy" : "loss", 60,
                accuracy ? "Accuracy" : "Loss (cross-entropy)");
    /* grid and y ticks */
    for (int k = 0; k <= ticks; k++) {
        double v = a.min + step * k, y = py(&a, v);
        dg_text_add(t,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                    "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%.*f</text>\n",
                    a.left, y, a.right, y, a.left - 6, y + 4, decimals, v);
    }
    int every = epochs <= 12 ? 1 : (epochs + 9) / 10;
    for (int e = 1; e <= epochs; e += every) {
        double x = px(&a, e, 0.5, epochs + 0.5);
        dg_text_add(t,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>"
                    "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%d</text>\n",
                    x, a.bottom, x, a.bottom + 4, x, a.bottom + 18, e);
    }
    dg_text_add(t,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>"
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>"
                "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">epoch</text>\n",
                a.left, a.top, a.left, a.bottom, a.left, a.bottom, a.right, a.bottom,
                (a.left + a.right) / 2, CHART_H - 8);
    /* learning-rate reductions */
    for (int c = 0; c < count; c++)
        for (int i = 0; i < curves[c].count; i++) {
            const struct dg_epoch_report *r = &curves[c].history[i];
            if (!(r->next_lr < r->lr))
                continue;
            double x = px(&a, r->epoch + 0.5, 0.5, epochs + 0.5);
            dg_text_add(t,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"lr\"/>"
                        "<text x=\"%.1f\" y=\"%.1f\" class=\"lrtext\">lr %.3g</text>\n",
                        x, a.top, x, a.bottom, x + 3, a.top + 10 + 11 * (c % 4), r->next_lr);
        }
    for (int c = 0; c < count; c++) {
        const char *train_color = count == 1 ? palette[0] : palette[c % 10];
        const char *val_color = count == 1 ? palette[1] : palette[c % 10];
        put_series(t, &a, epochs, &curves[c], accuracy ? 1 : 0, train_color, 1);
        put_series(t, &a, epochs, &curves[c], accuracy ? 3 : 2, val_color, 0);
    }
    dg_text_add(t, "</svg>\n");
}

/* The legend under the charts: what the line styles and colours mean. */
static void put_legend(struct dg_text *t, const struct curve *curves, int count)
{
    dg_text_add(t, "<p class=\"legend\">");
    if (count == 1) {
        dg_text_add(t,
                    "<span style=\"color:%s\">&#9473;&#9473; training</span> (dashed, with "
                    "dropout and augmentation) &nbsp; <span style=\"color:%s\">&#9473;&#9473; "
                    "validation</span> &nbsp; ",
                    palette[0], palette[1]);
    } else {
        dg_text_add(t, "dashed: training (with dropout and augmentation), solid: validation. ");
        for (int c = 0; c < count; c++) {
            dg_text_add(t, "<span style=\"color:%s\">&#9632; ", palette[c % 10]);
            put_escaped(t, curves[c].name);
            dg_text_add(t, "</span> &nbsp; ");
        }
    }
    dg_text_add(t, "dotted vertical lines: the learning rate halved after that epoch "
                   "(ReduceLROnPlateau).</p>\n");
}

/* Every history stored in the model files: "history" (one model) or "memberM_history". */
static int read_curves(const struct dg_report_input *in, struct curve *curves, int max,
                       struct dg_text *missing)
{
    int count = 0;
    for (int f = 0; f < in->model_count; f++) {
        const struct dg_report_model *model = &in->models[f];
        for (int m = 0; m < model->member_count && count < max; m++) {
            char key[32];
            if (model->member_count == 1)
                snprintf(key, sizeof key, "history");
            else
                snprintf(key, sizeof key, "member%d_history", m + 1);
            struct curve *c = &curves[count];
            c->history = malloc(MAX_HISTORY * sizeof *c->history);
            if (!c->history) {
                free_curves(curves, count);
                return -1;
            }
            c->model = f;
            c->count = dg_history_read(model->settings, key, c->history, MAX_HISTORY);
            if (c->count <= 0) {
                free(c->history);
                c->history = NULL;
                if (missing->size)
                    dg_text_add(missing, ", ");
                if (model->member_count > 1)
                    dg_text_add(missing, "member %d of ", m + 1);
                put_escaped(missing, model->path);
                continue;
            }
            if (model->member_count > 1)
                snprintf(c->name, sizeof c->name, "member %d of %s", m + 1, model->path);
            else
                snprintf(c->name, sizeof c->name, "%s", model->path);
            count++;
        }
    }
    return count;
}

/* The charts of every stored history; `missing` names the models that store none. */
static void put_curves(struct dg_text *t, const struct curve *curves, int count,
                       const char *missing)
{
    dg_text_add(t, "<section id=\"curves\"><h2>Learning curves</h2>\n");
    if (count > 0) {
        dg_text_add(t, "<div class=\"row\">\n");
        put_chart(t, curves, count, 0);
        put_chart(t, curves, count, 1);
        dg_text_add(t, "</div>\n");
        put_legend(t, curves, count);
    }
    if (missing)
        dg_text_add(t,
                    "<p class=\"note\">No training history is stored in %s (a model file "
                    "written before Digits kept the history, or one imported from elsewhere).</p>\n",
                    missing);
    dg_text_add(t, "</section>\n");
}

/* ---- confusion matrix, per-class figures ---- */

/* white -> dark blue by sqrt(fraction), so that the few errors off the diagonal show */
static void heat_colour(double fraction, char *out, size_t size)
{
    double s = sqrt(fraction < 0 ? 0 : fraction > 1 ? 1 : fraction);
    int r = (int)lround(255 + (8 - 255) * s), g = (int)lround(255 + (48 - 255) * s),
        b = (int)lround(255 + (107 - 255) * s);
    snprintf(out, size, "#%02x%02x%02x", r, g, b);
}

static void put_confusion(struct dg_text *t, size_t confusion[DG_CLASSES][DG_CLASSES])
{
    const int cell = 40, left = 60, top = 50;
    int size = left + cell * DG_CLASSES + 10;
    dg_text_add(t,
                "<svg class=\"confusion\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                "role=\"img\" aria-label=\"confusion matrix\">\n"
                "<text x=\"%d\" y=\"16\" class=\"tick\" text-anchor=\"middle\">predicted</text>\n"
                "<text x=\"14\" y=\"%d\" class=\"tick\" text-anchor=\"middle\" "
                "transform=\"rotate(-90 14 %d)\">true label</text>\n",
                size, size + 20, size, size + 20, left + cell * DG_CLASSES / 2,
                top + cell * DG_CLASSES / 2, top + cell * DG_CLASSES / 2);
    for (int k = 0; k < DG_CLASSES; k++)
        dg_text_add(t,
                    "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%d</text>"
                    "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"end\">%d</text>\n",
                    left + cell * k + cell / 2, top - 8, k, left - 8, top + cell * k + cell / 2 + 4,
                    k);
    for (int j = 0; j < DG_CLASSES; j++) {
        size_t total = 0;
        for (int k = 0; k < DG_CLASSES; k++)
            total += confusion[j][k];
        for (int k = 0; k < DG_CLASSES; k++) {
            double fraction = total ? (double)confusion[j][k] / (double)total : 0.0;
            char colour[8];
            heat_colour(fraction, colour, sizeof colour);
            dg_text_add(t,
                        "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" "
                        "stroke=\"#ddd\"><title>true %d, predicted %d: %zu (%.2f%% of the %d "
                        "row)</title></rect>",
                        left + cell * k, top + cell * j, cell, cell, colour, j, k,
                        confusion[j][k], 100.0 * fraction, j);
            if (confusion[j][k])
                dg_text_add(t,
                            "<text x=\"%d\" y=\"%d\" class=\"count\" text-anchor=\"middle\" "
                            "fill=\"%s\">%zu</text>",
                            left + cell * k + cell / 2, top + cell * j + cell / 2 + 4,
                            sqrt(fraction) > 0.5 ? "#fff" : "#222", confusion[j][k]);
            dg_text_add(t, "\n");
        }
    }
    dg_text_add(t, "</svg>\n");
}

static void put_classes(struct dg_text *t, size_t confusion[DG_CLASSES][DG_CLASSES])
{
    dg_text_add(t, "<table class=\"numbers\"><tr><th>class</th><th>precision</th><th>recall</th>"
                   "<th>F1</th><th>support</th></tr>\n");
    double f1_sum = 0.0;
    for (int k = 0; k < DG_CLASSES; k++) {
        size_t predicted = 0, actual = 0;
        for (int j = 0; j < DG_CLASSES; j++) {
            predicted += confusion[j][k];
            actual += confusion[k][j];
        }
        double precision = predicted ? (double)confusion[k][k] / (double)predicted : 0.0;
        double recall = actual ? (double)confusion[k][k] / (double)actual : 0.0;
        double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
        f1_sum += f1;
        dg_text_add(t, "<tr><td>%d</td><td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%zu</td></tr>\n",
                    k, precision, recall, f1, actual);
    }
    dg_text_add(t, "<tr class=\"total\"><td>mean</td><td></td><td></td><td>%.4f</td><td></td>"
                   "</tr></table>\n",
                f1_sum / DG_CLASSES);
}

/* ---- images ---- */

struct wrong {
    size_t index;
    float probability;
};

static int by_confidence(const void *a, const void *b)
{
    const struct wrong *x = a, *y = b;
    if (x->probability != y->probability)
        return x->probability < y->probability ? 1 : -1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static enum dg_status put_top_errors(struct dg_text *t, const struct dg_report_input *in,
                                     size_t wrong_count)
{
    dg_text_add(t, "<section id=\"errors\"><h2>The most confidently wrong images</h2>\n");
    if (wrong_count == 0 || in->top <= 0) {
        dg_text_add(t, "<p class=\"note\">%s</p></section>\n",
                    wrong_count ? "Left out (--top 0)." : "None: every image is classified right.");
        return DG_OK;
    }
    struct wrong *wrong = malloc(wrong_count * sizeof *wrong);
    if (!wrong)
        return dg_error(DG_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < in->count; i++)
        if (in->predicted[i] != in->labels[i])
            wrong[n++] = (struct wrong){i, in->probs[i * DG_CLASSES + in->predicted[i]]};
    qsort(wrong, n, sizeof *wrong, by_confidence);
    size_t shown = n < (size_t)in->top ? n : (size_t)in->top;
    dg_text_add(t, "<p>%zu of the %zu wrong predictions, most confident first: the label, the "
                   "prediction and its probability, the probability of the true label.</p>\n"
                   "<div class=\"grid\">\n",
                shown, n);
    enum dg_status status = DG_OK;
    for (size_t w = 0; w < shown && status == DG_OK; w++) {
        size_t i = wrong[w].index;
        int label = in->labels[i], guess = in->predicted[i];
        char alt[96];
        snprintf(alt, sizeof alt, "a %d classified as %d", label, guess);
        dg_text_add(t, "<figure>");
        status = put_digit(t, in->images + i * DG_PIXELS, alt);
        dg_text_add(t, "<figcaption><b>%d</b> &rarr; <b class=\"bad\">%d</b> %.3f<br>p(%d) %.3f",
                    label, guess, (double)wrong[w].probability, label,
                    (double)in->probs[i * DG_CLASSES + label]);
        if (in->row_numbers)
            dg_text_add(t, "<br><span class=\"rowno\">row %u</span>", in->row_numbers[i]);
        dg_text_add(t, "</figcaption></figure>\n");
    }
    dg_text_add(t, "</div></section>\n");
    free(wrong);
    return status;
}

static enum dg_status put_augmentation(struct dg_text *t, const struct dg_report_input *in)
{
    if (in->sheet_count <= 0)
        return DG_OK;
    dg_text_add(t, "<section id=\"augmentation\"><h2>Augmentation</h2>\n<p>Training images (left) "
                   "and %d augmented versions of each, as training draws them (",
                in->sheet_copies);
    put_escaped(t, in->augmentation);
    dg_text_add(t, ").</p>\n<table class=\"sheet\">\n");
    enum dg_status status = DG_OK;
    uint8_t pixels[DG_PIXELS];
    for (int s = 0; s < in->sheet_count && status == DG_OK; s++) {
        dg_text_add(t, "<tr><td class=\"original\">");
        status = put_digit(t, in->sheet_images + (size_t)s * DG_PIXELS, "training image");
        dg_text_add(t, "</td>");
        for (int c = 0; c < in->sheet_copies && status == DG_OK; c++) {
            const float *x = in->sheet_augmented + ((size_t)s * in->sheet_copies + c) * DG_PIXELS;
            for (int p = 0; p < DG_PIXELS; p++) {
                float v = x[p] * 255.0f;
                pixels[p] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : lrintf(v));
            }
            dg_text_add(t, "<td>");
            status = put_digit(t, pixels, "augmented");
            dg_text_add(t, "</td>");
        }
        dg_text_add(t, "</tr>\n");
    }
    dg_text_add(t, "</table></section>\n");
    return status;
}

/* ---- tables ---- */

static void put_layers(struct dg_text *t, const struct dg_model *model)
{
    char spec[DG_NET_SPEC_MAX + 1];
    dg_model_net_spec(model, spec, sizeof spec);
    dg_text_add(t, "<section id=\"layers\"><h2>The network</h2>\n<p>--net <code>%s</code></p>\n"
                   "<table class=\"numbers\">"
                   "<tr><th>layer</th><th>output</th><th>parameters</th></tr>\n",
                spec);
    int flat = 0; /* from the first flatten, dense or global average pooling on */
    for (int i = 0; i < model->layer_count; i++) {
        const struct dg_layer *l = &model->layers[i];
        char shape[64], what[64] = "";
        flat |= l->spec.kind == DG_LAYER_DENSE || l->spec.kind == DG_LAYER_FLATTEN ||
                l->spec.kind == DG_LAYER_GAP;
        if (flat)
            snprintf(shape, sizeof shape, "%d", l->out_c);
        else
            snprintf(shape, sizeof shape, "%d &times; %d &times; %d", l->out_c, l->out_h, l->out_w);
        if (l->spec.kind == DG_LAYER_CONV)
            snprintf(what, sizeof what, " (%dx%d, %s%s%s)", l->spec.kernel, l->spec.kernel,
                     l->spec.valid ? "valid" : "same", l->spec.stride == 2 ? ", stride 2" : "",
                     l->spec.relu ? ", ReLU" : "");
        else if (l->spec.kind == DG_LAYER_BATCHNORM)
            snprintf(what, sizeof what, " (momentum %g, eps %g)", DG_BN_MOMENTUM, DG_BN_EPSILON);
        else if (l->spec.kind == DG_LAYER_DROPOUT)
            snprintf(what, sizeof what, " (%g)", (double)l->spec.rate);
        else if (l->spec.kind == DG_LAYER_DENSE)
            snprintf(what, sizeof what, "%s",
                     i == model->layer_count - 1 ? " (softmax)" : l->spec.relu ? " (ReLU)" : "");
        dg_text_add(t, "<tr><td class=\"name\">%s%s</td><td>%s</td><td>%zu</td></tr>\n", l->name,
                    what, shape, l->weight_count + l->bias_count + l->stat_count);
    }
    dg_text_add(t, "<tr class=\"total\"><td>total</td><td></td><td>%zu</td></tr></table>"
                   "</section>\n",
                model->param_count);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The settings of one model file (every line but the history), its speed. */
static void put_settings(struct dg_text *t, const struct dg_report_model *model, int index,
                         const struct curve *curves, int curve_count)
{
    dg_text_add(t, "<h3>");
    put_escaped(t, model->path);
    dg_text_add(t, "</h3>\n<table class=\"settings\">\n");
    for (const char *line = model->settings; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        const char *eq = memchr(line, '=', n);
        if (eq && !(eq - line >= 7 && memcmp(eq - 7, "history", 7) == 0)) {
            char key[128], value[512];
            snprintf(key, sizeof key, "%.*s", (int)(eq - line), line);
            snprintf(value, sizeof value, "%.*s", (int)(n - (size_t)(eq - line) - 1), eq + 1);
            dg_text_add(t, "<tr><th>");
            put_escaped(t, key);
            dg_text_add(t, "</th><td>");
            put_escaped(t, value);
            dg_text_add(t, "</td></tr>\n");
        }
        line = end ? end + 1 : NULL;
    }
    dg_text_add(t, "</table>\n");
    /* speed: the median epoch of this file's histories */
    double speeds[MAX_HISTORY];
    int n = 0;
    for (int c = 0; c < curve_count; c++)
        for (int i = 0; curves[c].model == index && i < curves[c].count && n < MAX_HISTORY; i++)
            speeds[n++] = curves[c].history[i].images_per_second;
    if (n > 0) {
        qsort(speeds, (size_t)n, sizeof *speeds, by_value);
        dg_text_add(t, "<p>Training speed: median %.0f images/s over %d epochs (%.0f to %.0f)",
                    n % 2 ? speeds[n / 2] : 0.5 * (speeds[n / 2 - 1] + speeds[n / 2]), n,
                    speeds[0], speeds[n - 1]);
        const char *seconds = dg_settings_value(model->settings, "seconds");
        if (seconds)
            dg_text_add(t, "; training took %.1f s", strtod(seconds, NULL));
        dg_text_add(t, ".</p>\n");
    }
}

/* ---- the page ---- */

static const char *style =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;"
    "max-width:1200px;padding:0 16px;color:#222;background:#fff}"
    "h1{margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}"
    ".summary{font-size:15px;line-height:1.6}.big{font-size:28px;font-weight:600}"
    ".row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}"
    "svg text{font-family:inherit}.title{font-size:14px;font-weight:600}"
    ".tick{font-size:11px;fill:#444}.count{font-size:11px}"
    ".grid line,line.grid{stroke:#eee}line.axis{stroke:#888}"
    "line.lr{stroke:#555;stroke-dasharray:2 3}.lrtext{font-size:10px;fill:#555}"
    ".legend,.note{font-size:13px;color:#555}"
    "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;text-align:right}"
    "table.numbers tr:nth-child(even),table.settings tr:nth-child(even){background:#f6f6f6}"
    "table.settings th{text-align:left;font-weight:500;color:#555}table.settings td{text-align:left}"
    "td.name{text-align:left}tr.total td{font-weight:600;border-top:1px solid #ccc}"
    "div.grid{display:flex;flex-wrap:wrap;gap:10px}"
    "figure{margin:0;text-align:center;font-size:12px;width:96px}"
    "img.digit{image-rendering:pixelated;border:1px solid #ccc;background:#000}"
    ".bad{color:#c00}.rowno{color:#777}"
    "table.sheet td{padding:2px}table.sheet td.original{padding-right:14px}"
    "footer{margin-top:40px;font-size:12px;color:#777}";

enum dg_status dg_report_write(const char *path, const struct dg_report_input *in)
{
    size_t confusion[DG_CLASSES][DG_CLASSES];
    memset(confusion, 0, sizeof confusion);
    size_t correct = 0;
    double loss = 0.0;
    for (size_t i = 0; i < in->count; i++) {
        confusion[in->labels[i]][in->predicted[i]]++;
        correct += in->labels[i] == in->predicted[i];
        double p = in->probs[i * DG_CLASSES + in->labels[i]];
        loss -= log(p > 1e-30 ? p : 1e-30);
    }
    struct dg_text t = {0};
    dg_text_add(&t, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                    "img-src data:; style-src 'unsafe-inline'\">\n"
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                    "<title>Digits report: ");
    put_escaped(&t, in->models[0].path);
    dg_text_add(&t, "</title>\n<style>%s</style></head><body>\n<h1>Digits report</h1>\n", style);
    /* summary */
    dg_text_add(&t, "<div class=\"summary\"><div class=\"big\">accuracy %.4f</div>",
                in->count ? (double)correct / (double)in->count : 0.0);
    dg_text_add(&t, "%zu of %zu images right, %zu wrong; mean loss %.4f.<br>Model: ", correct,
                in->count, in->count - correct, in->count ? loss / (double)in->count : 0.0);
    for (int f = 0; f < in->model_count; f++) {
        dg_text_add(&t, "%s<code>", f ? ", " : "");
        put_escaped(&t, in->models[f].path);
        dg_text_add(&t, "</code>");
        if (in->models[f].member_count > 1)
            dg_text_add(&t, " (an ensemble of %d)", in->models[f].member_count);
    }
    if (in->member_count > 1)
        dg_text_add(&t, "; the probabilities of %d members averaged", in->member_count);
    if (in->tta)
        dg_text_add(&t, "; test-time augmentation (each image and its copies shifted by one "
                        "pixel, averaged)");
    dg_text_add(&t, ".<br>Data: <code>");
    put_escaped(&t, in->data_path);
    dg_text_add(&t, "</code>, ");
    put_escaped(&t, in->selection);
    dg_text_add(&t, ".<br>Scored on ");
    put_escaped(&t, in->device);
    dg_text_add(&t, " in %.2f s (%.0f images/s).</div>\n", in->scoring_seconds,
                in->scoring_seconds > 0 ? (double)in->count * in->member_count * (in->tta ? 5 : 1) /
                                              in->scoring_seconds
                                        : 0.0);
    struct curve curves[DG_MAX_MEMBERS];
    struct dg_text missing = {0};
    int curve_count = read_curves(in, curves, DG_MAX_MEMBERS, &missing);
    enum dg_status status = DG_OK;
    if (curve_count < 0) {
        curve_count = 0;
        status = dg_error(DG_ERR_NOMEM, "out of memory for the training history");
    }
    put_curves(&t, curves, curve_count, missing.size ? missing.data : NULL);
    /* confusion and classes */
    dg_text_add(&t, "<section id=\"confusion\"><h2>Confusion matrix and per-class figures</h2>\n"
                    "<div class=\"row\">\n");
    put_confusion(&t, confusion);
    put_classes(&t, confusion);
    dg_text_add(&t, "</div><p class=\"note\">Rows: the true label; columns: the prediction; "
                    "the shade is the share of the row (square-root scale).</p></section>\n");
    if (in->member_count > 1) {
        dg_text_add(&t, "<section id=\"members\"><h2>Members</h2><table class=\"numbers\">"
                        "<tr><th>member</th><th>accuracy alone</th></tr>\n");
        for (int m = 0; m < in->member_count; m++) {
            size_t right = 0;
            for (size_t i = 0; i < in->count; i++)
                right += in->member_predicted[(size_t)m * in->count + i] == in->labels[i];
            dg_text_add(&t, "<tr><td>%d</td><td>%.4f</td></tr>\n", m + 1,
                        in->count ? (double)right / (double)in->count : 0.0);
        }
        dg_text_add(&t, "<tr class=\"total\"><td>ensemble</td><td>%.4f</td></tr></table>"
                        "</section>\n",
                    in->count ? (double)correct / (double)in->count : 0.0);
    }
    if (status == DG_OK)
        status = put_top_errors(&t, in, in->count - correct);
    if (status == DG_OK)
        status = put_augmentation(&t, in);
    put_layers(&t, in->architecture);
    dg_text_add(&t, "<section id=\"settings\"><h2>Training settings and speed</h2>\n");
    for (int f = 0; f < in->model_count; f++)
        put_settings(&t, &in->models[f], f, curves, curve_count);
    free_curves(curves, curve_count);
    free(missing.data);
    dg_text_add(&t, "</section>\n<footer>Written by digits %s.", DIGITS_VERSION);
    if (in->models[0].settings && dg_settings_value(in->models[0].settings, "digits_version")) {
        dg_text_add(&t, " The model was trained by digits ");
        put_setting_value(&t, in->models[0].settings, "digits_version");
        dg_text_add(&t, ".");
    }
    dg_text_add(&t, "</footer>\n</body></html>\n");
    if (status == DG_OK && t.failed)
        status = dg_error(DG_ERR_NOMEM, "out of memory for the report");
    if (status == DG_OK)
        status = dg_io_write_atomic(path, t.data, t.size);
    free(t.data);
    return status;
}
