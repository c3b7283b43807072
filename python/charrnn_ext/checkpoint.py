"""Checkpoint files: everything needed to use a model or to continue training it.

A checkpoint is a plain ``.npz`` archive that ``numpy.load(path,
allow_pickle=False)`` reads: arrays for the numbers, 0-d arrays for scalars and
0-d unicode arrays holding JSON for the structured metadata. Nothing is ever
pickled.

Keys of format version 3 (parameters always under their network names,
:mod:`charrnn_ext.layout`; states in the (streams, layers, S*m) shapes):

``format`` (0-d str)            always ``"charrnn_ext.checkpoint"``
``format_version`` (0-d int64)  :data:`FORMAT_VERSION`
``kind`` (0-d str)              ``"model"`` (parameters only) or ``"training"``
``meta`` (0-d str, JSON)        the model options (hidden, K, sig, seed, dtype,
                                cell, layers, forget_bias) and the package version
``vocab`` (int32, K)            code points in index order, see ``Vocabulary.to_array``
                                (sorted, except where fine-tuning appended characters)
``param_<name>``                the parameter arrays (``param_l0.Wx`` ... ``param_c``)
``start_h``, optional           (layers, S*m): the state sampling starts from

and, for ``kind == "training"`` only:

``opt:<slot>:<name>``, ``opt:t``  optimiser state and update counter
``h`` (B, layers, S*m), ``positions`` (B,) int64
                                the streams' states and offsets in their segments
``step``, ``wraps``, ``total_steps``, ``best_step`` (0-d int64)
``smooth_loss``, ``last_loss``, ``best_loss``, ``seconds``, ``budget_seconds``
                                (0-d float64, NaN = none)
``best_<name>``, ``best_h`` (layers, S*m)
                                the best model so far (if any)
``train_config``, ``corpus``, ``samples`` (0-d JSON)
                                training options, identity of the training text,
                                the text synthesised during training
``hist_step``, ``hist_epoch``, ``hist_loss``, ``hist_smooth_loss``,
``hist_val_loss``, ``hist_val_chars``
                                one entry per metrics row (NaN = not measured)

Versions 1 and 2 still load: the classic names (``param_U`` ...,
``adagrad_U`` ...) are renamed, states reshaped, ``pos`` becomes
``positions`` and ``opt_t`` the counter.

Loading trusts nothing in the file: every member's ``.npy`` header is read
and checked against what the rest of the checkpoint implies (shape, dtype,
and the member's compressed and uncompressed sizes) before its data is
read, and the archive as a whole must fit a memory budget proportional to
the model's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from .config import CELLS, OPTIMIZERS, TrainConfig, option, param_dtype
from .data import Vocabulary
from .fileio import atomic_write
from .layout import CLASSIC_NAMES, STATES, init_opt_state, param_shapes
from .resources import available_bytes
from .state import Checkpoint, MetricRow, SampleRecord, TrainState
from .version import package_version

__all__ = ["FORMAT_VERSION", "CheckpointError", "checkpoint_sha256", "load_checkpoint", "save_checkpoint"]

FORMAT_NAME = "charrnn_ext.checkpoint"
#: Version of the checkpoint layout written by this package. Files with a
#: larger number were written by a newer release and are refused.
FORMAT_VERSION = 3

_KINDS = ("model", "training")
# What the zipfile / numpy.lib.format readers raise on damaged archives.
_READ_ERRORS = (OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error, ValueError)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# JSON members other than the samples are small; a larger one is not ours.
_JSON_LIMIT = 1 << 20
# Rows of history a run may have besides its regular record points (one per
# session that ended between them).
_HISTORY_SLACK = 10_000
_MAX_VOCAB = 0x110000
_MAX_LAYERS = 64
# Room for what does not grow with the model: the history, the samples, the
# metadata and the vocabulary (a run's history is also bounded by its steps).
_ROOM = 256 << 20
# Deflate codes a 258-byte match in 2 bits at best: no member can decompress
# to more than 1032 times its compressed size (plus its block headers).
_DEFLATE_MAX_RATIO = 1032
_READ_CHUNK = 1 << 22


class CheckpointError(ValueError):
    """A file is not a usable checkpoint (corrupt, incompatible or inconsistent)."""


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def _c(a: Any, dtype: Any = None) -> np.ndarray:
    """a as a C-contiguous array, 0-d arrays staying 0-d (np.ascontiguousarray makes them 1-d)."""
    return np.asarray(a, dtype=dtype, order="C")


def _json0d(obj: Any) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True, allow_nan=True))


def _float(x: float | None) -> np.ndarray:
    return np.array(math.nan if x is None else float(x), dtype=np.float64)


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` (an ``.npz`` file) atomically, in format
    version :data:`FORMAT_VERSION`."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "kind": np.array(ckpt.kind),
        "meta": _json0d(dict(ckpt.meta, package_version=package_version())),
        "vocab": ckpt.vocab.to_array(),
    }
    for name, a in ckpt.params.items():
        arrays[f"param_{name}"] = _c(a)
    if ckpt.start_h is not None:
        arrays["start_h"] = _c(ckpt.start_h)
    s = ckpt.state
    if s is not None:
        for name, a in s.opt_state.items():
            arrays[f"opt:{name}"] = _c(a)
        arrays["h"] = _c(s.h)
        arrays["positions"] = _c(s.positions, dtype=np.int64)
        for key in ("step", "wraps", "total_steps", "best_step"):
            arrays[key] = np.array(int(getattr(s, key)), dtype=np.int64)
        for key in ("smooth_loss", "last_loss", "best_loss", "seconds", "budget_seconds"):
            arrays[key] = _float(getattr(s, key))
        if s.best_params is not None:
            for name, a in s.best_params.items():
                arrays[f"best_{name}"] = _c(a)
            arrays["best_h"] = _c(s.best_h)
        arrays["train_config"] = _json0d(s.config)
        arrays["corpus"] = _json0d(s.corpus)
        hist = s.history
        arrays["hist_step"] = np.array([r.step for r in hist], dtype=np.int64)
        arrays["hist_epoch"] = np.array([r.epoch for r in hist], dtype=np.int64)
        arrays["hist_loss"] = np.array([r.loss for r in hist], dtype=np.float64)
        arrays["hist_smooth_loss"] = np.array([r.smooth_loss for r in hist], dtype=np.float64)
        arrays["hist_val_loss"] = np.array(
            [math.nan if r.val_loss is None else r.val_loss for r in hist], dtype=np.float64
        )
        arrays["hist_val_chars"] = np.array([r.val_chars for r in hist], dtype=np.int64)
        arrays["samples"] = _json0d(
            [
                {
                    "step": r.step,
                    "epoch": r.epoch,
                    "smooth_loss": r.smooth_loss,
                    "val_loss": r.val_loss,
                    "val_chars": r.val_chars,
                    "seed": str(r.seed),
                    "text": r.text,
                }
                for r in s.samples
            ]
        )
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Reading members safely
# ---------------------------------------------------------------------------


class _Archive:
    """The members of an .npz archive, read one at a time after their header
    and their sizes in the archive have been checked against what the caller
    expects: nothing is decompressed beyond a member's header before that."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, budget: int):
        self.path = path
        self.zf = zf
        self.size = path.stat().st_size
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                self.members[info.filename[:-4]] = info
        self.keys = set(self.members)
        self.budget = budget  # bytes the arrays read so far may take in all
        self._used = 0

    def fail(self, msg: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {msg}")

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """Errors of the zip and .npy readers as a CheckpointError naming the entry."""
        try:
            yield
        except CheckpointError:
            raise
        except _READ_ERRORS as exc:
            raise self.fail(f"entry {key!r} is corrupt ({type(exc).__name__}: {exc})") from None
        except MemoryError:
            raise self.fail(f"entry {key!r} is too large to load") from None

    def _info(self, key: str) -> zipfile.ZipInfo:
        """The directory record of a member, refused if its sizes are impossible."""
        if key not in self.keys:
            raise self.fail(f"missing required entry {key!r}; the file is not a complete charrnn_ext checkpoint")
        info = self.members[key]
        method, packed, size = info.compress_type, info.compress_size, info.file_size
        if method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            raise self.fail(
                f"entry {key!r} is compressed with zip method {method}; the entries of an .npz "
                f"checkpoint are stored or deflated"
            )
        if packed > self.size:
            raise self.fail(
                f"entry {key!r} is corrupt (it declares {packed:,} compressed bytes in a file of {self.size:,})"
            )
        if method == zipfile.ZIP_STORED and packed != size:
            raise self.fail(
                f"entry {key!r} is corrupt (stored, but {packed:,} bytes in the archive for {size:,} declared)"
            )
        if method == zipfile.ZIP_DEFLATED and size > _DEFLATE_MAX_RATIO * packed + 1024:
            raise self.fail(
                f"entry {key!r} is corrupt (it declares {size:,} bytes from {packed:,} compressed "
                f"bytes, more than deflate can produce)"
            )
        return info

    def _header(self, key: str, fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except _READ_ERRORS as exc:
            raise self.fail(f"entry {key!r} is corrupt (not a .npy array: {exc})") from None
        if fortran:
            raise self.fail(f"entry {key!r} is stored in Fortran order; charrnn_ext writes C order")
        if dtype.hasobject:
            raise self.fail(f"entry {key!r} holds Python objects (it would need pickle); refusing to load it")
        return tuple(int(d) for d in shape), dtype

    def peek(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of a member from its header alone."""
        info = self._info(key)
        with self._reading(key), self.zf.open(info) as fh:
            return self._header(key, fh)

    def _checked(
        self,
        key: str,
        info: zipfile.ZipInfo,
        fh: IO[bytes],
        shape: tuple[int, ...] | None,
        dtype: np.dtype | None,
        kinds: str | None,
        max_bytes: int | None,
    ) -> tuple[tuple[int, ...], np.dtype, int]:
        """The member's header, checked against the expectations and its size in the archive."""
        got_shape, got_dtype = self._header(key, fh)
        if shape is not None and got_shape != shape:
            raise self.fail(f"entry {key!r} has shape {got_shape}, expected {shape}")
        if dtype is not None and got_dtype != dtype:
            raise self.fail(f"entry {key!r} has dtype {got_dtype}, expected {dtype}")
        if kinds is not None and got_dtype.kind not in kinds:
            raise self.fail(f"entry {key!r} has dtype {got_dtype}, expected kind {kinds!r}")
        nbytes = math.prod(got_shape) * got_dtype.itemsize
        if max_bytes is not None and nbytes > max_bytes:
            raise self.fail(
                f"entry {key!r} declares {nbytes:,} bytes, more than its limit of "
                f"{max_bytes:,}; the file is corrupt or not a charrnn_ext checkpoint"
            )
        if info.file_size != fh.tell() + nbytes:
            raise self.fail(
                f"entry {key!r} is {info.file_size:,} bytes in the archive but its header "
                f"declares {fh.tell() + nbytes:,}; the file is corrupt"
            )
        return got_shape, got_dtype, nbytes

    def check(
        self, key: str, shape: tuple[int, ...] | None = None, dtype: np.dtype | None = None, kinds: str | None = None
    ) -> None:
        """Check a member's header and sizes without reading its data."""
        info = self._info(key)
        with self._reading(key), self.zf.open(info) as fh:
            self._checked(key, info, fh, shape, dtype, kinds, None)

    def check_total(self) -> None:
        """Every member's directory record must be possible, and the sizes
        all members declare must fit the budget and the memory available,
        before any of them is read."""
        for key in self.members:
            self._info(key)
        declared = sum(info.file_size for info in self.members.values())
        if declared > self.budget:
            largest = max(self.members, key=lambda k: self.members[k].file_size)
            raise self.fail(
                f"its entries declare {declared:,} bytes in all (the largest, {largest!r}, "
                f"{self.members[largest].file_size:,}), more than a checkpoint of this model can need "
                f"({self.budget:,}); the file is corrupt or not a charrnn_ext checkpoint"
            )
        have = available_bytes()
        if have is not None and declared > 0.9 * have:
            raise self.fail(
                f"its entries declare {declared / 2**30:.2f} GiB but only {have / 2**30:.2f} GiB of memory is available"
            )

    def get(
        self,
        key: str,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype | None = None,
        kinds: str | None = None,
        max_bytes: int | None = None,
    ) -> np.ndarray:
        """The member ``key``, refused before its data is read if its header
        disagrees with ``shape`` / ``dtype`` / ``kinds``, if its sizes in the
        archive disagree with its header, or if it would exceed ``max_bytes``
        or the archive's budget. The data is read in slices straight into
        the array (no second copy)."""
        info = self._info(key)
        with self._reading(key), self.zf.open(info) as fh:
            got_shape, got_dtype, nbytes = self._checked(key, info, fh, shape, dtype, kinds, max_bytes)
            if self._used + nbytes > self.budget:
                raise self.fail(
                    f"the entries read so far and {key!r} take {self._used + nbytes:,} bytes, more "
                    f"than a checkpoint of this model can need ({self.budget:,}); the file is "
                    f"corrupt or not a charrnn_ext checkpoint"
                )
            self._used += nbytes
            out = np.empty(got_shape, dtype=got_dtype)
            raw = out.reshape(-1).view(np.uint8).data
            done = 0
            while done < nbytes:
                piece = fh.read(min(nbytes - done, _READ_CHUNK))
                if not piece:
                    break
                raw[done : done + len(piece)] = piece
                done += len(piece)
        if done != nbytes:
            raise self.fail(f"entry {key!r} is truncated")
        return out

    # -- typed scalars and JSON --------------------------------------------------

    def string(self, key: str, max_chars: int = _JSON_LIMIT) -> str:
        a = self.get(key, shape=(), kinds="U", max_bytes=4 * max_chars)
        return str(a[()])

    def json(self, key: str, max_chars: int = _JSON_LIMIT) -> Any:
        try:
            return json.loads(self.string(key, max_chars))
        except json.JSONDecodeError as exc:
            raise self.fail(f"entry {key!r} is not valid JSON ({exc})") from None
        except RecursionError:
            raise self.fail(f"entry {key!r} is nested too deeply to be charrnn_ext metadata") from None

    def integer(self, key: str) -> int:
        return int(self.get(key, shape=(), kinds="iu")[()])

    def real(self, key: str) -> float:
        return float(self.get(key, shape=(), kinds="f")[()])

    def finite(
        self, key: str, shape: tuple[int, ...], dtype: np.dtype, what: str, non_negative: bool = False
    ) -> np.ndarray:
        a = self.get(key, shape=shape, dtype=dtype)
        if not np.all(np.isfinite(a)):
            raise self.fail(f"{what} ({key!r}) contains NaN or infinite values")
        if non_negative and np.any(a < 0):
            raise self.fail(f"{what} ({key!r}) holds negative values")
        return a


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _model_spec(r: _Archive, meta: Mapping[str, Any], version: int) -> tuple[str, int]:
    cell, layers = meta.get("cell", "rnn"), meta.get("layers", 1)
    if cell not in CELLS or isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= _MAX_LAYERS:
        raise r.fail(
            f"meta field 'cell'/'layers' is invalid: cell={cell!r} (expected one of {CELLS}), "
            f"layers={layers!r} (expected an integer in [1, {_MAX_LAYERS}])"
        )
    if version < 2 and (cell, layers) != ("rnn", 1):
        raise r.fail(f"a version-{version} checkpoint cannot hold a {cell} network with {layers} layers")
    return cell, layers


def _names(classic: bool, cell: str, K: int, m: int, layers: int) -> dict[str, str]:
    """network name -> the name it has in the file."""
    back = {v: k for k, v in CLASSIC_NAMES.items()}
    return {n: (back.get(n, n) if classic else n) for n in param_shapes(cell, K, m, layers)}


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a checkpoint file's bytes (what a run fine-tuned from it records)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint`
    (format versions 1 to :data:`FORMAT_VERSION`).

    Raises ``FileNotFoundError`` if the file does not exist,
    ``IsADirectoryError`` for a folder, and :class:`CheckpointError` (a
    ``ValueError`` whose message starts with the path) if it is not a
    checkpoint, is corrupt, was written by a newer format version, or is
    internally inconsistent.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"expected a checkpoint file (.npz) but got a directory: {p}")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"{p}: not a regular file (a device or a pipe?); a checkpoint is an .npz file")
    try:
        zf = zipfile.ZipFile(p)
    except _READ_ERRORS as exc:
        hint = " (a text file? checkpoints are the .npz files of a run folder)" if p.suffix != ".npz" else ""
        raise CheckpointError(f"{p}: not a readable .npz checkpoint{hint} ({exc})") from None
    with zf:
        # The budget starts small: enough for the header entries; it grows once
        # the parameters' shapes are known.
        r = _Archive(p, zf, budget=64 << 20)
        if "format" not in r.keys or r.string("format", 64) != FORMAT_NAME:
            raise r.fail(f"not a charrnn_ext checkpoint (no 'format' entry equal to {FORMAT_NAME!r})")
        version = r.integer("format_version")
        if version > FORMAT_VERSION:
            raise r.fail(
                f"checkpoint format version {version} was written by a newer charrnn_ext; this version "
                f"({package_version()}) reads versions up to {FORMAT_VERSION}. Upgrade charrnn_ext to load it"
            )
        if version < 1:
            raise r.fail(f"invalid checkpoint format version {version}")
        kind = r.string("kind", 16)
        if kind not in _KINDS:
            raise r.fail(f"unknown checkpoint kind {kind!r}, expected one of {_KINDS}")
        meta = r.json("meta")
        if not isinstance(meta, dict):
            raise r.fail("entry 'meta' must hold a JSON object")
        vshape, _ = r.peek("vocab")
        if len(vshape) != 1 or not 1 <= vshape[0] <= _MAX_VOCAB:
            raise r.fail(f"entry 'vocab' has shape {vshape}; expected (K,) with 1 <= K <= {_MAX_VOCAB}")
        try:
            vocab = Vocabulary.from_array(r.get("vocab", kinds="iu"))
        except (ValueError, TypeError) as exc:
            raise r.fail(f"invalid vocabulary (entry 'vocab'): {exc}") from None
        K = vocab.size
        cell, layers = _model_spec(r, meta, version)
        classic = "param_U" in r.keys
        stored_layers = sum(1 for k in r.keys if k.startswith("param_l") and k.endswith(".Wx"))
        if not classic and layers != stored_layers:
            raise r.fail(
                f"meta field 'layers' says {layers} but the archive holds {stored_layers} layer(s) of parameters"
            )
        if classic and (cell, layers) != ("rnn", 1):
            raise r.fail(
                f"the archive holds classic parameters (param_U ...) but meta describes a {cell} network "
                f"with {layers} layers"
            )
        ref, _ref_shape = ("param_U", (None, K)) if classic else ("param_V", (K, None))
        shape, dtype = r.peek(ref)
        if len(shape) != 2 or (classic and shape[1] != K) or (not classic and shape[0] != K):
            raise r.fail(
                f"entry {ref!r} has shape {shape}; expected {('(m, %d)' if classic else '(%d, m)') % K} "
                f"for the {K}-character vocabulary"
            )
        m = shape[0] if classic else shape[1]
        if not 1 <= m <= int(option("hidden").high or 0):
            raise r.fail(
                f"entry {ref!r} has shape {shape}: a hidden size of {m}, outside the range of --hidden "
                f"{option('hidden').range_text()}"
            )
        if dtype not in _FLOAT_DTYPES:
            raise r.fail(f"parameters must be float32 or float64, got {dtype} (entry {ref!r})")
        _check_meta(r, meta, K, m, dtype)
        shapes = param_shapes(cell, K, m, layers)
        names = _names(classic, cell, K, m, layers)
        stray = sorted(k for k in r.keys if k.startswith("param_") and k[6:] not in names.values())
        if stray:
            raise r.fail(f"unexpected parameter entries {stray} for a {cell} network with {layers} layer(s)")
        cfg = _train_config(r) if kind == "training" else None
        # The budget: parameters, best parameters and up to two optimiser
        # slots (6 copies leave room), the states of the streams, and fixed
        # room for the history, the texts and the vocabulary. Everything the
        # archive declares must fit in it before anything is read, and every
        # parameter's header must agree with the model before any of them is.
        W = STATES[cell] * m
        streams = 1 if cfg is None else cfg.batch_size
        model_bytes = sum(math.prod(s) for s in shapes.values()) * dtype.itemsize
        r.budget = 6 * model_bytes + (streams + 2) * (layers * W * dtype.itemsize + 8) + _ROOM
        r.check_total()
        for n in shapes:
            r.check(f"param_{names[n]}", shapes[n], dtype)
        params = {n: r.finite(f"param_{names[n]}", shapes[n], dtype, "parameter") for n in shapes}
        start_h = None
        if "start_h" in r.keys:
            start_h = r.finite("start_h", (m,) if classic else (layers, W), dtype, "start_h").reshape(layers, W)
        state = None
        if cfg is not None:
            state = _load_state(r, version, classic, cell, layers, K, m, dtype, shapes, names, cfg)
    return Checkpoint(vocab=vocab, params=params, meta=meta, state=state, start_h=start_h, format_version=version)


def _check_meta(r: _Archive, meta: Mapping[str, Any], K: int, m: int, dtype: np.dtype) -> None:
    """The model fields of ``meta`` (those present) agree with the arrays and lie in their options' ranges."""
    for name, actual in (("hidden", m), ("K", K)):
        value = meta.get(name)
        if value is not None and (isinstance(value, bool) or value != actual):
            what = "the parameters have m" if name == "hidden" else "the vocabulary has K"
            raise r.fail(f"meta field {name!r} says {value!r} but {what}={actual}")
    # a bfloat16 run keeps float32 master weights
    if meta.get("dtype") is not None and param_dtype(str(meta["dtype"])) != str(dtype):
        raise r.fail(f"meta field 'dtype' says {meta['dtype']!r} but the parameters are {dtype}")
    for name in ("sig", "seed", "forget_bias"):
        if name in meta:
            try:
                option(name).check(meta[name])
            except (TypeError, ValueError) as exc:
                raise r.fail(f"meta field {name!r} is invalid: {exc}") from None


def _train_config(r: _Archive) -> TrainConfig:
    config = r.json("train_config")
    if not isinstance(config, dict):
        raise r.fail("entry 'train_config' must hold a JSON object")
    try:
        cfg = TrainConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise r.fail(f"entry 'train_config' is invalid: {exc}") from None
    if cfg.optimizer not in OPTIMIZERS:  # pragma: no cover - TrainConfig checks it
        raise r.fail(f"train_config names an unknown optimizer {cfg.optimizer!r}")
    return cfg


def _load_state(
    r: _Archive,
    version: int,
    classic: bool,
    cell: str,
    layers: int,
    K: int,
    m: int,
    dtype: np.dtype,
    shapes: Mapping[str, tuple[int, ...]],
    names: Mapping[str, str],
    cfg: TrainConfig,
) -> TrainState:
    B, W = cfg.batch_size, STATES[cell] * m
    # optimiser state
    template = init_opt_state({n: np.empty(0) for n in shapes}, cfg.optimizer)
    opt_state: dict[str, np.ndarray] = {}
    for key in template:
        if key == "t":
            continue
        slot, _, name = key.partition(":")
        if version >= 3:
            stored = f"opt:{key}"
        elif classic and cfg.optimizer == "adagrad":
            stored = f"adagrad_{names[name]}"
        else:
            stored = f"opt:{slot}:{names[name]}"
        opt_state[key] = r.finite(stored, shapes[name], dtype, "optimiser state", non_negative=slot != "m")
    ints = {k: r.integer(k) for k in ("step", "wraps", "total_steps", "best_step")}
    # versions 1 and 2 kept no counter for the classic AdaGrad runs (one update per step)
    t_key = "opt:t" if version >= 3 else "opt_t"
    classic_adagrad = version < 3 and classic and cfg.optimizer == "adagrad"
    t = ints["step"] if classic_adagrad or t_key not in r.keys else r.integer(t_key)
    if t < 0:
        raise r.fail(f"the update counter ({t_key!r}) is negative: {t}")
    opt_state["t"] = np.array(t, dtype=np.int64)
    # the streams' states and positions
    for k in ("step", "wraps", "total_steps"):
        if ints[k] < 0:
            raise r.fail(f"{k} = {ints[k]} is negative")
    if ints["best_step"] < -1 or ints["best_step"] > ints["step"]:
        raise r.fail(f"best_step = {ints['best_step']} is outside [-1, step = {ints['step']}]")
    if version >= 3:
        h = r.finite("h", (B, layers, W), dtype, "hidden state")
        positions = r.get("positions", shape=(B,), kinds="iu").astype(np.int64)
    else:
        old_shape = ((m,) if B == 1 else (B, m)) if classic else (layers, W)
        h = r.finite("h", old_shape, dtype, "hidden state").reshape(B, layers, W)
        positions = (
            r.get("positions", shape=(B,), kinds="iu").astype(np.int64)
            if B > 1
            else np.array([r.integer("pos")], dtype=np.int64)
        )
    floats: dict[str, Any] = {k: r.real(k) for k in ("smooth_loss", "last_loss", "best_loss")}
    extra = {k: (r.real(k) if k in r.keys else math.nan) for k in ("seconds", "budget_seconds")}
    for key, needed in (
        ("smooth_loss", ints["step"] > 0),
        ("last_loss", ints["step"] > 0),
        ("best_loss", ints["best_step"] > 0),
    ):
        v = floats[key]
        if (needed or not math.isnan(v)) and not (math.isfinite(v) and v >= 0):
            raise r.fail(
                f"{key} is {v} after {ints['step']} updates (best at {ints['best_step']}); expected a "
                f"finite number >= 0" + ("" if needed else " or NaN")
            )
    seconds = 0.0 if math.isnan(extra["seconds"]) else extra["seconds"]
    budget = None if math.isnan(extra["budget_seconds"]) else extra["budget_seconds"]
    bad_budget = budget is not None and not (math.isfinite(budget) and budget > 0)
    if not (math.isfinite(seconds) and seconds >= 0) or bad_budget:
        raise r.fail(f"seconds = {seconds} / budget_seconds = {budget} must be finite, >= 0 and > 0")
    best_params = best_h = None
    if ints["best_step"] >= 0:
        best_params = {n: r.finite(f"best_{names[n]}", shapes[n], dtype, "best parameter") for n in shapes}
        if version >= 3 or not classic:
            best_h = r.finite("best_h", (layers, W), dtype, "best_h")
        else:
            best_h = r.finite("best_h", (m,) if B == 1 else (B, m), dtype, "best_h").reshape(B, m)[:1]
    corpus = r.json("corpus")
    if not isinstance(corpus, dict):
        raise r.fail("entry 'corpus' must hold a JSON object")
    n_train = corpus.get("n_train")
    if (
        isinstance(n_train, bool)
        or not isinstance(n_train, int)
        or n_train < 2
        or not isinstance(corpus.get("train_sha256"), str)
    ):
        raise r.fail("entry 'corpus' lacks a valid n_train / train_sha256")
    segment = n_train // B
    if np.any(positions < 0) or np.any(positions > segment):
        raise r.fail(f"positions {positions.tolist()} lie outside the streams' segments of {segment} characters")
    # history: one row per record point, at most one per log_every or
    # sample_every updates, plus the rows where sessions ended
    step = ints["step"]
    limit = step // min(cfg.log_every, cfg.sample_every) + step // max(cfg.log_every, cfg.sample_every) + _HISTORY_SLACK
    n_shape, _ = r.peek("hist_step")
    if len(n_shape) != 1 or n_shape[0] > limit:
        raise r.fail(f"entry 'hist_step' has shape {n_shape}; a run of {step} updates has at most {limit} metrics rows")
    n = n_shape[0]
    steps = r.get("hist_step", (n,), kinds="iu")
    if n and (steps[0] < 0 or steps[-1] > step or np.any(np.diff(steps) <= 0)):
        raise r.fail(f"entry 'hist_step' must increase strictly within [0, step = {step}]")
    cols = {
        "hist_step": steps,
        "hist_epoch": r.get("hist_epoch", (n,), kinds="iu"),
        "hist_loss": r.get("hist_loss", (n,), kinds="f"),
        "hist_smooth_loss": r.get("hist_smooth_loss", (n,), kinds="f"),
        "hist_val_loss": r.get("hist_val_loss", (n,), kinds="f"),
        "hist_val_chars": r.get("hist_val_chars", (n,), kinds="iu"),
    }
    history = [
        MetricRow(
            step=int(s),
            epoch=int(e),
            loss=float(lo),
            smooth_loss=float(sm),
            val_loss=None if math.isnan(v) else float(v),
            val_chars=int(vc),
        )
        for s, e, lo, sm, v, vc in zip(*(cols[k].tolist() for k in cols))
    ]
    n_samples = step // cfg.sample_every + _HISTORY_SLACK
    raw = r.json("samples", max_chars=n_samples * (6 * cfg.sample_chars + 300) + _JSON_LIMIT)  # \uXXXX escapes
    if not isinstance(raw, list) or len(raw) > n_samples:
        raise r.fail("entry 'samples' must hold a JSON list of at most one record per sample point")
    try:
        samples = [
            SampleRecord(
                step=int(d["step"]),
                epoch=int(d["epoch"]),
                smooth_loss=_opt_num(d["smooth_loss"]),
                val_loss=_opt_num(d["val_loss"]),
                val_chars=int(d["val_chars"]),
                seed=int(d["seed"]),
                text=str(d["text"]),
            )
            for d in raw
        ]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise r.fail(f"entry 'samples' holds a malformed record ({exc!r})") from None
    return TrainState(
        opt_state=opt_state,
        h=h,
        positions=positions,
        best_params=best_params,
        best_h=best_h,
        config=cfg.to_dict(),
        corpus=corpus,
        history=history,
        samples=samples,
        seconds=seconds,
        budget_seconds=budget,
        **ints,
        **floats,
    )


def _opt_num(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number or null, got {v!r}")
    return float(v)
