"""Sampling with temperature, top-k, top-p (nucleus) and greedy choice, for
the general networks (net_sample) and the vanilla core (sample), whose
default results must not change."""
import numpy as np
import pytest

from charrnn_ext import _core
from charrnn_ext import reference as vref
from charrnn_ext import reference_nets as ref
from charrnn_ext.nets import STATES, net_init
from charrnn_ext.params import init_params

from nets_common import CELLS

MASK = (1 << 64) - 1


class SplitMix64:
    """The generator of cpp/sampling.hpp, in Python."""

    def __init__(self, seed):
        self.state = seed

    def uniform(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return ((z ^ (z >> 31)) >> 11) * 2.0 ** -53


def draw(p, u):
    """Inverse CDF over the positive entries, as draw_index."""
    cum = np.cumsum(np.where(p > 0, p, 0.0))
    return int(min(np.searchsorted(cum, u * cum[-1], side="right"), np.flatnonzero(p > 0)[-1]))


def _net(cell, layers=2, K=12, m=6, seed=0):
    params = net_init(cell, K, m, layers, sig=0.4, seed=seed)
    rng = np.random.default_rng(seed + 1)
    params["c"] += rng.standard_normal(K)
    h0 = 0.3 * np.ones((layers, STATES[cell] * m))
    return params, h0


def _replay(cell, params, h0, prime, n, temperature, top_k, top_p, greedy, seed):
    """The sampler in Python: reference distributions + the same generator."""
    rng = SplitMix64(seed)
    state = np.array(h0, dtype=np.float64)
    for x in prime[:-1]:
        _, state = ref.next_char_distribution(cell, params, state, x)
    out, x = [], prime[-1]
    for _ in range(n):
        p, state = ref.next_char_distribution(cell, params, state, x, temperature)
        x = int(np.argmax(p)) if greedy else draw(ref.filter_probs(p, top_k, top_p), rng.uniform())
        out.append(x)
    return np.array(out)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("opts", [dict(), dict(top_k=3), dict(top_p=0.6), dict(top_k=5, top_p=0.8, temperature=0.7),
                                  dict(greedy=True)])
def test_net_sample_matches_python_replay(cell, opts):
    params, h0 = _net(cell)
    prime = np.array([1, 4, 2])
    kw = dict(temperature=1.0, top_k=0, top_p=1.0, greedy=False) | opts
    out, h = _core.net_sample(cell, params, h0, prime, 60, seed=123, **kw)
    assert out.dtype == np.int32 and out.shape == (60,)
    assert np.array_equal(out, _replay(cell, params, h0, prime, 60, seed=123, **kw))
    # h is the state before feeding the last sampled character: continuing from it is exact
    out2, _ = _core.net_sample(cell, params, h, out[-1:], 10, seed=9, **kw)
    ref_cont = _replay(cell, params, h0, np.concatenate([prime, out]), 10, seed=9, **kw)
    assert np.array_equal(out2, ref_cont)


def test_reproducible_with_seed_and_seed_matters():
    params, h0 = _net("lstm")
    a, ha = _core.net_sample("lstm", params, h0, [0], 200, seed=5)
    b, hb = _core.net_sample("lstm", params, h0, [0], 200, seed=5)
    c, _ = _core.net_sample("lstm", params, h0, [0], 200, seed=6)
    assert np.array_equal(a, b) and np.array_equal(ha, hb) and not np.array_equal(a, c)
    z, _ = _core.net_sample("lstm", params, None, [0], 5)
    assert z.shape == (5,)


@pytest.mark.parametrize("cell", CELLS)
def test_top_k_stays_in_top_k(cell):
    params, h0 = _net(cell, seed=2)
    k = 3
    out, _ = _core.net_sample(cell, params, h0, [0], 300, top_k=k, temperature=2.0, seed=1)
    state, x = h0, 0
    for y in out:
        p, state = ref.next_char_distribution(cell, params, state, x, 2.0)
        assert y in np.argsort(-p, kind="stable")[:k]
        x = y


def test_filter_sets():
    p = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    assert np.flatnonzero(ref.filter_probs(p, top_k=2)).tolist() == [1, 3]
    assert np.flatnonzero(ref.filter_probs(p, top_p=0.69)).tolist() == [1, 3]   # 0.7 >= 0.69
    assert np.flatnonzero(ref.filter_probs(p, top_p=0.71)).tolist() == [1, 3, 4]
    assert np.flatnonzero(ref.filter_probs(p, top_p=1e-9)).tolist() == [1]
    assert np.allclose(ref.filter_probs(p, top_k=2, top_p=0.5), [0, 1, 0, 0, 0])  # 0.4/0.7 >= 0.5
    assert np.isclose(ref.filter_probs(p, top_p=0.71).sum(), 1.0)


def _wilson_hilferty_chi2(df, z=3.09):  # ~ the 0.999 quantile
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("opts", [dict(), dict(top_k=4), dict(top_p=0.75), dict(top_k=6, top_p=0.9, temperature=1.5)])
def test_stationary_model_distribution(cell, opts):
    # Wx = Wh = 0: every layer's state is a fixed point of the biases, so every
    # draw comes from the same distribution; compare the counts with the
    # filtered, renormalised softmax (chi-square, fixed seed).
    K = 10
    params, _ = _net(cell, layers=2, K=K, seed=3)
    for k in params:
        if k.endswith(".Wx") or k.endswith(".Wh"):
            params[k][:] = 0.0
    h_fixed = np.zeros((2, STATES[cell] * 6))
    for _ in range(200):  # run the biases to their fixed point
        _, h_fixed = ref.next_char_distribution(cell, params, h_fixed, 0)
    p, _ = ref.next_char_distribution(cell, params, h_fixed, 0, opts.get("temperature", 1.0))
    q = ref.filter_probs(p, opts.get("top_k", 0), opts.get("top_p", 1.0))
    n = 20000
    out, _ = _core.net_sample(cell, params, h_fixed, [0], n, seed=11, **opts)
    counts = np.bincount(out, minlength=K)
    assert np.all(counts[q == 0] == 0)
    sup = q > 0
    chi2 = float(np.sum((counts[sup] - n * q[sup]) ** 2 / (n * q[sup])))
    assert chi2 < _wilson_hilferty_chi2(max(int(sup.sum()) - 1, 1)), (chi2, counts, n * q)


# ---------------------------------------------------------------- vanilla sample

def _vanilla():
    params = init_params(15, 8, sig=0.3, seed=1)
    params["c"] += np.random.default_rng(2).standard_normal(15)
    return params, np.tanh(np.linspace(-1, 1, 8))


def test_vanilla_sample_defaults_unchanged():
    params, h0 = _vanilla()
    a, ha = _core.sample(params, h0, np.array([3, 1]), 100, 0.9, 42)
    b, hb = _core.sample(params, h0, np.array([3, 1]), 100, 0.9, 42, top_k=0, top_p=1.0, greedy=False)
    assert np.array_equal(a, b) and np.array_equal(ha, hb)
    # and it is still the SplitMix64 inverse-CDF draw from softmax(o / temperature)
    rng, h, x, expect = SplitMix64(42), vref.next_char_distribution(params, h0, 3)[1], 1, []
    for _ in range(100):
        p, h = vref.next_char_distribution(params, h, x, 0.9)
        x = draw(p, rng.uniform())
        expect.append(x)
    assert np.array_equal(a, expect)


def test_vanilla_filters():
    params, h0 = _vanilla()
    g, _ = _core.sample(params, h0, [0], 50, greedy=True)
    k1, _ = _core.sample(params, h0, [0], 50, top_k=1, seed=3)
    tiny_p, _ = _core.sample(params, h0, [0], 50, top_p=1e-9, seed=4)
    assert np.array_equal(g, k1) and np.array_equal(g, tiny_p)
    h, x = h0, 0
    for y in g:
        p, h = vref.next_char_distribution(params, h, x)
        assert y == np.argmax(p)
        x = y


def test_one_layer_rnn_net_sample_equals_vanilla():
    params, h0 = _vanilla()
    net = {"l0.Wx": params["U"], "l0.Wh": params["W"], "l0.b": params["b"], "V": params["V"], "c": params["c"]}
    for kw in (dict(), dict(top_k=4, top_p=0.9, temperature=0.8)):
        a, ha = _core.sample(params, h0, [2, 5], 80, seed=8, **kw)
        b, hb = _core.net_sample("rnn", net, h0[None, :], [2, 5], 80, seed=8, **kw)
        assert np.array_equal(a, b)
        assert np.allclose(ha, hb[0], rtol=0, atol=1e-13)


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("kw,exc,msg", [
    (dict(top_k=-1), ValueError, "top_k must be >= 0"),
    (dict(top_k=1.5), TypeError, "top_k must be an integer"),
    (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=float("nan")), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(temperature=0.0), ValueError, "temperature must be a positive finite number"),
    (dict(temperature=-1.0), ValueError, "temperature must be a positive finite number"),
    (dict(seed=-1), ValueError, "seed must be an integer"),
])
def test_bad_sampling_options(kw, exc, msg):
    params, h0 = _net("gru")
    with pytest.raises(exc, match=msg):
        _core.net_sample("gru", params, h0, [0], 5, **kw)
    vp, vh = _vanilla()
    with pytest.raises(exc, match=msg):
        _core.sample(vp, vh, [0], 5, **kw)


def test_bad_sample_inputs():
    params, h0 = _net("lstm")
    with pytest.raises(ValueError, match="unknown cell"):
        _core.net_sample("LSTM", params, h0, [0], 5)
    with pytest.raises(ValueError, match="prime is empty"):
        _core.net_sample("lstm", params, h0, np.array([], dtype=int), 5)
    with pytest.raises(IndexError, match="outside the vocabulary"):
        _core.net_sample("lstm", params, h0, [12], 5)
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 6\); expected"):
        _core.net_sample("lstm", params, np.zeros((2, 6)), [0], 5)
