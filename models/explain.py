"""Reason sentences: one feature's value, set against what retained customers look like.

A reason is a feature whose exact TreeSHAP contribution pushes a customer's churn
risk up. The sentence states the customer's value in business words and, where
the bundle knows it, the typical value among customers who stayed (the median
over the training snapshots), e.g. "No order for 94 days; retained customers
typically order every 21 days."

Bundles carry each feature's sentence spec (`features.reasons`: format strings
per case, stored with the feature's entry in ``bundle.json``), and
`render_sentence` fills it in: this module knows no feature by name for them.
Bundles trained before sentence specs existed fall back to the name-based
templates below and to a sentence built from the feature's description.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: reference statistics one feature's sentence may draw on besides its own
Reference = Mapping[str, float]
Template = Callable[[float, Reference], str | None]


def _num(value: float, *, digits: int = 0) -> str:
    if digits == 0 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _money(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _plural(count: float, word: str) -> str:
    return f"{_num(count, digits=1)} {word}{'' if count == 1 else 's'}"


def _typical(ref: Reference, name: str) -> float | None:
    value = ref.get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def _days_since_last_order(value: float, ref: Reference) -> str | None:
    gap = next((v for key in ("mean_gap_days", "median_gap_days", "avg_days_between_orders",
                              "mean_days_between_orders")
                if (v := _typical(ref, key)) is not None), None)
    head = f"No order for {_num(value)} days"
    if gap is not None:
        return f"{head}; retained customers typically order every {_num(gap)} days."
    typical = _typical(ref, "days_since_last_order")
    if typical is not None:
        return f"{head}; retained customers' last order was typically {_num(typical)} days ago."
    return f"{head}."


def _count_phrase(count: float) -> str:
    return "none" if count == 0 else _num(count, digits=1)


def _counted(count: float, plural_noun: str) -> str:
    """"None returned orders", "1 returned order", "2 returned orders"."""
    noun = plural_noun[:-1] if count == 1 and plural_noun.endswith("s") else plural_noun
    return f"{_count_phrase(count).capitalize()} {noun}"


def _typically(ref: Reference, name: str, fmt: Callable[[float], str]) -> str:
    typical = _typical(ref, name)
    return "" if typical is None else f"; retained customers typically {fmt(typical)}"


def _overdue(value: float, ref: Reference) -> str:
    return (f"{value:.1f}× their usual gap between orders since the last one"
            f"{_typically(ref, 'order_overdue_ratio', lambda v: f'{v:.1f}×')}.")


def _change(noun: str, window: str) -> Template:
    def sentence(value: float, ref: Reference) -> str | None:
        if value >= 0:
            return None
        return (f"{noun.capitalize()} fell by {_num(-value, digits=1)} in the last {window} "
                f"days versus the {window} days before.")
    return sentence


def _bad_orders(noun: str, window: str | None, name: str) -> Template:
    def sentence(value: float, ref: Reference) -> str:
        span = f" in the last {window} days" if window else " so far"
        return (f"{_counted(value, noun)}{span}"
                f"{_typically(ref, name, _count_phrase)}.")
    return sentence


def _events(event: str, window: str | None, name: str) -> Template:
    def sentence(value: float, ref: Reference) -> str:
        span = f" in the last {window} days" if window else " ever"
        events = f"'{event}' events"
        return (f"{_counted(value, events)}{span}"
                f"{_typically(ref, name, _count_phrase)}.")
    return sentence


def _days_since(what: str, name: str) -> Template:
    def sentence(value: float, ref: Reference) -> str:
        return (f"No {what} for {_num(value)} days"
                f"{_typically(ref, name, lambda v: f'{_num(v)} days')}.")
    return sentence


def _rate(noun: str, name: str) -> Template:
    def sentence(value: float, ref: Reference) -> str:
        return f"{_pct(value)} of orders {noun}{_typically(ref, name, _pct)}."
    return sentence


def _active_days(window: str, name: str) -> Template:
    def sentence(value: float, ref: Reference) -> str:
        return (f"Active on {_num(value)} of the last {window} days"
                f"{_typically(ref, name, _num)}.")
    return sentence


def _completed_orders(window: str, name: str) -> Template:
    def sentence(value: float, ref: Reference) -> str:
        return (f"{_counted(value, 'completed orders')} in the last {window} "
                f"days{_typically(ref, name, _count_phrase)}.")
    return sentence


def _downgrades(value: float, ref: Reference) -> str | None:
    if value <= 0:
        return None
    return f"Moved to a cheaper plan {_plural(value, 'time')}."


def _not_subscribed(value: float, ref: Reference) -> str | None:
    return "No active subscription." if value < 0.5 else None


def _mrr_change(value: float, ref: Reference) -> str | None:
    if value >= 0:
        return None
    return f"Monthly recurring revenue fell by {_money(-value)} over the last 90 days."


#: sentences for well-known features (by exact name); everything else is generic
TEMPLATES: dict[str, Template] = {
    "days_since_last_order": _days_since_last_order,
    "order_overdue_ratio": _overdue,
    "days_since_last_event": _days_since("app or site activity", "days_since_last_event"),
    "subscription_downgrades": _downgrades,
    "is_subscribed": _not_subscribed,
    "mrr_change_90d": _mrr_change,
    "return_rate": _rate("were returned", "return_rate"),
    "unclaimed_rate": _rate("were never collected (cash on delivery)", "unclaimed_rate"),
    "cancellation_rate": _rate("were cancelled", "cancellation_rate"),
}
#: name patterns → template factories (first match wins)
PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], str], Template]], ...] = (
    (re.compile(r"^completed_orders_change_(\d+)d$"),
     lambda m, n: _change("completed orders", m[1])),
    (re.compile(r"^completed_orders_(\d+)d$"), lambda m, n: _completed_orders(m[1], n)),
    (re.compile(r"^(returned|unclaimed|cancelled)_orders_(\d+d|total)$"),
     lambda m, n: _bad_orders(
         {"returned": "returned orders", "cancelled": "cancelled orders",
          "unclaimed": "uncollected cash-on-delivery parcels"}[m[1]],
         None if m[2] == "total" else m[2][:-1], n)),
    (re.compile(r"^active_days_(\d+)d$"), lambda m, n: _active_days(m[1], n)),
    (re.compile(r"^days_since_last_(.+)$"),
     lambda m, n: _days_since(f"'{m[1].replace('_', ' ')}' event", n)),
    (re.compile(r"^(.+)_events_change_(\d+)d$"),
     lambda m, n: _change(f"'{m[1].replace('_', ' ')}' events", m[2])),
    (re.compile(r"^(.+)_events_(\d+d|total)$"),
     lambda m, n: _events(m[1].replace("_", " "), None if m[2] == "total" else m[2][:-1], n)),
)


@functools.lru_cache(maxsize=4096)
def _template(name: str) -> Template | None:
    """The sentence template for a feature name (cached: names repeat for every customer)."""
    if name in TEMPLATES:
        return TEMPLATES[name]
    for pattern, factory in PATTERNS:
        match = pattern.match(name)
        if match:
            return factory(match, name)
    return None


def _generic(name: str, info: Mapping[str, Any], value: Any, typical: float | None) -> str:
    description = str(info.get("description") or name.replace("_", " "))
    description = description[0].upper() + description[1:]
    unit = str(info.get("unit") or "")
    if isinstance(value, str):
        return f"{description}: {value}."
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{description}: never / not recorded."
    fmt = {
        "days": lambda v: f"{_num(v)} days",
        "months": lambda v: f"{_num(v, digits=1)} months",
        "currency": _money,
        "ratio": _pct,
        "share": _pct,
        "flag": lambda v: "yes" if v >= 0.5 else "no",
        "count": lambda v: _num(v, digits=1),
        "per_day": lambda v: f"{_num(v, digits=2)} per day",
    }.get(unit, lambda v: _num(v, digits=2))
    text = f"{description}: {fmt(float(value))}"
    if typical is not None and unit != "flag":
        text += f"; retained customers typically {fmt(typical)}"
    return text + "."


def reason_text(name: str, value: Any, *, info: Mapping[str, Any] | None = None,
                reference: Reference | None = None) -> str:
    """One sentence explaining why ``name`` = ``value`` raises this customer's churn risk.

    ``info`` is the feature's entry in the bundle (description, unit and, in
    bundles that have them, the sentence spec); ``reference`` maps feature
    names to their typical value among retained customers. Many values of one
    feature: `sentence_of`.
    """
    return sentence_of(name, info, reference or {})(value)


def _legacy_text(name: str, value: Any, *, info: Mapping[str, Any] | None,
                 reference: Reference) -> str:
    """The sentence of a bundle trained before sentence specs: name templates, else generic."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    template = _template(name) if numeric and math.isfinite(float(value)) else None
    if template is not None:
        sentence = template(float(value), reference)
        if sentence:
            return sentence
    return _generic(name, info or {}, value, _typical(reference, name))


def reason_kind(info: Mapping[str, Any] | None) -> str:
    """What a reason means (`features.reasons.REASON_KINDS`); "other" for older bundles."""
    return str((info or {}).get("reason_kind") or "other")


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MONTH_STARTS = (1, 32, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335)


def _day_of_year(value: float) -> str:
    day = min(max(round(value), 1), 365)
    month = max(i for i, start in enumerate(_MONTH_STARTS) if start <= day)
    into = day - _MONTH_STARTS[month]
    return f"{('early', 'mid', 'late')[min(into // 10, 2)]} {_MONTHS[month]}"


def _short(value: float, digits: int) -> str:
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _unit(value: float, one: str, many: str, digits: int = 0) -> str:
    shown = _short(value, digits)
    return f"{shown} {one if shown == '1' else many}"


FORMATS: dict[str, Callable[[float], str]] = {
    "number": lambda v: _short(v, 2),
    "count": lambda v: _short(v, 1),
    "rate": lambda v: _short(v, 2),
    "days": lambda v: _unit(v, "day", "days"),
    "months": lambda v: _unit(v, "month", "months", 1),
    "money": _money,
    "percent": _pct,
    "multiple": lambda v: f"{v:.1f} times",
    "flag": lambda v: "yes" if v >= 0.5 else "no",
    "day_of_year": _day_of_year,
}


#: the decimals each format shows: a value that shows as 0 or 1 reads as the zero or one case
#: ("Subscription ended today", not "ended 0 days ago")
SHOWN_DIGITS: dict[str, int] = {"days": 0, "months": 1, "count": 1}


def _times(value: float) -> str:
    shown = _short(value, 1)
    return {"1": "once", "2": "twice"}.get(shown, f"{shown} times")


def _counted_noun(value: float, noun: Sequence[str], digits: int = 1) -> str:
    shown = _short(value, digits)
    return f"{shown} {noun[0] if shown == '1' else noun[1]}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


class Sentence:
    """A feature's sentence spec (`features.reasons`) made ready for one reference.

    Batch scoring renders a sentence for every distinct value of every reason
    feature, so what does not depend on the value (the format, the typical
    clause, the level clauses, the placeholders each case uses) is worked out
    once here and `render` fills in only what the value's case needs.
    """

    def __init__(self, spec: Mapping[str, Any], *, typical: float | None = None,
                 levels: Mapping[str, float] | None = None, overall: float | None = None
                 ) -> None:
        self.text_only = spec.get("format") == "text"
        self.fmt = FORMATS.get(str(spec.get("format", "number")), FORMATS["number"])
        self.noun = tuple(spec.get("noun") or ("", ""))
        self.digits = 2 if spec.get("format") == "rate" else 1
        self.shown_digits = SHOWN_DIGITS.get(str(spec.get("format")))
        self.missing = _finish(str(spec["missing"]))
        self.some = str(spec["some"])
        self.clause = ""
        if typical is not None and spec.get("typical"):
            self.clause = str(spec["typical"]).format(typical=self.fmt(typical))
        self.cases = {case: _parsed(str(spec.get(case) or spec["some"]))
                      for case in ("zero", "one", "negative", "some")}
        #: the cases' wording when the companion feature's value is known
        self.with_cases = {case: _parsed(str(spec.get(f"{case}_with") or spec["some_with"]))
                           for case in ("zero", "one", "negative", "some")
                           if spec.get("some_with")}
        self.level_clauses: dict[str, str] = {}
        if spec.get("levels") and levels and overall:
            for level, rate in levels.items():
                compare = ("more often" if rate > overall * 1.05 else
                           "less often" if rate < overall * 0.95 else "about as often as others")
                self.level_clauses[level] = "; " + str(spec["levels"]).format(
                    level_compare=compare, level_rate=_pct(rate), overall_rate=_pct(overall))

    def render(self, value: Any, companion: Any = None) -> str:
        """The sentence for one value (missing, a category level or a number).

        ``companion`` is the value of the feature named by the spec's ``with``
        (this month's count beside a change), when the spec reads one.
        """
        if _missing(value):
            return self.missing
        if isinstance(value, str) or self.text_only:
            level = str(value)
            return _finish(self.some.format(value=level.replace("_", " "))
                           + self.level_clauses.get(level, ""))
        number = float(value)
        shown = number if self.shown_digits is None else round(number, self.shown_digits)
        case = ("zero" if shown == 0 else "one" if shown == 1 else
                "negative" if number < 0 else "some")
        if self.with_cases and not _missing(companion) and not isinstance(companion, str):
            template, names = self.with_cases[case]
            other = float(companion)
            fields = {name: _WITH_FIELDS[name](self, number, other) if name in _WITH_FIELDS
                      else _FIELDS[name](self, number) for name in names}
        else:
            template, names = self.cases[case]
            fields = {name: _FIELDS[name](self, number) for name in names}
        return _finish(template.format(**fields) + self.clause)


_FIELDS: dict[str, Callable[[Sentence, float], str]] = {
    "value": lambda s, v: s.fmt(v),
    "abs": lambda s, v: s.fmt(abs(v)),
    "times": lambda s, v: _times(v),
    "abs_times": lambda s, v: _times(abs(v)),
    "count": lambda s, v: _counted_noun(v, s.noun, s.digits),
    "abs_count": lambda s, v: _counted_noun(abs(v), s.noun),
    "abs_noun": lambda s, v: _counted_noun(abs(v), s.noun).split(" ", 1)[-1],
}


#: placeholders about the companion feature: its value, and the value before the change
#: (a change is the companion's value minus the value it is compared with)
_WITH_FIELDS: dict[str, Callable[[Sentence, float, float], str]] = {
    "with_value": lambda s, v, c: s.fmt(c),
    "with_count": lambda s, v, c: _counted_noun(c, s.noun) if c != 0 else f"no {s.noun[1]}",
    "before_value": lambda s, v, c: s.fmt(c - v),
}


def _parsed(template: str) -> tuple[str, tuple[str, ...]]:
    names = tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)
    unknown = sorted(set(names) - set(_FIELDS) - set(_WITH_FIELDS))
    if unknown:
        raise ValueError(f"sentence {template!r}: unknown placeholder(s) {unknown}")
    return template, names


def render_sentence(spec: Mapping[str, Any], value: Any, *, typical: float | None = None,
                    levels: Mapping[str, float] | None = None,
                    overall: float | None = None) -> str:
    """Fill a feature's sentence spec for one value (see `Sentence`).

    The case is chosen by the value (missing, zero, one, negative, any other);
    the typical-value clause is added when ``typical`` is known, the level
    clause of a category when its churn rate among training customers is.
    """
    return Sentence(spec, typical=typical, levels=levels, overall=overall).render(value)


def sentence_of(name: str, info: Mapping[str, Any] | None, reference: Reference
                ) -> Callable[[Any], str]:
    """``value -> sentence`` for one feature: the bundle's spec, or the older fallback."""
    if info and info.get("sentence"):
        spec = info["sentence"]
        return Sentence(spec, typical=_typical(reference, spec.get("typical_of", name)),
                        levels=info.get("level_churn_rate"),
                        overall=info.get("churn_rate")).render
    return functools.partial(_legacy_text, name, info=info, reference=reference)


def companion_of(info: Mapping[str, Any] | None) -> str | None:
    """The feature whose value a feature's sentence also reads (its spec's ``with``)."""
    spec = (info or {}).get("sentence") or {}
    return spec.get("with") if spec.get("some_with") else None


def _finish(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
