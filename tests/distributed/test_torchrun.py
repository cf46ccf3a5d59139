"""`sgan-fast train` under torchrun itself (2 gloo ranks on the CPU): a rank killed mid-run is
restarted by the elastic agent and resumes from the checkpoint; SIGTERM to torchrun stops
every rank with a checkpoint at one step."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sgan_fast.train import load_checkpoint

from ..train._runs import tiny_npz

TINY = ["--resolution", "32", "--ch", "4", "--batch-size", "8", "--d-steps", "1",
        "--shared-dim", "8", "--z-dim", "16", "--log-every", "1", "--sample-every", "1000",
        "--device", "cpu", "--no-progress", "--no-tensorboard", "--target", "onehot"]


@pytest.fixture
def data(tmp_path):
    return tiny_npz(tmp_path / "blobs.npz")


def _launch(data, out, *extra, torchrun=()):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--monitor-interval", "0.2", *torchrun, "-m", "sgan_fast", "train", "--data", data,
           "--out", out, *TINY, *extra]
    # as docs/distributed.md says for elastic restarts: with the rendezvous store shared with
    # the workers, a restarted group can read the dead group's gloo addresses and fail to
    # connect (pytorch/pytorch#135712; 2 of 7 restarts here without it, 0 of 6 with it)
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _wait_for(cond, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError("torchrun ended early:\n" + proc.stdout.read())
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def _log_steps(out):
    path = os.path.join(out, "log.csv")
    if not os.path.exists(path):
        return []
    return [int(r.split(",")[0]) for r in open(path).read().splitlines()[1:] if r]


def _worker(rank, restart):
    """pid of the worker process with this RANK and restart count (from /proc)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if (f"RANK={rank}".encode() in env and
                f"TORCHELASTIC_RESTART_COUNT={restart}".encode() in env and
                b"TORCHELASTIC_RUN_ID=none" not in env and int(pid) != os.getpid()):
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            if b"sgan_fast" in cmd and b"torch.distributed.run" not in cmd:
                return int(pid)
    return None


def test_a_killed_rank_is_restarted_by_torchrun_and_resumes_from_the_checkpoint(data, tmp_path):
    out = str(tmp_path / "run")
    proc = _launch(data, out, "--steps", "40", "--ckpt-every", "2", torchrun=["--max-restarts", "1"])
    _wait_for(lambda: len(_log_steps(out)) >= 3 and _worker(1, 0) is not None, proc)
    os.kill(_worker(1, 0), signal.SIGKILL)
    text, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, text
    assert re.search(r"restart \d of an elastic launch: resuming from", text)
    assert re.search(r"failed \(exitcode: -9\) local_rank: 1", text)   # torchrun named it
    assert load_checkpoint(out)["step"] == 40
    steps = _log_steps(out)
    assert steps == list(range(1, 41))   # resumed: the log kept up to the checkpoint, no repeats


def test_sigterm_to_torchrun_stops_every_rank_with_a_checkpoint(data, tmp_path):
    out = str(tmp_path / "run")
    proc = _launch(data, out, "--steps", "100000", "--ckpt-every", "100000")
    _wait_for(lambda: len(_log_steps(out)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "got signal: 15" in text    # torchrun's SignalException
    state = load_checkpoint(out)         # written at the stop, not periodically
    assert state["step"] >= 3 and state["step"] == _log_steps(out)[-1], text
    assert "interrupted at step" in text and "resume with the same command" in text
