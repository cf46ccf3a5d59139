import io

import pytest
import torch
from torch import nn

from sgan_fast.train.ema import GeneratorEMA
from sgan_fast.train.losses import LeCam, hinge_d, hinge_g

# ---------------------------------------------------------------- hinge


def test_hinge_d_hand_worked():
    d_real = torch.tensor([2.0, 0.5, -1.0, 1.0])   # relu(1 - d): 0, 0.5, 2, 0 -> mean 0.625
    d_fake = torch.tensor([-2.0, -0.5, 1.0, 0.0])  # relu(1 + d): 0, 0.5, 2, 1 -> mean 0.875
    loss, lr, lf = hinge_d(d_real, d_fake)
    assert lr.item() == pytest.approx(0.625)
    assert lf.item() == pytest.approx(0.875)
    assert loss.item() == pytest.approx(1.5)


def test_hinge_g_hand_worked():
    assert hinge_g(torch.tensor([1.0, -3.0, 0.5, 0.5])).item() == pytest.approx(0.25)


def test_hinge_float32_for_bf16():
    d_real = torch.tensor([0.3, 0.7], dtype=torch.bfloat16)
    d_fake = torch.tensor([0.1, -0.2], dtype=torch.bfloat16)
    loss, lr, lf = hinge_d(d_real, d_fake)
    assert loss.dtype == lr.dtype == lf.dtype == torch.float32
    assert hinge_g(d_fake).dtype == torch.float32
    assert lr.item() == pytest.approx(1 - d_real.float().mean().item())


def test_hinge_gradient_signs():
    # inside the margin D is pushed up on real, down on fake; outside it gets no gradient
    d_real = torch.tensor([0.5, 3.0], requires_grad=True)
    d_fake = torch.tensor([-0.5, -3.0], requires_grad=True)
    loss, _, _ = hinge_d(d_real, d_fake)
    loss.backward()
    assert d_real.grad[0] < 0 and d_real.grad[1] == 0
    assert d_fake.grad[0] > 0 and d_fake.grad[1] == 0
    # G raises D's output on its samples, everywhere
    d = torch.tensor([-3.0, 5.0], requires_grad=True)
    hinge_g(d).backward()
    assert (d.grad < 0).all()


# ---------------------------------------------------------------- LeCam


def _lecam(real, fake, decay=0.99):
    lc = LeCam(decay)
    lc.ema_real.fill_(real)
    lc.ema_fake.fill_(fake)
    return lc


def test_lecam_zero_inside():
    lc = _lecam(real=0.5, fake=-0.5)
    d_real = torch.tensor([-0.5, -1.0, -3.0])   # all <= ema_fake
    d_fake = torch.tensor([0.5, 0.7, 2.0])      # all >= ema_real
    assert lc.penalty(d_real, d_fake).item() == 0.0


def test_lecam_hand_worked():
    lc = _lecam(real=0.5, fake=-0.5)
    d_real = torch.tensor([0.5, -1.0])   # relu(d - (-0.5)) = 1.0, 0 -> squares 1, 0 -> mean 0.5
    d_fake = torch.tensor([-1.5, 0.0])   # relu(0.5 - d) = 2.0, 0.5 -> 4, 0.25 -> mean 2.125
    p = lc.penalty(d_real.requires_grad_(True), d_fake.requires_grad_(True))
    assert p.item() == pytest.approx(2.625)
    p.backward()
    # d/dd_real = 2 * relu(...) / n; d/dd_fake = -2 * relu(...) / n
    torch.testing.assert_close(d_real.grad, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(d_fake.grad, torch.tensor([-2.0, -0.5]))


def test_lecam_update_follows_decay():
    lc = LeCam(decay=0.9)
    assert lc.ema_real.item() == 0.0 and lc.ema_fake.item() == 0.0
    lc.update(torch.tensor([1.0, 3.0]), torch.tensor([-4.0, 0.0]))
    assert lc.ema_real.item() == pytest.approx(0.1 * 2.0)
    assert lc.ema_fake.item() == pytest.approx(0.1 * -2.0)
    lc.update(torch.tensor([0.0]), torch.tensor([1.0]))
    assert lc.ema_real.item() == pytest.approx(0.9 * 0.2)
    assert lc.ema_fake.item() == pytest.approx(0.9 * -0.2 + 0.1 * 1.0)


def test_lecam_update_no_grad_and_bf16():
    lc = LeCam(decay=0.5)
    d = torch.tensor([1.0, 2.0], requires_grad=True)
    lc.update(d.bfloat16(), -d)
    assert not lc.ema_real.requires_grad and lc.ema_real.dtype == torch.float32
    assert lc.ema_real.item() == pytest.approx(0.75)


def test_lecam_state_round_trip():
    lc = LeCam(decay=0.95)
    lc.update(torch.tensor([0.3, 0.9]), torch.tensor([-0.2]))
    buf = io.BytesIO()
    torch.save(lc.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    lc2 = LeCam()
    lc2.load_state_dict(state)
    assert lc2.decay == 0.95
    assert torch.equal(lc2.ema_real, lc.ema_real) and torch.equal(lc2.ema_fake, lc.ema_fake)
    # the state is a copy, not a view of the live buffers
    lc.update(torch.tensor([5.0]), torch.tensor([5.0]))
    assert not torch.equal(state["ema_real"], lc.ema_real)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_lecam_bad_decay(decay):
    with pytest.raises(ValueError, match="decay"):
        LeCam(decay)


# ---------------------------------------------------------------- generator EMA


class _Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.lin = nn.Linear(3, width)
        self.bn = nn.BatchNorm1d(width)
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        return self.out(self.bn(self.lin(x)))


def _pair(seed=0):
    torch.manual_seed(seed)
    model, ema = _Net(), _Net()
    return model, ema


def _train_step(model):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(8, 3)).square().mean().backward()
    opt.step()
    opt.zero_grad()


def test_ema_copies_before_start():
    model, ema = _pair()
    g = GeneratorEMA(model, ema, decay=0.9, start_step=3)
    assert not any(p.requires_grad for p in ema.parameters())
    for step in range(3):
        _train_step(model)
        g.update(step)
        for (n, a), b in zip(model.state_dict().items(), ema.state_dict().values()):
            assert torch.equal(a, b), n
    # a copy, not an alias
    _train_step(model)
    assert not torch.equal(model.lin.weight, ema.lin.weight)


def test_ema_lerp_after_start_matches_manual_loop():
    model, ema = _pair(1)
    decay = 0.8
    g = GeneratorEMA(model, ema, decay=decay, start_step=1)
    _train_step(model)
    g.update(0)  # copy
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(1, 4):
        _train_step(model)
        g.update(step)
        for n, p in model.named_parameters():
            expected[n] = decay * expected[n] + (1 - decay) * p.detach()
        for n, p in ema.named_parameters():
            torch.testing.assert_close(p, expected[n], rtol=1e-6, atol=1e-7)
        # averaged, so behind the trained weights (lin.bias gets no gradient before BN)
        assert not torch.equal(ema.lin.weight, model.lin.weight)
        # buffers (BN running stats and the batch counter) are copied, not averaged
        for (n, a), b in zip(model.named_buffers(), ema.buffers()):
            assert torch.equal(a, b), n
    assert int(ema.bn.num_batches_tracked) == 4


def test_ema_start_zero_averages_from_first_step():
    model, ema = _pair(2)
    w0 = ema.lin.weight.detach().clone()
    g = GeneratorEMA(model, ema, decay=0.5, start_step=0)
    g.update(0)
    torch.testing.assert_close(ema.lin.weight, 0.5 * w0 + 0.5 * model.lin.weight.detach())


def test_ema_state_dict():
    model, ema = _pair()
    g = GeneratorEMA(model, ema, decay=0.999, start_step=10)
    state = g.state_dict()
    assert state == {"decay": 0.999, "start_step": 10}
    g2 = GeneratorEMA(model, ema)
    g2.load_state_dict(state)
    assert (g2.decay, g2.start_step) == (0.999, 10)


def test_ema_refuses_mismatched_models():
    model = _Net(4)
    with pytest.raises(ValueError, match=r"'lin.weight' has shape \(4, 3\) in model but \(5, 3\)"):
        GeneratorEMA(model, _Net(5))
    other = _Net(4)
    other.extra = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="'extra.weight' is in ema_model but not in model"):
        GeneratorEMA(model, other)
    with pytest.raises(ValueError, match="separate instance"):
        GeneratorEMA(model, model)
    with pytest.raises(ValueError, match="parameter 'lin.weight' is torch.float32"):
        GeneratorEMA(model, _Net(4).double())


@pytest.mark.parametrize("kw", [{"decay": 1.0}, {"decay": -0.5}, {"start_step": -1},
                                {"start_step": 2.5}])
def test_ema_bad_settings(kw):
    with pytest.raises(ValueError):
        GeneratorEMA(_Net(), _Net(), **kw)
