/* Kaggle-layout answer and submission files: "ImageId,Label" then one "ID,LABEL" row per image
 * (`digits predict` writes them; `scripts/get-data` writes test_labels.csv). */
#ifndef DIGITS_CLI_ANSWERS_H
#define DIGITS_CLI_ANSWERS_H

#include <stddef.h>
#include <stdint.h>

#include "digits/status.h"

/* Reads `path` strictly: the header, then rows with ImageId 1..N each exactly once (any order)
 * and Label 0..9, optional "\r" before "\n", nothing else. labels[id - 1] (malloc) and N.
 * A bad file is DG_ERR_INPUT with "FILE:LINE:COL: what was expected". */
enum dg_status dg_answers_load(const char *path, uint8_t **labels, size_t *count);

#endif
