// Device helpers shared by the CUDA kernels of every op: conversions to the accumulation
// type, rounding back, a block-wide sum, and the dtype dispatch of the launchers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "dtype.h"

namespace sgan_fast {

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> struct Out;
template <> struct Out<float> { static __device__ __forceinline__ float of(float x) { return x; } };
template <> struct Out<double> { static __device__ __forceinline__ double of(double x) { return x; } };
template <> struct Out<__half> { static __device__ __forceinline__ __half of(float x) { return __float2half_rn(x); } };
template <> struct Out<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 of(float x) { return __float2bfloat16_rn(x); }
};

// Sum over the block, returned to every thread. sh: 33 slots of shared memory.
template <typename A>
__device__ A block_sum(A v, A* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // earlier readers of sh are done
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  const int nwarps = (blockDim.x + 31) >> 5;
  if (warp == 0) {
    v = lane < nwarps ? sh[lane] : A(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) sh[32] = v;
  }
  __syncthreads();
  return sh[32];
}

}  // namespace sgan_fast

// Calls FN<T, A>(...) for the data type code dt (T the storage type, A the accumulation type).
#define SGAN_DISPATCH(dt, FN, ...)                                        \
  switch (dt) {                                                           \
    case DType::f32: return FN<float, float>(__VA_ARGS__);                \
    case DType::f64: return FN<double, double>(__VA_ARGS__);              \
    case DType::f16: return FN<__half, float>(__VA_ARGS__);               \
    case DType::bf16: return FN<__nv_bfloat16, float>(__VA_ARGS__);       \
  }                                                                       \
  return cudaErrorInvalidValue;
