"""Temperature calibration: the fitted T minimises the NLL; ECE on cases worked out by hand."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

from sgan_fast.labels.calibration import expected_calibration_error, fit_temperature, nll


def _sample(N, C, T_true, seed):
    """Logits z and labels drawn from softmax(z / T_true): the NLL-optimal T is about T_true."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(N, C, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z / T_true, 1), 1, generator=g)[:, 0]
    return z, y


@pytest.mark.parametrize("T_true", [0.5, 1.0, 2.5])
def test_recovers_the_temperature_labels_were_drawn_at(T_true):
    z, y = _sample(20000, 7, T_true, seed=1)
    assert fit_temperature(z, y) == pytest.approx(T_true, rel=0.05)


@given(N=st.integers(2, 300), C=st.integers(2, 12), T_true=st.floats(0.2, 5.0),
       seed=st.integers(0, 2**31 - 1))
def test_fitted_temperature_is_the_nll_minimum(N, C, T_true, seed):
    """Compared with scipy's bounded scalar minimiser over log T on the same NLL."""
    from scipy.optimize import minimize_scalar
    z, y = _sample(N, C, T_true, seed)
    T = fit_temperature(z, y)
    f = lambda logT: nll(z, y, math.exp(logT))  # noqa: E731
    best = minimize_scalar(f, bounds=(math.log(1e-3), math.log(1e3)), method="bounded",
                           options={"xatol": 1e-9})
    assert nll(z, y, T) <= best.fun + 1e-7
    assert 1e-3 <= T <= 1e3


def test_calibration_lowers_nll_of_overconfident_logits():
    z, y = _sample(5000, 5, 1.0, seed=3)
    over = 4 * z                                   # the same ranking, far too confident
    T = fit_temperature(over, y)
    assert T == pytest.approx(4.0, rel=0.1)
    assert nll(over, y, T) < nll(over, y) - 0.1


def test_bad_logits_are_named():
    z, y = _sample(10, 3, 1.0, seed=0)
    z[4, 1] = float("nan")
    with pytest.raises(ValueError, match="held-out image 4 contain NaN"):
        fit_temperature(z, y)
    with pytest.raises(ValueError, match="no held-out predictions"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits must be \[N, C\]"):
        fit_temperature(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_ece_by_hand():
    # Two bins used: confidences 0.9 (2 predictions, 1 right) and 0.6 (2 predictions, 2 right):
    # ECE = 0.5 * |0.5 - 0.9| + 0.5 * |1.0 - 0.6| = 0.4.
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1])
    assert expected_calibration_error(p, y) == pytest.approx(0.4)
    assert expected_calibration_error(torch.eye(3, dtype=torch.float64), torch.arange(3)) == 0.0
