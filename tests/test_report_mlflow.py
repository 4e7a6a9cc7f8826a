"""The report against a real champion: a tiny model trained into an embedded MLflow registry.

Uses the serving tests' shared registry (trained once per test process), so the
model's view is checked end to end: scoring with the shared scorer, the run's
calibration and lift charts, and the notes when a model or a chart is missing.
"""

from __future__ import annotations

import pandas as pd
from test_report_render import sections
from typer.testing import CliRunner

from serving.report import fetch_run_plots, gather_report


def test_report_with_the_champion_scores_and_embeds_its_charts(tmp_path, trained_registry) -> None:
    from churnlens import build_app

    out = tmp_path / "report.html"
    with trained_registry.active() as registry:
        result = CliRunner().invoke(build_app(), [
            "report", "--data", str(registry.data), "--out", str(out),
            "--outbox", f"sqlite:///{tmp_path / 'absent.db'}"])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    model = sections(html)["model-view"]
    assert f"churnlens version {registry.version} @champion" in model
    assert "scored now" in model
    assert "Where the value at risk is" in model and "Most common top reasons" in model
    assert 'alt="Calibration (reliability) on the held-out snapshot"' in html
    assert 'alt="Lift / gains on the held-out snapshot"' in html
    assert "no model could be loaded" not in model


def test_missing_run_chart_and_missing_model_are_named(tmp_path, trained_registry) -> None:
    import mlflow

    chart = tmp_path / "calibration.png"
    chart.write_bytes(b"\x89PNG\r\n\x1a\nstand-in calibration chart")
    with trained_registry.active():
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(chart), artifact_path="plots")
        plots, notes = fetch_run_plots(run.info.run_id)
        assert plots == {"calibration": chart.read_bytes()}
        assert len(notes) == 1 and "plots/lift.png" in notes[0], notes

        from features.contract import validate_tables

        dataset = validate_tables({
            "customers": pd.DataFrame({"customer_id": ["a"]}),
            "orders": pd.DataFrame({"order_id": ["1"], "customer_id": ["a"],
                                    "ordered_at": ["2024-01-05"], "amount": ["10"]}),
        }).dataset
        data = gather_report(dataset, as_of=pd.Timestamp("2024-03-01"),
                             model_uri="models:/no-such-model@champion")
    assert data.model.model is None and data.model.scores is None
    assert any("no model could be loaded from models:/no-such-model@champion" in note
               for note in data.model.notes), data.model.notes
