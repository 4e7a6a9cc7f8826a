"""Point-in-time correctness: rows dated at or after T never change features as of T."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import validate_tables
from features.dataset import Dataset
from features.generate import generate_dataset
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-04-10 06:30")  # not midnight: the day of T is cut in two


@pytest.fixture(scope="module")
def base() -> Dataset:
    data = generate_dataset(customers=120, seed=5, end=date(2024, 12, 31), kind="mixed")
    return validate_tables(data.tables).dataset


@pytest.fixture(scope="module")
def expected(base) -> pd.DataFrame:
    return build_features(base, as_of=AS_OF)


# offsets from T: zero (exactly T) must be excluded as well as anything later
offsets = st.one_of(st.just(pd.Timedelta(0)),
                    st.integers(0, 400 * 86_400).map(lambda s: pd.Timedelta(seconds=s)))
statuses = st.sampled_from(["completed", "returned", "cancelled", "unclaimed"])
event_types = st.sampled_from(["session", "product_view", "support_ticket", "brand_new_type"])
plans = st.sampled_from(["basic", "pro", "business", "platinum"])


@st.composite
def future_rows(draw, ids: list[str]):
    """Rows for existing or brand-new customers, all dated at or after T."""
    customer = st.one_of(st.sampled_from(ids), st.just("NEW-1"), st.just("NEW-2"))
    n_orders = draw(st.integers(0, 6))
    n_events = draw(st.integers(0, 10))
    n_subs = draw(st.integers(0, 3))
    orders = pd.DataFrame({
        "order_id": [f"future-{i}" for i in range(n_orders)],
        "customer_id": [draw(customer) for _ in range(n_orders)],
        "ordered_at": [AS_OF + draw(offsets) for _ in range(n_orders)],
        "amount": [draw(st.floats(0, 1e4)) for _ in range(n_orders)],
        "status": [draw(statuses) for _ in range(n_orders)],
        "discount": [draw(st.floats(0, 50)) for _ in range(n_orders)],
        "items": [float(draw(st.integers(1, 9))) for _ in range(n_orders)],
    })
    events = pd.DataFrame({
        "customer_id": [draw(customer) for _ in range(n_events)],
        "occurred_at": [AS_OF + draw(offsets) for _ in range(n_events)],
        "event_type": [draw(event_types) for _ in range(n_events)],
        "value": [draw(st.one_of(st.just(np.nan), st.floats(0, 100))) for _ in range(n_events)],
    })
    starts = [AS_OF + draw(offsets) for _ in range(n_subs)]
    subscriptions = pd.DataFrame({
        "customer_id": [draw(customer) for _ in range(n_subs)],
        "started_at": starts,
        "ended_at": [s + pd.Timedelta(days=draw(st.integers(1, 300))) if draw(st.booleans())
                     else pd.NaT for s in starts],
        "plan": [draw(plans) for _ in range(n_subs)],
        "mrr": [draw(st.sampled_from([19.0, 49.0, 149.0, 999.0])) for _ in range(n_subs)],
    })
    new_customers = pd.DataFrame({
        "customer_id": ["NEW-1", "NEW-2"],
        "signup_at": [AS_OF + draw(offsets), pd.NaT],
        "region": ["atlantis", "atlantis"],
        "acquisition_channel": ["tv", "tv"],
        "age_band": ["99+", "99+"],
        "preferred_payment": ["gold", "gold"],
    })
    end_active = draw(st.booleans())
    return orders, events, subscriptions, new_customers, end_active


def _append(base: Dataset, rows) -> Dataset:
    orders, events, subscriptions, new_customers, end_active = rows
    subs = base.subscriptions.copy()
    if end_active:
        # a subscription still running at T is ended later: only known after T
        running = subs["ended_at"].isna() | (subs["ended_at"] >= AS_OF)
        subs.loc[running, "ended_at"] = AS_OF + pd.Timedelta(days=3)
    return replace(
        base,
        customers=pd.concat([base.customers, new_customers], ignore_index=True),
        orders=pd.concat([base.orders, orders], ignore_index=True),
        events=pd.concat([base.events, events], ignore_index=True),
        subscriptions=pd.concat([subs, subscriptions], ignore_index=True),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rows_at_or_after_as_of_change_nothing(base, expected, data):
    rows = data.draw(future_rows(sorted(base.customers["customer_id"])))
    changed = build_features(_append(base, rows), as_of=AS_OF)
    pd.testing.assert_frame_equal(changed, expected)


def test_rows_before_as_of_do_change_features(base, expected):
    """The property above could pass vacuously; a row just before T must show up."""
    customer = expected.index[0]
    order = pd.DataFrame({"order_id": ["past"], "customer_id": [customer],
                          "ordered_at": [AS_OF - pd.Timedelta(seconds=1)], "amount": [10.0],
                          "status": ["completed"], "discount": [0.0], "items": [1.0]})
    changed = build_features(replace(base, orders=pd.concat([base.orders, order])), as_of=AS_OF)
    assert changed.at[customer, "completed_orders_total"] == (
        expected.at[customer, "completed_orders_total"] + 1)
    assert changed.at[customer, "days_since_last_order"] == pytest.approx(1 / 86_400)


def test_recency_never_exceeds_tenure(expected):
    tenure = expected["tenure_days"]
    for column in ("days_since_last_order", "days_since_first_order", "days_since_last_event"):
        known = expected[column].notna()
        assert (expected.loc[known, column] <= tenure[known] + 1e-9).all(), column
        assert (expected.loc[known, column] >= 0).all(), column
