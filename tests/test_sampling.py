"""Sampling (charrnn_ext.sample): every draw replayed in Python, for every
cell, 1 and 2 layers, float32 and float64, classic and network names.

The replay runs the NumPy references (reference.next_char_distribution for
the classic names, reference_nets.next_char_distribution otherwise), filters
with reference_nets.filter_probs' rules and draws by inverse CDF with a
Python copy of the sampler's SplitMix64 (cpp/sampling.hpp). A draw whose
uniform lands within `margin` of a decision boundary (a CDF step, a top-k or
top-p cut, a greedy near-tie) is "unsure": the float rounding of the two
implementations may decide it either way, so only membership is checked
there, and such draws must stay rare. The replay feeds the character the
sampler drew, so one unsure draw does not derail the rest.

Also: the filter sets, chi-square tests of the drawn characters on
stationary models (with temperature and filters), sampling continued in
pieces equals one call, and a team of threads draws what one thread draws.
"""

from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import reference
from charrnn_ext import reference_nets as ref
from charrnn_ext.layout import STATES, describe, from_classic, net_init
from charrnn_ext.sampling import sample_pieces, sample_text
from helpers import CELLS, net_problem

MASK = (1 << 64) - 1
DTYPES = (np.float64, np.float32)
# Precision of the probabilities (relative for ties, absolute for CDF steps): closer decisions are "unsure".
MARGIN = {np.float64: 1e-9, np.float32: 1e-5}
# Agreement of the returned state with the NumPy replay.
STATE_TOL = {np.float64: 1e-10, np.float32: 1e-4}

# (kind, layers): the classic names are the one-layer rnn
MODELS = [("classic", 1)] + [(cell, layers) for cell in CELLS for layers in (1, 2)]
MODEL_IDS = [f"{k}-{n}" for k, n in MODELS]

OPTIONS = [
    dict(),
    dict(top_k=3),
    dict(top_p=0.6),
    dict(top_k=5, top_p=0.8, temperature=0.7),
    dict(greedy=True),
    dict(temperature=1.8),
]
OPTION_IDS = ["plain", "top_k", "top_p", "k+p+T", "greedy", "hot"]


class SplitMix64:
    """The generator of cpp/sampling.hpp, in Python."""

    def __init__(self, seed: int):
        self.state = seed & MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53


def test_splitmix64_is_the_published_generator():
    rng = SplitMix64(0)
    assert [rng.next() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    # and its finaliser is the one the package's dropout replay uses
    rng = SplitMix64(12345)
    assert rng.next() == ref._mix((12345 + 0x9E3779B97F4A7C15) & MASK)


# ---------------------------------------------------------------- models


def network(cell, layers, dtype=np.float64, K=12, m=6, seed=0):
    """Contracting recurrences (helpers.net_problem) with a sharp, biased
    output layer: peaked, state-dependent distributions."""
    params, _, _, h0 = net_problem(cell, K, m, layers, 1, seed=seed, sig=0.2)
    params["V"] *= 8.0
    params["c"] += np.random.default_rng(seed + 1).standard_normal(K)
    return {k: v.astype(dtype) for k, v in params.items()}, h0.astype(dtype)


def classic(dtype=np.float64, K=15, m=8, seed=1):
    params = cx.init_params(K, m, sig=0.3, seed=seed)
    params["V"] *= 5.0
    params["c"] += np.random.default_rng(seed + 1).standard_normal(K)
    return {k: v.astype(dtype) for k, v in params.items()}, np.tanh(np.linspace(-1, 1, m)).astype(dtype)


def model(kind, layers, dtype):
    return classic(dtype) if kind == "classic" else network(kind, layers, dtype)


def distribution(params, state, x, temperature=1.0):
    """(p, new state) of the NumPy reference for either set of names, in float64."""
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    if "U" in params:
        return reference.next_char_distribution(p64, np.asarray(state, np.float64), int(x), temperature)
    cell, _, _, _ = describe(params)
    return ref.next_char_distribution(cell, p64, state, int(x), temperature)


def zero_state(params):
    if "U" in params:
        return np.zeros(params["W"].shape[0])
    cell, _, m, layers = describe(params)
    return np.zeros((layers, STATES[cell] * m))


# ---------------------------------------------------------------- the replay


def replay_draw(p, u, top_k=0, top_p=1.0, greedy=False, margin=0.0):
    """(index, allowed, sure): the character the sampler draws from
    probabilities p with uniform u, and every character it may draw when p is
    known to a relative precision `margin` (one, sure, unless a decision -- a
    greedy near-tie, the top-k or top-p cut, a CDF step -- is closer than that)."""
    idx, allowed = _draws(p, u, top_k, top_p, greedy, margin)
    return idx, allowed, allowed == {idx}


def _draws(p, u, top_k, top_p, greedy, margin):
    K = len(p)
    order = np.argsort(-p, kind="stable")
    if greedy:
        allowed = set(np.flatnonzero(p >= p[order[0]] * (1 - margin)).tolist())
        return int(order[0]), allowed
    keep = K if top_k <= 0 or top_k >= K else top_k
    kept_sets = [order[:keep]]
    if keep < K and p[order[keep - 1]] - p[order[keep]] <= margin * p[order[keep - 1]]:
        kept_sets.append(np.r_[order[: keep - 1], order[keep]])  # the top-k tie broken the other way
    if top_p < 1.0:
        cut = []
        for kept in kept_sets:
            cum = np.cumsum(p[kept])
            target = top_p * cum[-1]
            ends = {int(np.argmax(cum >= target)) + 1}
            for i in np.flatnonzero(np.abs(cum - target) <= margin * cum[-1]):
                ends |= {int(i) + 1, min(int(i) + 2, len(kept))}  # a top-p cut either side
            cut += [kept[:e] for e in sorted(ends)]
        kept_sets = cut
    first, allowed = None, set()
    for kept in kept_sets:
        q = np.zeros(K)
        q[kept] = p[kept]
        cum = np.cumsum(q)
        target = u * cum[-1]
        positive = np.flatnonzero(q > 0)
        idx = min(int(np.searchsorted(cum, target, side="right")), int(positive[-1]))
        first = idx if first is None else first
        allowed.add(idx)
        for k in positive[np.abs(cum[positive] - target) <= margin * cum[-1]]:  # on a CDF step: either side
            allowed.add(int(k))
            later = positive[positive > k]
            if later.size:
                allowed.add(int(later[0]))
    return first, allowed


def check_replay(params, h0, prime, out, h, temperature=1.0, seed=0, top_k=0, top_p=1.0, greedy=False):
    """Asserts that (out, h) = sample(params, h0, prime, len(out), ...) is what
    the replay draws and holds; returns the number of unsure draws."""
    dtype = params["V"].dtype.type
    margin = MARGIN[dtype]
    rng = SplitMix64(seed)
    state = zero_state(params) if h0 is None else np.asarray(h0, np.float64).reshape(zero_state(params).shape)
    for x in prime[:-1]:
        _, state = distribution(params, state, x)
    x, unsure = prime[-1], 0
    for i, y in enumerate(out):
        p, state_next = distribution(params, state, x, temperature)
        u = 0.0 if greedy else rng.uniform()  # greedy draws no number
        idx, allowed, sure = replay_draw(p, u, top_k, top_p, greedy, margin)
        if sure:
            assert y == idx, (i, y, idx, p)
        else:
            assert int(y) in allowed, (i, y, allowed, p)
            unsure += 1
        state, x = state_next, int(y)
    if len(out) == 0:
        _, state = distribution(params, state, x)
    # the returned state is the one before the last drawn character is fed
    assert np.max(np.abs(np.asarray(h, np.float64).reshape(state.shape) - state)) <= STATE_TOL[dtype]
    return unsure


# ---------------------------------------------------------------- exact replay


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind,layers", MODELS, ids=MODEL_IDS)
def test_draws_replay_in_python(kind, layers, dtype, opts):
    params, h0 = model(kind, layers, dtype)
    prime = [1, 4, 2]
    kw = dict(temperature=1.0, top_k=0, top_p=1.0, greedy=False) | opts
    out, h = cx.sample(params, h0, np.array(prime), 150, seed=123, **kw)
    assert out.dtype == np.int32 and out.shape == (150,) and h.dtype == dtype
    assert h.shape == ((params["W"].shape[0],) if kind == "classic" else (layers, STATES[kind] * 6))
    unsure = check_replay(params, h0, prime, out, h, seed=123, **kw)
    assert unsure <= (0 if dtype == np.float64 else 4), unsure
    # the draws are not all the same character (the test has something to replay)
    assert len(set(out.tolist())) >= (1 if kw["greedy"] else 2 if kw["top_p"] < 1 or kw["top_k"] else 4)


def test_the_replay_can_fail():
    params, h0 = network("lstm", 2)
    out, h = cx.sample(params, h0, [1, 4, 2], 100, 0.9, 7, top_k=5)
    check_replay(params, h0, [1, 4, 2], out, h, 0.9, 7, top_k=5)
    for kw in (
        dict(temperature=0.9, seed=8, top_k=5),
        dict(temperature=1.0, seed=7, top_k=5),
        dict(temperature=0.9, seed=7, top_k=4),
        dict(temperature=0.9, seed=7, top_k=5, top_p=0.7),
    ):
        with pytest.raises(AssertionError):
            check_replay(params, h0, [1, 4, 2], out, h, **kw)
    with pytest.raises(AssertionError):  # the state is checked too
        check_replay(params, h0, [1, 4, 2], out, h + 1e-6, 0.9, 7, top_k=5)
    with pytest.raises(AssertionError):  # and so is the prime
        check_replay(params, h0, [1, 4, 3], out, h, 0.9, 7, top_k=5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_classic_names_and_network_names_sample_alike(dtype):
    params, h0 = classic(dtype)
    net = from_classic(params)
    for kw in (dict(), dict(top_k=4, top_p=0.9, temperature=0.8), dict(greedy=True)):
        a, ha = cx.sample(params, h0, [2, 5], 80, seed=8, **kw)
        b, hb = cx.sample(net, h0[None, :], [2, 5], 80, seed=8, **kw)
        assert np.array_equal(a, b)
        assert ha.shape == (8,) and hb.shape == (1, 8) and np.array_equal(ha, hb[0])


# ---------------------------------------------------------------- seeds and pieces


@pytest.mark.parametrize("kind", ("classic",) + CELLS)
def test_same_seed_same_text_and_the_seed_matters(kind):
    params, h0 = model(kind, 2, np.float64)
    a, ha = cx.sample(params, h0, [3], 300, 1.0, 42)
    b, hb = cx.sample(params, h0, [3], 300, 1.0, 42)
    c, _ = cx.sample(params, h0, [3], 300, 1.0, 43)
    d, _ = cx.sample(params, h0, [3], 300, 1.0, 2**64 - 1)
    assert np.array_equal(a, b) and np.array_equal(ha, hb)
    assert np.mean(a != c) > 0.3 and np.mean(a != d) > 0.3
    assert a.min() >= 0 and a.max() < params["V"].shape[0]
    # the defaults are no filters
    e, he = cx.sample(params, h0, [3], 300, 1.0, 42, top_k=0, top_p=1.0, greedy=False)
    assert np.array_equal(a, e) and np.array_equal(ha, he)
    z, _ = cx.sample(params, None, [0], 5)  # h0 None: zeros
    assert z.tolist() == cx.sample(params, np.zeros_like(h0), [0], 5)[0].tolist()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind,layers", MODELS, ids=MODEL_IDS)
def test_sampling_in_pieces_equals_one_call(kind, layers, dtype):
    params, h0 = model(kind, layers, dtype)
    prime = [0, 7, 3]
    # same seed: a shorter call is a prefix of a longer one
    full, _ = cx.sample(params, h0, prime, 70, seed=5)
    part, h_part = cx.sample(params, h0, prime, 30, seed=5)
    assert np.array_equal(part, full[:30])
    # continuing from the returned state is exactly feeding everything from h0
    nxt, h_nxt = cx.sample(params, h_part, part[-1:], 40, seed=9, top_k=6)
    same, h_same = cx.sample(params, h0, prime + part.tolist(), 40, seed=9, top_k=6)
    assert np.array_equal(nxt, same) and np.array_equal(h_nxt, h_same)
    _, h_fed = cx.sample(params, h0, prime + part.tolist() + nxt[:-1].tolist(), 0)
    assert np.array_equal(h_nxt, h_fed)
    # greedy: pieces are one call, characters and state
    g_full, hg_full = cx.sample(params, h0, prime, 50, greedy=True)
    g1, hg1 = cx.sample(params, h0, prime, 20, greedy=True)
    g2, hg2 = cx.sample(params, hg1, g1[-1:], 30, greedy=True)
    # g2 starts with the character after g1[-1]: one call's characters 20..49
    assert np.array_equal(np.concatenate([g1, g2]), g_full)
    assert np.array_equal(hg2, hg_full)
    # and the replay agrees with the pieces
    assert check_replay(params, h_part, part[-1:].tolist(), nxt, h_nxt, seed=9, top_k=6) <= 3


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_threads_draw_what_one_thread_draws(dtype):
    # The suite runs with CHARRNN_TEAM=full (conftest.py): 70 units, more than
    # one panel, really split between the threads. Every cell, filter and
    # thread count is checked in C++ (tests/cpp/test_engine.cpp); here the
    # binding and the Python layers pass the threads on.
    params, h0 = network("lstm", 2, dtype, K=12, m=70, seed=5)
    vocab = cx.Vocabulary.from_text("abcdefghijkl")
    one, h_one = cx.sample(params, h0, [2, 0, 5], 120, seed=31, top_k=5, threads=1)
    assert len(set(one.tolist())) >= 2
    for threads in (2, 3):
        out, h = cx.sample(params, h0, [2, 0, 5], 120, seed=31, top_k=5, threads=threads)
        assert np.array_equal(out, one) and np.array_equal(h, h_one), threads
        text = sample_text(params, vocab, 120, prime=np.array([2, 0, 5]), seed=31, h0=h0, top_k=5, threads=threads)
        assert text == vocab.decode(one)
        pieces = sample_pieces(params, vocab, 120, prime=np.array([2, 0, 5]), seed=31, h0=h0, top_k=5, threads=threads)
        assert "".join(pieces) == text
    # the threads reach the engine, which checks them
    for call in (
        lambda: sample_text(params, vocab, 5, seed=1, h0=h0, threads=0),
        lambda: "".join(sample_pieces(params, vocab, 5, seed=1, h0=h0, threads=0)),
    ):
        with pytest.raises(ValueError, match=r"^threads must be >= 1, got 0$"):
            call()


@pytest.mark.parametrize("kind", ("classic",) + CELLS)
def test_zero_characters_and_long_prime(kind):
    params, h0 = model(kind, 2, np.float64)
    prime = np.arange(params["V"].shape[0]).repeat(3)
    out, h = cx.sample(params, h0, prime, 0)
    assert out.shape == (0,) and out.dtype == np.int32
    state = np.asarray(h0, np.float64).reshape(zero_state(params).shape)
    for x in prime:
        _, state = distribution(params, state, x)
    assert np.max(np.abs(h.reshape(state.shape) - state)) <= 1e-12


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ("classic",) + CELLS)
def test_state_after_prime_equals_evaluate_loss_state(kind, dtype):
    params, h0 = model(kind, 2, dtype)
    data = np.random.default_rng(4).integers(0, params["V"].shape[0], 60)
    _, h_eval = cx.evaluate_loss(params, data, h0)
    _, h_sample = cx.sample(params, h0, data[:-1], 0)
    assert h_eval.shape == h_sample.shape
    assert np.max(np.abs(h_eval - h_sample)) <= (1e-12 if dtype == np.float64 else 1e-5)


# ---------------------------------------------------------------- the filter sets


def test_reference_filter_sets():
    p = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    assert np.flatnonzero(ref.filter_probs(p, top_k=2)).tolist() == [1, 3]
    assert np.flatnonzero(ref.filter_probs(p, top_k=5)).tolist() == [0, 1, 2, 3, 4]
    assert np.flatnonzero(ref.filter_probs(p, top_p=0.69)).tolist() == [1, 3]  # 0.7 >= 0.69
    assert np.flatnonzero(ref.filter_probs(p, top_p=0.71)).tolist() == [1, 3, 4]
    assert np.flatnonzero(ref.filter_probs(p, top_p=1e-9)).tolist() == [1]
    assert np.allclose(ref.filter_probs(p, top_k=2, top_p=0.5), [0, 1, 0, 0, 0])  # 0.4/0.7 >= 0.5
    assert np.allclose(ref.filter_probs(p, top_k=3, top_p=0.9), [0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85])
    assert np.isclose(ref.filter_probs(p, top_p=0.71).sum(), 1.0)
    # ties rank the lower index first
    assert np.flatnonzero(ref.filter_probs(np.array([0.25, 0.25, 0.25, 0.25]), top_k=2)).tolist() == [0, 1]


def test_replay_draw_rules():
    p = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    # inverse CDF over [0.05, 0.45, 0.55, 0.85, 1.0]
    assert [replay_draw(p, u)[0] for u in (0.0, 0.049, 0.05, 0.5, 0.84, 0.99)] == [0, 0, 1, 2, 3, 4]
    assert replay_draw(p, 0.99, top_k=2)[0] == 3 and replay_draw(p, 0.1, top_k=2)[0] == 1
    assert replay_draw(p, 0.7, top_p=0.69)[0] == 3 and replay_draw(p, 0.99, top_p=0.71)[0] == 4
    assert replay_draw(p, 0.9, greedy=True)[0] == 1
    assert replay_draw(p, 0.05, margin=1e-9)[2] is False  # on a CDF step
    assert replay_draw(p, 0.3, margin=1e-9)[2] is True


@pytest.mark.parametrize("kind", ("classic",) + CELLS)
def test_top_k_top_p_and_greedy_sets(kind):
    params, h0 = model(kind, 2, np.float64)
    n = 300
    k_out, _ = cx.sample(params, h0, [0], n, 2.0, 1, top_k=3)
    p_out, _ = cx.sample(params, h0, [0], n, 2.0, 2, top_p=0.5)
    state, x = np.asarray(h0, np.float64).reshape(zero_state(params).shape), 0
    for y in k_out:
        p, state = distribution(params, state, x, 2.0)
        assert y in np.argsort(-p, kind="stable")[:3]
        x = int(y)
    state, x, sizes = np.asarray(h0, np.float64).reshape(zero_state(params).shape), 0, []
    for y in p_out:
        p, state = distribution(params, state, x, 2.0)
        kept = np.flatnonzero(ref.filter_probs(p, top_p=0.5))
        sizes.append(len(kept))
        assert y in kept
        x = int(y)
    assert max(sizes) > 1  # the nucleus is not always a single character
    greedy, _ = cx.sample(params, h0, [0], 60, greedy=True)
    assert np.array_equal(greedy, cx.sample(params, h0, [0], 60, seed=3, top_k=1)[0])
    assert np.array_equal(greedy, cx.sample(params, h0, [0], 60, seed=4, top_p=1e-12)[0])
    assert np.array_equal(greedy, cx.sample(params, h0, [0], 60, 1e-6, 5)[0])  # a cold temperature
    state, x = np.asarray(h0, np.float64).reshape(zero_state(params).shape), 0
    for y in greedy:
        p, state = distribution(params, state, x)
        assert y == np.argmax(p)
        x = int(y)


# ---------------------------------------------------------------- the distribution drawn from


def chi2_quantile(df, z=3.719):
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.719: 0.9999)."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def stationary(kind, layers, dtype, K=10):
    """A model whose every draw comes from one distribution: with Wx = Wh = 0
    (U = W = 0) each layer's state is a fixed point of its biases. Returns
    (params, fixed state)."""
    if kind == "classic":
        rng = np.random.default_rng(5)
        params = {
            "U": np.zeros((6, K)),
            "W": np.zeros((6, 6)),
            "V": rng.normal(0, 1, (K, 6)),
            "b": rng.normal(0, 1, 6),
            "c": rng.normal(0, 1, K),
        }
    else:
        params, _ = network(kind, layers, np.float64, K=K, seed=3)
        params["V"] /= 8.0
        for k in params:
            if k.endswith(".Wx") or k.endswith(".Wh"):
                params[k][:] = 0.0
    state = zero_state(params)
    for _ in range(400):  # run the biases to their fixed point
        _, state = distribution(params, state, 0)
    return {k: v.astype(dtype) for k, v in params.items()}, state.astype(dtype)


CHI_OPTIONS = [
    dict(),
    dict(top_k=4),
    dict(top_p=0.75),
    dict(top_k=6, top_p=0.9, temperature=1.5),
    dict(temperature=0.6),
]


@pytest.mark.parametrize("opts", CHI_OPTIONS, ids=["plain", "top_k", "top_p", "k+p+T", "cold"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind,layers", MODELS, ids=MODEL_IDS)
def test_chi_square_on_a_stationary_model(kind, layers, dtype, opts):
    K, n = 10, 20000
    params, h_fixed = stationary(kind, layers, dtype, K)
    temperature = opts.get("temperature", 1.0)
    p, _ = distribution(params, h_fixed, 0, temperature)
    q = ref.filter_probs(p, opts.get("top_k", 0), opts.get("top_p", 1.0))
    out, h = cx.sample(params, h_fixed, [0], n, seed=11, **opts)
    counts = np.bincount(out, minlength=K)
    assert counts.sum() == n and np.all(counts[q == 0] == 0)  # nothing outside the filtered set
    sup = q > 0
    chi2 = float(np.sum((counts[sup] - n * q[sup]) ** 2 / (n * q[sup])))
    df = max(int(sup.sum()) - 1, 1)
    assert chi2 < chi2_quantile(df), (chi2, counts, n * q)
    # the test has power: the untempered / unfiltered law is rejected
    if temperature != 1.0 or q[sup].size < K:
        wrong = ref.filter_probs(distribution(params, h_fixed, 0, 1.0)[0], 0, 1.0)
        chi2_wrong = float(np.sum((counts - n * wrong) ** 2 / (n * wrong)))
        assert chi2_wrong > 10 * chi2_quantile(K - 1), chi2_wrong
    # the state stays at the fixed point
    assert np.max(np.abs(h.astype(np.float64) - h_fixed.astype(np.float64))) <= STATE_TOL[dtype]


@pytest.mark.parametrize("dtype, temperature", [(np.float32, 3e-39), (np.float64, 6e-309)])
@pytest.mark.parametrize("kind", ["classic", "gru"])
def test_temperature_that_overflows_the_logits(kind, dtype, temperature):
    """Regression: the logits were scaled by 1/temperature before their
    maximum was subtracted, so |logit| > 1 overflowed to inf - inf."""
    c = np.array([5.0, -3.0, 7.0, 2.0, 6.5], dtype=dtype)  # the most probable character is 2
    if kind == "classic":
        params = {
            k: np.zeros(s, dtype=dtype)
            for k, s in {"U": (3, 5), "W": (3, 3), "V": (5, 3), "b": (3,), "c": (5,)}.items()
        }
    else:
        params = net_init("gru", 5, 3, 2, sig=0.0, dtype=dtype)
    params["c"][:] = c
    for kw in (dict(greedy=True), dict(seed=1), dict(seed=2, top_p=0.5)):
        out, h = cx.sample(params, None, [0], 4, temperature, **kw)
        assert out.tolist() == [2, 2, 2, 2] and np.all(np.isfinite(h))
