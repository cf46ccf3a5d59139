"""Triton kernels of grouped spectral normalisation (sgan_fast/ops/spectral_norm.py is the
specification and says what the modes mean).

    power_iteration(mats, u, v, num_iters, eps, mode) -> (s [L], u_out [sum R], v_out [sum C])
    normalize_fwd(mats, s)                            -> W_l / s_l, concatenated [sum R*C]
    normalize_bwd(grad, mats, u, v, s)                -> dW, concatenated [sum R*C]

`mats` are contiguous matrices of one dtype (float32, float16, bfloat16) read through a
table of pointers (apex's multi_tensor_apply idea): every launch covers all layers, each
program one (layer, tile) pair, so the number of launches does not grow with the layers.
Vectors are float32. No autograd and no argument checks here: the caller validates.

Launches
    power iteration  3 per step: a pass over columns (x^T W), a pass over rows (W x), and a
                     finishing kernel per layer (norms, s, the normalised vectors); torch's eval
                     mode: 1 row pass and the finish.
    normalize_fwd    1.
    normalize_bwd    2: per-chunk partial <G, W>; then each chunk sums its layer's partials
                     and writes G/s - (<G, W>/s^2) u v^T.
Nothing uses atomics: the results are deterministic.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import triton
import triton.language as tl

_TL_DTYPE = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}

BLOCK_R = 16     # rows per program of the row pass
BLOCK_C = 128    # columns per program of the column pass
BLOCK_K = 128    # inner tile width of both passes
CHUNK = 16384    # elements per program of the elementwise kernels
BLOCK_E = 1024   # inner tile of the elementwise kernels


@triton.jit
def _layer(meta, layer):
    """(rows, cols, u offset, v offset, offset in the concatenated weights) of a layer."""
    base = meta + 5 * layer
    return (tl.load(base), tl.load(base + 1), tl.load(base + 2), tl.load(base + 3),
            tl.load(base + 4))


@triton.jit
def _col_pass(ptrs, meta, tiles, x, y, eps, NORMALIZE_X: tl.constexpr, W_DTYPE: tl.constexpr,
              BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """y[c] = sum_r x[r] W[r, c] (divided by max(|x|, eps) when NORMALIZE_X)."""
    t = tl.program_id(0)
    layer = tl.load(tiles + 2 * t)
    c0 = tl.load(tiles + 2 * t + 1).to(tl.int64)
    R, C, u_off, v_off, _ = _layer(meta, layer)
    W = tl.load(ptrs + layer).to(tl.pointer_type(W_DTYPE))
    cols = c0 + tl.arange(0, BLOCK_C)
    cmask = cols < C
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    ss = tl.zeros([BLOCK_R], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        rmask = rows < R
        xv = tl.load(x + u_off + rows, mask=rmask, other=0.0)
        ss += xv * xv
        w = tl.load(W + rows[:, None] * C + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(w * xv[:, None], 0)
    if NORMALIZE_X:
        acc = acc / tl.maximum(tl.sqrt(tl.sum(ss, 0)), eps)
    tl.store(y + v_off + cols, acc, mask=cmask)


@triton.jit
def _row_pass(ptrs, meta, tiles, x, y, eps, NORMALIZE_X: tl.constexpr, W_DTYPE: tl.constexpr,
              BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[r] = sum_c W[r, c] x[c] (divided by max(|x|, eps) when NORMALIZE_X)."""
    t = tl.program_id(0)
    layer = tl.load(tiles + 2 * t)
    r0 = tl.load(tiles + 2 * t + 1).to(tl.int64)
    R, C, u_off, v_off, _ = _layer(meta, layer)
    W = tl.load(ptrs + layer).to(tl.pointer_type(W_DTYPE))
    rows = r0 + tl.arange(0, BLOCK_R)
    rmask = rows < R
    acc = tl.zeros([BLOCK_R], dtype=tl.float32)
    ss = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        cmask = cols < C
        xv = tl.load(x + v_off + cols, mask=cmask, other=0.0)
        ss += xv * xv
        w = tl.load(W + rows[:, None] * C + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(w * xv[None, :], 1)
    if NORMALIZE_X:
        acc = acc / tl.maximum(tl.sqrt(tl.sum(ss, 0)), eps)
    tl.store(y + u_off + rows, acc, mask=rmask)


@triton.jit
def _sumsq(x, off, n, BLOCK: tl.constexpr):
    ss = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, n, BLOCK):
        o = i + tl.arange(0, BLOCK)
        xv = tl.load(x + off + o, mask=o < n, other=0.0)
        ss += xv * xv
    return tl.sum(ss, 0)


@triton.jit
def _dot(x, y, off, n, BLOCK: tl.constexpr):
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, n, BLOCK):
        o = i + tl.arange(0, BLOCK)
        acc += tl.load(x + off + o, mask=o < n, other=0.0) * tl.load(y + off + o, mask=o < n,
                                                                     other=0.0)
    return tl.sum(acc, 0)


@triton.jit
def _scale_copy(src, dst, off, n, scale, BLOCK: tl.constexpr):
    for i in range(0, n, BLOCK):
        o = i + tl.arange(0, BLOCK)
        m = o < n
        tl.store(dst + off + o, tl.load(src + off + o, mask=m, other=0.0) / scale, mask=m)


@triton.jit
def _finish(meta, u_raw, v_raw, u_in, u_out, v_out, s, eps, MODE: tl.constexpr,
            BLOCK: tl.constexpr):
    """Per layer. MODE 0 (biggan): v = v_raw/|v_raw|, u = u_raw/|u_raw| with u_raw = W v,
    s = |u_raw|^2 / max(|u_raw|, eps) (= u^T W v). MODE 1 (torch, training): the same with
    s from v_raw = W^T u. MODE 2 (torch, eval): s = u^T (W v) = <u_in, u_raw>; vectors kept."""
    layer = tl.program_id(0)
    R, C, u_off, v_off, _ = _layer(meta, layer)
    if MODE == 2:
        tl.store(s + layer, _dot(u_in, u_raw, u_off, R, BLOCK))
    else:
        nu = tl.sqrt(_sumsq(u_raw, u_off, R, BLOCK))
        nv = tl.sqrt(_sumsq(v_raw, v_off, C, BLOCK))
        du = tl.maximum(nu, eps)
        dv = tl.maximum(nv, eps)
        _scale_copy(u_raw, u_out, u_off, R, du, BLOCK)
        _scale_copy(v_raw, v_out, v_off, C, dv, BLOCK)
        if MODE == 0:
            tl.store(s + layer, nu * nu / du)
        else:
            tl.store(s + layer, nv * nv / dv)


@triton.jit
def _normalize_fwd(ptrs, meta, chunks, s, out, W_DTYPE: tl.constexpr, CHUNK: tl.constexpr,
                   BLOCK_E: tl.constexpr):
    t = tl.program_id(0)
    layer = tl.load(chunks + 2 * t)
    e0 = tl.load(chunks + 2 * t + 1).to(tl.int64)
    R, C, _, _, w_off = _layer(meta, layer)
    n = R * C
    W = tl.load(ptrs + layer).to(tl.pointer_type(W_DTYPE))
    sl = tl.load(s + layer)
    for i in range(0, CHUNK, BLOCK_E):
        e = e0 + i + tl.arange(0, BLOCK_E)
        m = e < n
        w = tl.load(W + e, mask=m, other=0.0).to(tl.float32)
        tl.store(out + w_off + e, (w / sl).to(W_DTYPE), mask=m)


@triton.jit
def _normalize_bwd_dot(ptrs, meta, chunks, grad, partial, W_DTYPE: tl.constexpr,
                       CHUNK: tl.constexpr, BLOCK_E: tl.constexpr):
    t = tl.program_id(0)
    layer = tl.load(chunks + 2 * t)
    e0 = tl.load(chunks + 2 * t + 1).to(tl.int64)
    R, C, _, _, w_off = _layer(meta, layer)
    n = R * C
    W = tl.load(ptrs + layer).to(tl.pointer_type(W_DTYPE))
    acc = tl.zeros([BLOCK_E], dtype=tl.float32)
    for i in range(0, CHUNK, BLOCK_E):
        e = e0 + i + tl.arange(0, BLOCK_E)
        m = e < n
        acc += (tl.load(W + e, mask=m, other=0.0).to(tl.float32)
                * tl.load(grad + w_off + e, mask=m, other=0.0).to(tl.float32))
    tl.store(partial + t, tl.sum(acc, 0))


@triton.jit
def _normalize_bwd(ptrs, meta, chunks, chunk_begin, grad, partial, u, v, s, out,
                   W_DTYPE: tl.constexpr, CHUNK: tl.constexpr, BLOCK_E: tl.constexpr):
    t = tl.program_id(0)
    layer = tl.load(chunks + 2 * t)
    e0 = tl.load(chunks + 2 * t + 1).to(tl.int64)
    R, C, u_off, v_off, w_off = _layer(meta, layer)
    n = R * C
    p0 = tl.load(chunk_begin + layer)
    p1 = tl.load(chunk_begin + layer + 1)
    dot = tl.zeros([BLOCK_E], dtype=tl.float32)
    for i in range(p0, p1, BLOCK_E):
        o = i + tl.arange(0, BLOCK_E)
        dot += tl.load(partial + o, mask=o < p1, other=0.0)
    sl = tl.load(s + layer)
    coef = tl.sum(dot, 0) / (sl * sl)
    for i in range(0, CHUNK, BLOCK_E):
        e = e0 + i + tl.arange(0, BLOCK_E)
        m = e < n
        g = tl.load(grad + w_off + e, mask=m, other=0.0).to(tl.float32)
        r = e // C
        c = e - r * C
        uv = tl.load(u + u_off + r, mask=m, other=0.0) * tl.load(v + v_off + c, mask=m, other=0.0)
        tl.store(out + w_off + e, (g / sl - coef * uv).to(W_DTYPE), mask=m)


# ---------------------------------------------------------------------------------------------
# Tables: built once per set of weights (their addresses and shapes) and kept on the device.
# ---------------------------------------------------------------------------------------------

_TABLES: "OrderedDict[tuple, dict]" = OrderedDict()
_TABLES_MAX = 64


def _tiles(counts):
    """[(layer, start)] for every tile; counts[l] = (extent, tile size)."""
    out = []
    for l, (n, b) in enumerate(counts):
        out.extend((l, i) for i in range(0, n, b))
    return out


def _tables(mats):
    key = tuple((m.data_ptr(), tuple(m.shape)) for m in mats) + (mats[0].dtype, mats[0].device)
    hit = _TABLES.get(key)
    if hit is not None:
        _TABLES.move_to_end(key)
        return hit
    rows = [m.shape[0] for m in mats]
    cols = [m.numel() // m.shape[0] for m in mats]
    meta, uo, vo, wo = [], 0, 0, 0
    for R, C in zip(rows, cols):
        meta.append((R, C, uo, vo, wo))
        uo, vo, wo = uo + R, vo + C, wo + R * C
    chunks = _tiles([(R * C, CHUNK) for R, C in zip(rows, cols)])
    begin = [0]
    for R, C in zip(rows, cols):
        begin.append(begin[-1] + triton.cdiv(R * C, CHUNK))
    dev = mats[0].device

    def t(x, dtype=torch.int64):
        return torch.tensor(x, dtype=dtype).to(dev)

    hit = dict(
        ptrs=t([m.data_ptr() for m in mats]), meta=t(meta),
        row_tiles=t(_tiles([(R, BLOCK_R) for R in rows])),
        col_tiles=t(_tiles([(C, BLOCK_C) for C in cols])),
        chunks=t(chunks), chunk_begin=t(begin), n_chunks=len(chunks),
        n_row_tiles=sum(triton.cdiv(R, BLOCK_R) for R in rows),
        n_col_tiles=sum(triton.cdiv(C, BLOCK_C) for C in cols),
        sum_r=uo, sum_c=vo, numel=wo)
    _TABLES[key] = hit
    if len(_TABLES) > _TABLES_MAX:
        _TABLES.popitem(last=False)
    return hit


def power_iteration(mats, u, v, num_iters, eps, mode):
    tb = _tables(mats)
    L, dt = len(mats), _TL_DTYPE[mats[0].dtype]
    u_raw = torch.empty(tb["sum_r"], dtype=torch.float32, device=u.device)
    v_raw = torch.empty(tb["sum_c"], dtype=torch.float32, device=u.device)
    u_out, v_out = torch.empty_like(u_raw), torch.empty_like(v_raw)
    s = torch.empty(L, dtype=torch.float32, device=u.device)
    row = dict(BLOCK_R=BLOCK_R, BLOCK_K=BLOCK_K, W_DTYPE=dt)
    col = dict(BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, W_DTYPE=dt)
    common = (tb["ptrs"], tb["meta"])
    if mode == 2:
        _row_pass[(tb["n_row_tiles"],)](*common, tb["row_tiles"], v, u_raw, eps, NORMALIZE_X=False,
                                        **row)
        _finish[(L,)](tb["meta"], u_raw, v_raw, u, u_out, v_out, s, eps, MODE=2, BLOCK=1024)
        return s, u.clone(), v.clone()
    cur_u, cur_v = u, v
    for _ in range(num_iters):
        if mode == 0:
            _col_pass[(tb["n_col_tiles"],)](*common, tb["col_tiles"], cur_u, v_raw, eps,
                                            NORMALIZE_X=False, **col)
            _row_pass[(tb["n_row_tiles"],)](*common, tb["row_tiles"], v_raw, u_raw, eps,
                                            NORMALIZE_X=True, **row)
        else:
            _row_pass[(tb["n_row_tiles"],)](*common, tb["row_tiles"], cur_v, u_raw, eps,
                                            NORMALIZE_X=False, **row)
            _col_pass[(tb["n_col_tiles"],)](*common, tb["col_tiles"], u_raw, v_raw, eps,
                                            NORMALIZE_X=True, **col)
        _finish[(L,)](tb["meta"], u_raw, v_raw, u, u_out, v_out, s, eps, MODE=mode, BLOCK=1024)
        cur_u, cur_v = u_out, v_out
    return s, u_out, v_out


def normalize_fwd(mats, s):
    tb = _tables(mats)
    out = torch.empty(tb["numel"], dtype=mats[0].dtype, device=s.device)
    _normalize_fwd[(tb["n_chunks"],)](tb["ptrs"], tb["meta"], tb["chunks"], s, out,
                                      W_DTYPE=_TL_DTYPE[mats[0].dtype], CHUNK=CHUNK,
                                      BLOCK_E=BLOCK_E)
    return out


def normalize_bwd(grad, mats, u, v, s):
    tb = _tables(mats)
    dt = _TL_DTYPE[mats[0].dtype]
    partial = torch.empty(tb["n_chunks"], dtype=torch.float32, device=s.device)
    out = torch.empty(tb["numel"], dtype=mats[0].dtype, device=s.device)
    grid = (tb["n_chunks"],)
    _normalize_bwd_dot[grid](tb["ptrs"], tb["meta"], tb["chunks"], grad, partial, W_DTYPE=dt,
                             CHUNK=CHUNK, BLOCK_E=BLOCK_E)
    _normalize_bwd[grid](tb["ptrs"], tb["meta"], tb["chunks"], tb["chunk_begin"], grad, partial,
                         u, v, s, out, W_DTYPE=dt, CHUNK=CHUNK, BLOCK_E=BLOCK_E)
    return out
