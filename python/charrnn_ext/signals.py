"""Interrupting a run without losing it: Ctrl-C (SIGINT) and SIGTERM (what
schedulers and ``timeout`` send) are deferred while a run trains, so that it
stops at the next chunk boundary and saves.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["ImmediateInterrupt", "deferred_interrupts"]


class ImmediateInterrupt(KeyboardInterrupt):
    """A second Ctrl-C: raised at once, wherever the run is; its state may be
    half-updated, so nothing is saved."""


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[threading.Event]:
    """While active, a first SIGINT or SIGTERM only sets the yielded event; a
    second SIGINT raises KeyboardInterrupt at once. Only in the main thread,
    and only for signals whose handler is Python's default; otherwise the
    event is never set and signals act as usual."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def handler(signum, frame):
        if flag.is_set() and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise ImmediateInterrupt
        flag.set()

    for sig, default in defaults.items():
        if signal.getsignal(sig) is default:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
