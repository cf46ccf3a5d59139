"""Timing and output helpers shared by the benchmarks (see bench_softlabel_proj.py's
docstring for what each measurement means)."""

from __future__ import annotations

import csv
import os
import statistics
import time

import torch


def time_gpu(fn, params):
    import triton.testing

    fn()
    torch.cuda.synchronize()
    q = triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=params, quantiles=[0.5, 0.2, 0.8])
    n = 50
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        for p in params:  # as optimizer.zero_grad(set_to_none=True) leaves them
            p.grad = None
        fn()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / n
    return [x * 1e3 for x in q], wall * 1e6


def time_graph(fn, params):
    """Median, p20, p80 of CUDA-graph replays of one call: the GPU time of its kernels with
    the host's launch overhead removed (the eager numbers include it)."""
    import triton.testing

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            for p in params:
                p.grad = None
            fn()
    torch.cuda.current_stream().wait_stream(s)
    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    q = triton.testing.do_bench(graph.replay, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
    return [x * 1e3 for x in q]


def warm_up_gpu(seconds=2.0):
    """Clocks idle low between runs: a couple of seconds of matrix products first."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def time_cpu(fn, params, reps=20):
    fn()
    ts = []
    for _ in range(reps):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e6)
    ts.sort()
    q = [statistics.median(ts), ts[int(0.2 * (len(ts) - 1))], ts[int(0.8 * (len(ts) - 1))]]
    return q, q[0]


def count_kernels(fn, params):
    """GPU kernels (and copies) of one call, gradients starting at None."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    for p in params:
        p.grad = None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def copy_bandwidth():
    """Device-to-device copy GB/s, counting bytes read plus bytes written."""
    import triton.testing

    x = torch.randn(256 * 2**20, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
    return 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9


def append_csv(path, rows):
    """Appends rows (dicts with the same keys) to a CSV file, writing the header if new."""
    if not rows:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            wr.writeheader()
        wr.writerows(rows)


def write_outputs(rows, table, csv_path, md_path=None):
    """Appends the rows to the CSV, prints the markdown table and writes it to md_path."""
    append_csv(csv_path, rows)
    print(table)
    if md_path:
        with open(md_path, "w") as f:
            f.write(table)


def speedup_table(rows, providers, keys, headers, baselines, *, best_label="best",
                  copy_bw=False):
    """Markdown, one line per case (rows sharing `keys`): each provider's median, the fastest
    provider that is not a baseline, its speed-up over each baseline and its kernel count;
    then the same for CUDA-graph medians when there are any (with copy_bw, also the best's
    share of the copy bandwidth, from graph_gb_s / copy_gb_s)."""
    keyed = {}
    for r in rows:
        keyed.setdefault(tuple(r[k] for k in keys), {})[r["provider"]] = r
    fast = [p for p in providers if p not in baselines]
    graph = any(r["graph_median_us"] != "" for r in rows)
    head = list(headers) + [f"{p} us" for p in providers] + [best_label] + \
        [f"x {b}" for b in baselines] + ["kernels (best)"]
    if graph:
        head += [f"{p} graph us" for p in providers] + [f"{best_label} (graph)"] + \
            [f"x {b} (graph)" for b in baselines] + (["% copy BW (graph)"] if copy_bw else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, by in keyed.items():
        cells = [str(k) for k in key]
        for field, is_graph in (("median_us", False), ("graph_median_us", True)):
            if is_graph and not graph:
                continue
            cells += [f"{by[p][field]:.1f}" if p in by else "" for p in providers]
            cand = [p for p in fast if p in by]
            last = not is_graph or copy_bw  # kernels (eager) or % copy BW (graph)
            if not cand:
                cells += [""] * (1 + len(baselines) + last)
                continue
            best = min(cand, key=lambda p: by[p][field])
            t = by[best][field]
            base = [by.get(b, {}).get(field) for b in baselines]
            cells += [best] + [f"{b / t:.2f}" if b else "" for b in base]
            if not is_graph:
                cells.append(str(by[best]["kernels"]))
            elif copy_bw:
                cells.append(f"{100 * by[best]['graph_gb_s'] / by[best]['copy_gb_s']:.0f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine():
    """(device name, triton version or "none", ISO date): what every result row records."""
    import datetime
    import platform

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = "none"
    return name, triton_version, datetime.date.today().isoformat()


def parse_cases(spec):
    """"all" -> None; "256x1000x1536,50000x1000" -> {(256, 1000, 1536), (50000, 1000)}."""
    if spec == "all":
        return None
    return {tuple(int(x) for x in s.split("x")) for s in spec.split(",")}
