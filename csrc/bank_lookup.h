// Raw-pointer launchers of the CUDA kernels of bank_lookup (sgan_fast/ops/bank_lookup.py has
// the specification, csrc/label_source.h the row/label contract). No torch headers here.
#pragma once
#include <cstdint>

#ifdef SGAN_FAST_WITH_CUDA
#include <cuda_runtime.h>

#include "dtype.h"
#include "label_source.h"

namespace sgan_fast {

// out [B, C] = q. topk_source: the rows are (idx, val, K) (null when K = 0), else P [R, C]
// (null: no table term). Values in dtype dt, accumulated in float (double for f64).
cudaError_t bank_lookup_dense_cuda(DType dt, const void* P, const void* idx, const void* val,
                                   int64_t K, bool topk_source, const LabelSource& src,
                                   int64_t B, int64_t C, void* out, cudaStream_t stream);

// out_idx [B, Kout] int64, out_val [B, Kout]: the K entries of each row (times alpha), and
// when src has a label entry, the label's weight merged into the first entry of its class
// or else put in column K (which is then (y, 0) when merged).
cudaError_t bank_lookup_sparse_cuda(DType dt, const void* idx, const void* val, int64_t K,
                                    const LabelSource& src, int64_t B, int64_t C,
                                    int64_t* out_idx, void* out_val, cudaStream_t stream);

}  // namespace sgan_fast
#endif
