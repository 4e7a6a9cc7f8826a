"""`churnlens outreach`: see, deliver and repair triggered retention actions."""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from serving.redact import database_problem, masked_url
from serving.schemas import utc_text

if TYPE_CHECKING:
    from serving.outreach.outbox import ActionRow, Outbox
    from serving.settings import OutreachSettings

app = typer.Typer(
    no_args_is_help=True,
    help="Outreach: actions the rules triggered, their delivery to CRM webhooks, dead letters.",
)

P = ParamSpec("P")
R = TypeVar("R")


def outbox_errors_in_one_line(command: Callable[P, R]) -> Callable[P, R]:
    """An outbox that cannot be reached (or a bad URL) is one line and exit 1, no traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SQLAlchemyError as error:
            typer.secho(f"error: the outbox cannot be used: {database_problem(error)}",
                        err=True, fg=typer.colors.RED)
            raise typer.Exit(code=1) from None

    return run


OutboxOption = Annotated[
    str | None,
    typer.Option("--outbox", help="Outbox SQLAlchemy URL [default: CHURNLENS_OUTBOX_URL]"),
]


def _settings(outbox_url: str | None) -> OutreachSettings:
    from serving.settings import OutreachSettings, SettingsError, load_settings

    try:
        overrides = {"outbox_url": outbox_url} if outbox_url else {}
        return load_settings(OutreachSettings, **overrides)
    except SettingsError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None


def _outbox(settings: OutreachSettings, *, must_exist: bool = False) -> Outbox:
    """The outbox; commands that only read or repair (``must_exist``) never create one."""
    from models.loading import missing_store
    from serving.outreach.outbox import Outbox

    if must_exist and missing_store(settings.outbox_url) is not None:
        typer.secho(
            f"error: no outbox at {masked_url(settings.outbox_url)} "
            f"(no such file in {Path.cwd()}): run "
            "`churnlens score --outreach` or `churnlens serve` in this folder first, or set "
            "CHURNLENS_OUTBOX_URL (or --outbox) to your outbox", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2)
    return Outbox(settings.outbox_url)


def _table(rows: list[ActionRow], *, title: str, errors: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name in ("action id", "customer", "as of (UTC)", "rule", "action", "status",
                 "attempts"):
        table.add_column(name, no_wrap=name in ("action id", "customer", "as of (UTC)"))
    table.add_column("last error" if errors else "why (top reasons)", overflow="fold")
    for row in rows:
        detail = (row.last_error or "") if errors else "; ".join(row.why[:3])
        table.add_row(row.id, row.customer_id, utc_text(row.as_of), row.rule, row.action,
                      row.status, str(row.attempts), detail)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze ids into 80 columns
        console = Console(width=200)
    console.print(table)


@app.command("list")
@outbox_errors_in_one_line
def list_actions(
    customer: Annotated[str | None, typer.Option(help="Only this customer's actions")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="pending|delivering|delivered|failed|dead|acknowledged"),
    ] = None,
    rule: Annotated[str | None, typer.Option(help="Only actions of this rule")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most rows to show")] = 50,
    outbox: OutboxOption = None,
) -> None:
    """Show triggered actions, newest first, with why they fired."""
    from serving.outreach.outbox import STATUSES

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(STATUSES)}", param_hint="--status")
    store = _outbox(_settings(outbox), must_exist=True)
    rows = store.list_actions(customer_id=customer, status=status, rule=rule, limit=limit)
    counts = store.status_counts()
    _table(rows, title=f"outreach actions ({len(rows)} shown)")
    typer.echo("  ".join(f"{name}: {n}" for name, n in counts.items()))


@app.command()
@outbox_errors_in_one_line
def deliver(
    forever: Annotated[
        bool,
        typer.Option("--forever/--once",
                     help="Keep polling for due actions, or deliver what is due now and stop"),
    ] = False,
    outbox: OutboxOption = None,
) -> None:
    """Deliver due actions to their webhooks and file sinks (retries, dead letters)."""
    from serving.outreach.relay import Relay

    settings = _settings(outbox)
    relay = Relay(_outbox(settings), settings=settings)
    try:
        relay.outbox.status_counts()  # unreachable now: say so at once, even with --forever
        if forever:
            stop = threading.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            typer.echo(f"relay running on {masked_url(settings.outbox_url)} (Ctrl-C to stop)")
            report = relay.run_forever(stop)
        else:
            report = relay.drain()
    finally:
        relay.close()
        relay.outbox.close()
    typer.echo(
        f"claimed {report.claimed}: delivered {report.delivered}, to retry {report.retried}, "
        f"failed {report.failed}, dead {report.dead}"
    )
    for line in report.errors[-5:]:
        typer.echo(f"  {line}")
    if settings.webhook_secret is None and relay.outbox.waiting_webhooks():
        typer.secho(
            "webhook actions are waiting: set CHURNLENS_WEBHOOK_SECRET to deliver them",
            err=True, fg=typer.colors.YELLOW,
        )


@app.command()
@outbox_errors_in_one_line
def retry(
    action_id: Annotated[str | None, typer.Argument(help="The action to put back in the queue")]
    = None,
    all_dead: Annotated[bool, typer.Option(
        "--all-dead", help="Requeue every dead letter (dead or failed)")] = False,
    outbox: OutboxOption = None,
) -> None:
    """Put a failed or dead action (or all dead ones) back in the delivery queue."""
    from serving.outreach.outbox import ActionNotFoundError, ActionStateError

    if (action_id is None) == (not all_dead):
        raise typer.BadParameter("give an ACTION_ID or --all-dead (not both)")
    store = _outbox(_settings(outbox), must_exist=True)
    if all_dead:
        typer.echo(f"requeued {store.retry_all_dead()} dead letter(s) (dead or failed)")
        return
    try:
        row = store.retry(action_id)  # type: ignore[arg-type]
    except (ActionNotFoundError, ActionStateError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    typer.echo(f"requeued {row.id} ({row.rule} for customer {row.customer_id})")


@app.command()
@outbox_errors_in_one_line
def dead(
    limit: Annotated[int, typer.Option(min=1, help="Most rows to show")] = 50,
    outbox: OutboxOption = None,
) -> None:
    """Show dead letters: actions that failed for good or ran out of retries."""
    store = _outbox(_settings(outbox), must_exist=True)
    rows = store.dead_letters(limit=limit)
    _table(rows, title=f"dead letters ({len(rows)} shown)", errors=True)
    if rows:
        typer.echo("requeue with: churnlens outreach retry ACTION_ID  (or --all-dead)")


@app.command()
@outbox_errors_in_one_line
def prune(outbox: OutboxOption = None) -> None:
    """Delete scores older than CHURNLENS_SCORE_RETENTION_DAYS (by as_of) from the outbox."""
    from datetime import timedelta

    from serving.outreach.outbox import utcnow

    settings = _settings(outbox)
    if settings.score_retention_days == 0:
        typer.echo("CHURNLENS_SCORE_RETENTION_DAYS=0: every score is kept")
        return
    cutoff = utcnow() - timedelta(days=settings.score_retention_days)
    removed = _outbox(settings).prune_scores(older_than=cutoff)
    typer.echo(f"deleted {removed:,} score(s) with as_of before {cutoff.date()}")


@app.command()
@outbox_errors_in_one_line
def effect(
    data: Annotated[str, typer.Option(
        "--data", envvar="CHURNLENS_DATA",
        help="Dataset directory or database URL: what happened after the actions")],
    rule: Annotated[str | None, typer.Option(help="Only this rule")] = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Judge with what was known before this date, YYYY-MM-DD; default the "
                        "day after the latest row")] = None,
    rules: Annotated[Path | None, typer.Option(
        help="Rules YAML whose per-action cost nets the value saved (default: the built-in "
             "set)", envvar="CHURNLENS_RULES", dir_okay=False)] = None,
    outbox: OutboxOption = None,
) -> None:
    """Did the outreach work? Treated against control per rule, with 95% intervals."""
    import os

    from features.cli import load_or_exit, parse_as_of
    from features.history import History
    from serving.monitoring.effect import EffectInputError, measure_effects
    from serving.monitoring.tracking import RegisteredBundles, use_tracking_store
    from serving.outreach.rules import RulesError, load_rules

    dataset = load_or_exit(data).dataset
    when = parse_as_of(as_of, default=dataset.default_as_of)
    try:
        costs = {r.name: r.cost for r in load_rules(rules).rules}
    except RulesError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    store = _outbox(_settings(outbox), must_exist=True)
    actions = store.action_history()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    problem = use_tracking_store()
    if problem is not None:
        typer.secho(f"error: {problem}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2)
    try:
        effects, notes = measure_effects(History(dataset), actions, as_of=when, costs=costs,
                                         load_bundle=RegisteredBundles(), rule=rule)
    except EffectInputError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    _effect_table(effects, as_of=str(when.date()))
    for note in notes:
        typer.echo(f"note: {note}")


def _effect_table(effects: list, *, as_of: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}%"

    def money(value: float | None) -> str:
        return "–" if value is None else f"{value:,.2f}"

    def interval(ci: tuple[float, float] | None, scale: float = 100.0, unit: str = "%") -> str:
        return "" if ci is None else f" [{scale * ci[0]:,.1f}{unit}, {scale * ci[1]:,.1f}{unit}]"

    table = Table(title=f"Did the outreach work? (outcomes known by {as_of}; treated against "
                        "held-out control, 95% intervals)")
    for name in ("rule", "action", "treated", "control", "churn treated", "churn control",
                 "churn reduction", "revenue / customer treated", "revenue / customer control",
                 "revenue gain / customer", "contacted per save", "cost / action",
                 "value saved net of cost"):
        table.add_column(name, justify="left" if name in ("rule", "action") else "right")
    for e in effects:
        table.add_row(
            e.rule, e.action, f"{e.treated:,}", f"{e.control:,}", pct(e.churn_treated),
            pct(e.churn_control),
            pct(e.churn_reduction) + interval(e.churn_reduction_ci),
            money(e.revenue_treated), money(e.revenue_control),
            money(e.revenue_gain) + interval(e.revenue_gain_ci, 1.0, ""),
            "–" if e.contacts_per_save is None else f"{e.contacts_per_save:,.1f}",
            money(e.cost), money(e.value_saved_net))
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(width=220, highlight=False)
    console.print(table)
    for e in effects:
        if e.note:
            typer.echo(f"{e.rule}: {e.note}")


@app.command()
@outbox_errors_in_one_line
def replay(
    data: Annotated[Path, typer.Option(
        "--data", file_okay=False, exists=True,
        help="A dataset written by `churnlens generate`: its orders are rewritten in place")],
    seed: Annotated[int, typer.Option(help="The seed the dataset was generated with")] = 0,
    outbox: OutboxOption = None,
) -> None:
    """Replay the outbox's actions on a generated world with known effects (a test bench).

    Treated customers answer as the effects in docs/outreach.md say; the truth
    (who was treated, who was saved) goes to ``outreach_truth.csv`` beside the data.
    """
    from features.io import read_dataset, write_dataset, write_table
    from features.outreach_sim import simulate_outreach

    truth_file = data / "outreach_truth.csv"
    if truth_file.exists():
        raise typer.BadParameter(f"{data} was already replayed ({truth_file.name} exists): "
                                 "generate the world again first", param_hint="--data")
    store = _outbox(_settings(outbox), must_exist=True)
    try:
        actions = store.action_history()
    finally:
        store.close()
    if actions.empty:
        raise typer.BadParameter("the outbox holds no action: score with `--outreach` first",
                                 param_hint="--outbox")
    world = simulate_outreach(read_dataset(data).dataset, actions, seed=seed)
    fmt = "parquet" if (data / "orders.parquet").exists() else "csv"
    write_dataset({"orders": world.orders}, data, fmt=fmt)
    write_table(world.truth, truth_file)
    treated = int((world.truth["assignment"] == "treated").sum())
    typer.echo(f"replayed {len(world.truth):,} actions ({treated:,} treated, "
               f"{int(world.truth['saved'].sum()):,} customers saved); the true effects are "
               f"in {truth_file}")


@app.command("new-secret")
def new_secret() -> None:
    """Print a fresh webhook signing secret for CHURNLENS_WEBHOOK_SECRET and the CRM."""
    from serving.outreach.webhooks import new_secret as make

    typer.echo(make())


if __name__ == "__main__":
    app()
