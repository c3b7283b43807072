"""Parameter containers: the five arrays of a vanilla RNN as a plain dict.

The C++ core reads and updates these arrays in place, so they are ordinary
C-contiguous NumPy arrays keyed by the names used in the equations:
U (m, K), W (m, m), V (K, m), b (m,), c (K,).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import numpy.typing as npt

PARAM_NAMES: tuple[str, ...] = ("U", "W", "V", "b", "c")

Params = dict[str, np.ndarray]


def param_shapes(K: int, m: int) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter for vocabulary size K and hidden size m."""
    return {"U": (m, K), "W": (m, m), "V": (K, m), "b": (m,), "c": (K,)}


def init_params(
    K: int,
    m: int = 100,
    sig: float = 0.01,
    seed: int | np.random.Generator | None = None,
    dtype: npt.DTypeLike = np.float64,
) -> Params:
    """Fresh parameters: b = c = 0 and U, W, V drawn from N(0, sig^2)."""
    if int(K) < 1 or int(m) < 1:
        raise ValueError(f"K and m must be at least 1, got K={K}, m={m}")
    if not np.isfinite(sig) or sig < 0:
        raise ValueError(f"sig must be a non-negative finite number, got {sig}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    params: Params = {}
    for name, shape in param_shapes(int(K), int(m)).items():
        if name in ("b", "c"):
            params[name] = np.zeros(shape, dtype=dt)
        else:
            params[name] = (sig * rng.standard_normal(shape)).astype(dt)
    return params


def zeros_like_params(params: Mapping[str, np.ndarray]) -> Params:
    """Arrays of zeros shaped like params (e.g. the AdaGrad memory)."""
    return {name: np.zeros_like(params[name]) for name in PARAM_NAMES}


def copy_params(params: Mapping[str, np.ndarray], dtype: npt.DTypeLike | None = None) -> Params:
    """Independent C-contiguous copies, optionally cast to dtype."""
    return {name: np.array(params[name], dtype=dtype, order="C", copy=True) for name in PARAM_NAMES}


def dims(params: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(K, m) read from U's shape."""
    m, K = np.shape(params["U"])
    return int(K), int(m)
