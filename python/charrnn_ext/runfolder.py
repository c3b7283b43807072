"""A run folder and the single producer of every file in it.

| file | contents |
|---|---|
| config.json | the model, its training options, the text, the run's length |
| metrics.csv | step, epoch, losses per character, and the update's summed losses |
| samples.md | the text synthesised at every sample point |
| gradcheck.md | the gradient check of this model's cell and vocabulary |
| last.npz, best.npz | the latest training state and the best model |
| summary.json | the final evaluation (finished runs) |
| loss.png | losses per character against update: smooth, raw, validation |
| explain.html | what the best model predicts and which units track what, on held-out text |
| report.md | all of it in one document |

Every file is written atomically (:mod:`charrnn_ext.fileio`). matplotlib
is imported only when loss.png is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint, save_checkpoint
from .fileio import (
    atomic_write_bytes,
    atomic_write_text,
    check_fields,
    open_lock_file,
    printable,
    read_json_file,
    read_text_file,
    remove_stale_temp_files,
)
from .report import report_markdown, samples_markdown
from .state import Checkpoint, MetricRow, SampleRecord

__all__ = [
    "METRICS_COLUMNS",
    "RUN_FILES",
    "RunFolder",
    "StaleLockWarning",
    "plot_losses",
    "read_metrics_csv",
    "write_report",
]

#: Files a finished run folder holds.
RUN_FILES = (
    "config.json",
    "metrics.csv",
    "samples.md",
    "gradcheck.md",
    "last.npz",
    "best.npz",
    "summary.json",
    "loss.png",
    "explain.html",
    "report.md",
)

#: The columns of metrics.csv: losses per character first (what a person
#: reads), then the characters of one update and the losses summed over them
#: (the engine's figures, exact: the classic smooth loss is the last column).
METRICS_COLUMNS = (
    "step",
    "epoch",
    "loss_per_char",
    "smooth_loss_per_char",
    "val_loss_per_char",
    "val_chars",
    "update_chars",
    "loss_sum",
    "smooth_loss_sum",
)


def metrics_csv(history: Sequence[MetricRow], update_chars: int) -> str:
    """metrics.csv text; floats are written with repr so that the summed
    columns read back exactly."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRICS_COLUMNS)
    for r in history:
        w.writerow(
            [
                r.step,
                r.epoch,
                repr(float(r.loss) / update_chars),
                repr(float(r.smooth_loss) / update_chars),
                "" if r.val_loss is None else repr(float(r.val_loss)),
                "" if r.val_loss is None else r.val_chars,
                update_chars,
                repr(float(r.loss)),
                repr(float(r.smooth_loss)),
            ]
        )
    return buf.getvalue()


def read_metrics_csv(path: str | os.PathLike[str]) -> list[MetricRow]:
    """Parse a metrics.csv written by a run (a regular file of bounded size; also
    the older layout, whose loss columns were summed over the update and named
    loss, smooth_loss, val_loss)."""
    rows = list(csv.DictReader(io.StringIO(read_text_file(path, _MAX_TEXT_BYTES), newline="")))
    new = bool(rows) and "loss_sum" in rows[0]
    old = ("loss", "smooth_loss", "val_loss")
    loss, smooth, val = ("loss_sum", "smooth_loss_sum", "val_loss_per_char") if new else old
    try:
        return [
            MetricRow(
                step=int(r["step"]),
                epoch=int(r["epoch"]),
                loss=float(r[loss]),
                smooth_loss=float(r[smooth]),
                val_loss=float(r[val]) if r[val] else None,
                val_chars=int(r["val_chars"]) if r["val_chars"] else 0,
            )
            for r in rows
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable metrics file ({printable(str(exc))})") from None


def plot_losses(
    path: str | os.PathLike[str],
    history: Sequence[MetricRow],
    samples: Sequence[SampleRecord],
    chunk_chars: int,
    final: tuple[int, float | None] | None = None,
) -> Path:
    """Draw the losses per character against the update step: the smooth
    training loss, the raw loss of the update at each record point faintly
    behind it, and the validation losses as points; write the PNG atomically.
    ``chunk_chars`` is the characters one update sees (the history's losses
    are summed over them)."""
    # A bare Figure renders with the Agg canvas and leaves pyplot's backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if history:
        steps = [r.step for r in history]
        ax.plot(
            steps,
            [r.loss / chunk_chars for r in history],
            color="tab:blue",
            lw=0.6,
            alpha=0.3,
            label="training loss of the update at each record point",
        )
        ax.plot(
            steps,
            [r.smooth_loss / chunk_chars for r in history],
            color="tab:blue",
            lw=1.5,
            label="smooth training loss",
        )
    pts = [(r.step, r.val_loss) for r in samples if r.val_loss is not None]
    if pts:
        ax.plot(*zip(*pts), "o", color="tab:orange", ms=4, label="validation loss (start of the validation split)")
    if final is not None and final[1] is not None:
        ax.plot([final[0]], [final[1]], "D", color="tab:red", ms=6, label="final validation loss (whole split)")
    ax.set_xlabel("update step")
    ax.set_ylabel("loss per character (nats)")
    ax.set_title("Training progress")
    ax.grid(True, alpha=0.3)
    if history or pts:
        ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


LOCK_FILE = ".lock"

#: What ``charrnn export RUN`` writes into a run folder by default (its checkpoints' exports).
EXPORT_FILES = ("best.onnx", "best.pt", "last.onnx", "last.pt")


def _own(name: str) -> bool:
    """A file this package writes in a run folder (or the temporary file of one)."""
    return (
        name in RUN_FILES
        or name in EXPORT_FILES
        or name == LOCK_FILE
        or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in RUN_FILES)
    )


class StaleLockWarning(UserWarning):
    """A run folder's .lock file was left by a run that was killed."""


def _alive(pid: str) -> bool:
    """True if the process ``pid`` (text from a lock file) exists."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


#: The model fields config.json and last.npz of one run agree on (charrnn report checks them).
_SAME_MODEL = ("K", "cell", "dtype", "hidden", "layers", "seed", "sig", "forget_bias")


class RunFolder:
    """The files of one run, written by :class:`~charrnn_ext.training.Trainer`
    and rebuilt by ``charrnn report``. While a run writes to it, the folder
    is locked (an exclusive lock on .lock, released when the process ends
    however it ends), so that two runs cannot mix their files. The object
    remembers what it created and wrote, so that a run that ends before its
    first checkpoint can remove exactly that and nothing else."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock: int | None = None
        self._made_lock = False  # this object created the .lock file
        self.made_dirs: list[Path] = []  # folders this object created, outermost first
        self.written: set[str] = set()  # files this object wrote

    @property
    def created(self) -> bool:
        """True if this object created the run folder."""
        return bool(self.made_dirs)

    def file(self, name: str) -> Path:
        return self.path / name

    def open_for_run(self, fresh: bool, force: bool = False) -> None:
        """Create and lock the folder for a run. A fresh run needs a new or
        empty folder: one holding a run (last.npz) or anything else is
        refused unless ``force``, and then the run's own files from before
        are removed (other files are left alone). Temporary files of writes
        a crash cut short are deleted. A refusal leaves the folder as it was."""
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"run folder {self.path} exists and is not a directory")
        missing = [d for d in (self.path, *self.path.parents) if not d.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        self.made_dirs = [d for d in reversed(missing) if d.is_dir()]
        try:
            self.lock()
            if not force:
                others = sorted(p.name for p in self.path.iterdir() if not _own(p.name))
                if others:
                    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                    raise ValueError(
                        f"{self.path} holds files that are not part of a charrnn run ({shown}); choose "
                        f"a new or empty folder, or pass --force to write the run there (only the run's "
                        f"own files are replaced)"
                    )
                if fresh:
                    ours = sorted(p.name for p in self.path.iterdir() if p.name in RUN_FILES)
                    if "last.npz" in ours:
                        raise ValueError(
                            f"{self.path} already holds a run (last.npz); resume it with "
                            f"--resume {self.path}, choose another folder, or pass --force to start "
                            f"a new run there"
                        )
                    if ours:
                        raise ValueError(
                            f"{self.path} already holds {', '.join(ours)} but no resumable run; "
                            f"choose another folder, or pass --force to replace them"
                        )
            elif fresh:  # a new run replaces the files of the one before, all of them
                for name in RUN_FILES:
                    target = self.file(name)
                    if target.is_file() or target.is_symlink():
                        target.unlink()
            remove_stale_temp_files(self.path, RUN_FILES)
        except BaseException:
            self.discard()
            raise

    def lock(self) -> None:
        """Take the folder's lock, or raise if another process holds it. A
        .lock file that nobody holds was left by a run that was killed (a run
        removes it when it ends): it is taken over with a StaleLockWarning
        naming the process that left it."""
        if self._lock is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        path = self.file(LOCK_FILE)
        while True:
            fd, made = open_lock_file(path)  # never through a link, never a FIFO or device
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise ValueError(
                    f"another charrnn process (pid {holder}) is writing to {self.path}; wait for it to "
                    f"end or choose another folder"
                ) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we took it: lock the one that is there now
        if not made:
            left = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            warnings.warn(
                f"{path} was left by a run that ended without releasing it (pid {left}, "
                f"{'still running but not holding it' if _alive(left) else 'no longer running'}); "
                f"the folder's lock is taken over",
                StaleLockWarning,
                stacklevel=2,
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock, self._made_lock = fd, made

    def unlock(self) -> None:
        """Release the lock and remove the .lock file (while still holding
        it), so that a finished run leaves none behind."""
        if self._lock is not None:
            self.file(LOCK_FILE).unlink(missing_ok=True)
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def discard(self) -> bool:
        """Undo a run that saved nothing resumable: remove the files this
        object wrote (unless one is a checkpoint), the lock file if it made
        it, and the folders it made if they are now empty. Files it did not
        write are never touched. True if the run folder is gone."""
        if "last.npz" in self.written:
            self.unlock()
            return False
        for name in sorted(self.written):
            self.file(name).unlink(missing_ok=True)
        self.written.clear()
        self.unlock()  # removes the lock file
        for d in reversed(self.made_dirs):
            try:
                d.rmdir()
            except OSError:  # not empty (or already gone): leave it
                break
        self.made_dirs = [d for d in self.made_dirs if d.exists()]
        return not self.path.exists()

    # -- writers ---------------------------------------------------------------

    def _text(self, name: str, text: str) -> Path:
        """Write run file ``name`` and note it as written by this object."""
        path = atomic_write_text(self.file(name), text)
        self.written.add(name)
        return path

    def write_json(self, name: str, obj: dict[str, Any]) -> None:
        self._text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_gradcheck(self, text: str) -> None:
        self._text("gradcheck.md", text.rstrip() + "\n")

    def write_checkpoints(self, last: Checkpoint, best: Checkpoint | None) -> None:
        save_checkpoint(self.file("last.npz"), last)
        self.written.add("last.npz")
        if best is not None:
            save_checkpoint(self.file("best.npz"), best)
            self.written.add("best.npz")

    def write_records(self, history: Sequence[MetricRow], samples: Sequence[SampleRecord], update_chars: int) -> None:
        self._text("metrics.csv", metrics_csv(history, update_chars))
        self._text("samples.md", samples_markdown(samples, update_chars))

    def write_explain(self, payload: dict[str, Any]) -> None:
        """explain.html: the page of :mod:`charrnn_ext.explain` for ``payload``."""
        from .explain.page import write_explain

        write_explain(payload, self.file("explain.html"))
        self.written.add("explain.html")

    def write_plot(
        self,
        history: Sequence[MetricRow],
        samples: Sequence[SampleRecord],
        chunk_chars: int,
        final: tuple[int, float | None] | None = None,
    ) -> None:
        plot_losses(self.file("loss.png"), history, samples, chunk_chars, final)
        self.written.add("loss.png")

    def write_report(self, plot: bool = True) -> Path:
        """(Re)build report.md (and loss.png unless plot is False) from the
        folder's config.json, last.npz, summary.json and gradcheck.md. A file
        that lacks a field the report needs is refused with its name and the field's."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder not found: {self.path}")
        for name in ("config.json", "last.npz"):
            if not self.file(name).exists():
                raise FileNotFoundError(f"{self.path} is not a run folder: {name} is missing")
        config = self.read_json("config.json")
        check_fields(self.file("config.json"), config, _CONFIG_FIELDS)
        ckpt = load_checkpoint(self.file("last.npz"))
        if ckpt.state is None:
            raise ValueError(f"{self.file('last.npz')} holds no training state")
        model = config.get("model")
        model = model if isinstance(model, dict) else {}
        for key in _SAME_MODEL:
            if key in model and model[key] != ckpt.meta.get(key):
                raise ValueError(
                    f"{self.file('config.json')} and {self.file('last.npz')} are of different runs: the model's "
                    f"{key} is {model[key]!r} in one and {ckpt.meta.get(key)!r} in the other"
                )
        summary = None
        if self.file("summary.json").exists():
            summary = self.read_json("summary.json")
            check_fields(self.file("summary.json"), summary, _SUMMARY_FIELDS)
            if isinstance(summary.get("step"), int) and summary["step"] > ckpt.state.step:
                raise ValueError(
                    f"{self.file('summary.json')} ends at update {summary['step']:,}, after "
                    f"{self.file('last.npz')} (update {ckpt.state.step:,}): they are of different runs"
                )
        gc = self.file("gradcheck.md")
        gradcheck = self.read_text("gradcheck.md") if gc.exists() else None
        if plot:
            train = config["train"]
            final = None if summary is None else (summary["step"], summary["final_val_loss"])
            self.write_plot(
                ckpt.state.history, ckpt.state.samples, int(train["seq_length"]) * int(train["batch_size"]), final
            )
        return self._text("report.md", report_markdown(config, ckpt, summary, gradcheck))

    def read_text(self, name: str) -> str:
        """A UTF-8 text file of the folder (a regular file of bounded size);
        ValueError naming the file if it is not one."""
        return read_text_file(self.file(name), _MAX_TEXT_BYTES)

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON object file of the folder; ValueError naming the file if it is not one."""
        return read_json_file(self.file(name), _MAX_TEXT_BYTES)

    def run_info(self) -> dict[str, Any]:
        """How the run was asked for (the "run" object of config.json; {} if there is no config.json)."""
        if not self.file("config.json").exists():
            return {}
        config = self.read_json("config.json")
        check_fields(self.file("config.json"), config, {"run": "dict?"})
        info = config.get("run") or {}
        check_fields(self.file("config.json"), info, {"preset": "str?"}, "run.")
        return info


#: The largest text file (config.json, summary.json with its passage, gradcheck.md) the package reads back.
_MAX_TEXT_BYTES = 256 << 20

#: The fields report.md needs, as :func:`~charrnn_ext.fileio.check_fields` takes them.
_CONFIG_FIELDS: dict[str, Any] = {
    "model": {"cell": "str", "layers": "int", "hidden": "int", "dtype": "str", "n_params": "int?"},
    "train": {
        "seq_length": "int",
        "batch_size": "int",
        "val_chars": "int",
        "sample_every": "int",
        "log_every": "int",
        "sample_chars": "int",
    },
    "corpus": {"source": "str", "n_chars": "int", "n_train": "int", "n_val": "int"},
    "steps_per_epoch": "int",
    "run": "dict?",
    "package_version": "str?",
}
_SUMMARY_FIELDS: dict[str, Any] = {
    "step": "int",
    "val_chars": "int",
    "final_val_loss": "num?",
    "best_val_loss": "num?",
    "passage": "str?",
}


def write_report(run_dir: str | os.PathLike[str], plot: bool = True) -> Path:
    """(Re)build report.md (and loss.png unless plot is False) in a run
    folder, holding its lock: a run still writing there is refused rather
    than read half-way (its checkpoint and its records may be of different
    updates)."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise FileNotFoundError(f"run folder not found: {folder.path}")
    folder.lock()
    try:
        return folder.write_report(plot)
    finally:
        folder.unlock()
