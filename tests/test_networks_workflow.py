"""Every cell, layer count and optimiser through CharRNN, Trainer,
checkpoints and the CLI: learning, batching, threads, dropout, bit-exact
resume, old checkpoints, filtered / streamed sampling."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import _core, cli, engine
from charrnn_ext.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint
from charrnn_ext.data import corpus_from_string
from charrnn_ext.layout import init_opt_state, param_shapes
from charrnn_ext.model import CharRNN
from cli_helpers import flags
from conftest import SMALL_TEXT, TINY

DATA = Path(__file__).parent / "data"
OPTIMIZERS = ("adagrad", "rmsprop", "adam")


def _corpus():
    return corpus_from_string(SMALL_TEXT)


def _same_arrays(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _unigram_entropy(indices: np.ndarray) -> float:
    """Per-character loss (nats) of predicting every character from the text's
    character frequencies alone: what a model without context achieves."""
    counts = np.bincount(indices)
    p = counts[counts > 0] / indices.size
    return float(-(p * np.log(p)).sum())


def _normalised(path: Path) -> str:
    """A run file with the (wall-clock) training time masked."""
    text = path.read_text()
    if path.name == "summary.json":
        d = json.loads(text)
        d.pop("seconds")
        return json.dumps(d, sort_keys=True)
    return re.sub(r"training time [\d,]+ s", "training time _ s", text)


def test_unigram_entropy_of_the_text():
    c = _corpus()
    H = _unigram_entropy(c.train)
    assert H == pytest.approx(2.72507, abs=1e-5)
    assert H < math.log(c.vocab.size) == pytest.approx(3.17805, abs=1e-5)


LR = {"adagrad": 0.1, "rmsprop": 0.01, "adam": 0.02}
NETS = [("rnn", 1), ("rnn", 2), ("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2)]


@pytest.mark.parametrize("cell,layers", NETS, ids=[f"{c}x{n}" for c, n in NETS])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_cell_and_optimiser_learns(cell, layers, optimizer):
    """400 updates of 10 characters: training and validation loss per
    character end far below the unigram entropy H (2.73 nats; a uniform guess
    is ln 24 = 3.18), i.e. the networks use context."""
    c = _corpus()
    H = _unigram_entropy(c.train)
    model = CharRNN.new(c, hidden=16, cell=cell, layers=layers, seed=0)
    assert model.classic == ((cell, layers) == ("rnn", 1))
    assert list(model.params) == list(param_shapes(cell, c.vocab.size, 16, layers))
    res = model.fit(
        c,
        steps=400,
        optimizer=optimizer,
        eta=LR[optimizer],
        seq_length=10,
        log_every=20,
        sample_every=1000,
        val_chars=150,
    )
    train = np.mean([r.loss for r in res.records if r.step > 0][-3:]) / 10  # per character
    assert train < 0.6 * H, (train, H)
    assert res.final_val_loss < 0.6 * H, (res.final_val_loss, H)
    assert res.best_val_loss < 0.6 * H
    assert model.state.t == 400  # the core counts updates for every optimiser (Adam and dropout use it)


# -- batching, threads and dropout work for every cell and optimiser ----------


@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("lstm", 2), ("gru", 1)])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_batching_threads_and_dropout_for_every_cell_and_optimiser(cell, layers, optimizer):
    """batch_size 3, dropout 0.2: runs (no refusal) and gives bit-identical
    results with 1 and 2 threads. hidden = 40 > 32 units per float64 panel,
    so two threads really split the work."""
    c = _corpus()
    runs = []
    for threads in (1, 2):
        model = CharRNN.new(c, hidden=40, cell=cell, layers=layers, seed=3)
        res = model.fit(
            c,
            steps=30,
            optimizer=optimizer,
            batch_size=3,
            dropout=0.2,
            threads=threads,
            seq_length=10,
            log_every=10,
            sample_every=1000,
            val_chars=100,
            passage_chars=50,
        )
        runs.append((model, res))
    (a, ra), (b, rb) = runs
    assert _same_arrays(a.params, b.params) and _same_arrays(a.state.opt_state, b.state.opt_state)
    assert np.array_equal(a.state.h, b.state.h) and a.state.h.shape == (3, layers, (2 if cell == "lstm" else 1) * 40)
    assert [r.step for r in ra.records] == [r.step for r in rb.records] == [0, 10, 20, 30]
    assert np.array_equal([r.loss for r in ra.records], [r.loss for r in rb.records], equal_nan=True)
    assert ra.final_val_loss == rb.final_val_loss and ra.passage == rb.passage
    assert a.state.t == 30 and a.state.config["dropout"] == 0.2 and b.state.config["threads"] == 2
    assert ra.final_val_loss < math.log(c.vocab.size)  # it trained


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_dropout_masks_follow_the_seed(cell):
    """With dropout the model's seed (not only the initial weights) decides the
    result; without dropout it does not."""
    c = _corpus()
    base = CharRNN.new(c, hidden=8, cell=cell, layers=2, seed=1)

    def train(seed, dropout):
        m = CharRNN(base.vocab, {k: v.copy() for k, v in base.params.items()}, seed=seed)
        m.fit(c, steps=20, dropout=dropout, seq_length=10, log_every=10, sample_every=1000, passage_chars=10)
        return m.params

    assert _same_arrays(train(1, 0.3), train(1, 0.3))  # deterministic
    assert not _same_arrays(train(1, 0.3), train(2, 0.3))  # other masks
    assert not _same_arrays(train(1, 0.3), train(1, 0.0))  # dropout changes the updates
    assert _same_arrays(train(1, 0.0), train(2, 0.0))  # no dropout: the seed only drew the weights


# -- bit-exact resume ---------------------------------------------------------


def _split_equals_straight(tmp_path, make, n, k, resume_threads=None, **cfg):
    c = _corpus()
    straight = make()
    straight.fit(c, steps=n, out=tmp_path / "straight", **cfg)
    split = make()
    res = split.fit(c, steps=n, out=tmp_path / "split", max_steps=k, **cfg)
    assert res.stopped and res.step == k
    resumed = CharRNN.load(tmp_path / "split" / "last.npz")
    assert resumed.step == k and resumed.state.t == k
    resumed.resume(_corpus(), out=tmp_path / "split", threads=resume_threads)
    assert _same_arrays(straight.params, resumed.params)
    a, b = straight.state, resumed.state
    assert _same_arrays(a.opt_state, b.opt_state) and np.array_equal(a.h, b.h) and a.t == b.t == n
    assert np.array_equal(a.positions, b.positions)
    assert (a.step, a.wraps, a.smooth_loss, a.best_step, a.best_loss) == (
        b.step,
        b.wraps,
        b.smooth_loss,
        b.best_step,
        b.best_loss,
    )
    assert a.history == b.history and a.samples == b.samples
    for f in ("metrics.csv", "samples.md"):
        assert (tmp_path / "straight" / f).read_bytes() == (tmp_path / "split" / f).read_bytes(), f
    assert _normalised(tmp_path / "straight" / "summary.json") == _normalised(tmp_path / "split" / "summary.json")
    report = _normalised(tmp_path / "straight" / "report.md")
    if resume_threads is not None:  # the report lists the threads the run ended with
        old = f"| --threads | {a.config['threads']} |"
        assert report.count(old) == 1
        report = report.replace(old, f"| --threads | {resume_threads} |")
    assert report == _normalised(tmp_path / "split" / "report.md")
    return resumed


def test_resume_lstm_adam_bit_for_bit(tmp_path):
    make = lambda: CharRNN.new(_corpus(), hidden=8, cell="lstm", seed=4)  # noqa: E731
    resumed = _split_equals_straight(tmp_path, make, 260, 137, optimizer="adam", **TINY)
    assert resumed.state.t == 260 and resumed.cell == "lstm"
    assert set(resumed.state.opt_state) == {f"{s}:{k}" for k in resumed.params for s in "mv"} | {"t"}
    ck = load_checkpoint(tmp_path / "split" / "best.npz")
    assert ck.meta["cell"] == "lstm" and ck.start_h.shape == (1, 16)


def test_resume_gru_rmsprop_dropout_batched_bit_for_bit(tmp_path):
    make = lambda: CharRNN.new(_corpus(), hidden=8, cell="gru", layers=2, seed=6)  # noqa: E731
    resumed = _split_equals_straight(tmp_path, make, 150, 67, optimizer="rmsprop", dropout=0.3, batch_size=3, **TINY)
    assert resumed.state.h.shape == (3, 2, 8) and resumed.state.positions.shape == (3,)
    assert resumed.start_state.shape == (2, 8)


def test_resume_lstm_adam_dropout_batched_with_other_threads_bit_for_bit(tmp_path):
    """Trained with 1 thread, resumed with 2: the same run."""
    make = lambda: CharRNN.new(_corpus(), hidden=40, cell="lstm", seed=2)  # noqa: E731
    resumed = _split_equals_straight(
        tmp_path,
        make,
        80,
        33,
        resume_threads=2,
        optimizer="adam",
        dropout=0.25,
        batch_size=2,
        seq_length=10,
        log_every=10,
        sample_every=40,
        val_chars=100,
        passage_chars=50,
    )
    assert resumed.state.config["threads"] == 2 and resumed.state.h.shape == (2, 1, 80)


def test_resume_batched_vanilla_bit_for_bit(tmp_path):
    make = lambda: CharRNN.new(_corpus(), hidden=8, seed=4)  # noqa: E731
    resumed = _split_equals_straight(tmp_path, make, 150, 67, batch_size=3, **TINY)
    assert resumed.classic and resumed.state.h.shape == (3, 1, 8)
    assert resumed.state.positions.shape == (3,)
    assert resumed.start_state.shape == (1, 8)
    # one C++ call gives the same parameters
    c = _corpus()
    ref = CharRNN.new(c, hidden=8, seed=4)
    st = init_opt_state(ref.params)
    engine.train_steps(ref.params, st, c.train, None, n_steps=150, batch_size=3, seq_length=10)
    assert _same_arrays(ref.params, resumed.params) and _same_arrays(st, resumed.state.opt_state)


# -- the classic default ------------------------------------------------------


def test_default_run_is_the_classic_experiment_in_format_3(tmp_path, monkeypatch):
    calls = []
    real = _core.train_steps

    def recording(*a, **kw):
        calls.append({k: v for k, v in kw.items() if k != "positions"})
        return real(*a, **kw)

    monkeypatch.setattr(_core, "train_steps", recording)
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=1)
    model.fit(c, steps=40, out=tmp_path / "run", **TINY)
    assert [k["n_steps"] for k in calls] == [20, 20]
    for kw in calls:
        assert kw == {
            "n_steps": 20,
            "seq_length": 10,
            "batch_size": 1,
            "cell": None,
            "options": {
                "optimizer": "adagrad",
                "eta": 0.1,
                "clip": 5.0,
                "clip_mode": "elementwise",
                "gamma": 0.9,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-8,
                "dropout": 0.0,
                "seed": 1,
            },
            "threads": 1,
            "precision": "full",  # the classic run multiplies in float64
        }
    names = {"l0.Wx", "l0.Wh", "l0.b", "V", "c"}
    assert set(model.params) == names and set(model.state.opt_state) == {f"M:{k}" for k in names} | {"t"}
    with np.load(tmp_path / "run" / "last.npz", allow_pickle=False) as z:
        assert int(z["format_version"]) == FORMAT_VERSION == 3
        assert {f"param_{k}" for k in names} | {f"opt:M:{k}" for k in names} | {"opt:t", "h", "positions"} <= set(
            z.files
        )
        assert not any(f.startswith("adagrad_") or f in ("param_U", "param_W", "pos") for f in z.files)
        assert z["h"].shape == (1, 1, 8) and z["positions"].tolist() == [400] and int(z["opt:t"]) == 40


def test_rnn_adam_keeps_network_names():
    c = _corpus()
    model = CharRNN.new(c, hidden=8, seed=1)
    model.fit(c, steps=50, optimizer="adam", seq_length=10, log_every=25, sample_every=1000, val_chars=100)
    assert set(model.params) == {"l0.Wx", "l0.Wh", "l0.b", "V", "c"} and model.state.h.shape == (1, 1, 8)
    assert set(model.state.opt_state) == {f"{s}:{k}" for k in model.params for s in "mv"} | {"t"}
    assert model.state.config["eta"] == 2e-3  # Adam's default rate


# -- old checkpoints ----------------------------------------------------------


def test_v1_checkpoint_loads_samples_and_continues():
    old = DATA / "v1_training.npz"
    with np.load(old, allow_pickle=False) as z:
        assert int(z["format_version"]) == 1 and "param_U" in z.files and "adagrad_U" in z.files
    ckpt = load_checkpoint(old)
    assert ckpt.format_version == 1
    model = CharRNN.from_checkpoint(ckpt)
    assert (model.cell, model.layers, model.classic, model.hidden, model.step) == ("rnn", 1, True, 6, 30)
    assert set(model.params) == {"l0.Wx", "l0.Wh", "l0.b", "V", "c"}
    assert model.state.config["optimizer"] == "adagrad" and model.state.config["eta"] == 0.1  # defaults apply
    assert model.state.h.shape == (1, 1, 6) and model.state.positions.tolist() == [300] and model.state.t == 30
    # the text the code before format 2 drew from this file with seed 3
    assert model.sample(40, seed=3) == ",hh .i tatedaanha Aehtaann .hsln t. ghd "
    # continuing it is the same as training 50 updates straight: bit for bit
    # with the fused multiply-add kernels the file's first 30 updates were
    # made with; the portable baseline kernels round a*b+c twice, which moves
    # the last bits (the engine's documented 1e-10 between instruction sets)
    c = _corpus()
    model.fit(c, steps=20)
    straight = CharRNN.new(c, hidden=6, seed=11)
    straight.fit(c, steps=50, seq_length=10, log_every=10, sample_every=1000, val_chars=50)
    assert model.state.t == 50
    if cx.simd_level() != "baseline":
        assert _same_arrays(straight.params, model.params)
        assert _same_arrays(straight.state.opt_state, model.state.opt_state)
    for a, b in ((straight.params, model.params), (straight.state.opt_state, model.state.opt_state)):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-12 * float(np.max(np.abs(a[k]))), err_msg=k)


def test_checkpoint_validation_of_network_files(tmp_path):
    c = _corpus()
    model = CharRNN.new(c, hidden=8, cell="gru", layers=2, seed=2)
    model.fit(c, steps=20, out=tmp_path / "run", optimizer="rmsprop", **TINY)
    back = CharRNN.load(tmp_path / "run" / "last.npz")
    assert (back.cell, back.layers) == ("gru", 2) and _same_arrays(back.params, model.params)
    assert _same_arrays(back.state.opt_state, model.state.opt_state)
    src = tmp_path / "run" / "last.npz"
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def refused(change, message):
        bad = dict(arrays)
        change(bad)
        path = tmp_path / "bad.npz"
        np.savez(path, **bad)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(info.value) == f"{path}: {message}"

    refused(
        lambda a: a.update(meta=np.array(json.dumps({**json.loads(str(arrays["meta"])), "cell": "lstm"}))),
        "unexpected parameter entries ['param_l0.bh', 'param_l1.bh'] for a lstm network with 2 layer(s)",
    )
    refused(
        lambda a: a.pop("opt:M:l1.Wh"),
        "missing required entry 'opt:M:l1.Wh'; the file is not a complete charrnn_ext checkpoint",
    )
    refused(lambda a: a.update(h=np.zeros((3, 8))), "entry 'h' has shape (3, 8), expected (1, 2, 8)")
    refused(
        lambda a: a.update(meta=np.array(json.dumps({**json.loads(str(arrays["meta"])), "layers": 3}))),
        "meta field 'layers' says 3 but the archive holds 2 layer(s) of parameters",
    )
    refused(
        lambda a: a.update(positions=np.array([5000])),
        "positions [5000] lie outside the streams' segments of 2052 characters",
    )


# -- sampling -----------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
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
    assert model.sample(300, top_p=1e-9, seed=5) == k1  # the smallest set is the most probable character
    with pytest.raises(ValueError, match="'Z'"):
        model.sample(5, prime="Zebra")


# -- CLI ---------------------------------------------------------------------

CLI_TRAIN = [*flags(hidden=8, **TINY), "--no-progress"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("nets_cli") / "small.txt"
    p.write_text(SMALL_TEXT)
    return p


def test_cli_network_options_reach_config_and_report(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    rc = cli.main(
        [
            "train",
            "--text",
            str(text_file),
            "--out",
            str(out),
            *CLI_TRAIN,
            "--steps",
            "80",
            "--cell",
            "gru",
            "--layers",
            "2",
            "--optimizer",
            "rmsprop",
            "--gamma",
            "0.95",
            "--clip-mode",
            "global_norm",
            "--lr-decay",
            "0.9",
            "--lr-decay-every",
            "2",
        ]
    )
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["model"]["cell"], cfg["model"]["layers"]) == ("gru", 2)
    t = cfg["train"]
    assert (t["optimizer"], t["gamma"], t["clip_mode"], t["eta"], t["lr_decay"], t["lr_decay_every"]) == (
        "rmsprop",
        0.95,
        "global_norm",
        2e-3,
        0.9,
        2,
    )
    report = (out / "report.md").read_text()
    assert "- Model: gru, 2 layer(s) of 8 units, 1,464 parameters, float64" in report
    for row in (
        "| --optimizer | rmsprop |",
        "| --gamma | 0.95 |",
        "| --clip-mode | global_norm |",
        "| --eta | 0.002 |",
        "| --lr-decay | 0.9 |",
        "| --lr-decay-every | 2 |",
    ):
        assert row in report, row
    capsys.readouterr()
    # resuming refuses a changed choice
    assert cli.main(["train", "--resume", str(out), "--optimizer", "adam", "--steps", "90"]) == 2
    assert "--optimizer adam differs from the run's value rmsprop" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out), "--steps", "100", "--no-progress"]) == 0
    assert load_checkpoint(out / "last.npz").state.step == 100


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_cli_batched_is_deterministic_across_threads(tmp_path, text_file, cell):
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"run{threads}"
        assert (
            cli.main(
                [
                    "train",
                    "--text",
                    str(text_file),
                    "--out",
                    str(out),
                    *CLI_TRAIN,
                    "--hidden",
                    "40",
                    "--steps",
                    "70",
                    "--batch-size",
                    "4",
                    "--threads",
                    threads,
                    "--cell",
                    cell,
                    "--dropout",
                    "0.1",
                ]
            )
            == 0
        )
        outs.append(out)
    a, b = load_checkpoint(outs[0] / "last.npz"), load_checkpoint(outs[1] / "last.npz")
    assert _same_arrays(a.params, b.params) and np.array_equal(a.state.h, b.state.h)
    assert a.state.h.shape == (4, 1, 40 * (2 if cell == "lstm" else 1)) and a.state.config["batch_size"] == 4
    assert a.state.config["threads"] == 1 and b.state.config["threads"] == 2
    assert (outs[0] / "metrics.csv").read_bytes() == (outs[1] / "metrics.csv").read_bytes()
    assert (outs[0] / "samples.md").read_bytes() == (outs[1] / "samples.md").read_bytes()
    assert "the 4 streams' gradients are summed into one update" in (outs[0] / "report.md").read_text()


def test_cli_max_minutes(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--text",
                str(text_file),
                "--out",
                str(out),
                *CLI_TRAIN,
                "--max-minutes",
                "0.002",
                "--log-every",
                "500",
                "--sample-every",
                "100000",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert re.search(r"time budget 0\.1 s used up: training took \d+\.\d s.*the run ends at update", err)
    assert "done:" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["time_limited"] and summary["seconds"] >= 0.12
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["max_minutes"] == 0.002 and cfg["budget_seconds"] == pytest.approx(0.12)


def test_cli_sample_filters_and_stream(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--text",
                str(text_file),
                "--out",
                str(out),
                *CLI_TRAIN,
                "--steps",
                "120",
                "--cell",
                "lstm",
                "--optimizer",
                "adam",
            ]
        )
        == 0
    )
    capsys.readouterr()
    model = CharRNN.load(out)
    for extra, kw in (
        (["--top-k", "3"], {"top_k": 3}),
        (["--top-p", "0.7"], {"top_p": 0.7}),
        (["--greedy"], {"greedy": True}),
        (["--temperature", "0.5"], {"temperature": 0.5}),
    ):
        assert cli.main(["sample", str(out), "-n", "900", "--seed", "5", "--prime", "The", *extra]) == 0
        printed = capsys.readouterr().out
        assert printed == "The" + model.sample(900, seed=5, prime="The", **kw) + "\n", extra
    assert cli.main(["sample", str(out), "-n", "5", "--prime", "Q€"]) == 2
    assert "'€'" in capsys.readouterr().err
