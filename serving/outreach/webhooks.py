"""Standard Webhooks signatures (https://www.standardwebhooks.com) for outreach deliveries.

Each request carries ``webhook-id`` (the action's stable id, the same on every
redelivery, so the receiver can deduplicate), ``webhook-timestamp`` (seconds
since the epoch, when this attempt was signed) and ``webhook-signature``
(``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` under the shared
secret). Signing uses the ``standardwebhooks`` reference package, so any
receiver using a Standard Webhooks library verifies it unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

#: ``${NAME}`` in a channel: expanded from the environment at delivery, never stored expanded
CHANNEL_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


class ChannelVariableError(ValueError):
    """A channel names an environment variable that is not set."""


def expand_channel(template: str) -> str:
    """The channel to deliver to: ``template`` with its ``${NAME}`` variables filled in.

    The outbox, the API and the logs keep the template, so a token carried in a
    CRM URL stays in the environment of the processes that deliver.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ChannelVariableError(
                f"environment variable {name} (named in the channel) is not set")
        return os.environ[name]

    return CHANNEL_VARIABLE.sub(substitute, template)


def new_secret(*, size: int = 32) -> str:
    """A fresh signing secret in the Standard Webhooks form ``whsec_<base64>``."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()


def encode_body(envelope: dict[str, Any]) -> str:
    """The exact JSON text that is signed and sent (compact, UTF-8)."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str)


def sign_headers(
    secret: str, *, webhook_id: str, body: str, timestamp: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt."""
    moment = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id=webhook_id, timestamp=moment, data=body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def verify(secret: str, body: bytes | str, headers: dict[str, str]) -> Any:
    """Check a received webhook as a CRM would; returns the parsed body.

    Raises ``standardwebhooks.WebhookVerificationError`` when the signature does not
    match or the timestamp is more than five minutes away from now (replay guard).
    """
    return Webhook(secret).verify(body, headers)
