"""Commands over datasets: validate, generate, features."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from features.contract import DataContractError, ValidationResult
from features.io import read_dataset, write_table

app = typer.Typer(no_args_is_help=True)
console = Console()

DataOption = Annotated[Path, typer.Option("--data", help="Dataset directory (CSV or Parquet tables)")]


def load_or_exit(data: Path) -> ValidationResult:
    """Read a dataset for a command; a contract error becomes a one-line message and exit 2."""
    try:
        return read_dataset(data)
    except DataContractError as error:
        console.print(f"[red]error:[/red] {error}")
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
    starts = [frame[col].min() for name, col in (("orders", "ordered_at"), ("events", "occurred_at"),
                                                 ("subscriptions", "started_at"))
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
    rejects: Annotated[Path, typer.Option(help="Where to write rejected rows")] = Path("rejects.csv"),
    strict: Annotated[bool, typer.Option(help="Exit 1 when any row is rejected")] = False,
) -> None:
    """Check a dataset against the data contract and report what can be used."""
    result = load_or_exit(data)
    print_summary(result)
    for reject in result.rejects.head(20).itertuples():
        console.print(f"{reject.file} row {reject.row}, column {reject.column}: "
                      f"{reject.reason} (value {reject.value!r})", highlight=False)
    if len(result.rejects) > 20:
        console.print(f"... and {len(result.rejects) - 20:,} more")
    if not result.rejects.empty:
        write_table(result.rejects, rejects)
        console.print(f"rejected rows written to {rejects}")
        if strict:
            raise typer.Exit(1)
    else:
        console.print("[green]every row is usable[/green]")


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=1, help="Number of customers")] = 2000,
    out: Annotated[Path, typer.Option(help="Dataset directory to write")] = Path("data"),
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data)")] = 0,
    end: Annotated[str | None, typer.Option(help="Last day of history, YYYY-MM-DD; default today")] = None,
    kind: Annotated[str, typer.Option(help="ecommerce | subscription | mixed")] = "mixed",
    fmt: Annotated[str, typer.Option("--format", help="csv | parquet")] = "csv",
) -> None:
    """Generate a realistic dataset whose churn is caused by observable behaviour."""
    from features.generate import KINDS, generate_dataset

    if kind not in KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(KINDS)}", param_hint="--kind")
    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter("expected csv or parquet", param_hint="--format")
    try:
        end_day = date.fromisoformat(end) if end else date.today()
    except ValueError as error:
        raise typer.BadParameter(f"{end!r} is not a date (YYYY-MM-DD)", param_hint="--end") from error
    with console.status(f"generating {customers:,} customers"):
        generated = generate_dataset(customers=customers, seed=seed, end=end_day, kind=kind)
        generated.write(out, fmt=fmt)
    counts = ", ".join(f"{len(frame):,} {name}" for name, frame in generated.tables.items())
    console.print(f"wrote {counts} and ground_truth.csv to {out}")


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
