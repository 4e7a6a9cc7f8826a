"""Rendering the report: gathered data in, one self-contained HTML string out.

Pure: it reads only the `ReportData` it is given. Each section becomes a plain
dict for the Jinja template (``serving/templates/report.html.j2``), with numbers
formatted here; charts come from `serving.report.charts`. CSS is inline and
charts are base64 PNGs, so the file opens anywhere without a network.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.retention import RetentionMetrics
from serving.report.charts import line_chart, score_histogram
from serving.report.data import (
    TIER_ORDER,
    ReportData,
    risk_value_table,
    top_reasons,
)

SECTION_IDS = ("business-metrics", "cohorts", "model-view", "outreach", "scores-came-true")
OUTBOX_STATUSES = ("pending", "delivering", "delivered", "acknowledged", "failed", "dead")
#: months of history listed in the monthly table (charts show all of them)
TABLE_MONTHS = 12
STAGE_ORDER = ("new", "active", "declining", "lapsed", "never_active")


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
                       "png": line_chart(churn_series, title="Customer churn rate per month")})
    if not m.mrr.empty:
        charts.append({"title": "Net revenue retention and gross MRR churn", "png": line_chart(
            {"net revenue retention": m.mrr["net_revenue_retention"],
             "gross MRR churn": m.mrr["gross_mrr_churn_rate"]},
            title="Net revenue retention and gross MRR churn per month", reference=1.0)})
    if not m.repeat_purchase.empty:
        charts.append({"title": "Repeat-purchase rate", "png": line_chart(
            {"repeat-purchase rate": m.repeat_purchase["repeat_purchase_rate"]},
            title="Repeat-purchase rate per month")})
        aov = m.repeat_purchase["returning_aov"]
        if aov.notna().sum() >= 2:
            trend = m.returning_aov_trend
            charts.append({"title": "Average order value of returning customers",
                           "png": line_chart({"returning AOV": aov}, percent=False,
                                              title="Average order value of returning "
                                                    f"customers ({trend.direction})")})
    if not m.order_status.empty:
        charts.append({"title": "Return, cancellation and unclaimed rates", "png": line_chart(
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
    cohort: Any
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
        section["histogram"] = score_histogram(scores)
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
    tier_rows: list[Any] = list(table.itertuples())
    section["tiers"] = [
        {"tier": row.risk_tier, "segment": row.value_segment, "customers": _count(row.customers),
         "clv": _money(row.total_clv), "var": _money(row.total_value_at_risk),
         "share": _pct(row.total_value_at_risk / total_risk) if total_risk else "–"}
        for row in tier_rows
    ]
    section["tiers_total"] = {"customers": _count(table["customers"].sum()),
                              "clv": _money(table["total_clv"].sum()),
                              "var": _money(total_risk)}
    reasons = top_reasons(scores)
    if reasons.empty:
        section["notes"].append("The scores carry no reasons (explanations are written for "
                                "at-risk customers; none were at risk or explain was off).")
    has_json = "reasons_json" in scores.columns
    counted: list[Any] = list(reasons.itertuples())
    section["reasons"] = [
        {"reason": _feature_description(r.reason) if has_json else r.reason,
         "feature": r.reason if has_json else "", "top": _count(r.as_top_reason),
         "share": _pct(r.share), "top3": _count(r.in_top_3), "example": r.example}
        for r in counted
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
        loader=FileSystemLoader(Path(__file__).parent.parent / "templates"),
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
