"""The latest monitoring run's figures as Prometheus gauges on the API's ``/metrics``.

Read from the outbox database at scrape time (`serving.monitoring.store`), so
a new `churnlens monitor` run shows up at the next scrape without a restart.
Each figure is one gauge ``churnlens_monitor_<metric>`` labelled by model
version (e.g. ``churnlens_monitor_realized_roc_auc{model_version="3"}``), plus
``churnlens_monitor_as_of_timestamp_seconds`` (the date the run checked up to)
and ``churnlens_monitor_retrain`` (1 when the verdict was to retrain).
A missing or unreachable outbox exports nothing; it never breaks ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)
PREFIX = "churnlens_monitor_"


class MonitoringCollector(Collector):
    """Collects the stored monitoring gauges of the outbox at ``outbox_url``."""

    def __init__(self, outbox_url: str) -> None:
        self.outbox_url = outbox_url
        self._engine: Engine | None = None

    def describe(self) -> list[Metric]:
        return []  # dynamic: the figures present depend on the last run

    def _rows(self) -> list[dict[str, Any]]:
        from sqlalchemy import create_engine

        from models.loading import missing_store
        from serving.monitoring.store import load_gauges

        if missing_store(self.outbox_url) is not None:
            return []
        if self._engine is None:
            self._engine = create_engine(self.outbox_url, pool_pre_ping=True)
        return load_gauges(self._engine)

    def collect(self) -> Iterator[Metric]:
        try:
            rows = self._rows()
        except Exception as error:  # a scrape must not fail because the outbox is down
            logger.warning("monitoring gauges not exported: %s", type(error).__name__)
            return
        families: dict[str, GaugeMetricFamily] = {}
        latest = None
        for row in rows:
            name = f"{PREFIX}{row['metric']}"
            if name not in families:
                families[name] = GaugeMetricFamily(
                    name, f"churnlens monitor: {row['metric']} by model version",
                    labels=["model_version"])
            families[name].add_metric([str(row["model_version"])], float(row["value"]))
            latest = row["as_of"]
        yield from families.values()
        if latest is not None:
            stamp = GaugeMetricFamily(f"{PREFIX}as_of_timestamp_seconds",
                                      "The date the last monitoring run checked scores up to")
            stamp.add_metric([], latest.replace(tzinfo=UTC).timestamp())
            yield stamp
