"""Gradient accumulation (--d-accumulate, --g-accumulate) against one call on the whole batch."""

import dataclasses

import pytest
import torch

from sgan_fast.train import CheckpointError, Trainer

from ._runs import params, soft_bank, tiny_config, tiny_dataset

# Everything a micro-batch must take its own slice of: soft labels from the bank, DiffAugment
# (colour, translation, cutout: per-image parameters), flips, LeCam (its averages follow the
# whole batch's means), consistency regularisation (D on the un-augmented real images too).
RUN = dict(steps=3, batch_size=8, d_steps=2, lecam=0.1, cr=1.0, deterministic=True)


@pytest.fixture(autouse=True)
def float64():
    """The runs are compared in float64. In float32 the two summation orders differ in the
    last bits, and a few GAN steps amplify that: after 4 steps of this tiny run G's Adam
    moments differ by ~1e-2 relative between two float32 runs of the same arithmetic in
    another order. In float64 only D's soft-label head still runs in float32 (the trainer
    casts the trunk's features), which leaves ~1e-6 relative after 3 steps."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _train(**kw):
    ds = tiny_dataset()
    t = Trainer(tiny_config(**dict(RUN, **kw)), ds, bank=soft_bank(ds))
    t.fit()
    state = params(t)
    state["lecam"] = torch.stack([t.lecam.ema_real, t.lecam.ema_fake])
    return t, state


def _ghost_batch_norm(model, k):
    """Every BatchNorm2d of `model` normalises k equal chunks of its batch one after the
    other, each by its own statistics, updating the running statistics after each: what the
    layer sees when the batch comes in k micro-batches."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            whole = m.forward
            m.forward = lambda x, whole=whole: torch.cat([whole(c) for c in x.chunk(k)])


def _assert_close(a, b, *, rel=2e-5, floor=1e-8):
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        x, y = a[key].double(), b[key].double()
        err = (x - y).abs().max().item() if x.numel() else 0.0
        assert err <= floor + rel * y.abs().max().item(), (key, err)
        worst = max(worst, err)
    return worst


def test_d_accumulation_trains_like_the_whole_batch():
    t1, whole = _train()
    t2, accumulated = _train(d_accumulate=4)          # micro-batches of 2
    _assert_close(accumulated, whole)
    # the spectral-norm vectors took one power-iteration step per update, not one per
    # micro-batch: a step per micro-batch would leave them measurably elsewhere
    u1 = [b for n, b in t1.D.named_buffers() if n.endswith("u0")]
    u2 = [b for n, b in t2.D.named_buffers() if n.endswith("u0")]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(u1, u2))
    # and the run differs from one whose micro-batch is the whole batch (the test can fail)
    _, smaller = _train(batch_size=2)
    with pytest.raises(AssertionError):
        _assert_close(smaller, whole)


def test_g_accumulation_is_the_whole_batch_with_batch_norm_per_micro_batch(monkeypatch):
    ds = tiny_dataset()
    bank = soft_bank(ds)
    cfg = tiny_config(**RUN)
    ghost = Trainer(cfg, ds, bank=bank)
    _ghost_batch_norm(ghost.G, 2)
    ghost.fit()
    acc = Trainer(dataclasses.replace(cfg, g_accumulate=2), ds, bank=bank)
    acc.fit()
    _assert_close(params(acc), params(ghost))
    # plain batch norm over the whole batch is another model: the difference is G's
    _, whole = _train()
    with pytest.raises(AssertionError):
        _assert_close(params(acc), whole)


def test_both_accumulations_together_and_logged_losses_are_the_whole_batchs():
    ds = tiny_dataset()
    bank = soft_bank(ds)
    cfg = tiny_config(**RUN)
    rows = {}
    for name, kw in (("ghost", {}), ("acc", dict(d_accumulate=2, g_accumulate=2))):
        t = Trainer(dataclasses.replace(cfg, **kw), ds, bank=bank)
        if name == "ghost":
            _ghost_batch_norm(t.G, 2)
        got = []
        t.callbacks = (lambda tr: got.append(tr._acc.clone()),)
        t.fit()
        rows[name] = (torch.stack(got), params(t))
    assert torch.allclose(rows["acc"][0], rows["ghost"][0], rtol=1e-4, atol=1e-5)
    _assert_close(rows["acc"][1], rows["ghost"][1])


def test_accumulation_settings_are_checked_and_d_accumulate_may_change_on_resume(tmp_path):
    ds = tiny_dataset()
    bank = soft_bank(ds)
    with pytest.raises(ValueError, match="d_accumulate 3 does not divide the batch of a step"):
        Trainer(tiny_config(d_accumulate=3), ds, bank=bank)
    with pytest.raises(ValueError, match="g_accumulate must be a positive integer"):
        Trainer(tiny_config(g_accumulate=0), ds, bank=bank)
    out = str(tmp_path / "run")
    Trainer(tiny_config(steps=1, **{k: RUN[k] for k in ("lecam", "cr")}), ds, bank=bank,
            out=out).fit()
    # a memory setting: the same updates up to rounding
    t = Trainer.resume(tiny_config(steps=2, d_accumulate=2, lecam=0.1, cr=1.0), ds, out,
                       bank=bank, out=out)
    assert t.step == 1 and t.fit().step == 2
    # G's batch statistics change with g_accumulate: another model
    with pytest.raises(CheckpointError, match="g_accumulate: checkpoint 1, now 2"):
        Trainer.resume(tiny_config(steps=3, g_accumulate=2, lecam=0.1, cr=1.0), ds, out,
                       bank=bank, out=out)
