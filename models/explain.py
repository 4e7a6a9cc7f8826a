"""Reason sentences: one feature's value, set against what retained customers look like.

A reason is a feature whose exact TreeSHAP contribution pushes a customer's churn
risk up. The sentence states the customer's value in business words and, where
the bundle knows it, the typical value among customers who stayed (the median
over the training snapshots), e.g. "No order for 94 days; retained customers
typically order every 21 days."

Sentences are built from the feature's `FeatureInfo` (description and unit,
stored in the bundle), so a new feature gets a readable sentence without code
here; the templates below only make the most common reasons read naturally.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
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


#: sentences for well-known features (by exact name); everything else is generic
TEMPLATES: dict[str, Template] = {
    "days_since_last_order": _days_since_last_order,
}

_WINDOW = re.compile(r"_(\d+)d$")


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

    ``info`` is the feature's description/unit (a `FeatureInfo` as a dict);
    ``reference`` maps feature names to their typical value among retained
    customers.
    """
    reference = reference or {}
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and math.isfinite(float(value)) and name in TEMPLATES:
        sentence = TEMPLATES[name](float(value), reference)
        if sentence:
            return sentence
    return _generic(name, info or {}, value, _typical(reference, name))
