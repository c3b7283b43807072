"""The command line at its limits: huge counts and sizes are refused in one
line before anything is allocated, devices and huge vocabularies do not
hang the start, and messages at the edges read right. Through the real
command in child processes; the time and peak-memory figures are printed
(run with -s)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import numpy as np
import pytest

from charrnn_ext import cli
from charrnn_ext.checkpoint import load_checkpoint
from cli_helpers import (
    TRAIN_TINY,
    bounded,
    measured,
    one_error_line,
    run_cli,
)

# ---------------------------------------------------------------------------
# Huge counts
# ---------------------------------------------------------------------------


def test_huge_counts_are_refused_in_one_line_without_a_folder(tmp_path):
    """`--steps 100000000000000000000000000` and `--epochs 1e300`
    gave an OverflowError traceback and left a half-made folder."""
    for flag, value, message in (
        (
            "--steps",
            "100000000000000000000000000",
            "argument --steps: steps must be an integer in [0, 1_000_000_000_000], got 100000000000000000000000000",
        ),
        ("--epochs", "1e300", "argument --epochs: epochs must be a number in (0, 1e+06], got 1e+300"),
    ):
        r = run_cli(["train", flag, value], cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == f"charrnn: error: {message} (see charrnn train --help)\n"
    assert list(tmp_path.iterdir()) == []  # no runs/ folder


COUNTS = [  # (command, flag): every integer or count-like option of every command
    ("train", "--steps"),
    ("train", "--epochs"),
    ("train", "--max-minutes"),
    ("train", "--stop-after"),
    ("train", "--log-every"),
    ("train", "--sample-every"),
    ("train", "--sample-chars"),
    ("train", "--passage-chars"),
    ("train", "--val-chars"),
    ("train", "--warmup"),
    ("train", "--lr-decay-every"),
    ("train", "--seed"),
    ("train", "--batch-size"),
    ("train", "--seq-length"),
    ("train", "--threads"),
    ("train", "--hidden"),
    ("train", "--layers"),
    ("sample", "-n"),
    ("sample", "--top-k"),
    ("sample", "--seed"),
    ("gradcheck", "--seq-length"),
    ("gradcheck", "--seed"),
    ("gradcheck", "--hidden"),
    ("gradcheck", "--layers"),
]


@pytest.mark.parametrize("command, flag", COUNTS, ids=[f"{c}{f}" for c, f in COUNTS])
@pytest.mark.parametrize("value", ["1" + "0" * 30, "9" * 5000, "1e300", "inf", "-1e300", "nan"])
def test_every_count_refuses_huge_values_in_one_line(command, flag, value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [command] + (["x.npz"] if command == "sample" else []) + [flag, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    msg = one_error_line(err, "argument ")
    assert len(msg) < 300  # a 5000-digit value is not echoed whole
    assert list(tmp_path.iterdir()) == []


def test_a_huge_epoch_target_with_a_short_session_does_not_overflow(text_file, tmp_path):
    """The largest --epochs is a target of 2e8 updates here: the session's
    --stop-after ends it, resumable."""
    from charrnn_ext.training import steps_per_epoch

    r = run_cli(
        [
            "train",
            "--text",
            text_file,
            "--out",
            tmp_path / "r",
            "--epochs",
            "1e6",
            "--stop-after",
            "2",
            "--hidden",
            "4",
            *TRAIN_TINY,
        ]
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr
    state = load_checkpoint(tmp_path / "r" / "last.npz").state
    assert state.step == 2 and state.total_steps == round(1e6 * steps_per_epoch(state.corpus["n_train"], 10))


# ---------------------------------------------------------------------------
# Huge sizes
# ---------------------------------------------------------------------------


def test_huge_sizes_are_refused_before_anything_is_allocated(text_file, tmp_path):
    """`--hidden 1000000` (or `charrnn gradcheck --hidden 100000`)
    gave NumPy's "Unable to allocate 7.28 TiB" traceback. Now the options'
    ranges refuse those, and sizes inside the ranges that cannot fit are
    refused from an estimate before anything is allocated."""
    for argv, message in (
        (
            ["train", "--hidden", "1000000"],
            "argument --hidden: hidden must be an integer in [1, 65536], got 1000000 (see charrnn train --help)",
        ),
        (
            ["gradcheck", "--hidden", "100000"],
            "argument --hidden: hidden must be an integer in [1, 65536], got 100000 (see charrnn gradcheck --help)",
        ),
    ):
        r = measured(argv)
        assert r["code"] == 2 and r["err"] == f"charrnn: error: {message}\n"
    cases = [  # in range, but far too big for any machine: refused from the estimate
        (
            ["train", "--text", text_file, "--cell", "lstm", "--layers", "64", "--hidden", "65536"],
            r"^a lstm network of 64 x 65536 units \(float64\) needs about [\d.]+ GiB but only [\d.]+ GiB of memory is "
            r"available; choose a smaller --hidden or --layers$",
        ),
        (
            ["train", "--text", text_file, "--hidden", "2000", "--batch-size", "65536", "--seq-length", "100000"],
            r"^training this rnn network with 65536 streams of 100000 characters needs about [\d.]+ GiB",
        ),
        (
            [
                "gradcheck",
                "--text",
                text_file,
                "--cell",
                "lstm",
                "--layers",
                "3",
                "--hidden",
                "64",
                "--seq-length",
                "200",
            ],
            r"^the numerical gradient of this check \(lstm, 3 layer\(s\) of 64 units, 24 characters: "
            r"[\d,]+ parameters, 200 steps\) would take about [\d,]+ minutes",
        ),
    ]
    for argv, pattern in cases:
        r = measured([*argv, "--out", tmp_path / "o"] if argv[0] == "train" else argv)
        print(
            f"\n[huge sizes] charrnn {' '.join(str(a) for a in argv[3:])}: refused in "
            f"{r['seconds']:.2f} s at {r['peak_mb']:.0f} MB peak"
        )
        assert r["code"] == 2, r["err"]
        assert re.search(pattern, one_error_line(r["err"])), r["err"]
        bounded(r, 300)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------
# Inputs that could hang: devices, many layers, large vocabularies
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--text", "/dev/zero", "--out", "{tmp}/o"],
        ["gradcheck", "--text", "/dev/zero"],
        ["train", "--resume", "{run}", "--text", "/dev/zero"],
        ["sample", "/dev/zero"],
        ["export", "/dev/zero", "-o", "{tmp}/x.onnx"],
    ],
)
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_refused_at_once(argv, run100, tmp_path):
    """`--text /dev/zero` hung silently (a device never ends)."""
    folder = tmp_path / "run"
    shutil.copytree(run100, folder)
    r = measured([a.format(tmp=tmp_path, run=folder) for a in argv])
    assert r["code"] == 2
    bounded(r, 200)
    msg = one_error_line(r["err"], "/dev/zero")
    assert "not a regular file" in msg
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.onnx").exists()


def test_many_layers_start_at_once(text_file, tmp_path):
    """`--layers 1000` sat in the start-up gradient check for minutes: 1000 is
    out of range now, and the check of a 64-layer run uses a 2-layer model."""
    r = run_cli(["train", "--layers", "1000"])
    assert r.returncode == 2 and "layers must be an integer in [1, 64], got 1000" in one_error_line(r.stderr)
    t = time.perf_counter()
    r = run_cli(
        [
            "train",
            "--text",
            text_file,
            "--out",
            tmp_path / "deep",
            "--cell",
            "lstm",
            "--layers",
            "64",
            "--hidden",
            "4",
            "--steps",
            "1",
            *TRAIN_TINY,
        ]
    )
    elapsed = time.perf_counter() - t
    print(f"\n[start-up] 64 LSTM layers of 4 units, 1 update: the whole run took {elapsed:.1f} s")
    assert r.returncode == 0, r.stderr
    assert (
        "a 2-layer model of the run's cell (the run has 64 layers)" in (tmp_path / "deep" / "gradcheck.md").read_text()
    )
    assert elapsed < 60


def test_a_large_vocabulary_does_not_stall_the_start(tmp_path):
    """The start-up check grows with the square of the vocabulary (3000
    characters: over 2 minutes before the fix); it is bounded now."""
    rng = np.random.default_rng(0)
    text = tmp_path / "cjk.txt"
    text.write_text("".join(chr(0x4E00 + int(i)) for i in rng.integers(0, 3000, 60_000)))
    t = time.perf_counter()
    r = run_cli(["train", "--text", text, "--out", tmp_path / "r", "--hidden", "4", "--steps", "1", *TRAIN_TINY])
    elapsed = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    note = (tmp_path / "r" / "gradcheck.md").read_text()
    assert re.search(
        r"as a \d+-character vocabulary of their own \(with the run's 3000 characters the check would take "
        r"about [\d,]+ s\)",
        note,
    ), note
    print(f"\n[start-up] 3000-character vocabulary: run started and finished in {elapsed:.1f} s")
    assert elapsed < 60


# ---------------------------------------------------------------------------
# Messages at the edges
# ---------------------------------------------------------------------------


def test_steps_0_says_nothing_of_update_minus_1(text_file, tmp_path):
    """`--steps 0` reported "best at update -1"."""
    out = tmp_path / "r"
    r = run_cli(["train", "--text", text_file, "--out", out, "--steps", "0", "--hidden", "4", *TRAIN_TINY])
    assert r.returncode == 0, r.stderr
    assert not re.search(r"update -1\b|-1\)", r.stdout + r.stderr)
    assert "characters from the initial model:" in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("done: 0 updates in ")
    report = (out / "report.md").read_text()
    assert "update -1" not in report and "from the initial model (no update was made)" in report

    def no_constants(name):
        raise AssertionError(f"summary.json holds {name}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=no_constants)
    assert summary["best_step"] == -1 and summary["best_loss"] is None and summary["step"] == 0
