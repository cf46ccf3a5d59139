"""The Softlabel-GAN trainer: hinge loss, n D steps per G step, DiffAugment, EMA, LeCam.

    trainer = Trainer(TrainConfig(resolution=32), dataset, bank=bank, out="runs/fmnist")
    result = trainer.fit()          # or Trainer.resume(...) to continue a run

One step (`cfg.d_steps` discriminator updates, then one generator update):
    D: real x (soft labels from the bank) and G(z, y) (one-hot y, no gradient to G), both
       DiffAugmented, through D's trunk as one batch; the head runs on each half with its
       labels; hinge loss (+ LeCam); Adam.
       With cr > 0 (consistency regularisation, as the reference's train_fns.py computes
       it) the real images also go through D un-augmented, with the same labels, and
       cr * mean((D(x) - D(aug(x)))^2) is added to D's loss (and to the logged d_loss).
    G: G(z, y) -> DiffAugment -> D (frozen) with the one-hot y; hinge loss; Adam; EMA.
Fake labels and latents are drawn uniformly from the trainer's own generators, the
augmentation parameters from another, so a resumed run draws exactly what the
uninterrupted run would have.

The fast path (the default on a GPU): bf16 autocast, channels_last, torch.compile of G and
D's trunk (`compile_scope="whole"`: one region per model call with the spectral-norm updates
inside, G and everything D does to a batch: augmentation, trunk and head), sgan_fast's fused
ops ("auto"). `reference=True` runs the same model with every op impl="ref", eager and
float32 (each of those three unless set explicitly: `reference=True, compile="on"` is the
compiled reference): the baseline of the benchmarks and the equivalence tests.

Losses are checked for NaN/Inf without a host sync per step: the first non-finite step of
each loss is kept on the device and read at every log step and before every checkpoint, and
training stops naming the step and the loss, without overwriting the last good checkpoint.

Several processes (torchrun; docs/distributed.md): cfg.batch_size is the global batch, each
rank trains on its slice (batch_size / world size) of the same global batches, latents,
classes and augmentation parameters (every rank draws the global ones from the same
generators and keeps its slice), D and G are wrapped in DistributedDataParallel each for its
own step, rank 0 writes every file, and stops (signals, time limit, non-finite losses) are
agreed on by all ranks at the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from typing import Callable, Optional

import torch

from .. import distributed
from .._device import pick_device
from .._io import atomic_write_text, remove_partial_writes
from .._progress import Progress
from ..data.loader import make_loader
from ..data.samplers import BatchSampler
from ..labels.targets import Target
from ..models import Discriminator, Generator
from .augment import DiffAugment
from .checkpoint import BEST, LATEST, CheckpointError, load_checkpoint, save_checkpoint
from .config import RESUMABLE_CHANGES, TrainConfig, resume_differences
from .ema import GeneratorEMA
from .losses import LeCam, hinge_d, hinge_g
from .run_log import RunLog
from .sampling import class_grid, latents, save_grid

LOSS_NAMES = ("d_loss", "g_loss")
LOG_FIELDS = ("d_loss", "d_loss_real", "d_loss_fake", "d_real", "d_fake", "g_loss", "lecam")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; training stopped and the last good checkpoint was kept."""


@dataclasses.dataclass
class TrainResult:
    status: str                # "done", "interrupted" (signal), "time limit"
    step: int
    checkpoint: Optional[str]
    seconds: float
    images_per_second: float   # real images consumed per second in this session
    best: Optional[dict] = None
    signal: Optional[int] = None   # the signal that stopped it (status "interrupted")


def _choose(setting: str, default: bool) -> bool:
    return default if setting == "auto" else setting == "on"


def _sn_buffers(model: torch.nn.Module) -> list:
    """The spectral-norm layers' power-iteration vectors and singular-value estimates."""
    from ..nn.spectral_norm import SNMixin
    return [getattr(m, f"{n}{i}") for m in model.modules() if isinstance(m, SNMixin)
            for i in range(m.num_svs) for n in ("u", "sv")]


def bank_digest(bank) -> str:
    """SHA-256 of a bank's form, kind, tables and labels: a resumed run must train on the same
    targets. Hashed in row chunks from the buffers, without copying a whole table."""
    import hashlib
    h = hashlib.sha256(str((bank.form, bank.kind, bank.num_classes)).encode())
    for t in (bank.table, bank.idx, bank.val, bank.labels_tensor):
        if t is None:
            continue
        h.update(str((t.dtype, tuple(t.shape))).encode())
        rows = max(1, (64 << 20) // max(1, t[:1].numel() * t.element_size()))
        for a in range(0, t.shape[0], rows):
            chunk = t[a:a + rows].detach().cpu().contiguous()
            h.update(chunk.view(torch.uint8).numpy().data if chunk.numel() else b"")
    return h.hexdigest()


class DiscriminatorPass(torch.nn.Module):
    """What D does to a batch in a training step: DiffAugment's transform (its random
    parameters are drawn outside, from the trainer's generator), the trunk, and the
    soft-label head in float32 (B x F features; D's logits feed the loss directly).

    forward(x, aug_params, labels) -> D(x) [B]; forward(x, aug_params, labels, fake_labels)
    with x = [real; fake] (fake_labels' length is the fake half's) -> (D(real), D(fake)): the
    trunk runs once on both halves, the head on each half with its own labels. With
    clean= (the real images again, not augmented; consistency regularisation) the trunk runs
    on [aug(real); aug(fake); clean] and the result is (D(real), D(fake), D(clean)).

    The unit of compile_scope="whole" (torch.compile of this module: one graph per call
    signature, the trunk's fused SN hook and the head's SN inside it, no graph break); with
    "trunk" only `trunk` is compiled and this runs eagerly around it. Not part of any
    state_dict the trainer saves."""

    def __init__(self, D, augment, trunk=None):
        super().__init__()
        self.D, self.augment = D, augment
        self.trunk = D.trunk if trunk is None else trunk

    def forward(self, x, aug_params, labels, fake_labels=None, clean=None):
        if aug_params is not None:
            x = self.augment(x, aug_params)
        if clean is not None:
            x = torch.cat([x, clean.to(x.dtype)])
        h = self.trunk(x).float()
        if fake_labels is None:
            return self.D.head(h, labels)
        n_clean = 0 if clean is None else clean.shape[0]
        n_real = h.shape[0] - n_clean - fake_labels.shape[0]
        out = (self.D.head(h[:n_real], labels),
               self.D.head(h[n_real:h.shape[0] - n_clean], fake_labels))
        if clean is None:
            return out
        return out + (self.D.head(h[h.shape[0] - n_clean:], labels),)


class WholeCall(torch.nn.Module):
    """module(*args) as a module of its own. torch.compile of a module runs the module's hooks
    outside its graph (the fused spectral norm's update, a forward pre-hook, becomes a graph of
    its own); compiling this wrapper traces the inner call with its hooks as one graph."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


class Trainer:
    """See the module docstring. `dataset`: an ArrayDataset or ImageFolder at the model's
    resolution (ArrayDataset.padded puts smaller images on a larger canvas); `bank`: a SoftLabelBank made
    for exactly this dataset (needed unless the target is onehot); `out`: the run folder
    (None: nothing is written, for tests and benchmarks); `evaluator`: a callable
    (G_ema, step) -> {"fid": .., "intra_fid": ..} for periodic evaluation; `data_info`: how
    the dataset was opened (stored in checkpoints, for `sample` and `eval --checkpoint`)."""

    def __init__(self, cfg: TrainConfig, dataset, *, bank=None, out: Optional[str] = None,
                 evaluator: Optional[Callable] = None, data_info: Optional[dict] = None,
                 callbacks: tuple = (), world: Optional[distributed.World] = None):
        cfg = cfg.resolved()
        self.world = world = world if world is not None else distributed.current()
        if cfg.reference:   # every op "ref"; what is left at auto: float32, eager, NCHW
            auto_off = {k: v for k, v in (("precision", "fp32"), ("channels_last", "off"),
                                          ("compile", "off")) if getattr(cfg, k) == "auto"}
            cfg = dataclasses.replace(cfg, impl="ref", **auto_off)
        self.device = pick_device(cfg.device)
        if world.distributed and world.device is not None and world.device.type != self.device.type:
            raise ValueError(f"this run's device is {self.device} but the process group was made "
                             f"for {world.device.type} ({world.backend}): pass the same --device "
                             "to torchrun's command as the run uses (a resumed run keeps its "
                             "checkpoint's device unless --device says otherwise)")
        cfg = dataclasses.replace(cfg, device=str(self.device))
        self.cfg, self.out, self.evaluator, self.callbacks = cfg, out, evaluator, tuple(callbacks)
        on_gpu = self.device.type == "cuda"
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and on_gpu)
        self.channels_last = _choose(cfg.channels_last, on_gpu)
        self.compiled = _choose(cfg.compile, on_gpu)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=False)
            if on_gpu:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

        self.dataset = dataset
        C, R = int(dataset.num_classes), cfg.resolution
        res = dataset.resolution
        res = tuple(res) if isinstance(res, (tuple, list)) else (res, res)
        if res != (R, R):
            raise ValueError(f"the dataset's images are {res[0]}x{res[1]} but the model is {R}x{R}; "
                             "pad or resize the dataset to the model's resolution (the CLI pads "
                             "smaller images, e.g. 28 -> 32)")
        self.num_classes, self.channels = C, int(dataset.channels)
        self.target = Target.parse(cfg.target)
        self.data_info = dict(data_info or {}, fingerprint=dataset.fingerprint().to_json(),
                              num_classes=C, channels=self.channels,
                              class_names=list(getattr(dataset, "class_names", [str(c) for c in range(C)])))
        if self.target.kind != "onehot":
            if bank is None:
                raise ValueError(f"target {cfg.target!r} needs the soft-label bank of this dataset "
                                 "(`sgan-fast classify` writes bank.npz); or train the plain "
                                 "BigGAN baseline with target onehot")
            bank.check_dataset(dataset.fingerprint())
            self.data_info["bank_digest"] = bank_digest(bank)
            bank = bank.to(self.device)
            # the plan's float32 tables (what the head reads) are built on first use and
            # cached; built here, a compiled head never sees the cache change (a recompile)
            bank.plan(self.target).tables(torch.float32)
        self.bank = bank
        # Before the first collective that assumes equal settings (DDP's, the loader's slices):
        # ranks launched with other flags or files fail together, naming the difference.
        world.agree("the run's settings, data and soft-label bank",
                    dict({k: v for k, v in cfg.to_dict().items() if k != "device"},
                         dataset_fingerprint=self.data_info["fingerprint"],
                         bank_digest=self.data_info.get("bank_digest")))
        if cfg.batch_size % world.world_size:
            raise ValueError(f"the global batch size {cfg.batch_size} is not divisible by the "
                             f"world size {world.world_size}: every rank trains on an equal "
                             f"slice; pass a --batch-size that is a multiple of {world.world_size}")
        self.local_batch_size = cfg.batch_size // world.world_size
        for name in ("d_accumulate", "g_accumulate"):
            k = getattr(cfg, name)
            if self.local_batch_size % k:
                raise ValueError(
                    f"{name} {k} does not divide the batch of "
                    f"{'each rank' if world.distributed else 'a step'} "
                    f"({self.local_batch_size}{' = batch size / world size' if world.distributed else ''}): "
                    "every micro-batch is the same size; pass a --batch-size that is a multiple "
                    f"of {k * world.world_size}")

        torch.manual_seed(cfg.seed)
        attention = cfg.attention or None          # 0 in a config: no attention
        g_kw = dict(ch=cfg.ch, z_dim=cfg.z_dim, shared_dim=cfg.shared_dim, attention=attention,
                    out_channels=self.channels, init=cfg.init, impl=cfg.impl)
        self.G = Generator(R, C, **g_kw).to(self.device)
        if cfg.cross_replica and world.distributed:
            from ..nn.cross_replica_bn import cross_replica_batch_norm
            cross_replica_batch_norm(self.G)
        self.D = Discriminator(R, C, ch=cfg.ch, attention=attention, in_channels=self.channels,
                               init=cfg.init, impl=cfg.impl).to(self.device)
        self.G_ema = Generator(**self.G.config).to(self.device)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.eval().requires_grad_(False)
        if self.channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=betas, eps=cfg.adam_eps)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=betas, eps=cfg.adam_eps)
        self.ema = GeneratorEMA(self.G, self.G_ema, decay=cfg.ema_decay, start_step=cfg.ema_start)
        self.lecam = LeCam(decay=cfg.lecam_decay) if cfg.lecam > 0 else None
        self.augment = DiffAugment(cfg.augment)

        sampler = BatchSampler(dataset.labels, cfg.batch_size, mode=cfg.sampler, seed=cfg.seed,
                               num_classes=C, rank=world.rank, world_size=world.world_size)
        self.loader = make_loader(dataset, sampler, device=self.device, flip=cfg.mirror,
                                  flip_seed=cfg.seed, channels_last=self.channels_last)
        self._batches = None
        self.gen_z = torch.Generator(device=self.device).manual_seed(cfg.seed * 7919 + 1)
        self.gen_aug = torch.Generator(device=self.device).manual_seed(cfg.seed * 7919 + 2)

        # G_run: G; D_run: augmentation -> D's trunk -> head (DiscriminatorPass). Static
        # shapes: D sees 2B images in D steps and B in G steps; two specialised graphs beat
        # one dynamic-batch graph.
        opts = dict(mode=cfg.compile_mode, dynamic=False)
        self.G_run, self.D_trunk = self.G, self.D.trunk
        if self.compiled and cfg.compile_scope == "trunk":   # SN hooks: graphs of their own
            self.G_run = torch.compile(self.G, **opts)
            self.D_trunk = torch.compile(self.D.trunk, **opts)
        self.D_run = DiscriminatorPass(self.D, self.augment, self.D_trunk)
        if self.compiled and cfg.compile_scope == "whole":   # one graph per call, hooks inside
            self.G_run = torch.compile(WholeCall(self.G), **opts)
            self.D_run = torch.compile(self.D_run, **opts)
        # The trainer draws the classes and shapes itself; the models' input checks would only
        # add a host sync per call (and break a compiled graph).
        self.G.check_inputs = self.D.check_inputs = False
        # What each step trains through: D_train in D steps, G_train in G steps. Under DDP each
        # wrapper runs forward and backward once per step of its own model, and every one of
        # its parameters gets a gradient there (G runs unwrapped under no_grad in D steps, D
        # unwrapped and frozen in G steps), so find_unused_parameters is not needed. Buffers
        # (BN statistics, spectral-norm vectors) are not broadcast at each forward: rank 0's
        # are broadcast once per step, after the G step (see _sync_buffers).
        self.G_train, self.D_train = self.G_run, self.D_run
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ddp = dict(device_ids=None, forward_sync_buffers=False, find_unused_parameters=False)
            self.G_train = DDP(self.G_run, **ddp)
            self.D_train = DDP(self.D_run, **ddp)

        self.step = 0
        self.best: Optional[dict] = None
        self._acc = torch.zeros(len(LOG_FIELDS), device=self.device, dtype=torch.float64)
        self._acc_d = self._acc_g = 0
        self._first_bad = torch.full((len(LOSS_NAMES),), -1, dtype=torch.int64, device=self.device)
        self._bad_value = torch.zeros(len(LOSS_NAMES), dtype=torch.float64, device=self.device)
        self._last_good_ckpt: Optional[tuple] = None
        # Opened by fit(): building a trainer writes nothing (the CLI builds one, as the last
        # check of a run's settings, before --overwrite clears the folder).
        self.log: Optional[RunLog] = None
        self._log_kept_to: Optional[int] = None
        self._main_problem: Optional[str] = None   # a write that failed on rank 0 (_on_main)

    # --- one step --------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _fake_batch(self, n: int):
        """This rank's n latents and classes: the global batch (n x world size) is drawn and
        rank r keeps rows [r*n, (r+1)*n), so the run is the same on any number of ranks."""
        W = self.world.world_size
        z = latents(n * W, self.G.config["z_dim"], generator=self.gen_z, device=self.device)
        y = torch.randint(0, self.num_classes, (n * W,), generator=self.gen_z, device=self.device)
        if W > 1:
            rows = slice(self.world.rank * n, (self.world.rank + 1) * n)
            z, y = z[rows], y[rows]
        return z, y

    def _real_labels(self, y, idx):
        if self.target.kind == "onehot":
            return y
        return self.bank.labels(idx, self.target)

    def _aug_params(self, rows: int, parts: int = 1):
        """DiffAugment's random parameters for this rank's `rows` images (None: no
        augmentation): its slice of `parts` global batches laid end to end ([real; fake] in D
        steps). The parameters are drawn for the global batches and this rank's rows kept."""
        if not self.augment:
            return None
        W, r, R = self.world.world_size, self.world.rank, self.cfg.resolution
        params = self.augment.sample(rows * W, R, R, generator=self.gen_aug, device=self.device)
        if W == 1:
            return params
        n = rows // parts
        return {k: v.reshape(parts, W, n, *v.shape[1:])[:, r].reshape(parts * n, *v.shape[1:])
                for k, v in params.items()}

    def _next_batch(self):
        if self._batches is None:
            self._batches = iter(self.loader)
        _, batch = next(self._batches)
        return batch

    def _watch(self, i: int, loss: torch.Tensor, step: int) -> None:
        """Records the first step at which loss i is not finite (device ops only)."""
        bad = ~torch.isfinite(loss.detach())
        first = self._first_bad[i]
        take = bad & (first < 0)
        self._first_bad[i] = torch.where(take, torch.full_like(first, step), first)
        self._bad_value[i] = torch.where(take, loss.detach().double(), self._bad_value[i])

    def _micro_batches(self, k: int, *models):
        """range(k), for the k micro-batches of one optimiser step (gradient accumulation).
        Before every micro-batch after the first, the models' spectral-norm vectors go back to
        where they were before the first: each forward in training mode takes a power-iteration
        step, and the step must take one, as one call on the whole batch would. The step from
        the same vector is the same computation, so every micro-batch uses the same
        normalised weights and the vectors end where the whole batch's call leaves them."""
        if k == 1:
            yield 0
            return
        bufs = [b for m in models for b in _sn_buffers(m)]
        saved = [b.clone() for b in bufs]
        for i in range(k):
            if i and bufs:
                torch._foreach_copy_(bufs, saved)
            yield i

    def _sync_last(self, model, i: int, k: int):
        """DDP's gradient all-reduce on the last micro-batch only (no_sync before it)."""
        if i < k - 1 and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()

    @torch.no_grad()
    def _generate(self, z, y):
        """G(z, y) without gradient, in cfg.g_accumulate micro-batches (G's batch norm sees
        the micro-batches the G step trains on)."""
        k = self.cfg.g_accumulate
        if k == 1:
            return self.G_run(z, y)
        zs, ys = z.chunk(k), y.chunk(k)
        return torch.cat([self.G_run(zs[i], ys[i]) for i in self._micro_batches(k, self.G)])

    def d_step(self, real, y_real, idx) -> None:
        """One D update on this rank's batch, in cfg.d_accumulate micro-batches: each takes
        its slice of the real images, the fakes and the augmentation parameters (all drawn
        for the whole batch first), its loss is divided by the count and its gradients add
        up, so the update is the whole batch's (D has no batch statistics)."""
        B, k = real.shape[0], self.cfg.d_accumulate
        z, y_fake = self._fake_batch(B)
        with self._autocast():
            fake = self._generate(z, y_fake)
        params = self._aug_params(2 * B, parts=2)
        m = B // k
        self.opt_D.zero_grad(set_to_none=True)
        totals = torch.zeros(7, device=self.device, dtype=torch.float64)
        for i in self._micro_batches(k, self.D):
            real_rows, fake_rows = slice(i * m, (i + 1) * m), slice(B + i * m, B + (i + 1) * m)
            p = None if params is None else {
                n: torch.cat([v[real_rows], v[fake_rows]]) for n, v in params.items()}
            with self._sync_last(self.D_train, i, k):
                parts = self._d_micro_batch(real[real_rows], fake[i * m:(i + 1) * m], p,
                                            self._real_labels(y_real[real_rows], idx[real_rows]),
                                            y_fake[i * m:(i + 1) * m])
                (parts[0] / k).backward()
            totals += torch.stack([t.detach().double() for t in parts]) / k
        if self.lecam is not None:
            # the averages follow the global batch's means: the same on every rank
            means = totals[3:5].float().clone()
            self.world.all_reduce_(means, "avg")
            self.lecam.update_means(means[0], means[1])
        self.opt_D.step()
        self._watch(0, totals[0], self.step + 1)
        self._acc[:5] += totals[:5]
        self._acc[6] += totals[6]
        self._acc_d += 1

    def _d_micro_batch(self, real, fake, aug_params, labels, y_fake):
        """D's loss on one (micro-)batch and what is logged of it: (loss, loss_real,
        loss_fake, mean D(real), mean D(fake), CR term, LeCam term)."""
        n = real.shape[0]
        with self._autocast():
            x = torch.cat([real.to(fake.dtype), fake])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.cfg.cr > 0:   # the reference's CR: D on the real images, not augmented
                d_real, d_fake, d_clean = self.D_train(x, aug_params, labels, y_fake, x[:n])
            else:
                d_real, d_fake = self.D_train(x, aug_params, labels, y_fake)
        loss, loss_real, loss_fake = hinge_d(d_real, d_fake)
        cr = pen = torch.zeros((), device=self.device)
        if self.cfg.cr > 0:
            cr = (d_clean.float() - d_real.float()).square().mean()
            loss = loss + self.cfg.cr * cr
        if self.lecam is not None:
            pen = self.lecam.penalty(d_real, d_fake)
            loss = loss + self.cfg.lecam * pen
        return (loss, loss_real, loss_fake, d_real.detach().float().mean(),
                d_fake.detach().float().mean(), cr.detach(), pen.detach())

    def g_step(self) -> None:
        """One G update, in cfg.g_accumulate micro-batches (D frozen; see d_step). G's batch
        norm normalises each micro-batch by its own statistics, as BigGAN-PyTorch's
        num_G_accumulations does."""
        B, k = self.local_batch_size, self.cfg.g_accumulate
        z, y_fake = self._fake_batch(B)
        params = self._aug_params(B)
        m = B // k
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        self.D.requires_grad_(False)
        try:
            self.opt_G.zero_grad(set_to_none=True)
            for i in self._micro_batches(k, self.G, self.D):
                rows = slice(i * m, (i + 1) * m)
                p = None if params is None else {n: v[rows] for n, v in params.items()}
                with self._sync_last(self.G_train, i, k):
                    with self._autocast():
                        fake = self.G_train(z[rows], y_fake[rows])
                        d_fake = self.D_run(fake, p, y_fake[rows])
                    loss = hinge_g(d_fake)
                    (loss / k).backward()
                total += loss.detach().double() / k
            self.opt_G.step()
        finally:
            self.D.requires_grad_(True)
        self._watch(1, total, self.step + 1)
        self._acc[5] += total
        self._acc_g += 1

    def train_step(self) -> None:
        """cfg.d_steps discriminator updates, one generator update, the EMA; step += 1."""
        self.G.train(), self.D.train()
        for _ in range(self.cfg.d_steps):
            real, y_real, idx = self._next_batch()
            self.d_step(real, y_real, idx)
        self.g_step()
        self.step += 1
        self._sync_buffers()
        self.ema.update(self.step)

    def _sync_buffers(self) -> None:
        """rank 0's G and D buffers on every rank (one broadcast per dtype, on the device).
        With cross_replica BN and deterministic kernels they are equal already; without it each
        rank's BN statistics follow its own slice, and rank 0's are kept (what DDP's
        broadcast_buffers does), so G_ema and the checkpoints are the same on every rank."""
        if self.world.distributed:
            self.world.broadcast_tensors_([b for m in (self.G, self.D) for b in m.buffers()])

    # --- checks, logs, checkpoints ----------------------------------------------------------

    def check_finite(self) -> None:
        """NonFiniteLossError naming the first non-finite loss and its step (one host sync);
        with several ranks, the earliest over all ranks, on every rank alike."""
        first, values = self._first_bad.tolist(), self._bad_value.tolist()
        if self.world.distributed:
            for f, v in self.world.gather_objects((first, values)):
                for i in range(len(first)):
                    if f[i] >= 0 and (first[i] < 0 or f[i] < first[i]):
                        first[i], values[i] = f[i], v[i]
        for i, s in enumerate(first):
            if s >= 0:
                value = float(values[i])
                kept = (f"the last good checkpoint ({self._last_good_ckpt[0]}, step "
                        f"{self._last_good_ckpt[1]}) is kept" if self._last_good_ckpt
                        else "no checkpoint had been written yet")
                raise NonFiniteLossError(
                    f"{LOSS_NAMES[i]} became {value} at step {s}; training stopped and {kept}. "
                    "Lower the learning rates, or try --precision fp32")

    def _params_finite(self) -> bool:
        ps = [p.detach() for m in (self.G, self.D) for p in m.parameters()]
        norms = torch._foreach_norm(ps)
        return bool(torch.isfinite(torch.stack(norms)).all())

    def _log_row(self, seconds: float, images: int) -> dict:
        self.world.all_reduce_(self._acc, "avg")    # the global batch's averages
        acc = self._acc.tolist()
        nd, ng = max(self._acc_d, 1), max(self._acc_g, 1)
        row = {name: acc[i] / (ng if name == "g_loss" else nd) for i, name in enumerate(LOG_FIELDS)}
        row.update(step=self.step, images_per_second=images / max(seconds, 1e-9))
        self._acc.zero_()
        self._acc_d = self._acc_g = 0
        return row

    def state_dict(self) -> dict:
        on_gpu = self.device.type == "cuda"
        rng = dict(z=self.gen_z.get_state(), aug=self.gen_aug.get_state(), cpu=torch.get_rng_state(),
                   cuda=[torch.cuda.get_rng_state(self.device)] if on_gpu else [])
        return dict(step=self.step, config=self.cfg.to_dict(), data=self.data_info,
                    world_size=self.world.world_size,
                    launch_id=os.environ.get("TORCHELASTIC_RUN_ID"),
                    model_config=dict(G=self.G.config, D=self.D.config),
                    G=self.G.state_dict(), D=self.D.state_dict(), G_ema=self.G_ema.state_dict(),
                    opt_G=self.opt_G.state_dict(), opt_D=self.opt_D.state_dict(),
                    ema=self.ema.state_dict(),
                    lecam=self.lecam.state_dict() if self.lecam is not None else None,
                    rng=rng, loader=self.loader.state_dict(), best=self.best)

    def save(self, name: str = LATEST) -> Optional[str]:
        """Writes the checkpoint `name` into out/checkpoints, after checking that the losses
        and the parameters are finite (a NaN state never replaces a good checkpoint)."""
        if self.out is None:
            return None
        self.check_finite()
        self.world.check_all(None if self._params_finite() else   # equal on every rank anyway
                             f"the parameters are not finite at step {self.step}; the "
                             "checkpoint was not written", error=NonFiniteLossError)
        path = os.path.join(self.out, "checkpoints", name)
        problem = None
        if self.world.is_main:   # rank 0 writes; the others wait for it, and share its failure
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                save_checkpoint(path, self.state_dict())
            except OSError as exc:
                if not self.world.distributed:
                    raise
                problem = f"could not write the checkpoint {path}: {exc}"
        self.world.check_all(problem)
        if name == LATEST:
            self._last_good_ckpt = (path, self.step)
        return path

    def load_state_dict(self, state: dict, *, source: str = "checkpoint") -> None:
        diffs = resume_differences(state["config"], self.cfg)
        if diffs:
            raise CheckpointError(f"{source} was trained with other settings: " + "; ".join(diffs)
                                  + " (on --resume only these may change: "
                                  + ", ".join(RESUMABLE_CHANGES) + ")")
        fp_saved = (state.get("data") or {}).get("fingerprint")
        if fp_saved != self.data_info["fingerprint"]:
            from ..labels.fingerprint import DatasetFingerprint
            diff = (DatasetFingerprint.from_json(fp_saved).differences(
                        self.dataset.fingerprint(), mine="the checkpoint")
                    if fp_saved else ["it records no dataset"])
            raise CheckpointError(f"{source} was trained on other data: " + "; ".join(diff))
        saved_bank = (state.get("data") or {}).get("bank_digest")
        if saved_bank != self.data_info.get("bank_digest"):
            raise CheckpointError(f"{source} was trained with another soft-label bank "
                                  f"({'none' if saved_bank is None else 'digest ' + saved_bank[:12]}), "
                                  f"this run has {'none' if self.bank is None else 'digest ' + self.data_info['bank_digest'][:12]}: "
                                  "resume with the bank it was trained with")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.ema.load_state_dict(state["ema"])
        if self.lecam is not None:
            self.lecam.load_state_dict(state["lecam"])
        rng = state["rng"]
        self.gen_z.set_state(rng["z"])
        self.gen_aug.set_state(rng["aug"])
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"][0], self.device)
        self.loader.load_state_dict(state["loader"])
        self._batches = None
        self.step = int(state["step"])
        self.best = state.get("best")

    @classmethod
    def resume(cls, cfg: TrainConfig, dataset, checkpoint, **kwargs) -> "Trainer":
        """A trainer that continues the run of `checkpoint` (a file or run folder)."""
        state = load_checkpoint(checkpoint)
        t = cls(cfg, dataset, **kwargs)
        t.load_state_dict(state, source=str(checkpoint))
        if t.out is not None:
            t._last_good_ckpt = (os.path.join(t.out, "checkpoints", LATEST), t.step)
            t._log_kept_to = t.step
        return t

    def sample_grid(self, name: str, per_class: int = 8) -> Optional[str]:
        if self.out is None or not self.world.is_main:
            return None
        path = os.path.join(self.out, "samples", name)

        def write():
            imgs = class_grid(self.G_ema, self.num_classes, per_class, seed=self.cfg.seed)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_grid(imgs, path, per_class)
        self._on_main(write)
        return path

    def evaluate(self) -> Optional[dict]:
        if self.evaluator is None and not self.world.distributed:
            return None
        raw = failed = None
        # rank 0 evaluates (G_ema is the same on every rank; the others need no evaluator)
        if self.world.is_main and self.evaluator is not None:
            try:
                raw = self.evaluator(self.G_ema, self.step)
            except Exception as exc:
                if not self.world.distributed:
                    raise
                failed = f"the periodic evaluation failed: {type(exc).__name__}: {exc}"
        raw, failed = self.world.broadcast_object((raw, failed))
        if failed:
            raise distributed.DistributedError("rank 0: " + failed)
        if raw is None:
            return None
        key = self.cfg.best_metric
        if key not in raw:
            raise ValueError(f"the evaluator returned {sorted(raw)} but best_metric is {key!r}")
        # plain floats: the result goes into checkpoints, which hold tensors and plain values
        res = {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else
                   [float(x) for x in v] if isinstance(v, (list, tuple)) else v)
               for k, v in raw.items()}
        res["step"] = self.step
        if self.best is None or res[key] < self.best[key]:
            self.best = res
            if self.out is not None:
                self.save(BEST)
        if self.log is not None:
            self._on_main(lambda: self.log.eval_row(res))
        return res

    # --- the loop ---------------------------------------------------------------------------

    def _open_run_folder(self) -> None:
        """rank 0: the run folder, its log (kept up to a resumed step) and config.yaml."""
        os.makedirs(self.out, exist_ok=True)
        for name in (LATEST, BEST):   # half-written by a process killed while saving
            remove_partial_writes(os.path.join(self.out, "checkpoints", name))
        if self.log is None:
            self.log = RunLog(self.out, tensorboard=self.cfg.tensorboard)
            if self._log_kept_to is not None:
                self.log.truncate_after(self._log_kept_to)
        atomic_write_text(os.path.join(self.out, "config.yaml"), self.cfg.to_yaml())

    def _on_main(self, write: Callable) -> None:
        """Runs one of rank 0's writes (logs, grids, the run folder). With one process its
        error is raised; with several it is kept in _main_problem, which the next per-step
        exchange (or check) turns into the same error on every rank, rather than rank 0
        leaving while the others wait in a collective."""
        if not self.world.is_main or self._main_problem is not None:
            return
        try:
            write()
        except Exception as exc:
            if not self.world.distributed:
                raise
            self._main_problem = f"{type(exc).__name__}: {exc}"

    def fit(self) -> TrainResult:
        """Trains up to cfg.steps (or cfg.max_minutes); checkpoints every cfg.ckpt_every steps,
        at the end and on SIGTERM/SIGINT (then returns status "interrupted")."""
        cfg = self.cfg
        stop: dict = {"signal": None}
        handlers = {}

        def on_signal(signum, frame):
            if stop["signal"] is not None and not self.world.distributed:
                # a second signal: stop now, no checkpoint. Not with several ranks: a launcher
                # may forward a scheduler's signal twice, and one rank leaving mid-collective
                # would strand the others; torchrun's SIGKILL after --shutdown-timeout is the
                # hard stop there
                raise KeyboardInterrupt(f"second signal {signum}: stopped without a checkpoint")
            stop["signal"] = stop["signal"] or signum

        start = time.perf_counter()
        t_log, img_log, step0 = start, 0, self.step
        per_step = cfg.batch_size * cfg.d_steps
        world = self.world
        bar = Progress("train", cfg.steps, unit=" step", enabled=cfg.progress and world.is_main)
        status = "done"
        if self.out is not None:
            world.check_shared_dir(self.out)
        try:
            if threading.current_thread() is threading.main_thread():
                for s in (signal.SIGTERM, signal.SIGINT):
                    handlers[s] = signal.signal(s, on_signal)
            if self.out is not None:
                self._on_main(self._open_run_folder)
                world.check_all(self._main_problem)
            while self.step < cfg.steps:
                self.train_step()
                img_log += per_step
                for cb in self.callbacks:
                    cb(self)
                if self.device.type == "cpu":
                    self.check_finite()   # free on the CPU: stop at once
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.check_finite()
                    now = time.perf_counter()
                    row = self._log_row(now - t_log, img_log)
                    t_log, img_log = now, 0
                    if self.log is not None:
                        self._on_main(lambda: self.log.row(row))
                    bar.update(self.step, img_s=row["images_per_second"], d=row["d_loss"],
                               g=row["g_loss"])
                # every rank stops at the same step: a signal or the time limit on any rank
                # stops all (one host-side collective per step, over gloo)
                over = cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes
                flags = world.max_flag((stop["signal"] is not None) | (over << 1)
                                       | ((self._main_problem is not None) << 2))
                if flags & 4:   # rank 0 could not write its files: every rank stops with why
                    raise distributed.DistributedError(
                        "rank 0: " + str(world.broadcast_object(self._main_problem)))
                if flags & 1:   # checkpoint (below) first, nothing else
                    status = "interrupted"
                    if stop["signal"] is None:
                        stop["signal"] = signal.SIGTERM   # another rank's; torchrun sends TERM
                    break
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                if self.step % cfg.sample_every == 0:
                    self.sample_grid(f"step-{self.step:07d}.png")
                if flags & 2:
                    status = "time limit"
                    break
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                    self.save()
            self.check_finite()
            world.check_all(self._main_problem)
            path = self.save()
            if status != "interrupted":
                self.sample_grid("final.png")
                world.check_all(self._main_problem)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if self.log is not None:
                self.log.flush()
        seconds = time.perf_counter() - start
        images = (self.step - step0) * per_step
        return TrainResult(status, self.step, path, seconds, images / max(seconds, 1e-9), self.best,
                           stop["signal"])
