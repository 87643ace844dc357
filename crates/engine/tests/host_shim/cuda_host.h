// Compiles kernels.cu as plain C++ for the CPU (tests only): the CUDA keywords become
// nothing, the grid built-ins are globals that the test sets before each emulated thread,
// and the device intrinsics the kernels use get their host definitions.
#include <math.h>
#include <string.h>

#define SUPERRES_HOST 1
#define __global__
#define __device__
#define __forceinline__ inline

struct dim3_ { unsigned x, y, z; };
// Per thread: tests launch kernels from several threads at once.
static thread_local dim3_ blockIdx, blockDim, threadIdx, gridDim;

// The test runs a launch as grid × block calls of the kernel, one per emulated thread.
extern "C" void superres_host_thread(unsigned grid, unsigned block, unsigned b, unsigned t) {
    gridDim.x = grid; blockDim.x = block; blockIdx.x = b; threadIdx.x = t;
    gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
}

static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
