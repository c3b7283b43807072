"""A short run of the load benchmark (benchmarks/serve_load.py): many
streams at once, exactly at the server's limit, none failing and none left
open. The figures are not checked: the machine may be busy."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("starlette", reason="charrnn serve needs the serve extra (starlette, uvicorn, httpx, httpx2)")
pytest.importorskip("uvicorn", reason="charrnn serve needs the serve extra (starlette, uvicorn, httpx, httpx2)")
pytest.importorskip("httpx", reason="the load benchmark's client is httpx (the serve extra)")
serve_load = pytest.importorskip("benchmarks.serve_load", reason="run from the repository root (benchmarks/)")

pytestmark = pytest.mark.slow


def test_streams_at_the_limit_all_complete():
    r = serve_load.run_load(streams=8, chars=500, seconds=2.0)
    assert r["failures"] == []
    assert r["completed"] >= 8  # every client finished at least one stream
    assert r["active_streams_after"] == 0
    assert 0 < r["first_char_p50_ms"] <= r["first_char_p99_ms"] and math.isfinite(r["first_char_p99_ms"])
    assert r["chars_per_second"] > 0 and r["stream_chars_per_second_p50"] > 0


def test_the_percentile_is_the_nearest_rank():
    values = list(range(1, 101))
    assert serve_load._percentile(values, 50) == 50
    assert serve_load._percentile(values, 99) == 99
    assert serve_load._percentile(values, 100) == 100
    assert serve_load._percentile([7.0], 99) == 7.0
