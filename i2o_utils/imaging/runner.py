"""The map over wells: in this process, or on a ``dask.distributed`` cluster.

``scheduler``: ``"local"`` (or ``"processes"``), a ``LocalCluster`` of ``n_workers``
single-threaded processes; ``"threads"``, one worker process with ``n_workers`` threads;
``"synchronous"``, in this process, no cluster; any other string, the address of a running
scheduler (``"tcp://host:8786"``): the same code runs on a cluster.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence


class Runner:
    """Maps a function over argument tuples; a context manager that closes its cluster. The
    cluster starts on the first call that has work for it (a run whose wells all verify starts none)."""

    def __init__(self, scheduler: str | None, n_workers: int):
        self.client = self.cluster = None
        self.scheduler = scheduler or "local"
        self.n_workers = n_workers

    def _connect(self):
        """The client, started on first use; ``None`` for the synchronous scheduler."""
        if self.client is not None or self.scheduler == "synchronous":
            return self.client
        from distributed import Client, LocalCluster

        if self.scheduler in ("local", "processes", "threads"):
            threads, n = self.scheduler == "threads", self.n_workers
            self.cluster = LocalCluster(n_workers=1 if threads else n,
                                        threads_per_worker=n if threads else 1, processes=not threads,
                                        dashboard_address=":0", silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        else:
            self.client = Client(self.scheduler)
        return self.client

    def scatter(self, obj):
        """``obj`` sent once to every worker (a large argument shared by many calls)."""
        client = self._connect()
        return obj if client is None else client.scatter(obj, broadcast=True)

    def map(self, fn: Callable, calls: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """Yield ``(position, fn(*args))`` for every ``args`` of ``calls``, as results arrive."""
        client = self._connect() if len(calls) else None
        if client is None:
            for i, args in enumerate(calls):
                yield i, fn(*args)
            return
        from distributed import as_completed

        futures = {client.submit(fn, *args, pure=False): i for i, args in enumerate(calls)}
        for fut in as_completed(futures):
            yield futures.pop(fut), fut.result()
            fut.release()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
