"""Reason sentences a customer-success manager would say, shipped with each feature's entry."""

from __future__ import annotations

import json
import math
import re
from datetime import date

import numpy as np
import pandas as pd

from features.contract import validate_tables
from features.generate import generate_dataset
from features.pipeline import build_features, describe_feature
from features.reasons import REASON_KINDS, reason_spec
from models.bundle import BUNDLE_FILE, ChurnBundle
from models.explain import companion_of, reason_text, sentence_of

#: wording of the feature catalog, not of people
MECHANICAL = ("Sum of the values", "minus those", "Customer attribute", "divided by",
              "None", "nan", "inf", "' events", "{", "}", "  ")


def _sentence_problems(name: str, text: str) -> list[str]:
    problems = [f"contains {word!r}" for word in MECHANICAL if word in text]
    if re.search(r"[a-z0-9]_[a-z0-9]", text):
        problems.append("contains a raw name with '_'")
    if "_" in name and name in text:
        problems.append("contains the feature name")
    if not (text[:1].isupper() or text[:1].isdigit()) or not text.endswith("."):
        problems.append("is not a sentence")
    return problems


def _values_to_try(frame: pd.DataFrame, name: str, reference: dict[str, float]) -> list:
    column = frame[name]
    if isinstance(column.dtype, pd.CategoricalDtype):
        levels = [str(level) for level in column.cat.categories]
        return [*levels[:3], None]
    typical = reference.get(name, float(column.median()) if column.notna().any() else 1.0)
    negative = [-3.0] if (column.min() < 0) else []
    return [typical, 0.0, 1.0, 2.5, *negative, None, math.nan]


def _check_every_feature(frame: pd.DataFrame, info: dict[str, dict], reference: dict[str, float]
                         ) -> None:
    problems = []
    for name in frame.columns:
        render = sentence_of(name, info[name], reference)
        companion = companion_of(info[name])
        others = [None] if companion is None else [
            None, 0.0, 1.0, reference.get(companion, 5.0), 12.0]
        for value in _values_to_try(frame, name, reference):
            for other in others:
                text = render(value) if other is None else render(value, other)
                problems += [f"{name}={value!r} (with {other!r}): {text!r} {p}"
                             for p in _sentence_problems(name, text)]
    assert not problems, "\n".join(problems[:40])


def test_every_feature_of_a_trained_bundle_reads_like_a_person(fit, holdout_features):
    bundle = fit.bundle
    features = holdout_features(fit)[bundle.feature_names]
    reference = bundle.reference["retained_median"]
    for name in bundle.feature_names:
        entry = bundle.feature_info[name]
        assert entry["reason_kind"] in REASON_KINDS and entry["reason_kind"] != "other", name
        assert entry["sentence"]["some"] and entry["sentence"]["missing"], name
    _check_every_feature(features, bundle.feature_info, reference)


def test_every_feature_family_of_a_mixed_business_has_a_sentence_and_a_kind():
    """Orders, events, behaviour, subscriptions, calendar and attributes, as the pipeline
    builds them for a mixed business with a year of history."""
    data = generate_dataset(customers=400, seed=5, end=date(2026, 6, 30), kind="mixed")
    dataset = validate_tables(dict(data.tables), sources={}, first_rows={}).dataset
    frame = build_features(dataset, as_of=dataset.default_as_of())
    info = {}
    for name in frame.columns:
        categorical = isinstance(frame[name].dtype, pd.CategoricalDtype)
        described = describe_feature(name, categorical=categorical)
        kind, sentence = reason_spec(described, categorical=categorical)
        assert kind != "other", f"{name} has no reason kind of its own"
        info[name] = {"reason_kind": kind, "sentence": sentence}
    families = {describe_feature(name).kind for name in frame.columns}
    assert {"recency", "frequency", "monetary", "experience", "events", "behaviour",
            "subscription", "season", "attribute", "tenure"} <= families
    reference = {k: float(v) for k, v in frame.select_dtypes("number").median().items()
                 if pd.notna(v)}
    _check_every_feature(frame, info, reference)


def test_sentences_say_what_the_issue_asked_for():
    def say(name: str, value: object, reference: dict[str, float] | None = None,
            *companion: float, **extra: object) -> str:
        categorical = isinstance(value, str)
        _, sentence = reason_spec(describe_feature(name, categorical=categorical),
                                  categorical=categorical)
        render = sentence_of(name, {"sentence": sentence, **extra}, reference or {})
        return render(value, *companion)

    assert say("session_events_90d", 0.0, {"session_events_90d": 12.0}) == (
        "No session in the last 90 days, against 12 for a typical retained customer.")
    assert say("cart_add_events_30d", 3.0) == "3 cart adds in the last 30 days."
    assert say("cart_add_events_change_30d", -6.0) == (
        "6 fewer cart adds in the last 30 days than in the 30 days before.")
    assert say("cart_add_events_change_30d", -6.0, None, 3.0) == (
        "3 cart adds in the last 30 days, down from 9 in the 30 days before.")
    assert say("session_events_change_30d", -2.0, None, 0.0) == (
        "No sessions in the last 30 days, down from 2 in the 30 days before.")
    assert say("completed_orders_change_90d", 1.0, None, 1.0) == (
        "1 order in the last 90 days, up from 0 in the 90 days before.")
    assert say("mrr_change_90d", -30.0, None, 19.0) == (
        "Pays 19.00 a month, down from 49.00 90 days ago.")
    assert say("support_ticket_events_change_30d", 1.0) == (
        "1 more support ticket in the last 30 days than in the 30 days before.")
    assert say("acquisition_channel", "social", level_churn_rate={"social": 0.31},
               churn_rate=0.22) == (
        "Came through the social channel; customers from that channel churn more often "
        "(31% against 22% overall).")
    assert say("preferred_payment", "cash_on_delivery",
               level_churn_rate={"cash_on_delivery": 0.215}, churn_rate=0.22) == (
        "Prefers to pay by cash on delivery; customers who pay that way churn about as often "
        "as others (22% against 22% overall).")
    assert say("days_since_last_order", 94.0, {"mean_days_between_orders": 21.0}) == (
        "No order for 94 days; retained customers typically order every 21 days.")
    assert say("days_since_last_order", None) == "Has never ordered."
    assert say("completed_orders_90d", 1.0) == "Ordered once in the last 90 days."
    assert say("days_since_last_support_ticket", 5.0) == "Last contacted support 5 days ago."
    assert say("subscription_downgrades", 2.0) == "Moved to a cheaper plan twice."
    assert say("days_since_subscription_ended", 0.02) == "Subscription ended today."
    assert say("days_since_subscription_ended", 0.7) == "Subscription ended 1 day ago."
    assert say("day_of_year", 280.0) == "The time of year (early October) weighs on the risk."


def test_kinds_keep_support_contact_apart_from_visit_and_order_gaps():
    def kind(name: str) -> str:
        return reason_spec(describe_feature(name))[0]

    assert kind("days_since_last_order") == "order_gap"
    assert kind("order_overdue_ratio") == "order_gap"
    assert kind("days_since_last_session") == "visit_gap"
    assert kind("days_since_last_event") == "visit_gap"
    assert kind("days_since_last_support_ticket") == "support_contact"
    assert kind("support_ticket_events_90d") == "support_contact"
    assert kind("ratio_cart_add_per_support_ticket_30d") == "support_contact"
    assert kind("days_since_last_payment_failed") == "payment_failure"
    assert kind("days_since_last_email_open") == "engagement_drop", "an e-mail is not a visit"
    assert kind("session_events_change_30d") == "engagement_drop"
    assert kind("return_rate") == kind("unclaimed_orders_90d") == "returns"
    assert kind("mrr_change_90d") == kind("subscription_downgrades") == "price_change"
    assert kind("tenure_days") == "tenure"
    assert kind("revenue_same_season_last_year") == "seasonality"


def test_a_renamed_feature_keeps_its_sentence_and_an_old_bundle_still_loads(
        fit, tmp_path, holdout_features):
    bundle = fit.bundle
    entry = bundle.feature_info["days_since_last_order"]
    reference = {"mean_days_between_orders": 21.0}
    assert reason_text("recency_in_days", 94.0, info=entry, reference=reference) == \
        reason_text("days_since_last_order", 94.0, info=entry, reference=reference)

    features = holdout_features(fit).head(200)
    directory = bundle.save(tmp_path / "old")
    spec = json.loads((directory / BUNDLE_FILE).read_text())
    for info in spec["feature_info"].values():
        for key in ("reason_kind", "sentence", "level_churn_rate", "churn_rate"):
            info.pop(key, None)
    (directory / BUNDLE_FILE).write_text(json.dumps(spec))
    old = ChurnBundle.load(directory)
    new_reasons, old_reasons = bundle.explain(features), old.explain(features)
    assert [[r["feature"] for r in rs] for rs in old_reasons] == \
        [[r["feature"] for r in rs] for rs in new_reasons], "same reasons, older sentences"
    assert {r["kind"] for rs in old_reasons for r in rs} == {"other"}
    assert {r["kind"] for rs in new_reasons for r in rs} <= set(REASON_KINDS) - {"other"}
    assert all(r["text"].endswith(".") for rs in old_reasons for r in rs)
    np.testing.assert_array_equal(old.predict(features)["risk_tier"],
                                  bundle.predict(features)["risk_tier"])
