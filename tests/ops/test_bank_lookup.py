"""bank_lookup and the fused bank path of softlabel_proj: fast implementations against the
reference (values and every gradient), the unfused path, bad input, torch.compile."""

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sgan_fast.nn import SoftLabelProjectionHead
from sgan_fast.ops import softlabel_proj, why_unavailable
from sgan_fast.ops.bank_lookup import BankLabels, TargetPlan, bank_lookup, bank_lookup_ref

from ..labels._banks import random_bank
from ._softlabel_inputs import make_inputs
from .test_softlabel_proj import REL_TOL, _cancellation_floors, _rel_err

HAS_GPU = torch.cuda.is_available()
TARGETS = ["onehot", "softmax", "softmax:0.5", "smooth:0.1", "ols", "mix:0.6", "mix:0.6+topk:2",
           "smooth:0.2+topk:2"]


def _run(impl, inp, labels, grad_out):
    leaves = {k: inp[k].detach().clone().requires_grad_(True) for k in ("h", "E", "w", "bias")}
    out = softlabel_proj(leaves["h"], labels, leaves["E"], leaves["w"], leaves["bias"], inp["u_E"],
                         inp["v_E"], inp["u_w"], inp["v_w"], impl=impl)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out)
    return out, dict(zip(leaves, grads))


def _ref_run(inp, plan, sel, grad_out):
    """The unfused specification: the targets written out in float32 (float64 for float64
    features), then the projection reference."""
    acc = torch.float64 if inp["h"].dtype == torch.float64 else torch.float32
    return _run("ref", inp, bank_lookup_ref(plan, sel, acc), grad_out)


def _compare(out, grads, ref_out, ref_grads, inp, P, dtype, what, tol=None):
    tol = tol or REL_TOL[dtype]
    B = out.shape[0]
    assert out.dtype == dtype and torch.isfinite(out).all(), what
    err = _rel_err(out, ref_out, floor=B ** 0.5)
    assert err < tol, f"{what} out: rel err {err:.2e}"
    floors = _cancellation_floors(dict(inp, labels=P), P.shape[1])
    for name, g in grads.items():
        r = ref_grads[name]
        assert torch.isfinite(g).all(), f"{what}: non-finite grad of {name}"
        if name == "bias":
            err = ((g.double() - r.double()).abs() / inp["grad_out"].double().norm()).item()
        else:
            err = _rel_err(g, r, floor=floors.get(name, 1e-30))
        assert err < tol, f"{what} grad {name}: rel err {err:.2e}"


def _fused_case(impl, dtype, target, form, N, C, F, B, K, seed, device="cpu"):
    bank = random_bank(N, C, form=form, K=K, dtype=dtype if dtype != torch.float64 else torch.float32,
                       seed=seed, device=device)
    inp = make_inputs(B, C, F, 1, "hard", dtype, device, seed)
    sel = torch.randint(0, N, (B,), generator=torch.Generator().manual_seed(seed + 1)).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plan = bank.plan(target)
    out, grads = _run(impl, inp, bank.labels(sel, target), inp["grad_out"])
    ref_out, ref_grads = _ref_run(inp, plan, sel, inp["grad_out"])
    P = bank_lookup_ref(plan, sel, torch.float64).cpu()
    _compare(out, grads, ref_out, ref_grads, inp, P, dtype, f"{impl} {form} {target}")
    return bank, inp, sel, out, grads


CPU_CASES = [("cpu", torch.float64), ("cpu", torch.float32), ("cpu", torch.float16),
             ("cpu", torch.bfloat16), ("triton", torch.float32), ("triton", torch.float16)]


@pytest.mark.parametrize("form", ["dense", "topk"])
@pytest.mark.parametrize("impl,dtype", CPU_CASES, ids=[f"{i}-{str(d)[6:]}" for i, d in CPU_CASES])
@given(target=st.sampled_from(TARGETS), N=st.integers(1, 30), C=st.integers(1, 20),
       F=st.integers(1, 40), B=st.integers(1, 24), K=st.integers(1, 5),
       seed=st.integers(0, 2**31 - 1))
def test_fused_projection_matches_reference(poisoned_outputs, impl, dtype, form, target, N, C, F,
                                            B, K, seed):
    if HAS_GPU and impl == "triton":
        pytest.skip("Triton runs natively on this GPU machine: see the GPU test")
    assert why_unavailable("softlabel_proj", impl, "cpu", dtype) is None
    _fused_case(impl, dtype, target, form, N, C, F, B, K, seed)


@pytest.mark.parametrize("impl", ["cpu", "triton"])
@pytest.mark.parametrize("form", ["dense", "topk"])
def test_fused_equals_unfused_path(impl, form):
    """The head fed (bank, indices, target) against the same head fed the looked-up targets."""
    torch.manual_seed(0)
    bank = random_bank(50, 10, form=form, K=4, seed=7)
    head = SoftLabelProjectionHead(24, 10, impl=impl)
    h = torch.randn(16, 24)
    sel = torch.randint(0, 50, (16,))
    for target in ("softmax", "mix:0.5", "smooth:0.1"):
        heads = [head, SoftLabelProjectionHead(24, 10, impl=impl)]
        heads[1].load_state_dict(head.state_dict())
        outs = []
        for m, labels in zip(heads, [(bank, sel, target), bank.lookup(sel, target, out="dense")]):
            m.zero_grad()
            x = h.clone().requires_grad_(True)
            out = m(x, labels)
            out.backward(torch.linspace(-1, 1, 16))
            outs.append([out.detach(), x.grad] + [p.grad for p in m.parameters()])
        for a, b in zip(*outs):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), target
        assert torch.equal(heads[0].embed.u0, heads[1].embed.u0)  # same power-iteration step


def test_gradcheck_float64_fused_cpu():
    bank = random_bank(20, 6, form="topk", K=3, seed=3)
    inp = make_inputs(5, 6, 7, 1, "hard", torch.float64, "cpu", 0)
    sel = torch.tensor([0, 3, 3, 19, 7])
    for target in ("mix:0.4", "smooth:0.2", "ols"):
        labels = bank.labels(sel, target)

        def f(h, E, w, bias):
            return softlabel_proj(h, labels, E, w, bias, inp["u_E"], inp["v_E"], inp["u_w"],
                                  inp["v_w"], impl="cpu")

        tensors = tuple(inp[k].clone().requires_grad_(True) for k in ("h", "E", "w", "bias"))
        assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("impl", ["ref", "cpu", "triton"])
def test_out_of_range_index_raises(impl):
    bank = random_bank(10, 4, seed=0)
    for bad in (10, -1):
        sel = torch.tensor([0, bad, 3])
        with pytest.raises(IndexError, match=rf"indices\[1\] = {bad} is outside .*\[0, N=10\)"):
            bank.lookup(sel, "softmax", impl=impl)
        inp = make_inputs(3, 4, 5, 1, "hard", torch.float32, "cpu", 0)
        with pytest.raises(IndexError, match=r"indices\[1\]"):
            softlabel_proj(inp["h"], bank.labels(sel, "mix:0.5"), inp["E"], inp["w"], inp["bias"],
                           inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"], impl=impl)


@pytest.mark.parametrize("impl", ["cpu", "triton"])
@pytest.mark.parametrize("form", ["dense", "topk"])
def test_unchecked_bad_index_is_clamped_not_read_out_of_bounds(impl, form):
    bank = random_bank(10, 4, form=form, K=2, seed=1)
    sel = torch.tensor([10**9, -(10**9)])
    q = bank.lookup(sel, "mix:0.5", out="dense", impl=impl, check=False)
    assert torch.allclose(q, bank.lookup(torch.tensor([9, 0]), "mix:0.5", out="dense", impl="ref"))


@pytest.mark.parametrize("indices,exc,match", [
    (torch.tensor([0.0, 1.0]), TypeError, "dtype torch.float32; expected int64"),
    (torch.zeros(2, 2, dtype=torch.long), ValueError, r"shape \(2, 2\); expected \[B\]"),
    (torch.zeros(0, dtype=torch.long), ValueError, "B >= 1"),
    ([0, 1], TypeError, "must be a tensor"),
])
def test_bad_indices(indices, exc, match):
    bank = random_bank(10, 4, seed=0)
    with pytest.raises(exc, match=match):
        bank.lookup(indices, "softmax")


def test_other_bad_input():
    bank = random_bank(10, 4, seed=0)
    with pytest.raises(ValueError, match="sparse lookup needs a top-k plan"):
        bank.lookup(torch.tensor([0]), "softmax", out="sparse")
    with pytest.raises(ValueError, match="out must be"):
        bank.lookup(torch.tensor([0]), "softmax", out="both")
    with pytest.raises(TypeError, match="TargetPlan"):
        bank_lookup(bank, torch.tensor([0]))
    with pytest.raises(ValueError, match="cannot have a uniform term"):
        TargetPlan("topk", 1, bank.labels_tensor, 4, gamma=0.1)
    inp = make_inputs(3, 5, 6, 1, "hard", torch.float32, "cpu", 0)
    with pytest.raises(ValueError, match="C=4 classes but E has 5 rows"):
        softlabel_proj(inp["h"], bank.labels(torch.tensor([0, 1, 2]), "softmax"), inp["E"],
                       inp["w"], inp["bias"], inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"])
    inp = make_inputs(3, 4, 6, 1, "hard", torch.float32, "cpu", 0)
    with pytest.raises(ValueError, match=r"expected \[B=3\] dataset indices"):
        softlabel_proj(inp["h"], bank.labels(torch.tensor([0, 1]), "softmax"), inp["E"],
                       inp["w"], inp["bias"], inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"])


def test_cpp_ops_refuse_an_empty_table_with_entries():
    """A direct call with a [0, K] top-k table would make the kernels read K entries of nothing."""
    sel, cls = torch.tensor([0]), torch.tensor([0, 1])
    idx, val = torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, 3)
    with pytest.raises(RuntimeError, match="R = 0 only with K = 0"):
        torch.ops.sgan_fast.bank_lookup_sparse(idx, val, sel, cls, 1, 1.0, 0.0, 2)
    inp = make_inputs(1, 2, 3, 1, "hard", torch.float32, "cpu", 0)
    with pytest.raises(RuntimeError, match="R = 0 only with K = 0"):
        torch.ops.sgan_fast.softlabel_proj_fwd_topk(
            inp["h"], idx, val, inp["E"], inp["w"], inp["bias"], inp["u_E"], inp["v_E"],
            inp["u_w"], inp["v_w"], sel, cls, 1, 1.0, 0.0)


def test_fused_head_compiles_without_graph_breaks():
    bank = random_bank(30, 6, form="topk", K=3, seed=2)
    head = SoftLabelProjectionHead(8, 6, impl="cpu", check=False).eval()
    h = torch.randn(4, 8)
    sel = torch.tensor([1, 5, 29, 0])
    labels = bank.labels(sel, "mix:0.5")
    compiled = torch.compile(lambda x, s: head(x, BankLabels(labels.plan, s)), fullgraph=True,
                             backend="aot_eager")
    assert torch.allclose(compiled(h, sel), head(h, labels), atol=1e-6)
    lookup = torch.compile(lambda s: bank_lookup(labels.plan, s, impl="cpu", check=False),
                           fullgraph=True, backend="aot_eager")
    got, exp = lookup(sel), bank.lookup(sel, "mix:0.5", impl="ref")
    assert torch.equal(got[0], exp[0]) and torch.allclose(got[1], exp[1])


# --- GPU -------------------------------------------------------------------------------------

GPU_CASES = [(i, d) for i in ("cuda", "triton") for d in (torch.float32, torch.float16, torch.bfloat16)]


@pytest.mark.gpu
@pytest.mark.parametrize("form", ["dense", "topk"])
@pytest.mark.parametrize("impl,dtype", GPU_CASES, ids=[f"{i}-{str(d)[6:]}" for i, d in GPU_CASES])
@given(target=st.sampled_from(TARGETS), N=st.integers(1, 300), C=st.integers(1, 300),
       F=st.integers(1, 200), B=st.integers(1, 100), K=st.integers(1, 16),
       seed=st.integers(0, 2**31 - 1))
def test_fused_projection_on_gpu(poisoned_outputs, impl, dtype, form, target, N, C, F, B, K, seed):
    _fused_case(impl, dtype, target, form, N, C, F, B, K, seed, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
@pytest.mark.parametrize("form", ["dense", "topk"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lookup_on_gpu(poisoned_outputs, impl, form, dtype):
    bank = random_bank(5000, 1000, form=form, K=16, dtype=dtype, seed=0, device="cuda")
    sel = torch.randint(0, 5000, (256,), device="cuda")
    for target in TARGETS:
        plan = bank.plan(target)
        q = bank.lookup(sel, target, out="dense", impl=impl)
        assert torch.allclose(q.float(), bank.lookup(sel, target, out="dense", impl="ref").float(),
                              atol=2e-6 if dtype == torch.float32 else 1.6e-2)
        if plan.form == "topk":
            i, v = bank.lookup(sel, target, out="sparse", impl=impl)
            ri, rv = bank.lookup(sel, target, out="sparse", impl="ref")
            assert torch.equal(i, ri) and torch.allclose(v.float(), rv.float(), atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_gpu_bad_index_unchecked_is_memory_safe(impl):
    bank = random_bank(100, 10, form="topk", K=4, seed=0, device="cuda")
    sel = torch.tensor([10**12, -5], device="cuda")
    bank.lookup(sel, "mix:0.5", impl=impl, check=False)
    inp = make_inputs(2, 10, 8, 1, "hard", torch.float32, "cuda", 0)
    softlabel_proj(inp["h"], bank.labels(sel, "mix:0.5"), inp["E"], inp["w"], inp["bias"],
                   inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"], impl=impl, check=False)
    torch.cuda.synchronize()  # an illegal access would surface here


@pytest.mark.parametrize("out", ["dense", "sparse"])
def test_an_eager_lookup_is_one_dispatcher_call(out):
    """check=False: the Python layer reads the plan and calls one op (the tables in the plan's
    dtype are cached after the first call)."""
    from torch.profiler import profile
    from sgan_fast import _ext
    if _ext.C is None:
        pytest.skip("needs the compiled extension")
    from sgan_fast.labels import SoftLabelBank
    bank = SoftLabelBank(torch.softmax(torch.randn(40, 6), 1), torch.randint(0, 6, (40,)))
    plan = bank.to_topk(3).plan("mix:0.5")
    idx = torch.randint(0, 40, (7,))
    want = bank_lookup(plan, idx, out=out, impl="cpu", check=False)  # warm the caches
    with profile() as prof:
        got = bank_lookup(plan, idx, out=out, impl="cpu", check=False)
    top = [e.name for e in prof.events() if e.cpu_parent is None]
    assert top == [f"sgan_fast::bank_lookup_{out}"], top
    if out == "dense":
        torch.testing.assert_close(got, bank_lookup_ref(plan, idx))
    else:
        assert all(torch.equal(a, b) for a, b in zip(got, want))
