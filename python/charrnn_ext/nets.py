"""Parameters and optimiser state of the general networks (rnn / lstm / gru stacks).

A network is a flat dict of C-contiguous arrays, all of one float dtype. With
G gate blocks per cell (rnn 1, lstm 4, gru 3), hidden size m, vocabulary K and
in_0 = K, in_l = m for l > 0, layer l has

    "l{l}.Wx" (G*m, in_l)   "l{l}.Wh" (G*m, m)   "l{l}.b" (G*m,)   and for gru "l{l}.bh" (G*m,)

and the output layer is "V" (K, m), "c" (K,). Gate blocks are stacked in the
order rnn [a], lstm [i, f, g, o], gru [r, z, n] (PyTorch's orders; see
cpp/cells.hpp for the equations). The hidden state is a (layers, S*m) array,
S = 2 for lstm (each row is h then c) and 1 otherwise.

Optimiser state (init_opt_state) is a flat dict keyed "<slot>:<parameter>":
"M:<name>" for adagrad and rmsprop, "m:<name>" and "v:<name>" for adam.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import numpy.typing as npt

CELLS: tuple[str, ...] = ("rnn", "lstm", "gru")
OPTIMIZERS: tuple[str, ...] = ("adagrad", "rmsprop", "adam")
CLIP_MODES: tuple[str, ...] = ("elementwise", "global_norm", "none")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
STATES = {"rnn": 1, "lstm": 2, "gru": 1}

Params = dict[str, np.ndarray]


def _check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(map(repr, CELLS))}")
    return cell


def net_param_shapes(cell: str, K: int, m: int, layers: int = 1) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter, in the order the C++ core uses."""
    G = GATES[_check_cell(cell)]
    shapes: dict[str, tuple[int, ...]] = {}
    for l in range(layers):
        shapes[f"l{l}.Wx"] = (G * m, K if l == 0 else m)
        shapes[f"l{l}.Wh"] = (G * m, m)
        shapes[f"l{l}.b"] = (G * m,)
        if cell == "gru":
            shapes[f"l{l}.bh"] = (G * m,)
    shapes["V"] = (K, m)
    shapes["c"] = (K,)
    return shapes


def net_dims(params: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """(K, m, layers) of a network's parameter dict."""
    K, m = np.shape(params["V"])
    layers = 0
    while f"l{layers}.Wx" in params:
        layers += 1
    return int(K), int(m), layers


def net_init(cell: str, K: int, m: int, layers: int = 1, sig: float = 0.01,
             seed: int | np.random.Generator | None = 0, dtype: npt.DTypeLike = np.float64,
             forget_bias: float = 1.0) -> Params:
    """Fresh parameters: weights from N(0, sig^2), biases zero except the
    LSTM forget-gate block of b, which is forget_bias (1 by default)."""
    if int(K) < 1 or int(m) < 1 or int(layers) < 1:
        raise ValueError(f"K, m and layers must be at least 1, got K={K}, m={m}, layers={layers}")
    if not np.isfinite(sig) or sig < 0:
        raise ValueError(f"sig must be a non-negative finite number, got {sig}")
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    params: Params = {}
    for name, shape in net_param_shapes(cell, int(K), int(m), int(layers)).items():
        if len(shape) == 1:
            params[name] = np.zeros(shape, dtype=dt)
        else:
            params[name] = (sig * rng.standard_normal(shape)).astype(dt)
    if cell == "lstm":
        for l in range(int(layers)):
            params[f"l{l}.b"][m:2 * m] = forget_bias
    return params


def init_opt_state(params: Mapping[str, np.ndarray], optimizer: str = "adagrad") -> Params:
    """Zeroed optimiser memory for params (the step count t starts at 0)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(map(repr, OPTIMIZERS))}")
    slots = ("m", "v") if optimizer == "adam" else ("M",)
    return {f"{s}:{name}": np.zeros_like(a) for name, a in params.items() for s in slots}


def net_zero_state(cell: str, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """A zero hidden state (layers, S*m) in the parameters' dtype."""
    K, m, layers = net_dims(params)
    return np.zeros((layers, STATES[_check_cell(cell)] * m), dtype=params["V"].dtype)


def copy_net_params(params: Mapping[str, np.ndarray], dtype: npt.DTypeLike | None = None) -> Params:
    """Independent C-contiguous copies, optionally cast to dtype."""
    return {k: np.array(v, dtype=dtype, order="C", copy=True) for k, v in params.items()}
