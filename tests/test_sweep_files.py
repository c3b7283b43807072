"""The files of a sweep folder read back on --resume are untrusted:
sweep.json, study.journal, trials/NNN/trial.json. Each is a regular file of
bounded size, every field is checked and named in the error, an id read
from a file never names a path outside its folder, and a study that cannot
be matched to its trials is refused rather than restarted at trial 0.

The refusals happen before any cluster starts, so these tests need no
Dask cluster; the one that runs a real sweep is marked slow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from charrnn_ext import cli
from charrnn_ext.fileio import UnreadableFile
from charrnn_ext.sweeps.results import (
    TrialRecord,
    check_sweep_id,
    read_trial_records,
    trial_folder,
    write_trial_folder,
)
from helpers import HAVE_SWEEP
from helpers import SWEEP_JSON as META

pytestmark = [
    pytest.mark.usefixtures("deadline"),
    pytest.mark.skipif(not HAVE_SWEEP, reason="needs the [sweep] extra: optuna, optuna-integration, dask"),
]

SPACE = "[fixed]\nsteps = 3\n[search]\nhidden = { choice = [4, 8] }\n"


class _NoCluster:
    def __init__(self, *args, **kwargs):
        raise AssertionError("a cluster was started for a sweep folder that should have been refused")


def resume(tmp_path: Path, out: Path, capsys, monkeypatch) -> str:
    """charrnn sweep --resume on ``out``: its one error line (exit code 2, no cluster started)."""
    monkeypatch.setattr("charrnn_ext.sweeps.cluster.SweepCluster", _NoCluster)
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    code = cli.main(["sweep", str(space), "--out", str(out), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("charrnn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err[len("charrnn: error: ") : -1]


def sweep_folder(tmp_path: Path, **meta) -> Path:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({**META, **meta}))
    return out


def record(number: int, **fields) -> TrialRecord:
    values = {
        "number": number,
        "state": "complete",
        "val_loss": 2.5,
        "updates": 3,
        "seconds": 0.5,
        "worker": "w",
        "params": {"hidden": 4},
        "options": {"hidden": 4, "steps": 3},
        **fields,
    }
    return TrialRecord(**values)


def journal_of(path: Path, trials: int) -> None:
    """A real study journal of ``trials`` complete trials over the space's option."""
    import optuna

    from charrnn_ext.sweeps.study import journal_storage, quiet_optuna

    with quiet_optuna():
        study = optuna.create_study(study_name="charrnn-sweep", storage=journal_storage(path), direction="minimize")
        for _ in range(trials):
            t = study.ask({"hidden": optuna.distributions.CategoricalDistribution([4, 8])})
            study.tell(t, 2.5)


# -- ids that name paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sweep_id", ["../../victim", "/tmp/victim", "..", "0123456789ab/..", "a\0b", 5, "ABCDEF012345"]
)
def test_a_sweep_id_that_could_name_a_path_is_refused(tmp_path, capsys, monkeypatch, sweep_id):
    """Before: a sweep_id with ../ or an absolute path made a trial run in a
    folder outside the scratch area and then delete it (a user's file went)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    out = sweep_folder(tmp_path, sweep_id=sweep_id)
    err = resume(tmp_path, out, capsys, monkeypatch)
    assert f"{out / 'sweep.json'}: field 'sweep_id' must be" in err
    assert "\0" not in err
    assert (victim / "keep.txt").read_text() == "mine"


def test_the_scratch_folder_is_private_and_never_leaves_it(tmp_path, monkeypatch):
    from charrnn_ext.sweeps.trial import scratch_folder

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    folder = scratch_folder("0123456789ab", 7)
    root = tmp_path / f"charrnn-sweep-{os.getuid()}"
    assert folder == root / "0123456789ab" / "007"
    assert (os.stat(root).st_mode & 0o777) == 0o700
    for bad in ("../../x", "/abs", ".."):
        with pytest.raises(UnreadableFile, match="12 hexadecimal digits"):
            scratch_folder(bad, 0)
    with pytest.raises(ValueError, match="trial number"):
        scratch_folder("0123456789ab", -1)


def test_a_scratch_root_that_is_a_link_is_refused(tmp_path, monkeypatch):
    import tempfile

    from charrnn_ext.sweeps.trial import scratch_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"charrnn-sweep-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(PermissionError, match="is not a folder of this user"):
        scratch_folder("0123456789ab", 0)


def test_sweep_ids_made_by_the_package_pass():
    assert check_sweep_id("0123456789ab") == "0123456789ab"


# -- sweep.json ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"sweep_id": None}, "field 'sweep_id' must be a string, got None"),
        ({"settings": []}, "field 'settings' must be a JSON object, got []"),
        ({"study_name": "other"}, "field 'study_name' must be 'charrnn-sweep'"),
        ({"text": {"path": "x"}}, "field 'text.sha256' must be a string, got missing"),
    ],
)
def test_sweep_json_fields_are_checked_and_named(tmp_path, capsys, monkeypatch, meta, message):
    """Before: a missing id was a KeyError traceback."""
    out = sweep_folder(tmp_path, **meta)
    if meta.get("sweep_id", "") is None:
        data = json.loads((out / "sweep.json").read_text())
        del data["sweep_id"]
        (out / "sweep.json").write_text(json.dumps(data))
        message = "field 'sweep_id' must be a string, got missing"
    assert resume(tmp_path, out, capsys, monkeypatch) == f"cannot resume: {out / 'sweep.json'}: {message}"


@pytest.mark.parametrize("name", ["sweep.json", "study.journal", "trial.json"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_fifo_or_device_in_place_of_a_sweep_file_is_refused_at_once(tmp_path, capsys, monkeypatch, name, kind):
    """Before: /dev/zero was read until memory ran out, a FIFO blocked forever."""
    out = sweep_folder(tmp_path)
    path = {"sweep.json": out / "sweep.json", "study.journal": out / "study.journal"}.get(name)
    if path is None:
        (out / "trials" / "000").mkdir(parents=True)
        path = out / "trials" / "000" / "trial.json"
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(kind)
    what = "a FIFO" if kind == "fifo" else "a character device"
    err = resume(tmp_path, out, capsys, monkeypatch)
    assert f"{path} is not a readable" in err and f"(it is {what}, not a regular file)" in err, err


def test_an_oversized_sweep_file_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    out = sweep_folder(tmp_path)
    with open(out / "study.journal", "wb") as fh:
        fh.truncate(1 << 40)  # sparse: a terabyte that takes neither disk nor memory
    err = resume(tmp_path, out, capsys, monkeypatch)
    assert f"{out / 'study.journal'} is not a readable study journal (1,099,511,627,776 bytes, more than" in err


# -- trial.json ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "field 'number' must be an integer >= 0, got missing"),
        ({"state": "winning"}, "field 'state' must be one of complete, pruned, failed, got 'winning'"),
        ({"params": [1]}, "field 'params' must be a JSON object, got [1]"),
        ({"seconds": float("inf")}, "field 'seconds' must be a finite number >= 0, got inf"),
        ({"number": 5}, "field 'number' is 5, but the folder is 000"),
        ({"worker": "\u202eevil\0"}, None),
    ],
)
def test_a_damaged_trial_json_names_its_file_and_field(tmp_path, data, message):
    """Before: TrialRecord.__init__() missing 8 required positional arguments."""
    out = tmp_path / "sweep"
    write_trial_folder(out, record(0), {})
    path = trial_folder(out, 0) / "trial.json"
    full = json.loads(path.read_text())
    path.write_text(json.dumps({} if not data else {**full, **data}))
    if message is None:  # a valid record: read back as written
        assert read_trial_records(out)[0].worker == "\u202eevil\0"
        return
    with pytest.raises(UnreadableFile) as info:
        read_trial_records(out)
    assert str(info.value) == f"{path}: {message}"
    assert "__init__" not in str(info.value)


def test_stray_entries_in_trials_are_refused(tmp_path):
    out = tmp_path / "sweep"
    (out / "trials" / "../x").parent.mkdir(parents=True, exist_ok=True)
    (out / "trials" / "notes").write_text("x")
    with pytest.raises(UnreadableFile, match="notes: not a trial folder"):
        read_trial_records(out)


def test_a_trial_recorded_again_replaces_its_folder(tmp_path):
    """Before: a trial recorded as failed when its scheduler died, then run
    again and completed after --resume, kept the failed folder: results.csv
    said complete while trials/000 said failed."""
    out = tmp_path / "sweep"
    failed = record(0, state="failed", val_loss=None, message="CommClosedError: scheduler lost")
    write_trial_folder(out, failed, {})
    done = record(0)
    write_trial_folder(out, done, {"metrics.csv": b"step\n"})
    assert read_trial_records(out) == {0: done}
    assert (trial_folder(out, 0) / "metrics.csv").read_bytes() == b"step\n"
    write_trial_folder(out, done, {})  # the same record again: kept as it is
    assert (trial_folder(out, 0) / "metrics.csv").exists()
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["000"]  # nothing left aside


# -- study.journal ------------------------------------------------------------------------------------------


def test_a_journal_with_an_operation_optuna_does_not_know_is_refused(tmp_path, capsys, monkeypatch):
    """Before: an AssertionError traceback from Optuna's replay."""
    out = sweep_folder(tmp_path)
    journal_of(out / "study.journal", 1)
    with open(out / "study.journal", "a") as fh:
        fh.write('{"op_code": 99, "worker_id": "x"}\n')
    lines = (out / "study.journal").read_text().count("\n")
    err = resume(tmp_path, out, capsys, monkeypatch)
    assert err == (
        f"cannot resume: {out / 'study.journal'}: line {lines} of the study journal has an operation Optuna "
        "does not know (op_code 99)"
    )


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("[1]", "is not a JSON object"),
        ("{not json", "is not a JSON operation"),
        ('{"op_code": 4, "worker_id": "x"}', "lacks the field 'study_id' of its operation (op_code 4)"),
        ('{"op_code": 4, "worker_id": "x", "study_id": -3}', "has field 'study_id' = -3, not an integer >= 0"),
        ('{"op_code": true, "worker_id": "x"}', "has an operation Optuna does not know (op_code True)"),
        ('{"op_code": 4, "study_id": 0}', "has no worker_id"),
    ],
)
def test_journal_lines_are_checked_before_optuna_replays_them(tmp_path, line, why):
    from charrnn_ext.sweeps.study import check_journal

    path = tmp_path / "study.journal"
    journal_of(path, 1)
    n = path.read_text().count("\n") + 1
    with open(path, "a") as fh:
        fh.write(line + "\n")
    with pytest.raises(UnreadableFile) as info:
        check_journal(path)
    assert str(info.value) == f"{path}: line {n} of the study journal {why}"


def test_a_cut_last_line_is_reported_and_dropped(tmp_path):
    """A crash or a full disk leaves the last operation without its newline:
    Optuna never applied it, and appending after it would corrupt the next."""
    from charrnn_ext.sweeps.study import check_journal, drop_cut_line, journal_storage

    path = tmp_path / "study.journal"
    journal_of(path, 2)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "worker_id": "x", "stu')
    found = check_journal(path)
    assert (found.trials, found.cut_bytes) == (2, len(b'{"op_code": 4, "worker_id": "x", "stu'))
    drop_cut_line(path)
    assert path.read_bytes() == whole
    assert check_journal(path).cut_bytes == 0
    assert len(journal_storage(path).get_all_trials(0)) == 2


@pytest.mark.parametrize("journal", ["deleted", "empty"])
def test_a_lost_journal_beside_recorded_trials_refuses_to_resume(tmp_path, capsys, monkeypatch, journal):
    """Before: the study silently restarted at trial 0, results.csv then
    described new runs while trials/NNN held the old ones, and the real best
    trial disappeared from the table."""
    out = sweep_folder(tmp_path)
    write_trial_folder(out, record(0), {})
    write_trial_folder(out, record(1), {})
    if journal == "empty":
        (out / "study.journal").write_bytes(b"")
    has = "no study journal" if journal == "deleted" else "a study journal of 0 trial(s)"
    assert resume(tmp_path, out, capsys, monkeypatch) == (
        f"cannot resume: {out} has {has}, but trials/ records trial 0; the study cannot be matched to its "
        f"trials (restore study.journal, or start the sweep again in a new folder)"
    )
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["000", "001"]  # nothing touched


def test_a_journal_shorter_than_the_trials_refuses_to_resume(tmp_path, capsys, monkeypatch):
    out = sweep_folder(tmp_path)
    journal_of(out / "study.journal", 1)
    for n in range(3):
        write_trial_folder(out, record(n), {})
    err = resume(tmp_path, out, capsys, monkeypatch)
    assert "has a study journal of 1 trial(s), but trials/ records trial 1" in err


def test_sample_and_export_of_a_sweep_folder_use_its_best_trial(tmp_path, run100, capsys):
    """Before: `charrnn sample SWEEPDIR` did not look in best/."""
    out = sweep_folder(tmp_path)
    assert cli.main(["sample", str(out), "-n", "20"]) == 2
    assert "is a sweep with no complete trial yet (no best/ folder)" in capsys.readouterr().err
    trial = out / "trials" / "000"
    trial.mkdir(parents=True)
    (trial / "best.npz").write_bytes((run100 / "best.npz").read_bytes())
    (out / "best").symlink_to("trials/000")
    assert cli.main(["sample", str(out), "-n", "20", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out) >= 20


def test_a_trial_lost_with_its_scheduler_is_not_recorded_as_failed(tmp_path):
    """Before: a remote scheduler that died mid-trial made the trial
    "failed" in trials/NNN, while after --resume it ran again and completed
    in results.csv. Now nothing is recorded and the sweep stops saying why."""
    from types import SimpleNamespace

    from charrnn_ext.sweeps.run import _Session, _Ticket

    class LostFuture:
        def result(self):
            raise RuntimeError("lost connection to the scheduler")

    session = object.__new__(_Session)
    future = LostFuture()
    session.pending = {future: _Ticket(3, {"hidden": 4})}
    session.out = tmp_path / "sweep"
    session.cluster = SimpleNamespace(
        local=False, address="tcp://10.0.0.1:8786", client=SimpleNamespace(status="connecting")
    )
    with pytest.raises(ConnectionError, match=r"lost the scheduler at tcp://10.0.0.1:8786 while trial 3 ran"):
        session.collect(future)
    assert not (tmp_path / "sweep" / "trials").exists()
