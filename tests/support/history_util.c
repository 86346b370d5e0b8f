#include "history_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits/io.h"

int dg_test_model_history(const char *path, const char *key, struct dg_epoch_report *out,
                          int max)
{
    struct dg_model *members = calloc(DG_MAX_MEMBERS, sizeof *members);
    size_t size = 1u << 20;
    char *settings = malloc(size);
    ck_assert_ptr_nonnull(members);
    ck_assert_ptr_nonnull(settings);
    int count = 0;
    enum dg_status status = dg_ensemble_load(path, members, DG_MAX_MEMBERS, &count, settings, size);
    ck_assert_msg(status == DG_OK, "%s: %s", path, dg_error_message());
    int epochs = dg_history_read(settings, key, out, max);
    ck_assert_msg(epochs >= 0, "%s: malformed %s lines", path, key);
    for (int m = 0; m < count; m++)
        dg_model_free(&members[m]);
    free(members);
    free(settings);
    return epochs;
}

static int same(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

void dg_test_expect_same_history(const char *a, const char *key_a, const char *b,
                                 const char *key_b, int epochs)
{
    struct dg_epoch_report ha[64], hb[64];
    int na = dg_test_model_history(a, key_a, ha, 64), nb = dg_test_model_history(b, key_b, hb, 64);
    ck_assert_msg(na == epochs && nb == epochs, "%s %s: %d epochs, %s %s: %d, expected %d", a,
                  key_a, na, b, key_b, nb, epochs);
    for (int i = 0; i < epochs; i++) {
        const struct dg_epoch_report *x = &ha[i], *y = &hb[i];
        ck_assert_msg(x->epoch == i + 1 && y->epoch == i + 1 && same(x->loss, y->loss) &&
                          same(x->accuracy, y->accuracy) && same(x->val_loss, y->val_loss) &&
                          same(x->val_accuracy, y->val_accuracy) && same(x->lr, y->lr) &&
                          same(x->next_lr, y->next_lr),
                      "epoch %d of %s (%s) and %s (%s) differ: loss %.17g vs %.17g", i + 1, a,
                      key_a, b, key_b, x->loss, y->loss);
    }
    printf("ok   %s (%s) and %s (%s): the same %d epochs of history\n", a, key_a, b, key_b,
           epochs);
}

/* members[0..*count) of `path` (fails the test when it cannot be read) */
static struct dg_model *load_members(const char *path, int *count)
{
    struct dg_model *members = calloc(DG_MAX_MEMBERS, sizeof *members);
    size_t size = 1u << 20;
    char *settings = malloc(size);
    ck_assert_ptr_nonnull(members);
    ck_assert_ptr_nonnull(settings);
    enum dg_status status = dg_ensemble_load(path, members, DG_MAX_MEMBERS, count, settings, size);
    ck_assert_msg(status == DG_OK, "%s: %s", path, dg_error_message());
    free(settings);
    return members;
}

void dg_test_expect_same_params(const char *a, const char *b)
{
    int na = 0, nb = 0;
    struct dg_model *ma = load_members(a, &na), *mb = load_members(b, &nb);
    ck_assert_msg(na == nb, "%s has %d members, %s %d", a, na, b, nb);
    for (int m = 0; m < na; m++) {
        ck_assert_msg(ma[m].param_count == mb[m].param_count,
                      "%s member %d: %zu parameters, %s: %zu", a, m + 1, ma[m].param_count, b,
                      mb[m].param_count);
        ck_assert_msg(memcmp(ma[m].params, mb[m].params, ma[m].param_count * sizeof(float)) == 0,
                      "%s and %s: member %d's parameters differ", a, b, m + 1);
    }
    printf("ok   %s and %s: the same parameters, bit for bit (%d member%s)\n", a, b, na,
           na == 1 ? "" : "s");
    for (int m = 0; m < na; m++) {
        dg_model_free(&ma[m]);
        dg_model_free(&mb[m]);
    }
    free(ma);
    free(mb);
}
