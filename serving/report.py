"""The retention report: one self-contained HTML file a retention manager can open anywhere.

Five sections, each an element with a stable id: ``business-metrics`` (churn
as the business measures it, per month), ``cohorts`` (retention heatmap),
``model-view`` (scores, risk × value, top reasons, the champion's calibration
and lift charts), ``outreach`` (actions per rule and their delivery state) and
``scores-came-true`` (stored scores checked against what happened, drift, and
each rule's effect: `serving.monitoring.report_view`).

Gathering (`gather_report`) does the I/O and never fails for something that is
merely absent: no subscriptions, no events, no model yet, no scores, no outbox
each become a sentence in the section instead. Rendering (`render_report`) is
pure: data in, HTML out. Charts are PNGs embedded as base64 and the CSS is
inline, so the file needs no network to view.
"""

from __future__ import annotations

import base64
import io
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
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

SECTION_IDS = ("business-metrics", "cohorts", "model-view", "outreach", "scores-came-true")
RUN_PLOTS = {"calibration": "plots/calibration.png", "lift": "plots/lift.png"}
TIER_ORDER = ("high", "medium", "low", "not_applicable")
SEGMENT_ORDER = ("high", "mid", "low")
OUTBOX_STATUSES = ("pending", "delivering", "delivered", "acknowledged", "failed", "dead")
REQUIRED_SCORE_COLUMNS = ("customer_id", "churn_probability", "risk_tier")
#: months of history listed in the monthly table (charts show all of them)
TABLE_MONTHS = 12


class ReportInputError(ValueError):
    """A file the user pointed the report at cannot be used; the message names it."""


# --------------------------------------------------------------------------- gathered data


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


# --------------------------------------------------------------------------- gathering


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
    metrics = retention_metrics(dataset, as_of=as_of, horizon_days=horizon_days)
    view = ModelView()
    loaded = None
    if model_uri:
        loaded, reason = load_model_or_reason(model_uri)
        if loaded is None:
            view.notes.append(reason)
        else:
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
    if scores_path is not None:
        view.scores = load_scores(scores_path)
        view.scores_source = f"scores read from {Path(scores_path).name}"
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
    outreach = (read_outbox(outbox_url) if outbox_url
                else OutreachView(note="No outbox was given (--outbox), so outreach is not shown."))
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
        outreach=outreach,
        generated_at=generated_at,
        has_events=dataset.events is not None and not dataset.events.empty,
        has_orders=dataset.orders is not None and not dataset.orders.empty,
        has_subscriptions=dataset.subscriptions is not None and not dataset.subscriptions.empty,
    )


# --------------------------------------------------------------------------- formatting


def _pct(value: Any, digits: int = 1) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * float(value):.{digits}f}%"


def _money(value: Any, digits: int = 0) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):,.{digits}f}"


def _price(value: Any) -> str:
    return _money(value, 2)


def _count(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{round(float(value)):,}"


def _month(stamp: pd.Timestamp) -> str:
    return f"{pd.Timestamp(stamp):%b %Y}"


def _figure(width: float = 6.4, height: float = 2.9) -> Figure:
    """A matplotlib figure on the Agg canvas, created here so importing sets no backend.

    Margins are fixed rather than computed (constrained layout draws every
    chart twice, which doubles the report's rendering time).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.15)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _style(ax: Any, *, percent: bool = False) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    if percent:
        _percent_ticks(ax)
    ax.tick_params(labelsize=9)


def _percent_ticks(ax: Any) -> None:
    """Ticks at round percentages (1, 2 or 5 × a power of ten), labelled with just the
    decimals their spacing needs: "2%, 4%, 6%" or "0.5%, 1.0%", never 12.5% shown as 13%."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], min_n_ticks=4))
    ticks = ax.get_yticks()
    spacing = 100 * float(np.min(np.diff(ticks))) if len(ticks) > 1 else 1.0
    decimals = max(0, math.ceil(-math.log10(spacing) - 1e-9)) if spacing > 0 else 0
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def _line_chart(series: dict[str, pd.Series], *, title: str, percent: bool = True,
                reference: float | None = None) -> str:
    """A monthly line chart as a PNG (see `_line_figure`)."""
    return _png(_line_figure(series, title=title, percent=percent, reference=reference))


def _line_figure(series: dict[str, pd.Series], *, title: str, percent: bool = True,
                 reference: float | None = None) -> Figure:
    """Monthly lines on positional x (month labels set by hand: cheaper than date axes).

    With several lines the legend sits in a row under the axes, where it can cover none.
    """
    months = sorted(set().union(*(set(values.index) for values in series.values())))
    positions = np.arange(len(months))
    several = len(series) > 1
    fig = _figure(height=3.3 if several else 2.9)
    if several:
        fig.subplots_adjust(bottom=0.27)
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.plot(positions, values.reindex(months).to_numpy(dtype=float), marker="o",
                markersize=3, label=label)
    step = max(1, math.ceil(len(months) / 8))
    ax.set_xticks(positions[::step], [f"{pd.Timestamp(m):%b %y}" for m in months[::step]])
    if reference is not None:
        ax.axhline(reference, color="grey", linewidth=0.8, linestyle="--")
    ax.set_title(title, fontsize=11, loc="left")
    _style(ax, percent=percent)
    if several:
        ax.legend(fontsize=9, frameon=False, loc="upper center", ncols=len(series),
                  bbox_to_anchor=(0.5, -0.12))
    return fig


# --------------------------------------------------------------------------- sections


def _business_section(data: ReportData) -> dict[str, Any]:
    m = data.metrics
    notes: list[str] = []
    charts: list[dict[str, str]] = []
    cards: list[dict[str, str]] = []

    def card(label: str, frame: pd.DataFrame, column: str, fmt: Any, hint: str) -> None:
        values = frame[column].dropna() if not frame.empty else pd.Series(dtype=float)
        if values.empty:
            return
        latest, month = values.iloc[-1], values.index[-1]
        previous = values.iloc[-2] if len(values) > 1 else None
        cards.append({"label": label, "value": fmt(latest), "month": _month(month),
                      "previous": fmt(previous) if previous is not None else "", "hint": hint})

    card("Customer churn rate", m.inactivity_churn, "churn_rate", _pct,
         f"lost / active at month start; active = completed order in the last "
         f"{m.horizon_days} days")
    card("Subscriber churn rate", m.subscription_churn, "churn_rate", _pct,
         "subscribers lost / subscribers at month start")
    card("Net revenue retention", m.mrr, "net_revenue_retention", _pct,
         "MRR of last month's payers now / their MRR then (expansion included)")
    card("Gross MRR churn", m.mrr, "gross_mrr_churn_rate", _pct,
         "(churned + contraction MRR) / starting MRR")
    card("Repeat-purchase rate", m.repeat_purchase, "repeat_purchase_rate", _pct,
         "buyers of the month who had bought before")
    card("AOV of returning customers", m.repeat_purchase, "returning_aov", _price,
         f"trend: {m.returning_aov_trend.direction}")
    card("Return rate", m.order_status, "return_rate", _pct, "returned / orders placed")
    card("Cancellation rate", m.order_status, "cancellation_rate", _pct,
         "cancelled / orders placed")
    card("Unclaimed-parcel rate", m.order_status, "unclaimed_rate", _pct,
         "cash-on-delivery parcels never collected / orders placed")

    churn_series = {}
    if not m.inactivity_churn.empty:
        churn_series["customers (inactivity)"] = m.inactivity_churn["churn_rate"]
    if not m.subscription_churn.empty:
        churn_series["subscribers"] = m.subscription_churn["churn_rate"]
    if churn_series:
        charts.append({"title": "Customer churn rate per month",
                       "png": _line_chart(churn_series, title="Customer churn rate per month")})
    if not m.mrr.empty:
        charts.append({"title": "Net revenue retention and gross MRR churn", "png": _line_chart(
            {"net revenue retention": m.mrr["net_revenue_retention"],
             "gross MRR churn": m.mrr["gross_mrr_churn_rate"]},
            title="Net revenue retention and gross MRR churn per month", reference=1.0)})
    if not m.repeat_purchase.empty:
        charts.append({"title": "Repeat-purchase rate", "png": _line_chart(
            {"repeat-purchase rate": m.repeat_purchase["repeat_purchase_rate"]},
            title="Repeat-purchase rate per month")})
        aov = m.repeat_purchase["returning_aov"]
        if aov.notna().sum() >= 2:
            trend = m.returning_aov_trend
            charts.append({"title": "Average order value of returning customers",
                           "png": _line_chart({"returning AOV": aov}, percent=False,
                                              title="Average order value of returning "
                                                    f"customers ({trend.direction})")})
    if not m.order_status.empty:
        charts.append({"title": "Return, cancellation and unclaimed rates", "png": _line_chart(
            {"returned": m.order_status["return_rate"],
             "cancelled": m.order_status["cancellation_rate"],
             "unclaimed": m.order_status["unclaimed_rate"]},
            title="Return, cancellation and unclaimed-parcel rates per month")})

    if not data.has_orders:
        notes.append("No orders table: customer churn by inactivity, repeat purchases, order "
                     "value and return/cancellation/unclaimed rates need orders.")
    if not data.has_subscriptions:
        notes.append("No subscriptions table: subscriber churn, MRR churn and net revenue "
                     "retention apply to subscription businesses and are not shown.")
    elif m.mrr.empty:
        notes.append("The subscriptions carry no MRR, so MRR churn and net revenue retention "
                      "cannot be computed.")
    if data.has_orders and m.inactivity_churn.empty:
        notes.append("Not enough complete months of orders yet to measure churn per month.")

    trend = m.returning_aov_trend
    trend_sentence = ""
    if trend.direction != "unknown":
        trend_sentence = (
            f"Over the last {trend.months} months the average order value of returning "
            f"customers is {trend.direction} ({_price(trend.slope_per_month)} a month, "
            f"{_pct(trend.relative_slope)} of its level).")

    columns, rows = _monthly_table(m)
    return {"cards": cards, "charts": charts, "notes": notes, "trend": trend_sentence,
            "columns": columns, "rows": rows,
            "repeat_share": _pct(m.repeat_customer_share)
            if not pd.isna(m.repeat_customer_share) else ""}


def _monthly_table(m: RetentionMetrics) -> tuple[list[str], list[list[str]]]:
    parts: list[tuple[str, pd.Series, Any]] = []
    if not m.inactivity_churn.empty:
        parts += [("Active customers at start", m.inactivity_churn["customers_at_start"], _count),
                  ("Lost", m.inactivity_churn["customers_lost"], _count),
                  ("Churn rate", m.inactivity_churn["churn_rate"], _pct)]
    if not m.subscription_churn.empty:
        parts += [("Subscribers at start", m.subscription_churn["customers_at_start"], _count),
                  ("Subscribers lost", m.subscription_churn["customers_lost"], _count),
                  ("Subscriber churn", m.subscription_churn["churn_rate"], _pct)]
    if not m.mrr.empty:
        parts += [("Starting MRR", m.mrr["starting_mrr"], _money),
                  ("Expansion", m.mrr["expansion_mrr"], _money),
                  ("Contraction", m.mrr["contraction_mrr"], _money),
                  ("Churned MRR", m.mrr["churned_mrr"], _money),
                  ("Net retention", m.mrr["net_revenue_retention"], _pct)]
    if not m.repeat_purchase.empty:
        parts += [("Repeat-purchase rate", m.repeat_purchase["repeat_purchase_rate"], _pct),
                  ("Returning AOV", m.repeat_purchase["returning_aov"], _price)]
    if not m.order_status.empty:
        parts += [("Orders", m.order_status["orders"], _count),
                  ("Returned", m.order_status["return_rate"], _pct),
                  ("Cancelled", m.order_status["cancellation_rate"], _pct),
                  ("Unclaimed", m.order_status["unclaimed_rate"], _pct)]
    if not parts:
        return [], []
    months = sorted(set().union(*(set(series.index) for _, series, _ in parts)))[-TABLE_MONTHS:]
    rows = []
    for month in reversed(months):
        rows.append([_month(month), *(fmt(series.get(month, np.nan)) for _, series, fmt in parts)])
    return ["Month", *(label for label, _, _ in parts)], rows


def _heat(value: float) -> str:
    """Cell colour for a retention share: white → deep blue, with readable text."""
    if pd.isna(value):
        return "background:#f4f4f5;color:#a1a1aa"
    alpha = min(max(float(value), 0.0), 1.0)
    text = "#ffffff" if alpha > 0.55 else "#111827"
    return f"background:rgba(37,99,235,{0.08 + 0.92 * alpha:.3f});color:{text}"


def _cohort_section(data: ReportData) -> dict[str, Any]:
    matrix = data.metrics.cohorts
    notes = []
    if not data.has_events:
        notes.append("No events table: a customer counts as active in a month when they "
                     "completed an order or held an active subscription in it.")
    if matrix.empty:
        notes.append("No complete month with signups yet, so there are no cohorts to show.")
        return {"notes": notes, "ages": [], "rows": []}
    ages = [c for c in matrix.columns if c != "customers"]
    rows = []
    for cohort, row in matrix.iterrows():
        cells = [{"text": "" if pd.isna(row[a]) else _pct(row[a], 0), "style": _heat(row[a])}
                 for a in ages]
        rows.append({"cohort": _month(cohort), "customers": _count(row["customers"]),
                     "cells": cells})
    return {"notes": notes, "ages": ages, "rows": rows}


def _feature_description(name: str) -> str:
    try:
        from features.pipeline import describe_feature

        text = describe_feature(name).description or name
    except Exception:  # unknown feature or pipeline absent: the name itself is readable
        text = name.replace("_", " ")
    return text[:1].upper() + text[1:]


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


def _score_histogram(scores: pd.DataFrame) -> str:
    probabilities = scores["churn_probability"].dropna().to_numpy(dtype=float)
    fig = _figure(8.0, 2.8)
    fig.subplots_adjust(left=0.1, bottom=0.18)
    ax = fig.add_subplot()
    ax.hist(probabilities, bins=np.linspace(0, 1, 21), color="#2563eb", edgecolor="white")
    ax.set_xlabel("churn probability", fontsize=9)
    ax.set_ylabel("customers", fontsize=9)
    ax.set_title("Distribution of churn probability (customers in the population)",
                 fontsize=10, loc="left")
    _style(ax)
    return _png(fig)


def _definition_text(bundle: Any) -> str:
    """The churn definition the model was trained with, and why, for the report's reader."""
    chosen = getattr(bundle, "churn_definition", None) or {}
    if not chosen.get("name"):
        return ""
    text = f"churn definition: {chosen['name']}"
    if chosen.get("name") == "activity":
        text += f", active = any activity in the last {chosen.get('active_days')} days"
    return text + (f" ({chosen['reason']})" if chosen.get("reason") else "")


STAGE_ORDER = ("new", "active", "declining", "lapsed", "never_active")


def _model_section(data: ReportData) -> dict[str, Any]:
    view = data.model
    section: dict[str, Any] = {"notes": list(view.notes), "model": None, "metrics": [],
                               "source": view.scores_source, "histogram": None,
                               "tiers": [], "tier_counts": [], "reasons": [], "plots": [],
                               "as_of": "", "stage_counts": []}
    if view.model is not None:
        info = view.model
        alias = f" @{info['alias']}" if info.get("alias") else ""
        trained = info.get("trained_at")
        section["model"] = {
            "title": f"{info.get('name') or 'model'} version {info.get('version')}{alias}",
            "trained_at": f"{pd.Timestamp(trained):%Y-%m-%d %H:%M}" if trained else "",
            "run_id": info.get("run_id") or "",
            "definition": info.get("definition") or "",
        }
        wanted = ("roc_auc", "pr_auc", "top_decile_lift", "ece", "brier", "spearman",
                  "normalized_gini")
        metrics = info.get("metrics") or {}
        section["metrics"] = [
            (name, f"{float(metrics[key]):.3f}")
            for name in wanted
            for key in [k for k in metrics if k == name or k.endswith(f"_{name}")][:1]
            if isinstance(metrics.get(key), int | float) and not pd.isna(metrics[key])
        ]
    elif not view.notes:
        section["notes"].append(
            "No model was given, so its metrics and its calibration and lift charts are not "
            "shown." if view.scores is not None else
            "No model was given, so the model's view is not shown.")
    for name in ("calibration", "lift"):
        if name in view.plots:
            section["plots"].append({
                "title": {"calibration": "Calibration (reliability) on the held-out snapshot",
                          "lift": "Lift / gains on the held-out snapshot"}[name],
                "png": base64.b64encode(view.plots[name]).decode("ascii")})
    scores = view.scores
    if scores is None:
        section["notes"].append("No scores: pass --scores FILE from `churnlens score`, or a "
                                "model (--model) to score the customers now.")
        return section
    if scores.empty:
        section["notes"].append("The score file has no rows.")
        return section
    if "as_of" in scores.columns:
        stamps = pd.to_datetime(scores["as_of"], errors="coerce").dropna().unique()
        section["as_of"] = ", ".join(f"{pd.Timestamp(s):%Y-%m-%d}" for s in stamps[:3])
    if scores["churn_probability"].notna().any():
        section["histogram"] = _score_histogram(scores)
    tiers = scores["risk_tier"].astype(str).value_counts()
    section["tier_counts"] = [(t, _count(tiers.get(t, 0)), _pct(tiers.get(t, 0) / len(scores)))
                              for t in [*TIER_ORDER, *sorted(set(tiers.index) - set(TIER_ORDER))]
                              if t in tiers.index]
    if "lifecycle_stage" in scores.columns:
        stages = scores["lifecycle_stage"].dropna().astype(str).value_counts()
        scored = scores["risk_tier"].astype(str) != "not_applicable"
        in_population = scores.loc[scored, "lifecycle_stage"].astype(str).value_counts()
        section["stage_counts"] = [
            (s, _count(stages.get(s, 0)), _pct(stages.get(s, 0) / len(scores)),
             _count(in_population.get(s, 0)))
            for s in [*STAGE_ORDER, *sorted(set(stages.index) - set(STAGE_ORDER))]
            if s in stages.index]
    table = risk_value_table(scores)
    total_risk = table["total_value_at_risk"].sum()
    section["tiers"] = [
        {"tier": row.risk_tier, "segment": row.value_segment, "customers": _count(row.customers),
         "clv": _money(row.total_clv), "var": _money(row.total_value_at_risk),
         "share": _pct(row.total_value_at_risk / total_risk) if total_risk else "–"}
        for row in table.itertuples()
    ]
    section["tiers_total"] = {"customers": _count(table["customers"].sum()),
                              "clv": _money(table["total_clv"].sum()),
                              "var": _money(total_risk)}
    reasons = top_reasons(scores)
    if reasons.empty:
        section["notes"].append("The scores carry no reasons (explanations are written for "
                                "at-risk customers; none were at risk or explain was off).")
    has_json = "reasons_json" in scores.columns
    section["reasons"] = [
        {"reason": _feature_description(r.reason) if has_json else r.reason,
         "feature": r.reason if has_json else "", "top": _count(r.as_top_reason),
         "share": _pct(r.share), "top3": _count(r.in_top_3), "example": r.example}
        for r in reasons.itertuples()
    ]
    return section


def _outreach_section(data: ReportData) -> dict[str, Any]:
    view = data.outreach
    if view.summary is None:
        return {"notes": [view.note], "statuses": [], "rows": []}
    summary = view.summary
    if summary.empty:
        return {"notes": [f"The outbox at {view.source} holds no actions yet: no rule has "
                          "fired."], "statuses": [], "rows": []}
    pivot = summary.pivot_table(index=["rule", "action"], columns="status", values="count",
                                aggfunc="sum", fill_value=0)
    statuses = [s for s in OUTBOX_STATUSES if s in pivot.columns]
    statuses += sorted(set(pivot.columns) - set(statuses))
    pivot = pivot[statuses]
    pivot["total"] = pivot.sum(axis=1)
    pivot = pivot.sort_values("total", ascending=False)
    rows = [{"rule": rule, "action": action, "counts": [_count(v) for v in values[:-1]],
             "total": _count(values[-1])}
            for (rule, action), values in zip(pivot.index, pivot.to_numpy(), strict=True)]
    totals = [_count(pivot[s].sum()) for s in statuses]
    delivered = pivot[[s for s in ("delivered", "acknowledged") if s in pivot]].to_numpy().sum()
    return {"notes": [], "statuses": statuses, "rows": rows, "totals": totals,
            "grand_total": _count(pivot["total"].sum()), "source": view.source,
            "delivered_share": _pct(delivered / pivot["total"].sum())}


def render_report(data: ReportData) -> str:
    """The report as one HTML string (inline CSS, base64 charts, no scripts, no network)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True, lstrip_blocks=True,
    )
    template = environment.get_template("report.html.j2")
    m = data.metrics
    return template.render(
        dataset_name=data.dataset_name,
        as_of=f"{m.as_of:%Y-%m-%d}",
        horizon_days=m.horizon_days,
        generated_at=(f" on {data.generated_at:%Y-%m-%d %H:%M} UTC"
                      if data.generated_at is not None else ""),
        table_rows=data.table_rows,
        business=_business_section(data),
        cohorts=_cohort_section(data),
        model=_model_section(data),
        outreach=_outreach_section(data),
        loop=data.loop,
    )


def write_report(html: str, path: Path | str) -> Path:
    """Write the report atomically (temp file, then rename) so a reader never sees half."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(html)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes it private; a report is shared
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


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
