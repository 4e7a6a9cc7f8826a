"""Cutting a dataset into chunks of customers, so a task holds one chunk's work at a time.

Batch scoring (`serving.batch`, `serving.partitioned_batch`) and the partitioned feature
table (`features.engine`) both cut their customers into sorted chunks of ids and take each
chunk's rows from every table in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from features.dataset import Dataset


def chunk_ids(customer_ids: Sequence[str] | pd.Index | pd.Series,
              chunk_size: int) -> list[list[str]]:
    """Sorted ids cut every ``chunk_size``: the same boundaries on every run (for resume)."""
    ids = sorted({str(c) for c in customer_ids})
    return [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]


def partition(dataset: Dataset, chunks: Sequence[Sequence[str]]) -> Iterator[Dataset]:
    """``dataset.for_customers(chunk)`` for each chunk, without rescanning every table.

    Each table's rows are grouped by chunk once (a stable sort, so rows keep their order);
    a chunk's tables are then slices, identical to what ``for_customers`` returns.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ordered = pa.array([c for chunk in chunks for c in chunk], type=pa.large_string())
    starts = np.cumsum([0, *(len(c) for c in chunks)])
    # chunk numbers fit 16 bits for up to 32,767 chunks: numpy sorts those stably by radix
    small = np.int16 if len(chunks) < np.iinfo(np.int16).max else np.int32
    tables: dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]] = {}
    for name in ("customers", "orders", "events", "subscriptions"):
        frame = dataset.table(name)
        if frame is None:
            continue
        # position of each row's customer in the sorted ids (Arrow's hash kernel, no copies)
        ids = pa.array(frame["customer_id"].array, type=pa.large_string())
        position = pc.index_in(ids, value_set=ordered).fill_null(-1).to_numpy()
        chunk_of = (np.searchsorted(starts, position, side="right") - 1).astype(small)
        chunk_of[position < 0] = len(chunks)
        del ids, position
        order = np.argsort(chunk_of, kind="stable")
        bounds = np.searchsorted(chunk_of[order], np.arange(len(chunks) + 1))
        tables[name] = (frame, order, bounds)
    for i in range(len(chunks)):
        parts = {
            name: frame.take(order[bounds[i] : bounds[i + 1]])
            for name, (frame, order, bounds) in tables.items()
        }
        yield replace(dataset, **parts)
