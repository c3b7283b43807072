"""Every option of a run, defined once: its name, type, default, allowed
values and help text. The command line (:mod:`charrnn_ext.cli`), the API
(:class:`TrainConfig`, :meth:`CharRNN.new <charrnn_ext.model.CharRNN.new>`,
the kernel front doors of :mod:`charrnn_ext.engine`) and the report read them
from here.

Options come in three groups:

- ``model``: what the network is (cell, layers, hidden size, initialisation,
  float type, seed); fixed for the life of a model;
- ``train``: how it is trained (:class:`TrainConfig`); fixed for a run;
- ``run``: what one ``charrnn train`` invocation does (text, length, folder);
- ``sample`` and ``serve``: what ``charrnn sample`` draws and where ``charrnn serve`` listens.

Presets name a set of option values; explicit options override them.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BEST_BY",
    "CELLS",
    "CLIP_MODES",
    "DEFAULT_ETA",
    "DTYPES",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "OPTIONS",
    "PRESETS",
    "SMOOTHINGS",
    "UPDATE_OPTIONS",
    "Option",
    "TrainConfig",
    "default",
    "model_options",
    "option",
    "param_dtype",
    "precision_of",
    "update_options",
]

#: The choices the C++ core understands, in its order. The core lists them too
#: (``_core.CELLS``, ...); :mod:`charrnn_ext.engine` refuses to load a core
#: whose lists differ, so the two cannot drift apart.
CELLS: tuple[str, ...] = ("rnn", "lstm", "gru")
OPTIMIZERS: tuple[str, ...] = ("adagrad", "rmsprop", "adam")
CLIP_MODES: tuple[str, ...] = ("elementwise", "global_norm", "none")
#: "bfloat16" is mixed precision: float32 parameters (and optimiser state,
#: gates, softmax, loss) with the operands of every matrix product of
#: training rounded to bfloat16 and their sums kept in float32.
DTYPES: tuple[str, ...] = ("float64", "float32", "bfloat16")

#: How the learning rate changes over a run (see :meth:`TrainConfig.lr_at`).
LR_SCHEDULES: tuple[str, ...] = ("step", "linear", "cosine")

#: How the smooth loss averages the update losses (see :func:`charrnn_ext.state.smoothed`).
SMOOTHINGS: tuple[str, ...] = ("classic", "adaptive")

#: What chooses a run's best model (best.npz).
BEST_BY: tuple[str, ...] = ("validation", "smooth")

#: The learning rate when none is given: AdaGrad's classic 0.1, else 2e-3.
DEFAULT_ETA = {"adagrad": 0.1, "rmsprop": 2e-3, "adam": 2e-3}

_BIG = 10**12
_MAX_VOCAB = 0x110000


@dataclass(frozen=True)
class Option:
    """One option. Numbers must lie in [low, high] (``low_open``: excluding
    low; ``high_open``: excluding high); ``optional`` options may also be None
    (their value is then decided elsewhere, as the learning rate by the optimiser)."""

    name: str
    kind: type
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    metavar: str | None = None
    update: bool = False

    @property
    def flag(self) -> str:
        """The command-line spelling, e.g. ``--seq-length``."""
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        """The allowed values in words, for help texts and messages."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        fmt = (
            (lambda v: f"{int(v):,}".replace(",", "_") if abs(v) >= 1e5 else f"{int(v)}")
            if self.kind is int
            else (lambda v: f"{v:g}")
        )
        return f"{lo}{fmt(self.low)}, {fmt(self.high)}{hi}"

    def range_words(self) -> str:
        """The allowed numbers as people write them, for help texts: "1 <= N <= 65,536",
        "0 < ETA <= 10", "N >= 0" (no upper bound in practice), "0 <= SEED < 2^64"
        (:meth:`range_text` is the exact interval, for messages)."""
        name = self.metavar or self.name.upper()

        def num(v: float) -> str:
            if self.kind is int:
                v = int(v)
                for base in (2, 10):
                    e = round(math.log(v, base)) if v > 1 else 0
                    if e > 16 and base**e == v:
                        return f"{base}^{e}"
                return f"{v:,}"
            return f"{int(v):,}" if v == int(v) and abs(v) >= 1000 else f"{v:g}"

        assert self.low is not None and self.high is not None
        lo = f"{num(self.low)} {'<' if self.low_open else '<='} "
        if self.high == _BIG:  # no bound anyone would reach
            return f"{name} {'>' if self.low_open else '>='} {num(self.low)}"
        return f"{lo}{name} {'<' if self.high_open else '<='} {num(self.high)}"

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type if it is allowed; else
        TypeError or ValueError naming the option and what it accepts."""
        if value is None and self.optional:
            return None
        what = f"{self.name} must be {self._kind_text()}"
        if self.kind is str:
            if not isinstance(value, str):
                raise TypeError(f"{what}, got {type(value).__name__} {shown(value)}")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}; got {shown(value)}")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise TypeError(f"{what}, got {type(value).__name__} {shown(value)}")
            return value
        if isinstance(value, bool) or not _is_number(value, integral=self.kind is int):
            raise TypeError(f"{what} in {self.range_text()}, got {type(value).__name__} {shown(value)}")
        try:
            v = int(value) if self.kind is int else float(value)
        except OverflowError:  # an integer beyond the float range
            raise ValueError(f"{what} in {self.range_text()}, got {shown(value)}") from None
        if (isinstance(v, float) and not math.isfinite(v)) or not self._in_range(v):
            raise ValueError(f"{what} in {self.range_text()}, got {shown(value)}")
        return v

    def _kind_text(self) -> str:
        return {int: "an integer", float: "a number", str: "a string", bool: "a bool"}[self.kind]

    def _in_range(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            return False
        return True


def shown(value: Any, limit: int = 60) -> str:
    """repr(value) for a message, cut to about ``limit`` characters (a value
    may come from a command line of any length)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr (sys.get_int_max_str_digits)
        return f"an integer of about {int(value.bit_length() * 0.30103):,} digits"
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]} ({len(text):,} characters)"


def _is_number(v: Any, integral: bool) -> bool:
    import numbers

    if integral:
        return isinstance(v, numbers.Integral)
    return isinstance(v, numbers.Real)


def _opt(name, kind, default, help, group, **kw) -> Option:
    return Option(name, kind, default, help, group, **kw)


#: All options, in the order the command line lists them.
OPTIONS: tuple[Option, ...] = (
    # -- the model
    _opt("cell", str, "rnn", "recurrent cell", "model", choices=CELLS),
    _opt("layers", int, 1, "stacked recurrent layers", "model", low=1, high=64),
    _opt("hidden", int, 100, "hidden units m per layer", "model", low=1, high=65536, metavar="M"),
    _opt("sig", float, 0.01, "standard deviation of the initial weights (biases start at 0)", "model", low=0, high=10),
    _opt("forget_bias", float, 1.0, "initial LSTM forget-gate bias", "model", low=-100, high=100),
    _opt(
        "dtype",
        str,
        "float64",
        "float type: float64, float32 (about twice as fast), or bfloat16 (float32 weights, bfloat16 matrix "
        "products; fast with AMX, or AVX512-BF16 on AMD; slower than float32 elsewhere)",
        "model",
        choices=DTYPES,
    ),
    _opt(
        "seed",
        int,
        0,
        "seed of the initial weights, the samples and the dropout masks",
        "model",
        low=0,
        high=2**64,
        high_open=True,
        update=True,
    ),
    # -- training
    _opt("seq_length", int, 25, "characters per stream per update (BPTT length)", "train", low=1, high=100_000),
    _opt(
        "batch_size",
        int,
        1,
        "streams over as many contiguous segments of the text; their gradients are summed into one update",
        "train",
        low=1,
        high=65536,
        metavar="B",
    ),
    _opt(
        "threads",
        int,
        1,
        "most worker threads (fewer when a step is too small to share; results do not depend on it)",
        "train",
        low=1,
        high=256,
    ),
    _opt("optimizer", str, "adagrad", "optimiser", "train", choices=OPTIMIZERS, update=True),
    _opt(
        "eta",
        float,
        None,
        "learning rate (default 0.1 for adagrad, 0.002 for rmsprop and adam)",
        "train",
        low=0,
        high=10,
        low_open=True,
        optional=True,
        update=True,
    ),
    _opt(
        "lr_schedule",
        str,
        "step",
        "learning-rate schedule: step multiplies eta by --lr-decay every "
        "--lr-decay-every epochs; linear and cosine decay it to eta * --lr-final over "
        "the run (its steps, or its --max-minutes budget)",
        "train",
        choices=LR_SCHEDULES,
    ),
    _opt(
        "lr_decay",
        float,
        1.0,
        "factor of the step schedule (1: constant rate)",
        "train",
        low=0,
        high=1,
        low_open=True,
        metavar="FACTOR",
    ),
    _opt("lr_decay_every", int, 1, "epochs per step of the step schedule", "train", low=1, high=_BIG, metavar="EPOCHS"),
    _opt(
        "lr_final",
        float,
        0.0,
        "final learning rate of the linear and cosine schedules, as a fraction of eta",
        "train",
        low=0,
        high=1,
    ),
    _opt(
        "warmup",
        int,
        0,
        "updates of linear warm-up from 0 to eta at the start of the run",
        "train",
        low=0,
        high=_BIG,
        metavar="STEPS",
    ),
    _opt("clip", float, 5.0, "gradient clipping bound", "train", low=0, high=1e6, low_open=True, update=True),
    _opt(
        "clip_mode",
        str,
        "elementwise",
        "elementwise clips every gradient entry to [-clip, clip]; "
        "global_norm rescales the whole gradient to norm <= clip; none does not "
        "clip",
        "train",
        choices=CLIP_MODES,
        update=True,
    ),
    _opt(
        "eps", float, 1e-8, "epsilon of the optimiser's denominator", "train", low=0, high=1, low_open=True, update=True
    ),
    _opt(
        "gamma",
        float,
        0.9,
        "RMSProp decay of the squared-gradient average",
        "train",
        low=0,
        high=1,
        high_open=True,
        update=True,
    ),
    _opt("beta1", float, 0.9, "Adam first-moment decay", "train", low=0, high=1, high_open=True, update=True),
    _opt("beta2", float, 0.999, "Adam second-moment decay", "train", low=0, high=1, high_open=True, update=True),
    _opt(
        "dropout",
        float,
        0.0,
        "inverted dropout between stacked layers and before the output layer (off when evaluating and sampling)",
        "train",
        low=0,
        high=0.95,
        metavar="P",
        update=True,
    ),
    _opt(
        "carry_state",
        bool,
        False,
        "keep each stream's recurrent state when it starts a new epoch (the classic experiment resets it to zero)",
        "train",
    ),
    _opt(
        "smoothing",
        str,
        "classic",
        "smooth loss: classic 0.999*smooth + 0.001*loss (the classic experiment's), or adaptive: over the "
        "last tenth of the updates so far, at most 1,000 (a short run's does not lag)",
        "train",
        choices=SMOOTHINGS,
    ),
    _opt(
        "best_by",
        str,
        "validation",
        "what chooses best.npz: the lowest validation loss at the sample points (smooth without a "
        "validation split), or the lowest smooth loss (the classic experiment's choice)",
        "train",
        choices=BEST_BY,
    ),
    _opt("log_every", int, 100, "a metrics row every N updates", "train", low=1, high=_BIG, metavar="N"),
    _opt(
        "sample_every",
        int,
        10_000,
        "synthesise text, validate and checkpoint every N updates and at the end of the run "
        "(charrnn train without it: fewer, so that a run of known length samples at least 8 times)",
        "train",
        low=1,
        high=_BIG,
        metavar="N",
    ),
    _opt(
        "sample_chars",
        int,
        200,
        "characters synthesised at every sample point",
        "train",
        low=0,
        high=10_000_000,
        metavar="N",
    ),
    _opt(
        "passage_chars",
        int,
        1000,
        "characters of the final passage from the best model",
        "train",
        low=0,
        high=10_000_000,
        metavar="N",
    ),
    _opt("val_fraction", float, 0.1, "share of the text held out at its end for validation", "train", low=0, high=0.9),
    _opt(
        "val_chars",
        int,
        100_000,
        "validation characters used at sample points (the end of training uses the whole split)",
        "train",
        low=0,
        high=_BIG,
        metavar="N",
    ),
    # -- one invocation
    _opt(
        "text",
        str,
        None,
        "UTF-8 training text (default: the built-in Shakespeare corpus)",
        "run",
        optional=True,
        metavar="FILE",
    ),
    _opt(
        "preset",
        str,
        "classic",
        "named set of option values (explicit options override it)",
        "run",
        choices=("classic", "quality"),
    ),
    _opt(
        "epochs",
        float,
        None,
        "passes over the training split (default 2); on --resume: the new total",
        "run",
        low=0,
        high=1e6,
        low_open=True,
        optional=True,
    ),
    _opt("steps", int, None, "number of updates; on --resume: the new total", "run", low=0, high=_BIG, optional=True),
    _opt(
        "max_minutes",
        float,
        None,
        "end the run, finished, after M minutes of training (the linear and cosine schedules run over this budget)",
        "run",
        low=0,
        high=1e6,
        low_open=True,
        optional=True,
        metavar="M",
    ),
    _opt("out", str, None, "run folder (default: a new runs/<timestamp>-<n>)", "run", optional=True, metavar="DIR"),
    _opt("resume", str, None, "continue the run in DIR exactly where it stopped", "run", optional=True, metavar="DIR"),
    _opt(
        "init_from",
        str,
        None,
        "fine-tune: start from the model in MODEL (a best.npz or last.npz, or a run folder: its best.npz); the "
        "network is the checkpoint's, the text's new characters join its vocabulary, the training options and "
        "the optimiser start afresh",
        "run",
        optional=True,
        metavar="MODEL",
    ),
    _opt(
        "stop_after",
        int,
        None,
        "stop (resumably) after N updates in this session",
        "run",
        low=0,
        high=_BIG,
        optional=True,
        metavar="N",
    ),
    # -- sampling
    _opt("length", int, 1000, "characters to draw", "sample", low=0, high=10**9, metavar="N"),
    _opt(
        "temperature",
        float,
        1.0,
        "softmax temperature: below 1 more likely characters, above 1 more varied text",
        "sample",
        low=0,
        high=1e6,
        low_open=True,
    ),
    _opt(
        "prime",
        str,
        None,
        "text fed to the network first (default: a newline); charrnn sample prints it before the drawn "
        "characters, CharRNN.sample(prime=...) returns only the drawn ones",
        "sample",
        optional=True,
    ),
    _opt(
        "top_k",
        int,
        0,
        "draw among the K most probable characters (0: all)",
        "sample",
        low=0,
        high=_MAX_VOCAB,
        metavar="K",
    ),
    _opt(
        "top_p",
        float,
        1.0,
        "draw from the smallest set of most probable characters holding probability P (1: all)",
        "sample",
        low=0,
        high=1,
        low_open=True,
        metavar="P",
    ),
    _opt("greedy", bool, False, "always take the most probable character", "sample"),
    # -- charrnn serve: where it listens and how much one server does at once
    _opt(
        "host",
        str,
        "127.0.0.1",
        "address to listen on; anything but a loopback address opens the server to the network",
        "serve",
    ),
    _opt("port", int, 8000, "TCP port to listen on", "serve", low=1, high=65535),
    _opt(
        "max_streams",
        int,
        32,
        "requests sampled or traced at once; past it the server answers 429",
        "serve",
        low=1,
        high=4096,
        metavar="N",
    ),
    _opt(
        "max_chars",
        int,
        100_000,
        "characters one request may ask for (prime and length together, or a traced text); past it 429",
        "serve",
        low=1,
        high=10**9,
        metavar="N",
    ),
    # -- the gradient check
    _opt(
        "tolerance",
        float,
        1e-6,
        "largest acceptable C++ vs numerical relative error",
        "gradcheck",
        low=0,
        high=1,
        low_open=True,
    ),
)

_BY_NAME = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    """The option called ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown option {name!r}; known: {', '.join(sorted(_BY_NAME))}") from None


def default(name: str) -> Any:
    """The default value of option ``name``."""
    return option(name).default


def group(name: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if o.group == name)


def param_dtype(dtype: str) -> str:
    """The parameters' NumPy dtype for a ``dtype`` option value (bfloat16
    training keeps float32 master weights)."""
    return "float32" if dtype == "bfloat16" else dtype


def precision_of(dtype: str) -> str:
    """The core's ``precision`` of the matrix products for a ``dtype`` option value."""
    return "bfloat16" if dtype == "bfloat16" else "full"


#: The options every update of the core reads, in the table's order.
UPDATE_OPTIONS: tuple[str, ...] = tuple(o.name for o in OPTIONS if o.update)


def update_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The one mapping the core's training functions take as ``options``:
    every :data:`UPDATE_OPTIONS` entry, from ``values`` (a run's option
    values; other keys are ignored) or else its default. A missing or None
    ``eta`` is the optimiser's :data:`DEFAULT_ETA`. The values are passed as
    given: the core checks them and names the one it refuses."""
    out = {name: values.get(name, default(name)) for name in UPDATE_OPTIONS}
    if out["eta"] is None:
        # an unknown optimizer is refused by the core, before it looks at eta
        optimizer = out["optimizer"]
        fallback = DEFAULT_ETA[default("optimizer")]
        out["eta"] = DEFAULT_ETA.get(optimizer, fallback) if isinstance(optimizer, str) else fallback
    return out


def model_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The model options among a run's option values: the keyword
    arguments of CharRNN.new."""
    return {o.name: values[o.name] for o in group("model")}


#: Named sets of option values. "classic" is the classic experiment (every
#: default); "quality" is tuned for the lowest validation loss in a wall-clock
#: budget on a small multi-core CPU (benchmarks/QUALITY.md); "threads" = None
#: there means the usable cores, and "dtype" = None bfloat16 where it trains
#: faster than float32 (AMX, or AVX512-BF16 on AMD), else float32.
PRESETS: dict[str, dict[str, Any]] = {
    "classic": {},
    "quality": {
        "cell": "gru",
        "layers": 2,
        "hidden": 384,
        "dtype": None,
        "sig": 0.05,
        "seq_length": 64,
        "batch_size": 32,
        "threads": None,
        "optimizer": "adam",
        "eta": 3e-3,
        "lr_schedule": "cosine",
        "lr_final": 0.05,
        "warmup": 200,
        "clip_mode": "global_norm",
        "clip": 5.0,
        "dropout": 0.1,
        "smoothing": "adaptive",
        "log_every": 50,
        "sample_every": 2000,
        "val_chars": 50_000,
    },
}


def usable_cores() -> int:
    """CPUs this process may run on."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def preset_values(name: str, *, bf16_faster: bool = False) -> dict[str, Any]:
    """The option values of preset ``name``, with machine-dependent ones
    resolved: the usable cores, and bfloat16 where ``bf16_faster`` says it
    trains faster than float32 on this CPU (:func:`charrnn_ext.engine.bf16_trains_faster`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    if "threads" in values and values["threads"] is None:
        values["threads"] = min(usable_cores(), option("threads").high or 1)
    if "dtype" in values and values["dtype"] is None:
        values["dtype"] = "bfloat16" if bf16_faster else "float32"
    return values


def _train_field(name: str) -> Any:
    return dataclasses.field(default=default(name))


@dataclass
class TrainConfig:
    """How a model is trained; defaults are the classic experiment. Every
    field is the option of the same name in :data:`OPTIONS` (see there for
    meanings and ranges). ``eta`` None means :data:`DEFAULT_ETA` of the
    optimiser. ``lr`` is accepted as an older name of ``eta``."""

    seq_length: int = _train_field("seq_length")
    batch_size: int = _train_field("batch_size")
    threads: int = _train_field("threads")
    optimizer: str = _train_field("optimizer")
    eta: float | None = _train_field("eta")
    lr_schedule: str = _train_field("lr_schedule")
    lr_decay: float = _train_field("lr_decay")
    lr_decay_every: int = _train_field("lr_decay_every")
    lr_final: float = _train_field("lr_final")
    warmup: int = _train_field("warmup")
    clip: float = _train_field("clip")
    clip_mode: str = _train_field("clip_mode")
    eps: float = _train_field("eps")
    gamma: float = _train_field("gamma")
    beta1: float = _train_field("beta1")
    beta2: float = _train_field("beta2")
    dropout: float = _train_field("dropout")
    carry_state: bool = _train_field("carry_state")
    smoothing: str = _train_field("smoothing")
    best_by: str = _train_field("best_by")
    log_every: int = _train_field("log_every")
    sample_every: int = _train_field("sample_every")
    sample_chars: int = _train_field("sample_chars")
    passage_chars: int = _train_field("passage_chars")
    val_fraction: float = _train_field("val_fraction")
    val_chars: int = _train_field("val_chars")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, option(f.name).check(getattr(self, f.name)))
        if self.eta is None:
            self.eta = DEFAULT_ETA[self.optimizer]

    @property
    def lr(self) -> float:
        """The base learning rate (an older name of ``eta``)."""
        assert self.eta is not None
        return self.eta

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From a dict of options (as stored in checkpoints of any version):
        ``lr`` is read as ``eta``; options a newer version added take their
        defaults; an unknown name is refused."""
        d = dict(d)
        if "lr" in d:
            d.setdefault("eta", d.pop("lr"))
        unknown = set(d) - set(cls.names())
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(cls.names())}")
        return cls(**d)

    def lr_at(self, step: int, steps_per_epoch: int, progress: float) -> float:
        """The learning rate of update ``step`` (0-based). ``progress`` in
        [0, 1] is how far the run is: step / total updates, or the share of a
        time budget used. Warm-up scales the first ``warmup`` updates by
        (step + 1) / warmup. A rate that decays to 0 (``lr_final`` 0, or a
        step schedule underflowing) is the smallest normal float64 instead
        (2.2e-308): it moves nothing, and the engine takes positive rates only."""
        assert self.eta is not None
        eta = self.eta
        if self.lr_schedule == "step":
            span = max(1, steps_per_epoch) * self.lr_decay_every
            eta *= self.lr_decay ** (step // span)
        else:
            p = min(1.0, max(0.0, progress))
            shape = 1.0 - p if self.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
            eta *= self.lr_final + (1.0 - self.lr_final) * shape
        if step < self.warmup:
            eta *= (step + 1) / self.warmup
        return max(eta, sys.float_info.min)
