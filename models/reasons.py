"""Top-k reasons from exact contributions, column-wise, for one customer or a million.

A customer's reasons are the features with the largest positive contributions,
strongest first, each with its value and one sentence. Batch scoring writes
them for every customer, so they are built as ``(customers, k)`` matrices: the
sentence (and its JSON text) is formatted once per distinct value of a
feature, not once per customer, which is most of the cost of explaining a
large batch once the contributions themselves are fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring  # what json.dumps uses for str
from typing import Any

import numpy as np
import pandas as pd

#: the values of feature ``j`` at row positions ``rows`` (a 1-d array, any dtype)
ColumnValues = Callable[[int, np.ndarray], np.ndarray]
#: the sentence for feature ``name`` at ``value`` (and, for features whose sentence reads
#: a companion feature, at the companion's value: ``text_of(name, value, companion)``)
TextOf = Callable[..., str]


def plain(value: Any) -> float | str | None:
    """A feature value as a reason carries it: a number, a text, or None (missing, NaN, ±inf).

    Numbers (flags and counts included) are floats, as in the API's ``Reason``.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


def top_features(contributions: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``top_k`` largest positive contributions per row, and their values.

    ``contributions`` has one row per customer and the base value last. Slots
    without a positive contribution hold feature -1 and contribution 0; the
    reasons are always a prefix of the row (strongest first, ties in feature
    order).
    """
    gains = np.asarray(contributions, dtype=float)[:, :-1]
    k = max(0, min(top_k, gains.shape[1]))
    strongest = np.argsort(-gains, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(gains, strongest, axis=1)
    raising = np.cumprod(top > 0, axis=1).astype(bool)
    return np.where(raising, strongest, -1), np.where(raising, top, 0.0)


@dataclass(frozen=True)
class ReasonTable:
    """Top-k reasons of many customers as ``(customers, k)`` matrices.

    ``feature`` holds feature positions in ``names`` (-1: no reason in that
    slot); ``value``, ``contribution`` and ``text`` the reason's value,
    contribution and sentence; ``kinds`` what each feature means as a reason
    (aligned with ``names``). ``rows()`` gives the reasons as dicts, ``json()``
    the same as JSON text, one string per customer.
    """

    names: tuple[str, ...]
    feature: np.ndarray
    value: np.ndarray
    contribution: np.ndarray
    text: np.ndarray
    json_head: np.ndarray
    json_tail: np.ndarray
    kinds: tuple[str, ...] = ()

    @classmethod
    def empty(cls, customers: int, names: Sequence[str],
              kinds: Sequence[str] | None = None) -> ReasonTable:
        """No reasons for any of ``customers`` (nothing explained)."""
        blank = np.empty((customers, 0), dtype=object)
        return cls(names=tuple(names), feature=np.empty((customers, 0), dtype=np.int64),
                   value=blank, contribution=np.empty((customers, 0)), text=blank,
                   json_head=blank, json_tail=blank, kinds=_kinds(names, kinds))

    def rows(self) -> list[list[dict[str, Any]]]:
        """``[{feature, value, contribution, text, kind}, ...]`` per customer, strongest first."""
        out: list[list[dict[str, Any]]] = []
        names, kinds = self.names, _kinds(self.names, self.kinds)
        for features, values, gains, texts in zip(
            self.feature.tolist(), self.value.tolist(), self.contribution.tolist(),
            self.text.tolist(), strict=True,
        ):
            out.append([
                {"feature": names[j], "value": v, "contribution": g, "text": t, "kind": kinds[j]}
                for j, v, g, t in zip(features, values, gains, texts, strict=True) if j >= 0
            ])
        return out

    def json(self) -> np.ndarray:
        """Each customer's reasons as JSON text: ``json.dumps(rows()[i], ensure_ascii=False)``."""
        n, k = self.feature.shape
        texts = np.full(n, "[]", dtype=object)
        if k == 0:
            return texts
        present = self.feature >= 0
        items = np.full((n, k), "", dtype=object)
        gains = [float.__repr__(g) for g in self.contribution[present].tolist()]
        items[present] = self.json_head[present] + np.array(gains, dtype=object) \
            + self.json_tail[present]
        joined = items[:, 0].copy()
        for slot in range(1, k):
            more = present[:, slot]
            joined[more] = joined[more] + ", " + items[more, slot]
        some = present[:, 0]
        texts[some] = "[" + joined[some] + "]"
        return texts

    def kinds_wanted(self, wanted: Sequence[str]) -> np.ndarray:
        """Per feature position: is its reason kind one of ``wanted``?"""
        return np.isin(np.array(_kinds(self.names, self.kinds), dtype=object),
                       np.array(list(wanted), dtype=object))

    def matches(self, feature_wanted: np.ndarray, within: int) -> np.ndarray:
        """Per customer: is a feature with ``feature_wanted[j]`` among the top ``within``?"""
        top = self.feature[:, :within]
        return np.asarray((feature_wanted[np.where(top >= 0, top, 0)] & (top >= 0)).any(axis=1))


def reason_table(
    contributions: np.ndarray, column_values: ColumnValues, *, names: Sequence[str],
    text_of: TextOf, top_k: int, kinds: Sequence[str] | None = None,
    companions: Sequence[int] | None = None,
) -> ReasonTable:
    """The top-k reasons of every row of ``contributions`` (see `ReasonTable`).

    ``kinds`` gives each feature's reason kind (default "other" for all);
    ``companions`` the position of the feature whose value its sentence also
    reads (-1: none), e.g. this month's count beside a month-on-month change:
    such sentences are formatted once per distinct pair of values.
    """
    kinds = _kinds(names, kinds)
    feature, gain = top_features(contributions, top_k)
    shape = feature.shape
    value = np.full(shape, None, dtype=object)
    text = np.full(shape, None, dtype=object)
    head = np.full(shape, "", dtype=object)
    tail = np.full(shape, "", dtype=object)
    for j in np.unique(feature[feature >= 0]).tolist():
        rows, slots = np.nonzero(feature == j)
        codes, distinct = _distinct(np.asarray(column_values(j, rows)))
        name = names[j]
        name_json = encode_basestring(name)
        values = [plain(v) for v in distinct]
        companion = companions[j] if companions else -1
        if companion < 0:
            text_codes, sentences = codes, [text_of(name, v) for v in values]
        else:
            other_codes, other = _distinct(np.asarray(column_values(companion, rows)))
            text_codes, pairs = _factorized(codes.astype(np.int64) * len(other) + other_codes)
            others = [plain(v) for v in other]
            sentences = [text_of(name, values[p // len(other)], others[p % len(other)])
                         for p in pairs.tolist()]
        value[rows, slots] = _objects(values)[codes]
        text[rows, slots] = _objects(sentences)[text_codes]
        head[rows, slots] = _objects([
            f'{{"feature": {name_json}, "value": {_json_value(v)}, '
            '"contribution": ' for v in values])[codes]
        kind_json = encode_basestring(kinds[j])
        tail[rows, slots] = _objects([
            f', "text": {encode_basestring(s)}, "kind": {kind_json}}}'
            for s in sentences])[text_codes]
    return ReasonTable(names=tuple(names), feature=feature, value=value, contribution=gain,
                       text=text, json_head=head, json_tail=tail, kinds=kinds)


def _kinds(names: Sequence[str], kinds: Sequence[str] | None) -> tuple[str, ...]:
    """Each feature's reason kind; "other" for all when a bundle has none."""
    if not kinds:
        return ("other",) * len(names)
    if len(kinds) != len(names):
        raise ValueError(f"{len(kinds)} reason kinds for {len(names)} features")
    return tuple(kinds)


def _json_value(value: float | str | None) -> str:
    """``json.dumps(value, ensure_ascii=False)`` for a `plain` value, without the encoder setup."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return float.__repr__(value)
    return encode_basestring(value)


def _factorized(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize`` of integers, without its overhead for the one row of a request by id."""
    if len(values) <= 1:
        return np.zeros(len(values), dtype=np.intp), values.copy()
    return pd.factorize(values)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, distinct values): floats by their bits, so -0.0 and 0.0 stay apart."""
    if len(values) <= 1:  # one row (a request by id): nothing to factorize
        return np.zeros(len(values), dtype=np.intp), (
            values.astype(np.float64) if values.dtype.kind == "f"
            else np.asarray(values, dtype=object))
    if values.dtype.kind == "f":
        codes, bits = pd.factorize(values.astype(np.float64).view(np.int64))
        return codes, np.asarray(bits, dtype=np.int64).view(np.float64)
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    return codes, np.asarray(distinct, dtype=object)


def _objects(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
