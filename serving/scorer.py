"""The one scorer behind the API and batch scoring (no training/serving skew).

Features come from `features.pipeline.build_features` with the event types the
model was trained on, so a customer scored by the API, by ``churnlens score``
or in the report gets the same numbers from the same code as in training.
Outreach rules, when given, choose the recommended action (the first matching
rule wins); an outbox, when given, records the scores and triggered actions in
one transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from models.reasons import ReasonTable, plain
from serving.outreach.rules import recommended_action, recommending_rule
from serving.schemas import Reason, ScoreRecord

if TYPE_CHECKING:
    from features.dataset import Dataset
    from models.loading import LoadedModel
    from serving.prepared import PreparedRows

Explain = Literal["all", "at-risk", "none"]
EXPLAIN_CHOICES: tuple[str, ...] = ("all", "at-risk", "none")
#: tiers that count as "at risk" for ``explain="at-risk"``
AT_RISK_TIERS = frozenset({"high", "medium"})

BATCH_COLUMNS = ("customer_id", "as_of", "churn_probability", "risk_tier", "clv",
                 "value_segment", "value_at_risk", "reasons_json")
BATCH_TAIL_COLUMNS = ("recommended_action", "model_version", "lifecycle_stage",
                      "expected_saved_value")


def _reason(item: dict[str, Any]) -> Reason:
    return Reason(feature=str(item["feature"]), value=plain(item["value"]),
                  contribution=float(item["contribution"]), text=str(item["text"]),
                  kind=str(item.get("kind", "other")))


def _optional_number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


class Scorer:
    """Scores customers with one loaded model; stateless between calls, safe across threads.

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
        """Score customers whose features are already built (the API caches its dataset's)."""
        if explain not in EXPLAIN_CHOICES:
            choices = ", ".join(EXPLAIN_CHOICES)
            raise ValueError(f"explain must be one of {choices}, not {explain!r}")
        if features.empty:
            return []
        predictions = self.bundle.predict(features)
        reasons = self._reasons(features, predictions, explain=explain, top_k=top_k)
        as_of_value = pd.Timestamp(as_of).to_pydatetime()
        version = self.model_version
        records = []
        for position, (customer_id, row) in enumerate(
            zip(predictions.index, predictions.itertuples(index=False), strict=True)
        ):
            probability = _optional_number(row.churn_probability)
            clv = max(_optional_number(row.clv) or 0.0, 0.0) if self.bundle.has_clv else None
            at_risk = _optional_number(row.value_at_risk)
            records.append(ScoreRecord(
                customer_id=str(customer_id),
                as_of=as_of_value,
                churn_probability=None if probability is None else min(max(probability, 0.0), 1.0),
                risk_tier=row.risk_tier,
                clv=clv,
                value_segment=row.value_segment,
                value_at_risk=None if at_risk is None else max(at_risk, 0.0),
                reasons=reasons.get(position, []),
                model_version=version,
                lifecycle_stage=row.lifecycle_stage,
            ))
        self._recommend(records, features, self._saved_values(features, records))
        return records

    def score_prepared(
        self, rows: PreparedRows, positions: Sequence[int], *, as_of: pd.Timestamp,
        explain: Explain = "all", top_k: int = 5,
    ) -> list[ScoreRecord]:
        """Score rows of a dataset prepared once for this model (the API's by-id path)."""
        as_of_value = pd.Timestamp(as_of).to_pydatetime()
        records = []
        for position in positions:
            row = rows.score(position, explain=explain != "none", top_k=top_k)
            reasons = row.reasons
            if explain == "at-risk" and row.risk_tier not in AT_RISK_TIERS:
                reasons = []
            records.append(ScoreRecord(
                customer_id=row.customer_id, as_of=as_of_value,
                churn_probability=None if row.churn_probability is None
                else min(max(row.churn_probability, 0.0), 1.0),
                risk_tier=row.risk_tier, clv=None if row.clv is None else max(row.clv, 0.0),
                value_segment=row.value_segment,
                value_at_risk=None if row.value_at_risk is None else max(row.value_at_risk, 0.0),
                reasons=[_reason(item) for item in reasons], model_version=self.model_version,
                lifecycle_stage=row.lifecycle_stage,
            ))
        saved = {}
        if self._uplift_applies():
            frame = pd.DataFrame([dict(rows.row_features(p)) for p in positions],
                                 index=[record.customer_id for record in records])
            saved = self._saved_values(frame, records)
        self._recommend(records, lambda i: rows.row_features(positions[i]), saved)
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

        No pydantic record per customer: the columns come straight from
        ``bundle.predict``, clipped as `score_features` clips them, and
        ``reasons_json`` is the same JSON text `records_to_frame` writes, the
        reasons a `ReasonTable` and the recommended action `RuleSet.first_actions`.
        Score records (unvalidated, `model_construct`) are built only for an outbox,
        which stores them, or for a rule set that evaluates one record at a time.
        """
        if explain not in EXPLAIN_CHOICES:
            choices = ", ".join(EXPLAIN_CHOICES)
            raise ValueError(f"explain must be one of {choices}, not {explain!r}")
        if features.empty:
            return records_to_frame([], top_k=top_k)
        predictions = self.bundle.predict(features)
        n = len(predictions)
        tiers = predictions["risk_tier"].astype(object).to_numpy()
        segments = predictions["value_segment"].astype(object).to_numpy()
        no_clv = not self.bundle.has_clv
        if not (np.isin(tiers, _RISK_TIERS).all()
                and (no_clv or np.isin(segments, _VALUE_SEGMENTS).all())):
            # what ScoreRecord would reject: let the record path raise its own error
            return records_to_frame(
                self.score_features(features, as_of=as_of, explain=explain, top_k=top_k),
                top_k=top_k)
        tiers = np.array([str(t) for t in tiers], dtype=object)
        segments = np.array([None if no_clv else str(v) for v in segments], dtype=object)
        probability = predictions["churn_probability"].to_numpy(dtype=float)
        probability = np.where(probability < 0.0, 0.0, probability)   # max(p, 0.0)
        probability = np.where(probability > 1.0, 1.0, probability)   # min(p, 1.0)
        clv = predictions["clv"].to_numpy(dtype=float)
        # max(clv or 0.0, 0.0): NaN and -0.0 (falsy) become 0.0 too; no CLV model: all NaN
        if not no_clv:
            clv = np.where(np.isnan(clv) | (clv <= 0.0), 0.0, clv)
        at_risk = predictions["value_at_risk"].to_numpy(dtype=float)
        at_risk = np.where(at_risk < 0.0, 0.0, at_risk)                # max(v, 0.0)
        ids = np.array([str(c) for c in predictions.index], dtype=object)
        stages = predictions["lifecycle_stage"].astype(object).to_numpy()
        as_of_value = pd.Timestamp(as_of).to_pydatetime()
        version = self.model_version

        table = self._reason_table(features, tiers, explain=explain, top_k=top_k)
        reasons_json = table.json()
        texts = np.full((n, top_k), None, dtype=object)
        texts[:, : table.text.shape[1]] = table.text[:, :top_k]

        actions = np.full(n, None, dtype=object)
        saved_value = np.full(n, None, dtype=object)
        saved = self._saved_values(features, clv)
        if self.outbox is not None or (self.rules is not None
                                       and not hasattr(self.rules, "first_rules")):
            actions, saved_value = self._recommend_rows(
                features, ids=ids, as_of=as_of_value, probability=probability, tiers=tiers,
                clv=clv, segments=segments, at_risk=at_risk, reasons=table, version=version,
                stages=stages, saved=saved,
            )
        elif self.rules is not None:
            chosen = self.rules.first_rules(
                risk_tier=tiers, value_segment=segments, churn_probability=probability,
                clv=clv, value_at_risk=at_risk, reasons=table, customer_ids=ids,
                as_of=as_of_value, lifecycle_stage=stages, saved_values=saved)
            action_of = {rule.name: rule.action for rule in self.rules.rules}
            actions = np.array([None if name is None else action_of[name] for name in chosen],
                               dtype=object)
            saved_value = np.array([_saved_of(saved, name, i) for i, name in enumerate(chosen)],
                                   dtype=object)

        columns: dict[str, Any] = {
            "customer_id": ids,
            "as_of": np.full(n, as_of_value, dtype=object),
            "churn_probability": probability,
            "risk_tier": tiers,
            "clv": clv,
            "value_segment": segments,
            "value_at_risk": at_risk,
            "reasons_json": reasons_json,
        }
        for k in range(top_k):
            columns[f"reason_{k + 1}"] = texts[:, k]
        columns["recommended_action"] = actions
        columns["model_version"] = np.full(n, version, dtype=object)
        columns["lifecycle_stage"] = stages
        columns["expected_saved_value"] = saved_value
        frame = pd.DataFrame(columns)
        frame["as_of"] = pd.to_datetime(frame["as_of"])
        for column in ("churn_probability", "clv", "value_at_risk", "expected_saved_value"):
            frame[column] = frame[column].astype("float64")
        return frame

    def _reason_table(
        self, features: pd.DataFrame, tiers: np.ndarray, *, explain: Explain, top_k: int
    ) -> ReasonTable:
        """Reasons of every row, for the customers ``explain`` asks for (none for the others)."""
        wanted = tiers != "not_applicable"
        if explain == "at-risk":
            wanted &= np.isin(tiers, list(AT_RISK_TIERS))
        if explain == "none" or not wanted.any():
            return ReasonTable.empty(len(features), self.bundle.feature_names,
                                    self.bundle.reason_kinds)
        return self.bundle.explain_table(features, top_k=top_k, wanted=wanted)

    def _recommend_rows(
        self, features: pd.DataFrame, *, ids: np.ndarray, as_of: Any, probability: np.ndarray,
        tiers: np.ndarray, clv: np.ndarray, segments: np.ndarray, at_risk: np.ndarray,
        reasons: ReasonTable, version: str, stages: np.ndarray,
        saved: Mapping[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``recommended_action`` per row through score records, as `_recommend` sets it.

        For an outbox (it stores every record and triggered action) or a rule set that
        only evaluates one record at a time. Records are unvalidated: the values are
        those `score_features` validates.
        """
        rows = reasons.rows()
        records = [
            self._record(i, ids, as_of, probability, tiers, clv, segments, at_risk, rows, version,
                         stages)
            for i in range(len(ids))
        ]
        self._recommend(records, features, saved)
        return (np.array([record.recommended_action for record in records], dtype=object),
                np.array([record.expected_saved_value for record in records], dtype=object))

    @staticmethod
    def _record(i: int, ids: np.ndarray, as_of: Any, probability: np.ndarray,
                tiers: np.ndarray, clv: np.ndarray, segments: np.ndarray, at_risk: np.ndarray,
                reasons: Sequence[list[dict[str, Any]]], version: str,
                stages: np.ndarray) -> ScoreRecord:
        p, v, c = float(probability[i]), float(at_risk[i]), float(clv[i])
        return ScoreRecord.model_construct(
            customer_id=ids[i], as_of=as_of,
            churn_probability=None if math.isnan(p) else p,
            risk_tier=tiers[i], clv=None if math.isnan(c) else c, value_segment=segments[i],
            value_at_risk=None if math.isnan(v) else v,
            reasons=[Reason.model_construct(**item) for item in reasons[i]],
            recommended_action=None, model_version=version, lifecycle_stage=stages[i],
            expected_saved_value=None,
        )

    def _reasons(
        self, features: pd.DataFrame, predictions: pd.DataFrame, *, explain: Explain, top_k: int
    ) -> dict[int, list[Reason]]:
        """Reasons by row position; only for customers in the population (and at risk)."""
        tiers = predictions["risk_tier"].to_numpy()
        rows = self._reason_table(features, tiers, explain=explain, top_k=top_k).rows()
        return {position: [Reason(**item) for item in items]
                for position, items in enumerate(rows) if items}

    def _uplift_applies(self) -> bool:
        return self.rules is not None and bool(getattr(self.bundle, "uplift", ()))

    def _saved_values(self, features: pd.DataFrame,
                      clv: np.ndarray | Sequence[ScoreRecord]) -> dict[str, np.ndarray]:
        """Each rule's expected saved value per row: its uplift model's churn reduction ×
        the scored CLV − the rule's cost (empty without rules or uplift models)."""
        if not self._uplift_applies() or features.empty:
            return {}
        if not isinstance(clv, np.ndarray):
            clv = np.array([np.nan if r.clv is None else r.clv for r in clv], dtype=float)
        X = self.bundle.prepare(features)
        reductions = self.bundle.churn_reductions(
            X, churn_probability=self.bundle.churn_probability(X))
        return self.rules.saved_values(reductions, clv)

    def _recommend(
        self, records: list[ScoreRecord],
        features: pd.DataFrame | Callable[[int], Mapping[str, Any]],
        saved: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Fill ``recommended_action`` (and ``expected_saved_value``) from the rules and
        record to the outbox.

        ``features`` is the scored frame, or a function giving row i's features
        (the by-id path reads them lazily rather than slicing a large frame).
        ``saved`` holds each rule's expected saved value per row (`_saved_values`):
        rules select on it, and a record carries the one of the rule that recommends
        its action.
        """
        if self.rules is None:
            if self.outbox is not None:
                self.outbox.record_scores(records, [])
            return
        if isinstance(features, pd.DataFrame):
            columns = [str(column) for column in features.columns]
            values = features.to_numpy(dtype=object)

            def features_of(i: int) -> Mapping[str, Any]:
                return dict(zip(columns, values[i], strict=True))
        else:
            features_of = features
        triggered_all: list[Any] = []
        for i, record in enumerate(records):
            estimates = {name: _optional_number(column[i])
                         for name, column in (saved or {}).items()}
            triggered = (self.rules.evaluate(record, features=features_of(i),
                                             saved_values=estimates)
                         if estimates else self.rules.evaluate(record, features=features_of(i)))
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
