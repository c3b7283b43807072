"""Command line: ``charrnn train | sample | gradcheck | report | export | sweep | serve | explain``
(also ``python -m charrnn_ext``).

A thin layer over :class:`charrnn_ext.model.CharRNN` and
:mod:`charrnn_ext.runfolder`; every option, its type, default, range and
help come from :mod:`charrnn_ext.config`. Exit codes: 0 success, 1 training
diverged, the gradient check failed or no trial of a sweep completed, 2 bad input, 130 interrupted (Ctrl-C
or SIGTERM; the run is saved and can be resumed). Every error is one line
on stderr, ``charrnn: error: ...``, usage errors included. A closed stdout
(``| head``) ends the output quietly; training goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import OPTIONS, PRESETS, Option, TrainConfig, group, model_options, option, shown
from .explain import FORMATS as EXPLAIN_FORMATS
from .explain import MAX_CHARS as EXPLAIN_MAX_CHARS
from .sweeps.settings import DEFAULT_TRIALS, PRUNERS, SAMPLERS
from .tracing import DEFAULT_TOP_K
from .trainplan import fine_tune_options, plan_length, plan_options, preset_notes
from .version import package_version

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _UsageError(Exception):
    """A command line argparse refuses (reported as one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as exceptions, so that main reports them as one line."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parser_type(o: Option):
    """argparse type: parse the text as the option's type and check its range."""

    def parse(text: str) -> Any:
        try:
            value: Any = int(text, 10) if o.kind is int else float(text) if o.kind is float else text
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {o._kind_text()} in {o.range_text()}, got {shown(text)}"
            ) from None
        try:
            return o.check(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = o.name
    return parse


def _add(
    parser: argparse._ActionsContainer,
    o: Option,
    default_value: Any = None,
    flag: str | None = None,
    show_default: Any = None,
    help_text: str | None = None,
) -> None:
    """One option on the command line; its value is None when not given (so
    that presets and stored runs can fill it) unless default_value is set.
    ``help_text`` replaces the option's help."""
    shown = o.default if show_default is None else show_default
    if isinstance(shown, int) and not isinstance(shown, bool):
        shown = f"{shown:,}"
    help_text = o.help if help_text is None else help_text
    if o.kind is bool:
        parser.add_argument(flag or o.flag, dest=o.name, action="store_true", default=default_value, help=help_text)
        return
    if o.choices is None and o.kind is not str:
        help_text += f"; {o.range_words()}"
    if shown is not None:
        help_text += f"; default {shown}"
    parser.add_argument(
        flag or o.flag,
        dest=o.name,
        type=_parser_type(o),
        choices=o.choices,
        default=default_value,
        metavar=o.metavar or (None if o.choices else o.name.upper()),
        help=help_text,
    )


#: The sections of ``charrnn train --help``, by what a user thinks of; every
#: model, training and run option is in one of them (a test checks it).
TRAIN_HELP_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("data", ("text", "val_fraction", "val_chars")),
    ("model", ("preset", "init_from", "cell", "layers", "hidden", "dtype", "sig", "forget_bias", "seed")),
    (
        "optimiser and schedule",
        (
            "optimizer",
            "eta",
            "lr_schedule",
            "lr_decay",
            "lr_decay_every",
            "lr_final",
            "warmup",
            "seq_length",
            "batch_size",
            "carry_state",
            "clip",
            "clip_mode",
            "dropout",
            "eps",
            "gamma",
            "beta1",
            "beta2",
        ),
    ),
    ("run length", ("steps", "epochs", "max_minutes", "stop_after", "resume", "threads")),
    (
        "output and logging",
        ("out", "log_every", "sample_every", "sample_chars", "passage_chars", "smoothing", "best_by"),
    ),
)


#: What a preset's machine-dependent values (None) become (config.preset_values).
_MACHINE = {
    "dtype": "(bfloat16 where it trains faster: AMX, or AVX512-BF16 on AMD; else float32)",
    "threads": "(the usable cores)",
}


def _preset_help(o: Option) -> str:
    """--preset's help: what each preset sets."""
    parts = []
    for name in PRESETS:
        values = PRESETS[name]
        shown_values = " ".join(f"{option(k).flag} {_MACHINE.get(k, v) if v is None else v}" for k, v in values.items())
        parts.append(f"{name}: {shown_values or 'every default (the classic experiment)'}")
    return f"{o.help}: " + "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="charrnn", description="Character-level RNN/LSTM/GRU with a C++ core.")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser(
        "train",
        usage="%(prog)s [--text FILE] [--preset NAME] [OPTION ...]",
        help="train a model and write a run folder",
        description="Train on a text (default: the built-in Shakespeare corpus). Without options, "
        "the classic experiment: a vanilla RNN of 100 units, AdaGrad with eta 0.1, "
        "25-character chunks, gradients clipped to [-5, 5]. --preset quality selects a "
        "network tuned for the lowest validation loss in a time budget.",
    )
    sections = {}
    for title, names in TRAIN_HELP_SECTIONS:
        sections[title] = g = t.add_argument_group(title)
        for name in names:
            o = option(name)
            shown = "the optimiser's" if name == "eta" else None
            _add(g, o, show_default=shown, help_text=_preset_help(o) if name == "preset" else None)
    out = sections["output and logging"]
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument(
        "--force",
        action="store_true",
        help="start the run even in a folder that holds other files or another run (only the run's own "
        "files are replaced)",
    )

    s = sub.add_parser(
        "sample",
        help="synthesise text from a checkpoint",
        description="Print the prime followed by N sampled characters, as they are drawn.",
    )
    s.add_argument("checkpoint", metavar="CHECKPOINT", help=".npz checkpoint, or a run folder (uses best.npz)")
    for o in group("sample"):
        _add(s, o, default_value=o.default, flag="-n" if o.name == "length" else None)
    s.add_argument("--seed", type=_parser_type(option("seed")), help="sampler seed (default: random)")
    s.add_argument(
        "--threads",
        type=_parser_type(option("threads")),
        default=option("threads").default,
        metavar="N",
        help="worker threads sharing each step of a large network (the text does not depend on it); "
        f"default {option('threads').default}",
    )

    c = sub.add_parser(
        "gradcheck",
        help="compare analytic and numerical gradients",
        description="Gradient check on the first seq_length+1 characters of a text, with K = the "
        "text's vocabulary size: C++ and NumPy gradients against centred differences.",
    )
    for name, value in (
        ("cell", None),
        ("layers", None),
        ("hidden", 5),
        ("seq_length", None),
        ("dropout", None),
        ("seed", None),
        ("threads", None),
    ):
        o = option(name)
        _add(c, o, default_value=o.default if value is None else value, show_default=value)
    _add(c, option("text"))
    _add(c, option("tolerance"), default_value=option("tolerance").default)

    r = sub.add_parser(
        "report",
        help="(re)build report.md of a run folder",
        description="Rebuild report.md and loss.png of a run folder from its config.json, last.npz, "
        "summary.json and gradcheck.md (a finished run, or one still unfinished), and print the report's path.",
    )
    r.add_argument("run_dir", metavar="DIR", help="run folder written by charrnn train")

    e = sub.add_parser(
        "export",
        help="write a model as an ONNX model or a PyTorch file",
        description="Write a checkpoint for use without this package: an ONNX model (float32, "
        "vocabulary in its metadata; needs charrnn_ext[onnx]) or a PyTorch file that "
        "torch.load(path, weights_only=True) reads (needs charrnn_ext[torch]).",
    )
    e.add_argument("model", metavar="MODEL", help=".npz checkpoint, or a run folder (uses best.npz)")
    e.add_argument(
        "--format",
        metavar="{onnx,torch}",
        help="output format; default: torch if the output ends in .pt or .pth, else onnx",
    )
    e.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="file to write (replaced atomically); default: MODEL with the suffix .onnx or .pt",
    )

    x = sub.add_parser(
        "explain",
        help="write a page showing what a model predicts and which units track what",
        description="Trace a text through a model and write one self-contained HTML page (no network "
        "requests): the text coloured by surprisal with the top predictions on hover, a unit browser "
        "(choose a layer and unit, the text is coloured by its activation), and the units that best "
        "track simple features of the text. --format json writes the same data for scripts.",
    )
    x.add_argument("model", metavar="MODEL", help=".npz checkpoint, or a run folder (uses best.npz)")
    src = x.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="FILE", help="UTF-8 text file to trace")
    src.add_argument("--string", metavar="TEXT", help="the text to trace, given on the command line")
    x.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write (replaced atomically)")
    x.add_argument(
        "--format", choices=EXPLAIN_FORMATS, help="html or json; default: json if the output ends in .json, else html"
    )
    x.add_argument(
        "--top-k",
        type=_positive("top-k"),
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"predictions shown per character, at most the vocabulary size; default {DEFAULT_TOP_K}",
    )
    x.add_argument(
        "--layer",
        type=_natural("layer"),
        action="append",
        metavar="L",
        help="a layer (from 0) whose units the page shows and ranks; may be repeated; default: every layer",
    )
    x.add_argument(
        "--max-chars",
        type=_positive("max-chars"),
        default=EXPLAIN_MAX_CHARS,
        metavar="N",
        help=f"trace at most the first N characters of the text; default {EXPLAIN_MAX_CHARS:,}".replace(",", "_"),
    )
    x.add_argument(
        "--threads",
        type=_parser_type(option("threads")),
        default=option("threads").default,
        metavar="N",
        help=f"worker threads; default {option('threads').default}",
    )

    w = sub.add_parser(
        "sweep",
        help="search training options with Optuna, trials on a Dask cluster",
        description="Train one charrnn train run per trial with options drawn from SPACE.toml "
        "([fixed] options for every trial, [search] one distribution per option: choice, "
        "uniform, loguniform or int), stop unpromising trials early, and write "
        "results.csv, report.md, sweep.png, trials/NNN/ and best/ to --out. Trials run on "
        "an embedded local Dask cluster, or on the cluster at --scheduler. Needs "
        "charrnn_ext[sweep].",
    )
    w.add_argument("space", metavar="SPACE.toml", help="the search space")
    w.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (new or empty; with --resume: the sweep's folder)"
    )
    w.add_argument(
        "--trials",
        type=_positive("trials"),
        metavar="N",
        help=f"trials to run in all; default {DEFAULT_TRIALS} (grid: every point)",
    )
    w.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (tcp://HOST:PORT); default: a local cluster",
    )
    w.add_argument(
        "--workers",
        type=_positive("workers"),
        metavar="N",
        help="workers of the local cluster (default: cores / threads per trial); with --scheduler: at "
        "most N trials at once (default: the workers' threads)",
    )
    w.add_argument(
        "--threads-per-trial",
        type=_parser_type(option("threads")),
        metavar="N",
        help="threads of every trial's training; default 1",
    )
    w.add_argument("--pruner", choices=PRUNERS, help="stops bad trials early; default median")
    w.add_argument("--sampler", choices=SAMPLERS, help="chooses each trial's options; default tpe")
    w.add_argument("--seed", type=_seed, metavar="S", help="the sampler's seed (default: random)")
    w.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out (its settings are kept; --trials may grow)"
    )
    w.add_argument("--no-progress", action="store_true", help="no progress bar")

    v = sub.add_parser(
        "serve",
        help="a local web page to sample from models and watch the text arrive",
        description="Serve a web page (and its JSON API) to pick a model under PATH, sample from it with the "
        "controls of charrnn sample and watch the text stream in as it is drawn. PATH is a checkpoint, a run "
        "folder, or a folder of run folders (runs/, a sweep's --out). The server listens on 127.0.0.1 only "
        "unless --host says otherwise; to offer it to others, put it behind a reverse proxy (see the README). "
        "Needs charrnn_ext[serve].",
    )
    v.add_argument("path", metavar="PATH", help="checkpoint, run folder, or folder of run folders")
    for o in group("serve"):
        _add(v, o, default_value=o.default)
    return p


def _positive(name: str):
    """argparse type: an integer of at least 1."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an integer of at least 1, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def _natural(name: str):
    """argparse type: an integer of at least 0."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be an integer of at least 0, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def _seed(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"the seed must be an integer in [0, 2**32), got {text!r}")
    return value


#: Every character that ends a line for str.splitlines, escaped as Python writes it.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(msg: str) -> str:
    """``msg`` with its line breaks escaped (a file name or a value may hold any of them)."""
    return msg.translate(_LINE_BREAKS)


def _err(msg: str) -> None:
    """The one line of an error."""
    print(f"charrnn: error: {one_line(msg)}", file=sys.stderr)


def _warning_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """A warning as one status line: ``charrnn: warning: ...``."""
    _echo(f"charrnn: warning: {one_line(str(message))}")


def _echo(msg: str) -> None:
    """A status line on stderr (above the progress bar)."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


class _Stdout:
    """Text for stdout that stops quietly once the reader has gone (a closed pipe)."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, text: str) -> None:
        if self.closed:
            return
        tqdm = sys.modules.get("tqdm")  # a progress bar may be on the terminal: write above it
        bar = tqdm.tqdm.external_write_mode(file=sys.stdout) if tqdm is not None else contextlib.nullcontext()
        try:
            with bar:
                sys.stdout.write(text)
                sys.stdout.flush()
        except BrokenPipeError:
            self.closed = True
            # later writes (and the interpreter's final flush) go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def _unique_run_folder() -> Path:
    """A new folder runs/<timestamp>[-n], created here so that two runs
    started in the same second get different ones."""
    base = Path("runs")
    base.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        path = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OSError(f"could not create a new run folder under {base}")


class _SamplePrinter:
    """The training callback of ``charrnn train``: prints each sample the
    run takes, with its update and losses, to stdout."""

    def __init__(self, out: _Stdout) -> None:
        self.out = out

    def __call__(self, rec: Any) -> None:
        if rec.sample is None:
            return
        val = f", validation loss {rec.val_loss:.4f}/char" if rec.val_loss is not None else ""
        smooth = "n/a" if rec.step == 0 else f"{rec.smooth_loss:.4f}/char"
        self.out.write(f"----- update {rec.step} (epoch {rec.epoch}), smooth loss {smooth}{val}\n{rec.sample}\n-----\n")


def _session(args: argparse.Namespace, out: Path, printer: _SamplePrinter) -> dict[str, Any]:
    """The keyword arguments of one training session, new or resumed."""
    return dict(
        out=out,
        callback=printer,
        progress=not args.no_progress,
        max_steps=args.stop_after,
        max_minutes=args.max_minutes,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    names = [o.name for o in OPTIONS if o.group in ("model", "train")]
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.resume is not None:
        if args.init_from is not None:
            raise ValueError(
                f"--init-from {args.init_from} starts a new run and --resume {args.resume} continues one; give one"
            )
        return _train_resumed(args, given)
    return _train_new(args, given)


def _fine_tune_start(args: argparse.Namespace, given: dict[str, Any], opts: dict[str, Any]) -> tuple[Any, Any]:
    """(model, corpus) of ``charrnn train --init-from MODEL``: the checkpoint's
    network, its vocabulary grown by the text's new characters, no training
    state; ``opts`` gets the model's options. Says on stderr what was kept and added."""
    from .checkpoint import CheckpointError
    from .config import precision_of
    from .data import describe_chars, load_corpus, text_vocabulary
    from .model import CharRNN

    source = Path(args.init_from)
    if source.is_dir() and not (source / "best.npz").is_file():
        raise FileNotFoundError(
            f"--init-from {source}: the folder holds no best.npz (a run writes it at its first sample point); "
            f"give a checkpoint file, e.g. {source / 'last.npz'}"
        )
    try:
        model = CharRNN.load(source)
    except CheckpointError as exc:
        raise ValueError(f"--init-from: cannot fine-tune from this checkpoint: {exc}") from None
    taken = fine_tune_options(given, model.meta(), str(source))
    model.reset_training()
    if "seed" in taken:
        model.seed = taken["seed"]
    if "dtype" in taken:
        model.precision = precision_of(taken["dtype"])
    text = None if args.text is None else Path(args.text)
    kept = model.K
    added = model.extend_vocab(text_vocabulary(text).chars)
    corpus = load_corpus(text, opts["val_fraction"], model.vocab)
    opts.update(model_options(model.meta()))
    origin = model.origin or {}
    step = origin.get("step")
    _echo(
        f"fine-tuning the model in {source} (sha256 {str(origin.get('sha256'))[:12]}..."
        + ("" if step is None else f", {step:,} updates")
        + f"): its {kept} characters kept, "
        + (f"{len(added)} added: {describe_chars(added)}" if added else "none added (the text has no new character)")
    )
    return model, corpus


def _train_new(args: argparse.Namespace, given: dict[str, Any]) -> int:
    """``charrnn train`` without --resume: a new model and a new run folder
    (made here when --out is not given)."""
    from .data import load_corpus
    from .model import CharRNN
    from .training import TrainingDiverged

    preset, opts = plan_options({**given, "preset": args.preset})
    for note in preset_notes(preset, given):
        _echo(f"charrnn: note: {note}")
    if args.init_from is not None:
        model, corpus = _fine_tune_start(args, given, opts)
    else:
        corpus = load_corpus(args.text, opts["val_fraction"])
        model = CharRNN.new(corpus.vocab, **model_options(opts))
    made = args.out is None
    existed = not made and Path(args.out).exists()
    out = Path(args.out) if args.out is not None else _unique_run_folder()
    steps, epochs = plan_length(args.steps, args.epochs, args.max_minutes)
    if args.sample_every is None and args.max_minutes is None:
        opts["sample_every"] = _scaled_sample_every(opts, steps, epochs, corpus.train.size)
    _echo(
        f"training on {corpus.source}: {corpus.train.size:,} training / {corpus.val.size:,} validation "
        f"characters, vocabulary {corpus.vocab.size}; {model.cell} x {model.layers} layer(s) of "
        f"{model.hidden} units ({model.n_params:,} parameters); run folder {out}"
    )
    run_info = {
        "preset": preset,
        "steps": args.steps,
        "epochs": epochs,
        "max_minutes": args.max_minutes,
        "options": opts,
    }
    printer = _SamplePrinter(_Stdout())
    try:
        result = model.fit(
            corpus,
            steps=steps,
            epochs=epochs,
            run_info=run_info,
            force=args.force,
            **{k: opts[k] for k in TrainConfig.names()},
            **_session(args, out, printer),
        )
    except KeyboardInterrupt:
        if (out / "last.npz").exists():
            _echo(f"\ninterrupted at update {model.step}; the run is saved in {out}; {_resume_hint(out)}")
        else:
            _echo(f"\ninterrupted before the first checkpoint; nothing was saved{_discard(out, made, existed)}")
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        _err(str(exc))
        return EXIT_FAIL
    except BaseException:
        _discard(out, made, existed)
        raise
    return _train_done(result, out, printer.out)


#: A run whose length is known samples at least this many times (besides update 0 and its end)
#: unless --sample-every is given.
MIN_SAMPLE_POINTS = 8


def _scaled_sample_every(opts: dict[str, Any], steps: int | None, epochs: float | None, n_train: int) -> int:
    """The preset's sample interval, shortened so that a short run still
    samples about MIN_SAMPLE_POINTS times."""
    from .training import steps_per_epoch

    total = (
        steps
        if steps is not None
        else round((epochs or 0) * steps_per_epoch(n_train, opts["seq_length"], opts["batch_size"]))
    )
    return max(1, min(int(opts["sample_every"]), -(-total // MIN_SAMPLE_POINTS)))


def _discard(out: Path, made: bool, existed: bool) -> str:
    """After a new run that saved no checkpoint (the trainer has removed what
    it wrote): remove the folder made for it if it is empty. Returns the note
    for the message."""
    if made:
        with contextlib.suppress(OSError):
            out.rmdir()
    return f" ({out} removed)" if not existed and not out.exists() else ""


def _resume_hint(out: Path) -> str:
    return f"resume with: charrnn train --resume {out}"


def _train_resumed(args: argparse.Namespace, given: dict[str, Any]) -> int:
    """``charrnn train --resume DIR``: the run in DIR continues from its last
    checkpoint, with its own options (only --threads may change)."""
    from .model import CharRNN
    from .runfolder import RunFolder
    from .training import TrainingDiverged, steps_per_epoch

    run = Path(args.resume)
    if args.out is not None and Path(args.out).resolve() != run.resolve():
        raise ValueError(
            f"--out {args.out} conflicts with --resume {args.resume}; a resumed run is written to its own folder"
        )
    if not (run / "last.npz").is_file():
        hint = (
            f" (the run in {run} stopped before its first checkpoint: start it again, with --force to "
            f"replace its files)"
            if (run / "config.json").is_file()
            else ""
        )
        raise FileNotFoundError(f"cannot resume: {run / 'last.npz'} not found{hint}")
    model = CharRNN.load(run / "last.npz")
    state = model.state
    if state is None:
        raise ValueError(f"{run / 'last.npz'} holds no training state")
    stored = {**TrainConfig.from_dict(state.config).to_dict(), **model.meta()}
    if args.preset is not None:
        run_preset = RunFolder(run).run_info().get("preset") or "classic"
        if args.preset != run_preset:
            raise ValueError(
                f"--preset {args.preset} differs from the run's preset {run_preset}; training "
                f"options cannot change on --resume"
            )
    for k, v in given.items():
        if k != "threads" and stored.get(k) != v:
            raise ValueError(
                f"{option(k).flag} {v} differs from the run's value {stored.get(k)}; training "
                f"options cannot change on --resume"
            )
    total = args.steps
    if args.epochs is not None:
        cfg = state.config
        total = round(args.epochs * steps_per_epoch(state.corpus["n_train"], cfg["seq_length"], cfg["batch_size"]))
    data = None if args.text is None else Path(args.text)
    _echo(f"resuming {run} at update {model.step}")
    printer = _SamplePrinter(_Stdout())
    try:
        result = model.resume(data, total_steps=total, threads=given.get("threads"), **_session(args, run, printer))
    except KeyboardInterrupt:
        _echo(f"\ninterrupted at update {model.step}; the run is saved in {run}; {_resume_hint(run)}")
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        _err(str(exc))
        return EXIT_FAIL
    return _train_done(result, run, printer.out)


def _train_done(result: Any, out: Path, stdout: _Stdout) -> int:
    """The closing lines of a training session: where a stopped run is saved,
    or the final passage and the run's numbers."""
    if result.stopped:
        _echo(f"stopped at update {result.step}; saved in {out}; {_resume_hint(out)}")
        return EXIT_OK
    which = f"the best model (update {result.best_step})" if result.best_step >= 0 else "the initial model"
    stdout.write(f"----- {len(result.passage or '')} characters from {which}:\n{result.passage or ''}\n")
    val = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    if result.time_limited:
        _echo(_budget_text(result))
    best = ""
    if result.best_step >= 0:
        best = f"best model by {result.best_by} loss: update {result.best_step}"
        if result.best_val_loss is not None:
            best += f", validation loss {result.best_val_loss:.4f}/char"
        best += "; "
    _echo(
        f"done: {result.step:,} updates in {_duration(result.seconds)} of training, smooth loss "
        f"{result.smooth_loss:.4f}/char; {best}last model's validation loss {val}/char; report: {out / 'report.md'}"
    )
    return EXIT_OK


def _budget_text(result: Any) -> str:
    """The end of a time-budgeted run: the budget, the time taken and why it was more."""
    budget = result.budget_seconds or 0.0
    over = result.seconds - budget
    n, dt = result.last_chunk
    text = f"time budget {_duration(budget)} used up: training took {_duration(result.seconds)}"
    if over > 0.5 and n > 0:
        text += f" (its last chunk of {n:,} updates took {_duration(dt)} and ended {_duration(over)} past the budget)"
    text += f", then the final evaluation {_duration(result.final_seconds)}; the run ends at update {result.step}"
    return text


def _duration(seconds: float) -> str:
    """Seconds as people write them: 45.2 s, 2 min 12 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


# ---------------------------------------------------------------------------
# other commands
# ---------------------------------------------------------------------------


def _sweep_best(path: str) -> str:
    """A sweep's folder means its best trial's run folder (best/); anything else is left as it is."""
    p = Path(path)
    if p.is_dir() and (p / "sweep.json").is_file() and not (p / "best.npz").exists():
        if not (p / "best").is_dir():
            raise FileNotFoundError(f"{p} is a sweep with no complete trial yet (no best/ folder)")
        return str(p / "best")
    return path


def _cmd_sample(args: argparse.Namespace) -> int:
    from .model import CharRNN
    from .sampling import random_seed

    model = CharRNN.load(_sweep_best(args.checkpoint))
    seed = random_seed() if args.seed is None else args.seed
    # the prime is checked before anything is printed
    pieces = model.sample_stream(
        args.length,
        temperature=args.temperature,
        prime=args.prime,
        seed=seed,
        top_k=args.top_k,
        top_p=args.top_p,
        greedy=args.greedy,
        piece=256,
        threads=args.threads,
    )
    out = _Stdout()
    first = next(pieces, "")
    out.write((args.prime or "") + first)
    for text in pieces:  # printed as it is generated
        if out.closed:
            break
        out.write(text)
    out.write("\n")
    return EXIT_OK


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from .data import Vocabulary, builtin_corpus, load_text
    from .gradcheck import COMMAND_CHECK_SECONDS, gradient_check, numerical_seconds
    from .layout import n_params

    text = builtin_corpus() if args.text is None else load_text(args.text)
    T = args.seq_length
    if len(text) < T + 1:
        raise ValueError(f"the text has {len(text)} characters; --seq-length {T} needs at least {T + 1}")
    if args.hidden > 64 or args.layers > 3 or T > 200:
        raise ValueError(
            "the numerical gradient perturbs every parameter in turn; keep --hidden <= 64, "
            "--layers <= 3 and --seq-length <= 200 so that it ends in reasonable time"
        )
    vocab = Vocabulary.from_text(text)
    P = n_params(args.cell, vocab.size, args.hidden, args.layers)
    seconds = numerical_seconds(args.cell, vocab.size, args.hidden, args.layers, T)
    if seconds > COMMAND_CHECK_SECONDS:  # every parameter is perturbed in turn
        raise ValueError(
            f"the numerical gradient of this check ({args.cell}, {args.layers} layer(s) of "
            f"{args.hidden} units, {vocab.size} characters: {P:,} parameters, {T} steps) would take "
            f"about {seconds / 60:,.0f} minutes; choose a smaller --hidden, --layers or --seq-length, "
            f"or a text with fewer distinct characters"
        )
    data = vocab.encode(text[: T + 1]).astype("int64")
    report = gradient_check(
        data,
        K=vocab.size,
        m=args.hidden,
        seq_length=T,
        seed=args.seed,
        cell=args.cell,
        layers=args.layers,
        dropout=args.dropout,
        threads=args.threads,
    )
    worst = report.worst()["cpp_vs_numerical"]
    ok = worst < args.tolerance
    _Stdout().write(
        f"{report.table()}\n\n{'PASS' if ok else 'FAIL'}: largest C++ vs numerical relative error "
        f"{worst:.2e} (tolerance {args.tolerance:g})\n"
    )
    return EXIT_OK if ok else EXIT_FAIL


def _cmd_report(args: argparse.Namespace) -> int:
    from .runfolder import write_report

    _Stdout().write(f"{write_report(args.run_dir)}\n")
    return EXIT_OK


#: Export formats: suffix of the default output file, and the extra that installs what the format needs.
EXPORT_FORMATS = {"onnx": (".onnx", "onnx"), "torch": (".pt", "torch")}


def _cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .fileio import check_output_path

    fmt = args.format
    if fmt is None:
        fmt = "torch" if args.output is not None and Path(args.output).suffix.lower() in (".pt", ".pth") else "onnx"
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    source = Path(_sweep_best(args.model))
    if source.is_dir():
        source = source / "best.npz"
    out = Path(args.output) if args.output is not None else source.with_suffix(EXPORT_FORMATS[fmt][0])
    if out.is_dir():
        raise IsADirectoryError(f"the output {out} is a folder; give a file name with -o")
    check_output_path(out)  # a device, a FIFO or a link is never replaced by the export
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the output's folder {out.parent} does not exist")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ValueError(f"the output {out} is the checkpoint being exported; choose another file with -o")
    ckpt = load_checkpoint(source)
    try:
        if fmt == "onnx":
            from .export.onnx import save_onnx as save
        else:
            from .export.torch import save_torch as save
        save(ckpt, out)
    except ImportError as exc:
        _err(
            f"the {fmt} export needs the {exc.name or fmt} package, which cannot be imported: "
            f"pip install 'charrnn_ext[{EXPORT_FORMATS[fmt][1]}]'"
        )
        return EXIT_USAGE
    meta = ckpt.meta
    _Stdout().write(
        f"wrote {out} ({fmt}: {meta.get('cell', 'rnn')}, {meta.get('layers', 1)} layer(s) of "
        f"{ckpt.params['V'].shape[1]} units, {ckpt.vocab.size} characters)\n"
    )
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from .data import load_text
    from .explain import build_payload, write_explain
    from .model import CharRNN

    fmt = args.format or ("json" if Path(args.output).suffix.lower() == ".json" else "html")
    out = Path(args.output)
    if out.is_dir():
        raise IsADirectoryError(f"the output {out} is a folder; give a file name with -o")
    if out.exists() and not out.is_file():
        raise ValueError(f"the output {out} is not a regular file (a device or a pipe?); give a file name with -o")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the output's folder {out.parent} does not exist")
    model = CharRNN.load(args.model)
    text, source = (load_text(args.text), Path(args.text).name) if args.text is not None else (args.string, None)
    if len(text) > args.max_chars:
        _echo(f"tracing the first {args.max_chars:,} of {len(text):,} characters (--max-chars)")
        text = text[: args.max_chars]
    if args.top_k > model.K:
        raise ValueError(f"--top-k {args.top_k} is more than the model's {model.K} characters")
    payload = build_payload(model, text, args.top_k, layers=args.layer, source=source, threads=args.threads)
    write_explain(payload, out, fmt)
    _Stdout().write(
        f"wrote {out} ({fmt}: {len(text):,} characters, {payload['bits_per_char']:.3f} bits per character)\n"
    )
    return EXIT_OK


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweeps.run import sweep

    try:
        table = sweep(
            args.space,
            args.out,
            trials=args.trials,
            scheduler=args.scheduler,
            workers=args.workers,
            threads_per_trial=args.threads_per_trial,
            pruner=args.pruner,
            sampler=args.sampler,
            seed=args.seed,
            resume=args.resume,
            progress=not args.no_progress,
            echo=_echo,
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # the sweep has said how to continue
    except ImportError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if table.best is None:
        _err(f"no trial completed; see {Path(args.out) / 'report.md'}")
        return EXIT_FAIL
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve.run import is_loopback, serve
    except ImportError as exc:
        _err(
            f"charrnn serve needs the {exc.name or 'serve'} package, which cannot be imported: "
            f"pip install 'charrnn_ext[serve]'"
        )
        return EXIT_USAGE
    if not args.host or not args.host.isprintable() or any(c.isspace() for c in args.host):
        _err(f"--host must be a host name or an IP address, got {shown(args.host)}")
        return EXIT_USAGE
    if not is_loopback(args.host):
        _echo(
            f"charrnn: warning: --host {args.host} opens the server to the network: anyone who can reach this "
            f"machine on port {args.port} can use its models and its CPU. Prefer 127.0.0.1 behind a reverse proxy "
            f"(see the README)."
        )
    serve(
        args.path,
        host=args.host,
        port=args.port,
        max_streams=args.max_streams,
        max_chars=args.max_chars,
        echo=_echo,
    )
    return EXIT_OK


def _escape_what_the_terminal_cannot_show() -> None:
    """A terminal whose encoding cannot show a text's characters (ASCII or
    Latin-1 output) gets them as backslash escapes instead of an error that
    would stop a run at its first sample."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``charrnn`` command; returns the exit code."""
    from .signals import terminate_as_interrupt

    _escape_what_the_terminal_cannot_show()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help or --version
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    commands = {
        "train": _cmd_train,
        "sample": _cmd_sample,
        "gradcheck": _cmd_gradcheck,
        "report": _cmd_report,
        "export": _cmd_export,
        "sweep": _cmd_sweep,
        "serve": _cmd_serve,
        "explain": _cmd_explain,
    }
    try:
        with terminate_as_interrupt(), warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return commands[args.command](args)
    except KeyboardInterrupt:
        _echo("\ninterrupted")
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, MemoryError, OverflowError) as exc:
        _err(str(exc) or type(exc).__name__)
        return EXIT_USAGE
    except RecursionError:  # a reader that does not bound the nesting of its input (JSON, TOML)
        _err(f"an input of charrnn {args.command} is nested too deeply to be read (RecursionError)")
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
