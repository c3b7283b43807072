"""What a model and a run will take in memory, estimated before anything is
allocated, so that an impossible size is refused with a clear message
instead of failing half-way (or swapping the machine to a halt)."""

from __future__ import annotations

import os

import numpy as np

from .layout import GATES, STATES, n_params

__all__ = ["available_bytes", "check_fits", "model_bytes", "run_bytes", "trace_bytes"]


def available_bytes() -> int | None:
    """Memory the system can still give this process (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def model_bytes(cell: str, K: int, m: int, layers: int, dtype: str) -> int:
    """The parameters of a network."""
    return n_params(cell, K, m, layers) * np.dtype(dtype).itemsize


def run_bytes(
    cell: str, K: int, m: int, layers: int, dtype: str, optimizer: str, batch_size: int, seq_length: int
) -> int:
    """A training run: parameters, their best copy, gradients, optimiser
    memory and the engine's packed weights, plus the activations of one
    chunk of batch_size x seq_length characters (what the engine keeps for
    the backward pass) and of an evaluation chunk."""
    item = np.dtype(dtype).itemsize
    P = n_params(cell, K, m, layers)
    slots = 2 if optimizer == "adam" else 1
    G, S = GATES[cell], STATES[cell]
    rows = batch_size * seq_length
    per_layer = rows * (3 * G * m + (6 + 2 * S) * m)  # gates, their gradients, states, packed copies
    activations = layers * per_layer + rows * (2 * K + 4 * m) + K * G * m
    evaluation = batch_size * 64 * (G * m + 2 * m) * layers
    return (P * (5 + slots) + activations + evaluation) * item


def trace_bytes(cell: str, m: int, layers: int, dtype: str, n_chars: int, top_k: int, states: bool) -> int:
    """The arrays of a trace of n_chars characters (tracing.py): per position
    the loss and surprisal (float64), the probability and the top_k
    predictions (an int32 index and a probability each), and with states
    every layer's hidden state (and an LSTM's cell state); plus the text's
    indices."""
    item = np.dtype(dtype).itemsize
    per_position = 16 + item + top_k * (4 + item)
    if states:
        per_position += layers * STATES[cell] * m * item
    return max(0, n_chars - 1) * per_position + n_chars * 4


def check_fits(what: str, need: int, advice: str) -> None:
    """Raise MemoryError (with what, how much, and the advice) when `need`
    bytes exceed 90 % of the memory available now."""
    have = available_bytes()
    if have is not None and need > 0.9 * have:
        raise MemoryError(
            f"{what} needs about {need / 2**30:.2f} GiB but only {have / 2**30:.2f} GiB of memory is "
            f"available; {advice}"
        )
