"""Where features are computed: in this process, or per customer partition on Dask.

Features are per customer, so a customer base that outgrows one machine is
split by a hash of ``customer_id`` into partitions that each hold all the
history of their customers; every partition runs the very same
`features.pipeline.build_features`, and the pieces are concatenated in
``customer_id`` order. The result is identical to the local engine (same
rows, columns, values, dtypes and categorical levels).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from fsspec.core import url_to_fs

from features.chunks import chunk_ids, partition
from features.cluster import local_cluster, release_memory, run_one, run_partitions
from features.dataset import ACTIVITY_TABLES, Dataset
from features.partitioned import Manifest, read_manifest, read_partition
from features.pipeline import build_features, event_types_before
from features.sorted_merge import PartWriter, part_row_group, write_merged

if TYPE_CHECKING:
    from distributed import Client

Engine = Literal["local", "dask"]
ENGINES: tuple[str, ...] = ("local", "dask")
#: customers whose features a partition's task builds at a time, each chunk's rows
#: streamed to the part file: a worker holds the partition's tables and one chunk's
#: features, as when scoring (`serving.partitioned_batch.PARTITION_CHUNK`)
FEATURE_CHUNK = 5_000


def partition_of(customer_ids: pd.Series | np.ndarray, partitions: int) -> np.ndarray:
    """A stable partition number per id (same id, same partition, on every machine)."""
    values = np.asarray(customer_ids, dtype=object)
    return (pd.util.hash_array(values, categorize=True) % np.uint64(partitions)).astype(np.int64)


def partition_dataset(dataset: Dataset, *, partitions: int) -> list[Dataset]:
    """Split a dataset by customer so each part holds all rows of its customers."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    parts: list[dict[str, Any]] = [{} for _ in range(partitions)]
    for name in ("customers", *ACTIVITY_TABLES):
        frame = dataset.table(name)
        if frame is None:
            for part in parts:
                part[name] = None
            continue
        codes, uniques = pd.factorize(frame["customer_id"].to_numpy())
        number = partition_of(uniques, partitions)[codes] if len(codes) else codes
        order = np.argsort(number, kind="stable")
        bounds = np.searchsorted(number[order], np.arange(partitions + 1))
        for k, part in enumerate(parts):
            rows = order[bounds[k]:bounds[k + 1]]
            part[name] = frame.iloc[np.sort(rows)].reset_index(drop=True)
    return [replace(dataset, **part) for part in parts]


def compute_features(
    dataset: Dataset, *, as_of: pd.Timestamp, engine: Engine = "local",
    scheduler: str | None = None, partitions: int | None = None,
    event_types: Sequence[str] | None = None, client: Client | None = None,
    processes: bool = True, progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """`build_features` in this process (``local``) or on a Dask cluster (``dask``).

    With ``dask``, ``client`` (an existing `distributed.Client`) wins over
    ``scheduler`` (an address such as ``tcp://host:8786``); with neither, a
    LocalCluster is started for the call (``processes=False`` keeps it in
    threads). ``partitions`` defaults to twice the cluster's worker threads.
    ``progress(done, total)`` is called as partitions finish.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    as_of = pd.Timestamp(as_of)
    if engine == "local":
        result = build_features(dataset, as_of=as_of, event_types=event_types)
        if progress is not None:
            progress(1, 1)
        return result
    from distributed import Client, as_completed

    if event_types is None and dataset.events is not None:
        # every partition must produce the same columns, whatever types it happens to hold
        event_types = event_types_before(dataset, as_of=as_of)
    with ExitStack() as stack:
        if client is None:
            if scheduler is None:
                cluster = stack.enter_context(local_cluster(workers=None,
                                                            processes=processes))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(scheduler))
        if partitions is None:
            threads = sum(client.nthreads().values()) or 1
            partitions = 2 * threads
        parts = [p for p in partition_dataset(dataset, partitions=partitions)
                 if any(p.count_rows().values())]
        scattered = client.scatter(parts)
        futures = [client.submit(build_features, part, as_of=as_of,
                                 event_types=list(event_types or []), pure=False)
                   for part in scattered]
        pieces = []
        for done, future in enumerate(as_completed(futures), start=1):
            pieces.append(future.result())
            if progress is not None:
                progress(done, len(futures))
    return combine_partitions(pieces)


def combine_partitions(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-partition feature tables in ``customer_id`` order.

    Categorical columns get the sorted union of the partitions' levels, which
    is what the local engine produces for the whole dataset.
    """
    pieces = [p for p in pieces if len(p.columns)]
    if not pieces:
        raise ValueError("no partition produced a feature table")
    for column in pieces[0].columns:
        if isinstance(pieces[0][column].dtype, pd.CategoricalDtype):
            levels = sorted(set().union(*(p[column].cat.categories for p in pieces)))
            for piece in pieces:
                piece[column] = piece[column].cat.set_categories(levels)
    return pd.concat(pieces).sort_index(kind="stable")


@dataclass
class FeaturePart:
    """What a worker reports for its partition: counts and category levels, no rows."""

    partition: int
    customers: int
    rows_read: dict[str, int]
    rows_rejected: dict[str, int]
    categories: dict[str, list[str]]
    path: str


@dataclass
class FeatureRun:
    """What the driver knows after a partitioned `features` run."""

    output: str
    customers: int
    as_of: pd.Timestamp
    parts: list[FeaturePart]
    rows_rejected: dict[str, int]


def features_of_partition(number: int, *, data: str, manifest: Manifest, as_of: pd.Timestamp,
                          event_types: list[str], work: str, row_group: int,
                          chunk_size: int = FEATURE_CHUNK) -> FeaturePart:
    """On a worker: read and validate partition ``number``, write its feature rows.

    The features are built ``chunk_size`` customers at a time (sorted ids; features are
    per customer, so the rows are the same as for the whole partition) and each chunk's
    rows are streamed to the part file, so the worker holds one chunk's features.
    """
    validation = read_partition(data, number, manifest)
    dataset, rows_read, rows_rejected = (validation.dataset, validation.rows_read,
                                         validation.rows_rejected)
    del validation
    path = posixpath.join(work, f"features-{number:05d}.parquet")
    levels: dict[str, set[str]] = {}
    writer = PartWriter(path, row_group=row_group)
    try:
        chunks = chunk_ids(dataset.customers["customer_id"], chunk_size)
        for part in partition(dataset, chunks):
            frame = build_features(part, as_of=as_of, event_types=event_types)
            if frame.empty:
                continue
            for column in frame.columns:
                if isinstance(frame[column].dtype, pd.CategoricalDtype):
                    levels.setdefault(str(column), set()).update(
                        str(level) for level in frame[column].cat.categories)
            writer.write(frame.reset_index())
            del part, frame
    except BaseException:
        writer.close(keep=False)
        raise
    del dataset
    writer.close(keep=writer.rows > 0)
    release_memory()
    return FeaturePart(partition=number, customers=writer.rows, rows_read=rows_read,
                       rows_rejected=rows_rejected,
                       categories={c: sorted(v) for c, v in levels.items()},
                       path=path if writer.rows else "")


def merge_feature_parts(*, parts: list[str], out: str,
                        categories: dict[str, list[str]]) -> int:
    """On a worker: the parts, each sorted by customer, merged into ``out``; rows written."""
    rows = write_merged(parts, out, key="customer_id", categories=categories)
    release_memory()
    return rows


def compute_partitioned_features(
    data: str, *, out: str, as_of: pd.Timestamp | None = None, client: Client | None = None,
    partitions: int | None = None, progress: Callable[[int, int], None] | None = None,
    chunk_size: int = FEATURE_CHUNK,
) -> FeatureRun:
    """The feature table of a partitioned dataset, one task per partition, merged into ``out``.

    The driver reads only the manifest; workers read, validate and build their partition,
    and one more task merges the parts (``client=None`` runs the same tasks here). The
    merged file equals the local engine's output on the unpartitioned dataset, row for row.
    """
    if not str(out).endswith(".parquet"):
        raise ValueError(f"--out {out}: a partitioned dataset's features are written as .parquet")
    manifest = read_manifest(data, partitions=partitions)
    as_of = pd.Timestamp(as_of) if as_of is not None else manifest.default_as_of()
    work = f"{str(out).rstrip('/')}.parts"
    fs, local = url_to_fs(work)
    fs.makedirs(local, exist_ok=True)
    parts, _ = run_partitions(
        features_of_partition, range(manifest.partitions), client=client, name="features",
        progress=progress, data=data, manifest=manifest, as_of=as_of,
        event_types=manifest.event_types_before(as_of), work=work,
        row_group=part_row_group(manifest.partitions), chunk_size=chunk_size)
    ordered = [parts[k] for k in sorted(parts)]
    written = [p for p in ordered if p.customers]
    if not written:
        raise ValueError(f"no customer of {data} is known before {as_of:%Y-%m-%d}")
    categories: dict[str, set[str]] = {}
    for part in written:
        for column, levels in part.categories.items():
            categories.setdefault(column, set()).update(levels)
    rows = run_one(merge_feature_parts, client=client, name="features-merge",
                   parts=[p.path for p in written], out=str(out),
                   categories={c: sorted(v) for c, v in categories.items()})
    fs.rm(local, recursive=True)
    rejected: dict[str, int] = {}
    for part in ordered:
        for table, count in part.rows_rejected.items():
            rejected[table] = rejected.get(table, 0) + count
    return FeatureRun(output=str(out), customers=rows, as_of=as_of, parts=ordered,
                      rows_rejected=rejected)
