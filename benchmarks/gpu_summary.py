"""One table of target vs measured for the GPU proof (`bash benchmarks/run_gpu.sh validate*`).

    python benchmarks/gpu_summary.py OUT [OUT2 OUT3 ...] [--md summary.md]

Reads what the validate stages leave in their output folders (each call of the device
machine gets its own; pass all of them to see the whole proof in one table):
  steps.csv        every step's status and seconds (run_gpu.sh)
  env.txt          GPU, driver, Python / torch / CUDA / triton versions, date
  gpu_tests.xml    pytest -m gpu (junit XML; gpu_tests.log when the XML is missing)
  proj.csv         bench_softlabel_proj.py      bank.csv   bench_bank.py
  data.csv         bench_data.py                host.csv   bench_host.py
  spectral_norm.csv  bench_spectral_norm.py     train.csv  bench_train.py
  fmnist/classify/report.json, fmnist/train/log.csv, fmnist/eval/report.json
Anything missing shows as "not measured" with the step's status (timed out, failed,
skipped, not run). Speed-ups are of the fastest fused provider in the same run, on eager
medians (what a training loop sees; CUDA-graph medians, the GPU time alone, in brackets).
Uses the standard library only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

NOT = "not measured"


class Inputs:
    """The files of one or more output folders; CSV rows are concatenated in folder order,
    single files are taken from the last folder that has them."""

    def __init__(self, dirs):
        self.dirs = [d for d in dirs]
        self.steps = {}
        for row in self.csv("steps.csv"):
            self.steps[row.get("name", "")] = row

    def path(self, rel):
        found = None
        for d in self.dirs:
            p = os.path.join(d, rel)
            if os.path.exists(p):
                found = p
        return found

    def csv(self, rel):
        rows = []
        for d in self.dirs:
            p = os.path.join(d, rel)
            if os.path.exists(p):
                try:
                    with open(p, newline="") as f:
                        rows += list(csv.DictReader(f))
                except (OSError, csv.Error) as exc:
                    print(f"gpu_summary: cannot read {p}: {exc}", file=sys.stderr)
        return rows

    def json(self, rel):
        p = self.path(rel)
        if p is None:
            return None
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            print(f"gpu_summary: cannot read {p}: {exc}", file=sys.stderr)
            return None

    def why(self, *steps):
        """Why a value is missing: the first of these steps that did not end well."""
        for s in steps:
            row = self.steps.get(s)
            if row is None:
                return f"{NOT} ({s}: not run)"
            if row.get("status") != "ok":
                return f"{NOT} ({s}: {row.get('status')})"
        return f"{NOT} (no matching rows)"


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None   # NaN -> None


def last_by(rows, key):
    """The last row for each key (a rerun into the same folder supersedes earlier rows)."""
    out = {}
    for r in rows:
        out[key(r)] = r
    return out


def verdict(value, target):
    return "-" if value is None else ("pass" if value >= target else "FAIL")


def speedup(by, fast, base, field="median_us"):
    """(ratio, best provider, best time, base time) of the fastest of `fast` over `base`."""
    cand = [(num(by[p].get(field)), p) for p in fast if p in by and num(by[p].get(field))]
    b = num(by[base].get(field)) if base in by else None
    if not cand or not b:
        return None
    t, p = min(cand)
    return b / t, p, t, b


def fmt_speedup(s, base_name):
    r, p, t, b = s
    return f"{r:.2f}x ({p} {t:.1f} us vs {base_name} {b:.1f} us)"


def projection(inp):
    rows = [r for r in inp.csv("proj.csv") if r.get("dtype") == "bfloat16"]
    out = []
    fused = ("cuda", "triton")
    for form in ("dense", "topk"):
        case = [r for r in rows if r.get("form") == form and (r.get("B"), r.get("C"), r.get("F"))
                == ("256", "1000", "1536") and r.get("mode") == "fwd_bwd"]
        by = last_by(case, lambda r: r["provider"])
        for base, target, name in (("ref", 5.0, "eager reference"), ("ref_compile", 1.5, "compiled reference")):
            what = f"projection fwd+bwd vs {name}, bf16 B=256 C=1000 F=1536, {form} labels"
            s = speedup(by, fused, base)
            if s is None:
                out.append((what, f">= {target:g}x", inp.why("proj"), "-"))
                continue
            g = speedup(by, fused, base, "graph_median_us")
            extra = f"; CUDA graph {g[0]:.2f}x ({g[1]})" if g else ""
            out.append((what, f">= {target:g}x", fmt_speedup(s, base) + extra, verdict(s[0], target)))
    for form in ("dense", "topk"):
        case = [r for r in rows if r.get("form") == form and (r.get("B"), r.get("C"), r.get("F"))
                == ("1024", "1000", "1536") and r.get("mode") == "fwd_bwd"]
        by = last_by(case, lambda r: r["provider"])
        what = f"projection fwd+bwd, share of copy bandwidth (graph), B=1024 C=1000 F=1536, {form}"
        cand = [(num(by[p].get("graph_median_us")), p) for p in fused if p in by
                and num(by[p].get("graph_median_us")) and num(by[p].get("copy_gb_s"))]
        if not cand:
            out.append((what, ">= 60%", inp.why("proj"), "-"))
            continue
        p = min(cand)[1]
        frac = num(by[p].get("graph_gb_s")) / num(by[p].get("copy_gb_s"))
        out.append((what, ">= 60%", f"{100 * frac:.0f}% ({p}, {by[p]['graph_gb_s']} of "
                    f"{by[p]['copy_gb_s']} GB/s)", verdict(frac, 0.6)))
    return out


def bank(inp):
    rows = [r for r in inp.csv("bank.csv") if r.get("dtype") == "bfloat16" and r.get("C") == "1000"
            and r.get("op") == "lookup_proj" and r.get("mode") == "fwd_bwd"]
    keys = sorted({(r.get("form", ""), r.get("N", "")) for r in rows}) or [("dense", "50000"), ("topk", "50000")]
    out = []
    for form, N in keys:
        by = last_by([r for r in rows if (r.get("form"), r.get("N")) == (form, N)], lambda r: r["provider"])
        what = f"fused bank lookup + projection fwd+bwd vs compiled torch, bf16 C=1000 N={N}, {form} bank"
        s = speedup(by, ("cuda", "triton"), "torch_compile")
        if s is None:
            out.append((what, ">= 3x", inp.why("bank"), "-"))
            continue
        g = speedup(by, ("cuda", "triton"), "torch_compile", "graph_median_us")
        extra = f"; CUDA graph {g[0]:.2f}x ({g[1]})" if g else ""
        out.append((what, ">= 3x", fmt_speedup(s, "torch_compile") + extra, verdict(s[0], 3.0)))
    return out


def loader(inp):
    rows = last_by([r for r in inp.csv("data.csv") if r.get("loader") == "gpu_resident"
                    and r.get("resolution") == "32"], lambda r: r.get("output"))
    out = []
    for output in ("float", "uint8"):
        what = f"GPU-resident loader, 32 px, {output} output"
        r = rows.get(output)
        v = num(r.get("images_per_s")) if r else None
        if v is None:
            out.append((what, ">= 50000 images/s", inp.why("data"), "-"))
        else:
            out.append((what, ">= 50000 images/s", f"{v:,.0f} images/s (batch {r.get('batch')})",
                        verdict(v, 50000)))
    return out


def spectral_norm(inp):
    rows = [r for r in inp.csv("spectral_norm.csv") if r.get("layers") == "biggan128"
            and r.get("dtype") == "bfloat16" and r.get("mode") == "fwd"]
    by = last_by(rows, lambda r: r["provider"])
    out = []
    for base, target in (("torch_param", 10.0), ("biggan_loop_compile", 2.0)):
        what = f"grouped spectral-norm update vs {base}, BigGAN-128 D, bf16, eager"
        s = speedup(by, ("cuda", "triton"), base)
        if s is None:
            out.append((what, f">= {target:g}x", inp.why("spectral_norm"), "-"))
            continue
        g = speedup(by, ("cuda", "triton"), base, "graph_median_us")
        extra = f"; CUDA graph {g[0]:.2f}x ({g[1]})" if g else ""
        out.append((what, f">= {target:g}x", fmt_speedup(s, base) + extra, verdict(s[0], target)))
    return out


def training(inp):
    rows = last_by(inp.csv("train.csv"), lambda r: (r.get("case"), r.get("provider")))
    out = []
    targets = (("x_reference", "reference eager", 3.0), ("x_reference_compiled", "reference compiled", 1.5))
    for case, step in (("biggan32", "train_biggan32"), ("biggan128", "train_biggan128")):
        fast = rows.get((case, "fast"))
        provs = [p for (c, p) in rows if c == case]
        mfu = {p: num(rows[(case, p)].get("mfu")) for p in provs}
        mfu_txt = ", ".join(f"{p} {100 * v:.1f}%" for p, v in mfu.items() if v is not None)
        for col, base, target in targets:
            what = f"{case} training, fast path vs {base} (real images/s)"
            v = num(fast.get(col)) if fast else None
            if v is None:
                note = (fast or {}).get("note") or (rows.get((case, col[2:])) or {}).get("note")
                why = inp.why(step) if not note else f"{NOT} ({note[:120]})"
                out.append((what, f">= {target:g}x", why, "-"))
                continue
            txt = f"{v:.2f}x (fast {num(fast['images_per_s']):,.0f} img/s"
            txt += f"; MFU {mfu_txt})" if mfu_txt else ")"
            out.append((what, f">= {target:g}x", txt, verdict(v, target)))
        for other in provs:   # fast_whole and the like: reported beside fast when measured
            o = rows[(case, other)]
            for col, base, target in targets:
                if other.startswith("fast_") and num(o.get(col)) is not None:
                    out.append((f"{case} training, {other} vs {base} (real images/s)", f">= {target:g}x",
                                f"{num(o[col]):.2f}x ({num(o['images_per_s']):,.0f} img/s)",
                                verdict(num(o[col]), target)))
    return out


def host(inp):
    """bench_host.py: per device, the targets its markdown checks (issue #16, set for the CPU),
    then fused / ref and fused / matmul for every other case."""
    rows = inp.csv("host.csv")
    if not rows:
        return [("host overhead per call (bench_host.py)", "report", inp.why("host"), "-")]
    out = []
    for dev in sorted({r.get("device", "") for r in rows}):
        by = {}
        for r in rows:
            if r.get("device", "") == dev and num(r.get("median_us")) is not None:
                by.setdefault((r.get("case", r.get("op", "")), r.get("direction", "")), {})[
                    r.get("provider", "")] = num(r["median_us"])
        # the yardstick: one h @ w per direction, whatever its provider is called
        mm = {d: next(iter(v.values())) for (c, d), v in by.items() if c == "matmul" and v}
        checks = [("head", "fwd_bwd", "matmul", 2.0), ("head", "fwd_bwd", "ref", 0.25),
                  ("sn_biggan32", "fwd", "torch_param", 0.2), ("sn_biggan32", "fwd_bwd", "torch_param", 0.2)]
        done = set()
        for case, d, base, limit in checks:
            v = by.get((case, d), {})
            b = mm.get(d) if base == "matmul" else v.get(base)
            what = f"host ({dev}): {case} {d}, fused / {base} {'fwd_bwd ' if base == 'matmul' else ''}time"
            target = f"<= {limit:g} (issue #16, set for the CPU)"
            if not v.get("fused") or not b:
                out.append((what, target, inp.why("host"), "-"))
                continue
            x = v["fused"] / b
            done.add((case, d))
            out.append((what, target, f"{x:.2f} ({v['fused']:.1f} us vs {b:.1f} us)",
                        "pass" if x <= limit else "FAIL"))
        for (case, d), v in by.items():
            if case == "matmul" or (case, d) in done or "fused" not in v:
                continue
            cells = [f"fused {v['fused']:.1f} us"]
            if v.get("ref"):
                cells.append(f"ref {v['ref']:.1f} us (fused / ref {v['fused'] / v['ref']:.2f})")
            if mm.get(d):
                cells.append(f"fused / matmul {v['fused'] / mm[d]:.2f}")
            out.append((f"host ({dev}): {case} {d}", "report", "; ".join(cells), "-"))
    return out


def fmnist(inp):
    out = []
    rep = inp.json("fmnist/eval/report.json")
    cls = inp.json("fmnist/classify/report.json")
    log = inp.csv("fmnist/train/log.csv")
    cfg_minutes = None
    p = inp.path("fmnist/train/config.yaml")
    if p:
        m = re.search(r"^max[_-]minutes:\s*([0-9.]+)", open(p).read(), flags=re.M)
        cfg_minutes = m.group(1) if m else None
    what = "Fashion-MNIST-LT (rho 100) training run, fast path"
    parts = []
    p = inp.path("fmnist_train.log")
    text = open(p, errors="replace").read() if p else ""
    m = re.search(r"sgan-fast train: (BigGAN-\d+ ch=\d+) on (\d+) images.*?batch (\d+ x \d+) D steps, "
                  r"([^ ,]+)", text)
    if m:
        parts.append(f"{m.group(1)}, batch {m.group(3)}, {m.group(4)}")
    m = re.findall(r"sgan-fast train: (.+?) at step (\d+) \((\d+) s, (\d+) real img/s\)", text)
    status = None
    if m:
        status, step, secs, ips = m[-1]
        parts.append(f"{status} at G step {step} after {secs} s, {int(ips):,} real img/s overall")
    elif log:
        parts.append(f"G step {log[-1].get('step')} (log.csv)")
    ips = [num(r.get("images_per_second")) for r in log[1:] if num(r.get("images_per_second"))]
    if ips:
        parts.append(f"median {sorted(ips)[len(ips) // 2]:,.0f} real img/s in log.csv")
    if cfg_minutes:
        parts.append(f"--max-minutes {float(cfg_minutes):g}")
    if parts and (status or log):
        ok = "-" if cfg_minutes is None else \
            ("pass" if float(cfg_minutes) >= 6.99 and status in (None, "time limit", "done") else "short")
        out.append((what, "7 min", "; ".join(parts), ok))
    else:
        out.append((what, "7 min", inp.why("classify", "fmnist_train"), "-"))
    if cls and isinstance(cls.get("test"), dict):
        acc = num(cls["test"].get("balanced_accuracy"))
        if acc is not None:
            out.append(("Fashion-MNIST-LT classifier (soft labels), test balanced accuracy", "report",
                        f"{100 * acc:.1f}%", "-"))
    if rep:
        backend = str(rep.get("backend", "?"))
        label = "Inception-v3" if "incep" in backend.lower() else "classifier features, not Inception"
        fid = num((rep.get("overall") or {}).get("fid"))
        ifid = num(rep.get("mean_intra_fid"))
        out.append((f"FID ({label})", "report", f"{fid:.2f} [{backend}]" if fid is not None else NOT, "-"))
        out.append((f"mean intra-class FID ({label})", "report",
                    f"{ifid:.2f} [{backend}]" if ifid is not None else NOT, "-"))
    else:
        why = inp.why("classify", "fmnist_train", "fmnist_eval")
        out.append(("FID", "report", why, "-"))
        out.append(("mean intra-class FID", "report", why, "-"))
    return out


def gpu_tests(inp):
    what = "GPU tests (pytest -m gpu)"
    p = inp.path("gpu_tests.xml")
    counts = None
    if p:
        try:
            root = ET.parse(p).getroot()
            suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
            t = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
            counts = (t["tests"] - t["failures"] - t["errors"] - t["skipped"], t["failures"], t["errors"],
                      t["skipped"])
        except (ET.ParseError, OSError, ValueError) as exc:
            print(f"gpu_summary: cannot read {p}: {exc}", file=sys.stderr)
    if counts is None and inp.path("gpu_tests.log"):
        text = open(inp.path("gpu_tests.log")).read()
        lines = [ln for ln in text.splitlines() if re.search(r"\b(passed|failed|error)", ln) and " in " in ln]
        if lines:
            c = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", lines[-1])}
            counts = (c.get("passed", 0), c.get("failed", 0), c.get("error", 0) + c.get("errors", 0),
                      c.get("skipped", 0))
    if counts is None:
        return [(what, "all pass", inp.why("gpu_tests"), "-")]
    passed, failed, errors, skipped = counts
    txt = f"{passed} passed, {failed} failed, {errors} errors, {skipped} skipped"
    status = (inp.steps.get("gpu_tests") or {}).get("status", "ok")
    if status.startswith("timed out"):
        txt += f" (incomplete: {status})"
    ok = failed == 0 and errors == 0 and passed > 0 and not status.startswith("timed out")
    return [(what, "all pass", txt, "pass" if ok else "FAIL")]


def build(inp):
    row = inp.steps.get("build")
    if row is None:
        return [("build (pip install -e .)", "ok", f"{NOT} (build: not run)", "-")]
    ok = row.get("status") == "ok"
    return [("build (pip install -e .)", "ok", f"{row.get('status')} in {row.get('seconds')} s",
             "pass" if ok else "FAIL")]


SECTIONS = (build, gpu_tests, projection, bank, loader, spectral_norm, host, training, fmnist)


def summary_rows(dirs):
    inp = Inputs(dirs)
    rows = []
    for section in SECTIONS:
        try:
            rows += section(inp)
        except Exception as exc:   # a malformed input must not hide the rest of the table
            rows.append((section.__name__, "-", f"{NOT} (summary error: {type(exc).__name__}: {exc})", "-"))
    return inp, rows


def markdown(inp, rows):
    lines = []
    env = inp.path("env.txt")
    if env:
        lines += ["Machine: " + "; ".join(ln.strip() for ln in open(env) if ln.strip()), ""]
    lines += ["| what | target | measured | pass |", "| --- | --- | --- | --- |"]
    lines += [f"| {w} | {t} | {m} | {p} |" for w, t, m, p in rows]
    n_pass = sum(r[3] == "pass" for r in rows)
    n_fail = sum(r[3] == "FAIL" for r in rows)
    n_not = sum(r[2].startswith(NOT) for r in rows)
    lines += ["", f"{n_pass} pass, {n_fail} FAIL, {n_not} not measured "
              f"(from {', '.join(inp.dirs)})"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="*", default=None,
                    help="output folders of the validate stages (default: $OUT or /tmp/sgan_fast_out)")
    ap.add_argument("--md", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    dirs = args.dirs or [os.environ.get("OUT", "/tmp/sgan_fast_out")]
    inp, rows = summary_rows(dirs)
    table = markdown(inp, rows)
    print(table, end="")
    if args.md:
        with open(args.md, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
