"""Random soft-label banks for tests and benchmarks."""

import torch

from sgan_fast.labels import SoftLabelBank


def random_bank(N, C, *, form="dense", K=None, dtype=torch.float32, seed=0, device="cpu",
                sharpness=2.0):
    """A bank of N images over C classes whose probabilities favour each image's class (so
    most are classified correctly, as a trained classifier's would be)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (N,), generator=g)
    logits = sharpness * torch.randn(N, C, generator=g)
    logits[torch.arange(N), labels] += sharpness
    P = torch.softmax(logits.double(), 1)
    bank = SoftLabelBank(P.to(dtype), labels, atol=2e-2)
    if form == "topk":
        bank = bank.to_topk(K)
    return bank.to(device)
