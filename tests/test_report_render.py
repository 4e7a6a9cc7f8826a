"""The retention report: what each section shows, and that missing pieces become words."""

from __future__ import annotations

import json
import os
from datetime import datetime
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import validate_tables
from features.dataset import Dataset
from serving.report import (
    SECTION_IDS,
    OutreachView,
    ReportInputError,
    fetch_run_plots,
    gather_report,
    load_scores,
    read_outbox,
    render_report,
    risk_value_table,
    top_reasons,
)

AS_OF = pd.Timestamp("2024-05-01")


class SectionText(HTMLParser):
    """Visible text of each <section id=...> in a page (no browser needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.depth = 0
        self.text: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.current = dict(attrs).get("id")
            self.text.setdefault(self.current or "", [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None and data.strip():
            self.text[self.current].append(data.strip())


def sections(html: str) -> dict[str, str]:
    parser = SectionText()
    parser.feed(html)
    return {key: " ".join(parts) for key, parts in parser.text.items()}


def orders_only_dataset() -> Dataset:
    """A shop without events or subscriptions: two customers over four months."""
    raw = {
        "customers": pd.DataFrame({"customer_id": ["a", "b"],
                                   "signup_at": ["2024-01-02", "2024-02-01"]}),
        "orders": pd.DataFrame({
            "order_id": ["1", "2", "3", "4", "5"],
            "customer_id": ["a", "a", "b", "a", "b"],
            "ordered_at": ["2024-01-05", "2024-02-05", "2024-02-10", "2024-03-07", "2024-04-01"],
            "amount": ["10", "20", "30", "40", "50"],
            "status": ["completed", "completed", "completed", "returned", "completed"],
        }),
    }
    return validate_tables(raw).dataset


@pytest.fixture
def scores() -> pd.DataFrame:
    def reasons(*features: str) -> str:
        return json.dumps([{"feature": f, "value": 1.0, "contribution": 0.5,
                            "text": f"{f} sentence"} for f in features])

    return pd.DataFrame({
        "customer_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
        "as_of": pd.Timestamp("2024-05-01"),
        "churn_probability": [0.8, 0.6, 0.4, 0.1, np.nan, 0.9],
        "risk_tier": ["high", "high", "medium", "low", "not_applicable", "high"],
        "clv": [1000.0, 100.0, 500.0, 300.0, 0.0, 2000.0],
        "value_segment": ["high", "low", "high", "mid", "low", "high"],
        "value_at_risk": [800.0, 60.0, 200.0, 30.0, np.nan, 1800.0],
        "reasons_json": [reasons("days_since_last_order", "return_rate"),
                         reasons("days_since_last_order", "orders_90d"),
                         reasons("return_rate", "days_since_last_order"),
                         "[]", "[]", reasons("support_tickets_90d")],
        "model_version": "3",
    })


def test_risk_tier_by_value_segment_totals(scores: pd.DataFrame) -> None:
    table = risk_value_table(scores)
    expected = pd.DataFrame({
        "risk_tier": ["high", "high", "medium", "low", "not_applicable"],
        "value_segment": ["high", "low", "high", "mid", "low"],
        "customers": [2, 1, 1, 1, 1],
        "total_clv": [3000.0, 100.0, 500.0, 300.0, 0.0],
        "total_value_at_risk": [2600.0, 60.0, 200.0, 30.0, 0.0],
    })
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_top_reasons_count_first_reason_and_top_three(scores: pd.DataFrame) -> None:
    reasons = top_reasons(scores).set_index("reason")
    assert reasons["as_top_reason"].to_dict() == {
        "days_since_last_order": 2, "return_rate": 1, "support_tickets_90d": 1}
    assert reasons.loc["days_since_last_order", "share"] == pytest.approx(0.5)
    assert reasons.loc["days_since_last_order", "in_top_3"] == 3
    assert reasons.loc["return_rate", "in_top_3"] == 2
    assert reasons.loc["days_since_last_order", "example"] == "days_since_last_order sentence"


def test_top_reasons_fall_back_to_sentences_with_numbers_masked() -> None:
    frame = pd.DataFrame({"customer_id": ["a", "b", "c"], "reason_1": [
        "No order for 94 days.", "No order for 120 days.", "3 returns in 90 days."]})
    reasons = top_reasons(frame).set_index("reason")
    assert reasons.loc["No order for # days.", "as_top_reason"] == 2
    assert reasons.loc["# returns in # days.", "as_top_reason"] == 1


def test_report_without_subscriptions_events_model_or_outbox_says_so() -> None:
    data = gather_report(orders_only_dataset(), as_of=AS_OF, horizon_days=30)
    html = render_report(data)
    text = sections(html)
    assert set(SECTION_IDS) <= set(text), f"sections missing: {set(SECTION_IDS) - set(text)}"
    assert "No subscriptions table" in text["business-metrics"]
    assert "Customer churn rate" in text["business-metrics"]
    assert "No events table" in text["cohorts"]
    assert "Jan 2024" in text["cohorts"], "the January signup cohort should be listed"
    assert "No model was given" in text["model-view"]
    assert "No scores" in text["model-view"]
    assert "No outbox was given" in text["outreach"]
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_report_shows_scores_and_outbox_actions(scores: pd.DataFrame, tmp_path) -> None:
    data = gather_report(orders_only_dataset(), as_of=AS_OF, horizon_days=30)
    data.model.scores = scores
    data.model.scores_source = "scores read from scores.parquet"
    data.outreach = OutreachView(source="sqlite:///outbox.db", summary=pd.DataFrame({
        "rule": ["win_back", "win_back", "success_call"],
        "action": ["win_back_offer", "win_back_offer", "success_call"],
        "status": ["delivered", "dead", "pending"], "count": [5, 1, 2]}))
    text = sections(render_report(data))
    model = text["model-view"]
    assert "2,600" in model, "total value at risk of high risk × high value (800 + 1800)"
    assert "days_since_last_order" in model
    assert "No scores" not in model
    outreach = text["outreach"]
    assert "8 actions in the outbox" in outreach
    assert "62.5% delivered" in outreach, "5 of 8 actions delivered"
    # columns: pending, delivered, dead, total
    assert "win_back win_back_offer 0 5 1 6" in outreach, outreach
    assert "all 2 5 1 8" in outreach, outreach


def test_read_outbox_counts_real_outbox_actions(tmp_path) -> None:
    from serving.outreach.outbox import Outbox
    from serving.outreach.rules import TriggeredAction
    from serving.schemas import ScoreRecord

    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    as_of = datetime(2024, 5, 1)
    records = [ScoreRecord(customer_id=c, as_of=as_of, churn_probability=0.9, risk_tier="high",
                           clv=100.0, value_segment="high", value_at_risk=90.0,
                           model_version="1") for c in ("a", "b", "c")]
    triggered = [TriggeredAction(customer_id=c, rule=rule, action=action, channel="crm",
                                 cooldown_days=30, as_of=as_of, model_version="1", payload={})
                 for c, rule, action in (("a", "win_back", "win_back_offer"),
                                         ("b", "win_back", "win_back_offer"),
                                         ("c", "success_call", "success_call"))]
    outbox = Outbox(url)
    outbox.record_scores(records, triggered)
    outbox.close()
    view = read_outbox(url)
    assert view.summary is not None, view.note
    counts = view.summary.set_index(["rule", "status"])["count"].to_dict()
    assert counts == {("success_call", "pending"): 1, ("win_back", "pending"): 2}


def test_read_outbox_without_database_says_so_and_creates_nothing(tmp_path) -> None:
    missing = tmp_path / "none.db"
    view = read_outbox(f"sqlite:///{missing}")
    assert view.summary is None and "No outbox database" in view.note
    assert not missing.exists()


def test_load_scores_names_the_missing_column(tmp_path, scores: pd.DataFrame) -> None:
    path = tmp_path / "scores.parquet"
    scores.drop(columns="risk_tier").to_parquet(path)
    with pytest.raises(ReportInputError, match=r"scores.parquet: missing column 'risk_tier'"):
        load_scores(path)


def test_cli_writes_report_from_score_file(tmp_path, scores: pd.DataFrame, in_tmp_cwd) -> None:
    from churnlens import build_app

    data = tmp_path / "data"
    data.mkdir()
    dataset = orders_only_dataset()
    dataset.customers.to_csv(data / "customers.csv", index=False)
    dataset.orders.to_csv(data / "orders.csv", index=False)
    scores.to_csv(tmp_path / "scores.csv", index=False)
    out = tmp_path / "out" / "report.html"
    runner = CliRunner()
    result = runner.invoke(build_app(), [
        "report", "--data", str(data), "--scores", str(tmp_path / "scores.csv"), "--no-model",
        "--outbox", f"sqlite:///{tmp_path / 'absent.db'}", "--out", str(out),
        "--as-of", "2024-05-01"])
    assert result.exit_code == 0, result.output
    assert f"wrote the retention report to {out}" in result.output
    text = sections(out.read_text())
    assert "Apr 2024" in text["business-metrics"], "April ended by the as-of date"
    assert "2,600" in text["model-view"]
    assert "No outbox database" in text["outreach"]

    bad = runner.invoke(build_app(), [
        "report", "--data", str(data), "--scores", str(tmp_path / "nope.csv"), "--no-model",
        "--out", str(out)])
    assert bad.exit_code == 2
    assert "nope.csv: score file not found" in bad.output


def test_build_report_writes_a_readable_file_in_one_call(tmp_path) -> None:
    from serving.report import build_report

    path = build_report(orders_only_dataset(), out=tmp_path / "r.html", dataset_name="shop")
    text = sections(path.read_text(encoding="utf-8"))
    assert set(SECTION_IDS) <= set(text)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, (
        "the report is meant to be shared: created like any file, not private like a temp file")


def test_report_for_subscriptions_only_shows_mrr_and_says_orders_are_missing() -> None:
    dataset = validate_tables({
        "customers": pd.DataFrame({"customer_id": ["A", "B"]}),
        "subscriptions": pd.DataFrame({
            "customer_id": ["A", "B", "B"],
            "started_at": ["2024-01-01", "2024-01-01", "2024-02-10"],
            "ended_at": ["", "2024-02-10", ""], "mrr": ["100", "50", "80"]}),
    }).dataset
    text = sections(render_report(gather_report(dataset, as_of=pd.Timestamp("2024-03-01"))))
    business = text["business-metrics"]
    assert "No orders table" in business
    # February: start 150, end 100 + 80 = 180 -> net revenue retention 120.0%
    assert "Net revenue retention 120.0%" in business, business
    assert "Active customers at start" not in business, "no orders: no inactivity churn"


def test_report_counts_lifecycle_stages_and_who_has_a_churn_score(scores: pd.DataFrame) -> None:
    data = gather_report(orders_only_dataset(), as_of=AS_OF, horizon_days=30)
    data.model.scores = scores.assign(
        lifecycle_stage=["active", "declining", "new", "active", "lapsed", "declining"])
    model = sections(render_report(data))["model-view"]
    assert "Lifecycle stages" in model
    # stage, customers, share, with a churn score
    assert "declining 2 33.3% 2" in model, model
    assert "lapsed 1 16.7% 0" in model, "the lapsed customer is outside the population"


# -- against a real champion: the shared registry's tiny model in an embedded MLflow ------

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
