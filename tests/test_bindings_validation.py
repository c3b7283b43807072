"""Bad input at the binding layer (cpp/bindings) and at the engine's front
doors: every refusal is a TypeError, ValueError or IndexError whose message
names the argument and says what was expected, and a refused call changes
nothing (parameters, optimiser memory and the update counter 't').

Each front door is reached two ways: charrnn_ext.<fn> (engine.py, with its
defaults) and charrnn_ext._core.<fn> (every argument given, cell=None).
"""

from __future__ import annotations

import re
import threading
import types
from collections import OrderedDict

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import _core
from charrnn_ext.config import CELLS, CLIP_MODES, OPTIMIZERS, UPDATE_OPTIONS
from charrnn_ext.layout import copy_params, init_opt_state, net_init, zeros_like_params

K, M = 6, 4
X = np.array([0, 1, 2])
Y = np.array([1, 2, 3])
DATA = np.arange(K).repeat(3)  # 18 characters: 0 0 0 1 1 1 ... 5 5 5

FNS = ("loss_and_grads", "train_step", "train_steps", "evaluate_loss", "sample", "numerical_grads")
TRAIN = ("train_step", "train_steps")
VIAS = ("engine", "core")

OPT_DEFAULTS = dict(
    optimizer="adagrad",
    eta=0.1,
    clip=5.0,
    clip_mode="elementwise",
    gamma=0.9,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    dropout=0.0,
    seed=0,
    threads=1,
)
CORE_DEFAULTS = {
    "loss_and_grads": dict(cell=None, dropout=0.0, seed=0, update=0, threads=1, precision="full"),
    "train_step": dict(cell=None, precision="full", **OPT_DEFAULTS),
    "train_steps": dict(
        cell=None, n_steps=2, seq_length=3, batch_size=1, positions=None, precision="full", **OPT_DEFAULTS
    ),
    "evaluate_loss": dict(cell=None, batch_size=1, threads=1, precision="full"),
    "sample": dict(cell=None, n=5, temperature=1.0, seed=0, top_k=0, top_p=1.0, greedy=False, threads=1),
    "numerical_grads": dict(cell=None, h=1e-4, dropout=0.0, seed=0, update=0, threads=1),
}


def classic(dtype=np.float64, K_=K, m=M):
    return cx.init_params(K_, m, sig=0.1, seed=0, dtype=dtype)


def network(cell="lstm", layers=2, dtype=np.float64, K_=K, m=M):
    return net_init(cell, K_, m, layers, sig=0.1, seed=0, dtype=dtype)


AUTO = object()  # call()'s default optimiser memory: init_opt_state(params)


def call(fn, params, state=AUTO, *, via="engine", X=X, Y=Y, data=DATA, h0=None, prime=(0,), **kw):
    """One call of front door fn (charrnn_ext.fn or _core.fn) with small valid
    defaults; kw overrides them (engine names, plus the core's own)."""
    if state is AUTO:
        state = init_opt_state(params) if fn in TRAIN and isinstance(params, dict) else None
    if via == "core":
        args = {**CORE_DEFAULTS[fn], **kw}
        if fn in TRAIN:  # the core takes the update's options as one mapping
            args["options"] = {k: args.pop(k) for k in UPDATE_OPTIONS if k in args}
        if fn == "loss_and_grads":
            return _core.loss_and_grads(params, X, Y, h0, **args)
        if fn == "train_step":
            return _core.train_step(params, state, X, Y, h0, **args)
        if fn == "train_steps":
            return _core.train_steps(params, state, data, h0, **args)
        if fn == "evaluate_loss":
            return _core.evaluate_loss(params, data, h0, **args)
        if fn == "sample":
            return _core.sample(params, h0, list(prime), **args)
        return _core.numerical_grads(params, X, Y, h0, **args)
    if fn == "loss_and_grads":
        return cx.loss_and_grads(params, X, Y, h0, **kw)
    if fn == "train_step":
        return cx.train_step(params, state, X, Y, h0, **kw)
    if fn == "train_steps":
        return cx.train_steps(params, state, data, h0, **{"n_steps": 2, "seq_length": 3, **kw})
    if fn == "evaluate_loss":
        return cx.evaluate_loss(params, data, h0, **kw)
    if fn == "sample":
        kw = {"n": 5, **kw}
        return cx.sample(params, h0, list(prime), kw.pop("n"), **kw)
    return cx.numerical_grads(params, X, Y, h0, **kw)


def snapshot(*mappings):
    return [
        {k: np.array(v, copy=True) for k, v in mp.items() if isinstance(v, np.ndarray)}
        if isinstance(mp, (dict, types.MappingProxyType))
        else {}
        for mp in mappings
    ]


def assert_unchanged(mappings, snaps):
    for mp, snap in zip(mappings, snaps):
        for k, v in snap.items():
            assert np.array_equal(mp[k], v, equal_nan=v.dtype.kind == "f"), f"a refused call changed {k!r}"


def refuses(exc, message, fn, *watch):
    """fn() raises exc whose message contains `message` (a literal fragment),
    and the arrays of the mappings in `watch` (params, opt_state incl. 't')
    are unchanged afterwards."""
    snaps = snapshot(*watch)
    with pytest.raises(exc, match=re.escape(message)) as info:
        fn()
    assert_unchanged(watch, snaps)
    return str(info.value)


def with_(d, **changes):
    out = dict(d)
    out.update(changes)
    return out


def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}


def strided(a):
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def unaligned(a):
    """A writable, C-contiguous copy of a that starts one byte past its
    dtype's alignment (what np.frombuffer gives at an odd offset)."""
    a = np.asarray(a)
    buf = np.zeros(a.nbytes + 1, np.uint8)
    u = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    u[...] = a
    assert u.flags.c_contiguous and u.flags.writeable and not u.flags.aligned
    return u


# ================================================================ parameters
#
# (id, base network, spoil(params) -> params, exception, message fragment)


def _nan_in_V(p):
    p["V"] = p["V"].copy()
    p["V"][2, 1] = np.nan
    return p


def _inf_in_b(p):
    p["b"] = p["b"].copy()
    p["b"][0] = -np.inf
    return p


HINT_CLASSIC = "(a vanilla RNN has keys U, W, V, b, c)"
NET_HINT = (
    "a network has keys l{l}.Wx, l{l}.Wh, l{l}.b (and l{l}.bh for gru) per layer, then V and c; "
    "a vanilla RNN may use U, W, V, b, c"
)
PARAM_CASES = [
    (
        "W-shape",
        "classic",
        lambda p: with_(p, W=np.zeros((M, M + 1))),
        ValueError,
        "params['W'] has shape (4, 5); expected (4, 4) for a 'rnn' network with K=6, m=4, 1 layer(s)",
    ),
    (
        "U-3d",
        "classic",
        lambda p: with_(p, U=np.zeros((M, K, 1))),
        ValueError,
        "params['U'] must be 2-D with shape (m, K), got shape (4, 6, 1)",
    ),
    (
        "V-transposed",
        "classic",
        lambda p: with_(p, V=np.zeros((M, K))),
        ValueError,
        "params['V'] has shape (4, 6); expected (6, 4) for a 'rnn' network",
    ),
    (
        "b-2d",
        "classic",
        lambda p: with_(p, b=np.zeros((M, 1))),
        ValueError,
        "params['b'] has shape (4, 1); expected (4,) for a 'rnn' network",
    ),
    (
        "c-long",
        "classic",
        lambda p: with_(p, c=np.zeros(K + 1)),
        ValueError,
        "params['c'] has shape (7,); expected (6,)",
    ),
    ("W-0d", "classic", lambda p: with_(p, W=np.zeros(())), ValueError, "params['W'] has shape (); expected (4, 4)"),
    (
        "W-int64",
        "classic",
        lambda p: with_(p, W=p["W"].astype(np.int64)),
        TypeError,
        "params['W'] has dtype int64; expected float64 like the other parameters (all arrays share one dtype)",
    ),
    (
        "W-float16",
        "classic",
        lambda p: with_(p, W=p["W"].astype(np.float16)),
        TypeError,
        "params['W'] has dtype float16; expected float64 like the other parameters",
    ),
    (
        "W-complex",
        "classic",
        lambda p: with_(p, W=p["W"].astype(np.complex128)),
        TypeError,
        "params['W'] has dtype complex128; expected float64",
    ),
    (
        "W-object",
        "classic",
        lambda p: with_(p, W=p["W"].astype(object)),
        TypeError,
        "params['W'] has dtype object; expected float64",
    ),
    (
        "c-float32",
        "classic",
        lambda p: with_(p, c=p["c"].astype(np.float32)),
        TypeError,
        "params['c'] has dtype float32; expected float64 like the other parameters",
    ),
    (
        "U-int32",
        "classic",
        lambda p: with_(p, U=p["U"].astype(np.int32)),
        TypeError,
        "params['U'] has dtype int32; expected float64 or float32 (native byte order)",
    ),
    (
        "U-big-endian",
        "classic",
        lambda p: with_(p, U=p["U"].astype(">f8")),
        TypeError,
        "params['U'] has dtype >f8; expected float64 or float32 (native byte order)",
    ),
    (
        "W-big-endian",
        "classic",
        lambda p: with_(p, W=p["W"].astype(">f8")),
        TypeError,
        "params['W'] has dtype >f8; expected float64 like the other parameters",
    ),
    (
        "W-strided",
        "classic",
        lambda p: with_(p, W=strided(p["W"])),
        ValueError,
        "params['W'] is not C-contiguous; pass np.ascontiguousarray(params['W'])",
    ),
    (
        "V-unaligned",
        "classic",
        lambda p: with_(p, V=unaligned(p["V"])),
        ValueError,
        "params['V'] is not aligned in memory for its dtype (a view at an odd byte offset?); "
        "pass an aligned copy, np.array(params['V'])",
    ),
    (
        "U-fortran",
        "classic",
        lambda p: with_(p, U=np.asfortranarray(p["U"])),
        ValueError,
        "params['U'] is not C-contiguous",
    ),
    ("b-missing", "classic", lambda p: without(p, "b"), ValueError, "params has no 'b' entry " + HINT_CLASSIC),
    (
        "W-list",
        "classic",
        lambda p: with_(p, W=p["W"].tolist()),
        TypeError,
        "params['W'] must be a NumPy array, got list",
    ),
    (
        "U-list",
        "classic",
        lambda p: with_(p, U=p["U"].tolist()),
        TypeError,
        "params['U'] must be a NumPy array, got list",
    ),
    (
        "not-mapping-list",
        "classic",
        lambda p: list(p.values()),
        TypeError,
        "params must be a dict of NumPy arrays, got list",
    ),
    ("not-mapping-str", "classic", lambda p: "UWVbc", TypeError, "params must be a dict of NumPy arrays, got str"),
    ("not-mapping-None", "classic", lambda p: None, TypeError, "params must be a dict of NumPy arrays, got NoneType"),
    ("not-mapping-array", "classic", lambda p: p["U"], TypeError, "params must be a dict of NumPy arrays, got ndarray"),
    (
        "unknown-key",
        "classic",
        lambda p: with_(p, extra=np.zeros(3)),
        ValueError,
        "params has an unexpected entry 'extra' " + HINT_CLASSIC,
    ),
    ("non-str-key", "classic", lambda p: {**p, 7: np.zeros(3)}, ValueError, "params has an unexpected entry '7'"),
    (
        "opt-key-in-params",
        "classic",
        lambda p: with_(p, t=np.zeros((), np.int64)),
        ValueError,
        "params has an unexpected entry 't'",
    ),
    (
        "mixed-names",
        "classic",
        lambda p: with_(p, **{"l0.Wx": p["U"].copy()}),
        ValueError,
        "params mixes the classic names (U, W, V, b, c) and the network names (l0.Wx, ...); use one set",
    ),
    (
        "classic-plus-network-key",
        "classic",
        lambda p: with_(p, **{"l0.Wh": p["W"].copy()}),
        ValueError,
        "params has an unexpected entry 'l0.Wh'",
    ),
    ("V-nan", "classic", _nan_in_V, ValueError, "params['V'] contains NaN or infinity"),
    ("b-inf", "classic", _inf_in_b, ValueError, "params['b'] contains NaN or infinity"),
    (
        "K-zero",
        "classic",
        lambda p: {
            "U": np.zeros((M, 0)),
            "W": np.zeros((M, M)),
            "V": np.zeros((0, M)),
            "b": np.zeros(M),
            "c": np.zeros(0),
        },
        ValueError,
        "params['U'] has shape (4, 0): the vocabulary size K and the hidden size m must be at least 1",
    ),
    (
        "m-zero",
        "classic",
        lambda p: {
            "U": np.zeros((0, K)),
            "W": np.zeros((0, 0)),
            "V": np.zeros((K, 0)),
            "b": np.zeros(0),
            "c": np.zeros(K),
        },
        ValueError,
        "the vocabulary size K and the hidden size m must be at least 1",
    ),
    # network names (a 2-layer lstm unless said otherwise)
    ("V-missing", "lstm", lambda p: without(p, "V"), ValueError, "params has no 'V' entry (" + NET_HINT + ")"),
    (
        "V-1d",
        "lstm",
        lambda p: with_(p, V=p["V"].reshape(-1)),
        ValueError,
        "params['V'] must be 2-D with shape (K, m), got shape (24,)",
    ),
    (
        "V-float16",
        "lstm",
        lambda p: with_(p, V=p["V"].astype(np.float16)),
        TypeError,
        "params['V'] has dtype float16; expected float64 or float32 (native byte order)",
    ),
    (
        "no-layer",
        "lstm",
        lambda p: without(p, "l0.Wx"),
        ValueError,
        "params has no 'l0.Wx' entry: a network needs at least one layer (" + NET_HINT + ")",
    ),
    (
        "renamed-layer",
        "lstm",
        lambda p: {k.replace("l0.", "L0."): v for k, v in p.items()},
        ValueError,
        "params has no 'l0.Wx' entry: a network needs at least one layer",
    ),
    (
        "Wh-rows",
        "lstm",
        lambda p: with_(p, **{"l0.Wh": np.zeros((2 * M, M))}),
        ValueError,
        "params['l0.Wh'] has shape (8, 4); expected (G*m, m) with m = 4 (from params['V']) and G = 1 (rnn), "
        "4 (lstm) or 3 (gru)",
    ),
    (
        "Wh-1d",
        "lstm",
        lambda p: with_(p, **{"l0.Wh": np.zeros(4 * M * M)}),
        ValueError,
        "params['l0.Wh'] has shape (64,); expected (G*m, m) with m = 4",
    ),
    ("Wh-missing", "lstm", lambda p: without(p, "l0.Wh"), ValueError, "params has no 'l0.Wh' entry (" + NET_HINT + ")"),
    (
        "l1b-missing",
        "lstm",
        lambda p: without(p, "l1.b"),
        ValueError,
        "params has no 'l1.b' entry (a 'lstm' network has keys l{l}.Wx, l{l}.Wh, l{l}.b per layer l = 0, 1, ..., "
        "then V and c)",
    ),
    (
        "bh-for-lstm",
        "lstm",
        lambda p: with_(p, **{"l0.bh": np.zeros(4 * M)}),
        ValueError,
        "params has an unexpected entry 'l0.bh' (a 'lstm' network has keys",
    ),
    (
        "bh-missing-gru",
        "gru",
        lambda p: without(p, "l1.bh"),
        ValueError,
        "params has no 'l1.bh' entry (a 'gru' network has keys l{l}.Wx, l{l}.Wh, l{l}.b, l{l}.bh per layer",
    ),
    (
        "l1Wx-width",
        "lstm",
        lambda p: with_(p, **{"l1.Wx": np.zeros((4 * M, K))}),
        ValueError,
        "params['l1.Wx'] has shape (16, 6); expected (16, 4) for a 'lstm' network with K=6, m=4, 2 layer(s)",
    ),
    (
        "skipped-layer",
        "lstm",
        lambda p: {**p, **{k.replace("l1.", "l3."): v for k, v in p.items() if "l1." in k}},
        ValueError,
        "params has an unexpected entry 'l3.",
    ),
    (
        "layer-dtype",
        "gru",
        lambda p: with_(p, **{"l1.bh": p["l1.bh"].astype(np.float32)}),
        TypeError,
        "params['l1.bh'] has dtype float32; expected float64 like the other parameters",
    ),
    (
        "layer-nan",
        "gru",
        lambda p: with_(p, **{"l1.Wh": np.full_like(p["l1.Wh"], np.nan)}),
        ValueError,
        "params['l1.Wh'] contains NaN or infinity",
    ),
    (
        "layer-fortran",
        "rnn2",
        lambda p: with_(p, **{"l1.Wh": np.asfortranarray(p["l1.Wh"] + 1e-3)}),
        ValueError,
        "params['l1.Wh'] is not C-contiguous",
    ),
]


def base_params(kind):
    if kind == "classic":
        return classic()
    if kind == "rnn2":
        return network("rnn", 2)
    return network(kind, 2)


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("case", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_bad_params(case, fn, via):
    _, kind, spoil, exc, message = case
    clean = base_params(kind)
    state = init_opt_state(clean)
    bad = spoil(copy_params(clean))  # the memory of the clean parameters: params are checked first
    before = snapshot(bad)
    refuses(exc, message, lambda: call(fn, bad, state, via=via), clean, state)
    assert_unchanged([bad], before)


KEEP_THE_COPY = " (it is updated in place: keep the copy)"


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("spoil", [strided, unaligned])
def test_a_layout_refusal_says_when_the_copy_is_what_gets_updated(fn, spoil):
    """The cure for a strided or unaligned parameter array is a copy; where
    the call updates the parameters in place (training), the message adds that
    the copy is then the one to keep."""
    clean = base_params("classic")
    bad = with_(clean, U=spoil(clean["U"]))
    msg = refuses(ValueError, "params['U'] is not ", lambda: call(fn, bad, init_opt_state(clean)), clean)
    assert msg.endswith(KEEP_THE_COPY) == fn.startswith("train_"), msg


@pytest.mark.parametrize("fn", FNS)
def test_params_may_be_any_mapping(fn):
    for wrap in (OrderedDict, types.MappingProxyType):
        p = network("gru", 2)
        out = call(fn, wrap(p), init_opt_state(p))
        ref = call(fn, copy_params(network("gru", 2)))
        for a, b in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
            if isinstance(a, dict):
                assert all(np.array_equal(a[k], b[k]) for k in b)
            else:
                assert np.array_equal(a, b)


# ---------------------------------------------------------------- read-only and shared arrays


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("fn", TRAIN)
def test_read_only_params_refused_for_training(fn, via):
    p = network("gru", 1)
    state = init_opt_state(p)
    p["l0.bh"].flags.writeable = False
    refuses(
        ValueError,
        "params['l0.bh'] is read-only; it must be writable to be updated in place",
        lambda: call(fn, p, state, via=via),
        p,
        state,
    )


@pytest.mark.parametrize("fn", ("loss_and_grads", "evaluate_loss", "sample", "numerical_grads"))
def test_read_only_params_are_fine_for_calls_that_only_read(fn):
    p = network("lstm", 2)
    expect = call(fn, copy_params(p))
    for a in p.values():
        a.flags.writeable = False
    got = call(fn, p)
    for a, b in zip(got if isinstance(got, tuple) else (got,), expect if isinstance(expect, tuple) else (expect,)):
        if isinstance(a, dict):
            assert all(np.array_equal(a[k], b[k]) for k in b)
        else:
            assert np.array_equal(a, b)


@pytest.mark.parametrize("fn", ("loss_and_grads", "evaluate_loss", "sample", "numerical_grads"))
def test_read_only_calls_accept_shared_arrays(fn):
    # Aliasing only matters where something is written: V and U may be one array (K == m).
    p = classic(K_=6, m=6)
    p["V"] = p["U"]
    q = copy_params(p)
    got, expect = call(fn, p), call(fn, q)
    assert np.array_equal(
        got[0] if isinstance(got, tuple) else got["U"], expect[0] if isinstance(expect, tuple) else expect["U"]
    )


# ================================================================ optimiser memory


def _set(state, key, value):
    state = dict(state)
    state[key] = value
    return state


def _poke(state, key, value, where=(1, 2)):
    state = dict(state)
    state[key] = state[key].copy()
    state[key][where] = value
    return state


def _readonly(state, key):
    state = dict(state)
    state[key] = state[key].copy()
    state[key].flags.writeable = False
    return state


def _t_view_of_c(p, s):
    p["c"][:] = 0.0  # the int64 view reads 0, a valid counter; only the overlap is wrong
    return _set(s, "t", p["c"].view(np.int64)[:1].reshape(()))


def _shared_buffer(p, s):
    buf = np.zeros(2 * M * M)
    p["W"] = buf[: M * M].reshape(M, M)
    s = dict(s)
    s["M:W"] = buf[M * M - 1 : 2 * M * M - 1].reshape(M, M)  # one element shared with params['W']
    return s


def _params_as_memory(p):
    for v in p.values():
        np.abs(v, out=v)  # a valid AdaGrad memory (>= 0), keyed by the bare names: the parameters themselves
    return p


NEEDS = (
    "(optimizer 'adagrad' needs M:<name> for every parameter, and 't' for Adam and dropout; make it with "
    "init_opt_state(params, optimizer))"
)
# (id, optimizer, spoil(params, state) -> state, exception, message); params are classic (K=6, m=4)
STATE_CASES = [
    (
        "not-mapping",
        "adagrad",
        lambda p, s: list(s.values()),
        TypeError,
        "opt_state must be a dict of NumPy arrays, got list",
    ),
    ("None", "adagrad", lambda p, s: None, TypeError, "opt_state must be a dict of NumPy arrays, got NoneType"),
    ("missing-slot", "adagrad", lambda p, s: without(s, "M:W"), ValueError, "opt_state has no 'M:W' entry"),
    ("other-optimizer", "adam", lambda p, s: init_opt_state(p, "adagrad"), ValueError, "opt_state has no 'm:U' entry"),
    (
        "shape",
        "adagrad",
        lambda p, s: _set(s, "M:W", np.zeros((3, 3))),
        ValueError,
        "opt_state['M:W'] has shape (3, 3); expected (4, 4) for a 'rnn' network with K=6, m=4, 1 layer(s)",
    ),
    (
        "dtype",
        "adagrad",
        lambda p, s: _set(s, "M:c", np.zeros(K, np.float32)),
        TypeError,
        "opt_state['M:c'] has dtype float32; expected float64 like the other parameters",
    ),
    (
        "list",
        "adagrad",
        lambda p, s: _set(s, "M:W", np.zeros((M, M)).tolist()),
        TypeError,
        "opt_state['M:W'] must be a NumPy array, got list",
    ),
    (
        "read-only",
        "rmsprop",
        lambda p, s: _readonly(s, "M:V"),
        ValueError,
        "opt_state['M:V'] is read-only; it must be writable to be updated in place",
    ),
    (
        "fortran",
        "adagrad",
        lambda p, s: _set(s, "M:U", np.asfortranarray(s["M:U"])),
        ValueError,
        "opt_state['M:U'] is not C-contiguous",
    ),
    (
        "unaligned",
        "adagrad",
        lambda p, s: _set(s, "M:b", unaligned(s["M:b"])),
        ValueError,
        "opt_state['M:b'] is not aligned in memory for its dtype",
    ),
    (
        "M-negative",
        "adagrad",
        lambda p, s: _poke(s, "M:W", -1.0),
        ValueError,
        "opt_state['M:W'] must hold finite values >= 0 (accumulated squared gradients); it contains a negative entry, "
        "NaN or infinity",
    ),
    (
        "M-nan",
        "adagrad",
        lambda p, s: _poke(s, "M:W", np.nan),
        ValueError,
        "opt_state['M:W'] must hold finite values >= 0",
    ),
    (
        "M-inf",
        "adagrad",
        lambda p, s: _poke(s, "M:W", np.inf),
        ValueError,
        "opt_state['M:W'] must hold finite values >= 0",
    ),
    (
        "rmsprop-negative",
        "rmsprop",
        lambda p, s: _poke(s, "M:b", -0.5, 0),
        ValueError,
        "opt_state['M:b'] must hold finite values >= 0",
    ),
    (
        "adam-v-negative",
        "adam",
        lambda p, s: _poke(s, "v:W", -1.0),
        ValueError,
        "opt_state['v:W'] must hold finite values >= 0",
    ),
    (
        "adam-v-nan",
        "adam",
        lambda p, s: _poke(s, "v:c", np.nan, 0),
        ValueError,
        "opt_state['v:c'] must hold finite values >= 0",
    ),
    (
        "adam-m-nan",
        "adam",
        lambda p, s: _poke(s, "m:W", np.nan),
        ValueError,
        "opt_state['m:W'] contains NaN or infinity",
    ),
    (
        "adam-m-inf",
        "adam",
        lambda p, s: _poke(s, "m:U", -np.inf),
        ValueError,
        "opt_state['m:U'] contains NaN or infinity",
    ),
    (
        "unknown-key",
        "adagrad",
        lambda p, s: _set(s, "extra", np.zeros(3)),
        ValueError,
        "opt_state has an unexpected entry 'extra' " + NEEDS,
    ),
    (
        "both-namings",
        "adagrad",
        lambda p, s: _set(s, "U", np.zeros((M, K))),
        ValueError,
        "opt_state has an unexpected entry 'U'",
    ),
    (
        "adam-slot-for-adagrad",
        "adagrad",
        lambda p, s: _set(s, "v:V", np.zeros((K, M))),
        ValueError,
        "opt_state has an unexpected entry 'v:V'",
    ),
    (
        "t-int",
        "adam",
        lambda p, s: _set(s, "t", 0),
        TypeError,
        "opt_state['t'] must be a 0-d int64 NumPy array (the update counter), got int",
    ),
    (
        "t-numpy-scalar",
        "adam",
        lambda p, s: _set(s, "t", np.int64(0)),
        TypeError,
        "opt_state['t'] must be a 0-d int64 NumPy array (the update counter), got int64",
    ),
    (
        "t-int32",
        "adam",
        lambda p, s: _set(s, "t", np.zeros((), np.int32)),
        TypeError,
        "opt_state['t'] must be a 0-d int64 NumPy array (the update counter), got an array of dtype int32 and shape ()",
    ),
    (
        "t-1d",
        "adagrad",
        lambda p, s: _set(s, "t", np.zeros(1, np.int64)),
        TypeError,
        "got an array of dtype int64 and shape (1,)",
    ),
    (
        "t-float",
        "adagrad",
        lambda p, s: _set(s, "t", np.zeros((), np.float64)),
        TypeError,
        "got an array of dtype float64 and shape ()",
    ),
    (
        "t-big-endian",
        "adam",
        lambda p, s: _set(s, "t", np.zeros((), ">i8")),
        TypeError,
        "got an array of dtype >i8 and shape ()",
    ),
    (
        "t-negative",
        "adam",
        lambda p, s: _set(s, "t", np.array(-1, np.int64)),
        ValueError,
        "opt_state['t'] must be >= 0, got -1",
    ),
    (
        "t-read-only",
        "adam",
        lambda p, s: _readonly(s, "t"),
        ValueError,
        "opt_state['t'] is read-only; it must be writable to be updated in place",
    ),
    # no two arrays a call writes may share memory
    (
        "alias-param",
        "adagrad",
        lambda p, s: _set(s, "M:b", p["b"]),
        ValueError,
        "overlap in memory; every parameter and optimiser-state array must be a separate array",
    ),
    ("alias-adam-v", "adam", lambda p, s: _set(s, "v:c", p["c"]), ValueError, "overlap in memory"),
    ("alias-state", "adam", lambda p, s: _set(s, "m:W", s["v:W"]), ValueError, "overlap in memory"),
    ("alias-partial", "adagrad", _shared_buffer, ValueError, "overlap in memory"),
    ("alias-t", "adagrad", _t_view_of_c, ValueError, "overlap in memory"),
    (
        "t-unaligned",
        "adam",
        lambda p, s: _set(s, "t", unaligned(np.array(0, np.int64))),
        ValueError,
        "opt_state['t'] is not aligned in memory for its dtype",
    ),
    ("params-as-memory", "adagrad", lambda p, s: _params_as_memory(p), ValueError, "overlap in memory"),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("fn", TRAIN)
@pytest.mark.parametrize("case", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_bad_opt_state(case, fn, via):
    _, optimizer, spoil, exc, message = case
    p = classic()
    state = spoil(p, init_opt_state(p, optimizer))
    watch = [p] + ([state] if isinstance(state, dict) else [])
    msg = refuses(exc, message, lambda: call(fn, p, state, via=via, optimizer=optimizer), *watch)
    if case[0].startswith("alias"):
        names = re.findall(r"(?:params|opt_state)\['[^']+'\]", msg)
        assert len(names) == 2 and names[0] != names[1], msg


def test_overlap_message_names_both_arrays_in_order():
    # the names come in the order of the arrays: parameters (in layout order), then the memory
    tail = " overlap in memory; every parameter and optimiser-state array must be a separate array"
    p = classic()
    state = _set(init_opt_state(p), "M:b", p["b"])
    refuses(ValueError, "params['b'] and opt_state['M:b']" + tail, lambda: cx.train_step(p, state, X, Y), p)
    p = classic(K_=5, m=5)
    p["V"] = p["U"]
    refuses(ValueError, "params['U'] and params['V']" + tail, lambda: cx.train_step(p, init_opt_state(p), X, Y))
    p = network("lstm", 2)
    state = init_opt_state(p, "adam")
    state["v:l1.Wh"] = state["m:l0.Wh"]
    refuses(
        ValueError,
        "opt_state['m:l0.Wh'] and opt_state['v:l1.Wh']" + tail,
        lambda: cx.train_steps(p, state, DATA, n_steps=1, seq_length=3, optimizer="adam"),
        p,
        state,
    )


@pytest.mark.parametrize("fn", TRAIN)
def test_adjacent_arrays_in_one_buffer_are_fine(fn):
    p = classic(K_=4, m=4)
    state = init_opt_state(p)
    buf = np.zeros(32)
    p["U"] = buf[:16].reshape(4, 4)
    state["M:W"] = buf[16:].reshape(4, 4)
    q = copy_params(p)
    call(fn, p, state)
    call(fn, q)
    assert all(np.array_equal(p[k], q[k]) for k in q)


@pytest.mark.parametrize("optimizer,slot", [("adam", "m"), ("adagrad", None)])
def test_valid_unusual_memory_is_accepted(optimizer, slot):
    # Adam's first moment may be negative; a classic AdaGrad memory is keyed by the bare names.
    p = classic()
    state = init_opt_state(p, optimizer) if slot else zeros_like_params(p)
    if slot:
        state["m:W"][:] = -0.5
    loss, h = cx.train_step(p, state, X, Y, optimizer=optimizer)
    assert np.isfinite(loss) and h.shape == (M,)
    if not slot:
        assert state["W"].any() and "t" not in state


@pytest.mark.parametrize("fn", TRAIN)
@pytest.mark.parametrize(
    "optimizer,dropout,who", [("adam", 0.0, "Adam"), ("adagrad", 0.3, "dropout"), ("rmsprop", 0.3, "dropout")]
)
def test_missing_update_counter_is_refused(fn, optimizer, dropout, who):
    """Adam's bias correction and the dropout masks need opt_state['t'].
    (Regression: OptState::has_t() tested a default-constructed py::array,
    which is a real empty array, so a missing 't' was never noticed and
    every call ran with t = 0.)"""
    p = classic()
    state = without(init_opt_state(p, optimizer), "t")
    refuses(
        ValueError,
        f"opt_state has no 't' entry, the update counter that {who} needs; make the state with "
        "init_opt_state(params, optimizer)",
        lambda: call(fn, p, state, optimizer=optimizer, dropout=dropout),
        p,
        state,
    )


@pytest.mark.parametrize(
    "optimizer,slot,bad,ok",
    [
        ("adagrad", "M", -1.0, False),
        ("adagrad", "M", np.nan, False),
        ("rmsprop", "M", -0.5, False),
        ("rmsprop", "M", np.inf, False),
        ("adam", "v", -1.0, False),
        ("adam", "v", np.nan, False),
        ("adam", "m", np.nan, False),
        ("adam", "m", -1.0, True),  # Adam's first moment may be negative
    ],
)
def test_network_memory_values_checked(optimizer, slot, bad, ok):
    p = network("gru", 2)
    st = init_opt_state(p, optimizer)
    st[f"{slot}:l1.Wh"][0, 0] = bad
    kw = dict(n_steps=2, seq_length=3, batch_size=2, threads=2, optimizer=optimizer, dropout=0.1)
    if ok:
        losses, *_ = cx.train_steps(p, st, DATA, **kw)
        assert losses.shape == (2,) and np.all(np.isfinite(losses)) and int(st["t"]) == 2
        assert all(np.all(np.isfinite(v)) for v in p.values())
    else:
        message = f"opt_state['{slot}:l1.Wh'] " + ("contains NaN" if slot == "m" else "must hold finite values >= 0")
        refuses(ValueError, message, lambda: cx.train_steps(p, st, DATA, **kw), p, st)


@pytest.mark.parametrize(
    "case",
    [c for c in STATE_CASES if c[0] in ("M-negative", "alias-param", "t-negative", "unknown-key", "read-only")],
    ids=lambda c: c[0],
)
def test_bad_opt_state_batched(case):
    _, optimizer, spoil, exc, message = case
    p = classic()
    state = spoil(p, init_opt_state(p, optimizer))
    refuses(
        exc,
        message,
        lambda: cx.train_steps(p, state, DATA, n_steps=2, seq_length=3, batch_size=3, threads=2, optimizer=optimizer),
        p,
        state,
    )


def test_counter_only_needed_by_adam_and_dropout():
    p = network("gru", 2)
    for optimizer in ("adagrad", "rmsprop"):
        state = without(init_opt_state(p, optimizer), "t")
        losses, *_ = cx.train_steps(p, state, DATA, n_steps=3, seq_length=3, optimizer=optimizer)
        assert losses.shape == (3,) and np.all(np.isfinite(losses)) and "t" not in state


def test_update_counter_may_not_overflow():
    """The counter is an int64: a call that would carry opt_state['t'] past 2**63 - 1 is refused
    before anything is changed, naming opt_state['t']."""
    p = classic()
    state = init_opt_state(p, "adam")
    state["t"][...] = 2**63 - 1
    refuses(ValueError, "opt_state['t']", lambda: cx.train_step(p, state, X, Y, optimizer="adam"), p, state)


def test_missing_slot_message_names_the_optimiser_keys():
    """A missing optimiser slot is reported with the optimiser's own keys (m:<name>, v:<name>), not the
    parameters'."""
    p = classic()
    refuses(
        ValueError,
        "opt_state has no 'm:U' entry (optimizer 'adam' needs m:<name> and v:<name>",
        lambda: cx.train_step(p, init_opt_state(p, "adagrad"), X, Y, optimizer="adam"),
        p,
    )


# ================================================================ indices

# (id, X, Y, exception, message)
CHUNK_CASES = [
    ("X-out-of-range", [0, 6, 1], Y, IndexError, "X[1] = 6 is outside the vocabulary range [0, 6)"),
    ("X-negative", [0, 1, -1], Y, IndexError, "X[2] = -1 is outside the vocabulary range [0, 6)"),
    ("Y-uint8", X, np.array([255, 1, 2], np.uint8), IndexError, "Y[0] = 255 is outside the vocabulary range [0, 6)"),
    (
        "X-2d-out-of-range",
        np.array([[0, 1, 2], [1, 9, 0]]),
        np.zeros((2, 3), int),
        IndexError,
        "X[1, 1] = 9 is outside the vocabulary range [0, 6)",
    ),
    (
        "Y-2d-negative",
        np.zeros((2, 3), int),
        np.array([[0, 1, 2], [1, 2, -7]]),
        IndexError,
        "Y[1, 2] = -7 is outside the vocabulary range [0, 6)",
    ),
    ("length", X, Y[:2], ValueError, "X and Y must have the same shape, got (3,) and (2,)"),
    ("1d-vs-2d", X, Y[None, :], ValueError, "X and Y must have the same shape, got (3,) and (1, 3)"),
    (
        "2d-shapes",
        np.zeros((2, 3), int),
        np.zeros((3, 2), int),
        ValueError,
        "X and Y must have the same shape, got (2, 3) and (3, 2)",
    ),
    (
        "empty",
        X[:0],
        Y[:0],
        ValueError,
        "X and Y have shape (0,); a chunk needs at least one stream and one step (T >= 1)",
    ),
    ("no-streams", np.zeros((0, 3), int), np.zeros((0, 3), int), ValueError, "X and Y have shape (0, 3)"),
    ("empty-lists", [], [], ValueError, "a chunk needs at least one stream and one step (T >= 1)"),
    ("float", np.array([0.0, 1.0, 2.0]), Y, TypeError, "X must hold integer character indices, got dtype float64"),
    ("bool", np.array([True, False, True]), Y, TypeError, "X must hold integer character indices, got dtype bool"),
    ("bool-list", X, [True, False, True], TypeError, "Y must hold integer character indices, got dtype bool"),
    (
        "object",
        np.array([0, 1, 2], dtype=object),
        Y,
        TypeError,
        "X must hold integer character indices, got dtype object",
    ),
    ("huge-int-list", [0, 2**70, 1], Y, TypeError, "X must hold integer character indices, got dtype object"),
    (
        "str",
        "abc",
        Y,
        TypeError,
        "X must be a 1-D or 2-D array of integer character indices, got str (encode text with a Vocabulary first)",
    ),
    ("bytes", X, b"abc", TypeError, "Y must be a 1-D or 2-D array of integer character indices, got bytes"),
    (
        "ragged",
        [[0, 1], [1]],
        [[1, 2], [2]],
        TypeError,
        "X must be a 1-D or 2-D array of integer character indices, got list",
    ),
    (
        "3d",
        np.zeros((1, 1, 3), int),
        np.zeros((1, 1, 3), int),
        ValueError,
        "X must be 1-D (T,) or 2-D (streams, T), got shape (1, 1, 3)",
    ),
    ("0d", np.int64(1), np.int64(2), ValueError, "X must be 1-D (T,) or 2-D (streams, T), got shape ()"),
    ("strided", np.arange(6)[::2], Y, ValueError, "X is not C-contiguous; pass np.ascontiguousarray(X)"),
    ("fortran-2d", np.zeros((2, 3), int), np.asfortranarray(np.zeros((2, 3), int)), ValueError, "Y is not C-contig"),
    ("unaligned", X, unaligned(Y.astype(np.int64)), ValueError, "Y is not aligned in memory for its dtype"),
    (
        "big-endian",
        np.array([0, 1, 2], ">i4"),
        Y,
        TypeError,
        "X has unsupported integer dtype >i4 (use native byte order)",
    ),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("fn", ("loss_and_grads", "train_step", "numerical_grads"))
@pytest.mark.parametrize("case", CHUNK_CASES, ids=[c[0] for c in CHUNK_CASES])
def test_bad_chunks(case, fn, via):
    _, Xb, Yb, exc, message = case
    p = network("rnn", 2)
    state = init_opt_state(p)
    refuses(exc, message, lambda: call(fn, p, state, via=via, X=Xb, Y=Yb), p, state)


def _mixed_chunk(K_):
    rng = np.random.default_rng(3)
    Xm = rng.integers(0, 128, 30).astype(np.int8)
    Ym = rng.integers(128, K_, 30).astype(np.uint8)  # all >= 128: negative when read as int8
    return Xm, Ym


@pytest.mark.parametrize("fn", ("loss_and_grads", "train_step", "numerical_grads"))
@pytest.mark.parametrize("kind", ["classic", "lstm", "batched"])
def test_mixed_index_dtypes_equal_int64(fn, kind):
    K_, m = 200, (1 if fn == "numerical_grads" else 4)
    params = classic(K_=K_, m=m) if kind != "lstm" else net_init("lstm", K_, m, 2, sig=0.1, seed=1)
    Xm, Ym = _mixed_chunk(K_)
    if kind == "batched":
        Xm, Ym = Xm.reshape(3, 10), Ym.reshape(3, 10)
    if fn == "numerical_grads":
        Xm, Ym = np.ascontiguousarray(Xm[..., :2]), np.ascontiguousarray(Ym[..., :2])
    q = copy_params(params)
    for a_X, a_Y in ((Xm, Ym), (Ym, Xm)):  # and the other way round
        p1, p2 = copy_params(params), copy_params(q)
        a = call(fn, p1, X=a_X, Y=a_Y)
        b = call(fn, p2, X=a_X.astype(np.int64), Y=a_Y.astype(np.int64))
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            if isinstance(u, dict):
                assert all(np.array_equal(u[k], v[k]) for k in v)
            else:
                assert np.array_equal(u, v)
        assert all(np.array_equal(p1[k], p2[k]) for k in p1)


@pytest.mark.parametrize("where", ["X", "positions"])
def test_uint64_indices_are_reported_with_their_value(where):
    """uint64 indices of 2**63 and more are refused and printed as the unsigned values they are."""
    p = classic()
    big = 2**64 - 1
    if where == "X":
        refuses(
            IndexError,
            f"X[1] = {big} is outside the vocabulary range [0, 6)",
            lambda: cx.loss_and_grads(p, np.array([0, big], np.uint64), [1, 2]),
        )
        return
    state = init_opt_state(p)
    refuses(
        ValueError,
        f"positions[1] = {big} is outside its segment",
        lambda: cx.train_steps(
            p, state, DATA, n_steps=1, seq_length=3, batch_size=2, positions=np.array([0, big], np.uint64)
        ),
        p,
        state,
    )


# ================================================================ recurrent states

# (id, params kind, X, h0, exception, message); X 1-D = one stream, 2-D = two streams
H0_CASES = [
    (
        "classic-length",
        "classic",
        X,
        np.zeros(5),
        ValueError,
        "h0 has shape (5,); expected (1, 1, 4) (streams, layers, m) or (1, 4)",
    ),
    (
        "classic-dtype",
        "classic",
        X,
        np.zeros(4, np.float32),
        TypeError,
        "h0 has dtype float32; expected float64 like the parameters",
    ),
    ("classic-nan", "classic", X, np.array([0, np.nan, 0, 0.0]), ValueError, "h0 contains NaN or infinity"),
    ("classic-inf", "classic", X, np.array([0, 0, np.inf, 0.0]), ValueError, "h0 contains NaN or infinity"),
    (
        "classic-list",
        "classic",
        X,
        [0.0] * 4,
        TypeError,
        "h0 must be a NumPy array of shape (1, 1, 4) (streams, layers, m) or (1, 4)",
    ),
    ("classic-int", "classic", X, np.zeros(4, np.int64), TypeError, "h0 has dtype int64; expected float64"),
    (
        "classic-batched-rows",
        "classic",
        np.zeros((2, 3), int),
        np.zeros((3, 4)),
        ValueError,
        "h0 has shape (3, 4); expected (2, 1, 4) (streams, layers, m) or (2, 4)",
    ),
    (
        "classic-batched-one",
        "classic",
        np.zeros((2, 3), int),
        np.zeros(4),
        ValueError,
        "h0 has shape (4,); expected (2, 1, 4) (streams, layers, m) or (2, 4)",
    ),
    (
        "lstm-vanilla-shape",
        "lstm",
        X,
        np.zeros(2 * M),
        ValueError,
        "h0 has shape (8,); expected (1, 2, 8) (streams, layers, 2*m: h then c) or (2, 8)",
    ),
    ("lstm-no-c", "lstm", X, np.zeros((2, M)), ValueError, "h0 has shape (2, 4); expected (1, 2, 8)"),
    ("lstm-layers", "lstm", X, np.zeros((3, 2 * M)), ValueError, "h0 has shape (3, 8)"),
    ("lstm-transposed", "lstm", X, np.zeros((2 * M, 2)), ValueError, "h0 has shape (8, 2)"),
    (
        "lstm-batched-unbatched",
        "lstm",
        np.zeros((2, 3), int),
        np.zeros((2, 2 * M)),
        ValueError,
        "h0 has shape (2, 8); expected (2, 2, 8) (streams, layers, 2*m: h then c)",
    ),
    (
        "gru-fortran",
        "gru",
        X,
        np.asfortranarray(np.zeros((2, M))),
        ValueError,
        "h0 is not C-contiguous; pass np.ascontiguousarray(h0)",
    ),
    ("gru-strided", "gru", X, strided(np.zeros((2, M))), ValueError, "h0 is not C-contiguous"),
    ("gru-unaligned", "gru", X, unaligned(np.zeros((2, M))), ValueError, "h0 is not aligned in memory for its dtype"),
    ("gru-float32", "gru", X, np.zeros((2, M), np.float32), TypeError, "h0 has dtype float32; expected float64"),
    (
        "gru-0d",
        "gru",
        X,
        np.zeros(()),
        ValueError,
        "h0 has shape (); expected (1, 2, 4) (streams, layers, m) or (2, 4)",
    ),
    ("gru-scalar", "gru", X, 0.0, TypeError, "h0 must be a NumPy array of shape (1, 2, 4)"),
]


# evaluate_loss and sample take one stream; train_steps gets two streams from batch_size=2
H0_PARAMS = [
    pytest.param(case, fn, via, id=f"{case[0]}-{fn}-{via}")
    for case in H0_CASES
    for fn in FNS
    for via in VIAS
    if np.ndim(case[2]) == 1 or fn not in ("evaluate_loss", "sample")
]


@pytest.mark.parametrize("case,fn,via", H0_PARAMS)
def test_bad_h0(case, fn, via):
    _, kind, Xc, h0, exc, message = case
    kw = dict(batch_size=2) if np.ndim(Xc) == 2 and fn == "train_steps" else {}
    p = base_params(kind)
    state = init_opt_state(p)
    refuses(exc, message, lambda: call(fn, p, state, via=via, X=Xc, Y=Xc, h0=h0, **kw), p, state)


@pytest.mark.parametrize("shape", [(M,), (1, M), (1, 1, M)])
def test_one_stream_classic_h0_shapes_are_equivalent(shape):
    p = classic()
    h0 = np.linspace(-0.5, 0.5, M)
    ref = cx.loss_and_grads(p, X, Y, h0)
    got = cx.loss_and_grads(p, X, Y, h0.reshape(shape))
    assert got[0] == ref[0] and np.array_equal(got[2], ref[2])
    assert cx.evaluate_loss(p, DATA, h0.reshape(shape))[0] == cx.evaluate_loss(p, DATA, h0)[0]


# ================================================================ scalar arguments

# (id, functions, kwargs, exception, message); kwargs use the engine's names
SCALAR_CASES = [
    (
        "dropout-1",
        ("loss_and_grads", "train_step", "train_steps", "numerical_grads"),
        dict(dropout=1.0),
        ValueError,
        "dropout must be in [0, 1), got 1",
    ),
    (
        "dropout-negative",
        ("loss_and_grads", "train_step", "train_steps", "numerical_grads"),
        dict(dropout=-0.1),
        ValueError,
        "dropout must be in [0, 1), got -0.1",
    ),
    (
        "dropout-nan",
        ("loss_and_grads", "train_step", "train_steps", "numerical_grads"),
        dict(dropout=float("nan")),
        ValueError,
        "dropout must be in [0, 1), got nan",
    ),
    (
        "dropout-str",
        ("loss_and_grads", "train_step"),
        dict(dropout="0.5"),
        TypeError,
        "dropout must be a number, got str",
    ),
    (
        "dropout-bool",
        ("loss_and_grads", "train_steps"),
        dict(dropout=True),
        TypeError,
        "dropout must be a number, got bool",
    ),
    (
        "seed-negative",
        FNS[:3] + ("sample", "numerical_grads"),
        dict(seed=-3),
        ValueError,
        "seed must be an integer in [0, 2**64), got -3",
    ),
    (
        "seed-2**64",
        FNS[:3] + ("sample", "numerical_grads"),
        dict(seed=2**64),
        ValueError,
        "seed must be an integer in [0, 2**64), got 18446744073709551616",
    ),
    (
        "seed-str",
        ("loss_and_grads", "sample"),
        dict(seed="7"),
        TypeError,
        "seed must be an integer in [0, 2**64), got str",
    ),
    (
        "seed-float",
        ("train_step", "sample"),
        dict(seed=1.0),
        TypeError,
        "seed must be an integer in [0, 2**64), got float",
    ),
    (
        "seed-bool",
        ("train_steps", "sample"),
        dict(seed=True),
        TypeError,
        "seed must be an integer in [0, 2**64), got bool",
    ),
    (
        "update-negative",
        ("loss_and_grads", "numerical_grads"),
        dict(update=-1),
        ValueError,
        "update must be >= 0, got -1",
    ),
    (
        "update-huge",
        ("loss_and_grads", "numerical_grads"),
        dict(update=2**63),
        ValueError,
        "update is too large: 9223372036854775808",
    ),
    (
        "update-bool",
        ("loss_and_grads", "numerical_grads"),
        dict(update=True),
        TypeError,
        "update must be an integer, got bool",
    ),
    ("update-float", ("loss_and_grads",), dict(update=1.0), TypeError, "update must be an integer, got float"),
    (
        "threads-0",
        ("loss_and_grads", "train_step", "train_steps", "evaluate_loss", "sample"),
        dict(threads=0),
        ValueError,
        "threads must be >= 1, got 0",
    ),
    (
        "threads-257",
        ("loss_and_grads", "train_step", "train_steps", "evaluate_loss", "sample"),
        dict(threads=257),
        ValueError,
        "threads must be at most 256, got 257",
    ),
    (
        "threads-huge",
        ("train_step", "evaluate_loss"),
        dict(threads=2**64),
        ValueError,
        "threads is too large: 18446744073709551616",
    ),
    ("threads-negative", ("train_steps",), dict(threads=-2), ValueError, "threads must be >= 1, got -2"),
    (
        "threads-bool",
        ("loss_and_grads", "train_step", "train_steps", "evaluate_loss", "sample"),
        dict(threads=True),
        TypeError,
        "threads must be an integer, got bool",
    ),
    (
        "threads-float",
        ("loss_and_grads", "evaluate_loss", "sample"),
        dict(threads=2.0),
        TypeError,
        "threads must be an integer, got float",
    ),
    ("threads-None", ("train_steps",), dict(threads=None), TypeError, "threads must be an integer, got NoneType"),
    ("eta-0", TRAIN, dict(eta=0.0), ValueError, "eta must be a positive finite number, got 0"),
    ("eta-negative", TRAIN, dict(eta=-0.1), ValueError, "eta must be a positive finite number, got -0.1"),
    ("eta-nan", TRAIN, dict(eta=float("nan")), ValueError, "eta must be a positive finite number, got nan"),
    ("eta-inf", TRAIN, dict(eta=float("inf")), ValueError, "eta must be a positive finite number, got inf"),
    ("eta-str", TRAIN, dict(eta="0.1"), TypeError, "eta must be a number, got str"),
    ("eta-bool", TRAIN, dict(eta=True), TypeError, "eta must be a number, got bool"),
    ("clip-0", TRAIN, dict(clip=0.0), ValueError, "clip must be a positive finite number, got 0"),
    ("clip-inf", TRAIN, dict(clip=float("inf")), ValueError, "clip must be a positive finite number, got inf"),
    ("eps-negative", TRAIN, dict(eps=-1.0), ValueError, "eps must be a positive finite number, got -1"),
    ("eps-None", TRAIN, dict(eps=None), TypeError, "eps must be a number, got NoneType"),
    ("gamma-1", TRAIN, dict(gamma=1.0), ValueError, "gamma must be in [0, 1), got 1"),
    ("gamma-negative", TRAIN, dict(gamma=-0.1), ValueError, "gamma must be in [0, 1), got -0.1"),
    ("beta1-nan", TRAIN, dict(beta1=float("nan")), ValueError, "beta1 must be in [0, 1), got nan"),
    ("beta2-1", TRAIN, dict(beta2=1.0), ValueError, "beta2 must be in [0, 1), got 1"),
    ("beta2-str", TRAIN, dict(beta2="x"), TypeError, "beta2 must be a number, got str"),
    (
        "optimizer-unknown",
        TRAIN,
        dict(optimizer="sgd", eta=0.1),
        ValueError,
        "unknown optimizer 'sgd'; expected one of 'adagrad', 'rmsprop', 'adam'",
    ),
    ("optimizer-case", TRAIN, dict(optimizer="Adam", eta=0.1), ValueError, "unknown optimizer 'Adam'"),
    (
        "optimizer-int",
        TRAIN,
        dict(optimizer=1, eta=0.1),
        TypeError,
        "optimizer must be a string ('adagrad', 'rmsprop', 'adam'), got int",
    ),
    (
        "clip_mode-unknown",
        TRAIN,
        dict(clip_mode="global"),
        ValueError,
        "unknown clip_mode 'global'; expected one of 'elementwise', 'global_norm', 'none'",
    ),
    (
        "clip_mode-None",
        TRAIN,
        dict(clip_mode=None),
        TypeError,
        "clip_mode must be a string ('elementwise', 'global_norm', 'none'), got NoneType",
    ),
    ("clip_mode-bytes", TRAIN, dict(clip_mode=b"none"), TypeError, "clip_mode must be a string"),
    ("n_steps-negative", ("train_steps",), dict(n_steps=-1), ValueError, "n_steps must be >= 0, got -1"),
    ("n_steps-huge", ("train_steps",), dict(n_steps=2**63), ValueError, "n_steps is too large: 9223372036854775808"),
    ("n_steps-float", ("train_steps",), dict(n_steps=1.5), TypeError, "n_steps must be an integer, got float"),
    ("n_steps-bool", ("train_steps",), dict(n_steps=True), TypeError, "n_steps must be an integer, got bool"),
    ("n_steps-str", ("train_steps",), dict(n_steps="2"), TypeError, "n_steps must be an integer, got str"),
    ("seq_length-0", ("train_steps",), dict(seq_length=0), ValueError, "seq_length must be >= 1, got 0"),
    ("seq_length-bool", ("train_steps",), dict(seq_length=True), TypeError, "seq_length must be an integer, got bool"),
    (
        "seq_length-huge",
        ("train_steps",),
        dict(seq_length=2**62),
        ValueError,
        "data has 18 characters; a chunk needs seq_length + 1 = 4611686018427387905",
    ),
    (
        "batch_size-0",
        ("train_steps", "evaluate_loss"),
        dict(batch_size=0),
        ValueError,
        "batch_size must be >= 1, got 0",
    ),
    (
        "batch_size-bool",
        ("train_steps", "evaluate_loss"),
        dict(batch_size=True),
        TypeError,
        "batch_size must be an integer, got bool",
    ),
    (
        "batch_size-float",
        ("train_steps", "evaluate_loss"),
        dict(batch_size=2.0),
        TypeError,
        "batch_size must be an integer, got float",
    ),
    (
        "batch_size-huge",
        ("train_steps",),
        dict(batch_size=2**62),
        ValueError,
        "data has 18 characters, split into batch_size = 4611686018427387904 segments of 0; a chunk needs "
        "seq_length + 1 = 4 per segment",
    ),
    ("n-negative", ("sample",), dict(n=-1), ValueError, "n must be >= 0, got -1"),
    ("n-bool", ("sample",), dict(n=True), TypeError, "n must be an integer, got bool"),
    ("n-float", ("sample",), dict(n=5.0), TypeError, "n must be an integer, got float"),
    ("n-too-large", ("sample",), dict(n=2**63), ValueError, "n is too large: 9223372036854775808"),
    (
        "temperature-0",
        ("sample",),
        dict(temperature=0.0),
        ValueError,
        "temperature must be a positive finite number, got 0",
    ),
    (
        "temperature-negative-zero",
        ("sample",),
        dict(temperature=-0.0),
        ValueError,
        "temperature must be a positive finite number, got -0",
    ),
    (
        "temperature-negative",
        ("sample",),
        dict(temperature=-1.0),
        ValueError,
        "temperature must be a positive finite number, got -1",
    ),
    (
        "temperature-inf",
        ("sample",),
        dict(temperature=float("inf")),
        ValueError,
        "temperature must be a positive finite number, got inf",
    ),
    ("temperature-str", ("sample",), dict(temperature="1"), TypeError, "temperature must be a number, got str"),
    (
        "temperature-complex",
        ("sample",),
        dict(temperature=1 + 0j),
        TypeError,
        "temperature must be a number, got complex",
    ),
    ("temperature-bool", ("sample",), dict(temperature=True), TypeError, "temperature must be a number, got bool"),
    ("top_k-negative", ("sample",), dict(top_k=-1), ValueError, "top_k must be >= 0, got -1"),
    ("top_k-float", ("sample",), dict(top_k=1.5), TypeError, "top_k must be an integer, got float"),
    ("top_k-bool", ("sample",), dict(top_k=True), TypeError, "top_k must be an integer, got bool"),
    ("top_p-0", ("sample",), dict(top_p=0.0), ValueError, "top_p must be in (0, 1] (1 = off), got 0"),
    ("top_p-1.5", ("sample",), dict(top_p=1.5), ValueError, "top_p must be in (0, 1] (1 = off), got 1.5"),
    ("top_p-nan", ("sample",), dict(top_p=float("nan")), ValueError, "top_p must be in (0, 1] (1 = off), got nan"),
    ("top_p-str", ("sample",), dict(top_p="0.5"), TypeError, "top_p must be a number, got str"),
    ("greedy-int", ("sample",), dict(greedy=1), TypeError, "greedy must be a bool, got int"),
    ("greedy-None", ("sample",), dict(greedy=None), TypeError, "greedy must be a bool, got NoneType"),
    ("greedy-str", ("sample",), dict(greedy="yes"), TypeError, "greedy must be a bool, got str"),
    ("h-0", ("numerical_grads",), dict(h=0.0), ValueError, "h must be a positive finite number, got 0"),
    ("h-negative", ("numerical_grads",), dict(h=-1e-4), ValueError, "h must be a positive finite number, got -0.0001"),
    ("h-nan", ("numerical_grads",), dict(h=float("nan")), ValueError, "h must be a positive finite number, got nan"),
    ("h-bool", ("numerical_grads",), dict(h=True), TypeError, "h must be a number, got bool"),
    ("h-str", ("numerical_grads",), dict(h="1e-4"), TypeError, "h must be a number, got str"),
]
SCALAR_PARAMS = [
    pytest.param(case, fn, via, id=f"{case[0]}-{fn}-{via}") for case in SCALAR_CASES for fn in case[1] for via in VIAS
]


@pytest.mark.parametrize("case,fn,via", SCALAR_PARAMS)
def test_bad_scalars(case, fn, via):
    _, _, kw, exc, message = case
    p = network("lstm", 2)
    state = init_opt_state(p, kw["optimizer"] if kw.get("optimizer") in OPTIMIZERS else "adagrad")
    refuses(exc, message, lambda: call(fn, p, state, via=via, **kw), p, state)


def test_front_door_optimizer_without_eta():
    # eta None: the front door looks up the optimiser's default eta first.
    p = classic()
    state = init_opt_state(p)
    refuses(
        ValueError,
        "unknown optimizer 'sgd'; expected one of 'adagrad', 'rmsprop', 'adam'",
        lambda: cx.train_step(p, state, X, Y, optimizer="sgd"),
        p,
        state,
    )
    refuses(
        ValueError,
        "unknown optimizer 'sgd'",
        lambda: cx.train_steps(p, state, DATA, n_steps=1, optimizer="sgd"),
        p,
        state,
    )


@pytest.mark.parametrize("fn", TRAIN)
def test_unhashable_optimizer_is_refused_by_name(fn):
    """An optimizer that is not a string (a list, say) is refused as such, eta None or not."""
    p = classic()
    state = init_opt_state(p)
    refuses(TypeError, "optimizer", lambda: call(fn, p, state, optimizer=["adam"]), p, state)


@pytest.mark.parametrize(
    "fn,kw",
    [
        ("train_step", dict(eta=10**400)),
        ("train_steps", dict(clip=10**400)),
        ("train_step", dict(gamma=10**400)),
        ("sample", dict(temperature=10**400)),
        ("sample", dict(top_p=-(10**400))),
        ("loss_and_grads", dict(dropout=10**400)),
        ("numerical_grads", dict(h=10**400)),
        ("train_step", dict(eta=np.array([0.1, 0.2]))),
        ("sample", dict(n=np.array([1, 2]))),
        ("loss_and_grads", dict(threads=np.array([1, 2]))),
        ("sample", dict(seed=np.array([1, 2]))),
        ("train_steps", dict(n_steps=np.array([1, 2]))),
    ],
)
def test_unconvertible_numbers_are_named(fn, kw):
    """A number too large for float64, or an array of several numbers, is refused naming the argument."""
    name = next(iter(kw))
    p = classic()
    state = init_opt_state(p)
    with pytest.raises((TypeError, ValueError), match=rf"^{re.escape(name)} (must|is)"):
        call(fn, p, state, **kw)
    assert all(not v.any() for v in state.values())


@pytest.mark.parametrize("fn,kw", [("sample", dict(n=2**62)), ("train_steps", dict(n_steps=2**62))])
def test_huge_counts_name_the_argument(fn, kw):
    """Counts that size an output array (n, n_steps) are bounded (2**32 per call) and refused by name
    before anything is allocated."""
    name = next(iter(kw))
    p = classic()
    state = init_opt_state(p)
    extra = dict(seq_length=3) if fn == "train_steps" else {}
    refuses(ValueError, f"{name} ", lambda: call(fn, p, state, **extra, **kw), p, state)
    with pytest.raises(ValueError, match=rf"^{name} (must|is) "):
        call(fn, p, state, **extra, **kw)


def test_greedy_accepts_numpy_bools():
    """greedy accepts NumPy's bools as the previous API did."""
    p = network("gru", 2)
    expect, _ = cx.sample(p, None, [0], 20, greedy=True)
    try:
        got, _ = cx.sample(p, None, [0], 20, greedy=np.True_)
    except TypeError as e:
        assert not str(e).endswith("got bool"), str(e)  # "must be a bool, got bool" contradicts itself
    else:
        assert np.array_equal(got, expect)


def test_large_valid_scalars_are_accepted():
    p = network("rnn", 1)
    a = cx.loss_and_grads(p, X, Y, dropout=0.5, seed=2**64 - 1, update=2**63 - 1)
    b = cx.loss_and_grads(p, X, Y, dropout=0.5, seed=2**64 - 2, update=2**63 - 1)
    assert np.isfinite(a[0]) and a[0] != b[0]  # the seed is used
    out, _ = cx.sample(p, None, [0], 50, 1.0, np.uint64(2**64 - 1))
    assert np.array_equal(out, cx.sample(p, None, [0], 50, 1.0, 2**64 - 1)[0])
    assert cx.sample(p, None, [0], 3, np.float32(0.5), np.int8(3), top_k=np.int16(2))[0].shape == (3,)
    assert cx.evaluate_loss(p, DATA, batch_size=2**62, threads=np.int32(2))[0] > 0


# ================================================================ walks, texts and primes


def test_train_steps_data_and_positions():
    p = classic()
    s = init_opt_state(p)
    w = [p, s]
    refuses(
        ValueError,
        "data has 6 characters; a chunk needs seq_length + 1 = 7",
        lambda: cx.train_steps(p, s, np.arange(K), n_steps=1, seq_length=6),
        *w,
    )
    refuses(
        ValueError,
        "data has 18 characters, split into batch_size = 2 segments of 9; a chunk needs "
        "seq_length + 1 = 10 per segment",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=9, batch_size=2),
        *w,
    )
    refuses(
        ValueError,
        "pos = 19 is outside the text: offsets run from 0 to len(data) 18",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, pos=19),
        *w,
    )
    refuses(
        ValueError,
        "pos = -1 is outside the text",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, pos=-1),
        *w,
    )
    refuses(
        TypeError,
        "pos must be an integer, got bool",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, pos=True),
        *w,
    )
    refuses(
        TypeError,
        "pos must be an integer, got float",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, pos=1.5),
        *w,
    )
    refuses(
        ValueError,
        "positions[1] = 10 is outside its segment: offsets run from 0 to the segment length 9",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, batch_size=2, positions=[0, 10]),
        *w,
    )
    refuses(
        ValueError,
        "positions has shape (3,); expected (batch_size,) = (2,)",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, batch_size=2, positions=[0, 0, 0]),
        *w,
    )
    refuses(
        ValueError,
        "positions must be 1-D, got shape (1, 2)",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, batch_size=2, positions=[[0, 0]]),
        *w,
    )
    refuses(
        ValueError,
        "positions must be 1-D, got shape ()",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, batch_size=2, positions=0),
        *w,
    )
    refuses(
        TypeError,
        "positions must hold integer character indices, got dtype float64",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, batch_size=2, positions=[0.0, 1.0]),
        *w,
    )
    refuses(
        ValueError,
        "pos is for one stream; with batch_size > 1 give positions (one offset per stream)",
        lambda: cx.train_steps(p, s, DATA, n_steps=1, seq_length=3, batch_size=2, pos=1),
        *w,
    )
    refuses(
        IndexError,
        "data[3] = 9 is outside the vocabulary range [0, 6)",
        lambda: cx.train_steps(p, s, np.array([0, 1, 2, 9, 1, 1]), n_steps=2, seq_length=2),
        *w,
    )
    refuses(
        IndexError,
        "data[12] = -1 is outside the vocabulary range [0, 6)",
        lambda: cx.train_steps(
            p, s, np.r_[DATA[:12], -1, DATA[13:]], n_steps=1, seq_length=3, batch_size=2, positions=[0, 3]
        ),
        *w,
    )
    refuses(
        ValueError,
        "data must be 1-D, got shape (2, 9)",
        lambda: cx.train_steps(p, s, DATA.reshape(2, 9), n_steps=1, seq_length=3),
        *w,
    )
    refuses(
        TypeError,
        "data must hold integer character indices, got dtype float64",
        lambda: cx.train_steps(p, s, DATA.astype(float), n_steps=1, seq_length=3),
        *w,
    )
    refuses(
        TypeError,
        "data must be a 1-D array of integer character indices, got str",
        lambda: cx.train_steps(p, s, "abcdefgh", n_steps=1, seq_length=3),
        *w,
    )
    refuses(ValueError, "data is not C-contig", lambda: cx.train_steps(p, s, DATA[::2], n_steps=1, seq_length=3), *w)
    refuses(
        ValueError,
        "data is not aligned in memory for its dtype",
        lambda: cx.train_steps(p, s, unaligned(DATA.astype(np.int32)), n_steps=1, seq_length=3),
        *w,
    )
    refuses(
        ValueError,
        "h0 has shape (4,); expected (2, 1, 4) (streams, layers, m) or (2, 4)",
        lambda: cx.train_steps(p, s, DATA, np.zeros(M), n_steps=1, seq_length=3, batch_size=2),
        *w,
    )


def test_only_the_characters_a_walk_reads_are_checked():
    # Documented: the range check covers what this call reads; a walk that
    # stops early (or never starts) ignores bad characters further on.
    p = classic()
    s = init_opt_state(p)
    text = np.r_[np.arange(K), [99] * 12]
    losses, _, pos, wraps, diverged = cx.train_steps(p, s, text, n_steps=1, seq_length=3)
    assert losses.shape == (1,) and (pos, wraps, diverged) == (3, 0, False)
    losses, *_ = cx.train_steps(p, s, np.full(18, 99), n_steps=0, seq_length=3)
    assert losses.shape == (0,) and int(s["t"]) == 1
    # the tail beyond B segments is never read
    losses, _, pos, wraps, _ = cx.train_steps(p, s, np.r_[DATA, 99], n_steps=5, seq_length=3, batch_size=2)
    assert losses.shape == (5,) and pos.tolist() == [3, 3] and wraps.tolist() == [2, 2]
    # five chunks of 3 end at data[15]: data[17] is not read ...
    cx.train_steps(p, s, np.r_[DATA[:17], 99], n_steps=5, seq_length=3)
    # ... but a walk that may wrap checks its whole segment
    refuses(
        IndexError,
        "data[17] = 99 is outside the vocabulary range [0, 6)",
        lambda: cx.train_steps(p, s, np.r_[DATA[:17], 99], n_steps=6, seq_length=3),
        p,
        s,
    )


def test_evaluate_loss_arguments():
    p = network("gru", 2)
    refuses(ValueError, "data has 1 characters; the loss needs at least 2", lambda: cx.evaluate_loss(p, [1]))
    refuses(ValueError, "data has 0 characters; the loss needs at least 2", lambda: cx.evaluate_loss(p, []))
    refuses(IndexError, "data[1] = 6 is outside the vocabulary range [0, 6)", lambda: cx.evaluate_loss(p, [1, 6]))
    refuses(ValueError, "data must be 1-D, got shape (2, 3)", lambda: cx.evaluate_loss(p, np.zeros((2, 3), int)))
    refuses(
        TypeError,
        "data must be a 1-D array of integer character indices, got str (encode text with a Vocabulary first)",
        lambda: cx.evaluate_loss(p, "abc"),
    )
    refuses(
        ValueError,
        "h0 has shape (2, 2, 4); expected (1, 2, 4) (streams, layers, m) or (2, 4)",
        lambda: cx.evaluate_loss(p, DATA, np.zeros((2, 2, M))),
    )


def test_sample_prime():
    p = classic()
    refuses(
        ValueError, "prime is empty; give at least one character index to start from", lambda: cx.sample(p, None, [], 5)
    )
    refuses(IndexError, "prime[0] = 6 is outside the vocabulary range [0, 6)", lambda: cx.sample(p, None, [6], 5))
    refuses(IndexError, "prime[2] = -2 is outside", lambda: cx.sample(p, None, np.array([0, 1, -2], np.int8), 5))
    refuses(ValueError, "prime must be 1-D, got shape (1, 1)", lambda: cx.sample(p, None, [[0]], 5))
    refuses(
        TypeError, "prime must hold integer character indices, got dtype float64", lambda: cx.sample(p, None, [0.0], 5)
    )
    refuses(
        TypeError, "prime must be a 1-D array of integer character indices, got str", lambda: cx.sample(p, None, "a", 5)
    )
    refuses(
        ValueError,
        "h0 has shape (2, 4); expected (1, 1, 4) (streams, layers, m) or (1, 4)",
        lambda: cx.sample(p, np.zeros((2, M)), [0], 5),
    )
    out, _ = cx.sample(p, None, [0], 5, 1.0, 2**64 - 1)  # the largest seed is fine
    assert out.shape == (5,) and out.dtype == np.int32


@pytest.mark.parametrize(
    "dtype,temperature,smallest",
    [(np.float32, 1e-45, "2.93874e-39"), (np.float32, 1e-39, "2.93874e-39"), (np.float64, 5e-324, "5.56268e-309")],
)
@pytest.mark.parametrize("kind", ["classic", "lstm"])
def test_tiny_temperature_refused(dtype, temperature, smallest, kind):
    p = classic(dtype) if kind == "classic" else network("lstm", 2, dtype)
    refuses(
        ValueError,
        "is too small for the parameters' float type: 1/temperature overflows; the smallest "
        f"allowed is about {smallest}",
        lambda: cx.sample(p, None, [0], 5, temperature),
    )


def test_small_but_representable_temperature_works():
    p = classic(np.float32)
    p["c"][:] = np.arange(K)  # the most probable character is K - 1
    out, _ = cx.sample(p, None, [0], 5, 1e-30)
    assert out.tolist() == [K - 1] * 5


# ================================================================ the cell argument of the core and layout


@pytest.mark.parametrize("fn", FNS)
def test_core_cell_argument(fn):
    p = network("lstm", 2)
    state = init_opt_state(p)
    a = call(fn, p, state, via="core", cell="lstm")
    assert a is not None
    refuses(
        ValueError,
        "cell is 'gru' but the parameters describe a 'lstm' network",
        lambda: call(fn, p, state, via="core", cell="gru"),
        p,
        state,
    )
    refuses(
        ValueError,
        "unknown cell 'LSTM'; expected one of 'rnn', 'lstm', 'gru'",
        lambda: call(fn, p, state, via="core", cell="LSTM"),
        p,
        state,
    )
    refuses(
        TypeError,
        "cell must be a string ('rnn', 'lstm', 'gru'), got int",
        lambda: call(fn, p, state, via="core", cell=1),
        p,
        state,
    )
    c = classic()
    refuses(
        ValueError,
        "cell is 'lstm' but the parameters describe a 'rnn' network",
        lambda: call(fn, c, via="core", cell="lstm"),
    )


@pytest.mark.parametrize("fn", FNS)
def test_core_arguments_are_required_and_keyword_only(fn):
    p = classic()
    args = dict(CORE_DEFAULTS[fn])
    name = next(k for k in args if k != "cell")
    del args[name]
    f = getattr(_core, fn)
    positional = {
        "loss_and_grads": (p, X, Y, None),
        "train_step": (p, init_opt_state(p), X, Y, None),
        "train_steps": (p, init_opt_state(p), DATA, None),
        "evaluate_loss": (p, DATA, None),
        "sample": (p, None, [0]),
        "numerical_grads": (p, X, Y, None),
    }[fn]
    with pytest.raises(TypeError, match=rf"{fn}\(\): incompatible function arguments"):
        f(*positional, **args)
    with pytest.raises(TypeError, match=rf"{fn}\(\): incompatible function arguments"):
        f(*positional, *CORE_DEFAULTS[fn].values())


LAYOUT_CASES = [
    (("GRU", 2, 3, 1), ValueError, "unknown cell 'GRU'; expected one of 'rnn', 'lstm', 'gru'"),
    ((None, 2, 3, 1), TypeError, "cell must be a string ('rnn', 'lstm', 'gru'), got NoneType"),
    (("gru", 0, 3, 1), ValueError, "K must be >= 1, got 0"),
    (("gru", 2, 0, 1), ValueError, "m must be >= 1, got 0"),
    (("gru", 2, 3, 0), ValueError, "layers must be >= 1, got 0"),
    (("rnn", -1, 3, 1), ValueError, "K must be >= 1, got -1"),
    (("rnn", True, 3, 1), TypeError, "K must be an integer, got bool"),
    (("rnn", 2, 1.5, 1), TypeError, "m must be an integer, got float"),
    (("rnn", 2, 3, "2"), TypeError, "layers must be an integer, got str"),
    (("lstm", 2, 3, None), TypeError, "layers must be an integer, got NoneType"),
    (("lstm", 2**63, 3, 1), ValueError, "K is too large: 9223372036854775808"),
]


@pytest.mark.parametrize("args,exc,message", LAYOUT_CASES, ids=[str(c[0]) for c in LAYOUT_CASES])
def test_layout_arguments(args, exc, message):
    refuses(exc, message, lambda: _core.layout(*args))


def test_layout_numbers():
    assert _core.layout("gru", np.int64(2), 3, 2) == [
        ("l0.Wx", None, (9, 2)),
        ("l0.Wh", None, (9, 3)),
        ("l0.b", None, (9,)),
        ("l0.bh", None, (9,)),
        ("l1.Wx", None, (9, 3)),
        ("l1.Wh", None, (9, 3)),
        ("l1.b", None, (9,)),
        ("l1.bh", None, (9,)),
        ("V", None, (2, 3)),
        ("c", None, (2,)),
    ]
    assert _core.layout("rnn", 5, 4, 1) == [
        ("l0.Wx", "U", (4, 5)),
        ("l0.Wh", "W", (4, 4)),
        ("l0.b", "b", (4,)),
        ("V", "V", (5, 4)),
        ("c", "c", (5,)),
    ]
    assert tuple(_core.CELLS) == CELLS == ("rnn", "lstm", "gru")
    assert tuple(_core.OPTIMIZERS) == OPTIMIZERS == ("adagrad", "rmsprop", "adam")
    assert tuple(_core.CLIP_MODES) == CLIP_MODES == ("elementwise", "global_norm", "none")
    assert _core.simd_level() in ("avx512", "avx2", "baseline")
    with pytest.raises(TypeError, match="incompatible function arguments"):
        _core.simd_level(1)


@pytest.mark.parametrize("args", [("lstm", 1, 2**62, 1), ("gru", 3, 2**63 - 1, 1)])
def test_layout_sizes_are_bounded(args):
    """layout() bounds K (the Unicode code points), m (65536) and layers (64), so no product wraps."""
    with pytest.raises(ValueError, match=r"^m (must|is)"):
        _core.layout(*args)


def test_zero_hidden_size_of_a_network():
    """A network whose V has m = 0 is told that K and m must be at least 1."""
    p = {
        "l0.Wx": np.zeros((0, K)),
        "l0.Wh": np.zeros((0, 0)),
        "l0.b": np.zeros(0),
        "V": np.zeros((K, 0)),
        "c": np.zeros(K),
    }
    refuses(
        ValueError, "the vocabulary size K and the hidden size m must be at least 1", lambda: cx.loss_and_grads(p, X, Y)
    )


def test_python_side_initialisers_refuse_empty_networks():
    refuses(ValueError, "K, m and layers must be at least 1, got K=0, m=5, layers=1", lambda: cx.init_params(0, 5))
    refuses(ValueError, "K, m and layers must be at least 1, got K=3, m=2, layers=0", lambda: net_init("gru", 3, 2, 0))


# ================================================================ nothing partially applied


def _diverging_classic():
    p = cx.init_params(4, 3, seed=1)
    p["b"][:] = 10.0
    p["V"][0] = 1.7e308
    return p


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_non_finite_loss_changes_nothing(optimizer):
    p = _diverging_classic()
    s = init_opt_state(p, optimizer)
    s["t"][...] = 7
    refuses(
        ValueError,
        "the loss is not finite (",
        lambda: cx.train_step(p, s, [0, 1, 2], [1, 2, 3], optimizer=optimizer),
        p,
        s,
    )
    refuses(
        ValueError,
        "the step was not applied and the parameters are unchanged",
        lambda: cx.train_step(p, s, np.zeros((2, 3), int), np.ones((2, 3), int), optimizer=optimizer, dropout=0.2),
        p,
        s,
    )
    assert int(s["t"]) == 7


def _overflowing_gradient(dtype=np.float32):
    """A 1-unit RNN over 2 characters whose loss is finite but whose gradient
    is not: h = tanh(0.5) is far from saturation, the logits are +-9.2e37,
    the loss is 1.84e38, and dh = V^T (p - y) = 2e38 + 2e38 overflows float32
    (float64: V = +-1e308)."""
    big = 2e38 if dtype == np.float32 else 1e308
    p = net_init("rnn", 2, 1, 1, seed=0, dtype=dtype)
    p["l0.Wx"][:] = 0.0
    p["l0.Wh"][:] = 0.0
    p["l0.b"][:] = 0.5
    p["V"][:] = [[big], [-big]]
    p["c"][:] = 0.0
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_mode", CLIP_MODES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_finite_loss_with_a_non_finite_gradient_changes_nothing(optimizer, clip_mode, dtype):
    p = _overflowing_gradient(dtype)
    loss, grads, _ = cx.loss_and_grads(p, [0], [1])
    assert np.isfinite(loss) and not all(np.isfinite(g).all() for g in grads.values())
    s = init_opt_state(p, optimizer)
    kw = dict(optimizer=optimizer, clip_mode=clip_mode)
    refuses(
        ValueError,
        f"the gradient (or its global norm) is not finite (the loss is {loss:g}); "
        "the step was not applied and the parameters are unchanged",
        lambda: cx.train_step(p, s, [0], [1], **kw),
        p,
        s,
    )
    snaps = snapshot(p, s)
    losses, _, pos, wraps, diverged = cx.train_steps(p, s, np.array([0, 1, 0, 1]), n_steps=2, seq_length=1, **kw)
    assert diverged is True and losses.shape == (0,) and (pos, wraps) == (0, 0)
    assert_unchanged([p, s], snaps)


def test_diverged_wrap_step_leaves_walk_unchanged():
    p = _diverging_classic()
    s = init_opt_state(p)
    snaps = snapshot(p, s)
    data = np.arange(4).repeat(5)  # N = 20
    h0 = np.full(3, 0.25)
    losses, h, pos, wraps, diverged = cx.train_steps(p, s, data, h0, n_steps=3, seq_length=3, pos=18)
    assert diverged is True and losses.shape == (0,)
    assert (pos, wraps) == (18, 0) and np.array_equal(h, h0)
    assert_unchanged([p, s], snaps)


def test_diverged_wrap_step_leaves_batched_walk_unchanged():
    p = _diverging_classic()
    s = init_opt_state(p, "adam")
    snaps = snapshot(p, s)
    data = np.arange(4).repeat(10)  # 2 segments of 20
    h0 = np.full((2, 3), 0.25)
    losses, h, pos, wraps, diverged = cx.train_steps(
        p, s, data, h0, n_steps=3, seq_length=3, batch_size=2, positions=[18, 2], optimizer="adam", threads=2
    )
    assert diverged is True and losses.shape == (0,)
    assert pos.tolist() == [18, 2] and wraps.tolist() == [0, 0] and np.array_equal(h, h0)
    assert_unchanged([p, s], snaps)


def test_diverged_wrap_step_leaves_network_walk_unchanged():
    p = net_init("lstm", 4, 3, 2, seed=1)
    p["l1.b"][:] = 10.0
    p["V"][0] = 1.7e308
    s = init_opt_state(p, "rmsprop")
    snaps = snapshot(p, s)
    h0 = np.full((2, 6), 0.25)
    losses, h, pos, wraps, diverged = cx.train_steps(
        p, s, np.arange(4).repeat(5), h0, n_steps=3, seq_length=3, pos=18, optimizer="rmsprop", dropout=0.1
    )
    assert diverged is True and losses.shape == (0,) and (pos, wraps) == (18, 0) and np.array_equal(h, h0)
    assert_unchanged([p, s], snaps)


def test_divergence_after_good_steps_keeps_the_good_ones():
    # The walk stops before the first bad update: earlier updates stay applied, t counts them.
    p = classic()
    s = init_opt_state(p)
    losses, _, pos, _, diverged = cx.train_steps(p, s, DATA, n_steps=2, seq_length=3)
    assert not diverged and int(s["t"]) == 2 and pos == 6 and losses.shape == (2,)
    p["V"][0] = 1.7e308
    p["b"][:] = 10.0
    snaps = snapshot(p, s)
    losses, _, pos, _, diverged = cx.train_steps(p, s, DATA, n_steps=4, seq_length=3, pos=6)
    assert diverged is True and losses.shape == (0,) and pos == 6 and int(s["t"]) == 2
    assert_unchanged([p, s], snaps)


# ================================================================ concurrent mutation


def test_index_arrays_rewritten_during_a_call_do_not_crash():
    # Another thread writes out-of-range indices while the GIL is released:
    # the results are unspecified, but every index is re-checked as it is used.
    params = cx.init_params(50, 8, seed=0)
    state = init_opt_state(params)
    data = np.random.default_rng(0).integers(0, 50, 20000).astype(np.int64)
    stop = threading.Event()

    def vandal():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            idx = rng.integers(0, data.size, 64)
            data[idx] = rng.choice([-(2**40), 10**9, 50, -1], 64)

    t = threading.Thread(target=vandal)
    t.start()
    outcomes = set()
    try:
        for _ in range(10):
            for run in (
                lambda: cx.train_steps(params, state, data, n_steps=200, seq_length=25),
                lambda: cx.evaluate_loss(params, data[:5000]),
                lambda: cx.train_steps(params, state, data, n_steps=50, seq_length=25, batch_size=4, threads=2),
                lambda: cx.sample(params, None, data[:300], 10),
            ):
                try:
                    run()
                    outcomes.add("ok")
                except (IndexError, ValueError):
                    outcomes.add("refused")  # caught up front, or the walk diverged on garbage: both fine
    finally:
        stop.set()
        t.join()
    assert outcomes  # every call ended in one of the two ways
    assert all(np.all(np.isfinite(v)) for v in params.values())


# ---------------------------------------------------------------------------
# The update's options travel to the core as one mapping
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fn", TRAIN)
def test_the_options_mapping_is_read_whole_and_nothing_else(fn):
    p = classic()
    full = {k: v for k, v in OPT_DEFAULTS.items() if k in UPDATE_OPTIONS}
    assert set(full) == set(UPDATE_OPTIONS)  # the table and the tests agree on what an update reads
    rest = {k: v for k, v in CORE_DEFAULTS[fn].items() if k not in UPDATE_OPTIONS}
    chunk = (X, Y) if fn == "train_step" else (DATA,)

    def with_options(options):
        return lambda: getattr(_core, fn)(p, init_opt_state(p), *chunk, None, **rest, options=options)

    with_options(full)()  # the whole mapping is accepted
    p = classic()
    missing = {k: v for k, v in full.items() if k != "beta2"}
    refuses(ValueError, "options has no 'beta2' entry", with_options(missing), p)
    refuses(ValueError, "options has an unexpected entry 'momentum'", with_options({**full, "momentum": 0.9}), p)
    refuses(TypeError, "options must be a dict", with_options([("eta", 0.1)]), p)


def test_update_options_fills_defaults_and_the_optimisers_rate():
    from charrnn_ext.config import DEFAULT_ETA, default, update_options

    got = update_options({"optimizer": "adam", "clip": 1.0, "layers": 3})
    assert set(got) == set(UPDATE_OPTIONS)
    assert got["eta"] == DEFAULT_ETA["adam"] and got["clip"] == 1.0 and got["seed"] == default("seed")
    assert update_options({"optimizer": "adam", "eta": 0.5})["eta"] == 0.5
