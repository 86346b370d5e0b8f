/* DG_HOSTDEV: marks element math shared by the C backend and the CUDA kernels.
 * Under nvcc the functions are __host__ __device__ (they are already `static inline`, so no
 * __forceinline__, which would repeat `inline`); under a C compiler plain static inline. */
#ifndef DG_HOSTDEV_H
#define DG_HOSTDEV_H

#ifdef __CUDACC__
#define DG_HOSTDEV __host__ __device__
#else
#define DG_HOSTDEV
#endif

#endif
