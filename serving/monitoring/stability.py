"""Drift: how far the customers scored lately have moved from the training reference.

The features are recomputed from the data as of the scoring date (the one
feature function scoring used), for the customers that date scored inside the
churn population, and compared bin by bin with the reference stored in the
bundle (`models.drift`). The score itself is compared too: the stored
probabilities against the held-out snapshot's.

Calendar features (day of the year the window starts, ...) are left out: they
move with the scoring date by construction, so their "drift" says nothing.
Fewer than `MIN_CUSTOMERS` customers give no table: a PSI over a handful of
customers is noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.history import History
from features.pipeline import features_at
from models.bundle import ChurnBundle
from models.drift import stability

#: fewest customers scored at one date for drift to be measured
MIN_CUSTOMERS = 100


@dataclass(frozen=True)
class Drift:
    """Population stability of one model version's scores at one scoring date."""

    model_version: str
    scored_at: pd.Timestamp
    customers: int
    table: pd.DataFrame  # name, psi, kind; largest first

    @property
    def score_psi(self) -> float:
        row = self.table[self.table["kind"] == "score"]
        return float(row["psi"].iloc[0]) if len(row) else float("nan")

    def top_features(self, n: int = 5) -> pd.DataFrame:
        return self.table[self.table["kind"] == "feature"].head(n)


def measure_drift(history: History, scores: pd.DataFrame, *, bundle: ChurnBundle,
                  model_version: str) -> Drift | None:
    """PSI at the latest scoring date in ``scores`` (one version).

    None without a reference or with fewer than `MIN_CUSTOMERS` scored customers.
    """
    if not bundle.drift_reference or scores.empty:
        return None
    latest = scores["as_of"].max()
    rows = scores[(scores["as_of"] == latest) & scores["churn_probability"].notna()]
    if rows.empty:
        return None
    if len(rows) < MIN_CUSTOMERS:
        return None
    features = features_at(history, as_of=latest, event_types=bundle.event_types)
    features = features.reindex(pd.Index(rows["customer_id"].astype(str)))
    calendar = {name for name, info in bundle.feature_info.items()
                if info.get("unit") == "calendar"}
    reference = {**bundle.drift_reference, "features": {
        name: spec for name, spec in bundle.drift_reference.get("features", {}).items()
        if name not in calendar}}
    table = stability(reference, features, rows["churn_probability"].to_numpy(float))
    return Drift(model_version=model_version, scored_at=pd.Timestamp(latest),
                 customers=len(rows), table=table)
