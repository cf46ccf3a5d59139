"""benchmarks/bench_host.py: every case and provider measured, ratios and targets computed
from the rows of the same run (speed itself is never asserted here)."""

import importlib.util
import math
import os

import pytest

from sgan_fast import _ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _load():
    path = os.path.join(HERE, "..", "benchmarks", "bench_host.py")
    spec = importlib.util.spec_from_file_location("bench_host", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(_ext.C is None, reason="needs the compiled extension")
def test_quick_cpu_run_writes_every_row_and_the_target_table(tmp_path):
    bench = _load()
    csv_path, md_path = tmp_path / "host.csv", tmp_path / "host.md"
    rows = bench.main(["--reps", "1", "--calls", "5", "--csv", str(csv_path),
                       "--md", str(md_path)])
    seen = {(r["case"], r["provider"], r["direction"]) for r in rows}
    for case in bench.CASES:
        providers = ("torch",) if case == "matmul" else ("fused", "ref")
        directions = ("fwd",) if case.startswith("bank_lookup") else ("fwd", "fwd_bwd")
        for p in providers:
            for d in directions:
                assert (case, p, d) in seen, (case, p, d)
    assert ("sn_biggan32", "torch_param", "fwd_bwd") in seen
    assert all(r["median_us"] > 0 and math.isfinite(r["median_us"]) for r in rows)
    assert all(r["p20_us"] <= r["median_us"] <= r["p80_us"] for r in rows)
    assert all(r["wall_median_us"] > 0 for r in rows)
    # the targets come from this run's rows: the ratios of its own medians
    med = {(r["case"], r["provider"], r["direction"]): r["median_us"] for r in rows}
    targets = {t[0]: t for t in bench.targets(rows)}
    assert len(targets) == 4
    want = med[("head", "fused", "fwd_bwd")] / med[("matmul", "torch", "fwd_bwd")]
    assert targets["head fwd_bwd / matmul fwd_bwd"][2] == f"{want:.2f}"
    want = med[("sn_biggan32", "fused", "fwd")] / med[("sn_biggan32", "torch_param", "fwd")]
    assert targets["BigGAN-32 SN update fwd / torch_param"][2] == f"{want:.2f}"
    table = md_path.read_text()
    assert "| head | fwd_bwd |" in table and "| target | wanted | measured | met |" in table
    header = csv_path.read_text().splitlines()[0]
    assert header.startswith("device,gpu,threads,case,provider,direction,median_us")


def test_unknown_case_is_refused():
    bench = _load()
    with pytest.raises(SystemExit, match="unknown cases"):
        bench.main(["--cases", "nope", "--csv", os.devnull])
