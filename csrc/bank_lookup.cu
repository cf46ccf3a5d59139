// CUDA kernels of bank_lookup: one block per batch row; every index clamped (label_source.h).
#include "bank_lookup.h"

#include "device_common.cuh"

namespace sgan_fast {
namespace {

constexpr int kThreads = 256;

// Each thread owns classes c = tid, tid + blockDim, ...: q[b, c] summed in the order of the
// reference (table entries in k order, then the label, then the uniform term).
template <typename T, typename A>
__global__ void dense_kernel(const T* __restrict__ P, const void* __restrict__ idx,
                             const T* __restrict__ val, int64_t K, bool topk_source,
                             const LabelSource src, int64_t C, T* __restrict__ out) {
  const int64_t b = blockIdx.x;
  const int64_t r = src.row(b), y = src.label(b, C);
  const A alpha = static_cast<A>(src.alpha), beta = static_cast<A>(src.beta);
  const A uniform = static_cast<A>(src.gamma) / static_cast<A>(C);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    A q = 0;
    if (topk_source) {
      for (int64_t k = 0; k < K; ++k)
        if (topk_index(idx, src.idx32, r, K, k, C) == c) q += alpha * to_acc(val[r * K + k]);
    } else if (P != nullptr) {
      q += alpha * to_acc(P[r * C + c]);
    }
    if (c == y) q += beta;
    out[b * C + c] = Out<T>::of(q + uniform);
  }
}

template <typename T, typename A>
__global__ void sparse_kernel(const void* __restrict__ idx, const T* __restrict__ val, int64_t K,
                              const LabelSource src, int64_t B, int64_t C,
                              int64_t* __restrict__ out_idx, T* __restrict__ out_val) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t r = src.row(b), y = src.label(b, C);
  const bool label = src.has_label_entry();
  const int64_t Kout = K + (label ? 1 : 0);
  const A alpha = static_cast<A>(src.alpha), beta = static_cast<A>(src.beta);
  bool merged = false;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t c = topk_index(idx, src.idx32, r, K, k, C);
    A v = alpha * to_acc(val[r * K + k]);
    if (label && !merged && c == y) {
      v += beta;
      merged = true;
    }
    out_idx[b * Kout + k] = c;
    out_val[b * Kout + k] = Out<T>::of(v);
  }
  if (label) {
    out_idx[b * Kout + K] = y;
    out_val[b * Kout + K] = Out<T>::of(merged ? A(0) : beta);
  }
}

template <typename T, typename A>
cudaError_t dense_impl(const void* P, const void* idx, const void* val, int64_t K,
                       bool topk_source, const LabelSource& src, int64_t B, int64_t C, void* out,
                       cudaStream_t st) {
  dense_kernel<T, A><<<static_cast<unsigned>(B), kThreads, 0, st>>>(
      static_cast<const T*>(P), idx, static_cast<const T*>(val), K, topk_source, src, C,
      static_cast<T*>(out));
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t sparse_impl(const void* idx, const void* val, int64_t K, const LabelSource& src,
                        int64_t B, int64_t C, int64_t* out_idx, void* out_val, cudaStream_t st) {
  const unsigned grid = static_cast<unsigned>((B + kThreads - 1) / kThreads);
  sparse_kernel<T, A><<<grid, kThreads, 0, st>>>(idx, static_cast<const T*>(val), K, src, B, C,
                                                 out_idx, static_cast<T*>(out_val));
  return cudaGetLastError();
}

}  // namespace

cudaError_t bank_lookup_dense_cuda(DType dt, const void* P, const void* idx, const void* val,
                                   int64_t K, bool topk_source, const LabelSource& src,
                                   int64_t B, int64_t C, void* out, cudaStream_t stream) {
  SGAN_DISPATCH(dt, dense_impl, P, idx, val, K, topk_source, src, B, C, out, stream)
}

cudaError_t bank_lookup_sparse_cuda(DType dt, const void* idx, const void* val, int64_t K,
                                    const LabelSource& src, int64_t B, int64_t C,
                                    int64_t* out_idx, void* out_val, cudaStream_t stream) {
  SGAN_DISPATCH(dt, sparse_impl, idx, val, K, src, B, C, out_idx, out_val, stream)
}

}  // namespace sgan_fast
