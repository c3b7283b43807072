"""Shared by the tests of ``charrnn serve``: a folder of small runs, a real
server process on loopback (stopped by its pid), and a reader of the
server-sent events."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import SMALL_TEXT, TINY

#: How long a server process may take to load its models and listen.
START_SECONDS = 60


def make_runs(root: Path) -> Path:
    """``root/runs``: two run folders (an RNN and a two-layer GRU, briefly
    trained on SMALL_TEXT) and a loose, untrained LSTM checkpoint."""
    from charrnn_ext.data import corpus_from_string
    from charrnn_ext.model import CharRNN

    runs = root / "runs"
    corpus = corpus_from_string(SMALL_TEXT)
    CharRNN.new(corpus, hidden=32, seed=1).fit(SMALL_TEXT, steps=60, out=runs / "rnn-small", **TINY)
    CharRNN.new(corpus, hidden=16, seed=2, cell="gru", layers=2).fit(
        SMALL_TEXT, steps=40, out=runs / "gru-2x16", **TINY
    )
    CharRNN.new(corpus, hidden=8, seed=3, cell="lstm").save(runs / "loose.npz")
    return runs


@contextlib.contextmanager
def served(path: Path, *args: str, log: Path | None = None) -> Iterator[str]:
    """A ``charrnn serve PATH ARGS`` process on 127.0.0.1 and a free port (its output to ``log``)."""
    from charrnn_ext.serve.process import serve_process

    with contextlib.ExitStack() as stack:
        out = None if log is None else stack.enter_context(open(log, "w"))
        yield stack.enter_context(serve_process(path, *args, log=out, start_seconds=START_SECONDS))


def parse_events(text: str) -> list[tuple[str, object]]:
    """(event name, decoded data) of every event in a server-sent event stream."""
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        name, data = "message", []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        events.append((name, json.loads("\n".join(data))))
    return events


def iter_events(lines: Iterator[str]) -> Iterator[tuple[str, object]]:
    """The events of a stream read line by line (httpx's ``iter_lines``), as they arrive."""
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def active_streams(base: str) -> int:
    import httpx

    return int(httpx.get(f"{base}/api/info", timeout=10).json()["limits"]["active_streams"])


def wait_until(predicate, seconds: float = 20.0, what: str = "the condition") -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``seconds`` (a bound on a hang, not a timing test)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {seconds} s")
        time.sleep(0.05)
