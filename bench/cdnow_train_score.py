"""CDNOW through `churnlens train` then `churnlens score --as-of 1997-10-01`, judged afterwards.

    .venv/bin/python bench/cdnow_train_score.py [--data cdnow] [--work DIR] [--seeds 0 1 2]

An independent check of the backtest's CLV figures through the commands a user
runs: the real log is written as a dataset directory (customers.csv,
orders.csv, via `training.realdata`), `churnlens train --as-of 1997-10-01`
registers a model on label windows ending by the cut-off, `churnlens score
--as-of 1997-10-01` scores everyone known then, and the scores are judged on
the standard 39-week holdout (spend in [1997-10-01, 1998-07-01)) with the
backtest's metrics; BG/NBD + Gamma-Gamma fitted on the same history is the
reference in the same run. Prints one markdown row per seed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from features.io import write_dataset
from training.metrics import clv_metrics
from training.realdata import STANDARD_SPLITS, load_source
from training.reference import WEEK_DAYS, BuyTillYouDie, purchase_summary


def _churnlens(*args: str, cwd: Path) -> None:
    command = [str(Path(sys.executable).with_name("churnlens")), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def run(name: str, seeds: list[int], work: Path) -> str:
    """Write the dataset, train and score once per seed, return the markdown rows."""
    loaded = load_source(name)
    split = STANDARD_SPLITS[name]
    dataset = loaded.dataset
    data_dir = write_dataset({"customers": dataset.customers, "orders": dataset.orders},
                             work / "data")
    as_of, end = split.as_of, split.as_of + pd.Timedelta(days=split.horizon_days)
    orders = dataset.orders
    known = orders.loc[orders["ordered_at"] < as_of, "customer_id"].unique()
    holdout = orders[(orders["ordered_at"] >= as_of) & (orders["ordered_at"] < end)]
    actual = holdout.groupby("customer_id")["amount"].sum().reindex(known, fill_value=0.0)

    summary = purchase_summary(orders, as_of=as_of, period="week").reindex(known)
    weeks = split.horizon_days / WEEK_DAYS
    bgnbd = BuyTillYouDie().fit(summary).predict(summary, horizon_weeks=weeks,
                                                 clv_horizon_weeks=weeks)["clv"]
    reference = clv_metrics(actual.to_numpy(float), bgnbd.reindex(known).to_numpy(float))
    lines = ["| seed | customers scored | CLV Spearman | normalized Gini | total vs actual | "
             "decile error | BG/NBD+GG decile error |", "|---|---|---|---|---|---|---|"]
    for seed in seeds:
        run_dir = work / f"seed-{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        days = str(split.horizon_days)
        _churnlens("train", "--data", str(data_dir), "--as-of", f"{as_of:%Y-%m-%d}",
                   "--horizon", days, "--clv-horizon", days, "--seed", str(seed), cwd=run_dir)
        _churnlens("score", "--data", str(data_dir), "--as-of", f"{as_of:%Y-%m-%d}",
                   "--out", "scores.parquet", "--explain", "none", cwd=run_dir)
        scores = pd.read_parquet(run_dir / "scores.parquet").set_index("customer_id")
        predicted = scores["clv"].reindex(known)
        ours = clv_metrics(actual.to_numpy(float), predicted.fillna(0.0).to_numpy(float))
        lines.append(f"| {seed} | {int(predicted.notna().sum()):,} of {len(known):,} | "
                     f"{ours['spearman']:.3f} | {ours['normalized_gini']:.3f} | "
                     f"{ours['total_ratio']:+.1%} | {ours['decile_error']:.3f} | "
                     f"{reference['decile_error']:.3f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cdnow", choices=["cdnow", "cdnow-sample"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=None,
                        help="Folder for the dataset, MLflow stores and scores (default: temp)")
    args = parser.parse_args()
    if args.work is not None:
        print(run(args.data, args.seeds, args.work))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(run(args.data, args.seeds, Path(tmp)))


if __name__ == "__main__":
    main()
