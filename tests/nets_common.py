"""Shared set-up for the general-network tests (test_cells, test_optim, test_sampling_filters)."""
from __future__ import annotations

import numpy as np

from charrnn_ext.nets import STATES, net_init

CELLS = ("rnn", "lstm", "gru")


def max_rel_err(a, b, eps: float = 1e-12) -> float:
    """max |a - b| / max(eps, |a| + |b|), elementwise."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(eps, np.abs(a) + np.abs(b)))) if a.size else 0.0


def max_scaled_err(a, b) -> float:
    """max |a - b| / max |b|: error relative to the array's own scale (entries
    that cancel to near zero after many updates would dominate an elementwise one)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def net_problem(cell, K, m, layers, T, seed=0, sig=0.15, dtype=np.float64):
    """Parameters on a contracting scale (spectral radius of every Wh well
    below 1), non-zero biases, a random chunk X -> Y and a random state h0."""
    rng = np.random.default_rng(seed)
    params = net_init(cell, K, m, layers, sig=sig, seed=rng, dtype=np.float64)
    for k, v in params.items():
        if v.ndim == 1:
            v += 0.2 * rng.standard_normal(v.shape)
    params = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}
    data = rng.integers(0, K, T + 1)
    h0 = (0.5 * np.tanh(rng.standard_normal((layers, STATES[cell] * m)))).astype(dtype)
    return params, data[:-1], data[1:], h0


def spectral_radius(params, cell, m):
    """Largest spectral norm of any m x m gate block of any Wh."""
    out = 0.0
    for k, v in params.items():
        if k.endswith(".Wh"):
            for g in range(v.shape[0] // m):
                out = max(out, float(np.linalg.norm(v[g * m:(g + 1) * m], 2)))
    return out
