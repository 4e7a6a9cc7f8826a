"""What a ``--data`` value names: a dataset directory or a database URL.

Apart from `features.database`, which defines the tables with SQLAlchemy, so that
telling the two apart imports nothing: a batch run on files never loads SQLAlchemy
(about 0.7 s of CPU before the first table is read).
"""

from __future__ import annotations

import re

_DATABASE_URL = re.compile(r"^(sqlite|postgresql|postgres)(\+\w+)?://")


def is_database_url(source: object) -> bool:
    """Whether ``source`` names a database (``sqlite://…``, ``postgresql[+driver]://…``)
    rather than a folder."""
    return _DATABASE_URL.match(str(source)) is not None
