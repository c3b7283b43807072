"""``charrnn serve``'s HTTP API through Starlette's test client: the models
found under PATH, every sampling control (the text equals what the model's
own sampler draws with the same settings), bad input of every kind answered
as JSON with a 4xx, path traversal, the limits, and the seam to the explain
view."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="charrnn serve needs the serve extra (starlette, uvicorn, httpx, httpx2)")
try:
    import httpx2  # noqa: F401  (Starlette's test client takes it over httpx from 1.x on)
except ImportError:
    pytest.importorskip("httpx", reason="Starlette's test client needs httpx2 or httpx (the serve extra)")

from starlette.testclient import TestClient

from charrnn_ext import cli
from charrnn_ext.config import group, option
from charrnn_ext.serve.app import SECURITY_HEADERS, create_app
from charrnn_ext.serve.registry import Registry
from charrnn_ext.serve.trace import TraceSupport, find_trace
from serve_helpers import make_runs, parse_events

MAX_STREAMS, MAX_CHARS = 3, 5000
NO_TRACE = TraceSupport(None, None, [], "the explain view is not available in this installation (test)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return make_runs(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def registry(runs) -> Registry:
    return Registry(runs)


@pytest.fixture
def app(registry):
    return create_app(registry, max_streams=MAX_STREAMS, max_chars=MAX_CHARS, trace=NO_TRACE)


@pytest.fixture
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def sample(client, **params):
    r = client.post("/api/sample", json=params)
    return r, (parse_events(r.text) if r.status_code == 200 else None)


def joined(events) -> str:
    return "".join(data for name, data in events if name == "text")


def assert_error(r, status: int, *pieces: str) -> str:
    """A JSON error of ``status`` whose message holds every piece, and no traceback."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    for piece in pieces:
        assert piece in body["error"], (piece, body["error"])
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]


# ---------------------------------------------------------------------------
# the models and the page
# ---------------------------------------------------------------------------


def test_info_lists_every_model_with_what_the_picker_shows(client, registry):
    info = client.get("/api/info").json()
    by_name = {m["name"]: m for m in info["models"]}
    assert list(by_name) == ["gru-2x16", "loose.npz", "rnn-small"]
    assert (by_name["rnn-small"]["cell"], by_name["rnn-small"]["layers"], by_name["rnn-small"]["hidden"]) == (
        "rnn",
        1,
        32,
    )
    assert (by_name["gru-2x16"]["cell"], by_name["gru-2x16"]["layers"], by_name["gru-2x16"]["hidden"]) == ("gru", 2, 16)
    assert by_name["loose.npz"]["cell"] == "lstm" and by_name["loose.npz"]["val_loss"] is None  # never validated
    summary = json.loads((registry.root / "rnn-small" / "summary.json").read_text())
    assert by_name["rnn-small"]["val_loss"] == pytest.approx(summary["final_val_loss"], rel=1e-12)
    for m in info["models"]:
        assert len(m["trained"]) == len("2026-01-01 00:00") and m["vocab_size"] == 24
    assert info["limits"] == {"max_streams": MAX_STREAMS, "max_chars": MAX_CHARS, "active_streams": 0}
    assert info["trace"] is False and "not available" in info["trace_reason"] and info["trace_assets"] == []


def test_info_carries_the_option_table_of_the_command_line(client):
    options = client.get("/api/info").json()["options"]
    assert list(options) == [o.name for o in group("sample")] + ["seed"]
    for name, spec in options.items():
        o = option(name)
        assert (spec["low"], spec["high"], spec["low_open"], spec["high_open"]) == (
            o.low,
            o.high,
            o.low_open,
            o.high_open,
        )
        assert spec["help"] == o.help and spec["kind"] == o.kind.__name__
        assert spec["default"] == (None if name == "seed" else o.default)


def test_the_page_and_its_assets_come_from_the_server_with_a_same_origin_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'src="/static/app.js"' in html and 'href="/static/style.css"' in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "http://" not in r.text and "https://" not in r.text
    for control in ("prime", "length", "temperature", "top_k", "top_p", "seed", "greedy", "sample", "stop"):
        assert f'id="{control}"' in html


def test_an_unknown_route_or_method_is_a_json_error(client):
    assert_error(client.get("/no/such/page"), 404)
    assert_error(client.get("/api/sample"), 405)
    assert_error(client.put("/api/info"), 405)


# ---------------------------------------------------------------------------
# sampling: every control
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "controls",
    [
        {},
        {"temperature": 0.5},
        {"temperature": 3.0},
        {"top_k": 3},
        {"top_p": 0.6},
        {"top_k": 5, "top_p": 0.9, "temperature": 0.8},
        {"greedy": True},
        {"prime": "The cat"},
        {"prime": "A bird sang", "temperature": 0.7, "top_k": 4},
        {"seed": 2**64 - 1},
        {"length": 1},
        {"length": 777},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults",
)
@pytest.mark.parametrize("name", ["rnn-small", "gru-2x16"])
def test_a_stream_is_the_text_the_model_draws_with_the_same_controls(client, registry, name, controls):
    params = {"length": 300, "seed": 11, **controls}
    r, events = sample(client, model=name, **params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) <= {"text"}
    start, done = events[0][1], events[-1][1]
    assert start == {"model": name, "seed": params["seed"], "prime": params.get("prime"), "length": params["length"]}
    text = joined(events)
    model = registry.get(name).model
    want = model.sample(
        params["length"],
        temperature=params.get("temperature", 1.0),
        prime=params.get("prime"),
        seed=params["seed"],
        top_k=params.get("top_k", 0),
        top_p=params.get("top_p", 1.0),
        greedy=params.get("greedy", False),
    )
    assert text == want
    assert done["chars"] == len(text) == params["length"] and done["seconds"] >= 0


def test_greedy_text_does_not_depend_on_the_seed(client):
    texts = {joined(sample(client, model="rnn-small", length=200, greedy=True, seed=s)[1]) for s in (1, 2, 3)}
    assert len(texts) == 1


def test_without_a_seed_the_server_draws_one_and_reports_it(client):
    _, events = sample(client, model="rnn-small", length=200)
    seed = events[0][1]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**64
    _, again = sample(client, model="rnn-small", length=200, seed=seed)
    assert joined(again) == joined(events)
    _, other = sample(client, model="rnn-small", length=200, seed=None)  # null: a random seed too
    assert other[0][1]["seed"] != seed  # two draws from 2**64 seeds


def test_an_empty_prime_means_the_default_start(client):
    _, empty = sample(client, model="rnn-small", length=100, seed=5, prime="")
    _, none = sample(client, model="rnn-small", length=100, seed=5)
    assert empty[0][1]["prime"] is None and joined(empty) == joined(none)


def test_length_zero_is_an_empty_stream(client):
    _, events = sample(client, model="rnn-small", length=0, seed=1)
    assert [e for e, _ in events] == ["start", "done"] and events[-1][1]["chars"] == 0


def test_the_first_piece_comes_alone_and_later_ones_in_batches(client, monkeypatch):
    from charrnn_ext.serve import streaming

    n = streaming.PIECE_CHARS
    monkeypatch.setattr(streaming, "BATCH_SECONDS", 0.0)  # one piece per event
    _, events = sample(client, model="rnn-small", length=10 * n, seed=1)
    assert [len(d) for e, d in events if e == "text"] == [n] * 10
    monkeypatch.setattr(streaming, "BATCH_SECONDS", 1e9)  # as many as a trip may draw
    monkeypatch.setattr(streaming, "BATCH_PIECES", 4)
    _, batched = sample(client, model="rnn-small", length=10 * n + 5, seed=1)
    assert [len(d) for e, d in batched if e == "text"] == [n, 4 * n, 4 * n, n + 5]
    assert joined(batched)[: 10 * n] == joined(events)  # the same text, cut differently


# ---------------------------------------------------------------------------
# bad input: a 4xx with a message, never a traceback
# ---------------------------------------------------------------------------

#: (parameters, status, pieces of the message): the cases of the closing note.
BAD_SAMPLE_REQUESTS = [
    ({"length": -1}, 400, "length must be an integer in [0, 1_000_000_000], got -1"),
    ({"length": "100"}, 400, "length must be an integer in [0, 1_000_000_000], got str '100'"),
    ({"length": 2.5}, 400, "length must be an integer"),
    ({"length": True}, 400, "length must be an integer"),
    ({"length": None}, 400, "length must be an integer"),
    ({"temperature": 0}, 400, "temperature must be a number in (0, 1e+06], got 0"),
    ({"temperature": -1.5}, 400, "temperature must be a number in (0, 1e+06]"),
    ({"temperature": 1e7}, 400, "temperature must be a number in (0, 1e+06]"),
    ({"temperature": "hot"}, 400, "temperature must be a number"),
    ({"top_k": -1}, 400, "top_k must be an integer in [0, 1_114_112], got -1"),
    ({"top_k": 1.5}, 400, "top_k must be an integer"),
    ({"top_p": 0}, 400, "top_p must be a number in (0, 1], got 0"),
    ({"top_p": 1.01}, 400, "top_p must be a number in (0, 1]"),
    ({"greedy": "yes"}, 400, "greedy must be a bool, got str 'yes'"),
    ({"greedy": 1}, 400, "greedy must be a bool"),
    ({"seed": -1}, 400, "seed must be an integer in [0, 18_446_744_073_709_551_616), got -1"),
    ({"seed": 2**64}, 400, "seed must be an integer in [0, 18_446_744_073_709_551_616)"),
    ({"seed": "42"}, 400, "seed must be an integer"),
    ({"prime": 7}, 400, "prime must be a string, got int 7"),
    ({"prime": "€ at"}, 400, "prime contains character(s) '€' that are not in the model's 24-character vocabulary"),
    ({"lenght": 10}, 400, "unknown parameter(s) 'lenght'; known: model, length, temperature"),
    ({"model": None}, 400, "model must be the name of a served model"),
    ({"model": 3}, 400, "model must be the name of a served model (see /api/info), got 3"),
    ({"model": "no-such-model"}, 404, "no model named 'no-such-model' is served here"),
    (
        {"length": MAX_CHARS + 1},
        429,
        f"this request asks for {MAX_CHARS + 1:,} characters (prime and length); this server allows at most "
        f"{MAX_CHARS:,} per request",
    ),
    ({"length": MAX_CHARS - 3, "prime": "The cat"}, 429, f"asks for {MAX_CHARS + 4:,} characters (prime and length)"),
    ({"length": 10**9}, 429, "at most 5,000 per request"),
]


@pytest.mark.parametrize(
    "params,status,message", BAD_SAMPLE_REQUESTS, ids=[json.dumps(p)[:40] for p, _, _ in BAD_SAMPLE_REQUESTS]
)
def test_a_bad_sampling_parameter_is_refused_with_its_message(client, app, params, status, message):
    body = {"model": "rnn-small", **params}
    if body.get("model") is None:
        del body["model"]
    assert_error(client.post("/api/sample", json=body), status, message)
    assert app.state.server.slots.in_use == 0  # a refused request holds no slot


def test_a_non_finite_number_is_refused(client):
    for token in ("NaN", "Infinity", "-Infinity"):
        body = '{"model": "rnn-small", "temperature": ' + token + "}"
        r = client.post("/api/sample", content=body, headers={"content-type": "application/json"})
        assert_error(r, 400, "temperature must be a number in (0, 1e+06]")


@pytest.mark.parametrize(
    "body,content_type,status,message",
    [
        (b"{not json", "application/json", 400, "the request body is not a JSON object (JSONDecodeError"),
        (b"[1, 2]", "application/json", 400, "the request body must be a JSON object, got list"),
        (b'"rnn-small"', "application/json", 400, "must be a JSON object, got str"),
        (b"\xff\xfe", "application/json", 400, "UnicodeDecodeError"),
        (b"", "application/json", 400, "not a JSON object"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "application/json",
            413,
            "larger than 85,536 bytes, the most this server reads",
        ),
        (b"model=rnn-small", "application/x-www-form-urlencoded", 415, "content-type application/json"),
        (b'{"model": "rnn-small"}', "text/plain", 415, "JSON object with content-type application/json"),
    ],
    ids=["broken", "array", "string", "not-utf8", "empty", "too-large", "form", "text-plain"],
)
def test_a_malformed_body_is_refused(client, body, content_type, status, message):
    r = client.post("/api/sample", content=body, headers={"content-type": content_type})
    assert_error(r, status, message)


def test_json_nested_deeply_within_the_body_limit_is_a_400(client):
    body = b"[" * 40_000 + b"]" * 40_000
    assert_error(client.post("/api/sample", content=body, headers={"content-type": "application/json"}), 400)


def test_an_error_inside_the_server_is_a_500_without_detail(registry):
    def broken(model, text, top_k=5):
        raise RuntimeError("secret internals")

    app = create_app(registry, trace=TraceSupport(broken, None, [], ""))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/api/trace", json={"model": "rnn-small", "text": "The cat"})
    message = assert_error(r, 500, "internal error")
    assert "secret" not in message and "RuntimeError" not in r.text


# ---------------------------------------------------------------------------
# model names: only what PATH holds
# ---------------------------------------------------------------------------

TRAVERSALS = [
    "../runs/rnn-small",
    "rnn-small/../gru-2x16",
    "rnn-small/best.npz",
    "rnn-small/last.npz",
    "rnn-small/",
    "./rnn-small",
    "/etc/passwd",
    "..",
    ".",
    "runs/rnn-small",
    "%2e%2e%2frnn-small",
    "rnn-small\x00",
    "RNN-SMALL",
    "~/rnn-small",
    "C:\\rnn-small",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_model_name_can_only_be_one_the_server_listed(client, name):
    assert_error(client.post("/api/sample", json={"model": name, "length": 5}), 404, "no model named")


def test_a_model_given_by_an_absolute_path_is_refused_even_if_the_file_exists(client, runs):
    path = str(runs / "rnn-small" / "best.npz")
    assert os.path.exists(path)
    assert_error(client.post("/api/sample", json={"model": path, "length": 5}), 404, "no model named")


@pytest.mark.parametrize(
    "url",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/../../config.py",
        "/explain/../app.py",
    ],
)
def test_static_files_do_not_reach_outside_their_folder(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert "def create_app" not in r.text and "OPTIONS" not in r.text


def test_links_out_of_path_are_not_served(tmp_path, runs):
    root = tmp_path / "root"
    root.mkdir()
    (root / "inside.npz").write_bytes((runs / "loose.npz").read_bytes())
    (root / "outside.npz").symlink_to(runs / "loose.npz")
    (root / "outside-run").symlink_to(runs / "rnn-small", target_is_directory=True)
    assert Registry(root).names() == ["inside.npz"]


def test_path_may_be_a_checkpoint_a_run_folder_or_a_folder_of_runs(runs, tmp_path):
    assert Registry(runs / "loose.npz").names() == ["loose.npz"]
    assert Registry(runs / "rnn-small").names() == ["rnn-small"]
    nested = tmp_path / "sweep" / "trials" / "003"
    nested.parent.mkdir(parents=True)
    (nested.parent / "003").symlink_to(runs / "gru-2x16")  # a link inside PATH's tree but out of it: skipped
    real = tmp_path / "sweep" / "trials" / "004"
    real.mkdir()
    (real / "best.npz").write_bytes((runs / "gru-2x16" / "best.npz").read_bytes())
    assert Registry(tmp_path / "sweep").names() == ["trials/004"]


def test_a_path_without_models_or_with_a_broken_one_is_reported(tmp_path, runs):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a checkpoint"):
        Registry(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no model that loads"):
        Registry(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "broken.npz").write_bytes(b"not a zip archive")
    (mixed / "good.npz").write_bytes((runs / "loose.npz").read_bytes())
    warnings: list[str] = []
    reg = Registry(mixed, warn=warnings.append)
    assert reg.names() == ["good.npz"] and len(warnings) == 1 and "broken.npz" in warnings[0]


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------


def test_past_the_concurrent_streams_the_answer_is_429_and_a_freed_slot_serves_again(client, app):
    slots = app.state.server.slots
    held = [slots.try_take() for _ in range(MAX_STREAMS)]
    assert all(held) and client.get("/api/info").json()["limits"]["active_streams"] == MAX_STREAMS
    assert_error(
        client.post("/api/sample", json={"model": "rnn-small", "length": 5}), 429, f"all {MAX_STREAMS} streams"
    )
    held[0].release()
    held[0].release()  # giving a slot back twice frees it once
    assert slots.in_use == MAX_STREAMS - 1
    r, events = sample(client, model="rnn-small", length=5, seed=1)
    assert r.status_code == 200 and events[-1][0] == "done"
    assert slots.in_use == MAX_STREAMS - 1  # the finished stream gave its slot back
    for slot in held[1:]:
        slot.release()
    assert slots.in_use == 0


def test_a_stopping_server_takes_no_new_stream(client, app):
    app.state.server.stop()
    assert_error(client.post("/api/sample", json={"model": "rnn-small", "length": 5}), 503, "the server is stopping")
    assert app.state.server.slots.in_use == 0


def test_exactly_max_chars_is_allowed(client):
    r, events = sample(client, model="rnn-small", length=MAX_CHARS - 3, prime="The", seed=1)
    assert r.status_code == 200 and events[-1][1]["chars"] == MAX_CHARS - 3


def test_the_host_header_must_name_this_machine_when_bound_to_loopback(registry):
    from charrnn_ext.serve.run import allowed_hosts

    app = create_app(registry, allowed_hosts=allowed_hosts("127.0.0.1"), trace=NO_TRACE)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/info").status_code == 200
        assert c.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/api/info", headers={"host": "[::1]:8000"}).status_code == 200
        r = c.get("/api/info", headers={"host": "attacker.example:8000"})
        assert_error(r, 400, "does not answer to that Host name")
        assert r.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]
    assert allowed_hosts("0.0.0.0") is None  # on the network (behind a proxy) any name


# ---------------------------------------------------------------------------
# the explain seam
# ---------------------------------------------------------------------------


def test_trace_is_501_with_a_message_while_the_explain_view_is_missing(client):
    r = client.post("/api/trace", json={"model": "rnn-small", "text": "The cat"})
    assert_error(r, 501, "explain view is not available")


def test_find_trace_sees_whether_the_explain_module_is_there():
    import importlib.util

    support = find_trace()
    assert support.available == (importlib.util.find_spec("charrnn_ext.explain") is not None)
    assert not find_trace("charrnn_ext.no_such_module").available


@pytest.fixture
def traced(registry, tmp_path):
    """An app whose explain view is a stand-in that records its calls, with two assets."""
    calls = []

    def build_payload(model, text, top_k=5):
        if "!" in text:
            raise ValueError("text contains character(s) '!' that are not in the model's vocabulary")
        calls.append((model, text, top_k))
        return {"text": text, "surprisal": [0.5] * (len(text) - 1), "top_k": top_k}

    (tmp_path / "explain.js").write_text("window.charrnnExplain = {render() {}};")
    (tmp_path / "explain.css").write_text(".x {}")
    (tmp_path / "__init__.py").write_text("secret = 1")
    support = TraceSupport(build_payload, tmp_path, ["explain.css", "explain.js"], "")
    app = create_app(registry, max_streams=MAX_STREAMS, max_chars=MAX_CHARS, trace=support)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, calls, app


def test_trace_passes_the_model_and_text_to_the_explain_view(traced, registry):
    client, calls, app = traced
    info = client.get("/api/info").json()
    assert info["trace"] is True and info["trace_assets"] == ["/explain/explain.css", "/explain/explain.js"]
    r = client.post("/api/trace", json={"model": "gru-2x16", "text": "The cat sat"})
    assert r.status_code == 200 and r.json() == {"text": "The cat sat", "surprisal": [0.5] * 10, "top_k": 5}
    r = client.post("/api/trace", json={"model": "rnn-small", "text": "The dog", "top_k": 3})
    assert r.status_code == 200 and r.json()["top_k"] == 3
    assert [(m, t, k) for m, t, k in calls] == [
        (registry.get("gru-2x16").model, "The cat sat", 5),
        (registry.get("rnn-small").model, "The dog", 3),
    ]
    assert app.state.server.slots.in_use == 0
    assert "charrnnExplain" in client.get("/explain/explain.js").text
    assert_error(client.get("/explain/__init__.py"), 404, "no explain asset")
    assert_error(client.get("/explain/../app.py"), 404)


@pytest.mark.parametrize(
    "body,status,message",
    [
        ({"model": "rnn-small"}, 400, "text must be a string of at least 2 characters, got None"),
        ({"model": "rnn-small", "text": "T"}, 400, "at least 2 characters"),
        ({"model": "rnn-small", "text": 12}, 400, "text must be a string"),
        ({"model": "rnn-small", "text": "The!"}, 400, "not in the model's vocabulary"),
        ({"model": "rnn-small", "text": "ab", "top_k": 0}, 400, "top_k of a trace must be at least 1"),
        ({"model": "rnn-small", "text": "ab", "top_k": -2}, 400, "top_k must be an integer in [0, 1_114_112]"),
        ({"model": "rnn-small", "text": "ab", "temperature": 1}, 400, "unknown parameter(s) 'temperature'"),
        ({"model": "../rnn-small", "text": "ab"}, 404, "no model named"),
        ({"model": "rnn-small", "text": "a" * (MAX_CHARS + 1)}, 429, f"traces at most {MAX_CHARS:,}"),
    ],
)
def test_a_bad_trace_request_is_refused_with_its_message(traced, body, status, message):
    client, calls, app = traced
    assert_error(client.post("/api/trace", json=body), status, message)
    assert calls == [] and app.state.server.slots.in_use == 0


def test_a_trace_past_the_concurrent_limit_is_429(traced):
    client, _calls, app = traced
    held = [app.state.server.slots.try_take() for _ in range(MAX_STREAMS)]
    assert_error(client.post("/api/trace", json={"model": "rnn-small", "text": "ab"}), 429, "streams")
    for slot in held:
        slot.release()


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def test_serve_help_names_every_option(capsys):
    assert cli.main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for o in group("serve"):
        assert o.flag in out
    assert "PATH" in out and "127.0.0.1" in out and "reverse proxy" in out


def test_serve_refuses_a_bad_option_or_path_in_one_line(capsys, tmp_path):
    assert cli.main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == (
        "charrnn: error: argument --port: port must be an integer in [1, 65535], got 70000 (see charrnn serve --help)"
    )
    assert cli.main(["serve", str(tmp_path), "--max-streams", "0"]) == 2
    assert "max_streams must be an integer in [1, 4096]" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing does not exist; expected a checkpoint" in err


@pytest.mark.parametrize(
    "host,warned",
    [
        ("0.0.0.0", True),
        ("192.168.1.5", True),
        ("::", True),
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
    ],
)
def test_a_non_loopback_host_prints_a_warning(monkeypatch, capsys, runs, host, warned):
    import charrnn_ext.serve.run as run

    seen = {}
    monkeypatch.setattr(run, "serve", lambda path, **kw: seen.update(kw))
    assert cli.main(["serve", str(runs), "--host", host]) == 0
    err = capsys.readouterr().err
    assert seen["host"] == host and seen["port"] == 8000
    assert ("opens the server to the network" in err) == warned
