"""The `churnlens` command: composes the sub-apps each package exposes."""

from __future__ import annotations

import importlib
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from serving.live.example import LiveExample

#: modules whose typer ``app`` contributes top-level commands
COMMAND_MODULES = (
    "features.cli",
    "features.db_cli",
    "training.cli",
    "training.backtest_cli",
    "serving.cli",
    "serving.score_cli",
    "serving.report_cli",
    "serving.monitoring.cli",
)
#: modules whose typer ``app`` is a command group, by group name
GROUP_MODULES = {"outreach": "serving.outreach.cli", "apikey": "serving.apikey"}


def build_app() -> typer.Typer:
    """Build the command line; packages are imported lazily so ``--help`` stays fast."""
    app = typer.Typer(
        name="churnlens",
        help="Churn risk, customer lifetime value and the reasons why.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        app.registered_commands.extend(module.app.registered_commands)
    for group, module_name in GROUP_MODULES.items():
        module = importlib.import_module(module_name)
        app.add_typer(module.app, name=group)
    app.command()(demo)
    return app


def command_path(name: str, *, bin_dir: Path, folder: Path, cwd: Path) -> str:
    """How to call ``name`` from inside ``folder`` so that a copied line works as printed.

    The command's own install (``bin_dir``, e.g. ``.venv/bin``) is used, not
    whatever ``name`` means on the PATH: relative to the demo folder when both
    sit under the current directory, else absolute.
    """
    target = bin_dir / name
    base = folder if folder.is_absolute() else cwd / folder
    if not folder.is_absolute() and bin_dir.is_relative_to(cwd):
        return os.path.relpath(target, base)
    return str(target)


def next_steps(folder: Path, *, bin_dir: Path, cwd: Path, customer_id: str,
               port: int = 8000, ui_port: int = 5000) -> list[tuple[str, str]]:
    """The demo's closing hints: (what it is, one shell line to run from ``cwd``)."""
    churnlens = shlex.quote(command_path("churnlens", bin_dir=bin_dir, folder=folder, cwd=cwd))
    mlflow = shlex.quote(command_path("mlflow", bin_dir=bin_dir, folder=folder, cwd=cwd))
    enter = f"cd {shlex.quote(str(folder))} &&"
    return [
        (f"the MLflow UI on the demo's runs and registry, then open http://127.0.0.1:{ui_port}",
         f"{enter} {mlflow} ui --backend-store-uri sqlite:///mlflow.db --port {ui_port} "
         "--workers 1"),
        ("the scoring API on the demo's data and model (no API key: local trials only)",
         f"{enter} MLFLOW_TRACKING_URI=sqlite:///mlflow.db CHURNLENS_DATA=data "
         f"CHURNLENS_ALLOW_ANONYMOUS=true CHURNLENS_OUTBOX_URL=sqlite:///outbox.db {churnlens} "
         f"serve --port {port}"),
        (f"then, from a second terminal, the score of {customer_id}, the customer with the "
         "most value at risk",
         f"curl -s http://127.0.0.1:{port}/v1/customers/{customer_id}/score"),
    ]


def live_steps(folder: Path, *, bin_dir: Path, cwd: Path, example: LiveExample,
               port: int = 8001) -> list[tuple[str, str]]:
    """The live variant's hints: the demo's files in a SQLite database, served, written to.

    ``example`` (`serving.live.example.pick_live_example`) is a customer whose
    latest completed order, sent back as returned, changes their tier and fires an
    action; the hint says what it changes, as the demo's model scored it.
    """
    churnlens = shlex.quote(command_path("churnlens", bin_dir=bin_dir, folder=folder, cwd=cwd))
    enter = f"cd {shlex.quote(str(folder))} &&"
    returned = json.dumps([{**example.order, "status": "returned"}], separators=(",", ":"))
    base = f"http://127.0.0.1:{port}/v1"
    customer_id, before, after = example.customer_id, example.before, example.after
    moves = (f"churn probability {before.churn_probability:.3f} ({before.risk_tier}) to "
             f"{after.churn_probability:.3f} ({after.risk_tier})")
    if after.recommended_action is not None and before.recommended_action is None:
        fires = (f"and the background rescoring writes {after.recommended_action} to the live "
                 "outbox")
    else:
        fires = "(no rule newly matches this customer, so no action is written)"
    return [
        ("the live variant: the demo's files loaded into a SQLite database",
         f"{enter} {churnlens} load --data data --into sqlite:///live.db"),
        ("serve from it: ingestion, scores as of now, outreach as behaviour happens "
         "(its own outbox, the relay in the API)",
         f"{enter} MLFLOW_TRACKING_URI=sqlite:///mlflow.db CHURNLENS_DATA=sqlite:///live.db "
         f"CHURNLENS_ALLOW_ANONYMOUS=true CHURNLENS_OUTBOX_URL=sqlite:///live-outbox.db "
         f"CHURNLENS_RELAY_ENABLED=true {churnlens} serve --port {port}"),
        (f"from a second terminal, {customer_id}'s score now",
         f"curl -s {base}/customers/{customer_id}/score"),
        (f"{customer_id} returns their latest order (an ingest): the score moves from {moves}, "
         f"{fires}",
         f"curl -s -X POST -H 'Content-Type: application/json' {base}/orders "
         f"-d {shlex.quote(returned)}"),
        ("the score again, and the actions the live outbox holds",
         f"curl -s {base}/customers/{customer_id}/score && {enter} "
         f"CHURNLENS_OUTBOX_URL=sqlite:///live-outbox.db {churnlens} outreach list --limit 5"),
    ]


def live_example(folder: Path) -> LiveExample | None:
    """The live hints' customer, scored with the demo's champion as the live server will."""
    import contextlib
    from datetime import UTC, datetime

    from features.io import read_dataset
    from models.loading import load_model
    from serving.live.example import pick_live_example
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    settings = {"MLFLOW_TRACKING_URI": f"sqlite:///{(folder / 'mlflow.db').resolve()}",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        with contextlib.chdir(folder):  # the registry's artifacts are under ./mlartifacts
            scorer = Scorer(load_model(), rules=load_rules(None))
            dataset = read_dataset("data").dataset
            now = datetime.now(UTC).replace(tzinfo=None)
            return pick_live_example(dataset, scorer, now=now)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _most_value_at_risk(scores: Path) -> str:
    import pandas as pd

    frame = pd.read_parquet(scores, columns=["customer_id", "value_at_risk"])
    return str(frame.sort_values("value_at_risk", ascending=False).iloc[0]["customer_id"])


def demo(
    folder: Annotated[Path, typer.Option(help="Where the demo works")] = Path("churnlens-demo"),
    customers: Annotated[int, typer.Option(min=300, help="Customers to generate")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    port: Annotated[int, typer.Option(help="API port the closing hints use")] = 8000,
    ui_port: Annotated[int, typer.Option(help="MLflow UI port the closing hints use")] = 5000,
) -> None:
    """Run the whole flow on generated data with embedded defaults.

    Each step is the `churnlens` command a user would type, run inside the demo
    folder, so its defaults (``sqlite:///mlflow.db``, ``./mlartifacts``,
    ``sqlite:///outbox.db``) land there and the printed commands can be re-run.
    Every printed command is one unwrapped line that runs as printed from here.
    """
    import subprocess
    import sys
    from datetime import date

    from rich.console import Console

    console = Console(soft_wrap=True, highlight=False)
    cwd = Path.cwd()
    bin_dir = Path(sys.executable).parent  # the install that runs this demo (e.g. .venv/bin)
    churnlens = shlex.quote(command_path("churnlens", bin_dir=bin_dir, folder=folder, cwd=cwd))
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db",
           "CHURNLENS_OUTBOX_URL": "sqlite:///outbox.db", "CHURNLENS_SINK_DIR": ".",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("CHURNLENS_RULES", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    steps = [
        ("generate a dataset", ["generate", "--customers", str(customers), "--out", "data",
                                "--seed", str(seed), "--end", date.today().isoformat()]),
        ("validate it", ["validate", "--data", "data", "--rejects", "data-rejects.csv"]),
        ("train, track in MLflow, register the champion", ["train", "--data", "data"]),
        ("score every customer, trigger outreach", ["score", "--data", "data", "--out",
                                                    "scores.parquet", "--outreach"]),
        ("deliver the triggered actions", ["outreach", "deliver", "--once"]),
        ("what fired and why", ["outreach", "list", "--limit", "10"]),
        ("write the retention report", ["report", "--data", "data", "--scores",
                                        "scores.parquet", "--out", "report.html"]),
    ]
    for number, (title, args) in enumerate(steps, start=1):
        console.rule(f"{number}. {title}")
        print(f"$ cd {shlex.quote(str(folder))} && {churnlens} {shlex.join(args)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "churnlens", *args], cwd=folder, env=env,
                              check=False)
        if done.returncode != 0:
            console.print(f"[red]demo stopped: step {number} ({title}) failed[/red]")
            raise typer.Exit(done.returncode)
    console.rule("done")
    customer_id = _most_value_at_risk(folder / "scores.parquet")
    hints = next_steps(folder, bin_dir=bin_dir, cwd=cwd, port=port, ui_port=ui_port,
                       customer_id=customer_id)
    example = live_example(folder)
    live = (live_steps(folder, bin_dir=bin_dir, cwd=cwd, example=example, port=port + 1)
            if example is not None else [])
    # plain print: rich would wrap long lines at the terminal width and break a copied command
    print(f"Everything is in {folder}/: data/, mlflow.db, mlartifacts/, outbox.db, "
          f"scores.parquet, report.html")
    print(f"The retention report: {folder / 'report.html'} (open it in a browser)")
    print("Next, each $ line is one command to run from this folder:")
    for what, line in hints:
        print(f"  {what}:")
        print(f"  $ {line}")
    if live:
        print("The live variant (a database as the source of record; docs/serving.md, "
              "Live data):")
    for what, line in live:
        print(f"  {what}:")
        print(f"  $ {line}")


def main() -> None:
    # MLflow's per-file "Downloading artifacts" bars would clutter every command's output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    build_app()(prog_name="churnlens")


if __name__ == "__main__":
    main()
