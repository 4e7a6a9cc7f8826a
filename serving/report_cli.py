"""The ``report`` command: the retention report as one self-contained HTML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from features.cli import DATA_HELP, TablesOption
from models import DEFAULT_MODEL_URI
from serving.settings import DEFAULT_OUTBOX_URL

app = typer.Typer(no_args_is_help=True)


@app.command()
def report(
    data: Annotated[str, typer.Option("--data", envvar="CHURNLENS_DATA", help=DATA_HELP)],
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("report.html"),
    model: Annotated[str, typer.Option(
        "--model", envvar="CHURNLENS_MODEL_URI",
        help="MLflow model URI; its run gives the calibration and lift charts")
    ] = DEFAULT_MODEL_URI,
    scores: Annotated[Path | None, typer.Option(
        help="Reuse a batch score file from `churnlens score` instead of scoring again")] = None,
    outbox: Annotated[str, typer.Option(
        "--outbox", envvar="CHURNLENS_OUTBOX_URL",
        help="Outreach outbox (SQLAlchemy URL)")] = DEFAULT_OUTBOX_URL,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Use rows before this date, YYYY-MM-DD; default the day after the "
                        "latest row")] = None,
    horizon_days: Annotated[int, typer.Option(
        min=1, help="Days without a completed order after which a shop customer is lost")] = 90,
    no_model: Annotated[bool, typer.Option(
        "--no-model", help="Leave the model out (no scoring, no MLflow)")] = False,
    tables: TablesOption = None,
) -> None:
    """Write the retention report: churn per month, cohorts, the model's view, outreach."""
    import pandas as pd
    from rich.console import Console
    from sqlalchemy.engine import make_url

    from features.cli import load_or_exit, parse_as_of, source_label
    from features.database import is_database_url
    from serving.report import ReportInputError, gather_report, render_report, write_report

    # MLflow's per-file download bars would bury the report's own messages
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    console = Console(stderr=True)
    with console.status(f"reading {source_label(data)}"):
        dataset = load_or_exit(data, tables).dataset
    if is_database_url(data):
        name = Path(make_url(data).database or "database").name
    else:
        name = Path(data).resolve().name
    as_of_date = parse_as_of(as_of, default=dataset.default_as_of)
    try:
        with console.status("computing retention metrics, scores and outreach"):
            gathered = gather_report(
                dataset, as_of=as_of_date, horizon_days=horizon_days,
                model_uri=None if no_model else model, scores_path=scores, outbox_url=outbox,
                dataset_name=name,
                generated_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
            )
    except ReportInputError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from error
    with console.status("rendering"):
        path = write_report(render_report(gathered), out)
    for note in gathered.model.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    typer.echo(f"wrote the retention report to {path}")
