"""Every MLflow call of the training package: tracking store, runs, registry, aliases.

Default store: ``sqlite:///mlflow.db`` in the working directory, with artifacts in
``mlartifacts/`` beside it, unless ``MLFLOW_TRACKING_URI`` is set. Nothing is
configured at import; `configure_tracking` runs when a command starts. Runs go
to the experiment ``churnlens`` (or ``MLFLOW_EXPERIMENT_NAME``), marked as a
model-training experiment so that MLflow 3's UI opens on its runs. Under
``mlflow run`` the training joins the run MLflow started when that run is in
the ``churnlens`` experiment; otherwise (``mlflow run`` puts it in ``Default``
unless told ``--experiment-name``) the training is logged as its own run in
``churnlens`` and the project run points at it.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from models.loading import missing_store, sqlite_file

MODEL_NAME = "churnlens"
CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"
DEFAULT_EXPERIMENT = "churnlens"
#: MLflow 3's UI reads this experiment tag to choose between its GenAI views and the
#: model-training view (runs, metrics, charts); "custom_model_development" is the latter
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
#: set on an ``mlflow run`` project run whose training was logged as another run
TRAINING_RUN_TAG = "churnlens.training_run_id"
PYFUNC_FILE = Path(__file__).resolve().parent.parent / "models" / "pyfunc_model.py"


class RegistryError(RuntimeError):
    """A registry operation could not be done (unknown version, no such model)."""


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _is_local_database(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks", "file:")) and "://" in uri


def artifact_root(uri: str) -> Path:
    """Where runs of a database store keep artifacts: ``mlartifacts/`` beside a SQLite file.

    Beside the file, not in the working directory, because ``mlflow run`` runs the
    entry point inside the project folder while the store is where the user stands.
    """
    database = sqlite_file(uri)
    return ((database.parent if database else Path.cwd()) / DEFAULT_ARTIFACT_DIR).resolve()


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def _ensure_experiment(uri: str) -> str:
    """The churnlens experiment's id, created (artifacts beside the store) and kind-tagged."""
    import mlflow

    name = experiment_name()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = (f"{artifact_root(uri).as_uri()}/{name}" if _is_local_database(uri)
                    else None)
        return mlflow.create_experiment(
            name, artifact_location=location,
            tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND})
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_EXPERIMENT_KIND:
        _client().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                     TRAINING_EXPERIMENT_KIND)
    return experiment.experiment_id


def configure_tracking(*, create: bool = True) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or the embedded default; return the URI.

    With a database URI (SQLite, PostgreSQL) and no tracking server, artifacts go
    to ``./mlartifacts`` in the working directory: a fresh SQLite store is
    created with that as its default artifact root (so the Default experiment
    uses it too, e.g. for ``mlflow run``), and the ``churnlens`` experiment is
    created there. With ``create=False`` (commands that change an existing
    registry) a missing SQLite store is a `RegistryError` and nothing is created.
    """
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    missing = missing_store(uri)
    if missing is not None and not create:
        raise RegistryError(f"no model registered in sqlite:///{missing} (no such file): run "
                            "`churnlens train` in this folder, or set MLFLOW_TRACKING_URI to "
                            "the store you trained in")
    if missing is not None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        # creates the schema and the Default experiment, with artifacts beside the file
        SqlAlchemyStore(uri, artifact_root(uri).as_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment_id = _ensure_experiment(uri)
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(experiment_id=experiment_id)
    return uri


def _project_run_elsewhere() -> str | None:
    """The ``mlflow run`` project run's id when it is not in the churnlens experiment."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    client = _client()
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    return None if experiment.name == experiment_name() else run_id


@contextlib.contextmanager
def training_run(*, run_name: str | None = None) -> Iterator[str]:
    """Start (or, under ``mlflow run``, join) the training run in churnlens; yield its id."""
    import mlflow

    project_run = _project_run_elsewhere()
    if project_run is None:
        with mlflow.start_run(run_name=run_name) as run:
            yield run.info.run_id
        return
    experiment = mlflow.get_experiment_by_name(experiment_name())
    assert experiment is not None, "the project run created the experiment"
    created = _client().create_run(experiment.experiment_id, run_name=run_name,
                                   tags={"churnlens.project_run_id": project_run})
    _client().set_tag(project_run, TRAINING_RUN_TAG, created.info.run_id)
    _client().set_tag(project_run, "mlflow.note.content",
                      f"The training was logged as run {created.info.run_id} in experiment "
                      f"{experiment_name()}.")
    with mlflow.start_run(run_id=created.info.run_id) as run:
        yield run.info.run_id


def log_training_data(frame: pd.DataFrame, *, source: str | None, name: str,
                      context: str, targets: str | None = None) -> None:
    """Log a data frame the run learned from as an MLflow dataset input.

    MLflow keeps its source, a digest of its content, its schema and a profile
    (rows, cells), and the run page lists it under "Datasets".
    """
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    with warnings.catch_warnings():
        # MLflow registers the local-file source class twice and warns that a path fits both
        warnings.filterwarnings("ignore", message="The specified dataset source can be "
                                "interpreted in multiple ways")
        located = {} if source is None else {"source": source}
        dataset = from_pandas(frame, name=name, targets=targets, **located)
    mlflow.log_input(dataset, context=context)


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
