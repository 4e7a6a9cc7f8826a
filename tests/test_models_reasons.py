"""Column-wise reasons (`models.reasons`) against the per-customer definition."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.reasons import ReasonTable, plain, reason_table, top_features

NAMES = ("days_since_last_order", "return_rate", "channel", "orders_90d")
KINDS = ("order_gap", "returns", "attribute", "order_frequency")


def _text_of(name, value):
    return f"{name} is {value!r} ✓"


def _frame(rng, n):
    return pd.DataFrame({
        "days_since_last_order": rng.integers(0, 5, n).astype(float),
        "return_rate": rng.choice([0.0, -0.0, 0.25, np.nan, np.inf], n),
        "channel": pd.Series(rng.choice(["web", "app", None], n), dtype=object),
        "orders_90d": rng.integers(0, 3, n),
    })


def _expected(contributions, frame, top_k):
    """The definition, one customer at a time: positive contributions, strongest first."""
    rows = []
    for i, row in enumerate(contributions[:, :-1]):
        order = sorted(range(len(row)), key=lambda j: -row[j])[:top_k]
        reasons = []
        for j in order:
            if row[j] <= 0:
                break
            value = plain(frame.iloc[i, j])
            reasons.append({"feature": NAMES[j], "value": value, "contribution": float(row[j]),
                            "text": _text_of(NAMES[j], value), "kind": KINDS[j]})
        rows.append(reasons)
    return rows


def test_table_rows_and_json_match_the_per_customer_definition():
    rng = np.random.default_rng(3)
    frame = _frame(rng, 400)
    contributions = rng.normal(size=(400, len(NAMES) + 1))
    contributions[:40, :-1] = -1.0          # nothing raises the risk: no reasons
    contributions[40:60, 1] = contributions[40:60, 0]  # ties keep feature order

    def column_values(j, rows):
        return frame.iloc[:, j].to_numpy()[rows]

    table = reason_table(contributions, column_values, names=NAMES, text_of=_text_of, top_k=3,
                         kinds=KINDS)
    expected = _expected(contributions, frame, 3)
    assert table.rows() == expected
    assert table.json().tolist() == [json.dumps(r, ensure_ascii=False) for r in expected]
    assert table.rows()[:40] == [[]] * 40 and (table.json()[:40] == "[]").all()


def test_sentences_that_read_a_companion_are_formatted_per_pair_of_values():
    rng = np.random.default_rng(5)
    frame = _frame(rng, 300)
    contributions = rng.normal(size=(300, len(NAMES) + 1))
    companions = (3, -1, -1, -1)  # days_since_last_order's sentence also reads orders_90d

    def column_values(j, rows):
        return frame.iloc[:, j].to_numpy()[rows]

    def text_of(name, value, *companion):
        return _text_of(name, value) + (f" with {companion[0]!r}" if companion else "")

    table = reason_table(contributions, column_values, names=NAMES, text_of=text_of, top_k=3,
                         kinds=KINDS, companions=companions)
    expected = _expected(contributions, frame, 3)
    for i, reasons in enumerate(expected):
        for reason in reasons:
            if reason["feature"] == NAMES[0]:
                reason["text"] += f" with {plain(frame.iloc[i, 3])!r}"
    assert table.rows() == expected
    assert table.json().tolist() == [json.dumps(r, ensure_ascii=False) for r in expected]
    assert any(" with " in r["text"] for rs in expected for r in rs)


def test_negative_zero_and_zero_keep_their_own_text():
    frame = pd.DataFrame({name: [0.0, -0.0, 0.0] for name in NAMES})
    contributions = np.array([[0.0, 1.0, 0.0, 0.0, 0.5]] * 3)
    table = reason_table(contributions, lambda j, rows: frame.iloc[:, j].to_numpy()[rows],
                         names=NAMES, text_of=_text_of, top_k=2)
    assert table.text[:, 0].tolist() == [_text_of("return_rate", v) for v in (0.0, -0.0, 0.0)]
    assert '"value": -0.0' in table.json()[1] and '"value": 0.0' in table.json()[0]


def test_top_features_are_a_prefix_and_matches_reads_the_top_slots():
    contributions = np.array([[0.3, -0.1, 0.2, 0.0, 9.0], [-1.0, -2.0, -3.0, -4.0, 9.0]])
    feature, gain = top_features(contributions, 3)
    assert feature.tolist() == [[0, 2, -1], [-1, -1, -1]]
    assert gain.tolist() == [[0.3, 0.2, 0.0], [0.0, 0.0, 0.0]]
    table = reason_table(contributions, lambda j, rows: np.zeros(len(rows)), names=NAMES,
                         text_of=_text_of, top_k=3)
    wanted = np.array([False, False, True, False])
    assert table.matches(wanted, 2).tolist() == [True, False]
    assert table.matches(wanted, 1).tolist() == [False, False]
    empty = ReasonTable.empty(2, NAMES)
    assert empty.rows() == [[], []] and empty.json().tolist() == ["[]", "[]"]
    assert empty.matches(wanted, 3).tolist() == [False, False]


def test_reasons_without_kinds_are_other_and_kinds_must_fit_the_names():
    contributions = np.array([[0.3, -0.1, 0.2, 0.0, 9.0]])
    table = reason_table(contributions, lambda j, rows: np.zeros(len(rows)), names=NAMES,
                         text_of=_text_of, top_k=3)
    assert [r["kind"] for r in table.rows()[0]] == ["other", "other"]
    kinded = reason_table(contributions, lambda j, rows: np.zeros(len(rows)), names=NAMES,
                          text_of=_text_of, top_k=3, kinds=KINDS)
    assert kinded.kinds_wanted(["attribute"]).tolist() == [False, False, True, False]
    assert kinded.matches(kinded.kinds_wanted(["attribute"]), 2).tolist() == [True]
    with pytest.raises(ValueError, match="3 reason kinds for 4 features"):
        reason_table(contributions, lambda j, rows: np.zeros(len(rows)), names=NAMES,
                     text_of=_text_of, top_k=3, kinds=KINDS[:3])


def test_plain_values_are_what_the_api_reason_carries():
    assert [plain(v) for v in (np.int64(3), True, np.float32(0.5), np.nan, np.inf, None,
                               pd.NA, "web")] == [3.0, 1.0, 0.5, None, None, None, None, "web"]
