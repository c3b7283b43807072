"""Gradient checks: analytic gradients (C++ and NumPy) against centred
differences, with the relative error

    |g_a - g_n| / max(eps, |g_a| + |g_n|)

summarised per parameter as its maximum and mean.

The numerical gradient (L(theta + h) - L(theta - h)) / 2h subtracts two
losses of about T ln K, so in float64 its rounding error is ~1e-14 / 2h,
which for h = 1e-4 is already 1e-6 of the smallest gradients of W and V. To
measure the analytic gradients rather than that noise, the losses for the
differences are evaluated by the reference forward pass in np.longdouble
(64-bit mantissa on x86-64); the remaining error is the O(h^2) truncation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import _core, reference, reference_nets
from .nets import net_init
from .params import PARAM_NAMES, copy_params, init_params

LossFn = Callable[[Mapping[str, np.ndarray]], float]


def extended_precision_loss(X, Y, h0=None) -> LossFn:
    """The loss of sequence (X, Y) as a function of the parameters, in np.longdouble."""
    def loss(params: Mapping[str, np.ndarray]) -> float:
        return reference.forward(params, X, Y, h0, dtype=np.longdouble)[0]
    return loss


def net_extended_precision_loss(cell: str, X, Y, h0=None) -> LossFn:
    """The loss of a general network (reference_nets) as a function of its parameters, in np.longdouble."""
    def loss(params: Mapping[str, np.ndarray]) -> float:
        return reference_nets.forward(cell, params, X, Y, h0, dtype=np.longdouble)[0]
    return loss


def numerical_grads(loss: LossFn, params: Mapping[str, np.ndarray], h: float = 1e-4,
                    names=None) -> dict[str, np.ndarray]:
    """Centred differences of loss for every entry of every parameter
    (names: the keys to differentiate and pass on; the vanilla five by default)."""
    if not h > 0:
        raise ValueError(f"h must be positive, got {h}")
    names = PARAM_NAMES if names is None else tuple(names)
    work = {k: np.array(params[k], dtype=np.longdouble, order="C", copy=True) for k in names}
    grads = {}
    for name in names:
        flat = work[name].reshape(-1)
        g = np.zeros(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = loss(work)
            flat[i] = old - h
            down = loss(work)
            flat[i] = old
            g[i] = float((up - down) / (2 * np.longdouble(h)))
        grads[name] = g.reshape(np.shape(params[name]))
    return grads


def relative_error(ga: np.ndarray, gn: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Elementwise |ga - gn| / max(eps, |ga| + |gn|)."""
    ga = np.asarray(ga, dtype=np.float64)
    gn = np.asarray(gn, dtype=np.float64)
    return np.abs(ga - gn) / np.maximum(eps, np.abs(ga) + np.abs(gn))


@dataclass
class GradCheckRow:
    name: str
    shape: tuple[int, ...]
    cpp_vs_numerical: tuple[float, float]  # (max, mean)
    numpy_vs_numerical: tuple[float, float]
    cpp_vs_numpy: tuple[float, float]


@dataclass
class GradCheckReport:
    K: int
    m: int
    T: int
    h: float
    eps: float
    rows: list[GradCheckRow] = field(default_factory=list)

    def worst(self) -> dict[str, float]:
        """Largest max-error over all parameters, per comparison."""
        return {
            "cpp_vs_numerical": max(r.cpp_vs_numerical[0] for r in self.rows),
            "numpy_vs_numerical": max(r.numpy_vs_numerical[0] for r in self.rows),
            "cpp_vs_numpy": max(r.cpp_vs_numpy[0] for r in self.rows),
        }

    def table(self) -> str:
        """A Markdown table of max / mean relative errors per parameter."""
        lines = [
            f"Gradient check: K={self.K}, m={self.m}, T={self.T}, centred differences with h={self.h:g}, "
            f"relative error |ga-gn|/max({self.eps:g}, |ga|+|gn|)",
            "",
            "| parameter | shape | C++ vs numerical (max / mean) | NumPy vs numerical (max / mean) "
            "| C++ vs NumPy (max / mean) |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows:
            cells = [f"{a:.2e} / {b:.2e}" for a, b in (r.cpp_vs_numerical, r.numpy_vs_numerical, r.cpp_vs_numpy)]
            lines.append(f"| {r.name} | {'x'.join(map(str, r.shape))} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _summary(err: np.ndarray) -> tuple[float, float]:
    return float(err.max()), float(err.mean())


def _compare(g_cpp, g_ref, g_num, params64, names, T: int, h: float, eps: float) -> GradCheckReport:
    """The report of three gradient sets over the parameters in names."""
    K, m = np.shape(params64["V"])
    report = GradCheckReport(K=int(K), m=int(m), T=T, h=h, eps=eps)
    for name in names:
        report.rows.append(GradCheckRow(
            name=name,
            shape=tuple(np.shape(params64[name])),
            cpp_vs_numerical=_summary(relative_error(g_cpp[name], g_num[name], eps)),
            numpy_vs_numerical=_summary(relative_error(g_ref[name], g_num[name], eps)),
            cpp_vs_numpy=_summary(relative_error(g_cpp[name], g_ref[name], eps)),
        ))
    return report


def check_gradients(params: Mapping[str, np.ndarray], X, Y, h0=None, h: float = 1e-4,
                    eps: float = 1e-12) -> GradCheckReport:
    """Compare the C++ float64 gradients, the NumPy reference and centred differences."""
    params64 = copy_params(params, dtype=np.float64)
    X = np.ascontiguousarray(X)
    Y = np.ascontiguousarray(Y)
    h0_64 = None if h0 is None else np.ascontiguousarray(h0, dtype=np.float64)
    _, g_cpp, _ = _core.loss_and_grads(params64, X, Y, h0_64)
    _, g_ref, _ = reference.loss_and_grads(params64, X, Y, h0_64)
    g_num = numerical_grads(extended_precision_loss(X, Y, h0_64), params64, h)
    return _compare(g_cpp, g_ref, g_num, params64, PARAM_NAMES, len(X), h, eps)


def check_net_gradients(cell: str, params: Mapping[str, np.ndarray], X, Y, h0=None, h: float = 1e-4,
                        eps: float = 1e-12) -> GradCheckReport:
    """check_gradients for a general network (rnn / lstm / gru stack): the C++
    float64 gradients of _core.net_loss_and_grads, the NumPy reference
    (reference_nets) and centred differences of the long-double loss."""
    params64 = {k: np.array(v, dtype=np.float64, order="C", copy=True) for k, v in params.items()}
    X = np.ascontiguousarray(X)
    Y = np.ascontiguousarray(Y)
    h0_64 = None if h0 is None else np.ascontiguousarray(h0, dtype=np.float64)
    _, g_cpp, _ = _core.net_loss_and_grads(cell, params64, X, Y, h0_64)
    _, g_ref, _ = reference_nets.loss_and_grads(cell, params64, X, Y, h0_64)
    g_num = numerical_grads(net_extended_precision_loss(cell, X, Y, h0_64), params64, h, names=tuple(params64))
    return _compare(g_cpp, g_ref, g_num, params64, tuple(params64), len(X), h, eps)


def gradient_check(data=None, K: int | None = None, m: int = 5, seq_length: int = 25, sig: float = 0.01,
                   seed: int = 0, h: float | None = None, eps: float = 1e-12, cell: str = "rnn",
                   layers: int = 1) -> GradCheckReport:
    """The standard check: fresh parameters (sigma = sig) and the first
    seq_length + 1 characters of data (an index array), or random characters
    from a K-letter alphabet when data is None.

    The classic model (cell="rnn", layers=1) is checked through the vanilla
    kernels with h = 1e-4; other networks through the network kernels with
    h = 1e-5, since gated cells have larger third derivatives and the O(h^2)
    truncation error of h = 1e-4 reaches ~7e-7 there."""
    rng = np.random.default_rng(seed)
    if data is None:
        K = 80 if K is None else K
        data = rng.integers(0, K, seq_length + 1)
    else:
        data = np.asarray(data)
        if data.ndim != 1 or len(data) < seq_length + 1:
            raise ValueError(f"data must be a 1-D index array with at least seq_length + 1 = "
                             f"{seq_length + 1} entries, got shape {data.shape}")
        K = int(data.max()) + 1 if K is None else K
    X, Y = data[:seq_length], data[1:seq_length + 1]
    if cell == "rnn" and layers == 1:
        return check_gradients(init_params(K, m, sig, seed=rng), X, Y, h=1e-4 if h is None else h, eps=eps)
    params = net_init(cell, K, m, layers, sig, seed=rng)
    return check_net_gradients(cell, params, X, Y, h=1e-5 if h is None else h, eps=eps)
