"""A generated world for monitoring tests: one model, scores stored at known dates.

Two datasets from one seed: ``plain`` and ``shifted``, where app sessions
happen half as often from `SHIFT_DAY` on (three months before `DRIFT_DATE`, so
every 90-day window read at that date is shifted). The model is trained on the
plain data as of `TRAIN_AS_OF`: its drift reference (the held-out snapshot, 90
days earlier) predates the shift, as it would for a model trained before a
change in behaviour.
Scores are written by the real ``churnlens score --outreach`` into SQLite outboxes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

END = date(2024, 6, 30)
TRAIN_AS_OF = "2024-01-01"
SHIFT_DAY = date(2023, 12, 1)
#: scoring dates whose 90-day horizon has passed by `MATURE_BY`
MATURED_DATES = ("2024-01-01", "2024-01-08", "2024-02-01")
#: scoring date used for drift: three months into the shift
DRIFT_DATE = "2024-03-01"
MATURE_BY = "2024-07-01"
DRIFT_BY = "2024-03-15"


@dataclass
class MonitoredWorld:
    """Where the world is, and its dates: `END` of the data, `MATURE_BY`, `DRIFT_BY`,
    `DRIFT_DATE` (see the module doc)."""

    root: Path
    plain: Path
    shifted: Path
    tracking_uri: str
    version: str
    end: ClassVar[date] = END
    mature_by: ClassVar[str] = MATURE_BY
    drift_by: ClassVar[str] = DRIFT_BY
    drift_date: ClassVar[str] = DRIFT_DATE

    def outbox(self, name: str) -> str:
        return f"sqlite:///{self.root / f'{name}.db'}"

    @staticmethod
    def score_into(runner, app, *, data: Path, as_of: str, outbox: str, out: Path) -> None:
        """``churnlens score --outreach`` of ``data`` as of ``as_of`` into ``outbox``."""
        score_into(runner, app, data=data, as_of=as_of, outbox=outbox, out=out)

    @staticmethod
    def outcomes_from_orders(data: Path, scores: pd.DataFrame) -> pd.Series:
        """See `outcomes_from_orders`."""
        return outcomes_from_orders(data, scores)


def score_into(runner, app, *, data: Path, as_of: str, outbox: str, out: Path) -> None:
    result = runner.invoke(app, ["score", "--data", str(data), "--as-of", as_of, "--out",
                                 str(out), "--outreach", "--workers", "1",
                                 "--outbox-url", outbox])
    assert result.exit_code == 0, result.output


_SHARED: dict[str, MonitoredWorld] = {}


def shared_world(base: Path) -> MonitoredWorld:
    """`build_world` once per test process (it trains a model); cwd and MLflow must be set."""
    if "world" not in _SHARED:
        _SHARED["world"] = build_world(base)
    return _SHARED["world"]


def build_world(root: Path, *, customers: int = 1500, seed: int = 5) -> MonitoredWorld:
    """Generate, train once, and store scores (see the module doc); cwd must be ``root``."""
    from serving_fixtures import tiny_params
    from typer.testing import CliRunner

    from churnlens import build_app
    from features.generate import generate_dataset
    from features.io import read_dataset
    from training.run import train_and_register

    plain, shifted = root / "plain", root / "shifted"
    generate_dataset(customers=customers, seed=seed, end=END, kind="ecommerce").write(plain)
    generate_dataset(customers=customers, seed=seed, end=END, kind="ecommerce",
                     session_shift=(SHIFT_DAY, 0.5)).write(shifted)
    dataset = read_dataset(plain).dataset
    # the world's truths (outcomes from orders, the simulated outreach) are those of a
    # purchase log: the inactivity definition, not what --churn auto picks with app events
    trained = train_and_register(dataset, as_of=pd.Timestamp(TRAIN_AS_OF),
                                 params=replace(tiny_params(seed), definition="inactivity"))
    world = MonitoredWorld(root=root, plain=plain, shifted=shifted,
                           tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                           version=str(trained.version))
    runner, app = CliRunner(), build_app()
    for day in (*MATURED_DATES, DRIFT_DATE):
        score_into(runner, app, data=plain, as_of=day, outbox=world.outbox("plain"),
                   out=root / f"plain-{day}.parquet")
    score_into(runner, app, data=shifted, as_of=DRIFT_DATE, outbox=world.outbox("shifted"),
               out=root / "shifted.parquet")
    return world


def outcomes_from_orders(data: Path, scores: pd.DataFrame, *, horizon_days: int = 90
                         ) -> pd.Series:
    """Inactivity churn of each score, straight from the generator's orders file.

    Written independently of `features.labels`: the population is customers with
    a completed order before the score's date, churned when they have none in
    the horizon after it; NaN outside the population.
    """
    orders = pd.read_csv(data / "orders.csv", parse_dates=["ordered_at"],
                         dtype={"customer_id": str})
    completed = orders.loc[orders["status"] == "completed", ["customer_id", "ordered_at"]]
    pairs = scores[["customer_id", "as_of"]].reset_index(names="row").merge(
        completed, on="customer_id", how="left")
    end = pairs["as_of"] + pd.Timedelta(days=horizon_days)
    pairs["before"] = pairs["ordered_at"] < pairs["as_of"]
    pairs["within"] = (pairs["ordered_at"] >= pairs["as_of"]) & (pairs["ordered_at"] < end)
    flags = pairs.groupby("row")[["before", "within"]].any()
    churned = np.where(flags["before"], (~flags["within"]).astype(float), np.nan)
    return pd.Series(churned, index=flags.index).reindex(scores.index)
