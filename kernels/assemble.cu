/* Batch assembly on the device: uint8 images (count, 784) gathered by row index into float
 * x (n, 1, 28, 28) / 255, optionally warped by src/math/augment.h with the parameters drawn
 * here from the same Philox key as on the CPU (bit-identical under --fmad=false). One block
 * per image: the image is staged in shared memory, its affine map computed once. */
#include "math/augment.h"
#include "common.cuh"
#include "launchers.h"

__global__ void assemble_kernel(const uint8_t *images, const uint8_t *labels_in,
                                const uint32_t *rows, int augment, struct dg_augment_key key,
                                const struct dg_step_block *vars, float *x, uint8_t *labels_out)
{
    __shared__ uint8_t image[DG_PIXELS];
    __shared__ struct dg_affine affine;
    int index = blockIdx.x;
    size_t row = rows ? (size_t)rows[index] : (size_t)index;
    const uint8_t *source = images + row * DG_PIXELS;
    for (int k = threadIdx.x; k < DG_PIXELS; k += DG_BLOCK)
        image[k] = source[k];
    if (threadIdx.x == 0) {
        if (augment) {
            struct dg_augment_ranges ranges;
            ranges.rotation_deg = key.rotation_deg;
            ranges.shift = key.shift;
            ranges.zoom = key.zoom;
            uint32_t epoch = vars ? vars->epoch : key.epoch;
            uint32_t step = vars ? vars->step : key.step;
            affine = dg_augment_affine(
                dg_augment_draw(ranges, key.seed, epoch, step, (uint32_t)index));
        }
        if (labels_in && labels_out)
            labels_out[index] = labels_in[row];
    }
    __syncthreads();
    float *out = x + (size_t)index * DG_PIXELS;
    for (int k = threadIdx.x; k < DG_PIXELS; k += DG_BLOCK)
        out[k] = augment ? dg_augment_pixel(image, affine, k / DG_IMAGE_SIDE, k % DG_IMAGE_SIDE)
                         : dg_pixel_to_float(image[k]);
}

extern "C" cudaError_t dg_launch_assemble(const uint8_t *images, const uint8_t *labels_in,
                                          const uint32_t *rows, int n,
                                          const struct dg_augment_key *augment,
                                          const struct dg_step_block *vars, float *x,
                                          uint8_t *labels_out, cudaStream_t stream)
{
    if (n <= 0)
        return cudaSuccess;
    struct dg_augment_key key = {0, 0, 0, 0.0f, 0.0f, 0.0f};
    if (augment)
        key = *augment;
    assemble_kernel<<<(unsigned)n, DG_BLOCK, 0, stream>>>(images, labels_in, rows, augment != NULL,
                                                          key, vars, x, labels_out);
    return cudaGetLastError();
}
