"""Sampled text as server-sent events.

The C++ sampler draws the text in short pieces in worker threads (it
releases the GIL), so the event loop stays free and many streams advance
side by side; the first piece is sent alone, as soon as it is drawn, later
ones as many as a worker draws in a few milliseconds. The events:

- ``start``: ``{"model", "seed", "prime", "length"}``, before the first character;
- ``text``: the next characters (a JSON string);
- ``done``: ``{"chars", "seconds"}``, after the last piece;
- ``error``: ``{"error"}`` if sampling fails after the stream began, or the server is stopping.

When the client goes away the server cancels the stream between two pieces
and the ``finally`` below gives its slot back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio.to_thread

from ..sampling import random_seed
from .limits import Slot
from .params import SampleRequest
from .registry import ModelEntry

__all__ = ["PIECE_CHARS", "event", "sample_events"]

#: Characters drawn per call of the sampler: small enough that the first ones
#: show at once and a stop takes effect quickly, large enough that the
#: per-call cost is small.
PIECE_CHARS = 64

log = logging.getLogger("charrnn_ext.serve")


def event(name: str, data: Any) -> bytes:
    """One server-sent event whose data is ``data`` as JSON (one line)."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def start_pieces(entry: ModelEntry, req: SampleRequest) -> tuple[int, Iterator[str]]:
    """The seed and the pieces of one stream. The generator checks nothing
    until its first piece is asked for, so the caller checks the prime first."""
    seed = random_seed() if req.seed is None else req.seed
    return seed, entry.model.sample_stream(req.length, seed=seed, piece=PIECE_CHARS, **req.controls())


#: Seconds of drawing per trip to a worker thread after the first piece: a fast model sends
#: several pieces at once (fewer events and thread hops), a slow one one piece at a time.
BATCH_SECONDS = 0.02
#: The most pieces one trip draws, whatever the model's speed.
BATCH_PIECES = 64


def _next_batch(pieces: Iterator[str], first: bool) -> str | None:
    """The next pieces drawn for up to :data:`BATCH_SECONDS` (only one for
    the first event, which should come at once), joined; None at the end."""
    t0 = time.perf_counter()
    out: list[str] = []
    for piece in pieces:
        out.append(piece)
        if first or len(out) >= BATCH_PIECES or time.perf_counter() - t0 >= BATCH_SECONDS:
            break
    return "".join(out) if out else None


async def sample_events(
    entry: ModelEntry, req: SampleRequest, slot: Slot, stopping: Callable[[], bool] = lambda: False
) -> AsyncIterator[bytes]:
    """The events of one stream; gives ``slot`` back however it ends. When
    ``stopping()`` turns true the stream ends with an ``error`` event."""
    try:
        seed, pieces = start_pieces(entry, req)
        yield event("start", {"model": entry.name, "seed": seed, "prime": req.prime, "length": req.length})
        t0, chars = time.perf_counter(), 0
        try:
            while True:
                if stopping():
                    yield event(
                        "error", {"error": f"the server is stopping; the stream ends after {chars:,} characters"}
                    )
                    return
                text = await anyio.to_thread.run_sync(_next_batch, pieces, chars == 0)
                if text is None:
                    break
                chars += len(text)
                yield event("text", text)
        except (ValueError, TypeError, MemoryError) as exc:  # the engine refused something the checks let through
            log.warning("sampling from %s failed: %s", entry.name, exc)
            yield event("error", {"error": f"sampling failed: {exc}"})
            return
        yield event("done", {"chars": chars, "seconds": round(time.perf_counter() - t0, 6)})
    finally:
        slot.release()
