"""Files read back and paths written to that are not what they seem: the
guards of charrnn_ext.fileio (regular files only, a size cap checked before
reading, fields validated, names kept inside their folder, lock files never
opened through a link, outputs that are not regular files refused), and the
readers and writers of run folders and exports that use them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from charrnn_ext.fileio import (
    UnreadableFile,
    atomic_write_text,
    check_fields,
    child_path,
    open_lock_file,
    printable,
    read_bounded,
    read_json_file,
)
from charrnn_ext.runfolder import RunFolder, read_metrics_csv
from cli_helpers import TRAIN_TINY, one_error_line, run_cli

# -- the reader ------------------------------------------------------------------------------------


def test_a_fifo_is_refused_without_blocking(tmp_path, deadline):
    """Before: a FIFO in place of a run or sweep file blocked the reader forever.
    Opened non-blocking and checked with fstat, it is refused at once (no
    writer is ever attached, so a blocking open would hang the test)."""
    fifo = tmp_path / "sweep.json"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableFile, match=r"sweep.json is not a readable JSON file \(it is a FIFO"):
        read_json_file(fifo, 1 << 20)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_an_endless_device_is_refused_before_reading(tmp_path, device):
    """Before: /dev/zero (or a link to it) in place of a file was read until
    memory ran out. A link is followed to what it names, and that is checked."""
    if not os.path.exists(device):
        pytest.skip(f"{device} is missing")
    link = tmp_path / "trial.json"
    link.symlink_to(device)
    for path in (Path(device), link):
        with pytest.raises(UnreadableFile, match="it is a character device, not a regular file"):
            read_bounded(path, 1 << 10)


def test_a_file_over_the_cap_is_refused_before_reading(tmp_path):
    big = tmp_path / "config.json"
    with open(big, "wb") as fh:
        fh.truncate(10 << 20)  # sparse: no memory or disk needed
    with pytest.raises(UnreadableFile, match=r"10,485,760 bytes, more than the 1,048,576"):
        read_bounded(big, 1 << 20)
    assert read_bounded(big, 10 << 20)[:4] == b"\0\0\0\0"  # at the cap exactly: read


def test_folders_and_missing_files_are_named(tmp_path):
    with pytest.raises(UnreadableFile, match="it is a folder") as info:
        read_bounded(tmp_path, 100)
    assert not info.value.missing
    with pytest.raises(UnreadableFile, match="it does not exist") as info:
        read_bounded(tmp_path / "nothing", 100)
    assert info.value.missing


def test_fields_are_validated_with_file_and_field_named(tmp_path):
    f = tmp_path / "trial.json"
    spec = {"number": "int", "val_loss": "num?", "params": "dict", "inner": {"name": "str"}}
    good = {"number": 3, "val_loss": None, "params": {}, "inner": {"name": "x"}}
    check_fields(f, good, spec)
    for bad, message in [
        ({**good, "number": -1}, "field 'number' must be an integer >= 0, got -1"),
        ({**good, "number": True}, "field 'number' must be an integer >= 0, got True"),
        ({k: v for k, v in good.items() if k != "params"}, "field 'params' must be a JSON object, got missing"),
        ({**good, "inner": {"name": 5}}, "field 'inner.name' must be a string, got 5"),
        ({**good, "val_loss": "1"}, "field 'val_loss' must be a number, got '1'"),
    ]:
        with pytest.raises(UnreadableFile) as info:
            check_fields(f, bad, spec)
        assert str(info.value) == f"{f}: {message}"


@pytest.mark.parametrize("name", ["..", ".", "", "../x", "/etc", "a/b", "a\0b", "../../../tmp/victim"])
def test_a_name_from_a_file_cannot_leave_its_folder(tmp_path, name):
    with pytest.raises(UnreadableFile, match="is not a plain name inside"):
        child_path(tmp_path, name, "sweep_id")
    assert child_path(tmp_path, "ab12", "sweep_id") == tmp_path / "ab12"


def test_control_characters_are_escaped_in_messages():
    assert printable("a\0b\u202ec\n") == "a\\x00b\\u202ec\\n"
    assert printable("x" * 100, 10) == "x" * 10 + "..."


# -- lock files ------------------------------------------------------------------------------------


def test_a_lock_that_is_a_symlink_is_never_written_through(tmp_path):
    """Before: a .lock linking to a user's file had that file truncated and
    overwritten with the pid."""
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(UnreadableFile, match="is a symbolic link; refusing to write through it"):
        RunFolder(run).lock()
    dangling = tmp_path / "run2"
    dangling.mkdir()
    (dangling / ".lock").symlink_to(tmp_path / "would-be-created")
    with pytest.raises(UnreadableFile, match="symbolic link"):
        RunFolder(dangling).lock()
    assert victim.read_text() == "keep me\n"
    assert not (tmp_path / "would-be-created").exists()


def test_a_lock_that_is_a_fifo_is_refused(tmp_path, deadline):
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(UnreadableFile, match="is a FIFO, not a regular file"):
        open_lock_file(tmp_path / ".lock")
    fd, made = open_lock_file(tmp_path / "ok.lock")
    os.close(fd)
    assert made and stat.S_ISREG(os.lstat(tmp_path / "ok.lock").st_mode)


@pytest.mark.slow
def test_train_and_resume_refuse_a_symlinked_lock(tmp_path, text_file):
    """The command line: train into a folder, and --resume of a run, whose
    .lock is a link; the link's target is untouched either way."""
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".lock").symlink_to(victim)
    r = run_cli(["train", "--text", text_file, "--out", fresh, "--steps", "2", "--no-progress"], timeout=120)
    assert r.returncode != 0
    assert "symbolic link" in one_error_line(r.stderr)
    resumed = tmp_path / "resumed"
    r = run_cli(["train", "--text", text_file, "--out", resumed, *TRAIN_TINY, "--steps", "4"], timeout=120)
    assert r.returncode == 0, r.stderr
    (resumed / ".lock").unlink(missing_ok=True)  # a finished run removes its lock file
    (resumed / ".lock").symlink_to(victim)
    r = run_cli(["train", "--resume", resumed, "--no-progress"], timeout=120)
    assert r.returncode != 0
    assert "symbolic link" in one_error_line(r.stderr)
    assert victim.read_text() == "keep me\n"


# -- outputs ---------------------------------------------------------------------------------------


def test_atomic_write_refuses_a_target_that_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    link = tmp_path / "link.onnx"
    link.symlink_to("/proc/self/fd/1")
    for target, kind in ((fifo, "a FIFO"), (link, "a symbolic link"), (tmp_path, "a folder")):
        with pytest.raises(FileExistsError, match=f"exists and is {kind}; refusing to replace it"):
            atomic_write_text(target, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "out.onnx"]  # no temporary file left
    atomic_write_text(tmp_path / "plain.txt", "a")
    atomic_write_text(tmp_path / "plain.txt", "b")  # a regular file is replaced as before
    assert (tmp_path / "plain.txt").read_text() == "b"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_export_refuses_device_fifo_and_link_outputs(tmp_path, run100, fmt):
    """Before: export -o onto a FIFO, a device or a link to /proc/self/fd/1
    replaced it with a regular file (as root, -o /dev/null would replace the
    system's /dev/null)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "stdout-link"
    link.symlink_to("/proc/self/fd/1")
    for out, kind in ((fifo, "a FIFO"), (link, "a symbolic link"), (Path("/dev/null"), "a character device")):
        r = run_cli(["export", run100, "--format", fmt, "-o", out], timeout=120)
        assert r.returncode == 2, r.stderr
        assert one_error_line(r.stderr) == f"{out} exists and is {kind}; refusing to replace it with a file"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# -- run-folder readers ----------------------------------------------------------------------------


def test_run_folder_files_that_are_fifos_or_devices_are_refused(tmp_path, run100, deadline):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.npz", "gradcheck.md"):
        (run / name).write_bytes((run100 / name).read_bytes())
    os.mkfifo(run / "config.json")
    with pytest.raises(ValueError, match=r"config.json is not a readable JSON file \(it is a FIFO"):
        RunFolder(run).write_report(plot=False)
    (run / "metrics.csv").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="character device"):
        read_metrics_csv(run / "metrics.csv")


def test_a_damaged_metrics_csv_names_the_file(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text("step,epoch,loss,smooth_loss,val_loss,val_chars\n1,0,x,1,,\n")
    with pytest.raises(ValueError, match=f"{f} is not a readable metrics file"):
        read_metrics_csv(f)


# -- a full filesystem ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_an_export_onto_a_full_disk_is_one_line_naming_the_file(tmp_path, run100, capsys, monkeypatch, fmt):
    """Before: the torch export ended in "RuntimeError: unexpected pos"
    (torch.save's view of a failed write); the ONNX one gave a clean line.
    The temporary file is /dev/full here, which fails every write with ENOSPC."""
    pytest.importorskip("onnx" if fmt == "onnx" else "torch")
    import tempfile

    from charrnn_ext import cli

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    stand_in = tmp_path / "never-created.tmp"
    monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: (os.open("/dev/full", os.O_WRONLY), str(stand_in)))
    out = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    assert cli.main(["export", str(run100), "--format", fmt, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"charrnn: error: [Errno 28] cannot write {out}: No space left on device\n"
    assert not out.exists() and not stand_in.exists()


def test_a_torch_writer_error_without_an_os_error_is_one_line(tmp_path, run100, capsys, monkeypatch):
    """torch's own report of a write it could not finish (no OSError reached Python)."""
    torch = pytest.importorskip("torch")
    from charrnn_ext import cli

    def failing_save(obj, fh):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    out = tmp_path / "model.pt"
    assert cli.main(["export", str(run100), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"charrnn: error: cannot write {out}: torch could not write the file (PytorchStreamWriter failed writing "
        "file data/0: file write failed)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- a torch export declaring a network larger than its tensors -----------------------------------

_LOAD_DECLARED = r"""
import resource, sys
from charrnn_ext.export.torch import CharRNNModule
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) << 10
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))  # 1 GiB more than after the imports
try:
    CharRNNModule.load(sys.argv[1])
except ValueError as exc:
    print(exc)
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"hidden": 20000},
            "declares vocab_size {K}, hidden 20000, but rnn.weight_ih_l0 is (8, {K}), not (20000, {K})",
        ),
        ({"vocab_size": 10**6}, "but rnn.weight_ih_l0 is (8, {K}), not (8, 1000000)"),
        ({"layers": 10**9}, "declares 1000000000 layers; its tensors hold fewer"),
        ({"layers": 2}, "the declared rnn of 2 layer(s) does not match its tensors"),
        ({"cell": "lstm"}, "but rnn.weight_ih_l0 is (8, {K}), not (32, {K})"),
        ({"hidden": True}, "vocab_size, hidden and layers must be integers >= 1"),
        ({"dtype": "float16"}, "entry 'dtype' is 'float16'"),
    ],
)
def test_a_torch_export_is_checked_against_its_tensors_before_the_network_is_built(tmp_path, change, message):
    """Before: a 100 KB .pt declaring hidden 6000 built the declared network
    (1.9 GB) before being refused. In a child allowed 1 GiB more than its
    imports took, the refusal must come from the check (hidden 20000 in
    float64 would need 3.2 GB), not from a MemoryError."""
    torch = pytest.importorskip("torch")
    import subprocess
    import sys

    from charrnn_ext.export.torch import CharRNNModule

    module = CharRNNModule("rnn", 5, 8, 1, vocab="abcde")
    obj = module.export_dict()
    K = 5
    obj.update(change)
    bad = tmp_path / "bad.pt"
    torch.save(obj, bad)
    assert bad.stat().st_size < 100_000
    r = subprocess.run([sys.executable, "-c", _LOAD_DECLARED, str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.startswith(f"{bad}: damaged torch export (") and message.format(K=K) in r.stdout, r.stdout


# -- texts that are not what they seem -----------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_detected(tmp_path, encoding):
    """Before: trained on as NUL-interleaved UTF-8."""
    from charrnn_ext.data import load_text

    f = tmp_path / "play.txt"
    f.write_bytes(("ROMEO: But soft, what light through yonder window breaks?\n" * 20).encode(encoding))
    order = encoding.upper().replace("UTF-16-", "UTF-16")
    with pytest.raises(ValueError, match=f"looks like {order} text without a byte-order mark"):
        load_text(f)
    f.write_text("ROMEO: plain UTF-8 text, with a NUL \0 or two \0 in it is still text\n" * 20)
    assert load_text(f).startswith("ROMEO")


def test_a_text_whose_name_is_not_utf8_is_refused_before_training(tmp_path):
    """Before: such a --text trained to the end, then failed to write its report, forever."""
    from charrnn_ext.data import load_text

    name = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes: not UTF-8
    path = tmp_path / name
    try:
        path.write_text("some text to train on\n")
    except (OSError, UnicodeEncodeError):
        pytest.skip("the filesystem refuses non-UTF-8 names")
    with pytest.raises(ValueError, match=r"the file name .* is not UTF-8"):
        load_text(path)
