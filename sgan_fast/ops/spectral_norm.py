"""Grouped spectral normalisation: one power-iteration pass for a whole model's weights.

Every weight W_l is read as the matrix W_l.reshape(W_l.shape[0], -1) [R_l, C_l] (a
ConvTranspose weight under torch's semantics is first viewed with dims 0 and 1 swapped:
see `transposed`). Each layer keeps a left vector u_l [R_l] (and, under torch's
semantics, a right vector v_l [C_l]). One power-iteration step is

    semantics="biggan" (BigGAN-PyTorch's SN layers; only u is stored):
        v = normalize(u W)      u = normalize(W v)      s = u^T W v
    semantics="torch" (torch.nn.utils.parametrizations.spectral_norm; u and v stored):
        u = normalize(W v)      v = normalize(W^T u)    s = u^T W v
    semantics="torch_legacy" (the older hook-based torch.nn.utils.spectral_norm):
        BigGAN's order, with both u and v stored

with normalize(x) = x / max(|x|, eps). In eval mode BigGAN stores nothing but still runs
one step (its layers restart every step from the stored u, so num_iters steps in eval give
what one does), and both torch variants neither iterate nor store: s comes from the stored
u and v. The
normalised weight is W / s with u and v constants, so the gradient flows through s:

    dL/dW = G / s - (<G, W> / s^2) u v^T.

The vectors are computed in float32 (float64 for float64 weights). The functions
ending in `_ref` are the specification (a plain per-layer loop); `spectral_norm_grouped`
runs all layers in a fixed number of launches (3 per iteration, 1 for the normalised
weights, 2 for their backward) with the "cpu", "cuda" or "triton" implementation.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _ext
from . import _dispatch

SEMANTICS = ("biggan", "torch", "torch_legacy")
# How the kernels are told what to do (the int `mode` of the custom ops): 0 iterates in
# BigGAN's order, 1 in torch's, 2 computes s = u^T W v from the stored vectors.
_MODE = {("biggan", True): 0, ("biggan", False): 0, ("torch", True): 1, ("torch", False): 2,
         ("torch_legacy", True): 0, ("torch_legacy", False): 2}
_KEEPS_V = ("torch", "torch_legacy")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_matrix(W: Tensor, transposed: bool = False) -> Tensor:
    """The matrix whose spectral norm normalises W: [shape[0], -1], or, for a ConvTranspose
    weight under torch's semantics, [shape[1], -1] of W with dims 0 and 1 swapped."""
    if transposed:
        W = W.transpose(0, 1)
    return W.reshape(W.shape[0], -1)


@dataclasses.dataclass
class SNVectors:
    """What a power-iteration pass produced: s [L] and the vectors u, v of every layer,
    concatenated (u [sum R_l], v [sum C_l]), in the accumulation dtype, detached."""
    s: Tensor
    u: Tensor
    v: Tensor
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    def u_list(self) -> list[Tensor]:
        return list(self.u.split(self.rows))

    def v_list(self) -> list[Tensor]:
        return list(self.v.split(self.cols))


# ---------------------------------------------------------------------------
# The specification.
# ---------------------------------------------------------------------------

@torch.no_grad()
def power_iteration_ref(W: Tensor, u: Tensor, v: Optional[Tensor], *, semantics: str,
                        num_iters: int, eps: float, training: bool):
    """One layer: (s, u, v) in the accumulation dtype, W a matrix [R, C]."""
    acc = acc_dtype(W.dtype)
    Wm = W.detach().to(acc)
    u = u.detach().reshape(-1).to(acc)
    v = None if v is None else v.detach().reshape(-1).to(acc)
    if semantics == "biggan" or (semantics == "torch_legacy" and training):
        for _ in range(num_iters if training else 1):
            v = F.normalize(u @ Wm, dim=0, eps=eps)
            u = F.normalize(Wm @ v, dim=0, eps=eps)
    elif semantics == "torch" and training:
        for _ in range(num_iters):
            u = F.normalize(Wm @ v, dim=0, eps=eps)
            v = F.normalize(Wm.t() @ u, dim=0, eps=eps)
    s = u @ (Wm @ v)
    return s, u, v


def normalize_ref(W: Tensor, u: Tensor, v: Tensor, transposed: bool = False) -> Tensor:
    """W / s with s = u^T W v recomputed from W, so that autograd gives the term through s."""
    acc = acc_dtype(W.dtype)
    s = u.detach().to(acc) @ (as_matrix(W, transposed).to(acc) @ v.detach().to(acc))
    return W / s


def spectral_norm_grouped_ref(weights, us, vs=None, *, semantics="biggan", num_iters=1,
                              eps=1e-12, training=True, transposed=None, return_scales=False):
    """The per-layer loop that spectral_norm_grouped must equal (same arguments)."""
    L = len(weights)
    transposed = transposed or [False] * L
    outs, svals, new_u, new_v = [], [], [], []
    for l in range(L):
        W = as_matrix(weights[l], transposed[l])
        s, u, v = power_iteration_ref(W, us[l], None if vs is None else vs[l],
                                      semantics=semantics, num_iters=num_iters, eps=eps,
                                      training=training)
        outs.append(normalize_ref(weights[l], u, v, transposed[l]))
        svals.append(s)
        new_u.append(u)
        new_v.append(v)
    if training:
        _store(us, new_u)
        if semantics in _KEEPS_V:
            _store(vs, new_v)
    if return_scales:
        return outs, torch.stack(svals)
    return outs


@torch.no_grad()
def _store_scales(svs: Optional[Sequence[Tensor]], s: Tensor, training: bool) -> None:
    if svs and training:
        torch._foreach_copy_([b.view(-1) for b in svs], list(s.split(1)))


@torch.no_grad()
def _store(dst: Sequence[Tensor], src: Sequence[Tensor]) -> None:
    for d, s in zip(dst, src):
        d.copy_(s.reshape(d.shape))


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _validate(weights, us, vs, semantics, num_iters, eps, transposed):
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
    if isinstance(weights, Tensor) or not isinstance(weights, (list, tuple)):
        raise TypeError("weights must be a list of tensors")
    L = len(weights)
    if L == 0:
        raise ValueError("weights is empty: pass at least one weight")
    if len(us) != L:
        raise ValueError(f"got {L} weights but {len(us)} u vectors")
    if semantics in _KEEPS_V:
        if vs is None or len(vs) != L:
            raise ValueError(f"semantics={semantics!r} keeps v: pass {L} v vectors, got "
                             f"{'none' if vs is None else len(vs)}")
    if transposed is not None and len(transposed) != L:
        raise ValueError(f"got {L} weights but {len(transposed)} transposed flags")
    if int(num_iters) != num_iters or num_iters < 1:
        raise ValueError(f"num_iters must be a positive integer, got {num_iters}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    dev, dtype = weights[0].device, weights[0].dtype
    rows, cols = [], []
    for l, W in enumerate(weights):
        if not isinstance(W, Tensor) or W.dtype not in _FLOAT:
            raise TypeError(f"weight {l} must be a float16, bfloat16, float32 or float64 tensor")
        if W.device != dev or W.dtype != dtype:
            raise ValueError(f"weight {l} is {W.dtype} on {W.device} but weight 0 is {dtype} on "
                             f"{dev}: one group holds one device and one dtype")
        if W.dim() < 2:
            raise ValueError(f"weight {l} has shape {tuple(W.shape)}; spectral norm needs at least "
                             "2 dimensions")
        t = bool(transposed[l]) if transposed is not None else False
        R = W.shape[1] if t else W.shape[0]
        if R == 0 or W.numel() == 0:
            raise ValueError(f"weight {l} has shape {tuple(W.shape)}: it has zero rows or columns")
        rows.append(R)
        cols.append(W.numel() // R)
    for name, vecs, sizes in (("u", us, rows), ("v", vs, cols)):
        if vecs is None:
            continue
        for l, (x, n) in enumerate(zip(vecs, sizes)):
            if not isinstance(x, Tensor) or not x.is_floating_point():
                raise TypeError(f"{name} of layer {l} must be a floating tensor")
            if x.numel() != n:
                raise ValueError(f"{name} of layer {l} has {x.numel()} elements; weight {l} "
                                 f"{tuple(weights[l].shape)} needs {n}")
            if x.device != dev:
                raise ValueError(f"{name} of layer {l} is on {x.device} but the weights are on {dev}")
    return rows, cols


def _check_scales(s: Tensor) -> None:
    bad = ~(torch.isfinite(s) & (s != 0))
    if bool(bad.any()):
        l = int(bad.nonzero()[0])
        raise ValueError(f"the spectral norm of layer {l} came out {s[l].item()}: check its "
                         "weight (all zeros?) and its u and v vectors")


def _check_finite(weights, us, vs) -> None:
    """One device sync for the whole group; names the first bad tensor."""
    tensors = [("weight", l, W) for l, W in enumerate(weights)]
    tensors += [("u", l, u) for l, u in enumerate(us)]
    if vs is not None:
        tensors += [("v", l, v) for l, v in enumerate(vs)]
    bad = torch.stack([(~torch.isfinite(t.detach())).any() for _, _, t in tensors]).tolist()
    for (name, l, _), b in zip(tensors, bad):
        if b:
            raise ValueError(f"{name} of layer {l} contains a non-finite value (NaN or Inf)")


# ---------------------------------------------------------------------------
# Custom ops (Triton through torch.library; C++ through TORCH_LIBRARY) and dispatch.
# ---------------------------------------------------------------------------

_dispatch.register(_dispatch.OpSpec(
    name="spectral_norm",
    triton_module="spectral_norm",
    triton_dtypes=(torch.float16, torch.bfloat16, torch.float32),
    # Fastest first, from benchmarks/bench_spectral_norm.py (benchmarks/RESULTS.md): on an
    # H100 cuda won every case eager (less host work per call), triton most in graph time.
    auto_order={"cuda": ("cuda", "triton"), "cpu": ("cpu",)},
))


def _triton_kernels():
    mod, why = _ext.load_triton_kernels("spectral_norm")
    if mod is None:
        raise RuntimeError(why)
    return mod


def _power_fake(weights, u, v, num_iters, eps, mode):
    s = u.new_empty(len(weights))
    return s, torch.empty_like(u), u.new_empty(sum(W.numel() // W.shape[0] for W in weights))


def _normalize_fwd_fake(weights, u, v, s):
    return weights[0].new_empty(sum(W.numel() for W in weights))


def _normalize_bwd_fake(grad, weights, u, v, s):
    return torch.empty_like(grad)


@torch.library.custom_op("sgan_fast::spectral_norm_power_iteration_triton", mutates_args=())
def _power_triton(weights: list[Tensor], u: Tensor, v: Tensor, num_iters: int, eps: float,
                  mode: int) -> tuple[Tensor, Tensor, Tensor]:
    with _dispatch.on_device(u):
        return tuple(_triton_kernels().power_iteration(weights, u, v, num_iters, eps, mode))


@torch.library.custom_op("sgan_fast::spectral_norm_normalize_fwd_triton", mutates_args=())
def _normalize_fwd_triton(weights: list[Tensor], u: Tensor, v: Tensor, s: Tensor) -> Tensor:
    with _dispatch.on_device(u):
        return _triton_kernels().normalize_fwd(weights, s)


@torch.library.custom_op("sgan_fast::spectral_norm_normalize_bwd_triton", mutates_args=())
def _normalize_bwd_triton(grad: Tensor, weights: list[Tensor], u: Tensor, v: Tensor,
                          s: Tensor) -> Tensor:
    with _dispatch.on_device(u):
        return _triton_kernels().normalize_bwd(grad, weights, u, v, s)


def _register_normalize_autograd(fwd_name: str, bwd) -> None:
    def setup_context(ctx, inputs, output):
        weights, u, v, s = inputs
        ctx.save_for_backward(u, v, s, *weights)
        ctx.shapes = [W.shape for W in weights]

    @_dispatch.outside_autocast   # a backward called inside an autocast region too
    def backward(ctx, grad):
        u, v, s, *weights = ctx.saved_tensors
        flat = bwd(grad.contiguous(), weights, u, v, s)
        grads = [g.view(shape) for g, shape in
                 zip(flat.split([W.numel() for W in weights]), ctx.shapes)]
        return grads, None, None, None

    torch.library.register_autograd(fwd_name, backward, setup_context=setup_context)


_power_triton.register_fake(_power_fake)
_normalize_fwd_triton.register_fake(_normalize_fwd_fake)
_normalize_bwd_triton.register_fake(_normalize_bwd_fake)
_register_normalize_autograd("sgan_fast::spectral_norm_normalize_fwd_triton", _normalize_bwd_triton)


def _register_compiled_ops():
    ns = torch.ops.sgan_fast
    torch.library.register_fake("sgan_fast::spectral_norm_power_iteration")(_power_fake)
    torch.library.register_fake("sgan_fast::spectral_norm_normalize_fwd")(_normalize_fwd_fake)
    torch.library.register_fake("sgan_fast::spectral_norm_normalize_bwd")(_normalize_bwd_fake)
    _register_normalize_autograd("sgan_fast::spectral_norm_normalize_fwd",
                                 ns.spectral_norm_normalize_bwd)
    return (ns.spectral_norm_power_iteration, ns.spectral_norm_normalize_fwd)


_CPP_OPS = _register_compiled_ops() if _ext.C is not None else None
_TRITON_OPS = (torch.ops.sgan_fast.spectral_norm_power_iteration_triton,
               torch.ops.sgan_fast.spectral_norm_normalize_fwd_triton)


def _ops(impl: str):
    if impl == "triton":
        return _TRITON_OPS
    if _CPP_OPS is None:
        raise RuntimeError(_ext.C_ERROR)
    return _CPP_OPS


# ---------------------------------------------------------------------------
# The public functions.
# ---------------------------------------------------------------------------

def _matrices(weights, transposed):
    """Contiguous matrices for the kernels. Only ConvTranspose (torch semantics) and
    non-contiguous (e.g. channels_last) weights cost a copy, with autograd through it."""
    out = []
    for l, W in enumerate(weights):
        t = bool(transposed[l]) if transposed is not None else False
        M = W.transpose(0, 1) if t else W
        out.append(M.contiguous() if not M.is_contiguous() else M)
    return out


def _flat(vectors, acc):
    return torch.cat([x.detach().reshape(-1).to(acc) for x in vectors])


def sn_power_iteration(weights: Sequence[Tensor], us: Sequence[Tensor],
                       vs: Optional[Sequence[Tensor]] = None, *, semantics: str = "biggan",
                       num_iters: int = 1, eps: float = 1e-12, training: bool = True,
                       transposed: Optional[Sequence[bool]] = None, impl: str = "auto",
                       check: bool = True) -> SNVectors:
    """Power iteration for every layer at once; returns s and the vectors (see the module
    docstring). In training mode the new u (and, for the torch semantics, v) are written into
    `us` (and `vs`) in place."""
    rows, cols = _validate(weights, us, vs, semantics, num_iters, eps, transposed)
    return _power_iteration(weights, _matrices(weights, transposed), us, vs, rows, cols,
                            semantics, num_iters, eps, training, impl, check)


def _power_iteration(weights, mats, us, vs, rows, cols, semantics, num_iters, eps, training,
                     impl, check) -> SNVectors:
    compiling = torch.compiler.is_compiling()
    if check and not compiling:
        _check_finite(weights, us, vs)
    dev, dtype = weights[0].device, weights[0].dtype
    acc = acc_dtype(dtype)
    chosen = _dispatch.resolve("spectral_norm", impl, dev, dtype)
    with torch.no_grad():
        mats = [m.detach() for m in mats]
        if chosen == "ref":
            res = [power_iteration_ref(m.reshape(m.shape[0], -1), us[l],
                                       None if vs is None else vs[l], semantics=semantics,
                                       num_iters=num_iters, eps=eps, training=training)
                   for l, m in enumerate(mats)]
            s = torch.stack([r[0] for r in res])
            u = torch.cat([r[1] for r in res])
            v = torch.cat([r[2] for r in res])
        else:
            u_in = _flat(us, acc)
            v_in = _flat(vs, acc) if semantics in _KEEPS_V else u_in.new_empty(0)
            steps = int(num_iters) if training else 1  # see the module docstring
            s, u, v = _ops(chosen)[0](mats, u_in, v_in, steps, float(eps),
                                      _MODE[(semantics, bool(training))])
        if check and not compiling:
            _check_scales(s)
        if training:
            torch._foreach_copy_([x.view(-1) for x in us], list(u.split(rows)))
            if semantics in _KEEPS_V:
                torch._foreach_copy_([x.view(-1) for x in vs], list(v.split(cols)))
    return SNVectors(s, u, v, tuple(rows), tuple(cols))


def sn_normalize(weights: Sequence[Tensor], vec: SNVectors, *,
                 transposed: Optional[Sequence[bool]] = None, impl: str = "auto") -> list[Tensor]:
    """W_l / s_l for every layer in one launch, differentiable in the weights (with the term
    through s). `vec` comes from sn_power_iteration on the same weights."""
    L = len(weights)
    if len(vec.rows) != L:
        raise ValueError(f"got {L} weights but vectors for {len(vec.rows)} layers")
    dev, dtype = weights[0].device, weights[0].dtype
    chosen = _dispatch.resolve("spectral_norm", impl, dev, dtype)
    if chosen == "ref":
        return [normalize_ref(W, u, v, bool(transposed[l]) if transposed else False)
                for l, (W, u, v) in enumerate(zip(weights, vec.u_list(), vec.v_list()))]
    return _normalize(_matrices(weights, transposed), vec, transposed, chosen)


def _normalize(mats, vec: SNVectors, transposed, chosen: str) -> list[Tensor]:
    flat = _ops(chosen)[1](mats, vec.u, vec.v, vec.s)
    outs = []
    for l, (piece, M) in enumerate(zip(flat.split([M.numel() for M in mats]), mats)):
        out = piece.view(M.shape)
        if transposed is not None and transposed[l]:
            out = out.transpose(0, 1)
        outs.append(out)
    return outs


# The public C++ op (csrc/spectral_norm_autograd.cpp): per-layer checks, flattening, the
# buffer update and autograd in C++, one dispatcher call for a whole group. Used outside
# torch.compile; a compiled model traces the backend ops above instead.
_PUBLIC_OP = torch.ops.sgan_fast.spectral_norm_grouped.default if _ext.C is not None else None


def _public_op_args(weights, us, vs, svs, semantics, num_iters, eps, training, transposed, impl):
    """The trailing arguments of the public C++ ops, or None when this call is for the
    Python path (a reference or Triton implementation, torch.compile tracing, or arguments
    the Python validation should name)."""
    if (_PUBLIC_OP is None or not isinstance(weights, (list, tuple)) or not weights
            or not isinstance(weights[0], Tensor) or torch.compiler.is_compiling()):
        return None
    chosen = _dispatch.resolve("spectral_norm", impl, weights[0].device, weights[0].dtype)
    if chosen != "cpu" and chosen != "cuda":
        return None
    mode = _MODE.get((semantics, bool(training)))
    keeps_v = semantics in _KEEPS_V
    if (mode is None or (keeps_v and (vs is None or len(vs) != len(weights)))
            or isinstance(num_iters, bool) or int(num_iters) != num_iters or num_iters < 1):
        return None
    flags = [] if transposed is None else [1 if t else 0 for t in transposed]
    return ((vs if keeps_v else []), (svs if (svs is not None and training) else []), flags,
            int(num_iters), float(eps), mode, bool(training))


@_dispatch.outside_autocast
def spectral_norm_grouped(weights: Sequence[Tensor], us: Sequence[Tensor],
                          vs: Optional[Sequence[Tensor]] = None, *, semantics: str = "biggan",
                          num_iters: int = 1, eps: float = 1e-12, training: bool = True,
                          transposed: Optional[Sequence[bool]] = None, impl: str = "auto",
                          check: bool = True, return_scales: bool = False,
                          svs: Optional[Sequence[Tensor]] = None):
    """Spectrally normalised weights W_l / s_l of a whole group of layers.

    Args:
        weights: L tensors of any shapes with at least 2 dims, one device and dtype (float16,
            bfloat16, float32, float64), read as matrices [shape[0], -1].
        us: L left vectors (R_l elements each, any shape, e.g. BigGAN's [1, R]).
        vs: L right vectors (C_l elements), required for the torch semantics, unused for "biggan".
        semantics: "biggan", "torch" or "torch_legacy" (see the module docstring).
        num_iters: power-iteration steps per call. eps: as in F.normalize.
        training: update us (and vs) in place; for the torch semantics, also whether to iterate at all.
        transposed: per layer, whether the matrix is W with dims 0 and 1 swapped (ConvTranspose
            under torch's semantics).
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton".
        check: data-dependent checks (finite inputs, finite non-zero s); one sync each.
        return_scales: also return s [L] (detached, float32; float64 for float64 weights).
        svs: optional L one-element buffers that receive s_l in training mode (BigGAN's sv0).

    With the "cpu" and "cuda" implementations the whole call (checks, the buffer update, the
    normalised weights and their autograd) is one C++ op: its host cost hardly grows with L.
    """
    if svs is not None and len(svs) != len(weights):
        raise ValueError(f"got {len(weights)} weights but {len(svs)} singular-value buffers")
    fast = _public_op_args(weights, us, vs, svs, semantics, num_iters, eps, training, transposed,
                           impl)
    if fast is not None:
        outs, s = _PUBLIC_OP(weights, us, *fast[:2], fast[2], *fast[3:], check)
        return (outs, s) if return_scales else outs
    rows, cols = _validate(weights, us, vs, semantics, num_iters, eps, transposed)
    if _dispatch.resolve("spectral_norm", impl, weights[0].device, weights[0].dtype) == "ref":
        checking = check and not torch.compiler.is_compiling()
        if checking:
            _check_finite(weights, us, vs)
        outs, s = spectral_norm_grouped_ref(weights, us, vs, semantics=semantics,
                                            num_iters=num_iters, eps=eps, training=training,
                                            transposed=transposed, return_scales=True)
        if checking:
            _check_scales(s)
        _store_scales(svs, s, training)
        return (outs, s) if return_scales else outs
    # One contiguous matrix per layer, shared by both steps: a ConvTranspose or channels_last
    # weight is copied once per call.
    mats = _matrices(weights, transposed)
    vec = _power_iteration(weights, mats, us, vs, rows, cols, semantics, num_iters, eps, training,
                           impl, check)
    chosen = _dispatch.resolve("spectral_norm", impl, weights[0].device, weights[0].dtype)
    outs = _normalize(mats, vec, transposed, chosen)
    _store_scales(svs, vec.s, training)
    if return_scales:
        return outs, vec.s
    return outs
