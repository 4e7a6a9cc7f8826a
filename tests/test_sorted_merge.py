"""The merge of sorted parts: the rows of a full sort, read range by range, so what it holds
at once is bounded by its buffer, not by the number of rows or parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.sorted_merge import (
    PartWriter,
    merged_batches,
    part_row_group,
    write_merged,
    write_part,
)

PARTS = 12
BUFFER = 240


def _parts(tmp_path, *, rows: int, statistics: bool = True) -> tuple[list[str], pd.DataFrame]:
    rng = np.random.default_rng(3)
    ids = np.array([f"C{n:07d}" for n in rng.choice(10**7, size=rows, replace=False)])
    frame = pd.DataFrame({"customer_id": ids, "score": rng.random(rows),
                          "text": [f"reason {n % 17}" for n in range(rows)]})
    owner = rng.integers(0, PARTS, size=rows)
    owner[:PARTS - 1] = 0  # part PARTS-1 may end up empty: it must be fine
    paths = []
    for k in range(PARTS):
        part = frame[owner == k].sort_values("customer_id").reset_index(drop=True)
        path = str(tmp_path / f"rows-{k:05d}.parquet")
        if statistics:
            write_part(part, path, row_group=part_row_group(PARTS, BUFFER))
        else:
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path,
                           row_group_size=part_row_group(PARTS, BUFFER), write_statistics=False)
        paths.append(path)
    return paths, frame.sort_values("customer_id").reset_index(drop=True)


@pytest.mark.parametrize("statistics", [True, False])
def test_the_merge_is_the_full_sort_in_bounded_ranges(tmp_path, statistics):
    paths, expected = _parts(tmp_path, rows=5_000, statistics=statistics)
    tables = list(merged_batches(paths, key="customer_id", buffer_rows=BUFFER))
    merged = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    pd.testing.assert_frame_equal(merged, expected)
    # a range is cut after BUFFER rows of whole row groups, so it holds at most one more
    # row group per part: the bound does not depend on the 5,000 rows
    largest = max(t.num_rows for t in tables)
    assert largest <= BUFFER + PARTS * part_row_group(PARTS, BUFFER), largest
    assert len(tables) >= 5_000 // (BUFFER + PARTS * part_row_group(PARTS, BUFFER))


def test_every_row_group_is_read_once(tmp_path, monkeypatch):
    """A range ends inside most parts' row groups; their rest waits for the next range
    instead of the row group being read (decoded) again."""
    paths, expected = _parts(tmp_path, rows=5_000)
    read: list[int] = []
    original = pq.ParquetFile.read_row_groups

    def counted(self, row_groups, *args, **kwargs):
        table = original(self, row_groups, *args, **kwargs)
        read.append(table.num_rows)
        return table

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", counted)
    tables = list(merged_batches(paths, key="customer_id", buffer_rows=BUFFER))
    assert sum(read) == len(expected), "a row group was read more than once"
    merged = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    pd.testing.assert_frame_equal(merged, expected)


def test_write_merged_to_csv_and_parquet(tmp_path):
    paths, expected = _parts(tmp_path, rows=700)
    assert write_merged(paths, str(tmp_path / "out.parquet"), key="customer_id") == 700
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out.parquet"), expected)
    assert write_merged(paths, str(tmp_path / "out.csv"), key="customer_id") == 700
    assert pd.read_csv(tmp_path / "out.csv")["customer_id"].tolist() == \
        expected["customer_id"].tolist()


def test_a_part_written_batch_by_batch_appears_whole_or_not_at_all(tmp_path):
    frame = pd.DataFrame({"customer_id": [f"C{n:04d}" for n in range(1000)],
                          "score": np.linspace(0, 1, 1000)})
    path = tmp_path / "rows-00000.parquet"
    with PartWriter(str(path), row_group=100) as writer:
        for start in range(0, 1000, 300):
            writer.write(frame.iloc[start:start + 300])
            assert not path.exists(), "the part appeared before it was complete"
    assert writer.rows == 1000
    metadata = pq.ParquetFile(path).metadata
    assert max(metadata.row_group(k).num_rows for k in range(metadata.num_row_groups)) <= 100
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)

    failed = tmp_path / "rows-00001.parquet"
    with pytest.raises(RuntimeError), PartWriter(str(failed), row_group=100) as writer:
        writer.write(frame.iloc[:300])
        raise RuntimeError("the worker failed mid-partition")
    assert not failed.exists() and not list(tmp_path.glob("rows-00001*")), \
        "a failed part left a file behind"
