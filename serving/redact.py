"""Keep secrets out of what churnlens prints, logs and answers."""

from __future__ import annotations

from os import PathLike

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError


def masked_url(url: str | PathLike[str]) -> str:
    """A database URL with its password replaced by ``***``; anything else unchanged.

    For every URL that is printed or logged: a relay's start-up line, an error
    naming the outbox or the dataset.
    """
    text = str(url)
    if "://" not in text:
        return text  # a directory or file path: nothing to hide
    try:
        return make_url(text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return text.split("://", 1)[0] + "://***"  # unparseable: keep only the scheme


def database_problem(error: SQLAlchemyError) -> str:
    """A database error in one line: the driver's own first line, without SQL or links."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__
