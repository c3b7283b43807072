"""The explain page: the payload (:mod:`.payload`) in one self-contained HTML
file, with the page's script and style sheet inline and nothing loaded from
anywhere (its Content-Security-Policy forbids every request), or the payload
alone as JSON. Files are written atomically.

The assets are package data (``assets/``): ``explain.js`` defines
``window.charrnnExplain.render(element, payload)``, which a web server can
serve with ``explain.css`` and call on a payload it fetched (:func:`asset`).
"""

from __future__ import annotations

import html
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text

__all__ = ["FORMATS", "asset", "page_html", "payload_json", "write_explain"]

#: Output formats of :func:`write_explain`.
FORMATS = ("html", "json")

_ASSETS = ("explain.html", "explain.js", "explain.css")
_SLOT = re.compile(r"\{\{(TITLE|CSS|JS|PAYLOAD)\}\}")


def asset(name: str) -> str:
    """The text of one of the page's assets: explain.html (the template),
    explain.js or explain.css."""
    if name not in _ASSETS:
        raise ValueError(f"unknown asset {name!r}; expected one of {', '.join(_ASSETS)}")
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def payload_json(payload: dict[str, Any]) -> str:
    """The payload as compact JSON (standard JSON: no NaN)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def page_html(payload: dict[str, Any]) -> str:
    """The whole page: the template with the style sheet, the script and the
    payload inline. Every "<" of the payload's JSON is written as \\u003c, so
    no text can close its script element."""
    source = payload.get("source")
    values = {
        "TITLE": html.escape(f"charrnn explain: {source}" if source else "charrnn explain"),
        "CSS": asset("explain.css"),
        "JS": asset("explain.js"),
        "PAYLOAD": payload_json(payload).replace("<", "\\u003c"),
    }
    return _SLOT.sub(lambda m: values[m.group(1)], asset("explain.html"))


def write_explain(payload: dict[str, Any], path: str | os.PathLike[str], fmt: str = "html") -> Path:
    """Write the page (``fmt`` "html") or the payload ("json") to ``path``, atomically."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    text = page_html(payload) if fmt == "html" else payload_json(payload) + "\n"
    return atomic_write_text(path, text)
