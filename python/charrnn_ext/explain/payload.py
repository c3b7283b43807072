"""The data of an explain page, as one JSON-serialisable dict.

Schema ``charrnn-explain/1`` (N characters of text, n = N - 1 positions;
position i has read text[i] and predicts text[i + 1]):

- ``schema``: "charrnn-explain/1";
- ``model``: cell, layers, hidden, K, dtype, n_params;
- ``source``: what the text is (a file name, or null);
- ``text``: the text; ``vocab``: the model's characters, in index order;
- ``bits_per_char``: the mean surprisal;
- ``surprisal``: n numbers, -log2 p(text[i + 1]) in bits (3 decimals);
- ``top_k``; ``top_index``: n lists of top_k vocabulary indices, most
  probable first; ``top_prob``: their probabilities (4 significant digits);
- ``states``: one entry per layer and kind shown: {layer, kind ("h" the
  hidden state; "c" an LSTM's cell state, shown as tanh(c)), units, scale,
  data}; data is the base64 of n x units signed bytes, position-major, and
  a value is byte x scale (scale 1/127: h and tanh(c) lie in [-1, 1]);
- ``features``: one entry per feature of
  :data:`charrnn_ext.explain.features.FEATURES`: {name, label, present (it
  varies in this text), top: [{layer, kind, unit, r}], by decreasing |r|}.

Only the standard types of JSON: ``json.dumps(payload)`` writes it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tracing import DEFAULT_TOP_K, Trace
from .features import FEATURES, rank_units

__all__ = ["MAX_CHARS", "SCHEMA", "TOP_UNITS", "build_payload", "model_info", "payload_from_trace"]

SCHEMA = "charrnn-explain/1"
#: The most characters ``charrnn explain`` traces unless told otherwise: a
#: page of this size stays quick in a browser.
MAX_CHARS = 20_000
#: Units listed per feature.
TOP_UNITS = 5


def _quantised(x: np.ndarray) -> str:
    """Values in [-1, 1] as base64 of signed bytes (x * 127, rounded)."""
    q = np.clip(np.rint(np.asarray(x, dtype=np.float32) * 127.0), -127, 127).astype(np.int8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def _layers(selected: Sequence[int] | None, layers: int) -> list[int]:
    if selected is None:
        return list(range(layers))
    out = []
    for l in selected:
        if isinstance(l, bool) or not isinstance(l, (int, np.integer)) or not 0 <= l < layers:
            raise ValueError(f"layer {l!r} does not exist: the model has layers 0 to {layers - 1}")
        if int(l) not in out:
            out.append(int(l))
    return out


def payload_from_trace(
    trace: Trace,
    model_info: dict[str, Any],
    *,
    layers: Sequence[int] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The payload of a trace taken with states; ``layers`` the layers whose
    units the page shows and ranks (default: all)."""
    if not trace.hidden:
        raise ValueError("the trace has no states; take it with states=True")
    chosen = _layers(layers, len(trace.hidden))
    groups: list[tuple[int, str, np.ndarray]] = []
    for l in chosen:
        groups.append((l, "h", trace.hidden[l]))
        if trace.cell is not None:
            groups.append((l, "c", trace.cell[l]))
    ranked = rank_units(trace.text, groups, TOP_UNITS)
    states = [
        {
            "layer": l,
            "kind": kind,
            "units": int(x.shape[1]),
            "scale": 1 / 127,
            "data": _quantised(x if kind == "h" else np.tanh(x)),
        }
        for l, kind, x in groups
    ]
    features = []
    for name, label in FEATURES:
        present, top = ranked[name]
        features.append(
            {
                "name": name,
                "label": label,
                "present": present,
                "top": [{"layer": s.layer, "kind": s.kind, "unit": s.unit, "r": round(s.r, 4)} for s in top],
            }
        )
    return {
        "schema": SCHEMA,
        "model": model_info,
        "source": source,
        "text": trace.text,
        "vocab": trace.vocab.chars,
        "bits_per_char": round(trace.bits_per_char, 4),
        "surprisal": np.round(trace.surprisal, 3).tolist(),
        "top_k": int(trace.top_indices.shape[1]),
        "top_index": trace.top_indices.tolist(),
        "top_prob": [[float(f"{p:.4g}") for p in row] for row in trace.top_probs.tolist()],
        "states": states,
        "features": features,
    }


def build_payload(
    model: Any,
    text: str,
    top_k: int = DEFAULT_TOP_K,
    *,
    layers: Sequence[int] | None = None,
    source: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The payload of ``model`` (a :class:`~charrnn_ext.model.CharRNN`) on
    ``text``: its trace in one pass from the model's start state, its matrix
    products in the precision the model trains in (as its validation's are), with
    the states of ``layers`` (default: all) and the units ranked per feature."""
    trace = model.trace(text, top_k=top_k, threads=threads, precision=model.precision)
    return payload_from_trace(trace, model_info(model), layers=layers, source=source)


def model_info(model: Any) -> dict[str, Any]:
    """The payload's ``model`` entry for a :class:`~charrnn_ext.model.CharRNN`."""
    return {
        "cell": model.cell,
        "layers": model.layers,
        "hidden": model.hidden,
        "K": model.K,
        "dtype": model.meta()["dtype"],
        "n_params": model.n_params,
    }
