// CUDA kernels of softlabel_proj (docs/softlabel_proj_kernels.md). Raw pointers only:
// the dense matrix products run in cuBLAS from the .cpp side; these kernels do the
// reductions, the spectral-norm scales, the top-k gathers and scatters, and the epilogues.
// Accumulation type A: double for double data, float otherwise.
#include "softlabel_proj.h"

#include "device_common.cuh"

#include <algorithm>

namespace sgan_fast {
namespace {

constexpr int kThreads = 256;  // every kernel: a multiple of 32

// q[b, c] of a dense source (label_source.h); r = src.row(b), y = src.label(b, C).
template <typename T, typename A>
__device__ __forceinline__ A dense_q(const T* P, const LabelSource& src, int64_t r, int64_t y,
                                     int64_t c, int64_t C) {
  if (src.mode == 0) return to_acc(P[r * C + c]);
  A v = P != nullptr ? static_cast<A>(src.alpha) * to_acc(P[r * C + c]) : A(0);
  if (c == y) v += static_cast<A>(src.beta);
  return v + static_cast<A>(src.gamma) / static_cast<A>(C);
}

// Entry k of row b of a top-k source: k < K from the table, k == K the label entry.
template <typename T, typename A>
__device__ __forceinline__ void topk_entry(const void* idx, const T* val, const LabelSource& src,
                                           int64_t b, int64_t r, int64_t k, int64_t K, int64_t C,
                                           int64_t& c, A& v) {
  if (k == K) {
    c = src.label(b, C);
    v = static_cast<A>(src.beta);
    return;
  }
  c = topk_index(idx, src.idx32, r, K, k, C);
  v = to_acc(val[r * K + k]);
  if (src.mode != 0) v *= static_cast<A>(src.alpha);
}

// partial[blk] = sum over rows c of this block of u_E[c] * <E[c], v_E>.
template <typename T, typename A>
__global__ void sn_partial_kernel(const T* __restrict__ E, const A* __restrict__ uE,
                                  const A* __restrict__ vE, int64_t C, int64_t F,
                                  A* __restrict__ partial) {
  __shared__ A sh[33];
  A acc = 0;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const T* row = E + c * F;
    A d = 0;
    for (int64_t f = threadIdx.x; f < F; f += blockDim.x) d += to_acc(row[f]) * vE[f];
    acc += uE[c] * d;
  }
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block per row b: L_b, S_b, s_E (from the partials), s_w, out[b].
template <typename T, typename A>
__global__ void fwd_rows_kernel(const T* __restrict__ h, const T* __restrict__ E,
                                const T* __restrict__ w, const T* __restrict__ bias,
                                const A* __restrict__ uw, const A* __restrict__ vw,
                                const T* __restrict__ Tbc, bool dense, const T* __restrict__ P,
                                const void* __restrict__ idx, const T* __restrict__ val,
                                const LabelSource src, int64_t B, int64_t C, int64_t F, int64_t K,
                                const A* __restrict__ partial, int n_partial, T* __restrict__ out,
                                A* __restrict__ s, A* __restrict__ raw) {
  __shared__ A sh[33];
  const int64_t b = blockIdx.x;
  const T* hb = h + b * F;
  A sE = 0, sw = 0, L = 0, S = 0;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) sE += partial[i];
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
    const A wf = to_acc(w[f]);
    sw += wf * vw[f];
    L += to_acc(hb[f]) * wf;
  }
  const int64_t r = src.row(b), y = src.label(b, C);
  if (dense) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      S += dense_q<T, A>(P, src, r, y, c, C) * to_acc(Tbc[b * C + c]);
  } else {
    const int64_t n = K + (src.has_label_entry() ? 1 : 0);
    for (int64_t k = 0; k < n; ++k) {
      int64_t c;
      A vk;
      topk_entry<T, A>(idx, val, src, b, r, k, K, C, c, vk);
      const T* er = E + c * F;
      A d = 0;
      for (int64_t f = threadIdx.x; f < F; f += blockDim.x) d += to_acc(er[f]) * to_acc(hb[f]);
      S += vk * d;
    }
  }
  sE = block_sum(sE, sh);
  sw = block_sum(sw, sh) * uw[0];
  L = block_sum(L, sh);
  S = block_sum(S, sh);
  if (threadIdx.x == 0) {
    out[b] = Out<T>::of(L / sw + to_acc(bias[0]) + S / sE);
    raw[b] = L;
    raw[B + b] = S;
    if (b == 0) {
      s[0] = sE;
      s[1] = sw;
    }
  }
}

// dsE = -sum_b g_b S_b / s_E^2 and dsw = -sum_b g_b L_b / s_w^2, in every thread.
template <typename T, typename A>
__device__ void grad_scales(const T* g, const A* s, const A* raw, int64_t B, A* sh, A& dsE,
                            A& dsw) {
  A gS = 0, gL = 0;
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    const A gb = to_acc(g[b]);
    gL += gb * raw[b];
    gS += gb * raw[B + b];
  }
  gS = block_sum(gS, sh);
  gL = block_sum(gL, sh);
  dsE = -(gS / s[0]) / s[0];
  dsw = -(gL / s[1]) / s[1];
}

// Blocks [0, n_w): grad_w for 32 columns each (8 row groups), block 0 also grad_bias;
// blocks [n_w, grid): the rank-one term dsE u_E v_E^T of grad_E, grid-stride.
template <typename T, typename A, typename G>
__global__ void bwd_params_kernel(const T* __restrict__ g, const T* __restrict__ h,
                                  const A* __restrict__ uE, const A* __restrict__ vE,
                                  const A* __restrict__ uw, const A* __restrict__ vw,
                                  const A* __restrict__ s, const A* __restrict__ raw, int64_t B,
                                  int64_t C, int64_t F, int n_w, G* __restrict__ gE_init,
                                  T* __restrict__ grad_w, T* __restrict__ grad_bias) {
  __shared__ A sh[33];
  __shared__ A col[8][33];
  A dsE, dsw;
  grad_scales<T, A>(g, s, raw, B, sh, dsE, dsw);
  if (static_cast<int>(blockIdx.x) < n_w) {
    const int lane = threadIdx.x & 31, grp = threadIdx.x >> 5;  // 8 groups of 32
    const int64_t f = static_cast<int64_t>(blockIdx.x) * 32 + lane;
    A acc = 0;
    if (f < F)
      for (int64_t b = grp; b < B; b += 8) acc += to_acc(g[b]) * to_acc(h[b * F + f]);
    col[grp][lane] = acc;
    __syncthreads();
    if (grp == 0 && f < F) {
      A t = 0;
      for (int i = 0; i < 8; ++i) t += col[i][lane];
      // the two gradient parts rounded to T separately, as autograd through the reference does
      const A direct = to_acc(Out<T>::of(t / s[1]));
      const A through_s = to_acc(Out<T>::of(dsw * uw[0] * vw[f]));
      grad_w[f] = Out<T>::of(direct + through_s);
    }
    if (blockIdx.x == 0) {
      A gb = 0;
      for (int64_t b = threadIdx.x; b < B; b += blockDim.x) gb += to_acc(g[b]);
      gb = block_sum(gb, sh);
      if (threadIdx.x == 0) grad_bias[0] = Out<T>::of(gb);
    }
    return;
  }
  const int64_t n = C * F;
  const int64_t stride = static_cast<int64_t>(gridDim.x - n_w) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x - n_w) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t c = i / F, f = i - c * F;
    gE_init[i] = Out<G>::of(dsE * uE[c] * vE[f]);
  }
}

// Dense prep, one block per row: Pg = q g / s_E, grad_h = g w / s_w, grad_P = g Tbc / s_E.
template <typename T, typename A>
__global__ void bwd_dense_prep_kernel(const T* __restrict__ g, const T* __restrict__ P,
                                      const LabelSource src, const T* __restrict__ w,
                                      const A* __restrict__ s,
                                      const T* __restrict__ Tbc, int64_t C, int64_t F,
                                      T* __restrict__ Pg, T* __restrict__ grad_h,
                                      T* __restrict__ grad_P) {
  const int64_t b = blockIdx.x;
  const A gE = to_acc(g[b]) / s[0], gw = to_acc(g[b]) / s[1];
  const int64_t r = src.row(b), y = src.label(b, C);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    Pg[b * C + c] = Out<T>::of(dense_q<T, A>(P, src, r, y, c, C) * gE);
    if (Tbc != nullptr) grad_P[b * C + c] = Out<T>::of(gE * to_acc(Tbc[b * C + c]));
  }
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) grad_h[b * F + f] = Out<T>::of(gw * to_acc(w[f]));
}

// Top-k backward, one block per row: grad_h, and the label part of grad_E by atomics.
template <typename T, typename A>
__global__ void bwd_topk_rows_kernel(const T* __restrict__ g, const T* __restrict__ h,
                                     const void* __restrict__ idx, const T* __restrict__ val,
                                     const LabelSource src, const T* __restrict__ E,
                                     const T* __restrict__ w,
                                     const A* __restrict__ s, int64_t C, int64_t F, int64_t K,
                                     T* __restrict__ grad_h, A* __restrict__ ws) {
  const int64_t b = blockIdx.x;
  const A gE = to_acc(g[b]) / s[0], gw = to_acc(g[b]) / s[1];
  const int64_t r = src.row(b);
  const int64_t n = K + (src.has_label_entry() ? 1 : 0);
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
    const A hf = to_acc(h[b * F + f]);
    A e = 0;
    for (int64_t k = 0; k < n; ++k) {
      int64_t c;
      A vk;
      topk_entry<T, A>(idx, val, src, b, r, k, K, C, c, vk);
      e += vk * to_acc(E[c * F + f]);
      atomicAdd(ws + c * F + f, gE * vk * hf);
    }
    grad_h[b * F + f] = Out<T>::of(to_acc(Out<T>::of(gw * to_acc(w[f]))) + to_acc(Out<T>::of(gE * e)));
  }
}

template <typename T, typename A>
__global__ void cast_kernel(const A* __restrict__ ws, T* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = Out<T>::of(ws[i]);
}

int grid_for(int64_t n, int cap = 4096) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, cap)));
}

template <typename T, typename A>
cudaError_t fwd_impl(const void* h, const void* E, const void* w, const void* bias,
                     const void* uE, const void* vE, const void* uw, const void* vw,
                     const void* Tbc, bool dense, const void* P, const void* idx,
                     const void* val, const LabelSource& src, int64_t B, int64_t C, int64_t F,
                     int64_t K, void* partial, int n_partial,
                     void* out, void* s, void* raw, cudaStream_t st) {
  sn_partial_kernel<T, A><<<n_partial, kThreads, 0, st>>>(
      static_cast<const T*>(E), static_cast<const A*>(uE), static_cast<const A*>(vE), C, F,
      static_cast<A*>(partial));
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  fwd_rows_kernel<T, A><<<static_cast<unsigned>(B), kThreads, 0, st>>>(
      static_cast<const T*>(h), static_cast<const T*>(E), static_cast<const T*>(w),
      static_cast<const T*>(bias), static_cast<const A*>(uw), static_cast<const A*>(vw),
      static_cast<const T*>(Tbc), dense, static_cast<const T*>(P), idx,
      static_cast<const T*>(val), src, B, C, F, K, static_cast<const A*>(partial), n_partial,
      static_cast<T*>(out), static_cast<A*>(s), static_cast<A*>(raw));
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t params_impl(const void* g, const void* h, const void* uE, const void* vE,
                        const void* uw, const void* vw, const void* s, const void* raw, int64_t B,
                        int64_t C, int64_t F, void* gE_init, bool gE_init_acc, void* grad_w,
                        void* grad_bias, cudaStream_t st) {
  const int n_w = static_cast<int>((F + 31) / 32);
  const int n_e = grid_for(C * F, 1024);
  const dim3 grid(n_w + n_e);
  if (gE_init_acc) {
    bwd_params_kernel<T, A, A><<<grid, kThreads, 0, st>>>(
        static_cast<const T*>(g), static_cast<const T*>(h), static_cast<const A*>(uE),
        static_cast<const A*>(vE), static_cast<const A*>(uw), static_cast<const A*>(vw),
        static_cast<const A*>(s), static_cast<const A*>(raw), B, C, F, n_w,
        static_cast<A*>(gE_init), static_cast<T*>(grad_w), static_cast<T*>(grad_bias));
  } else {
    bwd_params_kernel<T, A, T><<<grid, kThreads, 0, st>>>(
        static_cast<const T*>(g), static_cast<const T*>(h), static_cast<const A*>(uE),
        static_cast<const A*>(vE), static_cast<const A*>(uw), static_cast<const A*>(vw),
        static_cast<const A*>(s), static_cast<const A*>(raw), B, C, F, n_w,
        static_cast<T*>(gE_init), static_cast<T*>(grad_w), static_cast<T*>(grad_bias));
  }
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t prep_impl(const void* g, const void* P, const LabelSource& src, const void* w,
                      const void* s, const void* Tbc,
                      int64_t B, int64_t C, int64_t F, void* Pg, void* grad_h, void* grad_P,
                      cudaStream_t st) {
  bwd_dense_prep_kernel<T, A><<<static_cast<unsigned>(B), kThreads, 0, st>>>(
      static_cast<const T*>(g), static_cast<const T*>(P), src, static_cast<const T*>(w),
      static_cast<const A*>(s), static_cast<const T*>(Tbc), C, F, static_cast<T*>(Pg),
      static_cast<T*>(grad_h), static_cast<T*>(grad_P));
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t topk_rows_impl(const void* g, const void* h, const void* idx, const void* val,
                           const LabelSource& src, const void* E, const void* w, const void* s, int64_t B, int64_t C,
                           int64_t F, int64_t K, void* grad_h, void* ws, cudaStream_t st) {
  bwd_topk_rows_kernel<T, A><<<static_cast<unsigned>(B), kThreads, 0, st>>>(
      static_cast<const T*>(g), static_cast<const T*>(h), idx, static_cast<const T*>(val), src,
      static_cast<const T*>(E), static_cast<const T*>(w), static_cast<const A*>(s), C, F, K,
      static_cast<T*>(grad_h), static_cast<A*>(ws));
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t cast_impl(const void* ws, void* out, int64_t n, cudaStream_t st) {
  cast_kernel<T, A><<<grid_for(n), kThreads, 0, st>>>(static_cast<const A*>(ws), static_cast<T*>(out), n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t softlabel_proj_fwd_cuda(DType dt, const void* h, const void* E, const void* w,
                                    const void* bias, const void* u_E, const void* v_E,
                                    const void* u_w, const void* v_w, const void* T_bc,
                                    bool dense, const void* P, const void* idx, const void* val,
                                    const LabelSource& src, int64_t B, int64_t C, int64_t F,
                                    int64_t K, void* partial, int n_partial, void* out, void* s,
                                    void* raw, cudaStream_t stream) {
  SGAN_DISPATCH(dt, fwd_impl, h, E, w, bias, u_E, v_E, u_w, v_w, T_bc, dense, P, idx, val, src,
                B, C, F, K,
                partial, n_partial, out, s, raw, stream)
}

cudaError_t softlabel_proj_bwd_params_cuda(DType dt, const void* g, const void* h,
                                           const void* u_E, const void* v_E, const void* u_w,
                                           const void* v_w, const void* s, const void* raw,
                                           int64_t B, int64_t C, int64_t F, void* gE_init,
                                           bool gE_init_acc, void* grad_w, void* grad_bias,
                                           cudaStream_t stream) {
  SGAN_DISPATCH(dt, params_impl, g, h, u_E, v_E, u_w, v_w, s, raw, B, C, F, gE_init, gE_init_acc,
                grad_w, grad_bias, stream)
}

cudaError_t softlabel_proj_bwd_dense_prep_cuda(DType dt, const void* g, const void* P,
                                               const LabelSource& src, const void* w,
                                               const void* s, const void* T_bc, int64_t B,
                                               int64_t C, int64_t F, void* Pg, void* grad_h,
                                               void* grad_P, cudaStream_t stream) {
  SGAN_DISPATCH(dt, prep_impl, g, P, src, w, s, T_bc, B, C, F, Pg, grad_h, grad_P, stream)
}

cudaError_t softlabel_proj_bwd_topk_rows_cuda(DType dt, const void* g, const void* h,
                                              const void* idx, const void* val,
                                              const LabelSource& src, const void* E,
                                              const void* w, const void* s, int64_t B, int64_t C,
                                              int64_t F, int64_t K, void* grad_h, void* ws,
                                              cudaStream_t stream) {
  SGAN_DISPATCH(dt, topk_rows_impl, g, h, idx, val, src, E, w, s, B, C, F, K, grad_h, ws, stream)
}

cudaError_t softlabel_proj_cast_cuda(DType dt, const void* ws, void* out, int64_t n,
                                     cudaStream_t stream) {
  SGAN_DISPATCH(dt, cast_impl, ws, out, n, stream)
}

}  // namespace sgan_fast
