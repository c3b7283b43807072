"""charrnn sweep: the space file, the results, and real sweeps on real Dask
clusters of real processes, every server bound to 127.0.0.1 and stopped by
the test that started it.

The cluster tests need the [sweep] extra (optuna, optuna-integration, dask);
without it they are reported as skipped. Trials are tiny: a 2.3 KB text,
models of 16 to 64 units, a few thousand updates.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import charrnn_ext
from charrnn_ext import cli
from charrnn_ext.sweeps.results import ResultsTable, TrialRecord, write_summary_files, write_trial_folder
from charrnn_ext.sweeps.settings import SweepSettings
from charrnn_ext.sweeps.space import SpaceError, load_space, parse_space
from conftest import SMALL_TEXT
from helpers import HAVE_SWEEP

needs_sweep = pytest.mark.skipif(not HAVE_SWEEP, reason="needs the [sweep] extra: optuna, optuna-integration, dask")

#: The folder that holds the charrnn_ext package, for the PYTHONPATH of the processes a test starts.
PACKAGE_ROOT = str(Path(charrnn_ext.__file__).resolve().parents[1])

#: Tiny runs: 10-character chunks, a validation point every 30 updates.
TINY = {
    "seq-length": 10,
    "log-every": 30,
    "sample-every": 30,
    "val-chars": 150,
    "sample-chars": 20,
    "passage-chars": 20,
}


def env_for_children(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts: this package importable."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": PACKAGE_ROOT + (os.pathsep + path if path else ""), **extra}


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "client" / "small.txt"
    p.parent.mkdir()
    p.write_text(SMALL_TEXT, encoding="utf-8")
    return p


def read_results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def trial_json(out: Path, number: int) -> dict:
    return json.loads((out / "trials" / f"{number:03d}" / "trial.json").read_text())


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """End a process this test started, by its pid: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


def wait_for(condition, timeout: float, what: str, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------------------
# the space file: every bad one is refused before anything starts
# ---------------------------------------------------------------------------

GOOD_SEARCH = "[search]\neta = { loguniform = [1e-3, 1e-1] }\n"

BAD_SPACES = [
    # (TOML, words the one-line message must contain)
    ("[fixed]\nhiden = 64\n" + GOOD_SEARCH, ["[fixed] hiden", "unknown option"]),
    ("[search]\nsize = { choice = [1, 2] }\n", ["[search] size", "unknown option"]),
    ("[search]\nhidden = { normal = [64, 8] }\n", ["[search] hidden", "unknown distribution 'normal'"]),
    ("[search]\nhidden = { choice = [64], int = [1, 2] }\n", ["[search] hidden", "exactly one distribution"]),
    ("[search]\nhidden = 64\n", ["[search] hidden", "belongs in [fixed]"]),
    ("[search]\nhidden = { choice = [] }\n", ["[search] hidden.choice", "at least one value"]),
    ("[search]\nhidden = { choice = [64, 0] }\n", ["[search] hidden.choice[1]", "hidden must be an integer in [1,"]),
    ("[search]\nhidden = { choice = [64, 64] }\n", ["[search] hidden.choice", "twice"]),
    ('[search]\ncell = { choice = ["rnn", "transformer"] }\n', ["[search] cell.choice[1]", "one of"]),
    ("[search]\ndropout = { uniform = [0.0, 0.99] }\n", ["[search] dropout.uniform[1]", "dropout must be"]),
    ("[search]\neta = { loguniform = [0.0, 0.1] }\n", ["[search] eta.loguniform", "low > 0"]),
    ("[search]\neta = { uniform = [0.1, 0.01] }\n", ["[search] eta.uniform", "low must be below high"]),
    ("[search]\neta = { uniform = [0.1] }\n", ["[search] eta.uniform", "[low, high]"]),
    ("[search]\nhidden = { uniform = [8, 64] }\n", ["[search] hidden.uniform", "takes integers"]),
    ("[search]\nlayers = { int = [1.5, 3] }\n", ["[search] layers.int", "integers"]),
    ("[search]\nlayers = { int = [1, 99] }\n", ["[search] layers.int[1]", "layers must be an integer in [1, 64]"]),
    ("[search]\ncell = { int = [1, 3] }\n", ["[search] cell.int", "takes words"]),
    ("[fixed]\ncell = 3\n" + GOOD_SEARCH, ["[fixed] cell", "cell must be a string"]),
    ("[fixed]\nmax-minutes = -5\n" + GOOD_SEARCH, ["[fixed] max-minutes", "max_minutes must be a number"]),
    ("[fixed]\nsteps = [1, 2]\n" + GOOD_SEARCH, ["[fixed] steps", "expected a single value"]),
    ('[fixed]\ntext = "no/such/file.txt"\n' + GOOD_SEARCH, ["[fixed] text", "not found"]),
    ('[fixed]\ntext = "."\n' + GOOD_SEARCH, ["[fixed] text", "directory"]),
    ('[search]\ntext = { choice = ["a.txt", "b.txt"] }\n', ["[search] text", "can only be fixed"]),
    ('[fixed]\nout = "x"\n' + GOOD_SEARCH, ["[fixed] out", "cannot be set in a space"]),
    ("[fixed]\nthreads = 2\n" + GOOD_SEARCH, ["[fixed] threads", "--threads-per-trial"]),
    ("[fixed]\nsteps = 100\nepochs = 2\n" + GOOD_SEARCH, ["epochs", "only one of them"]),
    ("[fixed]\nval-fraction = 0\n" + GOOD_SEARCH, ["[fixed] val-fraction", "val-fraction > 0"]),
    ("[fixed]\nseq-length = 10\nseq_length = 20\n" + GOOD_SEARCH, ["[fixed] seq_length", "already set"]),
    ("[fixed]\nhidden = 8\n", ["[search]", "names no option"]),
    ("[fixd]\nhidden = 8\n" + GOOD_SEARCH, ["[fixd]", "unknown table"]),
    ("[search]\neta = { loguniform = [1e-3, 1e-1 }\n", ["not valid TOML"]),
]


@pytest.mark.parametrize(("toml", "words"), BAD_SPACES, ids=[w[0] for _, w in BAD_SPACES])
def test_a_bad_space_is_refused_in_one_line_naming_the_key(tmp_path, monkeypatch, capsys, toml, words):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.toml"
    space.write_text(toml, encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["sweep", str(space), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("charrnn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()  # refused before anything was made (or started)


def test_a_space_a_grid_cannot_cover_and_a_missing_space_file_are_refused(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(GOOD_SEARCH, encoding="utf-8")
    assert cli.main(["sweep", str(space), "--out", str(tmp_path / "out"), "--sampler", "grid"]) == 2
    assert "[search] eta: a grid search takes only choice and int" in capsys.readouterr().err
    assert cli.main(["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "space file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_output_folder_must_be_new_or_a_sweep_to_resume(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(GOOD_SEARCH, encoding="utf-8")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert cli.main(["sweep", str(space), "--out", str(tmp_path / "busy")]) == 2
    assert "is not empty (notes.txt)" in capsys.readouterr().err
    assert cli.main(["sweep", str(space), "--out", str(tmp_path / "busy"), "--resume"]) == 2
    assert "holds no sweep" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


@needs_sweep
@pytest.mark.parametrize("address", ["not an address", "tcp://127.0.0.1", "foo://127.0.0.1:8786"])
def test_a_scheduler_address_that_cannot_be_one_is_refused(tmp_path, capsys, address):
    space = tmp_path / "space.toml"
    space.write_text(GOOD_SEARCH, encoding="utf-8")
    assert cli.main(["sweep", str(space), "--out", str(tmp_path / "out"), "--scheduler", address]) == 2
    err = capsys.readouterr().err
    assert f"{address!r} is not the address of a Dask scheduler" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_without_the_sweep_extra_the_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    space = tmp_path / "space.toml"
    space.write_text(GOOD_SEARCH, encoding="utf-8")
    assert cli.main(["sweep", str(space), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'charrnn_ext[sweep]'" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_space_reads_back_from_its_own_toml_and_dict(tmp_path, text_file):
    toml = (
        f'[fixed]\ntext = "{text_file}"\nmax-minutes = 5\n\n[search]\nhidden = {{ choice = [64, 128, 256] }}\n'
        f'eta = {{ loguniform = [1e-3, 1e-1] }}\ncell = {{ choice = ["rnn", "lstm", "gru"] }}\n'
        f"dropout = {{ uniform = [0.0, 0.3] }}\nlayers = {{ int = [1, 3] }}\n"
    )
    (tmp_path / "s.toml").write_text(toml)
    space = load_space(tmp_path / "s.toml")
    assert space.fixed == {"text": str(text_file), "max_minutes": 5.0}
    assert space.search["layers"].grid_values() == [1, 2, 3] and space.search["eta"].grid_values() is None
    (tmp_path / "again.toml").write_text(space.to_toml())
    again = load_space(tmp_path / "again.toml")
    assert (again.fixed, again.search) == (space.fixed, space.search)
    assert parse_space(space.to_dict()).search == space.search
    with pytest.raises(SpaceError, match=r"space: \[search\] hidden\.choice\[0\]"):
        parse_space({"search": {"hidden": {"choice": [0]}}})


def test_settings_keep_their_stored_values_on_resume():
    first = SweepSettings.resolve(
        {"trials": 8, "sampler": "random", "seed": 3, "pruner": None, "threads_per_trial": None}
    )
    assert first == SweepSettings(trials=8, sampler="random", pruner="median", seed=3, threads_per_trial=1)
    assert SweepSettings.resolve({"trials": 12}, first.to_json()).trials == 12  # a sweep may grow
    with pytest.raises(ValueError, match="--sampler tpe differs from the sweep's random"):
        SweepSettings.resolve({"sampler": "tpe"}, first.to_json())
    assert SweepSettings.resolve({"sampler": "grid"}, grid_size=6).trials == 6


def test_the_results_files_of_finished_trials(tmp_path):
    def record(n, state, val, **kw):
        return TrialRecord(
            number=n,
            state=state,
            val_loss=val,
            updates=300,
            seconds=1.5,
            worker="w",
            params={"eta": 0.1 * (n + 1)},
            options={"eta": 0.1 * (n + 1), "hidden": 8},
            **kw,
        )

    rows = [
        record(0, "complete", 2.5),
        record(1, "pruned", 3.1),
        record(2, "failed", None, message="boom"),
        record(3, "complete", 1.25),
    ]
    for r in rows:
        write_trial_folder(tmp_path, r, {})
    table = ResultsTable(rows, searched=("eta",))
    assert table.best is not None and table.best.number == 3
    assert [r.number for r in table.by_val_loss()] == [3, 0, 1, 2]
    write_summary_files(
        tmp_path, table, ["header"], "charrnn train --eta 0.4", "Not computed: test", "[search]\n", plot=False
    )
    with open(tmp_path / "results.csv", newline="") as fh:
        got = list(csv.reader(fh))
    assert got[0] == ["trial", "state", "val_loss", "updates", "seconds", "worker", "eta"]
    assert [g[1] for g in got[1:]] == ["complete", "pruned", "failed", "complete"] and got[3][2] == ""
    assert os.readlink(tmp_path / "best") == os.path.join("trials", "003")
    report = (tmp_path / "report.md").read_text()
    assert "charrnn train --eta 0.4" in report and "trial 2: boom" in report
    with pytest.raises(ValueError, match="unexpected file"):
        write_trial_folder(tmp_path, record(4, "complete", 1.0), {"../../evil": b"x"})
    assert not (tmp_path / "trials" / "004").exists() and not list((tmp_path / "trials").glob(".*"))


# ---------------------------------------------------------------------------
# sweeps on real clusters
# ---------------------------------------------------------------------------


@needs_sweep
@pytest.mark.slow
def test_four_trials_on_a_local_cluster_prune_the_hopeless_one(tmp_path, text_file, capsys, monkeypatch):
    # eta 1e-7 learns nothing in 300 updates: hopeless. With the sampler's seed 6 the
    # trials ask for eta 0.1, 0.1, 1e-7, 0.1, so trial 2 runs after a good trial has
    # completed and the median pruner must stop it at its first validation point.
    space = {
        "fixed": {"text": str(text_file), "steps": 300, "hidden": 16, **TINY},
        "search": {"eta": {"choice": [0.1, 1e-7]}},
    }
    out = tmp_path / "sweep"
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the workers' scratch folders
    table = charrnn_ext.sweep(space, out, trials=4, workers=2, seed=6, pruner="median")
    assert [r.params["eta"] for r in table] == [0.1, 0.1, 1e-7, 0.1]  # the sampler's draws (the test's premise)
    rows = read_results(out)
    assert len(rows) == 4 and [r["trial"] for r in rows] == ["0", "1", "2", "3"]
    assert list(rows[0]) == ["trial", "state", "val_loss", "updates", "seconds", "worker", "eta"]
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned", "complete"]
    assert int(rows[2]["updates"]) == 30 and int(rows[0]["updates"]) == 300
    assert len({r["worker"] for r in rows}) >= 1 and all(r["worker"].startswith("tcp://127.0.0.1:") for r in rows)
    assert table.best is not None and float(rows[0]["val_loss"]) < 2.0 < float(rows[2]["val_loss"])
    for n in range(4):
        folder = out / "trials" / f"{n:03d}"
        assert (folder / "metrics.csv").is_file() and (folder / "best.npz").is_file(), n
        assert (folder / "report.md").is_file() and trial_json(out, n)["state"] == rows[n]["state"]
    assert (out / "trials" / "000" / "summary.json").is_file()
    assert not (out / "trials" / "002" / "summary.json").exists()  # a pruned run did not finish
    assert (out / "best").is_dir() and (out / "best" / "summary.json").is_file()
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "## Best trial" in report and f"--text {text_file}" in report and "--eta 0.1" in report
    assert "| 2 | pruned |" in report
    capsys.readouterr()
    assert cli.main(["sample", str(out / "best" / "best.npz"), "-n", "40", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out) > 40
    import optuna

    study = optuna.load_study(
        study_name="charrnn-sweep",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))),
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert study.trials[2].intermediate_values == {30: pytest.approx(float(rows[2]["val_loss"]))}
    sweep_id = json.loads((out / "sweep.json").read_text())["sweep_id"]
    assert not (
        tmp_path / f"charrnn-sweep-{os.getuid()}" / sweep_id
    ).exists()  # finished trials leave no scratch behind


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and one `dask worker` (nanny + 1 worker process of 1
    thread) on 127.0.0.1, without dashboards (their HTTP servers, which
    --no-dashboard leaves on all interfaces, pinned to 127.0.0.1 too), as
    subprocesses of this test module; the worker's home and temporary folder are its own folder, which
    no sweep output is ever written to. Stopped by pid at the end."""
    if not HAVE_SWEEP:
        pytest.skip("needs the [sweep] extra")
    base = tmp_path_factory.mktemp("dask")
    home = base / "worker-machine"
    home.mkdir()
    scheduler_file = base / "scheduler.json"
    env = env_for_children(TMPDIR=str(home))
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dask",
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--dashboard-address",
                    "127.0.0.1:0",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                cwd=base,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(base / "scheduler.log", "wb"),
            )
        )

        def address():
            with contextlib.suppress(OSError, ValueError):
                return json.loads(scheduler_file.read_text()).get("address")
            return None

        addr = wait_for(address, 60, "the scheduler's address in its scheduler file", every=0.1)
        assert addr.startswith("tcp://127.0.0.1:"), addr
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dask",
                    "worker",
                    addr,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--dashboard-address",
                    "127.0.0.1:0",
                    "--name",
                    "worker-machine",
                    "--local-directory",
                    str(home / "dask"),
                ],
                cwd=home,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(base / "worker.log", "wb"),
            )
        )
        from distributed import Client

        with Client(addr, set_as_default=False, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        yield {"address": addr, "home": home, "base": base}
    finally:
        for p in reversed(procs):
            stop(p)


@needs_sweep
@pytest.mark.slow
def test_a_sweep_on_a_running_cluster_gets_every_file_back(tmp_path, text_file, dask_cluster, capsys):
    # the client's folder (text, space, --out) is not the worker's; seq-length 99999 does not
    # fit the text, so half the grid fails, and the sweep goes on
    client_dir = text_file.parent
    space = client_dir / "space.toml"
    fixed = "\n".join(f"{k} = {v}" for k, v in TINY.items() if k != "seq-length")
    space.write_text(
        f'[fixed]\ntext = "{text_file}"\nsteps = 240\nhidden = 16\n{fixed}\n\n[search]\n'
        f"eta = {{ choice = [0.1, 1e-7] }}\nseq-length = {{ choice = [10, 99999] }}\n"
    )
    out = client_dir / "sweep"
    assert (
        cli.main(
            [
                "sweep",
                str(space),
                "--out",
                str(out),
                "--scheduler",
                dask_cluster["address"],
                "--sampler",
                "grid",
                "--seed",
                "0",
                "--pruner",
                "none",
                "--no-progress",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"on the cluster at {dask_cluster['address']}" in err
    rows = read_results(out)
    assert len(rows) == 4 and sorted((r["eta"], r["seq-length"]) for r in rows) == [
        ("0.1", "10"),
        ("0.1", "99999"),
        ("1e-07", "10"),
        ("1e-07", "99999"),
    ]
    for r in rows:
        rec = trial_json(out, int(r["trial"]))
        if r["seq-length"] == "99999":
            assert r["state"] == "failed" and "seq_length=99999 needs at least 100000" in rec["message"]
            assert f"trial {r['trial']} failed: ValueError" in err
        else:
            assert r["state"] == "complete" and int(r["updates"]) == 240
            folder = out / "trials" / f"{int(r['trial']):03d}"
            assert {p.name for p in folder.iterdir()} >= {
                "config.json",
                "metrics.csv",
                "best.npz",
                "last.npz",
                "summary.json",
                "report.md",
                "loss.png",
                "trial.json",
            }
            assert r["worker"].startswith("tcp://127.0.0.1:")
    best = json.loads((out / "best" / "trial.json").read_text())
    assert best["params"] == {"eta": 0.1, "seq_length": 10}
    assert cli.main(["sample", str(out / "best" / "best.npz"), "-n", "30", "--seed", "2"]) == 0
    # the worker wrote its runs in its own temporary folder, and nothing of the client's output
    assert not list(
        (dask_cluster["home"] / f"charrnn-sweep-{os.getuid()}").glob("*/*")
    )  # its scratch folders are cleaned up
    for path in dask_cluster["home"].rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert str(out).encode() not in path.read_bytes(), path
    for f in (out / "trials").glob("*/config.json"):
        assert str(out) not in f.read_text()
    # the study's copy in the output folder: every trial, finished
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    states = sorted(t.state.name for t in optuna.load_study(study_name="charrnn-sweep", storage=storage).trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]


@needs_sweep
@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_replaced_and_the_trial_resumes(tmp_path, text_file, dask_cluster):
    space = {
        "fixed": {
            "text": str(text_file),
            "steps": 40_000,
            "hidden": 64,
            "seq-length": 10,
            "log-every": 500,
            "sample-every": 2000,
            "val-chars": 150,
            "sample-chars": 20,
            "passage-chars": 20,
        },
        "search": {"eta": {"choice": [0.1, 0.05]}},
    }
    out = tmp_path / "sweep"
    result: list = []
    failure: list = []

    def run():
        try:
            result.append(
                charrnn_ext.sweep(space, out, trials=2, scheduler=dask_cluster["address"], seed=1, pruner="none")
            )
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        scratch = dask_cluster["home"] / f"charrnn-sweep-{os.getuid()}"

        def checkpointed():
            # the first trial's run folder on the worker, once it has written a checkpoint past update 0
            for metrics in scratch.glob("*/000/metrics.csv"):
                with contextlib.suppress(OSError):
                    if any(line.split(",")[4] for line in metrics.read_text().splitlines()[1:]):
                        return metrics.parent
            return None

        folder = wait_for(checkpointed, 120, "the first trial's first checkpoint")
        pid = int((folder / ".lock").read_text())  # the process writing the run: the worker's
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b"spawn_main"
        assert pid != os.getpid() and b"spawn_main" in cmdline, cmdline  # a worker process of the nanny we started
        os.kill(pid, signal.SIGKILL)
    finally:
        thread.join(300)
    assert not thread.is_alive() and not failure, failure
    table = result[0]
    assert [r.state for r in table] == ["complete", "complete"]
    killed = table.rows[0]
    assert killed.resumed_from is not None and 0 < killed.resumed_from < 40_000 and killed.updates == 40_000
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "trials" / "000" / "metrics.csv", newline=""))]
    assert steps == list(range(500, 40_001, 500))  # one unbroken history across the worker's death
    assert table.rows[1].resumed_from is None
    assert "continued from their last checkpoint" in (out / "report.md").read_text()


@needs_sweep
@pytest.mark.slow
def test_ctrl_c_then_resume_accounts_for_every_trial_once(tmp_path, text_file):
    space = tmp_path / "space.toml"
    fixed = "\n".join(f"{k} = {v}" for k, v in TINY.items() if k != "sample-every")
    space.write_text(
        f'[fixed]\ntext = "{text_file}"\nsteps = 60000\nhidden = 32\nsample-every = 1000\n{fixed}\n\n'
        f"[search]\neta = {{ loguniform = [0.01, 0.2] }}\n"
    )
    out = tmp_path / "sweep"
    scratch = tmp_path / "machine-tmp"
    scratch.mkdir()
    args = [
        sys.executable,
        "-m",
        "charrnn_ext",
        "sweep",
        str(space),
        "--out",
        str(out),
        "--trials",
        "4",
        "--workers",
        "2",
        "--pruner",
        "none",
        "--seed",
        "4",
    ]
    log = tmp_path / "first.log"
    proc = subprocess.Popen(
        args, env=env_for_children(TMPDIR=str(scratch)), stdout=subprocess.DEVNULL, stderr=open(log, "wb")
    )
    try:

        def second_wave_checkpointed():
            # trial 2 starts when trial 0 or 1 has finished; once it has written a checkpoint past
            # update 0, it has most of its run ahead of it
            with contextlib.suppress(OSError, ValueError, KeyError):
                sweep_id = json.loads((out / "sweep.json").read_text())["sweep_id"]
                metrics = scratch / f"charrnn-sweep-{os.getuid()}" / sweep_id / "002" / "metrics.csv"
                return any(line.split(",")[4] for line in metrics.read_text().splitlines()[1:])
            return False

        wait_for(second_wave_checkpointed, 120, "trial 2's first checkpoint", every=0.05)
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(120) == 130
    finally:
        stop(proc)
    first = log.read_text()
    assert "interrupted: asking" in first and "--resume" in first and "Traceback" not in first, first
    before = read_results(out)
    assert 1 <= len(before) < 4
    sweep_id = json.loads((out / "sweep.json").read_text())["sweep_id"]
    left = sorted(p.name for p in (scratch / f"charrnn-sweep-{os.getuid()}" / sweep_id).iterdir())
    assert left  # the interrupted trials kept their checkpoints for --resume
    done = subprocess.run(
        args + ["--resume"], env=env_for_children(TMPDIR=str(scratch)), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = read_results(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3"] and {r["state"] for r in rows} == {"complete"}
    assert all(b in rows for b in before)  # what was recorded stays as it was
    resumed = [trial_json(out, int(r["trial"]))["resumed_from"] for r in rows]
    assert any(r is not None and r > 0 for r in resumed)  # an interrupted trial continued from its checkpoint
    assert all(int(r["updates"]) == 60000 for r in rows)
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    trials = optuna.load_study(study_name="charrnn-sweep", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    assert not (scratch / f"charrnn-sweep-{os.getuid()}" / sweep_id).exists()
