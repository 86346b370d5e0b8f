/* The training history as text: one "history=" line per epoch, in checkpoints and model files,
 * with every float printed to read back bit for bit. */
#include "digits/train.h"

#include "digits/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dg_history_format(const struct dg_epoch_report *r, char *out, size_t size)
{
    return snprintf(out, size, "%d,%d,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g", r->epoch,
                    r->epochs, r->loss, r->accuracy, r->val_loss, r->val_accuracy, r->lr,
                    r->next_lr, r->images_per_second, r->seconds);
}

int dg_history_parse(const char *text, struct dg_epoch_report *r)
{
    memset(r, 0, sizeof *r);
    char *end;
    r->epoch = (int)strtol(text, &end, 10);
    int ok = end != text && *end == ',';
    const char *p = end + 1;
    r->epochs = ok ? (int)strtol(p, &end, 10) : 0;
    ok = ok && end != p && *end == ',';
    double *fields[8] = {&r->loss, &r->accuracy, &r->val_loss,          &r->val_accuracy,
                         &r->lr,   &r->next_lr,  &r->images_per_second, &r->seconds};
    for (int f = 0; f < 8 && ok; f++) {
        p = end + 1;
        *fields[f] = strtod(p, &end);
        ok = end != p && (f == 7 ? (*end == '\n' || *end == '\0') : *end == ',');
    }
    return ok && r->epoch >= 1 && r->epochs >= r->epoch;
}

int dg_history_read(const char *text, const char *key, struct dg_epoch_report *out, int max)
{
    size_t len = strlen(key);
    int count = 0;
    for (const char *line = text; line && *line;) {
        if (strncmp(line, key, len) == 0 && line[len] == '=') {
            struct dg_epoch_report e;
            if (count >= max || !dg_history_parse(line + len + 1, &e) || e.epoch != count + 1)
                return -1;
            out[count++] = e;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return count;
}

void dg_history_text(struct dg_text *t, const char *key, const struct dg_epoch_report *history,
                     int count)
{
    for (int i = 0; i < count; i++) {
        char line[512];
        dg_history_format(&history[i], line, sizeof line);
        dg_text_add(t, "%s=%s\n", key, line);
    }
}
