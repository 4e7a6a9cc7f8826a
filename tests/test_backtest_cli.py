"""`churnlens backtest` end to end on small generated data."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import build_app
from features.generate import generate_dataset
from training.backtest import MODELS

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training

END = date(2024, 6, 30)


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backtest-data")
    generate_dataset(customers=1500, seed=5, end=END, kind="ecommerce",
                     history_days=730).write(folder)
    return folder


@pytest.fixture(scope="module")
def backtest_output(generated_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("backtest-out") / "metrics.json"
    result = CliRunner().invoke(build_app(), [
        "backtest", "--data", str(generated_dir), "--as-of", "2024-03-01", "--horizon", "90",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


def test_backtest_reports_every_model_with_sane_metrics(backtest_output):
    output, written = backtest_output
    metrics = pd.DataFrame(written["metrics"]).set_index("model")
    assert list(metrics.index) == list(MODELS)
    assert written["as_of"] == "2024-03-01" and written["horizon_days"] == 90
    assert "bgnbd" in written["reference_params"]
    churn_models = ["churnlens", "bgnbd", "bgnbd_expected_purchases", "recency"]
    assert metrics.loc[churn_models, "roc_auc"].between(0.5, 1.0).all(), metrics["roc_auc"]
    assert metrics.loc[["churnlens", "bgnbd"], "ece"].between(0.0, 0.5).all()
    assert metrics.loc[["churnlens", "bgnbd"], "brier"].between(0.0, 0.25).all()
    value_models = ["churnlens", "bgnbd", "spend_frequency_recency", "spend_recency"]
    assert metrics.loc[value_models, "normalized_gini"].between(0.0, 1.0).all()
    assert metrics.loc[value_models, "spearman"].between(-1.0, 1.0).all()
    # rankings have no calibration or totals
    assert metrics.loc["recency", ["ece", "total_ratio"]].isna().all()
    assert metrics["customers"].nunique() == 1 and metrics["churn_rate"].between(0, 1).all()
    assert "churnlens" in output and "recency" in output


def test_churnlens_beats_recency_where_behaviour_drives_churn(backtest_output):
    """The generator's churn comes from returns, events and tickets, not silence alone."""
    metrics = pd.DataFrame(backtest_output[1]["metrics"]).set_index("model")
    assert metrics.loc["churnlens", "roc_auc"] > metrics.loc["recency", "roc_auc"] + 0.01, (
        metrics["roc_auc"])


def test_backtest_refuses_a_holdout_beyond_the_data(generated_dir):
    result = CliRunner().invoke(build_app(), [
        "backtest", "--data", str(generated_dir), "--as-of", "2024-06-01", "--horizon", "90"])
    assert result.exit_code == 2
    assert "runs past the end of the data" in result.output


def test_backtest_refuses_unknown_sources_and_definitions(generated_dir):
    runner = CliRunner()
    result = runner.invoke(build_app(), ["backtest", "--data", "no-such-thing"])
    assert result.exit_code == 2 and "cdnow" in result.output
    result = runner.invoke(build_app(), ["backtest", "--data", str(generated_dir),
                                         "--churn", "sometimes"])
    assert result.exit_code != 0 and "--churn" in result.output
    assert "inactivity" in result.output and "sometimes" in result.output
    result = runner.invoke(build_app(), ["backtest", "--data", "no-such-thing",
                                         "--clv-model", "gamma"])
    assert result.exit_code == 2
    assert "--clv-model" in result.output and "tweedie" in result.output
