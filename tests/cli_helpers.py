"""Helpers of the tests that run the real command line in a child process
(importable as `cli_helpers`; see conftest.py): the command and its
environment, the one-error-line rule, a child measured for time and peak
memory, and checkpoint archives rewritten with tampered members."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format

from charrnn_ext.config import option
from conftest import TINY
from helpers import SANITIZED

CLI = [sys.executable, "-m", "charrnn_ext"]
# One BLAS thread in the children: their address space is capped (see measured)
CHILD_ENV = {
    **os.environ,
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "CHARRNN_TEST_NO_CAP": "1" if SANITIZED else "0",
}


def flags(**options) -> list[str]:
    """The command-line flags of option values: flags(seq_length=10) is ["--seq-length", "10"]."""
    return [a for name, value in options.items() for a in (option(name).flag, str(value))]


#: A tiny run on the command line (conftest.TINY, short samples, no progress bar).
TRAIN_TINY = [*flags(**TINY, sample_chars=20, passage_chars=20), "--no-progress"]


def run_cli(args, cwd=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=CHILD_ENV, **kw
    )


def one_error_line(stderr: str, start: str = "") -> str:
    """stderr holds status lines and exactly one error line, the last, and no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and stderr.rstrip("\n").splitlines()[-1] == errors[0], stderr
    assert errors[0].startswith("charrnn: error: " + start), stderr
    return errors[0][len("charrnn: error: ") :]


# The child is started by a small Python parent that reports its exit code,
# output, wall time and peak resident memory (ru_maxrss of its only child).
# The child's address space is capped at 3 GiB (not under the sanitizers), so
# that a regression fails with MemoryError instead of taking the machine's
# memory. The figures are printed for the record; the tests bound memory
# (bounded work) and time only loosely (a hang), never speed.
_MEASURE = r"""
import json, os, resource, subprocess, sys, time
def cap():
    if os.environ.get("CHARRNN_TEST_NO_CAP") != "1":
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True, preexec_fn=cap, timeout=600)
dt = time.perf_counter() - t
print(json.dumps({"code": r.returncode, "out": r.stdout, "err": r.stderr, "seconds": dt,
                  "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def bounded(r: dict, peak_mb: float) -> None:
    """A refusal that did its work in bounded memory and did not hang (the
    printed figures are the measurement; speed is not asserted)."""
    assert r["seconds"] < 60, r["seconds"]
    if not SANITIZED:
        assert r["peak_mb"] < peak_mb, r["peak_mb"]


def measured(args) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", _MEASURE, *CLI, *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=900,
        env=CHILD_ENV,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- archives with huge runs of deflated zeros, built in a second -------------

_BLOCK = 1 << 24
_ZEROS = bytes(_BLOCK)
_ZERO_BLOCK: list[bytes] = []


class _ZeroDeflater:
    """Stands in for zipfile's compressor while a member of zeros is written:
    each 16 MiB block of zeros becomes the same precomputed deflate output (a
    full flush makes blocks independent), so a 3 GB member takes about a
    second (the CRC) instead of a minute of zlib. The result is an ordinary
    deflated member (1028:1) that any zip reader decompresses."""

    def __init__(self):
        self._z = zlib.compressobj(9, zlib.DEFLATED, -15)

    def compress(self, data) -> bytes:
        if len(data) == _BLOCK and data == _ZEROS:
            if not _ZERO_BLOCK:
                z = zlib.compressobj(9, zlib.DEFLATED, -15)
                _ZERO_BLOCK.append(z.compress(_ZEROS) + z.flush(zlib.Z_FULL_FLUSH))
            return _ZERO_BLOCK[0]
        return self._z.compress(data) + self._z.flush(zlib.Z_FULL_FLUSH)

    def flush(self) -> bytes:
        return b"\x03\x00"  # an empty final block


def _write_zeros_member(zout: zipfile.ZipFile, name: str, descr: str, shape: tuple[int, ...]) -> None:
    """A deflated .npy member of the given shape, all zeros, written without building it."""
    head = io.BytesIO()
    npy_format.write_array_header_1_0(head, {"descr": descr, "fortran_order": False, "shape": shape})
    left = math.prod(shape) * np.dtype(descr).itemsize
    original = zipfile._get_compressor
    zipfile._get_compressor = lambda *a, **k: _ZeroDeflater()
    try:
        info = zipfile.ZipInfo(f"{name}.npy", date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(info, "w", force_zip64=True) as w:
            w.write(head.getvalue())
            while left:
                n = min(left, _BLOCK)
                w.write(_ZEROS if n == _BLOCK else bytes(n))
                left -= n
    finally:
        zipfile._get_compressor = original


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def rewrite_archive(src: Path, dst: Path, change=None, zeros=None, rename=None) -> Path:
    """Copy the archive src to dst (deflated), with change(arrays) applied,
    the members named in zeros ({name: (descr, shape)}) written as zeros and
    members renamed."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if change is not None:
        change(arrays)
    zeros = zeros or {}
    rename = rename or {}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for k, v in arrays.items():
            k = rename.get(k, k)
            if k in zeros:
                _write_zeros_member(zout, k, *zeros[k])
            else:
                zout.writestr(f"{k}.npy", npy_bytes(v))
    return dst


def json_update(a, key: str, **updates) -> None:
    d = json.loads(str(a[key]))
    d.update(updates)
    a[key] = np.array(json.dumps(d))


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
