"""The package's version, from its installed metadata (set in pyproject.toml)."""

from __future__ import annotations

import importlib.metadata

__all__ = ["package_version"]


def package_version() -> str:
    try:
        return importlib.metadata.version("charrnn_ext")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "unknown"
