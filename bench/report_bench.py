"""How long `churnlens report` takes on a dataset with tens of millions of events.

Generates a dataset once (Parquet, kept in ``--work`` for reruns), writes a
batch score file in the format `churnlens score` produces, then times the
report's stages exactly as the command runs them: read + validate the dataset,
compute the retention metrics and gather the scores, render, write. The peer
in the same run is reading the dataset alone (what any report on it must pay);
the ratio says what the report adds on top.

    .venv/bin/python bench/report_bench.py --customers 200000 --events-per-customer 100

The score file stands in for a real scoring run (the report only reads it:
its timing does not depend on the values), so the benchmark needs no model.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def make_dataset(folder: Path, *, customers: int, events_per_customer: float, seed: int) -> None:
    from features.generate import generate_dataset

    generated = generate_dataset(customers=customers, seed=seed, end=date(2025, 6, 30),
                                 kind="mixed", events_per_customer=events_per_customer)
    generated.write(folder, fmt="parquet")


def make_scores(dataset, path: Path, *, seed: int) -> None:
    """Batch rows in `churnlens score`'s format, with seeded values and reasons for the at-risk."""
    rng = np.random.default_rng(seed)
    ids = dataset.customers["customer_id"].to_numpy()
    n = len(ids)
    probability = rng.beta(2, 5, n)
    clv = rng.gamma(2.0, 150.0, n)
    tier = np.select([probability > 0.5, probability > 0.25], ["high", "medium"], "low")
    features = ["days_since_last_order", "returned_orders_90d", "days_since_last_session",
                "subscription_downgrades", "orders_90d"]
    picks = rng.integers(0, len(features), size=(n, 3))
    reasons = [json.dumps([{"feature": features[k], "value": 1.0, "contribution": 0.2,
                            "text": f"{features[k]} reason"} for k in row])
               if t != "low" else "[]" for row, t in zip(picks, tier, strict=True)]
    frame = pd.DataFrame({
        "customer_id": ids, "as_of": dataset.default_as_of(), "churn_probability": probability,
        "risk_tier": tier, "clv": clv,
        "value_segment": np.select([clv > 400, clv > 200], ["high", "mid"], "low"),
        "value_at_risk": probability * clv, "reasons_json": reasons,
        "recommended_action": None, "model_version": "bench"})
    frame.to_parquet(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--events-per-customer", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("bench/out/report"))
    args = parser.parse_args()

    from features.io import read_dataset
    from serving.report import gather_report, render_report, write_report

    data = args.work / f"data-{args.customers}x{args.events_per_customer:g}"
    if not (data / "customers.parquet").exists():
        started = time.perf_counter()
        make_dataset(data, customers=args.customers,
                     events_per_customer=args.events_per_customer, seed=args.seed)
        print(f"generated {data} in {time.perf_counter() - started:.0f} s (not timed below)")

    timings: dict[str, float] = {}
    started = time.perf_counter()
    dataset = read_dataset(data).dataset
    timings["read + validate dataset (peer)"] = time.perf_counter() - started
    rows = dataset.count_rows()

    scores = data / "scores.parquet"
    if not scores.exists():
        make_scores(dataset, scores, seed=args.seed)

    started = time.perf_counter()
    gathered = gather_report(dataset, as_of=dataset.default_as_of(), scores_path=scores,
                             outbox_url=f"sqlite:///{args.work / 'no-outbox.db'}",
                             dataset_name=data.name, generated_at=pd.Timestamp.now())
    timings["retention metrics + read scores"] = time.perf_counter() - started
    started = time.perf_counter()
    html = render_report(gathered)
    timings["render (charts, tables)"] = time.perf_counter() - started
    started = time.perf_counter()
    out = write_report(html, args.work / "report.html")
    timings["write"] = time.perf_counter() - started

    report_only = sum(v for k, v in timings.items() if "peer" not in k)
    total = sum(timings.values())
    print(f"dataset: {', '.join(f'{n:,} {t}' for t, n in rows.items())}")
    for stage, seconds in timings.items():
        print(f"  {stage:<34} {seconds:8.1f} s")
    print(f"  {'report total (read + report)':<34} {total:8.1f} s")
    peer = timings["read + validate dataset (peer)"]
    print(f"report work / reading the dataset: {report_only / peer:.2f}x")
    print(f"peak memory {_peak_rss_gib():.1f} GiB; "
          f"report {out.stat().st_size / 1e6:.1f} MB at {out}")
    (args.work / "report_bench.json").write_text(json.dumps(
        {"rows": rows, "timings_s": timings, "total_s": total,
         "peak_rss_gib": _peak_rss_gib()}, indent=2))


if __name__ == "__main__":
    main()
