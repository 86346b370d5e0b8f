/* Shared by predict and eval: load a model and a dataset on a backend and compute the class
 * probabilities (count, 10) of every image. */
#include "cli/scoring.h"

#include "digits/io.h"
#include "digits/train.h"

#include <stdlib.h>
#include <string.h>

enum dg_status dg_scoring_run(struct dg_scoring *s, const char *model_path, const char *data_path,
                              const char *labels_path, const struct dg_cli_device *device,
                              int batch)
{
    enum dg_status status;
    memset(s, 0, sizeof *s);
    if ((status = dg_model_load(model_path, &s->model, s->settings, sizeof s->settings)) !=
        DG_OK)
        return status;
    if ((status = dg_cli_open_backend(device, 0, &s->be)) != DG_OK)
        return status;
    if ((status = dg_dataset_load(data_path, labels_path, &s->be->host_allocator, &s->dataset)) !=
        DG_OK)
        return status;
    s->probs = malloc(s->dataset.count * DG_CLASSES * sizeof(float));
    s->predicted = malloc(s->dataset.count);
    if (!s->probs || !s->predicted)
        return dg_error(DG_ERR_NOMEM, "out of memory for %zu predictions", s->dataset.count);
    if ((status = dg_predict(s->be, &s->model, &s->dataset, batch, s->probs)) != DG_OK)
        return status;
    for (size_t i = 0; i < s->dataset.count; i++) {
        const float *p = s->probs + i * DG_CLASSES;
        int best = 0;
        for (int k = 1; k < DG_CLASSES; k++)
            if (p[k] > p[best])
                best = k;
        s->predicted[i] = (uint8_t)best;
    }
    return DG_OK;
}

void dg_scoring_free(struct dg_scoring *s)
{
    free(s->probs);
    free(s->predicted);
    dg_dataset_free(&s->dataset);
    dg_model_free(&s->model);
    if (s->be)
        dg_backend_destroy(s->be);
    memset(s, 0, sizeof *s);
}
