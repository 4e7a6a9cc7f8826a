"""What happened after the outbox's actions: matured treated and control outcomes.

An outreach rule with a control share records every matched customer in the
outbox's ``actions`` table, treated or held out as control. Once an action's
churn horizon has passed, both groups are labelled with the churn definition of
the model version that scored them. `churnlens outreach effect` compares the
groups (`serving.monitoring.effect`); ``churnlens train --uplift`` learns from
them whom an action helps (`training.uplift`).

The ``actions`` table is read as data (the columns the interface documents),
so training needs no serving code to learn from outreach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from features.history import History
from features.labels import labels_at
from models.bundle import ChurnBundle

#: the columns of the outbox's actions table that outcomes are measured on
ACTION_COLUMNS = ("id", "customer_id", "rule", "action", "period", "as_of", "model_version",
                  "status", "assignment")


class OutboxReadError(ValueError):
    """The outbox cannot be read as a source of outcomes; the message says why."""


def read_actions(outbox_url: str) -> pd.DataFrame:
    """Every action in the outbox at ``outbox_url`` with its assignment (treated or control)."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(outbox_url)
    except (SQLAlchemyError, ValueError) as error:
        raise OutboxReadError(f"outbox URL {outbox_url!r} is not usable: {error}") from error
    try:
        if not inspect(engine).has_table("actions"):
            raise OutboxReadError(
                f"the outbox at {outbox_url} has no actions table: score with outreach first "
                "(churnlens score --outreach)")
        with engine.connect() as connection:
            rows = connection.execute(text(
                f"SELECT {', '.join(ACTION_COLUMNS)} FROM actions ORDER BY as_of, id")).all()
    except SQLAlchemyError as error:
        raise OutboxReadError(f"cannot read the outbox at {outbox_url}: {error}") from error
    finally:
        engine.dispose()
    frame = pd.DataFrame([tuple(row) for row in rows], columns=list(ACTION_COLUMNS))
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    frame["model_version"] = frame["model_version"].astype(str)
    return frame


def matured(frame: pd.DataFrame, *, horizon_days: int, as_of: pd.Timestamp) -> pd.Series:
    """Rows whose window [as_of, as_of + horizon) ended by ``as_of`` (T)."""
    return frame["as_of"] + pd.Timedelta(days=horizon_days) <= pd.Timestamp(as_of)


def by_model_version(frame: pd.DataFrame, load_bundle: Callable[[str], ChurnBundle], *,
                     notes: list[str], unknown: str
                     ) -> Iterator[tuple[str, pd.DataFrame, ChurnBundle]]:
    """Each model version's rows of ``frame`` with its bundle, in version order.

    A version ``load_bundle`` cannot find (`LookupError`) is skipped with a note:
    ``unknown`` formatted with ``count``, ``version`` and ``error``.
    """
    for version, rows in frame.groupby("model_version", sort=True):
        try:
            bundle = load_bundle(str(version))
        except LookupError as error:
            notes.append(unknown.format(count=len(rows), version=version, error=error))
            continue
        yield str(version), rows, bundle


def matured_labels(history: History, frame: pd.DataFrame, *, bundle: ChurnBundle,
                   as_of: pd.Timestamp, value_days: int, margin_rate: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``churned`` and realised value of each row of ``frame`` scored by ``bundle``.

    Rows whose churn horizon has passed by ``as_of`` are labelled at their own
    ``as_of`` by the bundle's churn definition (the question the score
    answered), with the revenue over ``value_days`` × ``margin_rate`` as value;
    the other rows get NaN for both.
    """
    churned = np.full(len(frame), np.nan)
    value = np.full(len(frame), np.nan)
    ready = matured(frame, horizon_days=bundle.horizon_days, as_of=as_of).to_numpy()
    for moment in pd.unique(frame.loc[ready, "as_of"]):
        rows = ready & (frame["as_of"] == moment).to_numpy()
        labels = labels_at(history, as_of=pd.Timestamp(moment), horizon_days=bundle.horizon_days,
                           clv_horizon_days=value_days, **bundle.label_settings(),
                           margin_rate=margin_rate)
        ids = frame.loc[rows, "customer_id"]
        churned[rows] = labels["churned"].reindex(ids).to_numpy()
        value[rows] = labels["clv_target"].reindex(ids).to_numpy()
    return churned, value


def action_outcomes(history: History, actions: pd.DataFrame, *, as_of: pd.Timestamp,
                    load_bundle: Callable[[str], ChurnBundle]) -> tuple[pd.DataFrame, list[str]]:
    """Matured actions with ``churned`` and ``revenue`` in their horizon; plus notes.

    An action has matured when its scoring model's churn horizon has passed by
    ``as_of``; it is labelled by that model's churn definition. Actions of a
    model version ``load_bundle`` cannot find (`LookupError`) are left out with
    a note.
    """
    notes: list[str] = []
    parts = []
    for _, rows, bundle in by_model_version(
            actions, load_bundle, notes=notes,
            unknown="{count:,} action(s) scored by model version {version} cannot be judged: "
                    "{error}"):
        ready = rows[matured(rows, horizon_days=bundle.horizon_days, as_of=as_of)].copy()
        ready["churned"], ready["revenue"] = matured_labels(
            history, ready, bundle=bundle, as_of=as_of, value_days=bundle.horizon_days,
            margin_rate=1.0)
        parts.append(ready)
    if not parts:
        return actions.iloc[0:0].assign(churned=[], revenue=[]), notes
    return pd.concat(parts), notes


def outcomes_for(history: History, actions: pd.DataFrame, *, bundle: ChurnBundle,
                 as_of: pd.Timestamp) -> pd.DataFrame:
    """Actions matured by ``as_of`` under ``bundle``'s horizon, labelled by its definition.

    Whichever version scored them: what an uplift model shipped in ``bundle``
    learns must be the churn ``bundle`` predicts, since the learner starts from
    its probability and ``expected_saved_value`` sits beside it.
    """
    ready = actions[matured(actions, horizon_days=bundle.horizon_days, as_of=as_of)].copy()
    ready["churned"], ready["revenue"] = matured_labels(
        history, ready, bundle=bundle, as_of=as_of, value_days=bundle.horizon_days,
        margin_rate=1.0)
    return ready
