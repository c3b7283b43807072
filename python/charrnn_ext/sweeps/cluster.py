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

import ipaddress
import logging
import math
import re
import socket
import struct
import time
from typing import Any

from distributed import Client, Event, LocalCluster
from optuna.storages import BaseStorage
from optuna_integration.dask import DaskStorage

from ..config import usable_cores
from ..fileio import printable

__all__ = ["SweepCluster", "check_address", "default_workers", "local_workers", "probe_scheduler"]


#: The longest scheduler address taken (a host name has at most 253 characters).
MAX_ADDRESS_CHARS = 300
#: Seconds the address check waits for a scheduler to accept a connection and
#: to answer; the client's own connection waits ``connect_timeout``.
PROBE_SECONDS = 5.0
#: The largest first message a Dask server may send (its handshake is some hundred bytes).
_MAX_HANDSHAKE_BYTES = 1 << 16
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_address(address: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a scheduler's address, or ValueError saying
    why it cannot be one: only tcp:// (the default) and tls:// (with Dask's
    TLS settings) reach a scheduler in another process; the host must be an
    IP address or a host name, the port in [1, 65535]."""

    def refuse(why: str) -> ValueError:
        return ValueError(
            f"{printable(repr(address), 80)} is not the address of a Dask scheduler such as tcp://host:8786 ({why})"
        )

    if not isinstance(address, str) or not address.strip():
        raise refuse("it is empty")
    if len(address) > MAX_ADDRESS_CHARS:
        raise refuse(f"{len(address):,} characters; an address has at most {MAX_ADDRESS_CHARS}")
    scheme, sep, location = address.strip().partition("://")
    if not sep:
        scheme, location = "tcp", address.strip()
    scheme = scheme.lower()
    if scheme in ("inproc", "ucx", "ws", "wss"):
        raise refuse(
            f"{scheme}:// is not supported by charrnn sweep; "
            + ("it reaches only a scheduler inside this process" if scheme == "inproc" else "use tcp://")
        )
    if scheme not in ("tcp", "tls"):
        raise refuse(f"unknown protocol {printable(scheme, 20)}://; expected tcp://")
    if scheme == "tls":
        import dask

        if not dask.config.get("distributed.comm.tls.client.cert", None):
            raise refuse("tls:// needs Dask's TLS settings (distributed.comm.tls.client.cert and key), which are unset")
    host, colon, port_text = location.rpartition(":")
    if not colon or not host:
        raise refuse("it names no host:port")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise refuse(f"the port must be a number in [1, 65535], got {printable(port_text, 20)!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise refuse(f"{printable(host, 60)} is not an IPv6 address") from None
        host = host[1:-1]
    elif all(part.isdigit() for part in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise refuse(f"{printable(host, 60)} is not an IPv4 address") from None
    elif len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
        raise refuse(f"{printable(host, 60)!r} is not a host name")
    return scheme, host, int(port_text)


def probe_scheduler(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Make sure a Dask scheduler answers at ``address``, waiting at most
    about ``timeout`` seconds at each step, or raise ConnectionError saying
    what was found there: nothing (refused), a server that says nothing (a
    Dask server speaks first), one that speaks another protocol, or a Dask
    server that is not a scheduler."""
    scheme, host, port = check_address(address)
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise ConnectionError(
            f"nothing accepts connections at {where} (connection refused): is the scheduler running?"
        ) from None
    except TimeoutError:
        raise ConnectionError(f"{where} did not accept a connection within {timeout:g} s") from None
    except socket.gaierror as exc:
        raise ConnectionError(
            f"the scheduler's host {printable(host, 60)!r} cannot be resolved ({exc.strerror})"
        ) from None
    except OSError as exc:
        raise ConnectionError(f"cannot connect to {where} ({exc.strerror or exc})") from None
    not_dask = f"{where} accepted the connection but is not a Dask scheduler"
    with sock:
        if scheme == "tcp":
            try:
                head = _recv_exactly(sock, 8)
                (nbytes,) = struct.unpack("<Q", head)
                if not 8 <= nbytes <= _MAX_HANDSHAKE_BYTES:
                    raise ConnectionError(f"{not_dask}: it answered {head!r:.40}, not Dask's protocol")
                from distributed.protocol import loads
                from distributed.protocol.utils import unpack_frames

                hello = loads(unpack_frames(_recv_exactly(sock, nbytes)), deserialize=False)
            except TimeoutError:
                raise ConnectionError(
                    f"{not_dask}: it sent nothing within {timeout:g} s (a Dask server speaks first)"
                ) from None
            except ConnectionError:
                raise
            except Exception as exc:  # what a server of another protocol sends, undecodable as Dask's
                raise ConnectionError(f"{not_dask}: its answer is not Dask's protocol ({type(exc).__name__})") from None
            if not isinstance(hello, dict) or "pickle-protocol" not in hello:
                raise ConnectionError(f"{not_dask}: its answer is not Dask's handshake")
    kind = _server_type(address, timeout)
    if kind != "Scheduler":
        raise ConnectionError(f"{where} is a Dask {printable(str(kind), 40)}, not a scheduler")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the connection was closed before an answer")
        data += chunk
    return data


def _server_type(address: str, timeout: float) -> Any:
    """The "type" a Dask server at ``address`` gives for itself ("Scheduler",
    "Worker", ...), asked on a connection of this call's own event loop."""
    import asyncio

    from distributed.comm import connect

    async def ask() -> Any:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        try:
            await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
            reply = await asyncio.wait_for(comm.read(), timeout)
        finally:
            comm.abort()
        return reply.get("type") if isinstance(reply, dict) else None

    try:
        return asyncio.run(ask())
    except TimeoutError:
        raise ConnectionError(f"the Dask server at {address} did not say what it is within {timeout:g} s") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConnectionError(f"the Dask server at {address} did not answer ({type(exc).__name__}: {exc})") from None


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
            probe_scheduler(scheduler)  # a bounded wait, and what is at the address if not a scheduler
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
