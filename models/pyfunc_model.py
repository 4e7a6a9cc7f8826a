"""The churnlens MLflow pyfunc, logged with MLflow "models from code".

MLflow stores this file as the model's code and the bundle directory (LightGBM
text models + ``bundle.json``) as its artifact ``bundle``; nothing is pickled.
``mlflow.pyfunc.load_model("models:/churnlens@champion")`` runs this file, which
hands MLflow the model object through ``set_model`` (MLflow's models-from-code
contract; the bundle itself is read in ``load_context``, not at import).

``predict`` takes a feature frame (columns = the bundle's features, plus an
optional ``customer_id`` column) and returns ``customer_id`` and the score
columns; with ``params={"explain": True}`` it adds ``reasons_json`` and one
``contribution__<feature>`` column per feature plus ``contribution__base_value``.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.bundle import ChurnBundle

CONTRIBUTION_PREFIX = "contribution__"


class ChurnlensModel(PythonModel):
    """Scores feature frames with a `ChurnBundle` read from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        self.bundle = ChurnBundle.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        features = pd.DataFrame(model_input)
        if "customer_id" in features.columns:
            features = features.set_index("customer_id")
        elif features.index.name != "customer_id":
            features.index = features.index.astype(str).rename("customer_id")
        scores = self.bundle.predict(features)
        if params.get("explain"):
            top_k = int(params.get("top_k", 5))
            reasons = self.bundle.explain(features, top_k=top_k)
            scores["reasons_json"] = [json.dumps(r) for r in reasons]
            contributions = self.bundle.contributions(features).add_prefix(CONTRIBUTION_PREFIX)
            scores = scores.join(contributions)
        return scores.reset_index()


mlflow.models.set_model(ChurnlensModel())
