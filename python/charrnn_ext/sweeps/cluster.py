"""The Dask side of a sweep: the cluster its trials run on, the study's
storage on the scheduler, and the signal that asks running trials to stop.

Without a scheduler address, an embedded :class:`distributed.LocalCluster`
runs on this machine: its scheduler in this process, one worker process per
concurrent trial, everything bound to 127.0.0.1 and no dashboard. With an
address, the sweep connects to an existing cluster (``dask scheduler`` and
``dask worker`` on several machines, or any other deployment).

A worker that dies in the middle of a trial is Dask's to handle: the
scheduler runs the trial again on another worker, up to the bound
``distributed.scheduler.allowed-failures`` (3 by default) of the scheduler's
configuration.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from distributed import Client, Event, LocalCluster
from optuna.storages import BaseStorage
from optuna_integration.dask import DaskStorage

from ..config import usable_cores

__all__ = ["SweepCluster", "check_address", "default_workers", "local_workers"]


def check_address(address: str) -> None:
    """Refuse what cannot be a scheduler's address before a client tries it."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{address!r} is not the address of a Dask scheduler such as tcp://host:8786 ({exc})"
        ) from None


def default_workers(threads_per_trial: int) -> int:
    """Local workers when none are asked for: one per threads_per_trial cores."""
    return max(1, usable_cores() // threads_per_trial)


def local_workers(asked: int | None, trials: int, threads_per_trial: int) -> tuple[int, str]:
    """The worker processes of a local cluster, and why fewer than asked
    ("" if not): never more than the trials to run (a worker without a trial
    is a process doing nothing), nor more than max(2, cores /
    threads_per_trial) (more would only share the cores and slow every
    trial down)."""
    fit = max(2, usable_cores() // threads_per_trial)
    n = asked if asked is not None else default_workers(threads_per_trial)
    n = min(n, fit) if asked is not None else n
    n = max(1, min(n, trials))
    if asked is None or n == asked:
        return n, ""
    if trials <= fit:
        return n, f"--workers {asked} lowered to {n}: the sweep has {trials} trial(s) to run"
    return n, (
        f"--workers {asked} lowered to {n}: {usable_cores()} usable core(s) run at most {fit} trials of "
        f"{threads_per_trial} thread(s) at a useful speed"
    )


def _forget_storage(dask_scheduler: Any, name: str) -> None:
    """On the scheduler: drop a sweep's storage from Optuna's extension."""
    ext = dask_scheduler.extensions.get("optuna")
    if ext is not None:
        ext.storages.pop(name, None)


#: Seconds between two looks at how many threads a remote cluster's workers have.
SLOTS_REFRESH_SECONDS = 2.0


class SweepCluster:
    """A Dask client, and the local cluster it started if it started one.
    ``slots()`` is how many trials to keep running at once."""

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int | None = None,
        threads_per_trial: int = 1,
        connect_timeout: float = 20.0,
    ):
        self.local = scheduler is None
        self._workers = workers
        self._cluster: LocalCluster | None = None
        self._storages: list[str] = []
        self._slots, self._slots_checked = 1, -math.inf
        if scheduler is None:
            n = workers if workers is not None else default_workers(threads_per_trial)
            # No dashboard; the scheduler's small HTTP server (health checks) would otherwise take port 8787.
            self._cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                protocol="tcp",
                dashboard_address=None,
                worker_dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                memory_limit=0,
                silence_logs=logging.ERROR,
            )
            self._workers = n
            self.address = str(self._cluster.scheduler_address)
            try:
                self.client = Client(self._cluster, set_as_default=False)
            except BaseException:
                self._cluster.close()
                raise
        else:
            self.address = scheduler
            self.client = Client(scheduler, timeout=f"{connect_timeout}s", set_as_default=False)

    def slots(self) -> int:
        """Trials to run at once: the local workers, or --workers, or the
        threads of the remote cluster's workers now (at least 1)."""
        if self._workers is not None:
            return self._workers
        now = time.monotonic()
        if now >= self._slots_checked + SLOTS_REFRESH_SECONDS:
            self._slots = max(1, sum(self.client.nthreads().values()))
            self._slots_checked = now
        return self._slots

    def storage(self, base: BaseStorage | None, name: str) -> DaskStorage:
        """``base`` (None: in memory) moved to the scheduler under ``name``,
        where the client and every worker reach it."""
        storage = DaskStorage(base, name=name, client=self.client)
        self._storages.append(name)
        return storage

    def stop_event(self, name: str) -> Event:
        """The cluster-wide flag that asks running trials to stop (cleared here)."""
        event = Event(name, client=self.client)
        event.clear()
        return event

    def close(self) -> None:
        """Drop this sweep's storages from the scheduler, close the client, and
        stop the local cluster if there is one (which ends its workers)."""
        try:
            if self.client.status == "running":
                for name in self._storages:
                    self.client.run_on_scheduler(_forget_storage, name=name)
        except Exception:  # the scheduler is gone (and its storages with it), or cannot run this: leave it
            pass
        finally:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()

    def __enter__(self) -> SweepCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
