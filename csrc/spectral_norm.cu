// CUDA kernels of grouped spectral normalisation. Every launch covers all layers of a
// SnLayers table; block b finds its (layer, tile) from per-layer tile counts. No atomics:
// results are deterministic.
#include "spectral_norm.h"

#include "device_common.cuh"

namespace sgan_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kColTile = 64;         // columns per block of the column pass (4 row groups)
constexpr int kRowTile = 16;         // rows per block of the row pass (2 per warp)
constexpr int64_t kChunk = 16384;    // elements per block of the elementwise kernels

// Tile counts per layer, prefix-summed: begin[l] .. begin[l + 1] are layer l's blocks.
struct TileMap {
  int begin[kSnMaxLayers + 1];
};

template <typename F>
TileMap make_map(const SnLayers& L, F tiles_of) {
  TileMap m;
  m.begin[0] = 0;
  for (int l = 0; l < L.n; ++l) m.begin[l + 1] = m.begin[l] + static_cast<int>(tiles_of(l));
  return m;
}

__device__ __forceinline__ int find_layer(const TileMap& m, int n, int b) {
  int l = 0;
  while (l + 1 < n && b >= m.begin[l + 1]) ++l;
  return l;
}

template <typename A>
__device__ A block_sumsq(const A* x, int64_t n, A* sh) {
  A ss = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
  return block_sum(ss, sh);
}

template <typename A>
__device__ __forceinline__ A scale_of(A sumsq, A eps) {
  const A nrm = sqrt(sumsq);
  return nrm > eps ? nrm : eps;
}

// y[c] = sum_r x[r] W[r, c], divided by max(|x|, eps) when normalize_x.
template <typename T, typename A>
__global__ void col_pass_kernel(SnLayers L, TileMap map, const A* __restrict__ x, A* __restrict__ y,
                                A eps, bool normalize_x) {
  __shared__ A sh[33];
  __shared__ A part[kThreads];
  const int l = find_layer(map, L.n, blockIdx.x);
  const int64_t R = L.rows[l], C = L.cols[l];
  const T* W = static_cast<const T*>(L.w[l]);
  const A* xl = x + L.u_off[l];
  const int tx = threadIdx.x % kColTile, ty = threadIdx.x / kColTile;
  const int64_t c = static_cast<int64_t>(blockIdx.x - map.begin[l]) * kColTile + tx;
  A acc = 0;
  if (c < C) {
    for (int64_t r = ty; r < R; r += kThreads / kColTile) acc += xl[r] * to_acc(W[r * C + c]);
  }
  part[threadIdx.x] = acc;
  A scale = 1;
  if (normalize_x) scale = scale_of(block_sumsq(xl, R, sh), eps);  // syncs the block
  else __syncthreads();
  if (ty == 0 && c < C) {
    A sum = 0;
    for (int k = 0; k < kThreads / kColTile; ++k) sum += part[k * kColTile + tx];
    y[L.v_off[l] + c] = sum / scale;
  }
}

// y[r] = sum_c W[r, c] x[c], divided by max(|x|, eps) when normalize_x. One warp per row.
template <typename T, typename A>
__global__ void row_pass_kernel(SnLayers L, TileMap map, const A* __restrict__ x, A* __restrict__ y,
                                A eps, bool normalize_x) {
  __shared__ A sh[33];
  const int l = find_layer(map, L.n, blockIdx.x);
  const int64_t R = L.rows[l], C = L.cols[l];
  const T* W = static_cast<const T*>(L.w[l]);
  const A* xl = x + L.v_off[l];
  A scale = 1;
  if (normalize_x) scale = scale_of(block_sumsq(xl, C, sh), eps);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x - map.begin[l]) * kRowTile;
  for (int64_t r = r0 + warp; r < r0 + kRowTile && r < R; r += kThreads / 32) {
    A acc = 0;
    for (int64_t k = lane; k < C; k += 32) acc += to_acc(W[r * C + k]) * xl[k];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if (lane == 0) y[L.u_off[l] + r] = acc / scale;
  }
}

// One block per layer: see _finish in kernels/spectral_norm.py for the modes.
template <typename A>
__global__ void finish_kernel(SnLayers L, const A* __restrict__ u_in, const A* __restrict__ u_raw,
                              const A* __restrict__ v_raw, A* __restrict__ u_out,
                              A* __restrict__ v_out, A* __restrict__ s, A eps, int mode) {
  __shared__ A sh[33];
  const int l = blockIdx.x;
  const int64_t R = L.rows[l], C = L.cols[l], uo = L.u_off[l], vo = L.v_off[l];
  if (mode == 2) {
    A d = 0;
    for (int64_t i = threadIdx.x; i < R; i += blockDim.x) d += u_in[uo + i] * u_raw[uo + i];
    d = block_sum(d, sh);
    if (threadIdx.x == 0) s[L.first_layer + l] = d;
    return;
  }
  const A su = block_sumsq(u_raw + uo, R, sh);
  const A sv = block_sumsq(v_raw + vo, C, sh);
  const A du = scale_of(su, eps), dv = scale_of(sv, eps);
  for (int64_t i = threadIdx.x; i < R; i += blockDim.x) u_out[uo + i] = u_raw[uo + i] / du;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) v_out[vo + i] = v_raw[vo + i] / dv;
  if (threadIdx.x == 0) s[L.first_layer + l] = mode == 0 ? su / du : sv / dv;
}

template <typename T, typename A>
__global__ void normalize_fwd_kernel(SnLayers L, TileMap map, const A* __restrict__ s,
                                     T* __restrict__ out) {
  const int l = find_layer(map, L.n, blockIdx.x);
  const int64_t n = L.rows[l] * L.cols[l];
  const T* W = static_cast<const T*>(L.w[l]);
  const A sl = s[L.first_layer + l];
  const int64_t e0 = static_cast<int64_t>(blockIdx.x - map.begin[l]) * kChunk;
  const int64_t e1 = e0 + kChunk < n ? e0 + kChunk : n;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x)
    out[L.w_off[l] + e] = Out<T>::of(to_acc(W[e]) / sl);
}

template <typename T, typename A>
__global__ void normalize_bwd_dot_kernel(SnLayers L, TileMap map, const T* __restrict__ grad,
                                         A* __restrict__ partial) {
  __shared__ A sh[33];
  const int l = find_layer(map, L.n, blockIdx.x);
  const int64_t n = L.rows[l] * L.cols[l];
  const T* W = static_cast<const T*>(L.w[l]);
  const T* G = grad + L.w_off[l];
  const int64_t e0 = static_cast<int64_t>(blockIdx.x - map.begin[l]) * kChunk;
  const int64_t e1 = e0 + kChunk < n ? e0 + kChunk : n;
  A acc = 0;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) acc += to_acc(W[e]) * to_acc(G[e]);
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <typename T, typename A>
__global__ void normalize_bwd_kernel(SnLayers L, TileMap map, const T* __restrict__ grad,
                                     const A* __restrict__ partial, const A* __restrict__ u,
                                     const A* __restrict__ v, const A* __restrict__ s,
                                     T* __restrict__ out) {
  __shared__ A sh[33];
  const int l = find_layer(map, L.n, blockIdx.x);
  const int64_t C = L.cols[l], n = L.rows[l] * C;
  A dot = 0;
  for (int i = map.begin[l] + threadIdx.x; i < map.begin[l + 1]; i += blockDim.x) dot += partial[i];
  dot = block_sum(dot, sh);
  const A sl = s[L.first_layer + l];
  const A coef = dot / (sl * sl);
  const A* ul = u + L.u_off[l];
  const A* vl = v + L.v_off[l];
  const T* G = grad + L.w_off[l];
  T* O = out + L.w_off[l];
  const int64_t e0 = static_cast<int64_t>(blockIdx.x - map.begin[l]) * kChunk;
  const int64_t e1 = e0 + kChunk < n ? e0 + kChunk : n;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
    const int64_t r = e / C, c = e - r * C;
    O[e] = Out<T>::of(to_acc(G[e]) / sl - coef * (ul[r] * vl[c]));
  }
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, typename A>
cudaError_t power_impl(const SnLayers& L, const void* u_in, const void* v_in, int num_iters,
                       double eps_d, int mode, void* u_raw, void* v_raw, void* u_out, void* v_out,
                       void* s, cudaStream_t st) {
  const A eps = static_cast<A>(eps_d);
  const TileMap rows = make_map(L, [&](int l) { return cdiv(L.rows[l], kRowTile); });
  const TileMap cols = make_map(L, [&](int l) { return cdiv(L.cols[l], kColTile); });
  auto* ur = static_cast<A*>(u_raw);
  auto* vr = static_cast<A*>(v_raw);
  auto* uo = static_cast<A*>(u_out);
  auto* vo = static_cast<A*>(v_out);
  const auto* ui = static_cast<const A*>(u_in);
  const auto* vi = static_cast<const A*>(v_in);
  if (mode == 2) {
    row_pass_kernel<T, A><<<rows.begin[L.n], kThreads, 0, st>>>(L, rows, vi, ur, eps, false);
    finish_kernel<A><<<L.n, kThreads, 0, st>>>(L, ui, ur, vr, uo, vo, static_cast<A*>(s), eps, 2);
    return cudaGetLastError();
  }
  const A* cu = ui;
  const A* cv = vi;
  for (int it = 0; it < num_iters; ++it) {
    if (mode == 0) {
      col_pass_kernel<T, A><<<cols.begin[L.n], kThreads, 0, st>>>(L, cols, cu, vr, eps, false);
      row_pass_kernel<T, A><<<rows.begin[L.n], kThreads, 0, st>>>(L, rows, vr, ur, eps, true);
    } else {
      row_pass_kernel<T, A><<<rows.begin[L.n], kThreads, 0, st>>>(L, rows, cv, ur, eps, false);
      col_pass_kernel<T, A><<<cols.begin[L.n], kThreads, 0, st>>>(L, cols, ur, vr, eps, true);
    }
    finish_kernel<A><<<L.n, kThreads, 0, st>>>(L, ui, ur, vr, uo, vo, static_cast<A*>(s), eps,
                                               mode);
    cu = uo;
    cv = vo;
  }
  return cudaGetLastError();
}

TileMap chunk_map(const SnLayers& L) {
  return make_map(L, [&](int l) { return cdiv(L.rows[l] * L.cols[l], kChunk); });
}

template <typename T, typename A>
cudaError_t normalize_fwd_impl(const SnLayers& L, const void* s, void* out, cudaStream_t st) {
  const TileMap map = chunk_map(L);
  normalize_fwd_kernel<T, A><<<map.begin[L.n], kThreads, 0, st>>>(
      L, map, static_cast<const A*>(s), static_cast<T*>(out));
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t normalize_bwd_impl(const SnLayers& L, const void* grad, const void* u, const void* v,
                               const void* s, void* partial, void* out, cudaStream_t st) {
  const TileMap map = chunk_map(L);
  const int blocks = map.begin[L.n];
  normalize_bwd_dot_kernel<T, A><<<blocks, kThreads, 0, st>>>(
      L, map, static_cast<const T*>(grad), static_cast<A*>(partial));
  normalize_bwd_kernel<T, A><<<blocks, kThreads, 0, st>>>(
      L, map, static_cast<const T*>(grad), static_cast<const A*>(partial),
      static_cast<const A*>(u), static_cast<const A*>(v), static_cast<const A*>(s),
      static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t sn_power_iteration_cuda(DType dt, const SnLayers& layers, const void* u_in,
                                    const void* v_in, int num_iters, double eps, int mode,
                                    void* u_raw, void* v_raw, void* u_out, void* v_out, void* s,
                                    cudaStream_t stream) {
  SGAN_DISPATCH(dt, power_impl, layers, u_in, v_in, num_iters, eps, mode, u_raw, v_raw, u_out,
                v_out, s, stream)
}

cudaError_t sn_normalize_fwd_cuda(DType dt, const SnLayers& layers, const void* s, void* out,
                                  cudaStream_t stream) {
  SGAN_DISPATCH(dt, normalize_fwd_impl, layers, s, out, stream)
}

cudaError_t sn_normalize_bwd_cuda(DType dt, const SnLayers& layers, const void* grad,
                                  const void* u, const void* v, const void* s, void* partial,
                                  void* out, cudaStream_t stream) {
  SGAN_DISPATCH(dt, normalize_bwd_impl, layers, grad, u, v, s, partial, out, stream)
}

int64_t sn_normalize_chunks(const SnLayers& layers) { return chunk_map(layers).begin[layers.n]; }

}  // namespace sgan_fast
