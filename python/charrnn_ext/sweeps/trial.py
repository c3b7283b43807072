"""One trial of a sweep, as a Dask worker runs it.

The trial is a ``charrnn train`` run (options resolved by
:mod:`charrnn_ext.trainplan`) in a scratch folder on the worker's machine,
``<tmp>/charrnn-sweep-<uid>/<sweep id>/NNN``. At every sample point it reports its
validation loss to the study and asks the pruner whether to go on. When it
ends, the files of its run folder travel back to the client in the result,
so the client's output folder is complete even when no filesystem is
shared, and the scratch folder is deleted.

If the worker dies, Dask runs the trial again; a worker on the same machine
finds the scratch folder and continues the run from its last.npz by the
exact resume of :meth:`CharRNN.resume <charrnn_ext.model.CharRNN.resume>`.
A cluster-wide stop event (set when the sweep is interrupted) makes the
trial stop at its next record point and keep its scratch folder, so that a
resumed sweep continues it there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import stat
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig, model_options
from ..data import Corpus, corpus_from_string, load_corpus
from ..fileio import child_path
from ..runfolder import RUN_FILES, RunFolder
from ..training import Progress, StopTraining
from ..trainplan import plan_length, plan_options
from .results import check_sweep_id
from .study import PrunerSpec, quiet_optuna

__all__ = ["TextPayload", "TrialOutcome", "TrialSpec", "run_trial", "scratch_folder"]

#: How often (seconds of wall time, at record points) a trial asks the scheduler whether the sweep wants it to stop.
STOP_CHECK_SECONDS = 0.25


@dataclass(frozen=True)
class TextPayload:
    """A training text sent to the workers: UTF-8, compressed."""

    source: str  # the file's path on the client
    sha256: str  # of the UTF-8 text
    data: bytes

    @classmethod
    def of(cls, source: str, text: str) -> TextPayload:
        raw = text.encode("utf-8")
        return cls(source, hashlib.sha256(raw).hexdigest(), zlib.compress(raw, 6))

    def text(self) -> str:
        return zlib.decompress(self.data).decode("utf-8")


@dataclass(frozen=True)
class TrialSpec:
    """What a worker needs to run trial ``number``: where the study is, the
    trial's options (fixed and searched, with ``threads``), its pruner."""

    sweep_id: str
    study_name: str
    storage_name: str  # of the DaskStorage on the scheduler
    stop_event: str
    number: int
    options: dict[str, Any]
    pruner: PrunerSpec


@dataclass
class TrialOutcome:
    """How a trial ended: ``state`` complete, pruned, failed, or interrupted
    (stopped by the sweep, to be continued); its run folder's files by name."""

    number: int
    state: str
    val_loss: float | None = None
    updates: int = 0
    seconds: float = 0.0
    worker: str = ""
    message: str = ""
    resumed_from: int | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def scratch_root() -> Path:
    """This user's scratch folder for sweeps on this machine,
    ``<tmp>/charrnn-sweep-<uid>``: made private (0o700) and refused if it is
    a link or belongs to someone else (the temporary folder is shared)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = Path(tempfile.gettempdir()) / f"charrnn-sweep-{uid}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != uid):
        raise PermissionError(f"the sweep scratch folder {root} is not a folder of this user; remove it")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(root, 0o700)
    return root


def scratch_folder(sweep_id: str, number: int) -> Path:
    """Where trial ``number`` runs on a worker's machine. The id must be one
    this package makes, so that the folder (deleted when the trial ends)
    is always inside this user's scratch folder."""
    check_sweep_id(sweep_id)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"a trial number must be an integer >= 0, got {number!r}")
    return child_path(scratch_root(), sweep_id, "sweep_id") / f"{number:03d}"


_CORPORA: dict[tuple[str, float], Corpus] = {}


def _corpus(text: TextPayload | None, val_fraction: float) -> Corpus:
    """The training text (the built-in corpus for None), kept for the next
    trial on this worker."""
    key = ("builtin" if text is None else text.sha256, val_fraction)
    if key not in _CORPORA:
        if text is None:
            corpus = load_corpus(None, val_fraction)
        else:
            corpus = corpus_from_string(text.text(), val_fraction, source=text.source)
        _CORPORA.clear()
        _CORPORA[key] = corpus
    return _CORPORA[key]


def _worker_address() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:  # not on a Dask worker (a direct call)
        return socket.gethostname()


class _Reporter:
    """The run's callback: reports validation losses to the study, stops
    the run when the pruner or the sweep says so."""

    def __init__(self, spec: TrialSpec):
        import optuna
        from distributed import Event
        from optuna_integration.dask import DaskStorage

        storage = DaskStorage(name=spec.storage_name, register=False)
        study = optuna.load_study(
            study_name=spec.study_name,
            storage=storage,
            pruner=spec.pruner.build(),
            sampler=optuna.samplers.RandomSampler(),
        )
        study_id = storage.get_study_id_from_name(spec.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, spec.number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.stop = Event(spec.stop_event)
        self.next_check = time.monotonic() + STOP_CHECK_SECONDS
        self.pruned = self.interrupted = False
        self.last: tuple[int, float] | None = None

    def __call__(self, p: Progress) -> None:
        if p.val_loss is not None and p.step > 0:  # at update 0 every model is as bad as the next
            self.trial.report(p.val_loss, p.step)
            self.last = (p.step, p.val_loss)
            if self.trial.should_prune():
                self.pruned = True
                raise StopTraining
        if time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + STOP_CHECK_SECONDS
            if self.stop.is_set():
                self.interrupted = True
                raise StopTraining


def _train(
    spec: TrialSpec, text: TextPayload | None, folder: Path, reporter: _Reporter, outcome: TrialOutcome
) -> tuple[float | None, int]:
    """Run (or continue) the trial's charrnn train run in ``folder``;
    (validation loss of its final model on the whole split, updates done)."""
    from ..model import CharRNN

    opts = spec.options
    preset, model_opts = plan_options(opts)
    corpus = _corpus(text, model_opts["val_fraction"])
    if (folder / "last.npz").is_file():
        model = CharRNN.load(folder / "last.npz")
        assert model.state is not None
        outcome.resumed_from = model.step
        outcome.seconds += model.state.seconds  # the lost attempt's training time, up to its checkpoint
        result = model.resume(corpus, out=folder, callback=reporter, threads=model_opts["threads"])
    else:
        model = CharRNN.new(corpus.vocab, **model_options(model_opts))
        steps, epochs = plan_length(opts.get("steps"), opts.get("epochs"), opts.get("max_minutes"))
        train_opts = {k: model_opts[k] for k in TrainConfig.names()}
        run_info = {
            "preset": preset,
            "steps": opts.get("steps"),
            "epochs": epochs,
            "max_minutes": opts.get("max_minutes"),
            "options": model_opts,
            "sweep": {"sweep_id": spec.sweep_id, "trial": spec.number},
        }
        folder.mkdir(parents=True, exist_ok=True)
        result = model.fit(
            corpus,
            steps=steps,
            epochs=epochs,
            out=folder,
            callback=reporter,
            max_minutes=opts.get("max_minutes"),
            force=True,
            run_info=run_info,
            **train_opts,
        )
    return result.final_val_loss, result.step


def _files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in RUN_FILES if (folder / name).is_file()}


def run_trial(spec: TrialSpec, text: TextPayload | None = None) -> TrialOutcome:
    """Run one trial (on a Dask worker) and return how it ended. An
    exception of the run makes a failed outcome with its message."""
    start = time.monotonic()
    outcome = TrialOutcome(number=spec.number, state="failed", worker=_worker_address())
    try:
        folder = scratch_folder(spec.sweep_id, spec.number)
    except (OSError, ValueError) as exc:
        outcome.message = f"{type(exc).__name__}: {exc}"
        return outcome
    try:
        with quiet_optuna():
            reporter = _Reporter(spec)
            try:
                val, outcome.updates = _train(spec, text, folder, reporter, outcome)
            finally:
                if reporter.last is not None:
                    outcome.val_loss = reporter.last[1]
            if reporter.interrupted:
                outcome.state = "interrupted"
            elif reporter.pruned:
                outcome.state = "pruned"
                RunFolder(folder).write_report(plot=False)  # a stopped run has no report yet
            elif val is None:
                outcome.message = "the run measured no validation loss (is the validation split empty?)"
            else:
                outcome.state, outcome.val_loss = "complete", val
    except Exception as exc:  # the trial fails; the sweep goes on
        outcome.state = "failed"
        outcome.message = f"{type(exc).__name__}: {exc}"
    outcome.seconds += time.monotonic() - start
    if outcome.state != "interrupted" and folder.is_dir():
        outcome.files = _files(folder)
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # the sweep's scratch folder, once its last trial here is done
    return outcome
