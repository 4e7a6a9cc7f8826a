"""Shared fixtures: tests run in a temporary working directory (MLflow store, outbox)."""

from __future__ import annotations

import pytest


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run a test in a fresh working directory so default stores land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path
