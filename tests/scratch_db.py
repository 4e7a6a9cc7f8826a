"""Throwaway databases for tests: a SQLite file, or a PostgreSQL schema of its own.

PostgreSQL runs when CHURNLENS_TEST_POSTGRES_URL is set (`.ci/run` sets it when a
local server answers). Each database is a fresh schema named by a prefix and a
random suffix, on the connection's search path, and dropped after: parallel test
runs, and other people's tables in the same database, are never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

POSTGRES_URL = os.environ.get("CHURNLENS_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="CHURNLENS_TEST_POSTGRES_URL is not set (.ci/run sets it)"
)
#: the back-ends a database test runs on
BACKENDS = ["sqlite", pytest.param("postgresql", marks=[needs_postgres, pytest.mark.postgres])]


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``schema`` as the connection's search path."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def scratch_database(backend: str, root: Path, *, prefix: str) -> Iterator[str]:
    """A database URL of its own: ``root/PREFIX-xxxxxxxx.db``, or a fresh PostgreSQL schema
    ``PREFIX_xxxxxxxxxxxx`` (dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{root / f'{prefix}-{uuid.uuid4().hex[:8]}.db'}"
        return
    from sqlalchemy import create_engine, text

    assert POSTGRES_URL is not None
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_search_path(POSTGRES_URL, schema)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
