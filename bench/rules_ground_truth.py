"""Benchmark: the built-in outreach rules against the generator's ground truth, before and after.

Generates the demo's business (mixed, 3,000 customers, seed 7), trains as
``churnlens train`` does with the data before T = the last 90 days, scores
every customer as of T and evaluates two rule sets on the same scores:

- *by name*: the built-in rules before reason kinds (`bench/rules_by_name.yaml`,
  reactivation on ``days_since_last_*`` and ``*overdue*`` name patterns);
- *by kind*: the current built-in rules (`serving/outreach/default_rules.yaml`).

It prints, side by side, the reactivation e-mails, those sent to customers
with a support contact among their top three reasons or with no order or visit
gap among them, those sent to customers who then churned for a bad experience
or support issues (ground truth), and how many of those bad-experience and
support churners (medium or high risk) got the experience follow-up.

    .venv/bin/python bench/rules_ground_truth.py [--customers 3000] [--seed 7] [--kind mixed]
        [--holdout-days 90]

``--holdout-days 0`` trains and scores at the end of the data, as ``churnlens demo``
does (no ground truth after it: the cause columns are then 0).
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import pandas as pd

from features.contract import validate_tables
from features.generate import generate_dataset
from features.labels import default_definition
from models.loading import LoadedModel
from serving.outreach.audit import audit_rules
from serving.outreach.rules import load_rules
from serving.scorer import Scorer
from training.params import TrainParams
from training.run import fit_on_dataset

BY_NAME = Path(__file__).with_name("rules_by_name.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kind", default="mixed")
    parser.add_argument("--end", default="2026-12-03")
    parser.add_argument("--holdout-days", type=int, default=90)
    args = parser.parse_args()

    data = generate_dataset(customers=args.customers, seed=args.seed,
                            end=date.fromisoformat(args.end), kind=args.kind)
    dataset = validate_tables(dict(data.tables), sources={}, first_rows={}).dataset
    horizon = 90
    as_of = dataset.default_as_of() - pd.Timedelta(days=args.holdout_days)
    definition = default_definition(dataset)
    params = TrainParams(definition=definition)
    fit, _ = fit_on_dataset(dataset, as_of=as_of, params=params)
    loaded = LoadedModel(bundle=fit.bundle, name="bench", version="1", alias=None, run_id=None,
                         trained_at=None)
    records = Scorer(loaded).score_dataset(dataset, as_of=as_of, top_k=5)

    truth = data.ground_truth
    window = (truth["churned_at"] >= as_of) & (truth["churned_at"] < as_of + pd.Timedelta(
        days=horizon))
    causes = dict(zip(truth.loc[window, "customer_id"], truth.loc[window, "churn_cause"],
                      strict=True))
    before = audit_rules(load_rules(BY_NAME), records, churn_causes=causes).as_dict()
    after = audit_rules(load_rules(None), records, churn_causes=causes).as_dict()

    tiers = pd.Series([r.risk_tier for r in records]).value_counts()
    print(f"{args.kind} business, {args.customers} customers, seed {args.seed}, definition "
          f"{definition}; scored as of {as_of.date()} (ground truth: churn in the next "
          f"{horizon} days)")
    print(f"risk tiers: {tiers.to_dict()}; churners in the window by cause: "
          f"{pd.Series(causes).value_counts().to_dict()}")
    print(f"\n{'':46} {'by name':>8} {'by kind':>8}")
    for key in before:
        print(f"{key.replace('_', ' '):46} {before[key]:>8} {after[key]:>8}")


if __name__ == "__main__":
    main()
