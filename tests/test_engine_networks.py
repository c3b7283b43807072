"""rnn / lstm / gru stacks of 1-3 layers through the one C++ engine:
three-way gradient agreement (C++ analytic, the NumPy reference
charrnn_ext.reference_nets, centred differences of the C++ long-double loss)
for one stream and for B streams, with and without dropout; the dropout masks
(C++ against the NumPy replay reference_nets.dropout_keep, and both against
an independent transcription of cpp/dropout.hpp); dropout off where it must
be; an independent NumPy long-double centred-difference check; the state
carried between chunks; initialisation; bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import _core
from charrnn_ext import reference_nets as ref
from charrnn_ext.layout import STATES, net_init, param_shapes, state_shape, zero_state
from helpers import CELLS, max_rel_err, net_problem, spectral_radius

LAYERS = (1, 2, 3)

# C++ float64 against NumPy float64: the same expressions in double precision,
# summed in a different order; measured <= 3e-12 (elementwise, gradients).
TOL_NUMPY = 1e-10
# Analytic against centred differences with h = 1e-5 of the long-double loss.
# Two absolute errors separate them: the O(h^2) truncation, h^2/6 * L''' ~ 1e-11
# to 1e-10 (it scales exactly with h^2), and rounding, ~1e-19 * loss / h ~ 1e-12.
# Both are absolute, so an entry far smaller than its array's largest (the
# lower layers of a 3-layer stack get gradients ~1e-8) cannot be checked to
# 1e-6 of itself: its error is measured against 1e-3 of the array's scale
# instead (rel_err_floored). Measured over 216 cases (every cell, depth,
# batching and dropout, 6 seeds): <= 7.3e-8.
TOL_NUMERICAL = 1e-6
H_STEP = 1e-5


def rel_err_floored(a, b) -> float:
    """max |a - b| / max(|a| + |b|, 1e-3 * (max|a| + max|b|)), elementwise."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.abs(a).max() + np.abs(b).max()
    return max_rel_err(a, b, eps=max(1e-3 * scale, 1e-300))


def net_case(cell, K, m, layers, T, seed, streams=None, sig=0.15):
    """helpers.net_problem with C-contiguous X and Y (the engine refuses
    strided index arrays, and net_problem's (B, T) slices are strided)."""
    params, X, Y, h0 = net_problem(cell, K, m, layers, T, seed=seed, sig=sig, streams=streams)
    return params, np.ascontiguousarray(X), np.ascontiguousarray(Y), h0


# ---------------------------------------------------------------- three-way agreement


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("streams", [None, 3], ids=["single", "B3"])
@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.parametrize("cell", CELLS)
def test_three_way_gradient_agreement(cell, layers, streams, dropout):
    K, m, T = 6, 5, 10
    params, X, Y, h0 = net_case(cell, K, m, layers, T, seed=10 * layers + (streams or 0), streams=streams)
    assert spectral_radius(params, cell, m) < 1.0  # a contracting recurrence (see helpers.net_problem)
    drop = dict(dropout=dropout, seed=5, update=7)
    loss, grads, h = cx.loss_and_grads(params, X, Y, h0, **drop)
    loss_r, grads_r, h_r = ref.loss_and_grads(cell, params, X, Y, h0, **drop)
    g_num = cx.numerical_grads(params, X, Y, h0, h=H_STEP, **drop)
    expected_h = state_shape(cell, layers, m, streams)
    assert h.shape == expected_h and h_r.shape == expected_h
    assert max_rel_err(loss, loss_r) <= TOL_NUMPY
    assert max_rel_err(h, h_r) <= TOL_NUMPY
    assert set(grads) == set(grads_r) == set(g_num) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k].dtype == np.float64, k
        assert g_num[k].shape == params[k].shape, k
        assert max_rel_err(grads[k], grads_r[k]) <= TOL_NUMPY, k
        assert rel_err_floored(grads[k], g_num[k]) <= TOL_NUMERICAL, k
        assert rel_err_floored(grads_r[k], g_num[k]) <= TOL_NUMERICAL, k
    # The gradients are not trivially zero anywhere the comparison matters.
    assert all(np.abs(grads[k]).max() > 1e-4 for k in params)


def test_the_comparisons_can_fail():
    # The same machinery catches a gradient that is wrong in one entry by 0.1 %
    # and a chunk evaluated with other dropout masks.
    params, X, Y, h0 = net_case("lstm", 6, 5, 2, 10, seed=3)
    _, grads, _ = cx.loss_and_grads(params, X, Y, h0, dropout=0.3, seed=1)
    g_num = cx.numerical_grads(params, X, Y, h0, h=H_STEP, dropout=0.3, seed=1)
    i = np.unravel_index(np.argmax(np.abs(grads["l1.Wh"])), grads["l1.Wh"].shape)
    bad = grads["l1.Wh"].copy()
    bad[i] *= 1.001
    assert rel_err_floored(bad, g_num["l1.Wh"]) > 1e-4
    _, grads_other, _ = ref.loss_and_grads("lstm", params, X, Y, h0, dropout=0.3, seed=2)
    assert max(max_rel_err(grads[k], grads_other[k]) for k in params) > 1e-3


# ---------------------------------------------------------------- dropout masks

_G = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def _splitmix_finaliser(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def keep_from_the_spec(seed, update, stream, t, site, m, p):
    """cpp/dropout.hpp transcribed unit by unit in plain Python integers."""
    key = _splitmix_finaliser((seed + _G * (update + 1)) & _M64)
    for v in (stream, t, site):
        key = _splitmix_finaliser((key + _G * (v + 1)) & _M64)
    threshold = int(np.floor(p * 4294967296.0))
    out = []
    for k in range(m):
        bits = _splitmix_finaliser((key + _G * (k // 2 + 1)) & _M64)
        half = bits & 0xFFFFFFFF if k % 2 == 0 else bits >> 32
        out.append(half >= threshold)
    return np.array(out)


@pytest.mark.parametrize(
    "seed,update,stream,t,site,m,p",
    [
        (0, 0, 0, 0, 1, 7, 0.3),
        (12345, 3, 2, 9, 2, 10, 0.5),
        (2**63 + 5, 99, 0, 24, 3, 33, 0.1),
        (7, 2**40, 5, 0, 1, 1, 0.9),
        (1, 1, 1, 1, 1, 130, 0.25),
    ],
)
def test_dropout_keep_follows_the_spec(seed, update, stream, t, site, m, p):
    a = ref.dropout_keep(seed, update, stream, t, site, m, p)
    assert a.shape == (m,) and a.dtype == bool
    assert np.array_equal(a, keep_from_the_spec(seed, update, stream, t, site, m, p))


def test_dropout_keep_rate_and_independence():
    # 20000 units at p = 0.3: the kept fraction is 0.7 +- 3.2e-3 (one sigma);
    # 0.02 is > 6 sigma. Masks of different streams, positions, sites and
    # updates agree on about 0.7^2 + 0.3^2 = 58 % of units (never all).
    m, p = 20000, 0.3
    base = ref.dropout_keep(9, 4, 1, 2, 1, m, p)
    assert abs(base.mean() - 0.7) < 0.02
    for args in [(9, 5, 1, 2, 1), (9, 4, 2, 2, 1), (9, 4, 1, 3, 1), (9, 4, 1, 2, 2), (10, 4, 1, 2, 1)]:
        other = ref.dropout_keep(*args, m, p)
        assert abs(np.mean(other == base) - 0.58) < 0.03, args
    assert ref.dropout_keep(1, 2, 3, 4, 1, 100, 0.0).all()


def _output_mask_from_cpp(params, x, y, h0, *, dropout, seed, update, threads=1):
    """With T = 1 and one stream, column j of grad V is do * kept_j * h_j / (1 - p):
    it is exactly zero where unit j of the output layer's input was dropped."""
    _, grads, _ = cx.loss_and_grads(params, [x], [y], h0, dropout=dropout, seed=seed, update=update, threads=threads)
    return np.any(grads["V"] != 0, axis=0)


@pytest.mark.parametrize(
    "cell,layers,m,dtype,threads",
    [
        ("rnn", 1, 7, np.float64, 1),
        ("lstm", 2, 5, np.float64, 1),
        ("gru", 3, 9, np.float64, 1),
        ("rnn", 1, 100, np.float64, 2),
        ("lstm", 2, 130, np.float32, 2),
        ("gru", 1, 131, np.float32, 3),
    ],
)
def test_cpp_dropout_masks_are_the_numpy_replay(cell, layers, m, dtype, threads):
    # Odd m exercises the last unit pair; m > NR with several threads, the
    # panels the threads split the units into (API_NOTES: NR = 32 / 64).
    K = 5
    params, _, _, h0 = net_case(cell, K, m, layers, 1, seed=m, sig=0.5 / np.sqrt(m))
    params = {k: v.astype(dtype) for k, v in params.items()}
    h0 = h0.astype(dtype)
    _, _, h_top = cx.loss_and_grads(params, [2], [3], h0)
    assert np.all(h_top[layers - 1, :m] != 0)  # so a zero column can only come from the mask
    p = 0.4
    kept = 0
    cases = [(0, 0), (1, 0), (0, 1), (77, 123456), (2**40 + 3, 9)]
    for seed, update in cases:
        got = _output_mask_from_cpp(params, 2, 3, h0, dropout=p, seed=seed, update=update, threads=threads)
        want = ref.dropout_keep(seed, update, 0, 0, layers, m, p)  # site L: the output layer's input
        assert np.array_equal(got, want), (seed, update)
        kept += int(want.sum())
    assert 0 < kept < len(cases) * m  # some units were dropped, some kept


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_losses_match_the_replay_for_every_stream_position_and_site(cell):
    # Tiny shapes, three layers (sites 1, 2 and 3), three streams, four
    # positions: every (stream, t, site) mask enters the loss, and the C++ loss
    # equals the NumPy forward that replays dropout_keep. Replaying the wrong
    # stream or update gives a visibly different loss (so equality is no accident).
    K, m, L, T, B = 4, 3, 3, 4, 3
    params, X, Y, h0 = net_case(cell, K, m, L, T, seed=41, streams=B, sig=0.6)
    p, seed, update = 0.5, 11, 6
    loss, _, h = cx.loss_and_grads(params, X, Y, h0, dropout=p, seed=seed, update=update)
    per_stream = [
        float(ref.forward(cell, params, X[s], Y[s], h0[s], dropout=p, seed=seed, update=update, stream=s)[0])
        for s in range(B)
    ]
    assert max_rel_err(loss, sum(per_stream)) <= 1e-12
    for s in range(B):
        shifted = float(
            ref.forward(cell, params, X[s], Y[s], h0[s], dropout=p, seed=seed, update=update, stream=(s + 1) % B)[0]
        )
        assert abs(shifted - per_stream[s]) > 1e-6, s
        later = float(
            ref.forward(cell, params, X[s], Y[s], h0[s], dropout=p, seed=seed, update=update + 1, stream=s)[0]
        )
        assert abs(later - per_stream[s]) > 1e-6, s
    # Dropout does not act on the recurrent state: h is the dropped network's own state.
    _, _, h_r = ref.loss_and_grads(cell, params, X, Y, h0, dropout=p, seed=seed, update=update)
    assert max_rel_err(h, h_r) <= 1e-12


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_changes_the_loss_and_is_off_in_evaluate_loss_and_sample(cell):
    K, m, L, T = 7, 6, 2, 30
    params, X, Y, h0 = net_case(cell, K, m, L, T, seed=51, sig=0.4)
    data = np.concatenate([X, Y[-1:]])
    plain, _, h_plain = cx.loss_and_grads(params, X, Y, h0)
    dropped, _, h_dropped = cx.loss_and_grads(params, X, Y, h0, dropout=0.5, seed=1)
    dropped2, _, _ = cx.loss_and_grads(params, X, Y, h0, dropout=0.5, seed=2)
    assert abs(dropped - plain) > 1e-3 * plain and abs(dropped2 - dropped) > 1e-3 * plain
    assert not np.allclose(h_plain, h_dropped)  # layer 1 reads a dropped layer 0
    # dropout = 0 is exactly the plain pass, whatever seed and update say.
    same, _, _ = cx.loss_and_grads(params, X, Y, h0, dropout=0.0, seed=9, update=4)
    assert same == plain
    # evaluate_loss is the plain forward pass (no masks, no 1/(1-p) scaling).
    ev, h_ev = cx.evaluate_loss(params, data, h0)
    ev_r, h_ev_r = ref.evaluate_loss(cell, params, data, h0)
    assert max_rel_err(ev, plain) <= 1e-12 and max_rel_err(h_ev, h_plain) <= 1e-12
    assert max_rel_err(ev, ev_r) <= TOL_NUMPY and max_rel_err(h_ev, h_ev_r) <= TOL_NUMPY
    # sample: greedy decoding follows the plain network's argmax, step by step,
    # and the state it returns is the plain network's.
    prime = [1, 4, 2]
    out, h_s = cx.sample(params, h0, prime, 25, greedy=True)
    state = h0.copy()
    for x in prime:
        probs, state = ref.next_char_distribution(cell, params, state, x)
    want = []
    for _ in range(25):
        nxt = int(np.argmax(probs))
        want.append(nxt)
        probs, state = ref.next_char_distribution(cell, params, state, nxt)
    assert out.tolist() == want
    # sample's state has read the prime and every drawn character but the last.
    state_check = h0.copy()
    for x in prime + want[:-1]:
        _, state_check = ref.next_char_distribution(cell, params, state_check, x)
    assert h_s.shape == state_check.shape
    assert max_rel_err(h_s, state_check) <= TOL_NUMPY


# ---------------------------------------------------------------- an independent numerical check


def _numpy_centred_differences(cell, params, X, Y, h0, h, **drop):
    """(L(p + h e_i) - L(p - h e_i)) / 2h for every entry, each loss from the
    NumPy reference's forward pass in long double (not the C++ engine)."""
    wide = {k: v.astype(np.longdouble) for k, v in params.items()}
    out = {}
    for k, v in wide.items():
        g = np.zeros(v.shape)
        for i in np.ndindex(v.shape):
            old = v[i]
            v[i] = old + h
            lp = ref.forward(cell, wide, X, Y, h0, dtype=np.longdouble, **drop)[0]
            v[i] = old - h
            lm = ref.forward(cell, wide, X, Y, h0, dtype=np.longdouble, **drop)[0]
            v[i] = old
            g[i] = float((lp - lm) / (2 * np.longdouble(h)))
        out[k] = g
    return out


@pytest.mark.parametrize("cell,dropout", [("rnn", 0.0), ("lstm", 0.0), ("gru", 0.0), ("lstm", 0.4), ("gru", 0.4)])
def test_independent_numpy_long_double_centred_differences(cell, dropout):
    if np.finfo(np.longdouble).eps > 1e-18:
        pytest.skip("long double is plain double on this platform")  # x86-64 Linux: 80-bit, eps 1.1e-19
    K, m, L, T = 3, 2, 2, 4
    params, X, Y, h0 = net_case(cell, K, m, L, T, seed=61, sig=0.5)
    drop = dict(dropout=dropout, seed=3, update=2)
    g_np = _numpy_centred_differences(cell, params, X, Y, h0, H_STEP, **drop)
    _, g_cpp, _ = cx.loss_and_grads(params, X, Y, h0, **drop)
    g_cpp_num = cx.numerical_grads(params, X, Y, h0, h=H_STEP, **drop)
    for k in params:
        assert np.abs(g_np[k]).max() > 1e-3, k
        assert rel_err_floored(g_cpp[k], g_np[k]) <= TOL_NUMERICAL, k
        # Two evaluations of the same centred differences in long double: only
        # rounding (~1e-19 * loss / h ~ 1e-13 absolute) separates them.
        assert np.abs(g_cpp_num[k] - g_np[k]).max() <= 1e-10, k


# ---------------------------------------------------------------- state, init, shapes


@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_across_chunks(cell):
    # Two chunks with the state handed over == the loss of the whole text.
    params, _, _, h0 = net_case(cell, K=7, m=6, layers=2, T=5, seed=4)
    data = np.random.default_rng(5).integers(0, 7, 301)
    l1, _, h1 = cx.loss_and_grads(params, data[:150], data[1:151], h0)
    l2, _, h2 = cx.loss_and_grads(params, data[150:300], data[151:301], h1)
    le, he = cx.evaluate_loss(params, data, h0)
    assert max_rel_err(l1 + l2, le) <= 1e-12
    assert max_rel_err(h2, he) <= 1e-12
    lr_, hr = ref.evaluate_loss(cell, params, data, h0)
    assert max_rel_err(le, lr_) <= TOL_NUMPY and max_rel_err(he, hr) <= TOL_NUMPY
    # and the state matters: from zeros the loss is different.
    l0, _ = cx.evaluate_loss(params, data)
    assert abs(l0 - le) > 1e-9


@pytest.mark.parametrize("cell", CELLS)
def test_h0_none_means_zeros(cell):
    params, X, Y, _ = net_case(cell, 6, 4, 2, 8, seed=6)
    a = cx.loss_and_grads(params, X, Y)
    b = cx.loss_and_grads(params, X, Y, zero_state(params))
    assert a[0] == b[0] and np.array_equal(a[2], b[2])
    assert all(np.array_equal(a[1][k], b[1][k]) for k in params)


def test_init_shapes_and_forget_bias():
    p = net_init("lstm", K=11, m=4, layers=2, forget_bias=1.0, dtype=np.float32)
    assert {k: v.shape for k, v in p.items()} == param_shapes("lstm", 11, 4, 2)
    assert param_shapes("lstm", 11, 4, 2)["l1.Wx"] == (16, 4) and param_shapes("lstm", 11, 4, 2)["l0.Wx"] == (16, 11)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in p.values())
    for l in range(2):
        b = p[f"l{l}.b"]
        assert np.all(b[4:8] == 1.0) and np.all(b[:4] == 0) and np.all(b[8:] == 0)
    g = net_init("gru", K=5, m=3, layers=1)
    assert set(g) == {"l0.Wx", "l0.Wh", "l0.b", "l0.bh", "V", "c"}
    assert g["l0.Wh"].shape == (9, 3)
    assert zero_state(p).shape == (2, 8) and zero_state(p).dtype == np.float32
    assert zero_state(p, streams=3).shape == (3, 2, 8)
    assert STATES == {"rnn": 1, "lstm": 2, "gru": 1}
    with pytest.raises(ValueError, match="unknown cell"):
        net_init("transformer", 5, 3)


@pytest.mark.parametrize("shape", [(1, 2, 8), (2, 8)])
def test_h0_shapes_accepted_for_one_stream(shape):
    # API_NOTES: (B, L, S*m), and (L, S*m) when B = 1.
    params, X, Y, h0 = net_case("lstm", 6, 4, 2, 5, seed=8)
    loss, _, h = cx.loss_and_grads(params, X, Y, h0.reshape(shape))
    want, _, _ = ref.loss_and_grads("lstm", params, X, Y, h0)
    assert h.shape == (2, 8) and max_rel_err(loss, want) <= TOL_NUMPY


# ---------------------------------------------------------------- bad inputs


def _small(cell="lstm", layers=2):
    return net_case(cell, K=6, m=4, layers=layers, T=5, seed=8)


def _core_lag(params, X, Y, h0=None, cell=None):
    return _core.loss_and_grads(params, X, Y, h0, cell=cell, dropout=0.0, seed=0, update=0, threads=1, precision="full")


def test_bad_cell_name():
    params, X, Y, _ = _small()
    with pytest.raises(ValueError, match="unknown cell 'lstn'; expected one of 'rnn', 'lstm', 'gru'"):
        _core_lag(params, X, Y, cell="lstn")
    with pytest.raises(TypeError, match="cell must be a string"):
        _core_lag(params, X, Y, cell=3)
    with pytest.raises(ValueError, match="cell is 'gru' but the parameters describe a 'lstm' network"):
        _core_lag(params, X, Y, cell="gru")
    assert _core_lag(params, X, Y, cell="lstm")[0] == _core_lag(params, X, Y)[0]


def test_missing_layer_key_and_extras():
    params, X, Y, _ = _small()
    p = dict(params)
    del p["l1.Wh"]
    with pytest.raises(ValueError, match=r"params has no 'l1.Wh' entry"):
        cx.loss_and_grads(p, X, Y)
    g, *_ = _small("gru")
    del g["l0.bh"]
    with pytest.raises(ValueError, match=r"params has no 'l0.bh' entry"):
        cx.loss_and_grads(g, X, Y)
    g, *_ = _small("rnn")
    g["l0.bh"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"unexpected entry 'l0\.bh'"):
        cx.loss_and_grads(g, X, Y)
    p = dict(params)
    p["l3.Wx"] = params["l1.Wx"]  # a gap: l2 missing
    with pytest.raises(ValueError, match=r"unexpected entry 'l3\.Wx'"):
        cx.loss_and_grads(p, X, Y)
    p = dict(params)
    p["extra"] = params["c"].copy()
    with pytest.raises(ValueError, match="unexpected entry 'extra'"):
        cx.loss_and_grads(p, X, Y)
    p = dict(params)
    del p["V"]
    with pytest.raises(ValueError, match="params has no 'V' entry"):
        cx.loss_and_grads(p, X, Y)
    with pytest.raises(ValueError, match=r"no 'l0\.Wx' entry"):
        cx.loss_and_grads({"V": params["V"], "c": params["c"]}, X, Y)
    with pytest.raises(TypeError, match="must be a dict"):
        cx.loss_and_grads([1, 2], X, Y)


def test_shape_dtype_contiguity_finiteness():
    params, X, Y, _ = _small()
    p = dict(params)
    p["l1.Wh"] = np.zeros((16, 5))
    with pytest.raises(ValueError, match=r"params\['l1.Wh'\] has shape \(16, 5\); expected \(16, 4\)"):
        cx.loss_and_grads(p, X, Y)
    p = dict(params)
    p["l0.Wx"] = np.zeros((12, 6))  # rnn-sized for an lstm
    with pytest.raises(ValueError, match=r"expected \(16, 6\) for a 'lstm' network"):
        cx.loss_and_grads(p, X, Y)
    p = dict(params)
    p["l0.b"] = params["l0.b"].astype(np.float32)
    with pytest.raises(TypeError, match=r"params\['l0.b'\] has dtype float32; expected float64"):
        cx.loss_and_grads(p, X, Y)
    p = dict(params)
    p["V"] = params["V"].astype(np.int64)
    with pytest.raises(TypeError, match="float64 or float32"):
        cx.loss_and_grads(p, X, Y)
    p = dict(params)
    p["l0.Wh"] = np.asfortranarray(params["l0.Wh"])
    with pytest.raises(ValueError, match="not C-contiguous"):
        cx.loss_and_grads(p, X, Y)
    p = dict(params)
    p["c"] = params["c"].copy()
    p["c"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cx.loss_and_grads(p, X, Y)


def test_bad_state_indices_and_dropout():
    params, X, Y, h0 = _small()
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 4\); expected \(1, 2, 8\)"):
        cx.loss_and_grads(params, X, Y, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 8\); expected \(2, 2, 8\)"):
        cx.loss_and_grads(params, np.stack([X, X]), np.stack([Y, Y]), h0)
    with pytest.raises(TypeError, match="h0 has dtype float32"):
        cx.loss_and_grads(params, X, Y, h0.astype(np.float32))
    with pytest.raises(IndexError, match=r"Y\[0\] = 6 is outside the vocabulary range \[0, 6\)"):
        cx.loss_and_grads(params, X, np.full(5, 6))
    with pytest.raises(IndexError, match="outside the vocabulary"):
        cx.loss_and_grads(params, np.full(5, -1), Y)
    with pytest.raises(ValueError, match="same shape"):
        cx.loss_and_grads(params, X, Y[:3])
    with pytest.raises(ValueError, match="at least 2"):
        cx.evaluate_loss(params, np.array([1]))
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            cx.loss_and_grads(params, X, Y, dropout=p)
    with pytest.raises(ValueError, match=r"h must be a positive finite number"):
        cx.numerical_grads(params, X, Y, h=0.0)
