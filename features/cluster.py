"""One task per partition, on a Dask cluster or in this process; the driver gets summaries.

Workers read their own partition (`features.partitioned.read_partition`), do the work
and write their part of the output; what comes back to the driver is the task's small
summary. A worker lost mid-run is Dask's to handle: the scheduler re-runs its tasks on
another worker, and since every task writes its part whole and under a fixed name, a
re-run leaves the same files.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


@contextmanager
def dask_client(scheduler: str | None, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                workers: int = 2, processes: bool = True) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a LocalCluster started for the run.

    An address that does not answer within ``connect_timeout`` seconds raises
    `SchedulerUnreachable` instead of waiting for ever.
    """
    from distributed import Client, LocalCluster

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
    with (LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                       dashboard_address=None) as cluster,
          Client(cluster) as client):
        yield client


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
    try:
        for future in as_completed(futures):
            number = futures[future]
            if future.status == "error":
                error = future.exception()
                if not isinstance(error, PartitionError):
                    future.result()  # re-raises with the worker's traceback
                if not keep_going:
                    raise PartitionError(str(error))
                failures.append(PartitionFailure(number, str(error)))
            else:
                results[number] = future.result()
            future.release()
            finished()
    finally:
        client.cancel(list(futures))
    return results, failures
