"""Explanation benchmark: exact contributions against shap.TreeExplainer on the same model.

The model is churnlens's own churn booster, trained by `training.fit.fit_bundle` on a
generated business (``--train-customers`` customers, ``--rounds`` boosting rounds, kept
whole so that the model has about that many trees), or any bundle given with ``--bundle``.
The rows are point-in-time features of ``--rows`` other generated customers.

Per repeat, on the same rows, side by side:

reference  ``shap.TreeExplainer(booster).shap_values(X)`` + ``booster.predict(X)``, the
           obvious way (the explainer is built once, outside the timing);
churnlens  ``exact_contributions(booster, X)`` + ``booster.predict(X)`` (compiled once,
           outside the timing, like the explainer).

Reports medians over ``--repeats`` of rows/s for both and their ratio, the largest
difference between the two contribution matrices (they must agree to 1e-6), and the
one-time setup costs. Both sides use every core (LightGBM's OpenMP, our threads).

    .venv/bin/python bench/explain_bench.py --rows 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
END = date(2024, 12, 31)
BUNDLE_CACHE = ROOT / "bench" / "out" / "bench-bundles"


def train_bundle(directory: Path, *, customers: int, rounds: int, seed: int = 7) -> Path:
    """Fit churnlens's bundle on generated data once; reuse it from ``directory``."""
    from features.contract import validate_tables
    from features.generate import generate_dataset
    from features.snapshots import build_training_set
    from models.bundle import BUNDLE_FILE
    from training.fit import fit_bundle
    from training.params import TrainParams

    if (directory / BUNDLE_FILE).exists():
        return directory
    data = generate_dataset(customers=customers, seed=seed, end=END, kind="ecommerce",
                            orders_per_customer=5, events_per_customer=20)
    dataset = validate_tables(dict(data.tables), sources={}, first_rows={}).dataset
    # Patience as long as the run: keep (nearly) every tree, the "300-tree model" of the issue.
    params = replace(TrainParams(), definition="inactivity", max_snapshots=6,
                     num_boost_round=rounds, learning_rate=0.02, early_stopping_rounds=rounds,
                     num_threads=0)
    training = build_training_set(dataset, as_of=dataset.default_as_of(), horizon_days=90,
                                  clv_horizon_days=365, definition="inactivity", step_days=30,
                                  max_snapshots=params.max_snapshots)
    fitted = fit_bundle(training, params=params, event_types=training.event_types,
                        definition="inactivity")
    fitted.bundle.save(directory)
    return directory


def sample_features(bundle, *, rows: int, seed: int = 99):
    """Prepared model rows of ``rows`` generated customers known at the end of their data."""
    from features.contract import validate_tables
    from features.generate import generate_dataset
    from features.pipeline import build_features

    data = generate_dataset(customers=int(rows * 1.15) + 100, seed=seed, end=END,
                            kind="ecommerce", orders_per_customer=5, events_per_customer=20)
    dataset = validate_tables(dict(data.tables), sources={}, first_rows={}).dataset
    features = build_features(dataset, as_of=dataset.default_as_of(),
                              event_types=getattr(bundle, "event_types", None))
    return bundle.prepare(features.iloc[:rows])


def timed(function, repeats: int) -> tuple[float, list[float]]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a saved ChurnBundle directory (default: train one, cached)")
    parser.add_argument("--train-customers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    import numpy as np
    import shap

    from models.bundle import ChurnBundle
    from models.contributions import exact_contributions

    directory = args.bundle or train_bundle(
        BUNDLE_CACHE / f"{args.train_customers}-{args.rounds}", customers=args.train_customers,
        rounds=args.rounds)
    bundle = ChurnBundle.load(directory)
    booster = bundle.churn_booster
    X = sample_features(bundle, rows=args.rows)
    model = {"trees": booster.num_trees(), "features": booster.num_feature(),
             "max_leaves": max(t["num_leaves"] for t in booster.dump_model()["tree_info"])}
    print(f"model {directory}: {json.dumps(model)}; {len(X):,} rows", flush=True)

    started = time.perf_counter()
    explainer = shap.TreeExplainer(booster)
    explainer_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exact_contributions(booster, X.iloc[:10])
    compile_seconds = time.perf_counter() - started

    results: dict[str, object] = {}

    def reference():
        results["reference"] = (explainer.shap_values(X), booster.predict(X))

    def ours():
        results["ours"] = (exact_contributions(booster, X), booster.predict(X))

    # Interleaved, so both sides see the same load on the shared machine.
    ref_times, our_times = [], []
    for _ in range(args.repeats):
        ref_times.append(timed(reference, 1)[0])
        our_times.append(timed(ours, 1)[0])
    ref_median, our_median = statistics.median(ref_times), statistics.median(our_times)
    contrib_median, _ = timed(lambda: exact_contributions(booster, X), args.repeats)
    predict_median, _ = timed(lambda: booster.predict(X), args.repeats)

    reference_values = np.asarray(results["reference"][0])
    ours_values = results["ours"][0]
    difference = float(np.abs(ours_values[:, : reference_values.shape[1]] - reference_values).max())
    report = {
        "rows": len(X), "model": model, "cores": os.cpu_count(), "repeats": args.repeats,
        "reference_seconds": [round(s, 3) for s in ref_times],
        "churnlens_seconds": [round(s, 3) for s in our_times],
        "reference_rows_per_s": round(len(X) / ref_median),
        "churnlens_rows_per_s": round(len(X) / our_median),
        "ratio": round(ref_median / our_median, 1),
        "contributions_only_rows_per_s": round(len(X) / contrib_median),
        "predict_only_rows_per_s": round(len(X) / predict_median),
        "max_abs_difference": difference,
        "setup_seconds": {"shap_explainer": round(explainer_seconds, 2),
                          "churnlens_compile": round(compile_seconds, 2)},
    }
    print(f"reference  shap.TreeExplainer + predict: {report['reference_rows_per_s']:>9,} rows/s "
          f"(median of {ref_times})")
    print(f"churnlens  exact_contributions + predict: {report['churnlens_rows_per_s']:>9,} rows/s "
          f"(median of {our_times})")
    print(f"ratio {report['ratio']}x; max |difference| {difference:.2e}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
