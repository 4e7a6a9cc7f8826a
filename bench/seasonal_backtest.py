"""Backtest over a peak quarter: churnlens with and without calendar inputs, same run.

    nice -n 10 .venv/bin/python bench/seasonal_backtest.py [--customers 6000] [--seeds 0,1,2]

Generates a shop with a yearly peak quarter (``churnlens generate --kind
ecommerce --seasonality``: October-December, about 1.8x the spend and half the
churn hazard; three years ending on 31 December), cuts it on 1 October of the
last year and backtests a 90-day holdout (churn and CLV over the peak
quarter), exactly as ``churnlens backtest --data DIR --as-of YYYY-10-01
--horizon 90 --clv-horizon 90 --churn inactivity`` does. The same model is
trained twice on the same snapshots: with the calendar inputs
(`features.calendar`: the day of the year, the customer's activity in the same
weeks a year before) and without them (``TrainParams(calendar_inputs=False)``);
``--unbalanced-peer`` adds the calendar model without the CLV balance factor
(``TrainParams(clv_balance=False)``, `training.boosters.balance_total`).
Targets: CLV total within ±10% of actual and churn ECE ≤ 0.05 with them.

It also reports the season the generator put in (the known truth): completed
revenue per day in the peak quarter against the rest of the year.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import date

import numpy as np
import pandas as pd

from features.contract import validate_tables
from features.generate import PEAK_SPEND, generate_dataset, in_peak_quarter
from training.backtest import backtest
from training.params import TrainParams

END = date(2025, 12, 31)
CUT_OFF = pd.Timestamp("2025-10-01")
HORIZON = 90
TARGETS = {"abs_total_ratio": 0.10, "ece": 0.05}


def season_in_data(orders: pd.DataFrame) -> float:
    """Completed revenue per day in the peak quarters over that of the other days."""
    done = orders[orders["status"] == "completed"]
    daily = done.groupby(done["ordered_at"].dt.normalize())["amount"].sum()
    days = pd.date_range("2023-07-01", END)  # every customer cohort active by then
    daily = daily.reindex(days, fill_value=0.0)
    peak = in_peak_quarter(daily.index)
    return float(daily[peak].mean() / daily[~peak].mean())


def run(customers: int, seeds: list[int], max_snapshots: int, *, season_weight: float = 0.0,
        season_early_stopping: bool = False, unbalanced_peer: bool = False) -> str:
    lines = ["| data seed | model | churn ROC AUC | churn ECE | CLV Spearman | CLV Gini | "
             "CLV total vs actual | CLV decile error | targets |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for seed in seeds:
        started = time.perf_counter()
        generated = generate_dataset(customers=customers, seed=seed, end=END, kind="ecommerce",
                                     seasonality=True)
        dataset = validate_tables(generated.tables).dataset
        ratio = season_in_data(generated.tables["orders"])
        base = TrainParams(horizon_days=HORIZON, clv_horizon_days=HORIZON,
                           definition="inactivity", max_snapshots=max_snapshots,
                           season_weight=season_weight,
                           season_early_stopping=season_early_stopping)
        models = [("churnlens with calendar inputs", True, True),
                  ("churnlens without calendar inputs", False, True)]
        if unbalanced_peer:
            models.append(("churnlens with calendar inputs, CLV not balanced", True, False))
        for label, calendar, balance in models:
            params = dataclasses.replace(base, calendar_inputs=calendar, clv_balance=balance)
            result = backtest(dataset, as_of=CUT_OFF, params=params)
            row = result.metrics.loc["churnlens"]
            ok = (abs(row["total_ratio"]) <= TARGETS["abs_total_ratio"]
                  and row["ece"] <= TARGETS["ece"])
            lines.append(
                f"| {seed} | {label} | {row['roc_auc']:.3f} | {row['ece']:.3f} | "
                f"{row['spearman']:.3f} | {row['normalized_gini']:.3f} | "
                f"{row['total_ratio']:+.1%} | {row['decile_error']:.3f} | "
                f"{'✓' if ok else '✗'} |")
            print(lines[-1], file=sys.stderr, flush=True)  # progress: each row as it is done
            if calendar and balance:
                used = [n for n in result.notes if "calendar inputs used" in n]
                notes.append(f"- seed {seed}: peak-quarter revenue per day {ratio:.2f}× the rest "
                             f"(generator: {PEAK_SPEND}× order rate on average); churn rate "
                             f"{row['churn_rate']:.3f} of {int(row['customers']):,} customers; "
                             f"calendar inputs {'used' if used else 'NOT used'}")
        bgnbd = result.metrics.loc["bgnbd"]
        lines.append(f"| {seed} | BG/NBD + Gamma-Gamma (same run) | {bgnbd['roc_auc']:.3f} | "
                     f"{bgnbd['ece']:.3f} | {bgnbd['spearman']:.3f} | "
                     f"{bgnbd['normalized_gini']:.3f} | {bgnbd['total_ratio']:+.1%} | "
                     f"{bgnbd['decile_error']:.3f} | |")
        notes[-1] += f" ({time.perf_counter() - started:.0f} s)"
    target = (f"Targets with calendar inputs: CLV total within ±{TARGETS['abs_total_ratio']:.0%}"
              f", churn ECE ≤ {TARGETS['ece']}.")
    return "\n".join([*lines, "", target, "", *notes, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--seeds", default="0,1,2", help="generator seeds, comma-separated")
    parser.add_argument("--max-snapshots", type=int, default=TrainParams().max_snapshots)
    parser.add_argument("--season-weight", type=float, default=TrainParams().season_weight,
                        help="extra weight of same-season snapshots (calendar inputs only)")
    parser.add_argument("--season-early-stopping", action="store_true",
                        help="early-stop CLV on the same season one year before")
    parser.add_argument("--unbalanced-peer", action="store_true",
                        help="also run the calendar model without the CLV balance factor")
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    report = run(args.customers, [int(s) for s in args.seeds.split(",")], args.max_snapshots,
                 season_weight=args.season_weight,
                 season_early_stopping=args.season_early_stopping,
                 unbalanced_peer=args.unbalanced_peer)
    sys.stdout.write(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
