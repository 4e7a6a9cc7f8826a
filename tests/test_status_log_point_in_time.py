"""Orders carry the status they had at each date once a database logs status changes.

A database source reads orders with their current status and the log of status
changes (`Dataset.order_status_changes`). Features as of T must not see a return
recorded at or after T, for one score and for each training snapshot, and a model
trained as of T must be the same before and after a later return. Pure frames:
generated data with a hand-made log, no database.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from features.dataset import Dataset
from features.io import read_dataset
from features.pipeline import build_features
from features.snapshots import build_training_set

#: when the returns are recorded (the generated data ends on 2026-06-30)
RECORDED = pd.Timestamp("2026-03-10 14:00")


@pytest.fixture(scope="module")
def dataset(generated_ecommerce) -> Dataset:
    return read_dataset(generated_ecommerce(customers=300, seed=41)).dataset


def returned_later(dataset: Dataset, *, recorded: pd.Timestamp = RECORDED,
                   placed_before: pd.Timestamp = pd.Timestamp("2026-02-01"),
                   n: int = 40) -> tuple[Dataset, pd.Index]:
    """The dataset after ``n`` completed orders placed before ``placed_before`` were returned
    at ``recorded`` (current status ``returned``, the change logged), and those orders."""
    orders = dataset.orders
    assert orders is not None
    chosen = orders[(orders["status"] == "completed")
                    & (orders["ordered_at"] < placed_before)].groupby("customer_id").tail(1)
    chosen = chosen.head(n)
    assert len(chosen) == n, "the generated data has enough completed orders to return"
    now = orders.copy()
    now.loc[chosen.index, "status"] = "returned"
    log = pd.DataFrame({
        "order_id": chosen["order_id"].to_numpy(dtype=object),
        "customer_id": chosen["customer_id"].to_numpy(dtype=object),
        "status": "returned", "from_status": "completed",
        "changed_at": pd.Series([recorded] * n, dtype="datetime64[ns]"),
        "change_id": range(1, n + 1)})
    return replace(dataset, orders=now, order_status_changes=log), pd.Index(chosen["order_id"])


def test_a_return_recorded_after_as_of_changes_no_feature(dataset):
    after, _ = returned_later(dataset)
    before_return = pd.Timestamp("2026-03-01")
    pd.testing.assert_frame_equal(build_features(after, as_of=before_return),
                                  build_features(dataset, as_of=before_return),
                                  obj="features as of a moment before the returns were recorded")
    # exactly at the moment it is recorded, the return is not known yet (rows at T excluded)
    pd.testing.assert_frame_equal(build_features(after, as_of=RECORDED),
                                  build_features(dataset, as_of=RECORDED))


def test_a_return_recorded_before_as_of_counts_and_gaps_match_a_fresh_read(dataset):
    """After the moment the returns count, and every feature (gaps between completed orders
    included) equals features of the same statuses without a log."""
    after, _ = returned_later(dataset)
    later = pd.Timestamp("2026-04-01")
    with_log = build_features(after, as_of=later)
    as_stored = build_features(replace(after, order_status_changes=None), as_of=later)
    pd.testing.assert_frame_equal(with_log, as_stored)
    unreturned = build_features(dataset, as_of=later)
    assert (with_log["returned_orders_total"] - unreturned["returned_orders_total"]).sum() == 40
    # and before it, a dataset whose log undoes the returns equals the original throughout
    earlier = pd.Timestamp("2026-02-15")
    pd.testing.assert_frame_equal(build_features(after, as_of=earlier),
                                  build_features(dataset, as_of=earlier))


def test_an_order_returned_then_kept_has_each_status_in_its_time(dataset):
    """completed → returned (10 March) → completed (20 March): returned only in between."""
    after, orders = returned_later(dataset, n=5)
    log = after.order_status_changes
    assert log is not None and after.orders is not None
    back = log.assign(status="completed", from_status="returned",
                      changed_at=pd.Timestamp("2026-03-20"), change_id=log["change_id"] + 100)
    now = after.orders.copy()
    now.loc[now["order_id"].isin(orders), "status"] = "completed"
    twice = replace(after, orders=now, order_status_changes=pd.concat([log, back],
                                                                      ignore_index=True))
    between = pd.Timestamp("2026-03-15")
    pd.testing.assert_frame_equal(build_features(twice, as_of=between),
                                  build_features(after, as_of=between))
    for moment in (pd.Timestamp("2026-03-01"), pd.Timestamp("2026-04-01")):
        pd.testing.assert_frame_equal(build_features(twice, as_of=moment),
                                      build_features(dataset, as_of=moment))


def test_training_as_of_t_is_the_same_before_and_after_a_later_return(dataset):
    as_of = pd.Timestamp("2026-03-01")
    after, _ = returned_later(dataset)
    pd.testing.assert_frame_equal(build_training_set(after, as_of=as_of).frame,
                                  build_training_set(dataset, as_of=as_of).frame,
                                  obj="a training set as of a moment before the returns")


def test_each_training_snapshot_sees_the_statuses_of_its_own_date(dataset):
    """Trained after the returns: snapshots before the moment they were recorded see the
    orders completed, later ones returned (the labels count what is known at as_of)."""
    as_of = pd.Timestamp("2026-06-30")
    after, _ = returned_later(dataset)
    logged = build_training_set(after, as_of=as_of, step_days=30)
    stored = build_training_set(replace(after, order_status_changes=None), as_of=as_of,
                                step_days=30)
    original = build_training_set(dataset, as_of=as_of, step_days=30)
    assert logged.snapshot_dates == stored.snapshot_dates == original.snapshot_dates
    early = [d for d in logged.snapshot_dates if d <= RECORDED]
    late = [d for d in logged.snapshot_dates if d > RECORDED]
    assert early and late, logged.snapshot_dates
    # the business-wide season is measured once, at as_of (`features.business`), from the
    # statuses known then: the same in every snapshot, so compared below with `stored`
    season = [c for c in logged.feature_columns if c.startswith("business_season")]
    assert season, "the generated business has a season"
    features = [c for c in logged.feature_columns if c not in season]
    pd.testing.assert_frame_equal(logged.frame[season], stored.frame[season])
    for date in early:
        rows = logged.frame[logged.frame["snapshot_at"] == date].reset_index(drop=True)
        was = original.frame[original.frame["snapshot_at"] == date].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows[features], was[features],
                                      obj=f"features of the snapshot at {date:%Y-%m-%d}")
    for date in late:
        rows = logged.frame[logged.frame["snapshot_at"] == date].reset_index(drop=True)
        now = stored.frame[stored.frame["snapshot_at"] == date].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows[features], now[features])
    # the labels are those of the statuses known at as_of (returned)
    pd.testing.assert_frame_equal(logged.frame[["churned", "clv_target"]],
                                  stored.frame[["churned", "clv_target"]])
    assert not logged.frame[features].equals(stored.frame[features]), \
        "the snapshots before the returns must differ from reading today's statuses"
