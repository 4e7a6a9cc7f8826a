"""Merging per-partition Parquet parts, each sorted by customer, into one sorted file.

Partitions are cut by a hash of the customer id, so their outputs interleave; the local
engine writes customers in id order, and the merged file must be the same, row for row.
The merge streams: it holds one batch per part, never a whole table, so the driver's
memory does not grow with the customer base.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: rows held across all parts at once while merging (split between the parts), so the
#: driver's memory depends on neither the customer base nor the number of partitions
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


def merged_batches(parts: Sequence[str], *, key: str,
                   buffer_rows: int = BUFFER_ROWS) -> Iterator[pa.Table]:
    """Tables of rows in ``key`` order across ``parts`` (each already sorted by ``key``).

    Each round takes from every part the rows up to the smallest "last key in buffer"
    among the parts not yet exhausted, so everything emitted precedes what is left.
    """
    batch_rows = part_row_group(len(parts), buffer_rows)
    readers: list[Iterator[pa.RecordBatch]] = []
    for part in parts:
        fs, path = _fs(part)
        readers.append(pq.ParquetFile(fs.open(path, "rb")).iter_batches(batch_size=batch_rows))
    buffers: list[pa.Table | None] = [None] * len(readers)
    done = [False] * len(readers)
    while True:
        for i, reader in enumerate(readers):
            while not done[i] and (buffers[i] is None or buffers[i].num_rows == 0):
                batch = next(reader, None)
                if batch is None:
                    done[i] = True
                else:
                    buffers[i] = pa.Table.from_batches([batch])
        live = [i for i, b in enumerate(buffers) if b is not None and b.num_rows]
        if not live:
            return
        open_ends = [buffers[i].column(key)[-1].as_py() for i in live if not done[i]]
        bound = min(open_ends) if open_ends else None
        taken: list[pa.Table] = []
        for i in live:
            table = buffers[i]
            if bound is None:
                cut = table.num_rows
            else:
                keys = np.asarray(table.column(key).to_pylist(), dtype=object)
                cut = int(np.searchsorted(keys, bound, side="right"))
            taken.append(table.slice(0, cut))
            buffers[i] = table.slice(cut)
        merged = pa.concat_tables(taken, promote_options="permissive")
        yield merged.take(pc.sort_indices(merged, sort_keys=[(key, "ascending")]))


def write_part(frame: pd.DataFrame, url: str, *, row_group: int) -> None:
    """Write a sorted part for `merged_batches` (row groups of `part_row_group` rows),
    whole or not at all."""
    fs, path = _fs(url)
    temp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(temp, "wb") as handle:
        frame.to_parquet(handle, index=False, row_group_size=row_group)
    fs.mv(temp, path)


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
