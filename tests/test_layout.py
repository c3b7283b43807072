"""charrnn_ext.layout: parameter names and shapes per cell and layer count,
initialisation, the classic <-> network rename, optimiser state and states."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn_ext import _core, engine, layout
from charrnn_ext.layout import (
    CLASSIC_NAMES,
    GATES,
    PARAM_NAMES,
    STATES,
    copy_params,
    describe,
    from_classic,
    init_opt_state,
    init_params,
    n_params,
    net_init,
    param_shapes,
    state_shape,
    to_classic,
    zero_state,
    zeros_like_params,
)
from helpers import CELLS

SHAPES = [(cell, layers) for cell in CELLS for layers in (1, 2, 3)]


def _expected_shapes(cell: str, K: int, m: int, layers: int) -> dict[str, tuple[int, ...]]:
    """The layout written out from its definition (layout.py's docstring)."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    out: dict[str, tuple[int, ...]] = {}
    for l in range(layers):
        out[f"l{l}.Wx"] = (G * m, K if l == 0 else m)
        out[f"l{l}.Wh"] = (G * m, m)
        out[f"l{l}.b"] = (G * m,)
        if cell == "gru":
            out[f"l{l}.bh"] = (G * m,)
    out["V"] = (K, m)
    out["c"] = (K,)
    return out


@pytest.mark.parametrize("cell, layers", SHAPES)
def test_param_shapes_are_the_cores_layout(cell, layers):
    K, m = 7, 5
    shapes = param_shapes(cell, K, m, layers)
    core = _core.layout(cell, K, m, layers)
    assert [(n, tuple(s)) for n, _, s in core] == list(shapes.items())  # same names, shapes and order
    assert shapes == _expected_shapes(cell, K, m, layers)
    assert list(shapes) == list(_expected_shapes(cell, K, m, layers))
    assert n_params(cell, K, m, layers) == sum(int(np.prod(s)) for s in shapes.values())
    # only the one-layer rnn has classic aliases
    aliases = {n: a for n, a, _ in core if a}
    if (cell, layers) == ("rnn", 1):
        assert aliases == {"l0.Wx": "U", "l0.Wh": "W", "l0.b": "b", "V": "V", "c": "c"}
    else:
        assert aliases == {}


def test_param_count_numbers():
    # rnn: U 5x7 + W 5x5 + b 5 + V 7x5 + c 7 = 35 + 25 + 5 + 35 + 7
    assert n_params("rnn", 7, 5, 1) == 107
    # gru, 2 layers: l0 15x7 + 15x5 + 15 + 15, l1 15x5 + 15x5 + 15 + 15, V 35, c 7
    assert n_params("gru", 7, 5, 2) == 105 + 75 + 30 + 75 + 75 + 30 + 35 + 7
    assert n_params("lstm", 7, 5, 1) == 20 * 7 + 20 * 5 + 20 + 35 + 7


def test_param_shapes_refuses_unknown_cell():
    with pytest.raises(ValueError, match="unknown cell 'tanh'; expected one of 'rnn', 'lstm', 'gru'"):
        param_shapes("tanh", 5, 3)


def test_classic_names():
    assert PARAM_NAMES == ("U", "W", "V", "b", "c")
    assert CLASSIC_NAMES == {"U": "l0.Wx", "W": "l0.Wh", "b": "l0.b", "V": "V", "c": "c"}
    assert GATES == {"rnn": 1, "lstm": 4, "gru": 3} and STATES == {"rnn": 1, "lstm": 2, "gru": 1}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 123])
def test_init_params_is_the_one_layer_rnn_of_net_init(seed, dtype):
    K, m, sig = 9, 6, 0.05
    classic = init_params(K, m, sig, seed=seed, dtype=dtype)
    net = net_init("rnn", K, m, 1, sig=sig, seed=seed, dtype=dtype)
    assert tuple(classic) == PARAM_NAMES
    want = to_classic(net)
    assert set(want) == set(PARAM_NAMES)
    for k in PARAM_NAMES:
        assert classic[k].dtype == dtype and classic[k].flags.c_contiguous
        assert np.array_equal(classic[k], want[k]), k
    assert classic["U"].shape == (m, K) and classic["W"].shape == (m, m) and classic["V"].shape == (K, m)
    assert not classic["b"].any() and not classic["c"].any()
    # a Generator seeded alike draws the same numbers
    gen = init_params(K, m, sig, seed=np.random.default_rng(seed), dtype=dtype)
    assert all(np.array_equal(gen[k], classic[k]) for k in PARAM_NAMES)
    assert not np.array_equal(init_params(K, m, sig, seed=seed + 1)["W"], classic["W"].astype(np.float64))


@pytest.mark.parametrize("cell, layers", SHAPES)
def test_net_init_draws_every_matrix_in_core_order(cell, layers):
    K, m, sig, seed = 6, 4, 0.3, 5
    params = net_init(cell, K, m, layers, sig=sig, seed=seed, forget_bias=2.5)
    rng = np.random.default_rng(seed)
    assert list(params) == list(param_shapes(cell, K, m, layers))
    for name, shape in param_shapes(cell, K, m, layers).items():
        a = params[name]
        assert a.shape == shape and a.dtype == np.float64, name
        if len(shape) == 2:
            np.testing.assert_array_equal(a, sig * rng.standard_normal(shape))
        elif cell == "lstm" and name.endswith(".b"):
            # gate order i, f, g, o: only the forget block starts at forget_bias
            want = np.zeros(shape)
            want[m : 2 * m] = 2.5
            np.testing.assert_array_equal(a, want)
        else:
            assert not a.any(), name


def test_net_init_statistics_and_refusals():
    p = net_init("gru", 50, 40, 1, sig=0.02, seed=0)
    assert abs(np.std(p["l0.Wh"]) - 0.02) < 0.002 and abs(np.mean(p["l0.Wh"])) < 0.002
    assert net_init("lstm", 5, 3, sig=0.0)["l0.Wx"].any() == 0
    with pytest.raises(ValueError, match=r"K, m and layers must be at least 1, got K=5, m=0, layers=1"):
        net_init("rnn", 5, 0)
    with pytest.raises(ValueError, match="layers must be at least 1"):
        net_init("lstm", 5, 3, 0)
    with pytest.raises(ValueError, match=r"sig must be a non-negative finite number, got -0\.1"):
        net_init("rnn", 5, 3, sig=-0.1)
    with pytest.raises(ValueError, match="sig must be a non-negative finite number, got nan"):
        net_init("rnn", 5, 3, sig=float("nan"))
    with pytest.raises(ValueError, match="forget_bias must be finite"):
        net_init("lstm", 5, 3, forget_bias=float("inf"))
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int64"):
        net_init("rnn", 5, 3, dtype=np.int64)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got float16"):
        init_params(5, 3, dtype=np.float16)
    with pytest.raises(ValueError, match="unknown cell"):
        net_init("LSTM", 5, 3)


def test_from_classic_and_to_classic_round_trip():
    classic = init_params(5, 3, seed=2)
    net = from_classic(classic)
    assert list(net) == ["l0.Wx", "l0.Wh", "V", "l0.b", "c"]
    for old, new in CLASSIC_NAMES.items():
        assert net[new] is classic[old]  # the same arrays, renamed
    back = to_classic(net)
    assert list(back) == list(PARAM_NAMES) and all(back[k] is classic[k] for k in PARAM_NAMES)
    # already-renamed dicts pass through unchanged (the same arrays under the same names)
    for same, orig in ((from_classic(net), net), (to_classic(back), back)):
        assert list(same) == list(orig) and all(same[k] is orig[k] for k in orig)
    # networks other than the one-layer rnn have no classic names: from_classic leaves them alone
    lstm = net_init("lstm", 5, 3, 2)
    same = from_classic(lstm)
    assert list(same) == list(lstm) and all(same[k] is lstm[k] for k in lstm)


def test_to_classic_refuses_networks_without_classic_names():
    """to_classic refuses networks other than the one-layer rnn: renaming a one-layer LSTM would give
    arrays with the classic names and the wrong shapes."""
    for cell, layers in (("lstm", 1), ("gru", 1), ("rnn", 2)):
        params = net_init(cell, 5, 3, layers)
        with pytest.raises(ValueError):
            renamed = to_classic(params)
            pytest.fail(f"to_classic({cell} x {layers}) gave {list(renamed)}, described as {describe(renamed)}")


@pytest.mark.parametrize("cell, layers", SHAPES)
def test_describe_every_network(cell, layers):
    for dtype in (np.float64, np.float32):
        params = net_init(cell, 11, 4, layers, dtype=dtype)
        assert describe(params) == (cell, 11, 4, layers)
    if (cell, layers) == ("rnn", 1):
        assert describe(to_classic(params)) == ("rnn", 11, 4, 1)


def test_describe_refuses_unknown_gate_count():
    bad = {
        "l0.Wx": np.zeros((6, 5)),
        "l0.Wh": np.zeros((6, 3)),
        "l0.b": np.zeros(6),
        "V": np.zeros((5, 3)),
        "c": np.zeros(5),
    }
    with pytest.raises(ValueError, match=r"l0.Wh has 6 rows; expected G\*m with G in 1, 4, 3, m = 3"):
        describe(bad)


@pytest.mark.parametrize("optimizer, slots", [("adagrad", ("M",)), ("rmsprop", ("M",)), ("adam", ("m", "v"))])
@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("lstm", 2), ("gru", 1)])
def test_init_opt_state_slots_and_counter(optimizer, slots, cell, layers):
    params = net_init(cell, 6, 4, layers, dtype=np.float32)
    state = init_opt_state(params, optimizer)
    assert set(state) == {f"{s}:{n}" for n in params for s in slots} | {"t"}
    assert list(state)[-1] == "t"
    for n, a in params.items():
        for s in slots:
            z = state[f"{s}:{n}"]
            assert z.shape == a.shape and z.dtype == np.float32 and not z.any()
            assert not np.shares_memory(z, a)
    t = state["t"]
    assert t.shape == () and t.dtype == np.int64 and int(t) == 0
    # the core updates the counter in place, one per update
    rng = np.random.default_rng(0)
    data = rng.integers(0, 6, 40)
    engine.train_step(params, state, data[:10], data[1:11], optimizer=optimizer)
    assert state["t"] is t and int(t) == 1
    engine.train_steps(params, state, data, n_steps=3, seq_length=5, optimizer=optimizer)
    assert int(state["t"]) == 4
    assert any(state[f"{slots[-1]}:{n}"].any() for n in params)


def test_init_opt_state_classic_names_and_refusal():
    classic = init_params(5, 3, seed=0)
    assert set(init_opt_state(classic)) == {f"M:{k}" for k in PARAM_NAMES} | {"t"}
    assert set(init_opt_state(classic, "adam")) == {f"{s}:{k}" for k in PARAM_NAMES for s in "mv"} | {"t"}
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; expected one of 'adagrad', 'rmsprop', 'adam'"):
        init_opt_state(classic, "sgd")


@pytest.mark.parametrize("cell, layers", SHAPES)
def test_zero_state_and_state_shape(cell, layers):
    m = 5
    params = net_init(cell, 7, m, layers, dtype=np.float32)
    S = 2 if cell == "lstm" else 1
    one, many = zero_state(params), zero_state(params, 3)
    assert one.shape == (layers, S * m) == state_shape(cell, layers, m)
    assert many.shape == (3, layers, S * m) == state_shape(cell, layers, m, 3)
    assert one.dtype == many.dtype == np.float32 and not one.any() and not many.any()
    # the core's final state has the same shape
    _, _, h = engine.loss_and_grads(params, [1, 2, 3], [2, 3, 4], one)
    assert h.shape == one.shape
    _, _, hb = engine.loss_and_grads(params, [[1, 2], [3, 4], [5, 6]], [[2, 3], [4, 5], [6, 0]], many)
    assert hb.shape == many.shape


def test_zero_state_classic_names():
    classic = init_params(7, 5, seed=0)
    assert zero_state(classic).shape == (5,) and zero_state(classic, 4).shape == (4, 5)
    assert zero_state(classic).dtype == np.float64
    with pytest.raises(ValueError, match="unknown cell"):
        state_shape("vanilla", 1, 5)


def test_classic_and_network_names_give_the_same_numbers():
    """The kernels accept either set of names and answer in the set they were given."""
    rng = np.random.default_rng(1)
    classic = init_params(6, 4, 0.3, seed=rng)
    h0 = np.tanh(rng.standard_normal(4))
    X, Y = rng.integers(0, 6, 9), rng.integers(0, 6, 9)
    loss_c, grads_c, h_c = engine.loss_and_grads(classic, X, Y, h0)
    loss_n, grads_n, h_n = engine.loss_and_grads(from_classic(classic), X, Y, h0.reshape(1, 4))
    assert loss_c == loss_n and set(grads_c) == set(PARAM_NAMES) and set(grads_n) == set(CLASSIC_NAMES.values())
    for old, new in CLASSIC_NAMES.items():
        assert np.array_equal(grads_c[old], grads_n[new])
    assert h_c.shape == (4,) and h_n.shape == (1, 4) and np.array_equal(h_c, h_n[0])


def test_copy_and_zeros_like():
    params = net_init("gru", 5, 3, 2)
    cp = copy_params(params)
    assert list(cp) == list(params)
    for k, a in params.items():
        assert np.array_equal(cp[k], a) and not np.shares_memory(cp[k], a) and cp[k].flags.c_contiguous
    f32 = copy_params(params, np.float32)
    assert all(a.dtype == np.float32 for a in f32.values())
    np.testing.assert_array_equal(f32["l1.Wh"], params["l1.Wh"].astype(np.float32))
    cp["V"][0, 0] += 1.0
    assert cp["V"][0, 0] != params["V"][0, 0]
    z = zeros_like_params(params)
    assert list(z) == list(params) and all(z[k].shape == params[k].shape and not z[k].any() for k in z)
    # layout's public names are importable from the package
    assert set(layout.__all__) >= {
        "param_shapes",
        "net_init",
        "init_params",
        "from_classic",
        "to_classic",
        "describe",
        "init_opt_state",
        "zero_state",
        "state_shape",
    }
