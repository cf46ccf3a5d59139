"""SoftLabelProjectionHead: BigGAN-PyTorch compatibility, label forms, torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgan_fast.nn import SNLinear, SoftLabelProjectionHead


class BigGANStyleSNLinear(nn.Linear):
    """BigGAN-PyTorch's SNLinear (num_svs=1, num_itrs=1), restated for the test: buffers u0
    [1, out] and sv0 [1]; v = normalize(u W), u = normalize(v W^T), sv = v W^T u^T, W / sv."""

    def __init__(self, in_features, out_features, bias=True, eps=1e-12):
        super().__init__(in_features, out_features, bias)
        self.eps = eps
        self.register_buffer("u0", torch.randn(1, out_features))
        self.register_buffer("sv0", torch.ones(1))

    def forward(self, x):
        W = self.weight.view(self.weight.size(0), -1)
        with torch.no_grad():
            v = F.normalize(self.u0 @ W, eps=self.eps)
            u = F.normalize(v @ W.t(), eps=self.eps)
            if self.training:
                self.u0[:] = u
        sv = torch.squeeze(v @ W.t() @ u.t())
        if self.training:
            self.sv0[:] = sv.detach()
        return F.linear(x, self.weight / sv, self.bias)


class BigGANStyleD(nn.Module):
    """The head of a BigGAN-PyTorch projection discriminator with soft labels."""

    def __init__(self, F_, C):
        super().__init__()
        self.linear = BigGANStyleSNLinear(F_, 1)
        self.embed = BigGANStyleSNLinear(C, F_, bias=False)

    def forward(self, h, y_soft):
        out = self.linear(h)
        return out + torch.sum(self.embed(y_soft) * h, 1, keepdim=True)


def _pair(F_=24, C=7, seed=0, dtype=torch.float64, impl="cpu"):
    torch.manual_seed(seed)
    original = nn.Module()
    original.D = BigGANStyleD(F_, C).to(dtype)
    sd = {k[len("D."):]: v for k, v in original.state_dict().items()}
    head = SoftLabelProjectionHead(F_, C, impl=impl).to(dtype)
    head.load_state_dict(sd)  # strict: names and shapes must match
    return original.D, head


def test_state_dict_names_match_biggan():
    head = SoftLabelProjectionHead(16, 5)
    sd = head.state_dict()
    assert set(sd) == {"linear.weight", "linear.bias", "linear.u0", "linear.sv0",
                       "embed.weight", "embed.u0", "embed.sv0"}
    assert sd["embed.weight"].shape == (16, 5) and sd["embed.u0"].shape == (1, 16)
    assert sd["linear.weight"].shape == (1, 16) and sd["linear.u0"].shape == (1, 1)


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_equals_biggan_head_in_train_and_eval(impl):
    D, head = _pair(impl=impl)
    B, F_, C = 9, 24, 7
    for step in range(3):  # train mode: u0 updated each call, identically in both
        h = torch.randn(B, F_, dtype=torch.float64, requires_grad=True)
        P = torch.softmax(torch.randn(B, C, dtype=torch.float64), 1)
        ref = D(h, P).view(-1)
        out = head(h, P)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        g = torch.randn(B, dtype=torch.float64)
        ref_grads = torch.autograd.grad(ref, [h, *D.parameters()], g)
        grads = torch.autograd.grad(out, [h, *head.parameters()], g)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        for name, buf in head.named_buffers():
            torch.testing.assert_close(buf, D.get_buffer(name), rtol=1e-10, atol=1e-12)
    D.eval(), head.eval()
    u_before = head.embed.u0.clone()
    h = torch.randn(B, F_, dtype=torch.float64)
    P = torch.softmax(torch.randn(B, C, dtype=torch.float64), 1)
    torch.testing.assert_close(head(h, P), D(h, P).view(-1), rtol=1e-10, atol=1e-10)
    assert torch.equal(head.embed.u0, u_before), "eval mode must not update u"


def test_label_forms_agree():
    _, head = _pair()
    head.eval()
    B, C = 11, 7
    h = torch.randn(B, 24, dtype=torch.float64)
    y = torch.randint(0, C, (B,))
    onehot = F.one_hot(y, C).double()
    torch.testing.assert_close(head(h, y), head(h, onehot), rtol=1e-12, atol=1e-12)
    idx = torch.randint(0, C, (B, 3))
    val = torch.softmax(torch.randn(B, 3, dtype=torch.float64), 1)
    P = torch.zeros(B, C, dtype=torch.float64).scatter_add_(1, idx, val)
    torch.testing.assert_close(head(h, (idx, val)), head(h, P), rtol=1e-12, atol=1e-12)


def test_snlinear_equals_biggan_over_steps():
    torch.manual_seed(1)
    ref = BigGANStyleSNLinear(13, 6).double()
    ours = SNLinear(13, 6).double()
    ours.load_state_dict(ref.state_dict())
    for _ in range(4):
        x = torch.randn(5, 13, dtype=torch.float64)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.u0, ref.u0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.sv0, ref.sv0, rtol=1e-10, atol=1e-12)


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_features and num_classes must be >= 1"):
        SoftLabelProjectionHead(0, 10)
    head = SoftLabelProjectionHead(8, 3)
    with pytest.raises(ValueError, match=r"labels \(dense class probabilities P\) has shape \(2, 4\)"):
        head(torch.randn(2, 8), torch.rand(2, 4))


@pytest.mark.slow
def test_compile_fullgraph_equals_eager():
    torch.manual_seed(0)
    F_, C, B = 32, 6, 10
    eager = SoftLabelProjectionHead(F_, C, impl="cpu")
    compiled_head = SoftLabelProjectionHead(F_, C, impl="cpu")
    compiled_head.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_head, fullgraph=True)
    for labels_kind in ("dense", "hard"):
        h = torch.randn(B, F_, requires_grad=True)
        y = torch.randint(0, C, (B,))
        labels = torch.softmax(torch.randn(B, C), 1) if labels_kind == "dense" else y
        _assert_heads_agree(compiled, compiled_head, h, eager, eager, h, labels, torch.randn(B),
                            out_tol=(1e-5, 1e-6), grad_tol=(1e-5, 1e-6))


def _assert_heads_agree(call_a, head_a, h_a, call_b, head_b, h_b, labels, grad, *, out_tol,
                        grad_tol):
    """call_a(h_a, labels) and call_b(h_b, labels) (heads head_a, head_b, or their compiled
    wrappers): equal outputs, gradients of h and of every parameter, and buffers after the
    call (buffers to the outputs' tolerance)."""
    out_a, out_b = call_a(h_a, labels), call_b(h_b, labels)
    torch.testing.assert_close(out_a, out_b, rtol=out_tol[0], atol=out_tol[1])
    ga = torch.autograd.grad(out_a, [h_a, *head_a.parameters()], grad)
    gb = torch.autograd.grad(out_b, [h_b, *head_b.parameters()], grad)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=grad_tol[0], atol=grad_tol[1])
    for (name, a), b in zip(head_a.named_buffers(), head_b.buffers()):
        torch.testing.assert_close(a, b, rtol=out_tol[0], atol=out_tol[1], msg=name)


# --- the fused head: one C++ call for both power iterations and the projection -------------

def _labels(kind, B, C, dtype, g):
    from sgan_fast.labels import SoftLabelBank
    if kind == "dense":
        return torch.softmax(torch.randn(B, C, generator=g, dtype=dtype), 1)
    if kind == "hard":
        return torch.randint(0, C, (B,), generator=g)
    if kind == "topk":
        return (torch.randint(0, C, (B, 2), generator=g),
                torch.rand(B, 2, generator=g, dtype=dtype))
    bank = SoftLabelBank(torch.softmax(torch.randn(30, C, generator=g, dtype=dtype), 1),
                         torch.randint(0, C, (30,), generator=g))
    return (bank, torch.randint(0, 30, (B,), generator=g), "mix:0.6")


def _fused_and_plain(F_, C, to, monkeypatch):
    """Two heads with the same state: one as it runs, one forced onto the per-layer path."""
    fused = to(SoftLabelProjectionHead(F_, C, impl="cpu"))
    plain = to(SoftLabelProjectionHead(F_, C, impl="cpu"))
    plain.load_state_dict(fused.state_dict())
    monkeypatch.setattr(plain, "_fused", lambda h: False)
    return fused, plain


@pytest.mark.parametrize("kind", ["dense", "hard", "topk", "bank"])
def test_fused_head_equals_the_per_layer_path(kind, monkeypatch):
    """The one-call head (C++ power iteration of both layers, buffer updates, projection) and
    the per-layer path (Python power iteration, then the op) agree over training steps and in
    eval mode: outputs, every gradient, u0 and sv0."""
    torch.manual_seed(3)
    B, F_, C = 6, 10, 5
    fused, plain = _fused_and_plain(F_, C, lambda m: m.double(), monkeypatch)
    calls = []
    real = torch.ops.sgan_fast.softlabel_proj_sn.default
    import sgan_fast.nn.softlabel_proj_head as head_mod
    monkeypatch.setattr(head_mod, "_PROJ_SN", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        if step == 3:
            fused.eval(), plain.eval()
        h = torch.randn(B, F_, generator=g, dtype=torch.float64)
        labels = _labels(kind, B, C, torch.float64, g)
        hf, hp = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
        grad = torch.randn(B, generator=g, dtype=torch.float64)
        _assert_heads_agree(fused, fused, hf, plain, plain, hp, labels, grad,
                            out_tol=(1e-10, 1e-12), grad_tol=(1e-9, 1e-11))
    assert len(calls) == 4, "the fused call was not taken"


def test_bad_input_to_the_fused_head_leaves_its_buffers_alone():
    head = SoftLabelProjectionHead(8, 3, impl="cpu")
    before = {k: v.clone() for k, v in head.named_buffers()}
    with pytest.raises(ValueError, match=r"h has shape \(2, 5\)|E has shape"):
        head(torch.randn(2, 5), torch.rand(2, 3))
    with pytest.raises(IndexError, match=r"label y at \[1\] is 7, outside \[0, C=3\)"):
        head(torch.randn(2, 8), torch.tensor([0, 7]))
    for k, v in head.named_buffers():
        assert torch.equal(v, before[k]), f"{k} changed by a call that raised"


def test_fused_head_in_half_precision_takes_the_grouped_power_iteration(monkeypatch):
    """float16 weights (and buffers, as .half() leaves them): the one-call head runs its power
    iteration through the grouped op (vectors in float32, buffers written back in float16)
    and agrees with the per-layer path."""
    torch.manual_seed(4)
    B, F_, C = 5, 12, 4
    fused, plain = _fused_and_plain(F_, C, lambda m: m.half(), monkeypatch)
    for _ in range(2):
        h = torch.randn(B, F_).half()
        P = torch.softmax(torch.randn(B, C), 1).half()
        torch.testing.assert_close(fused(h, P).float(), plain(h, P).float(), rtol=2e-2, atol=2e-2)
        for (name, a), b in zip(fused.named_buffers(), plain.buffers()):
            assert a.dtype == torch.float16, name
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-3, atol=2e-3, msg=name)
