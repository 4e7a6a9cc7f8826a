"""Reference models the backtest measures churnlens against (docs/backtest.md).

- BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way") for
  who is still buying, and the Gamma-Gamma spend model (Fader, Hardie & Lee
  2005, "RFM and CLV") for how much: the standard "buy till you die" pair,
  fitted here by maximum likelihood with scipy. Own implementation because
  ``lifetimes`` does not run on pandas 3 / numpy 2; it reproduces the published
  CDNOW estimates (see tests/test_reference_models.py) and follows lifetimes
  0.11.3's conventions (time scaling, penalizer) so that its figures compare with
  the reference figures of the standard splits (docs/backtest.md).
- A recency-only churn ranking and a spend × frequency / recency value
  heuristic: what a CRM analyst would do without any model.

Everything works on a per-customer purchase summary as of an explicit date,
built by `purchase_summary` from completed orders strictly before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import optimize, special

from models.errors import NotFittedError

#: the time unit of the BG/NBD literature on CDNOW: weeks
WEEK_DAYS = 7.0


def purchase_summary(
    orders: pd.DataFrame, *, as_of: pd.Timestamp, period: str = "day"
) -> pd.DataFrame:
    """Per-customer frequency, recency, age and average spend as of ``as_of``.

    Uses completed orders strictly before ``as_of``. Purchases are counted per
    ``period``: ``"day"`` (several orders on one day are one transaction, their
    amounts summed; Fader, Hardie & Lee's CDNOW convention) or ``"week"``
    (calendar weeks, as lifetimes' ``summary_data_from_transaction_data(freq="W")``).
    Time is in weeks either way. With ``d`` the customer's purchase periods and
    ``end`` the period of the last calendar day before ``as_of``:

    - ``frequency``: repeat purchase periods (``len(d) - 1``);
    - ``recency``: first to last purchase period, in weeks;
    - ``T``: first purchase period to ``end``, in weeks;
    - ``monetary_value``: mean spend of the repeat purchase days (0 without any),
      the Gamma-Gamma convention;
    - ``total_spend``, ``days_since_last``: for the simple heuristics.

    Index: ``customer_id``, one row per customer with a completed order.
    """
    if period not in ("day", "week"):
        raise ValueError(f"period must be 'day' or 'week', not {period!r}")
    as_of = pd.Timestamp(as_of)
    frame = orders
    if "status" in frame.columns:
        frame = frame[frame["status"] == "completed"]
    frame = frame[frame["ordered_at"] < as_of]
    columns = ["frequency", "recency", "T", "monetary_value", "total_spend", "days_since_last"]
    if frame.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="customer_id"), dtype=float)
    last_day = (as_of - pd.Timedelta(microseconds=1)).normalize()
    end = _period_start(pd.Series([last_day]), period).iloc[0]
    daily = (
        frame.assign(day=_period_start(frame["ordered_at"], period))
        .groupby(["customer_id", "day"], sort=True)
        .agg(amount=("amount", "sum"), last_order=("ordered_at", "max"))
        .reset_index()
    )
    grouped = daily.groupby("customer_id", sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    days = grouped["day"].size()
    total = grouped["amount"].sum()
    first_amount = grouped["amount"].first()
    frequency = (days - 1).astype(float)
    repeat_spend = total - first_amount
    monetary = (repeat_spend / frequency.where(frequency > 0)).fillna(0.0)
    day = pd.Timedelta(days=1)
    summary = pd.DataFrame(
        {
            "frequency": frequency,
            # pandas-stubs type a datetime Series minus another as Series[Any]
            "recency": (last - first) / day / WEEK_DAYS,  # type: ignore[operator]
            "T": (end - first) / day / WEEK_DAYS,
            "monetary_value": monetary.astype(float),
            "total_spend": total.astype(float),
            "days_since_last": ((last_day - grouped["last_order"].max().dt.normalize())
                                / day).astype(float),
        }
    )
    summary.index.name = "customer_id"
    return summary


def _period_start(stamps: pd.Series, period: str) -> pd.Series:
    """The day, or the Monday of the (Mon-Sun) week, each timestamp falls in."""
    days = stamps.dt.normalize()
    if period == "week":
        return days - pd.to_timedelta(days.dt.dayofweek, unit="D")
    return days


def _check_rft(frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> None:
    if np.any(frequency < 0):
        raise ValueError("Some values in frequency vector are negative")
    if np.any(recency > T + 1e-9):
        raise ValueError("Some values in recency vector are larger than T vector")
    if np.any((frequency == 0) & (recency != 0)):
        raise ValueError("There exist non-zero recency values when frequency is zero")


def _minimize(
    objective: Callable[[np.ndarray], float], start: np.ndarray
) -> optimize.OptimizeResult:
    """Nelder-Mead to get close, then BFGS to polish: robust on flat likelihoods."""
    first = optimize.minimize(objective, start, method="Nelder-Mead",
                              options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-10})
    second = optimize.minimize(objective, first.x, method="BFGS", options={"gtol": 1e-7})
    return second if np.isfinite(second.fun) and second.fun <= first.fun else first


@dataclass
class BetaGeoModel:
    """BG/NBD: Poisson purchasing at rate λ ~ Gamma(r, α), dropping out after
    each purchase with probability p ~ Beta(a, b).

    ``penalizer`` adds ``penalizer × Σ params²`` to the mean negative
    log-likelihood (on time scaled so that max T = 10), exactly as lifetimes
    0.11.3 does; 0 gives the plain maximum-likelihood estimate.
    """

    penalizer: float = 0.0

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> BetaGeoModel:
        """Fit by maximum likelihood on (frequency, recency, T) of calibration data."""
        x, tx, t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        _check_rft(x, tx, t)
        if len(x) == 0 or not np.any(x > 0):
            raise ValueError("BG/NBD needs customers with at least one repeat purchase")
        scale = 10.0 / t.max()
        tx_s, t_s = tx * scale, t * scale

        def objective(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            value = -np.mean(self._log_likelihood(params, x, tx_s, t_s))
            value += self.penalizer * float(np.sum(params**2))
            return value if np.isfinite(value) else 1e100

        result = _minimize(objective, np.zeros(4))
        r, alpha, a, b = np.exp(result.x)
        self.params_ = {"r": r, "alpha": alpha / scale, "a": a, "b": b}
        self.log_likelihood_ = float(np.sum(self._log_likelihood(
            np.array([r, alpha / scale, a, b]), x, tx, t)))
        self.converged_ = bool(result.success)
        return self

    @staticmethod
    def _log_likelihood(params: np.ndarray, x: np.ndarray, tx: np.ndarray,
                        t: np.ndarray) -> np.ndarray:
        """Per-customer log-likelihood, FHL (2005) eq. 6, computed in logs."""
        r, alpha, a, b = params
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = (special.gammaln(a + b) + special.gammaln(b + x)
              - special.gammaln(b) - special.gammaln(a + b + x))
        a3 = -(r + x) * np.log(alpha + t)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(
                x > 0,
                np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx),
                -np.inf,
            )
        return a1 + a2 + np.logaddexp(a3, a4)

    def _params(self) -> tuple[float, float, float, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError("BetaGeoModel is not fitted yet; call fit() first")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def _alive_odds_term(self, x: np.ndarray, tx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """δ(x>0)·a/(b+x−1)·((α+T)/(α+t_x))^(r+x): odds of having died vs alive."""
        r, alpha, a, b = self._params()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_term = (np.log(a) - np.log(np.maximum(b + x - 1, 1e-300))
                        + (r + x) * (np.log(alpha + t) - np.log(alpha + tx)))
        return np.where(x > 0, np.exp(log_term), 0.0)

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """P(still alive at T | x, t_x, T), FHL (2005) eq. 11."""
        x, tx, t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        return 1.0 / (1.0 + self._alive_odds_term(x, tx, t))

    def conditional_expected_purchases(
        self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """E[purchases in (T, T+t] | x, t_x, T], FHL (2005) eq. 10."""
        r, alpha, a, b = self._params()
        x, tx, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        alive_odds = self._alive_odds_term(x, tx, big_t)
        with np.errstate(all="ignore"):
            hyper = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + big_t + t))
            first = (a + b + x - 1) / (a - 1)
            second = 1.0 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyper
            expected = first * second / (1.0 + alive_odds)
        # Degenerate fits (a, b → 0, as on Online Retail) make the Gauss series
        # diverge where lifetimes returns NaN; there, fall back to purchases of a
        # customer who stays alive through the window: P(alive)·E[λ]·t.
        bad = ~np.isfinite(expected) | (expected < 0)
        if np.any(bad):
            fallback = (r + x) / (alpha + big_t) * t / (1.0 + alive_odds)
            expected = np.where(bad, fallback, expected)
        return expected

    def probability_no_purchase(
        self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """P(no purchase in (T, T+t] | x, t_x, T): the BG/NBD churn probability.

        A customer makes no purchase in the window either because they are dead
        already, or because they are alive (posterior λ ~ Gamma(r+x, α+T)) and
        their Poisson clock does not tick in t: under BG/NBD dropping out only
        happens right after a purchase, so
        P = 1 − P(alive)·(1 − ((α+T)/(α+T+t))^(r+x)).
        """
        r, alpha, _, _ = self._params()
        x, tx, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        alive = self.probability_alive(x, tx, big_t)
        quiet_if_alive = ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
        return 1.0 - alive * (1.0 - quiet_if_alive)


@dataclass
class GammaGammaModel:
    """Gamma-Gamma spend model: a customer's transaction values are Gamma(p, ν)
    with ν ~ Gamma(q, γ) across customers, independent of purchasing.

    Fitted on customers with at least one repeat purchase and positive mean
    repeat spend. ``penalizer`` as in lifetimes 0.11.3 (``× (p² + q² + γ²)``).
    """

    penalizer: float = 0.0

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGammaModel:
        """Fit by maximum likelihood on (repeat purchases, their mean value)."""
        x = np.asarray(frequency, dtype=float)
        m = np.asarray(monetary_value, dtype=float)
        keep = (x > 0) & (m > 0)
        if keep.sum() < 3:
            raise ValueError("Gamma-Gamma needs customers with repeat purchases of positive value")
        x, m = x[keep], m[keep]

        def objective(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            value = -np.mean(self._log_likelihood(params, x, m))
            value += self.penalizer * float(np.sum(params**2))
            return value if np.isfinite(value) else 1e100

        start = np.log([1.0, 1.0, max(float(np.mean(m)), 1e-3)])
        result = _minimize(objective, start)
        p, q, gamma = np.exp(result.x)
        self.params_ = {"p": p, "q": q, "gamma": gamma}
        self.converged_ = bool(result.success)
        return self

    @staticmethod
    def _log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Log-likelihood of the mean spend m over x transactions (FHL 2005, eq. 3)."""
        p, q, gamma = params
        return (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q)
                + q * np.log(gamma) + (p * x - 1) * np.log(m) + p * x * np.log(x)
                - (p * x + q) * np.log(gamma + m * x))

    def conditional_expected_average_spend(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> np.ndarray:
        """E[spend per transaction | x, m_x]: a credibility-weighted mix of the
        population mean pγ/(q−1) and the customer's own mean (eq. 5)."""
        if not hasattr(self, "params_"):
            raise NotFittedError("GammaGammaModel is not fitted yet; call fit() first")
        p, q, gamma = self.params_["p"], self.params_["q"], self.params_["gamma"]
        x = np.asarray(frequency, dtype=float)
        m = np.asarray(monetary_value, dtype=float)
        return p * (gamma + x * m) / (p * x + q - 1)


def recency_score(summary: pd.DataFrame) -> pd.Series:
    """Churn ranking by days since the last purchase: longer silence, higher risk."""
    return summary["days_since_last"].astype(float).rename("churn_score")


def spend_frequency_recency_score(summary: pd.DataFrame) -> pd.Series:
    """Value heuristic: total spend × repeat purchases / (1 + days since last).

    What an analyst ranks by without a model: big, frequent, recent buyers
    first (one-time buyers last). The README's reference heuristic.
    """
    value = summary["total_spend"] * summary["frequency"] / (1.0 + summary["days_since_last"])
    return value.rename("value")


def spend_recency_score(summary: pd.DataFrame) -> pd.Series:
    """Value heuristic without frequency: total spend / (1 + days since last)."""
    return (summary["total_spend"] / (1.0 + summary["days_since_last"])).rename("value")


@dataclass
class BuyTillYouDie:
    """BG/NBD + Gamma-Gamma as one reference: churn probability and CLV for a window."""

    penalizer: float = 0.0
    spend_penalizer: float = 0.0

    def fit(self, summary: pd.DataFrame) -> BuyTillYouDie:
        """Fit both models on a `purchase_summary` (time unit: weeks).

        ``penalizer`` regularizes BG/NBD only by default: the Gamma-Gamma
        likelihood converges unpenalized on both real logs, and lifetimes' squared
        penalty on γ (in currency units) would swamp it.
        """
        self.purchases_ = BetaGeoModel(penalizer=self.penalizer).fit(
            summary["frequency"], summary["recency"], summary["T"])
        self.spend_ = GammaGammaModel(penalizer=self.spend_penalizer).fit(
            summary["frequency"], summary["monetary_value"])
        return self

    def predict(self, summary: pd.DataFrame, *, horizon_weeks: float,
                clv_horizon_weeks: float) -> pd.DataFrame:
        """Per customer: P(no purchase in the horizon), P(alive), expected purchases
        and CLV = expected average spend × expected purchases in the CLV horizon
        (no discounting within the window)."""
        if not hasattr(self, "purchases_"):
            raise NotFittedError("BuyTillYouDie is not fitted yet; call fit() first")
        x, tx, t = summary["frequency"], summary["recency"], summary["T"]
        expected = self.purchases_.conditional_expected_purchases(clv_horizon_weeks, x, tx, t)
        spend = self.spend_.conditional_expected_average_spend(x, summary["monetary_value"])
        return pd.DataFrame(
            {
                "churn_probability": self.purchases_.probability_no_purchase(
                    horizon_weeks, x, tx, t),
                "probability_alive": self.purchases_.probability_alive(x, tx, t),
                "expected_purchases": self.purchases_.conditional_expected_purchases(
                    horizon_weeks, x, tx, t),
                "expected_average_spend": spend,
                "clv": spend * expected,
            },
            index=summary.index,
        )
