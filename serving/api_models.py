"""Request and response bodies of the HTTP API other than the score record.

A score request carries customers' histories as four JSON lists, the same
tables (and columns) as a dataset directory (docs/data.md). Types and ranges are
checked here so malformed input answers 422 naming the field; the data
contract (`features.contract.validate_tables`) then checks the rows together
(unknown customer ids, duplicates, end before start).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from features.contract import MAX_ID_LENGTH
from serving.schemas import DEFAULT_TOP_K, MAX_TOP_K, ScoreRecord, UtcDateTime

if TYPE_CHECKING:
    from models.loading import LoadedModel

EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2200, 1, 1)
MAX_AMOUNT = 1e12
#: ids in paths and queries: no NUL (a database cannot hold one), at most MAX_ID_LENGTH
ID_PATTERN = r"^[^\x00]+$"
#: a date, optionally with a time: what the schema's ``date-time`` admits (no epoch numbers)
_ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")


def plain_text(value: str) -> str:
    """Refuse what a database or a JSON encoder cannot carry: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _iso_text(value: Any) -> Any:
    """Date-times arrive as ISO 8601 text; numbers (epoch seconds) and booleans are refused."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date or date-time string, e.g. "
                         "'2024-06-01' or '2024-06-01T09:30:00Z'")
    return value


def _naive_utc(value: datetime) -> datetime:
    """Timestamps are naive UTC inside churnlens; aware ones are converted."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_naive_utc)]
Text = Annotated[str, AfterValidator(plain_text)]
Identifier = Annotated[Text, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"\S")]
#: strict: a JSON number, never a string or a boolean; finite (1e309 is infinity in JSON)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Money = Annotated[Number, Field(ge=0, le=MAX_AMOUNT)]
AttributeValue = Annotated[Text, Field(max_length=200)] | Annotated[
    Number, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)] | None


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerIn(_Row):
    customer_id: Identifier
    signup_at: Timestamp | None = None
    attributes: dict[
        Annotated[Text, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
        AttributeValue,
    ] = Field(default_factory=dict, max_length=50,
              description="Static attributes (e.g. country, channel), as in customers.csv")


class OrderIn(_Row):
    order_id: Identifier
    customer_id: Identifier
    ordered_at: Timestamp
    amount: Money
    status: Literal["completed", "returned", "cancelled", "unclaimed"] = "completed"
    discount: Money = 0.0
    items: Annotated[Number, Field(ge=0, le=1e6)] | None = None


class EventIn(_Row):
    customer_id: Identifier
    occurred_at: Timestamp
    event_type: Annotated[Text, Field(min_length=1, max_length=100, pattern=r"\S")]
    value: Annotated[Number, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)] | None = None


class SubscriptionIn(_Row):
    customer_id: Identifier
    started_at: Timestamp
    ended_at: Timestamp | None = None
    plan: Annotated[Text, Field(max_length=100)] | None = None
    mrr: Money | None = None


SCORE_REQUEST_EXAMPLE: dict[str, Any] = {
    "customers": [{"customer_id": "c-1001", "signup_at": "2023-02-11T09:30:00Z",
                   "attributes": {"country": "DE", "channel": "web"}}],
    "orders": [
        {"order_id": "o-1", "customer_id": "c-1001", "ordered_at": "2024-01-05T10:00:00Z",
         "amount": 59.9},
        {"order_id": "o-2", "customer_id": "c-1001", "ordered_at": "2024-03-17T18:20:00Z",
         "amount": 31.5, "status": "returned"},
    ],
    "events": [{"customer_id": "c-1001", "occurred_at": "2024-04-02T08:00:00Z",
                "event_type": "login"}],
    "subscriptions": [],
    "as_of": "2024-06-01T00:00:00Z",
    "explain": True,
    "top_k": 5,
}


class ScoreRequest(_Row):
    """Customers and their histories; every customer listed is scored."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [SCORE_REQUEST_EXAMPLE]})

    customers: list[CustomerIn] = Field(
        min_length=1, description="The customers to score (at most CHURNLENS_MAX_BATCH_SIZE)"
    )
    orders: list[OrderIn] = Field(default_factory=list)
    events: list[EventIn] = Field(default_factory=list)
    subscriptions: list[SubscriptionIn] = Field(default_factory=list)
    as_of: Timestamp | None = Field(
        default=None, description="Score as of this time (only history before it is used); "
        "default: now (UTC)"
    )
    explain: bool = Field(default=True, strict=True,
                          description="Include the top reasons behind each score")
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=MAX_TOP_K, strict=True,
                       description="Number of reasons per score")


class ScoreResponse(BaseModel):
    """Scores of the customers in a request, in the request's order."""

    model_version: str
    as_of: UtcDateTime
    scores: list[ScoreRecord]


class ModelInfo(BaseModel):
    """The model answering requests now."""

    name: str = Field(examples=["churnlens"])
    version: str = Field(examples=["3"])
    alias: str | None = Field(examples=["champion"])
    model_uri: str = Field(examples=["models:/churnlens@champion"])
    run_id: str | None = None
    trained_at: UtcDateTime | None = None
    loaded_at: UtcDateTime
    metrics: dict[str, float | None] = Field(
        default_factory=dict, examples=[{"roc_auc": 0.83, "pr_auc": 0.61, "ece": 0.02}]
    )
    event_types: list[str] | None = None
    churn_definition: dict[str, Any] | None = Field(
        default=None, description="The churn definition the model was trained with: name, "
        "why it was chosen, active_days and activity_events",
        examples=[{"name": "activity", "reason": "auto: ...", "active_days": 90,
                   "activity_events": ["session", "cart_add"]}])
    lifecycle: dict[str, Any] | None = Field(
        default=None, description="The lifecycle-stage thresholds stored with the model")

    @classmethod
    def of(cls, loaded: LoadedModel, *, model_uri: str, loaded_at: datetime) -> ModelInfo:
        """What a loaded model says about itself; unreadable figures become null."""
        event_types = getattr(loaded.bundle, "event_types", None)
        return cls(
            name=loaded.name, version=str(loaded.version), alias=loaded.alias,
            model_uri=model_uri, run_id=loaded.run_id, trained_at=_timestamp(loaded.trained_at),
            loaded_at=loaded_at,
            metrics={str(k): _finite(v) for k, v in (loaded.metrics or {}).items()},
            event_types=list(event_types) if event_types is not None else None,
            churn_definition=getattr(loaded.bundle, "churn_definition", None),
            lifecycle=getattr(loaded.bundle, "lifecycle", None),
        )


def _timestamp(value: object) -> datetime | None:
    """The bundle's training time (naive = UTC), if it is a readable ISO 8601 timestamp."""
    if not value:
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    model_version: str | None = None
    detail: str | None = None


class ErrorDetail(BaseModel):
    """An error the client can act on."""

    detail: str | list[dict] = Field(examples=["unknown customer_id 'c-42'"])
