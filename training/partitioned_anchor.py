"""The BG/NBD horizon anchor on a partitioned dataset: the partitions send a sample.

`training.horizon` fits BG/NBD + Gamma-Gamma on every customer's purchase summary and
maps the booster to it on every customer's features at the cut-off. Neither needs every
customer: both are fits of a few parameters (four for BG/NBD, three for Gamma-Gamma, two
for the Platt map, two for the CLV power map) to the customers' summaries. So each
partition sends the summaries and features of a stable hash sample of its customers, at
most `ANCHOR_SAMPLE` in all, and the driver fits on those. Up to that many customers the
sample is everyone, and the anchor is the local engine's; above it, the parameters are
estimated on the sample (the bundle's notes say how many), and the driver's memory stays
bounded whatever the number of customers. The recent-window CLV model is compared and
fitted as on one machine, on the 13-week training set the partitions build.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.cluster import release_memory, run_partitions
from features.partitioned import Manifest, read_partition
from features.partitioned_snapshots import partitioned_snapshots
from features.pipeline import build_features
from features.snapshots import TrainingSet, _concat_categoricals
from training.fit import FitResult
from training.horizon import ANCHOR_PERIOD, AnchorEvidence, anchored
from training.params import TrainParams
from training.recent_clv import RECENT_WINDOW_DAYS, usable_recent
from training.reference import purchase_summary

if TYPE_CHECKING:
    from distributed import Client

#: customers whose summaries and features the driver holds for the anchor, at most
ANCHOR_SAMPLE = 100_000


def in_sample(customer_ids: pd.Index | pd.Series, share: float) -> np.ndarray:
    """Whether each customer is in the anchor's sample: a stable hash of the id below
    ``share`` (blake2b keyed apart from the partition hash, so every partition samples
    alike)."""
    if share >= 1:
        return np.ones(len(customer_ids), dtype=bool)
    scale = float(2**64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(c).encode("utf-8"), digest_size=8,
                                        person=b"anchor").digest(), "big") / scale < share
         for c in customer_ids), dtype=bool, count=len(customer_ids))


def sample_of_partition(number: int, *, data: str, manifest: Manifest, as_of: pd.Timestamp,
                        event_types: Sequence[str], share: float) -> AnchorEvidence | None:
    """On a worker: the purchase summaries and features at ``as_of`` of one partition's
    sampled customers (None: no customer of the partition has an order)."""
    dataset = read_partition(data, number, manifest).dataset
    orders = dataset.orders
    if orders is None or orders.empty:
        return None
    summary = purchase_summary(orders, as_of=as_of, period=ANCHOR_PERIOD)
    features = build_features(dataset, as_of=as_of, event_types=event_types)
    del dataset, orders
    summary = summary[in_sample(summary.index, share)]
    features = features[in_sample(features.index, share)]
    release_memory()
    return AnchorEvidence(summary, features)


def partitioned_evidence(data: str, *, client: Client | None, manifest: Manifest,
                         as_of: pd.Timestamp, sample: int = ANCHOR_SAMPLE) -> AnchorEvidence:
    """The anchor's evidence from every partition, in customer order as on one machine."""
    share = min(1.0, sample / max(manifest.customers, 1))
    numbers = range(manifest.partitions)
    event_types = manifest.event_types_before(as_of) if "events" in manifest.tables else []
    parts, _ = run_partitions(sample_of_partition, numbers, client=client, name="anchor-sample",
                              data=data, manifest=manifest, as_of=as_of,
                              event_types=event_types, share=share)
    found = [part for k in numbers if (part := parts[k]) is not None]
    if not found:
        raise ValueError("no partition has orders")
    summary = pd.concat([p.summary for p in found]).sort_index()
    named = [p.features.rename_axis("customer_id").reset_index() for p in found]
    features = _concat_categoricals(named).set_index("customer_id").sort_index()
    note = None
    if share < 1:
        note = (f"BG/NBD horizon anchor fitted on a sample of {len(summary):,} of the "
                f"{manifest.customers:,} customers (a stable hash of the id, "
                f"{share:.1%} of every partition)")
    return AnchorEvidence(summary, features, note)


def anchor_partitioned(fit: FitResult, data: str, *, client: Client | None, manifest: Manifest,
                       training_set: TrainingSet, as_of: pd.Timestamp, definition: str,
                       sample: int = ANCHOR_SAMPLE) -> tuple[FitResult, list[str]]:
    """`training.horizon.anchor_to_requested_horizon` for a partitioned dataset."""
    has_orders = "orders" in manifest.tables and any(
        part.get("orders", 0) for part in manifest.rows)

    def recent_set(params: TrainParams) -> TrainingSet | None:
        try:
            recent = partitioned_snapshots(
                data, client=client, as_of=as_of, horizon_days=RECENT_WINDOW_DAYS,
                clv_horizon_days=RECENT_WINDOW_DAYS, definition=definition,  # type: ignore[arg-type]
                step_days=params.step_days, max_snapshots=params.max_snapshots).training_set
        except ValueError:
            return None
        return recent if usable_recent(recent) else None

    return anchored(fit, training_set=training_set, as_of=as_of, definition=definition,
                    has_orders=has_orders,
                    evidence=lambda: partitioned_evidence(data, client=client, manifest=manifest,
                                                          as_of=as_of, sample=sample),
                    recent_set=recent_set)
