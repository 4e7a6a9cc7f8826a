"""API keys for CRM clients: ``Authorization: Bearer <key>``.

The server stores only SHA-256 digests of the keys (``CHURNLENS_API_KEYS``), so
a leaked configuration does not leak a usable key. The digest of the presented
key is compared with every configured digest in constant time.

A key may be limited to a scope: an entry ``DIGEST`` opens everything,
``DIGEST:score`` only reading (scores, the model, outreach actions) and
``DIGEST:ingest`` only writing history (``POST /v1/customers|orders|events|
subscriptions``), so a CRM's ingestion job cannot read scores with its key and a
dashboard's key cannot write. A digest listed twice with both scopes opens both.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from enum import Enum, StrEnum
from http import HTTPStatus

#: keys are URL-safe tokens; anything else in the header is malformed
_KEY_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
KEY_PREFIX = "clk_"


class Credential(Enum):
    """How a request's credentials compare with the configured keys."""

    ACCEPTED = "accepted"
    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    OUT_OF_SCOPE = "out_of_scope"


class Scope(StrEnum):
    """What a key may do: read scores or write history."""

    SCORE = "score"
    INGEST = "ingest"


#: the tables written by ``POST /v1/<table>`` (the ingestion routes)
INGEST_TABLES = ("customers", "orders", "events", "subscriptions")
_INGEST_PATHS = frozenset(f"/v1/{table}" for table in INGEST_TABLES)


def required_scope(method: str, path: str) -> Scope:
    """The scope a request needs: writing history needs ``ingest``, all else ``score``.

    One function decides for both the middleware (which runs before routing) and
    the route dependency, so the two cannot disagree.
    """
    if method.upper() == "POST" and path.rstrip("/") in _INGEST_PATHS:
        return Scope.INGEST
    return Scope.SCORE


def parse_key_entry(entry: str) -> tuple[str, frozenset[Scope]]:
    """``DIGEST`` or ``DIGEST:SCOPE`` as (digest, scopes); raises ValueError naming the scope."""
    digest, _, scope = entry.strip().lower().partition(":")
    if not scope:
        return digest, frozenset(Scope)
    try:
        return digest, frozenset({Scope(scope)})
    except ValueError:
        choices = ", ".join(s.value for s in Scope)
        raise ValueError(f"unknown scope {scope!r} (expected one of {choices}, "
                         "or none for a key that may do everything)") from None


def digest_key(key: str) -> str:
    """The SHA-256 hex digest stored in ``CHURNLENS_API_KEYS`` for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random API key (256 bits) and its digest."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, digest_key(key)


def check_authorization(
    header: str | None, entries: Iterable[str], *, scope: Scope | None = None
) -> Credential:
    """Classify an ``Authorization`` header against the configured key entries.

    ``scope`` is what the request needs; None asks only whether the key is known.
    """
    if header is None or not header.strip():
        return Credential.MISSING
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or not set(key) <= _KEY_CHARACTERS:
        return Credential.MALFORMED
    presented = digest_key(key).encode("ascii")
    matched = allowed = False
    for entry in entries:
        digest, scopes = parse_key_entry(entry)
        # no early exit: the time taken does not depend on which digest matched
        hit = hmac.compare_digest(presented, digest.encode("ascii"))
        matched |= hit
        allowed |= hit and (scope is None or scope in scopes)
    if allowed:
        return Credential.ACCEPTED
    return Credential.OUT_OF_SCOPE if matched else Credential.UNKNOWN_KEY


#: WWW-Authenticate header of every 401 answer
CHALLENGE = 'Bearer realm="churnlens"'


def refusal(verdict: Credential, scope: Scope | None = None) -> tuple[HTTPStatus, str] | None:
    """The status and message for a refused credential; None when it is accepted."""
    if verdict is Credential.ACCEPTED:
        return None
    if verdict is Credential.OUT_OF_SCOPE:
        needed = f"the {scope.value!r} scope" if scope is not None else "another scope"
        return (HTTPStatus.FORBIDDEN,
                f"API key not allowed here: this request needs {needed} "
                "(CHURNLENS_API_KEYS entry DIGEST or DIGEST:SCOPE)")
    if verdict is Credential.MISSING:
        return HTTPStatus.UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'"
    if verdict is Credential.MALFORMED:
        return (HTTPStatus.UNAUTHORIZED,
                "malformed Authorization header: expected 'Bearer <key>'")
    return HTTPStatus.FORBIDDEN, "API key not accepted"
