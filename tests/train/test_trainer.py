"""The trainer on the CPU: it learns something, resumes bit for bit, never keeps a NaN state,
and the fast path matches the reference."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from sgan_fast.train import NonFiniteLossError, Trainer, load_checkpoint
from sgan_fast.train.checkpoint import CheckpointError
from sgan_fast.train.sampling import class_grid

from ._runs import params, soft_bank, tiny_config, tiny_dataset


def test_short_run_learns_and_writes_its_outputs(tmp_path):
    ds = tiny_dataset()
    cfg = tiny_config(steps=6, ckpt_every=3, sample_every=3)
    t = Trainer(cfg, ds, bank=soft_bank(ds), out=str(tmp_path))
    g0 = {k: v.clone() for k, v in t.G.state_dict().items()}
    grid0 = class_grid(t.G_ema, 3, 4, seed=1)
    res = t.fit()
    assert res.status == "done" and res.step == 6
    grid1 = class_grid(t.G_ema, 3, 4, seed=1)
    assert grid1.shape == (12, 1, 32, 32) and grid1.dtype == torch.uint8
    assert (grid1.float() - grid0.float()).abs().mean() > 0.5      # the images changed
    assert any(not torch.equal(g0[k], v) for k, v in t.G.state_dict().items() if k.endswith("weight"))
    with torch.no_grad():
        x = t.G(torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1]))
    assert x.shape == (5, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    rows = open(tmp_path / "log.csv").read().splitlines()
    assert rows[0].startswith("step,d_loss") and len(rows) == 7
    d_losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert len(set(d_losses)) > 1 and all(map(lambda v: v == v, d_losses))
    for f in ("config.yaml", "checkpoints/latest.pt", "samples/step-0000003.png",
              "samples/step-0000006.png", "samples/final.png"):
        assert (tmp_path / f).exists(), f
    state = load_checkpoint(tmp_path)
    assert state["step"] == 6 and state["config"]["target"] == "softmax"


def _run_to_end(tmp, ds, bank, **kw):
    t = Trainer(tiny_config(deterministic=True, lecam=0.1, **kw), ds, bank=bank, out=tmp)
    assert t.fit().status == "done"
    return params(t)


def test_sigterm_then_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    ds = tiny_dataset()
    bank = soft_bank(ds)
    try:
        full = _run_to_end(str(tmp_path / "full"), ds, bank, steps=5)

        def kill_at_2(trainer):
            if trainer.step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        out = str(tmp_path / "cut")
        cfg = tiny_config(deterministic=True, lecam=0.1, steps=5)
        t = Trainer(cfg, ds, bank=bank, out=out, callbacks=(kill_at_2,))
        before = signal.getsignal(signal.SIGTERM)
        res = t.fit()
        assert res.status == "interrupted" and res.step == 2 and res.signal == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is before      # the handler is given back
        assert load_checkpoint(out)["step"] == 2
        t2 = Trainer.resume(cfg, ds, out, bank=bank, out=out)
        assert t2.step == 2
        assert t2.fit().status == "done"
        resumed = params(t2)
    finally:
        torch.use_deterministic_algorithms(False)
    assert full.keys() == resumed.keys()
    differ = [k for k in full if not torch.equal(full[k], resumed[k])]
    assert not differ, f"differ after resume: {differ[:5]}"
    # the log has each step once
    steps = [r.split(",")[0] for r in open(os.path.join(out, "log.csv")).read().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4", "5"]


def test_resume_refuses_other_settings_and_other_data(tmp_path):
    ds = tiny_dataset()
    out = str(tmp_path)
    Trainer(tiny_config(steps=1, target="onehot"), ds, out=out).fit()
    with pytest.raises(CheckpointError, match="g_lr"):
        Trainer.resume(tiny_config(steps=2, target="onehot", g_lr=1e-3), ds, out, out=out)
    other = tiny_dataset(seed=1, n=40)
    with pytest.raises(CheckpointError, match="other data"):
        Trainer.resume(tiny_config(steps=2, target="onehot"), other, out, out=out)
    # the run length may change
    t = Trainer.resume(tiny_config(steps=2, target="onehot"), ds, out, out=out)
    assert t.step == 1


_KILL_DURING_WRITE = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    from train._runs import tiny_config, tiny_dataset
    from sgan_fast.train import Trainer
    ds = tiny_dataset()
    t = Trainer(tiny_config(steps=4, ckpt_every=2, target="onehot"), ds, out={out!r})
    real_save = torch.save
    def dying_save(obj, f, *a, **k):
        if t.step == 4:            # the second checkpoint: half the bytes, then the process dies
            import io
            buf = io.BytesIO(); real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
            os._exit(9)
        return real_save(obj, f, *a, **k)
    torch.save = dying_save
    t.fit()
""")


def test_a_process_killed_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path):
    out = str(tmp_path / "run")
    script = _KILL_DURING_WRITE.format(tests=os.path.dirname(os.path.dirname(__file__)), out=out)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr[-2000:]
    state = load_checkpoint(out)              # still loadable, and the step-2 state
    assert state["step"] == 2
    leftovers = os.listdir(os.path.join(out, "checkpoints"))
    assert "latest.pt" in leftovers and any(f.endswith(".tmp") for f in leftovers)


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    ds = tiny_dataset()
    out = str(tmp_path)

    def poison_at_3(trainer):
        if trainer.step == 3:
            with torch.no_grad():
                next(trainer.G.parameters()).fill_(float("nan"))

    t = Trainer(tiny_config(steps=8, ckpt_every=2, target="onehot"), ds, out=out,
                callbacks=(poison_at_3,))
    with pytest.raises(NonFiniteLossError, match=r"d_loss became nan at step 4.*step 2\)"):
        t.fit()
    state = load_checkpoint(out)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    # a non-finite parameter alone (losses still finite) is never written either
    with pytest.raises(NonFiniteLossError, match="parameters are not finite"):
        t._first_bad.fill_(-1)
        t.save()
    assert load_checkpoint(out)["step"] == 2


def test_onehot_and_softmax_runs_differ_only_in_the_real_branch_labels(monkeypatch):
    """By construction: the same seed gives the same images, latents, fake labels and
    augmentations; the head sees the real images' classes (onehot) or their bank rows."""
    ds = tiny_dataset()
    seen = {}

    def recorder(run):
        calls = seen.setdefault(run, [])

        def head(self, h, labels):
            calls.append((h.detach().clone(), labels))
            return type(self).forward(self, h, labels)
        return head

    results = {}
    bank = soft_bank(ds)
    for target, bank in (("onehot", None), ("softmax", bank)):
        t = Trainer(tiny_config(target=target, steps=1, d_steps=1), ds, bank=bank)
        monkeypatch.setattr(t.D.head, "forward", recorder(target).__get__(t.D.head))
        real, y, idx = t._next_batch()
        t.d_step(real, y, idx)
        results[target] = (y, idx)
    (h_real_1, lab_1), (h_fake_1, fake_1) = seen["onehot"]
    (h_real_2, lab_2), (h_fake_2, fake_2) = seen["softmax"]
    assert torch.equal(h_real_1, h_real_2) and torch.equal(h_fake_1, h_fake_2)
    assert torch.equal(fake_1, fake_2) and fake_1.dtype == torch.int64        # one-hot fakes
    y, idx = results["onehot"]
    assert torch.equal(lab_1, y)                                              # real: classes
    assert torch.equal(lab_2.indices, results["softmax"][1])                 # real: bank rows
    assert lab_2.plan.description == "softmax:1"
    from sgan_fast.ops import bank_lookup
    torch.testing.assert_close(bank_lookup(lab_2.plan, lab_2.indices, out="dense"),
                               bank.dense_probabilities()[lab_2.indices].float())


def test_a_one_hot_bank_with_softmax_trains_exactly_like_onehot():
    ds = tiny_dataset()
    a = Trainer(tiny_config(target="onehot", steps=2), ds)
    b = Trainer(tiny_config(target="softmax", steps=2), ds, bank=soft_bank(ds, onehot=True))
    a.fit(), b.fit()
    pa, pb = params(a), params(b)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_fast_path_with_compile_matches_the_reference_over_two_steps():
    """Fused ops + torch.compile against impl="ref", eager. Adam's first steps move every
    weight by about +-lr whatever the gradient's size, so a gradient that is zero up to
    rounding (a conv bias followed by batch norm) would move by +-lr in a random direction
    in each run; a large adam_eps makes the update proportional to the gradient, so the
    comparison measures the computation, not that amplified rounding."""
    ds = tiny_dataset(channels=3)
    bank = soft_bank(ds)
    kw = dict(steps=2, adam_eps=1.0, g_lr=0.01, d_lr=0.01)
    ref = Trainer(tiny_config(reference=True, **kw), ds, bank=bank)
    fast = Trainer(tiny_config(compile="on", impl="auto", **kw), ds, bank=bank)
    assert fast.compiled and not ref.compiled and ref.cfg.impl == "ref"
    start = params(ref)
    for k, v in params(fast).items():
        assert torch.equal(v, start[k]), k
    ref.fit(), fast.fit()
    pr, pf = params(ref), params(fast)
    # per tensor: max |fast - ref| against the tensor's scale (fp32 rounding differs between
    # inductor's fused kernels and eager, and two optimiser steps carry it along)
    worst = max(((pf[k] - pr[k]).abs().max() / (pr[k].abs().max() + 1e-2)).item()
                for k in pr if pr[k].is_floating_point())
    assert worst < 2e-3, worst
    moved = max((pr[k] - start[k]).abs().max().item() for k in start if k.startswith("G."))
    assert moved > 1e-3      # the comparison is not of two untouched models


def _losses_over(trainer, steps):
    """Each train_step's logged losses and mean D outputs (the trainer's own accumulators)."""
    keys = ("d_loss", "d_loss_real", "d_loss_fake", "d_real", "d_fake", "g_loss")
    rows = []
    for _ in range(steps):
        trainer.train_step()
        row = trainer._log_row(1.0, 1)
        rows.append([row[k] for k in keys])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.slow
def test_whole_compiled_regions_train_like_eager_over_two_steps(monkeypatch):
    """compile_scope="whole": G, and D's augmentation -> trunk (fused SN hook) -> soft-label head
    (its own SN, bank labels) on each half, each one graph. Traced with fullgraph=True (a graph
    break fails) and the aot_eager backend (dynamo, the custom ops' fake kernels, AOT autograd
    with the buffer updates; inductor compiles these regions in tests/test_bench_train.py),
    2 steps (LeCam on) of the fused ops eagerly against the same compiled: every logged loss
    within 1e-5 (measured 7e-7), every weight and optimiser moment within 1e-4 of its
    tensor's scale (measured 3e-5: AOT autograd's decompositions round differently); about
    20 s on 2 cores."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(
        model, backend="aot_eager", fullgraph=True, dynamic=kw.get("dynamic")))
    torch._dynamo.reset()
    ds = tiny_dataset(channels=3)
    bank = soft_bank(ds)
    kw = dict(adam_eps=1.0, g_lr=0.01, d_lr=0.01, impl="auto", lecam=0.1)
    eager = Trainer(tiny_config(compile="off", **kw), ds, bank=bank)
    whole = Trainer(tiny_config(compile="on", compile_scope="whole", **kw), ds, bank=bank)
    assert whole.compiled and whole.cfg.compile_scope == "whole"
    assert whole.D_trunk is whole.D.trunk            # the trunk is not a region of its own
    counters.clear()
    le, lw = _losses_over(eager, 2), _losses_over(whole, 2)
    assert not counters["graph_break"], dict(counters["graph_break"])
    # G with and without grad, D in D steps (2B images, bank and one-hot labels) and G steps
    assert counters["stats"]["unique_graphs"] == 4, dict(counters["stats"])
    torch.testing.assert_close(lw, le, rtol=1e-5, atol=1e-5)
    pe, pw = params(eager), params(whole)
    worst = max(((pw[k] - pe[k]).abs().max() / (pe[k].abs().max() + 1e-2)).item()
                for k in pe if pe[k].is_floating_point())
    assert worst < 1e-4, worst
    # the SN buffers moved (the updates inside the graphs were applied, not traced away)
    start = params(Trainer(tiny_config(compile="off", **kw), ds, bank=bank))
    for k in ("D.head.embed.u0", "D.head.linear.sv0", "D.trunk.blocks.0.conv1.u0", "G.linear.u0"):
        assert not torch.equal(pw[k], start[k]), k
        torch.testing.assert_close(pw[k], pe[k], rtol=1e-5, atol=1e-6, msg=k)


def test_bad_setups_are_refused_clearly():
    ds = tiny_dataset()
    with pytest.raises(ValueError, match="needs the soft-label bank"):
        Trainer(tiny_config(target="softmax"), ds)
    with pytest.raises(ValueError, match="different dataset"):
        Trainer(tiny_config(), ds, bank=soft_bank(tiny_dataset(n=30)))
    with pytest.raises(ValueError, match="28x28 but the model is 32x32"):
        Trainer(tiny_config(target="onehot"), tiny_dataset(res=28))
    with pytest.raises(ValueError, match="resolution must be one of"):
        Trainer(tiny_config(resolution=48, target="onehot"), ds)
    with pytest.raises(ValueError, match="unknown target"):
        Trainer(tiny_config(target="sharp"), ds)
    with pytest.raises(ValueError, match="d_steps must be a positive integer"):
        Trainer(tiny_config(d_steps=0, target="onehot"), ds)


def _pixel_backend():
    """A feature backend of fixed random projections of the pixels (fast, deterministic)."""
    from sgan_fast.metrics.features import FeatureBackend
    proj = torch.nn.Linear(32 * 32, 6, bias=False)
    torch.nn.init.normal_(proj.weight, generator=torch.Generator().manual_seed(0))
    net = torch.nn.Sequential(torch.nn.Flatten(), proj)
    return FeatureBackend("pixels", "pixels-test", 6, False, lambda x: x.float() / 255,
                          lambda x: (net(x), None), net)


def test_periodic_evaluation_logs_and_keeps_the_best_checkpoint(tmp_path):
    from sgan_fast.metrics.frechet import fid
    from sgan_fast.train.periodic_eval import FIDEvaluator
    ds = tiny_dataset()
    ev = FIDEvaluator(_pixel_backend(), ds, per_class=8, cache_dir=str(tmp_path / "cache"))
    seen = []

    def recording(G, step):
        res = ev(G, step)
        seen.append((step, res))
        return res

    t = Trainer(tiny_config(steps=4, eval_every=2, target="onehot"), ds, out=str(tmp_path / "run"),
                evaluator=recording)
    t.fit()
    assert [s for s, _ in seen] == [2, 4]
    for _, res in seen:
        assert res["intra_fid"] == pytest.approx(sum(res["per_class_fid"]) / 3)
    best_step, best = min(seen, key=lambda sr: sr[1]["intra_fid"])
    assert t.best["step"] == best_step
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["step"] == best_step
    rows = open(tmp_path / "run" / "eval.csv").read().splitlines()
    assert rows[0] == "step,fid,intra_fid" and len(rows) == 3
    # the evaluator's per-class FID is FID on that class's rows (same latents every call)
    G = t.G_ema
    again = ev(G, 0)
    assert again["per_class_fid"] == seen[-1][1]["per_class_fid"]
    from sgan_fast.metrics.features import extract_features
    from sgan_fast.train.sampling import generate
    labels = torch.arange(3).repeat_interleave(8)
    feats, _ = extract_features(ev.backend, generate(G, labels, generator=torch.Generator().manual_seed(0)))
    real = ev.real[ev.real_labels == 1]
    assert again["per_class_fid"][1] == pytest.approx(fid(real, feats[labels == 1]))


def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path):
    ds = tiny_dataset()

    def kill_twice(trainer):
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    t = Trainer(tiny_config(steps=5, target="onehot"), ds, out=str(tmp_path), callbacks=(kill_twice,))
    with pytest.raises(KeyboardInterrupt, match="second signal"):
        t.fit()
    assert not os.path.exists(tmp_path / "checkpoints" / "latest.pt")


def test_bf16_autocast_trains_with_soft_labels_like_float32():
    """The fast path's precision on the CPU: the head and the SN update run outside autocast
    (in float32), so soft (bank) labels work and the first step's losses match float32's."""
    ds = tiny_dataset(channels=3)
    bank = soft_bank(ds)
    logs = {}
    for precision in ("fp32", "bf16"):
        t = Trainer(tiny_config(steps=1, d_steps=1, precision=precision), ds, bank=bank)
        assert t.bf16 == (precision == "bf16")
        t.fit()              # logs (and resets) the sums of step 1; step 2's sums follow
        t.train_step()
        logs[precision] = t._acc[:6].tolist()
    for a, b in zip(logs["fp32"], logs["bf16"]):
        assert b == pytest.approx(a, rel=0.1, abs=0.05)


def test_attention_zero_means_none_at_every_resolution():
    ds = tiny_dataset(res=64)
    cfg = tiny_config(resolution=64, ch=2, z_dim=20, attention=0, target="onehot", steps=1)
    assert cfg.resolved().resolved().attention == 0
    t = Trainer(cfg, ds)
    assert t.G.attention is None and t.D.trunk.attention is None
    assert Trainer(tiny_config(resolution=64, ch=8, z_dim=20, target="onehot"), ds).G.attention is not None


def test_resume_refuses_another_bank_and_another_device_type(tmp_path):
    from sgan_fast.train.config import resume_differences
    ds = tiny_dataset()
    out = str(tmp_path)
    Trainer(tiny_config(steps=1), ds, bank=soft_bank(ds, seed=0), out=out).fit()
    with pytest.raises(CheckpointError, match="another soft-label bank"):
        Trainer.resume(tiny_config(steps=2), ds, out, bank=soft_bank(ds, seed=1), out=out)
    assert Trainer.resume(tiny_config(steps=2), ds, out, bank=soft_bank(ds, seed=0), out=out).step == 1
    saved = tiny_config().resolved().to_dict()
    assert resume_differences(dict(saved, device="cuda:0"), tiny_config(device="cuda:1").resolved()) == []
    diff = resume_differences(dict(saved, device="cuda"), tiny_config(device="cpu").resolved())
    assert len(diff) == 1 and "device type" in diff[0]


def test_stale_half_written_checkpoints_are_removed_at_start(tmp_path):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    (ck / ".latest.pt.abc123.tmp").write_bytes(b"half")
    (ck / "notes.txt").write_text("mine")
    Trainer(tiny_config(steps=1, target="onehot"), tiny_dataset(), out=str(tmp_path)).fit()
    assert sorted(os.listdir(ck)) == ["latest.pt", "notes.txt"]


def _recording(trainer):
    """trainer.D_train wrapped: every call's outputs are kept (detached)."""
    seen, inner = [], trainer.D_train

    def call(*args):
        out = inner(*args)
        seen.append([o.detach().clone() for o in out])
        return out
    trainer.D_train = call
    return seen


def test_consistency_regularisation_is_the_references_term_added_to_d_loss():
    ds = tiny_dataset()
    lam = 2.5
    t = Trainer(tiny_config(cr=lam, target="onehot"), ds)
    seen = _recording(t)
    real, y, idx = t._next_batch()
    t.d_step(real, y, idx)
    d_real, d_fake, d_clean = seen[0]
    assert d_clean.shape == d_real.shape == (8,)
    assert not torch.equal(d_clean, d_real)       # D of the augmented vs the plain images
    # the reference (train_fns.py): hinge + CR * mean((D(x) - D(aug(x)))^2), in plain torch
    hinge = torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean()
    expected = hinge + lam * ((d_clean - d_real) ** 2).mean()
    assert float(t._acc[0]) == pytest.approx(float(expected), rel=1e-5)
    # without augmentation the term is 0 up to rounding (the same images through the trunk in
    # another batch position; the reference's cr-biggan scripts run without DiffAugment)
    t2 = Trainer(tiny_config(cr=lam, target="onehot", augment=""), ds)
    seen2 = _recording(t2)
    t2.d_step(*t2._next_batch())
    torch.testing.assert_close(seen2[0][2], seen2[0][0], rtol=1e-5, atol=1e-5)


def test_consistency_regularisation_changes_d_gradient_only_through_its_term():
    ds = tiny_dataset()
    grads = {}
    for lam in (0.0, 1.0):
        t = Trainer(tiny_config(cr=lam, target="onehot"), ds)
        real, y, idx = t._next_batch()
        t.opt_D.step = lambda: None                # keep the gradient, skip the update
        t.d_step(real, y, idx)
        grads[lam] = [p.grad.clone() for p in t.D.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(grads[0.0], grads[1.0]))
    with pytest.raises(ValueError, match="cr must be >= 0"):
        Trainer(tiny_config(cr=-1.0), ds)
