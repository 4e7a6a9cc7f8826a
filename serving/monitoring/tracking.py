"""Where monitoring talks to the MLflow registry: bundles by version, and the monitoring run.

The one MLflow seam of `serving.monitoring`. A monitoring run goes to its own
experiment (``churnlens-monitoring``), so that the training experiment still
compares only trained models; it is linked both ways with the model version it
judged: the run carries ``churnlens.model_version`` and the training run's id,
and the version carries ``last_monitoring_run`` and ``last_verdict`` tags.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models.bundle import ChurnBundle
from models.loading import LoadedModel, ModelNotFoundError, load_model

MONITORING_EXPERIMENT = "churnlens-monitoring"
MONITORING_KIND = "monitoring"


@dataclass
class RegisteredBundles:
    """``load(version)`` → the bundle of a registered version, downloaded once per run.

    Raises `LookupError` (`ModelNotFoundError`) for a version the registry lacks,
    which `run_monitor` turns into a sentence.
    """

    model_name: str = "churnlens"
    loaded: dict[str, LoadedModel] = field(default_factory=dict)

    def __call__(self, version: str) -> ChurnBundle:
        if version not in self.loaded:
            if not version.isdigit():
                raise ModelNotFoundError(
                    f"it is not a registered version (scored with a bundle directory, "
                    f"{version!r}), so its training figures are unknown")
            self.loaded[version] = load_model(f"models:/{self.model_name}/{version}")
        return self.loaded[version].bundle

    def run_id(self, version: str) -> str | None:
        model = self.loaded.get(version)
        return model.run_id if model is not None else None


def use_tracking_store() -> str | None:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``) to read it.

    Returns a sentence when that store does not exist (nothing is created), else None.
    """
    import os

    import mlflow

    from models.loading import missing_store
    from training.registry import DEFAULT_TRACKING_URI

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if missing_store(uri) is not None:
        return (f"no model registry at {uri} (no such file): run `churnlens train` in this "
                "folder, or set MLFLOW_TRACKING_URI to the store you trained in")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return None


def _experiment_id(tracking_uri: str) -> str:
    import mlflow

    from training.registry import EXPERIMENT_KIND_TAG, artifact_root

    experiment = mlflow.get_experiment_by_name(MONITORING_EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith(("sqlite:", "postgresql", "mysql")):
        location = f"{artifact_root(tracking_uri).as_uri()}/{MONITORING_EXPERIMENT}"
    return mlflow.create_experiment(MONITORING_EXPERIMENT, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: MONITORING_KIND})


def log_monitoring_run(*, tracking_uri: str, model_name: str, judged_version: str | None,
                       training_run_id: str | None, gauges: dict[tuple[str, str], float],
                       verdict_line: str, exit_code: int, as_of: str,
                       tables: Mapping[str, object]) -> str:
    """Log one monitoring run (metrics, verdict, tables as CSV); return its run id.

    Metrics of the judged version are logged under their plain names
    (``realized_roc_auc``); every version's also as ``v<version>/<name>``.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(tracking_uri)
    tags = {"churnlens.kind": MONITORING_KIND, "churnlens.verdict": verdict_line[:5000],
            "churnlens.exit_code": str(exit_code), "churnlens.as_of": as_of,
            "mlflow.note.content": verdict_line}
    if judged_version is not None:
        tags |= {"churnlens.model_name": model_name, "churnlens.model_version": judged_version}
    if training_run_id is not None:
        tags["churnlens.training_run_id"] = training_run_id
    run = client.create_run(experiment_id, run_name=f"monitor {as_of}", tags=tags)
    run_id = run.info.run_id
    metrics = {}
    for (name, version), value in gauges.items():
        if not math.isfinite(value):
            continue
        metrics[f"v{version}/{name}"] = value
        if version == judged_version:
            metrics[name] = value
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    client.log_param(run_id, "as_of", as_of)
    with tempfile.TemporaryDirectory(prefix="churnlens-monitor-") as folder:
        for name, frame in tables.items():
            path = Path(folder) / f"{name}.csv"
            frame.to_csv(path, index=False)  # type: ignore[attr-defined]
        client.log_artifacts(run_id, folder, artifact_path="monitoring")
    client.set_terminated(run_id)
    if judged_version is not None:
        client.set_model_version_tag(model_name, judged_version, "last_monitoring_run", run_id)
        client.set_model_version_tag(model_name, judged_version, "last_verdict",
                                     verdict_line[:5000])
    del mlflow
    return run_id
