"""Behavioural usage features: how a customer uses the app, against their own habits.

Raw event counts say how much a customer does; behavioural churn analysis
looks at how that compares with what the customer usually does and with what
else they do: rates per active day, ratios between event types (cart adds per
session), changes over time and rates normalised by tenure. A keen customer
who halves their sessions is at more risk than a light user who always had
few, and counts alone cannot tell them apart.

Per event type ``t`` (slug as in `features.pipeline.event_slug`):

- ``{t}_per_active_day_30d``: events per active day in the last 30 days;
- ``{t}_rate_vs_usual_30d``: the daily rate of the last 30 days divided by the
  customer's daily rate since they were first known (1 = as usual);
- ``{t}_per_week_of_tenure``: events ever per week since first known;
- ``{t}_overdue_ratio``: days since the last event times the customer's usual
  daily rate, i.e. how many events they would normally have made since;
- ``{t}_trend_30d``: events in the last 30 days divided by the monthly
  average of the 60 days before.

Per pair of event types ``t`` < ``u`` (sorted slugs): ``ratio_{t}_per_{u}_30d``
and ``_90d``. And for all activity: ``active_days_30d_vs_usual``.

Every feature reads events strictly before T (pure, as the pipeline).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from features.history import NEVER, NS_PER_DAY, History

RECENT_DAYS = 30
TREND_BEFORE_DAYS = 60
RATIO_WINDOWS = (30, 90)


def _per_type_templates() -> tuple[tuple[str, str, str], ...]:
    return (
        ("{t}_per_active_day_30d", "'{t}' events per active day in the last 30 days", "rate"),
        ("{t}_rate_vs_usual_30d",
         "'{t}' events in the last 30 days against the customer's usual rate "
         "(1 = as usual, below 1 = less than usual)", "rate"),
        ("{t}_per_week_of_tenure", "'{t}' events per week since the customer joined", "rate"),
        ("{t}_overdue_ratio",
         "'{t}' events the customer would usually have made since their last one", "rate"),
        ("{t}_trend_30d",
         "'{t}' events in the last 30 days against the monthly average of the 60 days "
         "before (1 = steady, below 1 = falling)", "rate"),
    )


#: per event type: (name template, description template, unit)
BEHAVIOUR_TEMPLATES = _per_type_templates()
#: per pair of event types: (name template, description template, unit)
PAIR_TEMPLATES = tuple(
    (f"ratio_{{t}}_per_{{u}}_{w}d", f"'{{t}}' events per '{{u}}' event in the last {w} days",
     "rate") for w in RATIO_WINDOWS)
ACTIVE_DAYS_VS_USUAL = "active_days_30d_vs_usual"
ACTIVE_DAYS_VS_USUAL_TEXT = ("days with app or site activity in the last 30 days against "
                             "the customer's usual share of active days (1 = as usual)")


def _pattern(template: str) -> re.Pattern[str]:
    escaped = re.escape(template)
    escaped = escaped.replace(r"\{t\}", "(?P<t>.+?)").replace(r"\{u\}", "(?P<u>.+)")
    return re.compile("^" + escaped + "$")


_PATTERNS = tuple((_pattern(name), text, unit)
                  for name, text, unit in (*BEHAVIOUR_TEMPLATES, *PAIR_TEMPLATES))


def describe_behaviour(name: str) -> tuple[str, str] | None:
    """(description, unit) of a behaviour feature name, or None when it is not one."""
    if name == ACTIVE_DAYS_VS_USUAL:
        return ACTIVE_DAYS_VS_USUAL_TEXT, "rate"
    for pattern, text, unit in _PATTERNS:
        match = pattern.match(name)
        if match:
            words = {k: v.replace("_", " ") for k, v in match.groupdict().items()}
            return text.format(**words), unit
    return None


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1),
                        np.nan)


def behaviour_features(history: History, t: int, *, slugs: Sequence[tuple[str, str]],
                       known_days: np.ndarray, active_days: dict[int, np.ndarray]
                       ) -> dict[str, np.ndarray]:
    """Behaviour columns as of ``t`` (ns) for the event types ``slugs`` ((type, slug) pairs).

    ``known_days`` is each customer's tenure in days (NaN when unknown) and
    ``active_days`` the days with any event in the last 30 and 365 days, as the
    pipeline computed them.
    """
    n = history.n_customers
    events = history.events
    out: dict[str, np.ndarray] = {}
    out[ACTIVE_DAYS_VS_USUAL] = _ratio(
        active_days[RECENT_DAYS] / RECENT_DAYS,
        _ratio(active_days[365], np.minimum(known_days, 365.0)))
    if not slugs:
        return out
    known_types = events.types if events is not None else []
    k = max(len(known_types), 1)
    end = events.end(t) if events is not None else 0

    def per_type(start: int, stop: int) -> np.ndarray:
        if events is None:
            return np.zeros((n, k))
        counts = np.bincount(events.key[start:stop], minlength=n * k)
        return counts.astype(np.float64).reshape(n, k)

    def start_of(days: int) -> int:
        return events.start(t - days * NS_PER_DAY) if events is not None else 0

    recent = per_type(start_of(RECENT_DAYS), end)
    before = per_type(start_of(RECENT_DAYS + TREND_BEFORE_DAYS), start_of(RECENT_DAYS))
    windows = {w: (recent if w == RECENT_DAYS else per_type(start_of(w), end))
               for w in RATIO_WINDOWS}
    total = per_type(0, end)
    flat_last = np.full(n * k, np.iinfo(np.int64).min)
    if events is not None:
        np.maximum.at(flat_last, events.key[:end], events.t[:end])
    last = flat_last.reshape(n, k)
    active_30 = active_days[RECENT_DAYS]

    def pick(matrix: np.ndarray, event_type: str) -> np.ndarray:
        if event_type in known_types:
            return matrix[:, known_types.index(event_type)]
        return np.zeros(n)

    for event_type, slug in slugs:
        count_30, count_before = pick(recent, event_type), pick(before, event_type)
        usual_per_day = _ratio(pick(total, event_type), known_days)
        seen = pick(last, event_type) if event_type in known_types else np.full(
            n, np.iinfo(np.int64).min)
        valid = (seen != NEVER) & (seen > np.iinfo(np.int64).min) & (seen < t)
        days_since = np.where(valid, (t - seen) / NS_PER_DAY, np.nan)
        values = (
            _ratio(count_30, active_30),
            _ratio(count_30 / RECENT_DAYS, usual_per_day),
            _ratio(pick(total, event_type), known_days / 7.0),
            days_since * usual_per_day,
            _ratio(count_30, count_before * RECENT_DAYS / TREND_BEFORE_DAYS),
        )
        for (template, _, _), value in zip(BEHAVIOUR_TEMPLATES, values, strict=True):
            out[template.format(t=slug)] = value
    for (first, first_slug), (second, second_slug) in combinations(
            sorted(slugs, key=lambda pair: pair[1]), 2):
        for (template, _, _), w in zip(PAIR_TEMPLATES, RATIO_WINDOWS, strict=True):
            out[template.format(t=first_slug, u=second_slug)] = _ratio(
                pick(windows[w], first), pick(windows[w], second))
    return out
