"""softlabel_proj: every implementation against the reference, values and every gradient."""

import warnings

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from sgan_fast import _ext
from sgan_fast.ops import _dispatch, softlabel_proj, softlabel_proj_ref, why_unavailable
from sgan_fast.ops.softlabel_proj import spectral_scales_ref

from ._softlabel_inputs import make_inputs

HAS_GPU = torch.cuda.is_available()
FORMS = ("dense", "topk", "hard")
# ||fast - ref|| / ||ref|| bounds: float32 differs only by summation order; half dtypes
# also by where intermediate products are rounded.
REL_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def _rel_err(a, b, floor=1e-30):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(floor)).item()


def run_op(impl, inp, form, *, grad_P=False):
    """Output and gradients (h, E, w, bias[, P]) of one call."""
    leaves = {k: inp[k].detach().clone().requires_grad_(True) for k in ("h", "E", "w", "bias")}
    labels = inp["labels"]
    if form == "dense" and grad_P:
        labels = labels.detach().clone().requires_grad_(True)
        leaves["P"] = labels
    out = softlabel_proj(leaves["h"], labels, leaves["E"], leaves["w"], leaves["bias"],
                         inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"], impl=impl)
    names = list(leaves)
    grads = torch.autograd.grad(out, [leaves[n] for n in names], inp["grad_out"])
    return out, dict(zip(names, grads))


def check_against_ref(impl, B, C, F, K, form, dtype, device, seed, grad_P=True):
    inp = make_inputs(B, C, F, K, form, dtype, device, seed)
    out, grads = run_op(impl, inp, form, grad_P=grad_P)
    ref_out, ref_grads = run_op("ref", inp, form, grad_P=grad_P)
    assert out.dtype == dtype and out.shape == (B,)
    tol = REL_TOL[dtype]
    assert torch.isfinite(out).all(), f"{impl}: non-finite (unwritten?) output"
    # out sums O(1) terms that can cancel: measure against at least sqrt(B), their size
    err = _rel_err(out, ref_out, floor=B ** 0.5)
    assert err < tol, f"{impl} out: rel err {err:.2e}"
    # A weight divided by its spectral norm has a gradient G/s minus a rank-one term through s;
    # for thin matrices (w when F is small, E when C is small) the two nearly cancel, and for a
    # 1 x 1 matrix they cancel exactly. grad_h sums two terms that can cancel too. Both sides
    # round the terms before they cancel, so errors are measured against the terms' size.
    floors = _cancellation_floors(inp, C)
    for name, g in grads.items():
        r = ref_grads[name]
        assert g.shape == r.shape and g.dtype == r.dtype, name
        bad_ref = ~torch.isfinite(r)
        if bad_ref.any():
            # Half-precision overflow in the reference itself (e.g. F = 1 with a tiny |w|): the
            # fast kernels round the same parts and must overflow at the same places.
            assert torch.equal(bad_ref, ~torch.isfinite(g)), name
            g, r = g[~bad_ref], r[~bad_ref]
        assert torch.isfinite(g).all(), f"{impl}: non-finite (unwritten?) grad of {name}"
        if name == "bias":  # a sum of B signed terms can cancel: measure against |g|
            err = ((g.double() - r.double()).abs() / inp["grad_out"].double().norm()).item()
        else:
            err = _rel_err(g, r, floor=floors.get(name, 1e-30))
        assert err < tol, f"{impl} grad {name}: rel err {err:.2e} (B={B} C={C} F={F} K={K})"


def _dense_labels(labels, C):
    if isinstance(labels, tuple):
        idx, val = labels
        return torch.zeros(idx.shape[0], C, dtype=torch.float64).scatter_add_(
            1, idx.cpu(), val.cpu().double())
    if labels.is_floating_point():
        return labels.cpu().double()
    return torch.nn.functional.one_hot(labels.cpu(), C).double()


def _cancellation_floors(inp, C):
    """Size of the terms each gradient is a difference of, in float64: G/s * max(1, |W|_F/s)
    for E and w (the rank-one term through s is at most that; G summed over the batch in
    absolute value), and the two summands of grad_h."""
    d = {k: inp[k].detach().cpu().double() for k in ("h", "E", "w", "grad_out")}
    s_E, s_w = (abs(x.item()) for x in spectral_scales_ref(
        d["E"], d["w"], *(inp[k].cpu().double() for k in ("u_E", "v_E", "u_w", "v_w"))))
    P, g, h = _dense_labels(inp["labels"], C), d["grad_out"][:, None], d["h"]
    # the batch sums cancel too: their size is that of their terms, |g| |h|
    G_E = P.abs().t() @ (g * h).abs() / s_E
    G_w = (g * h).abs().sum(0) / s_w
    return dict(
        E=G_E.norm().item() * max(1.0, d["E"].norm().item() / s_E),
        w=G_w.norm().item() * max(1.0, d["w"].norm().item() / s_w),
        h=(g * (P @ d["E"])).norm().item() / s_E + (g * d["w"]).norm().item() / s_w)


def _cpu_impls():
    impls = ["cpu"]
    if why_unavailable("softlabel_proj", "triton", "cpu") is None:
        impls.append("triton")
    return impls


shapes = dict(B=st.integers(1, 40), C=st.integers(1, 40), F=st.integers(1, 80), K=st.integers(1, 6),
              seed=st.integers(0, 2**31 - 1))


# bfloat16 arithmetic is wrong under the Triton interpreter (PLATFORM.md): Triton's bfloat16
# path is covered by test_matches_reference_on_gpu.
CPU_CASES = [("cpu", torch.float32), ("cpu", torch.float16), ("cpu", torch.bfloat16),
             ("triton", torch.float32), ("triton", torch.float16)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("impl,dtype", CPU_CASES,
                         ids=[f"{i}-{str(d).split('.')[1]}" for i, d in CPU_CASES])
@given(**shapes)
@example(B=1, C=1, F=1, K=1, seed=0)
@example(B=33, C=17, F=70, K=5, seed=1)
def test_matches_reference_on_cpu(poisoned_outputs, impl, dtype, form, B, C, F, K, seed):
    why = why_unavailable("softlabel_proj", impl, "cpu", dtype)
    if HAS_GPU and impl == "triton":
        pytest.skip("Triton runs natively on this GPU machine: see the GPU test")
    assert why is None, f"{impl} must be available in every CPU test run: {why}"
    check_against_ref(impl, B, C, F, K, form, dtype, "cpu", seed)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_gradcheck_float64(impl, form):
    inp = make_inputs(5, 4, 7, 3, form, torch.float64, "cpu", seed=3)
    tensors = [inp[k].detach().clone().requires_grad_(True) for k in ("h", "E", "w", "bias")]
    labels = inp["labels"]
    if form == "dense":
        tensors.append(labels.detach().clone().requires_grad_(True))

    def f(h, E, w, bias, *P):
        return softlabel_proj(h, P[0] if P else labels, E, w, bias, inp["u_E"], inp["v_E"],
                              inp["u_w"], inp["v_w"], impl=impl)

    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradient_flows_through_spectral_norm():
    """The rank-one term of grad_E (from ds_E/dE = u v^T) is present: dropping it would
    make the fast result differ from autograd through s = u^T E v by a lot."""
    inp = make_inputs(8, 6, 10, 1, "dense", torch.float64, "cpu", seed=5)
    _, grads = run_op("cpu", inp, "dense")
    E = inp["E"].detach().clone().requires_grad_(True)
    s_E = inp["u_E"] @ E @ inp["v_E"]
    with torch.no_grad():
        const_s = s_E.detach()
    out_const = ((inp["labels"] @ E) * inp["h"]).sum(1) / const_s
    (g_no_s,) = torch.autograd.grad(out_const, E, inp["grad_out"])
    assert (grads["E"] - g_no_s).norm() > 1e-3 * g_no_s.norm()


def test_mixed_dtypes_are_cast_to_h_dtype():
    """Under autocast h is half while the parameters stay float32: the op computes in h's dtype
    and returns float32 gradients for float32 parameters."""
    inp = make_inputs(6, 5, 9, 2, "dense", torch.float32, "cpu", seed=7)
    h16 = inp["h"].half().requires_grad_(True)
    E = inp["E"].clone().requires_grad_(True)
    out = softlabel_proj(h16, inp["labels"], E, inp["w"], inp["bias"], inp["u_E"], inp["v_E"],
                         inp["u_w"], inp["v_w"], impl="cpu")
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert E.grad.dtype == torch.float32 and h16.grad.dtype == torch.float16
    ref = softlabel_proj_ref(h16, inp["labels"].half(), inp["E"].half(), inp["w"].half(),
                             inp["bias"].half(), inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"])
    assert _rel_err(out, ref) < REL_TOL[torch.float16]


def test_return_scales_are_the_spectral_norms():
    inp = make_inputs(4, 6, 9, 1, "hard", torch.float64, "cpu", seed=11)
    for impl in ("ref", "cpu"):
        _, s = softlabel_proj(inp["h"], inp["labels"], inp["E"], inp["w"], inp["bias"], inp["u_E"],
                              inp["v_E"], inp["u_w"], inp["v_w"], impl=impl, return_scales=True)
        svals = torch.linalg.svdvals(inp["E"])
        # the vectors come from 3 power-iteration steps: s_E is close to, and below, sigma_max
        assert s.dtype == torch.float64 and s.shape == (2,)
        assert abs(s[0].item() - svals[0].item()) < 0.05 * svals[0].item()
        assert abs(s[1].item() - inp["w"].norm().item()) < 1e-6  # vectors are float32-accurate


def test_topk_with_duplicate_indices_equals_dense():
    inp = make_inputs(7, 5, 12, 4, "topk", torch.float64, "cpu", seed=2)
    idx, val = inp["labels"]
    idx = idx.clone()
    idx[:, 1] = idx[:, 0]  # every row repeats a class
    P = torch.zeros(7, 5, dtype=torch.float64).scatter_add_(1, idx, val)
    args = (inp["E"], inp["w"], inp["bias"], inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"])
    for impl in ["ref"] + _cpu_impls():
        if impl == "triton":
            continue  # float64 is not a Triton dtype
        a = softlabel_proj(inp["h"], (idx, val), *args, impl=impl)
        b = softlabel_proj(inp["h"], P, *args, impl="ref")
        assert _rel_err(a, b) < 1e-12, impl


# --- dispatch ------------------------------------------------------------------------------

def test_auto_uses_the_cpp_kernels_on_cpu():
    assert _dispatch.resolve("softlabel_proj", "auto", torch.device("cpu"), torch.float32) == "cpu"


def test_auto_falls_back_to_ref_with_one_warning(monkeypatch):
    monkeypatch.setattr(_ext, "C", None)
    monkeypatch.setattr(_ext, "C_ERROR", "extension sgan_fast._C failed to import: simulated")
    monkeypatch.setattr(_dispatch, "_warned", set())
    monkeypatch.setattr(_dispatch, "_resolved", {})
    inp = make_inputs(3, 4, 5, 1, "dense", torch.float32, "cpu", seed=0)
    args = (inp["h"], inp["labels"], inp["E"], inp["w"], inp["bias"], inp["u_E"], inp["v_E"],
            inp["u_w"], inp["v_w"])
    with pytest.warns(RuntimeWarning, match="falling back to the slow reference.*simulated"):
        out = softlabel_proj(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softlabel_proj(*args)  # second call: no second warning
    assert torch.equal(out, softlabel_proj_ref(*args))
    with pytest.raises(RuntimeError, match="impl='cpu' is unavailable.*simulated"):
        softlabel_proj(*args, impl="cpu")


@pytest.mark.skipif(HAS_GPU, reason="checks the message given on a machine without a GPU")
def test_explicit_cuda_without_gpu_raises():
    inp = make_inputs(3, 4, 5, 1, "dense", torch.float32, "cpu", seed=0)
    with pytest.raises(RuntimeError, match="impl='cuda' is unavailable"):
        softlabel_proj(inp["h"], inp["labels"], inp["E"], inp["w"], inp["bias"], inp["u_E"],
                       inp["v_E"], inp["u_w"], inp["v_w"], impl="cuda")


# --- bad input -------------------------------------------------------------------------------

def _good(form="dense"):
    inp = make_inputs(4, 6, 8, 3, form, torch.float32, "cpu", seed=0)
    return dict(h=inp["h"], labels=inp["labels"], E=inp["E"], w=inp["w"], bias=inp["bias"],
                u_E=inp["u_E"], v_E=inp["v_E"], u_w=inp["u_w"], v_w=inp["v_w"])


def _call(kw, impl="cpu"):
    return softlabel_proj(kw["h"], kw["labels"], kw["E"], kw["w"], kw["bias"], kw["u_E"], kw["v_E"],
                          kw["u_w"], kw["v_w"], impl=impl)


BAD = [
    ("h 3-D", "dense", lambda k: k.update(h=k["h"][None]), ValueError, r"h has shape .*\[B, F\]"),
    ("h int", "dense", lambda k: k.update(h=k["h"].long()), TypeError, "h has dtype int64"),
    ("E wrong F", "dense", lambda k: k.update(E=k["E"][:, :5]), ValueError, r"E has shape \(6, 5\)"),
    ("w wrong", "dense", lambda k: k.update(w=k["w"][:3]), ValueError, "w has shape"),
    ("bias 2 el", "dense", lambda k: k.update(bias=torch.zeros(2)), ValueError, "bias has shape"),
    ("P wrong C", "dense", lambda k: k.update(labels=k["labels"][:, :5]), ValueError,
     r"labels \(dense class probabilities P\) has shape \(4, 5\)"),
    ("P NaN", "dense", lambda k: k["labels"].__setitem__((2, 1), float("nan")), ValueError,
     r"labels \(dense P\) contain a non-finite value at \[2, 1\]"),
    ("y int32", "hard", lambda k: k.update(labels=k["labels"].int()), TypeError, "int32.*long"),
    ("y too big", "hard", lambda k: k["labels"].__setitem__(1, 6), IndexError,
     r"label y at \[1\] is 6, outside \[0, C=6\)"),
    ("y negative", "hard", lambda k: k["labels"].__setitem__(0, -1), IndexError, "is -1, outside"),
    ("topk idx big", "topk", lambda k: k["labels"][0].__setitem__((3, 2), 99), IndexError,
     r"top-k label index at \[3, 2\] is 99"),
    ("topk shapes", "topk", lambda k: k.update(labels=(k["labels"][0], k["labels"][1][:, :2])),
     ValueError, "top-k label values has shape"),
    ("topk idx float", "topk", lambda k: k.update(labels=(k["labels"][0].float(), k["labels"][1])),
     TypeError, "indices have dtype float32"),
    ("labels str", "dense", lambda k: k.update(labels="cat"), TypeError, "labels must be a tensor"),
    ("u_E wrong", "dense", lambda k: k.update(u_E=k["u_E"][:2]), ValueError, "u_E has shape"),
    ("v_w NaN", "dense", lambda k: k["v_w"].__setitem__(0, float("inf")), ValueError,
     "v_w contains a non-finite value"),
    ("s_E zero", "dense", lambda k: k.update(u_E=torch.zeros(6)), ValueError,
     "spectral norms must be finite and non-zero, got s_E=0.0"),
    ("s_E inf", "dense", lambda k: k["E"].__setitem__((0, 0), float("inf")), ValueError,
     "spectral norms must be finite"),
    ("device", "dense", lambda k: k.update(E=k["E"].to("meta")), ValueError, "E is on meta"),
]


@pytest.mark.parametrize("impl", ["ref", "cpu"])
@pytest.mark.parametrize("name,form,mutate,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_a_clear_message(impl, name, form, mutate, exc, match):
    kw = _good(form)
    mutate(kw)
    with pytest.raises(exc, match=match):
        _call(kw, impl)


def test_unknown_impl():
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        _call(_good(), impl="fast")


def test_topk_values_requiring_grad_are_refused_by_fused_kernels():
    kw = _good("topk")
    idx, val = kw["labels"]
    kw["labels"] = (idx, val.clone().requires_grad_(True))
    with pytest.raises(ValueError, match="top-k label values do not get gradients"):
        _call(kw, "cpu")


# --- GPU -------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("impl", ["cuda", "triton"])
@given(B=st.integers(1, 300), C=st.integers(1, 300), F=st.integers(1, 600), K=st.integers(1, 9),
       seed=st.integers(0, 2**31 - 1))
@example(B=256, C=1000, F=1536, K=8, seed=0)
@example(B=1, C=1, F=1, K=1, seed=0)
def test_matches_reference_on_gpu(poisoned_outputs, impl, dtype, form, B, C, F, K, seed):
    check_against_ref(impl, B, C, F, K, form, dtype, "cuda", seed)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_gpu_large_batch_and_many_classes(impl):
    """Grid limits and 64-bit offsets: B * C past 2^31 would need int64 indexing in dense;
    here top-k with many classes and a big batch."""
    check_against_ref(impl, 70000, 8142, 64, 4, "topk", torch.float32, "cuda", seed=1,
                      grad_P=False)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_gpu_out_of_range_index_without_checks_is_memory_safe(impl):
    inp = make_inputs(64, 10, 32, 2, "topk", torch.float32, "cuda", seed=0)
    idx, val = inp["labels"]
    idx = idx.clone()
    idx[0, 0], idx[1, 1] = 10**9, -(10**9)
    out = softlabel_proj(inp["h"], (idx, val), inp["E"], inp["w"], inp["bias"], inp["u_E"],
                         inp["v_E"], inp["u_w"], inp["v_w"], impl=impl, check=False)
    torch.cuda.synchronize()  # an illegal access would raise here
    assert out.shape == (64,)


def test_poisoning_fixture_fills_fresh_outputs_with_nan(poisoned_outputs):
    """The mechanism the comparisons above rely on to catch unwritten output elements."""
    assert torch.isnan(torch.empty(5)).all()
    assert torch.isnan(torch.empty_like(torch.zeros(2, 3, dtype=torch.float16))).all()


@pytest.mark.parametrize("impl", _cpu_impls())
def test_non_contiguous_inputs(impl):
    """Strided views (a transposed embedding as BigGAN stores it, a sliced batch) are accepted."""
    inp = make_inputs(8, 5, 6, 1, "hard", torch.float32, "cpu", seed=4)
    h = torch.stack([inp["h"], inp["h"]], 2)[:, :, 0]
    E_t = inp["E"].t().contiguous().t()
    y = torch.stack([inp["labels"], inp["labels"]], 1)[:, 0]
    assert not (h.is_contiguous() or E_t.is_contiguous() or y.is_contiguous())
    args = (inp["w"], inp["bias"], inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"])
    a = softlabel_proj(h, y, E_t, *args, impl=impl)
    b = softlabel_proj_ref(inp["h"], inp["labels"], inp["E"], *args)
    assert _rel_err(a, b, floor=8 ** 0.5) < REL_TOL[torch.float32]


# --- the host path: checks in C++, one dispatcher call per direction --------------------------

# BAD cases a value check (check=True, a device sync) catches; the rest are shapes, dtypes and
# devices, which the C++ entry point checks on every call.
VALUE_CASES = {"P NaN", "y too big", "y negative", "topk idx big", "v_w NaN", "s_E zero", "s_E inf"}


@pytest.mark.skipif(_ext.C is None, reason="needs the compiled extension")
@pytest.mark.parametrize("name,form,mutate,exc,match",
                         [b for b in BAD if b[0] not in VALUE_CASES and b[0] != "labels str"],
                         ids=[b[0] for b in BAD if b[0] not in VALUE_CASES and b[0] != "labels str"])
def test_cpp_entry_point_names_bad_arguments_without_value_checks(name, form, mutate, exc, match):
    kw = _good(form)
    mutate(kw)
    with pytest.raises(exc, match=match):
        softlabel_proj(kw["h"], kw["labels"], kw["E"], kw["w"], kw["bias"], kw["u_E"], kw["v_E"],
                       kw["u_w"], kw["v_w"], impl="cpu", check=False)


@pytest.mark.skipif(_ext.C is None, reason="needs the compiled extension")
@pytest.mark.parametrize("name", sorted(VALUE_CASES - {"s_E zero", "s_E inf", "v_w NaN", "P NaN"}))
def test_out_of_range_labels_without_checks_are_clamped_not_read_out_of_bounds(name):
    form, mutate = next((b[1], b[2]) for b in BAD if b[0] == name)
    kw = _good(form)
    mutate(kw)
    out = softlabel_proj(kw["h"], kw["labels"], kw["E"], kw["w"], kw["bias"], kw["u_E"], kw["v_E"],
                         kw["u_w"], kw["v_w"], impl="cpu", check=False)
    assert out.shape == (4,) and torch.isfinite(out).all()


def _top_level_ops(fn):
    """Names of the profiler's top-level CPU events of one call (ops not called by another op)."""
    from torch.profiler import profile
    with profile() as prof:
        fn()
    return [e.name for e in prof.events() if e.cpu_parent is None]


@pytest.mark.skipif(_ext.C is None, reason="needs the compiled extension")
@pytest.mark.parametrize("form", FORMS + ("bank",))
def test_an_eager_call_is_one_dispatcher_call_per_direction(form):
    from sgan_fast.labels import SoftLabelBank
    inp = make_inputs(6, 5, 7, 2, "dense" if form == "bank" else form, torch.float32, "cpu", seed=3)
    leaves = [inp[k].detach().clone().requires_grad_(True) for k in ("h", "E", "w", "bias")]
    labels = inp["labels"]
    if form == "bank":
        bank = SoftLabelBank(torch.softmax(torch.randn(20, 5), 1), torch.randint(0, 5, (20,)))
        labels = bank.labels(torch.randint(0, 20, (6,)), "mix:0.7")
    args = (*leaves[:1], labels, *leaves[1:], inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"])
    holder = {}

    def forward():
        holder["out"] = softlabel_proj(*args, impl="cpu", check=False)

    forward()  # first calls fill caches (the bank's tables in h's dtype, empty index tensors)
    holder["out"].backward(inp["grad_out"])
    assert _top_level_ops(forward) == ["sgan_fast::softlabel_proj"]
    events = _top_level_ops(lambda: holder["out"].backward(inp["grad_out"]))
    nodes = [e for e in events if e.startswith("autograd::engine::evaluate_function")
             and "AccumulateGrad" not in e]
    assert len(nodes) == 1 and "CppNode" in nodes[0], events
    ref = softlabel_proj(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args],
                         impl="ref")
    torch.testing.assert_close(holder["out"].detach(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(_ext.C is None, reason="needs the compiled extension")
def test_no_bias_and_a_1xF_linear_weight():
    """bias=None gets no gradient; w may be [1, F] as an SNLinear(F, 1) stores it, and its
    gradient keeps that shape."""
    inp = make_inputs(5, 4, 6, 1, "dense", torch.float64, "cpu", seed=5)
    for impl in ("ref", "cpu"):
        h = inp["h"].clone().requires_grad_(True)
        w = inp["w"].clone().reshape(1, -1).requires_grad_(True)
        E = inp["E"].clone().requires_grad_(True)
        w_arg = w if impl == "cpu" else w.reshape(-1)
        out = softlabel_proj(h, inp["labels"], E, w_arg, None, inp["u_E"], inp["v_E"],
                             inp["u_w"], inp["v_w"], impl=impl)
        out.backward(inp["grad_out"])
        if impl == "ref":
            want = (out.detach(), h.grad, E.grad, w.grad)
        else:
            assert w.grad.shape == (1, 6)
            for a, b in zip((out.detach(), h.grad, E.grad, w.grad), want):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(_ext.C is None, reason="needs the compiled extension")
def test_float32_embedding_with_half_features_gets_a_float32_gradient():
    """The C++ op casts E, w, bias to h's dtype with autograd: their gradients come back in
    their own dtype, as through the reference's casts."""
    inp = make_inputs(5, 4, 6, 1, "dense", torch.float32, "cpu", seed=6)
    h = inp["h"].half().requires_grad_(True)
    E = inp["E"].clone().requires_grad_(True)
    out = softlabel_proj(h, inp["labels"].half(), E, inp["w"], inp["bias"], inp["u_E"],
                         inp["v_E"], inp["u_w"], inp["v_w"], impl="cpu")
    ref = softlabel_proj(h.detach(), inp["labels"].half(), E.detach(), inp["w"], inp["bias"],
                         inp["u_E"], inp["v_E"], inp["u_w"], inp["v_w"], impl="ref")
    out.float().sum().backward()
    assert out.dtype == torch.float16 and E.grad.dtype == torch.float32 and h.grad.dtype == torch.float16
    assert _rel_err(out, ref, floor=5 ** 0.5) < REL_TOL[torch.float16]
