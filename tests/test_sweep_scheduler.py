"""Scheduler addresses that are not a Dask scheduler: refused by their
form before any connection, or answered after a bounded wait saying what
was found at the address, with no hang at exit and no traceback. Every
server here is a child process on 127.0.0.1, stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn_ext import cli
from cli_helpers import one_error_line, run_cli
from helpers import HAVE_SWEEP

pytestmark = pytest.mark.skipif(not HAVE_SWEEP, reason="needs the [sweep] extra: optuna, optuna-integration, dask")

SPACE = "[fixed]\nsteps = 3\n[search]\nhidden = { choice = [4, 8] }\n"

# A server on 127.0.0.1 that prints its port: "silent" accepts and says nothing (as an HTTP server
# waiting for a request does), "junk" answers every connection with bytes of another protocol.
_SERVER = r"""
import socket, sys, threading
mode = sys.argv[1]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
held = []
while True:
    conn, _ = srv.accept()
    held.append(conn)
    if mode == "junk":
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\nServer: not-dask\r\n\r\n" * 4)
"""


@contextlib.contextmanager
def server(mode: str):
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_error(tmp_path: Path, capsys, address: str) -> str:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    out = tmp_path / "out"
    code = cli.main(["sweep", str(space), "--out", str(out), "--scheduler", address, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("charrnn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()  # nothing left behind
    return err[len("charrnn: error: ") : -1]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("inproc://x", "inproc:// is not supported by charrnn sweep; it reaches only a scheduler inside this process"),
        ("ucx://127.0.0.1:8786", "ucx:// is not supported by charrnn sweep; use tcp://"),
        (
            "tls://127.0.0.1:8786",
            "tls:// needs Dask's TLS settings (distributed.comm.tls.client.cert and key), which are unset",
        ),
        ("tcp://127.0.0.1:99999", "the port must be a number in [1, 65535], got '99999'"),
        ("tcp://127.0.0.1:-1", "the port must be a number in [1, 65535], got '-1'"),
        ("tcp://127.0.0.1:0", "the port must be a number in [1, 65535], got '0'"),
        ("tcp://256.1.1.1:8786", "256.1.1.1 is not an IPv4 address"),
        ("tcp://[::g]:8786", "[::g] is not an IPv6 address"),
        ("tcp://" + "h" * 100_000 + ":8786", "100,011 characters; an address has at most 300"),
        ("tcp://bad_host!:8786", "'bad_host!' is not a host name"),
        ("tcp://127.0.0.1", "it names no host:port"),
        ("gopher://127.0.0.1:70", "unknown protocol gopher://; expected tcp://"),
    ],
)
def test_an_address_that_cannot_be_a_scheduler_is_refused_by_its_form(tmp_path, capsys, address, why):
    """Before: these passed the check (ports 99999 and -1, 256.1.1.1) or gave
    a cryptic line, then a 40 s hang at exit and a Client.__del__ traceback."""
    err = sweep_error(tmp_path, capsys, address)
    assert err.endswith(f"is not the address of a Dask scheduler such as tcp://host:8786 ({why})"), err
    assert len(err) < 400


def test_a_refused_connection_says_refused_at_once(tmp_path, capsys):
    """Before: 21 s, then "timed out"."""
    port = refused_port()
    err = sweep_error(tmp_path, capsys, f"tcp://127.0.0.1:{port}")
    assert err == f"nothing accepts connections at 127.0.0.1:{port} (connection refused): is the scheduler running?"


def test_a_server_speaking_another_protocol_is_named(tmp_path, capsys):
    with server("junk") as port:
        err = sweep_error(tmp_path, capsys, f"tcp://127.0.0.1:{port}")
    assert err.startswith(f"127.0.0.1:{port} accepted the connection but is not a Dask scheduler: it answered b'HTTP")


@pytest.mark.slow
def test_a_silent_server_is_answered_after_a_bounded_wait(tmp_path, capsys):
    """Before: a port that accepted TCP but never spoke Dask (a plain HTTP
    server) kept the sweep silent for 400 s and more."""
    with server("silent") as port:
        err = sweep_error(tmp_path, capsys, f"tcp://127.0.0.1:{port}")
    assert err == (
        f"127.0.0.1:{port} accepted the connection but is not a Dask scheduler: it sent nothing within 5 s "
        f"(a Dask server speaks first)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["junk", "refused", "form"])
def test_the_command_exits_promptly_without_a_traceback(tmp_path, mode):
    """The whole command in a child: one error line, and the process ends
    (before: a 40 s hang at exit and a Client.__del__ traceback). The 60 s
    bound only catches a hang."""
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    with contextlib.ExitStack() as stack:
        if mode == "junk":
            address = f"tcp://127.0.0.1:{stack.enter_context(server('junk'))}"
        elif mode == "refused":
            address = f"tcp://127.0.0.1:{refused_port()}"
        else:
            address = "inproc://x"
        r = run_cli(["sweep", space, "--out", tmp_path / "out", "--scheduler", address, "--no-progress"], timeout=60)
    assert r.returncode == 2
    one_error_line(r.stderr)
    assert "Traceback" not in r.stderr and "__del__" not in r.stderr
