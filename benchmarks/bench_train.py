"""Training throughput of the Softlabel-GAN trainer: real images, D steps and G steps per second,
and model FLOP utilisation (MFU).

    python benchmarks/bench_train.py [--cases biggan32 biggan128] [--providers reference
        reference_compiled fast fast_whole] [--steps N] [--reps 5] [--warmup 3] [--out CSV]
        [--md table.md]
    python benchmarks/bench_train.py --device cpu            # the tiny case, reference and fast
    python benchmarks/bench_train.py --nproc 8 --cases biggan128 --providers fast
                                  # 1..8 ranks (DDP), images/s and scaling efficiency

Cases (BigGAN settings of TrainConfig's resolution defaults; target softmax, DiffAugment
color,translation,cutout, mirror, EMA from step 0 so that every timed step does the EMA lerp
of a long run):
  biggan32   32 px, ch 64, batch 64, 4 D steps per G step; C = 10 classes (CIFAR-like)
  biggan128  128 px, ch 96, batch 256, 1 D step, attention at 64 px; C = 1000 (ImageNet-like)
  tiny       32 px, ch 8, batch 8, 2 D steps; C = 10: a smoke test for CPU and CI
Data: N = 4096 random uint8 RGB images (256 for tiny) with uniform random labels, in memory
(ArrayDataset: the GPU-resident loader on a GPU), and a soft-label bank of random softmax rows.

Providers (each a TrainConfig of the same model; one Trainer each, out=None):
  reference           reference=True: every op impl="ref", eager, float32, NCHW
  reference_compiled  reference=True, compile="on": the same under torch.compile (G and D's
                      trunk, mode "default")
  fast                the trainer's defaults for the device; on a GPU: bf16 autocast,
                      channels_last, torch.compile, fused ops impl="auto"; on the CPU: fused C++
                      ops, float32, eager
  fast_compiled       (not run by default) fast with compile="on": on a GPU the same as fast;
                      on the CPU the fast path compiled (compile_scope "trunk")
  fast_whole          fast with compile="on", compile_scope="whole": G, and everything D does
                      to a batch (DiffAugment's transform, trunk, soft-label head, every
                      spectral-norm update), each one compiled region (docs/train.md); run by
                      default on a GPU, after fast, to decide whether "whole" should be the default
  fast_graphs         (not run by default) fast with compile_mode="reduce-overhead" (CUDA graphs)
On the CPU (--device cpu, or no GPU) the default is the tiny case with reference and fast;
the compiled providers run there only when named in --providers (the tiny case's compile
took 150 s cold on 2 cores).

Compilation (compiled providers; empty for eager ones), from torch._dynamo.utils.counters,
as differences over the provider's run: graphs (graphs dynamo compiled, warm-up included),
graph_breaks (graph breaks dynamo hit while compiling them: 0 means every compiled region is
one graph), recompiles_per_step (frames dynamo compiled during the timed train_steps, a new
code object or a recompile of one, per train_step: 0 in a steady state).

Method: one Trainer per provider. Warm-up: at least --warmup train_steps, then more until the
last three step times are within --stable-tol of each other (at most --max-warmup steps; the
first steps of a compiled provider are its compile). Then --reps repetitions of --steps whole
train_steps (d_steps D updates + 1 G update + EMA), each timed with CUDA events (perf_counter
after a synchronize on the CPU); the median, p20 and p80 (interpolated) of the time per
train_step over the repetitions. Before the first case the GPU runs two seconds of matrix products (clocks).
Throughput (from the median): images_per_s = batch * d_steps / step time (real images
consumed), d_steps_per_s = d_steps / step time, g_steps_per_s = 1 / step time.

FLOPs: counted once per case with torch.utils.flop_counter.FlopCounterMode around one eager
reference train_step on the benchmark's device at the full batch (the first warm-up step of the
reference provider, or a separate reference Trainer when that provider is not run; if that
step runs out of memory, one step at batch 8 scaled linearly by batch, which flops_source
says). It counts matrix products and convolutions (forward and backward, attention included),
so augmentation, normalisation and optimiser arithmetic are left out; every provider is
credited with the same model FLOPs per step. MFU = flops_per_step / step time / peak, where
the peak is --peak-tflops (default on a GPU: 790 TFLOP/s, the bf16 dense matrix product
measured on the H100, ../shared/PLATFORM.md; used as the ceiling for every provider, the
float32 reference included). The run also measures a bf16 8192^3 matrix product on the device
(matmul_tflops) to show the ceiling of this card today. No MFU on the CPU unless
--peak-tflops is given.

Rows are appended to the CSV as each provider finishes (a run cut short keeps what it
measured), with the device, versions and date; x_reference and x_reference_compiled are the
images/s ratios to those providers measured in the same run on the same case (1.0 for the
provider itself). A provider that runs out of memory or fails leaves a row with empty numbers
and the error in `note`, and the sweep goes on. One GPU call for all cases may exceed a 600 s
call: run the cases separately there (--cases biggan32, then --cases biggan128).

Columns: provider, case; the case's resolution, ch, batch, d_steps, num_classes, num_images;
what the Trainer resolved to: precision (bf16 autocast or fp32), channels_last, compiled
(torch.compile mode or "no"), compile_scope ("trunk" or "whole"; empty when eager), impl (of
the sgan_fast ops); graphs, graph_breaks, recompiles_per_step (above); steps (train_steps
per repetition), reps, warmup_steps, warmup_s (seconds of warm-up, compile included), first_step_s;
step_median_ms, step_p20_ms, step_p80_ms (time per train_step), wall_ms (host median, the
same region); images_per_s, d_steps_per_s, g_steps_per_s (from the median); x_reference,
x_reference_compiled (images/s over theirs, same run and case); gflop_per_step,
flops_source, achieved_tflops (model FLOPs / median step time), mfu (achieved / peak, a
fraction), peak_tflops and peak_source (the ceiling used), matmul_tflops (bf16 matmul measured
in this run); peak_mem_gib (torch.cuda.max_memory_allocated of the provider); tf32 (cuDNN conv
and matmul TF32 switches: PyTorch's defaults are kept, so the float32 reference's convolutions
use TF32 on a GPU); note (OOM / FAILED and the error); device, torch, cuda, triton, date.

--nproc K: instead of the sweep above, each provider (default: fast) on 1..K ranks of this
machine, weak scaling (every rank keeps the case's batch), with images/s and the scaling
efficiency; rows go to results/train_scaling_<device>_<date>.csv (benchmarks/_scaling.py
says how it is measured and what each column means). CPU rows (gloo) only show that the
multi-process trainer runs; with one GPU only one rank is measurable.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import append_csv, machine, warm_up_gpu  # noqa: E402

from sgan_fast.data import ArrayDataset  # noqa: E402
from sgan_fast.labels import SoftLabelBank  # noqa: E402
from sgan_fast.train import TrainConfig, Trainer  # noqa: E402

# name: (TrainConfig settings, classes, images in the synthetic dataset, train_steps per rep on a GPU)
CASES = {
    "biggan32": (dict(resolution=32, ch=64, batch_size=64, d_steps=4), 10, 4096, 20),
    "biggan128": (dict(resolution=128, ch=96, batch_size=256, d_steps=1), 1000, 4096, 5),
    "tiny": (dict(resolution=32, ch=8, batch_size=8, d_steps=2), 10, 256, 2),
}
PROVIDERS = {
    "reference": dict(reference=True),
    "reference_compiled": dict(reference=True, compile="on"),
    "fast": dict(),
    "fast_compiled": dict(compile="on"),
    "fast_whole": dict(compile="on", compile_scope="whole"),
    "fast_graphs": dict(compile="on", compile_mode="reduce-overhead"),
}
BASELINES = ("reference", "reference_compiled")
H100_BF16_TFLOPS = 790.0   # measured bf16 dense matrix product on the H100 (PLATFORM.md)
PEAK_SOURCE_DEFAULT = "790 TFLOP/s: bf16 dense matmul measured on the H100 (shared/PLATFORM.md)"
FLOP_COUNT_BATCH = 8       # the fallback count's batch when the full batch does not fit


def make_data(case, seed=0):
    settings, C, N, _ = CASES[case]
    R = settings["resolution"]
    g = np.random.default_rng(seed)
    ds = ArrayDataset(g.integers(0, 256, (N, R, R, 3), dtype=np.uint8), g.integers(0, C, N),
                      num_classes=C, name=f"random_{case}")
    P = torch.softmax(torch.randn(N, C, generator=torch.Generator().manual_seed(seed)), 1)
    bank = SoftLabelBank(P, torch.from_numpy(ds.labels), fingerprint=ds.fingerprint())
    return ds, bank


def make_config(case, provider, device, **over):
    settings = dict(CASES[case][0], **over)
    return TrainConfig(steps=10**9, target="softmax", ema_start=0, progress=False,
                       tensorboard=False, device=device, **settings, **PROVIDERS[provider])


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def free(device):
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def is_oom(exc):
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def count_flops(trainer):
    """Model FLOPs of one train_step of `trainer` (which should be eager)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        trainer.train_step()
    return fc.get_total_flops()


def flops_separately(case, device, ds, bank):
    """(flops per train_step, source) from a reference Trainer made for the count alone."""
    batch = CASES[case][0]["batch_size"]
    for b in (batch, FLOP_COUNT_BATCH) if batch > FLOP_COUNT_BATCH else (batch,):
        t = None
        try:
            t = Trainer(make_config(case, "reference", device, batch_size=b), ds, bank=bank)
            f = count_flops(t)
            src = f"FlopCounterMode, 1 eager reference train_step on {device}, batch {b}"
            if b != batch:
                f, src = f * batch / b, src + f", scaled x{batch / b:g} to batch {batch}"
            return f, src
        except Exception as exc:
            if not is_oom(exc) or b == FLOP_COUNT_BATCH:
                raise
            print(f"  FLOP count at batch {b}: out of memory; counting at batch {FLOP_COUNT_BATCH}")
        finally:
            del t
            free(device)
    raise AssertionError("unreachable")


def warm_up(trainer, device, args, flops_out=None):
    """Runs train_steps until the time per step is stable; returns (steps, seconds, first step
    seconds). With flops_out (a dict), the first step is the FLOP count."""
    times = []
    t_start = time.perf_counter()
    while True:
        sync(device)
        t0 = time.perf_counter()
        if flops_out is not None and not times:
            flops_out["flops"] = count_flops(trainer)
        else:
            trainer.train_step()
        sync(device)
        times.append(time.perf_counter() - t0)
        n = len(times)
        if n >= args.max_warmup:
            break
        if n >= max(args.warmup, 3) and max(times[-3:]) / min(times[-3:]) - 1 <= args.stable_tol:
            break
    return len(times), time.perf_counter() - t_start, times[0]


def time_steps(trainer, device, steps, reps):
    """Seconds per train_step of each repetition: (event times, host wall times)."""
    ev, wall = [], []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        for _ in range(steps):
            trainer.train_step()
        if device == "cuda":
            end.record()
            end.synchronize()
            ev.append(start.elapsed_time(end) * 1e-3 / steps)
        w = (time.perf_counter() - t0) / steps
        wall.append(w)
        if device != "cuda":
            ev.append(w)
    return ev, wall


def dynamo_counts():
    """(graph breaks, unique graphs, frames compiled) so far in this process: dynamo's own
    counters (torch._dynamo.utils.counters; keys it has had since torch 2.0, checked on
    2.14.1)."""
    from torch._dynamo.utils import counters
    return (sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"],
            counters["frames"]["total"])


def quantiles(xs):
    """Median, p20, p80 (linear interpolation between the sorted repetitions)."""
    return tuple(float(q) for q in np.percentile(np.asarray(xs, dtype=np.float64), [50, 20, 80]))


def run_provider(case, provider, device, ds, bank, args, want_flops):
    """Measures one provider on one case; returns a dict of results (see main's row)."""
    c0 = dynamo_counts()
    trainer = Trainer(make_config(case, provider, device), ds, bank=bank)
    expect_compiled = PROVIDERS[provider].get("compile") == "on"
    if expect_compiled and not trainer.compiled:
        raise RuntimeError(f"the Trainer did not compile for {provider} (reference=True with "
                           "compile='on' needs the trainer that honours an explicit compile)")
    flops_out = {} if want_flops else None
    n_warm, warm_s, first_s = warm_up(trainer, device, args, flops_out)
    steps = args.steps or (CASES[case][3] if device == "cuda" else 2)
    reps = args.reps or (5 if device == "cuda" else 3)
    c1 = dynamo_counts()
    ev, wall = time_steps(trainer, device, steps, reps)
    c2 = dynamo_counts()
    cfg = trainer.cfg
    compiled = trainer.compiled
    out = dict(precision="bf16" if trainer.bf16 else "fp32",
               channels_last=trainer.channels_last,
               compiled=(cfg.compile_mode if compiled else "no"),
               compile_scope=cfg.compile_scope if compiled else "", impl=cfg.impl,
               graphs=c2[1] - c0[1] if compiled else "",
               graph_breaks=c2[0] - c0[0] if compiled else "",
               recompiles_per_step=sig((c2[2] - c1[2]) / (steps * reps), 3) if compiled else "",
               steps=steps, reps=reps, warmup_steps=n_warm, warmup_s=warm_s, first_step_s=first_s,
               q=quantiles(ev), wall=statistics.median(wall), flops=(flops_out or {}).get("flops"))
    if device == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del trainer
    return out


def device_slug(name):
    low = name.lower()
    for key in ("h100", "h200", "a100", "l40s", "l4", "a10"):
        if key in low:
            return key
    return re.sub(r"[^a-z0-9]+", "_", low).strip("_")[:24] or "device"


def tf32_settings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return (f"conv {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, matmul "
                    f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}")
        except Exception:
            return "unknown"


def matmul_tflops():
    """bf16 8192^3 matrix product on random data, do_bench median, TFLOP/s."""
    import triton.testing

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = triton.testing.do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")
    return 2 * n**3 / (ms * 1e-3) / 1e12


def sig(x, digits=5):
    """x rounded to `digits` significant digits (CPU and GPU values differ by 1000x)."""
    return float(f"{x:.{digits}g}")


def fmt(v, nd=2):
    return "" if v is None or v == "" else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def markdown(rows):
    head = ["case", "provider", "precision", "compiled", "graphs", "graph breaks",
            "recompiles / step", "ms / train_step (p20-p80)", "real img/s",
            "D steps/s", "G steps/s", "GFLOP / step", "TFLOP/s", "MFU", "x reference",
            "x reference_compiled", "peak GiB", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ms = "" if r["step_median_ms"] == "" else \
            f"{r['step_median_ms']:.1f} ({r['step_p20_ms']:.1f}-{r['step_p80_ms']:.1f})"
        mfu = "" if r["mfu"] == "" else f"{100 * r['mfu']:.1f}%"
        compiled = r["compiled"] + (f" ({r['compile_scope']})" if r["compile_scope"] else "")
        cells = [r["case"], r["provider"], r["precision"], compiled, fmt(r["graphs"]),
                 fmt(r["graph_breaks"]), fmt(r["recompiles_per_step"]), ms,
                 fmt(r["images_per_s"], 0), fmt(r["d_steps_per_s"]), fmt(r["g_steps_per_s"]),
                 fmt(r["gflop_per_step"], 1), fmt(r["achieved_tflops"], 1), mfu,
                 fmt(r["x_reference"]), fmt(r["x_reference_compiled"]), fmt(r["peak_mem_gib"], 1),
                 r["note"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _room_for_compiled_providers() -> None:
    """Two compiled trainers in one process (reference_compiled, fast) share the code objects
    dynamo caches graphs under (DiscriminatorTrunk.forward, the fused-SN hook); the default
    limit of 8 entries would send the second one back to eager without a word."""
    import torch._dynamo
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))


def main(argv=None):
    _room_for_compiled_providers()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=None, help=f"of {', '.join(CASES)}, or all "
                    "(default: biggan32 biggan128 on a GPU, tiny on the CPU)")
    ap.add_argument("--providers", nargs="+", default=None, help=f"of {', '.join(PROVIDERS)} "
                    "(default: reference reference_compiled fast fast_whole on a GPU, reference "
                    "fast on the CPU)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="default: cuda when present")
    ap.add_argument("--steps", type=int, default=None,
                    help="train_steps per repetition (default per case on a GPU: biggan32 20, "
                    "biggan128 5; 2 on the CPU)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5 GPU, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="least warm-up train_steps (default 3 GPU, 1 CPU)")
    ap.add_argument("--max-warmup", type=int, default=None,
                    help="most warm-up train_steps (default 40 GPU, 2 CPU)")
    ap.add_argument("--stable-tol", type=float, default=0.1,
                    help="warm-up ends when the last 3 step times are within this fraction")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the MFU ceiling in TFLOP/s (default on a GPU: 790, bf16 dense measured "
                    "on the H100; none on the CPU)")
    ap.add_argument("--no-matmul-check", action="store_true",
                    help="skip measuring the bf16 matmul TFLOP/s of this card")
    ap.add_argument("--out", "--csv", dest="out", default=None,
                    help="CSV to append to (default benchmarks/results/train_<gpu>_<date>.csv)")
    ap.add_argument("--md", default=None,
                    help="also write the markdown table here (rewritten after every row)")
    ap.add_argument("--nproc", type=int, default=None, metavar="K",
                    help="the scaling sweep: 1..K ranks (DDP) per provider instead (see above)")
    args = ap.parse_args(argv)
    if args.nproc is not None and args.nproc < 1:
        ap.error(f"--nproc must be >= 1, got {args.nproc}")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no GPU")
    gpu = device == "cuda"
    cases = args.cases or (["biggan32", "biggan128"] if gpu else ["tiny"])
    if cases == ["all"]:
        cases = list(CASES)
    providers = args.providers or (["fast"] if args.nproc else
                                   ["reference", "reference_compiled", "fast", "fast_whole"]
                                   if gpu else ["reference", "fast"])
    for what, given, known in (("case", cases, CASES), ("provider", providers, PROVIDERS)):
        bad = [x for x in given if x not in known]
        if bad:
            ap.error(f"unknown {what} {bad[0]!r}; choose from {', '.join(known)}")
    providers = [p for p in PROVIDERS if p in providers]   # baselines first, for the ratios
    if args.warmup is None:
        args.warmup = 3 if gpu else 1
    if args.max_warmup is None:
        args.max_warmup = 40 if gpu else 2
    args.max_warmup = max(args.max_warmup, args.warmup)

    name, triton_version, date = machine()
    if not gpu and torch.cuda.is_available():   # --device cpu on a GPU machine
        name = platform.processor() or "cpu"
    if args.nproc:
        import _scaling
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                       f"train_scaling_{device_slug(name) if gpu else 'cpu'}_{date}.csv")
        print(f"# training scaling on {name} ({device}), 1..{args.nproc} ranks; torch "
              f"{torch.__version__}, {date}; rows -> {out}", flush=True)
        return _scaling.sweep(args, device, cases, providers, (name, triton_version, date), out)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"train_{device_slug(name) if gpu else 'cpu'}_{date}.csv")
    peak = args.peak_tflops if args.peak_tflops is not None else (H100_BF16_TFLOPS if gpu else None)
    peak_source = ("" if peak is None else PEAK_SOURCE_DEFAULT if args.peak_tflops is None
                   else f"{peak:g} TFLOP/s given with --peak-tflops")
    tf32 = tf32_settings() if gpu else ""
    mm = ""
    if gpu:
        warm_up_gpu()
        if not args.no_matmul_check:
            try:
                mm = round(matmul_tflops(), 1)
            except Exception as exc:
                print(f"  bf16 matmul check failed: {type(exc).__name__}: {exc}")
    print(f"# training throughput on {name} ({device}); torch {torch.__version__}, triton "
          f"{triton_version}, {date}; peak {peak} TFLOP/s, bf16 matmul measured now {mm}; "
          f"tf32 {tf32}; rows -> {out}", flush=True)

    rows = []
    for case in cases:
        settings, C, N, _ = CASES[case]
        batch, d_steps = settings["batch_size"], settings["d_steps"]
        ds, bank = make_data(case)
        flops, flops_source = None, ""

        def count_separately():
            try:
                return flops_separately(case, device, ds, bank)
            except Exception as exc:
                print(f"  {case}: FLOP count failed: {type(exc).__name__}: {exc}")
                return None, f"count failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

        if "reference" not in providers:
            flops, flops_source = count_separately()
        ips = {}
        for prov in providers:
            torch._dynamo.reset()   # a fresh compile per trainer, never the recompile limit
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            note = ""
            try:
                res = run_provider(case, prov, device, ds, bank, args, want_flops=prov == "reference")
            except Exception as exc:   # keep the sweep going; say what failed
                res = None
                kind = "OOM" if is_oom(exc) else "FAILED"
                note = f"{kind}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            free(device)
            if prov == "reference":
                if res is not None and res["flops"] is not None:
                    flops = res["flops"]
                    flops_source = (f"FlopCounterMode, 1 eager reference train_step on {device}, "
                                    f"batch {batch}")
                else:   # the reference failed (out of memory?): count on a smaller batch
                    flops, flops_source = count_separately()
            if res is not None:
                med, p20, p80 = res["q"]
                ips[prov] = batch * d_steps / med
            row = dict(
                provider=prov, case=case, resolution=settings["resolution"], ch=settings["ch"],
                batch=batch, d_steps=d_steps, num_classes=C, num_images=N,
                precision=res["precision"] if res else "", channels_last=res["channels_last"] if res else "",
                compiled=res["compiled"] if res else "",
                compile_scope=res["compile_scope"] if res else "", impl=res["impl"] if res else "",
                graphs=res["graphs"] if res else "", graph_breaks=res["graph_breaks"] if res else "",
                recompiles_per_step=res["recompiles_per_step"] if res else "",
                steps=res["steps"] if res else "", reps=res["reps"] if res else "",
                warmup_steps=res["warmup_steps"] if res else "",
                warmup_s=round(res["warmup_s"], 2) if res else "",
                first_step_s=round(res["first_step_s"], 3) if res else "",
                step_median_ms=round(med * 1e3, 3) if res else "",
                step_p20_ms=round(p20 * 1e3, 3) if res else "",
                step_p80_ms=round(p80 * 1e3, 3) if res else "",
                wall_ms=round(res["wall"] * 1e3, 3) if res else "",
                images_per_s=sig(ips[prov]) if res else "",
                d_steps_per_s=sig(d_steps / med) if res else "",
                g_steps_per_s=sig(1 / med) if res else "",
                x_reference="", x_reference_compiled="",
                gflop_per_step=sig(flops / 1e9) if flops else "",
                achieved_tflops=sig(flops / med / 1e12) if (res and flops) else "",
                mfu=sig(flops / med / (peak * 1e12)) if (res and flops and peak) else "",
                peak_tflops=peak if peak else "", peak_source=peak_source,
                matmul_tflops=mm, flops_source=flops_source,
                peak_mem_gib=round(res["peak_mem_gib"], 2) if (res and "peak_mem_gib" in res) else "",
                tf32=tf32, note=note, device=name, torch=torch.__version__,
                cuda=torch.version.cuda or "", triton=triton_version, date=date)
            for b in BASELINES:
                if res is not None and b in ips:
                    row[f"x_{b}"] = sig(ips[prov] / ips[b], 4)
            rows.append(row)
            append_csv(out, [row])
            if args.md:   # after every row, so that a run cut short leaves its table
                with open(args.md, "w") as f:
                    f.write(markdown(rows))
            if res is not None:
                print(f"  {case:<9} {prov:<18} {row['step_median_ms']:>10.2f} ms/step  "
                      f"{row['images_per_s']:>10.1f} img/s  D {row['d_steps_per_s']:.2f}/s  "
                      f"G {row['g_steps_per_s']:.2f}/s  MFU {row['mfu']}  x ref {row['x_reference']}  "
                      f"x ref_c {row['x_reference_compiled']}  warm-up {row['warmup_steps']} steps "
                      f"{row['warmup_s']} s ({time.perf_counter() - t0:.0f} s in all)", flush=True)
            else:
                print(f"  {case:<9} {prov:<18} {note}", flush=True)
        ds = bank = None   # free before the next case
        free(device)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
