"""Reference (specification) of the soft-label projection head, in plain torch.

The projection discriminator's head with soft labels (Miyato & Koyama 2018;
Softlabel-GAN, WACV 2024):

    out[b] = <h_b, w> / s_w + bias + sum_c P[b, c] * <E[c], h_b> / s_E

with spectral norms taken from power-iteration vectors as in BigGAN-PyTorch's
SN layers, u and v being constants (so the gradient does flow through s):

    s_E = u_E^T E v_E            E [C, F], u_E [C], v_E [F]
    s_w = u_w[0] * <w, v_w>      w [F] (a 1 x F matrix), u_w [1], v_w [F]

Labels come in three forms, all meaning a class-probability matrix P:
    dense  P [B, C] floating
    top-k  (indices [B, K] int64, values [B, K] floating): P[b, idx[b, k]] += val[b, k]
    hard   y [B] int64: P = one_hot(y)

Computation is in float32 for half inputs (float64 for float64 inputs); the
output has h's dtype. These functions are what every fast implementation is
tested against; they are written for clarity, not speed.
"""

from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def spectral_scales_ref(E, w, u_E, v_E, u_w, v_w):
    """(s_E, s_w) as 0-dim tensors in the accumulation dtype; differentiable in E, w."""
    acc = acc_dtype(E.dtype)
    s_E = u_E.detach().to(acc) @ E.to(acc) @ v_E.detach().to(acc)
    s_w = u_w.detach().to(acc).reshape(()) * (w.to(acc) @ v_w.detach().to(acc))
    return s_E, s_w


def class_term_ref(h, labels, E):
    """sum_c P[b, c] <E[c], h_b> for each b, in the accumulation dtype, shape [B]."""
    acc = acc_dtype(h.dtype)
    hf, Ef = h.to(acc), E.to(acc)
    if isinstance(labels, (tuple, list)):
        idx, val = labels
        per_k = (Ef[idx] * hf.unsqueeze(1)).sum(-1)  # [B, K]
        return (val.to(acc) * per_k).sum(1)
    if labels.dtype == torch.int64:
        return (Ef[labels] * hf).sum(1)
    return ((labels.to(acc) @ Ef) * hf).sum(1)


def softlabel_proj_ref(h, labels, E, w, bias, u_E, v_E, u_w, v_w, *, return_scales=False):
    """The specification. See the module docstring for the meaning of every argument.

    With return_scales=True also returns s = [s_E, s_w] (detached, accumulation dtype).
    """
    acc = acc_dtype(h.dtype)
    s_E, s_w = spectral_scales_ref(E, w, u_E, v_E, u_w, v_w)
    linear = (h.to(acc) @ w.to(acc)) / s_w
    if bias is not None:
        linear = linear + bias.to(acc).reshape(())
    out = (linear + class_term_ref(h, labels, E) / s_E).to(h.dtype)
    if return_scales:
        return out, torch.stack([s_E, s_w]).detach()
    return out


# ---------------------------------------------------------------------------
# The public op: validation, dispatch, custom ops and autograd.
# ---------------------------------------------------------------------------

from typing import Optional, Sequence, Union  # noqa: E402

from torch import Tensor  # noqa: E402

from .. import _ext  # noqa: E402
from . import _dispatch  # noqa: E402
from .bank_lookup import BankLabels, bank_lookup_ref, check_indices  # noqa: E402

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

Labels = Union[Tensor, Sequence[Tensor]]

_dispatch.register(_dispatch.OpSpec(
    name="softlabel_proj",
    triton_module="softlabel_proj",
    triton_dtypes=(torch.float16, torch.bfloat16, torch.float32),
    # Fastest first, as measured in benchmarks/bench_softlabel_proj.py (benchmarks/RESULTS.md):
    # in eager mode the CUDA C++ path won all 108 bf16 cases on an H100 (less host work per
    # call); in CUDA-graph (GPU-only) time Triton won 70 of them, mostly top-k.
    auto_order={"cuda": ("cuda", "triton"), "cpu": ("cpu",)},
))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _need_float(name: str, t: Tensor) -> None:
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {_dtype_name(t.dtype)}; expected float16, bfloat16, "
                        "float32 or float64")


def _need_shape(name: str, t: Tensor, shape: tuple, meaning: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {tuple(shape)} ({meaning})")


def _classify_labels(labels: Labels, B: int, C: int, device: torch.device):
    """("dense", P) | ("topk", idx, val) | ("hard", y) | ("bank", BankLabels), with shapes,
    dtypes and device checked."""
    if isinstance(labels, BankLabels):
        plan, sel = labels.plan, labels.indices
        if plan.num_classes != C:
            raise ValueError(f"the soft-label bank has C={plan.num_classes} classes but E has {C} rows")
        if plan.device != device:
            raise ValueError(f"the soft-label bank is on {plan.device} but h is on {device}")
        if not isinstance(sel, Tensor) or tuple(sel.shape) != (B,):
            shape = tuple(sel.shape) if isinstance(sel, Tensor) else type(sel).__name__
            raise ValueError(f"bank indices have shape {shape}; expected [B={B}] dataset indices")
        return ("bank", labels)
    if isinstance(labels, Tensor):
        if labels.device != device:
            raise ValueError(f"labels is on {labels.device} but h is on {device}")
        if labels.is_floating_point():
            _need_float("labels (dense class probabilities P)", labels)
            _need_shape("labels (dense class probabilities P)", labels, (B, C), "[B, C]")
            return ("dense", labels)
        if labels.dtype == torch.int64:
            _need_shape("labels (hard class indices y)", labels, (B,), "[B]")
            return ("hard", labels)
        raise TypeError(f"labels has dtype {_dtype_name(labels.dtype)}: pass float probabilities "
                        "[B, C], int64 class indices [B] (use .long()), or a tuple (indices, values)")
    if isinstance(labels, (tuple, list)) and len(labels) == 2:
        idx, val = labels
        if not isinstance(idx, Tensor) or not isinstance(val, Tensor):
            raise TypeError("top-k labels must be a tuple of two tensors (indices [B, K], values [B, K])")
        if idx.dtype != torch.int64:
            raise TypeError(f"top-k label indices have dtype {_dtype_name(idx.dtype)}; expected int64")
        _need_float("top-k label values", val)
        if idx.dim() != 2 or idx.shape[0] != B or idx.shape[1] < 1:
            raise ValueError(f"top-k label indices have shape {tuple(idx.shape)}; expected [B={B}, K] "
                             "with K >= 1")
        _need_shape("top-k label values", val, tuple(idx.shape), "the shape of the indices [B, K]")
        for name, t in (("top-k label indices", idx), ("top-k label values", val)):
            if t.device != device:
                raise ValueError(f"{name} are on {t.device} but h is on {device}")
        return ("topk", idx, val)
    raise TypeError(f"labels must be a tensor ([B, C] probabilities or [B] int64 classes), a "
                    f"tuple (indices [B, K], values [B, K]) or BankLabels (bank.labels(indices, "
                    f"target)); got {type(labels).__name__}")


def _first_bad(mask: Tensor) -> str:
    pos = tuple(int(i) for i in mask.nonzero()[0].tolist())
    return "[" + ", ".join(str(i) for i in pos) + "]"


def _check_values(form, lab, C, vectors) -> None:
    """Data-dependent checks (one device sync): index range, finite P and SN vectors."""
    flags = []
    if form in ("topk", "hard"):
        idx = lab[0]
        flags.append(((idx < 0) | (idx >= C)).any())
    if form in ("dense", "topk"):
        flags.append((~torch.isfinite(lab[-1])).any())
    for _, v in vectors:
        flags.append((~torch.isfinite(v)).any())
    bad = torch.stack(flags).tolist()  # bank labels: validated when the bank was built
    k = 0
    if form in ("topk", "hard"):
        if bad[k]:
            idx = lab[0]
            m = (idx < 0) | (idx >= C)
            where = _first_bad(m)
            value = int(idx[m][0])
            what = "top-k label index" if form == "topk" else "label y"
            raise IndexError(f"{what} at {where} is {value}, outside [0, C={C})")
        k += 1
    if form in ("dense", "topk"):
        if bad[k]:
            name = "labels (dense P)" if form == "dense" else "top-k label values"
            raise ValueError(f"{name} contain a non-finite value at {_first_bad(~torch.isfinite(lab[-1]))}")
        k += 1
    for (name, v), b in zip(vectors, bad[k:]):
        if b:
            raise ValueError(f"{name} contains a non-finite value at {_first_bad(~torch.isfinite(v))}")


def _validate(h, labels, E, w, bias, u_E, v_E, u_w, v_w):
    if not isinstance(h, Tensor):
        raise TypeError(f"h must be a tensor, got {type(h).__name__}")
    _need_float("h", h)
    if h.dim() != 2:
        raise ValueError(f"h has shape {tuple(h.shape)}; expected [B, F] pooled features")
    B, F = h.shape
    if B < 1 or F < 1:
        raise ValueError(f"h has shape {tuple(h.shape)}; B and F must be at least 1")
    dev = h.device
    named = [("E", E), ("w", w), ("u_E", u_E), ("v_E", v_E), ("u_w", u_w), ("v_w", v_w)]
    if bias is not None:
        named.append(("bias", bias))
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        _need_float(name, t)
        if t.device != dev:
            raise ValueError(f"{name} is on {t.device} but h is on {dev}")
    if E.dim() != 2 or E.shape[1] != F or E.shape[0] < 1:
        raise ValueError(f"E has shape {tuple(E.shape)}; expected [C, F={F}] (F from h)")
    C = E.shape[0]
    _need_shape("w", w, (F,), "[F], the weight of the linear term")
    if bias is not None and bias.numel() != 1:
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected one element")
    _need_shape("u_E", u_E, (C,), "[C], left power-iteration vector of E [C, F]")
    _need_shape("v_E", v_E, (F,), "[F], right power-iteration vector of E [C, F]")
    if u_w.numel() != 1:
        raise ValueError(f"u_w has shape {tuple(u_w.shape)}; expected one element (w is a 1 x F matrix)")
    _need_shape("v_w", v_w, (F,), "[F], right power-iteration vector of w")
    form = _classify_labels(labels, B, C, dev)
    return form, B, C, F


# --- custom ops -------------------------------------------------------------------------------

def _fwd_fake(h, *args):  # the trailing label-source arguments do not change the shapes
    acc = acc_dtype(h.dtype)
    B = h.shape[0]
    return h.new_empty(B), h.new_empty(2, dtype=acc), h.new_empty(2, B, dtype=acc)


def _bwd_dense_fake(g, h, P, E, w, u_E, v_E, u_w, v_w, s, raw, need_grad_P, *src):
    grad_P = torch.empty_like(P) if need_grad_P else P.new_empty(0)
    return torch.empty_like(h), grad_P, torch.empty_like(E), torch.empty_like(w), w.new_empty(1)


def _bwd_topk_fake(g, h, idx, val, E, w, u_E, v_E, u_w, v_w, s, raw, *src):
    return torch.empty_like(h), torch.empty_like(E), torch.empty_like(w), w.new_empty(1)


def _triton_kernels():
    mod, why = _ext.load_triton_kernels("softlabel_proj")
    if mod is None:
        raise RuntimeError(why)
    return mod


@torch.library.custom_op("sgan_fast::softlabel_proj_fwd_dense_triton", mutates_args=())
def _fwd_dense_triton(h: Tensor, P: Tensor, E: Tensor, w: Tensor, bias: Tensor, u_E: Tensor,
                      v_E: Tensor, u_w: Tensor, v_w: Tensor, sel: Tensor, cls: Tensor, mode: int,
                      alpha: float, beta: float, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    with _dispatch.on_device(h):
        return tuple(_triton_kernels().fwd_dense(h, P, E, w, bias, u_E, v_E, u_w, v_w, sel, cls,
                                                 mode, alpha, beta, gamma))


@torch.library.custom_op("sgan_fast::softlabel_proj_fwd_topk_triton", mutates_args=())
def _fwd_topk_triton(h: Tensor, idx: Tensor, val: Tensor, E: Tensor, w: Tensor, bias: Tensor,
                     u_E: Tensor, v_E: Tensor, u_w: Tensor, v_w: Tensor, sel: Tensor, cls: Tensor,
                     mode: int, alpha: float, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    with _dispatch.on_device(h):
        return tuple(_triton_kernels().fwd_topk(h, idx, val, E, w, bias, u_E, v_E, u_w, v_w, sel,
                                                cls, mode, alpha, beta))


@torch.library.custom_op("sgan_fast::softlabel_proj_bwd_dense_triton", mutates_args=())
def _bwd_dense_triton(g: Tensor, h: Tensor, P: Tensor, E: Tensor, w: Tensor, u_E: Tensor,
                      v_E: Tensor, u_w: Tensor, v_w: Tensor, s: Tensor, raw: Tensor,
                      need_grad_P: bool, sel: Tensor, cls: Tensor, mode: int, alpha: float,
                      beta: float, gamma: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    with _dispatch.on_device(h):
        return tuple(_triton_kernels().bwd_dense(g, h, P, E, w, u_E, v_E, u_w, v_w, s, raw,
                                                 need_grad_P, sel, cls, mode, alpha, beta, gamma))


@torch.library.custom_op("sgan_fast::softlabel_proj_bwd_topk_triton", mutates_args=())
def _bwd_topk_triton(g: Tensor, h: Tensor, idx: Tensor, val: Tensor, E: Tensor, w: Tensor,
                     u_E: Tensor, v_E: Tensor, u_w: Tensor, v_w: Tensor, s: Tensor,
                     raw: Tensor, sel: Tensor, cls: Tensor, mode: int, alpha: float,
                     beta: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    with _dispatch.on_device(h):
        return tuple(_triton_kernels().bwd_topk(g, h, idx, val, E, w, u_E, v_E, u_w, v_w, s, raw,
                                                sel, cls, mode, alpha, beta))


def _register_autograd(fwd_name: str, bwd, form: str) -> None:
    """Backward of a forward op through its backward op (u, v are constants; values of
    top-k labels and bank tables get no gradient). The trailing label-source arguments
    (sel, cls, mode, alpha, beta[, gamma]) go to the backward unchanged."""
    n_lab = 1 if form == "dense" else 2  # P | idx, val

    def setup_context(ctx, inputs, output):
        _, s, raw = output
        h = inputs[0]
        labs = inputs[1:1 + n_lab]
        E, w, _bias, u_E, v_E, u_w, v_w = inputs[1 + n_lab:8 + n_lab]
        sel, cls = inputs[8 + n_lab:10 + n_lab]
        ctx.src = tuple(inputs[10 + n_lab:])
        ctx.save_for_backward(h, *labs, E, w, u_E, v_E, u_w, v_w, s, raw, sel, cls)

    @_dispatch.outside_autocast   # a backward called inside an autocast region too
    def backward(ctx, grad_out, _grad_s, _grad_raw):
        g = grad_out.contiguous()
        h, *rest = ctx.saved_tensors
        labs, (E, w, u_E, v_E, u_w, v_w, s, raw, sel, cls) = rest[:n_lab], rest[n_lab:]
        n_src = 2 + len(ctx.src)
        none_src = (None,) * n_src
        if form == "dense":
            need_P = bool(ctx.needs_input_grad[1])
            gh, gP, gE, gw, gb = bwd(g, h, *labs, E, w, u_E, v_E, u_w, v_w, s, raw, need_P, sel,
                                     cls, *ctx.src)
            return (gh, (gP if need_P else None), gE, gw, gb, None, None, None, None) + none_src
        gh, gE, gw, gb = bwd(g, h, *labs, E, w, u_E, v_E, u_w, v_w, s, raw, sel, cls, *ctx.src)
        return (gh, None, None, gE, gw, gb, None, None, None, None) + none_src

    torch.library.register_autograd(fwd_name, backward, setup_context=setup_context)


_register_autograd("sgan_fast::softlabel_proj_fwd_dense_triton", _bwd_dense_triton, "dense")
_register_autograd("sgan_fast::softlabel_proj_fwd_topk_triton", _bwd_topk_triton, "topk")
for _op, _fake in ((_fwd_dense_triton, _fwd_fake), (_fwd_topk_triton, _fwd_fake),
                   (_bwd_dense_triton, _bwd_dense_fake), (_bwd_topk_triton, _bwd_topk_fake)):
    _op.register_fake(_fake)


def _register_compiled_ops():
    """The C++ ops (CPU kernels, and CUDA kernels when built with CUDA), with fake
    implementations and autograd registered; done once, at import."""
    ns = torch.ops.sgan_fast
    torch.library.register_fake("sgan_fast::softlabel_proj_fwd_dense")(_fwd_fake)
    torch.library.register_fake("sgan_fast::softlabel_proj_fwd_topk")(_fwd_fake)
    torch.library.register_fake("sgan_fast::softlabel_proj_bwd_dense")(_bwd_dense_fake)
    torch.library.register_fake("sgan_fast::softlabel_proj_bwd_topk")(_bwd_topk_fake)
    _register_autograd("sgan_fast::softlabel_proj_fwd_dense", ns.softlabel_proj_bwd_dense, "dense")
    _register_autograd("sgan_fast::softlabel_proj_fwd_topk", ns.softlabel_proj_bwd_topk, "topk")
    return {"dense": ns.softlabel_proj_fwd_dense, "topk": ns.softlabel_proj_fwd_topk}


_CPP_OPS = _register_compiled_ops() if _ext.C is not None else None
_TRITON_OPS = {"dense": torch.ops.sgan_fast.softlabel_proj_fwd_dense_triton,
               "topk": torch.ops.sgan_fast.softlabel_proj_fwd_topk_triton}


# The public C++ op (csrc/softlabel_proj_autograd.cpp): checks, casts and autograd in C++, so an
# eager call is one dispatcher call per direction. Used outside torch.compile; a compiled model
# traces the backend ops below instead (their fake kernels and autograd are registered above).
_PUBLIC_OP = torch.ops.sgan_fast.softlabel_proj.default if _ext.C is not None else None
_NO_INDEX: dict = {}  # device -> an empty int64 tensor (the unused bank-source arguments)


def _no_index(device: torch.device) -> Tensor:
    t = _NO_INDEX.get(device)
    if t is None:
        t = _NO_INDEX[device] = torch.empty(0, dtype=torch.int64, device=device)
    return t


def _public_op_args(h: Tensor, labels, num_classes: int, check: bool):
    """(labels, values, sel, cls, form, mode, alpha, beta, gamma) for the public op, or None
    when `labels` is of no form it takes (the Python validation then names the problem)."""
    if isinstance(labels, Tensor):
        empty = _no_index(h.device)
        form = 0 if labels.is_floating_point() else 2
        return labels, empty, empty, empty, form, 0, 1.0, 0.0, 0.0
    if isinstance(labels, BankLabels):
        plan = labels.plan
        if plan.num_classes != num_classes or plan.device != h.device:
            return None
        sel = labels.indices
        if not isinstance(sel, Tensor) or sel.dim() != 1 or sel.shape[0] != h.shape[0]:
            return None
        sel = check_indices(plan, sel, check=check)
        tabs = plan.tables(h.dtype)
        if plan.form == "dense":
            return (tabs[0], _no_index(h.device), sel, plan.classes, 0, plan.mode,
                    float(plan.alpha), float(plan.beta), float(plan.gamma))
        return (tabs[0], tabs[1], sel, plan.classes, 1, plan.mode, float(plan.alpha),
                float(plan.beta), 0.0)
    if isinstance(labels, (tuple, list)) and len(labels) == 2:
        idx, val = labels
        if isinstance(idx, Tensor) and isinstance(val, Tensor):
            empty = _no_index(h.device)
            return idx, val, empty, empty, 1, 0, 1.0, 0.0, 0.0
    return None


def _plain_src(h: Tensor):
    """Label-source arguments of the plain op (mode 0: batch row b reads label row b)."""
    empty = h.new_empty(0, dtype=torch.int64)
    return (empty, empty, 0, 1.0, 0.0)


def _fwd_op(impl: str, form: str):
    if impl == "triton":
        return _TRITON_OPS[form]
    if _CPP_OPS is None:
        raise RuntimeError(_ext.C_ERROR)
    return _CPP_OPS[form]


@_dispatch.outside_autocast
def softlabel_proj(h: Tensor, labels: Labels, E: Tensor, w: Tensor, bias: Optional[Tensor],
                   u_E: Tensor, v_E: Tensor, u_w: Tensor, v_w: Tensor, *, impl: str = "auto",
                   check: bool = True, return_scales: bool = False):
    """Fused soft-label projection head of a projection discriminator.

        out[b] = <h_b, w> / s_w + bias + sum_c P[b, c] <E[c], h_b> / s_E

    Args:
        h: pooled features [B, F].
        labels: dense class probabilities P [B, C] (floating; gets a gradient when it
            requires one), top-k labels as a tuple (indices [B, K] int64, values [B, K]),
            hard labels y [B] int64, or BankLabels (bank.labels(indices, target)): the
            targets of a soft-label bank read inside the kernels, never written as [B, C].
        E: class embedding [C, F]. w: weight of the linear term [F]. bias: one element or None.
        u_E [C], v_E [F]: power-iteration vectors of E, s_E = u_E^T E v_E.
        u_w [1], v_w [F]: power-iteration vectors of w, s_w = u_w * <w, v_w>.
            The vectors are constants; the gradient flows through s into E and w.
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton".
        check: run the data-dependent checks (label range, finite P and vectors, finite
            non-zero s). They synchronise with the GPU; turn off in tuned loops. Skipped
            while torch.compile traces. Kernels never access memory out of bounds either way.
        return_scales: also return s = [s_E, s_w] (detached, float32; float64 for float64 h).

    The computation dtype is h's dtype (other floating inputs are cast to it, with
    autograd); sums accumulate in float32 (float64 for float64). Returns out [B] in h's dtype.
    """
    if _PUBLIC_OP is not None and isinstance(h, Tensor) and not torch.compiler.is_compiling():
        chosen = _dispatch.resolve("softlabel_proj", impl, h.device, h.dtype)
        if chosen == "cpu" or chosen == "cuda":
            C = E.shape[0] if isinstance(E, Tensor) and E.dim() == 2 else -1
            call = _public_op_args(h, labels, C, check)
            if call is not None:
                lab, val, sel, cls, form, mode, alpha, beta, gamma = call
                out, s = _PUBLIC_OP(h, lab, val, E, w, bias, u_E, v_E, u_w, v_w, sel, cls, form,
                                    mode, alpha, beta, gamma, check)
                return (out, s) if return_scales else out
    form_and_labels = _validate(h, labels, E, w, bias, u_E, v_E, u_w, v_w)
    (form, *lab), B, C, F = form_and_labels
    dtype, acc = h.dtype, acc_dtype(h.dtype)
    compiling = torch.compiler.is_compiling()
    vectors = [("u_E", u_E), ("v_E", v_E), ("u_w", u_w), ("v_w", v_w)]
    if form == "bank":
        sel = check_indices(lab[0].plan, lab[0].indices, check=check)
    if check and not compiling:
        _check_values(form, lab, C, vectors)

    chosen = _dispatch.resolve("softlabel_proj", impl, h.device, dtype)
    if chosen == "ref":
        if form == "bank":
            labels = bank_lookup_ref(lab[0].plan, sel, acc)
        out, s = softlabel_proj_ref(h, labels, E, w, bias, u_E, v_E, u_w, v_w, return_scales=True)
    else:
        if form == "topk" and lab[1].requires_grad and torch.is_grad_enabled():
            raise ValueError("top-k label values do not get gradients from the fused kernels; "
                             "detach them, pass dense labels, or use impl='ref'")

        def prep(t):
            return t.to(dtype).contiguous()

        def vec(t, n):
            return t.detach().to(acc).reshape(n).contiguous()

        if bias is None:
            bias = torch.zeros(1, dtype=dtype, device=h.device)
        args = (prep(E), prep(w), prep(bias.reshape(1)), vec(u_E, C), vec(v_E, F), vec(u_w, 1),
                vec(v_w, F))
        if form == "bank":
            plan = lab[0].plan
            src = (sel, plan.classes, plan.mode, float(plan.alpha), float(plan.beta))
            tabs = plan.tables(dtype)
            if plan.form == "dense":
                out, s, _ = _fwd_op(chosen, "dense")(prep(h), tabs[0], *args, *src,
                                                     float(plan.gamma))
            else:
                out, s, _ = _fwd_op(chosen, "topk")(prep(h), *tabs, *args, *src)
        elif form == "dense":
            out, s, _ = _fwd_op(chosen, "dense")(prep(h), prep(lab[0]), *args, *_plain_src(h),
                                                 0.0)
        else:
            if form == "hard":
                idx = lab[0].reshape(B, 1).contiguous()
                val = torch.ones(B, 1, dtype=dtype, device=h.device)
            else:
                idx, val = lab[0].contiguous(), prep(lab[1].detach())
            out, s, _ = _fwd_op(chosen, "topk")(prep(h), idx, val, *args, *_plain_src(h))
    if check and not compiling:
        if not bool((torch.isfinite(s) & (s != 0)).all()):
            s_E, s_w = s.tolist()
            raise ValueError(f"spectral norms must be finite and non-zero, got s_E={s_E}, s_w={s_w}: "
                             "check E, w and their power-iteration vectors")
    if return_scales:
        return out, s.detach()
    return out
