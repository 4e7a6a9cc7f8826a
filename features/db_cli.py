"""``churnlens load``: files into the database of record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
def load(
    data: Annotated[Path, typer.Option("--data", help="Dataset directory (CSV or Parquet tables)")],
    into: Annotated[str, typer.Option(
        "--into", help="Database URL: sqlite:///live.db or postgresql+psycopg://…")],
    replace: Annotated[bool, typer.Option(
        "--replace", help="Drop the churnlens tables first and load from scratch")] = False,
    rejects: Annotated[Path, typer.Option(
        help="Where to write rejected rows (.csv or .parquet)")] = Path("rejects.csv"),
) -> None:
    """Load a dataset directory into a database (tables, keys and indexes created as needed).

    Idempotent: rows whose key is already there are left as they are, so loading
    the same files twice adds nothing; --replace starts over.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from features.cli import load_or_exit
    from features.db_load import LoadError, load_dataset
    from features.io import write_table
    from features.sources import is_database_url

    if not is_database_url(into):
        raise typer.BadParameter("expected a database URL (sqlite:///FILE or "
                                 "postgresql+psycopg://…)", param_hint="--into")
    if rejects.suffix not in (".csv", ".parquet"):
        raise typer.BadParameter("must end in .csv or .parquet", param_hint="--rejects")
    with console.status(f"reading {data}"):
        validation = load_or_exit(data)
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        with console.status("loading"):
            report = load_dataset(validation, into, now=now, replace=replace)
    except (LoadError, SQLAlchemyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        console.print(f"[red]error:[/red] {first}", highlight=False)
        raise typer.Exit(2) from None
    table = Table(title="load")
    for column in ("table", "file", "rows read", "rows used", "rows rejected", "rows added",
                   "rows updated", "already there"):
        table.add_column(column, justify="left" if column in ("table", "file") else "right")
    used, rejected = validation.rows_used, validation.rows_rejected
    for name, read in validation.rows_read.items():
        table.add_row(name, validation.source_of(name), f"{read:,}", f"{used.get(name, 0):,}",
                      f"{rejected.get(name, 0):,}", f"{report.added.get(name, 0):,}",
                      f"{report.updated.get(name, 0):,}", f"{report.already_present(name):,}")
    console.print(table)
    if not validation.rejects.empty:
        write_table(validation.rejects, rejects)
        console.print(f"rejected rows written to {rejects}")
    added, updated = sum(report.added.values()), sum(report.updated.values())
    if added or updated:
        console.print(f"added {added:,} rows, updated {updated:,}", highlight=False)
    else:
        console.print("nothing new: every row was already there", highlight=False)
