"""The trainer on 2 gloo ranks against one process: the same global batches, the same model
(within float32 rounding), states identical on every rank, exact resume, shared failures."""

import os
import re

import numpy as np
import pytest
import torch

from sgan_fast.distributed import World
from sgan_fast.train import NonFiniteLossError, Trainer, load_checkpoint

from ..train._runs import params, soft_bank, tiny_config, tiny_dataset
from .ranks import RankError, run_ranks

# A run exercising everything that must be global rather than per rank: soft labels from the
# bank, DiffAugment (colour, translation, cutout), flips, LeCam (whose averages follow the
# global batch means), cross-replica BN in G (per-rank BN would normalise other statistics),
# consistency regularisation (D on the real slice un-augmented as well).
# adam_eps=1e-4: conv biases that feed a batch norm get a zero gradient in exact arithmetic,
# i.e. pure float32 rounding noise (~1e-7), which differs between the two summation orders;
# Adam with eps 1e-6 would turn that noise into lr-sized steps of random sign, with 1e-4 into
# steps below 1e-6.
RUN = dict(steps=3, lecam=0.1, cross_replica=True, deterministic=True, adam_eps=1e-4,
           batch_size=8, d_steps=2, cr=1.0)


def _train(world, out, steps, resume_from=None):
    ds = tiny_dataset()
    # the ranks accumulate D's gradients over 2 micro-batches (DDP's all-reduce on the last
    # only); one process takes its batch whole: the same updates
    cfg = tiny_config(**dict(RUN, steps=steps, d_accumulate=2 if world.distributed else 1))
    kw = dict(bank=soft_bank(ds), out=out, world=world)
    t = Trainer.resume(cfg, ds, resume_from, **kw) if resume_from else Trainer(cfg, ds, **kw)
    first = dict(batch=t.loader.batch(t.loader.step), gen_z=t.gen_z.get_state(),
                 gen_aug=t.gen_aug.get_state())      # what the (resumed) run draws first
    result = t.fit()
    state = params(t)
    state["lecam"] = torch.stack([t.lecam.ema_real, t.lecam.ema_fake])
    return dict(state=state, status=result.status, step=result.step, first=first)


def _full_and_resumed(world, root):
    """On every rank: 3 steps uninterrupted; 2 steps, then resumed to 3 from the checkpoint."""
    full = _train(world, os.path.join(root, "full"), 3)
    part = _train(world, os.path.join(root, "part"), 2)
    resumed = _train(world, os.path.join(root, "resumed"), 3,
                     resume_from=os.path.join(root, "part"))
    return dict(full=full, part=part, resumed=resumed)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    outs = run_ranks(_full_and_resumed, 2, root, str(root))
    assert not any(isinstance(o, RankError) for o in outs), outs
    return root, outs


# float32 sums in another order (the mean of two half-batch means vs one mean) differ in the
# last bits; after 3 Adam steps that stays below 1e-4 of each tensor's largest value (plus
# 2e-5 absolute, for the noise-driven biases above). Measured here: 1e-5 relative at most.
def _assert_close_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].double(), b[k].double()
        tol = 2e-5 + 1e-4 * y.abs().max().item()
        assert (x - y).abs().max().item() <= tol, (k, (x - y).abs().max().item(), tol)


def test_two_ranks_with_half_batches_train_like_one_process_with_the_whole_batch(two_ranks, tmp_path):
    root, (r0, r1) = two_ranks
    for run in ("full", "part", "resumed"):   # every rank holds the same state, bit for bit
        assert r0[run]["state"].keys() == r1[run]["state"].keys()
        for k, v in r0[run]["state"].items():
            assert torch.equal(v, r1[run]["state"][k]), (run, k)
    one = _train(World(), str(tmp_path / "one"), 3)
    assert one["status"] == r0["full"]["status"] == "done"
    _assert_close_states(r0["full"]["state"], one["state"])
    # rank 0 wrote one log, with the global batch's averages
    logs = [np.genfromtxt(os.path.join(p, "log.csv"), delimiter=",", names=True)
            for p in (str(root / "full"), str(tmp_path / "one"))]
    assert len(logs[0]) == len(logs[1]) == 3
    for name in ("d_loss", "d_real", "d_fake", "g_loss", "lecam"):
        np.testing.assert_allclose(logs[0][name], logs[1][name], rtol=1e-5, err_msg=name)
    # the ranks' slices of the first batch are the one-process batch's halves
    b0, b1, b = r0["full"]["first"]["batch"], r1["full"]["first"]["batch"], one["first"]["batch"]
    for i in range(3):
        assert torch.equal(torch.cat([b0[i], b1[i]]), b[i])


def test_resume_on_two_ranks_is_exact_and_on_one_rank_takes_the_same_global_batches(two_ranks, tmp_path):
    root, (r0, _) = two_ranks
    for k, v in r0["full"]["state"].items():      # interrupted at 2 + resumed == uninterrupted
        assert torch.equal(v, r0["resumed"]["state"][k]), k
    assert load_checkpoint(str(root / "part"))["world_size"] == 2
    one = _train(World(), str(tmp_path / "one"), 3, resume_from=str(root / "part"))
    two_first, one_first = r0["resumed"]["first"], one["first"]
    assert torch.equal(one_first["gen_z"], two_first["gen_z"])
    assert torch.equal(one_first["gen_aug"], two_first["gen_aug"])
    r1_first = two_ranks[1][1]["resumed"]["first"]
    for i in range(3):   # the global batch of step 3's first D step, on 1 rank and on 2
        assert torch.equal(one_first["batch"][i], torch.cat([two_first["batch"][i],
                                                             r1_first["batch"][i]]))
    _assert_close_states(r0["full"]["state"], one["state"])


def _bad_launches(world, root):
    """Each case on every rank; each must fail on both ranks with one message."""
    ds = tiny_dataset()
    out = {}

    def attempt(name, fn):
        try:
            fn()
            out[name] = None
        except Exception as exc:
            out[name] = (type(exc).__name__, str(exc))

    attempt("settings", lambda: Trainer(tiny_config(seed=3 + world.rank, target="onehot"), ds,
                                        world=world))
    attempt("bank", lambda: Trainer(tiny_config(), ds, bank=soft_bank(ds, seed=world.rank),
                                    world=world))
    attempt("indivisible", lambda: Trainer(tiny_config(batch_size=7, target="onehot"), ds,
                                           world=world))
    attempt("not shared", lambda: Trainer(tiny_config(target="onehot"), ds, world=world,
                                          out=os.path.join(root, f"node{world.rank}")).fit())

    os.makedirs(os.path.join(root, "badlog", "log.csv"), exist_ok=True)   # rank 0 cannot write its log
    attempt("rank 0 write", lambda: Trainer(tiny_config(target="onehot"), ds, world=world,
                                            out=os.path.join(root, "badlog")).fit())

    def poison_rank1_at_3(trainer):
        if trainer.step == 3 and world.rank == 1:
            with torch.no_grad():
                next(trainer.G.parameters()).fill_(float("nan"))

    attempt("nan", lambda: Trainer(tiny_config(steps=8, ckpt_every=2, target="onehot"), ds,
                                   world=world, out=os.path.join(root, "nan"),
                                   callbacks=(poison_rank1_at_3,)).fit())
    out["nan_checkpoint_step"] = load_checkpoint(os.path.join(root, "nan"))["step"]
    out["node_folders"] = sorted(os.listdir(root))
    return out


def test_bad_launches_fail_on_every_rank_with_the_same_message(tmp_path):
    r0, r1 = run_ranks(_bad_launches, 2, tmp_path, str(tmp_path))
    assert not isinstance(r0, RankError) and not isinstance(r1, RankError), (r0, r1)
    for case in ("settings", "bank", "indivisible", "not shared", "rank 0 write", "nan"):
        assert r0[case] is not None and r0[case] == r1[case], (case, r0[case], r1[case])
    assert r0["settings"][0] == "DistributedError" and "seed: rank 0 has 3" in r0["settings"][1]
    assert r0["bank"][0] == "DistributedError" and "(first: bank_digest: rank 0 has" in r0["bank"][1]
    assert r0["indivisible"][0] == "ValueError" and "not divisible by the world size 2" in r0["indivisible"][1]
    assert "storage every node shares" in r0["not shared"][1]
    assert r0["rank 0 write"][0] == "DistributedError" and "rank 0: " in r0["rank 0 write"][1]
    assert "log.csv" in r0["rank 0 write"][1]
    assert not os.listdir(tmp_path / "node0")          # the marker was cleaned up, nothing else
    assert r0["nan"][0] == NonFiniteLossError.__name__
    assert re.search(r"became nan at step 4.*step 2\)", r0["nan"][1])
    assert r0["nan_checkpoint_step"] == 2               # the last good checkpoint is kept
