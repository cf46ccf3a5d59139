"""The rank/world helpers without a process group: torchrun's variables, the per-rank slices of
the sampler and the loaders, the split of work items, and what is refused before any
collective starts."""

import numpy as np
import pytest
import torch

from sgan_fast import distributed
from sgan_fast.cli import main
from sgan_fast.data import ArrayDataset
from sgan_fast.data.gpu_loader import GPUResidentLoader
from sgan_fast.data.samplers import BatchSampler
from sgan_fast.data.torch_loader import TorchLoader
from sgan_fast.distributed import DistributedError, World

TORCHRUN = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                MASTER_PORT="29999")


@pytest.fixture
def torchrun_env(monkeypatch):
    for k in distributed.ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    return lambda **env: [monkeypatch.setenv(k, v) for k, v in env.items()]


def test_missing_torchrun_variables_are_named(torchrun_env):
    assert distributed.env_world() == (0, 0, 1)            # none set: one process
    torchrun_env(RANK="1", WORLD_SIZE="2")
    with pytest.raises(DistributedError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"):
        distributed.env_world()
    torchrun_env(LOCAL_RANK="1", MASTER_ADDR="h", MASTER_PORT="1", RANK="2")
    with pytest.raises(DistributedError, match="RANK=2, LOCAL_RANK=1, WORLD_SIZE=2"):
        distributed.env_world()


def test_nccl_on_the_cpu_is_refused_before_any_rendezvous(torchrun_env):
    torchrun_env(**TORCHRUN)
    with pytest.raises(DistributedError, match="nccl backend runs on GPUs only"):
        distributed.init_distributed("cpu", backend="nccl")
    with pytest.raises(DistributedError, match="backend must be one of"):
        distributed.init_distributed("cpu", backend="mpi")
    assert not torch.distributed.is_initialized()


def test_one_process_commands_refuse_a_multi_process_launch(torchrun_env, capsys):
    torchrun_env(**TORCHRUN)
    assert main(["sample", "--checkpoint", "x", "--out", "y.npz"]) == 2
    assert "`sgan-fast sample` runs in one process" in capsys.readouterr().err


def test_a_restart_warning_only_with_restarts_and_the_shared_store(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in distributed.restart_store_warning()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    assert distributed.restart_store_warning() is None
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert distributed.restart_store_warning() is None


@pytest.mark.parametrize("n", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shard_and_batch_rows_split_items_in_rank_order(n, size):
    shards = [World(rank=r, world_size=size).shard(n) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    rows = [distributed.batch_rows(World(rank=r, world_size=size), n, 3) for r in range(size)]
    assert [i for s in rows for i in s] == list(range(n))
    assert all(s.start % 3 == 0 for s in rows if len(s))    # whole batches of one process


def _labels(n=50, C=4, seed=0):
    return np.random.default_rng(seed).integers(0, C, n)


@pytest.mark.parametrize("mode", ["instance", "class_balanced"])
@pytest.mark.parametrize("size", [2, 4])
def test_ranks_slices_of_the_sampler_make_the_global_batches(mode, size):
    y = _labels()
    one = BatchSampler(y, 8, mode=mode, seed=5, num_classes=4)
    ranks = [BatchSampler(y, 8, mode=mode, seed=5, num_classes=4, rank=r, world_size=size)
             for r in range(size)]
    for epoch in (0, 3):
        glob = one.epoch_indices(epoch)
        parts = [s.local(s.epoch_indices(epoch)) for s in ranks]
        assert all(p.shape == (glob.shape[0], 8 // size) for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), glob)
    assert ranks[1].state_dict() == one.state_dict()       # resumable on another world size


def test_a_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="global batch size 6 is not divisible by the world size 4"):
        BatchSampler(_labels(), 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank must be in"):
        BatchSampler(_labels(), 8, rank=2, world_size=2)


def _dataset():
    g = np.random.default_rng(1)
    return ArrayDataset(g.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8), _labels(40),
                        num_classes=4)


@pytest.mark.parametrize("kind", [GPUResidentLoader, TorchLoader])
def test_ranks_loaders_hand_out_their_slices_of_the_one_process_batch_flips_included(kind):
    ds = _dataset()

    def loader(rank, size):
        s = BatchSampler(ds.labels, 8, seed=2, num_classes=4, rank=rank, world_size=size)
        return kind(ds, s, device="cpu", flip=True, flip_seed=7)

    def batches(ld, n=6):
        it = iter(ld)
        return [next(it)[1] for _ in range(n)]

    one = batches(loader(0, 1))
    parts = [batches(loader(r, 2)) for r in range(2)]
    flipped = 0
    for step, (x, y, i) in enumerate(one):
        (x0, y0, i0), (x1, y1, i1) = parts[0][step], parts[1][step]
        assert x0.shape[0] == 4
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([i0, i1]), i)
        assert torch.equal(torch.cat([y0, y1]), y)
        flipped += int((x != torch.from_numpy(ds.images[i.numpy()]).permute(0, 3, 1, 2)
                        .float().div(127.5).sub(1)).any())
    assert flipped > 0      # the flips were exercised (and match)
