"""The `churnlens` command: composes the sub-apps each package exposes (DESIGN §10)."""

from __future__ import annotations

import importlib
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
    customers: Annotated[int, typer.Option(min=200, help="Customers to generate")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
) -> None:
    """Run the whole flow on generated data with embedded defaults."""
    from datetime import date

    from rich.console import Console

    from features.cli import print_summary
    from features.generate import generate_dataset
    from features.io import read_dataset

    console = Console()
    data = folder / "data"
    console.rule("1. generate")
    generated = generate_dataset(customers=customers, seed=seed, end=date.today(), kind="mixed")
    generated.write(data)
    console.print(f"wrote a dataset of {customers:,} customers to {data}")
    console.rule("2. validate")
    print_summary(read_dataset(data))


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
