"""Triton kernels of the batched soft-label lookup (specification: ``bank_lookup_ref`` in
sgan_fast/ops/bank_lookup.py; the row/label contract: csrc/label_source.h).

    lookup_dense(P, idx, val, sel, cls, mode, alpha, beta, gamma, C, topk_source) -> q [B, C]
    lookup_sparse(idx, val, sel, cls, mode, alpha, beta, C) -> (idx [B, Kout], val [B, Kout])

One launch each. No argument checking here (the caller validates); indices are clamped.
Values are summed in float32 in the reference's order: table entries (in k order), the
label's weight, then the uniform term.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .softlabel_proj import _rows_and_labels


@triton.jit
def _lookup_dense(P, idx, val, sel, cls, out, alpha, beta, gamma, B, C, K, N, R,
                  BB: tl.constexpr, BC: tl.constexpr, MODE: tl.constexpr, TOPK: tl.constexpr,
                  HAS_TABLE: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_b = pid_b * BB + tl.arange(0, BB)
    offs_c = pid_c * BC + tl.arange(0, BC)
    mask_b = offs_b < B
    mask_c = offs_c < C
    m2 = mask_b[:, None] & mask_c[None, :]
    rows, ys = _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE)
    q = tl.zeros((BB, BC), dtype=tl.float32)
    if HAS_TABLE:
        if TOPK:
            for k in range(K):
                ik = tl.load(idx + rows * K + k, mask=mask_b, other=0)
                ik = tl.minimum(tl.maximum(ik, 0), C - 1).to(tl.int64)
                vk = tl.load(val + rows * K + k, mask=mask_b, other=0.0).to(tl.float32)
                q += tl.where(offs_c[None, :] == ik[:, None], (alpha * vk)[:, None], 0.0)
        else:
            p = tl.load(P + rows[:, None] * C + offs_c[None, :], mask=m2, other=0.0)
            q += alpha * p.to(tl.float32)
    q += tl.where(offs_c[None, :] == ys[:, None], beta, 0.0)
    q += gamma / C
    tl.store(out + offs_b.to(tl.int64)[:, None] * C + offs_c[None, :], q.to(out.dtype.element_ty),
             mask=m2)


@triton.jit
def _lookup_sparse(idx, val, sel, cls, out_idx, out_val, alpha, beta, B, C, K, N, R,
                   BB: tl.constexpr, MODE: tl.constexpr, LABEL: tl.constexpr):
    pid_b = tl.program_id(0)
    offs_b = pid_b * BB + tl.arange(0, BB)
    mask_b = offs_b < B
    rows, ys = _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE)
    KO = K + LABEL
    obase = offs_b.to(tl.int64) * KO
    merged = offs_b < 0
    for k in range(K):
        ik = tl.load(idx + rows * K + k, mask=mask_b, other=0)
        ik = tl.minimum(tl.maximum(ik, 0), C - 1).to(tl.int64)
        vk = alpha * tl.load(val + rows * K + k, mask=mask_b, other=0.0).to(tl.float32)
        if LABEL:
            hit = (ik == ys) & (merged == 0)
            vk = tl.where(hit, vk + beta, vk)
            merged = merged | hit
        tl.store(out_idx + obase + k, ik, mask=mask_b)
        tl.store(out_val + obase + k, vk.to(out_val.dtype.element_ty), mask=mask_b)
    if LABEL:
        tl.store(out_idx + obase + K, ys, mask=mask_b)
        extra = tl.where(merged, 0.0, beta)
        tl.store(out_val + obase + K, extra.to(out_val.dtype.element_ty), mask=mask_b)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def lookup_dense(P, idx, val, sel, cls, mode, alpha, beta, gamma, num_classes, topk_source):
    B, C = sel.shape[0], num_classes
    table = (idx if topk_source else P)
    has_table = table.numel() > 0
    out_dtype = val.dtype if topk_source else P.dtype
    out = torch.empty(B, C, dtype=out_dtype, device=sel.device)
    K = idx.shape[1] if topk_source else 0
    R = max(table.shape[0], 1)
    BB, BC = _pow2(B, 16, 32), _pow2(C, 16, 128)
    grid = (triton.cdiv(B, BB), triton.cdiv(C, BC))
    dummy = sel  # stands in for the table pointers the variant does not read
    _lookup_dense[grid](P if has_table and not topk_source else dummy,
                        idx if has_table and topk_source else dummy,
                        val if has_table and topk_source else dummy, sel, cls, out,
                        alpha if has_table else 0.0, beta, gamma, B, C, K, max(cls.shape[0], 1), R,
                        BB=BB, BC=BC, MODE=mode, TOPK=topk_source, HAS_TABLE=has_table,
                        num_warps=4)
    return out


def lookup_sparse(idx, val, sel, cls, mode, alpha, beta, num_classes):
    B, K = sel.shape[0], idx.shape[1]
    label = int(beta != 0.0)
    out_idx = torch.empty(B, K + label, dtype=torch.int64, device=sel.device)
    out_val = torch.empty(B, K + label, dtype=val.dtype, device=sel.device)
    has_table = idx.numel() > 0
    BB = _pow2(B, 16, 128)
    _lookup_sparse[(triton.cdiv(B, BB),)](idx if has_table else sel, val if has_table else sel,
                                          sel, cls, out_idx, out_val, alpha, beta, B, num_classes,
                                          K, max(cls.shape[0], 1), max(idx.shape[0], 1),
                                          BB=BB, MODE=mode, LABEL=label, num_warps=4)
    return out_idx, out_val
