"""Load a registered churnlens model for serving: the bundle itself, not the pyfunc.

The API server and the batch scorer call `load_model` with a model URI
(``models:/churnlens@champion`` by default, or ``models:/churnlens/3``, or a
local bundle directory). It downloads the version's ``bundle`` artifact and
reads it directly, which is faster than going through ``mlflow.pyfunc`` and
gives access to explanations. `resolve_version` is the cheap registry lookup a
server polls to notice that an alias moved.

These are the MLflow calls of the ``models`` package; MLflow must already point
at the right store (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db``).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from models import DEFAULT_MODEL_URI
from models.bundle import BUNDLE_FILE, ChurnBundle

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


class ModelNotFoundError(LookupError):
    """The URI names no model version (unknown model, alias or version)."""


@dataclass
class LoadedModel:
    """A bundle plus where it came from in the registry."""

    bundle: ChurnBundle
    name: str
    version: str
    alias: str | None
    run_id: str | None
    trained_at: str | None
    metrics: dict[str, float] = field(default_factory=dict)


def _parse(uri: str) -> tuple[str, str | None, str | None]:
    match = _MODELS_URI.match(uri)
    if not match:
        raise ValueError(f"{uri!r} is not a model URI: expected models:/NAME@ALIAS, "
                         "models:/NAME/VERSION or a bundle directory")
    return match["name"], match["alias"], match["version"]


def sqlite_file(uri: str) -> Path | None:
    """The absolute path of the file a ``sqlite:///`` URI names (None for other URIs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not uri.startswith("sqlite:"):
        return None
    try:
        database = make_url(uri).database
    except ArgumentError:
        return None
    if not database or database == ":memory:":
        return None
    return Path(database).resolve()


def missing_store(uri: str) -> Path | None:
    """The SQLite file a store URI names, when that file does not exist (else None).

    Opening such a store would create an empty ``mlflow.db`` (or ``outbox.db``)
    wherever the command happens to run; commands that only read refuse instead.
    """
    path = sqlite_file(uri)
    return path if path is not None and not path.exists() else None


def require_registry(uri: str = DEFAULT_MODEL_URI) -> None:
    """Refuse, in one line, a registry URI whose tracking store does not exist (creates nothing)."""
    if _is_bundle_dir(uri) or not uri.startswith("models:/"):
        return
    tracking_uri = _tracking_uri()
    if missing_store(tracking_uri) is not None:
        raise ModelNotFoundError(
            f"no model registered in {tracking_uri} (no such file): run `churnlens train` "
            "in this folder, or set MLFLOW_TRACKING_URI to the store you trained in")


def _model_version(uri: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    require_registry(uri)
    name, alias, version = _parse(uri)
    client = MlflowClient()
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias), alias
        assert version is not None, "a models:/ URI names an alias or a version"
        return client.get_model_version(name, version), None
    except MlflowException as error:
        what = f"alias @{alias}" if alias else f"version {version}"
        raise ModelNotFoundError(
            f"no {what} of model {name!r} in the registry at {_tracking_uri()}: train one "
            f"with `churnlens train` or promote one with `churnlens promote`") from error


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _is_bundle_dir(uri: str) -> bool:
    return not uri.startswith("models:/") and (Path(uri) / BUNDLE_FILE).exists()


def resolve_version(uri: str = DEFAULT_MODEL_URI) -> str:
    """The version a model URI points at now (one registry call; "local" for a directory)."""
    if _is_bundle_dir(uri):
        return "local"
    return str(_model_version(uri)[0].version)


def download_bundle(uri: str, directory: Path | str | None = None) -> Path:
    """Download the ``bundle`` artifact of a registered model version; return its directory."""
    import mlflow

    name, alias, version = _parse(uri)
    if alias is not None:
        version = str(_model_version(uri)[0].version)
    target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="churnlens-model-"))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", dst_path=str(target))
    bundle_dir = Path(local) / "artifacts" / "bundle"
    if not (bundle_dir / BUNDLE_FILE).exists():
        raise ModelNotFoundError(f"{uri} has no churnlens bundle (expected artifacts/bundle/"
                                 f"{BUNDLE_FILE} in the model)")
    return bundle_dir


def load_model(uri: str = DEFAULT_MODEL_URI, *, directory: Path | str | None = None
               ) -> LoadedModel:
    """Load the bundle a model URI points at, with its registry facts."""
    if _is_bundle_dir(uri):
        bundle = ChurnBundle.load(uri)
        return LoadedModel(bundle=bundle, name=Path(uri).name, version="local", alias=None,
                           run_id=None, trained_at=bundle.trained_at,
                           metrics=dict(bundle.metrics))
    version, alias = _model_version(uri)
    name = version.name
    bundle = ChurnBundle.load(download_bundle(f"models:/{name}/{version.version}", directory))
    return LoadedModel(bundle=bundle, name=name, version=str(version.version), alias=alias,
                       run_id=version.run_id, trained_at=bundle.trained_at,
                       metrics={k: v for k, v in bundle.metrics.items() if v is not None})
