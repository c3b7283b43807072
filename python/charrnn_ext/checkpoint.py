"""Checkpoint files: everything needed to use a model or to continue training it.

A checkpoint is a plain ``.npz`` archive that ``numpy.load(path,
allow_pickle=False)`` reads: arrays for the numbers, 0-d arrays for scalars and
0-d unicode arrays holding JSON for the structured metadata. Nothing is ever
pickled.

Keys of format version 1:

``format`` (0-d str)            always ``"charrnn_ext.checkpoint"``
``format_version`` (0-d int64)  :data:`FORMAT_VERSION`
``kind`` (0-d str)              ``"model"`` (parameters only) or ``"training"``
``meta`` (0-d str, JSON)        model hyper-parameters (hidden, sig, seed,
                                dtype), package version and free-form info
``vocab`` (int32, K)            code points, see ``Vocabulary.to_array``
``param_U`` ... ``param_c``     the five parameter arrays
``start_h`` (m,), optional      hidden state to start sampling/evaluation from
                                (the training state when the parameters were taken)

and, for ``kind == "training"`` only:

``adagrad_*``                   AdaGrad memory (sums of squared gradients)
``h`` (m,)                      hidden state carried to the next chunk
``pos``, ``step``, ``wraps``, ``total_steps``, ``best_step`` (0-d int64)
``smooth_loss``, ``last_loss``, ``best_loss`` (0-d float64, NaN = none yet)
``best_U`` ... ``best_c``, ``best_h``
                                parameters and hidden state of the best model (if any)
``train_config`` (0-d JSON)     training hyper-parameters
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
FORMAT_VERSION = 1

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

    @property
    def epoch(self) -> int:
        """1-based epoch of the last update (1 before any update)."""
        return self.wraps + 1


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
    for name in PARAM_NAMES:
        arrays[f"param_{name}"] = np.ascontiguousarray(ckpt.params[name])
    if ckpt.start_h is not None:
        arrays["start_h"] = np.ascontiguousarray(ckpt.start_h)
    s = ckpt.state
    if s is not None:
        for name in PARAM_NAMES:
            arrays[f"adagrad_{name}"] = np.ascontiguousarray(s.mem[name])
        arrays["h"] = np.ascontiguousarray(s.h)
        for key in ("pos", "step", "wraps", "total_steps", "best_step"):
            arrays[key] = np.array(int(getattr(s, key)), dtype=np.int64)
        for key in ("smooth_loss", "last_loss", "best_loss"):
            arrays[key] = np.array(float(getattr(s, key)), dtype=np.float64)
        if s.best_params is not None:
            for name in PARAM_NAMES:
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
                  finite: bool = True) -> dict[str, np.ndarray]:
        out = {}
        for name, shape in param_shapes(K, m).items():
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
        U = r.get("param_U")
        if U.ndim != 2 or U.shape[1] != K:
            raise r.fail(f"param_U has shape {U.shape}, expected (m, {K}) for the {K}-character vocabulary")
        m = int(U.shape[0])
        if m < 1:
            raise r.fail("hidden size m is 0")
        if U.dtype not in _FLOAT_DTYPES:
            raise r.fail(f"parameters must be float32 or float64, got {U.dtype}")
        dtype = U.dtype
        hidden = meta.get("hidden")
        if hidden is not None and hidden != m:
            raise r.fail(f"meta says hidden={hidden} but the parameters have m={m}")
        params = r.param_set("param_", K, m, dtype, "parameter")
        start_h = None
        if "start_h" in r.keys:
            start_h = np.array(r.array("start_h", (m,), dtype), copy=True)
            if not np.all(np.isfinite(start_h)):
                raise r.fail("start_h contains NaN or infinite values")
        state = None
        if kind == "training":
            state = _load_state(r, K, m, dtype)
    return Checkpoint(vocab=vocab, params=params, meta=meta, state=state, start_h=start_h,
                      format_version=version)


def _load_state(r: _Reader, K: int, m: int, dtype: np.dtype) -> TrainState:
    mem = r.param_set("adagrad_", K, m, dtype, "AdaGrad memory")
    if any(np.any(v < 0) for v in mem.values()):
        raise r.fail("AdaGrad memory holds negative values")
    h = np.array(r.array("h", (m,), dtype), copy=True)
    if not np.all(np.isfinite(h)):
        raise r.fail("hidden state h contains NaN or infinite values")
    ints = {k: r.int(k) for k in ("pos", "step", "wraps", "total_steps", "best_step")}
    for k in ("pos", "step", "wraps", "total_steps"):
        if ints[k] < 0:
            raise r.fail(f"{k} = {ints[k]} is negative")
    floats = {k: r.float(k) for k in ("smooth_loss", "last_loss", "best_loss")}
    best_params = best_h = None
    if ints["best_step"] >= 0:
        best_params = r.param_set("best_", K, m, dtype, "best parameter")
        best_h = np.array(r.array("best_h", (m,), dtype), copy=True)
    config = r.json("train_config")
    corpus = r.json("corpus")
    if not isinstance(config, dict) or not isinstance(corpus, dict):
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
                      history=history, samples=samples, **ints, **floats)
