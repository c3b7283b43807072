"""The float32 engine against the float64 one (and the float64 NumPy
reference): classic RNN and every network, one stream and B streams,
training, evaluation and sampling."""

from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import reference_nets as ref
from charrnn_ext.layout import PARAM_NAMES, copy_params, init_opt_state, net_init, zeros_like_params
from helpers import CELLS, max_scaled_err, net_problem, problem

# float32 has a unit roundoff of 6e-8. Every gradient entry is a sum over the
# T = 25 steps of products accumulated over up to m = 100 terms, and the
# backward recurrence passes errors through T steps, so errors of order
# sqrt(25 * 100) * 6e-8 = 3e-6 of the array's scale are expected; measured
# values are 1e-7 to 5e-6. 2e-5 leaves room without hiding a real bug
# (a wrong index or a missing term changes results by > 1e-3).
TOL32 = 2e-5


def as32(params):
    return copy_params(params, np.float32)


@pytest.mark.parametrize("K,m,T,sig", [(80, 100, 25, 0.01), (80, 100, 25, 0.1), (5, 3, 1, 0.3), (40, 64, 50, 0.05)])
def test_float32_gradients_track_float64(K, m, T, sig):
    p64, X, Y, h0 = problem(K, m, T, seed=K + m, sig=sig)
    p32 = as32(p64)
    loss64, g64, h64 = cx.loss_and_grads(p64, X, Y, h0)
    loss32, g32, h32 = cx.loss_and_grads(p32, X, Y, h0.astype(np.float32))
    assert isinstance(loss32, float)
    assert abs(loss32 - loss64) <= TOL32 * loss64
    assert h32.dtype == np.float32 and max_scaled_err(h32, h64) <= TOL32
    for name in PARAM_NAMES:
        assert g32[name].dtype == np.float32
        assert max_scaled_err(g32[name], g64[name]) <= TOL32, name


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_float32_networks_track_float64(cell, layers):
    # Same budget as TOL32: m = 8, T = 25 and contracting weights.
    params, X, Y, h0 = net_problem(cell, K=9, m=8, layers=layers, T=25, seed=3)
    p32 = as32(params)
    l64, g64, h64 = cx.loss_and_grads(params, X, Y, h0)
    l32, g32, h32 = cx.loss_and_grads(p32, X, Y, h0.astype(np.float32))
    assert h32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    assert abs(l32 - l64) <= TOL32 * abs(l64)
    for k in params:
        assert max_scaled_err(g32[k], g64[k]) <= TOL32, k
    assert max_scaled_err(h32, h64) <= TOL32


@pytest.mark.parametrize("cell", CELLS)
def test_float32_streams_with_dropout_close_to_the_reference(cell):
    # B = 6 streams, m = 130 > NR (64 float32 columns per panel), 2 threads:
    # the float32 engine's panels against the float64 NumPy reference replaying
    # the same dropout masks. Sums over 6 streams of T = 20 steps, so the
    # loss keeps ~1e-6 relative; gradients stay within TOL32 of their scale.
    K, m, B, T = 30, 130, 6, 20
    params, X, Y, h0 = net_problem(cell, K, m, 1, T, seed=9, sig=0.5 / np.sqrt(m), streams=B)
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    drop = dict(dropout=0.2, seed=3, update=1)
    loss, grads, h = cx.loss_and_grads(as32(params), X, Y, h0.astype(np.float32), threads=2, **drop)
    rloss, rgrads, rh = ref.loss_and_grads(cell, params, X, Y, h0, **drop)
    assert grads["V"].dtype == np.float32 and h.dtype == np.float32
    assert abs(loss - rloss) <= 1e-5 * abs(rloss)
    assert max_scaled_err(h, rh) <= TOL32
    for k in params:
        assert max_scaled_err(grads[k], rgrads[k]) <= TOL32, k


def test_float32_classic_streams_close_to_the_reference():
    p64, _, _, _ = problem(60, 45, 1, seed=9, sig=0.1)
    rng = np.random.default_rng(9)
    X, Y = rng.integers(0, 60, (6, 25)), rng.integers(0, 60, (6, 25))
    h0 = np.tanh(rng.standard_normal((6, 45)))
    loss, grads, h = cx.loss_and_grads(as32(p64), X, Y, h0.astype(np.float32))
    rloss, rgrads, rh = cx.loss_and_grads(p64, X, Y, h0)
    assert grads["W"].dtype == np.float32 and h.shape == (6, 45)
    assert abs(loss - rloss) <= 1e-5 * abs(rloss)
    assert max_scaled_err(h, rh) <= TOL32
    for k in PARAM_NAMES:
        assert max_scaled_err(grads[k], rgrads[k]) <= TOL32, k


def test_float32_training_tracks_float64():
    K, m, T = 30, 32, 25
    data = (np.arange(3000) * 7 % 23 + np.arange(3000) // 11 % 7).astype(np.uint8)  # a learnable pattern
    p64 = cx.init_params(K, m, seed=2)
    p32 = as32(p64)
    l64, *_ = cx.train_steps(p64, zeros_like_params(p64), data, n_steps=300, seq_length=T)
    l32, h32, *_ = cx.train_steps(p32, zeros_like_params(p32), data, n_steps=300, seq_length=T)
    assert l32.dtype == np.float32 and h32.dtype == np.float32
    # The first loss is a plain forward pass: float32 rounding only.
    assert abs(l32[0] - l64[0]) <= TOL32 * l64[0]
    # Afterwards AdaGrad divides small gradients by sqrt(M + 1e-8) ~ 1e-4, so
    # float32 rounding of a near-zero gradient entry (~1e-7 absolute) moves its
    # parameter by up to ~1e-3 differently: the two runs follow different but
    # equally good trajectories. Their learning curves must still agree.
    end64, end32 = l64[-50:].mean(), l32[-50:].mean()
    assert end64 < 0.2 * l64[0] and end32 < 0.2 * l64[0]
    assert abs(end32 - end64) <= 0.1 * end64


@pytest.mark.parametrize("batch", [None, 3])
def test_float32_network_training_runs_close_to_float64(batch):
    params = net_init("lstm", 8, 6, 2, sig=0.1, seed=4)
    p32 = as32(params)
    data = np.random.default_rng(5).integers(0, 8, 900)
    kw = dict(n_steps=20, seq_length=12, optimizer="adam", eta=0.01, batch_size=batch, dropout=0.1, seed=2)
    out64 = cx.train_steps(params, init_opt_state(params, "adam"), data, **kw)
    out32 = cx.train_steps(p32, init_opt_state(p32, "adam"), data, **kw)
    assert out32[0].dtype == np.float32 and out32[1].dtype == np.float32
    assert all(v.dtype == np.float32 for v in p32.values())
    # Adam normalises the step: a gradient entry near zero whose float32
    # rounding flips m / sqrt(v) can move by up to eta per step. Measured here
    # 6e-8 (losses, relative) and 6e-7 (parameters, of their scale); over 20
    # other seeds, both batch modes and every CHARRNN_ISA variant at most 7.5e-8
    # and 2.7e-5. The bounds sit 13x and 4x above those worst cases.
    assert np.max(np.abs(out32[0] - out64[0]) / out64[0]) < 1e-6
    for k in params:
        assert max_scaled_err(p32[k], params[k]) <= 1e-4, k
    np.testing.assert_array_equal(np.ravel(out32[2]), np.ravel(out64[2]))  # the same walk


@pytest.mark.parametrize("cell", CELLS)
def test_float32_evaluate_loss_tracks_float64(cell):
    params, _, _, h0 = net_problem(cell, 12, 10, 2, 1, seed=6, sig=0.3)
    data = np.random.default_rng(7).integers(0, 12, 2001)
    for B in (1, 4):
        l64, h64 = cx.evaluate_loss(params, data, h0, batch_size=B)
        l32, h32 = cx.evaluate_loss(as32(params), data, h0.astype(np.float32), batch_size=B)
        # The loss is summed in double (cpp/evaluate.hpp); each of the 2000
        # terms carries ~1e-7 relative float32 error, mostly independent.
        assert abs(l32 - l64) <= 1e-5 * l64, B
        assert h32.dtype == np.float32 and max_scaled_err(h32, h64) <= TOL32, B


def test_float32_sampling_runs_and_matches_float64_mostly():
    p64 = cx.init_params(20, 16, sig=0.5, seed=3)
    p32 = as32(p64)
    s64, _ = cx.sample(p64, None, [1], 500, 1.0, 7)
    s32, h32 = cx.sample(p32, None, [1], 500, 1.0, 7)
    assert h32.dtype == np.float32
    # Same RNG stream and nearly the same probabilities: the texts agree until
    # a draw lands within ~1e-7 of a CDF boundary, which is rare.
    assert np.mean(s64[:100] == s32[:100]) > 0.9
    # Greedy decoding of a network agrees exactly unless two logits tie to 1e-7.
    net = net_init("gru", 9, 8, 2, sig=0.6, seed=4)
    g64, _ = cx.sample(net, None, [2, 3], 60, greedy=True)
    g32, _ = cx.sample(as32(net), None, [2, 3], 60, greedy=True)
    assert np.array_equal(g64, g32)
