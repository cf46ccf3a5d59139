"""Throughput of the soft-label bank: the batched lookup alone, and lookup + projection fused.

    python benchmarks/bench_bank.py [--dtypes bfloat16] [--targets softmax mix:0.5]
        [--quick] [--csv benchmarks/results/bank.csv] [--md table.md]

Cases: B = 256 dataset indices drawn uniformly from N in {50k, 1.2M} images; C in {10, 1000,
8142} classes; dense banks [N, C] and top-k banks (K = 16); features F = 1536 (BigGAN-128's
discriminator). Ops:
  lookup       the targets of the batch (fwd only): dense [B, C] for dense banks, top-k for top-k
  lookup_proj  the targets through the soft-label projection head, fwd and fwd_bwd
Providers:
  torch          plain torch, eager: gather the rows, apply the target's transform
                 (bank_lookup_ref; the sparse gather for top-k plans), then the projection
                 (softlabel_proj_ref)
  torch_compile  the same under torch.compile (dynamic=False), on --compile-cases only
  cuda, triton   bank_lookup(impl=...) and the fused head softlabel_proj(h, bank.labels(...)),
                 which reads the bank inside its kernels (no [B, C] targets written)
On a machine without a GPU: torch, torch_compile and cpu, on the quick cases.

Reporting as benchmarks/bench_softlabel_proj.py: do_bench median/p20/p80 of eager calls,
the same for CUDA-graph replays (graph_*: GPU time alone), host wall time per call, GPU
kernels per call; checks off (check=False). Rows are appended to the CSV with the device,
versions and date.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (machine, parse_cases, count_kernels, speedup_table, time_cpu, time_gpu, time_graph,  # noqa: E402
                     warm_up_gpu, write_outputs)

from sgan_fast.labels import SoftLabelBank  # noqa: E402
from sgan_fast.ops import softlabel_proj, softlabel_proj_ref, why_unavailable  # noqa: E402
from sgan_fast.ops.bank_lookup import (BankLabels, bank_lookup, bank_lookup_ref,  # noqa: E402
                                       bank_lookup_sparse_ref)

B, K, F = 256, 16, 1536
NS, CS = (50_000, 1_200_000), (10, 1000, 8142)


def make_bank(N, C, form, dtype, device, seed=0):
    """A random bank built on the device without validation (the benchmark needs its size,
    not its values; rows are normalised all the same)."""
    g = torch.Generator(device=device).manual_seed(seed)
    labels = torch.randint(0, C, (N,), generator=g, device=device)
    if form == "dense":
        P = torch.rand(N, C, generator=g, device=device, dtype=dtype)
        P /= P.float().sum(1, keepdim=True).to(dtype)
        return SoftLabelBank(P, labels, validate=False)
    k = min(K, C)
    idx = torch.randint(0, C, (N, k), generator=g, device=device, dtype=torch.int32)
    val = torch.rand(N, k, generator=g, device=device).to(dtype)
    return SoftLabelBank.from_topk(idx, val, labels, C, validate=False)


def make_head_inputs(C, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(B, F, generator=g).to(device, dtype)
    E = (torch.randn(C, F, generator=g) / F ** 0.5).to(device, dtype)
    w = (torch.randn(F, generator=g) / F ** 0.5).to(device, dtype)
    bias = torch.randn(1, generator=g).to(device, dtype)
    Ef = E.float()
    v_E = torch.nn.functional.normalize(torch.randn(F, generator=g).to(device), dim=0)
    u_E = torch.nn.functional.normalize(Ef @ v_E, dim=0)
    v_E = torch.nn.functional.normalize(Ef.t() @ u_E, dim=0)
    vec = (u_E, v_E, torch.ones(1, device=device), torch.nn.functional.normalize(w.float(), dim=0))
    grad_out = torch.randn(B, generator=g).to(device, dtype)
    return [h, E, w, bias], vec, grad_out


def make_fn(provider, op, mode, plan, sel, head):
    params, vec, grad_out = head
    if mode == "fwd_bwd":
        params = [p.detach().clone().requires_grad_(True) for p in params]
    torch_like = provider in ("torch", "torch_compile")
    if op == "lookup":
        if torch_like:
            def run(*_):
                return bank_lookup_sparse_ref(plan, sel) if plan.form == "topk" else bank_lookup_ref(plan, sel)
        else:
            def run(*_):
                return bank_lookup(plan, sel, impl=provider, check=False)
    elif torch_like:
        def run(h, E, w, bias):
            labels = bank_lookup_sparse_ref(plan, sel) if plan.form == "topk" else bank_lookup_ref(plan, sel)
            return softlabel_proj_ref(h, labels, E, w, bias, *vec)
    else:
        labels = BankLabels(plan, sel)

        def run(h, E, w, bias):
            return softlabel_proj(h, labels, E, w, bias, *vec, impl=provider, check=False)
    if provider == "torch_compile":
        torch._dynamo.reset()  # one fresh compile per case, never the recompile limit
        run = torch.compile(run, dynamic=False)
    if mode == "fwd":
        def fn():
            with torch.no_grad():
                return run(*params)
    else:
        def fn():
            run(*params).backward(grad_out)
    return fn, params if mode == "fwd_bwd" else []


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16"])
    ap.add_argument("--forms", nargs="+", default=["dense", "topk"])
    ap.add_argument("--targets", nargs="+", default=["softmax"])
    ap.add_argument("--Ns", nargs="+", type=int, default=list(NS))
    ap.add_argument("--Cs", nargs="+", type=int, default=list(CS))
    ap.add_argument("--providers", nargs="+", default=None)
    ap.add_argument("--quick", action="store_true", help="N = 50k, C = 1000 only")
    ap.add_argument("--compile-cases", default="50000x1000,1200000x1000",
                    help="NxC cases at which torch_compile runs (comma-separated, or 'all')")
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results", "bank.csv"))
    ap.add_argument("--md", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    providers = args.providers or (["torch", "torch_compile", "cuda", "triton"] if gpu
                                   else ["torch", "torch_compile", "cpu"])
    cases = [(N, C) for N in args.Ns for C in args.Cs]
    if not gpu:
        print("No GPU: the CPU providers (torch, torch_compile, cpu) on N = 50k, C = 1000 only.")
        args.quick = True
    if args.quick:
        cases = [(50_000, 1000)]
    compile_cases = parse_cases(args.compile_cases)
    name, triton_version, date = machine()
    if gpu:
        warm_up_gpu()
    print(f"# bank lookup on {name}; torch {torch.__version__}, triton {triton_version}, {date}")
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for form in args.forms:
            for (N, C) in cases:
                bank = make_bank(N, C, form, dtype, device)
                sel = torch.randint(0, N, (B,), device=device,
                                    generator=torch.Generator(device=device).manual_seed(1))
                head = make_head_inputs(C, dtype, device)
                for target in args.targets:
                    plan = bank.plan(target)
                    for op, mode in (("lookup", "fwd"), ("lookup_proj", "fwd"), ("lookup_proj", "fwd_bwd")):
                        for prov in providers:
                            if prov == "torch_compile" and compile_cases is not None \
                                    and (N, C) not in compile_cases:
                                continue
                            opname = "bank_lookup" if op == "lookup" else "softlabel_proj"
                            if prov not in ("torch", "torch_compile") and \
                                    why_unavailable(opname, prov, device, dtype) is not None:
                                continue
                            try:
                                fn, params = make_fn(prov, op, mode, plan, sel, head)
                                q, wall = time_gpu(fn, params) if gpu else time_cpu(fn, params)
                                kernels = count_kernels(fn, params) if gpu else ""
                                gq = time_graph(fn, params) if gpu else ["", "", ""]
                            except Exception as exc:  # keep the sweep going; say what failed
                                print(f"  {prov} {form} N={N} C={C} {op} {mode}: FAILED "
                                      f"{type(exc).__name__}: {exc}")
                                continue
                            rows.append(dict(
                                provider=prov, op=op, mode=mode, form=form, target=target, B=B, N=N,
                                C=C, K=K if form == "topk" else "", F=F if op != "lookup" else "",
                                dtype=dtype_name, median_us=round(q[0], 2), p20_us=round(q[1], 2),
                                p80_us=round(q[2], 2), wall_us=round(wall, 2),
                                graph_median_us=round(gq[0], 2) if gpu else "",
                                graph_p20_us=round(gq[1], 2) if gpu else "",
                                graph_p80_us=round(gq[2], 2) if gpu else "", kernels=kernels,
                                device=name, torch=torch.__version__, triton=triton_version, date=date))
                            r = rows[-1]
                            print(f"  {prov:<13} {form:<5} {dtype_name:<8} N={N:>7} C={C:>4} "
                                  f"{target:<10} {op:<11} {mode:<7} median {r['median_us']:>9.1f} us  "
                                  f"wall {r['wall_us']:>9.1f} us  graph {r['graph_median_us']} us  "
                                  f"kernels {kernels}", flush=True)
                del bank
                if gpu:
                    torch.cuda.empty_cache()
    write_outputs(rows, markdown(rows, providers), args.csv, args.md)


def markdown(rows, providers):
    """One line per case: each provider's median (eager; graph), and the speed-up of the
    fastest fused provider over torch and torch_compile."""
    return speedup_table(rows, providers, ("dtype", "form", "target", "N", "C", "op", "mode"),
                         ("dtype", "bank", "target", "N", "C", "op", "mode"),
                         ("torch", "torch_compile"))


if __name__ == "__main__":
    main()
