"""The explain page: the feature ranking, the payload, the page, the
``charrnn explain`` command, the run folder's explain.html, and the page in a
real headless Chromium (marked slow; skipped, with the reason, where there is
no Chromium or no Playwright)."""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import charrnn_ext.explain.features as features_mod
from charrnn_ext.cli import main
from charrnn_ext.data import corpus_from_string
from charrnn_ext.explain import (
    FEATURES,
    SCHEMA,
    asset,
    build_payload,
    correlations,
    feature_series,
    page_html,
    rank_units,
    write_explain,
)
from charrnn_ext.model import CharRNN
from conftest import SMALL_TEXT, TINY

TEXT = 'He said "go (now)" to me.\nThen [we] went\n"home".\n' + SMALL_TEXT[:600]
#: Text that would end the page's script if it were pasted in as it is.
HOSTILE = 'x </script><script>window.owned = 1</script> <!-- "q" (b)\n'


@pytest.fixture(scope="module")
def model() -> CharRNN:
    """A small LSTM, trained a little on text with quotes, brackets and lines."""
    text = TEXT * 3 + HOSTILE
    m = CharRNN.new(corpus_from_string(text), hidden=24, seed=2, cell="lstm", layers=2, dtype="float32")
    m.fit(text, steps=60, **TINY)
    return m


# ---------------------------------------------------------------- features


def test_feature_series_by_hand():
    text = 'a "b(c\n)d"\n“e”'
    f = feature_series(text)
    assert list(f) == [name for name, _ in FEATURES]
    #                            a    sp   "    b    (    c    \n   )    d    "    \n   “    e    ”
    assert f["in_quotes"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0]
    assert f["in_brackets"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert f["line_position"].tolist() == [1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 0, 1, 2, 3]
    assert f["after_newline"].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    assert f["in_word"].tolist() == [1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    assert all(v.dtype == np.float64 and v.size == len(text) for v in f.values())
    assert feature_series(text, 5)["in_quotes"].size == 5


def test_a_closing_bracket_without_an_opener_is_ignored():
    assert feature_series(")(a)b")["in_brackets"].tolist() == [0, 1, 1, 0, 0]


def test_correlations_are_pearsons_over_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    f = np.stack([rng.normal(size=1000), x[:, 2] * 3.0 + 1.0, np.ones(1000)], axis=1)
    x[:, 4] = 0.5  # a constant unit
    monkeypatch.setattr(features_mod, "_ROWS", 64)  # many blocks
    r = correlations(x, f)
    keep = [0, 1, 2, 3, 5]
    want = np.array([[np.corrcoef(x[:, u], f[:, j])[0, 1] for j in range(2)] for u in keep])
    assert np.max(np.abs(r[keep, :2] - want)) < 1e-6
    assert abs(r[2, 1] - 1.0) < 1e-6  # unit 2 is the feature
    assert np.all(r[4, :2] == 0) and np.all(np.isnan(r[:, 2]))


def test_rank_units_finds_the_unit_that_is_the_feature():
    text = TEXT
    f = feature_series(text, len(text) - 1)
    rng = np.random.default_rng(1)
    h = rng.uniform(-1, 1, size=(len(text) - 1, 10))
    h[:, 7] = f["line_position"] / 50 - 0.5  # unit 7 of layer 1 follows the line position
    ranked = rank_units(text, [(0, "h", rng.uniform(-1, 1, size=h.shape)), (1, "h", h)], top=3)
    present, top = ranked["line_position"]
    assert present and (top[0].layer, top[0].kind, top[0].unit) == (1, "h", 7) and abs(top[0].r - 1) < 1e-9
    assert len(top) == 3 and all(abs(a.r) >= abs(b.r) for a, b in itertools.pairwise(top))
    absent = rank_units("abc", [(0, "h", np.zeros((2, 4)))])
    assert absent["in_quotes"] == (False, [])


# ---------------------------------------------------------------- payload


def test_payload_is_json_and_matches_the_trace(model):
    payload = build_payload(model, TEXT, top_k=4, source="t.txt")
    text = json.dumps(payload, allow_nan=False)  # standard JSON only
    assert json.loads(text) == payload
    tr = model.trace(TEXT, top_k=4)
    n = len(TEXT) - 1
    assert payload["schema"] == SCHEMA and payload["text"] == TEXT and payload["vocab"] == model.vocab.chars
    assert payload["model"] == {
        "cell": "lstm",
        "layers": 2,
        "hidden": 24,
        "K": model.K,
        "dtype": "float32",
        "n_params": model.n_params,
    }
    assert payload["source"] == "t.txt" and payload["top_k"] == 4
    assert np.max(np.abs(np.array(payload["surprisal"]) - tr.surprisal)) <= 5e-4
    assert abs(payload["bits_per_char"] - tr.bits_per_char) <= 5e-5
    assert payload["top_index"] == tr.top_indices.tolist()
    assert np.allclose(payload["top_prob"], tr.top_probs, rtol=1e-3, atol=0)
    kinds = [(s["layer"], s["kind"]) for s in payload["states"]]
    assert kinds == [(0, "h"), (0, "c"), (1, "h"), (1, "c")]
    for s in payload["states"]:
        q = np.frombuffer(base64.b64decode(s["data"]), dtype=np.int8).reshape(n, s["units"]) * s["scale"]
        x = tr.hidden[s["layer"]] if s["kind"] == "h" else np.tanh(tr.cell[s["layer"]])
        assert np.max(np.abs(q - x)) <= 0.5 / 127 + 1e-6  # rounding to the nearest of 255 levels
    assert [f["name"] for f in payload["features"]] == [name for name, _ in FEATURES]
    for f in payload["features"]:
        assert f["present"] and len(f["top"]) == 5
        assert all(-1 <= u["r"] <= 1 for u in f["top"])


def test_a_bfloat16_models_payload_is_traced_as_it_trains():
    """A bfloat16 model's page shows what its validation computes: the trace
    with bfloat16 products, not the float32 one."""
    m = CharRNN.new(corpus_from_string(TEXT), hidden=24, seed=2, cell="lstm", layers=2, dtype="bfloat16")
    m.fit(TEXT, steps=5, **TINY)
    payload = build_payload(m, TEXT, top_k=4)
    bf16, full = m.trace(TEXT, top_k=4, precision="bfloat16"), m.trace(TEXT, top_k=4)
    assert payload["model"]["dtype"] == "bfloat16"
    assert payload["surprisal"] == np.round(bf16.surprisal, 3).tolist()
    assert payload["surprisal"] != np.round(full.surprisal, 3).tolist()


def test_payload_of_chosen_layers_and_bad_ones(model):
    payload = build_payload(model, TEXT, layers=[1])
    assert [(s["layer"], s["kind"]) for s in payload["states"]] == [(1, "h"), (1, "c")]
    assert all(u["layer"] == 1 for f in payload["features"] for u in f["top"])
    with pytest.raises(ValueError, match="layer 2 does not exist: the model has layers 0 to 1"):
        build_payload(model, TEXT, layers=[2])


def test_page_is_self_contained_and_its_text_cannot_close_the_script(model, tmp_path):
    page = page_html(build_payload(model, HOSTILE + TEXT, source="<b>name</b>"))
    assert page.count("</script>") == 3  # the payload's, the script's and the start-up's
    assert "window.owned" in page and "<script>window.owned" not in page
    assert "<title>charrnn explain: &lt;b&gt;name&lt;/b&gt;</title>" in page
    for ref in ("http:", "https:", "src=", "href=", "@import", "url("):
        assert ref not in page, ref
    assert "<span" not in page  # the spans are built in the browser
    assert "default-src 'none'" in page
    assert "window.charrnnExplain" in asset("explain.js")
    with pytest.raises(ValueError, match="unknown asset"):
        asset("../model.py")


def test_write_explain_replaces_atomically(model, tmp_path):
    payload = build_payload(model, TEXT)
    out = tmp_path / "p.html"
    out.write_text("old")
    write_explain(payload, out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    write_explain(payload, tmp_path / "p.json", "json")
    assert json.loads((tmp_path / "p.json").read_text(encoding="utf-8")) == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.html", "p.json"]  # no temporary file left
    with pytest.raises(ValueError, match="unknown format 'pdf'"):
        write_explain(payload, out, "pdf")


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explain") / "model.npz"
    model.save(path)
    return path


def test_cli_writes_html_and_json(checkpoint, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    assert main(["explain", str(checkpoint), "--text", str(text), "-o", str(tmp_path / "e.html")]) == 0
    assert "wrote" in capsys.readouterr().out
    page = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "charrnn explain: t.txt" in page
    out = tmp_path / "e.json"
    assert main(["explain", str(checkpoint), "--string", TEXT, "-o", str(out), "--top-k", "3", "--layer", "0"]) == 0
    payload = json.loads(out.read_text(encoding="utf-8"))
    assert payload["top_k"] == 3 and {s["layer"] for s in payload["states"]} == {0} and payload["text"] == TEXT
    assert main(["explain", str(checkpoint), "--string", TEXT, "-o", str(out), "--max-chars", "30"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == TEXT[:30]
    assert "tracing the first 30 of" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--string", "The é"], "character 'é' is not in the"),
        (["--string", "T"], "a trace needs at least 2"),
        (["--string", "The cat", "--layer", "7"], "layer 7 does not exist"),
        (["--string", "The cat", "--top-k", "1000"], "--top-k 1000 is more than the model's"),
        (["--string", "The cat", "--top-k", "0"], "top-k must be an integer of at least 1"),
        (["--string", "The cat", "--layer", "-1"], "layer must be an integer of at least 0"),
        (["--string", "The cat", "--format", "pdf"], "invalid choice: 'pdf'"),
        (["--text", "missing.txt"], "text file not found"),
        ([], "one of the arguments --text --string is required"),
    ],
)
def test_cli_errors_are_one_line(checkpoint, tmp_path, capsys, args, message):
    assert main(["explain", str(checkpoint), *args, "-o", str(tmp_path / "e.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("charrnn: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "e.html").exists()


def test_cli_refuses_an_output_it_cannot_write(checkpoint, tmp_path, capsys):
    assert main(["explain", str(checkpoint), "--string", "The cat", "-o", str(tmp_path / "no" / "e.html")]) == 2
    assert "the output's folder" in capsys.readouterr().err
    assert main(["explain", str(checkpoint), "--string", "The cat", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["explain", str(checkpoint), "--string", "The cat", "-o", str(fifo)]) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert not fifo.is_file() and fifo.exists()  # left as it was


def test_a_finished_run_links_its_explain_page(tmp_path):
    text = TEXT * 4
    m = CharRNN.new(corpus_from_string(text), hidden=16, seed=1)
    out = tmp_path / "run"
    m.fit(text, steps=20, out=out, **TINY)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "[What the best model sees](explain.html)" in report
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    corpus = corpus_from_string(text, 0.1)
    held_out = corpus.vocab.decode(corpus.val)
    assert summary["explain"] == {"chars": len(held_out), "source": "the held-out text"}
    page = (out / "explain.html").read_text(encoding="utf-8")
    assert json.dumps(held_out, ensure_ascii=False).replace("<", "\\u003c")[1:-1] in page


def test_a_sweep_trial_leaves_the_explain_page_out(tmp_path):
    # a page is megabytes for a large model, and a sweep runs many trials
    text = TEXT * 4
    m = CharRNN.new(corpus_from_string(text), hidden=16, seed=1)
    out = tmp_path / "trial"
    m.fit(text, steps=20, out=out, run_info={"sweep": {"sweep_id": "0" * 12, "trial": 0}}, **TINY)
    assert not (out / "explain.html").exists()
    assert "explain.html" not in (out / "report.md").read_text(encoding="utf-8")
    assert "explain" not in json.loads((out / "summary.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- in a real browser


def _chromium() -> str | None:
    return os.environ.get("CHARRNN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the [browser] extra")
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; or set CHARRNN_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path: Path):
    """A page of `path`, with every request outside file:// recorded and refused."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    outside: list[str] = []
    errors: list[str] = []

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda req: None if req.url.startswith("file://") else outside.append(req.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(path.as_uri())
    return page, outside, errors


def _colour(page, i: int) -> str:
    return page.locator(f'#cx-text span[data-i="{i}"]').evaluate("e => e.style.backgroundColor")


@pytest.mark.slow  # a Chromium process, like the serve page's browser tests
def test_page_in_chromium_hover_unit_and_no_requests(browser, model, tmp_path):
    hostile = HOSTILE
    text = hostile + TEXT
    payload = build_payload(model, text)
    path = tmp_path / "explain.html"
    write_explain(payload, path)
    page, outside, errors = _open(browser, path)
    try:
        spans = page.locator("#cx-text span")
        assert spans.count() == len(text)
        assert page.evaluate("window.owned") is None  # the text stayed text
        # surprisal colouring: the first character is grey, the others a shade from white to red
        assert _colour(page, 0) == "rgb(238, 238, 238)" and _colour(page, 5).startswith("rgb(255,")
        # hover shows the top 5 predictions of that character, as in the payload
        i = len(hostile) + 5
        page.locator(f'#cx-text span[data-i="{i}"]').hover()
        tip = page.locator("#cx-tip")
        assert tip.is_visible()
        rows = tip.locator("table.cx-top tr")
        assert rows.count() == 5
        expected = payload["vocab"][payload["top_index"][i - 1][0]]
        shown = {"\n": "\u21b5", " ": "\u2423"}.get(expected, expected)
        assert rows.nth(0).locator("td").nth(0).inner_text() == shown
        assert f"{payload['surprisal'][i - 1]:.2f} bits" in tip.inner_text()
        # choosing a unit recolours the text by its activation
        before = [_colour(page, j) for j in range(40)]
        page.select_option("#cx-layer", "1c")
        page.fill("#cx-unit", "3")
        root = page.locator("#charrnn-explain")
        assert root.get_attribute("data-mode") == "unit" and root.get_attribute("data-unit") == "1c/3"
        after = [_colour(page, j) for j in range(40)]
        assert after != before
        state = next(s for s in payload["states"] if (s["layer"], s["kind"]) == (1, "c"))
        q = np.frombuffer(base64.b64decode(state["data"]), dtype=np.int8).reshape(-1, state["units"])
        v = q[10, 3] / 127
        a = round(255 - 200 * abs(v))
        assert _colour(page, 10) == (f"rgb(255, {a}, {a})" if v >= 0 else f"rgb({a}, {a}, 255)")
        # a unit of the feature table selects itself
        first = payload["features"][2]["top"][0]
        page.locator("#cx-features button").nth(2 * 5).click()
        assert root.get_attribute("data-unit") == f"{first['layer']}{first['kind']}/{first['unit']}"
        page.screenshot(path=str(tmp_path / "explain.png"))
        assert (tmp_path / "explain.png").stat().st_size > 10_000
    finally:
        page.close()
    assert outside == [] and errors == []


@pytest.mark.slow  # a Chromium process, like the serve page's browser tests
def test_page_of_twenty_thousand_characters_in_chromium(browser, model, tmp_path):
    text = (TEXT * math.ceil(20_000 / len(TEXT)))[:20_000]
    path = tmp_path / "long.html"
    write_explain(build_payload(model, text), path)
    assert "<span" not in path.read_text(encoding="utf-8")
    page, outside, errors = _open(browser, path)
    try:
        assert page.locator("#cx-text span").count() == 20_000
        page.select_option("#cx-mode", "unit")
        page.fill("#cx-unit", "5")
        assert page.locator("#charrnn-explain").get_attribute("data-unit") == "0h/5"
        page.locator('#cx-text span[data-i="19999"]').hover()
        assert page.locator("#cx-tip table.cx-top tr").count() == 5
    finally:
        page.close()
    assert outside == [] and errors == []


@pytest.mark.slow  # a Chromium process, like the serve page's browser tests
def test_the_request_guard_sees_a_request(browser, model, tmp_path):
    """The checks above can fail: a page that tries to fetch something is seen."""
    leaky = tmp_path / "leaky.html"
    leaky.write_text(
        page_html(build_payload(model, TEXT)).replace("<body>", '<body><img src="http://127.0.0.1:9/pixel.png">'),
        encoding="utf-8",
    )
    page, outside, _ = _open(browser, leaky)
    page.close()
    assert set(outside) == {"http://127.0.0.1:9/pixel.png"}
