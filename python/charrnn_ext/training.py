"""The training loop and the run folder it writes.

The updates themselves run in C++ (:func:`charrnn_ext._core.train_steps`), in
chunks that end at the next *record point*. Python only runs the smooth-loss
recurrence over each returned loss array and does the bookkeeping.

Record points (one metrics.csv row and one callback each) are the updates
that are a multiple of ``log_every`` or of ``sample_every``, and the last
update of the run. The best model is the one with the lowest smooth loss *at a
record point*; between record points it is not looked at.

Sample points (update 0 and every ``sample_every`` updates) add a
``sample_chars``-character text, a validation loss on at most ``val_chars``
characters from the start of the validation split, and a checkpoint
(last.npz, best.npz and the text files). At the end of the run the whole
validation split is evaluated for the last and the best model and a
``passage_chars``-character passage is drawn from the best model.

Interruptions: Ctrl-C (SIGINT) during :meth:`Trainer.run` in the main thread
is deferred until the current chunk is done (at most ``log_every`` updates);
the run folder is then saved and KeyboardInterrupt re-raised. A second Ctrl-C
interrupts at once and saves nothing. A callback may raise
:class:`StopTraining` (saved, ``run`` returns with ``stopped=True``) or
KeyboardInterrupt (saved, re-raised).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from . import _core
from .checkpoint import (
    Checkpoint,
    MetricRow,
    SampleRecord,
    TrainState,
    atomic_write_text,
    corpus_identity,
    package_version,
    remove_stale_temp_files,
    save_checkpoint,
)
from .data import BUILTIN_SOURCE, Corpus, corpus_from_string, load_corpus
from .params import copy_params, zeros_like_params
from .sampling import SEED_TAG_PASSAGE, SEED_TAG_PROGRESS, derived_seed, sample_text

if TYPE_CHECKING:
    from .model import CharRNN

__all__ = [
    "Progress",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "RUN_FILES",
]

#: Files a finished run folder holds.
RUN_FILES = ("config.json", "metrics.csv", "samples.md", "loss.png", "best.npz", "last.npz",
             "gradcheck.md", "summary.json", "report.md")

METRICS_COLUMNS = ("step", "epoch", "loss", "smooth_loss", "val_loss", "val_chars")


class StopTraining(Exception):
    """Raise from a callback to stop training cleanly (the state is saved)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. ``step`` is the last good update."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: the classic min-char-rnn setup)."""

    seq_length: int = 25
    eta: float = 0.1
    clip: float = 5.0
    eps: float = 1e-8
    log_every: int = 100
    sample_every: int = 10000
    sample_chars: int = 200
    passage_chars: int = 1000
    val_fraction: float = 0.1
    val_chars: int = 100000

    def __post_init__(self) -> None:
        for name in ("seq_length", "log_every", "sample_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("sample_chars", "passage_chars", "val_chars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("eta", "clip", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
            setattr(self, name, float(v))
        v = self.val_fraction
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"val_fraction must be a number in [0, 1), got {v!r}")
        self.val_fraction = float(v)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class Progress:
    """What a callback receives at every record point."""

    step: int
    epoch: int
    total_steps: int
    loss: float  # loss of this update, summed over seq_length characters
    smooth_loss: float
    val_loss: float | None  # per character, None if not measured here
    val_chars: int
    chars_per_sec: float  # training throughput over the last chunk
    sample: str | None  # text synthesised here (sample points only)


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns."""

    step: int
    epoch: int
    steps_done: int
    smooth_loss: float
    best_loss: float
    best_step: int
    stopped: bool
    final_val_loss: float | None = None  # last model, whole validation split, per char
    best_val_loss: float | None = None  # best model, whole validation split, per char
    val_chars: int = 0
    passage: str | None = None
    out: Path | None = None
    records: list[Progress] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def resolve_corpus(data: Any, vocab, val_fraction: float) -> tuple[Corpus, str | None]:
    """Turn fit's ``data`` argument into a Corpus encoded with ``vocab``.
    Returns (corpus, absolute file path or None)."""
    if isinstance(data, Corpus):
        if data.vocab != vocab:
            corpus = corpus_from_string(data.vocab.decode(np.concatenate([data.train, data.val])),
                                        val_fraction, vocab, source=data.source)
            return corpus, None
        path = None
        if data.source != BUILTIN_SOURCE and os.path.isfile(data.source):
            path = os.path.abspath(data.source)
        return data, path
    if data is None:
        return load_corpus(None, val_fraction, vocab), None
    if isinstance(data, os.PathLike) or (isinstance(data, str) and "\n" not in data and len(data) < 4096
                                         and os.path.isfile(data)):
        path = os.path.abspath(os.fspath(data))
        corpus = load_corpus(path, val_fraction, vocab)
        corpus.source = os.fspath(data)
        return corpus, path
    if isinstance(data, str):
        return corpus_from_string(data, val_fraction, vocab, source="<string>"), None
    raise TypeError(f"data must be a Corpus, a path, a text string or None (built-in corpus), "
                    f"got {type(data).__name__}")


def steps_per_epoch(n_train: int, seq_length: int) -> int:
    """Number of chunks of seq_length (+1 target) in one pass over n_train characters."""
    return (n_train - 1) // seq_length


def _fence(text: str) -> str:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def metrics_csv(history: list[MetricRow]) -> str:
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
    """Parse a metrics.csv written by :func:`metrics_csv`."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [MetricRow(step=int(r["step"]), epoch=int(r["epoch"]), loss=float(r["loss"]),
                      smooth_loss=float(r["smooth_loss"]),
                      val_loss=float(r["val_loss"]) if r["val_loss"] else None,
                      val_chars=int(r["val_chars"]) if r["val_chars"] else 0) for r in rows]


def samples_markdown(samples: list[SampleRecord], seq_length: int, heading: str = "#") -> str:
    lines = [f"{heading} Text synthesised during training", ""]
    for s in samples:
        val = (f"validation loss {s.val_loss:.4f}/char on {s.val_chars} chars" if s.val_loss is not None
               else "validation loss not measured")
        lines.append(f"{heading}# Update {s.step} (epoch {s.epoch}): smooth loss {_fmt(s.smooth_loss)}, {val}")
        lines.append("")
        f = _fence(s.text)
        lines += [f + "text", s.text, f, ""]
    return "\n".join(lines)


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[threading.Event]:
    """While active, the first SIGINT only sets the yielded event; a second one
    raises KeyboardInterrupt as usual. Only in the main thread with Python's
    default handler installed; otherwise the event is never set."""
    flag = threading.Event()
    usable = (threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not usable:
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        flag.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------


class Trainer:
    """Trains a :class:`~charrnn_ext.model.CharRNN` on one corpus and keeps its
    run folder (if ``out`` is given) up to date. Used by ``CharRNN.fit`` /
    ``CharRNN.resume`` and by the ``charrnn train`` command."""

    def __init__(self, model: CharRNN, data: Any = None, *, out: str | os.PathLike[str] | None = None,
                 callback: Callable[[Progress], None] | None = None, progress: bool = False,
                 resume: bool = False, **config: Any):
        self.model = model
        self.callback = callback
        self.progress = progress
        state = model.state
        if resume:
            if state is None:
                raise ValueError("cannot resume: the model has no training state")
            if config:
                raise ValueError(f"cannot change training options when resuming (got {sorted(config)})")
        base = dict(state.config) if state is not None and state.config else {}
        base.update(config)
        self.config = TrainConfig.from_dict(base)
        if resume and data is None:
            stored = state.corpus
            if stored.get("source") == BUILTIN_SOURCE:
                data = None
            elif not stored.get("path"):
                raise ValueError(f"the run was trained on a text given in memory ({stored.get('source')!r}); "
                                 f"pass the same text or Corpus again to resume")
            else:
                data = Path(stored["path"])
                if not data.is_file():
                    raise FileNotFoundError(
                        f"the run was trained on {stored['source']!r} ({data}), which no longer exists; "
                        f"pass the text explicitly (--text FILE)")
        self.corpus, path = resolve_corpus(data, model.vocab, self.config.val_fraction)
        self.identity = corpus_identity(self.corpus.train, self.corpus.source, self.corpus.val.size, path)
        if state is not None and state.corpus:
            old = state.corpus
            if (old.get("n_train"), old.get("train_sha256")) != (self.identity["n_train"],
                                                                 self.identity["train_sha256"]):
                raise ValueError(
                    f"the training text differs from the one this model was trained on: "
                    f"{old.get('source')!r} ({old.get('n_train')} training chars, sha256 "
                    f"{str(old.get('train_sha256'))[:12]}...) vs {self.corpus.source!r} "
                    f"({self.identity['n_train']} chars, sha256 {self.identity['train_sha256'][:12]}...). "
                    f"Use the same text, or call model.reset_training() to start a new run on this one")
        T = self.config.seq_length
        if self.corpus.train.size < T + 1:
            raise ValueError(f"the training split of {self.corpus.source!r} has {self.corpus.train.size} "
                             f"characters; seq_length={T} needs at least {T + 1}")
        self.out = None if out is None else Path(out)
        if self.out is not None:
            if self.out.exists() and not self.out.is_dir():
                raise NotADirectoryError(f"run folder {self.out} exists and is not a directory")
            if state is None and (self.out / "last.npz").exists():
                raise ValueError(f"{self.out} already holds a run (last.npz); resume it or choose another folder")
            self.out.mkdir(parents=True, exist_ok=True)
            # temporary files of writes cut short by a crash or SIGKILL (never read)
            remove_stale_temp_files(self.out, RUN_FILES)
        self.resume = resume
        self._bar = None
        self._ckpt_step: int | None = None

    # -- public -------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.corpus.train.size, self.config.seq_length)

    def run(self, steps: int | None = None, epochs: float | None = None, *, total_steps: int | None = None,
            max_steps: int | None = None) -> TrainResult:
        """Train ``steps`` more updates, or ``epochs`` more epochs, or up to
        ``total_steps`` (for resuming; default: the run's stored target)."""
        model, cfg = self.model, self.config
        for name, v in (("steps", steps), ("total_steps", total_steps), ("max_steps", max_steps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))
                                   or not math.isfinite(epochs) or epochs < 0):
            raise ValueError(f"epochs must be a non-negative number, got {epochs!r}")
        if sum(v is not None for v in (steps, epochs, total_steps)) > 1:
            raise ValueError("give only one of steps, epochs and total_steps")
        fresh = model.state is None
        if fresh:
            model.state = TrainState(mem=zeros_like_params(model.params),
                                     h=np.zeros(model.hidden, dtype=model.dtype))
        s = model.state
        if total_steps is not None:
            total = int(total_steps)
        elif steps is not None:
            total = s.step + int(steps)
        elif epochs is not None:
            total = s.step + int(round(epochs * self.steps_per_epoch))
        elif self.resume or (not fresh and s.total_steps > s.step):
            total = s.total_steps  # continue an unfinished run to its target
        else:
            total = s.step + 2 * self.steps_per_epoch
        if total < s.step:
            raise ValueError(f"the model has already done {s.step} updates, more than the target {total}")
        s.total_steps = total
        s.config = cfg.to_dict()
        s.corpus = self.identity
        start_step = s.step
        session_end = total if max_steps is None else min(total, s.step + int(max_steps))
        result_records: list[Progress] = []
        self._write_static(fresh)
        stopped = False
        try:
            with _deferred_sigint() as interrupted, self._progress_bar(total, s.step):
                if s.step % cfg.sample_every == 0 and not any(r.step == s.step for r in s.samples):
                    rec = self._record(chunk_rate=0.0, metrics_row=False)
                    result_records.append(rec)
                while s.step < session_end:
                    if interrupted.is_set():
                        raise KeyboardInterrupt
                    rate = self._chunk(min(self._next_record(s.step, total), session_end))
                    if self._is_record(s.step, total):
                        result_records.append(self._record(rate, metrics_row=True))
                if interrupted.is_set():
                    raise KeyboardInterrupt
            stopped = s.step < total
        except StopTraining:
            stopped = True
        except KeyboardInterrupt:
            self._save(plot=True)
            raise
        result = TrainResult(step=s.step, epoch=s.epoch, steps_done=s.step - start_step,
                             smooth_loss=s.smooth_loss, best_loss=s.best_loss, best_step=s.best_step,
                             stopped=stopped, out=self.out, records=result_records)
        if stopped:
            self._save(plot=True)
        else:
            self._finish(result)
        return result

    # -- the loop -----------------------------------------------------------

    def _is_record(self, step: int, total: int) -> bool:
        c = self.config
        return step % c.log_every == 0 or step % c.sample_every == 0 or step == total

    def _next_record(self, step: int, total: int) -> int:
        c = self.config
        nxt = min((step // c.log_every + 1) * c.log_every, (step // c.sample_every + 1) * c.sample_every)
        return min(nxt, total)

    def _chunk(self, until: int) -> float:
        """Run the updates up to step ``until`` in C++; returns chars/s."""
        s, c, params = self.model.state, self.config, self.model.params
        n = until - s.step
        t0 = time.perf_counter()
        losses, h, pos, wraps, diverged = _core.train_steps(
            params, s.mem, self.corpus.train, s.h, n_steps=n, seq_length=c.seq_length, pos=s.pos,
            eta=c.eta, clip=c.clip, eps=c.eps)
        dt = time.perf_counter() - t0
        values = losses.tolist()
        smooth = s.smooth_loss
        for i, loss in enumerate(values):
            smooth = loss if (s.step == 0 and i == 0) else 0.999 * smooth + 0.001 * loss
        if values:
            s.smooth_loss = smooth
            s.last_loss = values[-1]
        s.h, s.pos, s.wraps, s.step = h, int(pos), s.wraps + int(wraps), s.step + len(values)
        if self._bar is not None:
            self._bar.update(len(values))
        if diverged:
            self._diverged()
        return len(values) * c.seq_length / dt if dt > 0 else math.inf

    def _diverged(self) -> None:
        s = self.model.state
        self._save(checkpoints=False, plot=True)
        where = (f"the last good checkpoint is {self.out / 'last.npz'} (update {self._ckpt_step})"
                 if self.out is not None and self._ckpt_step is not None else "no checkpoint was written")
        raise TrainingDiverged(
            f"training diverged: the loss of update {s.step + 1} is not finite (smooth loss so far "
            f"{_fmt(s.smooth_loss)}); stopped after update {s.step} without applying it; {where}. "
            f"Try a smaller learning rate (eta={self.config.eta:g}).", s.step,
            self.out / "last.npz" if self.out is not None and self._ckpt_step is not None else None)

    def _validation(self, limit: int | None) -> tuple[float | None, int, float | None]:
        """(per-char loss of the current model, chars used, same for the best model if limit is None)."""
        val = self.corpus.val if limit is None else self.corpus.val[:limit]
        if val.size < 2:
            return None, 0, None
        # Validation continues from the running hidden state (as the text does
        # after the training split): the hidden state is reset to zero only once
        # per epoch, and early networks can be poor from a zero state.
        s = self.model.state
        loss, _ = _core.evaluate_loss(self.model.params, val, s.h)
        best = None
        if limit is None and s.best_params is not None:
            best = float(_core.evaluate_loss(s.best_params, val, s.best_h)[0]) / (val.size - 1)
        return float(loss) / (val.size - 1), int(val.size), best

    def _record(self, chunk_rate: float, metrics_row: bool) -> Progress:
        s, c, model = self.model.state, self.config, self.model
        val_loss, val_chars, text = None, 0, None
        sample_point = s.step % c.sample_every == 0
        if sample_point:
            val_loss, val_chars, _ = self._validation(c.val_chars)
            # the state the next update starts from (wrapping to a new epoch if due)
            if s.pos + c.seq_length + 1 > self.corpus.train.size:
                h, pos = None, 0
            else:
                h, pos = s.h, s.pos
            seed = derived_seed(model.seed, SEED_TAG_PROGRESS, s.step)
            text = sample_text(model.params, model.vocab, c.sample_chars, prime=self.corpus.train[pos:pos + 1],
                               seed=seed, h0=h)
            s.samples.append(SampleRecord(step=s.step, epoch=s.epoch,
                                          smooth_loss=None if s.step == 0 else s.smooth_loss,
                                          val_loss=val_loss, val_chars=val_chars, seed=seed, text=text))
        if metrics_row:
            s.history.append(MetricRow(step=s.step, epoch=s.epoch, loss=s.last_loss, smooth_loss=s.smooth_loss,
                                       val_loss=val_loss, val_chars=val_chars))
            if s.best_step < 0 or s.smooth_loss < s.best_loss:
                s.best_loss, s.best_step = s.smooth_loss, s.step
                s.best_params = copy_params(model.params)
                s.best_h = s.h.copy()
        if sample_point:
            self._save()
        rec = Progress(step=s.step, epoch=s.epoch, total_steps=s.total_steps,
                       loss=s.last_loss, smooth_loss=s.smooth_loss, val_loss=val_loss, val_chars=val_chars,
                       chars_per_sec=chunk_rate, sample=text)
        if self._bar is not None:
            post = {"epoch": s.epoch, "smooth": f"{s.smooth_loss:.3f}" if s.step else "n/a",
                    "chars/s": f"{chunk_rate:,.0f}"}
            self._bar.set_postfix(post, refresh=False)
        if self.callback is not None:
            self.callback(rec)
        return rec

    @contextlib.contextmanager
    def _progress_bar(self, total: int, initial: int):
        enabled = self.progress and sys.stderr.isatty()
        if not enabled:
            yield
            return
        from tqdm import tqdm

        with tqdm(total=total, initial=initial, unit="step", file=sys.stderr, dynamic_ncols=True,
                  desc="training") as bar:
            self._bar = bar
            try:
                yield
            finally:
                self._bar = None

    # -- the run folder -----------------------------------------------------

    def _write_static(self, fresh: bool) -> None:
        if self.out is None:
            return
        model, s = self.model, self.model.state
        cfg = {
            "model": model.meta(),
            "train": self.config.to_dict(),
            "corpus": {**self.identity, "vocab_size": model.K, "n_chars": self.corpus.n_chars},
            "total_steps": s.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "package_version": package_version(),
        }
        atomic_write_text(self.out / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        if not (self.out / "gradcheck.md").exists():
            from .gradcheck import gradient_check

            T = self.config.seq_length
            rep = gradient_check(np.asarray(self.corpus.train[:T + 1], dtype=np.int64), K=model.K, m=5,
                                 seq_length=T, seed=model.seed % 2**32)
            atomic_write_text(self.out / "gradcheck.md",
                              f"{rep.table()}\n\nData: the first {T + 1} characters of the training text.\n")

    def _save(self, checkpoints: bool = True, plot: bool = False, summary: dict | None = None) -> None:
        if self.out is None:
            return
        model, s = self.model, self.model.state
        if checkpoints:
            save_checkpoint(self.out / "last.npz", model.to_checkpoint())
            if s.best_params is not None:
                save_checkpoint(self.out / "best.npz", Checkpoint(
                    vocab=model.vocab, params=s.best_params, start_h=s.best_h,
                    meta={**model.meta(), "step": s.best_step, "smooth_loss": s.best_loss}))
            self._ckpt_step = s.step
        atomic_write_text(self.out / "metrics.csv", metrics_csv(s.history))
        atomic_write_text(self.out / "samples.md", samples_markdown(s.samples, self.config.seq_length))
        if summary is not None:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if plot:
            from .report import plot_losses

            final = None if summary is None else (summary["step"], summary["final_val_loss"])
            plot_losses(self.out / "loss.png", s.history, s.samples, self.config.seq_length, final)

    def _finish(self, result: TrainResult) -> None:
        model, s, c = self.model, self.model.state, self.config
        result.final_val_loss, result.val_chars, result.best_val_loss = self._validation(None)
        best, h = (s.best_params, s.best_h) if s.best_params is not None else (model.params, s.h)
        result.passage = sample_text(best, model.vocab, c.passage_chars, h0=h,
                                     seed=derived_seed(model.seed, SEED_TAG_PASSAGE, s.step))
        if self.out is None:
            return
        summary = {
            "step": s.step, "epoch": s.epoch, "total_steps": s.total_steps, "smooth_loss": s.smooth_loss,
            "best_loss": s.best_loss, "best_step": s.best_step, "final_val_loss": result.final_val_loss,
            "best_val_loss": result.best_val_loss, "val_chars": result.val_chars,
            "passage": result.passage,
        }
        self._save(plot=True, summary=summary)
        from .report import write_report

        write_report(self.out, plot=False)
