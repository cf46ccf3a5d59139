"""`sgan_fast.info()` / `sgan-fast info`: versions, and which implementation of each op runs here."""

from __future__ import annotations

import platform
import sys


def _version(module_name: str) -> str:
    try:
        mod = __import__(module_name)
    except Exception as exc:
        return f"not importable ({type(exc).__name__}: {exc})"
    return getattr(mod, "__version__", "?")


def _inception_weights():
    """Where `sgan-fast eval` would read Inception-v3 from, or None."""
    import os

    from .metrics.features import ENV_VAR, shipped_torchscript
    return os.environ.get(ENV_VAR) or shipped_torchscript()


def info(file=None) -> dict:
    """Prints versions and, per op, which implementations are available on this machine
    (and why not, for each that is not). Returns the same facts as a dict."""
    import torch

    from . import __version__, _ext
    from . import ops  # noqa: F401  (registers the ops)
    from .ops import _dispatch

    file = sys.stdout if file is None else file
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    facts = {
        "sgan_fast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "gpu": gpu,
        "triton_interpreter": _ext.TRITON_INTERPRET,
        "extension": None if _ext.C is None else {
            "cuda_compiled": _ext.CUDA_COMPILED,
            "cuda_version": _ext.C.cuda_version(),
            "built_with_torch": _ext.C.torch_version(),
        },
        "extension_error": _ext.C_ERROR,
        "inception_weights": _inception_weights(),
        "ops": {},
    }
    devices = ["cpu"] + (["cuda"] if gpu else [])
    for name in sorted(_dispatch.registered_ops()):
        table = {}
        for impl in _dispatch.IMPLS:
            table[impl] = {dev: _dispatch.why_unavailable(name, impl, dev) for dev in devices}
        auto = {dev: _dispatch.auto_choice(name, dev)[0] or "ref" for dev in devices}
        facts["ops"][name] = {"impls": table, "auto": auto}

    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"sgan_fast {facts['sgan_fast']}")
    p(f"python {facts['python']}, torch {facts['torch']} (CUDA {facts['torch_cuda']}), "
      f"triton {facts['triton']}, numpy {facts['numpy']}")
    p(f"GPU: {gpu or 'none (torch.cuda.is_available() is False)'}")
    if _ext.C is None:
        p(f"extension: not available: {_ext.C_ERROR}")
    else:
        ext = facts["extension"]
        kinds = f"CPU + CUDA {ext['cuda_version']}" if ext["cuda_compiled"] else "CPU only"
        p(f"extension sgan_fast._C: {kinds} kernels, built against torch {ext['built_with_torch']}")
    p(f"Triton interpreter (TRITON_INTERPRET=1): {'on' if _ext.TRITON_INTERPRET else 'off'}")
    p(f"Inception weights for FID: {facts['inception_weights'] or 'none found (see docs/eval.md)'}")
    for name, op in facts["ops"].items():
        p(f"op {name}:  auto -> " + ", ".join(f"{d}: {i}" for d, i in op["auto"].items()))
        for impl, per_dev in op["impls"].items():
            for dev, why in per_dev.items():
                p(f"  {impl:<7} on {dev:<5} {'available' if why is None else 'unavailable: ' + why}")
    return facts
