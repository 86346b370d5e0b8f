/* The shared element math (the src/math/ headers) on the host: Philox known answers, the uniform
 * draws, dropout scales, softmax-xent on extreme logits, the RMSprop element and the
 * augmentation warp. Images 28x28 row-major. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "math/augment.h"
#include "math/dropout.h"
#include "math/philox.h"
#include "math/rmsprop.h"
#include "math/softmax_xent.h"
#include "ref_ops.h"
#include "test_util.h"

/* Check records every passing assertion (a write to its message file), which costs more than
 * the draw itself, and far more under qemu-user: loops over many draws count their bad draws
 * and assert once. */

/* ---- Philox4x32-10: the known-answer vectors of the Random123 distribution (kat_vectors) ---- */

static void check_kat(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                      uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3)
{
    struct dg_philox_ctr ctr = {{c0, c1, c2, c3}};
    struct dg_philox_ctr out = dg_philox4x32_10(ctr, k0, k1);
    ck_assert_uint_eq(out.v[0], r0);
    ck_assert_uint_eq(out.v[1], r1);
    ck_assert_uint_eq(out.v[2], r2);
    ck_assert_uint_eq(out.v[3], r3);
}

START_TEST(philox_known_answers)
{
    check_kat(0, 0, 0, 0, 0, 0, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
    check_kat(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
              0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
    check_kat(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u,
              0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}
END_TEST

START_TEST(rng_bits_are_philox_lanes)
{
    /* index i: counter (i / 4, step, epoch, purpose), lane i % 4, key = seed halves */
    uint64_t seed = 0x0123456789abcdefull;
    for (uint64_t i = 0; i < 64; i++) {
        struct dg_philox_ctr ctr = {{(uint32_t)(i / 4), 7, 3, DG_RNG_SHUFFLE}};
        struct dg_philox_ctr out = dg_philox4x32_10(ctr, 0x89abcdefu, 0x01234567u);
        ck_assert_uint_eq(dg_rng_bits(seed, DG_RNG_SHUFFLE, 3, 7, i), out.v[i % 4]);
    }
}
END_TEST

START_TEST(uniform_range_and_mean)
{
    const int draws = 100000;
    double sum = 0.0;
    float lo = 1.0f, hi = 0.0f;
    int below_half = 0, out_of_range = 0, not_24_bits = 0;
    for (int i = 0; i < draws; i++) {
        float u = dg_rng_uniform(42, DG_RNG_INIT, 0, 0, (uint64_t)i);
        out_of_range += !(u >= 0.0f && u < 1.0f);
        /* 24 random bits: u * 2^24 is an integer */
        not_24_bits += u * 16777216.0f != floorf(u * 16777216.0f);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        sum += u;
        below_half += u < 0.5f;
    }
    ck_assert_int_eq(out_of_range, 0);
    ck_assert_int_eq(not_24_bits, 0);
    ck_assert_double_le(fabs(sum / draws - 0.5), 0.01);
    ck_assert_double_le(fabs((double)below_half / draws - 0.5), 0.01);
    ck_assert_float_lt(lo, 0.001f);
    ck_assert_float_gt(hi, 0.999f);
}
END_TEST

/* Two streams are different when at most a handful of 1000 32-bit draws coincide. */
static int coincidences(uint64_t seed_a, uint32_t purpose_a, uint32_t epoch_a, uint32_t step_a,
                        uint64_t seed_b, uint32_t purpose_b, uint32_t epoch_b, uint32_t step_b)
{
    int same = 0;
    for (uint64_t i = 0; i < 1000; i++)
        same += dg_rng_bits(seed_a, purpose_a, epoch_a, step_a, i) ==
                dg_rng_bits(seed_b, purpose_b, epoch_b, step_b, i);
    return same;
}

START_TEST(streams_differ)
{
    /* the draws are the reference's own Philox (tests/support/ref_ops.c, written from the
     * paper) at the documented counter layout, for several purposes, epochs, steps and seeds */
    const uint64_t seeds[3] = {1, 42, 0x123456789abcdefull};
    for (int s = 0; s < 3; s++)
        for (uint64_t i = 0; i < 1000; i += 7) {
            float got = dg_rng_uniform(seeds[s], DG_RNG_AUGMENT, 3, 11, i * 977);
            double want = dg_ref_uniform(seeds[s], DG_RNG_AUGMENT, 3, 11, i * 977);
            ck_assert_msg((double)got == want, "seed %d index %llu: %.9g, reference %.9g", s,
                          (unsigned long long)(i * 977), (double)got, want);
        }
    ck_assert((double)dg_rng_uniform(7, DG_RNG_SPLIT, 0, 0, (uint64_t)5 << 34) ==
              dg_ref_uniform(7, DG_RNG_SPLIT, 0, 0, (uint64_t)5 << 34));
    ck_assert_int_le(coincidences(1, DG_RNG_INIT, 0, 0, 1, DG_RNG_SHUFFLE, 0, 0), 2);
    ck_assert_int_le(coincidences(1, DG_RNG_DROPOUT, 0, 0, 1, DG_RNG_DROPOUT + 1, 0, 0), 2);
    ck_assert_int_le(coincidences(1, DG_RNG_SHUFFLE, 0, 0, 1, DG_RNG_SHUFFLE, 1, 0), 2);
    ck_assert_int_le(coincidences(1, DG_RNG_AUGMENT, 2, 5, 1, DG_RNG_AUGMENT, 2, 6), 2);
    ck_assert_int_le(coincidences(1, DG_RNG_INIT, 0, 0, 2, DG_RNG_INIT, 0, 0), 2);
    ck_assert_int_le(coincidences(1ull << 32, DG_RNG_INIT, 0, 0, 1, DG_RNG_INIT, 0, 0), 2);
}
END_TEST

START_TEST(dropout_scales)
{
    const float rates[] = {0.25f, 0.5f};
    const int count = 100000;
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        float rate = rates[r];
        float keep = 1.0f / (1.0f - rate);
        int kept = 0, other = 0;
        for (int i = 0; i < count; i++) {
            float s = dg_dropout_scale(rate, 99, 1, 4, 17, (uint64_t)i);
            other += !(s == 0.0f || s == keep);
            kept += s != 0.0f;
        }
        ck_assert_int_eq(other, 0);
        ck_assert_double_le(fabs((double)kept / count - (1.0 - rate)), 0.01);
    }
    /* a kept element of rate 0.5 is doubled exactly, one of rate 0.25 scaled by 4/3 in float */
    int doubled = 0;
    for (int i = 0; i < 64; i++) {
        float s = dg_dropout_scale(0.5f, 99, 1, 4, 17, (uint64_t)i);
        doubled += s == 2.0f;
        ck_assert(s == 0.0f || s == 2.0f);
    }
    ck_assert_int_gt(doubled, 16);
    int not_one = 0;
    for (int i = 0; i < 1000; i++)
        not_one += dg_dropout_scale(0.0f, 5, 0, 0, 0, (uint64_t)i) != 1.0f;
    ck_assert_int_eq(not_one, 0);
    /* layers use different masks */
    int same = 0;
    for (int i = 0; i < 1000; i++)
        same += dg_dropout_scale(0.5f, 5, 0, 0, 0, (uint64_t)i) ==
                dg_dropout_scale(0.5f, 5, 1, 0, 0, (uint64_t)i);
    ck_assert_int_lt(same, 600);
}
END_TEST

START_TEST(softmax_large_logits)
{
    float logits[10] = {1000.0f, 0.0f, -1000.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float probs[10], grad[10];
    int correct;
    float loss = dg_softmax_xent_row(logits, probs, grad, 10, 0, 0.0f, 1.0f, &correct);
    ck_assert_float_eq(loss, 0.0f);
    ck_assert_int_eq(correct, 1);
    ck_assert_float_eq(probs[0], 1.0f);
    for (int k = 1; k < 10; k++) {
        ck_assert_float_eq(probs[k], 0.0f);
        ck_assert_float_eq(grad[k], 0.0f);
    }
    ck_assert_float_eq(grad[0], 0.0f);

    loss = dg_softmax_xent_row(logits, probs, grad, 10, 1, 0.0f, 0.5f, &correct);
    ck_assert_float_eq(loss, 1000.0f);
    ck_assert_int_eq(correct, 0);
    ck_assert_float_eq(grad[0], 0.5f);
    ck_assert_float_eq(grad[1], -0.5f);
    loss = dg_softmax_xent_row(logits, probs, NULL, 10, 2, 0.0f, 0.5f, &correct);
    ck_assert_float_eq(loss, 2000.0f);
    for (int k = 0; k < 10; k++)
        ck_assert(!isnan(probs[k]) && !isinf(probs[k]));

    /* equal logits: uniform probabilities, loss log(10), the first maximum is the argmax */
    float equal[10];
    for (int k = 0; k < 10; k++)
        equal[k] = 5.0f;
    loss = dg_softmax_xent_row(equal, probs, grad, 10, 3, 0.0f, 1.0f, &correct);
    ck_assert_double_le(fabs(loss - log(10.0)), 1e-6 * log(10.0));
    ck_assert_int_eq(correct, 0);
    dg_softmax_xent_row(equal, probs, grad, 10, 0, 0.0f, 1.0f, &correct);
    ck_assert_int_eq(correct, 1);
    for (int k = 0; k < 10; k++)
        ck_assert_float_eq(probs[k], 0.1f);

    /* label smoothing 0.1: targets 0.91 for the label, 0.01 elsewhere. logits (1000, 0, ...):
     * p = (1, 0, ...), loss = logz - sum t z = 1000 - (0.91 * 1000 - 0.01 * 1000) = 100 (label
     * 0), the gradient p - t: 0.09 and -0.01; for label 1 the loss is 1000 - (0.01 * 1000 -
     * 0.01 * 1000) = 1000 */
    loss = dg_softmax_xent_row(logits, probs, grad, 10, 0, 0.1f, 1.0f, &correct);
    ck_assert_double_le(fabs(loss - 100.0), 1e-3);
    ck_assert_double_le(fabs(grad[0] - 0.09), 1e-7);
    ck_assert_double_le(fabs(grad[1] + 0.01), 1e-9);
    loss = dg_softmax_xent_row(logits, probs, grad, 10, 1, 0.1f, 0.5f, &correct);
    ck_assert_double_le(fabs(loss - 1000.0), 1e-3);
    ck_assert_double_le(fabs(grad[0] - 0.495), 1e-7);
    ck_assert_double_le(fabs(grad[1] + 0.455), 1e-7);
    /* equal logits: uniform p = t on average, loss log(10) whatever the smoothing, and the
     * gradient p - t: 0.1 - 0.91 at the label, 0.1 - 0.01 elsewhere */
    loss = dg_softmax_xent_row(equal, probs, grad, 10, 3, 0.1f, 1.0f, &correct);
    ck_assert_double_le(fabs(loss - log(10.0)), 1e-5);
    ck_assert_double_le(fabs(grad[3] + 0.81), 1e-7);
    ck_assert_double_le(fabs(grad[4] - 0.09), 1e-7);
}
END_TEST

START_TEST(rmsprop_element)
{
    float w = 1.0f, a = 0.5f;
    const float g = 0.25f, lr = 0.001f, rho = 0.9f, eps = 1e-7f;
    dg_rmsprop_element(&w, &a, g, lr, rho, eps);
    /* by hand: a = 0.9*0.5 + 0.1*0.0625 = 0.45625; w = 1 - 0.001*0.25 / (sqrt(0.45625) + 1e-7) */
    double a_ref = 0.45625;
    double w_ref = 1.0 - 0.00025 / (sqrt(0.45625) + 1e-7);
    ck_assert_double_le(fabs(a - a_ref), 2e-7 * a_ref);
    ck_assert_double_le(fabs(w - w_ref), 2e-7);
    ck_assert_double_le(fabs((1.0 - w) - 3.7012e-4), 1e-7);
}
END_TEST

/* ---- augmentation ---- */

static void test_image(uint8_t *image)
{
    for (int k = 0; k < DG_PIXELS; k++)
        image[k] = (uint8_t)((k * 37 + 11) % 256);
}

static void warp(const uint8_t *image, struct dg_augment_params p, float *out)
{
    struct dg_affine a = dg_augment_affine(p);
    for (int r = 0; r < DG_IMAGE_SIDE; r++)
        for (int c = 0; c < DG_IMAGE_SIDE; c++)
            out[r * DG_IMAGE_SIDE + c] = dg_augment_pixel(image, a, r, c);
}

START_TEST(augment_identity)
{
    uint8_t image[DG_PIXELS];
    float out[DG_PIXELS], want[DG_PIXELS];
    test_image(image);
    struct dg_augment_params p = {0.0f, 0.0f, 0.0f, 1.0f, 1.0f};
    warp(image, p, out);
    for (int k = 0; k < DG_PIXELS; k++)
        want[k] = dg_pixel_to_float(image[k]);
    ck_assert(dg_test_equal("identity warp", out, want, DG_PIXELS));
}
END_TEST

START_TEST(augment_whole_pixel_shift)
{
    uint8_t image[DG_PIXELS];
    float out[DG_PIXELS];
    test_image(image);
    struct dg_augment_params p = {0.0f, 2.0f, -3.0f, 1.0f, 1.0f};
    warp(image, p, out);
    /* output (r, c) samples input (r + 2, c - 3): input pixel (R, C) moves to (R - 2, C + 3) */
    int checked = 0;
    for (int r = 0; r < DG_IMAGE_SIDE; r++)
        for (int c = 0; c < DG_IMAGE_SIDE; c++) {
            int sr = r + 2, sc = c - 3;
            if (sr < 0 || sr >= DG_IMAGE_SIDE || sc < 0 || sc >= DG_IMAGE_SIDE)
                continue;
            ck_assert_float_eq(out[r * DG_IMAGE_SIDE + c],
                               dg_pixel_to_float(image[sr * DG_IMAGE_SIDE + sc]));
            checked++;
        }
    ck_assert_int_eq(checked, 26 * 25);
    /* outside: the nearest edge pixel */
    ck_assert_float_eq(out[27 * DG_IMAGE_SIDE + 0], dg_pixel_to_float(image[27 * DG_IMAGE_SIDE]));
}
END_TEST

START_TEST(augment_quarter_turn)
{
    uint8_t image[DG_PIXELS];
    float out[DG_PIXELS];
    test_image(image);
    struct dg_augment_params p = {90.0f, 0.0f, 0.0f, 1.0f, 1.0f};
    warp(image, p, out);
    for (int r = 0; r < DG_IMAGE_SIDE; r++)
        for (int c = 0; c < DG_IMAGE_SIDE; c++)
            ck_assert_float_eq(out[c * DG_IMAGE_SIDE + (27 - r)],
                               dg_pixel_to_float(image[r * DG_IMAGE_SIDE + c]));
}
END_TEST

START_TEST(augment_draws_in_range)
{
    struct dg_augment_ranges ranges = {10.0f, 0.1f, 0.1f};
    double theta_min = 0, theta_max = 0;
    int out_of_range = 0;
    for (uint32_t i = 0; i < 10000; i++) {
        struct dg_augment_params p = dg_augment_draw(ranges, 7, 1, i / 100, i % 100);
        out_of_range += !(p.theta_deg >= -10.0f && p.theta_deg <= 10.0f) +
                        !(p.t_row >= -2.8f && p.t_row <= 2.8f) +
                        !(p.t_col >= -2.8f && p.t_col <= 2.8f) +
                        !(p.z_row >= 0.9f && p.z_row <= 1.1f) +
                        !(p.z_col >= 0.9f && p.z_col <= 1.1f);
        theta_min = p.theta_deg < theta_min ? p.theta_deg : theta_min;
        theta_max = p.theta_deg > theta_max ? p.theta_deg : theta_max;
    }
    ck_assert_int_eq(out_of_range, 0);
    ck_assert_double_lt(theta_min, -9.9);
    ck_assert_double_gt(theta_max, 9.9);
    /* zero ranges: the identity parameters */
    struct dg_augment_ranges none = {0.0f, 0.0f, 0.0f};
    struct dg_augment_params p = dg_augment_draw(none, 7, 1, 2, 3);
    ck_assert(p.theta_deg == 0.0f && p.t_row == 0.0f && p.t_col == 0.0f);
    ck_assert(p.z_row == 1.0f && p.z_col == 1.0f);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("math");
    TCase *rng = tcase_create("rng");
    tcase_add_test(rng, philox_known_answers);
    tcase_add_test(rng, rng_bits_are_philox_lanes);
    tcase_add_test(rng, uniform_range_and_mean);
    tcase_add_test(rng, streams_differ);
    suite_add_tcase(suite, rng);
    TCase *elements = tcase_create("elements");
    tcase_add_test(elements, dropout_scales);
    tcase_add_test(elements, softmax_large_logits);
    tcase_add_test(elements, rmsprop_element);
    suite_add_tcase(suite, elements);
    TCase *augment = tcase_create("augment");
    tcase_add_test(augment, augment_identity);
    tcase_add_test(augment, augment_whole_pixel_shift);
    tcase_add_test(augment, augment_quarter_turn);
    tcase_add_test(augment, augment_draws_in_range);
    suite_add_tcase(suite, augment);
    return dg_test_run_suite(suite);
}
