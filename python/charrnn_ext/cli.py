"""Command line: ``charrnn train | sample | gradcheck | report`` (also ``python -m charrnn_ext``).

A thin layer over :class:`charrnn_ext.model.CharRNN`, :mod:`charrnn_ext.training`
and :mod:`charrnn_ext.report`. Exit codes: 0 success, 1 training diverged or
the gradient check failed, 2 bad input, 130 interrupted (Ctrl-C; the run is
saved and can be resumed).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Training options that define a run; on --resume they must not change.
_RUN_OPTIONS = {
    "hidden": "--hidden", "sig": "--sig", "seed": "--seed", "dtype": "--dtype",
    "seq_length": "--seq-length", "eta": "--eta", "clip": "--clip", "log_every": "--log-every",
    "sample_every": "--sample-every", "val_fraction": "--val-fraction", "val_chars": "--val-chars",
    "cell": "--cell", "layers": "--layers", "forget_bias": "--forget-bias", "optimizer": "--optimizer",
    "gamma": "--gamma", "beta1": "--beta1", "beta2": "--beta2", "clip_mode": "--clip-mode",
    "lr_decay": "--lr-decay", "lr_decay_every": "--lr-decay-every", "batch_size": "--batch-size",
}
_DEFAULTS = {"hidden": 100, "sig": 0.01, "seed": 0, "dtype": "float64", "seq_length": 25, "eta": None,
             "clip": 5.0, "log_every": 100, "sample_every": 10000, "val_fraction": 0.1, "val_chars": 100000,
             "cell": "rnn", "layers": 1, "forget_bias": 1.0, "optimizer": "adagrad", "gamma": 0.9, "beta1": 0.9,
             "beta2": 0.999, "clip_mode": "elementwise", "lr_decay": 1.0, "lr_decay_every": 1, "batch_size": 1}
# TrainConfig fields among the options above (the rest describe the model)
_TRAIN_KEYS = ("seq_length", "eta", "clip", "log_every", "sample_every", "val_fraction", "val_chars", "optimizer",
               "gamma", "beta1", "beta2", "clip_mode", "lr_decay", "lr_decay_every", "batch_size")
DEFAULT_EPOCHS = 2


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s}")
    return v


def _nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not (v > 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s}")
    return v


def _unit_float(s: str) -> float:
    v = float(s)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {s}")
    return v


def _finite_float(s: str) -> float:
    v = float(s)
    if not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import package_version

    p = argparse.ArgumentParser(prog="charrnn", description="Character-level RNN/LSTM/GRU with a C++ core.")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a model and write a run folder",
                       description="Train a vanilla RNN (or an LSTM/GRU stack) on a text (default: the built-in "
                                   "Shakespeare corpus); without options, the classic AdaGrad setup. "
                                   "Writes metrics.csv, loss.png, samples.md, best.npz, last.npz, config.json "
                                   "and report.md to the run folder.")
    t.add_argument("--text", metavar="FILE", help="UTF-8 training text (default: built-in Shakespeare corpus)")
    t.add_argument("--hidden", type=_positive_int, help="hidden units m (default 100)")
    t.add_argument("--seq-length", type=_positive_int, help="characters per update (default 25)")
    t.add_argument("--eta", type=_positive_float,
                   help="learning rate (default 0.1 for adagrad, 0.002 for rmsprop and adam)")
    t.add_argument("--sig", type=float, help="std. dev. of the initial weights (default 0.01)")
    t.add_argument("--clip", type=_positive_float, help="gradient clipping bound (default 5)")
    t.add_argument("--cell", choices=("rnn", "lstm", "gru"), help="recurrent cell (default rnn)")
    t.add_argument("--layers", type=_positive_int, help="stacked recurrent layers (default 1)")
    t.add_argument("--forget-bias", type=_finite_float, help="initial LSTM forget-gate bias (default 1)")
    t.add_argument("--optimizer", choices=("adagrad", "rmsprop", "adam"), help="optimiser (default adagrad)")
    t.add_argument("--gamma", type=_unit_float, help="RMSProp decay of the squared-gradient average (default 0.9)")
    t.add_argument("--beta1", type=_unit_float, help="Adam first-moment decay (default 0.9)")
    t.add_argument("--beta2", type=_unit_float, help="Adam second-moment decay (default 0.999)")
    t.add_argument("--clip-mode", choices=("elementwise", "global_norm"),
                   help="clip each gradient entry to ±clip, or rescale the whole gradient to norm <= clip "
                        "(default elementwise)")
    t.add_argument("--lr-decay", type=_positive_float, metavar="FACTOR",
                   help="multiply the learning rate by FACTOR every --lr-decay-every epochs (default 1: none)")
    t.add_argument("--lr-decay-every", type=_positive_int, metavar="EPOCHS", help="epochs per decay (default 1)")
    t.add_argument("--batch-size", type=_positive_int, metavar="B",
                   help="B streams over B segments of the text, gradients summed into one update "
                        "(vanilla rnn with adagrad only; default 1)")
    t.add_argument("--threads", type=_positive_int, help="worker threads for --batch-size > 1 (default 1; "
                                                         "results do not depend on it)")
    t.add_argument("--max-minutes", type=_positive_float, metavar="M",
                   help="end the run (finished, with the final evaluation) after M minutes of training")
    n = t.add_mutually_exclusive_group()
    n.add_argument("--epochs", type=_positive_float,
                   help=f"passes over the training split (default {DEFAULT_EPOCHS}); on --resume: new total")
    n.add_argument("--steps", type=_nonneg_int, help="number of updates; on --resume: new total")
    t.add_argument("--seed", type=_nonneg_int, help="seed for initialisation and sampling (default 0)")
    t.add_argument("--sample-every", type=_positive_int,
                   help="synthesise text, validate and checkpoint every N updates (default 10000)")
    t.add_argument("--log-every", type=_positive_int, help="metrics row every N updates (default 100)")
    t.add_argument("--val-fraction", type=float, help="share of the text held out at its end (default 0.1)")
    t.add_argument("--val-chars", type=_nonneg_int,
                   help="validation characters used at sample points (default 100000; the end of training "
                        "uses the whole split)")
    t.add_argument("--dtype", choices=("float64", "float32"), help="parameter type (default float64)")
    t.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    t.add_argument("--stop-after", type=_nonneg_int, metavar="N",
                   help="stop (resumably) after N updates in this session")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="synthesise text from a checkpoint",
                       description="Print the prime followed by N sampled characters.")
    s.add_argument("checkpoint", metavar="CHECKPOINT", help=".npz checkpoint, or a run folder (uses best.npz)")
    s.add_argument("-n", type=_nonneg_int, default=1000, help="characters to draw (default 1000)")
    s.add_argument("--temperature", type=_positive_float, default=1.0, help="softmax temperature (default 1)")
    s.add_argument("--prime", help="text fed to the network first (default: a newline)")
    s.add_argument("--seed", type=_nonneg_int, help="sampler seed (default: random)")
    s.add_argument("--top-k", type=_nonneg_int, default=0, help="draw among the K most probable characters "
                                                                "(default 0: all)")
    s.add_argument("--top-p", type=float, default=1.0,
                   help="draw from the smallest set of most probable characters holding probability P "
                        "(default 1: all)")
    s.add_argument("--greedy", action="store_true", help="always take the most probable character")

    g = sub.add_parser("gradcheck", help="compare analytic and numerical gradients",
                       description="Gradient check on the first seq_length+1 characters of a text, "
                                   "with K = the text's vocabulary size.")
    g.add_argument("--hidden", type=_positive_int, default=5, help="hidden units (default 5)")
    g.add_argument("--seq-length", type=_positive_int, default=25, help="sequence length (default 25)")
    g.add_argument("--text", metavar="FILE", help="UTF-8 text (default: built-in corpus)")
    g.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the random parameters (default 0)")
    g.add_argument("--tolerance", type=_positive_float, default=1e-6,
                   help="largest acceptable C++ vs numerical relative error (default 1e-6)")

    r = sub.add_parser("report", help="(re)build report.md of a run folder")
    r.add_argument("run_dir", metavar="DIR", help="run folder written by charrnn train")
    return p


def _err(msg: str) -> None:
    print(f"charrnn: error: {msg}", file=sys.stderr)


def _echo(msg: str, file=None) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=file or sys.stderr)


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def _print_sample(rec) -> None:
    if rec.sample is None:
        return
    val = f", validation loss {rec.val_loss:.4f}/char" if rec.val_loss is not None else ""
    smooth = "n/a" if rec.step == 0 else f"{rec.smooth_loss:.4f}"
    _echo(f"----- update {rec.step} (epoch {rec.epoch}), smooth loss {smooth}{val}\n{rec.sample}\n-----",
          file=sys.stdout)


def _cmd_train(args: argparse.Namespace) -> int:
    from .data import load_corpus
    from .model import CharRNN
    from .training import TrainingDiverged, steps_per_epoch

    given = {k: getattr(args, k) for k in _RUN_OPTIONS if getattr(args, k) is not None}
    if args.resume is not None:
        run = Path(args.resume)
        if args.out is not None and Path(args.out).resolve() != run.resolve():
            raise ValueError(f"--out {args.out} conflicts with --resume {args.resume}; a resumed run "
                             f"is written to its own folder")
        if not (run / "last.npz").is_file():
            raise FileNotFoundError(f"cannot resume: {run / 'last.npz'} not found")
        model = CharRNN.load(run / "last.npz")
        if model.state is None:
            raise ValueError(f"{run / 'last.npz'} holds no training state")
        stored = {**_DEFAULTS, **model.state.config, **model.meta()}
        for k, v in given.items():
            if stored.get(k) != v:
                raise ValueError(f"{_RUN_OPTIONS[k]} {v} differs from the run's value {stored.get(k)}; "
                                 f"training options cannot change on --resume")
        total = args.steps
        if args.epochs is not None:
            total = int(round(args.epochs * steps_per_epoch(model.state.corpus["n_train"],
                                                            model.state.config["seq_length"],
                                                            model.state.config.get("batch_size", 1))))
        data = None if args.text is None else Path(args.text)
        out = run
        _echo(f"resuming {run} at update {model.step}")
        if args.threads is not None and args.threads != model.state.config.get("threads", 1):
            model.state.config["threads"] = args.threads  # does not change the results
        call = lambda **kw: model.resume(data, total_steps=total, **kw)  # noqa: E731
    else:
        opts = {**_DEFAULTS, **given}
        corpus = load_corpus(args.text, opts["val_fraction"])
        model = CharRNN.new(corpus.vocab, hidden=opts["hidden"], sig=opts["sig"], seed=opts["seed"],
                            dtype=np.dtype(opts["dtype"]), cell=opts["cell"], layers=opts["layers"],
                            forget_bias=opts["forget_bias"])
        out = Path(args.out) if args.out is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        epochs = DEFAULT_EPOCHS if args.steps is None and args.epochs is None else args.epochs
        _echo(f"training on {corpus.source}: {corpus.train.size:,} training / {corpus.val.size:,} validation "
              f"characters, vocabulary {corpus.vocab.size}; run folder {out}")
        train_opts = {k: opts[k] for k in _TRAIN_KEYS}
        if args.threads is not None:
            train_opts["threads"] = args.threads
        call = lambda **kw: model.fit(corpus, steps=args.steps, epochs=epochs, **train_opts, **kw)  # noqa: E731
    resume_hint = f"resume with: charrnn train --resume {out}"
    try:
        result = call(out=out, callback=_print_sample, progress=not args.no_progress, max_steps=args.stop_after,
                      max_minutes=args.max_minutes)
    except KeyboardInterrupt:
        if model.state is not None and (out / "last.npz").exists():
            _echo(f"\ninterrupted at update {model.step}; the run is saved in {out}; {resume_hint}")
        else:
            _echo("\ninterrupted before training started; nothing saved")
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        _err(str(exc))
        return EXIT_FAIL
    if result.stopped:
        _echo(f"stopped at update {result.step} of {model.state.total_steps}; saved in {out}; {resume_hint}")
        return EXIT_OK
    _echo(f"----- {len(result.passage or '')} characters from the best model (update {result.best_step}):",
          file=sys.stdout)
    _echo(result.passage or "", file=sys.stdout)
    val = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    if result.time_limited:
        _echo(f"the {args.max_minutes:g}-minute budget is used up: the run ends at update {result.step}")
    _echo(f"done: {result.step} updates, best smooth loss {result.best_loss:.4f} at update {result.best_step}, "
          f"final validation loss {val}/char; report: {out / 'report.md'}")
    return EXIT_OK


# ---------------------------------------------------------------------------
# other commands
# ---------------------------------------------------------------------------


def _cmd_sample(args: argparse.Namespace) -> int:
    from .model import CharRNN

    from .sampling import random_seed

    model = CharRNN.load(args.checkpoint)
    if not 0.0 < args.top_p <= 1.0:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    seed = random_seed() if args.seed is None else args.seed
    # validate the prime before printing anything
    pieces = model.sample_stream(args.n, temperature=args.temperature, prime=args.prime, seed=seed,
                                 top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, piece=256)
    first = next(pieces, "")
    sys.stdout.write((args.prime or "") + first)
    sys.stdout.flush()
    for text in pieces:  # printed as it is generated
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return EXIT_OK


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from .data import Vocabulary, builtin_corpus, load_text
    from .gradcheck import gradient_check

    text = builtin_corpus() if args.text is None else load_text(args.text)
    T = args.seq_length
    if len(text) < T + 1:
        raise ValueError(f"the text has {len(text)} characters; --seq-length {T} needs at least {T + 1}")
    vocab = Vocabulary.from_text(text)
    data = vocab.encode(text[:T + 1]).astype(np.int64)
    report = gradient_check(data, K=vocab.size, m=args.hidden, seq_length=T, seed=args.seed)
    print(report.table())
    worst = report.worst()["cpp_vs_numerical"]
    ok = worst < args.tolerance
    print(f"\n{'PASS' if ok else 'FAIL'}: largest C++ vs numerical relative error {worst:.2e} "
          f"(tolerance {args.tolerance:g})")
    return EXIT_OK if ok else EXIT_FAIL


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.run_dir)
    print(path)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``charrnn`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    commands = {"train": _cmd_train, "sample": _cmd_sample, "gradcheck": _cmd_gradcheck, "report": _cmd_report}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        _echo("\ninterrupted")
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError) as exc:
        _err(str(exc))
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
