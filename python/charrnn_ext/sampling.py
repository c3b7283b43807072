"""Text synthesis on top of the C++ sampler, with strings instead of indices."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import engine
from .config import default
from .data import Vocabulary

__all__ = ["default_start_char", "derived_seed", "random_seed", "sample_pieces", "sample_text"]

#: Tags that keep the seeds of different kinds of samples apart.
SEED_TAG_PROGRESS = 0  # the samples taken during training
SEED_TAG_PASSAGE = 1  # the final passage from the best model


def _check_int(name: str, v: Any, high: int = 2**64) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < high:
        raise ValueError(f"{name} must be an integer in [0, {'2**64' if high == 2**64 else high}), got {v!r}")
    return int(v)


def derived_seed(run_seed: int, tag: int, step: int) -> int:
    """A 64-bit sampler seed determined by the run seed, a tag and a step,
    so that a resumed run reproduces the same samples."""
    ss = np.random.SeedSequence(
        _check_int("run_seed", run_seed), spawn_key=(_check_int("tag", tag), _check_int("step", step))
    )
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
        raise ValueError(
            f"prime contains character(s) {shown} that are not in the model's {vocab.size}-character vocabulary"
        )
    return vocab.encode(prime)


_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment: the C++ sampler advances its state by this per draw


def _sample_args(vocab: Vocabulary, n: Any, temperature: Any, prime: Any, seed: Any) -> tuple[np.ndarray, int]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float, np.integer, np.floating))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if prime is None:
        idx = vocab.encode(default_start_char(vocab))
    elif isinstance(prime, str):
        idx = encode_prime(vocab, prime)
    else:
        idx = np.asarray(prime)
    return idx, random_seed() if seed is None else _check_int("seed", seed)


def sample_text(
    params: Mapping[str, np.ndarray],
    vocab: Vocabulary,
    n: int,
    *,
    temperature: float = default("temperature"),
    prime: str | np.ndarray | None = None,
    seed: int | None = None,
    h0: np.ndarray | None = None,
    top_k: int = default("top_k"),
    top_p: float = default("top_p"),
    greedy: bool = default("greedy"),
    threads: int = default("threads"),
) -> str:
    """Feed ``prime`` (a string, an index array, or None for
    :func:`default_start_char`) from ``h0`` (None: zeros) and return the ``n``
    characters drawn after it (the prime is not included). ``threads``: as in
    :func:`charrnn_ext.engine.sample`."""
    return "".join(_draw(params, vocab, n, None, temperature, prime, seed, h0, top_k, top_p, greedy, threads))


def sample_pieces(
    params: Mapping[str, np.ndarray],
    vocab: Vocabulary,
    n: int,
    *,
    temperature: float = default("temperature"),
    prime: str | np.ndarray | None = None,
    seed: int | None = None,
    h0: np.ndarray | None = None,
    top_k: int = default("top_k"),
    top_p: float = default("top_p"),
    greedy: bool = default("greedy"),
    piece: int = 256,
    threads: int = default("threads"),
) -> Iterator[str]:
    """:func:`sample_text` in pieces of at most ``piece`` characters, yielded
    as they are drawn. Each piece continues from the previous one's state
    (re-reading its last character) and random-number state, so the pieces
    joined are exactly the text :func:`sample_text` gives."""
    if isinstance(piece, bool) or not isinstance(piece, (int, np.integer)) or piece < 1:
        raise ValueError(f"piece must be a positive integer, got {piece!r}")
    yield from _draw(params, vocab, n, int(piece), temperature, prime, seed, h0, top_k, top_p, greedy, threads)


def _draw(
    params: Mapping[str, np.ndarray],
    vocab: Vocabulary,
    n: Any,
    piece: int | None,
    temperature: Any,
    prime: Any,
    seed: Any,
    h0: np.ndarray | None,
    top_k: int,
    top_p: float,
    greedy: bool,
    threads: int,
) -> Iterator[str]:
    """The one call site of the engine's sampler: ``n`` characters in pieces
    of ``piece`` (None: all at once), the first call made even for n = 0 so
    that the arguments are always checked."""
    idx, seed = _sample_args(vocab, n, temperature, prime, seed)
    size = int(n) if piece is None else piece
    h, done = h0, 0
    while True:
        k = min(size, int(n) - done)
        out, h = engine.sample(
            params, h, idx, k, float(temperature), seed, top_k=top_k, top_p=top_p, greedy=greedy, threads=threads
        )
        if not greedy:  # one SplitMix64 draw per character
            seed = (seed + k * _GOLDEN) % 2**64
        done += k
        if k:
            idx = out[-1:]
            yield vocab.decode(out)
        if done >= n:
            return
