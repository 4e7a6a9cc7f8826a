"""Who gets a churn score on the demo's mixed business, per churn definition, in one run.

Generates the demo's data (``churnlens generate --kind mixed``, 3,000
customers, seed 7), trains a bundle per definition exactly as ``churnlens
train`` fits it (no MLflow), scores everyone as of the day after the data and
reports, among the customers with any activity in the last H days, the share
that gets a churn probability and reasons, and how many of those left out the
generator had already churned. "Any activity" is counted twice: as
the activity definition counts it (completed orders, running subscriptions,
events but passive ones such as ``email_open``) and with every event row,
e-mail opens included.

    .venv/bin/python bench/population_coverage.py

The previous default for this data (``subscription``, chosen because it has
subscriptions) runs in the same run as the reference.
"""

from __future__ import annotations

import argparse
import json
from datetime import date

import numpy as np
import pandas as pd


def active_within(dataset: object, *, as_of: pd.Timestamp, days: int,
                  passive_too: bool) -> pd.Index:
    """Customers with a completed order, an event or a running subscription in [T - days, T)."""
    from features.definition import PASSIVE_EVENT_TYPES

    since = as_of - pd.Timedelta(days=days)
    ids: set[str] = set()
    orders = dataset.orders
    done = orders[(orders["status"] == "completed") & (orders["ordered_at"] >= since)
                  & (orders["ordered_at"] < as_of)]
    ids |= set(done["customer_id"])
    events = dataset.events
    recent = events[(events["occurred_at"] >= since) & (events["occurred_at"] < as_of)]
    if not passive_too:
        recent = recent[~recent["event_type"].isin(PASSIVE_EVENT_TYPES)]
    ids |= set(recent["customer_id"])
    subs = dataset.subscriptions
    running = subs[(subs["started_at"] < as_of)
                   & (subs["ended_at"].isna() | (subs["ended_at"] >= as_of))]
    ids |= set(running["customer_id"])
    return pd.Index(sorted(ids))


def main() -> None:
    from features.contract import validate_tables
    from features.definition import resolve_definition
    from features.generate import generate_dataset
    from features.pipeline import build_features
    from features.snapshots import build_training_set
    from training.fit import fit_bundle
    from training.params import TrainParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end", default="2026-12-02")
    parser.add_argument("--horizon", type=int, default=90)
    args = parser.parse_args()

    generated = generate_dataset(customers=args.customers, seed=args.seed,
                                 end=date.fromisoformat(args.end), kind="mixed")
    dataset = validate_tables(generated.tables).dataset
    as_of = dataset.default_as_of()
    features = build_features(dataset, as_of=as_of)
    active = {passive: active_within(dataset, as_of=as_of, days=args.horizon,
                                     passive_too=passive) for passive in (False, True)}
    rows = []
    for requested in ("auto", "subscription", "inactivity"):
        params = TrainParams(horizon_days=args.horizon, definition=requested)
        chosen = resolve_definition(dataset, requested=requested, horizon_days=args.horizon)
        training_set = build_training_set(
            dataset, as_of=as_of, horizon_days=args.horizon, definition=chosen.name,
            active_days=chosen.active_days, activity_events=chosen.activity_events)
        fit = fit_bundle(training_set, params=params, churn_definition=chosen)
        bundle = fit.bundle
        scored = bundle.predict(features)
        table = bundle.explain_table(features, top_k=3,
                                     wanted=scored["in_population"].to_numpy(dtype=bool))
        has_reasons = np.array([bool(items) for items in table.rows()])
        covered = scored["churn_probability"].notna().to_numpy() & has_reasons
        covered_ids = scored.index[covered]
        row = {"requested": requested, "definition": chosen.name,
               "customers": len(scored), "scored_with_reasons": int(covered.sum())}
        for passive, ids in active.items():
            key = "active_any_event" if passive else "active"
            row[f"{key}_customers"] = len(ids)
            row[f"{key}_covered_share"] = round(float(ids.isin(covered_ids).mean()), 4)
        left_out = active[True].difference(covered_ids)
        gone = generated.ground_truth.set_index("customer_id")["churned_at"].reindex(left_out)
        row["left_out_of_any_event"] = len(left_out)
        row["left_out_already_churned_share"] = round(float((gone < as_of).mean()), 4) \
            if len(left_out) else float("nan")
        row["holdout_churn_roc_auc"] = round(float(fit.metrics["churn_roc_auc"]), 4)
        row["stages"] = scored["lifecycle_stage"].value_counts().to_dict()
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(pd.DataFrame(rows).drop(columns="stages").to_string(index=False))


if __name__ == "__main__":
    main()
