"""Tiny datasets, banks and configs for trainer tests (CPU, seconds per run)."""

import numpy as np
import torch

from sgan_fast.data import ArrayDataset
from sgan_fast.labels import SoftLabelBank
from sgan_fast.train import TrainConfig


def tiny_dataset(n=48, C=3, channels=1, res=32, seed=0):
    """Class-dependent blobs, long-tailed (counts 3:2:1), so D has something to learn."""
    rng = np.random.default_rng(seed)
    counts = np.array([3, 2, 1][:C] if C <= 3 else [1] * C, dtype=float)
    labels = np.repeat(np.arange(C), np.round(n * counts / counts.sum()).astype(int))
    yy, xx = np.mgrid[:res, :res]
    imgs = []
    for c in labels:
        cy, cx = rng.integers(8, res - 8, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (2 + 2 * c) ** 2))
        img = (255 * blob + rng.normal(0, 10, blob.shape)).clip(0, 255).astype(np.uint8)
        imgs.append(np.repeat(img[..., None], channels, axis=2))
    return ArrayDataset(np.stack(imgs), labels, num_classes=C, name="blobs")


def tiny_npz(path) -> str:
    """tiny_dataset() as the .npz a `--data` flag reads; returns the path."""
    ds = tiny_dataset()
    np.savez(path, images=ds.images, labels=ds.labels)
    return str(path)


def soft_bank(ds, *, onehot=False, seed=0):
    y = torch.from_numpy(ds.labels)
    if onehot:
        P = torch.nn.functional.one_hot(y, ds.num_classes).float()
    else:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(len(y), ds.num_classes, generator=g)
        logits[torch.arange(len(y)), y] += 2.0
        P = torch.softmax(logits, 1)
    return SoftLabelBank(P, y, fingerprint=ds.fingerprint())


def tiny_config(**kw):
    base = dict(resolution=32, ch=4, batch_size=8, d_steps=2, steps=4, shared_dim=8, z_dim=16,
                ema_start=1, ema_decay=0.9, log_every=1, ckpt_every=1000, sample_every=1000,
                progress=False, tensorboard=False, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def params(trainer):
    """Every tensor of the training state that a resume must reproduce."""
    out = {}
    for name, m in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.G_ema)):
        for k, v in m.state_dict().items():
            out[f"{name}.{k}"] = v.detach().clone()
    for name, opt in (("opt_G", trainer.opt_G), ("opt_D", trainer.opt_D)):
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    out[f"{name}.{i}.{k}"] = v.clone()
    return out
