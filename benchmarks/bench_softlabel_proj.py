"""Throughput of the soft-label projection head: forward and forward+backward.

    python benchmarks/bench_softlabel_proj.py [--dtypes bfloat16 float32] [--quick]
        [--csv benchmarks/results/softlabel_proj.csv] [--md table.md]

Providers: ref (plain torch, eager), ref_compile (the same under torch.compile,
dynamic=False, on the --compile-shapes only, since every shape is a fresh compile),
cuda (CUDA C++), triton; on a machine without a GPU: ref, ref_compile and cpu (C++),
and it says so. Labels: dense P [B, C] and top-k (K = 8). Inputs are random (never
zeros), checks are off (check=False), and the dense P gets no gradient.

Per row: median, p20 and p80 in microseconds from triton.testing.do_bench on eager calls
(CUDA events around each call, L2 flushed between calls, after warm-up: this includes the
host's launch overhead whenever the GPU waits for it); graph_median/p20/p80_us, the same
for CUDA-graph replays of one call (the GPU time of its kernels alone); wall_us, the host
time per call over back-to-back calls; GPU kernels per call (torch.profiler, gradients
starting at None); achieved GB/s against the byte count below and its ratio to the
device-to-device copy bandwidth measured in the same run.

Byte count (each tensor moved once; es = element size): forward reads h, E, w, the labels
and writes out: es * (B F + C F + F + B) + label bytes (dense: es B C; top-k: B K (8 + es)).
Backward reads h, E, the labels and grad_out again and writes grad_h, grad_E, grad_w:
es * (2 B F + 2 C F + F + B) + label bytes. forward+backward is the sum.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (machine, parse_cases, copy_bandwidth, count_kernels, speedup_table, time_cpu,  # noqa: E402
                     time_gpu, time_graph, warm_up_gpu, write_outputs)

from sgan_fast.ops import softlabel_proj, softlabel_proj_ref, why_unavailable  # noqa: E402

BS, CS, FS, K = (64, 256, 1024), (10, 100, 1000), (256, 1024, 1536), 8
TARGET = (256, 1000, 1536)


def make_case(B, C, F, form, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(B, F, generator=g).to(device, dtype)
    E = (torch.randn(C, F, generator=g) / F ** 0.5).to(device, dtype)
    w = (torch.randn(F, generator=g) / F ** 0.5).to(device, dtype)
    bias = torch.randn(1, generator=g).to(device, dtype)
    acc = torch.float32
    Ef = E.float()
    v_E = torch.nn.functional.normalize(torch.randn(F, generator=g).to(device), dim=0)
    for _ in range(3):
        u_E = torch.nn.functional.normalize(Ef @ v_E, dim=0)
        v_E = torch.nn.functional.normalize(Ef.t() @ u_E, dim=0)
    u_w = torch.ones(1, device=device, dtype=acc)
    v_w = torch.nn.functional.normalize(w.float(), dim=0)
    if form == "dense":
        labels = torch.softmax(2 * torch.randn(B, C, generator=g), 1).to(device, dtype)
    else:
        idx = torch.randint(0, C, (B, K), generator=g).to(device)
        val = torch.softmax(torch.randn(B, K, generator=g), 1).to(device, dtype)
        labels = (idx, val)
    grad_out = torch.randn(B, generator=g).to(device, dtype)
    return dict(h=h, E=E, w=w, bias=bias, labels=labels, u_E=u_E, v_E=v_E, u_w=u_w, v_w=v_w,
                grad_out=grad_out)


def byte_count(B, C, F, form, es, mode):
    labels = es * B * C if form == "dense" else B * K * (8 + es)
    fwd = es * (B * F + C * F + F + B) + labels
    bwd = es * (2 * B * F + 2 * C * F + F + B) + labels
    return fwd if mode == "fwd" else fwd + bwd


def make_fn(provider, case, mode, form):
    params = [case[k] for k in ("h", "E", "w", "bias")]
    if mode == "fwd_bwd":
        params = [p.detach().clone().requires_grad_(True) for p in params]
    vec = (case["u_E"], case["v_E"], case["u_w"], case["v_w"])
    labels = case["labels"]
    if provider in ("ref", "ref_compile"):
        def op(h, E, w, bias):
            return softlabel_proj_ref(h, labels, E, w, bias, *vec)
        if provider == "ref_compile":
            torch._dynamo.reset()  # one fresh compile per shape, never the recompile limit
            op = torch.compile(op, dynamic=False)
    else:
        def op(h, E, w, bias):
            return softlabel_proj(h, labels, E, w, bias, *vec, impl=provider, check=False)
    g = case["grad_out"]
    if mode == "fwd":
        def fn():
            with torch.no_grad():
                return op(*params)
    else:
        def fn():
            op(*params).backward(g)
    return fn, params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--forms", nargs="+", default=["dense", "topk"])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd_bwd"])
    ap.add_argument("--providers", nargs="+", default=None)
    ap.add_argument("--quick", action="store_true", help="only the target and the largest shapes")
    ap.add_argument("--compile-shapes", default="256x1000x1536,1024x1000x1536",
                    help="BxCxF shapes at which ref_compile runs (comma-separated, or 'all')")
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "softlabel_proj.csv"))
    ap.add_argument("--md", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    providers = args.providers or (["ref", "ref_compile", "cuda", "triton"] if gpu
                                   else ["ref", "ref_compile", "cpu"])
    if not gpu:
        print("No GPU: running the CPU providers only (ref, ref_compile, cpu) on the quick shapes.")
        args.quick = True
    shapes = [(B, C, F) for B in BS for C in CS for F in FS]
    if args.quick:
        shapes = [TARGET, (1024, 1000, 1536)]
    compile_shapes = parse_cases(args.compile_shapes)
    name, triton_version, date = machine()
    if gpu:
        warm_up_gpu()
    copy_gbs = copy_bandwidth() if gpu else float("nan")
    print(f"# softlabel_proj on {name}; torch {torch.__version__}, triton {triton_version}, {date}")
    if gpu:
        print(f"# measured device-to-device copy bandwidth: {copy_gbs:.0f} GB/s (read + write)")
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        es = torch.empty(0, dtype=dtype).element_size()
        for form in args.forms:
            for (B, C, F) in shapes:
                case = make_case(B, C, F, form, dtype, device)
                for mode in args.modes:
                    for prov in providers:
                        if prov == "ref_compile" and compile_shapes is not None \
                                and (B, C, F) not in compile_shapes:
                            continue
                        if prov not in ("ref", "ref_compile") and \
                                why_unavailable("softlabel_proj", prov, device, dtype) is not None:
                            continue
                        fn, params = make_fn(prov, case, mode, form)
                        try:
                            q, wall = time_gpu(fn, params) if gpu else time_cpu(fn, params)
                            kernels = count_kernels(fn, params) if gpu else ""
                            gq = time_graph(fn, params) if gpu else ["", "", ""]
                        except Exception as exc:  # keep the sweep going; the row says what failed
                            print(f"  {prov} {form} {B}x{C}x{F} {mode}: FAILED {type(exc).__name__}: {exc}")
                            continue
                        nbytes = byte_count(B, C, F, form, es, mode)
                        gbs = nbytes / (q[0] * 1e-6) / 1e9
                        rows.append(dict(provider=prov, form=form, B=B, C=C, F=F, K=K if form == "topk" else "",
                                         dtype=dtype_name, mode=mode, median_us=round(q[0], 2),
                                         p20_us=round(q[1], 2), p80_us=round(q[2], 2),
                                         wall_us=round(wall, 2),
                                         graph_median_us=round(gq[0], 2) if gpu else "",
                                         graph_p20_us=round(gq[1], 2) if gpu else "",
                                         graph_p80_us=round(gq[2], 2) if gpu else "",
                                         kernels=kernels, bytes=nbytes,
                                         graph_gb_s=round(nbytes / (gq[0] * 1e-6) / 1e9, 1) if gpu else "",
                                         gb_s=round(gbs, 1),
                                         frac_copy_bw=round(gbs / copy_gbs, 3) if gpu else "",
                                         copy_gb_s=round(copy_gbs, 1) if gpu else "",
                                         device=name, torch=torch.__version__, triton=triton_version,
                                         date=date))
                        r = rows[-1]
                        print(f"  {prov:<11} {form:<5} {dtype_name:<8} {B:>4}x{C:>4}x{F:>4} {mode:<7} "
                              f"median {r['median_us']:>9.1f} us  wall {r['wall_us']:>9.1f} us  "
                              f"graph {r['graph_median_us']} us  "
                              f"kernels {kernels}  {r['gb_s']:.0f} GB/s", flush=True)
    write_outputs(rows, markdown(rows, providers), args.csv, args.md)


def markdown(rows, providers):
    """One line per (dtype, form, shape, mode): each provider's median, and speed-ups of the
    fastest fused provider over ref and ref_compile."""
    return speedup_table(rows, providers, ("dtype", "form", "B", "C", "F", "mode"),
                         ("dtype", "labels", "B", "C", "F", "mode"), ("ref", "ref_compile"),
                         best_label="best fused", copy_bw=True)


if __name__ == "__main__":
    main()
