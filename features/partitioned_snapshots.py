"""Training snapshots of a partitioned dataset, one task per partition; the driver gets rows.

`features.snapshots.build_training_set` needs three things about the whole customer base
before it can build any row: the date by which 10 % of the population had appeared (which
snapshots exist, `usable_from`), the event types (from the manifest) and the business's
weekly activity (`features.business.BusinessSeason`). Here a first round of tasks, one per
partition, returns small aggregates from which the driver works them out exactly:

- population entries counted per day before ``as_of`` (days counted back from ``as_of``),
  with how many fall exactly at the start of their day: the 10 % entry's day and whether
  it lies past the day's start decide every snapshot date and window, so no customer's
  date is needed;
- each partition's weekly revenue and active customers (customers are in one partition
  each, so the weekly figures add up).

A second round builds each partition's rows with the same `features.snapshots.snapshot_rows`
the local engine runs, and the driver gathers them: the training set is what LightGBM fits
on one machine (sample customers, or use a larger machine, when it does not fit). The rows
equal the local engine's on the unpartitioned dataset, in the same order; the business's
revenue is summed in another order, so its column can differ in the last bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.business import BusinessSeason
from features.cluster import release_memory, run_partitions
from features.history import NS_PER_DAY, History, timestamp_ns
from features.labels import Definition, check_definition
from features.partitioned import Manifest, read_manifest, read_partition
from features.snapshots import (
    MIN_POPULATION_SHARE,
    SnapshotPlan,
    TrainingSet,
    _concat_categoricals,
    nobody_in_population,
    plan_snapshots,
    population_entry,
    snapshot_rows,
)

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class PartitionStats:
    """What a partition tells the driver before its rows are built (no customer's data).

    ``entries`` maps a day (whole days from ``as_of``, negative) to the number of the
    partition's customers who entered the population that day and how many of them
    exactly at the day's start.
    """

    partition: int
    customers: int
    entries: dict[int, tuple[int, int]]
    season: BusinessSeason | None
    revenue: bool = False


def stats_of_partition(number: int, *, data: str, manifest: Manifest, as_of: pd.Timestamp,
                       definition: Definition,
                       activity_events: Sequence[str] | None) -> PartitionStats:
    """On a worker: population entries per day and the weekly activity of one partition."""
    dataset = read_partition(data, number, manifest).dataset
    if dataset.customers.empty:
        return PartitionStats(number, 0, {}, None)
    orders, subscriptions = dataset.orders, dataset.subscriptions
    revenue = bool(orders is not None and not orders.empty) or bool(
        subscriptions is not None and "mrr" in subscriptions
        and (pd.to_numeric(subscriptions["mrr"], errors="coerce") > 0).any())
    history = History(dataset)
    limit = timestamp_ns(as_of)
    entry = population_entry(history, definition, activity_events=activity_events)
    offset = entry[entry < limit] - limit
    day = offset // NS_PER_DAY
    at_start = (offset % NS_PER_DAY) == 0
    days, codes = np.unique(day, return_inverse=True)
    counts = np.bincount(codes, minlength=len(days))
    starts = np.bincount(codes, weights=at_start, minlength=len(days))
    entries = {int(d): (int(c), int(s)) for d, c, s in zip(days, counts, starts, strict=True)}
    season = BusinessSeason.from_history(history, as_of=as_of)
    customers = history.n_customers
    del dataset, history
    release_memory()
    return PartitionStats(number, customers, entries, season, revenue)


def usable_from_counts(entries: Sequence[dict[int, tuple[int, int]]], *,
                       as_of: pd.Timestamp) -> pd.Timestamp | None:
    """`features.snapshots.usable_from` from per-partition day counts.

    The exact timestamp is not needed: snapshot dates are whole days before ``as_of``, so
    the plan depends only on the entry's day and on whether it lies past the day's start.
    Returns that day's start, or one nanosecond after it. None when nobody enters.
    """
    total: dict[int, list[int]] = {}
    for part in entries:
        for day, (count, at_start) in part.items():
            summed = total.setdefault(day, [0, 0])
            summed[0] += count
            summed[1] += at_start
    entered = sum(count for count, _ in total.values())
    if not entered:
        return None
    position = max(math.ceil(MIN_POPULATION_SHARE * entered) - 1, 0)
    before = 0
    for day in sorted(total):
        count, at_start = total[day]
        if before + count > position:
            start = pd.Timestamp(as_of) + pd.Timedelta(days=day)
            return start if position - before < at_start else start + pd.Timedelta(1, "ns")
        before += count
    raise AssertionError("the position lies within the counted entries")


def combine_seasons(parts: Sequence[BusinessSeason | None]) -> BusinessSeason | None:
    """The business's weekly series from each partition's (revenue and active customers
    add up: every customer is in one partition)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    first = min(p.first_week for p in present)
    size = max(p.first_week + len(p.revenue) for p in present) - first
    revenue = np.zeros(size)
    active = np.zeros(size, dtype=np.int64)
    for part in present:
        lo = part.first_week - first
        revenue[lo:lo + len(part.revenue)] += np.asarray(part.revenue, dtype=float)
        active[lo:lo + len(part.active)] += np.asarray(part.active, dtype=np.int64)
    return BusinessSeason(first_week=first, revenue=tuple(float(v) for v in revenue),
                          active=tuple(int(v) for v in active), as_of=present[0].as_of)


def rows_of_partition(number: int, *, data: str, manifest: Manifest, plan: SnapshotPlan,
                      event_types: list[str], business: BusinessSeason | None,
                      definition: Definition, margin_rate: float, active_days: int | None,
                      activity_events: Sequence[str] | None) -> pd.DataFrame | None:
    """On a worker: the training rows of one partition's customers (None: no customers)."""
    dataset = read_partition(data, number, manifest).dataset
    if dataset.customers.empty:
        return None
    history = History(dataset)
    parts = list(snapshot_rows(history, plan, event_types=event_types, business=business,
                               definition=definition, margin_rate=margin_rate,
                               active_days=active_days, activity_events=activity_events))
    del dataset, history
    frame = _concat_categoricals(parts) if parts else None
    release_memory()
    return frame


@dataclass(frozen=True)
class PartitionedSnapshots:
    """A partitioned dataset's training set and what training needs to know besides."""

    training_set: TrainingSet
    #: whether any partition has revenue a CLV model can learn from (orders, or mrr > 0)
    has_revenue: bool
    manifest: Manifest


def build_partitioned_training_set(data: str, **settings: Any) -> TrainingSet:
    """`features.snapshots.build_training_set` of a partitioned dataset (see the module doc);
    ``settings`` as `partitioned_snapshots`."""
    return partitioned_snapshots(data, **settings).training_set


def partitioned_snapshots(
    data: str, *, client: Client | None, as_of: pd.Timestamp | None = None,
    horizon_days: int = 90, clv_horizon_days: int = 365, definition: Definition = "inactivity",
    step_days: int = 30, max_snapshots: int = 12, min_snapshots: int = 3,
    margin_rate: float = 1.0, active_days: int | None = None,
    activity_events: Sequence[str] | None = None, partitions: int | None = None,
) -> PartitionedSnapshots:
    """The training set of a partitioned dataset, with what else the partitions told.

    ``client`` runs the tasks on a Dask cluster; None runs them here, one after the other.
    """
    check_definition(definition)
    if step_days <= 0 or max_snapshots <= 0 or horizon_days <= 0 or clv_horizon_days <= 0:
        raise ValueError("horizon_days, clv_horizon_days, step_days and max_snapshots "
                         "must be positive")
    manifest = read_manifest(data, partitions=partitions)
    as_of = pd.Timestamp(as_of) if as_of is not None else manifest.default_as_of()
    numbers = range(manifest.partitions)
    stats, _ = run_partitions(stats_of_partition, numbers, client=client,
                              name="train-stats", data=data, manifest=manifest, as_of=as_of,
                              definition=definition, activity_events=activity_events)
    ordered = [stats[k] for k in numbers]
    earliest = usable_from_counts([s.entries for s in ordered], as_of=as_of)
    if earliest is None:
        raise ValueError(nobody_in_population(definition, as_of=as_of))
    plan = plan_snapshots(as_of=as_of, earliest=earliest, horizon_days=horizon_days,
                          clv_horizon_days=clv_horizon_days, step_days=step_days,
                          max_snapshots=max_snapshots, min_snapshots=min_snapshots)
    business = combine_seasons([s.season for s in ordered])
    event_types = manifest.event_types_before(as_of) if "events" in manifest.tables else []
    rows, _ = run_partitions(rows_of_partition, numbers, client=client, name="train-rows",
                             data=data, manifest=manifest, plan=plan, event_types=event_types,
                             business=business, definition=definition, margin_rate=margin_rate,
                             active_days=active_days, activity_events=activity_events)
    frames = [rows[k] for k in numbers if rows[k] is not None]
    if not frames:
        raise ValueError("no snapshot rows were produced")
    frame = _concat_categoricals(frames)  # type: ignore[arg-type]
    del frames, rows
    # the local engine's order: snapshots latest first, customers by id within each
    frame = frame.sort_values(["snapshot_at", "customer_id"], ascending=[False, True],
                              kind="stable", ignore_index=True)
    training_set = plan.training_set(frame, definition=definition, event_types=event_types,
                                     active_days=active_days, activity_events=activity_events,
                                     business_season=business)
    return PartitionedSnapshots(training_set=training_set,
                                has_revenue=any(s.revenue for s in ordered), manifest=manifest)

