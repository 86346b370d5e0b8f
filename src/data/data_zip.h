/* ZIP archives given where data was expected (src/data/zip.c). */
#ifndef DIGITS_DATA_ZIP_H
#define DIGITS_DATA_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "digits/status.h"

/* 1 when the bytes start like a ZIP archive (a local file header, or an empty archive). */
int dg_zip_is_archive(const unsigned char *bytes, size_t size);

/* DG_ERR_INPUT naming the archive's files and saying to unzip it. */
enum dg_status dg_zip_refuse(const char *path);

#endif
