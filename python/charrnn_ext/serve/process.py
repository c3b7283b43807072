"""``charrnn serve`` as a child process: started on 127.0.0.1 and a free
port, waited for until it answers, and stopped by its pid. For scripts,
notebooks, the load benchmark and the tests::

    with serve_process("runs/", "--max-streams", "8") as url:
        ...  # url is "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["free_port", "serve_process"]

#: How long a server may take to load its models and listen.
START_SECONDS = 120.0
#: How long a stopped server may take to end before it is killed.
STOP_SECONDS = 15.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/info", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serve_process(
    path: str | os.PathLike[str], *args: str, log: IO[str] | None = None, start_seconds: float = START_SECONDS
) -> Iterator[str]:
    """Run ``charrnn serve PATH ARGS`` on 127.0.0.1 and a free port; yield
    its base URL once it answers; stop it (SIGTERM, then SIGKILL) by its pid.
    Its output goes to ``log`` (None: discarded). RuntimeError if it exits
    or does not answer within ``start_seconds``."""
    port = free_port()
    cmd = [sys.executable, "-m", "charrnn_ext", "serve", str(path), "--host", "127.0.0.1", "--port", str(port), *args]
    out = subprocess.DEVNULL if log is None else log
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"charrnn serve {Path(path)} exited with {proc.returncode} before answering")
            if time.monotonic() > deadline:
                raise RuntimeError(f"charrnn serve {Path(path)} did not answer within {start_seconds:g} s")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
