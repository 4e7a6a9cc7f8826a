"""Shared fixtures: tests run in a temporary working directory (MLflow store, outbox)."""

from __future__ import annotations

import pytest


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run a test in a fresh working directory so default stores land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`churnlens demo` run once, as a user runs it (tests of the first hour share it)."""
    from first_hour_support import run_demo

    return run_demo(tmp_path_factory.mktemp("first-hour"))
