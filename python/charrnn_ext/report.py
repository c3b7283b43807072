"""The loss figure and the Markdown report of a run folder.

matplotlib is imported only inside :func:`plot_losses` and always uses the
non-interactive Agg backend.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import MetricRow, SampleRecord, atomic_write_bytes, atomic_write_text, load_checkpoint
from .training import _fence, _fmt

__all__ = ["build_report", "plot_losses", "write_report"]


def plot_losses(path: str | os.PathLike[str], history: Sequence[MetricRow], samples: Sequence[SampleRecord],
                chunk_chars: int, final: tuple[int, float | None] | None = None) -> Path:
    """Draw the smooth training loss against the update step, with the
    validation losses (per character × chunk_chars, the characters one update
    sees: seq_length, times batch_size for minibatches) as points; write a
    PNG atomically."""
    import io

    # A bare Figure renders with the Agg canvas and leaves pyplot's backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if history:
        ax.plot([r.step for r in history], [r.smooth_loss for r in history], color="tab:blue", lw=1.5,
                label=f"smooth training loss (summed over the {chunk_chars} chars of an update)")
    pts = [(r.step, r.val_loss * chunk_chars) for r in samples if r.val_loss is not None]
    if pts:
        ax.plot(*zip(*pts), "o", color="tab:orange", ms=4,
                label=f"validation loss per char × {chunk_chars} (start of val split)")
    if final is not None and final[1] is not None:
        ax.plot([final[0]], [final[1] * chunk_chars], "D", color="tab:red", ms=6,
                label=f"final validation loss per char × {chunk_chars} (whole val split)")
    ax.set_xlabel("update step")
    ax.set_ylabel(f"loss over {chunk_chars} characters (nats)")
    ax.set_title("Training progress")
    ax.grid(True, alpha=0.3)
    if history or pts:
        ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _gradcheck_section(run: Path, K: int, T: int, model: dict[str, Any]) -> str:
    gc = run / "gradcheck.md"
    if gc.exists():
        return gc.read_text(encoding="utf-8").strip()
    from .gradcheck import gradient_check

    rep = gradient_check(None, K=K, m=5, seq_length=T, seed=int(model["seed"]) % 2**32,
                         cell=model.get("cell", "rnn"), layers=int(model.get("layers", 1)))
    text = f"{rep.table()}\n\nData: {T + 1} random characters of the {K}-character vocabulary."
    atomic_write_text(gc, text + "\n")
    return text


def build_report(run_dir: str | os.PathLike[str], plot: bool = True) -> str:
    """The Markdown report of a run folder (needs config.json and last.npz;
    summary.json is there once the run has finished)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    for name in ("config.json", "last.npz"):
        if not (run / name).exists():
            raise FileNotFoundError(f"{run} is not a run folder: {name} is missing")
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    ckpt = load_checkpoint(run / "last.npz")
    state = ckpt.state
    if state is None:
        raise ValueError(f"{run / 'last.npz'} holds no training state")
    summary = None
    if (run / "summary.json").exists():
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    model, train, corpus = config["model"], state.config, config["corpus"]
    T = int(train["seq_length"])
    B = int(train.get("batch_size", 1))
    chunk = T * B  # characters whose losses one update sums
    if plot:
        final = None if summary is None else (summary["step"], summary["final_val_loss"])
        plot_losses(run / "loss.png", state.history, state.samples, chunk, final)

    L: list[str] = ["# Character-level RNN: training report", ""]
    status = ("finished" if summary is not None and state.step >= state.total_steps
              else f"not finished ({state.step} of {state.total_steps} updates)")
    L += [f"- Text: `{corpus['source']}`: {corpus['n_chars']:,} characters "
          f"({corpus['n_train']:,} for training, {corpus['n_val']:,} held out for validation), "
          f"vocabulary of {ckpt.vocab.size} characters",
          f"- Updates: {state.step:,} (epoch {state.epoch}; {config['steps_per_epoch']:,} updates per epoch); "
          f"status: {status}",
          f"- charrnn_ext {config.get('package_version', '?')}", ""]

    L += ["## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    cell, layers = model.get("cell", "rnn"), int(model.get("layers", 1))
    opt = train.get("optimizer", "adagrad")
    opt_text = {"adagrad": f"AdaGrad (eps={train['eps']:g})",
                "rmsprop": f"RMSProp (gamma={train.get('gamma', 0.9):g}, eps={train['eps']:g})",
                "adam": f"Adam (beta1={train.get('beta1', 0.9):g}, beta2={train.get('beta2', 0.999):g}, "
                        f"eps={train['eps']:g})"}[opt]
    if train.get("clip_mode", "elementwise") == "global_norm":
        opt_text += f", gradient rescaled to global norm <= {train['clip']:g}"
    else:
        opt_text += f", gradients clipped to ±{train['clip']:g}"
    decay, every = train.get("lr_decay", 1.0), train.get("lr_decay_every", 1)
    lr_text = f"{train['eta']:g}" + ("" if decay == 1.0 else f", × {decay:g} every {every} epoch(s)")
    B = int(train.get("batch_size", 1))
    init = (f"U, W, V ~ N(0, {model['sig']:g}²), b = c = 0" if cell == "rnn" and layers == 1 else
            f"weights ~ N(0, {model['sig']:g}²), biases 0"
            + (f" except the forget gate's {model.get('forget_bias', 1.0):g}" if cell == "lstm" else ""))
    rows = [
        ("cell", f"{cell}, {layers} layer(s)"
                 + (f", {model['n_params']:,} parameters" if "n_params" in model else "")),
        ("hidden units m", model["hidden"]), ("sequence length", T), ("learning rate eta", lr_text),
        ("optimiser", opt_text),
        ("batch size", "1" if B == 1 else f"{B} streams over {B} segments of the text, gradients summed "
                                          f"(threads: {train.get('threads', 1)})"),
        ("initialisation", init),
        ("seed", model["seed"]), ("float type", model["dtype"]),
        ("hidden state", "carried between chunks, reset to zero at the start of each epoch"),
        ("smooth loss", "0.999·smooth + 0.001·loss, starting at the first loss"),
        ("validation split", f"last {train['val_fraction']:g} of the text"),
        ("log / sample every", f"{train['log_every']} / {train['sample_every']} updates"),
    ]
    L += [f"| {k} | {v} |" for k, v in rows] + [""]

    L += ["## Gradient check", "",
          "Analytic gradients (C++ and NumPy) against centred differences, m = 5.", "",
          _gradcheck_section(run, ckpt.vocab.size, T, model), ""]

    L += ["## Loss", "", "![Smooth training loss and validation loss](loss.png)", "",
          f"The curve is the smooth loss of one update: the summed loss of {chunk} characters"
          + (f" ({B} streams × {T})" if B > 1 else "") + ". Validation losses are per character, "
          f"multiplied by {chunk} to share the axis: dots are measured on at most {train['val_chars']:,} characters "
          f"from the start of the validation split every {train['sample_every']} updates, the diamond on the "
          f"whole split at the end. Validation starts from the network's running hidden state (it is reset to "
          f"zero only at the start of an epoch).", ""]

    L += ["## Results", "", "| quantity | value |", "|---|---|",
          f"| final smooth loss | {_fmt(state.smooth_loss)} |",
          f"| best smooth loss (checked every {train['log_every']} updates) | {_fmt(state.best_loss)} "
          f"at update {state.best_step} |"]
    if summary is not None:
        L += [f"| final validation loss per char, last model ({summary['val_chars']:,} chars) | "
              f"{_fmt(summary['final_val_loss'])} |",
              f"| final validation loss per char, best model | {_fmt(summary['best_val_loss'])} |"]
    L.append("")

    L += ["## Evolution of the synthesised text", "",
          f"{train['sample_chars']} characters sampled every {train['sample_every']} updates from the current "
          f"hidden state, starting with the next input character.", ""]
    for s in state.samples:
        L.append(f"### Update {s.step} (epoch {s.epoch}), smooth loss {_fmt(s.smooth_loss)}")
        f = _fence(s.text)
        L += ["", f + "text", s.text, f, ""]

    L += ["## Passage from the best model", ""]
    if summary is not None and summary.get("passage") is not None:
        L.append(f"{len(summary['passage'])} characters from the model of update {state.best_step} "
                 f"(smooth loss {_fmt(state.best_loss)}), temperature 1, starting from its training hidden state.")
        f = _fence(summary["passage"])
        L += ["", f + "text", summary["passage"], f, ""]
    else:
        L += ["The run has not finished; the passage is written at the end of training.", ""]
    return "\n".join(L)


def write_report(run_dir: str | os.PathLike[str], plot: bool = True) -> Path:
    """(Re)build report.md (and loss.png unless plot is False) in a run folder."""
    text = build_report(run_dir, plot=plot)
    return atomic_write_text(Path(run_dir) / "report.md", text)
