"""How good a bundle is on held-out rows: the metrics the champion gate reads, and plots.

`evaluate_bundle` measures any bundle (the new one, the current champion) on
the same held-out training-set rows. The plots are PNG files for the MLflow
run: ROC, precision-recall, reliability (calibration), cumulative gains / lift,
CLV by predicted decile, SHAP summary and feature importance. Matplotlib's Agg
backend is selected when plotting starts, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.bundle import ChurnBundle
from training.metrics import churn_metrics, clv_metrics

PLOT_FILES = ("roc.png", "precision_recall.png", "calibration.png", "lift.png",
              "clv_deciles.png", "shap_summary.png", "feature_importance.png")
_MAX_SHAP_ROWS = 2000


def _features(rows: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return rows.set_index("customer_id").reindex(columns=names)


def labelled_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows in the churn population with a churn label (where churn is judged)."""
    return rows[rows["in_population"].astype(bool) & rows["churned"].notna()]


def holdout_metrics(*, churned: np.ndarray, churn_probability: np.ndarray,
                    clv: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """``churn_*`` metrics of probabilities against outcomes, ``clv_*`` of (actual, predicted)
    revenue when given."""
    metrics = {f"churn_{k}": v for k, v in churn_metrics(churned, churn_probability).items()}
    if clv is not None:
        metrics |= {f"clv_{k}": v for k, v in clv_metrics(*clv).items()}
    return metrics


def evaluate_bundle(bundle: ChurnBundle, *, holdout: pd.DataFrame, clv_holdout: pd.DataFrame
                    ) -> dict[str, float]:
    """Churn and CLV metrics of any bundle on held-out training-set rows.

    Churn is measured on the labelled population rows of ``holdout`` (truth
    from the labels); CLV on every row of ``clv_holdout`` with a CLV label, in
    revenue (before the margin rate), so bundles with different margin rates
    compare fairly.
    """
    labelled = labelled_rows(holdout)
    probability = bundle.churn_probability(
        bundle.prepare(_features(labelled, bundle.feature_names)))
    clv = None
    if bundle.has_clv:
        valued = clv_holdout[clv_holdout["clv_target"].notna()]
        predicted = bundle.clv(bundle.prepare(_features(valued, bundle.feature_names)))
        clv = (valued["clv_target"].to_numpy(float), predicted / bundle.margin_rate)
    return holdout_metrics(churned=labelled["churned"].to_numpy(float),
                           churn_probability=probability, clv=clv)


def write_plots(bundle: ChurnBundle, directory: Path | str, *, holdout: pd.DataFrame,
                clv_holdout: pd.DataFrame, seed: int = 0) -> list[Path]:
    """Draw every evaluation plot of ``bundle`` on held-out rows into ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labelled = labelled_rows(holdout)
    X = bundle.prepare(_features(labelled, bundle.feature_names))
    y = labelled["churned"].to_numpy(float)
    p = bundle.churn_probability(X)
    raw = bundle.churn_raw_probability(X)
    written: list[Path] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(directory / name, dpi=90)
        plt.close(fig)
        written.append(directory / name)

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label="churn model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (held out)")
    ax.legend()
    save(fig, "roc.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    precision, recall, _ = precision_recall_curve(y, p)
    ax.plot(recall, precision)
    ax.axhline(y.mean(), ls="--", color="grey", label=f"churn rate {y.mean():.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (held out)")
    ax.legend()
    save(fig, "precision_recall.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    for values, label in ((raw, "raw"), (p, "calibrated")):
        if label == "calibrated" and bundle.calibration.get("method", "none") == "none":
            continue
        observed, predicted = calibration_curve(y, values, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, "o-", label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate",
           title="Reliability (held out)")
    ax.legend()
    save(fig, "calibration.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    order = np.argsort(-p, kind="stable")
    share = np.arange(1, len(y) + 1) / len(y)
    gains = np.cumsum(y[order]) / max(y.sum(), 1)
    ax.plot(share, gains, label="model (cumulative gains)")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    lift = gains[max(int(0.1 * len(y)) - 1, 0)] / 0.1
    ax.set(xlabel="share of customers contacted (riskiest first)",
           ylabel="share of churners reached", title=f"Gains; top-decile lift {lift:.2f}")
    ax.legend()
    save(fig, "lift.png")

    if bundle.has_clv:
        _clv_decile_plot(bundle, clv_holdout, save)

    import shap

    sample = X
    if len(X) > _MAX_SHAP_ROWS:
        sample = X.sample(_MAX_SHAP_ROWS, random_state=seed)
    contributions = bundle._contributions(sample)[:, :-1]
    shown = sample.copy()
    for name in bundle.categorical_levels:
        shown[name] = shown[name].cat.codes.astype(float).where(shown[name].notna())
    plt.figure()
    shap.summary_plot(contributions, shown, show=False, max_display=15)
    fig = plt.gcf()
    fig.suptitle("SHAP: contributions to churn (log-odds)")
    save(fig, "shap_summary.png")

    importance = bundle.feature_importance().head(20)
    fig, axes = plt.subplots(1, 2, figsize=(10, 6), sharey=True)
    names = importance.index[::-1]
    axes[0].barh(names, importance["churn_gain"][::-1])
    axes[0].set(title="churn model (gain)")
    axes[1].barh(names, importance["clv_gain"][::-1].fillna(0.0), color="tab:orange")
    axes[1].set(title="CLV model (gain)" if bundle.has_clv else "no CLV model")
    save(fig, "feature_importance.png")
    return written


def _clv_decile_plot(bundle: ChurnBundle, clv_holdout: pd.DataFrame, save: Any) -> None:
    import matplotlib.pyplot as plt

    valued = clv_holdout[clv_holdout["clv_target"].notna()]
    predicted_clv = bundle.clv(bundle.prepare(_features(valued, bundle.feature_names)))
    predicted_clv = predicted_clv / bundle.margin_rate
    actual = valued["clv_target"].to_numpy(float)
    deciles = np.array_split(np.argsort(predicted_clv, kind="stable"), 10)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(1, 11)
    ax.bar(x - 0.2, [predicted_clv[d].sum() for d in deciles], width=0.4, label="predicted")
    ax.bar(x + 0.2, [actual[d].sum() for d in deciles], width=0.4, label="actual")
    ax.set(xlabel="predicted CLV decile (1 = lowest)", ylabel="total value",
           title="CLV by predicted decile (held out)")
    ax.legend()
    save(fig, "clv_deciles.png")
