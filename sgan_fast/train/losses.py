"""GAN losses: hinge (BigGAN's choice) and the LeCam regulariser for limited data.

All losses are reduced in float32 even when D runs in bfloat16: a mean over a batch of bf16
logits loses enough precision to bias the loss curves a trainer logs and compares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .ema import check_decay

__all__ = ["hinge_d", "hinge_g", "LeCam"]


def hinge_d(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Discriminator hinge loss: ``(loss, loss_real, loss_fake)``.

    ``loss_real = mean(relu(1 - D(x)))``, ``loss_fake = mean(relu(1 + D(G(z))))``,
    ``loss = loss_real + loss_fake``; the two parts are returned for logging.
    """
    loss_real = F.relu(1.0 - d_real.float()).mean()
    loss_fake = F.relu(1.0 + d_fake.float()).mean()
    return loss_real + loss_fake, loss_real, loss_fake


def hinge_g(d_fake: Tensor) -> Tensor:
    """Generator hinge loss: ``-mean(D(G(z)))``."""
    return -d_fake.float().mean()


class LeCam:
    """LeCam regulariser (Tseng et al., CVPR 2021, "Regularizing Generative Adversarial
    Networks under Limited Data").

    Keeps exponential moving averages of D's mean output on real (``ema_real``) and fake
    (``ema_fake``) batches and penalises D for pushing its outputs past the other side's
    average::

        R = mean(relu(D(x) - ema_fake)^2) + mean(relu(ema_real - D(G(z)))^2)

    which bounds how far D can separate real from fake and so slows D's overfitting on
    small (or, per class, tiny) data. The caller adds ``weight * penalty(...)`` to D's loss
    and calls ``update`` once per D step.

    The averages are 0-dim float32 tensors that live on the device of the D outputs they are
    fed (moved there on first use), and ``update`` uses only tensor ops, so a training loop
    on the GPU never waits for the host.
    """

    def __init__(self, decay: float = 0.99, device: torch.device | str | None = None):
        self.decay = check_decay(decay, "LeCam")
        self.ema_real = torch.zeros((), dtype=torch.float32, device=device)
        self.ema_fake = torch.zeros((), dtype=torch.float32, device=device)

    def to(self, device: torch.device | str) -> "LeCam":
        self.ema_real = self.ema_real.to(device)
        self.ema_fake = self.ema_fake.to(device)
        return self

    def _follow(self, device: torch.device) -> None:
        if self.ema_real.device != device:
            self.to(device)

    @torch.no_grad()
    def update(self, d_real: Tensor, d_fake: Tensor) -> None:
        """``ema = decay * ema + (1 - decay) * mean(d)`` for real and fake, in place."""
        self.update_means(d_real.detach().float().mean(), d_fake.detach().float().mean())

    @torch.no_grad()
    def update_means(self, real_mean: Tensor, fake_mean: Tensor) -> None:
        """``update`` from the batch means themselves (a multi-process trainer passes the
        means over every rank's batch, so that the averages are the same on every rank)."""
        self._follow(real_mean.device)
        w = 1.0 - self.decay
        self.ema_real.lerp_(real_mean.float(), w)
        self.ema_fake.lerp_(fake_mean.float(), w)

    def penalty(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        """The LeCam term (float32 scalar); differentiable in ``d_real`` and ``d_fake``."""
        self._follow(d_real.device)
        ema_real = self.ema_real.detach()
        ema_fake = self.ema_fake.detach()
        real_term = F.relu(d_real.float() - ema_fake).square().mean()
        fake_term = F.relu(ema_real - d_fake.float()).square().mean()
        return real_term + fake_term

    def state_dict(self) -> dict:
        """Plain tensors and a float, so ``torch.load(..., weights_only=True)`` reads it."""
        return {"decay": self.decay, "ema_real": self.ema_real.detach().clone(),
                "ema_fake": self.ema_fake.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        missing = {"decay", "ema_real", "ema_fake"} - set(state)
        if missing:
            raise KeyError(f"LeCam state is missing {sorted(missing)}")
        self.decay = check_decay(state["decay"], "LeCam")
        device = self.ema_real.device
        def scalar(v):
            return torch.as_tensor(v, dtype=torch.float32).reshape(()).to(device)

        self.ema_real = scalar(state["ema_real"])
        self.ema_fake = scalar(state["ema_fake"])

    def __repr__(self) -> str:
        return f"LeCam(decay={self.decay})"
