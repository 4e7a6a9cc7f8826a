"""The prediction contract: a prepared matrix in, the columns of the score record out.

`ChurnBundle.prepare_matrix` turns a feature frame into a `PreparedMatrix`
once (the model's column order and categorical levels as a float matrix, the
population, the lifecycle stages, the raw values reasons and rules read), and
`ChurnBundle.score` turns any rows of it into `ScoreColumns`: one customer by
id or a million in a batch go through the same code, so the API, batch
scoring and the live path cannot disagree. Values are clamped here, once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.reasons import ReasonTable

#: which customers get reasons: everyone in the population, the medium and high tiers, none
Explain = Literal["all", "at-risk", "none"]
EXPLAIN_CHOICES: tuple[str, ...] = ("all", "at-risk", "none")
#: tiers that count as "at risk" for ``explain="at-risk"``
AT_RISK_TIERS = frozenset({"high", "medium"})
#: up to this many rows, boosters and TreeSHAP run on one thread: starting OpenMP's
#: threads costs more than a handful of rows' trees (and widens the by-id latency tail)
SMALL_ROWS = 16


def check_explain(explain: str) -> None:
    """Raise a ValueError naming the choices unless ``explain`` is one of them."""
    if explain not in EXPLAIN_CHOICES:
        raise ValueError(f"explain must be one of {', '.join(EXPLAIN_CHOICES)}, "
                         f"not {explain!r}")


def model_matrix(prepared: pd.DataFrame) -> np.ndarray:
    """A prepared frame as LightGBM reads it: float64, categories as codes, missing as NaN."""
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


def feature_value(value: Any) -> Any:
    """A raw feature value as rules read it: a Python scalar, missing as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class _RowFeatures(Mapping[str, Any]):
    """One row of a large frame seen as a mapping, read on access (no slicing per request)."""

    def __init__(self, frame: pd.DataFrame, columns: Mapping[str, int], position: int) -> None:
        self._frame = frame
        self._columns = columns
        self._position = position

    def __getitem__(self, name: str) -> Any:
        return feature_value(self._frame.iat[self._position, self._columns[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


@dataclass(frozen=True, eq=False)
class PreparedMatrix:
    """Customers' features in the form the bundle scores, prepared once (`prepare_matrix`).

    ``matrix`` holds the model's features in its order (float64, categories as
    the bundle's level codes); ``features`` the raw values, business-season
    inputs included, that reason sentences and rules read.
    """

    customer_ids: np.ndarray
    matrix: np.ndarray
    population: np.ndarray
    lifecycle_stage: np.ndarray
    features: pd.DataFrame

    def __len__(self) -> int:
        return len(self.customer_ids)

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """Row position of each customer id."""
        return {customer_id: i for i, customer_id in enumerate(self.customer_ids.tolist())}

    def position_of(self, customer_id: str) -> int | None:
        return self.positions.get(customer_id)

    @functools.cached_property
    def _columns(self) -> dict[str, int]:
        return {str(name): j for j, name in enumerate(self.features.columns)}

    @functools.cached_property
    def _values(self) -> dict[str, np.ndarray]:
        return {}

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Raw values of feature ``name`` at row positions ``rows`` (None where it is absent).

        Each column is converted to numpy once: a request by id reads a few values.
        """
        values = self._values.get(name)
        if values is None:
            j = self._columns.get(name)
            if j is None:
                return np.full(len(rows), None, dtype=object)
            values = self._values[name] = self.features.iloc[:, j].to_numpy()
        return values[rows]

    def row_features(self, position: int) -> Mapping[str, Any]:
        """One customer's raw features as a read-only mapping (for rules)."""
        return _RowFeatures(self.features, self._columns, position)


@dataclass(frozen=True, eq=False)
class ScoreColumns:
    """The score record's columns for some rows of a `PreparedMatrix` (`ChurnBundle.score`).

    Clamped as the record requires: the churn probability within [0, 1] (NaN
    outside the population), CLV at least 0 (NaN for every row when the bundle
    has no CLV model), value at risk at least 0. ``reasons`` holds the churn
    reasons of the rows explained (none for the others), ``value_reasons`` the
    features raising CLV when asked for, ``churn_reductions`` each uplift
    model's estimated churn reduction when asked for.
    """

    rows: np.ndarray
    customer_id: np.ndarray
    in_population: np.ndarray
    churn_probability: np.ndarray
    risk_tier: np.ndarray
    clv: np.ndarray
    value_segment: np.ndarray
    value_at_risk: np.ndarray
    lifecycle_stage: np.ndarray
    reasons: ReasonTable
    value_reasons: ReasonTable | None = None
    churn_reductions: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)
