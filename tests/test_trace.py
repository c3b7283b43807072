"""CharRNN.trace and engine.trace: what the network computes at every
character, from one call of the C++ engine, against the NumPy reference
forward, the loss, and the engine's own training forward."""

from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn_ext import engine
from charrnn_ext.data import Vocabulary, corpus_from_string
from charrnn_ext.layout import STATES, net_init, to_classic
from charrnn_ext.model import CharRNN
from charrnn_ext.reference_nets import forward as reference_forward
from charrnn_ext.tracing import DEFAULT_TOP_K, Trace
from conftest import SMALL_TEXT, TINY
from helpers import CELLS, max_rel_err

TEXT = 'The cat said "mew" (twice), and the dog\nsaid nothing at all. [Then] they slept.\n' * 3


def random_model(cell: str, layers: int, dtype: str = "float64", seed: int = 0) -> CharRNN:
    """A model whose predictions are far from uniform (weights of 0.3) and
    whose start state is not zero, as after training."""
    vocab = Vocabulary.from_text(TEXT + SMALL_TEXT)
    model = CharRNN.new(vocab, hidden=24, seed=seed, sig=0.3, cell=cell, layers=layers, dtype=dtype)
    S = STATES[cell]
    model.start_h = np.random.default_rng(seed).uniform(-0.5, 0.5, (layers, S * 24)).astype(model.dtype)
    return model


# ---------------------------------------------------------------- against the NumPy reference


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trace_matches_the_numpy_reference(cell, layers, dtype):
    model = random_model(cell, layers, dtype)
    tr = model.trace(TEXT, top_k=7)
    x = model.vocab.encode(TEXT)
    _, cache, final = reference_forward(cell, model.params, x[:-1], x[1:], model.start_state)
    P = np.array(cache["P"])  # (N-1, K), float64
    # float64 agrees to rounding; float32 (the engine computes in float32, the reference in float64) to its precision
    tol = 1e-10 if dtype == "float64" else 2e-5
    n = len(TEXT) - 1
    assert len(tr) == n and tr.prob.shape == (n,) and tr.top_indices.shape == (n, 7)
    assert tr.prob.dtype == np.dtype(dtype) and tr.nll.dtype == np.float64
    assert max_rel_err(tr.prob, P[np.arange(n), x[1:]]) < tol
    assert max_rel_err(tr.nll, -np.log(P[np.arange(n), x[1:]])) < tol
    assert np.allclose(tr.surprisal, tr.nll / math.log(2), rtol=1e-15, atol=0)
    for l in range(layers):
        assert tr.hidden[l].shape == (n, 24) and tr.hidden[l].dtype == np.dtype(dtype)
        assert np.max(np.abs(tr.hidden[l] - np.array(cache["H"][l]))) < tol
        if cell == "lstm":
            assert tr.cell is not None
            assert np.max(np.abs(tr.cell[l] - np.array(cache["C"][l]))) < tol
    assert (tr.cell is not None) == (cell == "lstm")
    assert np.max(np.abs(tr.state - final)) < tol
    # the top 7: the reference's probabilities ranked (a near-tie in float32 may swap two neighbours)
    want = np.argsort(-P, axis=1, kind="stable")[:, :7]
    assert np.max(np.abs(tr.top_probs - np.take_along_axis(P, want, axis=1))) < tol
    if dtype == "float64":
        assert np.array_equal(tr.top_indices, want)
    assert np.all(np.diff(tr.top_probs, axis=1) <= 0)


def test_top_k_of_every_character_is_a_ranking():
    model = random_model("gru", 2)
    tr = model.trace(TEXT, top_k=model.K)
    assert np.array_equal(np.sort(tr.top_indices, axis=1), np.broadcast_to(np.arange(model.K), tr.top_indices.shape))
    assert np.allclose(tr.top_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # the probability of the next character is its entry in the ranking, exactly
    x = model.vocab.encode(TEXT)
    where = np.argmax(tr.top_indices == x[1:, None], axis=1)
    assert np.array_equal(tr.top_probs[np.arange(len(tr)), where], tr.prob)
    assert tr.top(0)[0] == (model.vocab.chars[tr.top_indices[0, 0]], float(tr.top_probs[0, 0]))


# ---------------------------------------------------------------- against the loss and training


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("cell", CELLS)
def test_trace_agrees_with_the_loss(cell, batch_size):
    """The mean of -ln p(next) is CharRNN.loss (the same row losses, summed in
    another order); a trained model, from its running state."""
    model = CharRNN.new(corpus_from_string(SMALL_TEXT), hidden=32, seed=3, cell=cell, layers=2, dtype="float32")
    model.fit(SMALL_TEXT, steps=30, **TINY)
    assert model.start_state is not None and np.any(model.start_state != 0)
    text = SMALL_TEXT[:900]
    tr = model.trace(text, batch_size=batch_size)
    loss = model.loss(text, batch_size=batch_size)
    assert abs(tr.loss - loss) < 1e-6 * loss
    assert abs(float(np.mean(tr.nll)) - loss) < 1e-6 * loss
    assert tr.loss < math.log(model.K)  # it has learned something: the loss is below the uniform one


def test_a_bfloat16_model_is_traced_in_float32():
    model = CharRNN.new(corpus_from_string(SMALL_TEXT), hidden=32, seed=3, cell="lstm", dtype="bfloat16")
    model.fit(SMALL_TEXT, steps=10, **TINY)
    assert model.precision == "bfloat16" and model.dtype == np.float32
    tr = model.trace(SMALL_TEXT[:500])
    assert tr.prob.dtype == np.float32 and tr.hidden[0].dtype == np.float32
    loss = model.loss(SMALL_TEXT[:500])
    assert abs(tr.loss - loss) < 1e-6 * loss


@pytest.mark.parametrize("cell", CELLS)
def test_a_bfloat16_trace_is_the_bfloat16_evaluation(cell, monkeypatch):
    """precision='bfloat16' traces with bfloat16 products, as the model's
    validation computes them: its row losses sum to that loss (in another
    order), whatever the thread count and split, and they differ from
    float32's by bfloat16 rounding: operands rounded to 8 bits (relative
    2^-9) move a logit of this small model by well under 0.05, and so -ln p too."""
    model = CharRNN.new(corpus_from_string(SMALL_TEXT), hidden=32, seed=3, cell=cell, layers=2, dtype="bfloat16")
    model.fit(SMALL_TEXT, steps=10, **TINY)
    text = SMALL_TEXT[:700]
    tr = model.trace(text, precision="bfloat16")
    loss = model.loss(text, precision="bfloat16")
    assert abs(tr.loss - loss) < 1e-6 * loss
    # 5 streams (an AMX machine's row kernel, engine.hpp kTileStreams), each split on 2 and 3 threads
    five = model.trace(text, precision="bfloat16", batch_size=5)
    assert abs(five.loss - model.loss(text, batch_size=5, precision="bfloat16")) < 1e-6 * loss
    monkeypatch.setenv("CHARRNN_TEAM", "full")  # share this small network's steps too
    for split, threads in [("units", 2), ("streams", 2), ("streams", 3)]:
        monkeypatch.setenv("CHARRNN_SPLIT", split)
        again = model.trace(text, precision="bfloat16", batch_size=5, threads=threads)
        assert np.array_equal(again.nll, five.nll) and np.array_equal(again.state, five.state), (split, threads)
        assert all(np.array_equal(a, b) for a, b in zip(again.hidden, five.hidden)), (split, threads)
    monkeypatch.delenv("CHARRNN_SPLIT")
    monkeypatch.delenv("CHARRNN_TEAM")
    full = model.trace(text)
    gap = np.max(np.abs(tr.nll - full.nll))
    assert 0 < gap < 0.05
    with pytest.raises(ValueError, match="float32 parameters"):
        random_model(cell, 1, "float64").trace(TEXT, precision="bfloat16")


@pytest.mark.parametrize("cell", CELLS)
def test_states_are_those_of_the_training_forward(cell):
    """At position i the trace holds, bit for bit, the final state of the
    engine's training forward (loss_and_grads) over text[:i+1] -> text[1:i+2]."""
    model = random_model(cell, 2, "float32")
    x = model.vocab.encode(TEXT)
    tr = model.trace(TEXT)
    m, S = model.hidden, STATES[cell]
    for i in (0, 63, 64, 150, len(tr) - 1):
        _, _, h = engine.loss_and_grads(model.params, x[: i + 1], x[1 : i + 2], model.start_state)
        for l in range(2):
            assert np.array_equal(tr.hidden[l][i], h[l, :m]), (i, l)
            if S == 2:
                assert tr.cell is not None and np.array_equal(tr.cell[l][i], h[l, m:]), (i, l)


def test_threads_and_states_do_not_change_the_trace():
    model = random_model("lstm", 2, "float32")
    one = model.trace(TEXT)
    two = model.trace(TEXT, threads=2)
    bare = model.trace(TEXT, states=False, top_k=0)
    for name in ("prob", "nll", "top_indices", "top_probs", "state"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    for a, b in zip(one.hidden + (one.cell or ()), two.hidden + (two.cell or ())):
        assert np.array_equal(a, b)
    assert np.array_equal(bare.nll, one.nll) and np.array_equal(bare.prob, one.prob)
    assert bare.hidden == () and bare.cell is None and bare.top_indices.shape == (len(one), 0)


def test_engine_trace_takes_classic_names_and_a_classic_state():
    params = to_classic(net_init("rnn", K=9, m=6, layers=1, sig=0.3, seed=2))
    data = np.arange(20) % 9
    h0 = np.full(6, 0.1)
    nll, prob, top_index, top_prob, hidden, cell, h = engine.trace(params, data, h0, top_k=DEFAULT_TOP_K)
    loss, h_eval = engine.evaluate_loss(params, data, h0)
    assert abs(nll.sum() - loss) < 1e-12 * loss and np.array_equal(h, h_eval) and h.shape == (6,)
    assert prob.shape == (19,) and top_index.shape == top_prob.shape == (19, DEFAULT_TOP_K)
    assert hidden is not None and hidden.shape == (1, 19, 6) and cell is None
    assert np.array_equal(hidden[0, -1], h_eval)


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    return random_model("rnn", 1)


def test_characters_outside_the_vocabulary_are_named(small):
    with pytest.raises(ValueError, match=r"cannot trace this text: characters 'é', 'ü' are not in the \d+-character"):
        small.trace("The cat é sat ü")


@pytest.mark.parametrize(
    "text, kw, exc, match",
    [
        ("T", {}, ValueError, "a trace needs at least 2"),
        ("", {}, ValueError, "a trace needs at least 2"),
        (b"The cat", {}, TypeError, "text must be a str, got bytes"),
        ("The cat", {"top_k": -1}, ValueError, r"top_k must be an integer in \[0, \d+\]"),
        ("The cat", {"top_k": 10_000}, ValueError, r"top_k must be an integer in \[0, \d+\]"),
        ("The cat", {"top_k": True}, ValueError, "top_k must be an integer"),
        ("The cat", {"states": 1}, TypeError, "states must be a bool"),
        ("The cat", {"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ("The cat", {"threads": 0}, ValueError, "threads must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(small, text, kw, exc, match):
    with pytest.raises(exc, match=match):
        small.trace(text, **kw)


def test_the_core_refuses_a_top_k_beyond_the_vocabulary():
    params = net_init("gru", K=9, m=6, layers=1)
    with pytest.raises(ValueError, match="top_k must be at most the vocabulary size K = 9, got 10"):
        engine.trace(params, np.arange(9), top_k=10)
    with pytest.raises(IndexError, match="data"):
        engine.trace(params, np.array([0, 9]), top_k=1)


def test_a_trace_too_large_for_memory_is_refused_before_it_starts(small, monkeypatch):
    import charrnn_ext.resources as resources

    monkeypatch.setattr(resources, "available_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match=f"the trace of {len(TEXT)} characters needs about"):
        small.trace(TEXT)


def test_trace_is_a_plain_dataclass_of_arrays(small):
    tr = small.trace(TEXT)
    assert isinstance(tr, Trace) and tr.text == TEXT and tr.vocab is small.vocab
    assert np.array_equal(tr.indices, small.vocab.encode(TEXT))
    assert abs(tr.bits_per_char - tr.loss / math.log(2)) < 1e-15
