"""Benchmark: do `churnlens outreach effect`'s 95% intervals cover the true effects?

One model is trained once on a generated world. Then, for each seed, a fresh
world is generated, scored with ``churnlens score --outreach`` and the rules
of ``bench/effect_rules.yaml`` (half of every rule's customers held out), the
same world is regenerated and ``outreach replay`` replays the actions (treated customers
answer with the known effects of `features.outreach_sim`), and the measured
churn reduction of each rule is compared with its true average effect
(``outreach_truth.csv``, carried into the champion's churn definition:
`truth_in_definition`). Reported per rule: seeds measured, share of seeds
whose interval covers the truth (target ≥ 90%), mean truth, mean estimate,
mean interval width.

    nice -n 10 .venv/bin/python bench/effect_bench.py [--seeds 20] [--customers 3000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import date
from pathlib import Path

import pandas as pd

RULES = Path(__file__).resolve().parent / "effect_rules.yaml"
END = date(2024, 6, 30)
ACTED_ON = "2024-01-01"
JUDGED_ON = "2024-07-01"


def _invoke(runner, app, args: list[str]) -> None:
    result = runner.invoke(app, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"churnlens {' '.join(args)} failed:\n{result.output}")


def build_seed(root: Path, seed: int, *, customers: int, runner, app) -> tuple[Path, str]:
    """Generate, score with outreach (the champion), replay: the seed's folder and outbox."""
    folder = root / f"seed-{seed}"
    outbox = f"sqlite:///{folder / 'outbox.db'}"
    world = ["generate", "--customers", str(customers), "--seed", str(seed), "--end",
             END.isoformat(), "--kind", "ecommerce"]
    _invoke(runner, app, [*world, "--out", str(folder / "plain")])
    _invoke(runner, app, ["score", "--data", str(folder / "plain"), "--as-of", ACTED_ON,
                          "--out", str(folder / "scores.parquet"), "--outreach", "--workers",
                          "1", "--outbox-url", outbox, "--rules", str(RULES)])
    _invoke(runner, app, [*world, "--out", str(folder / "replayed")])
    _invoke(runner, app, ["outreach", "replay", "--data", str(folder / "replayed"), "--seed",
                          str(seed), "--outbox", outbox])
    return folder, outbox


def train_champion(root: Path, *, customers: int, runner, app,
                   definition: str | None = None) -> None:
    """Point MLflow at ``root`` and register one churn model trained as of `ACTED_ON`.

    ``definition`` is the churn definition (None: auto, which is ``activity`` on
    these worlds, since they have events).
    """
    import mlflow

    from features.io import read_dataset
    from training.params import TrainParams
    from training.run import train_and_register

    os.chdir(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(uri)
    _invoke(runner, app, ["generate", "--customers", str(customers), "--seed", "999",
                          "--end", END.isoformat(), "--kind", "ecommerce", "--out",
                          str(root / "training")])
    train_and_register(read_dataset(root / "training").dataset, as_of=pd.Timestamp(ACTED_ON),
                       params=TrainParams(num_boost_round=100, num_threads=1, seed=0,
                                          definition=definition))


def truth_in_definition(folder: Path, truth: pd.DataFrame) -> pd.Series:
    """Each truth row's true churn reduction in the champion's churn definition.

    The simulator states its effects on inactivity churn (`features.outreach_sim`):
    a customer it saves places an order. Under the activity definition that
    order changes the outcome only of a customer who would otherwise have shown
    no activity at all, so the true reduction is the inactivity one times the
    untreated world's activity label (and 0 for a customer with no completed
    order before the action, whom the simulator never saves); NaN outside the
    definition's population. Under inactivity it is the simulator's own truth.
    """
    from features.history import History
    from features.io import read_dataset
    from features.labels import labels_at
    from models.loading import load_model

    bundle = load_model("models:/churnlens@champion").bundle
    untreated = labels_at(History(read_dataset(folder / "plain").dataset),
                          as_of=pd.Timestamp(ACTED_ON), horizon_days=bundle.horizon_days,
                          clv_horizon_days=bundle.horizon_days,
                          **bundle.label_settings())["churned"]
    judged = untreated.reindex(truth["customer_id"].astype(str)).to_numpy()
    return pd.Series(truth["true_churn_reduction"].fillna(0).to_numpy() * judged,
                     index=truth.index)


def one_seed(root: Path, seed: int, *, customers: int, runner, app) -> list[dict[str, object]]:
    from features.history import History
    from features.io import read_dataset
    from serving.monitoring.effect import measure_effects
    from serving.monitoring.tracking import RegisteredBundles
    from serving.outreach.outbox import Outbox
    from serving.outreach.rules import load_rules

    folder, outbox = build_seed(root, seed, customers=customers, runner=runner, app=app)
    truth = pd.read_csv(folder / "replayed" / "outreach_truth.csv", dtype={"customer_id": str})
    # the truth of the churn the champion measures (its definition), see truth_in_definition
    truth["true_churn_reduction"] = truth_in_definition(folder, truth)
    costs = {rule.name: rule.cost for rule in load_rules(RULES).rules}
    store = Outbox(outbox)
    effects, _ = measure_effects(History(read_dataset(folder / "replayed").dataset),
                                 store.action_history(), as_of=pd.Timestamp(JUDGED_ON),
                                 costs=costs, load_bundle=RegisteredBundles())
    store.close()
    rows = []
    for e in effects:
        if not e.measured:
            continue
        true = truth.loc[(truth["rule"] == e.rule) & truth["true_churn_reduction"].notna(),
                         "true_churn_reduction"].mean()
        low, high = e.churn_reduction_ci
        rows.append({"seed": seed, "rule": e.rule, "action": e.action, "treated": e.treated,
                     "control": e.control, "truth": true, "estimate": e.churn_reduction,
                     "low": low, "high": high, "covered": low <= true <= high})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--customers", type=int, default=3000)
    args = parser.parse_args()

    from typer.testing import CliRunner

    from churnlens import build_app

    with tempfile.TemporaryDirectory(prefix="churnlens-effect-bench-") as folder:
        root = Path(folder)
        runner, app = CliRunner(), build_app()
        train_champion(root, customers=args.customers, runner=runner, app=app)
        rows = []
        for seed in range(1, args.seeds + 1):
            found = one_seed(root, seed, customers=args.customers, runner=runner, app=app)
            rows.extend(found)
            print(f"seed {seed}: " + "; ".join(
                f"{r['rule']} truth {r['truth']:.3f} in [{r['low']:.3f}, {r['high']:.3f}]: "
                f"{'yes' if r['covered'] else 'NO'}" for r in found), flush=True)
    frame = pd.DataFrame(rows)
    frame["width"] = frame["high"] - frame["low"]
    summary = frame.groupby(["rule", "action"]).agg(
        seeds=("seed", "nunique"), coverage=("covered", "mean"), truth=("truth", "mean"),
        estimate=("estimate", "mean"), width=("width", "mean"),
        treated=("treated", "median"), control=("control", "median"))
    print()
    print(f"95% interval coverage of the true churn reduction over {args.seeds} seeds "
          f"({args.customers:,} customers each; target >= 90%)")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"all rules: {frame['covered'].mean():.1%} of {len(frame)} intervals cover the truth")


if __name__ == "__main__":
    main()
