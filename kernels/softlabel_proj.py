"""Triton kernels of the soft-label projection head.

Implements the four primitives of docs/softlabel_proj_kernels.md (the contract; the
specification is ``softlabel_proj_ref`` in sgan_fast/ops/softlabel_proj.py):

    fwd_dense(h, P, E, w, bias, u_E, v_E, u_w, v_w, *src)         -> (out, s, raw)
    fwd_topk(h, idx, val, E, w, bias, u_E, v_E, u_w, v_w, *src)   -> (out, s, raw)
    bwd_dense(g, h, P, E, w, u_E, v_E, u_w, v_w, s, raw, need_grad_P, *src)
                                        -> (grad_h, grad_P, grad_E, grad_w, grad_bias)
    bwd_topk(g, h, idx, val, E, w, u_E, v_E, u_w, v_w, s, raw, *src)
                                        -> (grad_h, grad_E, grad_w, grad_bias)

src = (sel, cls, mode, alpha, beta[, gamma]): where each batch row's labels come from
(csrc/label_source.h; mode 0 is the plain op, modes 1 and 2 read a soft-label bank's table
through dataset indices, without writing the [B, C] labels anywhere).

No autograd and no argument checking here: the caller validates, makes every tensor
contiguous and on one device. Dtypes T: float32, float16, bfloat16 (float64 raises).
All sums accumulate in float32; s [2] and raw [2, B] are float32.

Launches
    fwd_dense  2: main (P @ E tiles, per-row partials, s partials) + finish
    fwd_topk   2: main (gathered E rows, per-row partials, s partials) + finish
    bwd_dense  2 (+1 with grad_P): grad_h; grad_E with grad_w, grad_bias; [grad_P]
    bwd_topk   2 for float32, 3 for half: init (grad_E = dsE u_E v_E^T for float32, a zeroed
               float32 workspace for half) with grad_w, grad_bias; grad_h with the label
               part of grad_E scattered by float32 atomics; [half: grad_E = T(workspace) +
               T(rank-one term)]. No [B, C] tensor is built for top-k labels.

Rounding follows the reference: per-row scale factors are applied as g/s (not (g*x)/s), and
for half dtypes the two gradient parts of h, E and w (through the linear/label term and
through s) are each rounded to T and then added, as autograd through the reference's
.to(float32) casts does. Float32 results differ from the reference by summation order only;
for half dtypes the tl.dot operand P * g / s_E of the dense grad_E is also rounded to T.

Under the Triton interpreter (TRITON_INTERPRET=1, CPU tensors) bfloat16 products are done
in float32 (the interpreter's bf16 arithmetic is broken); on a GPU half operands of tl.dot
stay in T with float32 accumulation. Block sizes come from a shape heuristic
(``_tiles``); ``BLOCK_OVERRIDE`` lets benchmarks force them per launch.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Optional per-launch block-size overrides for benchmarking, e.g.
#   BLOCK_OVERRIDE["fwd_dense"] = dict(BB=64, BF=64, BC=64, num_warps=8)
# Keys per launch: fwd_dense, bwd_dense_gh (BB, BF, BC); fwd_topk (BB, BF, BC);
# bwd_dense_gE (BC, BF, BB); bwd_dense_gP (BB, BC, BF); bwd_topk_init (BC, BF, BB);
# bwd_topk_main (BB, BF); finish (BLOCK); all also num_warps.
BLOCK_OVERRIDE: dict = {}


# ---------------------------------------------------------------------------------------------
# jit helpers
# ---------------------------------------------------------------------------------------------

@triton.jit
def _mm(a, b, acc, F32: tl.constexpr):
    """acc + a @ b; F32: products in float32 with IEEE precision (float32 data, or the
    interpreter's bf16 path), else the operands' own dtype (fp16/bf16 tensor cores)."""
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _add_parts(a, b, T: tl.constexpr):
    """a.to(T) + b.to(T), rounded to T: the reference (autograd through .to(float32) casts)
    rounds the two gradient parts of h, E, w to T separately and adds them in T."""
    return (a.to(T).to(tl.float32) + b.to(T).to(tl.float32)).to(T)


@triton.jit
def _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE: tl.constexpr):
    """(row, y) of each batch element, int64 [BB] (csrc/label_source.h): mode 0 row b; mode 1
    row sel[b]; mode 2 row cls[sel[b]]; y = cls[sel[b]]. Every index clamped into range."""
    if MODE == 0:
        return offs_b.to(tl.int64), tl.zeros_like(offs_b).to(tl.int64)
    else:
        i = tl.load(sel + offs_b, mask=mask_b, other=0)
        i = tl.minimum(tl.maximum(i, 0), N - 1)
        yc = tl.load(cls + i, mask=mask_b, other=0)
        y = tl.minimum(tl.maximum(yc, 0), C - 1)
        if MODE == 1:
            r = tl.minimum(i, R - 1)
        else:
            r = tl.minimum(tl.maximum(yc, 0), R - 1)
        return r.to(tl.int64), y.to(tl.int64)


@triton.jit
def _q_tile(P, rows, ys, mask_b, offs_c, mask_c, C, alpha, beta, gamma,
            MODE: tl.constexpr, HAS_P: tl.constexpr):
    """Labels q[rows, offs_c] [BB, BC]: mode 0 the rows of P as stored; else (float32)
    alpha * P[row] (when HAS_P) + beta * onehot(y) + gamma / C, zero outside the masks."""
    m = mask_b[:, None] & mask_c[None, :]
    if MODE == 0:
        return tl.load(P + rows[:, None] * C + offs_c[None, :], mask=m, other=0.0)
    else:
        q = tl.where(offs_c[None, :] == ys[:, None], beta, 0.0) + gamma / C
        if HAS_P:
            p = tl.load(P + rows[:, None] * C + offs_c[None, :], mask=m, other=0.0)
            q += alpha * p.to(tl.float32)
        return tl.where(m, q, 0.0)


@triton.jit
def _topk_entry(idx, val, rows, ys, mask_b, k, K, C, alpha, beta, MODE: tl.constexpr):
    """(class, weight) [BB] of entry k of each row: k < K from the table (weights times alpha
    for bank sources), k == K the label entry (y, beta)."""
    if k < K:
        ik = tl.load(idx + rows * K + k, mask=mask_b, other=0)
        ik = tl.minimum(tl.maximum(ik, 0), C - 1).to(tl.int64)
        vk = tl.load(val + rows * K + k, mask=mask_b, other=0.0).to(tl.float32)
        if MODE != 0:
            vk = vk * alpha
    else:
        ik = ys
        vk = tl.where(mask_b, beta, 0.0)
    return ik, vk


@triton.jit
def _pe_tile(P, rows, ys, alpha, beta, gamma, E, uE, offs_b, offs_f, mask_b, mask_f, C, F,
             pid_b, nB, BB: tl.constexpr, BF: tl.constexpr, BC: tl.constexpr,
             F32: tl.constexpr, WANT_SE: tl.constexpr, MODE: tl.constexpr, HAS_P: tl.constexpr):
    """(q @ E)[offs_b, offs_f] in float32 (q: the labels, _q_tile), and (WANT_SE) sum_c u_E[c]
    E[c, offs_f] over the C tiles with tile index % nB == pid_b (spreads the s_E work)."""
    acc = tl.zeros((BB, BF), dtype=tl.float32)
    se = tl.zeros((BF,), dtype=tl.float32)
    for c0 in range(0, C, BC):
        offs_c = c0 + tl.arange(0, BC)
        mask_c = offs_c < C
        p = _q_tile(P, rows, ys, mask_b, offs_c, mask_c, C, alpha, beta, gamma, MODE, HAS_P)
        e = tl.load(E + offs_c.to(tl.int64)[:, None] * F + offs_f[None, :],
                    mask=mask_c[:, None] & mask_f[None, :], other=0.0)
        acc = _mm(p.to(e.dtype), e, acc, F32)
        if WANT_SE:
            if (c0 // BC) % nB == pid_b:
                u = tl.load(uE + offs_c, mask=mask_c, other=0.0)
                se += tl.sum(e.to(tl.float32) * u[:, None], axis=0)
    return acc, se


@triton.jit
def _store_partials(h, w, vE, vw, part, spart, t, se, offs_b, offs_f, mask_b, mask_f,
                    pid_b, pid_f, nF, B, F):
    """Per-row partials L, S of this F tile into part [nF, 2, B]; (s_E, s_w) partials of this
    program into spart [nB * nF, 2]."""
    m2 = mask_b[:, None] & mask_f[None, :]
    hv = tl.load(h + offs_b.to(tl.int64)[:, None] * F + offs_f[None, :], mask=m2,
                 other=0.0).to(tl.float32)
    wv = tl.load(w + offs_f, mask=mask_f, other=0.0).to(tl.float32)
    S = tl.sum(t * hv, axis=1)
    L = tl.sum(hv * wv[None, :], axis=1)
    base = part + pid_f.to(tl.int64) * 2 * B
    tl.store(base + offs_b, L, mask=mask_b)
    tl.store(base + B + offs_b, S, mask=mask_b)
    v = tl.load(vE + offs_f, mask=mask_f, other=0.0)
    se_part = tl.sum(se * v, axis=0)
    vwv = tl.load(vw + offs_f, mask=mask_f, other=0.0)
    sw_part = tl.sum(wv * vwv, axis=0)
    sw_part = tl.where(pid_b == 0, sw_part, 0.0)
    slot = (pid_b * nF + pid_f).to(tl.int64) * 2
    tl.store(spart + slot, se_part)
    tl.store(spart + slot + 1, sw_part)


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------

@triton.jit
def _fwd_dense_main(h, P, E, w, uE, vE, vw, part, spart, sel, cls, alpha, beta, gamma, B, C, F,
                    N, R, BB: tl.constexpr, BF: tl.constexpr, BC: tl.constexpr,
                    F32: tl.constexpr, MODE: tl.constexpr, HAS_P: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_f = tl.program_id(1)
    nB = tl.num_programs(0)
    nF = tl.num_programs(1)
    offs_b = pid_b * BB + tl.arange(0, BB)
    offs_f = pid_f * BF + tl.arange(0, BF)
    mask_b = offs_b < B
    mask_f = offs_f < F
    rows, ys = _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE)
    t, se = _pe_tile(P, rows, ys, alpha, beta, gamma, E, uE, offs_b, offs_f, mask_b, mask_f, C,
                     F, pid_b, nB, BB, BF, BC, F32, True, MODE, HAS_P)
    _store_partials(h, w, vE, vw, part, spart, t, se, offs_b, offs_f, mask_b, mask_f,
                    pid_b, pid_f, nF, B, F)


@triton.jit
def _fwd_topk_main(h, idx, val, E, w, uE, vE, vw, part, spart, sel, cls, alpha, beta, B, K, C, F,
                   N, R, BB: tl.constexpr, BF: tl.constexpr, BC: tl.constexpr,
                   MODE: tl.constexpr, HAS_Y: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_f = tl.program_id(1)
    nB = tl.num_programs(0)
    nF = tl.num_programs(1)
    offs_b = pid_b * BB + tl.arange(0, BB)
    offs_f = pid_f * BF + tl.arange(0, BF)
    mask_b = offs_b < B
    mask_f = offs_f < F
    m2 = mask_b[:, None] & mask_f[None, :]
    t = tl.zeros((BB, BF), dtype=tl.float32)
    rows, ys = _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE)
    for k in range(K + HAS_Y):
        ik, vk = _topk_entry(idx, val, rows, ys, mask_b, k, K, C, alpha, beta, MODE)
        e = tl.load(E + ik[:, None] * F + offs_f[None, :], mask=m2, other=0.0).to(tl.float32)
        t += vk[:, None] * e
    # s_E partial: the C tiles pid_b, pid_b + nB, ... of this F tile
    se = tl.zeros((BF,), dtype=tl.float32)
    for c0 in range(pid_b * BC, C, nB * BC):
        offs_c = c0 + tl.arange(0, BC)
        mask_c = offs_c < C
        e = tl.load(E + offs_c.to(tl.int64)[:, None] * F + offs_f[None, :],
                    mask=mask_c[:, None] & mask_f[None, :], other=0.0).to(tl.float32)
        u = tl.load(uE + offs_c, mask=mask_c, other=0.0)
        se += tl.sum(e * u[:, None], axis=0)
    _store_partials(h, w, vE, vw, part, spart, t, se, offs_b, offs_f, mask_b, mask_f,
                    pid_b, pid_f, nF, B, F)


@triton.jit
def _fwd_finish(part, spart, bias, uw, out, s, raw, B, NF, NS,
                BLOCK: tl.constexpr, SBLOCK: tl.constexpr):
    pid = tl.program_id(0)
    r = tl.arange(0, SBLOCK)
    se_v = tl.zeros((SBLOCK,), dtype=tl.float32)
    sw_v = tl.zeros((SBLOCK,), dtype=tl.float32)
    for i in range(0, NS, SBLOCK):
        m = (i + r) < NS
        se_v += tl.load(spart + (i + r) * 2, mask=m, other=0.0)
        sw_v += tl.load(spart + (i + r) * 2 + 1, mask=m, other=0.0)
    sE = tl.sum(se_v, axis=0)
    sw = tl.load(uw) * tl.sum(sw_v, axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mb = offs < B
    L = tl.zeros((BLOCK,), dtype=tl.float32)
    S = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in range(NF):
        base = part + j * 2 * B
        L += tl.load(base + offs, mask=mb, other=0.0)
        S += tl.load(base + B + offs, mask=mb, other=0.0)
    bv = tl.load(bias).to(tl.float32)
    o = tl.div_rn(L, sw) + bv + tl.div_rn(S, sE)
    tl.store(out + offs, o.to(out.dtype.element_ty), mask=mb)
    tl.store(raw + offs, L, mask=mb)
    tl.store(raw + B + offs, S, mask=mb)
    if pid == 0:
        tl.store(s, sE)
        tl.store(s + 1, sw)


# ---------------------------------------------------------------------------------------------
# backward, dense labels
# ---------------------------------------------------------------------------------------------

@triton.jit
def _bwd_dense_gh(g, P, E, w, s, gh, sel, cls, alpha, beta, gamma, B, C, F, N, R,
                  BB: tl.constexpr, BF: tl.constexpr, BC: tl.constexpr, F32: tl.constexpr,
                  MODE: tl.constexpr, HAS_P: tl.constexpr):
    """grad_h = g_b (w / s_w + (q @ E) / s_E)."""
    pid_b = tl.program_id(0)
    pid_f = tl.program_id(1)
    offs_b = pid_b * BB + tl.arange(0, BB)
    offs_f = pid_f * BF + tl.arange(0, BF)
    mask_b = offs_b < B
    mask_f = offs_f < F
    rows, ys = _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE)
    t, _se = _pe_tile(P, rows, ys, alpha, beta, gamma, E, E, offs_b, offs_f, mask_b, mask_f, C,
                      F, pid_b, 1, BB, BF, BC, F32, False, MODE, HAS_P)
    sE = tl.load(s)
    sw = tl.load(s + 1)
    gv = tl.load(g + offs_b, mask=mask_b, other=0.0).to(tl.float32)
    wv = tl.load(w + offs_f, mask=mask_f, other=0.0).to(tl.float32)
    res = _add_parts(wv[None, :] * tl.div_rn(gv, sw)[:, None], t * tl.div_rn(gv, sE)[:, None],
                     gh.dtype.element_ty)
    tl.store(gh + offs_b.to(tl.int64)[:, None] * F + offs_f[None, :], res,
             mask=mask_b[:, None] & mask_f[None, :])


@triton.jit
def _linear_grad_step(raw, offs_b, mask_b, gv, hv, sw, dsw, gsum, gw_acc):
    """One batch chunk of the linear term's gradients: the dsw sum, sum g (grad_bias) and
    sum_b g_b h_b / s_w (grad_w of this F tile); hv is the float32 h tile [BB, BF]."""
    Lv = tl.load(raw + offs_b, mask=mask_b, other=0.0)
    dsw += gv * tl.div_rn(tl.div_rn(Lv, sw), sw)
    gsum += gv
    gw_acc += tl.sum(hv * tl.div_rn(gv, sw)[:, None], axis=0)
    return dsw, gsum, gw_acc


@triton.jit
def _store_linear_grads(gw, gb, uw, vw, gw_acc, dsw, gsum, offs_f, mask_f, pid_f):
    """grad_w of this F tile (direct part + the part through s_w, rounded apart as the
    reference does) and, from the first F tile, grad_bias."""
    dsW = -tl.sum(dsw, axis=0)
    vwv = tl.load(vw + offs_f, mask=mask_f, other=0.0)
    gwv = _add_parts(gw_acc, vwv * (dsW * tl.load(uw)), gw.dtype.element_ty)
    tl.store(gw + offs_f, gwv, mask=mask_f)
    if pid_f == 0:
        tl.store(gb, tl.sum(gsum, axis=0).to(gb.dtype.element_ty))


@triton.jit
def _bwd_dense_gE(g, h, P, uE, vE, uw, vw, s, raw, gE, gw, gb, sel, cls, alpha, beta, gamma,
                  B, C, F, N, R, BC: tl.constexpr, BF: tl.constexpr, BB: tl.constexpr,
                  F32: tl.constexpr, MODE: tl.constexpr, HAS_P: tl.constexpr):
    """grad_E tile = (q * g / s_E)^T @ h + dsE u_E v_E^T; programs with pid_c == 0 also
    grad_w of their F tile, program (0, 0) grad_bias."""
    pid_c = tl.program_id(0)
    pid_f = tl.program_id(1)
    offs_c = pid_c * BC + tl.arange(0, BC)
    offs_f = pid_f * BF + tl.arange(0, BF)
    mask_c = offs_c < C
    mask_f = offs_f < F
    sE = tl.load(s)
    sw = tl.load(s + 1)
    T = gE.dtype.element_ty
    acc = tl.zeros((BC, BF), dtype=tl.float32)
    dse = tl.zeros((BB,), dtype=tl.float32)
    dsw = tl.zeros((BB,), dtype=tl.float32)
    gsum = tl.zeros((BB,), dtype=tl.float32)
    gw_acc = tl.zeros((BF,), dtype=tl.float32)
    for b0 in range(0, B, BB):
        offs_b = b0 + tl.arange(0, BB)
        mask_b = offs_b < B
        gv = tl.load(g + offs_b, mask=mask_b, other=0.0).to(tl.float32)
        Sv = tl.load(raw + B + offs_b, mask=mask_b, other=0.0)
        dse += gv * tl.div_rn(tl.div_rn(Sv, sE), sE)
        rows = offs_b.to(tl.int64)
        prow, ys = _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE)
        p = _q_tile(P, prow, ys, mask_b, offs_c, mask_c, C, alpha, beta, gamma, MODE,
                    HAS_P).to(tl.float32)
        a = (p * tl.div_rn(gv, sE)[:, None]).to(T)
        hv = tl.load(h + rows[:, None] * F + offs_f[None, :],
                     mask=mask_b[:, None] & mask_f[None, :], other=0.0)
        acc = _mm(tl.trans(a), hv, acc, F32)
        if pid_c == 0:
            dsw, gsum, gw_acc = _linear_grad_step(raw, offs_b, mask_b, gv, hv.to(tl.float32), sw,
                                                  dsw, gsum, gw_acc)
    dsE = -tl.sum(dse, axis=0)
    u = tl.load(uE + offs_c, mask=mask_c, other=0.0)
    v = tl.load(vE + offs_f, mask=mask_f, other=0.0)
    res = _add_parts(acc, u[:, None] * (dsE * v)[None, :], T)
    tl.store(gE + offs_c.to(tl.int64)[:, None] * F + offs_f[None, :], res,
             mask=mask_c[:, None] & mask_f[None, :])
    if pid_c == 0:
        _store_linear_grads(gw, gb, uw, vw, gw_acc, dsw, gsum, offs_f, mask_f, pid_f)


@triton.jit
def _bwd_dense_gP(g, h, E, s, gP, B, C, F,
                  BB: tl.constexpr, BC: tl.constexpr, BF: tl.constexpr, F32: tl.constexpr):
    """grad_P = g_b / s_E * (h @ E^T)."""
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_b = pid_b * BB + tl.arange(0, BB)
    offs_c = pid_c * BC + tl.arange(0, BC)
    mask_b = offs_b < B
    mask_c = offs_c < C
    h_rows = h + offs_b.to(tl.int64)[:, None] * F
    e_rows = E + offs_c.to(tl.int64)[:, None] * F
    acc = tl.zeros((BB, BC), dtype=tl.float32)
    for f0 in range(0, F, BF):
        offs_f = f0 + tl.arange(0, BF)
        mask_f = offs_f < F
        hv = tl.load(h_rows + offs_f[None, :], mask=mask_b[:, None] & mask_f[None, :], other=0.0)
        ev = tl.load(e_rows + offs_f[None, :], mask=mask_c[:, None] & mask_f[None, :], other=0.0)
        acc = _mm(hv, tl.trans(ev), acc, F32)
    sE = tl.load(s)
    gv = tl.load(g + offs_b, mask=mask_b, other=0.0).to(tl.float32)
    res = acc * tl.div_rn(gv, sE)[:, None]
    tl.store(gP + offs_b.to(tl.int64)[:, None] * C + offs_c[None, :],
             res.to(gP.dtype.element_ty), mask=mask_b[:, None] & mask_c[None, :])


# ---------------------------------------------------------------------------------------------
# backward, top-k labels
# ---------------------------------------------------------------------------------------------

@triton.jit
def _bwd_topk_init(g, h, uE, vE, uw, vw, s, raw, W, dsE_out, gw, gb, B, C, F,
                   BC: tl.constexpr, BF: tl.constexpr, BB: tl.constexpr, SPLIT: tl.constexpr):
    """Not SPLIT (float32): W (= grad_E) = dsE u_E v_E^T. SPLIT (half dtypes): W (float32
    workspace of the label part of grad_E) = 0 and dsE to dsE_out[0], for _bwd_topk_cast.
    Programs with pid_c == 0 also grad_w of their F tile, program (0, 0) grad_bias."""
    pid_c = tl.program_id(0)
    pid_f = tl.program_id(1)
    offs_c = pid_c * BC + tl.arange(0, BC)
    offs_f = pid_f * BF + tl.arange(0, BF)
    mask_c = offs_c < C
    mask_f = offs_f < F
    sE = tl.load(s)
    sw = tl.load(s + 1)
    dse = tl.zeros((BB,), dtype=tl.float32)
    dsw = tl.zeros((BB,), dtype=tl.float32)
    gsum = tl.zeros((BB,), dtype=tl.float32)
    gw_acc = tl.zeros((BF,), dtype=tl.float32)
    for b0 in range(0, B, BB):
        offs_b = b0 + tl.arange(0, BB)
        mask_b = offs_b < B
        gv = tl.load(g + offs_b, mask=mask_b, other=0.0).to(tl.float32)
        Sv = tl.load(raw + B + offs_b, mask=mask_b, other=0.0)
        dse += gv * tl.div_rn(tl.div_rn(Sv, sE), sE)
        if pid_c == 0:
            hv = tl.load(h + offs_b.to(tl.int64)[:, None] * F + offs_f[None, :],
                         mask=mask_b[:, None] & mask_f[None, :], other=0.0).to(tl.float32)
            dsw, gsum, gw_acc = _linear_grad_step(raw, offs_b, mask_b, gv, hv, sw, dsw, gsum,
                                                  gw_acc)
    dsE = -tl.sum(dse, axis=0)
    if SPLIT:
        res = tl.zeros((BC, BF), dtype=tl.float32)
        if (pid_c == 0) & (pid_f == 0):
            tl.store(dsE_out, dsE)
    else:
        u = tl.load(uE + offs_c, mask=mask_c, other=0.0)
        v = tl.load(vE + offs_f, mask=mask_f, other=0.0)
        res = u[:, None] * (dsE * v)[None, :]
    tl.store(W + offs_c.to(tl.int64)[:, None] * F + offs_f[None, :], res,
             mask=mask_c[:, None] & mask_f[None, :])
    if pid_c == 0:
        _store_linear_grads(gw, gb, uw, vw, gw_acc, dsw, gsum, offs_f, mask_f, pid_f)


@triton.jit
def _bwd_topk_main(g, h, idx, val, E, w, s, gh, W, sel, cls, alpha, beta, B, K, C, F, N, R,
                   BB: tl.constexpr, BF: tl.constexpr, MODE: tl.constexpr, HAS_Y: tl.constexpr):
    """grad_h = g_b (w / s_w + sum_k val E[idx] / s_E); W[idx[b, k]] += g_b val h_b / s_E
    (indices clamped to [0, C))."""
    pid_b = tl.program_id(0)
    pid_f = tl.program_id(1)
    offs_b = pid_b * BB + tl.arange(0, BB)
    offs_f = pid_f * BF + tl.arange(0, BF)
    mask_b = offs_b < B
    mask_f = offs_f < F
    m2 = mask_b[:, None] & mask_f[None, :]
    sE = tl.load(s)
    sw = tl.load(s + 1)
    rows = offs_b.to(tl.int64)
    gv = tl.load(g + offs_b, mask=mask_b, other=0.0).to(tl.float32)
    hv = tl.load(h + rows[:, None] * F + offs_f[None, :], mask=m2, other=0.0).to(tl.float32)
    coef = tl.div_rn(gv, sE)
    t = tl.zeros((BB, BF), dtype=tl.float32)
    trows, ys = _rows_and_labels(sel, cls, offs_b, mask_b, N, R, C, MODE)
    for k in range(K + HAS_Y):
        ik, vk = _topk_entry(idx, val, trows, ys, mask_b, k, K, C, alpha, beta, MODE)
        eoff = ik[:, None] * F + offs_f[None, :]
        e = tl.load(E + eoff, mask=m2, other=0.0).to(tl.float32)
        t += vk[:, None] * e
        tl.atomic_add(W + eoff, (coef * vk)[:, None] * hv, mask=m2, sem="relaxed")
    wv = tl.load(w + offs_f, mask=mask_f, other=0.0).to(tl.float32)
    res = _add_parts(wv[None, :] * tl.div_rn(gv, sw)[:, None], t * tl.div_rn(gv, sE)[:, None],
                     gh.dtype.element_ty)
    tl.store(gh + rows[:, None] * F + offs_f[None, :], res, mask=m2)


@triton.jit
def _bwd_topk_cast(W, uE, vE, dsE_in, gE, C, F, BC: tl.constexpr, BF: tl.constexpr):
    """grad_E = T(W) + T(dsE u_E v_E^T) (half dtypes)."""
    pid_c = tl.program_id(0)
    pid_f = tl.program_id(1)
    offs_c = pid_c * BC + tl.arange(0, BC)
    offs_f = pid_f * BF + tl.arange(0, BF)
    mask_c = offs_c < C
    mask_f = offs_f < F
    m2 = mask_c[:, None] & mask_f[None, :]
    off = offs_c.to(tl.int64)[:, None] * F + offs_f[None, :]
    dsE = tl.load(dsE_in)
    u = tl.load(uE + offs_c, mask=mask_c, other=0.0)
    v = tl.load(vE + offs_f, mask=mask_f, other=0.0)
    wv = tl.load(W + off, mask=m2, other=0.0)
    tl.store(gE + off, _add_parts(wv, u[:, None] * (dsE * v)[None, :], gE.dtype.element_ty),
             mask=m2)


# ---------------------------------------------------------------------------------------------
# launch configuration
# ---------------------------------------------------------------------------------------------

_SMS: dict = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _SMS:
        _SMS[key] = torch.cuda.get_device_properties(key).multi_processor_count
    return _SMS[key]


def _pow2_cap(n: int, lo: int = 16, hi: int = 64) -> int:
    """Smallest power of two >= n, clamped to [lo, hi]."""
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


_TILE_ORDER = ((64, 64), (64, 32), (32, 64), (32, 32), (32, 16), (16, 32), (16, 16))


@functools.lru_cache(maxsize=1024)  # a pure function of the shape: computed once per shape
def _tiles(M: int, N: int, sms: int):
    """(BM, BN) for an M x N grid of output tiles: the largest tile (64x64 down to 16x16, each
    side capped at the size of its dimension) giving at least one program per SM; when none
    does, the one giving the most programs."""
    best, best_n = None, -1
    for bm, bn in _TILE_ORDER:
        bm, bn = min(bm, _pow2_cap(M)), min(bn, _pow2_cap(N))
        n = triton.cdiv(M, bm) * triton.cdiv(N, bn)
        if n >= sms:
            return bm, bn
        if n > best_n:
            best, best_n = (bm, bn), n
    return best


def _warps(*blocks) -> int:
    area = 1
    for b in blocks:
        area *= b
    return 8 if area >= 64 * 64 else 4


def _cfg(name: str, defaults: dict) -> dict:
    cfg = dict(defaults)
    cfg.update(BLOCK_OVERRIDE.get(name, {}))
    return cfg


def _check_dtype(t: torch.Tensor) -> None:
    if t.dtype not in _DTYPES:
        raise ValueError(f"softlabel_proj Triton kernels support float32, float16 and bfloat16; "
                         f"got {t.dtype} (use the CPU/CUDA kernels for float64)")


def _f32(dtype: torch.dtype) -> bool:
    """Do tl.dot in float32 (IEEE): for float32 data, and for bf16 under the interpreter."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and _interpreting())


def _red_block(dtype: torch.dtype, n: int) -> int:
    """Block along a tl.dot reduction dimension of size n."""
    return _pow2_cap(n, 16, 32 if dtype == torch.float32 else 64)


def _finish(h, bias, u_w, part, spart, NF):
    B = h.shape[0]
    out = torch.empty(B, dtype=h.dtype, device=h.device)
    s = torch.empty(2, dtype=torch.float32, device=h.device)
    raw = torch.empty(2, B, dtype=torch.float32, device=h.device)
    NS = spart.shape[0]
    cfg = _cfg("finish", dict(BLOCK=_pow2_cap(B, 16, 1024), num_warps=4))
    SBLOCK = _pow2_cap(NS, 16, 1024)
    grid = (triton.cdiv(B, cfg["BLOCK"]),)
    _fwd_finish[grid](part, spart, bias, u_w, out, s, raw, B, NF, NS,
                      BLOCK=cfg["BLOCK"], SBLOCK=SBLOCK, num_warps=cfg["num_warps"])
    return out, s, raw


# ---------------------------------------------------------------------------------------------
# the four primitives
# ---------------------------------------------------------------------------------------------

def _source(h, table, sel, cls, mode):
    """Kernel arguments of a label source (csrc/label_source.h): (sel, cls, N, R, has table);
    placeholders (never read) stand in for what the mode does not use."""
    has_table = table.numel() > 0
    if mode == 0:
        return h, h, 1, 1, has_table
    return sel, cls, max(cls.shape[0], 1), max(table.shape[0], 1), has_table


def fwd_dense(h, P, E, w, bias, u_E, v_E, u_w, v_w, sel, cls, mode, alpha, beta, gamma):
    _check_dtype(h)
    B, F = h.shape
    C = E.shape[0]
    BB, BF = _tiles(B, F, _num_sms(h.device))
    cfg = _cfg("fwd_dense", dict(BB=BB, BF=BF, BC=_red_block(h.dtype, C), num_warps=_warps(BB, BF)))
    nB, nF = triton.cdiv(B, cfg["BB"]), triton.cdiv(F, cfg["BF"])
    part = torch.empty(nF, 2, B, dtype=torch.float32, device=h.device)
    spart = torch.empty(nB * nF, 2, dtype=torch.float32, device=h.device)
    sel, cls, N, R, has_p = _source(h, P, sel, cls, mode)
    _fwd_dense_main[(nB, nF)](h, P if has_p else h, E, w, u_E, v_E, v_w, part, spart, sel, cls,
                              alpha, beta, gamma, B, C, F, N, R,
                              BB=cfg["BB"], BF=cfg["BF"], BC=cfg["BC"], F32=_f32(h.dtype),
                              MODE=mode, HAS_P=has_p, num_warps=cfg["num_warps"])
    return _finish(h, bias, u_w, part, spart, nF)


def fwd_topk(h, idx, val, E, w, bias, u_E, v_E, u_w, v_w, sel, cls, mode, alpha, beta):
    _check_dtype(h)
    B, F = h.shape
    C = E.shape[0]
    K = idx.shape[1]
    BB, BF = _tiles(B, F, _num_sms(h.device))
    cfg = _cfg("fwd_topk", dict(BB=BB, BF=BF, BC=_pow2_cap(C, 16, 32), num_warps=_warps(BB, BF)))
    nB, nF = triton.cdiv(B, cfg["BB"]), triton.cdiv(F, cfg["BF"])
    part = torch.empty(nF, 2, B, dtype=torch.float32, device=h.device)
    spart = torch.empty(nB * nF, 2, dtype=torch.float32, device=h.device)
    sel, cls, N, R, _ = _source(h, idx, sel, cls, mode)
    has_y = int(mode != 0 and beta != 0.0)
    _fwd_topk_main[(nB, nF)](h, idx, val, E, w, u_E, v_E, v_w, part, spart, sel, cls, alpha, beta,
                             B, K, C, F, N, R, BB=cfg["BB"], BF=cfg["BF"], BC=cfg["BC"],
                             MODE=mode, HAS_Y=has_y, num_warps=cfg["num_warps"])
    return _finish(h, bias, u_w, part, spart, nF)


def bwd_dense(g, h, P, E, w, u_E, v_E, u_w, v_w, s, raw, need_grad_P, sel, cls, mode, alpha, beta,
              gamma):
    _check_dtype(h)
    B, F = h.shape
    C = E.shape[0]
    T = h.dtype
    f32 = _f32(T)
    sms = _num_sms(h.device)
    grad_h = torch.empty_like(h)
    grad_E = torch.empty_like(E)
    grad_w = torch.empty_like(w)
    grad_bias = torch.empty(1, dtype=w.dtype, device=w.device)

    BB, BF = _tiles(B, F, sms)
    cfg = _cfg("bwd_dense_gh", dict(BB=BB, BF=BF, BC=_red_block(T, C), num_warps=_warps(BB, BF)))
    grid = (triton.cdiv(B, cfg["BB"]), triton.cdiv(F, cfg["BF"]))
    sel, cls, N, R, has_p = _source(h, P, sel, cls, mode)
    Pt = P if has_p else h
    _bwd_dense_gh[grid](g, Pt, E, w, s, grad_h, sel, cls, alpha, beta, gamma, B, C, F, N, R,
                        BB=cfg["BB"], BF=cfg["BF"], BC=cfg["BC"], F32=f32, MODE=mode,
                        HAS_P=has_p, num_warps=cfg["num_warps"])

    BC, BF = _tiles(C, F, sms)
    cfg = _cfg("bwd_dense_gE", dict(BC=BC, BF=BF, BB=_red_block(T, B), num_warps=_warps(BC, BF)))
    grid = (triton.cdiv(C, cfg["BC"]), triton.cdiv(F, cfg["BF"]))
    _bwd_dense_gE[grid](g, h, Pt, u_E, v_E, u_w, v_w, s, raw, grad_E, grad_w, grad_bias, sel, cls,
                        alpha, beta, gamma, B, C, F, N, R, BC=cfg["BC"], BF=cfg["BF"],
                        BB=cfg["BB"], F32=f32, MODE=mode, HAS_P=has_p,
                        num_warps=cfg["num_warps"])

    if need_grad_P:
        grad_P = torch.empty_like(P)
        BB, BC = _tiles(B, C, sms)
        cfg = _cfg("bwd_dense_gP", dict(BB=BB, BC=BC, BF=_red_block(T, F),
                                        num_warps=_warps(BB, BC)))
        grid = (triton.cdiv(B, cfg["BB"]), triton.cdiv(C, cfg["BC"]))
        _bwd_dense_gP[grid](g, h, E, s, grad_P, B, C, F, BB=cfg["BB"], BC=cfg["BC"], BF=cfg["BF"],
                            F32=f32, num_warps=cfg["num_warps"])
    else:
        grad_P = torch.empty(0, dtype=P.dtype, device=P.device)
    return grad_h, grad_P, grad_E, grad_w, grad_bias


def bwd_topk(g, h, idx, val, E, w, u_E, v_E, u_w, v_w, s, raw, sel, cls, mode, alpha, beta):
    _check_dtype(h)
    B, F = h.shape
    C = E.shape[0]
    K = idx.shape[1]
    sms = _num_sms(h.device)
    grad_h = torch.empty_like(h)
    grad_w = torch.empty_like(w)
    grad_bias = torch.empty(1, dtype=w.dtype, device=w.device)
    split = E.dtype != torch.float32
    W = torch.empty(E.shape, dtype=torch.float32, device=E.device)
    dsE = torch.empty(1, dtype=torch.float32, device=E.device)

    BC, BF = _tiles(C, F, sms)
    cfg = _cfg("bwd_topk_init", dict(BC=BC, BF=BF, BB=_pow2_cap(B, 16, 64),
                                     num_warps=_warps(BC, BF)))
    grid = (triton.cdiv(C, cfg["BC"]), triton.cdiv(F, cfg["BF"]))
    _bwd_topk_init[grid](g, h, u_E, v_E, u_w, v_w, s, raw, W, dsE, grad_w, grad_bias, B, C, F,
                         BC=cfg["BC"], BF=cfg["BF"], BB=cfg["BB"], SPLIT=split,
                         num_warps=cfg["num_warps"])
    init_grid, init_cfg = grid, cfg

    BB, BF = _tiles(B, F, sms)
    cfg = _cfg("bwd_topk_main", dict(BB=BB, BF=BF, num_warps=_warps(BB, BF)))
    grid = (triton.cdiv(B, cfg["BB"]), triton.cdiv(F, cfg["BF"]))
    sel, cls, N, R, _ = _source(h, idx, sel, cls, mode)
    has_y = int(mode != 0 and beta != 0.0)
    _bwd_topk_main[grid](g, h, idx, val, E, w, s, grad_h, W, sel, cls, alpha, beta, B, K, C, F,
                         N, R, BB=cfg["BB"], BF=cfg["BF"], MODE=mode, HAS_Y=has_y,
                         num_warps=cfg["num_warps"])

    if split:
        grad_E = torch.empty_like(E)
        _bwd_topk_cast[init_grid](W, u_E, v_E, dsE, grad_E, C, F, BC=init_cfg["BC"],
                                  BF=init_cfg["BF"], num_warps=init_cfg["num_warps"])
    else:
        grad_E = W
    return grad_h, grad_E, grad_w, grad_bias
