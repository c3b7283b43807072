"""The ASGI application of ``charrnn serve`` (Starlette).

Routes:

- ``GET /``: the page; ``GET /static/<file>``: its script and style sheet;
- ``GET /api/info``: the models, the sampling options with their ranges, the limits, and whether traces are offered;
- ``POST /api/sample``: a JSON object (``model`` and the controls of ``charrnn sample``), answered by a stream
  of server-sent events (:mod:`.streaming`);
- ``POST /api/trace``: ``{"model", "text", "top_k"}``, answered by the explain view's payload (:mod:`.trace`);
- ``GET /explain/<file>``: the explain view's own assets, when it is installed.

Every error is JSON, ``{"error": "..."}``, with a 4xx status (or 500 with no detail for a fault of the
server, logged): never a traceback. Every answer forbids the page to load anything from another origin.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import default
from ..sampling import encode_prime
from ..version import package_version
from .limits import Slot, Slots
from .params import BODY_OVERHEAD, RequestError, SampleRequest, TraceRequest, option_table, parse_json
from .registry import ModelEntry, Registry
from .streaming import sample_events
from .trace import TraceSupport, find_trace

__all__ = ["SECURITY_HEADERS", "create_app"]

log = logging.getLogger("charrnn_ext.serve")

#: Sent with every answer: the page may load scripts, styles, images and data from this server only.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class _Guard:
    """ASGI middleware: answers only the Host names allowed (None: any) and
    adds :data:`SECURITY_HEADERS` to every answer. A plain ASGI layer, so
    that streams pass through it untouched."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str] | None = None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    def _host_ok(self, scope: Scope) -> bool:
        if self.allowed is None:
            return True
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host  # the port aside; [::1] as it is
        return name in self.allowed or host in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._host_ok(scope):
            body = json.dumps({"error": "this server does not answer to that Host name"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    + self.headers,
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Server:
    """The state the routes share: the models, the slots, the limits, the trace seam."""

    def __init__(self, registry: Registry, max_streams: int, max_chars: int, trace: TraceSupport):
        self.registry = registry
        self.slots = Slots(max_streams)
        self.max_chars = max_chars
        self.trace = trace
        self.body_limit = 4 * max_chars + BODY_OVERHEAD
        self.stopping = False

    def stop(self) -> None:
        """The server is stopping: streams under way end after their current piece, new ones are refused."""
        self.stopping = True

    async def _json(self, request: Request) -> dict[str, Any]:
        """The request's JSON object, read up to the body limit (a larger body is not read whole)."""
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise RequestError(415, "send the parameters as a JSON object with content-type application/json")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.body_limit:
                break
        return parse_json(bytes(body), self.body_limit)

    def _entry(self, name: str) -> ModelEntry:
        entry = self.registry.get(name)
        if entry is None:
            raise RequestError(404, f"no model named {name[:200]!r} is served here; see /api/info for the names")
        return entry

    def _slot(self) -> Slot:
        slot = self.slots.try_take()
        if slot is None:
            raise RequestError(
                429, f"all {self.slots.capacity} streams of this server are busy; try again when one has finished"
            )
        return slot

    async def info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "version": package_version(),
                "models": self.registry.info(),
                "options": option_table(),
                "limits": {
                    "max_streams": self.slots.capacity,
                    "max_chars": self.max_chars,
                    "active_streams": self.slots.in_use,
                },
                "trace": self.trace.available,
                "trace_reason": self.trace.reason,
                "trace_assets": [f"/explain/{name}" for name in self.trace.assets],
            }
        )

    async def sample(self, request: Request) -> Response:
        req = SampleRequest.from_json(await self._json(request), self.max_chars)
        entry = self._entry(req.model)
        if req.prime is not None:
            try:
                encode_prime(entry.model.vocab, req.prime)
            except ValueError as exc:
                raise RequestError(400, str(exc)) from None
        if self.stopping:
            raise RequestError(503, "the server is stopping")
        slot = self._slot()
        return StreamingResponse(
            sample_events(entry, req, slot, lambda: self.stopping),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},  # a proxy in front passes each piece on at once
            background=BackgroundTask(slot.release),  # also when the stream never started
        )

    async def trace_text(self, request: Request) -> Response:
        if self.trace.build_payload is None:
            raise RequestError(501, self.trace.reason)
        req = TraceRequest.from_json(await self._json(request), self.max_chars)
        entry = self._entry(req.model)
        build = self.trace.build_payload
        slot = self._slot()
        try:
            payload = await anyio.to_thread.run_sync(lambda: build(entry.model, req.text, top_k=req.top_k))
        except ValueError as exc:  # a text the model cannot read (a character outside its vocabulary)
            raise RequestError(400, str(exc)) from None
        finally:
            slot.release()
        return JSONResponse(payload)

    async def explain_asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if self.trace.assets_dir is None or name not in self.trace.assets:  # a listed name only: no traversal
            raise RequestError(404, f"no explain asset named {name[:200]!r}")
        return FileResponse(self.trace.assets_dir / name)

    async def page(self, request: Request) -> Response:
        return FileResponse(_static_dir() / "index.html", media_type="text/html")


def _static_dir() -> Path:
    return Path(str(importlib.resources.files(__package__ or "charrnn_ext.serve"))) / "static"


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return _error(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("error answering %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error of the server (logged); the request was not completed")


def create_app(
    registry: Registry,
    *,
    max_streams: int = default("max_streams"),
    max_chars: int = default("max_chars"),
    allowed_hosts: Sequence[str] | None = None,
    trace: TraceSupport | None = None,
) -> Starlette:
    """The application serving ``registry``'s models. ``allowed_hosts``: the
    Host headers answered (others get 400; None: any), which keeps a page on
    another site from reaching a loopback server through a name it controls.
    ``trace``: the explain seam (default: :func:`~.trace.find_trace`)."""
    server = _Server(registry, max_streams, max_chars, find_trace() if trace is None else trace)
    routes = [
        Route("/", server.page),
        Route("/api/info", server.info),
        Route("/api/sample", server.sample, methods=["POST"]),
        Route("/api/trace", server.trace_text, methods=["POST"]),
        Route("/explain/{name:path}", server.explain_asset),
        Mount("/static", StaticFiles(directory=_static_dir()), name="static"),
    ]
    middleware = [Middleware(_Guard, allowed_hosts=allowed_hosts)]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.server = server
    return app
