/* The CUDA backend linked against this library runs on the emulated device: `--device auto`
 * and `digits bench --device all` never pick it, and `digits info` says what it is. */
#include "digits/backend.h"

int dg_cuda_emulated(void)
{
    return 1;
}
