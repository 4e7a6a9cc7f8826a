"""Benchmark: does `churnlens monitor` read the generated truth right, over several seeds?

For each seed, the monitoring world of the tests (``tests/monitoring_support.py``):
a model trained as of 2024-01-01 on generated data, real batch scores stored at
three dates whose horizon has passed and one recent date, and the same world
with app sessions halved from 2023-12-01. Reported per seed:

- realized ROC AUC from the monitor, the AUC of the same scores against the
  outcomes recomputed from the generated orders (target: within 0.005), and the
  AUC against the generator's latent churn dates;
- the verdict on the unshifted world (target: never RETRAIN) and on the shifted
  one (target: RETRAIN, with a session feature first).

    nice -n 10 .venv/bin/python bench/monitor_bench.py [--seeds 5] [--customers 1500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def one_seed(root: Path, seed: int, customers: int) -> dict[str, object]:
    import mlflow
    from monitoring_support import (
        DRIFT_BY,
        MATURE_BY,
        build_world,
        outcomes_from_orders,
    )
    from sklearn.metrics import roc_auc_score

    from features.io import read_dataset
    from serving.monitoring.monitor import run_monitor
    from serving.monitoring.tracking import RegisteredBundles
    from serving.outreach.outbox import Outbox

    folder = root / f"seed-{seed}"
    folder.mkdir()
    os.chdir(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    world = build_world(folder, customers=customers, seed=seed)
    plain = read_dataset(world.plain).dataset
    scores = Outbox(world.outbox("plain")).score_history()
    judged = run_monitor(plain, scores, as_of=pd.Timestamp(MATURE_BY),
                         load_bundle=RegisteredBundles())
    realized = judged.realized(world.version)["roc_auc"]
    matured = scores[scores["as_of"] + pd.Timedelta(days=90) <= pd.Timestamp(MATURE_BY)]
    truth = outcomes_from_orders(world.plain, matured)
    known = truth.notna() & matured["churn_probability"].notna()
    direct = roc_auc_score(truth[known], matured.loc[known, "churn_probability"])
    ground = pd.read_csv(world.plain / "ground_truth.csv", parse_dates=["churned_at"],
                         dtype={"customer_id": str}).set_index("customer_id")["churned_at"]
    left = ground.reindex(matured["customer_id"]).to_numpy()
    gone = pd.notna(left) & (left < (matured["as_of"] + pd.Timedelta(days=90)).to_numpy())
    latent = roc_auc_score(gone[known.to_numpy()], matured.loc[known, "churn_probability"])
    keep = run_monitor(plain, scores, as_of=pd.Timestamp(DRIFT_BY),
                       load_bundle=RegisteredBundles())
    shifted_scores = Outbox(world.outbox("shifted")).score_history()
    shifted = run_monitor(read_dataset(world.shifted).dataset, shifted_scores,
                          as_of=pd.Timestamp(DRIFT_BY), load_bundle=RegisteredBundles())
    top = shifted.drift[world.version].top_features(1).iloc[0]
    plain_top = keep.drift[world.version].top_features(1).iloc[0]
    return {"seed": seed, "outcomes": int(known.sum()), "realized_auc": realized,
            "direct_auc": direct, "latent_auc": latent, "gap": abs(realized - direct),
            "unshifted_verdict": keep.verdict.line.split(":")[0],
            "unshifted_max_psi": f"{plain_top['psi']:.2f} {plain_top['name']}",
            "shifted_verdict": shifted.verdict.line.split(":")[0],
            "shifted_top": f"{top['psi']:.2f} {top['name']}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--customers", type=int, default=1500)
    args = parser.parse_args()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    rows = []
    with tempfile.TemporaryDirectory(prefix="churnlens-monitor-bench-") as folder:
        for seed in range(1, args.seeds + 1):
            rows.append(one_seed(Path(folder), seed, args.customers))
            print(rows[-1], flush=True)
        os.chdir(Path(folder).parent)
    frame = pd.DataFrame(rows).set_index("seed")
    print()
    print(f"monitor against the generated truth, {args.seeds} seeds, "
          f"{args.customers:,} customers each")
    print(frame.to_string(float_format=lambda v: f"{v:.4f}"))
    flagged = ((frame["shifted_verdict"] == "RETRAIN")
               & frame["shifted_top"].str.contains("session")).sum()
    print(f"largest |realized - direct| AUC gap: {frame['gap'].max():.4f} (target <= 0.005); "
          f"unshifted RETRAIN verdicts: {(frame['unshifted_verdict'] == 'RETRAIN').sum()}; "
          f"shifted RETRAIN with a session feature first: {flagged}/{len(frame)}")


if __name__ == "__main__":
    main()
