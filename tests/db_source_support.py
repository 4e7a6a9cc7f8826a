"""Databases for the database-source tests: a SQLite file, or a PostgreSQL schema of its own."""

from __future__ import annotations

from datetime import date
from pathlib import Path


def small_dataset(directory: Path, *, customers: int = 150, seed: int = 3) -> Path:
    """A generated mixed dataset (orders, events, subscriptions, attributes) as CSV files."""
    from features.generate import generate_dataset

    generate_dataset(customers=customers, seed=seed, end=date(2026, 6, 30), kind="mixed",
                     orders_per_customer=4, events_per_customer=15).write(directory, fmt="csv")
    return directory


def run_cli(*args: str):
    """``churnlens ARGS`` through typer's runner; returns the result."""
    from typer.testing import CliRunner

    from churnlens import build_app

    return CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})
