"""The real-data loaders on the shared files (skipped where the files are absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from training.realdata import STANDARD_SPLITS, default_data_dir, load_source, source_path


def _need(name: str) -> None:
    if not source_path(name).exists():
        pytest.skip(f"{source_path(name).name} is not in {default_data_dir()} (README: "
                    "Getting the real data)")


def test_cdnow_master_has_every_customer_and_row():
    _need("cdnow")
    loaded = load_source("cdnow")
    assert loaded.counts == {"rows": 69_659, "customers": 23_570, "orders": 69_659}
    orders = loaded.dataset.orders
    assert len(loaded.dataset.customers) == 23_570
    assert (orders["status"] == "completed").all()
    assert orders["ordered_at"].min() == pd.Timestamp("1997-01-01")
    assert orders["order_id"].is_unique


def test_online_retail_reports_guests_and_keeps_cancellations_apart():
    _need("online-retail")
    loaded = load_source("online-retail")
    counts = loaded.counts
    assert counts["rows"] == 541_909
    assert counts["guest_rows_dropped"] == 135_080
    assert counts["rows"] == counts["guest_rows_dropped"] + counts["customer_rows"]
    assert any("135,080" in note and "CustomerID" in note for note in loaded.notes)
    orders = loaded.dataset.orders
    assert counts["invoices"] == len(orders)
    cancelled = orders[orders["status"] == "cancelled"]
    assert len(cancelled) == counts["cancellation_invoices"] > 0
    assert cancelled["order_id"].str.startswith("C").all()
    assert (orders["amount"] >= 0).all()
    assert "country" in loaded.dataset.attribute_columns
    # the churn rate of the README split: no completed purchase in the holdout
    split = STANDARD_SPLITS["online-retail"]
    completed = orders[orders["status"] == "completed"]
    before = set(completed.loc[completed["ordered_at"] < split.as_of, "customer_id"])
    window = completed["ordered_at"].between(
        split.as_of, split.as_of + pd.Timedelta(days=split.horizon_days), inclusive="left")
    after = set(completed.loc[window, "customer_id"])
    assert len(before - after) / len(before) == pytest.approx(0.412, abs=0.001)


def test_unknown_source_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="cdnow, cdnow-sample, online-retail"):
        load_source("tafeng")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_source("cdnow:/nonexistent/cdnow.txt")
