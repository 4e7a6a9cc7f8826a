"""Why a bundle scores what it does: exact TreeSHAP contributions and top-k reasons.

The explanation half of `models.bundle.ChurnBundle`, kept apart so that the
bundle module reads as prediction and storage. `BundleExplanations` is mixed
into the bundle and works on its boosters, feature order, feature catalog and
reference statistics; it caches each feature's prepared sentence and the reason
layout, both left out when the bundle is pickled (Dask ships bundles to its
workers). Contributions come from the numba TreeSHAP in `models.contributions`
(LightGBM's ``pred_contrib`` is the tests' oracle); the sentence templates and
reason kinds come from the feature catalog through `models.explain`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.contributions import exact_contributions
from models.explain import companion_of, reason_kind, sentence_of
from models.prediction import SMALL_ROWS, PreparedMatrix
from models.reasons import ReasonTable, reason_table

if TYPE_CHECKING:
    import lightgbm as lgb

    from models.prediction import Explain, ScoreColumns


class BundleExplanations:
    """Churn and value reasons of a `models.bundle.ChurnBundle` (mixed into it)."""

    if TYPE_CHECKING:  # what the bundle provides
        churn_booster: lgb.Booster
        clv_booster: lgb.Booster | None
        feature_names: list[str]
        feature_info: dict[str, dict[str, Any]]
        reference: dict[str, dict[str, float]]
        _sentences: dict[tuple[str, str], Callable[..., str]]
        _layout: tuple[list[str], list[int]] | None

        def prepare_matrix(self, features: pd.DataFrame) -> PreparedMatrix: ...

        def score(self, prepared: PreparedMatrix,
                  rows: Sequence[int] | np.ndarray | None = None, *, explain: Explain = "all",
                  top_k: int = 5, value_reasons: bool = False,
                  uplift: bool = False) -> ScoreColumns: ...

    @property
    def reason_kinds(self) -> list[str]:
        """What each feature means as a reason, in feature order ("other" in older bundles)."""
        return [reason_kind(self.feature_info.get(name)) for name in self.feature_names]

    @property
    def reason_companions(self) -> list[int]:
        """Per feature, the position of the feature its sentence also reads (-1: none)."""
        position = {name: j for j, name in enumerate(self.feature_names)}
        return [position.get(companion_of(self.feature_info.get(name)) or "", -1)
                for name in self.feature_names]

    def _reason_layout(self) -> tuple[list[str], list[int]]:
        """`reason_kinds` and `reason_companions`, worked out once (scoring by id asks per row)."""
        if self._layout is None:
            self._layout = (self.reason_kinds, self.reason_companions)
        return self._layout

    def _contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Exact TreeSHAP of the churn model in log-odds, (n, n_features + 1); last = base."""
        if len(X) == 0:
            return np.empty((0, len(self.feature_names) + 1))
        # Same numbers as pred_contrib (to ~1e-12), tens of times faster: models/contributions.py
        return exact_contributions(self.churn_booster, X)

    def _clv_contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Exact TreeSHAP of the CLV model (log scale of the Tweedie mean); zeros without one."""
        if len(X) == 0 or self.clv_booster is None:
            return np.zeros((len(X), len(self.feature_names) + 1))
        return exact_contributions(self.clv_booster, X, n_threads=1 if len(X) <= SMALL_ROWS
                                   else None)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """Churn contributions per feature plus ``base_value`` (sums to the raw log-odds)."""
        prepared = self.prepare_matrix(features)
        return pd.DataFrame(self._contributions(prepared.matrix), index=features.index,
                            columns=[*self.feature_names, "base_value"])

    def _select(self, features: pd.DataFrame, rows: Iterable[Any] | None) -> pd.DataFrame:
        if rows is None:
            return features
        rows = list(rows)
        missing = [r for r in rows if r not in features.index]
        if missing:
            raise KeyError(f"customer(s) not in the feature frame: {missing[:5]}")
        return features.loc[rows]

    def _text_of(self, reference: str) -> Callable[..., str]:
        """``(feature, value[, companion]) -> sentence`` with the ``reference`` statistics.

        Each feature's sentence is prepared once per bundle (kept in a cache that
        pickling leaves out: Dask ships bundles to its workers).
        """
        cache = self._sentences
        typical = self.reference.get(reference, {})

        def text_of(name: str, value: Any, *companion: Any) -> str:
            render = cache.get((reference, name))
            if render is None:
                render = cache[(reference, name)] = sentence_of(
                    name, self.feature_info.get(name), typical)
            return render(value, *companion)

        return text_of

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sentences"] = {}  # prepared renderers hold lambdas and partials: rebuilt on use
        state["_layout"] = None
        return state

    def _reason_table(self, prepared: PreparedMatrix, at: np.ndarray, contributions: np.ndarray,
                      *, top_k: int, reference: str) -> ReasonTable:
        """Top-k reasons of rows ``at`` of ``prepared`` from their contributions."""
        names = self.feature_names
        kinds, companions = self._reason_layout()

        def column_values(j: int, rows: np.ndarray) -> np.ndarray:
            return prepared.column(names[j], at[rows])

        return reason_table(contributions, column_values, names=names,
                            text_of=self._text_of(reference), top_k=top_k,
                            kinds=kinds, companions=companions)

    def explain_table(self, features: pd.DataFrame, *, top_k: int = 5,
                      wanted: np.ndarray | None = None) -> ReasonTable:
        """Churn reasons of every row as a `ReasonTable` (what `explain` returns as dicts).

        Only rows in the churn population, and in ``wanted`` (a boolean mask) when
        given, are explained; the others get no reasons.
        """
        prepared = self.prepare_matrix(features)
        explained = prepared.population.copy()
        if wanted is not None:
            explained &= np.asarray(wanted, dtype=bool)
        every = np.arange(len(prepared))
        contributions = np.zeros((len(prepared), len(self.feature_names) + 1))
        if explained.any():
            contributions[explained] = self._contributions(prepared.matrix[explained])
        return self._reason_table(prepared, every, contributions, top_k=top_k,
                                  reference="retained_median")

    def explain(self, features: pd.DataFrame, *, top_k: int = 5,
                rows: Iterable[Any] | None = None) -> list[list[dict[str, Any]]]:
        """Top-k reasons toward churn per customer: ``{feature, value, contribution, text}``.

        ``rows`` are customer ids (index labels) to explain, in the order wanted;
        default all. Contributions are exact TreeSHAP values of the churn model in
        log-odds; only features that raise the risk are reasons. Customers
        outside the churn population get no reasons.
        """
        prepared = self.prepare_matrix(self._select(features, rows))
        return self.score(prepared, explain="all", top_k=top_k).reasons.rows()

    def explain_value(self, features: pd.DataFrame, *, top_k: int = 5,
                      rows: Iterable[Any] | None = None) -> list[list[dict[str, Any]]]:
        """Top-k features raising each customer's predicted CLV, same shape as `explain`."""
        prepared = self.prepare_matrix(self._select(features, rows))
        table = self.score(prepared, explain="none", top_k=top_k, value_reasons=True)
        assert table.value_reasons is not None
        return table.value_reasons.rows()
