"""The Optuna side of a sweep: the sampler and the pruner, the storages the
study lives in, a copy of the study in the sweep's folder, and the
parameter importances. Used by the client (which asks and tells trials) and
by the workers (which report validation losses and ask the pruner).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ..fileio import UnreadableFile, atomic_write_bytes, read_bounded
from .settings import median_startup_trials

__all__ = [
    "PrunerSpec",
    "check_journal",
    "importances",
    "journal_storage",
    "make_sampler",
    "memory_copy",
    "quiet_optuna",
    "session_seed",
    "write_snapshot",
]


@dataclass(frozen=True)
class PrunerSpec:
    """What the client and every worker build the same pruner from.
    ``startup_trials``: complete trials the median pruner waits for;
    ``min_resource``: Hyperband's first rung (the first update reported)."""

    name: str
    startup_trials: int = 1
    min_resource: int = 1

    @classmethod
    def for_sweep(cls, name: str, trials: int, first_report: int) -> PrunerSpec:
        return cls(name, median_startup_trials(trials), max(1, first_report))

    def build(self) -> BasePruner:
        if self.name == "median":
            return MedianPruner(n_startup_trials=self.startup_trials, n_warmup_steps=0)
        if self.name == "hyperband":
            return HyperbandPruner(min_resource=self.min_resource, max_resource="auto", reduction_factor=3)
        return NopPruner()

    def describe(self) -> str:
        if self.name == "median":
            n = f"{self.startup_trials} trial has" if self.startup_trials == 1 else f"{self.startup_trials} trials have"
            return (
                f"median (stops a trial whose validation loss is above the median of the complete trials at the "
                f"same update, once {n} completed)"
            )
        if self.name == "hyperband":
            return f"hyperband (successive halving over brackets; first rung at update {self.min_resource})"
        return "none"


class _AskTellGridSampler(GridSampler):
    """Optuna's grid sampler, minus its habit of calling ``study.stop()``
    when the grid is used up: that is only allowed inside ``study.optimize``,
    and the sweep, which asks and tells outside it, never asks for more
    trials than the grid has points."""

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        return None


def make_sampler(name: str, seed: int | None, grid: dict[str, list[Any]] | None = None) -> BaseSampler:
    if name == "grid":
        assert grid is not None
        return _AskTellGridSampler(grid, seed=seed)
    if name == "random":
        return RandomSampler(seed=seed)
    return TPESampler(seed=seed)


def session_seed(seed: int | None, trials_before: int) -> int | None:
    """The sampler's seed in a session that starts after ``trials_before``
    trials: the sweep's seed itself in the first session, a seed derived from
    both later, so that a resumed sweep does not draw its first session's
    options again."""
    if seed is None or trials_before == 0:
        return seed
    return int(np.random.SeedSequence([seed, trials_before]).generate_state(1)[0])


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna without its INFO lines (one per trial), its warning that
    DaskStorage is experimental, and its warning about a step reported twice
    (a trial resumed from a checkpoint reports some steps again)."""
    logger = logging.getLogger("optuna")
    level = logger.level
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message=r".*is already reported")
            yield
    finally:
        logger.setLevel(level)


#: The largest study journal read back (a line per operation: some hundred bytes per reported value).
MAX_JOURNAL_BYTES = 512 << 20

#: The operation codes of Optuna's journal, with the fields each needs besides op_code and worker_id.
_JOURNAL_FIELDS: dict[int, tuple[str, ...]] = {
    0: ("study_name", "directions"),  # create a study
    1: ("study_id",),  # delete a study
    2: ("study_id", "user_attr"),
    3: ("study_id", "system_attr"),
    4: ("study_id",),  # create a trial
    5: ("trial_id", "param_name", "param_value_internal", "distribution"),
    6: ("trial_id", "state"),
    7: ("trial_id", "step", "intermediate_value"),
    8: ("trial_id", "user_attr"),
    9: ("trial_id", "system_attr"),
    10: ("study_id",),  # discard trials
}


@dataclass(frozen=True)
class JournalCheck:
    """What :func:`check_journal` found: the operations, the trials created,
    and the bytes of a last line a crash cut short (0: none)."""

    operations: int
    trials: int
    cut_bytes: int


def check_journal(path: str | os.PathLike[str]) -> JournalCheck:
    """Check a study journal before Optuna replays it (Optuna asserts, or
    logs a traceback, on what it does not expect): a regular file of at most
    :data:`MAX_JOURNAL_BYTES`, every line a JSON object with an operation
    Optuna knows and the fields that operation needs, every id an integer
    >= 0. A last line without its newline is the write a crash or a full
    disk cut short; it is reported (``cut_bytes``), not refused.
    :class:`UnreadableFile` names the file and the line."""
    import json

    data = read_bounded(path, MAX_JOURNAL_BYTES, "study journal")
    lines = data.split(b"\n")
    cut = lines.pop()  # after the last newline: empty, or a cut-short write
    trials = 0
    for number, line in enumerate(lines, start=1):

        def fail(why: str, number: int = number) -> UnreadableFile:
            return UnreadableFile(f"{path}: line {number} of the study journal {why}")

        try:
            op = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise fail("is not a JSON operation") from None
        if not isinstance(op, dict):
            raise fail("is not a JSON object")
        code = op.get("op_code")
        if isinstance(code, bool) or code not in _JOURNAL_FIELDS:
            raise fail(f"has an operation Optuna does not know (op_code {code!r:.40})")
        if not isinstance(op.get("worker_id"), str):
            raise fail("has no worker_id")
        for name in _JOURNAL_FIELDS[code]:
            if name not in op:
                raise fail(f"lacks the field {name!r} of its operation (op_code {code})")
            if name.endswith("_id") and (isinstance(op[name], bool) or not isinstance(op[name], int) or op[name] < 0):
                raise fail(f"has field {name!r} = {op[name]!r:.40}, not an integer >= 0")
        trials += code == 4
    return JournalCheck(len(lines), trials, len(cut))


def drop_cut_line(path: str | os.PathLike[str]) -> None:
    """Rewrite a journal without the last line a crash cut short (the bytes
    after its last newline), in one step."""
    data = read_bounded(path, MAX_JOURNAL_BYTES, "study journal")
    atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


def journal_storage(path: str | os.PathLike[str]) -> JournalStorage:
    """The study as an Optuna journal file."""
    return JournalStorage(JournalFileBackend(os.fspath(path)))


def memory_copy(journal: str | os.PathLike[str], study_name: str) -> InMemoryStorage:
    """A new in-memory storage holding the study of a journal file (to be
    sent to a remote scheduler on --resume)."""
    storage = InMemoryStorage()
    optuna.copy_study(from_study_name=study_name, from_storage=journal_storage(journal), to_storage=storage)
    return storage


def write_snapshot(storage: BaseStorage, study_name: str, path: str | os.PathLike[str]) -> None:
    """Copy the study to a journal file, replacing ``path`` in one step."""
    target = Path(path)
    with tempfile.TemporaryDirectory(prefix=".study.", dir=target.parent) as tmp:
        journal = Path(tmp) / "study.journal"
        optuna.copy_study(from_study_name=study_name, from_storage=storage, to_storage=journal_storage(journal))
        atomic_write_bytes(target, journal.read_bytes())


def importances(study: Study) -> dict[str, float] | str:
    """Optuna's parameter importances over the complete trials, or why
    there are none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"Not computed: Optuna needs at least 2 complete trials, and the sweep has {len(complete)}."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. that too few trials make every importance equal
            return dict(optuna.importance.get_param_importances(study))
    except Exception as exc:  # the importances are a courtesy of the report; never fail the sweep over them
        return f"Not computed: {exc}"
