"""Throughput of a whole model's spectral-norm update: power iteration plus the normalised
weights of every layer ("fwd"), and with their backward ("fwd_bwd").

    python benchmarks/bench_spectral_norm.py [--lists biggan32 biggan128 synthetic40]
        [--dtypes bfloat16 float32] [--modes fwd fwd_bwd] [--providers ...]
        [--compile-lists biggan128] [--csv benchmarks/results/spectral_norm.csv] [--md t.md]

Providers (training mode, BigGAN's semantics unless said):
    torch_param          torch.nn.utils.parametrizations.spectral_norm on nn.Conv2d / Linear /
                         Embedding modules of the same shapes (torch's semantics), eager: one
                         update = reading every module's .weight
    biggan_loop          the per-layer loop spectral_norm_grouped_ref (BigGAN-PyTorch's
                         layers, restated), eager
    biggan_loop_compile  the same under torch.compile (only for --compile-lists: every list and
                         dtype is a fresh compile)
    cuda, triton         sgan_fast.ops.spectral_norm_grouped(impl=..., check=False)
    cpu                  the same with the C++ kernels (machines without a GPU)
fwd_bwd adds torch.autograd.backward(outs, G) with fixed random G, gradients reset to None.

Per row, as in bench_softlabel_proj.py: median/p20/p80 (eager calls, do_bench), the same for
CUDA-graph replays (GPU time alone), wall time per call, GPU kernels per call
(torch.profiler). The markdown gives the speed-up of each provider over torch_param and
over biggan_loop_compile, eager and in graph time.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (machine, count_kernels, time_cpu, time_gpu, time_graph,  # noqa: E402
                     warm_up_gpu, write_outputs)

from sgan_fast.ops import (spectral_norm_grouped, spectral_norm_grouped_ref,  # noqa: E402
                           why_unavailable)

# Weight shapes of BigGAN-PyTorch's discriminators ([out, in, k, k] convs, [out, in] linear,
# [classes, ch] embedding). D blocks: conv1, conv2 (3x3) and a 1x1 shortcut where channels
# change or the block downsamples.
BIGGAN32 = [  # 32 px, ch 64, 10 classes, no attention
    (256, 3, 3, 3), (256, 256, 3, 3), (256, 3, 1, 1),          # block 0 (down)
    (256, 256, 3, 3), (256, 256, 3, 3), (256, 256, 1, 1),      # block 1 (down)
    (256, 256, 3, 3), (256, 256, 3, 3),                        # block 2
    (256, 256, 3, 3), (256, 256, 3, 3),                        # block 3
    (1, 256), (10, 256),                                       # linear, embedding
]
BIGGAN128 = [  # 128 px, ch 96, 1000 classes, attention at 64 px
    (96, 3, 3, 3), (96, 96, 3, 3), (96, 3, 1, 1),              # block 0 (down)
    (12, 96, 1, 1), (12, 96, 1, 1), (48, 96, 1, 1), (96, 48, 1, 1),  # attention theta phi g o
    (192, 96, 3, 3), (192, 192, 3, 3), (192, 96, 1, 1),        # block 1
    (384, 192, 3, 3), (384, 384, 3, 3), (384, 192, 1, 1),      # block 2
    (768, 384, 3, 3), (768, 768, 3, 3), (768, 384, 1, 1),      # block 3
    (1536, 768, 3, 3), (1536, 1536, 3, 3), (1536, 768, 1, 1),  # block 4
    (1536, 1536, 3, 3), (1536, 1536, 3, 3),                    # block 5 (no shortcut)
    (1, 1536), (1000, 1536),                                   # linear, embedding
]
# 40 layers cycling through a 3x3 conv, a 1x1 conv, a 1 x F linear, a small conv, an embedding
SYNTHETIC40 = [[(256, 256, 3, 3), (128, 256, 1, 1), (1, 512), (64, 64, 3, 3), (100, 512)][i % 5]
               for i in range(40)]
LISTS = {"biggan32": BIGGAN32, "biggan128": BIGGAN128, "synthetic40": SYNTHETIC40}


def _module(shape):
    if len(shape) == 4:
        return nn.Conv2d(shape[1], shape[0], shape[2])
    return nn.Linear(shape[1], shape[0])


def make_case(shapes, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = [(torch.randn(s, generator=g) / max(1, s[1] * (s[2] * s[3] if len(s) == 4 else 1))
                ** 0.5).to(device, dtype).requires_grad_(True) for s in shapes]
    us = [torch.randn(1, s[0], generator=g).to(device) for s in shapes]
    grads = [torch.randn(s, generator=g).to(device, dtype) for s in shapes]
    return weights, us, grads


def make_fn(provider, shapes, dtype, device, mode):
    weights, us, grads = make_case(shapes, dtype, device)
    if provider == "torch_param":
        mods = []
        for s, W in zip(shapes, weights):
            m = _module(s).to(device, dtype)
            with torch.no_grad():
                m.weight.copy_(W)
            mods.append(nn.utils.parametrizations.spectral_norm(m))
        params = [m.parametrizations.weight.original for m in mods]

        def update():
            return [m.weight for m in mods]
    else:
        params = weights
        if provider.startswith("biggan_loop"):
            def update():
                return spectral_norm_grouped_ref(weights, us, training=True)
            if provider.endswith("compile"):
                update = torch.compile(update, dynamic=False)
        else:
            def update():
                return spectral_norm_grouped(weights, us, training=True, impl=provider, check=False)
    if mode == "fwd":
        def fn():
            with torch.no_grad():
                update()
    else:
        def fn():
            torch.autograd.backward(update(), grads)
    return fn, params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lists", nargs="+", default=list(LISTS), choices=list(LISTS))
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd_bwd"])
    ap.add_argument("--providers", nargs="+", default=None)
    ap.add_argument("--compile-lists", nargs="*", default=["biggan128"],
                    help="layer lists timed with biggan_loop_compile (each a fresh compile)")
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "spectral_norm.csv"))
    ap.add_argument("--md", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    providers = args.providers or (
        ["torch_param", "biggan_loop", "biggan_loop_compile", "cuda", "triton"] if gpu
        else ["torch_param", "biggan_loop", "cpu"])
    if not gpu:
        print("No GPU: CPU providers only (torch_param, biggan_loop, cpu), biggan32, float32.")
        args.lists, args.dtypes = ["biggan32"], ["float32"]
    name, triton_version, date = machine()
    print(f"# spectral_norm on {name}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"triton {triton_version}, {date}")
    if gpu:
        warm_up_gpu()
    rows = []
    for list_name in args.lists:
        shapes = LISTS[list_name]
        n_params = sum(torch.Size(s).numel() for s in shapes)
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            for mode in args.modes:
                for prov in providers:
                    if prov == "biggan_loop_compile" and list_name not in args.compile_lists:
                        continue
                    if prov in ("cpu", "cuda", "triton"):
                        why = why_unavailable("spectral_norm", prov, device, dtype)
                        if why is not None:
                            print(f"  {prov}: skipped ({why})")
                            continue
                    try:
                        fn, params = make_fn(prov, shapes, dtype, device, mode)
                        q, wall = time_gpu(fn, params) if gpu else time_cpu(fn, params, reps=5)
                        kernels = count_kernels(fn, params) if gpu else ""
                    except Exception as exc:  # keep the sweep going; say what failed
                        print(f"  {prov} {list_name} {dtype_name} {mode}: FAILED "
                              f"{type(exc).__name__}: {exc}")
                        continue
                    gq = ["", "", ""]
                    if gpu:
                        try:
                            gq = [round(x, 2) for x in time_graph(fn, params)]
                        except Exception as exc:
                            print(f"  {prov} {list_name} {mode}: no CUDA graph ({type(exc).__name__})")
                    rows.append(dict(provider=prov, layers=list_name, n_layers=len(shapes),
                                     n_params=n_params, dtype=dtype_name, mode=mode,
                                     median_us=round(q[0], 2), p20_us=round(q[1], 2),
                                     p80_us=round(q[2], 2), wall_us=round(wall, 2),
                                     graph_median_us=gq[0], graph_p20_us=gq[1],
                                     graph_p80_us=gq[2], kernels=kernels, device=name,
                                     torch=torch.__version__, cuda=torch.version.cuda,
                                     triton=triton_version, date=date))
                    r = rows[-1]
                    print(f"  {prov:<20} {list_name:<12} {dtype_name:<8} {mode:<7} median "
                          f"{r['median_us']:>9.1f} us  graph {r['graph_median_us']} us  "
                          f"wall {r['wall_us']:>9.1f} us  kernels {kernels}", flush=True)
    write_outputs(rows, markdown(rows, providers), args.csv, args.md)


def markdown(rows, providers):
    """One line per (list, dtype, mode, provider): times, kernels, and speed-ups over
    torch_param and biggan_loop_compile (eager median; graph median)."""
    keyed = {}
    for r in rows:
        keyed.setdefault((r["layers"], r["dtype"], r["mode"]), {})[r["provider"]] = r

    def ratio(base, r, key):
        if base is None or base[key] in ("", None) or r[key] in ("", None):
            return ""
        return f"{base[key] / r[key]:.2f}x"

    out = ["| layers | dtype | mode | provider | median us | graph us | kernels | vs torch_param "
           "(eager; graph) | vs compiled loop (eager; graph) |",
           "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for (lst, dt, mode), by in keyed.items():
        for prov in providers:
            r = by.get(prov)
            if r is None:
                continue
            tp, cl = by.get("torch_param"), by.get("biggan_loop_compile")
            out.append(f"| {lst} | {dt} | {mode} | {prov} | {r['median_us']} | "
                       f"{r['graph_median_us']} | {r['kernels']} | "
                       f"{ratio(tp, r, 'median_us')}; {ratio(tp, r, 'graph_median_us')} | "
                       f"{ratio(cl, r, 'median_us')}; {ratio(cl, r, 'graph_median_us')} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
