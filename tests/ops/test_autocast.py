"""Every op gives the same result inside a bf16 autocast region as outside: it picks its own
computation dtype (its inputs') and accumulates in float32, whatever autocast says. Left to
autocast, the matrix products inside the reference and C++ implementations would run in
bf16 and the C++ kernels would read bf16 buffers as float32."""

import pytest
import torch

from sgan_fast.nn import SNConv2d, SoftLabelProjectionHead
from sgan_fast.ops import bank_lookup, spectral_norm_grouped

from ..labels._banks import random_bank

IMPLS = ["ref", "cpu"]


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("labels", ["dense", "bank", "hard"])
def test_softlabel_head_ignores_autocast(impl, labels):
    torch.manual_seed(0)
    B, F, C = 6, 16, 5
    head = SoftLabelProjectionHead(F, C, impl=impl).eval()
    h = torch.randn(B, F, requires_grad=True)
    bank = random_bank(12, C)
    idx = torch.randint(0, 12, (B,))
    lab = {"dense": torch.softmax(torch.randn(B, C), 1), "bank": bank.labels(idx, "softmax"),
           "hard": torch.randint(0, C, (B,))}[labels]
    plain = head(h, lab)
    (g_plain,) = torch.autograd.grad(plain.sum(), h)
    with _bf16():
        auto = head(h, lab)
    (g_auto,) = torch.autograd.grad(auto.sum(), h)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_auto, g_plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_grouped_spectral_norm_and_sn_layers_ignore_autocast(impl):
    torch.manual_seed(0)
    ws = [torch.randn(8, 12), torch.randn(5, 3, 3, 3)]
    us = [torch.randn(8), torch.randn(5)]
    plain, s_plain = spectral_norm_grouped(ws, [u.clone() for u in us], training=False, impl=impl,
                                           return_scales=True)
    with _bf16():
        auto, s_auto = spectral_norm_grouped(ws, [u.clone() for u in us], training=False,
                                             impl=impl, return_scales=True)
    torch.testing.assert_close(s_auto, s_plain, rtol=1e-6, atol=0)
    for a, b in zip(auto, plain):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    conv = SNConv2d(3, 4, 3, num_svs=2)          # the per-layer loop (num_svs > 1)
    u0 = conv.u0.clone()
    with torch.no_grad():
        ref_u, ref_v = conv.power_iteration()
    conv.u0.copy_(u0)
    with _bf16(), torch.no_grad():
        u, v = conv.power_iteration()
    assert u.dtype == torch.float32
    torch.testing.assert_close(u, ref_u, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_bank_lookup_ignores_autocast(impl):
    bank = random_bank(20, 7)
    idx = torch.randint(0, 20, (9,))
    plain = bank_lookup(bank.plan("softmax:0.5"), idx, out="dense", impl=impl)
    with _bf16():
        auto = bank_lookup(bank.plan("softmax:0.5"), idx, out="dense", impl=impl)
    assert auto.dtype == plain.dtype
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_backward_inside_autocast_matches_float32(impl):
    """Code that calls backward inside its autocast region (some GAN codebases do)."""
    torch.manual_seed(1)
    head = SoftLabelProjectionHead(16, 5, impl=impl).eval()
    h = torch.randn(6, 16, requires_grad=True)
    P = torch.softmax(torch.randn(6, 5), 1)
    (g_plain,) = torch.autograd.grad(head(h, P).sum(), h)
    with _bf16():
        (g_auto,) = torch.autograd.grad(head(h, P).sum(), h)
    torch.testing.assert_close(g_auto, g_plain, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_compiled_head_inside_autocast_has_no_graph_break():
    """The trainer's fast path compiles under bf16 autocast: the autocast-off region must
    trace (an ExitStack of autocast contexts did not)."""
    torch.manual_seed(0)
    head = SoftLabelProjectionHead(16, 5, impl="cpu").eval()
    h, P = torch.randn(6, 16), torch.softmax(torch.randn(6, 5), 1)

    def f(h, P):
        with _bf16():
            return head(h, P)

    eager = f(h, P)
    compiled = torch.compile(f, fullgraph=True)(h, P)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
