"""Writing files so that readers never see half of one, reading back
files that may not be what they seem, and fingerprints.

Every file of a run folder is written to a temporary file next to its
target (``.NAME.XXXXXXXX.tmp``), flushed and fsynced, then moved over the
target with ``os.replace``, and the folder is fsynced so that the rename
itself survives a power cut: a reader, or a process resuming after a crash,
sees the old or the new complete file, never a partial one. A target that
exists and is not a regular file (a device, a FIFO, a folder, a symbolic
link) is refused rather than replaced.

Every file the package reads back from a folder (run folders, sweep
folders) goes through :func:`read_bounded`: it must be a regular file, its
size is checked before anything is read, and reading stops at the cap even
if the file grows meanwhile; a FIFO or a device never blocks or floods the
reader. :func:`check_fields` validates what was parsed, field by field, and
:func:`child_path` keeps a name read from a file inside its folder. Lock
files are opened by :func:`open_lock_file`, which never follows a link.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "UnreadableFile",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_fields",
    "check_output_path",
    "child_path",
    "index_sha256",
    "open_lock_file",
    "printable",
    "read_bounded",
    "read_json_file",
    "read_text_file",
    "remove_stale_temp_files",
]


class UnreadableFile(ValueError):
    """A file read back that is not what it should be; the message names it
    (and the field, for a parsed file). ``missing``: the file does not exist."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing


def printable(text: str, limit: int = 80) -> str:
    """``text`` for an error line: control and format characters (NUL, a
    right-to-left override, ...) escaped, cut to ``limit`` characters."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return out if len(text) <= limit else out[:limit] + "..."


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.
    A FIFO, a device or a folder is refused without blocking or reading
    from it, a file larger than the cap before anything is read (and one
    that grows past it while being read, as soon as it does).
    :class:`UnreadableFile` says ``path is not a readable <what> (why)``."""

    def fail(why: str, missing: bool = False) -> UnreadableFile:
        return UnreadableFile(f"{path} is not a readable {what} ({why})", missing)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise fail("it does not exist", missing=True) from None
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"it is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise fail(f"{st.st_size:,} bytes, more than the {max_bytes:,} such a file may hold")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise fail(f"it grew past the {max_bytes:,} bytes such a file may hold while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def read_text_file(path: str | os.PathLike[str], max_bytes: int, what: str = "text file") -> str:
    """A UTF-8 text file, read by :func:`read_bounded`."""
    data = read_bounded(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{path} is not a readable {what} ({exc})") from None


def read_json_file(path: str | os.PathLike[str], max_bytes: int, what: str = "JSON file") -> dict[str, Any]:
    """A JSON object file, read by :func:`read_bounded`."""
    text = read_text_file(path, max_bytes, what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"{path} is not a readable {what} ({exc})") from None
    except RecursionError:
        raise UnreadableFile(f"{path} is not a readable {what} (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise UnreadableFile(f"{path} must hold a JSON object")
    return obj


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "num": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict": (lambda v: isinstance(v, dict), "a JSON object"),
    "list": (lambda v: isinstance(v, list), "a JSON list"),
}


def check_fields(path: str | os.PathLike[str], obj: dict[str, Any], spec: dict[str, Any], prefix: str = "") -> None:
    """:class:`UnreadableFile` naming the file and the field if ``obj`` does
    not have the fields of ``spec``: a kind of ``_KINDS`` ("int" is >= 0,
    "num" an int or float), "?" after it allowing null or absence, or a
    nested spec for a JSON object."""
    for key, kind in spec.items():
        name, value = prefix + key, obj.get(key)
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise UnreadableFile(f"{path}: field {name!r} must be a JSON object, got {printable(repr(value), 60)}")
            check_fields(path, value, kind, name + ".")
            continue
        if value is None and kind.endswith("?"):
            continue
        ok, what = _KINDS[kind.rstrip("?")]
        if not ok(value):
            got = "missing" if key not in obj else printable(repr(value), 60)
            raise UnreadableFile(f"{path}: field {name!r} must be {what}, got {got}")


def child_path(folder: str | os.PathLike[str], name: str, what: str = "name") -> Path:
    """``folder/name`` for a ``name`` read from a file, which must be one
    plain component: never empty, ``.``, ``..``, absolute or holding a
    separator or NUL, so that the path cannot leave ``folder``."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "\x00" in name
        or "/" in name
        or (os.altsep is not None and os.altsep in name)
        or os.sep in name
    ):
        raise UnreadableFile(f"{what} {printable(repr(name), 60)} is not a plain name inside {folder}")
    return Path(folder) / name


def check_output_path(path: str | os.PathLike[str]) -> None:
    """Refuse an output ``path`` that exists and is not a regular file (a
    device, a FIFO, a folder, a symbolic link): writing would replace it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(f"{path} exists and is {_kind(st.st_mode)}; refusing to replace it with a file")


def open_lock_file(path: str | os.PathLike[str]) -> tuple[int, bool]:
    """Open (creating it if missing) the lock file ``path`` for reading and
    writing, never through a symbolic link, and only if it is a regular file;
    (descriptor, created)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        while True:
            try:
                fd, made = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
                break
            except FileExistsError:
                try:
                    fd, made = os.open(path, flags), False
                    break
                except FileNotFoundError:  # its holder removed it just now: create it
                    continue
    except OSError as exc:
        if os.path.islink(path):
            raise UnreadableFile(f"lock file {path} is a symbolic link; refusing to write through it") from None
        raise UnreadableFile(f"lock file {path} cannot be opened ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnreadableFile(f"lock file {path} is {_kind(mode)}, not a regular file; refusing to use it")
    return fd, made


def _read_umask() -> int:
    """The process's umask: from /proc on Linux, which leaves it alone; else
    by setting and restoring it (a moment in which another thread creating a
    file would get 0o022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """Permissions a normally created file gets (0o666 minus the umask, read
    at each write: the process may change it)."""
    return 0o666 & ~_read_umask()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable, where the system allows it (not on Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a folder; the file itself is already synced
    finally:
        os.close(fd)


class _RecordingWriter:
    """A binary file whose first failed write is remembered: a writer that
    turns an OSError of its file into its own error (torch.save raises
    "RuntimeError: unexpected pos" on a full disk) is then reported as the
    OSError it was."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it
    and move it over ``path`` in one step. On any error (KeyboardInterrupt
    included) the temporary file is removed and ``path`` is untouched. A
    ``path`` that exists and is not a regular file is refused. A failed write
    of the file (a full disk) is an OSError naming ``path``, whatever the
    ``write`` callable made of it."""
    target = Path(path)
    check_output_path(target)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    recorder: _RecordingWriter | None = None
    try:
        with os.fdopen(fd, "wb") as fh:
            recorder = _RecordingWriter(fh)
            write(recorder)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        cause = recorder.error if recorder is not None and recorder.error is not None else exc
        if isinstance(cause, OSError) and cause.errno is not None and not isinstance(exc, KeyboardInterrupt):
            raise OSError(cause.errno, f"cannot write {target}: {cause.strerror or cause}") from None
        raise
    _fsync_folder(folder)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes of
    ``folder/name`` left behind (a process killed between creating the
    temporary file and renaming it). Only for a folder no other process is
    writing to. Returns the deleted paths."""
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


def index_sha256(indices: np.ndarray) -> str:
    """SHA-256 of an index array as little-endian uint32, so that its dtype
    does not matter; hashed in slices (a 100 MB text is never widened whole)."""
    sha = hashlib.sha256()
    step = 1 << 20
    for start in range(0, indices.size, step):
        sha.update(np.ascontiguousarray(indices[start : start + step], dtype="<u4").tobytes())
    return sha.hexdigest()
