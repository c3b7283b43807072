"""The training loop.

The updates run in C++ (:func:`charrnn_ext.engine.train_walk`) in chunks that
end at the next *record point*; Python runs the smooth-loss recurrence over
each returned loss array and keeps the books. Every configuration goes
through the same engine: B = batch_size streams over B contiguous segments
of the training split, each with its own recurrent state; their gradients
are *summed* into one update, so an update sees B * seq_length characters
and an epoch has (len(train) // B - 1) // seq_length updates. B = 1 with the
classic options is exactly the classic experiment.

Learning rate: :meth:`TrainConfig.lr_at <charrnn_ext.config.TrainConfig.lr_at>`,
constant within a chunk. Chunks end where the step schedule changes the
rate, and at most every ``log_every`` updates, so the linear and cosine
schedules move in steps of that size. With a time budget (``max_minutes``)
their progress is the share of the budget used; training time is counted
across sessions, so a resumed run continues the schedule.

Losses: the engine returns each update's loss summed over its
batch_size * seq_length characters. The smooth loss (option ``smoothing``,
:func:`charrnn_ext.state.smoothed`) is kept summed in the same way, so that
the classic run's figure (25 ln K at update 1, then 0.999/0.001) stays exact;
everything a person reads (the progress bar, :class:`Progress`, metrics.csv,
loss.png, the reports) shows losses per character.

Record points (one metrics.csv row and one callback each) are the updates
that are a multiple of ``log_every`` or of ``sample_every``, and the last
update of the run. The best model (option ``best_by``) is the one with the
lowest validation loss at a sample point, or, with ``best_by="smooth"`` or
without a validation split, the one with the lowest smooth loss at a record
point.

Sample points (update 0, every ``sample_every`` updates and the last update of
a run) add a
``sample_chars``-character text, a validation loss on at most ``val_chars``
characters from the start of the validation split, and a checkpoint. At the
end of the run the whole validation split is evaluated for the last and the
best model and a ``passage_chars``-character passage is drawn from the best
model.

Interruptions: Ctrl-C (SIGINT) or SIGTERM during :meth:`Trainer.run` in the
main thread are deferred until the current chunk is done; the run folder is
then saved and KeyboardInterrupt raised. A second Ctrl-C interrupts at once
and saves nothing. A callback may raise :class:`StopTraining` (saved,
``run`` returns with ``stopped=True``) or KeyboardInterrupt (saved, re-raised).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import engine
from .config import TrainConfig, update_options
from .data import Vocabulary, resolve_corpus, resume_source
from .fileio import index_sha256
from .gradcheck import RUN_CHECK_SECONDS, gradient_check, numerical_seconds
from .layout import copy_params, init_opt_state, state_shape
from .resources import check_fits, run_bytes
from .runfolder import RunFolder
from .sampling import SEED_TAG_PASSAGE, SEED_TAG_PROGRESS, derived_seed, sample_text
from .signals import ImmediateInterrupt, deferred_interrupts
from .state import Checkpoint, MetricRow, SampleRecord, TrainState, best_criterion, smoothed
from .trainplan import DEFAULT_EPOCHS
from .version import package_version

#: Characters of the explain page a finished run writes (explain.html).
EXPLAIN_CHARS = 5_000

__all__ = ["Progress", "StopTraining", "TrainResult", "Trainer", "TrainingDiverged", "steps_per_epoch"]

#: The gradient check a run writes uses a small model of the run's cell with
#: at most this many layers, so that it costs about a second.
GRADCHECK_LAYERS = 2


class Trainable(Protocol):
    """What the trainer needs of a model (:class:`charrnn_ext.model.CharRNN`)."""

    vocab: Vocabulary
    params: dict[str, np.ndarray]
    state: TrainState | None
    seed: int
    cell: str
    layers: int
    precision: str  # of the matrix products: 'full' or 'bfloat16'
    origin: dict[str, Any] | None  # the checkpoint it was loaded from, for a new run to record

    @property
    def K(self) -> int: ...
    @property
    def hidden(self) -> int: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def n_params(self) -> int: ...
    def meta(self) -> dict[str, Any]: ...
    def to_checkpoint(self, include_state: bool = True, **extra_meta: Any) -> Checkpoint: ...


class StopTraining(Exception):
    """Raise from a callback to stop training cleanly (the state is saved)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. ``step`` is the last good update."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class Progress:
    """What a callback receives at every record point. Losses are per
    character unless their name ends in ``_sum``."""

    step: int
    epoch: int
    total_steps: int
    loss: float  # loss of this update, per character
    smooth_loss: float  # smooth loss (the run's ``smoothing``), per character
    val_loss: float | None  # per character, None if not measured here
    val_chars: int
    chars_per_sec: float  # training throughput of this session so far (training time only)
    sample: str | None  # text synthesised here (sample points only)
    lr: float = math.nan  # learning rate of the last update
    update_chars: int = 1  # characters one update sees: batch_size * seq_length
    loss_sum: float = math.nan  # loss of this update, summed over its update_chars characters
    smooth_loss_sum: float = math.nan  # smooth loss summed over one update (the classic experiment's figure)


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns."""

    step: int
    epoch: int
    steps_done: int
    smooth_loss: float  # per character
    best_loss: float  # per character: the value of ``best_by`` that chose the best model
    best_step: int
    stopped: bool
    final_val_loss: float | None = None  # last model, whole validation split, per char
    best_val_loss: float | None = None  # best model, whole validation split, per char
    val_chars: int = 0
    passage: str | None = None
    out: Path | None = None
    records: list[Progress] = field(default_factory=list)
    time_limited: bool = False  # ended by its time budget (the run is finished at that update)
    seconds: float = 0.0  # training time of the run, all sessions
    best_by: str = "smooth"  # what chose the best model: "validation" or "smooth"
    smooth_loss_sum: float = math.nan  # smooth loss summed over one update (the classic experiment's figure)
    budget_seconds: float | None = None  # the run's time budget, if it has one
    last_chunk: tuple[int, float] = (0, 0.0)  # updates and seconds of the session's last chunk
    final_seconds: float = 0.0  # wall time of the final evaluation and passage


def steps_per_epoch(n_train: int, seq_length: int, batch_size: int = 1) -> int:
    """Chunks of seq_length (+1 target) in one pass over each of the
    batch_size segments of n_train // batch_size characters."""
    return (n_train // batch_size - 1) // seq_length


def corpus_identity(train: np.ndarray, source: str, n_val: int, path: str | None = None) -> dict[str, Any]:
    """What identifies a training text: its source, sizes and a SHA-256 of its indices."""
    return {
        "source": source,
        "path": path,
        "n_train": int(train.size),
        "n_val": int(n_val),
        "train_sha256": index_sha256(train),
    }


class Trainer:
    """Trains a :class:`~charrnn_ext.model.CharRNN` on one corpus and keeps its
    run folder (if ``out`` is given) up to date. Used by ``CharRNN.fit`` /
    ``CharRNN.resume`` and by ``charrnn train``. ``run_info`` (how the run was
    asked for: preset, length) goes into config.json."""

    def __init__(
        self,
        model: Trainable,
        data: Any = None,
        *,
        out: str | os.PathLike[str] | None = None,
        callback: Callable[[Progress], None] | None = None,
        progress: bool = False,
        resume: bool = False,
        run_info: dict[str, Any] | None = None,
        force: bool = False,
        **config: Any,
    ):
        self.model = model
        self.callback = callback
        self.progress = progress
        self.run_info = dict(run_info or {})
        state = model.state
        if resume:
            if state is None:
                raise ValueError("cannot resume: the model has no training state")
            changed = {k for k in config if k != "threads"}
            if changed:
                raise ValueError(f"cannot change training options when resuming (got {sorted(changed)})")
            if data is None:
                data = resume_source(state.corpus)
        base = dict(state.config) if state is not None and state.config else {}
        if base and "best_by" not in base:
            base["best_by"] = "smooth"  # a run from before the option chose its best model by smooth loss
        if (
            "optimizer" in config
            and "eta" not in config
            and "lr" not in config
            and base.get("optimizer") != config["optimizer"]
        ):
            base.pop("eta", None)  # the stored rate belongs to another optimiser
        base.update(config)
        self.config = TrainConfig.from_dict(base)
        if state is not None and state.config:
            for key in ("optimizer", "batch_size"):
                old = TrainConfig.from_dict(state.config).to_dict()[key]
                if old != getattr(self.config, key):
                    raise ValueError(
                        f"cannot change {key} of a run ({old!r} -> {getattr(self.config, key)!r}); "
                        f"call model.reset_training() to start a new run"
                    )
        self.corpus, path = resolve_corpus(data, model.vocab, self.config.val_fraction)
        self.identity = corpus_identity(self.corpus.train, self.corpus.source, self.corpus.val.size, path)
        if state is not None and state.corpus:
            old = state.corpus
            if (old.get("n_train"), old.get("train_sha256")) != (
                self.identity["n_train"],
                self.identity["train_sha256"],
            ):
                raise ValueError(
                    f"the training text differs from the one this model was trained on: "
                    f"{old.get('source')!r} ({old.get('n_train')} training chars, sha256 "
                    f"{str(old.get('train_sha256'))[:12]}...) vs {self.corpus.source!r} "
                    f"({self.identity['n_train']} chars, sha256 {self.identity['train_sha256'][:12]}...). "
                    f"Use the same text, or call model.reset_training() to start a new run on this one"
                )
        T, B = self.config.seq_length, self.config.batch_size
        check_fits(
            f"training this {model.cell} network with {B} streams of {T} characters",
            run_bytes(model.cell, model.K, model.hidden, model.layers, str(model.dtype), self.config.optimizer, B, T),
            "choose a smaller --batch-size, --seq-length or --hidden",
        )
        if self.corpus.train.size // B < T + 1:
            raise ValueError(
                f"the training split of {self.corpus.source!r} has {self.corpus.train.size} "
                f"characters; seq_length={T} needs at least {T + 1}"
                + (f" per stream, {B * (T + 1)} for batch_size={B}" if B > 1 else "")
            )
        self.folder = None if out is None else RunFolder(out)
        if self.folder is not None:
            self.folder.open_for_run(fresh=state is None, force=force)
        self.resume = resume
        #: The run's state: the model's, or a new one that becomes the
        #: model's when the run starts.
        self.state: TrainState = state if state is not None else self._fresh_state()
        self._lr = math.nan
        self._bar: Any = None
        self._ckpt_step: int | None = None
        self._session_start = (self.state.step, self.state.seconds)  # where this session's throughput counts from
        self._last_chunk = (0, 0.0)  # updates and seconds of the last chunk

    @property
    def update_chars(self) -> int:
        """Characters one update sees: batch_size * seq_length."""
        return self.config.seq_length * self.config.batch_size

    @property
    def best_by(self) -> str:
        """What chooses the best model: "validation" if asked and there is a
        validation split to measure at the sample points, else "smooth"."""
        return best_criterion(self.config.best_by, self.corpus.val.size, self.config.val_chars)

    def per_char(self, summed: float) -> float:
        """A loss summed over one update, per character."""
        return summed / self.update_chars

    @property
    def out(self) -> Path | None:
        return None if self.folder is None else self.folder.path

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.corpus.train.size, self.config.seq_length, self.config.batch_size)

    def lr_at(self, step: int) -> float:
        """Learning rate of the update that follows ``step`` updates."""
        s = self.state
        if s.budget_seconds:
            progress = s.seconds / s.budget_seconds
        else:
            progress = step / max(1, s.total_steps)
        return self.config.lr_at(step, self.steps_per_epoch, progress)

    def _fresh_state(self) -> TrainState:
        model, c = self.model, self.config
        return TrainState(
            opt_state=init_opt_state(model.params, c.optimizer),
            h=np.zeros(state_shape(model.cell, model.layers, model.hidden, c.batch_size), dtype=model.dtype),
            positions=np.zeros(c.batch_size, dtype=np.int64),
        )

    def run(
        self,
        steps: int | None = None,
        epochs: float | None = None,
        *,
        total_steps: int | None = None,
        max_steps: int | None = None,
        max_minutes: float | None = None,
    ) -> TrainResult:
        """Train ``steps`` more updates, or ``epochs`` more epochs, or up to
        ``total_steps`` (for resuming; default: the run's stored target).
        ``max_minutes``: the run's training-time budget; it ends, finished,
        at the first chunk boundary after that much training time in all
        its sessions (without it, a stored budget applies). A new run that
        ends before its first checkpoint (an error, Ctrl-C) removes the files
        it wrote in its folder."""
        fresh = self.model.state is None
        try:
            return self._start(steps, epochs, total_steps, max_steps, max_minutes)
        except BaseException:
            if fresh and self.folder is not None:
                self.folder.discard()
            raise
        finally:
            if self.folder is not None:
                self.folder.unlock()

    def _start(
        self,
        steps: int | None,
        epochs: float | None,
        total_steps: int | None,
        max_steps: int | None,
        max_minutes: float | None,
    ) -> TrainResult:
        model, cfg = self.model, self.config
        for name, v in (("steps", steps), ("total_steps", total_steps), ("max_steps", max_steps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 10**15):
                raise ValueError(f"{name} must be an integer in [0, 10**15), got {v!r}")
        for name, f in (("epochs", epochs), ("max_minutes", max_minutes)):
            if f is not None and (
                isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f <= 1e6
            ):
                raise ValueError(f"{name} must be a number in (0, 1e6], got {f!r}")
        if sum(v is not None for v in (steps, epochs, total_steps)) > 1:
            raise ValueError("give only one of steps, epochs and total_steps")
        fresh = model.state is None
        if fresh:
            model.state = self.state
            if model.origin is not None:  # a fine-tuning run: recorded in config.json and summary.json
                self.run_info["init_from"] = model.origin
                model.origin = None
        s = self.state
        if total_steps is not None:
            total = int(total_steps)
        elif steps is not None:
            total = s.step + int(steps)
        elif epochs is not None:
            total = s.step + round(epochs * self.steps_per_epoch)
        elif self.resume or (not fresh and s.total_steps > s.step):
            total = s.total_steps  # continue an unfinished run to its target
        else:
            total = s.step + DEFAULT_EPOCHS * self.steps_per_epoch
        if total < s.step:
            raise ValueError(f"the model has already done {s.step} updates, more than the target {total}")
        if max_minutes is not None:
            s.budget_seconds = 60.0 * max_minutes
        s.total_steps = total
        s.config = cfg.to_dict()
        s.corpus = self.identity
        session_end = total if max_steps is None else min(total, s.step + int(max_steps))
        return self._run(fresh, total, session_end)

    def _run(self, fresh: bool, total: int, session_end: int) -> TrainResult:
        """The loop of :meth:`run` (the folder locked)."""
        s = self.state
        start_step = s.step
        records: list[Progress] = []
        self._write_static(fresh)
        stopped = time_limited = False
        try:
            with deferred_interrupts() as interrupted, self._progress_bar(total, s.step):
                if self._sample_point(s.step) and not any(r.step == s.step for r in s.samples):
                    records.append(self._record(metrics_row=False))
                while s.step < session_end and not interrupted.is_set():
                    if s.budget_seconds is not None and s.seconds >= s.budget_seconds:
                        # out of time in an earlier session: this update ends the run
                        total = s.total_steps = s.step
                        time_limited = True
                        logged = any(r.step == s.step for r in s.history)
                        if not (logged and any(r.step == s.step for r in s.samples)):
                            records.append(self._record(metrics_row=not logged))
                        break
                    self._chunk(min(self._next_record(s.step, total), session_end))
                    if s.budget_seconds is not None and s.seconds >= s.budget_seconds:
                        total = s.total_steps = s.step  # out of time: this update ends the run
                        time_limited = True
                    if self._is_record(s.step, total):
                        records.append(self._record(metrics_row=True))
                    if time_limited:
                        break
                if interrupted.is_set():
                    raise KeyboardInterrupt
            stopped = s.step < total
        except StopTraining:
            stopped = True
        except ImmediateInterrupt:
            raise  # the state may be half-updated: nothing is saved
        except KeyboardInterrupt:
            self._save(plot=True)
            raise
        result = TrainResult(
            step=s.step,
            epoch=s.epoch,
            steps_done=s.step - start_step,
            smooth_loss=self.per_char(s.smooth_loss),
            best_loss=self._best_per_char(),
            best_step=s.best_step,
            stopped=stopped,
            out=self.out,
            records=records,
            time_limited=time_limited,
            seconds=s.seconds,
            best_by=self.best_by,
            smooth_loss_sum=s.smooth_loss,
            budget_seconds=s.budget_seconds,
            last_chunk=self._last_chunk,
        )
        if stopped:
            self._save(plot=True)
        else:
            self._finish(result)
        return result

    # -- the loop ---------------------------------------------------------------

    def _best_per_char(self) -> float:
        """The best model's value of its criterion, per character."""
        s = self.state
        return s.best_loss if self.best_by == "validation" else self.per_char(s.best_loss)

    def _sample_point(self, step: int) -> bool:
        """Update 0, every sample_every updates, and the last update of the run."""
        return step % self.config.sample_every == 0 or step >= self.state.total_steps

    def _is_record(self, step: int, total: int) -> bool:
        c = self.config
        return step % c.log_every == 0 or step % c.sample_every == 0 or step == total

    def _next_record(self, step: int, total: int) -> int:
        c = self.config
        nxt = min((step // c.log_every + 1) * c.log_every, (step // c.sample_every + 1) * c.sample_every)
        if c.lr_schedule == "step" and c.lr_decay != 1.0:  # chunks end where the rate changes
            span = self.steps_per_epoch * c.lr_decay_every
            nxt = min(nxt, (step // span + 1) * span)
        if step < c.warmup:  # warm up in about 20 steps of the rate
            nxt = min(nxt, step + max(1, c.warmup // 20))
        return min(nxt, total)

    def _chunk(self, until: int) -> None:
        """Run the updates up to step ``until`` in C++."""
        s, c, model = self.state, self.config, self.model
        lr = self.lr_at(s.step)
        options = update_options({**c.to_dict(), "eta": lr, "seed": model.seed})
        t0 = time.perf_counter()
        values: list[float] = []
        h, positions, wraps, diverged = s.h, s.positions, 0, False
        while len(values) < until - s.step and not diverged:
            n = until - s.step - len(values)
            if c.carry_state:
                # the engine zeroes a stream's state where it wraps: start the new epoch here, state kept
                fit = self._updates_before_wrap(int(positions[0]))
                if fit == 0:
                    positions, wraps = np.zeros_like(positions), wraps + 1
                    fit = self.steps_per_epoch
                n = min(n, fit)
            losses, h, positions, walked, diverged = engine.train_walk(
                model.params,
                s.opt_state,
                self.corpus.train,
                h,
                n_steps=n,
                seq_length=c.seq_length,
                batch_size=c.batch_size,
                positions=positions,
                options=options,
                threads=c.threads,
                precision=model.precision,
            )
            values += losses.tolist()
            wraps += int(walked[0])  # the streams wrap together
        dt = time.perf_counter() - t0
        s.seconds += dt
        self._lr = lr
        smooth = s.smooth_loss
        for i, loss in enumerate(values):
            smooth = loss if (s.step == 0 and i == 0) else smoothed(smooth, loss, s.step + i + 1, c.smoothing)
        if values:
            s.smooth_loss = smooth
            s.last_loss = values[-1]
        s.h, s.positions = h, positions
        s.wraps += wraps
        s.step += len(values)
        self._last_chunk = (len(values), dt)
        if self._bar is not None:
            if s.budget_seconds is None:
                self._bar.update(len(values))
            else:  # a bar of training seconds: the budget is its total
                self._bar.update(max(0.0, min(dt, self._bar.total - self._bar.n)))
        if diverged:
            self._diverged()

    def _updates_before_wrap(self, position: int) -> int:
        """Updates a stream at ``position`` makes before its segment ends (the engine then wraps)."""
        c = self.config
        return max(0, (self.corpus.train.size // c.batch_size - 1 - position) // c.seq_length)

    def _diverged(self) -> None:
        s = self.state
        self._save(checkpoints=False, plot=True)
        last = self.out / "last.npz" if self.out is not None and self._ckpt_step is not None else None
        where = (
            f"the last good checkpoint is {last} (update {self._ckpt_step})"
            if last is not None
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"training diverged: the loss or the gradient of update {s.step + 1} is not finite (smooth loss so far "
            f"{s.smooth_loss:.4f}); stopped after update {s.step} without applying it; {where}. "
            f"Try a smaller learning rate (eta={self.lr_at(s.step):g}).",
            s.step,
            last,
        )

    def sample_state(self, h: np.ndarray | None) -> np.ndarray | None:
        """The state sampling and validation start from: stream 0's."""
        return None if h is None else (h[0] if h.ndim == 3 else h)

    def _evaluate(self, params: dict[str, np.ndarray], data: np.ndarray, h: np.ndarray | None) -> float:
        """Summed loss of data, its products in the precision the model trains in
        (bfloat16 and float32 products agree to about 1e-5 per char on trained
        models, benchmarks/README.md)."""
        c = self.config
        loss, _ = engine.evaluate_loss(
            params,
            data,
            self.sample_state(h),
            batch_size=c.batch_size,
            threads=c.threads,
            precision=self.model.precision,
        )
        return float(loss)

    def _validation(self, limit: int | None) -> tuple[float | None, int, float | None]:
        """(per-char loss of the current model, chars used, same for the best model if limit is None).
        Validation continues from the running state of stream 0 (as the text
        does after the training split)."""
        val = self.corpus.val if limit is None else self.corpus.val[:limit]
        if val.size < 2:
            return None, 0, None
        s = self.state
        loss = self._evaluate(self.model.params, val, s.h)
        best = None
        if limit is None and s.best_params is not None:
            # the best model is often the last one (taken at this very update)
            same = s.best_step == s.step and all(
                np.array_equal(s.best_params[k], v) for k, v in self.model.params.items()
            )
            best = loss if same else self._evaluate(s.best_params, val, s.best_h)
            best /= val.size - 1
        return loss / (val.size - 1), int(val.size), best

    def _session_rate(self) -> float:
        """Characters per second of training time in this session (0 before its first update)."""
        step0, seconds0 = self._session_start
        dt = self.state.seconds - seconds0
        return (self.state.step - step0) * self.update_chars / dt if dt > 0 else 0.0

    def _record(self, metrics_row: bool) -> Progress:
        s, c, model = self.state, self.config, self.model
        val_loss, val_chars, text = None, 0, None
        sample_point = self._sample_point(s.step)
        if sample_point:
            val_loss, val_chars, _ = self._validation(c.val_chars)
            # from the state the next update of stream 0 starts from (a new epoch if due)
            pos = int(s.positions[0])
            if self._updates_before_wrap(pos) == 0:
                h, pos = (self.sample_state(s.h) if c.carry_state else None), 0
            else:
                h = self.sample_state(s.h)
            seed = derived_seed(model.seed, SEED_TAG_PROGRESS, s.step)
            text = sample_text(
                model.params,
                model.vocab,
                c.sample_chars,
                prime=self.corpus.train[pos : pos + 1],
                seed=seed,
                h0=h,
                threads=c.threads,
            )
            smooth = None if s.step == 0 else s.smooth_loss
            s.samples.append(
                SampleRecord(
                    step=s.step,
                    epoch=s.epoch,
                    smooth_loss=smooth,
                    val_loss=val_loss,
                    val_chars=val_chars,
                    seed=seed,
                    text=text,
                )
            )
        if metrics_row:
            s.history.append(
                MetricRow(
                    step=s.step,
                    epoch=s.epoch,
                    loss=s.last_loss,
                    smooth_loss=s.smooth_loss,
                    val_loss=val_loss,
                    val_chars=val_chars,
                )
            )
        if self.best_by == "smooth":
            if metrics_row:
                self._take_best(s.smooth_loss)
        elif val_loss is not None and s.step > 0:
            self._take_best(val_loss)
        if sample_point:
            self._save()
        rate = self._session_rate()
        rec = Progress(
            step=s.step,
            epoch=s.epoch,
            total_steps=s.total_steps,
            loss=self.per_char(s.last_loss),
            smooth_loss=self.per_char(s.smooth_loss),
            val_loss=val_loss,
            val_chars=val_chars,
            chars_per_sec=rate,
            sample=text,
            lr=self._lr if s.step > 0 else math.nan,
            update_chars=self.update_chars,
            loss_sum=s.last_loss,
            smooth_loss_sum=s.smooth_loss,
        )
        if self._bar is not None:
            post = {"update": f"{s.step:,}"} if s.budget_seconds is not None else {}
            post["epoch"] = str(s.epoch)
            post["loss/char"] = f"{rec.smooth_loss:.4f}" if s.step else "n/a"
            if val_loss is not None:
                post["val/char"] = f"{val_loss:.4f}"
            post["chars/s"] = f"{rate:,.0f}" if rate > 0 else "n/a"
            self._bar.set_postfix(post, refresh=True)
        if self.callback is not None:
            self.callback(rec)
        return rec

    def _take_best(self, value: float) -> None:
        """Keep the current model as the best one if ``value`` (of the best_by criterion) is the lowest yet."""
        s = self.state
        if s.best_step < 0 or value < s.best_loss:
            s.best_loss, s.best_step = value, s.step
            s.best_params = copy_params(self.model.params)
            s.best_h = np.array(self.sample_state(s.h), copy=True)

    @contextlib.contextmanager
    def _progress_bar(self, total: int, initial: int):
        """The bar on stderr: updates against the run's length, or, with a
        time budget, training seconds against the budget."""
        if not (self.progress and sys.stderr.isatty()):
            yield
            return
        from tqdm import tqdm

        s = self.state
        if s.budget_seconds is None:
            kw: dict[str, Any] = {"total": total, "initial": initial, "unit": "update"}
        else:
            budget = math.ceil(s.budget_seconds)
            kw = {
                "total": budget,
                "initial": min(budget, round(s.seconds)),
                "bar_format": "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} s of training{postfix}",
            }
        with tqdm(file=sys.stderr, dynamic_ncols=True, desc="training", **kw) as bar:
            self._bar = bar
            try:
                yield
            finally:
                self._bar = None

    # -- the run folder ---------------------------------------------------------

    def _write_static(self, fresh: bool) -> None:
        if self.folder is None:
            return
        model, s = self.model, self.state
        run_info = self.run_info
        if not run_info and not fresh:  # a resumed run keeps how it was asked for
            run_info = self.run_info = self.folder.run_info()
        self.folder.write_json(
            "config.json",
            {
                "model": {**model.meta(), "n_params": model.n_params},
                "train": self.config.to_dict(),
                "run": run_info,
                "corpus": {**self.identity, "vocab_size": model.K, "n_chars": self.corpus.n_chars},
                "total_steps": s.total_steps,
                "budget_seconds": s.budget_seconds,
                "steps_per_epoch": self.steps_per_epoch,
                "package_version": package_version(),
            },
        )
        if fresh or not self.folder.file("gradcheck.md").exists():
            self.folder.write_gradcheck(self._gradcheck())

    def _gradcheck(self) -> str:
        """gradcheck.md: a check of the run's cell on a small model, bounded in time."""
        model = self.model
        T = min(self.config.seq_length, 25)
        layers = min(model.layers, GRADCHECK_LAYERS)
        data, K = self.corpus.train[: T + 1].astype(np.int64), model.K
        note = f"Data: the first {T + 1} characters of the training text"
        full_seconds = numerical_seconds(model.cell, K, 5, layers, T)
        if full_seconds > RUN_CHECK_SECONDS:
            # the cost grows with the square of the vocabulary: check on the data's own (at most 26) characters
            chars, data = np.unique(data, return_inverse=True)
            K = int(chars.size)
            note += (
                f", as a {K}-character vocabulary of their own (with the run's {model.K} characters the check "
                f"would take about {full_seconds:,.0f} s)"
            )
        rep = gradient_check(
            data.reshape(-1),
            K=K,
            m=5,
            seq_length=T,
            seed=model.seed % 2**32,
            cell=model.cell,
            layers=layers,
            dropout=self.config.dropout,
            threads=self.config.threads,
        )
        if layers < model.layers:
            note += f"; a {layers}-layer model of the run's cell (the run has {model.layers} layers)"
        return f"{rep.table()}\n\n{note}."

    def _save(self, checkpoints: bool = True, plot: bool = False, summary: dict[str, Any] | None = None) -> None:
        if self.folder is None:
            return
        model, s = self.model, self.state
        if checkpoints:
            best = None
            if s.best_params is not None:
                smooth = next((r.smooth_loss for r in s.history if r.step == s.best_step), math.nan)
                best = Checkpoint(
                    vocab=model.vocab,
                    params=s.best_params,
                    start_h=s.best_h,
                    meta={
                        **model.meta(),
                        "step": s.best_step,
                        "smooth_loss": _finite(smooth),
                        "best_by": self.best_by,
                        "best_loss": _finite(self._best_per_char()),
                    },
                )
            self.folder.write_checkpoints(model.to_checkpoint(), best)
            self._ckpt_step = s.step
        self.folder.write_records(s.history, s.samples, self.update_chars)
        if summary is not None:
            self.folder.write_json("summary.json", summary)
        if plot:
            final = None if summary is None else (summary["step"], summary["final_val_loss"])
            self.folder.write_plot(s.history, s.samples, self.update_chars, final)

    def _finish(self, result: TrainResult) -> None:
        model, s, c = self.model, self.state, self.config
        t0 = time.perf_counter()
        result.final_val_loss, result.val_chars, result.best_val_loss = self._validation(None)
        best, h = (s.best_params, s.best_h) if s.best_params is not None else (model.params, self.sample_state(s.h))
        result.passage = sample_text(
            best,
            model.vocab,
            c.passage_chars,
            h0=h,
            seed=derived_seed(model.seed, SEED_TAG_PASSAGE, s.step),
            threads=c.threads,
        )
        result.final_seconds = time.perf_counter() - t0
        if self.folder is None:
            return
        summary: dict[str, Any] = {  # null, not NaN, where nothing was measured (a run of 0 updates): standard JSON
            "step": s.step,
            "epoch": s.epoch,
            "total_steps": s.total_steps,
            "update_chars": self.update_chars,
            "smooth_loss": _finite(result.smooth_loss),
            "smooth_loss_sum": _finite(s.smooth_loss),
            "smoothing": c.smoothing,
            "best_by": self.best_by,
            "best_loss": _finite(result.best_loss),
            "best_step": s.best_step,
            "final_val_loss": result.final_val_loss,
            "best_val_loss": result.best_val_loss,
            "val_chars": result.val_chars,
            "passage": result.passage,
            "time_limited": result.time_limited,
            "seconds": s.seconds,
        }
        if self.run_info.get("init_from") is not None:
            summary["init_from"] = self.run_info["init_from"]
        # a sweep's trials leave it out (a page is megabytes for a large model): `charrnn explain` makes one
        if self.run_info.get("sweep") is None and (explain := self._explain(best, h)) is not None:
            self.folder.write_explain(explain)
            summary["explain"] = {"chars": len(explain["text"]), "source": explain["source"]}
        self._save(plot=True, summary=summary)
        self.folder.write_report(plot=False)

    def _explain(self, params: dict[str, np.ndarray], h: np.ndarray | None) -> dict[str, Any] | None:
        """explain.html's data: the best model on the first EXPLAIN_CHARS
        held-out characters (the training text's last ones if none are held
        out), its products in the precision the model trains in, as validation's
        are (validation reads batch_size streams, this one stream)."""
        from .explain.payload import model_info, payload_from_trace
        from .tracing import trace_text

        val, train = self.corpus.val, self.corpus.train
        data, source = (val, "the held-out text") if val.size >= 2 else (train, "the end of the training text")
        part = data[:EXPLAIN_CHARS] if val.size >= 2 else data[-EXPLAIN_CHARS:]
        if part.size < 2:
            return None
        trace = trace_text(
            params,
            self.model.vocab,
            self.model.vocab.decode(part),
            h,
            threads=self.config.threads,
            precision=self.model.precision,
        )
        return payload_from_trace(trace, model_info(self.model), source=source)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
