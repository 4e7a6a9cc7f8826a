"""Every MLflow call of the training package: tracking store, runs, registry, aliases.

Default store (DESIGN §5): ``sqlite:///mlflow.db`` with artifacts in
``./mlartifacts``, both in the working directory, unless ``MLFLOW_TRACKING_URI``
is set. Nothing is configured at import; `configure_tracking` runs when a
command starts. Runs go to the experiment ``churnlens`` (or
``MLFLOW_EXPERIMENT_NAME``); under ``mlflow run`` they go to the run MLflow
started (``MLFLOW_RUN_ID``).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

MODEL_NAME = "churnlens"
CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"
DEFAULT_EXPERIMENT = "churnlens"
PYFUNC_FILE = Path(__file__).resolve().parent.parent / "models" / "pyfunc_model.py"


class RegistryError(RuntimeError):
    """A registry operation could not be done (unknown version, no such model)."""


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _is_local_database(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks", "file:")) and "://" in uri


def configure_tracking() -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or the embedded default; return the URI.

    With a database URI (SQLite, PostgreSQL) and no tracking server, artifacts go
    to ``./mlartifacts`` in the working directory: a fresh SQLite store is
    created with that as its default artifact root (so the Default experiment
    uses it too, e.g. for ``mlflow run``), and the ``churnlens`` experiment is
    created there.
    """
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    artifact_root = Path(DEFAULT_ARTIFACT_DIR).resolve().as_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(uri, artifact_root)  # creates the schema and the Default experiment
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    if not os.environ.get("MLFLOW_RUN_ID"):
        if mlflow.get_experiment_by_name(name) is None:
            location = f"{artifact_root}/{name}" if _is_local_database(uri) else None
            mlflow.create_experiment(name, artifact_location=location)
        mlflow.set_experiment(name)
    return uri


@contextlib.contextmanager
def training_run(*, run_name: str | None = None) -> Iterator[str]:
    """Start (or, under ``mlflow run``, join) the training run; yield its id."""
    import mlflow

    with mlflow.start_run(run_name=run_name) as run:
        yield run.info.run_id


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))}


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})


def log_metrics(metrics: Mapping[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(_finite(metrics))


def set_tags(tags: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.set_tags({k: str(v)[:5000] for k, v in tags.items()})


def log_dict(data: Mapping[str, Any], path: str) -> None:
    import mlflow

    mlflow.log_dict(dict(data), path)


def log_artifacts(directory: Path, artifact_path: str) -> None:
    import mlflow

    mlflow.log_artifacts(str(directory), artifact_path)


#: what the pyfunc's code (models/) imports; pinned to the versions that trained it
PYFUNC_PACKAGES = ("mlflow", "lightgbm", "pandas", "numpy", "numba")


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in PYFUNC_PACKAGES:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pinned


def log_bundle_model(bundle_dir: Path, *, input_example: pd.DataFrame,
                     output_example: pd.DataFrame) -> str:
    """Log the bundle as the pyfunc model ``model`` (models from code); return its model URI."""
    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, output_example,
                                params={"explain": False, "top_k": 5})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_FILE),
        artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(PYFUNC_FILE.parent)],
        signature=signature,
        input_example=input_example,
        pip_requirements=_pip_requirements(),
    )
    return info.model_uri


def register(model_uri: str, *, run_id: str, tags: Mapping[str, Any] | None = None) -> str:
    """Register a logged model as a new version of ``churnlens``; alias it ``challenger``."""
    import mlflow

    version = mlflow.register_model(model_uri, MODEL_NAME, tags=dict(tags or {}) | {
        "run_id": run_id}).version
    _client().set_registered_model_alias(MODEL_NAME, CHALLENGER, str(version))
    return str(version)


def champion_version() -> str | None:
    """The version the ``champion`` alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(MODEL_NAME, CHAMPION).version)
    except MlflowException:
        return None


def download_bundle(version: str, directory: Path | None = None) -> Path:
    """Download a version's bundle directory; return its path."""
    from models.loading import download_bundle as _download

    return _download(f"models:/{MODEL_NAME}/{version}", directory)


def promote(version: str, *, reason: str = "promoted by hand") -> str | None:
    """Point ``champion`` at ``version``; return the previous champion (or None)."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_model_version(MODEL_NAME, str(version))
    except MlflowException as error:
        raise RegistryError(f"model {MODEL_NAME} has no version {version}") from error
    previous = champion_version()
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    client.set_model_version_tag(MODEL_NAME, str(version), "promotion", reason)
    return previous


def tag_version(version: str, tags: Mapping[str, Any]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, str(version), key, str(value)[:5000])


def aliases() -> dict[str, str]:
    """Alias → version of the ``churnlens`` registered model ({} when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = _client().get_registered_model(MODEL_NAME)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in model.aliases.items()}


def temporary_directory() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="churnlens-")
