// Grouped spectral normalisation: op registration, the C++ CPU kernels and the host side
// of the CUDA kernels. The specification is sgan_fast/ops/spectral_norm.py; the Python
// layer validates first, and these checks are the safety net for direct callers.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "host_common.h"
#include "spectral_norm.h"
#include "spectral_norm_cpu.h"

#ifdef SGAN_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace sgan_fast {
namespace {

using at::Tensor;
using at::TensorList;
constexpr const char* kOp = "spectral_norm";

// Where each layer's pieces live in the concatenated buffers.
struct Layout {
  std::vector<int64_t> rows, cols, u_off, v_off, w_off;
  int64_t sum_r = 0, sum_c = 0, numel = 0;
};

Layout check_weights(TensorList ws) {
  TORCH_CHECK(!ws.empty(), "spectral_norm: no weights");
  Layout lay;
  const auto T = ws[0].scalar_type();
  for (size_t l = 0; l < ws.size(); ++l) {
    const Tensor& W = ws[l];
    TORCH_CHECK(W.scalar_type() == T && W.device() == ws[0].device(), "spectral_norm: weight ", l,
                " differs in dtype or device from weight 0");
    TORCH_CHECK(W.dim() >= 1 && W.numel() > 0 && W.size(0) > 0, "spectral_norm: weight ", l,
                " is empty");
    TORCH_CHECK(W.is_contiguous(), "spectral_norm: weight ", l, " must be contiguous");
    const int64_t R = W.size(0), C = W.numel() / R;
    lay.rows.push_back(R);
    lay.cols.push_back(C);
    lay.u_off.push_back(lay.sum_r);
    lay.v_off.push_back(lay.sum_c);
    lay.w_off.push_back(lay.numel);
    lay.sum_r += R;
    lay.sum_c += C;
    lay.numel += R * C;
  }
  return lay;
}

void check_vector(const Tensor& x, int64_t n, const Tensor& W0, const char* name) {
  TORCH_CHECK(x.numel() == n, "spectral_norm: ", name, " has ", x.numel(), " elements; expected ", n);
  TORCH_CHECK(x.scalar_type() == acc_type(W0.scalar_type()) && x.is_contiguous() &&
                  x.device() == W0.device(),
              "spectral_norm: ", name, " must be contiguous, in the accumulation dtype, on the "
              "weights' device");
}

// ---------------------------------------------------------------------------------------
// CPU kernels.
// ---------------------------------------------------------------------------------------

void power_iteration_cpu(TensorList ws, const Layout& lay, const Tensor& u, const Tensor& v,
                         int64_t iters, double eps, int64_t mode, Tensor& s, Tensor& u_out,
                         Tensor& v_out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[0].scalar_type(), "sn_power", [&] {
    using A = at::opmath_type<scalar_t>;
    at::parallel_for(0, static_cast<int64_t>(ws.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t l = b; l < e; ++l) {
        power_cpu<scalar_t, A>(ws[l].data_ptr<scalar_t>(), lay.rows[l], lay.cols[l],
                               u.data_ptr<A>() + lay.u_off[l],
                               mode == 0 ? nullptr : v.data_ptr<A>() + lay.v_off[l],
                               static_cast<int>(iters), static_cast<A>(eps),
                               static_cast<int>(mode), u_out.data_ptr<A>() + lay.u_off[l],
                               v_out.data_ptr<A>() + lay.v_off[l], s.data_ptr<A>() + l);
      }
    });
  });
}

void normalize_fwd_cpu(TensorList ws, const Layout& lay, const Tensor& s, Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[0].scalar_type(), "sn_fwd", [&] {
    using A = at::opmath_type<scalar_t>;
    at::parallel_for(0, static_cast<int64_t>(ws.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t l = b; l < e; ++l) {
        const scalar_t* W = ws[l].data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>() + lay.w_off[l];
        const A sl = s.data_ptr<A>()[l];
        for (int64_t i = 0; i < lay.rows[l] * lay.cols[l]; ++i)
          o[i] = static_cast<scalar_t>(static_cast<A>(W[i]) / sl);
      }
    });
  });
}

void normalize_bwd_cpu(const Tensor& grad, TensorList ws, const Layout& lay, const Tensor& u,
                       const Tensor& v, const Tensor& s, Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[0].scalar_type(), "sn_bwd", [&] {
    using A = at::opmath_type<scalar_t>;
    at::parallel_for(0, static_cast<int64_t>(ws.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t l = b; l < e; ++l) {
        const int64_t R = lay.rows[l], C = lay.cols[l];
        const scalar_t* W = ws[l].data_ptr<scalar_t>();
        const scalar_t* G = grad.data_ptr<scalar_t>() + lay.w_off[l];
        const A* ul = u.data_ptr<A>() + lay.u_off[l];
        const A* vl = v.data_ptr<A>() + lay.v_off[l];
        scalar_t* o = out.data_ptr<scalar_t>() + lay.w_off[l];
        A dot = 0;
        for (int64_t i = 0; i < R * C; ++i) dot += static_cast<A>(W[i]) * static_cast<A>(G[i]);
        const A sl = s.data_ptr<A>()[l], coef = dot / (sl * sl);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < C; ++c)
            o[r * C + c] = static_cast<scalar_t>(static_cast<A>(G[r * C + c]) / sl -
                                                 coef * (ul[r] * vl[c]));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------
// CUDA host side: the layer table, in launches of at most kSnMaxLayers layers.
// ---------------------------------------------------------------------------------------
#ifdef SGAN_FAST_WITH_CUDA

template <typename F>
void for_each_launch(TensorList ws, const Layout& lay, F launch) {
  for (size_t first = 0; first < ws.size(); first += kSnMaxLayers) {
    SnLayers L{};
    L.first_layer = static_cast<int64_t>(first);
    L.n = static_cast<int>(std::min<size_t>(kSnMaxLayers, ws.size() - first));
    for (int i = 0; i < L.n; ++i) {
      const size_t l = first + i;
      L.w[i] = ws[l].data_ptr();
      L.rows[i] = lay.rows[l];
      L.cols[i] = lay.cols[l];
      L.u_off[i] = lay.u_off[l];
      L.v_off[i] = lay.v_off[l];
      L.w_off[i] = lay.w_off[l];
    }
    launch(L);
  }
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

#endif  // SGAN_FAST_WITH_CUDA

// ---------------------------------------------------------------------------------------
// Entry points (one per op, for CPU and CUDA tensors).
// ---------------------------------------------------------------------------------------

std::tuple<Tensor, Tensor, Tensor> power_iteration(TensorList ws, const Tensor& u, const Tensor& v,
                                                   int64_t num_iters, double eps, int64_t mode) {
  const Layout lay = check_weights(ws);
  TORCH_CHECK(mode >= 0 && mode <= 2, "spectral_norm: mode must be 0, 1 or 2, got ", mode);
  TORCH_CHECK(num_iters >= 1, "spectral_norm: num_iters must be >= 1");
  TORCH_CHECK(eps > 0, "spectral_norm: eps must be positive");
  check_vector(u, lay.sum_r, ws[0], "u");
  if (mode != 0) check_vector(v, lay.sum_c, ws[0], "v");
  auto opts = u.options();
  Tensor s = at::empty({static_cast<int64_t>(ws.size())}, opts);
  Tensor u_out = at::empty({lay.sum_r}, opts), v_out = at::empty({lay.sum_c}, opts);
  if (ws[0].is_cpu()) {
    power_iteration_cpu(ws, lay, u, v, num_iters, eps, mode, s, u_out, v_out);
    return {s, u_out, v_out};
  }
#ifdef SGAN_FAST_WITH_CUDA
  TORCH_CHECK(ws[0].is_cuda(), "spectral_norm: weights must be CPU or CUDA tensors");
  c10::cuda::CUDAGuard guard(ws[0].device());
  if (mode == 2) {
    u_out.copy_(u);
    v_out.copy_(v);
  }
  Tensor u_raw = at::empty({lay.sum_r}, opts), v_raw = at::empty({lay.sum_c}, opts);
  const auto dt = dtype_code(ws[0].scalar_type(), kOp);
  for_each_launch(ws, lay, [&](const SnLayers& L) {
    cuda_ok(sn_power_iteration_cuda(dt, L, u.data_ptr(), mode == 0 ? nullptr : v.data_ptr(),
                                    static_cast<int>(num_iters), eps, static_cast<int>(mode),
                                    u_raw.data_ptr(), v_raw.data_ptr(), u_out.data_ptr(),
                                    v_out.data_ptr(), s.data_ptr(), stream()),
            kOp, "power iteration");
  });
  return {s, u_out, v_out};
#else
  require_cuda_build(kOp);
#endif
}

Tensor normalize_fwd(TensorList ws, const Tensor& u, const Tensor& v, const Tensor& s) {
  const Layout lay = check_weights(ws);
  check_vector(u, lay.sum_r, ws[0], "u");
  check_vector(v, lay.sum_c, ws[0], "v");
  check_vector(s, static_cast<int64_t>(ws.size()), ws[0], "s");
  Tensor out = at::empty({lay.numel}, ws[0].options());
  if (ws[0].is_cpu()) {
    normalize_fwd_cpu(ws, lay, s, out);
    return out;
  }
#ifdef SGAN_FAST_WITH_CUDA
  c10::cuda::CUDAGuard guard(ws[0].device());
  const auto dt = dtype_code(ws[0].scalar_type(), kOp);
  for_each_launch(ws, lay, [&](const SnLayers& L) {
    cuda_ok(sn_normalize_fwd_cuda(dt, L, s.data_ptr(), out.data_ptr(), stream()), kOp,
            "normalize forward");
  });
  return out;
#else
  require_cuda_build(kOp);
#endif
}

Tensor normalize_bwd(const Tensor& grad, TensorList ws, const Tensor& u, const Tensor& v,
                     const Tensor& s) {
  const Layout lay = check_weights(ws);
  check_vector(u, lay.sum_r, ws[0], "u");
  check_vector(v, lay.sum_c, ws[0], "v");
  check_vector(s, static_cast<int64_t>(ws.size()), ws[0], "s");
  TORCH_CHECK(grad.numel() == lay.numel && grad.is_contiguous() &&
                  grad.scalar_type() == ws[0].scalar_type() && grad.device() == ws[0].device(),
              "spectral_norm: grad must be contiguous with ", lay.numel,
              " elements, the weights' dtype and device");
  Tensor out = at::empty({lay.numel}, ws[0].options());
  if (ws[0].is_cpu()) {
    normalize_bwd_cpu(grad, ws, lay, u, v, s, out);
    return out;
  }
#ifdef SGAN_FAST_WITH_CUDA
  c10::cuda::CUDAGuard guard(ws[0].device());
  const auto dt = dtype_code(ws[0].scalar_type(), kOp);
  for_each_launch(ws, lay, [&](const SnLayers& L) {
    Tensor partial = at::empty({sn_normalize_chunks(L)}, u.options());
    cuda_ok(sn_normalize_bwd_cuda(dt, L, grad.data_ptr(), u.data_ptr(), v.data_ptr(),
                                  s.data_ptr(), partial.data_ptr(), out.data_ptr(), stream()),
            kOp, "normalize backward");
  });
  return out;
#else
  require_cuda_build(kOp);
#endif
}

}  // namespace
}  // namespace sgan_fast

TORCH_LIBRARY_FRAGMENT(sgan_fast, m) {
  m.def("spectral_norm_power_iteration(Tensor[] weights, Tensor u, Tensor v, int num_iters, "
        "float eps, int mode) -> (Tensor, Tensor, Tensor)");
  m.def("spectral_norm_normalize_fwd(Tensor[] weights, Tensor u, Tensor v, Tensor s) -> Tensor");
  m.def("spectral_norm_normalize_bwd(Tensor grad, Tensor[] weights, Tensor u, Tensor v, "
        "Tensor s) -> Tensor");
}

TORCH_LIBRARY_IMPL(sgan_fast, CPU, m) {
  m.impl("spectral_norm_power_iteration", &sgan_fast::power_iteration);
  m.impl("spectral_norm_normalize_fwd", &sgan_fast::normalize_fwd);
  m.impl("spectral_norm_normalize_bwd", &sgan_fast::normalize_bwd);
}

#ifdef SGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(sgan_fast, CUDA, m) {
  m.impl("spectral_norm_power_iteration", &sgan_fast::power_iteration);
  m.impl("spectral_norm_normalize_fwd", &sgan_fast::normalize_fwd);
  m.impl("spectral_norm_normalize_bwd", &sgan_fast::normalize_bwd);
}
#endif
