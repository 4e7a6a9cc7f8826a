"""Commands that train and promote models: ``churnlens train``, ``churnlens promote``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from features.cli import DataOption, TablesOption

if TYPE_CHECKING:
    from training.params import TrainParams
    from training.run import TrainResult

app = typer.Typer(no_args_is_help=True)
console = Console(soft_wrap=True)  # a wrapped line breaks copied ids and paths

#: the flag that sets each `TrainParams` field a command exposes, for error messages
FLAGS = {"definition": "--churn", "margin_rate": "--margin-rate", "clv_model": "--clv-model",
         "active_days": "--active-days", "activity_events": "--activity-events",
         "new_days": "--new-days", "declining_window_days": "--declining-window",
         "declining_ratio": "--declining-ratio",
         "declining_min_activity": "--declining-min-activity",
         "declining_min_days": "--declining-min-days"}
CHURN_HELP = ("Churn definition: auto | inactivity | subscription | activity. auto picks "
              "inactivity for orders only, subscription for subscriptions only, activity when "
              "there are events or several kinds of history")
ACTIVE_DAYS_HELP = ("activity definition: days of activity before T that put a customer in "
                    "the population (default: the horizon)")
ACTIVITY_EVENTS_HELP = ("activity definition: comma-separated event types that count as "
                        "activity (default: every type but passive ones such as email_open)")
UPLIFT_HELP = ("Also fit an uplift model per outreach rule from the outbox's treated and "
               "control outcomes whose horizon has passed by --as-of; scores then carry "
               "expected_saved_value")
CLV_MODEL_HELP = ("CLV model: auto (chosen on the held-out training snapshot) | tweedie | "
                  "hurdle")


def _quiet_mlflow() -> None:
    """No per-file download progress bars in command output."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def train_params(**settings: Any) -> TrainParams:
    """`TrainParams` from command-line settings; a bad value is reported against its flag."""
    from training.params import TrainParams, TrainParamsError

    try:
        return TrainParams(**settings)
    except TrainParamsError as error:
        raise typer.BadParameter(error.problem,
                                 param_hint=FLAGS.get(error.field, error.field)) from error


def _metrics_table(metrics: dict[str, float]) -> Table:
    table = Table(title="held-out metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("churn_roc_auc", "churn_pr_auc", "churn_top_decile_lift", "churn_brier",
                 "churn_ece", "clv_spearman", "clv_normalized_gini", "clv_decile_error",
                 "clv_total_ratio"):
        value = metrics.get(name, float("nan"))
        table.add_row(name, "n/a" if value is None or math.isnan(value) else f"{value:.4f}")
    return table


@app.command()
def train(
    data: DataOption,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Label windows end by this date, YYYY-MM-DD; default the day after the "
                        "latest row")] = None,
    horizon: Annotated[int, typer.Option(
        "--horizon", min=7, help="Churn horizon in days")] = 90,
    clv_horizon: Annotated[int, typer.Option(
        "--clv-horizon", min=7, help="CLV horizon in days")] = 365,
    churn: Annotated[str, typer.Option("--churn", help=CHURN_HELP)] = "auto",
    active_days: Annotated[int | None, typer.Option(
        "--active-days", help=ACTIVE_DAYS_HELP)] = None,
    activity_events: Annotated[str | None, typer.Option(
        "--activity-events", help=ACTIVITY_EVENTS_HELP)] = None,
    margin_rate: Annotated[float, typer.Option(
        "--margin-rate", envvar="CHURNLENS_MARGIN_RATE",
        help="Share of revenue that is margin, in (0, 1] (CLV in margin)")] = 1.0,
    step: Annotated[int, typer.Option("--step", min=1, help="Days between snapshots")] = 30,
    snapshots: Annotated[int, typer.Option(
        "--snapshots", min=1,
        help="Most snapshots to train on (1: one, validated on a split by customer)")] = 12,
    clv_model: Annotated[str, typer.Option("--clv-model", help=CLV_MODEL_HELP)] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    new_days: Annotated[int | None, typer.Option(
        "--new-days", help="lifecycle: a customer is `new` for this many days after sign-up or "
                           "first activity (default: the horizon)")] = None,
    declining_window: Annotated[int, typer.Option(
        "--declining-window", help="lifecycle: `declining` compares the activity of this "
                                   "window (30, 90 or 365 days) with the customer's earlier "
                                   "rate")] = 90,
    declining_ratio: Annotated[float, typer.Option(
        "--declining-ratio", help="lifecycle: `declining` below this share of the earlier "
                                  "rate, in (0, 1]")] = 0.5,
    declining_min_activity: Annotated[int, typer.Option(
        "--declining-min-activity", help="lifecycle: earlier activities needed to judge a "
                                         "decline")] = 4,
    declining_min_days: Annotated[int, typer.Option(
        "--declining-min-days", help="lifecycle: days of tenure before the window needed to "
                                     "judge a decline")] = 60,
    tables: TablesOption = None,
    uplift: Annotated[bool, typer.Option("--uplift", help=UPLIFT_HELP)] = False,
    outbox_url: Annotated[str, typer.Option(
        "--outbox-url", envvar="CHURNLENS_OUTBOX_URL",
        help="Outbox whose matured actions --uplift learns from (SQLAlchemy URL)")
    ] = "sqlite:///outbox.db",
    engine: Annotated[str, typer.Option(
        help="local | dask: with a partitioned dataset (`churnlens partition`), where its "
             "snapshot tasks run")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        help="Dask scheduler address (default: a LocalCluster on this machine)")] = None,
    connect_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to wait for the Dask scheduler to answer")] = 10.0,
) -> None:
    """Train churn + CLV models, log an MLflow run, register it and apply the champion gate.

    On a partitioned dataset the snapshots are built one task per partition (on Dask with
    ``--engine dask``) and the bundle is fitted here, on the gathered training set.
    """
    from features.cli import load_or_exit, parse_as_of, source_label
    from features.definition import parse_event_list
    from features.sources import is_database_url
    from training.outcomes import OutboxReadError, read_actions
    from training.params import TrainingDataError
    from training.run import train_and_register
    from training.uplift import UpliftDataError

    events = parse_event_list(activity_events)
    params = train_params(horizon_days=horizon, clv_horizon_days=clv_horizon, definition=churn,
                          margin_rate=margin_rate, step_days=step, max_snapshots=snapshots,
                          clv_model=clv_model, seed=seed, active_days=active_days,
                          activity_events=None if events is None else tuple(events),
                          new_days=new_days, declining_window_days=declining_window,
                          declining_ratio=declining_ratio,
                          declining_min_activity=declining_min_activity,
                          declining_min_days=declining_min_days)
    _quiet_mlflow()
    if engine not in ("local", "dask"):
        raise typer.BadParameter("expected local or dask", param_hint="--engine")
    if scheduler is not None and engine != "dask":
        raise typer.BadParameter("--scheduler needs --engine dask", param_hint="--scheduler")
    from features.partitioned import is_partitioned

    if is_partitioned(data):
        if uplift or tables is not None:
            flag = "--uplift" if uplift else "--tables"
            raise typer.BadParameter("not available for a partitioned dataset", param_hint=flag)
        _report(_train_partitioned(data, as_of=as_of, params=params, engine=engine,
                                   scheduler=scheduler, connect_timeout=connect_timeout))
        return
    if engine == "dask":
        raise typer.BadParameter("--engine dask trains on a partitioned dataset: write one "
                                 "with `churnlens partition` first", param_hint="--engine")
    dataset = load_or_exit(data, tables).dataset
    source = source_label(data) if is_database_url(data) else str(Path(data).resolve())
    cutoff = parse_as_of(as_of, default=dataset.default_as_of)
    try:
        actions = read_actions(outbox_url) if uplift else None
        with console.status(f"training on snapshots up to {cutoff:%Y-%m-%d}"):
            result = train_and_register(dataset, as_of=cutoff, params=params,
                                        dataset_profile={"source": source},
                                        uplift_actions=actions)
    except (TrainingDataError, OutboxReadError, UpliftDataError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    _report(result)


def _train_partitioned(data: str, *, as_of: str | None, params: TrainParams, engine: str,
                       scheduler: str | None, connect_timeout: float) -> TrainResult:
    """Snapshots per partition (on Dask or here), the fit and its run here."""
    from contextlib import nullcontext

    from features.cli import parse_as_of
    from features.cluster import SchedulerUnreachable, dask_client
    from features.partitioned import PartitionError, read_manifest
    from training.params import TrainingDataError
    from training.partitioned import train_partitioned_and_register

    try:
        manifest = read_manifest(data)
        cutoff = parse_as_of(as_of, default=manifest.default_as_of)
        connection = (dask_client(scheduler, connect_timeout=connect_timeout)
                      if engine == "dask" else nullcontext(None))
        with console.status(f"training on snapshots up to {cutoff:%Y-%m-%d}"), \
                connection as client:
            return train_partitioned_and_register(data, client=client, as_of=cutoff,
                                                  params=params,
                                                  dataset_profile={"source": data})
    except (TrainingDataError, PartitionError, SchedulerUnreachable) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error


def _report(result: TrainResult) -> None:
    console.print(f"churn definition: {result.definition} ({result.definition_reason})",
                  highlight=False)
    console.print(_metrics_table(result.metrics))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"run {result.run_id}: registered churnlens version {result.version} "
                  "(alias challenger)", highlight=False)
    verdict = "[green]promoted to champion[/green]" if result.promoted else "champion kept"
    console.print(f"champion gate: {verdict}: {result.reason}", highlight=False)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version of model churnlens to make champion")],
) -> None:
    """Point the ``champion`` alias at a registered version (the server follows it)."""
    from training import registry

    _quiet_mlflow()
    try:
        registry.configure_tracking(create=False)
        previous = registry.promote(version)
    except registry.RegistryError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    if previous == str(version):
        console.print(f"churnlens version {version} is already champion", highlight=False)
        return
    console.print(f"churnlens version {version} is now champion"
                  + (f" (was version {previous})" if previous else ""), highlight=False)
