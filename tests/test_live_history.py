"""Reading customers' history from the live database as of a moment, without a model.

SQLite always; PostgreSQL when CHURNLENS_TEST_POSTGRES_URL is set (a schema per
test). Rows are written through `LiveStore.ingest` with an injected clock, so
every change has a known time.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from features.dataset import statuses_at
from features.pipeline import build_features
from serving.ingest.store import LiveStore
from serving.live.history import HistoryReader


class Clock:
    """Naive UTC time the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_statuses_at_undoes_changes_logged_at_or_after_the_moment():
    orders = pd.DataFrame({"order_id": ["a", "b", "c", "d", "e"],
                           "status": ["returned", "completed", "returned", "cancelled",
                                      "returned"]})
    t = pd.Timestamp
    changes = pd.DataFrame({
        "order_id": ["a", "b", "b", "c", "d", "d", "e"],
        "status": ["returned", "returned", "completed", "returned", "completed", "cancelled",
                   "returned"],
        "from_status": ["completed", "completed", "returned", "completed", "unclaimed",
                        "completed", None],
        "changed_at": [t("2024-05-10"), t("2024-05-01"), t("2024-05-20"), t("2024-05-15"),
                       t("2024-05-02"), t("2024-05-03"), t("2024-05-30")],
        "change_id": [1, 2, 3, 4, 5, 6, 7]})
    at = statuses_at(orders, changes, as_of=t("2024-05-15"))
    assert at["status"].tolist() == [
        "returned",   # a: returned before the moment
        "returned",   # b: returned, then completed again after the moment
        "completed",  # c: returned exactly at the moment: not yet
        "cancelled",  # d: unclaimed -> completed -> cancelled, all before
        "completed",  # e: returned later, logged without a from_status: the default
    ]
    assert statuses_at(orders, changes, as_of=t("2024-04-01"))["status"].tolist() == [
        "completed", "completed", "completed", "unclaimed", "completed"]
    assert statuses_at(orders, changes.iloc[:0], as_of=t("2024-05-15")) is orders


@pytest.fixture
def database(backend, tmp_path, scratch_database, live_tables):
    with scratch_database(backend, tmp_path, prefix="livehist") as url:
        live_tables.create(url)
        yield url


def test_an_order_returned_after_as_of_counts_as_completed_then(database):
    clock = Clock(datetime(2024, 5, 1, 9, 0))
    store = LiveStore(database, clock=clock)
    try:
        store.ingest("customers", pd.DataFrame([{"customer_id": "c-1",
                                                 "signup_at": "2023-01-05"}]))
        placed = [{"order_id": f"o-{i}", "customer_id": "c-1", "ordered_at": at,
                   "amount": 50.0 + i, "status": "completed"}
                  for i, at in enumerate(["2024-03-01T10:00:00", "2024-04-01T10:00:00",
                                          "2024-04-20T10:00:00"])]
        store.ingest("orders", pd.DataFrame(placed))
        store.ingest("events", pd.DataFrame([{"customer_id": "c-1",
                                              "occurred_at": "2024-04-25T10:00:00",
                                              "event_type": "session"}]))
        reader = HistoryReader(store.engine)
        truth = reader.read(["c-1"])  # before any return: the known truth
        assert truth is not None

        clock.now = datetime(2024, 5, 10, 12, 0)  # o-1 is returned on 10 May
        returned = store.ingest("orders", pd.DataFrame([{**placed[1], "status": "returned"}]))
        assert returned.updated == 1

        moment = pd.Timestamp("2024-05-05")
        then = reader.read(["c-1"], as_of=moment)
        assert then is not None
        assert then.orders.set_index("order_id")["status"].to_dict() == {
            "o-0": "completed", "o-1": "completed", "o-2": "completed"}, \
            "an order returned after as_of was completed at as_of"
        pd.testing.assert_frame_equal(build_features(then, as_of=moment),
                                      build_features(truth, as_of=moment),
                                      obj="features as of a moment before the return")
        later = pd.Timestamp("2024-05-11")
        now = reader.read(["c-1"], as_of=later)
        assert now is not None and now.orders.set_index("order_id")["status"]["o-1"] == \
            "returned"
        features = build_features(now, as_of=later)
        assert features.loc["c-1", "returned_orders_total"] == 1
        assert build_features(then, as_of=later).loc["c-1", "returned_orders_total"] == 0
        # without a moment: what the database holds now
        current = reader.read(["c-1"])
        assert current is not None and \
            current.orders.set_index("order_id")["status"]["o-1"] == "returned"
    finally:
        store.close()


def test_a_batch_read_as_of_t_agrees_with_the_by_id_read_and_ignores_a_later_return(database):
    """`read_dataset(URL)` carries the status log: features as of T are the same before and
    after a return recorded after T, and equal the by-id read as of T; after the return's
    moment it counts."""
    from features.io import read_dataset

    clock = Clock(datetime(2024, 5, 1, 9, 0))
    store = LiveStore(database, clock=clock)
    try:
        ids = [f"c-{i}" for i in range(3)]
        store.ingest("customers", pd.DataFrame({"customer_id": ids, "signup_at": "2023-06-01"}))
        placed = pd.DataFrame({
            "order_id": [f"o-{c}-{i}" for c in range(3) for i in range(4)],
            "customer_id": [f"c-{c}" for c in range(3) for _ in range(4)],
            "ordered_at": [f"2024-0{1 + i}-1{c}T10:00:00" for c in range(3) for i in range(4)],
            "amount": 40.0, "status": "completed"})
        store.ingest("orders", placed)
        moment = pd.Timestamp("2024-05-05")
        before = build_features(read_dataset(database).dataset, as_of=moment)

        clock.now = datetime(2024, 5, 10, 12, 0)  # c-1 returns an April order on 10 May
        returned = placed[placed["order_id"] == "o-1-3"].assign(status="returned")
        assert store.ingest("orders", returned).updated == 1

        read = read_dataset(database).dataset
        assert read.order_status_changes is not None and len(read.order_status_changes) == 1
        assert read.orders is not None and \
            read.orders.set_index("order_id")["status"]["o-1-3"] == "returned"
        pd.testing.assert_frame_equal(build_features(read, as_of=moment), before,
                                      obj="batch features as of a moment before the return")
        by_id = HistoryReader(store.engine).read(["c-1"], as_of=moment)
        assert by_id is not None
        pd.testing.assert_frame_equal(build_features(by_id, as_of=moment),
                                      before.loc[["c-1"]], obj="by id and batch as of T")
        later = build_features(read, as_of=pd.Timestamp("2024-05-11"))
        assert later.loc["c-1", "returned_orders_total"] == 1
        assert later.loc[["c-0", "c-2"], "returned_orders_total"].tolist() == [0, 0]
    finally:
        store.close()


def test_refreshing_customers_reads_only_their_rows_through_the_indexes(database):
    """A refresh reads the changed customers' rows by the customer_id indexes, never a
    whole table (the plan of every statement the reader issues, and what it returns)."""
    from sqlalchemy import bindparam, text

    store = LiveStore(database, clock=Clock(datetime(2024, 5, 1, 9, 0)))
    try:
        ids = [f"c-{i}" for i in range(20)]
        store.ingest("customers", pd.DataFrame({"customer_id": ids}))
        store.ingest("events", pd.DataFrame({"customer_id": ids, "event_type": "session",
                                             "occurred_at": "2024-04-25T10:00:00"}))
        store.ingest("orders", pd.DataFrame({
            "order_id": [f"o-{i}" for i in range(20)], "customer_id": ids,
            "ordered_at": "2024-04-20T10:00:00", "amount": 10.0}))
        reader = HistoryReader(store.engine)
        read = reader.read(["c-3", "c-11"], as_of=pd.Timestamp("2024-05-01"))
        assert read is not None
        for name in ("customers", "orders", "events"):
            assert set(read.table(name)["customer_id"]) == {"c-3", "c-11"}, name
        statements = reader._statements()
        assert {"customers", "orders", "events", "order_status_changes"} <= set(statements)
        with store.engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:  # tiny tables: make the planner show whether an index path exists
                connection.execute(text("SET enable_seqscan = off"))
            for name, statement in statements.items():
                prefix = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
                explain = text(prefix + statement.text).bindparams(
                    bindparam("ids", expanding=True))
                plan = " ".join(str(row[-1]) for row in connection.execute(
                    explain, {"ids": ["c-3", "c-11"]}))
                if postgres:
                    assert "Seq Scan" not in plan and "Index" in plan, f"{name}: {plan}"
                else:
                    assert "USING INDEX" in plan or "USING PRIMARY KEY" in plan, f"{name}: {plan}"
    finally:
        store.close()
