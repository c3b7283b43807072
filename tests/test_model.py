"""CharRNN: construction, parameter names, sampling, loss, data arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from charrnn_ext import _core
from charrnn_ext.data import Vocabulary, corpus_from_string
from charrnn_ext.layout import CLASSIC_NAMES, PARAM_NAMES, init_params, net_init, param_shapes, to_classic
from charrnn_ext.model import CharRNN
from charrnn_ext.sampling import derived_seed
from conftest import SMALL_TEXT, TINY

CLASSIC_NET_NAMES = {"l0.Wx", "l0.Wh", "l0.b", "V", "c"}


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
    assert (a.K, a.hidden, a.dtype, a.step, a.cell, a.layers, a.classic) == (4, 6, np.float64, 0, "rnn", 1, True)
    assert list(a.params) == list(param_shapes("rnn", 4, 6, 1)) and set(a.params) == CLASSIC_NET_NAMES
    assert a.params["l0.Wx"].shape == (6, 4) and a.params["l0.Wh"].shape == (6, 6) and a.params["V"].shape == (4, 6)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["l0.Wh"], CharRNN.new(v, hidden=6, seed=5).params["l0.Wh"])
    assert CharRNN.new(v, hidden=3, dtype=np.float32).params["l0.Wh"].dtype == np.float32
    assert CharRNN.new(v, hidden=3, dtype="float32").dtype == np.float32
    assert np.all(a.params["l0.b"] == 0) and np.all(a.params["c"] == 0)
    big = CharRNN.new(v, hidden=60, seed=0)
    assert abs(np.std(big.params["l0.Wh"]) - 0.01) < 0.001
    # the classic initialisation: the same numbers as init_params (classic names)
    classic = init_params(4, 6, 0.01, seed=4)
    assert all(np.array_equal(to_classic(a.params)[k], classic[k]) for k in PARAM_NAMES)
    assert a.n_params == 6 * 4 + 6 * 6 + 6 + 4 * 6 + 4
    assert a.meta() == {
        "hidden": 6,
        "K": 4,
        "sig": 0.01,
        "seed": 4,
        "dtype": "float64",
        "cell": "rnn",
        "layers": 1,
        "forget_bias": 1.0,
    }
    assert repr(a) == "CharRNN(cell='rnn', layers=1, K=4, hidden=6, dtype=float64, step=0, seed=4)"


@pytest.mark.parametrize("cell, layers", [("lstm", 1), ("gru", 2), ("rnn", 3)])
def test_new_networks(cell, layers):
    v = Vocabulary("\nabc")
    m = CharRNN.new(v, hidden=5, cell=cell, layers=layers, seed=2, forget_bias=0.5)
    assert (m.cell, m.layers, m.classic, m.hidden, m.K) == (cell, layers, False, 5, 4)
    want = net_init(cell, 4, 5, layers, sig=0.01, seed=2, forget_bias=0.5)
    assert list(m.params) == list(want) and all(np.array_equal(m.params[k], want[k]) for k in want)
    assert m.meta()["cell"] == cell and m.meta()["layers"] == layers and m.meta()["forget_bias"] == 0.5
    assert m.start_state is None
    assert abs(m.loss("abc\nabc\nab") - math.log(4)) < 0.01


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(hidden=0), ValueError, r"hidden must be an integer in \[1, 65536\], got 0"),
        (dict(hidden=True), TypeError, "hidden must be an integer"),
        (dict(layers=65), ValueError, r"layers must be an integer in \[1, 64\], got 65"),
        (dict(cell="tanh"), ValueError, "cell must be one of rnn, lstm, gru; got 'tanh'"),
        (dict(seed=-1), ValueError, "seed must be an integer in"),
        (dict(sig=-0.5), ValueError, r"sig must be a number in \[0, 10\], got -0.5"),
        (dict(dtype=np.int32), ValueError, "dtype must be one of float64, float32"),
    ],
)
def test_new_refuses_bad_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        CharRNN.new(Vocabulary("ab"), **kw)


def test_new_and_init_refuse_bad_vocab_and_params():
    with pytest.raises(TypeError, match="Vocabulary or a Corpus"):
        CharRNN.new("abc")
    params = net_init("rnn", 24, 4)
    with pytest.raises(ValueError, match="parameters are for K=24 characters but the vocabulary has 3"):
        CharRNN(Vocabulary("abc"), params)
    with pytest.raises(TypeError, match=r"vocab must be a charrnn_ext\.data\.Vocabulary, got str"):
        CharRNN("abc", params)


def test_classic_names_are_renamed_on_construction():
    v = Vocabulary("\nabc")
    classic = init_params(4, 5, seed=3)
    m = CharRNN(v, classic)
    assert set(m.params) == CLASSIC_NET_NAMES and m.classic
    for old, new in CLASSIC_NAMES.items():
        assert m.params[new] is classic[old]  # renamed, not copied
    gru = net_init("gru", 4, 5, 2)
    g = CharRNN(v, gru, seed=9)
    assert (g.cell, g.layers, g.seed) == ("gru", 2, 9) and g.params is not gru and g.params == gru


def test_fresh_model_loss_is_ln_K():
    m = CharRNN.new(Vocabulary.from_text(SMALL_TEXT), hidden=8)
    assert m.start_state is None
    assert abs(m.loss(SMALL_TEXT[:500]) - math.log(m.K)) < 0.005


def test_loss_matches_evaluate_loss_and_is_thread_independent(model):
    text = SMALL_TEXT[:700]
    data = model.vocab.encode(text)
    total, _ = _core.evaluate_loss(
        model.params, data, model.start_state, cell=None, batch_size=1, threads=1, precision="full"
    )
    assert model.loss(text) == total / (len(text) - 1)
    assert model.loss(text) < 0.6  # a trained model knows this text (ln K = 3.18)
    b4 = model.loss(text, batch_size=4)
    assert b4 == model.loss(text, batch_size=4, threads=2)  # bit-identical for any thread count
    # streams 1..3 start from zeros: a little different from one pass
    assert b4 != model.loss(text) and abs(b4 - model.loss(text)) < 0.1


def test_sample_reproducible_and_prime_respected(model):
    a = model.sample(120, prime="The ", seed=11)
    assert a == model.sample(120, prime="The ", seed=11)
    assert len(a) == 120 and set(a) <= set(model.vocab.chars)
    assert a != model.sample(120, prime="The ", seed=12)
    # the prime is fed from the running training state of stream 0
    assert model.state.h.shape == (1, 1, 16) and model.start_state.shape == (1, 16)
    assert np.shares_memory(model.start_state, model.state.h)
    idx, _ = _core.sample(
        model.params,
        model.start_state,
        model.vocab.encode("The "),
        n=120,
        cell=None,
        temperature=1.0,
        seed=11,
        top_k=0,
        top_p=1.0,
        greedy=False,
        threads=1,
    )
    assert a == model.vocab.decode(idx)
    # a trained model continues "The ca" sensibly at low temperature
    assert model.sample(2, prime="The ca", temperature=0.1, seed=0) == "t "


def test_sample_without_prime_starts_at_newline(model):
    idx, _ = _core.sample(
        model.params,
        model.start_state,
        model.vocab.encode("\n"),
        n=30,
        cell=None,
        temperature=0.7,
        seed=3,
        top_k=0,
        top_p=1.0,
        greedy=False,
        threads=1,
    )
    assert model.sample(30, temperature=0.7, seed=3) == model.vocab.decode(idx)


def test_sample_stream_joins_to_sample(model):
    text = model.sample(300, prime="A ", seed=5, top_k=4)
    pieces = list(model.sample_stream(300, prime="A ", seed=5, top_k=4, piece=64))
    assert [len(p) for p in pieces] == [64, 64, 64, 64, 44] and "".join(pieces) == text


def test_sample_takes_numpy_numbers_like_the_core(model):
    text = model.sample(40, temperature=0.5, seed=2, top_k=3)
    assert model.sample(np.int64(40), temperature=np.float32(0.5), seed=np.uint64(2), top_k=np.int8(3)) == text
    assert model.sample(40, temperature=np.float64(0.5), seed=2, top_k=3) == text


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(prime="Zebra"), r"'Z'.*not in the model's 24-character vocabulary"),
        (dict(temperature=0), "temperature must be a positive finite number, got 0"),
        (dict(n=-1), "n must be a non-negative integer, got -1"),
        (dict(prime=""), "prime must not be empty"),
        (dict(top_p=0), r"top_p must be in \(0, 1\]"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(seed=-3), r"seed must be an integer in \[0, 2\*\*64\)"),
    ],
)
def test_sample_bad_arguments(model, kw, match):
    args = {"n": 10, **kw}
    with pytest.raises(ValueError, match=match):
        model.sample(**args)


def test_training_samples_use_derived_seeds(model):
    assert [r.step for r in model.state.samples] == [0, 60, 120, 180, 240, 300]
    for rec in model.state.samples:
        assert rec.seed == derived_seed(model.seed, 0, rec.step)
    assert derived_seed(0, 0, 60) != derived_seed(0, 0, 120) != derived_seed(1, 0, 120)


def test_copy_is_independent(model):
    cp = model.copy()
    assert cp.state is None and np.array_equal(cp.start_state, model.start_state)
    assert cp.sample(40, seed=2) == model.sample(40, seed=2)
    cp.params["V"][:] = 0.0
    assert model.params["V"].any()


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


def test_fit_records_run_info(tmp_path):
    c = corpus_from_string(SMALL_TEXT)
    m = CharRNN.new(c, hidden=8, seed=1)
    m.fit(c, steps=5, out=tmp_path / "run", run_info={"preset": "mine", "note": [1, 2]}, **TINY)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["run"] == {"preset": "mine", "note": [1, 2]}
    assert cfg["train"]["seq_length"] == 10 and cfg["total_steps"] == 5 and cfg["steps_per_epoch"] == 205
    assert cfg["model"] == {**m.meta(), "n_params": m.n_params}


def test_resume_may_change_threads_only(tmp_path):
    c = corpus_from_string(SMALL_TEXT)
    straight = CharRNN.new(c, hidden=8, seed=1)
    straight.fit(c, steps=40, batch_size=2, **TINY)
    m = CharRNN.new(c, hidden=8, seed=1)
    assert m.fit(c, steps=40, batch_size=2, max_steps=15, **TINY).stopped
    res = m.resume(c, threads=2)
    assert res.step == 40 and m.state.config["threads"] == 2
    assert all(np.array_equal(m.params[k], straight.params[k]) for k in m.params)
    with pytest.raises(ValueError, match="has no training state to resume"):
        CharRNN.new(c, hidden=8).resume(c)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    c = corpus_from_string(SMALL_TEXT)
    CharRNN.new(c, hidden=8).fit(c, steps=10, out=tmp_path / "run", **TINY)
    with pytest.raises(ValueError, match="already holds a run"):
        CharRNN.new(c, hidden=8).fit(c, steps=10, out=tmp_path / "run", **TINY)
