"""The parameters of a request, checked against the option table the
command line uses (:mod:`charrnn_ext.config`): the same names, types and
ranges as ``charrnn sample``, so that the page can ask for nothing the
command could not. A refused request raises :class:`RequestError`, which the
app answers as JSON with its status."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import default, group, option, shown

__all__ = [
    "SAMPLE_PARAMS",
    "TRACE_TOP_K",
    "RequestError",
    "SampleRequest",
    "TraceRequest",
    "option_table",
    "parse_json",
]

#: The sampling controls a request may set: the ``sample`` options of the table, and the seed.
SAMPLE_PARAMS: tuple[str, ...] = tuple(o.name for o in group("sample")) + ("seed",)

#: The alternatives listed per character by the explain view, unless the request says otherwise.
TRACE_TOP_K = 5

#: The largest request body read (a prime or a traced text is at most max_chars characters of up to 4 bytes).
BODY_OVERHEAD = 64 << 10


class RequestError(Exception):
    """A request the server refuses: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def option_table() -> dict[str, dict[str, Any]]:
    """The sampling options as the page needs them to build its controls."""
    out = {}
    for name in SAMPLE_PARAMS:
        o = option(name)
        out[name] = {
            "kind": o.kind.__name__,
            "default": None if name == "seed" else o.default,
            "low": o.low,
            "high": o.high,
            "low_open": o.low_open,
            "high_open": o.high_open,
            "help": o.help,
            "range": "a string" if o.kind is str and o.choices is None else o.range_text(),
        }
    return out


def parse_json(body: bytes, limit: int) -> dict[str, Any]:
    """The JSON object of a request body of at most ``limit`` bytes."""
    if len(body) > limit:
        raise RequestError(413, f"the request body is larger than {limit:,} bytes, the most this server reads")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(400, f"the request body is not a JSON object ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(obj).__name__}")
    return obj


def _model_name(obj: Mapping[str, Any]) -> str:
    name = obj.get("model")
    if not isinstance(name, str) or not name:
        raise RequestError(400, f"model must be the name of a served model (see /api/info), got {shown(name)}")
    return name


def _unknown(obj: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(obj) - set(known))
    if extra:
        raise RequestError(400, f"unknown parameter(s) {', '.join(map(repr, extra))}; known: {', '.join(known)}")


def _check(name: str, value: Any) -> Any:
    try:
        return option(name).check(value)
    except (TypeError, ValueError) as exc:
        raise RequestError(400, str(exc)) from None


@dataclass(frozen=True)
class SampleRequest:
    """What one stream draws: the model's name and every sampling control
    (missing ones take the table's defaults; a missing or null seed means a
    random one)."""

    model: str
    length: int
    temperature: float
    prime: str | None
    top_k: int
    top_p: float
    greedy: bool
    seed: int | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], max_chars: int) -> SampleRequest:
        _unknown(obj, ("model", *SAMPLE_PARAMS))
        model = _model_name(obj)
        values = {name: _check(name, obj.get(name, default(name))) for name in SAMPLE_PARAMS if name != "seed"}
        seed = obj.get("seed")
        values["seed"] = None if seed is None else _check("seed", seed)
        if values["prime"] == "":
            values["prime"] = None  # an empty prime field means the default start, as on the command line
        chars = values["length"] + len(values["prime"] or "")
        if chars > max_chars:
            raise RequestError(
                429,
                f"this request asks for {chars:,} characters (prime and length); this server allows at most "
                f"{max_chars:,} per request",
            )
        return cls(model=model, **values)

    def controls(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`CharRNN.sample_stream <charrnn_ext.model.CharRNN.sample_stream>`
        besides the length and the seed."""
        return {
            "temperature": self.temperature,
            "prime": self.prime,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "greedy": self.greedy,
        }


@dataclass(frozen=True)
class TraceRequest:
    """A text to explain with a model: per-character surprisal, the ``top_k``
    most probable characters and the units' activations."""

    model: str
    text: str
    top_k: int

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], max_chars: int) -> TraceRequest:
        _unknown(obj, ("model", "text", "top_k"))
        model = _model_name(obj)
        text = obj.get("text")
        if not isinstance(text, str) or len(text) < 2:
            raise RequestError(400, f"text must be a string of at least 2 characters, got {shown(text)}")
        if len(text) > max_chars:
            raise RequestError(
                429, f"the text has {len(text):,} characters; this server traces at most {max_chars:,} per request"
            )
        top_k = _check("top_k", obj.get("top_k", TRACE_TOP_K))
        if top_k < 1:
            raise RequestError(400, f"top_k of a trace must be at least 1, got {top_k}")
        return cls(model=model, text=text, top_k=top_k)
