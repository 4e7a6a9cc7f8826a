"""Gathering the report's numbers: metrics, model, scores and outbox, each optional.

Everything here does the I/O or the counting and never fails for something
that is merely absent: no subscriptions, no events, no model yet, no scores, no
outbox each become a sentence in the section instead. What it returns
(`ReportData`) is all that rendering (`serving.report.render`) reads.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.dataset import Dataset
from features.retention import RetentionMetrics, retention_metrics
from serving.monitoring.report_view import LoopView, gather_loop

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

RUN_PLOTS = {"calibration": "plots/calibration.png", "lift": "plots/lift.png"}
TIER_ORDER = ("high", "medium", "low", "not_applicable")
SEGMENT_ORDER = ("high", "mid", "low")
REQUIRED_SCORE_COLUMNS = ("customer_id", "churn_probability", "risk_tier")


class ReportInputError(ValueError):
    """A file the user pointed the report at cannot be used; the message names it."""



@dataclass
class ModelView:
    """What the report knows about the champion model and its scores."""

    scores: pd.DataFrame | None = None
    scores_source: str = ""
    model: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)


@dataclass
class OutreachView:
    """Outbox action counts per rule, action and delivery status (None = no outbox)."""

    summary: pd.DataFrame | None = None
    source: str = ""
    note: str = ""


@dataclass
class ReportData:
    """Everything the report shows, gathered once; rendering reads nothing else."""

    dataset_name: str
    table_rows: dict[str, int]
    metrics: RetentionMetrics
    model: ModelView
    outreach: OutreachView
    loop: LoopView = field(default_factory=LoopView)
    generated_at: pd.Timestamp | None = None
    has_events: bool = False
    has_orders: bool = False
    has_subscriptions: bool = False



def load_scores(path: Path | str) -> pd.DataFrame:
    """Read a batch score file (Parquet or CSV) written by ``churnlens score``."""
    path = Path(path)
    if not path.exists():
        raise ReportInputError(f"{path}: score file not found")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise ReportInputError(f"{path}: cannot be read as a score file: {error}") from error
    missing = [c for c in REQUIRED_SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ReportInputError(f"{path}: missing column {missing[0]!r} of the score record")
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["churn_probability"] = pd.to_numeric(frame["churn_probability"], errors="coerce")
    for column in ("clv", "value_at_risk"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def load_model_or_reason(uri: str) -> tuple[Any | None, str]:
    """Load a model for the report; (None, why) when there is none (yet) or loading is absent."""
    try:
        from models.loading import load_model
    except ImportError as error:
        return None, f"model loading is not available in this installation ({error})"
    try:
        return load_model(uri), ""
    except Exception as error:  # a report degrades to words; the reason is shown, not hidden
        logger.info("no model for the report: %s", error)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return None, f"no model could be loaded from {uri}: {first_line}"


def score_for_report(dataset: Dataset, loaded: Any, *, as_of: pd.Timestamp) -> pd.DataFrame:
    """Score every customer with the shared scorer, explaining the at-risk ones (3 reasons)."""
    from serving.scorer import Scorer

    return Scorer(loaded).score_frame(dataset, as_of=as_of, explain="at-risk", top_k=3)


def fetch_run_plots(run_id: str) -> tuple[dict[str, bytes], list[str]]:
    """Download the calibration and lift charts logged with the model's MLflow run."""
    plots: dict[str, bytes] = {}
    notes: list[str] = []
    try:
        import mlflow.artifacts
    except ImportError as error:  # pragma: no cover - mlflow is a dependency
        return plots, [f"MLflow is not installed ({error})"]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="churnlens-report-") as folder:
        for name, artifact in RUN_PLOTS.items():
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=artifact, dst_path=folder)
                plots[name] = Path(local).read_bytes()
            except Exception as error:  # absent artifact or unreachable store: say so
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                notes.append(f"the run {run_id} has no {artifact} ({first_line})")
    return plots, notes


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


def read_outbox(url: str) -> OutreachView:
    """Actions per rule and delivery state from the outbox; absent outbox = a sentence."""
    source = re.sub(r"//[^/@]*@", "//***@", url)  # never print a password
    sqlite_file = _sqlite_path(url)
    if sqlite_file is not None and not sqlite_file.exists():
        return OutreachView(source=source, note=(
            f"No outbox database at {sqlite_file}: no outreach has been recorded yet "
            "(scoring with outreach rules fills it)."))
    try:
        from serving.outreach.outbox import Outbox
    except ImportError as error:
        return OutreachView(source=source,
                            note=f"The outreach outbox is not available in this installation "
                                 f"({error}).")
    outbox = Outbox(url)
    try:
        summary = outbox.action_summary()
    except Exception as error:  # unreachable database, missing tables: the report goes on
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return OutreachView(source=source, note=f"The outbox at {source} could not be read: "
                                                f"{first_line}")
    finally:
        outbox.close()
    return OutreachView(summary=summary, source=source)


def gather_report(
    dataset: Dataset,
    *,
    as_of: pd.Timestamp,
    horizon_days: int = 90,
    model_uri: str | None = None,
    scores_path: Path | str | None = None,
    outbox_url: str | None = None,
    dataset_name: str = "dataset",
    generated_at: pd.Timestamp | None = None,
) -> ReportData:
    """Compute the metrics and collect model, scores and outbox, each optional.

    With ``scores_path`` the scores are read from that batch file; otherwise,
    when a model loads from ``model_uri``, the customers are scored as of
    ``as_of`` with the shared scorer.
    """
    as_of = pd.Timestamp(as_of)
    dataset = dataset.known_at(as_of)  # orders with the statuses known then (a database's log)
    metrics = retention_metrics(dataset, as_of=as_of, horizon_days=horizon_days)
    view, loaded = _model_view(model_uri)
    if scores_path is not None:
        _read_scores(view, scores_path)
    elif loaded is not None:
        try:
            view.scores = score_for_report(dataset, loaded, as_of=as_of)
            view.scores_source = f"scored now, as of {as_of:%Y-%m-%d}"
        except ImportError as error:
            view.notes.append(f"batch scoring is not available in this installation ({error})")
        except Exception as error:  # the rest of the report is still worth having
            logger.warning("scoring for the report failed", exc_info=True)
            view.notes.append(f"scoring with {model_uri} failed: {type(error).__name__}: "
                              f"{error}")
    loop = LoopView(notes=["No outbox or no model registry was given, so stored scores are "
                           "not checked."])
    if outbox_url and model_uri:
        try:
            loop = gather_loop(dataset, outbox_url=outbox_url, as_of=as_of)
        except Exception as error:  # the rest of the report is still worth having
            logger.warning("checking the stored scores failed", exc_info=True)
            loop = LoopView(notes=[f"Checking the stored scores failed: "
                                   f"{type(error).__name__}: {error}"])
    return ReportData(
        loop=loop,
        dataset_name=dataset_name,
        table_rows=dataset.count_rows(),
        metrics=metrics,
        model=view,
        outreach=_outreach(outbox_url),
        generated_at=generated_at,
        has_events=dataset.events is not None and not dataset.events.empty,
        has_orders=dataset.orders is not None and not dataset.orders.empty,
        has_subscriptions=dataset.subscriptions is not None and not dataset.subscriptions.empty,
    )


def gather_partitioned_report(
    data: str,
    *,
    client: Client | None,
    as_of: pd.Timestamp | None = None,
    horizon_days: int = 90,
    model_uri: str | None = None,
    scores_path: Path | str | None = None,
    outbox_url: str | None = None,
    dataset_name: str = "dataset",
    generated_at: pd.Timestamp | None = None,
    partitions: int | None = None,
) -> ReportData:
    """`gather_report` of a partitioned dataset (`churnlens partition`): the metrics run one
    task per partition and the driver adds up their tallies
    (`features.partitioned_metrics`), so it never holds a table.

    The model view reads ``scores_path`` (a score file from ``churnlens score --engine
    dask``); the report does not score a partitioned dataset itself, and does not check
    stored scores against what happened (that needs every customer's history at once).
    """
    from features.partitioned import read_manifest
    from features.partitioned_metrics import partitioned_retention_metrics

    manifest = read_manifest(data, partitions=partitions)
    as_of = pd.Timestamp(as_of) if as_of is not None else manifest.default_as_of()
    metrics = partitioned_retention_metrics(data, manifest, client=client, as_of=as_of,
                                            horizon_days=horizon_days)
    view, loaded = _model_view(model_uri)
    if scores_path is not None:
        _read_scores(view, scores_path)
    elif loaded is not None:
        view.notes.append("A partitioned dataset is not scored by the report: score it with "
                          "`churnlens score --engine dask` and pass the file with --scores.")
    rows = {name: sum(part.get(name, 0) for part in manifest.rows) for name in manifest.tables}
    return ReportData(
        loop=LoopView(notes=["Stored scores are not checked against what happened on a "
                             "partitioned dataset."]),
        dataset_name=dataset_name,
        table_rows=rows,
        metrics=metrics,
        model=view,
        outreach=_outreach(outbox_url),
        generated_at=generated_at,
        has_events=rows.get("events", 0) > 0,
        has_orders=rows.get("orders", 0) > 0,
        has_subscriptions=rows.get("subscriptions", 0) > 0,
    )


def _model_view(model_uri: str | None) -> tuple[ModelView, Any]:
    """The champion's description for the report, and the loaded model (None: see notes)."""
    view = ModelView()
    if not model_uri:
        return view, None
    loaded, reason = load_model_or_reason(model_uri)
    if loaded is None:
        view.notes.append(reason)
        return view, None
    view.model = {
        "uri": model_uri,
        "name": getattr(loaded, "name", ""),
        "version": getattr(loaded, "version", ""),
        "alias": getattr(loaded, "alias", None),
        "run_id": getattr(loaded, "run_id", None),
        "trained_at": getattr(loaded, "trained_at", None),
        "metrics": dict(getattr(loaded, "metrics", None) or {}),
        "definition": _definition_text(getattr(loaded, "bundle", None)),
    }
    if view.model["run_id"]:
        view.plots, plot_notes = fetch_run_plots(str(view.model["run_id"]))
        view.notes.extend(plot_notes)
    else:
        view.notes.append("This model was loaded from a directory, not from an MLflow "
                          "run, so its calibration and lift charts are not available.")
    return view, loaded


def _read_scores(view: ModelView, scores_path: Path | str) -> None:
    view.scores = load_scores(scores_path)
    view.scores_source = f"scores read from {Path(scores_path).name}"


def _outreach(outbox_url: str | None) -> OutreachView:
    return (read_outbox(outbox_url) if outbox_url
            else OutreachView(note="No outbox was given (--outbox), so outreach is not shown."))



def _definition_text(bundle: Any) -> str:
    """The churn definition the model was trained with, and why, for the report's reader."""
    chosen = getattr(bundle, "churn_definition", None) or {}
    if not chosen.get("name"):
        return ""
    text = f"churn definition: {chosen['name']}"
    if chosen.get("name") == "activity":
        text += f", active = any activity in the last {chosen.get('active_days')} days"
    return text + (f" ({chosen['reason']})" if chosen.get("reason") else "")



def top_reasons(scores: pd.DataFrame, *, limit: int = 10) -> pd.DataFrame:
    """The features most often behind at-risk scores: as reason #1 and anywhere in the top 3.

    Reads ``reasons_json`` (the reasons in order); without it, falls back to
    the sentence in ``reason_1`` with its numbers masked so similar reasons
    group together.
    """
    first: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    example: dict[str, str] = {}
    if "reasons_json" in scores.columns:
        for text in scores["reasons_json"].dropna():
            if not isinstance(text, str) or text in ("", "[]"):
                continue
            try:
                reasons = json.loads(text)
            except ValueError:
                continue
            for position, reason in enumerate(reasons[:3]):
                feature = str(reason.get("feature", ""))
                if not feature:
                    continue
                anywhere[feature] += 1
                if position == 0:
                    first[feature] += 1
                    example.setdefault(feature, str(reason.get("text", "")))
    elif "reason_1" in scores.columns:
        for text in scores["reason_1"].dropna().astype(str):
            if not text:
                continue
            key = re.sub(r"\d[\d,.]*", "#", text)
            first[key] += 1
            anywhere[key] += 1
            example.setdefault(key, text)
    explained = sum(first.values())
    rows = [{"reason": key, "as_top_reason": count,
             "share": count / explained if explained else math.nan,
             "in_top_3": anywhere[key], "example": example.get(key, "")}
            for key, count in first.most_common(limit)]
    return pd.DataFrame(rows, columns=["reason", "as_top_reason", "share", "in_top_3", "example"])


def risk_value_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Customers, total CLV and total value at risk per risk tier × value segment."""
    frame = scores.copy()
    for column in ("clv", "value_at_risk"):
        if column not in frame.columns:
            frame[column] = np.nan
    if "value_segment" not in frame.columns:
        frame["value_segment"] = "unknown"
    grouped = frame.groupby(["risk_tier", "value_segment"], observed=True).agg(
        customers=("customer_id", "size"), total_clv=("clv", "sum"),
        total_value_at_risk=("value_at_risk", "sum"))
    tier_rank = {t: i for i, t in enumerate(TIER_ORDER)}
    segment_rank = {s: i for i, s in enumerate(SEGMENT_ORDER)}
    grouped = grouped.reset_index()
    grouped["_t"] = grouped["risk_tier"].map(tier_rank).fillna(len(tier_rank))
    grouped["_s"] = grouped["value_segment"].map(segment_rank).fillna(len(segment_rank))
    return grouped.sort_values(["_t", "_s"]).drop(columns=["_t", "_s"]).reset_index(drop=True)
