"""Parameter names and shapes per cell and layer, initialisation, and the
one rename between the classic and the network names.

A network is a flat dict of C-contiguous arrays of one float dtype, in the
order the C++ core uses (:func:`charrnn_ext.engine.core_layout`). With G gate blocks per cell (rnn 1,
lstm 4, gru 3), hidden size m, vocabulary K, in_0 = K and in_l = m for l > 0,
layer l has

    "l{l}.Wx" (G*m, in_l)   "l{l}.Wh" (G*m, m)   "l{l}.b" (G*m,)   and for gru "l{l}.bh" (G*m,)

and the output layer is "V" (K, m), "c" (K,). Gate blocks are stacked in the
order rnn [a], lstm [i, f, g, o], gru [r, z, n] (PyTorch's orders; the
equations are in cpp/cells.hpp).

The classic vanilla RNN is the one-layer rnn, whose arrays also go by the
names of its equations: **U = l0.Wx, W = l0.Wh, b = l0.b** (V and c keep
their names). The kernels accept either set of names and answer in the set
they were given.

Recurrent states are (layers, S*m) per stream, S = 2 for lstm (each row is h
then c) and 1 otherwise; B streams make (B, layers, S*m). The classic names
go with the classic shapes (m,) and (B, m).

Optimiser state (:func:`init_opt_state`) is a flat dict keyed
"<slot>:<parameter>": "M:<name>" for AdaGrad and RMSProp, "m:<name>" and
"v:<name>" for Adam, plus "t", the number of updates done (a 0-d int64
array, which Adam's bias correction and the dropout masks use).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from . import engine
from .config import CELLS, OPTIMIZERS, default

__all__ = [
    "CLASSIC_NAMES",
    "PARAM_NAMES",
    "Params",
    "copy_params",
    "describe",
    "from_classic",
    "grow_vocab",
    "init_opt_state",
    "init_params",
    "is_classic",
    "net_init",
    "param_shapes",
    "state_shape",
    "to_classic",
    "zero_state",
    "zeros_like_params",
]

Params = dict[str, np.ndarray]

#: Gate blocks per layer and state vectors per layer, by cell.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
STATES = {"rnn": 1, "lstm": 2, "gru": 1}


@functools.lru_cache(maxsize=64)
def _layout(cell: str, K: int, m: int, layers: int) -> tuple[tuple[str, str | None, tuple[int, ...]], ...]:
    return tuple((name, alias, tuple(shape)) for name, alias, shape in engine.core_layout(cell, K, m, layers))


#: classic name -> network name of the one-layer rnn (U -> l0.Wx, ...), in the core's order.
CLASSIC_NAMES: dict[str, str] = {alias: name for name, alias, _ in _layout("rnn", 1, 1, 1) if alias}
#: The classic names in the order of the classic equations.
PARAM_NAMES: tuple[str, ...] = ("U", "W", "V", "b", "c")


def _check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(map(repr, CELLS))}")
    return cell


def is_classic(cell: str, layers: int) -> bool:
    """True for the network that has classic names: the one-layer rnn."""
    return cell == "rnn" and int(layers) == 1


def param_shapes(cell: str, K: int, m: int, layers: int = 1) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter, in the order the C++ core uses."""
    return {name: shape for name, _, shape in _layout(_check_cell(cell), int(K), int(m), int(layers))}


def from_classic(params: Mapping[str, np.ndarray]) -> Params:
    """Classic names (U, W, V, b, c) -> network names; the same arrays."""
    return {CLASSIC_NAMES.get(k, k): v for k, v in params.items()}


def to_classic(params: Mapping[str, np.ndarray]) -> Params:
    """Network names of a one-layer rnn -> classic names; the same arrays.
    Other networks have no classic names (ValueError)."""
    if "U" not in params:
        cell, _, _, layers = describe(params)
        if not is_classic(cell, layers):
            raise ValueError(
                f"only a one-layer rnn has the classic names U, W, V, b, c; these parameters are a "
                f"{layers}-layer {cell}"
            )
    back = {v: k for k, v in CLASSIC_NAMES.items()}
    return {back.get(k, k): v for k, v in params.items()}


def describe(params: Mapping[str, np.ndarray]) -> tuple[str, int, int, int]:
    """(cell, K, m, layers) of a parameter dict with either set of names."""
    if "U" in params:
        m, K = np.shape(params["U"])
        return "rnn", int(K), int(m), 1
    K, m = np.shape(params["V"])
    layers = 0
    while f"l{layers}.Wx" in params:
        layers += 1
    G = np.shape(params["l0.Wh"])[0] // max(1, int(m))
    cell = {1: "rnn", 4: "lstm", 3: "gru"}.get(G)
    if cell is None:
        raise ValueError(f"l0.Wh has {np.shape(params['l0.Wh'])[0]} rows; expected G*m with G in 1, 4, 3, m = {m}")
    return cell, int(K), int(m), layers


def state_shape(cell: str, layers: int, m: int, streams: int | None = None) -> tuple[int, ...]:
    """Shape of a recurrent state: (layers, S*m), or (streams, layers, S*m)."""
    one = (int(layers), STATES[_check_cell(cell)] * int(m))
    return one if streams is None else (int(streams), *one)


def zero_state(params: Mapping[str, np.ndarray], streams: int | None = None) -> np.ndarray:
    """A zero recurrent state in the parameters' dtype (classic names: (m,) or (streams, m))."""
    cell, _K, m, layers = describe(params)
    dtype = params["V"].dtype
    if "U" in params:
        return np.zeros((m,) if streams is None else (int(streams), m), dtype=dtype)
    return np.zeros(state_shape(cell, layers, m, streams), dtype=dtype)


def _float_dtype(dtype: npt.DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def net_init(
    cell: str,
    K: int,
    m: int,
    layers: int = default("layers"),
    sig: float = default("sig"),
    seed: int | np.random.Generator | None = default("seed"),
    dtype: npt.DTypeLike = np.float64,
    forget_bias: float = default("forget_bias"),
) -> Params:
    """Fresh network parameters: every matrix ~ N(0, sig^2), drawn in the
    core's order; biases zero except the LSTM forget-gate block of b, which
    is ``forget_bias``. The one-layer rnn draws exactly what
    :func:`init_params` draws."""
    if int(K) < 1 or int(m) < 1 or int(layers) < 1:
        raise ValueError(f"K, m and layers must be at least 1, got K={K}, m={m}, layers={layers}")
    if not np.isfinite(sig) or sig < 0:
        raise ValueError(f"sig must be a non-negative finite number, got {sig}")
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    dt = _float_dtype(dtype)
    rng = _rng(seed)
    params: Params = {}
    for name, shape in param_shapes(cell, int(K), int(m), int(layers)).items():
        if len(shape) == 1:
            params[name] = np.zeros(shape, dtype=dt)
        else:
            params[name] = (sig * rng.standard_normal(shape)).astype(dt)
    if cell == "lstm":
        for l in range(int(layers)):
            params[f"l{l}.b"][m : 2 * m] = forget_bias
    return params


def grow_vocab(
    params: Mapping[str, np.ndarray],
    K: int,
    sig: float = default("sig"),
    seed: int | np.random.Generator | None = default("seed"),
    forget_bias: float = default("forget_bias"),
) -> Params:
    """``params`` for a vocabulary of ``K`` >= their own characters, the new
    ones after the old: every array of a fresh network of that size
    (:func:`net_init` with these ``sig``, ``seed`` and ``forget_bias``) with
    the old arrays copied over its leading entries. So the old characters'
    input columns (``l0.Wx``), output rows (``V``) and output biases (``c``)
    and every other parameter stay exactly as they were, and the appended
    entries are the ones a fresh model of the grown vocabulary starts with."""
    net = from_classic(params)
    cell, K0, m, layers = describe(net)
    if int(K) < K0:
        raise ValueError(f"cannot shrink a vocabulary of {K0} characters to {K}")
    grown = net_init(cell, int(K), m, layers, sig, seed=seed, dtype=net["V"].dtype, forget_bias=forget_bias)
    for name, old in net.items():
        grown[name][tuple(slice(0, n) for n in old.shape)] = old
    return grown


def init_params(
    K: int,
    m: int = default("hidden"),
    sig: float = default("sig"),
    seed: int | np.random.Generator | None = None,
    dtype: npt.DTypeLike = np.float64,
) -> Params:
    """Fresh classic parameters U (m, K), W (m, m), V (K, m), b (m,), c (K,):
    b = c = 0 and U, W, V drawn from N(0, sig^2)."""
    net = net_init("rnn", K, m, 1, sig, seed=seed, dtype=dtype)
    classic = to_classic(net)
    return {k: classic[k] for k in PARAM_NAMES}


def zeros_like_params(params: Mapping[str, np.ndarray]) -> Params:
    """Arrays of zeros shaped like params, keyed alike (e.g. a classic AdaGrad memory)."""
    return {k: np.zeros_like(v) for k, v in params.items()}


def copy_params(params: Mapping[str, np.ndarray], dtype: npt.DTypeLike | None = None) -> Params:
    """Independent C-contiguous copies, optionally cast to dtype."""
    return {k: np.array(v, dtype=dtype, order="C", copy=True) for k, v in params.items()}


def init_opt_state(params: Mapping[str, np.ndarray], optimizer: str = "adagrad") -> Params:
    """Zeroed optimiser memory for params (keyed like them) and the update counter t = 0."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(map(repr, OPTIMIZERS))}")
    slots = ("m", "v") if optimizer == "adam" else ("M",)
    state = {f"{s}:{name}": np.zeros_like(a) for name, a in params.items() for s in slots}
    state["t"] = np.zeros((), dtype=np.int64)
    return state


def n_params(cell: str, K: int, m: int, layers: int = 1) -> int:
    """Number of trainable numbers of a network."""
    return int(sum(int(np.prod(s)) for s in param_shapes(cell, K, m, layers).values()))
