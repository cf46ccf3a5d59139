"""BigGAN generator and discriminator: shapes, label forms, fused spectral norm, init, checks."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgan_fast.labels import SoftLabelBank
from sgan_fast.models import RESOLUTIONS, Discriminator, Generator, init_weights
from sgan_fast.models.layers import DBlock, GBlock, SelfAttention

C = 5


def _z(G, B, seed=0):
    return torch.randn(B, G.z_dim, generator=torch.Generator().manual_seed(seed))


def _x(D, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, D.in_channels, D.resolution, D.resolution, generator=g) * 2 - 1


def _twin(model, **changes):
    """A second model from the first's config (with `changes`) and the same state."""
    other = type(model)(**{**model.config, **changes})
    other.load_state_dict(model.state_dict())
    return other


def _randomise_affine(model):
    """Non-trivial values where init leaves constants (attention gamma = 0, BN gain 1 and
    bias 0), so that comparisons exercise those paths too."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or "out_bn" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))


# --- shapes -------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution,ch,attention,channels", [
    (32, 4, None, 3), (32, 4, 16, 1), (64, 2, 32, 3), (64, 2, None, 1),
    (128, 2, None, 3), (128, 4, 64, 1)])
def test_generator_shapes_and_range(resolution, ch, attention, channels):
    torch.manual_seed(0)
    G = Generator(resolution, C, ch=ch, attention=attention, out_channels=channels)
    B = 3
    y = torch.tensor([0, 4, 2])
    z = _z(G, B).requires_grad_(True)
    out = G(z, y)
    assert out.shape == (B, channels, resolution, resolution)
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    assert out.std() > 1e-3  # not a constant image
    assert (G.attention is not None) == (attention is not None)
    out.mean().backward()
    assert G.linear.weight.grad is not None and G.shared.weight.grad.abs().sum() > 0
    # hierarchical z: every chunk (input layer, then one per block) reaches the image
    per_chunk = z.grad.abs().view(B, G.num_slots, -1).sum(dim=(0, 2))
    assert (per_chunk > 0).all()
    assert G.z_dim == (128 if resolution == 32 else 120)
    assert len(G.blocks) + 1 == G.num_slots == {32: 4, 64: 5, 128: 6}[resolution]


@pytest.mark.parametrize("resolution,ch,attention,channels", [
    (32, 4, None, 3), (32, 4, 8, 1), (64, 2, 8, 3), (128, 2, None, 1), (128, 4, 32, 3)])
def test_discriminator_shapes(resolution, ch, attention, channels):
    torch.manual_seed(0)
    D = Discriminator(resolution, C, ch=ch, attention=attention, in_channels=channels)
    B = 3
    x = _x(D, B).requires_grad_(True)
    h = D.features(x)
    F_ = ch * {32: 4, 64: 16, 128: 16}[resolution]
    assert h.shape == (B, F_) == (B, D.num_features)
    assert (h >= 0).all()  # ReLU before the sum
    out = D(x, torch.tensor([1, 0, 4]))
    assert out.shape == (B,) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    assert (D.trunk.attention is not None) == (attention is not None)


def test_resolutions_constant():
    assert RESOLUTIONS == (32, 64, 128)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_architecture_tables(resolution):
    ch = 2
    G = Generator(resolution, C, ch=ch, fused_sn=False)
    g_in, g_out = {32: ([4] * 3, [4] * 3), 64: ([16, 16, 8, 4], [16, 8, 4, 2]),
                   128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1])}[resolution]
    assert [b.conv1.in_channels for b in G.blocks] == [ch * m for m in g_in]
    assert [b.conv2.out_channels for b in G.blocks] == [ch * m for m in g_out]
    assert G.linear.out_features == 16 * ch * g_in[0]
    assert G.blocks[0].bn1.gain.in_features == 128 + G.z_dim // G.num_slots
    D = Discriminator(resolution, C, ch=ch, fused_sn=False)
    d_out, down = {32: ([4] * 4, [1, 1, 0, 0]), 64: ([1, 2, 4, 8, 16], [1, 1, 1, 1, 0]),
                   128: ([1, 2, 4, 8, 16, 16], [1, 1, 1, 1, 1, 0])}[resolution]
    blocks = list(D.trunk.blocks)
    assert [b.conv2.out_channels for b in blocks] == [ch * m for m in d_out]
    assert [b.conv1.in_channels for b in blocks] == [3] + [ch * m for m in d_out[:-1]]
    assert [int(b.downsample) for b in blocks] == down
    assert [b.preactivation for b in blocks] == [False] + [True] * (len(blocks) - 1)


def _eval_bn(bn, g):
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))


def test_blocks_match_a_functional_restatement():
    """The blocks in eval mode (running statistics; W_() does not move u) against the
    architecture written out with functional ops."""
    g = torch.Generator().manual_seed(9)
    conv = (lambda layer, x: F.conv2d(x, layer.W_(), layer.bias, padding=layer.padding))
    up = (lambda x: x.repeat_interleave(2, 2).repeat_interleave(2, 3))

    blk = GBlock(6, 4, cond_dim=7, bn_eps=1e-4).eval()
    for bn in (blk.bn1.bn, blk.bn2.bn):
        _eval_bn(bn, g)
    x, cond = torch.randn(2, 6, 5, 5, generator=g), torch.randn(2, 7, generator=g)

    def cbn(m, x):
        xn = (x - m.bn.running_mean[:, None, None]) / (m.bn.running_var[:, None, None] + 1e-4).sqrt()
        gain = 1 + cond @ m.gain.W_().t()
        return xn * gain[:, :, None, None] + (cond @ m.bias.W_().t())[:, :, None, None]

    h = conv(blk.conv1, up(F.relu(cbn(blk.bn1, x))))
    h = conv(blk.conv2, F.relu(cbn(blk.bn2, h)))
    want = h + conv(blk.conv_sc, up(x))
    torch.testing.assert_close(blk(x, cond), want, rtol=1e-5, atol=1e-5)

    x = torch.randn(2, 3, 8, 8, generator=g)
    first = DBlock(3, 4, preactivation=False, downsample=True).eval()
    h = F.avg_pool2d(conv(first.conv2, F.relu(conv(first.conv1, x))), 2)
    want = h + conv(first.conv_sc, F.avg_pool2d(x, 2))
    torch.testing.assert_close(first(x), want, rtol=1e-5, atol=1e-5)
    for down in (True, False):
        inner = DBlock(4, 4, preactivation=True, downsample=down).eval()
        assert (inner.conv_sc is None) == (not down)  # identity skip without a reason to learn one
        y = torch.randn(2, 4, 8, 8, generator=g)
        h = conv(inner.conv2, F.relu(conv(inner.conv1, F.relu(y))))
        want = F.avg_pool2d(h, 2) + F.avg_pool2d(conv(inner.conv_sc, y), 2) if down else h + y
        torch.testing.assert_close(inner(y), want, rtol=1e-5, atol=1e-5)

    att = SelfAttention(16).eval()
    with torch.no_grad():
        att.gamma.fill_(0.7)
    x = torch.randn(2, 16, 4, 6, generator=g)
    q = conv(att.theta, x).flatten(2)                      # [B, 2, 24]
    k = F.max_pool2d(conv(att.phi, x), 2).flatten(2)       # [B, 2, 6]
    v = F.max_pool2d(conv(att.g, x), 2).flatten(2)         # [B, 8, 6]
    a = torch.softmax(torch.einsum("bcq,bck->bqk", q, k), -1)
    o = conv(att.o, torch.einsum("bck,bqk->bcq", v, a).reshape(2, 8, 4, 6))
    torch.testing.assert_close(att(x), x + 0.7 * o, rtol=1e-5, atol=1e-5)


# --- labels -------------------------------------------------------------------------------

def test_generator_int_labels_equal_one_hot_vectors():
    torch.manual_seed(1)
    G = Generator(32, C, ch=4, attention=16)
    _randomise_affine(G)
    y = torch.tensor([3, 0, 4, 3])
    z = _z(G, 4)
    G.train()  # batch statistics; two identical twins so both see the same u vectors
    G2 = _twin(G)
    torch.testing.assert_close(G(z, y), G2(z, F.one_hot(y, C).float()), rtol=0, atol=1e-6)
    G.eval()
    G2.eval()
    torch.testing.assert_close(G(z, y), G2(z, F.one_hot(y, C).float()), rtol=0, atol=1e-6)
    assert (G(z, y) - G(z, (y + 1) % C)).abs().max() > 1e-4  # the class does matter


def test_generator_soft_vectors_mix_the_embeddings():
    torch.manual_seed(2)
    G = Generator(32, C, ch=4).eval()
    p = torch.softmax(torch.randn(3, C), 1)
    rows = G.class_embedding(torch.arange(C))
    mix = sum(p[:, c:c + 1] * rows[c] for c in range(C))
    torch.testing.assert_close(G.class_embedding(p), mix, rtol=1e-5, atol=1e-6)
    out = G(_z(G, 3), p)
    assert out.shape == (3, 3, 32, 32)
    # a soft vector is neither of its classes: its image differs from both one-hot images
    half = torch.zeros(1, C)
    half[0, 1] = half[0, 2] = 0.5
    z = _z(G, 1)
    soft = G(z, half)
    for c in (1, 2):
        assert (soft - G(z, torch.tensor([c]))).abs().max() > 1e-5


def _bank(N=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (N,), generator=g)
    logits = 2 * torch.randn(N, C, generator=g)
    logits[torch.arange(N), labels] += 2
    return SoftLabelBank(torch.softmax(logits.double(), 1).float(), labels, renormalize=True)


def test_discriminator_label_forms_agree():
    torch.manual_seed(3)
    D = Discriminator(32, C, ch=4, attention=16).eval()
    _randomise_affine(D)
    bank = _bank()
    idx = torch.tensor([0, 5, 11, 5])
    x = _x(D, 4)
    dense = bank.lookup(idx, "softmax", out="dense")
    assert dense.shape == (4, C)
    ref = D(x, dense)
    torch.testing.assert_close(D(x, bank.labels(idx, "softmax")), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(D(x, (bank, idx, "softmax")), ref, rtol=1e-5, atol=1e-5)
    y = torch.tensor([2, 0, 4, 1])
    hard = D(x, y)
    torch.testing.assert_close(hard, D(x, F.one_hot(y, C).float()), rtol=1e-5, atol=1e-5)
    assert (hard - ref).abs().max() > 1e-5  # soft and hard labels score differently

    # the trainer's pattern: trunk once on real + fake, head on each half
    fake = _x(D, 4, seed=1)
    h = D.trunk(torch.cat([x, fake]))
    torch.testing.assert_close(D.head(h[:4], bank.labels(idx, "softmax")), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(D.head(h[4:], y), D(fake, y), rtol=1e-5, atol=1e-5)


# --- fused spectral norm and implementations ------------------------------------------------

def _train_steps(model, inputs, steps=2):
    """Training-mode forward + backward `steps` times; outputs, gradients, buffers."""
    model.train()
    outs = []
    for _ in range(steps):
        model.zero_grad()
        out = model(*inputs)
        (out.float() ** 2).mean().backward()
        outs.append(out.detach())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return outs, grads, {n: b.clone() for n, b in model.named_buffers()}


def _assert_same_training(a, b, rtol, atol):
    (outs_a, grads_a, bufs_a), (outs_b, grads_b, bufs_b) = a, b
    for x, y in zip(outs_a, outs_b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=rtol, atol=atol, msg=n)
    assert bufs_a.keys() == bufs_b.keys()
    for n in bufs_a:
        torch.testing.assert_close(bufs_a[n], bufs_b[n], rtol=rtol, atol=atol, msg=n)


def _g_and_inputs(**kw):
    torch.manual_seed(4)
    G = Generator(32, C, ch=4, attention=16, **kw)
    _randomise_affine(G)
    return G, (_z(G, 4), torch.tensor([0, 1, 4, 1]))


def _d_and_inputs(**kw):
    torch.manual_seed(5)
    D = Discriminator(32, C, ch=4, attention=8, **kw)
    _randomise_affine(D)
    return D, (_x(D, 4), torch.softmax(torch.randn(4, C), 1))


@pytest.mark.parametrize("make", [_g_and_inputs, _d_and_inputs], ids=["G", "D"])
def test_fused_sn_equals_per_layer_updates(make):
    model, inputs = make(fused_sn=False)
    assert model.sn_fusion is None
    fused = _twin(model, fused_sn=True)
    assert fused.sn_fusion is not None and len(fused.sn_fusion.layers) > 10
    u_before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("u0")}
    a = _train_steps(model, inputs)
    b = _train_steps(fused, inputs)
    _assert_same_training(a, b, rtol=1e-5, atol=1e-6)
    moved = [n for n, u in u_before.items() if not torch.equal(u, a[2][n])]
    assert len(moved) == len(u_before)  # every layer's power iteration ran


@pytest.mark.parametrize("make", [_g_and_inputs, _d_and_inputs], ids=["G", "D"])
def test_fused_sn_follows_the_model_to_a_new_dtype(make):
    """.double() (like .to(device)) replaces the u0 buffers; the fused update must use the
    new ones, as the per-layer updates do."""
    model, inputs = make(fused_sn=False)
    fused = _twin(model, fused_sn=True).double()
    model.double()
    inputs = tuple(t.double() if t.is_floating_point() else t for t in inputs)
    a, b = _train_steps(model, inputs), _train_steps(fused, inputs)
    assert b[0][0].dtype == torch.float64 and fused.sn_fusion is not None
    _assert_same_training(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [_g_and_inputs, _d_and_inputs], ids=["G", "D"])
def test_ref_and_cpu_kernels_agree(make):
    model, inputs = make(impl="ref")
    fast = _twin(model, impl="auto")
    assert {m.sn_impl for m in model.modules() if hasattr(m, "sn_impl")} == {"ref"}
    if isinstance(model, Discriminator):
        assert model.head.impl == "ref" and fast.head.impl == "auto"
    _assert_same_training(_train_steps(model, inputs), _train_steps(fast, inputs),
                          rtol=1e-4, atol=1e-5)


# --- init ---------------------------------------------------------------------------------

def test_init_n02_and_zero_biases():
    torch.manual_seed(6)
    layer = nn.Linear(1024, 512)
    init_weights(layer, "N02")
    w = layer.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.0005 and abs(float(w.mean())) < 0.0005
    assert torch.count_nonzero(layer.bias) == 0
    G = Generator(32, C, ch=8, init="N02")
    w = G.blocks[0].conv1.weight.detach()  # 32 x 32 x 3 x 3
    assert abs(float(w.std()) - 0.02) < 0.001
    assert torch.count_nonzero(G.blocks[0].conv1.bias) == 0
    assert abs(float(G.shared.weight.detach().std()) - 0.02) < 0.004


def test_init_ortho_and_xavier():
    torch.manual_seed(7)
    wide, tall = nn.Linear(256, 32), nn.Conv2d(8, 128, 3)  # [32, 256] and [128, 72]
    init_weights(nn.Sequential(wide, tall), "ortho")
    W = wide.weight
    torch.testing.assert_close(W @ W.t(), torch.eye(32), rtol=0, atol=1e-5)
    T = tall.weight.view(128, -1)
    torch.testing.assert_close(T.t() @ T, torch.eye(72), rtol=0, atol=1e-5)
    D = Discriminator(32, C, ch=4, init="ortho")
    E = D.head.embed.weight  # [F, C], tall
    torch.testing.assert_close(E.t() @ E, torch.eye(C), rtol=0, atol=1e-5)
    layer = nn.Linear(300, 100)
    init_weights(layer, "xavier")
    bound = (6 / 400) ** 0.5
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    with pytest.raises(ValueError, match="init must be one of ortho, N02, xavier"):
        init_weights(layer, "kaiming")
    with pytest.raises(ValueError, match="init must be one of"):
        Generator(32, C, ch=4, init="glorot")


# --- bad input ----------------------------------------------------------------------------

def test_generator_bad_inputs():
    G = Generator(32, C, ch=4)
    z = _z(G, 2)
    with pytest.raises(ValueError, match=r"z must be \[B, z_dim=128\], got \(2, 120\)"):
        G(torch.randn(2, 120), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"z must be \[B, z_dim=128\]"):
        G(torch.randn(128), torch.tensor([0]))
    with pytest.raises(IndexError, match=r"y: class index 5 is outside \[0, num_classes=5\)"):
        G(z, torch.tensor([0, 5]))
    with pytest.raises(IndexError, match="class index -1"):
        G(z, torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match=r"y \(class indices\) must be \[B=2\], got \(3,\)"):
        G(z, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"y \(class vectors\) must be \[B=2, C=5\], got \(2, 4\)"):
        G(z, torch.rand(2, 4))
    G.check_inputs = False  # skipped: torch's own embedding lookup is what fails now
    with pytest.raises(IndexError):
        G(z, torch.tensor([0, 5]))


def test_discriminator_bad_inputs():
    D = Discriminator(32, C, ch=4)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"x must be images \[B, in_channels=3, 32, 32\], "
                                         r"got \(2, 3, 64, 64\)"):
        D(torch.randn(2, 3, 64, 64), y)
    with pytest.raises(ValueError, match=r"in_channels=3.*got \(2, 1, 32, 32\)"):
        D.features(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x must be images"):
        D(torch.randn(3, 32, 32), y)
    D.check_inputs = False  # a 64 px image runs through a 32 px D when the check is off
    assert D(torch.randn(2, 3, 64, 64), y).shape == (2,)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="resolution must be one of 32, 64, 128, got 48"):
        Generator(48, C)
    with pytest.raises(ValueError, match="resolution must be one of 32, 64, 128, got 256"):
        Discriminator(256, C)
    with pytest.raises(ValueError, match=r"attention=64: .*32 px generator.*choose one of "
                                         r"8, 16, 32"):
        Generator(32, C, ch=4, attention=64)
    with pytest.raises(ValueError, match=r"attention=128: .*128 px discriminator.*choose one "
                                         r"of 4, 8, 16, 32, 64"):
        Discriminator(128, C, ch=4, attention=128)
    with pytest.raises(ValueError, match="z_dim must be a positive multiple of 4"):
        Generator(32, C, ch=4, z_dim=130)
    with pytest.raises(ValueError, match="z_dim must be a positive multiple of 6"):
        Generator(128, C, ch=2, z_dim=128)
    with pytest.raises(ValueError, match="impl must be one of auto"):
        Discriminator(32, C, ch=4, impl="fast")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        Generator(32, 0, ch=4)
    with pytest.raises(ValueError, match="at least 8 channels"):
        SelfAttention(4)


# --- rebuild ------------------------------------------------------------------------------

def test_rebuild_from_config():
    torch.manual_seed(8)
    G = Generator(64, C, ch=2, attention=32, out_channels=1, z_dim=100, init="N02")
    D = Discriminator(64, C, ch=2, attention=8, in_channels=1, fused_sn=False)
    for model in (G, D):
        assert json.loads(json.dumps(model.config)) == model.config  # plain values only
    assert G.config["z_dim"] == 100 and G.config["attention"] == 32
    z, y = _z(G, 2), torch.tensor([4, 0])
    G(z, y)  # a training-mode call moves u0, sv0 and the BN statistics away from init
    G.eval()
    G2 = _twin(G).eval()
    assert G2.sn_fusion is not None and G2.config == G.config
    torch.testing.assert_close(G2(z, y), G(z, y), rtol=0, atol=0)
    x = _x(D, 2)
    D(x, y)
    D.eval()
    D2 = _twin(D).eval()
    torch.testing.assert_close(D2(x, y), D(x, y), rtol=0, atol=0)
