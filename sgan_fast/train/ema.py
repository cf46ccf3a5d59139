"""Exponential moving average of the generator's weights (BigGAN's G_ema).

Samples and metrics come from the EMA copy: averaging the weights over the last few
thousand steps removes much of the step-to-step jitter of adversarial training and gives
markedly better FID than the raw generator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GeneratorEMA"]


def check_decay(decay: float, who: str) -> float:
    """An exponential moving average's decay, as a float in [0, 1) (GeneratorEMA, LeCam)."""
    decay = float(decay)
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"{who} decay must be in [0, 1), got {decay}")
    return decay


def _pairs(kind: str, model_items, ema_items) -> tuple[list[Tensor], list[Tensor]]:
    """Match ``(name, tensor)`` lists of the two models; refuse the first mismatch."""
    a, b = list(model_items), list(ema_items)
    names_a, names_b = [n for n, _ in a], [n for n, _ in b]
    if names_a != names_b:
        only_a = [n for n in names_a if n not in set(names_b)]
        only_b = [n for n in names_b if n not in set(names_a)]
        if only_a or only_b:
            first = (f"{kind} {only_a[0]!r} is in model but not in ema_model" if only_a
                     else f"{kind} {only_b[0]!r} is in ema_model but not in model")
        else:
            first = f"{kind}s are registered in a different order"
        raise ValueError(f"GeneratorEMA: model and ema_model differ: {first}")
    for (name, ta), (_, tb) in zip(a, b):
        if ta.shape != tb.shape:
            raise ValueError(f"GeneratorEMA: {kind} {name!r} has shape {tuple(ta.shape)} in "
                             f"model but {tuple(tb.shape)} in ema_model")
        if ta.dtype != tb.dtype or ta.device != tb.device:
            raise ValueError(f"GeneratorEMA: {kind} {name!r} is {ta.dtype} on {ta.device} in "
                             f"model but {tb.dtype} on {tb.device} in ema_model")
    return [t for _, t in a], [t for _, t in b]


class GeneratorEMA:
    """Keep ``ema_model`` an exponential moving average of ``model``.

    ``ema_model`` is a second instance of the same architecture built by the caller (not a
    deepcopy, which would drag along hooks, compiled wrappers and optimizer references).
    Its parameters are set to ``requires_grad=False``: it is never trained.

    ``update(step)``:

    - ``step < start_step``: copy every parameter and buffer (early weights change too fast
      for an average of them to be useful; BigGAN starts its EMA late for this reason);
    - ``step >= start_step``: floating parameters ``ema = decay * ema + (1 - decay) * p``
      with one ``torch._foreach_lerp_`` over all of them; other parameters and all buffers
      (BN running statistics, spectral-norm u vectors) are copied, since their own update
      rules already average or would be broken by averaging.

    The tensors are collected on each call, so moving the models with ``.to()`` after
    construction is fine; they must stay on the same device and dtype as each other.
    """

    def __init__(self, model: nn.Module, ema_model: nn.Module, *, decay: float = 0.9999,
                 start_step: int = 1000):
        if model is ema_model:
            raise ValueError("GeneratorEMA: ema_model must be a separate instance of model's "
                             "architecture, not model itself")
        self.model = model
        self.ema_model = ema_model
        self.decay = check_decay(decay, "GeneratorEMA")
        self.start_step = self._check_start(start_step)
        self._tensors()  # validate now, not at the first update
        ema_model.requires_grad_(False)

    @staticmethod
    def _check_start(start_step: int) -> int:
        if isinstance(start_step, bool) or int(start_step) != start_step or start_step < 0:
            raise ValueError(f"GeneratorEMA start_step must be an integer >= 0, got {start_step!r}")
        return int(start_step)

    def _tensors(self):
        p_src, p_dst = _pairs("parameter", self.model.named_parameters(),
                              self.ema_model.named_parameters())
        b_src, b_dst = _pairs("buffer", self.model.named_buffers(),
                              self.ema_model.named_buffers())
        return p_src, p_dst, b_src, b_dst

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold ``model``'s current weights into ``ema_model`` (see the class docstring)."""
        p_src, p_dst, b_src, b_dst = self._tensors()
        if step < self.start_step:
            copy_src, copy_dst = p_src + b_src, p_dst + b_dst
        else:
            lerp_src, lerp_dst, copy_src, copy_dst = [], [], list(b_src), list(b_dst)
            for s, d in zip(p_src, p_dst):
                if d.is_floating_point():
                    lerp_src.append(s.detach())
                    lerp_dst.append(d)
                else:
                    copy_src.append(s)
                    copy_dst.append(d)
            if lerp_dst:
                torch._foreach_lerp_(lerp_dst, lerp_src, 1.0 - self.decay)
        if copy_dst:
            torch._foreach_copy_(copy_dst, [s.detach() for s in copy_src])

    def state_dict(self) -> dict:
        """Only the settings; the averaged weights are ``ema_model.state_dict()``."""
        return {"decay": self.decay, "start_step": self.start_step}

    def load_state_dict(self, state: dict) -> None:
        self.decay = check_decay(state["decay"], "GeneratorEMA")
        self.start_step = self._check_start(state["start_step"])

    def __repr__(self) -> str:
        return f"GeneratorEMA(decay={self.decay}, start_step={self.start_step})"
