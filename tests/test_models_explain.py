"""Reason sentences read as plain English for any count."""

from __future__ import annotations

import pytest

from models.explain import reason_text


@pytest.mark.parametrize(("feature", "value", "expected"), [
    ("returned_orders_90d", 1.0, "1 returned order in the last 90 days."),
    ("returned_orders_90d", 2.0, "2 returned orders in the last 90 days."),
    ("session_events_30d", 1.0, "1 'session' event in the last 30 days."),
    ("completed_orders_90d", 0.0, "None completed orders in the last 90 days."),
    ("unclaimed_orders_total", 1.0, "1 uncollected cash-on-delivery parcel so far."),
])
def test_counts_agree_with_their_nouns(feature, value, expected):
    assert reason_text(feature, value, info=None, reference={}) == expected
