// Grouped spectral normalisation, the public ops: per-layer checks, flattening, the in-place
// update of the layers' buffers and autograd in C++, so that a whole model's update costs one
// dispatcher call from Python (and one node per direction), whatever its number of layers.
//
//   spectral_norm_grouped(weights, us, vs, svs, transposed, num_iters, eps, mode, training,
//                         check) -> (normalised weights, s [L])
//
// and sn_power_iteration_update (spectral_norm_group.h), the power-iteration part, which the
// projection head's one-call op uses for its two layers off the CPU.
//
// mode is the kernels' (0: BigGAN's order, 1: torch's, 2: s from the stored vectors). In
// training mode the new u are written into `us`, the new v into `vs` when given, and s into
// the one-element `svs` when given (BigGAN's sv0). The checks raise what the Python
// validation raised (sgan_fast/ops/spectral_norm.py); the kernels are the backend ops of
// spectral_norm.cpp, called below autograd through the dispatcher.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cstring>
#include <tuple>
#include <vector>

#include "host_common.h"
#include "messages.h"
#include "spectral_norm_group.h"

namespace sgan_fast {
namespace {

using at::Tensor;
using at::TensorList;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

auto& power_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sgan_fast::spectral_norm_power_iteration", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor>(TensorList, const Tensor&,
                                                                 const Tensor&, int64_t, double,
                                                                 int64_t)>();
  return op;
}
auto& normalize_fwd_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sgan_fast::spectral_norm_normalize_fwd", "")
                       .typed<Tensor(TensorList, const Tensor&, const Tensor&, const Tensor&)>();
  return op;
}
auto& normalize_bwd_op() {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sgan_fast::spectral_norm_normalize_bwd", "")
          .typed<Tensor(const Tensor&, TensorList, const Tensor&, const Tensor&, const Tensor&)>();
  return op;
}

// The group as the kernels see it: one contiguous matrix per layer (W, or W with dims 0 and 1
// swapped), its rows and columns.
struct Group {
  std::vector<Tensor> mats;
  std::vector<int64_t> rows, cols;
  int64_t sum_r = 0, sum_c = 0;
};

bool is_transposed(at::IntArrayRef transposed, size_t l) {
  return !transposed.empty() && transposed[l] != 0;
}

void check_vectors(const char* name, TensorList xs, const std::vector<int64_t>& sizes,
                   TensorList ws) {
  for (size_t l = 0; l < xs.size(); ++l) {
    const Tensor& x = xs[l];
    TORCH_CHECK_TYPE(x.is_floating_point(), name, " of layer ", l, " must be a floating tensor");
    TORCH_CHECK_VALUE(x.numel() == sizes[l], name, " of layer ", l, " has ", x.numel(),
                      " elements; weight ", l, " ", shape_str(ws[l].sizes()), " needs ",
                      sizes[l]);
    TORCH_CHECK_VALUE(x.device() == ws[0].device(), name, " of layer ", l, " is on ",
                      x.device().str(), " but the weights are on ", ws[0].device().str());
  }
}

// The messages of sgan_fast/ops/spectral_norm.py's _validate (the per-layer part).
Group check_group(TensorList ws, TensorList us, TensorList vs, TensorList svs,
                  at::IntArrayRef transposed, bool need_v) {
  const size_t L = ws.size();
  TORCH_CHECK_VALUE(L > 0, "weights is empty: pass at least one weight");
  TORCH_CHECK_VALUE(us.size() == L, "got ", L, " weights but ", us.size(), " u vectors");
  TORCH_CHECK_VALUE(!need_v || vs.size() == L, "this mode keeps v: pass ", L, " v vectors, got ",
                    vs.size());
  TORCH_CHECK_VALUE(vs.empty() || vs.size() == L, "got ", L, " weights but ", vs.size(),
                    " v vectors");
  TORCH_CHECK_VALUE(svs.empty() || svs.size() == L, "got ", L, " weights but ", svs.size(),
                    " singular-value buffers");
  TORCH_CHECK_VALUE(transposed.empty() || transposed.size() == L, "got ", L, " weights but ",
                    transposed.size(), " transposed flags");
  const Tensor& W0 = ws[0];
  Group g;
  g.rows.reserve(L);
  g.cols.reserve(L);
  for (size_t l = 0; l < L; ++l) {
    const Tensor& W = ws[l];
    TORCH_CHECK_TYPE(is_float_dtype(W.scalar_type()), "weight ", l,
                     " must be a float16, bfloat16, float32 or float64 tensor");
    TORCH_CHECK_VALUE(W.device() == W0.device() && W.scalar_type() == W0.scalar_type(), "weight ",
                      l, " is torch.", dtype_name(W.scalar_type()), " on ", W.device().str(),
                      " but weight 0 is torch.", dtype_name(W0.scalar_type()), " on ",
                      W0.device().str(), ": one group holds one device and one dtype");
    TORCH_CHECK_VALUE(W.dim() >= 2, "weight ", l, " has shape ", shape_str(W.sizes()),
                      "; spectral norm needs at least 2 dimensions");
    const int64_t R = is_transposed(transposed, l) ? W.size(1) : W.size(0);
    TORCH_CHECK_VALUE(R > 0 && W.numel() > 0, "weight ", l, " has shape ", shape_str(W.sizes()),
                      ": it has zero rows or columns");
    g.rows.push_back(R);
    g.cols.push_back(W.numel() / R);
    g.sum_r += R;
    g.sum_c += W.numel() / R;
  }
  check_vectors("u", us, g.rows, ws);
  if (!vs.empty()) check_vectors("v", vs, g.cols, ws);
  return g;
}

// Contiguous matrices for the kernels (no autograd: called below it). Only ConvTranspose
// weights under torch's semantics and non-contiguous (channels_last) weights cost a copy.
void prepare_mats(TensorList ws, at::IntArrayRef transposed, Group& g) {
  g.mats.reserve(ws.size());
  for (size_t l = 0; l < ws.size(); ++l) {
    Tensor M = is_transposed(transposed, l) ? ws[l].transpose(0, 1) : ws[l];
    g.mats.push_back(M.is_contiguous() ? M : M.contiguous());
  }
}

// A CPU tensor whose elements can be copied as raw memory of dtype A.
bool plain_cpu(const Tensor& t, at::ScalarType A) {
  return t.is_cpu() && t.scalar_type() == A && t.is_contiguous();
}

// The vectors of every layer in one buffer of the accumulation dtype.
Tensor flatten(TensorList xs, at::ScalarType A, int64_t total) {
  bool plain = true;
  for (const Tensor& x : xs) plain = plain && plain_cpu(x, A);
  if (plain) {  // the usual CPU case, without a dispatcher call per layer
    Tensor out = at::empty({total}, xs[0].options());
    char* dst = static_cast<char*>(out.data_ptr());
    for (const Tensor& x : xs) {
      const size_t n = x.numel() * x.element_size();
      std::memcpy(dst, x.data_ptr(), n);
      dst += n;
    }
    return out;
  }
  std::vector<Tensor> flat;
  flat.reserve(xs.size());
  for (const Tensor& x : xs) {
    Tensor f = x.reshape({-1});
    flat.push_back(f.scalar_type() == A ? f : f.to(A));
  }
  return at::cat(flat);
}

void check_finite(TensorList ws, TensorList us, TensorList vs) {
  std::vector<Tensor> flags;
  for (TensorList group : {ws, us, vs})
    for (const Tensor& t : group) flags.push_back(t.isfinite().logical_not().any());
  const Tensor bad = at::stack(flags).cpu();
  const bool* b = bad.data_ptr<bool>();
  size_t k = 0;
  const std::pair<const char*, TensorList> groups[] = {{"weight", ws}, {"u", us}, {"v", vs}};
  for (const auto& [name, group] : groups)
    for (size_t l = 0; l < group.size(); ++l)
      TORCH_CHECK_VALUE(!b[k++], name, " of layer ", l,
                        " contains a non-finite value (NaN or Inf)");
}

void check_scales(const Tensor& s) {
  const Tensor sc = s.to(at::kCPU, at::kDouble);
  const double* p = sc.data_ptr<double>();
  for (int64_t l = 0; l < sc.numel(); ++l) {
    TORCH_CHECK_VALUE(std::isfinite(p[l]) && p[l] != 0, "the spectral norm of layer ", l,
                      " came out ", py_float(p[l]),
                      ": check its weight (all zeros?) and its u and v vectors");
  }
}

// Writes pieces of `flat` (split by sizes) into the buffers `dst`, converting dtypes.
void store(TensorList dst, const Tensor& flat, const std::vector<int64_t>& sizes) {
  bool plain = flat.is_cpu();
  for (const Tensor& d : dst) plain = plain && plain_cpu(d, flat.scalar_type());
  if (plain) {  // raw copies; the versions move on as an in-place op's would
    const char* src = static_cast<const char*>(flat.data_ptr());
    for (size_t l = 0; l < dst.size(); ++l) {
      const size_t n = sizes[l] * flat.element_size();
      std::memcpy(dst[l].data_ptr(), src, n);
      dst[l].unsafeGetTensorImpl()->bump_version();
      src += n;
    }
    return;
  }
  std::vector<Tensor> views;
  views.reserve(dst.size());
  for (const Tensor& d : dst) views.push_back(d.view({-1}));
  at::_foreach_copy_(views, flat.split_with_sizes(sizes));
}

struct PowerResult {
  Group g;
  Tensor s, u, v;
};

// Checks, power iteration, the in-place update of the buffers.
PowerResult power_iteration_group(TensorList ws, TensorList us, TensorList vs, TensorList svs,
                                  at::IntArrayRef transposed, int64_t num_iters, double eps,
                                  int64_t mode, bool training, bool check) {
  TORCH_CHECK_VALUE(mode >= 0 && mode <= 2, "spectral_norm: mode must be 0, 1 or 2, got ", mode);
  TORCH_CHECK_VALUE(num_iters >= 1, "num_iters must be a positive integer, got ", num_iters);
  TORCH_CHECK_VALUE(eps > 0, "eps must be positive, got ", py_float(eps));
  PowerResult r{check_group(ws, us, vs, svs, transposed, mode != 0)};
  if (check) check_finite(ws, us, vs);
  const auto A = acc_type(ws[0].scalar_type());
  {
    at::AutoDispatchBelowADInplaceOrView below;
    prepare_mats(ws, transposed, r.g);
    const Tensor u_in = flatten(us, A, r.g.sum_r);
    const Tensor v_in = mode != 0 ? flatten(vs, A, r.g.sum_c) : at::empty({0}, u_in.options());
    std::tie(r.s, r.u, r.v) =
        power_op().call(r.g.mats, u_in, v_in, training ? num_iters : 1, eps, mode);
  }
  if (check) check_scales(r.s);
  if (training) {
    at::NoGradGuard no_grad;  // through ADInplaceOrView: the buffers' versions move on
    store(us, r.u, r.g.rows);
    if (!vs.empty()) store(vs, r.v, r.g.cols);
    if (!svs.empty()) store(svs, r.s, std::vector<int64_t>(svs.size(), 1));
  }
  return r;
}

// Each layer's piece of a concatenated buffer as that layer's tensor: viewed in its matrix's
// shape, with dims 0 and 1 swapped back for a transposed layer.
variable_list layer_views(const Tensor& flat, const std::vector<Tensor>& mats,
                          at::IntArrayRef transposed) {
  variable_list out;
  out.reserve(mats.size());
  int64_t off = 0;
  for (size_t l = 0; l < mats.size(); ++l) {
    Tensor piece = flat.narrow(0, off, mats[l].numel()).view(mats[l].sizes());
    off += mats[l].numel();
    out.push_back(is_transposed(transposed, l) ? piece.transpose(0, 1) : piece);
  }
  return out;
}

// W_l / s_l for every layer; the gradient dL/dW = G / s - (<G, W> / s^2) u v^T.
struct SnNormalizeFn : public torch::autograd::Function<SnNormalizeFn> {
  static variable_list forward(AutogradContext* ctx, TensorList ws, const Tensor& u,
                               const Tensor& v, const Tensor& s,
                               const std::vector<Tensor>& mats,
                               const std::vector<int64_t>& transposed) {
    at::AutoDispatchBelowADInplaceOrView below;
    variable_list outs = layer_views(normalize_fwd_op().call(mats, u, v, s), mats, transposed);
    variable_list saved(mats.begin(), mats.end());
    saved.push_back(u);
    saved.push_back(v);
    saved.push_back(s);
    ctx->save_for_backward(saved);
    ctx->saved_data["transposed"] = c10::List<int64_t>(transposed);
    ctx->set_materialize_grads(false);  // unused outputs: zeros made here in backward, once
    return outs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    at::AutoDispatchBelowADInplaceOrView below;
    const auto saved = ctx->get_saved_variables();
    const size_t L = saved.size() - 3;
    const Tensor &u = saved[L], &v = saved[L + 1], &s = saved[L + 2];
    const std::vector<Tensor> mats(saved.begin(), saved.begin() + L);
    const auto transposed = ctx->saved_data["transposed"].toIntVector();
    std::vector<Tensor> flat;
    flat.reserve(L);
    for (size_t l = 0; l < L; ++l) {
      const Tensor& g = grads[l];
      if (!g.defined()) {
        flat.push_back(at::zeros({mats[l].numel()}, mats[l].options()));
      } else {
        Tensor gm = is_transposed(transposed, l) ? g.transpose(0, 1) : g;
        if (gm.scalar_type() != mats[l].scalar_type()) gm = gm.to(mats[l].scalar_type());
        flat.push_back(gm.reshape({-1}));
      }
    }
    variable_list out =
        layer_views(normalize_bwd_op().call(at::cat(flat), mats, u, v, s), mats, transposed);
    out.resize(L + 5);  // no gradient for u, v, s, mats, transposed
    return out;
  }
};

std::tuple<std::vector<Tensor>, Tensor> spectral_norm_grouped(
    TensorList ws, TensorList us, TensorList vs, TensorList svs, at::IntArrayRef transposed,
    int64_t num_iters, double eps, int64_t mode, bool training, bool check) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  PowerResult r =
      power_iteration_group(ws, us, vs, svs, transposed, num_iters, eps, mode, training, check);
  auto outs = SnNormalizeFn::apply(ws, r.u, r.v, r.s, r.g.mats, transposed.vec());
  return {outs, r.s};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> sn_power_iteration_update(
    TensorList ws, TensorList us, TensorList vs, TensorList svs, at::IntArrayRef transposed,
    int64_t num_iters, double eps, int64_t mode, bool training, bool check) {
  PowerResult r =
      power_iteration_group(ws, us, vs, svs, transposed, num_iters, eps, mode, training, check);
  return {r.s, r.u, r.v};
}

}  // namespace sgan_fast

TORCH_LIBRARY_FRAGMENT(sgan_fast, m) {
  m.def("spectral_norm_grouped(Tensor[] weights, Tensor(a!)[] us, Tensor(b!)[] vs, "
        "Tensor(c!)[] svs, int[] transposed, int num_iters, float eps, int mode, bool training, "
        "bool check) -> (Tensor[], Tensor)");
}

// Kernels above autograd (they record the normalisation's node themselves), and for the
// backend keys so that a call below autograd still runs.
TORCH_LIBRARY_IMPL(sgan_fast, Autograd, m) {
  m.impl("spectral_norm_grouped", &sgan_fast::spectral_norm_grouped);
}
TORCH_LIBRARY_IMPL(sgan_fast, CPU, m) {
  m.impl("spectral_norm_grouped", &sgan_fast::spectral_norm_grouped);
}
#ifdef SGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(sgan_fast, CUDA, m) {
  m.impl("spectral_norm_grouped", &sgan_fast::spectral_norm_grouped);
}
#endif
