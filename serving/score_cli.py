"""`churnlens score`: score a whole customer base into a Parquet or CSV file (serving.batch)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from features.cli import TablesOption
from models import DEFAULT_MODEL_URI
from serving.schemas import DEFAULT_TOP_K, MAX_TOP_K
from serving.settings import DEFAULT_OUTBOX_URL

app = typer.Typer(no_args_is_help=True)


@app.command()
def score(
    data: Annotated[str, typer.Option(
        help="Dataset directory (customers, orders, ...), a database URL (sqlite:///live.db, "
             "postgresql+psycopg://…), or a partitioned dataset (local path or fsspec URL) "
             "written by `churnlens partition`")],
    out: Annotated[str, typer.Option(help="Output file, .parquet or .csv (local path, or "
                                          "fsspec URL for a partitioned dataset)")],
    as_of: Annotated[datetime | None, typer.Option(
        help="Score as of this date (the model sees rows before it); default: the day "
             "after the latest timestamp in the data")] = None,
    model: Annotated[str, typer.Option(
        help="Model URI or bundle directory", envvar="CHURNLENS_MODEL_URI")
    ] = DEFAULT_MODEL_URI,
    top_k: Annotated[int, typer.Option(min=1, max=MAX_TOP_K, help="Reasons per customer")
                     ] = DEFAULT_TOP_K,
    explain: Annotated[str, typer.Option(
        help="Reasons for all, at-risk (risk tier high or medium) or none")] = "all",
    engine: Annotated[str, typer.Option(help="local, or dask for a Dask cluster")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        help="Dask scheduler address (default: a LocalCluster on this machine)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from its last finished chunk")] = False,
    outreach: Annotated[bool, typer.Option(
        "--outreach/--no-outreach",
        help="Write scores and triggered actions to the outbox, as the API does")] = False,
    chunk_size: Annotated[int, typer.Option(
        min=1, help="Customers per chunk (bounds memory per chunk)")] = 50_000,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes scoring chunks side by side with the local engine "
                    "(default: one per core, at most 4)")] = None,
    rules: Annotated[Path | None, typer.Option(
        help="Outreach rules YAML (default: the built-in set)", envvar="CHURNLENS_RULES",
        exists=True, dir_okay=False)] = None,
    outbox_url: Annotated[str, typer.Option(
        help="Outbox database URL", envvar="CHURNLENS_OUTBOX_URL")] = DEFAULT_OUTBOX_URL,
    connect_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to wait for the Dask scheduler to answer")] = 10.0,
    tables: TablesOption = None,
) -> None:
    """Score every customer: churn risk, CLV, value at risk, reasons, recommended action.

    Streams customers in chunks (sorted ids), writes the output atomically, can resume,
    and sends customers that cannot be scored to OUT's rejects file with the reason.
    """
    import pandas as pd
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from features.cluster import SchedulerUnreachable
    from features.contract import DataContractError
    from features.partitioned import is_partitioned
    from features.sources import is_database_url
    from models.loading import load_model
    from serving.batch import BatchError, default_workers, run_batch
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    console = Console(stderr=True)
    database = is_database_url(data)
    partitioned = not database and is_partitioned(data)
    if not database and tables is not None:
        console.print(f"[red]error:[/red] --tables needs a database URL in --data, not {data}",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    if not partitioned and not database and not Path(data).is_dir():
        console.print(f"[red]error:[/red] --data {data}: not a dataset directory", soft_wrap=True,
                      highlight=False)
        raise typer.Exit(2)
    try:
        loaded = load_model(model)
    except (LookupError, ValueError, OSError) as error:
        console.print(f"[red]error:[/red] --model {model}: {error}", soft_wrap=True,
                      highlight=False)
        raise typer.Exit(2) from None
    scorer = Scorer(loaded, rules=load_rules(rules))
    outbox = None
    if outreach and not partitioned:  # partitioned: the workers write to the outbox
        from serving.outreach.outbox import Outbox

        outbox = Outbox(outbox_url)

    with Progress(
        TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(),
        TextColumn("customers"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, transient=False,
        disable=os.environ.get("CHURNLENS_NO_PROGRESS") == "1",
    ) as bar:
        task = bar.add_task("score", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            if partitioned:
                summary = _score_partitioned(
                    data=data, out=out, scorer=scorer, model_uri=model,
                    as_of=pd.Timestamp(as_of) if as_of is not None else None, top_k=top_k,
                    explain=explain, engine=engine, scheduler=scheduler, resume=resume,
                    chunk_size=chunk_size, progress=progress, connect_timeout=connect_timeout,
                    workers=workers or default_workers(),
                    outbox_url=outbox_url if outreach else None)
            else:
                summary = run_batch(
                    data=data if database else Path(data), tables=tables, out=Path(out),
                    scorer=scorer, model_uri=model,
                    as_of=pd.Timestamp(as_of) if as_of is not None else None, top_k=top_k,
                    explain=explain,  # type: ignore[arg-type]
                    engine=engine, scheduler=scheduler, resume=resume, outbox=outbox,
                    chunk_size=chunk_size, progress=progress,
                    workers=workers or default_workers(), connect_timeout=connect_timeout,
                )
        except (BatchError, DataContractError, SchedulerUnreachable) as error:
            console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        finally:
            if outbox is not None:
                outbox.close()

    rate = summary.rows_scored / summary.seconds if summary.seconds > 0 else 0.0
    typer.echo(
        f"rows in {summary.rows_in:,} = rows scored {summary.rows_scored:,} + rows rejected "
        f"{summary.rows_rejected:,}"
    )
    typer.echo(
        f"wrote {summary.output} ({summary.chunks} chunks, {summary.chunks_resumed} resumed; "
        f"{summary.seconds:.1f} s, {rate:,.0f} customers/s; model version "
        f"{summary.model_version}; as of {summary.as_of.date()})"
    )
    typer.echo(f"rejects: {summary.rejects}")
    for name, counts in summary.table_rows.items():
        if name != "customers" and counts["rejected"]:
            typer.echo(f"  {name}: {counts['read']:,} rows read, {counts['rejected']:,} rejected "
                       f"(see the rejects file)")
    if summary.outreach:
        typer.echo(f"outbox: {summary.outreach['scores']:,} scores, "
                   f"{summary.outreach['actions']:,} new actions")


def _score_partitioned(*, engine: str, scheduler: str | None, connect_timeout: float,
                       workers: int, **kwargs):
    """A partitioned dataset: one task per partition on Dask (or here, with --engine local)."""
    from contextlib import nullcontext

    from features.cluster import dask_client
    from serving.batch import BatchError
    from serving.partitioned_batch import run_partitioned_batch

    if engine not in ("local", "dask"):
        raise BatchError(f"--engine must be local or dask, not {engine}")
    if scheduler is not None and engine != "dask":
        raise BatchError("--scheduler needs --engine dask")
    connection = (dask_client(scheduler, connect_timeout=connect_timeout, workers=workers)
                  if engine == "dask" else nullcontext(None))
    with connection as client:
        return run_partitioned_batch(client=client, **kwargs)
