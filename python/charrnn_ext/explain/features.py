"""Simple features of a text, position by position, and the hidden units
that track them best (Pearson correlation), in NumPy.

Position i of a feature describes the text having read text[i], like
position i of a trace (:mod:`charrnn_ext.tracing`):

- ``in_quotes``: inside a quotation: an odd number of straight double quotes
  read so far, or more typographic opening quotes (“) than closing ones (”);
- ``in_brackets``: inside (), [] or {} (a closer with no opener is ignored);
- ``line_position``: characters read since the last newline or the start (0 on a newline);
- ``after_newline``: text[i] is a newline (the next character starts a line);
- ``in_word``: text[i] is a letter or a digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data import _code_points

__all__ = ["FEATURES", "UnitScore", "correlations", "feature_series", "rank_units"]

#: (name, label) of every feature, in the order they are shown.
FEATURES: tuple[tuple[str, str], ...] = (
    ("in_quotes", "inside quotes"),
    ("in_brackets", "inside brackets"),
    ("line_position", "position in the line"),
    ("after_newline", "after a newline"),
    ("in_word", "inside a word"),
)

#: Rows of the states summed at a time by :func:`correlations` (bounds its memory).
_ROWS = 1 << 15


def _depth(opens: np.ndarray, closes: np.ndarray) -> np.ndarray:
    """Nesting depth after each character, never below 0 (a closer at depth 0
    is ignored): the running sum reflected at 0, d - min(0, running min of d)."""
    d = np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
    return d - np.minimum(0, np.minimum.accumulate(d))


def feature_series(text: str, n: int | None = None) -> dict[str, np.ndarray]:
    """Every feature of :data:`FEATURES` at positions 0..n-1 (default: every
    character) as float64 arrays."""
    c = _code_points(text)
    n = c.size if n is None else n
    quotes = (np.cumsum(c == ord('"')) % 2 == 1) | (_depth(c == 0x201C, c == 0x201D) > 0)
    brackets = _depth(np.isin(c, [ord("("), ord("["), ord("{")]), np.isin(c, [ord(")"), ord("]"), ord("}")]))
    newline = c == ord("\n")
    idx = np.arange(c.size)
    last_newline = np.maximum.accumulate(np.where(newline, idx, -1))
    word = np.fromiter((ch.isalnum() for ch in text), dtype=bool, count=c.size)
    series = {
        "in_quotes": quotes,
        "in_brackets": brackets > 0,
        "line_position": idx - last_newline,
        "after_newline": newline,
        "in_word": word,
    }
    return {k: v[:n].astype(np.float64) for k, v in series.items()}


def correlations(states: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Pearson correlation (U, F) of every column of ``states`` (n, U) with
    every column of ``features`` (n, F), summed in float64 over blocks of
    rows; 0 where a unit is constant, NaN where a feature is."""
    n = states.shape[0]
    f = np.asarray(features, dtype=np.float64)
    f_mean = f.mean(axis=0)
    fc = f - f_mean
    f_sd = np.sqrt((fc * fc).sum(axis=0))
    s1 = np.zeros(states.shape[1])
    s2 = np.zeros(states.shape[1])
    sf = np.zeros((states.shape[1], f.shape[1]))
    for r0 in range(0, n, _ROWS):
        x = np.asarray(states[r0 : r0 + _ROWS], dtype=np.float64)
        s1 += x.sum(axis=0)
        s2 += (x * x).sum(axis=0)
        sf += x.T @ fc[r0 : r0 + _ROWS]
    x_var = np.maximum(s2 - s1 * s1 / max(n, 1), 0.0)
    x_sd = np.sqrt(x_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sf / (x_sd[:, None] * f_sd[None, :])
    r[x_sd <= 1e-12 * np.sqrt(max(n, 1)), :] = 0.0
    r[:, f_sd == 0] = np.nan
    return np.clip(r, -1.0, 1.0)


@dataclass(frozen=True)
class UnitScore:
    """One unit's correlation with a feature: layer, kind ("h" hidden state,
    "c" LSTM cell state), unit index and Pearson r."""

    layer: int
    kind: str
    unit: int
    r: float


def rank_units(
    text: str, groups: Sequence[tuple[int, str, np.ndarray]], top: int = 5
) -> dict[str, tuple[bool, list[UnitScore]]]:
    """For every feature: (whether it varies in the text, the ``top`` units
    with the largest |r|, largest first) over ``groups`` of states, each
    (layer, kind, array (n, H)) for positions 0..n-1."""
    n = groups[0][2].shape[0] if groups else 0
    series = feature_series(text, n)
    F = np.stack([series[name] for name, _ in FEATURES], axis=1)
    scores: list[tuple[int, str, np.ndarray]] = [(layer, kind, correlations(x, F)) for layer, kind, x in groups]
    out: dict[str, tuple[bool, list[UnitScore]]] = {}
    for j, (name, _) in enumerate(FEATURES):
        present = bool(np.ptp(F[:, j]) > 0) if n else False
        found: list[UnitScore] = []
        if present:
            for layer, kind, r in scores:
                col = r[:, j]
                for u in np.argsort(-np.abs(col), kind="stable")[:top]:
                    found.append(UnitScore(layer, kind, int(u), float(col[u])))
            found.sort(key=lambda s: -abs(s.r))
        out[name] = (present, found[:top])
    return out
