"""Shared helpers for the test-suite."""
from __future__ import annotations

import numpy as np

from charrnn_ext.params import PARAM_NAMES, init_params


def max_rel_err(a, b, eps: float = 1e-12) -> float:
    """max |a - b| / max(eps, |a| + |b|), elementwise, as a float."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(eps, np.abs(a) + np.abs(b))))


def max_scaled_err(a, b) -> float:
    """max |a - b| / max |b|: the error relative to the array's own scale.

    Used for parameters after many AdaGrad steps, where single entries pass
    close to zero (theta - eta*g/sqrt(M) cancels) and an elementwise relative
    error would measure that cancellation rather than a disagreement.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def problem(K: int, m: int, T: int, seed: int = 0, sig: float = 0.01, dtype=np.float64):
    """Random parameters, a random chunk X -> Y and a random h0."""
    rng = np.random.default_rng(seed)
    params = init_params(K, m, sig, seed=rng, dtype=dtype)
    data = rng.integers(0, K, T + 1)
    h0 = np.tanh(rng.standard_normal(m)).astype(dtype)
    return params, data[:-1], data[1:], h0


def perturbed(params, scale: float, seed: int):
    """params plus N(0, scale^2) noise on every entry (b and c included)."""
    rng = np.random.default_rng(seed)
    return {k: params[k] + scale * rng.standard_normal(params[k].shape).astype(params[k].dtype)
            for k in PARAM_NAMES}
