"""Rank and world: the one home of sgan_fast's torch.distributed helpers.

    world, device = init_distributed("auto")      # under torchrun: one process group per run
    if world.is_main: ...                         # rank 0 writes files, every rank reads them
    world.check_all(problem_or_none)              # a problem on any rank: the same error on all

Launching, rendezvous and collectives are PyTorch's (torchrun, env:// rendezvous,
torch.distributed); this module only reads torchrun's variables, picks the backend for the
device (NCCL on GPUs, gloo on the CPU), and keeps the few patterns every command needs in
one place: checks that fail on every rank at once (never one rank raising while the others
wait in a collective), agreement of settings across ranks, rank-0 results handed to all,
and a contiguous split of N work items over the ranks.

Without torchrun's variables (a plain `sgan-fast ...`) the world is one process: every
helper is then a no-op and no process group is made. A torchrun launch of one process
(WORLD_SIZE=1) is the same one-process world.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
from typing import Any, Optional, Sequence

import torch

# torchrun (and any env:// launcher) sets these for every worker.
ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("auto", "nccl", "gloo")


class DistributedError(ValueError):
    """A multi-process launch that cannot run as given (raised on every rank alike)."""


@dataclasses.dataclass
class World:
    """This process's place in the run. rank 0 is the main process (it writes files)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    # Host-side flags (stop signals, time limits) go over a gloo group, so that reading
    # them never waits for the GPU (a NCCL collective would be a device sync per step).
    control: Any = None
    device: Optional[torch.device] = None   # this rank's device (cuda:LOCAL_RANK on GPUs)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- collectives (each a no-op in a one-process world) ------------------------------

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier(group=self.control)

    def all_reduce_(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place over ranks: op "sum", "avg" (sum / world size), "max" or "min"."""
        if self.distributed:
            red = torch.distributed.ReduceOp
            kind = {"sum": red.SUM, "avg": red.SUM, "max": red.MAX, "min": red.MIN}[op]
            torch.distributed.all_reduce(t, op=kind)
            if op == "avg":
                t.div_(self.world_size)
        return t

    def max_flag(self, flag: int) -> int:
        """The largest of every rank's integer flag (host values, over the gloo group)."""
        if not self.distributed:
            return int(flag)
        t = torch.tensor([int(flag)], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=self.control)
        return int(t.item())

    def gather_objects(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects)."""
        if not self.distributed:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj, group=self.control)
        return out

    def broadcast_object(self, obj):
        """rank 0's obj, on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def broadcast_tensors_(self, tensors: Sequence[torch.Tensor]) -> None:
        """rank 0's values into every rank's tensors, one flat broadcast per dtype."""
        if not self.distributed:
            return
        by_dtype: dict = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for ts in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in ts])
            torch.distributed.broadcast(flat, src=0)
            with torch.no_grad():
                for t, part in zip(ts, torch.split(flat, [t.numel() for t in ts])):
                    t.copy_(part.view_as(t))

    # --- checks that hold on every rank -------------------------------------------------

    def check_all(self, problem: Optional[str], error=DistributedError) -> None:
        """Raises `error` on every rank when any rank has a problem (a message), naming the
        first such rank; returns on every rank when none has."""
        problems = self.gather_objects(problem)
        bad = [(r, p) for r, p in enumerate(problems) if p]
        if bad:
            r, p = bad[0]
            where = f"rank {r}: " if self.distributed else ""
            more = f" (and {len(bad) - 1} other rank(s))" if len(bad) > 1 else ""
            raise error(f"{where}{p}{more}")

    def agree(self, what: str, value) -> None:
        """Every rank must hold the same `value` (JSON-able: settings, fingerprints); a
        DistributedError on every rank names the ranks that differ from rank 0."""
        if not self.distributed:
            return
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        digests = self.gather_objects(digest)
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            values = self.gather_objects(value)
            detail = _first_difference(values[0], values[differ[0]])
            raise DistributedError(f"the ranks disagree on {what}: rank(s) {differ} differ from "
                                   f"rank 0{detail}; launch every rank with the same command "
                                   "and files")

    def check_shared_dir(self, path: str) -> None:
        """Every rank must see the same folder `path` (rank 0 writes, all read: on several
        nodes it must be shared storage). rank 0 makes it and leaves a marker file for a
        moment; a rank that does not see the marker fails the check on every rank."""
        if not self.distributed:
            return
        name = self.broadcast_object(f".sgan_fast_shared_check_{os.getpid()}_{os.urandom(4).hex()}")
        marker = os.path.join(path, name)
        problem = None
        if self.is_main:
            try:
                os.makedirs(path, exist_ok=True)
                with open(marker, "w") as f:
                    f.write("rank 0 was here\n")
            except OSError as exc:
                problem = f"cannot write {path}: {exc}"
        self.check_all(problem)
        problem = None if os.path.exists(marker) else (
            f"{path} is not the folder rank 0 writes (its marker file is missing): the output "
            "folder must be on storage every node shares")
        try:
            self.check_all(problem)
        finally:
            self.barrier()
            if self.is_main and os.path.exists(marker):
                os.remove(marker)

    # --- splitting work -----------------------------------------------------------------

    def shard(self, n: int) -> range:
        """This rank's part of items 0..n-1: contiguous, sizes differing by at most one, rank
        order, so gathering the parts in rank order gives 0..n-1 back."""
        base, extra = divmod(int(n), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))


def _first_difference(a, b) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return f" (first: {k}: rank 0 has {a.get(k)!r}, the other {b.get(k)!r})"
    return ""


_WORLD = World()


def current() -> World:
    """The world init_distributed made (one process until then)."""
    return _WORLD


def launched_by_torchrun() -> bool:
    return any(v in os.environ for v in ENV_VARS)


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables; (0, 0, 1) without them. Some
    but not all of them: a DistributedError naming the missing ones."""
    present = [v for v in ENV_VARS if v in os.environ]
    if not present:
        return 0, 0, 1
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise DistributedError(f"a multi-process launch needs {', '.join(ENV_VARS)} (torchrun "
                               f"sets them); {', '.join(missing)} missing, "
                               f"{', '.join(present)} set. Launch with torchrun, or unset them "
                               "for a one-process run")
    try:
        rank, local, size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    except ValueError:
        raise DistributedError("RANK, LOCAL_RANK and WORLD_SIZE must be integers, got "
                               + ", ".join(f"{k}={os.environ[k]!r}" for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))) from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise DistributedError(f"bad torchrun variables: RANK={rank}, LOCAL_RANK={local}, "
                               f"WORLD_SIZE={size}")
    return rank, local, size


def init_distributed(device: Optional[str] = "auto", *, backend: str = "auto",
                     timeout_minutes: float = 30.0) -> tuple[World, torch.device]:
    """The process group of a torchrun launch, and this rank's device.

    device: auto (a GPU per rank when there are GPUs, else the CPU), cpu, or cuda (rank on
    GPU LOCAL_RANK; cuda:<i> is refused with several ranks). backend: auto (nccl on GPUs,
    gloo on the CPU), nccl or gloo. timeout_minutes bounds a collective's wait (rank 0's
    periodic evaluation runs while the others wait). Without torchrun's variables, or with
    WORLD_SIZE=1, nothing is initialised: a one-process world and pick_device(device)."""
    global _WORLD
    from ._device import pick_device

    if backend not in BACKENDS:
        raise DistributedError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    rank, local, size = env_world()
    if size == 1:
        _WORLD = World()
        return _WORLD, pick_device(device)
    if torch.distributed.is_initialized():
        if _WORLD.world_size != size:
            raise DistributedError("torch.distributed is already initialised outside sgan_fast")
        dev = _rank_device(device, local)
        return _WORLD, dev
    dev = _rank_device(device, local)
    chosen = ("nccl" if dev.type == "cuda" else "gloo") if backend == "auto" else backend
    if chosen == "nccl" and dev.type != "cuda":
        raise DistributedError("the nccl backend runs on GPUs only, and this run's device is "
                               f"{dev}; use --dist-backend gloo (or auto) on the CPU")
    if chosen == "nccl" and not torch.distributed.is_nccl_available():
        raise DistributedError("this torch build has no NCCL; use --dist-backend gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kw = dict(backend=chosen, timeout=datetime.timedelta(minutes=timeout_minutes))
    if chosen == "nccl":
        kw["device_id"] = dev
    torch.distributed.init_process_group(**kw)
    control = torch.distributed.new_group(backend="gloo") if chosen != "gloo" else None
    _WORLD = World(rank=rank, world_size=size, local_rank=local, backend=chosen, control=control,
                   device=dev)
    warning = restart_store_warning() if rank == 0 else None
    if warning:
        import sys
        print(f"sgan-fast: warning: {warning}", file=sys.stderr)
    return _WORLD, dev


def restart_store_warning() -> Optional[str]:
    """Why an elastic restart of this launch may fail to reconnect, or None. torchrun shares
    its rendezvous store with the workers by default; after a restart, a new group can read
    the dead group's addresses from it and fail with "connectFullMesh failed ... Connection
    refused" (pytorch/pytorch#135712; 2 restarts in 7 failed so on the CPU test machine)."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return ("--max-restarts with torchrun's shared rendezvous store: a restarted group may "
                "fail to reconnect; launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                "(docs/distributed.md)")
    return None


def _rank_device(device: Optional[str], local_rank: int) -> torch.device:
    from ._device import pick_device

    dev = pick_device(device)
    if dev.type != "cuda":
        return dev
    if dev.index is not None:   # only an explicit cuda:<i> has one (auto and cuda do not)
        raise DistributedError(f"device={device!r} pins every rank to one GPU; with torchrun pass "
                               "cuda (or auto): rank r of a node uses GPU LOCAL_RANK")
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise DistributedError(f"LOCAL_RANK={local_rank} but this node has {n} GPU(s): start at "
                               "most one rank per GPU (--nproc-per-node)")
    return torch.device("cuda", local_rank)


def shutdown() -> None:
    """Ends the process group (when one was made), so that the launcher sees a clean exit."""
    global _WORLD
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _WORLD = World()


# Commands that run under torchrun; the others refuse a multi-process launch.
DISTRIBUTED_COMMANDS = ("train", "classify", "eval", "synthesize")


def add_dist_args(parser) -> None:
    """--dist-backend and --dist-timeout, for the commands that run under torchrun."""
    g = parser.add_argument_group("multi-process (under torchrun; see docs/distributed.md)")
    g.add_argument("--dist-backend", default="auto", choices=list(BACKENDS),
                   help="auto: nccl on GPUs, gloo on the CPU")
    g.add_argument("--dist-timeout", type=float, default=30.0, metavar="MINUTES",
                   help="how long a rank waits for the others in a collective (rank 0's "
                        "periodic evaluation runs while the others wait; default 30)")


# --- splitting a command's work: the patterns of eval, synthesize and classify -------------
#
#     with same_outcome(world):            # a failure on any rank: the same error on every rank
#         ...checks, reading files...
#     rows = batch_rows(world, n, batch_size)          # this rank's whole batches of 0..n-1
#     parts = gather_to_main(world, my_part)           # [part of rank 0, 1, ...] on rank 0, else None

# exceptions whose message says it all (the CLI prints them as one line); others keep their type
_PLAIN = (ValueError, FileNotFoundError, ImportError, FloatingPointError)


@contextlib.contextmanager
def same_outcome(world: World):
    """Runs the block on every rank; when it raises on any rank, every rank raises the same
    DistributedError (naming the first rank that failed, and its message) at the end of the
    block, so that no rank is left waiting in a collective for one that gave up. The block
    must not itself call collectives. In a one-process world the block's exception passes
    unchanged."""
    if not world.distributed:
        yield
        return
    problem = cause = None
    try:
        yield
    except Exception as exc:            # noqa: BLE001 -- any failure must reach every rank
        cause = exc
        problem = str(exc) if isinstance(exc, _PLAIN) else f"{type(exc).__name__}: {exc}"
    try:
        world.check_all(problem)
    except DistributedError as err:
        raise err from cause


def gather_to_main(world: World, obj):
    """[obj of rank 0, obj of rank 1, ...] on rank 0 and None on the others (picklable
    objects, over the host-side group): what rank 0 writes, without a copy on every rank."""
    if not world.distributed:
        return [obj]
    out = [None] * world.world_size if world.is_main else None
    torch.distributed.gather_object(obj, out, dst=0, group=world.control)
    return out


def batch_rows(world: World, n: int, batch_size: int) -> range:
    """This rank's rows of 0..n-1, in whole batches of `batch_size` counted from row 0: the
    batches a one-process run makes, so that every batch has the same rows (and the same
    shape) whatever the number of ranks. Concatenating the ranks' rows in rank order gives
    0..n-1."""
    batches = world.shard(-(-int(n) // int(batch_size)))
    return range(min(n, batches.start * batch_size), min(n, batches.stop * batch_size))
