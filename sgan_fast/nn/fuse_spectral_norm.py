"""fuse_spectral_norm: one grouped spectral-norm update per forward of a whole model.

Finds every spectrally normalised layer of an existing model and, instead of each layer
running its own power iteration when it is called, runs them all at the start of the
top-level model's forward through sgan_fast.ops.spectral_norm_grouped (a handful of
launches in all), and hands each layer its normalised weight. Recognised layers:

- sgan_fast.nn.SNLinear / SNConv2d / SNEmbedding and BigGAN-PyTorch-style layers, duck-typed
  (a `weight`, a `u0` buffer, `num_svs`, `num_itrs`, `eps` and a `W_()` method): BigGAN's
  semantics. Layers with num_svs > 1 or BigGAN's `transpose=True` keep their own update.
- torch.nn.utils.parametrizations.spectral_norm (torch's semantics; dim 0, or dim 1 for
  ConvTranspose), when it is the weight's only parametrization and the weight has >= 2 dims.
- torch.nn.utils.spectral_norm, the older hook-based form ("torch_legacy" semantics).

Each layer keeps its own semantics, buffers and state_dict keys; only when its update runs
changes. The original layers update on every call, so a discriminator called twice in a
step (real batch, fake batch) iterates twice; the fused model does the same, once per call
of the top-level model. A layer called several times within one top-level call (shared
weights) uses one update there, where the original would iterate on each call. A layer
called outside the top-level model's forward runs its own update as before. Submodules of
a SoftLabelProjectionHead are skipped: the fused projection op normalises them itself.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..ops.spectral_norm import spectral_norm_grouped


@dataclasses.dataclass
class _Layer:
    name: str
    module: nn.Module
    semantics: str
    # Getters, not tensors: .to() / .double() replace a module's buffers with new tensors,
    # and the grouped update must read and update the ones the model holds now.
    weight: Callable[[], torch.Tensor]
    u: Callable[[], torch.Tensor]
    v: Optional[Callable[[], torch.Tensor]]
    num_iters: int
    eps: float
    transposed: bool
    sv: Optional[Callable[[], torch.Tensor]] = None  # BigGAN's logging buffer sv0


class FusedSpectralNorm:
    """The handle fuse_spectral_norm returns: `layers` (names and semantics), `remove()`."""

    def __init__(self, model: nn.Module, layers: list[_Layer], impl: str, check: bool):
        self.model, self._layers, self.impl, self.check = model, layers, impl, check
        self._current: Optional[dict] = None
        # Layers by their fixed settings, in model order: each is one grouped call as long as
        # its weights share a device and dtype and its modules one training mode.
        by_settings: dict = {}
        for layer in layers:
            by_settings.setdefault((layer.semantics, layer.num_iters, layer.eps), []).append(layer)
        self._static = [(key, members, [layer.transposed for layer in members])
                        for key, members in by_settings.items()]
        self._undo: list[Callable[[], None]] = []
        for layer in layers:
            self._undo.append(_install(layer, self))
        self._handles = [model.register_forward_pre_hook(self._before),
                         model.register_forward_hook(self._after)]

    @property
    def layers(self) -> list[tuple[str, str]]:
        return [(layer.name, layer.semantics) for layer in self._layers]

    def fused_weight(self, module: nn.Module) -> Optional[torch.Tensor]:
        cur = self._current
        return None if cur is None else cur.get(id(module))

    def _before(self, model, args):
        self._current = self.update()

    def _after(self, model, args, output):
        self._current = None

    def update(self) -> dict:
        """Runs the grouped update now; {id(layer module): normalised weight}."""
        groups = []
        for key, layers, transposed in self._static:
            weights = [layer.weight() for layer in layers]
            W0, training = weights[0], layers[0].module.training
            dev, dtype = W0.device, W0.dtype
            if not all(W.device == dev and W.dtype == dtype and layer.module.training == training
                       for W, layer in zip(weights, layers)):
                return self._update_mixed()
            groups.append((key, layers, weights, training, transposed))
        out = {}
        for key, layers, weights, training, transposed in groups:
            self._run_group(out, *key, layers, weights, training, transposed)
        return out

    def _update_mixed(self) -> dict:
        """update() for layers of one fixed group that differ in device, dtype or training
        mode: grouped again by those too."""
        groups: dict = {}
        for layer in self._layers:
            W = layer.weight()
            key = (layer.semantics, layer.num_iters, layer.eps, W.device, W.dtype,
                   layer.module.training)
            group = groups.get(key)
            if group is None:
                group = groups[key] = ([], [])
            group[0].append(layer)
            group[1].append(W)
        out = {}
        for (semantics, num_iters, eps, _, _, training), (layers, weights) in groups.items():
            self._run_group(out, semantics, num_iters, eps, layers, weights, training,
                            [layer.transposed for layer in layers])
        return out

    def _run_group(self, out: dict, semantics: str, num_iters: int, eps: float,
                   layers: list, weights: list, training: bool, transposed: list) -> None:
        """One grouped call for layers of one semantics, device, dtype and training mode;
        their normalised weights into `out`, s into the sv buffers in training mode."""
        vs = None if semantics == "biggan" else [layer.v() for layer in layers]
        all_sv = all(layer.sv is not None for layer in layers)
        normed, s = spectral_norm_grouped(
            weights, [layer.u() for layer in layers], vs, semantics=semantics,
            num_iters=num_iters, eps=eps, training=training, transposed=transposed,
            impl=self.impl, check=self.check, return_scales=True,
            svs=[layer.sv() for layer in layers] if (training and all_sv) else None)
        if training and not all_sv:
            _store_some_scales(layers, s)
        for layer, w in zip(layers, normed):
            out[id(layer.module)] = w

    def remove(self) -> None:
        """Gives every layer its own update back."""
        for h in self._handles:
            h.remove()
        for undo in reversed(self._undo):
            undo()
        self._undo, self._handles, self._current = [], [], None


def _store_some_scales(layers: list[_Layer], s: torch.Tensor) -> None:
    """BigGAN's sv0 of the layers that have one, in a group where not all do."""
    svs = [(layer.sv(), i) for i, layer in enumerate(layers) if layer.sv is not None]
    if svs:
        with torch.no_grad():
            torch._foreach_copy_([b.view(-1) for b, _ in svs],
                                 [s[i:i + 1].to(b.dtype) for b, i in svs])


def _install(layer: _Layer, fused: FusedSpectralNorm) -> Callable[[], None]:
    """Makes the layer take its weight from the grouped update; returns the undo."""
    m = layer.module
    if layer.semantics == "biggan":  # BigGAN's layers call self.W_()
        return _override_method(m, "W_", lambda original: lambda: _pick(fused, m, original))
    if layer.semantics == "torch":  # the parametrization's forward(original weight)
        return _override_method(m.parametrizations.weight[0], "forward",
                                lambda original: lambda weight: _pick(fused, m, original, weight))
    # torch_legacy: swap the pre-forward hook that recomputes module.weight
    key, hook = _legacy_hook(m)

    def pre_hook(module, inputs):
        w = fused.fused_weight(module)
        if w is None:
            hook(module, inputs)
        else:
            setattr(module, hook.name, w)

    m._forward_pre_hooks[key] = pre_hook

    def undo():
        m._forward_pre_hooks[key] = hook
    return undo


def _pick(fused: FusedSpectralNorm, m: nn.Module, original, *args):
    """The grouped update's weight for m inside the model's forward, else the layer's own."""
    w = fused.fused_weight(m)
    return original(*args) if w is None else w


def _override_method(obj, name: str, make) -> Callable[[], None]:
    """Sets obj.<name> = make(bound original) on the instance; returns the undo."""
    own = obj.__dict__.get(name)
    setattr(obj, name, make(getattr(obj, name)))

    def undo():
        if own is None:
            delattr(obj, name)
        else:
            setattr(obj, name, own)
    return undo


def _legacy_hook(m: nn.Module):
    from torch.nn.utils.spectral_norm import SpectralNorm
    for key, hook in m._forward_pre_hooks.items():
        if isinstance(hook, SpectralNorm):
            return key, hook
    return None, None


def _getter(m: nn.Module, name: str) -> Callable[[], torch.Tensor]:
    """m.<name> as the module holds it now. A parameter or buffer is read from the module's
    own dict (nn.Module.__getattr__ costs more, once per layer and call); .to() and
    load_state_dict replace entries of that dict, never the dict itself."""
    for table in (m._parameters, m._buffers):
        if name in table:
            return lambda table=table: table[name]
    return lambda: getattr(m, name)


def _find(model: nn.Module) -> tuple[list[_Layer], list[str]]:
    from torch.nn.utils.parametrizations import _SpectralNorm
    layers, skipped = [], []
    skip_under = [name for name, m in model.named_modules()
                  if getattr(m, "_sn_self_managed", False)]
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in skip_under):
            continue
        if parametrize.is_parametrized(m, "weight"):
            plist = m.parametrizations.weight
            if any(isinstance(p, _SpectralNorm) for p in plist):
                sn = plist[0]
                original = plist.original
                if len(plist) != 1 or not isinstance(sn, _SpectralNorm):
                    skipped.append(f"{name}: spectral_norm is not the weight's only parametrization")
                elif original.dim() < 2 or sn.dim not in (0, 1):
                    skipped.append(f"{name}: weight of {original.dim()} dims with dim={sn.dim}")
                else:
                    layers.append(_Layer(name, m, "torch", _getter(plist, "original"),
                                         _getter(sn, "_u"), _getter(sn, "_v"),
                                         sn.n_power_iterations, sn.eps, sn.dim == 1))
            continue
        key, hook = _legacy_hook(m)
        if hook is not None:
            orig = getattr(m, hook.name + "_orig")
            if orig.dim() < 2 or hook.dim not in (0, 1):
                skipped.append(f"{name}: weight of {orig.dim()} dims with dim={hook.dim}")
                continue
            layers.append(_Layer(name, m, "torch_legacy",
                                 _getter(m, hook.name + "_orig"), _getter(m, hook.name + "_u"),
                                 _getter(m, hook.name + "_v"),
                                 hook.n_power_iterations, hook.eps, hook.dim == 1))
            continue
        if all(hasattr(m, a) for a in ("weight", "u0", "num_svs", "num_itrs", "eps", "W_")):
            if m.num_svs != 1 or getattr(m, "transpose", False):
                skipped.append(f"{name}: num_svs={m.num_svs}, transpose="
                               f"{getattr(m, 'transpose', False)} keeps its own update")
                continue
            layers.append(_Layer(name, m, "biggan", _getter(m, "weight"), _getter(m, "u0"), None,
                                 int(m.num_itrs), float(m.eps), False,
                                 _getter(m, "sv0") if hasattr(m, "sv0") else None))
    return layers, skipped


def fuse_spectral_norm(model: nn.Module, *, impl: str = "auto", check: bool = False,
                       ) -> FusedSpectralNorm:
    """Replaces the per-layer spectral-norm updates of `model` by one grouped update per
    forward of `model` (see the module docstring). Returns a handle with `.layers` and
    `.remove()`. `impl` is the implementation of the grouped op; `check` turns on its data
    checks (one device sync per forward). Raises when no such layer is found."""
    if getattr(model, "_sgan_fast_fused_sn", None) is not None:
        raise ValueError("this model's spectral norm is already fused; call .remove() on the "
                         "handle first")
    layers, skipped = _find(model)
    for why in skipped:
        warnings.warn(f"fuse_spectral_norm: left alone: {why}", RuntimeWarning, stacklevel=2)
    if not layers:
        raise ValueError("fuse_spectral_norm: no spectrally normalised layer found in "
                         f"{type(model).__name__}")
    fused = FusedSpectralNorm(model, layers, impl, check)
    model._sgan_fast_fused_sn = fused
    remove = fused.remove

    def remove_and_forget():
        remove()
        model._sgan_fast_fused_sn = None

    fused.remove = remove_and_forget
    return fused
