"""Datasets partitioned by customer: Parquet files per partition plus a manifest.

So that Dask workers can each read their own share of a customer base, a dataset is
written as ``N`` partitions, every table of a customer in the same partition::

    DIR/manifest.json                  partition count, hash, row counts, schema
    DIR/rejects.csv                    rows the data contract rejected when partitioning
    DIR/part-00000/customers-00000.parquet, orders-00000.parquet, ...
    DIR/part-00001/...

A customer's partition is ``blake2b(utf8(customer_id), digest_size=8)`` read as a
big-endian unsigned 64-bit integer, modulo ``N`` (`PARTITION_HASH`, version
`HASH_VERSION`): documented and the same on every machine and Python version, unlike
Python's ``hash()``. A table may be written in several pieces (``-00000``, ``-00001``,
...; the writer appends one per batch of customers); readers concatenate them in order.
``DIR`` may be a local path or any fsspec URL (``s3://``, ``gs://``, ``memory://``, ...).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.contract import (
    REJECT_COLUMNS,
    DataContractError,
    ValidationResult,
    validate_tables,
)
from features.dataset import ACTIVITY_TABLES, Dataset

PARTITION_HASH = "blake2b-64"
HASH_VERSION = 1
FORMAT = "churnlens-partitioned-dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
REJECTS_NAME = "rejects.csv"
TABLE_NAMES = ("customers", *ACTIVITY_TABLES)


class PartitionError(DataContractError):
    """A partitioned dataset, or one of its partitions, cannot be used; the message says why."""


def partition_numbers(customer_ids: Sequence[str] | np.ndarray | pd.Series,
                      partitions: int) -> np.ndarray:
    """Each id's partition: blake2b-64 of its UTF-8 text, modulo ``partitions``.

    Ids are hashed once per distinct value, so a table of events costs one hash per
    customer, not per row.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    codes, uniques = pd.factorize(np.asarray(customer_ids, dtype=object))
    numbers = np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(u).encode("utf-8"), digest_size=8).digest(), "big")
         % partitions for u in uniques),
        dtype=np.int64, count=len(uniques))
    return numbers[codes] if len(codes) else np.zeros(0, dtype=np.int64)


@dataclass
class Manifest:
    """What a partitioned dataset holds; small enough to live in the driver.

    ``event_types`` maps each event type to its earliest timestamp and ``latest`` is the
    latest timestamp of the whole history, so the default as-of date and the per-type
    feature columns are known without reading any partition.
    """

    partitions: int
    tables: list[str]
    rows: list[dict[str, int]]
    schema: dict[str, dict[str, str]]
    event_types: dict[str, str] = field(default_factory=dict)
    latest: str | None = None
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_rejected: dict[str, int] = field(default_factory=dict)
    hash: str = PARTITION_HASH
    hash_version: int = HASH_VERSION
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def customers(self) -> int:
        return sum(part.get("customers", 0) for part in self.rows)

    def default_as_of(self) -> pd.Timestamp:
        """The day after the latest timestamp, as `Dataset.default_as_of` says."""
        if self.latest is None:
            raise ValueError("the dataset has no dated rows, so there is no default as-of date")
        return pd.Timestamp(self.latest).normalize() + pd.Timedelta(days=1)

    def event_types_before(self, as_of: pd.Timestamp) -> list[str]:
        """The event types with a row before ``as_of``, sorted (as `event_types_before`)."""
        return sorted(t for t, first in self.event_types.items()
                      if pd.Timestamp(first) < pd.Timestamp(as_of))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str) -> Manifest:
        try:
            values = json.loads(text)
            if values.get("format") != FORMAT:
                raise PartitionError(f"{source}: not a churnlens partitioned dataset manifest")
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in values.items() if k in known})
        except (json.JSONDecodeError, TypeError, AttributeError) as error:
            raise PartitionError(f"{source}: unreadable manifest ({error})") from error


def _fs(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(str(url))


def partition_dir(root: str, number: int) -> str:
    return posixpath.join(str(root).rstrip("/"), f"part-{number:05d}")


def is_partitioned(url: str) -> bool:
    """Whether ``url`` holds a partitioned dataset (a manifest at its root)."""
    try:
        fs, path = _fs(url)
        return bool(fs.exists(posixpath.join(path, MANIFEST_NAME)))
    except (OSError, ValueError, ImportError):
        return False


def read_manifest(url: str, *, partitions: int | None = None) -> Manifest:
    """The manifest of a partitioned dataset, refused when it cannot be read correctly.

    A hash other than `PARTITION_HASH` version `HASH_VERSION`, a partition count other
    than ``partitions`` (when given), or partition directories that do not match the
    count are refused with the reason.
    """
    fs, path = _fs(url)
    source = f"{url.rstrip('/')}/{MANIFEST_NAME}"
    try:
        with fs.open(posixpath.join(path, MANIFEST_NAME), "r", encoding="utf-8") as handle:
            manifest = Manifest.from_json(handle.read(), source=source)
    except FileNotFoundError as error:
        raise PartitionError(f"{source}: no manifest (write the dataset with `churnlens "
                             "partition`)") from error
    if (manifest.hash, manifest.hash_version) != (PARTITION_HASH, HASH_VERSION):
        raise PartitionError(
            f"{source}: partitions were written with hash {manifest.hash} version "
            f"{manifest.hash_version}; this churnlens reads {PARTITION_HASH} version "
            f"{HASH_VERSION}, so customers would be looked for in the wrong partition "
            "(re-run `churnlens partition`)")
    if partitions is not None and partitions != manifest.partitions:
        raise PartitionError(
            f"{source}: the dataset has {manifest.partitions} partitions, not {partitions} "
            "(drop --partitions, or re-run `churnlens partition` with that count)")
    if len(manifest.rows) != manifest.partitions:
        raise PartitionError(f"{source}: lists row counts for {len(manifest.rows)} partitions "
                             f"but declares {manifest.partitions}")
    listed = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
    extra = sorted(n for n in listed if n.startswith("part-")
                   and n not in {f"part-{k:05d}" for k in range(manifest.partitions)})
    if extra:
        raise PartitionError(
            f"{source}: declares {manifest.partitions} partitions but {extra[0]} exists too: "
            "the directory mixes datasets written with different counts")
    return manifest


def _table_pieces(fs: Any, directory: str) -> dict[str, list[str]]:
    pieces: dict[str, list[str]] = {}
    for path in sorted(fs.ls(directory, detail=False)):
        name = posixpath.basename(path.rstrip("/"))
        table = name.split("-")[0] if name.endswith(".parquet") else None
        if table in TABLE_NAMES:
            pieces.setdefault(table, []).append(path)
    return pieces


def read_partition(url: str, number: int, manifest: Manifest) -> ValidationResult:
    """Read and validate one partition (on a worker); refused if it is missing or foreign.

    Every customer is checked to hash to ``number``: a partition written with another
    hash or count is refused rather than scored as if complete.
    """
    import pyarrow.parquet as pq

    fs, root = _fs(url)
    directory = partition_dir(root, number)
    name = partition_dir(url, number)
    try:
        pieces = _table_pieces(fs, directory)
    except FileNotFoundError as error:
        raise PartitionError(f"partition {number} ({name}): missing") from error
    absent = [t for t in manifest.tables if t not in pieces]
    if absent:
        raise PartitionError(f"partition {number} ({name}): {absent[0]} table missing")

    def reader(paths: list[str]) -> Any:
        def read() -> pd.DataFrame:
            try:
                frames = [pq.read_table(p, filesystem=fs).to_pandas() for p in paths]
            except (OSError, ValueError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise PartitionError(f"partition {number} ({name}): cannot be read: "
                                     f"{first}") from error
            return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return read

    raw = {table: reader(pieces[table]) for table in manifest.tables}
    if manifest.rows[number].get("customers", 0) == 0:
        # no customer hashed here: nothing to validate (the contract refuses an empty table)
        empty = {table: read() for table, read in raw.items()}
        return ValidationResult(dataset=Dataset(**empty), rejects=pd.DataFrame(
            columns=REJECT_COLUMNS), rows_read=dict.fromkeys(empty, 0))
    result = validate_tables(raw, sources={t: f"part-{number:05d}/{t}" for t in raw})
    ids = result.dataset.customers["customer_id"]
    wrong = np.flatnonzero(partition_numbers(ids.to_numpy(), manifest.partitions) != number)
    if len(wrong):
        raise PartitionError(
            f"partition {number} ({name}): customer {ids.iloc[wrong[0]]!r} belongs to partition "
            f"{partition_numbers([ids.iloc[wrong[0]]], manifest.partitions)[0]} under "
            f"{PARTITION_HASH} mod {manifest.partitions}: the partitions were written with a "
            "different hash or count (re-run `churnlens partition`)")
    return result


def _schema(frame: pd.DataFrame) -> dict[str, str]:
    return {str(c): str(t) for c, t in frame.dtypes.items()}


class PartitionWriter:
    """Writes validated datasets, batch by batch of whole customers, as partitions.

    Each `write` appends one piece per table to every partition; `close` writes the
    manifest. Customers must not repeat across batches (each batch is validated alone).
    """

    def __init__(self, url: str, *, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("--partitions must be at least 1")
        self.url = str(url)
        self.partitions = partitions
        self.fs, self.root = _fs(self.url)
        self.pieces = 0
        self.rows = [dict.fromkeys(TABLE_NAMES, 0) for _ in range(partitions)]
        self.schema: dict[str, dict[str, str]] = {}
        self.event_types: dict[str, pd.Timestamp] = {}
        self.latest: pd.Timestamp | None = None

    def start(self) -> PartitionWriter:
        """Empty the target's partitions and manifest (a half-written old dataset must go)."""
        if self.fs.exists(self.root):
            for path in self.fs.ls(self.root, detail=False):
                base = posixpath.basename(path.rstrip("/"))
                if base.startswith("part-") or base in (MANIFEST_NAME, REJECTS_NAME):
                    self.fs.rm(path, recursive=True)
        self.fs.makedirs(self.root, exist_ok=True)
        return self

    def write(self, dataset: Dataset) -> None:
        """Append one batch of customers (all their rows) to the partitions."""
        tables = {name: frame for name in dataset.present_tables
                  if (frame := dataset.table(name)) is not None}
        for name, frame in tables.items():
            schema = _schema(frame)
            if self.schema.setdefault(name, schema) != schema:
                raise PartitionError(f"{name}: columns or types differ between batches "
                                     f"({self.schema[name]} vs {schema})")
        latest = dataset.latest_timestamp()
        if latest is not None and (self.latest is None or latest > self.latest):
            self.latest = latest
        if dataset.events is not None and len(dataset.events):
            first = dataset.events.groupby("event_type", observed=True)["occurred_at"].min()
            for event_type, stamp in first.items():
                known = self.event_types.get(str(event_type))
                self.event_types[str(event_type)] = stamp if known is None else min(known, stamp)
        for name, frame in tables.items():
            number = partition_numbers(frame["customer_id"].to_numpy(), self.partitions)
            order = np.argsort(number, kind="stable")
            bounds = np.searchsorted(number[order], np.arange(self.partitions + 1))
            for k in range(self.partitions):
                part = frame.take(order[bounds[k]:bounds[k + 1]]).reset_index(drop=True)
                path = posixpath.join(partition_dir(self.root, k),
                                      f"{name}-{self.pieces:05d}.parquet")
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
                with self.fs.open(path, "wb") as handle:
                    part.to_parquet(handle, index=False)
                self.rows[k][name] += len(part)
        self.pieces += 1

    def close(self, *, rows_read: dict[str, int] | None = None,
              rows_rejected: dict[str, int] | None = None,
              rejects: pd.DataFrame | None = None) -> Manifest:
        """Write the rejects and the manifest (last, so a dataset without one is unfinished)."""
        if not self.schema:
            raise PartitionError("nothing was written: no batch of customers")
        tables = [t for t in TABLE_NAMES if t in self.schema]
        manifest = Manifest(
            partitions=self.partitions, tables=tables,
            rows=[{t: part[t] for t in tables} for part in self.rows],
            schema=self.schema,
            event_types={t: s.isoformat() for t, s in sorted(self.event_types.items())},
            latest=self.latest.isoformat() if self.latest is not None else None,
            rows_read=dict(rows_read or {}), rows_rejected=dict(rows_rejected or {}),
        )
        if rejects is not None:
            with self.fs.open(posixpath.join(self.root, REJECTS_NAME), "w",
                              encoding="utf-8", newline="") as handle:
                rejects.to_csv(handle, index=False)
        with self.fs.open(posixpath.join(self.root, MANIFEST_NAME), "w",
                          encoding="utf-8") as handle:
            handle.write(manifest.to_json())
        return manifest


def write_partitioned(validation: ValidationResult, url: str, *, partitions: int) -> Manifest:
    """Write a validated dataset as ``partitions`` partitions with its rejects and manifest."""
    writer = PartitionWriter(url, partitions=partitions).start()
    writer.write(validation.dataset)
    return writer.close(rows_read=validation.rows_read, rows_rejected=validation.rows_rejected,
                        rejects=validation.rejects)


def read_source(url: str) -> ValidationResult:
    """Read and validate a plain dataset directory, local or at an fsspec URL."""
    from features.contract import require_history
    from features.io import read_dataset

    fs, root = _fs(url)
    if type(fs).__name__ == "LocalFileSystem":
        return read_dataset(root)
    try:
        listed = {posixpath.basename(p.rstrip("/")): p for p in fs.ls(root, detail=False)}
    except FileNotFoundError as error:
        raise DataContractError(f"{url}: not a dataset directory (it does not exist)") from error
    files: dict[str, str] = {}
    for name in TABLE_NAMES:
        present = [f"{name}.{ext}" for ext in ("parquet", "csv") if f"{name}.{ext}" in listed]
        if len(present) > 1:
            raise DataContractError(f"{url}: both {present[0]} and {present[1]} exist; keep one")
        if present:
            files[name] = present[0]

    def reader(file_name: str) -> Any:
        def read() -> pd.DataFrame:
            try:
                with fs.open(listed[file_name], "rb") as handle:
                    if file_name.endswith(".parquet"):
                        return pd.read_parquet(handle)
                    return pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[])
            except (OSError, ValueError, pd.errors.ParserError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise DataContractError(f"{url}/{file_name}: cannot be read: {first}") from error
        return read

    return require_history(validate_tables(
        {name: reader(f) for name, f in files.items()}, sources=files,
        first_rows={name: 2 if f.endswith(".csv") else 1 for name, f in files.items()}))
