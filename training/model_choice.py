"""Choices made on the held-out snapshot before the cut-off: tree size and CLV model form.

Everything here is decided from data the model may see (the latest training
snapshot, held out by time), never from what happens after the cut-off, so a
backtest judges the same procedure ``churnlens train`` runs.

- Tree size: LightGBM's defaults (15 leaves, 20 rows per leaf) overfit small
  data (Online Retail's 3-4k customers per snapshot). Each candidate size in
  ``TrainParams.tree_sizes`` fits a churn model; the best held-out churn ROC AUC
  replaces the defaults only when it beats them by more than
  ``tree_size_min_gain`` (an AUC difference smaller than that is noise on a
  few thousand rows). Both models use the chosen size.
- CLV form: a Tweedie regression of spend, or a hurdle (zero-inflated) model
  P(any purchase) × E[spend | purchase] from two boosters; the hurdle is kept
  when it ranks the held-out snapshot's spend better (normalized Gini). Both
  halves use a log link (Poisson on the purchase indicator, Gamma on the spend
  of buyers), so their trees add up to one LightGBM model that predicts the
  product: the bundle, the pyfunc and TreeSHAP see a single booster.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.metrics import normalized_gini
from training.rows import Labelled

#: ``(num_leaves, min_data_in_leaf)``
TreeSize = tuple[int, int]
Chosen = TypeVar("Chosen")
#: trains a booster: (extra LightGBM params, train=rows, check=rows) -> booster
Trainer = Callable[..., lgb.Booster]


@dataclass
class Choice(Generic[Chosen]):
    """What was chosen, the figures it was chosen on, and a sentence for the run's notes."""

    value: Chosen
    report: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _size_key(size: TreeSize) -> str:
    return f"{size[0]}l{size[1]}m"


def choose_tree_size(auc_of: Callable[[TreeSize], float], default: TreeSize,
                     candidates: tuple[TreeSize, ...], *, min_gain: float) -> Choice[TreeSize]:
    """The tree size whose churn model has the best held-out ROC AUC, if it beats the default.

    ``auc_of`` fits a churn model of a given size and returns its held-out AUC.
    The default stays unless the best candidate beats it by more than ``min_gain``.
    """
    default = (default[0], default[1])
    others = tuple(dict.fromkeys((c[0], c[1]) for c in candidates if tuple(c) != default))
    if not others:
        return Choice(default)
    scores = {size: auc_of(size) for size in (default, *others)}
    report = {f"tree_size_auc_{_size_key(s)}": v for s, v in scores.items()}
    best = max(others, key=lambda s: (scores[s], -s[0]))
    chosen = best if scores[best] - scores[default] > min_gain else default
    report |= {"tree_num_leaves": float(chosen[0]), "tree_min_data_in_leaf": float(chosen[1])}
    figures = ", ".join(f"{s[0]} leaves/{s[1]} rows {v:.3f}" for s, v in scores.items())
    verdict = ("chosen" if chosen != default else
               f"defaults kept (no size better by more than {min_gain})")
    note = (f"tree size {chosen[0]} leaves, at least {chosen[1]} rows per leaf, {verdict}; "
            f"held-out churn ROC AUC by size: {figures}")
    return Choice(chosen, report, note)


# -- hurdle CLV ------------------------------------------------------------------------

_TREE_HEADER = re.compile(r"^Tree=(\d+)$", re.MULTILINE)


def _split_model(text: str) -> tuple[str, list[str], str]:
    """(header, tree blocks, footer) of a LightGBM model string."""
    start = text.index("\nTree=") + 1
    end = text.index("end of trees")
    header, body, footer = text[:start], text[start:end], text[end:]
    blocks = [b.strip("\n") for b in re.split(r"(?m)^(?=Tree=\d+$)", body) if b.strip()]
    return header, blocks, footer


def _weighted_trees(booster: lgb.Booster, weight: float) -> list[str]:
    """The tree blocks of a booster with every leaf value multiplied by ``weight``."""
    if weight != 1.0:
        booster = lgb.Booster(model_str=booster.model_to_string())
        for tree, info in enumerate(booster.dump_model()["tree_info"]):
            for leaf in range(info["num_leaves"]):
                booster.set_leaf_output(tree, leaf, booster.get_leaf_output(tree, leaf) * weight)
    return _split_model(booster.model_to_string())[1]


def combine_log_link_boosters(boosters: list[lgb.Booster], weights: list[float]) -> lgb.Booster:
    """One booster whose raw score is Σ wᵢ·fᵢ, the weighted sum of log-link raw scores.

    All must use the same features in the same order; the result keeps the last
    booster's objective (its output transform). TreeSHAP of the result is the
    same weighted sum of the boosters' contributions, so explanations still add up.
    """
    if not boosters or len(boosters) != len(weights):
        raise ValueError("give one weight per booster, and at least one booster")
    names = boosters[0].feature_name()
    if any(b.feature_name() != names for b in boosters[1:]):
        raise ValueError("the boosters must be trained on the same features")
    header, _, footer = _split_model(boosters[-1].model_to_string())
    header = re.sub(r"(?m)^tree_sizes=.*\n", "", header)
    trees = [t for b, w in zip(boosters, weights, strict=True) for t in _weighted_trees(b, w)]
    renumbered = [_TREE_HEADER.sub(f"Tree={i}", block, count=1) for i, block in enumerate(trees)]
    text = header + "".join(block + "\n\n\n" for block in renumbered) + footer
    # a round trip through LightGBM rewrites tree sizes and importances consistently
    return lgb.Booster(model_str=lgb.Booster(model_str=text).model_to_string())


def scale_booster(booster: lgb.Booster, factor: float, *, power: float = 1.0) -> lgb.Booster:
    """A copy of a log-link booster (Tweedie) predicting ``factor × prediction ** power``.

    Multiplying every leaf by ``power`` multiplies the score, and every row
    passes through exactly one leaf of the first tree, so adding log(factor)
    to its leaves multiplies exp(score) by ``factor``; TreeSHAP contributions
    still add up (they are scaled by ``power``, the base value moves too).
    """
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"scale factor must be positive and finite, not {factor}")
    if not (power > 0 and math.isfinite(power)):
        raise ValueError(f"power must be positive and finite, not {power}")
    scaled = lgb.Booster(model_str=booster.model_to_string())
    shift = math.log(factor)
    trees = scaled.dump_model()["tree_info"]
    for tree, info in enumerate(trees if power != 1.0 else trees[:1]):
        for leaf in range(info["num_leaves"]):
            value = scaled.get_leaf_output(tree, leaf) * power + (shift if tree == 0 else 0.0)
            scaled.set_leaf_output(tree, leaf, value)
    return lgb.Booster(model_str=scaled.model_to_string())


def add_log_link_boosters(first: lgb.Booster, second: lgb.Booster) -> lgb.Booster:
    """One booster whose raw score is the sum of two log-link boosters' raw scores.

    With a log link, exp(f₁ + f₂) = exp(f₁) · exp(f₂): the result predicts the
    product of the two predictions. The result keeps ``second``'s objective.
    """
    return combine_log_link_boosters([first, second], [1.0, 1.0])


def average_log_link_boosters(boosters: list[lgb.Booster]) -> lgb.Booster:
    """One booster predicting exp(mean of the raw scores): a seed average in the link space.

    The geometric mean of the boosters' predictions; its TreeSHAP values are the
    mean of theirs. A single booster is returned unchanged.
    """
    if len(boosters) == 1:
        return boosters[0]
    return combine_log_link_boosters(boosters, [1.0 / len(boosters)] * len(boosters))


def fit_hurdle(train_with: Trainer, *, train: Labelled, check: Labelled) -> lgb.Booster | None:
    """P(any purchase) × E[spend | purchase] as one booster; None when too few buyers.

    ``train_with(extra, train=, check=)`` fits one booster (the training rows'
    weights, if any, go with them).
    """
    bought, bought_val = train.target > 0, check.target > 0
    if bought.sum() < 2 or bought_val.sum() < 2 or bought.all():
        return None
    purchase = train_with({"objective": "poisson", "metric": "poisson"},
                          train=replace(train, target=bought.astype(float)),
                          check=replace(check, target=bought_val.astype(float)))
    spend = train_with({"objective": "gamma", "metric": "gamma"},
                       train=train.where(bought), check=check.where(bought_val))
    return add_log_link_boosters(purchase, spend)


def choose_clv_form(tweedie: lgb.Booster, hurdle: lgb.Booster | None, X_val: pd.DataFrame,
                    y_val: np.ndarray, *, form: str = "auto") -> Choice[lgb.Booster]:
    """Keep the hurdle model when it ranks held-out spend better (normalized Gini), or if asked."""
    if hurdle is None:
        return Choice(tweedie, {"clv_hurdle": 0.0},
                      "CLV: Tweedie regression (too few buyers for a hurdle model)"
                      if form != "tweedie" else "")
    gini = {"tweedie": normalized_gini(y_val, tweedie.predict(X_val)),
            "hurdle": normalized_gini(y_val, hurdle.predict(X_val))}
    use_hurdle = form == "hurdle" or (form == "auto" and gini["hurdle"] > gini["tweedie"])
    report = {"clv_gini_tweedie": gini["tweedie"], "clv_gini_hurdle": gini["hurdle"],
              "clv_hurdle": float(use_hurdle)}
    name = ("hurdle: P(any purchase) × E(spend | purchase)" if use_hurdle
            else "Tweedie regression")
    return Choice(hurdle if use_hurdle else tweedie, report,
                  f"CLV model: {name} (held-out normalized Gini: Tweedie "
                  f"{gini['tweedie']:.3f}, hurdle {gini['hurdle']:.3f})")
