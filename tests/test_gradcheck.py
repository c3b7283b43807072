"""charrnn_ext.gradcheck: check_gradients / gradient_check (C++ analytic,
NumPy reference and centred differences of the C++ long-double loss) for the
classic RNN and the networks, with dropout and streams; the report and its
table; the numerical gradients against closed forms."""

from __future__ import annotations

import re

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import reference
from charrnn_ext.gradcheck import GradCheckReport, check_gradients, gradient_check, relative_error
from charrnn_ext.layout import PARAM_NAMES, init_params, net_init
from helpers import net_problem

# The report's relative error is |ga - gn| / max(1e-12, |ga| + |gn|) per entry.
# C++ vs NumPy: the same expressions in float64, measured <= 1e-12.
# Analytic vs numerical (h = 1e-4 classic, 1e-5 networks, losses in long double):
# the O(h^2) truncation, measured <= 5e-7 on these shapes (API_NOTES: <= 1e-6
# for m = 5-ish shapes whose recurrence contracts).
TOL_NUMPY = 1e-10
TOL_NUMERICAL = 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_check_m5_T25(seed):
    report = cx.gradient_check(K=80, m=5, seq_length=25, sig=0.01, seed=seed)
    assert isinstance(report, GradCheckReport)
    assert (report.cell, report.layers, report.K, report.m, report.T, report.streams) == ("rnn", 1, 80, 5, 25, 1)
    assert report.h == 1e-4 and report.dropout == 0.0
    # Rows in the core's order (layout: l0.Wx, l0.Wh, l0.b, V, c under their classic names).
    assert [r.name for r in report.rows] == ["U", "W", "b", "V", "c"]
    for row in report.rows:
        assert row.cpp_vs_numerical[0] <= TOL_NUMERICAL, row
        assert row.numpy_vs_numerical[0] <= TOL_NUMERICAL, row
        assert row.cpp_vs_numpy[0] <= TOL_NUMPY, row
        assert row.cpp_vs_numerical[1] <= row.cpp_vs_numerical[0]  # (max, mean)
    table = report.table()
    assert table.count("\n| ") == 6 and "C++ vs numerical" in table


def test_check_on_larger_weights_and_real_data():
    data = np.array([ord(ch) - 97 for ch in "the quick brown fox jumps over the lazy dog"]) % 26
    report = cx.gradient_check(data=data, K=26, m=8, seq_length=20, sig=0.3, seed=3)
    assert report.K == 26 and report.T == 20
    worst = report.worst()
    assert worst["cpp_vs_numerical"] <= TOL_NUMERICAL
    assert worst["numpy_vs_numerical"] <= TOL_NUMERICAL
    assert worst["cpp_vs_numpy"] <= TOL_NUMPY
    with pytest.raises(ValueError, match="at least seq_length \\+ 1 = 21"):
        cx.gradient_check(data=data[:20], K=26, m=8, seq_length=20)


@pytest.mark.parametrize("streams", [None, 3], ids=["single", "B3"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_check_gradients_networks(cell, layers, dropout, streams):
    # Contracting weights with non-zero biases (helpers.net_problem), the
    # network names, dropout masks replayed by the NumPy reference, B streams.
    params, X, Y, h0 = net_problem(cell, K=7, m=5, layers=layers, T=12, seed=3 * layers, streams=streams)
    report = check_gradients(params, X, Y, h0, dropout=dropout, seed=4, update=2)
    assert (report.cell, report.layers, report.K, report.m, report.T) == (cell, layers, 7, 5, 12)
    assert report.streams == (streams or 1) and report.dropout == dropout
    assert report.h == (1e-4 if (cell, layers) == ("rnn", 1) else 1e-5)
    assert [r.name for r in report.rows] == list(params)
    worst = report.worst()
    table = report.table()
    assert worst["cpp_vs_numpy"] <= TOL_NUMPY, table
    assert worst["cpp_vs_numerical"] <= TOL_NUMERICAL, table
    assert worst["numpy_vs_numerical"] <= TOL_NUMERICAL, table


@pytest.mark.parametrize("dropout,streams", [(0.3, None), (0.0, 3), (0.3, 3)])
def test_check_gradients_classic_with_dropout_and_streams(dropout, streams):
    # The classic names go through the network reference (renamed both ways).
    rng = np.random.default_rng(8)
    params = init_params(9, 6, sig=0.3, seed=rng)
    shape = (12,) if streams is None else (streams, 12)
    X, Y = rng.integers(0, 9, shape), rng.integers(0, 9, shape)
    h0 = 0.5 * np.tanh(rng.standard_normal((*shape[:-1], 6)))
    report = check_gradients(params, X, Y, h0, dropout=dropout, seed=1)
    assert sorted(r.name for r in report.rows) == sorted(PARAM_NAMES)
    assert (report.cell, report.layers, report.streams) == ("rnn", 1, streams or 1)
    worst = report.worst()
    assert worst["cpp_vs_numpy"] <= TOL_NUMPY and worst["cpp_vs_numerical"] <= TOL_NUMERICAL, report.table()
    assert worst["numpy_vs_numerical"] <= TOL_NUMERICAL, report.table()


def test_float32_params_are_checked_in_float64():
    params, X, Y, h0 = net_problem("gru", K=6, m=4, layers=1, T=8, seed=2)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    report = check_gradients(p32, X, Y, h0.astype(np.float32))
    worst = report.worst()
    assert worst["cpp_vs_numpy"] <= TOL_NUMPY and worst["cpp_vs_numerical"] <= TOL_NUMERICAL


def test_report_table_lists_every_row_and_its_numbers():
    params, X, Y, h0 = net_problem("lstm", K=6, m=4, layers=2, T=6, seed=5, streams=2)
    report = check_gradients(params, X, Y, h0, dropout=0.2, seed=3)
    table = report.table()
    header = table.splitlines()[0]
    for part in ("lstm, 2 layer(s)", "K=6", "m=4", "T=6", "2 streams", "dropout 0.2", "h=1e-05", "long double"):
        assert part in header, part
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| parameter")]
    assert len(rows) == len(params)
    for line, row in zip(rows, report.rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row.name
        assert cells[1] == "x".join(map(str, row.shape))
        numbers = [float(x) for x in re.findall(r"\d\.\d\de[+-]\d\d", line)]
        want = [*row.cpp_vs_numerical, *row.numpy_vs_numerical, *row.cpp_vs_numpy]
        assert len(numbers) == 6
        assert np.allclose(numbers, want, rtol=6e-3, atol=0)  # printed with 3 significant digits
    # The classic table has no network prefix.
    classic = cx.gradient_check(K=5, m=3, seq_length=4).table()
    assert "layer(s)" not in classic.splitlines()[0] and "streams" not in classic.splitlines()[0]


def test_numerical_gradients_match_closed_forms():
    # T = 1: a = W h0 + U[:, x] + b, h = tanh(a), p = softmax(V h + c),
    # L = -log p[y]. Then dL/dc = p - e_y, dL/dV = (p - e_y) h^T,
    # dL/da = (1 - h^2) V^T (p - e_y) = dL/db = dL/dU[:, x], dL/dW = dL/da h0^T
    # and the other columns of U get nothing. The centred differences (h = 1e-4)
    # carry a truncation error h^2/6 * L''' <= ~1e-9 (L''' is O(1) here).
    rng = np.random.default_rng(0)
    params = init_params(4, 3, sig=0.7, seed=rng)
    params["b"][:] = [0.1, -0.2, 0.3]
    params["c"][:] = [0.5, 0.0, -0.5, 0.2]
    h0 = np.array([0.3, -0.6, 0.2])
    x, y = 2, 1
    a = params["W"] @ h0 + params["U"][:, x] + params["b"]
    h = np.tanh(a)
    o = params["V"] @ h + params["c"]
    p = np.exp(o - o.max())
    p /= p.sum()
    do = p.copy()
    do[y] -= 1
    da = (1 - h**2) * (params["V"].T @ do)
    dU = np.zeros_like(params["U"])
    dU[:, x] = da
    closed = {"U": dU, "W": np.outer(da, h0), "V": np.outer(do, h), "b": da, "c": do}
    num = cx.numerical_grads(params, [x], [y], h0)
    for k in PARAM_NAMES:
        assert np.abs(closed[k]).max() > 1e-3, k
        assert np.allclose(num[k], closed[k], rtol=0, atol=1e-8), k
    assert np.all(num["U"][:, [0, 1, 3]] == 0)  # columns that never enter the loss: exactly zero


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_numerical_gradients_do_not_depend_on_the_threads(cell):
    """The centred differences are shared out entry by entry: 2, 3 and 64
    workers (more than some arrays have entries) give one worker's values bit
    for bit, and the check's report is the same."""
    params = net_init(cell, 6, 4, 2, 0.3, seed=1)
    rng = np.random.default_rng(2)
    X, Y = rng.integers(0, 6, (2, 5)), rng.integers(0, 6, (2, 5))
    one = cx.numerical_grads(params, X, Y, threads=1)
    for threads in (2, 3, 64):
        many = cx.numerical_grads(params, X, Y, threads=threads)
        for k in one:
            assert np.array_equal(one[k], many[k]), (threads, k)
    assert np.abs(np.concatenate([v.ravel() for v in one.values()])).max() > 1e-3
    a = cx.gradient_check(cell=cell, layers=2, seed=0, threads=1).table()
    assert cx.gradient_check(cell=cell, layers=2, seed=0, threads=2).table() == a


def test_relative_error_definition():
    assert relative_error(np.array([1.0]), np.array([1.0]))[0] == 0.0
    assert relative_error(np.array([0.0]), np.array([0.0]))[0] == 0.0
    assert relative_error(np.array([1.0]), np.array([3.0]))[0] == pytest.approx(0.5)
    assert relative_error(np.array([-1.0]), np.array([1.0]))[0] == pytest.approx(1.0)
    assert relative_error(np.array([1e-20]), np.array([0.0]), eps=1e-12)[0] == pytest.approx(1e-8)


def test_a_wrong_gradient_is_caught():
    # The check must be able to fail: corrupt one analytic gradient entry by 0.1 %.
    params = init_params(6, 4, sig=0.3, seed=0)
    X, Y = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    _, g, _ = reference.loss_and_grads(params, X, Y)
    g_num = cx.numerical_grads(params, X, Y)
    assert relative_error(g["W"], g_num["W"]).max() <= TOL_NUMERICAL
    i = np.unravel_index(np.argmax(np.abs(g["W"])), g["W"].shape)
    g["W"][i] *= 1.001
    assert relative_error(g["W"], g_num["W"]).max() > 1e-4


# ---------------------------------------------------------------- known problem (failing)


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("gru", 1), ("lstm", 2)])
def test_gradient_check_defaults_pass_for_networks(cell, layers):
    # `charrnn gradcheck --cell lstm` (CLI defaults: hidden 5, seq_length 25,
    # seed 0, tolerance 1e-6) and the gradcheck.md the Trainer writes into
    # every run folder call gradient_check with its default sig = 0.01. For
    # the classic RNN that passes (test_standard_check_m5_T25); for gated
    # cells and deeper stacks the gradients of the lower layers and of the
    # recurrent gate blocks are ~1e-12..1e-7, at the ~1e-12 absolute noise
    # floor of the centred differences, so the elementwise relative error
    # reaches 1e-5..1 and the check reports FAIL although the analytic
    # gradients are right (C++ and NumPy agree to 1e-12, and at sig = 0.15 the
    # same check passes: test_check_gradients_networks).
    report = gradient_check(cell=cell, layers=layers, seed=0)
    assert report.worst()["cpp_vs_numpy"] <= TOL_NUMPY  # the gradients themselves are right
    assert report.worst()["cpp_vs_numerical"] <= TOL_NUMERICAL, report.table()
