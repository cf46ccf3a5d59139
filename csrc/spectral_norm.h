// Raw-pointer launchers of the CUDA kernels of grouped spectral normalisation (the
// specification is sgan_fast/ops/spectral_norm.py). Torch-free, like softlabel_proj.h.
#pragma once
#include <cstdint>

namespace sgan_fast {

// Layers per launch. The table travels by value as a kernel parameter (apex's
// multi_tensor_apply idea: no host-to-device copy, safe to capture in a CUDA graph);
// 48 layers keep it well under the 4 KB parameter limit. Bigger groups take one launch
// per 48 layers.
constexpr int kSnMaxLayers = 48;

// Layer l's matrix w[l] is [rows[l], cols[l]], row-major. Its u, v and normalised weight
// live at u_off[l], v_off[l], w_off[l] of the concatenated buffers; its s at s[first_layer + l].
struct SnLayers {
  const void* w[kSnMaxLayers];
  int64_t rows[kSnMaxLayers];
  int64_t cols[kSnMaxLayers];
  int64_t u_off[kSnMaxLayers];
  int64_t v_off[kSnMaxLayers];
  int64_t w_off[kSnMaxLayers];
  int64_t first_layer;
  int n;
};

}  // namespace sgan_fast

#ifdef SGAN_FAST_WITH_CUDA
#include <cuda_runtime.h>

#include "dtype.h"

namespace sgan_fast {

// mode: 0 BigGAN, 1 torch (training), 2 torch (eval: s = u^T W v, no iteration).
// u_in, v_in, u_raw, v_raw, u_out, v_out, s: accumulation dtype (double for f64, else float).
cudaError_t sn_power_iteration_cuda(DType dt, const SnLayers& layers, const void* u_in,
                                    const void* v_in, int num_iters, double eps, int mode,
                                    void* u_raw, void* v_raw, void* u_out, void* v_out, void* s,
                                    cudaStream_t stream);

// out[w_off[l] + e] = w[l][e] / s[l].
cudaError_t sn_normalize_fwd_cuda(DType dt, const SnLayers& layers, const void* s, void* out,
                                  cudaStream_t stream);

// out = G / s - (<G, W> / s^2) u v^T per layer; partial: one accumulator slot per chunk
// (sn_normalize_chunks(layers) of them).
cudaError_t sn_normalize_bwd_cuda(DType dt, const SnLayers& layers, const void* grad,
                                  const void* u, const void* v, const void* s, void* partial,
                                  void* out, cudaStream_t stream);

int64_t sn_normalize_chunks(const SnLayers& layers);

}  // namespace sgan_fast
#endif
