"""One pass of background work that must outlive its failures.

The outbox relay and the live loop (the day's features, rescoring changed
customers) repeat a pass every poll. A database that is briefly away must cost
a warning line and a retry at the next poll, never the loop, so each pass runs
through `guarded`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from serving.redact import database_problem

logger = logging.getLogger(__name__)
T = TypeVar("T")


def guarded(work: Callable[[], T], *, what: str,
            retry_seconds: float) -> tuple[T | None, str | None]:
    """Run one pass of ``work``: (its result, None), or (None, the problem) after logging
    ``"WHAT failed (retrying in Ns): problem"`` as one line with no traceback."""
    try:
        return work(), None
    except Exception as error:  # keep the background loop alive
        problem = (database_problem(error) if isinstance(error, SQLAlchemyError)
                   else f"{type(error).__name__}: {error}")
        logger.warning("%s failed (retrying in %gs): %s", what, retry_seconds, problem)
        return None, problem
