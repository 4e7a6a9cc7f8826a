"""What a training run starts from: the churn definition, the snapshot training set, a profile.

Every data problem found here is a `TrainingDataError` naming what to change,
raised before anything is fitted, logged or registered.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from features.dataset import Dataset
from features.definition import ChurnDefinition, DefinitionError, resolve_definition
from features.labels import check_definition
from features.snapshots import TrainingSet, build_training_set
from training.params import TrainingDataError, TrainParams


def profile_dataset(dataset: Dataset, training_set: TrainingSet, *, as_of: pd.Timestamp
                    ) -> dict[str, Any]:
    """What the run was trained on: customers, rows per table, snapshots, churn rate, notes."""
    return profile_counts(customers=len(dataset.customers), rows=dataset.count_rows(),
                          training_set=training_set, as_of=as_of)


def profile_counts(*, customers: int, rows: dict[str, int], training_set: TrainingSet,
                   as_of: pd.Timestamp) -> dict[str, Any]:
    """`profile_dataset` from counts (a partitioned dataset's manifest has them)."""
    frame = training_set.frame
    labelled = frame[frame["in_population"].astype(bool) & frame["churned"].notna()]
    return {
        "customers": customers,
        "rows": rows,
        "as_of": pd.Timestamp(as_of).isoformat(),
        "snapshots": len(training_set.snapshot_dates),
        "snapshot_dates": [pd.Timestamp(d).date().isoformat() for d in
                           training_set.snapshot_dates],
        "training_rows": len(frame),
        "churn_rate": float(labelled["churned"].mean()) if len(labelled) else float("nan"),
        "notes": list(training_set.notes),
    }


def choose_definition(dataset: Dataset, params: TrainParams) -> ChurnDefinition:
    """The churn definition ``params`` ask for on this dataset (``auto`` resolved).

    A setting that cannot apply (an activity event type no event has) is a
    `TrainingDataError` naming the flag.
    """
    try:
        return resolve_definition(
            dataset, requested=params.definition, horizon_days=params.horizon_days,
            active_days=params.active_days, activity_events=params.activity_events)
    except DefinitionError as error:
        raise TrainingDataError(str(error)) from error


def has_revenue(dataset: Dataset) -> bool:
    """Whether the data has revenue a CLV model can learn from (orders or subscription mrr)."""
    orders, subscriptions = dataset.orders, dataset.subscriptions
    if orders is not None and not orders.empty:
        return True
    return (subscriptions is not None and "mrr" in subscriptions
            and bool((pd.to_numeric(subscriptions["mrr"], errors="coerce") > 0).any()))


def build_training_set_for(dataset: Dataset, *, as_of: pd.Timestamp, params: TrainParams,
                           definition: str,
                           churn_definition: ChurnDefinition | None = None) -> TrainingSet:
    """The snapshot training set of a dataset; data problems become `TrainingDataError`."""
    if dataset.orders is None and dataset.subscriptions is None and definition != "activity":
        raise TrainingDataError(
            "the dataset has neither orders nor subscriptions, so there is no value to learn a "
            "CLV model from: add orders.csv (or subscriptions.csv with mrr)")
    if len(dataset.customers) < params.min_customers:
        raise TrainingDataError(
            f"the dataset has {len(dataset.customers)} customers; at least "
            f"{params.min_customers} are needed to train and hold out a snapshot")
    try:
        return build_training_set(
            dataset, as_of=as_of, horizon_days=params.horizon_days,
            clv_horizon_days=params.clv_horizon_days, definition=check_definition(definition),
            step_days=params.step_days, max_snapshots=params.max_snapshots,
            active_days=churn_definition.active_days if churn_definition else params.active_days,
            activity_events=(churn_definition.activity_events if churn_definition
                             else params.activity_events))
    except TrainingDataError:
        raise
    except ValueError as error:
        raise TrainingDataError(f"cannot build training snapshots: {error}") from error
