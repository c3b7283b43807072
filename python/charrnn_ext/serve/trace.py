"""The seam to the explain view (:mod:`charrnn_ext.explain`).

The server offers ``POST /api/trace`` and an explain panel when that module
can be imported: ``charrnn_ext.explain.build_payload(model, text, top_k=5)``
returns a JSON-able dict (per-character surprisal, the most probable
characters, the units' activations), and the scripts and style sheets shipped
beside it (package data of ``charrnn_ext.explain``) define
``window.charrnnExplain.render(element, payload)``; the page loads them from
``/explain/<file>``. Without the module ``/api/info`` says ``"trace": false``,
the page hides the panel and ``/api/trace`` answers 501.
"""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["EXPLAIN_MODULE", "TraceSupport", "find_trace"]

EXPLAIN_MODULE = "charrnn_ext.explain"
#: The asset files of the explain module the page loads.
ASSET_SUFFIXES = (".js", ".css")


class TraceSupport:
    """What the server knows of the explain module: ``build_payload`` (None
    when it is missing), the folder of its assets and their names, and why
    it is missing."""

    def __init__(
        self,
        build_payload: Callable[..., dict[str, Any]] | None,
        assets_dir: Path | None,
        assets: list[str],
        reason: str,
    ):
        self.build_payload = build_payload
        self.assets_dir = assets_dir
        self.assets = assets
        self.reason = reason

    @property
    def available(self) -> bool:
        return self.build_payload is not None


def find_trace(module_name: str = EXPLAIN_MODULE) -> TraceSupport:
    """The explain module's entry points, if it can be imported."""
    try:
        module = importlib.import_module(module_name)
        build = module.build_payload
    except (ImportError, AttributeError) as exc:
        return TraceSupport(None, None, [], f"the explain view is not available in this installation ({exc})")
    folder = Path(str(importlib.resources.files(module_name)))
    assets = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix in ASSET_SUFFIXES
    )
    return TraceSupport(build, folder, assets, "")
