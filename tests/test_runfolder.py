"""The run folder: a run writes and removes only its own files, one run
holds a folder at a time (a lock), and runs started together get folders
of their own. Through the real command in child processes."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from charrnn_ext.checkpoint import load_checkpoint
from charrnn_ext.runfolder import LOCK_FILE, RUN_FILES
from cli_helpers import (
    CHILD_ENV,
    CLI,
    TRAIN_TINY,
    folder_files,
    one_error_line,
    run_cli,
)

# The real command in child processes, several at once: slow, outside the
# fast subset (-m "not slow").
pytestmark = pytest.mark.slow

# ---------------------------------------------------------------------------
# A run touches only its own files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("names", [("best.npz",), ("report.md",), ("config.json", "gradcheck.md"), ("notes.txt",)])
def test_train_never_overwrites_or_removes_a_users_files(names, text_file, tmp_path):
    """--out DIR holding the user's own best.npz or report.md (no
    last.npz) had them silently replaced. Now refused, and the refusal
    removes nothing (before the fix, the clean-up after the refusal deleted
    a user's config.json and gradcheck.md)."""
    out = tmp_path / "mine"
    out.mkdir()
    for name in names:
        (out / name).write_bytes(f"the user's own {name}\n".encode())
    before = folder_files(out)
    r = run_cli(["train", "--text", text_file, "--out", out, "--steps", "3", "--hidden", "4", *TRAIN_TINY])
    assert r.returncode == 2
    msg = one_error_line(r.stderr, f"{out} ")
    assert "--force" in msg
    assert folder_files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(names)

    # with --force only the package's own files are replaced; others are kept as they were
    r = run_cli(["train", "--text", text_file, "--out", out, "--steps", "3", "--hidden", "4", "--force", *TRAIN_TINY])
    assert r.returncode == 0, r.stderr
    after = folder_files(out)
    for name in names:
        if name in RUN_FILES:
            assert after[name] != before[name]
        else:
            assert after[name] == before[name]
    assert set(RUN_FILES) <= set(after)


def test_force_over_an_old_run_leaves_nothing_of_it(text_file, tmp_path):
    """--force starts a new run in a folder with a finished one: the old run's
    files go first, so that an interrupted new run is not mixed with them."""
    out = tmp_path / "run"
    assert (
        run_cli(["train", "--text", text_file, "--out", out, "--steps", "30", "--hidden", "4", *TRAIN_TINY]).returncode
        == 0
    )
    old = folder_files(out)
    r = run_cli(
        [
            "train",
            "--text",
            text_file,
            "--out",
            out,
            "--steps",
            "100",
            "--stop-after",
            "0",
            "--hidden",
            "6",
            "--force",
            *TRAIN_TINY,
        ]
    )
    assert r.returncode == 0, r.stderr
    now = sorted(p.name for p in out.iterdir())
    assert "summary.json" not in now and "best.npz" not in now and "report.md" not in now
    assert load_checkpoint(out / "last.npz").params["V"].shape[1] == 6
    assert (out / "config.json").read_bytes() != old["config.json"]


# ---------------------------------------------------------------------------
# One run per folder
# ---------------------------------------------------------------------------

_SAME_SECOND = r"""
import sys, time
time.strftime = lambda fmt, *a: "20240101-120000"  # every run starts "in the same second"
from charrnn_ext import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_runs_started_in_the_same_second_get_their_own_folders(text_file, tmp_path):
    """two `charrnn train` without --out in the same second shared
    runs/<timestamp>. Four runs at once, all with the same timestamp, each
    get a folder of their own and finish complete."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SAME_SECOND,
                "train",
                "--text",
                str(text_file),
                "--steps",
                "20",
                "--hidden",
                "4",
                "--seed",
                str(seed),
                *TRAIN_TINY,
            ],
            cwd=tmp_path,
            env=CHILD_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["20240101-120000", "20240101-120000-2", "20240101-120000-3", "20240101-120000-4"]
    seeds = set()
    for name in folders:
        folder = tmp_path / "runs" / name
        assert set(RUN_FILES) <= {p.name for p in folder.iterdir()}
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
        seeds.add(json.loads((folder / "config.json").read_text())["model"]["seed"])
        assert (
            load_checkpoint(folder / "last.npz").meta["seed"]
            == json.loads((folder / "config.json").read_text())["model"]["seed"]
        )
    assert seeds == {0, 1, 2, 3}


def test_a_second_run_in_a_locked_folder_is_refused_and_touches_nothing(text_file, tmp_path):
    """Same --out: the folder is locked for the life of a run. A run
    refused by the lock leaves the holder's files alone (before the fix, its
    clean-up deleted the holder's config.json, gradcheck.md and .lock, so that
    a third run could take the folder)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}\n")
    (out / "gradcheck.md").write_text("holder's\n")
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        before = folder_files(out)
        for extra in ([], ["--force"]):
            r = run_cli(
                ["train", "--text", text_file, "--out", out, "--steps", "3", "--hidden", "4", *extra, *TRAIN_TINY]
            )
            assert r.returncode == 2
            assert one_error_line(r.stderr) == (
                f"another charrnn process (pid {os.getpid()}) is writing to {out}; "
                f"wait for it to end or choose another folder"
            )
            assert folder_files(out) == before
            r = run_cli(["train", "--resume", out, "--no-progress"])
            assert r.returncode == 2 and folder_files(out) == before
    finally:
        os.close(fd)


def test_two_real_runs_given_the_same_out_at_once(text_file, tmp_path):
    """Two `charrnn train --out DIR` at the same moment: exactly one trains,
    the other is refused (by the lock, or, if the first has saved already,
    because DIR holds a run); the folder holds one consistent run."""
    out = tmp_path / "run"
    cmd = ["train", "--text", text_file, "--out", out, "--steps", "400", "--hidden", "16", *TRAIN_TINY]
    procs = [
        subprocess.Popen(
            CLI + [str(a) for a in cmd] + ["--seed", str(seed)],
            env=CHILD_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], errs
    loser = errs[[p.returncode for p in procs].index(2)]
    msg = one_error_line(loser)
    assert msg.startswith(("another charrnn process (pid ", f"{out} already holds ")), msg
    winner_seed = (1, 2)[[p.returncode for p in procs].index(0)]
    assert json.loads((out / "config.json").read_text())["model"]["seed"] == winner_seed
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.meta["seed"] == winner_seed and ckpt.state.step == 400
    assert json.loads((out / "summary.json").read_text())["step"] == 400


def test_a_runs_default_exports_do_not_block_its_resume(tmp_path):
    """`charrnn export RUN` writes RUN/best.onnx (or best.pt); the folder is
    still the run's own and resumes without --force."""
    from charrnn_ext.runfolder import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "last.npz", "best.onnx", "best.pt"):
        (run / name).write_bytes(b"x")
    folder = RunFolder(run)
    folder.open_for_run(fresh=False)
    folder.unlock()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not part of a charrnn run \(notes.txt\)"):
        RunFolder(run).open_for_run(fresh=False)


def test_report_refuses_a_folder_a_live_run_is_writing(run100, tmp_path):
    """Before: charrnn report ignored a live run's lock and read its files half-way."""
    import shutil

    from charrnn_ext.runfolder import RunFolder, write_report

    run = tmp_path / "run"
    shutil.copytree(run100, run)
    (run / ".lock").unlink(missing_ok=True)
    live = RunFolder(run)
    live.lock()
    with pytest.raises(ValueError, match=f"another charrnn process \\(pid {os.getpid()}\\) is writing to {run}"):
        write_report(run, plot=False)
    live.unlock()
    assert write_report(run, plot=False) == run / "report.md"
    assert not (run / ".lock").exists()  # released and removed, as a run does


def test_report_refuses_files_of_two_different_runs(run100, tmp_path):
    """Before: charrnn report mixed one run's config.json with another run's last.npz without a word."""
    import shutil

    from charrnn_ext.data import corpus_from_string
    from charrnn_ext.model import CharRNN
    from charrnn_ext.runfolder import write_report
    from conftest import SMALL_TEXT, TINY

    other = tmp_path / "other"
    CharRNN.new(corpus_from_string(SMALL_TEXT), hidden=12, seed=1).fit(SMALL_TEXT, steps=30, out=other, **TINY)
    mixed = tmp_path / "mixed"
    shutil.copytree(run100, mixed)
    shutil.copy(other / "last.npz", mixed / "last.npz")
    with pytest.raises(ValueError, match=r"different runs: the model.s hidden is 100 in one and 12 in the other"):
        write_report(mixed, plot=False)
    # the same model, but a summary of a later update than the checkpoint
    later = tmp_path / "later"
    shutil.copytree(run100, later)
    summary = json.loads((later / "summary.json").read_text())
    (later / "summary.json").write_text(json.dumps({**summary, "step": summary["step"] + 40}))
    with pytest.raises(ValueError, match=r"summary.json ends at update 100, after .*last.npz \(update 60\)"):
        write_report(later, plot=False)
    assert write_report(run100, plot=False) == run100 / "report.md"  # a run's own files still agree
