"""Classifier -> soft-label bank: what `sgan-fast classify` runs.

    result = classify(train_set, ClassifyConfig(epochs=30), test_set=test_set)
    result.bank.save("bank.npz")                  # every training image's probabilities
    print(report_table(result.report))            # balanced and per-class accuracy

Steps:
1. Cross-fitting (folds >= 2, default 5): the training set is split into stratified folds;
   for each fold a classifier is trained on the other folds and predicts the fold, so no
   image's probabilities come from a model that trained on it. (The reference predicts on
   the images the network just memorised, which gives near one-hot, overconfident labels.)
   With folds = 1 one model trains on all but a stratified calibration split and predicts
   every image (in-sample for most of them: overconfident; say so in your results).
2. Temperature calibration: T minimises the NLL of the held-out predictions (the cross-fitted
   ones, or the calibration split's); the bank holds softmax(logits / T).
3. The report: accuracy on the held-out predictions and on the test split (when given,
   with the folds' models averaged), balanced (the mean of per-class recalls) and per class,
   and the mean maximum probability of each class's training images.

Training: SGD with Nesterov momentum, a short linear warm-up then cosine decay, random
translations (reflect padding of resolution / 8) and horizontal flips; on a GPU bf16
autocast and channels_last (predictions run in float32). Imbalance-aware options: balance="logit_adjust" (the loss sees
logits + tau log(prior), Menon et al. 2021: the raw logits then estimate the class-balanced
posterior) or balance="class_balanced" (each batch draws classes uniformly).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._device import pick_device
from .._progress import Progress
from ..data.datasets import ArrayDataset, LabelledImages, describe_mismatch
from ..data.samplers import BatchSampler
from .bank import SoftLabelBank
from .calibration import expected_calibration_error, fit_temperature, nll
from .classifier_nets import auto_arch, build_classifier
from .crossfit import fold_split, holdout_split, stratified_folds

BALANCE = ("none", "logit_adjust", "class_balanced")


@dataclasses.dataclass
class ClassifyConfig:
    """Settings of `classify` (the CLI flags of `sgan-fast classify` have the same names)."""

    arch: str = "auto"               # "auto" (by resolution), resnet8/20/32/18/34, torchvision:<n>, timm:<n>
    weights: Optional[str] = None    # a local weights file to start from (never downloaded)
    input_size: Optional[int] = None  # external models: resize the input to this
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    balance: str = "none"            # none | logit_adjust | class_balanced
    tau: float = 1.0                 # logit adjustment strength
    augment: bool = True             # random translation
    flip: bool = True                # random horizontal flip
    folds: int = 5                   # cross-fitting folds; 1 = off
    calibrate: bool = True           # fit a temperature on the held-out predictions
    calib_fraction: float = 0.1      # folds = 1: the held-out share used to calibrate
    amp: bool = True                 # bf16 autocast on a GPU
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda[:i]
    eval_batch_size: int = 512
    topk: Optional[int] = None       # store the bank as top-k (many classes)
    bank_dtype: str = "float32"      # float32 | float16 | bfloat16
    progress: bool = True

    def check(self) -> None:
        if self.balance not in BALANCE:
            raise ValueError(f"balance must be one of {', '.join(BALANCE)}, got {self.balance!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if self.epochs == 0 and self.weights is None:
            raise ValueError("epochs=0 predicts without training: it needs weights=")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ValueError(f"batch_size must be an integer >= 2 (batch norm), got {self.batch_size!r}")
        if not isinstance(self.folds, int) or self.folds < 1:
            raise ValueError(f"folds must be an integer >= 1 (1 = no cross-fitting), got {self.folds!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.bank_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"bank_dtype must be float32, float16 or bfloat16, got {self.bank_dtype!r}")
        if self.topk is not None and (not isinstance(self.topk, int) or self.topk < 1):
            raise ValueError(f"topk must be a positive integer, got {self.topk!r}")
        if not 0 < self.calib_fraction < 1:
            raise ValueError(f"calib_fraction must lie in (0, 1), got {self.calib_fraction}")
        pick_device(self.device)


@dataclasses.dataclass
class ClassifyResult:
    bank: SoftLabelBank               # calibrated probabilities of every training image
    report: dict                      # see report_table
    models: list                      # one per fold (eval mode), or the single model
    fold_of: np.ndarray               # [N] which model predicted each image
    trained_on: list                  # training indices of each model
    logits: Tensor                    # [N, C] float32, before calibration
    temperature: float
    arch: str                         # the network that ran ("auto" resolved)
    channels: int
    resolution: int
    class_names: tuple

    def save_classifier(self, path, cfg: "ClassifyConfig") -> None:
        """The models, for load_classifier (classifier_file.py)."""
        from .classifier_file import save_classifier
        save_classifier(path, self.models, arch=self.arch, num_classes=len(self.class_names),
                        channels=self.channels, resolution=self.resolution,
                        temperature=self.temperature, class_names=self.class_names,
                        fingerprint=self.bank.fingerprint, input_size=cfg.input_size,
                        trained_on_folds=cfg.folds >= 2)


# ---------------------------------------------------------------------------------------------
# Images and augmentation
# ---------------------------------------------------------------------------------------------

class _Images:
    """uint8 images [N, H, W, C] on the device when they fit (else on the CPU), handed out
    as float batches [B, C, H, W] in [-1, 1] on the device."""

    def __init__(self, images: np.ndarray, device: torch.device):
        x = torch.from_numpy(images)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if x.numel() < 0.5 * free:
                x = x.to(device)
        self.images, self.device = x, device

    def batch(self, idx: np.ndarray) -> Tensor:
        i = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.images.device)
        x = self.images.index_select(0, i).to(self.device, non_blocking=True)
        return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def augment_batch(x: Tensor, gen: torch.Generator, *, pad: int, flip: bool) -> Tensor:
    """Random translation by up to `pad` pixels (reflect padding, then a random crop of the
    original size) and a random horizontal flip, drawn per image from `gen`."""
    B, C, H, W = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen, device=x.device)
        ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen, device=x.device)
        rows = (oy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, None, :]
        b = torch.arange(B, device=x.device)[:, None, None, None]
        c = torch.arange(C, device=x.device)[None, :, None, None]
        x = xp[b, c, rows, cols]
    if flip:
        m = torch.rand(B, generator=gen, device=x.device) < 0.5
        x = torch.where(m.view(B, 1, 1, 1), x.flip(-1), x)
    return x


# ---------------------------------------------------------------------------------------------
# One model: train, predict
# ---------------------------------------------------------------------------------------------

def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def train_classifier(images: _Images, labels: np.ndarray, train_idx: np.ndarray, num_classes: int,
                     channels: int, resolution: int, cfg: ClassifyConfig, *, seed: int,
                     desc: str = "classify", targets: Optional[np.ndarray] = None,
                     steps: Optional[int] = None) -> nn.Module:
    """A classifier trained on images[train_idx] (see the module docstring); eval mode.

    targets: float [N, C] probability rows, one per image (indexed like `labels`): the loss
    is then the cross-entropy with these soft targets (e.g. inter-class synthetic images);
    `labels` still draws the batches and scores the running accuracy.
    steps: train for this many steps instead of cfg.epochs epochs of train_idx (to give
    training sets of different sizes the same compute)."""
    device = images.device
    torch.manual_seed(seed)
    model = build_classifier(cfg.arch, num_classes, channels, resolution, weights=cfg.weights,
                             input_size=cfg.input_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.epochs == 0:
        return model.eval()
    y_train = labels[train_idx]
    mode = "class_balanced" if cfg.balance == "class_balanced" else "instance"
    sampler = BatchSampler(y_train, cfg.batch_size, mode=mode, seed=seed, num_classes=num_classes)
    if steps is None:
        steps = cfg.epochs * sampler.steps_per_epoch
    elif isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    soft = None
    if targets is not None:
        soft = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        if soft.shape != (len(labels), num_classes):
            raise ValueError(f"targets must be [N={len(labels)}, C={num_classes}], got "
                             f"{tuple(soft.shape)}")
        bad = ~(torch.isfinite(soft).all(1) & (soft >= 0).all(1)
                & ((soft.double().sum(1) - 1).abs() < 1e-4))
        if bool(bad.any()):
            raise ValueError(f"targets must be probability rows (finite, >= 0, summing to 1); row "
                             f"{int(bad.nonzero()[0, 0])} is not")
        soft = soft.to(device)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)   # no weight decay on BN and biases
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    warm = max(1, steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warm) * 0.5 * (1 + math.cos(math.pi * t / steps)))
    adjust = None
    if cfg.balance == "logit_adjust":
        if soft is None:
            prior = np.bincount(y_train, minlength=num_classes).clip(min=1) / len(y_train)
        else:     # the class frequencies the soft targets put in the training set
            prior = soft[torch.from_numpy(train_idx).to(device)].double().mean(0).cpu().numpy()
            prior = prior.clip(min=1.0 / len(y_train))
        adjust = cfg.tau * torch.log(torch.tensor(prior, dtype=torch.float32, device=device))
    y_all = torch.from_numpy(labels).to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    pad = max(1, resolution // 8) if cfg.augment else 0
    bar = Progress(desc, steps, unit=" steps", enabled=cfg.progress)
    model.train()
    # Loss and accuracy are summed on the device and read every `every` steps: reading them
    # each step would make the CPU wait for the GPU at every step.
    every = 25
    loss_sum = torch.zeros((), device=device)
    hits = torch.zeros((), device=device)
    seen = counted = 0
    for step, batch in sampler.iterate(0):
        if step >= steps:
            break
        idx = train_idx[batch]
        x = augment_batch(images.batch(idx), gen, pad=pad, flip=cfg.flip)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        i_dev = torch.from_numpy(idx).to(device)
        y = y_all[i_dev]
        with _autocast(device, cfg.amp):
            logits = model(x).float()
        loss = F.cross_entropy(logits if adjust is None else logits + adjust,
                               y if soft is None else soft[i_dev])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach()
        hits += (logits.detach().argmax(1) == y).sum()
        seen, counted = seen + len(idx), counted + 1
        if (step + 1) % every == 0 or step + 1 == steps:
            mean_loss = float(loss_sum) / counted
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"{desc}: the loss became {mean_loss} by step {step}; "
                                         f"lower the learning rate (lr={cfg.lr})")
            bar.update(step + 1, loss=mean_loss, acc=float(hits) / seen)
            loss_sum.zero_(), hits.zero_()
            seen = counted = 0
    return model.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, images: _Images, idx: np.ndarray, *, batch_size: int = 512,
                   amp: bool = False) -> Tensor:
    """float32 logits [len(idx), C] on the CPU, the model in eval mode (batch-norm running
    statistics, no augmentation). Predictions run in float32 by default: the bank's
    probabilities should not carry bf16's 3 significant digits, and inference is cheap."""
    model.eval()
    out = []
    for a in range(0, len(idx), batch_size):
        x = images.batch(idx[a:a + batch_size])
        if images.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(images.device, amp):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, getattr(model, "num_classes", 0))


# ---------------------------------------------------------------------------------------------
# The whole step
# ---------------------------------------------------------------------------------------------



def as_arrays(dataset: LabelledImages, progress: bool = True) -> ArrayDataset:
    """The dataset as decoded uint8 arrays (an image folder is decoded once)."""
    if isinstance(dataset, ArrayDataset):
        return dataset
    if hasattr(dataset, "to_arrays"):
        return dataset.to_arrays(progress=progress)
    raise TypeError(f"classify takes an ArrayDataset or an ImageFolder, got {type(dataset).__name__}")


def check_classes(dataset: LabelledImages) -> np.ndarray:
    """Per-class image counts; ValueError for one class or a class without images."""
    C = int(dataset.num_classes)
    names = getattr(dataset, "class_names", None) or tuple(str(c) for c in range(C))
    if C < 2:
        raise ValueError(f"the dataset has {C} class(es): a classifier (and soft labels) need "
                         "at least 2")
    counts = np.bincount(np.asarray(dataset.labels, dtype=np.int64), minlength=C)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(f"{int(c)} ({names[c]!r})" for c in empty[:5])
        raise ValueError(f"{len(empty)} class(es) have no training images: {shown}. A classifier "
                         "cannot learn them and the soft-label bank would have no row for them; "
                         "drop those classes or add images")
    return counts


def _per_class_accuracy(pred: np.ndarray, y: np.ndarray, C: int) -> np.ndarray:
    """Recall of each class (NaN for a class with no images)."""
    correct = np.bincount(y, weights=(pred == y).astype(np.float64), minlength=C)
    count = np.bincount(y, minlength=C).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, correct / np.maximum(count, 1), np.nan)


def _balanced(acc: np.ndarray) -> Optional[float]:
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else None


# With several ranks and one model there is nothing to split (see classify's docstring).
ONE_FOLD_SEVERAL_RANKS = (
    "folds=1 (--folds 1) trains a single model, so there is nothing to split over the {n} "
    "processes of this launch: the others would only wait for it. Run it as one process "
    "(without torchrun), or cross-fit with folds >= 2 (the folds are spread over the ranks)")


def agree_on_settings(world, cfg: ClassifyConfig) -> None:
    """Every rank must train with the same settings (progress aside: rank 0's alone)."""
    world.agree("the classify settings",
                {k: v for k, v in dataclasses.asdict(cfg).items() if k != "progress"})


def _model_from_state(state: dict, cfg: ClassifyConfig, num_classes: int, channels: int,
                      resolution: int, device: torch.device) -> nn.Module:
    """A fold's model rebuilt from the state another rank trained (as load_classifier does)."""
    model = build_classifier(cfg.arch, num_classes, channels, resolution, input_size=cfg.input_size)
    model.load_state_dict(state)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def classify(dataset: LabelledImages, cfg: Optional[ClassifyConfig] = None, *,
             test_set: Optional[LabelledImages] = None, world=None) -> Optional[ClassifyResult]:
    """Trains the classifier(s) on `dataset` and returns the calibrated soft-label bank with
    the dataset's fingerprint, and the report (see the module docstring).

    world: a sgan_fast.distributed.World to spread the cross-fitting folds over (what
    `sgan-fast classify` passes under torchrun); None: this process alone. With several
    ranks, every rank calls classify with the same dataset and settings (checked: the ranks
    must agree on both). Rank r trains and predicts the folds world.shard(folds) gives it
    (contiguous, in fold order); rank 0 gathers the held-out logits and the other ranks'
    models and returns the result, and the other ranks return None. Each fold's training is
    seeded by the seed and the fold alone, so on the CPU rank 0's result is bit for bit what
    one process computes with the same number of threads. A failure on any rank raises the
    same error on every rank (a DistributedError naming the rank). folds=1 with several
    ranks is refused: one model cannot be split."""
    from ..distributed import gather_to_main, same_outcome
    from ..distributed import World

    cfg = cfg or ClassifyConfig()
    world = World() if world is None else world
    main = world.is_main
    if not main and cfg.progress:
        cfg = dataclasses.replace(cfg, progress=False)      # progress lines from rank 0 only
    with same_outcome(world):
        cfg.check()
        if world.distributed and cfg.folds < 2:
            raise ValueError(ONE_FOLD_SEVERAL_RANKS.format(n=world.world_size))
        counts = check_classes(dataset)
        fingerprint = dataset.fingerprint()
    agree_on_settings(world, cfg)
    world.agree("the training set (its fingerprint)", fingerprint.to_json())
    with same_outcome(world):
        arrays = as_arrays(dataset, cfg.progress)
        y = np.asarray(arrays.labels, dtype=np.int64)
        N, C = len(y), int(arrays.num_classes)
        H, W = arrays.resolution
        res, channels = int(min(H, W)), arrays.channels
        device = pick_device(cfg.device)
        if test_set is not None and main:
            # checked before the training, not after it (rank 0 alone makes the report)
            test_set = as_arrays(test_set, cfg.progress)
            bad = describe_mismatch(test_set, arrays, "the test split", "the training set")
            if bad:
                raise ValueError(bad + " (open image folders with the same resolution and channels)")
        images = _Images(arrays.images, device)
        k = cfg.folds
        if k >= 2:
            small = np.flatnonzero(counts < k)
            if len(small) and main:
                warnings.warn(f"{len(small)} class(es) have fewer images than the {k} folds (e.g. "
                              f"class {int(small[0])} with {int(counts[small[0]])}): their held-out "
                              "images are predicted by models that saw few or none of that class",
                              RuntimeWarning)
            fold_of = stratified_folds(y, k, cfg.seed)
            splits = [fold_split(fold_of, f) for f in range(k)]
            calib = np.arange(N)
        else:
            train_idx, calib = (holdout_split(y, cfg.calib_fraction, cfg.seed) if cfg.calibrate
                                else (np.arange(N), np.zeros(0, dtype=np.int64)))
            fold_of = np.zeros(N, dtype=np.int64)
            splits = [(train_idx, np.arange(N))]
    # This rank's folds. Each is seeded by the seed and the fold alone (train_classifier
    # resets torch's generator, the sampler's and the augmentation's), so which rank trains
    # it, and after which other fold, does not change its numbers.
    mine, parts = world.shard(len(splits)), []
    with same_outcome(world):
        for f in mine:
            tr, held = splits[f]
            desc = f"classify fold {f + 1}/{k}" if k >= 2 else "classify"
            model = train_classifier(images, y, tr, C, channels, res, cfg,
                                     seed=cfg.seed * 1009 + f, desc=desc)
            pred = predict_logits(model, images, held, batch_size=cfg.eval_batch_size)
            bad = ~torch.isfinite(pred).all(1)
            if bool(bad.any()):
                raise FloatingPointError(f"{desc}: the classifier's logits for training image "
                                         f"{int(held[int(bad.nonzero()[0, 0])])} are NaN or Inf")
            parts.append((f, model, pred))
    # rank 0 keeps its own models; the other ranks send theirs as CPU state dicts
    sent = [(f, None if main else {n: v.detach().cpu() for n, v in model.state_dict().items()}, pred)
            for f, model, pred in parts]
    gathered = gather_to_main(world, sent)
    if not main:
        with same_outcome(world):        # rank 0's calibration and report: shares its failure
            pass
        return None
    with same_outcome(world):
        own = {f: model for f, model, _ in parts}
        logits = torch.empty(N, C, dtype=torch.float32)
        models, trained_on = [], []
        for f, state, pred in (part for rank_parts in gathered for part in rank_parts):
            logits[torch.from_numpy(splits[f][1])] = pred
            models.append(own[f] if f in own else
                          _model_from_state(state, cfg, C, channels, res, device))
            trained_on.append(splits[f][0])
        y_t = torch.from_numpy(y)
        T = 1.0
        calibrated = cfg.calibrate and len(calib) > 0
        if cfg.calibrate and not len(calib):
            warnings.warn("no image could be held out to calibrate on (every class has one "
                          "image); the temperature stays 1", RuntimeWarning)
        if calibrated:
            T = fit_temperature(logits[calib], y_t[calib])
        probs = torch.softmax(logits.double() / T, 1)
        settings = dict(source="sgan-fast classify",
                        arch=cfg.arch if cfg.arch != "auto" else auto_arch(res),
                        weights=None if cfg.weights is None else str(cfg.weights), epochs=cfg.epochs,
                        batch_size=cfg.batch_size, lr=cfg.lr, balance=cfg.balance, tau=cfg.tau,
                        folds=k, cross_fitted=k >= 2, temperature=T, seed=cfg.seed,
                        calibrated_on=("cross-fitted predictions" if k >= 2 else
                                       f"a held-out split of {len(calib)} images") if calibrated else None)
        bank = SoftLabelBank(probs.float().to(getattr(torch, cfg.bank_dtype)), y, num_classes=C,
                             fingerprint=fingerprint, settings=settings, renormalize=True)
        if cfg.topk is not None:
            bank = bank.to_topk(int(cfg.topk))
        report = _report(arrays, logits, probs, y, T, calib if calibrated else calib[:0], cfg,
                         models, test_set, counts, device, held=calib if k < 2 else np.arange(N))
        bank.settings.update(held_out_balanced_accuracy=report["held_out"]["balanced_accuracy"])
        if report["test"] is not None:
            bank.settings.update(test_balanced_accuracy=report["test"]["balanced_accuracy"])
        result = ClassifyResult(bank, report, models, fold_of, trained_on, logits, T,
                                report["arch"], channels, res, tuple(arrays.class_names))
    return result


def _report(arrays, logits, probs, y, T, calib, cfg, models, test_set, counts, device, held) -> dict:
    """calib: the images T was fitted on (empty when not calibrated); held: the images whose
    predictions are out of sample."""
    C = len(counts)
    names = list(arrays.class_names)
    y_t = torch.from_numpy(y)
    pred = probs.argmax(1).numpy()
    conf = probs.max(1).values.numpy()
    held_acc = _per_class_accuracy(pred[held], y[held], C) if len(held) else np.full(C, np.nan)
    cal = {}
    if len(calib):
        raw = torch.softmax(logits[calib].double(), 1)
        cal = dict(nll_before=nll(logits[calib], y_t[calib]), nll_after=nll(logits[calib], y_t[calib], T),
                   ece_before=expected_calibration_error(raw, y_t[calib]),
                   ece_after=expected_calibration_error(probs[calib], y_t[calib]))
    test = None
    test_acc = np.full(C, np.nan)
    test_counts = np.zeros(C, dtype=np.int64)
    if test_set is not None:
        t_arrays = as_arrays(test_set, cfg.progress)
        bad = describe_mismatch(t_arrays, arrays, "the test split", "the training set")
        if bad:
            raise ValueError(bad + " (open image folders with the same resolution and channels)")
        t_images = _Images(t_arrays.images, device)
        t_idx = np.arange(len(t_arrays))
        t_probs = sum(torch.softmax(predict_logits(m, t_images, t_idx, batch_size=cfg.eval_batch_size)
                                    .double() / T, 1) for m in models)
        t_y = np.asarray(t_arrays.labels, dtype=np.int64)
        t_pred = t_probs.argmax(1).numpy()
        test_acc = _per_class_accuracy(t_pred, t_y, C)
        test_counts = np.bincount(t_y, minlength=C)
        test = dict(name=getattr(t_arrays, "name", "test"), num_images=int(len(t_y)),
                    accuracy=float((t_pred == t_y).mean()), balanced_accuracy=_balanced(test_acc),
                    models_averaged=len(models))
    per_class = []
    for c in range(C):
        m = y == c
        per_class.append(dict(
            cls=c, name=names[c], train_images=int(counts[c]),
            held_out_accuracy=None if np.isnan(held_acc[c]) else float(held_acc[c]),
            test_images=int(test_counts[c]),
            test_accuracy=None if np.isnan(test_acc[c]) else float(test_acc[c]),
            mean_max_prob=float(conf[m].mean()),
            mean_true_prob=float(probs[torch.from_numpy(m), c].mean())))
    return dict(dataset=getattr(arrays, "name", "dataset"), num_images=int(len(y)), num_classes=C,
                arch=cfg.arch if cfg.arch != "auto" else auto_arch(min(arrays.resolution)),
                folds=cfg.folds, temperature=T, calibration=cal,
                held_out=dict(what=("cross-fitted predictions" if cfg.folds >= 2
                                    else "the calibration split" if len(held)
                                    else "none: every image was predicted in-sample"),
                              num_images=int(len(held)),
                              accuracy=float((pred[held] == y[held]).mean()) if len(held) else None,
                              balanced_accuracy=_balanced(held_acc)),
                test=test, per_class=per_class)


def report_table(report: dict) -> str:
    """The report as Markdown: a summary and one row per class."""
    def pct(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"

    lines = [f"# Classifier report: {report['dataset']}", "",
             f"{report['num_images']} training images, {report['num_classes']} classes, "
             f"{report['arch']}, "
             + (f"{report['folds']}-fold cross-fitting" if report["folds"] >= 2 else "no cross-fitting")
             + f", temperature {report['temperature']:.3f}.", ""]
    ho = report["held_out"]
    lines.append(f"- held-out ({ho['what']}, {ho['num_images']} images): balanced accuracy "
                 f"{pct(ho['balanced_accuracy'])}%, accuracy {pct(ho['accuracy'])}%")
    if report["test"]:
        t = report["test"]
        lines.append(f"- test ({t['name']}, {t['num_images']} images, {t['models_averaged']} "
                     f"model(s) averaged): balanced accuracy {pct(t['balanced_accuracy'])}%, "
                     f"accuracy {pct(t['accuracy'])}%")
    cal = report["calibration"]
    if cal:
        lines.append(f"- calibration: NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}, "
                     f"ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}")
    lines += ["", "| class | name | train images | held-out acc % | test images | test acc % | "
              "mean max prob | mean prob of own class |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["per_class"]:
        lines.append(f"| {r['cls']} | {r['name']} | {r['train_images']} | {pct(r['held_out_accuracy'])} | "
                     f"{r['test_images']} | {pct(r['test_accuracy'])} | {r['mean_max_prob']:.3f} | "
                     f"{r['mean_true_prob']:.3f} |")
    return "\n".join(lines) + "\n"
