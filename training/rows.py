"""Training-set rows as a booster reads them: features, one target, optional weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.snapshots import features_of


@dataclass(frozen=True)
class Labelled:
    """Rows a booster learns from or is checked on: features, one target, optional weights.

    Passed by keyword (``train=``, ``check=``), so the rows a model learns from
    and the rows it is early-stopped or judged on cannot be swapped by position.
    """

    features: pd.DataFrame
    target: np.ndarray
    weight: np.ndarray | None = None

    @classmethod
    def of(cls, rows: pd.DataFrame, label: str, *, weight: np.ndarray | None = None
           ) -> Labelled:
        """Training-set rows → features by customer and the ``label`` column as floats."""
        return cls(features_of(rows), rows[label].to_numpy(float), weight)

    def where(self, mask: np.ndarray) -> Labelled:
        """The rows where ``mask`` holds."""
        return Labelled(self.features[mask], self.target[mask],
                        None if self.weight is None else self.weight[mask])
