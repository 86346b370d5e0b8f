/* What a model file stores: the training history ("history=" / "memberM_history=" lines) and
 * the parameters. */
#ifndef DIGITS_TEST_HISTORY_UTIL_H
#define DIGITS_TEST_HISTORY_UTIL_H

#include "digits/train.h"

/* The history under `key` in the model or ensemble file `path` into out[0..max): the count
 * (fails the test when the file cannot be read or a line is malformed). */
int dg_test_model_history(const char *path, const char *key, struct dg_epoch_report *out,
                          int max);

/* Histories `key_a` of model a and `key_b` of model b have `epochs` entries each whose training
 * values (loss, accuracy, val_loss, val_accuracy, lr, next_lr) are identical, bit for bit
 * (NaN equal to NaN); the timing fields may differ. */
void dg_test_expect_same_history(const char *a, const char *key_a, const char *b,
                                 const char *key_b, int epochs);

/* The model or ensemble files a and b hold the same members with the same parameters, bit for
 * bit (batchnorm's running statistics included: they are parameters of the table). */
void dg_test_expect_same_params(const char *a, const char *b);

#endif
