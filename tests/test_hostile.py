"""Hostile files: damaged, tampered or malicious checkpoints and bad training texts.

Each must be refused with a clear error that names the file and the problem,
through the API (load_checkpoint, CharRNN.load, load_corpus / fit) and the
command line (exit code 2, one `charrnn: error:` line, no traceback), and
nothing in a file may ever be executed (no pickle anywhere).
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest

import charrnn_ext
from charrnn_ext import cli
from charrnn_ext.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint
from charrnn_ext.data import corpus_from_string, load_corpus, load_text
from charrnn_ext.model import CharRNN
from cli_helpers import (
    bounded,
    folder_files,
    json_update,
    measured,
    npy_bytes,
    one_error_line,
    rewrite_archive,
    run_cli,
)
from conftest import SMALL_TEXT, TINY
from helpers import SANITIZED

M = 8  # hidden size of the fixture model; K = 24 characters in SMALL_TEXT
K = 24
NAMES = ("l0.Wx", "l0.Wh", "l0.b", "V", "c")  # the classic RNN's parameters (U, W, b, V, c)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    model = CharRNN.new(corpus_from_string(SMALL_TEXT), hidden=M, seed=3)
    model.fit(SMALL_TEXT, steps=60, out=out, **TINY)
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _tampered(run: Path, dst: Path, change) -> Path:
    arrays = _arrays(run / "last.npz")
    change(arrays)
    np.savez(dst, **arrays)
    return dst


def _refused(path: Path, message: str) -> None:
    """Both loaders raise CheckpointError with exactly '<path>: <message>'."""
    for load in (load_checkpoint, CharRNN.load):
        with pytest.raises(CheckpointError) as info:
            load(path)
        assert str(info.value) == f"{path}: {message}"


def _cli_error(capsys, *argv: str) -> str:
    """Run the CLI in-process, expect exit code 2 and return its single error line."""
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("charrnn: error: ")
    return line[len("charrnn: error: ") :]


class Payload:
    """Unpickling this calls open(path, "w"): it creates a marker file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- tampered archives: (name, change, exact message) ------------------------

TAMPERED = [
    (
        "wrong-shape",
        lambda a: a.update({"param_l0.Wh": np.zeros((M, M + 1))}),
        f"entry 'param_l0.Wh' has shape ({M}, {M + 1}), expected ({M}, {M})",
    ),
    (
        "vocab-vs-params",
        lambda a: a.update(vocab=a["vocab"][:-1]),
        f"entry 'param_V' has shape ({K}, {M}); expected ({K - 1}, m) for the {K - 1}-character vocabulary",
    ),
    (
        "missing-key",
        lambda a: a.pop("param_V"),
        "missing required entry 'param_V'; the file is not a complete charrnn_ext checkpoint",
    ),
    (
        "nan-params",
        lambda a: a.update({"param_l0.Wh": np.full((M, M), np.nan)}),
        "parameter ('param_l0.Wh') contains NaN or infinite values",
    ),
    (
        "inf-adagrad",
        lambda a: a.update({"opt:M:l0.Wx": np.full((M, K), np.inf)}),
        "optimiser state ('opt:M:l0.Wx') contains NaN or infinite values",
    ),
    (
        "negative-adagrad",
        lambda a: a.update({"opt:M:c": np.full(K, -1.0)}),
        "optimiser state ('opt:M:c') holds negative values",
    ),
    (
        "inf-state",
        lambda a: a.update(h=np.full((1, 1, M), np.inf)),
        "hidden state ('h') contains NaN or infinite values",
    ),
    (
        "int-params",
        lambda a: a.update({f"param_{k}": a[f"param_{k}"].astype(np.int64) for k in NAMES}),
        "parameters must be float32 or float64, got int64 (entry 'param_V')",
    ),
    (
        "float16-params",
        lambda a: a.update({f"param_{k}": a[f"param_{k}"].astype(np.float16) for k in NAMES}),
        "parameters must be float32 or float64, got float16 (entry 'param_V')",
    ),
    (
        "mixed-dtypes",
        lambda a: a.update({"param_l0.Wh": a["param_l0.Wh"].astype(np.float32)}),
        "entry 'param_l0.Wh' has dtype float32, expected float64",
    ),
    (
        "not-our-format",
        lambda a: a.update(format=np.array("something.else")),
        "not a charrnn_ext checkpoint (no 'format' entry equal to 'charrnn_ext.checkpoint')",
    ),
    (
        "unknown-kind",
        lambda a: a.update(kind=np.array("weights")),
        "unknown checkpoint kind 'weights', expected one of ('model', 'training')",
    ),
    ("negative-step", lambda a: a.update(step=np.array(-5, dtype=np.int64)), "step = -5 is negative"),
    (
        "version-zero",
        lambda a: a.update(format_version=np.array(0, dtype=np.int64)),
        "invalid checkpoint format version 0",
    ),
    (
        "too-many-layers",
        lambda a: a.update(meta=np.array(json.dumps({**json.loads(str(a["meta"])), "layers": 65}))),
        "meta field 'cell'/'layers' is invalid: cell='rnn' (expected one of ('rnn', 'lstm', 'gru')), layers=65 "
        "(expected an integer in [1, 64])",
    ),
    (
        "unknown-cell",
        lambda a: a.update(meta=np.array(json.dumps({**json.loads(str(a["meta"])), "cell": "gpt"}))),
        "meta field 'cell'/'layers' is invalid: cell='gpt' (expected one of ('rnn', 'lstm', 'gru')), layers=1 "
        "(expected an integer in [1, 64])",
    ),
    ("meta-not-object", lambda a: a.update(meta=np.array("[1, 2]")), "entry 'meta' must hold a JSON object"),
    (
        "meta-nested-deeply",
        lambda a: a.update(meta=np.array("[" * 100_000 + "]" * 100_000)),
        "entry 'meta' is nested too deeply to be charrnn_ext metadata",
    ),
    (
        "surrogate-vocab",
        lambda a: a.update(vocab=np.array([0xD800] + list(range(0xE000, 0xE000 + K - 1)))),
        "invalid vocabulary (entry 'vocab'): vocabulary array holds the surrogate code point U+D800, which is not a "
        "character (no UTF-8 text contains one)",
    ),
    (
        "history-too-long",
        lambda a: a.update(hist_step=np.arange(10**6, dtype=np.int64)),
        "entry 'hist_step' has shape (1000000,); a run of 60 updates has at most 10004 metrics rows",
    ),
    (
        "bad-sample-seed",
        lambda a: a.update(
            samples=np.array(
                json.dumps(
                    [
                        {
                            "step": 0,
                            "epoch": 1,
                            "smooth_loss": None,
                            "val_loss": None,
                            "val_chars": 0,
                            "seed": "x",
                            "text": "a",
                        }
                    ]
                )
            )
        ),
        "entry 'samples' holds a malformed record (ValueError(\"invalid literal for int() with base 10: 'x'\"))",
    ),
]


@pytest.mark.parametrize("name, change, message", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_checkpoint_refused(name, change, message, run, tmp_path, capsys):
    bad = _tampered(run, tmp_path / f"{name}.npz", change)
    _refused(bad, message)
    assert _cli_error(capsys, "sample", str(bad), "-n", "5") == f"{bad}: {message}"


def test_future_format_version_refused(run, tmp_path, capsys):
    bad = _tampered(
        run, tmp_path / "future.npz", lambda a: a.update(format_version=np.array(FORMAT_VERSION + 1, dtype=np.int64))
    )
    message = (
        f"checkpoint format version {FORMAT_VERSION + 1} was written by a newer charrnn_ext; this version "
        f"({charrnn_ext.checkpoint.package_version()}) reads versions up to {FORMAT_VERSION}. "
        f"Upgrade charrnn_ext to load it"
    )
    _refused(bad, message)
    assert _cli_error(capsys, "sample", str(bad)) == f"{bad}: {message}"


def test_truncated_checkpoint_refused(run, tmp_path, capsys):
    raw = (run / "last.npz").read_bytes()
    for cut in (0.9, 0.5, 0.1):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(raw[: int(len(raw) * cut)])
        _refused(bad, "not a readable .npz checkpoint (File is not a zip file)")
    assert _cli_error(capsys, "sample", str(bad)) == f"{bad}: not a readable .npz checkpoint (File is not a zip file)"


def test_empty_file_zip_and_single_array_refused(tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _refused(empty, "not a readable .npz checkpoint (File is not a zip file)")
    assert (
        _cli_error(capsys, "sample", str(empty)) == f"{empty}: not a readable .npz checkpoint (File is not a zip file)"
    )

    plain_zip = tmp_path / "plain.npz"
    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("readme.txt", "a zip, but not numpy")
    msg = "not a charrnn_ext checkpoint (no 'format' entry equal to 'charrnn_ext.checkpoint')"
    _refused(plain_zip, msg)
    assert _cli_error(capsys, "sample", str(plain_zip)) == f"{plain_zip}: {msg}"

    fake_member = tmp_path / "fake_member.npz"  # the right member name, but no .npy inside
    with zipfile.ZipFile(fake_member, "w") as zf:
        zf.writestr("format.npy", "not an npy file")
    with pytest.raises(CheckpointError, match=re.escape(f"{fake_member}: entry 'format' is corrupt (")):
        load_checkpoint(fake_member)

    single = tmp_path / "single.npz"  # np.save's .npy under an .npz name
    with open(single, "wb") as fh:
        np.save(fh, np.zeros(3))
    _refused(single, "not a readable .npz checkpoint (File is not a zip file)")


def test_directory_and_missing_file(tmp_path, capsys):
    d = tmp_path / "adir.npz"
    d.mkdir()
    message = f"expected a checkpoint file (.npz) but got a directory: {d}"
    with pytest.raises(IsADirectoryError, match=re.escape(message)):
        load_checkpoint(d)
    # CharRNN.load and the CLI take a directory for a run folder and look for its best.npz
    with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint not found: {d / 'best.npz'}")):
        CharRNN.load(d)
    assert _cli_error(capsys, "sample", str(d)) == f"checkpoint not found: {d / 'best.npz'}"
    gone = tmp_path / "gone.npz"
    for load in (load_checkpoint, CharRNN.load):
        with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint not found: {gone}")):
            load(gone)
    assert _cli_error(capsys, "sample", str(gone)) == f"checkpoint not found: {gone}"


HUGE = [  # member, declared shape, message (each refused from the header, before any data is read)
    ("param_l0.Wx", (3_000_000_000, 10), "entry 'param_l0.Wx' has shape (3000000000, 10), expected (8, 24)"),
    ("vocab", (3_000_000_000,), "entry 'vocab' has shape (3000000000,); expected (K,) with 1 <= K <= 1114112"),
    ("hist_loss", (3_000_000_000,), "entry 'hist_loss' has shape (3000000000,), expected (3,)"),
    ("h", (1, 1, 2**40), "entry 'h' has shape (1, 1, 1099511627776), expected (1, 1, 8)"),
]


@pytest.mark.parametrize("member, shape, message", HUGE, ids=[h[0] for h in HUGE])
def test_huge_declared_shape_refused_without_allocating(run, tmp_path, member, shape, message):
    """A member header claiming a 224 GiB array in a 100 KB file."""
    import tracemalloc

    bad = tmp_path / "huge.npz"
    with zipfile.ZipFile(run / "last.npz") as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == f"{member}.npy":
                buf = io.BytesIO()
                npy_format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
                data = buf.getvalue() + b"\0" * 64
            zout.writestr(info.filename, data)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == f"{bad}: {message}"
    assert peak < 20 << 20  # nothing near the declared size was allocated


def test_declared_size_disagreeing_with_the_archive_is_refused(run, tmp_path):
    """A header whose shape fits but whose data is missing from the member."""
    bad = tmp_path / "short.npz"
    with zipfile.ZipFile(run / "last.npz") as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "param_V.npy":
                size = len(data)  # the header and K x m = 24 x 8 float64
                data = data[:-8]  # one float64 short
            zout.writestr(info.filename, data)
    assert size > 24 * 8 * 8
    _refused(
        bad,
        f"entry 'param_V' is {size - 8:,} bytes in the archive but its header declares {size:,}; the file is corrupt",
    )


def test_random_byte_flips_are_refused_or_harmless(run, tmp_path):
    """300 seeded corruptions (1-8 bytes XOR-ed anywhere, or in the zip
    headers): each load either raises CheckpointError naming the file or
    returns exactly the original contents (a flip in an unused header field)."""
    src = run / "last.npz"
    raw = src.read_bytes()
    ref = load_checkpoint(src)
    central = raw.find(b"PK\x01\x02")
    refused = harmless = 0
    bad = tmp_path / "flipped.npz"
    for seed in range(300):
        rng = np.random.default_rng(seed)
        b = bytearray(raw)
        lo = central if seed % 2 else 0
        for i in rng.integers(lo, len(b), int(rng.integers(1, 9))):
            b[i] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(b))
        try:
            got = load_checkpoint(bad)
        except CheckpointError as exc:
            assert str(exc).startswith(f"{bad}: "), exc
            refused += 1
            continue
        assert got.vocab == ref.vocab and got.state.step == ref.state.step
        assert all(np.array_equal(got.params[k], ref.params[k]) for k in NAMES)
        assert all(np.array_equal(got.state.opt_state[k], ref.state.opt_state[k]) for k in ref.state.opt_state)
        assert np.array_equal(got.state.h, ref.state.h) and got.state.history == ref.state.history
        harmless += 1
    assert refused > 200 and refused + harmless == 300


# Central directory header of the first member (format.npy): +6 "version
# needed", +8 flags, +10 compression method. zipfile raises NotImplementedError
# (unknown method, patched data, strong encryption, newer zip version),
# RuntimeError (encrypted) or zlib.error (stored data read as deflate) for these.
HEADER_BITS = [
    (10, 0, "entry 'format' is corrupt (NotImplementedError: "),
    (10, 3, "entry 'format' is corrupt ("),
    (8, 0, "entry 'format' is corrupt (RuntimeError: "),
    (8, 5, "entry 'format' is corrupt (NotImplementedError: "),
    (8, 6, "entry 'format' is corrupt (NotImplementedError: "),
    (6, 6, "not a readable .npz checkpoint (zip file version "),
]


@pytest.mark.parametrize("offset, bit, message", HEADER_BITS, ids=[f"+{o}-bit{b}" for o, b, _ in HEADER_BITS])
def test_flipped_zip_header_fields_give_a_checkpoint_error(run, tmp_path, offset, bit, message, capsys):
    raw = bytearray((run / "last.npz").read_bytes())
    central = raw.find(b"PK\x01\x02")
    raw[central + offset] ^= 1 << bit
    bad = tmp_path / "flags.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert str(info.value).startswith(f"{bad}: {message}")
    assert _cli_error(capsys, "sample", str(bad)).startswith(f"{bad}: {message}")


# -- pickles: refused and never executed ---------------------------------------


def test_object_array_with_a_pickle_payload_is_never_executed(run, tmp_path, capsys):
    live, marker = tmp_path / "LIVE", tmp_path / "PWNED"
    # the payload is real: numpy.load with allow_pickle=True runs it
    proof = tmp_path / "proof.npz"
    np.savez(proof, x=np.array([Payload(str(live))], dtype=object), allow_pickle=True)
    with np.load(proof, allow_pickle=True) as z:
        z["x"]
    assert live.exists()

    for key in ("meta", "param_l0.Wx", "vocab", "samples", "opt:t"):
        bad = _tampered(
            run,
            tmp_path / f"obj_{key}.npz",
            lambda a, key=key: a.update({key: np.array([Payload(str(marker))], dtype=object)}),
        )
        msg = f"entry {key!r} holds Python objects (it would need pickle); refusing to load it"
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(bad)
        assert str(info.value) == f"{bad}: {msg}"
        with pytest.raises(CheckpointError):
            CharRNN.load(bad)
        assert _cli_error(capsys, "sample", str(bad)).startswith(f"{bad}: ")
        # the resume path reads last.npz the same way
        folder = tmp_path / f"run_{key}"
        folder.mkdir()
        os.replace(bad, folder / "last.npz")
        assert _cli_error(capsys, "train", "--resume", str(folder), "--no-progress") == f"{folder / 'last.npz'}: {msg}"
    assert not marker.exists()


def test_raw_pickle_file_is_never_executed(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "model.npz"
    bad.write_bytes(pickle.dumps(Payload(str(marker))))
    for load in (load_checkpoint, CharRNN.load):
        with pytest.raises(CheckpointError, match=re.escape(f"{bad}: not a readable .npz checkpoint (")) as info:
            load(bad)
        assert "pickle" in str(info.value)
    assert _cli_error(capsys, "sample", str(bad)).startswith(f"{bad}: not a readable .npz checkpoint (")
    assert not marker.exists()


def test_package_never_loads_with_pickle():
    """Checked on the syntax tree of every module: nothing imports a
    pickle-based loader (torch.py imports pickle only to name
    pickle.UnpicklingError, and reads with torch.load(weights_only=True));
    nothing calls numpy.load (checkpoints are read member by member from the
    zip archive) or numpy's pickle-capable readers; np.frombuffer appears only
    with a constant dtype (checkpoint members are read into arrays of their
    header's dtype, which is refused first if it holds objects)."""
    root = Path(charrnn_ext.__file__).parent
    frombuffer: dict[str, list[str]] = {}
    torch_loads = 0
    for f in sorted(root.rglob("*.py")):  # subpackages included
        tree = ast.parse(f.read_text(), filename=str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            else:
                names = []
            banned = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"} & set(names)
            assert not banned or (f.name == "torch.py" and banned == {"pickle"} and isinstance(node, ast.Import)), f
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "pickle":
                assert (f.name, node.attr) == ("torch.py", "UnpicklingError"), (f.name, ast.unparse(node))
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            assert func not in (
                "np.fromfile",
                "numpy.fromfile",
                "np.lib.format.read_array",
                "np.load",
                "numpy.load",
                "np.lib.npyio.NpzFile",
                "pickle.loads",
                "pickle.load",
            ), (f.name, func)
            if func.endswith("frombuffer"):
                frombuffer.setdefault(f.name, []).append(ast.unparse(node))
            if func == "torch.load":
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, (
                    f.name,
                    node.lineno,
                )
                torch_loads += 1
    assert frombuffer == {"data.py": ["np.frombuffer(raw, dtype='<u4')"]}
    # checkpoint members are read into np.empty arrays of their header's dtype, refused first if it holds objects
    assert (root / "checkpoint.py").read_text().count("if dtype.hasobject:") == 1
    assert torch_loads == 1  # torch.py


# -- training texts ------------------------------------------------------------

TEXTS = [
    ("empty", b"", "text file is empty: {p}"),
    ("bom-only", b"\xef\xbb\xbf", "text file is empty: {p}"),
    (
        "latin-1",
        "caf\xe9 au lait".encode("latin-1"),
        "{p} is not valid UTF-8: invalid continuation byte at byte offset 3 (byte b'\\xe9')",
    ),
    (
        "binary",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        "{p} is not valid UTF-8: invalid start byte at byte offset 0 (byte b'\\x89')",
    ),
    (
        "one-char",
        b"a",
        "{p}: the training split has only 1 character(s) (1 in total, val_fraction=0.1); at least 2 are needed",
    ),
]


@pytest.mark.parametrize("name, data, message", TEXTS, ids=[t[0] for t in TEXTS])
def test_bad_text_refused(name, data, message, tmp_path, capsys):
    p = tmp_path / f"{name}.txt"
    p.write_bytes(data)
    with pytest.raises(ValueError) as info:
        load_corpus(p)
    assert str(info.value) == message.format(p=p)
    out = tmp_path / "out"
    assert _cli_error(
        capsys, "train", "--text", str(p), "--out", str(out), "--steps", "5", "--no-progress"
    ) == message.format(p=p)
    assert not out.exists()  # nothing written for a refused text


def test_text_shorter_than_seq_length_plus_one(tmp_path, capsys):
    p = tmp_path / "short.txt"
    p.write_text("abcdefghij")  # 10 characters, 9 for training after the 10% validation split
    msg = f"the training split of {str(p)!r} has 9 characters; seq_length=10 needs at least 11"
    c = load_corpus(p)
    with pytest.raises(ValueError) as info:
        CharRNN.new(c, hidden=4).fit(p, steps=1, seq_length=10)
    assert str(info.value) == msg
    out = tmp_path / "out"
    assert (
        _cli_error(
            capsys, "train", "--text", str(p), "--out", str(out), "--seq-length", "10", "--steps", "5", "--no-progress"
        )
        == msg
    )
    assert not out.exists()


def test_text_directory_and_missing_file(tmp_path, capsys):
    d = tmp_path / "texts"
    d.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        load_text(d)
    assert info.value.strerror == f"expected a text file but got a directory: {d}"
    assert _cli_error(capsys, "train", "--text", str(d), "--steps", "5", "--out", str(tmp_path / "o")) == (
        f"[Errno 21] expected a text file but got a directory: {d}: '{d}'"
    )
    gone = tmp_path / "gone.txt"
    with pytest.raises(FileNotFoundError) as info:
        load_corpus(gone)
    assert info.value.strerror == f"text file not found: {gone}"
    assert _cli_error(capsys, "train", "--text", str(gone), "--steps", "5", "--out", str(tmp_path / "o")) == (
        f"[Errno 2] text file not found: {gone}: '{gone}'"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_as_text_is_refused(tmp_path, capsys):
    """/dev/zero never ends: it is refused before anything is read."""
    out = tmp_path / "out"
    message = "/dev/zero is not a regular file (a device or a pipe?); give a UTF-8 text file"
    assert (
        _cli_error(capsys, "train", "--text", "/dev/zero", "--out", str(out), "--steps", "5", "--no-progress")
        == message
    )
    assert not out.exists()


@pytest.mark.skipif(not os.path.exists("/dev/zero") or sys.platform == "win32", reason="needs /dev/zero, rlimit")
@pytest.mark.skipif(SANITIZED, reason="the sanitizer's shadow memory cannot live under an address-space cap")
def test_device_as_checkpoint_is_refused_without_reading_it():
    """A device given as a checkpoint is refused before anything is read (in a child capped at 1 GiB of
    address space, so that reading /dev/zero to the end could not take the machine's memory)."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from charrnn_ext import cli\n"
        "sys.exit(cli.main(['sample', '/dev/zero', '-n', '5']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("charrnn: error: ") and "/dev/zero" in r.stderr, r.stderr


def test_cli_subprocess_prints_one_line_and_no_traceback(run, tmp_path):
    """The real command (not cli.main in-process) on a corrupt checkpoint and a bad text."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes((run / "last.npz").read_bytes()[:1000])
    r = subprocess.run(
        [sys.executable, "-m", "charrnn_ext", "sample", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"charrnn: error: {bad}: not a readable .npz checkpoint (File is not a zip file)\n"
    txt = tmp_path / "bad.txt"
    txt.write_bytes(b"\xff\xfe\x00a")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "charrnn_ext",
            "train",
            "--text",
            str(txt),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr == (
        f"charrnn: error: {txt} is not valid UTF-8: invalid start byte at byte offset 0 (byte b'\\xff')\n"
    )


# ---------------------------------------------------------------------------
# Tampered archives: sizes declared huge are refused before anything is read
# ---------------------------------------------------------------------------

HIST = {
    "hist_step": "<i8",
    "hist_epoch": "<i8",
    "hist_loss": "<f8",
    "hist_smooth_loss": "<f8",
    "hist_val_loss": "<f8",
    "hist_val_chars": "<i8",
}
ROWS = 30_000_000


@pytest.mark.parametrize("variant", ["as-reported", "step-raised-to-match"])
def test_tampered_last_npz_with_30m_history_rows_is_refused_fast_and_small(variant, run100, tmp_path):
    """a 1.9 MB last.npz whose hist_* columns are 30 M rows of
    deflated zeros made `charrnn train --resume` run 4 minutes at 17.5 GB.
    "as-reported" keeps the run's 60 updates; "step-raised-to-match" also
    sets step = total_steps = 30 M and log_every = 1, so that 30 M rows are
    what the step count allows (before the fix: refused only after reading
    480 MB, 2.3 s)."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(run100 / "config.json", folder / "config.json")

    def raise_step(a):
        if variant != "as-reported":
            a["step"] = a["total_steps"] = np.array(ROWS, dtype=np.int64)
            json_update(a, "train_config", log_every=1)

    bad = rewrite_archive(
        run100 / "last.npz", folder / "last.npz", raise_step, zeros={k: (d, (ROWS,)) for k, d in HIST.items()}
    )
    size_mb = bad.stat().st_size / 1e6
    with zipfile.ZipFile(bad) as zf:
        declared = sum(i.file_size for i in zf.infolist())
    assert 1.0 < size_mb < 2.5 and declared > 1.4e9  # 1.9 MB declaring 1.44 GB
    before = folder_files(folder)

    r = measured(["train", "--resume", folder, "--no-progress"])
    print(
        f"\n[tampered last.npz, {variant}] {size_mb:.2f} MB last.npz declaring {declared / 1e9:.2f} GB: "
        f"refused in {r['seconds']:.3f} s at {r['peak_mb']:.0f} MB peak"
    )
    assert r["code"] == 2 and r["out"] == ""
    msg = one_error_line(r["err"], f"{folder / 'last.npz'}: ")
    assert "'hist_" in msg
    bounded(r, 200)
    assert folder_files(folder) == before  # nothing written: no metrics.csv, no new last.npz

    # the API refuses it the same way
    with pytest.raises(CheckpointError, match=re.escape(f"{bad}: ")):
        CharRNN.load(bad)


def _classic_v2(run: Path, dst: Path, zeros=None, **meta) -> Path:
    """run's best.npz as a format-2 file with the classic names (param_U ...)."""

    def change(a):
        a["format_version"] = np.array(2, dtype=np.int64)
        a["start_h"] = a["start_h"].reshape(-1)  # (m,) in the classic layout
        json_update(a, "meta", **meta)

    return rewrite_archive(
        run / "best.npz",
        dst,
        change,
        zeros=zeros,
        rename={"param_l0.Wx": "param_U", "param_l0.Wh": "param_W", "param_l0.b": "param_b"},
    )


@pytest.mark.parametrize("variant", ["as-reported", "huge-vocabulary"])
def test_best_npz_whose_param_u_declares_3_gb_is_refused_fast_and_small(variant, run100, tmp_path):
    """Second case: a 3 MB best.npz whose param_U declares 3 GB was
    refused only after 13 s and 2.99 GB (here, before the fix: 42 s and 6.3 GB
    for the file below), when param_W showed the model impossible.
    "as-reported": param_U (m, K) with m = 3 GB / (8 K) = 15.6 M rows and
    meta's hidden saying the same; now refused from its header (m outside
    --hidden's range). "huge-vocabulary": the vocabulary is every code point
    (K = 1,112,064), so that m = 338 is a legal size; refused from param_W's
    header, which all parameter headers are checked against before any
    parameter is read."""
    good = _classic_v2(run100, tmp_path / "good.npz")
    assert CharRNN.load(good).hidden == 100  # the rewriting itself gives a valid file
    K = load_checkpoint(good).vocab.size
    change = None
    if variant == "huge-vocabulary":
        K = 0x110000 - 0x800  # every code point but the surrogates
        codes = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype(np.int32)
        change = lambda a: a.update(vocab=codes)  # noqa: E731
    m = -(-3 * 10**9 // (8 * K))  # rows for 3 GB

    def tamper(a):
        a["format_version"] = np.array(2, dtype=np.int64)
        a["start_h"] = a["start_h"].reshape(-1)
        json_update(a, "meta", hidden=m, K=K)
        if change is not None:
            change(a)

    bad = rewrite_archive(
        run100 / "best.npz",
        tmp_path / "best.npz",
        tamper,
        zeros={"param_U": ("<f8", (m, K))},
        rename={"param_l0.Wx": "param_U", "param_l0.Wh": "param_W", "param_l0.b": "param_b"},
    )
    size_mb = bad.stat().st_size / 1e6
    with zipfile.ZipFile(bad) as zf:
        declared = zf.getinfo("param_U.npy").file_size
    assert size_mb < 6 and declared >= 3e9
    expected = {
        "as-reported": f"{bad}: entry 'param_U' has shape ({m}, {K}): a hidden size of {m}, outside the "
        f"range of --hidden [1, 65536]",
        "huge-vocabulary": f"{bad}: entry 'param_W' has shape (100, 100), expected ({m}, {m})",
    }[variant]

    for argv in (["sample", bad, "-n", "5"], ["export", bad, "-o", tmp_path / "x.onnx"]):
        r = measured(argv)
        print(
            f"\n[tampered best.npz, param_U, {variant}] {size_mb:.2f} MB best.npz declaring "
            f"{declared / 1e9:.2f} GB, charrnn {argv[0]}: refused in {r['seconds']:.3f} s at {r['peak_mb']:.0f} MB "
            f"peak"
        )
        assert r["code"] == 2 and r["out"] == ""
        assert one_error_line(r["err"]) == expected
        bounded(r, 200)
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(CheckpointError) as info:
        CharRNN.load(bad)
    assert str(info.value) == expected


def test_member_sizes_are_checked_before_anything_is_decompressed(run100, tmp_path):
    """The rule behind these refusals, member by member: what the zip directory
    says about a member must be possible (deflate expands at most 1032:1; a
    stored member's two sizes are equal; its compressed bytes lie in the file),
    and what all members declare must fit the model's budget, before any data
    is read."""
    src = run100 / "last.npz"
    raw = bytearray(src.read_bytes())

    def central(name: str) -> int:
        """Offset of the central directory record of member ``name`` (its sizes at +20 and +24)."""
        return next(
            m.start()
            for m in re.finditer(rb"PK\x01\x02", raw)
            if raw[m.start() + 46 : m.start() + 46 + len(name)] == name.encode()
        )

    # a stored member (np.savez) whose uncompressed size is raised in the central directory
    off = central("param_V.npy")
    size = int.from_bytes(raw[off + 24 : off + 28], "little")
    raw[off + 24 : off + 28] = (size + 8).to_bytes(4, "little")
    bad = tmp_path / "sizes.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=re.escape(f"{bad}: entry 'param_V' is corrupt (stored, but")):
        load_checkpoint(bad)

    # a deflated member that declares more than deflate can produce from its bytes
    deflated = rewrite_archive(src, tmp_path / "deflated.npz")
    raw = bytearray(deflated.read_bytes())
    off = central("samples.npy")
    raw[off + 24 : off + 28] = (2**31).to_bytes(4, "little")
    bad.write_bytes(bytes(raw))
    with pytest.raises(
        CheckpointError, match=re.escape(f"{bad}: entry 'samples' is corrupt (it declares 2,147,483,648 bytes from ")
    ):
        load_checkpoint(bad)

    # all members together declaring more than the model's budget (one huge extra member)
    big = rewrite_archive(
        src, tmp_path / "extra.npz", zeros={"junk": ("<f8", (40_000_000,))}, change=lambda a: a.update(junk=np.zeros(1))
    )
    with pytest.raises(CheckpointError, match=r"its entries declare [\d,]+ bytes in all \(the largest, 'junk', "):
        load_checkpoint(big)

    # members compressed with bzip2 / lzma (numpy never writes them) are refused
    with np.load(src) as z, zipfile.ZipFile(tmp_path / "bz.npz", "w", zipfile.ZIP_BZIP2) as zout:
        for k in z.files:
            zout.writestr(f"{k}.npy", npy_bytes(z[k]))
    with pytest.raises(CheckpointError, match="entry 'format' is compressed with zip method 12"):
        load_checkpoint(tmp_path / "bz.npz")


# ---------------------------------------------------------------------------
# Deeply nested JSON
# ---------------------------------------------------------------------------

DEEP = "[" * 200_000 + "]" * 200_000


@pytest.mark.parametrize("key", ["meta", "train_config", "corpus", "samples"])
def test_deeply_nested_json_is_a_checkpoint_error(key, run100, tmp_path):
    """a checkpoint whose meta is deeply nested JSON raised a
    RecursionError traceback in `charrnn sample`, `--resume` and CharRNN.load."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(run100 / "config.json", folder / "config.json")
    bad = rewrite_archive(run100 / "last.npz", folder / "last.npz", lambda a: a.update({key: np.array(DEEP)}))
    message = f"{bad}: entry {key!r} is nested too deeply to be charrnn_ext metadata"
    with pytest.raises(CheckpointError) as info:
        CharRNN.load(bad)
    assert str(info.value) == message
    for argv in (["sample", bad, "-n", "5"], ["train", "--resume", folder, "--no-progress"], ["report", folder]):
        r = run_cli(argv)
        assert r.returncode == 2 and one_error_line(r.stderr) == message, argv


@pytest.mark.parametrize("name", ["config.json", "summary.json"])
def test_deeply_nested_run_folder_json_names_the_file(name, run100, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run100, folder)
    (folder / name).write_text(DEEP)
    r = run_cli(["report", folder])
    assert r.returncode == 2
    assert one_error_line(r.stderr) == f"{folder / name} is not a readable JSON file (nested too deeply)"


# ---------------------------------------------------------------------------
# Errors name the file and the field
# ---------------------------------------------------------------------------


def test_sample_of_a_text_file_says_so(text_file, tmp_path):
    """`charrnn sample some_text.txt` suggested loading with allow_pickle."""
    named_npz = tmp_path / "text.npz"
    named_npz.write_bytes(text_file.read_bytes())
    for path, hint in ((text_file, " (a text file? checkpoints are the .npz files of a run folder)"), (named_npz, "")):
        r = run_cli(["sample", path])
        assert r.returncode == 2
        msg = one_error_line(r.stderr)
        assert msg == f"{path}: not a readable .npz checkpoint{hint} (File is not a zip file)"
        assert "pickle" not in msg


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "summary.json",
            "{",
            "{f} is not a readable JSON file (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
        ("summary.json", '{"step": "x"}', "{f}: field 'step' must be an integer >= 0, got 'x'"),
        ("summary.json", "[]", "{f} must hold a JSON object"),
        ("config.json", '{"run": 5}', "{f}: field 'model' must be a JSON object, got None"),
        ("config.json", None, "{f}: field 'train.seq_length' must be an integer >= 0, got 'ten'"),
        (
            "gradcheck.md",
            b"\xff\xfe",
            "{f} is not a readable text file ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)",
        ),
    ],
)
def test_run_folder_errors_name_the_file_and_field(name, content, message, run100, tmp_path):
    """A broken summary.json (and the other files report.md is built from)
    gave errors that named neither the file nor the field."""
    folder = tmp_path / "run"
    shutil.copytree(run100, folder)
    if content is None:
        config = json.loads((folder / name).read_text())
        config["train"]["seq_length"] = "ten"
        content = json.dumps(config)
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    r = run_cli(["report", folder])
    assert r.returncode == 2
    assert one_error_line(r.stderr) == message.format(f=folder / name)


def test_resume_with_a_broken_run_object_names_the_file(run100, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run100, folder)
    (folder / "config.json").write_text('{"run": 5}')
    r = run_cli(["train", "--resume", folder, "--preset", "quality", "--no-progress"])
    assert r.returncode == 2  # was: AttributeError traceback
    assert one_error_line(r.stderr) == f"{folder / 'config.json'}: field 'run' must be a JSON object, got 5"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sig", "abc", "meta field 'sig' is invalid: sig must be a number in [0, 10], got str 'abc'"),
        ("sig", None, "meta field 'sig' is invalid: sig must be a number in [0, 10], got NoneType None"),
        (
            "seed",
            -1,
            "meta field 'seed' is invalid: seed must be an integer in [0, 18_446_744_073_709_551_616), got -1",
        ),
        (
            "seed",
            1.5,
            "meta field 'seed' is invalid: seed must be an integer in [0, 18_446_744_073_709_551_616), got float 1.5",
        ),
        (
            "forget_bias",
            1e300,
            "meta field 'forget_bias' is invalid: forget_bias must be a number in [-100, 100], got 1e+300",
        ),
        ("K", 3, "meta field 'K' says 3 but the vocabulary has K=24"),
        ("hidden", "x", "meta field 'hidden' says 'x' but the parameters have m=100"),
        ("dtype", "int8", "meta field 'dtype' says 'int8' but the parameters are float64"),
    ],
)
def test_a_bad_meta_field_is_named_with_its_file(field, value, message, run100, tmp_path):
    """A bad meta field gave "could not convert string to float: 'abc'" (no
    file, no field), or was accepted (seed 1.5 became 1, a wrong K)."""
    bad = rewrite_archive(
        run100 / "best.npz", tmp_path / "best.npz", lambda a: json_update(a, "meta", **{field: value})
    )
    with pytest.raises(CheckpointError) as info:
        CharRNN.load(bad)
    assert str(info.value) == f"{bad}: {message}"
    r = run_cli(["sample", bad, "-n", "5"])
    assert r.returncode == 2 and one_error_line(r.stderr) == f"{bad}: {message}"


# ---------------------------------------------------------------------------
# Values a checkpoint must not hold
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "smooth_loss",
            math.nan,
            "smooth_loss is nan after 60 updates (best at {best}); expected a finite number >= 0",
        ),
        ("smooth_loss", -1.0, "smooth_loss is -1.0 after 60 updates (best at {best}); expected a finite number >= 0"),
        ("last_loss", math.inf, "last_loss is inf after 60 updates (best at {best}); expected a finite number >= 0"),
        ("best_loss", math.nan, "best_loss is nan after 60 updates (best at {best}); expected a finite number >= 0"),
    ],
)
def test_non_finite_losses_in_last_npz_are_refused(key, value, message, run100, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run100, folder)
    rewrite_archive(run100 / "last.npz", folder / "last.npz", lambda a: a.update({key: np.array(value)}))
    r = run_cli(["train", "--resume", folder, "--no-progress"])
    best = load_checkpoint(run100 / "last.npz").state.best_step
    assert r.returncode == 2
    assert one_error_line(r.stderr) == f"{folder / 'last.npz'}: {message.format(best=best)}"


def test_surrogate_vocabulary_is_refused(run100, tmp_path):
    def change(a):
        v = a["vocab"].copy()
        v[-1] = 0xD800
        a["vocab"] = np.sort(v)

    bad = rewrite_archive(run100 / "best.npz", tmp_path / "best.npz", change)
    r = run_cli(["sample", bad])
    assert r.returncode == 2 and "U+D800" in one_error_line(r.stderr, f"{bad}: invalid vocabulary")


@pytest.mark.parametrize("flag", ["--sig", "--eta"])
def test_sig_and_eta_1e300_are_refused(flag, text_file, tmp_path):
    """--sig 1e300 or --eta 1e300 "finished" with a loss of 6.9e299."""
    r = run_cli(["train", "--text", text_file, "--out", tmp_path / "o", flag, "1e300"])
    assert r.returncode == 2
    high = "10"
    assert one_error_line(r.stderr) == (
        f"argument {flag}: {flag[2:]} must be a number in "
        f"{'(0' if flag == '--eta' else '[0'}, {high}], got 1e+300 "
        f"(see charrnn train --help)"
    )
    assert not (tmp_path / "o").exists()


def test_sample_seed_must_be_an_integer(run100):
    model = CharRNN.load(run100)
    for seed in (1.5, -1, 2**64, True, "3"):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
            model.sample(5, seed=seed)
    assert model.sample(5, seed=2**64 - 1) == model.sample(5, seed=2**64 - 1)
