"""Shared by the hardening tests: a served app on SQLite or PostgreSQL, raw JSON bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


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
