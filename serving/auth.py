"""API keys for CRM clients: ``Authorization: Bearer <key>``.

The server stores only SHA-256 digests of the keys (``CHURNLENS_API_KEYS``), so
a leaked configuration does not leak a usable key. The digest of the presented
key is compared with every configured digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from enum import Enum
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


def digest_key(key: str) -> str:
    """The SHA-256 hex digest stored in ``CHURNLENS_API_KEYS`` for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random API key (256 bits) and its digest."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, digest_key(key)


def check_authorization(header: str | None, digests: Iterable[str]) -> Credential:
    """Classify an ``Authorization`` header against the configured digests."""
    if header is None or not header.strip():
        return Credential.MISSING
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or not set(key) <= _KEY_CHARACTERS:
        return Credential.MALFORMED
    presented = digest_key(key).encode("ascii")
    matched = False
    for digest in digests:
        # no early exit: the time taken does not depend on which digest matched
        matched |= hmac.compare_digest(presented, digest.encode("ascii"))
    return Credential.ACCEPTED if matched else Credential.UNKNOWN_KEY


#: WWW-Authenticate header of every 401 answer
CHALLENGE = 'Bearer realm="churnlens"'


def refusal(verdict: Credential) -> tuple[HTTPStatus, str] | None:
    """The status and message for a refused credential; None when it is accepted."""
    if verdict is Credential.ACCEPTED:
        return None
    if verdict is Credential.MISSING:
        return HTTPStatus.UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'"
    if verdict is Credential.MALFORMED:
        return (HTTPStatus.UNAUTHORIZED,
                "malformed Authorization header: expected 'Bearer <key>'")
    return HTTPStatus.FORBIDDEN, "API key not accepted"
