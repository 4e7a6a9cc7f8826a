"""The report's retention metrics of a partitioned dataset, one task per partition.

Every retention figure is a count or a sum over customers, and each customer lives in one
partition, so each worker reads its partition and returns its tallies
(`features.retention.RetentionTallies`: a few hundred numbers per month and cohort), and
the driver adds them up and takes the rates once (`combine_tallies`,
`metrics_from_tallies`). The driver reads the manifest and never a table. Counts are
exact; sums of money (revenue, MRR) are added in another order than on one machine, so
they can differ from the local engine's in the last bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from features.cluster import release_memory, run_partitions
from features.partitioned import Manifest, read_partition
from features.retention import (
    RetentionMetrics,
    RetentionTallies,
    combine_tallies,
    metrics_from_tallies,
    retention_tallies,
)

if TYPE_CHECKING:
    from distributed import Client


def tallies_of_partition(number: int, *, data: str, manifest: Manifest, as_of: pd.Timestamp,
                         horizon_days: int) -> RetentionTallies:
    """On a worker: read and validate partition ``number``; its retention tallies."""
    dataset = read_partition(data, number, manifest).dataset
    tallies = retention_tallies(dataset, as_of=as_of, horizon_days=horizon_days)
    del dataset
    release_memory()
    return tallies


def partitioned_retention_metrics(
    data: str, manifest: Manifest, *, client: Client | None, as_of: pd.Timestamp,
    horizon_days: int = 90, max_cohorts: int = 24,
) -> RetentionMetrics:
    """`features.retention.retention_metrics` of a partitioned dataset (module doc).

    ``client`` runs one task per partition on its workers; None runs them here, one
    after the other. A missing or unreadable partition stops the run with its name.
    """
    parts, _ = run_partitions(tallies_of_partition, range(manifest.partitions), client=client,
                              name="retention", data=data, manifest=manifest,
                              as_of=pd.Timestamp(as_of), horizon_days=horizon_days)
    combined = combine_tallies([parts[k] for k in sorted(parts)])
    return metrics_from_tallies(combined, max_cohorts=max_cohorts)
