"""What a data scientist finds in MLflow after the demo, read through the tracking store's API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

from models.bundle import ChurnBundle
from training.registry import EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND, TRAINING_RUN_TAG

ROOT = Path(__file__).resolve().parents[1]
#: the commands installed beside the interpreter running the tests
VENV_BIN = Path(sys.executable).parent


def _client(folder) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _booster_params(booster) -> dict[str, int]:
    found = re.findall(r"\[(num_leaves|min_data_in_leaf): (\d+)\]", booster.model_to_string())
    return {name: int(value) for name, value in found}


@pytest.mark.slow
def test_demo_run_opens_as_training_with_its_data_and_fitted_params(demo_run):
    client, _ = _client(demo_run.folder)
    experiment = client.get_experiment_by_name("churnlens")
    assert experiment.tags.get(EXPERIMENT_KIND_TAG) == TRAINING_EXPERIMENT_KIND, (
        "MLflow 3's UI opens an experiment without this tag on its GenAI views")
    version = client.get_model_version_by_alias("churnlens", "champion")
    run = client.get_run(version.run_id)
    assert run.info.experiment_id == experiment.experiment_id

    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training snapshots", "held-out snapshot"}
    contexts = {name: {t.value for t in i.tags if t.key == "mlflow.data.context"}
                for name, i in inputs.items()}
    assert contexts == {"training snapshots": {"training"}, "held-out snapshot": {"validation"}}
    training = inputs["training snapshots"].dataset
    assert json.loads(training.source)["uri"] == str((demo_run.folder / "data").resolve())
    assert training.digest
    profile = json.loads(training.profile)
    holdout_rows = json.loads(inputs["held-out snapshot"].dataset.profile)["num_rows"]
    assert profile["num_rows"] > holdout_rows > 0, "every snapshot row, not only the holdout"

    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    bundle = ChurnBundle.load(Path(urlparse(logged.artifact_location).path) / "artifacts/bundle")
    fitted = _booster_params(bundle.churn_booster)
    params = run.data.params
    assert {k: int(params[k]) for k in fitted} == fitted, (
        "the logged tree size is the one the churn model was fitted with")
    assert _booster_params(bundle.clv_booster) == fitted, "CLV uses the chosen size too"
    assert params["clv_form"] in ("tweedie", "hurdle")
    assert any(k.startswith("tree_size_auc_") for k in run.data.metrics), (
        "the candidates' held-out scores are metrics")
    assert run.info.artifact_uri.startswith((demo_run.folder / "mlartifacts").as_uri())


@pytest.mark.slow
def test_mlflow_run_logs_into_churnlens_beside_the_store(demo_run, tmp_path, plain_env):
    """`mlflow run . -e train` from an activated environment, in a fresh folder."""
    env = plain_env(PATH=f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin")
    done = subprocess.run(
        ["mlflow", "run", str(ROOT), "-e", "train", "-P", f"data={demo_run.folder / 'data'}",
         "--env-manager", "local"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (ROOT / "mlflow.db").exists() and not (ROOT / "mlartifacts").exists(), (
        "nothing lands in the project folder mlflow run works in")
    client, _ = _client(tmp_path)
    experiment = client.get_experiment_by_name("churnlens")
    assert experiment.tags.get(EXPERIMENT_KIND_TAG) == TRAINING_EXPERIMENT_KIND
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert client.get_model_version_by_alias("churnlens", "champion").run_id == run.info.run_id
    project_runs = client.search_runs(["0"])
    assert [r.data.tags.get(TRAINING_RUN_TAG) for r in project_runs] == [run.info.run_id], (
        "the project run mlflow started in Default points at the training run")
    assert "Downloading artifacts" not in done.stdout + done.stderr
