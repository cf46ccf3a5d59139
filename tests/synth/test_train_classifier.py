"""labels.classifier.train_classifier: soft targets and a fixed number of steps (what the
downstream experiment trains with)."""

import numpy as np
import pytest
import torch

from sgan_fast.labels import classifier as clf
from sgan_fast.labels.classifier import ClassifyConfig, _Images, train_classifier

from ..train._runs import tiny_dataset

CFG = dict(arch="resnet8", epochs=1, batch_size=8, device="cpu", progress=False)


@pytest.fixture(scope="module")
def data():
    ds = tiny_dataset()
    return _Images(ds.images, torch.device("cpu")), ds.labels.astype(np.int64)


def _train(data, *, seed=0, targets=None, steps=None, **kw):
    images, y = data
    cfg = ClassifyConfig(**{**CFG, **kw})
    return train_classifier(images, y, np.arange(len(y)), 3, 1, 32, cfg, seed=seed, targets=targets,
                            steps=steps)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def count_steps(monkeypatch):
    """How many optimiser steps each training took."""
    made = []

    class Counting(torch.optim.SGD):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(0)

        def step(self, *a, **k):
            made[-1] += 1
            return super().step(*a, **k)

    monkeypatch.setattr(clf.torch.optim, "SGD", Counting)
    return made


def test_one_hot_targets_train_bit_identically_to_hard_labels(data):
    y = data[1]
    hard = _train(data, seed=3)
    assert _same(hard, _train(data, seed=3))                        # training is deterministic
    onehot = np.eye(3, dtype=np.float32)[y]
    assert _same(hard, _train(data, seed=3, targets=onehot))
    # soft targets that are not one-hot do change the weights
    soft = (0.8 * onehot + 0.2 / 3).astype(np.float32)
    assert not _same(hard, _train(data, seed=3, targets=soft))
    # with logit adjustment too (the loss sees the adjusted logits either way), and fewer steps
    la = dict(balance="logit_adjust", steps=3)
    assert _same(_train(data, seed=1, **la), _train(data, seed=1, targets=onehot, **la))


def test_steps_trains_exactly_that_many_steps(data, count_steps):
    per_epoch = len(data[1]) // CFG["batch_size"]                # 48 images, batch 8: 6 steps
    _train(data)
    assert count_steps == [per_epoch]
    _train(data, epochs=2)
    assert count_steps[-1] == 2 * per_epoch
    for k in (1, 2, per_epoch + 1):                              # also past an epoch's end
        _train(data, steps=k)
        assert count_steps[-1] == k
    assert not _same(_train(data, steps=1), _train(data, steps=2))
    # steps overrides epochs: 3 steps are 3 steps whatever --epochs says
    assert _same(_train(data, steps=3, epochs=1), _train(data, steps=3, epochs=5))


@pytest.mark.parametrize("steps", [0, -1, 2.0, "3"])
def test_bad_steps(data, steps):
    with pytest.raises(ValueError, match="steps"):
        _train(data, steps=steps)


@pytest.mark.parametrize("shape", [(48, 4), (47, 3), (48,), (48, 3, 1)])
def test_soft_targets_of_the_wrong_shape(data, shape):
    with pytest.raises(ValueError, match=r"targets must be \[N=48, C=3\]"):
        _train(data, targets=np.full(shape, 1 / 3, dtype=np.float32), steps=1)


@pytest.mark.gpu
def test_soft_targets_on_the_gpu_match_the_cpu():
    """Soft-target training on CUDA (targets and indices moved to the device, bf16 autocast
    off for a like-for-like comparison) follows the CPU run: same losses up to float noise."""
    ds = tiny_dataset()
    y = ds.labels.astype(np.int64)
    rng = np.random.default_rng(0)
    t = rng.dirichlet(np.ones(3), size=len(y)).astype(np.float32)
    out = {}
    for dev in ("cpu", "cuda"):
        cfg = ClassifyConfig(**{**CFG, "device": dev, "amp": False, "augment": False, "flip": False})
        model = train_classifier(_Images(ds.images, torch.device(dev)), y, np.arange(len(y)), 3, 1, 32,
                                 cfg, seed=0, targets=t, steps=2)
        out[dev] = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    for k in out["cpu"]:
        assert torch.allclose(out["cpu"][k], out["cuda"][k], rtol=1e-3, atol=1e-4), k
