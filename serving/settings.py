"""Settings of the churnlens processes, read once from the environment.

Every setting has the ``CHURNLENS_`` prefix. Each process builds one settings
object: `churnlens outreach` and `churnlens monitor` an `OutreachSettings`, the
scoring service a `Settings` (which holds the outreach settings too, since it
writes the outbox and may run the relay). `load_settings` is the one place a
pydantic ``ValidationError`` becomes a message naming the environment variable,
so a bad value stops the process at start-up instead of failing a request.
``get_settings()`` is cached; tests override it (``app.dependency_overrides``)
or pass ``Settings(...)`` to ``create_app``. Retry schedules and timeouts are
settings so that tests can run them in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from features.sources import is_database_url
from models import DEFAULT_MODEL_URI
from serving.auth import parse_key_entry
from serving.schemas import DEFAULT_TOP_K, MAX_TOP_K

#: where scores and triggered actions go unless CHURNLENS_OUTBOX_URL says otherwise
DEFAULT_OUTBOX_URL = "sqlite:///outbox.db"
SECRET_PREFIX = "whsec_"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class SettingsError(ValueError):
    """The environment holds an unusable setting; the message names it."""


def describe_errors(error: ValidationError) -> str:
    """One line per problem, each naming the environment variable."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if message.startswith("CHURNLENS_"):
            lines.append(message)
        else:
            lines.append(f"CHURNLENS_{where.upper()}: {message}" if where
                         else f"settings: {message}")
    return "; ".join(lines)


AnySettings = TypeVar("AnySettings", bound=BaseSettings)


def load_settings(kind: type[AnySettings], /, **overrides: Any) -> AnySettings:
    """Read ``kind`` from the environment (``overrides`` win); errors name the variable."""
    try:
        return kind(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None


class OutreachSettings(BaseSettings):
    """What the outbox and the relay need: the settings of `churnlens outreach` and `monitor`."""

    model_config = SettingsConfigDict(env_prefix="CHURNLENS_", extra="ignore")

    outbox_url: str = Field(
        default=DEFAULT_OUTBOX_URL,
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

    @field_validator("rules")
    @classmethod
    def _rules_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CHURNLENS_RULES={value} is not a file")
        return value

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


class Settings(OutreachSettings):
    """What the scoring service needs: the outreach settings (its relay and outbox) and more."""

    data: Path | str | None = Field(
        default=None,
        description="Dataset directory, or database URL (sqlite:///live.db, "
        "postgresql+psycopg://…), for scoring customers by id; a database also takes "
        "ingestion (POST /v1/customers|orders|events|subscriptions)",
    )
    model_uri: str = Field(
        default=DEFAULT_MODEL_URI,
        description="MLflow model URI; an alias URI is followed as the alias moves",
    )
    outreach_enabled: bool = Field(
        default=True,
        description="Evaluate outreach rules on API scores and write them to the outbox",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated SHA-256 hex digests of the API keys CRM clients send; "
        "DIGEST:score or DIGEST:ingest limits a key to reading scores or writing history",
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Serve without API keys (only for local trials); refused otherwise",
    )
    margin_rate: float | None = Field(
        default=None, gt=0, le=1,
        description="Turns predicted revenue into margin; default: the rate stored in the model",
    )
    max_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Most customers in one POST /v1/scores"
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest accepted request body, in bytes"
    )
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=MAX_TOP_K,
                       description="Default number of reasons per score")
    model_poll_seconds: float = Field(
        default=30.0, ge=0,
        description="How often to check the registry for a moved alias; 0 turns polling off",
    )
    relay_enabled: bool = Field(
        default=False,
        description="Run the outbox relay (webhook delivery) inside the API process",
    )
    ingest_max_rows: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Most rows in one ingestion request"
    )
    ingest_processes: int = Field(
        default=1, ge=0, le=32,
        description="On a database source: processes that validate and write ingests, so "
        "their CPU work does not hold the interpreter that scores by id use (0: in the API "
        "process)",
    )
    switch_interval_ms: float = Field(
        default=5.0, gt=0, le=100,
        description="How long a busy thread (an ingest's validation) may hold the interpreter "
        "before a waiting request's thread gets it (default: Python's own); shorter may hand "
        "it to a score by id sooner while ingests run in the same process",
    )
    live_poll_seconds: float = Field(
        default=1.0, gt=0, le=3600,
        description="On a database source: how often to look for customers another server "
        "worker changed (to rescore them for outreach) and whether the day turned",
    )
    ingest_future_tolerance_seconds: float = Field(
        default=300.0, ge=0,
        description="How far after the server's clock an ingested row may be stamped "
        "(clock skew between the CRM and the server); later rows are refused",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return [str(part).strip().lower() for part in value if str(part).strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _digests_only(cls, value: list[str]) -> list[str]:
        for position, entry in enumerate(value, start=1):
            try:
                digest, _ = parse_key_entry(entry)
            except ValueError as error:
                raise ValueError(f"CHURNLENS_API_KEYS entry {position}: {error}") from None
            if not _SHA256_HEX.match(digest):
                raise ValueError(
                    f"CHURNLENS_API_KEYS entry {position} is not a SHA-256 hex digest "
                    "(64 hex characters, optionally followed by :score or :ingest); "
                    "store digests, not keys: `churnlens apikey new` prints both"
                )
        return value

    @field_validator("model_uri")
    @classmethod
    def _model_uri_form(cls, value: str) -> str:
        value = value.strip()
        if not (value.startswith("models:/") or Path(value).is_dir()):
            raise ValueError(
                f"CHURNLENS_MODEL_URI={value!r} is neither a registry URI "
                "(models:/NAME@ALIAS or models:/NAME/VERSION) nor a bundle directory"
            )
        return value

    @field_validator("data")
    @classmethod
    def _data_is_directory(cls, value: Path | str | None) -> Path | str | None:
        if value is None or is_database_url(value):
            return value
        if not Path(value).is_dir():
            raise ValueError(f"CHURNLENS_DATA={value} is neither a directory nor a database "
                             "URL (sqlite:///live.db, postgresql+psycopg://…)")
        return Path(value)

    @model_validator(mode="after")
    def _keys_or_explicit_anonymous(self) -> Settings:
        if not self.api_keys and not self.allow_anonymous:
            raise ValueError(
                "CHURNLENS_API_KEYS is empty: set it to the SHA-256 digest(s) printed by "
                "`churnlens apikey new`, or set CHURNLENS_ALLOW_ANONYMOUS=true to serve "
                "without authentication (local trials only)"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The scoring service's settings, read from the environment once."""
    return load_settings(Settings)
