"""SN layers (BigGAN-PyTorch compatibility) and fuse_spectral_norm (equivalence with the
per-layer originals over training steps, state_dict, torch.compile)."""

import copy
import importlib
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations
from torch.nn.utils import spectral_norm as legacy_spectral_norm

from sgan_fast.nn import (SNConv2d, SNEmbedding, SNLinear, SoftLabelProjectionHead,
                          fuse_spectral_norm)
from sgan_fast.ops import why_unavailable

from ._biggan_reference import RefSNConv2d, RefSNEmbedding, RefSNLinear, SmallD

# the module, not the function of the same name that sgan_fast.nn exports
fuse_mod = importlib.import_module("sgan_fast.nn.fuse_spectral_norm")
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def _ours(**kw):
    return SmallD(SNConv2d, SNLinear, SNEmbedding, **kw)


def _biggan(**kw):
    return SmallD(RefSNConv2d, RefSNLinear, RefSNEmbedding, **kw)


class TorchSND(nn.Module):
    """The same shape of model with torch's spectral norm (parametrization or legacy hook),
    including a ConvTranspose2d (its matrix is the weight with dims 0 and 1 swapped)."""

    def __init__(self, wrap, ch=6, classes=5):
        super().__init__()
        self.conv1 = wrap(nn.Conv2d(3, ch, 3, padding=1))
        self.up = wrap(nn.ConvTranspose2d(ch, ch, 2, stride=2), transposed=True)
        self.conv2 = wrap(nn.Conv2d(ch, 2 * ch, 3, padding=1, stride=2))
        self.linear = wrap(nn.Linear(2 * ch, 1))
        self.embed = wrap(nn.Embedding(classes, 2 * ch))

    def forward(self, x, y):
        h = torch.relu(self.conv2(torch.relu(self.up(torch.relu(self.conv1(x))))))
        h = h.sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def _param(m, transposed=False):
    return parametrizations.spectral_norm(m, n_power_iterations=2, dim=1 if transposed else 0)


def _legacy(m, transposed=False):
    return legacy_spectral_norm(m, dim=1 if transposed else 0)


FAMILIES = {
    "biggan_style": lambda: _biggan(num_itrs=2),
    "sgan_fast_layers": lambda: _ours(),
    "parametrization": lambda: TorchSND(_param),
    "legacy_hook": lambda: TorchSND(_legacy),
}


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _close(a, b, tol):
    return ((a.double() - b.double()).norm() <= tol * max(b.double().norm().item(), 1.0)).item()


def _train_steps(model, x, y, steps=3):
    """Per step: two calls (a real and a fake batch), backward, Adam step. Returns the
    outputs, gradients and buffers of every step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    record = []
    for _ in range(steps):
        opt.zero_grad()
        out_real = model(x, y)
        out_fake = model(0.5 * x, y)
        (torch.relu(1 - out_real).mean() + torch.relu(1 + out_fake).mean()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        record.append((out_real.detach(), out_fake.detach(), grads, _buffers(model)))
    return record


def _impl_cases():
    cases = [("cpu", torch.float64)]
    if why_unavailable("spectral_norm", "triton", "cpu", torch.float32) is None:
        cases.append(("triton", torch.float32))
    return cases


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("impl,dtype", _impl_cases(), ids=lambda x: str(x).replace("torch.", ""))
def test_fused_model_trains_like_the_original(family, impl, dtype):
    torch.manual_seed(0)
    original = FAMILIES[family]()
    if family == "sgan_fast_layers":  # the unfused layers would use the same kernels
        for m in original.modules():
            if hasattr(m, "sn_impl"):
                m.sn_impl = "ref"
    fused = copy.deepcopy(original)
    handle = fuse_spectral_norm(fused, impl=impl)
    assert len(handle.layers) == 5
    # cast after fusing: .to() replaces the buffers, and the fused update must follow them
    original, fused = original.to(dtype), fused.to(dtype)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    y = torch.randint(0, 5, (4,))
    tol = TOL[dtype]
    for step, (a, b) in enumerate(zip(_train_steps(original, x, y), _train_steps(fused, x, y))):
        assert _close(b[0], a[0], tol) and _close(b[1], a[1], tol), f"step {step} outputs"
        for n in a[2]:
            assert _close(b[2][n], a[2][n], tol), f"step {step} grad {n}"
        assert a[3].keys() == b[3].keys()
        for n in a[3]:
            assert _close(b[3][n], a[3][n], tol), f"step {step} buffer {n}"
    original.eval()
    fused.eval()
    before = _buffers(fused)
    assert _close(fused(x, y), original(x, y), tol), "eval outputs"
    after = _buffers(fused)
    assert all(torch.equal(before[k], after[k]) for k in before), "eval changed a buffer"

    # state_dict round trip: the fused model's state loads into a plain model, same outputs
    plain = FAMILIES[family]().to(dtype)
    plain.load_state_dict(fused.state_dict())
    plain.eval()
    assert _close(plain(x, y), fused(x, y), tol)


def test_one_grouped_update_per_call_of_the_model(monkeypatch):
    model = _ours()
    fuse_spectral_norm(model, impl="cpu")
    calls = []
    real = fuse_mod.spectral_norm_grouped
    monkeypatch.setattr(fuse_mod, "spectral_norm_grouped",
                        lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 5, (2,))
    model(x, y)
    model(x, y)
    assert calls == [5, 5]


def test_layers_called_on_their_own_keep_their_update():
    model = _ours()
    fuse_spectral_norm(model, impl="cpu")
    u_before = model.linear.u0.clone()
    model.linear(torch.randn(2, 12))  # outside the model's forward: the layer's own update
    assert not torch.equal(model.linear.u0, u_before)


def test_remove_restores_per_layer_updates():
    torch.manual_seed(1)
    model = TorchSND(_param)
    reference = copy.deepcopy(model)
    handle = fuse_spectral_norm(model, impl="cpu")
    handle.remove()
    assert model._sgan_fast_fused_sn is None
    assert not model._forward_pre_hooks and not model._forward_hooks
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 5, (2,))
    assert torch.equal(model(x, y), reference(x, y))
    fuse_spectral_norm(model, impl="cpu")  # can be fused again


def test_fuse_errors_and_warnings():
    with pytest.raises(ValueError, match="no spectrally normalised layer"):
        fuse_spectral_norm(nn.Sequential(nn.Linear(3, 4)))
    model = _ours(num_svs=2)
    with pytest.warns(RuntimeWarning, match="num_svs=2"):
        with pytest.raises(ValueError, match="no spectrally normalised layer"):
            fuse_spectral_norm(model)
    model = _ours()
    fuse_spectral_norm(model)
    with pytest.raises(ValueError, match="already fused"):
        fuse_spectral_norm(model)


def test_projection_head_is_left_to_its_fused_op():
    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = SNConv2d(3, 8, 3, padding=1)
            self.head = SoftLabelProjectionHead(8, 5, impl="cpu")

        def forward(self, x, y):
            return self.head(self.conv(x).sum(dim=(2, 3)), y)

    model = D()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handle = fuse_spectral_norm(model, impl="cpu")
    assert [name for name, _ in handle.layers] == ["conv"]
    u_lin = model.head.linear.u0.clone()
    model(torch.randn(2, 3, 4, 4), torch.randint(0, 5, (2,)))
    assert not torch.equal(model.head.linear.u0, u_lin)  # updated once, by the head


@pytest.mark.parametrize("num_svs,num_itrs", [(1, 1), (1, 2), (2, 1), (2, 3)])
def test_biggan_checkpoint_loads_and_matches(num_svs, num_itrs):
    """A BigGAN-PyTorch model's state_dict loads strictly into one built from our layers,
    and both train identically (outputs, gradients, u and sv buffers), then agree in eval."""
    torch.manual_seed(2)
    ref = _biggan(num_svs=num_svs, num_itrs=num_itrs).double()
    ours = _ours(num_svs=num_svs, num_itrs=num_itrs).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x, y = torch.randn(3, 3, 6, 6, dtype=torch.float64), torch.randint(0, 5, (3,))
    for step, (a, b) in enumerate(zip(_train_steps(ref, x, y), _train_steps(ours, x, y))):
        assert _close(b[0], a[0], 1e-10) and _close(b[1], a[1], 1e-10), f"step {step}"
        for n in a[2]:
            assert _close(b[2][n], a[2][n], 1e-10), f"step {step} grad {n}"
        for n in a[3]:
            assert _close(b[3][n], a[3][n], 1e-10), f"step {step} buffer {n}"
    ref.eval()
    ours.eval()
    assert _close(ours(x, y), ref(x, y), 1e-10)


def test_compile_fullgraph_of_sn_layers_and_of_a_fused_model():
    torch.manual_seed(3)
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 5, (2,))
    for fuse in (False, True):
        model = _ours()
        for m in model.modules():
            if hasattr(m, "sn_impl"):
                m.sn_impl = "cpu"
        twin = copy.deepcopy(model)
        if fuse:
            fuse_spectral_norm(model, impl="cpu")
            fuse_spectral_norm(twin, impl="cpu")
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        for _ in range(2):
            got, expect = compiled(x, y), twin(x, y)
            assert torch.allclose(got, expect, rtol=1e-5, atol=1e-6), f"fuse={fuse}"
        assert torch.allclose(model.conv1.u0, twin.conv1.u0, rtol=1e-5, atol=1e-6)


def test_sn_embedding_rejects_max_norm():
    with pytest.raises(ValueError, match="max_norm"):
        SNEmbedding(5, 4, max_norm=1.0)


def test_a_layer_in_another_training_mode_gets_its_own_group(monkeypatch):
    """One module left in eval mode inside a training model: the fused update groups it apart
    (no u update for it, the others updated), exactly as the per-layer originals behave."""
    torch.manual_seed(2)
    fused, plain = _ours(), _ours()
    plain.load_state_dict(fused.state_dict())
    fuse_spectral_norm(fused, impl="cpu")
    calls = []
    real = fuse_mod.spectral_norm_grouped
    monkeypatch.setattr(fuse_mod, "spectral_norm_grouped",
                        lambda *a, **k: calls.append((len(a[0]), k["training"])) or real(*a, **k))
    for m in (fused, plain):
        m.train()
        m.linear.eval()
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 5, (2,))
    u_before = fused.linear.u0.clone()
    torch.testing.assert_close(fused(x, y), plain(x, y), rtol=1e-5, atol=1e-6)
    assert sorted(calls) == [(1, False), (4, True)]
    assert torch.equal(fused.linear.u0, u_before)
    for (name, a), b in zip(fused.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
