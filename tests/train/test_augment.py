import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sgan_fast.train.augment import (POLICIES, DiffAugment, cutout_size, diff_augment,
                                     parse_policy, sample_augment, translation_range)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _roll_zero(x, dy, dx):
    """Reference translation: torch.roll, then zero what wrapped around."""
    H, W = x.shape[-2:]
    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1)).clone()
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., H + dy:, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, W + dx:] = 0
    return out


def _reference(x, params):
    """Per-image loop implementation of the documented semantics (the spec for the tests)."""
    outs = []
    for b in range(x.shape[0]):
        xi = x[b:b + 1]
        if "brightness" in params:
            xi = xi + params["brightness"][b:b + 1].to(x.dtype)
            m = xi.mean(dim=1, keepdim=True)
            xi = (xi - m) * params["saturation"][b:b + 1].to(x.dtype) + m
            m = xi.mean(dim=(1, 2, 3), keepdim=True)
            xi = (xi - m) * params["contrast"][b:b + 1].to(x.dtype) + m
        if "translation" in params:
            dy, dx = (int(v) for v in params["translation"][b])
            H, W = xi.shape[-2:]
            if abs(dy) >= H or abs(dx) >= W:
                xi = xi * 0
            else:
                xi = _roll_zero(xi, dy, dx)
        if "cutout" in params:
            H, W = xi.shape[-2:]
            sy, sx = cutout_size(H), cutout_size(W)
            cy, cx = (int(v) for v in params["cutout"][b])
            t, l_ = cy - sy // 2, cx - sx // 2
            mask = torch.ones(H, W, dtype=x.dtype)
            mask[max(t, 0):max(t + sy, 0), max(l_, 0):max(l_ + sx, 0)] = 0
            xi = xi * mask
        outs.append(xi)
    return torch.cat(outs)


# ---------------------------------------------------------------- policy parsing


def test_parse_policy():
    assert parse_policy("") == ()
    assert parse_policy("none") == ()
    assert parse_policy(" None ") == ()
    assert parse_policy("color,translation,cutout") == POLICIES
    assert parse_policy("cutout, color") == ("color", "cutout")  # application order
    assert parse_policy(["translation"]) == ("translation",)


@pytest.mark.parametrize("spec", ["colour", "color,flip", "color,"])
def test_unknown_policy_raises(spec):
    with pytest.raises(ValueError, match="valid names are color, translation, cutout"):
        parse_policy(spec)
    with pytest.raises(ValueError):
        DiffAugment(spec)


def test_duplicate_policy_raises():
    with pytest.raises(ValueError, match="twice"):
        parse_policy("color,cutout,color")


# ---------------------------------------------------------------- identity / purity


def test_empty_policy_is_identity():
    aug = DiffAugment("none")
    assert not aug and aug.policy == ()
    x = torch.randn(2, 3, 8, 8)
    assert aug(x, None) is x
    assert aug(x, aug.sample(2, 8, 8, generator=_gen())) is x
    assert aug.sample(2, 8, 8, generator=_gen()) == {}
    assert diff_augment(x, {}) is x
    assert DiffAugment()  # the default policy is not empty


def test_same_params_bit_identical_and_generator_reproducible():
    aug = DiffAugment()
    x = torch.randn(5, 3, 16, 12)
    p1 = aug.sample(5, 16, 12, generator=_gen(3), device="cpu")
    p2 = aug.sample(5, 16, 12, generator=_gen(3), device="cpu")
    assert p1.keys() == p2.keys()
    for k in p1:
        assert torch.equal(p1[k], p2[k])
    y1, y2 = aug(x, p1), aug(x, p2)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, x)
    p3 = aug.sample(5, 16, 12, generator=_gen(4))
    assert not torch.equal(aug(x, p3), y1)


def test_full_policy_matches_loop_reference():
    aug = DiffAugment()
    x = torch.randn(6, 3, 9, 10)
    p = aug.sample(6, 9, 10, generator=_gen(1))
    torch.testing.assert_close(aug(x, p), _reference(x, p), rtol=1e-6, atol=1e-6)


def test_call_checks_param_keys():
    aug = DiffAugment("color,cutout")
    x = torch.randn(2, 3, 8, 8)
    p = sample_augment("translation", 2, 8, 8, generator=_gen())
    with pytest.raises(ValueError, match="policy"):
        aug(x, p)
    with pytest.raises(ValueError, match="needs params"):
        aug(x, None)
    with pytest.raises(ValueError, match="batch"):
        diff_augment(torch.randn(3, 3, 8, 8), p)


# ---------------------------------------------------------------- translation


@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -1), (-3, 3), (1, 0), (0, -2), (9, 0), (-20, 5)])
def test_translation_matches_roll_with_zero_fill(dy, dx):
    x = torch.randn(2, 3, 8, 7)
    p = {"translation": torch.tensor([[dy, dx], [0, 0]])}
    y = diff_augment(x, p)
    assert torch.equal(y[1], x[1])
    if abs(dy) >= 8 or abs(dx) >= 7:
        assert torch.equal(y[0], torch.zeros_like(x[0]))
    else:
        assert torch.equal(y[0], _roll_zero(x[0], dy, dx))


@given(H=st.sampled_from([1, 2, 5, 7, 12, 20, 28, 32]), W=st.sampled_from([1, 3, 7, 28, 32]),
       seed=st.integers(0, 2**31 - 1))
def test_sampled_ranges(H, W, seed):
    B = 256
    p = sample_augment(POLICIES, B, H, W, generator=_gen(seed))
    ry, rx = translation_range(H), translation_range(W)
    # half-up rounding of size / 8 (not Python's round-half-to-even)
    assert ry == int(H / 8 + 0.5) and rx == int(W / 8 + 0.5)
    t = p["translation"]
    assert t.shape == (B, 2) and t.dtype == torch.int64
    assert t[:, 0].abs().max() <= ry and t[:, 1].abs().max() <= rx
    if ry > 0:  # both extremes are reachable (256 draws from at most 9 values)
        assert t[:, 0].min() == -ry and t[:, 0].max() == ry
    c = p["cutout"]
    sy, sx = cutout_size(H), cutout_size(W)
    assert c[:, 0].min() >= 0 and c[:, 0].max() <= H - sy % 2
    assert c[:, 1].min() >= 0 and c[:, 1].max() <= W - sx % 2
    assert (p["brightness"].abs() <= 0.5).all()
    assert ((p["saturation"] >= 0) & (p["saturation"] <= 2)).all()
    assert ((p["contrast"] >= 0.5) & (p["contrast"] <= 1.5)).all()
    for k in ("brightness", "saturation", "contrast"):
        assert p[k].shape == (B, 1, 1, 1) and p[k].dtype == torch.float32


# ---------------------------------------------------------------- cutout


@pytest.mark.parametrize("H,W,cy,cx,expected", [
    (8, 8, 4, 4, 16),    # 4x4 patch fully inside (rows 2..5)
    (8, 8, 0, 0, 4),     # rows/cols -2..1 clipped to 0..1
    (8, 8, 8, 8, 4),     # rows/cols 6..9 clipped to 6..7
    (8, 8, 0, 4, 8),     # clipped in rows only
    (7, 7, 3, 3, 16),    # odd side: patch side round-half-up(3.5) = 4, rows 1..4
    (7, 7, 0, 6, 2 * 3),  # rows 0..1 (clipped), cols 4..6 (clipped)
    (5, 9, 2, 4, 3 * 5),  # patch 3 x 5 (2.5 -> 3, 4.5 -> 5)
])
def test_cutout_zeroes_expected_rectangle(H, W, cy, cx, expected):
    x = torch.ones(1, 2, H, W)
    y = diff_augment(x, {"cutout": torch.tensor([[cy, cx]])})
    zeros = (y[0, 0] == 0)
    assert int(zeros.sum()) == expected
    assert torch.equal(y[0, 0], y[0, 1])
    # the zeros form one rectangle: the bounding box is all zeros
    rows, cols = zeros.nonzero(as_tuple=True)
    assert int(zeros[rows.min():rows.max() + 1, cols.min():cols.max() + 1].sum()) == expected
    sy, sx = cutout_size(H), cutout_size(W)
    assert int(rows.min()) == max(cy - sy // 2, 0) and int(cols.min()) == max(cx - sx // 2, 0)


# ---------------------------------------------------------------- colour


def _color_params(b, s, c):
    t = lambda v: torch.tensor(v, dtype=torch.float32).reshape(-1, 1, 1, 1)  # noqa: E731
    return {"brightness": t(b), "saturation": t(s), "contrast": t(c)}


def test_brightness_adds_offset_on_constant_image():
    x = torch.full((2, 3, 4, 4), 0.25)
    y = diff_augment(x, _color_params([0.3, -0.4], [1.7, 0.2], [1.4, 0.6]))
    # constant image: saturation and contrast keep it (it is its own mean)
    torch.testing.assert_close(y[0], torch.full_like(x[0], 0.55))
    torch.testing.assert_close(y[1], torch.full_like(x[1], -0.15))


def test_saturation_of_grey_image_is_identity():
    g = torch.randn(2, 1, 5, 6)
    x = g.expand(2, 3, 5, 6).contiguous()
    y = diff_augment(x, _color_params([0.0, 0.0], [1.9, 0.1], [1.0, 1.0]))
    torch.testing.assert_close(y, x)
    # while a coloured image does change
    xc = torch.randn(2, 3, 5, 6)
    assert not torch.allclose(diff_augment(xc, _color_params([0.0, 0.0], [1.9, 0.1],
                                                             [1.0, 1.0])), xc)


def test_contrast_keeps_mean():
    x = torch.randn(2, 3, 6, 6)
    y = diff_augment(x, _color_params([0.0, 0.0], [1.0, 1.0], [1.45, 0.55]))
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    torch.testing.assert_close(y - y.mean(dim=(1, 2, 3), keepdim=True),
                               (x - x.mean(dim=(1, 2, 3), keepdim=True))
                               * torch.tensor([1.45, 0.55]).reshape(2, 1, 1, 1))


# ---------------------------------------------------------------- gradients


def test_gradcheck_float64():
    x = torch.randn(3, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    p = sample_augment(POLICIES, 3, 5, 4, generator=_gen(7))
    p = {k: (v.double() if v.is_floating_point() else v) for k, v in p.items()}
    p["translation"][0] = torch.tensor([1, -1])  # make sure some shift is non-zero
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, p), (x,))


def test_gradient_matches_reference():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    p = sample_augment(POLICIES, 4, 8, 8, generator=_gen(11))
    w = torch.randn(4, 3, 8, 8)
    (g,) = torch.autograd.grad((diff_augment(x, p) * w).sum(), x)
    (g_ref,) = torch.autograd.grad((_reference(x, p) * w).sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
    assert g.abs().sum() > 0


# ---------------------------------------------------------------- layouts / dtypes


@pytest.mark.parametrize("C", [1, 3])
def test_channel_counts(C):
    aug = DiffAugment()
    x = torch.randn(4, C, 12, 12)
    p = aug.sample(4, 12, 12, generator=_gen(2))
    y = aug(x, p)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, _reference(x, p), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("C", [1, 3])
def test_channels_last_same_values(C):
    aug = DiffAugment()
    x = torch.randn(4, C, 10, 9)
    xl = x.contiguous(memory_format=torch.channels_last)
    p = aug.sample(4, 10, 9, generator=_gen(5))
    y, yl = aug(x, p), aug(xl, p)
    # colour's means may reduce in another order for the other layout: equal up to rounding
    torch.testing.assert_close(y, yl, rtol=1e-6, atol=1e-6)
    # translation and cutout only move and zero values: bit-identical
    geo = {k: p[k] for k in ("translation", "cutout")}
    assert torch.equal(diff_augment(x, geo), diff_augment(xl, geo))
    if C > 1:
        assert yl.is_contiguous(memory_format=torch.channels_last)
    # and the gradient is the same too
    xr = x.clone().requires_grad_(True)
    xlr = xl.clone().requires_grad_(True)
    aug(xr, p).square().sum().backward()
    aug(xlr, p).square().sum().backward()
    torch.testing.assert_close(xr.grad, xlr.grad, rtol=1e-6, atol=1e-6)


def test_bfloat16_stays_bfloat16():
    aug = DiffAugment()
    x = torch.randn(3, 3, 8, 8)
    p = aug.sample(3, 8, 8, generator=_gen(9))
    y = aug(x.bfloat16(), p)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), aug(x, p), rtol=0.05, atol=0.1)


def test_sample_device_and_generator_device():
    p = sample_augment(POLICIES, 2, 8, 8, generator=_gen(), device="meta")
    assert all(v.device.type == "meta" for v in p.values())
    p = sample_augment("color", 2, 8, 8, generator=None)
    assert set(p) == {"brightness", "saturation", "contrast"}


@pytest.mark.gpu
def test_cuda_matches_cpu_with_cpu_generator():
    aug = DiffAugment()
    x = torch.randn(4, 3, 16, 16)
    p_cpu = aug.sample(4, 16, 16, generator=_gen(1))
    p_gpu = aug.sample(4, 16, 16, generator=_gen(1), device="cuda")
    assert all(v.is_cuda for v in p_gpu.values())
    torch.testing.assert_close(aug(x.cuda(), p_gpu).cpu(), aug(x, p_cpu))
