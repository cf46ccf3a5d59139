"""The classifier file `sgan-fast classify` writes next to the bank: the trained models of
every fold with what is needed to rebuild them (for evaluation's domain features and for
classifier accuracy scores on generated images).

    result.save_classifier("classifier.pt", cfg)      # result = classify(...)
    models, meta = load_classifier("classifier.pt", device="cuda")
    feats = models[0].features(x)        # x float [B, C, H, W] in [-1, 1]

Loaded with torch.load(weights_only=True): tensors, numbers and strings only, no pickled code.
"""

from __future__ import annotations

import os

import torch

from .._io import atomic_torch_save, check_format
from .classifier_nets import build_classifier

FORMAT_NAME = "sgan_fast.Classifier"
FORMAT_VERSION = 1


def save_classifier(path, models, *, arch: str, num_classes: int, channels: int, resolution: int,
                    temperature: float, class_names, fingerprint, input_size=None,
                    trained_on_folds: bool = True) -> None:
    """Writes the models (one per fold) and their settings to `path`, atomically."""
    atomic_torch_save(path, dict(
        format=FORMAT_NAME, version=FORMAT_VERSION, arch=arch, num_classes=int(num_classes),
        channels=int(channels), resolution=int(resolution), input_size=input_size,
        temperature=float(temperature), class_names=[str(n) for n in class_names],
        fingerprint=fingerprint.to_json() if hasattr(fingerprint, "to_json") else fingerprint,
        cross_fitted=bool(trained_on_folds),
        state_dicts=[{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in models]))


def load_classifier(path, *, device="cpu") -> tuple:
    """(models in eval mode on `device`, metadata dict) from a file save_classifier wrote."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"classifier file {path} not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read classifier file {path}: {type(exc).__name__}: {exc}") from None
    check_format(blob, path, FORMAT_NAME, FORMAT_VERSION, "`sgan-fast classify`")
    models = []
    for sd in blob["state_dicts"]:
        m = build_classifier(blob["arch"], blob["num_classes"], blob["channels"], blob["resolution"],
                             input_size=blob.get("input_size"))
        m.load_state_dict(sd)
        models.append(m.to(device).eval())
    meta = {k: v for k, v in blob.items() if k != "state_dicts"}
    return models, meta
