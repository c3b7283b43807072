"""A run folder and the single producer of every file in it.

| file | contents |
|---|---|
| config.json | the model, its training options, the text, the run's length |
| metrics.csv | step, epoch, loss, smooth loss, validation loss per character |
| samples.md | the text synthesised at every sample point |
| gradcheck.md | the gradient check of this model's cell and vocabulary |
| last.npz, best.npz | the latest training state and the best model |
| summary.json | the final evaluation (finished runs) |
| loss.png | smooth loss against update, with the validation points |
| report.md | all of it in one document |

Every file is written atomically (:mod:`charrnn_ext.fileio`). matplotlib
is imported only when loss.png is drawn.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint, save_checkpoint
from .fileio import atomic_write_bytes, atomic_write_text, remove_stale_temp_files
from .report import report_markdown, samples_markdown
from .state import Checkpoint, MetricRow, SampleRecord

__all__ = ["METRICS_COLUMNS", "RUN_FILES", "RunFolder", "plot_losses", "read_metrics_csv", "write_report"]

#: Files a finished run folder holds.
RUN_FILES = ("config.json", "metrics.csv", "samples.md", "gradcheck.md", "last.npz", "best.npz", "summary.json",
             "loss.png", "report.md")

METRICS_COLUMNS = ("step", "epoch", "loss", "smooth_loss", "val_loss", "val_chars")


def metrics_csv(history: Sequence[MetricRow]) -> str:
    """metrics.csv text; floats are written with repr so they read back exactly."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRICS_COLUMNS)
    for r in history:
        w.writerow([r.step, r.epoch, repr(float(r.loss)), repr(float(r.smooth_loss)),
                    "" if r.val_loss is None else repr(float(r.val_loss)),
                    "" if r.val_loss is None else r.val_chars])
    return buf.getvalue()


def read_metrics_csv(path: str | os.PathLike[str]) -> list[MetricRow]:
    """Parse a metrics.csv written by a run."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [MetricRow(step=int(r["step"]), epoch=int(r["epoch"]), loss=float(r["loss"]),
                      smooth_loss=float(r["smooth_loss"]),
                      val_loss=float(r["val_loss"]) if r["val_loss"] else None,
                      val_chars=int(r["val_chars"]) if r["val_chars"] else 0) for r in rows]


def plot_losses(path: str | os.PathLike[str], history: Sequence[MetricRow], samples: Sequence[SampleRecord],
                chunk_chars: int, final: tuple[int, float | None] | None = None) -> Path:
    """Draw the smooth training loss against the update step, with the
    validation losses (per character × chunk_chars, the characters one update
    sees) as points, and write the PNG atomically."""
    # A bare Figure renders with the Agg canvas and leaves pyplot's backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if history:
        ax.plot([r.step for r in history], [r.smooth_loss for r in history], color="tab:blue", lw=1.5,
                label=f"smooth training loss (summed over the {chunk_chars} chars of an update)")
    pts = [(r.step, r.val_loss * chunk_chars) for r in samples if r.val_loss is not None]
    if pts:
        ax.plot(*zip(*pts), "o", color="tab:orange", ms=4,
                label=f"validation loss per char × {chunk_chars} (start of val split)")
    if final is not None and final[1] is not None:
        ax.plot([final[0]], [final[1] * chunk_chars], "D", color="tab:red", ms=6,
                label=f"final validation loss per char × {chunk_chars} (whole val split)")
    ax.set_xlabel("update step")
    ax.set_ylabel(f"loss over {chunk_chars} characters (nats)")
    ax.set_title("Training progress")
    ax.grid(True, alpha=0.3)
    if history or pts:
        ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


LOCK_FILE = ".lock"


def _own(name: str) -> bool:
    """A file this package writes in a run folder (or the temporary file of one)."""
    return name in RUN_FILES or name == LOCK_FILE or any(
        name.startswith(f".{f}.") and name.endswith(".tmp") for f in RUN_FILES)


class RunFolder:
    """The files of one run, written by :class:`~charrnn_ext.training.Trainer`
    and rebuilt by ``charrnn report``. While a run writes to it, the folder
    is locked (an exclusive lock on .lock, released when the process ends
    however it ends), so that two runs cannot mix their files."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock: int | None = None
        self.created = False

    def file(self, name: str) -> Path:
        return self.path / name

    def open_for_run(self, fresh: bool, force: bool = False) -> None:
        """Create and lock the folder for a run. A fresh run needs a new or
        empty folder: one holding a run (last.npz) or anything else is
        refused unless ``force``, and then only the run's own files are
        replaced. Temporary files of writes a crash cut short are deleted."""
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"run folder {self.path} exists and is not a directory")
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        try:
            if not force:
                others = sorted(p.name for p in self.path.iterdir() if not _own(p.name))
                if others:
                    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                    raise ValueError(f"{self.path} holds files that are not part of a charrnn run ({shown}); choose "
                                     f"a new or empty folder, or pass --force to write the run there (only the run's "
                                     f"own files are replaced)")
                if fresh:
                    ours = sorted(p.name for p in self.path.iterdir() if p.name in RUN_FILES)
                    if "last.npz" in ours:
                        raise ValueError(f"{self.path} already holds a run (last.npz); resume it with "
                                         f"--resume {self.path}, choose another folder, or pass --force to start "
                                         f"a new run there")
                    if ours:
                        raise ValueError(f"{self.path} already holds {', '.join(ours)} but no resumable run; "
                                         f"choose another folder, or pass --force to replace them")
            remove_stale_temp_files(self.path, RUN_FILES)
        except BaseException:
            self.unlock()
            raise

    def lock(self) -> None:
        """Take the folder's lock, or raise if another process holds it."""
        if self._lock is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        fd = os.open(self.file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ValueError(f"another charrnn process (pid {holder}) is writing to {self.path}; wait for it to "
                             f"end or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def discard_if_unused(self) -> bool:
        """After a run that saved nothing resumable: remove the files it wrote,
        and the folder if this run created it and it is now empty. True if
        the folder is gone."""
        if self.file("last.npz").exists():
            return False
        for name in ("config.json", "gradcheck.md", LOCK_FILE):
            self.file(name).unlink(missing_ok=True)
        self.unlock()
        if self.created and not any(self.path.iterdir()):
            self.path.rmdir()
            return True
        return False

    # -- writers ---------------------------------------------------------------

    def write_json(self, name: str, obj: dict[str, Any]) -> None:
        atomic_write_text(self.file(name), json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_gradcheck(self, text: str) -> None:
        atomic_write_text(self.file("gradcheck.md"), text.rstrip() + "\n")

    def write_checkpoints(self, last: Checkpoint, best: Checkpoint | None) -> None:
        save_checkpoint(self.file("last.npz"), last)
        if best is not None:
            save_checkpoint(self.file("best.npz"), best)

    def write_records(self, history: Sequence[MetricRow], samples: Sequence[SampleRecord]) -> None:
        atomic_write_text(self.file("metrics.csv"), metrics_csv(history))
        atomic_write_text(self.file("samples.md"), samples_markdown(samples))

    def write_plot(self, history: Sequence[MetricRow], samples: Sequence[SampleRecord], chunk_chars: int,
                   final: tuple[int, float | None] | None = None) -> None:
        plot_losses(self.file("loss.png"), history, samples, chunk_chars, final)

    def write_report(self, plot: bool = True) -> Path:
        """(Re)build report.md (and loss.png unless plot is False) from the
        folder's config.json, last.npz, summary.json and gradcheck.md."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder not found: {self.path}")
        for name in ("config.json", "last.npz"):
            if not self.file(name).exists():
                raise FileNotFoundError(f"{self.path} is not a run folder: {name} is missing")
        config = self.read_json("config.json")
        ckpt = load_checkpoint(self.file("last.npz"))
        if ckpt.state is None:
            raise ValueError(f"{self.file('last.npz')} holds no training state")
        summary = self.read_json("summary.json") if self.file("summary.json").exists() else None
        gc = self.file("gradcheck.md")
        gradcheck = gc.read_text(encoding="utf-8") if gc.exists() else None
        if plot:
            train = config["train"]
            final = None if summary is None else (summary["step"], summary["final_val_loss"])
            self.write_plot(ckpt.state.history, ckpt.state.samples,
                            int(train["seq_length"]) * int(train["batch_size"]), final)
        return atomic_write_text(self.file("report.md"), report_markdown(config, ckpt, summary, gradcheck))

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON object file of the folder; ValueError naming the file if it is not one."""
        path = self.file(name)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{path} is not a readable JSON file ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path} must hold a JSON object")
        return obj


def write_report(run_dir: str | os.PathLike[str], plot: bool = True) -> Path:
    """(Re)build report.md (and loss.png unless plot is False) in a run folder."""
    return RunFolder(run_dir).write_report(plot)
