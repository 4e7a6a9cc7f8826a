"""The MLflow flow against real stores: run contents, challenger → champion gate, manual
promotion, loading the champion, and the pyfunc in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from models.loading import ModelNotFoundError, load_model, resolve_version
from training import registry
from training.evaluate import PLOT_FILES
from training.run import register_fit

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training

ROOT = Path(__file__).resolve().parent.parent
PROFILE = {"customers": 2000, "rows": {"orders": 1}, "snapshots": 6}


def _postgres_database(base_url: str):
    """Create a fresh database next to the test one; yield its URL; drop it."""
    import psycopg

    name = f"churnlens_mlflow_{uuid.uuid4().hex[:12]}"
    plain = base_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _use_store(mp: pytest.MonkeyPatch, directory: Path, uri: str) -> None:
    mp.chdir(directory)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        mp.delenv(name, raising=False)


def _register_twice(fit, fast_params):
    """Register the same fitted model twice: v1 becomes champion, v2 stays challenger."""
    first = register_fit(fit, params=fast_params, dataset_profile=PROFILE)
    second = register_fit(fit, params=fast_params, dataset_profile=PROFILE)
    return fit, first, second


@pytest.fixture(scope="module")
def sqlite_flow(tmp_path_factory, fit, fast_params):
    """A temporary SQLite tracking store holding two registered versions."""
    directory = tmp_path_factory.mktemp("sqlite-store")
    with pytest.MonkeyPatch.context() as mp:
        _use_store(mp, directory, f"sqlite:///{directory / 'mlflow.db'}")
        yield directory, *_register_twice(fit, fast_params)


def _check_gate(first, second) -> None:
    assert (first.version, first.promoted, first.reason) == ("1", True, "no champion yet")
    # the same model again: compared on the same holdout it is not better, so it waits
    assert second.version == "2" and not second.promoted
    assert "not better than the champion" in second.reason
    assert registry.aliases() == {"champion": "1", "challenger": "2"}


def _check_manual_promotion(fit, second, holdout_features) -> None:
    from churnlens import build_app

    runner = CliRunner()
    result = runner.invoke(build_app(), ["promote", "2"])
    assert result.exit_code == 0, result.output
    assert "version 2 is now champion (was version 1)" in result.output
    assert registry.aliases()["champion"] == "2"
    result = runner.invoke(build_app(), ["promote", "9"])
    assert result.exit_code == 2 and "no version 9" in result.output

    loaded = load_model("models:/churnlens@champion")
    assert (loaded.name, loaded.version, loaded.alias, loaded.run_id) == (
        "churnlens", "2", "champion", second.run_id)
    assert loaded.metrics["churn_roc_auc"] == pytest.approx(fit.metrics["churn_roc_auc"])
    features = holdout_features(fit)
    pd.testing.assert_frame_equal(loaded.bundle.predict(features), fit.bundle.predict(features))
    assert resolve_version("models:/churnlens@champion") == "2"
    assert resolve_version("models:/churnlens/1") == "1"
    with pytest.raises(ModelNotFoundError, match="no alias @nope"):
        resolve_version("models:/churnlens@nope")


def test_challenger_becomes_champion_only_through_the_gate(sqlite_flow):
    _, _, first, second = sqlite_flow
    _check_gate(first, second)


def test_run_logs_metrics_params_plots_profile_and_gate_decision(sqlite_flow):
    import mlflow

    _, _, _, second = sqlite_flow
    run = mlflow.get_run(second.run_id)
    assert run.data.tags["champion_gate.decision"] == "kept champion"
    assert run.data.tags["champion_gate.champion_version"] == "1"
    assert "ROC AUC" in run.data.tags["champion_gate.rule"]
    assert run.data.metrics["champion_churn_roc_auc"] == pytest.approx(
        run.data.metrics["churn_roc_auc"]), "champion scored on this run's holdout"
    assert run.data.metrics["champion_gate_promoted"] == 0.0
    for name in ("churn_roc_auc", "churn_pr_auc", "churn_top_decile_lift", "churn_brier",
                 "churn_ece", "clv_spearman", "clv_normalized_gini", "clv_decile_error",
                 "clv_total_ratio"):
        assert name in run.data.metrics, name
    assert run.data.params["horizon_days"] == "90"
    assert run.data.params["definition"] == "inactivity"
    client = mlflow.MlflowClient()
    plots = {Path(a.path).name for a in client.list_artifacts(second.run_id, "plots")}
    assert plots == set(PLOT_FILES)
    profile = mlflow.artifacts.load_dict(f"runs:/{second.run_id}/dataset_profile.json")
    assert profile == PROFILE
    model = mlflow.models.get_model_info("models:/churnlens/2")
    assert model.signature is not None and model.saved_input_example_info is not None


def test_default_store_is_sqlite_with_local_artifacts(in_tmp_cwd, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    import mlflow

    assert registry.configure_tracking() == "sqlite:///mlflow.db"
    assert (in_tmp_cwd / "mlflow.db").exists()
    default = mlflow.get_experiment("0")
    assert default.artifact_location.startswith((in_tmp_cwd / "mlartifacts").as_uri())
    ours = mlflow.get_experiment_by_name("churnlens")
    assert ours.artifact_location == (in_tmp_cwd / "mlartifacts").as_uri() + "/churnlens"


def test_pyfunc_loads_in_a_fresh_process_with_identical_scores(sqlite_flow, holdout_features):
    store, fit, _, _ = sqlite_flow
    features = holdout_features(fit).head(200)
    example = features.reset_index()
    for name in fit.bundle.categorical_levels:
        example[name] = example[name].astype(object).where(example[name].notna(), None)
    example.to_parquet(store / "input.parquet")
    script = textwrap.dedent("""
        import sys, pandas as pd, mlflow
        model = mlflow.pyfunc.load_model("models:/churnlens@champion")
        out = model.predict(pd.read_parquet(sys.argv[1]), params={"explain": True, "top_k": 3})
        out.to_parquet(sys.argv[2])
    """)
    subprocess.run([sys.executable, "-c", script, str(store / "input.parquet"),
                    str(store / "output.parquet")], check=True, cwd=store,
                   env=os.environ.copy(), timeout=240)
    out = pd.read_parquet(store / "output.parquet").set_index("customer_id")
    expected = fit.bundle.predict(features)
    pd.testing.assert_frame_equal(out[expected.columns], expected, check_dtype=False,
                                  check_index_type=False, rtol=1e-12)
    contributions = fit.bundle.contributions(features)
    got = out[[f"contribution__{c}" for c in contributions.columns]]
    got.columns = contributions.columns
    pd.testing.assert_frame_equal(got, contributions, rtol=1e-12, check_index_type=False)
    reasons = [json.loads(r) for r in out["reasons_json"]]
    assert reasons == fit.bundle.explain(features, top_k=3)


def test_manual_promotion_moves_the_champion_and_load_model_follows(sqlite_flow,
                                                                     holdout_features):
    _, fit, _, second = sqlite_flow
    _check_manual_promotion(fit, second, holdout_features)


@pytest.mark.postgres
def test_registry_flow_on_postgresql(tmp_path, fit, fast_params, holdout_features):
    base = os.environ.get("CHURNLENS_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("CHURNLENS_TEST_POSTGRES_URL is not set")
    databases = _postgres_database(base)
    url = next(databases)
    try:
        with pytest.MonkeyPatch.context() as mp:
            _use_store(mp, tmp_path, url)
            fit, first, second = _register_twice(fit, fast_params)
            _check_gate(first, second)
            _check_manual_promotion(fit, second, holdout_features)
    finally:
        for _ in databases:  # drops the database
            pass


def test_train_command_end_to_end(in_tmp_cwd, monkeypatch, generated):
    from churnlens import build_app

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    data, _ = generated("ecommerce", 600, 5)
    data.write(in_tmp_cwd / "data")
    runner = CliRunner()
    result = runner.invoke(build_app(), ["train", "--data", "data", "--snapshots", "3",
                                         "--churn", "inactivity", "--margin-rate", "0.4",
                                         "--clv-model", "hurdle"])
    assert result.exit_code == 0, result.output
    assert "registered churnlens version 1" in result.output
    assert "promoted to champion: no champion yet" in result.output
    assert "churn_roc_auc" in result.output
    loaded = load_model()
    assert loaded.bundle.margin_rate == 0.4 and loaded.bundle.definition == "inactivity"
    assert loaded.bundle.metrics["clv_hurdle"] == 1.0

    (in_tmp_cwd / "empty").mkdir()
    (in_tmp_cwd / "empty" / "customers.csv").write_text("customer_id\nc1\n")
    (in_tmp_cwd / "empty" / "events.csv").write_text(
        "customer_id,occurred_at,event_type\nc1,2026-01-01,session\n")
    result = runner.invoke(build_app(), ["train", "--data", "empty"])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("flag", "value"), [("--churn", "weekly"), ("--clv-model", "gamma"),
                                             ("--margin-rate", "0"), ("--margin-rate", "1.5")])
def test_train_command_names_the_bad_setting_before_reading_data(in_tmp_cwd, flag, value):
    from churnlens import build_app

    result = CliRunner().invoke(build_app(), ["train", "--data", "nowhere", flag, value])
    assert result.exit_code == 2
    assert flag in result.output and value in result.output
    assert "nowhere" not in result.output  # the data was not read
    assert not (in_tmp_cwd / "mlflow.db").exists()  # nothing tracked or registered
