"""Batch scoring benchmark: `churnlens score` end to end, against shap.TreeExplainer.

Generates (once, cached in --data) ``--customers`` customers averaging 5 orders and 20
events each, as Parquet. Then, each in a fresh process so that its peak RSS is its own,
`serving.batch.run_batch` (the code behind `churnlens score`) from the files to the output
file, with ``--explain none``, ``at-risk`` and ``all``: customers/s and peak RSS.

In the same run, the reference: ``shap.TreeExplainer(booster).shap_values(X)`` plus
``booster.predict(X)`` on the same churn model, on a ``--sample``-row sample of model rows
(per-row throughput), and the ratio of the ``--explain all`` throughput to it. Peak RSS
of a Dask run (``--engine dask``) is the driver's only; workers are separate processes.

The model is the churn bundle of bench/explain_bench.py (trained once by churnlens's own
`fit_bundle` and cached), or ``--bundle DIR``.

    .venv/bin/python bench/batch_bench.py --customers 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
END = date(2024, 12, 31)


def generate(directory: Path, *, customers: int) -> dict:
    from features.generate import generate_dataset

    marker = directory / "bench.json"
    if marker.exists():
        return json.loads(marker.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    data = generate_dataset(customers=customers, seed=42, end=END, kind="ecommerce",
                            orders_per_customer=5, events_per_customer=20)
    data.write(directory, fmt="parquet")
    info = {"customers": customers, **{n: len(f) for n, f in data.tables.items()}}
    marker.write_text(json.dumps(info))
    return info


def run_score(data: Path, bundle: Path, explain: str, chunk_size: int, engine: str) -> dict:
    """One `churnlens score` run in this (fresh) process."""
    from models.loading import load_model
    from serving.batch import run_batch
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    out = data.parent / f"{data.name}-scores-{explain}.parquet"
    started = time.perf_counter()
    scorer = Scorer(load_model(str(bundle)), rules=load_rules(None))
    summary = run_batch(data=data, out=out, scorer=scorer, model_uri=str(bundle),
                        explain=explain, chunk_size=chunk_size, engine=engine)
    seconds = time.perf_counter() - started
    return {"explain": explain, "engine": engine, "seconds": round(seconds, 1),
            "customers_per_s": round(summary.rows_scored / seconds),
            "rows_scored": summary.rows_scored, "rows_rejected": summary.rows_rejected,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_reference(bundle: Path, sample: int) -> dict:
    """shap.TreeExplainer + predict on ``sample`` model rows, the obvious way."""
    import shap

    sys.path.insert(0, str(ROOT / "bench"))
    from explain_bench import sample_features

    from models.bundle import ChurnBundle

    churn = ChurnBundle.load(bundle)
    X = sample_features(churn, rows=sample)
    explainer = shap.TreeExplainer(churn.churn_booster)
    started = time.perf_counter()
    explainer.shap_values(X)
    churn.churn_booster.predict(X)
    seconds = time.perf_counter() - started
    return {"rows": len(X), "seconds": round(seconds, 1), "rows_per_s": round(len(X) / seconds),
            "trees": churn.churn_booster.num_trees()}


def child(*arguments: str) -> dict:
    output = subprocess.run([sys.executable, __file__, *arguments], check=True,
                            capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--modes", default="none,at-risk,all")
    parser.add_argument("--engine", default="local", choices=["local", "dask"])
    parser.add_argument("--step", choices=["score", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--explain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.step == "score":
        print(json.dumps(run_score(args.data, args.bundle, args.explain, args.chunk_size,
                                   args.engine)))
        return
    if args.step == "reference":
        print(json.dumps(run_reference(args.bundle, args.sample)))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from explain_bench import BUNDLE_CACHE, train_bundle

    bundle = args.bundle or train_bundle(BUNDLE_CACHE / "10000-300", customers=10_000,
                                         rounds=300)
    data = args.data or Path(f"/tmp/churnlens-batch-bench-{args.customers}/data")
    info = generate(data, customers=args.customers)
    print(f"dataset {data}: {json.dumps(info)}; bundle {bundle}", flush=True)
    report: dict[str, object] = {"dataset": info, "runs": []}
    for explain in args.modes.split(","):
        result = child("--step", "score", "--data", str(data), "--bundle", str(bundle),
                       "--explain", explain, "--chunk-size", str(args.chunk_size),
                       "--engine", args.engine)
        report["runs"].append(result)
        print(f"score --explain {explain}: {json.dumps(result)}", flush=True)
    reference = child("--step", "reference", "--bundle", str(bundle), "--sample",
                      str(args.sample))
    report["reference"] = reference
    print(f"reference shap.TreeExplainer + predict: {json.dumps(reference)}", flush=True)
    explained = [r for r in report["runs"] if r["explain"] == "all"]
    if explained:
        report["all_vs_reference"] = round(
            explained[0]["customers_per_s"] / reference["rows_per_s"], 1)
        print(f"--explain all / reference throughput: {report['all_vs_reference']}x")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
