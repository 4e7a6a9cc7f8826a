"""`churnlens backtest`: churnlens against BG/NBD, recency and value heuristics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from features.cli import TablesOption
from training.cli import (
    ACTIVE_DAYS_HELP,
    ACTIVITY_EVENTS_HELP,
    CHURN_HELP,
    CLV_MODEL_HELP,
    train_params,
)

app = typer.Typer(no_args_is_help=True)
console = Console()

#: short column headers so the table fits a terminal
MODEL_LABELS = {"bgnbd_expected_purchases": "bgnbd E[n]",
                "spend_frequency_recency": "spend×freq/rec",
                "spend_recency": "spend/rec"}


def _load(data: str, data_dir: Path | None, tables: Path | None = None):
    """A dataset directory or database URL, or a real dataset by name (``cdnow``, ``online-retail``,
    ``cdnow-sample``, or ``NAME:PATH``); returns (dataset, name or None, notes)."""
    from features.cli import load_or_exit
    from features.sources import is_database_url
    from training.realdata import SOURCE_FILES, load_source

    if is_database_url(data):
        return load_or_exit(data, tables).dataset, None, []
    name = data.partition(":")[0]
    if name in SOURCE_FILES and not Path(data).is_dir():
        try:
            loaded = load_source(data, data_dir=data_dir)
        except (OSError, ValueError) as error:
            console.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from error
        return loaded.dataset, name, loaded.notes
    if not Path(data).is_dir():
        console.print(f"[red]error:[/red] {data}: not a dataset directory nor one of "
                      f"{', '.join(SOURCE_FILES)} (or NAME:PATH)")
        raise typer.Exit(2)
    return load_or_exit(Path(data), tables).dataset, None, []


def _fmt(value: float, column: str) -> str:
    if value != value:  # NaN: not applicable to this model
        return "–"
    if column == "customers":
        return f"{int(value):,}"
    if column == "total_ratio":
        return f"{value:+.1%}"
    return f"{value:.3f}"


@app.command()
def backtest(
    data: Annotated[str, typer.Option(
        "--data", help="Dataset directory, a database URL (sqlite:///live.db, "
        "postgresql+psycopg://…), or a real dataset: cdnow, online-retail, "
        "cdnow-sample (read from --real-data-dir), or NAME:PATH")],
    tables: TablesOption = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Cut-off date: the model sees only rows before it. Default: the "
        "standard split for a real dataset, else the latest date that leaves a full "
        "holdout window")] = None,
    horizon: Annotated[int | None, typer.Option(
        "--horizon", min=1, help="Churn window in days (default 90; the standard split's "
        "holdout for a real dataset)")] = None,
    clv_horizon: Annotated[int | None, typer.Option(
        "--clv-horizon", min=1, help="CLV window in days (default: the churn window, so CLV "
        "is the holdout spend)")] = None,
    churn: Annotated[str, typer.Option("--churn", help=CHURN_HELP)] = "auto",
    active_days: Annotated[int | None, typer.Option(
        "--active-days", help=ACTIVE_DAYS_HELP)] = None,
    activity_events: Annotated[str | None, typer.Option(
        "--activity-events", help=ACTIVITY_EVENTS_HELP)] = None,
    step: Annotated[int | None, typer.Option(
        "--step", min=1, help="Days between training snapshots")] = None,
    max_snapshots: Annotated[int | None, typer.Option(
        "--max-snapshots", min=1,
        help="Most training snapshots (1: one, validated on a split by customer)")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the LightGBM models")] = 0,
    num_leaves: Annotated[int | None, typer.Option(
        "--num-leaves", min=2, help="LightGBM leaves per tree (default: chosen on the "
        "held-out training snapshot among 15, 7 and 3)")] = None,
    min_data_in_leaf: Annotated[int | None, typer.Option(
        "--min-data-in-leaf", min=1, help="LightGBM minimum rows per leaf (giving it or "
        "--num-leaves fixes the tree size)")] = None,
    clv_model: Annotated[str, typer.Option("--clv-model", help=CLV_MODEL_HELP)] = "auto",
    reference_penalizer: Annotated[float | None, typer.Option(
        "--reference-penalizer", min=0.0, help="BG/NBD penalizer (lifetimes' penalizer_coef; "
        "default 0, 0.1 for online-retail as in the reference figures)")] = None,
    reference_period: Annotated[str, typer.Option(
        "--reference-period", help="Purchase counting of BG/NBD: week (lifetimes freq='W') "
        "or day (Fader-Hardie-Lee)")] = "week",
    real_data_dir: Annotated[Path | None, typer.Option(
        "--real-data-dir", help="Folder of the real datasets (default ../shared/data)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Also write the metrics table (.csv or .json)")] = None,
) -> None:
    """Train on data before a cut-off, score what happened after it, compare with references."""
    import dataclasses

    import pandas as pd

    from features.cli import parse_as_of
    from features.definition import parse_event_list
    from training.backtest import BacktestError
    from training.backtest import backtest as run
    from training.params import TrainingDataError
    from training.realdata import REFERENCE_FIGURES, STANDARD_SPLITS

    if reference_period not in ("week", "day"):
        raise typer.BadParameter(f"{reference_period!r}: expected week or day",
                                 param_hint="--reference-period")
    events = parse_event_list(activity_events)
    settings: dict[str, object] = {
        "definition": churn, "clv_model": clv_model, "seed": seed, "active_days": active_days,
        "activity_events": None if events is None else tuple(events)}
    if step is not None:
        settings["step_days"] = step
    if max_snapshots is not None:
        settings["max_snapshots"] = max_snapshots
    if num_leaves is not None:
        settings["num_leaves"] = num_leaves
    if min_data_in_leaf is not None:
        settings["min_data_in_leaf"] = min_data_in_leaf
    if num_leaves is not None or min_data_in_leaf is not None:
        settings["tree_sizes"] = ()  # a size given by hand is not second-guessed
    params = train_params(**settings)  # bad settings fail before the data is read
    dataset, name, load_notes = _load(data, real_data_dir, tables)
    for note in load_notes:
        console.print(f"[dim]{note}[/dim]")
    split = STANDARD_SPLITS.get(name) if name else None
    horizon_days = horizon or (split.horizon_days if split else 90)
    clv_days = clv_horizon or horizon_days
    params = dataclasses.replace(params, horizon_days=horizon_days, clv_horizon_days=clv_days)

    def default_cut_off() -> pd.Timestamp:
        if split is not None:
            return split.as_of
        return dataset.default_as_of() - pd.Timedelta(days=max(horizon_days, clv_days))

    cut_off = parse_as_of(as_of, default=default_cut_off)
    penalizer = reference_penalizer
    if penalizer is None:
        penalizer = 0.1 if name == "online-retail" else 0.0
    console.print(f"backtest of {name or data} at {cut_off:%Y-%m-%d}: churn window "
                  f"{horizon_days} days, CLV window {clv_days} days")
    try:
        with console.status("backtest") as status:
            result = run(dataset, as_of=cut_off, params=params, definition=churn,
                         reference_penalizer=penalizer, reference_period=reference_period,
                         progress=lambda message: status.update(message))
    except (BacktestError, TrainingDataError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error

    table = Table(title=f"backtest at {cut_off:%Y-%m-%d} ({horizon_days}-day churn window)")
    table.add_column("metric")
    for model in result.metrics.index:
        table.add_column(MODEL_LABELS.get(str(model), str(model)), justify="right")
    for column in result.metrics.columns:
        table.add_row(column, *(_fmt(float(v), column) for v in result.metrics[column]))
    console.print(table)
    if name in REFERENCE_FIGURES:
        figures = REFERENCE_FIGURES[name]
        console.print("published with lifetimes 0.11.3: " + ", ".join(
            f"{k} {v}" for k, v in figures.items()))
    for note in result.notes:
        console.print(f"[dim]note: {note}[/dim]")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            records = json.loads(result.metrics.reset_index().to_json(orient="records"))
            out.write_text(json.dumps({"as_of": f"{cut_off:%Y-%m-%d}", "horizon_days": horizon_days,
                                       "clv_horizon_days": clv_days, "metrics": records,
                                       "reference_params": result.reference_params,
                                       "notes": result.notes}, indent=2))
        else:
            result.metrics.to_csv(out)
        console.print(f"wrote {out}")
