// Where the class-probability row of each batch element comes from, shared by the CPU and
// CUDA kernels of softlabel_proj and bank_lookup (docs/softlabel_proj_kernels.md, "Label
// sources"). Plain data, copied by value into CUDA kernels; no torch headers.
//
//   mode 0: row(b) = b of a [B, .] table; q = the table row as it is (the unfused op).
//   mode 1: row(b) = sel[b], a dataset index into a [N, .] table (a soft-label bank).
//   mode 2: row(b) = cls[sel[b]], a class index into a [C, .] table (per-class targets).
//   In modes 1 and 2, y(b) = cls[sel[b]] and
//       q[b, c] = alpha * table[row(b), c] + beta * [c == y(b)] + gamma / C,
//   the table term being absent when there is no table.
// Every index is clamped into range: a bad index gives a wrong value, never a bad access.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SGAN_HD __host__ __device__ __forceinline__
#else
#define SGAN_HD inline
#endif

namespace sgan_fast {

SGAN_HD int64_t clamp_to(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

struct LabelSource {
  const int64_t* sel = nullptr;  // [B] dataset indices (modes 1, 2)
  const int64_t* cls = nullptr;  // [N] class of every dataset row (modes 1, 2)
  int64_t n_sel = 1;             // N, the rows of cls
  int64_t n_rows = 1;            // R, the rows of the table
  int mode = 0;
  bool idx32 = false;            // top-k table indices are int32 (else int64)
  double alpha = 1.0, beta = 0.0, gamma = 0.0;

  SGAN_HD int64_t row(int64_t b) const {
    if (mode == 0) return b;
    const int64_t i = clamp_to(sel[b], n_sel);
    return mode == 1 ? clamp_to(i, n_rows) : clamp_to(cls[i], n_rows);
  }
  // The class y(b), clamped to [0, C); only meaningful in modes 1 and 2.
  SGAN_HD int64_t label(int64_t b, int64_t C) const {
    return mode == 0 ? 0 : clamp_to(cls[clamp_to(sel[b], n_sel)], C);
  }
  // The extra one-hot entry (y(b), beta) of a top-k source is present.
  SGAN_HD bool has_label_entry() const { return mode != 0 && beta != 0.0; }
};

// Entry k of row r of a top-k index table (int32 or int64), clamped to [0, C).
SGAN_HD int64_t topk_index(const void* idx, bool idx32, int64_t r, int64_t K, int64_t k,
                           int64_t C) {
  const int64_t i = idx32 ? static_cast<const int32_t*>(idx)[r * K + k]
                          : static_cast<const int64_t*>(idx)[r * K + k];
  return clamp_to(i, C);
}

}  // namespace sgan_fast
