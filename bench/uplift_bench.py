"""Benchmark: whom to contact — ranking by estimated saved value against value at risk.

Worlds as in ``bench/effect_bench.py`` (one churn model; each world scored with
``churnlens score --outreach`` and the rules of ``bench/effect_rules.yaml``,
half of every rule's customers held out, then replayed with the known effects
of `features.outreach_sim`). Uplift models (`models.uplift`: two-model and
X-learner, LightGBM on the churn model's feature matrix) are fitted per rule on
the matured treated/control outcomes of the training worlds, and judged on a
held-out world's matched customers against each one's *true* effect:

- Qini coefficient (`models.uplift.qini_coefficient`, on the true churn
  reduction) of ranking by ``expected_saved_value`` = estimated reduction × CLV
  − cost, and of ranking by value at risk (churn probability × CLV);
- the true value saved (revenue gain − cost) by contacting the top 10% of each.

    nice -n 10 .venv/bin/python bench/uplift_bench.py [--train-seeds 1 2 3] [--test-seed 101]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from effect_bench import ACTED_ON, RULES, build_seed, train_champion


def rule_rows(folder: Path, outbox: str) -> pd.DataFrame:
    """Matched customers of every rule: model matrix, treated, churned, score, truth."""
    from features.history import History
    from features.io import read_dataset
    from features.labels import labels_at
    from features.pipeline import features_at
    from models.loading import load_model
    from serving.outreach.outbox import Outbox

    bundle = load_model("models:/churnlens@champion").bundle
    actions = Outbox(outbox).action_history()
    history = History(read_dataset(folder / "replayed").dataset)
    t = pd.Timestamp(ACTED_ON)
    labels = labels_at(history, as_of=t, horizon_days=90, clv_horizon_days=90,
                       definition="inactivity")
    X = bundle.prepare(features_at(history, as_of=t, event_types=bundle.event_types))
    scores = pd.read_parquet(folder / "scores.parquet").set_index("customer_id")
    truth = pd.read_csv(folder / "replayed" / "outreach_truth.csv", dtype={"customer_id": str})
    rows = actions.merge(truth[["customer_id", "rule", "true_churn_reduction",
                                "true_revenue_gain"]], on=["customer_id", "rule"])
    rows["churned"] = labels["churned"].reindex(rows["customer_id"]).to_numpy()
    rows["clv"] = scores["clv"].reindex(rows["customer_id"]).to_numpy()
    rows["value_at_risk"] = scores["value_at_risk"].reindex(rows["customer_id"]).to_numpy()
    rows["churn_probability"] = scores["churn_probability"].reindex(
        rows["customer_id"]).to_numpy()
    rows = rows[rows["churned"].notna()].reset_index(drop=True)
    matrix = X.reindex(pd.Index(rows["customer_id"].astype(str))).reset_index(drop=True)
    return pd.concat([rows, matrix.add_prefix("x:")], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--test-seed", type=int, default=101)
    parser.add_argument("--customers", type=int, default=3000)
    args = parser.parse_args()

    from typer.testing import CliRunner

    from churnlens import build_app
    from models.uplift import (
        TwoModelUplift,
        XLearnerUplift,
        expected_saved_value,
        qini_coefficient,
    )
    from serving.outreach.rules import load_rules

    costs = {rule.name: rule.cost for rule in load_rules(RULES).rules}
    with tempfile.TemporaryDirectory(prefix="churnlens-uplift-bench-") as folder:
        root = Path(folder)
        runner, app = CliRunner(), build_app()
        train_champion(root, customers=args.customers, runner=runner, app=app)
        training = pd.concat([rule_rows(*build_seed(root, seed, customers=args.customers,
                                                    runner=runner, app=app))
                              for seed in args.train_seeds], ignore_index=True)
        test = rule_rows(*build_seed(root, args.test_seed, customers=args.customers,
                                     runner=runner, app=app))
    columns = [c for c in training.columns if c.startswith("x:")]
    results = []
    for rule in sorted(set(test["rule"])):
        fit_rows = training[training["rule"] == rule]
        rows = test[test["rule"] == rule].reset_index(drop=True)
        treated = (fit_rows["assignment"] == "treated").to_numpy()
        if min(treated.sum(), (~treated).sum()) < 20 or len(rows) < 50:
            print(f"{rule}: too few customers to fit or judge ({len(fit_rows)} training, "
                  f"{len(rows)} held out)")
            continue
        X_fit = fit_rows[columns].rename(columns=lambda c: c[2:])
        X_test = rows[columns].rename(columns=lambda c: c[2:])
        effect = rows["true_churn_reduction"].to_numpy(float)
        value = rows["true_revenue_gain"].to_numpy(float) - costs[rule]
        top = max(1, round(0.1 * len(rows)))
        rankings = {"value at risk": rows["value_at_risk"].to_numpy(float)}
        base_fit = fit_rows["churn_probability"].to_numpy(float)
        base_test = rows["churn_probability"].to_numpy(float)
        for name, model, on_churn_model in (
                ("two-model", TwoModelUplift(), False), ("X-learner", XLearnerUplift(), False),
                ("two-model on the churn model", TwoModelUplift(num_boost_round=50), True),
                ("X-learner on the churn model", XLearnerUplift(num_boost_round=50), True)):
            model.fit(X_fit, treated, fit_rows["churned"].to_numpy(float),
                      baseline=base_fit if on_churn_model else None)
            reduction = model.predict(X_test, baseline=base_test if on_churn_model else None)
            rankings[f"expected saved value ({name})"] = expected_saved_value(
                reduction, rows["clv"].to_numpy(float), costs[rule])
        for name, ranking in rankings.items():
            order = np.argsort(-ranking, kind="stable")
            results.append({
                "rule": rule, "ranking": name, "held-out customers": len(rows),
                "training customers": len(fit_rows),
                "qini": qini_coefficient(ranking, effect),
                "value saved, top 10%": float(value[order[:top]].sum()),
                "customers saved, top 10%": float(effect[order[:top]].sum()),
            })
    frame = pd.DataFrame(results)
    print()
    print(f"uplift ranking on held-out world seed {args.test_seed} (trained on seeds "
          f"{args.train_seeds}, {args.customers:,} customers each)")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    for rule, group in frame.groupby("rule"):
        base = group.loc[group["ranking"] == "value at risk", "qini"].iloc[0]
        best = group[group["ranking"] != "value at risk"].sort_values("qini").iloc[-1]
        print(f"{rule}: Qini {best['qini']:.3f} ({best['ranking']}) against {base:.3f} by value "
              f"at risk: {best['qini'] - base:+.3f} (target >= +0.05)")


if __name__ == "__main__":
    main()
