"""Databases for the database-source tests: a SQLite file, or a PostgreSQL schema of its own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest

POSTGRES_URL = os.environ.get("CHURNLENS_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="CHURNLENS_TEST_POSTGRES_URL is not set (.ci/run sets it)"
)
#: the back-ends every database-source test runs on
BACKENDS = ["sqlite", pytest.param("postgresql", marks=[needs_postgres, pytest.mark.postgres])]


@contextmanager
def database_url(backend: str, root: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a PostgreSQL schema on the search path (dropped
    after), so parallel test runs never see each other's tables."""
    if backend == "sqlite":
        yield f"sqlite:///{root / f'live-{uuid.uuid4().hex[:8]}.db'}"
        return
    from sqlalchemy import create_engine, text

    assert POSTGRES_URL is not None
    schema = f"source_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def small_dataset(directory: Path, *, customers: int = 150, seed: int = 3) -> Path:
    """A generated mixed dataset (orders, events, subscriptions, attributes) as CSV files."""
    from features.generate import generate_dataset

    generate_dataset(customers=customers, seed=seed, end=date(2026, 6, 30), kind="mixed",
                     orders_per_customer=4, events_per_customer=15).write(directory, fmt="csv")
    return directory


def run_cli(*args: str):
    """``churnlens ARGS`` through typer's runner; returns the result."""
    from typer.testing import CliRunner

    from churnlens import build_app

    return CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})
