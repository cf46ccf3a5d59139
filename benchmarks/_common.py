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
