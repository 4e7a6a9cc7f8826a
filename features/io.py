"""Reading and writing files: the one module of `features` that touches disk.

A dataset directory holds ``NAME.csv`` or ``NAME.parquet`` for the four table
names of the data contract; any other file (``ground_truth.csv``, rejects) is ignored.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from features.contract import (
    DataContractError,
    ValidationResult,
    require_history,
    validate_tables,
)
from features.dataset import ACTIVITY_TABLES

TABLE_NAMES = ("customers", *ACTIVITY_TABLES)


def find_tables(directory: Path) -> dict[str, Path]:
    """Map each table present in ``directory`` to its file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataContractError(f"{directory}: not a dataset directory (it does not exist)")
    found: dict[str, Path] = {}
    for name in TABLE_NAMES:
        candidates = [directory / f"{name}.{ext}" for ext in ("parquet", "csv")]
        present = [p for p in candidates if p.exists()]
        if len(present) > 1:
            raise DataContractError(
                f"{directory}: both {present[0].name} and {present[1].name} exist; keep one"
            )
        if present:
            found[name] = present[0]
    return found


def read_raw_table(path: Path) -> pd.DataFrame:
    """Read one table without interpreting values (CSV cells stay strings)."""
    try:
        if path.suffix == ".parquet":
            # pre_buffer=False: decode row groups as read instead of first holding the
            # whole compressed file (local files read faster too, and peak ~0.25 GB lower)
            return pd.read_parquet(path, pre_buffer=False)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except UnicodeDecodeError as error:
        raise DataContractError(_not_utf8(path, error)) from error
    except (OSError, ValueError, pd.errors.ParserError) as error:
        message = str(error).strip()
        first_line = message.splitlines()[0] if message else type(error).__name__
        raise DataContractError(f"{path}: cannot be read: {first_line}") from error


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is, as line and column (the decoder only
    knows its position inside the block it was decoding)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                byte = line[bad.start]
                return (f"{path}: line {number}, byte {bad.start + 1} (0x{byte:02x}) is not "
                        "UTF-8 text; save the file as UTF-8")
    return f"{path}: cannot be read: not UTF-8 text ({error.reason})"


def read_dataset(directory: Path | str, *, tables: Path | str | None = None
                 ) -> ValidationResult:
    """Read and validate a dataset directory or database URL (see `features.contract`).

    A database URL (``sqlite:///live.db``, ``postgresql+psycopg://…``) is read by
    `features.db_source`, with ``tables`` an optional YAML mapping onto an
    existing schema. Each file is read only when its table is validated and
    dropped after, so at most one raw table is in memory next to the validated ones.
    """
    from features.sources import is_database_url

    if is_database_url(directory):
        from features.db_source import read_database

        return read_database(str(directory), tables=tables)
    if tables is not None:
        raise DataContractError(f"--tables {tables}: a table mapping needs a database URL in "
                                f"--data, not the directory {directory}")
    files = find_tables(Path(directory))
    raw = {name: partial(read_raw_table, path) for name, path in files.items()}
    first_rows = {name: 2 if path.suffix == ".csv" else 1 for name, path in files.items()}
    return require_history(validate_tables(
        raw, sources={name: path.name for name, path in files.items()}, first_rows=first_rows
    ))


def write_table(frame: pd.DataFrame, path: Path | str, *, index: bool = False) -> Path:
    """Write a frame as Parquet or CSV (by extension), atomically: temp file, then rename."""
    path = Path(path)
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{path}: output must end in .parquet or .csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name beside the target (same file system, so the rename is atomic);
    # not mkstemp, whose 0600 mode would leave the dataset unreadable to others
    temp_name = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        if path.suffix == ".parquet":
            frame.to_parquet(temp_name, index=index)
        else:
            _write_csv(frame, temp_name, index=index)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _write_csv(frame: pd.DataFrame, target: Path, *, index: bool) -> None:
    """Write CSV with pyarrow (several times faster than pandas), pandas as the fallback.

    The text matches what pandas writes for the same frame: empty cells for
    missing values, ``True``/``False``, timestamps as ``YYYY-MM-DD HH:MM:SS``
    (fractions only when present). Columns pyarrow cannot type (mixed Python
    objects, time zones) go through pandas unchanged.
    """
    if index:
        frame = frame.reset_index()
    ready: dict[str, object] = {}
    for column in frame.columns:
        series = frame[column]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            frame.to_csv(target, index=False)
            return
        if pd.api.types.is_datetime64_dtype(series.dtype):
            stamps = series.to_numpy()
            whole = stamps[~pd.isna(stamps)]
            if (whole == whole.astype("datetime64[s]")).all():
                series = series.astype("datetime64[s]")
        elif pd.api.types.is_bool_dtype(series.dtype):
            series = series.map({True: "True", False: "False"})
        elif isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        ready[str(column)] = series
    try:
        table = pa.Table.from_pandas(pd.DataFrame(ready), preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frame.to_csv(target, index=False)
        return
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(table.column_names)
    # plain cells like pandas writes; every text cell quoted only if some need quotes
    for quoting in ("none", "needed"):
        with open(target, "wb") as handle:
            handle.write(header.getvalue().encode())
            try:
                pa_csv.write_csv(table, handle, write_options=pa_csv.WriteOptions(
                    include_header=False, quoting_style=quoting))
                return
            except pa.ArrowInvalid:
                if quoting == "needed":
                    raise


def write_dataset(tables: dict[str, pd.DataFrame], directory: Path | str, *,
                  fmt: str = "csv") -> Path:
    """Write tables as a dataset directory, one ``NAME.fmt`` file per table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        write_table(frame, directory / f"{name}.{fmt}")
    return directory
