/* libFuzzer target: the strict JSON parser alone (src/io/json.c, dg_json_parse), the
 * safetensors header's parser. A parsed tree is walked (every key looked up again, every
 * string measured as UTF-8) and freed; the UTF-8 helpers get the raw input too. */
#include "fuzz_common.h"

#include "io/json.h"

static size_t walk(const struct dg_json *v, int depth)
{
    size_t seen = 1;
    if (depth > DG_JSON_MAX_DEPTH + 1)
        abort(); /* deeper than the parser allows */
    switch (v->type) {
    case DG_JSON_STRING:
        if (v->string[v->length] != '\0')
            abort();
        for (size_t i = 0; i < v->length;) {
            size_t k = dg_json_utf8_length((const unsigned char *)v->string + i, v->length - i);
            i += k ? k : 1;
        }
        break;
    case DG_JSON_ARRAY:
        for (size_t i = 0; i < v->count; i++)
            seen += walk(&v->items[i], depth + 1);
        break;
    case DG_JSON_OBJECT:
        for (size_t i = 0; i < v->count; i++) {
            /* keys are unique: looking one up finds its own value (when it has no NUL) */
            if (strlen(v->keys[i]) == v->key_lengths[i] && dg_json_get(v, v->keys[i]) != &v->items[i])
                abort();
            seen += walk(&v->items[i], depth + 1);
        }
        break;
    default:
        break;
    }
    (void)dg_json_type_name(v->type);
    return seen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dg_json root;
    char error[256];
    int parsed = dg_json_parse((const char *)data, size, &root, error, sizeof error);
    if (parsed == 0) {
        if (walk(&root, 0) > DG_JSON_MAX_VALUES)
            abort();
        dg_json_free(&root);
    } else if (parsed == -1 && strnlen(error, sizeof error) == sizeof error) {
        abort(); /* the message must be terminated */
    }
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *clean = dg_json_utf8_clean(text);
    if (clean) {
        size_t n = strlen(clean);
        for (size_t i = 0; i < n;) {
            size_t k = dg_json_utf8_length((const unsigned char *)clean + i, n - i);
            if (!k)
                abort(); /* the cleaned text is valid UTF-8 */
            i += k;
        }
        free(clean);
    }
    free(text);
    return 0;
}
