"""What a user reads while and after training: losses per character, the
smooth loss of short runs, the best model's criterion, the budget's progress
and message, samples written above the progress bar in a real terminal, and
the run folder's lock."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from charrnn_ext import cli, engine
from charrnn_ext.checkpoint import load_checkpoint
from charrnn_ext.config import OPTIONS, option
from charrnn_ext.data import corpus_from_string
from charrnn_ext.layout import init_opt_state
from charrnn_ext.model import CharRNN
from charrnn_ext.runfolder import LOCK_FILE, RunFolder, StaleLockWarning, read_metrics_csv
from charrnn_ext.state import SMOOTHING, smoothed
from charrnn_ext.trainplan import train_command
from conftest import SMALL_TEXT, TINY


def _corpus():
    return corpus_from_string(SMALL_TEXT)


# ---------------------------------------------------------------------------
# the smooth loss
# ---------------------------------------------------------------------------


def test_classic_smooth_loss_stays_summed_and_exact_beside_the_per_char_one(tmp_path):
    """The classic figure (25 ln K at update 1, then 0.999/0.001) is kept exactly as
    smooth_loss_sum; what is shown is the same number per character."""
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=2)
    recs = []
    res = model.fit(c, steps=40, out=tmp_path / "run", callback=recs.append, log_every=1, sample_every=20)
    steps = [r for r in recs if r.step > 0]
    assert [r.step for r in steps] == list(range(1, 41))
    first = steps[0]
    assert first.step == 1 and first.update_chars == 25
    assert first.smooth_loss_sum == first.loss_sum and abs(first.loss_sum - 25 * math.log(c.vocab.size)) < 0.05
    smooth = first.loss_sum
    for r in steps[1:]:
        smooth = SMOOTHING * smooth + (1 - SMOOTHING) * r.loss_sum
        assert r.smooth_loss_sum == smooth and r.smooth_loss == smooth / 25
    assert res.smooth_loss_sum == smooth and res.smooth_loss == smooth / 25
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["smooth_loss_sum"] == smooth and summary["smooth_loss"] == smooth / 25
    assert summary["update_chars"] == 25 and summary["smoothing"] == "classic"
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"| final smooth loss per char | {smooth / 25:.4f} |" in report
    assert f"| final smooth loss summed over the 25 characters of an update (classic smoothing) | {smooth:.3f} |" in (
        report
    )
    assert "the smooth loss is 0.999·smooth + 0.001·loss, starting at the first loss" in report


def test_adaptive_smoothing_follows_a_short_run():
    """A loss falling from 4.4 to 1.8 per character in 500 updates (the quality preset's
    2-minute run): the classic average still carries the start, the adaptive one
    sits on the recent losses."""
    losses = [1.8 + 2.6 * math.exp(-t / 60) for t in range(1, 501)]
    classic = adaptive = losses[0]
    for t, x in enumerate(losses[1:], start=2):
        classic = smoothed(classic, x, t, "classic")
        adaptive = smoothed(adaptive, x, t, "adaptive")
    recent = float(np.mean(losses[-50:]))
    assert classic > recent + 0.9  # the lag the issue saw: 3.5 against 1.8
    assert abs(adaptive - recent) < 0.01
    # its window grows to 1,000 updates, where it is the classic 0.999
    assert smoothed(1.0, 2.0, 10_000, "adaptive") == pytest.approx(smoothed(1.0, 2.0, 10_000, "classic"), rel=1e-15)
    assert smoothed(5.0, 2.0, 1, "adaptive") == 2.0  # the first update's weight is 1: no starting bias


def test_adaptive_smoothing_in_a_run_is_near_the_raw_losses():
    c = _corpus()
    runs = {}
    for how in ("classic", "adaptive"):
        model = CharRNN.new(c, hidden=16, seed=0)
        res = model.fit(c, steps=400, smoothing=how, **TINY)
        raw = [r.loss for r in res.records if r.step > 300]  # per character, every 20 updates
        runs[how] = (res.smooth_loss, float(np.mean(raw)))
    smooth, raw = runs["adaptive"]
    assert abs(smooth - raw) < 0.1 * raw
    smooth, raw = runs["classic"]
    assert smooth > 1.3 * raw  # 400 updates are far too few for 0.999


# ---------------------------------------------------------------------------
# the best model
# ---------------------------------------------------------------------------


def test_best_model_is_chosen_by_validation_at_the_sample_points(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=16, seed=0)
    out = tmp_path / "run"
    # val_chars covers the whole split, so the whole-split losses at the end agree with the choice
    res = model.fit(c, steps=400, out=out, seq_length=10, log_every=20, sample_every=40, eta=0.3, val_chars=10**6)
    points = {r.step: r.val_loss for r in res.records if r.val_loss is not None and r.step > 0}
    assert sorted(points) == list(range(40, 401, 40))
    best = min(points, key=lambda s: points[s])
    assert res.best_by == "validation" and res.best_step == best and res.best_loss == points[best]
    assert res.best_val_loss == pytest.approx(points[best], rel=1e-12)
    assert res.best_val_loss <= res.final_val_loss
    ck = load_checkpoint(out / "best.npz")
    assert ck.meta["step"] == best and ck.meta["best_by"] == "validation" and ck.meta["best_loss"] == points[best]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_by"] == "validation" and summary["best_step"] == best
    report = (out / "report.md").read_text()
    assert "| best model (best.npz) chosen by | the lowest validation loss on at most 1,000,000 characters" in report
    assert f"| best model's validation loss per char | {points[best]:.4f} at update {best} |" in report


def test_best_by_smooth_keeps_the_classic_choice(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=16, seed=0)
    res = model.fit(c, steps=200, out=tmp_path / "run", best_by="smooth", **TINY)
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    best = min(rows, key=lambda r: r.smooth_loss)  # the classic choice: lowest smooth loss at a record point
    assert res.best_by == "smooth" and res.best_step == best.step and res.best_loss == best.smooth_loss / 10
    assert model.state.best_loss == best.smooth_loss  # kept summed, as the classic experiment reports it
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_by"] == "smooth"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| best model (best.npz) chosen by | the lowest smooth training loss, checked every 20 updates |" in report


def test_without_a_validation_split_the_smooth_loss_chooses(tmp_path):
    c = corpus_from_string(SMALL_TEXT, val_fraction=0.0)
    model = CharRNN.new(c, hidden=8, seed=0)
    res = model.fit(c, steps=60, out=tmp_path / "run", val_fraction=0.0, **TINY)
    assert res.best_by == "smooth" and res.best_step == 60
    report = (tmp_path / "run" / "report.md").read_text()
    assert "the lowest smooth training loss, checked every 20 updates (the run has no validation split)" in report


# ---------------------------------------------------------------------------
# the command line's closing lines and sample interval
# ---------------------------------------------------------------------------


def test_budget_message_states_budget_time_taken_and_why():
    result = SimpleNamespace(budget_seconds=120.0, seconds=131.6, last_chunk=(50, 13.0), final_seconds=9.25, step=500)
    assert cli._budget_text(result) == (
        "time budget 2 min used up: training took 2 min 12 s (its last chunk of 50 updates took 13.0 s and "
        "ended 11.6 s past the budget), then the final evaluation 9.2 s; the run ends at update 500"
    )
    result.seconds = 120.2
    assert cli._budget_text(result).startswith("time budget 2 min used up: training took 2 min, then the final")


def test_short_run_samples_through_its_length(tmp_path, text_file):
    out = tmp_path / "run"
    assert cli.main(["train", "--text", str(text_file), "--out", str(out), "--hidden", "8", "--steps", "40",
                     "--no-progress"]) == 0  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["sample_every"] == 5  # 40 updates / 8 sample points, not 10,000
    steps = [s.step for s in load_checkpoint(out / "last.npz").state.samples]
    assert steps == list(range(0, 41, 5))
    out2 = tmp_path / "run2"
    assert cli.main(["train", "--text", str(text_file), "--out", str(out2), "--hidden", "8", "--steps", "40",
                     "--sample-every", "30", "--no-progress"]) == 0  # fmt: skip
    assert [s.step for s in load_checkpoint(out2 / "last.npz").state.samples] == [0, 30, 40]


# ---------------------------------------------------------------------------
# the lock
# ---------------------------------------------------------------------------


def test_a_finished_run_leaves_no_lock_and_a_killed_one_is_named(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--text", str(text_file), "--out", str(out), "--hidden", "8", "--steps", "20",
                     "--no-progress"]) == 0  # fmt: skip
    assert not (out / LOCK_FILE).exists()
    # a lock left by a killed run: its process is gone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (out / LOCK_FILE).write_text(f"{gone.pid}\n")
    with pytest.warns(StaleLockWarning, match=rf"left by a run that ended .*\(pid {gone.pid}, no longer running\)"):
        folder = RunFolder(out)
        folder.lock()
    folder.unlock()
    (out / LOCK_FILE).write_text(f"{gone.pid}\n")
    assert cli.main(["train", "--resume", str(out), "--steps", "40", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"charrnn: warning: {out / LOCK_FILE} was left by a run that ended without releasing it (pid {gone.pid}" in (
        err
    )
    assert not (out / LOCK_FILE).exists()


def test_a_held_lock_still_refuses(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = RunFolder(out)
    holder.lock()
    with pytest.raises(ValueError, match=rf"another charrnn process \(pid {os.getpid()}\) is writing to"):
        RunFolder(out).lock()
    holder.unlock()
    assert not (out / LOCK_FILE).exists()
    RunFolder(out).lock()  # free again


# ---------------------------------------------------------------------------
# a real terminal
# ---------------------------------------------------------------------------


def _tmux_screen(tmp_path, argv: list[str], width: int = 150) -> str:
    """Run ``argv`` in a detached tmux session of ``width`` columns and return
    everything the terminal shows once it has ended (history included)."""
    sock = f"charrnn-test-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "done"
    command = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(done))}; sleep 600"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-x", str(width), "-y", "50", command], check=True)
    try:
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists(), "the command did not end"
        assert done.read_text().strip() == "0"
        screen = subprocess.run(
            [*tmux, "capture-pane", "-p", "-S", "-", "-E", "-"], check=True, capture_output=True, text=True
        )
        return screen.stdout
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_samples_are_written_above_the_bar_in_a_terminal(tmp_path, text_file):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "charrnn_ext", "train", "--text", str(text_file), "--out", str(out),
            "--hidden", "8", "--seq-length", "10", "--steps", "300", "--log-every", "10", "--sample-every", "60",
            "--sample-chars", "40"]  # fmt: skip
    lines = _tmux_screen(tmp_path, argv).splitlines()
    bars = [i for i, line in enumerate(lines) if line.startswith("training:")]
    assert len(bars) == 1, "\n".join(lines)  # no stale bar left behind at a sample point
    headers = [line for line in lines if "----- update" in line]
    assert len(headers) == 6  # updates 0, 60, ..., 300
    assert all(line.startswith("----- update") for line in headers), "\n".join(lines)  # none glued to the bar
    assert "smooth loss n/a" in headers[0] and all("/char" in h for h in headers[1:])
    bar = lines[bars[0]]
    assert "300/300" in bar and "loss/char=" in bar and "chars/s=" in bar and "smooth=" not in bar


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_budget_bar_shows_time_updates_and_throughput(tmp_path, text_file):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "charrnn_ext", "train", "--text", str(text_file), "--out", str(out),
            "--hidden", "8", "--seq-length", "10", "--max-minutes", "0.02", "--log-every", "50",
            "--sample-chars", "40"]  # fmt: skip
    screen = _tmux_screen(tmp_path, argv)
    bar = next(line for line in screen.splitlines() if line.startswith("training:"))
    assert " s of training" in bar and "/2 s of training" in bar  # elapsed training seconds of the 1.2 s budget
    assert "1000000000000" not in bar and "update=" in bar
    rate = re.search(r"chars/s=([\d,]+)", bar)
    assert rate is not None and int(rate.group(1).replace(",", "")) > 0, bar
    assert "time budget 1.2 s used up: training took" in screen


# ---------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------


def test_train_help_is_grouped_with_text_first(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: charrnn train [--text FILE] [--preset NAME] [OPTION ...]\n")
    titles = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert titles == ["options", "data", "model", "optimiser and schedule", "run length", "output and logging"]
    flags = re.findall(r"^  (--[a-z0-9-]+)", text, flags=re.M)
    assert flags[0] == "--text"  # after -h, --help
    wanted = {o.flag for o in OPTIONS if o.group in ("model", "train", "run")} | {"--no-progress", "--force"}
    assert sorted(flags) == sorted(wanted)  # every option once
    assert "18_446" not in text and "[0, " not in text
    assert "0 <= SEED < 2^64" in text and "1 <= M <= 65,536" in text and "0 < ETA <= 10;" in text
    preset = " ".join(text.split("--preset {classic,quality}")[1].split("--cell {")[0].split())
    assert "classic: every default (the classic experiment); quality: --cell gru --layers 2 --hidden 384" in preset
    assert "--smoothing adaptive" in preset and "--sample-every 2000" in preset


def test_report_help_has_a_description(capsys):
    assert cli.main(["report", "--help"]) == 0
    assert "Rebuild report.md and loss.png of a run folder" in " ".join(capsys.readouterr().out.split())


def test_sample_command_prints_the_prime_the_api_returns_only_the_drawn_text(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--text", str(text_file), "--out", str(out), "--hidden", "8", "--steps", "20",
                     "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main(["sample", str(out), "-n", "50", "--prime", "The ", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    drawn = CharRNN.load(out / "best.npz").sample(50, prime="The ", seed=3)
    assert len(drawn) == 50 and printed == "The " + drawn + "\n"
    assert "charrnn sample prints it before the drawn characters" in option("prime").help


# ---------------------------------------------------------------------------
# the state at a new epoch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2])
def test_carry_state_keeps_the_state_into_the_next_epoch(batch_size):
    """With carry_state the run equals the engine's walk stopped at the end of the
    epoch and started again from position 0 with the state it had; without it the
    engine's own wrap (a zero state) is kept, as the classic experiment does."""
    c = _corpus()
    spe = (c.train.size // batch_size - 1) // 10
    opts = dict(seq_length=10, batch_size=batch_size, log_every=7, sample_every=10**6, val_chars=100)
    carried = CharRNN.new(c, hidden=8, seed=4)
    res = carried.fit(c, steps=spe + 30, carry_state=True, **opts)
    assert res.epoch == 2 and carried.state.wraps == 1
    assert carried.state.positions.tolist() == [300] * batch_size
    ref = CharRNN.new(c, hidden=8, seed=4)
    opt = init_opt_state(ref.params)
    _, h, pos, wraps, _ = engine.train_steps(
        ref.params, opt, c.train, n_steps=spe, seq_length=10, batch_size=batch_size
    )
    assert np.atleast_1d(wraps).tolist() == [0] * batch_size and np.abs(h).max() > 0.01
    losses, h, pos, wraps, _ = engine.train_steps(
        ref.params, opt, c.train, h, n_steps=30, seq_length=10, batch_size=batch_size,
        positions=np.zeros(batch_size, dtype=np.int64),
    )  # fmt: skip
    assert np.atleast_1d(wraps).tolist() == [0] * batch_size and np.atleast_1d(pos).tolist() == [300] * batch_size
    assert all(np.array_equal(ref.params[k], carried.params[k]) for k in ref.params)
    assert np.array_equal(h.reshape(carried.state.h.shape), carried.state.h)
    assert res.records[-1].loss_sum == losses[-1]
    reset = CharRNN.new(c, hidden=8, seed=4)
    reset.fit(c, steps=spe + 30, **opts)
    assert reset.state.wraps == 1 and not all(np.array_equal(reset.params[k], carried.params[k]) for k in ref.params)


def test_train_command_writes_a_switch_as_its_flag(tmp_path, text_file):
    """A sweep's report prints the charrnn train command of its best trial: a true
    switch is its flag alone, a false one is left out, and the command parses."""
    cmd = train_command({"hidden": 8, "carry_state": True, "steps": 20})
    assert cmd == "charrnn train --hidden 8 --carry-state --steps 20"
    assert train_command({"hidden": 8, "carry_state": False}) == "charrnn train --hidden 8"
    args = cli.build_parser().parse_args(shlex.split(cmd)[1:])
    assert args.carry_state is True and cli.build_parser().parse_args(["train"]).carry_state is None
