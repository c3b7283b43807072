"""A hypothesis-driven fuzzer of the command line (issue 14: "no input at the
command line produces a Python traceback").

Every command of ``charrnn`` (train, sample, gradcheck, report, export,
sweep, and any command added later) is called in-process through
``cli.main(argv)`` with stdout and stderr captured, over:

- options: every option of the command's parser, with valid, boundary and
  invalid values; numeric ones are drawn from their range in
  :data:`charrnn_ext.config.OPTIONS`;
- texts: empty, binary, invalid UTF-8, UTF-16, a BOM alone, one character,
  one huge line, many distinct characters, devices, a FIFO, a directory,
  missing, odd names;
- checkpoints and run folders: byte flips, truncation, missing, extra or
  renamed members, members of the wrong dtype or shape, non-finite numbers,
  deeply nested or ill-typed JSON, headers declaring huge arrays, damaged
  config.json / summary.json / gradcheck.md;
- sweep spaces (SPACE.toml): valid ones, values out of range or of the wrong
  type, unknown options and distributions, bytes, deep nesting. A sweep
  whose input is all valid ends where it would start its Dask cluster: the
  fuzzer puts a stand-in there that fails as an unreachable scheduler does.

Each case must end with exit code 0, 1, 2 or 130, print no traceback (an
exception escaping main would be one) and no warning, and report an error
as exactly one line, the last on stderr, starting with "charrnn: error: ".
A few cases run the real command in a subprocess. Trainings are tiny
(at most 3 updates, hidden <= 8, texts of a few hundred characters); values
that would make a valid run expensive (a 65536-unit model, a billion
characters to sample) are lowered once the command line is known to parse,
so that boundary values are parsed and range-checked but not trained.

Derandomized (repeatable); the hypothesis profile and FUZZ_SCALE set the number
of cases (helpers.fuzz), and
FUZZ_LOG=FILE appends every in-process case (time, exit code, argv, last
line of stderr) to FILE, and FILE.pending holds the case running. Each
command's test prints its count of cases and exit codes. The bugs the fuzzer
found in `charrnn sweep` (fixed) are pinned by the test_sweep_* tests at the
end and kept out of the generated inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.control import currently_in_test_context  # noqa: E402

from charrnn_ext import cli  # noqa: E402
from charrnn_ext.config import OPTIONS, Option, option  # noqa: E402
from charrnn_ext.data import corpus_from_string  # noqa: E402
from charrnn_ext.model import CharRNN  # noqa: E402
from helpers import HAVE_SERVE, HAVE_SWEEP, SANITIZED, SWEEP_JSON, fuzz, fuzz_volume  # noqa: E402

# Hundreds of generated command lines per command, some in child processes:
# slow, outside the fast subset (-m "not slow").
pytestmark = pytest.mark.slow

CASES = 520  # per command (at least 500 are required)
EXIT_CODES = (0, 1, 2, 130)
COUNTS: Counter[str] = Counter()  # command -> cases run
OUTCOMES: Counter[tuple[str, int]] = Counter()  # (command, exit code) -> cases

TEXT = (
    "The cat sat on the mat. The dog sat on the log.\nA bird sang in the tree, and the cat ran away!\n"
) * 3  # 291 characters


PARSER = cli.build_parser()
SUBPARSERS: dict[str, argparse.ArgumentParser] = next(
    a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)
).choices
KNOWN = ("train", "sample", "gradcheck", "report", "export")
COMMANDS = tuple(KNOWN) + tuple(sorted(set(SUBPARSERS) - set(KNOWN)))  # e.g. a future `charrnn sweep`
_CONFIG = {o.name for o in OPTIONS}


# ---------------------------------------------------------------------------
# The world the command lines point into (built once)
# ---------------------------------------------------------------------------


class World:
    """Files every case may name, and a fresh scratch folder per case."""

    def __init__(self, root: Path):
        self.root = root
        t = root / "texts"
        t.mkdir()
        rng = np.random.default_rng(0)
        contents = {
            "tiny.txt": TEXT.encode(),
            "empty.txt": b"",
            "bom.txt": b"\xef\xbb\xbf",
            "one.txt": b"a",
            "two.txt": b"ab",
            "binary.png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)),
            "latin1.txt": "caf\xe9 au lait, cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 20,
            "utf16.txt": TEXT.encode("utf-16"),
            "surrogate.txt": b"ab\xed\xa0\x80cd" * 40,  # an encoded lone surrogate: not UTF-8
            "huge_line.txt": (b"ab" * 60_000)[:100_001],
            "many_chars.txt": "".join(chr(0x4E00 + int(i)) for i in rng.integers(0, 400, 4000)).encode(),
            "nul.txt": b"a\0b\0" * 100,
            "line\nbreak.txt": TEXT.encode(),
            "x" * 200 + ".txt": TEXT.encode(),
        }
        for name, data in contents.items():
            (t / name).write_bytes(data)
        (t / "adir").mkdir()
        os.mkfifo(t / "fifo")
        (t / "zero_link.txt").symlink_to("/dev/zero")
        self.texts = [str(t / n) for n in contents] + [
            str(t / "adir"),
            str(t / "fifo"),
            str(t / "zero_link.txt"),
            str(t / "missing.txt"),
            "/dev/zero",
            "/dev/null",
            "/dev/urandom",
            str(t / ("y" * 300)),
            "",
        ]
        self.tiny = str(t / "tiny.txt")

        # a finished run and a stopped one (3 of 6 updates), hidden 4
        corpus = corpus_from_string(TEXT)
        tiny = dict(seq_length=10, log_every=2, sample_every=3, val_chars=50, sample_chars=20, passage_chars=20)
        self.finished = root / "finished"
        CharRNN.new(corpus, hidden=4, seed=1).fit(self.tiny, steps=4, out=self.finished, **tiny)
        self.stopped = root / "stopped"
        CharRNN.new(corpus, hidden=4, seed=2, cell="lstm", layers=2).fit(
            self.tiny, steps=6, max_steps=3, out=self.stopped, **tiny
        )
        self.checkpoints = {
            name: (folder / name).read_bytes() for folder in (self.finished,) for name in ("last.npz", "best.npz")
        }
        self.checkpoints["stopped_last.npz"] = (self.stopped / "last.npz").read_bytes()
        self.case_root = root / "cases"
        self.case_root.mkdir()
        self._n = 0

    def scratch(self) -> Path:
        self._n += 1
        d = self.case_root / f"c{self._n}"
        d.mkdir()
        return d


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("clifuzz"))


# ---------------------------------------------------------------------------
# Values of options
# ---------------------------------------------------------------------------

INVALID_NUMBERS = [
    "",
    "abc",
    "1.5",
    "1e5",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "-1e999",
    "0x10",
    "--",
    "1,5",
    "½",
    "9" * 5000,
    "1" + "0" * 40,
    "-" + "9" * 30,
    "1e-400",
    "NaN",
    "0b1",
    "١٢",
    "+-1",
]
JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6
)


def _fmt(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def number_texts(o: Option, valid: bool) -> st.SearchStrategy[str]:
    """Text for a numeric option: inside its range (small values favoured)
    and its included boundaries; unless ``valid``, also its excluded
    boundaries, values just outside, and text that is no number at all."""
    lo, hi = o.low, o.high
    assert lo is not None and hi is not None
    if o.kind is int:
        lo_i, hi_i = int(lo) + o.low_open, int(hi) - o.high_open
        inside = st.one_of(
            st.integers(lo_i, min(hi_i, lo_i + 12)),
            st.integers(lo_i, min(hi_i, lo_i + 1000)),
            st.integers(lo_i, hi_i),
            st.sampled_from([lo_i, hi_i]),
        )
        if valid:
            return st.one_of(inside.map(str), inside.map(lambda v: f" {v} "), inside.map(lambda v: f"+{v}"))
        edges = st.sampled_from([lo_i - 1, hi_i + 1, int(lo), int(hi)])
        return st.one_of(
            inside.map(str), edges.map(str), st.sampled_from(INVALID_NUMBERS), inside.map(lambda v: f"{v}.0")
        )
    inside_f = st.one_of(
        st.floats(lo, hi, exclude_min=o.low_open, exclude_max=o.high_open, allow_nan=False),
        st.sampled_from([v for v, open_ in ((lo, o.low_open), (hi, o.high_open)) if not open_] or [hi / 2]),
    )
    if valid:
        return st.one_of(inside_f.map(_fmt), inside_f.map(lambda v: f"{v:e}"))
    near = [lo, hi, float(np.nextafter(lo, -np.inf)), float(np.nextafter(hi, np.inf)), -0.0, 5e-324]
    return st.one_of(
        inside_f.map(_fmt),
        st.sampled_from(near).map(_fmt),
        st.sampled_from(INVALID_NUMBERS),
        st.integers(int(lo) - 2, int(min(hi, 1e6)) + 2).map(str),
    )


def option_text(o: Option, world: World, scratch: Path, valid: bool) -> st.SearchStrategy[str]:
    if o.choices is not None:
        if valid:
            return st.sampled_from(o.choices)
        return st.one_of(st.sampled_from(o.choices), st.sampled_from(["", "RNN", "tanh", o.choices[0] + " "]))
    if o.kind in (int, float):
        return number_texts(o, valid)
    if o.name == "text":
        return st.sampled_from(world.texts)
    if o.name in ("out", "resume"):
        kinds = st.sampled_from(
            [
                "new",
                "empty",
                "file",
                "user",
                "finished",
                "stopped",
                "nested/deeper",
                "line\nbreak",
                "z" * 300,
                "dev-null",
            ]
        ).map(lambda k: str(_folder(k, world, scratch)))
        return st.one_of(kinds, run_folder(world, scratch).map(str))  # run folders intact or damaged
    if o.name == "prime":
        return st.one_of(
            st.sampled_from(["The", "T", "", "\n", "X-ray", "cat sat", "\ud800", "é"]), st.text(max_size=12)
        )
    return st.text(max_size=12)


def _folder(kind: str, world: World, scratch: Path) -> Path:
    """A run folder argument of the given kind, inside this case's scratch folder."""
    if kind == "dev-null":
        return Path("/dev/null")
    p = scratch / kind.replace("/", "_") if kind not in ("nested/deeper",) else scratch / kind
    if len(kind) > 255 or kind in ("new", "nested/deeper", "line\nbreak") or p.exists():
        return p
    if kind == "empty":
        p.mkdir()
    elif kind == "file":
        p.write_text("not a folder")
    elif kind == "user":
        p.mkdir()
        (p / "notes.txt").write_text("mine")
    elif kind in ("finished", "stopped"):
        shutil.copytree(world.finished if kind == "finished" else world.stopped, p)
    elif kind == "sweep":  # the folder of a sweep as it starts, for sweep --resume
        p.mkdir()
        (p / "sweep.json").write_text(json.dumps(SWEEP_JSON))
    return p


# ---------------------------------------------------------------------------
# Tampered checkpoints and run folders
# ---------------------------------------------------------------------------

ODD_DTYPES = [
    "int8",
    "uint8",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    ">f8",
    "complex64",
    "bool",
    "<U3",
    "S3",
]
META_FIELDS = ["cell", "layers", "hidden", "K", "dtype", "sig", "seed", "forget_bias", "step", "smooth_loss"]
DEEP = "[" * 50_000 + "]" * 50_000


@st.composite
def odd_arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(ODD_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = int(np.prod(shape))
    if dtype.kind in "US":
        return np.array(
            draw(st.lists(st.text("abc", max_size=3), min_size=n, max_size=n)) or [""] * n, dtype=dtype
        ).reshape(shape)
    values = draw(
        st.lists(st.sampled_from([0, 1, -1, 3, 1e30, float("nan"), float("inf"), -2.5]), min_size=n, max_size=n)
    )
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype.kind in "iub":
            values = [0 if not np.isfinite(v) else int(max(-100, min(100, v))) for v in values]
            if dtype.kind == "u":
                values = [abs(v) for v in values]
        return np.array(values, dtype=dtype).reshape(shape)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _huge_header(descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": (3_000_000_000, 10)})
    return buf.getvalue() + bytes(64)


@st.composite
def checkpoint_bytes(draw, world: World) -> bytes:
    """A checkpoint (.npz) file's bytes: intact or tampered."""
    name = draw(st.sampled_from(sorted(world.checkpoints)))
    raw = world.checkpoints[name]
    how = draw(
        st.sampled_from(
            [
                "intact",
                "flip",
                "flip-directory",
                "truncate",
                "members",
                "members",
                "members",
                "meta",
                "json",
                "huge-header",
            ]
        )
    )
    event(f"checkpoint: {how}")
    if how == "intact":
        return raw
    if how in ("flip", "flip-directory"):
        b = bytearray(raw)
        start = raw.rfind(b"PK\x01\x02") - 2000 if how == "flip-directory" else 0
        for i, x in draw(
            st.lists(st.tuples(st.integers(max(0, start), len(b) - 1), st.integers(1, 255)), min_size=1, max_size=8)
        ):
            b[i] ^= x
        return bytes(b)
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    keys = sorted(arrays)
    if how == "meta":
        meta = json.loads(str(arrays["meta"]))
        for field in draw(st.lists(st.sampled_from(META_FIELDS), min_size=1, max_size=3)):
            meta[field] = draw(JSON_VALUES)
        arrays["meta"] = np.array(json.dumps(meta))
    elif how == "json":
        key = draw(st.sampled_from([k for k in ("meta", "train_config", "corpus", "samples") if k in arrays]))
        value = draw(st.one_of(JSON_VALUES.map(json.dumps), st.just(DEEP), st.text(max_size=20)))
        if key in ("train_config", "corpus") and draw(st.booleans()):
            d = json.loads(str(arrays[key]))
            d[draw(st.sampled_from(sorted(d)))] = draw(JSON_VALUES)
            value = json.dumps(d)
        arrays[key] = np.array(value)
    elif how == "members":
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(keys))
            op = draw(st.sampled_from(["drop", "replace", "replace", "rename", "nonfinite", "scalar", "junk"]))
            if op == "drop":
                arrays.pop(key, None)
            elif op == "replace":
                arrays[key] = draw(odd_arrays())
            elif op == "rename":
                if key in arrays:
                    arrays[key + draw(st.sampled_from(["_", ".x", "X"]))] = arrays.pop(key)
            elif op == "nonfinite" and key in arrays and arrays[key].dtype.kind == "f":
                a = arrays[key].copy()
                a.reshape(-1)[:1] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 1e308]))
                arrays[key] = a
            elif op == "scalar":
                arrays[key] = np.array(draw(st.sampled_from([-1, 0, 2**62, -(2**62), 1.5, np.nan])))
            elif op == "junk":
                arrays[draw(st.sampled_from(["junk", "param_l9.Wx", "opt:v:V", "best_V"]))] = draw(odd_arrays())
    members = {k: _npy(v) for k, v in arrays.items()}
    if how == "huge-header":
        members[draw(st.sampled_from(keys))] = _huge_header(draw(st.sampled_from(["<f8", "<i8", "<U5"])))
    buf = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", method) as zf:
        for k, data in members.items():
            zf.writestr(f"{k}.npy", data)
    return buf.getvalue()


@st.composite
def run_folder(draw, world: World, scratch: Path) -> Path:
    """A run folder, intact or with one of its files damaged."""
    source = draw(st.sampled_from(["finished", "stopped"]))
    folder = _folder(source, world, scratch)
    how = draw(
        st.sampled_from(
            [
                "intact",
                "last.npz",
                "config.json",
                "config.json",
                "summary.json",
                "gradcheck.md",
                "remove",
                "directory",
                "user-file",
            ]
        )
    )
    event(f"run folder: {how}")
    if how == "last.npz":
        (folder / "last.npz").write_bytes(draw(checkpoint_bytes(world)))
    elif how in ("config.json", "summary.json"):
        path = folder / how
        if how == "summary.json" and not path.exists():
            path.write_text("{}")
        obj = json.loads(path.read_text())
        kind = draw(st.sampled_from(["field", "subfield", "whole", "bytes", "deep"]))
        if kind == "field":
            if obj:  # a stopped run's summary.json is the empty object written above: no field to damage
                obj[draw(st.sampled_from(sorted(obj)))] = draw(JSON_VALUES)
            path.write_text(json.dumps(obj))
        elif kind == "subfield":
            sub = [k for k in obj if isinstance(obj[k], dict) and obj[k]]
            if sub:
                k = draw(st.sampled_from(sorted(sub)))
                obj[k][draw(st.sampled_from(sorted(obj[k])))] = draw(JSON_VALUES)
            path.write_text(json.dumps(obj))
        elif kind == "whole":
            path.write_text(json.dumps(draw(JSON_VALUES)))
        elif kind == "bytes":
            path.write_bytes(draw(st.binary(max_size=40)))
        else:
            path.write_text(DEEP)
    elif how == "gradcheck.md":
        (folder / "gradcheck.md").write_bytes(draw(st.binary(max_size=40)))
    elif how == "remove":
        (folder / draw(st.sampled_from(["config.json", "last.npz", "best.npz", "gradcheck.md"]))).unlink(
            missing_ok=True
        )
    elif how == "directory":
        name = draw(st.sampled_from(["config.json", "summary.json", "gradcheck.md", "report.md", "loss.png"]))
        p = folder / name
        if p.exists():
            p.unlink()
        p.mkdir()
    elif how == "user-file":
        (folder / "notes.txt").write_text("mine")
    return folder


@st.composite
def model_path(draw, world: World, scratch: Path) -> str:
    """The CHECKPOINT / MODEL argument: a file, a run folder or something else."""
    kind = draw(st.sampled_from(["checkpoint", "checkpoint", "checkpoint", "folder", "text", "other"]))
    if kind == "checkpoint":
        p = scratch / draw(st.sampled_from(["model.npz", "model.bin", "m.NPZ"]))
        p.write_bytes(draw(checkpoint_bytes(world)))
        return str(p)
    if kind == "folder":
        return str(draw(run_folder(world, scratch)))
    if kind == "text":
        return draw(st.sampled_from(world.texts))
    return draw(
        st.sampled_from(
            [
                str(scratch / "missing.npz"),
                str(scratch),
                "/dev/zero",
                "/dev/null",
                world.texts[world.texts.index(world.tiny)],
                "-",
                "--",
                "",
                "x" * 300,
            ]
        )
    )


SCHEDULERS = [
    "tcp://127.0.0.1:1",
    "tcp://",
    "127.0.0.1:8786",
    "",
    " ",
    "inproc://x",
    "tls://host:1",
    "no address",
    "tcp://[::1]:99999",
    "tcp://h:p",
    "x" * 300,
]
SEARCHABLE = [o for o in OPTIONS if o.group in ("model", "train", "run")]


def _toml_value(v) -> str:
    """A TOML rendering of a JSON-like value (dicts as inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v).replace("inf", "inf").replace("nan", "nan")
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return '""'


@st.composite
def _dist(draw, o: Option, valid: bool):
    """A [search] entry for option o: within its range, or (unless valid) maybe not."""
    if o.choices is not None or o.kind in (str, bool):
        values = list(o.choices or ([True, False] if o.kind is bool else ["x", "y"]))
        extra = [] if valid else ["bogus", 3]
        return {"choice": draw(st.lists(st.sampled_from(values + extra), min_size=1, max_size=3, unique=True))}
    lo, hi = float(o.low or 0), float(min(o.high or 1, 1e6))
    if valid:
        a, b = sorted(
            draw(
                st.lists(
                    st.floats(lo, hi, allow_nan=False, exclude_min=o.low_open, exclude_max=o.high_open),
                    min_size=2,
                    max_size=2,
                    unique=True,
                )
            )
        )
    else:
        a, b = sorted(draw(st.lists(st.floats(lo - 1, hi + 1, allow_nan=False), min_size=2, max_size=2)))
    if o.kind is int:
        a, b = int(np.ceil(a)), int(b)
        if valid and a >= b:
            return {"choice": [a]}
        return draw(st.sampled_from([{"int": [a, b]}, {"choice": sorted({a, b})}]))
    if valid and a <= 0:
        return {"uniform": [a, b]}
    return {draw(st.sampled_from(["uniform", "loguniform"] + ([] if valid else ["normal", "int"]))): [a, b]}


@st.composite
def space_file(draw, world: World, scratch: Path) -> str:
    """The SPACE.toml argument of charrnn sweep: a valid space, a damaged one, or no TOML at all."""
    kind = draw(st.sampled_from(["space", "space", "space", "values", "bytes", "deep", "path"]))
    event(f"space: {kind}")
    p = scratch / "space.toml"
    if kind == "path":
        # (not /dev/zero or a FIFO: see test_sweep_space_from_a_device_or_a_fifo_is_refused_at_once)
        return draw(st.sampled_from([str(scratch / "missing.toml"), str(scratch), world.tiny, ""]))
    if kind == "bytes":
        p.write_bytes(draw(st.binary(max_size=60)))
    elif kind == "deep":
        p.write_text("a = " + "[" * 20_000 + "]" * 20_000 + "\n")
    else:
        fixed = {"text": world.tiny, "steps": 3, "hidden": 4, "seq-length": 10} if draw(st.booleans()) else {}
        valid = kind == "space" and draw(st.integers(0, 3)) > 0
        allowed = [
            o for o in SEARCHABLE if not valid or o.name not in ("out", "resume", "stop_after", "threads", "text")
        ]
        search = {
            o.name.replace("_", "-") if draw(st.booleans()) else o.name: draw(_dist(o, valid))
            for o in draw(st.lists(st.sampled_from(allowed), min_size=int(valid), max_size=3, unique=True))
        }
        for name in search:
            fixed.pop(name, None)
        if kind == "values":
            for _ in range(draw(st.integers(1, 3))):
                table = draw(st.sampled_from([fixed, search]))
                table[draw(st.sampled_from([o.name for o in SEARCHABLE] + ["bogus", ""]))] = draw(JSON_VALUES)
        lines = ["[fixed]"] + [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in fixed.items()]
        lines += ["[search]"] + [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in search.items()]
        if draw(st.integers(0, 9)) == 0:
            lines.insert(0, draw(st.sampled_from(["[other]", "x = 1", "[fixed]", "[[search]]"])))
        p.write_text("\n".join(lines) + "\n")
    return str(p)


class _NoCluster:
    """Stands in for the sweep's Dask cluster in the fuzzer: every sweep that
    would start trials ends there, as when a scheduler cannot be reached."""

    def __init__(self, *a, **kw):
        raise ConnectionError("(fuzzer) no Dask cluster is started")


# ---------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------

# Values above which a command line that parses would make the case slow (or,
# for the model size, allocate gigabytes): such values are lowered after the
# parse check, so they are still generated and range-checked, not trained.
CAPS = {
    "train": {
        "hidden": 8,
        "layers": 4,
        "seq_length": 40,
        "batch_size": 4,
        "threads": 4,
        "sample_chars": 200,
        "passage_chars": 200,
        "steps": 3,
        "stop_after": 3,
    },
    "sample": {"length": 3000},
    "gradcheck": {"hidden": 5, "layers": 2, "seq_length": 12},
}
# gradcheck on the built-in corpus (65 characters): smaller still
BUILTIN_GRADCHECK = {"hidden": 3, "layers": 1, "seq_length": 8}


def _actions(command: str) -> list[argparse.Action]:
    return [a for a in SUBPARSERS[command]._actions if not isinstance(a, argparse._HelpAction)]


def _config_option(action: argparse.Action) -> Option | None:
    name = getattr(action.type, "__name__", None)
    return option(name) if name in _CONFIG else None


@st.composite
def command_line(draw, command: str, world: World, scratch: Path) -> list[str]:
    """argv for `command`: some of its options (each with a valid, boundary or
    invalid value), its positional arguments, now and then an unknown option."""
    argv: list[str] = [command]
    valid = draw(st.integers(0, 2)) > 0  # two cases in three: every option value in its range
    given = 6 if valid else 4  # each option is given in about one case out of this
    for action in _actions(command):
        if not action.option_strings:  # positional
            if action.dest in ("checkpoint", "model"):
                argv.append(draw(model_path(world, scratch)))
            elif action.dest == "space":
                argv.append(draw(space_file(world, scratch)))
            elif action.dest == "run_dir":
                argv.append(
                    str(draw(run_folder(world, scratch)))
                    if draw(st.integers(0, 9))
                    else draw(st.sampled_from([str(scratch / "nope"), "/dev/null", world.tiny, ""]))
                )
            else:
                argv.append(draw(st.text(max_size=10)))
            continue
        if not action.required and draw(st.integers(0, given - 1)) != 0:
            continue
        flag = draw(st.sampled_from(action.option_strings))
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
            continue
        o = _config_option(action)
        if o is not None:
            value = draw(option_text(o, world, scratch, valid))
        elif action.dest == "format":
            value = draw(st.sampled_from(["onnx", "torch", "ONNX", "tflite", ""]))
        elif action.dest == "output":
            value = str(scratch / draw(st.sampled_from(["m.onnx", "m.pt", "m.pth", "m.txt", "nodir/m.onnx", ""])))
        elif action.dest == "out":  # charrnn sweep --out
            value = draw(
                st.one_of(
                    st.sampled_from(["new", "empty", "file", "user", "finished", "sweep", "z" * 300]).map(
                        lambda k: str(_folder(k, world, scratch))
                    ),
                    st.just(str(scratch / "sweep")),
                )
            )
        elif action.dest == "scheduler":
            value = draw(st.sampled_from(SCHEDULERS))
        elif action.choices is not None:
            value = draw(st.one_of(st.sampled_from(list(action.choices)), st.sampled_from(["", "bogus"])))
        elif action.type is not None:  # another number (sweep --trials, --workers, --seed)
            value = draw(
                st.one_of(st.integers(-2, 6).map(str), st.integers(0, 2**33).map(str), st.sampled_from(INVALID_NUMBERS))
            )
        else:
            value = draw(st.text(max_size=10))
        argv += [flag, value] if draw(st.integers(0, 9)) else [f"{flag}={value}" if flag.startswith("--") else flag]
    if command in ("train", "gradcheck") and draw(st.integers(0, 9)):
        # most on the tiny text: the built-in corpus (5 MB) costs 0.1-0.4 s to read (a later --text wins)
        argv += ["--text", world.tiny]
    if not valid and not draw(st.integers(0, 6)):
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(["--bogus", "-x", "--help-me", "--"])))
    return argv


def _parses(argv: list[str]) -> argparse.Namespace | None:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return PARSER.parse_args(argv)
    except (cli._UsageError, SystemExit):
        return None


def _cheap(argv: list[str], ns: argparse.Namespace, world: World) -> list[str]:
    """A command line that parses, with the values that would make it slow lowered."""
    caps = dict(CAPS.get(ns.command, {}))
    if ns.command == "gradcheck" and ns.text is None:
        caps.update(BUILTIN_GRADCHECK)
    lowered = {
        name: cap
        for name, cap in caps.items()
        if isinstance(getattr(ns, name, None), (int, float)) and getattr(ns, name) > cap
    }
    out = list(argv)
    for name, cap in lowered.items():
        flags = next(a.option_strings for a in _actions(ns.command) if a.dest == name)
        for i, arg in enumerate(out):
            for flag in flags:
                if arg == flag and i + 1 < len(out):
                    out[i + 1] = str(cap)
                elif arg.startswith(flag + "=") and flag.startswith("--"):
                    out[i] = f"{flag}={cap}"
    if ns.command == "train" and (ns.steps is None or ns.steps > 3) and (ns.stop_after is None or ns.stop_after > 3):
        out += ["--stop-after", "3"]  # a run of unbounded length stops, resumably, after 3 updates
    if ns.command == "train" and ns.resume is None:  # sizes that a preset or a default would make large
        for name, small in (("hidden", 8), ("batch_size", 4), ("seq_length", 25)):
            if getattr(ns, name) is None:
                out += [f"--{name.replace('_', '-')}", str(small)]
    return out


# ---------------------------------------------------------------------------
# Running a case
# ---------------------------------------------------------------------------


def _check_outcome(argv: list[str], code, out: str, err: str) -> None:
    if currently_in_test_context():  # also used by the plain tests below
        note(f"argv = {argv!r}\nexit code = {code!r}\nstderr = {err!r}")
    assert code in EXIT_CODES, code
    assert "Traceback" not in err and "Exception ignored" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert all(line.startswith("charrnn: error: ") for line in errors), err
    assert len(errors) <= 1, err
    if code == 2:
        assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err
    if code == 0:
        assert not errors, err


def _no_listening(self) -> None:
    """Stands in for the web server's run in the fuzzer: a serve whose input is
    all valid ends where it would start listening, as when it cannot."""


@contextlib.contextmanager
def _no_cluster(command: str):
    """No Dask cluster for a sweep, and no server listening for serve."""
    from unittest import mock

    if command == "sweep" and HAVE_SWEEP:  # without the extra, sweep refuses before any cluster
        with mock.patch("charrnn_ext.sweeps.cluster.SweepCluster", _NoCluster):
            yield
    elif command == "serve" and HAVE_SERVE:  # without the extra, serve refuses before it loads a model
        with mock.patch("charrnn_ext.serve.run._Server.run", _no_listening):
            yield
    else:
        yield


def run_case(command: str, argv: list[str], world: World, scratch: Path) -> int:
    ns = _parses(argv)
    if ns is not None:
        argv = _cheap(argv, ns, world)
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    if os.environ.get("FUZZ_LOG"):
        with open(os.environ["FUZZ_LOG"] + ".pending", "w", encoding="utf-8") as fh:  # the case running now
            space = scratch / "space.toml"
            fh.write(f"{argv!r}\n{space.read_text(errors='replace')[:2000] if space.is_file() else ''}\n")
    cwd = os.getcwd()
    os.chdir(scratch)  # `charrnn train` without --out writes runs/ here
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            _no_cluster(command),
        ):
            warnings.simplefilter("always")
            try:
                code = cli.main(argv)
            except BaseException as exc:  # in the real command: a traceback
                pytest.fail(f"{argv!r} raised {type(exc).__name__}: {str(exc)[:500]}", pytrace=False)
    finally:
        os.chdir(cwd)
    if os.environ.get("FUZZ_LOG"):  # seconds, exit code, argv and the last line of stderr of every case
        with open(os.environ["FUZZ_LOG"], "a", encoding="utf-8") as fh:
            last = err.getvalue().strip().splitlines()[-1:]
            fh.write(f"{time.perf_counter() - started:.3f}\t{code}\t{argv!r}\t{last!r}\n")
    _check_outcome(argv, code, out.getvalue(), err.getvalue())
    shown = [w for w in caught if "charrnn_ext" in str(w.filename) or issubclass(w.category, RuntimeWarning)]
    assert not shown, [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in shown]
    COUNTS[command] += 1
    OUTCOMES[command, code] += 1
    event(f"exit code {code}")
    shutil.rmtree(scratch, ignore_errors=True)
    return code


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_fuzz(command, world, capsys):
    """CASES generated command lines of one command; the cases run and their
    exit codes are printed, and at full volume (the ci profile) at least 500 must have run."""
    before = COUNTS[command]

    @fuzz(CASES)
    @given(data=st.data())
    def case(data):
        scratch = world.scratch()
        argv = data.draw(command_line(command, world, scratch), label="argv")
        run_case(command, argv, world, scratch)

    case()
    ran = COUNTS[command] - before
    codes = ", ".join(f"{code}: {OUTCOMES[command, code]}" for code in EXIT_CODES if OUTCOMES[command, code])
    with capsys.disabled():
        print(f"\nCLI fuzzer, {command}: {ran} cases, exit codes {codes}")
    if fuzz_volume() >= 1:
        assert ran >= 500, ran


def _fs_encodable(arg: str) -> bool:
    try:
        os.fsencode(arg)
    except UnicodeEncodeError:
        return False
    return True


@fuzz(30)
@given(data=st.data())
def test_cli_fuzz_subprocess(data, world):
    """The real command: the same command lines (made cheap), in a child process."""
    command = data.draw(st.sampled_from(KNOWN))
    scratch = world.scratch()
    argv = data.draw(command_line(command, world, scratch), label="argv")
    # A command line is bytes: it cannot hold NUL, nor a lone surrogate that no byte decodes to.
    argv = [a.replace("\0", "") for a in argv]
    argv = [a if _fs_encodable(a) else a.encode("utf-8", "replace").decode("utf-8") for a in argv]
    ns = _parses(argv)
    if ns is not None:
        argv = _cheap(argv, ns, world)
    r = subprocess.run(
        [sys.executable, "-m", "charrnn_ext", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=scratch,
        errors="replace",
    )
    _check_outcome(argv, r.returncode, r.stdout, r.stderr)
    assert "Warning" not in r.stderr, r.stderr
    shutil.rmtree(scratch, ignore_errors=True)


SWEEP_SPACE = "[fixed]\nsteps = 3\n[search]\nhidden = { choice = [4, 8] }\n"
DAMAGED_SWEEP_JSON = {
    "deep": "[" * 50_000 + "]" * 50_000,
    "no-space": '{"format": 1}',
    "no-settings": json.dumps({k: v for k, v in SWEEP_JSON.items() if k != "settings"}),
    "text-not-an-object": json.dumps({**SWEEP_JSON, "text": 5}),
    "settings-not-an-object": json.dumps({**SWEEP_JSON, "settings": 5}),
    "settings-incomplete": json.dumps({**SWEEP_JSON, "settings": {"trials": "x"}}),
}


@pytest.mark.parametrize("name", sorted(DAMAGED_SWEEP_JSON))
@pytest.mark.skipif(not HAVE_SWEEP, reason="needs the [sweep] extra: optuna, optuna-integration, dask")
def test_sweep_resume_with_a_damaged_sweep_json(name, tmp_path, capsys):
    """A damaged sweep.json on --resume (too deep, a field missing or of the wrong type) is one error
    line naming the file, exit code 2."""
    space = tmp_path / "space.toml"
    space.write_text(SWEEP_SPACE)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(DAMAGED_SWEEP_JSON[name])
    with _no_cluster("sweep"):
        try:
            code = cli.main(["sweep", str(space), "--out", str(out), "--resume", "--no-progress"])
        except BaseException as exc:
            pytest.fail(f"raised {exc!r}")
    err = capsys.readouterr().err
    _check_outcome(["sweep"], code, "", err)
    assert code == 2 and "sweep.json" in err, err


@pytest.mark.parametrize("device", ["/dev/zero", "fifo"])
@pytest.mark.skipif(SANITIZED, reason="the sanitizer's shadow memory cannot live under an address-space cap")
def test_sweep_space_from_a_device_or_a_fifo_is_refused_at_once(device, tmp_path):
    """A space given as a device or a FIFO is refused at once, as charrnn train --text refuses them
    (in a child capped at 1 GiB, so that reading /dev/zero could not take the machine's memory)."""
    path = "/dev/zero"
    if device == "fifo":
        path = str(tmp_path / "space.toml")
        os.mkfifo(path)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from charrnn_ext import cli\n"
        f"sys.exit(cli.main(['sweep', {path!r}, '--out', {str(tmp_path / 'out')!r}]))\n"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"charrnn sweep {path} still runs after 10 s")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"charrnn: error: {path}") and "not a regular file" in r.stderr, r.stderr
