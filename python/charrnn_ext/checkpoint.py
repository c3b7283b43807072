"""Checkpoint files: everything needed to use a model or to continue training it.

A checkpoint is a plain ``.npz`` archive that ``numpy.load(path,
allow_pickle=False)`` reads: arrays for the numbers, 0-d arrays for scalars and
0-d unicode arrays holding JSON for the structured metadata. Nothing is ever
pickled.

Keys of format version 2 (version 1 is the same layout for the vanilla RNN
with AdaGrad, without the entries marked "v2"; it loads as cell "rnn", one
layer, optimiser "adagrad"):

``format`` (0-d str)            always ``"charrnn_ext.checkpoint"``
``format_version`` (0-d int64)  :data:`FORMAT_VERSION`
``kind`` (0-d str)              ``"model"`` (parameters only) or ``"training"``
``meta`` (0-d str, JSON)        model hyper-parameters (hidden, sig, seed,
                                dtype; v2: cell, layers, forget_bias), package
                                version and free-form info
``vocab`` (int32, K)            code points, see ``Vocabulary.to_array``
``param_<name>``                the parameter arrays: U, W, V, b, c for a
                                one-layer rnn (the classic layout), else the
                                network layout of :mod:`charrnn_ext.nets`
                                (``param_l0.Wx`` ... ``param_V``, ``param_c``)
``start_h``, optional           hidden state to start sampling/evaluation from
                                (the training state when the parameters were
                                taken): (m,) in the classic layout, else (layers, S*m)

and, for ``kind == "training"`` only:

``adagrad_*``                   AdaGrad memory (sums of squared gradients), classic
                                layout with optimiser adagrad
``opt:<slot>:<name>`` (v2)      optimiser state of every other configuration, keyed
                                as :func:`charrnn_ext.nets.init_opt_state` does
``opt_t`` (v2, 0-d int64)       update counter of the network path (Adam's t)
``positions`` (v2, int64 (B,))  per-stream offsets of a batched run (batch_size > 1)
``h``                           hidden state carried to the next chunk: (m,), or
                                (B, m) for a batched run, or (layers, S*m)
``pos``, ``step``, ``wraps``, ``total_steps``, ``best_step`` (0-d int64)
``smooth_loss``, ``last_loss``, ``best_loss`` (0-d float64, NaN = none yet)
``best_U`` ... ``best_c``, ``best_h``
                                parameters and hidden state of the best model (if any)
``train_config`` (0-d JSON)     training hyper-parameters (v2: optimiser and its
                                settings, clip mode, learning-rate schedule, batch size)
``corpus`` (0-d JSON)           identity of the training text: source, sizes,
                                SHA-256 of the training index array
``hist_step``, ``hist_epoch``, ``hist_loss``, ``hist_smooth_loss``,
``hist_val_loss``, ``hist_val_chars``
                                one entry per metrics row (NaN = not measured)
``samples`` (0-d JSON)          the text synthesised during training
"""
from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .data import Vocabulary
from .nets import CELLS, OPTIMIZERS, STATES, init_opt_state, net_param_shapes
from .params import PARAM_NAMES, param_shapes

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "MetricRow",
    "SampleRecord",
    "TrainState",
    "atomic_write_bytes",
    "atomic_write_text",
    "corpus_identity",
    "load_checkpoint",
    "package_version",
    "remove_stale_temp_files",
    "save_checkpoint",
]

FORMAT_NAME = "charrnn_ext.checkpoint"
#: Version of the checkpoint layout written by this package. Files with a
#: larger number were written by a newer release and are refused.
FORMAT_VERSION = 2

_KINDS = ("model", "training")
# What the zipfile / numpy.lib.format readers raise on damaged archives: a
# flipped bit in a zip header can select an unsupported compression method or
# zip version (NotImplementedError), set the "encrypted" flag (RuntimeError)
# or make a stored member look deflated (zlib.error).
_READ_ERRORS = (OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class CheckpointError(ValueError):
    """A file is not a usable checkpoint (corrupt, incompatible or inconsistent)."""


def package_version() -> str:
    try:
        return importlib.metadata.version("charrnn_ext")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source tree
        return "unknown"


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------


_UMASK: int | None = None


def _file_mode() -> int:
    """Permissions a normally created file gets (0o666 minus the umask)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def _atomic_write(path: str | os.PathLike[str], write) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it
    and move it over ``path`` in one step, so readers never see a partial file."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def remove_stale_temp_files(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes of
    ``folder/name`` left behind (a process killed between creating the
    temporary file and renaming it). Returns the deleted paths.

    Only for a folder no other process is writing to at the same time."""
    base = Path(folder)
    removed = []
    for name in names:
        for tmp in base.glob(f".{glob.escape(name)}.*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    continue
                removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename)."""
    return _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------
# Records and state
# ---------------------------------------------------------------------------


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


def corpus_identity(train: np.ndarray, source: str, n_val: int, path: str | None = None) -> dict[str, Any]:
    """What identifies a training text: its source, sizes and a SHA-256 of the
    training indices (as little-endian uint32, so the index dtype does not matter)."""
    sha = hashlib.sha256()
    step = 1 << 20  # hash in slices: a 100 MB text must not be widened to 400 MB at once
    for start in range(0, train.size, step):
        sha.update(np.ascontiguousarray(train[start:start + step], dtype="<u4").tobytes())
    digest = sha.hexdigest()
    return {
        "source": source,
        "path": path,
        "n_train": int(train.size),
        "n_val": int(n_val),
        "train_sha256": digest,
    }


@dataclass
class TrainState:
    """Optimiser and bookkeeping state of a training run (see module docstring)."""

    mem: dict[str, np.ndarray]
    h: np.ndarray
    pos: int = 0
    step: int = 0
    wraps: int = 0
    total_steps: int = 0
    smooth_loss: float = math.nan
    last_loss: float = math.nan
    best_loss: float = math.nan
    best_step: int = -1
    best_params: dict[str, np.ndarray] | None = None
    best_h: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
    history: list[MetricRow] = field(default_factory=list)
    samples: list[SampleRecord] = field(default_factory=list)
    t: int = 0  # Adam's step counter (net path)
    positions: np.ndarray | None = None  # per-stream offsets of a batched run

    @property
    def epoch(self) -> int:
        """1-based epoch of the last update (1 before any update)."""
        return self.wraps + 1


def is_classic(cell: str, layers: int) -> bool:
    """True if the model keeps the classic U, W, V, b, c parameter layout."""
    return cell == "rnn" and int(layers) == 1


def layout_shapes(cell: str, layers: int, K: int, m: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the parameters of a model (classic or network layout)."""
    if is_classic(cell, layers):
        return param_shapes(K, m)
    return net_param_shapes(cell, K, m, layers)


def state_shape(cell: str, layers: int, m: int, batch_size: int = 1) -> tuple[int, ...]:
    """Shape of the hidden state a model carries during training."""
    if is_classic(cell, layers):
        return (m,) if batch_size == 1 else (batch_size, m)
    return (int(layers), STATES[cell] * m)


def model_spec(meta: Mapping[str, Any]) -> tuple[str, int]:
    """(cell, layers) from checkpoint meta; files without them are vanilla one-layer RNNs."""
    return str(meta.get("cell", "rnn")), int(meta.get("layers", 1))


@dataclass
class Checkpoint:
    """Contents of a checkpoint file."""

    vocab: Vocabulary
    params: dict[str, np.ndarray]
    meta: dict[str, Any]
    state: TrainState | None = None
    start_h: np.ndarray | None = None
    format_version: int = FORMAT_VERSION

    @property
    def kind(self) -> str:
        return "model" if self.state is None else "training"


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def _json0d(obj: Any) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True, allow_nan=True))


def _opt_float(x: float | None) -> float:
    return math.nan if x is None else float(x)


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` (an ``.npz`` file) atomically."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "kind": np.array(ckpt.kind),
        "meta": _json0d(dict(ckpt.meta, package_version=package_version())),
        "vocab": ckpt.vocab.to_array(),
    }
    for name in ckpt.params:
        arrays[f"param_{name}"] = np.ascontiguousarray(ckpt.params[name])
    if ckpt.start_h is not None:
        arrays["start_h"] = np.ascontiguousarray(ckpt.start_h)
    s = ckpt.state
    if s is not None:
        classic = set(s.mem) == set(PARAM_NAMES)
        for name, a in s.mem.items():
            arrays[f"adagrad_{name}" if classic else f"opt:{name}"] = np.ascontiguousarray(a)
        arrays["opt_t"] = np.array(int(s.t), dtype=np.int64)
        if s.positions is not None:
            arrays["positions"] = np.ascontiguousarray(s.positions, dtype=np.int64)
        arrays["h"] = np.ascontiguousarray(s.h)
        for key in ("pos", "step", "wraps", "total_steps", "best_step"):
            arrays[key] = np.array(int(getattr(s, key)), dtype=np.int64)
        for key in ("smooth_loss", "last_loss", "best_loss"):
            arrays[key] = np.array(float(getattr(s, key)), dtype=np.float64)
        if s.best_params is not None:
            for name in s.best_params:
                arrays[f"best_{name}"] = np.ascontiguousarray(s.best_params[name])
            arrays["best_h"] = np.ascontiguousarray(s.best_h)
        arrays["train_config"] = _json0d(s.config)
        arrays["corpus"] = _json0d(s.corpus)
        hist = s.history
        arrays["hist_step"] = np.array([r.step for r in hist], dtype=np.int64)
        arrays["hist_epoch"] = np.array([r.epoch for r in hist], dtype=np.int64)
        arrays["hist_loss"] = np.array([r.loss for r in hist], dtype=np.float64)
        arrays["hist_smooth_loss"] = np.array([r.smooth_loss for r in hist], dtype=np.float64)
        arrays["hist_val_loss"] = np.array([_opt_float(r.val_loss) for r in hist], dtype=np.float64)
        arrays["hist_val_chars"] = np.array([r.val_chars for r in hist], dtype=np.int64)
        arrays["samples"] = _json0d([
            {"step": r.step, "epoch": r.epoch, "smooth_loss": r.smooth_loss, "val_loss": r.val_loss,
             "val_chars": r.val_chars, "seed": str(r.seed), "text": r.text}
            for r in s.samples
        ])
    return _atomic_write(path, lambda fh: np.savez(fh, **arrays))


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path, z: Any):
        self.path = path
        self.z = z
        self.keys = set(z.files)

    def fail(self, msg: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {msg}")

    def get(self, key: str) -> np.ndarray:
        if key not in self.keys:
            raise self.fail(f"missing required entry {key!r}; the file is not a complete charrnn_ext checkpoint")
        try:
            value = self.z[key]
            if not isinstance(value, np.ndarray):  # NpzFile hands out members without the .npy magic as bytes
                raise self.fail(f"entry {key!r} is corrupt (not a .npy array)")
            return value
        except CheckpointError:
            raise
        except ValueError as exc:
            if "pickle" in str(exc):  # object arrays need pickle
                raise self.fail(f"entry {key!r} cannot be read without pickle ({exc}); "
                                f"refusing to load it") from None
            raise self.fail(f"entry {key!r} is corrupt ({exc})") from None
        except _READ_ERRORS as exc:
            raise self.fail(f"entry {key!r} is corrupt ({type(exc).__name__}: {exc})") from None
        except MemoryError as exc:  # a (tampered) header declaring a huge shape
            raise self.fail(f"entry {key!r} declares an array too large to load ({exc}); "
                            f"the file is corrupt or not a charrnn_ext checkpoint") from None

    def string(self, key: str) -> str:
        a = self.get(key)
        if a.ndim != 0 or a.dtype.kind != "U":
            raise self.fail(f"entry {key!r} must be a 0-d unicode string, got dtype {a.dtype} shape {a.shape}")
        return str(a[()])

    def json(self, key: str) -> Any:
        try:
            return json.loads(self.string(key))
        except json.JSONDecodeError as exc:
            raise self.fail(f"entry {key!r} is not valid JSON ({exc})") from None

    def int(self, key: str) -> int:
        a = self.get(key)
        if a.ndim != 0 or a.dtype.kind not in "iu":
            raise self.fail(f"entry {key!r} must be a 0-d integer, got dtype {a.dtype} shape {a.shape}")
        return int(a[()])

    def float(self, key: str) -> float:
        a = self.get(key)
        if a.ndim != 0 or a.dtype.kind != "f":
            raise self.fail(f"entry {key!r} must be a 0-d float, got dtype {a.dtype} shape {a.shape}")
        return float(a[()])

    def array(self, key: str, shape: tuple[int, ...], dtype: np.dtype | None = None,
              kinds: str | None = None) -> np.ndarray:
        a = self.get(key)
        if a.shape != shape:
            raise self.fail(f"entry {key!r} has shape {a.shape}, expected {shape}")
        if dtype is not None and a.dtype != dtype:
            raise self.fail(f"entry {key!r} has dtype {a.dtype}, expected {dtype}")
        if kinds is not None and a.dtype.kind not in kinds:
            raise self.fail(f"entry {key!r} has dtype {a.dtype}, expected kind {kinds!r}")
        return np.ascontiguousarray(a)

    def param_set(self, prefix: str, K: int, m: int, dtype: np.dtype, what: str,
                  finite: bool = True, shapes: Mapping[str, tuple[int, ...]] | None = None
                  ) -> dict[str, np.ndarray]:
        out = {}
        for name, shape in (param_shapes(K, m) if shapes is None else shapes).items():
            arr = self.array(f"{prefix}{name}", shape, dtype)
            if finite and not np.all(np.isfinite(arr)):
                raise self.fail(f"{what} {name} contains NaN or infinite values")
            out[name] = np.array(arr, order="C", copy=True)
        return out


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` if the file does not exist and
    :class:`CheckpointError` (a ``ValueError``) if it is corrupt, written by a
    newer format version, or internally inconsistent.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"expected a checkpoint file (.npz) but got a directory: {p}")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, *_READ_ERRORS) as exc:
        raise CheckpointError(f"{p}: not a readable .npz checkpoint ({exc})") from None
    if not hasattr(z, "files"):
        raise CheckpointError(f"{p}: holds a single array, not a charrnn_ext checkpoint archive")
    with z:
        r = _Reader(p, z)
        if "format" not in r.keys or r.string("format") != FORMAT_NAME:
            raise r.fail(f"not a charrnn_ext checkpoint (no 'format' entry equal to {FORMAT_NAME!r})")
        version = r.int("format_version")
        if version > FORMAT_VERSION:
            raise r.fail(f"checkpoint format version {version} was written by a newer charrnn_ext; "
                         f"this version ({package_version()}) reads versions up to {FORMAT_VERSION}. "
                         f"Upgrade charrnn_ext to load it")
        if version < 1:
            raise r.fail(f"invalid checkpoint format version {version}")
        kind = r.string("kind")
        if kind not in _KINDS:
            raise r.fail(f"unknown checkpoint kind {kind!r}, expected one of {_KINDS}")
        meta = r.json("meta")
        if not isinstance(meta, dict):
            raise r.fail("entry 'meta' must hold a JSON object")
        raw_vocab = r.get("vocab")
        try:
            vocab = Vocabulary.from_array(raw_vocab)
        except (ValueError, TypeError) as exc:
            raise r.fail(f"invalid vocabulary: {exc}") from None
        K = vocab.size
        try:
            cell, layers = model_spec(meta)
        except (TypeError, ValueError):
            raise r.fail(f"meta has an invalid cell/layers ({meta.get('cell')!r}, {meta.get('layers')!r})") from None
        if cell not in CELLS or layers < 1:
            raise r.fail(f"meta has an invalid model: cell={cell!r} (expected one of {CELLS}), layers={layers}")
        # Trust no count from meta before it is matched by the archive itself:
        # a tampered layers=10**8 must not make us build 10**8 shapes.
        stored_layers = sum(1 for k in r.keys if k.startswith("param_l") and k.endswith(".Wx"))
        if not is_classic(cell, layers) and layers != stored_layers:
            raise r.fail(f"meta says layers={layers} but the archive holds {stored_layers} layer(s) of parameters")
        classic = is_classic(cell, layers)
        if version < 2 and not classic:
            raise r.fail(f"a version-{version} checkpoint cannot hold a {cell} network with {layers} layers")
        if classic:
            U = r.get("param_U")
            if U.ndim != 2 or U.shape[1] != K:
                raise r.fail(f"param_U has shape {U.shape}, expected (m, {K}) for the {K}-character vocabulary")
            m, dtype = int(U.shape[0]), U.dtype
        else:
            V = r.get("param_V")
            if V.ndim != 2 or V.shape[0] != K:
                raise r.fail(f"param_V has shape {V.shape}, expected ({K}, m) for the {K}-character vocabulary")
            m, dtype = int(V.shape[1]), V.dtype
        if m < 1:
            raise r.fail("hidden size m is 0")
        if dtype not in _FLOAT_DTYPES:
            raise r.fail(f"parameters must be float32 or float64, got {dtype}")
        hidden = meta.get("hidden")
        if hidden is not None and hidden != m:
            raise r.fail(f"meta says hidden={hidden} but the parameters have m={m}")
        shapes = layout_shapes(cell, layers, K, m)
        stray = sorted(k for k in r.keys if k.startswith("param_") and k[6:] not in shapes)
        if stray:
            raise r.fail(f"unexpected parameter entries {stray} for a {cell} network with {layers} layer(s)")
        params = r.param_set("param_", K, m, dtype, "parameter", shapes=shapes)
        start_h = None
        if "start_h" in r.keys:
            start_h = np.array(r.array("start_h", state_shape(cell, layers, m), dtype), copy=True)
            if not np.all(np.isfinite(start_h)):
                raise r.fail("start_h contains NaN or infinite values")
        state = None
        if kind == "training":
            state = _load_state(r, K, m, dtype, cell, layers, shapes)
    return Checkpoint(vocab=vocab, params=params, meta=meta, state=state, start_h=start_h,
                      format_version=version)


def _load_state(r: _Reader, K: int, m: int, dtype: np.dtype, cell: str = "rnn", layers: int = 1,
                shapes: Mapping[str, tuple[int, ...]] | None = None) -> TrainState:
    config = r.json("train_config")
    if not isinstance(config, dict):
        raise r.fail("train_config must hold a JSON object")
    optimizer = config.get("optimizer", "adagrad")
    batch_size = config.get("batch_size", 1)
    if optimizer not in OPTIMIZERS:
        raise r.fail(f"train_config names an unknown optimizer {optimizer!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise r.fail(f"train_config has an invalid batch_size {batch_size!r}")
    shapes = param_shapes(K, m) if shapes is None else shapes
    if is_classic(cell, layers) and optimizer == "adagrad":
        mem = r.param_set("adagrad_", K, m, dtype, "AdaGrad memory", shapes=shapes)
    else:
        template = init_opt_state({k: np.empty(v, dtype=dtype) for k, v in shapes.items()}, optimizer)
        mem = {k: r.param_set("opt:", K, m, dtype, "optimiser state", shapes={k: a.shape})[k]
               for k, a in template.items()}
    if any(np.any(v < 0) for k, v in mem.items() if not k.startswith("m:")):
        raise r.fail("optimiser memory (squared-gradient averages) holds negative values")
    t = r.int("opt_t") if "opt_t" in r.keys else 0
    if t < 0:
        raise r.fail(f"opt_t = {t} is negative")
    h = np.array(r.array("h", state_shape(cell, layers, m, batch_size), dtype), copy=True)
    if not np.all(np.isfinite(h)):
        raise r.fail("hidden state h contains NaN or infinite values")
    positions = None
    if batch_size > 1:
        positions = np.array(r.array("positions", (batch_size,), kinds="iu"), dtype=np.int64)
        if np.any(positions < 0):
            raise r.fail("positions holds negative offsets")
    ints = {k: r.int(k) for k in ("pos", "step", "wraps", "total_steps", "best_step")}
    for k in ("pos", "step", "wraps", "total_steps"):
        if ints[k] < 0:
            raise r.fail(f"{k} = {ints[k]} is negative")
    floats = {k: r.float(k) for k in ("smooth_loss", "last_loss", "best_loss")}
    best_params = best_h = None
    if ints["best_step"] >= 0:
        best_params = r.param_set("best_", K, m, dtype, "best parameter", shapes=shapes)
        best_h = np.array(r.array("best_h", state_shape(cell, layers, m, batch_size), dtype), copy=True)
        if not np.all(np.isfinite(best_h)):
            raise r.fail("best_h contains NaN or infinite values")
    corpus = r.json("corpus")
    if not isinstance(corpus, dict):
        raise r.fail("train_config and corpus must hold JSON objects")
    n_train = corpus.get("n_train")
    if not isinstance(n_train, int) or not isinstance(corpus.get("train_sha256"), str):
        raise r.fail("corpus identity lacks n_train / train_sha256")
    if ints["pos"] > n_train:
        raise r.fail(f"pos = {ints['pos']} is past the end of the {n_train}-character training text")
    n = r.get("hist_step").shape
    if len(n) != 1:
        raise r.fail("hist_step must be 1-D")
    cols = {
        "hist_step": r.array("hist_step", n, kinds="iu"),
        "hist_epoch": r.array("hist_epoch", n, kinds="iu"),
        "hist_loss": r.array("hist_loss", n, kinds="f"),
        "hist_smooth_loss": r.array("hist_smooth_loss", n, kinds="f"),
        "hist_val_loss": r.array("hist_val_loss", n, kinds="f"),
        "hist_val_chars": r.array("hist_val_chars", n, kinds="iu"),
    }
    history = [
        MetricRow(step=int(s), epoch=int(e), loss=float(lo), smooth_loss=float(sm),
                  val_loss=None if math.isnan(v) else float(v), val_chars=int(vc))
        for s, e, lo, sm, v, vc in zip(*(cols[k].tolist() for k in cols))
    ]
    raw_samples = r.json("samples")
    if not isinstance(raw_samples, list):
        raise r.fail("samples must hold a JSON list")
    try:
        samples = [
            SampleRecord(step=int(d["step"]), epoch=int(d["epoch"]), smooth_loss=d["smooth_loss"],
                         val_loss=d["val_loss"], val_chars=int(d["val_chars"]), seed=int(d["seed"]),
                         text=str(d["text"]))
            for d in raw_samples
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise r.fail(f"malformed sample record ({exc!r})") from None
    return TrainState(mem=mem, h=h, best_params=best_params, best_h=best_h, config=config, corpus=corpus,
                      history=history, samples=samples, t=t, positions=positions, **ints, **floats)
