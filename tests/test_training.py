"""The training loop: smooth loss, records, resume, interruption, divergence."""
from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest

from charrnn_ext import _core
from charrnn_ext.checkpoint import load_checkpoint
from charrnn_ext.data import corpus_from_string
from charrnn_ext.model import CharRNN
from charrnn_ext.params import PARAM_NAMES, copy_params, zeros_like_params
from charrnn_ext.training import (
    StopTraining,
    TrainConfig,
    TrainingDiverged,
    read_metrics_csv,
    steps_per_epoch,
)

from conftest import SMALL_TEXT, TINY

RUN_FILES = ["metrics.csv", "samples.md", "loss.png", "best.npz", "last.npz", "config.json",
             "gradcheck.md", "summary.json", "report.md"]


def _corpus():
    return corpus_from_string(SMALL_TEXT)


def _params_equal(a, b) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in PARAM_NAMES)


def test_first_smooth_loss_is_first_loss_and_near_T_lnK():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=3)
    recs = []
    model.fit(c, steps=5, callback=recs.append, seq_length=10, log_every=1, sample_every=1000)
    first = recs[1]  # recs[0] is the step-0 sample point (no loss yet)
    assert recs[0].step == 0 and math.isnan(recs[0].loss) and recs[0].sample is not None
    assert first.step == 1
    assert first.smooth_loss == first.loss
    # sig=0.01 makes the logits ~1e-3, so every p is about 1/K
    assert abs(first.loss - 10 * math.log(c.vocab.size)) < 0.05


def test_smooth_recurrence_exact_and_losses_match_core():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=1)
    init = copy_params(model.params)
    recs = []
    n = 250  # crosses the epoch boundary after update 205
    model.fit(c, steps=n, callback=recs.append, seq_length=10, log_every=1, sample_every=100, val_chars=100)
    steps = [r for r in recs if r.step > 0]
    assert [r.step for r in steps] == list(range(1, n + 1))
    # the same updates in one C++ call give bit-identical losses and parameters
    state = zeros_like_params(init)
    losses, h, pos, wraps, diverged = _core.train_steps(init, state, c.train, None, n_steps=n, seq_length=10)
    assert not diverged and wraps == 1
    np.testing.assert_array_equal(np.array([r.loss for r in steps]), losses)
    assert _params_equal(init, model.params)
    np.testing.assert_array_equal(h, model.state.h)
    assert pos == model.state.pos
    smooth = steps[0].loss
    assert steps[0].smooth_loss == smooth
    for r in steps[1:]:
        smooth = 0.999 * smooth + 0.001 * r.loss
        assert r.smooth_loss == smooth  # exact, not approximate
    spe = steps_per_epoch(c.train.size, 10)
    assert spe == 205
    assert [r.epoch for r in steps] == [1 + (r.step - 1) // spe for r in steps]


def test_metrics_csv_rows_follow_the_recurrence(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    model.fit(c, steps=120, out=tmp_path / "run", seq_length=10, log_every=1, sample_every=50, val_chars=100)
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert [r.step for r in rows] == list(range(1, 121))
    assert rows[0].smooth_loss == rows[0].loss
    for prev, cur in zip(rows, rows[1:]):
        assert cur.smooth_loss == 0.999 * prev.smooth_loss + 0.001 * cur.loss
    measured = [r.step for r in rows if r.val_loss is not None]
    assert measured == [50, 100]
    assert all(r.val_chars == 100 for r in rows if r.val_loss is not None)


def test_loss_decreases_and_run_folder_is_complete(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=16, seed=0)
    out = tmp_path / "run"
    res = model.fit(c, steps=400, out=out, **TINY)
    for f in RUN_FILES:
        assert (out / f).is_file(), f
    lnK = math.log(c.vocab.size)
    assert res.step == 400 and not res.stopped
    assert res.smooth_loss < 10 * lnK - 5  # smooth loss moves slowly (time constant 1000)
    rows = read_metrics_csv(out / "metrics.csv")
    assert np.mean([r.loss for r in rows[-5:]]) < 0.6 * 10 * lnK  # start: 10 ln K
    assert res.final_val_loss is not None and res.final_val_loss < 0.5 * lnK
    assert res.val_chars == c.val.size
    assert res.best_step == 400 and res.best_loss == res.smooth_loss  # still improving
    assert len(res.passage) == 1000 and set(res.passage) <= set(c.vocab.chars)
    samples = [r for r in res.records if r.sample is not None]
    assert [r.step for r in samples] == [0, 60, 120, 180, 240, 300, 360]
    assert all(len(r.sample) == 200 for r in samples)
    # record points: multiples of log_every or sample_every, and the last update
    assert [r.step for r in res.records if r.step] == sorted(set(range(20, 401, 20)) | set(range(60, 401, 60)))
    assert all(r.chars_per_sec > 0 for r in res.records if r.step)


def _straight_and_files(tmp_path, n, dtype=np.float64, **cfg):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5, dtype=dtype)
    model.fit(c, steps=n, out=tmp_path / "straight", **cfg)
    return model


def _assert_same_run(a, b):
    for f in ("metrics.csv", "samples.md", "summary.json", "report.md", "config.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    for f in ("last.npz", "best.npz"):
        x, y = load_checkpoint(a / f), load_checkpoint(b / f)
        assert _params_equal(x.params, y.params)
    x, y = load_checkpoint(a / "last.npz").state, load_checkpoint(b / "last.npz").state
    assert _params_equal(x.mem, y.mem) and np.array_equal(x.h, y.h)
    assert (x.pos, x.step, x.wraps, x.smooth_loss, x.best_step) == (y.pos, y.step, y.wraps, y.smooth_loss,
                                                                   y.best_step)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_resume_is_bit_for_bit(tmp_path, dtype):
    n, k = 300, 137  # k is not a record point and the run crosses an epoch boundary
    straight = _straight_and_files(tmp_path, n, dtype, **TINY)
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=5, dtype=dtype)
    res = model.fit(c, steps=n, out=tmp_path / "split", max_steps=k, **TINY)
    assert res.stopped and res.step == k and res.passage is None
    assert not (tmp_path / "split" / "summary.json").exists()
    resumed = CharRNN.load(tmp_path / "split" / "last.npz")
    assert resumed.step == k and resumed.state.total_steps == n
    res2 = resumed.resume(_corpus(), out=tmp_path / "split")
    assert res2.step == n and not res2.stopped
    assert _params_equal(straight.params, resumed.params)
    assert resumed.params["U"].dtype == dtype
    _assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_keyboard_interrupt_from_callback_saves_and_resumes(tmp_path):
    n = 260
    straight = _straight_and_files(tmp_path, n, **TINY)
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
    straight = _straight_and_files(tmp_path, n, **TINY)
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
    assert model.step == 60  # three chunks of 20, state consistent
    assert load_checkpoint(tmp_path / "split" / "last.npz").state.step == 60
    monkeypatch.setattr(_core, "train_steps", real)
    resumed = CharRNN.load(tmp_path / "split" / "last.npz")
    resumed.resume(_corpus(), out=tmp_path / "split")
    assert _params_equal(straight.params, resumed.params)
    _assert_same_run(tmp_path / "straight", tmp_path / "split")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


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
    assert res.step == 50 and model.state.config["seq_length"] == 7
    assert [r.step for r in res.records] == [40, 50]


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"not finite.*last good checkpoint.*last\.npz \(update 0\)") as ei:
        model.fit(c, steps=50, out=out, eta=1e307, seq_length=10, log_every=10, sample_every=20)
    assert ei.value.step == model.step == 1
    assert np.all(np.isfinite(model.params["V"]))  # the diverging update was not applied
    ck = load_checkpoint(out / "last.npz")
    assert ck.state.step == 0
    assert not (out / "summary.json").exists()


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
    loss, _ = _core.evaluate_loss(model.params, c.val[:100], model.state.h)  # from the running state
    assert rec.val_loss == loss / 99
    full, _ = _core.evaluate_loss(model.params, c.val, model.state.h)
    assert res.final_val_loss == full / (c.val.size - 1)


def test_epochs_option_sets_step_count():
    c = _corpus()
    model = CharRNN.new(c, hidden=8)
    res = model.fit(c, epochs=1, seq_length=10, log_every=1000, sample_every=1000)
    assert res.step == steps_per_epoch(c.train.size, 10) and res.epoch == 1
    with pytest.raises(ValueError, match="only one of"):
        model.fit(c, steps=3, epochs=1)


@pytest.mark.parametrize("bad, match", [
    (dict(seq_length=0), "seq_length must be a positive integer"),
    (dict(eta=-1.0), "eta must be a positive finite number"),
    (dict(val_fraction=1.5), r"val_fraction must be a number in \[0, 1\)"),
    (dict(sample_evry=3), "unknown training option"),
])
def test_bad_training_options(bad, match):
    c = _corpus()
    with pytest.raises(ValueError, match=match):
        CharRNN.new(c, hidden=4).fit(c, steps=1, **bad)


def test_text_shorter_than_a_chunk_is_refused():
    model = CharRNN.new(corpus_from_string("abcabc", 0.0), hidden=4)
    with pytest.raises(ValueError, match="seq_length=25 needs at least 26"):
        model.fit("abcabc", steps=1, val_fraction=0.0)


def test_train_config_round_trip():
    cfg = TrainConfig(seq_length=7, eta=0.05)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
