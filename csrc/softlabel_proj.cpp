// softlabel_proj: op registration, the C++ CPU kernels, and the host side of the CUDA
// kernels. The contract (shapes, dtypes, the exact sums) is docs/softlabel_proj_kernels.md;
// the specification is softlabel_proj_ref in sgan_fast/ops/softlabel_proj.py. The Python
// layer validates everything first; the checks here are a safety net.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "host_common.h"
#include "label_source.h"
#include "softlabel_proj.h"

#ifdef SGAN_FAST_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace sgan_fast {
namespace {

using at::Tensor;

void check_inputs(const Tensor& h, const Tensor& E, const Tensor& w, const Tensor& u_E,
                  const Tensor& v_E, const Tensor& u_w, const Tensor& v_w) {
  TORCH_CHECK(h.dim() == 2 && E.dim() == 2 && h.size(1) == E.size(1),
              "softlabel_proj: h must be [B, F] and E [C, F]");
  TORCH_CHECK(h.size(0) >= 1 && E.size(0) >= 1 && h.size(1) >= 1, "softlabel_proj: empty input");
  const int64_t C = E.size(0), F = E.size(1);
  TORCH_CHECK(w.numel() == F && v_w.numel() == F && v_E.numel() == F && u_E.numel() == C &&
                  u_w.numel() == 1,
              "softlabel_proj: w, v_w, v_E must have F elements, u_E C and u_w one");
  const auto T = h.scalar_type(), A = acc_type(T);
  for (const Tensor* t : {&h, &E, &w}) {
    TORCH_CHECK(t->scalar_type() == T, "softlabel_proj: h, E, w (and labels) must share a dtype");
    TORCH_CHECK(t->is_contiguous() && t->device() == h.device(),
                "softlabel_proj: inputs must be contiguous and on one device");
  }
  for (const Tensor* t : {&u_E, &v_E, &u_w, &v_w}) {
    TORCH_CHECK(t->scalar_type() == A && t->is_contiguous() && t->device() == h.device(),
                "softlabel_proj: u_E, v_E, u_w, v_w must be contiguous, in the accumulation dtype");
  }
}

// The label table: dense P [R, C] (R = B in mode 0; empty when a bank target has no table
// term) or top-k idx/val [R, K] (int64 indices; a bank's may be int32, K = 0 allowed).
void check_dense(const Tensor& h, const Tensor& P, const Tensor& E, int64_t mode) {
  TORCH_CHECK(P.dim() == 2 && P.size(1) == E.size(0) &&
                  (mode == 0 ? P.size(0) == h.size(0) : true),
              "softlabel_proj: P must be [B, C] (a bank table [R, C])");
  TORCH_CHECK(P.scalar_type() == h.scalar_type() && P.is_contiguous() && P.device() == h.device(),
              "softlabel_proj: P must be contiguous, with h's dtype and device");
}

void check_topk(const Tensor& h, const Tensor& idx, const Tensor& val, int64_t mode) {
  TORCH_CHECK(idx.dim() == 2 && val.sizes() == idx.sizes() &&
                  (mode == 0 ? idx.size(0) == h.size(0) && idx.size(1) >= 1
                             : idx.size(0) > 0 || idx.size(1) == 0),
              "softlabel_proj: top-k indices and values must be [B, K] (a bank table [R, K], "
              "R = 0 only with K = 0)");
  TORCH_CHECK((idx.scalar_type() == at::kLong || (mode != 0 && idx.scalar_type() == at::kInt)) &&
                  idx.is_contiguous() && idx.device() == h.device(),
              "softlabel_proj: top-k indices must be contiguous int64 on h's device");
  TORCH_CHECK(val.scalar_type() == h.scalar_type() && val.is_contiguous() &&
                  val.device() == h.device(),
              "softlabel_proj: top-k values must be contiguous, with h's dtype and device");
}

// sel [B] and cls [N] of a bank source (modes 1 and 2); returns the source for the kernels.
LabelSource make_source(const Tensor& h, const Tensor& table, bool idx32, const Tensor& sel,
                        const Tensor& cls, int64_t mode, double alpha, double beta,
                        double gamma) {
  LabelSource src;
  TORCH_CHECK(mode >= 0 && mode <= 2, "softlabel_proj: label source mode must be 0, 1 or 2");
  src.mode = static_cast<int>(mode);
  if (mode == 0) return src;
  TORCH_CHECK(sel.dim() == 1 && sel.size(0) == h.size(0) && sel.scalar_type() == at::kLong &&
                  sel.is_contiguous() && sel.device() == h.device(),
              "softlabel_proj: bank indices must be [B] contiguous int64 on h's device");
  TORCH_CHECK(cls.dim() == 1 && cls.size(0) >= 1 && cls.scalar_type() == at::kLong &&
                  cls.is_contiguous() && cls.device() == h.device(),
              "softlabel_proj: bank classes must be [N] contiguous int64 on h's device");
  src.sel = sel.data_ptr<int64_t>();
  src.cls = cls.data_ptr<int64_t>();
  src.n_sel = cls.size(0);
  src.n_rows = std::max<int64_t>(table.size(0), 1);
  src.idx32 = idx32;
  src.alpha = table.numel() > 0 ? alpha : 0.0;
  src.beta = beta;
  src.gamma = gamma;
  return src;
}

// What the backward reads besides the forward's inputs: grad_out [B] and the forward's
// s [2] and raw [2, B], all on h's device.
void check_backward(const Tensor& g, const Tensor& h, const Tensor& s, const Tensor& raw) {
  const auto A = acc_type(h.scalar_type());
  TORCH_CHECK(g.numel() == h.size(0) && g.is_contiguous() && g.scalar_type() == h.scalar_type() &&
                  g.device() == h.device(),
              "softlabel_proj: grad_out must be [B], contiguous, with h's dtype and device");
  TORCH_CHECK(s.numel() == 2 && raw.numel() == 2 * h.size(0) && s.scalar_type() == A &&
                  raw.scalar_type() == A && s.is_contiguous() && raw.is_contiguous() &&
                  s.device() == h.device() && raw.device() == h.device(),
              "softlabel_proj: s [2] and raw [2, B] must come from the forward op");
}


// Rounds a and b to T separately and adds them in T: the reference's two casts to the
// accumulation dtype make autograd round each gradient part before summing.
template <typename T, typename A>
inline T add_rounded(A a, A b) {
  return static_cast<T>(static_cast<A>(static_cast<T>(a)) + static_cast<A>(static_cast<T>(b)));
}

template <typename T, typename A>
inline A dot(const T* x, const T* y, int64_t n) {
  A acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<A>(x[i]) * static_cast<A>(y[i]);
  return acc;
}

// ---------------------------------------------------------------------------------------
// CPU kernels
// ---------------------------------------------------------------------------------------

// The labels of the kernels: a dense table P (may be null: no table term) or a top-k
// table (idx, val, K), read through a LabelSource.
template <typename T>
struct Labels {
  bool dense;
  const T* P;
  const void* idx;
  const T* val;
  int64_t K;
  LabelSource src;

  // q[b, c] of a dense source; r = src.row(b), y = src.label(b, C).
  template <typename A>
  A q(int64_t r, int64_t y, int64_t c, int64_t C) const {
    if (src.mode == 0) return static_cast<A>(P[r * C + c]);
    A v = P ? static_cast<A>(src.alpha) * static_cast<A>(P[r * C + c]) : A(0);
    if (c == y) v += static_cast<A>(src.beta);
    return v + static_cast<A>(src.gamma) / static_cast<A>(C);
  }

  // fn(class, weight) for every entry of row b of a top-k source.
  template <typename A, typename Fn>
  void for_entries(int64_t b, int64_t C, Fn&& fn) const {
    const int64_t r = src.row(b);
    const A alpha = static_cast<A>(src.alpha);
    for (int64_t k = 0; k < K; ++k) {
      const A v = static_cast<A>(val[r * K + k]);
      fn(topk_index(idx, src.idx32, r, K, k, C), src.mode == 0 ? v : alpha * v);
    }
    if (src.has_label_entry()) fn(src.label(b, C), static_cast<A>(src.beta));
  }
};

// Below this many multiply-adds (B * C * F) the dense CPU kernels skip BLAS.
inline bool is_small(int64_t B, int64_t C, int64_t F) { return B * C * F <= (int64_t{1} << 15); }

// t as a contiguous tensor of the accumulation type A (float or double).
template <typename A>
Tensor widen(const Tensor& t) {
  return t.to(c10::CppTypeToScalarType<A>::value).contiguous();
}

template <typename T>
void fwd_cpu_kernel(const Tensor& h, const Labels<T>& lab, const Tensor& E, const Tensor& w,
                    const Tensor& bias, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w,
                    const Tensor& v_w, Tensor& out, Tensor& s, Tensor& raw) {
  using A = at::opmath_type<T>;
  const int64_t B = h.size(0), C = E.size(0), F = E.size(1);
  const T *hp = h.data_ptr<T>(), *Ep = E.data_ptr<T>(), *wp = w.data_ptr<T>();
  const A *uE = u_E.data_ptr<A>(), *vE = v_E.data_ptr<A>(), *vw = v_w.data_ptr<A>();
  const A sE = at::parallel_reduce(
      0, C, 16, A(0),
      [&](int64_t c0, int64_t c1, A acc) {
        for (int64_t c = c0; c < c1; ++c) {
          A d = 0;
          const T* row = Ep + c * F;
          for (int64_t f = 0; f < F; ++f) d += static_cast<A>(row[f]) * vE[f];
          acc += uE[c] * d;
        }
        return acc;
      },
      [](A a, A b) { return a + b; });
  A sw = 0;
  for (int64_t f = 0; f < F; ++f) sw += static_cast<A>(wp[f]) * vw[f];
  sw *= u_w.data_ptr<A>()[0];
  const A b0 = static_cast<A>(bias.data_ptr<T>()[0]);
  T* op = out.data_ptr<T>();
  A* rp = raw.data_ptr<A>();
  // Dense labels: the class scores h E^T [B, C] in A from one BLAS product (half inputs are
  // widened first, so every product is exact and every sum is in A, as in the loops).
  // Small problems compute the scores in the loop below: a BLAS call and its buffers cost
  // more host time than the arithmetic.
  Tensor scores;
  if (lab.dense && !is_small(B, C, F)) scores = at::mm(widen<A>(h), widen<A>(E).t());
  const A* scp = scores.defined() ? scores.data_ptr<A>() : nullptr;
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const T* hb = hp + b * F;
      const A L = dot<T, A>(hb, wp, F);
      A S = 0;
      if (lab.dense) {
        const int64_t r = lab.src.row(b), y = lab.src.label(b, C);
        for (int64_t c = 0; c < C; ++c)
          S += lab.template q<A>(r, y, c, C) *
               (scp ? scp[b * C + c] : dot<T, A>(Ep + c * F, hb, F));
      } else {
        lab.template for_entries<A>(b, C, [&](int64_t c, A v) { S += v * dot<T, A>(Ep + c * F, hb, F); });
      }
      op[b] = static_cast<T>(L / sw + b0 + S / sE);
      rp[b] = L;
      rp[B + b] = S;
    }
  });
  s.data_ptr<A>()[0] = sE;
  s.data_ptr<A>()[1] = sw;
}

// grad_w, grad_bias and (dsE, dsw), shared by both label forms.
template <typename T, typename A>
void params_cpu(const T* gp, const T* hp, const A* raw, const A* s, A uw, const A* vw, int64_t B,
                int64_t F, T* gw, T* gb, A& dsE, A& dsw) {
  A gS = 0, gL = 0, gsum = 0;
  for (int64_t b = 0; b < B; ++b) {
    const A g = static_cast<A>(gp[b]);
    gL += g * raw[b];
    gS += g * raw[B + b];
    gsum += g;
  }
  dsE = -(gS / s[0]) / s[0];
  dsw = -(gL / s[1]) / s[1];
  gb[0] = static_cast<T>(gsum);
  const A dsw_ = dsw;
  at::parallel_for(0, F, 64, [&](int64_t f0, int64_t f1) {
    std::vector<A> acc(f1 - f0, A(0));
    for (int64_t b = 0; b < B; ++b) {
      const A g = static_cast<A>(gp[b]) / s[1];
      const T* hb = hp + b * F;
      for (int64_t f = f0; f < f1; ++f) acc[f - f0] += g * static_cast<A>(hb[f]);
    }
    for (int64_t f = f0; f < f1; ++f) gw[f] = add_rounded<T, A>(acc[f - f0], dsw_ * uw * vw[f]);
  });
}

template <typename T>
void bwd_cpu_kernel(const Tensor& g, const Tensor& h, const Labels<T>& lab, const Tensor& E,
                    const Tensor& w, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w,
                    const Tensor& v_w, const Tensor& s, const Tensor& raw, Tensor& grad_h,
                    Tensor* grad_P, Tensor& grad_E, Tensor& grad_w, Tensor& grad_bias) {
  using A = at::opmath_type<T>;
  const int64_t B = h.size(0), C = E.size(0), F = E.size(1);
  const T *gp = g.data_ptr<T>(), *hp = h.data_ptr<T>(), *Ep = E.data_ptr<T>(),
          *wp = w.data_ptr<T>();
  const A *sp = s.data_ptr<A>(), *uE = u_E.data_ptr<A>(), *vE = v_E.data_ptr<A>();
  A dsE, dsw;
  params_cpu<T, A>(gp, hp, raw.data_ptr<A>(), sp, u_w.data_ptr<A>()[0], v_w.data_ptr<A>(), B, F,
                   grad_w.data_ptr<T>(), grad_bias.data_ptr<T>(), dsE, dsw);
  T* ghp = grad_h.data_ptr<T>();
  T* gEp = grad_E.data_ptr<T>();
  if (lab.dense && is_small(B, C, F)) {
    // The same sums as below in plain loops (a small problem: host time dominates).
    std::vector<A> Qg(static_cast<size_t>(B * C));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = lab.src.row(b), y = lab.src.label(b, C);
      const A gE = static_cast<A>(gp[b]) / sp[0];
      for (int64_t c = 0; c < C; ++c) Qg[b * C + c] = lab.template q<A>(r, y, c, C) * gE;
    }
    for (int64_t b = 0; b < B; ++b) {
      const A gw = static_cast<A>(gp[b]) / sp[1];
      for (int64_t f = 0; f < F; ++f) {
        A acc = 0;
        for (int64_t c = 0; c < C; ++c) acc += Qg[b * C + c] * static_cast<A>(Ep[c * F + f]);
        ghp[b * F + f] = add_rounded<T, A>(gw * static_cast<A>(wp[f]), acc);
      }
    }
    for (int64_t c = 0; c < C; ++c)
      for (int64_t f = 0; f < F; ++f) {
        A acc = 0;
        for (int64_t b = 0; b < B; ++b) acc += Qg[b * C + c] * static_cast<A>(hp[b * F + f]);
        gEp[c * F + f] = add_rounded<T, A>(acc, dsE * uE[c] * vE[f]);
      }
    if (grad_P) {
      T* gPp = grad_P->data_ptr<T>();
      for (int64_t b = 0; b < B; ++b) {
        const A gE = static_cast<A>(gp[b]) / sp[0];
        for (int64_t c = 0; c < C; ++c)
          gPp[b * C + c] = static_cast<T>(gE * dot<T, A>(hp + b * F, Ep + c * F, F));
      }
    }
    return;
  }
  if (lab.dense) {
    // Qg = q g / s_E [B, C] in A; grad_h's label part Qg E and grad_E's Qg^T h are BLAS
    // products in A (half inputs widened first).
    const Tensor Ew = widen<A>(E), hw = widen<A>(h);
    Tensor Qg = at::empty({B, C}, Ew.options());
    A* qp = Qg.data_ptr<A>();
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t r = lab.src.row(b), y = lab.src.label(b, C);
        const A gE = static_cast<A>(gp[b]) / sp[0];
        for (int64_t c = 0; c < C; ++c) qp[b * C + c] = lab.template q<A>(r, y, c, C) * gE;
      }
    });
    const Tensor gh_label = at::mm(Qg, Ew), gE_label = at::mm(Qg.t(), hw);
    const A *ghl = gh_label.data_ptr<A>(), *gEl = gE_label.data_ptr<A>();
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        const A gw = static_cast<A>(gp[b]) / sp[1];
        for (int64_t f = 0; f < F; ++f)
          ghp[b * F + f] = add_rounded<T, A>(gw * static_cast<A>(wp[f]), ghl[b * F + f]);
      }
    });
    at::parallel_for(0, C, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c)
        for (int64_t f = 0; f < F; ++f)
          gEp[c * F + f] = add_rounded<T, A>(gEl[c * F + f], dsE * uE[c] * vE[f]);
    });
    if (grad_P) {
      const Tensor scores = at::mm(hw, Ew.t());  // h E^T [B, C]
      const A* scp = scores.data_ptr<A>();
      T* gPp = grad_P->data_ptr<T>();
      at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t b = lo; b < hi; ++b) {
          const A gE = static_cast<A>(gp[b]) / sp[0];
          for (int64_t c = 0; c < C; ++c) gPp[b * C + c] = static_cast<T>(gE * scp[b * C + c]);
        }
      });
    }
    return;
  }
  // Top-k: grad_h one row of the batch at a time.
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<A> acc(F);
    for (int64_t b = lo; b < hi; ++b) {
      std::fill(acc.begin(), acc.end(), A(0));
      const A gE = static_cast<A>(gp[b]) / sp[0], gw = static_cast<A>(gp[b]) / sp[1];
      lab.template for_entries<A>(b, C, [&](int64_t c, A p) {
        const T* er = Ep + c * F;
        for (int64_t f = 0; f < F; ++f) acc[f] += p * static_cast<A>(er[f]);
      });
      for (int64_t f = 0; f < F; ++f)
        ghp[b * F + f] = add_rounded<T, A>(gw * static_cast<A>(wp[f]), gE * acc[f]);
    }
  });
  // Top-k grad_E: scatter into an accumulation-typed buffer; columns in parallel so that no
  // two threads ever add to the same element (deterministic, no atomics).
  std::vector<A> ws(static_cast<size_t>(C * F), A(0));
  at::parallel_for(0, F, 64, [&](int64_t f0, int64_t f1) {
    for (int64_t b = 0; b < B; ++b) {
      const A gE = static_cast<A>(gp[b]) / sp[0];
      const T* hb = hp + b * F;
      lab.template for_entries<A>(b, C, [&](int64_t c, A v) {
        A* row = ws.data() + c * F;
        const A coef = v * gE;
        for (int64_t f = f0; f < f1; ++f) row[f] += coef * static_cast<A>(hb[f]);
      });
    }
  });
  at::parallel_for(0, C, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c)
      for (int64_t f = 0; f < F; ++f)
        gEp[c * F + f] = add_rounded<T, A>(ws[c * F + f], dsE * uE[c] * vE[f]);
  });
}

std::tuple<Tensor, Tensor, Tensor> alloc_fwd(const Tensor& h) {
  const auto A = acc_type(h.scalar_type());
  const int64_t B = h.size(0);
  return {at::empty({B}, h.options()), at::empty({2}, h.options().dtype(A)),
          at::empty({2, B}, h.options().dtype(A))};
}

// grad_h, grad_E, grad_w, grad_bias: the gradients every backward returns.
std::tuple<Tensor, Tensor, Tensor, Tensor> alloc_bwd(const Tensor& h, const Tensor& E,
                                                     const Tensor& w) {
  return {at::empty_like(h), at::empty_like(E), at::empty_like(w), at::empty({1}, w.options())};
}

// The tensors of the labels: P (dense, may be empty) or idx and val (top-k), and the source.
struct LabelTensors {
  bool dense;
  const Tensor* P;
  const Tensor* idx;
  const Tensor* val;
  LabelSource src;

  int64_t K() const { return dense ? 0 : idx->size(1); }
  const void* P_ptr() const { return dense && P->numel() > 0 ? P->data_ptr() : nullptr; }
  const void* idx_ptr() const { return !dense && idx->numel() > 0 ? idx->data_ptr() : nullptr; }
  const void* val_ptr() const { return !dense && val->numel() > 0 ? val->data_ptr() : nullptr; }

  template <typename T>
  Labels<T> view() const {
    return Labels<T>{dense, static_cast<const T*>(P_ptr()), idx_ptr(),
                     static_cast<const T*>(val_ptr()), K(), src};
  }
};

// CPU bodies: outputs come allocated.
void fwd_cpu(const Tensor& h, const LabelTensors& lab, const Tensor& E, const Tensor& w,
             const Tensor& bias, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w,
             const Tensor& v_w, Tensor& out, Tensor& s, Tensor& raw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "softlabel_proj_fwd", [&] {
    fwd_cpu_kernel<scalar_t>(h, lab.view<scalar_t>(), E, w, bias, u_E, v_E, u_w, v_w, out, s, raw);
  });
}

void bwd_cpu(const Tensor& g, const Tensor& h, const LabelTensors& lab, const Tensor& E,
             const Tensor& w, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w,
             const Tensor& v_w, const Tensor& s, const Tensor& raw, Tensor& grad_h,
             Tensor* grad_P, Tensor& grad_E, Tensor& grad_w, Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "softlabel_proj_bwd", [&] {
    bwd_cpu_kernel<scalar_t>(g, h, lab.view<scalar_t>(), E, w, u_E, v_E, u_w, v_w, s, raw, grad_h,
                             grad_P, grad_E, grad_w, grad_bias);
  });
}

// ---------------------------------------------------------------------------------------
// CUDA host side: cuBLAS GEMMs through ATen, the rest in softlabel_proj.cu.
// ---------------------------------------------------------------------------------------
#ifdef SGAN_FAST_WITH_CUDA

void fwd_cuda(const Tensor& h, const LabelTensors& lab, const Tensor& E, const Tensor& w,
              const Tensor& bias, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w,
              const Tensor& v_w, Tensor& out, Tensor& s, Tensor& raw) {
  c10::cuda::CUDAGuard guard(h.device());
  const int64_t B = h.size(0), C = E.size(0), F = E.size(1);
  Tensor Tbc;
  if (lab.dense) Tbc = at::mm(h, E.t());  // [B, C], cuBLAS with float32 accumulation
  const int n_partial = static_cast<int>(std::min<int64_t>(C, 264));
  Tensor partial = at::empty({n_partial}, s.options());
  cuda_ok(softlabel_proj_fwd_cuda(
              dtype_code(h.scalar_type(), "softlabel_proj"), h.data_ptr(), E.data_ptr(), w.data_ptr(),
              bias.data_ptr(), u_E.data_ptr(), v_E.data_ptr(), u_w.data_ptr(), v_w.data_ptr(),
              lab.dense ? Tbc.data_ptr() : nullptr, lab.dense, lab.P_ptr(), lab.idx_ptr(),
              lab.val_ptr(), lab.src, B, C, F, lab.K(), partial.data_ptr(), n_partial,
              out.data_ptr(), s.data_ptr(), raw.data_ptr(),
              c10::cuda::getCurrentCUDAStream().stream()), "softlabel_proj", "forward");
}

void bwd_dense_cuda(const Tensor& g, const Tensor& h, const LabelTensors& lab, const Tensor& E,
                    const Tensor& w, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w,
                    const Tensor& v_w, const Tensor& s, const Tensor& raw, Tensor& grad_h,
                    Tensor* grad_P, Tensor& grad_E, Tensor& grad_w, Tensor& grad_bias) {
  c10::cuda::CUDAGuard guard(h.device());
  const int64_t B = h.size(0), C = E.size(0), F = E.size(1);
  const auto dt = dtype_code(h.scalar_type(), "softlabel_proj");
  const cudaStream_t st = c10::cuda::getCurrentCUDAStream().stream();
  Tensor Pg = at::empty({B, C}, h.options());  // q g / s_E, the operand of both GEMMs
  Tensor Tbc;
  if (grad_P) Tbc = at::mm(h, E.t());
  cuda_ok(softlabel_proj_bwd_dense_prep_cuda(dt, g.data_ptr(), lab.P_ptr(), lab.src, w.data_ptr(),
                                             s.data_ptr(), grad_P ? Tbc.data_ptr() : nullptr,
                                             B, C, F, Pg.data_ptr(), grad_h.data_ptr(),
                                             grad_P ? grad_P->data_ptr() : nullptr, st),
          "softlabel_proj", "backward prep");
  cuda_ok(softlabel_proj_bwd_params_cuda(dt, g.data_ptr(), h.data_ptr(), u_E.data_ptr(),
                                         v_E.data_ptr(), u_w.data_ptr(), v_w.data_ptr(),
                                         s.data_ptr(), raw.data_ptr(), B, C, F, grad_E.data_ptr(),
                                         false, grad_w.data_ptr(), grad_bias.data_ptr(), st),
          "softlabel_proj", "backward params");
  grad_h.addmm_(Pg, E);       // g w / s_w + (q g / s_E) E
  grad_E.addmm_(Pg.t(), h);   // dsE u v^T + (q g / s_E)^T h
}

void bwd_topk_cuda(const Tensor& g, const Tensor& h, const LabelTensors& lab, const Tensor& E,
                   const Tensor& w, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w,
                   const Tensor& v_w, const Tensor& s, const Tensor& raw, Tensor& grad_h,
                   Tensor& grad_E, Tensor& grad_w, Tensor& grad_bias) {
  c10::cuda::CUDAGuard guard(h.device());
  const int64_t B = h.size(0), C = E.size(0), F = E.size(1);
  const auto T = h.scalar_type();
  const auto dt = dtype_code(T, "softlabel_proj");
  const cudaStream_t st = c10::cuda::getCurrentCUDAStream().stream();
  const bool direct = acc_type(T) == T;  // float32/float64: accumulate straight into grad_E
  Tensor ws = direct ? grad_E : at::empty({C, F}, E.options().dtype(acc_type(T)));
  cuda_ok(softlabel_proj_bwd_params_cuda(dt, g.data_ptr(), h.data_ptr(), u_E.data_ptr(),
                                         v_E.data_ptr(), u_w.data_ptr(), v_w.data_ptr(),
                                         s.data_ptr(), raw.data_ptr(), B, C, F, ws.data_ptr(),
                                         true, grad_w.data_ptr(), grad_bias.data_ptr(), st),
          "softlabel_proj", "backward params");
  cuda_ok(softlabel_proj_bwd_topk_rows_cuda(dt, g.data_ptr(), h.data_ptr(), lab.idx_ptr(),
                                            lab.val_ptr(), lab.src, E.data_ptr(), w.data_ptr(),
                                            s.data_ptr(), B, C, F, lab.K(), grad_h.data_ptr(),
                                            ws.data_ptr(), st),
          "softlabel_proj", "backward rows");
  if (!direct)
    cuda_ok(softlabel_proj_cast_cuda(dt, ws.data_ptr(), grad_E.data_ptr(), C * F, st), "softlabel_proj", "cast");
}

#endif  // SGAN_FAST_WITH_CUDA

// ---------------------------------------------------------------------------------------
// The ops, registered for CPU and CUDA tensors alike: check, allocate, then run the
// kernels of the tensors' device. The trailing (sel, cls, mode, alpha, beta, gamma) say
// where the labels come from (label_source.h); mode 0 is the plain op.
// ---------------------------------------------------------------------------------------

LabelTensors dense_labels(const Tensor& h, const Tensor& P, const Tensor& E, const Tensor& sel,
                          const Tensor& cls, int64_t mode, double alpha, double beta,
                          double gamma) {
  check_dense(h, P, E, mode);
  TORCH_CHECK(mode != 0 || P.numel() > 0, "softlabel_proj: P is empty");
  return {true, &P, nullptr, nullptr, make_source(h, P, false, sel, cls, mode, alpha, beta, gamma)};
}

LabelTensors topk_labels(const Tensor& h, const Tensor& idx, const Tensor& val, const Tensor& sel,
                         const Tensor& cls, int64_t mode, double alpha, double beta) {
  check_topk(h, idx, val, mode);
  return {false, nullptr, &idx, &val,
          make_source(h, idx, idx.scalar_type() == at::kInt, sel, cls, mode, alpha, beta, 0.0)};
}

std::tuple<Tensor, Tensor, Tensor> run_fwd(const Tensor& h, const LabelTensors& lab,
                                           const Tensor& E, const Tensor& w, const Tensor& bias,
                                           const Tensor& u_E, const Tensor& v_E,
                                           const Tensor& u_w, const Tensor& v_w) {
  auto [out, s, raw] = alloc_fwd(h);
  if (h.is_cuda()) {
#ifdef SGAN_FAST_WITH_CUDA
    fwd_cuda(h, lab, E, w, bias, u_E, v_E, u_w, v_w, out, s, raw);
#else
    require_cuda_build("softlabel_proj");
#endif
  } else {
    fwd_cpu(h, lab, E, w, bias, u_E, v_E, u_w, v_w, out, s, raw);
  }
  return {out, s, raw};
}

std::tuple<Tensor, Tensor, Tensor> fwd_dense(const Tensor& h, const Tensor& P, const Tensor& E,
                                             const Tensor& w, const Tensor& bias,
                                             const Tensor& u_E, const Tensor& v_E,
                                             const Tensor& u_w, const Tensor& v_w,
                                             const Tensor& sel, const Tensor& cls, int64_t mode,
                                             double alpha, double beta, double gamma) {
  check_inputs(h, E, w, u_E, v_E, u_w, v_w);
  return run_fwd(h, dense_labels(h, P, E, sel, cls, mode, alpha, beta, gamma), E, w, bias, u_E,
                 v_E, u_w, v_w);
}

std::tuple<Tensor, Tensor, Tensor> fwd_topk(const Tensor& h, const Tensor& idx, const Tensor& val,
                                            const Tensor& E, const Tensor& w, const Tensor& bias,
                                            const Tensor& u_E, const Tensor& v_E,
                                            const Tensor& u_w, const Tensor& v_w,
                                            const Tensor& sel, const Tensor& cls, int64_t mode,
                                            double alpha, double beta) {
  check_inputs(h, E, w, u_E, v_E, u_w, v_w);
  return run_fwd(h, topk_labels(h, idx, val, sel, cls, mode, alpha, beta), E, w, bias, u_E, v_E,
                 u_w, v_w);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> bwd_dense(
    const Tensor& g, const Tensor& h, const Tensor& P, const Tensor& E, const Tensor& w,
    const Tensor& u_E, const Tensor& v_E, const Tensor& u_w, const Tensor& v_w, const Tensor& s,
    const Tensor& raw, bool need_grad_P, const Tensor& sel, const Tensor& cls, int64_t mode,
    double alpha, double beta, double gamma) {
  check_inputs(h, E, w, u_E, v_E, u_w, v_w);
  const LabelTensors lab = dense_labels(h, P, E, sel, cls, mode, alpha, beta, gamma);
  TORCH_CHECK(!need_grad_P || mode == 0, "softlabel_proj: bank labels get no gradient");
  check_backward(g, h, s, raw);
  auto [grad_h, grad_E, grad_w, grad_bias] = alloc_bwd(h, E, w);
  Tensor grad_P = need_grad_P ? at::empty_like(P) : at::empty({0}, P.options());
  Tensor* gP = need_grad_P ? &grad_P : nullptr;
  if (h.is_cuda()) {
#ifdef SGAN_FAST_WITH_CUDA
    bwd_dense_cuda(g, h, lab, E, w, u_E, v_E, u_w, v_w, s, raw, grad_h, gP, grad_E, grad_w,
                   grad_bias);
#else
    require_cuda_build("softlabel_proj");
#endif
  } else {
    bwd_cpu(g, h, lab, E, w, u_E, v_E, u_w, v_w, s, raw, grad_h, gP, grad_E, grad_w, grad_bias);
  }
  return {grad_h, grad_P, grad_E, grad_w, grad_bias};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_topk(
    const Tensor& g, const Tensor& h, const Tensor& idx, const Tensor& val, const Tensor& E,
    const Tensor& w, const Tensor& u_E, const Tensor& v_E, const Tensor& u_w, const Tensor& v_w,
    const Tensor& s, const Tensor& raw, const Tensor& sel, const Tensor& cls, int64_t mode,
    double alpha, double beta) {
  check_inputs(h, E, w, u_E, v_E, u_w, v_w);
  const LabelTensors lab = topk_labels(h, idx, val, sel, cls, mode, alpha, beta);
  check_backward(g, h, s, raw);
  auto [grad_h, grad_E, grad_w, grad_bias] = alloc_bwd(h, E, w);
  if (h.is_cuda()) {
#ifdef SGAN_FAST_WITH_CUDA
    bwd_topk_cuda(g, h, lab, E, w, u_E, v_E, u_w, v_w, s, raw, grad_h, grad_E, grad_w,
                  grad_bias);
#else
    require_cuda_build("softlabel_proj");
#endif
  } else {
    bwd_cpu(g, h, lab, E, w, u_E, v_E, u_w, v_w, s, raw, grad_h, nullptr, grad_E, grad_w,
            grad_bias);
  }
  return {grad_h, grad_E, grad_w, grad_bias};
}

}  // namespace
}  // namespace sgan_fast

TORCH_LIBRARY(sgan_fast, m) {
  m.def("softlabel_proj_fwd_dense(Tensor h, Tensor P, Tensor E, Tensor w, Tensor bias, "
        "Tensor u_E, Tensor v_E, Tensor u_w, Tensor v_w, Tensor sel, Tensor cls, int mode, "
        "float alpha, float beta, float gamma) -> (Tensor, Tensor, Tensor)");
  m.def("softlabel_proj_fwd_topk(Tensor h, Tensor idx, Tensor val, Tensor E, Tensor w, "
        "Tensor bias, Tensor u_E, Tensor v_E, Tensor u_w, Tensor v_w, Tensor sel, Tensor cls, "
        "int mode, float alpha, float beta) -> (Tensor, Tensor, Tensor)");
  m.def("softlabel_proj_bwd_dense(Tensor g, Tensor h, Tensor P, Tensor E, Tensor w, Tensor u_E, "
        "Tensor v_E, Tensor u_w, Tensor v_w, Tensor s, Tensor raw, bool need_grad_P, Tensor sel, "
        "Tensor cls, int mode, float alpha, float beta, float gamma) -> "
        "(Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("softlabel_proj_bwd_topk(Tensor g, Tensor h, Tensor idx, Tensor val, Tensor E, Tensor w, "
        "Tensor u_E, Tensor v_E, Tensor u_w, Tensor v_w, Tensor s, Tensor raw, Tensor sel, "
        "Tensor cls, int mode, float alpha, float beta) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sgan_fast, CPU, m) {
  m.impl("softlabel_proj_fwd_dense", &sgan_fast::fwd_dense);
  m.impl("softlabel_proj_fwd_topk", &sgan_fast::fwd_topk);
  m.impl("softlabel_proj_bwd_dense", &sgan_fast::bwd_dense);
  m.impl("softlabel_proj_bwd_topk", &sgan_fast::bwd_topk);
}

#ifdef SGAN_FAST_WITH_CUDA
// The same entry points: they run the CUDA kernels for CUDA tensors.
TORCH_LIBRARY_IMPL(sgan_fast, CUDA, m) {
  m.impl("softlabel_proj_fwd_dense", &sgan_fast::fwd_dense);
  m.impl("softlabel_proj_fwd_topk", &sgan_fast::fwd_topk);
  m.impl("softlabel_proj_bwd_dense", &sgan_fast::bwd_dense);
  m.impl("softlabel_proj_bwd_topk", &sgan_fast::bwd_topk);
}
#endif
