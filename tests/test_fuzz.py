"""Property-based fuzzing of every function the extension exposes.

Each generated call must either return a correct result or raise one of the
documented exceptions; anything else (another exception, a crash, a hang,
NaN from finite inputs) fails. The number of cases per function is set by
FUZZ_EXAMPLES (2,000 by default, as CI runs it).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import charrnn_ext as cx  # noqa: E402
from charrnn_ext import reference  # noqa: E402
from charrnn_ext.params import PARAM_NAMES  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EXPECTED = (ValueError, TypeError, IndexError)
OUTCOMES: dict[str, list[int]] = {}  # function -> [returned, refused], for the report below


def tally(name: str, returned: bool) -> None:
    OUTCOMES.setdefault(name, [0, 0])[0 if returned else 1] += 1


@st.composite
def dims(draw):
    return draw(st.integers(0, 7)), draw(st.integers(0, 6))  # K, m (0 is invalid)


@st.composite
def float_array(draw, shape, dtype):
    """An array of the given shape, sometimes spoiled: other dtype, shape,
    order or stride, a NaN/inf, or not an array at all."""
    spoil = draw(st.sampled_from(["none"] * 40 + ["dtype", "shape", "fortran", "strided", "nonfinite", "list", "none_obj"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.normal(0, draw(st.sampled_from([0.01, 0.3, 2.0])), shape).astype(dtype)
    if spoil == "dtype":
        return a.astype(draw(st.sampled_from(ODD_DTYPES)))
    if spoil == "shape":
        return np.zeros(tuple(max(0, s + draw(st.integers(-1, 2))) for s in shape), dtype=dtype)
    if spoil == "fortran" and a.ndim == 2:
        return np.asfortranarray(a) if min(a.shape) > 1 else a
    if spoil == "strided":
        wide = np.zeros(shape[:-1] + (2 * shape[-1],) if shape else (2,), dtype=dtype)
        return wide[..., ::2] if shape and shape[-1] > 1 else a
    if spoil == "nonfinite" and a.size:
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return a
    if spoil == "list":
        return a.tolist()
    if spoil == "none_obj":
        return None
    return a


@st.composite
def param_dict(draw, K, m, dtype):
    shapes = {"U": (m, K), "W": (m, m), "V": (K, m), "b": (m,), "c": (K,)}
    params = {k: draw(float_array(shapes[k], dtype)) for k in PARAM_NAMES}
    if draw(st.integers(0, 30)) == 0:
        del params[draw(st.sampled_from(PARAM_NAMES))]
    return params


@st.composite
def index_array(draw, K, length=None):
    n = draw(st.integers(0, 12)) if length is None else length
    dtype = draw(st.sampled_from(INDEX_DTYPES))
    hi = max(K, 1)
    values = draw(st.lists(st.integers(0, hi - 1), min_size=n, max_size=n))
    a = np.array(values, dtype=dtype)
    spoil = draw(st.sampled_from(["none"] * 40 + ["big", "negative", "float", "2d", "strided", "list", "str"]))
    if spoil == "big" and n:
        a = a.astype(np.int64)
        a[draw(st.integers(0, n - 1))] = draw(st.sampled_from([K, K + 1, 255, 2**31, 2**62]))
    elif spoil == "negative" and n:
        a = a.astype(np.int64)
        a[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1, -K, -(2**62)]))
    elif spoil == "float":
        a = a.astype(np.float64)
    elif spoil == "2d":
        a = a.reshape(1, -1)
    elif spoil == "strided" and n > 1:
        a = np.repeat(a, 2)[::2]
    elif spoil == "list":
        return values
    elif spoil == "str":
        return "abc"
    return a


def valid_params(p, K, m):
    if K < 1 or m < 1 or not isinstance(p, dict) or set(p) != set(PARAM_NAMES):
        return False
    shapes = {"U": (m, K), "W": (m, m), "V": (K, m), "b": (m,), "c": (K,)}
    dts = {getattr(v, "dtype", None) for v in p.values()}
    return all(isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.shape == shapes[k]
               and v.flags.c_contiguous and np.all(np.isfinite(v)) for k, v in p.items()) and len(dts) == 1 \
        and dts.pop() in (np.dtype(np.float64), np.dtype(np.float32))


def valid_indices(a, K, allow_empty=False):
    if isinstance(a, str):
        return False
    arr = np.asarray(a) if not isinstance(a, np.ndarray) else a
    if arr.size == 0 and not isinstance(a, np.ndarray):
        arr = np.asarray(a, dtype=np.int64)
    return (arr.dtype.kind in "iu" and arr.ndim == 1 and arr.flags.c_contiguous
            and (allow_empty or arr.size > 0) and (arr.size == 0 or (arr.min() >= 0 and arr.max() < K)))


def hidden(draw, m, dtype):
    return draw(st.one_of(st.none(), float_array((m,), dtype)))


def check_loss_against_reference(params, X, Y, h0, loss, grads, h):
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    h064 = None if h0 is None else np.asarray(h0, dtype=np.float64)
    loss_r, grads_r, h_r = reference.loss_and_grads(p64, np.asarray(X, dtype=np.int64), np.asarray(Y, dtype=np.int64), h064)
    tol = 1e-9 if params["U"].dtype == np.float64 else 1e-3
    assert np.isfinite(loss) and abs(loss - loss_r) <= tol * max(1.0, abs(loss_r))
    assert np.allclose(h, h_r, rtol=tol, atol=tol)
    for k in PARAM_NAMES:
        assert grads[k].shape == params[k].shape and grads[k].dtype == params[k].dtype
        assert np.allclose(grads[k], grads_r[k], rtol=tol, atol=tol * max(1.0, np.abs(grads_r[k]).max()))


@FUZZ
@given(st.data())
def test_fuzz_loss_and_grads(data):
    K, m = data.draw(dims())
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    params = data.draw(param_dict(K, m, dtype))
    T = data.draw(st.integers(0, 10))
    X = data.draw(index_array(K, T))
    Y = data.draw(index_array(K, data.draw(st.sampled_from([T, T, T, T + 1]))))
    h0 = hidden(data.draw, m, dtype)
    try:
        loss, grads, h = cx.loss_and_grads(params, X, Y, h0)
    except EXPECTED:
        tally('loss_and_grads', False)
        return
    tally('loss_and_grads', True)
    assert valid_params(params, K, m) and valid_indices(X, K) and valid_indices(Y, K)
    check_loss_against_reference(params, X, Y, h0, loss, grads, h)


@FUZZ
@given(st.data())
def test_fuzz_train_step(data):
    K, m = data.draw(dims())
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    params = data.draw(param_dict(K, m, dtype))
    state = data.draw(param_dict(K, m, dtype))
    if isinstance(state, dict):
        state = {k: np.abs(v) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v for k, v in state.items()}
    T = data.draw(st.integers(0, 8))
    X, Y = data.draw(index_array(K, T)), data.draw(index_array(K, T))
    eta = data.draw(st.sampled_from([0.1] * 8 + [1e-3] * 4 + [0.0, -1.0, float("nan"), float("inf")]))
    clip = data.draw(st.sampled_from([5.0] * 8 + [0.5] * 4 + [0.0, float("nan")]))
    before = {k: np.array(v, copy=True) for k, v in params.items()} if isinstance(params, dict) else None
    try:
        loss, h = cx.train_step(params, state, X, Y, hidden(data.draw, m, dtype), eta=eta, clip=clip)
    except EXPECTED:
        tally('train_step', False)
        if before is not None:  # a refused call changes nothing
            for k, v in params.items():
                a = np.asarray(v)
                assert np.array_equal(a, before[k], equal_nan=a.dtype.kind in "fc")
        return
    tally('train_step', True)
    assert valid_params(params, K, m) and eta > 0 and clip > 0 and np.isfinite(loss)
    assert h.shape == (m,) and np.all(np.isfinite(h))
    # AdaGrad moves each entry by at most eta * clip / sqrt(clip^2 + eps) <= eta.
    for k in PARAM_NAMES:
        step = np.abs(params[k].astype(np.float64) - before[k].astype(np.float64))
        assert np.all(step <= eta * (1 + 1e-5) + 4 * np.spacing(np.abs(before[k])))


@FUZZ
@given(st.data())
def test_fuzz_train_steps(data):
    K, m = data.draw(dims())
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    params = data.draw(param_dict(K, m, dtype))
    state = {k: np.zeros_like(v) for k, v in params.items()} if valid_params(params, K, m) else \
        data.draw(param_dict(K, m, dtype))
    text = data.draw(index_array(K, data.draw(st.integers(0, 30))))
    odd = data.draw(st.integers(0, 9)) == 0  # one call in ten gets absurd numbers
    n_steps = data.draw(st.sampled_from([-1, 2**62, 2**70, 1.5]) if odd else st.integers(0, 12))
    seq_length = data.draw(st.sampled_from([0, 2**62, -3]) if odd else st.integers(1, 6))
    pos = data.draw(st.sampled_from([-1, 2**63, 10**6]) if odd else st.integers(0, 12))
    try:
        losses, h, new_pos, wraps, diverged = cx.train_steps(params, state, text, hidden(data.draw, m, dtype),
                                                             n_steps=n_steps, seq_length=seq_length, pos=pos)
    except EXPECTED:
        tally('train_steps', False)
        return
    tally('train_steps', True)
    # Only the characters a call reads are range-checked (the walk may stop
    # before a bad index further on), so check the array's kind here.
    assert valid_params(params, K, m) and np.asarray(text).dtype.kind in "iu"
    N = len(text)
    assert 1 <= seq_length and seq_length + 1 <= N and 0 <= pos <= N
    assert len(losses) == n_steps or diverged
    assert h.shape == (m,)
    assert (len(losses) == 0 and new_pos == pos) or new_pos + 1 <= N
    assert np.all(np.isfinite(losses))


@FUZZ
@given(st.data())
def test_fuzz_evaluate_loss(data):
    K, m = data.draw(dims())
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    params = data.draw(param_dict(K, m, dtype))
    text = data.draw(index_array(K))
    h0 = hidden(data.draw, m, dtype)
    try:
        loss, h = cx.evaluate_loss(params, text, h0)
    except EXPECTED:
        tally('evaluate_loss', False)
        return
    tally('evaluate_loss', True)
    assert valid_params(params, K, m) and valid_indices(text, K) and len(text) >= 2
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    t = np.asarray(text, dtype=np.int64)
    loss_r = reference.forward(p64, t[:-1], t[1:], None if h0 is None else np.asarray(h0, dtype=np.float64))[0]
    assert abs(loss - loss_r) <= (1e-9 if dtype == np.float64 else 1e-3) * max(1.0, loss_r)


@FUZZ
@given(st.data())
def test_fuzz_sample(data):
    K, m = data.draw(dims())
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    params = data.draw(param_dict(K, m, dtype))
    prime = data.draw(index_array(K))
    odd = data.draw(st.integers(0, 9)) == 0  # one call in ten gets absurd numbers
    n = data.draw(st.sampled_from([-5, 2**62, 2**64]) if odd else st.integers(0, 30))
    temperature = data.draw(st.sampled_from([0.0, -1.0, float("nan"), float("inf")]) if odd
                            else st.sampled_from([1.0, 0.3, 5.0, 1e-300]))
    seed = data.draw(st.sampled_from([-1, 2**64, "x", 1.5]) if odd else st.integers(0, 2**64 - 1))
    try:
        out, h = cx.sample(params, hidden(data.draw, m, dtype), prime, n, temperature, seed)
    except EXPECTED:
        tally('sample', False)
        return
    tally('sample', True)
    assert valid_params(params, K, m) and valid_indices(prime, K) and 0 < temperature < float("inf")
    assert out.shape == (n,) and out.dtype == np.int32
    assert n == 0 or (out.min() >= 0 and out.max() < K)


def test_zz_fuzz_exercised_both_outcomes():
    """Runs after the fuzz tests (file order): each function must have been
    driven through both valid calls and refused ones."""
    if not OUTCOMES:
        pytest.skip("fuzz tests not run in this session")
    for name, (ok, refused) in OUTCOMES.items():
        print(f"{name}: {ok} returned, {refused} refused")
        assert ok >= 0.1 * (ok + refused) and refused >= 0.1 * (ok + refused), (name, ok, refused)

FLOAT_DTYPES = [np.float64, np.float32]
ODD_DTYPES = [np.float16, np.int32, np.int64, np.complex64, np.bool_, ">f8", object]
INDEX_DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]
