"""`churnlens outreach effect` against the simulated outreach's known effects.

Real flow: scores and actions from ``churnlens score --outreach`` (half of each
rule held out), the same world regenerated and replayed with ``outreach replay``
(treated customers answer with the effects of `features.outreach_sim`), then the
command. The full 20-seed coverage check is ``bench/effect_bench.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import build_app
from features.history import History
from features.io import read_dataset
from serving.monitoring.effect import EffectInputError, measure_effects, rule_effect
from serving.monitoring.tracking import RegisteredBundles
from serving.outreach.outbox import Outbox

pytestmark = pytest.mark.slow  # end-to-end: training, real scoring and commands

RULES = Path(__file__).resolve().parent.parent / "bench" / "effect_rules.yaml"
ACTED_ON = "2024-01-01"  # the day the `replayed` world's rules acted (tests/conftest.py)

def effects_of(world, url: str, data: Path, **options):
    actions = Outbox(url).action_history()
    costs = {"success-call": 25.0, "win-back": 10.0, "reactivation": 0.05}
    return measure_effects(History(read_dataset(data).dataset), actions,
                           as_of=pd.Timestamp(world.mature_by), costs=costs,
                           load_bundle=RegisteredBundles(), **options)


def test_intervals_cover_the_true_effect_of_each_measured_rule(replayed):
    world, url, data = replayed
    truth = pd.read_csv(data / "outreach_truth.csv")
    effects, notes = effects_of(world, url, data)
    assert notes == []
    measured = [e for e in effects if e.measured]
    assert {e.rule for e in measured} >= {"win-back", "success-call"}, effects
    for e in measured:
        rows = truth[(truth["rule"] == e.rule) & truth["true_churn_reduction"].notna()]
        true = rows["true_churn_reduction"].mean()
        low, high = e.churn_reduction_ci
        assert low <= true <= high, f"{e.rule}: {true:.3f} outside [{low:.3f}, {high:.3f}]"
        assert e.treated + e.control == len(rows)
    offer = next(e for e in measured if e.rule == "win-back")
    assert offer.churn_reduction > 0.05, "the discount saves price-sensitive customers"
    assert offer.contacts_per_save == pytest.approx(1 / offer.churn_reduction)
    assert offer.value_saved_net == pytest.approx(offer.treated * (offer.revenue_gain - 10.0))


def test_the_command_prints_the_table_and_the_sentences(replayed):
    world, url, data = replayed
    result = CliRunner().invoke(build_app(), [
        "outreach", "effect", "--data", str(data), "--as-of", world.mature_by, "--outbox", url,
        "--rules", str(RULES)])
    assert result.exit_code == 0, result.output
    assert "Did the outreach work?" in result.output
    assert "win-back" in result.output and "value saved net" in result.output


def test_a_renamed_rule_and_an_unknown_rule_are_sentences(replayed, tmp_path):
    world, url, data = replayed
    renamed = tmp_path / "rules.yaml"
    renamed.write_text(RULES.read_text().replace("name: win-back", "name: win-back-2024"))
    result = CliRunner().invoke(build_app(), [
        "outreach", "effect", "--data", str(data), "--as-of", world.mature_by, "--outbox", url,
        "--rules", str(renamed)])
    assert result.exit_code == 0, result.output
    assert ("rule 'win-back' is not in the rules file (renamed or removed since its actions "
            "fired)") in " ".join(result.output.split())
    result = CliRunner().invoke(build_app(), [
        "outreach", "effect", "--data", str(data), "--as-of", world.mature_by, "--outbox", url,
        "--rule", "nobody-has-this"])
    assert result.exit_code == 2
    assert "no action of rule 'nobody-has-this' in the outbox" in result.output
    assert "Traceback" not in result.output


def test_too_few_controls_and_unmatured_actions_are_not_numbers(replayed):
    world, url, data = replayed
    actions = Outbox(url).action_history()
    rows = actions[actions["rule"] == "win-back"].head(40).assign(churned=0.0, revenue=1.0)
    effect = rule_effect("win-back", rows, cost=10.0)
    assert not effect.measured and effect.churn_reduction is None
    assert effect.note.startswith("not enough data (n = ")
    effects, _ = measure_effects(
        History(read_dataset(data).dataset), actions, as_of=pd.Timestamp("2024-02-01"),
        costs={}, load_bundle=RegisteredBundles())
    assert all(not e.measured for e in effects)
    assert all("no matured outcome yet (n = 0)" in e.note for e in effects)
    with pytest.raises(EffectInputError, match="holds no action yet"):
        measure_effects(History(read_dataset(data).dataset), actions.iloc[0:0],
                        as_of=pd.Timestamp(world.mature_by), costs={},
                        load_bundle=RegisteredBundles())


def test_the_simulation_leaves_the_history_before_the_actions_alone(replayed):
    world, _url, data = replayed
    before = pd.read_csv(world.plain / "orders.csv", parse_dates=["ordered_at"])
    after = pd.read_csv(data / "orders.csv", parse_dates=["ordered_at"])
    cut = pd.Timestamp(ACTED_ON)
    old = before[before["ordered_at"] < cut].sort_values("order_id").reset_index(drop=True)
    new = after[after["ordered_at"] < cut].sort_values("order_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(old, new)
    truth = pd.read_csv(data / "outreach_truth.csv")
    control = truth[truth["assignment"] == "control"]
    assert not control["saved"].any(), "nobody held out is saved"
    winback = after[after["order_id"].str.startswith("WINBACK-")]
    assert len(winback) == int(truth.drop_duplicates("customer_id")["saved"].sum())
    lapsed_calls = truth[(truth["action"] == "success_call") & truth["lapsed"]]
    assert (lapsed_calls["effect_size"] == 0).all(), "a call does not save a lapsed customer"


def test_a_world_is_replayed_once_and_only_from_an_outbox_with_actions(replayed, tmp_path):
    _world, url, data = replayed
    app = build_app()
    again = CliRunner().invoke(app, ["outreach", "replay", "--data", str(data), "--outbox", url])
    assert again.exit_code == 2
    assert "already replayed" in again.output
    copy = tmp_path / "world"
    copy.mkdir()
    (copy / "orders.csv").write_bytes((data / "orders.csv").read_bytes())
    empty = CliRunner().invoke(app, ["outreach", "replay", "--data", str(copy), "--outbox",
                                     f"sqlite:///{tmp_path / 'none.db'}"])
    assert empty.exit_code == 2
    assert "no outbox at" in empty.output
    assert not (copy / "outreach_truth.csv").exists()


def test_the_report_answers_did_the_scores_come_true(replayed):
    from serving.report import gather_report, render_report

    world, url, data = replayed
    dataset = read_dataset(data).dataset
    gathered = gather_report(dataset, as_of=pd.Timestamp(world.mature_by), model_uri=(
        "models:/churnlens@champion"), scores_path=world.root / "effect.parquet",
        outbox_url=url)
    html = render_report(gathered)
    assert 'id="scores-came-true"' in html and "Did the scores come true?" in html
    assert gathered.loop.verdict and gathered.loop.verdict.split(":")[0] in ("KEEP", "RETRAIN")
    assert any(row["week"] == "held out at training" for row in gathered.loop.quality)
    assert {e["rule"] for e in gathered.loop.effects} >= {"win-back", "success-call"}
    assert "Did the outreach work?" in html
