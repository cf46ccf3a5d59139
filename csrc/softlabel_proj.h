// Raw-pointer launchers of the CUDA kernels of softlabel_proj (see
// docs/softlabel_proj_kernels.md). No torch headers here or in the .cu file: nvcc
// then compiles in about a second instead of two minutes.
#pragma once
#include <cstdint>

#ifdef SGAN_FAST_WITH_CUDA
#include <cuda_runtime.h>

#include "dtype.h"
#include "label_source.h"

namespace sgan_fast {

// Forward. dense: T_bc = h @ E^T and the table P (null: no table term); else the top-k
// table (idx, val, K; null when K = 0). src says which row each batch element reads.
// partial: workspace of n_partial accumulator-typed slots.
cudaError_t softlabel_proj_fwd_cuda(DType dt, const void* h, const void* E, const void* w,
                                    const void* bias, const void* u_E, const void* v_E,
                                    const void* u_w, const void* v_w, const void* T_bc,
                                    bool dense, const void* P, const void* idx, const void* val,
                                    const LabelSource& src, int64_t B, int64_t C, int64_t F,
                                    int64_t K,
                                    void* partial, int n_partial, void* out, void* s, void* raw,
                                    cudaStream_t stream);

// Backward, part 1 (both label forms): grad_E_init = dsE u_E v_E^T written to gE_init
// (dtype: acc when gE_init_acc, else T), grad_w, grad_bias.
cudaError_t softlabel_proj_bwd_params_cuda(DType dt, const void* g, const void* h,
                                           const void* u_E, const void* v_E, const void* u_w,
                                           const void* v_w, const void* s, const void* raw,
                                           int64_t B, int64_t C, int64_t F, void* gE_init,
                                           bool gE_init_acc, void* grad_w, void* grad_bias,
                                           cudaStream_t stream);

// Backward, dense prep: Pg = q g / s_E [B, C] (q: the labels P read through src),
// grad_h = g w / s_w [B, F], and when T_bc is given grad_P = g T_bc / s_E.
cudaError_t softlabel_proj_bwd_dense_prep_cuda(DType dt, const void* g, const void* P,
                                               const LabelSource& src, const void* w, const void* s, const void* T_bc,
                                               int64_t B, int64_t C, int64_t F, void* Pg,
                                               void* grad_h, void* grad_P, cudaStream_t stream);

// Backward, top-k rows: grad_h, and g val h / s_E scatter-added into ws (acc dtype) rows idx.
cudaError_t softlabel_proj_bwd_topk_rows_cuda(DType dt, const void* g, const void* h,
                                              const void* idx, const void* val,
                                              const LabelSource& src, const void* E,
                                              const void* w, const void* s, int64_t B, int64_t C,
                                              int64_t F, int64_t K, void* grad_h, void* ws,
                                              cudaStream_t stream);

// ws (acc dtype) -> out (T), n elements.
cudaError_t softlabel_proj_cast_cuda(DType dt, const void* ws, void* out, int64_t n,
                                     cudaStream_t stream);

}  // namespace sgan_fast
#endif
