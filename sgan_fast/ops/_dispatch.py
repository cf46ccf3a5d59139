"""Choosing an implementation: "auto" | "ref" | "cpu" | "cuda" | "triton".

"auto" takes the first available implementation from the op's order for the
tensors' device (the order comes from benchmarks/RESULTS.md) and falls back to
"ref" with one warning per (op, device type). An explicit implementation that
cannot run raises, saying why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings

import torch

from .. import _ext

IMPLS = ("ref", "cpu", "cuda", "triton")


@dataclasses.dataclass(frozen=True)
class OpSpec:
    name: str
    triton_module: str
    triton_dtypes: tuple[torch.dtype, ...]
    auto_order: dict[str, tuple[str, ...]]  # device type -> implementations, fastest first


_OPS: dict[str, OpSpec] = {}
_warned: set[tuple[str, str]] = set()
_resolved: dict = {}  # (op, impl, device type, dtype) -> implementation; a per-call saving


def register(spec: OpSpec) -> OpSpec:
    """Registers an op and imports its Triton kernels now, so that dispatch while
    torch.compile traces only reads what was found."""
    _OPS[spec.name] = spec
    _ext.load_triton_kernels(spec.triton_module)
    return spec


def registered_ops() -> dict[str, OpSpec]:
    return dict(_OPS)


def why_unavailable(op: str, impl: str, device: torch.device | str, dtype: torch.dtype | None = None):
    """None when `impl` of `op` can run on `device` (and `dtype`), else a sentence saying why not."""
    spec = _OPS[op]
    device = torch.device(device)
    if impl == "ref":
        return None
    if impl == "cpu":
        if device.type != "cpu":
            return f"the C++ CPU kernels take CPU tensors, not {device.type} tensors"
        return _ext.C_ERROR
    if impl == "cuda":
        if _ext.C is None:
            return _ext.C_ERROR
        if not _ext.CUDA_COMPILED:
            return "sgan_fast._C was built without CUDA (no CUDA toolkit at build time, or SGAN_FAST_CUDA=0)"
        if not torch.cuda.is_available():
            return "no GPU (torch.cuda.is_available() is False)"
        if device.type != "cuda":
            return f"the CUDA kernels take CUDA tensors, not {device.type} tensors"
        return None
    if impl == "triton":
        _, why = _ext.TRITON_KERNELS.get(spec.triton_module, (None, "not loaded"))
        if why is not None:
            return why
        if device.type == "cpu":
            if not _ext.TRITON_INTERPRET:
                return "no GPU: Triton runs CPU tensors only under TRITON_INTERPRET=1"
        elif device.type == "cuda":
            if not torch.cuda.is_available():
                return "no GPU (torch.cuda.is_available() is False)"
        else:
            return f"Triton does not run on {device.type} tensors"
        if dtype is not None and dtype not in spec.triton_dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in spec.triton_dtypes)
            return f"the Triton kernels take {names}, not {str(dtype).replace('torch.', '')}"
        return None
    raise ValueError(f"{op}: unknown impl {impl!r}; choose one of auto, {', '.join(IMPLS)}")


def resolve(op: str, impl: str, device: torch.device, dtype: torch.dtype) -> str:
    """The implementation to run: `impl` itself if available, or the choice of "auto"."""
    key = (op, impl, device.type, dtype)
    hit = _resolved.get(key)
    if hit is not None:
        return hit
    chosen = _resolve(op, impl, device, dtype)
    _resolved[key] = chosen
    return chosen


def auto_choice(op: str, device: torch.device | str, dtype: torch.dtype | None = None):
    """(the first available implementation in the op's order for the device, or None;
    the reasons why those before it are unavailable)."""
    device = torch.device(device)
    reasons = []
    for cand in _OPS[op].auto_order.get(device.type, ()):
        why = why_unavailable(op, cand, device, dtype)
        if why is None:
            return cand, reasons
        reasons.append(f"{cand}: {why}")
    return None, reasons


def _resolve(op: str, impl: str, device: torch.device, dtype: torch.dtype) -> str:
    if impl == "auto":
        cand, reasons = auto_choice(op, device, dtype)
        if cand is not None:
            return cand
        key = (op, device.type)
        if key not in _warned:
            _warned.add(key)
            detail = "; ".join(reasons) if reasons else f"no fast implementation for {device.type}"
            warnings.warn(f"sgan_fast.ops.{op}: falling back to the slow reference ({detail})",
                          RuntimeWarning, stacklevel=3)
        return "ref"
    if impl not in IMPLS:
        raise ValueError(f"{op}: unknown impl {impl!r}; choose one of auto, {', '.join(IMPLS)}")
    why = why_unavailable(op, impl, device, dtype)
    if why is not None:
        raise RuntimeError(f"{op}: impl={impl!r} is unavailable here: {why}")
    return impl


def on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: a context making it t's device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def outside_autocast(fn):
    """Runs an op with autocast off. Each op chooses its own computation dtype (its inputs')
    and accumulates in float32; left on, autocast would recast the matrix products inside
    the reference and C++ implementations to bf16 (and hand kernels buffers of another
    dtype than they were written for)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        cpu, cuda = torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda")
        if not (cpu or cuda):
            return fn(*args, **kwargs)
        # plain nested contexts, not an ExitStack: torch.compile traces these without a break
        with (torch.autocast("cpu", enabled=False) if cpu else contextlib.nullcontext()), \
                (torch.autocast("cuda", enabled=False) if cuda else contextlib.nullcontext()):
            return fn(*args, **kwargs)
    return wrapper
