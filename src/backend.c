/* Backend-independent helpers over the op vtable (include/digits/backend.h). */
#include "digits/backend.h"

void dg_backend_destroy(struct dg_backend *be)
{
    if (be)
        be->ops->destroy(be);
}
