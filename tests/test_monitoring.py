"""`churnlens monitor` against the generator's ground truth: realized quality, drift, verdict.

One model trained on generated data, real ``churnlens score --outreach`` into
SQLite outboxes (and PostgreSQL when CHURNLENS_TEST_POSTGRES_URL is set), the
real command, the real MLflow store and the real ``/metrics`` route.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from churnlens import build_app
from serving.monitoring.store import load_gauges
from serving.outreach.outbox import Outbox

pytestmark = pytest.mark.slow  # end-to-end: training, real scoring and commands

POSTGRES_URL = os.environ.get("CHURNLENS_TEST_POSTGRES_URL")


@pytest.fixture(scope="module")
def world(monitored_world):
    return monitored_world


def monitor(world, *args: str):
    return CliRunner().invoke(build_app(), ["monitor", *args], catch_exceptions=False)


def gauges_of(outbox_url: str) -> dict[tuple[str, str], float]:
    store = Outbox(outbox_url)
    try:
        return {(r["metric"], r["model_version"]): r["value"] for r in load_gauges(store.engine)}
    finally:
        store.close()


def test_realized_auc_equals_the_auc_from_the_generated_truth(world):
    result = monitor(world, "--data", str(world.plain), "--as-of", world.mature_by,
                     "--outbox", world.outbox("plain"))
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("KEEP: model version")
    realized = gauges_of(world.outbox("plain"))[("realized_roc_auc", world.version)]

    scores = Outbox(world.outbox("plain")).score_history()
    matured = scores[scores["as_of"] + pd.Timedelta(days=90) <= pd.Timestamp(world.mature_by)]
    truth = world.outcomes_from_orders(world.plain, matured)
    known = truth.notna() & matured["churn_probability"].notna()
    direct = roc_auc_score(truth[known], matured.loc[known, "churn_probability"])
    assert known.sum() > 3000, "thousands of matured scores are checked"
    assert abs(realized - direct) <= 0.005, (
        f"monitor's realized AUC {realized:.4f} should equal the AUC on the generated "
        f"outcomes {direct:.4f}")

    # the latent truth (the generator's churn dates) agrees closely too: the inactivity
    # definition also counts a live customer who simply did not order in 90 days
    ground = pd.read_csv(world.plain / "ground_truth.csv", parse_dates=["churned_at"],
                         dtype={"customer_id": str}).set_index("customer_id")["churned_at"]
    left = ground.reindex(matured["customer_id"]).to_numpy()
    gone = pd.notna(left) & (left < (matured["as_of"] + pd.Timedelta(days=90)).to_numpy())
    latent = roc_auc_score(gone[known.to_numpy()].astype(float),
                           matured.loc[known, "churn_probability"])
    assert abs(realized - latent) <= 0.02, (realized, latent)


def test_the_run_is_logged_to_mlflow_and_linked_to_the_version(world):
    from mlflow import MlflowClient

    result = monitor(world, "--data", str(world.plain), "--as-of", world.mature_by,
                     "--outbox", world.outbox("plain"))
    assert result.exit_code == 0, result.output
    client = MlflowClient(world.tracking_uri)
    run_id = client.get_model_version("churnlens", world.version).tags["last_monitoring_run"]
    run = client.get_run(run_id)
    assert run.data.tags["churnlens.model_version"] == world.version
    assert run.data.tags["churnlens.kind"] == "monitoring"
    assert run.data.tags["churnlens.verdict"].startswith("KEEP")
    stored = gauges_of(world.outbox("plain"))
    assert run.data.metrics["realized_roc_auc"] == pytest.approx(
        stored[("realized_roc_auc", world.version)])
    assert "held_out_roc_auc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id, "monitoring")}
    assert {"monitoring/quality.csv", "monitoring/drift.csv"} <= artifacts


def test_halved_sessions_are_flagged_first_and_ask_for_a_retrain(world):
    from serving.monitoring.monitor import run_monitor
    from serving.monitoring.tracking import RegisteredBundles

    result = monitor(world, "--data", str(world.shifted), "--as-of", world.drift_by,
                     "--outbox", world.outbox("shifted"), "--no-mlflow")
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("RETRAIN:") and "session" in last, last

    from features.io import read_dataset

    scores = Outbox(world.outbox("shifted")).score_history()
    checked = run_monitor(read_dataset(world.shifted).dataset, scores,
                          as_of=pd.Timestamp(world.drift_by), load_bundle=RegisteredBundles())
    top = checked.drift[world.version].top_features(1)["name"].iloc[0]
    assert "session" in top, f"the feature that moved most should read sessions, not {top}"


def test_unshifted_data_keeps_the_model(world):
    result = monitor(world, "--data", str(world.plain), "--as-of", world.drift_by,
                     "--outbox", world.outbox("plain"), "--no-mlflow")
    assert result.exit_code == 0, result.output
    assert "KEEP" in result.output.strip().splitlines()[-1]


def test_metrics_route_exports_the_last_run(world):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    result = monitor(world, "--data", str(world.plain), "--as-of", world.mature_by,
                     "--outbox", world.outbox("plain"), "--no-mlflow")
    assert result.exit_code == 0, result.output
    realized = gauges_of(world.outbox("plain"))[("realized_roc_auc", world.version)]
    app = create_app(Settings(outbox_url=world.outbox("plain"), allow_anonymous=True))
    body = TestClient(app).get("/metrics").text
    line = next(x for x in body.splitlines()
                if x.startswith(f'churnlens_monitor_realized_roc_auc{{model_version="'
                                f'{world.version}"}}'))
    assert float(line.split()[-1]) == pytest.approx(realized)
    assert "churnlens_monitor_retrain{" in body
    assert "churnlens_monitor_as_of_timestamp_seconds" in body


def test_no_outbox_is_one_sentence(world, tmp_path):
    result = monitor(world, "--data", str(world.plain), "--outbox",
                     f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 2
    assert "no outbox at" in result.output and "Traceback" not in result.output


def test_scores_not_matured_and_too_few_are_sentences_not_numbers(world, tmp_path):
    url = f"sqlite:///{tmp_path / 'few.db'}"
    runner, app = CliRunner(), build_app()
    world.score_into(runner, app, data=world.plain, as_of="2024-06-01", outbox=url,
                     out=tmp_path / "s.parquet")
    store = Outbox(url)
    with store.engine.begin() as connection:  # keep 40 customers only
        connection.execute(text(
            "DELETE FROM scores WHERE customer_id NOT IN "
            "(SELECT customer_id FROM scores ORDER BY customer_id LIMIT 40)"))
    store.close()
    result = monitor(world, "--data", str(world.plain), "--as-of", "2024-06-20",
                     "--outbox", url, "--no-mlflow")
    assert result.exit_code == 2, result.output
    assert "no score has a matured outcome yet" in result.output
    assert "first matures on 2024-08-30" in result.output
    assert "UNCHECKED" in result.output
    assert "ROC AUC" not in result.output.split("UNCHECKED")[-1]


def test_a_version_missing_from_the_registry_is_named(world, tmp_path):
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    world.score_into(CliRunner(), build_app(), data=world.plain, as_of="2024-01-01",
                     outbox=url, out=tmp_path / "s.parquet")
    store = Outbox(url)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE scores SET model_version = '99'"))
    store.close()
    result = monitor(world, "--data", str(world.plain), "--as-of", world.mature_by,
                     "--outbox", url, "--no-mlflow")
    assert result.exit_code == 2, result.output
    assert "model version 99 cannot be checked" in result.output
    assert "no version 99 of model 'churnlens'" in result.output


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="CHURNLENS_TEST_POSTGRES_URL is not set")
def test_monitoring_on_a_postgres_outbox(world, tmp_path):
    schema = f"monitor_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        runner, app = CliRunner(), build_app()
        for day in ("2024-01-01", world.drift_date):
            world.score_into(runner, app, data=world.plain, as_of=day, outbox=url,
                             out=tmp_path / f"{day}.parquet")
        result = monitor(world, "--data", str(world.plain), "--as-of", world.mature_by,
                         "--outbox", url, "--no-mlflow")
        assert result.exit_code == 0, result.output
        on_pg = gauges_of(url)[("realized_roc_auc", world.version)]
        scores = Outbox(url).score_history()
        matured = scores[scores["as_of"] == pd.Timestamp("2024-01-01")]
        truth = world.outcomes_from_orders(world.plain, matured)
        known = truth.notna() & matured["churn_probability"].notna()
        direct = roc_auc_score(truth[known], matured.loc[known, "churn_probability"])
        assert abs(on_pg - direct) <= 0.005
        assert np.isfinite(on_pg)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_the_session_shift_halves_sessions_from_its_day_only():
    from datetime import date

    from features.generate import generate_dataset

    def sessions(**shift):
        data = generate_dataset(customers=400, seed=2, end=date(2024, 6, 30),
                                kind="ecommerce", **shift)
        events = data.tables["events"]
        events = events[events["event_type"] == "session"]
        day = pd.Timestamp("2024-03-04")  # a Monday, the start of a simulated week
        return (events["occurred_at"] < day).sum(), (events["occurred_at"] >= day).sum()

    before, after = sessions()
    shifted_before, shifted_after = sessions(session_shift=(date(2024, 3, 4), 0.5))
    assert shifted_before == before, "nothing changes before the shift"
    assert 0.4 < shifted_after / after < 0.6, (shifted_after, after)
