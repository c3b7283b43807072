"""The general networks, optimisers, batching, lr decay, time budget and
filtered / streamed sampling through CharRNN, Trainer, checkpoints and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from charrnn_ext import _core, cli
from charrnn_ext.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint
from charrnn_ext.data import corpus_from_string
from charrnn_ext.model import CharRNN
from charrnn_ext.params import PARAM_NAMES
from charrnn_ext.training import read_metrics_csv, steps_per_epoch

from conftest import SMALL_TEXT, TINY

DATA = Path(__file__).parent / "data"


def _corpus():
    return corpus_from_string(SMALL_TEXT)


def _same_arrays(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


LR = {"adagrad": 0.1, "rmsprop": 0.005, "adam": 0.01}


@pytest.mark.parametrize("cell,layers", [("rnn", 2), ("lstm", 1), ("gru", 1)])
@pytest.mark.parametrize("optimizer", ["adagrad", "rmsprop", "adam"])
def test_each_cell_and_optimiser_learns(cell, layers, optimizer):
    c = _corpus()
    model = CharRNN.new(c, hidden=16, cell=cell, layers=layers, seed=0)
    assert not model.classic and "l0.Wx" in model.params
    res = model.fit(c, steps=300, optimizer=optimizer, eta=LR[optimizer], seq_length=10, log_every=20,
                    sample_every=1000, val_chars=150)
    losses = [r.loss for r in res.records if r.step > 0]
    lnK = math.log(c.vocab.size)
    start = 10 * lnK  # the loss of the uniform prediction, where sig=0.01 starts
    assert np.mean(losses[-3:]) < 0.75 * start, losses[-3:]
    assert res.final_val_loss < 0.9 * lnK
    assert model.state.t == 300  # the core counts updates for every optimiser (Adam uses it)


def _split_equals_straight(tmp_path, make, n, k, **cfg):
    c = _corpus()
    straight = make()
    straight.fit(c, steps=n, out=tmp_path / "straight", **cfg)
    split = make()
    res = split.fit(c, steps=n, out=tmp_path / "split", max_steps=k, **cfg)
    assert res.stopped and res.step == k
    resumed = CharRNN.load(tmp_path / "split" / "last.npz")
    resumed.resume(_corpus(), out=tmp_path / "split")
    assert _same_arrays(straight.params, resumed.params)
    a, b = straight.state, resumed.state
    assert _same_arrays(a.mem, b.mem) and np.array_equal(a.h, b.h) and a.t == b.t
    assert (a.pos, a.step, a.wraps, a.smooth_loss) == (b.pos, b.step, b.wraps, b.smooth_loss)
    for f in ("metrics.csv", "samples.md", "summary.json", "report.md", "config.json"):
        assert (tmp_path / "straight" / f).read_bytes() == (tmp_path / "split" / f).read_bytes(), f
    return resumed


def test_resume_lstm_adam_bit_for_bit(tmp_path):
    make = lambda: CharRNN.new(_corpus(), hidden=8, cell="lstm", seed=4)  # noqa: E731
    resumed = _split_equals_straight(tmp_path, make, 260, 137, optimizer="adam", **TINY)
    assert resumed.state.t == 260 and resumed.cell == "lstm"
    assert set(resumed.state.mem) == {f"{s}:{k}" for k in resumed.params for s in "mv"}
    ck = load_checkpoint(tmp_path / "split" / "best.npz")
    assert ck.meta["cell"] == "lstm" and ck.start_h.shape == (1, 16)


def test_resume_batched_vanilla_bit_for_bit(tmp_path):
    make = lambda: CharRNN.new(_corpus(), hidden=8, seed=4)  # noqa: E731
    resumed = _split_equals_straight(tmp_path, make, 150, 67, batch_size=3, **TINY)
    assert resumed.classic and resumed.state.h.shape == (3, 8)
    assert resumed.state.positions.shape == (3,)
    assert resumed.start_state.shape == (8,)
    # one C++ call gives the same parameters
    c = _corpus()
    ref = CharRNN.new(c, hidden=8, seed=4)
    mem = {k: np.zeros_like(v) for k, v in ref.params.items()}
    _core.train_steps_batched(ref.params, mem, c.train, None, n_steps=150, batch_size=3, seq_length=10)
    assert _same_arrays(ref.params, resumed.params)


def test_default_run_keeps_classic_layout_and_core_call(tmp_path, monkeypatch):
    calls = []
    real = _core.net_train_steps
    monkeypatch.setattr(_core, "net_train_steps", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=1)
    model.fit(c, steps=40, out=tmp_path / "run", **TINY)
    assert not calls and set(model.params) == set(PARAM_NAMES) and set(model.state.mem) == set(PARAM_NAMES)
    with np.load(tmp_path / "run" / "last.npz", allow_pickle=False) as z:
        assert int(z["format_version"]) == FORMAT_VERSION == 2
        assert {f"adagrad_{k}" for k in PARAM_NAMES} <= set(z.files)


def test_rnn_adam_on_network_path_keeps_classic_names():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=1)
    model.fit(c, steps=50, optimizer="adam", seq_length=10, log_every=25, sample_every=1000, val_chars=100)
    assert set(model.params) == set(PARAM_NAMES) and model.state.h.shape == (8,)
    assert set(model.state.mem) == {f"{s}:{k}" for k in PARAM_NAMES for s in "mv"}
    assert model.state.config["eta"] == 2e-3  # Adam's default rate


def test_batching_refused_outside_vanilla_adagrad():
    c = _corpus()
    with pytest.raises(ValueError, match="batching is only available for the vanilla RNN with AdaGrad"):
        CharRNN.new(c, hidden=8, cell="gru").fit(c, steps=5, batch_size=2)
    with pytest.raises(ValueError, match="batching is only available"):
        CharRNN.new(c, hidden=8).fit(c, steps=5, batch_size=2, optimizer="adam")


def test_optimizer_cannot_change_mid_run():
    c = _corpus()
    model = CharRNN.new(c, hidden=8)
    model.fit(c, steps=10, seq_length=10, sample_every=1000)
    with pytest.raises(ValueError, match="cannot change optimizer"):
        model.fit(c, steps=10, optimizer="adam")


def test_v1_checkpoint_loads_samples_and_continues():
    old = DATA / "v1_training.npz"
    with np.load(old, allow_pickle=False) as z:
        assert int(z["format_version"]) == 1
    model = CharRNN.load(old)
    assert (model.cell, model.layers, model.classic) == ("rnn", 1, True)
    assert model.state.config.get("optimizer") is None  # an old file: defaults apply
    # the text the code before format 2 drew from this file with seed 3
    assert model.sample(40, seed=3) == ",hh .i tatedaanha Aehtaann .hsln t. ghd "
    # continuing it is the same as training 50 updates straight
    c = _corpus()
    model.fit(c, steps=20)
    straight = CharRNN.new(c, hidden=6, seed=11)
    straight.fit(c, steps=50, seq_length=10, log_every=10, sample_every=1000, val_chars=50)
    assert _same_arrays(straight.params, model.params)


def test_checkpoint_validation_of_network_files(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, cell="gru", layers=2, seed=2)
    model.fit(c, steps=20, out=tmp_path / "run", optimizer="rmsprop", **TINY)
    back = CharRNN.load(tmp_path / "run" / "last.npz")
    assert (back.cell, back.layers) == ("gru", 2) and _same_arrays(back.params, model.params)
    assert _same_arrays(back.state.mem, model.state.mem)
    src = tmp_path / "run" / "last.npz"
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    bad = dict(arrays)
    bad["meta"] = np.array(json.dumps({**json.loads(str(arrays["meta"])), "cell": "lstm"}))
    np.savez(tmp_path / "bad1.npz", **bad)
    with pytest.raises(CheckpointError, match="unexpected parameter entries"):
        load_checkpoint(tmp_path / "bad1.npz")
    bad = dict(arrays)
    del bad["opt:M:l1.Wh"]
    np.savez(tmp_path / "bad2.npz", **bad)
    with pytest.raises(CheckpointError, match="opt:M:l1.Wh"):
        load_checkpoint(tmp_path / "bad2.npz")
    bad = dict(arrays)
    bad["h"] = np.zeros((3, 8))
    np.savez(tmp_path / "bad3.npz", **bad)
    with pytest.raises(CheckpointError, match="'h' has shape"):
        load_checkpoint(tmp_path / "bad3.npz")


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_filtered_and_streamed_sampling(cell):
    c = _corpus()
    model = CharRNN.new(c, hidden=12, cell=cell, seed=0)
    model.fit(c, steps=150, optimizer="adam", eta=0.01, seq_length=10, sample_every=1000)
    for kw in ({}, {"top_k": 3}, {"top_p": 0.6}, {"greedy": True}, {"top_k": 5, "top_p": 0.9}):
        text = model.sample(700, seed=9, prime="The", **kw)
        pieces = list(model.sample_stream(700, seed=9, prime="The", piece=64, **kw))
        assert len(pieces) == 11 and "".join(pieces) == text, kw
    assert model.sample(50, greedy=True, seed=1) == model.sample(50, greedy=True, seed=2)
    k1 = model.sample(300, top_k=1, seed=4)
    assert k1 == model.sample(300, greedy=True, seed=7)
    with pytest.raises(ValueError, match="'Z'"):
        model.sample(5, prime="Zebra")


def test_lr_decay_at_epoch_boundaries(tmp_path):
    c = _corpus()
    spe = steps_per_epoch(c.train.size, 10)  # 205
    model = CharRNN.new(c, hidden=8, seed=0)
    recs = []
    model.fit(c, steps=2 * spe + 30, callback=recs.append, eta=0.08, lr_decay=0.5, lr_decay_every=1,
              seq_length=10, log_every=1, sample_every=1000)
    lrs = {r.step: r.lr for r in recs if r.step > 0}
    assert len(lrs) == 2 * spe + 30
    for step, lr in lrs.items():
        assert lr == 0.08 * 0.5 ** ((step - 1) // spe), step
    # a chunk-by-chunk reference with the same rates
    ref = CharRNN.new(c, hidden=8, seed=0)
    mem = {k: np.zeros_like(v) for k, v in ref.params.items()}
    h, pos = None, 0
    for e, n in enumerate([spe, spe, 30]):
        _, h, pos, _, _ = _core.train_steps(ref.params, mem, c.train, h, n_steps=n, seq_length=10, pos=pos,
                                            eta=0.08 * 0.5 ** e)
    assert _same_arrays(ref.params, model.params)


def test_max_minutes_ends_the_run_as_finished(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=0)
    res = model.fit(c, steps=10**7, out=tmp_path / "run", max_minutes=0.002, seq_length=10, log_every=50,
                    sample_every=10**6, val_chars=100)
    assert res.time_limited and not res.stopped and 0 < res.step < 10**7
    assert model.state.total_steps == res.step and res.final_val_loss is not None
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["time_limited"] and summary["step"] == res.step
    assert "status: finished" in (tmp_path / "run" / "report.md").read_text()
    assert load_checkpoint(tmp_path / "run" / "last.npz").state.step == res.step
    assert read_metrics_csv(tmp_path / "run" / "metrics.csv")[-1].step == res.step


# -- CLI ---------------------------------------------------------------------

CLI_TRAIN = ["--hidden", "8", "--seq-length", "10", "--log-every", "20", "--sample-every", "60",
             "--val-chars", "150", "--no-progress"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("nets_cli") / "small.txt"
    p.write_text(SMALL_TEXT)
    return p


def test_cli_network_options_reach_config_and_report(tmp_path, text_file):
    out = tmp_path / "run"
    rc = cli.main(["train", "--text", str(text_file), "--out", str(out), *CLI_TRAIN, "--steps", "80",
                   "--cell", "gru", "--layers", "2", "--optimizer", "rmsprop", "--gamma", "0.95",
                   "--clip-mode", "global_norm", "--lr-decay", "0.9", "--lr-decay-every", "2"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["model"]["cell"], cfg["model"]["layers"]) == ("gru", 2)
    t = cfg["train"]
    assert (t["optimizer"], t["gamma"], t["clip_mode"], t["eta"], t["lr_decay"], t["lr_decay_every"]) == \
        ("rmsprop", 0.95, "global_norm", 2e-3, 0.9, 2)
    report = (out / "report.md").read_text()
    assert "gru, 2 layer(s)" in report and "RMSProp (gamma=0.95" in report and "global norm" in report
    # resuming refuses a changed choice
    assert cli.main(["train", "--resume", str(out), "--optimizer", "adam", "--steps", "90"]) == 2
    assert cli.main(["train", "--resume", str(out), "--steps", "100", "--no-progress"]) == 0
    assert load_checkpoint(out / "last.npz").state.step == 100


def test_cli_batched_is_deterministic_across_threads(tmp_path, text_file):
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"run{threads}"
        assert cli.main(["train", "--text", str(text_file), "--out", str(out), *CLI_TRAIN, "--steps", "70",
                         "--batch-size", "4", "--threads", threads]) == 0
        outs.append(out)
    a, b = load_checkpoint(outs[0] / "last.npz"), load_checkpoint(outs[1] / "last.npz")
    assert _same_arrays(a.params, b.params) and np.array_equal(a.state.h, b.state.h)
    assert a.state.h.shape == (4, 8) and a.state.config["batch_size"] == 4
    assert (outs[0] / "metrics.csv").read_bytes() == (outs[1] / "metrics.csv").read_bytes()
    assert "4 streams over 4 segments" in (outs[0] / "report.md").read_text()
    assert cli.main(["train", "--text", str(text_file), "--out", str(tmp_path / "x"), *CLI_TRAIN,
                     "--steps", "5", "--cell", "lstm", "--batch-size", "2"]) == 2


def test_cli_max_minutes(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--text", str(text_file), "--out", str(out), *CLI_TRAIN, "--steps", "100000000",
                     "--max-minutes", "0.002"]) == 0
    err = capsys.readouterr().err
    assert "budget" in err and "done:" in err
    assert json.loads((out / "summary.json").read_text())["time_limited"]


def test_cli_sample_filters_and_stream(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--text", str(text_file), "--out", str(out), *CLI_TRAIN, "--steps", "120",
                     "--cell", "lstm", "--optimizer", "adam"]) == 0
    capsys.readouterr()
    model = CharRNN.load(out)
    for extra, kw in ((["--top-k", "3"], {"top_k": 3}), (["--top-p", "0.7"], {"top_p": 0.7}),
                      (["--greedy"], {"greedy": True})):
        assert cli.main(["sample", str(out), "-n", "900", "--seed", "5", "--prime", "The", *extra]) == 0
        printed = capsys.readouterr().out
        assert printed == "The" + model.sample(900, seed=5, prime="The", **kw) + "\n", extra
    assert cli.main(["sample", str(out), "-n", "5", "--prime", "Q€"]) == 2
    assert "'€'" in capsys.readouterr().err
