/* libFuzzer target: the data layer (src/data/dataset.c): Kaggle CSV (train and test layouts),
 * MNIST IDX images, plain or gzip (the loader's own gzip member reader over raw inflate, CRC32
 * and length trailers, FHCRC/FEXTRA/FNAME/FCOMMENT, concatenated members), through
 * dg_dataset_load_threads, the only entry point (it takes a path: the input goes to a memfd).
 *
 * An input holding IDX images followed by an IDX1 label file (magic 00 00 08 01 after the
 * 16-byte image header) is split there: the images are loaded with the labels as --labels.
 * Two parse threads are asked for: inputs under 1 MiB get one (the loader's rule), larger or
 * gzip ones claiming more get the threaded path. A loaded set is checked (labels 0..9, the
 * counts the format implies) and truncated, fingerprinted and freed. */
#include "fuzz_common.h"

#include "digits/data.h"
#include "digits/checkpoint.h"
#include "digits/io.h"

static const uint8_t LABELS_MAGIC[4] = {0, 0, 8, 1};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *labels = NULL;
    size_t images_size = size;
    if (size >= 20 && data[0] == 0 && data[1] == 0 && data[2] == 8 && data[3] == 3) {
        for (size_t i = 16; i + 4 <= size; i++)
            if (memcmp(data + i, LABELS_MAGIC, 4) == 0) {
                labels = fuzz_file(1, data + i, size - i);
                images_size = i;
                break;
            }
    }
    const char *path = fuzz_file(0, data, images_size);
    struct dg_dataset set;
    enum dg_status status = dg_dataset_load_threads(path, labels, NULL, 2, &set);
    if (status != DG_OK) {
        if (set.images || set.labels || set.count)
            abort(); /* left empty on failure */
        return 0;
    }
    if (!set.images && set.count)
        abort();
    if (set.labels)
        for (size_t i = 0; i < set.count; i++)
            if (set.labels[i] >= DG_CLASSES)
                abort();
    if (set.format == DG_FORMAT_CSV_TRAIN && !set.labels && set.count)
        abort();
    if (set.format == DG_FORMAT_CSV_TEST && set.labels)
        abort();
    uint64_t rows;
    uint32_t crc;
    dg_dataset_fingerprint(&set, &rows, &crc);
    if (rows != set.count)
        abort();
    dg_dataset_truncate(&set, set.count / 2);
    (void)dg_data_format_name(set.format);
    dg_dataset_free(&set);
    return 0;
}
