"""What a checkpoint holds: the records of a run and the training state.

:class:`Checkpoint` is a model (vocabulary, parameters, meta) and, for a run
that can continue, its :class:`TrainState`. The file format is in
:mod:`charrnn_ext.checkpoint`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import Vocabulary

__all__ = ["Checkpoint", "MetricRow", "SampleRecord", "TrainState", "best_criterion", "smoothed"]


#: The smooth loss is an exponential average of the update losses, starting
#: at the first one: each update keeps SMOOTHING of it (see :func:`smoothed`).
SMOOTHING = 0.999


#: The adaptive smooth loss averages over a tenth of the updates so far, and
#: over at most this many (where it meets the classic 0.999).
ADAPTIVE_WINDOW = 1000


def smoothed(smooth: float, loss: float, step: int = 0, how: str = "classic") -> float:
    """The smooth loss after update ``step`` (1-based) whose loss is ``loss``.

    ``how="classic"``: SMOOTHING * smooth + (1 - SMOOTHING) * loss, whatever
    the step (the first update's smooth loss is its loss; the caller starts
    there). ``how="adaptive"``: an exponential average whose window w grows
    with the run, w = min(ADAPTIVE_WINDOW, (step + 9) / 10), so that it
    weighs about the last tenth of the updates: the first update's weight is
    1 (no bias towards a starting value, as Adam's bias correction), and a
    500-update run averages over its last ~50 updates instead of carrying its
    first losses for thousands."""
    if how == "classic":
        return SMOOTHING * smooth + (1.0 - SMOOTHING) * loss
    a = 1.0 / min(ADAPTIVE_WINDOW, (step + 9) / 10)
    return (1.0 - a) * smooth + a * loss


def best_criterion(best_by: str, n_val: int, val_chars: int) -> str:
    """What chooses a run's best model, given its ``best_by`` option, the size
    of its validation split and the validation characters of a sample point:
    "validation" needs at least 2 of them, else it is "smooth". A run's
    ``best_loss`` is a validation loss per character under "validation" and
    a smooth loss summed over one update under "smooth"."""
    return "validation" if best_by == "validation" and min(n_val, val_chars) >= 2 else "smooth"


@dataclass(frozen=True)
class MetricRow:
    """One row of a run's history: ``loss`` and ``smooth_loss`` summed over
    the update's characters (as the engine returns them, so that the classic
    smooth loss is exact), ``val_loss`` per character (None: not measured).
    metrics.csv shows them per character too."""

    step: int
    epoch: int
    loss: float
    smooth_loss: float
    val_loss: float | None = None
    val_chars: int = 0


@dataclass(frozen=True)
class SampleRecord:
    """Text synthesised at one sample point (``step`` updates done)."""

    step: int
    epoch: int
    smooth_loss: float | None
    val_loss: float | None
    val_chars: int
    seed: int
    text: str


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    ``opt_state``: the optimiser memory with the update counter "t"
    (:func:`charrnn_ext.layout.init_opt_state`); ``h``: the (B, layers, S*m)
    states of the B streams; ``positions``: their offsets in their segments;
    ``seconds``: training time spent so far (time-budgeted schedules
    continue from it)."""

    opt_state: dict[str, np.ndarray]
    h: np.ndarray
    positions: np.ndarray
    step: int = 0
    wraps: int = 0
    total_steps: int = 0
    smooth_loss: float = math.nan
    last_loss: float = math.nan
    best_loss: float = math.nan
    best_step: int = -1
    best_params: dict[str, np.ndarray] | None = None
    best_h: np.ndarray | None = None  # (layers, S*m): stream 0 when the best model was taken
    seconds: float = 0.0
    budget_seconds: float | None = None  # the run's time budget, if it has one
    config: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
    history: list[MetricRow] = field(default_factory=list)
    samples: list[SampleRecord] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        """1-based epoch of the last update (1 before any update)."""
        return self.wraps + 1

    @property
    def t(self) -> int:
        """Updates the optimiser has applied."""
        return int(self.opt_state["t"])


@dataclass
class Checkpoint:
    """Contents of a checkpoint file: parameters with network names
    (:mod:`charrnn_ext.layout`), ``start_h`` the (layers, S*m) state that
    sampling and evaluation start from (None: zeros)."""

    vocab: Vocabulary
    params: dict[str, np.ndarray]
    meta: dict[str, Any]
    state: TrainState | None = None
    start_h: np.ndarray | None = None
    format_version: int = 0  # of the file it was read from (0: not read from a file)

    @property
    def kind(self) -> str:
        return "model" if self.state is None else "training"

    @property
    def sampling_state(self) -> np.ndarray | None:
        """The (layers, S*m) state a model loaded from this checkpoint samples
        from (:attr:`charrnn_ext.CharRNN.start_state`): stream 0's training
        state if there is one, else ``start_h``; None means zeros."""
        return self.state.h[0] if self.state is not None else self.start_h
