"""Settings of outreach delivery (outbox, retry schedule, webhook signing), from the environment.

Every setting has the ``CHURNLENS_`` prefix, like the scoring service's, so one
environment configures both; ``CHURNLENS_OUTBOX_URL`` and ``CHURNLENS_RULES`` are
shared with :class:`serving.settings.Settings`. Retry schedules and timeouts are
settings so that tests can run them in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import math
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_PREFIX = "whsec_"


class OutreachSettings(BaseSettings):
    """What the outbox and the relay need; validated once when the process starts."""

    model_config = SettingsConfigDict(env_prefix="CHURNLENS_", extra="ignore")

    outbox_url: str = Field(
        default="sqlite:///outbox.db",
        description="SQLAlchemy URL of the outbox (scores and triggered actions)",
    )
    rules: Path | None = Field(
        default=None, description="Outreach rules YAML (default: the built-in set)"
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Standard Webhooks signing secret, 'whsec_' + base64 of 24-64 random bytes; "
            "without it only file: channels are delivered and webhook actions wait"
        ),
    )
    retry_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Delivery attempts before an action is dead"
    )
    retry_backoff_base_seconds: float = Field(
        default=30.0, gt=0, description="Delay after the first failed attempt; doubles each time"
    )
    retry_backoff_max_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="Longest delay between two attempts"
    )
    retry_jitter: float = Field(
        default=0.25, ge=0, le=1,
        description="Fraction of each delay drawn at random, so relays do not retry in lockstep",
    )
    retry_after_max_seconds: float = Field(
        default=3600.0, gt=0, description="Longest wait a receiver's Retry-After header may ask"
    )
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one webhook request (connect, read, write)"
    )
    relay_batch_size: int = Field(
        default=100, ge=1, le=10_000, description="Actions one relay claims at a time"
    )
    relay_concurrency: int = Field(
        default=8, ge=1, le=256, description="Webhook requests one relay has in flight"
    )
    relay_poll_seconds: float = Field(
        default=2.0, gt=0, description="How long an idle relay waits before looking again"
    )
    relay_lease_seconds: float = Field(
        default=300.0, gt=0,
        description=(
            "How long a claimed batch stays reserved; after it, a relay that died mid-batch "
            "leaves its actions to the next relay"
        ),
    )
    score_retention_days: int = Field(
        default=730, ge=0,
        description=(
            "Days of score history the outbox keeps (by as_of); 0 keeps every score. "
            "Applied by `churnlens monitor` and `churnlens outreach prune`"
        ),
    )
    sink_dir: Path | None = Field(
        default=None,
        description="Folder that relative file: channels resolve against (default: the cwd)",
    )

    @field_validator("webhook_secret")
    @classmethod
    def _secret_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        raw = value.get_secret_value()
        if not raw.startswith(SECRET_PREFIX):
            raise ValueError(
                "CHURNLENS_WEBHOOK_SECRET must start with 'whsec_' (Standard Webhooks); "
                "`churnlens outreach new-secret` prints one"
            )
        try:
            key = base64.b64decode(raw[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "CHURNLENS_WEBHOOK_SECRET: the part after 'whsec_' is not valid base64"
            ) from None
        if not 24 <= len(key) <= 64:
            raise ValueError(
                f"CHURNLENS_WEBHOOK_SECRET decodes to {len(key)} bytes; "
                "Standard Webhooks secrets are 24 to 64 bytes"
            )
        return value

    @model_validator(mode="after")
    def _lease_outlasts_a_batch(self) -> OutreachSettings:
        if self.retry_backoff_max_seconds < self.retry_backoff_base_seconds:
            raise ValueError(
                "CHURNLENS_RETRY_BACKOFF_MAX_SECONDS must be at least "
                "CHURNLENS_RETRY_BACKOFF_BASE_SECONDS"
            )
        rounds = math.ceil(self.relay_batch_size / self.relay_concurrency)
        worst = rounds * self.request_timeout_seconds
        if self.relay_lease_seconds <= worst:
            raise ValueError(
                f"CHURNLENS_RELAY_LEASE_SECONDS={self.relay_lease_seconds:g} is too short: "
                f"a batch of {self.relay_batch_size} at concurrency {self.relay_concurrency} "
                f"with a {self.request_timeout_seconds:g}s timeout can take {worst:g}s, and a "
                "lease that ends mid-batch lets another relay deliver the same actions"
            )
        return self

    def backoff_seconds(self, attempts: int, *, draw: float) -> float:
        """Delay before the next try after ``attempts`` failed ones; ``draw`` in [0, 1)."""
        delay = min(
            self.retry_backoff_max_seconds,
            self.retry_backoff_base_seconds * 2 ** max(0, attempts - 1),
        )
        return delay * (1.0 - self.retry_jitter * draw)


class OutreachSettingsError(ValueError):
    """The environment holds an unusable outreach setting; the message names it."""


def load_outreach_settings(**overrides: object) -> OutreachSettings:
    """Read the settings from the environment, with messages that name the variable."""
    try:
        return OutreachSettings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            if message.startswith("CHURNLENS_") or not where:
                lines.append(message)
            else:
                lines.append(f"CHURNLENS_{where.upper()}: {message}")
        raise OutreachSettingsError("; ".join(lines)) from None
