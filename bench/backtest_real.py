"""Backtest churnlens on the real purchase logs and print the README table.

    .venv/bin/python bench/backtest_real.py [--data-dir ../shared/data] [--out FILE.md]

Runs the standard splits of ../shared/data/README.md (CDNOW at 1997-10-01 with
a 39-week holdout, Online Retail at 2011-09-01 to 2011-12-09) with the same
code as ``churnlens backtest --data cdnow|online-retail``, and writes a
markdown table: our figures for every model, the published reference figures
(lifetimes 0.11.3) and issue 4's quality bar, with a pass/fail per target.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from training.backtest import backtest, quality_checks
from training.params import TrainParams
from training.realdata import QUALITY_BAR, REFERENCE_FIGURES, STANDARD_SPLITS, load_source

DATASETS = {"cdnow": "CDNOW", "online-retail": "Online Retail"}
PENALIZER = {"cdnow": 0.0, "online-retail": 0.1}
#: LightGBM settings passed through TrainParams (none: the tree size and the CLV model
#: form are chosen by the training code on the held-out training snapshot)
TRAIN_OVERRIDES: dict[str, dict[str, int]] = {"cdnow": {}, "online-retail": {}}


def _f(value: float, *, pct: bool = False) -> str:
    if value != value:
        return "–"
    return f"{value:+.1%}" if pct else f"{value:.3f}"


def run(data_dir: Path | None) -> str:
    """Backtest both datasets; return the markdown report."""
    lines = ["| dataset | model | churn ROC AUC | PR AUC | top-decile lift | ECE | "
             "CLV Spearman | normalized Gini | total vs actual | decile error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts, notes = [], []
    for name, title in DATASETS.items():
        started = time.perf_counter()
        loaded = load_source(name, data_dir=data_dir)
        split = STANDARD_SPLITS[name]
        params = dataclasses.replace(TrainParams(), horizon_days=split.horizon_days,
                                     clv_horizon_days=split.horizon_days,
                                     **TRAIN_OVERRIDES[name])
        result = backtest(loaded.dataset, as_of=split.as_of, params=params,
                          reference_penalizer=PENALIZER[name])
        for model, row in result.metrics.iterrows():
            lines.append(
                f"| {title} | {model} | {_f(row['roc_auc'])} | {_f(row['pr_auc'])} | "
                f"{_f(row['top_decile_lift'])} | {_f(row['ece'])} | {_f(row['spearman'])} | "
                f"{_f(row['normalized_gini'])} | {_f(row['total_ratio'], pct=True)} | "
                f"{_f(row['decile_error'])} |")
        ref = REFERENCE_FIGURES[name]
        lines.append(
            f"| {title} | *published BG/NBD+GG (lifetimes)* | {ref['bgnbd_roc_auc']:.3f} | | | | "
            f"{ref['bgnbd_spearman']:.3f} | {ref['bgnbd_normalized_gini']:.3f} | "
            f"{ref['bgnbd_total_ratio']:+.1%} | {ref['bgnbd_decile_error']:.3f} |")
        lines.append(
            f"| {title} | *published recency / spend×freq/recency* | "
            f"{ref['recency_roc_auc']:.3f} | | | | {ref['spend_frequency_recency_spearman']:.3f} | "
            f"{ref['spend_frequency_recency_normalized_gini']:.3f} | | |")
        bar = QUALITY_BAR[name]
        lines.append(
            f"| {title} | **target for churnlens** | ≥ {bar['roc_auc']:.3f} | | | "
            f"≤ {bar['ece']:.2f} | ≥ {bar['spearman']:.3f} | ≥ {bar['normalized_gini']:.3f} | "
            f"±{bar['abs_total_ratio']:.0%} | ≤ {bar['decile_error']:.3f} |")
        checks = quality_checks(result.metrics.loc["churnlens"], bar)
        verdicts.append(f"- {title}: " + ", ".join(
            f"{k} {'✓' if ok else '✗'}" for k, ok in checks.items()))
        notes.append(f"- {title} ({time.perf_counter() - started:.0f} s, churn rate "
                     f"{result.metrics.loc['churnlens', 'churn_rate']:.3f} of "
                     f"{int(result.metrics.loc['churnlens', 'customers']):,} customers): "
                     + "; ".join(loaded.notes + result.notes))
    return "\n".join([*lines, "", "churnlens against the bar:", *verdicts, "",
                      "Notes:", *notes, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of the real datasets (default ../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    report = run(args.data_dir)
    sys.stdout.write(report)
    if args.out is not None:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
