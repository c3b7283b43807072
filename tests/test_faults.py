"""Runs that survive faults: real `charrnn train` processes killed with SIGKILL.

Every test here starts the command line in a subprocess, kills it (at seeded
random moments relative to the measured length of an uninterrupted run, or at
exact points inside a checkpoint write through a small driver that patches
the atomic writer), and then checks that

* the run folder holds only run files, its lock file and (ignored) temporary files;
* the last complete checkpoint loads with numpy.load(allow_pickle=False),
  load_checkpoint and CharRNN.load, at a sample point (or the final update);
* `--resume DIR` (or, if no checkpoint was written yet, a fresh start, which
  needs --force once the run wrote its first files) finishes the run, leaves
  a complete folder without temporary files, and ends with parameters,
  optimiser state, metrics, samples and report bit-identical to a run that
  was never interrupted (training is deterministic and resumes from the
  exact state stored at the last sample point; only the measured training
  time differs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn_ext.checkpoint import load_checkpoint
from charrnn_ext.data import load_corpus
from charrnn_ext.model import CharRNN
from charrnn_ext.runfolder import LOCK_FILE, RUN_FILES
from cli_helpers import CHILD_ENV, CLI, TRAIN_TINY, one_error_line, run_cli
from conftest import SMALL_TEXT
from helpers import HAVE_ONNX

# Every test here runs the real command in child processes, many of them
# killed and resumed: slow, outside the fast subset (-m "not slow").
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL semantics are POSIX"),
]

STEPS = 1000
SAMPLE_EVERY = 50
OPTS = [
    "--hidden",
    "16",
    "--seq-length",
    "10",
    "--log-every",
    "10",
    "--sample-every",
    str(SAMPLE_EVERY),
    "--no-progress",
]
COMPARED = ("metrics.csv", "samples.md", "gradcheck.md")  # byte for byte
NAMES = ("l0.Wx", "l0.Wh", "l0.b", "V", "c")  # the classic RNN's parameters
TEMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}

# Patches fileio.atomic_write (through which every run file is written; the
# checkpoint module holds its own reference to it) so the process SIGKILLs
# itself at an exact point of the nth write of one file:
#   start          before anything of that write happened
#   partial        after half of the bytes reached the temporary file
#   before_replace after the complete temporary file was fsync'ed, before os.replace
#   after_replace  right after the file was replaced
DRIVER = r"""
import io, os, signal, sys
from pathlib import Path
from charrnn_ext import checkpoint, cli, fileio

target, nth, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = 0
original = fileio.atomic_write

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def patched(path, write):
    global seen
    if Path(path).name != target:
        return original(path, write)
    seen += 1
    if seen != nth:
        return original(path, write)
    if phase == "start":
        die()
    def sabotaged(fh):
        buf = io.BytesIO()
        write(buf)
        data = buf.getvalue()
        if phase == "partial":
            fh.write(data[: len(data) // 2])
            fh.flush(); os.fsync(fh.fileno())
            die()
        fh.write(data)
        if phase == "before_replace":
            fh.flush(); os.fsync(fh.fileno())
            die()
    out = original(path, sabotaged)
    if phase == "after_replace":
        die()
    return out

fileio.atomic_write = patched
checkpoint.atomic_write = patched
sys.exit(cli.main(sys.argv[4:]))
"""


def _train_cmd(text: Path, out: Path, steps: int = STEPS) -> list[str]:
    return ["train", "--text", str(text), "--steps", str(steps), "--out", str(out), *OPTS]


def _resume_cmd(out: Path) -> list[str]:
    return ["train", "--resume", str(out), "--no-progress"]


def _cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charrnn_ext", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _driver(target: str, nth: int, phase: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, target, str(nth), phase, *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )


def _kill_after(args: list[str], delay: float) -> int | None:
    """Start the CLI, SIGKILL it after ``delay`` seconds; returns its exit code
    (-SIGKILL if the kill landed, 0 if it had already finished)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "charrnn_ext", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
    )
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert "Traceback" not in err, err
    return p.returncode


def _params(path: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(path).params


def _in_process(text: Path, steps: int) -> CharRNN:
    """The run `charrnn train` makes with OPTS, up to ``steps``, trained in this
    process without a run folder (a checkpoint is compared against it)."""
    corpus = load_corpus(text)
    model = CharRNN.new(corpus, hidden=16, seed=0)
    model.fit(corpus, steps=steps, seq_length=10, log_every=10, sample_every=SAMPLE_EVERY)
    return model


def _assert_state_equals(path: Path, model: CharRNN) -> None:
    ck = load_checkpoint(path)
    assert ck.state.step == model.step
    assert set(ck.params) == set(NAMES) and all(np.array_equal(ck.params[k], model.params[k]) for k in NAMES)
    s = model.state
    assert all(np.array_equal(ck.state.opt_state[k], s.opt_state[k]) for k in s.opt_state)
    assert np.array_equal(ck.state.h, s.h) and np.array_equal(ck.state.positions, s.positions)
    assert (ck.state.smooth_loss, ck.state.best_step, ck.state.wraps) == (s.smooth_loss, s.best_step, s.wraps)


def _check_consistent(out: Path, steps: int = STEPS) -> int | None:
    """The folder after a kill: only run files, the lock and temporary files, every
    checkpoint loads. Returns the step of last.npz (None if there is none)."""
    if not out.exists():
        return None
    for f in out.iterdir():
        m = TEMP.match(f.name)
        assert f.name in RUN_FILES or f.name == LOCK_FILE or (m and m.group("name") in RUN_FILES), (
            f"unexpected file {f.name}"
        )
    step = None
    if (out / "last.npz").exists():
        with np.load(out / "last.npz", allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)
            step = int(z["step"])
        ck = load_checkpoint(out / "last.npz")
        assert ck.kind == "training" and ck.state.step == step
        assert step % SAMPLE_EVERY == 0 or step == steps, step
        assert 0 <= step <= steps
        model = CharRNN.load(out / "last.npz")
        assert model.step == step and model.state.t == step
        assert set(model.params) == set(NAMES) and all(np.isfinite(model.params[k]).all() for k in NAMES)
        # a checkpoint never runs ahead of the metrics it carries
        assert [r.step for r in ck.state.history] == [s for s in range(10, step + 1, 10)]
    if (out / "best.npz").exists():
        best = CharRNN.load(out / "best.npz")
        assert best.state is None and best.step == 0
    return step


def _finish(out: Path, text: Path, steps: int = STEPS) -> subprocess.CompletedProcess:
    """Continue a killed run: --resume if a checkpoint exists, else start over."""
    if (out / "last.npz").exists():
        r = _cli(_resume_cmd(out))
    elif out.exists():
        # nothing to resume: the command says so clearly
        bad = _cli(_resume_cmd(out))
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        written = sorted(f.name for f in out.iterdir() if f.name in RUN_FILES)
        hint = (
            f" (the run in {out} stopped before its first checkpoint: start it again, with --force to replace "
            f"its files)"
            if "config.json" in written
            else ""
        )
        assert bad.stderr.strip() == f"charrnn: error: cannot resume: {out / 'last.npz'} not found{hint}"
        if written:
            # the run's first files without a checkpoint: a fresh start there needs --force
            again = _cli(_train_cmd(text, out, steps))
            assert again.returncode == 2 and "Traceback" not in again.stderr
            assert again.stderr.strip().splitlines()[-1] == (
                f"charrnn: error: {out} already holds {', '.join(written)} but no resumable run; choose another "
                f"folder, or pass --force to replace them"
            )
        r = _cli(_train_cmd(text, out, steps) + (["--force"] if written else []))
    else:
        r = _cli(_train_cmd(text, out, steps))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def _without_time(path: Path) -> str:
    """summary.json / report.md with the measured training time masked."""
    text = path.read_text()
    if path.suffix == ".json":
        d = json.loads(text)
        assert d.pop("seconds") > 0
        return json.dumps(d, sort_keys=True)
    return re.sub(r"training time [\d,]+ s", "training time _ s", text)


def _assert_same_as_reference(out: Path, ref: Path) -> None:
    # complete, no temporary files
    assert sorted(f.name for f in out.iterdir()) == sorted(RUN_FILES)  # the lock is removed at the end
    for name in ("last.npz", "best.npz"):
        a, b = _params(out / name), _params(ref / name)
        assert set(a) == set(b) == set(NAMES)
        for k in NAMES:
            assert np.array_equal(a[k], b[k]), f"{name} {k}"
    a, b = load_checkpoint(out / "last.npz").state, load_checkpoint(ref / "last.npz").state
    assert a.step == b.step == a.t == b.t == STEPS
    assert (a.wraps, a.best_step, a.best_loss, a.total_steps) == (b.wraps, b.best_step, b.best_loss, b.total_steps)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.h, b.h)
    assert set(a.opt_state) == set(b.opt_state) and all(
        np.array_equal(a.opt_state[k], b.opt_state[k]) for k in a.opt_state
    )
    assert a.smooth_loss == b.smooth_loss and a.history == b.history and a.samples == b.samples
    for f in COMPARED:
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    for f in ("summary.json", "report.md"):
        assert _without_time(out / f) == _without_time(ref / f), f
    # config.json too, but for "run" (how the run was asked for), which a resumed
    # run does not keep: see test_cli.py::test_resume_keeps_the_run_info_in_config_json
    a_cfg, b_cfg = (json.loads((d / "config.json").read_text()) for d in (out, ref))
    assert {k: v for k, v in a_cfg.items() if k != "run"} == {k: v for k, v in b_cfg.items() if k != "run"}


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("faults") / "small.txt"
    p.write_text(SMALL_TEXT)
    return p


@pytest.fixture(scope="module")
def reference(text) -> tuple[Path, float]:
    """An uninterrupted run and its wall time (the scale for the kill delays)."""
    out = text.parent / "reference"
    t0 = time.monotonic()
    r = _cli(_train_cmd(text, out))
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert _check_consistent(out) == STEPS
    assert sorted(f.name for f in out.iterdir()) == sorted(RUN_FILES)  # the lock is removed at the end
    return out, elapsed


# Fractions of the measured run time at which the random kills land: startup
# (imports, gradient check), training with checkpoints every 50 updates, the
# final validation / report. Jittered with a fixed seed.
KILL_FRACTIONS = (0.03, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9)


@pytest.mark.parametrize("i", range(len(KILL_FRACTIONS)))
def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(i, text, reference, tmp_path):
    ref, elapsed = reference
    rng = np.random.default_rng(1000 + i)
    delay = elapsed * float(np.clip(KILL_FRACTIONS[i] + rng.uniform(-0.05, 0.05), 0.01, 0.99))
    out = tmp_path / "run"
    for _ in range(4):  # the machine got faster than the reference run: kill earlier
        rc = _kill_after(_train_cmd(text, out), delay)
        assert rc in (-signal.SIGKILL, 0), rc
        if rc != 0 or delay < 0.05:
            break
        shutil.rmtree(out)
        delay *= 0.6
    step = _check_consistent(out)
    print(f"kill at {delay:.3f}s of {elapsed:.3f}s: rc={rc}, last.npz step={step}")
    _finish(out, text)
    _assert_same_as_reference(out, ref)


def test_killed_repeatedly_then_finished(text, reference, tmp_path):
    """Five SIGKILLs of the same run (each restart resumes), then a clean finish.
    The checkpointed step never goes backwards."""
    ref, elapsed = reference
    rng = np.random.default_rng(7)
    out = tmp_path / "run"
    steps_seen = []
    for _ in range(5):
        args = _resume_cmd(out) if (out / "last.npz").exists() else _train_cmd(text, out)
        rc = _kill_after(args, elapsed * float(rng.uniform(0.2, 0.8)))
        assert rc in (-signal.SIGKILL, 0), rc
        step = _check_consistent(out)
        steps_seen.append(-1 if step is None else step)
        if rc == 0:
            break
    assert steps_seen == sorted(steps_seen)
    _finish(out, text)
    _assert_same_as_reference(out, ref)


# Exact kill points inside checkpoint writes: (file, which write, phase,
# step last.npz must hold afterwards; None = no checkpoint yet). last.npz is
# written at updates 0, 50, 100, ... so its 3rd write is update 100.
EXACT = [
    ("last.npz", 1, "partial", None),  # first checkpoint half written
    ("last.npz", 3, "partial", 50),  # half of update 100's checkpoint on disk
    ("last.npz", 3, "before_replace", 50),  # complete temp file, not yet renamed
    ("last.npz", 3, "after_replace", 100),  # last.npz replaced, best.npz still old
    ("best.npz", 2, "before_replace", 100),  # between last.npz and best.npz (none at update 0)
    ("metrics.csv", 3, "start", 100),  # checkpoints done, metrics.csv not yet
    ("report.md", 1, "partial", STEPS),  # during the final report
]


@pytest.mark.parametrize("target, nth, phase, expect", EXACT, ids=[f"{t}-{n}-{p}" for t, n, p, _ in EXACT])
def test_sigkill_inside_a_checkpoint_write(target, nth, phase, expect, text, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    r = _driver(target, nth, phase, _train_cmd(text, out))
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    temps = [f.name for f in out.iterdir() if TEMP.match(f.name)]
    if phase in ("partial", "before_replace"):
        assert len(temps) == 1 and temps[0].startswith(f".{target}.")  # the interrupted write
    else:
        assert temps == []
    assert _check_consistent(out) == expect
    if expect is not None and expect > 0:
        # the surviving checkpoint is exactly the uninterrupted run's state at that update
        _assert_state_equals(out / "last.npz", _in_process(text, expect))
    _finish(out, text)
    _assert_same_as_reference(out, ref)


SABOTAGE = r"""
import sys
from charrnn_ext import _core, cli
start = int(sys.argv[1])
real = _core.train_steps
def train_steps(params, *a, **kw):
    if int(kw["positions"][0]) >= start * 10:  # from update `start` on: finite weights whose output overflows
        params["l0.b"][:] = 1e300  # h = tanh(huge) = 1
        params["V"][:] = 1.5e308  # o = V h = 16 * 1.5e308 = inf
    return real(params, *a, **kw)
_core.train_steps = train_steps
sys.exit(cli.main(sys.argv[2:]))
"""


def _sabotaged(start: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SABOTAGE, str(start), *args], capture_output=True, text=True, env=ENV, timeout=120
    )


def test_divergence_exits_1_and_keeps_the_last_good_checkpoint(text, tmp_path):
    out = tmp_path / "run"
    r = _sabotaged(0, _train_cmd(text, out, steps=200))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        f"charrnn: error: training diverged: the loss or the gradient of update 1 is not finite (smooth loss so far "
        f"nan); stopped after update 0 without applying it; the last good checkpoint is "
        f"{out / 'last.npz'} (update 0). Try a smaller learning rate (eta=0.1)."
    )
    with np.load(out / "last.npz", allow_pickle=False) as z:
        assert int(z["step"]) == 0
        assert all(np.isfinite(z[f"param_{k}"]).all() for k in NAMES)
        assert float(np.abs(z["param_V"]).max()) < 1  # the initial weights, not the sabotaged ones
    model = CharRNN.load(out / "last.npz")
    assert model.step == 0 and all(np.isfinite(model.params[k]).all() for k in NAMES)
    assert not any(TEMP.match(f.name) for f in out.iterdir())


def test_divergence_after_some_checkpoints_keeps_the_good_one(text, tmp_path):
    """Divergence in the middle of a run: last.npz stays at the last sample point
    and equals the uninterrupted run's state there, bit for bit."""
    out = tmp_path / "run"
    r = _sabotaged(100, _train_cmd(text, out, steps=300))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith("charrnn: error: training diverged: the loss or the gradient of update 101 is not finite")
    assert f"the last good checkpoint is {out / 'last.npz'} (update 100)" in msg
    ck = load_checkpoint(out / "last.npz")
    assert ck.state.step == 100
    assert [row.step for row in ck.state.history] == list(range(10, 101, 10))
    _assert_state_equals(out / "last.npz", _in_process(text, 100))
    # the run can go on from there (with the same, now harmless, text)
    assert _cli(_resume_cmd(out)).returncode == 0
    assert load_checkpoint(out / "last.npz").state.step == 300


# ---------------------------------------------------------------------------
# Broken pipes
# ---------------------------------------------------------------------------


def test_sample_into_head_ends_quietly(run100):
    """`charrnn sample ... | head -c 100` ended with "[Errno 32] Broken pipe" and exit 2."""
    r = subprocess.run(
        f"{sys.executable} -m charrnn_ext sample {run100} -n 3000000 --seed 1 | head -c 100; "
        f'echo " status=${{PIPESTATUS[0]}}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
        env=CHILD_ENV,
    )
    assert r.stdout.endswith(" status=0\n") and len(r.stdout) == 100 + len(" status=0\n"), r.stdout
    assert r.stderr == ""


def test_train_into_head_finishes_the_run(text_file, tmp_path):
    """`charrnn train ... | head` aborted the training; the progress output
    now just stops and the run finishes exactly as without the pipe."""
    piped, plain = tmp_path / "piped", tmp_path / "plain"
    args = ["train", "--text", text_file, "--steps", "240", "--hidden", "8", *TRAIN_TINY]
    p = subprocess.Popen(
        CLI + [str(a) for a in args] + ["--out", str(piped)],
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout.read(10)  # the first lines of the update-0 sample ...
    p.stdout.close()  # ... then the reader goes away, like `| head -c 10`
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert "error" not in err and "Traceback" not in err and "Exception ignored" not in err
    assert run_cli([*args, "--out", plain]).returncode == 0
    for name in ("metrics.csv", "samples.md"):
        assert (piped / name).read_bytes() == (plain / name).read_bytes()
    assert json.loads((piped / "summary.json").read_text())["step"] == 240


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{run}"],
        ["gradcheck", "--seq-length", "10"],
        ["sample", "{run}", "-n", "5"],
        pytest.param(
            ["export", "{run}", "-o", "{run}/m.onnx"],
            marks=pytest.mark.skipif(not HAVE_ONNX, reason="needs the [onnx] extra"),
        ),
    ],
)
def test_other_commands_into_a_closed_pipe_end_quietly(argv, run100, tmp_path):
    """Their output is short: `| true` has gone before they write."""
    folder = tmp_path / "run"
    shutil.copytree(run100, folder)
    cmd = " ".join(CLI + [a.format(run=folder) for a in argv])
    r = subprocess.run(
        f'{cmd} | true; echo " status=${{PIPESTATUS[0]}}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
        env=CHILD_ENV,
    )
    assert r.stdout == " status=0\n" and r.stderr == "", (r.stdout, r.stderr)


# ---------------------------------------------------------------------------
# SIGTERM and Ctrl-C
# ---------------------------------------------------------------------------

_SLOW_CHUNKS = r"""
import sys, time
import charrnn_ext.engine as engine
real = engine.train_walk
def slow(*a, **kw):
    time.sleep(0.05)
    return real(*a, **kw)
engine.train_walk = slow
from charrnn_ext import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _params(path: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(path).params


def test_sigterm_saves_and_resumes_bit_exactly(text_file, tmp_path):
    """SIGTERM (schedulers, `timeout`) killed a run without the save Ctrl-C
    makes. Now: exit 130, saved at the next chunk boundary, and the resumed
    run ends bit-identical to one never interrupted."""
    args = [
        "train",
        "--text",
        text_file,
        "--steps",
        "600",
        "--hidden",
        "8",
        "--seq-length",
        "10",
        "--log-every",
        "10",
        "--sample-every",
        "60",
        "--val-chars",
        "150",
        "--sample-chars",
        "20",
        "--passage-chars",
        "20",
        "--no-progress",
    ]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert run_cli([*args, "--out", straight]).returncode == 0
    p = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CHUNKS, *map(str, args), "--out", str(cut)],
        env=CHILD_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (cut / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # some updates after the first checkpoint
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err
    m = re.search(r"interrupted at update (\d+); the run is saved in (.*); resume with: charrnn train --resume", err)
    assert m and "Traceback" not in err, err
    step = int(m.group(1))
    assert 0 < step < 600 and load_checkpoint(cut / "last.npz").state.step == step
    r = run_cli(["train", "--resume", cut, "--no-progress"])
    assert r.returncode == 0, r.stderr
    for name in ("last.npz", "best.npz"):
        a, b = _params(straight / name), _params(cut / name)
        assert all(np.array_equal(a[k], b[k]) for k in a), name
    for name in ("metrics.csv", "samples.md"):
        assert (straight / name).read_bytes() == (cut / name).read_bytes(), name


_SIGNAL_IN_GRADCHECK = r"""
import os, signal, sys
import charrnn_ext.training as training
real = training.gradient_check
def check(*a, **kw):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # arrives in the start-up check, before any checkpoint
    return real(*a, **kw)
training.gradient_check = check
from charrnn_ext import cli
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("out", ["default", "new", "existing-empty"])
def test_interrupt_before_the_first_checkpoint_leaves_nothing(signame, out, text_file, tmp_path):
    """Ctrl-C before the first checkpoint said "nothing saved" but left a
    folder that --resume then rejected (SIGTERM killed the process and left
    the same). Now what the run wrote is removed, and the folder too if the
    run made it; the same command then starts cleanly."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    target = {"default": None, "new": tmp_path / "new", "existing-empty": tmp_path / "empty"}[out]
    if out == "existing-empty":
        target.mkdir()
    argv = ["train", "--text", str(text_file), "--steps", "5", "--hidden", "4", *TRAIN_TINY]
    if target is not None:
        argv += ["--out", str(target)]
    r = subprocess.run(
        [sys.executable, "-c", _SIGNAL_IN_GRADCHECK, signame, *argv],
        cwd=cwd,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted before the first checkpoint; nothing was saved"), r.stderr
    if out == "default":
        assert last.endswith(" removed)") and list((cwd / "runs").iterdir()) == []
    elif out == "new":
        assert last == f"interrupted before the first checkpoint; nothing was saved ({target} removed)"
        assert not target.exists()
    else:
        assert target.is_dir() and list(target.iterdir()) == []
    if target is not None:
        r = run_cli(["train", "--resume", target, "--no-progress"])
        assert r.returncode == 2 and one_error_line(r.stderr) == f"cannot resume: {target / 'last.npz'} not found"
        r = run_cli(argv, cwd=cwd)  # the same command again, without --force
        assert r.returncode == 0, r.stderr
