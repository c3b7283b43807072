"""Checkpoint format 3: plain numpy.load, the keys, round trips, validation,
refusal of bad files, atomic writes."""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np
import pytest

from charrnn_ext import fileio
from charrnn_ext.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from charrnn_ext.data import corpus_from_string
from charrnn_ext.fileio import atomic_write, atomic_write_text, index_sha256, remove_stale_temp_files
from charrnn_ext.layout import net_init
from charrnn_ext.model import CharRNN
from charrnn_ext.state import Checkpoint, TrainState
from conftest import SMALL_TEXT, TINY

NAMES = ("l0.Wx", "l0.Wh", "l0.b", "V", "c")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    c = corpus_from_string(SMALL_TEXT)
    model = CharRNN.new(c, hidden=8, seed=7)
    model.fit(c, steps=130, out=out, **TINY)
    return model, out


def _rewrite(src, dst, change):
    """Copy an npz archive, letting change(dict) edit its arrays."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(dst, **arrays)
    return dst


def test_plain_numpy_load_without_pickle(trained):
    model, out = trained
    with np.load(out / "last.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(a.dtype != object for a in arrays.values())
    assert int(arrays["format_version"]) == FORMAT_VERSION == 3 and arrays["format_version"].ndim == 0
    assert str(arrays["format"]) == "charrnn_ext.checkpoint" and str(arrays["kind"]) == "training"
    for k in (
        "step",
        "wraps",
        "total_steps",
        "best_step",
        "smooth_loss",
        "last_loss",
        "best_loss",
        "seconds",
        "budget_seconds",
        "opt:t",
    ):
        assert arrays[k].ndim == 0, k
    assert int(arrays["step"]) == 130 and int(arrays["opt:t"]) == 130 and int(arrays["total_steps"]) == 130
    assert float(arrays["smooth_loss"]) == model.state.smooth_loss
    assert float(arrays["seconds"]) == model.state.seconds > 0 and math.isnan(float(arrays["budget_seconds"]))
    assert arrays["h"].shape == (1, 1, 8) and np.array_equal(arrays["h"], model.state.h)
    assert arrays["positions"].dtype == np.int64 and arrays["positions"].tolist() == [1300]
    meta = json.loads(str(arrays["meta"]))
    assert {k: meta[k] for k in ("hidden", "K", "seed", "dtype", "cell", "layers")} == {
        "hidden": 8,
        "K": 24,
        "seed": 7,
        "dtype": "float64",
        "cell": "rnn",
        "layers": 1,
    }
    assert "package_version" in meta
    corpus = json.loads(str(arrays["corpus"]))
    assert corpus["n_train"] == model.state.corpus["n_train"] == 2052
    c = corpus_from_string(SMALL_TEXT)
    assert corpus["train_sha256"] == index_sha256(c.train) and len(corpus["train_sha256"]) == 64
    assert json.loads(str(arrays["train_config"])) == model.state.config
    assert np.array_equal(arrays["vocab"], model.vocab.to_array())
    for name in NAMES:
        assert np.array_equal(arrays[f"param_{name}"], model.params[name])
        assert np.array_equal(arrays[f"opt:M:{name}"], model.state.opt_state[f"M:{name}"])
        assert np.array_equal(arrays[f"best_{name}"], model.state.best_params[name])
    assert not any(k.startswith(("param_U", "adagrad_", "pos")) and k != "positions" for k in arrays)
    assert arrays["hist_step"].tolist() == [r.step for r in model.state.history] == [20, 40, 60, 80, 100, 120, 130]
    samples = json.loads(str(arrays["samples"]))
    assert [s["step"] for s in samples] == [0, 60, 120, 130]  # the last update is a sample point


def test_best_checkpoint_is_a_model_checkpoint(trained):
    model, out = trained
    ck = load_checkpoint(out / "best.npz")
    assert ck.kind == "model" and ck.state is None and ck.format_version == FORMAT_VERSION
    assert ck.meta["step"] == model.state.best_step == 130
    assert ck.meta["best_by"] == "validation" and ck.meta["best_loss"] == model.state.best_loss
    assert ck.meta["smooth_loss"] == next(r.smooth_loss for r in model.state.history if r.step == 130)
    assert ck.start_h.shape == (1, 8) and np.array_equal(ck.start_h, model.state.best_h)
    for name in NAMES:
        assert np.array_equal(ck.params[name], model.state.best_params[name])
    with np.load(out / "best.npz", allow_pickle=False) as z:
        assert not {"h", "positions", "opt:t", "train_config"} & set(z.files)


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    path = model.save(tmp_path / "m.npz")
    back = CharRNN.load(path)
    assert back.vocab == model.vocab and back.seed == 7 and back.step == 130
    assert list(back.params) == list(model.params)
    for name in NAMES:
        assert np.array_equal(back.params[name], model.params[name])
    s, b = model.state, back.state
    assert set(b.opt_state) == set(s.opt_state) and all(
        np.array_equal(b.opt_state[k], s.opt_state[k]) for k in s.opt_state
    )
    assert b.opt_state["t"].shape == () and b.t == 130
    assert np.array_equal(b.h, s.h) and np.array_equal(b.positions, s.positions)
    assert (
        b.step,
        b.wraps,
        b.total_steps,
        b.smooth_loss,
        b.last_loss,
        b.best_loss,
        b.best_step,
        b.seconds,
        b.budget_seconds,
    ) == (
        s.step,
        s.wraps,
        s.total_steps,
        s.smooth_loss,
        s.last_loss,
        s.best_loss,
        s.best_step,
        s.seconds,
        s.budget_seconds,
    )
    assert b.history == s.history and b.samples == s.samples and b.config == s.config and b.corpus == s.corpus
    light = CharRNN.load(model.save(tmp_path / "light.npz", include_state=False))
    assert light.state is None and np.array_equal(light.start_h, model.state.h[0])
    assert light.sample(50, seed=1) == model.sample(50, seed=1)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


@pytest.mark.parametrize("cell, layers, dtype", [("lstm", 2, np.float32), ("gru", 1, np.float64)])
def test_round_trip_of_every_network(tmp_path, cell, layers, dtype):
    vocab = corpus_from_string(SMALL_TEXT).vocab
    params = net_init(cell, vocab.size, 5, layers, sig=0.1, seed=3, dtype=dtype)
    h = np.arange(2 * layers * (10 if cell == "lstm" else 5), dtype=dtype).reshape(2, layers, -1) / 100
    state = TrainState(
        opt_state={f"{s}:{k}": np.full_like(v, 0.5) for k, v in params.items() for s in "mv"}
        | {"t": np.array(7, dtype=np.int64)},
        h=h,
        positions=np.array([3, 9]),
        step=7,
        total_steps=20,
        smooth_loss=1.5,
        last_loss=1.25,
        seconds=2.5,
        budget_seconds=60.0,
        config={"batch_size": 2, "optimizer": "adam"},
        corpus={"n_train": 2052, "train_sha256": "0" * 64, "source": "<string>"},
    )
    ck = Checkpoint(
        vocab=vocab,
        params=params,
        meta={"cell": cell, "layers": layers, "hidden": 5, "seed": 3},
        state=state,
        start_h=h[1],
    )
    back = load_checkpoint(save_checkpoint(tmp_path / "n.npz", ck))
    assert back.format_version == 3 and back.kind == "training"
    assert list(back.params) == list(params) and all(back.params[k].dtype == dtype for k in params)
    assert all(np.array_equal(back.params[k], params[k]) for k in params)
    assert set(back.state.opt_state) == set(state.opt_state) and back.state.t == 7
    assert np.array_equal(back.state.h, h) and back.state.positions.tolist() == [3, 9]
    assert np.array_equal(back.start_h, h[1]) and back.state.best_params is None and back.state.best_h is None
    assert (back.state.seconds, back.state.budget_seconds) == (2.5, 60.0)
    assert back.state.config["beta2"] == 0.999 and back.state.config["batch_size"] == 2  # defaults filled in


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError, match="directory"):
        load_checkpoint(tmp_path)


def test_future_format_version_refused(trained, tmp_path):
    _, out = trained
    bad = _rewrite(
        out / "last.npz",
        tmp_path / "future.npz",
        lambda a: a.update(format_version=np.array(FORMAT_VERSION + 1, dtype=np.int64)),
    )
    with pytest.raises(CheckpointError, match=rf"format version {FORMAT_VERSION + 1} .*newer"):
        load_checkpoint(bad)


def test_truncated_file_refused(trained, tmp_path):
    _, out = trained
    data = (out / "last.npz").read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert str(info.value) == f"{bad}: not a readable .npz checkpoint (File is not a zip file)"


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, x=np.arange(3))
    with pytest.raises(CheckpointError, match="not a charrnn_ext checkpoint"):
        load_checkpoint(p)
    q = tmp_path / "text.npz"
    q.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(q)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("opt:M:l0.Wh"), "missing required entry 'opt:M:l0.Wh'"),
        (lambda a: a.update({"param_l0.Wh": np.zeros((8, 9))}), r"'param_l0.Wh' has shape \(8, 9\), expected \(8, 8\)"),
        (lambda a: a.update(h=np.zeros((1, 1, 8), dtype=np.float32)), "entry 'h' has dtype float32, expected float64"),
        (lambda a: a.update(h=np.zeros((8,))), r"entry 'h' has shape \(8,\), expected \(1, 1, 8\)"),
        (
            lambda a: a.update(vocab=a["vocab"][:-1]),
            r"entry 'param_V' has shape \(24, 8\); expected \(23, m\) for the 23-character vocabulary",
        ),
        (
            lambda a: a.update(vocab=np.concatenate([a["vocab"][:1], a["vocab"][:-1]])),
            "invalid vocabulary .*must be distinct",
        ),
        (lambda a: a.update({"param_l0.b": np.full(8, np.nan)}), r"parameter \('param_l0.b'\) contains NaN"),
        (lambda a: a.update(step=np.array(1.5)), "entry 'step' has dtype float64, expected kind 'iu'"),
        (
            lambda a: a.update(positions=np.array([10**9])),
            r"positions \[1000000000\] lie outside the streams' segments of 2052 characters",
        ),
        (lambda a: a.update(positions=np.array([1, 2])), r"entry 'positions' has shape \(2,\), expected \(1,\)"),
        (lambda a: a.update(meta=np.array("{not json")), "'meta' is not valid JSON"),
        (lambda a: a.update({"opt:t": np.array(-1)}), r"the update counter \('opt:t'\) is negative: -1"),
        (lambda a: a.update({"opt:M:V": -1.0 - a["opt:M:V"]}), r"optimiser state \('opt:M:V'\) holds negative values"),
        (lambda a: a.update(seconds=np.array(-1.0)), "seconds = -1.0 / budget_seconds = None must be finite"),
        (lambda a: a.update(best_step=np.array(500)), r"best_step = 500 is outside \[-1, step = 130\]"),
        (lambda a: a.update(hist_step=a["hist_step"][::-1].copy()), "entry 'hist_step' must increase strictly"),
        (
            lambda a: a.update(train_config=np.array('{"optimizer": "sgd"}')),
            "entry 'train_config' is invalid: optimizer must be one of adagrad, rmsprop, adam; got 'sgd'",
        ),
        (lambda a: a.update(corpus=np.array('{"n_train": 1}')), "entry 'corpus' lacks a valid n_train / train_sha256"),
        (lambda a: a.update(start_h=np.zeros((2, 8))), r"entry 'start_h' has shape \(2, 8\), expected \(1, 8\)"),
        (
            lambda a: a.update({"param_l1.Wx": np.zeros((8, 8))}),
            r"meta field 'layers' says 1 but the archive holds 2 layer\(s\) of parameters",
        ),
    ],
)
def test_inconsistent_checkpoints_refused(trained, tmp_path, change, match):
    _, out = trained
    bad = _rewrite(out / "last.npz", tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(bad)
    assert str(info.value).startswith(f"{bad}: ")


def test_object_array_refused(trained, tmp_path):
    _, out = trained
    bad = tmp_path / "obj.npz"
    with np.load(out / "last.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array([{"evil": 1}], dtype=object)
    np.savez(bad, **arrays)
    with pytest.raises(CheckpointError, match="entry 'meta' holds Python objects"):
        load_checkpoint(bad)


def test_resume_on_a_different_text_refused(trained):
    _, out = trained
    back = CharRNN.load(out / "last.npz")
    other = SMALL_TEXT.replace("cat", "act")
    with pytest.raises(ValueError, match="differs from the one this model was trained on"):
        back.fit(other, steps=5, **TINY)
    back.reset_training()
    assert back.fit(other, steps=5, **TINY).step == 5


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "first version, quite long")
    atomic_write_text(p, "second")
    assert p.read_text() == "second"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]
    assert not zipfile.is_zipfile(p)


def test_atomic_write_gives_the_mode_of_a_normally_created_file(tmp_path, monkeypatch):
    """0o666 minus the umask (mkstemp alone would give 0o600), read at each write."""
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        atomic_write_text(tmp_path / "g.txt", "x")
        assert (tmp_path / "g.txt").stat().st_mode & 0o777 == 0o664
        if os.path.exists("/proc/self/status"):  # there it is read without setting it, even for a moment
            monkeypatch.setattr(fileio.os, "umask", lambda *a: pytest.fail("the umask was set"))
            atomic_write_text(tmp_path / "h.txt", "x")
            assert (tmp_path / "h.txt").stat().st_mode & 0o777 == 0o664
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_atomic_write_failure_leaves_the_old_file(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "good")

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(p, broken)
    assert p.read_text() == "good" and sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]
    # a crash between creating and renaming the temporary file leaves one behind; it is cleaned up by name
    (tmp_path / ".f.txt.abc123.tmp").write_text("stale")
    (tmp_path / ".other.abc.tmp").write_text("not ours")
    removed = remove_stale_temp_files(tmp_path, ["f.txt"])
    assert [x.name for x in removed] == [".f.txt.abc123.tmp"]
    assert sorted(x.name for x in tmp_path.iterdir()) == [".other.abc.tmp", "f.txt"]
