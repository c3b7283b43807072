"""What a new ``charrnn train`` run trains, given the options a user named:
the model and training options after the defaults and the preset, the
length of the run, and the command line that asks for exactly that run.

``charrnn train`` and the trials of ``charrnn sweep`` both start their runs
from here, so that a sweep's best trial is reproduced by the command its
report prints.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from typing import Any

from .config import DEFAULT_ETA, OPTIONS, default, option, param_dtype, preset_values
from .engine import bf16_trains_faster

__all__ = ["DEFAULT_EPOCHS", "fine_tune_options", "plan_length", "plan_options", "train_command"]

#: The length of a run that names neither --steps, --epochs nor --max-minutes.
DEFAULT_EPOCHS = 2

#: The options that describe the model and how it is trained (what a preset sets).
_MODEL_AND_TRAIN = tuple(o.name for o in OPTIONS if o.group in ("model", "train"))


def plan_options(given: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(preset, options) of a new run: every model and training option, from
    the defaults, then the values of ``given['preset']`` (default classic),
    then the other model and training options in ``given`` (None: not given).
    Run options in ``given`` (text, steps, ...) are ignored here."""
    preset = given.get("preset") or default("preset")
    opts = {name: default(name) for name in _MODEL_AND_TRAIN}
    opts.update(preset_values(preset, bf16_faster=bf16_trains_faster()))
    opts.update({k: v for k, v in given.items() if k in opts and v is not None})
    return preset, opts


def preset_notes(preset: str, given: Mapping[str, Any]) -> list[str]:
    """What a user should know about a preset's values that their own options
    change the meaning of: a preset's learning rate is tuned for its optimiser,
    and stays when only the optimiser is changed."""
    values = preset_values(preset)
    theirs = given.get("optimizer")
    if "eta" in values and given.get("eta") is None and theirs is not None and theirs != values.get("optimizer"):
        tuned_for = values.get("optimizer", default("optimizer"))
        return [
            f"--preset {preset} sets --eta {values['eta']:g}, tuned for {tuned_for}; it is kept with "
            f"--optimizer {theirs} (whose own default is {DEFAULT_ETA[theirs]:g}): give --eta to change it"
        ]
    return []


def fine_tune_options(given: Mapping[str, Any], meta: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The model options named in ``given`` that a fine-tuning run from the
    checkpoint ``source`` (whose model options are ``meta``) takes: the seed
    (of the samples, the dropout masks and the new characters' weights), and
    the dtype where it names the same parameters (float32 and bfloat16 both
    keep float32 weights). Any other model option that differs from the
    checkpoint's is refused: the network is the checkpoint's."""
    taken: dict[str, Any] = {}
    for o in OPTIONS:
        if o.group != "model" or given.get(o.name) is None:
            continue
        value, theirs = given[o.name], meta.get(o.name)
        if o.name == "seed" or value == theirs:
            taken[o.name] = value
        elif o.name == "dtype" and theirs is not None and param_dtype(value) == param_dtype(str(theirs)):
            taken[o.name] = value
        else:
            raise ValueError(
                f"{o.flag} {value} contradicts the model in {source}, whose {o.name} is {theirs}: a fine-tuning "
                f"run keeps the checkpoint's network; leave {o.flag} out"
                + (" (float32 and bfloat16 may be exchanged: both keep float32 weights)" if o.name == "dtype" else "")
            )
    return taken


def plan_length(steps: int | None, epochs: float | None, max_minutes: float | None) -> tuple[int | None, float | None]:
    """(steps, epochs) to train: as given, else :data:`DEFAULT_EPOCHS` epochs;
    a time budget alone runs until the budget ends it."""
    if steps is None and epochs is None:
        if max_minutes is None:
            return None, DEFAULT_EPOCHS
        return int(option("steps").high or 0), None
    return steps, epochs


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def train_command(values: Mapping[str, Any]) -> str:
    """The ``charrnn train`` command line that sets the options in ``values``
    (option name -> value, None left out), in the order of the help text."""
    parts = ["charrnn", "train"]
    for o in OPTIONS:
        if o.group in ("model", "train", "run") and values.get(o.name) is not None:
            if o.kind is bool:  # a switch: its flag when true, nothing when false
                parts += [o.flag] if values[o.name] else []
            else:
                parts += [o.flag, shlex.quote(_value_text(values[o.name]))]
    return " ".join(parts)
