"""One task per partition, on a Dask cluster or in this process; the driver gets summaries.

Workers read their own partition (`features.partitioned.read_partition`), do the work
and write their part of the output; what comes back to the driver is the task's small
summary. A worker lost mid-run is Dask's to handle: the scheduler re-runs its tasks on
another worker, and since every task writes its part whole and under a fixed name, a
re-run leaves the same files. What the tasks share (the model) is itself a task, not
scattered data, so the scheduler can compute it again when the workers holding it die.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from features.partitioned import PartitionError

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
DEFAULT_CONNECT_TIMEOUT = 10.0


class SchedulerUnreachable(OSError):
    """The Dask scheduler did not answer in time; the message names it."""


@dataclass(frozen=True)
class PartitionFailure:
    """A partition that could not be processed, and why (for ``--resume`` reports)."""

    partition: int
    reason: str


#: Dask's housekeeping, slowed down for batch runs with no dashboard: its defaults (the
#: event loop's 20 ms tick, a stack sample of the running task every 10 ms for the
#: dashboard's profile, memory checks every 100 ms in each nanny and worker, system
#: metrics every 500 ms, work stealing every 100 ms) cost an idle LocalCluster of 2
#: workers about 20% of one core (driver 9.5%, each worker 5-6%), taken from the scoring;
#: with these, about 6% (bench figures in docs/scale.md). Tasks here last seconds, so
#: nothing reacts later than it should: a worker over its memory limit is still caught
#: within a second.
QUIET_HOUSEKEEPING = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.scheduler.work-stealing-interval": "1s",
}


def local_cluster(*, workers: int | None = 2, processes: bool = True) -> Any:
    """A LocalCluster listening on loopback only, without a dashboard, with quiet
    housekeeping (`QUIET_HOUSEKEEPING`; the workers take the configuration they are
    started with).

    ``dashboard_address=None`` does not do that: the scheduler's HTTP server (health,
    metrics) still starts, on port 8787 of every interface, and clashes with any other
    cluster on the machine. Here it gets a free loopback port. ``workers=None`` lets
    Dask choose from the cores.
    """
    import dask.config
    from distributed import LocalCluster

    loopback = {"host": "127.0.0.1"} if processes else {}  # threads talk in-process
    with dask.config.set(QUIET_HOUSEKEEPING):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                            dashboard_address="127.0.0.1:0",
                            scheduler_kwargs={"dashboard": False}, **loopback)


@contextmanager
def dask_client(scheduler: str | None, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                workers: int = 2, processes: bool = True) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a LocalCluster started for the run.

    An address that does not answer within ``connect_timeout`` seconds raises
    `SchedulerUnreachable` instead of waiting for ever.
    """
    from distributed import Client

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SchedulerUnreachable(
                f"the Dask scheduler {scheduler} did not answer within {connect_timeout:g} s "
                f"({first})") from None
        with client:
            yield client
        return
    with local_cluster(workers=workers, processes=processes) as cluster, Client(cluster) as client:
        yield client


def release_memory() -> None:
    """Hand what a finished partition freed back to the system, so a worker's memory does
    not climb with the partitions it has run.

    Freed memory otherwise stays with the allocators: Arrow's pool (where pandas' `str`
    columns live) and glibc's heap, fragmented by many small objects, keep it for reuse,
    and a long-lived worker's RSS ratchets up partition after partition.
    """
    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        # not glibc (e.g. musl): nothing to trim
        with suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _the(value: T) -> T:
    return value


def share(client: Client | None, value: T, *, name: str) -> Any:
    """``value`` for every task of a run: as a Dask future on a cluster, else itself.

    Not ``client.scatter``: scattered data has no recipe, so when the only worker holding
    it dies (the scheduler keeps one replica once few tasks still need it), every task
    that depends on it is cancelled ("already forgotten"). A task that returns the value
    is computed again on another worker instead; other workers fetch it from a peer, so
    it still reaches each worker once.
    """
    if client is None:
        return value
    return client.submit(_the, value, key=f"churnlens-{name}-{uuid.uuid4().hex[:8]}",
                         pure=False)


def _call(task: Callable[..., T], kwargs: dict[str, Any]) -> T:
    return task(**kwargs)  # keyword names such as `key` stay the task's, not `submit`'s


def run_one(task: Callable[..., T], *, client: Client | None, name: str, **kwargs: Any) -> T:
    """``task(**kwargs)`` on a worker (so the driver holds none of what it reads), or here."""
    if client is None:
        return task(**kwargs)
    future = client.submit(_call, task, kwargs, key=f"churnlens-{name}-{uuid.uuid4().hex[:8]}",
                           pure=False)
    try:
        return future.result()
    finally:
        future.cancel()


def run_partitions(
    task: Callable[..., T], numbers: Sequence[int], *, client: Client | None, name: str,
    keep_going: bool = False, progress: Callable[[int, int], None] | None = None,
    weights: Sequence[int] | None = None, **kwargs: Any,
) -> tuple[dict[int, T], list[PartitionFailure]]:
    """``task(number, **kwargs)`` for every partition number; their results by number.

    A partition that is missing or unreadable (`PartitionError`) stops the run with its
    message, or with ``keep_going`` is reported in the failures while the rest finish.
    Without ``client`` the tasks run here, one after the other (the same code path).
    ``progress(done, total)`` counts finished partitions, or the sum of their ``weights``
    (e.g. customers) when given.
    """
    weight = dict(zip(numbers, weights if weights is not None else [1] * len(numbers),
                      strict=True))
    total = sum(weight.values())
    results: dict[int, T] = {}
    failures: list[PartitionFailure] = []

    def finished() -> None:
        if progress is not None:
            done = sum(weight[k] for k in results) + sum(weight[f.partition] for f in failures)
            progress(done, total)

    if client is None:
        for number in numbers:
            try:
                results[number] = task(number, **kwargs)
            except PartitionError as error:
                if not keep_going:
                    raise
                failures.append(PartitionFailure(number, str(error)))
            finished()
        return results, failures
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(task, number, key=f"churnlens-{name}-{token}-part-{number:05d}",
                      pure=False, **kwargs): number
        for number in numbers
    }
    # The futures are held until every task has finished (their results are small): a
    # future released inside the loop drops the client's claim on its key while Dask may
    # still be re-running work after a lost worker.
    try:
        for future in as_completed(futures):
            number = futures[future]
            if future.status == "error":
                failure = future.exception()
                if not isinstance(failure, PartitionError):
                    future.result()  # re-raises with the worker's traceback
                if not keep_going:
                    raise PartitionError(str(failure))
                failures.append(PartitionFailure(number, str(failure)))
            else:
                results[number] = future.result()
            finished()
    except BaseException:
        client.cancel(list(futures))  # stop what is still queued or running
        raise
    return results, failures
