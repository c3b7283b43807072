"""Interrupting a run without losing it: Ctrl-C (SIGINT) and SIGTERM (what
schedulers and ``timeout`` send) are deferred while a run trains, so that it
stops at the next chunk boundary and saves. Outside that, the command line
turns SIGTERM into an interrupt too (:func:`terminate_as_interrupt`), so that
a run stopped before its first checkpoint cleans up as it does on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["ImmediateInterrupt", "Terminated", "deferred_interrupts", "terminate_as_interrupt"]


class ImmediateInterrupt(KeyboardInterrupt):
    """A second Ctrl-C: raised at once, wherever the run is; its state may be
    half-updated, so nothing is saved."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt by :func:`terminate_as_interrupt`."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt)
    instead of ending the process at once. Only in the main thread, and only
    if SIGTERM has its default action."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[threading.Event]:
    """While active, a first SIGINT or SIGTERM only sets the yielded event; a
    second SIGINT raises KeyboardInterrupt at once. Only in the main thread,
    and only for signals whose handler is Python's default (or, for SIGTERM,
    :func:`terminate_as_interrupt`'s); otherwise the event is never set and
    signals act as usual."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}
    defaults = {signal.SIGINT: (signal.default_int_handler,), signal.SIGTERM: (signal.SIG_DFL, _raise_terminated)}

    def handler(signum, frame):
        if flag.is_set() and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise ImmediateInterrupt
        flag.set()

    for sig, replaceable in defaults.items():
        if signal.getsignal(sig) in replaceable:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
