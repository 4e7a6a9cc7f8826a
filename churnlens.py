"""The `churnlens` command: composes the sub-apps each package exposes (DESIGN §10)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated

import typer

#: modules whose typer ``app`` contributes top-level commands
COMMAND_MODULES = (
    "features.cli",
    "training.cli",
    "training.backtest_cli",
    "serving.cli",
    "serving.score_cli",
    "serving.report_cli",
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


def demo(
    folder: Annotated[Path, typer.Option(help="Where the demo works")] = Path("churnlens-demo"),
    customers: Annotated[int, typer.Option(min=300, help="Customers to generate")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
) -> None:
    """Run the whole flow on generated data with embedded defaults.

    Each step is the `churnlens` command a user would type, run inside the demo
    folder, so its defaults (``sqlite:///mlflow.db``, ``./mlartifacts``,
    ``sqlite:///outbox.db``) land there and the printed commands can be re-run.
    """
    import os
    import subprocess
    import sys
    from datetime import date

    from rich.console import Console

    console = Console()
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db",
           "CHURNLENS_OUTBOX_URL": "sqlite:///outbox.db", "CHURNLENS_SINK_DIR": "."}
    env.pop("CHURNLENS_RULES", None)
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
        console.print(f"[dim]$ cd {folder} && churnlens {' '.join(args)}[/dim]", highlight=False)
        done = subprocess.run([sys.executable, "-m", "churnlens", *args], cwd=folder, env=env,
                              check=False)
        if done.returncode != 0:
            console.print(f"[red]demo stopped: step {number} ({title}) failed[/red]")
            raise typer.Exit(done.returncode)
    console.rule("done")
    console.print(
        f"Everything is in {folder}/: data/, mlflow.db, mlartifacts/, outbox.db, "
        "scores.parquet, report.html\n"
        f"  report:    open {folder / 'report.html'}\n"
        f"  MLflow UI: cd {folder} && mlflow ui --backend-store-uri sqlite:///mlflow.db "
        "--port 5000\n"
        f"  serve:     cd {folder} && CHURNLENS_DATA=data CHURNLENS_ALLOW_ANONYMOUS=true "
        "churnlens serve --port 8000\n"
        "             then: curl localhost:8000/v1/customers/C000001/score",
        highlight=False,
    )


def main() -> None:
    # MLflow's per-file "Downloading artifacts" bars would clutter every command's output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    build_app()(prog_name="churnlens")


if __name__ == "__main__":
    main()
