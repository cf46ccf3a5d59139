// bank_lookup: op registration, the C++ CPU kernels, and the host side of the CUDA kernels.
// The specification is bank_lookup_ref in sgan_fast/ops/bank_lookup.py; the Python layer
// validates everything first (index range included), the checks here are a safety net.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "bank_lookup.h"
#include "host_common.h"
#include "label_source.h"

#ifdef SGAN_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace sgan_fast {
namespace {

using at::Tensor;

LabelSource make_source(const Tensor& sel, const Tensor& cls, int64_t rows, bool idx32,
                        int64_t mode, double alpha, double beta, double gamma) {
  TORCH_CHECK(mode == 1 || mode == 2, "bank_lookup: mode must be 1 (rows by index) or 2 (by class)");
  TORCH_CHECK(sel.dim() == 1 && sel.size(0) >= 1 && sel.scalar_type() == at::kLong &&
                  sel.is_contiguous(),
              "bank_lookup: indices must be [B] contiguous int64");
  TORCH_CHECK(cls.dim() == 1 && cls.size(0) >= 1 && cls.scalar_type() == at::kLong &&
                  cls.is_contiguous() && cls.device() == sel.device(),
              "bank_lookup: classes must be [N] contiguous int64 on the indices' device");
  LabelSource src;
  src.sel = sel.data_ptr<int64_t>();
  src.cls = cls.data_ptr<int64_t>();
  src.n_sel = cls.size(0);
  src.n_rows = std::max<int64_t>(rows, 1);
  src.mode = static_cast<int>(mode);
  src.idx32 = idx32;
  src.alpha = rows > 0 ? alpha : 0.0;
  src.beta = beta;
  src.gamma = gamma;
  return src;
}

void check_topk_table(const Tensor& idx, const Tensor& val, const Tensor& sel) {
  TORCH_CHECK(idx.dim() == 2 && val.sizes() == idx.sizes() && (idx.size(0) > 0 || idx.size(1) == 0),
              "bank_lookup: top-k indices and values must both be [R, K] (R = 0 only with K = 0)");
  TORCH_CHECK((idx.scalar_type() == at::kLong || idx.scalar_type() == at::kInt) &&
                  idx.is_contiguous() && val.is_contiguous() && idx.device() == sel.device() &&
                  val.device() == sel.device(),
              "bank_lookup: top-k tables must be contiguous int32/int64 indices and values on "
              "the indices' device");
}

template <typename T>
void dense_cpu(const T* P, const void* idx, const T* val, int64_t K, bool topk_source,
               const LabelSource& src, int64_t B, int64_t C, T* out) {
  using A = at::opmath_type<T>;
  const A alpha = static_cast<A>(src.alpha), beta = static_cast<A>(src.beta);
  const A uniform = static_cast<A>(src.gamma) / static_cast<A>(C);
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<A> q(C);
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t r = src.row(b), y = src.label(b, C);
      std::fill(q.begin(), q.end(), A(0));
      if (topk_source) {
        for (int64_t k = 0; k < K; ++k)
          q[topk_index(idx, src.idx32, r, K, k, C)] += alpha * static_cast<A>(val[r * K + k]);
      } else if (P != nullptr) {
        for (int64_t c = 0; c < C; ++c) q[c] += alpha * static_cast<A>(P[r * C + c]);
      }
      q[y] += beta;
      for (int64_t c = 0; c < C; ++c) out[b * C + c] = static_cast<T>(q[c] + uniform);
    }
  });
}

template <typename T>
void sparse_cpu(const void* idx, const T* val, int64_t K, const LabelSource& src, int64_t B,
                int64_t C, int64_t* out_idx, T* out_val) {
  using A = at::opmath_type<T>;
  const bool label = src.has_label_entry();
  const int64_t Kout = K + (label ? 1 : 0);
  const A alpha = static_cast<A>(src.alpha), beta = static_cast<A>(src.beta);
  at::parallel_for(0, B, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t r = src.row(b), y = src.label(b, C);
      bool merged = false;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t c = topk_index(idx, src.idx32, r, K, k, C);
        A v = alpha * static_cast<A>(val[r * K + k]);
        if (label && !merged && c == y) {
          v += beta;
          merged = true;
        }
        out_idx[b * Kout + k] = c;
        out_val[b * Kout + k] = static_cast<T>(v);
      }
      if (label) {
        out_idx[b * Kout + K] = y;
        out_val[b * Kout + K] = static_cast<T>(merged ? A(0) : beta);
      }
    }
  });
}

// out [B, C]. topk_source: rows (idx, val) [R, K]; else P [R, C] (empty: no table term).
// The output dtype is the table's: val's for a top-k source, P's otherwise.
Tensor lookup_dense(const Tensor& P, const Tensor& idx, const Tensor& val, const Tensor& sel,
                    const Tensor& cls, int64_t mode, double alpha, double beta, double gamma,
                    int64_t num_classes, bool topk_source) {
  const int64_t C = num_classes, B = sel.size(0);
  TORCH_CHECK(C >= 1, "bank_lookup: num_classes must be >= 1");
  int64_t rows = 0, K = 0;
  if (topk_source) {
    check_topk_table(idx, val, sel);
    rows = idx.numel() > 0 ? idx.size(0) : 0;
    K = idx.size(1);
  } else {
    TORCH_CHECK(P.dim() == 2 && P.size(1) == C && P.is_contiguous() && P.device() == sel.device(),
                "bank_lookup: a dense table must be [R, C] contiguous on the indices' device");
    rows = P.size(0);
  }
  const LabelSource src = make_source(sel, cls, rows, topk_source && idx.scalar_type() == at::kInt,
                                      mode, alpha, beta, gamma);
  const Tensor& vals = topk_source ? val : P;
  Tensor out = at::empty({B, C}, vals.options());
  const void* Pp = !topk_source && P.numel() > 0 ? P.data_ptr() : nullptr;
  const void* ip = topk_source && idx.numel() > 0 ? idx.data_ptr() : nullptr;
  const void* vp = topk_source && val.numel() > 0 ? val.data_ptr() : nullptr;
  if (sel.is_cuda()) {
#ifdef SGAN_FAST_WITH_CUDA
    c10::cuda::CUDAGuard guard(sel.device());
    cuda_ok(bank_lookup_dense_cuda(dtype_code(vals.scalar_type(), "bank_lookup"), Pp, ip, vp, K,
                                   topk_source, src, B, C, out.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream().stream()),
            "bank_lookup", "dense");
#else
    require_cuda_build("bank_lookup");
#endif
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vals.scalar_type(), "bank_lookup_dense", [&] {
      dense_cpu<scalar_t>(static_cast<const scalar_t*>(Pp), ip, static_cast<const scalar_t*>(vp),
                          K, topk_source, src, B, C, out.data_ptr<scalar_t>());
    });
  }
  return out;
}

std::tuple<Tensor, Tensor> lookup_sparse(const Tensor& idx, const Tensor& val, const Tensor& sel,
                                         const Tensor& cls, int64_t mode, double alpha,
                                         double beta, int64_t num_classes) {
  const int64_t C = num_classes, B = sel.size(0);
  TORCH_CHECK(C >= 1, "bank_lookup: num_classes must be >= 1");
  check_topk_table(idx, val, sel);
  const int64_t rows = idx.numel() > 0 ? idx.size(0) : 0, K = idx.size(1);
  const LabelSource src = make_source(sel, cls, rows, idx.scalar_type() == at::kInt, mode, alpha,
                                      beta, 0.0);
  const int64_t Kout = K + (src.has_label_entry() ? 1 : 0);
  Tensor out_idx = at::empty({B, Kout}, sel.options());
  Tensor out_val = at::empty({B, Kout}, val.options());
  const void* ip = idx.numel() > 0 ? idx.data_ptr() : nullptr;
  const void* vp = val.numel() > 0 ? val.data_ptr() : nullptr;
  if (sel.is_cuda()) {
#ifdef SGAN_FAST_WITH_CUDA
    c10::cuda::CUDAGuard guard(sel.device());
    cuda_ok(bank_lookup_sparse_cuda(dtype_code(val.scalar_type(), "bank_lookup"), ip, vp, K, src,
                                    B, C, out_idx.data_ptr<int64_t>(), out_val.data_ptr(),
                                    c10::cuda::getCurrentCUDAStream().stream()),
            "bank_lookup", "sparse");
#else
    require_cuda_build("bank_lookup");
#endif
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, val.scalar_type(), "bank_lookup_sparse", [&] {
      sparse_cpu<scalar_t>(ip, static_cast<const scalar_t*>(vp), K, src, B, C,
                           out_idx.data_ptr<int64_t>(), out_val.data_ptr<scalar_t>());
    });
  }
  return {out_idx, out_val};
}

}  // namespace
}  // namespace sgan_fast

TORCH_LIBRARY_FRAGMENT(sgan_fast, m) {
  m.def("bank_lookup_dense(Tensor P, Tensor idx, Tensor val, Tensor sel, Tensor cls, int mode, "
        "float alpha, float beta, float gamma, int num_classes, bool topk_source) -> Tensor");
  m.def("bank_lookup_sparse(Tensor idx, Tensor val, Tensor sel, Tensor cls, int mode, "
        "float alpha, float beta, int num_classes) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sgan_fast, CPU, m) {
  m.impl("bank_lookup_dense", &sgan_fast::lookup_dense);
  m.impl("bank_lookup_sparse", &sgan_fast::lookup_sparse);
}

#ifdef SGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(sgan_fast, CUDA, m) {
  m.impl("bank_lookup_dense", &sgan_fast::lookup_dense);
  m.impl("bank_lookup_sparse", &sgan_fast::lookup_sparse);
}
#endif
