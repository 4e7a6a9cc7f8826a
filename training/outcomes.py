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

from collections.abc import Callable

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
    for version, rows in actions.groupby("model_version", sort=True):
        try:
            bundle = load_bundle(str(version))
        except LookupError as error:
            notes.append(f"{len(rows):,} action(s) scored by model version {version} cannot be "
                         f"judged: {error}")
            continue
        horizon = bundle.horizon_days
        ready = rows[rows["as_of"] + pd.Timedelta(days=horizon) <= as_of].copy()
        ready["churned"] = np.nan
        ready["revenue"] = np.nan
        for moment in pd.unique(ready["as_of"]):
            mask = ready["as_of"] == moment
            labels = labels_at(history, as_of=pd.Timestamp(moment), horizon_days=horizon,
                               clv_horizon_days=horizon,
                               **bundle.label_settings(),
                               margin_rate=1.0)
            ids = ready.loc[mask, "customer_id"]
            ready.loc[mask, "churned"] = labels["churned"].reindex(ids).to_numpy()
            ready.loc[mask, "revenue"] = labels["clv_target"].reindex(ids).to_numpy()
        parts.append(ready)
    if not parts:
        return actions.iloc[0:0].assign(churned=[], revenue=[]), notes
    return pd.concat(parts), notes
