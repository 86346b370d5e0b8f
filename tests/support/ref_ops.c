/* The naive double-precision reference of every backend op: plain loops in double straight
 * from the definitions (tests only). NCHW, row-major; conv weights (out, in, k, k), dense
 * weights (in, out). */
#include "ref_ops.h"

#include <math.h>
#include <string.h>

#include "math/augment.h"
#include "math/dropout.h"

/* For tap offset d = k - pad in [-pad, pad]: output positions o with 0 <= o + d < size. */
static void tap_range(int size, int d, int *lo, int *hi)
{
    *lo = d < 0 ? -d : 0;
    *hi = d > 0 ? size - d : size;
}

/* The general convolution (any padding and stride): output (r, c) reads input row
 * r * stride - pad + ky, column c * stride - pad + kx, zero outside. */
static int in_at(const struct dg_conv_shape *s, int out, int tap, int side)
{
    int i = out * dg_conv_stride(s) - dg_conv_pad(s) + tap;
    return i >= 0 && i < side ? i : -1;
}

static void general_conv_fwd(const struct dg_conv_shape *s, const double *x, const double *w,
                             const double *b, double *y, int relu)
{
    int h = s->height, wd = s->width, k = s->kernel;
    int oh = dg_conv_out_height(s), ow = dg_conv_out_width(s);
    size_t hw = (size_t)h * wd, ohw = (size_t)oh * ow;
    for (int n = 0; n < s->batch; n++)
        for (int co = 0; co < s->out_channels; co++)
            for (int r = 0; r < oh; r++)
                for (int c = 0; c < ow; c++) {
                    double sum = b[co];
                    for (int ci = 0; ci < s->in_channels; ci++) {
                        const double *in = x + ((size_t)n * s->in_channels + ci) * hw;
                        for (int ky = 0; ky < k; ky++) {
                            int iy = in_at(s, r, ky, h);
                            if (iy < 0)
                                continue;
                            for (int kx = 0; kx < k; kx++) {
                                int ix = in_at(s, c, kx, wd);
                                if (ix >= 0)
                                    sum += w[(((size_t)co * s->in_channels + ci) * k + ky) * k +
                                             kx] *
                                           in[(size_t)iy * wd + ix];
                            }
                        }
                    }
                    y[((size_t)n * s->out_channels + co) * ohw + (size_t)r * ow + c] =
                        relu && !(sum > 0.0) ? 0.0 : sum;
                }
}

static void general_conv_bwd(const struct dg_conv_shape *s, const double *x, const double *dy,
                             const double *w, double *dx, double *dw, double *db)
{
    int h = s->height, wd = s->width, k = s->kernel;
    int oh = dg_conv_out_height(s), ow = dg_conv_out_width(s);
    size_t hw = (size_t)h * wd, ohw = (size_t)oh * ow;
    if (dx)
        memset(dx, 0, sizeof(double) * (size_t)s->batch * s->in_channels * hw);
    if (dw) {
        memset(dw, 0, sizeof(double) * (size_t)s->out_channels * s->in_channels * k * k);
        memset(db, 0, sizeof(double) * (size_t)s->out_channels);
    }
    for (int n = 0; n < s->batch; n++)
        for (int co = 0; co < s->out_channels; co++)
            for (int r = 0; r < oh; r++)
                for (int c = 0; c < ow; c++) {
                    double g = dy[((size_t)n * s->out_channels + co) * ohw + (size_t)r * ow + c];
                    if (dw)
                        db[co] += g;
                    for (int ci = 0; ci < s->in_channels; ci++) {
                        size_t plane = ((size_t)n * s->in_channels + ci) * hw;
                        for (int ky = 0; ky < k; ky++) {
                            int iy = in_at(s, r, ky, h);
                            if (iy < 0)
                                continue;
                            for (int kx = 0; kx < k; kx++) {
                                int ix = in_at(s, c, kx, wd);
                                if (ix < 0)
                                    continue;
                                size_t wi = (((size_t)co * s->in_channels + ci) * k + ky) * k + kx;
                                size_t xi = plane + (size_t)iy * wd + ix;
                                if (dx)
                                    dx[xi] += w[wi] * g;
                                if (dw)
                                    dw[wi] += x[xi] * g;
                            }
                        }
                    }
                }
}

void dg_ref_conv_fwd(const struct dg_conv_shape *s, const double *x, const double *w,
                     const double *b, double *y, int relu)
{
    if (!dg_conv_is_same_stride1(s)) {
        general_conv_fwd(s, x, w, b, y, relu);
        return;
    }
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
    if (!dg_conv_is_same_stride1(s)) {
        general_conv_bwd(s, NULL, dy, w, dx, NULL, NULL);
        return;
    }
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
    if (!dg_conv_is_same_stride1(s)) {
        general_conv_bwd(s, x, dy, NULL, NULL, dw, db);
        return;
    }
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

/* ---- batch normalisation ---- */

static double bn_at(const struct dg_bn_shape *s, const double *t, int n, int c, int i)
{
    return t[((size_t)n * s->channels + c) * s->spatial + i];
}

void dg_ref_batchnorm_fwd_train(const struct dg_bn_shape *s, const double *x, const double *gamma,
                                const double *beta, double *running_mean, double *running_var,
                                double momentum, double eps, double *y, double *save_mean,
                                double *save_invstd)
{
    double m = (double)s->batch * s->spatial;
    for (int c = 0; c < s->channels; c++) {
        double sum = 0.0, sq = 0.0;
        for (int n = 0; n < s->batch; n++)
            for (int i = 0; i < s->spatial; i++)
                sum += bn_at(s, x, n, c, i);
        double mean = sum / m;
        for (int n = 0; n < s->batch; n++)
            for (int i = 0; i < s->spatial; i++) {
                double d = bn_at(s, x, n, c, i) - mean;
                sq += d * d;
            }
        double var = sq / m, invstd = 1.0 / sqrt(var + eps);
        for (int n = 0; n < s->batch; n++)
            for (int i = 0; i < s->spatial; i++) {
                size_t at = ((size_t)n * s->channels + c) * s->spatial + i;
                y[at] = gamma[c] * (x[at] - mean) * invstd + beta[c];
            }
        running_mean[c] = momentum * running_mean[c] + (1.0 - momentum) * mean;
        running_var[c] =
            momentum * running_var[c] + (1.0 - momentum) * (m > 1.0 ? sq / (m - 1.0) : var);
        save_mean[c] = mean;
        save_invstd[c] = invstd;
    }
}

void dg_ref_batchnorm_fwd_infer(const struct dg_bn_shape *s, const double *x, const double *gamma,
                                const double *beta, const double *running_mean,
                                const double *running_var, double eps, double *y)
{
    for (int n = 0; n < s->batch; n++)
        for (int c = 0; c < s->channels; c++)
            for (int i = 0; i < s->spatial; i++) {
                size_t at = ((size_t)n * s->channels + c) * s->spatial + i;
                y[at] = gamma[c] * (x[at] - running_mean[c]) / sqrt(running_var[c] + eps) +
                        beta[c];
            }
}

void dg_ref_batchnorm_bwd(const struct dg_bn_shape *s, const double *x, const double *dy,
                          const double *gamma, const double *save_mean, const double *save_invstd,
                          double *dx, double *dgamma, double *dbeta)
{
    double m = (double)s->batch * s->spatial;
    for (int c = 0; c < s->channels; c++) {
        double sum = 0.0, dot = 0.0;
        for (int n = 0; n < s->batch; n++)
            for (int i = 0; i < s->spatial; i++) {
                double g = bn_at(s, dy, n, c, i);
                sum += g;
                dot += g * (bn_at(s, x, n, c, i) - save_mean[c]) * save_invstd[c];
            }
        dbeta[c] = sum;
        dgamma[c] = dot;
        for (int n = 0; n < s->batch; n++)
            for (int i = 0; i < s->spatial; i++) {
                size_t at = ((size_t)n * s->channels + c) * s->spatial + i;
                double xhat = (x[at] - save_mean[c]) * save_invstd[c];
                dx[at] = gamma[c] * save_invstd[c] * (dy[at] - sum / m - xhat * dot / m);
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

/* Philox4x32-10 as the Random123 paper defines it (Salmon et al., SC11, section 4.1), written
 * here without src/math/philox.h: S-box multipliers 0xD2511F53 and 0xCD9E8D57, Weyl key
 * increments 0x9E3779B9 and 0xBB67AE85, ten rounds. */
void dg_ref_philox(const uint32_t counter[4], uint64_t seed, uint32_t out[4])
{
    uint64_t x0 = counter[0], x1 = counter[1], x2 = counter[2], x3 = counter[3];
    uint64_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = 0xD2511F53ull * x0, p1 = 0xCD9E8D57ull * x2;
        uint64_t y0 = ((p1 >> 32) ^ x1 ^ k0) & 0xffffffffull;
        uint64_t y1 = p1 & 0xffffffffull;
        uint64_t y2 = ((p0 >> 32) ^ x3 ^ k1) & 0xffffffffull;
        uint64_t y3 = p0 & 0xffffffffull;
        x0 = y0, x1 = y1, x2 = y2, x3 = y3;
        k0 = (k0 + 0x9E3779B9ull) & 0xffffffffull;
        k1 = (k1 + 0xBB67AE85ull) & 0xffffffffull;
    }
    out[0] = (uint32_t)x0, out[1] = (uint32_t)x1, out[2] = (uint32_t)x2, out[3] = (uint32_t)x3;
}

double dg_ref_uniform(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t step,
                      uint64_t index)
{
    uint32_t counter[4] = {(uint32_t)(index / 4), step, epoch,
                           purpose | (uint32_t)(index / ((uint64_t)1 << 34)) << 8};
    uint32_t bits[4];
    dg_ref_philox(counter, seed, bits);
    return (double)(bits[index % 4] / 256u) / 16777216.0;
}

void dg_ref_dropout(size_t n, float rate, const struct dg_dropout_key *key, const double *in,
                    double *out)
{
    for (size_t i = 0; i < n; i++) {
        double u = dg_ref_uniform(key->seed, 4u + key->layer, key->epoch, key->step, i);
        out[i] = u >= (double)rate ? in[i] / (1.0 - (double)rate) : 0.0;
    }
}

void dg_ref_augment_params(const struct dg_augment_key *key, uint32_t image, double params[5])
{
    double u[5];
    for (int k = 0; k < 5; k++)
        u[k] = dg_ref_uniform(key->seed, 8u, key->epoch, key->step, (uint64_t)image * 8u + k);
    params[0] = (2.0 * u[0] - 1.0) * key->rotation_deg;
    params[1] = (2.0 * u[1] - 1.0) * key->shift * 28.0;
    params[2] = (2.0 * u[2] - 1.0) * key->shift * 28.0;
    params[3] = 1.0 + (2.0 * u[3] - 1.0) * key->zoom;
    params[4] = 1.0 + (2.0 * u[4] - 1.0) * key->zoom;
}

/* ../shared/AUGMENTATION.md in double: in = c + M[0:2,0:2] (out - c) + M[0:2,2] with
 * M = R(theta) S(t) Z(z), c = (13.5, 13.5), libm sin and cos; bilinear sampling after clamping
 * the position to the image. */
void dg_ref_augment_image(const uint8_t *image, const double params[5], double *out)
{
    const double pi = 3.14159265358979323846;
    double theta = params[0] * pi / 180.0;
    double rot[3][3] = {{cos(theta), -sin(theta), 0}, {sin(theta), cos(theta), 0}, {0, 0, 1}};
    double shift[3][3] = {{1, 0, params[1]}, {0, 1, params[2]}, {0, 0, 1}};
    double zoom[3][3] = {{params[3], 0, 0}, {0, params[4], 0}, {0, 0, 1}};
    double rs[3][3] = {{0}}, m[3][3] = {{0}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 3; k++)
                rs[i][j] += rot[i][k] * shift[k][j];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 3; k++)
                m[i][j] += rs[i][k] * zoom[k][j];
    const double c = 13.5, last = 27.0;
    for (int row = 0; row < 28; row++)
        for (int col = 0; col < 28; col++) {
            double r = c + m[0][0] * (row - c) + m[0][1] * (col - c) + m[0][2];
            double q = c + m[1][0] * (row - c) + m[1][1] * (col - c) + m[1][2];
            r = r < 0 ? 0 : (r > last ? last : r);
            q = q < 0 ? 0 : (q > last ? last : q);
            int r0 = (int)floor(r), q0 = (int)floor(q);
            int r1 = r0 < 27 ? r0 + 1 : r0, q1 = q0 < 27 ? q0 + 1 : q0;
            double fr = r - r0, fq = q - q0;
            double v = (1 - fr) * (1 - fq) * image[r0 * 28 + q0] +
                       (1 - fr) * fq * image[r0 * 28 + q1] + fr * (1 - fq) * image[r1 * 28 + q0] +
                       fr * fq * image[r1 * 28 + q1];
            out[row * 28 + col] = v / 255.0;
        }
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

void dg_ref_softmax_xent(int batch, const double *logits, const uint8_t *labels,
                         double smoothing, double *probs, double *dlogits, double *loss_sum,
                         double *correct)
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
        /* targets (1 - s) onehot + s / classes: loss -sum t log p */
        double loss = 0.0;
        for (int k = 0; k < DG_CLASSES; k++) {
            double t = (1.0 - smoothing) * (k == label) + smoothing / DG_CLASSES;
            loss -= t * (z[k] - z[best] - log(sum));
            if (dlogits)
                dlogits[(size_t)r * DG_CLASSES + k] = (p[k] - t) / batch;
        }
        *loss_sum += loss;
        *correct += best == label;
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

void dg_ref_batch_assemble_double(const struct dg_dataset *dataset, const uint32_t *rows, int n,
                                  const struct dg_augment_key *augment, double *x)
{
    for (int i = 0; i < n; i++) {
        const uint8_t *image = dataset->images + (size_t)rows[i] * DG_PIXELS;
        double *out = x + (size_t)i * DG_PIXELS;
        if (augment) {
            double params[5];
            dg_ref_augment_params(augment, (uint32_t)i, params);
            dg_ref_augment_image(image, params, out);
        } else {
            for (int k = 0; k < DG_PIXELS; k++)
                out[k] = image[k] / 255.0;
        }
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

void dg_ref_adam(size_t n, double *w, const double *g, double *m, double *v, double lr,
                 double beta1, double beta2, double eps, unsigned long long t)
{
    double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
    for (size_t i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
        w[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
    }
}

void dg_ref_sgd(size_t n, double *w, const double *g, double *b, double lr, double momentum,
                int nesterov)
{
    for (size_t i = 0; i < n; i++) {
        b[i] = momentum * b[i] + g[i];
        w[i] -= lr * (nesterov ? g[i] + momentum * b[i] : b[i]);
    }
}
