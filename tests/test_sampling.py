"""Synthesis: reproducibility, validity and the distribution it draws from."""
from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import reference

MASK = (1 << 64) - 1


class SplitMix64:
    """A Python copy of the generator the C++ sampler uses."""

    def __init__(self, seed: int):
        self.state = seed & MASK

    def uniform(self) -> float:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        return (z >> 11) * 2.0 ** -53


def replay(params, prime, n, temperature, seed):
    """The same synthesis in NumPy: reference probabilities, inverse CDF."""
    h = np.zeros(params["W"].shape[0])
    for x in prime[:-1]:
        _, h = reference.next_char_distribution(params, h, x)
    rng, x, out = SplitMix64(seed), prime[-1], []
    for _ in range(n):
        p, h = reference.next_char_distribution(params, h, x, temperature)
        x = int(np.searchsorted(np.cumsum(p), rng.uniform() * p.sum(), side="right"))
        out.append(x)
    return out


@pytest.fixture
def trained_like():
    # Large weights give peaked, state-dependent distributions.
    return cx.init_params(12, 10, sig=0.8, seed=1)


def test_same_seed_same_text_different_seed_different_text(trained_like):
    a, ha = cx.sample(trained_like, None, [3], 300, 1.0, 42)
    b, hb = cx.sample(trained_like, None, [3], 300, 1.0, 42)
    c, _ = cx.sample(trained_like, None, [3], 300, 1.0, 43)
    assert np.array_equal(a, b) and np.array_equal(ha, hb)
    assert not np.array_equal(a, c)
    assert a.dtype == np.int32 and a.shape == (300,)
    assert a.min() >= 0 and a.max() < 12


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_reference_distribution_exactly(trained_like, temperature):
    prime = [4, 0, 7]
    out, _ = cx.sample(trained_like, None, prime, 200, temperature, 2024)
    assert out.tolist() == replay(trained_like, prime, 200, temperature, 2024)


def test_continuation_from_returned_state(trained_like):
    full, _ = cx.sample(trained_like, None, [5], 10, 1.0, 9)
    # The returned h is the state before the last sampled character is fed,
    # so feeding that character continues the same text (with a new seed).
    part, h = cx.sample(trained_like, None, [5], 4, 1.0, 9)
    assert np.array_equal(part, full[:4])
    nxt, _ = cx.sample(trained_like, h, [part[-1]], 3, 1.0, 10)
    ref = replay_from(trained_like, h, int(part[-1]), 3, 10)
    assert nxt.tolist() == ref


def replay_from(params, h, x, n, seed):
    rng, out = SplitMix64(seed), []
    for _ in range(n):
        p, h = reference.next_char_distribution(params, h, x)
        x = int(np.searchsorted(np.cumsum(p), rng.uniform() * p.sum(), side="right"))
        out.append(x)
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_empirical_distribution_matches_softmax_over_temperature(temperature):
    # With U = W = 0 the hidden state is tanh(b) at every step, so every draw
    # comes from the same distribution softmax((V tanh(b) + c) / temperature).
    K, m, n = 8, 6, 40_000
    rng = np.random.default_rng(5)
    params = {"U": np.zeros((m, K)), "W": np.zeros((m, m)), "V": rng.normal(0, 1, (K, m)),
              "b": rng.normal(0, 1, m), "c": rng.normal(0, 1, K)}
    p, _ = reference.next_char_distribution(params, np.zeros(m), 0, temperature)
    out, _ = cx.sample(params, None, [0], n, temperature, 123)
    counts = np.bincount(out, minlength=K)
    chi2 = float(np.sum((counts - n * p) ** 2 / (n * p)))
    # 99.9% quantile of chi-square with K - 1 = 7 degrees of freedom.
    assert chi2 < 24.32, (chi2, counts, n * p)
    # And the temperature really is applied: compare to the untempered law.
    if temperature != 1.0:
        p1, _ = reference.next_char_distribution(params, np.zeros(m), 0, 1.0)
        chi2_wrong = float(np.sum((counts - n * p1) ** 2 / (n * p1)))
        assert chi2_wrong > 100


def test_zero_characters_and_long_prime(trained_like):
    out, h = cx.sample(trained_like, None, np.arange(12).repeat(3), 0, 1.0, 0)
    assert out.shape == (0,)
    _, H, _ = reference.forward(trained_like, np.arange(12).repeat(3), np.zeros(36, dtype=int))
    assert np.allclose(h, H[-1], rtol=0, atol=1e-12)
