"""Merging per-partition Parquet parts, each sorted by customer, into one sorted file.

Partitions are cut by a hash of the customer id, so their outputs interleave; the local
engine writes customers in id order, and the merged file must be the same, row for row.
The merge streams, range of customer ids by range, and holds one range (about
`BUFFER_ROWS` rows), never a whole table, so its memory does not grow with the customer
base. It runs as one task on a worker, so the driver holds no rows at all.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: rows per range of the merge (read from all parts at once), so the merge's memory
#: depends on neither the customer base nor the number of partitions
BUFFER_ROWS = 32_768


def part_row_group(parts: int, buffer_rows: int = BUFFER_ROWS) -> int:
    """Rows per Parquet row group of each part when ``parts`` parts will be merged.

    A reader decodes a whole row group at a time, so the parts' row groups must shrink
    as their number grows, or the merge would hold ``parts`` x row group rows.
    """
    return max(128, buffer_rows // max(1, parts))


def _fs(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(str(url))


@dataclass(frozen=True)
class _RowGroup:
    part: int
    index: int
    rows: int
    first: Any
    last: Any


def _row_groups(parts: Sequence[str], key: str) -> list[_RowGroup]:
    """Each part's row groups with their first and last key, from the Parquet footers
    (the key's statistics; the key column itself where a writer left none)."""
    groups: list[_RowGroup] = []
    for number, part in enumerate(parts):
        fs, path = _fs(part)
        with fs.open(path, "rb") as handle:
            source = pq.ParquetFile(handle, pre_buffer=False)
            column = source.schema_arrow.get_field_index(key)
            for index in range(source.metadata.num_row_groups):
                group = source.metadata.row_group(index)
                if group.num_rows == 0:
                    continue
                stats = group.column(column).statistics
                if stats is not None and stats.has_min_max:
                    first, last = stats.min, stats.max
                else:
                    keys = source.read_row_group(index, columns=[key]).column(key)
                    first, last = keys[0].as_py(), keys[-1].as_py()
                groups.append(_RowGroup(number, index, group.num_rows, first, last))
    return groups


def _bounds(groups: list[_RowGroup], buffer_rows: int) -> list[Any]:
    """Keys that cut the merged order into ranges of about ``buffer_rows`` rows each."""
    bounds: list[Any] = []
    rows = 0
    for group in sorted(groups, key=lambda g: g.first):
        if rows >= buffer_rows and (not bounds or group.first > bounds[-1]):
            bounds.append(group.first)
            rows = 0
        rows += group.rows
    return bounds


def _count_below(keys: pa.ChunkedArray, bound: Any) -> int:
    return int(pc.sum(pc.less(keys, bound)).as_py() or 0)


def merged_batches(parts: Sequence[str], *, key: str,
                   buffer_rows: int = BUFFER_ROWS) -> Iterator[pa.Table]:
    """Tables of rows in ``key`` order across ``parts`` (each already sorted by ``key``).

    The key space is cut into ranges of about ``buffer_rows`` rows, from the first and
    last key of every row group in the parts' footers. Each part is read in order, every
    row group once (a file open only while it is read): a range takes the rows below its
    upper bound from the row groups that start below it, and the rest of the last one
    waits for the next range. So the merge holds one range plus at most one row group per
    part, and, by the parts' row groups of `part_row_group` rows, about two ranges in all,
    whatever the number of customers. What it keeps across ranges is the list of row
    groups and their first and last keys.
    """
    groups = _row_groups(parts, key)
    bounds = _bounds(groups, buffer_rows)
    by_part: dict[int, list[_RowGroup]] = {}
    for group in groups:
        by_part.setdefault(group.part, []).append(group)
    read = dict.fromkeys(by_part, 0)  # row groups of each part read so far
    rest: dict[int, pa.Table] = {}  # rows of a part's last row group above the last bound
    for high in [*bounds, None]:
        pieces: list[pa.Table] = []
        for number, part_groups in sorted(by_part.items()):
            start = read[number]
            stop = start
            while stop < len(part_groups) and (high is None or part_groups[stop].first < high):
                stop += 1
            held = [rest.pop(number)] if number in rest else []
            if stop > start:
                fs, path = _fs(parts[number])
                with fs.open(path, "rb") as handle:
                    held.append(pq.ParquetFile(handle, pre_buffer=False).read_row_groups(
                        [g.index for g in part_groups[start:stop]]))
                read[number] = stop
            if not held:
                continue
            table = held[0] if len(held) == 1 else pa.concat_tables(held)
            below = table.num_rows if high is None else _count_below(table.column(key), high)
            if below:
                pieces.append(table.slice(0, below))
            if below < table.num_rows:
                rest[number] = table.slice(below)
        if not pieces:
            continue
        same = all(piece.schema == pieces[0].schema for piece in pieces)
        merged = pa.concat_tables(pieces, promote_options="none" if same else "permissive")
        yield merged.take(pc.sort_indices(merged, sort_keys=[(key, "ascending")]))


def write_part(frame: pd.DataFrame, url: str, *, row_group: int) -> None:
    """Write a sorted part for `merged_batches` (row groups of `part_row_group` rows),
    whole or not at all."""
    fs, path = _fs(url)
    temp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(temp, "wb") as handle:
        frame.to_parquet(handle, index=False, row_group_size=row_group)
    fs.mv(temp, path)


class PartWriter:
    """A sorted part for `merged_batches` written batch by batch, so a task never holds
    all of its rows; it appears under its name whole, and only when closed without error.

    Batches must come in ``key`` order and share their columns and dtypes; row groups
    have ``row_group`` rows (`part_row_group`).
    """

    def __init__(self, url: str, *, row_group: int) -> None:
        self.fs, self.path = _fs(url)
        self.temp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        self.row_group = row_group
        self.rows = 0
        self._handle: Any = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._handle = self.fs.open(self.temp, "wb")
            self._writer = pq.ParquetWriter(self._handle, table.schema)
        elif not table.schema.equals(self._writer.schema, check_metadata=False):
            table = table.cast(self._writer.schema)
        self._writer.write_table(table, row_group_size=self.row_group)
        self.rows += table.num_rows

    def close(self, *, keep: bool = True) -> None:
        """Finish the file and move it into place (``keep``), or remove it."""
        if self._writer is not None:
            self._writer.close()
            self._handle.close()
            self._writer = None
            if keep:
                self.fs.mv(self.temp, self.path)
            else:
                self.fs.rm(self.temp)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self.close(keep=kind is None)


def write_merged(parts: Sequence[str], out: str, *, key: str,
                 categories: dict[str, list[str]] | None = None) -> int:
    """Merge sorted parts into ``out`` (.parquet or .csv, local or fsspec URL); rows written.

    ``categories`` sets the levels of categorical columns (the union over partitions, as
    the local engine has them). The file appears whole: written beside, then moved.
    """
    fs, path = _fs(out)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    temp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    rows = 0
    try:
        with fs.open(temp, "wb") as handle:
            if path.endswith(".parquet"):
                rows = _write_parquet(parts, handle, key=key, categories=categories)
            else:
                rows = _write_csv(parts, handle, key=key, categories=categories)
        fs.mv(temp, path)
    finally:
        if fs.exists(temp):
            fs.rm(temp)
    return rows


def _frames(parts: Sequence[str], *, key: str,
            categories: dict[str, list[str]] | None) -> Iterator[pd.DataFrame]:
    for table in merged_batches(parts, key=key):
        frame = table.to_pandas()
        for column, levels in (categories or {}).items():
            # not astype: unordered dtypes with the same levels in another order compare
            # equal, so astype would keep the order the parts happened to unify in
            values = frame[column]
            if not isinstance(values.dtype, pd.CategoricalDtype):
                values = values.astype("category")
            frame[column] = values.cat.set_categories(levels)
        yield frame


def _write_parquet(parts: Sequence[str], handle: Any, *, key: str,
                   categories: dict[str, list[str]] | None) -> int:
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        tables = (merged_batches(parts, key=key) if not categories else
                  (pa.Table.from_pandas(frame, preserve_index=False)
                   for frame in _frames(parts, key=key, categories=categories)))
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(handle, table.schema)
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is None and parts:  # nothing to merge: keep the parts' columns
            fs, path = _fs(parts[0])
            with fs.open(path, "rb") as first:
                schema = pq.read_schema(first)
            writer = pq.ParquetWriter(handle, schema)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _write_csv(parts: Sequence[str], handle: Any, *, key: str,
               categories: dict[str, list[str]] | None) -> int:
    import io

    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    rows = 0
    for i, frame in enumerate(_frames(parts, key=key, categories=categories)):
        frame.to_csv(text, index=False, header=i == 0)
        rows += len(frame)
    text.flush()
    text.detach()
    return rows
