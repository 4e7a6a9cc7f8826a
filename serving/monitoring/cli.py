"""`churnlens monitor`: did the scores come true, has the population drifted, retrain or not.

Prints the realized figures by model version and scoring week next to the
held-out figures from training, the drift table, and the verdict as one line;
exits 0 (keep the model), 1 (retrain) or 2 (nothing could be judged, or the
input is unusable). Logs a monitoring run to MLflow, stores the gauges in the
outbox for ``churnlens serve``'s ``/metrics``, and then applies the score
retention (``CHURNLENS_SCORE_RETENTION_DAYS``, counted back from the date judged).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from features.cli import TablesOption
from serving.settings import DEFAULT_OUTBOX_URL

if TYPE_CHECKING:
    from serving.monitoring.monitor import MonitorResult

app = typer.Typer(no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _number(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_result(result: MonitorResult) -> None:
    """The tables a person reads: quality by version and week, held out beside, drift."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=200, highlight=False)
    quality = Table(title=f"Did the scores come true? (outcomes known by {result.as_of.date()})")
    for column in ("model version", "scoring week", "scores", "outcomes", "churn rate",
                   "ROC AUC", "PR AUC", "top-decile lift", "ECE", "CLV predicted",
                   "CLV actual"):
        quality.add_column(column, justify="left" if column in ("scoring week",) else "right")
    row: Any
    for row in result.quality.itertuples(index=False):
        week = "all weeks" if pd.isna(row.week) else str(pd.Timestamp(row.week).date())
        quality.add_row(str(row.model_version), week, f"{int(row.scores):,}",
                        f"{int(row.outcomes):,}", _number(row.churn_rate),
                        _number(row.roc_auc), _number(row.pr_auc),
                        _number(row.top_decile_lift, 2), _number(row.ece),
                        _number(row.clv_predicted_total, 0), _number(row.clv_actual_total, 0))
        if week == "all weeks" and str(row.model_version) in result.held_out:
            held = result.held_out[str(row.model_version)]
            quality.add_row(str(row.model_version), "held out at training", "", "", "",
                            _number(held.get("roc_auc")), _number(held.get("pr_auc")),
                            _number(held.get("top_decile_lift"), 2), _number(held.get("ece")),
                            "", "", style="dim")
    console.print(quality)
    for version, drift in sorted(result.drift.items()):
        table = Table(title=f"Drift of model version {version}: {drift.customers:,} customers "
                            f"scored on {drift.scored_at.date()} against the training reference")
        table.add_column("feature (moved most first)")
        table.add_column("PSI", justify="right")
        table.add_row("churn score", f"{drift.score_psi:.3f}", style="bold")
        for item in drift.top_features(8).itertuples(index=False):
            table.add_row(str(item.name), f"{item.psi:.3f}")
        console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


@app.command()
def monitor(
    data: Annotated[str, typer.Option(
        "--data", envvar="CHURNLENS_DATA",
        help="Dataset directory or database URL: what happened after the scores")],
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Judge with what was known before this date, YYYY-MM-DD; default the "
                        "day after the latest row")] = None,
    outbox: Annotated[str, typer.Option(
        "--outbox", envvar="CHURNLENS_OUTBOX_URL",
        help="Outbox holding the score history (SQLAlchemy URL)")] = DEFAULT_OUTBOX_URL,
    drift_window_days: Annotated[int, typer.Option(
        min=1, help="Drift is measured on the latest scores of this many last days")] = 30,
    mlflow_log: Annotated[bool, typer.Option(
        "--mlflow/--no-mlflow", help="Log a monitoring run to MLflow")] = True,
    tables: TablesOption = None,
) -> None:
    """Check stored scores against what happened, measure drift, say whether to retrain.

    Exit code: 0 keep the model, 1 retrain, 2 cannot judge (no matured score, no
    model version the registry knows, too few outcomes, or unusable input).
    """
    import pandas as pd
    from sqlalchemy.exc import SQLAlchemyError

    from features.cli import load_or_exit, parse_as_of
    from models.loading import missing_store
    from serving.monitoring.monitor import MonitorInputError, run_monitor
    from serving.monitoring.store import save_gauges
    from serving.monitoring.tracking import (
        RegisteredBundles,
        log_monitoring_run,
        use_tracking_store,
    )
    from serving.outreach.outbox import Outbox
    from serving.redact import database_problem, masked_url
    from serving.settings import OutreachSettings, SettingsError, load_settings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    dataset = load_or_exit(data, tables).dataset
    when = parse_as_of(as_of, default=dataset.default_as_of)
    if missing_store(outbox) is not None:
        raise _fail(f"no outbox at {masked_url(outbox)} (no such file): score customers with "
                    "`churnlens score --outreach` or `churnlens serve` first, or set "
                    "CHURNLENS_OUTBOX_URL (or --outbox) to your outbox")
    problem = use_tracking_store()
    if problem is not None:
        raise _fail(problem)
    import mlflow

    tracking_uri = mlflow.get_tracking_uri()
    try:
        retention_days = load_settings(OutreachSettings, outbox_url=outbox).score_retention_days
    except SettingsError as error:
        raise _fail(str(error)) from None
    store = Outbox(outbox)
    try:
        scores = store.score_history(until=when)
        bundles = RegisteredBundles()
        try:
            result = run_monitor(dataset, scores, as_of=when, load_bundle=bundles,
                                 drift_window_days=drift_window_days)
        except MonitorInputError as error:
            raise _fail(str(error)) from None
        print_result(result)
        gauges = result.gauges()
        save_gauges(store.engine, gauges, as_of=when.to_pydatetime(),
                    measured_at=pd.Timestamp.now(tz="UTC").tz_localize(None).to_pydatetime(),
                    schema=store.schema)
        if retention_days > 0:  # counted back from the date judged, like the scores' as_of
            cutoff = when - pd.Timedelta(days=retention_days)
            removed = store.prune_scores(older_than=cutoff.to_pydatetime())
            if removed:
                typer.echo(f"deleted {removed:,} score(s) with as_of before {cutoff.date()} "
                           f"(CHURNLENS_SCORE_RETENTION_DAYS={retention_days})")
    except SQLAlchemyError as error:
        raise _fail(f"the outbox cannot be used: {database_problem(error)}") from None
    finally:
        store.close()
    if mlflow_log:
        version = result.judged_version
        run_id = log_monitoring_run(
            tracking_uri=tracking_uri, model_name=bundles.model_name, judged_version=version,
            training_run_id=bundles.run_id(version) if version else None, gauges=gauges,
            verdict_line=result.verdict.line, exit_code=result.verdict.exit_code,
            as_of=str(when.date()), tables=result.tables())
        typer.echo(f"logged monitoring run {run_id} to MLflow (experiment churnlens-monitoring)")
    typer.echo(result.verdict.line)
    raise typer.Exit(code=result.verdict.exit_code)

