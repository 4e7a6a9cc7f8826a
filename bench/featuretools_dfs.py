"""Featuretools deep feature synthesis on a churnlens dataset sample, for the features benchmark.

Runs in its own environment (Featuretools may not install beside pandas 3), so
it imports nothing from churnlens. Usage::

    FTPYTHON bench/featuretools_dfs.py SAMPLE_DIR AS_OF

Builds the comparable feature set with cutoff times at AS_OF: per customer,
count/sum/mean/std/max/min/time-since-last/time-since-first of orders and
events, counts and value sums per event type and per order status (where
primitives on interesting values), over all time and over 30/90/365-day
training windows (one DFS per window, which is how Featuretools expresses
windows). Prints one JSON line with the timing.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import featuretools as ft
import pandas as pd


def main() -> None:
    directory, as_of = Path(sys.argv[1]), pd.Timestamp(sys.argv[2])
    started = time.perf_counter()
    customers = pd.read_parquet(directory / "customers.parquet")
    orders = pd.read_parquet(directory / "orders.parquet")
    events = pd.read_parquet(directory / "events.parquet")
    for frame in (customers, orders, events):
        for column in frame.columns:
            if frame[column].dtype.kind in "OSUT" or str(frame[column].dtype) in ("str", "string"):
                frame[column] = frame[column].astype(object)
    read_seconds = time.perf_counter() - started

    es = ft.EntitySet("churn")
    es.add_dataframe(dataframe_name="customers", dataframe=customers, index="customer_id",
                     time_index="signup_at",
                     logical_types={c: "Categorical" for c in customers.columns
                                    if c not in ("customer_id", "signup_at")})
    es.add_dataframe(dataframe_name="orders", dataframe=orders, index="order_id",
                     time_index="ordered_at", logical_types={"status": "Categorical",
                                                             "customer_id": "Categorical"})
    es.add_dataframe(dataframe_name="events", dataframe=events, index="event_id",
                     make_index=True, time_index="occurred_at",
                     logical_types={"event_type": "Categorical", "customer_id": "Categorical"})
    es.add_relationship("customers", "customer_id", "orders", "customer_id")
    es.add_relationship("customers", "customer_id", "events", "customer_id")
    es.add_interesting_values(dataframe_name="events",
                              values={"event_type": sorted(events["event_type"].unique())})
    es.add_interesting_values(dataframe_name="orders",
                              values={"status": sorted(orders["status"].unique())})
    known = customers.loc[customers["signup_at"] < as_of, "customer_id"]
    cutoff = pd.DataFrame({"customer_id": known.to_numpy(), "time": as_of})

    feature_count = 0
    dfs_started, dfs_cpu = time.perf_counter(), time.process_time()
    for window in (None, "30 days", "90 days", "365 days"):
        matrix, _ = ft.dfs(
            entityset=es, target_dataframe_name="customers", cutoff_time=cutoff,
            training_window=window, max_depth=1,
            agg_primitives=["count", "sum", "mean", "std", "max", "min", "time_since_last",
                            "time_since_first", "num_unique"],
            where_primitives=["count", "sum"], trans_primitives=[],
            ignore_columns={"orders": ["order_id"]}, n_jobs=1, verbose=False,
        )
        feature_count += matrix.shape[1]
    dfs_seconds = time.perf_counter() - dfs_started
    dfs_cpu = time.process_time() - dfs_cpu
    print(json.dumps({
        "customers": len(known), "orders": len(orders), "events": len(events),
        "features": feature_count, "read_seconds": round(read_seconds, 2),
        "dfs_seconds": round(dfs_seconds, 2), "dfs_cpu": round(dfs_cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "featuretools": ft.__version__, "pandas": pd.__version__,
    }))


if __name__ == "__main__":
    main()
