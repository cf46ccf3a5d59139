// softlabel_proj, the public op: argument checks, casts and autograd in C++, so that an eager
// call from Python costs one dispatcher call forward and one node in the backward pass.
//
//   softlabel_proj(h, labels, values, E, w, bias, u_E, v_E, u_w, v_w, sel, cls, form, mode,
//                  alpha, beta, gamma, check) -> (out [B], s [2])
//
// form 0: dense labels P [B, C] (or a bank's dense table, modes 1 and 2)
// form 1: top-k labels, indices `labels` [B, K] and `values` (or a bank's top-k table)
// form 2: hard labels y [B] int64
// The checks raise what the Python validation raised (same messages, same exception types:
// TORCH_CHECK_TYPE -> TypeError, TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_INDEX ->
// IndexError). `check` adds the value checks that synchronise with the device. The kernels
// are the backend ops of softlabel_proj.cpp, called below autograd through the dispatcher
// (so CPU and CUDA tensors each reach their own kernels).
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cstring>
#include <string>
#include <tuple>

#include "host_common.h"
#include "messages.h"
#include "spectral_norm_cpu.h"
#include "spectral_norm_group.h"

namespace sgan_fast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

enum Form : int64_t { kDense = 0, kTopk = 1, kHard = 2 };

using Fwd3 = std::tuple<Tensor, Tensor, Tensor>;

// The backend ops, looked up once.
auto& fwd_dense_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sgan_fast::softlabel_proj_fwd_dense", "")
                       .typed<Fwd3(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, int64_t, double,
                                   double, double)>();
  return op;
}
auto& fwd_topk_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sgan_fast::softlabel_proj_fwd_topk", "")
                       .typed<Fwd3(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   int64_t, double, double)>();
  return op;
}
auto& bwd_dense_op() {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sgan_fast::softlabel_proj_bwd_dense", "")
          .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
              const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
              const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
              const Tensor&, bool, const Tensor&, const Tensor&, int64_t, double, double,
              double)>();
  return op;
}
auto& bwd_topk_op() {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sgan_fast::softlabel_proj_bwd_topk", "")
          .typed<std::tuple<Tensor, Tensor, Tensor, Tensor>(
              const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
              const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
              const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, double,
              double)>();
  return op;
}

// ---------------------------------------------------------------------------------------
// Argument checks (the messages of sgan_fast/ops/softlabel_proj.py's _validate).
// ---------------------------------------------------------------------------------------

void need_float(const char* name, const Tensor& t) {
  TORCH_CHECK_TYPE(is_float_dtype(t.scalar_type()), name, " has dtype ",
                   dtype_name(t.scalar_type()), "; expected float16, bfloat16, float32 or float64");
}

void need_shape(const char* name, const Tensor& t, at::IntArrayRef shape, const char* meaning) {
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " has shape ", shape_str(t.sizes()), "; expected ",
                    shape_str(shape), " (", meaning, ")");
}

void need_device(const char* name, const Tensor& t, const Tensor& h, const char* verb = "is") {
  TORCH_CHECK_VALUE(t.device() == h.device(), name, " ", verb, " on ", t.device().str(),
                    " but h is on ", h.device().str());
}

void check_args(const Tensor& h, const Tensor& lab, const Tensor& val, const Tensor& E,
                const Tensor& w, const std::optional<Tensor>& bias, const Tensor& u_E,
                const Tensor& v_E, const Tensor& u_w, const Tensor& v_w, int64_t form,
                int64_t mode, bool with_vectors = true) {
  need_float("h", h);
  TORCH_CHECK_VALUE(h.dim() == 2, "h has shape ", shape_str(h.sizes()),
                    "; expected [B, F] pooled features");
  const int64_t B = h.size(0), F = h.size(1);
  TORCH_CHECK_VALUE(B >= 1 && F >= 1, "h has shape ", shape_str(h.sizes()),
                    "; B and F must be at least 1");
  const std::pair<const char*, const Tensor*> named[] = {
      {"E", &E}, {"w", &w}, {"u_E", with_vectors ? &u_E : nullptr},
      {"v_E", with_vectors ? &v_E : nullptr}, {"u_w", with_vectors ? &u_w : nullptr},
      {"v_w", with_vectors ? &v_w : nullptr}, {"bias", bias.has_value() ? &*bias : nullptr}};
  for (const auto& [name, t] : named) {
    if (t == nullptr) continue;
    need_float(name, *t);
    need_device(name, *t, h);
  }
  TORCH_CHECK_VALUE(E.dim() == 2 && E.size(1) == F && E.size(0) >= 1, "E has shape ",
                    shape_str(E.sizes()), "; expected [C, F=", F, "] (F from h)");
  const int64_t C = E.size(0);
  // w [F], or [1, F] as an SNLinear(F, 1) stores it
  if (!(w.dim() == 2 && w.size(0) == 1 && w.size(1) == F))
    need_shape("w", w, {F}, "[F], the weight of the linear term");
  TORCH_CHECK_VALUE(!bias.has_value() || bias->numel() == 1, "bias has shape ",
                    shape_str(bias->sizes()), "; expected one element");
  if (with_vectors) {
    need_shape("u_E", u_E, {C}, "[C], left power-iteration vector of E [C, F]");
    need_shape("v_E", v_E, {F}, "[F], right power-iteration vector of E [C, F]");
    TORCH_CHECK_VALUE(u_w.numel() == 1, "u_w has shape ", shape_str(u_w.sizes()),
                      "; expected one element (w is a 1 x F matrix)");
    need_shape("v_w", v_w, {F}, "[F], right power-iteration vector of w");
  }
  if (mode != 0) return;  // a bank's tables: checked when the bank was built, and in C++ below
  if (form == kDense) {
    need_device("labels", lab, h);
    need_float("labels (dense class probabilities P)", lab);
    need_shape("labels (dense class probabilities P)", lab, {B, C}, "[B, C]");
  } else if (form == kHard) {
    need_device("labels", lab, h);
    TORCH_CHECK_TYPE(lab.scalar_type() == at::kLong, "labels has dtype ",
                     dtype_name(lab.scalar_type()),
                     ": pass float probabilities [B, C], int64 class indices [B] (use .long()), "
                     "or a tuple (indices, values)");
    need_shape("labels (hard class indices y)", lab, {B}, "[B]");
  } else {
    TORCH_CHECK_VALUE(form == kTopk, "softlabel_proj: form must be 0, 1 or 2, got ", form);
    TORCH_CHECK_TYPE(lab.scalar_type() == at::kLong, "top-k label indices have dtype ",
                     dtype_name(lab.scalar_type()), "; expected int64");
    need_float("top-k label values", val);
    TORCH_CHECK_VALUE(lab.dim() == 2 && lab.size(0) == B && lab.size(1) >= 1,
                      "top-k label indices have shape ", shape_str(lab.sizes()),
                      "; expected [B=", B, ", K] with K >= 1");
    need_shape("top-k label values", val, lab.sizes(), "the shape of the indices [B, K]");
    need_device("top-k label indices", lab, h, "are");
    need_device("top-k label values", val, h, "are");
  }
}

// The fused kernels give top-k label values no gradient: refuse values that want one.
void check_no_topk_value_grad(const Tensor& val, int64_t form, int64_t mode) {
  TORCH_CHECK_VALUE(mode != 0 || form != kTopk ||
                        !(val.requires_grad() && at::GradMode::is_enabled()),
                    "top-k label values do not get gradients from the fused kernels; detach "
                    "them, pass dense labels, or use impl='ref'");
}

// The value checks of check=True (one device sync): label range, finite labels and vectors.
void check_values(const Tensor& lab, const Tensor& val, int64_t form, int64_t C,
                  const Tensor& u_E, const Tensor& v_E, const Tensor& u_w, const Tensor& v_w,
                  bool with_vectors = true) {
  std::vector<Tensor> flags;
  const bool indexed = form == kTopk || form == kHard;
  const Tensor& probs = form == kDense ? lab : val;
  if (indexed) flags.push_back(((lab < 0) | (lab >= C)).any());
  if (form != kHard) flags.push_back(probs.isfinite().logical_not().any());
  const std::pair<const char*, const Tensor*> vectors[] = {
      {"u_E", &u_E}, {"v_E", &v_E}, {"u_w", &u_w}, {"v_w", &v_w}};
  if (with_vectors)
    for (const auto& [name, v] : vectors) flags.push_back(v->isfinite().logical_not().any());
  const Tensor bad = at::stack(flags).cpu();
  const bool* b = bad.data_ptr<bool>();
  size_t k = 0;
  if (indexed && b[k++]) {
    const Tensor m = (lab < 0) | (lab >= C);
    TORCH_CHECK_INDEX(false, form == kTopk ? "top-k label index" : "label y", " at ",
                      first_true(m), " is ", lab.masked_select(m).select(0, 0).item<int64_t>(),
                      ", outside [0, C=", C, ")");
  }
  if (form != kHard && b[k++]) {
    TORCH_CHECK_VALUE(false, form == kDense ? "labels (dense P)" : "top-k label values",
                      " contain a non-finite value at ", first_true(probs.isfinite().logical_not()));
  }
  for (const auto& [name, v] : vectors) {
    if (!with_vectors) break;
    TORCH_CHECK_VALUE(!b[k++], name, " contains a non-finite value at ",
                      first_true(v->isfinite().logical_not()));
  }
}

void check_scales(const Tensor& s) {
  const Tensor sc = s.to(at::kCPU, at::kDouble);
  const double sE = sc.data_ptr<double>()[0], sw = sc.data_ptr<double>()[1];
  TORCH_CHECK_VALUE(std::isfinite(sE) && std::isfinite(sw) && sE != 0 && sw != 0,
                    "spectral norms must be finite and non-zero, got s_E=", py_float(sE),
                    ", s_w=", py_float(sw), ": check E, w and their power-iteration vectors");
}

// ---------------------------------------------------------------------------------------
// Casts: the kernels take h's dtype T for E, w, bias and the labels, the accumulation dtype
// for the vectors, everything contiguous. Each is a no-op (no dispatcher call) when the
// tensor is already right.
// ---------------------------------------------------------------------------------------

Tensor as_type(const Tensor& t, at::ScalarType T) {
  Tensor r = t.scalar_type() == T ? t : t.to(T);
  return r.is_contiguous() ? r : r.contiguous();
}

Tensor as_vector(const Tensor& t, at::ScalarType A, int64_t n) {
  Tensor r = t.scalar_type() == A ? t : t.to(A);
  if (r.dim() != 1) r = r.reshape({n});
  return r.is_contiguous() ? r : r.contiguous();
}

// W^T as a contiguous tensor of dtype T (the [F, C] embedding weight as E [C, F], and E's
// gradient back). On the CPU (float32/float64, contiguous) a plain loop into a directly
// allocated tensor; elsewhere a transposed copy.
Tensor transposed_copy(const Tensor& W, at::ScalarType T) {
  if (!(W.is_cpu() && W.is_contiguous() && W.scalar_type() == T &&
        (T == at::kFloat || T == at::kDouble)))
    return as_type(W.t(), T);
  const int64_t F = W.size(0), C = W.size(1);  // W [F, C] -> out [C, F]
  Tensor out = at::detail::empty_cpu({C, F}, T, false);
  AT_DISPATCH_FLOATING_TYPES(T, "softlabel_proj_transpose", [&] {
    const scalar_t* src = W.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    for (int64_t f = 0; f < F; ++f)
      for (int64_t c = 0; c < C; ++c) dst[c * F + f] = src[f * C + c];
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Autograd: u and v are constants; top-k values and bank tables get no gradient.
// ---------------------------------------------------------------------------------------

// What the forward reads besides its differentiable inputs: the top-k values, the power-
// iteration vectors (constants), the label source and how E is stored. Passed to the autograd
// Function as one non-tensor argument, so that the node has edges for h, the labels, E, w and
// bias only (fewer edges to collect forward and to walk backward).
struct ProjConsts {
  Tensor val, u_E, v_E, u_w, v_w, sel, cls;
  int64_t form, mode;
  double alpha, beta, gamma;
  bool e_transposed;  // E is the [F, C] embedding of an SNLinear(C, F) as it is stored
};

struct SoftlabelProjFn : public torch::autograd::Function<SoftlabelProjFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& h, const Tensor& lab,
                               const Tensor& E, const Tensor& w,
                               const std::optional<Tensor>& bias, const ProjConsts& k,
                               Tensor* s_out) {
    at::AutoDispatchBelowADInplaceOrView below;
    const auto T = h.scalar_type(), A = acc_type(T);
    const Tensor Ec = k.e_transposed ? transposed_copy(E, T) : as_type(E, T);
    const int64_t B = h.size(0), C = Ec.size(0), F = Ec.size(1);
    const Tensor hc = h.is_contiguous() ? h : h.contiguous();
    const Tensor wc = as_type(w, T);  // [F] or [1, F]: the kernels read F elements either way
    Tensor bc = bias.has_value() ? as_type(*bias, T) : at::zeros({1}, h.options());
    if (bc.dim() != 1) bc = bc.reshape({1});
    const Tensor uE = as_vector(k.u_E, A, C), vE = as_vector(k.v_E, A, F);
    const Tensor uw = as_vector(k.u_w, A, 1), vw = as_vector(k.v_w, A, F);
    Tensor out, s, raw, L1, L2;
    if (k.form == kDense) {
      L1 = k.mode == 0 ? as_type(lab, T) : lab;
      std::tie(out, s, raw) = fwd_dense_op().call(hc, L1, Ec, wc, bc, uE, vE, uw, vw, k.sel,
                                                  k.cls, k.mode, k.alpha, k.beta, k.gamma);
    } else {
      if (k.form == kHard) {
        L1 = lab.reshape({B, 1}).contiguous();
        L2 = at::ones({B, 1}, h.options());
      } else {
        L1 = lab.is_contiguous() ? lab : lab.contiguous();
        L2 = k.mode == 0 ? as_type(k.val, T) : k.val;
      }
      std::tie(out, s, raw) = fwd_topk_op().call(hc, L1, L2, Ec, wc, bc, uE, vE, uw, vw, k.sel,
                                                 k.cls, k.mode, k.alpha, k.beta);
    }
    ctx->save_for_backward({hc, L1, L2, Ec, wc, uE, vE, uw, vw, s, raw, k.sel, k.cls});
    // The scalars in two entries (each saved_data entry is a string-keyed map insert).
    ctx->saved_data["ints"] = c10::List<int64_t>(
        {k.form, k.mode, bias.has_value() ? bias->dim() : -1, k.e_transposed ? 1 : 0});
    ctx->saved_data["floats"] = c10::List<double>({k.alpha, k.beta, k.gamma});
    ctx->set_materialize_grads(false);
    *s_out = s;  // s leaves by the side: one output keeps the node (and the engine's work) small
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    at::AutoDispatchBelowADInplaceOrView below;
    const auto saved = ctx->get_saved_variables();
    const Tensor &h = saved[0], &L1 = saved[1], &L2 = saved[2], &E = saved[3], &w = saved[4];
    const Tensor &uE = saved[5], &vE = saved[6], &uw = saved[7], &vw = saved[8];
    const Tensor &s = saved[9], &raw = saved[10], &sel = saved[11], &cls = saved[12];
    const auto ints = ctx->saved_data["ints"].toIntList();
    const auto floats = ctx->saved_data["floats"].toDoubleList();
    const int64_t form = ints[0], mode = ints[1], bias_dim = ints[2];
    const bool e_transposed = ints[3] != 0;
    const double alpha = floats[0], beta = floats[1], gamma = floats[2];
    const Tensor none;
    Tensor g = grads[0];
    if (!g.defined()) return variable_list(7);  // out was not used
    if (g.scalar_type() != h.scalar_type()) g = g.to(h.scalar_type());
    if (!g.is_contiguous()) g = g.contiguous();
    Tensor gh, gP, gE, gw, gb;
    if (form == kDense) {
      const bool need_P = mode == 0 && ctx->needs_input_grad(1);
      std::tie(gh, gP, gE, gw, gb) = bwd_dense_op().call(g, h, L1, E, w, uE, vE, uw, vw, s, raw,
                                                         need_P, sel, cls, mode, alpha, beta,
                                                         gamma);
      if (!need_P) gP = Tensor();
    } else {
      std::tie(gh, gE, gw, gb) = bwd_topk_op().call(g, h, L1, L2, E, w, uE, vE, uw, vw, s, raw,
                                                    sel, cls, mode, alpha, beta);
    }
    if (bias_dim < 0) {
      gb = Tensor();
    } else if (bias_dim != 1) {
      gb = gb.reshape(std::vector<int64_t>(bias_dim, 1));
    }
    // grad_w has w's shape already (the kernels allocate it like w). E stored [F, C]: its
    // gradient is written in that layout too, so that autograd can take it as it is.
    if (e_transposed) gE = transposed_copy(gE, gE.scalar_type());
    // One gradient per forward argument: h, labels, E, w, bias, the constants, s_out.
    return {gh, gP, gE, gw, gb, none, none};
  }
};

std::tuple<Tensor, Tensor> softlabel_proj(const Tensor& h, const Tensor& lab, const Tensor& val,
                                          const Tensor& E, const Tensor& w,
                                          const std::optional<Tensor>& bias, const Tensor& u_E,
                                          const Tensor& v_E, const Tensor& u_w,
                                          const Tensor& v_w, const Tensor& sel,
                                          const Tensor& cls, int64_t form, int64_t mode,
                                          double alpha, double beta, double gamma, bool check) {
  // The op computes in h's dtype with float32 sums whatever autocast says (as the Python
  // reference does): the matrix products inside the kernels must not be recast.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_args(h, lab, val, E, w, bias, u_E, v_E, u_w, v_w, form, mode);
  check_no_topk_value_grad(val, form, mode);
  if (check && mode == 0) check_values(lab, val, form, E.size(0), u_E, v_E, u_w, v_w);
  Tensor s;
  const ProjConsts k{val, u_E, v_E, u_w, v_w, sel, cls, form, mode, alpha, beta, gamma, false};
  auto res = SoftlabelProjFn::apply(h, lab, E, w, bias, k, &s);
  if (check) check_scales(s);
  return {res[0], s};
}

// The head's power iteration straight on the CPU buffers (the usual CPU case: contiguous
// float32/float64 weights, vectors in the accumulation dtype): the grouped op's layer table,
// flattening and dispatch cost more than the arithmetic at the head's sizes. Same results as
// sn_power_iteration_update (BigGAN's order, mode 0). False when it does not apply.
bool head_power_iteration_cpu(const Tensor& We, const Tensor& ue, const Tensor& se,
                              const Tensor& Wl, const Tensor& ul, const Tensor& sl,
                              int64_t num_itrs, double eps, bool training, Tensor& u_E,
                              Tensor& v_E, Tensor& u_w, Tensor& v_w) {
  const auto T = We.scalar_type(), A = acc_type(T);
  const int64_t F = We.size(0), C = We.size(1);
  auto buffer_ok = [&](const Tensor& b, int64_t n) {
    return b.is_cpu() && b.scalar_type() == A && b.is_contiguous() && b.numel() == n;
  };
  if (!(We.is_cpu() && Wl.is_cpu() && (T == at::kFloat || T == at::kDouble) &&
        Wl.scalar_type() == T && We.is_contiguous() && Wl.is_contiguous() && buffer_ok(ue, F) &&
        buffer_ok(ul, 1) && (!training || (buffer_ok(se, 1) && buffer_ok(sl, 1))) &&
        num_itrs >= 1 && eps > 0))
    return false;
  // The layers' new u and v (E's swapped: v_E is the embedding's u), allocated directly (no
  // dispatcher calls: this is the host path being saved).
  auto vec = [&](int64_t n) { return at::detail::empty_cpu({n}, A, false); };
  u_E = vec(C), v_E = vec(F), u_w = vec(1), v_w = vec(F);
  AT_DISPATCH_FLOATING_TYPES(T, "softlabel_proj_sn_power", [&] {
    using A_t = scalar_t;  // float32 and float64 accumulate in their own type
    A_t s_e = 0, s_l = 0;
    const int steps = training ? static_cast<int>(num_itrs) : 1;
    power_cpu<scalar_t, A_t>(We.data_ptr<scalar_t>(), F, C, ue.data_ptr<A_t>(), nullptr, steps,
                             static_cast<A_t>(eps), 0, v_E.data_ptr<A_t>(), u_E.data_ptr<A_t>(),
                             &s_e);
    power_cpu<scalar_t, A_t>(Wl.data_ptr<scalar_t>(), 1, F, ul.data_ptr<A_t>(), nullptr, steps,
                             static_cast<A_t>(eps), 0, u_w.data_ptr<A_t>(), v_w.data_ptr<A_t>(),
                             &s_l);
    if (training) {
      std::memcpy(ue.data_ptr<A_t>(), v_E.data_ptr<A_t>(), F * sizeof(A_t));
      std::memcpy(ul.data_ptr<A_t>(), u_w.data_ptr<A_t>(), sizeof(A_t));
      se.data_ptr<A_t>()[0] = s_e;
      sl.data_ptr<A_t>()[0] = s_l;
      for (const Tensor* b : {&ue, &ul, &se, &sl}) b->unsafeGetTensorImpl()->bump_version();
    }
  });
  return true;
}

// The projection head of BigGAN's discriminator in one call: the power iteration of both SN
// layers (BigGAN's semantics, one singular value), the update of their u0 and sv0 buffers in
// training mode, then the projection with the layers' weights as they are stored:
// embed_weight [F, C] (SNLinear(C, F, bias=False)), lin_weight [1, F], lin_bias [1].
Tensor softlabel_proj_sn(const Tensor& h, const Tensor& lab, const Tensor& val,
                         const Tensor& embed_weight, const Tensor& embed_u,
                         const Tensor& embed_sv, const Tensor& lin_weight,
                         const std::optional<Tensor>& lin_bias, const Tensor& lin_u,
                         const Tensor& lin_sv, const Tensor& sel, const Tensor& cls, int64_t form,
                         int64_t mode, double alpha, double beta, double gamma,
                         int64_t num_itrs, double eps, bool training, bool check) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  TORCH_CHECK_VALUE(embed_weight.dim() == 2 && lin_weight.dim() == 2 && lin_weight.size(0) == 1 &&
                        lin_weight.size(1) == embed_weight.size(0),
                    "softlabel_proj_sn: the embedding weight must be [F, C] and the linear "
                    "weight [1, F], got ", shape_str(embed_weight.sizes()), " and ",
                    shape_str(lin_weight.sizes()));
  const int64_t F = embed_weight.size(0), C = embed_weight.size(1);
  {  // everything but the vectors, before the buffers change
    at::AutoDispatchBelowADInplaceOrView below;
    check_args(h, lab, val, embed_weight.t(), lin_weight, lin_bias, lin_u, lin_u, lin_u, lin_u,
               form, mode, false);
  }
  check_no_topk_value_grad(val, form, mode);
  // The labels' value checks before the buffers change; the vectors come from the power
  // iteration (a non-finite weight shows as a non-finite s below).
  if (check && mode == 0) check_values(lab, val, form, C, lin_u, lin_u, lin_u, lin_u, false);
  // E = embed_weight^T: its left vector is the layer's right one and vice versa.
  Tensor u_E, v_E, u_w, v_w;
  if (!head_power_iteration_cpu(embed_weight, embed_u, embed_sv, lin_weight, lin_u, lin_sv,
                                num_itrs, eps, training, u_E, v_E, u_w, v_w)) {
    Tensor s, u, v;
    at::NoGradGuard no_grad;
    const Tensor ws[] = {embed_weight, lin_weight}, us[] = {embed_u, lin_u};
    const Tensor svs[] = {embed_sv, lin_sv};
    std::tie(s, u, v) = sn_power_iteration_update(ws, us, {}, training ? at::TensorList(svs)
                                                                      : at::TensorList(),
                                                  {}, num_itrs, eps, 0, training, false);
    v_E = u.narrow(0, 0, F), u_w = u.narrow(0, F, 1);
    u_E = v.narrow(0, 0, C), v_w = v.narrow(0, C, F);
  }
  Tensor s_proj;
  const ProjConsts k{val, u_E, v_E, u_w, v_w, sel, cls, form, mode, alpha, beta, gamma, true};
  auto res = SoftlabelProjFn::apply(h, lab, embed_weight, lin_weight, lin_bias, k, &s_proj);
  if (check) check_scales(s_proj);
  return res[0];
}

}  // namespace
}  // namespace sgan_fast

TORCH_LIBRARY_FRAGMENT(sgan_fast, m) {
  m.def("softlabel_proj_sn(Tensor h, Tensor labels, Tensor values, Tensor embed_weight, "
        "Tensor(a!) embed_u, Tensor(b!) embed_sv, Tensor lin_weight, Tensor? lin_bias, "
        "Tensor(c!) lin_u, Tensor(d!) lin_sv, Tensor sel, Tensor cls, int form, int mode, "
        "float alpha, float beta, float gamma, int num_itrs, float eps, bool training, "
        "bool check) -> Tensor");
  m.def("softlabel_proj(Tensor h, Tensor labels, Tensor values, Tensor E, Tensor w, Tensor? bias, "
        "Tensor u_E, Tensor v_E, Tensor u_w, Tensor v_w, Tensor sel, Tensor cls, int form, "
        "int mode, float alpha, float beta, float gamma, bool check) -> (Tensor, Tensor)");
}

// One kernel above autograd: it records the node itself. Registered for the backend keys too,
// so that a call below autograd (inside another autograd Function's forward) still runs.
TORCH_LIBRARY_IMPL(sgan_fast, Autograd, m) {
  m.impl("softlabel_proj", &sgan_fast::softlabel_proj);
  m.impl("softlabel_proj_sn", &sgan_fast::softlabel_proj_sn);
}
TORCH_LIBRARY_IMPL(sgan_fast, CPU, m) {
  m.impl("softlabel_proj", &sgan_fast::softlabel_proj);
  m.impl("softlabel_proj_sn", &sgan_fast::softlabel_proj_sn);
}
#ifdef SGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(sgan_fast, CUDA, m) {
  m.impl("softlabel_proj", &sgan_fast::softlabel_proj);
  m.impl("softlabel_proj_sn", &sgan_fast::softlabel_proj_sn);
}
#endif
