"""Features benchmark: wall time and peak memory of the feature pipeline at scale.

Generates (once, cached in --data) a dataset of --customers customers with
string ids, about 100 events and 10 orders each, as Parquet; then, each in a
fresh process so that peak RSS is its own:

(a) one snapshot of the full feature set, read from the files
    (read + validate + features; target <= 10 s);
(b) a training set of 12 monthly snapshots (target <= 60 s);
    peak RSS target <= 4 GB for both;

and, when --featuretools-python points at an environment with Featuretools,
deep feature synthesis with cutoff times on a --featuretools-sample customer
sample with comparable primitives, against churnlens on the same sample,
reported as a per-customer time ratio.

    .venv/bin/python bench/features_bench.py --customers 100000 \
        --featuretools-python /tmp/ftenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
END = date(2024, 12, 31)


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def cpu_seconds() -> float:
    """CPU time of this process: less sensitive than wall time to a busy shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)


def generate(directory: Path, *, customers: int, events: float, orders: float) -> dict:
    from features.generate import generate_dataset

    marker = directory / "bench.json"
    if marker.exists():
        return json.loads(marker.read_text())
    started = time.perf_counter()
    data = generate_dataset(customers=customers, seed=42, end=END, kind="mixed",
                            events_per_customer=events, orders_per_customer=orders)
    data.write(directory, fmt="parquet")
    info = {"customers": customers, **{name: len(frame) for name, frame in data.tables.items()},
            "generate_seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(info))
    return info


def read_timed(directory: Path) -> tuple[object, dict]:
    """`features.io.read_dataset`, with reading and validation timed apart."""
    from features.contract import validate_tables
    from features.io import find_tables, read_raw_table

    started, cpu = time.perf_counter(), time.process_time()
    files = find_tables(directory)
    raw = {name: read_raw_table(path) for name, path in files.items()}
    read_seconds, read_cpu = time.perf_counter() - started, time.process_time() - cpu
    result = validate_tables(raw, sources={n: p.name for n, p in files.items()})
    del raw
    return result.dataset, {
        "read_seconds": round(read_seconds, 2), "read_cpu": round(read_cpu, 2),
        "validate_seconds": round(time.perf_counter() - started - read_seconds, 2),
        "validate_cpu": round(time.process_time() - cpu - read_cpu, 2)}


def run_snapshot(directory: Path) -> dict:
    """(a): read the files, validate, one snapshot of every feature."""
    import pandas as pd

    from features.pipeline import build_features

    started = time.perf_counter()
    dataset, timings = read_timed(directory)
    as_of = pd.Timestamp(END) + pd.Timedelta(days=1)
    begun, cpu = time.perf_counter(), time.process_time()
    features = build_features(dataset, as_of=as_of)
    timings["features_seconds"] = round(time.perf_counter() - begun, 2)
    timings["features_cpu"] = round(time.process_time() - cpu, 2)
    timings["total_seconds"] = round(time.perf_counter() - started, 2)
    return {**timings, "rows": len(features), "columns": features.shape[1],
            "cpu_seconds": cpu_seconds(), "peak_rss_mb": peak_rss_mb()}


def run_training(directory: Path) -> dict:
    """(b): read, validate, 12 monthly snapshots with labels."""
    import pandas as pd

    from features.snapshots import build_training_set

    started = time.perf_counter()
    dataset, timings = read_timed(directory)
    begun, cpu = time.perf_counter(), time.process_time()
    training = build_training_set(dataset, as_of=pd.Timestamp(END) + pd.Timedelta(days=1),
                                  horizon_days=90, clv_horizon_days=365,
                                  definition="inactivity", step_days=30, max_snapshots=12)
    timings["training_set_seconds"] = round(time.perf_counter() - begun, 2)
    timings["training_set_cpu"] = round(time.process_time() - cpu, 2)
    timings["total_seconds"] = round(time.perf_counter() - started, 2)
    return {**timings, "rows": len(training.frame), "columns": training.frame.shape[1],
            "snapshots": len(training.snapshot_dates), "cpu_seconds": cpu_seconds(),
            "peak_rss_mb": peak_rss_mb()}


def write_sample(directory: Path, sample: Path, *, customers: int) -> None:
    """The first ``customers`` customers (by id) and their history, as Parquet."""
    import pandas as pd

    if (sample / "customers.parquet").exists():
        return
    sample.mkdir(parents=True, exist_ok=True)
    people = pd.read_parquet(directory / "customers.parquet")
    keep = set(people["customer_id"].sort_values().head(customers))
    for name in ("customers", "orders", "events"):
        frame = pd.read_parquet(directory / f"{name}.parquet")
        frame[frame["customer_id"].isin(keep)].to_parquet(sample / f"{name}.parquet", index=False)


def run_sample(sample: Path) -> dict:
    """churnlens on the Featuretools sample: same data, same cutoff."""
    import pandas as pd

    from features.pipeline import build_features

    dataset, timings = read_timed(sample)
    begun, cpu = time.perf_counter(), time.process_time()
    features = build_features(dataset, as_of=pd.Timestamp(END) + pd.Timedelta(days=1))
    timings["features_seconds"] = round(time.perf_counter() - begun, 2)
    timings["features_cpu"] = round(time.process_time() - cpu, 2)
    return {**timings, "rows": len(features), "columns": features.shape[1]}


def child(step: str, path: Path) -> dict:
    """Run one step in a fresh interpreter and return its JSON line."""
    output = subprocess.run([sys.executable, __file__, "--step", step, "--data", str(path)],
                            check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events-per-customer", type=float, default=100.0)
    parser.add_argument("--orders-per-customer", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset directory (generated there once and reused)")
    parser.add_argument("--featuretools-python", type=Path, default=None,
                        help="python of an environment with featuretools installed")
    parser.add_argument("--featuretools-sample", type=int, default=10_000)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--step", choices=["snapshot", "training", "sample"], default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.step:
        run = {"snapshot": run_snapshot, "training": run_training, "sample": run_sample}
        print(json.dumps(run[args.step](args.data)))
        return

    data = args.data or Path(f"/tmp/churnlens-bench-{args.customers}")
    info = generate(data, customers=args.customers, events=args.events_per_customer,
                    orders=args.orders_per_customer)
    report: dict[str, object] = {"dataset": info, "load_average": os.getloadavg()}
    print(f"dataset {data}: {json.dumps(info)}", flush=True)
    report["a_one_snapshot"] = child("snapshot", data)
    print(f"(a) one snapshot from files: {json.dumps(report['a_one_snapshot'])}", flush=True)
    if not args.skip_training:
        report["b_training_set"] = child("training", data)
        print(f"(b) 12 monthly snapshots: {json.dumps(report['b_training_set'])}", flush=True)
    if args.featuretools_python:
        sample = data / f"sample-{args.featuretools_sample}"
        write_sample(data, sample, customers=args.featuretools_sample)
        ours = child("sample", sample)
        output = subprocess.run(
            [str(args.featuretools_python), str(ROOT / "bench" / "featuretools_dfs.py"),
             str(sample), str(date(2025, 1, 1))],
            check=True, capture_output=True, text=True)
        theirs = json.loads(output.stdout.strip().splitlines()[-1])
        ratio = (theirs["dfs_seconds"] / theirs["customers"]) / (
            ours["features_seconds"] / ours["rows"])
        cpu_ratio = (theirs["dfs_cpu"] / theirs["customers"]) / (
            ours["features_cpu"] / ours["rows"])
        report["featuretools"] = {"featuretools": theirs, "churnlens": ours,
                                  "per_customer_ratio": round(ratio, 1),
                                  "per_customer_cpu_ratio": round(cpu_ratio, 1)}
        print(f"Featuretools DFS on {theirs['customers']:,} customers: "
              f"{theirs['dfs_seconds']} s for {theirs['features']} features; churnlens on the "
              f"same sample: {ours['features_seconds']} s for {ours['columns']} features; "
              f"churnlens is {ratio:.0f}x faster per customer ({cpu_ratio:.0f}x in CPU time)",
              flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
