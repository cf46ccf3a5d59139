"""Random inputs for softlabel_proj tests and benchmarks: realistic power-iteration vectors
(so that s is the top singular value, never near zero), and each label form."""

import torch
import torch.nn.functional as F


def sn_vectors(W: torch.Tensor, generator: torch.Generator, iters: int = 3):
    """(u, v) approximating the top singular pair of W [R, Cc], in float32."""
    Wf = W.detach().float().cpu()
    u = F.normalize(torch.randn(Wf.shape[0], generator=generator), dim=0)
    v = F.normalize(Wf.t() @ u, dim=0)
    for _ in range(iters):
        u = F.normalize(Wf @ v, dim=0)
        v = F.normalize(Wf.t() @ u, dim=0)
    return u, v


def make_inputs(B, C, F_, K, form, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, F_, generator=g)
    E = torch.randn(C, F_, generator=g) / F_ ** 0.5
    w = torch.randn(F_, generator=g) / F_ ** 0.5
    bias = torch.randn(1, generator=g)
    u_E, v_E = sn_vectors(E, g)
    u_w, v_w = sn_vectors(w.view(1, -1), g)
    if form == "dense":
        labels = torch.softmax(2 * torch.randn(B, C, generator=g), dim=1).to(dtype)
    elif form == "topk":
        idx = torch.randint(0, C, (B, K), generator=g)
        val = torch.softmax(torch.randn(B, K, generator=g), dim=1).to(dtype)
        labels = (idx.to(device), val.to(device))
    elif form == "hard":
        labels = torch.randint(0, C, (B,), generator=g)
    else:
        raise ValueError(form)
    if isinstance(labels, torch.Tensor):
        labels = labels.to(device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    t = dict(h=h.to(dtype), E=E.to(dtype), w=w.to(dtype), bias=bias.to(dtype))
    t = {k: v.to(device) for k, v in t.items()}
    vec = dict(u_E=u_E, v_E=v_E, u_w=u_w, v_w=v_w)
    vec = {k: v.to(device=device, dtype=acc) for k, v in vec.items()}
    grad_out = torch.randn(B, generator=g).to(device=device, dtype=dtype)
    return dict(labels=labels, grad_out=grad_out, **t, **vec)
