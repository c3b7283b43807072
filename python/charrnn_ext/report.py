"""The Markdown texts of a run folder: samples.md and report.md.

Pure formatting: :mod:`charrnn_ext.runfolder` writes the files; this module
turns a run's records into text and knows nothing about writing them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .config import OPTIONS
from .data import char_label
from .state import ADAPTIVE_WINDOW, SMOOTHING, Checkpoint, SampleRecord, best_criterion

__all__ = ["fence", "fmt", "report_markdown", "samples_markdown"]


def _longest_backticks(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


def fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    return "`" * max(3, _longest_backticks(text) + 1)


def fmt(x: float | None, spec: str = ".4f") -> str:
    """A number for a table, "n/a" for None or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _code_block(text: str) -> list[str]:
    f = fence(text)
    return [f + "text", text, f]


def _per_char(summed: float | None, update_chars: int) -> float | None:
    return None if summed is None else summed / update_chars


def sample_heading(s: SampleRecord, update_chars: int) -> str:
    """The losses of a sample point in words, per character."""
    val = (
        f"validation loss {s.val_loss:.4f}/char on {s.val_chars:,} chars"
        if s.val_loss is not None
        else "validation loss not measured"
    )
    smooth = "n/a" if s.smooth_loss is None else f"{s.smooth_loss / update_chars:.4f}/char"
    return f"Update {s.step} (epoch {s.epoch}): smooth loss {smooth}, {val}"


def samples_markdown(samples: Sequence[SampleRecord], update_chars: int, heading: str = "#") -> str:
    """samples.md: every text synthesised during training, with its losses
    per character (``update_chars``: the characters one update sees, over
    which the records' smooth losses are summed)."""
    lines = [f"{heading} Text synthesised during training", ""]
    for s in samples:
        lines += [f"{heading}# {sample_heading(s, update_chars)}", ""]
        lines += _code_block(s.text) + [""]
    return "\n".join(lines)


#: The added characters a report lists one by one.
_MAX_LISTED = 500


def _inline(text: str) -> str:
    """``text`` as Markdown inline code, whatever backticks it holds."""
    f = "`" * (_longest_backticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{f}{pad}{text}{pad}{f}"


def _init_from_lines(init: Any) -> list[str]:
    """The section of a fine-tuning run: the checkpoint it started from and
    what became of the vocabulary (``init_from`` of config.json's run object)."""
    if not isinstance(init, dict):
        return []
    path, sha, step = init.get("path"), init.get("sha256"), init.get("step")
    kept, added = init.get("kept"), init.get("added")
    L = ["## Fine-tuning", ""]
    if isinstance(path, str):
        trained = f", trained for {step:,} updates" if isinstance(step, int) else ""
        digest = f" (SHA-256 `{sha}`)" if isinstance(sha, str) else ""
        L.append(
            f"The run started from the model in {_inline(path)}{digest}{trained}; its optimiser and "
            f"learning-rate schedule started afresh."
        )
    else:
        L.append("The run started from a model given in memory; its optimiser and schedule started afresh.")
    if isinstance(kept, int) and isinstance(added, str):
        if added:
            labels = ", ".join(_inline(char_label(ch)) for ch in added[:_MAX_LISTED])
            if len(added) > _MAX_LISTED:
                labels += f" and {len(added) - _MAX_LISTED:,} more (config.json lists them all)"
            L.append(
                f"Vocabulary: the model's {kept} characters kept their indices and weights; the text added "
                f"{len(added)}, initialised as a fresh model's (indices {kept} to {kept + len(added) - 1}): {labels}."
            )
        else:
            L.append(f"Vocabulary: the model's {kept} characters cover the text; none was added.")
    return L + [""]


def smoothing_text(smoothing: str) -> str:
    """How the smooth loss of a run is computed, in words."""
    if smoothing == "adaptive":
        return (
            f"the smooth loss is an exponential average of the update losses over about the last tenth of the "
            f"updates so far (window min({ADAPTIVE_WINDOW:,}, (update + 9) / 10)), starting at the first loss"
        )
    return f"the smooth loss is {SMOOTHING:g}·smooth + {1.0 - SMOOTHING:g}·loss, starting at the first loss"


def _option_rows(config: dict[str, Any]) -> list[str]:
    """One table row per model and training option: its value and its meaning."""
    model, train = config["model"], config["train"]
    rows = []
    for o in OPTIONS:
        if o.group == "model" and o.name in model:
            value = model[o.name]
        elif o.group == "train" and o.name in train:
            value = train[o.name]
        else:
            continue
        rows.append(f"| {o.flag} | {value} | {o.help} |")
    return rows


def report_markdown(
    config: dict[str, Any], ckpt: Checkpoint, summary: dict[str, Any] | None, gradcheck: str | None
) -> str:
    """report.md from a run's config.json, last checkpoint, summary.json (None
    while the run is unfinished) and gradcheck.md (None if missing)."""
    state = ckpt.state
    assert state is not None
    model, train, corpus = config["model"], config["train"], config["corpus"]
    T, B = int(train["seq_length"]), int(train["batch_size"])
    chunk = T * B
    smoothing = str(train.get("smoothing", "classic"))
    # a run from before the option chose by smooth loss
    best_by = best_criterion(str(train.get("best_by", "smooth")), int(corpus["n_val"]), int(train["val_chars"]))
    cell, layers = model["cell"], int(model["layers"])
    finished = summary is not None and state.step >= state.total_steps
    status = "finished" if finished else f"not finished ({state.step} of {state.total_steps} updates)"
    L: list[str] = ["# Character-level RNN: training report", ""]
    L += [
        f"- Text: `{corpus['source']}`: {corpus['n_chars']:,} characters ({corpus['n_train']:,} for training, "
        f"{corpus['n_val']:,} held out for validation), vocabulary of {ckpt.vocab.size} characters",
        f"- Model: {cell}, {layers} layer(s) of {model['hidden']} units, {model.get('n_params', 0):,} parameters, "
        f"{model['dtype']}",
        f"- Updates: {state.step:,} (epoch {state.epoch}; {config['steps_per_epoch']:,} updates per epoch); "
        f"training time {state.seconds:,.0f} s; status: {status}",
        f"- Preset: {(config.get('run') or {}).get('preset', 'classic')}; charrnn_ext "
        f"{config.get('package_version', '?')}",
        "",
    ]
    L += _init_from_lines((config.get("run") or {}).get("init_from"))

    L += [
        "## Options",
        "",
        "Every option of the model and of its training, as the run used them.",
        "",
        "| option | value | meaning |",
        "|---|---|---|",
    ]
    L += _option_rows(config)
    L += [
        "",
        "Fixed by the method: weights start from N(0, sig²) and biases from 0"
        + (" (the forget gate's from --forget-bias)" if cell == "lstm" else "")
        + "; the recurrent state is carried between chunks"
        + (
            " and into each new epoch; "
            if train.get("carry_state")
            else " and reset to zero at the start of each epoch; "
        )
        + smoothing_text(smoothing)
        + ("" if B == 1 else f"; the {B} streams' gradients are summed into one update")
        + ".",
        "",
    ]

    L += [
        "## Gradient check",
        "",
        "Analytic gradients (C++ and NumPy) against centred differences of the C++ forward pass in long double.",
        "",
        gradcheck.strip() if gradcheck else "(gradcheck.md is missing from the run folder)",
        "",
    ]

    L += [
        "## Loss",
        "",
        "![Training and validation loss per character](loss.png)",
        "",
        f"All losses are per character. The solid curve is the smooth training loss ({smoothing}), the faint one "
        f"the loss of the update at each record point (every {train['log_every']} updates), each averaged over "
        f"the {chunk} characters of an update" + (f" ({B} streams × {T})" if B > 1 else "") + ". Validation dots "
        f"are measured on at most {train['val_chars']:,} characters from the start of the validation split every "
        f"{train['sample_every']} updates and at the last update, the diamond on the whole split at the end. "
        f"Validation starts from the network's running state"
        + (", its matrix products in bfloat16 as in training." if model["dtype"] == "bfloat16" else "."),
        "",
    ]

    L += [
        "## Results",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| final smooth loss per char | {fmt(_per_char(state.smooth_loss, chunk))} |",
        f"| final smooth loss summed over the {chunk} characters of an update ({smoothing} smoothing) | "
        f"{fmt(state.smooth_loss, '.3f')} |",
        f"| best model (best.npz) chosen by | {_criterion_text(best_by, train)} |",
        f"| best model's {'validation' if best_by == 'validation' else 'smooth'} loss per char | "
        f"{fmt(_best_per_char(state.best_loss, best_by, chunk))} at update "
        f"{state.best_step if state.best_step >= 0 else 'n/a'} |",
    ]
    if summary is not None:
        L += [
            f"| final validation loss per char, last model ({summary['val_chars']:,} chars) | "
            f"{fmt(summary['final_val_loss'])} |",
            f"| final validation loss per char, best model | {fmt(summary['best_val_loss'])} |",
        ]
    L.append("")

    L += [
        "## Evolution of the synthesised text",
        "",
        f"{train['sample_chars']} characters sampled every {train['sample_every']} updates from the current state, "
        f"starting with the next input character.",
        "",
    ]
    for s in state.samples:
        L += [f"### {sample_heading(s, chunk)}", ""]
        L += _code_block(s.text) + [""]

    L += ["## Passage from the best model", ""]
    if summary is not None and summary.get("passage") is not None:
        what = "validation" if best_by == "validation" else "smooth"
        which = (
            f"the model of update {state.best_step} ({what} loss "
            f"{fmt(_best_per_char(state.best_loss, best_by, chunk))}/char)"
            if state.best_step >= 0
            else "the initial model (no update was made)"
        )
        L.append(f"{len(summary['passage'])} characters from {which}, temperature 1, starting from its training state.")
        L += [""] + _code_block(summary["passage"]) + [""]
        if summary.get("explain"):
            L += [
                f"[What the best model sees](explain.html): its predictions and hidden units on "
                f"{summary['explain']['chars']:,} characters of {summary['explain']['source']} (open in a browser).",
                "",
            ]
    else:
        L += ["The run has not finished; the passage is written at the end of training.", ""]
    return "\n".join(L)


def _best_per_char(best_loss: float, best_by: str, update_chars: int) -> float:
    """A run's best_loss per character (a smooth loss is summed over an update)."""
    return best_loss if best_by == "validation" else best_loss / update_chars


def _criterion_text(best_by: str, train: dict[str, Any]) -> str:
    if best_by == "validation":
        return (
            f"the lowest validation loss on at most {int(train['val_chars']):,} characters, at the sample points "
            f"(every {int(train['sample_every']):,} updates) and the last update"
        )
    why = "" if train.get("best_by", "smooth") == "smooth" else " (the run has no validation split)"
    return f"the lowest smooth training loss, checked every {int(train['log_every']):,} updates{why}"
