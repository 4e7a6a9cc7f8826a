"""Which churn definition a dataset gets, and with which activity settings (DESIGN §3).

``auto`` (the default) picks by the kinds of history present:

- orders only → ``inactivity`` (a shop: churn is not ordering again);
- subscriptions only → ``subscription`` (contractual: churn is cancelling);
- events, or several kinds of history → ``activity`` (apps, marketplaces,
  shops with memberships: one definition that fits every customer).

The ``activity`` definition counts completed orders, running subscriptions and
events of the *activity event types*. By default those are all event types but
the passive ones in `PASSIVE_EVENT_TYPES`: receiving or opening a marketing
message is something done *to* the customer, and people keep opening e-mails
for months after they have stopped buying, so counting them would call
churned customers retained. ``--activity-events`` names the types explicitly.

The choice and its reason travel with the model (bundle, MLflow param and tag),
so labels, population and lifecycle stages at scoring follow what training used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from features.dataset import Dataset

DEFINITIONS: tuple[str, ...] = ("inactivity", "subscription", "activity")
CHOICES: tuple[str, ...] = ("auto", *DEFINITIONS)
#: event types that are not the customer's own doing, left out of the default activity
PASSIVE_EVENT_TYPES: frozenset[str] = frozenset({
    "email_open", "email_opened", "email_sent", "email_delivered", "newsletter_open",
    "push_received", "push_delivered", "notification_received",
})


class DefinitionError(ValueError):
    """A churn-definition setting does not fit the data; ``flag`` names the setting."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.problem = message


@dataclass(frozen=True)
class ChurnDefinition:
    """A resolved churn definition: its name, why it was chosen, and its activity settings.

    ``active_days`` and ``activity_events`` matter for ``activity`` only (and
    for lifecycle stages under every definition): activity in the last
    ``active_days`` before T puts a customer in the population, and
    ``activity_events`` are the event types that count as activity.
    """

    name: str
    reason: str
    active_days: int
    activity_events: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"activity_events": list(self.activity_events)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChurnDefinition:
        return cls(name=str(data["name"]), reason=str(data.get("reason", "")),
                   active_days=int(data["active_days"]),
                   activity_events=tuple(str(t) for t in data.get("activity_events", ())))


def _has_rows(frame: Any) -> bool:
    return frame is not None and not frame.empty


def auto_definition(dataset: Dataset) -> tuple[str, str]:
    """The definition ``auto`` picks for a dataset, and the reason in one sentence."""
    return auto_definition_for([name for name in ("orders", "events", "subscriptions")
                                if _has_rows(dataset.table(name))])


def auto_definition_for(kinds: Sequence[str]) -> tuple[str, str]:
    """`auto_definition` from the history tables that have rows (e.g. a partitioned
    dataset's manifest), in the order orders, events, subscriptions."""
    kinds = [name for name in ("orders", "events", "subscriptions") if name in kinds]
    listed = ", ".join(kinds) or "no history"
    if kinds == ["orders"]:
        return "inactivity", "orders only: churn is making no completed order within the horizon"
    if kinds == ["subscriptions"]:
        return "subscription", ("subscriptions only: churn is having no subscription running "
                                "at the end of the horizon")
    if "events" in kinds:
        return "activity", (f"the dataset has {listed}: churn is no activity (orders, app "
                            "events, running subscription) within the horizon")
    return "activity", (f"several kinds of history ({listed}): churn is no activity of any "
                        "kind within the horizon, so every customer fits one definition")


def event_types_in(dataset: Dataset) -> list[str]:
    events = dataset.events
    if events is None or events.empty:
        return []
    return sorted(str(t) for t in events["event_type"].dropna().unique())


def resolve_definition(
    dataset: Dataset, *, requested: str | None = "auto", horizon_days: int = 90,
    active_days: int | None = None, activity_events: Sequence[str] | None = None,
) -> ChurnDefinition:
    """Turn ``--churn``, ``--active-days`` and ``--activity-events`` into a `ChurnDefinition`.

    Raises `DefinitionError` naming the flag when a setting cannot apply:
    an unknown definition, ``active_days`` ≤ 0, or an activity event type that
    no event has.
    """
    return resolve_definition_for(
        [name for name in ("orders", "events", "subscriptions") if _has_rows(dataset.table(name))],
        event_types_in(dataset), requested=requested, horizon_days=horizon_days,
        active_days=active_days, activity_events=activity_events)


def resolve_definition_for(
    kinds: Sequence[str], known: Sequence[str], *, requested: str | None = "auto",
    horizon_days: int = 90, active_days: int | None = None,
    activity_events: Sequence[str] | None = None,
) -> ChurnDefinition:
    """`resolve_definition` from the history tables with rows and the sorted event types
    (what a partitioned dataset's manifest says, without reading a partition)."""
    known = list(known)
    requested = requested or "auto"
    if requested not in CHOICES:
        raise DefinitionError("--churn", f"unknown churn definition {requested!r}; expected "
                                         f"one of {' | '.join(CHOICES)}")
    if active_days is not None and active_days <= 0:
        raise DefinitionError("--active-days", f"must be a positive number of days, not "
                                               f"{active_days} (default: the horizon, "
                                               f"{horizon_days})")
    if activity_events is not None:
        wanted = [str(t).strip() for t in activity_events if str(t).strip()]
        if not wanted:
            raise DefinitionError("--activity-events", "names no event type; give a comma-"
                                                       "separated list such as login,session")
        missing = [t for t in wanted if t not in known]
        if missing:
            have = ", ".join(known) if known else "none (the dataset has no events)"
            raise DefinitionError(
                "--activity-events",
                f"no event has type {', '.join(repr(t) for t in missing)}; the event types "
                f"in the data are: {have}")
        types = tuple(sorted(set(wanted)))
    else:
        types = tuple(t for t in known if t not in PASSIVE_EVENT_TYPES)
    if requested == "auto":
        name, reason = auto_definition_for(kinds)
        reason = f"auto: {reason}"
    else:
        name, reason = requested, f"--churn {requested} was given"
    return ChurnDefinition(name=name, reason=reason,
                           active_days=int(active_days or horizon_days), activity_events=types)


def activity_population_rule(chosen: ChurnDefinition) -> dict[str, Any]:
    """The feature test of the activity population, as `models.bundle.population_mask` reads it.

    Any of the activity recency columns (days since the last completed order,
    days since the last event of each activity type) at most ``active_days``,
    or a subscription running at T.
    """
    from features.lifecycle import activity_recency_features
    from features.pipeline import event_slug

    slugs = [event_slug(t) for t in chosen.activity_events]
    return {"test": "recent", "recency": list(activity_recency_features("activity", slugs)),
            "flags": ["is_subscribed"], "within_days": chosen.active_days}


def parse_event_list(text: str | None) -> list[str] | None:
    """``login,session`` → ``["login", "session"]``; None stays None (the default types)."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",")]
