"""Bad input at the binding layer: a clear Python exception, never a crash."""
from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext.params import zeros_like_params

K, M = 6, 4


@pytest.fixture
def params():
    return cx.init_params(K, M, seed=0)


@pytest.fixture
def state(params):
    return zeros_like_params(params)


X = np.array([0, 1, 2])
Y = np.array([1, 2, 3])


def with_(params, **changes):
    p = dict(params)
    p.update(changes)
    return p


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("name,bad,match", [
    ("W", np.zeros((M, M + 1)), r"params\['W'\] has shape \(4, 5\); expected \(m, m\) = \(4, 4\)"),
    ("U", np.zeros((M, K, 1)), r"params\['U'\] must be 2-D"),
    ("V", np.zeros((M, K)), r"params\['V'\] has shape \(4, 6\); expected \(K, m\)"),
    ("b", np.zeros((M, 1)), r"params\['b'\] has shape \(4, 1\); expected \(m,\)"),
    ("c", np.zeros(K + 1), r"params\['c'\] has shape \(7,\); expected \(K,\)"),
])
def test_wrong_shapes(params, name, bad, match):
    with pytest.raises(ValueError, match=match):
        cx.loss_and_grads(with_(params, **{name: bad}), X, Y)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, object])
def test_wrong_dtypes(params, dtype):
    bad = params["W"].astype(dtype)
    with pytest.raises(TypeError, match=r"params\['W'\] has dtype .*expected float64"):
        cx.loss_and_grads(with_(params, W=bad), X, Y)


def test_u_dtype_decides_and_must_be_float(params):
    with pytest.raises(TypeError, match=r"params\['U'\] has dtype int32; expected float64 or float32"):
        cx.loss_and_grads(with_(params, U=params["U"].astype(np.int32)), X, Y)


def test_mixed_float_dtypes(params):
    with pytest.raises(TypeError, match=r"params\['c'\] has dtype float32; expected float64"):
        cx.loss_and_grads(with_(params, c=params["c"].astype(np.float32)), X, Y)


def test_big_endian_is_refused(params):
    with pytest.raises(TypeError, match=r"params\['U'\] has dtype >f8"):
        cx.loss_and_grads(with_(params, U=params["U"].astype(">f8")), X, Y)


def test_non_contiguous(params):
    wide = np.zeros((M, 2 * M))
    with pytest.raises(ValueError, match=r"params\['W'\] is not C-contiguous"):
        cx.loss_and_grads(with_(params, W=wide[:, ::2]), X, Y)
    with pytest.raises(ValueError, match=r"params\['U'\] is not C-contiguous"):
        cx.loss_and_grads(with_(params, U=np.asfortranarray(params["U"])), X, Y)


def test_not_a_dict_missing_key_not_an_array(params):
    with pytest.raises(TypeError, match="params must be a dict of NumPy arrays"):
        cx.loss_and_grads([params[k] for k in "UWVbc"], X, Y)
    with pytest.raises(TypeError, match="params must be a dict of NumPy arrays"):
        cx.loss_and_grads("UWVbc", X, Y)
    missing = {k: v for k, v in params.items() if k != "b"}
    with pytest.raises(ValueError, match="params has no 'b' entry"):
        cx.loss_and_grads(missing, X, Y)
    with pytest.raises(TypeError, match=r"params\['W'\] must be a NumPy array, got list"):
        cx.loss_and_grads(with_(params, W=params["W"].tolist()), X, Y)


def test_k_zero_and_m_zero():
    empty_k = {"U": np.zeros((M, 0)), "W": np.zeros((M, M)), "V": np.zeros((0, M)), "b": np.zeros(M), "c": np.zeros(0)}
    with pytest.raises(ValueError, match="vocabulary size K must be at least 1"):
        cx.loss_and_grads(empty_k, [], [])
    empty_m = {"U": np.zeros((0, K)), "W": np.zeros((0, 0)), "V": np.zeros((K, 0)), "b": np.zeros(0), "c": np.zeros(K)}
    with pytest.raises(ValueError, match="hidden size m must be at least 1"):
        cx.loss_and_grads(empty_m, X, Y)
    with pytest.raises(ValueError, match="K and m must be at least 1"):
        cx.init_params(0, 5)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_parameters(params, state, value):
    params["V"][2, 1] = value
    with pytest.raises(ValueError, match=r"params\['V'\] contains NaN or infinity"):
        cx.loss_and_grads(params, X, Y)
    with pytest.raises(ValueError, match=r"params\['V'\] contains NaN or infinity"):
        cx.train_step(params, state, X, Y)
    with pytest.raises(ValueError, match=r"params\['V'\] contains NaN or infinity"):
        cx.sample(params, None, [0], 5)


def test_read_only_params_for_training(params, state):
    params["W"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W'\] is read-only"):
        cx.train_step(params, state, X, Y)
    cx.loss_and_grads(params, X, Y)  # reading is fine


def test_state_must_match_params(params, state):
    with pytest.raises(ValueError, match=r"state\['W'\] has shape \(3, 3\); expected \(m, m\) = \(4, 4\)"):
        cx.train_step(params, with_(state, W=np.zeros((3, 3))), X, Y)
    with pytest.raises(TypeError, match=r"state\['c'\] has dtype float32; expected float64"):
        cx.train_step(params, with_(state, c=state["c"].astype(np.float32)), X, Y)
    with pytest.raises(ValueError, match="state has no 'U' entry"):
        cx.train_step(params, {k: v for k, v in state.items() if k != "U"}, X, Y)


# ---------------------------------------------------------------- indices

@pytest.mark.parametrize("bad,where", [([0, 6, 1], r"X\[1\] = 6"), ([0, 1, -1], r"X\[2\] = -1")])
def test_index_outside_vocabulary(params, bad, where):
    with pytest.raises(IndexError, match=where + r" is outside the vocabulary range \[0, 6\)"):
        cx.loss_and_grads(params, np.array(bad), Y)


def test_target_outside_vocabulary(params):
    with pytest.raises(IndexError, match=r"Y\[0\] = 255 is outside"):
        cx.loss_and_grads(params, X, np.array([255, 1, 2], dtype=np.uint8))


def test_length_mismatch_and_empty(params):
    with pytest.raises(ValueError, match="X and Y must have the same length, got 3 and 2"):
        cx.loss_and_grads(params, X, Y[:2])
    with pytest.raises(ValueError, match=r"T >= 1"):
        cx.loss_and_grads(params, X[:0], Y[:0])


@pytest.mark.parametrize("bad,exc,match", [
    (np.array([0.0, 1.0, 2.0]), TypeError, "X must hold integer character indices, got dtype float64"),
    (np.array([True, False, True]), TypeError, "X must hold integer character indices, got dtype bool"),
    ("abc", TypeError, "X must be an array of integer character indices, got str"),
    (np.zeros((3, 1), dtype=int), ValueError, r"X must be 1-D, got shape \(3, 1\)"),
    (np.arange(6)[::2], ValueError, "X is not contiguous"),
    (np.eye(3, dtype=int), ValueError, "X must be 1-D"),
])
def test_bad_index_arrays(params, bad, exc, match):
    with pytest.raises(exc, match=match):
        cx.loss_and_grads(params, bad, Y)


def test_h0_checks(params):
    with pytest.raises(ValueError, match=r"h0 has shape \(5,\); expected \(m,\) = \(4,\)"):
        cx.loss_and_grads(params, X, Y, np.zeros(5))
    with pytest.raises(TypeError, match="h0 has dtype float32; expected float64"):
        cx.loss_and_grads(params, X, Y, np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="h0 contains NaN"):
        cx.loss_and_grads(params, X, Y, np.array([0, np.nan, 0, 0.0]))
    with pytest.raises(TypeError, match="h0 must be a NumPy array"):
        cx.loss_and_grads(params, X, Y, [0.0] * 4)


# ---------------------------------------------------------------- hyper-parameters

@pytest.mark.parametrize("kw,match", [
    ({"eta": 0.0}, "eta must be a positive finite number, got 0"),
    ({"eta": -0.1}, "eta must be a positive finite number"),
    ({"eta": float("nan")}, "eta must be a positive finite number"),
    ({"clip": 0.0}, "clip must be a positive finite number"),
    ({"clip": float("inf")}, "clip must be a positive finite number"),
    ({"eps": -1.0}, "eps must be a positive finite number"),
])
def test_bad_optimiser_settings(params, state, kw, match):
    with pytest.raises(ValueError, match=match):
        cx.train_step(params, state, X, Y, **kw)
    with pytest.raises(ValueError, match=match):
        cx.train_steps(params, state, np.arange(K), n_steps=1, seq_length=2, **kw)


def test_train_steps_arguments(params, state):
    data = np.arange(K)
    with pytest.raises(ValueError, match=r"data has 6 characters; a chunk needs seq_length \+ 1 = 7"):
        cx.train_steps(params, state, data, n_steps=1, seq_length=6)
    with pytest.raises(ValueError, match="seq_length must be at least 1"):
        cx.train_steps(params, state, data, n_steps=1, seq_length=0)
    with pytest.raises(ValueError, match="n_steps must be >= 0"):
        cx.train_steps(params, state, data, n_steps=-1)
    with pytest.raises(ValueError, match="pos = 7 is past the end of data"):
        cx.train_steps(params, state, data, n_steps=1, seq_length=2, pos=7)
    with pytest.raises(TypeError, match="n_steps must be an integer"):
        cx.train_steps(params, state, data, n_steps=1.5, seq_length=2)
    with pytest.raises(IndexError, match=r"data\[3\] = 9 is outside"):
        cx.train_steps(params, state, np.array([0, 1, 2, 9, 1, 1]), n_steps=2, seq_length=2)


def test_sample_arguments(params):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        cx.sample(params, None, [0], 5, 0.0)
    with pytest.raises(ValueError, match="prime is empty"):
        cx.sample(params, None, [], 5)
    with pytest.raises(IndexError, match=r"prime\[0\] = 6 is outside"):
        cx.sample(params, None, [6], 5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        cx.sample(params, None, [0], -1)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        cx.sample(params, None, [0], 5, 1.0, -3)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        cx.sample(params, None, [0], 5, 1.0, 2**64)
    with pytest.raises(TypeError, match="seed must be an integer"):
        cx.sample(params, None, [0], 5, 1.0, "7")
    cx.sample(params, None, [0], 5, 1.0, 2**64 - 1)  # the largest seed is fine


def test_evaluate_loss_arguments(params):
    with pytest.raises(ValueError, match="the loss needs at least 2"):
        cx.evaluate_loss(params, [1])
    with pytest.raises(IndexError, match=r"data\[1\] = 6"):
        cx.evaluate_loss(params, [1, 6])


def test_failed_validation_leaves_arrays_untouched(params, state):
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(IndexError):
        cx.train_step(params, state, X, np.array([1, 2, 99]))
    assert all(np.array_equal(before[k], params[k]) for k in params)
    assert not any(state[k].any() for k in state)
