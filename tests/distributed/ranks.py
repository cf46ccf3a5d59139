"""Running a function on N gloo ranks of one machine, for the multi-process tests.

    outs = run_ranks(fn, 2, tmp_path, *args)   # fn(world, *args) on every rank -> [out0, out1]

Each rank is a fresh process (spawn) with torchrun's variables set, so sgan_fast's
init_distributed sees what it would see under torchrun. An exception on a rank comes back as
RankError(type name, message) in that rank's slot, so a test can assert that every rank
raised the same error; a rank that hangs fails the test after `timeout` seconds.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import torch
import torch.multiprocessing as mp


@dataclasses.dataclass
class RankError:
    type: str
    message: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, out_dir, fn, args, env):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    torch.set_num_threads(1)
    from sgan_fast.distributed import init_distributed, shutdown
    out = None
    try:
        world, _ = init_distributed("cpu", timeout_minutes=2)
        out = fn(world, *args)
    except Exception as exc:   # returned to the test, which asserts on it
        out = RankError(type(exc).__name__, str(exc))
    finally:
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        shutdown()


def run_ranks(fn, world_size: int, tmp_path, *args, env=None, timeout: float = 240) -> list:
    """fn(world, *args) on `world_size` gloo ranks; the list of what each rank returned."""
    out_dir = os.path.join(str(tmp_path), f"ranks-{os.urandom(3).hex()}")
    os.makedirs(out_dir)
    ctx = mp.start_processes(_entry, args=(world_size, free_port(), out_dir, fn, args, env or {}),
                             nprocs=world_size, join=False, start_method="spawn")
    import time
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"the {world_size} ranks did not finish in {timeout} s")
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False)
            for r in range(world_size)]
