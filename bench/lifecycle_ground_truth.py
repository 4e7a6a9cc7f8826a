"""The `declining` stage against the generator's ground truth, over a grid of thresholds.

Generates the mixed business (as ``tests/test_lifecycle.py`` does: 2,000
customers, seed 11, ending 2026-06-30), computes the lifecycle stage of every
customer every 14 days over two years (`features.lifecycle`, the activity
definition `auto` picks) and, for each setting of the declining test, reports:

- *fading caught*: the share of customers whose generator cause of churn is
  fading engagement that are `declining` at some date in the 120 days before
  they churn (the recall the issue asks about);
- *sudden flagged*: the same share for customers who churn from causes that
  strike without a decline (support issues, bad experiences, the unobserved
  background): a threshold that flags these too is not measuring a decline;
- *stayers flagged*: the share of customers who never churn that are
  `declining` at some date of the same two years;
- *precision*: of the (customer, date) pairs in `declining`, the share whose
  customer churns within the next 120 days;
- *declining share*: how many of the active customers are `declining` on an
  average date (the size of the outreach list).

    nice -n 10 .venv/bin/python bench/lifecycle_ground_truth.py [--customers 2000] [--seed 11]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import date

import numpy as np
import pandas as pd

from features.contract import validate_tables
from features.definition import resolve_definition
from features.generate import generate_dataset
from features.history import History
from features.lifecycle import lifecycle_rules, lifecycle_stages
from features.pipeline import event_slug, features_at

END = date(2026, 6, 30)
WINDOW = pd.Timedelta(days=120)
#: (recent_days, declining_ratio, min_earlier_activity, min_earlier_days); first = documented
#: recent_days must be a feature window (features.pipeline.WINDOWS: 30, 90, 365)
GRID = (
    (90, 0.5, 4, 60),
    (90, 0.4, 4, 60),
    (90, 0.6, 4, 60),
    (90, 0.7, 4, 60),
    (90, 0.5, 6, 60),
    (90, 0.6, 6, 90),
    (90, 0.5, 3, 45),
    (30, 0.3, 4, 60),
    (30, 0.4, 4, 60),
    (30, 0.5, 4, 60),
    (30, 0.4, 6, 90),
)


def _declining_matrix(features: dict[pd.Timestamp, pd.DataFrame], rules, customers: pd.Index
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(declining, active-or-declining) as customer × date boolean frames."""
    declining, active = {}, {}
    for as_of, frame in features.items():
        stage = pd.Series(lifecycle_stages(frame, rules), index=frame.index).reindex(customers)
        declining[as_of] = stage == "declining"
        active[as_of] = stage.isin(["active", "declining"])
    return pd.DataFrame(declining), pd.DataFrame(active)


def _caught(declining: pd.DataFrame, churned_at: pd.Series) -> float:
    """Share of customers declining at some date in the WINDOW before their churn."""
    dates = declining.columns.to_numpy()
    hits = []
    for customer, when in churned_at.items():
        inside = (dates >= when - WINDOW) & (dates < when)
        hits.append(bool(declining.loc[customer].to_numpy()[inside].any()))
    return float(np.mean(hits)) if hits else float("nan")


def run(customers: int, seed: int) -> str:
    generated = generate_dataset(customers=customers, seed=seed, end=END, kind="mixed")
    dataset = validate_tables(dict(generated.tables)).dataset
    truth = generated.ground_truth.set_index("customer_id")
    chosen = resolve_definition(dataset, requested="auto")
    base = lifecycle_rules(chosen.name, active_days=chosen.active_days, new_days=90,
                           activity_slugs=[event_slug(t) for t in chosen.activity_events])
    history = History(dataset)
    dates = pd.date_range("2024-08-01", "2026-06-30", freq="14D")
    features = {as_of: features_at(history, as_of=as_of) for as_of in dates}
    ids = truth.index

    gone = truth[truth["churned_at"] > pd.Timestamp("2025-01-01")]
    settled = gone[gone["churned_at"] - gone["signup_at"] > pd.Timedelta(days=240)]
    fading = settled.loc[settled["churn_cause"] == "fading_engagement", "churned_at"]
    sudden = settled.loc[settled["churn_cause"].isin(
        ["unobserved", "support_issues", "bad_experience"]), "churned_at"]
    stayers = truth.index[truth["churned_at"].isna()
                          & (truth["signup_at"] < pd.Timestamp("2024-01-01"))]
    churn_time = truth["churned_at"]
    base_rules = dataclasses.replace(base, declining_ratio=0.0)
    _, active = _declining_matrix(features, base_rules, ids)
    pairs = active.stack()
    on = pairs[pairs]
    churn = churn_time.reindex(on.index.get_level_values(0)).to_numpy()
    when = on.index.get_level_values(1)
    base_rate = float(np.mean((churn >= when) & (churn < when + WINDOW)))
    lines = [f"mixed business, {customers:,} customers, seed {seed}; {len(fading)} fading-"
             f"engagement churners, {len(sudden)} sudden churners, {len(stayers)} stayers known "
             f"since 2023; of the active (customer, date) pairs {base_rate:.0%} churn within "
             "120 days (the precision of flagging everyone)", "",
             "| recent days | ratio | min earlier activities | min earlier days | fading caught "
             "| sudden flagged | stayers flagged | precision (churn in 120 d) "
             "| declining share of active |",
             "|---|---|---|---|---|---|---|---|---|"]
    for recent_days, ratio, min_activity, min_days in GRID:
        rules = dataclasses.replace(base, recent_days=recent_days, declining_ratio=ratio,
                                    min_earlier_activity=min_activity,
                                    min_earlier_days=min_days)
        declining, active = _declining_matrix(features, rules, ids)
        pairs = declining.stack()
        flagged = pairs[pairs]
        who = flagged.index.get_level_values(0)
        when = flagged.index.get_level_values(1)
        churn = churn_time.reindex(who).to_numpy()
        precision = float(np.mean((churn >= when) & (churn < when + WINDOW))) if len(
            flagged) else float("nan")
        share = float(declining.to_numpy().sum() / max(active.to_numpy().sum(), 1))
        stay = float(declining.loc[stayers].any(axis=1).mean())
        documented = " (documented)" if (recent_days, ratio, min_activity, min_days) == GRID[0] \
            else ""
        lines.append(f"| {recent_days}{documented} | {ratio} | {min_activity} | {min_days} | "
                     f"{_caught(declining, fading):.0%} | {_caught(declining, sudden):.0%} | "
                     f"{stay:.0%} | {precision:.0%} | {share:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    sys.stdout.write(run(args.customers, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
