/* The naive double-precision reference of every backend op: plain loops in double straight
 * from the definitions (tests only). NCHW, row-major; conv weights (out, in, k, k), dense
 * weights (in, out). */
#include "ref_ops.h"

#include <math.h>
#include <string.h>

#include "augment.cuh"
#include "dropout.cuh"

/* For tap offset d = k - pad in [-pad, pad]: output positions o with 0 <= o + d < size. */
static void tap_range(int size, int d, int *lo, int *hi)
{
    *lo = d < 0 ? -d : 0;
    *hi = d > 0 ? size - d : size;
}

void dg_ref_conv_fwd(const struct dg_conv_shape *s, const double *x, const double *w,
                     const double *b, double *y, int relu)
{
    int h = s->height, wd = s->width, k = s->kernel, pad = k / 2;
    size_t hw = (size_t)h * wd;
    for (int n = 0; n < s->batch; n++)
        for (int co = 0; co < s->out_channels; co++) {
            double *out = y + ((size_t)n * s->out_channels + co) * hw;
            for (size_t i = 0; i < hw; i++)
                out[i] = b[co];
            for (int ci = 0; ci < s->in_channels; ci++) {
                const double *in = x + ((size_t)n * s->in_channels + ci) * hw;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        double wv = w[(((size_t)co * s->in_channels + ci) * k + ky) * k + kx];
                        int dy = ky - pad, dx = kx - pad, y0, y1, x0, x1;
                        tap_range(h, dy, &y0, &y1);
                        tap_range(wd, dx, &x0, &x1);
                        for (int r = y0; r < y1; r++)
                            for (int c = x0; c < x1; c++)
                                out[(size_t)r * wd + c] += wv * in[(size_t)(r + dy) * wd + c + dx];
                    }
            }
            if (relu)
                for (size_t i = 0; i < hw; i++)
                    out[i] = out[i] > 0.0 ? out[i] : 0.0;
        }
}

void dg_ref_conv_bwd_data(const struct dg_conv_shape *s, const double *dy, const double *w,
                          double *dx)
{
    int h = s->height, wd = s->width, k = s->kernel, pad = k / 2;
    size_t hw = (size_t)h * wd;
    memset(dx, 0, sizeof(double) * (size_t)s->batch * s->in_channels * hw);
    for (int n = 0; n < s->batch; n++)
        for (int co = 0; co < s->out_channels; co++) {
            const double *g = dy + ((size_t)n * s->out_channels + co) * hw;
            for (int ci = 0; ci < s->in_channels; ci++) {
                double *out = dx + ((size_t)n * s->in_channels + ci) * hw;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        double wv = w[(((size_t)co * s->in_channels + ci) * k + ky) * k + kx];
                        int oy = ky - pad, ox = kx - pad, y0, y1, x0, x1;
                        tap_range(h, oy, &y0, &y1);
                        tap_range(wd, ox, &x0, &x1);
                        for (int r = y0; r < y1; r++)
                            for (int c = x0; c < x1; c++)
                                out[(size_t)(r + oy) * wd + c + ox] += wv * g[(size_t)r * wd + c];
                    }
            }
        }
}

void dg_ref_conv_bwd_filter(const struct dg_conv_shape *s, const double *x, const double *dy,
                            double *dw, double *db)
{
    int h = s->height, wd = s->width, k = s->kernel, pad = k / 2;
    size_t hw = (size_t)h * wd;
    memset(dw, 0, sizeof(double) * (size_t)s->out_channels * s->in_channels * k * k);
    memset(db, 0, sizeof(double) * (size_t)s->out_channels);
    for (int n = 0; n < s->batch; n++)
        for (int co = 0; co < s->out_channels; co++) {
            const double *g = dy + ((size_t)n * s->out_channels + co) * hw;
            for (size_t i = 0; i < hw; i++)
                db[co] += g[i];
            for (int ci = 0; ci < s->in_channels; ci++) {
                const double *in = x + ((size_t)n * s->in_channels + ci) * hw;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int oy = ky - pad, ox = kx - pad, y0, y1, x0, x1;
                        tap_range(h, oy, &y0, &y1);
                        tap_range(wd, ox, &x0, &x1);
                        double sum = 0.0;
                        for (int r = y0; r < y1; r++)
                            for (int c = x0; c < x1; c++)
                                sum += g[(size_t)r * wd + c] * in[(size_t)(r + oy) * wd + c + ox];
                        dw[(((size_t)co * s->in_channels + ci) * k + ky) * k + kx] += sum;
                    }
            }
        }
}

void dg_ref_relu_bwd(size_t n, const double *y, double *dy)
{
    for (size_t i = 0; i < n; i++)
        if (!(y[i] > 0.0))
            dy[i] = 0.0;
}

/* Index (within the plane) of the first maximum of window (r, c), row-major. */
static size_t window_argmax(const double *plane, int w, int r, int c)
{
    size_t best = (size_t)(2 * r) * w + 2 * c;
    for (int dr = 0; dr < 2; dr++)
        for (int dc = 0; dc < 2; dc++) {
            size_t i = (size_t)(2 * r + dr) * w + 2 * c + dc;
            if (plane[i] > plane[best])
                best = i;
        }
    return best;
}

void dg_ref_maxpool_fwd(const struct dg_pool_shape *s, const double *x, double *y)
{
    int h = s->height, w = s->width, oh = h / 2, ow = w / 2;
    for (size_t p = 0; p < (size_t)s->batch * s->channels; p++) {
        const double *plane = x + p * h * w;
        for (int r = 0; r < oh; r++)
            for (int c = 0; c < ow; c++)
                y[p * oh * ow + (size_t)r * ow + c] = plane[window_argmax(plane, w, r, c)];
    }
}

void dg_ref_maxpool_bwd(const struct dg_pool_shape *s, const double *x, const double *dy,
                        double *dx)
{
    int h = s->height, w = s->width, oh = h / 2, ow = w / 2;
    memset(dx, 0, sizeof(double) * (size_t)s->batch * s->channels * h * w);
    for (size_t p = 0; p < (size_t)s->batch * s->channels; p++) {
        const double *plane = x + p * h * w;
        for (int r = 0; r < oh; r++)
            for (int c = 0; c < ow; c++)
                dx[p * h * w + window_argmax(plane, w, r, c)] +=
                    dy[p * oh * ow + (size_t)r * ow + c];
    }
}

void dg_ref_dropout(size_t n, float rate, const struct dg_dropout_key *key, const double *in,
                    double *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] =
            in[i] * (double)dg_dropout_scale(rate, key->seed, key->layer, key->epoch, key->step, i);
}

void dg_ref_dense_fwd(int batch, int in, int out, const double *x, const double *w, const double *b,
                      double *y, int relu)
{
    for (int r = 0; r < batch; r++)
        for (int o = 0; o < out; o++) {
            double sum = b[o];
            for (int i = 0; i < in; i++)
                sum += x[(size_t)r * in + i] * w[(size_t)i * out + o];
            y[(size_t)r * out + o] = relu && !(sum > 0.0) ? 0.0 : sum;
        }
}

void dg_ref_dense_bwd(int batch, int in, int out, const double *x, const double *w,
                      const double *dy, double *dx, double *dw, double *db)
{
    for (int o = 0; o < out; o++) {
        double sum = 0.0;
        for (int r = 0; r < batch; r++)
            sum += dy[(size_t)r * out + o];
        db[o] = sum;
    }
    for (int i = 0; i < in; i++)
        for (int o = 0; o < out; o++) {
            double sum = 0.0;
            for (int r = 0; r < batch; r++)
                sum += x[(size_t)r * in + i] * dy[(size_t)r * out + o];
            dw[(size_t)i * out + o] = sum;
        }
    if (dx)
        for (int r = 0; r < batch; r++)
            for (int i = 0; i < in; i++) {
                double sum = 0.0;
                for (int o = 0; o < out; o++)
                    sum += dy[(size_t)r * out + o] * w[(size_t)i * out + o];
                dx[(size_t)r * in + i] = sum;
            }
}

void dg_ref_softmax_xent(int batch, const double *logits, const uint8_t *labels, double *probs,
                         double *dlogits, double *loss_sum, double *correct)
{
    for (int r = 0; r < batch; r++) {
        const double *z = logits + (size_t)r * DG_CLASSES;
        double *p = probs + (size_t)r * DG_CLASSES;
        int best = 0;
        for (int k = 1; k < DG_CLASSES; k++)
            if (z[k] > z[best])
                best = k;
        double sum = 0.0;
        for (int k = 0; k < DG_CLASSES; k++)
            sum += exp(z[k] - z[best]);
        for (int k = 0; k < DG_CLASSES; k++)
            p[k] = exp(z[k] - z[best]) / sum;
        if (!labels)
            continue;
        int label = labels[r];
        *loss_sum += log(sum) + z[best] - z[label];
        *correct += best == label;
        if (dlogits)
            for (int k = 0; k < DG_CLASSES; k++)
                dlogits[(size_t)r * DG_CLASSES + k] = (p[k] - (k == label)) / batch;
    }
}

void dg_ref_rmsprop(size_t n, double *w, const double *g, double *acc, double lr, double rho,
                    double eps)
{
    for (size_t i = 0; i < n; i++) {
        acc[i] = rho * acc[i] + (1.0 - rho) * g[i] * g[i];
        w[i] -= lr * g[i] / (sqrt(acc[i]) + eps);
    }
}

void dg_ref_batch_assemble(const struct dg_dataset *dataset, const uint32_t *rows, int n,
                           const struct dg_augment_key *augment, float *x, uint8_t *labels)
{
    for (int i = 0; i < n; i++) {
        const uint8_t *image = dataset->images + (size_t)rows[i] * DG_PIXELS;
        float *out = x + (size_t)i * DG_PIXELS;
        if (augment) {
            struct dg_augment_ranges ranges = {augment->rotation_deg, augment->shift,
                                               augment->zoom};
            struct dg_augment_params params =
                dg_augment_draw(ranges, augment->seed, augment->epoch, augment->step, (uint32_t)i);
            struct dg_affine affine = dg_augment_affine(params);
            for (int r = 0; r < DG_IMAGE_SIDE; r++)
                for (int c = 0; c < DG_IMAGE_SIDE; c++)
                    out[r * DG_IMAGE_SIDE + c] = dg_augment_pixel(image, affine, r, c);
        } else {
            for (int k = 0; k < DG_PIXELS; k++)
                out[k] = dg_pixel_to_float(image[k]);
        }
        if (labels && dataset->labels)
            labels[i] = dataset->labels[rows[i]];
    }
}
