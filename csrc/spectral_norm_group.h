// The grouped power iteration with the in-place update of the layers' buffers, for the
// public ops of other files (csrc/spectral_norm_autograd.cpp has the definition and the
// meaning of every argument).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace sgan_fast {

// (s [L], u [sum of rows], v [sum of columns]) in the accumulation dtype, after checks; in
// training mode us, vs (when given) and svs (when given) are updated in place.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sn_power_iteration_update(
    at::TensorList weights, at::TensorList us, at::TensorList vs, at::TensorList svs,
    at::IntArrayRef transposed, int64_t num_iters, double eps, int64_t mode, bool training,
    bool check);

}  // namespace sgan_fast
