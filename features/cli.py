"""Commands over datasets: validate, generate, features, partition."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

from features.contract import DataContractError, ValidationResult
from features.io import read_dataset, write_table

app = typer.Typer(no_args_is_help=True)
console = Console()

DATA_HELP = ("Dataset directory (CSV or Parquet tables), or a database URL "
             "(sqlite:///live.db, postgresql+psycopg://…)")
DataOption = Annotated[str, typer.Option("--data", help=DATA_HELP)]
TablesOption = Annotated[Path | None, typer.Option(
    "--tables", envvar="CHURNLENS_TABLES",
    help="YAML mapping of the contract tables and columns onto an existing database schema")]


def source_label(data: Path | str) -> str:
    """How messages name a dataset: a directory as given, a database URL without password."""
    from features.sources import is_database_url

    if not is_database_url(data):
        return str(data)
    from sqlalchemy.engine import make_url

    return make_url(str(data)).render_as_string(hide_password=True)


def load_or_exit(data: Path | str, tables: Path | None = None) -> ValidationResult:
    """Read a dataset for a command; a contract error becomes a one-line message and exit 2."""
    try:
        return read_dataset(data, tables=tables)
    except DataContractError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from error


def print_summary(result: ValidationResult) -> None:
    """Rows read = used + rejected per table, the date range and the reject reasons."""
    table = Table(title="dataset")
    for column in ("table", "file", "rows read", "rows used", "rows rejected"):
        table.add_column(column, justify="left" if column in ("table", "file") else "right")
    used, rejected = result.rows_used, result.rows_rejected
    for name, read in result.rows_read.items():
        table.add_row(name, result.source_of(name), f"{read:,}", f"{used.get(name, 0):,}",
                      f"{rejected.get(name, 0):,}")
    console.print(table)
    latest = result.dataset.latest_timestamp()
    first_stamps = (("orders", "ordered_at"), ("events", "occurred_at"),
                    ("subscriptions", "started_at"))
    starts = [frame[col].min() for name, col in first_stamps
              if (frame := result.dataset.table(name)) is not None and not frame.empty]
    if latest is not None and starts:
        console.print(f"history from {min(starts):%Y-%m-%d} to {latest:%Y-%m-%d}; "
                      f"default --as-of {result.dataset.default_as_of():%Y-%m-%d}")
    if not result.rejects.empty:
        reasons = result.rejects.groupby(["file", "reason"]).size().rename("rows").reset_index()
        for row in reasons.itertuples():
            console.print(f"  rejected {row.rows:,} row(s) of {row.file}: {row.reason}")


@app.command()
def validate(
    data: DataOption,
    tables: TablesOption = None,
    rejects: Annotated[Path, typer.Option(
        help="Where to write rejected rows (.csv or .parquet)")] = Path("rejects.csv"),
    strict: Annotated[bool, typer.Option(help="Exit 1 when any row is rejected")] = False,
) -> None:
    """Check a dataset against the data contract and report what can be used."""
    if rejects.suffix not in (".csv", ".parquet"):
        raise typer.BadParameter("must end in .csv or .parquet", param_hint="--rejects")
    try:
        result = read_dataset(data, tables=tables)
    except DataContractError as error:
        # one line, however long: scripts and people grep for it
        console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from error
    print_summary(result)
    for reject in result.rejects.head(20).itertuples():
        console.print(f"{reject.file} row {reject.row}, column {reject.column}: "
                      f"{reject.reason} (value {reject.value!r})", highlight=False,
                      soft_wrap=True)
    if len(result.rejects) > 20:
        console.print(f"... and {len(result.rejects) - 20:,} more")
    if not result.rejects.empty:
        write_table(result.rejects, rejects)
        console.print(f"rejected rows written to {rejects}", soft_wrap=True)
        if strict:
            raise typer.Exit(1)
    else:
        console.print("[green]every row is usable[/green]")


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=1, help="Number of customers")] = 2000,
    out: Annotated[Path, typer.Option(help="Dataset directory to write")] = Path("data"),
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data)")] = 0,
    end: Annotated[str | None, typer.Option(
        help="Last day of history, YYYY-MM-DD; default today")] = None,
    kind: Annotated[str, typer.Option(help="ecommerce | subscription | mixed")] = "mixed",
    fmt: Annotated[str, typer.Option("--format", help="csv | parquet")] = "csv",
    history_days: Annotated[int, typer.Option(min=14, help="Days of history")] = 1095,
    orders_per_customer: Annotated[float | None, typer.Option(
        min=0.01, help="Average orders per customer (default: the kind's natural rate)")] = None,
    events_per_customer: Annotated[float | None, typer.Option(
        min=0.01, help="Average events per customer (default: the kind's natural rate)")] = None,
    seasonality: Annotated[bool, typer.Option(
        "--seasonality", help="Add a yearly peak quarter (Oct-Dec: about 1.8x the spend, "
        "half the churn hazard)")] = False,
    shift_sessions: Annotated[str | None, typer.Option(
        "--shift-sessions", help="DAY:FACTOR, e.g. 2024-03-01:0.5: app sessions happen FACTOR "
        "times as often from DAY on (a known drift, for monitoring checks)")] = None,
) -> None:
    """Generate a realistic dataset whose churn is caused by observable behaviour."""
    from rich.progress import Progress

    from features.generate import KINDS, generate_dataset

    if kind not in KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(KINDS)}", param_hint="--kind")
    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter("expected csv or parquet", param_hint="--format")
    try:
        end_day = date.fromisoformat(end) if end else date.today()
    except ValueError as error:
        raise typer.BadParameter(f"{end!r} is not a date (YYYY-MM-DD)",
                                 param_hint="--end") from error
    session_shift = None
    if shift_sessions is not None:
        try:
            day, factor = shift_sessions.split(":")
            session_shift = (date.fromisoformat(day), float(factor))
        except ValueError as error:
            raise typer.BadParameter(f"{shift_sessions!r} is not DAY:FACTOR (e.g. "
                                     "2024-03-01:0.5)", param_hint="--shift-sessions") from error
        if not session_shift[1] >= 0:
            raise typer.BadParameter("the factor must be at least 0",
                                     param_hint="--shift-sessions")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {customers:,} customers", total=1.0)
        generated = generate_dataset(
            customers=customers, seed=seed, end=end_day, kind=kind, history_days=history_days,
            orders_per_customer=orders_per_customer, events_per_customer=events_per_customer,
            seasonality=seasonality, session_shift=session_shift,
            progress=lambda done: progress.update(task, completed=done),
        )
    with console.status(f"writing {fmt} files to {out}"):
        generated.write(out, fmt=fmt)
    counts = ", ".join(f"{len(frame):,} {name}" for name, frame in generated.tables.items())
    console.print(f"wrote {counts} and ground_truth.csv to {out}", soft_wrap=True)


def parse_as_of(value: str | None, *, default):
    """Parse ``--as-of``; None means the dataset's default (the day after its last row)."""
    import pandas as pd

    if value is None:
        return default()
    try:
        return pd.Timestamp(date.fromisoformat(value))
    except ValueError as error:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)",
                                 param_hint="--as-of") from error


@app.command("features")
def features_command(
    data: Annotated[str, typer.Option(
        "--data", help="Dataset directory, a database URL (sqlite:///live.db, "
                       "postgresql+psycopg://…), or a partitioned dataset (local path or fsspec "
                       "URL) written by `churnlens partition`")],
    out: Annotated[Path, typer.Option(help="Feature table to write (.parquet or .csv)")],
    tables: TablesOption = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Use only rows before this day, YYYY-MM-DD; default the day after "
                        "the last row")] = None,
    engine: Annotated[str, typer.Option(help="local | dask")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        help="Dask scheduler address (tcp://host:8786); default a local cluster")] = None,
    partitions: Annotated[int | None, typer.Option(
        min=1, help="Customer partitions for --engine dask")] = None,
    connect_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to wait for the Dask scheduler to answer")] = 10.0,
) -> None:
    """Write the point-in-time feature table: one row per customer known at --as-of."""
    from features.engine import ENGINES
    from features.partitioned import is_partitioned

    if engine not in ENGINES:
        raise typer.BadParameter(f"expected one of {', '.join(ENGINES)}", param_hint="--engine")
    if out.suffix not in (".parquet", ".csv"):
        raise typer.BadParameter("the output must end in .parquet or .csv", param_hint="--out")
    if scheduler is not None and engine != "dask":
        raise typer.BadParameter("--scheduler needs --engine dask", param_hint="--scheduler")
    if is_partitioned(data):
        _partitioned_features(data, out=out, as_of=as_of, engine=engine, scheduler=scheduler,
                              partitions=partitions, connect_timeout=connect_timeout)
    else:
        _features(data, out=out, as_of=as_of, engine=engine, scheduler=scheduler,
                  partitions=partitions, tables=tables)


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def _features(data: str, *, out: Path, as_of: str | None, engine: str, scheduler: str | None,
              partitions: int | None, tables: Path | None = None) -> None:
    """The feature table of a dataset directory or database read here (the Dask engine
    ships chunks)."""
    from features.engine import Engine, compute_features

    with console.status(f"reading {source_label(data)}"):
        result = load_or_exit(data, tables)
    dataset = result.dataset
    if not result.rejects.empty:
        console.print(f"[yellow]{len(result.rejects):,} row(s) rejected by the data contract "
                      f"were left out[/yellow] (see `churnlens validate --data "
                      f"{source_label(data)}`)", soft_wrap=True)
    cut = parse_as_of(as_of, default=dataset.default_as_of)
    with _progress_bar() as bar:
        label = "partitions" if engine == "dask" else "features"
        task = bar.add_task(f"computing {label} as of {cut:%Y-%m-%d}", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            frame = compute_features(dataset, as_of=cut, engine=cast(Engine, engine),
                                     scheduler=scheduler,
                                     partitions=partitions, progress=advance)
        except OSError as error:
            console.print(f"[red]error:[/red] cannot reach the Dask scheduler {scheduler}: {error}")
            raise typer.Exit(2) from error
    write_table(frame.reset_index(), out)
    console.print(f"wrote {len(frame):,} customers x {frame.shape[1]} features as of "
                  f"{cut:%Y-%m-%d} to {out}")


def _partitioned_features(data: str, *, out: Path, as_of: str | None, engine: str,
                          scheduler: str | None, partitions: int | None,
                          connect_timeout: float) -> None:
    """One task per partition: workers read their partition; this process reads the manifest."""
    from contextlib import nullcontext

    from features.cluster import SchedulerUnreachable, dask_client
    from features.engine import compute_partitioned_features
    from features.partitioned import read_manifest

    if out.suffix != ".parquet":
        raise typer.BadParameter("a partitioned dataset's features are written as .parquet",
                                 param_hint="--out")
    try:
        manifest = read_manifest(data, partitions=partitions)
        cut = parse_as_of(as_of, default=manifest.default_as_of)
        connection = (dask_client(scheduler, connect_timeout=connect_timeout)
                      if engine == "dask" else nullcontext(None))
        with connection as client, _progress_bar() as bar:
            task = bar.add_task(f"computing partitions as of {cut:%Y-%m-%d}",
                                total=manifest.partitions)
            run = compute_partitioned_features(
                data, out=str(out), as_of=cut, client=client, partitions=partitions,
                progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (DataContractError, SchedulerUnreachable, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    rejected = sum(run.rows_rejected.values()) + sum(manifest.rows_rejected.values())
    if rejected:
        console.print(f"[yellow]{rejected:,} row(s) rejected by the data contract were left "
                      f"out[/yellow] (see {data.rstrip('/')}/rejects.csv)", soft_wrap=True)
    console.print(f"wrote {run.customers:,} customers from {manifest.partitions} partitions as "
                  f"of {cut:%Y-%m-%d} to {out}", soft_wrap=True)


@app.command("partition")
def partition_command(
    data: Annotated[str, typer.Option(
        "--data", help="Dataset directory to read (local path or fsspec URL)")],
    out: Annotated[str, typer.Option(
        help="Where to write the partitioned dataset (local path or fsspec URL)")],
    partitions: Annotated[int, typer.Option(
        min=1, help="Number of customer partitions (a few per worker core)")],
) -> None:
    """Write a dataset as Parquet partitions by customer, for Dask workers to read.

    Every table of a customer lands in the same partition (blake2b-64 of the id, modulo
    the count); rows the data contract rejects go to OUT/rejects.csv and are counted in
    OUT/manifest.json.
    """
    from features.partitioned import read_source, write_partitioned

    try:
        with console.status(f"reading {data}"):
            result = read_source(data)
        with console.status(f"writing {partitions} partitions to {out}"):
            manifest = write_partitioned(result, out, partitions=partitions)
    except DataContractError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    print_summary(result)
    sizes = [part["customers"] for part in manifest.rows]
    console.print(f"wrote {manifest.customers:,} customers in {manifest.partitions} partitions "
                  f"({min(sizes):,} to {max(sizes):,} customers each) to {out}", soft_wrap=True)
