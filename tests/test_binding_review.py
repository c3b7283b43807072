"""Regression tests for the binding-layer review: mixed index dtypes, optimiser
state validation, tiny temperatures, wrap bookkeeping on divergence, aliasing
between params and state, bools as counts."""
from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import _core
from charrnn_ext.nets import init_opt_state, net_init
from charrnn_ext.params import copy_params, zeros_like_params

BIG_K = 200


def _mixed_chunk():
    rng = np.random.default_rng(3)
    X = rng.integers(0, 128, 30).astype(np.int8)
    Y = rng.integers(128, BIG_K, 30).astype(np.uint8)  # all >= 128: negative as int8
    return X, Y


# ---------------------------------------------------------------- 1. mixed index dtypes

def test_mixed_int_dtypes_loss_and_grads_match_int64():
    params = cx.init_params(BIG_K, 5, seed=0)
    X, Y = _mixed_chunk()
    loss, grads, h = _core.loss_and_grads(params, X, Y)
    loss64, grads64, h64 = _core.loss_and_grads(params, X.astype(np.int64), Y.astype(np.int64))
    assert loss == loss64
    assert all(np.array_equal(grads[k], grads64[k]) for k in grads64)
    assert np.array_equal(h, h64)
    # and the other way round: uint8 X, int8 Y
    X2, Y2 = Y, X
    assert _core.loss_and_grads(params, X2, Y2)[0] == _core.loss_and_grads(params, X2.astype(np.int64),
                                                                            Y2.astype(np.int64))[0]


def test_mixed_int_dtypes_train_step_matches_int64():
    X, Y = _mixed_chunk()
    p1 = cx.init_params(BIG_K, 5, seed=0)
    p2 = copy_params(p1)
    s1, s2 = zeros_like_params(p1), zeros_like_params(p2)
    l1, h1 = _core.train_step(p1, s1, X, Y)
    l2, h2 = _core.train_step(p2, s2, X.astype(np.int64), Y.astype(np.int64))
    assert l1 == l2 and np.array_equal(h1, h2)
    assert all(np.array_equal(p1[k], p2[k]) and np.array_equal(s1[k], s2[k]) for k in p1)


def test_mixed_int_dtypes_net_loss_and_grads_match_int64():
    params = net_init("lstm", BIG_K, 4, 2, seed=1)
    X, Y = _mixed_chunk()
    loss, grads, h = _core.net_loss_and_grads("lstm", params, X, Y)
    loss64, grads64, h64 = _core.net_loss_and_grads("lstm", params, X.astype(np.int64), Y.astype(np.int64))
    assert loss == loss64 and np.array_equal(h, h64)
    assert all(np.array_equal(grads[k], grads64[k]) for k in grads64)


def test_mixed_int_dtypes_batched_match_int64():
    params = cx.init_params(BIG_K, 5, seed=0)
    X, Y = _mixed_chunk()
    X, Y = X.reshape(3, 10), Y.reshape(3, 10)
    loss, grads, h = _core.loss_and_grads_batched(params, X, Y)
    loss64, grads64, h64 = _core.loss_and_grads_batched(params, X.astype(np.int64), Y.astype(np.int64))
    assert loss == loss64 and np.array_equal(h, h64)
    assert all(np.array_equal(grads[k], grads64[k]) for k in grads64)


# ---------------------------------------------------------------- 2. optimiser state

@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_adagrad_state_must_be_finite_and_non_negative(bad):
    params = cx.init_params(6, 4, seed=0)
    state = zeros_like_params(params)
    state["W"][1, 2] = bad
    before = copy_params(params)
    with pytest.raises(ValueError, match=r"state\['W'\]"):
        _core.train_step(params, state, [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"state\['W'\]"):
        _core.train_steps(params, state, np.arange(6).repeat(3), n_steps=2, seq_length=3)
    with pytest.raises(ValueError, match=r"state\['W'\]"):
        _core.train_steps_batched(params, state, np.arange(6).repeat(4), n_steps=2, batch_size=2, seq_length=3)
    assert all(np.array_equal(params[k], before[k]) for k in params)


@pytest.mark.parametrize("opt,slot,bad,ok", [
    ("adagrad", "M", -1.0, False), ("adagrad", "M", np.nan, False),
    ("rmsprop", "M", -0.5, False), ("rmsprop", "M", np.inf, False),
    ("adam", "v", -1.0, False), ("adam", "v", np.nan, False),
    ("adam", "m", np.nan, False), ("adam", "m", -1.0, True),  # adam's first moment may be negative
])
def test_net_opt_state_checked(opt, slot, bad, ok):
    params = net_init("gru", 5, 3, 1, seed=0)
    st = init_opt_state(params, opt)
    st[f"{slot}:l0.Wh"][0, 0] = bad
    data = np.arange(5).repeat(4)
    if ok:
        losses, *_ = _core.net_train_steps("gru", params, st, data, n_steps=2, seq_length=3, optimizer=opt)
        assert np.isfinite(losses).all() and all(np.isfinite(v).all() for v in params.values())
    else:
        with pytest.raises(ValueError, match=rf"opt_state\['{slot}:l0.Wh'\]"):
            _core.net_train_steps("gru", params, st, data, n_steps=2, seq_length=3, optimizer=opt)


# ---------------------------------------------------------------- 3. tiny temperatures

@pytest.mark.parametrize("dtype,temp,name", [(np.float32, 1e-45, "float32"), (np.float64, 5e-324, "float64"),
                                             (np.float32, 1e-39, "float32")])
def test_tiny_temperature_rejected(dtype, temp, name):
    params = cx.init_params(6, 4, seed=0, dtype=dtype)
    with pytest.raises(ValueError, match=f"temperature.*too small for {name}"):
        _core.sample(params, None, [0], 5, temp)
    net = {k: v.astype(dtype) for k, v in net_init("rnn", 6, 4, 1, seed=0).items()}
    with pytest.raises(ValueError, match=f"temperature.*too small for {name}"):
        _core.net_sample("rnn", net, None, [0], 5, temperature=temp)


def test_small_but_representable_temperature_still_works():
    params = cx.init_params(6, 4, seed=0, dtype=np.float32)
    out, _ = _core.sample(params, None, [0], 5, 1e-30)
    assert out.shape == (5,)


# ---------------------------------------------------------------- 4. wrap on a diverged step

def _diverging_params():
    params = cx.init_params(4, 3, seed=1)
    params["b"][:] = 10.0
    params["V"][0] = 1.7e308
    return params


def test_diverged_wrap_step_leaves_walk_unchanged():
    params = _diverging_params()
    data = np.arange(4).repeat(5)  # N = 20
    h0 = np.full(3, 0.25)
    losses, h, pos, wraps, diverged = _core.train_steps(params, zeros_like_params(params), data, h0,
                                                        n_steps=3, seq_length=3, pos=18)
    assert diverged and losses.shape == (0,)
    assert pos == 18 and wraps == 0 and np.array_equal(h, h0)


def test_diverged_wrap_step_leaves_batched_walk_unchanged():
    params = _diverging_params()
    data = np.arange(4).repeat(10)  # 2 segments of 20
    h0 = np.full((2, 3), 0.25)
    losses, h, pos, wraps, diverged = _core.train_steps_batched(
        params, zeros_like_params(params), data, h0, n_steps=3, batch_size=2, seq_length=3, positions=[18, 2])
    assert diverged and losses.shape == (0,)
    assert list(pos) == [18, 2] and list(wraps) == [0, 0] and np.array_equal(h, h0)


def test_diverged_wrap_step_leaves_net_walk_unchanged():
    params = net_init("rnn", 4, 3, 1, seed=1)
    params["l0.b"][:] = 10.0
    params["V"][0] = 1.7e308
    data = np.arange(4).repeat(5)
    h0 = np.full((1, 3), 0.25)
    losses, h, pos, wraps, diverged, t = _core.net_train_steps(
        "rnn", params, init_opt_state(params), data, h0, n_steps=3, seq_length=3, pos=18)
    assert diverged and losses.shape == (0,)
    assert pos == 18 and wraps == 0 and t == 0 and np.array_equal(h, h0)


# ---------------------------------------------------------------- 6. aliasing

def test_state_aliasing_params_rejected():
    params = cx.init_params(6, 4, seed=0)
    state = zeros_like_params(params)
    state["b"] = params["b"]
    with pytest.raises(ValueError, match="overlap"):
        _core.train_step(params, state, [0, 1], [1, 2])
    buf = np.zeros(4 * 6 + 4, dtype=np.float64)
    params["U"] = buf[:24].reshape(4, 6)
    state = zeros_like_params(params)
    state["b"] = buf[20:24]  # overlaps the tail of params['U']
    with pytest.raises(ValueError, match="overlap"):
        _core.train_steps(params, state, np.arange(6).repeat(3), n_steps=1, seq_length=3)


def test_params_aliasing_each_other_rejected():
    params = cx.init_params(6, 6, seed=0)
    params["V"] = params["U"]  # (6, 6) both
    with pytest.raises(ValueError, match="overlap"):
        _core.train_step(params, zeros_like_params(params), [0, 1], [1, 2])


def test_net_state_aliasing_params_rejected():
    params = net_init("rnn", 5, 3, 1, seed=0)
    st = init_opt_state(params, "adam")
    st["v:c"] = params["c"]
    with pytest.raises(ValueError, match="overlap"):
        _core.net_train_steps("rnn", params, st, np.arange(5).repeat(4), n_steps=1, seq_length=3,
                              optimizer="adam")


def test_read_only_calls_accept_shared_arrays():
    # Aliasing only matters where something is written.
    params = cx.init_params(6, 6, seed=0)
    params["V"] = params["U"]
    loss, _, _ = _core.loss_and_grads(params, [0, 1], [1, 2])
    assert np.isfinite(loss)


# ---------------------------------------------------------------- 8. bools

@pytest.mark.parametrize("kw", ["n_steps", "seq_length", "pos"])
def test_bool_counts_rejected(kw):
    params = cx.init_params(6, 4, seed=0)
    args = dict(n_steps=1, seq_length=3, pos=0)
    args[kw] = True
    with pytest.raises(TypeError, match=kw):
        _core.train_steps(params, zeros_like_params(params), np.arange(6).repeat(3), **args)


def test_bool_n_rejected_in_sample():
    params = cx.init_params(6, 4, seed=0)
    with pytest.raises(TypeError, match="n must be an integer"):
        _core.sample(params, None, [0], True)


def test_module_doc_mentions_general_networks():
    doc = _core.__doc__.lower()
    assert "lstm" in doc and "gru" in doc and "adam" in doc


# ---------------------------------------------------------------- 6. concurrent mutation

def test_index_arrays_rewritten_during_a_call_do_not_crash():
    # Another thread writes out-of-range indices while the GIL is released:
    # the results are unspecified, but every index is re-checked as it is used.
    import threading
    params = cx.init_params(50, 8, seed=0)
    state = zeros_like_params(params)
    data = np.random.default_rng(0).integers(0, 50, 20000).astype(np.int64)
    stop = threading.Event()

    def vandal():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            idx = rng.integers(0, data.size, 64)
            data[idx] = rng.choice([-(2**40), 10**9, 50, -1], 64)

    t = threading.Thread(target=vandal)
    t.start()
    try:
        for _ in range(20):
            for call in (lambda: _core.train_steps(params, state, data, n_steps=200, seq_length=25),
                         lambda: _core.evaluate_loss(params, data[:5000])):
                try:
                    call()
                except (IndexError, ValueError):
                    pass  # caught up front, or the walk diverged on garbage: both fine
    finally:
        stop.set()
        t.join()
