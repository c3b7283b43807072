"""``charrnn sweep`` and :func:`charrnn_ext.sweep`: search the options of
``charrnn train`` with Optuna, the trials running on a Dask cluster.

The client (this process) asks Optuna for each trial's options, hands the
trial to Dask, and when its result comes back writes its run folder, tells
Optuna how it ended and rewrites the summary files
(:mod:`charrnn_ext.sweeps.results`). It keeps as many trials running as the
cluster has slots. The study lives in a ``DaskStorage`` on the scheduler,
where the workers report to it: over the journal file ``study.journal`` in
the output folder when the cluster is the embedded local one (whose
scheduler is this process), in the scheduler's memory otherwise, with a copy
written to ``study.journal`` after every trial.

The output folder also holds ``sweep.json`` (the space, the settings, the
sweep's id), which ``--resume`` reads. Ctrl-C (or SIGTERM) asks the running
trials to stop at their next record point and waits for them briefly; they
stay open in the study, and ``--resume`` runs them again (continuing from
their checkpoints where the worker's scratch folder survives) before it
asks for new trials. A second Ctrl-C stops at once.

This module imports Optuna and Dask only when a sweep starts.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileio import UnreadableFile, atomic_write_text, check_fields, read_json_file
from ..runfolder import RunFolder
from ..signals import deferred_interrupts
from ..trainplan import plan_options, train_command
from ..version import package_version
from .results import (
    ResultsTable,
    TrialRecord,
    check_sweep_id,
    new_sweep_id,
    read_trial_records,
    remove_partial_trial_folders,
    write_summary_files,
    write_trial_folder,
)
from .settings import MAX_WORKERS, SweepSettings
from .space import Space, SpaceError, load_space, parse_space, read_space_text

if TYPE_CHECKING:
    from .cluster import SweepCluster
    from .study import PrunerSpec
    from .trial import TextPayload, TrialOutcome

__all__ = ["sweep"]

SWEEP_JSON = "sweep.json"
JOURNAL = "study.journal"
STUDY_NAME = "charrnn-sweep"
FORMAT = 1

#: Seconds an interrupted sweep waits for its running trials to stop and save.
STOP_GRACE_SECONDS = 60.0
POLL_SECONDS = 0.2

Echo = Callable[[str], None]


def _import_sweep_modules() -> None:
    try:
        import distributed  # noqa: F401
        import optuna  # noqa: F401
        import optuna_integration.dask  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"sweeps need optuna, optuna-integration and dask[distributed] ({exc.name or exc} cannot "
            f"be imported): pip install 'charrnn_ext[sweep]'"
        ) from exc


@dataclass
class _Ticket:
    """A trial handed to Dask."""

    number: int
    params: dict[str, Any]


class _Session:
    """One session of a sweep: from opening the study to the last result."""

    def __init__(
        self,
        out: Path,
        space: Space,
        settings: SweepSettings,
        meta: dict[str, Any],
        cluster: SweepCluster,
        text: TextPayload | None,
        text_path: str | None,
        echo: Echo,
        progress: bool,
    ):
        import optuna

        from . import study

        self.out, self.space, self.settings, self.meta = out, space, settings, meta
        self.cluster, self.text, self.echo = cluster, text, echo
        self.text_path = text_path
        grid = space.grid() if settings.sampler == "grid" else None
        self.target = settings.trials if grid is None else min(settings.trials, _grid_size(grid))
        self.pruner: PrunerSpec = study.PrunerSpec.for_sweep(settings.pruner, self.target, _first_report(space))
        journal = out / JOURNAL
        try:
            if cluster.local:
                base: Any = study.journal_storage(journal)
            else:
                base = study.memory_copy(journal, STUDY_NAME) if journal.exists() else None
        except Exception as exc:  # checked line by line already; what Optuna still refuses in the replay
            why = type(exc).__name__
            raise ValueError(f"cannot resume: {journal}: Optuna cannot replay the study ({why})") from None
        self.storage_name = f"charrnn-{meta['sweep_id']}-{uuid.uuid4().hex[:8]}"
        self.storage = cluster.storage(base, self.storage_name)
        existing = [s.study_name for s in self.storage.get_all_studies()]
        n_before = (
            len(self.storage.get_all_trials(self.storage.get_study_id_from_name(STUDY_NAME), deepcopy=False))
            if STUDY_NAME in existing
            else 0
        )
        sampler = study.make_sampler(settings.sampler, study.session_seed(settings.seed, n_before), grid)
        if STUDY_NAME in existing:
            self.study = optuna.load_study(
                study_name=STUDY_NAME, storage=self.storage, sampler=sampler, pruner=self.pruner.build()
            )
        else:
            self.study = optuna.create_study(
                study_name=STUDY_NAME,
                storage=self.storage,
                direction="minimize",
                sampler=sampler,
                pruner=self.pruner.build(),
            )
        self.stop_name = f"charrnn-stop-{meta['sweep_id']}"
        self.stop = cluster.stop_event(self.stop_name)
        self.distributions = space.distributions()
        self.records = read_trial_records(out)
        self._match_records()
        self.pending: dict[Any, _Ticket] = {}
        self.rerun: list[_Ticket] = []
        self.asked = n_before
        self.bar: Any = None
        self.progress = progress

    # -- bookkeeping ------------------------------------------------------------------

    def _match_records(self) -> None:
        """Refuse to go on if a recorded trial is not the study's trial of
        that number (a journal of another sweep, or one edited)."""
        trials = self.study.get_trials(deepcopy=False)
        for number, record in sorted(self.records.items()):
            if number >= len(trials):
                raise ValueError(
                    f"cannot resume: the study holds {len(trials)} trial(s), but trials/ records trial {number}; "
                    f"the study cannot be matched to its trials"
                )
            params = trials[number].params
            differ = [k for k in record.params if k in params and params[k] != record.params[k]]
            if differ:
                raise ValueError(
                    f"cannot resume: trials/{number:03d}/trial.json: field 'params.{differ[0]}' is "
                    f"{record.params[differ[0]]!r:.40}, but the study's trial {number} has {params[differ[0]]!r:.40}; "
                    f"the study cannot be matched to its trials"
                )

    def table(self) -> ResultsTable:
        return ResultsTable(
            rows=[self.records[n] for n in sorted(self.records)],
            searched=tuple(self.space.search),
            keys={n: self.space.key(n) for n in self.space.search},
        )

    def options(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every option a trial runs with."""
        opts = {**self.space.fixed, **params, "threads": self.settings.threads_per_trial}
        if self.text_path is not None:
            opts["text"] = self.text_path
        return opts

    def reconcile(self) -> None:
        """Match the study to the trial folders after an interruption: a trial
        recorded but not told is told; an open trial is run again."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False):
            params = {k: t.params[k] for k in self.space.search if k in t.params}
            if t.state == TrialState.RUNNING:
                if t.number in self.records:
                    self.tell(self.records[t.number])
                elif len(params) < len(self.space.search):  # stopped while Optuna drew its options
                    record = TrialRecord(
                        number=t.number,
                        state="failed",
                        val_loss=None,
                        updates=0,
                        seconds=0.0,
                        worker="",
                        params=params,
                        options=self.options(params),
                        message="interrupted before its options were chosen",
                    )
                    write_trial_folder(self.out, record, {})
                    self.tell(record)
                    self.records[t.number] = record
                else:
                    self.rerun.append(_Ticket(t.number, params))
            elif t.state.is_finished() and t.number not in self.records:
                state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed")
                record = TrialRecord(
                    number=t.number,
                    state=state,
                    val_loss=t.value,
                    updates=t.last_step or 0,
                    seconds=0.0,
                    worker="",
                    params=params,
                    options=self.options(params),
                    message="its run folder did not reach the output folder",
                )
                write_trial_folder(self.out, record, {})
                self.records[t.number] = record

    def tell(self, record: TrialRecord) -> None:
        from optuna.trial import TrialState

        if record.message:
            study_id = self.storage.get_study_id_from_name(STUDY_NAME)
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, record.number)
            if not self.storage.get_trial(trial_id).state.is_finished():
                self.storage.set_trial_user_attr(trial_id, "message", record.message)
        if record.state == "complete":
            self.study.tell(record.number, record.val_loss, skip_if_finished=True)
        else:
            state = TrialState.PRUNED if record.state == "pruned" else TrialState.FAIL
            self.study.tell(record.number, state=state, skip_if_finished=True)

    def write_summary(self) -> None:
        from . import study

        table = self.table()
        best = table.best
        open_trials = self.target - len(self.records)
        s = self.settings
        header = [
            f"{len(self.records)} of {self.target} trials finished: {table.count('complete')} complete, "
            f"{table.count('pruned')} pruned, {table.count('failed')} failed"
            + (
                f"; {open_trials} still to run: continue with `charrnn sweep SPACE --out {self.out} --resume`"
                if open_trials > 0
                else ""
            ),
            f"Sampler: {s.sampler}" + (f" (seed {s.seed})" if s.seed is not None else ""),
            f"Pruner: {self.pruner.describe()}",
            f"Text: {self.text_path or 'the built-in corpus'}; {s.threads_per_trial} thread(s) per trial",
        ]
        command = train_command(best.options) if best is not None else None
        write_summary_files(self.out, table, header, command, study.importances(self.study), self.space.to_toml())
        if not self.cluster.local:
            study.write_snapshot(self.storage, STUDY_NAME, self.out / JOURNAL)

    # -- trials -----------------------------------------------------------------------

    def submit(self, ticket: _Ticket) -> None:
        from .trial import TrialSpec, run_trial

        spec = TrialSpec(
            sweep_id=self.meta["sweep_id"],
            study_name=STUDY_NAME,
            storage_name=self.storage_name,
            stop_event=self.stop_name,
            number=ticket.number,
            options=self.options(ticket.params),
            pruner=self.pruner,
        )
        future = self.cluster.client.submit(
            run_trial,
            spec,
            self.text,
            key=f"charrnn-trial-{ticket.number}-{self.meta['sweep_id']}-{uuid.uuid4().hex[:8]}",
            pure=False,
        )
        self.pending[future] = ticket

    def fill(self) -> None:
        """Keep the cluster's slots busy: open trials first, then new ones."""
        while len(self.pending) < self.cluster.slots():
            if self.rerun:
                self.submit(self.rerun.pop(0))
            elif self.asked < self.target:
                trial = self.study.ask(self.distributions)
                self.asked += 1
                self.submit(_Ticket(trial.number, {k: trial.params[k] for k in self.space.search}))
            else:
                return

    def collect(self, future: Any) -> None:
        from .trial import TrialOutcome

        ticket = self.pending.pop(future)
        try:
            outcome: TrialOutcome = future.result()
        except Exception as exc:  # the worker died too often (KilledWorker), the task was lost, ...
            if not self.cluster.local and self.cluster.client.status != "running":
                # The scheduler is gone, not the trial: recording it as failed would disagree with the run
                # it makes after --resume. It stays open in study.journal (written after every finished trial).
                raise ConnectionError(
                    f"lost the scheduler at {self.cluster.address} while trial {ticket.number} ran "
                    f"({type(exc).__name__}); {self.out} holds every finished trial: start the scheduler again "
                    f"and continue with charrnn sweep SPACE --out {self.out} --resume"
                ) from None
            outcome = TrialOutcome(number=ticket.number, state="failed", message=f"{type(exc).__name__}: {exc}")
        if outcome.state == "interrupted":
            return  # open in the study; --resume runs it again
        record = TrialRecord(
            number=ticket.number,
            state=outcome.state,
            val_loss=outcome.val_loss,
            updates=outcome.updates,
            seconds=outcome.seconds,
            worker=outcome.worker,
            params=ticket.params,
            options=self.options(ticket.params),
            message=outcome.message,
            resumed_from=outcome.resumed_from,
        )
        write_trial_folder(self.out, record, outcome.files)  # before telling: a told trial always has its folder
        self.tell(record)
        self.records[record.number] = record
        self.write_summary()
        self.announce(record)

    def announce(self, r: TrialRecord) -> None:
        params = ", ".join(f"{self.space.key(k)}={_short(v)}" for k, v in r.params.items())
        val = "n/a" if r.val_loss is None else f"{r.val_loss:.4f}"
        what = {
            "complete": f"complete: val_loss {val} after {r.updates:,} updates",
            "pruned": f"pruned at update {r.updates:,} (val_loss {val})",
            "failed": f"failed: {r.message}",
        }[r.state]
        again = f"; continued from its checkpoint at update {r.resumed_from:,}" if r.resumed_from is not None else ""
        self.echo(f"trial {r.number} {what} ({params}; {r.seconds:.1f} s on {r.worker or '?'}{again})")
        if self.bar is not None:
            table = self.table()
            best = table.best
            self.bar.update(1)
            self.bar.set_postfix_str(
                f"complete {table.count('complete')}, pruned {table.count('pruned')}, failed "
                f"{table.count('failed')}, best val_loss "
                f"{'n/a' if best is None else format(best.val_loss, '.4f')}"
            )

    def wait_some(self) -> None:
        done = [f for f in self.pending if f.done()]
        for f in done:
            self.collect(f)
        if not done:
            time.sleep(POLL_SECONDS)

    def stop_running(self) -> None:
        """Ask the running trials to stop, collect what comes back in the
        grace time, and let go of the rest."""
        if not self.pending:
            return
        self.echo(
            f"interrupted: asking {len(self.pending)} running trial(s) to stop and save (Ctrl-C again to stop at once)"
        )
        self.stop.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.pending and time.monotonic() < deadline:
            self.wait_some()
        self.cluster.client.cancel(list(self.pending))
        self.pending.clear()

    def run(self) -> bool:
        """Run trials until the target is reached; False if interrupted."""
        self.reconcile()
        self.write_summary()
        if self.progress:
            import sys

            from tqdm import tqdm

            if sys.stderr.isatty():
                self.bar = tqdm(
                    total=self.target,
                    initial=min(len(self.records), self.target),
                    unit="trial",
                    desc="sweep",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
        try:
            with deferred_interrupts() as interrupted:
                try:
                    while not interrupted.is_set():
                        self.fill()
                        if not self.pending:
                            return True
                        self.wait_some()
                except KeyboardInterrupt:
                    pass  # not in the main thread: no deferral
                self.stop_running()
                return False
        finally:
            if self.bar is not None:
                self.bar.close()


def _first_report(space: Space) -> int:
    """The first update at which any trial reports a validation loss: the
    smallest sample_every the space's trials can have."""
    presets = space.search["preset"].values if "preset" in space.search else (space.fixed.get("preset"),)
    every = [plan_options({**space.fixed, "preset": p})[1]["sample_every"] for p in presets]
    if "sample_every" in space.search:
        every.append(min(space.search["sample_every"].values))
    return int(min(every))


def _grid_size(grid: Mapping[str, list[Any]]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


#: The largest sweep.json read back (its space is a copy of a space file, at most 1 MB).
MAX_SWEEP_JSON_BYTES = 4 << 20

#: sweep.json's fields, as :func:`~charrnn_ext.fileio.check_fields` takes them.
_SWEEP_FIELDS: dict[str, Any] = {
    "format": "int",
    "sweep_id": "str",
    "study_name": "str?",
    "space": "dict",
    "settings": "dict",
    "text": "dict?",
    "package_version": "str?",
}


def _read_sweep_json(out: Path) -> dict[str, Any]:
    """sweep.json, read by the guarded reader and checked field by field."""
    path = out / SWEEP_JSON
    try:
        meta = read_json_file(path, MAX_SWEEP_JSON_BYTES, "sweep file")
    except UnreadableFile as exc:
        if exc.missing:
            raise ValueError(f"cannot resume: {out} holds no sweep ({SWEEP_JSON} not found)") from None
        raise ValueError(f"cannot resume: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"cannot resume: {path} is not a sweep file of format {FORMAT}")
    try:
        check_fields(path, meta, _SWEEP_FIELDS)
        check_sweep_id(meta["sweep_id"], f"{path}: field 'sweep_id'")
        if meta.get("study_name", STUDY_NAME) != STUDY_NAME:
            raise UnreadableFile(f"{path}: field 'study_name' must be {STUDY_NAME!r}")
        if meta["text"] is not None:
            check_fields(path, meta["text"], {"path": "str?", "sha256": "str"}, "text.")
    except UnreadableFile as exc:
        raise ValueError(f"cannot resume: {exc}") from None
    return meta


def _check_study_files(folder: Path, say: Echo) -> None:
    """On --resume, before any cluster starts: the trial folders are valid
    records, and the study journal can be replayed and can be matched to
    them (a missing or empty journal beside recorded trials would restart
    the study at trial 0 and lose the record of the real best trial)."""
    from .study import check_journal, drop_cut_line

    try:
        records = read_trial_records(folder)
        journal = folder / JOURNAL
        found = check_journal(journal) if journal.exists() or journal.is_symlink() else None
    except UnreadableFile as exc:
        raise ValueError(f"cannot resume: {exc}") from None
    if found is not None and found.cut_bytes:
        drop_cut_line(journal)
        say(
            f"{journal}: dropped its last line ({found.cut_bytes} bytes without a newline: an operation a crash "
            f"or a full disk cut short, which Optuna never applied)"
        )
    trials = 0 if found is None else found.trials
    beyond = sorted(n for n in records if n >= trials)
    if beyond:
        has = "no study journal" if found is None else f"a study journal of {trials} trial(s)"
        raise ValueError(
            f"cannot resume: {folder} has {has}, but trials/ records trial {beyond[0]}; the study cannot be "
            f"matched to its trials (restore {JOURNAL}, or start the sweep again in a new folder)"
        )


def _check_new_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        names = sorted(p.name for p in out.iterdir() if p.name != ".lock")
        if SWEEP_JSON in names:
            raise ValueError(f"{out} already holds a sweep; continue it with --resume, or choose a new folder")
        if names:
            raise ValueError(
                f"{out} is not empty ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                f"choose a new or empty folder for the sweep"
            )


def sweep(
    space: Mapping[str, Any] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    trials: int | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_trial: int | None = None,
    pruner: str | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    resume: bool = False,
    progress: bool = False,
    echo: Echo | None = None,
) -> ResultsTable:
    """Search the ``charrnn train`` options of ``space`` and return the
    results table (also written to ``out``).

    ``space``: a dict with the tables ``fixed`` and ``search`` (see
    :mod:`charrnn_ext.sweeps.space`) or the path of a TOML file. ``trials``:
    how many (default 20; a grid: its size). ``scheduler``: the address of a
    Dask scheduler (``tcp://host:port``); None starts a local cluster of
    ``workers`` workers (default: cores / threads_per_trial); with a
    scheduler, ``workers`` caps the trials run at once. ``pruner``: median
    (default), hyperband or none; ``sampler``: tpe (default), random or
    grid; ``seed``: the sampler's. ``resume``: continue the sweep in ``out``
    (options not given are the stored ones). ``echo``: called with a line
    per finished trial; ``progress``: a progress bar on a terminal.

    Ctrl-C stops the sweep with ``out`` consistent and raises
    KeyboardInterrupt; ``resume=True`` continues it. Bad input raises
    ValueError (:class:`~charrnn_ext.sweeps.space.SpaceError` for the space)
    before anything starts; a missing optional package raises ImportError.
    """
    say: Echo = echo or (lambda line: None)
    if isinstance(space, Mapping):
        checked = parse_space(space, "space")
    else:
        checked = load_space(space)
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS
    ):
        raise ValueError(f"workers must be an integer in [1, {MAX_WORKERS}], got {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ValueError(
            f"scheduler must be the address of a Dask scheduler such as tcp://host:8786, got {scheduler!r}"
        )
    source = read_space_text(checked)
    text_path, text = (None, None) if source is None else source
    folder = Path(out)
    given = {
        "trials": trials,
        "sampler": sampler,
        "pruner": pruner,
        "seed": seed,
        "threads_per_trial": threads_per_trial,
    }
    if resume:
        meta = _read_sweep_json(folder)
        stored_space = parse_space(meta["space"], f"{folder / SWEEP_JSON}")
        if (stored_space.fixed, stored_space.search) != (checked.fixed, checked.search):
            raise SpaceError(
                f"{checked.source}: differs from the space of the sweep in {folder}; a sweep continues "
                f"with the space it started with"
            )
        stored_sha = (meta.get("text") or {}).get("sha256")
        _import_sweep_modules()
        from .trial import TextPayload

        payload = None if text is None else TextPayload.of(text_path or "", text)
        if stored_sha != (None if payload is None else payload.sha256):
            raise SpaceError(f"{checked.source}: the training text has changed since the sweep started")
        try:
            settings = SweepSettings.resolve(given, meta["settings"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot resume: {folder / SWEEP_JSON} has invalid 'settings' ({exc})") from None
    else:
        _check_new_folder(folder)
        settings = SweepSettings.resolve(given, grid_size=_grid_size(checked.grid()) if sampler == "grid" else None)
        _import_sweep_modules()
        from .trial import TextPayload

        payload = None if text is None else TextPayload.of(text_path or "", text)
        meta = {
            "format": FORMAT,
            "sweep_id": new_sweep_id(),
            "study_name": STUDY_NAME,
            "space": checked.to_dict(),
            "text": None if payload is None else {"path": text_path, "sha256": payload.sha256},
            "package_version": package_version(),
        }
    if settings.sampler == "grid":
        checked.grid()  # a space a grid cannot cover is refused before anything starts
    from . import study
    from .cluster import SweepCluster, check_address, local_workers

    if scheduler is not None:
        check_address(scheduler)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = RunFolder(folder)
    try:
        lock.lock()
    except ValueError:
        if created:
            folder.rmdir()
        raise
    begun = resume  # a new sweep has begun once sweep.json is written; until then, failing leaves nothing
    try:
        if not resume:
            _check_new_folder(folder)  # again, now that the folder is ours
        else:
            _check_study_files(folder, say)  # now that the folder is ours, before any cluster starts
        remove_partial_trial_folders(folder)
        started = time.monotonic()
        finished = False
        try:
            if scheduler is None:
                grid_points = _grid_size(checked.grid()) if settings.sampler == "grid" else settings.trials
                to_run = min(settings.trials, grid_points) - len(read_trial_records(folder))
                workers, why = local_workers(workers, to_run, settings.threads_per_trial)
                if why:
                    say(why)
            with study.quiet_optuna(), SweepCluster(scheduler, workers, settings.threads_per_trial) as cluster:
                meta["settings"] = settings.to_json()
                atomic_write_text(folder / SWEEP_JSON, json.dumps(meta, indent=2, sort_keys=True) + "\n")
                begun = True
                where = "a local cluster" if cluster.local else f"the cluster at {cluster.address}"
                session = _Session(folder, checked, settings, meta, cluster, payload, text_path, say, progress)
                say(f"sweep of {session.target} trials on {where} ({cluster.slots()} at once); results in {folder}")
                finished = session.run()
                session.write_summary()
                table = session.table()
        except KeyboardInterrupt:
            if not begun:
                raise
            finished = False
        if not finished:
            done = len(read_trial_records(folder))
            say(
                f"interrupted with {done} trial(s) finished; {folder} is consistent; continue with: "
                f"charrnn sweep SPACE --out {folder} --resume"
            )
            raise KeyboardInterrupt
        best = table.best
        say(
            f"done: {len(table)} trials ({table.count('complete')} complete, {table.count('pruned')} pruned, "
            f"{table.count('failed')} failed) in {time.monotonic() - started:,.0f} s"
            + (f"; best: trial {best.number}, val_loss {best.val_loss:.4f}" if best is not None else "")
            + f"; report: {folder / 'report.md'}"
        )
        return table
    except BaseException:
        if not begun:  # the cluster did not start: take back what this call made
            (folder / ".lock").unlink(missing_ok=True)
            if created and not any(folder.iterdir()):
                folder.rmdir()
        raise
    finally:
        lock.unlock()
