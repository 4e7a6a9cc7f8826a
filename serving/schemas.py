"""The score record: one shape for the API and the batch output."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

#: reasons per score: the default and the most a request may ask for, for the API and
#: for batch scoring alike
DEFAULT_TOP_K = 5
MAX_TOP_K = 20

def utc_text(moment: datetime) -> str:
    """The one text form of a timestamp churnlens shows: ISO 8601 in UTC with a ``Z``.

    Naive datetimes are UTC inside churnlens; aware ones are converted.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"


#: a datetime that JSON shows as `utc_text` (API responses, webhook payloads)
UtcDateTime = Annotated[
    datetime,
    PlainSerializer(utc_text, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time",
                    "examples": ["2024-06-01T00:00:00Z"]}, mode="serialization"),
]

RiskTier = Literal["low", "medium", "high", "not_applicable"]
LifecycleStage = Literal["new", "active", "declining", "lapsed", "never_active"]
ValueSegment = Literal["low", "mid", "high"]


class Reason(BaseModel):
    """One reason behind a score: a feature, its value, its SHAP contribution, a sentence."""

    feature: str = Field(examples=["days_since_last_order"])
    value: float | str | None = Field(examples=[94.0])
    contribution: float = Field(
        description="Exact TreeSHAP contribution to the model's raw (log-odds) output",
        examples=[0.82],
    )
    text: str = Field(
        examples=["No order for 94 days; retained customers typically order every 21 days."]
    )
    kind: str = Field(
        default="other",
        description="What the reason means, from a fixed vocabulary (order_gap, visit_gap, "
                    "support_contact, returns, ...; see docs/outreach.md); rules select on it",
        examples=["order_gap"],
    )


class ScoreRecord(BaseModel):
    """What churnlens knows about one customer as of a date."""

    customer_id: str
    as_of: UtcDateTime
    churn_probability: float | None = Field(
        description="Probability of churning within the horizon; null outside the population",
        ge=0, le=1,
    )
    risk_tier: RiskTier
    clv: float | None = Field(
        description="Expected revenue (or margin) over the CLV horizon; null when the model has "
                    "no revenue to learn from (no orders, no subscription revenue)", ge=0)
    value_segment: ValueSegment | None = Field(
        description="low|mid|high by the CLV percentiles fixed at training; null with null clv")
    value_at_risk: float | None = Field(
        description="churn_probability × clv: a prioritisation index, not a forecast", ge=0
    )
    reasons: list[Reason] = Field(default_factory=list)
    recommended_action: str | None = None
    model_version: str
    lifecycle_stage: LifecycleStage | None = Field(
        default=None,
        description="new | active | declining | lapsed | never_active as of as_of; for "
                    "customers outside the population it says why they are not scored",
        examples=["active"],
    )
    expected_saved_value: float | None = Field(
        default=None,
        description="Value an outreach is expected to save (null until an uplift model "
                    "exists)",
    )
