"""Churn on an app business with in-app events: churnlens against a plain event-count model.

    nice -n 10 .venv/bin/python bench/event_churn_bench.py [--customers 8000] [--seeds 0,1,2]

Generates subscription data with in-app events (``churnlens generate --kind
subscription``, three years), cuts it 90 days before its end and judges churn
(the subscription definition: no subscription running at the end of the
window) on what happened in those 90 days. In the same run, on the same
training snapshots (those ``churnlens train --as-of CUT-OFF`` builds) and the
same held-out snapshot for early stopping:

- ``churnlens``: the full model as trained by `training.fit.fit_bundle`
  (every feature family, including `features.behaviour`: rates per active
  day, ratios between events, changes over time, rates against the
  customer's own usual rate);
- ``event counts``: a LightGBM churn model on the counts of each event type
  in the last 30 and 90 days only (the reference to beat by 0.02 ROC AUC);
- ``generator hazard``: each customer's true weekly churn hazard at the
  cut-off, from ``ground_truth.csv`` (``churn_hazard``): the ceiling that the
  generator's own churn process sets for a ranking made at the cut-off (it
  knows each customer's latent engagement, which no table shows, but not what
  happens after the cut-off).

Target: churnlens ROC AUC ≥ min(event counts + 0.02, generator hazard − 0.01).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import date

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.contract import validate_tables
from features.generate import generate_dataset
from features.labels import label_customers
from features.pipeline import build_features, describe_feature, event_slug
from features.snapshots import TrainingSet, build_training_set
from training.fit import fit_bundle
from training.params import TrainParams

END = date(2025, 12, 31)
HORIZON = 90
COUNT_WINDOWS = (30, 90)


def count_columns(event_types: list[str]) -> list[str]:
    return [f"{event_slug(t)}_events_{w}d" for t in event_types for w in COUNT_WINDOWS]


def event_count_model(train: pd.DataFrame, held: pd.DataFrame, columns: list[str],
                      params: TrainParams) -> lgb.Booster:
    """LightGBM on event counts, early-stopped on the held-out snapshot like churnlens."""
    settings = {"objective": "binary", "metric": "binary_logloss",
                "learning_rate": params.learning_rate, "num_leaves": params.num_leaves,
                "min_data_in_leaf": params.min_data_in_leaf,
                "feature_fraction": params.feature_fraction, "lambda_l2": params.lambda_l2,
                "seed": params.seed, "deterministic": True, "num_threads": 1,
                "verbosity": -1}
    data = lgb.Dataset(train[columns], label=train["churned"].to_numpy(float))
    valid = lgb.Dataset(held[columns], label=held["churned"].to_numpy(float), reference=data)
    return lgb.train(settings, data, num_boost_round=params.num_boost_round,
                     valid_sets=[valid],
                     callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)])


def run_one(customers: int, seed: int) -> dict[str, float]:
    generated = generate_dataset(customers=customers, seed=seed, end=END, kind="subscription",
                                 hazard_window_days=HORIZON)
    dataset = validate_tables(generated.tables).dataset
    cut_off = pd.Timestamp(END) + pd.Timedelta(days=1 - HORIZON)
    params = TrainParams(horizon_days=HORIZON, definition="subscription", seed=seed)
    training_set = build_training_set(
        dataset, as_of=cut_off, horizon_days=HORIZON, clv_horizon_days=params.clv_horizon_days,
        definition="subscription", step_days=params.step_days,
        max_snapshots=params.max_snapshots)
    fit = fit_bundle(training_set, params=params, definition="subscription")

    # the same labelled snapshots for the reference: latest held out, earlier ones purged
    frame = training_set.frame
    labelled = frame[frame["in_population"].astype(bool) & frame["churned"].notna()]
    held_at = labelled["snapshot_at"].max()
    held = labelled[labelled["snapshot_at"] == held_at]
    earlier = labelled[labelled["snapshot_at"] + pd.Timedelta(days=HORIZON) <= held_at]
    columns = count_columns(training_set.event_types)
    reference = event_count_model(earlier, held, columns, params)

    # judge everyone in the population at the cut-off on the next 90 days
    features = build_features(dataset, as_of=cut_off, event_types=training_set.event_types)
    labels = label_customers(dataset, as_of=cut_off, horizon_days=HORIZON,
                             definition="subscription")
    population = labels.index[labels["in_population"].astype(bool)]
    actual = labels.loc[population, "churned"].to_numpy(float)
    scored = fit.bundle.predict(features.loc[population])
    truth = generated.ground_truth.set_index("customer_id").loc[population]
    figures = {
        "customers": float(len(population)),
        "churn_rate": float(actual.mean()),
        "churnlens": roc_auc_score(actual, scored["churn_probability"].to_numpy(float)),
        "event counts": roc_auc_score(actual, reference.predict(features.loc[population,
                                                                             columns])),
        "generator hazard": roc_auc_score(actual, truth["churn_hazard"].fillna(0.0)),
        "hazard_missing": float(truth["churn_hazard"].isna().sum()),
    }
    without = fit_bundle(_without_behaviour(training_set), params=params,
                         definition="subscription")
    figures["churnlens without behaviour features"] = roc_auc_score(
        actual, without.bundle.predict(features.loc[population])["churn_probability"])
    return figures


def _without_behaviour(training_set: TrainingSet) -> TrainingSet:
    """The same snapshots without the behaviour features (to show what they add)."""
    keep = [c for c in training_set.frame.columns
            if c in ("customer_id", "snapshot_at", "in_population", "churned", "clv_target")
            or describe_feature(c).kind != "behaviour"]
    return replace(training_set, frame=training_set.frame[keep])


MODELS = ("churnlens", "churnlens without behaviour features", "event counts",
          "generator hazard")


def run(customers: int, seeds: list[int]) -> str:
    lines = ["| data seed | customers at cut-off | churn rate | " + " | ".join(MODELS) +
             " | target | met |", "|---" * (len(MODELS) + 5) + "|"]
    for seed in seeds:
        started = time.perf_counter()
        f = run_one(customers, seed)
        target = min(f["event counts"] + 0.02, f["generator hazard"] - 0.01)
        lines.append(f"| {seed} | {int(f['customers']):,} | {f['churn_rate']:.3f} | "
                     + " | ".join(f"{f[m]:.3f}" for m in MODELS)
                     + f" | ≥ {target:.3f} | {'✓' if f['churnlens'] >= target else '✗'} |")
        sys.stderr.write(f"seed {seed}: {time.perf_counter() - started:.0f} s\n")
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=8000)
    parser.add_argument("--seeds", default="0,1,2", help="generator seeds, comma-separated")
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    sys.stdout.write(run(args.customers, [int(s) for s in args.seeds.split(",")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
