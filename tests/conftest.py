"""Shared fixtures: a temporary working directory, a saved bundle, its scorer, generated data."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run a test in a fresh working directory so default stores land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _forget_mlflow_stores()
    yield tmp_path
    _forget_mlflow_stores()


def _forget_mlflow_stores() -> None:
    """MLflow caches stores and engines per URI: a relative `sqlite:///mlflow.db` opened in
    an earlier test's folder would otherwise be reused here."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    for store in (TrackingStore, RegistryStore):
        for uri in [uri for uri in store._engine_map if uri.startswith("sqlite:///mlflow.db")]:
            store._engine_map.pop(uri).dispose()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`churnlens demo` run once, as a user runs it (tests of the first hour share it)."""
    from first_hour_support import run_demo

    return run_demo(tmp_path_factory.mktemp("first-hour"))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """The fast test bundle (ecommerce, inactivity churn) saved as a model directory."""
    from churn_training_data import fitted

    directory = tmp_path_factory.mktemp("bundle")
    fitted().bundle.save(directory)
    return directory


@pytest.fixture(scope="session")
def scorer(bundle_dir):
    """A scorer of ``bundle_dir`` with the built-in rules."""
    from models.loading import load_model
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    return Scorer(load_model(str(bundle_dir)), rules=load_rules(None))


@pytest.fixture(scope="session")
def generated_ecommerce(tmp_path_factory):
    """Writes a generated ecommerce dataset (5 orders, 20 events each) as CSV files."""
    from features.generate import generate_dataset

    def write(*, customers: int, seed: int) -> Path:
        directory = tmp_path_factory.mktemp("data")
        generate_dataset(customers=customers, seed=seed, end=date(2026, 6, 30), kind="ecommerce",
                         orders_per_customer=5, events_per_customer=20).write(directory, fmt="csv")
        return directory

    return write
