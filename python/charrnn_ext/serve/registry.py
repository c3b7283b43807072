"""The models one ``charrnn serve`` offers: found once under the PATH it was
given, loaded once, and shared by every request.

PATH may be a checkpoint (``.npz``), a run folder (its ``best.npz``, else its
``last.npz``), or a folder holding run folders and checkpoints at any depth
up to :data:`MAX_DEPTH` (``runs/``, a sweep's ``--out``). Each model gets a
name: its path relative to PATH (the file or folder name when PATH is the
model itself). Requests name a model by that name only: the name is a key of
a dictionary built here, never a path joined to PATH, so no request can
reach a file PATH does not hold. Links that lead out of PATH are not
followed.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model import CharRNN
from ..runfolder import RunFolder

__all__ = ["MAX_DEPTH", "ModelEntry", "Registry"]

#: How deep under PATH models are looked for (a sweep's trials are at depth 2).
MAX_DEPTH = 4
#: The checkpoint a run folder is served from, in order of preference.
RUN_CHECKPOINTS = ("best.npz", "last.npz")


@dataclass(frozen=True)
class ModelEntry:
    """One servable model and what the picker shows of it."""

    name: str
    path: Path
    model: CharRNN
    val_loss: float | None
    trained: str  # UTC time the checkpoint was written, "YYYY-MM-DD HH:MM"

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "name": self.name,
            "cell": m.cell,
            "layers": m.layers,
            "hidden": m.hidden,
            "vocab_size": m.K,
            "params": m.n_params,
            "dtype": m.meta()["dtype"],
            "val_loss": self.val_loss,
            "trained": self.trained,
        }


class Registry:
    """The models under ``root``, loaded at construction. ``warn`` is told
    about every file that looked like a model but could not be loaded (it is
    left out). FileNotFoundError if ``root`` does not exist, ValueError if it
    holds no model that loads."""

    def __init__(self, root: str | os.PathLike[str], warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(
                f"{self.root} does not exist; expected a checkpoint, a run folder or a folder of runs"
            )
        self.entries: dict[str, ModelEntry] = {}
        self.skipped: list[str] = []
        for name, path, folder in _candidates(self.root):
            try:
                entry = _load(name, path, folder)
            except (ValueError, OSError) as exc:
                self.skipped.append(f"{path}: {exc}")
                if warn is not None:
                    warn(f"skipping {path}: {exc}")
                continue
            self.entries[name] = entry
        if not self.entries:
            raise ValueError(
                f"{self.root} holds no model that loads: expected a .npz checkpoint, a run folder (with best.npz or "
                f"last.npz) or a folder of those, up to {MAX_DEPTH} levels deep"
            )

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> ModelEntry | None:
        """The model called ``name``, or None; ``name`` is only ever a key."""
        return self.entries.get(name)

    def info(self) -> list[dict[str, Any]]:
        return [e.info() for e in self.entries.values()]


def _candidates(root: Path) -> Iterator[tuple[str, Path, Path | None]]:
    """(name, checkpoint, run folder or None) of every model under ``root``, sorted by name."""
    if root.is_file():
        yield root.name, root, None
        return
    found: list[tuple[str, Path, Path | None]] = []
    top = root.resolve()
    for here, dirs, files in os.walk(root, followlinks=False):
        folder = Path(here)
        rel = folder.relative_to(root)
        ckpt = next((folder / f for f in RUN_CHECKPOINTS if f in files), None)
        if ckpt is not None and _inside(ckpt, top):
            name = root.resolve().name if rel == Path(".") else rel.as_posix()
            found.append((name, ckpt, folder))
            dirs.clear()  # a run folder's contents are its own
            continue
        for f in files:
            path = folder / f
            if f.endswith(".npz") and not f.startswith(".") and _inside(path, top):
                found.append(((rel / f).as_posix(), path, None))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if len(rel.parts) < MAX_DEPTH else []
    yield from sorted(found, key=lambda t: t[0])


def _inside(path: Path, top: Path) -> bool:
    """True if ``path``, links resolved, lies under ``top`` (a link out of PATH is not served)."""
    try:
        return path.resolve().is_relative_to(top)
    except OSError:
        return False


def _load(name: str, path: Path, folder: Path | None) -> ModelEntry:
    model = CharRNN.load(path)
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")
    return ModelEntry(name=name, path=path, model=model, val_loss=_val_loss(model, folder), trained=stamp)


def _val_loss(model: CharRNN, folder: Path | None) -> float | None:
    """The run's final validation loss per character (summary.json) or, for
    a run still going or a bare checkpoint, the last one measured in training."""
    if folder is not None and (folder / "summary.json").is_file():
        try:
            value = RunFolder(folder).read_json("summary.json").get("final_val_loss")
        except ValueError:
            value = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    history = [] if model.state is None else model.state.history
    for row in reversed(history):
        if row.val_loss is not None and math.isfinite(row.val_loss):
            return float(row.val_loss)
    return None
