"""The charrnn command line, in-process through cli.main plus one subprocess."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from charrnn_ext import _core, cli
from charrnn_ext.checkpoint import load_checkpoint
from charrnn_ext.params import PARAM_NAMES

TRAIN = ["--hidden", "8", "--seq-length", "10", "--log-every", "20", "--sample-every", "60",
         "--val-chars", "150", "--no-progress"]


def _train(text_file, out, *extra):
    return cli.main(["train", "--text", str(text_file), "--out", str(out), *TRAIN, *extra])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    text = d / "small.txt"
    from conftest import SMALL_TEXT

    text.write_text(SMALL_TEXT)
    assert _train(text, d / "run", "--steps", "250") == 0
    return d / "run"


def test_train_writes_every_file(run_dir):
    for f in ("metrics.csv", "loss.png", "samples.md", "best.npz", "last.npz", "config.json", "report.md",
              "gradcheck.md", "summary.json"):
        assert (run_dir / f).stat().st_size > 0, f
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "epoch", "loss", "smooth_loss", "val_loss", "val_chars"]
    assert [int(r["step"]) for r in rows] == [20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 250]
    assert [r["val_loss"] != "" for r in rows] == [int(r["step"]) % 60 == 0 for r in rows]
    assert int(rows[-1]["epoch"]) == 2  # 205 updates per epoch
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    samples = (run_dir / "samples.md").read_text()
    assert re.findall(r"## Update (\d+)", samples) == ["0", "60", "120", "180", "240"]
    import json

    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"]["hidden"] == 8 and cfg["train"]["eta"] == 0.1 and cfg["corpus"]["vocab_size"] == 24
    assert cfg["train"]["seq_length"] == 10 and cfg["package_version"]


def test_train_stop_and_resume_matches_straight_run(run_dir, tmp_path, capsys):
    text = run_dir.parent / "small.txt"
    assert _train(text, tmp_path / "r", "--steps", "250", "--stop-after", "95") == 0
    assert "charrnn train --resume" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "r" / "last.npz").state.step == 95
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--no-progress"]) == 0
    for f in ("metrics.csv", "samples.md", "summary.json", "report.md"):
        assert (tmp_path / "r" / f).read_bytes() == (run_dir / f).read_bytes(), f
    a, b = load_checkpoint(run_dir / "last.npz"), load_checkpoint(tmp_path / "r" / "last.npz")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in PARAM_NAMES)


def test_ctrl_c_exits_130_and_resumes(run_dir, tmp_path, monkeypatch, capsys):
    real = _core.train_steps
    calls = []

    def interrupting(*a, **kw):
        calls.append(1)
        out = real(*a, **kw)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(_core, "train_steps", interrupting)
    text = run_dir.parent / "small.txt"
    assert _train(text, tmp_path / "r", "--steps", "250") == 130
    err = capsys.readouterr().err
    assert "interrupted at update 80" in err and f"charrnn train --resume {tmp_path / 'r'}" in err
    monkeypatch.setattr(_core, "train_steps", real)
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--no-progress"]) == 0
    assert (tmp_path / "r" / "metrics.csv").read_bytes() == (run_dir / "metrics.csv").read_bytes()
    assert (tmp_path / "r" / "samples.md").read_bytes() == (run_dir / "samples.md").read_bytes()


def test_resume_refuses_changed_options_and_other_text(run_dir, tmp_path, capsys):
    assert cli.main(["train", "--resume", str(run_dir), "--hidden", "9"]) == 2
    assert "--hidden 9 differs from the run's value 8" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text((run_dir.parent / "small.txt").read_text().replace("dog", "god"))
    assert cli.main(["train", "--resume", str(run_dir), "--text", str(other)]) == 2
    assert "differs from the one this model was trained on" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "last.npz not found" in capsys.readouterr().err


def test_train_bad_input(tmp_path, capsys):
    assert cli.main(["train", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "text file not found" in capsys.readouterr().err
    assert cli.main(["train", "--steps", "5", "--epochs", "1"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_train_divergence_exits_1(run_dir, tmp_path, capsys):
    text = run_dir.parent / "small.txt"
    assert _train(text, tmp_path / "d", "--steps", "50", "--eta", "1e307") == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "last good checkpoint" in err


def test_sample_command(run_dir, capsys):
    args = ["sample", str(run_dir / "best.npz"), "-n", "80", "--prime", "The ", "--seed", "5"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("The ") and len(first) == 4 + 80 + 1
    assert cli.main(["sample", str(run_dir), "-n", "80", "--prime", "The ", "--seed", "6"]) == 0
    assert capsys.readouterr().out != first
    assert cli.main(["sample", str(run_dir / "best.npz"), "--prime", "X-ray"]) == 2
    assert "character(s) '-', 'X' that are not in" in capsys.readouterr().err
    assert cli.main(["sample", str(run_dir / "nothing.npz")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_gradcheck_command(run_dir, capsys):
    code = cli.main(["gradcheck", "--text", str(run_dir.parent / "small.txt"), "--seq-length", "10"])
    out = capsys.readouterr().out
    assert code == 0 and "PASS" in out and "K=24, m=5, T=10" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if re.match(r"\| [UWVbc] \|", line)}
    assert sorted(rows) == sorted(PARAM_NAMES)
    for line in rows.values():
        cpp_max = float(line.split("|")[3].split("/")[0])
        assert cpp_max < 1e-6


def test_report_command_rebuilds(run_dir, capsys):
    (run_dir / "report.md").unlink()
    (run_dir / "loss.png").unlink()
    assert cli.main(["report", str(run_dir)]) == 0
    rep = (run_dir / "report.md").read_text()
    for section in ("## Hyper-parameters", "## Gradient check", "## Loss", "![Smooth training loss",
                    "## Results", "## Evolution of the synthesised text", "## Passage from the best model",
                    "| U | 5x24 |", "status: finished", "### Update 240"):
        assert section in rep, section
    assert (run_dir / "loss.png").exists()
    import json

    summ = json.loads((run_dir / "summary.json").read_text())
    assert f"at update {summ['best_step']}" in rep and f"{summ['final_val_loss']:.4f}" in rep
    assert summ["passage"] in rep and len(summ["passage"]) == 1000
    assert cli.main(["report", str(run_dir.parent / "nope")]) == 2


def test_python_dash_m_help():
    res = subprocess.run([sys.executable, "-m", "charrnn_ext", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0
    for cmd in ("train", "sample", "gradcheck", "report"):
        assert cmd in res.stdout
    res = subprocess.run([sys.executable, "-m", "charrnn_ext", "train", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "--resume" in res.stdout and "--sample-every" in res.stdout
