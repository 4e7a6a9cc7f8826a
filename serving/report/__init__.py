"""The retention report: one self-contained HTML file a retention manager can open anywhere.

Five sections, each an element with a stable id: ``business-metrics`` (churn
as the business measures it, per month), ``cohorts`` (retention heatmap),
``model-view`` (scores, risk × value, top reasons, the champion's calibration
and lift charts), ``outreach`` (actions per rule and their delivery state) and
``scores-came-true`` (stored scores checked against what happened, drift, and
each rule's effect: `serving.monitoring.report_view`).

Split by job: `serving.report.data` gathers the numbers (the I/O; never fails
for something merely absent), `serving.report.charts` draws the charts, and
`serving.report.render` turns the gathered data into HTML (pure) and writes
it. `build_report` does all three in one call.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.dataset import Dataset
from serving.report.data import (
    ModelView,
    OutreachView,
    ReportData,
    ReportInputError,
    fetch_run_plots,
    gather_partitioned_report,
    gather_report,
    load_scores,
    read_outbox,
    risk_value_table,
    top_reasons,
)
from serving.report.render import SECTION_IDS, render_report, write_report

__all__ = [
    "SECTION_IDS",
    "ModelView",
    "OutreachView",
    "ReportData",
    "ReportInputError",
    "build_report",
    "fetch_run_plots",
    "gather_partitioned_report",
    "gather_report",
    "load_scores",
    "read_outbox",
    "render_report",
    "risk_value_table",
    "top_reasons",
    "write_report",
]


def build_report(
    dataset: Dataset,
    *,
    out: Path | str,
    as_of: pd.Timestamp | None = None,
    horizon_days: int = 90,
    model_uri: str | None = None,
    scores_path: Path | str | None = None,
    outbox_url: str | None = None,
    dataset_name: str = "dataset",
) -> Path:
    """Gather, render and write the report in one call (for `churnlens demo` and scripts)."""
    data = gather_report(
        dataset, as_of=pd.Timestamp(as_of) if as_of is not None else dataset.default_as_of(),
        horizon_days=horizon_days, model_uri=model_uri, scores_path=scores_path,
        outbox_url=outbox_url, dataset_name=dataset_name,
        generated_at=pd.Timestamp.now(tz="UTC").tz_localize(None))
    return write_report(render_report(data), out)
