"""A realistic synthetic dataset whose churn is caused by observable behaviour.

Every customer carries a latent *engagement* that drifts week by week (a mean-
reverting random walk; for some customers it starts to fade at a random
moment). Engagement drives how often they order and use the app. Each week a
customer may churn with a hazard that is the sum of cause-specific hazards, all
computed from the customer's own past behaviour:

- ``fading_engagement``: engagement has fallen well below its usual level, seen
  in the data as fewer sessions, views and orders than before;
- ``long_gap``: the customer is long overdue against their own ordering (or,
  for subscribers, usage) rhythm;
- ``bad_experience``: a large share of recent orders was returned or a cash-on-
  delivery parcel went unclaimed;
- ``support_issues``: a recent burst of support tickets;
- ``price_downgrade``: a recent move to a cheaper subscription plan;
- ``unobserved``: a small background hazard (moving away, a competitor), higher
  for some acquisition channels, that no history can explain.

When a customer churns, the cause is drawn in proportion to the component
hazards (competing risks), so ``ground_truth.churn_cause`` names the hazard
that actually fired. After churn a customer places no orders, ends their
subscription and only opens the odd marketing email.

The ground truth also holds each customer's weekly churn hazard at the start
of the last ``hazard_window_days`` (by default the last 90 days: the holdout of
a backtest cut 90 days before the end): ranking the customers by it gives the
ceiling that the generator's own churn process sets for any model's ROC AUC.

With ``seasonality`` a yearly pattern is added: in the peak quarter (October
to December) every customer orders more (by a lift of their own, 1.8× on
average, in place of the mild winter bump), uses the app a little more and
churns at half the usual hazard. The lift per customer is in the ground truth
(``peak_spend_lift``); `seasonal_order_factor` gives the pattern by date. A model that reads the
history before a date can therefore find who is about to churn, and a feature
pipeline that leaks the future or breaks the history cannot.

The simulation runs on a weekly grid, vectorized across customers and chunked
by customers (each chunk has its own random stream derived from the seed), so a
million customers fit in memory and the same seed always gives the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("ecommerce", "subscription", "mixed")

CHURN_CAUSES = (
    "unobserved",
    "fading_engagement",
    "long_gap",
    "bad_experience",
    "support_issues",
    "price_downgrade",
)
NOT_CHURNED = "none"

EVENT_TYPES = ("session", "product_view", "cart_add", "support_ticket", "email_open")
ORDER_STATUS_CODES = ("completed", "returned", "cancelled", "unclaimed")
PLANS = ("basic", "pro", "business")
PLAN_MRR = np.array([19.0, 49.0, 149.0])
ANNUAL_BILLING_DISCOUNT = 0.85

REGIONS = (("north", 0.22), ("south", 0.25), ("east", 0.18), ("west", 0.20), ("central", 0.15))
#: acquisition channel, share of sign-ups, multiplier of the background churn hazard
CHANNELS = (
    ("organic", 0.30, 0.8),
    ("paid_search", 0.25, 1.0),
    ("social", 0.18, 1.6),
    ("referral", 0.12, 0.6),
    ("email", 0.15, 1.0),
)
AGE_BANDS = (("18-24", 0.14), ("25-34", 0.30), ("35-44", 0.25), ("45-54", 0.18), ("55+", 0.13))
PAYMENTS = (("card", 0.55), ("paypal", 0.27), ("cash_on_delivery", 0.18))

#: customers simulated together with one random stream; fixed so output never
#: depends on anything but the seed and the arguments
CHUNK_SIZE = 50_000

#: hour-of-day profile of activity (people shop in the evening)
_HOURLY = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4.5,
                    5, 4.5, 4, 4, 4.5, 5, 6, 7, 7.5, 6.5, 4, 2], dtype=float)
_HOURLY_CDF = np.cumsum(_HOURLY) / _HOURLY.sum()


@dataclass(frozen=True)
class _Profile:
    """Weekly base rates and hazard strengths of one kind of business."""

    orders_per_week: float
    session_per_week: float
    subscriber_share: float
    #: event rates relative to sessions
    views_per_session: float = 1.6
    carts_per_session: float = 0.3
    emails_per_week: float = 0.25
    orders_scale: float = 1.0
    events_scale: float = 1.0


_PROFILES = {
    "ecommerce": _Profile(orders_per_week=0.2, session_per_week=0.3, subscriber_share=0.0),
    "subscription": _Profile(orders_per_week=0.025, session_per_week=0.6, subscriber_share=1.0,
                             views_per_session=0.8, carts_per_session=0.05),
    "mixed": _Profile(orders_per_week=0.2, session_per_week=0.3, subscriber_share=0.35),
}

# Hazard strengths (per week), tuned so that 20-30% of active customers churn
# within 90 days with every cause represented. Causes build up slowly and are
# remembered for months (decays near 1), so that most churn in a 90-day window
# was already visible in the history before it.
_BACKGROUND_HAZARD = 0.002     # times the acquisition channel's multiplier
_FADING_HAZARD = 0.12          # per unit of log engagement below -0.4
_GAP_HAZARD = 0.08             # per expected gap overdue beyond 2
_BAD_EXPERIENCE_HAZARD = 0.08  # times the recent share of returned/unclaimed orders
_SUPPORT_HAZARD = 0.01         # per recent support ticket
_DOWNGRADE_HAZARD = 0.035      # per recent downgrade

_FADE_SPEED = (0.02, 0.06)     # weekly fall of log engagement once fading sets in
_BAD_SHOCK = 0.12              # log engagement lost per returned/unclaimed order
_RECENT_DECAY = 0.96           # weekly decay of the memory of recent and bad orders
_TICKET_DECAY = 0.90
_DOWNGRADE_DECAY = 0.96
_PROBLEM_END = 0.12            # weekly chance an unresolved product problem is fixed
_TICKETS_IN_TROUBLE = 0.7      # weekly tickets while a problem lasts
_EMAIL_MEMORY_WEEKS = 40       # churned customers stop opening emails after this

#: with ``seasonality``: the months of the peak quarter, the average lift of the
#: order rate in them, the lift of app use, and the share of the churn hazard left
PEAK_MONTHS = (10, 11, 12)
PEAK_SPEND = 1.8
PEAK_ACTIVITY = 1.3
PEAK_CHURN = 0.5
_PEAK_LIFT_SPREAD = 0.4        # log-normal spread of the customers' own peak lifts
#: the ground truth's hazard is taken at the start of this many last days
HAZARD_WINDOW_DAYS = 90


@dataclass(frozen=True)
class GeneratedData:
    """The generated tables (the data contract of docs/data.md) plus the ground truth.

    ``ground_truth`` has one row per customer: ``customer_id``, ``churned_at``
    (NaT when the customer had not churned by the end), ``churn_cause`` (one of
    `CHURN_CAUSES`, or ``"none"``) and latent facts useful to check models
    against (``engagement_at_end``, ``fading``, ``subscriber``, ...), the
    weekly ``churn_hazard`` at the start of the last ``hazard_window_days`` (NaN
    for customers gone or not yet signed up by then), and with seasonality each customer's
    ``peak_spend_lift``. Loaders ignore it: it is never model input.
    """

    tables: dict[str, pd.DataFrame]
    ground_truth: pd.DataFrame
    kind: str
    end: date
    notes: list[str] = field(default_factory=list)

    def write(self, directory: Path | str, fmt: str = "csv") -> Path:
        """Write every table as ``NAME.fmt`` and the ground truth as ``ground_truth.csv``."""
        from features.io import write_dataset, write_table

        if fmt not in ("csv", "parquet"):
            raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
        directory = write_dataset(self.tables, directory, fmt=fmt)
        write_table(self.ground_truth, Path(directory) / "ground_truth.csv")
        return directory


def generate_dataset(
    *,
    customers: int,
    seed: int,
    end: date,
    kind: str,
    history_days: int = 1095,
    orders_per_customer: float | None = None,
    events_per_customer: float | None = None,
    progress: Callable[[float], None] | None = None,
    seasonality: bool = False,
    hazard_window_days: int = HAZARD_WINDOW_DAYS,
    session_shift: tuple[date, float] | None = None,
) -> GeneratedData:
    """Simulate ``customers`` customers over the ``history_days`` days ending on ``end``.

    Parameters
    ----------
    customers, seed
        How many customers, and the random seed (same arguments, identical frames).
    end
        The last day of history: no timestamp is later than ``end`` 23:59:59.
    kind
        ``"ecommerce"`` (orders and app events), ``"subscription"`` (every
        customer subscribes; churn is cancelling) or ``"mixed"`` (an online shop
        where about a third of customers also hold a membership subscription).
    orders_per_customer, events_per_customer
        Optional average number of orders / events per customer over the whole
        history (approximate, within about 10%). Benchmarks use them to reach a
        given volume; ``None`` keeps the kind's natural rates.
    progress
        Called with the fraction of the simulation done (0 to 1), for progress bars.
    seasonality
        Add the yearly peak quarter (see the module docstring); off, the output
        is exactly what it was before the option existed.
    hazard_window_days
        The ground truth's ``churn_hazard`` is each customer's weekly hazard at
        the start of the last ``hazard_window_days`` days of history.
    session_shift
        ``(day, factor)``: from the first week starting on or after ``day``, every
        customer's app sessions (only the ``session`` events) happen ``factor``
        times as often: a known change of one behaviour, for drift checks.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if customers < 1:
        raise ValueError(f"customers must be at least 1, not {customers}")
    if history_days < 14:
        raise ValueError(f"history_days must be at least 14, not {history_days}")
    if not 0 < hazard_window_days <= history_days:
        raise ValueError(f"hazard_window_days must be in 1..history_days ({history_days}), "
                         f"not {hazard_window_days}")
    for name, value in (("orders_per_customer", orders_per_customer),
                        ("events_per_customer", events_per_customer)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, not {value}")
    if isinstance(end, datetime):
        end = end.date()
    shift_day, shift_factor = None, 1.0
    if session_shift is not None:
        shift_day = float((session_shift[0] - _history_start(end, history_days).date()).days)
        shift_factor = float(session_shift[1])
        if not shift_factor >= 0:
            raise ValueError(f"the session shift factor must be at least 0, not {shift_factor}")

    profile = _PROFILES[kind]
    notes: list[str] = []
    if orders_per_customer is not None or events_per_customer is not None:
        profile = _calibrate(profile, seed=seed, end=end, kind=kind, history_days=history_days,
                             seasonality=seasonality, orders_per_customer=orders_per_customer,
                             events_per_customer=events_per_customer)
        notes.append(f"rates scaled: orders x{profile.orders_scale:.3g}, "
                     f"events x{profile.events_scale:.3g}")

    chunks = []
    for chunk_index, first in enumerate(range(0, customers, CHUNK_SIZE)):
        size = min(CHUNK_SIZE, customers - first)
        report = None
        if progress is not None:
            def report(week_share: float, first: int = first, size: int = size) -> None:
                progress((first + week_share * size) / customers)
        chunks.append(_simulate_chunk(
            np.random.default_rng(np.random.SeedSequence([seed, chunk_index])),
            n=size, first=first, history_days=history_days,
            start=_history_start(end, history_days), profile=profile, report=report,
            hazard_day=float(history_days - hazard_window_days),
            peak_lift=(_peak_lifts(seed, chunk_index, size) if seasonality else None),
            session_shift=(shift_day, shift_factor) if shift_day is not None else None,
        ))
    raw = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
    return _assemble(raw, customers=customers, end=end, kind=kind,
                     history_days=history_days, notes=notes)


def _history_start(end: date, history_days: int) -> datetime:
    return datetime.combine(end + timedelta(days=1), time()) - timedelta(days=history_days)


def _peak_lifts(seed: int, chunk_index: int, size: int) -> np.ndarray:
    """Each customer's own peak-quarter order lift, mean `PEAK_SPEND`.

    Drawn from a stream of its own, so the rest of the simulation draws what it
    would draw without seasonality.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk_index, 7_000_001]))
    sigma = _PEAK_LIFT_SPREAD
    return rng.lognormal(np.log(PEAK_SPEND) - sigma**2 / 2, sigma, size)


def in_peak_quarter(moments: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """True for moments in the seasonal generator's peak quarter (`PEAK_MONTHS`)."""
    months = pd.DatetimeIndex(moments).month
    return np.isin(np.asarray(months), PEAK_MONTHS)


def seasonal_order_factor(moments: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """The average order-rate multiplier of ``generate --seasonality`` at each moment."""
    return np.where(in_peak_quarter(moments), PEAK_SPEND, 1.0)


def _calibrate(profile: _Profile, *, seed: int, end: date, kind: str, history_days: int,
               seasonality: bool, orders_per_customer: float | None,
               events_per_customer: float | None) -> _Profile:
    """Scale base rates so that a pilot run meets the requested volumes per customer.

    Churn hazards are scale-free (gaps are measured against each customer's own
    rhythm, bad experiences as a share of orders), so volume scales almost
    linearly with the base rates and one pilot suffices.
    """
    pilot_size = 4000
    pilot = _simulate_chunk(
        np.random.default_rng(np.random.SeedSequence([seed, 1_000_003])),
        n=pilot_size, first=0, history_days=history_days,
        start=_history_start(end, history_days), profile=profile,
        hazard_day=float(history_days),
        peak_lift=_peak_lifts(seed, 1_000_003, pilot_size) if seasonality else None,
    )
    orders_scale, events_scale = 1.0, 1.0
    if orders_per_customer is not None:
        orders_scale = orders_per_customer / max(len(pilot["order_customer"]) / pilot_size, 1e-9)
    if events_per_customer is not None:
        # support tickets follow experiences, not the volume knob
        other = np.count_nonzero(pilot["event_type"] != EVENT_TYPES.index("support_ticket"))
        tickets = len(pilot["event_type"]) - other
        wanted = max(events_per_customer - tickets / pilot_size, 0.01)
        events_scale = wanted / max(other / pilot_size, 1e-9)
    return _Profile(**{**profile.__dict__, "orders_scale": orders_scale,
                       "events_scale": events_scale})


def _pick(rng: np.random.Generator, options: tuple, n: int) -> np.ndarray:
    """Draw option indices with the shares given as the second item of each option."""
    shares = np.array([option[1] for option in options], dtype=float)
    return rng.choice(len(options), size=n, p=shares / shares.sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Rows:
    """Accumulates rows of one table as lists of numpy arrays, one list per column."""

    def __init__(self, *columns: str) -> None:
        self.columns: dict[str, list[np.ndarray]] = {column: [] for column in columns}

    def add(self, **arrays: np.ndarray) -> None:
        for column, values in arrays.items():
            self.columns[column].append(values)

    def finish(self, prefix: str, dtypes: dict[str, type]) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_{column}": (np.concatenate(parts) if parts
                                   else np.empty(0, dtype=dtypes[column]))
            for column, parts in self.columns.items()
        }


def _times_in(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Random moments in [lo, hi) (days), shaped by the hour-of-day profile where possible."""
    uniform = lo + rng.random(len(lo)) * (hi - lo)
    hour = np.searchsorted(_HOURLY_CDF, rng.random(len(lo)), side="right")
    diurnal = np.floor(uniform) + (hour + rng.random(len(lo))) / 24.0
    inside = (diurnal >= lo) & (diurnal < hi)
    return np.where(inside, diurnal, uniform)


def _simulate_chunk(rng: np.random.Generator, *, n: int, first: int, history_days: int,
                    start: datetime, profile: _Profile, hazard_day: float,
                    peak_lift: np.ndarray | None = None,
                    report: Callable[[float], None] | None = None,
                    session_shift: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """Simulate ``n`` customers week by week; times are float days since ``start``.

    ``hazard_day`` is when the ground truth's hazard is read (days since
    ``start``); ``peak_lift`` (one per customer) turns seasonality on.
    """
    weeks = int(np.ceil(history_days / 7))
    subscription_only = profile.subscriber_share >= 1.0

    # static traits
    signup = rng.random(n) * history_days
    region = _pick(rng, REGIONS, n)
    channel = _pick(rng, CHANNELS, n)
    age_band = _pick(rng, AGE_BANDS, n)
    payment = _pick(rng, PAYMENTS, n)
    cash_on_delivery = payment == 2
    channel_risk = np.array([c[2] for c in CHANNELS])[channel]
    order_rate = rng.gamma(2.0, profile.orders_per_week / 2.0, n) * profile.orders_scale
    session_rate = rng.gamma(2.0, profile.session_per_week / 2.0, n) * profile.events_scale
    email_rate = profile.emails_per_week * rng.gamma(2.0, 0.5, n) * profile.events_scale
    basket_value = rng.lognormal(np.log(55.0), 0.45, n)
    return_share = rng.beta(1.2, 14.0, n)
    unclaimed_share = np.where(cash_on_delivery, rng.beta(1.0, 9.0, n), 0.0)
    discount_liking = rng.beta(1.0, 3.0, n)
    # a fading customer's engagement starts to drift down at a random moment
    fading = rng.random(n) < 0.5
    fade_onset = signup + rng.exponential(150.0, n)
    fade_speed = rng.uniform(_FADE_SPEED[0], _FADE_SPEED[1], n)
    price_sensitive = rng.random(n) < 0.3

    subscriber = rng.random(n) < profile.subscriber_share
    plan = np.where(subscriber, _pick(rng, (("basic", 0.5), ("pro", 0.35), ("business", 0.15)), n),
                    -1)
    annual = rng.random(n) < 0.3
    plan_started = signup.copy()

    # state
    engagement = rng.normal(0.15, 0.25, n)  # log multiplier of every rate; new customers keen
    churned = np.zeros(n, dtype=bool)
    churned_at = np.full(n, np.nan)
    cause = np.full(n, -1, dtype=np.int8)
    engagement_at_churn = np.full(n, np.nan)
    weeks_since_order = np.zeros(n)
    weeks_since_session = np.zeros(n)
    recent_orders = np.zeros(n)
    recent_bad = np.zeros(n)
    recent_tickets = np.zeros(n)
    recent_downgrades = np.zeros(n)
    problem_weeks_left = np.zeros(n, dtype=np.int32)
    hazard_at = np.full(n, np.nan)          # weekly hazard at ``hazard_day``

    orders = _Rows("customer", "time", "status", "amount", "discount", "items")
    events = _Rows("customer", "time", "type", "value")
    subscriptions = _Rows("customer", "start", "end", "plan")

    for week in range(weeks):
        week_start, week_end = 7.0 * week, min(7.0 * week + 7.0, float(history_days))
        season = 1.0 + 0.2 * np.cos(
            2 * np.pi * (_day_of_year(start, (week_start + week_end) / 2) - 350) / 365.25)
        peak = peak_lift is not None and (
            (start + timedelta(days=(week_start + week_end) / 2)).month in PEAK_MONTHS)
        # only customers who have joined and not yet churned act this week
        a = np.flatnonzero((signup < week_end) & ~churned)
        m = len(a)
        lo = np.maximum(week_start, signup[a])
        z = engagement[a]
        sub_plan = plan[a]

        # churn hazard from what happened before this week (customers past their first week)
        at_risk = signup[a] < week_start
        overdue = weeks_since_order[a] * order_rate[a]
        session_overdue = weeks_since_session[a] * session_rate[a]
        if subscription_only:
            overdue = session_overdue
        else:
            overdue = np.where(sub_plan >= 0, np.minimum(overdue, session_overdue), overdue)
        hazards = np.stack([
            _BACKGROUND_HAZARD * channel_risk[a],
            _FADING_HAZARD * np.clip(-z - 0.4, 0.0, 2.5),
            _GAP_HAZARD * np.clip(overdue - 2.0, 0.0, 3.0),
            _BAD_EXPERIENCE_HAZARD * recent_bad[a] / (recent_orders[a] + 0.5),
            _SUPPORT_HAZARD * recent_tickets[a],
            _DOWNGRADE_HAZARD * recent_downgrades[a] * (sub_plan >= 0),
        ])
        fraction = (week_end - week_start) / 7.0
        total_hazard = hazards.sum(axis=0)
        if peak:
            total_hazard = total_hazard * PEAK_CHURN
        if week_start <= hazard_day < week_end:
            hazard_at[a[at_risk]] = total_hazard[at_risk]
        churn_now = at_risk & (rng.random(m) < -np.expm1(-total_hazard * fraction))
        leave = np.flatnonzero(churn_now)
        hi = np.full(m, week_end)
        if len(leave):
            cumulative = np.cumsum(hazards[:, leave], axis=0)
            pick = rng.random(len(leave)) * cumulative[-1]
            who = a[leave]
            cause[who] = (cumulative < pick[None, :]).sum(axis=0)
            hi[leave] = lo[leave] + rng.random(len(leave)) * (week_end - lo[leave])
            churned_at[who] = hi[leave]
            engagement_at_churn[who] = z[leave]
        exposure = (hi - lo) / 7.0
        level = np.exp(z)

        # orders
        order_season = (season if peak_lift is None
                        else peak_lift[a] if peak else np.ones(m))
        event_season = season if peak_lift is None else (PEAK_ACTIVITY if peak else 1.0)
        n_orders = rng.poisson(order_rate[a] * level * order_season * exposure)
        local = np.repeat(np.arange(m), n_orders)
        buyer = a[local]
        draw = rng.random(len(buyer))
        status = np.zeros(len(buyer), dtype=np.int8)  # completed
        cancelled = draw < 0.03
        unclaimed = ~cancelled & (draw < 0.03 + unclaimed_share[buyer])
        returned = ~cancelled & ~unclaimed & (
            draw < 0.03 + unclaimed_share[buyer] + return_share[buyer])
        status[returned], status[cancelled], status[unclaimed] = 1, 2, 3
        if len(buyer):
            amount = np.round(basket_value[buyer] * rng.lognormal(0.0, 0.5, len(buyer)), 2)
            discounted = rng.random(len(buyer)) < discount_liking[buyer]
            discount = np.where(discounted,
                                np.round(amount * rng.uniform(0.05, 0.3, len(buyer)), 2), 0.0)
            items = 1 + rng.poisson(np.maximum(amount / 45.0 - 0.5, 0.05))
            orders.add(customer=buyer, time=_times_in(rng, lo[local], hi[local]),
                       status=status, amount=amount, discount=discount, items=items)
        completed = np.bincount(local[status == 0], minlength=m)
        bad = np.bincount(local[(status == 1) | (status == 3)], minlength=m)
        placed = np.bincount(local[status != 2], minlength=m)

        # app events: usage follows engagement; tickets follow trouble
        trouble = problem_weeks_left[a]
        starts_problem = rng.random(m) < 0.006 * exposure
        trouble = np.where(starts_problem, rng.geometric(_PROBLEM_END, m), trouble)
        ticket_rate = 0.01 + 0.6 * bad + _TICKETS_IN_TROUBLE * (trouble > 0)
        sessions = session_rate[a] * level
        rates = np.stack([
            sessions,
            sessions * profile.views_per_session * event_season,
            session_rate[a] * profile.carts_per_session * level ** 1.3 * event_season,
            ticket_rate,
            email_rate[a] * level ** 0.3,
        ]) * exposure
        if session_shift is not None and week_start >= session_shift[0]:
            rates[0] = rates[0] * session_shift[1]
        counts = rng.poisson(rates)
        for code in range(len(EVENT_TYPES)):
            local = np.repeat(np.arange(m), counts[code])
            if not len(local):
                continue
            value = (np.round(rng.lognormal(np.log(7.0) + 0.3 * z[local], 0.6), 1)
                     if EVENT_TYPES[code] == "session" else np.full(len(local), np.nan))
            events.add(customer=a[local], time=_times_in(rng, lo[local], hi[local]),
                       type=np.full(len(local), code, dtype=np.int8), value=value)

        # after churn only the odd marketing email is still opened, less and less often
        churned[a[leave]] = True
        gone = np.flatnonzero(churned & (churned_at > week_start - 7.0 * _EMAIL_MEMORY_WEEKS))
        if len(gone):
            gone_lo = np.maximum(week_start, churned_at[gone])
            weeks_gone = np.maximum(week_start - churned_at[gone], 0.0) / 7.0
            late = rng.poisson(0.3 * np.exp(-weeks_gone / 8.0) * email_rate[gone]
                               * (week_end - gone_lo) / 7.0)
            local = np.repeat(np.arange(len(gone)), late)
            if len(local):
                events.add(customer=gone[local],
                           time=_times_in(rng, gone_lo[local], np.full(len(local), week_end)),
                           type=np.full(len(local), EVENT_TYPES.index("email_open"),
                                        dtype=np.int8),
                           value=np.full(len(local), np.nan))

        # subscriptions: plan changes follow engagement; churn ends the subscription
        holding = (sub_plan >= 0) & ~churn_now
        upgrade = holding & (sub_plan < 2) & (
            rng.random(m) < 0.012 * _sigmoid(3 * (z - 0.3)) * exposure)
        downgrade = holding & ~upgrade & (sub_plan > 0) & (rng.random(m) < (
            0.003 + 0.04 * _sigmoid(3 * (-z - 0.5)) * (1 + price_sensitive[a])) * exposure)
        change = np.flatnonzero(upgrade | downgrade)
        if len(change):
            who = a[change]
            when = _times_in(rng, lo[change], hi[change])
            subscriptions.add(customer=who, start=plan_started[who], end=when,
                              plan=plan[who].copy())
            plan[who] += np.where(upgrade[change], 1, -1)
            plan_started[who] = when
        leaving = a[np.flatnonzero(churn_now & (sub_plan >= 0))]
        if len(leaving):
            subscriptions.add(customer=leaving, start=plan_started[leaving],
                              end=churned_at[leaving], plan=plan[leaving].copy())
            plan[leaving] = -1

        # state for next week
        onset = fading[a] & (fade_onset[a] < week_end)
        drift = np.where(onset, -fade_speed[a], 0.0)
        moved = np.where(onset, z, 0.96 * z) + drift + rng.normal(0.0, 0.07, m) - _BAD_SHOCK * bad
        engagement[a] = np.where(churn_now, z, np.clip(moved, -4.0, 1.5))
        weeks_since_order[a] = np.where(completed > 0, 0.0, weeks_since_order[a] + exposure)
        weeks_since_session[a] = np.where(counts[0] > 0, 0.0, weeks_since_session[a] + exposure)
        recent_orders[a] = _RECENT_DECAY * recent_orders[a] + placed
        recent_bad[a] = _RECENT_DECAY * recent_bad[a] + bad
        recent_tickets[a] = _TICKET_DECAY * recent_tickets[a] + counts[3]
        recent_downgrades[a] = _DOWNGRADE_DECAY * recent_downgrades[a] + downgrade
        problem_weeks_left[a] = np.maximum(trouble - 1, 0)
        if report is not None:
            report((week + 1) / weeks)

    still = np.flatnonzero(plan >= 0)
    subscriptions.add(customer=still, start=plan_started[still], end=np.full(len(still), np.nan),
                      plan=plan[still].copy())
    ended_subscribed = subscriber
    final_engagement = np.where(churned, engagement_at_churn, engagement)

    result = {
        "customer_signup": signup,
        "customer_region": region,
        "customer_channel": channel,
        "customer_age_band": age_band,
        "customer_payment": payment,
        "customer_subscriber": ended_subscribed,
        "customer_annual": annual,
        "customer_churned_at": churned_at,
        "customer_cause": cause,
        "customer_engagement": np.exp(final_engagement),
        "customer_fading": fading & (fade_onset < np.nan_to_num(churned_at, nan=history_days)),
        "customer_order_rate": order_rate,
        "customer_hazard": hazard_at,
        "customer_peak_lift": (peak_lift if peak_lift is not None else np.full(n, np.nan)),
    }
    result |= orders.finish("order", {"customer": np.int64, "time": float, "status": np.int8,
                                      "amount": float, "discount": float, "items": np.int64})
    result |= events.finish("event", {"customer": np.int64, "time": float, "type": np.int8,
                                      "value": float})
    result |= subscriptions.finish("subscription", {"customer": np.int64, "start": float,
                                                    "end": float, "plan": np.int64})
    for key in ("order_customer", "event_customer", "subscription_customer"):
        result[key] = result[key].astype(np.int64) + first
    return result


def _day_of_year(start: datetime, day: float) -> int:
    return (start + timedelta(days=day)).timetuple().tm_yday


def _timestamps(start: datetime, days: np.ndarray) -> np.ndarray:
    """Float days since ``start`` to datetime64[ns], whole seconds, never rounded past the end."""
    seconds = np.floor(days * 86_400.0)
    base = np.datetime64(start, "s")
    out = base + np.where(np.isnan(seconds), 0, seconds).astype("timedelta64[s]")
    return np.where(np.isnan(days), np.datetime64("NaT"), out).astype("datetime64[ns]")


_TEXT = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default ``str`` dtype


def _text(labels: pa.Array, codes: np.ndarray) -> pd.Series:
    """Labels picked by integer codes, as a ``str`` series (arrow take: no Python strings)."""
    return pd.Series(labels.take(pa.array(codes)).to_pandas(types_mapper={pa.string(): _TEXT}.get))


def _names(options: tuple) -> pa.Array:
    return pa.array([option[0] for option in options])


def _numbered(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Ids like ``C000123``: a prefix and a zero-padded number."""
    padded = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, padded, "")


def _assemble(raw: dict[str, np.ndarray], *, customers: int, end: date, kind: str,
              history_days: int, notes: list[str]) -> GeneratedData:
    """Turn simulated arrays into contract tables sorted by time, with string ids."""
    start = _history_start(end, history_days)
    ids = _numbered("C", np.arange(customers), max(6, len(str(customers - 1))))
    everyone = np.arange(customers)

    def customer_ids(index: np.ndarray) -> pd.Series:
        return _text(ids, index)

    tables: dict[str, pd.DataFrame] = {}
    tables["customers"] = pd.DataFrame({
        "customer_id": customer_ids(everyone),
        "signup_at": _timestamps(start, raw["customer_signup"]),
        "region": _text(_names(REGIONS), raw["customer_region"]),
        "acquisition_channel": _text(_names(CHANNELS), raw["customer_channel"]),
        "age_band": _text(_names(AGE_BANDS), raw["customer_age_band"]),
    })
    if kind != "subscription":
        tables["customers"]["preferred_payment"] = _text(_names(PAYMENTS),
                                                         raw["customer_payment"])

    order_sort = np.argsort(raw["order_time"], kind="stable")
    n_orders = len(order_sort)
    order_width = max(8, len(str(n_orders)))
    tables["orders"] = pd.DataFrame({
        "order_id": _text(_numbered("O", np.arange(1, n_orders + 1), order_width),
                          np.arange(n_orders)),
        "customer_id": customer_ids(raw["order_customer"][order_sort]),
        "ordered_at": _timestamps(start, raw["order_time"][order_sort]),
        "amount": raw["order_amount"][order_sort],
        "status": _text(pa.array(ORDER_STATUS_CODES), raw["order_status"][order_sort]),
        "discount": raw["order_discount"][order_sort],
        "items": raw["order_items"][order_sort].astype(np.int64),
    })

    event_sort = np.argsort(raw["event_time"], kind="stable")
    tables["events"] = pd.DataFrame({
        "customer_id": customer_ids(raw["event_customer"][event_sort]),
        "occurred_at": _timestamps(start, raw["event_time"][event_sort]),
        "event_type": _text(pa.array(EVENT_TYPES), raw["event_type"][event_sort]),
        "value": raw["event_value"][event_sort],
    })

    if kind != "ecommerce":
        sub_sort = np.lexsort((raw["subscription_start"], raw["subscription_customer"]))
        plan_codes = raw["subscription_plan"][sub_sort]
        annual = raw["customer_annual"][raw["subscription_customer"][sub_sort]]
        tables["subscriptions"] = pd.DataFrame({
            "customer_id": customer_ids(raw["subscription_customer"][sub_sort]),
            "started_at": _timestamps(start, raw["subscription_start"][sub_sort]),
            "ended_at": _timestamps(start, raw["subscription_end"][sub_sort]),
            "plan": _text(pa.array(PLANS), plan_codes),
            "mrr": np.round(PLAN_MRR[plan_codes] * np.where(annual, ANNUAL_BILLING_DISCOUNT, 1.0),
                            2),
        })

    cause_names = [*CHURN_CAUSES, NOT_CHURNED]  # code -1 (not churned) is the last
    ground_truth = pd.DataFrame({
        "customer_id": tables["customers"]["customer_id"],
        "signup_at": tables["customers"]["signup_at"],
        "churned_at": _timestamps(start, raw["customer_churned_at"]),
        "churn_cause": _text(pa.array(cause_names), raw["customer_cause"] % len(cause_names)),
        "engagement_at_end": np.round(raw["customer_engagement"], 4),
        "fading": raw["customer_fading"],
        "subscriber": raw["customer_subscriber"],
        "base_weekly_orders": np.round(raw["customer_order_rate"], 4),
        "churn_hazard": raw["customer_hazard"],
    })
    if not np.isnan(raw["customer_peak_lift"]).all():
        ground_truth["peak_spend_lift"] = np.round(raw["customer_peak_lift"], 4)
    return GeneratedData(tables=tables, ground_truth=ground_truth, kind=kind, end=end,
                         notes=notes)
