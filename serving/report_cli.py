"""The ``report`` command: the retention report as one self-contained HTML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.cli import DATA_HELP, TablesOption
from models import DEFAULT_MODEL_URI
from serving.settings import DEFAULT_OUTBOX_URL

if TYPE_CHECKING:
    from rich.console import Console

    from serving.report import ReportData

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
    engine: Annotated[str, typer.Option(
        help="local | dask: on a partitioned dataset (`churnlens partition`), where the "
             "per-partition metrics run")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        help="Dask scheduler address (tcp://host:8786); default a local cluster")] = None,
    partitions: Annotated[int | None, typer.Option(
        min=1, help="Partition count the partitioned dataset must have")] = None,
    connect_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to wait for the Dask scheduler to answer")] = 10.0,
) -> None:
    """Write the retention report: churn per month, cohorts, the model's view, outreach."""
    import pandas as pd
    from rich.console import Console
    from sqlalchemy.engine import make_url

    from features.cli import load_or_exit, parse_as_of, source_label
    from features.partitioned import is_partitioned
    from features.sources import is_database_url
    from serving.report import ReportInputError, gather_report

    # MLflow's per-file download bars would bury the report's own messages
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    console = Console(stderr=True)
    if engine not in ("local", "dask"):
        raise typer.BadParameter("expected local or dask", param_hint="--engine")
    if scheduler is not None and engine != "dask":
        raise typer.BadParameter("--scheduler needs --engine dask", param_hint="--scheduler")
    if not is_database_url(data) and is_partitioned(data):
        if tables is not None:
            raise typer.BadParameter("a partitioned dataset needs no table mapping",
                                     param_hint="--tables")
        gathered = _partitioned(data, console=console, engine=engine, scheduler=scheduler,
                                partitions=partitions, connect_timeout=connect_timeout,
                                as_of=as_of, horizon_days=horizon_days,
                                model=None if no_model else model, scores=scores,
                                outbox=outbox)
        _write(gathered, out, console=console)
        return
    if engine == "dask":
        console.print(f"[red]error:[/red] --engine dask reads a partitioned dataset; {data} is "
                      "not one: write it with `churnlens partition --data DIR --out PARTS "
                      "--partitions N` first", soft_wrap=True, highlight=False)
        raise typer.Exit(2)
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
    _write(gathered, out, console=console)


def _write(gathered: ReportData, out: Path, *, console: Console) -> None:
    from serving.report import render_report, write_report

    with console.status("rendering"):
        path = write_report(render_report(gathered), out)
    for note in gathered.model.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    typer.echo(f"wrote the retention report to {path}")


def _partitioned(data: str, *, console: Console, engine: str, scheduler: str | None,
                 partitions: int | None, connect_timeout: float, as_of: str | None,
                 horizon_days: int, model: str | None, scores: Path | None,
                 outbox: str) -> ReportData:
    """The report of a partitioned dataset: metrics one task per partition (workers read
    them), the driver adds up small tallies."""
    from contextlib import nullcontext

    import pandas as pd

    from features.cli import parse_as_of
    from features.cluster import SchedulerUnreachable, dask_client
    from features.contract import DataContractError
    from features.partitioned import read_manifest
    from serving.report import ReportInputError, gather_partitioned_report

    try:
        manifest = read_manifest(data, partitions=partitions)
        cut = parse_as_of(as_of, default=manifest.default_as_of)
        connection = (dask_client(scheduler, connect_timeout=connect_timeout)
                      if engine == "dask" else nullcontext(None))
        with connection as client, console.status(
                f"computing retention metrics over {manifest.partitions} partitions"):
            return gather_partitioned_report(
                data, client=client, as_of=cut, horizon_days=horizon_days, model_uri=model,
                scores_path=scores, outbox_url=outbox, partitions=partitions,
                dataset_name=Path(data.rstrip("/")).name,
                generated_at=pd.Timestamp.now(tz="UTC").tz_localize(None))
    except (DataContractError, SchedulerUnreachable, ReportInputError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
