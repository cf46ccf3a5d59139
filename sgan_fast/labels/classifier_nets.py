"""The image classifiers `sgan-fast classify` trains: ResNets sized for the resolution, or a
torchvision / timm model built by name with weights from a local file (never downloaded).

    net = build_classifier("auto", num_classes=10, channels=1, resolution=28)   # resnet20
    net = build_classifier("torchvision:resnet50", 10, 3, 64, weights="r50.pth")
    logits = net(x)               # x float [B, C, H, W] in [-1, 1], as the loaders give
    feats = net.features(x)       # [B, net.num_features]: the penultimate layer

Every network here takes images in [-1, 1] and returns logits [B, num_classes]; a pretrained
external model gets its input converted to what it was trained on (3 channels, ImageNet mean
and standard deviation, resized to `input_size`, which defaults to the size a vision
transformer is fixed to).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

# name -> (blocks per stage, stage widths, stem): "cifar" is one 3x3 convolution at full
# resolution (for 28 to 64 px), "imagenet" a 7x7 stride-2 convolution and a max-pool (above).
RESNETS = {
    "resnet8": ((1, 1, 1), (16, 32, 64), "cifar"),
    "resnet20": ((3, 3, 3), (32, 64, 128), "cifar"),
    "resnet32": ((5, 5, 5), (32, 64, 128), "cifar"),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512), "imagenet"),
    "resnet34": ((3, 4, 6, 3), (64, 128, 256, 512), "imagenet"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def auto_arch(resolution: int) -> str:
    """The default network for a resolution: resnet20 up to 64 px, resnet18 above."""
    return "resnet20" if resolution <= 64 else "resnet18"


class _Block(nn.Module):
    """A basic residual block: two 3x3 convolutions with batch norm, projection shortcut
    when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of basic blocks for [B, channels, H, W] images in [-1, 1] (any H, W)."""

    def __init__(self, num_classes: int, channels: int = 3, blocks=(3, 3, 3), widths=(32, 64, 128),
                 stem: str = "cifar"):
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU())
        elif stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        stages, cin = [], widths[0]
        for s, (n, w) in enumerate(zip(blocks, widths)):
            for b in range(n):
                stages.append(_Block(cin, w, 2 if (b == 0 and s > 0) else 1))
                cin = w
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features, self.num_classes = cin, num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1)

    def forward(self, x):
        return self.fc(self.features(x))


class ExternalClassifier(nn.Module):
    """A torchvision / timm network with a C-class head, fed what ImageNet models expect."""

    def __init__(self, net: nn.Module, head_name: str, channels: int, input_size: Optional[int]):
        super().__init__()
        self.net, self.head_name = net, head_name
        self.channels, self.input_size = channels, input_size
        head = net.get_submodule(head_name)
        self.num_features, self.num_classes = head.in_features, head.out_features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _prepare(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def features(self, x):
        captured = []
        hook = self.net.get_submodule(self.head_name).register_forward_hook(
            lambda m, inp, out: captured.append(inp[0]))
        try:
            self.net(self._prepare(x))
        finally:
            hook.remove()
        return torch.flatten(captured[0], 1)

    def forward(self, x):
        return self.net(self._prepare(x))


def _last_linear(net: nn.Module) -> str:
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(net).__name__} has no nn.Linear layer to use as the classifier head")
    return names[-1]


def _set_head(net: nn.Module, name: str, num_classes: int) -> None:
    old = net.get_submodule(name)
    parent_name, _, attr = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def _external(spec: str):
    """(network with its own default head, library) for "torchvision:<name>" or "timm:<name>"."""
    lib, _, name = spec.partition(":")
    if lib == "torchvision":
        try:
            import torchvision
        except ImportError:
            raise ImportError(f"model {spec!r} needs torchvision (pip install torchvision)") from None
        try:
            return torchvision.models.get_model(name, weights=None), lib
        except (ValueError, KeyError):
            raise ValueError(f"torchvision has no model {name!r}; torchvision.models.list_models() "
                             "lists them") from None
    if lib == "timm":
        try:
            import timm
        except ImportError:
            raise ImportError(f"model {spec!r} needs timm (pip install timm)") from None
        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r}; timm.list_models() lists them")
        return timm.create_model(name, pretrained=False), lib
    raise ValueError(f"unknown model {spec!r}: use one of {', '.join(['auto', *RESNETS])}, "
                     "'torchvision:<name>' or 'timm:<name>'")


def read_weights(path) -> dict:
    """A state_dict from a local file: a plain state_dict, or one under "state_dict" /
    "model" / "state_dicts"[0] (sgan-fast classify's checkpoints), "module." prefixes
    stripped; .safetensors when the safetensors package is installed. Loaded with
    weights_only=True: no pickled code runs."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path} not found (weights are never downloaded; "
                                "pass a local file)")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path}: reading .safetensors needs the safetensors package") from None
        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(sd, dict) and "state_dicts" in sd and isinstance(sd["state_dicts"], list):
        sd = sd["state_dicts"][0]    # a classifier.pt of `sgan-fast classify`: its first fold
        if sd and all(k.startswith("net.") for k in sd):   # a wrapped torchvision/timm model
            sd = {k[4:]: v for k, v in sd.items()}
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def weights_mismatch(model, sd: dict) -> list:
    """Sentences saying how the state_dict `sd` does not fit `model` (a module or its
    state_dict; empty when it fits)."""
    own = model.state_dict() if isinstance(model, nn.Module) else model
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    out = []
    for what, items in (("missing from the file", missing), ("not in the model", unexpected),
                        ("of another shape", shapes)):
        if items:
            out.append(f"{len(items)} tensor(s) {what} (first: {items[0]})")
    return out


def _load(model: nn.Module, sd: dict, path, what: str) -> None:
    problems = weights_mismatch(model, sd)
    if problems:
        raise ValueError(f"weights file {path} does not fit {what}: " + "; ".join(problems)
                         + ". Is it a checkpoint of another architecture or width?")
    model.load_state_dict(sd)


def build_classifier(arch: str, num_classes: int, channels: int, resolution: int, *,
                     weights=None, input_size: Optional[int] = None) -> nn.Module:
    """The classifier `arch` ("auto", a name in RESNETS, "torchvision:<name>", "timm:<name>")
    for images [B, channels, resolution, resolution] in [-1, 1], with `num_classes` outputs.

    weights: a local file. For the ResNets here it must fit exactly. For an external model it
    may hold the model with its library's default head (e.g. ImageNet's 1000 classes; the head
    is then replaced by a fresh C-class one) or with a C-class head already."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    name = auto_arch(resolution) if arch == "auto" else arch
    if name in RESNETS:
        blocks, widths, stem = RESNETS[name]
        model = ResNet(num_classes, channels, blocks, widths, stem)
        if weights is not None:
            _load(model, read_weights(weights), weights, f"{name} with {num_classes} classes and "
                  f"{channels} input channel(s)")
        return model
    net, lib = _external(name)
    cls = net.get_classifier() if hasattr(net, "get_classifier") else None   # timm's own answer
    if isinstance(cls, nn.Linear):
        head = next(n for n, m in net.named_modules() if m is cls)
    else:
        head = _last_linear(net)
    if weights is not None:
        sd = read_weights(weights)
        if not weights_mismatch(net, sd):
            net.load_state_dict(sd)
            if net.get_submodule(head).out_features != num_classes:
                _set_head(net, head, num_classes)
        else:
            _set_head(net, head, num_classes)
            _load(net, sd, weights, f"{name} (with its default head or a {num_classes}-class head)")
    else:
        _set_head(net, head, num_classes)
    if input_size is None:
        input_size = _fixed_input_size(net)
    return ExternalClassifier(net, head, channels, input_size)


def _fixed_input_size(net: nn.Module) -> Optional[int]:
    """The input size a network only works at (vision transformers: torchvision's image_size,
    timm's patch embedding's img_size), or None when any size works."""
    size = getattr(net, "image_size", None)                         # torchvision ViT
    patch = getattr(net, "patch_embed", None)                       # timm ViT and kin
    if size is None and patch is not None and getattr(patch, "strict_img_size", True):
        size = getattr(patch, "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return int(size) if size else None
