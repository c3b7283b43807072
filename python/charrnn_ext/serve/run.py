"""The server process of ``charrnn serve``: the models loaded, then uvicorn
on one address until Ctrl-C or SIGTERM."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from types import FrameType

import uvicorn

from ..config import default
from .app import create_app
from .registry import Registry

__all__ = ["LOOPBACK_NAMES", "allowed_hosts", "is_loopback", "serve"]

#: Host names that always mean this machine.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
#: Seconds open streams get to finish when the server is stopped (then they are cut).
SHUTDOWN_SECONDS = 3


def is_loopback(host: str) -> bool:
    """True if listening on ``host`` reaches this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str] | None:
    """The Host names a server on ``host`` answers: on loopback only the
    loopback names (a web page elsewhere cannot reach it by rebinding a name
    of its own to 127.0.0.1); elsewhere any, the network being the user's choice."""
    return [*LOOPBACK_NAMES, host.lower()] if is_loopback(host) else None


def serve(
    path: str | os.PathLike[str],
    *,
    host: str = default("host"),
    port: int = default("port"),
    max_streams: int = default("max_streams"),
    max_chars: int = default("max_chars"),
    echo: Callable[[str], None] = print,
) -> None:
    """Load the models under ``path`` and serve them until interrupted."""
    registry = Registry(path, warn=lambda msg: echo(f"charrnn: warning: {msg}"))
    app = create_app(registry, max_streams=max_streams, max_chars=max_chars, allowed_hosts=allowed_hosts(host))
    names = registry.names()
    echo(f"serving {len(names)} model(s) from {path}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    echo(f"open http://{shown}:{port}/ (Ctrl-C stops the server)")
    config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        server_header=False,
    )
    server = _Server(config, on_exit=app.state.server.stop)
    try:
        server.run()
    except SystemExit:  # uvicorn's way out when it cannot listen
        pass
    if not server.started:  # uvicorn has said why (the port in use, an unknown address)
        raise OSError(f"the server could not listen on {shown}:{port} (see the message above)")


class _Server(uvicorn.Server):
    """uvicorn's server, telling the streams under way to end when it is asked to stop (Ctrl-C,
    SIGTERM), so that they close cleanly instead of being cut."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)
