"""How much one server does at once: a fixed number of slots, one per
stream or trace in progress. A request that finds every slot taken is
refused at once (429) rather than queued, so that a crowd cannot slow down
the streams already running."""

from __future__ import annotations

import threading

__all__ = ["Slot", "Slots"]


class Slot:
    """One taken slot; :meth:`release` gives it back (once, however often it is called)."""

    def __init__(self, owner: Slots):
        self._owner: Slots | None = owner

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back()

    @property
    def held(self) -> bool:
        return self._owner is not None


class Slots:
    """``capacity`` slots, taken and given back from any thread."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._used = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._used

    def try_take(self) -> Slot | None:
        """A slot, or None when all are taken."""
        with self._lock:
            if self._used >= self.capacity:
                return None
            self._used += 1
        return Slot(self)

    def _give_back(self) -> None:
        with self._lock:
            self._used -= 1
