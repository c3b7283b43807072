"""Analytic gradients (C++ and NumPy) against centred differences."""
from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext.gradcheck import numerical_grads, relative_error


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_check_m5_T25(seed):
    report = cx.gradient_check(K=80, m=5, seq_length=25, sig=0.01, seed=seed)
    assert [r.name for r in report.rows] == ["U", "W", "V", "b", "c"]
    for row in report.rows:
        assert row.cpp_vs_numerical[0] <= 1e-6, row
        assert row.numpy_vs_numerical[0] <= 1e-6, row
        assert row.cpp_vs_numpy[0] <= 1e-10, row
    table = report.table()
    assert table.count("\n| ") == 6 and "C++ vs numerical" in table


def test_check_on_larger_weights_and_real_data():
    data = np.array([ord(ch) - 97 for ch in "the quick brown fox jumps over the lazy dog"]) % 26
    report = cx.gradient_check(data=data, K=26, m=8, seq_length=20, sig=0.3, seed=3)
    assert report.K == 26 and report.T == 20
    assert report.worst()["cpp_vs_numerical"] <= 1e-6


def test_numerical_gradient_of_a_known_function():
    params = {k: np.full(s, 0.5) for k, s in {"U": (1, 2), "W": (1, 1), "V": (2, 1), "b": (1,), "c": (2,)}.items()}

    def loss(p):  # sum of cubes: gradient 3 x^2
        return sum((v.astype(np.longdouble) ** 3).sum() for v in p.values())

    g = numerical_grads(loss, params, h=1e-4)
    for v in g.values():
        # centred differences of x^3 are exact up to h^2 = 1e-8
        assert np.allclose(v, 0.75, rtol=0, atol=2e-8)


def test_relative_error_definition():
    assert relative_error(np.array([1.0]), np.array([1.0]))[0] == 0.0
    assert relative_error(np.array([0.0]), np.array([0.0]))[0] == 0.0
    assert relative_error(np.array([1.0]), np.array([3.0]))[0] == pytest.approx(0.5)
    assert relative_error(np.array([1e-20]), np.array([0.0]), eps=1e-12)[0] == pytest.approx(1e-8)


def test_a_wrong_gradient_is_caught():
    # The check must be able to fail: corrupt one analytic gradient entry.
    from charrnn_ext import gradcheck, reference
    from charrnn_ext.params import init_params

    params = init_params(6, 4, seed=0)
    X, Y = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    _, g, _ = reference.loss_and_grads(params, X, Y)
    g["W"][1, 2] *= 1.001
    g_num = numerical_grads(gradcheck.extended_precision_loss(X, Y), params)
    assert relative_error(g["W"], g_num["W"]).max() > 1e-4
