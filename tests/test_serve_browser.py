"""The page of ``charrnn serve`` in a real headless browser: Debian's
``chromium`` driven by Playwright (the system executable; Playwright
downloads nothing), against a ``charrnn serve`` process on 127.0.0.1 stopped
by its pid. Every request the page makes is recorded, and the tests fail if
one leaves 127.0.0.1.

``CHARRNN_SERVE_SCREENSHOT=FILE`` also saves the screenshot to FILE (the
README's picture, docs/serve.png, is made so)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from serve_helpers import active_streams, make_runs, parse_events, served, wait_until

pytest.importorskip("starlette", reason="charrnn serve needs the serve extra (starlette, uvicorn, httpx, httpx2)")
httpx = pytest.importorskip("httpx", reason="the HTTP client of these tests is httpx (the serve extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the browser extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
]

#: The server's characters per request, and a stream of nearly that many: it lasts until it is stopped.
MAX_CHARS = 400_000_000
ENDLESS = MAX_CHARS - 1000
#: How long to wait for something the page should do (a bound on a hang, not a timing test).
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-browser")
    runs = make_runs(root)
    # a wide network samples at the pace of a large model (a few thousand characters a second), so that a
    # stream is still going when the stop button is pressed
    from charrnn_ext.model import CharRNN

    CharRNN.new(CharRNN.load(runs / "loose.npz").vocab, hidden=1024, seed=4).save(runs / "wide.npz")
    with served(runs, "--max-chars", str(MAX_CHARS), log=root / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A page of the server; afterwards, no request may have left 127.0.0.1 and the page logged no error."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    requested: list[str] = []
    problems: list[str] = []

    def guard(route):
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname != "127.0.0.1":
            route.abort()  # and the test fails below
        else:
            route.continue_()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.problems = problems  # type: ignore[attr-defined]  # a test that expects an error takes it out
    page.goto(f"{server}/")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    yield page
    context.close()
    outside = [
        u for u in requested if urlsplit(u).scheme not in ("data", "about") and urlsplit(u).hostname != "127.0.0.1"
    ]
    assert outside == [], f"the page requested something outside 127.0.0.1: {outside}"
    assert any(u.endswith("/api/info") for u in requested)  # the recording saw the page's requests
    assert problems == [], problems


def output_text(page) -> str:
    return page.locator("#output").inner_text()


def test_the_page_loads_with_the_models_and_the_option_table(page, server):
    assert page.title() == "charrnn playground"
    rows = page.locator("#models tbody tr")
    assert rows.count() == 4
    names = ["gru-2x16", "loose.npz", "rnn-small", "wide.npz"]
    assert [rows.nth(i).get_attribute("data-model") for i in range(4)] == names
    assert "gru × 2 × 16" in rows.nth(0).inner_text()
    assert page.locator("#models tbody tr.selected").get_attribute("data-model") == "gru-2x16"
    info = httpx.get(f"{server}/api/info", timeout=10).json()
    assert page.input_value("#length") == str(info["options"]["length"]["default"])
    assert float(page.input_value("#temperature")) == info["options"]["temperature"]["default"]
    assert page.input_value("#top_k") == "0" and float(page.input_value("#top_p")) == 1.0
    assert page.input_value("#seed") == "" and not page.is_checked("#greedy")
    assert page.is_enabled("#sample") and page.is_disabled("#stop")
    assert page.locator("#explain").is_hidden() == (not info["trace"])  # shown when the server offers traces


def test_sampling_streams_text_that_begins_with_the_prime(page, server, tmp_path):
    page.click("#models tbody tr[data-model='rnn-small']")
    assert page.is_checked("input[name=model][value='rnn-small']")
    page.fill("#prime", "The cat")
    page.fill("#length", "400")
    page.fill("#seed", "7")
    page.fill("#top_k", "5")
    page.click("#sample")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('done')", timeout=WAIT_MS)
    text = output_text(page)
    assert text.startswith("The cat") and len(text) == len("The cat") + 400
    r = httpx.post(
        f"{server}/api/sample",
        json={"model": "rnn-small", "prime": "The cat", "length": 400, "seed": 7, "top_k": 5},
        timeout=30,
    )
    assert text == "The cat" + "".join(d for e, d in parse_events(r.text) if e == "text")  # the same draw
    assert "seed 7" in page.inner_text("#status")
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    if os.environ.get("CHARRNN_SERVE_SCREENSHOT"):
        Path(os.environ["CHARRNN_SERVE_SCREENSHOT"]).write_bytes(data)


def test_the_stop_button_stops_the_stream_and_frees_its_slot(page, server):
    page.click("#models tbody tr[data-model='wide.npz']")
    page.fill("#prime", "A bird")
    page.fill("#length", str(ENDLESS))
    page.click("#sample")
    page.wait_for_function("() => document.getElementById('output').textContent.length > 200", timeout=WAIT_MS)
    assert page.is_enabled("#stop") and page.is_disabled("#sample")
    assert active_streams(server) == 1
    page.click("#stop")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('stopped after')", timeout=WAIT_MS
    )
    wait_until(lambda: active_streams(server) == 0, what="the stopped stream's slot given back")
    stopped = output_text(page)
    assert stopped.startswith("A bird") and len(stopped) < ENDLESS
    page.wait_for_timeout(500)  # no text arrives after the stop
    assert output_text(page) == stopped
    assert page.is_enabled("#sample") and page.is_disabled("#stop")


def test_a_refused_request_shows_the_servers_message(page):
    page.fill("#seed", "not a number")
    page.fill("#length", "10")
    page.click("#sample")
    status = page.locator("#status.error")
    status.wait_for(timeout=WAIT_MS)
    assert (
        status.inner_text() == "400: seed must be an integer in [0, 18_446_744_073_709_551_616), got str 'not a number'"
    )
    assert output_text(page) == ""
    expected = "console error: Failed to load resource: the server responded with a status of 400 (Bad Request)"
    assert page.problems == [expected]  # the browser's own note of the 400
    page.problems.clear()


@pytest.fixture
def explain_server(tmp_path, server):
    """The app with a stand-in explain view (payload builder and renderer), run by uvicorn in a thread
    on loopback: the seam the explain module plugs into, from the page's side."""
    import threading

    import uvicorn

    from charrnn_ext.serve.app import create_app
    from charrnn_ext.serve.process import free_port
    from charrnn_ext.serve.registry import Registry
    from charrnn_ext.serve.trace import TraceSupport

    (tmp_path / "render.js").write_text(
        "window.charrnnExplain = { render(element, payload) {"
        " element.textContent = `${payload.model}: ${payload.text} / ${payload.top_k}`; } };"
    )
    (tmp_path / "render.css").write_text("#explain-view { font-weight: 700; }")

    def build_payload(model, text, top_k=5):
        return {"model": f"{model.cell}x{model.hidden}", "text": text, "top_k": top_k}

    runs = make_runs(tmp_path)
    support = TraceSupport(build_payload, tmp_path, ["render.css", "render.js"], "")
    app = create_app(Registry(runs), allowed_hosts=["127.0.0.1"], trace=support)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started, what="the explain test server listening")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


def test_the_explain_panel_shows_when_the_server_offers_traces(browser, explain_server):
    context = browser.new_context()
    requested: list[str] = []
    context.on("request", lambda req: requested.append(req.url))
    page = context.new_page()
    page.goto(f"{explain_server}/")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    assert page.locator("#explain").is_visible()
    page.click("#models tbody tr[data-model='gru-2x16']")
    page.fill("#explain-text", "The cat sat")
    page.click("#explain-go")
    page.wait_for_function("() => document.getElementById('explain-view').textContent.length > 0", timeout=WAIT_MS)
    assert page.inner_text("#explain-view") == "grux16: The cat sat / 5"  # the renderer drew the payload
    assert page.inner_text("#explain-status") == "explained with gru-2x16"
    assert f"{explain_server}/explain/render.js" in requested and f"{explain_server}/explain/render.css" in requested
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in requested)
    context.close()


def test_the_real_explain_view_draws_a_trace_in_the_served_page(page, server):
    """With charrnn_ext.explain installed, the served page loads its script and style sheet from the
    server and draws the payload of /api/trace: the text's characters, the top predictions on hover."""
    info = httpx.get(f"{server}/api/info", timeout=10).json()
    if not info["trace"]:
        pytest.skip(f"the server offers no traces: {info['trace_reason']}")
    assert sorted(info["trace_assets"]) == ["/explain/assets/explain.css", "/explain/assets/explain.js"]
    page.click("#models tbody tr[data-model='gru-2x16']")
    page.fill("#explain-text", "The cat sat on the mat.")
    page.click("#explain-go")
    page.wait_for_selector("#explain-view .cx-text span", timeout=WAIT_MS)
    assert page.locator("#explain-view .cx-text span").count() == len("The cat sat on the mat.")
    page.locator('#explain-view .cx-text span[data-i="4"]').hover()
    assert page.locator("#explain-view .cx-tip table.cx-top tr").count() == 5
    assert page.inner_text("#explain-status") == "explained with gru-2x16"
