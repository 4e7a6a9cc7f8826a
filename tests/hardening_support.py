"""Shared by the hardening tests: a served app on SQLite or PostgreSQL, raw JSON bodies."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

POSTGRES_URL = os.environ.get("CHURNLENS_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="CHURNLENS_TEST_POSTGRES_URL is not set (.ci/run sets it)"
)
#: the outbox back-ends every API hardening test runs on
BACKENDS = ["sqlite", pytest.param("postgresql", marks=[needs_postgres, pytest.mark.postgres])]


@contextmanager
def outbox_url(backend: str, root: Path) -> Iterator[str]:
    """An outbox URL of its own: a SQLite file, or a fresh PostgreSQL schema (dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{root / f'outbox-{uuid.uuid4().hex[:8]}.db'}"
        return
    from sqlalchemy import create_engine, text

    assert POSTGRES_URL is not None
    schema = f"hardening_{uuid.uuid4().hex[:12]}"
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


@dataclass(frozen=True)
class Raw:
    """JSON text inserted verbatim: ``1e309``, ``NaN``, a 400-digit integer."""

    text: str


def encode(value: Any) -> str:
    """JSON text for ``value``; `Raw` parts verbatim, other strings escaped as JSON allows.

    ``json.dumps`` with ``ensure_ascii`` writes a lone surrogate or a NUL as a
    ``\\uXXXX`` escape: valid JSON text that decodes to exactly that string.
    """
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value, allow_nan=True)


def strict_json(text: str) -> Any:
    """Parse a response as a strict client would: NaN or Infinity tokens are errors."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def minimal_body(**order: Any) -> dict[str, Any]:
    """One customer with one order; ``order`` overrides its fields."""
    return {
        "customers": [{"customer_id": "c"}],
        "orders": [{"order_id": "o", "customer_id": "c", "ordered_at": "2024-01-01",
                    "amount": 12.5, **order}],
        "as_of": "2024-06-01",
    }
