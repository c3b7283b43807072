"""CharRNN: construction, sampling, loss, data arguments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn_ext import _core
from charrnn_ext.data import Vocabulary, corpus_from_string
from charrnn_ext.model import CharRNN
from charrnn_ext.params import PARAM_NAMES
from charrnn_ext.sampling import derived_seed

from conftest import SMALL_TEXT, TINY


@pytest.fixture(scope="module")
def model():
    c = corpus_from_string(SMALL_TEXT)
    m = CharRNN.new(c, hidden=16, seed=0)
    m.fit(c, steps=300, **TINY)
    return m


def test_new_shapes_dtype_and_seed():
    v = Vocabulary("\nabc")
    a = CharRNN.new(v, hidden=6, seed=4)
    b = CharRNN.new(v, hidden=6, seed=4)
    assert (a.K, a.hidden, a.dtype, a.step) == (4, 6, np.float64, 0)
    assert a.params["U"].shape == (6, 4) and a.params["V"].shape == (4, 6)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in PARAM_NAMES)
    assert not np.array_equal(a.params["W"], CharRNN.new(v, hidden=6, seed=5).params["W"])
    assert CharRNN.new(v, hidden=3, dtype=np.float32).params["W"].dtype == np.float32
    assert np.all(a.params["b"] == 0) and abs(np.std(a.params["W"]) - 0.01) < 0.005
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        CharRNN.new(v, hidden=0)
    with pytest.raises(TypeError, match="Vocabulary or a Corpus"):
        CharRNN.new("abc")


def test_fresh_model_loss_is_ln_K():
    m = CharRNN.new(Vocabulary.from_text(SMALL_TEXT), hidden=8)
    assert m.start_state is None
    assert abs(m.loss(SMALL_TEXT[:500]) - math.log(m.K)) < 0.005


def test_sample_reproducible_and_prime_respected(model):
    a = model.sample(120, prime="The ", seed=11)
    assert a == model.sample(120, prime="The ", seed=11)
    assert len(a) == 120 and set(a) <= set(model.vocab.chars)
    assert a != model.sample(120, prime="The ", seed=12)
    # the prime is fed from a zero state: same as the core sampler with its indices
    assert model.start_state is model.state.h  # the running training state
    idx, _ = _core.sample(model.params, model.state.h, model.vocab.encode("The "), 120, 1.0, 11)
    assert a == model.vocab.decode(idx)
    # a trained model continues "The ca" / "The do" sensibly at low temperature
    cont = model.sample(2, prime="The ca", temperature=0.1, seed=0)
    assert cont == "t "


def test_sample_without_prime_starts_at_newline(model):
    idx, _ = _core.sample(model.params, model.state.h, model.vocab.encode("\n"), 30, 0.7, 3)
    assert model.sample(30, temperature=0.7, seed=3) == model.vocab.decode(idx)


def test_sample_bad_arguments(model):
    with pytest.raises(ValueError, match=r"'Z'.*not in the model's 24-character vocabulary"):
        model.sample(10, prime="Zebra")
    with pytest.raises(ValueError, match="temperature must be a positive"):
        model.sample(10, temperature=0)
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        model.sample(-1)
    with pytest.raises(ValueError, match="prime must not be empty"):
        model.sample(3, prime="")


def test_training_samples_use_derived_seeds(model):
    for rec in model.state.samples:
        assert rec.seed == derived_seed(model.seed, 0, rec.step)
    assert derived_seed(0, 0, 60) != derived_seed(0, 0, 120) != derived_seed(1, 0, 120)


def test_fit_accepts_text_path_and_corpus(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(SMALL_TEXT)
    v = Vocabulary.from_text(SMALL_TEXT)
    runs = []
    for data in (SMALL_TEXT, p, str(p), corpus_from_string(SMALL_TEXT)):
        m = CharRNN.new(v, hidden=8, seed=1)
        runs.append(m.fit(data, steps=25, **TINY).smooth_loss)
        assert m.state.corpus["n_train"] == 2052
    assert len(set(runs)) == 1
    m = CharRNN.new(v, hidden=8, seed=1)
    m.fit(p, steps=5, **TINY)
    assert m.state.corpus["path"] == str(p.resolve())
    with pytest.raises(ValueError, match=r"'Q', .* not in the 24-character vocabulary"):
        CharRNN.new(v, hidden=8).fit("Quite new text " * 10, steps=1, **TINY)
    with pytest.raises(TypeError, match="data must be a Corpus, a path"):
        CharRNN.new(v, hidden=8).fit(12, steps=1)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    c = corpus_from_string(SMALL_TEXT)
    CharRNN.new(c, hidden=8).fit(c, steps=10, out=tmp_path / "run", **TINY)
    with pytest.raises(ValueError, match="already holds a run"):
        CharRNN.new(c, hidden=8).fit(c, steps=10, out=tmp_path / "run", **TINY)
