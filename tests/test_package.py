"""The installed package: extension built as expected, info, CLI, layout."""

import io
import os
import subprocess
import sys

import pytest
import torch

import sgan_fast
from sgan_fast import _ext


def test_extension_imports():
    assert _ext.C is not None, _ext.C_ERROR


@pytest.mark.skipif(os.environ.get("SGAN_FAST_EXPECT_CUDA") != "1",
                    reason="set SGAN_FAST_EXPECT_CUDA=1 where the CUDA kernels must have been built "
                           "(.ci/run does)")
def test_cuda_kernels_were_compiled():
    assert _ext.CUDA_COMPILED, "sgan_fast._C was built without its CUDA kernels"
    assert _ext.C.cuda_version().startswith("13"), _ext.C.cuda_version()


def test_info_says_why_each_implementation_is_unavailable():
    buf = io.StringIO()
    facts = sgan_fast.info(file=buf)
    text = buf.getvalue()
    assert f"torch {torch.__version__}" in text
    impls = facts["ops"]["softlabel_proj"]["impls"]
    assert impls["ref"]["cpu"] is None and impls["cpu"]["cpu"] is None
    assert impls["cuda"]["cpu"] is not None  # CUDA kernels never take CPU tensors
    if not torch.cuda.is_available():
        assert "no GPU" in impls["cuda"]["cpu"] or "built without CUDA" in impls["cuda"]["cpu"]
        assert "auto -> cpu: cpu" in text
    for impl, per_dev in impls.items():
        for dev, why in per_dev.items():
            line = f"{impl:<7} on {dev:<5} " + ("available" if why is None else "unavailable: " + why)
            assert line in text


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_cli_check_head_reports_the_implementation_and_matches_reference():
    r = _run("-m", "sgan_fast.cli", "check-head", "--device", "cpu", "--batch", "16")
    assert r.returncode == 0, r.stderr
    assert "implementation that ran: cpu" in r.stdout
    diff = float(r.stdout.split("(eval mode): ")[1].split()[0])
    assert diff < 1e-5


def test_cli_info_runs_as_console_script_module():
    r = _run("-m", "sgan_fast.cli", "info")
    assert r.returncode == 0, r.stderr
    assert "op softlabel_proj" in r.stdout


def test_kernels_are_a_subpackage_not_a_top_level_name(tmp_path):
    code = ("import importlib.util as u, sgan_fast.kernels.softlabel_proj as k; "
            "print(u.find_spec('kernels') is None, k.__name__)")
    r = _run("-c", code, cwd=tmp_path)  # outside the source tree
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "sgan_fast.kernels.softlabel_proj"]


def test_info_says_where_inception_weights_come_from(monkeypatch, tmp_path):
    monkeypatch.setenv("SGAN_FAST_INCEPTION", str(tmp_path / "mine.pt"))
    buf = io.StringIO()
    assert sgan_fast.info(file=buf)["inception_weights"] == str(tmp_path / "mine.pt")
    assert f"Inception weights for FID: {tmp_path / 'mine.pt'}" in buf.getvalue()
    from sgan_fast.metrics import features
    monkeypatch.delenv("SGAN_FAST_INCEPTION")
    monkeypatch.setattr(features, "shipped_torchscript", lambda: None)
    buf = io.StringIO()
    assert sgan_fast.info(file=buf)["inception_weights"] is None
    assert "none found (see docs/eval.md)" in buf.getvalue()
