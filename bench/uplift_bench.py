"""Benchmark: whom to contact — ranking by estimated saved value against value at risk.

Worlds as in ``bench/effect_bench.py`` (one churn model; each world scored with
``churnlens score --outreach`` and the rules of ``bench/effect_rules.yaml``,
half of every rule's customers held out, then replayed with the known effects
of `features.outreach_sim`). Uplift models (`models.uplift`: two-model and
X-learner, LightGBM on the churn model's feature matrix) are fitted per rule on
the matured treated/control outcomes of the training worlds, and judged on each
held-out world's matched customers against each one's *true* effect:

- Qini coefficient (`models.uplift.qini_coefficient`, on the true churn
  reduction) of ranking by ``expected_saved_value`` = estimated reduction × CLV
  − cost, and of ranking by value at risk (churn probability × CLV);
- the true value saved (revenue gain − cost) by contacting the top 10% of each;
- the ceiling: ranking by the simulator's true effect size × value at risk,
  what a perfect estimate of who the action helps would reach with the churn
  model's probability (the true effect also depends on whether the customer
  would really have churned, which no ranking can know).

Outcomes and truth follow the champion's churn definition (``--churn``): the
learners see the outcomes ``train --uplift`` would (`training.uplift.
matured_outcomes`), and each customer's true effect is the simulator's
(stated on inactivity churn) carried into that definition (`rule_rows`). On
these worlds ``auto`` picks activity, under which the high-value customers a
success call targets hardly ever churn (app activity keeps them active), so
its effect on that churn is tiny; ``inactivity`` is the purchase churn the
simulated effects are stated on (the tests' worlds use it too).

Reported as median [min, max] over the held-out worlds, and per world the
shipped learner's gain and the ceiling's headroom over value at risk.
``--cache DIR`` keeps each world's matched customers (a few hundred kB per
world) so that comparing learners does not rebuild the worlds.

    nice -n 10 .venv/bin/python bench/uplift_bench.py [--train-seeds 1 2 3]
        [--test-seeds 101 ... 110] [--churn auto|inactivity] [--cache DIR] [--per-world]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from effect_bench import (
    ACTED_ON,
    JUDGED_ON,
    RULES,
    build_seed,
    train_champion,
    truth_in_definition,
)

#: the ranking by the learner train --uplift would ship (chosen on the training outcomes)
SHIPPED = "chosen by cross-fitted Qini (shipped)"
#: bumped whenever `rule_rows` changes what a cached world holds
ROWS_VERSION = 3
TRUTH = ["true_churn_reduction", "true_revenue_gain", "effect_size", "untreated_churned",
         "lapsed", "declining", "high_value", "price_sensitive"]


def rule_rows(folder: Path, outbox: str) -> pd.DataFrame:
    """Matched customers of every rule: model matrix, treated, churned, score, truth.

    ``churned`` is what ``train --uplift`` learns from (`training.uplift.
    matured_outcomes`: the champion's churn definition), and the truth is judged
    in that same definition (`effect_bench.truth_in_definition`).
    """
    from features.history import History
    from features.io import read_dataset
    from features.pipeline import features_at
    from models.loading import load_model
    from serving.outreach.outbox import Outbox
    from training.uplift import matured_outcomes

    bundle = load_model("models:/churnlens@champion").bundle
    actions = Outbox(outbox).action_history()
    history = History(read_dataset(folder / "replayed").dataset)
    t = pd.Timestamp(ACTED_ON)
    outcomes = matured_outcomes(history, actions, as_of=pd.Timestamp(JUDGED_ON), bundle=bundle)
    X = bundle.prepare(features_at(history, as_of=t, event_types=bundle.event_types))
    scores = pd.read_parquet(folder / "scores.parquet").set_index("customer_id")
    truth = pd.read_csv(folder / "replayed" / "outreach_truth.csv", dtype={"customer_id": str})
    truth["true_churn_reduction_inactivity"] = truth["true_churn_reduction"]
    truth["true_churn_reduction"] = truth_in_definition(folder, truth)
    rows = outcomes.merge(truth[["customer_id", "rule", "true_churn_reduction_inactivity",
                                 *TRUTH]], on=["customer_id", "rule"])
    for column in ("clv", "value_at_risk", "churn_probability", "value_segment",
                   "lifecycle_stage"):
        rows[column] = scores[column].reindex(rows["customer_id"]).to_numpy()
    # learned from: a matured outcome and a churn probability (value at risk) to rank by;
    # judged: those with a truth in the champion's definition (the simulator states none
    # for a customer with no completed order before the action: no purchase churn to
    # prevent, but a discount on a first order), which an activity model also scores
    rows = rows[rows["churned"].notna() & rows["churn_probability"].notna()].reset_index(
        drop=True)
    rows["judged"] = (rows["true_churn_reduction"].notna()
                      & rows["true_churn_reduction_inactivity"].notna())
    matrix = X.reindex(pd.Index(rows["customer_id"].astype(str))).reset_index(drop=True)
    return pd.concat([rows, matrix.add_prefix("x:")], axis=1)


class Worlds:
    """Each seed's matched customers, built once (champion, generate, score, replay).

    With ``cache``, a seed's rows are kept as ``rows-v<V>-seed<N>-<customers>-<churn>.parquet``
    there and read back on the next run, so comparing learners does not rebuild
    the worlds (the champion is deterministic: seed 999, as of `ACTED_ON`).
    """

    def __init__(self, root: Path, *, customers: int, cache: Path | None,
                 definition: str) -> None:
        from typer.testing import CliRunner

        from churnlens import build_app

        self.root, self.customers, self.cache = root, customers, cache
        self.definition = definition
        self.runner, self.app = CliRunner(), build_app()
        self.trained = False

    def rows(self, seed: int) -> pd.DataFrame:
        path = None if self.cache is None else (
            self.cache / f"rows-v{ROWS_VERSION}-seed{seed}-{self.customers}-"
                         f"{self.definition}.parquet")
        if path is not None and path.exists():
            frame = pd.read_parquet(path)
            # a categorical column with no level (a plan on a shop with no subscription)
            # comes back from parquet as object: LightGBM needs it categorical again
            empty = [c for c in frame.columns if c.startswith("x:") and frame[c].dtype == object]
            return frame.astype(dict.fromkeys(empty, "category"))
        if not self.trained:
            train_champion(self.root, customers=self.customers, runner=self.runner,
                           app=self.app, definition=None if self.definition == "auto"
                           else self.definition)
            self.trained = True
        frame = rule_rows(*build_seed(self.root, seed, customers=self.customers,
                                      runner=self.runner, app=self.app))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path)
        return frame


def learners() -> dict[str, tuple[object, bool]]:
    """The learners `churnlens train --uplift` chooses among: name → (estimator, on churn model)."""
    from models.uplift import uplift_estimator
    from training.uplift import CANDIDATES, candidate_name

    return {candidate_name(method, on_churn_model): (
        uplift_estimator(method, num_boost_round=rounds), on_churn_model)
        for method, on_churn_model, rounds in CANDIDATES}


def judge(rule: str, world: int, rows: pd.DataFrame, rankings: dict[str, np.ndarray],
          cost: float) -> list[dict[str, object]]:
    """Qini on the true churn reduction and true value saved by the top 10%, per ranking."""
    from models.uplift import qini_coefficient

    effect = rows["true_churn_reduction"].to_numpy(float)
    value = rows["true_revenue_gain"].to_numpy(float) - cost
    top = max(1, round(0.1 * len(rows)))
    out = []
    for name, ranking in rankings.items():
        order = np.argsort(-ranking, kind="stable")
        out.append({"rule": rule, "world": world, "ranking": name,
                     "held-out customers": len(rows),
                     "qini": qini_coefficient(ranking, effect),
                     "value saved, top 10%": float(value[order[:top]].sum()),
                     "customers saved, top 10%": float(effect[order[:top]].sum())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--churn", choices=["auto", "inactivity"], default="auto",
                        help="the champion's churn definition, which the outcomes and the "
                             "truth follow: auto (activity on these worlds, as "
                             "bench/effect_bench.py) or inactivity (the purchase churn the "
                             "simulated effects are stated on)")
    parser.add_argument("--per-world", action="store_true", help="print every world's figures")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep each world's matched customers here and reuse them")
    args = parser.parse_args()

    from models.uplift import expected_saved_value
    from serving.outreach.rules import load_rules
    from training.uplift import choose_uplift

    costs = {rule.name: rule.cost for rule in load_rules(RULES).rules}
    with tempfile.TemporaryDirectory(prefix="churnlens-uplift-bench-") as folder:
        worlds = Worlds(Path(folder), customers=args.customers, cache=args.cache,
                        definition=args.churn)
        training = pd.concat([worlds.rows(seed) for seed in args.train_seeds],
                             ignore_index=True)
        tests = {seed: worlds.rows(seed) for seed in args.test_seeds}
    columns = [c for c in training.columns if c.startswith("x:")]
    results: list[dict[str, object]] = []
    counts: list[str] = []
    choices: list[str] = []
    for rule in sorted(set(training["rule"])):
        fit_rows = training[training["rule"] == rule]
        treated = (fit_rows["assignment"] == "treated").to_numpy()
        counts.append(f"{rule} {int(treated.sum())} treated / {int((~treated).sum())} control")
        if min(treated.sum(), (~treated).sum()) < 20:
            print(f"{rule}: too few customers to fit ({len(fit_rows)} training)")
            continue
        X_fit = fit_rows[columns].rename(columns=lambda c: c[2:])
        base_fit = fit_rows["churn_probability"].to_numpy(float)
        # what train --uplift ships: the learner with the best cross-fitted observed Qini
        choice = choose_uplift(X_fit, treated, fit_rows["churned"].to_numpy(float),
                               churn_probability=base_fit,
                               clv=fit_rows["clv"].to_numpy(float))
        choices.append(f"{rule}: {choice.name} (cross-fitted Qini " + ", ".join(
            f"{name} {q:.4f}" for name, q in choice.qini.items())
            + f"; value at risk {choice.value_at_risk_qini:.4f}; difference "
            f"[{choice.gain_interval[0]:.4f}, {choice.gain_interval[1]:.4f}]: "
            f"{choice.against_value_at_risk})")
        fitted = {}
        for name, (model, on_churn_model) in learners().items():
            fitted[name] = (model.fit(X_fit, treated, fit_rows["churned"].to_numpy(float),
                                      baseline=base_fit if on_churn_model else None),
                            on_churn_model)
        for seed, test in tests.items():
            rows = test[(test["rule"] == rule) & test["judged"]].reset_index(drop=True)
            if len(rows) < 50:
                print(f"{rule}: too few held-out customers in world {seed} ({len(rows)})")
                continue
            X_test = rows[columns].rename(columns=lambda c: c[2:])
            base_test = rows["churn_probability"].to_numpy(float)
            clv = rows["clv"].to_numpy(float)
            rankings = {
                "value at risk": rows["value_at_risk"].to_numpy(float),
                # what a perfect estimate of the action's effect size would reach with the
                # churn model's probability: the ceiling of expected_saved_value
                "ceiling: true effect size × value at risk":
                    rows["effect_size"].to_numpy(float) * rows["value_at_risk"].to_numpy(float),
            }
            for name, (model, on_churn_model) in fitted.items():
                reduction = model.predict(X_test, baseline=base_test if on_churn_model else None)
                rankings[name] = expected_saved_value(reduction, clv, costs[rule])
            rankings[SHIPPED] = rankings[choice.name]
            results.extend(judge(rule, seed, rows, rankings, costs[rule]))
    report(pd.DataFrame(results), header=(
        f"uplift ranking on held-out worlds {args.test_seeds} (churn model: {args.churn}; "
        f"trained on seeds {args.train_seeds}: {'; '.join(counts)}; {args.customers:,} "
        "customers each)"), per_world=args.per_world)
    print("chosen at training: " + "; ".join(choices))


def report(frame: pd.DataFrame, *, header: str, per_world: bool) -> None:
    """Median [min, max] over the held-out worlds; the shipped learner's gain and the headroom."""
    pd.set_option("display.width", 200)
    print()
    print(header)
    if per_world:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    summary = frame.groupby(["rule", "ranking"], sort=False).agg(
        worlds=("world", "nunique"),
        qini_median=("qini", "median"), qini_min=("qini", "min"), qini_max=("qini", "max"),
        saved_median=("value saved, top 10%", "median"),
        saved_min=("value saved, top 10%", "min"), saved_max=("value saved, top 10%", "max"))
    print(summary.to_string(float_format=lambda v: f"{v:,.3f}"))
    print()
    for rule, group in frame.groupby("rule"):
        by_world = group.pivot(index="world", columns="ranking", values="qini")
        base = by_world["value at risk"]
        headroom = by_world["ceiling: true effect size × value at risk"] - base
        gain = by_world[SHIPPED] - base
        print(f"{rule}: Qini {by_world[SHIPPED].median():.3f} ({SHIPPED}) against "
              f"{base.median():.3f} by value at risk: {gain.median():+.3f} median over "
              f"{len(gain)} worlds ({gain.min():+.3f} to {gain.max():+.3f}; target >= +0.05); "
              f"ceiling {headroom.median():+.3f} ({headroom.min():+.3f} to {headroom.max():+.3f})")
        print(f"  {rule} per world (shipped − value at risk / ceiling − value at risk): "
              + ", ".join(f"{world} {gain[world]:+.3f}/{headroom[world]:+.3f}"
                          for world in by_world.index))


if __name__ == "__main__":
    main()
