"""Text cells as the data contract reads them: surrounding spaces stripped, blanks missing.

CSV cells arrive as Arrow-backed strings. Stripping and blank checks are the
contract's most repeated work, so each helper first looks at the Arrow buffers
and skips the work when it would change nothing; the results always equal
pandas' ``str.strip()`` (which is Arrow's ``utf8_trim_whitespace``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def arrow_text(series: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow strings behind a pyarrow-backed text column (no copy), else None."""
    dtype = series.dtype
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
        return None
    arrow = pa.array(series.array)
    if isinstance(arrow, pa.Array):
        arrow = pa.chunked_array([arrow], type=arrow.type)
    if not (pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type)):
        return None
    return arrow


def _plain_chunk(chunk: pa.Array) -> bool:
    """No value is empty or has a byte at either end that could be whitespace.

    Conservative on purpose: control bytes, space, DEL and any non-ASCII byte
    count as "could be whitespace", so Python's and Arrow's ``strip`` agree
    that such a chunk is unchanged.
    """
    if len(chunk) == 0:
        return True
    offset_type = np.dtype(np.int64 if pa.types.is_large_string(chunk.type) else np.int32)
    _, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=len(chunk) + 1,
                            offset=chunk.offset * offset_type.itemsize)
    starts, ends = offsets[:-1], offsets[1:]
    if chunk.null_count:
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        starts, ends = starts[valid], ends[valid]
    if len(starts) == 0:
        return True
    if (ends <= starts).any():
        return False
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    return all(((edge > 0x20) & (edge < 0x7F)).all() for edge in (data[starts], data[ends - 1]))


def plain_text(series: pd.Series) -> bool:
    """True when stripping changes no value and none is blank, so both can be skipped.

    Looks at the first and last byte of each Arrow string (fast, no copy);
    False whenever that cannot tell, and callers then do the full work.
    """
    arrow = arrow_text(series)
    return arrow is not None and all(_plain_chunk(chunk) for chunk in arrow.chunks)


def is_str(series: pd.Series) -> bool:
    """Whether ``series.astype("str")`` would keep the dtype (so it can be skipped)."""
    return series.dtype == series.iloc[:0].astype("str").dtype


def is_blank(series: pd.Series) -> pd.Series:
    """Missing, or text that is only spaces; typed (non-text) columns can only be missing."""
    if not (pd.api.types.is_object_dtype(series.dtype)
            or pd.api.types.is_string_dtype(series.dtype)):
        return series.isna()
    if plain_text(series):
        return series.isna()
    return series.isna() | (series.astype("string").str.strip() == "").fillna(False)


def clean_text(series: pd.Series) -> pd.Series:
    """Text as ``string`` with surrounding spaces stripped and blanks missing."""
    if plain_text(series):
        return series.astype("string")
    return series.astype("string").str.strip().replace({"": pd.NA})


def stripped(series: pd.Series) -> pd.Series:
    """Text as ``str``, surrounding spaces stripped; the column itself if that changes nothing."""
    if is_str(series) and plain_text(series):
        return series
    return series.astype("string").str.strip().astype("str")
