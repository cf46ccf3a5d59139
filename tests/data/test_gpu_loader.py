"""The GPU-resident loader: the batch contract, flips, determinism and resume (on CPU here;
the same on a GPU in the gpu-marked test)."""

import itertools

import numpy as np
import pytest
import torch

from sgan_fast.data import ArrayDataset, BatchSampler, GPUResidentLoader

HAS_GPU = torch.cuda.is_available()


def _dataset(N=37, H=6, W=5, C=3, classes=4, seed=0):
    g = np.random.default_rng(seed)
    return ArrayDataset(g.integers(0, 256, (N, H, W, C), dtype=np.uint8), g.integers(0, classes, N),
                        num_classes=classes)


def _take(loader, n):
    return [(s, tuple(t.clone() for t in b)) for s, b in itertools.islice(iter(loader), n)]


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if HAS_GPU else []))
@pytest.mark.parametrize("mode", ["instance", "sqrt"])
def test_batch_contract_and_pixels(device, mode):
    ds = _dataset()
    loader = GPUResidentLoader(ds, BatchSampler(ds.labels, 8, mode=mode, seed=1), device=device,
                               output="uint8", flip=False)
    for step, (x, y, idx) in _take(loader, 6):
        assert x.shape == (8, 3, 6, 5) and x.dtype == torch.uint8 and x.device.type == device
        assert y.dtype == torch.int64 and idx.dtype == torch.int64
        assert np.array_equal(idx.cpu().numpy(), loader.sampler.batch_at(step))
        for b in range(8):
            img, cls, i = ds[int(idx[b])]
            assert torch.equal(x[b].cpu(), img) and int(y[b]) == cls and i == int(idx[b])


def test_float_output_flips_and_channels_last():
    ds = _dataset(N=64, C=1)
    loader = GPUResidentLoader(ds, BatchSampler(ds.labels, 16, seed=2), device="cpu",
                               output="float", flip=True, flip_seed=5, channels_last=True)
    flipped = 0
    for _, (x, _, idx) in _take(loader, 8):
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
        assert x.min() >= -1 and x.max() <= 1
        for b in range(16):
            ref = ds[int(idx[b])][0].float() / 127.5 - 1
            same, mirrored = torch.equal(x[b], ref), torch.equal(x[b], ref.flip(-1))
            assert same or mirrored
            flipped += int(mirrored and not same)
    assert 20 < flipped < 108  # about half of 128 images are mirrored


def test_resumes_with_the_same_batches_and_flips():
    ds = _dataset()
    def make():
        return GPUResidentLoader(ds, BatchSampler(ds.labels, 8, mode="class_balanced", seed=3),
                                 device="cpu", flip=True, flip_seed=9)
    a = make()
    run = _take(a, 14)                     # crosses epochs: 37 // 8 = 4 steps per epoch
    b = make()
    a2 = make()
    _take(a2, 5)
    b.load_state_dict(a2.state_dict())     # resume after 5 steps
    for (s, got), (s_ref, ref) in zip(_take(b, 9), run[5:]):
        assert s == s_ref and all(torch.equal(g, r) for g, r in zip(got, ref))


def test_bad_arguments():
    ds = _dataset()
    with pytest.raises(ValueError, match="draws from 10 images but the dataset has 37"):
        GPUResidentLoader(ds, BatchSampler(np.zeros(10, np.int64), 4), device="cpu")
    with pytest.raises(ValueError, match="output must be"):
        GPUResidentLoader(ds, BatchSampler(ds.labels, 4), device="cpu", output="fp8")
    with pytest.raises(TypeError, match="takes an ArrayDataset"):
        GPUResidentLoader(torch.utils.data.TensorDataset(torch.zeros(3)), BatchSampler(ds.labels, 4))
    if not HAS_GPU:
        with pytest.raises(RuntimeError, match="no GPU"):
            GPUResidentLoader(ds, BatchSampler(ds.labels, 4), device="cuda")
    a = GPUResidentLoader(ds, BatchSampler(ds.labels, 4), device="cpu", flip_seed=1)
    b = GPUResidentLoader(ds, BatchSampler(ds.labels, 4), device="cpu", flip_seed=2)
    with pytest.raises(ValueError, match="other flip settings"):
        b.load_state_dict(a.state_dict())


@pytest.mark.gpu
def test_gpu_batches_equal_cpu_batches():
    ds = _dataset(N=300, H=32, W=32)
    def make(device):
        return GPUResidentLoader(ds, BatchSampler(ds.labels, 64, seed=4), device=device, flip=False)
    for (_, c), (_, g) in zip(_take(make("cpu"), 10), _take(make("cuda"), 10)):
        assert all(torch.equal(x, y.cpu()) for x, y in zip(c, g))
