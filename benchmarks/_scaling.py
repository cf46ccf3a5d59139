"""bench_train.py --nproc K: the trainer on 1, 2, ..., K ranks of one machine (DDP; NCCL on
GPUs, one GPU per rank; gloo on the CPU) and its scaling efficiency.

Weak scaling: every rank keeps the case's batch, so k ranks train a global batch of k x batch
(the way one adds GPUs to go faster). For each k, k processes are spawned with torchrun's
variables; each builds the case's data and a Trainer(world=...) and runs the same warm-up and
timed repetitions as the one-process sweep (bench_train.warm_up, time_steps; the warm-up is
a fixed --max-warmup steps here, so that every rank runs the same steps); rank 0's
times are the row (DDP keeps the ranks in step). images_per_s = k x batch x d_steps / median
step time; scaling_efficiency = images_per_s(k) / (k x images_per_s(1)), 1.0 being perfect.

On the CPU the ranks share the machine's cores (each gets cores / k threads): those rows
show that the multi-process trainer runs, not how it scales (the note says so). With fewer
GPUs than K, the ranks that do not fit get a row with the note "not measurable".
"""

from __future__ import annotations

import os
import socket
import time

import torch
import torch.multiprocessing as mp

COLUMNS = ["provider", "case", "nproc", "per_rank_batch", "global_batch", "d_steps", "backend",
           "steps", "reps", "warmup_steps", "step_median_ms", "step_p20_ms", "step_p80_ms",
           "images_per_s", "scaling_efficiency", "graphs", "graph_breaks", "note", "device",
           "torch", "cuda", "date"]
CPU_NOTE = "gloo on shared CPU cores: shows the multi-process trainer runs; not a speed claim"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, k, port, device, case, provider, opts, out_path):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(k),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // k))
    import argparse

    import bench_train as bt
    from sgan_fast.distributed import init_distributed, shutdown
    from sgan_fast.train import Trainer

    world, dev = init_distributed(device)
    try:
        ds, bank = bt.make_data(case)
        batch = bt.CASES[case][0]["batch_size"]
        c0 = bt.dynamo_counts()
        trainer = Trainer(bt.make_config(case, provider, device, batch_size=batch * k), ds,
                          bank=bank, world=world)
        # every rank must run the same number of steps (each is a DDP collective): a fixed
        # warm-up of --max-warmup steps, not "until this rank's times are stable"
        ns = argparse.Namespace(**dict(opts, warmup=opts["max_warmup"], stable_tol=-1.0))
        n_warm, _, _ = bt.warm_up(trainer, dev.type, ns)
        ev, _ = bt.time_steps(trainer, dev.type, ns.steps, ns.reps)
        c1 = bt.dynamo_counts()
        if world.is_main:
            torch.save(dict(ev=ev, warmup_steps=n_warm, compiled=trainer.compiled,
                            graphs=c1[1] - c0[1], graph_breaks=c1[0] - c0[0],
                            backend=world.backend or "none"), out_path)
    finally:
        shutdown()


def measure(k, device, case, provider, opts, tmp_dir):
    """Rank 0's result dict for k ranks (raises when a rank fails)."""
    out_path = os.path.join(tmp_dir, f"scaling_{case}_{provider}_{k}_{time.time_ns()}.pt")
    mp.start_processes(_rank, args=(k, _free_port(), device, case, provider, opts, out_path),
                       nprocs=k, join=True, start_method="spawn")
    res = torch.load(out_path, weights_only=False)
    os.remove(out_path)
    return res


def sweep(args, device, cases, providers, machine_info, out_csv):
    """The rows of the scaling sweep (also appended to out_csv as each finishes)."""
    import tempfile

    import bench_train as bt
    from _common import append_csv

    name, triton_version, date = machine_info
    gpus = torch.cuda.device_count() if device == "cuda" else None
    rows = []
    for case in cases:
        settings = bt.CASES[case][0]
        batch, d_steps = settings["batch_size"], settings["d_steps"]
        for provider in providers:
            steps = args.steps or (bt.CASES[case][3] if device == "cuda" else 2)
            reps = args.reps or (5 if device == "cuda" else 3)
            opts = dict(warmup=args.warmup, max_warmup=args.max_warmup,
                        stable_tol=args.stable_tol, steps=steps, reps=reps)
            ips1 = None
            for k in range(1, args.nproc + 1):
                row = dict(provider=provider, case=case, nproc=k, per_rank_batch=batch,
                           global_batch=batch * k, d_steps=d_steps, backend="", steps=steps,
                           reps=reps, warmup_steps="", step_median_ms="", step_p20_ms="",
                           step_p80_ms="", images_per_s="", scaling_efficiency="", graphs="",
                           graph_breaks="", note=CPU_NOTE if device == "cpu" else "",
                           device=name, torch=torch.__version__, cuda=torch.version.cuda or "",
                           date=date)
                if gpus is not None and k > gpus:
                    row["note"] = f"not measurable: {gpus} GPU(s) on this machine, one per rank"
                else:
                    try:
                        with tempfile.TemporaryDirectory() as tmp:
                            res = measure(k, device, case, provider, opts, tmp)
                        med, p20, p80 = bt.quantiles(res["ev"])
                        ips = batch * k * d_steps / med
                        ips1 = ips if k == 1 else ips1
                        row.update(backend=res["backend"], warmup_steps=res["warmup_steps"],
                                   step_median_ms=round(med * 1e3, 3),
                                   step_p20_ms=round(p20 * 1e3, 3),
                                   step_p80_ms=round(p80 * 1e3, 3), images_per_s=bt.sig(ips),
                                   scaling_efficiency=(bt.sig(ips / (k * ips1), 4) if ips1 else ""),
                                   graphs=res["graphs"] if res["compiled"] else "",
                                   graph_breaks=res["graph_breaks"] if res["compiled"] else "")
                    except Exception as exc:   # keep the sweep going; say what failed
                        row["note"] = f"FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                rows.append(row)
                append_csv(out_csv, [row])
                print(f"  {case:<9} {provider:<12} {k} rank(s) {row['step_median_ms']:>10} ms/step "
                      f"{row['images_per_s']:>10} img/s  efficiency {row['scaling_efficiency']}  "
                      f"{row['note']}", flush=True)
    return rows
