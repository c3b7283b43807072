"""``charrnn serve`` as a real process on loopback (stopped by its pid):
streams side by side, the concurrent limit with real streams, and a client
that disconnects mid-stream giving its slot back."""

from __future__ import annotations

import contextlib

import pytest

from serve_helpers import active_streams, iter_events, make_runs, parse_events, served, wait_until

pytest.importorskip("starlette", reason="charrnn serve needs the serve extra (starlette, uvicorn, httpx, httpx2)")
pytest.importorskip("uvicorn", reason="charrnn serve needs the serve extra (starlette, uvicorn, httpx, httpx2)")
httpx = pytest.importorskip("httpx", reason="the HTTP client of these tests is httpx (the serve extra)")

pytestmark = pytest.mark.slow

#: Longer than any of these tests lasts at the sampler's speed: these streams end only when the client leaves.
ENDLESS = 400_000_000
MAX_STREAMS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-process")
    runs = make_runs(root)
    with served(runs, "--max-streams", str(MAX_STREAMS), "--max-chars", str(ENDLESS), log=root / "server.log") as base:
        yield base


@contextlib.contextmanager
def open_stream(client, **params):
    """A stream read up to its first piece of text; leaving the block disconnects."""
    with client.stream("POST", "/api/sample", json={"model": "rnn-small", **params}) as r:
        assert r.status_code == 200
        events = iter_events(r.iter_lines())
        assert next(events)[0] == "start"
        assert next(events)[0] == "text"
        yield events


def test_the_server_answers_on_loopback_with_its_models(server):
    info = httpx.get(f"{server}/api/info", timeout=10).json()
    assert server.startswith("http://127.0.0.1:")
    assert [m["name"] for m in info["models"]] == ["gru-2x16", "loose.npz", "rnn-small"]
    assert info["limits"]["max_streams"] == MAX_STREAMS and info["limits"]["active_streams"] == 0


def test_a_long_stream_does_not_hold_up_another(server):
    with httpx.Client(base_url=server, timeout=60) as client, open_stream(client, length=ENDLESS, seed=1) as first:
        r = client.post("/api/sample", json={"model": "gru-2x16", "length": 3000, "seed": 2})
        events = parse_events(r.text)
        assert r.status_code == 200 and events[-1] == ("done", events[-1][1]) and events[-1][1]["chars"] == 3000
        assert next(first)[0] == "text"  # the long one is still going
    wait_until(lambda: active_streams(server) == 0, what="both slots given back")


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    with httpx.Client(base_url=server, timeout=60) as client:
        with open_stream(client, length=ENDLESS, seed=3), open_stream(client, length=ENDLESS, seed=4):
            assert active_streams(server) == MAX_STREAMS
            r = client.post("/api/sample", json={"model": "rnn-small", "length": 10})
            assert r.status_code == 429 and f"all {MAX_STREAMS} streams" in r.json()["error"]
        # both clients have gone: without reading on, their streams must end and give their slots back
        wait_until(lambda: active_streams(server) == 0, what="the slots of the disconnected streams given back")
        for _ in range(MAX_STREAMS + 1):  # every slot serves again
            r = client.post("/api/sample", json={"model": "rnn-small", "length": 50, "seed": 1})
            assert r.status_code == 200 and parse_events(r.text)[-1][0] == "done"
    assert active_streams(server) == 0


def test_many_disconnects_leak_no_slot(server):
    with httpx.Client(base_url=server, timeout=60) as client:
        for seed in range(10):
            with open_stream(client, length=ENDLESS, seed=seed):
                pass
            wait_until(lambda: active_streams(server) == 0, what=f"slot of stream {seed} given back")


def test_a_server_that_cannot_start_is_reported(tmp_path):
    from charrnn_ext.serve.process import serve_process

    with pytest.raises(RuntimeError, match="exited with 2 before answering"), serve_process(tmp_path / "missing"):
        pass


def test_a_port_in_use_is_one_error_line(tmp_path, server):
    import subprocess
    import sys
    from urllib.parse import urlsplit

    from charrnn_ext.data import Vocabulary
    from charrnn_ext.model import CharRNN

    port = urlsplit(server).port  # the module's server listens there
    CharRNN.new(Vocabulary.from_text("ab"), hidden=4).save(tmp_path / "m.npz")
    r = subprocess.run(
        [sys.executable, "-m", "charrnn_ext", "serve", str(tmp_path / "m.npz"), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"charrnn: error: the server could not listen on 127.0.0.1:{port} (see the message above)"
    assert "address already in use" in r.stderr.lower()


def test_a_stopped_server_ends_its_streams_cleanly(tmp_path):
    """SIGTERM (or Ctrl-C) with a stream under way: the stream ends with an error event saying why,
    and the process exits with the code of an interrupted command."""
    import signal
    import subprocess
    import sys

    from charrnn_ext.data import Vocabulary
    from charrnn_ext.model import CharRNN
    from charrnn_ext.serve.process import free_port

    CharRNN.new(Vocabulary.from_text("abc"), hidden=8).save(tmp_path / "m.npz")
    port = free_port()
    cmd = [sys.executable, "-m", "charrnn_ext", "serve", str(tmp_path / "m.npz"), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--max-chars", str(ENDLESS)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base), seconds=60, what="the server answering")
        with httpx.Client(base_url=base, timeout=60) as client:
            with client.stream("POST", "/api/sample", json={"model": "m.npz", "length": ENDLESS}) as r:
                events = iter_events(r.iter_lines())
                assert [next(events)[0], next(events)[0]] == ["start", "text"]
                proc.send_signal(signal.SIGTERM)
                rest = [e for e in events if e[0] != "text"]
        assert len(rest) == 1 and rest[0][0] == "error" and "the server is stopping" in rest[0][1]["error"]
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/info", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
