"""The results of a sweep and the files that show them, in its output folder:

| path | contents |
|---|---|
| trials/NNN/ | trial NNN's run folder, as its worker sent it back, plus trial.json (its outcome) |
| results.csv | a row per finished trial: trial, state, val_loss, updates, seconds, worker, the searched options |
| best | the best complete trial's run folder (a relative link to trials/NNN) |
| sweep.png | validation loss against update for every trial; pruned ones end in a cross |
| report.md | the table sorted by val_loss, the best trial's charrnn train command, the importances |

A trial's folder is written in full under a temporary name and then
renamed, so it exists complete or not at all; every other file is written
atomically (:mod:`charrnn_ext.fileio`). Nothing here knows Optuna or Dask:
the sweep hands in plain records.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import UnreadableFile, atomic_write_bytes, atomic_write_text, check_fields, printable, read_json_file
from ..report import fence, fmt
from ..runfolder import RUN_FILES, read_metrics_csv

__all__ = [
    "COLUMNS",
    "STATES",
    "ResultsTable",
    "TrialRecord",
    "check_sweep_id",
    "new_sweep_id",
    "read_trial_record",
    "read_trial_records",
    "remove_partial_trial_folders",
    "trial_folder",
    "write_summary_files",
    "write_trial_folder",
]

#: How a trial ended.
STATES = ("complete", "pruned", "failed")

#: The first columns of results.csv; one column per searched option follows.
COLUMNS = ("trial", "state", "val_loss", "updates", "seconds", "worker")

TRIAL_JSON = "trial.json"

#: A sweep's id: 12 hexadecimal digits (it names the sweep's scratch folder on every worker).
_SWEEP_ID = re.compile(r"[0-9a-f]{12}")


def new_sweep_id() -> str:
    return uuid.uuid4().hex[:12]


def check_sweep_id(sweep_id: Any, where: str = "sweep_id") -> str:
    """``sweep_id`` if it is one this package makes (so that it can never
    name a path: no separator, no ``..``), else :class:`UnreadableFile`."""
    if not isinstance(sweep_id, str) or not _SWEEP_ID.fullmatch(sweep_id):
        raise UnreadableFile(f"{where} must be 12 hexadecimal digits, got {printable(repr(sweep_id), 60)}")
    return sweep_id


@dataclass
class TrialRecord:
    """A finished trial. ``val_loss``: per character, of the run's final
    model on the whole validation split (complete: summary.json's
    final_val_loss), or the last value reported to the pruner (pruned);
    ``seconds``: the trial's wall time on its workers; ``params``: the
    searched options' values; ``options``: every option it ran with;
    ``resumed_from``: the update its run continued from, if it was
    interrupted (its worker died, or the sweep was interrupted and resumed)."""

    number: int
    state: str
    val_loss: float | None
    updates: int
    seconds: float
    worker: str
    params: dict[str, Any]
    options: dict[str, Any]
    message: str = ""
    resumed_from: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str | os.PathLike[str] = "trial.json") -> TrialRecord:
        """The record of a trial.json; every field is checked, and an error
        names ``path`` and the field."""
        check_fields(path, data, _RECORD_FIELDS)
        if data["state"] not in STATES:
            raise UnreadableFile(f"{path}: field 'state' must be one of {', '.join(STATES)}, got {data['state']!r:.60}")
        if not math.isfinite(data["seconds"]) or data["seconds"] < 0:
            raise UnreadableFile(f"{path}: field 'seconds' must be a finite number >= 0, got {data['seconds']!r}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


#: trial.json's fields, as :func:`~charrnn_ext.fileio.check_fields` takes them.
_RECORD_FIELDS: dict[str, Any] = {
    "number": "int",
    "state": "str",
    "val_loss": "num?",
    "updates": "int",
    "seconds": "num",
    "worker": "str",
    "params": "dict",
    "options": "dict",
    "message": "str?",
    "resumed_from": "int?",
}

#: The largest trial.json read back (it holds a trial's options and a message).
MAX_TRIAL_JSON_BYTES = 1 << 20


@dataclass
class ResultsTable:
    """The finished trials of a sweep, by trial number. ``searched`` are the
    searched options' names, ``keys`` their spelling in the space (the
    column titles)."""

    rows: list[TrialRecord]
    searched: tuple[str, ...]
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS + tuple(self.keys.get(n, n.replace("_", "-")) for n in self.searched)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[TrialRecord]:
        return iter(self.rows)

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.rows)

    @property
    def best(self) -> TrialRecord | None:
        """The complete trial with the lowest validation loss (the earliest of equals)."""
        done = [r for r in self.rows if r.state == "complete" and r.val_loss is not None and math.isfinite(r.val_loss)]
        return min(done, key=lambda r: (r.val_loss, r.number)) if done else None

    def by_val_loss(self) -> list[TrialRecord]:
        """Rows sorted by validation loss, trials without one last."""
        return sorted(self.rows, key=lambda r: (r.val_loss is None, r.val_loss or 0.0, r.number))

    def as_dicts(self) -> list[dict[str, Any]]:
        """One dict per row, keyed by :attr:`columns`."""
        out = []
        for r in self.rows:
            row: dict[str, Any] = {
                "trial": r.number,
                "state": r.state,
                "val_loss": r.val_loss,
                "updates": r.updates,
                "seconds": r.seconds,
                "worker": r.worker,
            }
            for name, column in zip(self.searched, self.columns[len(COLUMNS) :]):
                row[column] = r.params.get(name)
            out.append(row)
        return out

    def csv_text(self) -> str:
        """results.csv; floats are written with repr, so they read back exactly."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for row in self.as_dicts():
            w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row.values()])
        return buf.getvalue()


# -- trial folders ----------------------------------------------------------------


def trial_folder(out: str | os.PathLike[str], number: int) -> Path:
    return Path(out) / "trials" / f"{number:03d}"


def write_trial_folder(out: str | os.PathLike[str], record: TrialRecord, files: Mapping[str, bytes]) -> Path:
    """trials/NNN/ with the run files a worker sent back and trial.json, made
    under a temporary name and renamed into place. A folder already there
    holding the same record (the same trial, recorded before an
    interruption) is kept; one holding another record (the trial failed
    when its scheduler was lost, and ran again) is replaced, so that
    trials/NNN always says what results.csv says."""
    final = trial_folder(out, record.number)
    if final.is_dir() and not final.is_symlink():
        try:
            if read_trial_record(final / TRIAL_JSON) == record:
                return final
        except (UnreadableFile, FileNotFoundError):
            pass
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        for name, data in files.items():
            if name not in RUN_FILES:  # only a run's own files, never a path
                raise ValueError(f"trial {record.number} sent back an unexpected file {name!r}")
            atomic_write_bytes(tmp / name, data)
        atomic_write_text(tmp / TRIAL_JSON, json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
        if final.exists() or final.is_symlink():
            old = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
            os.rename(final, old)  # aside, then removed with the other partial folders
            os.rename(tmp, final)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def remove_partial_trial_folders(out: str | os.PathLike[str]) -> None:
    """Delete the temporary trial folders an interrupted write left behind."""
    trials = Path(out) / "trials"
    if trials.is_dir():
        for p in trials.glob(".*.tmp"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)


def read_trial_record(path: str | os.PathLike[str]) -> TrialRecord:
    """One trial.json, read by the guarded reader and checked field by field."""
    return TrialRecord.from_json(read_json_file(path, MAX_TRIAL_JSON_BYTES), path)


def read_trial_records(out: str | os.PathLike[str]) -> dict[int, TrialRecord]:
    """The recorded trials, by number. Every trials/NNN must be a folder
    whose trial.json is a valid record of trial NNN; anything else is
    refused, naming the file and the field."""
    records = {}
    trials = Path(out) / "trials"
    if trials.is_symlink() or (trials.exists() and not trials.is_dir()):
        raise UnreadableFile(f"{trials} must be a folder of trials")
    if trials.is_dir():
        for p in sorted(trials.iterdir()):
            if p.name.startswith("."):
                continue  # a partial write, removed on resume
            if not (p.name.isdigit() and p.name.isascii() and len(p.name) >= 3) or p.is_symlink() or not p.is_dir():
                raise UnreadableFile(f"{p}: not a trial folder (trials/ holds only folders named by trial number)")
            rec = read_trial_record(p / TRIAL_JSON)
            if rec.number != int(p.name):
                raise UnreadableFile(f"{p / TRIAL_JSON}: field 'number' is {rec.number}, but the folder is {p.name}")
            records[rec.number] = rec
    return records


# -- the summary files ------------------------------------------------------------


def _point(x: float | None, spec: str = ".4f") -> str:
    return fmt(x, spec) if x is not None and math.isfinite(x) else "n/a"


def report_markdown(
    table: ResultsTable,
    header: Sequence[str],
    best_command: str | None,
    importances: Mapping[str, float] | str,
    space_toml: str,
) -> str:
    """report.md. ``header``: lines about the sweep (its settings, what is
    left to run); ``importances``: by option name, or why there are none."""
    L = ["# Sweep report", ""] + [f"- {line}" for line in header] + [""]
    best = table.best
    L += ["## Best trial", ""]
    if best is None:
        L += ["No trial has completed yet.", ""]
    else:
        L += [
            f"Trial {best.number}: validation loss {_point(best.val_loss)} per character (its final model on the "
            f"whole validation split) after {best.updates:,} updates; its run folder is `best/` "
            f"(`trials/{best.number:03d}/`). This command trains the same model again:",
            "",
        ]
        assert best_command is not None
        f = fence(best_command)
        L += [f + "bash", best_command, f, ""]
    L += [
        "## Trials",
        "",
        "Sorted by validation loss: for a complete trial, that of its final model on the whole validation split; "
        "for a pruned one, the last value it reported (on the first --val-chars characters of the split) before "
        "the pruner stopped it. Seconds are wall time on the worker.",
        "",
    ]
    cols = table.columns
    L += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.by_val_loss():
        values = [str(r.number), r.state, _point(r.val_loss), f"{r.updates:,}", f"{r.seconds:,.1f}", r.worker]
        values += [_cell(r.params.get(n)) for n in table.searched]
        L.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    L.append("")
    failed = [r for r in table.rows if r.state == "failed"]
    if failed:
        L += ["Failed trials:", ""] + [f"- trial {r.number}: {r.message}" for r in failed] + [""]
    resumed = [r for r in table.rows if r.resumed_from is not None]
    if resumed:
        L += [
            "Trials continued from their last checkpoint (after their worker died, or the sweep was interrupted "
            "and resumed): " + ", ".join(f"{r.number} (from update {r.resumed_from:,})" for r in resumed) + ".",
            "",
        ]
    L += ["## Parameter importances", ""]
    if isinstance(importances, str):
        L += [importances, ""]
    else:
        L += [
            "How much of the variation of the validation loss each searched option explains (Optuna's "
            "default importance evaluator, over the complete trials).",
            "",
            "| option | importance |",
            "|---|---|",
        ]
        L += [f"| {table.keys.get(k, k)} | {v:.3f} |" for k, v in importances.items()] + [""]
    L += ["## Validation loss during training", "", "![Validation loss of every trial](sweep.png)", "", "## Space", ""]
    f = fence(space_toml)
    L += [f + "toml", space_toml.rstrip("\n"), f, ""]
    return "\n".join(L)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def plot_sweep(path: str | os.PathLike[str], table: ResultsTable, out: str | os.PathLike[str]) -> Path:
    """sweep.png: the validation points of every trial's metrics.csv against
    the update; a pruned trial's line ends in a cross, a failed one is dotted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    best = table.best
    label_each = len(table.rows) <= 12
    drawn = False
    for r in table.rows:
        metrics = trial_folder(out, r.number) / "metrics.csv"
        if not metrics.is_file():
            continue
        pts = [(m.step, m.val_loss) for m in read_metrics_csv(metrics) if m.val_loss is not None]
        if not pts:
            continue
        xs, ys = zip(*pts)
        style = {"complete": "-", "pruned": "--", "failed": ":"}.get(r.state, "-")
        width = 2.5 if best is not None and r.number == best.number else 1.2
        label = f"trial {r.number} ({r.state})" if label_each else None
        (line,) = ax.plot(xs, ys, style, lw=width, label=label)
        if r.state == "pruned":
            ax.plot([xs[-1]], [ys[-1]], "x", color=line.get_color(), ms=9, mew=2)
        drawn = True
    ax.set_xlabel("update")
    ax.set_ylabel("validation loss per character")
    ax.set_title("Validation loss of every trial (pruned: dashed, ending in a cross)")
    ax.grid(True, alpha=0.3)
    if drawn and label_each:
        ax.legend(loc="upper right", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _link_best(out: Path, best: TrialRecord | None) -> None:
    """out/best -> trials/NNN, replaced in one step (or removed if there is no best)."""
    link = out / "best"
    if best is None:
        if link.is_symlink():
            link.unlink()
        return
    target = os.path.join("trials", f"{best.number:03d}")
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = out / f".best.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def write_summary_files(
    out: str | os.PathLike[str],
    table: ResultsTable,
    header: Sequence[str],
    best_command: str | None,
    importances: Mapping[str, float] | str,
    space_toml: str,
    plot: bool = True,
) -> None:
    """results.csv, best, report.md and (unless ``plot`` is False) sweep.png."""
    base = Path(out)
    atomic_write_text(base / "results.csv", table.csv_text())
    _link_best(base, table.best)
    if plot:
        plot_sweep(base / "sweep.png", table, base)
    atomic_write_text(base / "report.md", report_markdown(table, header, best_command, importances, space_toml))
