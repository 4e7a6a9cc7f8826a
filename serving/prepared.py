"""The served dataset in model-ready form, so scoring one customer by id takes about a millisecond.

`ChurnBundle.predict` and `explain` prepare a pandas frame per call (column
order, categorical levels, numeric coercion for every feature), which costs
far more than the trees for a single row. The API scores customers of a
read-only dataset as of one date, so the features, the prepared matrix and
the population are computed once per model version; a request then runs the
boosters on one row of a float matrix.

No skew: everything here is the bundle's own logic (its `prepare`,
calibration, cut points, population rule and reason sentences), only applied
once instead of per request, and exact TreeSHAP from `models.contributions`
(equal to LightGBM's ``pred_contrib``, several times faster per row);
`PreparedRows.verify` checks the result against
`ChurnBundle.predict`/`explain` on a sample before the API uses it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.contributions import exact_contributions

#: row sample checked against the bundle's own predict/explain at load time
VERIFY_ROWS = 256


def _feature_value(value: Any) -> Any:
    """A feature value as the bundle reports it: a Python scalar, missing as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class _RowFeatures(Mapping[str, Any]):
    """A row of a large frame seen as a mapping, without slicing the frame."""

    def __init__(self, frame: pd.DataFrame, columns: dict[str, int], position: int) -> None:
        self._frame = frame
        self._columns = columns
        self._position = position

    def __getitem__(self, name: str) -> Any:
        return _feature_value(self._frame.iat[self._position, self._columns[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


@dataclass(frozen=True)
class RowScore:
    """One customer's prediction; the fields of a score record, reasons as the bundle gives them."""

    customer_id: str
    churn_probability: float | None
    risk_tier: str
    clv: float | None
    value_segment: str | None
    value_at_risk: float | None
    reasons: list[dict[str, Any]]
    lifecycle_stage: str | None = None


def model_matrix(prepared: pd.DataFrame) -> np.ndarray:
    """A prepared frame as LightGBM sees it: float64, categories as codes, missing as NaN."""
    columns = []
    for name in prepared.columns:
        column = prepared[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy().astype("float64")
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(column.to_numpy(dtype="float64", na_value=np.nan))
    if not columns:
        return np.empty((len(prepared), 0))
    return np.ascontiguousarray(np.column_stack(columns))


class PreparedRows:
    """Features of one dataset, prepared once for one bundle; score rows by position."""

    def __init__(self, bundle: Any, features: pd.DataFrame) -> None:
        from models.bundle import apply_calibration

        self.bundle = bundle
        self.features = features
        self.matrix = model_matrix(bundle.prepare(features))
        self.population = bundle.in_population(features).to_numpy(dtype=bool)
        self.stages = bundle.lifecycle_stage(features)
        self.positions = {str(customer_id): i for i, customer_id in enumerate(features.index)}
        self._calibrate = apply_calibration
        self._names = list(bundle.feature_names)
        self._columns = {str(name): i for i, name in enumerate(features.columns)}
        self._column_of = [self._columns.get(name) for name in self._names]

    def __len__(self) -> int:
        return len(self.positions)

    def position_of(self, customer_id: str) -> int | None:
        return self.positions.get(customer_id)

    def row_features(self, position: int) -> Mapping[str, Any]:
        """One customer's features as a read-only mapping, read on access (for rules)."""
        return _RowFeatures(self.features, self._columns, position)

    def score(self, position: int, *, explain: bool, top_k: int) -> RowScore:
        """Score one row (single-threaded boosters: no OpenMP start-up for one row)."""
        bundle = self.bundle
        row = self.matrix[position : position + 1]
        in_population = bool(self.population[position])
        clv = segment = None
        if bundle.clv_booster is not None:
            clv = float(bundle.clv_booster.predict(row, num_threads=1)[0]) * bundle.margin_rate
            segment = str(bundle.value_segment(np.array([clv]))[0])
        probability = None
        tier = "not_applicable"
        reasons: list[dict[str, Any]] = []
        if in_population:
            raw = bundle.churn_booster.predict(row, num_threads=1)
            probability = float(self._calibrate(bundle.calibration, raw)[0])
            tier = str(bundle.risk_tier(np.array([probability]))[0])
            if explain:
                reasons = self._reasons(position, row, top_k=top_k)
        return RowScore(
            customer_id=str(self.features.index[position]),
            churn_probability=probability, risk_tier=tier, clv=clv, value_segment=segment,
            value_at_risk=None if probability is None or clv is None else probability * clv,
            reasons=reasons, lifecycle_stage=str(self.stages[position]),
        )

    def _reasons(self, position: int, row: np.ndarray, *, top_k: int) -> list[dict[str, Any]]:
        """The bundle's reasons for one row, reading only the values they need with ``iat``.

        Slicing a 100k-row frame per request costs milliseconds in pandas.
        """
        contributions = exact_contributions(self.bundle.churn_booster, row, n_threads=1)
        def value_of(_row: int, feature: int) -> Any:
            column = self._column_of[feature]
            return None if column is None else self.features.iat[position, column]

        return self.bundle.reasons_from(contributions, value_of, top_k=top_k)[0]

    def verify(self, *, rows: int = VERIFY_ROWS, top_k: int = 5) -> str | None:
        """Compare with the bundle's predict/explain on a sample; None if equal, else why not."""
        sample = np.unique(np.linspace(0, len(self) - 1, num=min(rows, len(self)), dtype=int))
        if len(sample) == 0:
            return None
        subset = self.features.iloc[sample]
        expected = self.bundle.predict(subset)
        explained = self.bundle.explain(subset, top_k=top_k)
        for i, position in enumerate(sample):
            got = self.score(int(position), explain=True, top_k=top_k)
            want = expected.iloc[i]
            if got.lifecycle_stage != want["lifecycle_stage"]:
                return f"row {position}: stage {got.lifecycle_stage} != {want['lifecycle_stage']}"
            if got.risk_tier != want["risk_tier"] or got.value_segment != want["value_segment"]:
                return f"row {position}: tier/segment {got.risk_tier}/{got.value_segment} " \
                       f"!= {want['risk_tier']}/{want['value_segment']}"
            for field in ("churn_probability", "clv"):
                mine, theirs = getattr(got, field), want[field]
                mine = math.nan if mine is None else mine
                if not (math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-12)
                        or (math.isnan(mine) and math.isnan(theirs))):
                    return f"row {position}: {field} {mine} != {theirs}"
            mine_reasons = [(r["feature"], r["value"], r["text"]) for r in got.reasons]
            their_reasons = [(r["feature"], r["value"], r["text"]) for r in explained[i]]
            if mine_reasons != their_reasons:
                return f"row {position}: reasons {mine_reasons} != {their_reasons}"
        return None
