"""The report opened in a real headless Chromium (Debian's ``chromium``), driven over CDP.

`.ci/run` installs Chromium when missing and sets ``CHURNLENS_TEST_BROWSER=1``,
which makes this test mandatory: without a browser it then fails. Elsewhere it
skips with the reason.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.report import SECTION_IDS, OutreachView, gather_report, render_report, write_report

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CHURNLENS_TEST_BROWSER") == "1":
        pytest.fail(f"CHURNLENS_TEST_BROWSER=1 makes the browser test mandatory, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium session (module-scoped: launching costs about a second)."""
    executable = (os.environ.get("CHURNLENS_CHROMIUM") or shutil.which("chromium")
                  or shutil.which("chromium-browser"))
    if executable is None:
        _unavailable("no Chromium found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        session = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield session
        session.close()


def _png_chart(title: str) -> bytes:
    """A stand-in for a chart logged by training (the report embeds whatever PNG the run has)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--")
    ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _scores_for(customer_ids: pd.Series, as_of: pd.Timestamp) -> pd.DataFrame:
    """Batch-score rows in the shape `churnlens score` writes, with seeded values."""
    rng = np.random.default_rng(3)
    n = len(customer_ids)
    probability = rng.beta(2, 5, n)
    clv = rng.gamma(2.0, 150.0, n)
    tier = np.select([probability > 0.5, probability > 0.25], ["high", "medium"], "low")
    segment = np.select([clv > 400, clv > 200], ["high", "mid"], "low")
    features = ["days_since_last_order", "return_rate", "sessions_change_30d"]
    reasons = [json.dumps([{"feature": features[(i + k) % 3], "value": 1.0,
                            "contribution": 0.3, "text": f"reason {features[(i + k) % 3]}"}
                           for k in range(3)]) if t != "low" else "[]"
               for i, t in enumerate(tier)]
    return pd.DataFrame({"customer_id": customer_ids.to_numpy(), "as_of": as_of,
                         "churn_probability": probability, "risk_tier": tier, "clv": clv,
                         "value_segment": segment, "value_at_risk": probability * clv,
                         "reasons_json": reasons, "model_version": "7"})


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """A full report (every section filled) and a degraded one (orders only, nothing else)."""
    from features.contract import validate_tables
    from features.generate import generate_dataset

    folder = tmp_path_factory.mktemp("reports")
    generated = generate_dataset(customers=300, seed=5, end=date(2025, 6, 30), kind="mixed")
    dataset = validate_tables(generated.tables).dataset
    as_of = dataset.default_as_of()
    full = gather_report(dataset, as_of=as_of, dataset_name="generated shop",
                         generated_at=pd.Timestamp("2025-07-01 08:00"))
    full.model.model = {"name": "churnlens", "version": "7", "alias": "champion",
                        "run_id": "0123abcd", "trained_at": "2025-07-01T06:00:00",
                        "metrics": {"roc_auc": 0.81, "ece": 0.02}}
    full.model.plots = {"calibration": _png_chart("calibration"), "lift": _png_chart("lift")}
    full.model.scores = _scores_for(dataset.customers["customer_id"], as_of)
    full.model.scores_source = "scores read from scores.parquet"
    full.outreach = OutreachView(source="sqlite:///outbox.db", summary=pd.DataFrame({
        "rule": ["win_back", "win_back", "success_call"],
        "action": ["win_back_offer", "win_back_offer", "success_call"],
        "status": ["delivered", "dead", "pending"], "count": [12, 1, 4]}))

    shop = validate_tables({"customers": generated.tables["customers"],
                            "orders": generated.tables["orders"]}).dataset
    degraded = gather_report(shop, as_of=as_of, dataset_name="orders only")
    return {"full": write_report(render_report(full), folder / "full.html"),
            "degraded": write_report(render_report(degraded), folder / "degraded.html")}


@pytest.mark.parametrize("which", ["full", "degraded"])
def test_report_loads_in_chromium_with_every_section(browser, reports, which, tmp_path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    outside: list[str] = []

    def block_network(route) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", block_network)
    response = page.goto(reports[which].as_uri(), wait_until="load")
    assert response is None or response.ok, f"{which} report did not load"
    screenshot = tmp_path / f"{which}.png"
    page.screenshot(path=str(screenshot), full_page=True)

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert console_errors == [], f"console errors: {console_errors}"
    assert outside == [], f"the report must be self-contained, but it requested {outside}"
    for section_id in SECTION_IDS:
        section = page.locator(f"section#{section_id}")
        assert section.count() == 1, f"section #{section_id} is missing"
        text = section.inner_text()
        assert len(text.split()) >= 10, f"section #{section_id} is (almost) empty: {text!r}"
        box = section.bounding_box()
        assert box is not None and box["height"] > 60, f"section #{section_id} is not visible"
    broken = page.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.alt)")
    assert broken == [], f"images that did not render: {broken}"
    images = page.evaluate("document.images.length")
    if which == "full":
        assert images >= 7, "churn, MRR, repeat, AOV, status charts + histogram + run plots"
        assert page.locator("#model-view table").count() >= 3
        assert "success_call" in page.locator("#outreach").inner_text()
        assert page.locator("#cohorts table.heat td").count() > 20
    else:
        assert "No model was given" in page.locator("#model-view").inner_text()
        assert "No subscriptions table" in page.locator("#business-metrics").inner_text()
    page.close()
