"""How a sweep runs, apart from its space: the number of trials, the sampler,
the pruner and its seed, and the threads of one trial. These are stored in
the sweep's folder (sweep.json) so that ``--resume`` continues with the same
ones; a value given again on --resume must match the stored one, except the
number of trials, which may grow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..config import option

__all__ = [
    "DEFAULT_TRIALS",
    "MAX_TRIALS",
    "MAX_WORKERS",
    "PRUNERS",
    "SAMPLERS",
    "SweepSettings",
    "median_startup_trials",
]

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")

#: Trials of a sweep that does not say (a grid sweep runs its whole grid).
DEFAULT_TRIALS = 20
#: The most trials one sweep may ask for, and the most local workers.
MAX_TRIALS = 100_000
MAX_WORKERS = 1024


def median_startup_trials(trials: int) -> int:
    """Complete trials the median pruner waits for before it stops any:
    a quarter of the sweep, at least 1 and at most Optuna's default of 5."""
    return min(5, max(1, trials // 4))


def _positive_int(name: str, value: Any, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high is not None and value > high):
        limit = f" and at most {high}" if high is not None else ""
        raise ValueError(f"{name} must be an integer of at least 1{limit}, got {value!r}")
    return value


@dataclass(frozen=True)
class SweepSettings:
    trials: int
    sampler: str
    pruner: str
    seed: int | None
    threads_per_trial: int

    def __post_init__(self) -> None:
        _positive_int("trials", self.trials, MAX_TRIALS)
        _positive_int("threads_per_trial", self.threads_per_trial, int(option("threads").high or 1))
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32
        ):
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def resolve(
        cls, given: Mapping[str, Any], stored: Mapping[str, Any] | None = None, grid_size: int | None = None
    ) -> SweepSettings:
        """The settings from the values ``given`` (None: not given), the
        ``stored`` ones of a resumed sweep and the defaults. ``grid_size``: the
        number of points of the grid, if the space has one."""
        given = {k: v for k, v in given.items() if v is not None}
        if stored is not None:
            if not isinstance(stored, Mapping):
                raise ValueError(f"the stored settings must be a JSON object, got {type(stored).__name__}")
            for key, value in given.items():
                if key in stored and key != "trials" and stored[key] != value:
                    flag = "--" + key.replace("_", "-")
                    raise ValueError(
                        f"{flag} {value} differs from the sweep's {stored[key]}; only --trials may change on --resume"
                    )
            values = {**stored, **given}
        else:
            values = {"sampler": "tpe", "pruner": "median", "seed": None, "threads_per_trial": 1, **given}
        if values.get("trials") is None:
            values["trials"] = grid_size if values["sampler"] == "grid" and grid_size else DEFAULT_TRIALS
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in fields})
