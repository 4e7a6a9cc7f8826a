"""Settings of the scoring service, read once from the environment.

Every setting has the ``CHURNLENS_`` prefix and is validated at start-up, so a
bad value stops the server with a message naming the setting instead of a
failure on the first request. ``get_settings()`` is cached; tests override it
(``app.dependency_overrides``) or pass ``Settings(...)`` to ``create_app``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from features.database import is_database_url
from serving.auth import parse_key_entry
from serving.schemas import DEFAULT_TOP_K, MAX_TOP_K

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Settings(BaseSettings):
    """What the scoring service needs to know; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="CHURNLENS_", extra="ignore")

    data: Path | str | None = Field(
        default=None,
        description="Dataset directory, or database URL (sqlite:///live.db, "
        "postgresql+psycopg://…), for scoring customers by id; a database also takes "
        "ingestion (POST /v1/customers|orders|events|subscriptions)",
    )
    model_uri: str = Field(
        default="models:/churnlens@champion",
        description="MLflow model URI; an alias URI is followed as the alias moves",
    )
    outbox_url: str = Field(
        default="sqlite:///outbox.db",
        description="SQLAlchemy URL of the outreach outbox (scores and triggered actions)",
    )
    rules: Path | None = Field(
        default=None, description="Outreach rules YAML (default: the built-in set)"
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

    @field_validator("rules")
    @classmethod
    def _rules_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CHURNLENS_RULES={value} is not a file")
        return value

    @model_validator(mode="after")
    def _keys_or_explicit_anonymous(self) -> Settings:
        if not self.api_keys and not self.allow_anonymous:
            raise ValueError(
                "CHURNLENS_API_KEYS is empty: set it to the SHA-256 digest(s) printed by "
                "`churnlens apikey new`, or set CHURNLENS_ALLOW_ANONYMOUS=true to serve "
                "without authentication (local trials only)"
            )
        return self


class SettingsError(ValueError):
    """The environment holds an unusable setting; the message names it."""


def describe_errors(error: ValidationError) -> str:
    """One line per problem, each naming the environment variable."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        name = f"CHURNLENS_{where.upper()}" if where else "settings"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(message if message.startswith("CHURNLENS_") else f"{name}: {message}")
    return "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None
