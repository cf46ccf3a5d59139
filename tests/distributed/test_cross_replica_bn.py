"""CrossReplicaBatchNorm2d on 2 gloo ranks, each with half of a batch, against nn.BatchNorm2d on
the whole batch: outputs, input and weight gradients, running statistics."""

import torch
from torch import nn

from sgan_fast.nn import CrossReplicaBatchNorm2d, cross_replica_batch_norm

from .ranks import RankError, run_ranks


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, 3, 4, generator=g) * 3 + 1.5     # 6 images, 5 channels, odd sizes
    w = torch.randn(5, generator=g)
    gy = torch.randn(6, 5, 3, 4, generator=g)                # the upstream gradient
    return x, w, gy


def _bn(kind):
    bn = kind(5, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(_batch()[1])
        bn.bias.fill_(0.25)
    return bn


def _on_rank(world):
    x, _, gy = _batch()
    rows = slice(3 * world.rank, 3 * world.rank + 3)
    model = nn.Sequential(_bn(nn.BatchNorm2d))
    cross_replica_batch_norm(model)                         # converted in place, state kept
    bn = model[0]
    assert isinstance(bn, CrossReplicaBatchNorm2d)
    xr = x[rows].clone().requires_grad_(True)
    for _ in range(2):                                      # running statistics over 2 steps
        y = bn(xr)
    (y * gy[rows]).sum().backward()
    bn.eval()
    y_eval = bn(xr)
    return dict(y=y.detach(), gx=xr.grad, gw=bn.weight.grad, gb=bn.bias.grad,
                mean=bn.running_mean.clone(), var=bn.running_var.clone(),
                n=int(bn.num_batches_tracked), y_eval=y_eval.detach())


def test_cross_replica_batch_norm_equals_batch_norm_on_the_whole_batch(tmp_path):
    r0, r1 = run_ranks(_on_rank, 2, tmp_path)
    assert not isinstance(r0, RankError) and not isinstance(r1, RankError), (r0, r1)
    x, _, gy = _batch()
    bn = _bn(nn.BatchNorm2d)
    xw = x.clone().requires_grad_(True)
    for _ in range(2):
        y = bn(xw)
    (y * gy).sum().backward()
    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([r0["gx"], r1["gx"]]), xw.grad, **close)
    # each rank's weight gradient is its half's share; DDP would sum (average) them
    torch.testing.assert_close(r0["gw"] + r1["gw"], bn.weight.grad, **close)
    torch.testing.assert_close(r0["gb"] + r1["gb"], bn.bias.grad, **close)
    for r in (r0, r1):
        torch.testing.assert_close(r["mean"], bn.running_mean, **close)
        torch.testing.assert_close(r["var"], bn.running_var, **close)
        assert r["n"] == 2
    bn.eval()
    torch.testing.assert_close(torch.cat([r0["y_eval"], r1["y_eval"]]), bn(x).detach(), **close)


def test_in_one_process_it_is_batch_norm_exactly():
    x, _, _ = _batch()
    a, b = _bn(nn.BatchNorm2d), _bn(CrossReplicaBatchNorm2d)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a.running_var, b.running_var)
    assert a.state_dict().keys() == b.state_dict().keys()
