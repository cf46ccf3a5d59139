// Host-side helpers shared by the ops' .cpp files.
#pragma once
#include <torch/extension.h>

#include <stdexcept>

#include "dtype.h"

#ifdef SGAN_FAST_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace sgan_fast {

inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline DType dtype_code(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
  return DType::f32;
}

#ifndef SGAN_FAST_WITH_CUDA
// A CUDA tensor reached an op of an extension built without CUDA kernels: unreachable
// through the dispatcher (no CUDA kernels are registered then), a guard all the same.
[[noreturn]] inline void require_cuda_build(const char* op) {
  TORCH_CHECK(false, op, ": sgan_fast._C was built without CUDA kernels");
  throw std::logic_error("unreachable");
}
#endif

#ifdef SGAN_FAST_WITH_CUDA
inline void cuda_ok(cudaError_t err, const char* op, const char* where) {
  TORCH_CHECK(err == cudaSuccess, op, " CUDA kernel failed in ", where, ": ",
              cudaGetErrorString(err));
}
#endif

}  // namespace sgan_fast
