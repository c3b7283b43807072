"""The classic vanilla RNN (U, W, V, b, c) through the one C++ engine against
the classic NumPy reference (charrnn_ext.reference), float64."""

from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import _core, reference
from charrnn_ext.layout import (
    CLASSIC_NAMES,
    PARAM_NAMES,
    copy_params,
    from_classic,
    init_opt_state,
    net_init,
    to_classic,
    zeros_like_params,
)
from helpers import max_rel_err, max_scaled_err, perturbed, problem

# (K, m, T): the degenerate corners and the standard experiment.
SHAPES = [(2, 1, 1), (2, 1, 7), (3, 4, 1), (7, 5, 13), (30, 17, 25), (80, 100, 25), (65, 33, 40)]

# Agreement required between C++ float64 and NumPy float64. Both evaluate the
# same expressions in double precision; only the order of summation differs,
# so differences are a few ulps amplified by cancellation in the gradient sums
# (measured: ~1e-13 at most).
TOL64 = 1e-10


@pytest.mark.parametrize("K,m,T", SHAPES)
@pytest.mark.parametrize("sig", [0.01, 0.4])
def test_loss_grads_and_h_match_reference(K, m, T, sig):
    # W's spectral radius is about sig*sqrt(m); keep it below 1 so that the
    # recurrence contracts. (Above 1 the tanh network is chaotic: any two
    # correct implementations drift apart at a rate set by the dynamics.)
    sig_w = sig / np.sqrt(m)
    params, X, Y, h0 = problem(K, m, T, seed=K * 1000 + m + T, sig=sig)
    params["W"] *= sig_w / sig
    params = perturbed(params, sig_w if sig > 0.1 else sig, seed=T)  # non-zero b and c too
    loss, grads, h = cx.loss_and_grads(params, X, Y, h0)
    loss_r, grads_r, h_r = reference.loss_and_grads(params, X, Y, h0)
    assert isinstance(loss, float)
    assert max_rel_err(loss, loss_r) <= TOL64
    assert h.shape == (m,) and h.dtype == np.float64
    assert max_rel_err(h, h_r) <= TOL64
    assert set(grads) == set(PARAM_NAMES)
    for name in PARAM_NAMES:
        assert grads[name].shape == params[name].shape
        assert grads[name].dtype == np.float64
        assert max_rel_err(grads[name], grads_r[name]) <= TOL64, name


def test_initial_loss_is_T_ln_K():
    # sig = 0.01 makes every logit ~1e-3, so p_t is almost uniform and each
    # character costs ln K (25 ln 80 = 109.55; the logits move it by < 0.05).
    params, X, Y, _ = problem(80, 100, 25, seed=3)
    loss, _, _ = cx.loss_and_grads(params, X, Y)
    assert abs(loss - 25 * np.log(80)) < 0.05


def test_h0_none_means_zeros():
    params, X, Y, h0 = problem(11, 6, 9, seed=4, sig=0.3)
    a = cx.loss_and_grads(params, X, Y)
    b = cx.loss_and_grads(params, X, Y, np.zeros(6))
    c = cx.loss_and_grads(params, X, Y, h0)
    assert a[0] == b[0]
    assert np.array_equal(a[2], b[2])
    for name in PARAM_NAMES:
        assert np.array_equal(a[1][name], b[1][name])
    # ... and h0 is really used when given (so the comparison above can fail).
    assert abs(c[0] - a[0]) > 1e-6


def test_inputs_are_not_modified_and_any_integer_dtype_works():
    params, X, Y, h0 = problem(20, 8, 12, seed=5)
    before = copy_params(params)
    h_before = h0.copy()
    X_before, Y_before = X.copy(), Y.copy()
    results = [
        cx.loss_and_grads(params, X.astype(dt), Y.astype(dt), h0)
        for dt in (np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64)
    ]
    results.append(cx.loss_and_grads(params, list(map(int, X)), list(map(int, Y)), h0))
    for r in results[1:]:
        assert r[0] == results[0][0]
        assert np.array_equal(r[2], results[0][2])
        for name in PARAM_NAMES:
            assert np.array_equal(r[1][name], results[0][1][name])
    for name in PARAM_NAMES:
        assert np.array_equal(params[name], before[name])
    assert np.array_equal(h0, h_before)
    assert np.array_equal(X, X_before) and np.array_equal(Y, Y_before)
    loss_r, _, _ = reference.loss_and_grads(params, X, Y, h0)
    assert max_rel_err(results[0][0], loss_r) <= TOL64


def test_mixed_index_dtypes_for_X_and_Y():
    params, X, Y, h0 = problem(20, 8, 12, seed=6)
    same = cx.loss_and_grads(params, X, Y, h0)
    mixed = cx.loss_and_grads(params, X.astype(np.uint8), Y.astype(np.int64), h0)
    assert same[0] == mixed[0]
    for name in PARAM_NAMES:
        assert np.array_equal(same[1][name], mixed[1][name])


def test_float_indices_are_refused():
    params, X, Y, h0 = problem(20, 8, 12, seed=6)
    with pytest.raises(TypeError):
        cx.loss_and_grads(params, X.astype(np.float64), Y, h0)


def test_classic_names_and_network_names_give_the_same_results():
    # The one-layer rnn under its network names is the classic RNN: U = l0.Wx,
    # W = l0.Wh, b = l0.b. Same engine, same order of work: bit-identical.
    params, X, Y, h0 = problem(9, 7, 15, seed=18, sig=0.3)
    net = from_classic(params)
    assert set(net) == {"l0.Wx", "l0.Wh", "l0.b", "V", "c"}
    assert {k: v for k, v in CLASSIC_NAMES.items() if k != v} == {"U": "l0.Wx", "W": "l0.Wh", "b": "l0.b"}
    loss_c, g_c, h_c = cx.loss_and_grads(params, X, Y, h0)
    loss_n, g_n, h_n = cx.loss_and_grads(net, X, Y, h0.reshape(1, -1))
    assert set(g_c) == set(PARAM_NAMES) and set(g_n) == set(net)  # answers in the names it was given
    assert h_c.shape == (7,) and h_n.shape == (1, 7)
    assert loss_c == loss_n
    assert np.array_equal(h_c, h_n[0])
    for k, v in to_classic(g_n).items():
        assert np.array_equal(g_c[k], v), k
    # net_init('rnn', ..., 1) draws exactly what init_params draws.
    a = cx.init_params(9, 7, sig=0.1, seed=3)
    b = to_classic(net_init("rnn", 9, 7, 1, sig=0.1, seed=3))
    assert all(np.array_equal(a[k], b[k]) for k in PARAM_NAMES)


def test_cell_argument_of_the_core_only_checks():
    params, X, Y, h0 = problem(6, 4, 5, seed=19)
    kw = dict(dropout=0.0, seed=0, update=0, threads=1, precision="full")
    a = _core.loss_and_grads(params, X, Y, h0, cell=None, **kw)
    b = _core.loss_and_grads(params, X, Y, h0, cell="rnn", **kw)
    assert a[0] == b[0] and a[2].shape == b[2].shape == (1, 1, 4)
    with pytest.raises(ValueError, match="cell is 'lstm' but the parameters describe a 'rnn' network"):
        _core.loss_and_grads(params, X, Y, h0, cell="lstm", **kw)


def test_batched_classic_state_shapes():
    params, X, Y, h0 = problem(6, 4, 5, seed=20, sig=0.3)
    Xb, Yb = np.stack([X, X[::-1]]), np.stack([Y, Y[::-1]])
    h0b = np.stack([h0, -h0])
    loss, grads, h = cx.loss_and_grads(params, Xb, Yb, h0b)
    assert h.shape == (2, 4)
    l0, g0, h_0 = reference.loss_and_grads(params, X, Y, h0)
    l1, g1, h_1 = reference.loss_and_grads(params, X[::-1], Y[::-1], -h0)
    assert max_rel_err(loss, l0 + l1) <= TOL64
    assert max_rel_err(h, np.stack([h_0, h_1])) <= TOL64
    for k in PARAM_NAMES:
        assert max_rel_err(grads[k], g0[k] + g1[k]) <= TOL64, k


# Free-running trajectories: both implementations start from the same
# parameters and each takes 100 steps on its own. Their single-step results
# agree to ~1e-15, but AdaGrad divides every gradient by sqrt(M + eps), so an
# entry whose gradient hovers near zero turns ulp-sized differences into
# visible ones (measured after 100 steps at eta=0.1: losses 3.5e-9 apart,
# parameters 1.0e-7 of their scale). The bounds leave a 5-10x margin.
TRAJ_LOSS_TOL = 2e-8
TRAJ_PARAM_TOL = 1e-6


@pytest.mark.parametrize("eta,clip", [(0.1, 5.0), (0.05, 0.01)])
def test_train_step_matches_reference_over_100_steps(eta, clip):
    K, m, T = 30, 20, 25
    rng = np.random.default_rng(7)
    data = rng.integers(0, K, 100 * T + 1)
    params = cx.init_params(K, m, seed=8)
    state = zeros_like_params(params)
    params_r, state_r = copy_params(params), copy_params(state)
    h = h_r = np.zeros(m)
    for s in range(100):
        X, Y = data[s * T : (s + 1) * T], data[s * T + 1 : (s + 1) * T + 1]
        # One step from identical starting points agrees to rounding.
        p_one, s_one = copy_params(params_r), copy_params(state_r)
        loss_one, h_one = cx.train_step(p_one, s_one, X, Y, h_r, eta=eta, clip=clip)
        loss, h = cx.train_step(params, state, X, Y, h, eta=eta, clip=clip)
        loss_r, h_r = reference.train_step(params_r, state_r, X, Y, h_r, eta=eta, clip=clip)
        assert max_rel_err(loss_one, loss_r) <= TOL64, s
        assert max_scaled_err(h_one, h_r) <= TOL64, s
        for name in PARAM_NAMES:
            assert max_scaled_err(p_one[name], params_r[name]) <= TOL64, (s, name)
            assert max_rel_err(s_one[name], state_r[name]) <= TOL64, (s, name)
        # And the free-running trajectories stay together.
        assert max_rel_err(loss, loss_r) <= TRAJ_LOSS_TOL, s
    for name in PARAM_NAMES:
        assert max_scaled_err(params[name], params_r[name]) <= TRAJ_PARAM_TOL, name
        assert max_rel_err(state[name], state_r[name]) <= TRAJ_PARAM_TOL, name
    assert max_scaled_err(h, h_r) <= TRAJ_PARAM_TOL
    # It learned something (the reference trajectory is not a no-op either).
    assert np.abs(params["W"] - cx.init_params(K, m, seed=8)["W"]).max() > 1e-3


def test_classic_memory_and_init_opt_state_are_the_same_adagrad():
    # A classic AdaGrad memory {U, W, V, b, c} and init_opt_state's
    # {M:U, ..., t} drive the same update; only the latter counts updates.
    params, X, Y, h0 = problem(12, 9, 10, seed=21, sig=0.2)
    p1, p2 = copy_params(params), copy_params(params)
    s1 = zeros_like_params(params)
    s2 = init_opt_state(params, "adagrad")
    assert set(s2) == {f"M:{k}" for k in PARAM_NAMES} | {"t"}
    for _ in range(3):
        l1, h1 = cx.train_step(p1, s1, X, Y, h0)
        l2, h2 = cx.train_step(p2, s2, X, Y, h0)
        assert l1 == l2 and np.array_equal(h1, h2)
    for k in PARAM_NAMES:
        assert np.array_equal(p1[k], p2[k]) and np.array_equal(s1[k], s2[f"M:{k}"]), k
    assert int(s2["t"]) == 3


def test_clipping_is_active_in_the_update():
    # Large weights give gradients far beyond 5; after one AdaGrad step from
    # zero memory every clipped entry moves by exactly eta * g / sqrt(g^2 + eps).
    params, X, Y, h0 = problem(10, 6, 25, seed=9, sig=3.0)
    _, grads, _ = cx.loss_and_grads(params, X, Y, h0)
    assert max(np.abs(g).max() for g in grads.values()) > 5
    before = copy_params(params)
    state = zeros_like_params(params)
    cx.train_step(params, state, X, Y, h0, eta=0.1, clip=5.0)
    for name in PARAM_NAMES:
        g = np.clip(grads[name], -5, 5)
        assert np.allclose(state[name], g * g, rtol=1e-12, atol=0)
        expected = before[name] - 0.1 * g / np.sqrt(g * g + 1e-8)
        assert max_rel_err(params[name], expected) <= 1e-12


def test_train_steps_walks_the_text_like_the_reference():
    K, m, T = 15, 10, 7
    data = np.random.default_rng(10).integers(0, K, 300).astype(np.uint8)
    params = cx.init_params(K, m, seed=11)
    state = zeros_like_params(params)
    params_r, state_r = copy_params(params), copy_params(state)
    # 100 steps over 300 characters: the walk wraps (and resets h) several times.
    losses, h, pos, wraps, diverged = cx.train_steps(params, state, data, n_steps=100, seq_length=T)
    losses_r, h_r, pos_r, wraps_r = reference.train_steps(params_r, state_r, data, n_steps=100, seq_length=T)
    assert not diverged
    # 42 chunks fit in 300 characters (42 * 7 + 1 <= 300), so 100 steps wrap twice.
    assert (pos, wraps) == (pos_r, wraps_r) == ((100 - 2 * 42) * T, 2)
    assert isinstance(pos, int) and isinstance(wraps, int)
    assert losses.shape == (100,) and h.shape == (m,)
    assert max_rel_err(losses, losses_r) <= TRAJ_LOSS_TOL
    assert max_scaled_err(h, h_r) <= TRAJ_PARAM_TOL
    for name in PARAM_NAMES:
        assert max_scaled_err(params[name], params_r[name]) <= TRAJ_PARAM_TOL, name
        assert max_rel_err(state[name], state_r[name]) <= TRAJ_PARAM_TOL, name


def test_train_steps_equals_repeated_train_step():
    K, m, T = 12, 9, 5
    data = np.random.default_rng(12).integers(0, K, 40)
    p1 = cx.init_params(K, m, seed=13)
    p2 = copy_params(p1)
    s1, s2 = zeros_like_params(p1), zeros_like_params(p2)
    losses, h, pos, wraps, _ = cx.train_steps(p1, s1, data, n_steps=20, seq_length=T)
    h2, pos2, wraps2, losses2 = np.zeros(m), 0, 0, []
    for _ in range(20):
        if pos2 + T + 1 > len(data):
            pos2, h2, wraps2 = 0, np.zeros(m), wraps2 + 1
        loss, h2 = cx.train_step(p2, s2, data[pos2 : pos2 + T], data[pos2 + 1 : pos2 + T + 1], h2)
        losses2.append(loss)
        pos2 += T
    assert np.array_equal(losses, losses2)
    assert np.array_equal(h, h2)
    # 7 chunks of 5 fit in 40 characters: steps 8 and 15 wrap, steps 15..20 end at 6 * 5.
    assert (pos, wraps) == (pos2, wraps2) == (30, 2)
    for name in PARAM_NAMES:
        assert np.array_equal(p1[name], p2[name])
        assert np.array_equal(s1[name], s2[name])


def test_train_steps_resumes_from_pos_and_h():
    # Two calls of 10 steps equal one call of 20 when pos and h are carried.
    K, m, T = 9, 6, 4
    data = np.random.default_rng(14).integers(0, K, 57)
    pa = cx.init_params(K, m, seed=15)
    pb = copy_params(pa)
    sa, sb = zeros_like_params(pa), zeros_like_params(pb)
    la, ha, posa, wa, _ = cx.train_steps(pa, sa, data, n_steps=20, seq_length=T)
    l1, h1, p1, w1, _ = cx.train_steps(pb, sb, data, n_steps=10, seq_length=T)
    l2, h2, p2, w2, _ = cx.train_steps(pb, sb, data, h1, n_steps=10, seq_length=T, pos=p1)
    assert np.array_equal(la, np.concatenate([l1, l2]))
    assert np.array_equal(ha, h2) and posa == p2 and wa == w1 + w2
    assert wa == 1  # 14 chunks of 4 fit in 57 characters: the 20 steps wrap once
    for name in PARAM_NAMES:
        assert np.array_equal(pa[name], pb[name])


def test_train_steps_zero_steps_is_a_no_op():
    params = cx.init_params(5, 3, seed=0)
    before = copy_params(params)
    state = zeros_like_params(params)
    h0 = np.full(3, 0.25)
    losses, h, pos, wraps, diverged = cx.train_steps(params, state, np.arange(5), h0, n_steps=0, seq_length=2, pos=1)
    assert losses.shape == (0,) and pos == 1 and wraps == 0 and not diverged
    assert np.array_equal(h, h0)
    assert all(np.array_equal(params[k], before[k]) for k in PARAM_NAMES)
    assert all(not state[k].any() for k in PARAM_NAMES)


def test_divergence_stops_without_applying_the_bad_step():
    # Saturated h and huge output weights overflow a logit to inf: inf - inf = nan.
    params = cx.init_params(4, 3, seed=1)
    params["b"][:] = 10.0
    params["V"][0] = 1.7e308
    state = zeros_like_params(params)
    before = copy_params(params)
    losses, h, pos, wraps, diverged = cx.train_steps(params, state, np.arange(4).repeat(5), n_steps=3, seq_length=3)
    assert diverged and losses.shape == (0,) and pos == 0 and wraps == 0
    assert h.shape == (3,)
    assert all(np.array_equal(params[k], before[k]) for k in PARAM_NAMES)
    assert all(not state[k].any() for k in PARAM_NAMES)
    with pytest.raises(ValueError, match="not finite"):
        cx.train_step(params, state, [0, 1], [1, 2])
    assert all(np.array_equal(params[k], before[k]) for k in PARAM_NAMES)
    assert all(not state[k].any() for k in PARAM_NAMES)


def test_evaluate_loss_matches_reference_forward():
    params, _, _, h0 = problem(13, 7, 1, seed=16, sig=0.3)
    data = np.random.default_rng(17).integers(0, 13, 200).astype(np.uint16)
    loss, h = cx.evaluate_loss(params, data, h0)
    loss_r, H, _ = reference.forward(params, data[:-1], data[1:], h0)
    assert h.shape == (7,)
    assert max_rel_err(loss, loss_r) <= TOL64
    assert max_rel_err(h, H[-1]) <= TOL64
    # evaluate_loss is the forward pass of loss_and_grads over the same text.
    loss_g, _, h_g = cx.loss_and_grads(params, data[:-1], data[1:], h0)
    assert max_rel_err(loss, loss_g) <= 1e-12 and max_rel_err(h, h_g) <= 1e-12


def test_zero_copy_in_place_update():
    params = cx.init_params(6, 4, seed=2)
    state = zeros_like_params(params)
    ids = {k: id(v) for k, v in params.items()}
    views = {k: v[...] for k, v in params.items()}  # views share memory
    before = copy_params(params)
    cx.train_step(params, state, [0, 1, 2], [1, 2, 3])
    assert {k: id(v) for k, v in params.items()} == ids
    for k in PARAM_NAMES:
        assert np.array_equal(views[k], params[k])
        assert not np.array_equal(before[k], params[k]), k
    assert all(state[k].any() for k in PARAM_NAMES)
