"""What decides a training run (`TrainParams`) and the errors that stop one.

Every setting is checked when the parameters are made, so a bad value is
reported against its setting (and the command's flag) before any data is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from features.definition import CHOICES
from features.lifecycle import LifecycleSettingError, check_thresholds


class TrainingDataError(ValueError):
    """The data cannot train a model; the message says what is wrong and what to change."""


class TrainParamsError(ValueError):
    """A training setting is out of range; ``field`` names it (commands map it to a flag)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class TrainParams:
    """Everything that decides a training run (logged as MLflow parameters)."""

    horizon_days: int = 90
    clv_horizon_days: int = 365
    definition: str | None = None  # None or auto: features.definition.auto_definition
    # the activity definition's window (None: the horizon) and event types (None: every
    # type but the passive ones, features.definition.PASSIVE_EVENT_TYPES)
    active_days: int | None = None
    activity_events: tuple[str, ...] | None = None
    step_days: int = 30
    max_snapshots: int = 12
    num_boost_round: int = 400
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    # other (num_leaves, min_data_in_leaf) pairs tried on the held-out snapshot; () = none
    tree_sizes: tuple[tuple[int, int], ...] = ((3, 50), (7, 50))
    tree_size_min_gain: float = 0.005
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 30
    tweedie_variance_power: float = 1.3
    # CLV boosters fitted with seeds seed, seed+1, … and averaged in the log-link space:
    # one booster's value deciles move with the seed (feature sampling) on small data
    clv_seeds: int = 5
    clv_model: str = "auto"  # auto | tweedie | hurdle (see training.model_choice)
    # short history: may CLV learn from recent 13-week windows (see training.recent_clv)
    clv_recent_windows: bool = True
    # scale the CLV booster so that its total over its training rows equals the actual total
    # (training.boosters.balance_total); False: as fitted
    clv_balance: bool = True
    seed: int = 0
    # lifecycle stages (features.lifecycle): `new` for at most new_days (None: the horizon);
    # `declining` when activity in the last declining_window_days runs below
    # declining_ratio x the customer's own earlier rate, judged with at least
    # declining_min_activity earlier activities over declining_min_days days
    new_days: int | None = None
    declining_window_days: int = 90
    declining_ratio: float = 0.5
    declining_min_activity: int = 4
    declining_min_days: int = 60
    # calendar inputs (features.calendar) when the history covers the same season a year
    # before the held-out snapshot; False: never
    calendar_inputs: bool = True
    # with calendar inputs: extra weight of training snapshots in the same season as the
    # cut-off (1 + season_weight at the same day of the year, 1 a quarter or more away), and
    # CLV early-stopped on the snapshot of the same season a year before (not the latest)
    season_weight: float = 0.0
    season_early_stopping: bool = False
    # one thread by default: training sets are small (customers × snapshots) and OpenMP
    # threads on shared cores cost more than they gain; 0 = all cores
    num_threads: int = 1
    margin_rate: float = 1.0
    top_k: int = 5
    calibration: str = "auto"  # auto | platt | isotonic | none
    calibrate_above_ece: float = 0.02
    min_customers: int = 50
    gate_auc_tolerance: float = 0.002

    def __post_init__(self) -> None:
        if self.calibration not in ("auto", "platt", "isotonic", "none"):
            raise TrainParamsError("calibration", f"must be auto|platt|isotonic|none, not "
                                                  f"{self.calibration!r}")
        if not 0 < self.margin_rate <= 1:
            raise TrainParamsError("margin_rate", f"must be in (0, 1], not {self.margin_rate}")
        if self.clv_model not in ("auto", "tweedie", "hurdle"):
            raise TrainParamsError("clv_model",
                                   f"must be auto|tweedie|hurdle, not {self.clv_model!r}")
        if self.clv_seeds < 1:
            raise TrainParamsError("clv_seeds", f"must be at least 1, not {self.clv_seeds}")
        if self.definition not in (None, *CHOICES):
            raise TrainParamsError("definition", f"must be {' | '.join(CHOICES)}, not "
                                                 f"{self.definition!r}")
        try:
            check_thresholds(new_days=self.new_days, recent_days=self.declining_window_days,
                             declining_ratio=self.declining_ratio,
                             min_earlier_activity=self.declining_min_activity,
                             min_earlier_days=self.declining_min_days)
        except LifecycleSettingError as error:
            field_name = {"recent_days": "declining_window_days",
                          "min_earlier_activity": "declining_min_activity",
                          "min_earlier_days": "declining_min_days"}.get(error.field, error.field)
            raise TrainParamsError(field_name, error.problem) from error
        if self.active_days is not None and self.active_days <= 0:
            raise TrainParamsError("active_days", f"must be a positive number of days, not "
                                                  f"{self.active_days}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


