"""`churnlens train` on a partitioned dataset: snapshots per partition, LightGBM here.

The workers build the snapshot rows of their partitions
(`features.partitioned_snapshots`); the driver gathers the training set and fits the
bundle as `training.run.fit_on_dataset` does. What the driver knows of the data besides
is the manifest (tables, event types, counts) and the partitions' small aggregates, so
the definition, the checks and the dataset profile come from those. The one step left
out: when the history is too short for the requested label windows, the BG/NBD horizon
anchor needs every customer's order summary on one machine; the bundle then says that
its probabilities describe the shorter window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.definition import DefinitionError, resolve_definition_for
from features.partitioned import Manifest, read_manifest
from features.partitioned_snapshots import partitioned_snapshots
from features.snapshots import TrainingSet
from training.data import profile_counts
from training.fit import FitResult, fit_bundle
from training.params import TrainingDataError, TrainParams
from training.partitioned_anchor import anchor_partitioned
from training.run import TrainResult, register_fit

if TYPE_CHECKING:
    from distributed import Client

HISTORY_TABLES = ("orders", "events", "subscriptions")


def _rows(manifest: Manifest, table: str) -> int:
    return sum(part.get(table, 0) for part in manifest.rows)


def fit_partitioned(data: str, *, client: Client | None, as_of: pd.Timestamp | None,
                    params: TrainParams) -> tuple[FitResult, TrainingSet, dict[str, Any]]:
    """The fit `churnlens train` makes on a partitioned dataset, its training set and the
    dataset profile; data problems are `TrainingDataError` naming what to change."""
    manifest = read_manifest(data)
    as_of = pd.Timestamp(as_of) if as_of is not None else manifest.default_as_of()
    kinds = [t for t in HISTORY_TABLES if t in manifest.tables and _rows(manifest, t)]
    try:
        chosen = resolve_definition_for(
            kinds, sorted(manifest.event_types), requested=params.definition,
            horizon_days=params.horizon_days, active_days=params.active_days,
            activity_events=params.activity_events)
    except DefinitionError as error:
        raise TrainingDataError(str(error)) from error
    if "orders" not in kinds and "subscriptions" not in kinds and chosen.name != "activity":
        raise TrainingDataError(
            "the dataset has neither orders nor subscriptions, so there is no value to learn a "
            "CLV model from: add orders.csv (or subscriptions.csv with mrr)")
    if manifest.customers < params.min_customers:
        raise TrainingDataError(
            f"the dataset has {manifest.customers} customers; at least "
            f"{params.min_customers} are needed to train and hold out a snapshot")
    try:
        built = partitioned_snapshots(
            data, client=client, as_of=as_of, horizon_days=params.horizon_days,
            clv_horizon_days=params.clv_horizon_days, definition=chosen.name,  # type: ignore[arg-type]
            step_days=params.step_days, max_snapshots=params.max_snapshots,
            active_days=chosen.active_days, activity_events=chosen.activity_events)
    except ValueError as error:
        raise TrainingDataError(f"cannot build training snapshots: {error}") from error
    training_set = built.training_set
    fit = fit_bundle(training_set, params=params, event_types=training_set.event_types,
                     definition=chosen.name, learn_clv=built.has_revenue,
                     churn_definition=chosen)
    # label windows shorter than asked (short history): calibrate to the asked horizons
    fit, _ = anchor_partitioned(fit, data, client=client, manifest=manifest,
                                training_set=training_set, as_of=as_of, definition=chosen.name)
    profile = profile_counts(
        customers=manifest.customers,
        rows={t: _rows(manifest, t) for t in manifest.tables},
        training_set=training_set, as_of=as_of) | {"partitions": manifest.partitions}
    return fit, training_set, profile


def train_partitioned_and_register(
    data: str, *, client: Client | None, as_of: pd.Timestamp | None, params: TrainParams,
    dataset_profile: Mapping[str, Any] | None = None,
) -> TrainResult:
    """`training.run.train_and_register` for a partitioned dataset (no uplift models)."""
    fit, training_set, profile = fit_partitioned(data, client=client, as_of=as_of,
                                                 params=params)
    return register_fit(fit, params=params, dataset_profile=profile | dict(dataset_profile or {}),
                        training_frame=training_set.frame)
