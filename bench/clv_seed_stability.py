"""CDNOW's CLV decile error across LightGBM seeds: one CLV booster against a seed average.

    .venv/bin/python bench/clv_seed_stability.py [--data cdnow] [--seeds 0 1 2 3 4]
                                                 [--clv-seeds 1 5]

Runs the standard backtest split (as ``churnlens backtest --data cdnow --seed S``)
for every seed and every number of averaged CLV boosters, with BG/NBD +
Gamma-Gamma from the same run as the reference, and prints one markdown row
per run plus the range over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from training.backtest import backtest
from training.params import TrainParams
from training.realdata import STANDARD_SPLITS, load_source

PENALIZER = {"cdnow": 0.0, "cdnow-sample": 0.0, "online-retail": 0.1}


def run(name: str, seeds: list[int], clv_seeds: list[int], data_dir: Path | None) -> str:
    """Backtest every (clv_seeds, seed) pair; return a markdown table."""
    loaded = load_source(name, data_dir=data_dir)
    split = STANDARD_SPLITS[name]
    lines = ["| CLV boosters averaged | seed | churn ROC AUC | CLV Spearman | normalized Gini | "
             "total vs actual | decile error | BG/NBD+GG decile error |",
             "|---|---|---|---|---|---|---|---|"]
    summary = []
    for n in clv_seeds:
        errors = []
        for seed in seeds:
            params = dataclasses.replace(TrainParams(), horizon_days=split.horizon_days,
                                         clv_horizon_days=split.horizon_days, seed=seed,
                                         clv_seeds=n)
            metrics = backtest(loaded.dataset, as_of=split.as_of, params=params,
                               reference_penalizer=PENALIZER[name]).metrics
            ours, ref = metrics.loc["churnlens"], metrics.loc["bgnbd"]
            errors.append(float(ours["decile_error"]))
            lines.append(f"| {n} | {seed} | {ours['roc_auc']:.3f} | {ours['spearman']:.3f} | "
                         f"{ours['normalized_gini']:.3f} | {ours['total_ratio']:+.1%} | "
                         f"{ours['decile_error']:.3f} | {ref['decile_error']:.3f} |")
            print(lines[-1], flush=True)
        summary.append(f"- {n} CLV booster(s): decile error {min(errors):.3f}–{max(errors):.3f} "
                       f"over seeds {seeds[0]}–{seeds[-1]}")
    return "\n".join([*lines, "", *summary, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cdnow", choices=sorted(PENALIZER))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--clv-seeds", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    print(run(args.data, args.seeds, args.clv_seeds, args.data_dir))


if __name__ == "__main__":
    main()
