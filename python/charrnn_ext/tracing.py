"""What a network computes at every character of a text: its trace.

One call of the C++ engine runs the forward pass of the loss over the whole
text and keeps, at every position, the probability of the actual next
character, the most probable next characters and every layer's state
(:func:`charrnn_ext.engine.trace`). The states are the engine's own, so
they are exactly those training and evaluation compute. This module turns
the engine's arrays into a :class:`Trace` of a string.

Position ``i`` of a trace is the network having read ``text[i]`` (from the
start state and ``text[:i]``) and predicting ``text[i + 1]``: a text of N
characters has N - 1 positions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import engine
from .config import default
from .data import Vocabulary
from .layout import describe
from .resources import check_fits, trace_bytes

__all__ = ["DEFAULT_TOP_K", "Trace", "trace_text"]

#: How many of the most probable next characters a trace keeps by default.
DEFAULT_TOP_K = 5


@dataclass(frozen=True, eq=False)
class Trace:
    """The trace of ``text`` (N characters, N - 1 positions; position i has
    read text[i] and predicts text[i + 1]).

    - ``indices`` (N,): the text as vocabulary indices;
    - ``prob`` (N-1,): the probability the network gave the actual next character;
    - ``nll`` (N-1,) float64: -ln of it, as the loss sums it (the engine's own row losses);
    - ``surprisal`` (N-1,) float64: the same in bits, ``nll / ln 2``;
    - ``top_indices`` (N-1, k) int32 and ``top_probs`` (N-1, k): the k most
      probable next characters, most probable first (ties: the lower index);
    - ``hidden``: one (N-1, H) array per layer, the layer's hidden state
      after reading text[i] (empty when the trace was asked without states);
    - ``cell``: for an LSTM, one (N-1, H) array per layer, the cell states; else None;
    - ``state`` (layers, S*H): the state after the last character.

    ``prob``, ``top_probs``, ``hidden`` and ``cell`` have the parameters'
    float type (float32 for a bfloat16-trained model, whose master weights
    the trace reads)."""

    text: str
    vocab: Vocabulary
    indices: np.ndarray
    prob: np.ndarray
    nll: np.ndarray
    surprisal: np.ndarray
    top_indices: np.ndarray
    top_probs: np.ndarray
    hidden: tuple[np.ndarray, ...]
    cell: tuple[np.ndarray, ...] | None
    state: np.ndarray

    def __len__(self) -> int:
        """The number of positions, N - 1."""
        return int(self.nll.size)

    @property
    def loss(self) -> float:
        """Loss per character: the mean of ``nll`` (what ``CharRNN.loss`` gives for the same text)."""
        return float(self.nll.sum()) / len(self)

    @property
    def bits_per_char(self) -> float:
        """The mean surprisal in bits per character."""
        return self.loss / math.log(2)

    def top(self, i: int) -> list[tuple[str, float]]:
        """The kept predictions at position i as (character, probability), most probable first."""
        return [(self.vocab.chars[int(k)], float(p)) for k, p in zip(self.top_indices[i], self.top_probs[i])]


def trace_text(
    params: Mapping[str, np.ndarray],
    vocab: Vocabulary,
    text: str,
    h0: np.ndarray | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    states: bool = True,
    batch_size: int = default("batch_size"),
    threads: int = default("threads"),
    precision: str = "full",
) -> Trace:
    """The :class:`Trace` of ``text`` by the network ``params`` from state
    ``h0`` (None: zeros). Every character of the text must be in ``vocab``
    (ValueError naming those that are not); it needs at least 2. ``top_k``
    in [0, K]; ``states`` False keeps no hidden or cell states (a long text's
    states take layers x H numbers per character, twice for an LSTM);
    ``batch_size`` as in :meth:`CharRNN.loss` (B > 1: B segments read at
    once, each but the first from a zero state); ``precision`` 'bfloat16'
    (float32 parameters) computes the matrix products as bfloat16 training
    does, as in :meth:`CharRNN.loss`."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) < 2:
        raise ValueError(f"the text has {len(text)} character(s); a trace needs at least 2")
    try:
        indices = vocab.encode(text)
    except ValueError as exc:
        raise ValueError(f"cannot trace this text: {exc}") from None
    cell, K, m, layers = describe(params)
    dtype = np.dtype(params["V"].dtype)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 0 <= top_k <= K:
        raise ValueError(f"top_k must be an integer in [0, {K}] (the vocabulary size), got {top_k!r}")
    check_fits(
        f"the trace of {len(text):,} characters",
        trace_bytes(cell, m, layers, str(dtype), len(text), int(top_k), states),
        "trace a shorter text, or ask for no states",
    )
    nll, prob, top_index, top_prob, hidden, cells, h = engine.trace(
        params,
        indices,
        h0,
        top_k=int(top_k),
        states=states,
        batch_size=batch_size,
        threads=threads,
        precision=precision,
    )
    return Trace(
        text=text,
        vocab=vocab,
        indices=indices,
        prob=prob,
        nll=nll,
        surprisal=nll / math.log(2),
        top_indices=top_index,
        top_probs=top_prob,
        hidden=() if hidden is None else tuple(hidden),
        cell=None if cells is None else tuple(cells),
        state=h,
    )
