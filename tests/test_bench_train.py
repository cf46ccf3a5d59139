"""benchmarks/bench_train.py end to end on the CPU tiny case (reference and fast, eager, and the
fast path compiled whole, with its graph, graph-break and recompile counts)."""

import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_train.py")
COLUMNS = ["provider", "case", "resolution", "ch", "batch", "d_steps", "num_classes",
           "num_images", "precision", "channels_last", "compiled", "compile_scope", "impl",
           "graphs", "graph_breaks", "recompiles_per_step", "steps", "reps",
           "warmup_steps", "warmup_s", "first_step_s", "step_median_ms", "step_p20_ms",
           "step_p80_ms", "wall_ms", "images_per_s", "d_steps_per_s", "g_steps_per_s",
           "x_reference", "x_reference_compiled", "gflop_per_step", "achieved_tflops", "mfu",
           "peak_tflops", "peak_source", "matmul_tflops", "flops_source", "peak_mem_gib", "tf32",
           "note", "device", "torch", "cuda", "triton", "date"]


def _run(cmd, out, columns, *, timeout):
    """Runs the benchmark command; (the finished process, the CSV rows it wrote), after
    checking that it succeeded and that the CSV has exactly `columns`."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == columns
        return proc, list(reader)


@pytest.mark.slow
def test_bench_train_tiny_cpu(tmp_path):
    out, md = tmp_path / "train.csv", tmp_path / "table.md"
    cmd = [sys.executable, SCRIPT, "--device", "cpu", "--cases", "tiny", "--providers",
           "fast_whole", "fast", "reference", "--steps", "1", "--reps", "2", "--max-warmup", "2",
           "--peak-tflops", "1", "--out", str(out), "--md", str(md)]
    # fast_whole compiles G and D (inductor; about a minute cold on 2 cores)
    _, rows = _run(cmd, out, COLUMNS, timeout=600)
    # the baseline runs first whatever the order asked for, so every ratio is known
    assert [r["provider"] for r in rows] == ["reference", "fast", "fast_whole"]
    by = {r["provider"]: r for r in rows}
    for r in rows:
        assert r["note"] == "" and r["case"] == "tiny"
        assert (r["resolution"], r["ch"], r["batch"], r["d_steps"]) == ("32", "8", "8", "2")
        for k in ("images_per_s", "d_steps_per_s", "g_steps_per_s", "step_median_ms",
                  "gflop_per_step", "achieved_tflops", "mfu", "x_reference"):
            assert float(r[k]) > 0, (r["provider"], k, r[k])
        med = float(r["step_median_ms"])
        assert float(r["step_p20_ms"]) <= med <= float(r["step_p80_ms"])
        assert float(r["images_per_s"]) == pytest.approx(8 * 2 / (med / 1e3), rel=1e-2)
        assert float(r["d_steps_per_s"]) == pytest.approx(2 * float(r["g_steps_per_s"]), rel=1e-2)
        # --peak-tflops 1: MFU is the achieved TFLOP/s itself
        assert float(r["mfu"]) == pytest.approx(float(r["achieved_tflops"]), rel=1e-2, abs=1e-5)
        assert r["x_reference_compiled"] == ""       # not run
        assert r["precision"] == "fp32"
    for p in ("reference", "fast"):                    # eager: no compile counts
        r = by[p]
        assert r["compiled"] == "no" and r["compile_scope"] == ""
        assert r["graphs"] == r["graph_breaks"] == r["recompiles_per_step"] == ""
    # the whole-model regions: one graph per signature (G with and without grad, D in D steps
    # and in G steps), no graph break, and no recompile once warm (2 warm-up steps)
    w = by["fast_whole"]
    assert (w["compiled"], w["compile_scope"], w["impl"]) == ("default", "whole", "auto")
    assert int(w["graph_breaks"]) == 0, w
    assert int(w["graphs"]) == 4, w
    assert float(w["recompiles_per_step"]) == 0.0, w
    assert float(by["reference"]["x_reference"]) == 1.0
    assert by["reference"]["impl"] == "ref" and by["fast"]["impl"] == "auto"
    ratio = float(by["fast"]["images_per_s"]) / float(by["reference"]["images_per_s"])
    assert float(by["fast"]["x_reference"]) == pytest.approx(ratio, rel=1e-2)
    # the same model: one FLOP count, from the reference's step, for both
    assert by["fast"]["gflop_per_step"] == by["reference"]["gflop_per_step"]
    assert "reference train_step on cpu, batch 8" in by["fast"]["flops_source"]
    table = md.read_text()
    assert table.startswith("| case | provider |") and table.count("\n| tiny |") == 3
    assert "| tiny | fast_whole | fp32 | default (whole) | 4 | 0 | 0.00 |" in table


SCALING_COLUMNS = ["provider", "case", "nproc", "per_rank_batch", "global_batch", "d_steps",
                   "backend", "steps", "reps", "warmup_steps", "step_median_ms", "step_p20_ms",
                   "step_p80_ms", "images_per_s", "scaling_efficiency", "graphs", "graph_breaks",
                   "note", "device", "torch", "cuda", "date"]


@pytest.mark.slow
def test_bench_train_nproc_sweeps_one_and_two_gloo_ranks(tmp_path):
    out = tmp_path / "scaling.csv"
    cmd = [sys.executable, SCRIPT, "--device", "cpu", "--cases", "tiny", "--nproc", "2",
           "--steps", "1", "--reps", "2", "--max-warmup", "1", "--out", str(out)]
    proc, rows = _run(cmd, out, SCALING_COLUMNS, timeout=300)
    assert [(r["provider"], r["nproc"], r["global_batch"]) for r in rows] == \
        [("fast", "1", "8"), ("fast", "2", "16")]          # weak scaling: 8 per rank
    assert [r["backend"] for r in rows] == ["none", "gloo"]
    ips = []
    for r in rows:
        assert not r["note"].startswith("FAILED"), (r["note"], proc.stdout[-3000:], proc.stderr[-3000:])
        med = float(r["step_median_ms"])
        assert float(r["step_p20_ms"]) <= med <= float(r["step_p80_ms"])
        ips.append(float(r["images_per_s"]))
        assert ips[-1] == pytest.approx(int(r["global_batch"]) * 2 / (med / 1e3), rel=1e-2)
        assert "not a speed claim" in r["note"]
    assert float(rows[0]["scaling_efficiency"]) == 1.0
    assert float(rows[1]["scaling_efficiency"]) == pytest.approx(ips[1] / (2 * ips[0]), rel=1e-3)
