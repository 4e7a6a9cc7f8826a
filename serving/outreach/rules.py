"""Outreach rules: which scored customers get which retention action, through which channel.

A rules file is YAML with a ``rules:`` list, evaluated in file order. Every
rule whose conditions all hold triggers its action; the first one that matches
gives the score's ``recommended_action``. A rule with ``stop: true`` ends the
evaluation for that customer when it matches, so a customer who gets a success
call is not also sent an automated win-back offer. The file is validated when
it is loaded and every error names the rule and the field.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import Unpack

from features.reasons import REASON_KINDS
from models.reasons import ReasonTable
from models.uplift import expected_saved_value
from serving.outreach.webhooks import expand_channel
from serving.schemas import LifecycleStage, RiskTier, ScoreRecord, ValueSegment, utc_text

Action = Literal[
    "win_back_offer", "success_call", "reactivation_email", "experience_follow_up",
    "upgrade_nudge", "onboarding_nudge",
]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]

#: fields of the score record (and of the rule) a payload template may name
TEMPLATE_FIELDS = (
    "customer_id", "as_of", "churn_probability", "risk_tier", "clv", "value_segment",
    "value_at_risk", "model_version", "rule", "action", "reasons", "reason_texts",
    "top_reason", "top_reason_feature", "lifecycle_stage",
)
#: keys every webhook's ``data`` carries; a payload template may not shadow them
RESERVED_PAYLOAD_KEYS = ("action_id", "action", "rule", "customer_id")
DEFAULT_PAYLOAD: dict[str, Any] = {
    "as_of": "{as_of}",
    "churn_probability": "{churn_probability}",
    "risk_tier": "{risk_tier}",
    "clv": "{clv}",
    "value_segment": "{value_segment}",
    "value_at_risk": "{value_at_risk}",
    "reasons": "{reasons}",
    "model_version": "{model_version}",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z_]+)\}|[{}]")


class RulesError(ValueError):
    """A rules file is unusable; the message names the file, the rule and the field."""


class TopReasons(BaseModel):
    """Condition on the reasons behind a score, among the top ``within``.

    A reason counts when its feature is one of ``features`` or its kind one of
    ``kinds`` (what the reason means, shipped with the model: see
    `REASON_KINDS`); the rule matches when a counted reason is among the top
    ``within`` and no reason of ``exclude_kinds`` is.
    """

    model_config = ConfigDict(extra="forbid")

    features: list[str] | None = Field(
        default=None, min_length=1,
        description="Feature names or shell patterns such as 'return*' or '*unclaimed*'",
    )
    kinds: list[str] | None = Field(
        default=None, min_length=1,
        description="Reason kinds such as order_gap or visit_gap (see docs/outreach.md)",
    )
    exclude_kinds: list[str] | None = Field(
        default=None, min_length=1,
        description="Reason kinds that rule the customer out when among the top reasons",
    )
    within: int = Field(default=3, ge=1, le=50)

    @field_validator("kinds", "exclude_kinds")
    @classmethod
    def _known_kinds(cls, value: list[str] | None) -> list[str] | None:
        unknown = [kind for kind in value or [] if kind not in REASON_KINDS]
        if unknown:
            raise ValueError(f"unknown reason kind(s) {unknown}; known kinds: "
                             f"{', '.join(REASON_KINDS)}")
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> TopReasons:
        if self.features is None and self.kinds is None and self.exclude_kinds is None:
            raise ValueError("give features, kinds or exclude_kinds")
        return self

    def names(self, feature: str) -> bool:
        """Whether ``feature`` is one of ``features`` (a name or a matching pattern)."""
        return any(fnmatch.fnmatchcase(feature, pattern) for pattern in self.features or ())

    def counts(self, feature: str, kind: str) -> bool:
        """Whether a reason on ``feature`` of ``kind`` is one this condition looks for."""
        return self.names(feature) or kind in (self.kinds or ())

    @property
    def looks_for_some(self) -> bool:
        """False when only ``exclude_kinds`` is given (any reasons will do)."""
        return self.features is not None or self.kinds is not None


class Rule(BaseModel):
    """One rule: conditions on a score record, and the action it triggers."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    risk_tiers: list[RiskTier] | None = None
    value_segments: list[ValueSegment] | None = None
    lifecycle_stages: list[LifecycleStage] | None = None
    min_churn_probability: float | None = None
    max_churn_probability: float | None = None
    min_clv: float | None = None
    max_clv: float | None = None
    min_value_at_risk: float | None = None
    max_value_at_risk: float | None = None
    top_reasons: TopReasons | None = None
    action: Action
    channel: str
    cooldown_days: int = Field(ge=1, le=3650)
    payload: dict[str, Any] | None = None
    stop: bool = False
    control_share: float = Field(
        default=0.0,
        description="Share of matched customers held out as a control group (0 to 0.5)",
    )
    cost: float = Field(default=0.0, description="What one action costs, in revenue units")
    min_expected_saved_value: float | None = Field(
        default=None,
        description="Fire only where the model's uplift estimate of this rule's action, "
                    "churn reduction × CLV − cost, is at least this; never where the model "
                    "has no uplift estimate for the rule (churnlens train --uplift)",
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-64 lowercase letters, digits, '-' or '_', starting with a letter "
                "or digit"
            )
        return value

    @field_validator("min_churn_probability", "max_churn_probability")
    @classmethod
    def _probability(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            raise ValueError("must be between 0 and 1")
        return value

    @field_validator("control_share")
    @classmethod
    def _control_share(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 <= value <= 0.5):
            raise ValueError(
                f"must be between 0 and 0.5 (a share of matched customers held out), not {value:g}"
            )
        return value

    @field_validator("cost")
    @classmethod
    def _cost(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError("must be a finite number of at least 0")
        return value

    @field_validator("min_expected_saved_value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number (it may be negative)")
        return value

    @field_validator("min_clv", "max_clv", "min_value_at_risk", "max_value_at_risk")
    @classmethod
    def _non_negative(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError("must be a finite number of at least 0")
        return value

    @field_validator("risk_tiers", "value_segments", "lifecycle_stages")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must list at least one value (leave the field out to allow any)")
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        """Checked expanded, stored as written: ``${NAME}`` is filled in only at delivery."""
        template = value.strip()
        channel = expand_channel(template)
        if channel.startswith("file:") != template.startswith("file:"):
            raise ValueError("write 'file:' in the rule itself, not inside a ${VARIABLE}")
        if channel.startswith("file:"):
            if not channel[len("file:"):].strip():
                raise ValueError("a file channel needs a path: 'file:outreach/actions.jsonl'")
            return template
        if re.match(r"^https?://[^/\s:]+(:\d+)?(/\S*)?$", channel):
            return template
        raise ValueError(
            f"{template!r} is neither a webhook URL (http:// or https://) nor 'file:PATH'"
        )

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        for key, template in value.items():
            if key in RESERVED_PAYLOAD_KEYS:
                raise ValueError(
                    f"key {key!r} is set by churnlens on every action; choose another name"
                )
            if isinstance(template, str):
                _check_template(key, template)
            elif template is not None and not isinstance(template, bool | int | float):
                raise ValueError(
                    f"key {key!r}: a payload value is a string template or a plain "
                    "number/true/false/null"
                )
        return value

    @model_validator(mode="after")
    def _ranges(self) -> Rule:
        for low, high in (
            ("min_churn_probability", "max_churn_probability"),
            ("min_clv", "max_clv"),
            ("min_value_at_risk", "max_value_at_risk"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo:g}) is greater than {high} ({hi:g})")
        return self

    def score_mask(self, *, risk_tier: np.ndarray, value_segment: np.ndarray,
                   churn_probability: np.ndarray, clv: np.ndarray,
                   value_at_risk: np.ndarray,
                   lifecycle_stage: np.ndarray | None = None,
                   expected_saved_value: np.ndarray | None = None) -> np.ndarray:
        """`matches` without the reasons condition, for many customers at once (NaN = missing).

        ``expected_saved_value`` is this rule's estimate per customer (None: the
        model has no uplift model of this rule).
        """
        ok = np.ones(len(risk_tier), dtype=bool)
        if self.min_expected_saved_value is not None:
            if expected_saved_value is None:
                return np.zeros(len(risk_tier), dtype=bool)
            saved = np.asarray(expected_saved_value, dtype=float)
            ok &= ~np.isnan(saved) & (saved >= self.min_expected_saved_value)
        if self.lifecycle_stages is not None:
            stages = (np.full(len(risk_tier), None, dtype=object) if lifecycle_stage is None
                      else np.asarray(lifecycle_stage, dtype=object))
            ok &= np.isin(stages, np.array(self.lifecycle_stages, dtype=object))
        if self.risk_tiers is not None:
            ok &= np.isin(risk_tier, np.array(self.risk_tiers, dtype=object))
        if self.value_segments is not None:
            ok &= np.isin(value_segment, np.array(self.value_segments, dtype=object))
        for values, low, high in (
            (churn_probability, self.min_churn_probability, self.max_churn_probability),
            (clv, self.min_clv, self.max_clv),
            (value_at_risk, self.min_value_at_risk, self.max_value_at_risk),
        ):
            if low is None and high is None:
                continue
            values = np.asarray(values, dtype=float)
            ok &= ~np.isnan(values)  # as `_within`: a missing value is outside any bound
            if low is not None:
                ok &= values >= low
            if high is not None:
                ok &= values <= high
        return ok

    def matches(self, record: ScoreRecord, *, expected_saved_value: float | None = None) -> bool:
        """Whether every condition of this rule holds for the score record.

        ``expected_saved_value`` is this rule's estimate for the customer (None:
        the model has no uplift model of this rule).
        """
        if (self.min_expected_saved_value is not None
                and not _within(expected_saved_value, self.min_expected_saved_value, None)):
            return False
        if self.risk_tiers is not None and record.risk_tier not in self.risk_tiers:
            return False
        if self.value_segments is not None and record.value_segment not in self.value_segments:
            return False
        if (self.lifecycle_stages is not None
                and getattr(record, "lifecycle_stage", None) not in self.lifecycle_stages):
            return False
        if not _within(record.churn_probability, self.min_churn_probability,
                       self.max_churn_probability):
            return False
        if not _within(record.clv, self.min_clv, self.max_clv):
            return False
        if not _within(record.value_at_risk, self.min_value_at_risk, self.max_value_at_risk):
            return False
        return self.top_reasons is None or _reasons_match(record, self.top_reasons)


@dataclass(frozen=True)
class TriggeredAction:
    """An action a rule triggered for one customer, ready for the outbox."""

    customer_id: str
    rule: str
    action: str
    channel: str
    cooldown_days: int
    as_of: datetime
    model_version: str
    payload: dict[str, Any]
    why: list[str] = field(default_factory=list)
    #: held out as control: recorded in the outbox, never delivered
    control: bool = False

    @property
    def period(self) -> int:
        """Index of the cooldown window holding ``as_of``: one action per window."""
        return epoch_day(self.as_of) // self.cooldown_days


def control_draw(customer_id: str, rule: str, period: int) -> float:
    """A uniform number in [0, 1) fixed by (customer, rule, period).

    SHA-256 rather than Python's ``hash``: the same customer lands in the same
    group in every process, on every machine, and on every re-run.
    """
    digest = hashlib.sha256(f"control\x1f{customer_id}\x1f{rule}\x1f{period}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def recommended_action(triggered: list[TriggeredAction]) -> str | None:
    """The score's ``recommended_action``: the first triggered action that will be delivered.

    A customer a rule holds out as control gets no recommendation from that rule:
    a CRM acting on the score would otherwise contact the control group and erase
    the effect the hold-out exists to measure. Later rules still apply (their own
    control draws are independent), unless the holding rule has ``stop``.
    """
    return next((item.action for item in triggered if not item.control), None)


def recommending_rule(triggered: list[TriggeredAction]) -> str | None:
    """The rule whose action `recommended_action` picks (None: no recommendation)."""
    return next((item.rule for item in triggered if not item.control), None)


def held_out(customer_id: str, rule: str, period: int, share: float) -> bool:
    """Whether this customer is in the rule's control group for this cooldown window."""
    return share > 0 and control_draw(customer_id, rule, period) < share


class ScoreColumns(TypedDict):
    """The score columns the rules read, one entry per customer (`RuleSet.first_rules`).

    ``customer_ids`` and ``as_of`` let a rule hold customers out as control;
    ``saved_values`` are the uplift models' expected saved values by rule name.
    """

    risk_tier: np.ndarray
    value_segment: np.ndarray
    churn_probability: np.ndarray
    clv: np.ndarray
    value_at_risk: np.ndarray
    reasons: ReasonTable
    customer_ids: NotRequired[np.ndarray | None]
    as_of: NotRequired[datetime | None]
    lifecycle_stage: NotRequired[np.ndarray | None]
    saved_values: NotRequired[Mapping[str, np.ndarray] | None]


@dataclass(frozen=True)
class RuleSet:
    """Rules in file order, as loaded and validated from ``source``."""

    rules: tuple[Rule, ...]
    source: str = "<built-in>"

    def named(self, name: str) -> Rule | None:
        """The rule called ``name``, or None when the file has none by that name."""
        return next((rule for rule in self.rules if rule.name == name), None)

    def saved_values(self, reductions: Mapping[str, np.ndarray], clv: np.ndarray
                     ) -> dict[str, np.ndarray]:
        """Each rule's expected saved value per customer: its uplift model's churn reduction
        × CLV − the rule's ``cost`` (rules the model has no uplift model of are left out)."""
        return {rule.name: expected_saved_value(reductions[rule.name], clv, rule.cost)
                for rule in self.rules if rule.name in reductions}

    def evaluate(
        self, record: ScoreRecord, *, features: dict[str, Any] | None = None,
        saved_values: Mapping[str, float | None] | None = None,
    ) -> list[TriggeredAction]:
        """The actions this record triggers, in file order (the first is the recommendation).

        ``features`` is accepted for the shared interface; rules look at the score
        record, its reasons and ``saved_values`` (each rule's expected saved value
        for this customer, `saved_values`).
        """
        triggered: list[TriggeredAction] = []
        for rule in self.rules:
            if not rule.matches(record,
                                expected_saved_value=(saved_values or {}).get(rule.name)):
                continue
            as_of = to_naive_utc(record.as_of)
            period = epoch_day(as_of) // rule.cooldown_days
            triggered.append(
                TriggeredAction(
                    customer_id=record.customer_id,
                    rule=rule.name,
                    action=rule.action,
                    channel=rule.channel,
                    cooldown_days=rule.cooldown_days,
                    as_of=as_of,
                    model_version=record.model_version,
                    payload=render_payload(rule, record),
                    why=[reason.text for reason in _churn_reasons(record)[:3]],
                    control=held_out(record.customer_id, rule.name, period, rule.control_share),
                )
            )
            if rule.stop:
                break
        return triggered

    def first_actions(self, **columns: Unpack[ScoreColumns]) -> np.ndarray:
        """The recommended action per customer, column-wise (None where no rule matches).

        The same answer as `recommended_action` of each customer's triggered
        actions, without building records: batch scoring needs only the action.
        With ``customer_ids`` and ``as_of``, customers a rule holds out as control
        get no recommendation from it (see `recommended_action`).
        """
        chosen = self.first_rules(**columns)
        action_of = {rule.name: rule.action for rule in self.rules}
        return np.array([None if name is None else action_of[name] for name in chosen],
                        dtype=object)

    def first_rules(self, **columns: Unpack[ScoreColumns]) -> np.ndarray:
        """The name of the rule that recommends each customer's action (None: no rule)."""
        risk_tier, reasons = columns["risk_tier"], columns["reasons"]
        customer_ids, as_of = columns.get("customer_ids"), columns.get("as_of")
        saved_values = columns.get("saved_values")
        actions = np.full(len(risk_tier), None, dtype=object)
        undecided = np.ones(len(risk_tier), dtype=bool)
        for rule in self.rules:
            saved = (saved_values or {}).get(rule.name)
            hit = undecided & rule.score_mask(
                risk_tier=risk_tier, value_segment=columns["value_segment"],
                churn_probability=columns["churn_probability"], clv=columns["clv"],
                value_at_risk=columns["value_at_risk"],
                lifecycle_stage=columns.get("lifecycle_stage"), expected_saved_value=saved)
            if rule.top_reasons is not None and hit.any():
                hit &= _reason_table_match(reasons, rule.top_reasons)
            held = np.zeros(len(hit), dtype=bool)
            if rule.control_share > 0 and customer_ids is not None and as_of is not None:
                period = epoch_day(as_of) // rule.cooldown_days
                for i in np.flatnonzero(hit):
                    held[i] = held_out(str(customer_ids[i]), rule.name, period,
                                       rule.control_share)
            actions[hit & ~held] = rule.name
            # a held-out customer goes on to later rules unless this one stops the evaluation
            undecided &= ~(hit & ~held) if not rule.stop else ~hit
        return actions

    def recommend(
        self, records: list[ScoreRecord]
    ) -> tuple[list[ScoreRecord], list[TriggeredAction]]:
        """Records with ``recommended_action`` filled in, and every action they trigger."""
        updated: list[ScoreRecord] = []
        everything: list[TriggeredAction] = []
        for record in records:
            actions = self.evaluate(record)
            everything.extend(actions)
            updated.append(
                record.model_copy(update={"recommended_action": recommended_action(actions)})
            )
        return updated, everything


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and validate a rules file; ``None`` loads the built-in default set."""
    if path is None:
        text = resources.files("serving.outreach").joinpath("default_rules.yaml").read_text()
        return parse_rules(text, source="default_rules.yaml")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RulesError(f"{path}: cannot read the rules file ({error.strerror})") from None
    return parse_rules(text, source=path.name)


def parse_rules(text: str, *, source: str = "rules.yaml") -> RuleSet:
    """Validate rules given as YAML text; ``source`` names the file in error messages."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RulesError(f"{source}:{where} not valid YAML ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RulesError(f"{source}: expected a mapping with a 'rules:' list")
    unknown = sorted(set(document) - {"rules", "version"})
    if unknown:
        raise RulesError(f"{source}: unknown top-level key(s) {unknown}; expected 'rules'")
    problems: list[str] = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for position, raw in enumerate(document["rules"], start=1):
        label = (
            f"rule {raw['name']!r}" if isinstance(raw, dict) and isinstance(raw.get("name"), str)
            else f"rule #{position}"
        )
        if not isinstance(raw, dict):
            problems.append(f"{source}: {label}: expected a mapping of fields")
            continue
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as error:
            problems.extend(_describe(source, label, error))
            continue
        if rule.name in seen:
            problems.append(f"{source}: {label} field 'name': the name is used by an earlier rule")
        seen.add(rule.name)
        rules.append(rule)
    if problems:
        raise RulesError("\n".join(problems))
    return RuleSet(rules=tuple(rules), source=source)


def render_payload(rule: Rule, record: ScoreRecord) -> dict[str, Any]:
    """Fill the rule's payload template from the record; only named fields, no expressions."""
    values = _template_values(rule, record)
    template = rule.payload if rule.payload is not None else DEFAULT_PAYLOAD
    rendered: dict[str, Any] = {}
    for key, value in template.items():
        rendered[key] = _render(value, values) if isinstance(value, str) else value
    return rendered


def epoch_day(moment: datetime) -> int:
    """Whole days since 1970-01-01 (UTC)."""
    return (to_naive_utc(moment) - datetime(1970, 1, 1)).days


def to_naive_utc(moment: datetime) -> datetime:
    """Naive UTC, the one form timestamps take inside churnlens."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _within(value: float | None, low: float | None, high: float | None) -> bool:
    if low is None and high is None:
        return True
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _churn_reasons(record: ScoreRecord) -> list[Any]:
    """Reasons that raise the churn risk, strongest first."""
    raising = [reason for reason in record.reasons if reason.contribution > 0]
    return sorted(raising, key=lambda reason: reason.contribution, reverse=True)


def _reasons_match(record: ScoreRecord, condition: TopReasons) -> bool:
    top = _churn_reasons(record)[: condition.within]
    if any(reason.kind in (condition.exclude_kinds or ()) for reason in top):
        return False
    return not condition.looks_for_some or any(
        condition.counts(reason.feature, reason.kind) for reason in top)


def _reason_table_match(reasons: ReasonTable, condition: TopReasons) -> np.ndarray:
    """`_reasons_match` for every customer of a reason table at once."""
    kinds = reasons.kinds or ("other",) * len(reasons.names)
    ok = np.ones(len(reasons.feature), dtype=bool)
    if condition.looks_for_some:
        wanted = np.array([condition.counts(name, kind)
                           for name, kind in zip(reasons.names, kinds, strict=True)], dtype=bool)
        ok &= reasons.matches(wanted, condition.within)
    if condition.exclude_kinds:
        ok &= ~reasons.matches(reasons.kinds_wanted(condition.exclude_kinds), condition.within)
    return ok


def _template_values(rule: Rule, record: ScoreRecord) -> dict[str, Any]:
    reasons = _churn_reasons(record)
    return {
        "customer_id": record.customer_id,
        "as_of": utc_text(record.as_of),
        "churn_probability": record.churn_probability,
        "risk_tier": record.risk_tier,
        "clv": record.clv,
        "value_segment": record.value_segment,
        "value_at_risk": record.value_at_risk,
        "model_version": record.model_version,
        "rule": rule.name,
        "action": rule.action,
        "reasons": [reason.model_dump() for reason in record.reasons],
        "reason_texts": [reason.text for reason in reasons],
        "top_reason": reasons[0].text if reasons else None,
        "top_reason_feature": reasons[0].feature if reasons else None,
        "lifecycle_stage": getattr(record, "lifecycle_stage", None),
    }


def _render(template: str, values: dict[str, Any]) -> Any:
    whole = re.fullmatch(r"\{([a-z_]+)\}", template)
    if whole:
        return values[whole.group(1)]

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        value = values[match.group(1)]
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(substitute, template)


def _check_template(key: str, template: str) -> None:
    for match in _PLACEHOLDER.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(
                f"key {key!r}: unmatched {token!r} in {template!r} (write '{{{{' for a brace)"
            )
        if match.group(1) not in TEMPLATE_FIELDS:
            raise ValueError(
                f"key {key!r}: unknown field {{{match.group(1)}}}; "
                f"known fields: {', '.join(TEMPLATE_FIELDS)}"
            )


def _describe(source: str, label: str, error: ValidationError) -> list[str]:
    lines = []
    for problem in error.errors():
        loc = [str(part) for part in problem["loc"]]
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "literal_error" and loc and loc[0] == "action":
            message = f"must be one of {', '.join(ACTIONS)}"
        if problem["type"] == "extra_forbidden":
            message = "unknown field (check the spelling against docs/outreach.md)"
        if loc:
            lines.append(f"{source}: {label} field {'.'.join(loc)!r}: {message}")
        else:
            lines.append(f"{source}: {label}: {message}")
    return lines
