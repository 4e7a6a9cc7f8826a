"""Generated data and fitted bundles shared by the models/training tests (cached per session).

Small on purpose: a few hundred customers, six snapshots, few trees, so the
whole models/training suite stays fast on two shared cores.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from functools import cache

import numpy as np
import pandas as pd

from training.params import TrainParams

END = date(2026, 6, 30)
CUSTOMERS = 2000
SEED = 11
FAST = TrainParams(definition="inactivity", max_snapshots=6, num_boost_round=150,
                   learning_rate=0.1, early_stopping_rounds=20, min_customers=30)


@cache
def generated(kind: str = "ecommerce", customers: int = CUSTOMERS, seed: int = SEED):
    """(GeneratedData, Dataset) of a seeded generated business."""
    from features.contract import validate_tables
    from features.generate import generate_dataset

    data = generate_dataset(customers=customers, seed=seed, end=END, kind=kind)
    dataset = validate_tables(dict(data.tables), sources={}, first_rows={}).dataset
    return data, dataset


@cache
def training_set(kind: str = "ecommerce", definition: str = "inactivity"):
    from features.snapshots import build_training_set

    _, dataset = generated(kind)
    return build_training_set(dataset, as_of=dataset.default_as_of(), horizon_days=90,
                              clv_horizon_days=365, definition=definition, step_days=30,
                              max_snapshots=FAST.max_snapshots)


@cache
def fitted(kind: str = "ecommerce", definition: str = "inactivity"):
    """FitResult of the fast parameters on a generated training set."""
    from training.fit import fit_bundle

    ts = training_set(kind, definition)
    return fit_bundle(ts, params=replace(FAST, definition=definition),
                      event_types=ts.event_types, definition=definition)


def shuffled(ts, *, seed: int = 0):
    """The same training set with churn labels permuted within each snapshot's population."""
    frame = ts.frame.copy()
    rng = np.random.default_rng(seed)
    for _, index in frame[frame["churned"].notna()].groupby("snapshot_at").groups.items():
        frame.loc[index, "churned"] = rng.permutation(frame.loc[index, "churned"].to_numpy())
    return replace(ts, frame=frame)


def holdout_features(fit) -> pd.DataFrame:
    """The held-out snapshot's feature frame, indexed by customer_id, as scoring sees it."""
    from features.snapshots import features_of

    return features_of(fit.holdout)
