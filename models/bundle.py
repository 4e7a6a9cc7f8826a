"""The model bundle: everything needed to turn a feature frame into score records.

A `ChurnBundle` holds the two LightGBM boosters (churn classifier, CLV Tweedie
regressor; no CLV booster when the data has no revenue to learn from, and then
CLV is null with ``clv_note`` saying why) and the facts that must travel with
them so that scoring matches training exactly: the feature order, categorical
levels, the event types the feature pipeline must expand, feature descriptions,
the population rule of the churn definition, the probability calibration map,
risk-tier and value-segment cut points and the reference statistics used in
reason sentences.

It is stored as LightGBM's own text model files plus one ``bundle.json`` (no
pickles), so a bundle written by one version of the code can be read, diffed
and audited by anyone.

Why it scores what it does (contributions, reasons, their sentences) is the
bundle's `models.explanations.BundleExplanations` half, in its own module.

Risk tiers: ``high`` is the riskiest 20% and ``medium`` the next 30% of the
churn population on the held-out training snapshot (cut points = the 80th and
50th percentiles of its calibrated churn probability), ``low`` the rest.
Value segments: ``high`` is the top 20% and ``mid`` the next 30% of predicted
CLV on the held-out snapshot (80th and 50th percentiles), ``low`` the rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.business import BUSINESS_FEATURES, BusinessSeason
from features.lifecycle import LifecycleRules, lifecycle_rules, lifecycle_stages
from features.pipeline import event_slug
from models.contributions import exact_contributions
from models.explanations import BundleExplanations
from models.prediction import (
    AT_RISK_TIERS,
    SMALL_ROWS,
    Explain,
    PreparedMatrix,
    ScoreColumns,
    check_explain,
    model_matrix,
)
from models.reasons import ReasonTable
from models.uplift import RuleUplift, churn_reductions

BUNDLE_FILE = "bundle.json"
CHURN_MODEL_FILE = "churn_model.txt"
CLV_MODEL_FILE = "clv_model.txt"
FORMAT_VERSION = 1

#: share of the held-out population below the medium and the high risk cut
RISK_QUANTILES = (0.5, 0.8)
#: share of held-out customers below the mid and the high value cut
VALUE_QUANTILES = (0.5, 0.8)
SCORE_COLUMNS = ("in_population", "churn_probability", "risk_tier", "clv", "value_segment",
                 "value_at_risk", "lifecycle_stage")


def apply_calibration(calibration: Mapping[str, Any] | None, raw: np.ndarray) -> np.ndarray:
    """Map raw churn probabilities through a stored calibration map.

    ``{"method": "platt", "a": .., "b": ..}`` is σ(a·logit(p) + b);
    ``{"method": "isotonic", "x": [...], "y": [...]}`` is piecewise-linear
    interpolation of the fitted isotonic steps. None or ``"none"`` is identity.
    """
    raw = np.asarray(raw, dtype=float)
    if not calibration or calibration.get("method", "none") == "none":
        return raw
    if calibration["method"] == "platt":
        clipped = np.clip(raw, 1e-7, 1 - 1e-7)
        logit = np.log(clipped / (1 - clipped))
        return 1.0 / (1.0 + np.exp(-(calibration["a"] * logit + calibration["b"])))
    if calibration["method"] == "isotonic":
        return np.interp(raw, np.asarray(calibration["x"]), np.asarray(calibration["y"]))
    raise ValueError(f"unknown calibration method {calibration['method']!r}")


def population_mask(features: pd.DataFrame, rule: Mapping[str, Any]) -> pd.Series:
    """Which customers the churn definition applies to, from their features.

    ``rule`` is ``{"feature": name, "test": "positive"|"notna"|"all"}``: e.g. the
    inactivity population is "has a completed order before as_of", i.e. a
    completed-order count > 0; the subscription population is "has an active
    subscription at as_of". The activity population is ``{"test": "recent",
    "recency": [days-since columns], "flags": [running flags], "within_days": A}``:
    any of the days-since columns at most A, or any flag positive.
    """
    test = rule.get("test", "all")
    if test == "all":
        return pd.Series(True, index=features.index)
    if test == "recent":
        mask = np.zeros(len(features), dtype=bool)
        within = float(rule["within_days"])
        for name in rule.get("recency", []):
            if name in features.columns:
                values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
                mask |= values <= within
        for name in rule.get("flags", []):
            if name in features.columns:
                values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
                mask |= values > 0
        return pd.Series(mask, index=features.index)
    column = features.get(rule["feature"])
    if column is None:
        return pd.Series(False, index=features.index)
    values = pd.to_numeric(column, errors="coerce")
    if test == "positive":
        return (values > 0).fillna(False).astype(bool)
    if test == "notna":
        return values.notna()
    raise ValueError(f"unknown population test {test!r}")


def _cut(values: np.ndarray, cuts: Sequence[float], labels: Sequence[str]) -> np.ndarray:
    """Label values by ascending cut points: below cuts[0] → labels[0], and so on."""
    return np.asarray(labels, dtype=object)[np.searchsorted(np.asarray(cuts), values,
                                                            side="right")]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


class ChurnBundle(BundleExplanations):
    """Churn + CLV models with their feature spec, cut points and reason texts.

    Built by `training.fit.fit_bundle`; read back with `ChurnBundle.load`.
    Scoring needs a feature frame from `features.pipeline.build_features`
    computed with ``event_types=bundle.event_types``.
    ``explain``, ``explain_value``, ``explain_table`` and ``contributions`` come
    from `BundleExplanations`.
    """

    def __init__(
        self,
        *,
        churn_booster: lgb.Booster,
        clv_booster: lgb.Booster | None,
        feature_names: Sequence[str],
        categorical_levels: Mapping[str, Sequence[Any]] | None = None,
        event_types: Sequence[str] | None = None,
        feature_info: Mapping[str, Mapping[str, Any]] | None = None,
        population_rule: Mapping[str, Any] | None = None,
        calibration: Mapping[str, Any] | None = None,
        risk_cuts: Sequence[float] = (0.0, 0.0),
        value_cuts: Sequence[float] = (0.0, 0.0),
        reference: Mapping[str, Mapping[str, float]] | None = None,
        horizon_days: int = 90,
        clv_horizon_days: int = 365,
        definition: str = "inactivity",
        margin_rate: float = 1.0,
        metrics: Mapping[str, float] | None = None,
        trained_at: str | None = None,
        as_of: str | None = None,
        notes: Sequence[str] = (),
        drift_reference: Mapping[str, Any] | None = None,
        churn_definition: Mapping[str, Any] | None = None,
        lifecycle: Mapping[str, Any] | None = None,
        clv_note: str | None = None,
        business_season: Mapping[str, Any] | None = None,
        uplift: Sequence[RuleUplift] = (),
    ) -> None:
        self.churn_booster = churn_booster
        self.clv_booster = clv_booster
        self.feature_names = list(feature_names)
        self.categorical_levels = {k: list(v) for k, v in (categorical_levels or {}).items()}
        self.event_types = list(event_types) if event_types is not None else None
        self.feature_info = {k: dict(v) for k, v in (feature_info or {}).items()}
        self.population_rule = dict(population_rule or {"test": "all"})
        self.calibration = dict(calibration or {"method": "none"})
        self.risk_cuts = [float(c) for c in risk_cuts]
        self.value_cuts = [float(c) for c in value_cuts]
        self.reference = {k: dict(v) for k, v in (reference or {}).items()}
        self.horizon_days = int(horizon_days)
        self.clv_horizon_days = int(clv_horizon_days)
        self.definition = definition
        self.margin_rate = float(margin_rate)
        self.metrics = dict(metrics or {})
        self.trained_at = trained_at
        self.as_of = as_of
        self.notes = list(notes)
        #: bins and shares of each feature and of the score on the held-out snapshot
        #: (`models.drift`), the reference monitoring measures drift against
        self.drift_reference = dict(drift_reference or {})
        #: the resolved churn definition: name, why it was chosen, activity window and
        #: event types (`features.definition.ChurnDefinition.as_dict`)
        self.churn_definition = dict(churn_definition or {
            "name": definition, "reason": "", "active_days": int(horizon_days),
            "activity_events": []})
        #: the lifecycle stage thresholds (`features.lifecycle.LifecycleRules.as_dict`);
        #: bundles from before stages get the definition's defaults
        self.lifecycle = dict(lifecycle or lifecycle_rules(
            definition, activity_slugs=[event_slug(t) for t in self.event_types or []],
            active_days=int(horizon_days), new_days=int(horizon_days)).as_dict())
        #: why there is no CLV model (None when there is one)
        self.clv_note = clv_note
        #: the business's weekly activity before the cut-off (`features.business`), from
        #: which `prepare` fills the business-season columns by the day of the year of T
        self.business_season = dict(business_season) if business_season else None
        #: uplift models of outreach rules' actions (`churnlens train --uplift`); none yet: ()
        self.uplift = tuple(uplift)
        #: each feature's prepared sentence per reference (`_text_of`), filled on use
        self._sentences: dict[tuple[str, str], Callable[..., str]] = {}
        #: `reason_kinds` and `reason_companions`, worked out on first use
        self._layout: tuple[list[str], list[int]] | None = None

    # -- features -----------------------------------------------------------------

    def prepare(self, features: pd.DataFrame) -> pd.DataFrame:
        """The model matrix: training's column order, training's categorical levels.

        Missing feature columns (e.g. an event type absent from this data) become
        NaN, extra columns are dropped, unseen category levels become missing.
        The business-season columns, which a chunk of customers cannot compute,
        come from the series stored at training (`features.business`).
        """
        features = self._with_business_season(features)
        frame = features.reindex(columns=self.feature_names)
        for name in self.feature_names:
            if name in self.categorical_levels:
                column = features[name] if name in features else pd.Series(
                    np.nan, index=features.index, dtype=object)
                frame[name] = pd.Categorical(column, categories=self.categorical_levels[name])
            else:
                frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        return frame

    def _with_business_season(self, features: pd.DataFrame) -> pd.DataFrame:
        """``features`` plus the business-season columns the model uses and they lack."""
        wanted = [n for n in BUSINESS_FEATURES
                  if n in self.feature_names and n not in features.columns]
        if not wanted or not self.business_season or "day_of_year" not in features.columns:
            return features
        days = pd.to_numeric(features["day_of_year"], errors="coerce").to_numpy(dtype=float)
        values = BusinessSeason.from_dict(self.business_season).values_for(days)
        return features.assign(**{n: values[n] for n in wanted})

    def in_population(self, features: pd.DataFrame) -> pd.Series:
        """True for customers the churn definition applies to (see `population_mask`)."""
        return population_mask(features, self.population_rule)

    def label_settings(self) -> dict[str, Any]:
        """The churn definition's labelling keywords (`features.labels.labels_at`), so that
        outcomes are judged by the definition the model was trained with."""
        settings: dict[str, Any] = {"definition": self.definition}
        if self.definition == "activity":
            settings["active_days"] = int(self.churn_definition.get("active_days")
                                          or self.horizon_days)
            settings["activity_events"] = list(self.churn_definition.get("activity_events")
                                               or [])
        return settings

    def lifecycle_stage(self, features: pd.DataFrame) -> np.ndarray:
        """Each customer's lifecycle stage (`features.lifecycle`), with the stored thresholds."""
        return lifecycle_stages(features, LifecycleRules.from_dict(self.lifecycle))

    # -- scoring ------------------------------------------------------------------

    def prepare_matrix(self, features: pd.DataFrame) -> PreparedMatrix:
        """Features (index customer_id) made ready to score, once (`models.prediction`).

        The by-id API keeps this for its dataset and scores one row of it per
        request; batch scoring prepares a chunk and scores all of it.
        """
        features = self._with_business_season(features)
        return PreparedMatrix(
            customer_ids=features.index.astype(str).to_numpy(dtype=object),
            matrix=model_matrix(self.prepare(features)),
            population=self.in_population(features).to_numpy(dtype=bool),
            lifecycle_stage=np.asarray(self.lifecycle_stage(features), dtype=object),
            features=features,
        )

    def score(self, prepared: PreparedMatrix, rows: Sequence[int] | np.ndarray | None = None,
              *, explain: Explain = "all", top_k: int = 5, value_reasons: bool = False,
              uplift: bool = False) -> ScoreColumns:
        """The score record's columns for ``rows`` (positions; default all) of ``prepared``.

        Customers outside the churn population get no probability (NaN), risk
        tier ``not_applicable`` and no value at risk; everyone gets a CLV.
        ``explain`` chooses who gets churn reasons (exact TreeSHAP of the churn
        model in log-odds; only features that raise the risk are reasons);
        ``value_reasons`` adds the features raising CLV, ``uplift`` each uplift
        model's churn reduction. A handful of rows run on one thread.
        """
        check_explain(explain)
        every = rows is None
        at = (np.arange(len(prepared)) if every
              else np.asarray(rows, dtype=np.intp).reshape(-1))
        n = len(at)
        X = prepared.matrix if every else prepared.matrix[at]
        small = n <= SMALL_ROWS
        population = prepared.population[at]
        probability = np.full(n, np.nan)
        reductions: dict[str, np.ndarray] = {}
        if uplift and self.uplift and n:
            everyone = self._calibrated(X, small=small)
            probability[population] = everyone[population]
            reductions = churn_reductions(self.uplift, X, churn_probability=everyone)
        elif population.any():
            probability[population] = self._calibrated(
                X if population.all() else X[population], small=small)
        clv = self._clv(X, small=small)
        tier = np.full(n, "not_applicable", dtype=object)
        tier[population] = self.risk_tier(probability[population])
        segment = self.value_segment(clv)
        at_risk = probability * clv
        explained = population.copy()
        if explain == "at-risk":
            explained &= np.isin(tier, list(AT_RISK_TIERS))
        if explain == "none" or not explained.any():
            reasons = ReasonTable.empty(n, self.feature_names, self._reason_layout()[0])
        else:
            contributions = np.zeros((n, len(self.feature_names) + 1))
            contributions[explained] = exact_contributions(
                self.churn_booster, X if explained.all() else X[explained],
                n_threads=1 if small else None)
            reasons = self._reason_table(prepared, at, contributions, top_k=top_k,
                                         reference="retained_median")
        values = None
        if value_reasons:
            values = self._reason_table(prepared, at, self._clv_contributions(X), top_k=top_k,
                                        reference="median")
        if self.has_clv:  # a missing or negative CLV is none: 0
            clv = np.where(np.isnan(clv) | (clv <= 0.0), 0.0, clv)
        return ScoreColumns(
            rows=at, customer_id=prepared.customer_ids[at], in_population=population,
            churn_probability=np.where(probability > 1.0, 1.0,
                                       np.where(probability < 0.0, 0.0, probability)),
            risk_tier=tier, clv=clv, value_segment=segment,
            value_at_risk=np.where(at_risk < 0.0, 0.0, at_risk),
            lifecycle_stage=prepared.lifecycle_stage[at], reasons=reasons,
            value_reasons=values, churn_reductions=reductions,
        )

    def _calibrated(self, X: np.ndarray, *, small: bool) -> np.ndarray:
        if len(X) == 0:
            return np.empty(0)
        raw = (self.churn_booster.predict(X, num_threads=1) if small
               else self.churn_booster.predict(X))
        return apply_calibration(self.calibration, np.asarray(raw, dtype=float))

    def _clv(self, X: np.ndarray, *, small: bool) -> np.ndarray:
        if self.clv_booster is None or len(X) == 0:
            return np.full(len(X), np.nan)
        raw = (self.clv_booster.predict(X, num_threads=1) if small
               else self.clv_booster.predict(X))
        return np.asarray(raw, dtype=float) * self.margin_rate

    def churn_raw_probability(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated churn probability of a prepared frame (`prepare`)."""
        if len(X) == 0:
            return np.empty(0)
        return np.asarray(self.churn_booster.predict(X), dtype=float)

    def churn_probability(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability of a prepared frame (ignores the population)."""
        return apply_calibration(self.calibration, self.churn_raw_probability(X))

    @property
    def has_clv(self) -> bool:
        """Whether the bundle predicts value (False: no revenue to learn from, CLV is null)."""
        return self.clv_booster is not None

    def clv(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted value over the CLV horizon (revenue × margin rate) of a prepared frame.

        NaN for every row when the bundle has no CLV model (`has_clv`).
        """
        if len(X) == 0:
            return np.empty(0)
        if self.clv_booster is None:
            return np.full(len(X), np.nan)
        return np.asarray(self.clv_booster.predict(X), dtype=float) * self.margin_rate

    def churn_reductions(self, X: pd.DataFrame | np.ndarray, *, churn_probability: np.ndarray
                         ) -> dict[str, np.ndarray]:
        """Per outreach rule with an uplift model, the estimated churn reduction its action
        brings each row of a prepared matrix (empty without uplift models)."""
        return churn_reductions(self.uplift, X, churn_probability=churn_probability)

    def risk_tier(self, probability: np.ndarray) -> np.ndarray:
        """``low|medium|high`` from the cut points fixed at training."""
        return _cut(np.asarray(probability, dtype=float), self.risk_cuts,
                    ("low", "medium", "high"))

    def value_segment(self, clv: np.ndarray) -> np.ndarray:
        """``low|mid|high`` from the CLV percentiles fixed at training; None where CLV is null."""
        clv = np.asarray(clv, dtype=float)
        segments = _cut(clv, self.value_cuts, ("low", "mid", "high")) if self.value_cuts else (
            np.full(len(clv), None, dtype=object))
        segments[np.isnan(clv)] = None
        return segments

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """`score` of a feature frame (index customer_id) as a frame of the score columns."""
        scored = self.score(self.prepare_matrix(features), explain="none")
        return pd.DataFrame({name: getattr(scored, name) for name in SCORE_COLUMNS},
                            index=features.index)

    # -- explanations ---------------------------------------------------------------

    def feature_importance(self) -> pd.DataFrame:
        """Total gain per feature of both models, most important churn feature first."""
        frame = pd.DataFrame({
            "churn_gain": self.churn_booster.feature_importance("gain"),
            "clv_gain": (self.clv_booster.feature_importance("gain") if self.clv_booster
                         else np.full(len(self.feature_names), np.nan)),
        }, index=pd.Index(self.feature_names, name="feature"))
        return frame.sort_values("churn_gain", ascending=False)

    # -- storage ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything but the boosters, as JSON-ready values."""
        return _jsonable({
            "format_version": FORMAT_VERSION,
            "feature_names": self.feature_names,
            "categorical_levels": self.categorical_levels,
            "event_types": self.event_types,
            "feature_info": self.feature_info,
            "population_rule": self.population_rule,
            "calibration": self.calibration,
            "risk_cuts": self.risk_cuts,
            "value_cuts": self.value_cuts,
            "reference": self.reference,
            "horizon_days": self.horizon_days,
            "clv_horizon_days": self.clv_horizon_days,
            "definition": self.definition,
            "margin_rate": self.margin_rate,
            "metrics": self.metrics,
            "trained_at": self.trained_at,
            "as_of": self.as_of,
            "notes": self.notes,
            "drift_reference": self.drift_reference,
            "churn_definition": self.churn_definition,
            "lifecycle": self.lifecycle,
            "clv_note": self.clv_note,
            "business_season": self.business_season,
            "uplift": [model.spec() for model in self.uplift],
        })

    def save(self, directory: Path | str) -> Path:
        """Write ``churn_model.txt``, ``clv_model.txt`` and ``bundle.json`` to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.churn_booster.save_model(directory / CHURN_MODEL_FILE)
        if self.clv_booster is not None:
            self.clv_booster.save_model(directory / CLV_MODEL_FILE)
        for model in self.uplift:
            model.save(directory)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        (directory / BUNDLE_FILE).write_text(text + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> ChurnBundle:
        """Read a bundle written by `save`."""
        directory = Path(directory)
        spec_path = directory / BUNDLE_FILE
        if not spec_path.exists():
            raise FileNotFoundError(f"{spec_path} not found: not a churnlens model bundle")
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        if spec.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{spec_path}: bundle format {spec.get('format_version')} is not "
                             f"supported (expected {FORMAT_VERSION})")
        spec.pop("format_version")
        clv_file = directory / CLV_MODEL_FILE
        if not clv_file.exists() and not spec.get("clv_note"):
            raise FileNotFoundError(f"{clv_file} not found, and {spec_path} does not say why "
                                    "the bundle has no CLV model")
        spec["uplift"] = [RuleUplift.load(directory, part) for part in spec.get("uplift") or []]
        return cls(
            churn_booster=lgb.Booster(model_file=str(directory / CHURN_MODEL_FILE)),
            clv_booster=lgb.Booster(model_file=str(clv_file)) if clv_file.exists() else None,
            **spec,
        )

    def __repr__(self) -> str:
        return (f"ChurnBundle(definition={self.definition!r}, features={len(self.feature_names)},"
                f" horizon_days={self.horizon_days}, clv_horizon_days={self.clv_horizon_days})")
