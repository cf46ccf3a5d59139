"""Temperature calibration of a classifier's held-out logits (Guo et al. 2017).

    T = fit_temperature(logits, labels)      # minimises the mean NLL of softmax(logits / T)
    probs = torch.softmax(logits / T, 1)

The NLL is convex in beta = 1 / T (a log-sum-exp of beta z minus a linear term), so a
safeguarded Newton iteration on beta finds the one minimum in a few steps, in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check(logits: Tensor, labels: Tensor) -> tuple:
    if logits.dim() != 2 or labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"logits must be [N, C] and labels [N], got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("no held-out predictions to calibrate on")
    z = logits.detach().double()
    if not bool(torch.isfinite(z).all()):
        r = int((~torch.isfinite(z)).any(1).nonzero()[0, 0])
        raise ValueError(f"logits of held-out image {r} contain NaN or Inf")
    y = labels.long().to(z.device)
    if bool(((y < 0) | (y >= z.shape[1])).any()):
        raise ValueError(f"labels must lie in [0, {z.shape[1]})")
    return z, y


def nll(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature) at the labels."""
    z, y = _check(logits, labels)
    s = z / temperature
    return float((torch.logsumexp(s, 1) - s.gather(1, y[:, None])[:, 0]).mean())


def _nll_derivatives(z: Tensor, y: Tensor, beta: float) -> tuple:
    """(NLL, dNLL/dbeta, d2NLL/dbeta2) at inverse temperature beta."""
    s = z * beta
    lse = torch.logsumexp(s, 1)
    p = torch.exp(s - lse[:, None])
    zy = z.gather(1, y[:, None])[:, 0]
    mean_z = (p * z).sum(1)
    var_z = (p * z * z).sum(1) - mean_z ** 2
    return (float((lse - beta * zy).mean()), float((mean_z - zy).mean()),
            float(var_z.clamp_min(0).mean()))


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 100,
                    tol: float = 1e-10) -> float:
    """The temperature T > 0 that minimises the mean NLL of softmax(logits / T) at `labels`.

    Bounded to [1e-3, 1e3]: logits that separate the held-out set perfectly drive the
    optimum to T -> 0, and constant logits make every T equal."""
    z, y = _check(logits, labels)
    lo, hi = 1e-3, 1e3          # bounds on beta = 1 / T
    beta = 1.0
    f, g, h = _nll_derivatives(z, y, beta)
    for _ in range(max_iter):
        if abs(g) < tol:
            break
        step = -g / h if h > 1e-300 else -math.copysign(beta, g)
        new = min(max(beta + step, lo), hi)
        # Backtrack until the objective does not increase (Newton can overshoot far from
        # the minimum, where the curvature is small).
        for _ in range(60):
            f_new, g_new, h_new = _nll_derivatives(z, y, new)
            if f_new <= f + 1e-15:
                break
            new = 0.5 * (beta + new)
        if abs(new - beta) <= 1e-12 * beta:
            beta = new
            break
        beta, f, g, h = new, f_new, g_new, h_new
    return 1.0 / beta


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE: the |accuracy - confidence| gap over `bins` equal-width confidence bins,
    weighted by the fraction of predictions in each."""
    conf, pred = probs.double().max(1)
    correct = (pred == labels.to(pred.device)).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=conf.device)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if bool(m.any()):
            ece += float(m.double().mean()) * abs(float(correct[m].mean()) - float(conf[m].mean()))
    return ece
