"""Reading and writing files: the one module of `features` that touches disk.

A dataset directory holds ``NAME.csv`` or ``NAME.parquet`` for the four table
names of DESIGN §2; any other file (``ground_truth.csv``, rejects) is ignored.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

from features.contract import DataContractError, ValidationResult, validate_tables
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
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (OSError, ValueError, pd.errors.ParserError) as error:
        message = str(error).strip()
        first_line = message.splitlines()[0] if message else type(error).__name__
        raise DataContractError(f"{path}: cannot be read: {first_line}") from error


def read_dataset(directory: Path | str) -> ValidationResult:
    """Read and validate a dataset directory (see `features.contract`)."""
    files = find_tables(Path(directory))
    raw = {name: read_raw_table(path) for name, path in files.items()}
    first_rows = {name: 2 if path.suffix == ".csv" else 1 for name, path in files.items()}
    return validate_tables(
        raw, sources={name: path.name for name, path in files.items()}, first_rows=first_rows
    )


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
            frame.to_csv(temp_name, index=index)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def write_dataset(tables: dict[str, pd.DataFrame], directory: Path | str, *,
                  fmt: str = "csv") -> Path:
    """Write tables as a dataset directory, one ``NAME.fmt`` file per table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        write_table(frame, directory / f"{name}.{fmt}")
    return directory
