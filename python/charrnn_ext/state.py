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

__all__ = ["Checkpoint", "MetricRow", "SampleRecord", "TrainState"]


#: The smooth loss is an exponential average of the update losses, starting
#: at the first one: each update keeps SMOOTHING of it (see :func:`smoothed`).
SMOOTHING = 0.999


def smoothed(smooth: float, loss: float) -> float:
    """The smooth loss after an update whose loss is ``loss``."""
    return SMOOTHING * smooth + (1.0 - SMOOTHING) * loss


@dataclass(frozen=True)
class MetricRow:
    """One row of metrics.csv. ``val_loss`` is per character (None: not measured)."""

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
