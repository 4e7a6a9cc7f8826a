"""Point-in-time customer features as of a date T (docs/features.md).

`build_features(dataset, as_of=T)` returns one row per customer known at T and
one column per feature, computed only from rows strictly before T. The same
function serves training (many snapshots), batch scoring and the API, so there
is no training/serving skew.

Every feature has a one-line description and a unit (`describe_feature`); the
model bundle ships them and the explanations turn them into sentences.

The column set depends only on the event types (taken from the data, or fixed
by ``event_types`` so a trained model always gets the columns it knows) and
the static attribute columns; a missing orders or subscriptions table gives
zeros and NaN, not missing columns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.behaviour import behaviour_features, describe_behaviour
from features.business import BUSINESS_FEATURES, BusinessSeason
from features.calendar import CALENDAR_FEATURES, calendar_features
from features.dataset import Dataset
from features.history import NEVER, NS_PER_DAY, STATUS_CODES, History, timestamp_ns

#: look-back windows in days for counts and sums
WINDOWS = (30, 90, 365)
#: the window compared with the one just before it ("change" features)
ORDER_TREND_WINDOW = 90
EVENT_TREND_WINDOW = 30
#: the window for rates per active day and event value sums
EVENT_RATE_WINDOW = 90
MRR_CHANGE_DAYS = 90
DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class FeatureInfo:
    """What a feature means, for people: used in catalogs and reason sentences."""

    name: str
    description: str
    unit: str
    kind: str


def _info(name: str, description: str, unit: str, kind: str) -> tuple[str, FeatureInfo]:
    return name, FeatureInfo(name, description, unit, kind)


def _order_catalog() -> dict[str, FeatureInfo]:
    entries = []
    for w in WINDOWS:
        entries += [
            _info(f"completed_orders_{w}d", f"completed orders in the last {w} days",
                  "count", "frequency"),
            _info(f"revenue_{w}d", f"revenue from completed orders in the last {w} days",
                  "currency", "monetary"),
        ]
    w = ORDER_TREND_WINDOW
    entries += [
        _info("completed_orders_total", "completed orders ever", "count", "frequency"),
        _info("revenue_total", "revenue from all completed orders", "currency", "monetary"),
        _info("days_since_last_order", "days since the last completed order", "days", "recency"),
        _info("days_since_first_order", "days since the first completed order", "days",
              "recency"),
        _info(f"completed_orders_change_{w}d",
              f"completed orders in the last {w} days minus those in the {w} days before",
              "count", "frequency"),
        _info("avg_order_value", "average value of a completed order", "currency", "monetary"),
        _info("avg_order_value_365d", "average value of a completed order in the last 365 days",
              "currency", "monetary"),
        _info("avg_order_value_trend",
              "average order value in the last 365 days divided by the average before them",
              "ratio", "monetary"),
        _info("mean_days_between_orders", "average gap between consecutive completed orders",
              "days", "rhythm"),
        _info("std_days_between_orders",
              "spread (standard deviation) of the gaps between completed orders", "days",
              "rhythm"),
        _info("order_overdue_ratio",
              "days since the last order divided by the customer's own average gap "
              "(above 1 = overdue)", "ratio", "rhythm"),
    ]
    for status, noun in (("returned", "returned orders"), ("cancelled", "cancelled orders"),
                         ("unclaimed", "cash-on-delivery parcels never collected")):
        entries += [
            _info(f"{status}_orders_total", f"{noun} ever", "count", "experience"),
            _info(f"{status}_orders_90d", f"{noun} in the last 90 days", "count", "experience"),
        ]
    entries += [
        _info("return_rate", "share of placed orders that were returned", "ratio", "experience"),
        _info("cancellation_rate", "share of placed orders that were cancelled", "ratio",
              "experience"),
        _info("unclaimed_rate", "share of placed orders whose parcel was never collected",
              "ratio", "experience"),
        _info("discounted_order_share", "share of completed orders bought with a discount",
              "ratio", "discount"),
        _info("discount_share_of_spend", "discounts as a share of the value of completed orders",
              "ratio", "discount"),
        _info("avg_items_per_order", "average number of items in a completed order", "count",
              "monetary"),
    ]
    return dict(entries)


def _activity_catalog() -> dict[str, FeatureInfo]:
    entries = [_info("tenure_days", "days since the customer signed up (or first appeared)",
                     "days", "tenure"),
               _info("days_since_last_event", "days since the last app or site event of any kind",
                     "days", "recency")]
    entries += [_info(f"active_days_{w}d", f"days with any app or site event in the last {w} days",
                      "count", "engagement") for w in WINDOWS]
    return dict(entries)


def _subscription_catalog() -> dict[str, FeatureInfo]:
    return dict([
        _info("is_subscribed", "1 when a subscription is active, else 0", "flag", "subscription"),
        _info("current_mrr", "monthly recurring revenue of the active subscriptions", "currency",
              "subscription"),
        _info(f"mrr_change_{MRR_CHANGE_DAYS}d",
              f"monthly recurring revenue now minus {MRR_CHANGE_DAYS} days ago", "currency",
              "subscription"),
        _info("current_plan", "plan of the current subscription", "category", "subscription"),
        _info("subscription_months", "months spent subscribed so far", "months", "subscription"),
        _info("subscriptions_total", "subscriptions ever started (each plan change starts one)",
              "count", "subscription"),
        _info("subscription_upgrades", "moves to a subscription with a higher MRR", "count",
              "subscription"),
        _info("subscription_downgrades", "moves to a subscription with a lower MRR", "count",
              "subscription"),
        _info("days_since_subscription_start", "days since the current subscription started",
              "days", "subscription"),
        _info("days_since_subscription_ended",
              "days since the last subscription ended (when none is active)", "days",
              "subscription"),
    ])


ORDER_FEATURES = _order_catalog()
ACTIVITY_FEATURES = _activity_catalog()
SUBSCRIPTION_FEATURES = _subscription_catalog()
FIXED_FEATURES: dict[str, FeatureInfo] = {**ORDER_FEATURES, **ACTIVITY_FEATURES,
                                          **SUBSCRIPTION_FEATURES}

#: per event type: (name template, description template, unit)
EVENT_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    *((f"{{t}}_events_{w}d", f"'{{t}}' events in the last {w} days", "count") for w in WINDOWS),
    ("{t}_events_total", "'{t}' events ever", "count"),
    (f"{{t}}_events_change_{EVENT_TREND_WINDOW}d",
     f"'{{t}}' events in the last {EVENT_TREND_WINDOW} days minus those in the "
     f"{EVENT_TREND_WINDOW} days before", "count"),
    (f"{{t}}_events_per_active_day_{EVENT_RATE_WINDOW}d",
     f"'{{t}}' events per active day in the last {EVENT_RATE_WINDOW} days", "per_day"),
    ("days_since_last_{t}", "days since the last '{t}' event", "days"),
    (f"{{t}}_value_{EVENT_RATE_WINDOW}d",
     f"sum of the values of '{{t}}' events in the last {EVENT_RATE_WINDOW} days", "value"),
    ("{t}_value_total", "sum of the values of all '{t}' events", "value"),
)
_EVENT_PATTERNS = tuple(
    (re.compile("^" + re.escape(name).replace(r"\{t\}", "(?P<t>.+)") + "$"), text, unit)
    for name, text, unit in EVENT_TEMPLATES
)


def event_slug(event_type: str) -> str:
    """An event type as it appears in feature names: lower case, words joined by '_'."""
    return re.sub(r"[^0-9a-z]+", "_", str(event_type).lower()).strip("_") or "unnamed"


def event_feature_names(event_type: str) -> list[str]:
    slug = event_slug(event_type)
    return [name.format(t=slug) for name, _, _ in EVENT_TEMPLATES]


def describe_feature(name: str, *, categorical: bool | None = None) -> FeatureInfo:
    """The one-line description and unit of a feature column.

    Fixed features come from the catalog, per-event-type features from their
    name pattern; anything else is a static customer attribute (pass
    ``categorical`` to get the right unit for it).
    """
    if name in FIXED_FEATURES:
        return FIXED_FEATURES[name]
    if name in CALENDAR_FEATURES:
        return FeatureInfo(name, *CALENDAR_FEATURES[name], "season")
    if name in BUSINESS_FEATURES:
        return FeatureInfo(name, *BUSINESS_FEATURES[name], "season")
    for pattern, text, unit in _EVENT_PATTERNS:
        match = pattern.match(name)
        if match:
            event_type = match.group("t")
            return FeatureInfo(name, text.format(t=event_type.replace("_", " ")), unit, "events")
    behaviour = describe_behaviour(name)
    if behaviour is not None:
        return FeatureInfo(name, *behaviour, "behaviour")
    attribute = name.removeprefix("attribute_")
    unit = "category" if categorical else "value"
    return FeatureInfo(name, f"customer attribute '{attribute}'", unit, "attribute")


def feature_catalog(features: pd.DataFrame) -> pd.DataFrame:
    """Name, description, unit and kind of every column of a feature table."""
    rows = [describe_feature(c, categorical=isinstance(features[c].dtype, pd.CategoricalDtype))
            for c in features.columns]
    return pd.DataFrame([vars(r) for r in rows], columns=["name", "description", "unit", "kind"])


def event_types_before(dataset: Dataset, *, as_of: pd.Timestamp) -> list[str]:
    """The event types with a row before ``as_of``, sorted: the default per-type columns."""
    events = dataset.events
    if events is None:
        return []
    seen = events.loc[events["occurred_at"] < pd.Timestamp(as_of), "event_type"]
    return sorted(str(t) for t in pd.unique(seen))


def build_features(
    dataset: Dataset, *, as_of: pd.Timestamp, event_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Features of every customer known at ``as_of``, from rows strictly before it.

    ``event_types`` fixes the per-event-type columns (a trained model passes
    the types it was trained on); by default they are the types seen before
    ``as_of``, in sorted order.
    """
    return features_at(History(dataset), as_of=as_of, event_types=event_types)


def features_at(
    history: History, *, as_of: pd.Timestamp, event_types: Sequence[str] | None = None,
    business: BusinessSeason | None = None,
) -> pd.DataFrame:
    """`build_features` on a prepared `History` (reuse it for many dates).

    ``business`` (training snapshots) adds the business-wide season columns
    (`features.business`); scoring gets them from the model bundle instead.
    """
    t = timestamp_ns(as_of)
    history = history.at(t)  # orders with the status they had at T
    known = history.known_at(t)
    columns: dict[str, np.ndarray] = {}
    columns.update(_order_features(history, t))
    columns.update(_activity_features(history, t))
    columns.update(_event_features(history, t, event_types))
    sub_columns, plan = _subscription_features(history, t)
    columns.update(sub_columns)
    slugs = [(event_type, event_slug(event_type))
             for event_type in _event_types_at(history, t, event_types)]
    columns.update(behaviour_features(
        history, t, slugs=slugs, known_days=columns["tenure_days"],
        active_days={w: columns[f"active_days_{w}d"] for w in (30, 365)}))
    if history.events is None:
        # no app or site events at all: activity against the usual is unknown, not zero
        columns["active_days_30d_vs_usual"] = np.full(history.n_customers, np.nan)
    columns.update(calendar_features(history, t))
    if business is not None:
        columns.update(business.features_at(pd.Timestamp(as_of), history.n_customers))
    index = history.index[known]
    # one 2-D float block laid out as pandas stores it (a row per feature), so that
    # selecting the known customers is the only copy
    matrix = np.vstack(list(columns.values())).astype(np.float64, copy=False)[:, known]
    frame = pd.DataFrame(matrix.T, index=index, columns=list(columns), copy=False)
    frame.insert(list(frame.columns).index("current_mrr") + 1, "current_plan",
                 _as_category(pd.Series(plan[known], index=index)))
    attributes = history.attributes.iloc[np.flatnonzero(known)]
    for column in attributes.columns:
        values = attributes[column]
        name = f"attribute_{column}" if column in frame.columns else str(column)
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.cat.remove_unused_categories()
        frame[name] = values
    return frame


def _as_category(values: pd.Series) -> pd.Series:
    """Categories are the sorted values present, so partitions union to the whole."""
    text = values.astype(object)
    present = text.notna()
    if present.any():
        text[present] = text[present].astype(str)
    categorical = pd.Categorical(text.to_numpy(dtype=object))
    if not categorical.categories.is_monotonic_increasing:
        categorical = categorical.reorder_categories(sorted(categorical.categories))
    return pd.Series(categorical, index=values.index)


def _days(since: np.ndarray, t: int) -> np.ndarray:
    """Days from ``since`` (ns, `NEVER` or negative sentinel = none) to T; NaN when none."""
    valid = (since != NEVER) & (since > np.iinfo(np.int64).min) & (since < t)
    return np.where(valid, (t - since) / NS_PER_DAY, np.nan)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1),
                        np.nan)


_SUMMED_ORDER_FEATURES = ("completed_orders_", "revenue_", "returned_orders_", "cancelled_orders_",
                          "unclaimed_orders_")


def _order_features(history: History, t: int) -> dict[str, np.ndarray]:
    n = history.n_customers
    orders = history.orders
    if orders is None:
        # counts and sums are zero without orders; averages, rates and recencies undefined
        return {name: np.zeros(n) if name.startswith(_SUMMED_ORDER_FEATURES) else np.full(n, np.nan)
                for name in ORDER_FEATURES}

    end = orders.end(t)

    def count(start: int, stop: int, mask: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> np.ndarray:
        codes = orders.code[start:stop]
        w = None if weights is None else weights[start:stop]
        if mask is not None:
            m = mask[start:stop]
            codes = codes[m]
            w = None if w is None else w[m]
        return np.bincount(codes, weights=w, minlength=n).astype(np.float64)

    def start_of(days: int) -> int:
        return orders.end(t - days * NS_PER_DAY)

    done = orders.completed
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        out[f"completed_orders_{w}d"] = count(start_of(w), end, done)
        out[f"revenue_{w}d"] = count(start_of(w), end, done, orders.amount)
    total = count(0, end, done)
    revenue = count(0, end, done, orders.amount)
    out["completed_orders_total"] = total
    out["revenue_total"] = revenue

    last = np.full(n, np.iinfo(np.int64).min)
    first = np.full(n, NEVER)
    prefix = np.flatnonzero(done[:end])
    np.maximum.at(last, orders.code[prefix], orders.t[prefix])
    np.minimum.at(first, orders.code[prefix], orders.t[prefix])
    out["days_since_last_order"] = _days(last, t)
    out["days_since_first_order"] = _days(first, t)

    w = ORDER_TREND_WINDOW
    previous = count(start_of(2 * w), start_of(w), done)
    out[f"completed_orders_change_{w}d"] = out[f"completed_orders_{w}d"] - previous
    out["avg_order_value"] = _ratio(revenue, total)
    out["avg_order_value_365d"] = _ratio(out["revenue_365d"], out["completed_orders_365d"])
    earlier_value = _ratio(revenue - out["revenue_365d"], total - out["completed_orders_365d"])
    out["avg_order_value_trend"] = _ratio(out["avg_order_value_365d"], earlier_value)

    has_gap = done & ~np.isnan(orders.gap_days)
    gap_count = count(0, end, has_gap)
    gap_sum = count(0, end, has_gap, np.nan_to_num(orders.gap_days))
    gap_squares = count(0, end, has_gap, np.nan_to_num(orders.gap_days) ** 2)
    mean_gap = _ratio(gap_sum, gap_count)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = (gap_squares - gap_count * mean_gap**2) / (gap_count - 1)
    out["mean_days_between_orders"] = mean_gap
    out["std_days_between_orders"] = np.where(
        gap_count >= 2, np.sqrt(np.clip(variance, 0, None)), np.nan)
    out["order_overdue_ratio"] = _ratio(out["days_since_last_order"], mean_gap)

    placed = count(0, end)
    for status, rate in (("returned", "return_rate"), ("cancelled", "cancellation_rate"),
                         ("unclaimed", "unclaimed_rate")):
        is_status = orders.status == STATUS_CODES[status]
        out[f"{status}_orders_total"] = count(0, end, is_status)
        out[f"{status}_orders_90d"] = count(start_of(90), end, is_status)
        out[rate] = _ratio(out[f"{status}_orders_total"], placed)

    discounted = count(0, end, done & (orders.discount > 0))
    out["discounted_order_share"] = _ratio(discounted, total)
    out["discount_share_of_spend"] = _ratio(count(0, end, done, orders.discount), revenue)
    has_items = done & ~np.isnan(orders.items)
    out["avg_items_per_order"] = _ratio(count(0, end, has_items, np.nan_to_num(orders.items)),
                                        count(0, end, has_items))
    return {name: out[name] for name in ORDER_FEATURES}


def _activity_features(history: History, t: int) -> dict[str, np.ndarray]:
    n = history.n_customers
    first_known = np.minimum(history.signup_ns, history.first_seen_ns)
    out = {"tenure_days": _days(first_known, t)}
    events = history.events
    if events is None:
        out["days_since_last_event"] = np.full(n, np.nan)
        out.update({f"active_days_{w}d": np.zeros(n) for w in WINDOWS})
        return out
    end = events.end(t)
    last = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last, events.code[:end], events.t[:end])
    out["days_since_last_event"] = _days(last, t)
    for w in WINDOWS:
        out[f"active_days_{w}d"] = _active_days(history, t, w)
    return {name: out[name] for name in ACTIVITY_FEATURES}


def _active_days(history: History, t: int, window: int) -> np.ndarray:
    """Calendar days with an event, from the day T - window began up to T."""
    events = history.events
    assert events is not None, "active days are counted on events"
    day_start = (t - window * NS_PER_DAY) // NS_PER_DAY * NS_PER_DAY
    first, last = np.searchsorted(events.day_first_t, np.array([day_start, t]), side="left")
    codes = events.day_first_code[first:last]
    return np.bincount(codes, minlength=history.n_customers).astype(np.float64)


def _event_types_at(history: History, t: int,
                    event_types: Sequence[str] | None) -> list[str]:
    """The event types given, or by default those with an event before ``t``, sorted."""
    if event_types is not None:
        return list(event_types)
    events = history.events
    if events is None:
        return []
    seen = np.bincount(events.type[:events.end(t)], minlength=len(events.types)) > 0
    return sorted(events.types[i] for i in np.flatnonzero(seen))


def _event_features(history: History, t: int,
                    event_types: Sequence[str] | None) -> dict[str, np.ndarray]:
    n = history.n_customers
    events = history.events
    known_types = events.types if events is not None else []
    end = events.end(t) if events is not None else 0
    if event_types is None and events is None:
        return {}
    event_types = _event_types_at(history, t, event_types)
    out: dict[str, np.ndarray] = {}
    if not event_types:
        return out
    k = max(len(known_types), 1)

    def per_type(start: int, stop: int, weights: np.ndarray | None = None) -> np.ndarray:
        if events is None:
            return np.zeros((n, k))
        w = None if weights is None else weights[start:stop]
        counts = np.bincount(events.key[start:stop], weights=w, minlength=n * k)
        return counts.astype(np.float64).reshape(n, k)

    def start_of(days: int) -> int:
        return events.start(t - days * NS_PER_DAY) if events is not None else 0

    windows = {w: per_type(start_of(w), end) for w in WINDOWS}
    total = per_type(0, end)
    trend = EVENT_TREND_WINDOW
    latest = windows[trend] if trend in windows else per_type(start_of(trend), end)
    before = per_type(start_of(2 * trend), start_of(trend))
    rate_window = (windows[EVENT_RATE_WINDOW] if EVENT_RATE_WINDOW in windows
                   else per_type(start_of(EVENT_RATE_WINDOW), end))
    value_window = per_type(start_of(EVENT_RATE_WINDOW), end,
                            events.value if events is not None else None)
    value_total = per_type(0, end, events.value if events is not None else None)
    flat_last = np.full(n * k, np.iinfo(np.int64).min)
    if events is not None:
        np.maximum.at(flat_last, events.key[:end], events.t[:end])
    last = flat_last.reshape(n, k)
    active = (_active_days(history, t, EVENT_RATE_WINDOW) if events is not None
              else np.zeros(n))

    used_slugs: dict[str, str] = {}
    for event_type in event_types:
        slug = event_slug(event_type)
        if slug in used_slugs:
            raise ValueError(f"event types {used_slugs[slug]!r} and {event_type!r} give the "
                             f"same feature names ({slug!r}); rename one of them")
        used_slugs[slug] = event_type
        column = known_types.index(event_type) if event_type in known_types else None
        names = event_feature_names(event_type)

        def pick(matrix: np.ndarray, column: int | None = column) -> np.ndarray:
            return matrix[:, column] if column is not None else np.zeros(n)

        values = [*(pick(windows[w]) for w in WINDOWS), pick(total),
                  pick(latest) - pick(before),
                  _ratio(pick(rate_window), active),
                  _days(pick(last) if column is not None
                        else np.full(n, np.iinfo(np.int64).min), t),
                  pick(value_window), pick(value_total)]
        out.update(zip(names, values, strict=True))
    return out


def _subscription_features(history: History, t: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    n = history.n_customers
    plan = np.full(n, None, dtype=object)
    subs = history.subscriptions
    out: dict[str, np.ndarray] = {}
    if subs is None:
        for name, info in SUBSCRIPTION_FEATURES.items():
            if name != "current_plan":
                out[name] = np.zeros(n) if info.unit in ("count", "flag", "months") \
                    else np.full(n, np.nan)
        out["current_mrr"] = np.zeros(n)
        out[f"mrr_change_{MRR_CHANGE_DAYS}d"] = np.zeros(n)
        return out, plan
    seen = subs[subs["started"].to_numpy() < t]
    code = seen["code"].to_numpy()
    started = seen["started"].to_numpy()
    # an end at or after T is not known at T: the subscription is still active then
    ended = np.where(seen["ended"].to_numpy() < t, seen["ended"].to_numpy(), NEVER)
    mrr = np.nan_to_num(seen["mrr"].to_numpy())
    active = ended == NEVER

    def per_customer(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.bincount(code[mask], weights=w, minlength=n).astype(np.float64)

    out["is_subscribed"] = (per_customer(active) > 0).astype(np.float64)
    out["current_mrr"] = per_customer(active, mrr)
    past = t - MRR_CHANGE_DAYS * NS_PER_DAY
    active_then = (started < past) & (ended >= past)
    out[f"mrr_change_{MRR_CHANGE_DAYS}d"] = out["current_mrr"] - per_customer(active_then, mrr)
    stop = np.minimum(ended, t)
    out["subscription_months"] = per_customer(np.ones(len(seen), bool),
                                              (stop - started) / NS_PER_DAY / DAYS_PER_MONTH)
    out["subscriptions_total"] = per_customer(np.ones(len(seen), bool))
    previous = seen["previous_mrr"].to_numpy()
    out["subscription_upgrades"] = per_customer(~np.isnan(previous) & (mrr > previous))
    out["subscription_downgrades"] = per_customer(~np.isnan(previous) & (mrr < previous))

    current_start = np.full(n, np.iinfo(np.int64).min)
    active_rows = np.flatnonzero(active)
    np.maximum.at(current_start, code[active_rows], started[active_rows])
    out["days_since_subscription_start"] = _days(current_start, t)
    last_end = np.full(n, np.iinfo(np.int64).min)
    ended_rows = np.flatnonzero(~active)
    np.maximum.at(last_end, code[ended_rows], ended[ended_rows])
    out["days_since_subscription_ended"] = np.where(out["is_subscribed"] > 0, np.nan,
                                                    _days(last_end, t))
    # the plan of the most recently started active subscription (rows are sorted by start)
    latest = seen.iloc[active_rows].drop_duplicates("code", keep="last")
    plan[latest["code"].to_numpy()] = latest["plan"].to_numpy()
    return {name: out[name] for name in SUBSCRIPTION_FEATURES if name != "current_plan"}, plan
