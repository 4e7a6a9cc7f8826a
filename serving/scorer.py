"""The one scorer behind the API and batch scoring (no training/serving skew).

Features come from `features.pipeline.build_features` with the event types the
model was trained on, so a customer scored by the API, by ``churnlens score``
or in the report gets the same numbers from the same code as in training.
Prediction itself is the bundle's (`ChurnBundle.prepare_matrix`,
`ChurnBundle.score`); this module turns its columns into records or batch rows.
Outreach rules, when given, choose the recommended action (the first matching
rule wins); an outbox, when given, records the scores and triggered actions in
one transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.prediction import (
    AT_RISK_TIERS,
    EXPLAIN_CHOICES,
    Explain,
    PreparedMatrix,
    ScoreColumns,
    check_explain,
)
from serving.outreach.rules import recommended_action, recommending_rule
from serving.schemas import Reason, ScoreRecord

if TYPE_CHECKING:
    from features.dataset import Dataset
    from models.loading import LoadedModel

__all__ = ["AT_RISK_TIERS", "BATCH_COLUMNS", "EXPLAIN_CHOICES", "Explain", "Scorer",
           "records_to_frame", "score_records"]

BATCH_COLUMNS = ("customer_id", "as_of", "churn_probability", "risk_tier", "clv",
                 "value_segment", "value_at_risk", "reasons_json")
BATCH_TAIL_COLUMNS = ("recommended_action", "model_version", "lifecycle_stage",
                      "expected_saved_value")


def _optional_number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def score_records(columns: ScoreColumns, *, as_of: pd.Timestamp, model_version: str,
                  validate: bool = True) -> list[ScoreRecord]:
    """The API's score records of a bundle's score columns (the one record builder).

    ``validate=False`` builds them unvalidated (`model_construct`), for batch
    rows that only need records to hand to an outbox or a one-record rule set.
    ``recommended_action`` and ``expected_saved_value`` are filled by the rules.
    """
    as_of_value = pd.Timestamp(as_of).to_pydatetime()
    record, reason = ((ScoreRecord, Reason) if validate
                      else (ScoreRecord.model_construct, Reason.model_construct))
    return [
        record(
            customer_id=customer_id, as_of=as_of_value,
            churn_probability=None if math.isnan(probability) else probability,
            risk_tier=tier, clv=None if math.isnan(clv) else clv, value_segment=segment,
            value_at_risk=None if math.isnan(at_risk) else at_risk,
            reasons=[reason(**item) for item in reasons], recommended_action=None,
            model_version=model_version, lifecycle_stage=stage, expected_saved_value=None,
        )
        for customer_id, probability, tier, clv, segment, at_risk, reasons, stage in zip(
            columns.customer_id.tolist(), columns.churn_probability.tolist(),
            columns.risk_tier.tolist(), columns.clv.tolist(), columns.value_segment.tolist(),
            columns.value_at_risk.tolist(), columns.reasons.rows(),
            columns.lifecycle_stage.tolist(), strict=True)
    ]


class Scorer:
    """Scores customers with one loaded model; stateless between calls, safe across threads.

    Every path (by history, by id, batch) prepares a matrix with the bundle
    (`ChurnBundle.prepare_matrix`) and scores rows of it (`ChurnBundle.score`);
    records come from `score_records`, batch rows from the same columns.

    Parameters
    ----------
    loaded:
        The model and its registry identity (`models.loading.load_model`).
    rules:
        Outreach rules (`serving.outreach.rules.RuleSet`); without them
        ``recommended_action`` is null.
    outbox:
        Outreach outbox (`serving.outreach.outbox.Outbox`); when given, every
        scoring call records its scores and triggered actions there.
    """

    def __init__(self, loaded: LoadedModel, *, rules: Any = None, outbox: Any = None) -> None:
        self.loaded = loaded
        self.rules = rules
        self.outbox = outbox

    @property
    def bundle(self) -> Any:
        return self.loaded.bundle

    @property
    def model_version(self) -> str:
        return str(self.loaded.version)

    def features(
        self, dataset: Dataset, *, as_of: pd.Timestamp, customer_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Point-in-time features as of ``as_of``, computed exactly as in training."""
        from features.pipeline import build_features

        if customer_ids is not None:
            dataset = dataset.for_customers(list(customer_ids))
        event_types = getattr(self.bundle, "event_types", None)
        features = build_features(dataset, as_of=as_of, event_types=event_types)
        if customer_ids is not None:
            wanted = pd.Index([str(c) for c in customer_ids])
            features = features.loc[features.index.intersection(wanted, sort=False)]
        return features

    def prepare(self, features: pd.DataFrame) -> PreparedMatrix:
        """Features made ready for this model (`ChurnBundle.prepare_matrix`): keep and reuse."""
        return self.bundle.prepare_matrix(features)

    def score_dataset(
        self, dataset: Dataset, *, as_of: pd.Timestamp, explain: Explain = "all", top_k: int = 5,
        customer_ids: Sequence[str] | None = None,
    ) -> list[ScoreRecord]:
        """Score every customer known at ``as_of`` (or only ``customer_ids``)."""
        features = self.features(dataset, as_of=as_of, customer_ids=customer_ids)
        return self.score_features(features, as_of=as_of, explain=explain, top_k=top_k)

    def score_features(
        self, features: pd.DataFrame, *, as_of: pd.Timestamp, explain: Explain = "all",
        top_k: int = 5,
    ) -> list[ScoreRecord]:
        """Score customers whose features are already built (the API's by-history path)."""
        check_explain(explain)
        if features.empty:
            return []
        return self.score_rows(self.prepare(features), as_of=as_of, explain=explain,
                               top_k=top_k)

    def score_rows(
        self, prepared: PreparedMatrix, rows: Sequence[int] | None = None, *,
        as_of: pd.Timestamp, explain: Explain = "all", top_k: int = 5,
    ) -> list[ScoreRecord]:
        """Score records of ``rows`` (positions; default all) of a prepared matrix.

        The by-id path keeps its dataset's matrix and scores one row per request.
        """
        columns = self.bundle.score(prepared, rows, explain=explain, top_k=top_k,
                                    uplift=self._uplift_applies())
        records = score_records(columns, as_of=as_of, model_version=self.model_version)
        self._recommend(records, columns, prepared)
        return records

    def score_frame(
        self, dataset: Dataset, *, as_of: pd.Timestamp, explain: Explain = "all", top_k: int = 5,
        customer_ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Batch rows: the score record with reasons flattened.

        Columns: customer_id, as_of, churn_probability, risk_tier, clv,
        value_segment, value_at_risk, reasons_json, reason_1..reason_K (the
        sentences), recommended_action, model_version, lifecycle_stage,
        expected_saved_value.
        """
        features = self.features(dataset, as_of=as_of, customer_ids=customer_ids)
        return self.batch_rows(features, as_of=as_of, explain=explain, top_k=top_k)

    def batch_rows(
        self, features: pd.DataFrame, *, as_of: pd.Timestamp, explain: Explain = "all",
        top_k: int = 5,
    ) -> pd.DataFrame:
        """Batch rows built column-wise: identical to ``records_to_frame(score_features(...))``.

        No pydantic record per customer: the columns are the bundle's score
        columns, ``reasons_json`` is the JSON text `records_to_frame` writes and
        the recommended action comes from `RuleSet.first_rules`. Score records
        (unvalidated) are built only for an outbox, which stores them, or for a
        rule set that evaluates one record at a time.
        """
        check_explain(explain)
        if features.empty:
            return records_to_frame([], top_k=top_k)
        prepared = self.prepare(features)
        columns = self.bundle.score(prepared, explain=explain, top_k=top_k,
                                    uplift=self._uplift_applies())
        n = len(columns)
        tiers, segments = columns.risk_tier, columns.value_segment
        no_clv = not self.bundle.has_clv
        if not (np.isin(tiers, _RISK_TIERS).all()
                and (no_clv or np.isin(segments, _VALUE_SEGMENTS).all())):
            # what ScoreRecord rejects: let the record builder raise its own error
            score_records(columns, as_of=as_of, model_version=self.model_version)
        probability, clv, at_risk = (columns.churn_probability, columns.clv,
                                     columns.value_at_risk)
        ids, stages = columns.customer_id, columns.lifecycle_stage
        as_of_value = pd.Timestamp(as_of).to_pydatetime()
        version = self.model_version
        table = columns.reasons
        texts = np.full((n, top_k), None, dtype=object)
        texts[:, : table.text.shape[1]] = table.text[:, :top_k]

        actions = np.full(n, None, dtype=object)
        saved_value = np.full(n, None, dtype=object)
        if self.outbox is not None or (self.rules is not None
                                       and not hasattr(self.rules, "first_rules")):
            records = score_records(columns, as_of=as_of, model_version=version, validate=False)
            self._recommend(records, columns, prepared)
            actions = np.array([record.recommended_action for record in records], dtype=object)
            saved_value = np.array([record.expected_saved_value for record in records],
                                   dtype=object)
        elif self.rules is not None:
            saved = self._saved_values(columns)
            chosen = self.rules.first_rules(
                risk_tier=tiers, value_segment=segments, churn_probability=probability,
                clv=clv, value_at_risk=at_risk, reasons=table, customer_ids=ids,
                as_of=as_of_value, lifecycle_stage=stages, saved_values=saved)
            action_of = {rule.name: rule.action for rule in self.rules.rules}
            actions = np.array([None if name is None else action_of[name] for name in chosen],
                               dtype=object)
            saved_value = np.array([_saved_of(saved, name, i) for i, name in enumerate(chosen)],
                                   dtype=object)

        frame_columns: dict[str, Any] = {
            "customer_id": ids,
            "as_of": np.full(n, as_of_value, dtype=object),
            "churn_probability": probability,
            "risk_tier": tiers,
            "clv": clv,
            "value_segment": segments,
            "value_at_risk": at_risk,
            "reasons_json": table.json(),
        }
        for k in range(top_k):
            frame_columns[f"reason_{k + 1}"] = texts[:, k]
        frame_columns["recommended_action"] = actions
        frame_columns["model_version"] = np.full(n, version, dtype=object)
        frame_columns["lifecycle_stage"] = stages
        frame_columns["expected_saved_value"] = saved_value
        frame = pd.DataFrame(frame_columns)
        frame["as_of"] = pd.to_datetime(frame["as_of"])
        for column in ("churn_probability", "clv", "value_at_risk", "expected_saved_value"):
            frame[column] = frame[column].astype("float64")
        return frame

    def _uplift_applies(self) -> bool:
        return self.rules is not None and bool(getattr(self.bundle, "uplift", ()))

    def _saved_values(self, columns: ScoreColumns) -> dict[str, np.ndarray]:
        """Each rule's expected saved value per row: its uplift model's churn reduction ×
        the scored CLV − the rule's cost (empty without rules or uplift models)."""
        if not self._uplift_applies() or not columns.churn_reductions:
            return {}
        return self.rules.saved_values(columns.churn_reductions, columns.clv)

    def _recommend(self, records: list[ScoreRecord], columns: ScoreColumns,
                   prepared: PreparedMatrix) -> None:
        """Fill ``recommended_action`` (and ``expected_saved_value``) from the rules and
        record to the outbox.

        Rules see each record, the customer's raw features (read on access) and
        each rule's expected saved value (`_saved_values`): rules select on it,
        and a record carries the one of the rule that recommends its action.
        """
        if self.rules is None:
            if self.outbox is not None:
                self.outbox.record_scores(records, [])
            return
        saved = self._saved_values(columns)
        triggered_all: list[Any] = []
        for i, record in enumerate(records):
            features = prepared.row_features(int(columns.rows[i]))
            estimates = {name: _optional_number(column[i]) for name, column in saved.items()}
            triggered = (self.rules.evaluate(record, features=features, saved_values=estimates)
                         if estimates else self.rules.evaluate(record, features=features))
            if triggered:
                record.recommended_action = recommended_action(triggered)
                rule = recommending_rule(triggered)
                record.expected_saved_value = None if rule is None else estimates.get(rule)
                triggered_all.extend(triggered)
        if self.outbox is not None:
            self.outbox.record_scores(records, triggered_all)


def _saved_of(saved: Mapping[str, np.ndarray], rule: str | None, i: int) -> float | None:
    """Row i's expected saved value of ``rule`` (null: no rule, or no uplift model of it)."""
    return None if rule is None or rule not in saved else _optional_number(saved[rule][i])


_RISK_TIERS = np.array(["low", "medium", "high", "not_applicable"], dtype=object)
_VALUE_SEGMENTS = np.array(["low", "mid", "high"], dtype=object)


def records_to_frame(records: Sequence[ScoreRecord], *, top_k: int = 5) -> pd.DataFrame:
    """Flatten score records into batch rows (reasons as JSON plus one sentence per column)."""
    reason_columns = [f"reason_{k}" for k in range(1, top_k + 1)]
    rows = []
    for record in records:
        row = record.model_dump(exclude={"reasons"})
        reasons = [reason.model_dump() for reason in record.reasons]
        row["reasons_json"] = json.dumps(reasons, ensure_ascii=False)
        for column, reason in zip(reason_columns, [*record.reasons, *[None] * top_k], strict=False):
            row[column] = reason.text if reason is not None else None
        rows.append(row)
    columns = [*BATCH_COLUMNS, *reason_columns, *BATCH_TAIL_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    for column in ("churn_probability", "clv", "value_at_risk", "expected_saved_value"):
        frame[column] = frame[column].astype("float64")
    return frame
