"""Loading the compiled extension and the Triton kernels, remembering why either failed.

Nothing here raises: `sgan_fast` must import on a machine where the extension was
not built, and `sgan_fast.info()` must be able to say why. What was found is kept
in plain module globals, so that code traced by torch.compile only reads them.
"""

from __future__ import annotations

import importlib
import os

# Triton runs kernels on CPU tensors only when TRITON_INTERPRET=1 was set before it was imported.
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _load_C():
    try:
        mod = importlib.import_module("sgan_fast._C")
    except Exception as exc:  # ImportError, OSError (undefined symbol, missing libcudart), ...
        return None, f"extension sgan_fast._C failed to import: {type(exc).__name__}: {exc}"
    return mod, None


C, C_ERROR = _load_C()
CUDA_COMPILED = bool(C is not None and C.cuda_compiled())

TRITON_KERNELS: dict = {}  # kernel module name -> (module or None, reason or None)


def load_C():
    """(module, None) when sgan_fast._C imported, else (None, reason)."""
    return C, C_ERROR


def load_triton_kernels(name: str):
    """(module, None) for sgan_fast.kernels.<name>, else (None, reason); imported once."""
    if name not in TRITON_KERNELS:
        try:
            import triton  # noqa: F401
        except Exception as exc:
            TRITON_KERNELS[name] = (None, f"triton is not importable: {type(exc).__name__}: {exc}")
        else:
            try:
                TRITON_KERNELS[name] = (importlib.import_module(f"sgan_fast.kernels.{name}"), None)
            except Exception as exc:
                TRITON_KERNELS[name] = (
                    None, f"sgan_fast.kernels.{name} failed to import: {type(exc).__name__}: {exc}")
    return TRITON_KERNELS[name]
