"""The training loop and the run folder it writes.

The updates themselves run in C++, in chunks that end at the next *record
point*. Python only runs the smooth-loss recurrence over each returned loss
array and does the bookkeeping. Three paths:

- the classic one (a one-layer vanilla RNN, AdaGrad, elementwise clipping,
  batch_size 1): :func:`charrnn_ext._core.train_steps`, unchanged;
- the same configuration with batch_size B > 1:
  :func:`charrnn_ext._core.train_steps_batched`. The training split is cut into
  B contiguous segments, one stream each with its own hidden state; the
  gradients of the B streams are *summed* (not averaged) into one update, so
  an update sees B * seq_length characters and an epoch has
  (len(train) // B - 1) // seq_length updates. The (B, m) hidden states and the
  B positions are part of the training state;
- everything else (lstm / gru cells, stacked layers, RMSProp / Adam, global-norm
  clipping): :func:`charrnn_ext._core.net_train_steps`.

Learning-rate decay: the update in (0-based) epoch e uses
``eta * lr_decay ** (e // lr_decay_every)``; chunks end at those epoch
boundaries, so the rate is constant within a chunk and a resumed run uses
the same rates.

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
from .nets import CLIP_MODES, OPTIMIZERS, copy_net_params, init_opt_state, net_zero_state
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


#: Learning rate used when none is given: AdaGrad's classic 0.1, else 2e-3.
DEFAULT_LR = {"adagrad": 0.1, "rmsprop": 2e-3, "adam": 2e-3}

_BATCH_ERROR = "batching is only available for the vanilla RNN with AdaGrad"


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: the classic vanilla-RNN experiment).

    ``eta`` is the learning rate (None: :data:`DEFAULT_LR` of the optimiser);
    ``gamma`` is RMSProp's decay, ``beta1``/``beta2`` Adam's; ``clip_mode``
    'elementwise' clips each gradient entry to ±clip, 'global_norm' rescales
    the whole gradient to norm <= clip. ``lr_decay``/``lr_decay_every``: the
    rate is multiplied by lr_decay every lr_decay_every epochs.
    ``batch_size`` > 1 (vanilla RNN with AdaGrad only) trains that many
    streams with summed gradients, ``threads`` worker threads (results do
    not depend on it).
    """

    seq_length: int = 25
    eta: float | None = None
    clip: float = 5.0
    eps: float = 1e-8
    log_every: int = 100
    sample_every: int = 10000
    sample_chars: int = 200
    passage_chars: int = 1000
    val_fraction: float = 0.1
    val_chars: int = 100000
    optimizer: str = "adagrad"
    clip_mode: str = "elementwise"
    gamma: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    lr_decay: float = 1.0
    lr_decay_every: int = 1
    batch_size: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"unknown clip_mode {self.clip_mode!r}; expected one of {', '.join(CLIP_MODES)}")
        if self.eta is None:
            self.eta = DEFAULT_LR[self.optimizer]
        for name in ("gamma", "beta1", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
            setattr(self, name, float(v))
        for name in ("seq_length", "log_every", "sample_every", "lr_decay_every", "batch_size", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("sample_chars", "passage_chars", "val_chars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("eta", "clip", "eps", "lr_decay"):
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
    loss: float  # loss of this update, summed over its seq_length (x batch_size streams) characters
    smooth_loss: float
    val_loss: float | None  # per character, None if not measured here
    val_chars: int
    chars_per_sec: float  # training throughput over the last chunk
    sample: str | None  # text synthesised here (sample points only)
    lr: float = math.nan  # learning rate of the last update


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
    time_limited: bool = False  # ended by max_minutes (the run is finished at that update)


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


def steps_per_epoch(n_train: int, seq_length: int, batch_size: int = 1) -> int:
    """Number of chunks of seq_length (+1 target) in one pass over n_train
    characters (with batch_size streams: over each of the segments of n_train // batch_size)."""
    return (n_train // batch_size - 1) // seq_length


def _net_name(name: str) -> str:
    return {"U": "l0.Wx", "W": "l0.Wh", "b": "l0.b"}.get(name, name)


def net_view(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The classic U, W, V, b, c renamed to the one-layer network keys (same arrays)."""
    return {_net_name(k): v for k, v in params.items()}


def opt_net_view(mem: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Optimiser state keyed by classic names ("U" for AdaGrad's memory, "m:U", ...)
    renamed to network keys ("M:l0.Wx", "m:l0.Wx", ...); same arrays."""
    out = {}
    for k, v in mem.items():
        slot, _, name = k.rpartition(":")
        out[f"{slot or 'M'}:{_net_name(name)}"] = v
    return out


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
        if "optimizer" in config and "eta" not in config and base.get("optimizer", "adagrad") != config["optimizer"]:
            base.pop("eta", None)  # the stored rate belongs to another optimiser
        base.update(config)
        self.config = TrainConfig.from_dict(base)
        if state is not None and state.config:
            for key in ("optimizer", "batch_size"):
                old = state.config.get(key, TrainConfig.__dataclass_fields__[key].default)
                if old != getattr(self.config, key):
                    raise ValueError(f"cannot change {key} of a run ({old!r} -> {getattr(self.config, key)!r}); "
                                     f"call model.reset_training() to start a new run")
        c = self.config
        self.path = "net"
        if model.classic and c.optimizer == "adagrad" and c.clip_mode == "elementwise":
            self.path = "classic" if c.batch_size == 1 else "batched"
        if c.batch_size > 1 and self.path != "batched":
            raise ValueError(f"{_BATCH_ERROR} (cell 'rnn', 1 layer, optimizer 'adagrad', clip_mode "
                             f"'elementwise'); got cell {model.cell!r}, {model.layers} layer(s), optimizer "
                             f"{c.optimizer!r}, clip_mode {c.clip_mode!r} with batch_size {c.batch_size}")
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
        T, B = self.config.seq_length, self.config.batch_size
        if self.corpus.train.size // B < T + 1:
            raise ValueError(f"the training split of {self.corpus.source!r} has {self.corpus.train.size} "
                             f"characters; seq_length={T} needs at least {T + 1}"
                             + (f" per stream, {B * (T + 1)} for batch_size={B}" if B > 1 else ""))
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
        self._lr = math.nan
        self._bar = None
        self._ckpt_step: int | None = None

    # -- public -------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.corpus.train.size, self.config.seq_length, self.config.batch_size)

    def lr_at(self, step: int) -> float:
        """Learning rate of the update that follows ``step`` updates."""
        c = self.config
        if c.lr_decay == 1.0:
            return c.eta
        return c.eta * c.lr_decay ** ((step // self.steps_per_epoch) // c.lr_decay_every)

    def _fresh_state(self) -> TrainState:
        model, c = self.model, self.config
        if self.path == "classic":
            return TrainState(mem=zeros_like_params(model.params), h=np.zeros(model.hidden, dtype=model.dtype))
        if self.path == "batched":
            return TrainState(mem=zeros_like_params(model.params),
                              h=np.zeros((c.batch_size, model.hidden), dtype=model.dtype),
                              positions=np.zeros(c.batch_size, dtype=np.int64))
        if model.classic:  # one-layer rnn on the network path: keep the U..c names
            mem = zeros_like_params(model.params) if c.optimizer == "adagrad" else \
                init_opt_state(model.params, c.optimizer)
            return TrainState(mem=mem, h=np.zeros(model.hidden, dtype=model.dtype))
        return TrainState(mem=init_opt_state(model.params, c.optimizer), h=net_zero_state(model.cell, model.params))

    def sample_state(self, h: np.ndarray | None) -> np.ndarray | None:
        """The hidden state sampling/validation start from (stream 0 of a batched run)."""
        return h[0] if h is not None and self.path == "batched" else h

    def _evaluate(self, params: dict[str, np.ndarray], data: np.ndarray, h: np.ndarray | None) -> float:
        h = self.sample_state(h)
        if self.model.classic:
            return float(_core.evaluate_loss(params, data, h)[0])
        return float(_core.net_evaluate_loss(self.model.cell, params, data, h)[0])

    def run(self, steps: int | None = None, epochs: float | None = None, *, total_steps: int | None = None,
            max_steps: int | None = None, max_minutes: float | None = None) -> TrainResult:
        """Train ``steps`` more updates, or ``epochs`` more epochs, or up to
        ``total_steps`` (for resuming; default: the run's stored target).
        ``max_minutes``: end the run (as finished) at the first chunk
        boundary after that much wall-clock time."""
        model, cfg = self.model, self.config
        if max_minutes is not None and (isinstance(max_minutes, bool) or not isinstance(max_minutes, (int, float))
                                        or not max_minutes > 0 or not math.isfinite(max_minutes)):
            raise ValueError(f"max_minutes must be a positive number, got {max_minutes!r}")
        deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
        time_limited = False
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
            model.state = self._fresh_state()
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
                    if deadline is not None and time.monotonic() >= deadline and s.step < session_end:
                        # out of time: this update becomes the end of the run
                        total = s.total_steps = s.step
                        time_limited = True
                    if self._is_record(s.step, total):
                        result_records.append(self._record(rate, metrics_row=True))
                    if time_limited:
                        break
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
                             stopped=stopped, out=self.out, records=result_records, time_limited=time_limited)
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
        if c.lr_decay != 1.0:  # chunks end where the learning rate changes
            span = self.steps_per_epoch * c.lr_decay_every
            nxt = min(nxt, (step // span + 1) * span)
        return min(nxt, total)

    def _chunk(self, until: int) -> float:
        """Run the updates up to step ``until`` in C++; returns chars/s."""
        s, c, params, model = self.model.state, self.config, self.model.params, self.model
        n = until - s.step
        lr = self.lr_at(s.step)
        t0 = time.perf_counter()
        if self.path == "classic":
            losses, h, pos, wraps, diverged = _core.train_steps(
                params, s.mem, self.corpus.train, s.h, n_steps=n, seq_length=c.seq_length, pos=s.pos,
                eta=lr, clip=c.clip, eps=c.eps)
        elif self.path == "batched":
            losses, h, positions, stream_wraps, diverged = _core.train_steps_batched(
                params, s.mem, self.corpus.train, s.h, n_steps=n, batch_size=c.batch_size,
                seq_length=c.seq_length, positions=s.positions, threads=c.threads, eta=lr, clip=c.clip, eps=c.eps)
            s.positions = np.asarray(positions, dtype=np.int64)
            pos, wraps = int(s.positions[0]), int(stream_wraps[0])  # the streams wrap together
        else:
            h_in = s.h.reshape(1, -1) if model.classic else s.h
            losses, h, pos, wraps, diverged, t = _core.net_train_steps(
                model.cell, net_view(params) if model.classic else params,
                opt_net_view(s.mem) if model.classic else s.mem, self.corpus.train, h_in, n_steps=n,
                seq_length=c.seq_length, pos=s.pos, optimizer=c.optimizer, lr=lr, clip=c.clip,
                clip_mode=c.clip_mode, gamma=c.gamma, beta1=c.beta1, beta2=c.beta2, eps=c.eps, t=s.t)
            s.t = int(t)
            if model.classic:
                h = h.reshape(-1)
        self._lr = lr
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
        return len(values) * c.seq_length * c.batch_size / dt if dt > 0 else math.inf

    def _diverged(self) -> None:
        s = self.model.state
        self._save(checkpoints=False, plot=True)
        where = (f"the last good checkpoint is {self.out / 'last.npz'} (update {self._ckpt_step})"
                 if self.out is not None and self._ckpt_step is not None else "no checkpoint was written")
        raise TrainingDiverged(
            f"training diverged: the loss of update {s.step + 1} is not finite (smooth loss so far "
            f"{_fmt(s.smooth_loss)}); stopped after update {s.step} without applying it; {where}. "
            f"Try a smaller learning rate (eta={self.lr_at(s.step):g}).", s.step,
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
        loss = self._evaluate(self.model.params, val, s.h)
        best = None
        if limit is None and s.best_params is not None:
            best = self._evaluate(s.best_params, val, s.best_h) / (val.size - 1)
        return float(loss) / (val.size - 1), int(val.size), best

    def _record(self, chunk_rate: float, metrics_row: bool) -> Progress:
        s, c, model = self.model.state, self.config, self.model
        val_loss, val_chars, text = None, 0, None
        sample_point = s.step % c.sample_every == 0
        if sample_point:
            val_loss, val_chars, _ = self._validation(c.val_chars)
            # the state the next update starts from (wrapping to a new epoch if due;
            # stream 0, which walks the start of the text, for a batched run)
            if s.pos + c.seq_length + 1 > self.corpus.train.size // c.batch_size:
                h, pos = None, 0
            else:
                h, pos = self.sample_state(s.h), s.pos
            seed = derived_seed(model.seed, SEED_TAG_PROGRESS, s.step)
            text = sample_text(model.params, model.vocab, c.sample_chars, prime=self.corpus.train[pos:pos + 1],
                               seed=seed, h0=h, cell=None if model.classic else model.cell)
            s.samples.append(SampleRecord(step=s.step, epoch=s.epoch,
                                          smooth_loss=None if s.step == 0 else s.smooth_loss,
                                          val_loss=val_loss, val_chars=val_chars, seed=seed, text=text))
        if metrics_row:
            s.history.append(MetricRow(step=s.step, epoch=s.epoch, loss=s.last_loss, smooth_loss=s.smooth_loss,
                                       val_loss=val_loss, val_chars=val_chars))
            if s.best_step < 0 or s.smooth_loss < s.best_loss:
                s.best_loss, s.best_step = s.smooth_loss, s.step
                s.best_params = copy_params(model.params) if model.classic else copy_net_params(model.params)
                s.best_h = s.h.copy()
        if sample_point:
            self._save()
        rec = Progress(step=s.step, epoch=s.epoch, total_steps=s.total_steps,
                       loss=s.last_loss, smooth_loss=s.smooth_loss, val_loss=val_loss, val_chars=val_chars,
                       chars_per_sec=chunk_rate, sample=text,
                       lr=self._lr if s.step > 0 else math.nan)
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
            "model": {**model.meta(), "n_params": model.n_params},
            "training_path": self.path,
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
                                 seq_length=T, seed=model.seed % 2**32, cell=model.cell, layers=model.layers)
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
                    vocab=model.vocab, params=s.best_params, start_h=self.sample_state(s.best_h),
                    meta={**model.meta(), "step": s.best_step, "smooth_loss": s.best_loss}))
            self._ckpt_step = s.step
        atomic_write_text(self.out / "metrics.csv", metrics_csv(s.history))
        atomic_write_text(self.out / "samples.md", samples_markdown(s.samples, self.config.seq_length))
        if summary is not None:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if plot:
            from .report import plot_losses

            final = None if summary is None else (summary["step"], summary["final_val_loss"])
            plot_losses(self.out / "loss.png", s.history, s.samples,
                        self.config.seq_length * self.config.batch_size, final)

    def _finish(self, result: TrainResult) -> None:
        model, s, c = self.model, self.model.state, self.config
        result.final_val_loss, result.val_chars, result.best_val_loss = self._validation(None)
        best, h = (s.best_params, s.best_h) if s.best_params is not None else (model.params, s.h)
        result.passage = sample_text(best, model.vocab, c.passage_chars, h0=self.sample_state(h),
                                     seed=derived_seed(model.seed, SEED_TAG_PASSAGE, s.step),
                                     cell=None if model.classic else model.cell)
        if self.out is None:
            return
        summary = {
            "step": s.step, "epoch": s.epoch, "total_steps": s.total_steps, "smooth_loss": s.smooth_loss,
            "best_loss": s.best_loss, "best_step": s.best_step, "final_val_loss": result.final_val_loss,
            "best_val_loss": result.best_val_loss, "val_chars": result.val_chars,
            "passage": result.passage, "time_limited": result.time_limited,
        }
        self._save(plot=True, summary=summary)
        from .report import write_report

        write_report(self.out, plot=False)
