"""What each feature means as a reason: its kind and the sentence a person would say.

Every feature of the pipeline gets a *reason kind* from a fixed vocabulary
(`REASON_KINDS`) and a *sentence spec*: plain format strings, one per case
(missing, zero, one, negative, any other value), plus an optional clause that
sets the customer against a typical retained customer. Both are stored with
the feature's entry in the model bundle, so outreach rules can select on what
a reason means ("an order gap", "a support contact") rather than on feature
names, a renamed feature keeps its sentence, and `models.explain` renders the
sentences without knowing any feature.

Placeholders a sentence may use (filled in by `models.explain.render_sentence`):
``{value}`` and ``{abs}`` (the value, formatted as ``format`` says),
``{count}``/``{abs_count}`` ("3 sessions", with ``noun``), ``{abs_noun}`` (the
noun alone, singular or plural as ``{abs}`` needs), ``{times}``/
``{abs_times}`` ("once", "twice", "3 times"), ``{typical}`` (the value among
retained customers, of this feature or of ``typical_of``), and for categories
``{level_rate}``, ``{overall_rate}`` and ``{level_compare}`` ("more often").
A change reads a companion feature named by ``with`` (this month's count beside
the change against last month): ``some_with``/``negative_with``/``zero_with``
may use ``{with_count}``, ``{with_value}`` and ``{before_value}``.
"""

from __future__ import annotations

import re
from typing import Any

from features.behaviour import ACTIVE_DAYS_VS_USUAL
from features.pipeline import (
    EVENT_RATE_WINDOW,
    EVENT_TREND_WINDOW,
    MRR_CHANGE_DAYS,
    ORDER_TREND_WINDOW,
    WINDOWS,
    FeatureInfo,
)

#: what a reason can mean; rules select on these (docs/outreach.md lists them)
REASON_KINDS: dict[str, str] = {
    "order_gap": "a long time since the last order, or overdue against the customer's rhythm",
    "visit_gap": "a long time since the last visit, session or other app or site activity",
    "order_frequency": "fewer orders than before or than retained customers place",
    "engagement_drop": "less app, site or e-mail activity than usual or than before",
    "spend": "lower spend or order value",
    "discount": "buying mostly on discount",
    "returns": "returned, cancelled or uncollected orders",
    "support_contact": "contacts with customer support",
    "payment_failure": "failed or declined payments",
    "price_change": "a plan or price change (downgrades, upgrades, recurring revenue change)",
    "subscription": "the state or length of the subscription",
    "tenure": "how long the customer has been with the business",
    "seasonality": "the time of year, or what the customer did in the same season last year",
    "attribute": "a static customer attribute such as channel, region or plan",
    "other": "anything else (features of bundles trained before reason kinds existed)",
}

#: typical-value clause shared by most sentences
AGAINST = ", against {typical} for a typical retained customer"

Spec = dict[str, Any]


def _spec(some: str, *, fmt: str = "number", zero: str | None = None, one: str | None = None,
          negative: str | None = None, missing: str, typical: str | None = AGAINST,
          noun: tuple[str, str] | None = None, typical_of: str | None = None) -> Spec:
    spec: Spec = {"format": fmt, "some": some, "missing": missing}
    for key, text in (("zero", zero), ("one", one), ("negative", negative),
                      ("typical", typical)):
        if text is not None:
            spec[key] = text
    if noun is not None:
        spec["noun"] = list(noun)
    if typical_of is not None:
        spec["typical_of"] = typical_of
    return spec


# -- event types -------------------------------------------------------------------------

#: how people talk about well-known event types: singular, plural, "last …", "never …"
_EVENT_WORDS: dict[str, tuple[str, str, str, str]] = {
    "session": ("session", "sessions", "Last visit {value} ago", "Has never visited"),
    "visit": ("visit", "visits", "Last visit {value} ago", "Has never visited"),
    "login": ("login", "logins", "Last logged in {value} ago", "Has never logged in"),
    "page_view": ("page view", "page views", "Last viewed a page {value} ago",
                  "Has never viewed a page"),
    "product_view": ("product view", "product views", "Last looked at a product {value} ago",
                     "Has never looked at a product"),
    "cart_add": ("cart add", "cart adds", "Last added to cart {value} ago",
                 "Has never added to cart"),
    "support_ticket": ("support ticket", "support tickets", "Last contacted support {value} ago",
                       "Has never contacted support"),
    "email_open": ("e-mail open", "e-mail opens", "Last opened an e-mail {value} ago",
                   "Has never opened an e-mail"),
}
_SUPPORT = re.compile(r"support|ticket|complain|helpdesk|contact_us|chat_agent")
_PAYMENT_FAILURE = re.compile(r"payment_fail|failed_payment|declin|dunning|chargeback")
_RETURNS = re.compile(r"return|refund")
_MESSAGES = re.compile(r"email|e_mail|newsletter|push|sms|notification")


def event_reason_kind(slug: str) -> str:
    """The reason kind of a count or rate of ``slug`` events (not of a gap since the last)."""
    if _SUPPORT.search(slug):
        return "support_contact"
    if _PAYMENT_FAILURE.search(slug):
        return "payment_failure"
    if _RETURNS.search(slug):
        return "returns"
    return "engagement_drop"


def _gap_kind(slug: str) -> str:
    """The reason kind of the days since the last ``slug`` event."""
    kind = event_reason_kind(slug)
    if kind != "engagement_drop" or _MESSAGES.search(slug):
        return kind
    return "visit_gap"


def _words(slug: str) -> tuple[str, str, str, str]:
    if slug in _EVENT_WORDS:
        return _EVENT_WORDS[slug]
    noun = f"{slug.replace('_', ' ')} event"
    return noun, noun + "s", f"Last {noun} {{value}} ago", f"No {noun} on record"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _event_spec(name: str) -> tuple[str, Spec] | None:
    """Kind and sentence of a per-event-type feature, or None when ``name`` is not one."""
    patterns: tuple[tuple[str, Any], ...] = (
        (r"days_since_last_(?P<t>.+)", _days_since_event),
        (r"(?P<t>.+)_events_(?P<w>\d+)d", _event_count),
        (r"(?P<t>.+)_events_total", _event_total),
        (rf"(?P<t>.+)_events_change_{EVENT_TREND_WINDOW}d", _event_change),
        (rf"(?P<t>.+)_events_per_active_day_{EVENT_RATE_WINDOW}d", _per_active_day),
        (r"(?P<t>.+)_per_active_day_(?P<w>\d+)d", _per_active_day),
        (rf"(?P<t>.+)_value_(?P<w>{EVENT_RATE_WINDOW})d", _event_value),
        (r"(?P<t>.+)_value_total", _event_value),
        (r"(?P<t>.+)_rate_vs_usual_30d", _rate_vs_usual),
        (r"(?P<t>.+)_per_week_of_tenure", _per_week),
        (r"(?P<t>.+)_overdue_ratio", _event_overdue),
        (r"(?P<t>.+)_trend_30d", _event_trend),
    )
    for pattern, build in patterns:
        match = re.fullmatch(pattern, name)
        if match:
            slug = match["t"]
            window = match.groupdict().get("w")
            kind = _gap_kind(slug) if build in (_days_since_event, _event_overdue) \
                else event_reason_kind(slug)
            return kind, build(slug, window)
    return None


def _days_since_event(slug: str, window: str | None) -> Spec:
    _, _, last, never = _words(slug)
    return _spec(last, fmt="days", missing=never)


def _event_count(slug: str, window: str | None) -> Spec:
    one, many, _, _ = _words(slug)
    span = f"in the last {window} days"
    return _spec(f"{{count}} {span}", fmt="count", zero=f"No {one} {span}",
                 missing=f"No {many} on record {span}", noun=(one, many))


def _event_total(slug: str, window: str | None) -> Spec:
    one, many, _, never = _words(slug)
    return _spec("{count} in all", fmt="count", zero=never, missing=never, noun=(one, many))


def _with(spec: Spec, companion: str, *, some: str, negative: str, zero: str) -> Spec:
    """``spec`` reading ``companion`` too: the recent count beside a change, for example."""
    return {**spec, "with": companion, "some_with": some, "negative_with": negative,
            "zero_with": zero}


def _event_change(slug: str, window: str | None) -> Spec:
    one, many, _, _ = _words(slug)
    w = EVENT_TREND_WINDOW
    recent = f"{{with_count}} in the last {w} days"
    return _with(_event_change_alone(one, many), f"{slug}_events_{w}d",
                 some=f"{recent}, up from {{before_value}} in the {w} days before",
                 negative=f"{recent}, down from {{before_value}} in the {w} days before",
                 zero=f"{recent}, as many as in the {w} days before")


def _event_change_alone(one: str, many: str) -> Spec:
    w = EVENT_TREND_WINDOW
    return _spec(f"{{abs}} more {{abs_noun}} in the last {w} days than in the {w} days before",
                 negative=f"{{abs}} fewer {{abs_noun}} in the last {w} days than in the {w} days "
                 "before",
                 zero=f"As many {many} in the last {w} days as in the {w} days before",
                 fmt="count", missing=f"No {many} on record to compare", typical=None,
                 noun=(one, many))


def _per_active_day(slug: str, window: str | None) -> Spec:
    one, many, _, _ = _words(slug)
    span = f"in the last {window or EVENT_RATE_WINDOW} days"
    return _spec(f"{{count}} per active day {span}", fmt="rate",
                 zero=f"No {one} on any active day {span}",
                 missing=f"No active day {span}", noun=(one, many))


def _event_value(slug: str, window: str | None) -> Spec:
    one, many, _, _ = _words(slug)
    span = f"in the last {window} days" if window else "so far"
    return _spec(f"{_cap(many)} {span} add up to a value of {{value}}", fmt="number",
                 zero=f"No {one} with a recorded value {span}",
                 missing=f"No {one} with a recorded value {span}")


def _rate_vs_usual(slug: str, window: str | None) -> Spec:
    _, many, _, _ = _words(slug)
    return _spec(f"{_cap(many)} in the last 30 days at {{value}} of the customer's usual rate",
                 fmt="percent", zero=f"No {many} in the last 30 days",
                 missing=f"No usual rate of {many} to compare with",
                 typical=", against {typical} of the usual rate for a typical retained customer")


def _per_week(slug: str, window: str | None) -> Spec:
    _, many, _, _ = _words(slug)
    return _spec(f"{{value}} {many} a week since joining", fmt="rate",
                 zero=f"No {many} since joining", missing=f"No {many} on record")


def _event_overdue(slug: str, window: str | None) -> Spec:
    one, many, _, never = _words(slug)
    return _spec(f"Would usually have had {{count}} since the last {one}", fmt="count",
                 zero=f"Not overdue for a {one}", missing=never, noun=(one, many))


def _event_trend(slug: str, window: str | None) -> Spec:
    _, many, _, _ = _words(slug)
    return _spec(f"{_cap(many)} in the last 30 days at {{value}} of the monthly average "
                 "of the 60 days before", fmt="percent",
                 zero=f"No {many} in the last 30 days, after some in the 60 days before",
                 missing=f"No {many} in the 60 days before to compare with")


def _pair_spec(name: str) -> tuple[str, Spec] | None:
    match = re.fullmatch(r"ratio_(?P<t>.+?)_per_(?P<u>.+)_(?P<w>\d+)d", name)
    if not match:
        return None
    t_one, t_many, _, _ = _words(match["t"])
    u_one, u_many, _, _ = _words(match["u"])
    kinds = {event_reason_kind(match["t"]), event_reason_kind(match["u"])}
    kind = next((k for k in ("support_contact", "payment_failure", "returns") if k in kinds),
                "engagement_drop")
    span = f"in the last {match['w']} days"
    return kind, _spec(f"{{count}} per {u_one} {span}", fmt="rate",
                       zero=f"No {t_one} per {u_one} {span}",
                       missing=f"No {u_many} {span} to compare with", noun=(t_one, t_many))


# -- fixed features ------------------------------------------------------------------------

def _order_specs() -> dict[str, tuple[str, Spec]]:
    out: dict[str, tuple[str, Spec]] = {}
    for w in WINDOWS:
        span = f"in the last {w} days"
        out[f"completed_orders_{w}d"] = ("order_frequency", _spec(
            f"Ordered {{times}} {span}", fmt="count", zero=f"No order {span}",
            missing=f"No order {span}"))
        out[f"revenue_{w}d"] = ("spend", _spec(
            f"Spent {{value}} {span}", fmt="money", zero=f"No spend {span}",
            missing=f"No spend {span}"))
    w = ORDER_TREND_WINDOW
    out.update({
        "completed_orders_total": ("order_frequency", _spec(
            "Ordered {times} in all", fmt="count", zero="Has never completed an order",
            missing="Has never completed an order")),
        "revenue_total": ("spend", _spec(
            "Spent {value} in all", fmt="money", zero="Has never spent anything",
            missing="Has never spent anything")),
        "days_since_last_order": ("order_gap", _spec(
            "No order for {value}", fmt="days", missing="Has never ordered",
            typical="; retained customers typically order every {typical}",
            typical_of="mean_days_between_orders")),
        "days_since_first_order": ("tenure", _spec(
            "First ordered {value} ago", fmt="days", missing="Has never ordered")),
        f"completed_orders_change_{w}d": ("order_frequency", _with(_spec(
            f"{{abs}} more {{abs_noun}} in the last {w} days than in the {w} days before",
            negative=f"{{abs}} fewer {{abs_noun}} in the last {w} days than in the {w} days before",
            zero=f"As many orders in the last {w} days as in the {w} days before",
            fmt="count", missing="No order on record to compare", typical=None,
            noun=("order", "orders")), f"completed_orders_{w}d",
            some=f"{{with_count}} in the last {w} days, up from {{before_value}} in the {w} days "
            "before",
            negative=f"{{with_count}} in the last {w} days, down from {{before_value}} in the "
            f"{w} days before",
            zero=f"{{with_count}} in the last {w} days, as many as in the {w} days before")),
        "avg_order_value": ("spend", _spec(
            "Spends {value} per order on average", fmt="money", zero="Spends nothing per order",
            missing="No completed order to average")),
        "avg_order_value_365d": ("spend", _spec(
            "Spent {value} per order on average in the last 365 days", fmt="money",
            zero="Spent nothing per order in the last 365 days",
            missing="No completed order in the last 365 days")),
        "avg_order_value_trend": ("spend", _spec(
            "Average order value in the last 365 days at {value} of the year before",
            fmt="percent", zero="No spend per order in the last 365 days",
            missing="No orders in both years to compare")),
        "mean_days_between_orders": ("order_frequency", _spec(
            "Orders every {value} on average", fmt="days", zero="Orders several times a day",
            missing="Has not ordered twice yet")),
        "std_days_between_orders": ("order_frequency", _spec(
            "Irregular orders: the gaps between them vary by {value}", fmt="days",
            zero="Orders at a perfectly steady rhythm", missing="Has not ordered three times yet")),
        "order_overdue_ratio": ("order_gap", _spec(
            "Has gone {value} the usual gap between orders without ordering", fmt="multiple",
            zero="Ordered moments ago", missing="Has not ordered twice yet")),
    })
    for status, one, many in (("returned", "returned order", "returned orders"),
                              ("cancelled", "cancelled order", "cancelled orders"),
                              ("unclaimed", "uncollected cash-on-delivery parcel",
                               "uncollected cash-on-delivery parcels")):
        out[f"{status}_orders_total"] = ("returns", _spec(
            "{count} in all", fmt="count", zero=f"No {one} ever", missing=f"No {one} ever",
            noun=(one, many)))
        out[f"{status}_orders_90d"] = ("returns", _spec(
            "{count} in the last 90 days", fmt="count", zero=f"No {one} in the last 90 days",
            missing=f"No {one} in the last 90 days", noun=(one, many)))
    out.update({
        "return_rate": ("returns", _spec(
            "{value} of orders were returned", fmt="percent", zero="No order was returned",
            missing="No order to return")),
        "cancellation_rate": ("returns", _spec(
            "{value} of orders were cancelled", fmt="percent", zero="No order was cancelled",
            missing="No order to cancel")),
        "unclaimed_rate": ("returns", _spec(
            "{value} of cash-on-delivery parcels were never collected", fmt="percent",
            zero="Every parcel was collected", missing="No order to collect")),
        "discounted_order_share": ("discount", _spec(
            "{value} of orders bought on discount", fmt="percent",
            zero="Never buys on discount", missing="No completed order to judge discounts by")),
        "discount_share_of_spend": ("discount", _spec(
            "Discounts make up {value} of spend", fmt="percent", zero="Never uses discounts",
            missing="No completed order to judge discounts by")),
        "avg_items_per_order": ("spend", _spec(
            "{count} per order on average", fmt="count", zero="Orders hold no items",
            missing="No completed order to count items in", noun=("item", "items"))),
    })
    return out


def _activity_specs() -> dict[str, tuple[str, Spec]]:
    out: dict[str, tuple[str, Spec]] = {
        "tenure_days": ("tenure", _spec(
            "A customer for {value}", fmt="days", zero="Joined today",
            missing="Sign-up date not on record")),
        "days_since_last_event": ("visit_gap", _spec(
            "No visit or app activity for {value}", fmt="days",
            missing="Has never used the app or site")),
        ACTIVE_DAYS_VS_USUAL: ("engagement_drop", _spec(
            "Active on {value} as many days as usual in the last 30 days", fmt="percent",
            zero="Active on no day in the last 30 days (0% of the usual)",
            missing="No usual activity to compare with")),
    }
    for w in WINDOWS:
        out[f"active_days_{w}d"] = ("engagement_drop", _spec(
            f"Active on {{value}} of the last {w} days", fmt="count",
            zero=f"Not active on any of the last {w} days",
            missing=f"No app or site activity on record in the last {w} days"))
    return out


def _subscription_specs() -> dict[str, tuple[str, Spec]]:
    d = MRR_CHANGE_DAYS
    return {
        "is_subscribed": ("subscription", _spec(
            "Has an active subscription", fmt="flag", zero="No active subscription",
            missing="No subscription on record", typical=None)),
        "current_mrr": ("subscription", _spec(
            "Pays {value} a month", fmt="money", zero="Pays nothing a month",
            missing="No subscription on record")),
        f"mrr_change_{d}d": ("price_change", _with(_spec(
            f"Pays {{abs}} a month more than {d} days ago",
            negative=f"Pays {{abs}} a month less than {d} days ago",
            zero=f"Pays the same as {d} days ago", fmt="money",
            missing="No subscription on record", typical=None), "current_mrr",
            some=f"Pays {{with_value}} a month, up from {{before_value}} {d} days ago",
            negative=f"Pays {{with_value}} a month, down from {{before_value}} {d} days ago",
            zero=f"Pays {{with_value}} a month, as {d} days ago")),
        "current_plan": ("subscription", _category_spec(
            "On the {value} plan", "No current plan", "customers on that plan")),
        "subscription_months": ("subscription", _spec(
            "Subscribed for {value} in all", fmt="months", zero="Has never subscribed",
            missing="No subscription on record")),
        "subscriptions_total": ("subscription", _spec(
            "{count} started in all", fmt="count", zero="Has never subscribed",
            missing="No subscription on record", noun=("subscription", "subscriptions"))),
        "subscription_upgrades": ("price_change", _spec(
            "Moved to a dearer plan {times}", fmt="count", zero="Has never upgraded",
            missing="No subscription on record")),
        "subscription_downgrades": ("price_change", _spec(
            "Moved to a cheaper plan {times}", fmt="count",
            zero="Has never moved to a cheaper plan", missing="No subscription on record")),
        "days_since_subscription_start": ("subscription", _spec(
            "Current subscription started {value} ago", fmt="days",
            zero="Current subscription started today", missing="No current subscription")),
        "days_since_subscription_ended": ("subscription", _spec(
            "Subscription ended {value} ago", fmt="days", zero="Subscription ended today",
            missing="No subscription has ended")),
    }


def _calendar_specs() -> dict[str, tuple[str, Spec]]:
    before = "Not yet a customer this time last year"
    return {
        "day_of_year": ("seasonality", _spec(
            "The time of year ({value}) weighs on the risk", fmt="day_of_year",
            missing="Time of year unknown", typical=None)),
        "completed_orders_same_season_last_year": ("seasonality", _spec(
            "Ordered {times} in the same season last year", fmt="count",
            zero="No order in the same season last year", missing=before)),
        "revenue_same_season_last_year": ("seasonality", _spec(
            "Spent {value} in the same season last year", fmt="money",
            zero="No spend in the same season last year", missing=before)),
        "revenue_share_same_season": ("seasonality", _spec(
            "{value} of last year's spend fell in the same season", fmt="percent",
            zero="No spend last year fell in the same season", missing=before)),
        "active_days_same_season_last_year": ("seasonality", _spec(
            "Active on {value} days in the same season last year", fmt="count",
            zero="Not active in the same season last year", missing=before)),
        "business_season_step_last_year": ("seasonality", _spec(
            "In these weeks last year the business's revenue per active customer moved "
            "{value} against the weeks before", fmt="multiple",
            missing="The business's history does not cover these weeks last year",
            typical=None)),
    }


def _category_spec(some: str, missing: str, who: str) -> Spec:
    spec = _spec(some, fmt="text", missing=missing, typical=None)
    spec["levels"] = (f"{who} churn {{level_compare}} "
                      "({level_rate} against {overall_rate} overall)")
    return spec


#: how well-known attributes read in a sentence: (sentence, missing, who shares the value)
_ATTRIBUTES: dict[str, tuple[str, str, str]] = {
    "acquisition_channel": ("Came through the {value} channel", "Acquisition channel unknown",
                            "customers from that channel"),
    "region": ("Lives in the {value} region", "Region unknown", "customers there"),
    "country": ("Lives in {value}", "Country unknown", "customers there"),
    "age_band": ("In the {value} age band", "Age unknown", "customers of that age"),
    "preferred_payment": ("Prefers to pay by {value}", "Payment preference unknown",
                          "customers who pay that way"),
    "plan": ("On the {value} plan", "Plan unknown", "customers on that plan"),
    "segment": ("In the {value} segment", "Segment unknown", "customers in that segment"),
}


def _attribute_spec(name: str, categorical: bool) -> Spec:
    attribute = name.removeprefix("attribute_")
    words = attribute.replace("_", " ")
    some, missing, who = _ATTRIBUTES.get(
        attribute, (f"{_cap(words)}: {{value}}", f"{_cap(words)} not on record",
                    f"customers with that {words}"))
    if categorical:
        return _category_spec(some, missing, who)
    return _spec(some, fmt="number", missing=missing)


FIXED_SPECS: dict[str, tuple[str, Spec]] = {
    **_order_specs(), **_activity_specs(), **_subscription_specs(), **_calendar_specs()}


def reason_spec(info: FeatureInfo, *, categorical: bool = False) -> tuple[str, Spec]:
    """The reason kind and sentence spec of a feature described by ``info``."""
    name = info.name
    if name in FIXED_SPECS:
        return FIXED_SPECS[name]
    if info.kind == "attribute":
        return "attribute", _attribute_spec(name, categorical)
    found = _pair_spec(name) or _event_spec(name)
    if found is not None:
        return found
    # a feature the catalog knows but no sentence was written for: its description
    described = _cap(info.description)
    return "other", _spec(f"{described}: {{value}}", missing=f"{described} not on record")
