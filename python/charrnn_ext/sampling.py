"""Text synthesis on top of the C++ sampler, with strings instead of indices."""
from __future__ import annotations

import math
import secrets
from typing import Mapping

import numpy as np

from . import _core
from .data import Vocabulary

__all__ = ["derived_seed", "default_start_char", "random_seed", "sample_text"]

#: Tags that keep the seeds of different kinds of samples apart.
SEED_TAG_PROGRESS = 0  # the 200-character samples taken during training
SEED_TAG_PASSAGE = 1  # the final passage from the best model


def derived_seed(run_seed: int, tag: int, step: int) -> int:
    """A 64-bit sampler seed determined by the run seed, a tag and a step.

    Resuming a run therefore reproduces the same samples.
    """
    for name, v in (("run_seed", run_seed), ("tag", tag), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    ss = np.random.SeedSequence(int(run_seed), spawn_key=(int(tag), int(step)))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def random_seed() -> int:
    """A fresh seed in [0, 2**64) from the operating system."""
    return secrets.randbits(64)


def default_start_char(vocab: Vocabulary) -> str:
    """The character fed first when no prime is given: a newline if the
    vocabulary has one (text then starts like a new line), else its first character."""
    return "\n" if "\n" in vocab.chars else vocab.chars[0]


def encode_prime(vocab: Vocabulary, prime: str) -> np.ndarray:
    """Encode a prime string, naming any character missing from the vocabulary."""
    if not isinstance(prime, str):
        raise TypeError(f"prime must be a str, got {type(prime).__name__}")
    if prime == "":
        raise ValueError("prime must not be empty; pass None to start from the default character")
    missing = sorted({ch for ch in prime if ch not in vocab.chars})
    if missing:
        shown = ", ".join(repr(ch) for ch in missing)
        raise ValueError(f"prime contains character(s) {shown} that are not in the model's "
                         f"{vocab.size}-character vocabulary")
    return vocab.encode(prime)


def sample_text(params: Mapping[str, np.ndarray], vocab: Vocabulary, n: int, *, temperature: float = 1.0,
                prime: str | np.ndarray | None = None, seed: int | None = None,
                h0: np.ndarray | None = None) -> str:
    """Feed ``prime`` (a string, an index array, or None for
    :func:`default_start_char`) from ``h0`` (None: zeros) and return the ``n``
    characters drawn after it (the prime is not included)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if prime is None:
        idx = vocab.encode(default_start_char(vocab))
    elif isinstance(prime, str):
        idx = encode_prime(vocab, prime)
    else:
        idx = np.asarray(prime)
    if seed is None:
        seed = random_seed()
    out, _ = _core.sample(params, h0, idx, int(n), float(temperature), int(seed))
    return vocab.decode(out)
