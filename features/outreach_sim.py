"""Simulated outreach with known, heterogeneous effects, applied to a generated world.

The generator (`features.generate`) simulates customers with nobody contacting
them. This module takes the actions churnlens recorded for that world (from the
outbox: customer, rule, action, as_of, treated or held out as control) and
rewrites what happened *after* each action as if the treated customers had been
contacted. Nothing before an action's date changes, so the scores and the
control assignment that produced the actions stay exactly valid.

The mechanism, per customer and action date T (traits read from the history
before T, as a retention team would see them):

- each treated action k has an effect size ``e_k``: the chance that it *saves*
  a customer who would otherwise churn within the horizon;

  =========================  ===========================================================
  ``success_call``           0.6 for high-value declining customers, 0 for lapsed ones,
                             0.15 otherwise
  ``win_back_offer``         0.5 for price-sensitive customers, 0.03 otherwise; every
                             treated customer's orders in the horizon carry a 15% discount
                             (margin wasted on those who would have stayed anyway)
  ``reactivation_email``     0.02 for everyone
  any other action           0.1
  =========================  ===========================================================

- a customer saved (probability ``1 − Π (1 − e_k)`` over their treated
  actions) who would have churned places one completed win-back order at their
  usual basket value inside the horizon, so they count as retained; a customer
  who would not have churned is unchanged (nothing to save).

Hence, exactly, with ``Y0`` the untreated churn label of the customer (from the
untouched world; NaN, like the truths, for customers outside the definition's
population): P(churn | treated as assigned) = ``Y0 · Π (1 − e_k)``, and the
true effect of one rule on one customer is ``Y0 · Π_{other treated}(1 − e) · e_rule``.
`simulate_outreach` returns these truths per action (``true_churn_reduction``,
``true_revenue_gain``) beside the rewritten tables. Labels follow the
inactivity definition (a completed order in the horizon = retained), which the
win-back order settles for the activity definition too.

Traits: *lapsed* = no completed order in the 90 days before T; *declining* =
fewer completed orders in those 90 days than in the 90 before; *high value* =
completed revenue in the 365 days before T in the top quarter of the
customers with any; *price sensitive* = at least 40% of at least two completed
orders bought with a discount.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.dataset import Dataset
from features.history import History
from features.labels import labels_at

DISCOUNT = 0.15
#: effect sizes (see the module doc)
CALL_SAVES_DECLINING_VALUABLE = 0.6
CALL_SAVES_OTHERS = 0.15
OFFER_SAVES_PRICE_SENSITIVE = 0.5
OFFER_SAVES_OTHERS = 0.03
EMAIL_SAVES = 0.02
OTHER_SAVES = 0.1
TRUTH_COLUMNS = ["customer_id", "rule", "action", "as_of", "assignment", "effect_size",
                 "lapsed", "declining", "high_value", "price_sensitive",
                 "untreated_churned", "untreated_revenue", "saved",
                 "true_churn_reduction", "true_revenue_gain"]


@dataclass(frozen=True)
class OutreachWorld:
    """The rewritten orders (the only table outreach changes) and one truth row per action."""

    orders: pd.DataFrame
    truth: pd.DataFrame


def customer_traits(orders: pd.DataFrame, customers: pd.Index, as_of: pd.Timestamp
                    ) -> pd.DataFrame:
    """Lapsed, declining, high value, price sensitive and usual basket, from orders before T."""
    done = orders[(orders["status"] == "completed") & (orders["ordered_at"] < as_of)]
    by = done.groupby("customer_id")
    days = (as_of - done["ordered_at"]).dt.days
    recent = done[days < 90].groupby("customer_id").size()
    before = done[(days >= 90) & (days < 180)].groupby("customer_id").size()
    year_value = done[days < 365].groupby("customer_id")["amount"].sum()
    discounted = (done["discount"].fillna(0) > 0).groupby(done["customer_id"]).mean()
    frame = pd.DataFrame(index=customers)
    frame["orders"] = by.size().reindex(customers).fillna(0)
    frame["recent"] = recent.reindex(customers).fillna(0)
    frame["before"] = before.reindex(customers).fillna(0)
    value = year_value.reindex(customers).fillna(0)
    cut = float(np.quantile(year_value, 0.75)) if len(year_value) else np.inf
    frame["lapsed"] = (frame["orders"] > 0) & (frame["recent"] == 0)
    frame["declining"] = ~frame["lapsed"] & (frame["recent"] < frame["before"])
    frame["high_value"] = value >= cut
    frame["price_sensitive"] = (frame["orders"] >= 2) & (
        discounted.reindex(customers).fillna(0) >= 0.4)
    frame["basket"] = by["amount"].median().reindex(customers).fillna(50.0)
    return frame


def effect_size(action: str, traits: pd.DataFrame) -> np.ndarray:
    """The chance that one treated action saves each customer who would churn."""
    n = len(traits)
    if action == "success_call":
        return np.where(traits["lapsed"], 0.0,
                        np.where(traits["high_value"] & traits["declining"],
                                 CALL_SAVES_DECLINING_VALUABLE, CALL_SAVES_OTHERS))
    if action == "win_back_offer":
        return np.where(traits["price_sensitive"], OFFER_SAVES_PRICE_SENSITIVE,
                        OFFER_SAVES_OTHERS)
    if action == "reactivation_email":
        return np.full(n, EMAIL_SAVES)
    return np.full(n, OTHER_SAVES)


def _true_effects(rows: pd.DataFrame, treated: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each row's rule switched on against off, the customer's other actions as assigned.

    Churn reduction ``Y0 · P_other · e``; revenue gain from the win-back order
    of a saved churner (× 0.85 under a discount) and the discount itself.
    """
    keep = (1 - rows["effect_size"]).where(treated, 1.0)
    total = keep.groupby(rows["customer_id"]).transform("prod")
    others = total / keep  # effect sizes stay below 1, so keep > 0
    offer = rows["action"] == "win_back_offer"
    offered_by_other = ((treated & offer).astype(int).groupby(rows["customer_id"]).transform(
        "sum") - (treated & offer).astype(int)) > 0
    y0, base, basket = rows["untreated_churned"], rows["untreated_revenue"], rows["basket"]
    e = rows["effect_size"]
    reduction = y0 * others * e
    factor_off = np.where(offered_by_other, 1 - DISCOUNT, 1.0)
    factor_on = np.where(offered_by_other | offer, 1 - DISCOUNT, 1.0)
    revenue_on = factor_on * (base + (1 - others * (1 - e)) * y0 * basket)
    revenue_off = factor_off * (base + (1 - others) * y0 * basket)
    return reduction.to_numpy(float), (revenue_on - revenue_off).to_numpy(float)


def simulate_outreach(dataset: Dataset, actions: pd.DataFrame, *, seed: int,
                      horizon_days: int = 90) -> OutreachWorld:
    """Apply ``actions`` (outbox rows) to the untouched generated ``dataset`` (module doc)."""
    if dataset.orders is None:
        raise ValueError("outreach simulation needs an orders table")
    orders = dataset.orders.copy()
    history = History(dataset)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 424_242]))
    parts: list[pd.DataFrame] = []
    added: list[pd.DataFrame] = []
    horizon = pd.Timedelta(days=horizon_days)
    for moment, rows in actions.sort_values(["as_of", "customer_id", "rule"]).groupby(
            "as_of", sort=True):
        t = pd.Timestamp(str(moment))
        rows = rows.reset_index(drop=True)
        ids = pd.Index(rows["customer_id"].astype(str).unique())
        traits = customer_traits(dataset.orders, ids, t)
        labels = labels_at(history, as_of=t, horizon_days=horizon_days,
                           clv_horizon_days=horizon_days, definition="inactivity")
        rows = rows.join(traits, on="customer_id")
        rows["effect_size"] = 0.0
        for action, where in rows.groupby("action").groups.items():
            rows.loc[where, "effect_size"] = effect_size(str(action), rows.loc[where])
        # NaN outside the definition's population (no completed order before T): no
        # churn to prevent, and no outcome for effect measurement either
        rows["untreated_churned"] = labels["churned"].reindex(rows["customer_id"]).to_numpy()
        rows["untreated_revenue"] = labels["clv_target"].reindex(rows["customer_id"]).fillna(
            0).to_numpy()
        treated = rows["assignment"] == "treated"
        # the truth of each rule: its own action switched on against off, others as assigned
        rows["true_churn_reduction"], rows["true_revenue_gain"] = _true_effects(
            rows.assign(untreated_churned=rows["untreated_churned"].fillna(0)), treated)
        outside = rows["untreated_churned"].isna()
        rows.loc[outside, ["true_churn_reduction", "true_revenue_gain"]] = np.nan
        # what happens: one draw per customer with the actions as actually assigned
        keep = (1 - rows["effect_size"]).where(treated, 1.0)
        per_customer = pd.DataFrame({
            "survive": keep.groupby(rows["customer_id"]).prod(),
            "churned": rows.groupby("customer_id")["untreated_churned"].first().fillna(0),
            "basket": rows.groupby("customer_id")["basket"].first(),
            "offered": (treated & (rows["action"] == "win_back_offer")).groupby(
                rows["customer_id"]).any(),
        })
        draw = rng.random(len(per_customer))
        per_customer["saved"] = (per_customer["churned"] == 1) & (
            draw < 1 - per_customer["survive"])
        rows["saved"] = per_customer["saved"].reindex(rows["customer_id"]).to_numpy()
        saved = per_customer[per_customer["saved"]]
        if len(saved):
            when = t + pd.to_timedelta(rng.random(len(saved)) * horizon_days * 0.5, unit="D")
            added.append(pd.DataFrame({
                "order_id": [f"WINBACK-{c}-{t.date()}" for c in saved.index],
                "customer_id": saved.index.astype(str), "ordered_at": when.floor("s"),
                "amount": saved["basket"].round(2).to_numpy(), "status": "completed",
            }))
        offered = per_customer.index[per_customer["offered"]]
        window = (orders["customer_id"].isin(offered) & (orders["ordered_at"] >= t)
                  & (orders["ordered_at"] < t + horizon))
        if "discount" not in orders:
            orders["discount"] = 0.0
        cut = (orders.loc[window, "amount"] * DISCOUNT).round(2)
        orders.loc[window, "amount"] = orders.loc[window, "amount"] - cut
        orders.loc[window, "discount"] = orders.loc[window, "discount"].fillna(0) + cut
        if len(saved):
            offered_saved = added[-1]["customer_id"].isin(offered)
            cut_new = (added[-1].loc[offered_saved, "amount"] * DISCOUNT).round(2)
            added[-1].loc[offered_saved, "amount"] -= cut_new
            added[-1]["discount"] = 0.0
            added[-1].loc[offered_saved, "discount"] = cut_new
        parts.append(rows)
    if added:
        extra = pd.concat(added, ignore_index=True)
        for column in orders.columns:
            if column not in extra:
                extra[column] = 1 if column == "items" else np.nan
        orders = pd.concat([orders, extra[orders.columns]], ignore_index=True)
        orders = orders.sort_values(["ordered_at", "order_id"], kind="stable").reset_index(
            drop=True)
    truth = (pd.concat(parts, ignore_index=True)[TRUTH_COLUMNS] if parts
             else pd.DataFrame(columns=TRUTH_COLUMNS))
    return OutreachWorld(orders=orders, truth=truth)
