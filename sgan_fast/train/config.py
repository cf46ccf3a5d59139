"""TrainConfig: every setting of a Softlabel-GAN run, with documented defaults per resolution.

Settings left at None take the default of the model's resolution (RESOLUTION_DEFAULTS),
which follow BigGAN / DiffAugment-BigGAN practice:

    resolution   ch   batch   d_steps   g_lr    d_lr    z_dim   attention (G and D)
    32           64   64      4         2e-4    2e-4    128     none
    64           64   128     2         1e-4    4e-4    120     32
    128          96   256     1         1e-4    4e-4    120     64

A config is a flat dataclass of plain values, so it is stored in every checkpoint, read from
and written to YAML, and compared on --resume (settings that change the model or the
optimiser must match; the run length and the logging intervals may change).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

RESOLUTION_DEFAULTS = {
    32: dict(ch=64, batch_size=64, d_steps=4, g_lr=2e-4, d_lr=2e-4, z_dim=128, attention=None),
    64: dict(ch=64, batch_size=128, d_steps=2, g_lr=1e-4, d_lr=4e-4, z_dim=120, attention=32),
    128: dict(ch=96, batch_size=256, d_steps=1, g_lr=1e-4, d_lr=4e-4, z_dim=120, attention=64),
}
PRECISIONS = ("auto", "bf16", "fp32")
AUTO_BOOL = ("auto", "on", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# What torch.compile covers. "trunk": G and D's residual trunk, each module's fused
# spectral-norm update a graph of its own before the module's graph (torch.compile runs a
# module's hooks outside its frame), DiffAugment's transform and the soft-label head eager.
# "whole": one region per model call with every SN update inside it: G, and everything D does
# to a batch (DiffAugment's transform, the trunk, the head with its own SN on each half).
COMPILE_SCOPES = ("trunk", "whole")
BEST_METRICS = ("intra_fid", "fid")

# What may differ between a checkpoint's config and the resumed run's: how long it runs and
# how often it reports; everything else changes the model, the data order or the optimiser.
RESUMABLE_CHANGES = ("steps", "max_minutes", "log_every", "ckpt_every", "sample_every",
                     "eval_every", "eval_per_class", "best_metric", "progress", "tensorboard",
                     "compile", "compile_mode", "compile_scope", "impl", "precision",
                     "channels_last", "deterministic", "reference", "device", "cross_replica",
                     "d_accumulate")


@dataclasses.dataclass
class TrainConfig:
    # model
    resolution: int = 32
    ch: Optional[int] = None
    z_dim: Optional[int] = None
    shared_dim: int = 128
    attention: Optional[int] = None     # None: the resolution's default; 0: none (kept as 0)
    init: str = "ortho"
    # optimisation
    steps: int = 10_000                 # generator steps; each follows d_steps D steps
    batch_size: Optional[int] = None
    d_steps: Optional[int] = None
    # gradient accumulation: each D / G update in this many equal micro-batches of the batch
    # (BigGAN-PyTorch's num_D_accumulations / num_G_accumulations; batch_size is the whole
    # update's batch here, theirs is the micro-batch's)
    d_accumulate: int = 1
    g_accumulate: int = 1
    g_lr: Optional[float] = None
    d_lr: Optional[float] = None
    adam_beta1: float = 0.0
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    # Softlabel-GAN: what D sees as the class vector of a real image (labels.targets)
    target: str = "softmax"
    # augmentation and regularisation
    augment: str = "color,translation,cutout"   # DiffAugment policy; "" for none
    mirror: bool = True
    ema_decay: float = 0.9999
    ema_start: int = 1000
    lecam: float = 0.0                  # LeCam weight; 0 = off
    cr: float = 0.0                     # consistency regularisation weight (the reference's --CR)
    lecam_decay: float = 0.99
    sampler: str = "instance"
    seed: int = 0
    # speed (each switchable; `reference` turns every one off)
    reference: bool = False             # all ops impl="ref", eager, float32
    impl: str = "auto"
    precision: str = "auto"             # bf16 autocast on a GPU, fp32 on the CPU
    channels_last: str = "auto"         # on a GPU
    compile: str = "auto"               # torch.compile G and D (compile_scope) on a GPU
    compile_mode: str = "default"       # "reduce-overhead" adds CUDA graphs
    compile_scope: str = "trunk"        # "whole": G and all of D's pass, one region each
    deterministic: bool = False         # torch.use_deterministic_algorithms
    cross_replica: bool = False         # G's batch norm over every rank's batch (torchrun)
    device: Optional[str] = None        # default: cuda when present
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this long
    # outputs
    log_every: int = 50
    ckpt_every: int = 1000
    sample_every: int = 1000
    eval_every: int = 0                 # 0 = no periodic evaluation
    eval_per_class: int = 50
    best_metric: str = "intra_fid"
    progress: bool = True
    tensorboard: bool = True            # when the tensorboard package is installed

    def resolved(self) -> "TrainConfig":
        """A copy with every None filled from the resolution's defaults, checked."""
        if self.resolution not in RESOLUTION_DEFAULTS:
            raise ValueError(f"resolution must be one of {sorted(RESOLUTION_DEFAULTS)}, got "
                             f"{self.resolution}")
        d = RESOLUTION_DEFAULTS[self.resolution]
        out = dataclasses.replace(self)
        for k, v in d.items():
            if getattr(out, k) is None:
                setattr(out, k, v)
        out.check()
        return out

    def check(self) -> None:
        def positive(name, integer=True):
            v = getattr(self, name)
            if v is None:
                return
            if (integer and (not isinstance(v, int) or isinstance(v, bool))) or v <= 0:
                raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, "
                                 f"got {v!r}")

        for name in ("steps", "batch_size", "d_steps", "d_accumulate", "g_accumulate", "ch", "z_dim", "shared_dim", "log_every",
                     "ckpt_every", "sample_every", "eval_per_class"):
            positive(name)
        for name in ("g_lr", "d_lr", "adam_eps"):
            positive(name, integer=False)
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0 (or none for no limit), got {self.max_minutes}")
        if self.attention is not None and self.attention < 0:
            raise ValueError(f"attention must be a resolution, 0 or none, got {self.attention}")
        for name in ("eval_every", "ema_start"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError(f"Adam betas must be in [0, 1), got {self.adam_beta1}, {self.adam_beta2}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.cr < 0:
            raise ValueError(f"cr must be >= 0 (0: no consistency regularisation), got {self.cr}")
        if self.lecam < 0 or not 0 <= self.lecam_decay < 1:
            raise ValueError(f"lecam must be >= 0 and lecam_decay in [0, 1), got {self.lecam}, "
                             f"{self.lecam_decay}")
        choices = dict(precision=PRECISIONS, channels_last=AUTO_BOOL, compile=AUTO_BOOL,
                       compile_mode=COMPILE_MODES, compile_scope=COMPILE_SCOPES,
                       best_metric=BEST_METRICS,
                       init=("ortho", "N02", "xavier"),
                       impl=("auto", "ref", "cpu", "cuda", "triton"))
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        from ..labels.targets import Target
        Target.parse(self.target)
        from .augment import parse_policy
        parse_policy(self.augment)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, what: str = "config") -> "TrainConfig":
        """A config from a dict (YAML, a checkpoint); unknown keys are refused by name."""
        return cls(**typed_settings(d, what))

    @classmethod
    def from_yaml(cls, path) -> "TrainConfig":
        return cls(**read_yaml_settings(path))

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def resume_differences(saved: dict, now: "TrainConfig") -> list[str]:
    """The settings that differ between a checkpoint's (resolved) config and this run's and
    that a resumed run may not change. The device may change within its type (cuda:0 ->
    cuda:1), not across: the trainer's random generators and the loader's flips are
    device-specific, so the run would not continue as it would have."""
    mine = now.to_dict()
    # a setting newer than the checkpoint had its default then
    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    out = [f"{k}: checkpoint {saved.get(k, default[k])!r}, now {mine[k]!r}" for k in mine
           if k not in RESUMABLE_CHANGES and saved.get(k, default[k]) != mine[k]]
    a, b = saved.get("device"), mine.get("device")
    if a and b and a.split(":")[0] != b.split(":")[0]:
        out.append(f"device: checkpoint {a!r}, now {b!r} (a run continues on the device type "
                   "it started on)")
    return out


def field_type(name: str) -> type:
    """int, float, bool or str: a TrainConfig field's type (annotations are strings here)."""
    ann = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[name]
    ann = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    for t in (bool, int, float):
        if t.__name__ in ann:
            return t
    return str


def coerce(name: str, value, what: str = "config"):
    """A setting's value in its field's type, or ValueError naming the setting: YAML reads
    2e-4 as a string and 1 as an int where a float is meant."""
    f = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    t = field_type(name)
    if name == "max_minutes" and value == 0:
        return None                      # 0: no time limit, as the flag
    if name in ("compile", "channels_last") and isinstance(value, bool):
        return "on" if value else "off"  # YAML reads an unquoted on/off as a boolean
    if value is None:
        if f.default is None:
            return None
        raise ValueError(f"{what}: {name} cannot be empty (default {f.default!r})")
    try:
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "yes", "no"):
                return value.lower() in ("true", "on", "yes")
            raise ValueError
        if t is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if t is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {name} must be {t.__name__}, got {value!r}") from None


def read_yaml_settings(path) -> dict:
    """The training settings a config file gives (dashes or underscores), checked and typed;
    only those keys, so that a resumed run overrides exactly what the file says. Its `data`
    section is the data flags' (sgan_fast.presets), not read here."""
    from ..presets import DATA_KEY, read_config
    d = read_config(str(path))
    d.pop(DATA_KEY, None)
    return typed_settings(d, str(path))


def typed_settings(d: dict, what: str) -> dict:
    """d's settings, each in its field's type; an unknown key is refused by name."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(names))}")
    return {k: coerce(k, v, what) for k, v in d.items()}
