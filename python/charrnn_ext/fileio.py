"""Writing files so that readers never see half of one, and fingerprints.

Every file of a run folder is written to a temporary file next to its
target (``.NAME.XXXXXXXX.tmp``), flushed and fsynced, then moved over the
target with ``os.replace``, and the folder is fsynced so that the rename
itself survives a power cut: a reader, or a process resuming after a crash,
sees the old or the new complete file, never a partial one.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "index_sha256", "remove_stale_temp_files"]


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


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it
    and move it over ``path`` in one step. On any error (KeyboardInterrupt
    included) the temporary file is removed and ``path`` is untouched."""
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
