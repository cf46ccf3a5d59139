"""Grouped spectral norm: every implementation against the per-layer reference loop, for
s, the updated vectors, the normalised weights and their gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from sgan_fast.ops import spectral_norm_grouped, spectral_norm_grouped_ref, why_unavailable
from sgan_fast.ops.spectral_norm import SEMANTICS, as_matrix

HAS_GPU = torch.cuda.is_available()
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
# s and the vectors are computed in float32 from the same rounded weights: tighter.
VEC_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}

# weight shapes: out, in, kernel (0 = a Linear/Embedding matrix), ConvTranspose (torch only)
layer_st = st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([0, 1, 3]),
                     st.booleans())


def make_group(specs, semantics, dtype, device="cpu", seed=0):
    """Weights, u, v (a few torch-order power steps from random, so that s stays away from
    zero even in eval mode), transposed flags and output gradients."""
    g = torch.Generator().manual_seed(seed)
    weights, us, vs, transposed, grads = [], [], [], [], []
    for out, inp, k, tr in specs:
        tr = tr and semantics != "biggan" and k > 0
        shape = (inp, out, k, k) if tr else ((out, inp, k, k) if k else (out, inp))
        W = torch.randn(shape, generator=g) / math.sqrt(max(1, math.prod(shape[1:])))
        M = as_matrix(W, tr).double()
        v = F.normalize(torch.randn(M.shape[1], generator=g, dtype=torch.float64), dim=0)
        for _ in range(2):
            u = F.normalize(M @ v, dim=0)
            v = F.normalize(M.t() @ u, dim=0)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        weights.append(W.to(device, dtype))
        us.append(u.to(device, acc).reshape(1, -1))  # BigGAN's [1, out] layout
        vs.append(v.to(device, acc))
        transposed.append(tr)
        grads.append(torch.randn(shape, generator=g).to(device, dtype))
    return weights, us, vs, transposed, grads


def run(impl, weights, us, vs, transposed, grads, semantics, training, num_iters):
    leaves = [W.detach().clone().requires_grad_(True) for W in weights]
    us = [u.clone() for u in us]
    vs = [v.clone() for v in vs] if semantics != "biggan" else None
    fn = spectral_norm_grouped_ref if impl == "ref" else spectral_norm_grouped
    kw = {} if impl == "ref" else {"impl": impl}
    outs, s = fn(leaves, us, vs, semantics=semantics, num_iters=num_iters, training=training,
                 transposed=transposed, return_scales=True, **kw)
    dws = torch.autograd.grad(outs, leaves, grads)
    return outs, s, us, vs, dws


def _rel(a, b, floor=0.0):
    a, b = a.double(), b.double()
    return ((a - b).norm() / max(b.norm().item(), floor, 1e-300)).item()


def check_group(impl, specs, semantics, training, num_iters, dtype, seed, device="cpu"):
    group = make_group(specs, semantics, dtype, device, seed)
    weights, transposed, grads = group[0], group[3], group[4]
    got = run(impl, *group, semantics, training, num_iters)
    ref = run("ref", *group, semantics, training, num_iters)
    tol, vtol = TOL[dtype], VEC_TOL[dtype]
    assert _rel(got[1], ref[1]) < vtol, f"s: {got[1]} vs {ref[1]}"
    for l in range(len(specs)):
        assert got[0][l].shape == weights[l].shape and got[0][l].dtype == dtype
        assert torch.isfinite(got[0][l]).all(), f"layer {l}: non-finite (unwritten?) output"
        assert _rel(got[0][l], ref[0][l]) < tol, f"layer {l} normalised weight"
        assert _rel(got[2][l], ref[2][l]) < vtol, f"layer {l} u"
        if got[3] is not None:
            assert _rel(got[3][l], ref[3][l]) < vtol, f"layer {l} v"
        # The gradient is G/s minus a rank-one term that nearly cancels it for thin matrices:
        # measure against the size of the terms, |G|/s * max(1, |W|_F/s).
        s_l = abs(ref[1][l].item())
        Wn = weights[l].double().norm().item()
        floor = grads[l].double().norm().item() / s_l * max(1.0, Wn / s_l)
        dw, dr = got[4][l], ref[4][l]
        assert torch.isfinite(dw).all(), f"layer {l}: non-finite (unwritten?) gradient"
        assert _rel(dw, dr, floor) < tol, f"layer {l} gradient ({specs[l]}, {transposed[l]})"


def _cpu_impls():
    cases = [("cpu", torch.float32), ("cpu", torch.float64), ("cpu", torch.float16),
             ("cpu", torch.bfloat16)]
    if why_unavailable("spectral_norm", "triton", "cpu") is None and not HAS_GPU:
        # bfloat16 arithmetic is wrong under the Triton interpreter (PLATFORM.md); the GPU test
        # covers Triton's bfloat16.
        cases += [("triton", torch.float32), ("triton", torch.float16)]
    return cases


@pytest.mark.parametrize("impl,dtype", _cpu_impls(),
                         ids=lambda x: str(x).replace("torch.", ""))
@given(specs=st.lists(layer_st, min_size=1, max_size=40), semantics=st.sampled_from(SEMANTICS),
       training=st.booleans(), num_iters=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
@example(specs=[(1, 17, 0, False)], semantics="biggan", training=True, num_iters=1, seed=0)
@example(specs=[(5, 3, 3, True), (1, 1, 0, False), (24, 24, 1, False)], semantics="torch",
         training=True, num_iters=2, seed=1)
def test_matches_reference_on_cpu(poisoned_outputs, impl, dtype, specs, semantics, training,
                                  num_iters, seed):
    why = why_unavailable("spectral_norm", impl, "cpu", dtype)
    assert why is None, f"{impl} must be available in every CPU test run: {why}"
    check_group(impl, specs, semantics, training, num_iters, dtype, seed)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("semantics", SEMANTICS)
@given(specs=st.lists(layer_st, min_size=1, max_size=40), training=st.booleans(),
       num_iters=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_matches_reference_on_gpu(poisoned_outputs, impl, dtype, semantics, specs, training,
                                  num_iters, seed):
    check_group(impl, specs, semantics, training, num_iters, dtype, seed, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_gpu_large_layers_and_more_than_one_table(impl):
    """BigGAN-128-sized layers (many chunks per layer) and 60 layers (two CUDA tables)."""
    specs = [(1536, 1536, 3, False), (1, 1536, 0, False), (1000, 1536, 0, False)]
    check_group(impl, specs, "biggan", True, 1, torch.float32, 0, "cuda")
    specs = [(7 + i % 5, 9 + i % 3, (0, 1, 3)[i % 3], False) for i in range(60)]
    check_group(impl, specs, "torch", True, 2, torch.float32, 1, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_gpu_launches_do_not_grow_with_layers(impl):
    """The kernel count of update + normalised weights + backward is the same for 4 and 40
    layers (the CUDA table holds 48)."""
    from torch.profiler import ProfilerActivity, profile

    def count(n):
        specs = [(16 + i, 8 + i, (0, 1, 3)[i % 3], False) for i in range(n)]
        weights, us, _, _, grads = make_group(specs, "biggan", torch.float32, "cuda")
        leaves = [W.requires_grad_(True) for W in weights]
        spectral_norm_grouped(leaves, us, impl=impl, check=False)  # warm-up, tables built
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            outs = spectral_norm_grouped(leaves, us, impl=impl, check=False)
            torch.autograd.backward(outs, grads)
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type.name == "CUDA")

    assert count(4) == count(40)


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_gradcheck_float64(impl):
    """torch's eval semantics use the stored u and v, so the map W -> W / s is a pure
    function whose exact gradient includes the term through s."""
    specs = [(3, 4, 0, False), (2, 3, 3, True), (1, 5, 0, False)]
    weights, us, vs, transposed, _ = make_group(specs, "torch", torch.float64)
    leaves = [W.clone().requires_grad_(True) for W in weights]

    def f(*ws):
        return tuple(spectral_norm_grouped(list(ws), us, vs, semantics="torch", training=False,
                                           transposed=transposed, impl=impl))

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_training_updates_vectors_and_eval_does_not():
    specs = [(6, 5, 0, False), (4, 3, 3, False)]
    for semantics in SEMANTICS:
        weights, us, vs, _, _ = make_group(specs, semantics, torch.float32, seed=3)
        us0 = [u.clone() for u in us]
        vs0 = [v.clone() for v in vs]
        vs_arg = None if semantics == "biggan" else vs
        spectral_norm_grouped(weights, us, vs_arg, semantics=semantics, training=False, impl="cpu")
        assert all(torch.equal(a, b) for a, b in zip(us, us0)), semantics
        assert all(torch.equal(a, b) for a, b in zip(vs, vs0)), semantics
        spectral_norm_grouped(weights, us, vs_arg, semantics=semantics, training=True, impl="cpu")
        assert not any(torch.equal(a, b) for a, b in zip(us, us0)), semantics
        if semantics != "biggan":
            assert not any(torch.equal(a, b) for a, b in zip(vs, vs0)), semantics


def test_scales_approach_the_top_singular_value():
    # a known spectrum with a gap (3 vs 1.5): each step shrinks the error by (1.5/3)^2
    g = torch.Generator().manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(12, 7, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=torch.float64))
    sigma = torch.tensor([3.0, 1.5, 1.2, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)
    W = q1 @ torch.diag(sigma) @ q2.t()
    u = torch.randn(1, 12, generator=g, dtype=torch.float64)
    for _ in range(30):
        _, s = spectral_norm_grouped([W], [u], impl="cpu", return_scales=True)
    assert s.item() == pytest.approx(3.0, rel=1e-12)


def test_biggan_eval_runs_one_step_whatever_num_iters():
    """BigGAN's layers restart from the stored u in eval mode, so 3 steps = 1 step there."""
    W = torch.randn(5, 4)
    u = torch.randn(1, 5)
    for impl in ("ref", "cpu"):
        _, s1 = spectral_norm_grouped([W], [u], num_iters=1, training=False, impl=impl,
                                      return_scales=True)
        _, s3 = spectral_norm_grouped([W], [u], num_iters=3, training=False, impl=impl,
                                      return_scales=True)
        assert torch.equal(s1, s3)


def test_compile_fullgraph_traces_the_custom_ops():
    specs = [(6, 5, 0, False), (4, 3, 3, False)]
    weights, us, _, _, _ = make_group(specs, "biggan", torch.float32, seed=4)

    def f(ws, us):
        return [w.sum() for w in spectral_norm_grouped(ws, us, impl="cpu", check=False)]

    us_eager = [u.clone() for u in us]
    expect = f(weights, us_eager)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(weights, us)
    assert all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(got, expect))
    assert all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(us, us_eager))


# --- bad input ----------------------------------------------------------------------------------

def test_bad_input_gets_clear_errors():
    W, u = torch.randn(4, 3), torch.randn(1, 4)
    with pytest.raises(ValueError, match="empty"):
        spectral_norm_grouped([], [])
    with pytest.raises(ValueError, match="zero rows"):
        spectral_norm_grouped([torch.randn(0, 3)], [torch.randn(0)])
    with pytest.raises(ValueError, match="u of layer 1 has 5 elements"):
        spectral_norm_grouped([W, W], [u, torch.randn(5)])
    with pytest.raises(ValueError, match="keeps v"):
        spectral_norm_grouped([W], [u], semantics="torch")
    with pytest.raises(ValueError, match="semantics"):
        spectral_norm_grouped([W], [u], semantics="pytorch")
    with pytest.raises(ValueError, match="num_iters"):
        spectral_norm_grouped([W], [u], num_iters=0)
    with pytest.raises(ValueError, match="weight 1 is torch.float64"):
        spectral_norm_grouped([W, W.double()], [u, u])
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        spectral_norm_grouped([torch.randn(4)], [u])
    with pytest.raises(ValueError, match="u of layer 0 is on meta"):
        spectral_norm_grouped([W], [torch.empty(4, device="meta")])
    bad = W.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="weight of layer 1 contains a non-finite"):
        spectral_norm_grouped([W, bad], [u, u], impl="cpu")
    with pytest.raises(ValueError, match="u of layer 0 contains a non-finite"):
        spectral_norm_grouped([W], [torch.full((1, 4), float("inf"))], impl="cpu")
    for impl in ("ref", "cpu"):
        with pytest.raises(ValueError, match="spectral norm of layer 1 came out 0"):
            spectral_norm_grouped([W, torch.zeros(4, 3)], [u.clone(), u.clone()], impl=impl)


def test_cpp_entry_points_check_their_arguments():
    ops = torch.ops.sgan_fast
    W, u = torch.randn(4, 3), torch.randn(4)
    with pytest.raises(RuntimeError, match="u has 3 elements; expected 4"):
        ops.spectral_norm_power_iteration([W], u[:3], u.new_empty(0), 1, 1e-12, 0)
    with pytest.raises(RuntimeError, match="mode must be"):
        ops.spectral_norm_power_iteration([W], u, u.new_empty(0), 1, 1e-12, 7)
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.spectral_norm_power_iteration([W.t()], torch.randn(3), u.new_empty(0), 1, 1e-12, 0)
    with pytest.raises(RuntimeError, match="accumulation dtype"):
        ops.spectral_norm_normalize_fwd([W], u.double(), torch.randn(3), torch.ones(1))
    with pytest.raises(RuntimeError, match="grad must be"):
        ops.spectral_norm_normalize_bwd(torch.randn(11), [W], u, torch.randn(3), torch.ones(1))


# --- the host path: the whole group in one C++ call --------------------------------------------

@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_svs_receive_the_scales_in_training_only(impl):
    specs = [(5, 4, 0, False), (6, 3, 3, False), (1, 7, 0, False)]
    weights, us, _, _, _ = make_group(specs, "biggan", torch.float32)
    svs = [torch.zeros(1) for _ in specs]
    _, s = spectral_norm_grouped(weights, us, impl=impl, return_scales=True, svs=svs)
    torch.testing.assert_close(torch.cat(svs), s)
    before = [b.clone() for b in svs]
    spectral_norm_grouped(weights, us, impl=impl, training=False, svs=svs)
    assert all(torch.equal(a, b) for a, b in zip(svs, before))
    with pytest.raises(ValueError, match="3 weights but 2 singular-value buffers"):
        spectral_norm_grouped(weights, us, impl=impl, svs=svs[:2])


def test_fast_path_is_one_call_and_bumps_the_buffers_versions():
    """An eager call is one dispatcher call whatever the number of layers; the u (and v)
    buffers it writes are versioned as in-place writes are, so autograd still notices a
    buffer saved elsewhere and changed by the update."""
    from torch.profiler import profile
    specs = [(5, 4, 0, False), (6, 3, 3, True), (1, 7, 0, False), (4, 4, 1, False)]
    weights, us, vs, tr, grads = make_group(specs, "torch", torch.float32)
    weights = [W.requires_grad_(True) for W in weights]
    kw = dict(semantics="torch", transposed=tr, impl="cpu", check=False)
    spectral_norm_grouped(weights, us, vs, **kw)  # warm
    versions = [u._version for u in us] + [v._version for v in vs]
    with profile() as prof:
        outs = spectral_norm_grouped(weights, us, vs, **kw)
    top = [e.name for e in prof.events() if e.cpu_parent is None]
    assert top == ["sgan_fast::spectral_norm_grouped"], top
    assert all(x._version > v0 for x, v0 in zip(us + vs, versions))
    with profile() as prof:
        torch.autograd.backward(outs, grads)
    nodes = [e.name for e in prof.events() if e.cpu_parent is None
             and e.name.startswith("autograd::engine::evaluate_function")
             and "AccumulateGrad" not in e.name and "GraphRoot" not in e.name]
    assert len(nodes) == 1 and "CppNode" in nodes[0], nodes
    assert all(W.grad is not None and W.grad.shape == W.shape for W in weights)


def test_cpp_entry_point_names_bad_layers_without_value_checks():
    W, u = torch.randn(4, 3), torch.randn(1, 4)
    with pytest.raises(ValueError, match="u of layer 1 has 5 elements; weight 1 \\(4, 3\\) needs 4"):
        spectral_norm_grouped([W, W], [u, torch.randn(5)], impl="cpu", check=False)
    with pytest.raises(ValueError, match="weight 1 is torch.float64 on cpu but weight 0 is "
                                         "torch.float32 on cpu"):
        spectral_norm_grouped([W, W.double()], [u, u], impl="cpu", check=False)
    with pytest.raises(ValueError, match=r"weight 0 has shape \(4,\); spectral norm needs at least"):
        spectral_norm_grouped([torch.randn(4)], [u], impl="cpu", check=False)
    with pytest.raises(TypeError, match="weight 0 must be a float16"):
        spectral_norm_grouped([torch.ones(4, 3, dtype=torch.int64)], [u], impl="cpu", check=False)
    with pytest.raises(ValueError, match="v of layer 0 is on meta"):
        spectral_norm_grouped([W], [u], [torch.empty(3, device="meta")], semantics="torch",
                              impl="cpu", check=False)
    u0 = u.clone()
    with pytest.raises(ValueError, match="zero rows"):
        spectral_norm_grouped([W, torch.randn(0, 3)], [u, torch.randn(0)], impl="cpu", check=False)
    assert torch.equal(u, u0), "a rejected call must not touch the buffers"
