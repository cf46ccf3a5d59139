"""Host time per call of the fused ops at tiny shapes, where the arithmetic is negligible and
what is left is the cost of getting there: Python, argument checks, the dispatcher, autograd.

    python benchmarks/bench_host.py [--device cpu|cuda] [--threads 1] [--reps 7] [--calls N]
        [--csv benchmarks/results/host.csv] [--md table.md]

Cases (B = 4, C = 3, F = 8, K = 2 unless said; float32):
    matmul            one `h @ w` ([B, F] @ [F, 1]): the yardstick every row is divided by
    softlabel_proj    dense, top-k, hard and bank labels (dense and top-k banks, softmax:0.5)
    head              SoftLabelProjectionHead(F, C): power iteration of both SN layers, their
                      buffers and the projection
    bank_lookup       a dense and a top-k bank target for B dataset indices
    sn_biggan32       the spectral-norm update of BigGAN-32's discriminator trunk (ch 2, 10
                      layers); "fused" is the handle of fuse_spectral_norm, as the model runs it
Providers:
    fused             the public op (impl="auto": the C++ kernels on CPU, the chosen CUDA or
                      Triton kernels on a GPU), check=False as in a tuned loop
    ref               the same op's eager reference (softlabel_proj_ref, bank_lookup_ref, the
                      head's per-layer power iteration + the reference projection, and
                      spectral_norm_grouped_ref), plain torch
    torch_param       (sn only) torch.nn.utils.parametrizations.spectral_norm on modules of
                      the same weight shapes: one update = reading every module's .weight
Directions: fwd (under torch.no_grad for lookups and sn updates) and fwd_bwd (the output's
backward with a fixed gradient; every gradient reset to None before each call, as
zero_grad(set_to_none=True) leaves them).

Timing: `calls` back-to-back calls per repetition, `reps` repetitions, median and 20/80 %
quantiles of the per-call mean of the calling thread's CPU time (the host's cost, which other
processes on the machine do not inflate), and the median wall time per call beside it; on a
GPU no synchronisation inside a repetition (a final synchronise closes each repetition). The markdown lists each
case's medians, fused / ref and fused / matmul, and the targets of issue #16 on the CPU:
head fwd_bwd <= 2x matmul fwd_bwd and <= 1/4 of its reference; the BigGAN-32 spectral-norm
update <= 1/5 of torch_param (fwd and fwd_bwd).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from _common import machine, write_outputs  # noqa: E402

from sgan_fast.labels import SoftLabelBank  # noqa: E402
from sgan_fast.models import Discriminator  # noqa: E402
from sgan_fast.nn import SoftLabelProjectionHead  # noqa: E402
from sgan_fast.ops import (bank_lookup, bank_lookup_ref, softlabel_proj,  # noqa: E402
                           softlabel_proj_ref, spectral_norm_grouped, spectral_norm_grouped_ref)

B, C, F, K = 4, 3, 8, 2
N = 50  # images in the tiny bank


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: the host path alone, no pool hand-offs)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--calls", type=int, default=None,
                    help="calls per repetition (default: about 0.2 s of calls per repetition)")
    ap.add_argument("--cases", nargs="+", default=None,
                    help="only these cases (matmul always runs: it is the yardstick)")
    ap.add_argument("--csv", default=os.path.join(HERE, "results", "host.csv"))
    ap.add_argument("--md", default=None, help="also write the markdown table here")
    return ap


def time_per_call(fn, params, reps, calls, device):
    """(median, p20, p80) of the mean host CPU µs per call over `reps` runs of `calls` calls,
    and the median wall µs per call. Host time is the calling thread's CPU time
    (time.thread_time): what the call costs the host, unaffected by other processes taking
    the cores (CPU autograd runs its backward on the calling thread too). On a quiet machine
    the two agree; on a GPU the wall time also waits for the device at each repetition's end."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(n):
        for _ in range(n):
            for p in params:
                p.grad = None
            fn()

    run(20)
    sync()
    if calls is None:  # about 0.2 s per repetition
        t0 = time.perf_counter()
        run(50)
        sync()
        calls = max(50, int(0.2 / max((time.perf_counter() - t0) / 50, 1e-7)))
    per, wall = [], []
    for _ in range(reps):
        sync()
        t0, c0 = time.perf_counter(), time.thread_time()
        run(calls)
        c1 = time.thread_time()
        sync()
        wall.append((time.perf_counter() - t0) / calls * 1e6)
        per.append((c1 - c0) / calls * 1e6)
    per.sort()
    return (statistics.median(per), per[int(0.2 * (len(per) - 1))],
            per[int(0.8 * (len(per) - 1))], statistics.median(wall))


def _fwd_bwd(f, grad):
    def fn():
        torch.autograd.backward(f(), grad)
    return fn


def _no_grad(f):
    def fn():
        with torch.no_grad():
            f()
    return fn


# --- cases: each returns {(provider, direction): (fn, params)} ----------------------------------

def case_matmul(dev):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(B, F, generator=g).to(dev).requires_grad_(True)
    w = torch.randn(F, 1, generator=g).to(dev).requires_grad_(True)
    grad = torch.randn(B, 1, generator=g).to(dev)
    return {("torch", "fwd"): (lambda: h @ w, [h, w]),
            ("torch", "fwd_bwd"): (_fwd_bwd(lambda: h @ w, grad), [h, w])}


def _proj_inputs(dev, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(dev)  # noqa: E731
    h = r(B, F).requires_grad_(True)
    E, w, bias = r(C, F).requires_grad_(True), r(F).requires_grad_(True), r(1).requires_grad_(True)
    vec = (r(C), r(F), torch.ones(1, device=dev), r(F))
    return h, E, w, bias, vec, torch.randn(B, generator=g).to(dev)


def case_softlabel_proj(dev, form):
    h, E, w, bias, vec, grad = _proj_inputs(dev)
    g = torch.Generator().manual_seed(1)
    params = [h, E, w, bias]
    if form == "dense":
        labels = torch.softmax(torch.randn(B, C, generator=g), 1).to(dev)
        ref_labels = labels
    elif form == "topk":
        labels = (torch.randint(0, C, (B, K), generator=g).to(dev),
                  torch.rand(B, K, generator=g).to(dev))
        ref_labels = labels
    elif form == "hard":
        labels = torch.randint(0, C, (B,), generator=g).to(dev)
        ref_labels = labels
    else:  # bank_dense, bank_topk
        bank = SoftLabelBank(torch.softmax(torch.randn(N, C, generator=g), 1),
                             torch.randint(0, C, (N,), generator=g))
        if form == "bank_topk":
            bank = bank.to_topk(K)
        bank = bank.to(dev)
        idx = torch.randint(0, N, (B,), generator=g).to(dev)
        labels = bank.labels(idx, "softmax:0.5")
        plan = labels.plan
        ref_labels = None

    def fused():
        return softlabel_proj(h, labels, E, w, bias, *vec, check=False)

    def ref():
        lab = ref_labels if ref_labels is not None else bank_lookup_ref(plan, idx)
        return softlabel_proj_ref(h, lab, E, w, bias, *vec)

    return {("fused", "fwd"): (fused, params), ("ref", "fwd"): (ref, params),
            ("fused", "fwd_bwd"): (_fwd_bwd(fused, grad), params),
            ("ref", "fwd_bwd"): (_fwd_bwd(ref, grad), params)}


def case_head(dev):
    g = torch.Generator().manual_seed(2)
    h = torch.randn(B, F, generator=g).to(dev).requires_grad_(True)
    P = torch.softmax(torch.randn(B, C, generator=g), 1).to(dev)
    grad = torch.randn(B, generator=g).to(dev)
    torch.manual_seed(0)
    fused = SoftLabelProjectionHead(F, C, check=False).to(dev)
    ref = SoftLabelProjectionHead(F, C, impl="ref", check=False).to(dev)
    ref.load_state_dict(fused.state_dict())
    pf, pr = [h, *fused.parameters()], [h, *ref.parameters()]
    return {("fused", "fwd"): (lambda: fused(h, P), pf), ("ref", "fwd"): (lambda: ref(h, P), pr),
            ("fused", "fwd_bwd"): (_fwd_bwd(lambda: fused(h, P), grad), pf),
            ("ref", "fwd_bwd"): (_fwd_bwd(lambda: ref(h, P), grad), pr)}


def case_bank_lookup(dev, form):
    g = torch.Generator().manual_seed(3)
    bank = SoftLabelBank(torch.softmax(torch.randn(N, C, generator=g), 1),
                         torch.randint(0, C, (N,), generator=g))
    if form == "topk":
        bank = bank.to_topk(K)
    plan = bank.to(dev).plan("softmax:0.5")
    idx = torch.randint(0, N, (B,), generator=g).to(dev)
    return {("fused", "fwd"): (_no_grad(lambda: bank_lookup(plan, idx, check=False)), []),
            ("ref", "fwd"): (_no_grad(lambda: bank_lookup_ref(plan, idx)), [])}


def _module_like(W):
    if W.dim() == 4:
        return nn.Conv2d(W.shape[1], W.shape[0], W.shape[2], bias=False)
    return nn.Linear(W.shape[1], W.shape[0], bias=False)


def case_sn_biggan32(dev):
    torch.manual_seed(4)
    D = Discriminator(32, 10, ch=2).to(dev)
    fusion = D.sn_fusion
    layers = fusion._layers
    weights = [layer.weight() for layer in layers]
    us = [layer.u().clone() for layer in layers]
    mods = []
    for W in weights:
        m = _module_like(W).to(dev)
        with torch.no_grad():
            m.weight.copy_(W)
        mods.append(nn.utils.parametrizations.spectral_norm(m))
    grads = [torch.randn_like(W) for W in weights]
    params_param = [m.parametrizations.weight.original for m in mods]

    def fused():
        return list(fusion.update().values())

    def ref():
        return spectral_norm_grouped_ref(weights, us, training=True)

    def param():
        return [m.weight for m in mods]

    def bwd(f):
        def fn():
            torch.autograd.backward(f(), grads)
        return fn

    return {("fused", "fwd"): (_no_grad(fused), weights), ("ref", "fwd"): (_no_grad(ref), weights),
            ("torch_param", "fwd"): (_no_grad(param), params_param),
            ("fused", "fwd_bwd"): (bwd(fused), weights), ("ref", "fwd_bwd"): (bwd(ref), weights),
            ("torch_param", "fwd_bwd"): (bwd(param), params_param)}


CASES = {
    "matmul": case_matmul,
    "softlabel_proj/dense": lambda d: case_softlabel_proj(d, "dense"),
    "softlabel_proj/topk": lambda d: case_softlabel_proj(d, "topk"),
    "softlabel_proj/hard": lambda d: case_softlabel_proj(d, "hard"),
    "softlabel_proj/bank_dense": lambda d: case_softlabel_proj(d, "bank_dense"),
    "softlabel_proj/bank_topk": lambda d: case_softlabel_proj(d, "bank_topk"),
    "head": case_head,
    "bank_lookup/dense": lambda d: case_bank_lookup(d, "dense"),
    "bank_lookup/topk": lambda d: case_bank_lookup(d, "topk"),
    "sn_biggan32": case_sn_biggan32,
}


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def run(args):
    torch.set_num_threads(args.threads)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_host.py: --device cuda but torch.cuda.is_available() is False")
    name, triton_version, date = machine()
    wanted = None if args.cases is None else set(args.cases) | {"matmul"}
    unknown = set(args.cases or []) - set(CASES)
    if unknown:
        raise SystemExit(f"bench_host.py: unknown cases {sorted(unknown)}; choose from {list(CASES)}")
    rows = []
    for case, make in CASES.items():
        if wanted is not None and case not in wanted:
            continue
        for (provider, direction), (fn, params) in make(dev).items():
            med, p20, p80, wall = time_per_call(fn, params, args.reps, args.calls, dev)
            rows.append(dict(device=dev, gpu=name if dev == "cuda" else "", threads=args.threads,
                             case=case, provider=provider, direction=direction,
                             median_us=round(med, 2), p20_us=round(p20, 2), p80_us=round(p80, 2),
                             wall_median_us=round(wall, 2),
                             torch=torch.__version__, triton=triton_version, date=date,
                             commit=_commit(), cpu=name if dev == "cpu" else ""))
            print(f"{case:28s} {provider:12s} {direction:8s} {med:9.1f} us host "
                  f"{wall:9.1f} us wall", flush=True)
    return rows


def ratios(rows):
    """{(case, direction): {"fused": us, "ref": us, "torch_param": us, "matmul": us}}."""
    mm = {r["direction"]: r["median_us"] for r in rows if r["case"] == "matmul"}
    out = {}
    for r in rows:
        if r["case"] == "matmul":
            continue
        d = out.setdefault((r["case"], r["direction"]), {"matmul": mm.get(r["direction"])})
        d[r["provider"]] = r["median_us"]
    return out


def targets(rows):
    """[(what, target, measured, pass)] for the CPU targets of issue #16."""
    by = ratios(rows)
    res = []
    head = by.get(("head", "fwd_bwd"), {})
    if head.get("fused") and head.get("matmul"):
        x = head["fused"] / head["matmul"]
        res.append(("head fwd_bwd / matmul fwd_bwd", "<= 2", f"{x:.2f}", x <= 2))
    if head.get("fused") and head.get("ref"):
        x = head["fused"] / head["ref"]
        res.append(("head fwd_bwd / its reference", "<= 0.25", f"{x:.2f}", x <= 0.25))
    for direction in ("fwd", "fwd_bwd"):
        sn = by.get(("sn_biggan32", direction), {})
        if sn.get("fused") and sn.get("torch_param"):
            x = sn["fused"] / sn["torch_param"]
            res.append((f"BigGAN-32 SN update {direction} / torch_param", "<= 0.2", f"{x:.2f}",
                        x <= 0.2))
    return res


def markdown(rows):
    by = ratios(rows)
    lines = ["| case | direction | fused us | ref us | torch_param us | matmul us | "
             "fused / ref | fused / matmul |", "|" + "---|" * 8]
    fmt = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    for (case, direction), d in by.items():
        f, r, t, m = d.get("fused"), d.get("ref"), d.get("torch_param"), d.get("matmul")
        lines.append(f"| {case} | {direction} | {fmt(f)} | {fmt(r)} | {fmt(t)} | {fmt(m)} | "
                     f"{'' if not (f and r) else f'{f / r:.2f}'} | "
                     f"{'' if not (f and m) else f'{f / m:.2f}'} |")
    tg = targets(rows)
    if tg:
        lines += ["", "| target | wanted | measured | met |", "|---|---|---|---|"]
        lines += [f"| {w} | {t} | {m} | {'yes' if ok else 'NO'} |" for w, t, m, ok in tg]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = run(args)
    write_outputs(rows, markdown(rows), args.csv, args.md)
    return rows


if __name__ == "__main__":
    main()
