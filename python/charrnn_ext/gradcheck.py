"""Gradient checks: the C++ analytic gradients, the NumPy reference's and
centred differences must agree. The relative error

    |g_a - g_n| / max(eps, |g_a| + |g_n|)

is summarised per parameter as its maximum and mean. For networks other
than the classic RNN the floor eps is 1e-3 of the parameter's largest
numerical gradient (:data:`NET_FLOOR`): through gates and stacked layers
some entries are 1e-6 of the largest or less, and for those the O(h^2)
truncation error of the differences, not the analytic gradient, would set
the relative error. An analytic error of more than 1e-9 of the array's scale
still shows.

The centred differences (L(theta + h) - L(theta - h)) / 2h are computed by
the C++ engine with the losses in long double (:func:`charrnn_ext.engine.numerical_grads`):
in float64 the difference of two losses of about T ln K would carry ~1e-14 / 2h
of rounding noise, 1e-6 of the smallest gradients at h = 1e-4. What is left
is the O(h^2) truncation error. The NumPy references are
:mod:`charrnn_ext.reference` (the classic RNN, with its U, W, V, b, c names)
and :mod:`charrnn_ext.reference_nets` (every network).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import engine, reference, reference_nets
from .config import default
from .layout import copy_params, describe, from_classic, n_params, net_init, to_classic

__all__ = ["GradCheckReport", "GradCheckRow", "check_gradients", "gradient_check", "relative_error"]


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
    cell: str
    layers: int
    K: int
    m: int
    T: int
    streams: int
    dropout: float
    h: float
    eps: float
    floor: float = 0.0  # eps per parameter: max(eps, floor * its largest |numerical gradient|)
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
        net = f"{self.cell}, {self.layers} layer(s), " if (self.cell, self.layers) != ("rnn", 1) else ""
        extra = (f", {self.streams} streams" if self.streams > 1 else "") + (
            f", dropout {self.dropout:g}" if self.dropout > 0 else ""
        )
        lines = [
            f"Gradient check: {net}K={self.K}, m={self.m}, T={self.T}{extra}; centred differences with "
            f"h={self.h:g} (losses in long double); relative error |ga-gn|/max(eps, |ga|+|gn|) with eps = "
            + (f"{self.floor:g} x the parameter's largest |gradient|" if self.floor else f"{self.eps:g}"),
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


#: The networks' floor of the relative error, as a fraction of a parameter's largest gradient.
NET_FLOOR = 1e-3


def check_gradients(
    params: Mapping[str, np.ndarray],
    X,
    Y,
    h0=None,
    h: float | None = None,
    eps: float = 1e-12,
    *,
    dropout: float = default("dropout"),
    seed: int = default("seed"),
    update: int = 0,
    floor: float | None = None,
    threads: int = default("threads"),
) -> GradCheckReport:
    """Compare the C++ float64 gradients, the NumPy reference and centred
    differences on the chunk X -> Y ((T,) or (B, T)). ``floor`` None is 0
    for the classic RNN and :data:`NET_FLOOR` for other networks. ``h`` None
    is 1e-4 for the classic RNN and 1e-5 for other networks (gated cells have larger
    third derivatives; at 1e-4 the truncation error reaches ~7e-7 there).
    ``threads`` share the centred differences (the result does not depend on it)."""
    params64 = copy_params(params, dtype=np.float64)
    cell, K, m, layers = describe(params64)
    X = np.ascontiguousarray(X)
    Y = np.ascontiguousarray(Y)
    h0_64 = None if h0 is None else np.ascontiguousarray(h0, dtype=np.float64)
    if h is None:
        h = 1e-4 if (cell, layers) == ("rnn", 1) else 1e-5
    if floor is None:
        floor = 0.0 if (cell, layers) == ("rnn", 1) else NET_FLOOR
    drop: dict[str, Any] = {"dropout": dropout, "seed": seed, "update": update}
    _, g_cpp, _ = engine.loss_and_grads(params64, X, Y, h0_64, **drop)
    g_num = engine.numerical_grads(params64, X, Y, h0_64, h=h, threads=threads, **drop)
    classic = "U" in params64
    if classic and X.ndim == 1 and dropout == 0:
        _, g_ref, _ = reference.loss_and_grads(params64, X, Y, h0_64)
    else:  # the network reference, with the classic names renamed both ways
        state = h0_64 if h0_64 is None or not classic else h0_64.reshape(*X.shape[:-1], 1, -1)
        _, g_net, _ = reference_nets.loss_and_grads(cell, from_classic(params64), X, Y, state, **drop)
        g_ref = to_classic(g_net) if classic else g_net
    report = GradCheckReport(
        cell=cell,
        layers=layers,
        K=K,
        m=m,
        T=int(X.shape[-1]),
        streams=int(X.shape[0]) if X.ndim == 2 else 1,
        dropout=float(dropout),
        h=float(h),
        eps=eps,
        floor=floor,
    )
    for name in params64:
        e = max(eps, floor * float(np.max(np.abs(g_num[name]), initial=0.0)))
        report.rows.append(
            GradCheckRow(
                name=name,
                shape=tuple(np.shape(params64[name])),
                cpp_vs_numerical=_summary(relative_error(g_cpp[name], g_num[name], e)),
                numpy_vs_numerical=_summary(relative_error(g_ref[name], g_num[name], e)),
                cpp_vs_numpy=_summary(relative_error(g_cpp[name], g_ref[name], e)),
            )
        )
    return report


#: Weight scale and bias spread of the networks' standard check. At the
#: training initialisation (weights ~ N(0, 0.01^2), biases 0) the gradients
#: of gated and lower layers are ~1e-12..1e-7: at the noise floor of the
#: centred differences, so their relative error would measure that noise.
NET_CHECK_SIG, NET_CHECK_BIAS = 0.15, 0.2


#: Multiply-adds per second of the numerical gradient (forward passes in long
#: double): 1-3e8 measured; the low end, so that time estimates are not short.
NUMERICAL_RATE = 2e8
#: The longest numerical gradient ``charrnn gradcheck`` accepts (seconds).
COMMAND_CHECK_SECONDS = 50.0
#: The longest a run's own check (gradcheck.md) may take with the run's
#: vocabulary; above it the check uses the characters of its data alone. The
#: classic RNN (0.2 s at 80 characters) keeps its vocabulary; a 2-layer LSTM
#: (1 s there) takes 0.2 s with the data's 26, which keeps a short run short.
RUN_CHECK_SECONDS = 0.5


def numerical_work(cell: str, K: int, m: int, layers: int, seq_length: int) -> float:
    """About how many multiply-adds the numerical gradient takes: two forward
    passes over seq_length + 1 characters (about P each) for each of the P
    parameters."""
    P = n_params(cell, K, m, layers)
    return 2.0 * P * P * (seq_length + 1)


def numerical_seconds(cell: str, K: int, m: int, layers: int, seq_length: int) -> float:
    """About how long the numerical gradient takes, at :data:`NUMERICAL_RATE`."""
    return numerical_work(cell, K, m, layers, seq_length) / NUMERICAL_RATE


def gradient_check(
    data=None,
    K: int | None = None,
    m: int = 5,
    seq_length: int = default("seq_length"),
    sig: float | None = None,
    seed: int = default("seed"),
    h: float | None = None,
    eps: float = 1e-12,
    cell: str = default("cell"),
    layers: int = default("layers"),
    dropout: float = default("dropout"),
    threads: int = default("threads"),
) -> GradCheckReport:
    """The standard check on the first seq_length + 1 characters of data (an
    index array), or random characters from a K-letter alphabet when data is
    None. The classic RNN (with its U, W, V, b, c names) is checked at its
    training initialisation (sig None: 0.01); other networks at weights of
    scale sig (None: NET_CHECK_SIG) with biases ~ N(0, NET_CHECK_BIAS^2).
    ``threads`` share the centred differences (the report does not depend on it)."""
    rng = np.random.default_rng(seed)
    if data is None:
        K = 80 if K is None else K
        data = rng.integers(0, K, seq_length + 1)
    else:
        data = np.asarray(data)
        if data.ndim != 1 or len(data) < seq_length + 1:
            raise ValueError(
                f"data must be a 1-D index array with at least seq_length + 1 = "
                f"{seq_length + 1} entries, got shape {data.shape}"
            )
        K = int(data.max()) + 1 if K is None else K
    X, Y = data[:seq_length], data[1 : seq_length + 1]
    classic = (cell, layers) == ("rnn", 1)
    if sig is None:
        sig = 0.01 if classic else NET_CHECK_SIG
    params = net_init(cell, K, m, layers, sig, seed=rng)
    if classic:
        params = to_classic(params)
    else:
        for v in params.values():
            if v.ndim == 1:
                v += NET_CHECK_BIAS * rng.standard_normal(v.shape)
    return check_gradients(params, X, Y, h=h, eps=eps, dropout=dropout, seed=seed, threads=threads)
