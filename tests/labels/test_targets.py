"""Soft-label targets: every transform and lookup implementation against target_ref."""

import warnings

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from sgan_fast.labels import SoftLabelBank, Target, target_ref
from sgan_fast.labels.targets import ols_table
from sgan_fast.ops import why_unavailable

from ._banks import random_bank

TARGETS = ["onehot", "softmax", "softmax:0.5", "softmax:2", "smooth:0.1", "ols", "mix:0.7",
           "softmax+topk:2", "mix:0.3+topk:3", "smooth:0.2+topk:2", "ols+topk:1", "onehot+topk:4"]
# |lookup - ref| bound: tables are kept in the bank's dtype, so one rounding of a value <= 1
ABS_TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _impls(dtype):
    out = ["ref", "cpu"]
    # bfloat16 arithmetic is wrong under the Triton interpreter (PLATFORM.md)
    if why_unavailable("bank_lookup", "triton", "cpu", dtype) is None and dtype != torch.bfloat16:
        out.append("triton")
    return out


def _expected(bank, target, sel):
    otk = bank.k if bank.form == "topk" else None
    return target_ref(bank.dense_probabilities(), bank.labels_tensor, target, ols_topk=otk)[sel]


def _sparse_to_dense(idx, val, C):
    return torch.zeros(idx.shape[0], C, dtype=torch.float64).scatter_add_(1, idx, val.double())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", ["dense", "topk"])
@given(N=st.integers(1, 40), C=st.integers(1, 12), K=st.integers(1, 6), B=st.integers(1, 20),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 2**31 - 1))
@example(N=1, C=1, K=1, B=1, dtype=torch.float32, seed=0)
def test_lookup_matches_reference(poisoned_outputs, target, form, N, C, K, B, dtype, seed):
    bank = random_bank(N, C, form=form, K=K, dtype=dtype, seed=seed)
    sel = torch.randint(0, N, (B,), generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ols fallbacks
        ref = _expected(bank, target, sel)
        plan = bank.plan(target)
    for impl in _impls(dtype):
        q = bank.lookup(sel, target, out="dense", impl=impl)
        assert q.shape == (B, C) and q.dtype == plan.dtype
        err = (q.double() - ref).abs().max().item()
        assert err <= ABS_TOL[dtype], f"{impl} dense: max err {err:.2e}"
        if plan.form == "topk":
            idx, val = bank.lookup(sel, target, out="sparse", impl=impl)
            assert idx.dtype == torch.int64 and idx.shape == val.shape == (B, plan.k)
            err = (_sparse_to_dense(idx, val, C) - ref).abs().max().item()
            assert err <= ABS_TOL[dtype], f"{impl} sparse: max err {err:.2e}"
            if plan.beta != 0:
                # the label's entry comes last; its weight is merged into the table's entry of
                # the same class when there is one, leaving (y, 0)
                y = bank.labels_tensor[sel]
                assert torch.equal(idx[:, -1], y)
                in_table = (idx[:, :-1] == y[:, None]).any(1)
                assert torch.equal(val[:, -1] == 0, in_table)


def test_targets_are_distributions_and_smooth_is_normalised():
    bank = random_bank(30, 6, seed=3)
    for target in TARGETS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = target_ref(bank.dense_probabilities(), bank.labels_tensor, target)
        assert torch.allclose(q.sum(1), torch.ones(30, dtype=torch.float64)), target
        assert (q >= 0).all(), target
    # the reference implementation's smooth sums to 1 - a/C; ours is normalised
    q = bank.lookup(torch.arange(30), "smooth:0.3", out="dense", impl="cpu")
    y = bank.labels_tensor
    assert torch.allclose(q[torch.arange(30), y], torch.full((30,), 0.7 + 0.3 / 6))


def test_ols_is_mean_of_correctly_classified_rows_with_onehot_fallback():
    # class 0: rows 0 and 1 correct, row 2 wrong; class 1: never correct; class 2: row 4
    P = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                      [0.9, 0.05, 0.05], [0.1, 0.2, 0.7]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 2])
    with pytest.warns(RuntimeWarning, match=r"1 class\(es\) right \(1\)"):
        table = ols_table(P, y, 3)
    assert torch.allclose(table[0], torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64))
    assert torch.equal(table[1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(table[2], P[4])
    bank = SoftLabelBank(P.float(), y)
    with pytest.warns(RuntimeWarning, match="one-hot"):
        q = bank.lookup(torch.tensor([3, 0]), "ols", impl="cpu")
    assert torch.allclose(q.double(), table[[1, 0]], atol=1e-6)


def test_topk_truncation_breaks_ties_by_lower_class():
    P = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    bank = SoftLabelBank(P, torch.tensor([3]))
    q = bank.lookup(torch.tensor([0]), "softmax+topk:2", out="dense", impl="cpu")
    assert torch.equal(q, torch.tensor([[0.5, 0.5, 0.0, 0.0]]))


def test_logits_bank_softmax_with_temperature():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    bank = SoftLabelBank(z, y, kind="logits")
    q = bank.lookup(torch.arange(8), "softmax:0.5", impl="cpu")
    assert torch.allclose(q, torch.softmax(z / 0.5, 1), atol=1e-6)
    # p^(1/t) on the probabilities of the same logits is the same distribution
    pbank = SoftLabelBank(torch.softmax(z.double(), 1).float(), y)
    assert torch.allclose(pbank.lookup(torch.arange(8), "softmax:0.5", impl="cpu"), q, atol=1e-5)


@pytest.mark.parametrize("spec,expect", [
    ("softmax", Target("softmax", 1.0)), ("softmax:0.5", Target("softmax", 0.5)),
    ("smooth", Target("smooth", 0.1)), ("mix:0.7+topk:8", Target("mix", 0.7, 8)),
    ("ols+topk:3", Target("ols", None, 3)), ("onehot", Target("onehot"))])
def test_target_parse(spec, expect):
    assert Target.parse(spec) == expect
    assert Target.parse(str(expect)) == expect


@pytest.mark.parametrize("spec,match", [
    ("soft", "unknown target"), ("softmax:0", "positive"), ("smooth:1.5", r"\[0, 1\]"),
    ("mix:x", "not a number"), ("mix:0.5+topk", "topk needs a count"), ("ols:0.3", "no parameter"),
    ("softmax+mix", "two kinds"), ("softmax+topk:0", "positive integer")])
def test_target_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        Target.parse(spec)
