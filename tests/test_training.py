"""The training loop: smooth loss, records, resume, interruption, divergence,
learning-rate schedules and the training-time budget."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal

import numpy as np
import pytest

from charrnn_ext import _core, engine, training
from charrnn_ext.checkpoint import load_checkpoint
from charrnn_ext.data import corpus_from_string
from charrnn_ext.layout import copy_params, init_opt_state
from charrnn_ext.model import CharRNN
from charrnn_ext.report import fence, fmt, samples_markdown
from charrnn_ext.runfolder import RUN_FILES, metrics_csv, read_metrics_csv
from charrnn_ext.state import SMOOTHING, MetricRow, SampleRecord
from charrnn_ext.training import StopTraining, TrainingDiverged, steps_per_epoch
from conftest import SMALL_TEXT, TINY


def _corpus():
    return corpus_from_string(SMALL_TEXT)


def _params_equal(a, b) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _normalised(path) -> str:
    """A run file with the training time (wall-clock, differs between runs) masked."""
    text = path.read_text()
    if path.name == "summary.json":
        d = json.loads(text)
        assert d.pop("seconds") >= 0
        return json.dumps(d, sort_keys=True)
    return re.sub(r"training time [\d,]+ s", "training time _ s", text)


def _assert_same_run(a, b):
    """Two run folders of the same run (one of them interrupted and resumed)."""
    for f in ("metrics.csv", "samples.md", "config.json", "gradcheck.md"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    for f in ("summary.json", "report.md"):
        assert _normalised(a / f) == _normalised(b / f), f
    for f in ("last.npz", "best.npz"):
        x, y = load_checkpoint(a / f), load_checkpoint(b / f)
        assert _params_equal(x.params, y.params), f
        assert x.meta == y.meta and np.array_equal(x.start_h, y.start_h), f
    x, y = load_checkpoint(a / "last.npz").state, load_checkpoint(b / "last.npz").state
    assert _params_equal(x.opt_state, y.opt_state) and np.array_equal(x.h, y.h)
    assert np.array_equal(x.positions, y.positions) and x.t == y.t
    assert (x.step, x.wraps, x.smooth_loss, x.best_step, x.best_loss, x.total_steps) == (
        y.step,
        y.wraps,
        y.smooth_loss,
        y.best_step,
        y.best_loss,
        y.total_steps,
    )
    assert x.history == y.history and x.samples == y.samples


class FakeClock:
    """Stands in for training.time: perf_counter advances by ``tick`` per call,
    so every chunk of updates (timed by two calls) takes exactly ``tick`` seconds."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_first_smooth_loss_is_first_loss_and_near_T_lnK():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=3)
    recs = []
    model.fit(c, steps=5, callback=recs.append, seq_length=10, log_every=1, sample_every=1000)
    first = recs[1]  # recs[0] is the step-0 sample point (no loss yet)
    assert recs[0].step == 0 and math.isnan(recs[0].loss) and recs[0].sample is not None
    assert math.isnan(recs[0].lr) and recs[0].val_loss is not None
    assert first.step == 1 and first.lr == 0.1
    assert first.smooth_loss == first.loss and first.smooth_loss_sum == first.loss_sum
    # sig=0.01 makes the logits ~1e-3, so every p is about 1/K: ln K per character, 10 ln K per update
    assert abs(first.loss_sum - 10 * math.log(c.vocab.size)) < 0.05
    assert first.update_chars == 10 and first.loss == first.loss_sum / 10


def test_smooth_recurrence_exact_and_losses_match_core():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=1)
    init = copy_params(model.params)
    recs = []
    n = 250  # crosses the epoch boundary after update 205
    model.fit(c, steps=n, callback=recs.append, seq_length=10, log_every=1, sample_every=100, val_chars=100)
    steps = [r for r in recs if r.step > 0]
    assert [r.step for r in steps] == list(range(1, n + 1))
    # the same updates in one C++ call give bit-identical losses, parameters and state
    state = init_opt_state(init, "adagrad")
    losses, h, pos, wraps, diverged = engine.train_steps(init, state, c.train, None, n_steps=n, seq_length=10)
    assert not diverged and wraps == 1 and pos == 450  # (250 - 205) chunks into the second epoch
    np.testing.assert_array_equal(np.array([r.loss_sum for r in steps]), losses)
    assert _params_equal(init, model.params)
    assert _params_equal(state, model.state.opt_state) and model.state.t == int(state["t"]) == n
    assert model.state.h.shape == (1, 1, 8) and h.shape == (1, 8)
    np.testing.assert_array_equal(h, model.state.h[0])
    assert model.state.positions.tolist() == [pos] and model.state.wraps == 1
    smooth = steps[0].loss_sum
    assert steps[0].smooth_loss_sum == smooth
    for r in steps[1:]:
        smooth = SMOOTHING * smooth + (1.0 - SMOOTHING) * r.loss_sum
        assert r.smooth_loss_sum == smooth  # exact, not approximate
        assert r.smooth_loss == smooth / 10  # per character
    spe = steps_per_epoch(c.train.size, 10)
    assert spe == 205
    assert [r.epoch for r in steps] == [1 + (r.step - 1) // spe for r in steps]


def test_steps_per_epoch():
    assert steps_per_epoch(2052, 10) == 205
    assert steps_per_epoch(2052, 10, 3) == (684 - 1) // 10 == 68
    assert steps_per_epoch(2052, 25, 4) == (513 - 1) // 25 == 20


def test_batched_run_walks_segments_and_counts_epochs():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=1)
    res = model.fit(c, steps=80, batch_size=3, seq_length=10, log_every=10, sample_every=1000, val_chars=100)
    spe = steps_per_epoch(c.train.size, 10, 3)
    assert spe == 68 and res.epoch == 2 and model.state.wraps == 1
    s = model.state
    assert s.h.shape == (3, 1, 8) and s.positions.tolist() == [120, 120, 120]  # 12 chunks into epoch 2
    ref = CharRNN.new(c, hidden=8, seed=1)
    st = init_opt_state(ref.params)
    losses, h, pos, wraps, _ = engine.train_steps(ref.params, st, c.train, n_steps=80, seq_length=10, batch_size=3)
    assert _params_equal(ref.params, model.params) and np.array_equal(h, s.h)
    assert pos.tolist() == [120, 120, 120] and wraps.tolist() == [1, 1, 1]
    assert res.records[-1].loss_sum == losses[-1] and res.records[-1].loss == losses[-1] / 30
    # an update's loss is summed over 3 streams x 10 characters: about 30 ln K at the start
    assert abs(losses[0] - 30 * math.log(c.vocab.size)) < 0.1


def test_metrics_csv_rows_follow_the_recurrence(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    model.fit(c, steps=120, out=tmp_path / "run", seq_length=10, log_every=1, sample_every=50, val_chars=100)
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert rows == model.state.history  # floats are written with repr: they read back exactly
    assert [r.step for r in rows] == list(range(1, 121))
    assert rows[0].smooth_loss == rows[0].loss
    for prev, cur in itertools.pairwise(rows):
        assert cur.smooth_loss == SMOOTHING * prev.smooth_loss + (1.0 - SMOOTHING) * cur.loss
    measured = [r.step for r in rows if r.val_loss is not None]
    assert measured == [50, 100, 120]  # the sample points and the last update
    assert all(r.val_chars == 100 for r in rows if r.val_loss is not None)


def test_metrics_csv_round_trips_exactly(tmp_path):
    rows = [
        MetricRow(step=1, epoch=1, loss=0.1 + 0.2, smooth_loss=1 / 3),
        MetricRow(step=2, epoch=1, loss=1e-300, smooth_loss=2.0, val_loss=0.5, val_chars=100),
    ]
    text = metrics_csv(rows, 4)
    assert text == (
        "step,epoch,loss_per_char,smooth_loss_per_char,val_loss_per_char,val_chars,update_chars,loss_sum,"
        "smooth_loss_sum\n"
        "1,1,0.07500000000000001,0.08333333333333333,,,4,0.30000000000000004,0.3333333333333333\n"
        "2,1,2.5e-301,0.5,0.5,100,4,1e-300,2.0\n"
    )
    (tmp_path / "metrics.csv").write_text(text)
    assert read_metrics_csv(tmp_path / "metrics.csv") == rows


def test_samples_markdown_fences_any_text():
    """A sample holding backticks gets a longer code fence, so the Markdown stays intact."""
    assert fence("plain") == "```" and fence("a ``` b") == "````" and fence("x" + "`" * 7) == "`" * 8
    assert (fmt(None), fmt(math.nan), fmt(1.23456), fmt(2.0, ".1f")) == ("n/a", "n/a", "1.2346", "2.0")
    text = samples_markdown(
        [
            SampleRecord(step=0, epoch=1, smooth_loss=None, val_loss=None, val_chars=0, seed=1, text="x````y"),
            SampleRecord(step=60, epoch=1, smooth_loss=25.5, val_loss=1.25, val_chars=1500, seed=2, text="plain"),
        ],
        update_chars=10,
    )
    assert text == (
        "# Text synthesised during training\n\n"
        "## Update 0 (epoch 1): smooth loss n/a, validation loss not measured\n\n"
        "`````text\nx````y\n`````\n\n"
        "## Update 60 (epoch 1): smooth loss 2.5500/char, validation loss 1.2500/char on 1,500 chars\n\n"
        "```text\nplain\n```\n"
    )


def test_loss_decreases_and_run_folder_is_complete(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=16, seed=0)
    out = tmp_path / "run"
    res = model.fit(c, steps=400, out=out, **TINY)
    # the run's files; the lock file (runfolder.LOCK_FILE) is gone with the run
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    for f in RUN_FILES:
        assert (out / f).stat().st_size > 0, f
    lnK = math.log(c.vocab.size)
    assert res.step == 400 and not res.stopped and not res.time_limited
    assert res.smooth_loss < lnK - 0.5  # per character; the classic smooth loss moves slowly (time constant 1000)
    assert res.smooth_loss == res.smooth_loss_sum / 10
    rows = read_metrics_csv(out / "metrics.csv")
    assert np.mean([r.loss for r in rows[-5:]]) < 0.6 * 10 * lnK  # start: 10 ln K
    assert res.final_val_loss is not None and res.final_val_loss < 0.5 * lnK
    assert res.val_chars == c.val.size
    # chosen by the validation loss at the sample points (and the last update): still improving
    assert res.best_by == "validation" and res.best_step == 400
    assert res.best_loss == res.records[-1].val_loss and res.best_val_loss == res.final_val_loss
    assert len(res.passage) == 1000 and set(res.passage) <= set(c.vocab.chars)
    samples = [r for r in res.records if r.sample is not None]
    assert [r.step for r in samples] == [0, 60, 120, 180, 240, 300, 360, 400]  # the last update too
    assert all(len(r.sample) == 200 for r in samples)
    # record points: multiples of log_every or sample_every, and the last update
    assert [r.step for r in res.records if r.step] == sorted(set(range(20, 401, 20)) | set(range(60, 401, 60)))
    assert all(r.chars_per_sec > 0 for r in res.records if r.step)
    assert res.seconds == model.state.seconds > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 400 and summary["final_val_loss"] == res.final_val_loss
    assert summary["passage"] == res.passage and summary["seconds"] == res.seconds


def _straight(tmp_path, n, dtype=np.float64, **cfg):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5, dtype=dtype)
    model.fit(c, steps=n, out=tmp_path / "straight", **cfg)
    return model


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_resume_is_bit_for_bit(tmp_path, dtype):
    n, k = 300, 137  # k is not a record point and the run crosses an epoch boundary
    straight = _straight(tmp_path, n, dtype, **TINY)
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5, dtype=dtype)
    res = model.fit(c, steps=n, out=tmp_path / "split", max_steps=k, **TINY)
    assert res.stopped and res.step == k and res.passage is None
    assert not (tmp_path / "split" / "summary.json").exists()
    resumed = CharRNN.load(tmp_path / "split" / "last.npz")
    assert resumed.step == k and resumed.state.total_steps == n and resumed.state.t == k
    res2 = resumed.resume(_corpus(), out=tmp_path / "split")
    assert res2.step == n and not res2.stopped and res2.steps_done == n - k
    assert _params_equal(straight.params, resumed.params)
    assert resumed.params["l0.Wh"].dtype == dtype
    _assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_keyboard_interrupt_from_callback_saves_and_resumes(tmp_path):
    n = 260
    straight = _straight(tmp_path, n, **TINY)
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5)

    def cb(rec):
        if rec.step == 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(c, steps=n, out=tmp_path / "split", callback=cb, **TINY)
    ck = load_checkpoint(tmp_path / "split" / "last.npz")
    assert ck.state.step == 100 and [r.step for r in ck.state.history][-1] == 100
    assert (tmp_path / "split" / "loss.png").exists()
    resumed = CharRNN.from_checkpoint(ck)
    resumed.resume(_corpus(), out=tmp_path / "split")
    assert _params_equal(straight.params, resumed.params)
    _assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_sigint_during_cxx_chunk_stops_at_chunk_boundary(tmp_path, monkeypatch):
    n = 200
    straight = _straight(tmp_path, n, **TINY)
    real = _core.train_steps
    calls = []

    def interrupting(*a, **kw):
        calls.append(kw["n_steps"])
        out = real(*a, **kw)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while "inside" the chunk
        return out

    monkeypatch.setattr(_core, "train_steps", interrupting)
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5)
    with pytest.raises(KeyboardInterrupt):
        model.fit(c, steps=n, out=tmp_path / "split", **TINY)
    assert calls == [20, 20, 20]
    assert model.step == 60  # three chunks of 20, state consistent
    assert load_checkpoint(tmp_path / "split" / "last.npz").state.step == 60
    monkeypatch.setattr(_core, "train_steps", real)
    resumed = CharRNN.load(tmp_path / "split" / "last.npz")
    resumed.resume(_corpus(), out=tmp_path / "split")
    assert _params_equal(straight.params, resumed.params)
    _assert_same_run(tmp_path / "straight", tmp_path / "split")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_second_sigint_interrupts_at_once_and_saves_nothing(tmp_path, monkeypatch):
    """A second Ctrl-C interrupts at once and saves nothing: the engine may have updated the parameters
    in place without the bookkeeping, and saving that mix would make a checkpoint that resumes a
    different run."""
    real = _core.train_steps
    calls = []

    def twice(*a, **kw):
        calls.append(1)
        out = real(*a, **kw)
        if len(calls) == 3:  # two Ctrl-C while the third chunk (updates 41-60) runs
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(_core, "train_steps", twice)
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5)
    with pytest.raises(KeyboardInterrupt):
        model.fit(c, steps=200, out=tmp_path / "run", **TINY)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ck = load_checkpoint(tmp_path / "run" / "last.npz")
    assert ck.state.t == ck.state.step, f"last.npz says update {ck.state.step} but holds t = {ck.state.t}"
    assert ck.state.step == 0  # the checkpoint of the last sample point, untouched


def test_sigterm_is_deferred_like_sigint(tmp_path, monkeypatch):
    real = _core.train_steps
    calls = []

    def terminating(*a, **kw):
        calls.append(1)
        out = real(*a, **kw)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(_core, "train_steps", terminating)
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5)
    with pytest.raises(KeyboardInterrupt):
        model.fit(c, steps=200, out=tmp_path / "run", **TINY)
    assert model.step == 40 and load_checkpoint(tmp_path / "run" / "last.npz").state.step == 40
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_stop_training_from_callback_and_continue_in_memory():
    c = _corpus()
    straight = CharRNN.new(c, hidden=8, seed=2)
    straight.fit(c, steps=150, **TINY)

    def cb(rec):
        if rec.step == 80:
            raise StopTraining

    model = CharRNN.new(c, hidden=8, seed=2)
    res = model.fit(c, steps=150, callback=cb, **TINY)
    assert res.stopped and res.step == 80 and res.steps_done == 80
    res = model.fit(c)  # no steps given: continues the unfinished run to its target
    assert res.step == 150 and not res.stopped and res.steps_done == 70
    assert _params_equal(straight.params, model.params)


def test_fit_twice_counts_steps_and_keeps_config():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=2)
    model.fit(c, steps=30, seq_length=7, log_every=10, sample_every=1000)
    res = model.fit(c, steps=20)
    assert res.step == 50 and model.state.config["seq_length"] == 7 and model.state.total_steps == 50
    assert [r.step for r in res.records] == [40, 50]


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    """Finite weights whose output overflows: the first update after them is not applied."""
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    out = tmp_path / "run"

    def sabotage(rec):
        if rec.step == 30:
            model.params["l0.b"][:] = 1e300  # h = tanh(huge) = 1
            model.params["V"][:] = 1.5e308  # o = V h = 8 * 1.5e308 = inf

    with pytest.raises(TrainingDiverged) as ei:
        model.fit(c, steps=100, out=out, callback=sabotage, seq_length=10, log_every=10, sample_every=20)
    msg = str(ei.value)
    assert msg.startswith("training diverged: the loss or the gradient of update 31 is not finite (smooth loss so far ")
    assert msg.endswith(
        f"stopped after update 30 without applying it; the last good checkpoint is "
        f"{out / 'last.npz'} (update 20). Try a smaller learning rate (eta=0.1)."
    )
    assert ei.value.step == model.step == 30 and ei.value.checkpoint == out / "last.npz"
    assert model.state.t == 30
    ck = load_checkpoint(out / "last.npz")
    assert ck.state.step == 20
    assert not (out / "summary.json").exists()
    assert read_metrics_csv(out / "metrics.csv")[-1].step == 30


def test_divergence_before_any_checkpoint_names_none(monkeypatch):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    model.params["l0.b"][:] = 1e300
    model.params["V"][:] = 1.5e308
    msg = r"the loss or the gradient of update 1 is not finite .*no checkpoint was written"
    with pytest.raises(TrainingDiverged, match=msg):
        model.fit(c, steps=10, seq_length=10, log_every=5, sample_every=1000)
    assert model.step == 0 and model.state.t == 0 and not model.state.opt_state["M:V"].any()


def test_empty_validation_split_is_skipped():
    c = corpus_from_string(SMALL_TEXT, val_fraction=0.0)
    model = CharRNN.new(c, hidden=8)
    res = model.fit(c, steps=40, seq_length=10, log_every=20, sample_every=20)
    assert res.final_val_loss is None and res.val_chars == 0 and res.best_val_loss is None
    assert all(r.val_loss is None for r in res.records)


def test_validation_loss_matches_evaluate_loss():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=4)
    res = model.fit(c, steps=40, seq_length=10, log_every=20, sample_every=40, val_chars=100)
    rec = res.records[-1]
    assert rec.step == 40 and rec.val_chars == 100
    h = model.state.h[0]  # validation continues from stream 0's running state
    loss, _ = engine.evaluate_loss(model.params, c.val[:100], h)
    assert rec.val_loss == loss / 99
    full, _ = engine.evaluate_loss(model.params, c.val, h)
    assert res.final_val_loss == full / (c.val.size - 1)
    best, _ = engine.evaluate_loss(model.state.best_params, c.val, model.state.best_h)
    assert res.best_val_loss == best / (c.val.size - 1)


def test_epochs_option_sets_step_count():
    c = _corpus()
    model = CharRNN.new(c, hidden=8)
    res = model.fit(c, epochs=1, seq_length=10, log_every=1000, sample_every=1000)
    assert res.step == steps_per_epoch(c.train.size, 10) and res.epoch == 1
    with pytest.raises(ValueError, match="only one of"):
        model.fit(c, steps=3, epochs=1)
    fresh = CharRNN.new(c, hidden=8)
    assert fresh.fit(c, seq_length=50, log_every=1000, sample_every=1000).step == 2 * steps_per_epoch(2052, 50)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (dict(seq_length=0), ValueError, r"seq_length must be an integer in \[1, 100_000\], got 0"),
        (dict(eta=-1.0), ValueError, r"eta must be a number in \(0, 10\], got -1.0"),
        (dict(eta=1e307), ValueError, r"eta must be a number in \(0, 10\], got 1e\+307"),
        (dict(val_fraction=1.5), ValueError, r"val_fraction must be a number in \[0, 0.9\], got 1.5"),
        (dict(dropout="0.1"), TypeError, "dropout must be a number"),
        (dict(sample_evry=3), ValueError, r"unknown training option\(s\) \['sample_evry'\]"),
        (dict(steps=-1), ValueError, r"steps must be an integer in \[0, 10\*\*15\), got -1"),
        (dict(epochs=0), ValueError, r"epochs must be a number in \(0, 1e6\], got 0"),
        (dict(max_minutes=float("nan")), ValueError, "max_minutes must be a number"),
    ],
)
def test_bad_training_options(bad, exc, match):
    c = _corpus()
    kw = {"steps": 1, **bad} if "epochs" not in bad else bad
    with pytest.raises(exc, match=match):
        CharRNN.new(c, hidden=4).fit(c, **kw)


def test_text_shorter_than_a_chunk_is_refused():
    model = CharRNN.new(corpus_from_string("abcabc", 0.0), hidden=4)
    with pytest.raises(ValueError, match="seq_length=25 needs at least 26"):
        model.fit("abcabc", steps=1, val_fraction=0.0)
    big = CharRNN.new(_corpus(), hidden=4)
    with pytest.raises(ValueError, match=r"seq_length=10 needs at least 11 per stream, 2200 for batch_size=200"):
        big.fit(_corpus(), steps=1, seq_length=10, batch_size=200)


def test_optimizer_and_batch_size_cannot_change_mid_run():
    c = _corpus()
    model = CharRNN.new(c, hidden=8)
    model.fit(c, steps=10, seq_length=10, sample_every=1000)
    with pytest.raises(ValueError, match=r"cannot change optimizer of a run \('adagrad' -> 'adam'\)"):
        model.fit(c, steps=10, optimizer="adam")
    with pytest.raises(ValueError, match=r"cannot change batch_size of a run \(1 -> 2\)"):
        model.fit(c, steps=10, batch_size=2)
    model.reset_training()
    assert model.fit(c, steps=5, optimizer="adam", seq_length=10, sample_every=1000).step == 5
    assert model.state.config["eta"] == 2e-3  # Adam's default rate


def test_lr_decay_at_epoch_boundaries():
    c = _corpus()
    spe = steps_per_epoch(c.train.size, 10)  # 205
    model = CharRNN.new(c, hidden=8, seed=0)
    recs = []
    model.fit(
        c,
        steps=2 * spe + 30,
        callback=recs.append,
        eta=0.08,
        lr_decay=0.5,
        lr_decay_every=1,
        seq_length=10,
        log_every=50,
        sample_every=1000,
    )
    steps = [r.step for r in recs if r.step > 0]
    assert steps == [50, 100, 150, 200, 250, 300, 350, 400, 440]
    # chunks end where the rate changes: the record at 250 is the chunk 206-250, all of epoch 2
    for r in recs[1:]:
        assert r.lr == 0.08 * 0.5 ** ((r.step - 1) // spe), r.step
    # a chunk-by-chunk reference with the same rates
    ref = CharRNN.new(c, hidden=8, seed=0)
    st = init_opt_state(ref.params)
    h, pos = None, 0
    for e, n in enumerate([spe, spe, 30]):
        _, h, pos, _, _ = engine.train_steps(
            ref.params, st, c.train, h, n_steps=n, seq_length=10, pos=pos, eta=0.08 * 0.5**e
        )
    assert _params_equal(ref.params, model.params)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_linear_and_cosine_schedules_over_the_steps(schedule):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    recs = []
    model.fit(
        c,
        steps=100,
        callback=recs.append,
        eta=0.1,
        lr_schedule=schedule,
        lr_final=0.2,
        seq_length=10,
        log_every=10,
        sample_every=1000,
    )
    from charrnn_ext.config import TrainConfig

    cfg = TrainConfig(eta=0.1, lr_schedule=schedule, lr_final=0.2)
    # the rate of a chunk is the schedule's rate at its first update
    for r in recs[1:]:
        start = r.step - 10
        assert r.lr == cfg.lr_at(start, 205, start / 100), r.step
    assert recs[1].lr == 0.1 and recs[-1].lr < 0.1 * (0.2 + 0.8 * 0.15)
    ref = CharRNN.new(c, hidden=8, seed=0)
    st = init_opt_state(ref.params)
    h, pos = None, 0
    for i in range(10):
        _, h, pos, _, _ = engine.train_steps(
            ref.params, st, c.train, h, n_steps=10, seq_length=10, pos=pos, eta=cfg.lr_at(10 * i, 205, i / 10)
        )
    assert _params_equal(ref.params, model.params)


def test_warmup_chunks_and_rates():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    recs = []
    model.fit(c, steps=60, callback=recs.append, eta=0.1, warmup=40, seq_length=10, log_every=20, sample_every=1000)
    # during warm-up chunks are warmup // 20 = 2 updates long
    assert [r.step for r in recs if r.step] == [20, 40, 60]
    assert recs[1].lr == pytest.approx(0.1 * 19 / 40, rel=1e-15)  # the chunk of updates 19-20 starts at step 18
    assert recs[2].lr == pytest.approx(0.1 * 39 / 40, rel=1e-15)
    assert recs[3].lr == 0.1


def test_max_minutes_ends_the_run_as_finished(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    res = model.fit(
        c,
        steps=10**7,
        out=tmp_path / "run",
        max_minutes=0.002,
        seq_length=10,
        log_every=50,
        sample_every=10**6,
        val_chars=100,
    )
    assert res.time_limited and not res.stopped and 0 < res.step < 10**7
    assert res.seconds >= 0.12 and model.state.budget_seconds == pytest.approx(0.12)
    assert model.state.total_steps == res.step and res.final_val_loss is not None
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["time_limited"] and summary["step"] == res.step
    assert "status: finished" in (tmp_path / "run" / "report.md").read_text()
    assert load_checkpoint(tmp_path / "run" / "last.npz").state.step == res.step
    assert read_metrics_csv(tmp_path / "run" / "metrics.csv")[-1].step == res.step


def test_time_budget_counts_across_sessions(tmp_path, monkeypatch):
    """max_minutes is the run's training time over all its sessions, stored in
    the checkpoint; the linear schedule's progress is the share of it used.
    A fake clock makes every chunk take exactly 1.5 s; the budget is 7.5 s."""
    c = _corpus()
    opts = dict(seq_length=10, log_every=10, sample_every=10**6, val_chars=100, lr_schedule="linear", eta=0.1)
    monkeypatch.setattr(training, "time", FakeClock(1.5))
    straight = CharRNN.new(c, hidden=8, seed=0)
    recs = []
    res = straight.fit(c, steps=10**6, max_minutes=0.125, callback=recs.append, **opts)
    assert res.time_limited and res.step == 50 and res.seconds == 7.5 and straight.state.total_steps == 50
    assert [r.lr for r in recs[1:]] == pytest.approx([0.1, 0.08, 0.06, 0.04, 0.02], rel=1e-14)

    monkeypatch.setattr(training, "time", FakeClock(1.5))
    model = CharRNN.new(c, hidden=8, seed=0)
    first = model.fit(c, steps=10**6, out=tmp_path / "run", max_minutes=0.125, max_steps=20, **opts)
    assert first.stopped and not first.time_limited and first.step == 20 and first.seconds == 3.0
    ck = load_checkpoint(tmp_path / "run" / "last.npz")
    assert ck.state.seconds == 3.0 and ck.state.budget_seconds == 7.5
    resumed = CharRNN.from_checkpoint(ck)
    monkeypatch.setattr(training, "time", FakeClock(1.5))
    res2 = resumed.resume(c, out=tmp_path / "run")  # no max_minutes: the stored budget applies
    assert res2.time_limited and res2.step == 50 and res2.seconds == 7.5 and res2.steps_done == 30
    assert _params_equal(straight.params, resumed.params)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["seconds"] == 7.5 and summary["time_limited"] and summary["step"] == 50
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["budget_seconds"] == 7.5
