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
import os
import pickle
import re
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
    for f in sorted(root.glob("*.py")):
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
