"""Load test of ``charrnn serve`` on loopback, bounded in time.

Run from the repository root, with the package installed with its serve extra:

    python -m benchmarks.serve_load                     # 32 streams of 2,000 characters for 30 s
    python -m benchmarks.serve_load runs/ --model NAME  # models of your own
    python -m benchmarks.serve_load --streams 8 --chars 500 --seconds 5

A ``charrnn serve`` process is started on 127.0.0.1 (a free port) with
``--max-streams`` equal to the streams, so the load is exactly at the limit,
and stopped by its pid at the end. Without PATH it serves the classic model
(a vanilla RNN of 100 units over the built-in corpus's characters; the speed
of sampling does not depend on the weights). Each of ``--streams`` clients
asks for a stream of ``--chars`` characters, reads it to the end and asks
again, until ``--seconds`` have passed; streams under way then finish. The
figures: time to first character (from sending the request to the first
``text`` event) at the median and the 99th percentile, characters per second
in all and per stream, and every failure (a status other than 200, a stream
that ends early or short, a connection error). The clients run in this
process, on the same machine as the server, so they share its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Tally:
    """What the clients saw."""

    first_char: list[float] = field(default_factory=list)  # seconds from request to the first text event
    stream_rates: list[float] = field(default_factory=list)  # characters per second of each finished stream
    chars: int = 0
    completed: int = 0
    failures: list[str] = field(default_factory=list)


async def _one_stream(client: Any, model: str, chars: int, seed: int, tally: Tally) -> None:
    t0 = time.perf_counter()
    got, first, done = 0, None, None
    try:
        async with client.stream("POST", "/api/sample", json={"model": model, "length": chars, "seed": seed}) as r:
            if r.status_code != 200:
                tally.failures.append(f"status {r.status_code}: {(await r.aread()).decode()[:200]}")
                return
            name = None
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name == "text":
                    if first is None:
                        first = time.perf_counter() - t0
                    got += len(json.loads(line[5:]))
                elif line.startswith("data:") and name in ("done", "error"):
                    done = (name, json.loads(line[5:]))
    except Exception as exc:  # a failure to count, whatever it is
        tally.failures.append(f"{type(exc).__name__}: {exc}")
        return
    seconds = time.perf_counter() - t0
    tally.chars += got
    if done is None or done[0] != "done" or got != chars or first is None:
        tally.failures.append(f"stream ended with {got} of {chars} characters ({done})")
        return
    tally.completed += 1
    tally.first_char.append(first)
    tally.stream_rates.append(got / seconds)


async def _client(url: str, model: str, chars: int, until: float, worker: int, tally: Tally) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0)) as client:
        n = 0
        while time.perf_counter() < until:
            await _one_stream(client, model, chars, seed=worker * 1_000_003 + n, tally=tally)
            n += 1


async def _load(url: str, model: str, streams: int, chars: int, seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(url, model, chars, t0 + seconds, w, tally) for w in range(streams)))
    return tally, time.perf_counter() - t0


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def classic_model(folder: Path) -> Path:
    """The classic model (an RNN of 100 units over the built-in corpus's characters), saved in ``folder``."""
    from charrnn_ext.data import Vocabulary, builtin_corpus
    from charrnn_ext.model import CharRNN

    path = folder / "classic.npz"
    CharRNN.new(Vocabulary.from_text(builtin_corpus()), hidden=100, seed=0).save(path)
    return path


def run_load(
    path: Path | None = None, model: str | None = None, streams: int = 32, chars: int = 2000, seconds: float = 30.0
) -> dict[str, Any]:
    """Serve ``path`` (None: the classic model) and put it under load; the figures as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = classic_model(Path(tmp))
        from charrnn_ext.serve.process import serve_process

        with serve_process(path, "--max-streams", str(streams), "--max-chars", str(chars)) as url:
            import httpx

            info = httpx.get(f"{url}/api/info", timeout=10).json()
            names = [m["name"] for m in info["models"]]
            model = model or names[0]
            if model not in names:
                raise SystemExit(f"no model {model!r} under {path}; there are: {', '.join(names)}")
            tally, elapsed = asyncio.run(_load(url, model, streams, chars, seconds))
            after = int(httpx.get(f"{url}/api/info", timeout=10).json()["limits"]["active_streams"])
    firsts = tally.first_char or [float("nan")]
    return {
        "model": model,
        "streams": streams,
        "chars_per_stream": chars,
        "seconds_asked": seconds,
        "seconds": elapsed,
        "completed": tally.completed,
        "failures": tally.failures,
        "first_char_p50_ms": 1e3 * statistics.median(firsts),
        "first_char_p99_ms": 1e3 * _percentile(firsts, 99),
        "chars_per_second": tally.chars / elapsed,
        "stream_chars_per_second_p50": statistics.median(tally.stream_rates) if tally.stream_rates else float("nan"),
        "active_streams_after": after,
    }


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", type=Path, help="what charrnn serve serves (default: the classic model)")
    p.add_argument("--model", help="the model's name under PATH (default: the first)")
    p.add_argument("--streams", type=int, default=32, help="concurrent streams, also the server's limit (32)")
    p.add_argument("--chars", type=int, default=2000, help="characters per stream (2000)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long new streams are started (30)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    r = run_load(args.path, args.model, args.streams, args.chars, args.seconds)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            f"{r['streams']} concurrent streams of {r['chars_per_stream']:,} characters from {r['model']} for "
            f"{r['seconds']:.1f} s on {_cpu()} ({os.cpu_count()} CPUs; clients and server on the same machine)\n"
            f"  streams completed: {r['completed']:,}; failures: {len(r['failures'])}\n"
            f"  time to first character: p50 {r['first_char_p50_ms']:.1f} ms, p99 {r['first_char_p99_ms']:.1f} ms\n"
            f"  characters/s: {r['chars_per_second']:,.0f} in all, {r['stream_chars_per_second_p50']:,.0f} per "
            f"stream (median)\n"
            f"  streams still open after the run: {r['active_streams_after']}"
        )
        for failure in r["failures"][:10]:
            print(f"  failure: {failure}")
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
