/* The real CUDA backend runs on NVIDIA hardware; the emulated device (tests/emu, a test
 * fixture) defines this function the other way. */
#include "digits/backend.h"

int dg_cuda_emulated(void)
{
    return 0;
}
