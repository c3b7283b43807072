"""Checkpoint format: plain numpy.load, validation, refusal of bad files."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from charrnn_ext.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
)
from charrnn_ext.data import corpus_from_string
from charrnn_ext.model import CharRNN
from charrnn_ext.params import PARAM_NAMES

from conftest import SMALL_TEXT, TINY


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
    assert int(arrays["format_version"]) == FORMAT_VERSION and arrays["format_version"].ndim == 0
    assert str(arrays["format"]) == "charrnn_ext.checkpoint" and str(arrays["kind"]) == "training"
    for k in ("pos", "step", "wraps", "best_step", "smooth_loss", "best_loss"):
        assert arrays[k].ndim == 0, k
    assert int(arrays["step"]) == 130
    assert float(arrays["smooth_loss"]) == model.state.smooth_loss
    meta = json.loads(str(arrays["meta"]))
    assert meta["hidden"] == 8 and meta["seed"] == 7 and meta["dtype"] == "float64"
    corpus = json.loads(str(arrays["corpus"]))
    assert corpus["n_train"] == model.state.corpus["n_train"] and len(corpus["train_sha256"]) == 64
    assert np.array_equal(arrays["vocab"], model.vocab.to_array())
    for name in PARAM_NAMES:
        assert np.array_equal(arrays[f"param_{name}"], model.params[name])
        assert np.array_equal(arrays[f"adagrad_{name}"], model.state.mem[name])
    assert arrays["hist_step"].tolist() == [r.step for r in model.state.history]
    samples = json.loads(str(arrays["samples"]))
    assert [s["step"] for s in samples] == [0, 60, 120]


def test_best_checkpoint_is_a_model_checkpoint(trained):
    model, out = trained
    ck = load_checkpoint(out / "best.npz")
    assert ck.kind == "model" and ck.state is None
    assert ck.meta["step"] == model.state.best_step
    assert ck.meta["smooth_loss"] == model.state.best_loss
    assert np.array_equal(ck.start_h, model.state.best_h)
    for name in PARAM_NAMES:
        assert np.array_equal(ck.params[name], model.state.best_params[name])


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    path = model.save(tmp_path / "m.npz")
    back = CharRNN.load(path)
    assert back.vocab == model.vocab and back.seed == 7 and back.step == 130
    for name in PARAM_NAMES:
        assert np.array_equal(back.params[name], model.params[name])
    assert back.state.history == model.state.history and back.state.samples == model.state.samples
    assert back.state.best_loss == model.state.best_loss
    light = CharRNN.load(model.save(tmp_path / "light.npz", include_state=False))
    assert light.state is None and np.array_equal(light.start_h, model.state.h)
    assert light.sample(50, seed=1) == model.sample(50, seed=1)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError, match="directory"):
        load_checkpoint(tmp_path)


def test_future_format_version_refused(trained, tmp_path):
    _, out = trained
    bad = _rewrite(out / "last.npz", tmp_path / "future.npz",
                   lambda a: a.update(format_version=np.array(FORMAT_VERSION + 1, dtype=np.int64)))
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*newer"):
        load_checkpoint(bad)


def test_truncated_file_refused(trained, tmp_path):
    _, out = trained
    data = (out / "last.npz").read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.npz"):
        load_checkpoint(bad)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, x=np.arange(3))
    with pytest.raises(CheckpointError, match="not a charrnn_ext checkpoint"):
        load_checkpoint(p)
    q = tmp_path / "text.npz"
    q.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(q)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("adagrad_W"), "missing required entry 'adagrad_W'"),
    (lambda a: a.update(param_W=np.zeros((8, 9))), r"'param_W' has shape \(8, 9\), expected \(8, 8\)"),
    (lambda a: a.update(h=np.zeros(8, dtype=np.float32)), "entry 'h' has dtype float32, expected float64"),
    (lambda a: a.update(vocab=a["vocab"][:-1]), r"param_U has shape \(8, 24\), expected \(m, 23\)"),
    (lambda a: a.update(vocab=a["vocab"][::-1].copy()), "invalid vocabulary"),
    (lambda a: a.update(param_b=np.full(8, np.nan)), "parameter b contains NaN"),
    (lambda a: a.update(step=np.array(1.5)), "'step' must be a 0-d integer"),
    (lambda a: a.update(pos=np.array(10**9, dtype=np.int64)), "pos = 1000000000 is past the end"),
    (lambda a: a.update(meta=np.array("{not json")), "'meta' is not valid JSON"),
])
def test_inconsistent_checkpoints_refused(trained, tmp_path, change, match):
    _, out = trained
    bad = _rewrite(out / "last.npz", tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(bad)


def test_object_array_refused(trained, tmp_path):
    _, out = trained
    bad = tmp_path / "obj.npz"
    with np.load(out / "last.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array([{"evil": 1}], dtype=object)
    np.savez(bad, **arrays)
    with pytest.raises(CheckpointError, match="cannot be read without pickle"):
        load_checkpoint(bad)


def test_resume_on_a_different_text_refused(trained):
    model, out = trained
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
