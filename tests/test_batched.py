"""Minibatched training: B streams, gradients summed over the batch.

The NumPy yardstick for a batched step is the sum of the per-stream reference
gradients (charrnn_ext.reference), then one clipped AdaGrad update. Work is
split between threads by fixed rules (streams for the recurrences, output rows
for everything else), so results must be bit-identical for every thread count.
"""
import numpy as np
import pytest

from charrnn_ext import _core
from charrnn_ext import reference as ref
from charrnn_ext.params import PARAM_NAMES, copy_params, init_params, zeros_like_params


def relerr(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-12, np.abs(a) + np.abs(b)))) if a.size else 0.0


def ref_batched_loss_and_grads(params, X, Y, h0):
    loss, grads, hs = 0.0, {k: np.zeros(params[k].shape) for k in PARAM_NAMES}, []
    for s in range(X.shape[0]):
        l, g, h = ref.loss_and_grads(params, X[s], Y[s], h0[s])
        loss += l
        for k in PARAM_NAMES:
            grads[k] += g[k]
        hs.append(h)
    return loss, grads, np.array(hs)


def ref_train_steps_batched(params, state, data, h0, n_steps, B, T, eta=0.1, clip=5.0, eps=1e-8):
    L = len(data) // B
    m = params["W"].shape[0]
    h = np.zeros((B, m)) if h0 is None else np.array(h0, dtype=np.float64)
    pos = np.zeros(B, dtype=np.int64)
    wraps = np.zeros(B, dtype=np.int64)
    losses = []
    for _ in range(n_steps):
        for s in range(B):
            if pos[s] + T + 1 > L:
                pos[s], h[s], wraps[s] = 0, 0.0, wraps[s] + 1
        X = np.array([data[s * L + pos[s]: s * L + pos[s] + T] for s in range(B)])
        Y = np.array([data[s * L + pos[s] + 1: s * L + pos[s] + T + 1] for s in range(B)])
        loss, grads, h = ref_batched_loss_and_grads(params, X, Y, h)
        ref.adagrad_update(params, state, grads, eta, clip, eps)
        losses.append(loss)
        pos += T
    return np.array(losses), h, pos, wraps


def random_case(rng, K, m, B, T, dtype=np.float64):
    p = init_params(K, m, seed=int(rng.integers(1 << 30)), dtype=dtype)
    p["b"][:] = 0.01 * rng.standard_normal(m)
    p["c"][:] = 0.01 * rng.standard_normal(K)
    X = rng.integers(0, K, (B, T))
    Y = rng.integers(0, K, (B, T))
    h0 = np.tanh(rng.standard_normal((B, m))).astype(dtype)
    return p, X, Y, h0


@pytest.mark.parametrize("K,m,B,T", [(2, 1, 1, 1), (2, 1, 3, 1), (5, 7, 4, 3), (30, 17, 6, 9), (80, 100, 8, 25), (72, 50, 33, 25)])
def test_batched_gradients_match_sum_of_reference(K, m, B, T):
    rng = np.random.default_rng(K * 1000 + m * 10 + B)
    p, X, Y, h0 = random_case(rng, K, m, B, T)
    loss, grads, h = _core.loss_and_grads_batched(p, X, Y, h0)
    rloss, rgrads, rh = ref_batched_loss_and_grads(p, X, Y, h0)
    assert h.shape == (B, m)
    assert relerr(loss, rloss) <= 1e-10
    assert relerr(h, rh) <= 1e-10
    for k in PARAM_NAMES:
        assert relerr(grads[k], rgrads[k]) <= 1e-10, k


def test_batch_of_one_is_the_classic_step():
    rng = np.random.default_rng(7)
    p, X, Y, h0 = random_case(rng, 40, 30, 1, 25)
    l1, g1, h1 = _core.loss_and_grads_batched(p, X, Y, h0)
    l2, g2, h2 = _core.loss_and_grads(p, X[0], Y[0], h0[0])
    assert l1 == l2
    np.testing.assert_array_equal(h1[0], h2)
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(g1[k], g2[k])


def test_train_steps_batched_b1_bit_identical_to_train_steps():
    rng = np.random.default_rng(3)
    K, m = 30, 40
    data = rng.integers(0, K, 2000)
    p1 = init_params(K, m, seed=5)
    s1 = zeros_like_params(p1)
    p2, s2 = copy_params(p1), zeros_like_params(p1)
    L1, h1, pos1, w1, d1 = _core.train_steps(p1, s1, data, n_steps=120, seq_length=25)
    L2, h2, pos2, w2, d2 = _core.train_steps_batched(p2, s2, data, n_steps=120, batch_size=1, seq_length=25)
    np.testing.assert_array_equal(L1, L2)
    np.testing.assert_array_equal(h1, h2[0])
    assert (pos1, w1, d1) == (int(pos2[0]), int(w2[0]), d2)
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(p1[k], p2[k])
        np.testing.assert_array_equal(s1[k], s2[k])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 2, 5, 16])
def test_thread_count_does_not_change_results(dtype, B):
    rng = np.random.default_rng(11)
    K, m = 50, 37
    data = rng.integers(0, K, 6000)
    results = []
    for threads in (1, 2, 3):
        p = init_params(K, m, seed=2, dtype=dtype)
        s = zeros_like_params(p)
        out = _core.train_steps_batched(p, s, data, n_steps=15, batch_size=B, seq_length=20, threads=threads)
        results.append((out, p, s))
    for out, p, s in results[1:]:
        np.testing.assert_array_equal(out[0], results[0][0][0])
        np.testing.assert_array_equal(out[1], results[0][0][1])
        for k in PARAM_NAMES:
            np.testing.assert_array_equal(p[k], results[0][1][k])
            np.testing.assert_array_equal(s[k], results[0][2][k])
    pX = init_params(K, m, seed=2, dtype=dtype)
    X, Y = rng.integers(0, K, (B, 9)), rng.integers(0, K, (B, 9))
    a = _core.loss_and_grads_batched(pX, X, Y, threads=1)
    b = _core.loss_and_grads_batched(pX, X, Y, threads=2)
    assert a[0] == b[0]
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(a[1][k], b[1][k])


def test_train_steps_batched_matches_reference_walk():
    rng = np.random.default_rng(5)
    s_ = ("the quick brown fox jumps over the lazy dog. " * 3 + "pack my box with five dozen liquor jugs! ") * 12
    chars = sorted(set(s_))
    data = np.array([chars.index(c) for c in s_])
    K, m, B, T = len(chars), 20, 4, 25
    p1 = init_params(K, m, seed=1)
    p2 = copy_params(p1)
    s1, s2 = zeros_like_params(p1), zeros_like_params(p1)
    h0 = np.tanh(rng.standard_normal((B, m)))
    n = 60  # enough to wrap every stream at least once
    L1, h1, pos1, w1, d1 = _core.train_steps_batched(p1, s1, data, h0, n_steps=n, batch_size=B, seq_length=T, threads=2)
    L2, h2, pos2, w2 = ref_train_steps_batched(p2, s2, data, h0, n, B, T)
    assert not d1
    np.testing.assert_array_equal(pos1, pos2)
    np.testing.assert_array_equal(w1, w2)
    assert w1.min() >= 1
    assert relerr(L1, L2) <= 1e-9
    assert relerr(h1, h2) <= 1e-9
    for k in PARAM_NAMES:
        assert relerr(p1[k], p2[k]) <= 1e-9, k


def test_float32_batched_close_to_reference():
    rng = np.random.default_rng(9)
    p, X, Y, h0 = random_case(rng, 60, 45, 6, 25, dtype=np.float32)
    loss, grads, h = _core.loss_and_grads_batched(p, X, Y, h0)
    rloss, rgrads, rh = ref_batched_loss_and_grads({k: v.astype(np.float64) for k, v in p.items()}, X, Y,
                                                   h0.astype(np.float64))
    assert grads["W"].dtype == np.float32 and h.dtype == np.float32
    assert abs(loss - rloss) <= 1e-4 * abs(rloss)
    for k in PARAM_NAMES:
        scale = np.abs(rgrads[k]).max()
        assert np.abs(grads[k] - rgrads[k]).max() <= 1e-4 * scale + 1e-6, k


def test_positions_continue_a_walk():
    rng = np.random.default_rng(1)
    K, m, B = 20, 16, 3
    data = rng.integers(0, K, 3000)
    p1 = init_params(K, m, seed=4)
    p2, s1, s2 = copy_params(p1), zeros_like_params(p1), zeros_like_params(p1)
    La, ha, posa, _, _ = _core.train_steps_batched(p1, s1, data, n_steps=10, batch_size=B)
    Lb, hb, posb, _, _ = _core.train_steps_batched(p1, s1, data, ha, n_steps=10, batch_size=B, positions=posa)
    Lc, hc, posc, _, _ = _core.train_steps_batched(p2, s2, data, n_steps=20, batch_size=B)
    np.testing.assert_array_equal(np.concatenate([La, Lb]), Lc)
    np.testing.assert_array_equal(hb, hc)
    np.testing.assert_array_equal(posb, posc)


def test_batched_validation_messages():
    K, m = 10, 8
    p = init_params(K, m, seed=0)
    s = zeros_like_params(p)
    data = np.arange(100) % K
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        _core.train_steps_batched(p, s, data, n_steps=1, batch_size=0)
    with pytest.raises(ValueError, match="segments"):
        _core.train_steps_batched(p, s, data, n_steps=1, batch_size=10, seq_length=25)
    with pytest.raises(ValueError, match=r"h0 has shape \(8,\); expected \(batch_size, m\) = \(2, 8\)"):
        _core.train_steps_batched(p, s, data, np.zeros(m), n_steps=1, batch_size=2)
    with pytest.raises(TypeError, match="h0 has dtype float32"):
        _core.train_steps_batched(p, s, data, np.zeros((2, m), np.float32), n_steps=1, batch_size=2)
    with pytest.raises(ValueError, match="positions has shape"):
        _core.train_steps_batched(p, s, data, n_steps=1, batch_size=2, positions=[0, 0, 0])
    with pytest.raises(ValueError, match="outside its segment"):
        _core.train_steps_batched(p, s, data, n_steps=1, batch_size=2, positions=[0, 51])
    with pytest.raises(ValueError, match="threads must be at least 1"):
        _core.train_steps_batched(p, s, data, n_steps=1, batch_size=2, threads=0)
    with pytest.raises(TypeError, match="threads must be an integer"):
        _core.train_steps_batched(p, s, data, n_steps=1, batch_size=2, threads=1.5)
    with pytest.raises(IndexError, match=r"X\[1, 2\] = 10 is outside the vocabulary range \[0, 10\)"):
        _core.loss_and_grads_batched(p, [[0, 0, 0], [0, 0, 10]], [[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="X and Y must have the same shape"):
        _core.loss_and_grads_batched(p, [[0, 0, 0]], [[0, 0]])
    with pytest.raises(ValueError, match="must be 2-D"):
        _core.loss_and_grads_batched(p, [0, 0], [0, 0])
