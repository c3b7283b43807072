"""Shared helpers for the test-suite (importable as `helpers`; see conftest.py)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from charrnn_ext.layout import PARAM_NAMES, STATES, init_params, net_init

CELLS = ("rnn", "lstm", "gru")

#: True when the tests run under AddressSanitizer (CI's second stage preloads its runtime). Its shadow
#: memory reserves terabytes of address space and it slows everything down, so address-space caps and
#: memory or time figures do not apply then.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")
#: The optional extras present: their tests skip without them (the README's test command installs
#: only the [test] extra).
HAVE_SWEEP = all(importlib.util.find_spec(m) is not None for m in ("optuna", "optuna_integration", "distributed"))
HAVE_SERVE = all(importlib.util.find_spec(m) is not None for m in ("starlette", "uvicorn"))
HAVE_ONNX = importlib.util.find_spec("onnx") is not None


def max_rel_err(a, b, eps: float = 1e-12) -> float:
    """max |a - b| / max(eps, |a| + |b|), elementwise, as a float (0 for empty arrays)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(eps, np.abs(a) + np.abs(b)))) if a.size else 0.0


def max_scaled_err(a, b) -> float:
    """max |a - b| / max |b|: the error relative to the array's own scale.

    Used for parameters after many updates, where single entries pass close
    to zero (theta - eta*g/sqrt(M) cancels) and an elementwise relative error
    would measure that cancellation rather than a disagreement.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def problem(K: int, m: int, T: int, seed: int = 0, sig: float = 0.01, dtype=np.float64):
    """Classic parameters (U, W, V, b, c), a random chunk X -> Y and a random h0 (m,)."""
    rng = np.random.default_rng(seed)
    params = init_params(K, m, sig, seed=rng, dtype=dtype)
    data = rng.integers(0, K, T + 1)
    h0 = np.tanh(rng.standard_normal(m)).astype(dtype)
    return params, data[:-1], data[1:], h0


def perturbed(params, scale: float, seed: int):
    """params plus N(0, scale^2) noise on every entry (biases included)."""
    rng = np.random.default_rng(seed)
    return {k: v + scale * rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}


def net_problem(cell, K, m, layers, T, seed=0, sig=0.15, dtype=np.float64, streams=None):
    """Network parameters on a contracting scale (spectral radius of every Wh
    well below 1), non-zero biases, a random chunk X -> Y ((T,) or (streams, T))
    and a random state h0 ((layers, S*m) or (streams, layers, S*m))."""
    rng = np.random.default_rng(seed)
    params = net_init(cell, K, m, layers, sig=sig, seed=rng, dtype=np.float64)
    for v in params.values():
        if v.ndim == 1:
            v += 0.2 * rng.standard_normal(v.shape)
    params = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}
    shape = (T + 1,) if streams is None else (streams, T + 1)
    data = rng.integers(0, K, shape)
    state = (layers, STATES[cell] * m) if streams is None else (streams, layers, STATES[cell] * m)
    h0 = (0.5 * np.tanh(rng.standard_normal(state))).astype(dtype)
    return params, data[..., :-1], data[..., 1:], h0


def spectral_radius(params, cell, m):
    """Largest spectral norm of any m x m gate block of any Wh."""
    out = 0.0
    for k, v in params.items():
        if k.endswith(".Wh"):
            for g in range(v.shape[0] // m):
                out = max(out, float(np.linalg.norm(v[g * m : (g + 1) * m], 2)))
    return out


__all__ = [
    "CELLS",
    "PARAM_NAMES",
    "max_rel_err",
    "max_scaled_err",
    "net_problem",
    "perturbed",
    "problem",
    "spectral_radius",
]


#: How many examples a property test runs is its own figure n (``fuzz(n)``)
#: scaled by the hypothesis profile: "ci" (HYPOTHESIS_PROFILE=ci, which
#: .ci/run sets) runs all n, the default "dev" a fifth of them, so that a
#: contributor's run is quick and CI's is thorough. FUZZ_SCALE multiplies
#: on top. The profiles are registered in conftest.py.
FULL_VOLUME_EXAMPLES = 100


def fuzz_volume() -> float:
    """The share of the full volume this session runs (1 in CI)."""
    from hypothesis import settings

    return float(os.environ.get("FUZZ_SCALE", "1")) * settings.default.max_examples / FULL_VOLUME_EXAMPLES


def fuzz(n: int):
    """The settings of a property test of n examples at full volume:
    derandomized (a run is repeatable), no deadline, no example database."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=max(1, round(n * fuzz_volume())),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# sweep.json as `charrnn sweep` writes it (its damaged forms: test_cli_fuzz.py, test_sweep_files.py)
SWEEP_JSON = {
    "format": 1,
    "sweep_id": "0123456789ab",
    "study_name": "charrnn-sweep",
    "package_version": "0",
    "space": {"fixed": {"steps": 3}, "search": {"hidden": {"choice": [4, 8]}}},
    "text": None,
    "settings": {"trials": 2, "sampler": "tpe", "pruner": "median", "seed": None, "threads_per_trial": 1},
}
