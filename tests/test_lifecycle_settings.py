"""Lifecycle thresholds set by the user: validated with the flag named, used by the stages,
stored in the bundle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import build_app
from features.lifecycle import LifecycleSettingError, lifecycle_rules, lifecycle_stages
from training.fit import fit_bundle
from training.params import TrainParams, TrainParamsError


def frame() -> pd.DataFrame:
    """One settled customer: 1 order in the last 90 days against 19 in the 310 before
    (ratio 0.18), 4 in the last 30 days of a 400-day tenure."""
    return pd.DataFrame({"days_since_last_order": [5.0], "tenure_days": [400.0],
                         "completed_orders_30d": [1.0], "completed_orders_90d": [1.0],
                         "completed_orders_total": [20.0]}, index=["c0"])


def test_thresholds_change_the_stage():
    def stage(**thresholds: float) -> str:
        rules = lifecycle_rules("inactivity", activity_slugs=[], active_days=90, new_days=90,
                                **thresholds)
        return str(lifecycle_stages(frame(), rules)[0])

    assert stage() == "declining", "ratio 0.18 is below the default 0.5"
    assert stage(declining_ratio=0.1) == "active", "0.18 is not below 0.1"
    assert stage(min_earlier_activity=20) == "active", "19 earlier orders are too few for 20"
    assert stage(min_earlier_days=311) == "active", "310 earlier days are too few for 311"
    # the last 30 days (1 order) against the 370 before (19 orders): ratio 0.65
    assert stage(recent_days=30) == "active"
    assert stage(recent_days=30, declining_ratio=0.7) == "declining"
    rules = lifecycle_rules("inactivity", activity_slugs=[], active_days=90, new_days=500)
    assert str(lifecycle_stages(frame(), rules)[0]) == "new", "known 400 days, new for 500"


@pytest.mark.parametrize(("settings", "field"), [
    ({"recent_days": 45}, "recent_days"),
    ({"declining_ratio": 0.0}, "declining_ratio"),
    ({"declining_ratio": 1.5}, "declining_ratio"),
    ({"min_earlier_activity": 0}, "min_earlier_activity"),
    ({"min_earlier_days": 0}, "min_earlier_days"),
    ({"new_days": -1}, "new_days"),
])
def test_bad_thresholds_name_the_setting(settings, field):
    with pytest.raises(LifecycleSettingError) as caught:
        lifecycle_rules("activity", activity_slugs=[], active_days=90,
                        **{"new_days": 90, **settings})
    assert caught.value.field == field


def test_train_params_and_the_command_name_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainParamsError) as caught:
        TrainParams(declining_window_days=45)
    assert caught.value.field == "declining_window_days"
    assert "30, 90, 365" in caught.value.problem
    result = CliRunner().invoke(build_app(), ["train", "--data", str(tmp_path),
                                              "--declining-window", "45"])
    assert result.exit_code == 2
    assert "--declining-window" in result.output and "45" in result.output
    assert not (tmp_path / "mlflow.db").exists(), "nothing is registered"


@pytest.mark.slow
def test_thresholds_are_stored_in_the_bundle(training_set, fast_params):
    ts = training_set("ecommerce", "inactivity")
    params = replace(fast_params, new_days=30, declining_window_days=30, declining_ratio=0.3,
                     declining_min_activity=3, declining_min_days=45)
    fit = fit_bundle(ts, params=params, event_types=ts.event_types, definition="inactivity")
    stored = fit.bundle.lifecycle
    assert (stored["new_days"], stored["recent_days"], stored["declining_ratio"],
            stored["min_earlier_activity"], stored["min_earlier_days"]) == (30, 30, 0.3, 3, 45)
    default = fit_bundle(ts, params=fast_params, event_types=ts.event_types,
                         definition="inactivity").bundle.lifecycle
    assert (default["new_days"], default["recent_days"], default["declining_ratio"]) == (
        90, 90, 0.5), "defaults: new for the horizon, the documented declining test"
    assert np.isfinite(stored["declining_ratio"])
