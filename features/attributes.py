"""Static customer attributes typed all at once: a column is numeric when every value is a number.

A customers file may carry up to `features.contract.MAX_ATTRIBUTE_COLUMNS` extra columns.
Typing them one by one costs a few milliseconds of fixed pandas overhead per column plus
pandas' per-value number parsing; here the text columns are joined into one Arrow array
that is trimmed, classified and parsed in single passes. Only a column those passes
cannot decide (a value pandas reads as a number that is not a plain decimal, such as
``inf``, or a negative zero, whose sign pandas sets by the column) goes through
`attribute_column`, the rule itself applied to one column, so the result always equals
what `attribute_column` gives every column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.text import arrow_text, clean_text, plain_text

#: how many leading values `attribute_column` parses before converting a whole column
_SAMPLE = 1000
#: a decimal number Arrow and pandas parse to the same float: ASCII digits, at most 18
#: before the point (so pandas' integer path never overflows), a two-digit exponent
_PLAIN_NUMBER = r"^[+-]?(?:\d{1,18}(?:\.\d{0,18})?|\.\d{1,18})(?:[eE][+-]?\d{1,2})?$"


def attribute_column(series: pd.Series) -> pd.Series:
    """A static attribute: numeric when every non-blank value is a number, else text.

    CSV cells arrive as strings; without this an ``age`` column would be
    treated as a category of strings. Blank cells become missing values.
    """
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(object)
    text = clean_text(series)
    if not _sample_is_text(text):
        numbers = pd.to_numeric(text, errors="coerce")
        if text.notna().any() and numbers[text.notna()].notna().all():
            return numbers.astype("float64")
    return text.astype(object).where(text.notna(), np.nan)


def _sample_is_text(text: pd.Series) -> bool:
    """Whether a leading value is not a number, which already makes the column text.

    Parsing is per value, so a sample answers "text" exactly as the whole
    column would, without parsing a million names to find that out.
    """
    sample = text.iloc[:_SAMPLE].dropna()
    return bool(pd.to_numeric(sample, errors="coerce").isna().any())


def type_attributes(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, pd.Series]:
    """Each of ``columns`` of ``frame`` typed as `attribute_column` would type it.

    Arrow-backed text columns (every CSV column) are typed together; others (typed
    Parquet columns) one by one, which costs only a dtype conversion.
    """
    typed: dict[str, pd.Series] = {}
    text: dict[str, pa.ChunkedArray] = {}
    for column in columns:
        arrow = arrow_text(frame[column])
        if arrow is None:
            typed[column] = attribute_column(frame[column])
        else:
            text[column] = arrow
    if text and len(frame):
        typed.update(_type_text(frame, text))
    else:
        typed.update({column: attribute_column(frame[column]) for column in text})
    return {column: typed[column] for column in columns}


def _type_text(frame: pd.DataFrame, text: dict[str, pa.ChunkedArray]) -> dict[str, pd.Series]:
    """Text columns of equal length, typed in a few passes over all of them together.

    A column whose first `_SAMPLE` values hold one that is not a plain decimal is settled
    by that value alone (as `attribute_column` settles it from its sample); only the
    remaining columns are scanned and parsed in full.
    """
    names = list(text)
    rows = len(frame)
    cells = [_cleaned(text[name], frame[name]) for name in names]
    sample = min(rows, _SAMPLE)
    undecided = np.zeros(len(names), dtype=bool)
    words = np.zeros(len(names), dtype=bool)

    def settle(positions: np.ndarray, plain: np.ndarray, length: int) -> np.ndarray:
        """Columns (of ``positions``) with a value that is not plain: text when pandas reads
        that value as no number, else undecided. The columns left are plain throughout."""
        odd = ~plain.all(axis=1)
        if odd.any():
            first = [cells[p].slice(int(np.argmax(~row)), 1)[0].as_py()
                     for p, row in zip(positions[odd], plain[odd], strict=True)]
            number = pd.to_numeric(pd.Series(first, dtype="string"), errors="coerce").notna()
            undecided[positions[odd]] = number.to_numpy()
            words[positions[odd]] = ~number.to_numpy()
        return positions[~odd]

    everything = np.arange(len(names))
    candidates = settle(everything, _plain_grid([c.slice(0, sample) for c in cells], sample),
                        sample)
    candidates = settle(candidates, _plain_grid([cells[p] for p in candidates], rows), rows)
    present = np.array([cells[p].null_count < rows for p in candidates], dtype=bool)
    words[candidates[~present]] = True
    numeric = candidates[present]

    typed: dict[str, pd.Series] = {}
    for position, values in _parse_plain([cells[p] for p in numeric], numeric, rows).items():
        if values is None:
            undecided[position] = True
        else:
            typed[names[position]] = pd.Series(values, index=frame.index, dtype="float64")
    for position in np.flatnonzero(undecided).tolist():
        typed[names[position]] = attribute_column(frame[names[position]])
    for position in np.flatnonzero(words).tolist():
        values = cells[position].to_numpy(zero_copy_only=False)
        values[pd.isna(values)] = np.nan
        typed[names[position]] = pd.Series(values, index=frame.index, dtype=object)
    return typed


def _cleaned(arrow: pa.ChunkedArray, series: pd.Series) -> pa.ChunkedArray:
    """The column as `clean_text` leaves it (stripped, blanks missing), as Arrow strings."""
    if not plain_text(series):
        trimmed = pc.utf8_trim_whitespace(arrow)
        arrow = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, trimmed.type), trimmed)
    return arrow.cast(pa.large_string())


def _plain_grid(columns: list[pa.ChunkedArray], rows: int) -> np.ndarray:
    """(column, row) booleans: the cell is a plain decimal (`_PLAIN_NUMBER`) or missing."""
    if not columns:
        return np.zeros((0, rows), dtype=bool)
    joined = pa.chunked_array([chunk for column in columns for chunk in column.chunks],
                              type=pa.large_string())
    plain = pc.fill_null(pc.match_substring_regex(joined, _PLAIN_NUMBER), True)
    return np.asarray(plain.to_numpy(zero_copy_only=False), dtype=bool).reshape(-1, rows)


def _parse_plain(columns: list[pa.ChunkedArray], positions: np.ndarray, rows: int
                 ) -> dict[int, np.ndarray | None]:
    """The floats of plain-decimal columns; None for a column the cast cannot settle.

    That is a column holding a negative zero (pandas' sign for it depends on the rest of
    the column) or a value Arrow overflows; `attribute_column` then decides it.
    """
    if not columns:
        return {}
    joined = pa.chunked_array([chunk for column in columns for chunk in column.chunks],
                              type=pa.large_string())
    values = pc.cast(joined, pa.float64()).to_numpy(zero_copy_only=False).reshape(-1, rows)
    unsettled = (((values == 0) & np.signbit(values)) | np.isinf(values)).any(axis=1)
    return {int(p): None if unsettled[i] else values[i] for i, p in enumerate(positions)}
